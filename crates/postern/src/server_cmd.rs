//! `postern server`: resolve flags, environment and config file, then run the relay.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use postern_server::{certs, PortRange, Relay, RelayConfig};
use tokio::net::TcpListener;

use crate::cli::ServerArgs;
use crate::file_config::{duration, FileConfig};
use crate::signals::shutdown_token;

/// How long sessions get to end after SIGTERM/Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The relay's settings after merging flags, environment, file and defaults.
#[derive(Debug)]
pub struct Resolved {
    pub control_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub config: RelayConfig,
}

/// Merges flags and environment (already merged by clap, flags first) over the file over the
/// defaults.
pub fn resolve(args: ServerArgs) -> anyhow::Result<Resolved> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let d = RelayConfig::default();
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
        domain: args.domain.or(file.domain).unwrap_or(d.domain),
        tcp_bind: args.tcp_bind.or(file.tcp_bind).unwrap_or(d.tcp_bind),
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
    };
    let control_addr = args.control_addr.or(file.control_addr).unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 7000)));
    config.validate(control_addr)?;
    Ok(Resolved { control_addr, state_dir, tls_files, config })
}

/// Runs `postern server`.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let check = args.check;
    let r = resolve(args)?;
    let identity = certs::load(&r.state_dir, r.tls_files.clone()).context("loading the relay certificate")?;
    if check {
        println!(
            "configuration OK: control {} , tcp ports {} on {}",
            r.control_addr, r.config.tcp_ports, r.config.tcp_bind
        );
        return Ok(());
    }
    let listener = TcpListener::bind(r.control_addr)
        .await
        .with_context(|| format!("binding the control port {}", r.control_addr))?;
    let bound = listener.local_addr()?;
    println!("postern relay: agents connect to {bound}");
    if let Some(dev) = &identity.dev {
        println!("development certificate for localhost and *.localhost, signed by {}", dev.ca_cert.display());
        println!(
            "clients trust it with:  postern tcp <port> --server localhost:{} --ca {}",
            bound.port(),
            dev.ca_cert.display()
        );
    }
    if r.config.token.is_none() {
        println!("no token set: any client may open tunnels (fine on loopback; set --token elsewhere)");
    }
    let relay = Relay::new(r.config, identity.config);
    relay.run(listener, shutdown_token(), SHUTDOWN_GRACE).await?;
    Ok(())
}
