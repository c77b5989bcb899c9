use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirelab_core::tls::ALPN_WIRELAB_QUIC;
use wirelab_core::{net, service, Error, Result, Server, ServerConfig};
use wirelab_quinn::{connection_error, Confirmed, Drain, QuicListener, CLOSE_OK};

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
    let reader = DrainReader {
        inner: FramedRead::new(recv, net::length_prefixed(max)),
        drain: Drain::new(shutdown.clone(), conn, cfg.timeouts.shutdown_grace / 2),
        stop: stop.clone(),
        done: reader_done.clone(),
        ended: false,
    };
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

/// The messages of a stream; after a shutdown they end once what the client sent before it has
/// been read (see [`Drain`]), and the client is told with STOP_SENDING([`SHUTTING_DOWN`]).
struct DrainReader {
    inner: FramedRead<RecvStream, LengthDelimitedCodec>,
    drain: Drain,
    stop: CancellationToken,
    /// Cancelled when the messages end, either way.
    done: CancellationToken,
    ended: bool,
}

impl DrainReader {
    fn stop(&mut self) -> Poll<Option<std::io::Result<BytesMut>>> {
        let _ = self.inner.get_mut().stop(VarInt::from_u32(SHUTTING_DOWN));
        self.stop.cancel();
        self.end()
    }

    fn end(&mut self) -> Poll<Option<std::io::Result<BytesMut>>> {
        self.ended = true;
        self.done.cancel();
        Poll::Ready(None)
    }
}

impl Stream for DrainReader {
    type Item = std::io::Result<BytesMut>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.drain.poll_must_stop(cx) {
            return this.stop();
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending if this.drain.poll_stop_when_idle(cx) => this.stop(),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => this.end(),
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                this.done.cancel();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(m))) => Poll::Ready(Some(Ok(m))),
        }
    }
}
