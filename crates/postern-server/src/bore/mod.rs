//! The bore-compatible endpoint (`--bore-addr`, off by default): unmodified `bore local`
//! clients open TCP tunnels on a postern relay.
//!
//! Each bore connection is one of two kinds, told apart by its first message (after the
//! challenge, when a secret is required):
//!
//! - **control** (`Hello(port)`): the relay binds a public port from its range, registers a TCP
//!   tunnel (listed by the status API, counted in the metrics, leased like any other), answers
//!   `Hello(port)`, then sends `Heartbeat` every [`HEARTBEAT`] and `Connection(id)` for each
//!   public connection, which waits up to [`UNCLAIMED`] to be claimed;
//! - **accept** (`Accept(id)`): the client's connection for one public connection; the relay
//!   splices the two sockets.
//!
//! A bore tunnel spends its token's quotas like any other: the tunnel quota when it opens, the
//! stream quota for each public connection it holds, and the bandwidth quota as bytes move.
//!
//! The wire format is in `postern_proto::bore`; the secrets in [`secrets`]; public connections
//! waiting for their `Accept` in `waiting`.

pub mod secrets;
mod waiting;

pub use waiting::{expire_unclaimed, hold_forwarded, PublicIo};
use waiting::{hold, Unclaimed};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use postern_proto::bore::{self, ClientMessage, Decoder, ServerMessage};
use postern_proto::TunnelKind;
use postern_transport::pipe::pipe;
use postern_transport::splice::{pause, Meter, Pace, SpliceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

use crate::access_log::{Record, Tally};
use crate::auth::{Authenticator, Identity};
use crate::config::RelayConfig;
use crate::listener::serve_agents;
use crate::quota::Quotas;
use crate::tunnel::admit::Gate;
use crate::tunnel::open::{self, OpenRefusal, TcpOpen};
use crate::tunnel::registry::{Registration, Registry};
use crate::tunnel::stats::{StreamCount, TunnelMeter};
use crate::tunnel::{Tunnel, TunnelInfo};

pub use secrets::BoreSecrets;

/// How often the relay sends `Heartbeat` (bore's own server: every 500 ms).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a public connection waits for the client's `Accept`.
pub const UNCLAIMED: Duration = Duration::from_secs(10);

/// Most public connections waiting to be claimed, relay-wide.
pub(crate) const MAX_UNCLAIMED: usize = 4096;

/// What the bore endpoint needs from the relay.
#[derive(Debug)]
pub struct BoreEdge {
    /// Settings (port range, bind address, timeouts).
    pub config: RelayConfig,
    /// Credential checks (shared token, signed tokens, revocation).
    pub auth: Authenticator,
    /// Tokens usable as bore secrets.
    pub secrets: BoreSecrets,
    /// Live tunnels.
    pub registry: Arc<Registry>,
    /// Admission of public connections, and per-address caps and login lockout.
    pub gate: Arc<Gate>,
    /// Per-token quotas, shared with the control port: a token's tunnels, streams and bandwidth
    /// count the same whichever client uses it.
    pub quotas: Arc<Quotas>,
    /// True when clients without a secret are let in (a development relay on loopback).
    pub anonymous: bool,
    unclaimed: DashMap<Uuid, Unclaimed>,
    /// The cluster, on a clustered relay: bore ports are claimed there too.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Each bore tunnel's control task, told about public connections other relays of the
    /// cluster forwarded here.
    forwarded: DashMap<String, tokio::sync::mpsc::Sender<Uuid>>,
}

impl BoreEdge {
    /// The endpoint for a relay with these parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RelayConfig,
        auth: Authenticator,
        registry: Arc<Registry>,
        gate: Arc<Gate>,
        quotas: Arc<Quotas>,
        anonymous: bool,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            secrets: BoreSecrets::new(config.state_dir.as_deref()),
            config,
            auth,
            registry,
            gate,
            quotas,
            anonymous,
            cluster,
            unclaimed: DashMap::new(),
            forwarded: DashMap::new(),
        })
    }
}

/// Why a bore connection ended early; `to_client` is what bore prints.
#[derive(Debug, thiserror::Error)]
enum BoreFault {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] bore::BoreError),
    #[error("timed out waiting for the client")]
    Timeout,
    #[error("client closed the connection")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
}

/// Accepts bore connections until `shutdown`. Returns the tracker of connection tasks.
pub async fn serve(listener: TcpListener, edge: Arc<BoreEdge>, shutdown: CancellationToken) -> TaskTracker {
    let limits = (edge.gate.ip_limits(), &**edge.registry.metrics());
    let run = |stream, peer: SocketAddr| {
        let (edge, shutdown) = (edge.clone(), shutdown.clone());
        async move {
            let started = Instant::now();
            match connection(stream, peer, &edge, shutdown).await {
                Ok(what) => info!(took_ms = started.elapsed().as_millis() as u64, "bore connection ended: {what}"),
                Err(e) => info!(error = %e, "bore connection failed"),
            }
        }
        .instrument(info_span!("bore", %peer))
    };
    serve_agents(listener, "bore", edge.config.max_agents, limits, shutdown.clone(), run).await
}

/// A bore connection's socket and the frames read from it.
struct Framed {
    io: TcpStream,
    decoder: Decoder,
}

impl Framed {
    async fn send(&mut self, msg: &ServerMessage) -> std::io::Result<()> {
        self.io.write_all(&bore::encode(msg)).await
    }

    /// The next client message, within `limit`.
    async fn recv(&mut self, limit: Duration) -> Result<ClientMessage, BoreFault> {
        tokio::time::timeout(limit, async {
            let mut buf = [0u8; 512];
            loop {
                if let Some(msg) = self.decoder.next_client()? {
                    return Ok(msg);
                }
                match self.io.read(&mut buf).await? {
                    0 => return Err(BoreFault::Closed),
                    n => self.decoder.extend(&buf[..n]),
                }
            }
        })
        .await
        .map_err(|_| BoreFault::Timeout)?
    }

    /// Tells the client why, then fails.
    async fn refuse(&mut self, reason: &str) -> BoreFault {
        let _ = self.send(&ServerMessage::Error(reason.to_string())).await;
        BoreFault::Refused(reason.to_string())
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    edge: &BoreEdge,
    shutdown: CancellationToken,
) -> Result<String, BoreFault> {
    let _ = stream.set_nodelay(true);
    let mut conn = Framed { io: stream, decoder: Decoder::default() };
    let limit = edge.config.handshake_timeout;
    let identity = authenticate(&mut conn, peer, edge).await?;
    match conn.recv(limit).await? {
        ClientMessage::Hello(port) => control(conn, peer, edge, identity, port, shutdown).await,
        ClientMessage::Accept(id) => claim(conn, edge, &identity, id).await,
        ClientMessage::Authenticate(_) => Err(conn.refuse("unexpected authenticate").await),
    }
}

/// The challenge, when one is due; says who the client is.
async fn authenticate(conn: &mut Framed, peer: SocketAddr, edge: &BoreEdge) -> Result<Identity, BoreFault> {
    let mut candidates: Vec<(String, [u8; 32])> = edge.secrets.tokens();
    if let Some(shared) = &edge.config.token {
        candidates.push((shared.expose().to_string(), bore::key(shared.expose())));
    }
    let metrics = edge.registry.metrics();
    if candidates.is_empty() && edge.anonymous {
        return Ok(Identity { subject: "anonymous".into(), token_id: None, admin: false, claims: None });
    }
    let challenge = Uuid::new_v4();
    conn.send(&ServerMessage::Challenge(challenge)).await?;
    let tag = match conn.recv(edge.config.handshake_timeout).await {
        Ok(ClientMessage::Authenticate(tag)) => tag,
        Ok(_) => {
            metrics.handshake_failures.with_label_values(&["missing"]).inc();
            return Err(conn.refuse("server requires secret, but no secret was provided").await);
        }
        Err(e) => {
            let reason = if matches!(e, BoreFault::Timeout) { "timeout" } else { "protocol" };
            metrics.handshake_failures.with_label_values(&[reason]).inc();
            return Err(e);
        }
    };
    // Every candidate is checked, so the time taken does not say which one matched.
    let matched = candidates.iter().fold(None, |found, (secret, key)| {
        let ok = bore::verify(key, &challenge, &tag);
        found.or(ok.then_some(secret))
    });
    let identity = matched.and_then(|secret| edge.auth.agent(secret, crate::clock::unix_secs()).ok());
    match identity {
        Some(identity) => Ok(identity),
        None => {
            edge.gate.ip_limits().auth_failed(peer.ip());
            metrics.handshake_failures.with_label_values(&["invalid"]).inc();
            Err(conn.refuse("invalid secret").await)
        }
    }
}

/// A control connection: one tunnel, heartbeats, and a `Connection` per public connection.
async fn control(
    mut conn: Framed,
    peer: SocketAddr,
    edge: &BoreEdge,
    identity: Identity,
    requested: u16,
    shutdown: CancellationToken,
) -> Result<String, BoreFault> {
    let owner = identity.subject.clone();
    let session_id = postern_proto::token::new_id(rand::random());
    let client_id = format!("bore-{}", &session_id[..8]);
    let info = TunnelInfo {
        name: String::new(),
        kind: TunnelKind::Tcp,
        public_url: String::new(),
        public_port: None,
        local_port: 0,
        id: client_id.clone(),
        client_id: client_id.clone(),
        owner: owner.clone(),
        session_id: session_id.clone(),
        agent_addr: peer,
        since: SystemTime::now(),
    };
    let open = TcpOpen {
        config: &edge.config,
        identity: &identity,
        quota: edge.quotas.for_identity(&identity),
        requested: (requested != 0).then_some(requested),
        leased: None,
        cluster: edge.cluster.as_deref(),
    };
    // bore streams arrive as sockets, not h2 streams: the tunnel has no member, and this task
    // serves its listener.
    let mut registration = Registration::new(edge.registry.clone(), session_id.clone());
    let shape = |t: &mut Tunnel| t.instance = format!("bore:{owner}");
    let tunnel = match open::tcp(open, info, None, &mut registration, shape).await {
        Ok(t) => t,
        Err(e) => {
            debug!(error = %e, "no bore tunnel");
            // bore's own server's words, which its client prints.
            let reason = match e {
                OpenRefusal::OutOfRange { .. } => "client port number not in allowed range".to_string(),
                OpenRefusal::Reserved { .. } => "port already in use".to_string(),
                OpenRefusal::Unavailable(_) if requested != 0 => "port already in use".to_string(),
                OpenRefusal::Unavailable(_) => "failed to find an available port".to_string(),
                other => other.to_string(),
            };
            return Err(conn.refuse(&reason).await);
        }
    };
    if let Some(cluster) = &edge.cluster {
        if let Err((_, why)) = cluster.claim(registration.tunnels(), &identity).await {
            debug!(reason = %why, "bore tunnel refused by the cluster");
            drop(registration);
            return Err(conn.refuse("port already in use").await);
        }
    }
    let port = tunnel.info.public_port.unwrap_or_default();
    conn.send(&ServerMessage::Hello(port)).await?;
    registration.announce_up();
    info!(%port, %owner, "bore tunnel up");

    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut buf = [0u8; 256];
    let (tell, mut forwarded) = tokio::sync::mpsc::channel(64);
    edge.forwarded.insert(tunnel.info.name.clone(), tell);
    let outcome = loop {
        tokio::select! {
            Some(id) = forwarded.recv() => {
                if conn.send(&ServerMessage::Connection(id)).await.is_err() {
                    break "client gone".to_string();
                }
            }
            _ = shutdown.cancelled() => break "relay shutting down".to_string(),
            _ = tunnel.closed.cancelled() => {
                let _ = conn.send(&ServerMessage::Error("tunnel closed by the relay".into())).await;
                break "tunnel closed by the relay".to_string();
            }
            _ = heartbeat.tick() => {
                // A revoked token ends its bore tunnels too (within one heartbeat).
                if identity.token_id.as_deref().is_some_and(|jti| edge.auth.revocations().is_revoked(jti)) {
                    let _ = conn.send(&ServerMessage::Error("token revoked".into())).await;
                    break "token revoked".to_string();
                }
                if conn.send(&ServerMessage::Heartbeat).await.is_err() {
                    break "client gone (heartbeat failed)".to_string();
                }
            }
            read = conn.io.read(&mut buf) => match read {
                // bore clients send nothing after Hello; anything else is ignored, EOF ends it.
                Ok(0) | Err(_) => break "client disconnected".to_string(),
                Ok(_) => {}
            },
            accepted = std::future::poll_fn(|cx| tunnel.poll_accept(cx)) => match accepted {
                Ok((public, from)) => {
                    if let Some(id) = hold(edge, &tunnel, public, from).await {
                        if conn.send(&ServerMessage::Connection(id)).await.is_err() {
                            break "client gone".to_string();
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "accept failed on bore tunnel port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };
    edge.forwarded.remove(&tunnel.info.name);
    drop(registration);
    Ok(format!("tunnel on port {port}: {outcome}"))
}

/// An accept connection: splices the claimed public connection with this one.
async fn claim(mut conn: Framed, edge: &BoreEdge, identity: &Identity, id: Uuid) -> Result<String, BoreFault> {
    let Some((_, waiting)) = edge.unclaimed.remove(&id) else {
        // bore's server closes silently here; the client logs the failed copy.
        return Ok(format!("no public connection {id} (expired or claimed)"));
    };
    if waiting.tunnel.info.owner != identity.subject {
        edge.unclaimed.insert(id, waiting);
        return Err(conn.refuse("this connection belongs to another client").await);
    }
    let tunnel = waiting.tunnel.clone();
    let Unclaimed { stream, held, at, peer, .. } = waiting;
    let mut stream = stream.into_inner().unwrap_or_else(|p| p.into_inner());
    let metrics = edge.registry.metrics().clone();
    let count = StreamCount::open(&tunnel, &metrics, "tcp");
    let tunnel_meter = TunnelMeter { tunnel: &tunnel, metrics: &metrics, kind: "tcp" };
    let meter = Tally::new(&tunnel_meter);
    // Bytes the client sent right after its Accept belong to the stream.
    let rest = conn.decoder.take_rest();
    let result = async {
        if !rest.is_empty() {
            match meter.written(rest.len() as u64) {
                Pace::Go(wait) => {
                    stream.write_all(&rest).await?;
                    pause(wait).await;
                }
                Pace::Cut(pass) => {
                    stream.write_all(&rest[..(pass as usize).min(rest.len())]).await?;
                    return Err(std::io::Error::other(SpliceError::Cut));
                }
            }
        }
        // Counted as the bytes move (live statistics, bandwidth quota), like the TCP edge.
        tokio::select! {
            r = pipe(tokio::io::split(&mut stream), conn.io.split(), &meter) => r,
            _ = tunnel.closed.cancelled() => Err(std::io::Error::other("tunnel closed")),
        }
    }
    .await;
    if result.as_ref().err().and_then(|e| e.get_ref()).and_then(|e| e.downcast_ref::<SpliceError>()).is_some() {
        stream.reset_on_drop();
    }
    drop((count, held));
    let log = edge.registry.access_log();
    if log.enabled() {
        let close = result.as_ref().map_or_else(|e| e.to_string(), |_| "closed".to_string());
        log.write(Record::tcp(&tunnel.info, peer, at.elapsed(), meter.totals(), close));
    }
    match result {
        Ok(s) => Ok(format!(
            "public connection {id}: {} bytes in, {} bytes out",
            s.from_public,
            s.to_public + rest.len() as u64
        )),
        Err(e) => Err(BoreFault::Io(e)),
    }
}
