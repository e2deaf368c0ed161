//! Visitor sign-in in a real browser: Chromium (over WebDriver) follows the relay's redirects to
//! a real OpenID provider, a person types a login and password into its form, and the tunnel's
//! page comes back with the person's identity, the session cookie out of the page's reach; the
//! tunnel's owner then sees the session on the dashboard and ends it there.

use fantoccini::Locator;
use http::Method;
use postern_e2e::browser::Browser;
use postern_e2e::http::admin_json;
use postern_e2e::idp::{Idp, USERS};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay};
use postern_proto::access::{Access, Login};

#[tokio::test]
async fn a_person_signs_in_with_chromium() -> anyhow::Result<()> {
    let mut idp = Idp::start(0).await?;
    let relay = TestRelay::with_config(|c| idp.configure(c)).await?;
    idp.register(relay.https_addr.port()).await?;
    let web = origin::http("app").await?;
    let mut spec = http_tunnel("app", web.port());
    spec.access = Some(Access { login: Some(Login { emails: vec!["*@example.com".into()] }), ..Access::default() });
    let token = relay.mint("team", &["app*"], false);
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![spec]));
    let url = agent.connected().await?.remove(0).public_url;

    let browser = Browser::start().await?;
    browser.client.goto(&format!("{url}/headers")).await?;
    // Sent through auth.localhost to the provider's own login form.
    let login = browser.wait_for("input[name=login]").await?;
    let at = browser.client.current_url().await?;
    assert!(at.as_str().starts_with(&idp.issuer), "at the provider: {at}");
    login.send_keys(USERS[0].login).await?;
    browser.client.find(Locator::Css("input[name=password]")).await?.send_keys(USERS[0].password).await?;
    browser.client.find(Locator::Css("button[type=submit]")).await?.click().await?;
    browser
        .wait_until("the tunnel's page", "return document.body && document.body.innerText.includes('x-postern-email')")
        .await?;
    let text = browser.client.find(Locator::Css("body")).await?.text().await?;
    assert!(text.contains("x-postern-email: alice@example.com"), "{text}");
    assert!(!text.contains("__Host-postern"), "the service never sees the session cookie: {text}");
    let back = browser.client.current_url().await?;
    assert_eq!(back.as_str(), format!("{url}/headers"), "back where it started, no code in the address bar");
    // HttpOnly: the page's scripts cannot read the session.
    let cookies = browser.client.execute("return document.cookie", vec![]).await?;
    assert!(!cookies.as_str().unwrap_or_default().contains("postern"), "{cookies}");
    // A reload stays signed in (the cookie was kept for this host).
    browser.client.refresh().await?;
    let text = browser.wait_for("body").await?.text().await?;
    assert!(text.contains("x-postern-email: alice@example.com"), "{text}");

    // The tunnel's owner sees the session on the dashboard's tunnel page and ends it there.
    let name = format!("app-{}", web.port());
    browser.log_in(relay.admin_addr, &token).await?;
    browser.client.goto(&format!("http://{}/ui/#/tunnel/{name}", relay.admin_addr)).await?;
    let end = browser.wait_for("button[data-end-session]").await?;
    let ended = end.attr("data-end-session").await?.unwrap_or_default();
    let row = browser.client.find(Locator::Css("#sessions-table tbody tr")).await?.text().await?;
    assert!(row.contains("alice@example.com") && row.contains("oidc"), "{row}");
    browser.screenshot("visitors").await?;
    end.click().await?;
    end.click().await?;
    browser.wait_until("the session gone", "return !document.querySelector('button[data-end-session]')").await?;
    // The next visit has to go through the provider again (which still knows the person, so
    // no form this time): it comes back under a new session, never the ended one.
    browser.client.goto(&format!("{url}/headers")).await?;
    browser
        .wait_until(
            "the tunnel's page again",
            "return document.body && document.body.innerText.includes('x-postern-email')",
        )
        .await?;
    let (_, list) = admin_json(&relay, Method::GET, &format!("/api/v1/sessions?tunnel={name}"), Some(&token)).await?;
    let ids: Vec<&str> = list["sessions"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str()).collect();
    assert!(ids.len() == 1 && ids[0] != ended, "a new session, not {ended}: {list}");
    browser.close().await?;
    Ok(())
}
