//! Volume quotas (a token's bytes per day or month): live transfers are cut at the limit with
//! what passed intact, HTTP then answers `429 quota-exceeded`, new TCP connections are refused,
//! the count shows in the API and the metrics, survives a restart of the relay, and is one count
//! across the relays of a cluster (on a real Redis).

use std::time::Duration;

use anyhow::Context;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use postern_e2e::cluster::TestCluster;
use postern_e2e::http::{admin, admin_json, admin_post_json, empty, h1, pattern};
use postern_e2e::{http_tunnel, origin, tcp, TestAgent, TestRelay, PATIENCE};
use postern_proto::token::Limits;
use postern_proto::volume::{Period, Volume};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn volume(bytes: u64) -> Limits {
    Limits { volume: Some(Volume { bytes, period: Period::Day }), ..Limits::default() }
}

/// `GET path` on `host` through the relay's HTTPS edge: the status, the headers, the body
/// bytes that arrived, and whether the body ended cleanly.
async fn get(
    relay: &TestRelay,
    host: &str,
    path: &str,
) -> anyhow::Result<(StatusCode, http::HeaderMap, Vec<u8>, bool)> {
    let mut send = h1(relay, host).await?;
    let resp = send.send_request(http::Request::get(path).header("host", host).body(empty())?).await?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let mut body = resp.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            None => return Ok((status, headers, got, true)),
            Some(Err(_)) => return Ok((status, headers, got, false)),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
        }
    }
}

/// The `volume` of tunnel `name` in the admin API.
async fn tunnel_volume(relay: &TestRelay, admin_token: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let (status, view) = admin_json(relay, Method::GET, &format!("/api/v1/tunnels/{name}"), Some(admin_token)).await?;
    anyhow::ensure!(status == StatusCode::OK, "{status}: {view}");
    Ok(view["volume"].clone())
}

/// Waits until `/metrics` has `line`.
async fn metric(relay: &TestRelay, line: &str) -> anyhow::Result<()> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let (_, text) = admin(relay, Method::GET, "/metrics", None).await?;
            if text.lines().any(|l| l == line) {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .with_context(|| format!("/metrics never showed {line}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_transfers_are_cut_at_the_volume_then_answered_429_even_after_a_restart() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let web = origin::http("w").await?;
    let root = relay.mint("root", &[], true);
    let token = relay.mint_with("vol", &["vol"], |c| {
        c.jti = "vol-http".into();
        c.limits = volume(1_000_000);
    });
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![http_tunnel("vol", web.port())]));
    agent.connected().await?;
    let host = format!("vol-{}.localhost", web.port());
    let name = format!("vol-{}", web.port());

    // Within the volume: whole.
    let (status, _, body, clean) = get(&relay, &host, "/bytes/400000").await?;
    assert_eq!((status, body.len(), clean), (StatusCode::OK, 400_000, true));
    assert_eq!(body, pattern(0, 400_000));
    let v = tunnel_volume(&relay, &root, &name).await?;
    assert_eq!(
        (v["bytes"].as_u64(), v["used"].as_u64(), v["period"].as_str()),
        (Some(1_000_000), Some(400_000), Some("day"))
    );

    // Across it: the body stops where the volume does, as an error rather than an end, and
    // what arrived is exactly the start of the body.
    let (status, _, body, clean) = get(&relay, &host, "/bytes/800000").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!clean, "a cut body must not end cleanly ({} bytes arrived)", body.len());
    assert!(body.len() <= 600_000, "{} bytes passed a volume with 600000 left", body.len());
    assert_eq!(body, pattern(0, body.len()), "what passed is intact");
    assert_eq!(tunnel_volume(&relay, &root, &name).await?["used"].as_u64(), Some(1_000_000));

    // Then a clear 429 that says when it opens again.
    let (status, headers, page, _) = get(&relay, &host, "/").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get("postern-error").map(|v| v.as_bytes()), Some(&b"quota-exceeded"[..]));
    let retry: u64 = headers.get("retry-after").context("retry-after")?.to_str()?.parse()?;
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert!(String::from_utf8_lossy(&page).contains("Data transfer quota used up"));
    metric(&relay, "postern_token_volume_used_bytes{token=\"vol-http\"} 1000000").await?;
    metric(&relay, "postern_token_volume_bytes{token=\"vol-http\"} 1000000").await?;

    // The count is kept in the state directory: a restarted relay still refuses.
    let relay = relay.restart().await?;
    agent.connected().await?;
    relay.wait_registry(|r| !r.is_empty()).await?;
    let (status, _, _, _) = get(&relay, &host, "/").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the volume must survive a restart");
    assert_eq!(tunnel_volume(&relay, &root, &name).await?["used"].as_u64(), Some(1_000_000));
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_is_reset_at_the_volume_and_new_ones_are_refused() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let root = relay.mint("root", &[], true);
    let token = relay.mint_with("tcpvol", &[], |c| {
        c.jti = "vol-tcp".into();
        c.limits = volume(100_000);
    });
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![tcp(echo.port())]));
    let public = agent.public_addr().await?;
    let data = postern_e2e::payload(7, 60_000);

    // 30,000 bytes there and back: 60,000 of the 100,000.
    let mut conn = TcpStream::connect(public).await?;
    conn.write_all(&data[..30_000]).await?;
    let mut back = vec![0u8; 30_000];
    tokio::time::timeout(PATIENCE, conn.read_exact(&mut back)).await??;
    assert_eq!(back, data[..30_000]);

    // 30,000 more go in (90,000), and only 10,000 may come back before the connection is cut.
    conn.write_all(&data[30_000..]).await?;
    let (rest, end) = postern_e2e::read_until_end(&mut conn).await?;
    let err = end.expect_err("a cut connection is reset, not closed as if it were complete");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(rest.len() <= 10_000, "{} bytes came back past the volume", rest.len());
    assert_eq!(rest, data[30_000..30_000 + rest.len()], "what passed is intact");

    // A new connection is closed at once, with nothing echoed.
    let mut next = TcpStream::connect(public).await?;
    let _ = next.write_all(b"hello").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, next.read(&mut buf)).await?.unwrap_or(0);
    assert_eq!(n, 0, "a token over its volume gets no new connection");
    let name = relay.registry.tunnels().first().map(|t| t.info.name.clone()).context("tunnel")?;
    assert_eq!(tunnel_volume(&relay, &root, &name).await?["used"].as_u64(), Some(100_000));
    metric(&relay, "postern_public_connections_refused_total{reason=\"quota\"} 1").await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_mints_volumes_and_shows_their_use() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let root = relay.mint("root", &[], true);
    let body = r#"{"subject":"plan-free","limits":{"volume":{"bytes":10000000000,"period":"month"}}}"#;
    let (status, minted) = admin_post_json(&relay, "/api/v1/tokens", &root, body).await?;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let id = minted["id"].as_str().context("id")?.to_string();
    let (_, list) = admin_json(&relay, Method::GET, "/api/v1/tokens", Some(&root)).await?;
    let entry =
        list["tokens"].as_array().context("tokens")?.iter().find(|t| t["id"] == id.as_str()).context("listed")?;
    assert_eq!(entry["limits"]["volume"], serde_json::json!({"bytes": 10_000_000_000u64, "period": "month"}));
    assert_eq!(entry["volume_used"]["used"], 0);
    assert!(entry["volume_used"]["resets_at"].as_str().is_some_and(|t| t.ends_with("-01T00:00:00Z")), "{entry}");

    // Nonsense is refused with the field named.
    for bad in [r#"{"bytes":0,"period":"day"}"#, r#"{"bytes":5,"period":"week"}"#, r#""10GB/month""#] {
        let body = format!(r#"{{"subject":"x","limits":{{"volume":{bad}}}}}"#);
        let (status, answer) = admin_post_json(&relay, "/api/v1/tokens", &root, &body).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_volume_holds_across_the_relays_of_a_cluster() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let web = origin::http("c").await?;
    let token = a.mint_with("dana", &["one", "two"], |c| {
        c.jti = "vol-cluster".into();
        c.limits = volume(1_000_000);
    });
    let mut one = TestAgent::start(a.agent_config(&token, vec![http_tunnel("one", web.port())]));
    one.connected().await?;
    let mut two = TestAgent::start(b.agent_config(&token, vec![http_tunnel("two", web.port())]));
    two.connected().await?;
    let (host_one, host_two) = (format!("one-{}.localhost", web.port()), format!("two-{}.localhost", web.port()));

    // 700,000 bytes through relay A; relay B learns the token's total from the directory.
    let (status, _, body, clean) = get(a, &host_one, "/bytes/700000").await?;
    assert_eq!((status, body.len(), clean), (StatusCode::OK, 700_000, true));
    metric(b, "postern_token_volume_used_bytes{token=\"vol-cluster\"} 700000").await?;

    // So through relay B only the rest passes.
    let (status, _, body, clean) = get(b, &host_two, "/bytes/600000").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!clean && body.len() <= 300_000, "{} bytes, clean: {clean}", body.len());
    assert_eq!(body, pattern(0, body.len()));

    // And relay A learns that the volume is used up.
    metric(a, "postern_token_volume_used_bytes{token=\"vol-cluster\"} 1000000").await?;
    let (status, headers, _, _) = get(a, &host_one, "/").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get("postern-error").map(|v| v.as_bytes()), Some(&b"quota-exceeded"[..]));
    Ok(())
}
