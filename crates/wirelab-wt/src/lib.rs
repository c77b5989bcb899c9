//! `wt`: the service over WebTransport (HTTP/3 extended CONNECT), on the same quinn endpoint,
//! TLS and transport settings as `quic` and `h3` (`wirelab-quinn`), with the `wtransport`
//! library for the HTTP/3 and WebTransport layers on both sides.
//!
//! - A client opens ONE WebTransport session per QUIC connection (`CONNECT` with
//!   `:protocol webtransport` to [`PATH`]); each logical stream is one WebTransport
//!   bidirectional stream of that session, carrying service messages with a 4-byte big-endian
//!   length prefix exactly as on the quic floor. In `pool` sharing each stream gets its own
//!   connection and session.
//! - Datagrams: the server echoes every WebTransport datagram of a session verbatim
//!   ([`WtClient::datagrams`] gives the client's side); unreliable, so the harness counts loss
//!   and reordering instead of latency percentiles of retransmitted data.
//! - SETTINGS (sent by wtransport on the HTTP/3 control stream, both sides):
//!   `SETTINGS_ENABLE_CONNECT_PROTOCOL` (0x8) = 1, `SETTINGS_H3_DATAGRAM` (0x33) = 1,
//!   `SETTINGS_ENABLE_WEBTRANSPORT` (0x2b603742, draft-02) = 1 and
//!   `SETTINGS_WEBTRANSPORT_MAX_SESSIONS` (0xc671706a, draft-07) = 1: what Chromium (draft-02
//!   and draft-07) and aioquic (0x2b603742 with 0x33) check. QUIC `max_datagram_frame_size` is
//!   advertised on both sides (H3_DATAGRAM needs it).
//! - The server answers a CONNECT for another path `404`; a request wtransport cannot parse as
//!   a WebTransport CONNECT (another `:protocol`, missing `:scheme`/`:path`/`:authority`) is
//!   malformed (RFC 9114 §4.1.2) and its stream is stopped with `H3_MESSAGE_ERROR`; a request
//!   with another method with `H3_REQUEST_REJECTED`.
//! - Limits: the server grants [`wirelab_core::QuicSettings::max_concurrent_streams`]
//!   bidirectional streams plus one for the session's CONNECT stream; a client that opens more
//!   waits for credit (QUIC flow control), nothing is refused.
//! - No 0-RTT: wtransport's client waits for the full handshake before sending CONNECT.
//! - Client-side wire bytes are not counted: wtransport's client makes its own quinn endpoint,
//!   so the counting socket of `wirelab-quinn` cannot be put under it.
//! - On shutdown the server stops accepting streams after the in-flight window, answers what
//!   each stream sent before the shutdown, finishes (FIN) every stream, waits (bounded) for the
//!   client to acknowledge, then closes the connection with code 0 (see
//!   [`wirelab_core::Goodbye::WtSessionEnd`]).
//!
//! ```no_run
//! # async fn demo() -> wirelab_core::Result<()> {
//! use wirelab_core::tls::{client_config, Identity, Trust, ALPN_H3};
//! use wirelab_core::{codec, Channel, Client, ClientConfig, Server, ServerConfig};
//! let id = Identity::self_signed(&["localhost"])?;
//! let mut scfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
//! scfg.tls = Some(id.server_config(&[ALPN_H3])?);
//! let server = wirelab_wt::WtServer::bind(scfg).await?;
//! let mut ccfg = ClientConfig::new(server.local_addr());
//! ccfg.tls = Some(client_config(&Trust::Certificates(vec![id.certificate()]), &[ALPN_H3])?);
//! let mut client = wirelab_wt::WtClient::connect(&ccfg).await?;
//! let mut ch = client.channels().remove(0);
//! let echo = ch.echo(codec::encode(0, 0, 0, codec::Kind::Echo, 64)?).await?;
//! # Ok(()) }
//! ```

mod client;
pub mod datagram;
mod server;

pub use client::{WtChannel, WtClient, WtDatagrams};
pub use server::WtServer;

/// The path of the WebTransport session (`https://host:port/wt`).
pub const PATH: &str = "/wt";

/// Application error code on a stream the server stopped reading because it is shutting down:
/// the messages after the last answer were not processed.
pub const SHUTTING_DOWN: u32 = 1;

/// Application error code for a clean close of the connection (no error).
pub const CLOSE_OK: u32 = 0;

/// The `wt` transport: WebTransport over HTTP/3, K bidirectional streams in one session, and
/// datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Wt;

impl wirelab_core::Transport for Wt {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("wt"),
            summary: "WebTransport over HTTP/3: K streams in one session, and datagrams",
            alpn: tls::ALPN_H3,
            tls: TlsPolicy::Always,
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Shared],
            zero_rtt: false,
            datagrams: true,
            floor: Some(TransportId::new("quic")),
            labels: ["wt", "wt"],
            schemes: ["https://", "https://"],
            path: PATH,
            goodbye: Goodbye::WtSessionEnd,
        }
    };
    type Client = WtClient;
    type Server = WtServer;
}
