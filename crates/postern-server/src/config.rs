//! Relay configuration and its validation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use postern_proto::token::TokenKey;

use crate::access::Policies;
use crate::webhook::Webhook;

/// Public ports TCP tunnels may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRange {
    /// Let the operating system pick a free port (`0`). Handy for tests; a client may not ask
    /// for a specific port in this mode.
    Ephemeral,
    /// An inclusive range, `lo-hi`.
    Range(u16, u16),
}

impl PortRange {
    /// True when `port` may be handed out.
    pub fn contains(&self, port: u16) -> bool {
        match *self {
            Self::Ephemeral => false,
            Self::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ephemeral => f.write_str("0"),
            Self::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

impl FromStr for PortRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::PortRange(s.to_string());
        if s.trim() == "0" {
            return Ok(Self::Ephemeral);
        }
        let (lo, hi) = postern_proto::mint::parse_ports(s).map_err(|_| bad())?;
        Ok(Self::Range(lo, hi))
    }
}

/// A configuration mistake, found before anything is bound.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--tcp-ports` is not `lo-hi` with `0 < lo <= hi`, or `0`.
    #[error("invalid TCP port range {0:?}: expected LOW-HIGH such as 20000-29999, or 0 for OS-assigned ports")]
    PortRange(String),
    /// A nonsensical limit.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// Everything the relay needs to know, already parsed.
#[derive(Clone)]
pub struct RelayConfig {
    /// Host name used in public URLs (`tcp://<domain>:<port>`).
    pub domain: String,
    /// Address public TCP tunnel listeners bind to.
    pub tcp_bind: IpAddr,
    /// Ports TCP tunnels get.
    pub tcp_ports: PortRange,
    /// Shared secret agents may present (subject `shared`, no limits).
    pub token: Option<String>,
    /// Let agents in without any credential. Without it, anonymous agents are only accepted by a
    /// development relay: no `token` and a loopback control address.
    pub allow_anonymous: bool,
    /// Key that signs and verifies scoped tokens; `None` disables signed tokens.
    pub token_key: Option<TokenKey>,
    /// Bearer token with full access to the admin API.
    pub admin_token: Option<String>,
    /// Export per-tunnel metric series (unbounded label values: one per tunnel).
    pub metrics_per_tunnel: bool,
    /// Where to POST events.
    pub webhook: Option<Webhook>,
    /// Where revocations and leases are persisted; `None` keeps them in memory.
    pub state_dir: Option<PathBuf>,
    /// How long a disconnected client's names and ports stay reserved for it.
    pub lease_grace: Duration,
    /// How often `<state-dir>/revoked.json` is checked for revocations made by the CLI.
    pub revocation_poll_interval: Duration,
    /// Operator access policies.
    pub policies: Policies,
    /// Concurrent connections from one source address, on every listener.
    pub max_connections_per_ip: usize,
    /// Authentication failures from one address, within a minute, before it is locked out for
    /// a minute.
    pub max_auth_failures: u32,
    /// Concurrent streams (public connections and requests) on one agent connection.
    pub max_streams_per_agent: usize,
    /// On shutdown, how long streams in flight may take to finish.
    pub drain_timeout: Duration,
    /// Time an agent has to finish TLS and send its Hello.
    pub handshake_timeout: Duration,
    /// Interval between h2 PINGs to each agent.
    pub heartbeat_interval: Duration,
    /// An agent that has not answered a PING for this long is dropped. With the defaults a dead
    /// agent is noticed within 3 heartbeat intervals (10 s wait + 20 s timeout).
    pub heartbeat_timeout: Duration,
    /// Concurrent agent connections, handshaking ones included.
    pub max_agents: usize,
    /// Tunnels one agent may open in its Hello.
    pub max_tunnels_per_agent: usize,
    /// Concurrent public TCP connections across all tunnels.
    pub max_public_connections: usize,
    /// Answer plain-HTTP requests with a redirect to HTTPS instead of proxying them.
    pub http_redirect: bool,
    /// Time a public HTTP client has to send a request's headers (slowloris bound); also the
    /// TLS handshake limit on the HTTPS port.
    pub http_header_timeout: Duration,
    /// A public HTTP connection with no bytes either way for this long is closed gracefully.
    pub http_idle_timeout: Duration,
    /// Largest request head (request line plus headers) a public client may send.
    pub http_max_header_bytes: usize,
    /// Concurrent requests on one public HTTP/2 connection.
    pub http_max_streams: u32,
    /// How often certificate files are checked for changes; `None` only reloads on demand.
    pub cert_poll_interval: Option<Duration>,
    /// Custom domains any client may claim (patterns, `*` matches any run of characters).
    pub allow_domains: Vec<String>,
    /// Where `_postern.<domain>` TXT ownership proofs are looked up.
    pub txt_proof: crate::domains::TxtLookup,
    /// Built-in ACME; needs `state_dir`.
    pub acme: Option<crate::acme::AcmeConfig>,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("domain", &self.domain)
            .field("tcp_bind", &self.tcp_bind)
            .field("tcp_ports", &self.tcp_ports)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allow_anonymous", &self.allow_anonymous)
            .field("token_key", &self.token_key.is_some())
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("metrics_per_tunnel", &self.metrics_per_tunnel)
            .field("webhook", &self.webhook)
            .field("state_dir", &self.state_dir)
            .field("lease_grace", &self.lease_grace)
            .field("policies", &self.policies)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_auth_failures", &self.max_auth_failures)
            .field("max_streams_per_agent", &self.max_streams_per_agent)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("max_agents", &self.max_agents)
            .field("max_tunnels_per_agent", &self.max_tunnels_per_agent)
            .field("max_public_connections", &self.max_public_connections)
            .field("http_redirect", &self.http_redirect)
            .field("http_header_timeout", &self.http_header_timeout)
            .field("http_idle_timeout", &self.http_idle_timeout)
            .field("http_max_header_bytes", &self.http_max_header_bytes)
            .field("http_max_streams", &self.http_max_streams)
            .field("cert_poll_interval", &self.cert_poll_interval)
            .field("allow_domains", &self.allow_domains)
            .field("txt_proof", &self.txt_proof)
            .field("acme", &self.acme)
            .finish()
    }
}

impl Default for RelayConfig {
    /// The development defaults: everything on loopback, no token.
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            tcp_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tcp_ports: PortRange::Range(20000, 29999),
            token: None,
            allow_anonymous: false,
            token_key: None,
            admin_token: None,
            metrics_per_tunnel: false,
            webhook: None,
            state_dir: None,
            lease_grace: Duration::from_secs(60),
            revocation_poll_interval: Duration::from_secs(1),
            policies: Policies::default(),
            max_connections_per_ip: 1024,
            max_auth_failures: 10,
            max_streams_per_agent: 10_000,
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(20),
            max_agents: 10_000,
            max_tunnels_per_agent: 32,
            max_public_connections: 50_000,
            http_redirect: false,
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(300),
            http_max_header_bytes: 64 * 1024,
            http_max_streams: 128,
            cert_poll_interval: Some(Duration::from_secs(10)),
            allow_domains: Vec::new(),
            txt_proof: crate::domains::TxtLookup::Off,
            acme: None,
        }
    }
}

impl RelayConfig {
    /// True when agents without any credential are let in on `control_addr`.
    pub fn anonymous_allowed(&self, control_addr: SocketAddr) -> bool {
        self.allow_anonymous || (self.token.is_none() && control_addr.ip().is_loopback())
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(&self.token, Some(t) if t.is_empty()) || matches!(&self.admin_token, Some(t) if t.is_empty()) {
            return Err(ConfigError::Invalid("tokens must not be empty".into()));
        }
        if matches!(&self.webhook, Some(w) if w.secret.is_empty()) {
            return Err(ConfigError::Invalid("a webhook needs a secret to sign its deliveries".into()));
        }
        for (name, d) in [
            ("handshake timeout", self.handshake_timeout),
            ("heartbeat interval", self.heartbeat_interval),
            ("heartbeat timeout", self.heartbeat_timeout),
            ("HTTP header timeout", self.http_header_timeout),
            ("HTTP idle timeout", self.http_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("the {name} must be above zero")));
            }
        }
        let most = postern_transport::mux::MAX_PUBLIC_HEADER_BYTES;
        if !(8192..=most).contains(&self.http_max_header_bytes) {
            return Err(ConfigError::Invalid(format!("the HTTP header limit must be between 8192 and {most} bytes")));
        }
        if self.http_max_streams == 0 {
            return Err(ConfigError::Invalid("HTTP/2 streams per connection must be above zero".into()));
        }
        if !postern_proto::hostname::normalize(&self.domain).is_ok_and(|d| d == self.domain.to_ascii_lowercase()) {
            return Err(ConfigError::Invalid(format!("domain {:?} is not a valid host name", self.domain)));
        }
        if self.max_connections_per_ip == 0 || self.max_streams_per_agent == 0 || self.max_auth_failures == 0 {
            return Err(ConfigError::Invalid("per-address and per-agent limits must be above zero".into()));
        }
        let most = postern_transport::mux::MAX_CONCURRENT_STREAMS as usize;
        if self.max_streams_per_agent > most {
            return Err(ConfigError::Invalid(format!(
                "streams per agent connection can be at most {most}, the most an agent accepts at once"
            )));
        }
        if self.max_agents == 0 || self.max_tunnels_per_agent == 0 || self.max_public_connections == 0 {
            return Err(ConfigError::Invalid("connection and tunnel caps must be above zero".into()));
        }
        if let Some(acme) = &self.acme {
            if self.state_dir.is_none() {
                return Err(ConfigError::Invalid(
                    "ACME needs a state directory for its account and certificates".into(),
                ));
            }
            if acme.wildcard && acme.dns_hook.is_none() {
                return Err(ConfigError::Invalid(
                    "an ACME wildcard certificate needs DNS-01: give --acme-dns-hook".into(),
                ));
            }
            if acme.wildcard && self.domain == "localhost" {
                return Err(ConfigError::Invalid("no CA issues certificates for localhost; set --domain".into()));
            }
            if !acme.directory.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "the ACME directory must be an https URL, not {:?}",
                    acme.directory
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_parses() {
        assert_eq!("20000-29999".parse::<PortRange>().ok(), Some(PortRange::Range(20000, 29999)));
        assert_eq!("0".parse::<PortRange>().ok(), Some(PortRange::Ephemeral));
        assert_eq!("443".parse::<PortRange>().ok(), Some(PortRange::Range(443, 443)));
        for bad in ["", "a-b", "30000-20000", "0-10", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn anonymous_agents_only_on_a_loopback_development_relay() {
        let cfg = RelayConfig::default();
        assert!(cfg.anonymous_allowed("127.0.0.1:7000".parse().expect("addr")));
        assert!(!cfg.anonymous_allowed("0.0.0.0:7000".parse().expect("addr")));
        let with_token = RelayConfig { token: Some("t".into()), ..RelayConfig::default() };
        assert!(!with_token.anonymous_allowed("127.0.0.1:7000".parse().expect("addr")));
        let allowed = RelayConfig { allow_anonymous: true, ..RelayConfig::default() };
        assert!(allowed.anonymous_allowed("0.0.0.0:7000".parse().expect("addr")));
    }
}
