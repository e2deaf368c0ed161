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
