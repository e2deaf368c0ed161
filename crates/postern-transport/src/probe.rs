//! A health probe: one plain HTTP/1.1 `GET` of a relay's admin listener (`/readyz`,
//! `/healthz`) or a client's `--status` listener, for `postern healthcheck` in container images
//! that have no curl. The whole exchange is bounded by a timeout and the body read is capped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Most bytes of the answer's body kept for the report.
const MAX_BODY: usize = 4096;

/// What the endpoint answered.
#[derive(Debug, Clone)]
pub struct ProbeAnswer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The start of the body, as text.
    pub body: String,
}

/// Why the probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens there, or the connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener did not speak HTTP/1.1 or closed early.
    #[error("{addr} did not answer as HTTP: {source}")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
    /// The path is not a valid request target.
    #[error("invalid path {0:?}: it must start with /")]
    InvalidPath(String),
    /// No full answer in time.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
}

/// Where to connect for a listener bound to `addr`: an unspecified address (`0.0.0.0`, `::`)
/// means this machine's loopback.
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// `GET path` on `addr`, within `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<ProbeAnswer, ProbeError> {
    let addr = local_target(addr);
    if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
        return Err(ProbeError::InvalidPath(path.to_string()));
    }
    tokio::time::timeout(timeout, exchange(addr, path)).await.map_err(|_| ProbeError::Timeout { addr, timeout })?
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<ProbeAnswer, ProbeError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| ProbeError::Connect { addr, source })?;
    let http = |source| ProbeError::Http { addr, source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, concat!("postern-healthcheck/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|_| ProbeError::InvalidPath(path.to_string()))?;
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status();
    // The body only decorates the report: a long or broken one is cut, not an error.
    let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    driver.abort();
    Ok(ProbeAnswer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn unspecified_addresses_mean_loopback() {
        assert_eq!(local_target("0.0.0.0:7001".parse().unwrap()), "127.0.0.1:7001".parse().unwrap());
        assert_eq!(local_target("[::]:7001".parse().unwrap()), "[::1]:7001".parse().unwrap());
        assert_eq!(local_target("10.0.0.5:7001".parse().unwrap()), "10.0.0.5:7001".parse().unwrap());
    }

    #[tokio::test]
    async fn reads_status_and_body_and_bounds_a_silent_listener() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            // First connection: an answer. Second: silence.
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\ndraining").await.unwrap();
            let (_silent, _) = l.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let a = get(addr, "/readyz", Duration::from_secs(5)).await.unwrap();
        assert_eq!((a.status, a.body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "draining"));
        let e = get(addr, "/readyz", Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, ProbeError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn says_when_nothing_listens() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = get(addr, "/healthz", Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, ProbeError::Connect { .. }), "{e}");
    }
}
