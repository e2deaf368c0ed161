//! A tunnel's recent history, for graphs: one [`Point`] every [`EVERY`] (5 s), up to [`POINTS`]
//! of them (an hour), each the change of the tunnel's counters over its interval.
//!
//! One relay-wide task ([`run`]) samples every tunnel. Memory has a fixed cap: at most
//! [`BUDGET`] points over all tunnels (16 MiB at 64 bytes a point), so when more than
//! `BUDGET / POINTS` (364) tunnels are up, each keeps a shorter history, evenly. A tunnel's
//! history goes with it. After each round the registry tells watchers (the SSE stream's
//! `traffic` events) that new points are there.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use super::stats::StatsSnapshot;

/// How often a point is taken.
pub const EVERY: Duration = Duration::from_secs(5);
/// Points kept per tunnel: an hour at [`EVERY`].
pub const POINTS: usize = 720;
/// Points kept over all tunnels of the relay.
pub const BUDGET: usize = 262_144;

/// What one tunnel did during one interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval, Unix milliseconds.
    pub t: u64,
    /// Streams opened (HTTP requests, TCP connections).
    pub requests: u32,
    /// Bytes toward the local service.
    pub bytes_in: u64,
    /// Bytes toward the public.
    pub bytes_out: u64,
    /// Streams open at the end of the interval.
    pub active: u32,
    /// HTTP requests answered, by status class `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub status: [u32; 5],
    /// Their mean time to response headers, in ms; `null` when none was answered.
    pub latency_ms: Option<f32>,
}

/// The points of one tunnel, oldest first.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    points: VecDeque<Point>,
    last: StatsSnapshot,
}

fn delta(now: u64, before: u64) -> u32 {
    u32::try_from(now.saturating_sub(before)).unwrap_or(u32::MAX)
}

impl History {
    /// Adds the point from the last sample (or the tunnel's start) to `now`, whose counters
    /// are `stats`, keeping the newest `keep` points.
    pub fn sample(&self, t: u64, stats: StatsSnapshot, keep: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let last = inner.last;
        let status: [u32; 5] = std::array::from_fn(|i| delta(stats.answered[i], last.answered[i]));
        let answered: u64 = status.iter().map(|&n| u64::from(n)).sum();
        let latency_us = stats.latency_us.saturating_sub(last.latency_us);
        // Room for the new point within the share, allocated exactly (not doubled past it:
        // the budget counts allocated points), so a full history never reallocates.
        let len = inner.points.len();
        let excess = (len + 1).saturating_sub(keep).min(len);
        inner.points.drain(..excess);
        if inner.points.capacity() > keep.max(1) {
            inner.points.shrink_to(keep.max(1));
        }
        let len = inner.points.len();
        if len >= inner.points.capacity() {
            inner.points.reserve_exact(keep.max(1) - len);
        }
        inner.points.push_back(Point {
            t,
            requests: delta(stats.requests, last.requests),
            bytes_in: stats.bytes_in.saturating_sub(last.bytes_in),
            bytes_out: stats.bytes_out.saturating_sub(last.bytes_out),
            active: u32::try_from(stats.active_streams).unwrap_or(u32::MAX),
            status,
            latency_ms: (answered > 0).then(|| (latency_us as f64 / answered as f64 / 1000.0) as f32),
        });
        inner.last = stats;
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).points.iter().copied().collect()
    }

    /// The newest point.
    pub fn last(&self) -> Option<Point> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).points.back().copied()
    }
}

/// How many points each of `tunnels` tunnels may keep.
pub fn share(tunnels: usize) -> usize {
    POINTS.min(BUDGET / tunnels.max(1)).max(1)
}

/// Samples every tunnel of `registry` every `every`, until `shutdown`.
pub async fn run(registry: Arc<Registry>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = crate::clock::unix_ms();
        let tunnels = registry.tunnels();
        let keep = share(tunnels.len());
        for tunnel in tunnels {
            tunnel.history.sample(t, tunnel.stats.snapshot(), keep);
        }
        registry.sampled(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, bytes_in: u64, answered: [u64; 5], latency_us: u64) -> StatsSnapshot {
        StatsSnapshot { requests, bytes_in, answered, latency_us, ..Default::default() }
    }

    #[test]
    fn each_point_is_the_change_over_its_interval() {
        let h = History::default();
        h.sample(5_000, stats(3, 100, [0, 2, 0, 1, 0], 3_000), POINTS);
        h.sample(10_000, stats(3, 100, [0, 2, 0, 1, 0], 3_000), POINTS);
        h.sample(15_000, stats(7, 1_100, [0, 5, 0, 1, 1], 11_000), POINTS);
        let p = h.points();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].t, p[0].requests, p[0].bytes_in, p[0].status), (5_000, 3, 100, [0, 2, 0, 1, 0]));
        assert_eq!(p[0].latency_ms, Some(1.0));
        assert_eq!((p[1].requests, p[1].bytes_in, p[1].latency_ms), (0, 0, None));
        assert_eq!((p[2].requests, p[2].bytes_in, p[2].status), (4, 1_000, [0, 3, 0, 0, 1]));
        assert_eq!(p[2].latency_ms, Some(2.0));
    }

    #[test]
    fn the_oldest_points_go_first_and_the_budget_is_shared() {
        let h = History::default();
        for i in 1..=(POINTS as u64 + 10) {
            h.sample(i, stats(i, 0, [0; 5], 0), POINTS);
        }
        let p = h.points();
        assert_eq!((p.len(), p[0].t, p[POINTS - 1].t), (POINTS, 11, POINTS as u64 + 10));
        let capacity = || h.inner.lock().unwrap().points.capacity();
        assert_eq!(capacity(), POINTS, "allocated past the share");
        h.sample(0, stats(0, 0, [0; 5], 0), 10);
        assert_eq!((h.points().len(), capacity()), (10, 10));
        assert_eq!(share(1), POINTS);
        assert_eq!(share(364), POINTS);
        assert_eq!(share(1_000), BUDGET / 1_000);
        assert_eq!(share(1_000_000), 1);
        // The cap holds for any number of tunnels up to the budget, at 64 bytes a point.
        assert!(std::mem::size_of::<Point>() <= 64, "{}", std::mem::size_of::<Point>());
        for n in [1, 10, 364, 365, 5_000, 100_000] {
            assert!(n * share(n) <= BUDGET, "{n} tunnels");
        }
    }
}
