//! Configuration shared by every transport: addresses, TLS, limits and timeouts.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The short id of a transport (`tcp`, `ws`, `h2`, ...), used for `--transport`, result paths
/// and crate names. Each transport crate names itself in its [`crate::transport::Descriptor`];
/// this crate does not enumerate transports (the harness holds the one list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId(&'static str);

impl TransportId {
    /// The id a transport crate gives itself: short, lowercase ASCII letters and digits.
    pub const fn new(id: &'static str) -> Self {
        Self(id)
    }

    /// The id as written on the command line and in result paths.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.0)
    }
}

/// How K logical streams map onto connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// All logical streams multiplexed on one connection (TCP head-of-line blocking possible).
    Shared,
    /// Connections from a pool. For tcp and ws: one connection per logical stream. For h1: a
    /// keep-alive pool of [`ClientConfig::pool_size`] connections shared by all streams.
    Pool,
}

impl FromStr for Sharing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(Self::Shared),
            "pool" => Ok(Self::Pool),
            _ => Err(format!("unknown sharing mode '{s}' (known: shared pool)")),
        }
    }
}

/// How HTTP transports that have both carry messages (h2, h3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One long-lived request per logical stream whose request and response bodies stream at
    /// the same time (full duplex over one HTTP stream).
    Duplex,
    /// Request/response: each message is one `POST /echo` on a new HTTP stream.
    Rr,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "duplex" => Ok(Self::Duplex),
            "rr" => Ok(Self::Rr),
            _ => Err(format!("unknown mode '{s}' (known: duplex rr)")),
        }
    }
}

/// HTTP/2 settings, the same on both sides unless a test says otherwise.
///
/// The windows default to hyper's 1 MiB rather than RFC 9113's 65,535 bytes: with 64 KiB windows
/// a message over 64 KiB stalls for a WINDOW_UPDATE round trip in the middle of its body, which
/// is a property of the setting, not of HTTP/2, and would dominate every large-message figure.
/// The cost is memory: up to `stream_window` buffered per stream a slow reader leaves unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertises. Default 100 (nginx 128, h2o 100).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE. Default 1 MiB.
    pub stream_window: u32,
    /// Connection-level window. Default 1 MiB.
    pub connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE. Default 16 KiB (the protocol's minimum).
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE. Default 16 KiB.
    pub max_header_list_size: u32,
}

impl H2Settings {
    /// Checks the values against RFC 9113's ranges (the h2 library asserts on them, so they are
    /// checked here first and reported as a configuration error).
    pub fn validate(&self) -> Result<(), String> {
        const MAX_WINDOW: u32 = (1 << 31) - 1;
        if !(16_384..=16_777_215).contains(&self.max_frame_size) {
            return Err(format!(
                "HTTP/2 max frame size {} is outside 16384..=16777215 (RFC 9113 §6.5.2)",
                self.max_frame_size
            ));
        }
        for (name, v) in [
            ("stream window", self.stream_window),
            ("connection window", self.connection_window),
        ] {
            if v > MAX_WINDOW || v == 0 {
                return Err(format!(
                    "HTTP/2 {name} {v} is outside 1..=2^31-1 (RFC 9113 §6.9.1)"
                ));
            }
        }
        if self.max_concurrent_streams == 0 {
            return Err("HTTP/2 max concurrent streams must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            connection_window: 1 << 20,
            max_frame_size: 16 << 10,
            max_header_list_size: 16 << 10,
        }
    }
}

/// QUIC transport settings (quic, h3), the same on both sides unless a test says otherwise.
///
/// quinn's own defaults leave the connection-wide receive window unlimited; here every window is
/// finite, so a peer can make us buffer at most `connection_window` bytes per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicSettings {
    /// Bidirectional streams the peer may have open at once (initial_max_streams_bidi). Default
    /// 100, as for HTTP/2. A client that wants more waits for the server to grant them.
    pub max_concurrent_streams: u32,
    /// Receive window per stream, in bytes. Default 1 MiB (as for HTTP/2, and for the same
    /// reason).
    pub stream_window: u32,
    /// Receive window for the whole connection, in bytes. Default 8 MiB.
    pub connection_window: u32,
    /// Bytes the sender keeps in flight and buffered per connection. Default 8 MiB.
    pub send_window: u32,
    /// The sender's congestion controller (quinn's). Default cubic, as Linux's TCP.
    pub congestion: QuicCongestion,
}

/// A QUIC congestion controller: quinn's three. The TCP side's is the kernel's, set per
/// namespace (`--cc`); this is its counterpart for the QUIC transports (quic, h3, wt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuicCongestion {
    /// CUBIC (RFC 9438), quinn's default.
    #[default]
    Cubic,
    /// NewReno (RFC 9002's reference controller).
    NewReno,
    /// BBR (quinn's is experimental: BBRv1-like).
    Bbr,
}

impl QuicCongestion {
    /// Every controller, in `--help` order.
    pub const ALL: [QuicCongestion; 3] = [Self::Cubic, Self::NewReno, Self::Bbr];

    /// `cubic`, `newreno`, `bbr`: the names `--quic-cc` takes and results record.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cubic => "cubic",
            Self::NewReno => "newreno",
            Self::Bbr => "bbr",
        }
    }
}

impl std::fmt::Display for QuicCongestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for QuicCongestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown QUIC congestion control '{s}' (known: cubic, newreno, bbr)")
            })
    }
}

impl QuicSettings {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_streams == 0 {
            return Err("QUIC max concurrent streams must be at least 1".into());
        }
        if self.stream_window == 0 || self.connection_window == 0 || self.send_window == 0 {
            return Err("QUIC windows must be at least 1 byte".into());
        }
        if self.connection_window < self.stream_window {
            return Err(format!(
                "QUIC connection window {} is smaller than the stream window {}",
                self.connection_window, self.stream_window
            ));
        }
        Ok(())
    }
}

impl Default for QuicSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            connection_window: 8 << 20,
            send_window: 8 << 20,
            congestion: QuicCongestion::Cubic,
        }
    }
}

/// Finite limits, enforced by servers and clients alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest service message, in bytes. Default 16 MiB (Autobahn's 9.x cases send 16 MiB).
    pub max_message: usize,
    /// Largest single WebSocket frame, in bytes. Default 16 MiB.
    pub max_frame: usize,
    /// Largest HTTP/1.1 request head or WebSocket handshake, in bytes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Most messages one server-stream request may ask for. Default 1,000,000.
    pub max_stream_count: u32,
    /// WebSocket read size, in bytes: at most this much is read from the transport at once.
    /// Default 8 KiB. A server holds no buffer of this size while a connection is idle (its reads
    /// go through the stack, and what the WebSocket layer has not taken yet is kept only until
    /// it does; tungstenite itself keeps 1 KiB); a client gives tungstenite a buffer of this
    /// size, allocated up front (tungstenite's own default is 128 KiB).
    pub read_buffer: usize,
    /// Outbound bytes a WebSocket session queues for its peer before it stops producing answers
    /// and stops reading from that peer (backpressure); also the size tungstenite batches writes
    /// up to. Default 64 KiB (uWebSockets' `maxBackpressure`). A message larger than this is
    /// queued alone. With the transport's buffers this bounds what a peer that does not read
    /// can make the server hold.
    pub write_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 16 << 20,
            max_frame: 16 << 20,
            max_header_bytes: 16 << 10,
            max_stream_count: 1_000_000,
            read_buffer: 8 << 10,
            write_queue: 64 << 10,
        }
    }
}

/// Timeouts. Every wait on a peer is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect. Default 10 s.
    pub connect: Duration,
    /// TLS + protocol handshake, and the HTTP/1.1 header read (slowloris guard). Default 10 s.
    pub handshake: Duration,
    /// A connection that receives nothing for this long is closed. Default 60 s.
    pub idle: Duration,
    /// WebSocket ping interval; `None` disables keepalive pings. Default 20 s.
    pub ping_interval: Option<Duration>,
    /// How long a shutting-down server waits for in-flight work and close replies. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            ping_interval: Some(Duration::from_secs(20)),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Everything a server needs to listen.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (port 0 lets the OS choose).
    pub listen: SocketAddr,
    /// TLS, or `None` for cleartext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Finite limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// WebSocket transports only: echo every data message verbatim, text included, without
    /// decoding it as a service message. For conformance suites (Autobahn); off by default, when
    /// a text message is closed with 1003.
    pub raw_echo: bool,
    /// HTTP/2 settings (h2, h2ws).
    pub h2: H2Settings,
    /// QUIC settings (quic, h3).
    pub quic: QuicSettings,
    /// quic and h3: write one qlog file per connection into this directory.
    pub qlog_dir: Option<PathBuf>,
    /// The broadcast hub subscribe/publish messages use (one per server; clones share it).
    pub fanout: crate::fanout::Hub,
    /// The resumable streams resume messages use (one per server, with its epoch; clones
    /// share it).
    pub resume: crate::resume::Registry,
}

impl ServerConfig {
    /// A cleartext server on `listen` with default limits and timeouts.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tls: None,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            raw_echo: false,
            h2: H2Settings::default(),
            quic: QuicSettings::default(),
            qlog_dir: None,
            fanout: crate::fanout::Hub::new(),
            resume: crate::resume::Registry::default(),
        }
    }
}

/// Everything a client needs to open a session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server.
    pub addr: SocketAddr,
    /// Name for SNI, certificate checks and the HTTP `Host`.
    pub server_name: String,
    /// TLS, or `None` for cleartext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Number of logical streams (K) in the session.
    pub streams: u32,
    /// How the K streams map onto connections.
    pub sharing: Sharing,
    /// h1 only: connections in the keep-alive pool in [`Sharing::Pool`]. Default 6, what
    /// browsers open per host.
    pub pool_size: usize,
    /// h2 and h3: request/response or full duplex.
    pub mode: Mode,
    /// HTTP/2 settings (h2, h2ws).
    pub h2: H2Settings,
    /// QUIC settings (quic, h3).
    pub quic: QuicSettings,
    /// quic and h3: send the first requests as 0-RTT early data when the TLS config holds a
    /// session ticket from an earlier connection to this server (it must be the same
    /// `Arc<rustls::ClientConfig>`); otherwise, and by default, a full 1-RTT handshake.
    pub zero_rtt: bool,
    /// quic and h3: write one qlog file per connection into this directory.
    pub qlog_dir: Option<PathBuf>,
    /// Finite limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Count the session's socket traffic here (see [`crate::wire`]); `None` counts nothing.
    pub wire: Option<Arc<crate::wire::WireCounters>>,
}

impl ClientConfig {
    /// h1's default keep-alive pool size: 6, what browsers open per origin.
    pub const DEFAULT_POOL_SIZE: usize = 6;

    /// A cleartext client of `addr` with one logical stream and default limits.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            server_name: "localhost".into(),
            tls: None,
            streams: 1,
            sharing: Sharing::Shared,
            pool_size: Self::DEFAULT_POOL_SIZE,
            mode: Mode::Duplex,
            h2: H2Settings::default(),
            quic: QuicSettings::default(),
            zero_rtt: false,
            qlog_dir: None,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            wire: None,
        }
    }
}
