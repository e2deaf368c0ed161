//! Path routing: tunnels of one owner share the bare `<id>` host by path prefix, the longest
//! prefix on segment boundaries wins, `--strip-prefix` takes it off, WebSockets follow the same
//! rule, and nobody else can put a path under that host.

use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use postern_client::Agent;
use postern_e2e::curl::visit;
use postern_e2e::http::{admin_json, tls_connect};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay, PATIENCE};
use postern_proto::{RefuseCode, TunnelSpec};
use tokio_tungstenite::tungstenite::Message;

/// An HTTP tunnel spec for `port` under `id`, serving `path` of `<id>`.
fn at(id: &str, port: u16, path: &str) -> TunnelSpec {
    TunnelSpec { path: Some(path.into()), ..http_tunnel(id, port) }
}

/// Starts a client of `token` with `tunnels` and waits for them.
async fn client(
    relay: &TestRelay,
    token: &str,
    client_id: &str,
    tunnels: Vec<TunnelSpec>,
) -> anyhow::Result<TestAgent> {
    let mut cfg = relay.agent_config(token, tunnels);
    cfg.client_id = Some(client_id.into());
    let mut agent = TestAgent::start(cfg);
    agent.connected().await?;
    Ok(agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_share_a_host_by_path_and_the_longest_prefix_wins() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (root, api, v2) = (origin::http("root").await?, origin::http("api").await?, origin::http("v2").await?);
    let owner = relay.mint("ws1", &["ws1*"], false);
    // Two clients of the same owner: the whole host from one, /api from the other.
    let _root = client(&relay, &owner, "ws1-main", vec![http_tunnel("ws1", root.port())]).await?;
    let mut paths = client(&relay, &owner, "ws1-api", vec![at("ws1", api.port(), "/api")]).await?;
    let grant = paths.connected().await?.first().cloned().context("grant")?;
    let port = relay.https_addr.port();
    let host = format!("https://ws1.localhost:{port}");
    assert_eq!(grant.default_url.as_deref(), Some(format!("{host}/api").as_str()), "the grant names the path URL");

    let r = &relay;
    let body = |path: &str| {
        let url = format!("{host}{path}");
        async move { anyhow::Ok(visit(r, &url).await?.1) }
    };
    assert_eq!(body("/").await?, "origin root");
    for p in ["/api", "/api/", "/api/users", "/api?q=1"] {
        assert_eq!(body(p).await?, "origin api", "{p}");
    }
    for p in ["/apix", "/ap", "/x/api", "/API"] {
        assert_eq!(body(p).await?, "origin root", "{p} is not under /api");
    }
    // The path tunnel's own name still serves all of it.
    let own = format!("https://ws1-{}.localhost:{port}/anything", api.port());
    assert_eq!(visit(&relay, &own).await?.1, "origin api");

    // A deeper prefix is no conflict, and wins where it covers; the same prefix is taken.
    let _v2 = client(&relay, &owner, "ws1-v2", vec![at("ws1", v2.port(), "/api/v2")]).await?;
    assert_eq!(body("/api/v2/items").await?, "origin v2");
    assert_eq!(body("/api/v20").await?, "origin api");
    let again = Agent::new(relay.agent_config(&owner, Vec::new()));
    again.start();
    let taken = again.add(at("ws1", v2.port(), "/api"), PATIENCE).await;
    assert!(
        matches!(taken, Err(postern_client::ChangeError::Relay { code: RefuseCode::Unavailable, .. })),
        "{taken:?}"
    );

    // Another owner, even with a token for the same ids, cannot put a path under the host.
    let mallory = relay.mint("mallory", &["ws1*"], false);
    let other = Agent::new(relay.agent_config(&mallory, Vec::new()));
    other.start();
    let refused = other.add(at("ws1", v2.port(), "/evil"), PATIENCE).await;
    assert!(matches!(refused, Err(postern_client::ChangeError::Relay { .. })), "{refused:?}");
    assert_eq!(body("/evil").await?, "origin root");

    // The API shows the path.
    let (code, view) =
        admin_json(&relay, http::Method::GET, &format!("/api/v1/tunnels/ws1-{}", api.port()), Some(&owner)).await?;
    assert_eq!(code, http::StatusCode::OK);
    assert_eq!((view["path"].as_str(), view["alias"].as_str()), (Some("/api"), None), "{view}");

    // When the /api tunnel goes, its paths fall back to the whole host.
    paths.shutdown.cancel();
    relay.wait_registry(|r| r.get(&format!("ws1-{}", api.port())).is_none()).await?;
    assert_eq!(body("/api/users").await?, "origin root");
    again.stop().await?;
    other.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_hands_the_service_the_path_without_it() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let svc = origin::http("svc").await?;
    let stripped = TunnelSpec { strip_prefix: true, ..at("app", svc.port(), "/svc") };
    let _a = client(&relay, "", "app", vec![stripped]).await?;
    let host = format!("https://app.localhost:{}", relay.https_addr.port());
    // The origin answers /headers with the request's headers, anything else with its name:
    // /svc/headers reaches it as /headers.
    let (code, body) = visit(&relay, &format!("{host}/svc/headers")).await?;
    assert_eq!(code, 200);
    assert!(body.to_ascii_lowercase().contains("x-forwarded-host: app.localhost"), "{body}");
    assert_eq!(visit(&relay, &format!("{host}/svc")).await?.1, "origin svc");
    // Nothing serves the rest of the host.
    assert_eq!(visit(&relay, &format!("{host}/other")).await?.0, 404);

    // Without --strip-prefix, /plain/headers is what it gets. This one is opened live, as an
    // orchestrator would through an API.
    let plain = origin::http("plain").await?;
    let live = Agent::new(relay.agent_config("", Vec::new()));
    live.start();
    let grant = live.add(at("app", plain.port(), "/plain"), PATIENCE).await?.context("no answer")?;
    assert_eq!(grant.default_url, Some(format!("{host}/plain")));
    assert_eq!(visit(&relay, &format!("{host}/plain/headers")).await?.1, "origin plain");
    live.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_a_path_reaches_that_path_s_tunnel() -> anyhow::Result<()> {
    let relay = TestRelay::start().await?;
    let (root, ws) = (origin::http("root").await?, origin::websocket_echo().await?);
    let _a = client(&relay, "", "sock", vec![http_tunnel("sock", root.port()), at("sock", ws.port(), "/ws")]).await?;
    let host = format!("sock.localhost:{}", relay.https_addr.port());
    let tls = tls_connect(&relay, "sock.localhost", &[b"http/1.1"]).await?;
    let (mut socket, resp) = tokio_tungstenite::client_async(format!("wss://{host}/ws/chat"), tls).await?;
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("over a path")).await?;
    let back = tokio::time::timeout(PATIENCE, socket.next()).await?.context("closed")??;
    assert_eq!(back, Message::text("over a path"));
    socket.close(None).await?;
    // The same upgrade outside /ws reaches the plain HTTP origin, which does not switch.
    let tls = tls_connect(&relay, "sock.localhost", &[b"http/1.1"]).await?;
    let elsewhere = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("wss://{host}/wsx"), tls),
    )
    .await?;
    assert!(elsewhere.is_err(), "/wsx is not under /ws");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_is_shared_by_path_too() -> anyhow::Result<()> {
    let relay = TestRelay::with_config(|c| c.allow_domains = vec!["*.allowed.test".into()]).await?;
    let (root, api) = (origin::http("shop").await?, origin::http("shop-api").await?);
    let owner = relay.mint("shop", &["shop*"], false);
    let domain = Some("app.allowed.test".to_string());
    let whole = TunnelSpec { domain: domain.clone(), ..http_tunnel("shop", root.port()) };
    let _a = client(&relay, &owner, "shop-main", vec![whole]).await?;
    let mut b = client(
        &relay,
        &owner,
        "shop-api",
        vec![TunnelSpec { domain: domain.clone(), ..at("shop", api.port(), "/api") }],
    )
    .await?;
    let port = relay.http_addr.port();
    let grant = b.connected().await?.first().cloned().context("grant")?;
    assert_eq!(grant.domain_url, Some(format!("https://app.allowed.test:{}/api", relay.https_addr.port())));

    // Over plain HTTP, so no certificate for the domain is needed.
    let get = |path: &'static str| {
        let resolve = format!("app.allowed.test:{port}:127.0.0.1");
        async move {
            postern_e2e::curl::curl(&["--resolve", &resolve, &format!("http://app.allowed.test:{port}{path}")]).await
        }
    };
    assert_eq!(get("/").await?.1, "origin shop");
    assert_eq!(get("/api/orders").await?.1, "origin shop-api");
    assert_eq!(get("/apix").await?.1, "origin shop");

    // Another owner cannot take a path of the domain.
    let mallory = relay.mint("mallory", &["mal*"], false);
    let other = Agent::new(relay.agent_config(&mallory, Vec::new()));
    other.start();
    let spec = TunnelSpec { domain: domain.clone(), ..at("mal", api.port(), "/evil") };
    let refused = other.add(spec, PATIENCE).await;
    assert!(
        matches!(&refused, Err(postern_client::ChangeError::Relay { message, .. }) if message.contains("app.allowed.test")),
        "{refused:?}"
    );
    assert_eq!(get("/evil").await?.1, "origin shop");
    other.stop().await?;
    Ok(())
}
