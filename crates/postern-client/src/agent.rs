//! The reconnect loop and the agent's observable state.

use std::time::{Duration, Instant};

use postern_proto::TunnelGrant;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::connect::{connect, connector, ConnectError};
use crate::scale::{Connections, Scaler, Step, TICK};
use crate::session::{self, SessionEnd};

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentPhase {
    /// Made but never started (an embedded [`crate::Agent`] before its first `start`).
    NotStarted,
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
            Self::NotStarted => "not_started",
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
    /// Sessions established so far (over all connections).
    pub sessions: u64,
    /// Connections up right now.
    pub connected: usize,
}

/// The agent stopped on an error that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AgentError(#[from] pub ConnectError);

/// Keeps the sessions `cfg.connections` asks for up until `shutdown` fires (then unregisters
/// and returns `Ok`), or a fatal error occurs on the first connection. With
/// [`Connections::Auto`], extra connections open while streams are busy and close once the
/// agent is idle ([`crate::scale`]). State changes are published on `state`.
pub async fn run(
    cfg: AgentConfig,
    state: watch::Sender<AgentState>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    run_shared(cfg, Arc::new(state), shutdown).await
}

/// [`run`], publishing on a state channel that outlives this run (an embedded agent started
/// again).
pub(crate) async fn run_shared(
    cfg: AgentConfig,
    state: Arc<watch::Sender<AgentState>>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    state.send_modify(|s| {
        s.phase = AgentPhase::Connecting;
        s.connected = 0;
    });
    cfg.live.seed(&cfg.tunnels);
    let connector = match connector(&cfg) {
        Ok(c) => c,
        Err(e) => return Err(fail(&state, e)),
    };
    let stop = shutdown.child_token();
    let mut loops = tokio::task::JoinSet::new();
    let spawn = |loops: &mut tokio::task::JoinSet<_>, i: usize, role: Role, token: CancellationToken| {
        let (cfg, connector, state) = (cfg.clone(), connector.clone(), state.clone());
        loops.spawn(connection_loop(i, role, cfg, connector, state, token).instrument(info_span!("connection", n = i)));
    };
    for i in 0..cfg.connections.initial() {
        spawn(&mut loops, i, Role::Kept, stop.clone());
    }
    let mut scaler = match cfg.connections {
        Connections::Auto { max, idle } => Some(Scaler::new(max, idle)),
        Connections::Fixed(_) => None,
    };
    let mut extras: Vec<CancellationToken> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut result = Ok(());
    loop {
        // An idle agent on one connection sleeps until a stream opens: no timer wake-ups.
        let idle = scaler.as_ref().is_some_and(|s| s.wanted() == 1) && cfg.stats.snapshot().active_streams == 0;
        let sample = async {
            if idle {
                cfg.stats.busy().await;
                tick.reset();
            }
            tick.tick().await
        };
        tokio::select! {
            joined = loops.join_next() => match joined {
                None => break,
                Some(Ok(Err(e))) => {
                    // One fatal error (a revoked token, say) stops every connection.
                    stop.cancel();
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Some(_) => {}
            },
            _ = sample, if scaler.is_some() && !stop.is_cancelled() => {
                let Some(scaler) = scaler.as_mut() else { continue };
                let s = cfg.stats.snapshot();
                let up = state.borrow().connected;
                match scaler.step(Instant::now(), s.active_streams, s.bytes_in + s.bytes_out, up) {
                    Step::Grow => {
                        let token = stop.child_token();
                        info!(connections = scaler.wanted(), "streams are busy: opening another connection");
                        spawn(&mut loops, extras.len() + 1, Role::Extra, token.clone());
                        extras.push(token);
                    }
                    Step::Shrink => {
                        info!("no stream for a while: back to one connection");
                        extras.drain(..).for_each(|t| t.cancel());
                    }
                    Step::Hold => {}
                }
            }
        }
    }
    if result.is_ok() {
        state.send_modify(|s| s.phase = AgentPhase::Stopped);
    }
    result
}

/// Whether a connection is one the agent always keeps, or an extra `auto` opened for load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Reconnects until shutdown; a fatal refusal stops the agent.
    Kept,
    /// Gives up, quietly, on any failure: the kept connections carry the tunnels anyway (an
    /// extra may be refused, say, by a cap on agents per token).
    Extra,
}

fn fail(state: &watch::Sender<AgentState>, e: ConnectError) -> AgentError {
    state.send_modify(|s| {
        s.phase = AgentPhase::Failed;
        s.last_error = Some(e.to_string());
    });
    AgentError(e)
}

/// One connection's reconnect loop. With several relays (a cluster), connection `index` starts
/// at relay `index` and moves to the next whenever an attempt fails or a session is lost.
async fn connection_loop(
    index: usize,
    role: Role,
    cfg: AgentConfig,
    connector: TlsConnector,
    state: Arc<watch::Sender<AgentState>>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), cfg.max_backoff);
    let servers = cfg.servers();
    let mut turn = index % servers.len();
    loop {
        let server = servers[turn];
        // The Hello asks for the command line's tunnels still wanted; the session then opens
        // the rest live, one by one, so one that fails does not keep the others down.
        let hello: Vec<_> = cfg.live.wanted().into_iter().filter(|w| w.initial()).collect();
        let specs = hello.iter().map(|w| w.spec().clone()).collect();
        let attempt = tokio::select! {
            r = connect(&cfg, &connector, server, specs) => r,
            _ = shutdown.cancelled() => break,
        };
        let error = match attempt {
            Ok(connected) => {
                backoff.reset();
                let w = connected.welcome.clone();
                let up = std::sync::atomic::AtomicBool::new(false);
                let ready = || {
                    up.store(true, std::sync::atomic::Ordering::Relaxed);
                    info!(session = %w.session_id, client = %w.client_id, connection = index, relay = server, "connected to relay");
                    state.send_modify(|s| {
                        s.connected += 1;
                        s.sessions += 1;
                        s.phase = AgentPhase::Connected;
                        s.last_error = None;
                        if s.connected == 1 {
                            s.tunnels = w.tunnels.clone();
                            s.session_id = Some(w.session_id.clone());
                            s.client_id = Some(w.client_id.clone());
                        }
                    });
                };
                let publish: crate::control::Publish = {
                    let state = state.clone();
                    Arc::new(move |tunnels| state.send_modify(|s| s.tunnels = tunnels))
                };
                let end = session::serve(connected, &cfg, &shutdown, hello, publish, ready).await;
                if up.load(std::sync::atomic::Ordering::Relaxed) {
                    state.send_modify(|s| {
                        s.connected = s.connected.saturating_sub(1);
                        if s.connected == 0 && s.phase == AgentPhase::Connected {
                            s.phase = AgentPhase::Reconnecting;
                        }
                    });
                }
                match end {
                    Ok(SessionEnd::Unregistered) => break,
                    _ if role == Role::Extra => {
                        info!(connection = index, "extra connection ended");
                        break;
                    }
                    Ok(SessionEnd::RelayClosed) => "relay closed the connection".to_string(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) if role == Role::Extra => {
                info!(error = %e, connection = index, "extra connection not opened");
                break;
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
                    return Err(fail(&state, e));
                }
                e.to_string()
            }
        };
        turn = (turn + 1) % servers.len();
        let delay = backoff.next_delay();
        if state.borrow().sessions == 0 {
            warn!(error = %error, retry_in = ?delay, connection = index, "cannot reach the relay yet; retrying");
        } else {
            warn!(error = %error, retry_in = ?delay, connection = index, "relay session lost; reconnecting");
        }
        state.send_modify(|s| {
            if s.connected == 0 {
                s.phase = AgentPhase::Reconnecting;
            }
            s.last_error = Some(error);
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    Ok(())
}
