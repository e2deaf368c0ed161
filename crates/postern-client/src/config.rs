//! Agent configuration.

use std::sync::Arc;
use std::time::Duration;

use postern_proto::TunnelSpec;
use postern_transport::tls::Trust;

use crate::http_forward::HostHeader;
use crate::live::LiveTunnels;
use crate::remote::AllowRemote;
use crate::scale::Connections;
use crate::stats::AgentStats;

/// Everything an agent needs.
#[derive(Clone)]
pub struct AgentConfig {
    /// Relay control address, `host:port`; several, comma-separated, for the relays of a
    /// cluster: each connection starts at a different one and moves to the next when one fails.
    pub server: String,
    /// Credential sent in the Hello (may be empty for an open development relay).
    pub token: String,
    /// Requested client id.
    pub client_id: Option<String>,
    /// Tunnels to open (the command line's); the set then changes live in [`AgentConfig::live`].
    pub tunnels: Vec<TunnelSpec>,
    /// The tunnels wanted now, shared by the agent's connections and whoever changes them
    /// (the local control API, an embedding program). Seeded from `tunnels` when the agent
    /// first runs.
    pub live: Arc<LiveTunnels>,
    /// What the relay may change (`--allow-remote`); nothing by default.
    pub allow_remote: AllowRemote,
    /// How to trust the relay's certificate.
    pub trust: Trust,
    /// Host the local services listen on.
    pub local_host: String,
    /// Time allowed for TCP connect, TLS and the handshake.
    pub connect_timeout: Duration,
    /// Time allowed to connect to a local service.
    pub local_connect_timeout: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// `Host` header policy for HTTP tunnels.
    pub host_header: HostHeader,
    /// Speak h2c (HTTP/2 without TLS) to local HTTP services for every request, not only gRPC.
    pub local_h2c: bool,
    /// Traffic counters, shared with whoever observes the agent (the status endpoint).
    pub stats: Arc<AgentStats>,
    /// Connections to keep to the relay; streams are spread over them.
    pub connections: Connections,
    /// Random id of this client instance, shared by its connections.
    pub group: String,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("tunnels", &self.tunnels)
            .field("trust", &self.trust)
            .field("local_host", &self.local_host)
            .field("allow_remote", &self.allow_remote)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// The relays to connect to, in order ([`AgentConfig::server`] split at commas).
    pub fn servers(&self) -> Vec<&str> {
        let list: Vec<&str> = self.server.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if list.is_empty() {
            vec![self.server.as_str()]
        } else {
            list
        }
    }

    /// A config with default timeouts.
    pub fn new(server: impl Into<String>, token: impl Into<String>, trust: Trust, tunnels: Vec<TunnelSpec>) -> Self {
        Self {
            server: server.into(),
            token: token.into(),
            client_id: None,
            tunnels,
            live: Arc::default(),
            allow_remote: AllowRemote::Off,
            trust,
            local_host: "localhost".into(),
            connect_timeout: Duration::from_secs(10),
            local_connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            host_header: HostHeader::Preserve,
            local_h2c: false,
            stats: Arc::default(),
            connections: Connections::default(),
            group: format!("{:016x}", rand::random::<u64>()),
        }
    }
}
