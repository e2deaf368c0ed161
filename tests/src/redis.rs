//! A real Redis for cluster tests: `redis-server` (installed by `tests/run.sh`) on a free
//! loopback port outside the ephemeral range ([`reserved_port`]), without persistence, killed on drop. It can be stopped and started again on
//! the same port, to test a directory that goes away and comes back empty.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A free loopback port below the kernel's ephemeral range. A Redis that is started later on a
/// port chosen in advance (`start_on`, `restart`) must find it still free, and a port from the
/// ephemeral range may meanwhile become the source port of some outgoing connection (the relays
/// dialling that very Redis, say), which makes `redis-server` fail to bind.
pub fn reserved_port() -> anyhow::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|v| v.parse::<u16>().ok()))
        .unwrap_or(32768);
    let floor = 10_000u16.min(low.saturating_sub(1000));
    for _ in 0..200 {
        let port = rand::random_range(floor..low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port between {floor} and {low}")
}

/// A running `redis-server`.
#[derive(Debug)]
pub struct TestRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts a Redis on a free port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let port = reserved_port()?;
            let mut redis = Self { port, child: None };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// Starts a Redis on `port` (a directory that was unreachable when the relays started).
    pub async fn start_on(port: u16) -> anyhow::Result<Self> {
        let mut redis = Self { port, child: None };
        redis.spawn().await?;
        Ok(redis)
    }

    /// The `--cluster` URL of this Redis.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (tests/run.sh installs the redis-server package)")?;
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping().await {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!("redis-server exited at once ({status}); port {} taken?", self.port);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("redis-server on port {} never answered PING", self.port)
    }

    /// True when the server answers `PING`.
    pub async fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await, Ok(Ok(_)) if &buf == b"+PONG\r\n")
    }

    /// Kills the server (its data is gone: there is no persistence).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }
}
