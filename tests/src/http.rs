//! Real HTTP clients for the HTTPS edge: hyper over rustls, trusting the relay's dev CA.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use postern_transport::tls::{client_config, server_name, Trust};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::TestRelay;

/// TLS to the relay's HTTPS port with `sni`, offering `alpn`.
pub async fn tls_connect(relay: &TestRelay, sni: &str, alpn: &[&[u8]]) -> anyhow::Result<TlsStream<TcpStream>> {
    tls_connect_from(relay, sni, alpn, [127, 0, 0, 1].into()).await
}

/// Like [`tls_connect`], from the loopback address `source` (any of 127.0.0.0/8).
pub async fn tls_connect_from(
    relay: &TestRelay,
    sni: &str,
    alpn: &[&[u8]],
    source: std::net::IpAddr,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let cfg = client_config(&Trust::CaFile(relay.ca.clone()), alpn)?;
    let tcp = connect_from(relay.https_addr, source).await?;
    let tls = TlsConnector::from(Arc::new(cfg)).connect(server_name(sni)?, tcp).await?;
    Ok(tls)
}

/// A TCP connection to `addr` from the loopback address `source`.
pub async fn connect_from(addr: std::net::SocketAddr, source: std::net::IpAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// An HTTP/1.1 connection over TLS from `source`; returns the status of `GET /` for `host`
/// with extra `headers`.
pub async fn get_status_from(
    relay: &TestRelay,
    host: &str,
    headers: &[(&str, &str)],
    source: std::net::IpAddr,
) -> anyhow::Result<(http::StatusCode, http::HeaderMap, String)> {
    let tls = tls_connect_from(relay, host, &[b"http/1.1"], source).await?;
    let (mut send, conn) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::get("/headers").header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send.send_request(req.body(empty())?).await?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    Ok((status, headers, text(resp.into_body()).await?))
}

/// An HTTP/1.1 connection to the relay over TLS.
pub async fn h1<B>(relay: &TestRelay, sni: &str) -> anyhow::Result<http1::SendRequest<B>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls_connect(relay, sni, &[b"http/1.1"]).await?;
    let (send, conn) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// An HTTP/2 connection to the relay over TLS (ALPN h2).
pub async fn h2<B>(relay: &TestRelay, sni: &str) -> anyhow::Result<http2::SendRequest<B>>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls_connect(relay, sni, &[b"h2"]).await?;
    anyhow::ensure!(tls.get_ref().1.alpn_protocol() == Some(b"h2"), "relay did not negotiate h2");
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// An empty request body.
pub fn empty() -> Empty<Bytes> {
    Empty::new()
}

/// Byte `i` of the test pattern: not periodic with any small chunk size.
fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 20) as u8
}

/// `len` pattern bytes starting at `offset`.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect::<Vec<u8>>().into()
}

/// SHA-256 of the first `len` pattern bytes.
pub fn pattern_sha256(len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        h.update(pattern(off, n));
        off += n as u64;
    }
    h.finalize().into()
}

/// A streaming request body of `len` pattern bytes, produced 256 KiB at a time, never held
/// whole.
#[derive(Debug)]
pub struct PatternBody {
    offset: u64,
    len: u64,
}

impl PatternBody {
    /// A body of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self { offset: 0, len }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(256 * 1024) as usize;
        let chunk = pattern(self.offset, n);
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// Reads a response body frame by frame, hashing it; returns (length, sha256, trailers).
pub async fn drain(body: Incoming) -> anyhow::Result<(u64, [u8; 32], Option<http::HeaderMap>)> {
    let mut body = body;
    let mut h = Sha256::new();
    let mut len = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("response body broke off")?;
        match frame.into_data() {
            Ok(d) => {
                len += d.len() as u64;
                h.update(&d);
            }
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    Ok((len, h.finalize().into(), trailers))
}

/// The whole body as text.
pub async fn text(body: Incoming) -> anyhow::Result<String> {
    Ok(String::from_utf8(body.collect().await?.to_bytes().to_vec())?)
}

/// One request to the relay's admin listener; returns the status and the body text.
pub async fn admin(
    relay: &TestRelay,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(http::StatusCode, String)> {
    let tcp = TcpStream::connect(relay.admin_addr).await?;
    let (mut send, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send.send_request(req.body(empty())?).await?;
    let status = resp.status();
    Ok((status, text(resp.into_body()).await?))
}

/// POSTs a JSON `body` to the admin listener with bearer `token`; the status and JSON answer.
pub async fn admin_post_json(
    relay: &TestRelay,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    admin_send_json(relay, http::Method::POST, path, token, body).await
}

/// Sends a JSON `body` with `method` to the admin listener with bearer `token`; the status and
/// JSON answer.
pub async fn admin_send_json(
    relay: &TestRelay,
    method: http::Method,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(relay.admin_addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).context("status")?;
    let json = out.split("\r\n\r\n").nth(1).context("body")?;
    Ok((http::StatusCode::from_u16(status)?, serde_json::from_str(json)?))
}

/// `admin` for a JSON answer.
pub async fn admin_json(
    relay: &TestRelay,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let (status, body) = admin(relay, method, path, token).await?;
    let json = serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
    Ok((status, json))
}

/// Sends `request` as raw bytes over TLS to the HTTPS edge (SNI `sni`, HTTP/1.1) and returns
/// the status code and what was read: the answer must start within 5 s, and reading stops
/// when the relay closes or goes quiet after a complete head. For requests no well-behaved
/// client library would send.
pub async fn raw_https(relay: &TestRelay, sni: &str, request: &[u8]) -> anyhow::Result<(u16, String)> {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = tls_connect(relay, sni, &[b"http/1.1"]).await?;
    tls.write_all(request).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let wait = if out.is_empty() { Duration::from_secs(5) } else { Duration::from_millis(300) };
        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) if out.is_empty() => anyhow::bail!("no answer within {wait:?}"),
            Err(_) if out.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(_) => anyhow::bail!("the answer's head stalled: {:?}", String::from_utf8_lossy(&out)),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    Ok((status, text))
}

/// Subscribes to the admin API's SSE stream with `token`; the events (type and JSON data) as
/// they arrive, until `count` have.
pub async fn sse_events(
    relay: &TestRelay,
    token: &str,
    count: usize,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<(String, serde_json::Value)>> {
    sse_events_at(relay, "/api/v1/events", token, count).await
}

/// [`sse_events`] from `path` (`/api/v1/events` with a query).
pub async fn sse_events_at(
    relay: &TestRelay,
    path: &str,
    token: &str,
    count: usize,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<(String, serde_json::Value)>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(relay.admin_addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
        .await?;
    // The server subscribes before it answers, so once the preamble is here no event is missed.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains(": connected") {
        let n = tokio::time::timeout(crate::PATIENCE, s.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "event stream closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < count {
            let Ok(n) = s.read(&mut chunk).await else { return };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Chunked transfer framing aside, events are `event: X\ndata: {...}\n\n` blocks.
            let text = String::from_utf8_lossy(&buf).into_owned();
            let mut events = Vec::new();
            for block in text.split("\n\n") {
                let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(k), Some(d)) = (kind, data) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(d) {
                        events.push((k.to_string(), v));
                    }
                }
            }
            for e in events.into_iter().skip(sent) {
                sent += 1;
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
