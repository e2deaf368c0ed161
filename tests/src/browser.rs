//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven through
//! `chromedriver` over WebDriver (fantoccini). `tests/run.sh` installs both; set
//! `POSTERN_CHROMEDRIVER` / `POSTERN_CHROMIUM` to use others.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use fantoccini::{Client, ClientBuilder, Locator};
use tokio::process::{Child, Command};

use crate::PATIENCE;

/// A headless Chromium session and the chromedriver that runs it; both end when dropped.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: Child,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> anyhow::Result<Self> {
        let driver = std::env::var("POSTERN_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("POSTERN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port()?;
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {driver} (tests/run.sh installs chromium-driver)"))?;
        let mut caps = serde_json::Map::new();
        // The relays' certificates chain to a per-test CA the browser does not know.
        caps.insert("acceptInsecureCerts".into(), serde_json::Value::Bool(true));
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--no-first-run", "--disable-extensions"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        anyhow::bail!("{driver} exited with {status}: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("opening a chromium session"),
            }
        };
        Ok(Self { client, _driver: child })
    }

    /// Opens the dashboard of the relay whose admin listener is `admin` and logs in with
    /// `token` as a user would: typed into the form.
    pub async fn log_in(&self, admin: std::net::SocketAddr, token: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("http://{admin}/ui/")).await?;
        self.wait_for("#token").await?.send_keys(token).await?;
        self.client.find(Locator::Id("login-button")).await?.click().await?;
        self.wait_for("#nav:not([hidden])").await?;
        Ok(())
    }

    /// Waits (up to twice the tests' patience) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(PATIENCE * 2)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css:?} appeared"))
    }

    /// Waits until `script` (a function body) returns true in the page.
    pub async fn wait_until(&self, what: &str, script: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        loop {
            if self.client.execute(script, vec![]).await? == serde_json::Value::Bool(true) {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot as `<POSTERN_SCREENSHOTS>/<name>.png` when that variable names a
    /// directory (how `docs/img/` is made); otherwise does nothing.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        if let Ok(dir) = std::env::var("POSTERN_SCREENSHOTS") {
            let png = self.client.screenshot().await?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png)?;
        }
        Ok(())
    }

    /// Ends the session.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}
