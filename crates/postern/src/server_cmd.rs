//! `postern server`: load the settings, bind the listeners, print where things are, run the
//! relay, and reload on SIGHUP or when the config file changes.

use std::time::Duration;

use anyhow::Context;
use clap::ArgMatches;
use postern_server::config::{Layers, Listeners};
use postern_server::{CertResolver, Relay, RelayConfig, RelayListeners};
use tokio::net::TcpListener;

use crate::cli::ServerArgs;
use crate::signals::{hangups, shutdown_token};

/// How long sessions get to close after their drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The relay's settings from the flags in `matches` (a command flattening `RelayConfig`), the
/// `POSTERN_*` variables and the config file at `file`.
pub fn load(matches: &ArgMatches, file: Option<&std::path::Path>) -> anyhow::Result<RelayConfig> {
    let file = match file {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?,
        )),
        None => None,
    };
    let layers = Layers { flags: Layers::flags_from(matches), env: &|k| std::env::var_os(k), file };
    Ok(RelayConfig::load(&layers)?)
}

/// Says so when the limit on open files is below what the relay's own caps allow: one file per
/// agent and one per public connection.
fn warn_on_open_files(config: &RelayConfig, open_files: Option<u64>) {
    let need = (config.max_agents + config.max_public_connections) as u64;
    if let Some(limit) = open_files.filter(|&l| l < need) {
        say!(
            "warning: the open files limit is {limit}, below --max-agents + --max-public-connections ({need}); \
             past it, new connections fail. Raise it (LimitNOFILE= under systemd, --ulimit nofile= under Docker)"
        );
    }
}

/// Binds every listener of `config`, naming the flag to change when one is taken.
pub async fn bind(at: Listeners) -> anyhow::Result<RelayListeners> {
    async fn one(what: &str, flag: &str, addr: Option<std::net::SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
        let Some(addr) = addr else { return Ok(None) };
        let l = TcpListener::bind(addr).await;
        Ok(Some(l.with_context(|| format!("binding the {what} port {addr} (in use? change {flag})"))?))
    }
    let control = one("control", "--control-addr", Some(at.control)).await?.context("no control address")?;
    Ok(RelayListeners {
        control,
        http: one("HTTP", "--http-addr", at.http).await?,
        https: one("HTTPS", "--https-addr", at.https).await?,
        admin: one("admin", "--admin-addr", at.admin).await?,
        bore: one("bore", "--bore-addr", at.bore).await?,
        peer: one("peer", "--peer-addr", at.peer).await?,
    })
}

/// Runs `postern server`, registering its metrics in `metrics`; `open_files` is the limit on
/// open files the process got.
pub async fn run(
    args: ServerArgs,
    matches: &ArgMatches,
    metrics: &prometheus::Registry,
    open_files: Option<u64>,
) -> anyhow::Result<()> {
    // Signal handlers first, so a SIGTERM that arrives while starting up still drains.
    let shutdown = shutdown_token();
    let config = load(matches, args.config.as_deref())?;
    let source = config.cert_source().context("no state directory")?;
    let certs = CertResolver::load(source).context("loading the relay certificates")?;
    let at = config.listeners();
    if args.check {
        let show = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        say!(
            "configuration OK: control {}, http {}, https {}, admin {}, bore {}, tcp ports {} on {}",
            at.control,
            show(at.http),
            show(at.https),
            show(at.admin),
            show(at.bore),
            config.tcp_ports,
            config.tcp_bind()
        );
        say!("{}", who_may_connect(&config, at));
        return Ok(());
    }
    let listeners = bind(at).await?;
    banner(&config, &listeners, &certs)?;
    warn_on_open_files(&config, open_files);
    say!("{}", who_may_connect(&config, at));
    // Sessions get the drain timeout, then a moment to close.
    let grace = config.drain_timeout + SHUTDOWN_GRACE;
    let relay = Relay::new(config, certs, metrics)?;
    let (matches, file) = (matches.clone(), args.config.clone());
    let reload = move || load(&matches, file.as_deref());
    tokio::spawn(postern_server::reload::watch(relay.reloader(), reload, args.config, hangups(), shutdown.clone()));
    relay.run(listeners, shutdown, grace).await?;
    say!("postern relay stopped");
    Ok(())
}

/// Where everything listens, and how clients trust a development certificate.
pub fn banner(config: &RelayConfig, l: &RelayListeners, certs: &CertResolver) -> anyhow::Result<()> {
    let control = l.control.local_addr()?;
    say!("postern relay: agents connect to {control}");
    if let Some(l) = &l.https {
        say!("public HTTPS on {}: https://<id>-<port>.{}", l.local_addr()?, config.domain);
    }
    if let Some(l) = &l.http {
        say!("public HTTP on {}", l.local_addr()?);
    }
    if let Some(l) = &l.admin {
        say!("admin API on http://{}/api/v1/tunnels (metrics: /metrics)", l.local_addr()?);
        say!("dashboard on http://{}/ui/ (log in with the admin token or a client's token)", l.local_addr()?);
    }
    if let Some(l) = &l.bore {
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
    if let (Some(l), Some(id)) = (&l.peer, &config.relay_id) {
        let cluster = config.cluster.as_deref().unwrap_or_default();
        say!("cluster member {id}: directory {}, peers link to {}", redact(cluster), l.local_addr()?);
    }
    if let Some(dev) = certs.dev() {
        say!("development certificate for localhost and *.localhost, signed by {}", dev.ca_cert.display());
        let ca = dev.ca_cert.display();
        say!("clients trust it with:  postern http <port> --server localhost:{} --ca {ca}", control.port());
    }
    Ok(())
}

/// A directory URL without its password.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// One line saying who may open tunnels.
fn who_may_connect(config: &RelayConfig, at: Listeners) -> String {
    if config.anonymous_allowed(at.control) {
        "anonymous clients allowed (development relay on loopback, or --allow-anonymous)".into()
    } else if config.token.is_some() {
        "clients need the shared --token or a token from `postern token mint`".into()
    } else {
        let dir = config.state_dir.as_deref().unwrap_or(std::path::Path::new("postern-state")).display();
        format!("clients need a token: postern token mint --state-dir {dir} --subject <name>")
    }
}
