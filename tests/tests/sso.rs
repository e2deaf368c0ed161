//! Visitor sign-in against a real OpenID provider (node-oidc-provider on loopback): the code
//! flow with PKCE through the relay's auth host and the one-time code hop, sessions ended
//! through the API, grants, share links, service tokens, and every bad input the issue names.

use http::Method;
use postern_e2e::http::{admin_json, admin_send_json};
use postern_e2e::idp::{self, sign_in, visitor, walk, Idp, USERS};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay};
use postern_proto::access::{Access, Login};
use postern_server::visitor::seal::Sealer;

const ALICE: usize = 0;
const BOB: usize = 1;

/// A relay signing visitors in with `idp`, the provider registered with it.
async fn relay_with(idp: &mut Idp) -> anyhow::Result<TestRelay> {
    let relay = TestRelay::with_config(|c| idp.configure(c)).await?;
    idp.register(relay.https_addr.port()).await?;
    Ok(relay)
}

fn login(emails: &[&str]) -> Option<Access> {
    Some(Access { login: Some(Login { emails: emails.iter().map(|e| e.to_string()).collect() }), ..Access::default() })
}

/// An agent of `owner` serving an HTTP origin as `id`, requiring sign-in for `emails`; the
/// tunnel's name and URL.
async fn tunnel(
    relay: &TestRelay,
    owner: &str,
    id: &str,
    emails: &[&str],
) -> anyhow::Result<(String, String, TestAgent)> {
    let origin = origin::http("app").await?;
    let mut spec = http_tunnel(id, origin.port());
    spec.access = login(emails);
    let token = relay.mint(owner, &[&format!("{id}*")], false);
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![spec]));
    let grant = agent.connected().await?.into_iter().next().ok_or_else(|| anyhow::anyhow!("no tunnel"))?;
    Ok((grant.name, grant.public_url, agent))
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("https://").split(':').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn sign_in_reaches_the_service_and_ending_sessions_sends_back_to_sign_in() -> anyhow::Result<()> {
    let mut idp = Idp::start(0).await?;
    let relay = relay_with(&mut idp).await?;
    let (name, url, _agent) = tunnel(&relay, "team", "app", &["*@example.com"]).await?;
    let client = visitor(&relay, &[&host_of(&url)])?;

    // A program gets a clear 401 that says how to get in.
    let resp = client.get(format!("{url}/headers")).send().await?;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["postern-error"], "sign-in-required");
    assert!(resp.headers()["www-authenticate"].to_str()?.starts_with("Bearer"));

    let hops = sign_in(&client, &format!("{url}/headers?x=1"), &USERS[ALICE]).await?;
    let last = hops.last().expect("hops");
    assert_eq!(last.status, 200, "{hops:#?}");
    assert_eq!(last.url.as_str(), format!("{url}/headers?x=1"), "back where the visitor started, no code in the URL");
    assert!(last.body.contains("x-postern-email: alice@example.com"), "{}", last.body);
    assert!(last.body.contains("x-postern-groups: eng"));
    // The path went through the auth host, PKCE included, and the code hop on the tunnel's host.
    let auth = hops.iter().find(|h| h.url.path() == "/login").expect("auth host");
    let to_idp = auth.headers["location"].to_str()?;
    assert!(to_idp.contains("code_challenge_method=S256") && to_idp.contains("nonce="), "{to_idp}");
    let hop = hops.iter().find(|h| h.url.path() == "/.postern/auth").expect("code hop");
    let cookie = hop.headers["set-cookie"].to_str()?;
    for attr in ["__Host-postern=", "HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "scoped to the tunnel's host: {cookie}");

    // The public cannot claim an identity, and the service never sees the session cookie.
    let resp = client.get(format!("{url}/headers")).header("x-postern-email", "mallory@example.com").send().await?;
    let body = resp.text().await?;
    assert!(body.contains("x-postern-email: alice@example.com") && !body.contains("mallory"), "{body}");
    assert!(!body.contains("__Host-postern"), "{body}");

    // The owner sees the session; another tenant does not.
    let owner = relay.mint("team", &[], false);
    let other = relay.mint("someone-else", &[], false);
    let (_, list) = admin_json(&relay, Method::GET, "/api/v1/sessions", Some(&owner)).await?;
    assert_eq!(list["sessions"][0]["email"], "alice@example.com", "{list}");
    assert_eq!(list["sessions"][0]["tunnel"], name.as_str());
    let (_, theirs) = admin_json(&relay, Method::GET, "/api/v1/sessions", Some(&other)).await?;
    assert_eq!(theirs["sessions"].as_array().map(Vec::len), Some(0));
    let (status, _) =
        admin_json(&relay, Method::DELETE, "/api/v1/sessions?email=alice@example.com", Some(&other)).await?;
    assert_eq!(status, 200);
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 200, "another tenant ended nothing");

    // Ending alice's sessions takes effect on the very next request: back to sign-in.
    let path = format!("/api/v1/sessions?email=alice@example.com&tunnel={name}");
    let (status, ended) = admin_json(&relay, Method::DELETE, &path, Some(&owner)).await?;
    assert_eq!((status.as_u16(), ended["ended"].as_u64()), (200, Some(1)), "{ended}");
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 401);
    let hops = walk(&client, client.get(format!("{url}/headers"))).await?;
    assert!(hops.iter().any(|h| h.url.path() == "/login"), "sent to sign in again: {hops:#?}");
    assert!(hops.iter().any(|h| h.url.as_str().starts_with(&idp.issuer)), "through the provider: {hops:#?}");
    // The provider remembers alice (its own session), so she is back in with a new session.
    assert_eq!(hops.last().expect("hop").status, 200);
    let (_, list) = admin_json(&relay, Method::GET, "/api/v1/sessions", Some(&owner)).await?;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1), "{list}");
    Ok(())
}

#[tokio::test]
async fn an_address_outside_the_allowlist_is_refused_until_granted() -> anyhow::Result<()> {
    let mut idp = Idp::start(0).await?;
    let relay = relay_with(&mut idp).await?;
    let (name, url, _agent) = tunnel(&relay, "team", "app", &["*@example.com"]).await?;
    let client = visitor(&relay, &[&host_of(&url)])?;
    let hops = sign_in(&client, &format!("{url}/headers"), &USERS[BOB]).await?;
    let last = hops.last().expect("hops");
    assert_eq!(last.status, 403, "{hops:#?}");
    assert_eq!(last.headers["postern-error"], "sign-in-denied");

    // The owner grants bob; another tenant cannot.
    let owner = relay.mint("team", &[], false);
    let other = relay.mint("someone-else", &[], false);
    let grant = r#"{"email": "Bob@Other.org"}"#;
    let path = format!("/api/v1/tunnels/{name}/grants");
    let (status, _) = admin_send_json(&relay, Method::POST, &path, &other, grant).await?;
    assert_eq!(status, 404);
    let (status, made) = admin_send_json(&relay, Method::POST, &path, &owner, grant).await?;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["email"], "bob@other.org");
    let hops = sign_in(&client, &format!("{url}/headers"), &USERS[BOB]).await?;
    let last = hops.last().expect("hops");
    assert_eq!(last.status, 200, "{hops:#?}");
    assert!(last.body.contains("x-postern-email: bob@other.org"));
    let (_, list) = admin_json(&relay, Method::GET, &path, Some(&owner)).await?;
    assert_eq!(list["grants"][0]["email"], "bob@other.org");

    // Taking the grant back ends his session at once.
    let (status, gone) =
        admin_json(&relay, Method::DELETE, &format!("{path}?email=bob@other.org"), Some(&owner)).await?;
    assert_eq!((status.as_u16(), gone["sessions_ended"].as_u64()), (200, Some(1)), "{gone}");
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 401);
    Ok(())
}

#[tokio::test]
async fn forged_expired_and_replayed_states_codes_and_cookies_are_refused() -> anyhow::Result<()> {
    let mut idp = Idp::start(0).await?;
    let relay = relay_with(&mut idp).await?;
    let (_, url, _a) = tunnel(&relay, "team", "app", &["*@example.com"]).await?;
    let (_, url2, _b) = tunnel(&relay, "team", "two", &["*@example.com"]).await?;
    let client = visitor(&relay, &[&host_of(&url), &host_of(&url2)])?;
    let auth = format!("https://auth.localhost:{}", relay.https_addr.port());
    let failed = |resp: &reqwest::Response| {
        (resp.status().as_u16(), resp.headers().get("postern-error").and_then(|v| v.to_str().ok()).map(String::from))
    };
    let sign_in_failed = (400, Some("sign-in-failed".to_string()));

    // A forged state (no flow cookie for it) and a forged code.
    let resp = client.get(format!("{auth}/callback?state=forged&code=forged")).send().await?;
    assert_eq!(failed(&resp), sign_in_failed);
    let resp = client.get(format!("{url}/.postern/auth?code=forged")).send().await?;
    assert_eq!(failed(&resp), sign_in_failed);
    // A redirect to anywhere but a tunnel host is refused (no open redirect).
    let resp = client.get(format!("{auth}/login?rd=https%3A%2F%2Fevil.test%2F")).send().await?;
    assert_eq!(failed(&resp), sign_in_failed);
    // Nor through a tunnel host's path that a browser reads as another host (`/\evil.test`).
    let sneaky = format!("{url}/%5Cevil.test").replace(':', "%3A").replace('/', "%2F");
    let resp = client.get(format!("{auth}/login?rd={sneaky}")).send().await?;
    assert_eq!(failed(&resp), sign_in_failed);

    let hops = sign_in(&client, &format!("{url}/"), &USERS[ALICE]).await?;
    assert_eq!(hops.last().expect("hops").status, 200, "{hops:#?}");
    let callback = hops.iter().find(|h| h.url.path() == "/callback").expect("callback").url.clone();
    let code_hop = hops.iter().find(|h| h.url.path() == "/.postern/auth").expect("code hop").url.clone();
    // Replays: the state and the code work once.
    assert_eq!(failed(&client.get(callback).send().await?), sign_in_failed);
    assert_eq!(failed(&client.get(code_hop.clone()).send().await?), sign_in_failed);
    // A code taken to another tunnel's host.
    let moved = code_hop.as_str().replace(&host_of(&url), &host_of(&url2));
    assert_eq!(failed(&client.get(moved).send().await?), sign_in_failed);
    // An expired code, sealed with the relay's own key (as only the relay could).
    let sealer = Sealer::new(&relay.key);
    let expired = sealer.seal(
        "code",
        &serde_json::json!({"id": "x", "person": {"email": "alice@example.com"}, "host": host_of(&url), "path": "/", "exp": 1}),
    );
    assert_eq!(failed(&client.get(format!("{url}/.postern/auth?code={expired}")).send().await?), sign_in_failed);
    // An expired flow, with a matching state.
    let pending = serde_json::json!({"state": "s1", "nonce": "n", "pkce": "p"});
    let flow =
        sealer.seal("flow", &serde_json::json!({"pending": pending, "provider": 0, "rd": format!("{url}/"), "exp": 1}));
    let resp = client
        .get(format!("{auth}/callback?state=s1&code=c"))
        .header("cookie", format!("postern_flow_s1={flow}"))
        .send()
        .await?;
    assert_eq!(failed(&resp), sign_in_failed);

    // The session cookie: tampered, or taken to another tunnel's host, is no session.
    let session = hops
        .iter()
        .find_map(|h| {
            h.headers.get("set-cookie").and_then(|v| v.to_str().ok()).filter(|c| c.starts_with("__Host-postern="))
        })
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .trim_start_matches("__Host-postern=")
        .to_string();
    let bare = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&relay.ca)?)?)
        .resolve(&host_of(&url), relay.https_addr)
        .resolve(&host_of(&url2), relay.https_addr)
        .build()?;
    let with = |u: &str, value: &str| bare.get(format!("{u}/")).header("cookie", format!("__Host-postern={value}"));
    assert_eq!(with(&url, &session).send().await?.status(), 200, "the cookie itself works");
    let mut tampered = session.clone().into_bytes();
    tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
    assert_eq!(with(&url, std::str::from_utf8(&tampered)?).send().await?.status(), 401);
    assert_eq!(with(&url2, &session).send().await?.status(), 401, "another tunnel's host");
    Ok(())
}

#[tokio::test]
async fn provider_clock_skew_is_tolerated_within_a_minute_and_refused_beyond() -> anyhow::Result<()> {
    for (skew, ok) in [(30, true), (-30, true), (900, false), (-900, false)] {
        let mut idp = Idp::start(skew).await?;
        let relay = relay_with(&mut idp).await?;
        let (_, url, _agent) = tunnel(&relay, "team", "app", &["*@example.com"]).await?;
        let client = visitor(&relay, &[&host_of(&url)])?;
        let hops = sign_in(&client, &format!("{url}/headers"), &USERS[ALICE]).await?;
        let last = hops.last().expect("hops");
        if ok {
            assert_eq!(last.status, 200, "skew {skew}: {hops:#?}");
        } else {
            assert_eq!(last.status, 502, "skew {skew}: {hops:#?}");
            assert_eq!(last.headers["postern-error"], "idp-unavailable");
            assert!(!last.body.contains("127.0.0.1"), "the page names no provider address: {}", last.body);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_provider_that_is_down_gets_a_clear_502_that_leaks_nothing() -> anyhow::Result<()> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let relay = TestRelay::with_config(|c| {
        c.oidc_issuer = Some(format!("http://{closed}"));
        c.oidc_client_id = Some(idp::CLIENT_ID.into());
        c.oidc_client_secret = Some(idp::CLIENT_SECRET.into());
    })
    .await?;
    let (_, url, _agent) = tunnel(&relay, "team", "app", &["*@example.com"]).await?;
    let client = visitor(&relay, &[&host_of(&url)])?;
    let hops = walk(&client, client.get(format!("{url}/"))).await?;
    let last = hops.last().expect("hops");
    assert_eq!(last.status, 502, "{hops:#?}");
    assert_eq!(last.headers["postern-error"], "idp-unavailable");
    assert!(!last.body.contains(&closed.to_string()) && !last.body.contains("127.0.0.1"), "{}", last.body);
    assert!(last.body.contains("Identity provider unavailable"));
    Ok(())
}

#[tokio::test]
async fn share_links_and_service_tokens_let_in_without_a_provider() -> anyhow::Result<()> {
    // No identity provider at all: `--login` with share links and service tokens only.
    let relay = TestRelay::start().await?;
    let (name, url, _agent) = tunnel(&relay, "team", "app", &[]).await?;
    let client = visitor(&relay, &[&host_of(&url)])?;
    let hops = walk(&client, client.get(format!("{url}/"))).await?;
    let last = hops.last().expect("hops");
    assert_eq!((last.status.as_u16(), &last.headers["postern-error"]), (401, &"sign-in-unavailable".parse()?));

    let owner = relay.mint("team", &[], false);
    let other = relay.mint("someone-else", &[], false);
    let shares = format!("/api/v1/tunnels/{name}/shares");
    let (status, _) = admin_send_json(&relay, Method::POST, &shares, &other, r#"{"ttl_secs": 60}"#).await?;
    assert_eq!(status, 404, "another tenant's tunnel is unknown");
    let (status, share) =
        admin_send_json(&relay, Method::POST, &shares, &owner, r#"{"ttl_secs": 60, "max_uses": 1}"#).await?;
    assert_eq!(status, 201, "{share}");
    let link = share["url"].as_str().expect("url");
    assert!(link.starts_with(&format!("{url}/.postern/share?pass=")), "{link}");

    // The link sets a cookie once and leaves the address bar.
    let hops = walk(&client, client.get(link)).await?;
    let last = hops.last().expect("hops");
    assert_eq!(last.status, 200, "{hops:#?}");
    assert_eq!(last.url.as_str(), format!("{url}/"), "the secret is gone from the URL");
    let body = client.get(format!("{url}/headers")).send().await?.text().await?;
    assert!(body.contains(&format!("x-postern-pass: share:{}", share["id"].as_str().expect("id"))), "{body}");
    // Used up: another visitor with the same link is refused.
    let someone = visitor(&relay, &[&host_of(&url)])?;
    let hops = walk(&someone, someone.get(link)).await?;
    assert_eq!(hops.last().expect("hops").headers["postern-error"], "share-invalid");
    // Revoked: the session it opened ends.
    let path = format!("/api/v1/shares/{}", share["id"].as_str().expect("id"));
    let (status, _) = admin_json(&relay, Method::DELETE, &path, Some(&other)).await?;
    assert_eq!(status, 404);
    let (status, _) = admin_json(&relay, Method::DELETE, &path, Some(&owner)).await?;
    assert_eq!(status, 200);
    assert_eq!(client.get(format!("{url}/headers")).send().await?.status(), 401);

    // A tunnel that lets everyone in has no use for passes or grants.
    let origin = origin::http("open").await?;
    let token = relay.mint("team", &["open*"], false);
    let mut open = TestAgent::start(relay.agent_config(&token, vec![http_tunnel("open", origin.port())]));
    let open_name = open.connected().await?.remove(0).name;
    let path = format!("/api/v1/tunnels/{open_name}/shares");
    let (status, why) = admin_send_json(&relay, Method::POST, &path, &owner, r#"{"ttl_secs": 60}"#).await?;
    assert_eq!((status.as_u16(), &why["error"]["code"]), (409, &serde_json::json!("no_sign_in")), "{why}");

    // Service tokens: as a bearer or in their own header; stripped before the service.
    let tokens = format!("/api/v1/tunnels/{name}/service-tokens");
    let (status, made) =
        admin_send_json(&relay, Method::POST, &tokens, &owner, r#"{"ttl_secs": 600, "name": "ci"}"#).await?;
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().expect("token");
    let bare = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&relay.ca)?)?)
        .resolve(&host_of(&url), relay.https_addr)
        .build()?;
    let resp = bare.get(format!("{url}/headers")).bearer_auth(token).send().await?;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await?;
    assert!(body.contains("x-postern-pass: service:") && !body.contains(token), "{body}");
    let resp = bare.get(format!("{url}/headers")).header("x-postern-service-token", token).send().await?;
    assert_eq!(resp.status(), 200);
    let forged = format!("{}A", &token[..token.len() - 1]);
    assert_eq!(bare.get(format!("{url}/")).bearer_auth(&forged).send().await?.status(), 401);
    let (_, list) = admin_json(&relay, Method::GET, &tokens, Some(&owner)).await?;
    assert_eq!(list["service_tokens"][0]["name"], "ci", "{list}");
    let path = format!("/api/v1/service-tokens/{}", made["id"].as_str().expect("id"));
    let (status, _) = admin_json(&relay, Method::DELETE, &path, Some(&owner)).await?;
    assert_eq!(status, 200);
    assert_eq!(bare.get(format!("{url}/")).bearer_auth(token).send().await?.status(), 401, "revoked");
    Ok(())
}
