//! The control endpoint of a remote server, and the `remote` placement that uses it.
//!
//! `wirelab serve --control ADDR` answers plain HTTP/1.1 on ADDR:
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/info` | [`Info`]: versions and environment, the transports and ports served, the certificate's SHA-256 fingerprint, the kernel's boot id |
//! | `GET /v1/cpu` | [`Cpu`]: the server process's CPU time so far (for the cost figures) |
//! | `POST /v1/shutdown` | stops the server gracefully; only from a trusted address (loopback, or `--control-allow`); 403 otherwise |
//!
//! Nothing else changes state, so from an untrusted address the endpoint can only be read.
//! `wirelab run --server HOST[:PORT]` reads [`Info`], trusts the served certificate by its
//! fingerprint (shown to the user, who can check it against the one the server printed) or by
//! `--ca`, and reads [`Cpu`] around every measured phase.
//!
//! One-way figures need one clock: the placement records whether client and server share a
//! kernel (same boot id, so the same `CLOCK_MONOTONIC`); otherwise only round-trip figures
//! are valid, and the report says so.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wirelab_core::tls::Trust;
use wirelab_core::CancellationToken;

use crate::env::Env;
use crate::transports::Variant;

/// The control endpoint's default port.
pub const DEFAULT_PORT: u16 = 7799;

/// Schema id of [`Info`].
pub const SCHEMA: &str = "wirelab.control/1";

/// How long the client waits for the control endpoint (connect, then the whole answer).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One transport a remote server serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// Transport id.
    pub transport: String,
    /// Over TLS.
    pub tls: bool,
    /// The port it listens on (on the host the client reached the control endpoint at).
    pub port: u16,
    /// Its URL as the server printed it.
    pub url: String,
}

/// What `GET /v1/info` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    /// [`SCHEMA`].
    pub schema: String,
    /// The server's versions and environment.
    pub env: Env,
    /// `/proc/sys/kernel/random/boot_id` of the server's kernel: equal on both sides means one
    /// kernel, so one monotonic clock.
    pub boot_id: String,
    /// Every transport served.
    pub served: Vec<Served>,
    /// SHA-256 fingerprint of the served certificate (`AB:CD:...`), if any transport uses TLS.
    pub cert_sha256: Option<String>,
    /// Addresses (CIDR) allowed to stop the server.
    pub trusted: Vec<String>,
}

/// What `GET /v1/cpu` answers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Cpu {
    /// CPU time of the whole server process so far (every thread, user and system), ns.
    pub process_cpu_ns: u64,
}

/// The CPU time this process has used, ns (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// This kernel's boot id (empty where it cannot be read).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// An address range in CIDR form (`198.18.0.0/15`, `::1/128`); a bare address is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        // Both families sit at the top of 128 bits, so a prefix masks from the top.
        let mask = u128::MAX << (128 - u32::from(self.prefix));
        bits(ip) & mask == bits(self.addr) & mask
    }
}

/// Loopback, always trusted to stop the server.
pub fn loopback() -> Vec<Cidr> {
    vec![
        Cidr {
            addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        Cidr {
            addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

/// What the endpoint serves.
#[derive(Debug)]
struct State {
    info: String,
    trusted: Vec<Cidr>,
    stop: CancellationToken,
}

/// Starts the control endpoint on `listen`. `stop` is cancelled by a trusted
/// `POST /v1/shutdown`; the endpoint itself stops when `done` is cancelled.
pub async fn serve(
    listen: SocketAddr,
    mut info: Info,
    trusted: Vec<Cidr>,
    stop: CancellationToken,
    done: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for control on {listen}"))?;
    let addr = listener.local_addr()?;
    info.trusted = trusted.iter().map(Cidr::to_string).collect();
    let state = Arc::new(State {
        info: serde_json::to_string_pretty(&info)?,
        trusted,
        stop,
    });
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("control accept: {e}");
                        continue;
                    }
                },
                () = done.cancelled() => break,
            };
            let state = state.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&state, peer.ip(), &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(CLIENT_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    () = done.cancelled() => {}
                }
            });
        }
    });
    Ok((addr, task))
}

fn answer<B>(state: &State, peer: IpAddr, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", ctype)
            .header("connection", "close")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    let json = "application/json";
    let text = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/info") => reply(StatusCode::OK, json, state.info.clone()),
        (&Method::GET, "/v1/cpu") => {
            let cpu = Cpu {
                process_cpu_ns: process_cpu_ns(),
            };
            reply(
                StatusCode::OK,
                json,
                serde_json::to_string(&cpu).unwrap_or_default(),
            )
        }
        (&Method::POST, "/v1/shutdown") => {
            if state.trusted.iter().any(|c| c.contains(peer)) {
                state.stop.cancel();
                reply(StatusCode::OK, text, "shutting down\n".into())
            } else {
                reply(
                    StatusCode::FORBIDDEN,
                    text,
                    format!("{peer} may not stop this server (serve --control-allow CIDR)\n"),
                )
            }
        }
        (_, "/v1/info" | "/v1/cpu" | "/v1/shutdown") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "method not allowed\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: GET /v1/info, GET /v1/cpu, POST /v1/shutdown\n".into(),
        ),
    }
}

/// One blocking HTTP/1.1 request to a control endpoint; returns the status and the body.
/// Bounded by [`CLIENT_TIMEOUT`].
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
        .with_context(|| format!("cannot reach the control endpoint at {addr}"))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading {path} from {addr}"))?;
    let text = String::from_utf8(raw).context("control answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}{path}: not an HTTP answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("{addr}{path}: no status code"))?;
    Ok((code, body.to_string()))
}

fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T> {
    let (code, body) = request(addr, "GET", path)?;
    if code != 200 {
        bail!("{addr}{path}: HTTP {code}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{addr}{path}: unexpected answer"))
}

/// A remote server reached through its control endpoint.
#[derive(Debug)]
pub struct Remote {
    /// The control endpoint.
    pub control: SocketAddr,
    /// What it said of itself.
    pub info: Info,
    /// How its certificate is trusted.
    pub trust: Trust,
    /// Whether client and server share a kernel, so one monotonic clock (same boot id).
    pub clock_shared: bool,
    /// The TLS server name clients send (the host as given), checked only with `--ca`.
    pub server_name: String,
}

impl Remote {
    /// Reaches `server` (`HOST` or `HOST:PORT`, port [`DEFAULT_PORT`] by default) and reads
    /// its info. The certificate is trusted by `ca` if given, else by the fingerprint the
    /// endpoint gave.
    pub fn connect(server: &str, ca: Option<&std::path::Path>) -> Result<Self> {
        let with_port = if server.parse::<SocketAddr>().is_ok()
            || server.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.ends_with(':') && p.parse::<u16>().is_ok()
            }) {
            server.to_string()
        } else {
            format!("{server}:{DEFAULT_PORT}")
        };
        let control = with_port
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        let info: Info = get_json(control, "/v1/info")?;
        if info.schema != SCHEMA {
            bail!(
                "{control} speaks {}, this wirelab speaks {SCHEMA}: use the same version on both sides",
                info.schema
            );
        }
        let trust = match (ca, &info.cert_sha256) {
            (Some(p), _) => Trust::PemFile(p.to_path_buf()),
            (None, Some(fp)) => Trust::Fingerprint(wirelab_core::tls::parse_fingerprint(fp)?),
            (None, None) => Trust::InsecureAnyCertificate,
        };
        let mine = boot_id();
        let clock_shared = !mine.is_empty() && mine == info.boot_id;
        let host = match with_port.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => with_port.as_str(),
        };
        Ok(Self {
            control,
            info,
            trust,
            clock_shared,
            server_name: host.to_string(),
        })
    }

    /// Where `v` is served, if it is (the transport at that security).
    pub fn addr_of(&self, v: &Variant) -> Option<SocketAddr> {
        self.info
            .served
            .iter()
            .find(|s| s.transport == v.id.as_str() && s.tls == v.tls)
            .map(|s| SocketAddr::new(self.control.ip(), s.port))
    }

    /// What the server said of itself and how its certificate is trusted, for the user.
    pub fn describe(&self) -> String {
        let e = &self.info.env;
        let mut out = format!(
            "remote server {}: wirelab {} ({}), {} × {}, kernel {}\n",
            self.control, e.wirelab, e.profile, e.cores, e.cpu_model, e.kernel
        );
        match (&self.trust, &self.info.cert_sha256) {
            (Trust::PemFile(p), _) => out.push_str(&format!(
                "  certificate: trusted through {} for the name {}\n",
                p.display(),
                self.server_name
            )),
            (_, Some(fp)) => out.push_str(&format!(
                "  certificate sha256 {fp}\n  trusted by this fingerprint from the control endpoint: check it against the one the server printed\n"
            )),
            (_, None) => {}
        }
        out.push_str(if self.clock_shared {
            "  clock: shared (the same kernel: one-way figures are valid)\n"
        } else {
            "  clock: separate (round-trip figures only)\n"
        });
        out
    }

    /// Connects in a blocking task (it makes blocking requests).
    pub async fn connect_async(server: String, ca: Option<std::path::PathBuf>) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::connect(&server, ca.as_deref()))
            .await
            .context("control endpoint task")?
    }

    /// The server process's CPU time so far, ns.
    pub fn cpu_ns(&self) -> Result<u64> {
        Ok(get_json::<Cpu>(self.control, "/v1/cpu")?.process_cpu_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let c: Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(c.contains("198.19.255.1".parse().unwrap()));
        assert!(!c.contains("198.20.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:198.18.0.2".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one: Cidr = "10.0.0.1".parse().unwrap();
        assert!(one.contains("10.0.0.1".parse().unwrap()));
        assert!(!one.contains("10.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert!(loopback()[0].contains("127.0.0.1".parse().unwrap()));
    }

    fn state() -> State {
        State {
            info: "{}".into(),
            trusted: loopback(),
            stop: CancellationToken::new(),
        }
    }

    fn req(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_a_trusted_address_can_stop_the_server() {
        let st = state();
        let outsider: IpAddr = "198.18.0.1".parse().unwrap();
        let r = answer(&st, outsider, &req(Method::POST, "/v1/shutdown"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(!st.stop.is_cancelled());
        // Reading is open to anyone.
        assert_eq!(
            answer(&st, outsider, &req(Method::GET, "/v1/info")).status(),
            StatusCode::OK
        );
        assert_eq!(
            answer(&st, outsider, &req(Method::GET, "/v1/cpu")).status(),
            StatusCode::OK
        );
        // Nothing else is accepted.
        assert_eq!(
            answer(&st, outsider, &req(Method::PUT, "/v1/info")).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            answer(&st, outsider, &req(Method::GET, "/v1/shutdown")).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            answer(&st, outsider, &req(Method::GET, "/")).status(),
            StatusCode::NOT_FOUND
        );
        assert!(!st.stop.is_cancelled());
        let r = answer(
            &st,
            "127.0.0.1".parse().unwrap(),
            &req(Method::POST, "/v1/shutdown"),
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert!(st.stop.is_cancelled());
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let (before, wall) = (process_cpu_ns(), std::time::Instant::now());
        let mut x = 0u64;
        while process_cpu_ns() < before + 5_000_000 && wall.elapsed() < Duration::from_secs(10) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(process_cpu_ns() >= before + 5_000_000);
    }
}
