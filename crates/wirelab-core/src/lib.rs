//! The wirelab contract: what every transport implements and shares.
//!
//! - [`codec`]: the service message format (pure, sans-IO).
//! - [`service`]: the server side of echo and server streams.
//! - [`fanout`]: the broadcast hub behind subscribe/publish, shared by every server.
//! - [`transport`]: the [`Client`], [`Channel`] and [`Server`] traits, and the [`Descriptor`]
//!   each transport describes itself with.
//! - [`config`]: limits, timeouts, client and server configs.
//! - [`tls`]: self-signed or PEM identities, rustls configs with ALPN, `SSLKEYLOGFILE`.
//! - [`mux`]: K logical streams over one ordered message connection.
//! - [`net`]: bounded connects and TLS handshakes, the accept loop.
//! - [`clock`]: the monotonic clock messages are stamped with.

pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod fanout;
pub mod mux;
pub mod net;
pub mod page;
pub mod resume;
pub mod service;
pub mod tls;
pub mod transport;
pub mod wire;

pub use config::{
    ClientConfig, H2Settings, Limits, Mode, QuicCongestion, QuicSettings, ServerConfig, Sharing,
    Timeouts, TransportId,
};
pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken;
pub use transport::{Channel, Client, Descriptor, Goodbye, Received, Server, TlsPolicy, Transport};
