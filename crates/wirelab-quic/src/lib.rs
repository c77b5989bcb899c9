//! `quic`: the QUIC floor. Service messages on raw QUIC streams (quinn), each preceded by a
//! 4-byte big-endian length, exactly as on the tcp floor.
//!
//! - One bidirectional QUIC stream per logical stream; in `shared` mode all K streams on ONE
//!   connection (a lost packet delays only the streams whose data it carried), in `pool` mode
//!   one connection each.
//! - ALPN `wirelab-quic/1`, TLS 1.3 (QUIC has no cleartext mode).
//! - 0-RTT: with [`ClientConfig::zero_rtt`] and a ticket from an earlier session, the first
//!   messages travel as early data. The server answers an echo at once (replaying it changes
//!   nothing and sends back no more than it received) but holds a server-stream request until
//!   the handshake is confirmed (a replayed one would make it send up to
//!   `count × size` bytes).
//! - On shutdown the server keeps reading each stream until what the client sent before the
//!   shutdown has arrived (two round trips plus 10 ms, then as long as data is at hand, at most
//!   half the grace), answers it, stops the stream's receive side with [`SHUTTING_DOWN`], ends
//!   it with FIN, waits (bounded) for the client to acknowledge the answers, then closes the
//!   connection with application code 0. New streams within that in-flight window are served
//!   the same way; later ones are reset and stopped with [`SHUTTING_DOWN`] (nothing on them was
//!   processed).
//!
//! ```no_run
//! # async fn demo() -> wirelab_core::Result<()> {
//! use wirelab_core::tls::{client_config, Identity, Trust, ALPN_WIRELAB_QUIC};
//! use wirelab_core::{codec, Channel, Client, ClientConfig, Server, ServerConfig};
//! let id = Identity::self_signed(&["localhost"])?;
//! let mut scfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
//! scfg.tls = Some(id.server_config(&[ALPN_WIRELAB_QUIC])?);
//! let server = wirelab_quic::QuicServer::bind(scfg).await?;
//! let mut ccfg = ClientConfig::new(server.local_addr());
//! ccfg.tls = Some(client_config(&Trust::Certificates(vec![id.certificate()]), &[ALPN_WIRELAB_QUIC])?);
//! let mut client = wirelab_quic::QuicClient::connect(&ccfg).await?;
//! let mut ch = client.channels().remove(0);
//! let echo = ch.echo(codec::encode(0, 0, 0, codec::Kind::Echo, 64)?).await?;
//! # Ok(()) }
//! ```

mod client;
mod server;

pub use client::{QuicChannel, QuicClient};
pub use server::QuicServer;

/// Application error code on a stream the server refused, or stopped reading, because it is
/// shutting down: the messages after the last answer were not processed.
pub const SHUTTING_DOWN: u32 = 1;

/// The `quic` transport: raw QUIC streams, length-prefixed messages (the QUIC floor).
#[derive(Debug, Clone, Copy)]
pub struct Quic;

impl wirelab_core::Transport for Quic {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{tls, Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("quic"),
            summary: "raw QUIC streams, length-prefixed messages (the QUIC floor)",
            alpn: tls::ALPN_WIRELAB_QUIC,
            tls: TlsPolicy::Always,
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Shared],
            zero_rtt: true,
            datagrams: false,
            floor: None,
            labels: ["quic", "quic"],
            schemes: ["quic://", "quic://"],
            path: "",
            goodbye: Goodbye::QuicStop,
        }
    };
    type Client = QuicClient;
    type Server = QuicServer;
}
