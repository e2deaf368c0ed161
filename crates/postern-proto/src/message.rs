//! Handshake and control messages, and their JSON bodies.
//!
//! The handshake is `Hello` (agent to relay) answered by exactly one `Welcome` or `Refused`.
//! After it, the connection becomes an HTTP/2 connection with the relay as h2 client; the relay's
//! first stream is the control stream, whose DATA frames carry [`Control`] messages in the same
//! frame format.

use serde::{Deserialize, Serialize};

use crate::frame::{DecodeError, EncodeError};

/// The message kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// Agent to relay, first frame on a connection.
    Hello = 1,
    /// Relay to agent: the session is up.
    Welcome = 2,
    /// Relay to agent: the session is refused; the relay closes after sending it.
    Refused = 3,
    /// Either way, on the control stream.
    Control = 4,
}

impl MessageKind {
    /// Maps a kind byte to a kind.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Welcome,
            3 => Self::Refused,
            4 => Self::Control,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hello => "Hello",
            Self::Welcome => "Welcome",
            Self::Refused => "Refused",
            Self::Control => "Control",
        }
    }
}

/// What a tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    /// Raw TCP on a public port.
    Tcp,
    /// HTTP routed by host name.
    Http,
}

impl TunnelKind {
    /// Lowercase name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
        }
    }
}

/// One tunnel the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// Tcp or http.
    pub kind: TunnelKind,
    /// Port of the local service on the agent's side.
    pub local_port: u16,
    /// For tcp: a specific public port, if the token allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// For http: the `<id>` part of the public host name; defaults to the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who may use the tunnel; absent means public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::access::Access>,
    /// For http: a custom domain (`app.example.com`) that also reaches this tunnel, if the
    /// operator allows it or its DNS proves the client owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// For http: capture requests in the relay's request inspector from the start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inspect: bool,
    /// For http: also serve the requests under this path prefix (`/api`) of the bare
    /// `<id>.<domain>` host and of the custom domain, instead of the whole of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For http with a `path`: the local service sees the path without the prefix.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
}

impl TunnelSpec {
    /// A public tunnel of `kind` to local port `local_port`, with nothing else asked for.
    pub fn new(kind: TunnelKind, local_port: u16) -> Self {
        Self {
            kind,
            local_port,
            remote_port: None,
            id: None,
            access: None,
            domain: None,
            inspect: false,
            path: None,
            strip_prefix: false,
        }
    }
}

/// First frame from the agent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Credential: a shared secret today, a signed token later. Never logged.
    pub token: String,
    /// Name the agent would like to be known by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Tunnels to open.
    pub tunnels: Vec<TunnelSpec>,
    /// Software name and version of the agent, for logs.
    #[serde(default)]
    pub agent: String,
    /// Random id of this client process: its several connections (`--connections N`) share it,
    /// so they serve the same tunnels instead of competing for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("token", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("tunnels", &self.tunnels)
            .field("agent", &self.agent)
            .field("group", &self.group)
            .finish()
    }
}

/// A tunnel the relay opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelGrant {
    /// Registry name of the tunnel, unique on the relay (for tcp: `tcp-<public port>`).
    pub name: String,
    /// Tcp or http.
    pub kind: TunnelKind,
    /// Local port on the agent this tunnel forwards to.
    pub local_port: u16,
    /// Where the public reaches it, for example `tcp://relay.example.com:20001`.
    pub public_url: String,
    /// For http: the shorter URL (`https://<id>.<domain>`) when this tunnel is the id's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_url: Option<String>,
    /// For http: the URL of the tunnel's custom domain, when it was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_url: Option<String>,
}

/// The relay accepted the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Relay-chosen session id, for logs and the status API.
    pub session_id: String,
    /// The client id the relay settled on.
    pub client_id: String,
    /// One entry per requested tunnel, in request order.
    pub tunnels: Vec<TunnelGrant>,
    /// Heartbeat interval the relay uses, in milliseconds.
    pub heartbeat_ms: u64,
}

/// Why a session was refused. Tells the agent whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseCode {
    /// The token is missing, wrong, expired or revoked. Retrying will not help.
    Unauthorized,
    /// The Hello was invalid (no tunnels, bad port, too many tunnels). Retrying will not help.
    BadRequest,
    /// The requested public port is outside what this relay or token allows.
    PortNotAllowed,
    /// The requested public port or name is in use right now; may succeed later.
    Unavailable,
    /// The relay is at capacity or shutting down; may succeed later.
    Overloaded,
}

impl RefuseCode {
    /// True when the same Hello can never succeed, so an agent must stop retrying.
    pub fn is_fatal(self) -> bool {
        matches!(self, Self::Unauthorized | Self::BadRequest | Self::PortNotAllowed)
    }

    /// The HTTP status, and the snake-case code, an API answers this refusal with (the relay's
    /// remote management and the client's local control API alike).
    pub fn http(self) -> (u16, &'static str) {
        match self {
            Self::Unauthorized => (403, "forbidden"),
            Self::BadRequest => (400, "bad_request"),
            Self::PortNotAllowed => (403, "port_not_allowed"),
            Self::Unavailable => (409, "unavailable"),
            Self::Overloaded => (503, "overloaded"),
        }
    }
}

/// The relay refused the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Machine-readable reason.
    pub code: RefuseCode,
    /// Human-readable explanation, safe to print.
    pub message: String,
}

/// Messages on the control stream, after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Agent to relay: remove my tunnels now, I am leaving.
    Unregister,
    /// Relay to agent: the relay is draining; reconnect elsewhere once in-flight streams end.
    Drain {
        /// Milliseconds until the relay closes the connection.
        deadline_ms: u64,
    },
    /// Relay to agent: something the agent's operator should see.
    Notice {
        /// Text to print.
        message: String,
    },
    /// Agent to relay: open this tunnel on this session now (a tunnel added after the
    /// handshake). Answered by `Opened` or `NotOpened` with the same `request`.
    Open {
        /// The agent's number for this request.
        request: u64,
        /// The tunnel.
        tunnel: TunnelSpec,
    },
    /// Relay to agent: the tunnel is reserved under this grant, but no traffic comes yet. The
    /// agent routes the name, then answers `Serving`.
    Opened {
        /// The `Open` this answers.
        request: u64,
        /// What was reserved.
        grant: TunnelGrant,
    },
    /// Relay to agent: the tunnel of `request` was not opened, or (after `Opened`) was lost.
    NotOpened {
        /// The `Open` this answers.
        request: u64,
        /// Machine-readable reason.
        code: RefuseCode,
        /// Why, safe to print.
        message: String,
    },
    /// Agent to relay: the grant of `request` is routed; send its traffic.
    Serving {
        /// The `Open` this completes.
        request: u64,
    },
    /// Agent to relay: this session no longer serves tunnel `name` (the agent has already
    /// stopped routing it). Answered by `Closed`.
    Close {
        /// The tunnel's registry name.
        name: String,
    },
    /// Relay to agent: this session no longer serves tunnel `name`; no stream for it comes.
    Closed {
        /// The tunnel's registry name.
        name: String,
    },
    /// Relay to agent: someone with the owner's or the admin token asks to change the agent's
    /// tunnels (remote management). The agent decides, and answers `Changed`.
    Change {
        /// The relay's number for this request.
        request: u64,
        /// What to change.
        change: TunnelChange,
    },
    /// Agent to relay: the answer to a `Change`.
    Changed {
        /// The `Change` this answers.
        request: u64,
        /// What came of it.
        outcome: ChangeOutcome,
    },
}

/// A change to an agent's tunnels, asked for through the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TunnelChange {
    /// Open one more tunnel.
    Add {
        /// The tunnel.
        tunnel: TunnelSpec,
    },
    /// Close the tunnel the relay knows as `name`.
    Remove {
        /// Its registry name.
        name: String,
    },
}

/// What came of a [`TunnelChange`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Done: the grant of an added tunnel, nothing for a removal.
    Done {
        /// The added tunnel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<TunnelGrant>,
    },
    /// The agent refused: remote management is off, or the port is outside its allowlist.
    Refused {
        /// The agent's reason, safe to show.
        message: String,
    },
    /// The agent agreed, but the relay could not open the tunnel.
    Failed {
        /// The relay's code.
        code: RefuseCode,
        /// The relay's reason.
        message: String,
    },
}

/// Any framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Refused`].
    Refused(Refused),
    /// See [`Control`].
    Control(Control),
}

impl Message {
    /// The kind byte for this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Hello(_) => MessageKind::Hello,
            Self::Welcome(_) => MessageKind::Welcome,
            Self::Refused(_) => MessageKind::Refused,
            Self::Control(_) => MessageKind::Control,
        }
    }

    pub(crate) fn to_body(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(match self {
            Self::Hello(m) => serde_json::to_vec(m)?,
            Self::Welcome(m) => serde_json::to_vec(m)?,
            Self::Refused(m) => serde_json::to_vec(m)?,
            Self::Control(m) => serde_json::to_vec(m)?,
        })
    }

    /// Parses a body of the given kind.
    pub fn from_body(kind: MessageKind, body: &[u8]) -> Result<Self, DecodeError> {
        let bad = |e: serde_json::Error| DecodeError::Malformed { kind: kind.name(), reason: e.to_string() };
        Ok(match kind {
            MessageKind::Hello => Self::Hello(serde_json::from_slice(body).map_err(bad)?),
            MessageKind::Welcome => Self::Welcome(serde_json::from_slice(body).map_err(bad)?),
            MessageKind::Refused => Self::Refused(serde_json::from_slice(body).map_err(bad)?),
            MessageKind::Control => Self::Control(serde_json::from_slice(body).map_err(bad)?),
        })
    }
}
