//! Built-in ACME against a real CA (Debian's pebble): a custom domain's certificate by HTTP-01,
//! ownership by operator allowlist or TXT proof, the wildcard by DNS-01 through a hook, storage
//! across restarts, and renewal.
//!
//! Skips, saying so, when pebble is not installed (`tests/run.sh` installs it).

use std::path::Path;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use postern_e2e::http::{admin, empty};
use postern_e2e::pebble::{self, Pebble, PebblePorts};
use postern_e2e::{http_tunnel, origin, TestAgent, TestRelay};
use postern_server::TxtLookup;
use postern_transport::tls::server_name;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Issuance involves the CA validating over the network; it gets more time than other waits.
const ISSUANCE: Duration = Duration::from_secs(60);

fn skip() -> bool {
    if pebble::available() {
        return false;
    }
    eprintln!("SKIPPED: pebble and pebble-challtestsrv are not installed (apt-get install pebble)");
    true
}

/// GET / on the relay's HTTPS listener for `host`, trusting only `root`; the body and the
/// serial of the certificate the relay presented.
async fn get(relay: &TestRelay, host: &str, root: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let tcp = TcpStream::connect(relay.https_addr).await?;
    let tls = TlsConnector::from(pebble::trusting(root)?).connect(server_name(host)?, tcp).await?;
    let serial = {
        let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let leaf = certs.first().ok_or_else(|| anyhow::anyhow!("no certificate"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())?;
        cert.raw_serial().to_vec()
    };
    let (mut send, conn) = http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::get("/").header("host", format!("{host}:{}", relay.https_addr.port())).body(empty())?;
    let body = send.send_request(req).await?.into_body().collect().await?.to_bytes();
    Ok((String::from_utf8(body.to_vec())?, serial))
}

/// Retries [`get`] until it verifies (the certificate is being issued) or `ISSUANCE` passes.
async fn get_when_issued(relay: &TestRelay, host: &str, root: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + ISSUANCE;
    loop {
        match get(relay, host, root).await {
            Ok(ok) => return Ok(ok),
            Err(e) if tokio::time::Instant::now() > deadline => {
                let (_, metrics) = admin(relay, http::Method::GET, "/metrics", None).await?;
                let acme: Vec<_> = metrics.lines().filter(|l| l.starts_with("postern_acme")).collect();
                anyhow::bail!("no certificate for {host} from pebble in {ISSUANCE:?}: {e}; {acme:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The value of one `postern_acme_orders_total` series, 0 when absent.
async fn orders(relay: &TestRelay, challenge: &str, result: &str) -> anyhow::Result<u64> {
    let (_, metrics) = admin(relay, http::Method::GET, "/metrics", None).await?;
    let series = format!("postern_acme_orders_total{{challenge=\"{challenge}\",result=\"{result}\"}} ");
    Ok(metrics.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.trim().parse()).transpose()?.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domains_get_certificates_by_http01_only_when_allowed_or_proven() -> anyhow::Result<()> {
    if skip() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let api_ca = Pebble::prepare(dir.path())?;
    let ports = PebblePorts::pick()?;
    let relay = TestRelay::with_config(|c| {
        c.acme = true;
        c.acme_directory = ports.directory();
        c.acme_ca = Some(api_ca.clone());
        c.allow_domains = vec!["*.allowed.test".into()];
        c.txt_proof = TxtLookup::Server(ports.dns_addr());
    })
    .await?;
    let pebble = Pebble::start(ports, relay.http_addr.port(), dir).await?;
    let root = relay.state_dir.join("pebble-root.pem");
    pebble.write_issuing_root(&root).await?;

    // An operator-allowed domain: granted at once, served over HTTPS once pebble issued it.
    let origin = origin::http("shop").await?;
    let mut spec = http_tunnel("shop", origin.port());
    spec.domain = Some("App.Allowed.Test".into());
    let token = relay.mint("alice", &["shop"], false);
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![spec]));
    let grants = agent.connected().await?;
    let want = format!("https://app.allowed.test:{}", relay.https_addr.port());
    assert_eq!(grants[0].domain_url.as_deref(), Some(want.as_str()));
    let (body, serial) = get_when_issued(&relay, "app.allowed.test", &root).await?;
    assert_eq!(body, "origin shop");
    assert_eq!(orders(&relay, "http-01", "issued").await?, 1);
    assert!(relay.state_dir.join("acme/live/app.allowed.test/fullchain.pem").is_file());
    assert!(relay.state_dir.join("acme/account.json").is_file());

    // A domain nobody allowed: refused, and told how to prove it.
    let other = origin::http("bob").await?;
    let mut bob_spec = http_tunnel("bob", other.port());
    bob_spec.domain = Some("bob.proved.test".into());
    let bob_token = relay.mint("bob", &["bob"], false);
    let mut bob = TestAgent::start(relay.agent_config(&bob_token, vec![bob_spec.clone()]));
    let err = bob.connected().await.expect_err("an unproven domain must be refused").to_string();
    assert!(err.contains("_postern.bob.proved.test TXT \"postern-owner=bob\""), "{err}");

    // The same after the TXT record proves it; but not for another subject.
    pebble.set_txt("_postern.bob.proved.test.", "postern-owner=bob").await?;
    let mut bob = TestAgent::start(relay.agent_config(&bob_token, vec![bob_spec.clone()]));
    bob.connected().await?;
    assert_eq!(get_when_issued(&relay, "bob.proved.test", &root).await?.0, "origin bob");
    let mut mallory_spec = http_tunnel("mallory", other.port());
    mallory_spec.domain = Some("bob.proved.test".into());
    let mallory_token = relay.mint("mallory", &["mallory"], false);
    let mut mallory = TestAgent::start(relay.agent_config(&mallory_token, vec![mallory_spec]));
    assert!(mallory.connected().await.is_err(), "bob's proof must not let mallory in");

    // Restart: the stored certificate is served at once, and nothing is ordered again.
    agent.shutdown.cancel();
    let _ = agent.task.await;
    bob.shutdown.cancel();
    let _ = bob.task.await;
    let relay = relay.restart().await?;
    let mut spec = http_tunnel("shop", origin.port());
    spec.domain = Some("app.allowed.test".into());
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![spec]));
    agent.connected().await?;
    let (body, after) = get(&relay, "app.allowed.test", &root).await?;
    assert_eq!((body.as_str(), &after), ("origin shop", &serial), "the stored certificate, not a new one");
    assert_eq!(orders(&relay, "http-01", "issued").await?, 0);
    drop(pebble);
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wildcard_comes_by_dns01_through_the_hook_and_is_renewed() -> anyhow::Result<()> {
    if skip() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let api_ca = Pebble::prepare(dir.path())?;
    let ports = PebblePorts::pick()?;
    // The operator's hook: publishes and removes the TXT record through challtestsrv's API.
    let hook = dir.path().join("dns-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\napi=http://127.0.0.1:{}\ncase \"$1\" in\n  \
             set) curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" $api/set-txt ;;\n  \
             clear) curl -sf -X POST -d \"{{\\\"host\\\":\\\"$2\\\"}}\" $api/clear-txt ;;\n  \
             *) echo \"unknown action $1\" >&2; exit 2 ;;\nesac\n",
            ports.challtest
        ),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    }
    let relay = TestRelay::with_config(|c| {
        c.domain = "tunnels.test".into();
        c.acme_directory = ports.directory();
        c.acme_ca = Some(api_ca.clone());
        c.acme_wildcard = true;
        c.acme_dns_hook = Some(hook.clone());
        // Renew on every check: pebble's certificates last years, the test has a minute.
        c.acme_renew_before = Some(Duration::from_secs(100 * 365 * 86_400));
        c.acme_check_interval = Duration::from_secs(2);
        c.acme_retry_after = Duration::from_secs(1);
    })
    .await?;
    let pebble = Pebble::start(ports, relay.http_addr.port(), dir).await?;
    let root = relay.state_dir.join("pebble-root.pem");
    pebble.write_issuing_root(&root).await?;

    let origin = origin::http("wild").await?;
    let token = relay.mint("carol", &["demo"], false);
    let mut agent = TestAgent::start(relay.agent_config(&token, vec![http_tunnel("demo", origin.port())]));
    agent.connected().await?;
    let host = format!("demo-{}.tunnels.test", origin.port());
    // The wildcard is ordered at start-up, before pebble ran: the first order fails and the
    // renewal check retries it.
    let (body, first) = get_when_issued(&relay, &host, &root).await?;
    assert_eq!(body, "origin wild");
    assert!(relay.state_dir.join("acme/live/_wildcard.tunnels.test/fullchain.pem").is_file());

    // Renewal: a new certificate (new serial) replaces the old without dropping anything.
    let deadline = tokio::time::Instant::now() + ISSUANCE;
    loop {
        let (body, serial) = get(&relay, &host, &root).await?;
        assert_eq!(body, "origin wild");
        if serial != first {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the wildcard was never renewed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let issued = orders(&relay, "dns-01", "issued").await?;
    assert!(issued >= 2, "{issued} wildcard orders issued");
    drop(pebble);
    relay.stop().await
}
