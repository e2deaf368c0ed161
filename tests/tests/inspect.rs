//! The request inspector end to end: real requests through a real relay and agent on
//! 127.0.0.1, then the captures through the admin API and the SSE stream, as the tunnel's owner
//! and as another tenant; replay to the real local service; redaction; the switch.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use postern_e2e::http::{admin_json, admin_post_json, admin_send_json, drain, h1, sse_events, text, PatternBody};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay, PATIENCE};
use serde_json::Value;

/// The captures of `name` as `token` sees them, once there are `n`.
async fn captures(relay: &TestRelay, name: &str, token: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let path = format!("/api/v1/tunnels/{name}/requests");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, v) = admin_json(relay, Method::GET, &path, Some(token)).await?;
        assert_eq!(status, StatusCode::OK, "{v}");
        let list = v["requests"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return Ok(list);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{n} captures never appeared: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.as_array()?.iter().find(|h| h["name"] == name)?["value"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_are_redacted_bounded_replayable_and_seen_by_their_owner_only() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let web = origin::http("main").await?;
    let owner = relay.mint("tenant-a", &["insp"], false);
    let other = relay.mint("tenant-b", &[], false);
    let mut spec = http_tunnel("insp", web.port());
    spec.inspect = true;
    let mut agent = TestAgent::start(relay.agent_config(&owner, vec![spec]));
    let name = agent.connected().await?[0].name.clone();
    let mut events = sse_events(&relay, &owner, 3).await?;
    let mut others_events = sse_events(&relay, &other, 1).await?;
    let label = format!("insp-{}", web.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());
    let mut client = h1(&relay, &format!("{label}.localhost")).await?;

    // 1: a body upload with credentials; 2: a download longer than what is kept; 3: headers.
    client.ready().await?;
    let req = Request::post("/hash")
        .header("host", &host)
        .header("authorization", "Bearer visitor-secret-1")
        .header("cookie", "session=visitor-secret-2")
        .header("x-trace", "kept")
        .body(PatternBody::new(1000))?;
    let resp = client.send_request(req).await?;
    let hashed = text(resp.into_body()).await?;
    client.ready().await?;
    let req = Request::get("/bytes/100000").header("host", &host).body(PatternBody::new(0))?;
    let (len, _, _) = drain(client.send_request(req).await?.into_body()).await?;
    assert_eq!(len, 100_000);
    client.ready().await?;
    let req = Request::get("/headers?q=1")
        .header("host", &host)
        .header("authorization", "Bearer visitor-secret-3")
        .body(PatternBody::new(0))?;
    text(client.send_request(req).await?.into_body()).await?;

    let list = captures(&relay, &name, &owner, 3).await?;
    let paths: Vec<&str> = list.iter().filter_map(|c| c["path"].as_str()).collect();
    assert_eq!(paths, ["/headers?q=1", "/bytes/100000", "/hash"], "newest first");
    let ids: Vec<u64> = list.iter().filter_map(|c| c["id"].as_u64()).collect();
    assert!(ids[0] > ids[1] && ids[1] > ids[2], "{ids:?}");
    let upload = &list[2];
    assert_eq!((upload["method"].as_str(), upload["status"].as_u64()), (Some("POST"), Some(200)));
    assert_eq!((upload["request_size"].as_u64(), upload["replayable"].as_bool()), (Some(1000), Some(true)));
    assert_eq!(header(&upload["request_headers"], "authorization"), Some("[redacted]"));
    assert_eq!(header(&upload["request_headers"], "cookie"), Some("[redacted]"));
    assert_eq!(header(&upload["request_headers"], "x-trace"), Some("kept"));
    assert!(upload.get("request_body").is_none(), "the list carries no bodies");

    // One capture, with its bodies: the upload whole, the download cut at 64 KiB.
    let one = |id: u64| format!("/api/v1/tunnels/{name}/requests/{id}");
    let (status, c) = admin_json(&relay, Method::GET, &one(ids[2]), Some(&owner)).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["request_body"]["size"], 1000);
    assert_eq!(c["request_body"]["truncated"], false);
    // Pattern bytes are not UTF-8, so they come as base64: 1000 bytes, 1336 characters.
    assert_eq!(
        (c["request_body"]["text"].is_null(), c["request_body"]["base64"].as_str().map(str::len)),
        (true, Some(1336))
    );
    assert_eq!(c["response_body"]["text"].as_str(), Some(hashed.as_str()));
    let (_, c) = admin_json(&relay, Method::GET, &one(ids[1]), Some(&owner)).await?;
    assert_eq!(
        (c["response_body"]["size"].as_u64(), c["response_body"]["truncated"].as_bool()),
        (Some(100_000), Some(true))
    );
    // 64 KiB in base64.
    assert_eq!(c["response_body"]["base64"].as_str().map(str::len), Some(65_536usize.div_ceil(3) * 4));
    // No secret the visitor sent is kept (the `/headers` response echoes one: that is the
    // local service's answer, kept as it is).
    for id in &ids {
        let (_, c) = admin_json(&relay, Method::GET, &one(*id), Some(&owner)).await?;
        let asked = format!("{} {}", c["request_headers"], c["request_body"]);
        assert!(!asked.contains("visitor-secret"), "a redacted value was kept: {asked}");
    }

    // The owner's event stream announced each capture; the other tenant's saw none of them.
    for expected in ["/hash", "/bytes/100000", "/headers?q=1"] {
        let (kind, v) = loop {
            let (kind, v) = tokio::time::timeout(PATIENCE, events.recv()).await?.expect("stream open");
            if kind == "request_captured" {
                break (kind, v);
            }
        };
        assert_eq!((kind.as_str(), v["request"]["path"].as_str()), ("request_captured", Some(expected)));
        assert_eq!(v["tunnel"]["name"], name.as_str());
    }

    // Replay sends the request again, marked, without the redacted credential.
    let replay = format!("{}/replay", one(ids[0]));
    let (status, r) = admin_post_json(&relay, &replay, &owner, "").await?;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["replay_of"].as_u64(), Some(ids[0]));
    let seen = r["response_body"]["text"].as_str().unwrap_or_default();
    assert!(seen.contains(&format!("x-postern-replay: {}", ids[0])), "{seen}");
    assert!(!seen.contains("authorization"), "a redacted header was replayed: {seen}");
    let (status, r) = admin_post_json(&relay, &format!("{}/replay", one(ids[2])), &owner, "").await?;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["response_body"]["text"].as_str(), Some(hashed.as_str()), "the body was sent whole");
    let list = captures(&relay, &name, &owner, 5).await?;
    assert_eq!(list[0]["replay_of"].as_u64(), Some(ids[2]));

    // Another tenant cannot read, replay or switch any of it, nor learn the tunnel exists.
    for (method, path) in [(Method::GET, format!("/api/v1/tunnels/{name}/requests")), (Method::GET, one(ids[0]))] {
        let (status, _) = admin_json(&relay, method, &path, Some(&other)).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = admin_post_json(&relay, &replay, &other, "").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let toggle = format!("/api/v1/tunnels/{name}/inspect");
    let (status, _) = admin_send_json(&relay, Method::PUT, &toggle, &other, r#"{"enabled":false}"#).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), others_events.recv()).await.is_err(),
        "another tenant's stream carried a capture"
    );

    // Switched off, requests pass uncaptured; the kept captures stay.
    let (status, v) = admin_send_json(&relay, Method::PUT, &toggle, &owner, r#"{"enabled":false}"#).await?;
    assert_eq!((status, v["inspect"].as_bool()), (StatusCode::OK, Some(false)));
    client.ready().await?;
    let req = Request::get("/off").header("host", &host).body(PatternBody::new(0))?;
    text(client.send_request(req).await?.into_body()).await?;
    let (_, v) = admin_json(&relay, Method::GET, &format!("/api/v1/tunnels/{name}/requests"), Some(&owner)).await?;
    assert_eq!((v["inspect"].as_bool(), v["requests"].as_array().map(Vec::len)), (Some(false), Some(5)));
    let (_, t) = admin_json(&relay, Method::GET, &format!("/api/v1/tunnels/{name}"), Some(&owner)).await?;
    assert_eq!(t["inspect"], false);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_is_off_by_default_and_a_cut_body_is_not_replayed() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| {
        c.inspect_keep = 2;
        c.admin_token = Some("root-admin-token".into());
    })
    .await?;
    let web = origin::http("main").await?;
    let owner = relay.mint("tenant-a", &["plain"], false);
    let mut agent = TestAgent::start(relay.agent_config(&owner, vec![http_tunnel("plain", web.port())]));
    let name = agent.connected().await?[0].name.clone();
    let label = format!("plain-{}", web.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());
    let mut client = h1(&relay, &format!("{label}.localhost")).await?;
    let send = |len: u64| Request::post("/hash").header("host", &host).body(PatternBody::new(len));

    client.ready().await?;
    text(client.send_request(send(10)?).await?.into_body()).await?;
    let path = format!("/api/v1/tunnels/{name}/requests");
    let (_, v) = admin_json(&relay, Method::GET, &path, Some(&owner)).await?;
    assert_eq!((v["inspect"].as_bool(), v["requests"].as_array().map(Vec::len)), (Some(false), Some(0)));

    // The admin switches it on for the tenant's tunnel.
    let toggle = format!("/api/v1/tunnels/{name}/inspect");
    let (status, _) = admin_send_json(&relay, Method::PUT, &toggle, "root-admin-token", r#"{"enabled":true}"#).await?;
    assert_eq!(status, StatusCode::OK);
    for len in [200_000, 1, 2] {
        client.ready().await?;
        text(client.send_request(send(len)?).await?.into_body()).await?;
    }
    // Only the last two are kept (`--inspect-keep 2`).
    let list = captures(&relay, &name, &owner, 2).await?;
    let sizes: Vec<u64> = list.iter().filter_map(|c| c["request_size"].as_u64()).collect();
    assert_eq!(sizes, [2, 1]);
    client.ready().await?;
    text(client.send_request(send(200_000)?).await?.into_body()).await?;
    let list = captures(&relay, &name, &owner, 2).await?;
    let cut = &list[0];
    assert_eq!((cut["request_size"].as_u64(), cut["replayable"].as_bool()), (Some(200_000), Some(false)));
    let replay = format!("{path}/{}/replay", cut["id"]);
    let (status, v) = admin_post_json(&relay, &replay, &owner, "").await?;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_replayable")));
    let (status, _) = admin_json(&relay, Method::GET, &format!("{path}/999999"), Some(&owner)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_wide_memory_cap_holds_under_many_large_captures() -> anyhow::Result<()> {
    // 1 MiB for every capture on the relay; each request keeps up to 128 KiB of bodies.
    let relay = TestRelay::with_config(|c| c.inspect_memory = 1).await?;
    let web = origin::http("main").await?;
    let owner = relay.mint("tenant-a", &["one", "two"], false);
    let mut specs = vec![http_tunnel("one", web.port()), http_tunnel("two", web.port())];
    for s in &mut specs {
        s.inspect = true;
    }
    let mut agent = TestAgent::start(relay.agent_config(&owner, specs));
    let names: Vec<String> = agent.connected().await?.into_iter().map(|g| g.name).collect();
    let budget = 1 << 20;
    for id in ["one", "two"] {
        let label = format!("{id}-{}", web.port());
        let host = format!("{label}.localhost:{}", relay.https_addr.port());
        let mut client = h1(&relay, &format!("{label}.localhost")).await?;
        for _ in 0..20 {
            client.ready().await?;
            let req = Request::post("/hash").header("host", &host).body(PatternBody::new(100_000))?;
            text(client.send_request(req).await?.into_body()).await?;
            client.ready().await?;
            let req = Request::get("/bytes/100000").header("host", &host).body(PatternBody::new(0))?;
            drain(client.send_request(req).await?.into_body()).await?;
        }
    }
    // Within the budget, shared: the first tunnel filled it, the second took its share back
    // from it; the oldest captures went.
    let used = std::sync::atomic::AtomicUsize::new(0);
    relay
        .wait_registry(|r| {
            used.store(r.inspection().used(), std::sync::atomic::Ordering::Relaxed);
            names.iter().all(|n| {
                r.get(n).is_some_and(|t| t.inspector.list().first().is_some_and(|c| c.path == "/bytes/100000"))
            })
        })
        .await?;
    let used = used.into_inner();
    assert!(used <= budget, "captures hold {used} bytes, over the {budget} cap");
    assert!(used > budget / 2, "the budget is used: {used}");
    let held: Vec<usize> = names.iter().map(|n| relay.registry.get(n).map_or(0, |t| t.inspector.held())).collect();
    assert!(held.iter().all(|&h| h >= budget / 4), "one tunnel starved the other: {held:?}");
    // Monitoring sees the same figure.
    let (_, metrics) = postern_e2e::http::admin(&relay, Method::GET, "/metrics", None).await?;
    let gauge = metrics.lines().find_map(|l| l.strip_prefix("postern_inspector_bytes ")).map(str::trim);
    assert_eq!(gauge, Some(used.to_string().as_str()), "{metrics}");
    let list = captures(&relay, &names[1], &owner, 1).await?;
    assert!(list
        .iter()
        .all(|c| c["request_size"].as_u64() == Some(100_000) || c["response_size"].as_u64() == Some(100_000)));
    // The newest kept its body; it is the one that fit.
    let newest = format!("/api/v1/tunnels/{}/requests/{}", names[1], list[0]["id"]);
    let (_, c) = admin_json(&relay, Method::GET, &newest, Some(&owner)).await?;
    assert_eq!((c["bodies_dropped"].as_bool(), c["response_body"]["truncated"].as_bool()), (Some(false), Some(true)));
    relay.stop().await
}
