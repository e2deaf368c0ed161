//! The client's local status endpoint (`--status 127.0.0.1:4040`): one JSON document with the
//! agent's state, public URLs and counters, at `GET /` (also `/status` and `/api/status`), and
//! the local control API for programs that embed or drive the client: `GET /api/v1/status`
//! answers with the state in the names such programs use (`Not started`, `Connecting`,
//! `Connected`, `Reconnecting`, `Failed`, `Disconnected`; [`api_state`]), the public URLs and
//! the last error; the changes (open and close tunnels, stop and start) are in `local_api`.
//!
//! For probes (`postern healthcheck 127.0.0.1:4040`, a Kubernetes or compose health check):
//! `GET /healthz` answers 200 while the process serves; `GET /readyz` answers 200 while the
//! agent is connected to its relay with its tunnels up, and 503 (with the state and last error)
//! while it connects, reconnects or has failed.
//!
//! With `--status-token`, every route but the two probes wants `Authorization: Bearer <token>`
//! (compared in constant time) and answers `401` without it. The listener is the operator's to
//! place: loopback unless told otherwise.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use postern_transport::accept;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentPhase, AgentState};
use crate::embed::Agent;
use crate::stats::{AgentStats, StatsSnapshot};

/// The document.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// `connecting`, `connected`, `reconnecting`, `failed` or `stopped`.
    pub state: &'static str,
    /// The same in the control API's names ([`api_state`]).
    #[serde(skip)]
    pub api_state: &'static str,
    /// The relay.
    pub server: String,
    /// Current session id.
    pub session_id: Option<String>,
    /// Client id the relay settled on.
    pub client_id: Option<String>,
    /// Tunnels of the current (or last) session.
    pub tunnels: Vec<TunnelStatus>,
    /// Sessions established since start.
    pub sessions: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// Traffic counters.
    pub counters: StatsSnapshot,
}

/// One tunnel in the document.
#[derive(Debug, Serialize)]
pub struct TunnelStatus {
    /// Registry name.
    pub name: String,
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// Public URL.
    pub public_url: String,
    /// Shorter URL, for an id's default tunnel.
    pub default_url: Option<String>,
    /// The custom domain's URL, when the relay granted it.
    pub domain_url: Option<String>,
    /// Local port.
    pub local_port: u16,
}

/// Where the status endpoint listens, and the token that guards it.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// The address (`--status`).
    pub addr: std::net::SocketAddr,
    /// The bearer token every route but `/healthz` and `/readyz` wants (`--status-token`).
    pub token: Option<String>,
}

/// The state as programs that drive a tunnel name it (wasmrun's names; `Not started` is for an
/// embedded agent that was never started, which the command line never shows).
pub fn api_state(phase: AgentPhase) -> &'static str {
    match phase {
        AgentPhase::NotStarted => "Not started",
        AgentPhase::Connecting => "Connecting",
        AgentPhase::Connected => "Connected",
        AgentPhase::Reconnecting => "Reconnecting",
        AgentPhase::Failed => "Failed",
        AgentPhase::Stopped => "Disconnected",
    }
}

/// Builds the document.
pub fn view(server: &str, state: &AgentState, stats: &AgentStats) -> StatusView {
    StatusView {
        state: state.phase.as_str(),
        api_state: api_state(state.phase),
        server: server.to_string(),
        session_id: state.session_id.clone(),
        client_id: state.client_id.clone(),
        tunnels: state
            .tunnels
            .iter()
            .map(|t| TunnelStatus {
                name: t.name.clone(),
                kind: t.kind.as_str(),
                public_url: t.public_url.clone(),
                default_url: t.default_url.clone(),
                domain_url: t.domain_url.clone(),
                local_port: t.local_port,
            })
            .collect(),
        sessions: state.sessions,
        last_error: state.last_error.clone(),
        counters: stats.snapshot(),
    }
}

/// Serves the status document and the local control API for `agent` until `shutdown` fires;
/// with `token`, only to callers that present it (the probes excepted).
pub async fn serve(listener: TcpListener, agent: Arc<Agent>, token: Option<String>, shutdown: CancellationToken) {
    let token: Option<Arc<str>> = token.map(Into::into);
    let state = agent.state();
    loop {
        let Some((stream, _)) = accept::next(&listener, "status", &shutdown).await else { return };
        let (agent, state, token) = (agent.clone(), state.clone(), token.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (agent, state, token) = (agent.clone(), state.clone(), token.clone());
                async move {
                    let cfg = agent.config();
                    let resp = match &token {
                        Some(t) if !is_probe(&req) && !presents(&req, t) => unauthorized(),
                        _ if req.method() == Method::GET && req.uri().path() != "/api/v1/openapi.json" => {
                            let doc = view(&cfg.server, &state.borrow(), &cfg.stats);
                            answer(&req, &doc)
                        }
                        _ => crate::local_api::route(req, &agent).await,
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn is_probe(req: &Request<Incoming>) -> bool {
    matches!(req.uri().path(), "/healthz" | "/readyz")
}

/// True when `req` carries `Authorization: Bearer <token>`.
fn presents(req: &Request<Incoming>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    given.is_some_and(|g| bool::from(g.ct_eq(token.as_bytes())))
}

fn unauthorized() -> Response<Full<Bytes>> {
    let body = br#"{"error":"this status endpoint wants Authorization: Bearer <its --status-token>"}"#;
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A JSON answer.
pub(crate) fn reply(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(serde_json::to_vec_pretty(body).unwrap_or_default())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn answer(req: &Request<Incoming>, doc: &StatusView) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/" | "/status" | "/api/status") => {
            (StatusCode::OK, serde_json::to_vec_pretty(doc).unwrap_or_default())
        }
        (&Method::GET, "/api/v1/status") => {
            let body = serde_json::json!({
                "state": doc.api_state,
                "phase": doc.state,
                "public_urls": doc.tunnels.iter().map(|t| t.public_url.as_str()).collect::<Vec<_>>(),
                "last_error": doc.last_error,
                "session_id": doc.session_id,
                "client_id": doc.client_id,
                "tunnels": doc.tunnels,
            });
            (StatusCode::OK, serde_json::to_vec_pretty(&body).unwrap_or_default())
        }
        (&Method::GET, "/healthz") => (StatusCode::OK, br#"{"state":"alive"}"#.to_vec()),
        (&Method::GET, "/readyz") => {
            let status = if doc.state == "connected" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({ "state": doc.state, "last_error": doc.last_error });
            (status, serde_json::to_vec(&body).unwrap_or_default())
        }
        _ => (StatusCode::NOT_FOUND, br#"{"error":"try GET /, /api/v1/status, /healthz or /readyz"}"#.to_vec()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
