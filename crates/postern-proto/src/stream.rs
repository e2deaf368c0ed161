//! Metadata of the h2 streams the relay opens to an agent.
//!
//! Every stream is an h2 request from the relay (h2 client) to the agent (h2 server). Its headers
//! say what the stream is for; the agent answers `200` once it has connected to the local service,
//! or `502` with a [`REFUSE_REASON`] header when it could not, and then bytes flow both ways as
//! DATA frames. END_STREAM in either direction is a half-close.

/// Header naming the stream kind: one of [`StreamKind::as_str`].
pub const KIND: &str = "postern-kind";
/// Header naming the tunnel the stream belongs to.
pub const TUNNEL: &str = "postern-tunnel";
/// Header carrying the public peer address, `ip:port`.
pub const PEER: &str = "postern-peer";
/// Response header explaining a non-200 answer from the agent.
pub const REFUSE_REASON: &str = "postern-reason";

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The one long-lived control stream, opened first.
    Control,
    /// A public TCP connection, spliced to the local port.
    Tcp,
    /// One HTTP request.
    Http,
    /// An HTTP request that upgrades (WebSocket), spliced after the 101.
    Upgrade,
}

impl StreamKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Upgrade => "upgrade",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "control" => Self::Control,
            "tcp" => Self::Tcp,
            "http" => Self::Http,
            "upgrade" => Self::Upgrade,
            _ => return None,
        })
    }
}

/// Request header on `upgrade` streams: the protocol the public client asked for (`websocket`).
pub const UPGRADE: &str = "postern-upgrade";
/// Response header on `upgrade` streams: `101` when the local service switched protocols. HTTP/2
/// has no 101, so the agent answers `200` with this header and the relay sends the real 101.
pub const STATUS: &str = "postern-status";
/// Prefix of every postern metadata header; stripped before anything reaches an origin or the
/// public.
pub const PREFIX: &str = "postern-";
