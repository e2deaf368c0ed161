//! `postern server`: resolve flags, environment and config file, then run the relay.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use postern_server::access::Policies;
use postern_server::acme::{AcmeConfig, LETS_ENCRYPT};
use postern_server::domains::TxtLookup;
use postern_server::webhook::Webhook;
use postern_server::{keys, CertResolver, CertSource, PortRange, Relay, RelayConfig, RelayListeners, Reloader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServerArgs;
use crate::file_config::{duration, FileConfig, FilePolicy};
use crate::signals::shutdown_token;

/// How long sessions get to close after their drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The relay's settings after merging flags, environment, file and defaults.
#[derive(Debug)]
pub struct Resolved {
    pub control_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub bore_addr: Option<SocketAddr>,
    pub certs: CertSource,
    pub config: RelayConfig,
}

/// Parses `--txt-proof`.
fn txt_proof(value: Option<&str>) -> anyhow::Result<TxtLookup> {
    match value.map(str::trim) {
        None | Some("system") => Ok(TxtLookup::System),
        Some("off" | "none" | "") => Ok(TxtLookup::Off),
        Some(v) => v
            .parse()
            .map(TxtLookup::Server)
            .with_context(|| format!("--txt-proof: {v:?} is not `system`, `off` or a DNS server like 127.0.0.1:53")),
    }
}

/// Parses a listener address or `off`, `default` when unset.
fn listen_addr(flag: &str, value: Option<String>, default: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    value.map_or(Ok(Some(default)), |v| parse_listen(flag, &v))
}

/// Parses a listener address; `None` for `off` (also `none` or empty).
pub fn parse_listen(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    match value.trim() {
        "off" | "none" | "" => Ok(None),
        v => v.parse().map(Some).with_context(|| format!("{flag}: {v:?} is not an address like 0.0.0.0:443 or `off`")),
    }
}

/// Merges flags and environment (already merged by clap, flags first) over the file over the
/// defaults.
pub fn resolve(args: ServerArgs) -> anyhow::Result<Resolved> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let d = RelayConfig::default();
    let domain = args.domain.or(file.domain).unwrap_or(d.domain.clone());
    // A real domain means a public relay: listen on every interface and the standard ports.
    let dev = domain == "localhost";
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let tcp_ports = match args.tcp_ports.or(file.tcp_ports) {
        Some(s) => s.parse::<PortRange>()?,
        None => d.tcp_ports,
    };
    let tls_files = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("tls_cert and tls_key must be given together"),
    };
    let state_dir = args
        .state_dir
        .or(file.state_dir)
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("postern-state"));
    let config = RelayConfig {
        domain,
        tcp_bind: args.tcp_bind.or(file.tcp_bind).unwrap_or(if dev {
            d.tcp_bind
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        }),
        tcp_ports,
        token: args.token.or(file.token).filter(|t| !t.is_empty()),
        allow_anonymous: args.allow_anonymous || file.allow_anonymous.unwrap_or(false),
        handshake_timeout: args
            .handshake_timeout
            .or(duration("handshake_timeout", file.handshake_timeout.as_deref())?)
            .unwrap_or(d.handshake_timeout),
        heartbeat_interval: args
            .heartbeat_interval
            .or(duration("heartbeat_interval", file.heartbeat_interval.as_deref())?)
            .unwrap_or(d.heartbeat_interval),
        heartbeat_timeout: args
            .heartbeat_timeout
            .or(duration("heartbeat_timeout", file.heartbeat_timeout.as_deref())?)
            .unwrap_or(d.heartbeat_timeout),
        max_agents: args.max_agents.or(file.max_agents).unwrap_or(d.max_agents),
        max_tunnels_per_agent: d.max_tunnels_per_agent,
        max_public_connections: args
            .max_public_connections
            .or(file.max_public_connections)
            .unwrap_or(d.max_public_connections),
        http_redirect: args.http_redirect || file.http_redirect.unwrap_or(d.http_redirect),
        http_header_timeout: args
            .http_header_timeout
            .or(duration("http_header_timeout", file.http_header_timeout.as_deref())?)
            .unwrap_or(d.http_header_timeout),
        http_idle_timeout: args
            .http_idle_timeout
            .or(duration("http_idle_timeout", file.http_idle_timeout.as_deref())?)
            .unwrap_or(d.http_idle_timeout),
        http_max_header_bytes: args
            .http_max_header_bytes
            .or(file.http_max_header_bytes)
            .unwrap_or(d.http_max_header_bytes),
        http_max_streams: args.http_max_streams.or(file.http_max_streams).unwrap_or(d.http_max_streams),
        cert_poll_interval: d.cert_poll_interval,
        token_key: Some(keys::load_or_create(&state_dir).context("loading the token signing key")?),
        admin_token: args.admin_token.or(file.admin_token).filter(|t| !t.is_empty()),
        metrics_per_tunnel: args.metrics_per_tunnel || file.metrics_per_tunnel.unwrap_or(false),
        webhook: match (args.webhook.or(file.webhook), args.webhook_secret.or(file.webhook_secret)) {
            (None, _) => None,
            (Some(url), Some(secret)) => {
                Some(Webhook { url: url.parse().with_context(|| format!("--webhook {url:?} is not a URL"))?, secret })
            }
            (Some(_), None) => anyhow::bail!("--webhook needs --webhook-secret (or POSTERN_WEBHOOK_SECRET)"),
        },
        state_dir: Some(state_dir.clone()),
        lease_grace: args
            .lease_grace
            .or(duration("lease_grace", file.lease_grace.as_deref())?)
            .unwrap_or(d.lease_grace),
        revocation_poll_interval: d.revocation_poll_interval,
        policies: Policies::new(file.policies.iter().map(FilePolicy::to_policy).collect::<anyhow::Result<_>>()?),
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(file.max_connections_per_ip)
            .unwrap_or(d.max_connections_per_ip),
        max_auth_failures: args.max_auth_failures.or(file.max_auth_failures).unwrap_or(d.max_auth_failures),
        max_streams_per_agent: args
            .max_streams_per_agent
            .or(file.max_streams_per_agent)
            .unwrap_or(d.max_streams_per_agent),
        drain_timeout: args
            .drain_timeout
            .or(duration("drain_timeout", file.drain_timeout.as_deref())?)
            .unwrap_or(d.drain_timeout),
        allow_domains: if args.allow_domain.is_empty() { file.allow_domains } else { args.allow_domain },
        txt_proof: txt_proof(args.txt_proof.or(file.txt_proof).as_deref())?,
        acme: if args.acme || args.acme_wildcard || file.acme.unwrap_or(false) || file.acme_wildcard.unwrap_or(false) {
            let mut a =
                AcmeConfig::new(args.acme_directory.or(file.acme_directory).unwrap_or_else(|| LETS_ENCRYPT.into()));
            a.email = args.acme_email.or(file.acme_email);
            a.ca = args.acme_ca.or(file.acme_ca);
            a.wildcard = args.acme_wildcard || file.acme_wildcard.unwrap_or(false);
            a.dns_hook = args.acme_dns_hook.or(file.acme_dns_hook);
            if let Some(r) =
                args.acme_renew_before.or(duration("acme_renew_before", file.acme_renew_before.as_deref())?)
            {
                a.renew_before = Some(r);
            }
            Some(a)
        } else {
            None
        },
    };
    let control_addr = args.control_addr.or(file.control_addr).unwrap_or(if dev { local(7000) } else { any(7000) });
    let http_addr =
        listen_addr("--http-addr", args.http_addr.or(file.http_addr), if dev { local(8080) } else { any(80) })?;
    let https_addr =
        listen_addr("--https-addr", args.https_addr.or(file.https_addr), if dev { local(8443) } else { any(443) })?;
    // Metrics and the status API stay on loopback unless asked otherwise, even in production.
    let admin_addr = listen_addr("--admin-addr", args.admin_addr.or(file.admin_addr), local(7001))?;
    let bore_addr = match args.bore_addr.or(file.bore_addr) {
        None => None,
        Some(v) => listen_addr("--bore-addr", Some(v), local(postern_proto::bore::DEFAULT_PORT))?,
    };
    config.validate()?;
    let acme_dir = config.acme.as_ref().map(|_| postern_server::acme::store::live(&state_dir));
    let certs = CertSource { state_dir, files: tls_files, extra_dir: args.tls_dir.or(file.tls_dir), acme_dir };
    Ok(Resolved { control_addr, http_addr, https_addr, admin_addr, bore_addr, certs, config })
}

/// Runs `postern server`, registering its metrics in `metrics`.
pub async fn run(args: ServerArgs, metrics: &prometheus::Registry) -> anyhow::Result<()> {
    let check = args.check;
    // Signal handlers first, so a SIGTERM that arrives while starting up still drains.
    let shutdown = shutdown_token();
    let r = resolve(args.clone())?;
    let certs = CertResolver::load(r.certs.clone()).context("loading the relay certificates")?;
    if check {
        say!(
            "configuration OK: control {}, http {}, https {}, admin {}, bore {}, tcp ports {} on {}",
            r.control_addr,
            show(r.http_addr),
            show(r.https_addr),
            show(r.admin_addr),
            show(r.bore_addr),
            r.config.tcp_ports,
            r.config.tcp_bind
        );
        say!("{}", agent_policy(&r));
        return Ok(());
    }
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.with_context(|| format!("binding the {what} port {addr}"))
    };
    let control = bind("control", r.control_addr).await?;
    let http = match r.http_addr {
        Some(a) => Some(bind("HTTP", a).await?),
        None => None,
    };
    let https = match r.https_addr {
        Some(a) => Some(bind("HTTPS", a).await?),
        None => None,
    };
    let admin = match r.admin_addr {
        Some(a) => Some(bind("admin", a).await?),
        None => None,
    };
    let bore = match r.bore_addr {
        Some(a) => Some(bind("bore", a).await?),
        None => None,
    };
    let bound = control.local_addr()?;
    say!("postern relay: agents connect to {bound}");
    if let Some(l) = &https {
        say!("public HTTPS on {}: https://<id>-<port>.{}", l.local_addr()?, r.config.domain);
    }
    if let Some(l) = &http {
        say!("public HTTP on {}", l.local_addr()?);
    }
    if let Some(l) = &admin {
        say!("admin API on http://{}/api/v1/tunnels (metrics: /metrics)", l.local_addr()?);
    }
    if let Some(l) = &bore {
        let a = l.local_addr()?;
        say!("bore clients: bore local <port> --to <this host> --secret <token>   (endpoint {a})");
        if a.port() != postern_proto::bore::DEFAULT_PORT {
            say!(
                "warning: bore clients always dial port {}; this endpoint is on {}",
                postern_proto::bore::DEFAULT_PORT,
                a.port()
            );
        }
    }
    if let Some(dev) = certs.dev() {
        say!("development certificate for localhost and *.localhost, signed by {}", dev.ca_cert.display());
        say!(
            "clients trust it with:  postern http <port> --server localhost:{} --ca {}",
            bound.port(),
            dev.ca_cert.display()
        );
    }
    say!("{}", agent_policy(&r));
    // Sessions get the drain timeout, then a moment to close.
    let grace = r.config.drain_timeout + SHUTDOWN_GRACE;
    let relay = Relay::new(r.config, certs, metrics)?;
    tokio::spawn(reload_on_change(args, relay.reloader(), shutdown.clone()));
    relay.run(RelayListeners { control, http, https, admin, bore }, shutdown, grace).await?;
    say!("postern relay stopped");
    Ok(())
}

/// One line saying who may open tunnels.
fn agent_policy(r: &Resolved) -> String {
    if r.config.anonymous_allowed(r.control_addr) {
        "anonymous clients allowed (development relay on loopback, or --allow-anonymous)".into()
    } else if r.config.token.is_some() {
        "clients need the shared --token or a token from `postern token mint`".into()
    } else {
        format!("clients need a token: postern token mint --state-dir {} --subject <name>", r.certs.state_dir.display())
    }
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into())
}

/// Reloads on SIGHUP, and when the `--config` file's content changes (checked every 2 s):
/// certificates, revocations, access policies and per-address limits. Tunnels stay up.
async fn reload_on_change(args: ServerArgs, reloader: Reloader, shutdown: CancellationToken) {
    let fingerprint = |args: &ServerArgs| args.config.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut seen = fingerprint(&args);
    let mut hup = hangups();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint(&args);
                if now == seen {
                    continue;
                }
                seen = now;
                "config file changed"
            }
        };
        let outcome = resolve(args.clone()).and_then(|r| Ok(reloader.reload(&r.config)?));
        match outcome {
            Ok(report) => tracing::info!(
                why,
                certificates = report.certificates,
                revoked = report.revoked,
                policies = report.policies,
                "reloaded; tunnels untouched"
            ),
            Err(e) => tracing::warn!(why, error = %format!("{e:#}"), "reload failed; keeping the current settings"),
        }
    }
}

/// SIGHUPs as a channel (never fires where there are no signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}
