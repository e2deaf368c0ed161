//! One public request's line in the access log ([`crate::access_log`]): begun when the request
//! arrives, written when its response body ends or the visitor goes away.
//!
//! The edge's own code marks what only it knows: [`RequestBytes`] in the request's extensions
//! counts the request body as it is forwarded, and [`Served`] in the response's extensions names
//! the tunnel that answered. A response without `Served` was the relay's own (an unknown host, a
//! refusal before any tunnel) or another relay's, which this one forwarded the request to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use postern_transport::body::Counted;
use postern_transport::splice::Pace;

use super::proxy::EdgeBody;
use crate::access_log::{AccessLog, Record};

/// Request-body bytes forwarded so far, shared with the entry that logs them.
#[derive(Debug, Clone, Default)]
pub struct RequestBytes(Arc<AtomicU64>);

impl RequestBytes {
    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// The tunnel that served a response.
#[derive(Debug, Clone)]
pub struct Served {
    /// Its name.
    pub tunnel: String,
    /// Subject of the credential that opened it.
    pub owner: String,
}

/// A request on its way to the access log.
#[derive(Debug)]
pub struct Entry {
    record: Record,
    started: Instant,
    bytes_in: RequestBytes,
    log: AccessLog,
}

impl Entry {
    /// Notes what `req` asks for and starts counting its body.
    pub fn begin(req: &mut Request<Incoming>, peer: SocketAddr, started: Instant, log: AccessLog) -> Self {
        let mut record = Record::new("http", peer);
        record.method = Some(req.method().as_str().to_string());
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        record.host = host.or(req.uri().authority().map(|a| a.as_str())).map(str::to_string);
        record.path = Some(req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string());
        let bytes_in = RequestBytes::default();
        req.extensions_mut().insert(bytes_in.clone());
        Self { record, started, bytes_in, log }
    }

    /// Wraps `resp`'s body so that the line is written when the body is done (or dropped).
    pub fn finish(mut self, resp: Response<EdgeBody>) -> Response<EdgeBody> {
        self.record.status = Some(resp.status().as_u16());
        if let Some(served) = resp.extensions().get::<Served>() {
            self.record.tunnel = Some(served.tunnel.clone());
            self.record.owner = Some(served.owner.clone());
        }
        let open = Open { entry: Some(self), bytes_out: AtomicU64::new(0) };
        resp.map(|inner| {
            Counted::new(inner, move |n| {
                open.bytes_out.fetch_add(n, Ordering::Relaxed);
                Pace::ON
            })
            .boxed()
        })
    }
}

/// A request whose response body is still going out; writes its line when dropped with that
/// body.
struct Open {
    entry: Option<Entry>,
    bytes_out: AtomicU64,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(Entry { mut record, started, bytes_in, log }) = self.entry.take() {
            record.stamp(started.elapsed());
            record.bytes_in = bytes_in.0.load(Ordering::Relaxed);
            record.bytes_out = self.bytes_out.load(Ordering::Relaxed);
            log.write(record);
        }
    }
}
