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
use crate::config::{ClientConfig, Mode, ServerConfig, Sharing, TransportId};
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

    /// Moves the session to a new local address and abandons the old one, as a NAT rebinding
    /// or a change of network does: `Ok(true)` when the session's connections survive it (QUIC
    /// migrates a connection to the new address without a new handshake), `Ok(false)` when
    /// this transport cannot (a TCP connection is its address pair: the caller must open a new
    /// session, and resume).
    fn migrate(&mut self) -> impl Future<Output = Result<bool>> + Send {
        std::future::ready(Ok(false))
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

/// How a transport uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// No TLS mode (tcp: the floor is the bare kernel TCP).
    Never,
    /// Both modes; `by_default` says which one runs unless told (h2 and h2ws: TLS, since
    /// browsers speak HTTP/2 only over TLS; `--h2c` turns it off).
    Optional {
        /// TLS unless told otherwise.
        by_default: bool,
    },
    /// Always TLS (QUIC: TLS 1.3 is part of the protocol).
    Always,
}

impl TlsPolicy {
    /// Whether the transport can run over TLS at all.
    pub fn supported(self) -> bool {
        self != Self::Never
    }

    /// Whether it runs over TLS unless told otherwise.
    pub fn by_default(self) -> bool {
        matches!(self, Self::Always | Self::Optional { by_default: true })
    }

    /// Whether TLS is used when the user asked for `tls` (`--tls`) or asked to turn a
    /// TLS-by-default transport's TLS off (`cleartext`, `--h2c`).
    pub fn resolve(self, tls: bool, cleartext: bool) -> bool {
        match self {
            Self::Never => false,
            Self::Always => true,
            Self::Optional { by_default } => tls || (by_default && !cleartext),
        }
    }
}

/// What a client sees when the server shuts down gracefully while it is busy: the protocol's
/// own way of saying "going away", after every message already received is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// The byte stream simply ends (TCP FIN) after the last answer.
    Eof,
    /// A WebSocket close frame with 1001 "going away".
    WsGoingAway,
    /// HTTP/1.1: the answer carries `Connection: close` and the connection ends.
    Http1Close,
    /// HTTP/2 GOAWAY (NO_ERROR): streams at or below its last stream id finish.
    Http2Goaway,
    /// Raw QUIC: each stream answered, then STOP_SENDING `SHUTTING_DOWN`, then
    /// CONNECTION_CLOSE with code 0.
    QuicStop,
    /// HTTP/3 GOAWAY: requests below its id answered, the rest H3_REQUEST_REJECTED.
    Http3Goaway,
    /// Server-Sent Events: each event stream ends after the answers to the requests already
    /// received, and the client's reconnection is refused (or answered `204`), so the client
    /// stops; it reports that as the connection closing.
    EventStreamEnd,
    /// WebTransport: each stream answered what arrived before the shutdown, then finished
    /// (FIN), and the session's connection closed with code 0; the client reports either as
    /// the connection closing.
    WtSessionEnd,
}

/// What a transport is, said in one place: its crate exports one, through [`Transport`], and
/// the harness derives everything else from its one list of them (dispatch, `serve`'s ports
/// and schemes, the `hol` variants, the conformance instances, report order, CI counts).
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    /// The short id (`--transport`, result paths, crate suffix).
    pub id: TransportId,
    /// One line for `--help` and listings.
    pub summary: &'static str,
    /// The ALPN id offered over TLS (empty for a transport without TLS).
    pub alpn: &'static [u8],
    /// Whether and when it uses TLS.
    pub tls: TlsPolicy,
    /// The ways it carries messages, the first being its usual one ([`Mode::Duplex`] only for
    /// message transports; h2 and h3 also have request/response).
    pub modes: &'static [Mode],
    /// The ways of carrying K logical streams it is compared in (every client accepts both
    /// [`Sharing`]s; these are the ones that differ in kind: tcp and ws one connection or one
    /// per stream, h1 a keep-alive pool, the multiplexers one connection).
    pub sharings: &'static [Sharing],
    /// Whether a resumed session can send its first requests as 0-RTT early data.
    pub zero_rtt: bool,
    /// Whether it can carry unreliable datagrams.
    pub datagrams: bool,
    /// The floor it is compared with: the bare protocol under it (tcp under the TCP-based
    /// transports, quic under h3). `None` for a floor itself.
    pub floor: Option<TransportId>,
    /// The labels of its cleartext and TLS forms in tables (`h2c`/`h2`, `ws`/`ws+tls`).
    pub labels: [&'static str; 2],
    /// URL schemes of its cleartext and TLS forms (`ws://`/`wss://`).
    pub schemes: [&'static str; 2],
    /// The request path a peer must use (`/ws`), empty where there is none.
    pub path: &'static str,
    /// How it shows a graceful server shutdown to a busy client.
    pub goodbye: Goodbye,
}

impl Descriptor {
    /// Whether it has more than one mode (h2, h3).
    pub fn has_modes(&self) -> bool {
        self.modes.len() > 1
    }

    /// The label of the form with or without TLS.
    pub fn label(&self, tls: bool) -> &'static str {
        self.labels[usize::from(tls)]
    }

    /// The URL scheme of the form with or without TLS.
    pub fn scheme(&self, tls: bool) -> &'static str {
        self.schemes[usize::from(tls)]
    }
}

/// A transport: its crate's client, server and [`Descriptor`] as one type, so the harness can
/// turn an id into types in one place.
pub trait Transport: 'static {
    /// What it is.
    const DESCRIPTOR: Descriptor;
    /// Its client session.
    type Client: Client;
    /// Its server.
    type Server: Server;
}
