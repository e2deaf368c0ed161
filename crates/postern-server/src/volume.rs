//! Volume quotas: how many bytes a token's tunnels may move per UTC day or month (the claim
//! `limits.volume`, [`postern_proto::volume`]), counted across every session, tunnel and relay
//! of the token, and kept across restarts.
//!
//! - **Counting.** Every byte through a tunnel, both directions, is shown to the token's
//!   [`TokenVolume`] before it moves on ([`TokenVolume::charge`]); the count never passes the
//!   volume. What is left of the chunk that reaches it does not pass: the transfer is cut.
//! - **Admission.** A token at its volume gets no new stream ([`TokenVolume::check`]): HTTP
//!   answers `429 quota-exceeded`, a TCP connection is closed at once.
//! - **Periods.** Calendar periods in UTC; the count starts over at the first second of the
//!   next one (checked on admission and every [`TICK`]).
//! - **Persistence.** `volume.json` in the state directory holds each token's period and count,
//!   written within [`PERSIST_EVERY`] of a change and when the relay stops. A crash forgets at
//!   most that much counting, in the visitors' favour.
//! - **Cluster.** Every [`TICK`] each relay adds what it counted to the token's total in the
//!   directory (`{pst}:vol:<token>:<period start>`) and takes the cluster's total back, in one
//!   round trip for all tokens. Tunnels of one token on several relays can overshoot its volume
//!   by what they move in one tick. While the directory is down each relay goes on counting
//!   locally and adds its counts when it is back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_proto::volume::{Period, Volume};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::clock::{rfc3339_secs, unix_secs};
use crate::cluster::Cluster;
use crate::metrics::RelayMetrics;
use crate::quota::QuotaExceeded;

/// How often periods are rolled over, the cluster's totals synced and the metrics updated.
pub const TICK: Duration = Duration::from_secs(1);
/// Longest a change waits before it is written to the state directory.
pub const PERSIST_EVERY: Duration = Duration::from_secs(5);
/// The state directory's file.
pub const FILE: &str = "volume.json";

/// One token's count for its current period.
#[derive(Debug)]
pub struct TokenVolume {
    /// The token's id.
    pub id: String,
    /// Its volume.
    pub volume: Volume,
    /// First second of the period being counted.
    start: AtomicU64,
    /// Bytes counted this period (the cluster's total plus what this relay has not added yet).
    used: AtomicU64,
    /// Bytes this relay counted and has not added to the cluster's total.
    unsynced: AtomicU64,
}

/// A token's volume and what it has used, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes per period.
    pub bytes: u64,
    /// `day` or `month`.
    pub period: Period,
    /// Bytes moved this period, both directions.
    pub used: u64,
    /// The period's start, RFC 3339.
    pub period_start: String,
    /// When the count starts over, RFC 3339.
    pub resets_at: String,
}

impl TokenVolume {
    fn new(id: &str, volume: Volume, start: u64, used: u64) -> Self {
        Self {
            id: id.to_string(),
            volume,
            start: AtomicU64::new(start),
            used: AtomicU64::new(used.min(volume.bytes)),
            unsynced: AtomicU64::new(0),
        }
    }

    /// Counts up to `n` bytes and returns how many may pass: all of them, or what is left of
    /// the volume.
    pub fn charge(&self, n: u64) -> u64 {
        let limit = self.volume.bytes;
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let pass = n.min(limit.saturating_sub(used));
            if pass == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(used, used + pass, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.unsynced.fetch_add(pass, Ordering::Relaxed);
                    return pass;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Lets a new stream in, unless the volume is used up for this period.
    pub fn check(&self) -> Result<(), QuotaExceeded> {
        let now = unix_secs();
        self.roll(now);
        if self.used.load(Ordering::Relaxed) < self.volume.bytes {
            return Ok(());
        }
        let (_, end) = self.volume.period.window(now);
        Err(QuotaExceeded::Volume { bytes: self.volume.bytes, resets_at: end })
    }

    /// Starts the count over if `now` is past its period; true if it did.
    fn roll(&self, now: u64) -> bool {
        let (start, _) = self.volume.period.window(now);
        let old = self.start.load(Ordering::Relaxed);
        if start <= old || self.start.compare_exchange(old, start, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        self.used.store(0, Ordering::Relaxed);
        self.unsynced.store(0, Ordering::Relaxed);
        true
    }

    /// The count as the API shows it.
    pub fn usage(&self) -> Usage {
        let start = self.start.load(Ordering::Relaxed);
        let (_, end) = self.volume.period.window(start);
        usage(self.volume, self.used.load(Ordering::Relaxed), start, end)
    }
}

fn usage(volume: Volume, used: u64, start: u64, end: u64) -> Usage {
    Usage {
        bytes: volume.bytes,
        period: volume.period,
        used,
        period_start: rfc3339_secs(start),
        resets_at: rfc3339_secs(end),
    }
}

/// A token's count as `volume.json` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    volume: Volume,
    start: u64,
    used: u64,
}

/// Every token's volume count on this relay.
#[derive(Debug, Default)]
pub struct Volumes {
    live: Mutex<HashMap<String, Arc<TokenVolume>>>,
    /// Counts read from the file whose token has not been seen since the relay started.
    saved: Mutex<HashMap<String, Saved>>,
    path: Option<PathBuf>,
    /// What the file holds, to write it only when something changed.
    written: Mutex<HashMap<String, Saved>>,
}

impl Volumes {
    /// Counts kept in `state_dir` (read now, if there), or only in memory.
    pub fn new(state_dir: Option<&Path>) -> Self {
        let path = state_dir.map(|d| d.join(FILE));
        let saved: HashMap<String, Saved> = match path.as_deref().map(std::fs::read) {
            None => HashMap::new(),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Some(Err(e)) => {
                warn!(error = %e, "volume counts could not be read; counting from zero");
                HashMap::new()
            }
            Some(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(error = %e, "volume counts are not valid JSON; counting from zero");
                HashMap::new()
            }),
        };
        Self { live: Mutex::default(), saved: Mutex::new(saved.clone()), path, written: Mutex::new(saved) }
    }

    /// The count of token `id`, whose claim is `volume`; created (from the file, if it kept
    /// this period's count) on first use.
    pub fn get(&self, id: &str, volume: Volume) -> Arc<TokenVolume> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = live.get(id) {
            return v.clone();
        }
        let (start, _) = volume.period.window(unix_secs());
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let used = saved.filter(|s| s.start == start && s.volume.period == volume.period).map_or(0, |s| s.used);
        let v = Arc::new(TokenVolume::new(id, volume, start, used));
        live.insert(id.to_string(), v.clone());
        v
    }

    /// What token `id` with `volume` has used this period (zero if nothing was counted).
    pub fn usage(&self, id: &str, volume: Volume) -> Usage {
        if let Some(v) = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return v.usage();
        }
        let (start, end) = volume.period.window(unix_secs());
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied();
        let used = saved.filter(|s| s.start == start && s.volume.period == volume.period).map_or(0, |s| s.used);
        usage(volume, used, start, end)
    }

    /// Rolls every count into the period of `now`, and forgets tokens that nothing holds and
    /// that have counted nothing this period (dropping their gauges).
    fn roll(&self, now: u64, metrics: Option<&RelayMetrics>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for v in live.values() {
            v.roll(now);
        }
        live.retain(|id, v| {
            let keep = Arc::strong_count(v) > 1 || v.used.load(Ordering::Relaxed) > 0;
            if !keep {
                if let Some(m) = metrics {
                    let _ = m.volume_used.remove_label_values(&[id]);
                    let _ = m.volume_limit.remove_label_values(&[id]);
                }
            }
            keep
        });
        if let Some(m) = metrics {
            for (id, v) in live.iter() {
                m.volume_used.with_label_values(&[id]).set(v.used.load(Ordering::Relaxed) as i64);
                m.volume_limit.with_label_values(&[id]).set(v.volume.bytes as i64);
            }
        }
        // A saved count of a period that is over is worth nothing.
        self.saved.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.volume.period.window(now).0 == s.start);
    }

    /// Adds this relay's counts to the cluster's totals and takes the totals back.
    async fn sync(&self, cluster: &Cluster, now: u64) {
        let live: Vec<Arc<TokenVolume>> =
            self.live.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        if live.is_empty() {
            return;
        }
        let mut adds = Vec::with_capacity(live.len());
        for v in &live {
            let start = v.start.load(Ordering::Relaxed);
            let (_, end) = v.volume.period.window(start);
            let bytes = v.unsynced.swap(0, Ordering::Relaxed);
            adds.push((v.id.clone(), start, bytes, end.saturating_sub(now) + 86_400));
        }
        match cluster.store.add_volumes(&adds).await {
            Ok(totals) => {
                for ((v, (_, start, _, _)), total) in live.iter().zip(&adds).zip(totals) {
                    if v.start.load(Ordering::Relaxed) == *start {
                        let pending = v.unsynced.load(Ordering::Relaxed);
                        v.used.store(total.saturating_add(pending).min(v.volume.bytes), Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "volume counts not added to the cluster's totals; trying again");
                for (v, (_, start, bytes, _)) in live.iter().zip(&adds) {
                    if v.start.load(Ordering::Relaxed) == *start {
                        v.unsynced.fetch_add(*bytes, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Everything worth keeping, as the file holds it.
    fn snapshot(&self) -> HashMap<String, Saved> {
        let mut all = self.saved.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (id, v) in self.live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let (start, used) = (v.start.load(Ordering::Relaxed), v.used.load(Ordering::Relaxed));
            if used > 0 {
                all.insert(id.clone(), Saved { volume: v.volume, start, used });
            }
        }
        all
    }

    /// Writes the counts to the state directory if they changed since the last write.
    pub fn flush(&self) {
        let Some(path) = &self.path else { return };
        let now = self.snapshot();
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written == now {
            return;
        }
        let bytes = serde_json::to_vec(&now).unwrap_or_default();
        match crate::state_file::write_atomic(path, &bytes, false) {
            Ok(()) => *written = now,
            Err(e) => warn!(path = %path.display(), error = %e, "volume counts could not be written"),
        }
    }

    /// Rolls periods, syncs with the cluster and updates the metrics every [`TICK`], and
    /// writes the file every [`PERSIST_EVERY`], until `shutdown`; then writes it once more.
    pub async fn run(
        self: Arc<Self>,
        cluster: Option<Arc<Cluster>>,
        metrics: Arc<RelayMetrics>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_write = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = unix_secs();
            self.roll(now, Some(&metrics));
            if let Some(c) = &cluster {
                if c.store_up() {
                    self.sync(c, now).await;
                }
            }
            if last_write.elapsed() >= PERSIST_EVERY {
                last_write = tokio::time::Instant::now();
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.flush()).await;
            }
        }
        let _ = tokio::task::spawn_blocking(move || self.flush()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB_DAY: Volume = Volume { bytes: 1000, period: Period::Day };

    #[test]
    fn charges_up_to_the_volume_and_no_further() {
        let v = TokenVolume::new("t", GB_DAY, Period::Day.window(unix_secs()).0, 0);
        assert_eq!(v.charge(600), 600);
        assert!(v.check().is_ok());
        assert_eq!(v.charge(600), 400, "only what is left passes");
        assert_eq!(v.charge(1), 0);
        assert!(matches!(v.check(), Err(QuotaExceeded::Volume { bytes: 1000, .. })));
        assert_eq!(v.usage().used, 1000);
        // The next day starts over.
        let tomorrow = unix_secs() + 86_400;
        assert!(v.roll(tomorrow));
        assert!(!v.roll(tomorrow), "once");
        assert_eq!(v.charge(10), 10);
    }

    #[test]
    fn counts_survive_a_restart_within_their_period() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(Some(dir.path()));
        let v = volumes.get("tok", GB_DAY);
        assert_eq!(v.charge(700), 700);
        volumes.flush();
        drop((v, volumes));
        let again = Volumes::new(Some(dir.path()));
        // Shown before the token is used again, then counted on from there.
        assert_eq!(again.usage("tok", GB_DAY).used, 700);
        assert_eq!(again.get("tok", GB_DAY).charge(700), 300);
        // A monthly claim does not inherit a daily count.
        let monthly = Volume { bytes: 1000, period: Period::Month };
        assert_eq!(again.usage("other", monthly).used, 0);
    }

    #[test]
    fn forgets_idle_tokens_of_a_past_period() {
        let volumes = Volumes::default();
        let v = volumes.get("tok", GB_DAY);
        v.charge(5);
        drop(v);
        volumes.roll(unix_secs(), None);
        assert_eq!(volumes.live.lock().unwrap().len(), 1, "kept while its count matters");
        volumes.roll(unix_secs() + 86_400, None);
        volumes.roll(unix_secs() + 86_400, None);
        assert!(volumes.live.lock().unwrap().is_empty());
    }
}
