//! Soak: 100 000 short TCP connections and 1 000 WebSocket sessions through a relay, then file
//! descriptors and memory must come back to baseline. Ignored by default (it takes a while);
//! run it with `tests/soak.sh`, which prints the figures.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use postern_e2e::http::tls_connect;
use postern_e2e::{http_tunnel, open_fds, origin, rss_kib, tcp, TestAgent, TestRelay, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Waits (bounded) until the fd count settles back at or below `target`.
async fn settle(target: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = open_fds();
        if n <= target || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: run with tests/soak.sh"]
async fn soak_100k_connections_and_1k_websockets() -> anyhow::Result<()> {
    let connections: usize = std::env::var("SOAK_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let sockets: usize = std::env::var("SOAK_WEBSOCKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let relay = TestRelay::with_config(|c| c.max_connections_per_ip = 100_000).await?;
    let echo = origin::echo().await?;
    let ws = origin::websocket_echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port()), http_tunnel("ws", ws.port())]));
    let public = agent.public_addr().await?;
    let host = format!("ws-{}.localhost", ws.port());

    // Warm up allocator pools and the connection machinery, then take the baseline.
    for _ in 0..200 {
        let mut s = TcpStream::connect(public).await?;
        s.write_all(b"warm").await?;
        s.shutdown().await?;
        let mut b = Vec::new();
        s.read_to_end(&mut b).await?;
    }
    let (fd0, rss0) = (settle(0).await.max(open_fds()), rss_kib());
    let started = Instant::now();

    let mut set = tokio::task::JoinSet::new();
    let mut done = 0usize;
    for i in 0..connections {
        set.spawn(async move {
            let mut s = TcpStream::connect(public).await?;
            let msg = (i as u64).to_le_bytes();
            s.write_all(&msg).await?;
            s.shutdown().await?;
            let mut b = Vec::new();
            tokio::time::timeout(PATIENCE, s.read_to_end(&mut b)).await??;
            anyhow::ensure!(b == msg, "connection {i} got wrong bytes");
            anyhow::Ok(())
        });
        while set.len() >= 128 {
            set.join_next().await.expect("task")??;
            done += 1;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
        done += 1;
    }
    assert_eq!(done, connections);
    let tcp_secs = started.elapsed().as_secs_f64();
    let rss_after_tcp = rss_kib();

    // 1 000 WebSocket sessions open at once, each exchanging 10 messages.
    let started = Instant::now();
    let mut open = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let tls = tls_connect(&relay, &host, &[b"http/1.1"]).await?;
        let (socket, _) = tokio_tungstenite::client_async(format!("wss://{host}/"), tls).await?;
        open.push(socket);
    }
    let peak_ws_fds = open_fds();
    let rss_ws_open = rss_kib();
    for (i, socket) in open.iter_mut().enumerate() {
        for j in 0..10 {
            let text = format!("{i}:{j}");
            socket.send(Message::text(text.clone())).await?;
            let back = socket.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
            anyhow::ensure!(back == Message::text(text), "websocket {i} mixed up");
        }
    }
    for mut socket in open {
        socket.close(None).await?;
    }
    let ws_secs = started.elapsed().as_secs_f64();

    let fd_end = settle(fd0 + 8).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = rss_kib();
    println!("SOAK {connections} TCP connections in {tcp_secs:.1}s ({:.0}/s)", connections as f64 / tcp_secs);
    println!("SOAK {sockets} WebSocket sessions x 10 messages in {ws_secs:.1}s; {peak_ws_fds} fds while open");
    println!("SOAK fds: baseline {fd0}, after {fd_end}");
    println!(
        "SOAK RSS KiB: baseline {rss0}, after TCP {rss_after_tcp}, with 1k websockets open {rss_ws_open}, end {rss_end}"
    );
    assert!(fd_end <= fd0 + 8, "file descriptors leaked: {fd0} -> {fd_end}");
    // Memory returns near baseline: allow allocator slack, but not growth with the load.
    assert!(rss_end < rss0 + 64 * 1024, "memory did not come back: {rss0} KiB -> {rss_end} KiB");
    relay.stop().await
}
