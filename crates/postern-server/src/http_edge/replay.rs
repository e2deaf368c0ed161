//! Replay: sends a captured request through its tunnel to the local service again, marked with
//! `X-Postern-Replay: <id>`, and returns the new capture.
//!
//! The request is rebuilt from the capture: method, path, headers and the whole body. Redacted
//! headers were never kept, so they are not sent (a replay carries no visitor's credentials),
//! and a request whose body was longer than what was kept is refused rather than sent cut
//! short. The replay takes one of the agent's stream slots like any request; it is not public
//! traffic, so it is not counted in the tunnel's totals or the access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body_util::BodyExt;
use postern_proto::stream::{self, StreamKind};
use postern_transport::body::H2Body;
use postern_transport::headers::strip_for_forwarding;

use super::proxy::{BoxError, EdgeBody};
use super::upstream::{self, Upstream};
use crate::agent::OpenError;
use crate::inspect::tap::{Asked, Draft};
use crate::inspect::{Capture, REDACTED};
use crate::tunnel::registry::Registry;
use crate::tunnel::Tunnel;

/// How long a replay may take, from sending the request to the end of the response.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a capture was not replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Only part of the request body (or none of it) was kept.
    #[error("capture {0} kept only part of its request body, so it cannot be sent again as it was")]
    Incomplete(u64),
    /// The captured request does not make a valid request.
    #[error("capture {0} cannot be rebuilt into a request")]
    Malformed(u64),
    /// No agent connection serves the tunnel now.
    #[error("the tunnel's agent is not connected")]
    AgentUnavailable,
    /// Every agent connection is at its stream cap.
    #[error("the tunnel's agent is at its stream cap; try again")]
    AgentBusy,
    /// The agent reset the stream or went away.
    #[error("the agent did not answer: {0}")]
    NoAnswer(String),
    /// The local service took longer than [`REPLAY_TIMEOUT`].
    #[error("the local service did not finish answering within {0:?}")]
    Timeout(Duration),
}

/// Sends `original` through `tunnel` again; the new capture once its response has ended.
pub async fn replay(
    registry: &Arc<Registry>,
    tunnel: &Arc<Tunnel>,
    original: &Capture,
) -> Result<Arc<Capture>, ReplayError> {
    if !original.replayable() {
        return Err(ReplayError::Incomplete(original.id));
    }
    let malformed = || ReplayError::Malformed(original.id);
    let method = Method::from_bytes(original.method.as_bytes()).map_err(|_| malformed())?;
    let mut headers = HeaderMap::new();
    for (name, value) in original.request_headers.iter().filter(|(_, v)| v != REDACTED) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| malformed())?;
        headers.append(name, HeaderValue::from_str(value).map_err(|_| malformed())?);
    }
    let (member, _slot) =
        tunnel.pick().map_err(|busy| if busy { ReplayError::AgentBusy } else { ReplayError::AgentUnavailable })?;
    let started = Instant::now();
    let asked = Asked {
        method: &original.method,
        path: &original.path,
        host: &original.host,
        peer: original.peer,
        secure: original.secure,
        headers: &HeaderMap::new(),
    };
    let draft = Draft::begin(registry.clone(), tunnel.clone(), asked, started);
    draft.replaying(original);
    let finished = draft.finished();
    let local_path = tunnel.local_path(&original.path);
    let to = Upstream {
        host: &original.host,
        path: &local_path,
        peer: original.peer,
        secure: original.secure,
        tunnel: &tunnel.info.name,
        kind: StreamKind::Http,
        add: &HeaderMap::new(),
        upgrade: None,
        replay_of: Some(original.id),
    };
    let upstream = upstream::request(method, headers, to).ok_or_else(malformed)?;
    let body = original.request_body.bytes.clone();
    let exchange = async {
        let (response, mut send) = member.open_request(upstream, body.is_empty()).await.map_err(|e| match e {
            OpenError::NotReady | OpenError::AgentGone(_) => ReplayError::AgentUnavailable,
            OpenError::Metadata(_) => malformed(),
        })?;
        if !body.is_empty() {
            send.send_data(body, true).map_err(|e| ReplayError::NoAnswer(e.to_string()))?;
        }
        let (mut parts, recv) = response.await.map_err(|e| ReplayError::NoAnswer(e.to_string()))?.into_parts();
        if parts.headers.contains_key(stream::REFUSE_REASON) {
            // The agent's own refusal (the local service is down): its status is the answer.
            parts.headers.clear();
        }
        strip_for_forwarding(&mut parts.headers);
        let resp: Response<EdgeBody> = Response::from_parts(parts, H2Body::new(recv).map_err(BoxError::from).boxed());
        // The tap copies what the capture keeps; the rest is read and dropped, never buffered.
        let mut body = draft.clone().respond(resp).into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| ReplayError::NoAnswer(e.to_string()))?;
        }
        Ok(())
    };
    let outcome = match tokio::time::timeout(REPLAY_TIMEOUT, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ReplayError::Timeout(REPLAY_TIMEOUT)),
    };
    if let Err(e) = outcome {
        // A replay that did not happen is not a capture.
        draft.abandon();
        return Err(e);
    }
    drop(draft);
    finished.await.map_err(|_| ReplayError::NoAnswer("the capture was not recorded".into()))
}
