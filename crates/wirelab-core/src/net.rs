//! Socket plumbing every TCP transport shares: bounded connects and TLS handshakes, and the
//! accept loop with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::{ClientConfig, ServerConfig};
use crate::error::{Error, Result};
use crate::wire::Counted;

/// The framing of the floors (tcp, quic): a 4-byte big-endian length, then that many bytes.
/// A length over `max_message` is an error that ends the connection (or QUIC stream).
pub fn length_prefixed(max_message: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_message)
        .new_codec()
}

/// Connects to the configured server within the connect timeout, with `TCP_NODELAY`; the
/// socket counts its traffic into [`ClientConfig::wire`] when that is set.
pub async fn connect(cfg: &ClientConfig) -> Result<ClientSocket> {
    let sock = tokio::time::timeout(cfg.timeouts.connect, TcpStream::connect(cfg.addr))
        .await
        .map_err(|_| Error::Timeout("TCP connect"))??;
    sock.set_nodelay(true)?;
    Ok(Counted::new(sock, cfg.wire.clone()))
}

/// Runs the TLS client handshake within the handshake timeout, checking the server's name and,
/// when `alpn` is given, that the server chose that protocol.
pub async fn tls_connect(
    cfg: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    sock: ClientSocket,
    alpn: Option<&[u8]>,
) -> Result<client::TlsStream<ClientSocket>> {
    let name = rustls::pki_types::ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| Error::Config(format!("bad server name '{}': {e}", cfg.server_name)))?;
    let io = tokio::time::timeout(
        cfg.timeouts.handshake,
        TlsConnector::from(tls.clone()).connect(name, sock),
    )
    .await
    .map_err(|_| Error::Timeout("TLS handshake"))?
    .map_err(|e| Error::Tls(e.to_string()))?;
    check_alpn(io.get_ref().1.alpn_protocol(), alpn, "the server")?;
    Ok(io)
}

fn check_alpn(chosen: Option<&[u8]>, want: Option<&[u8]>, who: &str) -> Result<()> {
    match want {
        Some(w) if chosen != Some(w) => Err(Error::Protocol(format!(
            "{who} did not negotiate ALPN {}",
            String::from_utf8_lossy(w)
        ))),
        _ => Ok(()),
    }
}

/// Runs the TLS server handshake within `timeout`; when `alpn` is given, the client must have
/// chosen that protocol.
pub async fn tls_accept(
    acceptor: &TlsAcceptor,
    sock: TcpStream,
    timeout: Duration,
    alpn: Option<&[u8]>,
) -> Result<server::TlsStream<TcpStream>> {
    let io = tokio::time::timeout(timeout, acceptor.accept(sock))
        .await
        .map_err(|_| Error::Timeout("TLS handshake"))?
        .map_err(|e| Error::Tls(e.to_string()))?;
    check_alpn(io.get_ref().1.alpn_protocol(), alpn, "the client")?;
    Ok(io)
}

/// Accepts connections until `shutdown` fires, running `handle` for each in its own task; then
/// waits up to `grace` for the connections to finish (each is expected to notice `shutdown`
/// and close gracefully) and drops the rest.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: &TcpListener,
    shutdown: &CancellationToken,
    grace: Duration,
    handle: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    tracker.spawn(logged(name, peer, handle(sock)));
                }
                // Running out of file descriptors must not end the server.
                Err(e) => warn!("{name}: accept failed: {e}"),
            },
        }
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!("{name}: connections still open after {grace:?}; dropping them");
    }
}

/// `conn`, logging how it ended. Not an `async move` block around `conn.await`: such a block
/// keeps its captured future and the future it awaits in separate places, so the task every
/// connection lives in would hold its state twice (2.3 KiB of it for a ws connection).
fn logged<Fut>(
    name: &'static str,
    peer: SocketAddr,
    conn: Fut,
) -> futures_util::future::Map<Fut, impl FnOnce(Result<()>)>
where
    Fut: Future<Output = Result<()>>,
{
    use futures_util::FutureExt;
    conn.map(move |r| {
        if let Err(e) = r {
            debug!(%peer, "{name} connection ended: {e}");
        }
    })
}

/// The address a listener is bound to, or `fallback` if the OS will not say.
pub fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// A TCP connection, with or without TLS on top: one type for transports that offer both, so
/// they are written once rather than once per stream type.
#[derive(Debug)]
pub enum MaybeTls<T, P = TcpStream> {
    /// Cleartext.
    Plain(P),
    /// TLS over TCP (boxed: a TLS stream is far larger than a socket).
    Tls(Box<T>),
}

/// A server-side connection.
pub type ServerIo = MaybeTls<server::TlsStream<TcpStream>>;
/// A client-side connection.
pub type ClientIo = MaybeTls<client::TlsStream<ClientSocket>, ClientSocket>;
/// A client's TCP socket, counting its traffic when [`ClientConfig::wire`] asks for it.
pub type ClientSocket = Counted<TcpStream>;

impl<T: AsyncRead + Unpin, P: AsyncRead + Unpin> AsyncRead for MaybeTls<T, P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin, P: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T, P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to the configured server, with TLS when the config has it (then checking `alpn`
/// when given).
pub async fn connect_io(cfg: &ClientConfig, alpn: Option<&[u8]>) -> Result<ClientIo> {
    let sock = connect(cfg).await?;
    Ok(match &cfg.tls {
        None => MaybeTls::Plain(sock),
        Some(tls) => MaybeTls::Tls(Box::new(tls_connect(cfg, tls, sock, alpn).await?)),
    })
}

/// A bound listening socket with its server config: the part every TCP server shares.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    cfg: Arc<ServerConfig>,
}

impl Listener {
    /// Binds `cfg.listen`.
    pub async fn bind(cfg: ServerConfig) -> Result<Self> {
        let tcp = TcpListener::bind(cfg.listen).await?;
        Ok(Self {
            tcp,
            cfg: Arc::new(cfg),
        })
    }

    /// Where it listens (the OS-chosen port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        local_addr(&self.tcp, self.cfg.listen)
    }

    /// The server config.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.cfg
    }

    /// The socket, for servers that run their own accept handling.
    pub fn tcp(&self) -> &TcpListener {
        &self.tcp
    }

    /// Accepts until `shutdown` fires. Each connection gets the TLS handshake when the config
    /// has TLS (bounded by the handshake timeout; the client must choose `alpn` when given), then
    /// `connection`. Connections still open after twice the shutdown grace (one grace for their
    /// own close, one for a handshake in progress) are dropped.
    pub async fn serve<F, Fut>(
        &self,
        name: &'static str,
        alpn: Option<&'static [u8]>,
        shutdown: &CancellationToken,
        connection: F,
    ) where
        F: Fn(ServerIo, Arc<ServerConfig>, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let acceptor = self.cfg.tls.clone().map(TlsAcceptor::from);
        let grace = self.cfg.timeouts.shutdown_grace * 2;
        let connection = Arc::new(connection);
        accept_loop(name, &self.tcp, shutdown, grace, |sock| {
            let (cfg, sd, acceptor) = (self.cfg.clone(), shutdown.clone(), acceptor.clone());
            let connection = connection.clone();
            async move {
                let io = match acceptor {
                    None => MaybeTls::Plain(sock),
                    Some(acc) => {
                        let tls = tls_accept(&acc, sock, cfg.timeouts.handshake, alpn).await?;
                        MaybeTls::Tls(Box::new(tls))
                    }
                };
                connection(io, cfg, sd).await
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task holds its future once, plus the little `logged` adds.
    #[test]
    fn logged_holds_the_connection_future_once() {
        let conn = async {
            let state = [1u8; 2048];
            tokio::task::yield_now().await;
            std::hint::black_box(&state);
            Ok(())
        };
        let alone = std::mem::size_of_val(&conn);
        let task = logged("test", SocketAddr::from(([127, 0, 0, 1], 1)), conn);
        assert!(
            std::mem::size_of_val(&task) <= alone + 64,
            "{} for a {alone}-byte future",
            std::mem::size_of_val(&task)
        );
    }
}
