use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::time::Instant;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirelab_core::tls::ALPN_WIRELAB_QUIC;
use wirelab_core::{net, service, Error, Result, Server, ServerConfig};
use wirelab_quinn::{connection_error, Confirmed, Drain, DrainReader, QuicListener, CLOSE_OK};

use crate::SHUTTING_DOWN;

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

/// Serves one connection. On shutdown: streams that arrive within the in-flight window (sent
/// before the client could know) are still served, later ones are refused (reset and stopped
/// with [`SHUTTING_DOWN`]); every stream served answers what the client sent before the
/// shutdown (see [`Drain`]), ends with FIN, and waits for the client's acknowledgement; then
/// the connection is closed with code 0. All of it within the shutdown grace.
async fn connection(
    conn: Connection,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let streams = TaskTracker::new();
    let serve = |send, recv| {
        stream(
            send,
            recv,
            conn.clone(),
            confirmed.clone(),
            cfg.clone(),
            shutdown.clone(),
        )
    };
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
        streams.spawn(serve(send, recv));
    };
    streams.close();
    let grace = cfg.timeouts.shutdown_grace;
    let deadline = Instant::now() + grace;
    if !shutdown.is_cancelled() || result.is_err() {
        let _ = tokio::time::timeout_at(deadline, streams.wait()).await;
        return result;
    }
    let window = Instant::now() + Drain::in_flight_window(&conn, grace / 2);
    let mut accepting = true;
    loop {
        tokio::select! {
            _ = streams.wait() , if Instant::now() >= window || !accepting => break,
            s = conn.accept_bi(), if accepting => match s {
                Ok((send, recv)) if Instant::now() < window => {
                    streams.spawn(serve(send, recv));
                }
                Ok((mut send, mut recv)) => {
                    let _ = send.reset(VarInt::from_u32(SHUTTING_DOWN));
                    let _ = recv.stop(VarInt::from_u32(SHUTTING_DOWN));
                }
                Err(_) => accepting = false,
            },
            _ = tokio::time::sleep_until(window), if Instant::now() < window => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    // The client's stack has the answers; a received close discards what its application has
    // not read yet: linger for the in-flight window (or until the client closes first).
    let linger = Instant::now() + Drain::in_flight_window(&conn, grace / 2);
    tokio::select! {
        _ = conn.closed() => {}
        _ = tokio::time::sleep_until(linger.min(deadline)) => {}
    }
    conn.close(VarInt::from_u32(CLOSE_OK), b"server shutdown");
    result
}

async fn stream(
    send: SendStream,
    recv: RecvStream,
    conn: Connection,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    let max = cfg.limits.max_message;
    // Server streams end, and reading stops, once what the client sent before the shutdown
    // has been read (`stop`, cancelled by the reader or once it ended after the shutdown).
    let stop = CancellationToken::new();
    let reader_done = CancellationToken::new();
    let reader = DrainReader::new(
        recv,
        |r| r,
        max,
        SHUTTING_DOWN,
        Drain::new(shutdown.clone(), conn, cfg.timeouts.shutdown_grace / 2),
        stop.clone(),
        reader_done.clone(),
    );
    let writer = FramedWrite::new(send, net::length_prefixed(max));
    // The replay policy: a server stream waits until no 0-RTT data can be in play.
    let gate = move || {
        let mut c = confirmed.clone();
        async move { c.wait().await }
    };
    let served = service::serve_messages(
        reader,
        writer,
        cfg.limits,
        cfg.fanout.clone(),
        cfg.resume.clone(),
        None,
        stop.clone(),
        gate,
    );
    let end_streams = async {
        shutdown.cancelled().await;
        reader_done.cancelled().await;
        stop.cancel();
        std::future::pending::<()>().await;
    };
    let (writer, result) = tokio::select! {
        r = served => r,
        _ = end_streams => unreachable!("pending forever"),
    };
    if let Err(e) = result {
        tracing::debug!("quic: stream ended: {e}");
    }
    if let Some(w) = writer {
        // Everything is written and the stream finished; wait until the peer has it, so that a
        // shutdown closing the connection next loses nothing.
        let _ = tokio::time::timeout(cfg.timeouts.shutdown_grace, w.into_inner().stopped()).await;
    }
}
