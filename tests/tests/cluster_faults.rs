//! The cluster's failure table, each row a test on real components: Redis stopped, Redis back
//! empty, a peer link cut, a relay with another secret, Redis unreachable at start. (A relay
//! killed with SIGKILL is in `crates/postern/tests/cluster.rs`, on real processes.)

use anyhow::Context;
use http::{Method, Request, StatusCode};
use postern_e2e::cluster::{live, wait_relays, TestCluster};
use postern_e2e::faults::FaultyProxy;
use postern_e2e::http::{admin, admin_json, h1, text, PatternBody};
use postern_e2e::redis::TestRedis;
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay, PATIENCE};

fn host(relay: &TestRelay, label: &str) -> String {
    format!("{label}.localhost:{}", relay.https_addr.port())
}

/// `GET /` of tunnel `label` through `relay`: the status, the `postern-error` code and the body.
async fn get(relay: &TestRelay, label: &str) -> anyhow::Result<(StatusCode, String, String)> {
    let mut client = h1(relay, &format!("{label}.localhost")).await?;
    let req = Request::get("/").header("host", host(relay, label)).body(PatternBody::new(0))?;
    let resp = client.send_request(req).await?;
    let status = resp.status();
    let code = resp.headers().get("postern-error").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Ok((status, code, text(resp.into_body()).await?))
}

/// Asks until the answer has status `want`.
async fn until_status(relay: &TestRelay, label: &str, want: StatusCode) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (got, _, body) = get(relay, label).await?;
        if got == want {
            return Ok(body);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{label}: {got}, never {want}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the agent's last attempt failed, and returns why.
async fn refusal(agent: &TestAgent) -> anyhow::Result<String> {
    let mut state = agent.state.clone();
    let s = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.last_error.is_some())).await??.clone();
    anyhow::ensure!(s.sessions == 0, "the agent got in");
    Ok(s.last_error.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_keeps_live_tunnels_and_refuses_new_names_then_comes_back_empty() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(2).await?;
    let origin = origin::http("kept").await?;
    let alice = cluster.mint("alice", &["app"]);
    let mut agent = TestAgent::start(cluster.relay(0).agent_config(&alice, vec![http_tunnel("app", origin.port())]));
    agent.connected().await?;
    let label = format!("app-{}", origin.port());
    until_status(cluster.relay(1), &label, StatusCode::OK).await?;

    // Redis goes away.
    cluster.redis.kill().await;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    wait_relays(a, |v| v["store"] == "down").await?;
    // The live tunnel serves on its relay and, from the cached route, through the other.
    for relay in [a, b] {
        let (status, _, body) = get(relay, &label).await?;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "origin kept"));
    }
    // New names are refused, retryably, saying why.
    let bob = cluster.mint("bob", &["fresh"]);
    let mut fresh = TestAgent::start(b.agent_config(&bob, vec![http_tunnel("fresh", origin.port())]));
    let why = refusal(&fresh).await?;
    assert!(why.contains("directory is unreachable") && why.contains("try again"), "{why}");
    // Readiness does not depend on the directory; the relays list says it is down.
    for relay in [a, b] {
        let (status, _) = admin(relay, Method::GET, "/readyz", None).await?;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, v) = admin_json(b, Method::GET, "/api/v1/relays", Some("root")).await?;
    assert_eq!(v["store"], "down", "{v}");
    assert_eq!(postern_e2e::cluster::live(&v), 1, "a relay cut off from the directory lists itself: {v}");

    // Redis comes back empty: the relays assert their names again, the waiting client gets in.
    cluster.redis.restart().await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    for relay in [a, b] {
        wait_relays(relay, |v| v["store"] == "up" && live(v) == 2).await?;
    }
    fresh.connected().await?;
    // Nothing was lost: alice's name is hers again, across the cluster.
    let mallory = cluster.mint("mallory", &["app"]);
    let thief = TestAgent::start(b.agent_config(&mallory, vec![http_tunnel("app", origin.port())]));
    let why = refusal(&thief).await?;
    assert!(why.contains("held by another client"), "{why}");
    assert_eq!(until_status(b, &label, StatusCode::OK).await?, "origin kept");
    assert_eq!(agent.state.borrow().sessions, 1, "the tunnel's client never noticed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_peer_link_gives_503_for_tunnels_only_there_and_shared_tunnels_fail_over() -> anyhow::Result<()> {
    // Relay r1 is reached by its peers through a proxy the test can cut.
    let proxy = FaultyProxy::start(([127, 0, 0, 1], 9).into()).await?;
    let advertise = proxy.addr.to_string();
    let cluster = TestCluster::with(3, |i, c| {
        if i == 1 {
            c.peer_advertise = Some(advertise.clone());
        }
    })
    .await?;
    proxy.retarget(cluster.relay(1).peer_addr.context("peer")?);
    let (entry, one) = (cluster.relay(0), cluster.relay(1));
    let solo_origin = origin::http("solo").await?;
    let shared_origin = origin::http("shared").await?;
    let mut solo = TestAgent::start(one.agent_config("", vec![http_tunnel("solo", solo_origin.port())]));
    solo.connected().await?;
    // One client, a connection to r1 and one to r2.
    let mut cfg = cluster.agent_config("", vec![http_tunnel("shared", shared_origin.port())], &[1, 2]);
    cfg.connections = postern_client::Connections::Fixed(2);
    let mut shared = TestAgent::start(cfg);
    tokio::time::timeout(PATIENCE, shared.state.wait_for(|s| s.connected == 2)).await??;
    let (solo_label, shared_label) =
        (format!("solo-{}", solo_origin.port()), format!("shared-{}", shared_origin.port()));
    assert_eq!(until_status(entry, &solo_label, StatusCode::OK).await?, "origin solo");

    proxy.sever();
    let (status, code, _) = get(entry, &solo_label).await?;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "relay-unreachable"));
    for _ in 0..12 {
        let (status, _, body) = get(entry, &shared_label).await?;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "origin shared"), "a shared tunnel did not fail over");
    }
    let (_, text) = admin(entry, Method::GET, "/metrics", None).await?;
    assert!(text.contains("postern_cluster_peer_up{peer=\"r1\"} 0"), "{text}");

    proxy.heal();
    assert_eq!(until_status(entry, &solo_label, StatusCode::OK).await?, "origin solo");
    drop((solo, shared));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_another_secret_shares_nothing_with_the_cluster() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let url = cluster.redis.url();
    let key = cluster.key.clone();
    let stranger = TestRelay::with_config(|c| {
        postern_e2e::cluster::join(c, &url, "a different secret, 32 characters", &key, 2);
    })
    .await?;
    wait_relays(&stranger, |v| v["store"] == "up").await?;
    let theirs = origin::http("stranger").await?;
    let ours = origin::http("ours").await?;
    // The stranger's client takes "app" first; it claims nothing in the cluster's directory.
    let mut agent = TestAgent::start(stranger.agent_config("", vec![http_tunnel("app", theirs.port())]));
    agent.connected().await?;
    let alice = cluster.mint("alice", &["app"]);
    let mut mine = TestAgent::start(cluster.relay(0).agent_config(&alice, vec![http_tunnel("app", theirs.port())]));
    mine.connected().await?;
    // It is no member, and nothing of the cluster reaches it.
    let (_, v) = admin_json(cluster.relay(1), Method::GET, "/api/v1/relays", Some("root")).await?;
    let ids: Vec<&str> = v["relays"].as_array().context("relays")?.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, vec!["r0", "r1"]);
    assert_eq!(
        until_status(cluster.relay(1), &format!("app-{}", theirs.port()), StatusCode::OK).await?,
        "origin stranger"
    );
    let _ = ours;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_starts_without_its_directory_and_joins_when_it_appears() -> anyhow::Result<()> {
    let port = postern_e2e::redis::reserved_port()?;
    let key = postern_proto::token::TokenKey::from_bytes(rand::random());
    let relay = TestRelay::with_config(|c| {
        postern_e2e::cluster::join(c, &format!("redis://127.0.0.1:{port}"), "sixteen characters or more", &key, 0);
    })
    .await?;
    let (status, _) = admin(&relay, Method::GET, "/readyz", None).await?;
    assert_eq!(status, StatusCode::OK, "readiness must not wait for the directory");
    let v = wait_relays(&relay, |v| v["store"] == "down").await?;
    assert_eq!(v["relays"][0]["id"], "r0", "{v}");
    let origin = origin::http("late").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("late", origin.port())]));
    let why = refusal(&agent).await?;
    assert!(why.contains("directory is unreachable"), "{why}");

    let _redis = TestRedis::start_on(port).await?;
    agent.connected().await?;
    wait_relays(&relay, |v| v["store"] == "up" && live(v) == 1).await?;
    Ok(())
}
