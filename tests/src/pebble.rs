//! A real ACME CA for tests: Debian's `pebble` with `pebble-challtestsrv` as its DNS server.
//!
//! challtestsrv answers every A query with 127.0.0.1 (so pebble validates HTTP-01 against the
//! relay on loopback) and serves the TXT records tests publish through its management API
//! (DNS-01 and the relay's `_postern` ownership proofs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use postern_transport::tls::{client_config, Trust};
use tokio::process::{Child, Command};

use crate::pki::TestCa;

/// True when both programs are installed (CI installs the `pebble` package).
pub fn available() -> bool {
    ["pebble", "pebble-challtestsrv"].iter().all(|p| {
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file())).unwrap_or(false)
    })
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Ports chosen before anything starts, so the relay can be configured first.
#[derive(Debug, Clone, Copy)]
pub struct PebblePorts {
    /// ACME API (HTTPS).
    pub acme: u16,
    /// Pebble's management API (HTTPS): `/roots/0`.
    pub management: u16,
    /// challtestsrv's DNS server (UDP and TCP).
    pub dns: u16,
    /// challtestsrv's management API (HTTP): `/set-txt`.
    pub challtest: u16,
}

impl PebblePorts {
    /// Four free ports.
    pub fn pick() -> anyhow::Result<Self> {
        Ok(Self { acme: free_port()?, management: free_port()?, dns: free_port()?, challtest: free_port()? })
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme)
    }

    /// The DNS server.
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns))
    }
}

/// Running pebble and challtestsrv; killed on drop.
#[derive(Debug)]
pub struct Pebble {
    /// Their ports.
    pub ports: PebblePorts,
    /// The CA that signed pebble's own HTTPS certificate (for `--acme-ca`).
    pub api_ca: PathBuf,
    _children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Writes the API CA now, so a relay can be configured before pebble runs.
    pub fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
        let ca = TestCa::new("pebble API CA")?;
        let path = dir.join("pebble-api-ca.pem");
        ca.write_ca(&path)?;
        ca.write_leaf(&dir.join("pebble-api"), &["localhost", "127.0.0.1"])?;
        Ok(path)
    }

    /// Starts challtestsrv and pebble; HTTP-01 is validated against `http_port` on 127.0.0.1.
    /// `dir` must have been passed to [`Pebble::prepare`].
    pub async fn start(ports: PebblePorts, http_port: u16, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let api_ca = dir.path().join("pebble-api-ca.pem");
        let log = |name: &str| -> anyhow::Result<Stdio> { Ok(std::fs::File::create(dir.path().join(name))?.into()) };
        let challtest = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", ports.dns)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", ports.challtest)])
            .stdout(log("challtestsrv.log")?)
            .stderr(log("challtestsrv.err")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting pebble-challtestsrv")?;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", ports.acme),
                "managementListenAddress": format!("127.0.0.1:{}", ports.management),
                "certificate": dir.path().join("pebble-api/fullchain.pem"),
                "privateKey": dir.path().join("pebble-api/privkey.pem"),
                "httpPort": http_port,
                "tlsPort": free_port()?,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{}", ports.dns)])
            // No random validation delays and no random nonce rejections: the test measures the
            // relay, not its patience.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log")?)
            .stderr(log("pebble.err")?)
            .kill_on_drop(true)
            .spawn()
            .context("starting pebble")?;
        let me = Self { ports, api_ca, _children: vec![challtest, pebble], _dir: dir };
        for port in [ports.acme, ports.management, ports.challtest] {
            me.wait_port(port).await?;
        }
        Ok(me)
    }

    async fn wait_port(&self, port: u16) -> anyhow::Result<()> {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("pebble port {port} never opened; logs in {}", self._dir.path().display())
    }

    /// The root that pebble's issued certificates chain to (PEM), written to `path`.
    pub async fn write_issuing_root(&self, path: &Path) -> anyhow::Result<()> {
        let tls = client_config(&Trust::CaFile(self.api_ca.clone()), &[])?;
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let uri = format!("https://localhost:{}/roots/0", self.ports.management);
        let resp = client.get(uri.parse()?).await?;
        anyhow::ensure!(resp.status().is_success(), "GET {uri}: {}", resp.status());
        std::fs::write(path, resp.into_body().collect().await?.to_bytes())?;
        Ok(())
    }

    /// Publishes a TXT record `host` (fully qualified, ending in a dot) with `value`.
    pub async fn set_txt(&self, host: &str, value: &str) -> anyhow::Result<()> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let body = serde_json::json!({ "host": host, "value": value }).to_string();
        let req = http::Request::post(format!("http://127.0.0.1:{}/set-txt", self.ports.challtest))
            .body(Full::new(Bytes::from(body)))?;
        let resp = client.request(req).await?;
        anyhow::ensure!(resp.status().is_success(), "set-txt: {}", resp.status());
        Ok(())
    }
}

/// A rustls client config trusting only `root`.
pub fn trusting(root: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    Ok(Arc::new(client_config(&Trust::CaFile(root.into()), &[b"http/1.1"])?))
}
