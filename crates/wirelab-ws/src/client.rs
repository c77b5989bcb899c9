use tokio::io::{AsyncRead, AsyncWrite};
use wirelab_core::mux::{Mux, MuxChannel, MuxSession};
use wirelab_core::{net, Client, ClientConfig, Error, Result};
use wirelab_websocket::client::{map_err, EndAfterClose};
use wirelab_websocket::gate::Gated;

/// A ws client session: one WebSocket (`shared`) or one per logical stream (`pool`).
#[derive(Debug)]
pub struct WsClient(MuxSession);

async fn open(cfg: &ClientConfig, ids: &[u32]) -> Result<(Mux, Vec<MuxChannel>)> {
    let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
    let url = format!(
        "{scheme}://{}:{}{}",
        cfg.server_name,
        cfg.addr.port(),
        crate::PATH
    );
    handshake(net::connect_io(cfg, None).await?, url, cfg, ids).await
}

async fn handshake<S>(
    io: S,
    url: String,
    cfg: &ClientConfig,
    ids: &[u32],
) -> Result<(Mux, Vec<MuxChannel>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _resp) = tokio::time::timeout(
        cfg.timeouts.handshake,
        tokio_tungstenite::client_async_with_config(
            url,
            EndAfterClose::new(Gated::new(io, cfg.limits.read_buffer)),
            Some(wirelab_websocket::config(&cfg.limits)),
        ),
    )
    .await
    .map_err(|_| Error::Timeout("WebSocket handshake"))?
    .map_err(map_err)?;
    Ok(wirelab_websocket::client::open(ws, ids))
}

impl Client for WsClient {
    type Channel = MuxChannel;

    async fn connect(cfg: &ClientConfig) -> Result<Self> {
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
