//! A real Prometheus server (Debian's `prometheus` package; `tests/run.sh` installs it) scrapes
//! the relay's `/metrics` with the scrape config documented in `docs/operations.md`, and its
//! `up` series for the relay becomes 1.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use postern_e2e::http::empty;
use postern_e2e::TestRelay;
use serde_json::Value;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(port: u16, promql: &str) -> anyhow::Result<Value> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let q: String = promql
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let req = http::Request::get(format!("/api/v1/query?query={q}")).header("host", "prometheus").body(empty())?;
    let body = send.send_request(req).await?.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_relay() -> anyhow::Result<()> {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let version = Command::new(&bin).arg("--version").output();
    anyhow::ensure!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "the Prometheus server is not installed ({bin}); run tests/run.sh, or apt-get install prometheus"
    );

    let relay = TestRelay::start().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: postern\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            relay.admin_addr.port()
        ),
    )?;
    let web_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _prom = KillOnDrop(
        Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?,
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(v) = query(web_port, "up{job=\"postern\"}").await {
            if v["data"]["result"][0]["value"][1] == "1" {
                break;
            }
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "Prometheus never reported up=1 for the relay");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The relay's own series arrived too.
    let v = query(web_port, "postern_agents").await?;
    assert_eq!(v["data"]["result"][0]["value"][1], "0", "{v}");
    relay.stop().await
}
