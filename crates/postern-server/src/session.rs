//! One agent connection, from TCP accept to cleanup.
//!
//! 1. TLS with ALPN `postern/1`, then the agent's `Hello`, both within the handshake timeout.
//! 2. Authentication and validation; public ports are bound before anything is promised.
//! 3. `Welcome` (or `Refused`, then close).
//! 4. The same connection becomes HTTP/2 with the relay as client. The first stream is the
//!    control stream. PINGs run every heartbeat interval.
//! 5. The session ends when the agent unregisters or disconnects, a heartbeat is missed, or the
//!    relay shuts down. Its tunnels leave the registry and their public ports close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use h2::PingPong;
use http::StatusCode;
use postern_proto::frame::encode;
use postern_proto::stream::StreamKind;
use postern_proto::{
    hostname, Control, DecodeError, Decoder, Hello, Message, RefuseCode, Refused, TunnelGrant, TunnelKind, TunnelSpec,
    Welcome, ALPN,
};
use postern_transport::framed::{read_message, write_message, FrameIoError};
use postern_transport::mux::{self, HeartbeatError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{field, info, info_span, warn, Instrument, Span};

use crate::abuse::IpLimits;
use crate::access::ClientAccess;
use crate::agent::{AgentHandle, OpenError};
use crate::auth::{AuthError, Authenticator, Identity};
use crate::config::RelayConfig;
use crate::leases::Claim;
use crate::quota::{Quotas, TokenQuota};
use crate::registry::{Agent, AgentInfo, Registration, Registry, Tunnel, TunnelInfo};
use crate::tcp_edge;

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
    /// Cap on concurrent public TCP connections.
    pub public_conns: Arc<Semaphore>,
    /// How public HTTP URLs look; `None` when the relay has no HTTP listener.
    pub urls: Option<PublicUrls>,
    /// Per-token quotas (shared with the bore endpoint).
    pub quotas: Arc<Quotas>,
    /// Per-address connection caps and authentication lockout.
    pub ip_limits: Arc<IpLimits>,
    /// Which custom domains clients may claim.
    pub domains: crate::domains::DomainPolicy,
    /// Gets certificates for granted custom domains, when ACME is on.
    pub acme: Option<Arc<crate::acme::Acme>>,
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
    let _ = stream.set_nodelay(true);
    let limit = shared.config.handshake_timeout;
    let (mut tls, hello) = tokio::time::timeout(limit, async {
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
    let hello = match hello {
        Message::Hello(h) => h,
        other => return Err(SessionError::UnexpectedMessage(kind_name(&other))),
    };

    let identity = match shared.auth.agent(&hello.token, crate::clock::unix_secs()) {
        Ok(id) => id,
        Err(e) => {
            shared.ip_limits.auth_failed(peer.ip());
            shared.registry.metrics().handshake_failures.with_label_values(&[e.reason()]).inc();
            refuse(&mut tls, RefuseCode::Unauthorized, e.to_string()).await;
            return Err(e.into());
        }
    };
    let quota = shared.quotas.for_identity(&identity);
    if let Some(q) = &quota {
        if let Some(max) = q.limits.max_tunnels {
            if hello.tunnels.len() > max as usize {
                let msg = format!("{} tunnels requested, your token allows {max}", hello.tunnels.len());
                return Err(refuse_with(&mut tls, shared, RefuseCode::BadRequest, msg).await);
            }
        }
    }
    let session_id = format!("{:016x}", rand::random::<u64>());
    let client_id = match client_id(&hello, &identity, &session_id) {
        Ok(id) => id,
        Err(msg) => return Err(refuse_with(&mut tls, shared, RefuseCode::BadRequest, msg).await),
    };
    Span::current().record("session", session_id.as_str()).record("client", client_id.as_str());

    if hello.tunnels.is_empty() {
        return Err(refuse_with(&mut tls, shared, RefuseCode::BadRequest, "no tunnels requested".into()).await);
    }
    if hello.tunnels.len() > shared.config.max_tunnels_per_agent {
        let msg = format!(
            "{} tunnels requested, this relay allows {} per client",
            hello.tunnels.len(),
            shared.config.max_tunnels_per_agent
        );
        return Err(refuse_with(&mut tls, shared, RefuseCode::BadRequest, msg).await);
    }

    // Reserve every public port and name before promising anything. Dropping `registration`
    // (on any exit from this function) releases them.
    let closed = CancellationToken::new();
    let _close_on_exit = closed.clone().drop_guard();
    let agent = AgentHandle::pending(
        session_id.as_str().into(),
        client_id.as_str().into(),
        closed.clone(),
        shared.config.max_streams_per_agent,
    );
    let mut registration = Registration::new(shared.registry.clone(), session_id.clone());
    let mut grants = Vec::new();
    let mut listeners = Vec::new();
    for spec in &hello.tunnels {
        let who = Who {
            client_id: &client_id,
            identity: &identity,
            session_id: &session_id,
            peer,
            quota: &quota,
            group: hello.group.as_deref().filter(|g| !g.is_empty() && g.len() <= 64),
            explicit_id: hello.client_id.is_some()
                || identity.claims.as_ref().is_some_and(|c| hostname::is_label(&c.sub.to_ascii_lowercase())),
        };
        match reserve(spec, &who, shared, &agent, &mut registration).await {
            Ok((grant, listener)) => {
                grants.push(grant);
                listeners.extend(listener);
            }
            Err((code, msg)) => return Err(refuse_with(&mut tls, shared, code, msg).await),
        }
    }

    let welcome = Welcome {
        session_id: session_id.clone(),
        client_id: client_id.clone(),
        tunnels: grants.clone(),
        heartbeat_ms: shared.config.heartbeat_interval.as_millis() as u64,
    };
    write_message(&mut tls, &Message::Welcome(welcome)).await?;

    let (send, mut conn) = mux::client_builder().handshake::<_, Bytes>(tls).await.map_err(SessionError::Mux)?;
    agent.attach(send);
    for grant in &grants {
        info!(tunnel = %grant.name, url = %grant.public_url, "tunnel up");
    }
    for tunnel in listeners {
        let metrics = shared.registry.metrics().clone();
        let edge = tcp_edge::serve(
            tunnel,
            shared.public_conns.clone(),
            metrics,
            shared.ip_limits.clone(),
            shared.config.policies.clone(),
            shutdown.clone(),
        );
        tokio::spawn(edge.instrument(Span::current()));
    }
    let kick = CancellationToken::new();
    shared.registry.add_agent(Agent {
        info: AgentInfo {
            session_id: session_id.clone(),
            client_id: client_id.clone(),
            owner: identity.subject.clone(),
            token_id: identity.token_id.clone(),
            addr: peer,
            since: SystemTime::now(),
            tunnels: grants.iter().map(|g| g.name.clone()).collect(),
        },
        kick: kick.clone(),
    });
    let _forget_agent = AgentGuard { registry: &shared.registry, session_id: &session_id };
    registration.announce_up();

    let ping_pong = conn.ping_pong();
    let cfg = &shared.config;
    let (to_agent, outbox) = tokio::sync::mpsc::channel(8);
    let control = control(&agent, outbox);
    tokio::pin!(control);
    let heartbeat = heartbeat(ping_pong, cfg.heartbeat_interval, cfg.heartbeat_timeout);
    tokio::pin!(heartbeat);
    let ended = |r: Result<(), h2::Error>| match r {
        Ok(()) => Ok(SessionEnd::AgentClosed),
        Err(e) if e.is_io() || e.is_go_away() => Ok(SessionEnd::AgentClosed),
        Err(e) => Err(SessionError::Mux(e)),
    };
    let outcome = tokio::select! {
        r = &mut conn => ended(r),
        e = &mut heartbeat => Err(e),
        r = &mut control => r,
        _ = kick.cancelled() => Ok(SessionEnd::Kicked),
        _ = shutdown.cancelled() => {
            // Drain: no new streams reach this agent (listeners are closed); tell it, let the
            // streams in flight finish, then close.
            let deadline = cfg.drain_timeout;
            let _ = to_agent.try_send(Control::Drain { deadline_ms: deadline.as_millis() as u64 });
            tokio::select! {
                r = &mut conn => ended(r),
                _ = agent.idle() => Ok(SessionEnd::RelayShutdown),
                _ = &mut control => Ok(SessionEnd::RelayShutdown),
                _ = tokio::time::sleep(deadline) => {
                    warn!(?deadline, "drain deadline reached with streams still open");
                    Ok(SessionEnd::RelayShutdown)
                }
            }
        }
    };

    // Tunnels go down before their agent is forgotten, so events read down-then-disconnected.
    drop(registration);
    closed.cancel();
    outcome
}

/// Who is asking for a tunnel.
struct Who<'a> {
    client_id: &'a str,
    identity: &'a Identity,
    session_id: &'a str,
    peer: SocketAddr,
    quota: &'a Option<Arc<TokenQuota>>,
    group: Option<&'a str>,
    /// The client id came from the Hello or the token, not from the relay.
    explicit_id: bool,
}

impl Who<'_> {
    /// What identifies this client across reconnects and restarts: the client id when the
    /// client or its token chose it, else the process's instance id.
    fn instance(&self) -> &str {
        if self.explicit_id {
            self.client_id
        } else {
            self.group.unwrap_or(self.client_id)
        }
    }

    fn shareable(&self) -> bool {
        self.identity.claims.as_ref().is_some_and(|c| c.share)
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

/// Reserves one requested tunnel: binds its public port (tcp) or claims its name (http), and
/// registers it. Returns the grant, and the listener to serve once the mux is up.
async fn reserve(
    spec: &TunnelSpec,
    who: &Who<'_>,
    shared: &Shared,
    agent: &AgentHandle,
    registration: &mut Registration,
) -> Result<(TunnelGrant, Option<Arc<Tunnel>>), (RefuseCode, String)> {
    if spec.local_port == 0 {
        return Err((RefuseCode::BadRequest, "local port 0 is not a port a service can listen on".into()));
    }
    let access = ClientAccess::from_spec(spec.access.as_ref())
        .map_err(|e| (RefuseCode::BadRequest, format!("invalid access rules: {e}")))?;
    if let Some(grant) = join_existing(spec, who, shared, agent, registration) {
        return Ok((grant, None));
    }
    let slot = match who.quota {
        Some(q) => Some(q.add_tunnel().map_err(|e| (RefuseCode::Unavailable, e.to_string()))?),
        None => None,
    };
    let owner = who.identity.subject.as_str();
    let leases = shared.registry.leases();
    let id = spec.id.as_deref().unwrap_or(who.client_id).to_ascii_lowercase();
    let mut info = TunnelInfo {
        name: String::new(),
        kind: spec.kind,
        public_url: String::new(),
        public_port: None,
        local_port: spec.local_port,
        id: who.client_id.to_string(),
        client_id: who.client_id.to_string(),
        owner: owner.to_string(),
        session_id: who.session_id.to_string(),
        agent_addr: who.peer,
        since: SystemTime::now(),
    };
    let mut listener = None;
    match spec.kind {
        TunnelKind::Tcp => {
            if let Some(port) = spec.remote_port {
                if !who.identity.may_request_port(port) {
                    return Err((RefuseCode::PortNotAllowed, format!("your token does not allow public port {port}")));
                }
                if let Claim::Held(left) = leases.check_port(port, owner) {
                    return Err((
                        RefuseCode::Unavailable,
                        format!("port {port} is reserved for another client for {}s", left.as_secs() + 1),
                    ));
                }
            }
            // A reconnecting client gets the port it had.
            let leased = leases.port_for(owner, who.instance(), spec.local_port);
            let l = tcp_edge::bind(&shared.config, spec.remote_port, leased, leases)
                .await
                .map_err(|e| (e.code(), e.to_string()))?;
            let port = l.local_addr().map_err(|e| (RefuseCode::Unavailable, e.to_string()))?.port();
            info.name = hostname::tcp_name(port);
            info.public_url = format!("tcp://{}:{port}", shared.config.domain);
            info.public_port = Some(port);
            listener = Some(l);
        }
        TunnelKind::Http => {
            let Some(urls) = &shared.urls else {
                return Err((RefuseCode::BadRequest, "this relay has no HTTP listener; use a tcp tunnel".into()));
            };
            let name = hostname::label(&id, spec.local_port);
            if hostname::is_reserved_id(&id) {
                return Err((
                    RefuseCode::BadRequest,
                    format!("tunnel id {id:?} is reserved: names starting with \"tcp-\" belong to TCP tunnels"),
                ));
            }
            if !hostname::is_label(&id) || !hostname::is_label(&name) {
                return Err((
                    RefuseCode::BadRequest,
                    format!(
                        "tunnel id {id:?} is not usable in a host name: use a-z, 0-9 and '-', \
                         not starting or ending with '-', and keep \"{name}\" within 63 characters"
                    ),
                ));
            }
            if !who.identity.may_use_id(&id) {
                return Err((RefuseCode::Unauthorized, format!("your token does not allow the tunnel id {id:?}")));
            }
            if let Claim::Held(left) = leases.check_name(&name, owner) {
                return Err((
                    RefuseCode::Unavailable,
                    format!("{name} is reserved for another client for {}s", left.as_secs() + 1),
                ));
            }
            info.public_url = urls.url(&name, &shared.config.domain);
            info.name = name;
            info.id = id.clone();
        }
    }
    let (name, public_url, kind) = (info.name.clone(), info.public_url.clone(), info.kind);
    let mut tunnel = Tunnel::new(info, agent.clone());
    tunnel.instance = who.instance().to_string();
    tunnel.group = who.group.map(str::to_string);
    tunnel.shareable = who.shareable();
    tunnel.access = access;
    tunnel.quota = who.quota.clone();
    tunnel.slot = std::sync::Mutex::new(slot);
    let is_tcp = listener.is_some();
    tunnel.listener = std::sync::Mutex::new(listener);
    let tunnel =
        registration.insert(tunnel).map_err(|e| (RefuseCode::Unavailable, format!("{e}: another client holds it")))?;
    // The first HTTP tunnel for an id also answers at the bare `<id>` (the default port).
    let mut default_url = None;
    if kind == TunnelKind::Http && registration.insert_alias(&id, &tunnel).is_ok() {
        default_url = shared.urls.as_ref().map(|u| u.url(&id, &shared.config.domain));
    }
    let mut domain_url = None;
    if let (Some(domain), TunnelKind::Http) = (&spec.domain, kind) {
        let domain = grant_domain(domain, who, shared, registration, &tunnel).await?;
        domain_url = shared.urls.as_ref().map(|u| u.host_url(&domain));
    }
    let grant = TunnelGrant { name, kind, local_port: spec.local_port, public_url, default_url, domain_url };
    Ok((grant, is_tcp.then_some(tunnel)))
}

/// Grants custom `domain` to `tunnel` if the policy allows it for this client and nobody else
/// holds it; asks ACME for its certificate.
async fn grant_domain(
    domain: &str,
    who: &Who<'_>,
    shared: &Shared,
    registration: &mut Registration,
    tunnel: &Arc<Tunnel>,
) -> Result<String, (RefuseCode, String)> {
    let domain = shared.domains.normalize(domain).map_err(|e| (RefuseCode::BadRequest, e.to_string()))?;
    let owner = who.identity.subject.as_str();
    shared.domains.authorize(&domain, owner).await.map_err(|e| (RefuseCode::Unauthorized, e.to_string()))?;
    registration
        .insert_alias(&domain, tunnel)
        .map_err(|_| (RefuseCode::Unavailable, format!("{domain} is served by another client")))?;
    if let Some(acme) = &shared.acme {
        acme.ensure(&domain);
    }
    Ok(domain)
}

/// Another connection of the same client (or a sharing client) serves a tunnel that is already
/// up: join it instead of opening a second one.
fn join_existing(
    spec: &TunnelSpec,
    who: &Who<'_>,
    shared: &Shared,
    agent: &AgentHandle,
    registration: &mut Registration,
) -> Option<TunnelGrant> {
    let owner = who.identity.subject.as_str();
    let reg = &shared.registry;
    let name = match spec.kind {
        TunnelKind::Tcp => match spec.remote_port {
            Some(port) => hostname::tcp_name(port),
            None => reg.find_tcp(owner, who.group?, spec.local_port, who.session_id)?,
        },
        TunnelKind::Http => {
            let id = spec.id.as_deref().unwrap_or(who.client_id).to_ascii_lowercase();
            if !who.identity.may_use_id(&id) {
                return None;
            }
            hostname::label(&id, spec.local_port)
        }
    };
    let existing = reg.get(&name).filter(|t| t.info.name == name)?;
    if existing.info.local_port != spec.local_port || existing.info.kind != spec.kind {
        return None;
    }
    let t = registration.join(&name, agent, owner, who.group, who.shareable())?;
    let default_url = match (t.alias.get(), &shared.urls) {
        (Some(alias), Some(urls)) => Some(urls.url(alias, &shared.config.domain)),
        _ => None,
    };
    let domain_url = match (t.domain.get(), &shared.urls) {
        (Some(domain), Some(urls)) => Some(urls.host_url(domain)),
        _ => None,
    };
    Some(TunnelGrant {
        name: t.info.name.clone(),
        kind: t.info.kind,
        local_port: t.info.local_port,
        public_url: t.info.public_url.clone(),
        default_url,
        domain_url,
    })
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Refused(_) => "Refused",
        Message::Control(_) => "Control",
    }
}

/// Settles the client id: the requested one if it is a valid DNS label, else the token's
/// subject if that is one, else derived from the session id.
fn client_id(hello: &Hello, identity: &Identity, session_id: &str) -> Result<String, String> {
    let from_token = identity.claims.as_ref().map(|c| c.sub.to_ascii_lowercase()).filter(|s| hostname::is_label(s));
    match &hello.client_id {
        None => Ok(from_token.unwrap_or_else(|| format!("agent-{}", &session_id[..8]))),
        Some(id) => {
            let id = id.to_ascii_lowercase();
            if hostname::is_label(&id) {
                Ok(id)
            } else {
                Err(format!(
                    "client id {id:?} is not a DNS label: use 1-63 characters a-z, 0-9 and '-', not starting or ending with '-'"
                ))
            }
        }
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

/// The shared heartbeat, as this session's error.
async fn heartbeat(ping_pong: Option<PingPong>, interval: Duration, timeout: Duration) -> SessionError {
    match mux::heartbeat(ping_pong, interval, timeout).await {
        HeartbeatError::Mux(e) => SessionError::Mux(e),
        HeartbeatError::Timeout(t) => SessionError::HeartbeatTimeout(t),
    }
}

/// Opens the control stream, sends what `outbox` yields, and reads the agent's control messages
/// until it unregisters.
async fn control(
    agent: &AgentHandle,
    mut outbox: tokio::sync::mpsc::Receiver<Control>,
) -> Result<SessionEnd, SessionError> {
    let (response, mut send) = agent.open(StreamKind::Control, "", None).await?;
    let response = response.await.map_err(SessionError::Mux)?;
    if response.status() != StatusCode::OK {
        return Err(SessionError::Refused(format!("agent refused the control stream: {}", response.status())));
    }
    let mut body = response.into_body();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    loop {
        let chunk = tokio::select! {
            chunk = body.data() => chunk,
            Some(msg) = outbox.recv() => {
                let mut out = BytesMut::new();
                if encode(&Message::Control(msg), &mut out).is_ok() {
                    let _ = send.send_data(out.freeze(), false);
                }
                continue;
            }
        };
        let Some(chunk) = chunk else {
            // The agent ended its side of the control stream: it is leaving.
            return Ok(SessionEnd::Unregistered);
        };
        let chunk = chunk.map_err(SessionError::Mux)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while let Some(msg) = decoder.decode(&mut buf)? {
            match msg {
                Message::Control(Control::Unregister) => return Ok(SessionEnd::Unregistered),
                other => warn!(message = ?other, "ignoring unexpected control message from agent"),
            }
        }
    }
}
