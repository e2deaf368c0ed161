//! The dashboard in a real browser: headless Chromium driven over WebDriver against a real
//! relay, agents and local services on 127.0.0.1. Each test logs in as a user would (the token
//! typed into the form) and checks what the page shows, live, without reloads.

use std::time::Duration;

use bytes::Bytes;
use fantoccini::Locator;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use postern_e2e::browser::Browser;
use postern_e2e::http::{admin, h1, text};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay};

const ROOT: &str = "root-admin-token";

async fn relay() -> anyhow::Result<TestRelay> {
    TestRelay::with_config(|c| {
        c.admin_token = Some(ROOT.into());
        c.history_every = Duration::from_millis(500);
    })
    .await
}

/// Sends one request through the tunnel `label` (`<id>-<port>`) and returns its answer.
async fn visit(relay: &TestRelay, label: &str, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, String)> {
    let mut client = h1(relay, &format!("{label}.localhost")).await?;
    client.ready().await?;
    let resp = client.send_request(req).await?;
    Ok((resp.status(), text(resp.into_body()).await?))
}

/// The response head of `GET path` on the admin listener, lowercased.
async fn raw_head(admin: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).to_lowercase();
    Ok(text.split("\r\n\r\n").next().unwrap_or_default().to_string())
}

/// The head of the first script the dashboard's page names.
async fn head_asset(relay: &TestRelay) -> anyhow::Result<String> {
    let (_, page) = admin(relay, Method::GET, "/ui/", None).await?;
    let src = page.split("src=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default().to_string();
    anyhow::ensure!(src.starts_with("assets/"), "no script on the page: {page}");
    raw_head(relay.admin_addr, &format!("/ui/{src}")).await
}

/// `curl` through the relay's HTTPS edge to `https://<label>.localhost:<port><path>`, trusting
/// the relay's CA; the answer's body.
async fn curl(relay: &TestRelay, label: &str, path: &str, extra: &[&str]) -> anyhow::Result<String> {
    let port = relay.https_addr.port();
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "10", "--cacert"])
        .arg(&relay.ca)
        .args(["--resolve", &format!("{label}.localhost:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{label}.localhost:{port}{path}"))
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

fn get(host: &str, path: &str) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::get(path).header("host", host).body(Full::new(Bytes::new()))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_its_own_tunnels_and_its_requests_arrive_live() -> anyhow::Result<()> {
    let relay = relay().await?;
    let web = origin::http("main").await?;
    let alice = relay.mint("alice", &["alice"], false);
    let bob = relay.mint("bob", &["bob"], false);
    let mut spec = http_tunnel("alice", web.port());
    spec.inspect = true;
    let mut a = TestAgent::start(relay.agent_config(&alice, vec![spec]));
    let mut b = TestAgent::start(relay.agent_config(&bob, vec![http_tunnel("bob", web.port())]));
    let alice_tunnel = a.connected().await?[0].name.clone();
    let bob_tunnel = b.connected().await?[0].name.clone();
    let label = format!("alice-{}", web.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());
    visit(&relay, &label, get(&host, "/first")?).await?;

    let browser = Browser::start().await?;
    browser.log_in(relay.admin_addr, &alice).await?;
    browser.wait_for("#count-tunnels").await?;
    browser
        .wait_until("one tunnel counted", "return document.querySelector('#count-tunnels').textContent === '1'")
        .await?;
    // Alice's token does not see the admin's pages.
    assert!(!browser.client.find(Locator::Id("nav-tokens")).await?.is_displayed().await?);
    browser.screenshot("overview").await?;

    browser.client.goto(&format!("http://{}/ui/#/tunnels", relay.admin_addr)).await?;
    browser.wait_for(&format!("tr[data-tunnel='{alice_tunnel}']")).await?;
    let rows = browser.client.find_all(Locator::Css("#tunnels-table tr[data-tunnel]")).await?;
    let mut names = Vec::new();
    for row in rows {
        names.push(row.attr("data-tunnel").await?.unwrap_or_default());
    }
    assert_eq!(names, std::slice::from_ref(&alice_tunnel), "bob's tunnel {bob_tunnel} must not show");
    browser.screenshot("tunnels").await?;

    // The tunnel's page lists the earlier request; a new one appears without a reload.
    browser.client.goto(&format!("http://{}/ui/#/tunnel/{alice_tunnel}", relay.admin_addr)).await?;
    browser.wait_for("#captures tr[data-capture]").await?;
    browser.client.execute("window.__sameDocument = true; return true;", vec![]).await?;
    let answer = curl(&relay, &label, "/live-one?x=1", &["-H", "Authorization: Bearer visitor-secret"]).await?;
    assert_eq!(answer, "origin main");
    browser
        .wait_until(
            "the new request in the list",
            "return [...document.querySelectorAll('#captures td.path')].some(td => td.textContent.startsWith('/live-one?x=1'))",
        )
        .await?;
    // The tunnel's totals follow the traffic events too.
    browser
        .wait_until(
            "the totals moving",
            "return document.querySelector('#tunnel-totals').textContent.startsWith('2 streams')",
        )
        .await?;
    assert_eq!(
        browser.client.execute("return window.__sameDocument === true", vec![]).await?,
        serde_json::Value::Bool(true),
        "the page reloaded"
    );
    // Open it: its headers, the credential redacted, and its response body, as text.
    let row = browser.wait_for("#captures tr[data-capture]").await?;
    let first = row.attr("data-capture").await?.unwrap_or_default();
    row.click().await?;
    browser
        .wait_until(
            "the capture's body",
            "return (document.querySelector('#response-body') || {}).textContent === 'origin main'",
        )
        .await?;
    browser
        .wait_until(
            "the redacted credential",
            "return [...document.querySelectorAll('#request-headers tr')].some(tr => \
               tr.cells[0].textContent === 'authorization' && tr.cells[1].textContent === '[redacted]')",
        )
        .await?;
    let page = browser.client.find(Locator::Id("main")).await?.text().await?;
    assert!(!page.contains("visitor-secret"), "the credential shows on the page");
    // Replay it from the page: a new entry, marked as a replay, with the local service's answer.
    browser.wait_for("#replay:not([disabled])").await?.click().await?;
    browser
        .wait_until(
            "the replay's answer",
            &format!(
                "const top = document.querySelector('#captures tr[data-capture]'); \
                 return top.dataset.capture !== '{first}' && /replay of #{first}/.test(top.textContent) \
                   && /Replay of/.test(document.querySelector('#capture').textContent) \
                   && document.querySelector('#response-body').textContent === 'origin main'"
            ),
        )
        .await?;
    // The graphs render: each has a canvas with pixels drawn.
    browser
        .wait_until(
            "drawn graphs",
            "const cs = [...document.querySelectorAll('.graph canvas')]; \
             return cs.length >= 3 && cs.every(c => c.width > 0 && \
               c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v !== 0))",
        )
        .await?;
    browser.screenshot("tunnel").await?;

    // Bob's tunnel's page is not found for alice.
    browser.client.goto(&format!("http://{}/ui/#/tunnel/{bob_tunnel}", relay.admin_addr)).await?;
    browser.wait_until("the refusal", "return /no tunnel/.test(document.querySelector('#main').textContent)").await?;
    browser.close().await?;
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_markup_is_shown_as_text_and_never_runs() -> anyhow::Result<()> {
    let relay = relay().await?;
    let web = origin::http("main").await?;
    let owner = relay.mint("tenant", &["xss"], false);
    let mut spec = http_tunnel("xss", web.port());
    spec.inspect = true;
    let mut agent = TestAgent::start(relay.agent_config(&owner, vec![spec]));
    let name = agent.connected().await?[0].name.clone();
    let label = format!("xss-{}", web.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());
    // A path can only carry markup percent-encoded (`<` is not a URI character); a header and
    // a body carry it raw.
    let markup = r#"<script>window.__pwned = 1</script>"><img src=x onerror="window.__pwned = 2">"#;
    let req =
        Request::post("/%3Cscript%3Ewindow.__pwned=3%3C/script%3E'%22%3E%3Cimg%20src=x%20onerror=window.__pwned=4%3E")
            .header("host", &host)
            .header("x-markup", r#""><img src=x onerror="window.__pwned = 5"><script>window.__pwned = 6</script>"#)
            .body(Full::new(Bytes::from(markup)))?;
    visit(&relay, &label, req).await?;

    let browser = Browser::start().await?;
    browser.log_in(relay.admin_addr, &owner).await?;
    browser.client.goto(&format!("http://{}/ui/#/tunnel/{name}", relay.admin_addr)).await?;
    browser.wait_for("#captures tr[data-capture]").await?.click().await?;
    let body = browser.wait_for("#request-body").await?;
    assert_eq!(body.text().await?, markup, "the body is shown as the text it is");
    browser
        .wait_until(
            "the header as text",
            "return [...document.querySelectorAll('#request-headers td')].some(td => td.textContent.includes('onerror=\"window.__pwned = 5\"'))",
        )
        .await?;
    // Give any injected handler the time to fire, then check that none did and that the
    // markup made no element.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let verdict = browser
        .client
        .execute(
            "return { pwned: window.__pwned === undefined ? null : window.__pwned, \
                      elements: document.querySelectorAll('#main img, #main script').length }",
            vec![],
        )
        .await?;
    assert_eq!(verdict, serde_json::json!({"pwned": null, "elements": 0}));
    browser.close().await?;

    // The page carries the policy that would stop an inline script anyway.
    let head = raw_head(relay.admin_addr, "/ui/").await?;
    for line in [
        "content-security-policy: default-src 'self'; script-src 'self'; style-src 'self';",
        "x-content-type-options: nosniff",
        "cache-control: no-cache",
    ] {
        assert!(head.contains(line), "{line:?} missing from {head}");
    }
    let asset = head_asset(&relay).await?;
    assert!(asset.contains("cache-control: public, max-age=31536000, immutable"), "{asset}");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_mints_and_revokes_tokens_and_kicks_tunnels_from_the_page() -> anyhow::Result<()> {
    let relay = relay().await?;
    let web = origin::http("main").await?;
    let owner = relay.mint("kickme", &["kickme", "late"], false);
    let mut agent = TestAgent::start(relay.agent_config(&owner, vec![http_tunnel("kickme", web.port())]));
    let name = agent.connected().await?[0].name.clone();

    let browser = Browser::start().await?;
    browser.log_in(relay.admin_addr, ROOT).await?;
    // Kick: the first click arms the button, the second acts.
    browser.client.goto(&format!("http://{}/ui/#/tunnels", relay.admin_addr)).await?;
    let kick = browser.wait_for(&format!("button[data-kick='{name}']")).await?;
    kick.click().await?;
    kick.click().await?;
    relay.wait_registry(|r| r.get(&name).is_none()).await?;
    // The list follows the event stream: the row goes without a reload.
    browser
        .wait_until("the kicked tunnel gone", &format!("return !document.querySelector(\"tr[data-tunnel='{name}']\")"))
        .await?;

    // The events page shows a new agent's tunnel coming up, live.
    browser.client.goto(&format!("http://{}/ui/#/events", relay.admin_addr)).await?;
    browser.wait_for("#feed").await?;
    let mut late = TestAgent::start(relay.agent_config(&owner, vec![http_tunnel("late", web.port())]));
    let late_name = late.connected().await?[0].name.clone();
    browser
        .wait_until(
            "the tunnel_up event",
            &format!(
                "return [...document.querySelectorAll(\"#feed li[data-type='tunnel_up']\")].some(li => li.textContent.includes('{late_name}'))"
            ),
        )
        .await?;
    // The agents page kicks that agent.
    browser.client.goto(&format!("http://{}/ui/#/agents", relay.admin_addr)).await?;
    let kick = browser.wait_for("button[data-kick-agent]").await?;
    let session = kick.attr("data-kick-agent").await?.unwrap_or_default();
    kick.click().await?;
    kick.click().await?;
    relay.wait_registry(|r| r.agent(&session).is_none()).await?;

    // Mint a token, see it listed, revoke it.
    browser.client.goto(&format!("http://{}/ui/#/tokens", relay.admin_addr)).await?;
    browser.wait_for("#mint-subject").await?.send_keys("ws-from-ui").await?;
    browser.client.find(Locator::Id("mint-ids")).await?.send_keys("ws-from-ui*").await?;
    browser.client.find(Locator::Css("#mint-form button[type=submit]")).await?.click().await?;
    let token = browser.wait_for("#minted-token").await?.text().await?;
    assert!(token.starts_with("pst1."), "{token}");
    browser
        .wait_until(
            "the new token listed",
            "return [...document.querySelectorAll('#tokens-table td')].some(td => td.textContent === 'ws-from-ui')",
        )
        .await?;
    browser.screenshot("tokens").await?;
    let revoke = browser.wait_for("button[data-revoke]").await?;
    revoke.click().await?;
    revoke.click().await?;
    browser
        .wait_until("the token revoked", "return /revoked/.test(document.querySelector('#tokens-table').textContent)")
        .await?;
    let id = browser.client.find(Locator::Css("tr[data-token]")).await?.attr("data-token").await?.unwrap_or_default();
    let (status, _) = admin(&relay, Method::GET, "/api/v1/tunnels", Some(&token)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "token {id} still works after its revocation");
    browser.close().await?;
    relay.stop().await
}
