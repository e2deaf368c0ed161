//! The relay's settings, each declared once: one field of [`RelayConfig`] says its flag
//! (`--` and the field name in kebab case), its environment variable, its config-file key (the
//! field name), its default and its help text. Internal knobs that no operator sets are
//! `#[arg(skip)]`.
//!
//! - [`load`]: the layers (flags over `POSTERN_*` variables over the config file over the
//!   defaults), merged by the library, so their precedence is unit-tested without a process.
//! - [`types`]: the value types (port ranges, listener addresses, secrets).
//! - [`validate`](RelayConfig::validate): checks the settings against each other before any
//!   port is bound.

pub mod load;
pub mod types;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, FromArgMatches};
use postern_proto::token::TokenKey;

pub use self::load::Layers;
pub use self::types::{AccessLogTo, Bind, ByDomain, PortRange, Secret};
use crate::access::Policies;
use crate::domains::TxtLookup;

/// A configuration mistake, found before anything is bound.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--tcp-ports` is not `lo-hi` with `0 < lo <= hi`, or `0`.
    #[error("invalid TCP port range {0:?}: expected LOW-HIGH such as 20000-29999, or 0 for OS-assigned ports")]
    PortRange(String),
    /// A nonsensical limit or combination.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A value that does not parse, from the named source.
    #[error("{source_name}: {message}")]
    Parse {
        /// Where the value came from: the command line and environment, or the config file.
        source_name: String,
        /// What clap or TOML said.
        message: String,
    },
    /// A file key that is no setting.
    #[error("config file {file}: unknown key `{key}`")]
    UnknownKey {
        /// The file.
        file: String,
        /// The key.
        key: String,
    },
    /// The config file or the signing key could not be read.
    #[error("{0}")]
    Io(String),
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Every relay setting.
#[derive(Debug, Clone, Args)]
pub struct RelayConfig {
    /// Address agents connect to
    #[arg(long, env = "POSTERN_CONTROL_ADDR", default_value = "127.0.0.1:7000 on localhost, else 0.0.0.0:7000")]
    pub control_addr: ByDomain<SocketAddr>,
    /// Host name used in public URLs, e.g. tunnel.example.com
    #[arg(long, env = "POSTERN_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Address public TCP tunnel ports bind to
    #[arg(long, env = "POSTERN_TCP_BIND", default_value = "127.0.0.1 on localhost, else 0.0.0.0")]
    pub tcp_bind: ByDomain<IpAddr>,
    /// Public ports TCP tunnels get, LOW-HIGH, or 0 for OS-assigned
    #[arg(long, env = "POSTERN_TCP_PORTS", default_value = "20000-29999")]
    pub tcp_ports: PortRange,
    /// Shared secret clients may present (subject `shared`, no limits). Without it clients
    /// need a signed token, or, on a loopback control address, nothing
    #[arg(long, env = "POSTERN_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// Let clients without a token in, even on a public control address
    #[arg(long, env = "POSTERN_ALLOW_ANONYMOUS", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// Directory for state: the development CA and certificate, the token signing key,
    /// leases, revocations, ACME [default: $STATE_DIRECTORY, else ./postern-state]
    #[arg(long, env = "POSTERN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// PEM certificate chain for the relay (e.g. certbot's fullchain.pem). Without it a
    /// development certificate is generated in --state-dir
    #[arg(long, env = "POSTERN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert (e.g. certbot's privkey.pem)
    #[arg(long, env = "POSTERN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Time a client has to finish TLS and its Hello
    #[arg(long, env = "POSTERN_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Interval between heartbeat PINGs to each client
    #[arg(long, env = "POSTERN_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = duration)]
    pub heartbeat_interval: Duration,
    /// A client that has not answered a PING for this long is dropped
    #[arg(long, env = "POSTERN_HEARTBEAT_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub heartbeat_timeout: Duration,
    /// Concurrent client connections, handshaking ones included
    #[arg(long, env = "POSTERN_MAX_AGENTS", default_value_t = 10_000)]
    pub max_agents: usize,
    /// Concurrent public connections, TCP and HTTP
    #[arg(long, env = "POSTERN_MAX_PUBLIC_CONNECTIONS", default_value_t = 50_000)]
    pub max_public_connections: usize,
    /// Public plain-HTTP listener, or `off`
    #[arg(long, env = "POSTERN_HTTP_ADDR", default_value = "127.0.0.1:8080 on localhost, else 0.0.0.0:80")]
    pub http_addr: ByDomain<Bind>,
    /// Public HTTPS listener, or `off`
    #[arg(long, env = "POSTERN_HTTPS_ADDR", default_value = "127.0.0.1:8443 on localhost, else 0.0.0.0:443")]
    pub https_addr: ByDomain<Bind>,
    /// Directory of extra certificates for custom domains: one sub-directory per certificate
    /// holding fullchain.pem and privkey.pem (the layout of /etc/letsencrypt/live)
    #[arg(long, env = "POSTERN_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Custom domains any client may claim with `--domain` (`*` matches anything, e.g.
    /// '*.example.com'); repeatable. Others need a TXT record _postern.<domain> =
    /// "postern-owner=<token subject>"
    #[arg(long = "allow-domain", env = "POSTERN_ALLOW_DOMAINS", value_name = "PATTERN", value_delimiter = ',')]
    pub allow_domains: Vec<String>,
    /// Where custom-domain TXT proofs are looked up: `system` (/etc/resolv.conf), a DNS server
    /// IP:PORT, or `off` (only --allow-domain)
    #[arg(long, env = "POSTERN_TXT_PROOF", value_name = "system|IP:PORT|off", default_value = "system")]
    pub txt_proof: TxtLookup,
    /// Get certificates by ACME (Let's Encrypt by default) for granted custom domains, by
    /// HTTP-01 on the HTTP listener (port 80 must reach the relay); kept in --state-dir/acme
    /// and renewed before expiry
    #[arg(long, env = "POSTERN_ACME", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub acme: bool,
    /// ACME directory URL
    #[arg(long, env = "POSTERN_ACME_DIRECTORY", value_name = "URL", default_value = crate::acme::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Contact e-mail for the ACME account (expiry warnings)
    #[arg(long, env = "POSTERN_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// Trust this CA (PEM) for the ACME directory's HTTPS, e.g. a test CA such as pebble's
    #[arg(long, env = "POSTERN_ACME_CA", value_name = "PEM")]
    pub acme_ca: Option<PathBuf>,
    /// Also get the wildcard *.<domain> (and <domain>) by DNS-01 at start-up; needs
    /// --acme-dns-hook. Implies --acme
    #[arg(long, env = "POSTERN_ACME_WILDCARD", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub acme_wildcard: bool,
    /// Program that publishes DNS-01 records: run as `HOOK set|clear <record> <value>`, e.g. a
    /// script around `nsupdate` (RFC 2136) or your DNS provider's API
    #[arg(long, env = "POSTERN_ACME_DNS_HOOK", value_name = "PATH")]
    pub acme_dns_hook: Option<PathBuf>,
    /// Renew certificates when less than this validity is left [default: a third of their
    /// lifetime, 30 days for Let's Encrypt's 90-day certificates]
    #[arg(long, env = "POSTERN_ACME_RENEW_BEFORE", value_parser = duration, value_name = "DURATION")]
    pub acme_renew_before: Option<Duration>,
    /// Answer plain-HTTP requests with a redirect to HTTPS instead of proxying them
    #[arg(long, env = "POSTERN_HTTP_REDIRECT", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub http_redirect: bool,
    /// Time a public client has to send its request head (and finish TLS); also the admin
    /// API's limit for a head and for a body
    #[arg(long, env = "POSTERN_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_header_timeout: Duration,
    /// Close public HTTP connections that move no bytes for this long (an HTTP/1.1
    /// connection waiting for its next request gets --http-header-timeout)
    #[arg(long, env = "POSTERN_HTTP_IDLE_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub http_idle_timeout: Duration,
    /// Largest request head a public client may send, in bytes (8192 to 1048576; at most 100
    /// header fields on HTTP/1.1)
    #[arg(long, env = "POSTERN_HTTP_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub http_max_header_bytes: usize,
    /// Concurrent requests on one public HTTP/2 connection
    #[arg(long, env = "POSTERN_HTTP_MAX_STREAMS", default_value_t = 128)]
    pub http_max_streams: u32,
    /// Admin listener: status API, events, /metrics, /healthz, /readyz; or `off`. Keep it
    /// private
    #[arg(long, env = "POSTERN_ADMIN_ADDR", default_value = "127.0.0.1:7001")]
    pub admin_addr: Bind,
    /// Also accept unmodified bore clients (`bore local <port> --to <relay> --secret <token>`)
    /// here, e.g. 0.0.0.0:7835 (bore always dials port 7835); their tunnels are TCP tunnels
    /// from --tcp-ports. Secrets: --token, or tokens minted with `postern token mint --kind
    /// bore`
    #[arg(long, env = "POSTERN_BORE_ADDR", value_name = "ADDR|off", default_value = "off")]
    pub bore_addr: Bind,
    /// Bearer token with full access to the admin API (client tokens see only their own
    /// tunnels)
    #[arg(long, env = "POSTERN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// POST every tunnel and agent event as JSON to this URL (signed, retried); needs
    /// --webhook-secret
    #[arg(long, env = "POSTERN_WEBHOOK", value_name = "URL")]
    pub webhook: Option<String>,
    /// Key of the webhook's X-Postern-Signature (HMAC-SHA256 of the body)
    #[arg(long, env = "POSTERN_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
    /// Write one JSON line per public HTTP request and TCP connection: `stdout`, a file
    /// (appended to, reopened on SIGHUP for logrotate), or `off`
    #[arg(long, env = "POSTERN_ACCESS_LOG", value_name = "stdout|FILE|off", default_value = "off")]
    pub access_log: AccessLogTo,
    /// Requests the inspector keeps per inspected tunnel (`postern http --inspect`, or the
    /// admin API's toggle); the oldest go first
    #[arg(long, env = "POSTERN_INSPECT_KEEP", value_name = "N", default_value = "100", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub inspect_keep: u64,
    /// Memory all inspected tunnels' captures may hold together, in MiB (each keeps up to 64
    /// KiB of each body), shared fairly: past it a tunnel over its share loses its oldest
    /// capture, one within it takes room from the tunnel holding the most
    #[arg(long, env = "POSTERN_INSPECT_MEMORY", value_name = "MIB", default_value = "64")]
    pub inspect_memory: u64,
    /// Headers whose values the inspector replaces with [redacted]; the whole list, so name
    /// the defaults too to keep them ('' redacts none). A tunnel's own --auth-header is always
    /// redacted
    #[arg(
        long,
        env = "POSTERN_INSPECT_REDACT",
        value_name = "HEADERS",
        value_delimiter = ',',
        default_value = "authorization,cookie,set-cookie,proxy-authorization"
    )]
    pub inspect_redact: Vec<String>,
    /// Export per-tunnel metric series (one label value per tunnel)
    #[arg(long, env = "POSTERN_METRICS_PER_TUNNEL", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub metrics_per_tunnel: bool,
    /// How long a disconnected client's names and ports stay reserved for it
    #[arg(long, env = "POSTERN_LEASE_GRACE", default_value = "60s", value_parser = duration)]
    pub lease_grace: Duration,
    /// Concurrent connections from one address, on every listener
    #[arg(long, env = "POSTERN_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,
    /// Failed logins from one address within a minute before it is locked out for a minute
    #[arg(long, env = "POSTERN_MAX_AUTH_FAILURES", default_value_t = 10)]
    pub max_auth_failures: u32,
    /// Concurrent streams on one client connection (at most 16384)
    #[arg(long, env = "POSTERN_MAX_STREAMS_PER_AGENT", default_value_t = 10_000)]
    pub max_streams_per_agent: usize,
    /// On SIGTERM, how long requests and connections in flight may take to finish
    #[arg(long, env = "POSTERN_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Join a cluster of relays whose directory is this Redis (or Valkey): redis://HOST:PORT
    /// or rediss://HOST:PORT (TLS). Any relay then serves any tunnel (docs/cluster.md)
    #[arg(long, env = "POSTERN_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// This relay's name in the cluster (a DNS label) [default: the host name]
    #[arg(long, env = "POSTERN_RELAY_ID", value_name = "ID")]
    pub relay_id: Option<String>,
    /// Where this relay listens for its peers in a cluster (TLS, authenticated by
    /// --cluster-secret)
    #[arg(long, env = "POSTERN_PEER_ADDR", default_value = "127.0.0.1:7002 on localhost, else 0.0.0.0:7002")]
    pub peer_addr: ByDomain<Bind>,
    /// The address other relays dial to reach this one's --peer-addr, HOST:PORT [default:
    /// --peer-addr]
    #[arg(long, env = "POSTERN_PEER_ADVERTISE", value_name = "HOST:PORT")]
    pub peer_advertise: Option<String>,
    /// Secret the relays of a cluster share: a relay proves it holds it when it links to a
    /// peer, and a relay without it is refused
    #[arg(long, env = "POSTERN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// A relay that has not refreshed its entry in the directory for this long is dead: its
    /// routes are dropped and its agents' names wait for them elsewhere
    #[arg(long, env = "POSTERN_CLUSTER_NODE_TTL", default_value = "10s", value_parser = duration)]
    pub cluster_node_ttl: Duration,
    /// The token signing key, a file of 64 hex digits shared by the relays of a cluster
    /// [default: token.key in --state-dir, created if missing]
    #[arg(id = "token_key", long = "token-key", env = "POSTERN_TOKEN_KEY", value_name = "FILE")]
    pub token_key_file: Option<PathBuf>,
    /// OpenID provider visitors sign in with (`postern http --allow-email`), by issuer URL
    /// (its /.well-known/openid-configuration is read). Register the redirect URI
    /// https://auth.<domain>/callback with it. More providers: the config file's [[oidc]] tables
    #[arg(long, env = "POSTERN_OIDC_ISSUER", value_name = "URL", requires_all = ["oidc_client_id", "oidc_client_secret"])]
    pub oidc_issuer: Option<String>,
    /// The relay's client id at --oidc-issuer
    #[arg(long, env = "POSTERN_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// The relay's client secret at --oidc-issuer
    #[arg(long, env = "POSTERN_OIDC_CLIENT_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub oidc_client_secret: Option<Secret>,
    /// Scopes asked of --oidc-issuer besides `openid email`, comma-separated, e.g. `groups`
    /// for a provider that sends the groups claim only when asked
    #[arg(long, env = "POSTERN_OIDC_SCOPES", value_name = "SCOPES", value_delimiter = ',')]
    pub oidc_scopes: Vec<String>,
    /// How long a visitor stays signed in to a tunnel (by identity provider or share link)
    #[arg(long, env = "POSTERN_SESSION_TTL", default_value = "24h", value_parser = duration)]
    pub session_ttl: Duration,
    /// More identity providers: the config file's `[[oidc]]` tables.
    #[arg(skip)]
    pub oidc: Vec<crate::visitor::OidcSpec>,
    /// Operator access policies: the config file's `[[policy]]` tables.
    #[arg(skip)]
    pub policies: Policies,
    /// Key that signs and verifies scoped tokens (`token.key` in the state directory);
    /// `None` disables signed tokens.
    #[arg(skip)]
    pub token_key: Option<TokenKey>,
    /// Tunnels one agent may open in its Hello.
    #[arg(skip = 32_usize)]
    pub max_tunnels_per_agent: usize,
    /// How often each tunnel's history gets a point (`tunnel::history`).
    #[arg(skip = crate::tunnel::history::EVERY)]
    pub history_every: Duration,
    /// How often `<state-dir>/revoked.json` is checked for revocations made by the CLI.
    #[arg(skip = Duration::from_secs(1))]
    pub revocation_poll_interval: Duration,
    /// How often certificate files are checked for changes; `None` only reloads on demand.
    #[arg(skip = Some(Duration::from_secs(10)))]
    pub cert_poll_interval: Option<Duration>,
    /// How often stored ACME certificates are checked for renewal.
    #[arg(skip = Duration::from_secs(12 * 3600))]
    pub acme_check_interval: Duration,
    /// How long a name whose ACME order failed waits before it is tried again.
    #[arg(skip = Duration::from_secs(300))]
    pub acme_retry_after: Duration,
}

impl Default for RelayConfig {
    /// Every setting at its declared default (no flags, no environment, no file).
    fn default() -> Self {
        let cmd = load::command(false);
        let matches = cmd.try_get_matches_from(["postern-server"]);
        matches
            .and_then(|m| Self::from_arg_matches(&m))
            .unwrap_or_else(|e| panic!("the declared defaults of RelayConfig do not parse: {e}"))
    }
}

/// The addresses the relay listens on, resolved for its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listeners {
    /// Where agents connect.
    pub control: SocketAddr,
    /// Public HTTP, if on.
    pub http: Option<SocketAddr>,
    /// Public HTTPS, if on.
    pub https: Option<SocketAddr>,
    /// The admin API, if on.
    pub admin: Option<SocketAddr>,
    /// The bore endpoint, if on.
    pub bore: Option<SocketAddr>,
    /// The peer listener of a clustered relay.
    pub peer: Option<SocketAddr>,
}

impl RelayConfig {
    /// True when agents without any credential are let in on `control_addr`.
    pub fn anonymous_allowed(&self, control_addr: SocketAddr) -> bool {
        self.allow_anonymous || (self.token.is_none() && control_addr.ip().is_loopback())
    }

    /// The address public TCP tunnel ports bind to.
    pub fn tcp_bind(&self) -> IpAddr {
        self.tcp_bind.on(&self.domain)
    }

    /// The listener addresses for this domain.
    pub fn listeners(&self) -> Listeners {
        Listeners {
            control: self.control_addr.on(&self.domain),
            http: self.http_addr.on(&self.domain).0,
            https: self.https_addr.on(&self.domain).0,
            admin: self.admin_addr.0,
            bore: self.bore_addr.0,
            peer: self.cluster.as_ref().and(self.peer_addr.on(&self.domain).0),
        }
    }

    /// The built-in ACME settings, when it is on (`--acme` or `--acme-wildcard`).
    pub fn acme(&self) -> Option<crate::acme::AcmeConfig> {
        (self.acme || self.acme_wildcard).then(|| crate::acme::AcmeConfig {
            directory: self.acme_directory.clone(),
            email: self.acme_email.clone(),
            ca: self.acme_ca.clone(),
            wildcard: self.acme_wildcard,
            dns_hook: self.acme_dns_hook.clone(),
            renew_before: self.acme_renew_before,
            check_interval: self.acme_check_interval,
            retry_after: self.acme_retry_after,
        })
    }

    /// Every identity provider: the one of the `--oidc-*` flags first, then the file's.
    pub fn oidc_providers(&self) -> Vec<crate::visitor::OidcSpec> {
        let flags = match (&self.oidc_issuer, &self.oidc_client_id, &self.oidc_client_secret) {
            (Some(issuer), Some(id), Some(secret)) => Some(crate::visitor::OidcSpec {
                name: None,
                issuer: issuer.clone(),
                client_id: id.clone(),
                client_secret: secret.expose().to_string(),
                scopes: self.oidc_scopes.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            }),
            _ => None,
        };
        flags.into_iter().chain(self.oidc.iter().cloned()).collect()
    }

    /// Where the relay's certificates come from (needs a state directory).
    pub fn cert_source(&self) -> Option<crate::certs::CertSource> {
        let state_dir = self.state_dir.clone()?;
        let files = self.tls_cert.clone().zip(self.tls_key.clone());
        let acme_dir = self.acme().map(|_| crate::acme::store::live(&state_dir));
        Some(crate::certs::CertSource { state_dir, files, extra_dir: self.tls_dir.clone(), acme_dir })
    }
}

#[cfg(test)]
mod tests;
