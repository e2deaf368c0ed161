//! The relay's handle on a connected agent: opens h2 streams to it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::{Method, Request};
use postern_proto::stream::{self, StreamKind};
use tokio_util::sync::CancellationToken;

/// Why a stream could not be opened to the agent.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The agent's connection is gone or going away.
    #[error("agent connection is gone: {0}")]
    AgentGone(#[source] h2::Error),
    /// A header value could not be built (a bug: names are validated earlier).
    #[error("invalid stream metadata: {0}")]
    Metadata(#[from] http::Error),
}

/// A cheap, cloneable handle on one agent connection.
#[derive(Clone)]
pub struct AgentHandle {
    session_id: Arc<str>,
    client_id: Arc<str>,
    send: SendRequest<Bytes>,
    closed: CancellationToken,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("session_id", &self.session_id).field("client_id", &self.client_id).finish()
    }
}

impl AgentHandle {
    pub(crate) fn new(
        session_id: Arc<str>,
        client_id: Arc<str>,
        send: SendRequest<Bytes>,
        closed: CancellationToken,
    ) -> Self {
        Self { session_id, client_id, send, closed }
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Fires when the agent's session has ended.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Opens a stream of `kind` for `tunnel`, on behalf of public peer `peer`.
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
        let req = req.body(())?;
        let mut send = self.send.clone().ready().await.map_err(OpenError::AgentGone)?;
        send.send_request(req, false).map_err(OpenError::AgentGone)
    }
}
