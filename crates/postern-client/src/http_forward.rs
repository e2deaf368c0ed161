//! Forwards one HTTP request from the relay to the local service.
//!
//! - Ordinary requests go through a pooled hyper client: HTTP/1.1 by default, HTTP/2 without
//!   TLS (h2c) for gRPC (`content-type: application/grpc*`) or when the tunnel asks for it.
//!   Bodies and trailers stream both ways.
//! - Upgrade requests (WebSocket) get a fresh HTTP/1.1 connection; after the local service's
//!   `101` the agent answers the relay `200` + `postern-status: 101` and splices the raw bytes.
//! - If the local service cannot be reached, the relay gets `502` with a `postern-reason`
//!   header and shows its "local service unreachable" page.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use postern_proto::stream;
use postern_transport::body::{pump, Counted, H2Body};
use postern_transport::headers::strip_for_forwarding;
use postern_transport::splice::{splice, Pace};
use tokio::net::TcpStream;
use tracing::debug;

use crate::forward::{refuse, ForwardError};
use crate::stats::AgentStats;

/// What `Host` header the local service sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostHeader {
    /// The public host name, as the visitor sent it (ngrok's default).
    #[default]
    Preserve,
    /// `<local host>:<port>`, for dev servers that reject unknown hosts.
    Rewrite,
    /// A fixed value.
    Value(String),
}

/// Where and how to reach one local HTTP service.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    /// Host the service listens on.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Speak h2c to it for every request.
    pub h2c: bool,
    /// Host header policy.
    pub host_header: HostHeader,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
}

/// Request body sent to local services: the relay's stream, counted.
type LocalBody = http_body_util::combinators::BoxBody<Bytes, postern_transport::body::BoxError>;

/// The pooled clients to local services, shared by every stream of an agent.
#[derive(Debug, Clone)]
pub struct LocalClients {
    http1: Client<HttpConnector, LocalBody>,
    h2c: Client<HttpConnector, LocalBody>,
}

impl LocalClients {
    /// Clients with connection pooling and a connect timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        Self { http1, h2c }
    }
}

/// Forwards one request; answers the relay in every case.
pub async fn http(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    target: &LocalTarget,
    clients: &LocalClients,
    stats: &Arc<AgentStats>,
) -> Result<u64, ForwardError> {
    let upgrade = req.headers().get(stream::UPGRADE).cloned();
    let (mut parts, body) = req.into_parts();
    let public_host = parts.uri.authority().map(|a| a.as_str().to_string());
    strip_for_forwarding(&mut parts.headers);
    let host = match &target.host_header {
        HostHeader::Preserve => public_host,
        HostHeader::Rewrite => Some(format!("{}:{}", target.host, target.port)),
        HostHeader::Value(v) => Some(v.clone()),
    };
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        parts.headers.insert(header::HOST, v);
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let addr = format!("{}:{}", target.host, target.port);
    let uri: Uri = match format!("http://{addr}{path}").parse() {
        Ok(u) => u,
        Err(e) => return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, e.to_string())),
    };
    parts.uri = uri;

    if let Some(proto) = upgrade {
        return upgrade_request(parts, body, proto, respond, target, addr, stats).await;
    }

    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let client = if target.h2c || grpc {
        parts.version = http::Version::HTTP_2;
        &clients.h2c
    } else {
        parts.version = http::Version::HTTP_11;
        &clients.http1
    };
    let counter = stats.clone();
    let body = Counted::new(H2Body::new(body), move |n| {
        counter.add_in(n);
        Pace::ON
    })
    .boxed();
    let response = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            let reason = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
            return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, reason));
        }
        Err(e) => return Err(refuse(&mut respond, StatusCode::INTERNAL_SERVER_ERROR, addr, e.to_string())),
    };
    let (mut parts, body) = response.into_parts();
    strip_for_forwarding(&mut parts.headers);
    let end = body.is_end_stream();
    let send = respond.send_response(Response::from_parts(parts, ()), end)?;
    if end {
        return Ok(0);
    }
    pump(body, send, &|n| {
        stats.add_out(n);
        Pace::ON
    })
    .await
    .map_err(|e| ForwardError::Body(e.to_string()))
}

async fn upgrade_request(
    mut parts: http::request::Parts,
    body: RecvStream,
    proto: HeaderValue,
    mut respond: SendResponse<Bytes>,
    target: &LocalTarget,
    addr: String,
    stats: &AgentStats,
) -> Result<u64, ForwardError> {
    let connect = TcpStream::connect((target.host.as_str(), target.port));
    let stream = match tokio::time::timeout(target.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, e.to_string())),
        Err(_) => return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, "connect timed out".into())),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, e.to_string())),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "local upgrade connection ended");
        }
    });
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, proto);
    // Origin-form on the wire for HTTP/1.1.
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = Uri::from(pq);
    }
    parts.version = http::Version::HTTP_11;
    let req = Request::from_parts(parts, Empty::<Bytes>::new());
    let mut response = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Err(refuse(&mut respond, StatusCode::INTERNAL_SERVER_ERROR, addr, e.to_string())),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, local_body) = response.into_parts();
        strip_for_forwarding(&mut parts.headers);
        let send = respond.send_response(Response::from_parts(parts, ()), false)?;
        return pump(local_body.map_err(|e| e.to_string()), send, &|n| {
            stats.add_out(n);
            Pace::ON
        })
        .await
        .map_err(|e| ForwardError::Body(e.to_string()));
    }
    let on_upgrade = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    strip_for_forwarding(&mut parts.headers);
    parts.status = StatusCode::OK;
    parts.headers.insert(stream::STATUS, HeaderValue::from_static("101"));
    let send = respond.send_response(Response::from_parts(parts, ()), false)?;
    let upgraded = on_upgrade.await.map_err(|e| ForwardError::Body(e.to_string()))?;
    let (r, w) = tokio::io::split(TokioIo::new(upgraded));
    let moved = splice(r, w, send, body, stats).await?;
    Ok(moved.stream_to_socket + moved.socket_to_stream)
}
