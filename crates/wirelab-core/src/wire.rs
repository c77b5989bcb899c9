//! Bytes on the wire, counted at the client's sockets.
//!
//! A [`WireCounters`] in [`crate::ClientConfig::wire`] makes every socket the client opens count
//! what it hands to the kernel and gets back: for TCP transports the TCP payload (TLS records,
//! HTTP and WebSocket framing, service messages), for QUIC the UDP payload (QUIC packets with
//! their headers, ACK frames and crypto). Kernel headers (IP, TCP, UDP) and TCP's bare ACKs are
//! not included: they never pass the socket. One relaxed atomic add per read or write.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Running totals of one client's socket traffic.
#[derive(Debug, Default)]
pub struct WireCounters {
    tx_bytes: AtomicU64,
    rx_bytes: AtomicU64,
    tx_datagrams: AtomicU64,
    rx_datagrams: AtomicU64,
}

/// A copy of [`WireCounters`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireSnapshot {
    /// Bytes written to the sockets.
    pub tx_bytes: u64,
    /// Bytes read from the sockets.
    pub rx_bytes: u64,
    /// UDP datagrams sent (0 for TCP transports).
    pub tx_datagrams: u64,
    /// UDP datagrams received (0 for TCP transports).
    pub rx_datagrams: u64,
}

impl WireSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &WireSnapshot) -> WireSnapshot {
        WireSnapshot {
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            tx_datagrams: self.tx_datagrams.saturating_sub(earlier.tx_datagrams),
            rx_datagrams: self.rx_datagrams.saturating_sub(earlier.rx_datagrams),
        }
    }

    /// Bytes both ways.
    pub fn total_bytes(&self) -> u64 {
        self.tx_bytes + self.rx_bytes
    }
}

impl WireCounters {
    /// New counters at zero, shareable between sockets.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts bytes (and, for UDP, datagrams) sent.
    pub fn sent(&self, bytes: usize, datagrams: usize) {
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tx_datagrams
            .fetch_add(datagrams as u64, Ordering::Relaxed);
    }

    /// Counts bytes (and, for UDP, datagrams) received.
    pub fn received(&self, bytes: usize, datagrams: usize) {
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.rx_datagrams
            .fetch_add(datagrams as u64, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn snapshot(&self) -> WireSnapshot {
        WireSnapshot {
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_datagrams: self.tx_datagrams.load(Ordering::Relaxed),
            rx_datagrams: self.rx_datagrams.load(Ordering::Relaxed),
        }
    }
}

/// A byte stream that counts its traffic into optional [`WireCounters`].
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    counters: Option<Arc<WireCounters>>,
}

impl<S> Counted<S> {
    /// Wraps `inner`; with `None` it counts nothing.
    pub fn new(inner: S, counters: Option<Arc<WireCounters>>) -> Self {
        Self { inner, counters }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl Counted<TcpStream> {
    /// Splits into owned halves that count into the same counters.
    pub fn into_split(self) -> (Counted<OwnedReadHalf>, Counted<OwnedWriteHalf>) {
        let (rd, wr) = self.inner.into_split();
        (
            Counted::new(rd, self.counters.clone()),
            Counted::new(wr, self.counters),
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(c)) = (&r, &this.counters) {
            c.received(buf.filled().len() - before, 0);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(c)) = (&r, &this.counters) {
            c.sent(*n, 0);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(c)) = (&r, &this.counters) {
            c.sent(*n, 0);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_both_directions() {
        let (a, mut b) = tokio::io::duplex(1024);
        let counters = WireCounters::new();
        let mut a = Counted::new(a, Some(counters.clone()));
        a.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        a.read_exact(&mut got).await.unwrap();
        let s = counters.snapshot();
        assert_eq!((s.tx_bytes, s.rx_bytes), (5, 3));
        assert_eq!(s.since(&WireSnapshot::default()).total_bytes(), 8);
    }
}
