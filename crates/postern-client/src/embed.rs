//! An agent a program runs and drives: [`Agent`] starts, stops and starts again, and opens
//! and closes tunnels while it runs. The command line and the local control API use it too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use postern_client::{Agent, AgentConfig};
//! use postern_proto::{TunnelKind, TunnelSpec};
//! use postern_transport::tls::Trust;
//!
//! let cfg = AgentConfig::new("relay.example.com:7000", "TOKEN", Trust::SystemRoots, Vec::new());
//! let agent = Agent::new(cfg);
//! agent.start();
//! let web = TunnelSpec::new(TunnelKind::Http, 8080);
//! if let Some(grant) = agent.add(web, Duration::from_secs(10)).await? {
//!     println!("{}", grant.public_url);
//! }
//! agent.stop().await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_proto::{TunnelGrant, TunnelSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::{run_shared, AgentError, AgentPhase, AgentState};
use crate::config::AgentConfig;
use crate::live::{ChangeError, LiveTunnels};

/// An agent, started and stopped on demand.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    state: Arc<watch::Sender<AgentState>>,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Agent {
    /// An agent for `cfg`, not started (`Not started`).
    pub fn new(cfg: AgentConfig) -> Arc<Self> {
        let state = AgentState { phase: AgentPhase::NotStarted, ..AgentState::default() };
        Arc::new(Agent { cfg, state: Arc::new(watch::Sender::new(state)), running: Mutex::new(None) })
    }

    /// Its settings.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Its state, as it changes.
    pub fn state(&self) -> watch::Receiver<AgentState> {
        self.state.subscribe()
    }

    /// The tunnels it wants, changed by [`Agent::add`] and [`Agent::remove`].
    pub fn tunnels(&self) -> &Arc<LiveTunnels> {
        &self.cfg.live
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts it (connects, and reconnects until stopped); false when it is already running.
    /// Must be called within a tokio runtime.
    pub fn start(&self) -> bool {
        let mut running = self.running();
        if running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return false;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_shared(self.cfg.clone(), self.state.clone(), stop.clone()));
        *running = Some(Running { stop, task });
        true
    }

    /// Stops it: unregisters from the relay and waits for that (`Disconnected`). What it stopped
    /// on, when it had already stopped on an error (`Failed`).
    pub async fn stop(&self) -> Result<(), AgentError> {
        let Some(Running { stop, task }) = self.running().take() else { return Ok(()) };
        stop.cancel();
        match task.await {
            Ok(result) => result,
            // The run task panicked or was aborted; it holds nothing to clean up.
            Err(_) => Ok(()),
        }
    }

    /// Opens `spec` on every connection and waits up to `wait` for the relay's answer: its
    /// grant, or `None` when no answer came in time (it is not connected; the tunnel opens once
    /// it is).
    pub async fn add(&self, spec: TunnelSpec, wait: Duration) -> Result<Option<TunnelGrant>, ChangeError> {
        self.cfg.live.add(spec, wait).await
    }

    /// Closes the tunnel the relay named `name`, waiting up to `wait` for the relay to confirm.
    pub async fn remove(&self, name: &str, wait: Duration) -> Result<TunnelSpec, ChangeError> {
        self.cfg.live.remove(name, wait).await
    }
}
