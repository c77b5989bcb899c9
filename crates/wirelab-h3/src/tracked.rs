//! The server's QUIC backend for h3: h3-quinn's for the unidirectional streams (control,
//! QPACK), and request streams of its own whose send halves report, once finished, when the
//! client has acknowledged all their data.
//!
//! Why: quinn discards stream data not yet sent when a connection is closed, and h3-quinn's
//! streams hide the quinn stream whose `stopped()` says when a response has been delivered. A
//! shutting-down server waits (bounded) for these reports before it closes the connection, so
//! the answers it finished are not lost with the close. The request stream code follows
//! h3-quinn 0.0.10 (MIT), trimmed to what the server uses.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, Stream, StreamExt};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use quinn::VarInt;
use tokio::sync::mpsc;

/// Resolves when the client has acknowledged every byte of a finished response (or stopped the
/// stream, or the connection ended).
pub(crate) type Delivered = BoxFuture<'static, ()>;

type Pair = Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>;
type PairStream = Pin<Box<dyn Stream<Item = Pair> + Send + Sync>>;

/// No request stream accepted yet (in [`Conn::new`]'s `last_accepted`).
pub(crate) const NONE_ACCEPTED: u64 = u64::MAX;

/// An h3 server connection over quinn, reporting finished responses on `delivered` and the id
/// of the last request stream handed to h3 in `last_accepted`.
pub(crate) struct Conn {
    uni: h3_quinn::Connection,
    conn: quinn::Connection,
    incoming_bi: PairStream,
    opening_bi: Option<PairStream>,
    delivered: mpsc::UnboundedSender<Delivered>,
    last_accepted: Arc<AtomicU64>,
}

impl Conn {
    pub(crate) fn new(
        conn: quinn::Connection,
        delivered: mpsc::UnboundedSender<Delivered>,
        last_accepted: Arc<AtomicU64>,
    ) -> Self {
        Self {
            last_accepted,
            uni: h3_quinn::Connection::new(conn.clone()),
            incoming_bi: Box::pin(stream::unfold(conn.clone(), |c| async {
                Some((c.accept_bi().await, c))
            })),
            conn,
            opening_bi: None,
            delivered,
        }
    }
}

/// Opens streams for h3 (the server opens only unidirectional ones).
pub(crate) struct Opener {
    uni: h3_quinn::OpenStreams,
    conn: quinn::Connection,
    opening_bi: Option<PairStream>,
    delivered: mpsc::UnboundedSender<Delivered>,
}

fn open_bi(
    slot: &mut Option<PairStream>,
    conn: &quinn::Connection,
    delivered: &mpsc::UnboundedSender<Delivered>,
    cx: &mut Context<'_>,
) -> Poll<Result<Request, StreamErrorIncoming>> {
    let bi = slot.get_or_insert_with(|| {
        Box::pin(stream::unfold(conn.clone(), |c| async {
            Some((c.open_bi().await, c))
        }))
    });
    let (send, recv) = ready!(bi.poll_next_unpin(cx))
        .expect("an unfold over open_bi never ends")
        .map_err(|e| StreamErrorIncoming::ConnectionErrorIncoming {
            connection_error: connection_error(e),
        })?;
    Poll::Ready(Ok(Request::new(send, recv, delivered.clone())))
}

impl quic::OpenStreams<Bytes> for Conn {
    type BidiStream = Request;
    type SendStream = h3_quinn::SendStream<Bytes>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bi(&mut self.opening_bi, &self.conn, &self.delivered, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        quic::OpenStreams::<Bytes>::poll_open_send(&mut self.uni, cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.uni, code, reason)
    }
}

impl quic::Connection<Bytes> for Conn {
    type RecvStream = h3_quinn::RecvStream;
    type OpenStreams = Opener;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        quic::Connection::<Bytes>::poll_accept_recv(&mut self.uni, cx)
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let (send, recv) = ready!(self.incoming_bi.poll_next_unpin(cx))
            .expect("an unfold over accept_bi never ends")
            .map_err(connection_error)?;
        self.last_accepted
            .store(VarInt::from(send.id()).into_inner(), Ordering::Release);
        Poll::Ready(Ok(Request::new(send, recv, self.delivered.clone())))
    }

    fn opener(&self) -> Self::OpenStreams {
        Opener {
            uni: quic::Connection::<Bytes>::opener(&self.uni),
            conn: self.conn.clone(),
            opening_bi: None,
            delivered: self.delivered.clone(),
        }
    }
}

impl quic::OpenStreams<Bytes> for Opener {
    type BidiStream = Request;
    type SendStream = h3_quinn::SendStream<Bytes>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bi(&mut self.opening_bi, &self.conn, &self.delivered, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        quic::OpenStreams::<Bytes>::poll_open_send(&mut self.uni, cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        quic::OpenStreams::<Bytes>::close(&mut self.uni, code, reason)
    }
}

/// A request stream: both halves.
pub(crate) struct Request {
    send: SendHalf,
    recv: Recv,
}

impl Request {
    fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        delivered: mpsc::UnboundedSender<Delivered>,
    ) -> Self {
        Self {
            send: SendHalf {
                stream: send,
                writing: None,
                delivered,
            },
            recv: Recv { stream: recv },
        }
    }
}

impl quic::BidiStream<Bytes> for Request {
    type SendStream = SendHalf;
    type RecvStream = Recv;

    fn split(self) -> (SendHalf, Recv) {
        (self.send, self.recv)
    }
}

impl quic::RecvStream for Request {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl quic::SendStream<Bytes> for Request {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

/// The send half of a request stream (the response).
pub(crate) struct SendHalf {
    stream: quinn::SendStream,
    writing: Option<WriteBuf<Bytes>>,
    delivered: mpsc::UnboundedSender<Delivered>,
}

impl quic::SendStream<Bytes> for SendHalf {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        if let Some(data) = self.writing.as_mut() {
            while data.has_remaining() {
                let n = ready!(Pin::new(&mut self.stream).poll_write(cx, data.chunk()))
                    .map_err(write_error)?;
                data.advance(n);
            }
        }
        self.writing = None;
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.writing.is_some() {
            // h3 waits for `poll_ready` before each frame; anything else is a bug in h3.
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "send_data while a frame is still being written".into(),
                ),
            });
        }
        self.writing = Some(data.into());
        Ok(())
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        let r = self
            .stream
            .finish()
            .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e)));
        if r.is_ok() {
            let acked = self.stream.stopped();
            // The receiver is gone only when the connection task is, and then nobody waits.
            let _ = self.delivered.send(Box::pin(async move {
                let _ = acked.await;
            }));
        }
        Poll::Ready(r)
    }

    fn reset(&mut self, reset_code: u64) {
        let _ = self
            .stream
            .reset(VarInt::from_u64(reset_code).unwrap_or(VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

/// The receive half of a request stream (the request). It always holds its quinn stream, so
/// `stop_sending` reaches it even while a read is pending: an owned read future would hold the
/// stream, the stop would be lost, and quinn's drop would then send STOP_SENDING with code 0,
/// which is no HTTP/3 code.
pub(crate) struct Recv {
    stream: quinn::RecvStream,
}

impl quic::RecvStream for Recv {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        // quinn's `read_chunk` is cancel-safe and keeps no state of its own, so a fresh future
        // per poll is the poll function it wraps.
        let read = self.stream.read_chunk(usize::MAX, true);
        tokio::pin!(read);
        let chunk = ready!(std::future::Future::poll(read, cx));
        Poll::Ready(Ok(chunk.map_err(read_error)?.map(|c| c.bytes)))
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self
            .stream
            .stop(VarInt::from_u64(error_code).unwrap_or(VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    StreamId::try_from(VarInt::from(id).into_inner()).expect("a QUIC stream id is an h3 stream id")
}

fn connection_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => ConnectionErrorIncoming::ApplicationClose {
            error_code: c.error_code.into_inner(),
        },
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(std::sync::Arc::new(other)),
    }
}

fn read_error(e: quinn::ReadError) -> StreamErrorIncoming {
    match e {
        quinn::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::ReadError::ConnectionLost(e) => StreamErrorIncoming::ConnectionErrorIncoming {
            connection_error: connection_error(e),
        },
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn write_error(e: quinn::WriteError) -> StreamErrorIncoming {
    match e {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(e) => StreamErrorIncoming::ConnectionErrorIncoming {
            connection_error: connection_error(e),
        },
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}
