use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wirelab_core::{net, Error, Result, Server, ServerConfig};

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The RFC 8441 WebSocket server.
#[derive(Debug)]
pub struct H2wsServer(net::Listener);

impl Server for H2wsServer {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        cfg.h2.validate().map_err(Error::Config)?;
        Ok(Self(net::Listener::bind(cfg).await?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        self.0
            .serve("h2ws", Some(b"h2"), &shutdown, connection)
            .await;
        Ok(())
    }
}

async fn connection<S>(io: S, cfg: Arc<ServerConfig>, shutdown: CancellationToken) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sessions = TaskTracker::new();
    let (svc_cfg, sd, tracker) = (cfg.clone(), shutdown.clone(), sessions.clone());
    let svc = service_fn(move |req| {
        let r = handle(req, svc_cfg.clone(), sd.clone(), &tracker);
        std::future::ready(Ok::<_, std::convert::Infallible>(r))
    });
    let mut builder = wirelab_http::h2::server_builder(&cfg);
    builder.enable_connect_protocol();
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            sessions.close();
            sessions.wait().await;
            return r.map_err(|e| Error::Protocol(e.to_string()));
        }
        _ = shutdown.cancelled() => {}
    }
    // Each WebSocket closes itself with 1001 (it watches the same token); the connection must
    // keep being driven meanwhile, or no frame of those close handshakes moves. Then GOAWAY.
    sessions.close();
    let grace = cfg.timeouts.shutdown_grace;
    tokio::select! {
        r = conn.as_mut() => return r.map_err(|e| Error::Protocol(e.to_string())),
        _ = tokio::time::timeout(grace, sessions.wait()) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::time::timeout(grace, conn)
        .await
        .map_err(|_| Error::Timeout("graceful shutdown"))?
        .map_err(|e| Error::Protocol(e.to_string()))
}

fn refuse(status: StatusCode, reason: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("{reason}\n"))).boxed())
        .unwrap_or_default()
}

/// Checks an extended CONNECT (RFC 8441 §4, RFC 6455 §4.2.1 where it still applies) and, if it
/// is a WebSocket request, starts the session on the stream once hyper hands it over.
fn handle(
    mut req: Request<Incoming>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
    sessions: &TaskTracker,
) -> Response<Body> {
    if req.method() != Method::CONNECT {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "this endpoint speaks WebSocket over HTTP/2 (RFC 8441): CONNECT with :protocol websocket");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("CONNECT"));
        return r;
    }
    match req.extensions().get::<hyper::ext::Protocol>() {
        Some(p) if p.as_str() == "websocket" => {}
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported :protocol; this server speaks websocket",
            )
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "plain CONNECT tunnels are not offered; use :protocol websocket",
            )
        }
    }
    if req.uri().path() != crate::PATH {
        return refuse(StatusCode::NOT_FOUND, "no WebSocket endpoint here; use /ws");
    }
    if req
        .headers()
        .get("sec-websocket-version")
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut r = refuse(
            StatusCode::BAD_REQUEST,
            "unsupported sec-websocket-version; this server speaks 13",
        );
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return r;
    }
    let upgrade = hyper::upgrade::on(&mut req);
    sessions.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => return debug!("h2ws: stream not handed over: {e}"),
        };
        let io = TokioIo::new(upgraded);
        if let Err(e) = wirelab_websocket::server::run(io, Vec::new(), cfg, shutdown).await {
            debug!("h2ws session ended: {e}");
        }
    });
    // 200 with an empty body and no content-length: anything else makes hyper reset the stream.
    Response::new(Empty::new().boxed())
}
