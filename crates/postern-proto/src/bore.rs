//! bore's wire protocol (bore-cli 0.5/0.6), so unmodified `bore local` clients can use a postern
//! relay. Frames and authentication only; the relay's `bore` module does the I/O.
//!
//! - **Framing:** one JSON value per frame, ended by a NUL byte, at most [`MAX_FRAME`] bytes
//!   with the NUL.
//! - **Client → relay:** `{"Authenticate":"<hex>"}`, `{"Hello":<port>}`, `{"Accept":"<uuid>"}`.
//! - **Relay → client:** `{"Challenge":"<uuid>"}`, `{"Hello":<port>}`, `"Heartbeat"`,
//!   `{"Connection":"<uuid>"}`, `{"Error":"<text>"}`.
//! - **Authentication:** HMAC-SHA256 keyed with SHA-256 of the secret, over the challenge UUID's
//!   16 raw bytes, sent as lowercase hex.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Longest frame, its NUL included. bore's own messages are under 100 bytes; a peer that has
/// sent this many bytes without a NUL is not speaking bore, and is told so at once.
pub const MAX_FRAME: usize = 256;

/// The port bore clients connect to; `bore local` has no flag to change it.
pub const DEFAULT_PORT: u16 = 7835;

/// What a bore client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Answer to a challenge: lowercase hex HMAC.
    Authenticate(String),
    /// Asks for a tunnel on this public port; 0 means any.
    Hello(u16),
    /// Takes the public connection with this id on this (new) connection.
    Accept(Uuid),
}

/// What the relay sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Authentication challenge, the first message when a secret is required.
    Challenge(Uuid),
    /// The tunnel is up on this public port.
    Hello(u16),
    /// Keep-alive; also how the relay notices a dead client.
    Heartbeat,
    /// A public connection waits under this id: open a new connection and `Accept` it.
    Connection(Uuid),
    /// Fatal error; the relay closes the connection after it.
    Error(String),
}

/// Why bytes could not be read as a bore frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoreError {
    /// No NUL within [`MAX_FRAME`] bytes.
    #[error("bore frame longer than {MAX_FRAME} bytes")]
    TooLong,
    /// The frame is not one of the messages.
    #[error("invalid bore message: {0}")]
    Invalid(String),
}

/// One frame: JSON, then NUL. (Serializing these enums cannot fail: no maps with non-string
/// keys, no custom impls.)
fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(msg).unwrap_or_default();
    out.push(0);
    out
}

/// A relay frame.
pub fn encode(msg: &ServerMessage) -> Vec<u8> {
    frame(msg)
}

/// A client frame (tests, and the client side if postern ever speaks it).
pub fn encode_client(msg: &ClientMessage) -> Vec<u8> {
    frame(msg)
}

/// Splits a byte stream into frames. Bytes after a frame stay buffered: on an `Accept`
/// connection they are the first bytes of the proxied stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, BoreError> {
        match self.buf.iter().position(|&b| b == 0) {
            Some(end) if end >= MAX_FRAME => Err(BoreError::TooLong),
            Some(end) => {
                let frame = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                Ok(Some(frame))
            }
            None if self.buf.len() >= MAX_FRAME => Err(BoreError::TooLong),
            None => Ok(None),
        }
    }

    /// The next complete client message, if any.
    pub fn next_client(&mut self) -> Result<Option<ClientMessage>, BoreError> {
        self.next_message()
    }

    /// The next complete server message, if any.
    pub fn next_server(&mut self) -> Result<Option<ServerMessage>, BoreError> {
        self.next_message()
    }

    fn next_message<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, BoreError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(frame) => serde_json::from_slice(&frame)
                .map(Some)
                .map_err(|e| BoreError::Invalid(format!("{e}: {:?}", String::from_utf8_lossy(&frame)))),
        }
    }

    /// Bytes received after the last frame.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// The HMAC key bore derives from a secret: SHA-256 of it.
pub fn key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The answer to `challenge` for the secret whose SHA-256 is `key`.
pub fn answer(key: &[u8; 32], challenge: &Uuid) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(challenge.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `tag` (hex) answers `challenge` for `key`; compared in constant time.
pub fn verify(key: &[u8; 32], challenge: &Uuid, tag: &str) -> bool {
    let Some(bytes) = decode_hex(tag) else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(challenge.as_bytes());
    mac.verify_slice(&bytes).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f2d8a43-1c1e-4c7a-9d0b-3a5e2f1b9c77";

    fn id() -> Uuid {
        ID.parse().unwrap()
    }

    #[test]
    fn server_messages_have_bores_exact_bytes() {
        assert_eq!(encode(&ServerMessage::Heartbeat), b"\"Heartbeat\"\0");
        assert_eq!(encode(&ServerMessage::Hello(20017)), b"{\"Hello\":20017}\0");
        assert_eq!(encode(&ServerMessage::Challenge(id())), format!("{{\"Challenge\":\"{ID}\"}}\0").as_bytes());
        assert_eq!(encode(&ServerMessage::Connection(id())), format!("{{\"Connection\":\"{ID}\"}}\0").as_bytes());
        assert_eq!(encode(&ServerMessage::Error("invalid secret".into())), b"{\"Error\":\"invalid secret\"}\0");
    }

    #[test]
    fn client_messages_parse_from_bores_bytes() {
        let mut d = Decoder::default();
        d.extend(b"{\"Hello\":0}\0{\"Authenticate\":\"ab01\"}\0");
        d.extend(format!("{{\"Accept\":\"{ID}\"}}\0rest").as_bytes());
        assert_eq!(d.next_client().unwrap(), Some(ClientMessage::Hello(0)));
        assert_eq!(d.next_client().unwrap(), Some(ClientMessage::Authenticate("ab01".into())));
        assert_eq!(d.next_client().unwrap(), Some(ClientMessage::Accept(id())));
        assert_eq!(d.next_client().unwrap(), None);
        assert_eq!(d.take_rest(), b"rest");
        let round = encode_client(&ClientMessage::Hello(8080));
        assert_eq!(round, b"{\"Hello\":8080}\0");
    }

    #[test]
    fn frames_split_anywhere_and_are_bounded() {
        let bytes = b"{\"Hello\":5432}\0";
        let mut d = Decoder::default();
        for b in bytes {
            assert_eq!(d.next_client().unwrap(), None);
            d.extend(&[*b]);
        }
        assert_eq!(d.next_client().unwrap(), Some(ClientMessage::Hello(5432)));

        let mut d = Decoder::default();
        d.extend(&[b'x'; MAX_FRAME - 1]);
        assert_eq!(d.next_frame().unwrap(), None, "255 bytes may still end in a NUL");
        d.extend(b"x\0");
        assert_eq!(d.next_frame(), Err(BoreError::TooLong), "256 bytes and then a NUL is one byte too many");
        let mut d = Decoder::default();
        d.extend(&[b'x'; MAX_FRAME]);
        assert_eq!(d.next_frame(), Err(BoreError::TooLong), "256 bytes without a NUL cannot be a frame");
        let mut d = Decoder::default();
        d.extend(&[b'x'; MAX_FRAME - 1]);
        d.extend(b"\0");
        assert_eq!(d.next_frame(), Ok(Some(vec![b'x'; MAX_FRAME - 1])), "255 bytes and a NUL is a frame");
        let mut d = Decoder::default();
        d.extend(b"{\"Hello\":70000}\0{\"Nope\":1}\0");
        assert!(matches!(d.next_client(), Err(BoreError::Invalid(_))), "port out of range");
        assert!(matches!(d.next_client(), Err(BoreError::Invalid(_))));
    }

    #[test]
    fn authentication_matches_bores_construction() {
        // HMAC-SHA256(key = SHA-256("secret"), message = the UUID's 16 bytes), lowercase hex;
        // the expected value was computed with Python's hmac and hashlib.
        let k = key("secret");
        let tag = answer(&k, &id());
        assert_eq!(tag, "3c1855d48d27a443d913e0be17cb5a8b25c6a92f194ea24b6fd2304c5fd15333");
        assert_eq!(tag.len(), 64);
        assert!(tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(verify(&k, &id(), &tag));
        assert!(verify(&k, &id(), &tag.to_uppercase()), "hex case does not matter to the check");
        assert!(!verify(&key("other"), &id(), &tag));
        assert!(!verify(&k, &Uuid::nil(), &tag));
        assert!(!verify(&k, &id(), "not hex"));
        assert!(!verify(&k, &id(), &tag[..62]));
    }
}
