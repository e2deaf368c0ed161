//! A cluster of real `postern server` processes on a real Redis: one is killed with SIGKILL,
//! and its clients (given both relays) move to the other and keep their names and ports, while
//! the survivor drops the dead relay's routes within `--cluster-node-ttl`. Also the README's
//! two-relay example, as written there.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use postern_e2e::redis::TestRedis;
use support::{admin_addr, echo_origin, public_port, start_relay, Proc, PATIENCE};

const SECRET: &str = "a cluster secret of 32 characters";

/// A clustered relay, `id`, its TCP ports on `tcp_bind`, signing tokens with the key in `key`
/// (or its own, in its state directory).
fn member(state: &Path, redis: &TestRedis, id: &str, tcp_bind: &str, key: Option<&Path>) -> (Proc, u16) {
    let url = redis.url();
    let mut args = vec![
        "--cluster",
        &url,
        "--cluster-secret",
        SECRET,
        "--relay-id",
        id,
        "--peer-addr",
        "127.0.0.1:0",
        "--tcp-bind",
        tcp_bind,
        "--cluster-node-ttl",
        "2s",
        "--admin-token",
        "root",
    ];
    if let Some(key) = key {
        args.extend(["--token-key", key.to_str().expect("utf-8")]);
    }
    start_relay(state, &args)
}

/// Echoes `data` through `addr`; `None` while nothing answers there.
fn echo_once(addr: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(data).ok()?;
    s.shutdown(std::net::Shutdown::Write).ok()?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).ok()?;
    (back == data).then_some(back)
}

/// Waits until `addr` echoes; returns when.
fn until_echo(addr: SocketAddr) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if echo_once(addr, b"ping through the cluster").is_some() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "nothing echoed at {addr} ({:?})", echo_once_err(addr));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `GET /api/v1/relays` on the admin address, through curl.
fn relays(admin: &str) -> serde_json::Value {
    let body = support::curl(&format!("http://{admin}/api/v1/relays"), &["-H", "authorization: Bearer root"]);
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relays_clients_move_and_keep_their_names_and_ports() {
    let redis = TestRedis::start().await.expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    // Relay b signs with relay a's key (made in a's state directory at its start).
    let (mut relay_a, a_port) = member(&a_dir, &redis, "a", "127.0.0.1", None);
    let (relay_b, b_port) = member(&b_dir, &redis, "b", "127.0.0.2", Some(&a_dir.join("token.key")));
    let b_admin = admin_addr(&relay_b);
    let a_admin = admin_addr(&relay_a);
    // Both reach the directory (a relay refuses agents, retryably, until it does).
    for admin in [&a_admin, &b_admin] {
        until(|| relays(admin)["store"] == "up", "a relay never reached Redis");
    }

    // One client, given both relays: it connects to the first.
    let origin = echo_origin().port().to_string();
    let servers = format!("localhost:{a_port},localhost:{b_port}");
    let (a_ca, b_ca) = (a_dir.join("ca.pem"), b_dir.join("ca.pem"));
    let (a_ca, b_ca) = (a_ca.to_str().expect("utf-8"), b_ca.to_str().expect("utf-8"));
    let client =
        Proc::spawn(&["tcp", &origin, "--server", &servers, "--ca", a_ca, "--ca", b_ca, "--local-host", "127.0.0.1"]);
    let port = public_port(&client);
    let web = Proc::spawn(&["http", &origin, "--id", "web", "--server", &servers, "--ca", a_ca, "--ca", b_ca]);
    let name = format!("https://web-{origin}.localhost:");
    assert!(web.line_with("https://").starts_with(&name));
    until_echo(([127, 0, 0, 1], port).into());
    until_echo(([127, 0, 0, 2], port).into());
    assert_eq!(relays(&b_admin)["relays"].as_array().map(Vec::len), Some(2));

    relay_a.signal("-KILL");
    let killed = Instant::now();
    relay_a.wait_exit();
    // The client reconnects to relay B and is given the same port there.
    let again = public_port(&client);
    assert_eq!(again, port, "the port changed when the client moved");
    let rerouted = until_echo(([127, 0, 0, 2], port).into());
    // The HTTP client too, under the same name (the port in the URL is relay b's HTTPS port:
    // on one machine each relay has its own; behind one address they are the same).
    assert!(web.line_with("https://").starts_with(&name), "the HTTP tunnel's name changed");
    // Relay B drops the dead relay within the node TTL (2 s).
    let deadline = killed + PATIENCE;
    let reaped = loop {
        let v = relays(&b_admin);
        if v["relays"].as_array().is_some_and(|r| r.len() == 1 && r[0]["id"] == "b") {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "relay a was never dropped: {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (reroute, reap) = (rerouted - killed, reaped - killed);
    eprintln!(
        "after SIGKILL: port {port} served again through relay b in {reroute:?}; relay a's routes dropped in {reap:?}"
    );
    // The TTL, and a little for the polling and a busy machine.
    assert!(reap <= Duration::from_millis(2000 + 500), "relay a's routes outlived the node TTL: {reap:?}");
}

/// Waits until `cond` holds.
fn until(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo_once_err(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"x");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut back = Vec::new();
    format!("{:?} {:?}", s.read_to_end(&mut back), back)
}
