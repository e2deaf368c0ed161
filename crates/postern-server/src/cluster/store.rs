//! The cluster's directory: Redis (or Valkey), through redis-rs. Every key starts with the
//! cluster's prefix `{pst:<tag>}:`, one hash tag, so the scripts that touch several keys also
//! run on a Redis Cluster. The tag is 8 hex digits of an HMAC of the cluster secret: relays with
//! another secret share nothing with this cluster, not even its names (below, `{pst}` stands
//! for the whole prefix).
//!
//! | key | holds |
//! |---|---|
//! | `{pst}:node:<relay>` | its peer address and boot epoch, with a TTL (`--cluster-node-ttl`) |
//! | `{pst}:relays` | every relay that has an entry or routes to reap |
//! | `{pst}:own:<name>` | the owner of a name (`myapp-3000`, `tcp-20417`): subject, group, share flag, token; no TTL while routed, the lease grace after |
//! | `{pst}:rt:<name>` | relay → how many of its agent connections serve the name |
//! | `{pst}:names`, `{pst}:names:<relay>` | the routed names, all and by relay |
//! | `{pst}:lease:<owner>:<instance>:<local port>` | the TCP port that client had |
//! | `{pst}:quota:<token>` | the token's tunnels across the cluster |
//! | `{pst}:revoked` | revoked token ids |
//! | `{pst}:vol:<token>:<period start>` | bytes the token moved in that period, every relay's counts added; expires a day after the period |
//!
//! Changes are announced on the channel `{pst}:events` (`rt <name>`, `node <relay>`, `revoke
//! <id>`, `kick tunnel <name>`, `kick agent <id>`). The three scripts (`lua/`) are one round trip
//! each, so the store's load grows with the number of relays, not of tunnels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, Script};
use tokio::sync::OnceCell;

/// The key prefix of the cluster whose secret is `secret`.
pub fn prefix(secret: &str) -> String {
    use hmac::Mac;
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(b"postern cluster keyspace");
    let tag = mac.finalize().into_bytes();
    format!("{{pst:{:02x}{:02x}{:02x}{:02x}}}:", tag[0], tag[1], tag[2], tag[3])
}

/// Why the directory could not answer. Callers treat it as retryable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not connected (yet, or any more).
    #[error("the cluster directory is unreachable; try again shortly")]
    Down,
    /// The connection failed under a command.
    #[error("the cluster directory is unreachable ({0}); try again shortly")]
    Lost(redis::RedisError),
    /// A command failed.
    #[error("cluster directory: {0}")]
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            Self::Lost(e)
        } else {
            Self::Redis(e)
        }
    }
}

/// What one name is, to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameClaim {
    /// The name (`myapp-3000`, `myapp`, `app.example.com`, `tcp-20417`).
    pub name: String,
    /// How many agent connections on this relay serve it (0 drops this relay's route).
    pub count: u32,
    /// The subject that owns it.
    pub owner: String,
    /// The client instance that opened it.
    pub group: String,
    /// Other clients of the owner may serve it too.
    pub share: bool,
    /// What identifies the client across reconnects (its TCP port lease).
    pub instance: String,
    /// The port on the agent's side.
    pub local_port: u16,
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// Its public URL.
    pub url: String,
    /// The tunnel's own name (counted by the token's `max_tunnels`), not an alias or domain.
    pub counts: bool,
}

/// What a claim said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Every name is this relay's (with the owner's other members, if any).
    Granted,
    /// Another owner (or another, non-sharing client of the same owner) holds this name.
    Taken(String),
    /// The token's cluster-wide tunnel quota is used up.
    Quota(u32),
}

/// The connection to the directory and the scripts.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    conn: Arc<OnceCell<ConnectionManager>>,
    route: Arc<Script>,
    heartbeat: Arc<Script>,
    reap: Arc<Script>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("server", &self.client.get_connection_info().addr()).finish()
    }
}

impl Store {
    /// A store for `url` (checked by the settings) whose keys start with `prefix`; not
    /// connected yet.
    pub fn new(url: &str, prefix: String) -> Result<Self, StoreError> {
        Ok(Self {
            client: Client::open(url)?,
            prefix,
            conn: Arc::default(),
            route: Arc::new(Script::new(concat!(include_str!("lua/unrouted.lua"), include_str!("lua/route.lua")))),
            heartbeat: Arc::new(Script::new(include_str!("lua/heartbeat.lua"))),
            reap: Arc::new(Script::new(concat!(include_str!("lua/unrouted.lua"), include_str!("lua/reap.lua")))),
        })
    }

    /// The pub/sub channel.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The key of the TCP port lease of a client's local port.
    fn lease_key(&self, owner: &str, instance: &str, local_port: u16) -> String {
        self.key(&format!("lease:{owner}:{instance}:{local_port}"))
    }

    /// The client, for the pub/sub connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Connects (once; the connection manager reconnects by itself after that).
    pub async fn connect(&self) -> Result<(), StoreError> {
        self.conn.get_or_try_init(|| self.dial()).await.map(|_| ())
    }

    async fn dial(&self) -> Result<ConnectionManager, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(self.client.get_connection_manager_with_config(config).await?)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn.get().cloned().ok_or(StoreError::Down)
    }

    /// Sets this relay's member counts for `names`, owned through `token` (limited to
    /// `max_tunnels` across the cluster, when given).
    pub async fn route(
        &self,
        relay: &str,
        lease: Duration,
        token: Option<&str>,
        max_tunnels: Option<u32>,
        names: &[NameClaim],
    ) -> Result<Claimed, StoreError> {
        let mut c = self.conn().await?;
        let mut inv = self.route.prepare_invoke();
        inv.key(&self.prefix)
            .arg(relay)
            .arg(lease.as_millis() as u64)
            .arg(token.unwrap_or(""))
            .arg(max_tunnels.unwrap_or(0))
            .arg(names.len());
        for n in names {
            let lease =
                if n.kind == "tcp" { self.lease_key(&n.owner, &n.instance, n.local_port) } else { String::new() };
            inv.arg(&n.name)
                .arg(n.count)
                .arg(&n.owner)
                .arg(&n.group)
                .arg(u8::from(n.share))
                .arg(&n.instance)
                .arg(n.local_port)
                .arg(n.kind)
                .arg(&n.url)
                .arg(lease)
                .arg(u8::from(n.counts));
        }
        let answer: Vec<String> = inv.invoke_async(&mut c).await?;
        Ok(match answer.as_slice() {
            [ok] if ok == "ok" => Claimed::Granted,
            [what, name] if what == "taken" => Claimed::Taken(name.clone()),
            [what, max] if what == "quota" => Claimed::Quota(max.parse().unwrap_or(0)),
            other => {
                return Err(StoreError::Redis(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "unexpected answer from the route script",
                    format!("{other:?}"),
                ))))
            }
        })
    }

    /// Refreshes this relay's entry; `false` when it had gone (assert every route again).
    pub async fn heartbeat(&self, relay: &str, ttl: Duration, value: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let existed: i64 = self
            .heartbeat
            .key(&self.prefix)
            .arg(relay)
            .arg(ttl.as_millis() as u64)
            .arg(value)
            .invoke_async(&mut c)
            .await?;
        Ok(existed == 1)
    }

    /// Drops the routes of `relay` if it is dead; `true` when it reaped.
    pub async fn reap(&self, relay: &str, lease: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let reaped: i64 =
            self.reap.key(&self.prefix).arg(relay).arg(lease.as_millis() as u64).invoke_async(&mut c).await?;
        Ok(reaped == 1)
    }

    /// Every known relay and its entry (`None`: its entry expired).
    pub async fn relays(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut c = self.conn().await?;
        let mut ids: Vec<String> = c.smembers(self.key("relays")).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key(&format!("node:{id}"))).collect();
        let values: Vec<Option<String>> = c.mget(keys).await?;
        Ok(ids.into_iter().zip(values).collect())
    }

    /// The entry of relay `id`, if it is alive.
    pub async fn node(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.get(self.key(&format!("node:{id}"))).await?)
    }

    /// The relays serving `name`, with their member counts.
    pub async fn routes(&self, name: &str) -> Result<HashMap<String, u32>, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.hgetall(self.key(&format!("rt:{name}"))).await?)
    }

    /// Every routed name.
    pub async fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.smembers(self.key("names")).await?)
    }

    /// How many names `relay` routes.
    pub async fn name_count(&self, relay: &str) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.scard(self.key(&format!("names:{relay}"))).await?)
    }

    /// The owner record of `name`.
    pub async fn owner(&self, name: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.hgetall(self.key(&format!("own:{name}"))).await?)
    }

    /// The TCP port a client had for `local_port`, if its lease is still there.
    pub async fn leased_port(&self, owner: &str, instance: &str, local_port: u16) -> Result<Option<u16>, StoreError> {
        let mut c = self.conn().await?;
        let port: Option<String> = c.get(self.lease_key(owner, instance, local_port)).await?;
        Ok(port.and_then(|p| p.parse().ok()))
    }

    /// Adds `id` to the cluster's revocations and tells every relay.
    pub async fn revoke(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        c.sadd::<_, _, ()>(self.key("revoked"), id).await?;
        c.publish::<_, _, ()>(self.events(), format!("revoke {id}")).await?;
        Ok(())
    }

    /// Every revoked id.
    pub async fn revoked(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        Ok(c.smembers(self.key("revoked")).await?)
    }

    /// Announces `message` on the events channel.
    pub async fn publish(&self, message: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        c.publish::<_, _, ()>(self.events(), message).await?;
        Ok(())
    }

    /// Adds this relay's uncounted bytes to tokens' volume totals and reads the totals back,
    /// in one round trip. Each entry: the token id, its period's first second, the bytes, and
    /// how long the total must outlive now (the rest of the period, plus a day).
    pub async fn add_volumes(&self, adds: &[(String, u64, u64, u64)]) -> Result<Vec<u64>, StoreError> {
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for (token, start, bytes, keep) in adds {
            let key = self.key(&format!("vol:{token}:{start}"));
            pipe.incr(&key, *bytes).expire(&key, (*keep).min(i64::MAX as u64) as i64).ignore();
        }
        Ok(pipe.query_async(&mut c).await?)
    }
}
