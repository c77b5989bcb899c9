use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use wirelab_core::{net, Error, Result, Server, ServerConfig};

/// The HTTP/1.1 echo/stream server.
#[derive(Debug)]
pub struct H1Server(net::Listener);

impl Server for H1Server {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        Ok(Self(net::Listener::bind(cfg).await?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        self.0.serve("h1", None, &shutdown, connection).await;
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
