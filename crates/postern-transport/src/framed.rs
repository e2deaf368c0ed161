//! Handshake frame I/O on an async byte stream.
//!
//! Reads use `read_exact` on the header and then on the body, so no byte past the frame is
//! consumed: after the handshake the same stream carries HTTP/2 and nothing may be lost.

use bytes::BytesMut;
use postern_proto::frame::{encode, EncodeError, FrameHeader};
use postern_proto::{DecodeError, Message, FRAME_HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The peer sent bytes that are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// We could not encode our own message.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The peer closed the connection before a whole frame arrived.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The socket failed.
    #[error("i/o error during the handshake: {0}")]
    Io(#[source] std::io::Error),
}

fn io_err(e: std::io::Error) -> FrameIoError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameIoError::Closed
    } else {
        FrameIoError::Io(e)
    }
}

/// Reads exactly one frame. The caller puts a timeout around it.
pub async fn read_message<R: AsyncRead + Unpin>(io: &mut R) -> Result<Message, FrameIoError> {
    let mut raw = [0u8; FRAME_HEADER_LEN];
    io.read_exact(&mut raw).await.map_err(io_err)?;
    let header = FrameHeader::parse(&raw)?;
    let mut body = vec![0u8; header.body_len];
    io.read_exact(&mut body).await.map_err(io_err)?;
    Ok(Message::from_body(header.kind, &body)?)
}

/// Writes one frame and flushes it.
pub async fn write_message<W: AsyncWrite + Unpin>(io: &mut W, msg: &Message) -> Result<(), FrameIoError> {
    let mut buf = BytesMut::new();
    encode(msg, &mut buf)?;
    io.write_all(&buf).await.map_err(FrameIoError::Io)?;
    io.flush().await.map_err(FrameIoError::Io)
}
