//! Copying between two sockets, both ways, counted as the bytes move.
//!
//! Used where a public connection meets a client's own connection directly (the bore-compatible
//! endpoint), with no h2 stream between them. Like [`crate::splice`]:
//!
//! - every chunk is counted into a [`Meter`] just before it is written, so live statistics and
//!   byte counters move during a long transfer, not only when it ends, and a used-up quota cuts
//!   the copy there ([`Pace::Cut`]);
//! - the meter's pause (a bandwidth quota) is served before the next read, so a throttled
//!   direction stops reading and TCP flow control slows its sender; nothing is buffered beyond
//!   one read;
//! - EOF on one side shuts the other side's write half (half-close); either direction may end
//!   first, and the copy ends when both have, or when one fails.
//!
//! Read buffers start small and grow while reads fill them, so idle connections stay cheap.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::splice::{pause, Meter, Pace, SpliceError};

const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Bytes moved by a finished [`pipe`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Bytes read from the public socket and written to the other one.
    pub from_public: u64,
    /// Bytes read from the other socket and written to the public one.
    pub to_public: u64,
}

/// Copies until both directions have finished, or one fails. Bytes read from `public` are
/// counted with [`Meter::read`], bytes written to it with [`Meter::written`], matching how the
/// h2 splice counts a public socket.
pub async fn pipe<PR, PW, OR, OW>(
    (public_read, public_write): (PR, PW),
    (other_read, other_write): (OR, OW),
    meter: &dyn Meter,
) -> std::io::Result<PipeStats>
where
    PR: AsyncRead + Unpin,
    PW: AsyncWrite + Unpin,
    OR: AsyncRead + Unpin,
    OW: AsyncWrite + Unpin,
{
    let (from_public, to_public) = tokio::try_join!(
        copy(public_read, other_write, |n| meter.read(n)),
        copy(other_read, public_write, |n| meter.written(n)),
    )?;
    Ok(PipeStats { from_public, to_public })
}

/// One direction: read, write all, count, pause as the meter asks; shut the writer down on EOF.
async fn copy<R, W>(mut reader: R, mut writer: W, count: impl Fn(u64) -> Pace) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; MIN_READ];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            writer.shutdown().await?;
            return Ok(total);
        }
        let wait = match count(n as u64) {
            Pace::Go(wait) => wait,
            Pace::Cut(pass) => {
                let pass = (pass as usize).min(n);
                writer.write_all(&buf[..pass]).await?;
                return Err(std::io::Error::other(SpliceError::Cut));
            }
        };
        writer.write_all(&buf[..n]).await?;
        total += n as u64;
        if n == buf.len() && buf.len() < MAX_READ {
            buf.resize(buf.len() * 2, 0);
        }
        pause(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Default)]
    struct Counting {
        read: AtomicU64,
        written: AtomicU64,
    }

    impl Meter for Counting {
        fn read(&self, n: u64) -> Pace {
            self.read.fetch_add(n, Ordering::SeqCst);
            Pace::ON
        }
        fn written(&self, n: u64) -> Pace {
            self.written.fetch_add(n, Ordering::SeqCst);
            Pace::ON
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        // visitor <-> public ... pipe ... other <-> service
        let (mut visitor, public) = pair().await;
        let (other, mut service) = pair().await;
        let meter = Counting::default();
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let piping = pipe(public.into_split(), other.into_split(), &meter);
        let visiting = async {
            visitor.write_all(&up).await.unwrap();
            visitor.shutdown().await.unwrap();
            let mut back = Vec::new();
            visitor.read_to_end(&mut back).await.unwrap();
            back
        };
        let serving = async {
            let mut got = Vec::new();
            service.read_to_end(&mut got).await.unwrap();
            // The visitor's EOF arrived while this side can still answer (half-close).
            service.write_all(&down).await.unwrap();
            service.shutdown().await.unwrap();
            got
        };
        let (stats, back, got) = tokio::join!(piping, visiting, serving);
        let stats = stats.unwrap();
        assert_eq!(got, up);
        assert_eq!(back, down);
        assert_eq!(stats, PipeStats { from_public: up.len() as u64, to_public: down.len() as u64 });
        assert_eq!(meter.read.load(Ordering::SeqCst), up.len() as u64);
        assert_eq!(meter.written.load(Ordering::SeqCst), down.len() as u64);
    }
}
