//! `h1`: HTTP/1.1 keep-alive (hyper 1.x), cleartext or TLS (ALPN `http/1.1`).
//!
//! - `POST /echo` answers with the request body, whatever it is (so `curl -d` works too).
//! - `GET /stream?count=&size=&interval_ms=` answers with a chunked body of `count` service
//!   messages of `size` bytes, one chunk per message. The optional request header
//!   `x-wirelab-stream` names the logical stream the messages are stamped with.
//!
//! The client keeps a keep-alive pool, by default 6 connections (what browsers open per host):
//! requests wait when every connection is busy, so K logical streams over 6 connections queue
//! behind each other. `shared` mode is a pool of one connection.
//!
//! Limits: a request head must arrive within the handshake timeout (hyper's header-read
//! timeout, which hyper only enforces when given a timer, as here) and fit in the head limit
//! (else `431`); a body over the message limit gets `413`. On shutdown the server stops
//! accepting, lets in-flight requests finish and closes idle connections.

mod client;
mod server;

pub use client::{H1Channel, H1Client};
pub use server::H1Server;

pub use wirelab_http::STREAM_HEADER;

/// The `h1` transport: HTTP/1.1 keep-alive, one request per message.
#[derive(Debug, Clone, Copy)]
pub struct H1;

impl wirelab_core::Transport for H1 {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("h1"),
            summary: "HTTP/1.1 keep-alive, one request per message",
            alpn: tls::ALPN_HTTP11,
            tls: TlsPolicy::Optional { by_default: false },
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Pool],
            zero_rtt: false,
            datagrams: false,
            floor: Some(TransportId::new("tcp")),
            labels: ["h1", "h1+tls"],
            schemes: ["http://", "https://"],
            path: "",
            goodbye: Goodbye::Http1Close,
        }
    };
    type Client = H1Client;
    type Server = H1Server;
}
