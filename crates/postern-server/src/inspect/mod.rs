//! The request inspector: for an HTTP tunnel that opted in, its last requests with their
//! headers and the first 64 KiB of each body, for the API, the dashboard and replay.
//!
//! # Layout
//!
//! - this module: [`Inspection`], the relay-wide settings and memory budget; [`Inspector`],
//!   one tunnel's switch and captures; [`Capture`], one finished request;
//! - [`tap`]: the draft of a request in flight and the body wrappers that copy the first bytes
//!   of each body into it; the draft becomes a capture when both bodies are done;
//! - [`view`]: the JSON shapes of captures.
//!
//! # Bounds
//!
//! Each capture is charged to a relay-wide budget (`--inspect-memory`). A tunnel keeps its last
//! `--inspect-keep` captures. A new capture that would go over the budget makes room: a tunnel
//! within its fair share (the budget over the inspected tunnels) takes it from the tunnel that
//! holds the most, one over its share from its own oldest. When no room can be made the capture
//! is kept without its bodies (`bodies_dropped`). So one busy tunnel cannot starve the others.
//!
//! # What is never kept
//!
//! The values of the headers named by `--inspect-redact` (by default `Authorization`,
//! `Cookie`, `Set-Cookie` and `Proxy-Authorization`) and of the tunnel's own access header
//! (`--auth-header`, `--bearer`) are replaced by `[redacted]` before the capture is stored:
//! they never sit in memory, so neither the API nor replay can give them away. The bytes of TCP
//! tunnels and of upgraded connections (WebSocket) are never captured.

pub mod tap;
pub mod view;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use prometheus::IntGauge;

/// The most of each body a capture keeps.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What a redacted header's value reads as.
pub const REDACTED: &str = "[redacted]";

/// The header that marks a replayed request to the local service; its value is the id of the
/// capture replayed. The edge removes it from public requests.
pub const REPLAY_HEADER: &str = "x-postern-replay";

/// Relay-wide inspector settings and the memory all captures share.
#[derive(Debug)]
pub struct Inspection {
    keep: usize,
    budget: usize,
    used: Arc<AtomicUsize>,
    redact: Vec<HeaderName>,
    next_id: AtomicU64,
    /// Every inspector that has kept a capture (dead ones are pruned as new ones come).
    inspectors: Mutex<Vec<Weak<Inspector>>>,
    /// `postern_inspector_bytes`: follows `used`.
    gauge: IntGauge,
}

impl Inspection {
    /// Keeps at most `keep` captures per tunnel and `budget` bytes of captures in all, and
    /// redacts the headers named in `redact` (names that are not header names are ignored:
    /// the configuration check reports them).
    pub fn new(keep: usize, budget: usize, redact: &[String], gauge: IntGauge) -> Self {
        let redact = redact.iter().filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()).collect();
        Self {
            keep: keep.max(1),
            budget,
            used: Arc::default(),
            redact,
            next_id: AtomicU64::new(1),
            inspectors: Mutex::default(),
            gauge,
        }
    }

    /// The inspector `config` asks for (`--inspect-keep`, `--inspect-memory`,
    /// `--inspect-redact`), its bytes shown in `gauge`.
    pub fn from_config(config: &crate::config::RelayConfig, gauge: IntGauge) -> Self {
        let budget = usize::try_from(config.inspect_memory).unwrap_or(usize::MAX).saturating_mul(1 << 20);
        Self::new(config.inspect_keep as usize, budget, &config.inspect_redact, gauge)
    }

    /// Bytes held by captures now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The headers as a capture keeps them: in order, values as text, the redacted ones (and
    /// `also`, the tunnel's own access header) replaced by [`REDACTED`].
    pub fn headers(&self, headers: &HeaderMap, also: Option<&HeaderName>) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let hidden = self.redact.contains(name) || also == Some(name);
                let value =
                    if hidden { REDACTED.to_string() } else { String::from_utf8_lossy(value.as_bytes()).into() };
                (name.as_str().to_string(), value)
            })
            .collect()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes `n` bytes of the budget for `inspector`, if they fit.
    fn charge(&self, n: usize, inspector: &Inspector) -> Option<Charge> {
        let budget = self.budget;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| (used + n <= budget).then_some(used + n))
            .ok()?;
        Some(Charge::new(self, inspector, n))
    }

    /// Takes `n` bytes whatever the budget says (a capture without bodies: its size is bounded
    /// by the edge's header caps).
    fn force(&self, n: usize, inspector: &Inspector) -> Charge {
        self.used.fetch_add(n, Ordering::Relaxed);
        Charge::new(self, inspector, n)
    }

    fn inspectors(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Inspector>>> {
        self.inspectors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `inspector` among those sharing the budget (once).
    fn register(&self, inspector: &Arc<Inspector>) {
        if !inspector.registered.swap(true, Ordering::Relaxed) {
            let mut all = self.inspectors();
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(inspector));
        }
    }

    /// The budget over the inspectors that share it, and the other one holding the most.
    fn share_and_largest(&self, me: &Arc<Inspector>) -> (usize, Option<Arc<Inspector>>) {
        let all = self.inspectors();
        let live: Vec<Arc<Inspector>> = all.iter().filter_map(Weak::upgrade).collect();
        let share = self.budget / live.len().max(1);
        let largest = live
            .into_iter()
            .filter(|i| !Arc::ptr_eq(i, me))
            .max_by_key(|i| i.held.load(Ordering::Relaxed))
            .filter(|i| i.held.load(Ordering::Relaxed) > 0);
        (share, largest)
    }
}

impl Default for Inspection {
    /// The relay's defaults, with a gauge no registry exports.
    fn default() -> Self {
        let gauge = IntGauge::new("postern_inspector_bytes", "unregistered").unwrap_or_else(|_| unreachable!());
        Self::from_config(&crate::config::RelayConfig::default(), gauge)
    }
}

/// Bytes of the budget a capture holds, counted relay-wide and for its tunnel; given back
/// when the capture is dropped.
#[derive(Debug)]
struct Charge {
    used: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    gauge: IntGauge,
    n: usize,
}

impl Charge {
    /// `n` bytes already added to `inspection.used`, now counted for `inspector` too.
    fn new(inspection: &Inspection, inspector: &Inspector, n: usize) -> Self {
        inspector.held.fetch_add(n, Ordering::Relaxed);
        inspection.gauge.add(n as i64);
        Self { used: inspection.used.clone(), held: inspector.held.clone(), gauge: inspection.gauge.clone(), n }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.used.fetch_sub(self.n, Ordering::Relaxed);
        self.held.fetch_sub(self.n, Ordering::Relaxed);
        self.gauge.sub(self.n as i64);
    }
}

/// The first bytes of a body.
#[derive(Debug, Clone, Default)]
pub struct BodyCapture {
    /// Up to [`BODY_LIMIT`] bytes.
    pub bytes: Bytes,
    /// The body's whole size, as far as it went.
    pub size: u64,
    /// The body was longer than what was kept (or dropped for memory).
    pub truncated: bool,
}

/// One finished request of an inspected tunnel.
#[derive(Debug)]
pub struct Capture {
    /// Unique on this relay, increasing.
    pub id: u64,
    /// When the request arrived.
    pub at: SystemTime,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The host the visitor asked for.
    pub host: String,
    /// The visitor's address.
    pub peer: SocketAddr,
    /// The visitor came over HTTPS.
    pub secure: bool,
    /// Status of the response sent to the visitor.
    pub status: u16,
    /// From the request's arrival to the end of the response body.
    pub duration: Duration,
    /// Request headers as the visitor sent them, redacted.
    pub request_headers: Vec<(String, String)>,
    /// Response headers as the visitor got them, redacted.
    pub response_headers: Vec<(String, String)>,
    /// The request body's first bytes.
    pub request_body: BodyCapture,
    /// The response body's first bytes.
    pub response_body: BodyCapture,
    /// The bodies were not kept: the relay-wide memory budget was full.
    pub bodies_dropped: bool,
    /// The capture this one replayed, for a replay.
    pub replay_of: Option<u64>,
    charge: Option<Charge>,
}

impl Capture {
    fn size(&self) -> usize {
        let headers: usize =
            self.request_headers.iter().chain(&self.response_headers).map(|(n, v)| n.len() + v.len() + 48).sum();
        256 + self.method.len()
            + self.path.len()
            + self.host.len()
            + headers
            + self.request_body.bytes.len()
            + self.response_body.bytes.len()
    }

    /// True when the request can be sent again as it was: its whole body was kept.
    pub fn replayable(&self) -> bool {
        !self.bodies_dropped && !self.request_body.truncated
    }
}

/// One tunnel's inspector: whether it captures, and its last captures.
#[derive(Debug, Default)]
pub struct Inspector {
    on: AtomicBool,
    captures: Mutex<VecDeque<Arc<Capture>>>,
    /// Bytes its captures are charged.
    held: Arc<AtomicUsize>,
    registered: AtomicBool,
}

impl Inspector {
    /// True while new requests are captured.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Starts or stops capturing; captures already kept stay.
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Capture>>> {
        self.captures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The captures, newest first.
    pub fn list(&self) -> Vec<Arc<Capture>> {
        self.lock().iter().cloned().collect()
    }

    /// The capture `id`, if still kept.
    pub fn get(&self, id: u64) -> Option<Arc<Capture>> {
        self.lock().iter().find(|c| c.id == id).cloned()
    }

    /// Bytes its captures hold.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn evict_oldest(&self) -> bool {
        self.lock().pop_back().is_some()
    }

    /// Keeps `capture` (numbered here) within the tunnel's count and the relay's budget,
    /// making room as the module's documentation says.
    fn keep(self: &Arc<Self>, mut capture: Capture, inspection: &Inspection) -> Arc<Capture> {
        inspection.register(self);
        capture.id = inspection.next_id();
        let size = capture.size();
        {
            let mut captures = self.lock();
            while captures.len() >= inspection.keep {
                captures.pop_back();
            }
        }
        // One tunnel's lock at a time, never two: another tunnel making room does the same.
        let mut tries = 0;
        capture.charge = loop {
            if let Some(charge) = inspection.charge(size, self) {
                break Some(charge);
            }
            tries += 1;
            let hopeless = size > inspection.budget;
            let (share, largest) = inspection.share_and_largest(self);
            let made_room = !hopeless
                && match largest {
                    Some(other) if self.held() + size <= share => other.evict_oldest() || self.evict_oldest(),
                    _ => self.evict_oldest(),
                };
            if !made_room || tries > 2 * inspection.keep {
                capture.bodies_dropped = true;
                for body in [&mut capture.request_body, &mut capture.response_body] {
                    body.truncated |= !body.bytes.is_empty();
                    body.bytes = Bytes::new();
                }
                break Some(inspection.force(capture.size(), self));
            }
        };
        let capture = Arc::new(capture);
        self.lock().push_front(capture.clone());
        capture
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> IntGauge {
        IntGauge::new("g", "g").unwrap()
    }

    fn capture(body: usize) -> Capture {
        Capture {
            id: 0,
            at: SystemTime::now(),
            method: "GET".into(),
            path: "/".into(),
            host: "h".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            secure: false,
            status: 200,
            duration: Duration::ZERO,
            request_headers: vec![],
            response_headers: vec![],
            request_body: BodyCapture::default(),
            response_body: BodyCapture { bytes: Bytes::from(vec![b'x'; body]), size: body as u64, truncated: false },
            bodies_dropped: false,
            replay_of: None,
            charge: None,
        }
    }

    #[test]
    fn keeps_the_last_n_newest_first() {
        let inspection = Inspection::new(3, 1 << 20, &[], gauge());
        let inspector = Arc::new(Inspector::default());
        let ids: Vec<u64> = (0..5).map(|_| inspector.keep(capture(10), &inspection).id).collect();
        let kept: Vec<u64> = inspector.list().iter().map(|c| c.id).collect();
        assert_eq!(kept, vec![ids[4], ids[3], ids[2]]);
        assert!(inspector.get(ids[0]).is_none());
        assert_eq!(inspection.used(), kept.len() * capture(10).size());
    }

    #[test]
    fn a_busy_tunnel_makes_room_from_its_own_and_a_quiet_one_from_the_busiest() {
        let one = capture(1000).size();
        let inspection = Inspection::new(100, one * 4, &[], gauge());
        let (busy, quiet) = (Arc::new(Inspector::default()), Arc::new(Inspector::default()));
        quiet.keep(capture(1000), &inspection);
        for _ in 0..10 {
            assert!(!busy.keep(capture(1000), &inspection).bodies_dropped);
        }
        // The busy tunnel, over its share, evicted its own: the quiet one's capture stayed.
        assert_eq!((busy.list().len(), quiet.list().len()), (3, 1));
        assert_eq!(inspection.used(), one * 4);
        assert_eq!(inspection.gauge.get(), (one * 4) as i64);
        // The quiet one, within its share, takes room from the busiest.
        assert!(!quiet.keep(capture(1000), &inspection).bodies_dropped);
        assert_eq!((busy.list().len(), quiet.list().len()), (2, 2));
        assert_eq!((busy.held(), quiet.held()), (one * 2, one * 2));
        // A capture larger than the whole budget is kept without bodies, evicting nothing.
        let lean = quiet.keep(capture(10 * 1000), &inspection);
        assert_eq!((busy.list().len(), quiet.list().len()), (2, 3));
        assert!(lean.bodies_dropped && lean.response_body.truncated && lean.response_body.bytes.is_empty());
        assert!(!lean.replayable());
        assert!(inspection.used() <= one * 4 + lean.size());
        // Dropping captures gives their bytes back.
        drop((busy, quiet, lean));
        assert_eq!((inspection.used(), inspection.gauge.get()), (0, 0));
    }

    #[test]
    fn redacts_the_configured_headers_and_the_tunnels_own() {
        let inspection = Inspection::new(1, 1, &["authorization".into(), "cookie".into()], gauge());
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        h.insert("cookie", "sid=1".parse().unwrap());
        h.insert("x-api-key", "k".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let own = HeaderName::from_static("x-api-key");
        let kept = inspection.headers(&h, Some(&own));
        let value = |n: &str| kept.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(value("authorization"), Some(REDACTED));
        assert_eq!(value("cookie"), Some(REDACTED));
        assert_eq!(value("x-api-key"), Some(REDACTED));
        assert_eq!(value("accept"), Some("*/*"));
    }
}
