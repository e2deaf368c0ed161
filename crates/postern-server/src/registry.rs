//! Live tunnels, by name.
//!
//! A name maps to exactly one tunnel. An HTTP tunnel may also be reachable under an alias (its
//! bare `<id>`, for the client's default port); aliases are keys that point at the same tunnel
//! and are not listed. Inserting a key that is taken fails; removal only removes keys that still
//! belong to the session asking, so a late cleanup can never remove a newer owner's tunnel.
//! Every change bumps a counter on a `watch` channel, which the status API and tests use to wait
//! for changes without polling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use postern_proto::TunnelKind;
use tokio::sync::watch;

use crate::agent::AgentHandle;

/// What the registry knows about a tunnel, for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelInfo {
    /// Unique name, for example `tcp-20001`.
    pub name: String,
    /// Tcp or http.
    pub kind: TunnelKind,
    /// Where the public reaches it.
    pub public_url: String,
    /// Public port for tcp tunnels.
    pub public_port: Option<u16>,
    /// Extra name this tunnel answers to (an HTTP tunnel's bare `<id>`).
    pub alias: Option<String>,
    /// Port on the agent's side.
    pub local_port: u16,
    /// The agent's client id.
    pub client_id: String,
    /// The agent session that serves it.
    pub session_id: String,
    /// The agent's address as the relay sees it.
    pub agent_addr: SocketAddr,
    /// When it was registered.
    pub since: SystemTime,
}

/// A registered tunnel: its description and the way to reach its agent.
#[derive(Debug)]
pub struct Tunnel {
    /// Description.
    pub info: TunnelInfo,
    /// The agent serving it.
    pub agent: AgentHandle,
}

/// The name is already registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tunnel name {0:?} is already in use")]
pub struct NameTaken(pub String);

/// All live tunnels.
#[derive(Debug)]
pub struct Registry {
    tunnels: DashMap<String, Arc<Tunnel>>,
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self { tunnels: DashMap::new(), changes: watch::Sender::new(0) }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a tunnel under its name, unless the name is taken.
    pub fn insert(&self, tunnel: Tunnel) -> Result<Arc<Tunnel>, NameTaken> {
        let name = tunnel.info.name.clone();
        let added = match self.tunnels.entry(name.clone()) {
            Entry::Occupied(_) => return Err(NameTaken(name)),
            Entry::Vacant(v) => v.insert(Arc::new(tunnel)).clone(),
        };
        self.changes.send_modify(|n| *n += 1);
        Ok(added)
    }

    /// Makes `alias` another key for `tunnel`, unless it is taken.
    pub fn insert_alias(&self, alias: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        match self.tunnels.entry(alias.to_string()) {
            Entry::Occupied(_) => return Err(NameTaken(alias.to_string())),
            Entry::Vacant(v) => v.insert(tunnel.clone()),
        };
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Removes the key `name` if it is still served by `session_id`.
    pub fn remove(&self, name: &str, session_id: &str) -> Option<Arc<Tunnel>> {
        let removed = self.tunnels.remove_if(name, |_, t| t.info.session_id == session_id).map(|(_, t)| t);
        if removed.is_some() {
            self.changes.send_modify(|n| *n += 1);
        }
        removed
    }

    /// Looks a tunnel up by name.
    pub fn get(&self, name: &str) -> Option<Arc<Tunnel>> {
        self.tunnels.get(name).map(|t| t.clone())
    }

    /// A snapshot of every tunnel, sorted by name.
    pub fn list(&self) -> Vec<TunnelInfo> {
        let mut v: Vec<_> =
            self.tunnels.iter().filter(|e| *e.key() == e.value().info.name).map(|t| t.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of live tunnels (aliases not counted).
    pub fn len(&self) -> usize {
        self.tunnels.iter().filter(|e| *e.key() == e.value().info.name).count()
    }

    /// True when no tunnel is live.
    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The keys one session holds; dropping it removes them, whatever way the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    session_id: String,
    keys: Vec<String>,
}

impl Registration {
    /// An empty registration for `session_id`.
    pub fn new(registry: Arc<Registry>, session_id: String) -> Self {
        Self { registry, session_id, keys: Vec::new() }
    }

    /// Registers `tunnel` under its name.
    pub fn insert(&mut self, tunnel: Tunnel) -> Result<Arc<Tunnel>, NameTaken> {
        let name = tunnel.info.name.clone();
        let t = self.registry.insert(tunnel)?;
        self.keys.push(name);
        Ok(t)
    }

    /// Registers `alias` for `tunnel`.
    pub fn insert_alias(&mut self, alias: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        self.registry.insert_alias(alias, tunnel)?;
        self.keys.push(alias.to_string());
        Ok(())
    }

    /// The keys held: tunnel names and aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
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
