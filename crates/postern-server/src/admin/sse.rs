//! `GET /api/v1/events`: Server-Sent Events, filtered to what the caller may see.
//!
//! Each event is `id: <seq>`, `event: <type>`, `data: <JSON>` (see `views::EventView`). A comment
//! line every 15 s keeps proxies from timing the stream out. A client too slow to keep up misses
//! events (it sees a `lagged` event saying how many) rather than slowing the relay.
//!
//! With `?traffic=1` the stream also carries, after each round of the tunnels' history (every
//! 5 s), one `traffic` event with the newest point of every tunnel the caller may see: what a
//! dashboard's live graphs need, without polling.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AdminBody;
use crate::auth::Identity;
use crate::tunnel::events::{Event, EventView};
use crate::tunnel::history::Point;
use crate::tunnel::registry::Registry;

const KEEPALIVE: Duration = Duration::from_secs(15);

/// The tunnels' rounds of history, for `traffic` events.
pub struct Traffic {
    /// Where the tunnels are.
    pub registry: Arc<Registry>,
    /// Ticks with each round.
    pub rounds: watch::Receiver<u64>,
}

struct State {
    rx: broadcast::Receiver<Event>,
    captures: broadcast::Receiver<Event>,
    who: Identity,
    shutdown: CancellationToken,
    started: bool,
    traffic: Option<Traffic>,
}

#[derive(Serialize)]
struct TunnelPoint {
    name: String,
    point: Point,
}

fn traffic_frame(traffic: &Traffic, who: &Identity, t: u64) -> Bytes {
    let tunnels: Vec<TunnelPoint> = traffic
        .registry
        .tunnels()
        .iter()
        .filter(|tunnel| who.may_access(&tunnel.info.owner))
        .filter_map(|tunnel| Some(TunnelPoint { name: tunnel.info.name.clone(), point: tunnel.history.last()? }))
        .collect();
    let data = serde_json::json!({ "t": t, "tunnels": tunnels });
    Bytes::from(format!("event: traffic\ndata: {data}\n\n"))
}

async fn next_round(traffic: &mut Option<Traffic>) -> Option<u64> {
    match traffic {
        Some(t) => match t.rounds.changed().await {
            Ok(()) => Some(*t.rounds.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The SSE response: `rx`'s events and `captures` (the inspector's); with `traffic`, `traffic`
/// events too.
pub fn stream(
    rx: broadcast::Receiver<Event>,
    captures: broadcast::Receiver<Event>,
    who: Identity,
    shutdown: CancellationToken,
    traffic: Option<Traffic>,
) -> Response<AdminBody> {
    let state = State { rx, captures, who, shutdown, started: false, traffic };
    let frames = stream::unfold(state, |mut st| async move {
        if !st.started {
            st.started = true;
            return Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"retry: 2000\n: connected\n\n"))), st));
        }
        loop {
            let next = tokio::select! {
                _ = st.shutdown.cancelled() => return None,
                Some(t) = next_round(&mut st.traffic) => {
                    let Some(traffic) = &st.traffic else { continue };
                    let frame = traffic_frame(traffic, &st.who, t);
                    return Some((Ok(Frame::data(frame)), st));
                }
                r = st.captures.recv() => Ok(r),
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
