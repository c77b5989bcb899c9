//! The traits every transport implements. The harness reaches transports only through these.
//!
//! A client [`Client::connect`]s a session of K logical streams, takes its [`Channel`]s (one per
//! logical stream, each usable from its own task), and finally closes the session gracefully.
//! A server [`Server::bind`]s, then [`Server::serve`]s until its shutdown token fires, finishing
//! in-flight messages before it returns.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::codec::{self, Kind, StreamRequest};
use crate::config::{ClientConfig, ServerConfig};
use crate::error::{Error, Result};

/// One message received by a client, with the client's monotonic receive time.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message bytes.
    pub msg: Bytes,
    /// [`crate::clock::now_ns`] when the transport delivered it.
    pub at_ns: u64,
}

/// One logical stream of a session.
pub trait Channel: Send + 'static {
    /// The logical stream id (0..K).
    fn id(&self) -> u32;

    /// Sends one message without waiting for its answer. Messages on one channel are answered
    /// in order.
    fn send(&mut self, msg: Bytes) -> impl Future<Output = Result<()>> + Send;

    /// Receives the next answer on this channel. Cancel-safe: dropping the future loses nothing.
    fn recv(&mut self) -> impl Future<Output = Result<Bytes>> + Send;

    /// Sends one message and waits for its echo.
    fn echo(&mut self, msg: Bytes) -> impl Future<Output = Result<Bytes>> + Send {
        async move {
            self.send(msg).await?;
            self.recv().await
        }
    }

    /// Asks the server for a stream and returns every message of it, in order, with receive
    /// times. Do not interleave with unanswered [`Channel::send`]s on the same channel.
    fn server_stream(
        &mut self,
        req: StreamRequest,
    ) -> impl Future<Output = Result<Vec<Received>>> + Send;
}

/// [`Channel::server_stream`] for transports that carry the request and the stream as service
/// messages (tcp, ws, quic, duplex modes): send the request, then receive until
/// [`crate::codec::Kind::StreamEnd`].
pub async fn stream_by_messages<C: Channel + ?Sized>(
    ch: &mut C,
    req: StreamRequest,
) -> Result<Vec<Received>> {
    ch.send(req.encode(ch.id(), 0, clock::now_ns())).await?;
    let mut out = Vec::with_capacity(req.count as usize);
    loop {
        let msg = ch.recv().await?;
        let at_ns = clock::now_ns();
        let h = codec::peek_header(&msg)?;
        match h.kind {
            Kind::StreamData => out.push(Received { msg, at_ns }),
            Kind::StreamEnd => return Ok(out),
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected {other:?} message during a server stream"
                )))
            }
        }
    }
}

/// A client session of K logical streams.
pub trait Client: Sized + Send + 'static {
    /// The per-stream handle.
    type Channel: Channel;

    /// Opens the session: connections, TLS and protocol handshakes.
    fn connect(cfg: &ClientConfig) -> impl Future<Output = Result<Self>> + Send;

    /// Takes the K channels. A second call returns an empty vector.
    fn channels(&mut self) -> Vec<Self::Channel>;

    /// Closes the session gracefully (close handshakes where the protocol has them).
    fn close(self) -> impl Future<Output = Result<()>> + Send;

    /// Whether the session's first requests travelled as 0-RTT early data: `Some(true)` if the
    /// server accepted them, `Some(false)` if it rejected them, `None` if none were sent (a full
    /// handshake, or a transport without 0-RTT). May wait for the handshake to finish.
    fn early_data(&mut self) -> impl Future<Output = Option<bool>> + Send {
        std::future::ready(None)
    }
}

/// A listening server.
pub trait Server: Sized + Send + 'static {
    /// Binds the listening socket.
    fn bind(cfg: ServerConfig) -> impl Future<Output = Result<Self>> + Send;

    /// Where the server listens (the OS-chosen port when the config said 0).
    fn local_addr(&self) -> SocketAddr;

    /// Serves until `shutdown` is cancelled, then stops accepting, finishes in-flight messages,
    /// closes every connection gracefully (bounded by the config's shutdown grace) and returns.
    fn serve(self, shutdown: CancellationToken) -> impl Future<Output = Result<()>> + Send;
}
