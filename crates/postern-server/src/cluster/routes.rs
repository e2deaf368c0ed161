//! Which relays serve a name, as this relay last heard: the route cache between the local
//! registry and the directory.
//!
//! A lookup is answered from the cache when it can be: a hit until the directory announces a
//! change of that name (`rt <name>` on the events channel), a miss for [`MISS_TTL`]. The cache
//! is cleared whenever the subscription to the channel is (re)made, since changes may have
//! been missed meanwhile, and every [`RESYNC`] in any case. Only a miss costs a round trip (one
//! `HGETALL`), so a cached route costs the hot path nothing.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::store::{Store, StoreError};

/// How long "no relay serves this name" is believed.
pub const MISS_TTL: Duration = Duration::from_secs(1);
/// How often the whole cache is dropped, whatever the channel said.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The route cache and the peers' addresses.
#[derive(Debug)]
pub struct Routes {
    own: String,
    cache: DashMap<String, (Vec<String>, Instant)>,
    nodes: RwLock<HashMap<String, Node>>,
}

/// What the directory says about a relay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Where its peers reach it.
    pub addr: String,
    /// Its boot epoch (changes when it restarts).
    pub epoch: u64,
}

impl Routes {
    /// An empty cache for relay `own` (which never routes to itself).
    pub fn new(own: &str) -> Self {
        Self { own: own.to_string(), cache: DashMap::new(), nodes: RwLock::default() }
    }

    /// The other relays serving `name`, fewest members first is not promised: the order is
    /// the directory's, rotated by the caller.
    pub async fn lookup(&self, store: &Store, name: &str) -> Result<Vec<String>, StoreError> {
        if let Some(hit) = self.cache.get(name) {
            if !hit.0.is_empty() || hit.1.elapsed() < MISS_TTL {
                return Ok(hit.0.clone());
            }
        }
        let mut relays: Vec<String> =
            store.routes(name).await?.into_iter().filter(|(r, n)| *n > 0 && *r != self.own).map(|(r, _)| r).collect();
        relays.sort();
        self.cache.insert(name.to_string(), (relays.clone(), Instant::now()));
        Ok(relays)
    }

    /// Forgets what is known of `name`.
    pub fn invalidate(&self, name: &str) {
        self.cache.remove(name);
    }

    /// Forgets every route.
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Replaces the known relays' addresses.
    pub fn set_nodes(&self, nodes: HashMap<String, Node>) {
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    /// Every live relay's id.
    pub fn peers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.nodes.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Where relay `id` listens for its peers, as last heard.
    pub fn node(&self, id: &str) -> Option<Node> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Where relay `id` listens for its peers: as last heard, else asked of the directory (a
    /// relay that joined since the last heartbeat).
    pub async fn resolve(&self, store: &Store, id: &str) -> Option<Node> {
        if let Some(node) = self.node(id) {
            return Some(node);
        }
        let node: Node = serde_json::from_str(&store.node(id).await.ok()??).ok()?;
        self.nodes.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), node.clone());
        Some(node)
    }

    /// Forgets relay `id`'s address (it restarted, or died).
    pub fn forget_node(&self, id: &str) {
        self.nodes.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
