//! Measures an emulated link from the outside, with kernel UDP and TCP sockets in the two
//! namespaces: round-trip time, loss rate and burst lengths, and TCP goodput under a rate
//! limit. `wirelab link check` prints these; the CI accuracy tests assert them.
//!
//! The tallies ([`LossTally`], the tolerances) are pure and unit-tested; the probes run on
//! [`Sides`]: the two namespaces of a running [`Link`], or the lab's client container with
//! the server side's part done by `wirelab link peer` ([`peer`]) in the server container and
//! the link by the router ([`LabSides`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::link::{Link, LinkControl, LinkStats, CLIENT_ADDR, MTU, SERVER_ADDR};
use crate::Error;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(what, e)
}

/// Finishes a server-side service and returns what it measured.
pub type Finish<T> = Box<dyn FnOnce() -> Result<T, Error> + Send>;

/// Where a check's two ends run, and the link between them.
pub trait Sides {
    /// The link's controls.
    fn control(&self) -> &dyn LinkControl;
    /// The address client-side sockets bind to.
    fn client_ip(&self) -> IpAddr;
    /// Runs `f` on a new thread on the client side.
    fn spawn_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, Error>>, Error>;
    /// Starts a UDP echo on the server side; finishing stops it.
    fn udp_echo(&self) -> Result<(SocketAddr, Finish<()>), Error>;
    /// Starts a UDP receiver for `packets` sequence-numbered datagrams; finishing (after the
    /// sender is done) returns which arrived.
    fn udp_sink(&self, packets: u32) -> Result<(SocketAddr, Finish<Vec<bool>>), Error>;
    /// Starts a TCP receiver that counts the payload received between `warmup` and
    /// `warmup + measure` after the connection; finishing returns that goodput, bit/s.
    fn tcp_sink(
        &self,
        warmup: Duration,
        measure: Duration,
    ) -> Result<(SocketAddr, Finish<f64>), Error>;
}

/// Runs `f` on a new thread inside the client (`server == false`) or server namespace.
fn spawn_in<T: Send + 'static>(
    link: &Link,
    server: bool,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T, Error>>, Error> {
    // Enter on this thread, spawn (the child inherits the namespace), then come back.
    if server {
        link.enter_server()
    } else {
        link.enter_client()
    }
    .map_err(io("entering a link namespace"))?;
    let h = std::thread::Builder::new()
        .name(if server { "wl-check-s" } else { "wl-check-c" }.into())
        .spawn(f);
    link.leave().map_err(io("leaving a link namespace"))?;
    h.map_err(io("starting a probe thread"))
}

fn join<T>(h: std::thread::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    h.join()
        .map_err(|_| Error::Setup("a probe thread panicked".into()))?
}

/// Starts `serve` on a server-side thread of `link` with a socket it binds there; returns
/// the address `bind` reports and the thread.
fn serve_in<S, T>(
    link: &Link,
    bind: impl FnOnce() -> Result<S, Error> + Send + 'static,
    addr: impl FnOnce(&S) -> Result<SocketAddr, Error> + Send + 'static,
    serve: impl FnOnce(S) -> Result<T, Error> + Send + 'static,
) -> Result<(SocketAddr, std::thread::JoinHandle<Result<T, Error>>), Error>
where
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(link, true, move || {
        let s = bind()?;
        let _ = tx.send(addr(&s)?);
        serve(s)
    })?;
    let a = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| Error::Setup("a server-side probe did not start".into()))?;
    Ok((a, h))
}

impl Sides for Link {
    fn control(&self) -> &dyn LinkControl {
        self
    }

    fn client_ip(&self) -> IpAddr {
        CLIENT_ADDR.into()
    }

    fn spawn_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, Error>>, Error> {
        spawn_in(self, false, f)
    }

    fn udp_echo(&self) -> Result<(SocketAddr, Finish<()>), Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let (a, h) = serve_in(
            self,
            || UdpSocket::bind((SERVER_ADDR, 0)).map_err(io("binding the echo")),
            |s| s.local_addr().map_err(io("echo address")),
            move |s| udp_echo_loop(&s, &st),
        )?;
        Ok((
            a,
            Box::new(move || {
                stop.store(true, Ordering::Relaxed);
                join(h)
            }),
        ))
    }

    fn udp_sink(&self, packets: u32) -> Result<(SocketAddr, Finish<Vec<bool>>), Error> {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let (a, h) = serve_in(
            self,
            || UdpSocket::bind((SERVER_ADDR, 0)).map_err(io("binding the receiver")),
            |s| s.local_addr().map_err(io("receiver address")),
            move |s| udp_sink_loop(&s, packets, &d),
        )?;
        Ok((
            a,
            Box::new(move || {
                done.store(true, Ordering::Relaxed);
                join(h)
            }),
        ))
    }

    fn tcp_sink(
        &self,
        warmup: Duration,
        measure: Duration,
    ) -> Result<(SocketAddr, Finish<f64>), Error> {
        let (a, h) = serve_in(
            self,
            || TcpListener::bind((SERVER_ADDR, 0)).map_err(io("binding the TCP receiver")),
            |l| l.local_addr().map_err(io("receiver address")),
            move |l| tcp_sink_loop(&l, warmup, measure),
        )?;
        Ok((a, Box::new(move || join(h))))
    }
}

/// Echoes datagrams until `stop`.
fn udp_echo_loop(s: &UdpSocket, stop: &AtomicBool) -> Result<(), Error> {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(io("echo timeout"))?;
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
    Ok(())
}

/// Records which of `packets` sequence-numbered datagrams arrive; returns once `done` is set
/// and nothing has come for 500 ms.
fn udp_sink_loop(s: &UdpSocket, packets: u32, done: &AtomicBool) -> Result<Vec<bool>, Error> {
    nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::RcvBuf, &(8 << 20))
        .map_err(|e| Error::io("receive buffer", e.into()))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(io("receiver timeout"))?;
    let mut arrived = vec![false; packets as usize];
    let mut buf = vec![0u8; 2048];
    loop {
        match s.recv(&mut buf) {
            Ok(n) if n >= 4 => {
                let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if let Some(a) = arrived.get_mut(i) {
                    *a = true;
                }
            }
            Ok(_) => {}
            // Nothing for 500 ms after the sender finished: everything in flight is in.
            Err(_) if done.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    Ok(arrived)
}

/// Accepts one connection and counts what arrives between `warmup` and `warmup + measure`.
fn tcp_sink_loop(l: &TcpListener, warmup: Duration, measure: Duration) -> Result<f64, Error> {
    let (mut s, _) = l.accept().map_err(io("accepting"))?;
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let mut counted = 0u64;
    loop {
        let n = s.read(&mut buf).map_err(io("receiving"))?;
        if n == 0 {
            break;
        }
        let t = start.elapsed();
        if t >= warmup && t < warmup + measure {
            counted += n as u64;
        }
    }
    Ok(counted as f64 * 8.0 / measure.as_secs_f64())
}

/// Round-trip times of UDP pings through the link.
#[derive(Debug, Clone)]
pub struct RttReport {
    /// Each answered ping's round trip, ms, in order.
    pub samples_ms: Vec<f64>,
    /// Pings that got no answer within a second.
    pub unanswered: u32,
}

impl RttReport {
    /// Mean round trip, ms.
    pub fn mean_ms(&self) -> f64 {
        self.samples_ms.iter().sum::<f64>() / self.samples_ms.len().max(1) as f64
    }

    /// The `q` quantile (0..=1) of the round trips, ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut v = self.samples_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

/// Sends `count` UDP pings, `interval` apart, from the client side to an echo on the server
/// side.
pub fn rtt<S: Sides>(sides: &S, count: u32, interval: Duration) -> Result<RttReport, Error> {
    let (addr, echo) = sides.udp_echo()?;
    let ip = sides.client_ip();
    let pinger = sides.spawn_client(move || {
        let s = UdpSocket::bind((ip, 0)).map_err(io("binding the pinger"))?;
        s.connect(addr).map_err(io("connecting the pinger"))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(io("pinger timeout"))?;
        let mut out = RttReport {
            samples_ms: Vec::new(),
            unanswered: 0,
        };
        let start = Instant::now();
        let mut buf = [0u8; 64];
        for i in 0..count {
            let due = start + interval * i;
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let t0 = Instant::now();
            s.send(&i.to_be_bytes()).map_err(io("sending a ping"))?;
            loop {
                match s.recv(&mut buf) {
                    Ok(4) if buf[..4] == i.to_be_bytes() => {
                        out.samples_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                    Ok(_) => continue, // a late answer to an earlier ping
                    Err(_) => {
                        out.unanswered += 1;
                        break;
                    }
                }
            }
        }
        Ok(out)
    })?;
    let r = join(pinger);
    echo()?;
    r
}

/// Loss seen by a receiver: which sequence numbers arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTally {
    /// Packets sent.
    pub sent: u64,
    /// Packets that did not arrive.
    pub lost: u64,
    /// Runs of consecutive lost packets.
    pub bursts: u64,
}

impl LossTally {
    /// Tallies arrivals (`arrived[i]`: packet `i` arrived).
    pub fn of(arrived: &[bool]) -> Self {
        let mut t = LossTally {
            sent: arrived.len() as u64,
            lost: 0,
            bursts: 0,
        };
        let mut prev_lost = false;
        for &a in arrived {
            if !a {
                t.lost += 1;
                if !prev_lost {
                    t.bursts += 1;
                }
            }
            prev_lost = !a;
        }
        t
    }

    /// Fraction lost.
    pub fn rate(&self) -> f64 {
        self.lost as f64 / self.sent.max(1) as f64
    }

    /// Mean burst length, packets.
    pub fn mean_burst(&self) -> f64 {
        self.lost as f64 / self.bursts.max(1) as f64
    }
}

/// Three standard errors of a loss rate `p` measured over `n` packets whose loss indicators
/// have lag-1 autocorrelation `rho` (0 for Bernoulli; `1 - p - r` for a Gilbert-Elliott chain
/// with a lossless good and an all-loss bad state): `3 sqrt(p(1-p)/n · (1+rho)/(1-rho))`.
pub fn loss_tolerance(p: f64, n: u64, rho: f64) -> f64 {
    3.0 * (p * (1.0 - p) / n.max(1) as f64 * (1.0 + rho) / (1.0 - rho)).sqrt()
}

/// Three standard errors of a mean burst length when bursts are geometric with exit
/// probability `r` (mean `1/r`, standard deviation `sqrt(1-r)/r`) and `bursts` were seen.
pub fn burst_tolerance(r: f64, bursts: u64) -> f64 {
    3.0 * (1.0 - r).sqrt() / r / (bursts.max(1) as f64).sqrt()
}

/// What a UDP loss probe saw.
#[derive(Debug, Clone)]
pub struct LossReport {
    /// From the receiver's sequence numbers.
    pub tally: LossTally,
    /// The link's counters for the probe.
    pub stats: LinkStats,
}

/// Sends `packets` UDP datagrams of `size` bytes at `pps` from the client side and records
/// which arrive on the server side. The link's counters are reset first
/// (`configure` with its current settings is the caller's job).
pub fn udp_loss<S: Sides>(
    sides: &S,
    packets: u32,
    pps: u32,
    size: usize,
) -> Result<LossReport, Error> {
    let size = size.clamp(8, usize::from(MTU) - 28);
    let (addr, sink) = sides.udp_sink(packets)?;
    let ip = sides.client_ip();
    let sender = sides.spawn_client(move || {
        let s = UdpSocket::bind((ip, 0)).map_err(io("binding the sender"))?;
        s.connect(addr).map_err(io("connecting the sender"))?;
        let mut buf = vec![0u8; size];
        let start = Instant::now();
        let gap = Duration::from_secs_f64(1.0 / f64::from(pps.max(1)));
        for i in 0..packets {
            let due = start + gap * i;
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                if w > Duration::from_micros(200) {
                    std::thread::sleep(w);
                }
            }
            buf[..4].copy_from_slice(&i.to_be_bytes());
            s.send(&buf).map_err(io("sending a datagram"))?;
        }
        Ok(())
    })?;
    let sent = join(sender);
    let arrived = sink()?;
    sent?;
    Ok(LossReport {
        tally: LossTally::of(&arrived),
        stats: sides.control().stats()?,
    })
}

/// What a TCP goodput probe saw.
#[derive(Debug, Clone)]
pub struct GoodputReport {
    /// Payload bits per second at the receiver after the warm-up.
    pub goodput_bps: f64,
    /// The TCP maximum segment size.
    pub mss: u32,
    /// The link's counters for the probe.
    pub stats: LinkStats,
}

/// One TCP stream from the client to the server side for `warmup + measure`; goodput is
/// what the receiver got during `measure`.
pub fn tcp_goodput<S: Sides>(
    sides: &S,
    warmup: Duration,
    measure: Duration,
) -> Result<GoodputReport, Error> {
    let (addr, sink) = sides.tcp_sink(warmup, measure)?;
    let sender = sides.spawn_client(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(io("connecting through the link"))?;
        let buf = vec![0x5a; 1 << 16];
        let start = Instant::now();
        let end = warmup + measure + Duration::from_millis(200);
        while start.elapsed() < end {
            s.write_all(&buf).map_err(io("sending"))?;
        }
        let mss = nix::sys::socket::getsockopt(&s.as_fd(), nix::sys::socket::sockopt::TcpMaxSeg)
            .map_err(|e| Error::io("TCP_MAXSEG", e.into()))?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(io("closing the stream"))?;
        Ok(mss)
    })?;
    let mss = join(sender)?;
    let goodput_bps = sink()?;
    Ok(GoodputReport {
        goodput_bps,
        mss,
        stats: sides.control().stats()?,
    })
}

/// The lab: the client side is this process (in the client container), the server side's
/// probes are run by `wirelab link peer` in the server container, and the link is the
/// router's.
#[derive(Debug)]
pub struct LabSides {
    /// The router.
    pub router: crate::router::RouterClient,
    /// The peer's control address (`wirelab link peer --listen`).
    pub peer: SocketAddr,
}

/// A request to the peer (one JSON line on a TCP connection that stays open while the
/// service runs).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PeerRequest {
    UdpEcho,
    UdpSink { packets: u32 },
    TcpSink { warmup_ms: u64, measure_ms: u64 },
}

/// The peer's answers: first the port of the service, then (once the client says `done`,
/// or the TCP stream ends) the result.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PeerReply {
    Port(u16),
    Lost(Vec<u32>),
    Goodput(f64),
    Done,
    Error(String),
}

fn read_reply(r: &mut BufReader<TcpStream>) -> Result<PeerReply, Error> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(io("reading from the peer"))?;
    match serde_json::from_str(&line) {
        Ok(PeerReply::Error(e)) => Err(Error::Setup(format!("the peer says: {e}"))),
        Ok(r) => Ok(r),
        Err(e) => Err(Error::Setup(format!(
            "bad answer from the peer ({e}): {line:?}"
        ))),
    }
}

impl LabSides {
    /// Opens a request to the peer; returns the service's address and the connection.
    fn open(&self, req: &PeerRequest) -> Result<(SocketAddr, BufReader<TcpStream>), Error> {
        let mut c = TcpStream::connect_timeout(&self.peer, Duration::from_secs(5))
            .map_err(io("connecting to the peer"))?;
        let mut line = serde_json::to_vec(req).map_err(|e| Error::Setup(e.to_string()))?;
        line.push(b'\n');
        c.write_all(&line).map_err(io("asking the peer"))?;
        let mut r = BufReader::new(c);
        match read_reply(&mut r)? {
            PeerReply::Port(p) => Ok((SocketAddr::new(self.peer.ip(), p), r)),
            other => Err(Error::Setup(format!(
                "unexpected answer from the peer: {other:?}"
            ))),
        }
    }
}

fn say_done(r: &mut BufReader<TcpStream>) -> Result<(), Error> {
    r.get_mut()
        .write_all(b"\"done\"\n")
        .map_err(io("telling the peer"))
}

impl Sides for LabSides {
    fn control(&self) -> &dyn LinkControl {
        &self.router
    }

    fn client_ip(&self) -> IpAddr {
        Ipv4Addr::UNSPECIFIED.into()
    }

    fn spawn_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, Error>>, Error> {
        std::thread::Builder::new()
            .name("wl-check-c".into())
            .spawn(f)
            .map_err(io("starting a probe thread"))
    }

    fn udp_echo(&self) -> Result<(SocketAddr, Finish<()>), Error> {
        let (a, mut r) = self.open(&PeerRequest::UdpEcho)?;
        Ok((
            a,
            Box::new(move || {
                say_done(&mut r)?;
                read_reply(&mut r).map(|_| ())
            }),
        ))
    }

    fn udp_sink(&self, packets: u32) -> Result<(SocketAddr, Finish<Vec<bool>>), Error> {
        let (a, mut r) = self.open(&PeerRequest::UdpSink { packets })?;
        Ok((
            a,
            Box::new(move || {
                say_done(&mut r)?;
                match read_reply(&mut r)? {
                    PeerReply::Lost(lost) => {
                        let mut arrived = vec![true; packets as usize];
                        for i in lost {
                            if let Some(x) = arrived.get_mut(i as usize) {
                                *x = false;
                            }
                        }
                        Ok(arrived)
                    }
                    other => Err(Error::Setup(format!(
                        "unexpected answer from the peer: {other:?}"
                    ))),
                }
            }),
        ))
    }

    fn tcp_sink(
        &self,
        warmup: Duration,
        measure: Duration,
    ) -> Result<(SocketAddr, Finish<f64>), Error> {
        let (a, mut r) = self.open(&PeerRequest::TcpSink {
            warmup_ms: warmup.as_millis() as u64,
            measure_ms: measure.as_millis() as u64,
        })?;
        Ok((
            a,
            Box::new(move || match read_reply(&mut r)? {
                PeerReply::Goodput(g) => Ok(g),
                other => Err(Error::Setup(format!(
                    "unexpected answer from the peer: {other:?}"
                ))),
            }),
        ))
    }
}

/// `wirelab link peer`: serves the server side of [`LabSides`]' probes on `listener`, one
/// request per connection, each on its own thread, until the process ends.
pub fn peer(listener: TcpListener) -> Result<(), Error> {
    let ip = listener.local_addr().map_err(io("peer address"))?.ip();
    for conn in listener.incoming() {
        let conn = conn.map_err(io("accepting a peer request"))?;
        std::thread::spawn(move || {
            let mut w = match conn.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let reply = |w: &mut TcpStream, r: &PeerReply| {
                let mut line = serde_json::to_vec(r).unwrap_or_default();
                line.push(b'\n');
                w.write_all(&line)
            };
            if let Err(e) = serve_peer_request(conn, &mut w, ip, &reply) {
                let _ = reply(&mut w, &PeerReply::Error(e.to_string()));
            }
        });
    }
    Ok(())
}

fn serve_peer_request(
    conn: TcpStream,
    w: &mut TcpStream,
    ip: IpAddr,
    reply: &dyn Fn(&mut TcpStream, &PeerReply) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(io("reading a peer request"))?;
    let req: PeerRequest =
        serde_json::from_str(&line).map_err(|e| Error::Config(format!("bad peer request: {e}")))?;
    let port = |a: SocketAddr| PeerReply::Port(a.port());
    // The client's "done" (or its connection closing) ends a service.
    let wait_done = move |mut r: BufReader<TcpStream>, flag: Arc<AtomicBool>| {
        std::thread::spawn(move || {
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            flag.store(true, Ordering::Relaxed);
        })
    };
    match req {
        PeerRequest::UdpEcho => {
            let s = UdpSocket::bind((ip, 0)).map_err(io("binding the echo"))?;
            reply(w, &port(s.local_addr().map_err(io("echo address"))?))
                .map_err(io("answering"))?;
            let stop = Arc::new(AtomicBool::new(false));
            let t = wait_done(r, stop.clone());
            udp_echo_loop(&s, &stop)?;
            let _ = t.join();
            reply(w, &PeerReply::Done).map_err(io("answering"))
        }
        PeerRequest::UdpSink { packets } => {
            let s = UdpSocket::bind((ip, 0)).map_err(io("binding the receiver"))?;
            reply(w, &port(s.local_addr().map_err(io("receiver address"))?))
                .map_err(io("answering"))?;
            let done = Arc::new(AtomicBool::new(false));
            let t = wait_done(r, done.clone());
            let arrived = udp_sink_loop(&s, packets, &done)?;
            let _ = t.join();
            let lost = (0..packets).filter(|&i| !arrived[i as usize]).collect();
            reply(w, &PeerReply::Lost(lost)).map_err(io("answering"))
        }
        PeerRequest::TcpSink {
            warmup_ms,
            measure_ms,
        } => {
            let l = TcpListener::bind((ip, 0)).map_err(io("binding the TCP receiver"))?;
            reply(w, &port(l.local_addr().map_err(io("receiver address"))?))
                .map_err(io("answering"))?;
            let g = tcp_sink_loop(
                &l,
                Duration::from_millis(warmup_ms),
                Duration::from_millis(measure_ms.max(1)),
            )?;
            reply(w, &PeerReply::Goodput(g)).map_err(io("answering"))
        }
    }
}

/// The best TCP goodput a link of `rate_bps` allows: full packets of one MTU carry one MSS.
pub fn ideal_goodput(rate_bps: u64, mss: u32) -> f64 {
    rate_bps as f64 * f64::from(mss) / f64::from(MTU)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_losses_and_bursts() {
        let a = [true, false, false, true, false, true, true, false];
        let t = LossTally::of(&a);
        assert_eq!(
            t,
            LossTally {
                sent: 8,
                lost: 4,
                bursts: 3
            }
        );
        assert_eq!(t.rate(), 0.5);
        assert!((t.mean_burst() - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(LossTally::of(&[]).rate(), 0.0);
    }

    #[test]
    fn tolerances_follow_the_sampling_error() {
        // 1% over 20k packets: sd = sqrt(0.01*0.99/20000) = 0.0704%.
        let t = loss_tolerance(0.01, 20_000, 0.0);
        assert!((t - 3.0 * 0.000_703_5).abs() < 1e-6, "{t}");
        // Correlated losses widen it.
        assert!(loss_tolerance(0.02, 20_000, 0.745) > 2.0 * loss_tolerance(0.02, 20_000, 0.0));
        // Geometric bursts, r = 0.25: sd 3.46, over 100 bursts SE 0.346.
        assert!((burst_tolerance(0.25, 100) - 3.0 * 0.346_41).abs() < 1e-4);
        assert!((ideal_goodput(200_000_000, 1448) - 193_066_666.7).abs() < 1.0);
    }
}
