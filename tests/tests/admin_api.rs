//! The status API, events, webhooks, health and metrics, against a live relay with real
//! clients holding different tokens.

use std::collections::HashMap;

use anyhow::Context;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use postern_e2e::http::{admin, admin_json, empty, h1, sse_events, text};
use postern_e2e::{http_tunnel, origin, serve_status, tcp, TestAgent, TestRelay, PATIENCE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOT: &str = "root-admin-token";

async fn relay() -> anyhow::Result<TestRelay> {
    TestRelay::with_config(|c| c.admin_token = Some(ROOT.into())).await
}

/// An agent for `subject` with one HTTP tunnel `<subject>-<port>`, holding a minted token.
async fn tenant(relay: &TestRelay, subject: &str) -> anyhow::Result<(TestAgent, String, String)> {
    let origin = origin::http("tenant").await?;
    let token = relay.mint(subject, &[&format!("{subject}*")], false);
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![http_tunnel(subject, origin.port())]));
    agent.connected().await?;
    Ok((agent, token, format!("{subject}-{}", origin.port())))
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t[field].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_filtered_by_token_and_kicking_is_scoped() -> anyhow::Result<()> {
    let relay = relay().await?;
    let (_alice, alice_token, alice_tunnel) = tenant(&relay, "alice").await?;
    let (mut bob, _bob_token, bob_tunnel) = tenant(&relay, "bob").await?;

    // Admin sees both; each tenant only its own.
    let (status, all) = admin_json(&relay, Method::GET, "/api/v1/tunnels", Some(ROOT)).await?;
    assert_eq!(status, StatusCode::OK);
    let mut want = vec![alice_tunnel.clone(), bob_tunnel.clone()];
    want.sort();
    assert_eq!(names(&all, "tunnels", "name"), want);
    let (_, mine) = admin_json(&relay, Method::GET, "/api/v1/tunnels", Some(&alice_token)).await?;
    assert_eq!(names(&mine, "tunnels", "name"), vec![alice_tunnel.clone()]);
    let t = &mine["tunnels"][0];
    assert_eq!(t["kind"], "http");
    assert_eq!(t["owner"], "alice");
    assert_eq!(t["client_id"], "alice");
    assert_eq!(t["alias"], "alice");
    assert!(t["public_url"].as_str().unwrap_or("").starts_with(&format!("https://{alice_tunnel}.localhost:")));
    assert!(t["agent_addr"].as_str().unwrap_or("").starts_with("127.0.0.1:"));
    assert!(t["connected_since"].as_str().unwrap_or("").ends_with('Z'));

    // One tunnel by name; another tenant's is invisible.
    let (status, one) =
        admin_json(&relay, Method::GET, &format!("/api/v1/tunnels/{alice_tunnel}"), Some(&alice_token)).await?;
    assert_eq!((status, one["name"].as_str()), (StatusCode::OK, Some(alice_tunnel.as_str())));
    let (status, _) =
        admin_json(&relay, Method::GET, &format!("/api/v1/tunnels/{bob_tunnel}"), Some(&alice_token)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 401 without or with a bad token.
    let (status, body) = admin(&relay, Method::GET, "/api/v1/tunnels", None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = admin(&relay, Method::GET, "/api/v1/tunnels", Some("guess")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = postern_proto::token::TokenKey::from_bytes([9; 32]).sign(&postern_proto::token::Claims {
        jti: "x".into(),
        sub: "alice".into(),
        ids: vec![],
        ports: vec![],
        iat: 0,
        exp: None,
        admin: true,
        limits: Default::default(),
        share: false,
    })?;
    let (status, _) = admin(&relay, Method::GET, "/api/v1/tunnels", Some(&forged)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Alice may not kick Bob's tunnel or agent: 403.
    let (status, _) =
        admin(&relay, Method::DELETE, &format!("/api/v1/tunnels/{bob_tunnel}"), Some(&alice_token)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, agents) = admin_json(&relay, Method::GET, "/api/v1/agents", Some(ROOT)).await?;
    assert_eq!(names(&agents, "agents", "client_id").len(), 2);
    let bob_agent = agents["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["owner"] == "bob"))
        .and_then(|x| x["id"].as_str())
        .context("bob's agent")?
        .to_string();
    let (_, alice_agents) = admin_json(&relay, Method::GET, "/api/v1/agents", Some(&alice_token)).await?;
    assert_eq!(names(&alice_agents, "agents", "owner"), vec!["alice".to_string()]);
    let (status, _) = admin(&relay, Method::DELETE, &format!("/api/v1/agents/{bob_agent}"), Some(&alice_token)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin(&relay, Method::DELETE, "/api/v1/agents/nope", Some(ROOT)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Alice kicks her own tunnel: gone from the registry and from the public edge.
    let (status, _) =
        admin(&relay, Method::DELETE, &format!("/api/v1/tunnels/{alice_tunnel}"), Some(&alice_token)).await?;
    assert_eq!(status, StatusCode::OK);
    relay.wait_registry(|r| r.get(&alice_tunnel).is_none()).await?;
    let mut client = h1(&relay, &format!("{alice_tunnel}.localhost")).await?;
    let req = Request::get("/").header("host", format!("{alice_tunnel}.localhost")).body(empty())?;
    assert_eq!(client.send_request(req).await?.status(), StatusCode::NOT_FOUND);

    // The admin kicks Bob's agent: that session ends (the client reconnects by itself).
    let (status, _) = admin(&relay, Method::DELETE, &format!("/api/v1/agents/{bob_agent}"), Some(ROOT)).await?;
    assert_eq!(status, StatusCode::OK);
    let next = tokio::time::timeout(PATIENCE, bob.state.wait_for(|s| s.sessions >= 2)).await??.clone();
    assert_ne!(next.session_id.as_deref(), Some(bob_agent.as_str()));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_counters_move_with_traffic() -> anyhow::Result<()> {
    let relay = relay().await?;
    let (_alice, token, name) = tenant(&relay, "alice").await?;
    let mut client = h1(&relay, &format!("{name}.localhost")).await?;
    for _ in 0..3 {
        client.ready().await?;
        let req = Request::get("/bytes/10000").header("host", format!("{name}.localhost")).body(empty())?;
        let body = client.send_request(req).await?.into_body().collect().await?.to_bytes();
        assert_eq!(body.len(), 10_000);
    }
    let (_, t) = admin_json(&relay, Method::GET, &format!("/api/v1/tunnels/{name}"), Some(&token)).await?;
    assert_eq!(t["totals"]["requests"], 3, "{t}");
    assert!(t["totals"]["bytes_out"].as_u64().unwrap_or(0) >= 30_000, "{t}");
    assert_eq!(t["active_streams"], 0, "{t}");
    assert!(t["last_activity"].is_string(), "{t}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_up_and_down_in_order_and_filtered() -> anyhow::Result<()> {
    let relay = relay().await?;
    let alice_token = relay.mint("alice", &["alice*"], false);
    let mut admin_events = sse_events(&relay, ROOT, 8).await?;
    let mut alice_events = sse_events(&relay, &alice_token, 4).await?;

    let origin = origin::http("o").await?;
    let bob_token = relay.mint("bob", &["bob*"], false);
    let mut bob = TestAgent::start(relay.agent_config(&bob_token, vec![http_tunnel("bob", origin.port())]));
    bob.connected().await?;
    let mut alice = TestAgent::start(relay.agent_config(&alice_token, vec![http_tunnel("alice", origin.port())]));
    alice.connected().await?;
    bob.shutdown.cancel();
    alice.shutdown.cancel();
    relay.wait_registry(|r| r.is_empty()).await?;

    let mut got = Vec::new();
    for _ in 0..8 {
        let (kind, v) = tokio::time::timeout(PATIENCE, admin_events.recv()).await?.context("stream ended")?;
        let owner = v["tunnel"]["owner"].as_str().or(v["agent"]["owner"].as_str()).unwrap_or("").to_string();
        got.push((owner, kind, v["seq"].as_u64().unwrap_or(0)));
    }
    for who in ["alice", "bob"] {
        let kinds: Vec<&str> = got.iter().filter(|(o, _, _)| o == who).map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["agent_connected", "tunnel_up", "tunnel_down", "agent_disconnected"], "{who}: {got:?}");
    }
    assert!(got.windows(2).all(|w| w[0].2 < w[1].2), "seq must increase: {got:?}");

    // Alice's stream carries only her own events.
    for _ in 0..4 {
        let (_, v) = tokio::time::timeout(PATIENCE, alice_events.recv()).await?.context("stream ended")?;
        let owner = v["tunnel"]["owner"].as_str().or(v["agent"]["owner"].as_str());
        assert_eq!(owner, Some("alice"), "{v}");
    }
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_retried() -> anyhow::Result<()> {
    use hyper::service::service_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    // A real receiver that fails its first delivery.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(HashMap<String, String>, Vec<u8>, u16)>(64);
    let hits = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, hits) = (tx.clone(), hits.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (tx, hits) = (tx.clone(), hits.clone());
                    async move {
                        let headers: HashMap<String, String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        let status = if hits.fetch_add(1, Ordering::SeqCst) == 0 { 500 } else { 200 };
                        let _ = tx.send((headers, body, status)).await;
                        let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });

    let secret = "hook-secret";
    let relay = TestRelay::with_config(|c| {
        c.webhook = Some(format!("http://{addr}/hook"));
        c.webhook_secret = Some(secret.into());
    })
    .await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    agent.connected().await?;

    let mut deliveries = Vec::new();
    while deliveries.len() < 3 {
        deliveries.push(tokio::time::timeout(PATIENCE, rx.recv()).await?.context("receiver gone")?);
    }
    // First attempt failed with 500 and was retried with the same delivery id and body.
    let (h0, b0, s0) = &deliveries[0];
    let (h1_, b1, s1) = &deliveries[1];
    assert_eq!((*s0, *s1), (500, 200));
    assert_eq!(h0["x-postern-delivery"], h1_["x-postern-delivery"]);
    assert_eq!(b0, b1);
    for (headers, body, _) in &deliveries {
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(
            headers["x-postern-signature"],
            postern_server::webhook::sign(secret, body),
            "signature must verify"
        );
        let v: Value = serde_json::from_slice(body)?;
        assert_eq!(v["type"], headers["x-postern-event"]);
    }
    let kinds: Vec<String> = deliveries.iter().skip(1).map(|(h, _, _)| h["x-postern-event"].clone()).collect();
    assert_eq!(kinds, ["agent_connected", "tunnel_up"]);
    relay.stop().await
}

fn scrape(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    Ok(prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?)
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_after_traffic() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.token = Some("shared".into())).await?;
    let (status, before) = admin(&relay, Method::GET, "/metrics", None).await?;
    assert_eq!(status, StatusCode::OK);
    let before = scrape(&before)?;
    assert_eq!(value(&before, "postern_agents", &[]), Some(0.0));
    assert_eq!(value(&before, "postern_bytes_total", &[("direction", "in"), ("kind", "tcp")]), Some(0.0));

    // Traffic: a TCP tunnel and an HTTP tunnel, plus a refused agent.
    let echo = origin::echo().await?;
    let web = origin::http("m").await?;
    let mut agent =
        TestAgent::start(relay.agent_config("shared", vec![tcp(echo.port()), http_tunnel("m", web.port())]));
    let public = agent.public_addr().await?;
    let mut s = TcpStream::connect(public).await?;
    s.write_all(&[7u8; 5000]).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    assert_eq!(back.len(), 5000);
    let mut client = h1(&relay, &format!("m-{}.localhost", web.port())).await?;
    let resp = client
        .send_request(Request::get("/").header("host", format!("m-{}.localhost", web.port())).body(empty())?)
        .await?;
    assert_eq!(text(resp.into_body()).await?, "origin m");
    let bad = TestAgent::start(relay.agent_config("wrong", vec![tcp(echo.port())]));
    let _ = tokio::time::timeout(PATIENCE, bad.task).await?;

    let (_, after) = admin(&relay, Method::GET, "/metrics", None).await?;
    let after = scrape(&after)?;
    assert_eq!(value(&after, "postern_agents", &[]), Some(1.0));
    assert_eq!(value(&after, "postern_tunnels", &[("kind", "tcp")]), Some(1.0));
    assert_eq!(value(&after, "postern_tunnels", &[("kind", "http")]), Some(1.0));
    assert_eq!(value(&after, "postern_bytes_total", &[("direction", "in"), ("kind", "tcp")]), Some(5000.0));
    assert_eq!(value(&after, "postern_bytes_total", &[("direction", "out"), ("kind", "tcp")]), Some(5000.0));
    assert_eq!(value(&after, "postern_http_requests_total", &[("kind", "http"), ("class", "2xx")]), Some(1.0));
    assert!(value(&after, "postern_http_request_duration_seconds_count", &[("kind", "http")]).unwrap_or(0.0) >= 1.0);
    assert_eq!(value(&after, "postern_streams_total", &[("kind", "tcp")]), Some(1.0));
    assert_eq!(value(&after, "postern_handshake_failures_total", &[("reason", "invalid")]), Some(1.0));
    // Per-tunnel series are off by default.
    assert!(after.samples.iter().all(|s| !s.metric.starts_with("postern_tunnel_")));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tunnel_series_come_and_go_with_their_tunnel() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.metrics_per_tunnel = true).await?;
    let echo = origin::echo().await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;
    let name = format!("tcp-{}", public.port());
    let mut s = TcpStream::connect(public).await?;
    s.write_all(b"12345").await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    let (_, m) = admin(&relay, Method::GET, "/metrics", None).await?;
    let m = scrape(&m)?;
    assert_eq!(value(&m, "postern_tunnel_bytes_total", &[("tunnel", &name), ("direction", "in")]), Some(5.0));
    agent.shutdown.cancel();
    relay.wait_registry(|r| r.is_empty()).await?;
    let (_, m) = admin(&relay, Method::GET, "/metrics", None).await?;
    assert!(!m.contains(&name), "series of a removed tunnel must go: {m}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_openapi() -> anyhow::Result<()> {
    let relay = relay().await?;
    let (status, v) = admin_json(&relay, Method::GET, "/healthz", None).await?;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, v) = admin_json(&relay, Method::GET, "/readyz", None).await?;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (status, spec) = admin_json(&relay, Method::GET, "/api/v1/openapi.json", None).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.0.3");
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/tunnels",
        "/api/v1/tunnels/{name}",
        "/api/v1/tunnels/{name}/history",
        "/api/v1/tunnels/{name}/requests",
        "/api/v1/tunnels/{name}/requests/{id}",
        "/api/v1/tunnels/{name}/requests/{id}/replay",
        "/api/v1/tunnels/{name}/inspect",
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/events",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    let (status, _) = admin(&relay, Method::GET, "/nope", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin(&relay, Method::POST, "/api/v1/tunnels", Some(ROOT)).await?;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    relay.stop().await
}

/// Waits for `agent` to connect; the public address of its first (TCP) tunnel.
async fn public_addr(agent: &postern_client::Agent) -> anyhow::Result<std::net::SocketAddr> {
    let mut state = agent.state();
    let s = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.phase.as_str() == "connected")).await??.clone();
    let url = &s.tunnels.first().context("no tunnel")?.public_url;
    Ok(std::net::SocketAddr::from(([127, 0, 0, 1], url.rsplit(':').next().context("port")?.parse()?)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_status_endpoint_reports_state_urls_and_counters() -> anyhow::Result<()> {
    let relay = relay().await?;
    let echo = origin::echo().await?;
    let agent = postern_client::Agent::new(relay.agent_config("", vec![tcp(echo.port())]));
    agent.start();
    let public = public_addr(&agent).await?;
    let (status_addr, stop) = serve_status(&agent, None).await?;

    let mut s = TcpStream::connect(public).await?;
    s.write_all(&[1u8; 1234]).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;

    let tcp = TcpStream::connect(status_addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(Request::get("/").header("host", "status").body(empty())?).await?;
    let v: Value = serde_json::from_str(&text(resp.into_body()).await?)?;
    assert_eq!(v["state"], "connected");
    assert_eq!(v["tunnels"][0]["public_url"], format!("tcp://localhost:{}", public.port()));
    assert_eq!(v["counters"]["streams"], 1);
    assert_eq!(v["counters"]["bytes_in"], 1234);
    assert_eq!(v["counters"]["bytes_out"], 1234);

    // Probes: alive and ready while connected; not ready once the relay is gone.
    use postern_transport::probe;
    let ready = probe::get(status_addr, "/readyz", PATIENCE).await?;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(probe::get(status_addr, "/healthz", PATIENCE).await?.status, StatusCode::OK);
    relay.stop().await?;
    let mut state = agent.state();
    tokio::time::timeout(PATIENCE, state.wait_for(|s| s.phase.as_str() != "connected")).await??;
    let ready = probe::get(status_addr, "/readyz", PATIENCE).await?;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&ready.body)?;
    assert_ne!(v["state"], "connected");
    assert_eq!(probe::get(status_addr, "/healthz", PATIENCE).await?.status, StatusCode::OK);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_control_api_names_the_state_and_wants_its_token() -> anyhow::Result<()> {
    use postern_transport::probe;
    let relay = relay().await?;
    let echo = origin::echo().await?;
    let agent = postern_client::Agent::new(relay.agent_config("", vec![tcp(echo.port())]));
    agent.start();
    let public = public_addr(&agent).await?;
    let (addr, stop) = serve_status(&agent, Some("s3cret")).await?;

    let get = |bearer: Option<&'static str>| async move {
        let tcp = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = Request::get("/api/v1/status").header("host", "status");
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let resp = send.send_request(req.body(empty())?).await?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        anyhow::Ok((status, headers, text(resp.into_body()).await?))
    };
    let (status, headers, _) = get(None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers.get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    assert_eq!(get(Some("s3cre")).await?.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some("s3cret!")).await?.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(Some("s3cret")).await?;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!((v["state"].as_str(), v["phase"].as_str()), (Some("Connected"), Some("connected")), "{v}");
    assert_eq!(v["public_urls"], serde_json::json!([format!("tcp://localhost:{}", public.port())]));
    assert_eq!(v["last_error"], Value::Null);
    // The probes stay open to a health checker without the token.
    assert_eq!(probe::get(addr, "/healthz", PATIENCE).await?.status, StatusCode::OK);
    assert_eq!(probe::get(addr, "/readyz", PATIENCE).await?.status, StatusCode::OK);

    // Without its relay: Reconnecting, with the reason.
    relay.stop().await?;
    let mut state = agent.state();
    tokio::time::timeout(PATIENCE, state.wait_for(|s| s.phase.as_str() == "reconnecting" && s.last_error.is_some()))
        .await??;
    let v: Value = serde_json::from_str(&get(Some("s3cret")).await?.2)?;
    assert_eq!(v["state"], "Reconnecting", "{v}");
    assert!(v["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_takes_a_token_from_a_query_string_or_a_cookie() -> anyhow::Result<()> {
    // Enough failures allowed that the lockout (429) does not answer first.
    let relay = TestRelay::with_config(|c| {
        c.admin_token = Some(ROOT.into());
        c.max_auth_failures = 1000;
    })
    .await?;
    for path in ["/api/v1/tunnels", "/api/v1/events", "/api/v1/tokens"] {
        for query in ["token", "access_token", "bearer", "auth"] {
            let (status, _) = admin(&relay, Method::GET, &format!("{path}?{query}={ROOT}"), None).await?;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}?{query}=");
        }
        let mut s = TcpStream::connect(relay.admin_addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nCookie: token={ROOT}; postern.token={ROOT}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        assert!(out.starts_with("HTTP/1.1 401"), "{path} with a cookie: {out}");
    }
    relay.stop().await
}
