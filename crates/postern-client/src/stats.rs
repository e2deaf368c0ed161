//! The agent's traffic counters, shown by the client status endpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use postern_transport::splice::{Meter, Pace};
use serde::Serialize;

/// Counters shared by every session of an agent.
#[derive(Debug, Default)]
pub struct AgentStats {
    streams: AtomicU64,
    active: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    refused: AtomicU64,
    /// Woken when a stream opens on an idle agent, so `--connections auto` sleeps while idle.
    first_stream: tokio::sync::Notify,
}

/// A copy of [`AgentStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Streams (TCP connections, HTTP requests) handled.
    pub streams: u64,
    /// Streams open now.
    pub active_streams: u64,
    /// Bytes delivered to local services.
    pub bytes_in: u64,
    /// Bytes sent back from local services.
    pub bytes_out: u64,
    /// Streams the local service refused.
    pub local_refused: u64,
}

impl AgentStats {
    /// A stream started; the guard ends it.
    pub fn open(&self) -> OpenStream<'_> {
        self.streams.fetch_add(1, Ordering::Relaxed);
        if self.active.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_stream.notify_one();
        }
        OpenStream(self)
    }

    /// Returns once a stream opens after the agent was idle (at once if one did since the last
    /// call).
    pub async fn busy(&self) {
        self.first_stream.notified().await;
    }

    /// A local service refused a stream.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes toward the local service.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes from the local service.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            streams: self.streams.load(Ordering::Relaxed),
            active_streams: self.active.load(Ordering::Relaxed).max(0) as u64,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            local_refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Counts one open stream until dropped.
#[derive(Debug)]
pub struct OpenStream<'a>(&'a AgentStats);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// On the agent, the socket is the local service's: reads go out, writes go in.
impl Meter for AgentStats {
    fn read(&self, n: u64) -> Pace {
        self.add_out(n);
        Pace::ON
    }

    fn written(&self, n: u64) -> Pace {
        self.add_in(n);
        Pace::ON
    }
}
