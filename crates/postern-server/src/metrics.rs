//! Prometheus metrics of the relay.
//!
//! The registry is created by the binary and passed to [`crate::Relay::new`]; nothing is global.
//! Label sets are bounded: kinds, status classes, directions and reasons are fixed lists. Per-tunnel
//! series (`postern_tunnel_*`) exist only with `--metrics-per-tunnel`, and are deleted when the
//! tunnel goes away. The `token` label of the volume gauges counts tokens with a volume quota
//! in use this period, and is deleted when a period ends with the token unused.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the relay exports.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    /// Connected agents.
    pub agents: IntGauge,
    /// Live tunnels by kind.
    pub tunnels: IntGaugeVec,
    /// Open streams by kind (tcp, http, upgrade).
    pub streams_active: IntGaugeVec,
    /// Streams opened by kind.
    pub streams_total: IntCounterVec,
    /// Proxied HTTP requests by kind (http, upgrade) and status class (2xx ... 5xx).
    pub http_requests: IntCounterVec,
    /// Time from request to response headers, by kind.
    pub http_duration: HistogramVec,
    /// Bytes through tunnels by direction (in: toward the local service) and tunnel kind.
    pub bytes: IntCounterVec,
    /// Agent handshakes that failed, by reason.
    pub handshake_failures: IntCounterVec,
    /// Public connections refused, by reason.
    pub public_refused: IntCounterVec,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
    /// Bytes the request inspector's captures hold (within `--inspect-memory`).
    pub inspector_bytes: IntGauge,
    /// Bytes each token with a volume quota has moved in its current period, by token id.
    pub volume_used: IntGaugeVec,
    /// That quota, by token id.
    pub volume_limit: IntGaugeVec,
    /// The cluster's metrics; registered only on a clustered relay.
    pub cluster: ClusterMetrics,
    per_tunnel: Option<PerTunnel>,
}

/// Metrics of a clustered relay (`postern_cluster_*`).
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Streams forwarded between relays: `out` to a peer, `in` from one.
    pub forwarded: IntCounterVec,
    /// 1 while the link to a peer is up.
    pub peer_up: IntGaugeVec,
    /// 1 while the directory answers.
    pub store_up: IntGauge,
    /// Claims of names and ports in the directory, by result (`granted`, `taken`, `quota`,
    /// `error`).
    pub claims: IntCounterVec,
    /// Time from forwarding a stream to the peer's answer.
    pub forward_duration: Histogram,
}

#[derive(Debug, Clone)]
struct PerTunnel {
    bytes: IntCounterVec,
    streams: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl RelayMetrics {
    /// Builds the metrics (unregistered). `per_tunnel` adds series labelled by tunnel name.
    pub fn new(per_tunnel: bool) -> Result<Self, prometheus::Error> {
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        Ok(Self {
            agents: IntGauge::new("postern_agents", "Connected agents (client sessions)")?,
            tunnels: IntGaugeVec::new(Opts::new("postern_tunnels", "Live tunnels"), &["kind"])?,
            streams_active: IntGaugeVec::new(
                Opts::new("postern_streams_active", "Streams open right now (TCP connections, HTTP requests)"),
                &["kind"],
            )?,
            streams_total: counter("postern_streams_total", "Streams opened to agents", &["kind"])?,
            http_requests: counter(
                "postern_http_requests_total",
                "Public HTTP requests answered, by kind and status class",
                &["kind", "class"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "postern_http_request_duration_seconds",
                    "Time from a public request to its response headers",
                )
                .buckets(buckets),
                &["kind"],
            )?,
            bytes: counter(
                "postern_bytes_total",
                "Bytes through tunnels; in = toward the local service, out = toward the public",
                &["direction", "kind"],
            )?,
            handshake_failures: counter(
                "postern_handshake_failures_total",
                "Agent connections that failed before their session started, by reason",
                &["reason"],
            )?,
            public_refused: counter(
                "postern_public_connections_refused_total",
                "Public connections refused, by reason",
                &["reason"],
            )?,
            access_log_dropped: IntCounter::new(
                "postern_access_log_dropped_total",
                "Access log lines dropped because the disk could not keep up",
            )?,
            inspector_bytes: IntGauge::new(
                "postern_inspector_bytes",
                "Bytes the request inspector's captures hold, within --inspect-memory",
            )?,
            volume_used: IntGaugeVec::new(
                Opts::new(
                    "postern_token_volume_used_bytes",
                    "Bytes a token with a volume quota has moved this period (both directions)",
                ),
                &["token"],
            )?,
            volume_limit: IntGaugeVec::new(
                Opts::new("postern_token_volume_bytes", "The token's volume quota per period"),
                &["token"],
            )?,
            cluster: ClusterMetrics {
                forwarded: counter(
                    "postern_cluster_forwarded_total",
                    "Streams forwarded between relays: out to a peer, in from one",
                    &["direction"],
                )?,
                peer_up: IntGaugeVec::new(
                    Opts::new("postern_cluster_peer_up", "1 while the link to a peer is up"),
                    &["peer"],
                )?,
                store_up: IntGauge::new("postern_cluster_store_up", "1 while the cluster directory (Redis) answers")?,
                claims: counter(
                    "postern_cluster_claims_total",
                    "Claims of names and ports in the directory",
                    &["result"],
                )?,
                forward_duration: Histogram::with_opts(
                    HistogramOpts::new(
                        "postern_cluster_forward_duration_seconds",
                        "Time from forwarding a stream to a peer relay to its answer",
                    )
                    .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
                )?,
            },
            per_tunnel: if per_tunnel {
                Some(PerTunnel {
                    bytes: counter("postern_tunnel_bytes_total", "Bytes through one tunnel", &["tunnel", "direction"])?,
                    streams: counter("postern_tunnel_streams_total", "Streams opened on one tunnel", &["tunnel"])?,
                })
            } else {
                None
            },
        })
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.agents.clone()))?;
        registry.register(Box::new(self.tunnels.clone()))?;
        registry.register(Box::new(self.streams_active.clone()))?;
        registry.register(Box::new(self.streams_total.clone()))?;
        registry.register(Box::new(self.http_requests.clone()))?;
        registry.register(Box::new(self.http_duration.clone()))?;
        registry.register(Box::new(self.bytes.clone()))?;
        registry.register(Box::new(self.handshake_failures.clone()))?;
        registry.register(Box::new(self.public_refused.clone()))?;
        registry.register(Box::new(self.access_log_dropped.clone()))?;
        registry.register(Box::new(self.inspector_bytes.clone()))?;
        registry.register(Box::new(self.volume_used.clone()))?;
        registry.register(Box::new(self.volume_limit.clone()))?;
        if let Some(p) = &self.per_tunnel {
            registry.register(Box::new(p.bytes.clone()))?;
            registry.register(Box::new(p.streams.clone()))?;
        }
        // Pre-create the common series so dashboards see zeros, not gaps.
        for result in ["granted", "taken", "quota", "error"] {
            self.cluster.claims.with_label_values(&[result]);
        }
        for direction in ["in", "out"] {
            self.cluster.forwarded.with_label_values(&[direction]);
        }
        for kind in ["tcp", "http"] {
            self.tunnels.with_label_values(&[kind]);
            for dir in ["in", "out"] {
                self.bytes.with_label_values(&[dir, kind]);
            }
        }
        for kind in ["tcp", "http", "upgrade"] {
            self.streams_active.with_label_values(&[kind]);
            self.streams_total.with_label_values(&[kind]);
        }
        Ok(())
    }

    /// Registers the cluster's metrics in `registry` (a clustered relay only).
    pub fn register_cluster(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let c = &self.cluster;
        registry.register(Box::new(c.forwarded.clone()))?;
        registry.register(Box::new(c.peer_up.clone()))?;
        registry.register(Box::new(c.store_up.clone()))?;
        registry.register(Box::new(c.claims.clone()))?;
        registry.register(Box::new(c.forward_duration.clone()))
    }

    /// The `postern_cluster_peer_up` gauge of `peer`.
    pub fn cluster_peer_up(&self, peer: &str) -> IntGauge {
        self.cluster.peer_up.with_label_values(&[peer])
    }

    /// Counts bytes of `kind` moving in `direction` (`in` or `out`) on `tunnel`.
    pub fn add_bytes(&self, tunnel: &str, kind: &str, direction: &'static str, n: u64) {
        self.bytes.with_label_values(&[direction, kind]).inc_by(n);
        if let Some(p) = &self.per_tunnel {
            p.bytes.with_label_values(&[tunnel, direction]).inc_by(n);
        }
    }

    /// Counts a stream of `kind` opened on `tunnel`.
    pub fn stream_opened(&self, tunnel: &str, kind: &str) {
        self.streams_total.with_label_values(&[kind]).inc();
        if let Some(p) = &self.per_tunnel {
            p.streams.with_label_values(&[tunnel]).inc();
        }
    }

    /// Records an answered public HTTP request.
    pub fn http_answered(&self, kind: &str, status: u16, took: std::time::Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.with_label_values(&[kind, class]).inc();
        self.http_duration.with_label_values(&[kind]).observe(took.as_secs_f64());
    }

    /// Drops the per-tunnel series of a tunnel that went away.
    pub fn forget_tunnel(&self, tunnel: &str) {
        if let Some(p) = &self.per_tunnel {
            for dir in ["in", "out"] {
                let _ = p.bytes.remove_label_values(&[tunnel, dir]);
            }
            let _ = p.streams.remove_label_values(&[tunnel]);
        }
    }

    /// A histogram handle for one kind (saves a label lookup per request).
    pub fn duration(&self, kind: &str) -> Histogram {
        self.http_duration.with_label_values(&[kind])
    }
}
