//! Socket plumbing every TCP transport shares: bounded connects and TLS handshakes, and the
//! accept loop with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Connects to the configured server within the connect timeout, with `TCP_NODELAY`.
pub async fn connect(cfg: &ClientConfig) -> Result<TcpStream> {
    let sock = tokio::time::timeout(cfg.timeouts.connect, TcpStream::connect(cfg.addr))
        .await
        .map_err(|_| Error::Timeout("TCP connect"))??;
    sock.set_nodelay(true)?;
    Ok(sock)
}

/// Runs the TLS client handshake within the handshake timeout, checking the server's name and,
/// when `alpn` is given, that the server chose that protocol.
pub async fn tls_connect(
    cfg: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    sock: TcpStream,
    alpn: Option<&[u8]>,
) -> Result<client::TlsStream<TcpStream>> {
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
                    let conn = handle(sock);
                    tracker.spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%peer, "{name} connection ended: {e}");
                        }
                    });
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

/// The address a listener is bound to, or `fallback` if the OS will not say.
pub fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}
