//! Large HTTP transfers through the HTTPS edge: throughput against the origin directly, and the
//! process's memory while 1 GiB moves (it must stay flat: bodies are streamed, never buffered).
//!
//! Usage: `cargo run --release -p postern-bench --bin http-transfer -- [MiB]` (default 1024).
//! Relay, agent, origin and client share this process, so RSS covers all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use postern_e2e::http::{drain, h1, h2, text, PatternBody};
use postern_e2e::{http_tunnel, origin, rss_kib, TestAgent, TestRelay};

/// Samples RSS every 20 ms; returns the peak seen while `f` runs.
async fn peak_rss<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<(u64, Duration)> {
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let p = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            p.fetch_max(rss_kib(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let start = Instant::now();
    f.await?;
    let took = start.elapsed();
    sampler.abort();
    Ok((peak.load(Ordering::Relaxed), took))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let size = mib * 1024 * 1024;
    let origin = origin::http("bench").await?;
    let relay = TestRelay::start().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("bench", origin.port())]));
    agent.connected().await?;
    let label = format!("bench-{}", origin.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());
    let gbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;

    // Direct: plain HTTP/1.1 to the origin.
    let tcp = tokio::net::TcpStream::connect(origin).await?;
    let (mut direct, conn) = http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let (_, d_down) = peak_rss(async {
        let resp = direct.send_request(Request::get(format!("/bytes/{size}")).body(Empty::new())?).await?;
        anyhow::ensure!(drain(resp.into_body()).await?.0 == size);
        Ok(())
    })
    .await?;

    let baseline = rss_kib();
    let mut c2 = h2::<Empty<bytes::Bytes>>(&relay, &format!("{label}.localhost")).await?;
    let (down_peak, t_down) = peak_rss(async {
        let resp = c2.send_request(Request::get(format!("https://{host}/bytes/{size}")).body(Empty::new())?).await?;
        anyhow::ensure!(drain(resp.into_body()).await?.0 == size, "short download");
        Ok(())
    })
    .await?;
    let mut c1 = h1::<PatternBody>(&relay, &format!("{label}.localhost")).await?;
    let (up_peak, t_up) = peak_rss(async {
        let req = Request::post("/hash").header("host", &host).body(PatternBody::new(size))?;
        let answer = text(c1.send_request(req).await?.into_body()).await?;
        anyhow::ensure!(answer.starts_with(&format!("{size} ")), "short upload: {answer}");
        Ok(())
    })
    .await?;

    println!("{mib} MiB through the HTTPS edge (one process: client, relay, agent, origin)");
    println!("| transfer | GB/s | ratio to direct | peak RSS | growth over baseline {} MiB |", baseline / 1024);
    println!("|---|---|---|---|---|");
    println!("| direct download (h1, plain) | {:.3} | 1.00 | - | - |", gbps(d_down));
    println!(
        "| download via tunnel (h2 over TLS) | {:.3} | {:.2} | {} MiB | {} MiB |",
        gbps(t_down),
        gbps(t_down) / gbps(d_down),
        down_peak / 1024,
        down_peak.saturating_sub(baseline) / 1024
    );
    println!(
        "| upload via tunnel (h1 over TLS) | {:.3} | {:.2} | {} MiB | {} MiB |",
        gbps(t_up),
        gbps(t_up) / gbps(d_down),
        up_peak / 1024,
        up_peak.saturating_sub(baseline) / 1024
    );
    relay.stop().await
}
