//! `GET /api/v1/events`: Server-Sent Events, filtered to what the caller may see.
//!
//! Each event is `id: <seq>`, `event: <type>`, `data: <JSON>` (see `views::EventView`). A comment
//! line every 15 s keeps proxies from timing the stream out. A client too slow to keep up misses
//! events (it sees a `lagged` event saying how many) rather than slowing the relay.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::AdminBody;
use crate::auth::Identity;
use crate::tunnel::events::{Event, EventView};

const KEEPALIVE: Duration = Duration::from_secs(15);

struct State {
    rx: broadcast::Receiver<Event>,
    who: Identity,
    shutdown: CancellationToken,
    started: bool,
}

/// The SSE response.
pub fn stream(rx: broadcast::Receiver<Event>, who: Identity, shutdown: CancellationToken) -> Response<AdminBody> {
    let state = State { rx, who, shutdown, started: false };
    let frames = stream::unfold(state, |mut st| async move {
        if !st.started {
            st.started = true;
            return Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"retry: 2000\n: connected\n\n"))), st));
        }
        loop {
            let next = tokio::select! {
                _ = st.shutdown.cancelled() => return None,
                r = tokio::time::timeout(KEEPALIVE, st.rx.recv()) => r,
            };
            let chunk = match next {
                Err(_) => Bytes::from_static(b": keepalive\n\n"),
                Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(n))) => Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")),
                Ok(Ok(event)) if !st.who.may_access(&event.owner) => continue,
                Ok(Ok(event)) => {
                    let data = serde_json::to_string(&EventView::from(&event)).unwrap_or_default();
                    Bytes::from(format!("id: {}\nevent: {}\ndata: {data}\n\n", event.seq, event.kind.as_str()))
                }
            };
            return Some((Ok(Frame::data(chunk)), st));
        }
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
