//! The client's local control API, as a program that embeds the agent drives it: start, open
//! and close tunnels live, stop, start again; through curl, with the status token.

use anyhow::Context;
use postern_client::Agent;
use postern_e2e::curl::{curl_json, tcp_addr, visit};
use postern_e2e::{echo_through, origin, serve_status, TestRelay, PATIENCE};
use serde_json::Value;

const TOKEN: &str = "local-s3cret";

/// The local API through curl.
async fn local(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    curl_json(method, &format!("http://{addr}{path}"), Some(TOKEN), body).await
}

async fn state_is(agent: &Agent, phase: &str) -> anyhow::Result<()> {
    let mut state = agent.state();
    tokio::time::timeout(PATIENCE, state.wait_for(|s| s.phase.as_str() == phase))
        .await
        .with_context(|| format!("the agent never got to {phase}"))??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_starts_the_agent_opens_and_closes_tunnels_and_stops_it() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (web, echo) = (origin::http("web").await?, origin::echo().await?);
    let mut cfg = relay.agent_config("", Vec::new());
    cfg.client_id = Some("emb".into());
    let agent = Agent::new(cfg);
    let (addr, stop) = serve_status(&agent, Some(TOKEN)).await?;

    let (code, v) = local(addr, "GET", "/api/v1/status", None).await?;
    assert_eq!((code, v["state"].as_str()), (200, Some("Not started")), "{v}");
    let (code, _) = curl_json("POST", &format!("http://{addr}/api/v1/start"), None, None).await?;
    assert_eq!(code, 401, "changes want the token too");

    let (code, v) = local(addr, "POST", "/api/v1/start", None).await?;
    assert_eq!(code, 202, "{v}");
    state_is(&agent, "connected").await?;
    let session = agent.state().borrow().session_id.clone();

    // Open an HTTP and a TCP tunnel.
    let (code, v) =
        local(addr, "POST", "/api/v1/tunnels", Some(&format!(r#"{{"kind":"http","port":{}}}"#, web.port()))).await?;
    assert_eq!(code, 201, "{v}");
    let (http_name, http_url) = (
        v["tunnel"]["name"].as_str().context("name")?.to_string(),
        v["tunnel"]["public_url"].as_str().context("url")?.to_string(),
    );
    assert_eq!(http_name, format!("emb-{}", web.port()));
    assert_eq!(visit(&relay, &http_url).await?, (200, "origin web".to_string()));
    let (code, v) =
        local(addr, "POST", "/api/v1/tunnels", Some(&format!(r#"{{"kind":"tcp","port":{}}}"#, echo.port()))).await?;
    assert_eq!(code, 201, "{v}");
    let tcp_url = v["tunnel"]["public_url"].as_str().context("url")?.to_string();
    assert_eq!(echo_through(tcp_addr(&tcp_url)?, b"embedded").await?, b"embedded");
    let (_, v) = local(addr, "GET", "/api/v1/status", None).await?;
    assert_eq!(v["public_urls"].as_array().map(Vec::len), Some(2), "{v}");

    // What cannot be a tunnel, or what the relay refuses, is an error and is not kept.
    let (code, _) = local(addr, "POST", "/api/v1/tunnels", Some(r#"{"kind":"http","port":0}"#)).await?;
    assert_eq!(code, 400);
    let (code, v) = local(addr, "POST", "/api/v1/tunnels", Some(r#"{"kind":"http","port":8081,"id":"-bad-"}"#)).await?;
    assert_eq!(code, 400, "the relay's refusal: {v}");
    assert!(v["error"].as_str().unwrap_or("").contains("not usable in a host name"), "{v}");
    assert_eq!(agent.tunnels().wanted().len(), 2);

    // Close the HTTP tunnel: gone at the relay when the answer comes.
    let (code, v) = local(addr, "DELETE", &format!("/api/v1/tunnels/{http_name}"), None).await?;
    assert_eq!((code, v["closed"].as_str()), (200, Some(http_name.as_str())), "{v}");
    assert_eq!(visit(&relay, &http_url).await?.0, 404);
    let (code, _) = local(addr, "DELETE", &format!("/api/v1/tunnels/{http_name}"), None).await?;
    assert_eq!(code, 404);
    assert_eq!(agent.state().borrow().session_id, session, "all of it on one session");

    // Stop: unregistered, Disconnected.
    let (code, v) = local(addr, "POST", "/api/v1/stop", None).await?;
    assert_eq!((code, v["state"].as_str()), (200, Some("Disconnected")), "{v}");
    relay.wait_registry(|r| r.is_empty() && r.agents().is_empty()).await?;
    let (_, v) = local(addr, "GET", "/api/v1/status", None).await?;
    assert_eq!(v["state"], "Disconnected");

    // Start again: the tunnels it was left with come back.
    let (code, _) = local(addr, "POST", "/api/v1/start", None).await?;
    assert_eq!(code, 202);
    let (code, v) = local(addr, "POST", "/api/v1/start", None).await?;
    assert_eq!((code, v["message"].as_str()), (200, Some("already running")));
    let mut state = agent.state();
    let s = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.phase.as_str() == "connected" && s.tunnels.len() == 1))
        .await??
        .clone();
    assert_ne!(s.session_id, session, "a new session");
    assert_eq!(echo_through(tcp_addr(&s.tunnels[0].public_url)?, b"again").await?, b"again");

    // The API describes itself.
    let (code, doc) = local(addr, "GET", "/api/v1/openapi.json", None).await?;
    assert_eq!(code, 200);
    for path in ["/api/v1/status", "/api/v1/tunnels", "/api/v1/tunnels/{name}", "/api/v1/stop", "/api/v1/start"] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    agent.stop().await?;
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_asked_for_while_disconnected_opens_once_connected() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let echo = origin::echo().await?;
    let agent = Agent::new(relay.agent_config("", Vec::new()));
    let (addr, stop) = serve_status(&agent, Some(TOKEN)).await?;
    // The agent is not started, so no relay can answer: with ?wait=0 the API says so at once.
    let body = format!(r#"{{"kind":"tcp","port":{}}}"#, echo.port());
    let (code, v) = local(addr, "POST", "/api/v1/tunnels?wait=0", Some(&body)).await?;
    assert_eq!((code, v["pending"].as_bool(), v["state"].as_str()), (202, Some(true), Some("Not started")), "{v}");
    let (code, _) = local(addr, "POST", "/api/v1/tunnels?wait=61", Some(&body)).await?;
    assert_eq!(code, 400, "wait is bounded");
    agent.start();
    let mut state = agent.state();
    let s = tokio::time::timeout(PATIENCE, state.wait_for(|s| s.phase.as_str() == "connected" && s.tunnels.len() == 1))
        .await??
        .clone();
    assert_eq!(echo_through(tcp_addr(&s.tunnels[0].public_url)?, b"late").await?, b"late");
    agent.stop().await?;
    stop.cancel();
    Ok(())
}

/// The example binary, built by `cargo test --workspace`; built here when a narrower run left
/// it out.
fn example(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe.parent().and_then(|deps| deps.parent()).context("target directory")?;
    let path = profile.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built =
            std::process::Command::new(cargo).args(["build", "-p", "postern-client", "--example", name]).status()?;
        anyhow::ensure!(built.success(), "building the {name} example failed");
    }
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_opens_a_tunnel_prints_its_url_and_stops() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let web = origin::http("embedded").await?;
    let mut child = tokio::process::Command::new(example("embed")?)
        .arg(format!("localhost:{}", relay.control_addr.port()))
        .arg(web.port().to_string())
        .env("POSTERN_CA", &relay.ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut url = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(PATIENCE, lines.read_line(&mut url)).await.context("no URL printed")??;
    let url = url.trim();
    assert!(url.starts_with("https://") && url.contains(&web.port().to_string()), "{url}");
    assert_eq!(visit(&relay, url).await?, (200, "origin embedded".to_string()));
    assert_eq!(relay.registry.agents().len(), 1);

    // Enter: it closes the tunnel, unregisters and exits.
    use tokio::io::AsyncWriteExt;
    child.stdin.take().context("stdin")?.write_all(b"\n").await?;
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read_to_string(&mut lines, &mut rest)).await??;
    let status = tokio::time::timeout(PATIENCE, child.wait()).await??;
    assert!(status.success(), "{status}: {rest}");
    assert_eq!(rest.trim(), "stopped: Stopped");
    relay.wait_registry(|r| r.is_empty() && r.agents().is_empty()).await?;
    Ok(())
}
