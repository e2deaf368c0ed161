//! Per-source-address limits: concurrent connections per IP on every listener, and a lockout
//! for addresses that keep failing authentication.
//!
//! The tables are bounded: past 65 536 tracked addresses, stale entries are dropped first, and
//! if every entry is live, new failures are not tracked (connections are still capped).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

/// Connection and failure accounting by source address.
#[derive(Debug)]
pub struct IpLimits {
    per_ip: AtomicUsize,
    max_failures: AtomicU32,
    window: Duration,
    block: Duration,
    conns: DashMap<IpAddr, usize>,
    failures: DashMap<IpAddr, Failures>,
}

/// One connection counted against its address until dropped.
#[derive(Debug)]
pub struct IpPermit {
    limits: Arc<IpLimits>,
    ip: IpAddr,
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        self.limits.conns.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl IpLimits {
    /// At most `per_ip` connections per address; `max_failures` authentication failures within
    /// `window` block the address for `block`.
    pub fn new(per_ip: usize, max_failures: u32, window: Duration, block: Duration) -> Arc<Self> {
        Arc::new(Self {
            per_ip: AtomicUsize::new(per_ip),
            max_failures: AtomicU32::new(max_failures),
            window,
            block,
            conns: DashMap::new(),
            failures: DashMap::new(),
        })
    }

    /// Changes the limits (reload); connections over a lowered cap stay, new ones wait.
    pub fn set_limits(&self, per_ip: usize, max_failures: u32) {
        self.per_ip.store(per_ip, Ordering::Relaxed);
        self.max_failures.store(max_failures, Ordering::Relaxed);
    }

    /// Counts a new connection from `ip`, or `None` when the address is at its cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpPermit> {
        let mut n = self.conns.entry(ip).or_insert(0);
        if *n >= self.per_ip.load(Ordering::Relaxed) {
            return None;
        }
        *n += 1;
        drop(n);
        Some(IpPermit { limits: self.clone(), ip })
    }

    /// True while `ip` is locked out after too many failures.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.failures.get(&ip).and_then(|f| f.blocked_until).is_some_and(|until| Instant::now() < until)
    }

    /// Records an authentication failure from `ip`.
    pub fn auth_failed(&self, ip: IpAddr) {
        let now = Instant::now();
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
            self.failures.retain(|_, f| {
                now.saturating_duration_since(f.window_start) < self.window || f.blocked_until.is_some_and(|u| now < u)
            });
            if self.failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let mut f = self.failures.entry(ip).or_insert(Failures { count: 0, window_start: now, blocked_until: None });
        if now.saturating_duration_since(f.window_start) >= self.window {
            *f = Failures { count: 0, window_start: now, blocked_until: None };
        }
        f.count += 1;
        if f.count >= self.max_failures.load(Ordering::Relaxed) {
            f.blocked_until = Some(now + self.block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn caps_and_lockout() {
        let limits = IpLimits::new(2, 3, Duration::from_secs(60), Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let a = limits.admit(ip).expect("1");
        let _b = limits.admit(ip).expect("2");
        assert!(limits.admit(ip).is_none());
        assert!(limits.admit("192.0.2.2".parse().expect("ip")).is_some());
        drop(a);
        assert!(limits.admit(ip).is_some());

        for _ in 0..2 {
            limits.auth_failed(ip);
        }
        assert!(!limits.blocked(ip));
        limits.auth_failed(ip);
        assert!(limits.blocked(ip));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!limits.blocked(ip));
    }
}
