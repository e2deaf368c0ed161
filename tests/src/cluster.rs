//! A test cluster: a real `redis-server` and several in-process relays joined to it, relay `i`
//! with id `r<i>` and its TCP tunnel ports on `127.0.0.<i+1>` (so every relay can hold its
//! copy of a port P on one machine), sharing one secret and one token signing key.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use postern_client::AgentConfig;
use postern_proto::token::TokenKey;
use postern_proto::TunnelSpec;
use postern_server::RelayConfig;
use postern_transport::tls::Trust;

use crate::redis::TestRedis;
use crate::{TestRelay, PATIENCE};

/// How soon a relay that stops refreshing its entry counts as dead, in tests.
pub const NODE_TTL: Duration = Duration::from_millis(1500);

/// Redis and the relays of a test cluster.
#[derive(Debug)]
pub struct TestCluster {
    /// The directory.
    pub redis: TestRedis,
    /// The relays, `r0`, `r1`, …
    pub relays: Vec<TestRelay>,
    /// The cluster secret.
    pub secret: String,
    /// The shared token signing key.
    pub key: TokenKey,
}

/// Makes `config` relay `i` of the cluster at `url` with `secret` and `key`.
pub fn join(config: &mut RelayConfig, url: &str, secret: &str, key: &TokenKey, i: usize) {
    config.cluster = Some(url.to_string());
    config.cluster_secret = Some(secret.into());
    config.relay_id = Some(format!("r{i}"));
    config.cluster_node_ttl = NODE_TTL;
    config.token_key = Some(key.clone());
    config.admin_token = Some("root".into());
    config.tcp_bind = IpAddr::from([127, 0, 0, i as u8 + 1]).into();
}

impl TestCluster {
    /// `n` relays and a fresh Redis.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::with(n, |_, _| {}).await
    }

    /// `n` relays whose settings `edit` adjusts (given the relay's index).
    pub async fn with(n: usize, edit: impl Fn(usize, &mut RelayConfig)) -> anyhow::Result<Self> {
        Self::build(n, false, edit).await
    }

    /// `n` relays, the first with a bore endpoint ([`TestRelay::with_bore`]: its TCP ports are
    /// on the bore endpoint's loopback address).
    pub async fn with_bore(n: usize) -> anyhow::Result<Self> {
        Self::build(n, true, |_, _| {}).await
    }

    async fn build(n: usize, bore: bool, edit: impl Fn(usize, &mut RelayConfig)) -> anyhow::Result<Self> {
        let redis = TestRedis::start().await?;
        let secret = format!("{:032x}", rand::random::<u128>());
        let key = TokenKey::from_bytes(rand::random());
        let mut relays = Vec::new();
        for i in 0..n {
            let url = redis.url();
            let relay = if bore && i == 0 {
                TestRelay::with_bore(|c| {
                    let bind = c.tcp_bind;
                    join(c, &url, &secret, &key, i);
                    c.tcp_bind = bind;
                    edit(i, c)
                })
                .await?
            } else {
                TestRelay::with_config(|c| {
                    join(c, &url, &secret, &key, i);
                    edit(i, c)
                })
                .await?
            };
            relays.push(relay);
        }
        let cluster = Self { redis, relays, secret, key };
        cluster.settled(n).await?;
        Ok(cluster)
    }

    /// Waits until every relay reaches the directory and sees `n` live relays.
    pub async fn settled(&self, n: usize) -> anyhow::Result<()> {
        for relay in &self.relays {
            wait_relays(relay, |v| v["store"] == "up" && live(v) == n).await?;
        }
        Ok(())
    }

    /// Relay `i`.
    pub fn relay(&self, i: usize) -> &TestRelay {
        &self.relays[i]
    }

    /// An agent config for `tunnels` that connects to the relays `at` (in that order) and
    /// trusts each one's development CA.
    pub fn agent_config(&self, token: &str, tunnels: Vec<TunnelSpec>, at: &[usize]) -> AgentConfig {
        let mut cfg = self.relays[at[0]].agent_config(token, tunnels);
        let servers: Vec<String> =
            at.iter().map(|&i| format!("localhost:{}", self.relays[i].control_addr.port())).collect();
        cfg.server = servers.join(",");
        cfg.trust = Trust::CaFiles(at.iter().map(|&i| self.relays[i].ca.clone()).collect());
        cfg
    }

    /// A signed token for `subject` allowed the ids `ids`, valid on every relay.
    pub fn mint(&self, subject: &str, ids: &[&str]) -> String {
        self.relays[0].mint(subject, ids, false)
    }
}

/// How many relays `GET /api/v1/relays` lists as up.
pub fn live(v: &serde_json::Value) -> usize {
    v["relays"].as_array().map_or(0, |a| a.iter().filter(|r| r["up"] == true).count())
}

/// Polls `GET /api/v1/relays` on `relay` until `pred` holds; returns the last answer.
pub async fn wait_relays(
    relay: &TestRelay,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, v) = crate::http::admin_json(relay, http::Method::GET, "/api/v1/relays", Some("root")).await?;
        if pred(&v) {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow::anyhow!("relays never reached the expected state: {v}")).context("wait_relays");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
