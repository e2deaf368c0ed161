//! Harness for end-to-end tests: a real relay, real agents and real origins, all on
//! 127.0.0.1 with ephemeral ports and real TLS (a development CA generated per test).
//!
//! # Layout
//!
//! - [`TestRelay`]: a relay on `127.0.0.1:0` with its own temporary state directory.
//! - [`TestAgent`]: an agent task with its state channel and its own shutdown token.
//! - [`origin`]: local services to tunnel to: echo, half-close probes, an HTTP origin
//!   (HTTP/1.1 and h2c) and a WebSocket echo server.
//! - [`pki`]: throwaway certificate authorities for certificate tests.
//! - [`bore_client`]: the real bore client, found or installed.
//! - [`cluster`]: a Redis and several relays joined to it.
//! - [`redis`]: a real `redis-server` on a loopback port, the directory of test clusters.
//! - [`idp`]: a real OpenID provider (node-oidc-provider) and a cookie-keeping visitor.
//! - [`http`]: hyper clients over rustls for the HTTPS edge, and streaming test bodies.
//! - [`payload`] and [`sha256`]: deterministic data and checksums.

pub mod bore_client;
pub mod browser;
pub mod cluster;
pub mod curl;
pub mod faults;
pub mod http;
pub mod idp;
pub mod origin;
pub mod pebble;
pub mod pki;
pub mod redis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use postern_client::{AgentConfig, AgentError, AgentPhase, AgentState};
use postern_proto::token::{Claims, TokenKey};
use postern_proto::{TunnelGrant, TunnelKind, TunnelSpec};
use postern_server::{CertResolver, PortRange, Registry, Relay, RelayConfig, RelayListeners};
use postern_transport::tls::Trust;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen promptly before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `postern server` on ephemeral loopback ports (control, HTTP, HTTPS, admin, TCP tunnels), for
/// tests of the binary; the state directory is the caller's to add.
pub const EPHEMERAL_SERVER: &[&str] = &[
    "server",
    "--control-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--https-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
    "--tcp-ports",
    "0",
];

/// Logs to the test output when `POSTERN_TEST_LOG` is set (e.g. `debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("POSTERN_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// A relay running in this process.
#[derive(Debug)]
pub struct TestRelay {
    /// Where agents connect.
    pub control_addr: SocketAddr,
    /// Public HTTPS.
    pub https_addr: SocketAddr,
    /// Public plain HTTP.
    pub http_addr: SocketAddr,
    /// Admin API, metrics, health.
    pub admin_addr: SocketAddr,
    /// The bore-compatible endpoint, when started with [`TestRelay::with_bore`].
    pub bore_addr: Option<SocketAddr>,
    /// The peer listener, when the config joins a cluster.
    pub peer_addr: Option<SocketAddr>,
    /// The relay's token signing key, to mint test tokens.
    pub key: TokenKey,
    /// The development CA the relay's certificate chains to.
    pub ca: PathBuf,
    /// The relay's state directory (revocations, leases).
    pub state_dir: PathBuf,
    /// The settings it runs with.
    pub config: RelayConfig,
    /// The relay's registry.
    pub registry: Arc<Registry>,
    /// The relay's certificate store.
    pub certs: Arc<CertResolver>,
    /// Cancels the relay.
    pub shutdown: CancellationToken,
    task: JoinHandle<()>,
    _state: tempfile::TempDir,
}

impl TestRelay {
    /// A relay with OS-assigned TCP ports and no token.
    pub async fn start() -> anyhow::Result<Self> {
        Self::with_config(|_| {}).await
    }

    /// A relay whose default test config is adjusted by `edit`.
    pub async fn with_config(edit: impl FnOnce(&mut RelayConfig)) -> anyhow::Result<Self> {
        Self::with_certs(edit, None).await
    }

    /// A relay that also serves the extra certificates in `extra_dir` (`--tls-dir`).
    pub async fn with_certs(edit: impl FnOnce(&mut RelayConfig), extra_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::build(edit, extra_dir, None).await
    }

    /// A relay with a bore endpoint on port 7835 (the only port `bore local` dials) of a random
    /// loopback address, so tests can run side by side; TCP tunnels bind on that address too.
    pub async fn with_bore(edit: impl FnOnce(&mut RelayConfig)) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..32 {
            let ip =
                std::net::Ipv4Addr::new(127, rand::random_range(1..=254), rand::random(), rand::random_range(1..=254));
            match TcpListener::bind((ip, postern_proto::bore::DEFAULT_PORT)).await {
                Ok(l) => {
                    return Self::build(
                        |c| {
                            c.tcp_bind = std::net::IpAddr::from(ip).into();
                            edit(c)
                        },
                        None,
                        Some(l),
                    )
                    .await
                }
                Err(e) => last = Some(e),
            }
        }
        Err(anyhow::anyhow!("no loopback address with port 7835 free: {last:?}"))
    }

    async fn build(
        edit: impl FnOnce(&mut RelayConfig),
        extra_dir: Option<PathBuf>,
        bore: Option<TcpListener>,
    ) -> anyhow::Result<Self> {
        init_logging();
        let state = tempfile::tempdir()?;
        let key = TokenKey::from_bytes(rand::random());
        let mut config = RelayConfig {
            tcp_ports: PortRange::Ephemeral,
            token_key: Some(key.clone()),
            state_dir: Some(state.path().into()),
            // No DNS from tests: custom domains are granted by --allow-domain.
            txt_proof: postern_server::TxtLookup::Off,
            ..RelayConfig::default()
        };
        edit(&mut config);
        // A cluster's relays share one key (the edit may have set it).
        let key = config.token_key.clone().unwrap_or(key);
        config.tls_dir = extra_dir;
        let certs = CertResolver::load(config.cert_source().context("state directory")?)?;
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = RelayListeners {
            control: bind().await?,
            http: Some(bind().await?),
            https: Some(bind().await?),
            admin: Some(bind().await?),
            bore,
            peer: match &config.cluster {
                Some(_) => Some(bind().await?),
                None => None,
            },
        };
        Self::launch(config, certs, key, state, listeners).await
    }

    async fn launch(
        config: RelayConfig,
        certs: Arc<CertResolver>,
        key: TokenKey,
        state: tempfile::TempDir,
        listeners: RelayListeners,
    ) -> anyhow::Result<Self> {
        let addr = |l: &Option<TcpListener>| -> anyhow::Result<SocketAddr> {
            Ok(l.as_ref().context("listener")?.local_addr()?)
        };
        let control_addr = listeners.control.local_addr()?;
        let bore_addr = listeners.bore.as_ref().map(|l| l.local_addr()).transpose()?;
        let peer_addr = listeners.peer.as_ref().map(|l| l.local_addr()).transpose()?;
        let (https_addr, http_addr, admin_addr) =
            (addr(&listeners.https)?, addr(&listeners.http)?, addr(&listeners.admin)?);
        let ca = certs.dev().context("dev CA")?.ca_cert.clone();
        let relay = Relay::new(config.clone(), certs.clone(), &prometheus::Registry::new())?;
        let registry = relay.registry();
        let ready = relay.readiness();
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        let grace = config.drain_timeout + Duration::from_secs(5);
        let task = tokio::spawn(async move {
            if let Err(e) = relay.run(listeners, s, grace).await {
                panic!("relay failed: {e}");
            }
        });
        // Like an orchestrator, hand the relay out only once /readyz would say so.
        tokio::time::timeout(PATIENCE, ready.serving()).await.context("relay never became ready")?;
        Ok(Self {
            control_addr,
            https_addr,
            http_addr,
            admin_addr,
            bore_addr,
            peer_addr,
            key,
            ca,
            state_dir: state.path().into(),
            config,
            registry,
            certs,
            shutdown,
            task,
            _state: state,
        })
    }

    /// Stops this relay (draining) and starts a new one on the same addresses, state
    /// directory, certificates and key: a restart.
    pub async fn restart(self) -> anyhow::Result<Self> {
        let Self {
            control_addr,
            http_addr,
            https_addr,
            admin_addr,
            bore_addr,
            peer_addr,
            config,
            certs,
            key,
            shutdown,
            task,
            _state,
            ..
        } = self;
        shutdown.cancel();
        task.await?;
        let bind = |a: SocketAddr| TcpListener::bind(a);
        let listeners = RelayListeners {
            control: bind(control_addr).await?,
            http: Some(bind(http_addr).await?),
            https: Some(bind(https_addr).await?),
            admin: Some(bind(admin_addr).await?),
            bore: match bore_addr {
                Some(a) => Some(bind(a).await?),
                None => None,
            },
            peer: match peer_addr {
                Some(a) => Some(bind(a).await?),
                None => None,
            },
        };
        Self::launch(config, certs, key, _state, listeners).await
    }

    /// An agent config that trusts this relay, for the given tunnels.
    pub fn agent_config(&self, token: &str, tunnels: Vec<TunnelSpec>) -> AgentConfig {
        let mut cfg = AgentConfig::new(
            format!("localhost:{}", self.control_addr.port()),
            token,
            Trust::CaFile(self.ca.clone()),
            tunnels,
        );
        cfg.local_host = "127.0.0.1".into();
        cfg.max_backoff = Duration::from_millis(500);
        cfg
    }

    /// A signed token for `subject`, allowed ids `ids` (empty: the subject itself).
    pub fn mint(&self, subject: &str, ids: &[&str], admin: bool) -> String {
        self.mint_with(subject, ids, |c| c.admin = admin)
    }

    /// Claims for `subject` and `ids`, adjusted by `edit`, signed with the relay's key.
    pub fn mint_with(&self, subject: &str, ids: &[&str], edit: impl FnOnce(&mut Claims)) -> String {
        let mut claims = Claims {
            jti: format!("{:016x}", rand::random::<u64>()),
            sub: subject.into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            ports: Vec::new(),
            iat: 0,
            exp: None,
            admin: false,
            limits: Default::default(),
            share: false,
        };
        edit(&mut claims);
        self.key.sign(&claims).unwrap_or_default()
    }

    /// Waits until the registry satisfies `pred`.
    pub async fn wait_registry(&self, pred: impl Fn(&Registry) -> bool) -> anyhow::Result<()> {
        let mut rx = self.registry.subscribe();
        tokio::time::timeout(PATIENCE, async {
            loop {
                if pred(&self.registry) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .context("registry did not reach the expected state")
    }

    /// Stops the relay and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?;
        Ok(())
    }
}

/// One http tunnel spec for `local_port` under `id`.
pub fn http_tunnel(id: &str, local_port: u16) -> TunnelSpec {
    TunnelSpec { id: Some(id.to_string()), ..TunnelSpec::new(TunnelKind::Http, local_port) }
}

/// One tcp tunnel spec for `local_port`.
pub fn tcp(local_port: u16) -> TunnelSpec {
    TunnelSpec::new(TunnelKind::Tcp, local_port)
}

/// An agent running in this process.
#[derive(Debug)]
pub struct TestAgent {
    /// Agent state.
    pub state: watch::Receiver<AgentState>,
    /// Cancels the agent (it unregisters).
    pub shutdown: CancellationToken,
    /// The agent task; ends with the agent's result.
    pub task: JoinHandle<Result<(), AgentError>>,
}

impl TestAgent {
    /// Starts an agent.
    pub fn start(cfg: AgentConfig) -> Self {
        let (tx, state) = watch::channel(AgentState::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(postern_client::run(cfg, tx, shutdown.clone()));
        Self { state, shutdown, task }
    }

    /// Waits for a session and returns its tunnels.
    pub async fn connected(&mut self) -> anyhow::Result<Vec<TunnelGrant>> {
        let state = tokio::time::timeout(
            PATIENCE,
            self.state.wait_for(|s| matches!(s.phase, AgentPhase::Connected | AgentPhase::Failed)),
        )
        .await
        .context("agent did not connect in time")?
        .context("agent task ended")?
        .clone();
        if state.phase == AgentPhase::Failed {
            bail!("agent failed: {}", state.last_error.unwrap_or_default());
        }
        Ok(state.tunnels)
    }

    /// The public address of the first tunnel of the current session.
    pub async fn public_addr(&mut self) -> anyhow::Result<SocketAddr> {
        let tunnels = self.connected().await?;
        let url = &tunnels.first().context("no tunnels")?.public_url;
        let port: u16 = url.rsplit(':').next().context("url")?.parse()?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

/// Serves `agent`'s status and local control API (guarded by `token`, if any) on a fresh
/// loopback port until the returned token is cancelled; that port's address.
pub async fn serve_status(
    agent: &Arc<postern_client::Agent>,
    token: Option<&str>,
) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let token = token.map(str::to_string);
    tokio::spawn(postern_client::status::serve(listener, agent.clone(), token, stop.clone()));
    Ok((addr, stop))
}

/// The JSON lines of the file at `path` (an access log) once it holds at least `n`; an error
/// after [`PATIENCE`] (its writer flushes when idle, so lines arrive a moment after the traffic).
pub async fn json_lines(path: &std::path::Path, n: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        if lines.len() >= n {
            return Ok(lines);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "only {} of {n} lines in the log: {text}", lines.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects to `addr`, writes `data` and half-closes while reading until EOF; returns what came
/// back (through an echo origin: `data` itself).
pub async fn echo_through(addr: SocketAddr, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut r, mut w) = stream.into_split();
    let writer = async {
        w.write_all(data).await?;
        w.shutdown().await?;
        anyhow::Ok(())
    };
    let reader = async {
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await?;
        anyhow::Ok(back)
    };
    let ((), back) = tokio::try_join!(writer, reader)?;
    Ok(back)
}

/// Reads `conn` until it ends, for at most [`PATIENCE`]: what arrived, and how it ended (`Ok` for
/// a clean close, the error for a reset).
pub async fn read_until_end(conn: &mut tokio::net::TcpStream) -> anyhow::Result<(Vec<u8>, std::io::Result<()>)> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .context("the connection did not end")?;
    Ok((got, end))
}

/// `len` bytes from a seeded generator: different seeds give different payloads.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Resident memory of process `pid`, in KiB (Linux).
pub fn rss_kib_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Open file descriptors of process `pid` (Linux).
pub fn open_fds_of(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// This process's resident memory, in KiB (Linux; 0 elsewhere).
pub fn rss_kib() -> u64 {
    rss_kib_of(std::process::id()).unwrap_or(0)
}

/// This process's open file descriptors (Linux; 0 elsewhere).
pub fn open_fds() -> usize {
    open_fds_of(std::process::id()).unwrap_or(0)
}
