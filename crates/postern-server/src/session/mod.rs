//! One agent connection, from TCP accept to cleanup.
//!
//! # Layout
//!
//! - this module: the handshake, the `Welcome`, and the session's life ([`run`]);
//! - [`grant`]: identity, reservation of names and ports, custom domains;
//! - [`control`]: the control stream, the heartbeat and the drain;
//! - [`live`]: tunnels opened and closed after the handshake, and the admin API's changes.
//!
//! 1. TLS with ALPN `postern/1`, then the agent's `Hello`, both within the handshake timeout.
//! 2. Authentication and validation; public ports are bound before anything is promised.
//! 3. `Welcome` (or `Refused`, then close).
//! 4. The same connection becomes HTTP/2 with the relay as client. The first stream is the
//!    control stream. PINGs run every heartbeat interval.
//! 5. The session ends when the agent unregisters or disconnects, a heartbeat is missed, or the
//!    relay shuts down. Its tunnels leave the registry and their public ports close.

mod control;
mod grant;
mod live;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use postern_proto::{DecodeError, Hello, Message, RefuseCode, Refused, Welcome, ALPN};
use postern_transport::framed::{read_message, write_message, FrameIoError};
use postern_transport::mux;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{field, info, info_span, warn, Instrument, Span};

use crate::agent::{AgentHandle, OpenError};
use crate::auth::{AuthError, Authenticator};
use crate::config::RelayConfig;
use crate::quota::Quotas;
use crate::tunnel::admit::Gate;
use crate::tunnel::registry::{Agent, AgentInfo, Registration, Registry};

/// State every session shares.
pub struct Shared {
    /// Settings.
    pub config: RelayConfig,
    /// Credential check.
    pub auth: Authenticator,
    /// Live tunnels.
    pub registry: Arc<Registry>,
    /// TLS for the control port.
    pub tls: TlsAcceptor,
    /// Admission of public connections (caps, access rules, quotas), and per-address limits.
    pub gate: Arc<Gate>,
    /// How public HTTP URLs look; `None` when the relay has no HTTP listener.
    pub urls: Option<PublicUrls>,
    /// Per-token quotas (shared with the bore endpoint).
    pub quotas: Arc<Quotas>,
    /// Which custom domains clients may claim.
    pub domains: crate::domains::DomainPolicy,
    /// Gets certificates for granted custom domains, when ACME is on.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// The cluster, on a clustered relay: names and ports are claimed there too.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Scheme and port of public HTTP URLs.
#[derive(Debug, Clone, Copy)]
pub struct PublicUrls {
    /// `https` when the relay has an HTTPS listener, else `http`.
    pub secure: bool,
    /// Port shown in URLs (left out when it is the scheme's default).
    pub port: u16,
}

impl PublicUrls {
    /// `https://<label>.<domain>[:port]`.
    pub fn url(&self, label: &str, domain: &str) -> String {
        self.host_url(&format!("{label}.{domain}"))
    }

    /// `https://<host>[:port]`.
    pub fn host_url(&self, host: &str) -> String {
        let (scheme, default) = if self.secure { ("https", 443) } else { ("http", 80) };
        if self.port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).field("tunnels", &self.registry.len()).finish()
    }
}

/// How a session ended, when it ended without a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The agent sent `Unregister`.
    Unregistered,
    /// The agent closed the connection.
    AgentClosed,
    /// The relay is shutting down.
    RelayShutdown,
    /// The operator kicked the agent through the admin API.
    Kicked,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unregistered => "agent unregistered",
            Self::AgentClosed => "agent closed the connection",
            Self::RelayShutdown => "relay shutting down",
            Self::Kicked => "kicked by the operator",
        })
    }
}

/// Why a session failed. [`SessionError::fault`] says whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TLS failed (wrong protocol, bad client, reset).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The agent did not offer ALPN `postern/1`.
    #[error("client did not negotiate ALPN postern/1 (got {0:?})")]
    Alpn(Option<String>),
    /// The agent took too long to finish TLS and send its Hello.
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake frames were invalid.
    #[error("handshake: {0}")]
    Frame(#[from] FrameIoError),
    /// A frame that is not a Hello came first.
    #[error("expected Hello, got {0}")]
    UnexpectedMessage(&'static str),
    /// The token was refused.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The Hello asked for something that cannot be granted.
    #[error("refused: {0}")]
    Refused(String),
    /// The h2 connection failed.
    #[error("mux: {0}")]
    Mux(#[source] h2::Error),
    /// A PING was not answered in time.
    #[error("agent missed its heartbeat ({0:?} without a PING answer)")]
    HeartbeatTimeout(Duration),
    /// The control stream carried garbage.
    #[error("control stream: {0}")]
    Control(#[from] DecodeError),
    /// The control stream could not be opened.
    #[error("control stream: {0}")]
    ControlOpen(#[from] OpenError),
}

impl SessionError {
    /// For failures before the session started: a short reason for the handshake-failure
    /// metric.
    pub fn handshake_reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::Tls(_) => "tls",
            Self::Alpn(_) => "alpn",
            Self::HandshakeTimeout(_) => "timeout",
            Self::Frame(_) | Self::UnexpectedMessage(_) => "protocol",
            // Counted where they happen, before the agent is answered.
            Self::Auth(_) | Self::Refused(_) => return None,
            _ => return None,
        })
    }

    /// `"agent"` when the agent (or the network to it) is at fault, `"relay"` otherwise.
    pub fn fault(&self) -> &'static str {
        match self {
            Self::Refused(_) => "policy",
            Self::ControlOpen(OpenError::Metadata(_)) => "relay",
            _ => "agent",
        }
    }
}

/// Runs one agent connection to its end and logs the outcome once.
pub async fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let span = info_span!("agent", %peer, session = field::Empty, client = field::Empty);
    async move {
        match serve(stream, peer, &shared, &shutdown).await {
            Ok(end) => info!(outcome = %end, "agent session ended"),
            Err(e) => {
                if let Some(reason) = e.handshake_reason() {
                    shared.registry.metrics().handshake_failures.with_label_values(&[reason]).inc();
                }
                warn!(error = %e, fault = e.fault(), "agent session failed")
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, SessionError> {
    let (mut tls, hello) = handshake(stream, shared).await?;
    let identity = match shared.auth.agent(&hello.token, crate::clock::unix_secs()) {
        Ok(id) => id,
        Err(e) => {
            shared.gate.ip_limits().auth_failed(peer.ip());
            shared.registry.metrics().handshake_failures.with_label_values(&[e.reason()]).inc();
            refuse(&mut tls, RefuseCode::Unauthorized, e.to_string()).await;
            return Err(e.into());
        }
    };
    let quota = shared.quotas.for_identity(&identity);
    if let Some(max) = quota.as_ref().and_then(|q| q.limits.max_tunnels) {
        if hello.tunnels.len() > max as usize {
            let msg = format!("{} tunnels requested, your token allows {max}", hello.tunnels.len());
            return Err(refuse_with(&mut tls, shared, RefuseCode::BadRequest, msg).await);
        }
    }
    let session_id = postern_proto::token::new_id(rand::random());
    let client_id = match grant::client_id(&hello, &identity, &session_id) {
        Ok(id) => id,
        Err(msg) => return Err(refuse_with(&mut tls, shared, RefuseCode::BadRequest, msg).await),
    };
    Span::current().record("session", session_id.as_str()).record("client", client_id.as_str());

    // Reserve every public port and name before promising anything. Dropping `registration`
    // (on any exit from this function) releases them.
    let closed = CancellationToken::new();
    let _close_on_exit = closed.clone().drop_guard();
    let max_streams = shared.config.max_streams_per_agent;
    let agent =
        AgentHandle::pending(session_id.as_str().into(), client_id.as_str().into(), closed.clone(), max_streams);
    let mut registration = Registration::new(shared.registry.clone(), session_id.clone());
    let who = grant::Who::new(&hello, &identity, &client_id, &session_id, peer, quota);
    let granted = match grant::reserve_all(&hello, &who, shared, &agent, &mut registration).await {
        Ok(g) => g,
        Err((code, msg)) => return Err(refuse_with(&mut tls, shared, code, msg).await),
    };
    if let Some(cluster) = &shared.cluster {
        if let Err((code, msg)) = cluster.claim(registration.tunnels(), &identity).await {
            // Dropping the registration lets the names and ports go here (and the directory's
            // announcement of that restores any port this relay was forwarding).
            drop(registration);
            return Err(refuse_with(&mut tls, shared, code, msg).await);
        }
    }
    let welcome = Welcome {
        session_id: session_id.clone(),
        client_id: client_id.clone(),
        tunnels: granted.grants.clone(),
        heartbeat_ms: shared.config.heartbeat_interval.as_millis() as u64,
    };
    write_message(&mut tls, &Message::Welcome(welcome)).await?;

    let (send, conn) = mux::client_builder().handshake::<_, Bytes>(tls).await.map_err(SessionError::Mux)?;
    agent.attach(send);
    for grant in &granted.grants {
        info!(tunnel = %grant.name, url = %grant.public_url, "tunnel up");
    }
    for tunnel in granted.listeners {
        let metrics = shared.registry.metrics().clone();
        let log = shared.registry.access_log().clone();
        let edge = crate::tcp_edge::serve(tunnel, shared.gate.clone(), metrics, log, shutdown.clone());
        tokio::spawn(edge.instrument(Span::current()));
    }
    let kick = CancellationToken::new();
    let (changes, asked) = tokio::sync::mpsc::channel(16);
    let serving = granted.grants.iter().map(|g| g.name.clone()).collect();
    shared.registry.add_agent(Agent {
        info: AgentInfo {
            session_id: session_id.clone(),
            client_id: client_id.clone(),
            owner: identity.subject.clone(),
            token_id: identity.token_id.clone(),
            addr: peer,
            since: SystemTime::now(),
            tunnels: granted.grants.iter().map(|g| g.name.clone()).collect(),
        },
        kick: kick.clone(),
        changes,
        serving: std::sync::Mutex::new(serving),
    });
    let _forget_agent = AgentGuard { registry: &shared.registry, session_id: &session_id };
    registration.announce_up();
    let mut live = live::Live::new(shared, &who, agent.clone(), registration, shutdown.clone());
    let outcome = control::drive(conn, &agent, &mut live, asked, &shared.config, &kick, shutdown).await;

    // Tunnels go down before their agent is forgotten, so events read down-then-disconnected.
    drop(live);
    closed.cancel();
    outcome
}

/// TLS with ALPN `postern/1`, then the agent's `Hello`, within the handshake timeout.
async fn handshake(stream: TcpStream, shared: &Shared) -> Result<(TlsStream<TcpStream>, Hello), SessionError> {
    let _ = stream.set_nodelay(true);
    let limit = shared.config.handshake_timeout;
    let (tls, hello) = tokio::time::timeout(limit, async {
        let mut tls = shared.tls.accept(stream).await.map_err(SessionError::Tls)?;
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
        if alpn.as_deref().map(str::as_bytes) != Some(ALPN) {
            return Err(SessionError::Alpn(alpn));
        }
        let msg = read_message(&mut tls).await?;
        Ok((tls, msg))
    })
    .await
    .map_err(|_| SessionError::HandshakeTimeout(limit))??;
    match hello {
        Message::Hello(h) => Ok((tls, h)),
        other => Err(SessionError::UnexpectedMessage(kind_name(&other))),
    }
}

/// Removes the agent from the registry when the session ends, however it ends.
struct AgentGuard<'a> {
    registry: &'a Registry,
    session_id: &'a str,
}

impl Drop for AgentGuard<'_> {
    fn drop(&mut self) {
        self.registry.remove_agent(self.session_id);
    }
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Refused(_) => "Refused",
        Message::Control(_) => "Control",
    }
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, code: RefuseCode, message: String) {
    let msg = Message::Refused(Refused { code, message });
    // Best effort: the agent may already be gone.
    if write_message(io, &msg).await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// Counts the refusal, then tells the agent; counting first means the metric is already there
/// when the agent sees the answer.
async fn refuse_with<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    shared: &Shared,
    code: RefuseCode,
    message: String,
) -> SessionError {
    shared.registry.metrics().handshake_failures.with_label_values(&["refused"]).inc();
    refuse(io, code, message.clone()).await;
    SessionError::Refused(message)
}
