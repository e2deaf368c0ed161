//! The small edge defects a black-box probe found (issue #13, D2-D4, D7, D8): each request or
//! client here was mishandled before, and is answered correctly now.

use std::time::Duration;

use http::Method;
use postern_e2e::http::{admin, raw_https};
use postern_e2e::{http_tunnel, origin, tcp, TestAgent, TestRelay, PATIENCE};
use postern_proto::TunnelKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay with one HTTP tunnel `web` on a real origin; returns its host name.
async fn web(relay: &TestRelay) -> anyhow::Result<(TestAgent, String)> {
    let origin = origin::http("web").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("web", origin.port())]));
    agent.connected().await?;
    Ok((agent, format!("web-{}.localhost", origin.port())))
}

fn error_code(answer: &str) -> Option<&str> {
    answer.lines().find_map(|l| l.strip_prefix("postern-error: ")).map(str::trim)
}

#[tokio::test]
async fn d2_two_host_fields_or_a_host_that_contradicts_the_target_get_400() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, host) = web(&relay).await?;

    let two = format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nHost: other-1.localhost\r\nConnection: close\r\n\r\n");
    let (status, answer) = raw_https(&relay, &host, two.as_bytes()).await?;
    assert_eq!((status, error_code(&answer)), (400, Some("bad-host")), "{answer}");

    let port = relay.https_addr.port();
    let contradicting =
        format!("GET https://{host}:{port}/headers HTTP/1.1\r\nHost: other-1.localhost\r\nConnection: close\r\n\r\n");
    let (status, answer) = raw_https(&relay, &host, contradicting.as_bytes()).await?;
    assert_eq!((status, error_code(&answer)), (400, Some("bad-host")), "{answer}");

    // The same absolute-form target with a Host that agrees is served.
    let agreeing =
        format!("GET https://{host}:{port}/headers HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    let (status, answer) = raw_https(&relay, &host, agreeing.as_bytes()).await?;
    assert_eq!(status, 200, "{answer}");
    relay.stop().await
}

#[tokio::test]
async fn d3_an_upgrade_request_with_a_body_is_refused_instead_of_hanging() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let ws = origin::websocket_echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("ws", ws.port())]));
    agent.connected().await?;
    let host = format!("ws-{}.localhost", ws.port());
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\nhello"
    );
    let (status, answer) = raw_https(&relay, &host, req.as_bytes()).await?;
    assert_eq!((status, error_code(&answer)), (400, Some("upgrade-with-body")), "{answer}");
    relay.stop().await
}

#[tokio::test]
async fn d4_a_local_services_postern_reason_header_never_becomes_a_relay_error() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, host) = web(&relay).await?;
    // An upgrade request the local service answers with an ordinary 200 of its own.
    let upgrade = format!(
        "GET /reason HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
    );
    let (status, answer) = raw_https(&relay, &host, upgrade.as_bytes()).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("a good answer"), "{answer}");
    // On ordinary requests the header is dropped too.
    let plain = format!("GET /reason HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, answer) = raw_https(&relay, &host, plain.as_bytes()).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("postern-reason"), "{answer}");
    relay.stop().await
}

#[tokio::test]
async fn d7_an_http_tunnel_cannot_take_a_tcp_tunnels_name() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut tcp_agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = tcp_agent.public_addr().await?;
    // Another client asks for the HTTP name `tcp-<that port>` in both ways it could.
    for (id, port) in [("tcp", public.port()), (&*format!("tcp-{}", public.port()), 8080)] {
        let mut cfg = relay.agent_config("", vec![http_tunnel(id, port)]);
        cfg.client_id = Some(format!("intruder-{port}"));
        let mut intruder = TestAgent::start(cfg);
        let err = intruder.connected().await.expect_err("an HTTP tunnel took a TCP tunnel's name");
        assert!(err.to_string().contains("reserved"), "{err}");
    }
    // The TCP tunnel is untouched and still the only one under its name.
    let name = format!("tcp-{}", public.port());
    assert_eq!(relay.registry.get(&name).map(|t| t.info.kind), Some(TunnelKind::Tcp));
    assert_eq!(postern_e2e::echo_through(public, b"mine").await?, b"mine");
    relay.stop().await
}

#[tokio::test]
async fn d8_options_asterisk_connect_and_the_header_count_limit() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, host) = web(&relay).await?;

    let options = format!("OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, answer) = raw_https(&relay, &host, options.as_bytes()).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("allow: options, get"), "{answer}");

    for target in ["203.0.113.7:443", "[2001:db8::1]:443", &format!("{host}:443")] {
        let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let (status, answer) = raw_https(&relay, &host, connect.as_bytes()).await?;
        assert_eq!((status, error_code(&answer)), (405, Some("method-not-allowed")), "{target}: {answer}");
    }

    // At most 100 header fields (docs/api.md): 100 pass, 101 get 431.
    for (fields, want) in [(100, 200), (101, 431)] {
        let extra: String = (0..fields - 2).map(|i| format!("x-field-{i}: {i}\r\n")).collect();
        let req = format!("GET /headers HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
        let (status, answer) = raw_https(&relay, &host, req.as_bytes()).await?;
        assert_eq!(status, want, "{fields} fields: {answer}");
    }
    relay.stop().await
}

#[tokio::test]
async fn d8_local_port_zero_is_refused() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    for spec in [tcp(0), http_tunnel("zero", 0)] {
        let mut agent = TestAgent::start(relay.agent_config("", vec![spec]));
        let err = agent.connected().await.expect_err("local port 0 was accepted");
        assert!(err.to_string().contains("local port 0"), "{err}");
    }
    assert!(relay.registry.is_empty());
    relay.stop().await
}

#[tokio::test]
async fn d8_the_admin_api_names_its_own_token_and_bounds_a_stalled_body() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| {
        c.admin_token = Some("root".into());
        c.http_header_timeout = Duration::from_millis(500);
    })
    .await?;
    let (status, body) = admin(&relay, Method::GET, "/api/v1/tunnels", None).await?;
    assert_eq!(status, 401);
    assert!(body.contains("--admin-token") && !body.contains("POSTERN_TOKEN"), "{body}");

    // A valid token, a promised body of 100 bytes, and 10 of them.
    let mut s = TcpStream::connect(relay.admin_addr).await?;
    s.write_all(
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer root\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"subject\"",
    )
    .await?;
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut answer)).await??;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    relay.stop().await
}

#[tokio::test]
async fn d8_two_hundred_fifty_six_bytes_without_a_nul_close_a_bore_connection_at_once() -> anyhow::Result<()> {
    let relay = TestRelay::with_bore(|c| c.handshake_timeout = Duration::from_secs(30)).await?;
    let mut s = TcpStream::connect(relay.bore_addr.expect("bore endpoint")).await?;
    s.write_all(&[b'x'; 256]).await?;
    // Closed long before the 30 s handshake timeout, after at most bore's error message.
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink))
        .await
        .map_err(|_| anyhow::anyhow!("the bore endpoint kept waiting for a 257th byte"))??;
    relay.stop().await
}
