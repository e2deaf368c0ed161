//! HTTP/2 settings for the reverse mux, and the relay's PING heartbeat (the agent answers it and
//! watches that it keeps coming, see [`crate::liveness`]).
//!
//! Small windows are the classic throughput bug of multiplexed tunnels (frp#2987,
//! hashicorp/yamux#24): with a 256 KiB window and 1 ms of RTT a stream cannot exceed 256 MB/s.
//! We advertise large windows on both ends and release capacity as soon as bytes are written to
//! the socket, so flow control is backpressure, not a throttle.

/// Per-stream receive window.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// Connection-wide receive window.
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Largest DATA frame payload we accept.
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;
/// Streams the agent lets the relay open at once on one connection. The relay's own cap
/// (`--max-streams-per-agent`, default 10 000) is checked against it, so the relay never
/// queues streams behind a limit it does not know about.
pub const MAX_CONCURRENT_STREAMS: u32 = 16_384;
/// Largest public request head the relay accepts (`--http-max-header-bytes` is capped here).
pub const MAX_PUBLIC_HEADER_BYTES: usize = 1024 * 1024;
/// Cap on a header block on the agent link: the largest public request head the relay can
/// accept, plus room for the forwarding headers and the stream metadata the relay adds, so a
/// request the public edge took is never refused by the agent for its size.
pub const MAX_HEADER_LIST_SIZE: u32 = (MAX_PUBLIC_HEADER_BYTES + 64 * 1024) as u32;
/// Bytes the sender may queue per stream above the peer's window.
pub const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams reset by the relay before the agent accepted them, waiting in the agent's accept
/// queue. Every visitor who connects and leaves (a `nmap -sT` scan, a cancelled request) makes
/// one, and the agent pops them as fast as it reads; the cap only bounds the queue's memory
/// (a few hundred bytes each) against a relay that floods faster than one read batch.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 65_536;
/// Locally reset streams remembered (for `RESET_STREAM_DURATION`) so that frames already in
/// flight for them are ignored quietly; past this, the oldest is forgotten and a late frame
/// only costs a `STREAM_CLOSED` reset of that stream.
pub const MAX_REMEMBERED_RESETS: usize = 4096;
/// Overhead credit for DATA frames smaller than 256 bytes that sit unread in h2's buffers.
/// Visitors choose the size of the frames the relay forwards (one per segment they send), so
/// the budget covers a whole connection window of them; the splice also drains frames into
/// its own buffer while its socket is busy, so they never pile up inside h2.
pub const DATA_FRAME_BUDGET: usize = CONNECTION_WINDOW as usize;

/// h2 client builder for the relay side.
///
/// The agent is authenticated and the relay opens every stream, so the limits h2 keeps against
/// an anonymous peer are set for a trusted one (each is explained in `docs/security.md`).
pub fn client_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false)
        // The relay resets a stream whenever a visitor goes away mid-stream; under churn that
        // is thousands a second, all legitimate. h2's default cap (1024 per connection, for
        // its lifetime) would tear the whole agent connection down.
        .max_local_error_reset_streams(None)
        .max_concurrent_reset_streams(MAX_REMEMBERED_RESETS)
        .data_frame_budget(DATA_FRAME_BUDGET);
    b
}

/// h2 server builder for the agent side.
///
/// The relay is the agent's authenticated peer, not an anonymous client: the resets it sends
/// are visitors going away, not an attack on the agent, so h2's rapid-reset defaults (which
/// close the connection after 20 pending-accept resets) would let any visitor drop every
/// tunnel of the agent.
pub fn server_builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(None)
        .max_concurrent_reset_streams(MAX_REMEMBERED_RESETS)
        .data_frame_budget(DATA_FRAME_BUDGET);
    b
}

/// Why a heartbeat stopped.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The PING could not be sent: the connection failed.
    #[error("connection failed: {0}")]
    Mux(#[source] h2::Error),
    /// No PING answer within the timeout: the peer is dead or the path black-holed.
    #[error("no PING answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Heartbeats start on a shared grid of this step of wall-clock time, so the PINGs of many
/// idle connections go out, and their answers come back, in batches that one wake-up of a
/// runtime worker serves, instead of one wake-up each (issue #16: with 2,000 idle agents, one
/// `epoll_wait` per 9 PINGs).
pub const BEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// Time from `now` to the next multiple of [`BEAT`] since the Unix epoch (`BEAT` at most).
pub fn until_next_beat(now: std::time::SystemTime) -> std::time::Duration {
    let step = BEAT.as_nanos();
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    std::time::Duration::from_nanos((step - since % step) as u64)
}

/// Sends an h2 PING every `interval` (rounded up to the next [`BEAT`]) on the connection owning
/// `ping_pong` and returns when one is not answered within `timeout` (or the connection fails).
/// Never returns without a `PingPong` (it was taken already).
pub async fn heartbeat(
    ping_pong: Option<h2::PingPong>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
) -> HeartbeatError {
    let Some(mut pp) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        let due = interval + until_next_beat(std::time::SystemTime::now() + interval);
        tokio::time::sleep(due).await;
        match tokio::time::timeout(timeout, pp.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return HeartbeatError::Mux(e),
            Err(_) => return HeartbeatError::Timeout(timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn beats_fall_on_a_shared_grid() {
        let on = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(until_next_beat(on), BEAT);
        assert_eq!(until_next_beat(on + Duration::from_millis(100)), BEAT - Duration::from_millis(100));
        for ms in [1, 99, 249, 250, 251, 7777] {
            let at = on + Duration::from_millis(ms);
            let next = at + until_next_beat(at);
            assert_eq!(next.duration_since(UNIX_EPOCH).unwrap().as_nanos() % BEAT.as_nanos(), 0);
            assert!(until_next_beat(at) <= BEAT && until_next_beat(at) > Duration::ZERO);
        }
    }
}
