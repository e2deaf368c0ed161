//! Multi-tenant security: scoped tokens, revocation, expiry, leases, quotas, access control.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{Method, StatusCode};
use postern_e2e::http::{admin_json, connect_from, get_status_from};
use postern_e2e::{http_tunnel, origin, tcp, TestAgent, TestRelay, PATIENCE};
use postern_proto::access::{hash_secret, Access, HeaderRule};
use postern_proto::token::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOT: &str = "root";
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn failure(agent: TestAgent) -> anyhow::Result<String> {
    let r = tokio::time::timeout(PATIENCE, agent.task).await??;
    Ok(r.err().context("the agent should have stopped with an error")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_claim_another_tenants_names() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.token = Some("shared-off".into())).await?;
    let web = origin::http("w").await?;
    let alice = relay.mint("alice", &["alice", "alice-*"], false);
    let err = failure(TestAgent::start(relay.agent_config(&alice, vec![http_tunnel("bob", web.port())]))).await?;
    assert!(err.contains("does not allow the tunnel id \"bob\""), "{err}");
    // Prefix tricks do not help either.
    let err = failure(TestAgent::start(relay.agent_config(&alice, vec![http_tunnel("alicebob", web.port())]))).await?;
    assert!(err.contains("does not allow"), "{err}");
    // Without a credential at all, a relay with a token is closed.
    let err = failure(TestAgent::start(relay.agent_config("", vec![tcp(web.port())]))).await?;
    assert!(err.contains("requires a token"), "{err}");
    assert!(relay.registry.is_empty());
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_stay_leased_to_their_owner_after_a_disconnect() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let web = origin::http("w").await?;
    let alice = relay.mint("alice", &["shared*"], false);
    let bob = relay.mint("bob", &["shared*"], false);
    let mut a = TestAgent::start(relay.agent_config(&alice, vec![http_tunnel("shared", web.port()), tcp(web.port())]));
    let grants = a.connected().await?;
    let tcp_url = grants[1].public_url.clone();
    a.task.abort();
    relay.wait_registry(|r| r.is_empty()).await?;

    // Bob cannot take the name while Alice's lease runs.
    let thief = TestAgent::start(relay.agent_config(&bob, vec![http_tunnel("shared", web.port())]));
    let mut state = thief.state.clone();
    let s = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.last_error.is_some())).await??.clone();
    assert!(s.last_error.as_deref().unwrap_or("").contains("reserved for another client"), "{s:?}");
    thief.shutdown.cancel();

    // Alice comes back to the same URLs, the TCP port included.
    let mut again =
        TestAgent::start(relay.agent_config(&alice, vec![http_tunnel("shared", web.port()), tcp(web.port())]));
    let grants = again.connected().await?;
    assert_eq!(grants[0].name, format!("shared-{}", web.port()));
    assert_eq!(grants[1].public_url, tcp_url, "a reconnect keeps its TCP port");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_through_the_api_drops_the_session_within_a_second() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.admin_token = Some(ROOT.into())).await?;
    let echo = origin::echo().await?;
    let (status, minted) = {
        let body = r#"{"subject":"ws-9","ids":["ws-9*"],"ttl_secs":3600}"#;
        post_json(&relay, "/api/v1/tokens", body).await?
    };
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().context("token")?.to_string();
    let id = minted["id"].as_str().context("id")?.to_string();
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;

    let started = Instant::now();
    let (status, v) = admin_json(&relay, Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(ROOT)).await?;
    assert_eq!((status, v["disconnected"].as_u64()), (StatusCode::OK, Some(1)));
    relay.wait_registry(|r| r.is_empty()).await?;
    assert!(started.elapsed() < Duration::from_secs(1), "session still up after {:?}", started.elapsed());
    assert!(TcpStream::connect(public).await.is_err() || relay.registry.is_empty());
    // Its reconnect is refused for good, and the API refuses the token too.
    let err = failure(agent).await?;
    assert!(err.contains("revoked"), "{err}");
    let (status, _) = admin_json(&relay, Method::GET, "/api/v1/tunnels", Some(&token)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Persisted.
    let on_disk = std::fs::read_to_string(relay.state_dir.join("revoked.json"))?;
    assert!(on_disk.contains(&id));
    relay.stop().await
}

async fn post_json(relay: &TestRelay, path: &str, body: &str) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    postern_e2e::http::admin_post_json(relay, path, ROOT, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_from_the_cli_file_drops_the_session_within_a_second() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.revocation_poll_interval = Duration::from_millis(100)).await?;
    let echo = origin::echo().await?;
    let token = relay.mint("ws-1", &[], false);
    let jti = postern_proto::token::peek(&token)?.jti;
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    agent.connected().await?;
    // What `postern token revoke ID --state-dir` does, from another "process".
    let started = Instant::now();
    postern_server::revocation::Revocations::load(&relay.state_dir)?.revoke(&jti)?;
    relay.wait_registry(|r| r.is_empty()).await?;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(failure(agent).await?.contains("revoked"));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let token = relay.mint_with("ws-1", &[], |c| c.exp = Some(1_000));
    let err = failure(TestAgent::start(relay.agent_config(&token, vec![tcp(9)]))).await?;
    assert!(err.contains("expired"), "{err}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_quota_holds_across_sessions() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let token = relay.mint_with("ws-1", &[], |c| c.limits = Limits { max_tunnels: Some(1), ..Limits::default() });
    let err = failure(TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port()), tcp(echo.port())]))).await?;
    assert!(err.contains("your token allows 1"), "{err}");
    let mut first = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    first.connected().await?;
    let second = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    let mut st = second.state.clone();
    let s = tokio::time::timeout(PATIENCE, st.wait_for(|s| s.last_error.is_some())).await??.clone();
    assert!(s.last_error.as_deref().unwrap_or("").contains("tunnel quota"), "{s:?}");
    assert_eq!(relay.registry.len(), 1);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_quota_holds_under_load() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let token = relay.mint_with("ws-1", &[], |c| c.limits = Limits { max_streams: Some(5), ..Limits::default() });
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;
    // 20 connections held open at once; only 5 may be served.
    let mut conns = Vec::new();
    for _ in 0..20 {
        conns.push(TcpStream::connect(public).await?);
    }
    let mut served = 0;
    for c in &mut conns {
        let _ = c.write_all(b"x").await;
        let mut b = [0u8; 1];
        if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await {
            served += 1;
        }
    }
    assert_eq!(served, 5, "exactly the quota may be served");
    drop(conns);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_quota_answers_429() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let web = origin::http("w").await?;
    let token =
        relay.mint_with("rate", &["rate"], |c| c.limits = Limits { requests_per_sec: Some(1), ..Limits::default() });
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![http_tunnel("rate", web.port())]));
    agent.connected().await?;
    let host = format!("rate-{}.localhost", web.port());
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (status, headers, _) = get_status_from(&relay, &host, &[], LOOPBACK).await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
            assert_eq!(headers.get("postern-error").map(|v| v.as_bytes()), Some(&b"quota-exceeded"[..]));
        }
        codes.push(status.as_u16());
    }
    assert_eq!(codes[0], 200);
    assert!(codes.iter().filter(|c| **c == 429).count() >= 3, "{codes:?}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_quota_paces_a_transfer() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let rate = 512 * 1024;
    let token = relay.mint_with("bw", &[], |c| c.limits = Limits { bandwidth: Some(rate), ..Limits::default() });
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;
    let data = postern_e2e::payload(1, 3 * rate as usize / 2 + rate as usize);
    let started = Instant::now();
    let back = postern_e2e::echo_through(public, &data).await?;
    assert_eq!(back, data, "paced bytes must still be exact");
    // 2.5 x rate with one second of burst needs at least 1.5 s; allow for rounding.
    assert!(started.elapsed() >= Duration::from_millis(1400), "not paced: {:?}", started.elapsed());
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_access_rules_basic_auth_header_and_ip() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let web = origin::http("w").await?;
    let basic = Access { basic_auth: vec![format!("alice:{}", hash_secret("wonder", b"salt1"))], ..Access::default() };
    let header = Access {
        header: Some(HeaderRule { name: "authorization".into(), value: hash_secret("Bearer tok-1", b"salt2") }),
        ..Access::default()
    };
    let ips = Access { allow_ips: vec!["127.0.0.2/32".into()], ..Access::default() };
    let mut specs = Vec::new();
    for (id, access) in [("basic", basic), ("hdr", header), ("ips", ips)] {
        let mut s = http_tunnel(id, web.port());
        s.access = Some(access);
        specs.push(s);
    }
    let mut agent = TestAgent::start(relay.agent_config("", specs));
    agent.connected().await?;
    let h = |id: &str| format!("{id}-{}.localhost", web.port());

    let (status, headers, _) = get_status_from(&relay, &h("basic"), &[], LOOPBACK).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("www-authenticate").is_some_and(|v| v.as_bytes().starts_with(b"Basic")));
    let wrong = "Basic YWxpY2U6bm9wZQ=="; // alice:nope
    assert_eq!(get_status_from(&relay, &h("basic"), &[("authorization", wrong)], LOOPBACK).await?.0, 401);
    let right = "Basic YWxpY2U6d29uZGVy"; // alice:wonder
    let (status, _, seen) = get_status_from(&relay, &h("basic"), &[("authorization", right)], LOOPBACK).await?;
    assert_eq!(status, StatusCode::OK, "{seen}");

    let (status, headers, _) = get_status_from(&relay, &h("hdr"), &[], LOOPBACK).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("www-authenticate").is_none());
    assert_eq!(get_status_from(&relay, &h("hdr"), &[("authorization", "Bearer tok-2")], LOOPBACK).await?.0, 401);
    assert_eq!(get_status_from(&relay, &h("hdr"), &[("authorization", "Bearer tok-1")], LOOPBACK).await?.0, 200);

    assert_eq!(get_status_from(&relay, &h("ips"), &[], LOOPBACK).await?.0, StatusCode::FORBIDDEN);
    assert_eq!(get_status_from(&relay, &h("ips"), &[], OTHER).await?.0, StatusCode::OK);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tunnel_ip_allowlist() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let mut spec = tcp(echo.port());
    spec.access = Some(Access { allow_ips: vec!["127.0.0.2".into()], ..Access::default() });
    let mut agent = TestAgent::start(relay.agent_config("", vec![spec]));
    let public = agent.public_addr().await?;
    let mut denied = connect_from(public, LOOPBACK).await?;
    let _ = denied.write_all(b"hi").await;
    let mut b = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, denied.read_to_end(&mut b)).await?;
    assert!(b.is_empty(), "a disallowed address must get nothing");
    let mut ok = connect_from(public, OTHER).await?;
    ok.write_all(b"hi").await?;
    ok.shutdown().await?;
    let mut b = Vec::new();
    ok.read_to_end(&mut b).await?;
    assert_eq!(b, b"hi");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_forward_auth_gates_requests() -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    // A real auth service: a session cookie lets you in as alice; otherwise, go log in.
    let auth = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let auth_addr = auth.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = auth.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let h = req.headers();
                    let ok = h.get("cookie").is_some_and(|c| c.as_bytes() == b"session=good");
                    let uri = h.get("x-forwarded-uri").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let mut resp = http::Response::new(Full::new(bytes::Bytes::from_static(b"login please")));
                    if ok {
                        resp.headers_mut().insert("remote-user", "alice".parse().expect("value"));
                    } else {
                        *resp.status_mut() = StatusCode::FOUND;
                        resp.headers_mut()
                            .insert("location", format!("https://sso.example/login?rd={uri}").parse().expect("value"));
                    }
                    Ok::<_, hyper::Error>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    let policy = postern_server::access::Policy {
        ids: "sso-*".into(),
        allow_ips: vec![],
        forward_auth: Some(postern_server::access::ForwardAuth {
            url: format!("http://{auth_addr}/verify").parse()?,
            copy_headers: vec![http::HeaderName::from_static("remote-user")],
        }),
        login: None,
    };
    let relay = TestRelay::with_config(|c| c.policies = postern_server::access::Policies::new(vec![policy])).await?;
    let web = origin::http("w").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("sso-app", web.port())]));
    agent.connected().await?;
    let host = format!("sso-app-{}.localhost", web.port());

    let (status, headers, _) = get_status_from(&relay, &host, &[], LOOPBACK).await?;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers.get("location").and_then(|v| v.to_str().ok()), Some("https://sso.example/login?rd=/headers"));
    let (status, _, seen) = get_status_from(&relay, &host, &[("cookie", "session=good")], LOOPBACK).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(seen.contains("remote-user: alice\n"), "{seen}");
    relay.stop().await
}
