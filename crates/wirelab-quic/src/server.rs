use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirelab_core::tls::ALPN_WIRELAB_QUIC;
use wirelab_core::{net, service, Error, Result, Server, ServerConfig};
use wirelab_quinn::{connection_error, Confirmed, QuicListener, CLOSE_OK};

/// The quic echo/stream server.
#[derive(Debug)]
pub struct QuicServer(QuicListener);

impl Server for QuicServer {
    async fn bind(cfg: ServerConfig) -> Result<Self> {
        // The floor opens no unidirectional streams.
        Ok(Self(QuicListener::bind(cfg, ALPN_WIRELAB_QUIC, 0)?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.0.config();
        let sd = shutdown.clone();
        self.0
            .serve("quic", &shutdown, move |conn, confirmed| {
                connection(conn, confirmed, cfg.clone(), sd.clone())
            })
            .await;
        Ok(())
    }
}

async fn connection(
    conn: Connection,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let streams = TaskTracker::new();
    let result = loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => break match connection_error(e) {
                    Error::ConnectionClosed => Ok(()),
                    e => Err(e),
                },
            },
        };
        streams.spawn(stream(
            send,
            recv,
            confirmed.clone(),
            cfg.clone(),
            shutdown.clone(),
        ));
    };
    streams.close();
    streams.wait().await;
    if shutdown.is_cancelled() {
        conn.close(VarInt::from_u32(CLOSE_OK), b"server shutdown");
    }
    result
}

async fn stream(
    send: SendStream,
    recv: RecvStream,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    let max = cfg.limits.max_message;
    let reader = FramedRead::new(recv, net::length_prefixed(max));
    let writer = FramedWrite::new(send, net::length_prefixed(max));
    // The replay policy: a server stream waits until no 0-RTT data can be in play.
    let gate = move || {
        let mut c = confirmed.clone();
        async move { c.wait().await }
    };
    let (writer, result) =
        service::serve_messages(reader, writer, cfg.limits, None, shutdown, gate).await;
    if let Err(e) = result {
        tracing::debug!("quic: stream ended: {e}");
    }
    if let Some(w) = writer {
        // Everything is written and the stream finished; wait until the peer has it, so that a
        // shutdown closing the connection next loses nothing.
        let _ = tokio::time::timeout(cfg.timeouts.shutdown_grace, w.into_inner().stopped()).await;
    }
}
