//! Outgoing links to peer relays: a few HTTP/2 connections per peer ([`links_per_peer`]), each
//! dialled on first use, authenticated ([`super::peer`]) and redialled when it fails; forwarded
//! streams take them in turn. Every stream of a link shares its TLS session, so one link would
//! put all the crypto between two relays on one core each side; several links spread it (the
//! same reason the client opens more connections under load, `postern_client::scale`).
//!
//! A link is the same h2 client as the agent link ([`postern_transport::mux::client_builder`],
//! PING heartbeat included), not hyper's client: a forwarded stream is then moved with the
//! agent link's own code (`pump`, `H2Body`, `splice`), where capacity is released only as bytes
//! are written on, so flow control holds from the public client to the agent; and a request
//! costs no hop through a dispatch task (hyper's client hands every request to its connection
//! task and every response back through another spawned task: two task wake-ups per request,
//! measured in `docs/benchmarks.md`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use postern_transport::mux;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::peer::{PeerError, PeerTls};
use super::routes::Node;
use crate::metrics::RelayMetrics;

/// PING interval on an idle link, and how long an answer may take before the link is dropped.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The directory has no live entry for the relay.
    #[error("relay {0} is not in the cluster (or its entry expired)")]
    Unknown(String),
    /// Dialling or the handshake failed.
    #[error("relay {relay}: {source}")]
    Peer {
        /// The relay.
        relay: String,
        /// Why.
        #[source]
        source: PeerError,
    },
    /// HTTP/2 could not start.
    #[error("relay {relay}: {source}")]
    Http {
        /// The relay.
        relay: String,
        /// Why.
        #[source]
        source: h2::Error,
    },
}

/// The pool of peer links of one relay.
#[derive(Debug)]
pub struct Links {
    own: String,
    tls: PeerTls,
    metrics: Arc<RelayMetrics>,
    links: std::sync::Mutex<HashMap<String, Arc<Peer>>>,
    /// Links up per peer (kept across `forget`, so `peer_up` stays right while old links end).
    up: std::sync::Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// Links to one peer, dialled as needed; each slot is locked while it dials.
#[derive(Debug)]
struct Peer {
    slots: Vec<Slot>,
    turn: AtomicUsize,
}

/// One link to a peer, if dialled.
type Slot = Mutex<Option<Link>>;

/// Links kept to each peer: one per core, from 2 to 4.
pub fn links_per_peer() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4)
}

/// A dialled link: its sender, and a token cancelled when its connection ends.
#[derive(Debug)]
struct Link {
    send: SendRequest<Bytes>,
    closed: CancellationToken,
}

impl Links {
    /// Links dialled as relay `own`.
    pub fn new(own: &str, tls: PeerTls, metrics: Arc<RelayMetrics>) -> Self {
        Self { own: own.to_string(), tls, metrics, links: std::sync::Mutex::default(), up: std::sync::Mutex::default() }
    }

    /// A sender on the link to `relay`, dialling it at `node` (if known) when there is no link
    /// or it failed.
    pub async fn get(&self, relay: &str, node: Option<Node>) -> Result<SendRequest<Bytes>, LinkError> {
        // One dial at a time per slot: its lock is held across the dial on purpose; other
        // slots and other relays go on.
        let peer = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(relay.to_string())
            .or_insert_with(|| {
                let slots = (0..links_per_peer()).map(|_| Mutex::new(None)).collect();
                Arc::new(Peer { slots, turn: AtomicUsize::new(0) })
            })
            .clone();
        let turn = peer.turn.fetch_add(1, Ordering::Relaxed) % peer.slots.len();
        let mut link = peer.slots[turn].lock().await;
        if let Some(l) = link.as_ref().filter(|l| !l.closed.is_cancelled()) {
            return Ok(l.send.clone());
        }
        let node = node.ok_or_else(|| LinkError::Unknown(relay.to_string()))?;
        let tls = self
            .tls
            .dial(&node.addr, &self.own)
            .await
            .map_err(|source| LinkError::Peer { relay: relay.to_string(), source })?;
        let (send, mut conn) = mux::client_builder()
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|source| LinkError::Http { relay: relay.to_string(), source })?;
        let gauge = self.metrics.cluster_peer_up(relay);
        let up = self.up.lock().unwrap_or_else(|p| p.into_inner()).entry(relay.to_string()).or_default().clone();
        up.fetch_add(1, Ordering::Relaxed);
        gauge.set(1);
        info!(peer = relay, addr = %node.addr, "peer link up");
        let peer = relay.to_string();
        let closed = CancellationToken::new();
        let ping = conn.ping_pong();
        let done = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = &mut conn => if let Err(e) = r { debug!(%peer, error = %e, "peer link ended") },
                e = mux::heartbeat(ping, HEARTBEAT, HEARTBEAT) => debug!(%peer, error = %e, "peer link dropped"),
            }
            done.cancel();
            if up.fetch_sub(1, Ordering::Relaxed) == 1 {
                gauge.set(0);
            }
            info!(%peer, "peer link down");
        });
        *link = Some(Link { send: send.clone(), closed });
        Ok(send)
    }

    /// Drops the link to `relay` (it is dead, or its address changed).
    pub fn forget(&self, relay: &str) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(relay);
    }
}
