//! HTTP/2 settings for the reverse mux, and the PING heartbeat both ends run.
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
/// Streams the agent lets the relay open at once on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 8192;
/// Cap on a header block, for the few metadata headers a stream carries (HTTP adds more later).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Bytes the sender may queue per stream above the peer's window.
pub const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// h2 client builder for the relay side.
pub fn client_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false)
        // The relay resets a stream whenever a visitor goes away mid-stream; under churn that
        // is thousands a second, all legitimate. h2's default cap (1024 per connection) would
        // tear the whole agent connection down (found by the wrk `Connection: close` benchmark).
        .max_local_error_reset_streams(None);
    b
}

/// h2 server builder for the agent side.
pub fn server_builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(None);
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

/// Sends an h2 PING every `interval` on the connection owning `ping_pong` and returns when one
/// is not answered within `timeout` (or the connection fails). Never returns without a
/// `PingPong` (it was taken already).
pub async fn heartbeat(
    ping_pong: Option<h2::PingPong>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
) -> HeartbeatError {
    let Some(mut pp) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pp.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return HeartbeatError::Mux(e),
            Err(_) => return HeartbeatError::Timeout(timeout),
        }
    }
}
