//! The client side of a WebSocket session: a [`wirelab_core::mux`] connection over it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use wirelab_core::mux::{self, Mux, MuxChannel, MuxWriter};
use wirelab_core::{Error, Result};

/// Close code reported when the connection ended without a close frame (RFC 6455 §7.1.5).
pub const ABNORMAL_CLOSURE: u16 = 1006;

/// Wraps the transport under a client WebSocket so that, once a close frame has gone out (ours,
/// or tungstenite's reply to the peer's), the next flush also ends the sending side: FIN on TCP,
/// END_STREAM on an HTTP/2 stream. tokio-tungstenite never shuts its transport down itself, and
/// on HTTP/2 a stream dropped without END_STREAM is reset.
#[derive(Debug)]
pub struct EndAfterClose<S> {
    inner: S,
    closing: Arc<AtomicBool>,
    ended: bool,
}

impl<S> EndAfterClose<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            closing: Arc::new(AtomicBool::new(false)),
            ended: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> EndAfterClose<S> {
    fn end_if_closing(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.load(Ordering::SeqCst) && !self.ended {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.ended = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for EndAfterClose<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // The close reply may already have been flushed by the writer half before the reader
        // saw the close; tungstenite flushes its reply before it reads again, so ending the
        // sending side here comes after the reply.
        ready!(self.as_mut().end_if_closing(cx))?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EndAfterClose<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.end_if_closing(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Writer<S> {
    sink: SplitSink<WebSocketStream<EndAfterClose<S>>, Message>,
    closing: Arc<AtomicBool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MuxWriter for Writer<S> {
    async fn feed(&mut self, msg: Bytes) -> Result<()> {
        self.sink.feed(Message::Binary(msg)).await.map_err(map_err)
    }

    async fn flush(&mut self) -> Result<()> {
        self.sink.flush().await.map_err(map_err)
    }

    async fn close(mut self) -> Result<()> {
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        self.sink.send(close).await.map_err(map_err)?;
        // The close frame is written; only now may the sending side end (the next flush, or
        // the reader's next read, does it).
        self.closing.store(true, Ordering::SeqCst);
        self.sink.flush().await.map_err(map_err)
    }
}

/// Maps tungstenite's errors to the contract's, reporting 1006 when the transport died without
/// a close frame.
pub fn map_err(e: WsError) -> Error {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) | WsError::Io(_) => {
            Error::Closed {
                code: ABNORMAL_CLOSURE,
                reason: "connection lost without a close frame".into(),
            }
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed => Error::ConnectionClosed,
        WsError::Capacity(c) => Error::Protocol(format!("over a limit: {c}")),
        WsError::Http(r) => Error::Status(r.status().as_u16()),
        other => Error::Protocol(other.to_string()),
    }
}

fn map_msg(
    m: std::result::Result<Message, WsError>,
    closing: &AtomicBool,
) -> Option<Result<Bytes>> {
    match m {
        Ok(Message::Binary(b)) => Some(Ok(b)),
        Ok(Message::Text(_)) => Some(Err(Error::Protocol("unexpected text message".into()))),
        Ok(Message::Close(f)) => {
            // tungstenite queues the close reply; the flush that sends it ends our side too.
            closing.store(true, Ordering::SeqCst);
            Some(Err(match f {
                Some(f) => Error::Closed {
                    code: f.code.into(),
                    reason: f.reason.to_string(),
                },
                // A close frame with no status: 1005 "no status received" (RFC 6455 §7.1.5).
                None => Error::Closed {
                    code: 1005,
                    reason: String::new(),
                },
            }))
        }
        Ok(_) => None,
        Err(e) => Some(Err(map_err(e))),
    }
}

/// Starts a mux connection carrying the logical streams `ids` over an open client WebSocket.
pub fn open<S>(ws: WebSocketStream<EndAfterClose<S>>, ids: &[u32]) -> (Mux, Vec<MuxChannel>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closing = ws.get_ref().closing.clone();
    let (sink, stream) = ws.split();
    let flag = closing.clone();
    let reader = Box::pin(stream.filter_map(move |m| std::future::ready(map_msg(m, &flag))));
    mux::spawn(Writer { sink, closing }, reader, ids)
}
