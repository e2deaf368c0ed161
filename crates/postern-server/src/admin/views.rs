//! The JSON shapes of the status API. Field names are stable; see `docs/api.md` and
//! `openapi.json`.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::tunnel::registry::Agent;
use crate::tunnel::Tunnel;
use crate::volume::Usage;

/// One tunnel.
#[derive(Debug, Serialize)]
pub struct TunnelView {
    /// Unique name.
    pub name: String,
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// Public URL.
    pub public_url: String,
    /// Public port (tcp tunnels).
    pub public_port: Option<u16>,
    /// Shorter URL answering for the id's default port (http tunnels).
    pub alias: Option<String>,
    /// Its custom domain, if one was granted.
    pub domain: Option<String>,
    /// The path prefix it serves of its bare `<id>` host and custom domain (`--path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The local service sees the path without that prefix.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    /// Port on the client's side.
    pub local_port: u16,
    /// The client's id.
    pub client_id: String,
    /// Subject of the credential that opened it.
    pub owner: String,
    /// Agent (session) id that registered it.
    pub agent_id: String,
    /// Every agent connection serving it now.
    pub agents: Vec<String>,
    /// Agent's address as the relay sees it.
    pub agent_addr: String,
    /// RFC 3339.
    pub connected_since: String,
    /// Streams open now.
    pub active_streams: u64,
    /// Totals since registration.
    pub totals: Totals,
    /// RFC 3339, or null before any traffic.
    pub last_activity: Option<String>,
    /// The request inspector captures its requests.
    pub inspect: bool,
    /// The volume quota of the token that opened it, and what the token has used this period
    /// (all its tunnels together); null without one.
    pub volume: Option<Usage>,
}

/// Traffic totals.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Streams (TCP connections, HTTP requests) opened.
    pub requests: u64,
    /// Bytes toward the local service.
    pub bytes_in: u64,
    /// Bytes toward the public.
    pub bytes_out: u64,
}

impl From<&Tunnel> for TunnelView {
    fn from(t: &Tunnel) -> Self {
        let s = t.stats.snapshot();
        let i = &t.info;
        Self {
            name: i.name.clone(),
            kind: i.kind.as_str(),
            public_url: i.public_url.clone(),
            public_port: i.public_port,
            alias: t.alias.get().cloned(),
            domain: t.domain.get().cloned(),
            path: t.path.clone(),
            strip_prefix: t.strip_prefix,
            local_port: i.local_port,
            client_id: i.client_id.clone(),
            owner: i.owner.clone(),
            agent_id: i.session_id.clone(),
            agents: t.sessions(),
            agent_addr: i.agent_addr.to_string(),
            connected_since: rfc3339(i.since),
            active_streams: s.active_streams,
            totals: Totals { requests: s.requests, bytes_in: s.bytes_in, bytes_out: s.bytes_out },
            last_activity: s.last_activity.map(rfc3339),
            inspect: t.inspector.is_on(),
            volume: t.quota.as_ref().and_then(|q| q.volume.as_ref()).map(|v| v.usage()),
        }
    }
}

/// One connected agent.
#[derive(Debug, Serialize)]
pub struct AgentView {
    /// Session id.
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Subject of its credential.
    pub owner: String,
    /// Id of its signed token, if any.
    pub token_id: Option<String>,
    /// Address as the relay sees it.
    pub addr: String,
    /// RFC 3339.
    pub connected_since: String,
    /// Names of its tunnels.
    pub tunnels: Vec<String>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        let i = &a.info;
        Self {
            id: i.session_id.clone(),
            client_id: i.client_id.clone(),
            owner: i.owner.clone(),
            token_id: i.token_id.clone(),
            addr: i.addr.to_string(),
            connected_since: rfc3339(i.since),
            tunnels: a.tunnels(),
        }
    }
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorView {
    /// The error.
    pub error: ErrorBody,
}

/// Inside [`ErrorView`].
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}
