//! The control-port accept loop.
//!
//! A semaphore caps concurrent agent connections (handshaking ones included), and each source
//! address has its own cap; a connection over either is closed at once, as is one from an
//! address locked out after repeated authentication failures. Each accepted connection runs in its own task with its own span.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use postern_transport::accept;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::abuse::{IpLimits, IpPermit};
use crate::metrics::RelayMetrics;
use crate::session::{self, Shared};

/// Lets an agent connection from `peer` in (the control port's and the bore endpoint's), or
/// says no and counts why: its address is locked out or at its connection cap, or the relay is
/// at its agent cap (`cap`).
pub fn admit_agent(
    ip_limits: &Arc<IpLimits>,
    metrics: &RelayMetrics,
    cap: &Arc<Semaphore>,
    peer: SocketAddr,
) -> Option<(OwnedSemaphorePermit, IpPermit)> {
    if ip_limits.blocked(peer.ip()) {
        metrics.handshake_failures.with_label_values(&["locked_out"]).inc();
        debug!(%peer, "agent connection refused: address locked out after failed logins");
        return None;
    }
    let Some(per_ip) = ip_limits.admit(peer.ip()) else {
        metrics.handshake_failures.with_label_values(&["per_ip_cap"]).inc();
        debug!(%peer, "agent connection refused: address at its connection cap");
        return None;
    };
    let Ok(permit) = cap.clone().try_acquire_owned() else {
        warn!(%peer, "agent connection refused: relay is at its agent cap");
        return None;
    };
    Some((permit, per_ip))
}

/// Accepts agent connections on `listener` (`what`: `control` or `bore`) until `shutdown`
/// fires, at most `max_agents` at once, each admitted by [`admit_agent`] and handled by
/// `handle` in its own task. Returns the tracker of those tasks.
pub async fn serve_agents<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    max_agents: usize,
    (ip_limits, metrics): (&Arc<IpLimits>, &RelayMetrics),
    shutdown: CancellationToken,
    handle: F,
) -> TaskTracker
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tasks = TaskTracker::new();
    let cap = Arc::new(Semaphore::new(max_agents));
    loop {
        let Some((stream, peer)) = accept::next(&listener, what, &shutdown).await else { break };
        let Some(permits) = admit_agent(ip_limits, metrics, &cap, peer) else { continue };
        // `map`, not an `async move` block that awaits `work`: such a block keeps the captured
        // future and the awaited one side by side, which doubled each session task (9 KiB more
        // per idle agent, issue #16).
        tasks.spawn(handle(stream, peer).map(move |()| drop(permits)));
    }
    tasks.close();
    tasks
}

/// Accepts agents until `shutdown` fires. Returns the tracker of session tasks.
pub async fn serve_control(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) -> TaskTracker {
    let limits = (shared.gate.ip_limits(), &**shared.registry.metrics());
    let run = |stream, peer| session::run(stream, peer, shared.clone(), shutdown.clone());
    serve_agents(listener, "control", shared.config.max_agents, limits, shutdown.clone(), run).await
}
