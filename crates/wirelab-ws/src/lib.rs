//! `ws`: WebSocket (RFC 6455) over an HTTP/1.1 Upgrade, `ws://` and `wss://`, endpoint `/ws`.
//!
//! One binary WebSocket message carries one service message; a server stream arrives as
//! server-sent messages. `shared` mode multiplexes K logical streams on one WebSocket by the
//! header's stream id; `pool` mode opens one WebSocket per logical stream.
//!
//! Framing is tokio-tungstenite's; the session logic shared with `h2ws` is in
//! `wirelab-websocket`. Together they add what RFC 6455 asks of a server and plain tungstenite
//! does not do:
//! - handshake answers: a wrong or missing `Sec-WebSocket-Version` gets `426` with
//!   `Sec-WebSocket-Version: 13`; a missing or invalid key, or missing `Upgrade`/`Connection`
//!   headers, gets `400` with a short reason; another path `404`; a method other than GET `405`;
//!   a head over the size limit `431`; a client too slow to finish its handshake `408`;
//! - close codes that tell the truth: 1000 normal end; 1001 on server shutdown (in-flight answers
//!   are written first) and on idle timeout; 1002 protocol error (unmasked client frame, control
//!   frame over 125 bytes, reserved bits or opcodes); 1003 a text message or a binary message
//!   that is not a service message; 1007 invalid UTF-8; 1009 a message or frame over the limit,
//!   also when only its declared length is over. The client reports 1006 when TCP dies without
//!   a close frame;
//! - ping keepalive at a configurable interval, an idle timeout, finite frame/message limits and
//!   a small read buffer.
//!
//! [`wirelab_core::ServerConfig::raw_echo`] makes the server echo every data message verbatim,
//! text included: that is the mode conformance suites (Autobahn) need.

mod client;
pub mod handshake;
mod server;

pub use client::WsClient;
pub use handshake::PATH;
pub use server::WsServer;
pub use wirelab_websocket::client::ABNORMAL_CLOSURE;

/// The `ws` transport: WebSocket over an HTTP/1.1 Upgrade (RFC 6455).
#[derive(Debug, Clone, Copy)]
pub struct Ws;

impl wirelab_core::Transport for Ws {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("ws"),
            summary: "WebSocket over an HTTP/1.1 Upgrade (RFC 6455)",
            alpn: tls::ALPN_HTTP11,
            tls: TlsPolicy::Optional { by_default: false },
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Shared, Sharing::Pool],
            zero_rtt: false,
            datagrams: false,
            floor: Some(TransportId::new("tcp")),
            labels: ["ws", "ws+tls"],
            schemes: ["ws://", "wss://"],
            path: handshake::PATH,
            goodbye: Goodbye::WsGoingAway,
        }
    };
    type Client = WsClient;
    type Server = WsServer;
}
