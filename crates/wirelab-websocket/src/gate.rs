//! Backpressure under tungstenite: stop reading from a peer while what we owe it is unwritten.
//!
//! tungstenite answers every ping with a pong it queues itself, and keeps reading while its
//! write buffer grows (up to `max_write_buffer_size`). A peer that floods pings and never reads
//! therefore grows the server's memory, one pong per ping, with nothing the session sees.
//! [`Gated`] sits between tungstenite and the transport and closes the read side while output is
//! stuck:
//!
//! - a write that returns `Pending` (the socket, the TLS layer or the HTTP/2 stream cannot take
//!   more) marks the connection *blocked*;
//! - tungstenite calls `flush` on the transport only once its own write buffer is empty, so a
//!   completed flush marks it unblocked again and wakes a parked reader;
//! - while blocked, reads return `Pending`. tungstenite's read path retries its pending pong
//!   before reading, and the writer task retries its frames, both woken by the transport when it
//!   can take data again; whichever empties the buffer flushes, which reopens the gate.
//!
//! Frames already in tungstenite's read buffer are still parsed while the gate is shut, so what
//! a blocked connection can still add to its output is bounded by the read buffer (one read of
//! `read_buffer_size` bytes, plus a frame being assembled): a pong is never longer than the
//! ping that asked for it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport that refuses to read while its written data is not flushed. See the module
/// documentation.
#[derive(Debug)]
pub struct Gated<S> {
    inner: S,
    blocked: bool,
    parked_reader: Option<Waker>,
}

impl<S> Gated<S> {
    /// Wraps `inner`, initially open.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            blocked: false,
            parked_reader: None,
        }
    }

    /// Whether reads are held back now (a write is waiting for the transport).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The transport underneath.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn open(&mut self) {
        self.blocked = false;
        if let Some(w) = self.parked_reader.take() {
            w.wake();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.blocked {
            self.parked_reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        match &r {
            Poll::Pending => self.blocked = true,
            // The reader must see the error on its own read, not wait for a flush.
            Poll::Ready(Err(_)) => self.open(),
            Poll::Ready(Ok(_)) => {}
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if r.is_ready() {
            self.open();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        if r.is_ready() {
            self.open();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A write that cannot complete shuts reads; the flush after the peer drained reopens them.
    #[tokio::test]
    async fn blocked_write_holds_reads_until_flushed() {
        let (a, mut b) = tokio::io::duplex(16);
        let mut g = Gated::new(a);
        b.write_all(b"x").await.unwrap();
        // Fill the pipe: the second write cannot complete.
        g.write_all(&[0; 16]).await.unwrap();
        let w = futures_util::FutureExt::now_or_never(g.write(&[1; 4]));
        assert!(w.is_none(), "the pipe is full");
        assert!(g.is_blocked());
        let mut one = [0u8; 1];
        assert!(futures_util::FutureExt::now_or_never(g.read(&mut one)).is_none());
        // The peer drains; our flush completes and the byte waiting for us is readable.
        let mut sink = [0u8; 16];
        b.read_exact(&mut sink).await.unwrap();
        g.flush().await.unwrap();
        assert!(!g.is_blocked());
        g.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");
    }
}
