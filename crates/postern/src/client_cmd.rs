//! `postern tcp` (and later `postern http`): build the agent config, run the agent, print the
//! public addresses each time a session comes up.

use anyhow::Context;
use postern_client::{AgentConfig, AgentPhase, AgentState};
use postern_proto::{TunnelKind, TunnelSpec};
use postern_transport::tls::Trust;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cli::{ClientArgs, TcpArgs};
use crate::signals::shutdown_token;

/// Runs `postern tcp PORT`.
pub async fn run_tcp(args: TcpArgs) -> anyhow::Result<()> {
    let spec = TunnelSpec { kind: TunnelKind::Tcp, local_port: args.port, remote_port: args.remote_port, id: None };
    let cfg = agent_config(&args.client, vec![spec]);
    run_agent(cfg, shutdown_token()).await
}

/// Turns the shared client flags into an agent config.
pub fn agent_config(c: &ClientArgs, tunnels: Vec<TunnelSpec>) -> AgentConfig {
    let trust = if c.insecure {
        eprintln!("warning: --insecure: the relay's certificate is NOT verified; anyone on the path can read and alter this tunnel");
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
    cfg
}

/// Runs the agent until Ctrl-C (unregister, exit 0) or a fatal error (exit 1).
pub async fn run_agent(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(AgentState::default());
    let local_host = cfg.local_host.clone();
    let printer = tokio::spawn(print_sessions(rx, local_host));
    let result = postern_client::run(cfg, tx, shutdown).await;
    printer.abort();
    result.context("tunnel client stopped")?;
    eprintln!("unregistered; bye");
    Ok(())
}

async fn print_sessions(mut rx: watch::Receiver<AgentState>, local_host: String) {
    let mut printed = 0;
    while rx.changed().await.is_ok() {
        let s = rx.borrow_and_update().clone();
        if s.phase == AgentPhase::Connected && s.sessions != printed {
            printed = s.sessions;
            if printed > 1 {
                println!("reconnected");
            }
            for t in &s.tunnels {
                println!("{}  ->  {local_host}:{}", t.public_url, t.local_port);
            }
        }
    }
}
