//! The `postern` binary as users run it: real processes, real sockets on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::io::{Read, Write};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const PATIENCE: Duration = Duration::from_secs(20);

/// A child process killed on drop, with its stdout lines on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("POSTERN_TOKEN")
            .env("POSTERN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn postern");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// Waits for a stdout line containing `needle`.
    fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no stdout line containing {needle:?}: {e}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(state: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["server", "--control-addr", "127.0.0.1:0", "--tcp-ports", "0", "--state-dir"];
    args.push(state.to_str().expect("utf-8 path"));
    args.extend_from_slice(extra);
    let relay = Proc::spawn(&args);
    let line = relay.line_with("agents connect to");
    let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("control port");
    (relay, port)
}

fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = stream.try_clone().expect("clone");
                let mut w = stream;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

fn public_port(client: &Proc) -> u16 {
    let line = client.line_with("tcp://");
    let url = line.split_whitespace().next().expect("url");
    url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("public port")
}

fn wait_refused(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "public port {port} was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_explains_itself() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["server", "tcp", "demo"] {
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
    let (_relay, port) = start_relay(state.path(), &[]);
    let origin = echo_origin();
    let ca = state.path().join("ca.pem");
    let mut client = Proc::spawn(&[
        "tcp",
        &origin.port().to_string(),
        "--server",
        &format!("localhost:{port}"),
        "--local-host",
        "127.0.0.1",
        "--ca",
        ca.to_str().expect("utf-8"),
    ]);
    let public = public_port(&client);

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
}

#[test]
fn ctrl_c_unregisters_and_exits_zero() {
    let state = tempfile::tempdir().expect("tempdir");
    let (_relay, port) = start_relay(state.path(), &[]);
    let origin = echo_origin();
    let ca = state.path().join("ca.pem");
    let mut client = Proc::spawn(&[
        "tcp",
        &origin.port().to_string(),
        "--server",
        &format!("127.0.0.1:{port}"),
        "--ca",
        ca.to_str().expect("utf-8"),
    ]);
    let public = public_port(&client);
    client.signal("-INT");
    let status = client.wait_exit();
    assert!(status.success(), "{status:?}");
    wait_refused(public);
}

#[test]
fn server_check_rejects_an_open_relay_on_a_public_address() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["server", "--check", "--control-addr", "0.0.0.0:7000", "--state-dir"])
        .arg(state.path())
        .env_remove("POSTERN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}

#[test]
fn config_file_sets_the_token_and_rejects_unknown_keys() {
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = state.path().join("postern.toml");
    std::fs::write(&cfg, "token = \"from-file\"\ntcp_ports = \"0\"\n").expect("write");
    let (_relay, port) = start_relay(state.path(), &["--config", cfg.to_str().expect("utf-8")]);
    let ca = state.path().join("ca.pem");
    let out = Command::new(BIN)
        .args(["tcp", "9", "--server", &format!("localhost:{port}"), "--token", "nope", "--ca"])
        .arg(&ca)
        .output()
        .expect("run client");
    assert_eq!(out.status.code(), Some(1));

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
