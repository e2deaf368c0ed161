//! Webhooks: every event, POSTed as JSON to a URL, signed, in order, with retries.
//!
//! Headers of each delivery:
//!
//! - `Content-Type: application/json`; the body is the same JSON as an SSE event's data;
//! - `X-Postern-Event`: the event type; `X-Postern-Delivery`: its sequence number;
//! - `X-Postern-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body bytes, keyed with the
//!   webhook secret. Receivers must verify it (in constant time) before trusting the body.
//!
//! A delivery that fails (connection error, timeout, non-2xx) is retried up to 5 times with
//! exponential backoff (0.5 s doubling, at most 30 s); then it is dropped with a warning and
//! the next event is delivered. Events are delivered one at a time, in order; if the receiver
//! falls more than 1024 events behind, the oldest are skipped (and logged).

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Request, Uri};
use http_body_util::Full;
use sha2::Sha256;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::RelayConfig;
use crate::outbound::{self, HttpsClient};
use crate::tunnel::events::{Event, EventView};

const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to send events, and the key to sign them with.
#[derive(Clone)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: Uri,
    /// HMAC key.
    pub secret: String,
}

impl Webhook {
    /// The webhook of a relay's settings (`--webhook` and `--webhook-secret`, checked by
    /// [`RelayConfig::validate`]), if one is set.
    pub fn from_config(config: &RelayConfig) -> Option<Self> {
        let url = config.webhook.as_ref()?.parse().ok()?;
        let secret = config.webhook_secret.as_ref()?.expose().to_string();
        Some(Self { url, secret })
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).field("secret", &"<redacted>").finish()
    }
}

/// The signature header value for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Delivers events from `events` to `hook` until `shutdown` fires.
pub async fn run(hook: Webhook, mut events: broadcast::Receiver<Event>, shutdown: CancellationToken) {
    let client = match outbound::client() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    warn!(skipped = n, url = %hook.url, "webhook receiver too slow; skipped events");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        let body = Bytes::from(serde_json::to_vec(&EventView::from(&event)).unwrap_or_default());
        let signature = sign(&hook.secret, &body);
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            match deliver(&client, &hook, &event, body.clone(), &signature).await {
                Ok(()) => {
                    debug!(seq = event.seq, attempt, "webhook delivered");
                    break;
                }
                Err(why) if attempt == ATTEMPTS => {
                    warn!(seq = event.seq, url = %hook.url, error = %why, "webhook delivery failed; giving up on this event");
                }
                Err(why) => {
                    debug!(seq = event.seq, attempt, error = %why, retry_in = ?delay, "webhook delivery failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

async fn deliver(
    client: &HttpsClient,
    hook: &Webhook,
    event: &Event,
    body: Bytes,
    signature: &str,
) -> Result<(), String> {
    let req = Request::post(hook.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("postern/", env!("CARGO_PKG_VERSION")))
        .header("x-postern-event", event.kind.as_str())
        .header("x-postern-delivery", event.seq.to_string())
        .header("x-postern-signature", signature)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
