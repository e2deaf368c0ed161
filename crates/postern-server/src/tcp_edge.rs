//! The TCP edge: one public listener per TCP tunnel.
//!
//! Each accepted connection becomes one h2 stream to the agent. Bytes from the public peer start
//! flowing at once (the agent buffers them in the stream window while it connects locally); bytes
//! back start once the agent has answered `200`. A `502` from the agent (local service refused)
//! closes the public connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use postern_proto::stream::{StreamKind, REFUSE_REASON};
use postern_proto::RefuseCode;
use postern_transport::splice::{socket_to_stream, stream_to_socket, Meter, SpliceError, SpliceStats};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::abuse::IpLimits;
use crate::access::{self, Policies};
use crate::agent::{AgentHandle, OpenError};
use crate::config::{PortRange, RelayConfig};
use crate::leases::Leases;
use crate::metrics::RelayMetrics;
use crate::registry::Tunnel;

/// Why a public port could not be given out. The message is safe to send to the agent.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The requested port is outside the relay's range.
    #[error("port {port} is outside this relay's TCP port range {range}")]
    NotAllowed {
        /// The port asked for.
        port: u16,
        /// The relay's range.
        range: PortRange,
    },
    /// The requested port, or every port in the range, is in use.
    #[error("{0}")]
    Unavailable(String),
}

impl BindError {
    /// The refusal code an agent gets for this error.
    pub fn code(&self) -> RefuseCode {
        match self {
            Self::NotAllowed { .. } => RefuseCode::PortNotAllowed,
            Self::Unavailable(_) => RefuseCode::Unavailable,
        }
    }
}

/// Binds a public listener: the `requested` port (which must be in the range); else the
/// `leased` port this client had before, if it is still free; else a free port from the range
/// that nobody holds a lease on.
pub async fn bind(
    config: &RelayConfig,
    requested: Option<u16>,
    leased: Option<u16>,
    leases: &Leases,
) -> Result<TcpListener, BindError> {
    let ip = config.tcp_bind;
    if let Some(port) = requested {
        if !config.tcp_ports.contains(port) {
            return Err(BindError::NotAllowed { port, range: config.tcp_ports });
        }
        return TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .map_err(|e| BindError::Unavailable(format!("port {port} is not available: {e}")));
    }
    if let Some(port) = leased {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
            return Ok(l);
        }
    }
    match config.tcp_ports {
        PortRange::Ephemeral => {
            for _ in 0..16 {
                let l = TcpListener::bind(SocketAddr::new(ip, 0))
                    .await
                    .map_err(|e| BindError::Unavailable(format!("no ephemeral port available: {e}")))?;
                if !l.local_addr().is_ok_and(|a| leases.port_leased(a.port())) {
                    return Ok(l);
                }
            }
            Err(BindError::Unavailable("no free ephemeral port without a lease".into()))
        }
        PortRange::Range(lo, hi) => {
            // Start at a random place so ports are not predictable and restarts spread out.
            let span = u32::from(hi - lo) + 1;
            let start = rand::rng().random_range(0..span);
            for i in 0..span {
                let port = lo + ((start + i) % span) as u16;
                if leases.port_leased(port) {
                    continue;
                }
                if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
                    return Ok(l);
                }
            }
            Err(BindError::Unavailable(format!("every port in {lo}-{hi} is in use or reserved")))
        }
    }
}

/// Accepts public connections on `tunnel`'s listener until it closes. The registry drops the
/// listener (releasing the port) the moment the tunnel is removed.
pub async fn serve(
    tunnel: Arc<Tunnel>,
    public_conns: Arc<Semaphore>,
    metrics: Arc<RelayMetrics>,
    ip_limits: Arc<IpLimits>,
    policies: Policies,
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
        let Some(per_ip) = ip_limits.admit(peer.ip()) else {
            metrics.public_refused.with_label_values(&["per_ip_cap"]).inc();
            debug!(%peer, "public connection refused: address at its connection cap");
            continue;
        };
        if access::check_ip(&tunnel.access, &policies.matching(&tunnel.info.id), peer.ip()).is_err() {
            metrics.public_refused.with_label_values(&["not_allowed"]).inc();
            debug!(%peer, "public connection refused: address not allowed on this tunnel");
            continue;
        }
        let quota = match tunnel.quota.as_ref().map(|q| q.admit_stream()) {
            None => None,
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                metrics.public_refused.with_label_values(&["quota"]).inc();
                debug!(%peer, error = %e, "public connection refused");
                continue;
            }
        };
        let (agent, agent_slot) = match tunnel.pick() {
            Ok(pair) => pair,
            Err(busy) => {
                let reason = if busy { "agent_cap" } else { "agent_unavailable" };
                metrics.public_refused.with_label_values(&[reason]).inc();
                debug!(%peer, reason, "public connection refused");
                continue;
            }
        };
        let Ok(permit) = public_conns.clone().try_acquire_owned() else {
            metrics.public_refused.with_label_values(&["connection_cap"]).inc();
            warn!(%peer, "public connection refused: relay is at its connection cap");
            continue;
        };
        let span = info_span!("public", %peer, tunnel = %tunnel.info.name);
        let (tunnel, metrics) = (tunnel.clone(), metrics.clone());
        tokio::spawn(
            async move {
                let _stream = tunnel.stats.open_stream();
                metrics.stream_opened(&tunnel.info.name, "tcp");
                let active = metrics.streams_active.with_label_values(&["tcp"]);
                active.inc();
                let meter = TunnelMeter { tunnel: &tunnel, metrics: &metrics, kind: "tcp" };
                let outcome = tokio::select! {
                    r = handle(stream, peer, &tunnel, &agent, &meter) => r,
                    _ = tunnel.closed.cancelled() => Err(EdgeError::AgentGone),
                    _ = agent.closed().cancelled() => Err(EdgeError::AgentGone),
                };
                active.dec();
                match outcome {
                    Ok(s) => debug!(up = s.socket_to_stream, down = s.stream_to_socket, "public connection closed"),
                    Err(e) => debug!(error = %e, "public connection failed"),
                }
                drop((permit, per_ip, quota, agent_slot));
            }
            .instrument(span),
        );
    }
}

/// Counts a public socket's bytes into its tunnel's stats and the metrics: bytes read from the
/// public socket go *in* (toward the local service), bytes written to it go *out*.
#[derive(Debug)]
pub struct TunnelMeter<'a> {
    /// The tunnel.
    pub tunnel: &'a Tunnel,
    /// The relay's metrics.
    pub metrics: &'a RelayMetrics,
    /// `tcp`, `http` or `upgrade`... as a metric label (`upgrade` counts as `http`).
    pub kind: &'static str,
}

impl TunnelMeter<'_> {
    /// Bytes toward the local service; returns the pause the token's bandwidth quota asks for.
    pub fn inbound(&self, n: u64) -> Duration {
        self.tunnel.stats.add_in(n);
        self.metrics.add_bytes(&self.tunnel.info.name, self.kind, "in", n);
        self.tunnel.quota.as_ref().and_then(|q| q.bandwidth_in.as_ref()).map_or(Duration::ZERO, |b| b.take(n))
    }

    /// Bytes toward the public; returns the pause the token's bandwidth quota asks for.
    pub fn outbound(&self, n: u64) -> Duration {
        self.tunnel.stats.add_out(n);
        self.metrics.add_bytes(&self.tunnel.info.name, self.kind, "out", n);
        self.tunnel.quota.as_ref().and_then(|q| q.bandwidth_out.as_ref()).map_or(Duration::ZERO, |b| b.take(n))
    }
}

impl Meter for TunnelMeter<'_> {
    fn read(&self, n: u64) -> Duration {
        self.inbound(n)
    }

    fn written(&self, n: u64) -> Duration {
        self.outbound(n)
    }
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

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    tunnel: &Tunnel,
    agent: &AgentHandle,
    meter: &TunnelMeter<'_>,
) -> Result<SpliceStats, EdgeError> {
    let _ = stream.set_nodelay(true);
    let (response, send) = agent.open(StreamKind::Tcp, &tunnel.info.name, Some(peer)).await?;
    let (reader, writer) = stream.into_split();
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
