use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use wirelab_core::{net, Error, Result, Server, ServerConfig};

/// The HTTP/2 echo/stream/duplex server: TLS with ALPN `h2`, or h2c prior knowledge without TLS.
#[derive(Debug)]
pub struct H2Server(net::Listener);

impl Server for H2Server {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        cfg.h2.validate().map_err(Error::Config)?;
        Ok(Self(net::Listener::bind(cfg).await?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        self.0.serve("h2", Some(b"h2"), &shutdown, connection).await;
        Ok(())
    }
}

/// Counts open streams (requests whose response body is still being sent) and remembers when
/// the connection last had one, for the idle timer hyper lacks on HTTP/2.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }

    fn idle_for(&self) -> std::time::Duration {
        if self.open.load(Ordering::SeqCst) > 0 {
            return std::time::Duration::ZERO;
        }
        self.last.lock().map(|l| l.elapsed()).unwrap_or_default()
    }
}

/// A response body that keeps its stream counted as open until it is dropped.
struct Tracked<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.activity.open.fetch_sub(1, Ordering::SeqCst);
        self.activity.touch();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn connection<S>(io: S, cfg: Arc<ServerConfig>, shutdown: CancellationToken) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        open: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    });
    let stop_streams = shutdown.child_token();
    let (svc_cfg, stop, act) = (cfg.clone(), stop_streams.clone(), activity.clone());
    let svc = service_fn(move |req| {
        let (cfg, stop, act) = (svc_cfg.clone(), stop.clone(), act.clone());
        act.open.fetch_add(1, Ordering::SeqCst);
        act.touch();
        async move {
            let resp = wirelab_http::handle(req, cfg, stop).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked {
                inner,
                activity: act,
            }))
        }
    });
    let t = cfg.timeouts;
    let builder = wirelab_http::h2::server_builder(&cfg);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let check_every = (t.idle / 4).max(std::time::Duration::from_millis(10));
    let mut ticker = tokio::time::interval(check_every);
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(wirelab_http::protocol_error),
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                if activity.idle_for() >= t.idle {
                    debug!("h2: idle for {:?}; sending GOAWAY", t.idle);
                    break;
                }
            }
        }
    }
    // GOAWAY with the last stream id; requests in flight finish, streams in progress end early.
    conn.as_mut().graceful_shutdown();
    stop_streams.cancel();
    tokio::time::timeout(t.shutdown_grace, conn)
        .await
        .map_err(|_| Error::Timeout("graceful shutdown"))?
        .map_err(wirelab_http::protocol_error)
}
