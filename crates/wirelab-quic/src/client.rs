use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quinn::{Connection, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use wirelab_core::codec::StreamRequest;
use wirelab_core::tls::ALPN_WIRELAB_QUIC;
use wirelab_core::transport::stream_by_messages;
use wirelab_core::{net, Channel, Client, ClientConfig, Error, Received, Result, Sharing};
use wirelab_quinn::{QuicConnector, ZeroRtt};

/// A quic client session: K bidirectional streams on one connection (`shared`) or one
/// connection each (`pool`).
#[derive(Debug)]
pub struct QuicClient {
    connector: QuicConnector,
    conns: Vec<(Connection, ZeroRtt)>,
    channels: Vec<QuicChannel>,
    grace: std::time::Duration,
}

/// One logical stream: one bidirectional QUIC stream.
///
/// A stream opened in 0-RTT dies with the early data if the server rejects it (quinn then
/// fails every operation on it with `ZeroRttRejected`). RFC 9001 §4.6.2 leaves the client to
/// send that data again in 1-RTT, so until the stream proves itself (its first message
/// received) the channel keeps what it sent, and on rejection opens a new stream, sends it
/// again and carries on: the caller loses nothing and `Client::early_data` says what happened.
/// The discarded stream's handles are not dropped but kept with the connection (see
/// [`Discarded`]).
#[derive(Debug)]
pub struct QuicChannel {
    id: u32,
    tx: FramedWrite<Handle<SendStream>, LengthDelimitedCodec>,
    rx: FramedRead<Handle<RecvStream>, LengthDelimitedCodec>,
    conn: Connection,
    max: usize,
    /// Sent on a stream opened in 0-RTT that has received nothing yet; `None` once the
    /// stream is known good (or was opened after the handshake).
    unproven: Option<Vec<Bytes>>,
    /// For a connection opened with early data: its discarded streams, shared by its
    /// channels; held to the end, as a new stream of this channel may carry the number of
    /// another channel's discarded one.
    discarded: Option<Arc<Mutex<Discarded>>>,
}

/// The stream handles of one connection that the server's rejection of its early data
/// discarded, kept until every channel of the connection is gone.
///
/// After a rejection quinn numbers new streams from 0 again, and it keys the waker of a task
/// blocked on a stream by the stream's number alone; dropping a handle removes the waker under
/// its number. So a discarded stream dropped after another channel's new stream with the same
/// number began to wait would take that wake-up, and the other channel would never see its
/// answer (four channels on one connection hung in every run). Kept here instead, discarded
/// handles are dropped only with the last channel, when no stream waits any more; nothing
/// waits on them (quinn fails them at once) and dropping them sends nothing.
#[derive(Debug, Default)]
struct Discarded {
    /// The rejection is known: set, under the lock, by a channel that saw it or by `connect`
    /// after opening a stream in 1-RTT, before any stream opened after it is used. A handle
    /// dropped while it is unset shares its number with no stream in use.
    rejected: bool,
    send: Vec<SendStream>,
    recv: Vec<RecvStream>,
}

fn lock(d: &Mutex<Discarded>) -> MutexGuard<'_, Discarded> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// A quinn stream handle that, if it was opened in 0-RTT on a connection whose early data
/// the server rejected, goes to the connection's [`Discarded`] instead of being dropped.
#[derive(Debug)]
struct Handle<S: Keep> {
    /// `Some` until dropped.
    stream: Option<S>,
    /// Set for a stream opened in 0-RTT.
    discarded: Option<Arc<Mutex<Discarded>>>,
}

/// A stream handle [`Discarded`] can keep.
trait Keep: Sized {
    fn keep(self, d: &mut Discarded);
}

impl Keep for SendStream {
    fn keep(self, d: &mut Discarded) {
        d.send.push(self);
    }
}

impl Keep for RecvStream {
    fn keep(self, d: &mut Discarded) {
        d.recv.push(self);
    }
}

/// The two handles of a new bidirectional stream; those of a stream opened in 0-RTT (quinn
/// tells on the receive half) with the connection's [`Discarded`].
fn handles(
    (send, recv): (SendStream, RecvStream),
    discarded: Option<&Arc<Mutex<Discarded>>>,
) -> (Handle<SendStream>, Handle<RecvStream>) {
    let discarded = discarded.filter(|_| recv.is_0rtt());
    (
        Handle {
            stream: Some(send),
            discarded: discarded.cloned(),
        },
        Handle {
            stream: Some(recv),
            discarded: discarded.cloned(),
        },
    )
}

impl<S: Keep> Handle<S> {
    fn get(&mut self) -> Pin<&mut S>
    where
        S: Unpin,
    {
        Pin::new(
            self.stream
                .as_mut()
                .expect("a stream handle is present until dropped"),
        )
    }
}

impl<S: Keep> Drop for Handle<S> {
    fn drop(&mut self) {
        let (Some(stream), Some(discarded)) = (self.stream.take(), self.discarded.take()) else {
            return;
        };
        let mut d = lock(&discarded);
        if d.rejected {
            stream.keep(&mut d);
        } else {
            // Under the lock: no stream can be opened after a rejection meanwhile.
            drop(stream);
        }
    }
}

impl AsyncWrite for Handle<SendStream> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(self.get_mut().get(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(self.get_mut().get(), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(self.get_mut().get(), cx)
    }
}

impl AsyncRead for Handle<RecvStream> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        AsyncRead::poll_read(self.get_mut().get(), cx, buf)
    }
}

/// Whether an I/O error from a quinn stream says the server rejected the 0-RTT data.
fn zero_rtt_rejected(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        matches!(
            inner.downcast_ref::<quinn::WriteError>(),
            Some(quinn::WriteError::ZeroRttRejected)
        ) || matches!(
            inner.downcast_ref::<quinn::ReadError>(),
            Some(quinn::ReadError::ZeroRttRejected)
        )
    })
}

impl QuicChannel {
    /// After a rejection of 0-RTT: a new stream (1-RTT now), and everything the old one sent,
    /// sent again. The old stream's handles go to the connection's [`Discarded`].
    async fn reopen(&mut self) -> Result<()> {
        if let Some(d) = &self.discarded {
            lock(d).rejected = true;
        }
        let stream = self
            .conn
            .open_bi()
            .await
            .map_err(wirelab_quinn::connection_error)?;
        // 1-RTT now: nothing for `Discarded`.
        let (send, recv) = handles(stream, None);
        self.tx = FramedWrite::new(send, net::length_prefixed(self.max));
        self.rx = FramedRead::new(recv, net::length_prefixed(self.max));
        for m in self.unproven.take().unwrap_or_default() {
            self.tx.feed(m).await?;
        }
        SinkExt::<Bytes>::flush(&mut self.tx).await?;
        Ok(())
    }
}

/// Opens a channel's stream. On a connection opened with early data, a stream over the limit
/// remembered with the ticket waits for credit, and quinn does not wake it when the handshake
/// ends and the server's own limit applies (after a rejection, with the count from 0 again):
/// it would wait until a timer of its task polled it again (the handshake timeout, 10 s by
/// default). So it is tried again once the server's answer to the early data is known.
async fn open_bi(
    conn: &Connection,
    zero_rtt: &mut ZeroRtt,
) -> std::result::Result<(SendStream, RecvStream), quinn::ConnectionError> {
    if zero_rtt.is_early() {
        tokio::select! {
            biased;
            r = conn.open_bi() => return r,
            _ = zero_rtt.outcome() => {}
        }
    }
    conn.open_bi().await
}

impl Client for QuicClient {
    type Channel = QuicChannel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        if cfg.sharing == Sharing::Shared && cfg.streams > cfg.quic.max_concurrent_streams {
            return Err(Error::Config(format!(
                "{} streams on one connection exceed the QUIC stream limit {}",
                cfg.streams, cfg.quic.max_concurrent_streams
            )));
        }
        let connector = QuicConnector::new(cfg, ALPN_WIRELAB_QUIC, 0)?;
        let n_conns = match cfg.sharing {
            Sharing::Shared => 1,
            Sharing::Pool => cfg.streams.max(1) as usize,
        };
        let (mut conns, mut discarded) = (Vec::with_capacity(n_conns), Vec::new());
        for _ in 0..n_conns {
            let (conn, zero_rtt) = connector.connect().await?;
            discarded.push(
                zero_rtt
                    .is_early()
                    .then(|| Arc::new(Mutex::new(Discarded::default()))),
            );
            conns.push((conn, zero_rtt));
        }
        let max = cfg.limits.max_message;
        let mut channels = Vec::with_capacity(cfg.streams as usize);
        for id in 0..cfg.streams {
            let (conn, zero_rtt) = &mut conns[id as usize % n_conns];
            // Opening needs stream credit from the server; more streams than it grants wait.
            let stream = tokio::time::timeout(cfg.timeouts.handshake, open_bi(conn, zero_rtt))
                .await
                .map_err(|_| Error::Timeout("opening a QUIC stream (over the server's limit?)"))?
                .map_err(wirelab_quinn::connection_error)?;
            let early = stream.1.is_0rtt();
            let d = &discarded[id as usize % n_conns];
            // A stream that had to wait for credit may open after the handshake (in 1-RTT):
            // after a rejection, with a discarded stream's number (see `Discarded`). The
            // server's answer is known then.
            if let Some(d) = d.as_ref().filter(|_| !early) {
                if zero_rtt.outcome().await == Some(false) {
                    lock(d).rejected = true;
                }
            }
            let (send, recv) = handles(stream, d.as_ref());
            channels.push(QuicChannel {
                id,
                tx: FramedWrite::new(send, net::length_prefixed(max)),
                rx: FramedRead::new(recv, net::length_prefixed(max)),
                conn: conn.clone(),
                max,
                unproven: early.then(Vec::new),
                discarded: d.clone(),
            });
        }
        Ok(Self {
            connector,
            conns,
            channels,
            grace: cfg.timeouts.shutdown_grace,
        })
    }

    async fn migrate(&mut self) -> Result<bool> {
        self.connector.migrate()?;
        Ok(true)
    }

    async fn early_data(&mut self) -> Option<bool> {
        match self.conns.first_mut() {
            Some((_, z)) => z.outcome().await,
            None => None,
        }
    }

    fn channels(&mut self) -> Vec<QuicChannel> {
        std::mem::take(&mut self.channels)
    }

    async fn close(self) -> Result<()> {
        // Dropping a channel finishes its send side (FIN); the connection close that follows
        // tells the server the session is over.
        drop(self.channels);
        drop(self.conns);
        self.connector.close(self.grace).await;
        Ok(())
    }
}

impl Channel for QuicChannel {
    fn id(&self) -> u32 {
        self.id
    }

    async fn send(&mut self, msg: Bytes) -> Result<()> {
        if let Some(kept) = self.unproven.as_mut() {
            kept.push(msg.clone());
        }
        match self.tx.send(msg).await {
            Err(e) if self.unproven.is_some() && zero_rtt_rejected(&e) => self.reopen().await,
            r => Ok(r?),
        }
    }

    async fn recv(&mut self) -> Result<Bytes> {
        loop {
            match self.rx.next().await {
                Some(Ok(m)) => {
                    self.unproven = None;
                    return Ok(m.freeze());
                }
                Some(Err(e)) if self.unproven.is_some() && zero_rtt_rejected(&e) => {
                    self.reopen().await?;
                }
                Some(Err(e)) => return Err(Error::Io(e)),
                None => return Err(Error::ConnectionClosed),
            }
        }
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        stream_by_messages(self, req).await
    }
}
