//! `h3`: the service over HTTP/3 (quinn + h3 + h3-quinn), TLS 1.3 with ALPN `h3`.
//!
//! The routes are those of every HTTP transport (`wirelab-http`): `POST /echo`,
//! `GET /stream?count=&size=&interval_ms=`, `POST /duplex`. The client has the modes of h2:
//! `rr` (one `POST /echo` request stream per message, K in flight on one connection) and
//! `duplex` (one long-lived `POST /duplex` per logical stream, request and response bodies
//! streaming at once).
//!
//! Limits set on purpose: the field section (header) size is capped at
//! [`wirelab_core::Limits::max_header_bytes`] (16 KiB; h3's default is unlimited) and a request
//! over it is answered `431`; the number of concurrent request streams, the windows and the
//! idle timeout come from [`wirelab_core::QuicSettings`] and [`wirelab_core::Timeouts`].
//!
//! 0-RTT replay policy: a request that arrives before the handshake is confirmed (possibly
//! replayed early data) is served at once only if it is `POST /echo`, which changes nothing on
//! the server and answers with no more bytes than it received. `GET /stream` (a small request
//! that makes the server send `count × size` bytes), `POST /duplex` and anything else wait until
//! the handshake is confirmed (RFC 8470 §3 allows delaying instead of answering `425`).
//!
//! 0-RTT on the client: HTTP/3 (control and QPACK streams, the requests) is built in early
//! data. If the server rejects it, quinn discards all of those streams; the client builds
//! HTTP/3 again on the same, now 1-RTT, QUIC connection and sends again every request that had
//! no answer yet, and `Client::early_data` says `Some(false)`.
//!
//! On shutdown the server sends GOAWAY (first the largest id, then, after the in-flight window,
//! the first stream it did not accept), answers every accepted request (server streams in
//! progress end early; a duplex body is read until what was sent before the shutdown has
//! arrived), refuses later ones with `H3_REQUEST_REJECTED`, waits (bounded by the grace) until
//! the client has acknowledged every answer, then closes the connection with `H3_NO_ERROR`.
//!
//! RFC 9220 (WebSocket over HTTP/3) needs `:protocol websocket`, which h3 0.0.8 cannot express;
//! see the HTTP/3 chapter of the docs.

mod body;
mod client;
mod server;
mod tracked;

pub use client::{H3Channel, H3Client};
pub use server::H3Server;

/// HTTP/3's "no error" application code (RFC 9114 §8.1), used for clean closes.
pub const H3_NO_ERROR: u32 = 0x100;

/// The `h3` transport: HTTP/3: a request per message (rr) or full-duplex bodies (duplex).
#[derive(Debug, Clone, Copy)]
pub struct H3;

impl wirelab_core::Transport for H3 {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("h3"),
            summary: "HTTP/3: a request per message (rr) or full-duplex bodies (duplex)",
            alpn: tls::ALPN_H3,
            tls: TlsPolicy::Always,
            modes: &[Mode::Rr, Mode::Duplex],
            sharings: &[Sharing::Shared],
            zero_rtt: true,
            datagrams: false,
            floor: Some(TransportId::new("quic")),
            labels: ["h3", "h3"],
            schemes: ["https://", "https://"],
            path: "",
            goodbye: Goodbye::Http3Goaway,
        }
    };
    type Client = H3Client;
    type Server = H3Server;
}
