//! The request the agent receives for a public one (or for a replay of one): the visitor's
//! headers without hop-by-hop fields and `postern-` metadata, the relay's statement of who is
//! asking (`X-Forwarded-*` and the signed-in visitor's `X-Postern-Email`, never trusted from
//! the visitor; the relay's session cookie and service tokens are removed), and the stream
//! metadata the agent routes by.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Uri};
use http::{HeaderMap, Method, Request};
use postern_proto::stream::{self, StreamKind};
use postern_transport::headers::strip_for_forwarding;

use crate::inspect::REPLAY_HEADER;

/// Where a request goes and who sent it.
#[derive(Debug)]
pub struct Upstream<'a> {
    /// The public host name.
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// The visitor.
    pub peer: SocketAddr,
    /// The visitor came over HTTPS.
    pub secure: bool,
    /// The tunnel's registry name.
    pub tunnel: &'a str,
    /// Plain request or upgrade.
    pub kind: StreamKind,
    /// Headers admission adds (forward-auth's identity headers).
    pub add: &'a HeaderMap,
    /// For an upgrade, the protocol asked for.
    pub upgrade: Option<&'a HeaderValue>,
    /// For a replay, the id of the capture replayed.
    pub replay_of: Option<u64>,
}

/// Builds the head sent to the agent from the visitor's `method` and `headers`; `None` when
/// the host or path cannot be part of a URI.
pub fn request(method: Method, mut headers: HeaderMap, to: Upstream<'_>) -> Option<Request<()>> {
    let authority = to.host.parse::<Authority>().ok()?;
    strip_for_forwarding(&mut headers);
    headers.remove(header::HOST);
    // The relay is the edge: it states the peer, it does not trust what the peer claims.
    headers.remove("forwarded");
    headers.remove(REPLAY_HEADER);
    crate::visitor::edge::strip_public(&mut headers);
    let put = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put(&mut headers, "x-forwarded-for", &to.peer.ip().to_string());
    put(&mut headers, "x-forwarded-proto", if to.secure { "https" } else { "http" });
    put(&mut headers, "x-forwarded-host", to.host);
    for (name, value) in to.add.iter() {
        headers.insert(name, value.clone());
    }
    if let Some(id) = to.replay_of {
        put(&mut headers, REPLAY_HEADER, &id.to_string());
    }
    put(&mut headers, stream::KIND, to.kind.as_str());
    put(&mut headers, stream::TUNNEL, to.tunnel);
    put(&mut headers, stream::PEER, &to.peer.to_string());
    if let Some(proto) = to.upgrade {
        headers.insert(stream::UPGRADE, proto.clone());
    }
    let uri = Uri::builder()
        .scheme(if to.secure { "https" } else { "http" })
        .authority(authority)
        .path_and_query(to.path)
        .build()
        .ok()?;
    let mut upstream = Request::new(());
    *upstream.method_mut() = method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;
    Some(upstream)
}
