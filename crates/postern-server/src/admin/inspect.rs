//! The request inspector's routes, tenant-scoped like the rest of the API (a tunnel another
//! subject owns is answered as unknown):
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/tunnels/{name}/requests` | captures, newest first, without bodies |
//! | `GET /api/v1/tunnels/{name}/requests/{id}` | one capture with its bodies |
//! | `POST /api/v1/tunnels/{name}/requests/{id}/replay` | send it again; `201` and the new capture |
//! | `PUT /api/v1/tunnels/{name}/inspect` | `{"enabled": bool}`: start or stop capturing |
//!
//! Captures live on the relay that serves the tunnel's agent, as long as the tunnel does.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use postern_proto::TunnelKind;
use serde::Deserialize;

use super::{fail, json, read_body, Admin, AdminBody};
use crate::auth::Identity;
use crate::http_edge::replay::{replay, ReplayError};
use crate::inspect::view::{CaptureSummary, CaptureView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Toggle {
    enabled: bool,
}

fn unknown(name: &str) -> Response<AdminBody> {
    fail(StatusCode::NOT_FOUND, "not_found", format!("no tunnel {name:?}"))
}

fn no_capture(id: &str) -> Response<AdminBody> {
    fail(StatusCode::NOT_FOUND, "not_found", format!("no capture {id:?} (only the last ones are kept)"))
}

/// Answers `rest` (the path after `/api/v1/`, starting `tunnels/{name}/`), or `None` when it
/// is no inspector route.
pub async fn route(
    req: Request<Incoming>,
    rest: &[&str],
    who: &Identity,
    admin: &Admin,
) -> Option<Response<AdminBody>> {
    let method = req.method().clone();
    let name = *rest.get(1)?;
    let Some(tunnel) = admin.registry.get(name).filter(|t| t.info.name == name && who.may_access(&t.info.owner)) else {
        return Some(unknown(name));
    };
    let find = |id: &str| id.parse::<u64>().ok().and_then(|id| tunnel.inspector.get(id));
    Some(match (&method, &rest[2..]) {
        (&Method::GET, ["requests"]) => {
            let list: Vec<CaptureSummary> =
                tunnel.inspector.list().iter().map(|c| CaptureSummary::from(&**c)).collect();
            json(StatusCode::OK, &serde_json::json!({ "inspect": tunnel.inspector.is_on(), "requests": list }))
        }
        (&Method::GET, ["requests", id]) => match find(id) {
            Some(c) => json(StatusCode::OK, &CaptureView::from(&*c)),
            None => no_capture(id),
        },
        (&Method::POST, ["requests", id, "replay"]) => {
            let Some(original) = find(id) else { return Some(no_capture(id)) };
            match replay(&admin.registry, &tunnel, &original).await {
                Ok(c) => {
                    tracing::info!(tunnel = %name, capture = original.id, replay = c.id, by = %who.subject, "request replayed");
                    json(StatusCode::CREATED, &CaptureView::from(&*c))
                }
                Err(e) => {
                    let (status, code) = match e {
                        ReplayError::Incomplete(_) | ReplayError::Malformed(_) => {
                            (StatusCode::CONFLICT, "not_replayable")
                        }
                        ReplayError::AgentUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "agent_unavailable"),
                        ReplayError::AgentBusy => (StatusCode::SERVICE_UNAVAILABLE, "agent_busy"),
                        ReplayError::NoAnswer(_) => (StatusCode::BAD_GATEWAY, "no_answer"),
                        ReplayError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                    };
                    fail(status, code, e.to_string())
                }
            }
        }
        (&Method::PUT, ["inspect"]) => {
            let t = tunnel;
            if t.info.kind == TunnelKind::Tcp {
                return Some(fail(StatusCode::CONFLICT, "tcp_tunnel", "a TCP tunnel's bytes are never captured"));
            }
            let body = match read_body(req, 1024, admin).await {
                Ok(b) => b,
                Err(resp) => return Some(resp),
            };
            match serde_json::from_slice::<Toggle>(&body) {
                Ok(Toggle { enabled }) => {
                    t.inspector.set(enabled);
                    tracing::info!(tunnel = %name, enabled, by = %who.subject, "request inspector switched");
                    json(StatusCode::OK, &serde_json::json!({ "name": name, "inspect": enabled }))
                }
                Err(e) => {
                    fail(StatusCode::BAD_REQUEST, "bad_request", format!("expected {{\"enabled\": true|false}}: {e}"))
                }
            }
        }
        (_, ["requests", ..] | ["inspect"]) => {
            fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        }
        _ => return None,
    })
}
