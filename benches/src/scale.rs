//! Scale on one relay (issue #16, part 4, first increment): N agents, each with one HTTP tunnel,
//! connected to one release relay process, all on loopback. Reports the time to register them
//! all, the relay's RSS per agent, the relay's CPU while they are idle (heartbeats included) and
//! the time of a request routed by the edge under that registry, against the same request with
//! no agents.
//!
//! `cargo build --release -p postern && cargo run --release -p postern-bench --bin scale -- 10000`
//!
//! The agents run in this process (the postern client library, one connection each), so only
//! the relay's figures are measured. The relay needs one file descriptor per agent, and this
//! process one more per agent: keep `ulimit -n` above twice the count.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use postern_client::{AgentConfig, Connections};
use postern_e2e::http_tunnel;
use postern_transport::tls::Trust;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Agents connecting at once (bounded so the relay's handshake timeout is never the limit).
const CONNECTING: usize = 256;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// VmRSS of process `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// CPU time of process `pid` (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

/// Share of one core process `pid` used over `span`.
async fn cpu_share(pid: u32, span: Duration) -> anyhow::Result<f64> {
    let before = cpu_ticks(pid)?;
    tokio::time::sleep(span).await;
    let ticks = cpu_ticks(pid)? - before;
    // Linux reports /proc times in USER_HZ, 100 per second on every supported architecture.
    Ok(ticks as f64 / 100.0 / span.as_secs_f64())
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let binary = std::env::var("POSTERN_BIN").unwrap_or_else(|_| "target/release/postern".into());
    let state = std::env::temp_dir().join(format!("postern-scale-{}", std::process::id()));
    let (ctrl, http) = (free_port()?, free_port()?);
    let mut relay = Command::new(&binary)
        .args(["server", "--control-addr", &format!("127.0.0.1:{ctrl}"), "--http-addr"])
        .arg(format!("127.0.0.1:{http}"))
        .args(["--https-addr", "off", "--admin-addr", "off", "--tcp-ports", "0", "--log", "warn"])
        .args(["--max-agents", &(count + 100).to_string(), "--max-connections-per-ip", "1000000"])
        .arg("--state-dir")
        .arg(&state)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {binary} (build it with cargo build --release -p postern)"))?;
    let pid = relay.id();
    // Watch both outputs for the listening line, and keep draining them so the relay never
    // blocks on a full pipe.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let out = relay.stdout.take().context("relay stdout")?;
    let err = relay.stderr.take().context("relay stderr")?;
    for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
        let seen = seen_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains("agents connect to") {
                    let _ = seen.send(());
                }
            }
        });
    }
    seen_rx.recv_timeout(Duration::from_secs(30)).context("the relay did not start listening")?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let empty_p50 = request_p50(http, "nobody-1.localhost", 200).await?;
    let rss_before = rss_kib(pid)?;
    let cpu_before = cpu_share(pid, Duration::from_secs(5)).await?;

    let ca = state.join("ca.pem");
    let shutdown = CancellationToken::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let started = Instant::now();
    let mut waiting = tokio::task::JoinSet::new();
    for i in 0..count {
        let mut cfg = AgentConfig::new(
            format!("localhost:{ctrl}"),
            String::new(),
            Trust::CaFile(ca.clone()),
            vec![http_tunnel(&format!("a{i}"), 9)],
        );
        cfg.connections = Connections::Fixed(1);
        let (tx, mut rx) = tokio::sync::watch::channel(postern_client::AgentState::default());
        let stop = shutdown.clone();
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
    let register = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = rss_kib(pid)?;
    let cpu_idle = cpu_share(pid, Duration::from_secs(30)).await?;
    let full_p50 = request_p50(http, "nobody-1.localhost", 200).await?;

    println!("{count} agents, one HTTP tunnel each, on one relay (pid {pid})");
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
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
