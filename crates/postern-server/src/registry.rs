//! Live tunnels, by name.
//!
//! A name maps to exactly one tunnel. Inserting a name that is taken fails; removal only removes
//! a tunnel if it still belongs to the session asking, so a late cleanup can never remove a
//! newer owner's tunnel. Every change bumps a counter on a `watch` channel, which the status API
//! and tests use to wait for changes without polling.

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

    /// Removes `name` if it is still served by `session_id`.
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
        let mut v: Vec<_> = self.tunnels.iter().map(|t| t.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of live tunnels.
    pub fn len(&self) -> usize {
        self.tunnels.len()
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
