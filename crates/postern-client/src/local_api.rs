//! The local control API's changes, on the client's `--status` listener (the reads are in
//! `status`):
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/tunnels[?wait=SECONDS]` | open a tunnel, `{kind, port, id?, remote_port?, domain?, inspect?, allow_ip?, path?, strip_prefix?}` |
//! | `DELETE /api/v1/tunnels/{name}` | close one |
//! | `POST /api/v1/stop` | unregister, and stay stopped (`Disconnected`) |
//! | `POST /api/v1/start` | connect again |
//! | `GET /api/v1/openapi.json` | this API's description |
//!
//! This is the agent's own operator speaking (the listener is loopback unless placed
//! elsewhere, and `--status-token` guards it), so `--allow-remote` does not limit it: that
//! flag is about what the relay may do.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use postern_proto::request::TunnelRequest;
use serde_json::json;

use crate::embed::Agent;
use crate::live::ChangeError;
use crate::status::{api_state, reply};

/// The OpenAPI description of the local control API.
pub const OPENAPI: &str = include_str!("local_api.json");

/// How long a change waits for the relay's answer, unless asked otherwise (`?wait=`).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The longest `?wait=` (seconds).
const MAX_WAIT: u64 = 60;

/// Largest request body.
const MAX_BODY: usize = 16 * 1024;

/// Serves a change route, or answers `404`/`405`.
pub(crate) async fn route(req: Request<Incoming>, agent: &Agent) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["api", "v1", "openapi.json"]) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            resp
        }
        (Method::POST, ["api", "v1", "tunnels"]) => add(req, agent).await,
        (Method::DELETE, ["api", "v1", "tunnels", name]) => remove(name, agent).await,
        (Method::POST, ["api", "v1", "stop"]) => stop(agent).await,
        (Method::POST, ["api", "v1", "start"]) => start(agent),
        (_, ["api", "v1", "tunnels", ..] | ["api", "v1", "stop" | "start"]) => {
            fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => fail(StatusCode::NOT_FOUND, "try GET /api/v1/status, or see GET /api/v1/openapi.json"),
    }
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, &json!({ "error": message.into() }))
}

async fn add(req: Request<Incoming>, agent: &Agent) -> Response<Full<Bytes>> {
    let wait = match answer_within(req.uri().query()) {
        Ok(w) => w,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let body = match tokio::time::timeout(ANSWER_WITHIN, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return fail(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        Err(_) => return fail(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
    };
    let asked: TunnelRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("the tunnel request: {e}")),
    };
    let spec = match asked.spec() {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    match agent.add(spec, wait).await {
        Ok(Some(grant)) => reply(StatusCode::CREATED, &json!({ "tunnel": grant })),
        Ok(None) => reply(
            StatusCode::ACCEPTED,
            &json!({
                "pending": true,
                "state": api_state(agent.state().borrow().phase),
                "message": "no relay answered yet; the tunnel opens once the agent is connected",
            }),
        ),
        Err(e) => changed(e),
    }
}

/// How long to wait for the relay's answer: `?wait=SECONDS` (0 to 60; 0 answers at once), else
/// [`ANSWER_WITHIN`].
fn answer_within(query: Option<&str>) -> Result<Duration, String> {
    let asked = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("wait="));
    match asked.map(str::parse::<u64>) {
        None => Ok(ANSWER_WITHIN),
        Some(Ok(secs)) if secs <= MAX_WAIT => Ok(Duration::from_secs(secs)),
        Some(_) => Err(format!("wait must be whole seconds from 0 to {MAX_WAIT}")),
    }
}

async fn remove(name: &str, agent: &Agent) -> Response<Full<Bytes>> {
    match agent.remove(name, ANSWER_WITHIN).await {
        Ok(_) => reply(StatusCode::OK, &json!({ "closed": name })),
        Err(e) => changed(e),
    }
}

async fn stop(agent: &Agent) -> Response<Full<Bytes>> {
    let stopped = agent.stop().await;
    let state = agent.state().borrow().clone();
    reply(
        StatusCode::OK,
        &json!({
            "state": api_state(state.phase),
            "last_error": stopped.err().map(|e| e.to_string()).or(state.last_error),
        }),
    )
}

fn start(agent: &Agent) -> Response<Full<Bytes>> {
    let started = agent.start();
    let state = api_state(agent.state().borrow().phase);
    match started {
        true => reply(StatusCode::ACCEPTED, &json!({ "state": state })),
        false => reply(StatusCode::OK, &json!({ "state": state, "message": "already running" })),
    }
}

/// The answer for a change that did not happen.
fn changed(e: ChangeError) -> Response<Full<Bytes>> {
    let status = match &e {
        ChangeError::Relay { code, .. } => StatusCode::from_u16(code.http().0).unwrap_or(StatusCode::BAD_GATEWAY),
        ChangeError::NoSuchTunnel(_) => StatusCode::NOT_FOUND,
        ChangeError::TooMany => StatusCode::BAD_REQUEST,
    };
    fail(status, e.to_string())
}
