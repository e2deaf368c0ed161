//! Liveness of the agent link without a second heartbeat: the relay PINGs every interval and
//! the agent's h2 answers, so the agent only has to notice that it keeps hearing from the relay.
//!
//! One PING exchange per interval proves both ends alive. When both ends sent their own PINGs,
//! an idle relay spent half its heartbeat time answering them: at 10 000 idle agents that was
//! about 3 % of a core (issue #16, `docs/benchmarks.md`).
//!
//! [`Heard`] wraps the agent's TLS stream and counts reads that returned bytes; [`watch`]
//! returns when the count has not moved for the timeout. It counts, it does not read a clock,
//! so it runs the same under a paused tokio clock.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream that counts the reads that returned bytes.
#[derive(Debug)]
pub struct Heard<T> {
    inner: T,
    reads: Arc<AtomicU64>,
}

/// The count a [`Heard`] stream keeps, to give to [`watch`].
#[derive(Debug, Clone)]
pub struct Hearing(Arc<AtomicU64>);

impl<T> Heard<T> {
    /// Wraps `inner`; the returned [`Hearing`] follows its reads.
    pub fn new(inner: T) -> (Self, Hearing) {
        let reads = Arc::new(AtomicU64::new(0));
        (Heard { inner, reads: reads.clone() }, Hearing(reads))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Heard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Heard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Looks every `every` and returns once nothing has been read for at least `timeout` (checked
/// at that granularity). The peer's PINGs, or any other traffic, keep it waiting.
pub async fn watch(hearing: Hearing, every: Duration, timeout: Duration) -> Duration {
    let every = every.max(Duration::from_millis(1));
    let mut last = hearing.0.load(Ordering::Relaxed);
    let mut silent = Duration::ZERO;
    loop {
        tokio::time::sleep(every).await;
        let now = hearing.0.load(Ordering::Relaxed);
        if now != last {
            last = now;
            silent = Duration::ZERO;
            continue;
        }
        silent += every;
        if silent >= timeout {
            return silent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_the_watch_waiting_and_silence_ends_it() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut near, hearing) = Heard::new(near);
        let watch = tokio::spawn(watch(hearing, Duration::from_secs(1), Duration::from_secs(3)));
        // Ten seconds of one byte a second: never silent for three.
        for _ in 0..10 {
            far.write_all(b"p").await.unwrap();
            let mut b = [0u8; 1];
            near.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!watch.is_finished());
        }
        // Then nothing: the watch ends after three silent seconds, no later than four.
        let started = tokio::time::Instant::now();
        let silent = watch.await.unwrap();
        assert!(silent >= Duration::from_secs(3));
        assert!(started.elapsed() <= Duration::from_secs(4));
    }
}
