//! `postern http`, `postern tcp` and `postern start`: build the agent config, run the agent,
//! print the public addresses each time a session comes up.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use postern_client::http_forward::HostHeader;
use postern_client::{AgentConfig, AgentPhase, AgentState};
use postern_proto::access::{self, Access, HeaderRule};
use postern_proto::{TunnelKind, TunnelSpec};
use postern_transport::tls::Trust;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cli::{AccessOptions, ClientArgs, HttpArgs, HttpOptions, StartArgs, TcpArgs};
use crate::signals::shutdown_token;

/// Runs `postern tcp PORT`.
pub async fn run_tcp(args: TcpArgs) -> anyhow::Result<()> {
    let access = access_rules(&AccessOptions { allow_ip: args.allow_ip.clone(), ..AccessOptions::default() })?;
    let spec = TunnelSpec {
        kind: TunnelKind::Tcp,
        local_port: args.port,
        remote_port: args.remote_port,
        id: None,
        access,
        domain: None,
    };
    let cfg = agent_config(&args.client, vec![spec], &HttpOptions::default())?;
    run_agent(cfg, args.client.status, shutdown_token()).await
}

/// Runs `postern http PORT...`.
pub async fn run_http(args: HttpArgs) -> anyhow::Result<()> {
    let id = args.id.clone().or_else(|| default_id(&args.client)).unwrap_or_else(machine_id);
    let tunnels = args
        .ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            Ok::<_, anyhow::Error>(TunnelSpec {
                kind: TunnelKind::Http,
                local_port: port,
                remote_port: None,
                id: Some(id.clone()),
                access: access_rules(&args.access)?,
                domain: if i == 0 { args.domain.clone() } else { None },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = agent_config(&args.client, tunnels, &args.http)?;
    if cfg.client_id.is_none() {
        cfg.client_id = Some(id);
    }
    run_agent(cfg, args.client.status, shutdown_token()).await
}

/// The client id, else the subject of a signed token (read, not verified: the relay verifies).
fn default_id(c: &ClientArgs) -> Option<String> {
    c.client_id.clone().or_else(|| postern_proto::token::peek(&c.token).ok().map(|claims| claims.sub))
}

/// A client config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    client_id: Option<String>,
    local_host: Option<String>,
    host_header: Option<String>,
    #[serde(default)]
    h2c: bool,
    status: Option<SocketAddr>,
    connections: Option<u8>,
    #[serde(rename = "tunnel", default)]
    tunnels: Vec<FileTunnel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTunnel {
    kind: TunnelKind,
    port: u16,
    id: Option<String>,
    remote_port: Option<u16>,
    /// Custom domain (http tunnels).
    domain: Option<String>,
    #[serde(default)]
    basic_auth: Vec<String>,
    auth_header: Option<String>,
    bearer: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
}

/// Runs `postern start --config FILE`. `POSTERN_TOKEN` and `POSTERN_SERVER` override the file,
/// so the secret can stay out of it.
pub async fn run_start(args: StartArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading client config {}", args.config.display()))?;
    let file: ClientFile =
        toml::from_str(&text).with_context(|| format!("parsing client config {}", args.config.display()))?;
    anyhow::ensure!(!file.tunnels.is_empty(), "{} lists no [[tunnel]]", args.config.display());
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let client = ClientArgs {
        server: env("POSTERN_SERVER").or(file.server).unwrap_or_else(|| "localhost:7000".into()),
        token: env("POSTERN_TOKEN").or(file.token).unwrap_or_default(),
        ca: env("POSTERN_CA").map(PathBuf::from).or(file.ca),
        insecure: file.insecure,
        client_id: env("POSTERN_CLIENT_ID").or(file.client_id),
        local_host: file.local_host.unwrap_or_else(|| "localhost".into()),
        max_backoff: std::time::Duration::from_secs(30),
        status: file.status,
        connections: file.connections.unwrap_or(1).clamp(1, 4),
    };
    let default_id = default_id(&client).unwrap_or_else(machine_id);
    let mut tunnels = Vec::new();
    for t in file.tunnels {
        let access = access_rules(&AccessOptions {
            basic_auth: t.basic_auth,
            auth_header: t.auth_header,
            bearer: t.bearer,
            allow_ip: t.allow_ips,
        })?;
        tunnels.push(TunnelSpec {
            kind: t.kind,
            local_port: t.port,
            remote_port: t.remote_port,
            id: match t.kind {
                TunnelKind::Http => Some(t.id.unwrap_or_else(|| default_id.clone())),
                TunnelKind::Tcp => None,
            },
            access,
            domain: t.domain,
        });
    }
    let http = HttpOptions { host_header: file.host_header.unwrap_or_else(|| "preserve".into()), h2c: file.h2c };
    let mut cfg = agent_config(&client, tunnels, &http)?;
    if cfg.client_id.is_none() {
        cfg.client_id = Some(default_id);
    }
    run_agent(cfg, client.status, shutdown_token()).await
}

/// Turns the access flags into hashed rules (a fresh random salt per secret); `None` when the
/// tunnel is public.
pub fn access_rules(o: &AccessOptions) -> anyhow::Result<Option<Access>> {
    let salted = |secret: &str| {
        let salt: [u8; 16] = rand::random();
        access::hash_secret(secret, &salt)
    };
    let mut rules = Access::default();
    for pair in &o.basic_auth {
        let (user, pass) =
            pair.split_once(':').with_context(|| format!("--basic-auth {pair:?}: expected USER:PASSWORD"))?;
        anyhow::ensure!(!user.is_empty() && !pass.is_empty(), "--basic-auth needs a user and a password");
        anyhow::ensure!(!user.contains(':'), "--basic-auth user names cannot contain ':'");
        rules.basic_auth.push(format!("{user}:{}", salted(pass)));
    }
    let header = match (&o.auth_header, &o.bearer) {
        (Some(_), Some(_)) => anyhow::bail!("use either --auth-header or --bearer, not both"),
        (Some(h), None) => {
            let (name, value) =
                h.split_once(':').with_context(|| format!("--auth-header {h:?}: expected 'Name: value'"))?;
            let name = name.trim().to_ascii_lowercase();
            anyhow::ensure!(
                http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "--auth-header: {name:?} is not a header name"
            );
            Some(HeaderRule { name, value: salted(value.trim()) })
        }
        (None, Some(token)) => {
            Some(HeaderRule { name: "authorization".into(), value: salted(&format!("Bearer {token}")) })
        }
        (None, None) => None,
    };
    rules.header = header;
    for ip in &o.allow_ip {
        let ok = ip.parse::<std::net::IpAddr>().is_ok() || ip.parse::<ipnet::IpNet>().is_ok();
        anyhow::ensure!(ok, "--allow-ip {ip:?}: expected an IP address or a CIDR such as 10.0.0.0/8");
        rules.allow_ips.push(ip.clone());
    }
    Ok((!rules.is_public()).then_some(rules))
}

/// This machine's host name as a DNS label, the default tunnel id.
fn machine_id() -> String {
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

/// Turns the shared client flags into an agent config.
pub fn agent_config(c: &ClientArgs, tunnels: Vec<TunnelSpec>, http: &HttpOptions) -> anyhow::Result<AgentConfig> {
    let trust = if c.insecure {
        eprintln!(
            "warning: --insecure: the relay's certificate is NOT verified; anyone on the path can read and alter this tunnel"
        );
        Trust::Insecure
    } else if let Some(ca) = &c.ca {
        Trust::CaFile(ca.clone())
    } else {
        Trust::SystemRoots
    };
    let mut cfg = AgentConfig::new(c.server.clone(), c.token.clone(), trust, tunnels);
    cfg.client_id = c.client_id.clone();
    cfg.local_host = c.local_host.clone();
    cfg.max_backoff = c.max_backoff;
    cfg.local_h2c = http.h2c;
    cfg.connections = usize::from(c.connections);
    cfg.host_header = match http.host_header.as_str() {
        "" | "preserve" => HostHeader::Preserve,
        "rewrite" => HostHeader::Rewrite,
        v if http::HeaderValue::from_str(v).is_ok() => HostHeader::Value(v.to_string()),
        v => anyhow::bail!("--host-header {v:?} is not a valid header value"),
    };
    Ok(cfg)
}

/// Runs the agent until Ctrl-C (unregister, exit 0) or a fatal error (exit 1). With `status`,
/// serves the agent's state as JSON there.
pub async fn run_agent(
    cfg: AgentConfig,
    status: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(AgentState::default());
    let local_host = cfg.local_host.clone();
    if let Some(addr) = status {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the status endpoint {addr}"))?;
        eprintln!("status: http://{}/", listener.local_addr()?);
        let (server, stats) = (cfg.server.clone(), cfg.stats.clone());
        tokio::spawn(postern_client::status::serve(listener, server, rx.clone(), stats, shutdown.clone()));
    }
    let printer = tokio::spawn(print_sessions(rx, local_host, cfg.server.clone()));
    let result = postern_client::run(cfg, tx, shutdown).await;
    printer.abort();
    result.context("tunnel client stopped")?;
    eprintln!("unregistered; bye");
    Ok(())
}

async fn print_sessions(mut rx: watch::Receiver<AgentState>, local_host: String, server: String) {
    // Print the URLs when the client goes from no connection to some (with several
    // connections, once, not per connection). Before the first session, say once that the
    // relay cannot be reached yet, and why.
    let (mut was_up, mut printed, mut waiting) = (false, 0u32, false);
    while rx.changed().await.is_ok() {
        let s = rx.borrow_and_update().clone();
        if s.sessions == 0 && s.phase == AgentPhase::Reconnecting && !waiting {
            waiting = true;
            let why = s.last_error.as_deref().unwrap_or("no answer");
            say!("waiting for the relay at {server}: {why} (retrying; Ctrl-C to stop)");
        }
        let up = s.phase == AgentPhase::Connected && s.connected > 0;
        let rising = up && !was_up;
        was_up = up;
        if rising {
            printed += 1;
            if printed > 1 {
                say!("reconnected");
            }
            for t in &s.tunnels {
                let also: Vec<&str> =
                    [&t.default_url, &t.domain_url].into_iter().flatten().map(String::as_str).collect();
                match also.is_empty() {
                    true => say!("{}  ->  {local_host}:{}", t.public_url, t.local_port),
                    false => say!("{}  ->  {local_host}:{}   (also {})", t.public_url, t.local_port, also.join(", ")),
                }
            }
        }
    }
}
