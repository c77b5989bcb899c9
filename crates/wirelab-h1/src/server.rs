use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use wirelab_core::codec::StreamRequest;
use wirelab_core::service::{self, StreamPlan};
use wirelab_core::{Error, Result, Server, ServerConfig};

type Body = BoxBody<Bytes, Infallible>;

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
    let svc = service_fn(move |req| handle(req, svc_cfg.clone(), stop.clone()));
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

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("{msg}\n"))).boxed())
        .unwrap_or_default()
}

async fn handle(
    req: Request<Incoming>,
    cfg: Arc<ServerConfig>,
    stop: CancellationToken,
) -> std::result::Result<Response<Body>, Infallible> {
    let max = cfg.limits.max_message;
    Ok(match (req.method(), req.uri().path()) {
        (&Method::POST, "/echo") => {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max as u64) {
                return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body over the limit"));
            }
            match Limited::new(req.into_body(), max).collect().await {
                Ok(body) => Response::new(Full::new(body.to_bytes()).boxed()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    text(StatusCode::PAYLOAD_TOO_LARGE, "body over the limit")
                }
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("bad body: {e}")),
            }
        }
        (&Method::GET, "/stream") => {
            let stream = req
                .headers()
                .get(crate::STREAM_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let parsed = StreamRequest::from_query(req.uri().query().unwrap_or(""))
                .and_then(|r| r.validate(max, cfg.limits.max_stream_count).map(|_| r));
            match parsed {
                Ok(r) => stream_response(StreamPlan { stream, req: r }, stop),
                Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (_, "/echo") | (_, "/stream") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if req.uri().path() == "/echo" {
                "POST"
            } else {
                "GET"
            };
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try POST /echo or GET /stream",
        ),
    })
}

/// A chunked body fed by a task that paces the stream; it ends early on shutdown.
fn stream_response(plan: StreamPlan, stop: CancellationToken) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<std::result::Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let send = |m| {
            let tx = tx.clone();
            async move { tx.send(Ok(Frame::data(m))).await.map_err(|_| ()) }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = service::drive_stream(plan, false, send) => {}
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(BodyExt::boxed(body))
        .unwrap_or_default()
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}
