//! TCP tunnels end to end: relay, agent and origin on 127.0.0.1, real TLS.

use std::time::Duration;

use anyhow::Context;
use postern_e2e::{echo_through, origin, payload, sha256, tcp, TestAgent, TestRelay, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_64_mib_exactly() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;

    let data = payload(64, 64 * 1024 * 1024);
    let back = tokio::time::timeout(Duration::from_secs(120), echo_through(public, &data)).await??;
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data), "64 MiB came back corrupted");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_stay_separate() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        tasks.spawn(async move {
            // Sizes vary so connections finish at different times and frames interleave.
            let data = payload(1000 + i, 16 * 1024 + (i as usize * 997) % (96 * 1024));
            let back = echo_through(public, &data).await?;
            anyhow::ensure!(back == data, "connection {i} got someone else's bytes or lost some");
            anyhow::Ok(())
        });
    }
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        anyhow::Ok(())
    });
    done.await??;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_reaches_origin_and_answer_comes_back() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let hasher = origin::hash_on_eof().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(hasher.port())]));
    let public = agent.public_addr().await?;

    let data = payload(7, 3 * 1024 * 1024 + 17);
    let mut stream = TcpStream::connect(public).await?;
    stream.write_all(&data).await?;
    // Half-close: we are done sending but still want the answer.
    stream.shutdown().await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await??;
    assert_eq!(answer, sha256(&data).to_vec());
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_half_close_leaves_client_direction_open() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (addr, mut counts) = origin::greet_then_count(b"220 hello\r\n").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(addr.port())]));
    let public = agent.public_addr().await?;

    let mut stream = TcpStream::connect(public).await?;
    let mut greeting = Vec::new();
    // EOF arrives after the greeting: the origin's half-close crossed the tunnel.
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut greeting)).await??;
    assert_eq!(greeting, b"220 hello\r\n");
    // Our direction is still open.
    let data = payload(9, 1024 * 1024);
    stream.write_all(&data).await?;
    stream.shutdown().await?;
    let n = tokio::time::timeout(PATIENCE, counts.recv()).await?.context("origin gone")?;
    assert_eq!(n, data.len() as u64);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_local_port_closes_the_public_connection() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    // A port with nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(closed)]));
    let public = agent.public_addr().await?;

    let mut stream = TcpStream::connect(public).await?;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf)).await?;
    assert!(r.is_err() || buf.is_empty(), "expected the connection to close without data");
    // The tunnel itself stays up for the next connection.
    assert_eq!(relay.registry.len(), 1);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_fails_fast_with_a_clear_reason() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.token = Some("right-token".into())).await?;
    let agent = TestAgent::start(relay.agent_config("wrong-token", vec![tcp(9)]));
    let err = tokio::time::timeout(PATIENCE, agent.task).await??.expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.contains("Unauthorized") && msg.contains("not accepted"), "{msg}");

    let agent = TestAgent::start(relay.agent_config("", vec![tcp(9)]));
    let err = tokio::time::timeout(PATIENCE, agent.task).await??.expect_err("must be refused");
    assert!(err.to_string().contains("requires a token"), "{err}");

    let echo = origin::echo().await?;
    let mut good = TestAgent::start(relay.agent_config("right-token", vec![tcp(echo.port())]));
    let public = good.public_addr().await?;
    assert_eq!(echo_through(public, b"ok").await?, b"ok");
    relay.stop().await
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_dropped_after_the_handshake_timeout() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.handshake_timeout = Duration::from_secs(10)).await?;
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(relay.control_addr).await?;
    let mut buf = [0u8; 16];
    // With the clock paused, time jumps to the relay's deadline as soon as everyone is idle.
    let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await?.unwrap_or(0);
    assert_eq!(n, 0, "relay should close a silent connection");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10), "closed after {waited:?}, before the timeout");
    assert!(waited < Duration::from_secs(60));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stalls_after_tls_is_dropped() -> anyhow::Result<()> {
    use postern_transport::tls::{client_config, server_name, Trust};
    let relay = TestRelay::with_config(|c| c.handshake_timeout = Duration::from_millis(300)).await?;
    let cfg = client_config(&Trust::CaFile(relay.ca.clone()), &[postern_proto::ALPN])?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = TcpStream::connect(relay.control_addr).await?;
    let mut tls = connector.connect(server_name("localhost")?, tcp).await?;
    // TLS is up but we never send a Hello.
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(PATIENCE, tls.read(&mut buf)).await?;
    assert!(matches!(r, Ok(0) | Err(_)), "relay should hang up, got {r:?}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_control_port_is_dropped_and_relay_keeps_serving() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let mut junk = TcpStream::connect(relay.control_addr).await?;
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, junk.read_to_end(&mut buf)).await?;

    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;
    assert_eq!(echo_through(public, b"still here").await?, b"still here");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_loss_closes_public_connections_and_frees_the_port() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;

    let mut stream = TcpStream::connect(public).await?;
    stream.write_all(b"ping").await?;
    let mut four = [0u8; 4];
    stream.read_exact(&mut four).await?;
    assert_eq!(&four, b"ping");

    // Abort the agent task: its connection is dropped without any goodbye, as with a crash.
    agent.task.abort();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await?;
    assert!(r.is_err() || rest.is_empty(), "public connection must close when the agent is gone");
    relay.wait_registry(|r| r.is_empty()).await?;
    let refused = TcpStream::connect(public).await;
    assert!(refused.is_err(), "port {public} should be released");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_shutdown_unregisters() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port()), tcp(echo.port())]));
    let tunnels = agent.connected().await?;
    assert_eq!(tunnels.len(), 2);
    assert_eq!(relay.registry.len(), 2);
    agent.shutdown.cancel();
    tokio::time::timeout(PATIENCE, agent.task).await???;
    relay.wait_registry(|r| r.is_empty()).await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_remote_port_is_granted_or_refused_clearly() -> anyhow::Result<()> {
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let relay = TestRelay::with_config(|c| c.tcp_ports = postern_server::PortRange::Range(free, free)).await?;
    let echo = origin::echo().await?;

    let mut spec = tcp(echo.port());
    spec.remote_port = Some(free);
    let mut agent = TestAgent::start(relay.agent_config("", vec![spec.clone()]));
    assert_eq!(agent.public_addr().await?.port(), free);

    // Outside the range: refused for good.
    let mut outside = spec.clone();
    outside.remote_port = Some(if free > 1024 { free - 1 } else { free + 1 });
    let other = TestAgent::start(relay.agent_config("", vec![outside]));
    let err = tokio::time::timeout(PATIENCE, other.task).await??.expect_err("outside the range");
    assert!(err.to_string().contains("outside"), "{err}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_streams_open_another_connection_and_an_idle_agent_closes_it() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut cfg = relay.agent_config("", vec![tcp(echo.port())]);
    cfg.connections = postern_client::Connections::Auto { max: 2, idle: Duration::from_millis(300) };
    let mut agent = TestAgent::start(cfg);
    let public = agent.public_addr().await?;
    assert_eq!(agent.state.borrow().connected, 1, "auto starts with one connection");

    // Four streams echoing as fast as they can, until the agent has opened its second
    // connection; every byte must still come back intact, whichever connection carried it.
    let busy = tokio_util::sync::CancellationToken::new();
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..4u64 {
        let busy = busy.clone();
        streams.spawn(async move {
            let chunk = payload(40 + i, 1024 * 1024);
            let mut rounds = 0u64;
            while !busy.is_cancelled() {
                let back = echo_through(public, &chunk).await?;
                anyhow::ensure!(sha256(&back) == sha256(&chunk), "stream {i} got corrupted bytes");
                rounds += 1;
            }
            anyhow::Ok(rounds)
        });
    }
    let grown = tokio::time::timeout(PATIENCE, agent.state.wait_for(|s| s.connected == 2)).await;
    busy.cancel();
    while let Some(r) = streams.join_next().await {
        r??;
    }
    grown.context("busy streams never opened a second connection")??;
    let name = format!("tcp-{}", public.port());
    relay.wait_registry(|r| r.get(&name).is_some_and(|t| t.sessions().len() == 2)).await?;

    // Idle: the extra connection goes (it unregisters), the first one stays and still serves.
    tokio::time::timeout(PATIENCE, agent.state.wait_for(|s| s.connected == 1)).await??;
    relay.wait_registry(|r| r.get(&name).is_some_and(|t| t.sessions().len() == 1)).await?;
    let data = payload(99, 256 * 1024);
    assert_eq!(echo_through(public, &data).await?, data, "the tunnel broke when the extra connection left");
    relay.stop().await
}
