//! The relay's handle on a connected agent: opens h2 streams to it.
//!
//! A handle exists from the moment the agent is authenticated, so its tunnels can be reserved
//! in the registry before the `Welcome` is sent; it becomes usable once the h2 connection is up
//! ([`AgentHandle::attach`]). Until then, opening a stream fails with [`OpenError::NotReady`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::{Method, Request};
use postern_proto::stream::{self, StreamKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A change to a connected agent's tunnels, asked for through the admin API, on its way to the
/// agent's session; the agent's answer comes back on `reply`.
#[derive(Debug)]
pub struct RemoteChange {
    /// What to change.
    pub change: postern_proto::TunnelChange,
    /// Where the agent's answer goes.
    pub reply: tokio::sync::oneshot::Sender<postern_proto::ChangeOutcome>,
}

/// Why a stream could not be opened to the agent.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The agent's connection is gone or going away.
    #[error("agent connection is gone: {0}")]
    AgentGone(#[source] h2::Error),
    /// The agent is still completing its handshake.
    #[error("agent is still connecting")]
    NotReady,
    /// A header value could not be built.
    #[error("invalid stream metadata: {0}")]
    Metadata(#[from] http::Error),
}

/// A cheap, cloneable handle on one agent connection.
#[derive(Clone)]
pub struct AgentHandle {
    session_id: Arc<str>,
    client_id: Arc<str>,
    send: Arc<OnceLock<SendRequest<Bytes>>>,
    closed: CancellationToken,
    streams: Arc<Semaphore>,
    max_streams: u32,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("session_id", &self.session_id)
            .field("client_id", &self.client_id)
            .field("ready", &self.send.get().is_some())
            .finish()
    }
}

impl AgentHandle {
    /// A handle whose connection is not up yet, allowing `max_streams` streams at once.
    pub fn pending(session_id: Arc<str>, client_id: Arc<str>, closed: CancellationToken, max_streams: usize) -> Self {
        let max_streams = max_streams.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Self {
            session_id,
            client_id,
            send: Arc::new(OnceLock::new()),
            closed,
            streams: Arc::new(Semaphore::new(max_streams as usize)),
            max_streams,
        }
    }

    /// True while the connection is up and not closing.
    pub fn is_live(&self) -> bool {
        self.is_attached() && !self.closed.is_cancelled()
    }

    /// Stream slots free on this connection.
    pub fn free_streams(&self) -> usize {
        self.streams.available_permits()
    }

    /// Resolves once no stream is open on this connection (for draining).
    pub async fn idle(&self) {
        let _ = self.streams.acquire_many(self.max_streams).await;
    }

    /// One of this connection's stream slots, or `None` at its cap.
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Makes the handle usable.
    pub fn attach(&self, send: SendRequest<Bytes>) {
        let _ = self.send.set(send);
    }

    /// True once the mux is up (the tunnel was announced).
    pub fn is_attached(&self) -> bool {
        self.send.get().is_some()
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Fires when the agent's session has ended.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Opens a byte stream of `kind` for `tunnel`, on behalf of public peer `peer`.
    ///
    /// Returns the future of the agent's answer and the sending half of the request body.
    pub async fn open(
        &self,
        kind: StreamKind,
        tunnel: &str,
        peer: Option<SocketAddr>,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), OpenError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("http://postern.agent/stream")
            .header(stream::KIND, kind.as_str())
            .header(stream::TUNNEL, tunnel);
        if let Some(peer) = peer {
            req = req.header(stream::PEER, peer.to_string());
        }
        self.open_request(req.body(())?, false).await
    }

    /// Opens a stream with a ready-made request (the HTTP edge builds its own).
    pub async fn open_request(
        &self,
        req: Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), OpenError> {
        let send = self.send.get().ok_or(OpenError::NotReady)?.clone();
        let mut send = send.ready().await.map_err(OpenError::AgentGone)?;
        send.send_request(req, end_of_stream).map_err(OpenError::AgentGone)
    }
}
