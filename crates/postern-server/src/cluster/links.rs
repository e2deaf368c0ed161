//! Outgoing links to peer relays: one HTTP/2 connection per peer, dialled on first use,
//! authenticated ([`super::peer`]), shared by every stream forwarded to that peer and redialled
//! when it fails. Windows are as large as the agent link's, and hyper releases capacity only as
//! bodies are consumed, so flow control holds from the public client to the agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Mutex;
use tracing::{debug, info};

use super::peer::{PeerError, PeerTls};
use super::routes::Node;
use crate::metrics::RelayMetrics;

/// Body of a request forwarded to a peer.
pub type ForwardBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

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
        source: hyper::Error,
    },
}

/// The pool of peer links of one relay.
#[derive(Debug)]
pub struct Links {
    own: String,
    tls: PeerTls,
    metrics: Arc<RelayMetrics>,
    links: std::sync::Mutex<HashMap<String, Slot>>,
}

/// The link to one peer, if dialled; locked while dialling so one dial at a time per peer.
type Slot = Arc<Mutex<Option<SendRequest<ForwardBody>>>>;

impl Links {
    /// Links dialled as relay `own`.
    pub fn new(own: &str, tls: PeerTls, metrics: Arc<RelayMetrics>) -> Self {
        Self { own: own.to_string(), tls, metrics, links: std::sync::Mutex::default() }
    }

    /// A sender on the link to `relay`, dialling it at `node` (if known) when there is no link
    /// or it failed.
    pub async fn get(&self, relay: &str, node: Option<Node>) -> Result<SendRequest<ForwardBody>, LinkError> {
        // One dial at a time per relay: its lock is held across the dial on purpose; dials
        // to other relays go on.
        let slot = self.links.lock().unwrap_or_else(|p| p.into_inner()).entry(relay.to_string()).or_default().clone();
        let mut link = slot.lock().await;
        if let Some(l) = link.as_ref().filter(|l| !l.is_closed()) {
            return Ok(l.clone());
        }
        let node = node.ok_or_else(|| LinkError::Unknown(relay.to_string()))?;
        let tls = self
            .tls
            .dial(&node.addr, &self.own)
            .await
            .map_err(|source| LinkError::Peer { relay: relay.to_string(), source })?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(postern_transport::mux::STREAM_WINDOW)
            .initial_connection_window_size(postern_transport::mux::CONNECTION_WINDOW)
            .max_frame_size(postern_transport::mux::MAX_FRAME_SIZE)
            .max_header_list_size(postern_transport::mux::MAX_HEADER_LIST_SIZE)
            .keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let (send, conn) = builder
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|source| LinkError::Http { relay: relay.to_string(), source })?;
        let gauge = self.metrics.cluster_peer_up(relay);
        gauge.set(1);
        info!(peer = relay, addr = %node.addr, "peer link up");
        let peer = relay.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "peer link ended");
            }
            gauge.set(0);
            info!(%peer, "peer link down");
        });
        *link = Some(send.clone());
        Ok(send)
    }

    /// Drops the link to `relay` (it is dead, or its address changed).
    pub fn forget(&self, relay: &str) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(relay);
    }
}
