//! Name leases: after a session ends, its names and public TCP ports stay reserved for the same
//! owner for a grace period (default 60 s), so a reconnecting client gets the same URLs back and
//! nobody else can take them in between.
//!
//! - An HTTP tunnel's name (`<id>-<port>`, and its bare `<id>` alias) is leased to its owner.
//! - A TCP tunnel's public port is leased to (owner, client id, local port): the same client
//!   asking again for a tunnel to the same local port gets the same public port. While leased,
//!   the port is closed (public connections are refused, not queued) but not handed to anyone
//!   else.
//!
//! Leases are kept in `<state-dir>/leases.json` when a state directory is set, so they survive a
//! relay restart: clients reconnecting to the restarted relay get their URLs back. The file is
//! written by [`Leases::keep_persisted`] off the runtime's threads: the first change after a
//! quiet spell at once, then at most every [`PERSIST_EVERY`], and by [`Leases::flush`] when the
//! relay stops. Writing the whole table on every change, under its lock, made registering N
//! agents cost O(N²): 60 % of the relay's CPU while 6,000 agents connected (issue #16).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

/// File name inside the state directory.
pub const FILE: &str = "leases.json";

/// Lease changes are written at most this often: a burst of them (thousands of clients
/// reconnecting after a restart) is one write, not one each.
pub const PERSIST_EVERY: Duration = Duration::from_millis(250);

/// One reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it.
    pub owner: String,
    /// For a TCP port: the client id and local port it was serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<(String, u16)>,
    /// Unix milliseconds; `0` while the tunnel is live (the lease starts when it ends).
    pub until_ms: u64,
}

/// What a reservation attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Free, or held by the same owner.
    Granted,
    /// Held by someone else for this long.
    Held(Duration),
}

/// All leases, by key (`http:<name>` or `tcp:<port>`).
#[derive(Debug)]
pub struct Leases {
    grace: Duration,
    path: Option<PathBuf>,
    map: Mutex<HashMap<String, Lease>>,
    /// Signalled on every change while a state directory is set.
    changed: tokio::sync::Notify,
    /// Held while the file is written, so two writers never interleave.
    writing: Mutex<()>,
}

impl Leases {
    /// Leases lasting `grace`, persisted in `state_dir` if given.
    pub fn new(grace: Duration, state_dir: Option<&Path>) -> Self {
        let path = state_dir.map(|d| d.join(FILE));
        let map = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<HashMap<String, Lease>>(&b).ok())
            .unwrap_or_default();
        // After a restart every live tunnel is gone: their leases start now.
        let now = crate::clock::unix_ms();
        let map = map
            .into_iter()
            .map(|(k, mut l)| {
                if l.until_ms == 0 {
                    l.until_ms = now + grace.as_millis() as u64;
                }
                (k, l)
            })
            .filter(|(_, l)| l.until_ms > now)
            .collect();
        Self { grace, path, map: Mutex::new(map), changed: tokio::sync::Notify::new(), writing: Mutex::new(()) }
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    fn check(map: &HashMap<String, Lease>, key: &str, owner: &str) -> Claim {
        match map.get(key) {
            Some(l) if l.owner != owner && (l.until_ms == 0 || l.until_ms > crate::clock::unix_ms()) => {
                Claim::Held(Duration::from_millis(l.until_ms.saturating_sub(crate::clock::unix_ms())))
            }
            _ => Claim::Granted,
        }
    }

    /// May `owner` take HTTP name `name`?
    pub fn check_name(&self, name: &str, owner: &str) -> Claim {
        Self::check(&self.map.lock().unwrap_or_else(|p| p.into_inner()), &format!("http:{name}"), owner)
    }

    /// May `owner` take public port `port`?
    pub fn check_port(&self, port: u16, owner: &str) -> Claim {
        Self::check(&self.map.lock().unwrap_or_else(|p| p.into_inner()), &format!("tcp:{port}"), owner)
    }

    /// The port leased to this owner's client for `local_port`, if any.
    pub fn port_for(&self, owner: &str, client_id: &str, local_port: u16) -> Option<u16> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::clock::unix_ms();
        map.iter()
            .filter(|(_, l)| l.owner == owner && (l.until_ms == 0 || l.until_ms > now))
            .find(|(_, l)| l.tcp.as_ref().is_some_and(|(c, p)| c == client_id && *p == local_port))
            .and_then(|(k, _)| k.strip_prefix("tcp:")?.parse().ok())
    }

    /// True when `port` is leased to anyone (the allocator skips it).
    pub fn port_leased(&self, port: u16) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&format!("tcp:{port}")).is_some_and(|l| l.until_ms == 0 || l.until_ms > crate::clock::unix_ms())
    }

    /// Records a live HTTP name (held until released, then for the grace period).
    pub fn hold_name(&self, name: &str, owner: &str) {
        self.hold(format!("http:{name}"), Lease { owner: owner.into(), tcp: None, until_ms: 0 });
    }

    /// Records a live TCP port.
    pub fn hold_port(&self, port: u16, owner: &str, client_id: &str, local_port: u16) {
        let lease = Lease { owner: owner.into(), tcp: Some((client_id.into(), local_port)), until_ms: 0 };
        self.hold(format!("tcp:{port}"), lease);
    }

    fn hold(&self, key: String, lease: Lease) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, lease);
        self.changed();
    }

    /// The tunnel ended: its name or port stays reserved for the grace period.
    pub fn release_name(&self, name: &str) {
        self.release(&format!("http:{name}"));
    }

    /// The tunnel ended: its port stays reserved for the grace period.
    pub fn release_port(&self, port: u16) {
        self.release(&format!("tcp:{port}"));
    }

    /// A reservation that was never promised to its client (its session was refused): it
    /// goes at once, leaving nothing reserved.
    pub fn forget(&self, name: &str, port: Option<u16>) {
        let key = match port {
            Some(port) => format!("tcp:{port}"),
            None => format!("http:{name}"),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(&key).is_some() {
            self.changed();
        }
    }

    fn release(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let until = crate::clock::unix_ms() + self.grace.as_millis() as u64;
        if let Some(l) = map.get_mut(key) {
            l.until_ms = until;
        }
        let now = crate::clock::unix_ms();
        map.retain(|_, l| l.until_ms == 0 || l.until_ms > now);
        self.changed();
    }

    fn changed(&self) {
        if self.path.is_some() {
            self.changed.notify_one();
        }
    }

    /// Writes the leases whenever they change (see the module doc), for as long as it runs:
    /// spawn it for the relay's life, then abort it and [`flush`](Self::flush).
    pub async fn keep_persisted(self: Arc<Self>) {
        if self.path.is_none() {
            return;
        }
        loop {
            self.changed.notified().await;
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.flush()).await;
            tokio::time::sleep(PERSIST_EVERY).await;
        }
    }

    /// Writes the leases now (a blocking file write).
    pub fn flush(&self) {
        let Some(path) = &self.path else { return };
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = serde_json::to_vec(&*self.map.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            warn!(error = %e, path = %path.display(), "could not persist leases");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports_stay_with_their_owner() {
        let leases = Leases::new(Duration::from_secs(60), None);
        leases.hold_name("app-3000", "alice");
        assert_eq!(leases.check_name("app-3000", "alice"), Claim::Granted);
        assert!(matches!(leases.check_name("app-3000", "mallory"), Claim::Held(_)));
        leases.release_name("app-3000");
        assert!(matches!(leases.check_name("app-3000", "mallory"), Claim::Held(d) if d > Duration::from_secs(50)));
        leases.hold_port(20001, "alice", "laptop", 5432);
        leases.release_port(20001);
        assert_eq!(leases.port_for("alice", "laptop", 5432), Some(20001));
        assert_eq!(leases.port_for("alice", "laptop", 5433), None);
        assert!(leases.port_leased(20001));
        assert!(matches!(leases.check_port(20001, "bob"), Claim::Held(_)));
        let short = Leases::new(Duration::ZERO, None);
        short.hold_name("x", "alice");
        short.release_name("x");
        assert_eq!(short.check_name("x", "bob"), Claim::Granted);
    }

    #[test]
    fn survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("postern-leases-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        {
            let leases = Leases::new(Duration::from_secs(60), Some(&dir));
            leases.hold_port(20002, "alice", "laptop", 22);
            leases.hold_name("web-80", "alice");
            leases.flush();
        }
        // The relay stopped with both tunnels live.
        let leases = Leases::new(Duration::from_secs(60), Some(&dir));
        assert_eq!(leases.port_for("alice", "laptop", 22), Some(20002));
        assert!(matches!(leases.check_name("web-80", "bob"), Claim::Held(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn changes_reach_the_file_without_a_flush() {
        let dir = std::env::temp_dir().join(format!("postern-leases-bg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let leases = Arc::new(Leases::new(Duration::from_secs(60), Some(&dir)));
        let writer = tokio::spawn(leases.clone().keep_persisted());
        // A burst of changes, then one more after the writer has had its pause.
        for i in 0..100 {
            leases.hold_name(&format!("web-{i}"), "alice");
        }
        let on_disk = || Leases::new(Duration::from_secs(60), Some(&dir));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while on_disk().check_name("web-99", "bob") == Claim::Granted {
            assert!(std::time::Instant::now() < deadline, "the burst never reached the file");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        leases.hold_name("late", "alice");
        while on_disk().check_name("late", "bob") == Claim::Granted {
            assert!(std::time::Instant::now() < deadline, "a later change never reached the file");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
