//! One public HTTP request: route by host, open a stream to the tunnel's agent, stream the
//! body both ways, and pass upgrades (WebSocket) through as a byte stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use postern_proto::route::{self, Path, RequestHead, RouteError, Routed};
use postern_proto::stream::{self, StreamKind};
use postern_proto::TunnelKind;
use postern_transport::body::{pump, Counted, H2Body};
use postern_transport::headers::{strip_for_forwarding, upgrade_protocol};
use postern_transport::splice::splice;
use tracing::debug;

use super::logged::{Entry, RequestBytes, Served};
use super::pages::{self, page, EdgeError};
use super::upstream::{self, Upstream};
use crate::access::{self, forward_auth::Asking};
use crate::agent::OpenError;
use crate::cluster::forward::Forwarded;
use crate::config::RelayConfig;
use crate::inspect::tap::{Asked, Draft, Tap, Tapped};
use crate::metrics::RelayMetrics;
use crate::quota::QuotaExceeded;
use crate::tunnel::admit::{Admitted, Gate, Refusal, Via};
use crate::tunnel::registry::Registry;
use crate::tunnel::stats::{StreamCount, TunnelMeter};
use crate::tunnel::{Member, Tunnel};
use crate::visitor::edge::{self, Site};
use crate::visitor::flow::AuthHost;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body: streamed from the agent, or one of the relay's own pages.
pub type EdgeBody = BoxBody<Bytes, BoxError>;

/// What the HTTP edge needs to route.
#[derive(Debug)]
pub struct Edge {
    /// Settings (domain, limits, redirect).
    pub config: RelayConfig,
    /// Live tunnels.
    pub registry: Arc<Registry>,
    /// Port of the HTTPS listener, for redirects; `None` without one.
    pub https_port: Option<u16>,
    /// Admission: connection caps, access rules, forward-auth, quotas.
    pub gate: Arc<Gate>,
    /// The ACME manager, whose HTTP-01 challenges the edge answers.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// The cluster, on a clustered relay: requests for names held elsewhere are forwarded.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A public client of this relay.
    Public,
    /// Another relay of the cluster, which accepted it and forwarded it here: answered here or
    /// not at all, never forwarded again.
    Peer,
}

fn own(resp: Response<Full<Bytes>>) -> Response<EdgeBody> {
    resp.map(|b| b.map_err(|never: Infallible| match never {}).boxed())
}

fn error(err: EdgeError, host: Option<&str>) -> Response<EdgeBody> {
    own(page(err, host))
}

/// hyper service entry point; never fails, every problem becomes a response.
pub async fn handle(
    mut req: Request<Incoming>,
    edge: Arc<Edge>,
    peer: SocketAddr,
    secure: bool,
) -> Result<Response<EdgeBody>, Infallible> {
    let started = std::time::Instant::now();
    let log = edge.registry.access_log();
    let entry = log.enabled().then(|| Entry::begin(&mut req, peer, started, log.clone()));
    let (kind, resp) = forward(req, &edge, peer, secure, Hop::Public).await;
    edge.registry.metrics().http_answered(kind, resp.status().as_u16(), started.elapsed());
    Ok(match entry {
        Some(entry) => entry.finish(resp),
        None => resp,
    })
}

/// A request another relay of the cluster forwarded here (see `cluster::serve`), for the
/// visitor `peer` who reached that relay over HTTPS when `secure`.
pub async fn handle_peer(req: Request<Incoming>, edge: &Edge, peer: SocketAddr, secure: bool) -> Response<EdgeBody> {
    let started = std::time::Instant::now();
    let (kind, resp) = forward(req, edge, peer, secure, Hop::Peer).await;
    edge.registry.metrics().http_answered(kind, resp.status().as_u16(), started.elapsed());
    resp
}

/// Keeps a request counted as open, and what admission gave it held, until the response body
/// is done.
struct OpenStream {
    _count: StreamCount,
    _admitted: Admitted,
}

/// Admits a request into `tunnel` ([`crate::tunnel::admit`]); a refusal is its error page.
async fn admit(
    req: &Request<Incoming>,
    edge: &Edge,
    tunnel: &Tunnel,
    peer: SocketAddr,
    secure: bool,
    (host, path): (&str, &str),
) -> Result<(Admitted, Member), Response<EdgeBody>> {
    let uri = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let asking = Asking { method: req.method(), uri, headers: req.headers(), peer: peer.ip(), secure, host };
    let refused = match edge.gate.admit_public(tunnel, peer, Via::Http(asking)).await {
        Ok(mut admitted) => match admitted.member.take() {
            Some(member) => return Ok((admitted, member)),
            None => Refusal::AgentUnavailable,
        },
        Err(why) => why,
    };
    let err = match refused {
        Refusal::Credentials { basic } => {
            let mut resp = error(EdgeError::Unauthorized, Some(host));
            if !basic {
                resp.headers_mut().remove(header::WWW_AUTHENTICATE);
            }
            return Err(resp);
        }
        Refusal::AuthDenied(resp) => return Err(own(*resp)),
        Refusal::SignIn => match edge.https_port {
            Some(port) if edge::is_navigation(req.method(), req.headers()) => {
                let site = Site { domain: &edge.config.domain, https_port: port };
                return Err(own(pages::found(&site.login_url(host, path))));
            }
            _ => EdgeError::SignInRequired,
        },
        Refusal::NotAllowed | Refusal::PerIpCap | Refusal::ConnectionCap => EdgeError::Forbidden,
        Refusal::AuthUnavailable => EdgeError::AuthUnavailable,
        Refusal::Quota(QuotaExceeded::Volume { resets_at, .. }) => {
            debug!("request refused: the token's volume is used up");
            let mut resp = error(EdgeError::VolumeExceeded, Some(host));
            let wait = resets_at.saturating_sub(crate::clock::unix_secs()).max(1);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return Err(resp);
        }
        Refusal::Quota(e) => {
            debug!(error = %e, "request refused by quota");
            EdgeError::QuotaExceeded
        }
        Refusal::AgentBusy => EdgeError::AgentBusy,
        Refusal::AgentUnavailable => EdgeError::AgentUnavailable,
    };
    Err(error(err, Some(host)))
}

/// The body of an HTTP-01 challenge: the key authorization, as text.
fn challenge_response(key_auth: String) -> Response<EdgeBody> {
    let mut resp = own(Response::new(Full::new(Bytes::from(key_auth))));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Label for requests the relay answers itself, before any tunnel is involved.
const RELAY: &str = "relay";

async fn forward(
    mut req: Request<Incoming>,
    edge: &Edge,
    peer: SocketAddr,
    secure: bool,
    hop: Hop,
) -> (&'static str, Response<EdgeBody>) {
    // CONNECT asks the relay to be a forward proxy, whatever host it names: it is not one.
    if req.method() == Method::CONNECT {
        return (RELAY, error(EdgeError::MethodNotAllowed, None));
    }
    let hosts: Vec<&[u8]> = req.headers().get_all(header::HOST).iter().map(HeaderValue::as_bytes).collect();
    let head = RequestHead {
        method: req.method().as_str(),
        authority: req.uri().authority().map(Authority::as_str),
        path: req.uri().path_and_query().map(|p| p.as_str()),
        hosts: &hosts,
    };
    let routed = route::route(&head, &edge.config.domain);
    // ACME HTTP-01 challenges, for any host, before redirects (the CA asks over plain HTTP).
    // The entry relay of a forwarded request has answered those already.
    if let (Some(acme), false, Ok(_), Hop::Public) = (&edge.acme, secure, &routed, hop) {
        if let Some(token) = req.uri().path().strip_prefix(crate::acme::CHALLENGE_PATH) {
            if let Some(key_auth) = acme.key_authorization(token) {
                return (RELAY, challenge_response(key_auth));
            }
        }
    }
    let Routed { host, key, path } = match routed {
        Ok(r) => r,
        Err(RouteError::NotFound(_)) => {
            let host = hosts.first().and_then(|h| std::str::from_utf8(h).ok());
            return (RELAY, error(EdgeError::TunnelNotFound, host.or(head.authority)));
        }
        Err(RouteError::BadTarget) => return (RELAY, error(EdgeError::BadTarget, None)),
        Err(_) => return (RELAY, error(EdgeError::BadHost, None)),
    };
    let path = match path {
        Path::Origin(p) => p,
        Path::Asterisk => "*".to_string(),
    };
    if !secure && edge.config.http_redirect && path != "*" && hop == Hop::Public {
        if let Some(port) = edge.https_port {
            return (RELAY, own(pages::redirect(&host, &path, port)));
        }
    }
    // The relay-wide sign-in host: answered by the relay that the visitor reached.
    if key == edge::AUTH_LABEL && hop == Hop::Public {
        let site = Site { domain: &edge.config.domain, https_port: edge.https_port.unwrap_or(443) };
        let at = AuthHost { site, registry: &edge.registry, policies: edge.gate.policies() };
        let visitors = edge.gate.visitors();
        return (RELAY, own(visitors.auth_host(req.method(), req.uri(), req.headers(), &at).await));
    }
    // A forwarded upgrade arrives as HTTP/2 (on its CONNECT stream), a public one as HTTP/1.1.
    let upgrading =
        (req.version() <= Version::HTTP_11 || hop == Hop::Peer) && upgrade_protocol(req.headers()).is_some();
    if upgrading && has_body(req.headers()) {
        return (RELAY, error(EdgeError::UpgradeWithBody, Some(&host)));
    }
    let kind = if upgrading { "upgrade" } else { "http" };
    let Some(tunnel) = edge.registry.route(&key, &path).filter(|t| t.info.kind == TunnelKind::Http) else {
        return match (hop, &edge.cluster) {
            (Hop::Peer, _) => (RELAY, error(EdgeError::NotHere, Some(&host))),
            (Hop::Public, Some(cluster)) if path != "*" => {
                let proto = if upgrading { upgrade_protocol(req.headers()) } else { None };
                match cluster.forward_http(req, &key, &host, &path, peer, secure, proto).await {
                    Forwarded::Answer(resp) => (kind, resp),
                    Forwarded::NoRoute => (RELAY, error(EdgeError::TunnelNotFound, Some(&host))),
                    Forwarded::Unreachable => (RELAY, error(EdgeError::RelayUnreachable, Some(&host))),
                }
            }
            _ => (RELAY, error(EdgeError::TunnelNotFound, Some(&host))),
        };
    };
    if path == "*" {
        return (RELAY, options_asterisk());
    }
    if path.starts_with("/.postern/") {
        let policies = edge.gate.policies();
        if access::login_required(&tunnel.access, &policies.matching(&tunnel.info.id)) {
            if let Some(resp) = edge.gate.visitors().tunnel_page(req.uri(), &host, &tunnel, policies) {
                return (RELAY, own(resp));
            }
        }
    }
    let served = edge
        .registry
        .access_log()
        .enabled()
        .then(|| Served { tunnel: tunnel.info.name.clone(), owner: tunnel.info.owner.clone() });
    let (began, stats) = (std::time::Instant::now(), tunnel.stats.clone());
    let draft = tunnel.inspector.is_on().then(|| {
        let asked =
            Asked { method: req.method().as_str(), path: &path, host: &host, peer, secure, headers: req.headers() };
        Draft::begin(edge.registry.clone(), tunnel.clone(), asked, began)
    });
    if let (Some(draft), "http") = (&draft, kind) {
        req.extensions_mut().insert(draft.request_tap());
    }
    let local_path = tunnel.local_path(&path);
    let mut resp = proxy(req, edge, peer, secure, tunnel, host, (path, local_path), kind).await;
    stats.answered(resp.status().as_u16(), began.elapsed());
    if let Some(draft) = draft {
        resp = draft.respond(resp);
    }
    if let Some(served) = served {
        resp.extensions_mut().insert(served);
    }
    (kind, resp)
}

/// `OPTIONS *` asks about the server as a whole, which for a tunnel is the relay: it answers
/// with the methods it forwards (the local service never sees a request without a path).
fn options_asterisk() -> Response<EdgeBody> {
    let mut resp = Response::new(Empty::new().map_err(|never: Infallible| match never {}).boxed());
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS, GET, HEAD, POST, PUT, PATCH, DELETE"));
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// True when a request announces a body (a non-zero `Content-Length`, or any
/// `Transfer-Encoding`).
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    mut req: Request<Incoming>,
    edge: &Edge,
    peer: SocketAddr,
    secure: bool,
    tunnel: Arc<Tunnel>,
    host: String,
    (path, local_path): (String, String),
    kind: &'static str,
) -> Response<EdgeBody> {
    let (admitted, agent) = match admit(&req, edge, &tunnel, peer, secure, (&host, &path)).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let upgrade = if kind == "upgrade" { upgrade_protocol(req.headers()) } else { None };
    let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let body_bytes = parts.extensions.get::<RequestBytes>().cloned();
    let tap = parts.extensions.remove::<Tap>();
    let stream_kind = if upgrade.is_some() { StreamKind::Upgrade } else { StreamKind::Http };
    let to = Upstream {
        host: &host,
        path: &local_path,
        peer,
        secure,
        tunnel: &tunnel.info.name,
        kind: stream_kind,
        add: &admitted.add_headers,
        upgrade: upgrade.as_ref(),
        replay_of: None,
    };
    let Some(upstream) = upstream::request(parts.method, parts.headers, to) else {
        return error(EdgeError::BadHost, Some(&host));
    };

    let end_of_stream = upgrade.is_none() && body.is_end_stream();
    let metrics = edge.registry.metrics().clone();
    let open = OpenStream { _count: StreamCount::open(&tunnel, &metrics, kind), _admitted: admitted };
    let (response, mut send) = match agent.open_request(upstream, end_of_stream).await {
        Ok(pair) => pair,
        Err(e @ (OpenError::NotReady | OpenError::AgentGone(_))) => {
            debug!(error = %e, "agent unavailable");
            return error(EdgeError::AgentUnavailable, Some(&host));
        }
        Err(OpenError::Metadata(_)) => return error(EdgeError::BadHost, Some(&host)),
    };
    if upgrade.is_none() && !end_of_stream {
        let (t, m) = (tunnel.clone(), metrics.clone());
        tokio::spawn(async move {
            let meter = TunnelMeter { tunnel: &t, metrics: &m, kind: "http" };
            let counted = |n| {
                if let Some(b) = &body_bytes {
                    b.add(n);
                }
                meter.inbound(n)
            };
            if let Err(e) = pump(Tapped::new(body, tap), send, &counted).await {
                debug!(error = %e, "request body not fully forwarded");
            }
        });
        // `send` moved into the pump; upgrades keep it for the splice below.
        return respond(response.await, &tunnel, &agent, metrics, open, &host);
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return respond(Err(e), &tunnel, &agent, metrics, open, &host),
    };
    let (Some(on_upgrade), Some(proto)) = (on_upgrade, upgrade) else {
        return respond(Ok(response), &tunnel, &agent, metrics, open, &host);
    };
    if response.headers().get(stream::STATUS).map(|v| v.as_bytes()) != Some(b"101") {
        // The local service declined the upgrade; its answer is the response.
        let _ = send.send_data(Bytes::new(), true);
        return respond(Ok(response), &tunnel, &agent, metrics, open, &host);
    }
    let (mut parts, recv) = response.into_parts();
    strip_for_forwarding(&mut parts.headers);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, proto);
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    tokio::spawn(async move {
        let _open = open;
        match on_upgrade.await {
            Ok(upgraded) => {
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                let meter = TunnelMeter { tunnel: &tunnel, metrics: &metrics, kind: "http" };
                if let Err(e) = splice(r, w, send, recv, &meter).await {
                    debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => {
                debug!(error = %e, "public client did not complete the upgrade");
                send.send_reset(h2::Reason::CANCEL);
            }
        }
    });
    Response::from_parts(parts, Empty::new().map_err(|never: Infallible| match never {}).boxed())
}

/// Turns the agent's answer into the public response. The stream stays counted as open, and
/// the body's bytes are counted out, until the response body is done.
fn respond(
    response: Result<Response<h2::RecvStream>, h2::Error>,
    tunnel: &Arc<Tunnel>,
    agent: &Member,
    metrics: Arc<RelayMetrics>,
    open: OpenStream,
    host: &str,
) -> Response<EdgeBody> {
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "agent did not answer the request");
            let gone = agent.closed().is_cancelled();
            let err = if gone { EdgeError::AgentUnavailable } else { EdgeError::LocalFailed };
            return error(err, Some(host));
        }
    };
    if response.headers().contains_key(stream::REFUSE_REASON) {
        let err = match response.status() {
            StatusCode::NOT_FOUND => EdgeError::TunnelNotFound,
            StatusCode::BAD_GATEWAY => EdgeError::LocalRefused,
            _ => EdgeError::LocalFailed,
        };
        return error(err, Some(host));
    }
    let (mut parts, recv) = response.into_parts();
    strip_for_forwarding(&mut parts.headers);
    let tunnel = tunnel.clone();
    let body = Counted::new(H2Body::new(recv), move |n| {
        let _still_open = &open;
        TunnelMeter { tunnel: &tunnel, metrics: &metrics, kind: "http" }.outbound(n)
    });
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}
