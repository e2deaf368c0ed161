//! What the binary's tests share: the binary itself, child processes killed on drop with
//! their stdout lines on a channel, a relay and a TCP client started as users start them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_postern");
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A child process killed on drop, with its stdout lines on a channel.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
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
    pub fn line_with(&self, needle: &str) -> String {
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

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
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

pub fn start_relay(state: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut args = postern_e2e::EPHEMERAL_SERVER.to_vec();
    args.extend(["--state-dir", state.to_str().expect("utf-8 path")]);
    args.extend_from_slice(extra);
    let relay = Proc::spawn(&args);
    let line = relay.line_with("agents connect to");
    let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("control port");
    (relay, port)
}

pub fn echo_origin() -> SocketAddr {
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

/// `postern tcp` exposing a fresh echo origin through the relay on `control_port`, trusting the
/// development CA in `state`; `extra` flags go last. Returns the client once it printed its URL,
/// and the public port.
pub fn start_tcp_client(state: &Path, control_port: u16, extra: &[&str]) -> (Proc, u16) {
    let origin = echo_origin().port().to_string();
    let server = format!("localhost:{control_port}");
    let ca = state.join("ca.pem");
    let mut args = vec!["tcp", &origin, "--server", &server, "--local-host", "127.0.0.1", "--ca"];
    args.push(ca.to_str().expect("utf-8"));
    args.extend_from_slice(extra);
    let client = Proc::spawn(&args);
    let public = public_port(&client);
    (client, public)
}

pub fn public_port(client: &Proc) -> u16 {
    let line = client.line_with("tcp://");
    let url = line.split_whitespace().next().expect("url");
    url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("public port")
}

pub fn wait_refused(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "public port {port} was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn admin_addr(relay: &Proc) -> String {
    let line = relay.line_with("admin API on");
    line.split("http://").nth(1).and_then(|r| r.split('/').next()).expect("admin address").to_string()
}

pub fn curl(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl").args(["--silent", "--max-time", "10"]).args(extra).arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a client (`args`, then the relay on `control_port`, `token` and `ca`) that must stop
/// with exit code 1; returns what it said on stderr.
pub fn client_fails(args: &[&str], control_port: u16, token: &str, ca: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--server", &format!("localhost:{control_port}"), "--token", token, "--ca"])
        .arg(ca)
        .output()
        .expect("run the client");
    assert_eq!(out.status.code(), Some(1), "the client did not fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `postern http LOCAL_PORT --id ID` through the relay on `control_port`, trusting `ca`.
pub fn start_http_client(local_port: u16, id: &str, control_port: u16, ca: &Path) -> Proc {
    let (local, server) = (local_port.to_string(), format!("localhost:{control_port}"));
    Proc::spawn(&["http", &local, "--id", id, "--server", &server, "--ca", ca.to_str().expect("utf-8")])
}
