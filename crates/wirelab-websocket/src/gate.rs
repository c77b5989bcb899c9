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
//!   before reading, and the session retries the frame it holds, both woken by the transport
//!   when it can take data again; whichever empties the buffer flushes, which reopens the gate.
//!
//! Frames already in tungstenite's read buffer are still parsed while the gate is shut, so what
//! a blocked connection can still add to its output is bounded by the read buffers (one read of
//! [`Limits::read_buffer`](wirelab_core::Limits::read_buffer) bytes, plus a frame being
//! assembled): a pong is never longer than the ping that asked for it.
//!
//! [`Gated`] also does the reading from the transport, so that an idle connection holds no read
//! buffer: tungstenite is given a small buffer of its own ([`TUNGSTENITE_READ`], allocated and
//! zero-filled up front), and a read it asks for goes through a buffer on the stack of up to
//! `read_size` bytes. What tungstenite did not take is kept on the heap until it does, and that
//! allocation is released as soon as it is empty. A read as large as `read_size` goes straight to
//! the transport.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read buffer tungstenite keeps per connection (its `read_buffer_size`; it allocates and
/// zero-fills it when the connection starts). Larger reads are done by [`Gated`] underneath.
pub const TUNGSTENITE_READ: usize = 1024;

/// The largest read [`Gated`] makes through its stack buffer.
const STACK_READ: usize = 16 << 10;

/// A transport that refuses to read while its written data is not flushed. See the module
/// documentation.
#[derive(Debug)]
pub struct Gated<S> {
    inner: S,
    blocked: bool,
    parked_reader: Option<Waker>,
    /// Bytes read from the transport that the reader has not taken yet; no allocation when
    /// empty.
    ahead: BytesMut,
    /// Bytes per read from the transport (at most [`STACK_READ`] through the stack buffer).
    read_size: usize,
}

impl<S> Gated<S> {
    /// Wraps `inner`, initially open, reading from it up to `read_size` bytes at a time.
    pub fn new(inner: S, read_size: usize) -> Self {
        Self {
            inner,
            blocked: false,
            parked_reader: None,
            ahead: BytesMut::new(),
            read_size: read_size.clamp(1, STACK_READ),
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
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = buf.remaining().min(this.ahead.len());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            if this.ahead.is_empty() {
                // Released: an idle connection holds no read buffer.
                this.ahead = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= this.read_size {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut tmp = ReadBuf::uninit(&mut stack[..this.read_size]);
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut tmp))?;
        let got = tmp.filled();
        let n = buf.remaining().min(got.len());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            this.ahead.extend_from_slice(&got[n..]);
        }
        Poll::Ready(Ok(()))
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
        let mut g = Gated::new(a, 8);
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

    /// Small reads are served from one larger read of the transport; the rest is kept (and
    /// released once taken); a read as large as `read_size` goes straight through.
    #[tokio::test]
    async fn reads_ahead_and_releases() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut g = Gated::new(a, 16);
        b.write_all(b"0123456789abcdefXYZ").await.unwrap();
        let mut two = [0u8; 2];
        g.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"01");
        assert_eq!(g.ahead.len(), 14, "one read of read_size bytes");
        let mut rest = [0u8; 14];
        g.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"23456789abcdef");
        assert_eq!(g.ahead.capacity(), 0, "released when empty");
        let mut big = [0u8; 16];
        let n = g.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], b"XYZ");
        assert_eq!(g.ahead.capacity(), 0, "a large read is not buffered");
        drop(b);
        assert_eq!(g.read(&mut big).await.unwrap(), 0, "end of stream");
    }
}
