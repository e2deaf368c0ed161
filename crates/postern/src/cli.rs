//! The clap definition of every subcommand and flag.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// postern: expose local services through a self-hosted relay.
///
/// Run `postern server` on a machine the public can reach, then `postern tcp PORT` next to the
/// service you want to expose. `postern demo` runs both on this machine to try it out.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Log filter, for example `info`, `debug` or `postern_server=debug` [env: POSTERN_LOG]
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay. With no arguments: a development relay on 127.0.0.1 with a self-signed
    /// certificate for localhost and *.localhost, created in --state-dir.
    Server(Box<ServerArgs>),
    /// Expose local HTTP services through a relay, for example `postern http 3000`: they get
    /// https://<id>-<port>.<relay domain>.
    Http(HttpArgs),
    /// Expose a local TCP port through a relay, for example `postern tcp 5432`.
    Tcp(TcpArgs),
    /// Open every tunnel listed in a client config file (TOML), for example
    /// `postern start --config postern-client.toml`.
    Start(StartArgs),
    /// Mint scoped tokens for clients, signed with the relay's key in --state-dir.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Certificates: a development CA and wildcard certificate, or the certbot command for a
    /// real wildcard.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Try postern on this machine: a relay, a demo web service on 127.0.0.1:8000, and a client
    /// that exposes it through a tunnel.
    Demo(DemoArgs),
    /// Probe a relay's admin listener or a client's --status listener, for container health
    /// checks: exits 0 when GET /readyz answers 2xx, 1 otherwise (images need no curl).
    Healthcheck(HealthcheckArgs),
}

/// `postern server`.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// TOML config file; flags and POSTERN_* variables override its values.
    #[arg(long, short = 'c', env = "POSTERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address agents connect to [default: 127.0.0.1:7000]
    #[arg(long, env = "POSTERN_CONTROL_ADDR")]
    pub control_addr: Option<SocketAddr>,
    /// Host name used in public URLs, e.g. tunnel.example.com [default: localhost]
    #[arg(long, env = "POSTERN_DOMAIN")]
    pub domain: Option<String>,
    /// Address public TCP tunnel ports bind to; 0.0.0.0 to accept from anywhere [default: 127.0.0.1]
    #[arg(long, env = "POSTERN_TCP_BIND")]
    pub tcp_bind: Option<IpAddr>,
    /// Public ports TCP tunnels get, LOW-HIGH, or 0 for OS-assigned [default: 20000-29999]
    #[arg(long, env = "POSTERN_TCP_PORTS")]
    pub tcp_ports: Option<String>,
    /// Shared secret clients must present. Without it any client may open tunnels, which the
    /// relay only allows on a loopback control address (or with --allow-anonymous).
    #[arg(long, env = "POSTERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Allow a relay without a token on a non-loopback address.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Directory for state: the development CA and certificate, later leases and revocations
    /// [default: $STATE_DIRECTORY, else ./postern-state]
    #[arg(long, env = "POSTERN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// PEM certificate chain for the relay (e.g. certbot's fullchain.pem). Without it a
    /// development certificate is generated in --state-dir.
    #[arg(long, env = "POSTERN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert (e.g. certbot's privkey.pem).
    #[arg(long, env = "POSTERN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Time a client has to finish TLS and its Hello [default: 10s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub handshake_timeout: Option<std::time::Duration>,
    /// Interval between heartbeat PINGs to each client [default: 10s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<std::time::Duration>,
    /// A client that has not answered a PING for this long is dropped [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Option<std::time::Duration>,
    /// Maximum concurrent client connections [default: 10000]
    #[arg(long)]
    pub max_agents: Option<usize>,
    /// Maximum concurrent public connections, TCP and HTTP [default: 50000]
    #[arg(long)]
    pub max_public_connections: Option<usize>,
    /// Public plain-HTTP listener, or `off` [default: 127.0.0.1:8080 for --domain localhost,
    /// else 0.0.0.0:80]
    #[arg(long, env = "POSTERN_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Public HTTPS listener, or `off` [default: 127.0.0.1:8443 for --domain localhost, else
    /// 0.0.0.0:443]
    #[arg(long, env = "POSTERN_HTTPS_ADDR")]
    pub https_addr: Option<String>,
    /// Directory of extra certificates for custom domains: one sub-directory per certificate
    /// holding fullchain.pem and privkey.pem (the layout of /etc/letsencrypt/live)
    #[arg(long, env = "POSTERN_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Custom domains any client may claim with `--domain` (`*` matches anything, e.g.
    /// '*.example.com'); repeatable. Others need a TXT record _postern.<domain> =
    /// "postern-owner=<token subject>"
    #[arg(long, value_name = "PATTERN")]
    pub allow_domain: Vec<String>,
    /// Where custom-domain TXT proofs are looked up: `system` (/etc/resolv.conf), a DNS server
    /// IP:PORT, or `off` (only --allow-domain) [default: system]
    #[arg(long, value_name = "system|IP:PORT|off")]
    pub txt_proof: Option<String>,
    /// Get certificates by ACME (Let's Encrypt by default) for granted custom domains, by
    /// HTTP-01 on the HTTP listener (port 80 must reach the relay); kept in --state-dir/acme
    /// and renewed before expiry
    #[arg(long)]
    pub acme: bool,
    /// ACME directory URL [default: Let's Encrypt production]
    #[arg(long, value_name = "URL", env = "POSTERN_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Contact e-mail for the ACME account (expiry warnings)
    #[arg(long, value_name = "EMAIL", env = "POSTERN_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Trust this CA (PEM) for the ACME directory's HTTPS, e.g. a test CA such as pebble's
    #[arg(long, value_name = "PEM")]
    pub acme_ca: Option<PathBuf>,
    /// Also get the wildcard *.<domain> (and <domain>) by DNS-01 at start-up; needs
    /// --acme-dns-hook. Implies --acme
    #[arg(long)]
    pub acme_wildcard: bool,
    /// Program that publishes DNS-01 records: run as `HOOK set|clear <record> <value>`, e.g. a
    /// script around `nsupdate` (RFC 2136) or your DNS provider's API
    #[arg(long, value_name = "PATH")]
    pub acme_dns_hook: Option<PathBuf>,
    /// Renew certificates when less than this validity is left [default: a third of their
    /// lifetime, 30 days for Let's Encrypt's 90-day certificates]
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub acme_renew_before: Option<std::time::Duration>,
    /// Answer plain-HTTP requests with a redirect to HTTPS
    #[arg(long)]
    pub http_redirect: bool,
    /// Time a public client has to send its request headers (and finish TLS) [default: 10s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub http_header_timeout: Option<std::time::Duration>,
    /// Close public HTTP connections that move no bytes for this long [default: 5m]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub http_idle_timeout: Option<std::time::Duration>,
    /// Largest request head a public client may send, in bytes (8192 to 1048576; at most 100
    /// header fields on HTTP/1.1) [default: 65536]
    #[arg(long)]
    pub http_max_header_bytes: Option<usize>,
    /// Concurrent requests on one public HTTP/2 connection [default: 128]
    #[arg(long)]
    pub http_max_streams: Option<u32>,
    /// Admin listener: status API, events, /metrics, /healthz, /readyz; or `off`. Keep it
    /// private [default: 127.0.0.1:7001]
    #[arg(long, env = "POSTERN_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// Also accept unmodified bore clients (`bore local <port> --to <relay> --secret <token>`)
    /// here, e.g. 0.0.0.0:7835 (bore always dials port 7835); their tunnels are TCP tunnels
    /// from --tcp-ports. Secrets: --token, or tokens minted with `postern token mint --kind
    /// bore` [default: off]
    #[arg(long, env = "POSTERN_BORE_ADDR", value_name = "ADDR|off")]
    pub bore_addr: Option<String>,
    /// Bearer token with full access to the admin API (client tokens see only their own
    /// tunnels)
    #[arg(long, env = "POSTERN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// POST every tunnel/agent event as JSON to this URL (signed, retried)
    #[arg(long, env = "POSTERN_WEBHOOK", requires = "webhook_secret")]
    pub webhook: Option<String>,
    /// Key for the webhook's X-Postern-Signature (HMAC-SHA256 of the body)
    #[arg(long, env = "POSTERN_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Export per-tunnel metric series (one label value per tunnel; off by default)
    #[arg(long)]
    pub metrics_per_tunnel: bool,
    /// How long a disconnected client's URLs stay reserved for it [default: 60s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_grace: Option<std::time::Duration>,
    /// Concurrent connections from one address, on every listener [default: 1024]
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Failed logins from one address within a minute before it is locked out for a minute
    /// [default: 10]
    #[arg(long)]
    pub max_auth_failures: Option<u32>,
    /// Concurrent streams on one client connection (at most 16384) [default: 10000]
    #[arg(long)]
    pub max_streams_per_agent: Option<usize>,
    /// On SIGTERM, how long requests and connections in flight may take to finish [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<std::time::Duration>,
    /// Validate the configuration and TLS files, print the result, and exit.
    #[arg(long)]
    pub check: bool,
}

/// Options shared by every client subcommand.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Relay control address, host:port
    #[arg(long, short = 's', env = "POSTERN_SERVER", default_value = "localhost:7000")]
    pub server: String,
    /// Token for the relay
    #[arg(long, short = 't', env = "POSTERN_TOKEN", hide_env_values = true, default_value = "")]
    pub token: String,
    /// CA certificate (PEM) to trust for the relay, instead of the system roots. For a
    /// development relay this is ca.pem in its --state-dir.
    #[arg(long, env = "POSTERN_CA")]
    pub ca: Option<PathBuf>,
    /// Do not verify the relay's certificate. Anyone on the path can then read and change the
    /// traffic; for debugging only.
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Name this client asks to be known by (a DNS label) [default: chosen by the relay]
    #[arg(long, env = "POSTERN_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Host the local service listens on
    #[arg(long, default_value = "localhost")]
    pub local_host: String,
    /// Longest wait between reconnect attempts
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_backoff: std::time::Duration,
    /// Serve this client's state, URLs and counters as JSON on this address, e.g.
    /// 127.0.0.1:4040
    #[arg(long, env = "POSTERN_STATUS_ADDR")]
    pub status: Option<SocketAddr>,
    /// Connections to keep to the relay (1-4); streams are spread over them and losing one
    /// keeps the tunnels up on the others
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub connections: u8,
}

/// `postern certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create (or keep) a development CA and a certificate for localhost and *.localhost in
    /// DIR: ca.pem (trust this), ca-key.pem, tls-cert.pem, tls-key.pem
    Dev {
        /// Where to write them
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Print the certbot command that gets a real wildcard certificate by DNS-01
    Certbot {
        /// The relay's domain, e.g. tunnel.example.com
        #[arg(long)]
        domain: String,
        /// certbot DNS plugin, e.g. cloudflare, route53, rfc2136
        #[arg(long, default_value = "cloudflare")]
        dns_plugin: String,
    },
}

/// `postern token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token. Example: postern token mint --subject ws-123 --ids 'ws-123*' --ttl 30d
    Mint(MintArgs),
    /// Revoke a token by id (the relay disconnects its sessions within a second)
    Revoke(RevokeArgs),
}

/// `postern token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token id (`id` from the admin API, or the `jti` claim)
    pub id: String,
    /// The relay's state directory (holds revoked.json)
    #[arg(long, env = "POSTERN_STATE_DIR", default_value = "postern-state")]
    pub state_dir: PathBuf,
}

/// `postern token mint`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// Who the token is for; owns the tunnels it opens and is its default tunnel id
    #[arg(long)]
    pub subject: String,
    /// Tunnel id patterns it may register (`*` matches anything), repeatable [default: exactly
    /// the subject]
    #[arg(long = "ids", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Public TCP ports it may ask for by number (`20000`, `20000-20099`), repeatable [default:
    /// none; the relay still assigns ports from its range]
    #[arg(long = "ports", value_delimiter = ',')]
    pub ports: Vec<String>,
    /// Lifetime, e.g. 30d, 12h (above zero); `never` for a token that does not expire
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    /// Grant full access to the admin API
    #[arg(long)]
    pub admin: bool,
    /// Let several clients with this subject serve the same names at once (load balanced)
    #[arg(long)]
    pub share: bool,
    /// Quota: tunnels open at once
    #[arg(long)]
    pub max_tunnels: Option<u32>,
    /// Quota: streams (TCP connections, HTTP requests) open at once
    #[arg(long)]
    pub max_streams: Option<u32>,
    /// Quota: bytes per second in each direction, across all its tunnels
    #[arg(long)]
    pub bandwidth: Option<u64>,
    /// Quota: HTTP requests per second across all its tunnels
    #[arg(long = "rps")]
    pub requests_per_sec: Option<u32>,
    /// `postern` (for the postern client) or `bore`: also usable as `bore local --secret <token>`
    /// against the relay's --bore-addr (recorded in the state directory so the relay can check
    /// bore's challenge)
    #[arg(long, default_value = "postern", value_parser = ["postern", "bore"])]
    pub kind: String,
    /// The relay's state directory (holds token.key, created if missing)
    #[arg(long, env = "POSTERN_STATE_DIR", default_value = "postern-state")]
    pub state_dir: PathBuf,
}

/// `postern http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Local ports to expose (one tunnel each)
    #[arg(required = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// The <id> in https://<id>-<port>.<domain> [default: the client id, else this machine's
    /// host name]
    #[arg(long)]
    pub id: Option<String>,
    /// Also serve the (first) port at this custom domain, e.g. app.example.com. Point its DNS
    /// at the relay; the operator must allow the domain (--allow-domain) or you prove it with a
    /// TXT record `_postern.<domain>` = `postern-owner=<your token's subject>`. With --acme on
    /// the relay it gets its own certificate.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub access: AccessOptions,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Who may use an HTTP tunnel. The relay enforces these; secrets are sent to it hashed.
#[derive(Debug, Args, Clone, Default)]
pub struct AccessOptions {
    /// Require HTTP basic auth, USER:PASSWORD; repeat for several users
    #[arg(long, value_name = "USER:PASSWORD")]
    pub basic_auth: Vec<String>,
    /// Require this header with this exact value, e.g. 'X-Api-Key: 0123abcd'
    #[arg(long, value_name = "'NAME: VALUE'")]
    pub auth_header: Option<String>,
    /// Require `Authorization: Bearer TOKEN`
    #[arg(long, value_name = "TOKEN", conflicts_with = "auth_header")]
    pub bearer: Option<String>,
    /// Only accept visitors from these addresses (IP or CIDR); repeatable
    #[arg(long, value_name = "CIDR")]
    pub allow_ip: Vec<String>,
}

/// Options for HTTP tunnels.
#[derive(Debug, Args, Clone, Default)]
pub struct HttpOptions {
    /// Host header the local service sees: `preserve` (the public name), `rewrite`
    /// (<local-host>:<port>, for dev servers that check it) or a fixed value
    #[arg(long, default_value = "preserve")]
    pub host_header: String,
    /// Speak HTTP/2 without TLS (h2c) to the local service for every request (gRPC requests
    /// always use it)
    #[arg(long)]
    pub h2c: bool,
}

/// `postern start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Client config file (TOML) listing the tunnels
    #[arg(long, short = 'c', env = "POSTERN_CLIENT_CONFIG")]
    pub config: PathBuf,
}

/// `postern tcp`.
#[derive(Debug, Args)]
pub struct TcpArgs {
    /// Local port to expose
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Ask for this public port (must be in the relay's range and free)
    #[arg(long, short = 'r')]
    pub remote_port: Option<u16>,
    /// Only accept connections from these addresses (IP or CIDR); repeatable
    #[arg(long, value_name = "CIDR")]
    pub allow_ip: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `postern demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Control address of the demo relay
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub control_addr: SocketAddr,
    /// Address of the demo web service
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub demo_addr: SocketAddr,
    /// Public HTTPS listener of the demo relay
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https_addr: SocketAddr,
    /// Public plain-HTTP listener of the demo relay
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Admin listener (status API, metrics) of the demo relay
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub admin_addr: SocketAddr,
    /// Directory for the development CA and certificate
    #[arg(long, env = "POSTERN_STATE_DIR", default_value = "postern-state")]
    pub state_dir: PathBuf,
}

/// `postern healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The listener to probe: the relay's --admin-addr, or a client's --status address. An
    /// unspecified address (0.0.0.0:7001) means this machine's loopback
    #[arg(env = "POSTERN_ADMIN_ADDR", default_value = "127.0.0.1:7001", value_name = "ADDR")]
    pub addr: String,
    /// Path to GET: /readyz (ready to serve: the relay's listeners are up and it is not draining;
    /// the client is connected with its tunnels), or /healthz (the process answers)
    #[arg(long, default_value = "/readyz")]
    pub path: String,
    /// Give up after this long
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub timeout: std::time::Duration,
}
