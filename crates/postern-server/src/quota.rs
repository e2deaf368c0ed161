//! Per-token quotas: tunnels, concurrent streams, bandwidth, request rate, and (counted in
//! [`crate::volume`]) bytes per period.
//!
//! Every session opened with the same token shares one [`TokenQuota`], so a tenant cannot get
//! around a limit by opening more connections. Buckets use tokio's clock, so tests can pause it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postern_proto::token::Limits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::auth::Identity;
use crate::volume::{TokenVolume, Volumes};

/// A token bucket: `rate` units per second, holding at most `burst`.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self { rate: rate.max(1) as f64, burst, state: Mutex::new((burst, Instant::now())) }
    }

    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
    }

    /// Takes `n` units, going into debt if needed; returns how long the caller should wait
    /// before using them (zero when they were there).
    pub fn take(&self, n: u64) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        s.0 -= n as f64;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }

    /// Takes `n` units only if they are there now.
    pub fn try_take(&self, n: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s);
        if s.0 >= n as f64 {
            s.0 -= n as f64;
            true
        } else {
            false
        }
    }
}

/// The live quota state of one token.
#[derive(Debug)]
pub struct TokenQuota {
    /// The token's limits.
    pub limits: Limits,
    tunnels: AtomicU32,
    streams: Option<Arc<Semaphore>>,
    /// Bytes toward the local service.
    pub bandwidth_in: Option<Bucket>,
    /// Bytes toward the public.
    pub bandwidth_out: Option<Bucket>,
    requests: Option<Bucket>,
    /// Bytes per period, shared with every other session of the token.
    pub volume: Option<Arc<TokenVolume>>,
}

/// Which quota a refusal hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// Too many tunnels.
    #[error("the token's tunnel quota ({0}) is used up")]
    Tunnels(u32),
    /// Too many concurrent streams.
    #[error("the token's concurrent stream quota ({0}) is used up")]
    Streams(u32),
    /// Too many requests per second.
    #[error("the token's request rate quota ({0}/s) is exceeded")]
    RequestRate(u32),
    /// The volume for this period is used up.
    #[error("the token's volume quota ({bytes} bytes this period) is used up until {resets_at} (Unix time)")]
    Volume {
        /// Bytes per period.
        bytes: u64,
        /// When the period ends, Unix seconds.
        resets_at: u64,
    },
}

impl TokenQuota {
    fn new(limits: Limits, volume: Option<Arc<TokenVolume>>) -> Self {
        Self {
            volume,
            limits,
            tunnels: AtomicU32::new(0),
            streams: limits.max_streams.map(|n| Arc::new(Semaphore::new(n as usize))),
            bandwidth_in: limits.bandwidth.map(|b| Bucket::new(b, b)),
            bandwidth_out: limits.bandwidth.map(|b| Bucket::new(b, b)),
            requests: limits.requests_per_sec.map(|r| Bucket::new(u64::from(r), u64::from(r))),
        }
    }

    /// Reserves one tunnel; the guard gives it back.
    pub fn add_tunnel(self: &Arc<Self>) -> Result<TunnelSlot, QuotaExceeded> {
        let max = self.limits.max_tunnels.unwrap_or(u32::MAX);
        self.tunnels
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map_err(|_| QuotaExceeded::Tunnels(max))?;
        Ok(TunnelSlot(self.clone()))
    }

    /// Tunnels held now.
    pub fn tunnels(&self) -> u32 {
        self.tunnels.load(Ordering::SeqCst)
    }

    /// Admits one stream, or says which quota is full. The permit ends it.
    pub fn admit_stream(&self) -> Result<Option<OwnedSemaphorePermit>, QuotaExceeded> {
        match &self.streams {
            None => Ok(None),
            Some(s) => s
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| QuotaExceeded::Streams(self.limits.max_streams.unwrap_or(0))),
        }
    }

    /// Admits one stream against the volume quota.
    pub fn admit_volume(&self) -> Result<(), QuotaExceeded> {
        self.volume.as_ref().map_or(Ok(()), |v| v.check())
    }

    /// Admits one HTTP request against the rate quota.
    pub fn admit_request(&self) -> Result<(), QuotaExceeded> {
        match &self.requests {
            Some(b) if !b.try_take(1) => Err(QuotaExceeded::RequestRate(self.limits.requests_per_sec.unwrap_or(0))),
            _ => Ok(()),
        }
    }
}

/// One tunnel counted against a token's quota until dropped.
#[derive(Debug)]
pub struct TunnelSlot(Arc<TokenQuota>);

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The quotas of every token in use, by token id.
#[derive(Debug, Default)]
pub struct Quotas {
    by_token: Mutex<HashMap<String, Weak<TokenQuota>>>,
    volumes: Arc<Volumes>,
}

impl Quotas {
    /// Quotas whose volumes are counted in `volumes`.
    pub fn new(volumes: Arc<Volumes>) -> Self {
        Self { by_token: Mutex::default(), volumes }
    }

    /// The shared quota state of the token behind `identity`; `None` for the shared token, and
    /// for tokens that limit nothing.
    pub fn for_identity(&self, identity: &Identity) -> Option<Arc<TokenQuota>> {
        let claims = identity.claims.as_ref()?;
        self.get(identity.token_id.as_deref().unwrap_or(&claims.jti), claims.limits)
    }

    /// The shared quota state for token `id` with `limits`; `None` when nothing is limited.
    pub fn get(&self, id: &str, limits: Limits) -> Option<Arc<TokenQuota>> {
        if limits.is_unlimited() {
            return None;
        }
        let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = map.get(id).and_then(Weak::upgrade) {
            return Some(q);
        }
        // Forget tokens nobody uses any more before adding one.
        map.retain(|_, w| w.strong_count() > 0);
        let volume = limits.volume.map(|v| self.volumes.get(id, v));
        let q = Arc::new(TokenQuota::new(limits, volume));
        map.insert(id.to_string(), Arc::downgrade(&q));
        Some(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_and_refills() {
        let b = Bucket::new(1000, 1000);
        assert_eq!(b.take(1000), Duration::ZERO);
        assert_eq!(b.take(500), Duration::from_millis(500));
        assert!(!b.try_take(1));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(b.try_take(900));
    }

    #[test]
    fn tunnel_and_stream_quotas() {
        let quotas = Quotas::default();
        let limits = Limits { max_tunnels: Some(1), max_streams: Some(2), ..Limits::default() };
        let q = quotas.get("t", limits).expect("limited");
        let slot = q.add_tunnel().expect("first");
        assert_eq!(q.add_tunnel().err(), Some(QuotaExceeded::Tunnels(1)));
        drop(slot);
        assert!(q.add_tunnel().is_ok());
        let a = q.admit_stream().expect("1");
        let b = q.admit_stream().expect("2");
        assert_eq!(q.admit_stream().err(), Some(QuotaExceeded::Streams(2)));
        drop((a, b));
        assert!(q.admit_stream().is_ok());
        // Same token id, same state.
        assert!(Arc::ptr_eq(&q, &quotas.get("t", limits).expect("limited")));
        assert!(quotas.get("u", Limits::default()).is_none());
    }
}
