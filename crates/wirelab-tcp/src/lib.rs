//! `tcp`: the floor. Service messages over raw TCP, each preceded by a 4-byte big-endian length.
//!
//! - `shared` mode: K logical streams multiplexed on one connection by the header's stream id;
//!   one lost segment delays every stream (TCP head-of-line blocking).
//! - `pool` mode: one connection per logical stream.
//!
//! `TCP_NODELAY` is set on both ends. A length prefix over the configured maximum, or a
//! connection that ends inside a message, closes the connection; the server keeps serving
//! others. On shutdown the server stops reading, writes every answer already due, and sends FIN.
//!
//! ```no_run
//! # async fn demo() -> wirelab_core::Result<()> {
//! use wirelab_core::{codec, Channel, Client, ClientConfig, Server, ServerConfig};
//! let server = wirelab_tcp::TcpServer::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap())).await?;
//! let mut client = wirelab_tcp::TcpClient::connect(&ClientConfig::new(server.local_addr())).await?;
//! let mut ch = client.channels().remove(0);
//! let echo = ch.echo(codec::encode(0, 0, 0, codec::Kind::Echo, 64)?).await?;
//! # Ok(()) }
//! ```

mod client;
mod server;

pub use client::TcpClient;
pub use server::TcpServer;

/// The `tcp` transport: raw TCP, length-prefixed messages (the floor).
#[derive(Debug, Clone, Copy)]
pub struct Tcp;

impl wirelab_core::Transport for Tcp {
    const DESCRIPTOR: wirelab_core::Descriptor = {
        use wirelab_core::{Goodbye, Mode, Sharing, TlsPolicy, TransportId};
        wirelab_core::Descriptor {
            id: TransportId::new("tcp"),
            summary: "raw TCP, length-prefixed messages (the floor)",
            alpn: b"",
            tls: TlsPolicy::Never,
            modes: &[Mode::Duplex],
            sharings: &[Sharing::Shared, Sharing::Pool],
            zero_rtt: false,
            datagrams: false,
            floor: None,
            labels: ["tcp", "tcp"],
            schemes: ["tcp://", "tcp://"],
            path: "",
            goodbye: Goodbye::Eof,
        }
    };
    type Client = TcpClient;
    type Server = TcpServer;
}
