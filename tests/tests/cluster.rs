//! A cluster of relays on a real Redis: any relay serves any tunnel. Requests, upgrades, gRPC
//! trailers, TCP (with half-close) and bore connections that arrive at a relay without the
//! tunnel's agent are forwarded to one that has it; names, quotas and revocations hold across
//! relays; the admin API answers for the whole cluster.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use postern_e2e::cluster::TestCluster;
use postern_e2e::http::{admin, admin_json, drain, empty, h1, h2, pattern_sha256, text, tls_connect, PatternBody};
use postern_e2e::{echo_through, http_tunnel, origin, payload, sha256, tcp, TestAgent, TestRelay, PATIENCE};
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

fn host(relay: &TestRelay, label: &str) -> String {
    format!("{label}.localhost:{}", relay.https_addr.port())
}

fn hex(h: [u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the metric line starting with `prefix` on `relay`.
async fn metric(relay: &TestRelay, prefix: &str) -> anyhow::Result<f64> {
    let (_, text) = admin(relay, Method::GET, "/metrics", None).await?;
    let line = text.lines().find(|l| l.starts_with(prefix)).with_context(|| format!("no {prefix} in {text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_h2_grpc_and_large_bodies_reach_an_agent_on_another_relay() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let origin = origin::http("main").await?;
    let mut agent = TestAgent::start(a.agent_config("", vec![http_tunnel("app", origin.port())]));
    agent.connected().await?;
    let label = format!("app-{}", origin.port());
    let name = host(b, &label);

    // HTTP/1.1 through relay B: a small answer, then 24 MiB each way, checksummed.
    let mut client = h1(b, &format!("{label}.localhost")).await?;
    let resp = client.send_request(Request::get("/").header("host", &name).body(PatternBody::new(0))?).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp.into_body()).await?, "origin main");
    let size = 24 * MIB;
    client.ready().await?;
    let req = Request::get(format!("/bytes/{size}")).header("host", &name).body(PatternBody::new(0))?;
    let (len, sha, _) = drain(client.send_request(req).await?.into_body()).await?;
    assert_eq!((len, sha), (size, pattern_sha256(size)), "download through a peer corrupted");
    client.ready().await?;
    let req = Request::post("/hash").header("host", &name).body(PatternBody::new(size))?;
    let resp = client.send_request(req).await?;
    assert_eq!(text(resp.into_body()).await?, format!("{size} {}", hex(pattern_sha256(size))));

    // HTTP/2 and gRPC-style trailers through relay B.
    let mut client = h2(b, &format!("{label}.localhost")).await?;
    let req = Request::post(format!("https://{name}/grpc")).header("content-type", "application/grpc").body(empty())?;
    let (_, _, trailers) = drain(client.send_request(req).await?.into_body()).await?;
    let trailers = trailers.context("no trailers through the peer")?;
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));

    // Both relays counted it: out at B, in at A; B's link to A is up.
    assert!(metric(b, "postern_cluster_forwarded_total{direction=\"out\"}").await? >= 4.0);
    assert!(metric(a, "postern_cluster_forwarded_total{direction=\"in\"}").await? >= 4.0);
    assert_eq!(metric(b, "postern_cluster_peer_up{peer=\"r0\"}").await?, 1.0);
    assert_eq!(metric(a, "postern_cluster_store_up").await?, 1.0);
    assert!(metric(a, "postern_cluster_claims_total{result=\"granted\"}").await? >= 1.0);
    assert!(metric(b, "postern_cluster_forward_duration_seconds_count").await? >= 4.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_upgrade_through_another_relay() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let ws = origin::websocket_echo().await?;
    let mut agent = TestAgent::start(a.agent_config("", vec![http_tunnel("ws", ws.port())]));
    agent.connected().await?;
    let label = format!("ws-{}", ws.port());
    let tls = tls_connect(b, &format!("{label}.localhost"), &[b"http/1.1"]).await?;
    let (mut socket, resp) = tokio_tungstenite::client_async(format!("wss://{}/socket", host(b, &label)), tls).await?;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..20 {
        socket.send(Message::text(format!("hello {i}"))).await?;
        let back = tokio::time::timeout(PATIENCE, socket.next()).await?.context("closed")??;
        assert_eq!(back, Message::text(format!("hello {i}")));
    }
    let blob = payload(7, 300_000);
    socket.send(Message::binary(blob.clone())).await?;
    let back = tokio::time::timeout(PATIENCE, socket.next()).await?.context("closed")??;
    assert_eq!(back.into_data().to_vec(), blob);
    socket.close(None).await?;
    Ok(())
}

/// Asks for `/` of tunnel `label` through `relay` until the answer is `want`.
async fn until_status(relay: &TestRelay, label: &str, want: StatusCode) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut client = h1(relay, &format!("{label}.localhost")).await?;
        let req = Request::get("/").header("host", host(relay, label)).body(PatternBody::new(0))?;
        let got = client.send_request(req).await?.status();
        if got == want {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{label} through {}: {got}, never {want}",
            relay.https_addr
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Connects to `addr` until it accepts (a relay binds its copy of a port when it hears of it).
async fn until_listening(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    tokio::time::timeout(PATIENCE, async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .with_context(|| format!("nothing ever listened on {addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_port_works_on_every_relay_with_half_close() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let a = cluster.relay(0);
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(a.agent_config("", vec![tcp(echo.port())]));
    let port = agent.public_addr().await?.port();
    let at_b = std::net::SocketAddr::from(([127, 0, 0, 2], port));
    until_listening(at_b).await?;
    for seed in 0..3u64 {
        let data = payload(seed, 2 << 20);
        let back = echo_through(at_b, &data).await?;
        assert_eq!(sha256(&back), sha256(&data), "bytes changed through relay B's copy of port {port}");
    }
    // The agent's own relay serves it as before.
    let data = payload(9, 1 << 20);
    assert_eq!(sha256(&echo_through(([127, 0, 0, 1], port).into(), &data).await?), sha256(&data));
    // When the tunnel goes, relay B lets go of the port.
    agent.shutdown.cancel();
    let _ = agent.task.await;
    tokio::time::timeout(PATIENCE, async {
        while tokio::net::TcpListener::bind(at_b).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .context("relay B kept the port after the tunnel closed")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_belong_to_one_tenant_across_the_cluster_and_a_client_may_span_relays() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let origin = origin::http("alice").await?;
    let alice = cluster.mint("alice", &["app"]);
    let mut first = TestAgent::start(a.agent_config(&alice, vec![http_tunnel("app", origin.port())]));
    first.connected().await?;

    // Bob, on the other relay, asks for the same name: refused, retryably, and told why.
    let bob = cluster.mint("bob", &["app"]);
    let bob_agent = TestAgent::start(b.agent_config(&bob, vec![http_tunnel("app", origin.port())]));
    let mut state = bob_agent.state.clone();
    let refused = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.last_error.is_some())).await??.clone();
    let why = refused.last_error.unwrap_or_default();
    assert!(why.contains("another relay"), "{why}");
    assert_eq!(refused.sessions, 0);
    bob_agent.shutdown.cancel();

    // The same client may serve it from several relays: two connections, one to each.
    first.shutdown.cancel();
    let _ = first.task.await;
    // (Once the directory has dropped its route: relay B answers 404.)
    until_status(b, &format!("app-{}", origin.port()), StatusCode::NOT_FOUND).await?;
    let mut both = cluster.agent_config(&alice, vec![http_tunnel("app", origin.port())], &[0, 1]);
    both.connections = postern_client::Connections::Fixed(2);
    let mut agent = TestAgent::start(both);
    tokio::time::timeout(PATIENCE, agent.state.wait_for(|s| s.connected == 2)).await??;
    let (_, v) = admin_json(a, Method::GET, "/api/v1/tunnels", Some("root")).await?;
    let tunnels = v["tunnels"].as_array().context("tunnels")?;
    let t = tunnels.iter().find(|t| t["name"] == format!("app-{}", origin.port())).context("tunnel")?;
    assert_eq!(t["relays"], serde_json::json!(["r0", "r1"]), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tunnels_counts_across_the_cluster() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let origin = origin::http("q").await?;
    let token = a.mint_with("carol", &["one", "two"], |c| c.limits.max_tunnels = Some(1));
    let mut first = TestAgent::start(a.agent_config(&token, vec![http_tunnel("one", origin.port())]));
    first.connected().await?;
    let second = TestAgent::start(b.agent_config(&token, vec![http_tunnel("two", origin.port())]));
    let mut state = second.state.clone();
    let refused = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.last_error.is_some())).await??.clone();
    let why = refused.last_error.unwrap_or_default();
    assert!(why.contains("quota (1)") && why.contains("cluster"), "{why}");
    assert!(metric(b, "postern_cluster_claims_total{result=\"quota\"}").await? >= 1.0);
    // The slot comes back when the first tunnel goes.
    first.shutdown.cancel();
    let _ = first.task.await;
    let mut second = second;
    second.connected().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_relay_ends_sessions_on_another_within_a_second() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let echo = origin::echo().await?;
    let jti = "00000000000000ab";
    let token = a.mint_with("dave", &[], |c| c.jti = jti.into());
    let mut agent = TestAgent::start(b.agent_config(&token, vec![tcp(echo.port())]));
    agent.connected().await?;
    let started = std::time::Instant::now();
    let (status, _) = admin(a, Method::DELETE, &format!("/api/v1/tokens/{jti}"), Some("root")).await?;
    assert!(status.is_success(), "{status}");
    b.wait_registry(|r| r.is_empty()).await?;
    let took = started.elapsed();
    eprintln!("revocation crossed relays in {took:?}");
    assert!(took < std::time::Duration::from_secs(1), "revocation took {took:?} to reach relay B");
    // And relay B refuses the token from now on.
    let refused = TestAgent::start(b.agent_config(&token, vec![tcp(echo.port())]));
    let err = tokio::time::timeout(PATIENCE, refused.task).await??.expect_err("a revoked token got in");
    assert!(err.to_string().contains("revoked"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_for_the_whole_cluster() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let origin = origin::http("adm").await?;
    let erin = cluster.mint("erin", &["left", "right"]);
    let mut on_a = TestAgent::start(a.agent_config(&erin, vec![http_tunnel("left", origin.port())]));
    on_a.connected().await?;
    let mut on_b = TestAgent::start(b.agent_config(&erin, vec![http_tunnel("right", origin.port())]));
    on_b.connected().await?;
    let (left, right) = (format!("left-{}", origin.port()), format!("right-{}", origin.port()));

    // The whole cluster, each tunnel with its relay; ?scope=local, this relay alone; a tenant
    // sees its own tunnels wherever they are.
    let (_, v) = admin_json(a, Method::GET, "/api/v1/tunnels", Some("root")).await?;
    let names: Vec<(&str, &serde_json::Value)> = v["tunnels"]
        .as_array()
        .context("tunnels")?
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or(""), &t["relays"]))
        .collect();
    assert_eq!(names, vec![(left.as_str(), &serde_json::json!(["r0"])), (right.as_str(), &serde_json::json!(["r1"]))]);
    let (_, v) = admin_json(a, Method::GET, "/api/v1/tunnels?scope=local", Some("root")).await?;
    assert_eq!(v["tunnels"].as_array().map(Vec::len), Some(1), "{v}");
    let (_, v) = admin_json(b, Method::GET, "/api/v1/tunnels", Some(&erin)).await?;
    assert_eq!(v["tunnels"].as_array().map(Vec::len), Some(2), "{v}");
    let (status, _) = admin_json(b, Method::GET, &format!("/api/v1/tunnels/{left}"), Some(&erin)).await?;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = admin_json(a, Method::GET, "/api/v1/agents", Some("root")).await?;
    let relays: Vec<&str> =
        v["agents"].as_array().context("agents")?.iter().filter_map(|x| x["relay"].as_str()).collect();
    assert_eq!(relays, vec!["r0", "r1"], "{v}");

    // The members.
    let (_, v) = admin_json(b, Method::GET, "/api/v1/relays", Some("root")).await?;
    assert_eq!(v["store"], "up");
    let rows = v["relays"].as_array().context("relays")?;
    assert_eq!(rows.len(), 2, "{v}");
    for (row, id) in rows.iter().zip(["r0", "r1"]) {
        assert_eq!(
            (row["id"].as_str(), row["up"].as_bool(), row["agents"].as_u64()),
            (Some(id), Some(true), Some(1)),
            "{v}"
        );
        assert!(row["tunnels"].as_u64() >= Some(1), "{v}");
        assert!(row["addr"].as_str().is_some_and(|s| s.starts_with("127.0.0.1:")), "{v}");
    }
    let (status, _) = admin(b, Method::GET, "/api/v1/relays", Some(&erin)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "a tenant may not list the relays");

    // Closing a tunnel held on the other relay, then an agent there.
    let (status, body) = admin(a, Method::DELETE, &format!("/api/v1/tunnels/{right}"), Some("root")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.wait_registry(|r| r.get(&right).is_none()).await?;
    let agent_id = on_a.connected().await.ok().and(on_a.state.borrow().session_id.clone()).context("session")?;
    let (status, body) = admin(b, Method::DELETE, &format!("/api/v1/agents/{agent_id}"), Some("root")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    a.wait_registry(|r| r.agent(&agent_id).is_none()).await?;
    let (status, _) = admin(a, Method::DELETE, "/api/v1/tunnels/nothing-1", Some("root")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_from_the_public_are_stripped() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let origin = origin::http("hdr").await?;
    let mut agent = TestAgent::start(a.agent_config("", vec![http_tunnel("hdr", origin.port())]));
    agent.connected().await?;
    let label = format!("hdr-{}", origin.port());
    for relay in [a, b] {
        let mut client = h1(relay, &format!("{label}.localhost")).await?;
        let req = Request::get("/headers")
            .header("host", host(relay, &label))
            .header("postern-fwd", "admin")
            .header("postern-fwd-peer", "203.0.113.9:1")
            .header("postern-fwd-proto", "http")
            .header("postern-tunnel", "tcp-1")
            .body(PatternBody::new(0))?;
        let resp = client.send_request(req).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = text(resp.into_body()).await?;
        assert!(!seen.contains("postern-"), "a postern- header reached the service: {seen}");
        assert!(!seen.contains("203.0.113.9"), "the forged visitor address was believed: {seen}");
        assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
        assert!(seen.contains("x-forwarded-proto: https"), "{seen}");
    }
    // Straight at the peer listener, without the secret, nothing gets in.
    let intruder = postern_server::cluster::peer::PeerTls::new("not the cluster secret at all")?;
    let dialled = intruder.dial(&a.peer_addr.context("peer")?.to_string(), "intruder").await;
    assert!(matches!(dialled, Err(postern_server::cluster::peer::PeerError::WrongSecret)), "{:?}", dialled.map(|_| ()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bore_clients_port_works_through_another_relay() -> anyhow::Result<()> {
    let Some(bin) = postern_e2e::bore_client::skip() else { return Ok(()) };
    let cluster = TestCluster::with_bore(2).await?;
    let a = cluster.relay(0);
    let echo = origin::echo().await?;
    let mut bore = postern_e2e::bore_client::bore_local(&bin, a, echo.port(), None)?;
    let port = postern_e2e::bore_client::public_port(&mut bore).await?;
    let at_b = std::net::SocketAddr::from(([127, 0, 0, 2], port));
    until_listening(at_b).await?;
    for seed in 0..3u64 {
        let data = payload(seed, 1 << 20);
        let back = tokio::time::timeout(PATIENCE, echo_through(at_b, &data)).await??;
        assert_eq!(sha256(&back), sha256(&data), "bytes changed on the way through relay B to the bore client");
    }
    Ok(())
}
