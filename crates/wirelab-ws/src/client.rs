use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use wirelab_core::mux::{self, Mux, MuxChannel, MuxSession, MuxWriter};
use wirelab_core::{net, Client, ClientConfig, Error, Result};

/// A ws client session: one WebSocket (`shared`) or one per logical stream (`pool`).
#[derive(Debug)]
pub struct WsClient(MuxSession);

/// Close code reported when the connection ended without a close frame (RFC 6455 §7.1.5).
pub const ABNORMAL_CLOSURE: u16 = 1006;

struct Writer<S>(SplitSink<WebSocketStream<S>, Message>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MuxWriter for Writer<S> {
    async fn feed(&mut self, msg: Bytes) -> Result<()> {
        self.0.feed(Message::Binary(msg)).await.map_err(map_err)
    }
    async fn flush(&mut self) -> Result<()> {
        self.0.flush().await.map_err(map_err)
    }
    async fn close(mut self) -> Result<()> {
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        self.0.send(close).await.map_err(map_err)
    }
}

/// Maps tungstenite's errors to the contract's, reporting 1006 when TCP died without a close.
pub(crate) fn map_err(e: WsError) -> Error {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) | WsError::Io(_) => {
            Error::Closed {
                code: ABNORMAL_CLOSURE,
                reason: "connection lost without a close frame".into(),
            }
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed => Error::ConnectionClosed,
        WsError::Capacity(c) => Error::Protocol(format!("over a limit: {c}")),
        other => Error::Protocol(other.to_string()),
    }
}

fn map_msg(m: std::result::Result<Message, WsError>) -> Option<Result<Bytes>> {
    match m {
        Ok(Message::Binary(b)) => Some(Ok(b)),
        Ok(Message::Text(_)) => Some(Err(Error::Protocol("unexpected text message".into()))),
        Ok(Message::Close(f)) => Some(Err(match f {
            Some(f) => Error::Closed {
                code: f.code.into(),
                reason: f.reason.to_string(),
            },
            // A close frame with no status: 1005 "no status received" (RFC 6455 §7.1.5).
            None => Error::Closed {
                code: 1005,
                reason: String::new(),
            },
        })),
        Ok(_) => None,
        Err(e) => Some(Err(map_err(e))),
    }
}

async fn open(cfg: &ClientConfig, ids: &[u32]) -> Result<(Mux, Vec<MuxChannel>)> {
    let sock = net::connect(cfg).await?;
    let authority = format!("{}:{}", cfg.server_name, cfg.addr.port());
    match &cfg.tls {
        None => handshake(sock, format!("ws://{authority}{}", crate::PATH), cfg, ids).await,
        Some(tls) => {
            let io = net::tls_connect(cfg, tls, sock).await?;
            handshake(io, format!("wss://{authority}{}", crate::PATH), cfg, ids).await
        }
    }
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
        tokio_tungstenite::client_async_with_config(url, io, Some(crate::ws_config(&cfg.limits))),
    )
    .await
    .map_err(|_| Error::Timeout("WebSocket handshake"))?
    .map_err(|e| match e {
        WsError::Http(r) => Error::Status(r.status().as_u16()),
        other => map_err(other),
    })?;
    let (sink, stream) = ws.split();
    let reader = Box::pin(stream.filter_map(|m| std::future::ready(map_msg(m))));
    Ok(mux::spawn(Writer(sink), reader, ids))
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
