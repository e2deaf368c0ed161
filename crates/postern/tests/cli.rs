//! The `postern` binary as users run it: real processes, real sockets on 127.0.0.1.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use std::io::{Read, Write};

mod support;

use support::*;

#[test]
fn help_explains_itself() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["server", "http", "tcp", "start", "demo"] {
        assert!(text.contains(word), "{text}");
    }
    let out = Command::new(BIN).args(["tcp", "--help"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--remote-port") && text.contains("POSTERN_TOKEN"), "{text}");
}

#[test]
fn wrong_token_prints_the_reason_and_exits_nonzero() {
    let state = tempfile::tempdir().expect("tempdir");
    let (_relay, port) = start_relay(state.path(), &["--token", "right"]);
    let ca = state.path().join("ca.pem");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["tcp", "9", "--server", &format!("localhost:{port}"), "--token", "wrong", "--ca"])
        .arg(&ca)
        .env("POSTERN_LOG", "warn")
        .output()
        .expect("run client");
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("token was not accepted"), "{stderr}");
    // It did not sit in a retry loop.
    assert!(started.elapsed() < PATIENCE);
}

#[test]
fn untrusted_relay_certificate_is_a_clear_error() {
    let state = tempfile::tempdir().expect("tempdir");
    let (_relay, port) = start_relay(state.path(), &[]);
    let other = tempfile::tempdir().expect("tempdir");
    // A different development CA: the relay's certificate does not chain to it.
    let out = Command::new(BIN).args(["server", "--check", "--state-dir"]).arg(other.path()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["tcp", "9", "--server", &format!("localhost:{port}"), "--ca"])
        .arg(other.path().join("ca.pem"))
        .output()
        .expect("run client");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not trusted") && stderr.contains("--ca"), "{stderr}");
}

#[test]
fn killed_client_closes_public_connections_and_frees_the_port() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, port) = start_relay(state.path(), &[]);
    let admin = admin_addr(&relay);
    let (mut client, public) = start_tcp_client(state.path(), port, &[]);

    let mut conn = TcpStream::connect(("127.0.0.1", public)).expect("connect public");
    conn.set_read_timeout(Some(PATIENCE)).expect("timeout");
    conn.write_all(b"mid-stream").expect("write");
    let mut buf = [0u8; 10];
    conn.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"mid-stream");

    client.signal("-KILL");
    client.wait_exit();
    let mut rest = Vec::new();
    let r = conn.read_to_end(&mut rest);
    assert!(r.is_err() || rest.is_empty(), "public connection must close");
    wait_refused(public);
    // The status API and the metrics agree.
    assert!(
        curl(&format!("http://{admin}/api/v1/tunnels"), &["-H", "Authorization: Bearer x"]).contains("unauthorized")
    );
    let metrics = curl(&format!("http://{admin}/metrics"), &[]);
    assert!(metrics.contains("postern_agents 0"), "{metrics}");
    assert!(metrics.contains("postern_tunnels{kind=\"tcp\"} 0"), "{metrics}");
}

#[test]
fn ctrl_c_unregisters_and_exits_zero() {
    let state = tempfile::tempdir().expect("tempdir");
    let (_relay, port) = start_relay(state.path(), &[]);
    let (mut client, public) = start_tcp_client(state.path(), port, &[]);
    client.signal("-INT");
    let status = client.wait_exit();
    assert!(status.success(), "{status:?}");
    wait_refused(public);
}

#[test]
fn server_check_says_a_public_relay_needs_tokens() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["server", "--check", "--control-addr", "0.0.0.0:7000", "--state-dir"])
        .arg(state.path())
        .env_remove("POSTERN_TOKEN")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("clients need a token: postern token mint"), "{text}");
    assert!(state.path().join("token.key").exists(), "the signing key is created on first start");
}

#[test]
fn minted_tokens_open_tunnels_and_forged_ones_do_not() {
    let state = tempfile::tempdir().expect("tempdir");
    // A shared token turns anonymous access off, even on loopback.
    let (_relay, port) = start_relay(state.path(), &["--token", "shared-secret"]);
    let mint = |subject: &str, ids: &str| {
        let out = Command::new(BIN)
            .args(["token", "mint", "--subject", subject, "--ids", ids, "--ttl", "1h", "--state-dir"])
            .arg(state.path())
            .output()
            .expect("mint");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let token = mint("ws-7", "ws-7*");
    assert!(token.starts_with("pst1."), "{token}");
    let ca = state.path().join("ca.pem");
    let origin = echo_origin();
    let client = Proc::spawn(&[
        "http",
        &origin.port().to_string(),
        "--server",
        &format!("localhost:{port}"),
        "--token",
        &token,
        "--ca",
        ca.to_str().expect("utf-8"),
    ]);
    // The id defaults to the token's subject.
    let line = client.line_with("https://");
    assert!(line.starts_with(&format!("https://ws-7-{}.localhost:", origin.port())), "{line}");

    // An id outside the token's patterns is refused for good.
    let err = client_fails(&["http", "9", "--id", "other"], port, &token, &ca);
    assert!(err.contains("does not allow the tunnel id"), "{err}");

    // A token signed by another relay's key.
    let other = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["token", "mint", "--subject", "ws-7", "--state-dir"])
        .arg(other.path())
        .output()
        .expect("mint");
    let forged = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = client_fails(&["tcp", "9"], port, &forged, &ca);
    assert!(err.contains("signature is not valid"), "{err}");
}

#[test]
fn token_mint_takes_a_volume_as_plans_are_written() {
    let state = tempfile::tempdir().expect("tempdir");
    let mint = |volume: &str| {
        Command::new(BIN)
            .args(["token", "mint", "--subject", "plan-free", "--volume", volume, "--state-dir"])
            .arg(state.path())
            .output()
            .expect("mint")
    };
    let out = mint("10GB/month");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger = std::fs::read_to_string(state.path().join("tokens.json")).expect("ledger");
    assert!(ledger.contains(r#""volume":{"bytes":10000000000,"period":"month"}"#), "{ledger}");
    let out = mint("10GB/week");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--volume") && err.contains("10GB/month or 500MiB/day"), "{err}");
}

#[test]
fn config_file_sets_the_token_and_rejects_unknown_keys() {
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = state.path().join("postern.toml");
    std::fs::write(&cfg, "token = \"from-file\"\ntcp_ports = \"0\"\n").expect("write");
    let (_relay, port) = start_relay(state.path(), &["--config", cfg.to_str().expect("utf-8")]);
    client_fails(&["tcp", "9"], port, "nope", &state.path().join("ca.pem"));

    std::fs::write(&cfg, "tokn = \"typo\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["server", "--check", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokn"));
}

/// The README's quick start, verified with curl as a user would: `postern demo`, then
/// `curl --cacert <ca> https://demo-<port>.localhost:<https>/`.
#[test]
fn demo_page_is_served_over_https_to_curl() {
    let state = tempfile::tempdir().expect("tempdir");
    let demo = Proc::spawn(&[
        "demo",
        "--control-addr",
        "127.0.0.1:0",
        "--https-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--demo-addr",
        "127.0.0.1:0",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    let try_line = demo.line_with("try:");
    let url = try_line.split_whitespace().last().expect("url").to_string();
    assert!(url.starts_with("https://demo-") && url.contains(".localhost:"), "{url}");
    // The tunnel line comes once the tunnel is registered.
    demo.line_with("->");
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(state.path().join("ca.pem"))
        .arg(&url)
        .output()
        .expect("curl must be installed (.ci/run installs it)");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(body.contains("Hello from the postern demo service"), "{body}");

    // HTTP/2 with curl too, and a clear 404 for a name nobody holds.
    let https_port = url.rsplit(':').next().map(|p| p.trim_end_matches('/')).expect("port").to_string();
    let out = Command::new("curl")
        .args(["--silent", "--http2", "--write-out", "%{http_code} %{http_version}", "--output", "/dev/null"])
        .arg("--cacert")
        .arg(state.path().join("ca.pem"))
        .arg(format!("https://nobody-1.localhost:{https_port}/"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404 2");
}

#[test]
fn http_client_prints_its_urls() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, port) = start_relay(state.path(), &[]);
    drop(relay.line_with("public HTTPS"));
    let origin = echo_origin();
    let ca = state.path().join("ca.pem");
    let client = start_http_client(origin.port(), "cli-test", port, &ca);
    let line = client.line_with("https://");
    assert!(line.starts_with(&format!("https://cli-test-{}.localhost:", origin.port())), "{line}");
    assert!(line.contains("also https://cli-test.localhost:"), "{line}");
}

/// Runs curl against the relay's HTTPS port for `name`, trusting `ca`; returns the HTTP status
/// (0 when TLS failed).
fn curl_status(https_port: u16, name: &str, ca: &Path) -> u16 {
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "10", "--output", "/dev/null", "--write-out", "%{http_code}"])
        .arg("--resolve")
        .arg(format!("{name}:{https_port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{name}:{https_port}/"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn sighup_reloads_the_certificate_files() {
    use postern_e2e::pki::TestCa;
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let (ca_a, ca_b) = (TestCa::new("A").expect("ca"), TestCa::new("B").expect("ca"));
    let (pem_a, pem_b) = (dir.path().join("a.pem"), dir.path().join("b.pem"));
    ca_a.write_ca(&pem_a).expect("write");
    ca_b.write_ca(&pem_b).expect("write");
    ca_a.write_leaf(&live, &["example.test", "*.example.test"]).expect("leaf");
    let cert = live.join("fullchain.pem");
    let key = live.join("privkey.pem");
    let relay = Proc::spawn(&[
        "server",
        "--domain",
        "example.test",
        "--control-addr",
        "127.0.0.1:0",
        "--http-addr",
        "off",
        "--https-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "off",
        "--tcp-bind",
        "127.0.0.1",
        "--tcp-ports",
        "0",
        "--state-dir",
        dir.path().to_str().expect("utf-8"),
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    let line = relay.line_with("public HTTPS on");
    let port: u16 = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.trim_end_matches(':').rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("https port");
    assert_eq!(curl_status(port, "nobody-1.example.test", &pem_a), 404);
    assert_eq!(curl_status(port, "nobody-1.example.test", &pem_b), 0, "not B's certificate yet");

    ca_b.write_leaf(&live, &["example.test", "*.example.test"]).expect("leaf");
    relay.signal("-HUP");
    // Well within the 10 s file-watch interval, so this is the SIGHUP at work.
    let deadline = Instant::now() + Duration::from_secs(5);
    while curl_status(port, "nobody-1.example.test", &pem_b) != 404 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the certificate");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn token_revoke_from_the_cli_disconnects_a_running_client() {
    let state = tempfile::tempdir().expect("tempdir");
    let (_relay, port) = start_relay(state.path(), &["--token", "shared-secret"]);
    let out = Command::new(BIN)
        .args(["token", "mint", "--subject", "ws-r", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("mint");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let jti = postern_proto::token::peek(&token).expect("claims").jti;
    let (mut client, public) = start_tcp_client(state.path(), port, &["--token", &token]);
    let out =
        Command::new(BIN).args(["token", "revoke", &jti, "--state-dir"]).arg(state.path()).output().expect("revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_refused(public);
    // The client is refused on reconnect and gives up with the reason.
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let state = tempfile::tempdir().expect("tempdir");
    let (mut relay, _port) = start_relay(state.path(), &["--drain-timeout", "5s"]);
    relay.signal("-TERM");
    let status = relay.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn changing_the_config_file_reloads_policies_without_dropping_tunnels() {
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = state.path().join("postern.toml");
    std::fs::write(&cfg, "[[policy]]\nids = \"pol*\"\nallow_ips = [\"127.0.0.9\"]\n").expect("write");
    let (_relay, port) = start_relay(state.path(), &["--config", cfg.to_str().expect("utf-8")]);
    let origin = echo_origin();
    let ca = state.path().join("ca.pem");
    let client = start_http_client(origin.port(), "pol", port, &ca);
    let url = client.line_with("https://").split_whitespace().next().expect("url").to_string();
    let status = |url: &str| {
        let out = Command::new("curl")
            .args(["--silent", "--max-time", "10", "--output", "/dev/null", "--write-out", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(format!("{url}/"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(status(&url), "403", "the policy only allows 127.0.0.9");
    // Widen the policy; the relay notices the file change.
    std::fs::write(&cfg, "[[policy]]\nids = \"pol*\"\nallow_ips = [\"127.0.0.0/8\"]\n").expect("write");
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The echo origin is not HTTP, so a request that reaches it is a 502; what matters is
        // that it is no longer a 403.
        let s = status(&url);
        if s != "403" {
            assert_eq!(s, "502");
            break;
        }
        assert!(Instant::now() < deadline, "config change never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The tunnel stayed up the whole time: the client printed no reconnect.
    assert!(client.lines.try_iter().all(|l| !l.contains("reconnected")));
}

#[test]
fn bore_tokens_are_recorded_and_the_bore_endpoint_challenges_with_them() {
    use postern_proto::bore::{self, ClientMessage, Decoder, ServerMessage};
    use std::io::{Read, Write};

    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["token", "mint", "--subject", "carol", "--kind", "bore", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("mint");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let recorded = std::fs::read_to_string(state.path().join("bore-tokens.json")).expect("bore-tokens.json");
    assert!(recorded.contains(&token));

    let (relay, _) = start_relay(state.path(), &["--bore-addr", "127.0.0.1:0"]);
    let line = relay.line_with("bore clients:");
    let addr: SocketAddr =
        line.rsplit("endpoint ").next().and_then(|a| a.trim_end_matches(')').parse().ok()).expect("addr");
    assert!(relay.line_with("warning: bore clients always dial port 7835").contains("7835"));

    // bore's handshake, by hand: challenge, answer, hello.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut dec = Decoder::default();
    let mut next = |s: &mut TcpStream| loop {
        if let Some(m) = dec.next_server().expect("frame") {
            return m;
        }
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "relay closed the bore connection");
        dec.extend(&buf[..n]);
    };
    let ServerMessage::Challenge(challenge) = next(&mut s) else { panic!("expected a challenge") };
    let tag = bore::answer(&bore::key(&token), &challenge);
    s.write_all(&bore::encode_client(&ClientMessage::Authenticate(tag))).expect("write");
    s.write_all(&bore::encode_client(&ClientMessage::Hello(0))).expect("write");
    match next(&mut s) {
        ServerMessage::Hello(port) => assert!(port > 0),
        other => panic!("expected Hello, got {other:?}"),
    }
    assert_eq!(next(&mut s), ServerMessage::Heartbeat);
}

/// `postern healthcheck ARGS...`: (succeeded, stdout + stderr).
fn healthcheck(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).arg("healthcheck").args(args).env_remove("POSTERN_ADMIN_ADDR").output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Repeats `postern healthcheck ARGS...` until it succeeds (`ok`) or fails (`!ok`); its output.
fn healthcheck_until(args: &[&str], ok: bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (now, text) = healthcheck(args);
        if now == ok {
            return text;
        }
        assert!(Instant::now() < deadline, "healthcheck {args:?} never turned {ok}: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn healthcheck_probes_the_relay_and_the_client() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, port) = start_relay(state.path(), &[]);
    let admin = admin_addr(&relay);
    // Readiness follows the listeners by a moment; probe as a container runtime would, repeatedly.
    let text = healthcheck_until(&[&admin], true);
    assert!(text.contains("/readyz: 200 OK"), "{text}");
    let (ok, text) = healthcheck(&[&admin, "--path", "/healthz"]);
    assert!(ok, "{text}");

    // A client with a status listener is ready while connected, and not once its relay is gone.
    let status = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let (_client, _) = start_tcp_client(state.path(), port, &["--status", &status, "--status-token", "tok-1"]);
    // The client printed its URLs once connected, so it is ready now. The probes need no token.
    let (ok, text) = healthcheck(&[&status]);
    assert!(ok, "{text}");
    // The control API does, as curl shows.
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("http://{status}/api/v1/status"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(curl(&[]).ends_with("\n401"), "{}", curl(&[]));
    assert!(curl(&["-H", "Authorization: Bearer tok-2"]).ends_with("\n401"));
    let text = curl(&["-H", "Authorization: Bearer tok-1"]);
    assert!(text.ends_with("\n200") && text.contains(r#""state": "Connected""#), "{text}");
    drop(relay);
    let text = healthcheck_until(&[&status], false);
    assert!(text.contains("503 Service Unavailable"), "{text}");
    let (ok, _) = healthcheck(&[&status, "--path", "/healthz"]);
    assert!(ok, "the client process still answers");

    // Clear errors for what cannot be probed.
    let (ok, text) = healthcheck(&[&admin]);
    assert!(!ok && text.contains("cannot connect"), "{text}");
    let (ok, text) = healthcheck(&["off"]);
    assert!(!ok && text.contains("admin listener is off"), "{text}");
    let (ok, text) = healthcheck(&[&status, "--path", "readyz"]);
    assert!(!ok && text.contains("invalid path"), "{text}");
}

/// One echo exchange through the TCP tunnel on `public`, closed by us.
fn echo_once(public: u16, what: &[u8]) {
    let mut conn = TcpStream::connect(("127.0.0.1", public)).expect("connect public");
    conn.set_read_timeout(Some(PATIENCE)).expect("timeout");
    conn.write_all(what).expect("write");
    let mut back = vec![0u8; what.len()];
    conn.read_exact(&mut back).expect("echo");
    assert_eq!(back, what);
}

/// Waits until `path` holds `n` lines, and returns them.
fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines: Vec<String> =
            std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} holds {} lines, not {n}", path.display(), lines.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reopens_the_access_log_after_logrotate_moved_it() {
    let state = tempfile::tempdir().expect("tempdir");
    let log = state.path().join("access.log");
    let (relay, port) = start_relay(state.path(), &["--access-log", log.to_str().expect("utf-8")]);
    let (_client, public) = start_tcp_client(state.path(), port, &[]);

    echo_once(public, b"before the rotation");
    let first = log_lines(&log, 1);
    assert!(first[0].contains("\"kind\":\"tcp\"") && first[0].contains("\"bytes_in\":19"), "{first:?}");

    // What logrotate does: move the file away, then tell the relay.
    let rotated = state.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    relay.signal("-HUP");
    let deadline = Instant::now() + PATIENCE;
    while !log.exists() {
        assert!(Instant::now() < deadline, "SIGHUP did not reopen the access log");
        std::thread::sleep(Duration::from_millis(20));
    }
    echo_once(public, b"after");
    let second = log_lines(&log, 1);
    assert!(second[0].contains("\"bytes_in\":5"), "{second:?}");
    assert_eq!(log_lines(&rotated, 1).len(), 1, "the rotated file kept only the old line");
}

#[test]
fn postern_agent_is_driven_by_the_readme_curl_commands() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, port) = start_relay(state.path(), &["--admin-token", "root-1"]);
    let admin = admin_addr(&relay);
    let ca = state.path().join("ca.pem");
    let (server, ca) = (format!("localhost:{port}"), ca.to_str().expect("utf-8").to_string());

    // With nothing that could ever open a tunnel, it says so and stops.
    let out = Command::new(BIN).args(["agent", "--server", &server, "--ca", &ca]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"), "{out:?}");
    let out = Command::new(BIN).args(["agent", "--allow-remote", "9000-8000"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "a backwards range is a usage error: {out:?}");

    let origin = echo_origin().port().to_string();
    let client = Proc::spawn(&[
        "agent",
        "--client-id",
        "ws1",
        "--allow-remote",
        &origin,
        "--server",
        &server,
        "--ca",
        &ca,
        "--local-host",
        "127.0.0.1",
    ]);
    client.line_with("no tunnel open yet");
    let api = format!("http://{admin}/api/v1/agents/by-client/ws1/tunnels");
    let auth = "Authorization: Bearer root-1";
    let body = format!(r#"{{"kind":"tcp","port":{origin}}}"#);
    let added = curl(&api, &["-H", auth, "-d", &body]);
    assert!(added.contains(r#""public_url": "tcp://localhost:"#), "{added}");
    let public = public_port(&client);
    echo_once(public, b"driven");
    let listed = curl(&api, &["-H", auth]);
    assert!(listed.contains(&format!("tcp-{public}")), "{listed}");
    let closed = curl(&format!("{api}/tcp-{public}"), &["-X", "DELETE", "-H", auth]);
    assert!(closed.contains(r#""closed""#), "{closed}");
    client.line_with(&format!("closed tcp-{public}"));
    wait_refused(public);
    // Outside --allow-remote: refused by the client.
    let refused = curl(&api, &["-H", auth, "-d", r#"{"kind":"tcp","port":22}"#]);
    assert!(refused.contains("agent_refused"), "{refused}");
}
