//! A session's hold on its tunnels: what it registered or joined, left again when the
//! registration is dropped, however the session ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::registry::{NameTaken, Registry};
use super::Tunnel;
use crate::agent::AgentHandle;
use crate::leases::Leases;

/// The tunnels one session serves; dropping it leaves them (a tunnel goes when its last
/// connection leaves), whatever way the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    session_id: String,
    tunnels: Vec<Arc<Tunnel>>,
}

impl Registration {
    /// An empty registration for `session_id`.
    pub fn new(registry: Arc<Registry>, session_id: String) -> Self {
        Self { registry, session_id, tunnels: Vec::new() }
    }

    /// The registry's name and port leases.
    pub fn leases(&self) -> &Arc<Leases> {
        self.registry.leases()
    }

    /// The tunnels this session serves.
    pub fn tunnels(&self) -> &[Arc<Tunnel>] {
        &self.tunnels
    }

    /// Registers a new tunnel under its name.
    pub fn insert(&mut self, tunnel: Tunnel) -> Result<Arc<Tunnel>, NameTaken> {
        let t = self.registry.insert(tunnel)?;
        self.tunnels.push(t.clone());
        Ok(t)
    }

    /// Serves an existing tunnel too (see [`Registry::join`]).
    pub fn join(
        &mut self,
        name: &str,
        agent: &AgentHandle,
        owner: &str,
        group: Option<&str>,
        shareable: bool,
    ) -> Option<Arc<Tunnel>> {
        let t = self.registry.join(name, &self.session_id, agent, owner, group, shareable)?;
        self.tunnels.push(t.clone());
        Some(t)
    }

    /// Stops serving tunnel `name` now (the rest stay); the tunnel goes if no connection is
    /// left. False when this session did not hold it.
    pub fn leave(&mut self, name: &str) -> bool {
        let Some(i) = self.tunnels.iter().position(|t| t.info.name == name) else {
            return false;
        };
        let t = self.tunnels.remove(i);
        self.leave_one(&t);
        true
    }

    fn leave_one(&self, t: &Tunnel) {
        if self.registry.leave(&t.info.name, &self.session_id).is_some() && t.announced.load(Ordering::Relaxed) {
            tracing::info!(tunnel = %t.info.name, "tunnel down");
        }
    }

    /// Announces every tunnel as up (those already up stay quiet).
    pub fn announce_up(&self) {
        for t in &self.tunnels {
            self.registry.announce_up(t);
        }
    }

    /// Routes `tunnel`'s path prefix under `host` (see [`Registry::insert_path`]).
    pub fn insert_path(&mut self, host: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        self.registry.insert_path(host, tunnel)
    }

    /// Registers `alias` for `tunnel`.
    pub fn insert_alias(&mut self, alias: &str, tunnel: &Arc<Tunnel>) -> Result<(), NameTaken> {
        self.registry.insert_alias(alias, tunnel)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for t in &self.tunnels {
            self.leave_one(t);
        }
    }
}
