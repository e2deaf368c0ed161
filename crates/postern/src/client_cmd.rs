//! `postern http`, `postern tcp` and `postern start`: run the agent the library configured,
//! and print the public addresses each time a session comes up.

use anyhow::Context;
use postern_client::status::StatusOptions;
use postern_client::{AgentConfig, AgentPhase, AgentState};
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
/// `status`, serves the agent's state as JSON there.
pub async fn run_agent(
    cfg: AgentConfig,
    status: Option<StatusOptions>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(AgentState::default());
    if let Some(StatusOptions { addr, token }) = status {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the status endpoint {addr}"))?;
        eprintln!("status: http://{}/", listener.local_addr()?);
        if token.is_none() && !addr.ip().is_loopback() {
            eprintln!(
                "warning: the status endpoint on {addr} is not loopback and has no --status-token: anyone who reaches it reads this client's tunnels"
            );
        }
        let (server, stats) = (cfg.server.clone(), cfg.stats.clone());
        tokio::spawn(postern_client::status::serve(listener, server, rx.clone(), stats, token, shutdown.clone()));
    }
    let printer = tokio::spawn(print_sessions(rx, cfg.local_host.clone(), cfg.server.clone()));
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
        if !rising {
            continue;
        }
        printed += 1;
        if printed > 1 {
            say!("reconnected");
        }
        for t in &s.tunnels {
            let also: Vec<&str> = [&t.default_url, &t.domain_url].into_iter().flatten().map(String::as_str).collect();
            match also.is_empty() {
                true => say!("{}  ->  {local_host}:{}", t.public_url, t.local_port),
                false => say!("{}  ->  {local_host}:{}   (also {})", t.public_url, t.local_port, also.join(", ")),
            }
        }
    }
}
