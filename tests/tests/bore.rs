//! The bore-compatible endpoint with the real `bore` client (bore-cli from crates.io): bytes
//! through it exactly, its tunnel in the registry, the status API and the metrics, and bore's own
//! error for a wrong or missing secret.
//!
//! The client is found and started by [`postern_e2e::bore_client`].

use anyhow::Context;
use postern_e2e::bore_client::{bore_local, exit_output, public_port, skip};
use postern_e2e::http::{admin, admin_post_json};
use postern_e2e::{echo_through, origin, payload, sha256, TestRelay, PATIENCE};
use postern_proto::token::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bore_local_tunnels_bytes_exactly_and_shows_up_as_a_postern_tunnel() -> anyhow::Result<()> {
    let Some(bin) = skip() else { return Ok(()) };
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("access.log");
    let relay = TestRelay::with_bore(|c| {
        c.admin_token = Some("root".into());
        c.access_log = postern_server::config::AccessLogTo::File(log.clone());
    })
    .await?;
    // An orchestrator mints the bore token through the API.
    let (status, minted) =
        admin_post_json(&relay, "/api/v1/tokens", "root", r#"{"subject":"alice","kind":"bore"}"#).await?;
    assert_eq!(status, http::StatusCode::CREATED, "{minted}");
    assert_eq!(minted["kind"], "bore");
    let token = minted["token"].as_str().context("token")?.to_string();
    let echo = origin::echo().await?;
    let mut bore = bore_local(&bin, &relay, echo.port(), Some(&token))?;
    let port = public_port(&mut bore).await?;
    let ip = relay.bore_addr.context("bore")?.ip();

    // Three visitors at once, 1 MiB each, echoed back byte for byte.
    let mut visitors = Vec::new();
    for seed in 0..3u64 {
        visitors.push(tokio::spawn(async move {
            let data = payload(seed, 1 << 20);
            let back = echo_through((ip, port).into(), &data).await?;
            anyhow::ensure!(sha256(&back) == sha256(&data), "visitor {seed}: {} bytes came back changed", back.len());
            Ok::<_, anyhow::Error>(())
        }));
    }
    for v in visitors {
        tokio::time::timeout(PATIENCE, v).await.context("visitor timed out")???;
    }

    // A postern TCP tunnel like any other: registry, status API (the token's own view), metrics.
    let tunnels = relay.registry.list();
    assert_eq!(tunnels.len(), 1);
    assert_eq!((tunnels[0].owner.as_str(), tunnels[0].public_port), ("alice", Some(port)));
    let (status, body) = admin(&relay, http::Method::GET, "/api/v1/tunnels", Some(&token)).await?;
    assert_eq!(status, http::StatusCode::OK);
    assert!(body.contains(&format!("\"tcp-{port}\"")), "{body}");
    let (_, metrics) = admin(&relay, http::Method::GET, "/metrics", None).await?;
    assert!(metrics.contains("postern_tunnels{kind=\"tcp\"} 1"), "{metrics}");
    let bytes_in = metrics
        .lines()
        .find_map(|l| l.strip_prefix("postern_bytes_total{direction=\"in\",kind=\"tcp\"} "))
        .context("no inbound byte counter")?
        .trim()
        .parse::<u64>()?;
    assert_eq!(bytes_in, 3 << 20);
    // And one access log line per visitor, as for any TCP tunnel.
    let lines = postern_e2e::json_lines(&log, 3).await?;
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!((line["kind"].as_str(), line["owner"].as_str()), (Some("tcp"), Some("alice")), "{line}");
        assert_eq!(line["tunnel"], format!("tcp-{port}"));
        assert_eq!((line["bytes_in"].as_u64(), line["bytes_out"].as_u64()), (Some(1 << 20), Some(1 << 20)), "{line}");
        assert_eq!(line["close"], "closed");
    }

    // Revoking the token ends the live bore tunnel (within a heartbeat) and frees its port.
    let jti = minted["id"].as_str().context("id")?;
    let (status, _) = admin(&relay, http::Method::DELETE, &format!("/api/v1/tokens/{jti}"), Some("root")).await?;
    assert!(status.is_success(), "revoking: {status}");
    relay.wait_registry(|r| r.is_empty()).await?;
    let _ = tokio::time::timeout(PATIENCE, bore.wait()).await.context("bore kept running after the revocation")?;
    tokio::net::TcpListener::bind((ip, port)).await.context("the port was not released")?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_secret_gets_bores_errors() -> anyhow::Result<()> {
    let Some(bin) = skip() else { return Ok(()) };
    let relay = TestRelay::with_bore(|_| {}).await?;
    let token = relay.mint("alice", &[], false);
    postern_server::bore::secrets::add(&relay.state_dir, &token)?;
    let echo = origin::echo().await?;

    let (failed, out) = exit_output(bore_local(&bin, &relay, echo.port(), Some("not the secret"))?).await?;
    assert!(failed, "bore must fail with a wrong secret: {out}");
    assert!(out.contains("invalid secret"), "{out}");

    let (failed, out) = exit_output(bore_local(&bin, &relay, echo.port(), None)?).await?;
    assert!(failed, "bore must fail without a secret: {out}");
    assert!(out.contains("server requires authentication"), "{out}");

    // A token that is not recorded for bore is not a bore secret, even though it is valid.
    let plain = relay.mint("bob", &[], false);
    let (failed, out) = exit_output(bore_local(&bin, &relay, echo.port(), Some(&plain))?).await?;
    assert!(failed && out.contains("invalid secret"), "{out}");

    // A revoked bore token stops working at once.
    let jti = postern_proto::token::peek(&token)?.jti;
    let root = relay.mint("root", &[], true);
    let (status, _) = admin(&relay, http::Method::DELETE, &format!("/api/v1/tokens/{jti}"), Some(&root)).await?;
    assert!(status.is_success(), "revoking: {status}");
    let (failed, out) = exit_output(bore_local(&bin, &relay, echo.port(), Some(&token))?).await?;
    assert!(failed && out.contains("invalid secret"), "{out}");
    assert!(relay.registry.is_empty());
    relay.stop().await
}

/// Reads until the peer closes; true when it closed (EOF or reset) without sending anything.
async fn closed_without_data(s: &mut TcpStream) -> anyhow::Result<bool> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(PATIENCE, s.read(&mut b)).await.context("the relay kept the connection open")? {
        Ok(0) | Err(_) => Ok(true),
        Ok(_) => Ok(false),
    }
}

/// Polls the tunnel's live counters until `pred` holds (they do not signal changes).
async fn wait_stats(
    relay: &TestRelay,
    name: &str,
    pred: impl Fn(&postern_server::tunnel::stats::StatsSnapshot) -> bool,
) -> anyhow::Result<postern_server::tunnel::stats::StatsSnapshot> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(s) = relay.registry.get(name).map(|t| t.stats.snapshot()) {
                if pred(&s) {
                    return s;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("tunnel {name} never reached the expected counters"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bore_tunnels_obey_the_tokens_quotas_and_count_bytes_as_they_move() -> anyhow::Result<()> {
    let Some(bin) = skip() else { return Ok(()) };
    let relay = TestRelay::with_bore(|_| {}).await?;
    let limits = Limits { max_tunnels: Some(1), max_streams: Some(1), ..Limits::default() };
    let token = relay.mint_with("carol", &[], |c| c.limits = limits);
    postern_server::bore::secrets::add(&relay.state_dir, &token)?;
    let echo = origin::echo().await?;
    let ip = relay.bore_addr.context("bore")?.ip();

    let mut bore = bore_local(&bin, &relay, echo.port(), Some(&token))?;
    let port = public_port(&mut bore).await?;
    let name = format!("tcp-{port}");

    // The token's tunnel quota holds for bore clients too.
    let (failed, out) = exit_output(bore_local(&bin, &relay, echo.port(), Some(&token))?).await?;
    assert!(failed && out.contains("tunnel quota (1) is used up"), "{out}");
    assert_eq!(relay.registry.len(), 1);

    // One visitor, still connected: its bytes are counted while the connection is open.
    let data = payload(7, 100_000);
    let mut first = TcpStream::connect((ip, port)).await?;
    first.write_all(&data).await?;
    let mut back = vec![0u8; data.len()];
    first.read_exact(&mut back).await?;
    assert_eq!(sha256(&back), sha256(&data));
    let live = wait_stats(&relay, &name, |s| s.bytes_in == 100_000 && s.bytes_out == 100_000).await?;
    assert_eq!(live.active_streams, 1);

    // The stream quota is 1: a second visitor is closed at once, and counted as a quota refusal.
    let mut second = TcpStream::connect((ip, port)).await?;
    assert!(closed_without_data(&mut second).await?, "a visitor over the stream quota was served");
    let (_, metrics) = admin(&relay, http::Method::GET, "/metrics", None).await?;
    assert!(metrics.contains("postern_public_connections_refused_total{reason=\"quota\"} 1"), "{metrics}");

    // Once the first visitor leaves, the next one is served.
    drop(first);
    wait_stats(&relay, &name, |s| s.active_streams == 0).await?;
    let mut third = TcpStream::connect((ip, port)).await?;
    third.write_all(b"again").await?;
    let mut b = [0u8; 5];
    tokio::time::timeout(PATIENCE, third.read_exact(&mut b)).await.context("third visitor not served")??;
    assert_eq!(&b, b"again");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bore_tunnel_is_paced_by_the_tokens_bandwidth_quota() -> anyhow::Result<()> {
    let Some(bin) = skip() else { return Ok(()) };
    let relay = TestRelay::with_bore(|_| {}).await?;
    let rate = 256 * 1024;
    let token = relay.mint_with("dave", &[], |c| c.limits = Limits { bandwidth: Some(rate), ..Limits::default() });
    postern_server::bore::secrets::add(&relay.state_dir, &token)?;
    let echo = origin::echo().await?;
    let ip = relay.bore_addr.context("bore")?.ip();
    let mut bore = bore_local(&bin, &relay, echo.port(), Some(&token))?;
    let port = public_port(&mut bore).await?;

    // 2.5 x the rate, with one second of burst, needs at least 1.5 s in each direction.
    let data = payload(3, 5 * rate as usize / 2);
    let started = std::time::Instant::now();
    let back = echo_through((ip, port).into(), &data).await?;
    assert_eq!(sha256(&back), sha256(&data), "paced bytes must still be exact");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400), "not paced: {:?}", started.elapsed());
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bore_connection_is_reset_at_the_tokens_volume() -> anyhow::Result<()> {
    let Some(bin) = skip() else { return Ok(()) };
    let relay = TestRelay::with_bore(|_| {}).await?;
    let volume = postern_proto::volume::Volume { bytes: 100_000, period: postern_proto::volume::Period::Day };
    let token = relay.mint_with("erin", &[], |c| c.limits = Limits { volume: Some(volume), ..Limits::default() });
    postern_server::bore::secrets::add(&relay.state_dir, &token)?;
    let echo = origin::echo().await?;
    let ip = relay.bore_addr.context("bore")?.ip();
    let mut bore = bore_local(&bin, &relay, echo.port(), Some(&token))?;
    let port = public_port(&mut bore).await?;

    // 60,000 bytes there and back would be 120,000: the echo is cut at 100,000 in all, with a
    // reset, and what came back is the start of what went.
    let data = payload(9, 60_000);
    let mut conn = TcpStream::connect((ip, port)).await?;
    conn.write_all(&data).await?;
    let (back, end) = postern_e2e::read_until_end(&mut conn).await?;
    assert_eq!(end.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
    assert!(back.len() <= 40_000, "{} bytes came back past the volume", back.len());
    assert_eq!(back, data[..back.len()]);
    // And the next visitor is closed at once.
    let mut next = TcpStream::connect((ip, port)).await?;
    assert!(closed_without_data(&mut next).await?, "a visitor over the volume was served");
    relay.stop().await
}
