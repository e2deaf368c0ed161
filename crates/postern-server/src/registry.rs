//! Live tunnels and agents, and the event feed about them.
//!
//! - A tunnel name maps to exactly one tunnel. An HTTP tunnel may also be reachable under an
//!   alias (its bare `<id>`, for the client's default port); aliases are keys that point at the
//!   same tunnel and are not listed. Inserting a key that is taken fails; removal only removes
//!   keys that still belong to the session asking, so a late cleanup can never remove a newer
//!   owner's tunnel.
//! - Agents are listed by session id, with a token that kicks them.
//! - Every change is announced on a broadcast channel of [`Event`]s (the status API's SSE stream
//!   and the webhooks read it) and bumps a `watch` counter (tests wait on it without polling).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use postern_proto::TunnelKind;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::access::ClientAccess;
use crate::agent::AgentHandle;
use crate::leases::{Claim, Leases};
use crate::metrics::RelayMetrics;
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

/// Live counters of one tunnel.
#[derive(Debug, Default)]
pub struct TunnelStats {
    active_streams: AtomicI64,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    last_activity_ms: AtomicU64,
}

/// A point-in-time copy of [`TunnelStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Streams (connections, requests) open right now.
    pub active_streams: u64,
    /// Streams opened since registration.
    pub requests: u64,
    /// Bytes from the public toward the local service.
    pub bytes_in: u64,
    /// Bytes from the local service toward the public.
    pub bytes_out: u64,
    /// Last time a stream opened or bytes moved.
    pub last_activity: Option<SystemTime>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl TunnelStats {
    /// A stream opened; the returned guard closes it.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.active_streams.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        StreamGuard(self.clone())
    }

    /// Bytes toward the local service.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Bytes toward the public.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        StatsSnapshot {
            active_streams: self.active_streams.load(Ordering::Relaxed).max(0) as u64,
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            last_activity: (last > 0).then(|| UNIX_EPOCH + Duration::from_millis(last)),
        }
    }
}

/// Counts one open stream until dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<TunnelStats>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A registered tunnel: its description, counters, and the way to reach its agent.
#[derive(Debug)]
pub struct Tunnel {
    /// Description.
    pub info: TunnelInfo,
    /// The agent serving it.
    pub agent: AgentHandle,
    /// Live counters.
    pub stats: Arc<TunnelStats>,
    /// Fires when this tunnel closes (its agent left, or it was kicked); stops its listener.
    pub closed: CancellationToken,
    /// Extra name this tunnel answers to (an HTTP tunnel's bare `<id>`), once granted.
    pub alias: OnceLock<String>,
    /// The client's access rules.
    pub access: ClientAccess,
    /// The quota of the token that opened it, if limited.
    pub quota: Option<Arc<TokenQuota>>,
    /// Its place in the token's tunnel quota, given back when it is removed.
    pub slot: Mutex<Option<TunnelSlot>>,
}

impl Tunnel {
    /// A public tunnel for `info`, served by `agent`, closing with `closed`, with no quota.
    pub fn new(info: TunnelInfo, agent: AgentHandle, closed: CancellationToken) -> Self {
        Self {
            info,
            agent,
            stats: Arc::default(),
            closed,
            alias: OnceLock::new(),
            access: ClientAccess::default(),
            quota: None,
            slot: Mutex::new(None),
        }
    }
}

/// What the registry knows about a connected agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Session id; the API's agent id.
    pub session_id: String,
    /// Client id.
    pub client_id: String,
    /// Subject of its credential.
    pub owner: String,
    /// Id of its signed token, if any.
    pub token_id: Option<String>,
    /// Its address as the relay sees it.
    pub addr: SocketAddr,
    /// When its session started.
    pub since: SystemTime,
    /// Its tunnels' names.
    pub tunnels: Vec<String>,
}

/// A connected agent.
#[derive(Debug)]
pub struct Agent {
    /// Description.
    pub info: AgentInfo,
    /// Cancelling it ends the agent's session.
    pub kick: CancellationToken,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A tunnel was registered.
    TunnelUp,
    /// A tunnel went away.
    TunnelDown,
    /// An agent's session started.
    AgentConnected,
    /// An agent's session ended.
    AgentDisconnected,
}

impl EventKind {
    /// Name used in SSE `event:` lines and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TunnelUp => "tunnel_up",
            Self::TunnelDown => "tunnel_down",
            Self::AgentConnected => "agent_connected",
            Self::AgentDisconnected => "agent_disconnected",
        }
    }
}

/// One change, for the SSE stream and webhooks.
#[derive(Debug, Clone)]
pub struct Event {
    /// Increasing number, starting at 1.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: SystemTime,
    /// Whose it is (only they and the admin see it).
    pub owner: String,
    /// The tunnel, for tunnel events.
    pub tunnel: Option<TunnelInfo>,
    /// The agent, for agent events.
    pub agent: Option<AgentInfo>,
}

/// The name is already registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tunnel name {0:?} is already in use")]
pub struct NameTaken(pub String);

/// All live tunnels and agents.
#[derive(Debug)]
pub struct Registry {
    tunnels: DashMap<String, Arc<Tunnel>>,
    agents: DashMap<String, Arc<Agent>>,
    changes: watch::Sender<u64>,
    events: broadcast::Sender<Event>,
    seq: AtomicU64,
    metrics: Arc<RelayMetrics>,
    leases: Arc<Leases>,
}

impl Registry {
    /// An empty registry whose gauges live in `metrics` and whose names are leased by `leases`.
    pub fn new(metrics: Arc<RelayMetrics>, leases: Arc<Leases>) -> Arc<Self> {
        Arc::new(Self {
            tunnels: DashMap::new(),
            agents: DashMap::new(),
            changes: watch::Sender::new(0),
            events: broadcast::Sender::new(1024),
            seq: AtomicU64::new(0),
            metrics,
            leases,
        })
    }

    /// The name leases.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// The relay's metrics.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    fn announce(&self, kind: EventKind, owner: &str, tunnel: Option<TunnelInfo>, agent: Option<AgentInfo>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // No subscribers is fine.
        let _ = self.events.send(Event { seq, kind, at: SystemTime::now(), owner: owner.to_string(), tunnel, agent });
        self.changes.send_modify(|n| *n += 1);
    }

    /// Registers a tunnel under its name, unless the name is taken. The name is held from now
    /// on; the `tunnel_up` event waits for [`Registry::announce_up`], once the agent is live.
    pub fn insert(&self, tunnel: Tunnel) -> Result<Arc<Tunnel>, NameTaken> {
        let name = tunnel.info.name.clone();
        let added = match self.tunnels.entry(name.clone()) {
            Entry::Occupied(_) => return Err(NameTaken(name)),
            Entry::Vacant(v) => v.insert(Arc::new(tunnel)).clone(),
        };
        self.metrics.tunnels.with_label_values(&[added.info.kind.as_str()]).inc();
        match added.info.public_port {
            Some(port) => self.leases.hold_port(port, &added.info.owner, &added.info.client_id, added.info.local_port),
            None => self.leases.hold_name(&added.info.name, &added.info.owner),
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(added)
    }

    /// Announces that `tunnel` serves traffic.
    pub fn announce_up(&self, tunnel: &Tunnel) {
        self.announce(EventKind::TunnelUp, &tunnel.info.owner, Some(tunnel.info.clone()), None);
    }

    /// Makes `alias` another key for `tunnel`, unless it is taken or leased to another owner.
    pub fn insert_alias(&self, alias: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        if self.leases.check_name(alias, &tunnel.info.owner) != Claim::Granted {
            return Err(NameTaken(alias.to_string()));
        }
        match self.tunnels.entry(alias.to_string()) {
            Entry::Occupied(_) => Err(NameTaken(alias.to_string())),
            Entry::Vacant(v) => {
                v.insert(tunnel.clone());
                let _ = tunnel.alias.set(alias.to_string());
                self.leases.hold_name(alias, &tunnel.info.owner);
                Ok(())
            }
        }
    }

    /// Removes the key `name` if it is still served by `session_id`. Removing a tunnel's name
    /// (not an alias) closes the tunnel and announces it.
    pub fn remove(&self, name: &str, session_id: &str) -> Option<Arc<Tunnel>> {
        let (_, t) = self.tunnels.remove_if(name, |_, t| t.info.session_id == session_id)?;
        if t.info.name == name {
            if let Some(alias) = t.alias.get() {
                self.tunnels.remove_if(alias, |_, a| Arc::ptr_eq(a, &t));
            }
            let was_live = !t.closed.is_cancelled() && t.agent.is_attached();
            t.closed.cancel();
            drop(t.slot.lock().unwrap_or_else(|p| p.into_inner()).take());
            match t.info.public_port {
                Some(port) => self.leases.release_port(port),
                None => {
                    self.leases.release_name(&t.info.name);
                    if let Some(alias) = t.alias.get() {
                        self.leases.release_name(alias);
                    }
                }
            }
            self.metrics.tunnels.with_label_values(&[t.info.kind.as_str()]).dec();
            self.metrics.forget_tunnel(&t.info.name);
            if was_live {
                self.announce(EventKind::TunnelDown, &t.info.owner, Some(t.info.clone()), None);
            } else {
                self.changes.send_modify(|n| *n += 1);
            }
        }
        Some(t)
    }

    /// Closes a tunnel whoever serves it (the API's kick).
    pub fn kick_tunnel(&self, name: &str) -> Option<Arc<Tunnel>> {
        let session = self.tunnels.get(name).filter(|t| t.info.name == name)?.info.session_id.clone();
        self.remove(name, &session)
    }

    /// Looks a tunnel up by name or alias.
    pub fn get(&self, name: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.get(name).map(|t| t.clone())
    }

    /// Every tunnel (aliases not repeated), sorted by name.
    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        let mut v: Vec<_> =
            self.tunnels.iter().filter(|e| *e.key() == e.value().info.name).map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        v
    }

    /// A snapshot of every tunnel's description, sorted by name.
    pub fn list(&self) -> Vec<TunnelInfo> {
        self.tunnels().into_iter().map(|t| t.info.clone()).collect()
    }

    /// Number of live tunnels (aliases not counted).
    pub fn len(&self) -> usize {
        self.tunnels.iter().filter(|e| *e.key() == e.value().info.name).count()
    }

    /// True when no tunnel is live.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    /// Records a connected agent.
    pub fn add_agent(&self, agent: Agent) {
        let info = agent.info.clone();
        self.agents.insert(info.session_id.clone(), Arc::new(agent));
        self.metrics.agents.inc();
        let owner = info.owner.clone();
        self.announce(EventKind::AgentConnected, &owner, None, Some(info));
    }

    /// Forgets an agent whose session ended.
    pub fn remove_agent(&self, session_id: &str) {
        if let Some((_, a)) = self.agents.remove(session_id) {
            self.metrics.agents.dec();
            self.announce(EventKind::AgentDisconnected, &a.info.owner, None, Some(a.info.clone()));
        }
    }

    /// Ends every session opened with token `token_id` (after a revocation); returns how many.
    pub fn kick_token(&self, token_id: &str) -> usize {
        let mut n = 0;
        for a in self.agents.iter().filter(|a| a.info.token_id.as_deref() == Some(token_id)) {
            a.kick.cancel();
            n += 1;
        }
        n
    }

    /// Looks an agent up by session id.
    pub fn agent(&self, session_id: &str) -> Option<Arc<Agent>> {
        self.agents.get(session_id).map(|a| a.clone())
    }

    /// Every connected agent, oldest first.
    pub fn agents(&self) -> Vec<Arc<Agent>> {
        let mut v: Vec<_> = self.agents.iter().map(|a| a.clone()).collect();
        v.sort_by(|a, b| a.info.since.cmp(&b.info.since).then(a.info.session_id.cmp(&b.info.session_id)));
        v
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A receiver of every event from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// The keys one session holds; dropping it removes them, whatever way the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    session_id: String,
    keys: Vec<String>,
    tunnels: Vec<Arc<Tunnel>>,
}

impl Registration {
    /// An empty registration for `session_id`.
    pub fn new(registry: Arc<Registry>, session_id: String) -> Self {
        Self { registry, session_id, keys: Vec::new(), tunnels: Vec::new() }
    }

    /// Registers `tunnel` under its name.
    pub fn insert(&mut self, tunnel: Tunnel) -> Result<Arc<Tunnel>, NameTaken> {
        let name = tunnel.info.name.clone();
        let t = self.registry.insert(tunnel)?;
        self.keys.push(name);
        self.tunnels.push(t.clone());
        Ok(t)
    }

    /// Announces every registered tunnel as up.
    pub fn announce_up(&self) {
        for t in &self.tunnels {
            self.registry.announce_up(t);
        }
    }

    /// Registers `alias` for `tunnel`.
    pub fn insert_alias(&mut self, alias: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        self.registry.insert_alias(alias, tunnel)?;
        self.keys.push(alias.to_string());
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for key in &self.keys {
            if let Some(t) = self.registry.remove(key, &self.session_id) {
                if t.info.name == *key {
                    tracing::info!(tunnel = %key, "tunnel down");
                }
            }
        }
    }
}
