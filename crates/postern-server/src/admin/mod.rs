//! The admin listener (default `127.0.0.1:7001`): status API, events, health and metrics.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /ui/` | none (the page asks for a token) | the dashboard ([`ui`]) |
//! | `GET /healthz` | none | liveness |
//! | `GET /readyz` | none | readiness: listeners bound, certificates loaded, not draining |
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /api/v1/openapi.json` | none | the API description |
//! | `GET /api/v1/tunnels[/{name}]` | bearer | tunnels the caller may see |
//! | `GET /api/v1/tunnels/{name}/history` | bearer | the tunnel's last hour, a point every 5 s |
//! | `GET /api/v1/tunnels/{name}/requests[/{id}]` | bearer | the request inspector's captures |
//! | `POST /api/v1/tunnels/{name}/requests/{id}/replay` | bearer | send a capture again |
//! | `PUT /api/v1/tunnels/{name}/inspect` | bearer | start or stop capturing |
//! | `DELETE /api/v1/tunnels/{name}` | bearer | close a tunnel |
//! | `GET /api/v1/agents` | bearer | connected agents the caller may see |
//! | `DELETE /api/v1/agents/{id}` | bearer | disconnect an agent |
//! | `GET/POST /api/v1/agents/{id}/tunnels`, `DELETE …/tunnels/{name}` | bearer | an agent's tunnels, changed live ([`remote`]) |
//! | `GET /api/v1/events` | bearer | Server-Sent Events: tunnel and agent up/down, captures |
//! | `POST /api/v1/tokens` | admin | mint a signed token |
//! | `GET /api/v1/tokens` | admin | tokens minted with this relay's state directory |
//! | `DELETE /api/v1/tokens/{id}` | admin | revoke a token; its sessions end at once |
//! | `… /tunnels/{name}/grants`, `/shares`, `/service-tokens`; `/sessions` | bearer | visitor access ([`visitors`]) |
//!
//! The admin token sees everything; a client's token sees what its subject owns. A missing or
//! unknown token gets 401; acting on something another subject owns gets 403. An address with
//! too many failed attempts is locked out (429) for a minute.

mod cluster;
mod inspect;
mod remote;
mod sse;
mod tokens;
pub mod ui;
pub mod views;
mod visitors;

pub use self::cluster::peer_view;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use postern_transport::accept;
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use self::views::{AgentView, ErrorBody, ErrorView, TunnelView};
use crate::abuse::IpLimits;
use crate::auth::{AuthError, Authenticator, Identity};
use crate::tunnel::registry::Registry;

/// The OpenAPI description served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Response body of the admin API.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// Readiness, as `/readyz` reports it.
#[derive(Debug)]
pub struct Readiness {
    serving: tokio::sync::watch::Sender<bool>,
    draining: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { serving: tokio::sync::watch::Sender::new(false), draining: AtomicBool::new(false) }
    }
}

impl Readiness {
    /// Every listener is bound and serving.
    pub fn set_serving(&self) {
        self.serving.send_replace(true);
    }

    /// Waits until every listener is serving.
    pub async fn serving(&self) {
        let mut rx = self.serving.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The relay is shutting down: stop sending new work here.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Ready for traffic.
    pub fn is_ready(&self) -> bool {
        *self.serving.borrow() && !self.draining.load(Ordering::SeqCst)
    }
}

/// What the admin API needs.
#[derive(Debug)]
pub struct Admin {
    /// Live tunnels and agents.
    pub registry: Arc<Registry>,
    /// Credential checks.
    pub auth: Authenticator,
    /// Where `/metrics` reads from.
    pub metrics: prometheus::Registry,
    /// `/readyz`.
    pub ready: Arc<Readiness>,
    /// Authentication lockout by address.
    pub ip_limits: Arc<IpLimits>,
    /// The relay's state directory (where bore tokens are recorded).
    pub state_dir: Option<std::path::PathBuf>,
    /// Time a caller has to send a request's head, and then again its body
    /// (`--http-header-timeout`).
    pub request_timeout: Duration,
    /// The cluster, on a clustered relay: lists span every relay.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The interval between the points of a tunnel's history.
    pub history_every: Duration,
    /// The dashboard's page and assets.
    pub ui: ui::Ui,
    /// Visitor sign-in: grants, sessions, share links, service tokens.
    pub visitors: Arc<crate::visitor::Visitors>,
    /// Tokens' volume counts, for the token views.
    pub volumes: Arc<crate::volume::Volumes>,
}

/// Serves the admin API until `shutdown` fires.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) -> TaskTracker {
    let tasks = TaskTracker::new();
    loop {
        let Some((stream, peer)) = accept::next(&listener, "admin", &shutdown).await else { break };
        let (admin, shutdown) = (admin.clone(), shutdown.clone());
        tasks.spawn(async move {
            let svc = {
                let admin = admin.clone();
                let shutdown = shutdown.clone();
                service_fn(move |req| {
                    let (admin, shutdown) = (admin.clone(), shutdown.clone());
                    async move { Ok::<_, Infallible>(route(req, &admin, peer.ip(), shutdown).await) }
                })
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(admin.request_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { debug!(%peer, error = %e, "admin connection ended") },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tasks.close();
    tasks
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<AdminBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response<AdminBody> {
    let mut resp = json(status, &ErrorView { error: ErrorBody { code, message: message.into() } });
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"postern\""));
    }
    resp
}

/// Reads a request body of at most `max` bytes within the request timeout; answers `413` or
/// `408` otherwise.
pub(crate) async fn read_body(req: Request<Incoming>, max: usize, admin: &Admin) -> Result<Bytes, Response<AdminBody>> {
    let body = http_body_util::Limited::new(req.into_body(), max);
    let limit = admin.request_timeout;
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(fail(StatusCode::PAYLOAD_TOO_LARGE, "bad_request", format!("body over {max} bytes")))
        }
        Ok(Err(e)) => Err(fail(StatusCode::BAD_REQUEST, "bad_request", format!("reading the body: {e}"))),
        Err(_) => Err(fail(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request body did not arrive within {limit:?}"),
        )),
    }
}

fn authenticate(req: &Request<Incoming>, admin: &Admin) -> Result<Identity, AuthError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    admin.auth.api(bearer, crate::clock::unix_secs())
}

async fn route(req: Request<Incoming>, admin: &Admin, ip: IpAddr, shutdown: CancellationToken) -> Response<AdminBody> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["healthz"]) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (Method::GET, ["readyz"]) => {
            if admin.ready.is_ready() {
                json(StatusCode::OK, &serde_json::json!({"status": "ready", "tunnels": admin.registry.len()}))
            } else {
                json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "not ready"}))
            }
        }
        (Method::GET, ["metrics"]) => metrics(admin),
        (Method::GET, []) => ui::redirect(),
        (Method::GET, ["ui"]) if req.uri().path() == "/ui" => ui::redirect(),
        (Method::GET, ["ui", rest @ ..]) => admin.ui.serve(rest),
        (Method::GET, ["api", "v1", "openapi.json"]) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())).boxed());
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        (_, ["api", "v1", rest @ ..]) => {
            if admin.ip_limits.blocked(ip) {
                return fail(StatusCode::TOO_MANY_REQUESTS, "locked_out", "too many failed attempts; try again later");
            }
            let who = match authenticate(&req, admin) {
                Ok(who) => who,
                Err(e) => {
                    admin.ip_limits.auth_failed(ip);
                    return fail(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
                }
            };
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            let asked = |flag: &str| req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == flag));
            let (local, traffic) = (asked("scope=local"), asked("traffic=1"));
            let cluster = admin.cluster.as_ref().filter(|_| !local);
            if let ["tunnels", _, "grants" | "shares" | "service-tokens"]
            | ["shares" | "service-tokens", _]
            | ["sessions"] = rest.as_slice()
            {
                let asked = match visitors::Asked::read(req, admin).await {
                    Ok(a) => a,
                    Err(resp) => return resp,
                };
                return match cluster {
                    Some(c) => cluster::visitors(c, admin, &who, &asked, &rest).await,
                    None => visitors::route(&asked, &rest, &who, admin)
                        .unwrap_or_else(|| fail(StatusCode::NOT_FOUND, "not_found", "no such API route")),
                };
            }
            if remote::is_route(&rest) {
                let asked = match visitors::Asked::read(req, admin).await {
                    Ok(a) => a,
                    Err(resp) => return resp,
                };
                return match cluster {
                    Some(c) if !remote::is_here(&rest, &who, admin) => {
                        cluster::remote(c, admin, &who, &asked, &rest).await
                    }
                    _ => remote::route(&asked, &rest, &who, admin)
                        .await
                        .unwrap_or_else(|| fail(StatusCode::NOT_FOUND, "not_found", "no such API route")),
                };
            }
            if let ["tunnels", _, "requests" | "inspect", ..] = rest.as_slice() {
                if let Some(resp) = inspect::route(req, &rest, &who, admin).await {
                    return resp;
                }
                return fail(StatusCode::NOT_FOUND, "not_found", "no such API route");
            }
            match (&method, rest.as_slice(), cluster) {
                (&Method::POST, ["tokens"], _) => tokens::mint(req, &who, admin).await,
                (&Method::GET, ["tokens"], _) => tokens::list(&who, admin),
                (&Method::DELETE, ["tokens", id], _) => tokens::revoke(id, &who, admin).await,
                (&Method::GET, ["relays"], _) => match &admin.cluster {
                    Some(c) => cluster::relays(c, admin, &who).await,
                    None => fail(StatusCode::NOT_FOUND, "not_found", "this relay is not clustered"),
                },
                (&Method::GET, ["tunnels"], Some(c)) => {
                    json(StatusCode::OK, &serde_json::json!({ "tunnels": cluster::tunnels(c, admin, &who).await }))
                }
                (&Method::GET, ["tunnels", name], Some(c))
                    if admin.registry.get(name).is_none_or(|t| t.info.name != *name) =>
                {
                    match cluster::tunnels(c, admin, &who).await.into_iter().find(|t| t["name"] == *name) {
                        Some(t) => json(StatusCode::OK, &t),
                        None => fail(StatusCode::NOT_FOUND, "not_found", format!("no tunnel {name:?}")),
                    }
                }
                (&Method::GET, ["agents"], Some(c)) => {
                    json(StatusCode::OK, &serde_json::json!({ "agents": cluster::agents(c, admin, &who).await }))
                }
                (&Method::DELETE, [what @ ("tunnels" | "agents"), key], Some(c)) => {
                    cluster::delete(c, admin, &who, what, key).await
                }
                _ => api(method, &rest, &who, admin, shutdown, traffic),
            }
        }
        (_, ["healthz" | "readyz" | "metrics"]) => {
            fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET")
        }
        _ => fail(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}")),
    }
}

fn api(
    method: Method,
    rest: &[&str],
    who: &Identity,
    admin: &Admin,
    shutdown: CancellationToken,
    traffic: bool,
) -> Response<AdminBody> {
    let reg = &admin.registry;
    match (method, rest) {
        (Method::GET, ["tunnels"]) => {
            let list: Vec<TunnelView> = reg
                .tunnels()
                .iter()
                .filter(|t| who.may_access(&t.info.owner))
                .map(|t| TunnelView::from(&**t))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "tunnels": list }))
        }
        (Method::GET, ["tunnels", name]) => match reg.get(name).filter(|t| t.info.name == *name) {
            Some(t) if who.may_access(&t.info.owner) => json(StatusCode::OK, &TunnelView::from(&*t)),
            _ => fail(StatusCode::NOT_FOUND, "not_found", format!("no tunnel {name:?}")),
        },
        (Method::GET, ["tunnels", name, "history"]) => match reg.get(name).filter(|t| t.info.name == *name) {
            Some(t) if who.may_access(&t.info.owner) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "every_ms": admin.history_every.as_millis() as u64,
                    "points": t.history.points(),
                }),
            ),
            _ => fail(StatusCode::NOT_FOUND, "not_found", format!("no tunnel {name:?}")),
        },
        (Method::DELETE, ["tunnels", name]) => match reg.get(name).filter(|t| t.info.name == *name) {
            None => fail(StatusCode::NOT_FOUND, "not_found", format!("no tunnel {name:?}")),
            Some(t) if !who.may_access(&t.info.owner) => {
                fail(StatusCode::FORBIDDEN, "forbidden", format!("tunnel {name:?} belongs to another client"))
            }
            Some(_) => {
                reg.kick_tunnel(name);
                tracing::info!(tunnel = %name, by = %who.subject, "tunnel closed through the admin API");
                json(StatusCode::OK, &serde_json::json!({"closed": name}))
            }
        },
        (Method::GET, ["agents"]) => {
            let list: Vec<AgentView> =
                reg.agents().iter().filter(|a| who.may_access(&a.info.owner)).map(|a| AgentView::from(&**a)).collect();
            json(StatusCode::OK, &serde_json::json!({ "agents": list }))
        }
        (Method::DELETE, ["agents", id]) => match reg.agent(id) {
            None => fail(StatusCode::NOT_FOUND, "not_found", format!("no agent {id:?}")),
            Some(a) if !who.may_access(&a.info.owner) => {
                fail(StatusCode::FORBIDDEN, "forbidden", format!("agent {id:?} belongs to another client"))
            }
            Some(a) => {
                a.kick.cancel();
                tracing::info!(agent = %id, by = %who.subject, "agent disconnected through the admin API");
                json(StatusCode::OK, &serde_json::json!({"disconnected": id}))
            }
        },
        (Method::GET, ["events"]) => {
            let traffic = traffic.then(|| sse::Traffic { registry: reg.clone(), rounds: reg.samples() });
            sse::stream(reg.events(), reg.captures(), who.clone(), shutdown, traffic)
        }
        (_, ["tunnels" | "agents" | "events" | "tokens", ..]) => {
            fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        }
        _ => fail(StatusCode::NOT_FOUND, "not_found", "no such API route"),
    }
}

fn metrics(admin: &Admin) -> Response<AdminBody> {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&admin.metrics.gather(), &mut buf) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string());
    }
    let mut resp = Response::new(Full::new(Bytes::from(buf)).boxed());
    if let Ok(v) = HeaderValue::from_str(encoder.format_type()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
