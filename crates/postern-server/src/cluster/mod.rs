//! A cluster of relays on Redis: any relay serves any tunnel, and a relay can die without its
//! tunnels losing their URLs. Design, operations and failures: `docs/cluster.md`.
//!
//! # Layout
//!
//! - this module: [`Cluster`], this relay's membership: its entry in the directory (refreshed,
//!   re-asserted when the directory lost it), the claims of its agents' names and ports, the
//!   reaping of dead relays, and the events it listens to;
//! - [`store`]: the directory (Redis through redis-rs), its keys and its three scripts;
//! - [`routes`]: the route cache (local registry first, then this cache, then the directory);
//! - [`peer`]: TLS between relays and the proof of the cluster secret;
//! - [`links`]: outgoing HTTP/2 links to peers, pooled;
//! - [`serve`]: the peer listener, where forwarded requests and connections arrive;
//! - [`forward`]: sending a public request or connection to the relay that holds its agent;
//! - [`ports`]: every relay listens on every claimed TCP port, and forwards what it accepts.

pub mod forward;
pub mod links;
pub mod peer;
pub mod ports;
pub mod routes;
pub mod serve;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use postern_proto::RefuseCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::links::Links;
use self::peer::PeerTls;
use self::routes::{Node, Routes, RESYNC};
use self::store::{Claimed, NameClaim, Store, StoreError};
use crate::auth::Identity;
use crate::config::RelayConfig;
use crate::metrics::RelayMetrics;
use crate::revocation::Revocations;
use crate::tunnel::admit::Gate;
use crate::tunnel::registry::Registry;
use crate::tunnel::Tunnel;

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The directory URL is not usable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Peer TLS could not be set up.
    #[error(transparent)]
    Peer(#[from] peer::PeerError),
}

/// This relay's membership of a cluster.
#[derive(Debug)]
pub struct Cluster {
    /// This relay's id.
    pub id: String,
    epoch: u64,
    advertise: String,
    /// The directory.
    pub store: Store,
    /// The route cache and the peers' addresses.
    pub routes: Routes,
    /// Links to peers.
    pub links: Links,
    /// TLS for the peer listener.
    pub tls: PeerTls,
    lease: Duration,
    node_ttl: Duration,
    store_up: AtomicBool,
    metrics: Arc<RelayMetrics>,
    registry: Arc<Registry>,
    revocations: Arc<Revocations>,
    /// Names whose member count changed here, for the directory.
    sync_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// TCP ports this relay forwards for tunnels held elsewhere.
    pub ports: ports::Ports,
    /// Admission of the connections those ports accept.
    gate: Arc<Gate>,
}

impl Cluster {
    /// Joins (lazily: nothing is dialled until [`Cluster::run`]) the cluster `config` names,
    /// advertising `advertise` to peers; the TCP ports it forwards admit through `gate`.
    pub fn new(
        config: &RelayConfig,
        advertise: String,
        registry: Arc<Registry>,
        revocations: Arc<Revocations>,
        gate: Arc<Gate>,
    ) -> Result<Option<Arc<Self>>, ClusterError> {
        let Some(url) = &config.cluster else { return Ok(None) };
        let id = config.relay_id.clone().unwrap_or_else(|| "relay".into());
        let secret = config.cluster_secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default();
        let tls = PeerTls::new(&secret)?;
        let metrics = registry.metrics().clone();
        let (sync, sync_rx) = mpsc::unbounded_channel();
        registry.on_route_change(sync);
        Ok(Some(Arc::new(Self {
            epoch: crate::clock::unix_ms(),
            advertise,
            store: Store::new(url, store::prefix(&secret))?,
            routes: Routes::new(&id),
            links: Links::new(&id, tls.clone(), metrics.clone()),
            tls,
            lease: config.lease_grace,
            node_ttl: config.cluster_node_ttl,
            store_up: AtomicBool::new(false),
            ports: ports::Ports::new(config.tcp_bind()),
            metrics,
            registry,
            revocations,
            gate,
            sync_rx: std::sync::Mutex::new(Some(sync_rx)),
            id,
        })))
    }

    /// True while the directory answers.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    fn set_store_up(&self, up: bool) {
        if self.store_up.swap(up, Ordering::Relaxed) != up {
            self.metrics.cluster.store_up.set(i64::from(up));
            if up {
                info!("cluster directory reachable");
            } else {
                warn!(
                    "cluster directory unreachable: live tunnels keep serving, new names are refused until it is back"
                );
            }
        }
    }

    /// The claims that say how this relay serves `tunnel` now.
    fn claims_of(&self, tunnel: &Tunnel) -> Vec<NameClaim> {
        // A bore tunnel has no agent connections, only its control connection: one member.
        let count = tunnel.sessions().len().max(1) as u32;
        let i = &tunnel.info;
        // A tunnel with a path shares its hosts (see `tunnel::paths`): only its name is its own.
        let domain = tunnel.domain.get().filter(|_| tunnel.path.is_none());
        let keys = [Some(&i.name), tunnel.alias.get(), domain];
        keys.into_iter()
            .flatten()
            .map(|name| NameClaim {
                counts: *name == i.name,
                name: name.clone(),
                count,
                owner: i.owner.clone(),
                group: tunnel.group.clone().unwrap_or_else(|| tunnel.instance.clone()),
                share: tunnel.shareable,
                instance: tunnel.instance.clone(),
                local_port: i.local_port,
                kind: i.kind.as_str(),
                url: i.public_url.clone(),
            })
            .collect()
    }

    /// Claims `tunnels` (a session's, just reserved here) in the directory, or says why not.
    /// The message is for the agent; every refusal is worth retrying.
    pub async fn claim(&self, tunnels: &[Arc<Tunnel>], who: &Identity) -> Result<(), (RefuseCode, String)> {
        let names: Vec<NameClaim> = tunnels.iter().flat_map(|t| self.claims_of(t)).collect();
        let max = who.claims.as_ref().and_then(|c| c.limits.max_tunnels);
        let result = self.store.route(&self.id, self.lease, who.token_id.as_deref(), max, &names).await;
        let label = match &result {
            Ok(Claimed::Granted) => "granted",
            Ok(Claimed::Taken(_)) => "taken",
            Ok(Claimed::Quota(_)) => "quota",
            Err(_) => "error",
        };
        self.metrics.cluster.claims.with_label_values(&[label]).inc();
        match result {
            Ok(Claimed::Granted) => Ok(()),
            Ok(Claimed::Taken(name)) => Err((
                RefuseCode::Unavailable,
                format!("{name} is held by another client, on another relay of this cluster"),
            )),
            Ok(Claimed::Quota(max)) => Err((
                RefuseCode::Unavailable,
                format!("the token's tunnel quota ({max}) is used up across the cluster"),
            )),
            Err(e) => {
                self.set_store_up(false);
                Err((RefuseCode::Unavailable, format!("{e}")))
            }
        }
    }

    /// The TCP port the client `instance` of `owner` had for `local_port`, anywhere in the
    /// cluster.
    pub async fn leased_port(&self, owner: &str, instance: &str, local_port: u16) -> Option<u16> {
        self.store.leased_port(owner, instance, local_port).await.ok().flatten()
    }

    /// Runs the membership until `shutdown`: connects to the directory (and keeps trying),
    /// refreshes this relay's entry, reaps dead relays, follows the events, and keeps the
    /// directory's member counts in step with the local registry.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let sync_rx = self.sync_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = sync_rx {
            tokio::spawn(self.clone().sync_loop(rx, shutdown.clone()));
        }
        tokio::spawn(self.clone().events(shutdown.clone()));
        // The entry lives 3/4 of the node TTL and is refreshed every 1/4: a relay survives two
        // missed refreshes, and a dead one's entry is gone within 3/4 of the TTL and reaped by
        // the next refresh of a live relay, so within the TTL of its death.
        let mut tick = tokio::time::interval(self.node_ttl / 4);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.beat().await,
            }
        }
        // Leave cleanly: drop this relay's routes now rather than when its entry expires.
        let names: Vec<String> =
            self.registry.tunnels().iter().flat_map(|t| self.claims_of(t)).map(|c| c.name).collect();
        let gone: Vec<NameClaim> = names.into_iter().map(|name| self.gone(name)).collect();
        let _ = self.store.route(&self.id, self.lease, None, None, &gone).await;
    }

    /// A claim that drops this relay's route of `name`.
    fn gone(&self, name: String) -> NameClaim {
        NameClaim {
            name,
            count: 0,
            owner: String::new(),
            group: String::new(),
            share: false,
            instance: String::new(),
            local_port: 0,
            kind: "",
            url: String::new(),
            counts: false,
        }
    }

    /// One heartbeat: connect if needed, refresh the entry (asserting every route again when
    /// the directory had lost it), learn the peers, reap the dead.
    async fn beat(&self) {
        if let Err(e) = self.store.connect().await {
            tracing::debug!(error = %e, "cluster directory not reachable yet");
            self.set_store_up(false);
            return;
        }
        let value =
            serde_json::to_string(&Node { addr: self.advertise.clone(), epoch: self.epoch }).unwrap_or_default();
        match self.store.heartbeat(&self.id, self.node_ttl * 3 / 4, &value).await {
            Ok(existed) => {
                self.set_store_up(true);
                if !existed {
                    self.assert_all().await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster heartbeat failed");
                self.set_store_up(false);
                return;
            }
        }
        let Ok(relays) = self.store.relays().await else { return };
        let mut nodes = HashMap::new();
        for (id, value) in relays {
            match value.and_then(|v| serde_json::from_str::<Node>(&v).ok()) {
                Some(node) => {
                    nodes.insert(id, node);
                }
                None => {
                    if self.store.reap(&id, self.lease).await.unwrap_or(false) {
                        info!(relay = %id, "relay is gone; its routes were dropped");
                        self.links.forget(&id);
                    }
                }
            }
        }
        self.routes.set_nodes(nodes);
    }

    /// The live relays, as the directory says now (as last heard, when it cannot be asked).
    pub async fn live_relays(&self) -> Vec<String> {
        match self.store.relays().await {
            Ok(relays) => relays.into_iter().filter(|(_, v)| v.is_some()).map(|(id, _)| id).collect(),
            Err(_) => self.routes.peers(),
        }
    }

    /// Writes every local tunnel's routes again (after the directory lost this relay's).
    async fn assert_all(&self) {
        let tunnels = self.registry.tunnels();
        if tunnels.is_empty() {
            return;
        }
        let names: Vec<NameClaim> = tunnels.iter().flat_map(|t| self.claims_of(t)).collect();
        match self.store.route(&self.id, self.lease, None, None, &names).await {
            Ok(Claimed::Granted) => {
                info!(tunnels = tunnels.len(), "asserted this relay's routes in the cluster directory")
            }
            Ok(refused) => warn!(?refused, "could not assert every route: another relay took a name meanwhile"),
            Err(e) => warn!(error = %e, "could not assert this relay's routes"),
        }
    }

    /// Writes the member counts of changed names, a batch at a time.
    async fn sync_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<String>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            let mut changed: HashSet<String> = HashSet::from([first]);
            while let Ok(n) = rx.try_recv() {
                changed.insert(n);
            }
            let mut claims = Vec::new();
            for name in changed {
                match self.registry.get(&name) {
                    Some(t) => claims.extend(self.claims_of(&t).into_iter().filter(|c| c.name == name)),
                    None => claims.push(self.gone(name)),
                }
            }
            if let Err(e) = self.store.route(&self.id, self.lease, None, None, &claims).await {
                // The next heartbeat that finds the entry gone asserts everything again; until
                // then the directory may list a member that left, which forwarding survives.
                warn!(error = %e, "could not update the cluster directory");
            }
        }
    }

    /// Follows the events channel until `shutdown`, resubscribing (and clearing the route
    /// cache) whenever the subscription drops.
    async fn events(self: Arc<Self>, shutdown: CancellationToken) {
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            // The catch-up after subscribing reads the directory: connected first.
            let pubsub = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = async {
                    self.store.connect().await?;
                    Ok::<_, StoreError>(self.store.client().get_async_pubsub().await?)
                } => p,
            };
            let mut pubsub = match pubsub {
                Ok(p) => p,
                Err(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            if pubsub.subscribe(self.store.events()).await.is_err() {
                continue;
            }
            self.routes.clear();
            self.catch_up().await;
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = resync.tick() => self.routes.clear(),
                    m = messages.next() => match m {
                        Some(m) => self.on_event(m.get_payload_bytes()).await,
                        None => break,
                    },
                }
            }
            warn!("lost the cluster events channel; resubscribing");
        }
    }

    /// After (re)subscribing: the revocations and TCP routes that may have been missed.
    async fn catch_up(self: &Arc<Self>) {
        if let Ok(ids) = self.store.revoked().await {
            for id in ids {
                self.revoked_elsewhere(&id);
            }
        }
        if let Ok(names) = self.store.names().await {
            for name in names.iter().filter(|n| n.starts_with(postern_proto::hostname::TCP_PREFIX)) {
                self.ports.sync(self, name).await;
            }
        }
    }

    async fn on_event(self: &Arc<Self>, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else { return };
        let (what, rest) = text.split_once(' ').unwrap_or((text, ""));
        match what {
            "rt" => {
                self.routes.invalidate(rest);
                if rest.starts_with(postern_proto::hostname::TCP_PREFIX) {
                    self.ports.sync(self, rest).await;
                }
            }
            "node" => {
                self.links.forget(rest);
                self.routes.forget_node(rest);
            }
            "revoke" => self.revoked_elsewhere(rest),
            "kick" => match rest.split_once(' ') {
                Some(("tunnel", name)) => {
                    self.registry.kick_tunnel(name);
                }
                Some(("agent", id)) => {
                    if let Some(a) = self.registry.agent(id) {
                        a.kick.cancel();
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A token revoked on another relay (or before this one started): refuse it here too.
    fn revoked_elsewhere(&self, id: &str) {
        if !self.revocations.is_revoked(id) {
            if let Err(e) = self.revocations.revoke(id) {
                warn!(error = %e, "could not record a revocation from the cluster");
            }
            let n = self.registry.kick_token(id);
            info!(token = %id, sessions = n, "token revoked in the cluster; its sessions here were disconnected");
        }
    }

    /// Tells the cluster about a revocation made here.
    pub async fn revoke(&self, id: &str) {
        if let Err(e) = self.store.revoke(id).await {
            warn!(error = %e, token = %id, "could not share a revocation with the cluster; it holds on this relay");
        }
    }
}
