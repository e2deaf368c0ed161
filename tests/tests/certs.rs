//! Certificates: SNI selection from a certbot-style directory, and reload without dropping
//! tunnels or connections.

use std::time::Duration;

use http::Request;
use postern_e2e::http::{empty, h1, text};
use postern_e2e::pki::TestCa;
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay, PATIENCE};
use postern_transport::tls::{client_config, server_name, Trust};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Tries a TLS handshake with `sni`, trusting only `ca`.
async fn handshake(relay: &TestRelay, sni: &str, ca: &std::path::Path) -> anyhow::Result<()> {
    let cfg = client_config(&Trust::CaFile(ca.into()), &[b"http/1.1"])?;
    let tcp = TcpStream::connect(relay.https_addr).await?;
    TlsConnector::from(std::sync::Arc::new(cfg)).connect(server_name(sni)?, tcp).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_certificates_are_chosen_by_sni_and_reload_keeps_tunnels_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs_dir = dir.path().join("live");
    std::fs::create_dir_all(&certs_dir)?;
    let relay = TestRelay::with_certs(|c| c.cert_poll_interval = None, Some(certs_dir.clone())).await?;
    let origin = origin::http("main").await?;
    let mut agent = TestAgent::start(relay.agent_config("", vec![http_tunnel("keep", origin.port())]));
    agent.connected().await?;
    let label = format!("keep-{}", origin.port());
    let host = format!("{label}.localhost:{}", relay.https_addr.port());

    // A connection opened before the reload.
    let mut before = h1(&relay, &format!("{label}.localhost")).await?;
    let get = |host: &str| Request::get("/").header("host", host).body(empty());
    assert_eq!(text(before.send_request(get(&host)?).await?.into_body()).await?, "origin main");

    let ca = TestCa::new("custom domain CA")?;
    let ca_path = dir.path().join("custom-ca.pem");
    ca.write_ca(&ca_path)?;
    assert!(handshake(&relay, "app.custom.test", &ca_path).await.is_err(), "not served yet");

    ca.write_leaf(&certs_dir.join("custom.test"), &["app.custom.test", "*.wild.test"])?;
    assert!(relay.certs.changed_on_disk());
    relay.certs.reload()?;
    handshake(&relay, "app.custom.test", &ca_path).await?;
    handshake(&relay, "anything.wild.test", &ca_path).await?;
    // Other names still get the main (development) certificate.
    handshake(&relay, &format!("{label}.localhost"), &relay.ca).await?;

    // Nothing was dropped.
    before.ready().await?;
    assert_eq!(text(before.send_request(get(&host)?).await?.into_body()).await?, "origin main");
    assert_eq!(relay.registry.len(), 1);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_picked_up_by_the_watcher() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs_dir = dir.path().join("live");
    std::fs::create_dir_all(&certs_dir)?;
    let relay =
        TestRelay::with_certs(|c| c.cert_poll_interval = Some(Duration::from_millis(50)), Some(certs_dir.clone()))
            .await?;
    let first = TestCa::new("first CA")?;
    let second = TestCa::new("second CA")?;
    let (first_pem, second_pem) = (dir.path().join("first.pem"), dir.path().join("second.pem"));
    first.write_ca(&first_pem)?;
    second.write_ca(&second_pem)?;

    first.write_leaf(&certs_dir.join("site"), &["site.test"])?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while handshake(&relay, "site.test", &first_pem).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "new certificate directory never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Renewal: same files, new content (a different CA, so the switch is observable).
    second.write_leaf(&certs_dir.join("site"), &["site.test"])?;
    while handshake(&relay, "site.test", &second_pem).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "renewed certificate never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop().await
}
