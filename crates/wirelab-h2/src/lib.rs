//! `h2`: HTTP/2 (hyper 1.x over h2), over TLS with ALPN `h2` or cleartext prior-knowledge h2c.
//!
//! The service in every mode, all on ONE connection in `shared` mode (one per logical stream in
//! `pool` mode):
//! - `rr`: each message is one `POST /echo` on a new HTTP/2 stream; K logical streams are K
//!   requests in flight at once;
//! - `duplex`: each logical stream is one long-lived `POST /duplex` whose request and response
//!   bodies stream at the same time; messages are split out of the DATA by their own length;
//! - `stream`: `GET /stream?count=&size=&interval_ms=` as a streaming response.
//!
//! Settings (windows, concurrent streams, frame and header-list sizes) come from
//! [`wirelab_core::H2Settings`]; flood defences are hyper's and h2's (rapid reset, CONTINUATION
//! and empty-DATA floods end in GOAWAY ENHANCE_YOUR_CALM), plus an idle timer that hyper lacks
//! for HTTP/2: a connection with no open stream for the idle timeout gets a graceful GOAWAY.
//! On shutdown the server sends GOAWAY and lets in-flight requests finish.

mod client;
mod server;

pub use client::{H2Channel, H2Client};
pub use server::H2Server;

/// Request header carrying the logical stream id of a `GET /stream` or `POST /duplex`.
pub const STREAM_HEADER: &str = "x-wirelab-stream";

/// The `h2` transport: HTTP/2: a request per message (rr) or full-duplex bodies (duplex).
#[derive(Debug, Clone, Copy)]
pub struct H2;

impl wirelab_core::Transport for H2 {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("h2"),
            summary: "HTTP/2: a request per message (rr) or full-duplex bodies (duplex)",
            alpn: tls::ALPN_H2,
            tls: TlsPolicy::Optional { by_default: true },
            modes: &[Mode::Rr, Mode::Duplex],
            sharings: &[Sharing::Shared],
            zero_rtt: false,
            datagrams: false,
            floor: Some(TransportId::new("tcp")),
            labels: ["h2c", "h2"],
            schemes: ["http://", "https://"],
            path: "",
            goodbye: Goodbye::Http2Goaway,
        }
    };
    type Client = H2Client;
    type Server = H2Server;
}
