//! The access log end to end (`--access-log FILE`): a real relay and agent on 127.0.0.1, real
//! HTTPS requests and a real TCP connection, and the JSON lines the relay writes for them.

use http::{Request, StatusCode};
use postern_e2e::http::{drain, h1, pattern_sha256, text, PatternBody};
use postern_e2e::{echo_through, http_tunnel, json_lines, origin, payload, tcp, TestAgent, TestRelay};
use postern_server::config::AccessLogTo;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_and_connection_is_one_json_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("access.log");
    let relay = TestRelay::with_config(|c| c.access_log = AccessLogTo::File(path.clone())).await?;
    let web = origin::http("main").await?;
    let echo = origin::echo().await?;
    let token = relay.mint("tenant-a", &["logme"], false);
    let mut agent =
        TestAgent::start(relay.agent_config(&token, vec![http_tunnel("logme", web.port()), tcp(echo.port())]));
    let tunnels = agent.connected().await?;
    let label = format!("logme-{}", web.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());

    // An upload, a download and a request for a host no tunnel serves.
    let mut client = h1(&relay, &format!("{label}.localhost")).await?;
    let req = Request::post("/hash?x=1").header("host", &host).body(PatternBody::new(100_000))?;
    let resp = client.send_request(req).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    text(resp.into_body()).await?;
    client.ready().await?;
    let req = Request::get("/bytes/250000").header("host", &host).body(PatternBody::new(0))?;
    let (len, sha, _) = drain(client.send_request(req).await?.into_body()).await?;
    assert_eq!((len, sha), (250_000, pattern_sha256(250_000)));
    client.ready().await?;
    let nowhere = format!("nobody.localhost:{}", relay.https_addr.port());
    let req = Request::get("/").header("host", &nowhere).body(PatternBody::new(0))?;
    assert_eq!(client.send_request(req).await?.status(), StatusCode::NOT_FOUND);

    // One TCP connection that sends and gets back 70,000 bytes.
    let port: u16 = tunnels[1].public_url.rsplit(':').next().unwrap_or_default().parse()?;
    let public = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let data = payload(7, 70_000);
    assert_eq!(echo_through(public, &data).await?, data);

    let lines = json_lines(&path, 4).await?;
    let find = |pred: &dyn Fn(&Value) -> bool| lines.iter().find(|l| pred(l)).cloned();
    let upload = find(&|l| l["path"] == "/hash?x=1").expect("the upload's line");
    assert_eq!(upload["kind"], "http");
    assert_eq!(upload["method"], "POST");
    assert_eq!(upload["host"], host.as_str());
    assert_eq!(upload["status"], 200);
    assert_eq!(upload["tunnel"], tunnels[0].name.as_str());
    assert_eq!(upload["owner"], "tenant-a");
    assert_eq!(upload["bytes_in"], 100_000);
    assert!(upload["peer"].as_str().unwrap_or("").starts_with("127.0.0.1:"), "{upload}");
    assert!(upload["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{upload}");
    assert!(upload["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{upload}");

    let download = find(&|l| l["path"] == "/bytes/250000").expect("the download's line");
    assert_eq!((download["status"].clone(), download["bytes_out"].clone()), (200.into(), 250_000.into()));
    assert_eq!(download["bytes_in"], 0);

    let unknown = find(&|l| l["host"] == nowhere.as_str()).expect("the unknown host's line");
    assert_eq!(unknown["status"], 404);
    assert!(unknown["tunnel"].is_null() && unknown["owner"].is_null(), "{unknown}");

    let conn = find(&|l| l["kind"] == "tcp").expect("the TCP connection's line");
    assert_eq!(conn["tunnel"], tunnels[1].name.as_str());
    assert_eq!(conn["owner"], "tenant-a");
    assert_eq!((conn["bytes_in"].clone(), conn["bytes_out"].clone()), (70_000.into(), 70_000.into()));
    assert_eq!(conn["close"], "closed");
    assert!(conn.get("method").is_none() && conn.get("status").is_none(), "{conn}");
    assert_eq!(lines.len(), 4, "one line each: {lines:?}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_that_cannot_be_opened_stops_the_relay_at_start() {
    let err = TestRelay::with_config(|c| c.access_log = AccessLogTo::File("/nonexistent-dir/access.log".into()))
        .await
        .expect_err("the relay started without its access log");
    assert!(format!("{err:#}").contains("access log /nonexistent-dir/access.log"), "{err:#}");
}
