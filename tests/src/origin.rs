//! Local services for tunnels to reach.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// An echo server: every connection gets its bytes back; on EOF it half-closes in turn.
pub async fn echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

/// Reads until EOF, then answers with the SHA-256 of what it read and closes.
/// Proves the client's half-close reached the origin and the answer still came back.
pub async fn hash_on_eof() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => hasher.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = stream.write_all(&hasher.finalize()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Speaks first (`greeting`), half-closes its write side, then counts what the client sends
/// until EOF and reports the count on the returned channel.
pub async fn greet_then_count(greeting: &'static [u8]) -> anyhow::Result<(SocketAddr, mpsc::Receiver<u64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                if w.write_all(greeting).await.is_err() || w.shutdown().await.is_err() {
                    return;
                }
                let mut sink = tokio::io::sink();
                if let Ok(n) = tokio::io::copy(&mut r, &mut sink).await {
                    let _ = tx.send(n).await;
                }
            });
        }
    });
    Ok((addr, rx))
}

/// A real HTTP origin (HTTP/1.1 and h2c) named `name`:
///
/// - `GET /bytes/N`: N pattern bytes, streamed;
/// - `POST /hash`: `<length> <sha256 hex>` of the request body, read as a stream;
/// - `GET /headers`: the request headers, one `name: value` per line;
/// - `POST /grpc`: `ok` with trailers `grpc-status: 0` and `grpc-message: done`;
/// - `GET /reason`: `200`, with a `postern-reason` header of its own (which must never pass
///   for the agent's);
/// - anything else: `origin <name>`.
pub async fn http(name: &'static str) -> anyhow::Result<SocketAddr> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |req| http_route(req, name));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // More header fields than the relay lets through, so its limit is what tests see.
                builder.http1().max_headers(200);
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

type OriginBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

async fn http_route(
    req: hyper::Request<hyper::body::Incoming>,
    name: &'static str,
) -> Result<hyper::Response<OriginBody>, hyper::Error> {
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;

    let full = |s: String| Full::new(bytes::Bytes::from(s)).boxed();
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        let chunks = (0..n.div_ceil(256 * 1024)).map(move |i| {
            let off = i * 256 * 1024;
            let len = (n - off).min(256 * 1024) as usize;
            Ok::<_, std::convert::Infallible>(Frame::data(crate::http::pattern(off, len)))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(hyper::Response::new(BodyExt::boxed(body)));
    }
    match path.as_str() {
        "/hash" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame?.into_data() {
                    len += d.len() as u64;
                    h.update(&d);
                }
            }
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            Ok(hyper::Response::new(full(format!("{len} {hex}"))))
        }
        "/headers" => {
            let text: String =
                req.headers().iter().map(|(k, v)| format!("{}: {}\n", k, v.to_str().unwrap_or("<binary>"))).collect();
            Ok(hyper::Response::new(full(text)))
        }
        "/reason" => {
            let mut resp = hyper::Response::new(full("a good answer".into()));
            resp.headers_mut().insert("postern-reason", http::HeaderValue::from_static("set by the local service"));
            Ok(resp)
        }
        "/grpc" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("done"));
            let frames = vec![
                Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(b"ok"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            let mut resp = hyper::Response::new(BodyExt::boxed(body));
            resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
            Ok(resp)
        }
        _ => Ok(hyper::Response::new(full(format!("origin {name}")))),
    }
}

/// A WebSocket echo server (tokio-tungstenite): every text or binary message comes back.
pub async fn websocket_echo() -> anyhow::Result<SocketAddr> {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Writes as fast as the peer accepts, forever, counting the bytes written: shows how much a
/// stalled reader lets pile up along the path.
pub async fn firehose() -> anyhow::Result<(SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let written = std::sync::Arc::new(AtomicU64::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let w = w.clone();
            tokio::spawn(async move {
                let chunk = vec![0xabu8; 64 * 1024];
                while let Ok(n) = stream.write(&chunk).await {
                    if n == 0 {
                        return;
                    }
                    w.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((addr, written))
}
