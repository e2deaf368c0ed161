//! The client's command-line settings (`postern http`, `postern tcp`), declared once with
//! clap, and how they become an [`AgentConfig`]: the tunnel specs, the access rules (hashed
//! here, so secrets never reach the relay in clear), the default tunnel id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use postern_proto::access::{self, Access, HeaderRule};
use postern_proto::{TunnelKind, TunnelSpec};
use postern_transport::tls::Trust;

use crate::config::AgentConfig;
use crate::http_forward::HostHeader;
use crate::remote::AllowRemote;
use crate::scale::Connections;

/// Why a client's settings cannot be used. The message names the flag or file key.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The client config file could not be read or parsed.
    #[error("client config {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn invalid(msg: impl Into<String>) -> SetupError {
    SetupError::Invalid(msg.into())
}

/// Options shared by every client subcommand.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Relay control address, host:port. Repeat it (or separate with commas) for the relays
    /// of a cluster: connections spread over them and move to the next when one fails
    #[arg(long, short = 's', env = "POSTERN_SERVER", default_value = "localhost:7000", value_delimiter = ',')]
    pub server: Vec<String>,
    /// Token for the relay
    #[arg(long, short = 't', env = "POSTERN_TOKEN", hide_env_values = true, default_value = "")]
    pub token: String,
    /// CA certificate (PEM) to trust for the relay, instead of the system roots. For a
    /// development relay this is ca.pem in its --state-dir; repeat it for several relays
    #[arg(long, env = "POSTERN_CA", value_delimiter = ',')]
    pub ca: Vec<PathBuf>,
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
    pub max_backoff: Duration,
    /// Serve this client's state, URLs and counters as JSON on this address, e.g.
    /// 127.0.0.1:4040
    #[arg(long, env = "POSTERN_STATUS_ADDR")]
    pub status: Option<SocketAddr>,
    /// Require `Authorization: Bearer <TOKEN>` on the --status listener (all but /healthz and
    /// /readyz); set it whenever that listener is reachable from beyond this machine
    #[arg(long, env = "POSTERN_STATUS_TOKEN", requires = "status", hide_env_values = true)]
    pub status_token: Option<String>,
    /// Connections to keep to the relay: `auto` (one while idle, up to 4 while several streams
    /// are busy, back to one after 30 s without a stream) or a fixed 1-4. Streams are spread
    /// over them, so busy streams use more than one core for TLS on each side, and losing one
    /// connection keeps the tunnels up on the others
    #[arg(long, default_value = "auto", env = "POSTERN_CONNECTIONS")]
    pub connections: Connections,
    /// Let the relay's API open tunnels to these local ports on this client, while it runs:
    /// ports and ranges such as 3000-3999,5432, or `any`. Off by default: a relay, or whoever
    /// holds its admin token, can then open nothing on this machine
    #[arg(long, env = "POSTERN_ALLOW_REMOTE", value_name = "PORTS|any")]
    pub allow_remote: Option<AllowRemote>,
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
    /// Visitors sign in through the relay's identity provider (OIDC), and only these e-mail
    /// addresses get in, e.g. '*@example.com' or bob@example.org; repeatable. Addresses granted
    /// through the admin API, share links and service tokens get in too
    #[arg(long, value_name = "EMAIL")]
    pub allow_email: Vec<String>,
    /// Visitors must sign in, and only addresses granted through the admin API, share links and
    /// service tokens get in (implied by --allow-email)
    #[arg(long)]
    pub login: bool,
}

/// Options for HTTP tunnels.
#[derive(Debug, Args, Clone)]
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

impl Default for HttpOptions {
    fn default() -> Self {
        Self { host_header: "preserve".into(), h2c: false }
    }
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
    /// Capture each request (headers, the first 64 KiB of each body) in the relay's request
    /// inspector, to list and replay through the admin API and dashboard. Authorization,
    /// cookies and your --auth-header are never kept
    #[arg(long)]
    pub inspect: bool,
    /// Serve only this path prefix of the shared host https://<id>.<domain> (and of --domain),
    /// e.g. /api: other tunnels of the same owner serve the rest of it. The prefix matches
    /// whole segments (/api, /api/x, not /apix); the longest one wins. Needs a single port
    #[arg(long, value_name = "/PREFIX")]
    pub path: Option<String>,
    /// With --path: the local service sees /users where the visitor asked for /api/users
    #[arg(long, requires = "path")]
    pub strip_prefix: bool,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub access: AccessOptions,
    #[command(flatten)]
    pub client: ClientArgs,
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

/// `postern agent`: a client that starts with no tunnel and is told which to open.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl AgentArgs {
    /// The agent for `postern agent`: no tunnel yet; its client id is `--client-id`, else the
    /// token's subject, else this machine's name (the `<id>` of HTTP tunnels opened later).
    pub fn agent_config(&self) -> Result<AgentConfig, SetupError> {
        if self.client.allow_remote.is_none() && self.client.status.is_none() {
            return Err(invalid(
                "postern agent starts with no tunnel, and nothing could open one: give --allow-remote \
                 (the relay's API opens them) or --status (the local control API does)",
            ));
        }
        let mut cfg = self.client.agent_config(Vec::new(), &self.http)?;
        cfg.client_id = Some(self.client.default_id().unwrap_or_else(machine_id));
        Ok(cfg)
    }
}

impl TcpArgs {
    /// The agent for `postern tcp`.
    pub fn agent_config(&self) -> Result<AgentConfig, SetupError> {
        let access = access_rules(&AccessOptions { allow_ip: self.allow_ip.clone(), ..AccessOptions::default() })?;
        let spec = TunnelSpec {
            kind: TunnelKind::Tcp,
            local_port: self.port,
            remote_port: self.remote_port,
            id: None,
            access,
            domain: None,
            inspect: false,
            path: None,
            strip_prefix: false,
        };
        self.client.agent_config(vec![spec], &HttpOptions::default())
    }
}

impl HttpArgs {
    /// The agent for `postern http`: one tunnel per port, under the id (`--id`, else the
    /// client id, else the token's subject, else this machine's name).
    pub fn agent_config(&self) -> Result<AgentConfig, SetupError> {
        let id = self.id.clone().or_else(|| self.client.default_id()).unwrap_or_else(machine_id);
        let access = access_rules(&self.access)?;
        if self.path.is_some() && self.ports.len() > 1 {
            return Err(invalid("--path is for one port: run one client per prefix, or use a client file"));
        }
        let path = self.path.as_deref().map(postern_proto::route::path_prefix).transpose().map_err(invalid)?;
        let tunnels = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, &port)| TunnelSpec {
                kind: TunnelKind::Http,
                local_port: port,
                remote_port: None,
                id: Some(id.clone()),
                access: access.clone(),
                domain: if i == 0 { self.domain.clone() } else { None },
                inspect: self.inspect,
                path: path.clone(),
                strip_prefix: self.strip_prefix,
            })
            .collect();
        let mut cfg = self.client.agent_config(tunnels, &self.http)?;
        cfg.client_id.get_or_insert(id);
        Ok(cfg)
    }
}

impl ClientArgs {
    /// The status listener, if asked for, with its token.
    pub fn status_options(&self) -> Option<crate::status::StatusOptions> {
        self.status.map(|addr| crate::status::StatusOptions { addr, token: self.status_token.clone() })
    }

    /// The client id, else the subject of a signed token (read, not verified: the relay
    /// verifies).
    pub fn default_id(&self) -> Option<String> {
        self.client_id.clone().or_else(|| postern_proto::token::peek(&self.token).ok().map(|claims| claims.sub))
    }

    /// The agent for `tunnels`.
    pub fn agent_config(&self, tunnels: Vec<TunnelSpec>, http: &HttpOptions) -> Result<AgentConfig, SetupError> {
        let trust = match (self.ca.as_slice(), self.insecure) {
            (_, true) => Trust::Insecure,
            ([], false) => Trust::SystemRoots,
            ([ca], false) => Trust::CaFile(ca.clone()),
            (cas, false) => Trust::CaFiles(cas.to_vec()),
        };
        let servers: Vec<&str> = self.server.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if servers.is_empty() {
            return Err(invalid("--server needs at least one host:port"));
        }
        let mut cfg = AgentConfig::new(servers.join(","), self.token.clone(), trust, tunnels);
        cfg.client_id = self.client_id.clone();
        cfg.local_host = self.local_host.clone();
        cfg.max_backoff = self.max_backoff;
        cfg.local_h2c = http.h2c;
        cfg.connections = self.connections;
        cfg.allow_remote = self.allow_remote.clone().unwrap_or_default();
        cfg.host_header = match http.host_header.as_str() {
            "" | "preserve" => HostHeader::Preserve,
            "rewrite" => HostHeader::Rewrite,
            v if http::HeaderValue::from_str(v).is_ok() => HostHeader::Value(v.to_string()),
            v => return Err(invalid(format!("--host-header {v:?} is not a valid header value"))),
        };
        Ok(cfg)
    }
}

/// Turns the access flags into hashed rules (a fresh random salt per secret); `None` when the
/// tunnel is public.
pub fn access_rules(o: &AccessOptions) -> Result<Option<Access>, SetupError> {
    let salted = |secret: &str| {
        let salt: [u8; 16] = rand::random();
        access::hash_secret(secret, &salt)
    };
    let mut rules = Access::default();
    for pair in &o.basic_auth {
        let (user, pass) =
            pair.split_once(':').ok_or_else(|| invalid(format!("--basic-auth {pair:?}: expected USER:PASSWORD")))?;
        if user.is_empty() || pass.is_empty() {
            return Err(invalid("--basic-auth needs a user and a password"));
        }
        if user.contains(':') {
            return Err(invalid("--basic-auth user names cannot contain ':'"));
        }
        rules.basic_auth.push(format!("{user}:{}", salted(pass)));
    }
    rules.header = match (&o.auth_header, &o.bearer) {
        (Some(_), Some(_)) => return Err(invalid("use either --auth-header or --bearer, not both")),
        (Some(h), None) => {
            let (name, value) =
                h.split_once(':').ok_or_else(|| invalid(format!("--auth-header {h:?}: expected 'Name: value'")))?;
            let name = name.trim().to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(format!("--auth-header: {name:?} is not a header name")));
            }
            Some(HeaderRule { name, value: salted(value.trim()) })
        }
        (None, Some(token)) => {
            Some(HeaderRule { name: "authorization".into(), value: salted(&format!("Bearer {token}")) })
        }
        (None, None) => None,
    };
    for ip in &o.allow_ip {
        if ip.parse::<std::net::IpAddr>().is_err() && ip.parse::<ipnet::IpNet>().is_err() {
            return Err(invalid(format!("--allow-ip {ip:?}: expected an IP address or a CIDR such as 10.0.0.0/8")));
        }
        rules.allow_ips.push(ip.clone());
    }
    if let Some(bad) = o.allow_email.iter().find(|e| !access::valid_email_pattern(e)) {
        return Err(invalid(format!(
            "--allow-email {bad:?}: expected an address or a pattern such as '*@example.com'"
        )));
    }
    if o.allow_email.len() > access::MAX_EMAIL_PATTERNS {
        return Err(invalid(format!("at most {} --allow-email patterns", access::MAX_EMAIL_PATTERNS)));
    }
    if o.login || !o.allow_email.is_empty() {
        rules.login = Some(access::Login { emails: o.allow_email.clone() });
    }
    Ok((!rules.is_public()).then_some(rules))
}

/// This machine's host name as a DNS label: the default tunnel id.
pub fn machine_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let first = raw.trim().split('.').next().unwrap_or_default().to_ascii_lowercase();
    let cleaned: String = first.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(40).collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() {
        "postern".into()
    } else {
        cleaned
    }
}
