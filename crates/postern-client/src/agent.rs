//! The reconnect loop and the agent's observable state.

use std::time::Duration;

use postern_proto::TunnelGrant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::connect::{connect, connector, ConnectError};
use crate::session::{self, SessionEnd};

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentPhase {
    /// First attempt in progress.
    #[default]
    Connecting,
    /// A session is up.
    Connected,
    /// Waiting to retry after a failure.
    Reconnecting,
    /// Stopped on an error that retrying cannot fix.
    Failed,
    /// Stopped on request, after unregistering.
    Stopped,
}

impl AgentPhase {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// Observable state, published on a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentState {
    /// Phase.
    pub phase: AgentPhase,
    /// Tunnels of the current (or last) session.
    pub tunnels: Vec<TunnelGrant>,
    /// Current session id.
    pub session_id: Option<String>,
    /// Client id the relay settled on.
    pub client_id: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Sessions established so far.
    pub sessions: u64,
}

/// The agent stopped on an error that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AgentError(#[from] pub ConnectError);

/// Keeps a session to the relay up until `shutdown` fires (then unregisters and returns `Ok`),
/// or a fatal error occurs. State changes are published on `state`.
pub async fn run(
    cfg: AgentConfig,
    state: watch::Sender<AgentState>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let fail = |e: ConnectError| {
        state.send_modify(|s| {
            s.phase = AgentPhase::Failed;
            s.last_error = Some(e.to_string());
        });
        AgentError(e)
    };
    let connector = connector(&cfg).map_err(fail)?;
    let mut backoff = Backoff::new(Duration::from_millis(500), cfg.max_backoff);
    loop {
        let attempt = tokio::select! {
            r = connect(&cfg, &connector) => r,
            _ = shutdown.cancelled() => break,
        };
        let error = match attempt {
            Ok(connected) => {
                backoff.reset();
                let w = connected.welcome.clone();
                let ready = || {
                    info!(session = %w.session_id, client = %w.client_id, "connected to relay");
                    state.send_modify(|s| {
                        s.phase = AgentPhase::Connected;
                        s.tunnels = w.tunnels.clone();
                        s.session_id = Some(w.session_id.clone());
                        s.client_id = Some(w.client_id.clone());
                        s.last_error = None;
                        s.sessions += 1;
                    });
                };
                match session::serve(connected, &cfg, &shutdown, ready).await {
                    Ok(SessionEnd::Unregistered) => break,
                    Ok(SessionEnd::RelayClosed) => "relay closed the connection".to_string(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => {
                let ever_connected = state.borrow().sessions > 0;
                // A refusal that can never succeed is final; so is a setup problem on the first
                // attempt. Once a session has worked, everything else is worth retrying.
                let fatal = match &e {
                    ConnectError::Refused { code, .. } => code.is_fatal(),
                    other => other.is_fatal() && !ever_connected,
                };
                if fatal {
                    return Err(fail(e));
                }
                e.to_string()
            }
        };
        let delay = backoff.next_delay();
        warn!(error = %error, retry_in = ?delay, "relay session lost; reconnecting");
        state.send_modify(|s| {
            s.phase = AgentPhase::Reconnecting;
            s.last_error = Some(error);
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    state.send_modify(|s| s.phase = AgentPhase::Stopped);
    Ok(())
}
