//! A tunnel's history (`GET /api/v1/tunnels/{name}/history`) end to end: real requests through
//! a real relay and agent on 127.0.0.1, then the points the relay sampled, seen by the tunnel's
//! owner and by nobody else. The relay samples every 100 ms here instead of every 5 s.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use postern_e2e::http::{admin, drain, h1, sse_events_at, PatternBody};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay, PATIENCE};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_counts_requests_bytes_and_statuses_for_its_owner_only() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.history_every = Duration::from_millis(100)).await?;
    let web = origin::http("main").await?;
    let owner = relay.mint("tenant-a", &["graphs"], false);
    let other = relay.mint("tenant-b", &[], false);
    let mut agent = TestAgent::start(relay.agent_config(&owner, vec![http_tunnel("graphs", web.port())]));
    let name = agent.connected().await?[0].name.clone();
    let label = format!("graphs-{}", web.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());

    let mut client = h1(&relay, &format!("{label}.localhost")).await?;
    for _ in 0..3 {
        client.ready().await?;
        let req = Request::get("/bytes/10000").header("host", &host).body(PatternBody::new(0))?;
        let resp = client.send_request(req).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        drain(resp.into_body()).await?;
    }

    // The points add up to what was sent, whichever intervals the requests fell in.
    let path = format!("/api/v1/tunnels/{name}/history");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let history = loop {
        let (status, body) = admin(&relay, Method::GET, &path, Some(&owner)).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let history: Value = serde_json::from_str(&body)?;
        let points = history["points"].as_array().cloned().unwrap_or_default();
        let sum = |f: &dyn Fn(&Value) -> u64| points.iter().map(f).sum::<u64>();
        if sum(&|p| p["status"][1].as_u64().unwrap_or(0)) == 3
            && sum(&|p| p["bytes_out"].as_u64().unwrap_or(0)) == 30_000
        {
            break history;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the history never counted the requests: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(history["every_ms"], 100);
    let points = history["points"].as_array().cloned().unwrap_or_default();
    assert_eq!(points.iter().map(|p| p["requests"].as_u64().unwrap_or(0)).sum::<u64>(), 3);
    assert!(points.windows(2).all(|w| w[0]["t"].as_u64() < w[1]["t"].as_u64()), "oldest first: {points:?}");
    let busy: Vec<&Value> = points.iter().filter(|p| p["status"][1].as_u64() > Some(0)).collect();
    assert!(busy.iter().all(|p| p["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0)), "{busy:?}");
    assert!(points.iter().all(|p| p["status"][4] == 0), "no 5xx: {points:?}");

    // Another tenant's token does not learn the tunnel exists.
    let (status, _) = admin(&relay, Method::GET, &path, Some(&other)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin(&relay, Method::GET, &path, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_events_carry_each_round_of_the_callers_tunnels_only() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.history_every = Duration::from_millis(100)).await?;
    let web = origin::http("main").await?;
    let a = relay.mint("tenant-a", &["live-a"], false);
    let b = relay.mint("tenant-b", &["live-b"], false);
    let mut agent_a = TestAgent::start(relay.agent_config(&a, vec![http_tunnel("live-a", web.port())]));
    let mut agent_b = TestAgent::start(relay.agent_config(&b, vec![http_tunnel("live-b", web.port())]));
    let mine = agent_a.connected().await?[0].name.clone();
    let theirs = agent_b.connected().await?[0].name.clone();

    // Without asking, no traffic events; with `traffic=1`, one per round, the caller's only.
    let mut plain = sse_events_at(&relay, "/api/v1/events", &a, 1).await?;
    let mut live = sse_events_at(&relay, "/api/v1/events?traffic=1", &a, 3).await?;
    let mut rounds = Vec::new();
    while rounds.len() < 3 {
        let (kind, v) = tokio::time::timeout(PATIENCE, live.recv()).await?.expect("stream open");
        if kind == "traffic" {
            rounds.push(v);
        }
    }
    for v in &rounds {
        let names: Vec<&str> =
            v["tunnels"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, [mine.as_str()], "{v}: {theirs} must not show");
        assert_eq!(v["tunnels"][0]["point"]["t"], v["t"], "the round's own point: {v}");
    }
    assert!(rounds.windows(2).all(|w| w[0]["t"].as_u64() < w[1]["t"].as_u64()), "{rounds:?}");
    assert!(tokio::time::timeout(Duration::from_millis(300), plain.recv()).await.is_err(), "traffic sent unasked");
    relay.stop().await
}
