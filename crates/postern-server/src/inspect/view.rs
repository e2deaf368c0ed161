//! The JSON shapes of captures (`docs/api.md`, `openapi.json`): a list entry without bodies,
//! the whole capture with them, and the short form the event stream carries.

use base64::Engine;
use serde::Serialize;

use super::{BodyCapture, Capture};
use crate::clock::rfc3339;

/// One header.
#[derive(Debug, Serialize)]
pub struct HeaderView {
    /// Lowercase name.
    pub name: String,
    /// Value as text (bytes that are not UTF-8 replaced); `[redacted]` when redacted.
    pub value: String,
}

fn headers(h: &[(String, String)]) -> Vec<HeaderView> {
    h.iter().map(|(name, value)| HeaderView { name: name.clone(), value: value.clone() }).collect()
}

/// A captured body.
#[derive(Debug, Serialize)]
pub struct BodyView {
    /// The whole body's size in bytes.
    pub size: u64,
    /// Only the first 64 KiB (or nothing, when bodies were dropped for memory) were kept.
    pub truncated: bool,
    /// The kept bytes as text, when they are UTF-8.
    pub text: Option<String>,
    /// The kept bytes in base64, when they are not UTF-8.
    pub base64: Option<String>,
}

impl From<&BodyCapture> for BodyView {
    fn from(b: &BodyCapture) -> Self {
        let (text, base64) = match std::str::from_utf8(&b.bytes) {
            Ok(t) => (Some(t.to_string()), None),
            // A multi-byte character cut at 64 KiB is still text.
            Err(e) if b.truncated && e.error_len().is_none() => {
                (Some(String::from_utf8_lossy(&b.bytes[..e.valid_up_to()]).into_owned()), None)
            }
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&b.bytes))),
        };
        Self { size: b.size, truncated: b.truncated, text, base64 }
    }
}

/// A capture in the list: everything but the bodies' bytes.
#[derive(Debug, Serialize)]
pub struct CaptureSummary {
    /// Unique on this relay, increasing.
    pub id: u64,
    /// RFC 3339: when the request arrived.
    pub time: String,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Host the visitor asked for.
    pub host: String,
    /// The visitor's address.
    pub peer: String,
    /// Status sent to the visitor.
    pub status: u16,
    /// Milliseconds from arrival to the end of the response.
    pub duration_ms: f64,
    /// Request body size in bytes.
    pub request_size: u64,
    /// Response body size in bytes.
    pub response_size: u64,
    /// Request headers (redacted).
    pub request_headers: Vec<HeaderView>,
    /// Response headers (redacted).
    pub response_headers: Vec<HeaderView>,
    /// For a replay: the capture it replayed.
    pub replay_of: Option<u64>,
    /// The whole request was kept, so it can be replayed.
    pub replayable: bool,
}

impl From<&Capture> for CaptureSummary {
    fn from(c: &Capture) -> Self {
        Self {
            id: c.id,
            time: rfc3339(c.at),
            method: c.method.clone(),
            path: c.path.clone(),
            host: c.host.clone(),
            peer: c.peer.to_string(),
            status: c.status,
            duration_ms: crate::clock::millis(c.duration),
            request_size: c.request_body.size,
            response_size: c.response_body.size,
            request_headers: headers(&c.request_headers),
            response_headers: headers(&c.response_headers),
            replay_of: c.replay_of,
            replayable: c.replayable(),
        }
    }
}

/// A whole capture: the summary and both bodies.
#[derive(Debug, Serialize)]
pub struct CaptureView {
    /// Everything but the bodies.
    #[serde(flatten)]
    pub summary: CaptureSummary,
    /// The request body's first bytes.
    pub request_body: BodyView,
    /// The response body's first bytes.
    pub response_body: BodyView,
    /// The bodies were not kept: the relay's inspector memory was full.
    pub bodies_dropped: bool,
}

impl From<&Capture> for CaptureView {
    fn from(c: &Capture) -> Self {
        Self {
            summary: CaptureSummary::from(c),
            request_body: BodyView::from(&c.request_body),
            response_body: BodyView::from(&c.response_body),
            bodies_dropped: c.bodies_dropped,
        }
    }
}

/// A capture as the event stream announces it.
#[derive(Debug, Serialize)]
pub struct CaptureEvent {
    /// Id, for `GET /api/v1/tunnels/{name}/requests/{id}`.
    pub id: u64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status.
    pub status: u16,
    /// Milliseconds.
    pub duration_ms: f64,
    /// For a replay: the capture it replayed.
    pub replay_of: Option<u64>,
}

impl From<&Capture> for CaptureEvent {
    fn from(c: &Capture) -> Self {
        Self {
            id: c.id,
            method: c.method.clone(),
            path: c.path.clone(),
            status: c.status,
            duration_ms: crate::clock::millis(c.duration),
            replay_of: c.replay_of,
        }
    }
}
