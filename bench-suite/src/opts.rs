//! Command-line options shared by the subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wirelab_core::{H2Settings, Limits, Mode, QuicSettings, Sharing, Timeouts};

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit in '{s}' (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("'{s}' must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `64`, `16K`/`16KiB`, `1M`/`1MiB` (binary multiples).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower.strip_suffix("kib").or(lower.strip_suffix('k')) {
        (n.to_string(), 1 << 10)
    } else if let Some(n) = lower.strip_suffix("mib").or(lower.strip_suffix('m')) {
        (n.to_string(), 1 << 20)
    } else if let Some(n) = lower.strip_suffix('b') {
        (n.to_string(), 1)
    } else {
        (lower.clone(), 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("'{t}' is not a size (try 64, 16K, 1M)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{t}' is too large"))
}

/// Limits and timeouts (both sides).
#[derive(Debug, Clone, Args)]
pub(crate) struct LimitOpts {
    /// Largest message accepted, e.g. 16M.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub max_message: usize,
    /// Largest WebSocket frame accepted, e.g. 16M.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub max_frame: usize,
    /// Time allowed for TLS and protocol handshakes, and for an HTTP/1.1 request head.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection that receives nothing for this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// WebSocket ping interval.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// Disable WebSocket keepalive pings.
    #[arg(long)]
    pub no_ping: bool,
}

impl LimitOpts {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_message: self.max_message,
            max_frame: self.max_frame,
            ..Limits::default()
        }
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: self.handshake_timeout,
            idle: self.idle_timeout,
            ping_interval: (!self.no_ping).then_some(self.ping_interval),
            ..Timeouts::default()
        }
    }
}

/// HTTP/2 settings (h2, h2ws), on both sides.
#[derive(Debug, Clone, Args)]
pub(crate) struct H2Opts {
    /// HTTP/2 per-stream flow-control window (SETTINGS_INITIAL_WINDOW_SIZE), e.g. 64K, 1M.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub h2_window: usize,
    /// HTTP/2 connection-level flow-control window.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub h2_conn_window: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (the server's limit).
    #[arg(long, default_value_t = 100)]
    pub h2_max_streams: u32,
    /// HTTP/2 SETTINGS_MAX_FRAME_SIZE, 16K to 16M-1.
    #[arg(long, default_value = "16K", value_parser = parse_size)]
    pub h2_max_frame: usize,
}

impl H2Opts {
    /// The settings, checked against RFC 9113's ranges.
    pub(crate) fn settings(&self) -> Result<H2Settings, String> {
        let u =
            |v: usize, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} is too large"));
        let s = H2Settings {
            stream_window: u(self.h2_window, "--h2-window")?,
            connection_window: u(self.h2_conn_window, "--h2-conn-window")?,
            max_concurrent_streams: self.h2_max_streams,
            max_frame_size: u(self.h2_max_frame, "--h2-max-frame")?,
            ..H2Settings::default()
        };
        s.validate()?;
        Ok(s)
    }
}

/// QUIC settings (quic, h3), on both sides, and qlog.
#[derive(Debug, Clone, Args)]
pub(crate) struct QuicOpts {
    /// QUIC bidirectional streams the peer may have open at once.
    #[arg(long, default_value_t = 100)]
    pub quic_max_streams: u32,
    /// QUIC receive window per stream, e.g. 1M.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub quic_window: usize,
    /// QUIC receive window for the whole connection, e.g. 8M.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub quic_conn_window: usize,
    /// Write one qlog file per QUIC connection (JSON-SEQ, `.sqlog`) into this directory.
    #[arg(long, value_name = "DIR")]
    pub qlog_dir: Option<PathBuf>,
}

impl QuicOpts {
    /// The settings, checked.
    pub(crate) fn settings(&self) -> Result<QuicSettings, String> {
        let u =
            |v: usize, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} is too large"));
        let s = QuicSettings {
            max_concurrent_streams: self.quic_max_streams,
            stream_window: u(self.quic_window, "--quic-window")?,
            connection_window: u(self.quic_conn_window, "--quic-conn-window")?,
            ..QuicSettings::default()
        };
        s.validate()?;
        Ok(s)
    }
}

/// TLS options of the server.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerTlsOpts {
    /// Serve ws and h1 over TLS too (wss://, https://); h2 and h2ws use TLS unless --h2c;
    /// quic and h3 always use TLS 1.3; tcp stays cleartext.
    #[arg(long)]
    pub tls: bool,
    /// Certificate chain (PEM). Without it a self-signed certificate is made at start-up.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where to write the self-signed certificate, for clients' --ca.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
}

/// TLS options of the client.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientTlsOpts {
    /// Connect with TLS (wss://, https://).
    #[arg(long)]
    pub tls: bool,
    /// Trust the certificate(s) in this PEM file (e.g. the one `serve --tls` wrote).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Trust any server certificate (lab use only; signatures are still checked).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Server name for SNI and certificate checks.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

/// The shape of a client session.
#[derive(Debug, Clone, Args)]
pub(crate) struct SessionOpts {
    /// Logical streams (K) in the session.
    #[arg(long, short = 'k', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub streams: u32,
    /// How streams map onto connections: shared (one connection) or pool.
    #[arg(long, default_value = "shared", value_parser = parse_sharing)]
    pub sharing: Sharing,
    /// h1 only: connections in the keep-alive pool with --sharing pool.
    #[arg(long, default_value_t = 6)]
    pub pool_size: usize,
    /// h2 and h3: duplex (one long-lived request per stream, bodies streaming both ways) or rr
    /// (one `POST /echo` per message).
    #[arg(long, default_value = "duplex", value_parser = parse_mode)]
    pub mode: Mode,
    /// quic and h3: resume with 0-RTT. The client first opens (and closes) a priming session to
    /// get a session ticket, then sends the measured session's first requests as early data.
    #[arg(long = "0rtt")]
    pub zero_rtt: bool,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_sharing(s: &str) -> Result<Sharing, String> {
    s.parse()
}

/// Where to listen.
pub(crate) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}

/// Parses a transport id, listing every transport (with its summary) in `--help`.
pub(crate) fn transport_parser(
) -> impl clap::builder::TypedValueParser<Value = wirelab_core::TransportId> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        wirelab::transports::LIST
            .iter()
            .map(|d| PossibleValue::new(d.id.as_str()).help(d.summary)),
    )
    .try_map(|s| wirelab::transports::parse(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("32B"), Ok(32));
        assert!(parse_size("big").is_err());
    }
}

/// Where the client and server threads run (`run`, `hol`).
#[derive(Debug, Clone, Args)]
pub(crate) struct CpuOpts {
    /// Where client and server threads run: `split` (client threads on one CPU, server threads
    /// on another), `same` (all on one CPU) or `free` (the scheduler decides, so figures move
    /// with it). Default: split where two CPUs are allowed, else same. Recorded in every result.
    #[arg(long, value_enum)]
    pub(crate) cpu: Option<wirelab::topology::Cpus>,
}
