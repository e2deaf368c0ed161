//! Transport pieces shared by the relay and the agent.
//!
//! # Layout
//!
//! - [`accept`]: the accept step of every listener loop (shutdown-aware, backs off on errors).
//! - [`body`]: HTTP bodies (with trailers) over h2 streams, both directions.
//! - [`headers`]: hop-by-hop header stripping and upgrade detection.
//! - [`framed`]: reads and writes handshake frames on an async stream without ever reading past
//!   the frame, so the h2 connection that follows starts on the right byte.
//! - [`liveness`]: the agent's side of the heartbeat: it counts what it hears from the relay.
//! - [`mux`]: h2 settings both ends use (windows, frame size, stream caps), and the relay's heartbeat.
//! - [`pipe`]: copies bytes between two sockets, metered as they move, with half-close.
//! - [`probe`]: a bounded HTTP/1.1 health probe of an admin or status listener
//!   (`postern healthcheck`).
//! - [`splice`]: copies bytes between a socket and an h2 stream with flow-control backpressure and
//!   correct half-close.
//! - [`tls`]: rustls configuration: loading PEM files, the client's trust store, `--insecure`.

pub mod accept;
pub mod body;
pub mod framed;
pub mod headers;
pub mod liveness;
pub mod mux;
pub mod pipe;
pub mod probe;
pub mod splice;
pub mod tls;
