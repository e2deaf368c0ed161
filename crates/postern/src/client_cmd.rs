//! `postern http`, `postern tcp`, `postern agent` and `postern start`: run the agent the library configured,
//! and print the public addresses each time a session comes up.

use anyhow::Context;
use postern_client::status::StatusOptions;
use postern_client::{Agent, AgentConfig, AgentPhase, AgentState};
use postern_transport::tls::Trust;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::signals::shutdown_token;

/// Runs an agent for `cfg` until Ctrl-C or a fatal error; `status` serves its state as JSON.
pub async fn run(cfg: AgentConfig, status: Option<StatusOptions>) -> anyhow::Result<()> {
    if matches!(cfg.trust, Trust::Insecure) {
        eprintln!(
            "warning: --insecure: the relay's certificate is NOT verified; anyone on the path can read and alter this tunnel"
        );
    }
    run_agent(cfg, status, shutdown_token()).await
}

/// Runs the agent until `shutdown` (unregister, exit 0) or a fatal error (exit 1). With
/// `status`, serves the agent's state and the local control API there; a stop through that
/// API leaves the process running, to be started again.
pub async fn run_agent(
    cfg: AgentConfig,
    status: Option<StatusOptions>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (local_host, server) = (cfg.local_host.clone(), cfg.server.clone());
    let agent = Agent::new(cfg);
    if let Some(StatusOptions { addr, token }) = status {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the status endpoint {addr}"))?;
        eprintln!("status: http://{}/", listener.local_addr()?);
        if token.is_none() && !addr.ip().is_loopback() {
            eprintln!(
                "warning: the status endpoint on {addr} is not loopback and has no --status-token: anyone who reaches it reads and changes this client's tunnels"
            );
        }
        tokio::spawn(postern_client::status::serve(listener, agent.clone(), token, shutdown.clone()));
    }
    let printer = tokio::spawn(print_sessions(agent.state(), local_host, server));
    agent.start();
    let mut state = agent.state();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = state.wait_for(|s| s.phase == AgentPhase::Failed) => {}
    }
    let result = agent.stop().await;
    printer.abort();
    result.context("tunnel client stopped")?;
    eprintln!("unregistered; bye");
    Ok(())
}

async fn print_sessions(mut rx: watch::Receiver<AgentState>, local_host: String, server: String) {
    // Print the URLs when the client goes from no connection to some (with several
    // connections, once, not per connection), then each tunnel opened or closed live. Before
    // the first session, say once that the relay cannot be reached yet, and why.
    let (mut was_up, mut printed, mut waiting) = (false, 0u32, false);
    let mut shown: Vec<String> = Vec::new();
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
        if !up {
            continue;
        }
        if rising {
            printed += 1;
            if printed > 1 {
                say!("reconnected");
            }
            if s.tunnels.is_empty() {
                say!("connected; no tunnel open yet");
            }
            shown.clear();
        }
        for gone in shown.iter().filter(|n| !s.tunnels.iter().any(|t| &t.name == *n)) {
            say!("closed {gone}");
        }
        for t in s.tunnels.iter().filter(|t| !shown.contains(&t.name)) {
            let also: Vec<&str> = [&t.default_url, &t.domain_url].into_iter().flatten().map(String::as_str).collect();
            match also.is_empty() {
                true => say!("{}  ->  {local_host}:{}", t.public_url, t.local_port),
                false => say!("{}  ->  {local_host}:{}   (also {})", t.public_url, t.local_port, also.join(", ")),
            }
        }
        shown = s.tunnels.iter().map(|t| t.name.clone()).collect();
    }
}
