use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wirelab_core::{net, Error, Result, Server, ServerConfig};

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The RFC 8441 WebSocket server.
#[derive(Debug)]
pub struct H2wsServer(net::Listener);

impl Server for H2wsServer {
    /// Over TLS it also offers ALPN `http/1.1`, after `h2`: a browser opens a WebSocket on a
    /// connection of its own offering only `http/1.1` when it has no HTTP/2 connection to the
    /// origin yet, and gets the RFC 6455 upgrade there.
    async fn bind(mut cfg: ServerConfig) -> Result<Self> {
        cfg.h2.validate().map_err(Error::Config)?;
        if let Some(tls) = &cfg.tls {
            let mut tls = (**tls).clone();
            if !tls.alpn_protocols.iter().any(|p| p == b"http/1.1") {
                tls.alpn_protocols.push(b"http/1.1".to_vec());
            }
            cfg.tls = Some(Arc::new(tls));
        }
        Ok(Self(net::Listener::bind(cfg).await?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        self.0
            .serve("h2ws", None, &shutdown, |io, cfg, sd| async move {
                let alpn = match &io {
                    net::MaybeTls::Tls(t) => t.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
                    net::MaybeTls::Plain(_) => None,
                };
                match alpn.as_deref() {
                    Some(b"http/1.1") => connection_h1(io, cfg, sd).await,
                    // A TLS client that chose no protocol gets HTTP/2, as before.
                    _ => connection(io, cfg, sd).await,
                }
            })
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
    if req.method() == Method::OPTIONS {
        return wirelab_http::preflight();
    }
    if wirelab_core::page::is_page(req.method().as_str(), req.uri().path()) {
        return wirelab_http::page("h2ws", req.method() == Method::HEAD);
    }
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

/// An HTTP/1.1 connection (ALPN `http/1.1`): the browser page, CORS preflights, and the RFC
/// 6455 upgrade at [`crate::PATH`], whose session is the same as over HTTP/2.
async fn connection_h1<S>(io: S, cfg: Arc<ServerConfig>, shutdown: CancellationToken) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sessions = TaskTracker::new();
    let (svc_cfg, sd, tracker) = (cfg.clone(), shutdown.clone(), sessions.clone());
    let svc = service_fn(move |req| {
        let r = handle_h1(req, svc_cfg.clone(), sd.clone(), &tracker);
        std::future::ready(Ok::<_, std::convert::Infallible>(r))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(cfg.timeouts.handshake)
        .max_buf_size(cfg.limits.max_header_bytes.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let grace = cfg.timeouts.shutdown_grace;
    let r = tokio::select! {
        r = conn.as_mut() => r.map_err(|e| Error::Protocol(e.to_string())),
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(grace, conn.as_mut()).await {
                Ok(r) => r.map_err(|e| Error::Protocol(e.to_string())),
                Err(_) => Err(Error::Timeout("graceful shutdown")),
            }
        }
    };
    // An upgraded connection's session closes itself with 1001 on `shutdown`.
    sessions.close();
    sessions.wait().await;
    r
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// One HTTP/1.1 request: the page, a preflight, or an RFC 6455 opening handshake (§4.2.1).
fn handle_h1(
    mut req: Request<Incoming>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
    sessions: &TaskTracker,
) -> Response<Body> {
    if req.method() == Method::OPTIONS {
        return wirelab_http::preflight();
    }
    if wirelab_core::page::is_page(req.method().as_str(), req.uri().path()) {
        return wirelab_http::page("h2ws", req.method() == Method::HEAD);
    }
    if req.uri().path() != crate::PATH {
        return refuse(StatusCode::NOT_FOUND, "no WebSocket endpoint here; use /ws");
    }
    if req.method() != Method::GET {
        let mut r = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "WebSocket handshakes use GET",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if !header_has_token(&req, header::UPGRADE, "websocket")
        || !header_has_token(&req, header::CONNECTION, "upgrade")
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing 'Upgrade: websocket' and 'Connection: Upgrade'",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version; this server speaks 13",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
    else {
        return refuse(StatusCode::BAD_REQUEST, "missing or bad Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    sessions.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => return debug!("h2ws (HTTP/1.1): connection not handed over: {e}"),
        };
        let io = TokioIo::new(upgraded);
        if let Err(e) = wirelab_websocket::server::run(io, Vec::new(), cfg, shutdown).await {
            debug!("h2ws (HTTP/1.1) session ended: {e}");
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Empty::new().boxed())
        .unwrap_or_default()
}
