use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wirelab_core::net;
use wirelab_core::service::{self, Action};
use wirelab_core::{Error, Result, Server, ServerConfig};

use crate::handshake::{self, Reject};

/// The WebSocket echo/stream server (`ws://` or, with TLS, `wss://`), endpoint `/ws`.
#[derive(Debug)]
pub struct WsServer {
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
}

impl Server for WsServer {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        let listener = TcpListener::bind(cfg.listen).await?;
        Ok(Self {
            listener,
            cfg: Arc::new(cfg),
        })
    }

    fn local_addr(&self) -> SocketAddr {
        net::local_addr(&self.listener, self.cfg.listen)
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let tls = self.cfg.tls.clone().map(TlsAcceptor::from);
        let (cfg, sd) = (self.cfg.clone(), shutdown.clone());
        // Connections still in their handshake get their own timeout on top of the grace.
        let grace = cfg.timeouts.shutdown_grace * 2;
        net::accept_loop("ws", &self.listener, &shutdown, grace, |sock| {
            accept(sock, tls.clone(), cfg.clone(), sd.clone())
        })
        .await;
        Ok(())
    }
}

async fn accept(
    sock: TcpStream,
    tls: Option<TlsAcceptor>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + cfg.timeouts.handshake;
    match tls {
        None => upgrade(sock, deadline, cfg, shutdown).await,
        Some(acceptor) => {
            let tls = tokio::time::timeout_at(deadline, acceptor.accept(sock))
                .await
                .map_err(|_| Error::Timeout("TLS handshake"))?
                .map_err(|e| Error::Tls(e.to_string()))?;
            upgrade(tls, deadline, cfg, shutdown).await
        }
    }
}

/// Reads the request head (bounded in size and time), answers it, and runs the session.
async fn upgrade<S>(
    mut io: S,
    deadline: tokio::time::Instant,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(1024);
    let outcome = loop {
        let n = match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) => {
                refuse(&mut io, &handshake::TIMEOUT).await;
                return Err(Error::Timeout("WebSocket handshake"));
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(Error::ConnectionClosed);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => break handshake::check(&req).map(|a| (a, len)),
            Ok(httparse::Status::Partial) if buf.len() > cfg.limits.max_header_bytes => {
                break Err(handshake::TOO_LARGE)
            }
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => break Err(handshake::TOO_LARGE),
            Err(_) => break Err(handshake::MALFORMED),
        }
    };
    let (accept, head_len) = match outcome {
        Ok(ok) => ok,
        Err(reject) => {
            refuse(&mut io, &reject).await;
            return Err(Error::Protocol(format!(
                "handshake refused: {} {}",
                reject.status, reject.reason
            )));
        }
    };
    if buf.len() > cfg.limits.max_header_bytes + head_len {
        refuse(&mut io, &handshake::TOO_LARGE).await;
        return Err(Error::Protocol("handshake refused: head too large".into()));
    }
    io.write_all(&handshake::switching_protocols(&accept))
        .await?;
    io.flush().await?;
    // Frames the client sent right behind its request are not lost.
    let leftover = buf.split_off(head_len).to_vec();
    let ws = WebSocketStream::from_partially_read(
        io,
        leftover,
        Role::Server,
        Some(crate::ws_config(&cfg.limits)),
    )
    .await;
    session(ws, cfg, shutdown).await
}

async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, reject: &Reject) {
    let _ = io.write_all(&reject.response()).await;
    let _ = io.shutdown().await;
}

fn close_frame(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// What a read error means for the close code we answer with (RFC 6455 §7.4.1).
fn close_for(e: &WsError) -> Option<Message> {
    match e {
        WsError::Capacity(_) => Some(close_frame(CloseCode::Size, "message too big")),
        WsError::Utf8(_) => Some(close_frame(CloseCode::Invalid, "invalid UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(close_frame(CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Batches whatever is queued into one flush; stops after a close frame (RFC 6455 §5.5.1:
    // nothing is sent after it).
    while let Some(mut m) = rx.recv().await {
        loop {
            let closing = matches!(m, Message::Close(_));
            sink.feed(m).await.map_err(ws_io)?;
            if closing {
                sink.flush().await.map_err(ws_io)?;
                return Ok(());
            }
            match rx.try_recv() {
                Ok(next) => m = next,
                Err(_) => break,
            }
        }
        sink.flush().await.map_err(ws_io)?;
    }
    Ok(())
}

fn ws_io(e: WsError) -> Error {
    Error::Protocol(e.to_string())
}

/// Runs one WebSocket session: echoes, server streams, keepalive, and a truthful close.
async fn session<S>(
    ws: WebSocketStream<S>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(write_loop(sink, rx));
    let streams = TaskTracker::new();
    let stop_streams = shutdown.child_token();
    let t = cfg.timeouts;
    let mut ping = tokio::time::interval(
        t.ping_interval
            .unwrap_or(t.idle)
            .max(std::time::Duration::from_millis(1)),
    );
    ping.reset();
    let mut idle_deadline = tokio::time::Instant::now() + t.idle;

    // `Some(close)` when we start the close handshake; `None` when the peer did or TCP died.
    let our_close = loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => break Some(close_frame(CloseCode::Away, "server shutting down")),
            _ = ping.tick(), if t.ping_interval.is_some() => {
                let _ = tx.send(Message::Ping(Bytes::new())).await;
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline) => break Some(close_frame(CloseCode::Away, "idle timeout")),
            item = stream.next() => item,
        };
        idle_deadline = tokio::time::Instant::now() + t.idle;
        let msg = match item {
            None => break None,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                debug!("ws read error: {e}");
                break close_for(&e);
            }
        };
        let reply = match msg {
            Message::Binary(b) if cfg.raw_echo => Message::Binary(b),
            Message::Text(t) if cfg.raw_echo => Message::Text(t),
            Message::Text(_) => {
                break Some(close_frame(
                    CloseCode::Unsupported,
                    "text messages are not supported",
                ))
            }
            Message::Binary(b) => match service::classify(&b, &cfg.limits) {
                Ok(Action::Echo) => Message::Binary(b),
                Ok(Action::Stream(plan)) => {
                    let (tx, stop) = (tx.clone(), stop_streams.clone());
                    streams.spawn(async move {
                        let send = |m| {
                            let tx = tx.clone();
                            async move { tx.send(Message::Binary(m)).await.map_err(|_| ()) }
                        };
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = service::drive_stream(plan, true, send) => {}
                        }
                    });
                    continue;
                }
                Err(_) => break Some(close_frame(CloseCode::Unsupported, "not a wirelab message")),
            },
            // tungstenite answers pings and the peer's close itself; keep reading so the
            // close reply is flushed, then the stream ends.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => continue,
        };
        if tx.send(reply).await.is_err() {
            break None;
        }
    };
    stop_streams.cancel();
    streams.close();
    streams.wait().await;
    let sent_close = our_close.is_some();
    if let Some(close) = our_close {
        // Queued behind every answer already due: in-flight messages finish first.
        let _ = tx.send(close).await;
    }
    drop(tx);
    let grace = t.shutdown_grace;
    let written = tokio::time::timeout(grace, writer).await;
    if sent_close {
        // Wait (bounded) for the peer's close reply, then drop TCP (the server closes first).
        let _ = tokio::time::timeout(grace, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    match written {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Error::Protocol(format!("writer task: {e}"))),
        Err(_) => Err(Error::Timeout("writing the close")),
    }
}
