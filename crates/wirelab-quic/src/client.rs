use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quinn::{Connection, RecvStream, SendStream};
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
#[derive(Debug)]
pub struct QuicChannel {
    id: u32,
    tx: FramedWrite<SendStream, LengthDelimitedCodec>,
    rx: FramedRead<RecvStream, LengthDelimitedCodec>,
    conn: Connection,
    max: usize,
    /// Sent on a stream opened in 0-RTT that has received nothing yet; `None` once the
    /// stream is known good (or was opened after the handshake).
    unproven: Option<Vec<Bytes>>,
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
    /// sent again.
    async fn reopen(&mut self) -> Result<()> {
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(wirelab_quinn::connection_error)?;
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
        let mut conns = Vec::with_capacity(n_conns);
        for _ in 0..n_conns {
            conns.push(connector.connect().await?);
        }
        let max = cfg.limits.max_message;
        let mut channels = Vec::with_capacity(cfg.streams as usize);
        for id in 0..cfg.streams {
            let (conn, zero_rtt) = &mut conns[id as usize % n_conns];
            // Opening needs stream credit from the server; more streams than it grants wait.
            let (send, recv) =
                tokio::time::timeout(cfg.timeouts.handshake, open_bi(conn, zero_rtt))
                    .await
                    .map_err(|_| {
                        Error::Timeout("opening a QUIC stream (over the server's limit?)")
                    })?
                    .map_err(wirelab_quinn::connection_error)?;
            let early = zero_rtt.is_early();
            channels.push(QuicChannel {
                id,
                tx: FramedWrite::new(send, net::length_prefixed(max)),
                rx: FramedRead::new(recv, net::length_prefixed(max)),
                conn: conn.clone(),
                max,
                unproven: early.then(Vec::new),
            });
        }
        Ok(Self {
            connector,
            conns,
            channels,
            grace: cfg.timeouts.shutdown_grace,
        })
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
