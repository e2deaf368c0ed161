//! The HTTPS edge end to end: real hyper clients over rustls, a real relay and agent, real
//! origins, all on 127.0.0.1.

use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use postern_e2e::http::{drain, empty, h1, h2, pattern_sha256, text, tls_connect, PatternBody};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

fn host(relay: &TestRelay, label: &str) -> String {
    format!("{label}.localhost:{}", relay.https_addr.port())
}

fn hex(h: [u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Relay + one HTTP origin behind tunnel `<id>-<port>`; returns the label.
async fn setup(relay: &TestRelay, id: &str) -> anyhow::Result<(TestAgent, String)> {
    let origin = origin::http("main").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel(id, origin.port())]));
    let tunnels = agent.connected().await?;
    anyhow::ensure!(tunnels[0].public_url.starts_with("https://"), "{:?}", tunnels[0]);
    Ok((agent, format!("{id}-{}", origin.port())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_streams_large_bodies_both_ways() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, label) = setup(&relay, "big").await?;
    let name = host(&relay, &label);
    let size = 48 * MIB;
    let expected = pattern_sha256(size);

    let mut client = h1(&relay, &format!("{label}.localhost")).await?;
    let req = Request::get(format!("/bytes/{size}")).header("host", &name).body(PatternBody::new(0))?;
    let resp = client.send_request(req).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let (len, sha, _) = drain(resp.into_body()).await?;
    assert_eq!((len, sha), (size, expected), "download corrupted");

    // A new connection: the relay closes an HTTP/1.1 connection that waits longer than
    // --http-header-timeout for its next request, and the relay finished writing the download
    // well before this (debug-built, hashing) client finished reading it.
    let mut client = h1(&relay, &format!("{label}.localhost")).await?;
    let req = Request::post("/hash").header("host", &name).body(PatternBody::new(size))?;
    let resp = client.send_request(req).await?;
    assert_eq!(text(resp.into_body()).await?, format!("{size} {}", hex(expected)));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_large_bodies_both_ways() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, label) = setup(&relay, "big2").await?;
    let name = host(&relay, &label);
    let size = 48 * MIB;

    let mut client = h2(&relay, &format!("{label}.localhost")).await?;
    let get = Request::get(format!("https://{name}/bytes/{size}")).body(PatternBody::new(0))?;
    let post = Request::post(format!("https://{name}/hash")).body(PatternBody::new(size))?;
    // Both at once on one connection.
    let (down, up) = tokio::join!(client.send_request(get), client.clone().send_request(post));
    let (len, sha, _) = drain(down?.into_body()).await?;
    assert_eq!((len, sha), (size, pattern_sha256(size)), "download corrupted");
    assert_eq!(text(up?.into_body()).await?, format!("{size} {}", hex(pattern_sha256(size))));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_h2_connection_routes_each_request_by_authority() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let a = origin::http("alpha").await?;
    let b = origin::http("beta").await?;
    let mut agent_a = TestAgent::start(relay.agent_config("", vec![http_tunnel("a", a.port())]));
    let mut agent_b = TestAgent::start(relay.agent_config("", vec![http_tunnel("b", b.port())]));
    agent_a.connected().await?;
    agent_b.connected().await?;

    // One TLS connection, SNI for tunnel a, as a browser would reuse it for b.
    let mut client = h2::<http_body_util::Empty<bytes::Bytes>>(&relay, &format!("a-{}.localhost", a.port())).await?;
    for (label, want) in [(format!("a-{}", a.port()), "origin alpha"), (format!("b-{}", b.port()), "origin beta")] {
        client.ready().await?;
        let req = Request::get(format!("https://{}/", host(&relay, &label))).body(empty())?;
        let resp = client.send_request(req).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(text(resp.into_body()).await?, want, "request for {label} went to the wrong tunnel");
    }
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_tunnel() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let ws = origin::websocket_echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("ws", ws.port())]));
    agent.connected().await?;
    let label = format!("ws-{}", ws.port());

    let tls = tls_connect(&relay, &format!("{label}.localhost"), &[b"http/1.1"]).await?;
    let url = format!("wss://{}/socket", host(&relay, &label));
    let (mut socket, resp) = tokio_tungstenite::client_async(url, tls).await?;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..50 {
        socket.send(Message::text(format!("hello {i}"))).await?;
        let back = tokio::time::timeout(PATIENCE, socket.next()).await?.context("closed")??;
        assert_eq!(back, Message::text(format!("hello {i}")));
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    socket.send(Message::binary(blob.clone())).await?;
    let back = tokio::time::timeout(PATIENCE, socket.next()).await?.context("closed")??;
    assert_eq!(back.into_data().to_vec(), blob);
    // The closing handshake goes through the tunnel too: our Close, the origin's Close, then EOF.
    socket.close(None).await?;
    let mut saw_close = false;
    while let Some(msg) = tokio::time::timeout(PATIENCE, socket.next()).await? {
        match msg {
            Ok(Message::Close(_)) => saw_close = true,
            Ok(other) => anyhow::bail!("unexpected message after Close: {other:?}"),
            Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    assert!(saw_close, "the origin's Close frame did not come back");
    drop(socket);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_arrive() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, label) = setup(&relay, "grpc").await?;
    let mut client = h2(&relay, &format!("{label}.localhost")).await?;
    let req = Request::post(format!("https://{}/grpc", host(&relay, &label)))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(PatternBody::new(5))?;
    let resp = client.send_request(req).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/grpc"[..]));
    let (len, _, trailers) = drain(resp.into_body()).await?;
    assert_eq!(len, 2);
    let trailers = trailers.context("trailers lost in the tunnel")?;
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    assert_eq!(trailers.get("grpc-message").map(|v| v.as_bytes()), Some(&b"done"[..]));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_hop_by_hop_stripped() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, label) = setup(&relay, "hdr").await?;
    let name = host(&relay, &label);
    let mut client = h1(&relay, &format!("{label}.localhost")).await?;
    let req = Request::get("/headers")
        .header("host", &name)
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not arrive")
        .header("postern-tunnel", "spoofed")
        .header("x-end-to-end", "kept")
        .body(empty())?;
    let resp = client.send_request(req).await?;
    let seen = text(resp.into_body()).await?;
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(!seen.contains("6.6.6.6"), "client-supplied X-Forwarded-For must not pass: {seen}");
    assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    assert!(seen.contains(&format!("x-forwarded-host: {name}\n")), "{seen}");
    assert!(seen.contains(&format!("host: {name}\n")), "{seen}");
    assert!(seen.contains("x-end-to-end: kept\n"), "{seen}");
    assert!(!seen.contains("x-hop") && !seen.contains("postern-"), "{seen}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_port_alias_routes_to_the_first_tunnel() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (mut agent, _label) = setup(&relay, "short").await?;
    let grant = agent.connected().await?.remove(0);
    let short = grant.default_url.context("alias URL")?;
    assert_eq!(short, format!("https://short.localhost:{}", relay.https_addr.port()));
    let mut client = h1(&relay, "short.localhost").await?;
    let req = Request::get("/").header("host", host(&relay, "short")).body(empty())?;
    assert_eq!(text(client.send_request(req).await?.into_body()).await?, "origin main");
    assert_eq!(relay.registry.len(), 1, "aliases are not listed as tunnels");
    relay.stop().await
}

/// Sends a raw HTTP/1.1 request on the plain port; returns the status and the whole response.
async fn raw(relay: &TestRelay, request: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(relay.http_addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context(text.clone())?;
    Ok((status, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_unknown_hosts_get_clear_errors() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, label) = setup(&relay, "ok").await?;
    let cases = [
        ("bad_host.localhost", 400, "bad-host"),
        ("a..localhost", 400, "bad-host"),
        ("-x-80.localhost", 400, "bad-host"),
        ("x.localhost:notaport", 400, "bad-host"),
        ("nope-1234.localhost", 404, "tunnel-not-found"),
        ("ok-1.localhost", 404, "tunnel-not-found"),
        ("example.com", 404, "tunnel-not-found"),
        ("a.b.localhost", 404, "tunnel-not-found"),
    ];
    for (host, status, code) in cases {
        let (got, text) = raw(&relay, &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).await?;
        assert_eq!(got, status, "Host {host:?}: {text}");
        assert!(text.contains(&format!("postern-error: {code}")), "Host {host:?}: {text}");
        assert!(text.contains("postern relay") && !text.contains("panicked"), "{text}");
    }
    // No Host at all (HTTP/1.0).
    let (got, _) = raw(&relay, "GET / HTTP/1.0\r\n\r\n").await?;
    assert_eq!(got, 400);
    // The good name still works, in any case and with a trailing dot.
    let upper = format!("{}.LOCALHOST.", label.to_uppercase());
    let (got, text) = raw(&relay, &format!("GET / HTTP/1.1\r\nHost: {upper}\r\nConnection: close\r\n\r\n")).await?;
    assert_eq!(got, 200, "{text}");
    assert!(text.ends_with("origin main"));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_local_port_gives_502_and_gone_agent_gives_503_then_404() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("down", closed)]));
    agent.connected().await?;
    let req = format!("GET / HTTP/1.1\r\nHost: down-{closed}.localhost\r\nConnection: close\r\n\r\n");
    let (status, text) = raw(&relay, &req).await?;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("postern-error: local-refused"), "{text}");

    agent.task.abort();
    relay.wait_registry(|r| r.is_empty()).await?;
    let (status, text) = raw(&relay, &req).await?;
    assert_eq!(status, 404, "{text}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_by_one_client_is_refused_to_another() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (_agent, _label) = setup(&relay, "mine").await?;
    let port: u16 = _label.rsplit('-').next().context("port")?.parse()?;
    let mut thief = TestAgent::start(relay.agent_config("", vec![http_tunnel("mine", port)]));
    let state = tokio::time::timeout(PATIENCE, thief.state.wait_for(|s| s.last_error.is_some())).await??.clone();
    assert!(state.last_error.as_deref().unwrap_or("").contains("in use"), "{state:?}");
    assert_eq!(relay.registry.len(), 1);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_when_configured() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.http_redirect = true).await?;
    let (_agent, label) = setup(&relay, "redir").await?;
    let (status, text) =
        raw(&relay, &format!("GET /p?q=1 HTTP/1.1\r\nHost: {label}.localhost\r\nConnection: close\r\n\r\n")).await?;
    assert_eq!(status, 308, "{text}");
    let want = format!("location: https://{label}.localhost:{}/p?q=1", relay.https_addr.port());
    assert!(text.to_ascii_lowercase().contains(&want), "{text}");
    relay.stop().await
}

#[tokio::test(start_paused = true)]
async fn slowloris_client_is_cut_off() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.http_header_timeout = Duration::from_secs(10)).await?;
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(relay.http_addr).await?;
    // Headers that never finish.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x.localhost\r\nX-Slow: a").await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut buf)).await?;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(120), "cut after {waited:?}");
    // hyper answers 408 or just closes; either way no request was proxied.
    assert!(buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"), "{buf:?}");

    // A TLS client that never sends its ClientHello is cut off too.
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(relay.https_addr).await?;
    let _ = tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut buf)).await?;
    assert!(started.elapsed() >= Duration::from_secs(10) && started.elapsed() < Duration::from_secs(120));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_rejected() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.http_max_header_bytes = 16 * 1024).await?;
    let (_agent, label) = setup(&relay, "big-head").await?;
    let huge = "a".repeat(64 * 1024);
    let mut s = TcpStream::connect(relay.http_addr).await?;
    let req = format!("GET / HTTP/1.1\r\nHost: {label}.localhost\r\nX-Huge: {huge}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await?;
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
    // And the relay still serves.
    let (status, _) =
        raw(&relay, &format!("GET / HTTP/1.1\r\nHost: {label}.localhost\r\nConnection: close\r\n\r\n")).await?;
    assert_eq!(status, 200);
    relay.stop().await
}
