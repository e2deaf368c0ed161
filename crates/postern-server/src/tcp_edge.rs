//! The TCP edge: one public listener per TCP tunnel.
//!
//! Each accepted connection is admitted ([`crate::tunnel::admit`]), then becomes one h2 stream
//! to a member of the tunnel. Bytes from the public peer start flowing at once (the agent
//! buffers them in the stream window while it connects locally); bytes back start once the
//! agent has answered `200`. A `502` from the agent (local service refused) closes the public
//! connection. Tunnels are opened (ports bound) by [`crate::tunnel::open`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use postern_proto::stream::{StreamKind, REFUSE_REASON};
use postern_transport::splice::{socket_to_stream, stream_to_socket, Meter, SpliceError, SpliceStats};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::access_log::{AccessLog, Record, Tally};
use crate::agent::OpenError;
use crate::metrics::RelayMetrics;
use crate::tunnel::admit::{Admitted, Gate, Via};
use crate::tunnel::stats::{StreamCount, TunnelMeter};
use crate::tunnel::{Member, Tunnel};

/// Accepts public connections on `tunnel`'s listener until it closes. The registry drops the
/// listener (releasing the port) the moment the tunnel is removed.
pub async fn serve(
    tunnel: Arc<Tunnel>,
    gate: Arc<Gate>,
    metrics: Arc<RelayMetrics>,
    access_log: AccessLog,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = tunnel.closed.cancelled() => break,
            // Draining: stop taking new connections; those in flight go on.
            _ = shutdown.cancelled() => break,
            accepted = std::future::poll_fn(|cx| tunnel.poll_accept(cx)) => match accepted {
                Ok(a) => a,
                Err(_) if tunnel.closed.is_cancelled() => break,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed on public port");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(admitted) = gate.admit_public(&tunnel, peer, Via::TcpEdge).await else { continue };
        let Some(member) = admitted.member.clone() else { continue };
        let _ = stream.set_nodelay(true);
        let io = stream.into_split();
        spawn_stream(tunnel.clone(), member, admitted, io, peer, metrics.clone(), &access_log, |w: OwnedWriteHalf| {
            // A reset, not a clean end (no FIN first): the visitor must not take a cut transfer
            // for a whole one.
            let _ = w.as_ref().set_zero_linger();
            w.forget();
        });
    }
}

/// Serves one admitted public connection (a socket here, or one another relay forwarded) on
/// `tunnel`: a stream to `member`, spliced, in its own task and span. `abort` is given the
/// public side's writer when a quota cuts the connection, to end it with a reset.
#[allow(clippy::too_many_arguments)]
pub fn spawn_stream<R, W>(
    tunnel: Arc<Tunnel>,
    member: Member,
    admitted: Admitted,
    (reader, mut writer): (R, W),
    peer: SocketAddr,
    metrics: Arc<RelayMetrics>,
    access_log: &AccessLog,
    abort: fn(W),
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("public", %peer, tunnel = %tunnel.info.name);
    let log = access_log.clone();
    tokio::spawn(
        async move {
            let started = Instant::now();
            let _count = StreamCount::open(&tunnel, &metrics, "tcp");
            let meter = TunnelMeter { tunnel: &tunnel, metrics: &metrics, kind: "tcp" };
            let tally = Tally::new(&meter);
            let outcome = tokio::select! {
                r = handle(reader, &mut writer, peer, &tunnel, &member, &tally) => r,
                _ = tunnel.closed.cancelled() => Err(EdgeError::AgentGone),
                _ = member.closed().cancelled() => Err(EdgeError::AgentGone),
            };
            let cut = matches!(outcome, Err(EdgeError::Splice(SpliceError::Cut)));
            let close = match &outcome {
                Ok(s) => {
                    debug!(up = s.socket_to_stream, down = s.stream_to_socket, "public connection closed");
                    "closed".to_string()
                }
                Err(e) => {
                    debug!(error = %e, "public connection failed");
                    e.to_string()
                }
            };
            if log.enabled() {
                log.write(Record::tcp(&tunnel.info, peer, started.elapsed(), tally.totals(), close));
            }
            if cut {
                abort(writer);
            }
            drop(admitted);
        }
        .instrument(span),
    );
}

/// Why a public connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The agent could not be reached.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The agent went away.
    #[error("agent disconnected")]
    AgentGone,
    /// The agent answered, but not with 200 (the local service refused, typically).
    #[error("agent refused the stream ({status}): {reason}")]
    Refused {
        /// The agent's status.
        status: StatusCode,
        /// The agent's reason header.
        reason: String,
    },
    /// Copying failed.
    #[error(transparent)]
    Splice(#[from] SpliceError),
}

async fn handle<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    tunnel: &Tunnel,
    member: &Member,
    meter: &dyn Meter,
) -> Result<SpliceStats, EdgeError> {
    let (response, send) = member.open(StreamKind::Tcp, &tunnel.info.name, Some(peer)).await?;
    let up = async { Ok::<_, EdgeError>(socket_to_stream(reader, send, meter).await?) };
    let down = async {
        let response = response.await.map_err(|e| EdgeError::Open(OpenError::AgentGone(e)))?;
        if response.status() != StatusCode::OK {
            let reason = response
                .headers()
                .get(REFUSE_REASON)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no reason given")
                .to_string();
            return Err(EdgeError::Refused { status: response.status(), reason });
        }
        Ok(stream_to_socket(response.into_body(), writer, meter).await?)
    };
    let (up, down) = tokio::try_join!(up, down)?;
    Ok(SpliceStats { socket_to_stream: up, stream_to_socket: down })
}
