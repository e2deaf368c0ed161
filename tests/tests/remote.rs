//! Remote-managed tunnels: an orchestrator opens and closes tunnels on a running agent through
//! the relay's admin API, driven with curl as the README shows; the agent refuses what it was
//! not told to allow; the set it was given comes back after a relay restart.

use anyhow::Context;
use postern_client::{AllowRemote, Connections};
use postern_e2e::curl::{curl_json, tcp_addr, visit};
use postern_e2e::{echo_through, http_tunnel, origin, TestAgent, TestRelay, PATIENCE};
use serde_json::Value;

const ROOT: &str = "root-admin-token";

/// The relay's admin API through curl.
async fn api(
    relay: &TestRelay,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    curl_json(method, &format!("http://{}{path}", relay.admin_addr), Some(token), body).await
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> =
        v["tunnels"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(String::from)).collect();
    n.sort();
    n
}

/// Waits until the agent's state lists `n` tunnels.
async fn agent_lists(agent: &mut TestAgent, n: usize) -> anyhow::Result<()> {
    tokio::time::timeout(PATIENCE, agent.state.wait_for(|s| s.tunnels.len() == n))
        .await
        .with_context(|| format!("the agent never listed {n} tunnels"))??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_adds_and_removes_tunnels_on_a_running_agent() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.admin_token = Some(ROOT.into())).await?;
    let (first, added, echo) = (origin::http("first").await?, origin::http("added").await?, origin::echo().await?);
    let owner = relay.mint("ws1", &["ws1*"], false);
    let mut cfg = relay.agent_config(&owner, vec![http_tunnel("ws1", first.port())]);
    cfg.client_id = Some("ws1".into());
    // Two connections: a tunnel opened live must be served by both, opened once.
    cfg.connections = Connections::Fixed(2);
    cfg.allow_remote = AllowRemote::Ports(vec![(added.port(), added.port()), (echo.port(), echo.port())]);
    let mut agent = TestAgent::start(cfg);
    agent.connected().await?;
    relay.wait_registry(|r| r.agents().len() == 2).await?;
    let session = agent.state.borrow().session_id.clone().context("session id")?;
    let (code, body) =
        visit(&relay, &format!("https://ws1-{}.localhost:{}/", first.port(), relay.https_addr.port())).await?;
    assert_eq!((code, body.as_str()), (200, "origin first"));

    // 1. Expose a port, by the client's stable name, with the owner's token.
    let add = format!(r#"{{"kind":"http","port":{}}}"#, added.port());
    let (code, answer) = api(&relay, &owner, "POST", "/api/v1/agents/by-client/ws1/tunnels", Some(&add)).await?;
    assert_eq!(code, 201, "{answer}");
    let http_url = answer["tunnel"]["public_url"].as_str().context("url")?.to_string();
    let http_name = answer["tunnel"]["name"].as_str().context("name")?.to_string();
    assert_eq!(http_name, format!("ws1-{}", added.port()));
    let (code, body) = visit(&relay, &http_url).await?;
    assert_eq!((code, body.as_str()), (200, "origin added"));
    let t = relay.registry.get(&http_name).context("registered")?;
    relay.wait_registry(|_| t.sessions().len() == 2).await.context("both connections serve the new tunnel")?;

    // 2. A TCP tunnel, by session id, with the admin token.
    let add = format!(r#"{{"kind":"tcp","port":{}}}"#, echo.port());
    let path = format!("/api/v1/agents/{session}/tunnels");
    let (code, answer) = api(&relay, ROOT, "POST", &path, Some(&add)).await?;
    assert_eq!(code, 201, "{answer}");
    let tcp_url = answer["tunnel"]["public_url"].as_str().context("url")?.to_string();
    let tcp_name = answer["tunnel"]["name"].as_str().context("name")?.to_string();
    assert_eq!(echo_through(tcp_addr(&tcp_url)?, b"live tcp").await?, b"live tcp");
    let t = relay.registry.get(&tcp_name).context("registered")?;
    relay.wait_registry(|_| t.sessions().len() == 2).await.context("one TCP tunnel, served by both")?;
    assert_eq!(relay.registry.list().iter().filter(|t| t.kind == postern_proto::TunnelKind::Tcp).count(), 1);

    // Asking again for the same tunnel answers the same one.
    let (code, again) = api(&relay, &owner, "POST", &path, Some(&add)).await?;
    assert_eq!((code, again["tunnel"]["name"].as_str()), (201, Some(tcp_name.as_str())));

    // 3. The list, from the relay and from the agent itself.
    let (code, list) = api(&relay, &owner, "GET", &path, None).await?;
    assert_eq!(code, 200);
    let mut want = vec![format!("ws1-{}", first.port()), http_name.clone(), tcp_name.clone()];
    want.sort();
    assert_eq!(names(&list), want);
    agent_lists(&mut agent, 3).await?;

    // 4. Close both again.
    let (code, answer) = api(&relay, &owner, "DELETE", &format!("{path}/{http_name}"), None).await?;
    assert_eq!((code, answer["closed"].as_str()), (200, Some(http_name.as_str())), "{answer}");
    let (code, _) = visit(&relay, &http_url).await?;
    assert_eq!(code, 404, "a closed tunnel is not found");
    let (code, answer) = api(&relay, ROOT, "DELETE", &format!("{path}/{tcp_name}"), None).await?;
    assert_eq!(code, 200, "{answer}");
    assert!(echo_through(tcp_addr(&tcp_url)?, b"gone").await.is_err(), "the public port is closed");
    let (code, _) = api(&relay, ROOT, "DELETE", &format!("{path}/{tcp_name}"), None).await?;
    assert_eq!(code, 404, "closing it twice");
    agent_lists(&mut agent, 1).await?;
    let (code, body) =
        visit(&relay, &format!("https://ws1-{}.localhost:{}/", first.port(), relay.https_addr.port())).await?;
    assert_eq!((code, body.as_str()), (200, "origin first"), "the command line's tunnel stays");

    // All of it on the same sessions: nothing reconnected.
    let s = agent.state.borrow().clone();
    assert_eq!((s.session_id.as_deref(), s.sessions), (Some(session.as_str()), 2));
    agent.shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_what_it_was_not_told_to_allow() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.admin_token = Some(ROOT.into())).await?;
    let web = origin::http("web").await?;
    let alice = relay.mint("alice", &["alice*"], false);
    let bob = relay.mint("bob", &["bob*"], false);

    // Off by default: nothing may be opened or closed from the relay.
    let mut cfg = relay.agent_config(&alice, vec![http_tunnel("alice", web.port())]);
    cfg.client_id = Some("alice".into());
    let mut closed = TestAgent::start(cfg);
    closed.connected().await?;
    let add = r#"{"kind":"tcp","port":22}"#;
    let (code, answer) = api(&relay, ROOT, "POST", "/api/v1/agents/by-client/alice/tunnels", Some(add)).await?;
    assert_eq!((code, answer["error"]["code"].as_str()), (403, Some("agent_refused")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or("").contains("--allow-remote"), "{answer}");
    let own = format!("/api/v1/agents/by-client/alice/tunnels/alice-{}", web.port());
    let (code, answer) = api(&relay, ROOT, "DELETE", &own, None).await?;
    assert_eq!((code, answer["error"]["code"].as_str()), (403, Some("agent_refused")), "{answer}");
    assert_eq!(relay.registry.len(), 1, "nothing changed");
    closed.shutdown.cancel();
    let _ = closed.task.await;

    // A list allows its ports only; the relay's own rules still apply to what it allows.
    let mut cfg = relay.agent_config(&alice, vec![http_tunnel("alice", web.port())]);
    cfg.client_id = Some("alice".into());
    cfg.allow_remote = "3000-3999".parse().map_err(anyhow::Error::msg)?;
    let mut agent = TestAgent::start(cfg);
    agent.connected().await?;
    let (code, answer) = api(&relay, &alice, "POST", "/api/v1/agents/by-client/alice/tunnels", Some(add)).await?;
    assert_eq!(code, 403, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or("").contains("outside"), "{answer}");
    let other_id = r#"{"kind":"http","port":3000,"id":"mallory"}"#;
    let (code, answer) = api(&relay, &alice, "POST", "/api/v1/agents/by-client/alice/tunnels", Some(other_id)).await?;
    assert_eq!((code, answer["error"]["code"].as_str()), (403, Some("forbidden")), "the token's ids: {answer}");
    let (code, answer) = api(
        &relay,
        &alice,
        "POST",
        "/api/v1/agents/by-client/alice/tunnels",
        Some(r#"{"kind":"http","port":3000,"colour":"red"}"#),
    )
    .await?;
    assert_eq!(code, 400, "an unknown field is an error: {answer}");

    // Another owner cannot even find it; an unknown agent is not found.
    let (code, _) = api(&relay, &bob, "POST", "/api/v1/agents/by-client/alice/tunnels", Some(add)).await?;
    assert_eq!(code, 404);
    let session = agent.state.borrow().session_id.clone().context("session")?;
    let (code, _) = api(&relay, &bob, "POST", &format!("/api/v1/agents/{session}/tunnels"), Some(add)).await?;
    assert_eq!(code, 403);
    let (code, _) = api(&relay, ROOT, "GET", "/api/v1/agents/nosuchagent/tunnels", None).await?;
    assert_eq!(code, 404);

    // Refused changes left the agent as it was, on its first session.
    assert_eq!(relay.registry.len(), 1);
    agent_lists(&mut agent, 1).await?;
    assert_eq!(agent.state.borrow().sessions, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_added_live_come_back_after_a_relay_restart() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.admin_token = Some(ROOT.into())).await?;
    let (added, echo) = (origin::http("added").await?, origin::echo().await?);
    let owner = relay.mint("ws2", &["ws2*"], false);
    // An agent with no tunnel of its own, waiting to be told.
    let mut cfg = relay.agent_config(&owner, Vec::new());
    cfg.client_id = Some("ws2".into());
    cfg.allow_remote = AllowRemote::Any;
    let mut agent = TestAgent::start(cfg);
    assert!(agent.connected().await?.is_empty());
    for add in
        [format!(r#"{{"kind":"http","port":{}}}"#, added.port()), format!(r#"{{"kind":"tcp","port":{}}}"#, echo.port())]
    {
        let (code, answer) = api(&relay, &owner, "POST", "/api/v1/agents/by-client/ws2/tunnels", Some(&add)).await?;
        assert_eq!(code, 201, "{answer}");
    }
    agent_lists(&mut agent, 2).await?;

    let relay = relay.restart().await?;
    tokio::time::timeout(PATIENCE, agent.state.wait_for(|s| s.sessions >= 2 && s.tunnels.len() == 2))
        .await
        .context("the agent did not reopen its tunnels")??;
    relay.wait_registry(|r| r.len() == 2).await?;
    let (code, list) = api(&relay, &owner, "GET", "/api/v1/agents/by-client/ws2/tunnels", None).await?;
    assert_eq!(code, 200);
    let tunnels = list["tunnels"].as_array().context("tunnels")?;
    for t in tunnels {
        let url = t["public_url"].as_str().context("url")?;
        match t["kind"].as_str() {
            Some("http") => assert_eq!(visit(&relay, url).await?, (200, "origin added".to_string())),
            _ => assert_eq!(echo_through(tcp_addr(url)?, b"again").await?, b"again"),
        }
    }
    assert_eq!(tunnels.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_relay_of_a_cluster_drives_a_client_connected_to_another() -> anyhow::Result<()> {
    let cluster = postern_e2e::cluster::TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let echo = origin::echo().await?;
    let owner = cluster.mint("ws3", &["ws3*"]);
    let other = cluster.mint("ws4", &["ws4*"]);
    // The client is on relay A; the orchestrator asks relay B.
    let mut cfg = cluster.agent_config(&owner, Vec::new(), &[0]);
    cfg.client_id = Some("ws3".into());
    cfg.allow_remote = AllowRemote::Any;
    let mut agent = TestAgent::start(cfg);
    agent.connected().await?;
    let add = format!(r#"{{"kind":"tcp","port":{}}}"#, echo.port());
    let (code, answer) = api(b, &owner, "POST", "/api/v1/agents/by-client/ws3/tunnels", Some(&add)).await?;
    assert_eq!(code, 201, "{answer}");
    let name = answer["tunnel"]["name"].as_str().context("name")?.to_string();
    assert!(a.registry.get(&name).is_some(), "opened on the client's relay");
    let port: u16 = name.trim_start_matches("tcp-").parse()?;
    assert_eq!(echo_through(std::net::SocketAddr::from(([127, 0, 0, 1], port)), b"via b").await?, b"via b");
    let (code, list) = api(b, &owner, "GET", "/api/v1/agents/by-client/ws3/tunnels", None).await?;
    assert_eq!((code, names(&list)), (200, vec![name.clone()]));

    // Another tenant finds nothing there; a refusal comes back from the client as it is.
    let (code, _) = api(b, &other, "GET", "/api/v1/agents/by-client/ws3/tunnels", None).await?;
    assert_eq!(code, 404);
    let session = agent.state.borrow().session_id.clone().context("session")?;
    let (code, _) = api(b, &other, "DELETE", &format!("/api/v1/agents/{session}/tunnels/{name}"), None).await?;
    assert_eq!(code, 403, "by session id, another tenant's client is forbidden");
    let (code, _) = api(b, &owner, "GET", "/api/v1/agents/by-client/nobody/tunnels", None).await?;
    assert_eq!(code, 404);

    let (code, answer) = api(b, &owner, "DELETE", &format!("/api/v1/agents/{session}/tunnels/{name}"), None).await?;
    assert_eq!(code, 200, "{answer}");
    assert!(a.registry.get(&name).is_none());
    assert_eq!(agent.state.borrow().sessions, 1);
    Ok(())
}
