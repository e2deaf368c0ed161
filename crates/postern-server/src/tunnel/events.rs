//! What happens to tunnels and agents, as the registry announces it, and the JSON shape the
//! status API's SSE stream and the webhooks send. The SSE stream also carries each request an
//! inspected tunnel captures (`request_captured`), which the registry sends on a channel of
//! their own (`Registry::captures`), so webhooks never see them.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::registry::AgentInfo;
use super::TunnelInfo;
use crate::clock::rfc3339;
use crate::inspect::view::CaptureEvent;
use crate::inspect::Capture;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A tunnel was registered.
    TunnelUp,
    /// A tunnel went away.
    TunnelDown,
    /// An agent's session started.
    AgentConnected,
    /// An agent's session ended.
    AgentDisconnected,
    /// An inspected tunnel captured a request.
    RequestCaptured,
}

impl EventKind {
    /// Name used in SSE `event:` lines and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TunnelUp => "tunnel_up",
            Self::TunnelDown => "tunnel_down",
            Self::AgentConnected => "agent_connected",
            Self::AgentDisconnected => "agent_disconnected",
            Self::RequestCaptured => "request_captured",
        }
    }
}

/// One change, for the SSE stream and webhooks.
#[derive(Debug, Clone)]
pub struct Event {
    /// Increasing number, starting at 1.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: SystemTime,
    /// Whose it is (only they and the admin see it).
    pub owner: String,
    /// The tunnel, for tunnel events.
    pub tunnel: Option<TunnelInfo>,
    /// The agent, for agent events.
    pub agent: Option<AgentInfo>,
    /// The request, for `request_captured`.
    pub capture: Option<Arc<Capture>>,
}

/// One event, as sent on SSE and to webhooks.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// Increasing sequence number.
    pub seq: u64,
    /// `tunnel_up`, `tunnel_down`, `agent_connected`, `agent_disconnected` or
    /// `request_captured`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// RFC 3339.
    pub time: String,
    /// The tunnel, for tunnel events (counters as of the event).
    pub tunnel: Option<EventTunnel>,
    /// The agent, for agent events.
    pub agent: Option<EventAgent>,
    /// The request, for `request_captured` (only on the SSE stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<CaptureEvent>,
}

/// The tunnel in an event.
#[derive(Debug, Serialize)]
pub struct EventTunnel {
    /// Name.
    pub name: String,
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// Public URL.
    pub public_url: String,
    /// Client id.
    pub client_id: String,
    /// Owner.
    pub owner: String,
    /// Agent id.
    pub agent_id: String,
}

/// The agent in an event.
#[derive(Debug, Serialize)]
pub struct EventAgent {
    /// Session id.
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Owner.
    pub owner: String,
    /// Address.
    pub addr: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        Self {
            seq: e.seq,
            kind: e.kind.as_str(),
            time: rfc3339(e.at),
            tunnel: e.tunnel.as_ref().map(|t| EventTunnel {
                name: t.name.clone(),
                kind: t.kind.as_str(),
                public_url: t.public_url.clone(),
                client_id: t.client_id.clone(),
                owner: t.owner.clone(),
                agent_id: t.session_id.clone(),
            }),
            agent: e.agent.as_ref().map(|a| EventAgent {
                id: a.session_id.clone(),
                client_id: a.client_id.clone(),
                owner: a.owner.clone(),
                addr: a.addr.to_string(),
            }),
            request: e.capture.as_deref().map(CaptureEvent::from),
        }
    }
}
