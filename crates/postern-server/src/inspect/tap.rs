//! A request of an inspected tunnel while it is in flight: the [`Draft`] that gathers it, and
//! [`Tapped`], the body wrapper that copies the first [`BODY_LIMIT`] bytes of each body into it.
//!
//! The draft is shared by the request body (its [`Tap`] rides in the request's extensions to
//! where the body is pumped to the agent) and the response body. When both are done, and so
//! the last reference goes, the draft becomes a [`Capture`]: kept by the tunnel's inspector,
//! announced on the event stream, and handed to whoever waits for it (a replay).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{BodyCapture, Capture, BODY_LIMIT};
use crate::tunnel::registry::Registry;
use crate::tunnel::Tunnel;

/// What the visitor asked for, as a capture starts.
#[derive(Debug)]
pub struct Asked<'a> {
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Host.
    pub host: &'a str,
    /// The visitor.
    pub peer: SocketAddr,
    /// The visitor came over HTTPS.
    pub secure: bool,
    /// Request headers (redacted as they are copied).
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Default)]
struct Body1 {
    bytes: Vec<u8>,
    size: u64,
}

impl Body1 {
    fn copy(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        let room = BODY_LIMIT.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn done(mut self) -> BodyCapture {
        // What is kept is what is charged to the budget: no spare capacity.
        self.bytes.shrink_to_fit();
        let truncated = self.size > self.bytes.len() as u64;
        BodyCapture { bytes: Bytes::from(self.bytes), size: self.size, truncated }
    }
}

#[derive(Debug)]
struct Building {
    capture: Capture,
    request: Body1,
    response: Body1,
    ended: Option<Duration>,
    preset_request: Option<BodyCapture>,
}

/// A request being captured.
#[derive(Debug)]
pub struct Draft {
    registry: Arc<Registry>,
    tunnel: Arc<Tunnel>,
    started: Instant,
    building: Mutex<Option<Building>>,
    done: Mutex<Option<oneshot::Sender<Arc<Capture>>>>,
}

/// Which body a tap copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// A body's way into its draft. The request's rides in the request's extensions.
#[derive(Debug, Clone)]
pub struct Tap {
    draft: Arc<Draft>,
    side: Side,
}

impl Draft {
    /// Starts capturing a request to `tunnel` that arrived at `started`.
    pub fn begin(registry: Arc<Registry>, tunnel: Arc<Tunnel>, asked: Asked<'_>, started: Instant) -> Arc<Self> {
        let request_headers = registry.inspection().headers(asked.headers, tunnel.access.header_name());
        let capture = Capture {
            id: 0,
            at: SystemTime::now(),
            method: asked.method.to_string(),
            path: asked.path.to_string(),
            host: asked.host.to_string(),
            peer: asked.peer,
            secure: asked.secure,
            status: 0,
            duration: Duration::ZERO,
            request_headers,
            response_headers: Vec::new(),
            request_body: BodyCapture::default(),
            response_body: BodyCapture::default(),
            bodies_dropped: false,
            replay_of: None,
            charge: None,
        };
        let building = Building {
            capture,
            request: Body1::default(),
            response: Body1::default(),
            ended: None,
            preset_request: None,
        };
        Arc::new(Self { registry, tunnel, started, building: Mutex::new(Some(building)), done: Mutex::new(None) })
    }

    fn with(&self, f: impl FnOnce(&mut Building)) {
        if let Some(b) = self.building.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            f(b)
        }
    }

    /// Marks it as a replay of `original`, whose request (headers as captured, body whole) it
    /// sends again.
    pub fn replaying(&self, original: &Capture) {
        self.with(|b| {
            b.capture.replay_of = Some(original.id);
            b.capture.request_headers = original.request_headers.clone();
            b.preset_request = Some(original.request_body.clone());
        });
    }

    /// Drops what was gathered: nothing is captured.
    pub fn abandon(&self) {
        self.building.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The request body's tap, for the request's extensions.
    pub fn request_tap(self: &Arc<Self>) -> Tap {
        Tap { draft: self.clone(), side: Side::Request }
    }

    /// Notes the response's status and headers and taps its body.
    pub fn respond<E>(
        self: Arc<Self>,
        resp: Response<http_body_util::combinators::BoxBody<Bytes, E>>,
    ) -> Response<http_body_util::combinators::BoxBody<Bytes, E>>
    where
        E: 'static,
    {
        let headers = self.registry.inspection().headers(resp.headers(), self.tunnel.access.header_name());
        let status = resp.status().as_u16();
        self.with(|b| {
            b.capture.status = status;
            b.capture.response_headers = headers;
        });
        let tap = Some(Tap { draft: self, side: Side::Response });
        resp.map(|body| Tapped { inner: body, tap }.boxed())
    }

    /// The capture, once the request is done.
    pub fn finished(&self) -> oneshot::Receiver<Arc<Capture>> {
        let (tx, rx) = oneshot::channel();
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        let Some(b) = self.building.get_mut().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let mut capture = b.capture;
        capture.duration = b.ended.unwrap_or_else(|| self.started.elapsed());
        capture.request_body = b.preset_request.unwrap_or_else(|| b.request.done());
        capture.response_body = b.response.done();
        let kept = self.tunnel.inspector.keep(capture, self.registry.inspection());
        self.registry.announce_capture(&self.tunnel, &kept);
        if let Some(tx) = self.done.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(kept);
        }
    }
}

/// A body whose data frames are copied (up to [`BODY_LIMIT`]) into a draft as they pass; with
/// no tap, it only passes them on.
#[derive(Debug)]
pub struct Tapped<B> {
    inner: B,
    tap: Option<Tap>,
}

impl<B> Tapped<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, tap: Option<Tap>) -> Self {
        Self { inner, tap }
    }
}

impl<B> Body for Tapped<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let (Some(Ok(f)), Some(tap)) = (&frame, &self.tap) {
            if let Some(data) = f.data_ref() {
                tap.draft.with(|b| match tap.side {
                    Side::Request => b.request.copy(data),
                    Side::Response => b.response.copy(data),
                });
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tapped<B> {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.as_ref().filter(|t| t.side == Side::Response) {
            let elapsed = tap.draft.started.elapsed();
            tap.draft.with(|b| b.ended = Some(elapsed));
        }
    }
}
