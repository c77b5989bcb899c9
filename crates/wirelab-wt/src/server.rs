use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirelab_core::tls::ALPN_H3;
use wirelab_core::{net, service, Error, Result, Server, ServerConfig};
use wirelab_quinn::{Drain, DrainReader, QuicListener};
use wtransport::endpoint::IncomingSessionFuture;
use wtransport::{RecvStream, SendStream};

use crate::{CLOSE_OK, PATH, SHUTTING_DOWN};

/// Unidirectional streams a client may open: HTTP/3's control and two QPACK streams, and a
/// few WebTransport ones (the service uses none; a browser may).
pub(crate) const UNI_STREAMS: u32 = 16;

/// The wt server: WebTransport sessions on a quinn endpoint of `wirelab-quinn`.
#[derive(Debug)]
pub struct WtServer(QuicListener);

impl Server for WtServer {
    async fn bind(mut cfg: ServerConfig) -> Result<Self> {
        // The session's CONNECT stream is a bidirectional stream too: grant it on top of the
        // configured limit, so a session has `max_concurrent_streams` WebTransport streams.
        cfg.quic.max_concurrent_streams = cfg.quic.max_concurrent_streams.saturating_add(1);
        Ok(Self(QuicListener::bind_with(
            cfg,
            ALPN_H3,
            UNI_STREAMS,
            true,
        )?))
    }

    fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let cfg = self.0.config();
        self.0
            .serve_connecting("wt", &shutdown, move |connecting, sd| {
                connection(connecting, cfg.clone(), sd)
            })
            .await;
        Ok(())
    }
}

/// Maps a wtransport connection error: a clean close is [`Error::ConnectionClosed`].
pub(crate) fn wt_error(e: wtransport::error::ConnectionError) -> Error {
    use wtransport::error::ConnectionError as E;
    match e {
        E::ApplicationClosed(ref c) if c.code().into_inner() == u64::from(CLOSE_OK) => {
            Error::ConnectionClosed
        }
        E::LocallyClosed => Error::ConnectionClosed,
        E::TimedOut => Error::Timeout("idle WebTransport connection"),
        other => Error::Protocol(format!("WebTransport: {other}")),
    }
}

/// Serves one QUIC connection: its WebTransport session (HTTP/3 SETTINGS, then the CONNECT),
/// the session's bidirectional streams, and its datagrams.
async fn connection(
    connecting: quinn::Connecting,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    // The QUIC handshake, SETTINGS and the CONNECT request, bounded together. wtransport
    // awaits the whole handshake, so nothing here is 0-RTT data (no replay policy needed).
    let request = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(
            cfg.timeouts.handshake,
            IncomingSessionFuture::with_quic_connecting(connecting),
        ) => r,
    };
    let request = request
        .map_err(|_| Error::Timeout("WebTransport session request"))?
        .map_err(wt_error)?;
    let path = request.path().split('?').next().unwrap_or_default();
    if path != PATH {
        tracing::debug!("wt: CONNECT for {path}: 404");
        request.not_found().await;
        return Ok(());
    }
    let session = request.accept().await.map_err(wt_error)?;
    let conn = session.quic_connection().clone();
    let session = Arc::new(session);

    // Datagrams: echoed verbatim until the session ends.
    let echo = {
        let (session, sd) = (session.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let d = tokio::select! {
                    _ = sd.cancelled() => return,
                    d = session.receive_datagram() => match d {
                        Ok(d) => d,
                        Err(_) => return,
                    },
                };
                // Unreliable both ways: a datagram that cannot be sent now is lost.
                let _ = session.send_datagram(d.payload());
            }
        })
    };

    let streams = TaskTracker::new();
    let serve = |send, recv| stream(send, recv, conn.clone(), cfg.clone(), shutdown.clone());
    let result = loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            s = session.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => break match wt_error(e) {
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
        echo.abort();
        return result;
    }
    // Streams the client opened before it could know of the shutdown are still served; later
    // ones are refused (reset and stopped with SHUTTING_DOWN).
    let window = Instant::now() + Drain::in_flight_window(&conn, grace / 2);
    let mut accepting = true;
    loop {
        tokio::select! {
            _ = streams.wait(), if Instant::now() >= window || !accepting => break,
            s = session.accept_bi(), if accepting => match s {
                Ok((send, recv)) if Instant::now() < window => {
                    streams.spawn(serve(send, recv));
                }
                Ok((mut send, recv)) => {
                    let _ = send.reset(wtransport::VarInt::from_u32(SHUTTING_DOWN));
                    recv.stop(wtransport::VarInt::from_u32(SHUTTING_DOWN));
                }
                Err(_) => accepting = false,
            },
            _ = tokio::time::sleep_until(window), if Instant::now() < window => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    echo.abort();
    // The client's stack has the answers; a close discards what its application has not read
    // yet: linger for the in-flight window (or until the client closes first).
    let linger = Instant::now() + Drain::in_flight_window(&conn, grace / 2);
    tokio::select! {
        _ = conn.closed() => {}
        _ = tokio::time::sleep_until(linger.min(deadline)) => {}
    }
    session.close(wtransport::VarInt::from_u32(CLOSE_OK), b"server shutdown");
    result
}

/// Serves one WebTransport stream: length-prefixed service messages, as on the quic floor.
async fn stream(
    send: SendStream,
    recv: RecvStream,
    conn: quinn::Connection,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    let max = cfg.limits.max_message;
    let stop = CancellationToken::new();
    let reader_done = CancellationToken::new();
    let reader = DrainReader::new(
        recv,
        |r| r.quic_stream_mut(),
        max,
        SHUTTING_DOWN,
        Drain::new(shutdown.clone(), conn, cfg.timeouts.shutdown_grace / 2),
        stop.clone(),
        reader_done.clone(),
    );
    let writer = FramedWrite::new(send, net::length_prefixed(max));
    // The session starts after the handshake: no 0-RTT data, nothing to hold back.
    let gate = || async { Ok(()) };
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
        tracing::debug!("wt: stream ended: {e}");
    }
    if let Some(w) = writer {
        // Finished; wait until the peer has every answer, so a close next loses nothing.
        let mut send = w.into_inner();
        let _ = tokio::time::timeout(
            cfg.timeouts.shutdown_grace,
            send.quic_stream_mut().stopped(),
        )
        .await;
    }
}
