//! A live session's control: the control stream (the first stream the relay opens; drain
//! notices and remote changes go out on it, the agent's `Unregister` and live tunnels come
//! back on it, see [`super::live`]), the heartbeat, and the loop that runs the session until
//! one of them, a kick or a shutdown ends it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::Connection;
use h2::PingPong;
use http::StatusCode;
use postern_proto::frame::encode;
use postern_proto::stream::StreamKind;
use postern_proto::{Control, Decoder, Message};
use postern_transport::mux::{self, HeartbeatError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::live::Live;
use super::{SessionEnd, SessionError};
use crate::agent::{AgentHandle, RemoteChange};
use crate::config::RelayConfig;

/// Runs the session on `conn` until the agent leaves or fails, its heartbeat stops, `kick`
/// fires, or `shutdown` fires and the drain is done.
pub(super) async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Connection<T, Bytes>,
    agent: &AgentHandle,
    live: &mut Live<'_>,
    changes: tokio::sync::mpsc::Receiver<RemoteChange>,
    cfg: &RelayConfig,
    kick: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, SessionError> {
    let ping_pong = conn.ping_pong();
    let (to_agent, outbox) = tokio::sync::mpsc::channel(8);
    let control = control(agent, live, outbox, changes);
    tokio::pin!(control);
    let heartbeat = heartbeat(ping_pong, cfg.heartbeat_interval, cfg.heartbeat_timeout);
    tokio::pin!(heartbeat);
    let ended = |r: Result<(), h2::Error>| match r {
        Ok(()) => Ok(SessionEnd::AgentClosed),
        Err(e) if e.is_io() || e.is_go_away() => Ok(SessionEnd::AgentClosed),
        Err(e) => Err(SessionError::Mux(e)),
    };
    tokio::select! {
        r = &mut conn => ended(r),
        e = &mut heartbeat => Err(e),
        r = &mut control => r,
        _ = kick.cancelled() => Ok(SessionEnd::Kicked),
        _ = shutdown.cancelled() => {
            // Drain: no new streams reach this agent (listeners are closed); tell it, let the
            // streams in flight finish, then close.
            let deadline = cfg.drain_timeout;
            let _ = to_agent.try_send(Control::Drain { deadline_ms: deadline.as_millis() as u64 });
            tokio::select! {
                r = &mut conn => ended(r),
                _ = agent.idle() => Ok(SessionEnd::RelayShutdown),
                _ = &mut control => Ok(SessionEnd::RelayShutdown),
                _ = tokio::time::sleep(deadline) => {
                    warn!(?deadline, "drain deadline reached with streams still open");
                    Ok(SessionEnd::RelayShutdown)
                }
            }
        }
    }
}

/// The shared heartbeat, as this session's error.
async fn heartbeat(ping_pong: Option<PingPong>, interval: Duration, timeout: Duration) -> SessionError {
    match mux::heartbeat(ping_pong, interval, timeout).await {
        HeartbeatError::Mux(e) => SessionError::Mux(e),
        HeartbeatError::Timeout(t) => SessionError::HeartbeatTimeout(t),
    }
}

/// Opens the control stream, sends what `outbox` yields and the admin API's `changes`, and
/// reads the agent's control messages until it unregisters.
async fn control(
    agent: &AgentHandle,
    live: &mut Live<'_>,
    mut outbox: tokio::sync::mpsc::Receiver<Control>,
    mut changes: tokio::sync::mpsc::Receiver<RemoteChange>,
) -> Result<SessionEnd, SessionError> {
    let (response, mut send) = agent.open(StreamKind::Control, "", None).await?;
    let response = response.await.map_err(SessionError::Mux)?;
    if response.status() != StatusCode::OK {
        return Err(SessionError::Refused(format!("agent refused the control stream: {}", response.status())));
    }
    let mut body = response.into_body();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut say = |msg: Control| {
        let mut out = BytesMut::new();
        if encode(&Message::Control(msg), &mut out).is_ok() {
            let _ = send.send_data(out.freeze(), false);
        }
    };
    loop {
        let chunk = tokio::select! {
            chunk = body.data() => chunk,
            Some(msg) = outbox.recv() => {
                say(msg);
                continue;
            }
            Some(asked) = changes.recv() => {
                if let Some(msg) = live.ask(asked) {
                    say(msg);
                }
                continue;
            }
        };
        let Some(chunk) = chunk else {
            // The agent ended its side of the control stream: it is leaving.
            return Ok(SessionEnd::Unregistered);
        };
        let chunk = chunk.map_err(SessionError::Mux)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while let Some(msg) = decoder.decode(&mut buf)? {
            match msg {
                Message::Control(Control::Unregister) => return Ok(SessionEnd::Unregistered),
                Message::Control(Control::Open { request, tunnel }) => say(live.open(request, tunnel).await),
                Message::Control(Control::Serving { request }) => {
                    if let Some(msg) = live.serving(request) {
                        say(msg);
                    }
                }
                Message::Control(Control::Close { name }) => {
                    live.close(&name);
                    say(Control::Closed { name });
                }
                Message::Control(Control::Changed { request, outcome }) => live.answered(request, outcome),
                other => warn!(message = ?other, "ignoring unexpected control message from agent"),
            }
        }
    }
}
