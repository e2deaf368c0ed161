//! What the registry knows about a connected agent, and the handle the admin API reaches its
//! session through.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

/// What the registry knows about a connected agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Session id; the API's agent id.
    pub session_id: String,
    /// Client id.
    pub client_id: String,
    /// Subject of its credential.
    pub owner: String,
    /// Id of its signed token, if any.
    pub token_id: Option<String>,
    /// Its address as the relay sees it.
    pub addr: SocketAddr,
    /// When its session started.
    pub since: SystemTime,
    /// Its tunnels' names.
    pub tunnels: Vec<String>,
}

/// A connected agent.
#[derive(Debug)]
pub struct Agent {
    /// Description.
    pub info: AgentInfo,
    /// Cancelling it ends the agent's session.
    pub kick: CancellationToken,
    /// Changes to its tunnels, to its session (remote management).
    pub changes: tokio::sync::mpsc::Sender<crate::agent::RemoteChange>,
    /// The tunnels it serves now (its `Hello`'s, then as it opens and closes them live).
    pub serving: Mutex<Vec<String>>,
}

impl Agent {
    /// The names of the tunnels it serves now.
    pub fn tunnels(&self) -> Vec<String> {
        self.serving.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
