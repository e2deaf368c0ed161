//! N agents, each with one HTTP tunnel, connected to one relay: the time to register them all,
//! the relay's RSS per agent, its CPU while they are idle (heartbeats included), and the time
//! of a request the edge routes under that registry, against the same request with no agents.
//!
//! The agents run in this process (the postern client library, one connection each), so only
//! the relay's figures are measured. The relay needs one file descriptor per agent, and this
//! process one more per agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use postern_client::{AgentConfig, Connections};
use postern_e2e::{http_tunnel, rss_kib_of};
use postern_transport::tls::Trust;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::relay::{cpu_share, Relay};

/// Agents connecting at once (bounded so the relay's handshake timeout is never the limit).
pub const CONNECTING: usize = 256;

/// Median time of `n` requests for `host` on the relay's HTTP port, each on a new connection.
async fn request_p50(http: u16, host: &str, n: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http)).await?;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
        if !answer.starts_with(b"HTTP/1.1 ") {
            bail!("no HTTP answer for {host}");
        }
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[n / 2])
}

/// The config of agent `i` of a run against `relay`: one HTTP tunnel, one connection.
pub fn agent_config(relay: &Relay, i: usize) -> AgentConfig {
    let mut cfg = AgentConfig::new(
        format!("localhost:{}", relay.ctrl),
        String::new(),
        Trust::CaFile(relay.ca()),
        vec![http_tunnel(&format!("a{i}"), 9)],
    );
    cfg.client_id = Some(format!("scale-{i}"));
    cfg.connections = Connections::Fixed(1);
    cfg
}

/// Connects `count` agents to `relay`, at most [`CONNECTING`] at a time, and returns once all
/// are connected. They stay until `shutdown`.
pub async fn connect_all(relay: &Relay, count: usize, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut waiting = tokio::task::JoinSet::new();
    for i in 0..count {
        let (tx, mut rx) = tokio::sync::watch::channel(postern_client::AgentState::default());
        let (cfg, stop) = (agent_config(relay, i), shutdown.clone());
        let permit = gate.clone().acquire_owned().await?;
        tokio::spawn(async move {
            let _ = postern_client::run(cfg, tx, stop).await;
        });
        waiting.spawn(async move {
            let up = tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|s| s.connected >= 1))
                .await
                .is_ok_and(|r| r.is_ok());
            drop(permit);
            anyhow::ensure!(up, "agent {i} never connected");
            anyhow::Ok(())
        });
    }
    while let Some(r) = waiting.join_next().await {
        r??;
    }
    Ok(())
}

/// Runs the measurement with `count` agents.
pub async fn run(binary: &str, count: usize) -> anyhow::Result<()> {
    let relay = Relay::start(binary, count, &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let empty_p50 = request_p50(relay.http, "nobody-1.localhost", 200).await?;
    let rss_before = rss_kib_of(relay.pid)?;
    let cpu_before = cpu_share(relay.pid, Duration::from_secs(5)).await?;

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    connect_all(&relay, count, &shutdown).await?;
    let register = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = rss_kib_of(relay.pid)?;
    let cpu_idle = cpu_share(relay.pid, Duration::from_secs(30)).await?;
    let full_p50 = request_p50(relay.http, "nobody-1.localhost", 200).await?;

    println!("{count} agents, one HTTP tunnel each, on one relay (pid {})", relay.pid);
    println!(
        "registration of all:  {:.2} s ({:.0} per second)",
        register.as_secs_f64(),
        count as f64 / register.as_secs_f64()
    );
    println!(
        "relay RSS:             {:.1} MiB empty, {:.1} MiB with the agents: {:.1} KiB per agent (goal: at most 48)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after - rss_before) as f64 / count as f64
    );
    println!(
        "relay CPU, idle:       {:.2} % of a core empty, {:.2} % with the agents (goal: at most 3 %)",
        cpu_before * 100.0,
        cpu_idle * 100.0
    );
    println!(
        "routed request p50:    {:.0} µs empty, {:.0} µs with the agents (new connection, unknown host)",
        empty_p50.as_secs_f64() * 1e6,
        full_p50.as_secs_f64() * 1e6
    );
    shutdown.cancel();
    Ok(())
}
