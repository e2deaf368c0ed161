//! Single-stream TCP throughput: direct loopback against a postern TCP tunnel, in one run.
//!
//! Usage: `cargo run --release -p postern-bench --bin tcp-throughput -- [MiB] [rounds]`
//! (defaults: 1024 MiB, 3 rounds). Rounds interleave direct and tunnel so machine noise hits
//! both alike; the report gives each round, the medians and the ratio tunnel/direct.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use postern_e2e::{tcp, TestAgent, TestRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A sink: reads to EOF, then writes back the byte count as 8 bytes and closes.
async fn sink() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// Sends `bytes` to `addr`, waits for the sink's count, returns the elapsed time.
async fn push(addr: SocketAddr, bytes: u64) -> anyhow::Result<Duration> {
    let chunk = vec![0x5au8; 256 * 1024];
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(u64::from_be_bytes(count) == bytes, "sink got {} of {bytes} bytes", u64::from_be_bytes(count));
    Ok(elapsed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let bytes = mib * 1024 * 1024;

    let sink = sink().await?;
    let relay = TestRelay::start().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(sink.port())]));
    let public = agent.public_addr().await?;

    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    let (mut direct, mut tunnel) = (Vec::new(), Vec::new());
    println!("single-stream TCP, {mib} MiB per transfer, {rounds} interleaved rounds");
    for round in 1..=rounds {
        let d = gbps(push(sink, bytes).await?);
        let t = gbps(push(public, bytes).await?);
        println!("round {round}: direct {d:.3} GB/s   postern {t:.3} GB/s");
        direct.push(d);
        tunnel.push(t);
    }
    let (d, t) = (median(direct), median(tunnel));
    println!("| path | GB/s (median) | ratio to direct |");
    println!("|---|---|---|");
    println!("| direct loopback | {d:.3} | 1.00 |");
    println!("| postern TCP tunnel (TLS, h2) | {t:.3} | {:.2} |", t / d);
    relay.stop().await
}
