use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use h3::error::Code;
use h3::server::{RequestResolver, RequestStream};
use http::{Method, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use quinn::VarInt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use wirelab_core::tls::ALPN_H3;
use wirelab_core::{Error, Result, Server, ServerConfig};
use wirelab_quinn::{Confirmed, Drain, QuicListener};

use crate::body::{to_bytes, RecvBody};
use crate::tracked::{self, Delivered, NONE_ACCEPTED};
use crate::H3_NO_ERROR;

/// Unidirectional streams a peer may open: HTTP/3's control stream, the two QPACK streams, and
/// room for grease and push streams (ignored).
pub(crate) const UNI_STREAMS: u32 = 8;

/// HTTP/3's H3_GENERAL_PROTOCOL_ERROR (RFC 9114 §8.1), for a connection that cannot be set up.
const H3_GENERAL_PROTOCOL_ERROR: u32 = 0x101;

/// No GOAWAY sent yet (the shared "first refused stream id").
const NO_GOAWAY: u64 = u64::MAX;

type Conn = tracked::Conn;
type Unacked = FuturesUnordered<Delivered>;

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

/// What every request task of a connection shares.
#[derive(Clone)]
struct Shared {
    quic: quinn::Connection,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
    /// Ends `/stream` responses (cancelled at shutdown).
    stop_streams: CancellationToken,
    /// The stream id in the final GOAWAY: requests on this stream or above are refused.
    goaway: Arc<AtomicU64>,
}

/// Serves one connection. On shutdown (RFC 9114 §5.2): a GOAWAY with the largest id at once
/// (no new requests, please), then after the in-flight window (requests the client sent before
/// it knew have arrived) a GOAWAY naming the first stream not accepted; requests below it are
/// answered within the grace, later ones are refused with H3_REQUEST_REJECTED; once every
/// answer has been acknowledged by the client (bounded by the grace), the connection is closed
/// with H3_NO_ERROR.
async fn connection(
    conn: quinn::Connection,
    confirmed: Confirmed,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let quic = conn.clone();
    let (delivered, mut delivered_rx) = mpsc::unbounded_channel();
    let last_accepted = Arc::new(AtomicU64::new(NONE_ACCEPTED));
    let mut builder = h3::server::builder();
    builder.max_field_section_size(cfg.limits.max_header_bytes as u64);
    let build = builder.build::<Conn, Bytes>(Conn::new(conn, delivered, last_accepted.clone()));
    // Bounded, and given up at shutdown: a client that grants no unidirectional stream never
    // lets h3 open its control stream.
    let mut h3c = tokio::select! {
        _ = shutdown.cancelled() => {
            quic.close(VarInt::from_u32(H3_NO_ERROR), b"server shutdown");
            return Ok(());
        }
        r = tokio::time::timeout(cfg.timeouts.handshake, build) => match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Error::Protocol(format!("HTTP/3 set-up: {e}"))),
            Err(_) => {
                quic.close(VarInt::from_u32(H3_GENERAL_PROTOCOL_ERROR), b"HTTP/3 set-up timed out");
                return Err(Error::Timeout("HTTP/3 set-up (no stream credit from the client?)"));
            }
        },
    };
    let shared = Shared {
        quic: quic.clone(),
        confirmed,
        cfg: cfg.clone(),
        shutdown: shutdown.clone(),
        stop_streams: shutdown.child_token(),
        goaway: Arc::new(AtomicU64::new(NO_GOAWAY)),
    };
    let requests = TaskTracker::new();
    let mut unacked = Unacked::new();
    let result = loop {
        tokio::select! {
            r = h3c.accept() => match r {
                Ok(Some(resolver)) => {
                    requests.spawn(request(resolver, shared.clone()));
                }
                Ok(None) => break Ok(()),
                Err(e) if e.is_h3_no_error() => break Ok(()),
                Err(e) => break Err(Error::Protocol(e.to_string())),
            },
            Some(d) = delivered_rx.recv() => unacked.push(d),
            Some(()) = unacked.next(), if !unacked.is_empty() => {}
            _ = shutdown.cancelled() => break Ok(()),
        }
    };
    requests.close();
    let grace = cfg.timeouts.shutdown_grace;
    let deadline = Instant::now() + grace;
    if !shutdown.is_cancelled() || result.is_err() {
        // The client closed the connection (or broke it): nothing more can be delivered.
        if tokio::time::timeout_at(deadline, requests.wait())
            .await
            .is_err()
        {
            debug!("h3: requests still running after the {grace:?} grace");
        }
        return result;
    }
    // Shutdown. No new `/stream` messages.
    shared.stop_streams.cancel();
    // First GOAWAY: the largest id (h3 names id 0 instead if nothing was accepted yet, which
    // would refuse requests still on their way: then wait for the final one).
    if last_accepted.load(Ordering::Acquire) != NONE_ACCEPTED {
        let _ = tokio::time::timeout_at(deadline, h3c.shutdown(usize::MAX >> 2)).await;
    }
    // Requests sent before the client knew arrive within the in-flight window: accept them.
    let window = Instant::now() + Drain::in_flight_window(&quic, grace / 2);
    loop {
        tokio::select! {
            r = h3c.accept() => match r {
                Ok(Some(resolver)) => {
                    requests.spawn(request(resolver, shared.clone()));
                }
                _ => break,
            },
            Some(d) = delivered_rx.recv() => unacked.push(d),
            Some(()) = unacked.next(), if !unacked.is_empty() => {}
            _ = tokio::time::sleep_until(window) => break,
        }
    }
    // Everything already here is accepted too; then the final GOAWAY names the next stream.
    while let Some(Ok(Some(resolver))) = h3c.accept().now_or_never() {
        requests.spawn(request(resolver, shared.clone()));
    }
    let last = last_accepted.load(Ordering::Acquire);
    let first_refused = if last == NONE_ACCEPTED { 0 } else { last + 4 };
    shared.goaway.store(first_refused, Ordering::Release);
    // h3 sends `last accepted + 1 stream`, i.e. `first_refused`.
    match tokio::time::timeout_at(deadline, h3c.shutdown(1)).await {
        Ok(Err(e)) => debug!("h3: sending GOAWAY: {e}"),
        Err(_) => debug!("h3: GOAWAY not written within the grace"),
        Ok(Ok(())) => {}
    }
    // Answer the accepted requests; keep accepting, so that later streams are refused.
    let mut accepting = true;
    loop {
        tokio::select! {
            _ = requests.wait() => break,
            r = h3c.accept(), if accepting => match r {
                Ok(Some(resolver)) => {
                    requests.spawn(request(resolver, shared.clone()));
                }
                _ => accepting = false,
            },
            Some(d) = delivered_rx.recv() => unacked.push(d),
            Some(()) = unacked.next(), if !unacked.is_empty() => {}
            _ = tokio::time::sleep_until(deadline) => {
                debug!("h3: requests still running after the {grace:?} grace");
                break;
            }
        }
    }
    // Every answer finished so far is reported; wait until the client has them all.
    while let Ok(d) = delivered_rx.try_recv() {
        unacked.push(d);
    }
    let all_acked = async { while unacked.next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all_acked).await.is_err() {
        debug!("h3: answers still unacknowledged after the {grace:?} grace");
    }
    // The client's QUIC stack has the GOAWAY by now, but its HTTP/3 layer may not have read it
    // yet, and a received close discards unread stream data: linger for the in-flight window
    // (or until the client, told, closes first).
    let linger = Instant::now() + Drain::in_flight_window(&quic, grace / 2);
    tokio::select! {
        _ = quic.closed() => {}
        _ = tokio::time::sleep_until(linger.min(deadline)) => {}
    }
    quic.close(VarInt::from_u32(H3_NO_ERROR), b"server shutdown");
    result
}

/// Whether a request may be served before the handshake is confirmed (see the crate docs).
fn replay_safe(method: &Method, path: &str) -> bool {
    method == Method::POST && path == "/echo"
}

async fn request(resolver: RequestResolver<Conn, Bytes>, mut sh: Shared) {
    // A header section over the limit is answered 431 by h3 itself and ends up here as an error.
    let (req, mut stream) = match resolver.resolve_request().await {
        Ok(r) => r,
        Err(e) => {
            debug!("h3: bad request: {e}");
            return;
        }
    };
    // h3 lets the stream named in the GOAWAY through; it was declared unprocessed.
    let id = stream.id().into_inner();
    if id >= sh.goaway.load(Ordering::Acquire) {
        stream.stop_sending(Code::H3_REQUEST_REJECTED);
        stream.stop_stream(Code::H3_REQUEST_REJECTED);
        return;
    }
    if !replay_safe(req.method(), req.uri().path())
        && !sh.confirmed.is_confirmed()
        && sh.confirmed.wait().await.is_err()
    {
        return;
    }
    // A duplex request body is read after a shutdown only until what was sent before it has
    // arrived; its server streams end once the body has. Other bodies are read to the end.
    let duplex = req.uri().path() == "/duplex";
    let (stop, body_ended) = if duplex {
        (CancellationToken::new(), CancellationToken::new())
    } else {
        (sh.stop_streams.clone(), CancellationToken::new())
    };
    let (mut send, recv) = stream.split();
    let drain = duplex.then(|| {
        Drain::new(
            sh.shutdown.clone(),
            sh.quic.clone(),
            sh.cfg.timeouts.shutdown_grace / 2,
        )
    });
    let body = RequestBody {
        inner: RecvBody::new(recv, |s, cx| {
            s.poll_recv_data(cx).map(|r| r.map(|o| o.map(to_bytes)))
        }),
        drain,
        ended: body_ended.clone(),
    };
    let cfg = sh.cfg.clone();
    let Ok(resp) = wirelab_http::handle(req.map(|()| body), cfg, stop.clone()).await;
    let (parts, mut body) = resp.into_parts();
    let end_streams = async {
        sh.shutdown.cancelled().await;
        body_ended.cancelled().await;
    };
    tokio::pin!(end_streams);
    let r = async {
        send.send_response(Response::from_parts(parts, ())).await?;
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = &mut end_streams, if duplex && !stop.is_cancelled() => {
                    stop.cancel();
                    continue;
                }
            };
            let Some(frame) = frame else { break };
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

type RecvHalf = RequestStream<tracked::Recv, Bytes>;

/// A request body that, with a [`Drain`], ends after a shutdown once what the client sent
/// before it has been read, telling the client with STOP_SENDING(H3_NO_ERROR) (RFC 9114 §4.1.1:
/// the server needs no more of the request). `ended` is cancelled when the body ends.
struct RequestBody {
    inner: RecvBody<RecvHalf>,
    drain: Option<Drain>,
    ended: CancellationToken,
}

impl RequestBody {
    fn stop(&mut self) -> Poll<Option<std::result::Result<Frame<Bytes>, h3::error::StreamError>>> {
        self.inner.stream_mut().stop_sending(Code::H3_NO_ERROR);
        self.inner.set_done();
        self.ended.cancel();
        Poll::Ready(None)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if let Some(d) = this.drain.as_mut() {
            if d.poll_must_stop(cx) {
                return this.stop();
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this
                    .drain
                    .as_mut()
                    .is_some_and(|d| d.poll_stop_when_idle(cx))
                {
                    this.stop()
                } else {
                    Poll::Pending
                }
            }
            Poll::Ready(r) => {
                if this.inner.is_end_stream() {
                    this.ended.cancel();
                }
                Poll::Ready(r)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
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
