//! `h2ws`: WebSocket over HTTP/2 extended CONNECT (RFC 8441), over TLS with ALPN `h2` or
//! cleartext h2c.
//!
//! The server advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` and accepts `:method CONNECT`
//! with `:protocol websocket` on path `/ws` and `sec-websocket-version: 13`; it answers `200`
//! (not `101`: HTTP/2 has no protocol switch) and runs RFC 6455 framing over that one HTTP/2
//! stream, with the same behaviour as `ws`: close codes, limits, keepalive, 1001 on shutdown.
//! Refusals: another `:protocol` gets `400`; a missing or wrong `sec-websocket-version` gets
//! `400` with `sec-websocket-version: 13`; another path `404`; a non-CONNECT request `405`.
//!
//! The client opens K WebSockets as K streams of ONE TCP connection (`shared`), or one
//! connection each (`pool`). It first waits, bounded, for the server's
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, and fails with a clear error if it does not come. A clean
//! close is the WebSocket close handshake, then END_STREAM from each side: no stream is reset.

mod client;
mod server;

pub use client::H2wsClient;
pub use server::H2wsServer;

/// The WebSocket endpoint's path.
pub const PATH: &str = "/ws";

/// The `h2ws` transport: WebSocket over HTTP/2 extended CONNECT (RFC 8441).
#[derive(Debug, Clone, Copy)]
pub struct H2ws;

impl wirelab_core::Transport for H2ws {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("h2ws"),
            summary: "WebSocket over HTTP/2 extended CONNECT (RFC 8441)",
            alpn: tls::ALPN_H2,
            tls: TlsPolicy::Optional { by_default: true },
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Shared],
            zero_rtt: false,
            datagrams: false,
            floor: Some(TransportId::new("tcp")),
            labels: ["h2ws (h2c)", "h2ws"],
            schemes: ["http://", "https://"],
            path: "/ws",
            goodbye: Goodbye::WsGoingAway,
        }
    };
    type Client = H2wsClient;
    type Server = H2wsServer;
}
