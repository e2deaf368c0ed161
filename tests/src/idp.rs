//! A real OpenID provider for the sign-in tests: node-oidc-provider (`tests/oidc/idp.mjs`,
//! installed by `tests/run.sh` with `npm ci --prefix tests/oidc`) on an ephemeral loopback port,
//! with one client and a table of users; and a visitor as a program sees the web: a
//! cookie-keeping HTTP client that follows redirects and submits the provider's login form.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::{TestRelay, PATIENCE};

/// The client the relay is registered as.
pub const CLIENT_ID: &str = "postern-relay";
/// Its secret.
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789";

/// A user of the provider.
#[derive(Debug, Clone)]
pub struct User {
    /// What is typed as the login.
    pub login: &'static str,
    /// The password.
    pub password: &'static str,
    /// The `email` claim.
    pub email: &'static str,
    /// The `groups` claim.
    pub groups: &'static [&'static str],
}

/// alice@example.com (group `eng`), bob@other.org, and eve@evil.test, password `pw-<login>`.
pub const USERS: &[User] = &[
    User { login: "alice", password: "pw-alice", email: "alice@example.com", groups: &["eng"] },
    User { login: "bob", password: "pw-bob", email: "bob@other.org", groups: &[] },
    User { login: "eve", password: "pw-eve", email: "eve@evil.test", groups: &[] },
];

/// A running provider; stopped when dropped.
#[derive(Debug)]
pub struct Idp {
    /// Its issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
    child: Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl Idp {
    /// Starts the provider, its clock `skew_secs` ahead of this machine's (negative: behind).
    /// It serves once [`Idp::register`] gives it the relay's redirect URI.
    pub async fn start(skew_secs: i64) -> anyhow::Result<Self> {
        if !dir().join("node_modules/oidc-provider").is_dir() {
            bail!("oidc-provider is not installed: run tests/run.sh, or `npm ci --prefix tests/oidc`");
        }
        let users: Vec<_> = USERS
            .iter()
            .map(
                |u| serde_json::json!({"login": u.login, "password": u.password, "email": u.email, "groups": u.groups}),
            )
            .collect();
        let input = serde_json::json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "users": users,
            "skew_secs": skew_secs,
        });
        let mut child = Command::new("node")
            .arg(dir().join("idp.mjs"))
            .arg(input.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (tests/run.sh installs it)")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(PATIENCE, stdout.next_line())
            .await
            .context("the OpenID provider did not start")??
            .context("the OpenID provider exited")?;
        let said: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("provider said {line:?}"))?;
        let issuer = said["issuer"].as_str().context("issuer")?.to_string();
        Ok(Self { issuer, child, stdout })
    }

    /// Registers the relay whose HTTPS edge listens on `https_port` as the provider's client
    /// (its redirect URI `https://auth.localhost:<port>/callback`).
    pub async fn register(&mut self, https_port: u16) -> anyhow::Result<()> {
        let line = serde_json::json!({ "redirect_uris": [format!("https://auth.localhost:{https_port}/callback")] });
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        let ready = tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .context("the OpenID provider did not take the client")??;
        anyhow::ensure!(ready.as_deref() == Some(r#"{"ready":true}"#), "provider said {ready:?}");
        Ok(())
    }

    /// Sets a relay config to sign visitors in with this provider.
    pub fn configure(&self, c: &mut postern_server::RelayConfig) {
        c.oidc_issuer = Some(self.issuer.clone());
        c.oidc_client_id = Some(CLIENT_ID.into());
        c.oidc_client_secret = Some(CLIENT_SECRET.into());
        c.oidc_scopes = vec!["groups".into()];
    }
}

/// One answer on a walk through redirects.
#[derive(Debug)]
pub struct Hop {
    /// Where it came from.
    pub url: reqwest::Url,
    /// Its status.
    pub status: reqwest::StatusCode,
    /// Its headers.
    pub headers: reqwest::header::HeaderMap,
    /// Its body (the last answer's only).
    pub body: String,
}

/// A visitor: a cookie-keeping HTTP client that trusts the relay's CA and reaches every named
/// `*.localhost` host (and `auth.localhost`) at the relay's HTTPS address. It follows no
/// redirect by itself: [`walk`] does, so a test sees every hop.
pub fn visitor(relay: &TestRelay, hosts: &[&str]) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&relay.ca)?)?;
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PATIENCE);
    for host in hosts.iter().chain(&["auth.localhost"]) {
        b = b.resolve(host, SocketAddr::new(relay.https_addr.ip(), relay.https_addr.port()));
    }
    Ok(b.build()?)
}

/// Sends `req` and follows its redirects as a browser does (GET, cookies kept), asking for
/// pages (`Accept: text/html`); every answer, the last with its body.
pub async fn walk(client: &reqwest::Client, req: reqwest::RequestBuilder) -> anyhow::Result<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut resp = req.header("accept", "text/html").send().await?;
    for _ in 0..16 {
        let url = resp.url().clone();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let next = headers.get("location").and_then(|l| l.to_str().ok()).map(|l| url.join(l)).transpose()?;
        match next {
            Some(next) if status.is_redirection() => {
                hops.push(Hop { url, status, headers, body: String::new() });
                resp = client.get(next).header("accept", "text/html").send().await?;
            }
            _ => {
                let body = resp.text().await?;
                hops.push(Hop { url, status, headers, body });
                return Ok(hops);
            }
        }
    }
    bail!("more than 16 redirects: {hops:?}")
}

/// Opens `url` as a browser and, when sent to the provider's login form, signs in as `user`;
/// every hop, the form's included.
pub async fn sign_in(client: &reqwest::Client, url: &str, user: &User) -> anyhow::Result<Vec<Hop>> {
    let mut hops = walk(client, client.get(url)).await?;
    let Some(form) = hops.last().filter(|h| h.url.path().starts_with("/interaction/")) else { return Ok(hops) };
    let action = form
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("no login form in {:?}", form.body))?;
    let target = form.url.join(action)?;
    let post = client.post(target).form(&[("login", user.login), ("password", user.password)]);
    hops.extend(walk(client, post).await?);
    Ok(hops)
}
