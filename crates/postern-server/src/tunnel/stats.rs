//! A tunnel's live counters, the meter that counts bytes into them as they move, and the
//! accounting of one open public stream: the one place each is written.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_transport::splice::{Meter, Pace};
use prometheus::IntGauge;

use super::Tunnel;
use crate::metrics::RelayMetrics;

/// Live counters of one tunnel.
#[derive(Debug, Default)]
pub struct TunnelStats {
    active_streams: AtomicI64,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    last_activity_ms: AtomicU64,
    answered: [AtomicU64; 5],
    latency_us: AtomicU64,
}

/// A point-in-time copy of [`TunnelStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Streams (connections, requests) open right now.
    pub active_streams: u64,
    /// Streams opened since registration.
    pub requests: u64,
    /// Bytes from the public toward the local service.
    pub bytes_in: u64,
    /// Bytes from the local service toward the public.
    pub bytes_out: u64,
    /// Last time a stream opened or bytes moved.
    pub last_activity: Option<SystemTime>,
    /// HTTP requests answered, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub answered: [u64; 5],
    /// Their time to response headers, summed, in microseconds.
    pub latency_us: u64,
}

impl TunnelStats {
    /// A stream opened; the returned guard closes it.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.active_streams.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        StreamGuard(self.clone())
    }

    /// Bytes toward the local service.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Bytes toward the public.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// An HTTP request through the tunnel was answered with `status` after `elapsed` (to the
    /// response headers).
    pub fn answered(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.answered[class].fetch_add(1, Ordering::Relaxed);
        self.latency_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn touch(&self) {
        self.last_activity_ms.store(crate::clock::unix_ms(), Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        StatsSnapshot {
            active_streams: self.active_streams.load(Ordering::Relaxed).max(0) as u64,
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            last_activity: (last > 0).then(|| UNIX_EPOCH + Duration::from_millis(last)),
            answered: std::array::from_fn(|i| self.answered[i].load(Ordering::Relaxed)),
            latency_us: self.latency_us.load(Ordering::Relaxed),
        }
    }
}

/// Counts one open stream until dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<TunnelStats>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a public socket's bytes into its tunnel's stats and the metrics: bytes read from the
/// public socket go *in* (toward the local service), bytes written to it go *out*.
#[derive(Debug)]
pub struct TunnelMeter<'a> {
    /// The tunnel.
    pub tunnel: &'a Tunnel,
    /// The relay's metrics.
    pub metrics: &'a RelayMetrics,
    /// `tcp`, `http` or `upgrade`... as a metric label (`upgrade` counts as `http`).
    pub kind: &'static str,
}

impl TunnelMeter<'_> {
    /// Bytes toward the local service: counted against the token's volume (what passes is
    /// counted in the stats), then paced by its bandwidth quota.
    pub fn inbound(&self, n: u64) -> Pace {
        self.count(n, true)
    }

    /// Bytes toward the public, the same way.
    pub fn outbound(&self, n: u64) -> Pace {
        self.count(n, false)
    }

    fn count(&self, n: u64, inbound: bool) -> Pace {
        let quota = self.tunnel.quota.as_deref();
        let pass = quota.and_then(|q| q.volume.as_ref()).map_or(n, |v| v.charge(n));
        let (direction, bucket) = if inbound {
            self.tunnel.stats.add_in(pass);
            ("in", quota.and_then(|q| q.bandwidth_in.as_ref()))
        } else {
            self.tunnel.stats.add_out(pass);
            ("out", quota.and_then(|q| q.bandwidth_out.as_ref()))
        };
        self.metrics.add_bytes(&self.tunnel.info.name, self.kind, direction, pass);
        if pass < n {
            return Pace::Cut(pass);
        }
        Pace::Go(bucket.map_or(Duration::ZERO, |b| b.take(n)))
    }
}

impl Meter for TunnelMeter<'_> {
    fn read(&self, n: u64) -> Pace {
        self.inbound(n)
    }

    fn written(&self, n: u64) -> Pace {
        self.outbound(n)
    }
}

/// One public stream (a TCP connection, an HTTP request, an upgraded connection), counted open
/// in its tunnel's stats and in the metrics until dropped.
#[derive(Debug)]
pub struct StreamCount {
    _stats: StreamGuard,
    active: IntGauge,
}

impl StreamCount {
    /// Counts a stream of `kind` (`tcp`, `http`, `upgrade`) opened on `tunnel`.
    pub fn open(tunnel: &Tunnel, metrics: &RelayMetrics, kind: &'static str) -> Self {
        metrics.stream_opened(&tunnel.info.name, kind);
        let active = metrics.streams_active.with_label_values(&[kind]);
        active.inc();
        Self { _stats: tunnel.stats.open_stream(), active }
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.active.dec();
    }
}
