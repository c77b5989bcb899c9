use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h3::server::RequestResolver;
use http::{Method, Response};
use http_body_util::BodyExt;
use quinn::VarInt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wirelab_core::tls::ALPN_H3;
use wirelab_core::{Error, Result, Server, ServerConfig};
use wirelab_quinn::{Confirmed, QuicListener};

use crate::body::{to_bytes, RecvBody};
use crate::H3_NO_ERROR;

/// Unidirectional streams a peer may open: HTTP/3's control stream, the two QPACK streams, and
/// room for grease and push streams (ignored).
pub(crate) const UNI_STREAMS: u32 = 8;

type Conn = h3_quinn::Connection;

/// The HTTP/3 echo/stream/duplex server.
#[derive(Debug)]
pub struct H3Server(QuicListener);

impl Server for H3Server {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        Ok(Self(QuicListener::bind(cfg, ALPN_H3, UNI_STREAMS)?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.0.config();
        let sd = shutdown.clone();
        self.0
            .serve("h3", &shutdown, move |conn, confirmed| {
                connection(conn, confirmed, cfg.clone(), sd.clone())
            })
            .await;
        Ok(())
    }
}

async fn connection(
    conn: quinn::Connection,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let quic = conn.clone();
    let mut h3c = h3::server::builder()
        .max_field_section_size(cfg.limits.max_header_bytes as u64)
        .build::<Conn, Bytes>(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| Error::Protocol(format!("HTTP/3 set-up: {e}")))?;
    let stop_streams = shutdown.child_token();
    let requests = TaskTracker::new();
    let result = loop {
        let next = tokio::select! {
            r = h3c.accept() => r,
            _ = shutdown.cancelled() => break Ok(()),
        };
        match next {
            Ok(Some(resolver)) => {
                requests.spawn(request(
                    resolver,
                    confirmed.clone(),
                    cfg.clone(),
                    stop_streams.clone(),
                ));
            }
            Ok(None) => break Ok(()),
            Err(e) if e.is_h3_no_error() => break Ok(()),
            Err(e) => break Err(Error::Protocol(e.to_string())),
        }
    };
    if shutdown.is_cancelled() {
        // GOAWAY naming the stream after the last one accepted: every accepted request is
        // processed, later ones are not. Server streams in progress end early.
        if let Err(e) = h3c.shutdown(1).await {
            debug!("h3: sending GOAWAY: {e}");
        }
        stop_streams.cancel();
    }
    requests.close();
    let grace = cfg.timeouts.shutdown_grace;
    if tokio::time::timeout(grace, requests.wait()).await.is_err() {
        debug!("h3: requests still running after the {grace:?} grace");
    }
    if shutdown.is_cancelled() {
        quic.close(VarInt::from_u32(H3_NO_ERROR), b"server shutdown");
    }
    result
}

/// Whether a request may be served before the handshake is confirmed (see the crate docs).
fn replay_safe(method: &Method, path: &str) -> bool {
    method == Method::POST && path == "/echo"
}

async fn request(
    resolver: RequestResolver<Conn, Bytes>,
    mut confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    stop: CancellationToken,
) {
    // A header section over the limit is answered 431 by h3 itself and ends up here as an error.
    let (req, stream) = match resolver.resolve_request().await {
        Ok(r) => r,
        Err(e) => {
            debug!("h3: bad request: {e}");
            return;
        }
    };
    if !replay_safe(req.method(), req.uri().path())
        && !confirmed.is_confirmed()
        && confirmed.wait().await.is_err()
    {
        return;
    }
    let (mut send, recv) = stream.split();
    let body = RecvBody::new(recv, |s, cx| {
        s.poll_recv_data(cx).map(|r| r.map(|o| o.map(to_bytes)))
    });
    let Ok(resp) = wirelab_http::handle(req.map(|()| body), cfg, stop).await;
    let (parts, mut body) = resp.into_parts();
    let r = async {
        send.send_response(Response::from_parts(parts, ())).await?;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame;
            if let Ok(data) = frame.into_data() {
                send.send_data(data).await?;
            }
        }
        send.finish().await
    }
    .await;
    if let Err(e) = r {
        debug!("h3: response: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_echo_is_served_before_the_handshake_is_confirmed() {
        assert!(replay_safe(&Method::POST, "/echo"));
        assert!(!replay_safe(&Method::GET, "/stream"));
        assert!(!replay_safe(&Method::POST, "/duplex"));
        assert!(!replay_safe(&Method::GET, "/echo"));
        assert!(!replay_safe(&Method::POST, "/other"));
    }
}
