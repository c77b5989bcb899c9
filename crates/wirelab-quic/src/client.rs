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
#[derive(Debug)]
pub struct QuicChannel {
    id: u32,
    tx: FramedWrite<SendStream, LengthDelimitedCodec>,
    rx: FramedRead<RecvStream, LengthDelimitedCodec>,
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
            let conn = &conns[id as usize % n_conns].0;
            // Opening needs stream credit from the server; more streams than it grants wait.
            let (send, recv) = tokio::time::timeout(cfg.timeouts.handshake, conn.open_bi())
                .await
                .map_err(|_| Error::Timeout("opening a QUIC stream (over the server's limit?)"))?
                .map_err(wirelab_quinn::connection_error)?;
            channels.push(QuicChannel {
                id,
                tx: FramedWrite::new(send, net::length_prefixed(max)),
                rx: FramedRead::new(recv, net::length_prefixed(max)),
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
        Ok(self.tx.send(msg).await?)
    }

    async fn recv(&mut self) -> Result<Bytes> {
        match self.rx.next().await {
            Some(Ok(m)) => Ok(m.freeze()),
            Some(Err(e)) => Err(Error::Io(e)),
            None => Err(Error::ConnectionClosed),
        }
    }

    async fn server_stream(&mut self, req: StreamRequest) -> Result<Vec<Received>> {
        stream_by_messages(self, req).await
    }
}
