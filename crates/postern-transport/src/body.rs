//! HTTP bodies over h2 streams, in both directions, with trailers.
//!
//! - [`H2Body`] turns an h2 [`RecvStream`] into an `http_body::Body` that hyper can send on:
//!   DATA frames become data frames (their window capacity is released as hyper takes them, so
//!   hyper's own bounded buffer is the backpressure), trailers become a trailers frame.
//! - [`pump`] sends any `http_body::Body` on an h2 [`SendStream`], waiting for window capacity
//!   before each chunk, then trailers or END_STREAM.
//!
//! Neither ever holds a whole body: a 1 GiB upload moves through in window-sized pieces.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::splice::{pause, send_chunked, Pace, SpliceError};

/// An h2 stream's incoming half as an HTTP body.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
}

impl H2Body {
    /// Wraps `recv`.
    pub fn new(recv: RecvStream) -> Self {
        Self { recv, data_done: false }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Why a body could not be pumped.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The source body failed (the sender went away mid-body).
    #[error("body source failed: {0}")]
    Source(String),
    /// The h2 stream failed.
    #[error(transparent)]
    Stream(#[from] SpliceError),
}

/// Sends every frame of `body` on `send`, then ends the stream (with trailers if the body has
/// them). On a source error the stream is reset, so the peer never mistakes a cut body for a
/// complete one.
///
/// `counted` is shown each chunk's size before it is sent and answers with a [`Pace`]: a pause
/// before the next chunk (bandwidth limits), or a cut, which resets the stream after the bytes
/// it passes.
pub async fn pump<B>(
    body: B,
    mut send: SendStream<Bytes>,
    counted: &(dyn Fn(u64) -> Pace + Sync),
) -> Result<u64, PumpError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut total = 0u64;
    loop {
        match body.frame().await {
            None => {
                send.send_data(Bytes::new(), true).map_err(|e| PumpError::Stream(SpliceError::Stream(e)))?;
                return Ok(total);
            }
            Some(Err(e)) => {
                send.send_reset(Reason::CANCEL);
                return Err(PumpError::Source(e.to_string()));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let wait = match counted(data.len() as u64) {
                        Pace::Go(wait) => wait,
                        Pace::Cut(pass) => {
                            data.truncate(pass as usize);
                            send_chunked(&mut send, data, false).await?;
                            send.send_reset(Reason::CANCEL);
                            return Err(PumpError::Stream(SpliceError::Cut));
                        }
                    };
                    total += data.len() as u64;
                    // When this was the last frame, END_STREAM rides on it.
                    let last = body.is_end_stream();
                    send_chunked(&mut send, data, last).await?;
                    pause(wait).await;
                    if last {
                        return Ok(total);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.send_trailers(trailers).map_err(|e| PumpError::Stream(SpliceError::Stream(e)))?;
                        return Ok(total);
                    }
                }
            },
        }
    }
}

/// Any body error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that reports the size of every data frame it yields, pauses before the next frame
/// when the report asks it to (bandwidth limits), and ends in an error after the bytes a
/// [`Pace::Cut`] passes (a used-up volume), so the receiver never takes the body for whole.
#[derive(Debug)]
pub struct Counted<B, F> {
    inner: B,
    counted: F,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: bool,
}

impl<B, F: Fn(u64) -> Pace> Counted<B, F> {
    /// Wraps `inner`; `counted` is shown each data frame's length before the frame is yielded.
    pub fn new(inner: B, counted: F) -> Self {
        Self { inner, counted, pause: None, cut: false }
    }
}

impl<B, F> Body for Counted<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: Fn(u64) -> Pace + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.cut {
            return Poll::Ready(Some(Err(Box::new(SpliceError::Cut))));
        }
        if let Some(p) = self.pause.as_mut() {
            ready!(p.as_mut().poll(cx));
            self.pause = None;
        }
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                match (self.counted)(data.len() as u64) {
                    Pace::Go(wait) if !wait.is_zero() => self.pause = Some(Box::pin(tokio::time::sleep(wait))),
                    Pace::Go(_) => {}
                    Pace::Cut(pass) => {
                        self.cut = true;
                        data.truncate(pass as usize);
                    }
                }
                Frame::data(data)
            }
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
