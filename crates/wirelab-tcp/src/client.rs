use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use wirelab_core::mux::{self, MuxChannel, MuxSession, MuxWriter};
use wirelab_core::wire::Counted;
use wirelab_core::{net, Client, ClientConfig, Error, Result};

/// A tcp client session: one connection (`shared`) or one per logical stream (`pool`).
#[derive(Debug)]
pub struct TcpClient(MuxSession);

struct Writer(FramedWrite<Counted<OwnedWriteHalf>, LengthDelimitedCodec>);

impl MuxWriter for Writer {
    async fn feed(&mut self, msg: Bytes) -> Result<()> {
        Ok(self.0.feed(msg).await?)
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(SinkExt::<Bytes>::flush(&mut self.0).await?)
    }
    async fn close(mut self) -> Result<()> {
        Ok(SinkExt::<Bytes>::close(&mut self.0).await?)
    }
}

async fn open(cfg: &ClientConfig, ids: &[u32]) -> Result<(mux::Mux, Vec<MuxChannel>)> {
    let max = cfg.limits.max_message;
    let (rd, wr) = net::connect(cfg).await?.into_split();
    let reader = FramedRead::new(rd, net::length_prefixed(max))
        .map(|r| r.map(|b| b.freeze()).map_err(Error::from));
    let writer = Writer(FramedWrite::new(wr, net::length_prefixed(max)));
    Ok(mux::spawn(writer, reader, ids))
}

impl Client for TcpClient {
    type Channel = MuxChannel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
        if cfg.tls.is_some() {
            return Err(Error::Config("the tcp floor is cleartext only".into()));
        }
        Ok(Self(
            MuxSession::connect(cfg, |ids| async move { open(cfg, &ids).await }).await?,
        ))
    }

    fn channels(&mut self) -> Vec<MuxChannel> {
        self.0.take_channels()
    }

    async fn close(self) -> Result<()> {
        self.0.close().await
    }
}
