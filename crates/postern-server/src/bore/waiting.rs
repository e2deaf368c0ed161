//! Public connections of bore tunnels waiting for their client's `Accept`: accepted on the
//! tunnel's port here, or forwarded by another relay of the cluster. Each is admitted (caps,
//! access rules, the token's stream quota) before it waits, waits at most [`UNCLAIMED`], and at
//! most [`MAX_UNCLAIMED`] wait relay-wide.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use super::{BoreEdge, MAX_UNCLAIMED, UNCLAIMED};
use crate::tunnel::admit::{Admitted, Via};
use crate::tunnel::Tunnel;

/// A public connection's socket: one accepted here, or one another relay forwarded.
pub trait PublicIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {
    /// Makes dropping it a reset rather than a clean close (a quota cut the connection).
    fn reset_on_drop(&self) {}
}

impl PublicIo for TcpStream {
    fn reset_on_drop(&self) {
        let _ = self.set_zero_linger();
    }
}

/// Forwarded by another relay: dropped unfinished, the stream is reset toward that relay, which
/// resets the visitor's socket.
impl PublicIo for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// A public connection waiting for its `Accept`. (The socket sits behind a mutex only so the
/// map of waiting connections can be shared; it is taken out whole when claimed.)
pub(super) struct Unclaimed {
    pub(super) at: Instant,
    /// The visitor's address.
    pub(super) peer: SocketAddr,
    pub(super) stream: std::sync::Mutex<Box<dyn PublicIo>>,
    pub(super) tunnel: Arc<Tunnel>,
    /// The relay's connection cap, the address's cap and the token's stream quota.
    pub(super) held: Admitted,
}

impl std::fmt::Debug for Unclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unclaimed").field("at", &self.at).field("tunnel", &self.tunnel.info.name).finish()
    }
}

/// Keeps a public connection for the client to claim; `None` if it is refused.
pub(super) async fn hold(edge: &BoreEdge, tunnel: &Arc<Tunnel>, public: TcpStream, from: SocketAddr) -> Option<Uuid> {
    if edge.unclaimed.len() >= MAX_UNCLAIMED {
        edge.registry.metrics().public_refused.with_label_values(&["agent_cap"]).inc();
        debug!(%from, "public connection refused: too many waiting to be claimed");
        return None;
    }
    let held = edge.gate.admit_public(tunnel, from, Via::Bore).await.ok()?;
    let _ = public.set_nodelay(true);
    Some(keep(edge, tunnel, Box::new(public), held, from))
}

fn keep(edge: &BoreEdge, tunnel: &Arc<Tunnel>, stream: Box<dyn PublicIo>, held: Admitted, peer: SocketAddr) -> Uuid {
    let id = Uuid::new_v4();
    let stream = std::sync::Mutex::new(stream);
    edge.unclaimed.insert(id, Unclaimed { at: Instant::now(), peer, stream, tunnel: tunnel.clone(), held });
    id
}

/// Keeps a public connection another relay of the cluster accepted (and this relay admitted)
/// for the bore client of `tunnel` to claim, and tells that client about it.
pub fn hold_forwarded(
    edge: &BoreEdge,
    tunnel: &Arc<Tunnel>,
    stream: Box<dyn PublicIo>,
    from: SocketAddr,
    held: Admitted,
) {
    let Some(tell) = edge.forwarded.get(&tunnel.info.name).map(|t| t.clone()) else { return };
    if edge.unclaimed.len() >= MAX_UNCLAIMED {
        edge.registry.metrics().public_refused.with_label_values(&["agent_cap"]).inc();
        debug!(%from, "forwarded connection refused: too many waiting to be claimed");
        return;
    }
    let id = keep(edge, tunnel, stream, held, from);
    if tell.try_send(id).is_err() {
        edge.unclaimed.remove(&id);
    }
}

/// Drops public connections nobody claimed within [`UNCLAIMED`]; runs until `shutdown`.
pub async fn expire_unclaimed(edge: Arc<BoreEdge>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        edge.unclaimed.retain(|id, waiting| {
            let keep = waiting.at.elapsed() < UNCLAIMED;
            if !keep {
                warn!(%id, tunnel = %waiting.tunnel.info.name, "closed a public connection nobody claimed");
            }
            keep
        });
    }
}
