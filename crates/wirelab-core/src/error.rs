//! The error type every transport returns.

use crate::codec::CodecError;

/// A transport error. Bad input from a peer is always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A message was not a valid service message.
    #[error("bad message: {0}")]
    Codec(#[from] CodecError),
    /// TLS set-up or handshake failed.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The peer closed with a status code (WebSocket close code; 1006 when TCP died without a
    /// close frame).
    #[error("closed by peer with code {code}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// The connection ended where a message was expected.
    #[error("connection closed")]
    ConnectionClosed,
    /// A bounded wait ran out.
    #[error("timed out during {0}")]
    Timeout(&'static str),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An HTTP request got a non-success status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The configuration cannot work.
    #[error("configuration error: {0}")]
    Config(String),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
