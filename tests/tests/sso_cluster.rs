//! Visitor access on a cluster of relays (a real Redis): a tunnel's share links, grants and
//! sessions live on the relay that holds the tunnel, and the admin API of any relay manages
//! them; a visitor who reaches another relay is forwarded to that one.

use http::Method;
use postern_e2e::cluster::TestCluster;
use postern_e2e::http::{admin_json, admin_send_json};
use postern_e2e::idp::{visitor, walk};
use postern_e2e::{http_tunnel, origin, TestAgent};
use postern_proto::access::{Access, Login};

fn host_of(url: &str) -> String {
    url.trim_start_matches("https://").split(':').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_relay_of_a_cluster_manages_a_tunnels_visitors() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let (a, b) = (cluster.relay(0), cluster.relay(1));
    let web = origin::http("app").await?;
    let mut spec = http_tunnel("app", web.port());
    spec.access = Some(Access { login: Some(Login { emails: Vec::new() }), ..Access::default() });
    // A subject is any text without control characters; it crosses the peer link intact.
    let owner = a.mint("équipe", &["app*"], false);
    let other = a.mint("someone-else", &[], false);
    // The agent is on relay A; everything below goes through relay B.
    let mut agent = TestAgent::start(a.agent_config(&owner, vec![spec]));
    let grant = agent.connected().await?.remove(0);
    let (name, host) = (grant.name.clone(), host_of(&grant.public_url));
    let url = format!("https://{host}:{}", b.https_addr.port());

    let shares = format!("/api/v1/tunnels/{name}/shares");
    let (status, _) = admin_send_json(b, Method::POST, &shares, &other, r#"{"ttl_secs": 60}"#).await?;
    assert_eq!(status, 404, "another tenant's tunnel is unknown on every relay");
    let (status, share) = admin_send_json(b, Method::POST, &shares, &owner, r#"{"ttl_secs": 60}"#).await?;
    assert_eq!(status, 201, "{share}");
    let grants = format!("/api/v1/tunnels/{name}/grants");
    let (status, _) = admin_send_json(b, Method::POST, &grants, &owner, r#"{"email": "carol@y.org"}"#).await?;
    assert_eq!(status, 201);
    let (_, listed) = admin_json(b, Method::GET, &grants, Some(&owner)).await?;
    assert_eq!(listed["grants"][0]["email"], "carol@y.org", "{listed}");

    // A visitor with the link, at relay B: forwarded to A, which opens the session.
    let pass = share["url"].as_str().and_then(|u| u.split_once("pass=")).map(|(_, p)| p).unwrap_or_default();
    let client = visitor(b, &[&host])?;
    let hops = walk(&client, client.get(format!("{url}/.postern/share?pass={pass}"))).await?;
    assert_eq!(hops.last().map(|h| h.status.as_u16()), Some(200), "{hops:#?}");
    let body = client.get(format!("{url}/headers")).send().await?.text().await?;
    assert!(body.contains("x-postern-pass: share:"), "{body}");

    // Relay B lists the session relay A holds, and revoking the link through B ends it.
    let sessions = format!("/api/v1/sessions?tunnel={name}");
    let (_, open) = admin_json(b, Method::GET, &sessions, Some(&owner)).await?;
    assert_eq!(open["sessions"].as_array().map(Vec::len), Some(1), "{open}");
    let (_, none) = admin_json(b, Method::GET, &sessions, Some(&other)).await?;
    assert_eq!(none["sessions"].as_array().map(Vec::len), Some(0), "another tenant sees none: {none}");
    let revoke = format!("/api/v1/shares/{}", share["id"].as_str().unwrap_or_default());
    let (status, _) = admin_json(b, Method::DELETE, &revoke, Some(&other)).await?;
    assert_eq!(status, 404);
    let (status, _) = admin_json(b, Method::DELETE, &revoke, Some(&owner)).await?;
    assert_eq!(status, 200);
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 401);
    let (_, gone) = admin_json(b, Method::GET, &sessions, Some(&owner)).await?;
    assert_eq!(gone["sessions"].as_array().map(Vec::len), Some(0), "{gone}");

    // Ending sessions by tunnel through B reaches A too.
    let (_, second) = admin_send_json(b, Method::POST, &shares, &owner, r#"{"ttl_secs": 60}"#).await?;
    let pass = second["url"].as_str().and_then(|u| u.split_once("pass=")).map(|(_, p)| p).unwrap_or_default();
    walk(&client, client.get(format!("{url}/.postern/share?pass={pass}"))).await?;
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 200);
    let (_, ended) = admin_json(b, Method::DELETE, &sessions, Some(&owner)).await?;
    assert_eq!(ended["ended"], 1, "{ended}");
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 401);
    Ok(())
}
