//! The tunnel: what one public name or port leads to, and everything that acts on tunnels.
//!
//! # Layout
//!
//! - this module: [`TunnelInfo`], [`Member`] (what serves a tunnel's streams) and [`Tunnel`];
//! - [`registry`]: [`Registry`](registry::Registry), live tunnels and agents by name, and
//!   [`Registration`](registry::Registration), a session's hold on its tunnels;
//! - [`registration`]: a session's hold on its tunnels, left when dropped;
//! - [`connected`]: what the registry knows about a connected agent;
//! - [`paths`]: hosts shared by path prefix (`--path /api`);
//! - [`stats`]: live counters, the byte meter, and the accounting of an open stream;
//! - [`history`]: the last hour of those counters, sampled every few seconds, for graphs;
//! - [`events`]: tunnel and agent up/down events and their JSON shape (SSE, webhooks);
//! - [`admit`]: the one admission path of a public connection or request into a tunnel;
//! - [`open`]: the one way to open a TCP tunnel (agent sessions and bore clients).

pub mod admit;
pub mod connected;
pub mod events;
pub mod history;
pub mod open;
pub mod paths;
pub mod registration;
pub mod registry;
pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::SendStream;
use postern_proto::stream::StreamKind;
use postern_proto::TunnelKind;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use self::history::History;
use self::stats::TunnelStats;
use crate::access::ClientAccess;
use crate::agent::{AgentHandle, OpenError};
use crate::inspect::Inspector;
use crate::quota::{TokenQuota, TunnelSlot};

/// What the registry knows about a tunnel, for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelInfo {
    /// Unique name, for example `tcp-20001` or `myapp-3000`.
    pub name: String,
    /// Tcp or http.
    pub kind: TunnelKind,
    /// Where the public reaches it.
    pub public_url: String,
    /// Public port for tcp tunnels.
    pub public_port: Option<u16>,
    /// Port on the agent's side.
    pub local_port: u16,
    /// The `<id>` of an HTTP tunnel; the client id for a TCP tunnel. Operator policies match it.
    pub id: String,
    /// The agent's client id.
    pub client_id: String,
    /// Subject of the credential that opened it: who may see and kick it.
    pub owner: String,
    /// The agent session that serves it.
    pub session_id: String,
    /// The agent's address as the relay sees it.
    pub agent_addr: SocketAddr,
    /// When it was registered.
    pub since: SystemTime,
}

/// Something that serves a tunnel's streams.
///
/// An enum, not a trait: the kinds are few and known (an agent connected here; next, a peer
/// relay holding an agent), the hot path picks and opens without dynamic dispatch or boxed
/// futures, and the places where the kinds differ (a local member is preferred, a forwarded
/// stream is never forwarded again) are exhaustive `match`es the compiler checks.
#[derive(Debug, Clone)]
pub enum Member {
    /// An agent connection on this relay.
    Agent(AgentHandle),
}

impl Member {
    /// The session (agent connection) it stands for.
    pub fn session_id(&self) -> &str {
        match self {
            Self::Agent(a) => a.session_id(),
        }
    }

    /// True while it can take streams.
    pub fn is_live(&self) -> bool {
        match self {
            Self::Agent(a) => a.is_live(),
        }
    }

    /// Stream slots it has free.
    pub fn free_streams(&self) -> usize {
        match self {
            Self::Agent(a) => a.free_streams(),
        }
    }

    /// One of its stream slots, or `None` at its cap.
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        match self {
            Self::Agent(a) => a.take_slot(),
        }
    }

    /// Fires when it is gone.
    pub fn closed(&self) -> &CancellationToken {
        match self {
            Self::Agent(a) => a.closed(),
        }
    }

    /// Opens a byte stream of `kind` for `tunnel` on behalf of public peer `peer`.
    pub async fn open(
        &self,
        kind: StreamKind,
        tunnel: &str,
        peer: Option<SocketAddr>,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), OpenError> {
        match self {
            Self::Agent(a) => a.open(kind, tunnel, peer).await,
        }
    }

    /// Opens a stream with a ready-made request (the HTTP edge builds its own).
    pub async fn open_request(
        &self,
        req: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), OpenError> {
        match self {
            Self::Agent(a) => a.open_request(req, end_of_stream).await,
        }
    }
}

/// A registered tunnel: its description, counters, and the agent connections serving it.
///
/// A tunnel may be served by several connections: those of one client (`--connections N`, same
/// group), or of several clients when their token allows sharing. Each stream goes to the
/// least-loaded live one; the tunnel lives while any is left.
#[derive(Debug)]
pub struct Tunnel {
    /// Description (of its first registration).
    pub info: TunnelInfo,
    members: Mutex<Vec<Member>>,
    /// The client instance that registered it, for further connections of the same client.
    pub group: Option<String>,
    /// What identifies that client across reconnects (its group, else its client id): the key
    /// of its TCP port lease.
    pub instance: String,
    rr: std::sync::atomic::AtomicUsize,
    /// Other clients of the same owner may join (load balancing, failover).
    pub shareable: bool,
    /// Live counters.
    pub stats: Arc<TunnelStats>,
    /// The last hour of those counters, a point every few seconds (for graphs).
    pub history: History,
    /// Its request inspector (HTTP tunnels; off unless asked for).
    pub inspector: Arc<Inspector>,
    /// Fires when this tunnel closes (its agent left, or it was kicked); stops its listener.
    pub closed: CancellationToken,
    /// Extra name this tunnel answers to (an HTTP tunnel's bare `<id>`), once granted.
    pub alias: OnceLock<String>,
    /// The custom domain this tunnel answers to (`app.example.com`), once granted.
    pub domain: OnceLock<String>,
    /// The client's access rules.
    pub access: ClientAccess,
    /// The quota of the token that opened it, if limited.
    pub quota: Option<Arc<TokenQuota>>,
    /// Its place in the token's tunnel quota, given back when it is removed.
    pub slot: Mutex<Option<TunnelSlot>>,
    /// The public listener of a TCP tunnel; dropped (port released) when it is removed.
    pub listener: Mutex<Option<tokio::net::TcpListener>>,
    /// The path prefix it serves of its bare `<id>` host and custom domain (instead of the
    /// whole of them), for an HTTP tunnel asked with `--path`.
    pub path: Option<String>,
    /// The local service sees the path without that prefix.
    pub strip_prefix: bool,
    announced: std::sync::atomic::AtomicBool,
}

impl Tunnel {
    /// A public tunnel for `info`, served by `agent`, with no quota.
    pub fn new(info: TunnelInfo, agent: AgentHandle) -> Self {
        Self::with_members(info, vec![Member::Agent(agent)])
    }

    /// A public tunnel for `info` served by `members` (none: a bore tunnel, whose client
    /// claims its connections itself), with no quota.
    pub fn with_members(info: TunnelInfo, members: Vec<Member>) -> Self {
        Self {
            members: Mutex::new(members),
            info,
            group: None,
            instance: String::new(),
            rr: std::sync::atomic::AtomicUsize::new(0),
            shareable: false,
            stats: Arc::default(),
            history: History::default(),
            inspector: Arc::default(),
            closed: CancellationToken::new(),
            alias: OnceLock::new(),
            domain: OnceLock::new(),
            access: ClientAccess::default(),
            quota: None,
            slot: Mutex::new(None),
            listener: Mutex::new(None),
            path: None,
            strip_prefix: false,
            announced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Polls the TCP listener for a connection; an error once the tunnel was removed.
    pub fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>> {
        match self.listener.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(l) => l.poll_accept(cx),
            None => std::task::Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "tunnel closed"))),
        }
    }

    pub(crate) fn members(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Session ids of the connections serving it.
    pub fn sessions(&self) -> Vec<String> {
        self.members().iter().map(|m| m.session_id().to_string()).collect()
    }

    /// True when some connection serving it is up.
    pub fn is_live(&self) -> bool {
        self.members().iter().any(Member::is_live)
    }

    /// The live member with the most free stream slots, and one of its slots. `Err(true)`
    /// when live members exist but all are at their cap, `Err(false)` when none is live.
    pub fn pick(&self) -> Result<(Member, OwnedSemaphorePermit), bool> {
        let mut live: Vec<Member> = self.members().iter().filter(|m| m.is_live()).cloned().collect();
        if live.is_empty() {
            return Err(false);
        }
        // Rotate first so equally loaded members take turns (the sort is stable).
        let turn = self.rr.fetch_add(1, Ordering::Relaxed) % live.len();
        live.rotate_left(turn);
        live.sort_by_key(|m| std::cmp::Reverse(m.free_streams()));
        live.into_iter().find_map(|m| m.take_slot().map(|p| (m, p))).ok_or(true)
    }
}
