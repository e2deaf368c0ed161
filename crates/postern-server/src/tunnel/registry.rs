//! Live tunnels and agents, and the event feed about them.
//!
//! - A tunnel name maps to exactly one tunnel. An HTTP tunnel may also be reachable under an
//!   alias (its bare `<id>`, for the client's default port); aliases are keys that point at the
//!   same tunnel and are not listed. Inserting a key that is taken fails; removal only removes
//!   keys that still belong to the session asking, so a late cleanup can never remove a newer
//!   owner's tunnel.
//! - Agents are listed by session id, with a token that kicks them.
//! - A session holds its tunnels through a [`Registration`] (`tunnel::registration`).
//! - Every change is announced on a broadcast channel of [`Event`]s (the status API's SSE stream
//!   and the webhooks read it) and bumps a `watch` counter (tests wait on it without polling).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use postern_proto::TunnelKind;
use tokio::sync::{broadcast, watch};

pub use super::connected::{Agent, AgentInfo};
use super::events::{Event, EventKind};
use super::paths::Paths;
pub use super::registration::Registration;
use super::{Member, Tunnel, TunnelInfo};
use crate::access_log::AccessLog;
use crate::agent::AgentHandle;
use crate::inspect::{Capture, Inspection};
use crate::leases::{Claim, Leases};
use crate::metrics::RelayMetrics;

/// The name is already registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tunnel name {0:?} is already in use")]
pub struct NameTaken(pub String);

/// All live tunnels and agents.
#[derive(Debug)]
pub struct Registry {
    pub(super) tunnels: DashMap<String, Arc<Tunnel>>,
    agents: DashMap<String, Arc<Agent>>,
    changes: watch::Sender<u64>,
    samples: watch::Sender<u64>,
    events: broadcast::Sender<Event>,
    /// Captures of inspected tunnels, apart from `events`: a busy tunnel's requests must not
    /// push tunnel and agent events out of a slow reader's (the webhooks') buffer.
    captures: broadcast::Sender<Event>,
    seq: AtomicU64,
    announcing: Mutex<()>,
    metrics: Arc<RelayMetrics>,
    pub(super) leases: Arc<Leases>,
    access_log: AccessLog,
    inspection: Inspection,
    /// Told the names whose member count changed (a clustered relay's directory follows).
    route_changes: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Hosts shared by path prefix.
    pub(super) paths: Paths,
}

impl Registry {
    /// An empty registry whose gauges live in `metrics` and whose names are leased by `leases`.
    /// Public requests and connections are recorded in `access_log`; inspected tunnels' captures
    /// are bounded by `inspection`.
    pub fn new(
        metrics: Arc<RelayMetrics>,
        leases: Arc<Leases>,
        access_log: AccessLog,
        inspection: Inspection,
    ) -> Arc<Self> {
        Arc::new(Self {
            tunnels: DashMap::new(),
            agents: DashMap::new(),
            changes: watch::Sender::new(0),
            samples: watch::Sender::new(0),
            events: broadcast::Sender::new(1024),
            captures: broadcast::Sender::new(1024),
            seq: AtomicU64::new(0),
            announcing: Mutex::new(()),
            metrics,
            leases,
            access_log,
            inspection,
            route_changes: std::sync::OnceLock::new(),
            paths: Paths::default(),
        })
    }

    /// From now on, sends the names (and aliases, custom domains) of every tunnel that loses a
    /// member or goes away to `tx`.
    pub fn on_route_change(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.route_changes.set(tx);
    }

    fn route_changed(&self, t: &Tunnel) {
        if let Some(tx) = self.route_changes.get() {
            let domain = t.domain.get().filter(|_| t.path.is_none());
            for key in [Some(&t.info.name), t.alias.get(), domain].into_iter().flatten() {
                let _ = tx.send(key.clone());
            }
        }
    }

    /// The name leases.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// The relay's metrics.
    pub fn metrics(&self) -> &Arc<RelayMetrics> {
        &self.metrics
    }

    /// Where the edges record each public request and connection.
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    fn announce(&self, kind: EventKind, owner: &str, tunnel: Option<TunnelInfo>, agent: Option<AgentInfo>) {
        self.publish(kind, owner, tunnel, agent, None);
        self.changes.send_modify(|n| *n += 1);
    }

    fn publish(
        &self,
        kind: EventKind,
        owner: &str,
        tunnel: Option<TunnelInfo>,
        agent: Option<AgentInfo>,
        capture: Option<Arc<Capture>>,
    ) {
        // Numbering and sending under one lock, so subscribers see `seq` in order.
        let _in_order = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let at = SystemTime::now();
        // No subscribers is fine.
        let channel = if kind == EventKind::RequestCaptured { &self.captures } else { &self.events };
        let _ = channel.send(Event { seq, kind, at, owner: owner.to_string(), tunnel, agent, capture });
    }

    /// Announces a request `tunnel`'s inspector captured (on the SSE stream only).
    pub fn announce_capture(&self, tunnel: &Tunnel, capture: &Arc<Capture>) {
        if self.captures.receiver_count() == 0 {
            // Nobody is watching: no event to build (this is on every inspected request).
            return;
        }
        let info = Some(tunnel.info.clone());
        self.publish(EventKind::RequestCaptured, &tunnel.info.owner, info, None, Some(capture.clone()));
    }

    /// Every tunnel's history has a new point, taken at `t` (Unix ms).
    pub fn sampled(&self, t: u64) {
        self.samples.send_replace(t);
    }

    /// Watches the history's rounds: the time of the newest.
    pub fn samples(&self) -> watch::Receiver<u64> {
        self.samples.subscribe()
    }

    /// The request inspector's settings and memory.
    pub fn inspection(&self) -> &Inspection {
        &self.inspection
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
            Some(port) => self.leases.hold_port(port, &added.info.owner, &added.instance, added.info.local_port),
            None => self.leases.hold_name(&added.info.name, &added.info.owner),
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(added)
    }

    /// Announces that `tunnel` serves traffic (once).
    pub fn announce_up(&self, tunnel: &Tunnel) {
        if !tunnel.announced.swap(true, Ordering::Relaxed) {
            self.announce(EventKind::TunnelUp, &tunnel.info.owner, Some(tunnel.info.clone()), None);
        }
    }

    /// Makes `alias` another key for `tunnel`, unless it is taken or leased to another owner:
    /// its bare `<id>` (no dot), or its custom domain (dotted).
    pub fn insert_alias(&self, alias: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        let other_paths = self.paths.owner(alias).is_some_and(|o| o != tunnel.info.owner);
        if other_paths || self.leases.check_name(alias, &tunnel.info.owner) != Claim::Granted {
            return Err(NameTaken(alias.to_string()));
        }
        match self.tunnels.entry(alias.to_string()) {
            Entry::Occupied(_) => Err(NameTaken(alias.to_string())),
            Entry::Vacant(v) => {
                v.insert(tunnel.clone());
                let slot = if alias.contains('.') { &tunnel.domain } else { &tunnel.alias };
                let _ = slot.set(alias.to_string());
                self.leases.hold_name(alias, &tunnel.info.owner);
                Ok(())
            }
        }
    }

    /// Adds connection `agent` (session `session_id`) to the live tunnel `name`, if `owner` may
    /// join it: same owner and same client `group`, or both sides shareable.
    pub fn join(
        &self,
        name: &str,
        session_id: &str,
        agent: &AgentHandle,
        owner: &str,
        group: Option<&str>,
        shareable: bool,
    ) -> Option<Arc<Tunnel>> {
        let t = self.joinable(name, session_id, owner, group, shareable)?;
        self.attach(&t, agent);
        Some(t)
    }

    /// The live tunnel `name`, if session `session_id` may join it and does not serve it yet.
    pub fn joinable(
        &self,
        name: &str,
        session_id: &str,
        owner: &str,
        group: Option<&str>,
        shareable: bool,
    ) -> Option<Arc<Tunnel>> {
        let t = self.tunnels.get(name).filter(|t| t.info.name == name).map(|t| t.clone())?;
        let same_group = group.is_some() && t.group.as_deref() == group;
        let already = t.members().iter().any(|m| m.session_id() == session_id);
        if t.info.owner != owner || !(same_group || (shareable && t.shareable)) || t.closed.is_cancelled() || already {
            return None;
        }
        Some(t)
    }

    /// Makes connection `agent` serve `tunnel`, reserved (or found joinable) for it: streams
    /// may go to it from now on.
    pub fn attach(&self, tunnel: &Tunnel, agent: &AgentHandle) {
        let mut members = tunnel.members();
        if !members.iter().any(|m| m.session_id() == agent.session_id()) && !tunnel.closed.is_cancelled() {
            members.push(Member::Agent(agent.clone()));
            drop(members);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// A live TCP tunnel of client `group` forwarding to `local_port` that session
    /// `session_id` does not serve yet, for that client's next connection.
    pub fn find_tcp(&self, owner: &str, group: &str, local_port: u16, session_id: &str) -> Option<String> {
        self.tunnels
            .iter()
            .find(|t| {
                t.info.kind == TunnelKind::Tcp
                    && t.info.owner == owner
                    && t.group.as_deref() == Some(group)
                    && t.info.local_port == local_port
                    && !t.members().iter().any(|m| m.session_id() == session_id)
            })
            .map(|t| t.info.name.clone())
    }

    /// Session `session_id` stops serving `name`; the tunnel goes when no connection is left.
    pub fn leave(&self, name: &str, session_id: &str) -> Option<Arc<Tunnel>> {
        let t = self.tunnels.get(name).filter(|t| t.info.name == name).map(|t| t.clone())?;
        let empty = {
            let mut m = t.members();
            m.retain(|m| m.session_id() != session_id);
            m.is_empty()
        };
        if empty {
            self.remove(name)
        } else {
            self.route_changed(&t);
            self.changes.send_modify(|n| *n += 1);
            None
        }
    }

    /// Removes tunnel `name` (and its alias): closes it, starts its leases, announces it.
    fn remove(&self, name: &str) -> Option<Arc<Tunnel>> {
        let (_, t) = self.tunnels.remove_if(name, |_, t| t.info.name == name)?;
        // A tunnel with a path holds a prefix of its hosts, not the names themselves.
        let aliases: Vec<&String> = match t.path {
            None => [t.alias.get(), t.domain.get()].into_iter().flatten().collect(),
            Some(_) => {
                let domain = t.domain.get().map(String::as_str);
                self.paths.remove(&t, &[Some(t.info.id.as_str()), domain].into_iter().flatten().collect::<Vec<_>>());
                Vec::new()
            }
        };
        {
            for alias in &aliases {
                self.tunnels.remove_if(alias.as_str(), |_, a| Arc::ptr_eq(a, &t));
            }
            let was_live = !t.closed.is_cancelled() && t.announced.load(Ordering::Relaxed);
            let promised = t.announced.load(Ordering::Relaxed);
            drop(t.listener.lock().unwrap_or_else(|p| p.into_inner()).take());
            t.closed.cancel();
            drop(t.slot.lock().unwrap_or_else(|p| p.into_inner()).take());
            // A name is kept for its owner only once it was promised (a refused session's
            // reservations simply go).
            match t.info.public_port {
                _ if !promised => {
                    self.leases.forget(&t.info.name, t.info.public_port);
                    for alias in &aliases {
                        self.leases.forget(alias, None);
                    }
                }
                Some(port) => self.leases.release_port(port),
                None => {
                    self.leases.release_name(&t.info.name);
                    for alias in &aliases {
                        self.leases.release_name(alias);
                    }
                }
            }
            self.metrics.tunnels.with_label_values(&[t.info.kind.as_str()]).dec();
            self.metrics.forget_tunnel(&t.info.name);
            self.route_changed(&t);
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
        self.remove(name)
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

    /// Subscribes to the inspector's captures (`request_captured` events), a channel of their
    /// own.
    pub fn captures(&self) -> broadcast::Receiver<Event> {
        self.captures.subscribe()
    }
}
