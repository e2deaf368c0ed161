//! Splicing a byte stream (a socket) to an h2 stream, both ways.
//!
//! - Socket to h2: read, then wait for send capacity before each DATA frame, so a slow agent
//!   applies backpressure to the public socket instead of growing a buffer.
//! - h2 to socket: write each DATA frame, then release its flow-control capacity, so a slow
//!   public reader stops the agent through the window instead of filling the relay's memory.
//! - EOF on the socket becomes END_STREAM; END_STREAM from the peer becomes `shutdown()` on the
//!   socket's write half. Either direction may finish first (half-close).
//! - An error in either direction drops both halves, which resets the h2 stream.

use std::future::poll_fn;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// What a [`Meter`] says about a chunk it was shown, before the chunk moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Pass the chunk, then pause this long before the next (zero: go on at once). A pause
    /// throttles that direction and, through flow control, its sender.
    Go(Duration),
    /// A quota is used up: pass only the first `n` bytes of the chunk, then end the transfer
    /// with an error (a reset, never a clean end), so the far side never takes a cut
    /// transfer for a complete one.
    Cut(u64),
}

impl Pace {
    /// Pass, no pause.
    pub const ON: Self = Self::Go(Duration::ZERO);
}

/// Counts bytes as they move, for live statistics and quotas (bandwidth, volume). `read` is
/// shown each chunk read from the socket before it is sent on, `written` each chunk before it
/// is written to the socket; each answers with a [`Pace`].
pub trait Meter: Send + Sync {
    /// Bytes read from the socket (to be sent on the stream).
    fn read(&self, n: u64) -> Pace;
    /// Bytes to be written to the socket (received from the stream).
    fn written(&self, n: u64) -> Pace;
}

/// A [`Meter`] that counts nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMeter;

impl Meter for NoMeter {
    fn read(&self, _: u64) -> Pace {
        Pace::ON
    }
    fn written(&self, _: u64) -> Pace {
        Pace::ON
    }
}

/// Waits out a [`Meter`]'s pause; no timer at all for a zero one.
pub async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Bytes moved by a finished splice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Bytes read from the socket and sent on the h2 stream.
    pub socket_to_stream: u64,
    /// Bytes received on the h2 stream and written to the socket.
    pub stream_to_socket: u64,
}

/// Where a splice failed.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// The socket side failed (the public peer or the local service).
    #[error("socket error: {0}")]
    Socket(#[source] std::io::Error),
    /// The h2 stream was reset or the mux connection failed.
    #[error("tunnel stream error: {0}")]
    Stream(#[source] h2::Error),
    /// A quota (the token's volume) ended the transfer.
    #[error("the transfer was cut: a quota is used up")]
    Cut,
}

/// Copies until both directions have finished, or one fails.
pub async fn splice<R, W>(
    reader: R,
    writer: W,
    send: SendStream<Bytes>,
    recv: RecvStream,
    meter: &dyn Meter,
) -> Result<SpliceStats, SpliceError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (up, down) = tokio::try_join!(socket_to_stream(reader, send, meter), stream_to_socket(recv, writer, meter))?;
    Ok(SpliceStats { socket_to_stream: up, stream_to_socket: down })
}

/// Reads the socket until EOF, sending every byte on `send`, then ends the stream.
pub async fn socket_to_stream<R: AsyncRead + Unpin>(
    mut reader: R,
    mut send: SendStream<Bytes>,
    meter: &dyn Meter,
) -> Result<u64, SpliceError> {
    let mut total = 0u64;
    let mut want = MIN_READ;
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(want);
        let n = match reader.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                send.send_reset(Reason::CANCEL);
                return Err(SpliceError::Socket(e));
            }
        };
        if n == 0 {
            send.send_data(Bytes::new(), true).map_err(SpliceError::Stream)?;
            return Ok(total);
        }
        let pace = meter.read(n as u64);
        // Grow the read size while reads fill the buffer; idle connections keep a small one.
        if n >= want && want < MAX_READ {
            want *= 2;
        }
        match pace {
            Pace::Go(wait) => {
                total += n as u64;
                send_all(&mut send, buf.split().freeze()).await?;
                pause(wait).await;
            }
            Pace::Cut(pass) => {
                let pass = (pass as usize).min(n);
                send_all(&mut send, buf.split_to(pass).freeze()).await?;
                send.send_reset(Reason::CANCEL);
                return Err(SpliceError::Cut);
            }
        }
    }
}

/// Sends `data` on `send`, waiting for flow-control capacity as needed. Does not end the stream.
pub async fn send_all(send: &mut SendStream<Bytes>, data: Bytes) -> Result<(), SpliceError> {
    send_chunked(send, data, false).await
}

/// Sends `data` on `send` as capacity allows; with `end`, the last DATA frame carries
/// END_STREAM (saving a frame, and letting the peer finish the stream without a reset).
pub async fn send_chunked(send: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), SpliceError> {
    if data.is_empty() && end {
        return send.send_data(data, true).map_err(SpliceError::Stream);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        match poll_fn(|cx| send.poll_capacity(cx)).await {
            None => return Err(SpliceError::Stream(h2::Error::from(Reason::STREAM_CLOSED))),
            Some(Err(e)) => return Err(SpliceError::Stream(e)),
            Some(Ok(0)) => continue,
            Some(Ok(n)) => {
                let chunk = data.split_to(n.min(data.len()));
                send.send_data(chunk, end && data.is_empty()).map_err(SpliceError::Stream)?;
            }
        }
    }
    Ok(())
}

/// Writes every DATA frame of `recv` to the socket, then shuts the socket's write half down.
///
/// While the socket is busy, frames are still taken out of h2 into a backlog (small ones
/// coalesced), so they never pile up inside h2, whose per-frame overhead budget would
/// otherwise close the whole connection when a visitor sends tiny segments to a service that
/// is slow to read. Flow-control capacity is released only once bytes reach the socket, so the
/// backlog stays within the stream window.
pub async fn stream_to_socket<W: AsyncWrite + Unpin>(
    mut recv: RecvStream,
    mut writer: W,
    meter: &dyn Meter,
) -> Result<u64, SpliceError> {
    let mut total = 0u64;
    let mut backlog = Backlog::default();
    let mut open = true;
    // Bytes the meter has passed and that are not written yet, and whether it cut after them.
    let (mut passed, mut cut) = (0usize, false);
    loop {
        let Some(mut front) = backlog.front() else {
            if !open {
                break;
            }
            match recv.data().await {
                Some(chunk) => backlog.push(chunk.map_err(SpliceError::Stream)?),
                None => open = false,
            }
            continue;
        };
        if passed == 0 {
            if cut {
                return Err(SpliceError::Cut);
            }
            match meter.written(front.len() as u64) {
                Pace::Go(wait) => {
                    // Hold the window back while over a bandwidth limit: the sender slows too.
                    pause(wait).await;
                    passed = front.len();
                }
                Pace::Cut(n) => (passed, cut) = ((n as usize).min(front.len()), true),
            }
            continue;
        }
        front.truncate(passed);
        tokio::select! {
            biased;
            written = writer.write(&front) => {
                let n = written.map_err(SpliceError::Socket)?;
                if n == 0 {
                    return Err(SpliceError::Socket(std::io::ErrorKind::WriteZero.into()));
                }
                backlog.advance(n);
                passed -= n;
                total += n as u64;
                // Ignore the error: it only means the stream is already closed.
                let _ = recv.flow_control().release_capacity(n);
            }
            chunk = recv.data(), if open => match chunk {
                Some(chunk) => backlog.push(chunk.map_err(SpliceError::Stream)?),
                None => open = false,
            },
        }
    }
    writer.shutdown().await.map_err(SpliceError::Socket)?;
    Ok(total)
}

/// Frames received but not yet written: large ones kept as they came, small ones copied
/// together, so a backlog of one-byte frames costs bytes, not frames.
#[derive(Debug, Default)]
struct Backlog {
    chunks: std::collections::VecDeque<Bytes>,
    tail: BytesMut,
}

/// Frames below this size are copied into the backlog's tail instead of kept one by one.
const COALESCE_BELOW: usize = 4096;

impl Backlog {
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if chunk.len() < COALESCE_BELOW {
            self.tail.extend_from_slice(&chunk);
        } else {
            self.seal();
            self.chunks.push_back(chunk);
        }
    }

    /// Moves the coalesced tail behind the kept chunks.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// The next bytes to write (a cheap reference-counted handle), if any.
    fn front(&mut self) -> Option<Bytes> {
        if self.chunks.is_empty() {
            self.seal();
        }
        self.chunks.front().cloned()
    }

    /// Drops `n` written bytes from the front.
    fn advance(&mut self, n: usize) {
        if let Some(front) = self.chunks.front_mut() {
            if n >= front.len() {
                self.chunks.pop_front();
            } else {
                bytes::Buf::advance(front, n);
            }
        }
    }
}
