//! The HTTP edge: public HTTP and HTTPS listeners, routed per request by host name.
//!
//! - [`serve`] accepts connections (sharing the relay's public-connection cap), terminates TLS
//!   on the HTTPS port (certificates chosen by SNI, ALPN `h2` and `http/1.1`), and serves
//!   HTTP/1.1 and HTTP/2 with hyper, upgrades included.
//! - Every request is routed on its own `Host`/`:authority` ([`proxy`]), never per
//!   connection: browsers coalesce HTTP/2 connections across names that share a wildcard
//!   certificate, so two requests on one connection may belong to two tunnels.
//! - Bounds: TLS handshake and request-head timeout (slowloris), request-head size, concurrent
//!   HTTP/2 streams per connection, and an idle timeout on connections that move no bytes.

mod idle;
mod logged;
pub(crate) mod pages;
pub mod proxy;
pub mod replay;
mod upstream;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use postern_transport::accept;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, Instrument};

use self::idle::Tracked;
use self::proxy::Edge;

/// Header fields an HTTP/1.1 request may carry (hyper's default, set here on purpose and
/// documented in `docs/api.md`); more gets `431`. HTTP/2 requests are bounded by
/// `--http-max-header-bytes` alone.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// Accepts public HTTP (or, with `tls`, HTTPS) connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let Some((stream, peer)) = accept::next(&listener, scheme, &shutdown).await else { break };
        let Ok(permit) = edge.gate.connection(peer) else { continue };
        let (tls, edge, shutdown) = (tls.clone(), edge.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                let outcome = connection(stream, peer, tls, edge, shutdown).await;
                debug!(%outcome, "public connection closed");
                drop(permit);
            }
            .instrument(info_span!("http", %peer, scheme)),
        );
    }
    tasks.close();
    tasks
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) -> Cow<'static, str> {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_http(Tracked::new(stream), peer, false, edge, shutdown).await,
        Some(acceptor) => {
            let limit = edge.config.http_header_timeout;
            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(Tracked::new(tls), peer, true, edge, shutdown).await,
                Ok(Err(_)) => "TLS handshake failed".into(),
                Err(_) => "TLS handshake timed out".into(),
            }
        }
    }
}

async fn serve_http<IO>(
    io: Tracked<IO>,
    peer: SocketAddr,
    secure: bool,
    edge: Arc<Edge>,
    shutdown: CancellationToken,
) -> Cow<'static, str>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &edge.config;
    let idle_limit = cfg.http_idle_timeout;
    let activity = io.activity();
    let svc = {
        let edge = edge.clone();
        service_fn(move |req| proxy::handle(req, edge.clone(), peer, secure))
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.http_header_timeout)
        .max_buf_size(cfg.http_max_header_bytes)
        .max_headers(MAX_REQUEST_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http_max_streams)
        .max_header_list_size(cfg.http_max_header_bytes as u32)
        .adaptive_window(true);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut closing = false;
    let mut check = tokio::time::interval(idle_limit / 4);
    loop {
        tokio::select! {
            r = conn.as_mut() => return match r {
                Ok(()) => "done".into(),
                Err(e) => format!("ended with an error: {e}").into(),
            },
            _ = check.tick(), if !closing => {
                if activity.idle_for() >= idle_limit {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
