//! postern's wire protocol, sans-IO: no sockets, no runtime, only bytes in and values out.
//!
//! # Layout
//!
//! - [`access`]: per-tunnel public access rules (hashed basic auth, header key, IP allowlist).
//! - [`bore`]: bore's wire format (NUL-framed JSON) and its HMAC challenge.
//! - [`claims`]: what a token says, and the one request and validation that mint it.
//! - [`frame`]: the 6-byte frame header and the incremental [`frame::Decoder`] that turns a byte
//!   buffer into [`Message`]s. Every length is capped before anything is allocated.
//! - [`hostname`]: the public host name grammar `<id>-<port>.<domain>`.
//! - [`route`]: which tunnel a public HTTP request is for, from its target and `Host` fields.
//! - [`message`]: the messages themselves: the handshake (`Hello`, then `Welcome` or `Refused`)
//!   and the control messages that travel on the control stream once the mux is up.
//! - [`request`]: the API body that asks for a tunnel (`{kind, port, ...}`), shared by the
//!   relay's remote management and the client's local control API.
//! - [`token`]: signed, scoped tokens (HMAC-SHA256), verified offline.
//! - [`stream`]: the metadata the relay puts in the headers of every h2 stream it opens to an
//!   agent (stream kind, tunnel name, peer address).
//! - [`volume`]: a token's bytes per calendar period (`10GB/month`), and the periods' bounds.
//!
//! The byte layout is documented, byte by byte, in `docs/protocol.md`.

pub mod access;
pub mod bore;
pub mod claims;
pub mod frame;
pub mod hostname;
pub mod message;
pub mod request;
pub mod route;
pub mod stream;
pub mod token;
pub mod volume;

pub use frame::{DecodeError, Decoder, EncodeError, FrameHeader, FRAME_HEADER_LEN, MAX_BODY_LEN};
pub use message::{
    ChangeOutcome, Control, Hello, Message, RefuseCode, Refused, TunnelChange, TunnelGrant, TunnelKind, TunnelSpec,
    Welcome,
};

/// ALPN protocol id spoken on the relay's control port.
pub const ALPN: &[u8] = b"postern/1";

/// Version of the handshake and control protocol. Carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;
