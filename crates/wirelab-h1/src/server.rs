use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use wirelab_core::{Error, Result, Server, ServerConfig};

/// The HTTP/1.1 echo/stream server.
#[derive(Debug)]
pub struct H1Server {
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
}

impl Server for H1Server {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        let listener = TcpListener::bind(cfg.listen).await?;
        Ok(Self {
            listener,
            cfg: Arc::new(cfg),
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.cfg.listen)
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let tracker = TaskTracker::new();
        let tls = self.cfg.tls.clone().map(TlsAcceptor::from);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok((sock, peer)) => {
                        let _ = sock.set_nodelay(true);
                        let (cfg, sd, tls) = (self.cfg.clone(), shutdown.clone(), tls.clone());
                        tracker.spawn(async move {
                            let r = match tls {
                                None => connection(sock, cfg, sd).await,
                                Some(acc) => match tokio::time::timeout(cfg.timeouts.handshake, acc.accept(sock)).await {
                                    Ok(Ok(tls)) => connection(tls, cfg, sd).await,
                                    Ok(Err(e)) => Err(Error::Tls(e.to_string())),
                                    Err(_) => Err(Error::Timeout("TLS handshake")),
                                },
                            };
                            if let Err(e) = r {
                                debug!(%peer, "h1 connection ended: {e}");
                            }
                        });
                    }
                    Err(e) => warn!("accept failed: {e}"),
                },
            }
        }
        tracker.close();
        let grace = self.cfg.timeouts.shutdown_grace;
        if tokio::time::timeout(grace * 2, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "h1: connections still open after {:?}; dropping them",
                grace * 2
            );
        }
        Ok(())
    }
}

async fn connection<S>(io: S, cfg: Arc<ServerConfig>, shutdown: CancellationToken) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_cfg = cfg.clone();
    let stop_streams = shutdown.child_token();
    let stop = stop_streams.clone();
    let svc = service_fn(move |req| wirelab_http::handle(req, svc_cfg.clone(), stop.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Enforced because a timer is set; also bounds idle keep-alive (hyper >= 1.6).
        .header_read_timeout(cfg.timeouts.handshake)
        .max_buf_size(cfg.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r.map_err(|e| Error::Protocol(e.to_string())),
        _ = shutdown.cancelled() => {}
    }
    // Finish the request in flight, then close; streams in progress end early.
    conn.as_mut().graceful_shutdown();
    stop_streams.cancel();
    tokio::time::timeout(cfg.timeouts.shutdown_grace, conn)
        .await
        .map_err(|_| Error::Timeout("graceful shutdown"))?
        .map_err(|e| Error::Protocol(e.to_string()))
}
