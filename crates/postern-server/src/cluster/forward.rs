//! The entry side of forwarding: a public request or connection for a name no local tunnel
//! holds goes, over a peer link, to a relay that holds it. The entry relay has done the
//! per-connection work (TLS, address caps, redirects, ACME answers); the relay holding the
//! agent does the per-tunnel work (access rules, policies, forward-auth, quotas, stats), on the
//! very code path its own public listeners use.
//!
//! What travels is HTTP/2 over the peer link, moved with the agent link's own code (`pump`,
//! `H2Body`, `splice`), so bodies, trailers and flow control hold end to end:
//!
//! - an HTTP request goes as itself, marked `postern-fwd: http` with the visitor's address and
//!   scheme (`postern-fwd-peer`, `postern-fwd-proto`);
//! - an upgrade (WebSocket) goes as an HTTP/2 `CONNECT` marked `postern-fwd: upgrade`, with
//!   the original method, path and protocol; the peer answers `200` with `postern-status: 101`
//!   when the local service switched, and both sides then splice bytes;
//! - a TCP connection (a TCP or bore tunnel) goes as a `CONNECT` marked `postern-fwd: tcp`.
//!
//! The public can never set these headers: every `postern-` header of public input is removed
//! first. A peer answers a name it does not hold with `421` and `postern-error: not-here`; the
//! entry relay then forgets the route and, when nothing has been sent yet (no body), tries
//! another relay once. Otherwise the visitor gets `503 relay-unreachable`.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use postern_proto::stream;
use postern_transport::body::{pump, H2Body};
use postern_transport::headers::{strip_for_forwarding, strip_hop_by_hop, strip_prefixed};
use postern_transport::splice::{send_chunked, splice, NoMeter, Pace};
use tokio::net::TcpStream;
use tracing::debug;

use super::Cluster;
use crate::http_edge::proxy::EdgeBody;

/// Marks a forwarded stream and says what it is: `http`, `upgrade`, `tcp` or `admin`.
pub const FWD: &str = "postern-fwd";
/// The visitor's address, `ip:port`.
pub const FWD_PEER: &str = "postern-fwd-peer";
/// `https` or `http`: how the visitor reached the entry relay.
pub const FWD_PROTO: &str = "postern-fwd-proto";
/// For upgrades: the original method.
pub const FWD_METHOD: &str = "postern-fwd-method";
/// For upgrades: the original path and query.
pub const FWD_PATH: &str = "postern-fwd-path";
/// On an `admin` stream: the subject of the caller the entry relay authenticated.
pub const FWD_SUBJECT: &str = "postern-fwd-subject";
/// On an `admin` stream: `1` when that caller is the admin.
pub const FWD_ADMIN: &str = "postern-fwd-admin";
/// The `postern-error` code of a peer that does not hold the name.
pub const NOT_HERE: &str = "not-here";

/// How a forwarded stream turned out, for the caller's answer.
#[derive(Debug)]
pub enum Forwarded<T> {
    /// No relay holds the name (a 404 for the caller to give).
    NoRoute,
    /// Relays hold it but none could be reached (a 503).
    Unreachable,
    /// The peer's answer.
    Answer(T),
}

/// What follows the head of a forwarded stream.
enum Outgoing {
    /// Nothing: the head ends the stream.
    Nothing,
    /// A request body, pumped on the stream as it arrives.
    Body(Incoming),
    /// Bytes to splice once the peer answers (a CONNECT): the stream stays open.
    Open,
}

fn empty() -> EdgeBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn not_here<B>(resp: &Response<B>) -> bool {
    resp.headers().get("postern-error").is_some_and(|v| v == NOT_HERE)
}

/// The peer's answer, and the stream's sending half when it was left open.
type Answered = (Response<RecvStream>, Option<SendStream<Bytes>>);

impl Cluster {
    /// The link to `relay`.
    async fn link(&self, relay: &str) -> Result<SendRequest<Bytes>, super::links::LinkError> {
        let node = self.routes.resolve(&self.store, relay).await;
        self.links.get(relay, node).await
    }

    /// The relays to try for `name`, this one excluded, rotated so streams spread over them.
    async fn targets(&self, name: &str) -> Vec<String> {
        let mut relays = self.routes.lookup(&self.store, name).await.unwrap_or_default();
        if relays.len() > 1 {
            let turn = rand::random_range(0..relays.len());
            relays.rotate_left(turn);
        }
        relays
    }

    /// Sends `make()` to the relays holding `name`: the first, then (only while nothing of the
    /// visitor's has been sent, that is without a body) another after a `not-here` or a failed
    /// link.
    async fn send(&self, name: &str, make: impl Fn() -> Request<()>, outgoing: Outgoing) -> Forwarded<Answered> {
        let relays = self.targets(name).await;
        if relays.is_empty() {
            return Forwarded::NoRoute;
        }
        let retryable = !matches!(outgoing, Outgoing::Body(_));
        let mut outgoing = Some(outgoing);
        for (attempt, relay) in relays.iter().take(2).enumerate() {
            if attempt > 0 && !retryable {
                break;
            }
            let link = match self.link(relay).await {
                Ok(l) => l,
                Err(e) => {
                    debug!(%relay, error = %e, "peer unreachable");
                    continue;
                }
            };
            let started = Instant::now();
            let end_of_stream = matches!(outgoing, Some(Outgoing::Nothing));
            let sent = match link.ready().await {
                Ok(mut link) => link.send_request(make(), end_of_stream),
                Err(e) => Err(e),
            };
            let (response, send) = match sent {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(%relay, error = %e, "forwarding failed");
                    self.links.forget(relay);
                    continue;
                }
            };
            self.metrics.cluster.forwarded.with_label_values(&["out"]).inc();
            let send = match outgoing.take() {
                Some(Outgoing::Body(body)) => {
                    tokio::spawn(async move {
                        if let Err(e) = pump(body, send, &|_| Pace::ON).await {
                            debug!(error = %e, "forwarded request body not fully sent");
                        }
                    });
                    None
                }
                Some(Outgoing::Open) => {
                    outgoing = Some(Outgoing::Open);
                    Some(send)
                }
                Some(Outgoing::Nothing) | None => {
                    outgoing = Some(Outgoing::Nothing);
                    None
                }
            };
            match response.await {
                Ok(resp) if not_here(&resp) => {
                    self.routes.invalidate(name);
                    debug!(%relay, %name, "peer does not hold the name any more");
                }
                Ok(resp) => {
                    self.metrics.cluster.forward_duration.observe(started.elapsed().as_secs_f64());
                    return Forwarded::Answer((resp, send));
                }
                Err(e) => {
                    debug!(%relay, error = %e, "forwarding failed");
                    if e.is_io() || e.is_go_away() {
                        self.links.forget(relay);
                    }
                }
            }
        }
        Forwarded::Unreachable
    }

    /// Forwards a public HTTP request (or, with `upgrade`, a WebSocket or other upgrade) for
    /// `name`, which no local tunnel holds.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward_http(
        &self,
        mut req: Request<Incoming>,
        name: &str,
        host: &str,
        path: &str,
        peer: SocketAddr,
        secure: bool,
        upgrade: Option<HeaderValue>,
    ) -> Forwarded<Response<EdgeBody>> {
        let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_prefixed(&mut parts.headers, stream::PREFIX);
        let mark = |h: &mut HeaderMap, kind: &'static str| {
            h.insert(FWD, HeaderValue::from_static(kind));
            h.insert(FWD_PROTO, HeaderValue::from_static(if secure { "https" } else { "http" }));
            if let Ok(v) = HeaderValue::from_str(&peer.to_string()) {
                h.insert(FWD_PEER, v);
            }
        };
        let Some(proto) = upgrade else {
            // HTTP/2 has no connection-specific headers; they described the visitor's hop only.
            strip_hop_by_hop(&mut parts.headers);
            mark(&mut parts.headers, "http");
            let outgoing = if body.is_end_stream() { Outgoing::Nothing } else { Outgoing::Body(body) };
            // HTTP/2 wants an absolute target; the host stays the visitor's.
            let uri: http::Uri = format!("http://{host}{path}").parse().unwrap_or_default();
            let make = || {
                let mut r = Request::new(());
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = uri.clone();
                *r.headers_mut() = parts.headers.clone();
                r
            };
            return match self.send(name, make, outgoing).await {
                Forwarded::Answer((resp, _)) => {
                    Forwarded::Answer(resp.map(|recv| H2Body::new(recv).map_err(Into::into).boxed()))
                }
                Forwarded::NoRoute => Forwarded::NoRoute,
                Forwarded::Unreachable => Forwarded::Unreachable,
            };
        };
        // An upgrade: CONNECT to the peer, carrying the original request.
        strip_for_forwarding(&mut parts.headers);
        mark(&mut parts.headers, "upgrade");
        parts.headers.insert(stream::UPGRADE, proto.clone());
        parts.headers.insert(
            FWD_METHOD,
            HeaderValue::from_str(parts.method.as_str()).unwrap_or(HeaderValue::from_static("GET")),
        );
        if let Ok(v) = HeaderValue::from_str(path) {
            parts.headers.insert(FWD_PATH, v);
        }
        let authority: http::Uri = host.parse().unwrap_or_default();
        let make = || {
            let mut r = Request::new(());
            *r.method_mut() = Method::CONNECT;
            *r.uri_mut() = authority.clone();
            *r.headers_mut() = parts.headers.clone();
            r
        };
        let (resp, send) = match self.send(name, make, Outgoing::Open).await {
            Forwarded::Answer((resp, Some(send))) => (resp, send),
            Forwarded::Answer((_, None)) | Forwarded::Unreachable => return Forwarded::Unreachable,
            Forwarded::NoRoute => return Forwarded::NoRoute,
        };
        let switched =
            resp.status() == StatusCode::OK && resp.headers().get(stream::STATUS).map(|v| v.as_bytes()) == Some(b"101");
        if !switched {
            return Forwarded::Answer(resp.map(|recv| H2Body::new(recv).map_err(Into::into).boxed()));
        }
        let (mut parts, recv) = resp.into_parts();
        strip_for_forwarding(&mut parts.headers);
        parts.status = StatusCode::SWITCHING_PROTOCOLS;
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
        if let Some(public_side) = on_upgrade {
            tokio::spawn(async move {
                let Ok(public) = public_side.await else {
                    debug!("the visitor did not complete an upgrade through a peer");
                    return;
                };
                let (r, w) = tokio::io::split(TokioIo::new(public));
                if let Err(e) = splice(r, w, send, recv, &NoMeter).await {
                    debug!(error = %e, "forwarded upgrade ended with an error");
                }
            });
        }
        Forwarded::Answer(Response::from_parts(parts, empty()))
    }

    /// Forwards a public TCP connection to the relay holding TCP tunnel `name`, and moves
    /// bytes both ways (with half-close) until both sides are done.
    pub async fn forward_tcp(&self, mut public: TcpStream, name: &str, peer: SocketAddr) -> Forwarded<()> {
        let make = || {
            let mut r = Request::new(());
            *r.method_mut() = Method::CONNECT;
            *r.uri_mut() = http::Uri::from_static("relay:0");
            let h = r.headers_mut();
            h.insert(FWD, HeaderValue::from_static("tcp"));
            if let Ok(v) = HeaderValue::from_str(name) {
                h.insert(stream::TUNNEL, v);
            }
            if let Ok(v) = HeaderValue::from_str(&peer.to_string()) {
                h.insert(FWD_PEER, v);
            }
            r
        };
        let (resp, send) = match self.send(name, make, Outgoing::Open).await {
            Forwarded::Answer((resp, Some(send))) => (resp, send),
            Forwarded::Answer((_, None)) | Forwarded::Unreachable => return Forwarded::Unreachable,
            Forwarded::NoRoute => return Forwarded::NoRoute,
        };
        if resp.status() != StatusCode::OK {
            debug!(status = %resp.status(), "the peer refused a forwarded connection");
            return Forwarded::Answer(());
        }
        let _ = public.set_nodelay(true);
        let (r, w) = public.split();
        if let Err(e) = splice(r, w, send, resp.into_body(), &NoMeter).await {
            debug!(error = %e, "forwarded connection ended with an error");
            // The far end reset (a quota cut it, the agent went away): so does the visitor's
            // connection, rather than ending as if the transfer were whole.
            if matches!(e, postern_transport::splice::SpliceError::Stream(_)) {
                let _ = public.set_zero_linger();
            }
        }
        Forwarded::Answer(())
    }

    /// Sends a visitor-route request of the admin API to relay `relay`, on behalf of `who`
    /// (the peer link is the cluster's own, so the peer takes the caller's identity from it);
    /// the peer's status and body, or `None` when it cannot be asked.
    pub async fn ask_peer_as(
        &self,
        relay: &str,
        asked: (Method, &str),
        who: &crate::auth::Identity,
        body: Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        self.ask_peer_within(relay, asked, who, body, std::time::Duration::from_secs(5)).await
    }

    /// [`Cluster::ask_peer_as`], waiting up to `within` for the answer (a route that waits on
    /// an agent needs longer).
    pub async fn ask_peer_within(
        &self,
        relay: &str,
        (method, path): (Method, &str),
        who: &crate::auth::Identity,
        body: Bytes,
        within: std::time::Duration,
    ) -> Option<(StatusCode, Bytes)> {
        let link = self.link(relay).await.ok()?;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = format!("http://relay{path}").parse().ok()?;
        let h = req.headers_mut();
        h.insert(FWD, HeaderValue::from_static("admin"));
        // As bytes: a subject may be any text without control characters, not only ASCII.
        h.insert(FWD_SUBJECT, HeaderValue::from_bytes(who.subject.as_bytes()).ok()?);
        if who.admin {
            h.insert(FWD_ADMIN, HeaderValue::from_static("1"));
        }
        let asked = async {
            let (resp, mut send) = link.ready().await.ok()?.send_request(req, body.is_empty()).ok()?;
            if !body.is_empty() {
                send_chunked(&mut send, body, true).await.ok()?;
            }
            let resp = resp.await.ok()?;
            let status = resp.status();
            Some((status, H2Body::new(resp.into_body()).collect().await.ok()?.to_bytes()))
        };
        tokio::time::timeout(within, asked).await.ok()?
    }

    /// Sends a request for the admin API of relay `relay` (fan-out of the cluster-wide views).
    pub async fn ask_peer(&self, relay: &str, method: Method, path: &str) -> Option<Bytes> {
        let link = self.link(relay).await.ok()?;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = format!("http://relay{path}").parse().ok()?;
        req.headers_mut().insert(FWD, HeaderValue::from_static("admin"));
        let asked = async {
            let (resp, _) = link.ready().await.ok()?.send_request(req, true).ok()?;
            let resp = resp.await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            Some(H2Body::new(resp.into_body()).collect().await.ok()?.to_bytes())
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), asked).await.ok()?
    }
}
