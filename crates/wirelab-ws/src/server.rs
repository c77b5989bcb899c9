use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use wirelab_core::net::{self, MaybeTls};
use wirelab_core::{Error, Result, Server, ServerConfig};

use crate::handshake::{self, Reject};

/// The WebSocket echo/stream server (`ws://` or, with TLS, `wss://`), endpoint `/ws`.
#[derive(Debug)]
pub struct WsServer(net::Listener);

impl Server for WsServer {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        Ok(Self(net::Listener::bind(cfg).await?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Not `Listener::serve`: here one deadline bounds the TLS handshake and the HTTP head
    /// together, so a slow client cannot spend the handshake timeout twice.
    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.0.config().clone();
        let tls = cfg.tls.clone().map(TlsAcceptor::from);
        let sd = shutdown.clone();
        // Connections still in their handshake get their own timeout on top of the grace.
        let grace = cfg.timeouts.shutdown_grace * 2;
        net::accept_loop("ws", self.0.tcp(), &shutdown, grace, |sock| {
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
    // One `upgrade` for both: its state lives as long as the connection, so it is not sized for
    // a TLS stream held inline (the TLS state is boxed, and only there when used).
    let io = match tls {
        None => MaybeTls::Plain(sock),
        Some(acceptor) => {
            // Boxed: the handshake's state is large and needed only until it completes.
            let tls = tokio::time::timeout_at(deadline, Box::pin(acceptor.accept(sock)))
                .await
                .map_err(|_| Error::Timeout("TLS handshake"))?
                .map_err(|e| Error::Tls(e.to_string()))?;
            MaybeTls::Tls(Box::new(tls))
        }
    };
    upgrade(io, deadline, cfg, shutdown).await
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
            Ok(httparse::Status::Complete(_)) if handshake::wants_page(&req) => {
                let head = req.method == Some("HEAD");
                io.write_all(&handshake::page_response(head)).await?;
                let _ = io.shutdown().await;
                return Ok(());
            }
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
    drop(buf);
    wirelab_websocket::server::run(io, leftover, cfg, shutdown).await
}

async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, reject: &Reject) {
    let _ = io.write_all(&reject.response()).await;
    let _ = io.shutdown().await;
}
