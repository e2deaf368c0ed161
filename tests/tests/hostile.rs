//! Hostile input: garbage on every listener, a fake agent speaking broken HTTP/2, SNI games and
//! a 10k-connection flood. After each, the relay still serves the honest tenant.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use http::{Method, StatusCode};
use postern_e2e::http::{admin, get_status_from};
use postern_e2e::{http_tunnel, origin, payload, tcp, TestAgent, TestRelay, PATIENCE};
use postern_proto::{Hello, Message, TunnelKind, TunnelSpec, ALPN};
use postern_transport::framed::{read_message, write_message};
use postern_transport::tls::{client_config, server_name, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// An honest tenant: one HTTP and one TCP tunnel.
struct Honest {
    _agent: TestAgent,
    host: String,
    tcp: std::net::SocketAddr,
}

async fn honest(relay: &TestRelay) -> anyhow::Result<Honest> {
    let web = origin::http("honest").await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("honest", web.port()), tcp(echo.port())]));
    let grants = agent.connected().await?;
    let port: u16 = grants[1].public_url.rsplit(':').next().context("port")?.parse()?;
    Ok(Honest { _agent: agent, host: format!("honest-{}.localhost", web.port()), tcp: ([127, 0, 0, 1], port).into() })
}

/// The honest tenant still works, reached from `source`.
async fn still_serving(relay: &TestRelay, h: &Honest, source: IpAddr) -> anyhow::Result<()> {
    let (status, _, body) = get_status_from(relay, &h.host, &[], source).await?;
    anyhow::ensure!(status == StatusCode::OK, "honest tunnel answered {status}: {body}");
    let mut s = postern_e2e::http::connect_from(h.tcp, source).await?;
    s.write_all(b"still here").await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut back)).await??;
    anyhow::ensure!(back == b"still here", "honest TCP tunnel broken");
    let (status, _) = admin(relay, Method::GET, "/healthz", None).await?;
    anyhow::ensure!(status == StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_every_listener() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| {
        c.handshake_timeout = Duration::from_secs(2);
        c.http_header_timeout = Duration::from_secs(2);
    })
    .await?;
    let h = honest(&relay).await?;
    let targets = [relay.control_addr, relay.http_addr, relay.https_addr, relay.admin_addr, h.tcp];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in targets.into_iter().enumerate() {
        for j in 0..20u64 {
            tasks.spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else { return };
                let junk = payload(i as u64 * 1000 + j, 1 + (j as usize * 3331) % 32_768);
                let _ = s.write_all(&junk).await;
                let _ = s.shutdown().await;
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    still_serving(&relay, &h, [127, 0, 0, 1].into()).await?;
    relay.stop().await
}

/// Opens a session as a fake agent: real TLS and Hello, then returns the raw stream.
async fn fake_agent(relay: &TestRelay) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let cfg = client_config(&Trust::CaFile(relay.ca.clone()), &[ALPN])?;
    let tcp = TcpStream::connect(relay.control_addr).await?;
    let mut tls =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(server_name("localhost")?, tcp).await?;
    let hello = Hello {
        token: String::new(),
        client_id: Some("fake".into()),
        tunnels: vec![TunnelSpec::new(TunnelKind::Tcp, 1)],
        agent: "fake".into(),
        group: None,
    };
    write_message(&mut tls, &Message::Hello(hello)).await?;
    match read_message(&mut tls).await? {
        Message::Welcome(_) => Ok(tls),
        other => anyhow::bail!("expected Welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_agent_with_broken_http2_is_dropped_and_cleaned_up() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let h = honest(&relay).await?;
    let honest_tunnels = relay.registry.len();

    // Garbage instead of the HTTP/2 server preface.
    let mut tls = fake_agent(&relay).await?;
    relay.wait_registry(|r| r.len() == honest_tunnels + 1).await?;
    tls.write_all(&payload(5, 4096)).await?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut sink)).await?;
    relay.wait_registry(|r| r.len() == honest_tunnels).await?;

    // A valid SETTINGS frame, then a frame whose length exceeds every limit, then a DATA frame
    // on stream 0.
    let mut tls = fake_agent(&relay).await?;
    relay.wait_registry(|r| r.len() == honest_tunnels + 1).await?;
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    tls.write_all(&settings).await?;
    tls.write_all(&[0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 0]).await?;
    tls.write_all(&[0, 0, 4, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]).await?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut sink)).await?;
    relay.wait_registry(|r| r.len() == honest_tunnels).await?;

    still_serving(&relay, &h, [127, 0, 0, 1].into()).await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_for_foreign_names_gets_no_certificate_for_them() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let h = honest(&relay).await?;
    let cfg = client_config(&Trust::CaFile(relay.ca.clone()), &[b"http/1.1"])?;
    for addr in [relay.https_addr, relay.control_addr] {
        let tcp = TcpStream::connect(addr).await?;
        let r = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg.clone()))
            .connect(server_name("bank.example")?, tcp)
            .await;
        assert!(r.is_err(), "the relay must not present a certificate valid for a name it does not hold");
    }
    // Host differing from SNI routes by Host (HTTP/2 coalescing), and unknown Hosts get 404.
    let tls = postern_e2e::http::tls_connect(&relay, &h.host, &[b"http/1.1"]).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/").header("host", "nobody-1.localhost").body(postern_e2e::http::empty())?;
    assert_eq!(send.send_request(req).await?.status(), StatusCode::NOT_FOUND);
    still_serving(&relay, &h, [127, 0, 0, 1].into()).await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connection_flood_leaves_other_tenants_served() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| {
        c.max_connections_per_ip = 128;
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await?;
    let h = honest(&relay).await?;

    // 10 000 connections from 127.0.0.1, all held open at once, to the public ports and the
    // control port.
    let targets = [relay.http_addr, relay.https_addr, relay.control_addr, h.tcp];
    let mut held = Vec::with_capacity(10_000);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10_000usize {
        let addr = targets[i % targets.len()];
        set.spawn(async move { TcpStream::connect(addr).await.ok() });
        if set.len() >= 256 {
            if let Some(Ok(Some(s))) = set.join_next().await {
                held.push(s);
            }
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok(Some(s)) = r {
            held.push(s);
        }
    }
    assert!(held.len() > 9_000, "the flood itself failed: {} connections", held.len());

    // The honest tenant's visitors come from another address and are served.
    still_serving(&relay, &h, OTHER).await?;
    let (_, metrics) = admin(&relay, Method::GET, "/metrics", None).await?;
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("postern_public_connections_refused_total{reason=\"per_ip_cap\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(refused > 5_000.0, "per-address cap did not bite: {refused}");
    drop(held);
    still_serving(&relay, &h, [127, 0, 0, 1].into()).await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_lock_the_address_out() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| {
        c.token = Some("right".into());
        c.max_auth_failures = 3;
    })
    .await?;
    for _ in 0..3 {
        let agent = TestAgent::start(relay.agent_config("wrong", vec![tcp(9)]));
        let _ = tokio::time::timeout(PATIENCE, agent.task).await?;
    }
    // Even the right token is turned away from this address now, before TLS.
    let agent = TestAgent::start(relay.agent_config("right", vec![tcp(9)]));
    let mut st = agent.state.clone();
    let s = tokio::time::timeout(PATIENCE, st.wait_for(|s| s.last_error.is_some())).await??.clone();
    assert!(relay.registry.is_empty(), "{s:?}");
    agent.shutdown.cancel();
    let (_, metrics) = admin(&relay, Method::GET, "/metrics", None).await?;
    assert!(metrics.contains("postern_handshake_failures_total{reason=\"locked_out\"}"), "{metrics}");
    relay.stop().await
}
