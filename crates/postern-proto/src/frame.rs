//! Frame layout and the incremental decoder.
//!
//! ```text
//!  0       1       2       3       4       5       6
//! +-------+-------+-------+-------+-------+-------+---------------------+
//! | 'P'   | 'S'   |  ver  | kind  |  body length  |  body (JSON, UTF-8) |
//! | 0x50  | 0x53  |  0x01 |  u8   |  u16, big end |  0..=16384 bytes    |
//! +-------+-------+-------+-------+-------+-------+---------------------+
//! ```
//!
//! The header is parsed and the length checked against [`MAX_BODY_LEN`] before any body byte is
//! buffered, so a hostile peer cannot make us allocate more than `6 + MAX_BODY_LEN` bytes.

use bytes::{Buf, BufMut, BytesMut};

use crate::message::{Message, MessageKind};
use crate::PROTOCOL_VERSION;

/// Length of the fixed frame header.
pub const FRAME_HEADER_LEN: usize = 6;
/// Largest body a frame may carry.
pub const MAX_BODY_LEN: usize = 16 * 1024;
/// The two magic bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"PS";

/// Why a byte sequence is not a valid frame. Every variant is the peer's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The first two bytes are not `PS`: the peer does not speak postern (or sent garbage).
    #[error("peer sent bad frame magic {found:02x?}, expected \"PS\": not a postern peer")]
    BadMagic {
        /// The bytes found where the magic should be.
        found: [u8; 2],
    },
    /// The frame's version is one we do not speak.
    #[error("peer speaks protocol version {found}, this build speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// Version byte found in the frame.
        found: u8,
    },
    /// Unknown message kind.
    #[error("peer sent unknown message kind {0}")]
    UnknownKind(u8),
    /// The declared body length exceeds [`MAX_BODY_LEN`].
    #[error("peer declared a {len}-byte frame body, the limit is {MAX_BODY_LEN}")]
    TooLarge {
        /// The declared length.
        len: usize,
    },
    /// The body is not valid JSON for its kind.
    #[error("peer sent a malformed {kind} body: {reason}")]
    Malformed {
        /// Name of the message kind.
        kind: &'static str,
        /// What the JSON parser said.
        reason: String,
    },
    /// The input ended in the middle of a frame.
    #[error("peer closed the connection mid-frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes received of the current frame.
        have: usize,
        /// Bytes the frame needs in total (at least the header).
        need: usize,
    },
}

/// Why a message could not be encoded. This is our fault, not the peer's.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_BODY_LEN`].
    #[error("message body of {len} bytes exceeds the {MAX_BODY_LEN}-byte frame limit")]
    TooLarge {
        /// The encoded length.
        len: usize,
    },
    /// serde_json refused the value.
    #[error("message could not be serialised: {0}")]
    Json(#[from] serde_json::Error),
}

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message kind byte.
    pub kind: MessageKind,
    /// Body length, already checked against [`MAX_BODY_LEN`].
    pub body_len: usize,
}

impl FrameHeader {
    /// Parses and validates the 6 header bytes.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Result<Self, DecodeError> {
        if b[0..2] != MAGIC {
            return Err(DecodeError::BadMagic { found: [b[0], b[1]] });
        }
        if b[2] != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: b[2] });
        }
        let kind = MessageKind::from_byte(b[3]).ok_or(DecodeError::UnknownKind(b[3]))?;
        let body_len = u16::from_be_bytes([b[4], b[5]]) as usize;
        if body_len > MAX_BODY_LEN {
            return Err(DecodeError::TooLarge { len: body_len });
        }
        Ok(Self { kind, body_len })
    }

    /// Total frame length, header included.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len
    }
}

/// Encodes `msg` as one frame appended to `dst`.
pub fn encode(msg: &Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let body = msg.to_body()?;
    if body.len() > MAX_BODY_LEN {
        return Err(EncodeError::TooLarge { len: body.len() });
    }
    dst.reserve(FRAME_HEADER_LEN + body.len());
    dst.put_slice(&MAGIC);
    dst.put_u8(PROTOCOL_VERSION);
    dst.put_u8(msg.kind() as u8);
    dst.put_u16(body.len() as u16);
    dst.put_slice(&body);
    Ok(())
}

/// Encodes `msg` into a fresh buffer.
pub fn encode_to_vec(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut b = BytesMut::new();
    encode(msg, &mut b)?;
    Ok(b.to_vec())
}

/// Incremental decoder: feed it whatever bytes arrived, take out whole messages.
///
/// After an error the decoder is poisoned: the stream is out of sync and must be dropped.
#[derive(Debug, Default)]
pub struct Decoder {
    header: Option<FrameHeader>,
}

impl Decoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one message out of `src` if a whole frame is buffered. Consumed bytes are removed
    /// from `src`; a partial frame stays in it.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let header = match self.header {
            Some(h) => h,
            None => {
                if src.len() < FRAME_HEADER_LEN {
                    // Reject garbage as soon as the magic is visible, not after 6 bytes.
                    check_magic_prefix(src)?;
                    return Ok(None);
                }
                let mut raw = [0u8; FRAME_HEADER_LEN];
                raw.copy_from_slice(&src[..FRAME_HEADER_LEN]);
                let h = FrameHeader::parse(&raw)?;
                src.advance(FRAME_HEADER_LEN);
                self.header = Some(h);
                h
            }
        };
        if src.len() < header.body_len {
            src.reserve(header.body_len - src.len());
            return Ok(None);
        }
        let body = src.split_to(header.body_len);
        self.header = None;
        Message::from_body(header.kind, &body).map(Some)
    }

    /// Call at end of input: an error if a frame was left half-read.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if let Some(msg) = self.decode(src)? {
            return Ok(Some(msg));
        }
        match self.header {
            Some(h) => Err(DecodeError::Truncated { have: FRAME_HEADER_LEN + src.len(), need: h.frame_len() }),
            None if !src.is_empty() => Err(DecodeError::Truncated { have: src.len(), need: FRAME_HEADER_LEN }),
            None => Ok(None),
        }
    }
}

fn check_magic_prefix(src: &[u8]) -> Result<(), DecodeError> {
    let n = src.len().min(2);
    if src[..n] != MAGIC[..n] {
        let mut found = [0u8; 2];
        found[..n].copy_from_slice(&src[..n]);
        return Err(DecodeError::BadMagic { found });
    }
    Ok(())
}
