//! Measures an emulated link from the outside, with kernel UDP and TCP sockets in the two
//! namespaces: round-trip time, loss rate and burst lengths, and TCP goodput under a rate
//! limit. `wirelab link check` prints these; the CI accuracy tests assert them.
//!
//! The tallies ([`LossTally`], the tolerances) are pure and unit-tested; the probes need a
//! running [`Link`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{Link, LinkStats, CLIENT_ADDR, MTU, SERVER_ADDR};
use crate::Error;

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(what, e)
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

/// Sends `count` UDP pings, `interval` apart, from the client namespace to an echo in the
/// server namespace.
pub fn rtt(link: &Link, count: u32, interval: Duration) -> Result<RttReport, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let echo = {
        let stop = stop.clone();
        spawn_in(link, true, move || {
            let s = UdpSocket::bind((SERVER_ADDR, 0)).map_err(io("binding the echo"))?;
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(io("echo timeout"))?;
            let _ = tx.send(s.local_addr().map_err(io("echo address"))?);
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
            Ok(())
        })?
    };
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| Error::Setup("the UDP echo did not start".into()))?;
    let pinger = spawn_in(link, false, move || {
        let s = UdpSocket::bind((CLIENT_ADDR, 0)).map_err(io("binding the pinger"))?;
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
    stop.store(true, Ordering::Relaxed);
    join(echo)?;
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

/// Sends `packets` UDP datagrams of `size` bytes at `pps` from the client namespace and
/// records which arrive in the server namespace. The link's counters are reset first
/// (`link.configure` with its current settings is the caller's job).
pub fn udp_loss(link: &Link, packets: u32, pps: u32, size: usize) -> Result<LossReport, Error> {
    let size = size.clamp(8, usize::from(MTU) - 28);
    let (tx, rx) = std::sync::mpsc::channel();
    let sender_done = Arc::new(AtomicBool::new(false));
    let done = sender_done.clone();
    let receiver = spawn_in(link, true, move || {
        let s = UdpSocket::bind((SERVER_ADDR, 0)).map_err(io("binding the receiver"))?;
        nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::RcvBuf, &(8 << 20))
            .map_err(|e| Error::io("receive buffer", e.into()))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(io("receiver timeout"))?;
        let _ = tx.send(s.local_addr().map_err(io("receiver address"))?);
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
    })?;
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| Error::Setup("the UDP receiver did not start".into()))?;
    let sender = spawn_in(link, false, move || {
        let s = UdpSocket::bind((CLIENT_ADDR, 0)).map_err(io("binding the sender"))?;
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
    sender_done.store(true, Ordering::Relaxed);
    let arrived = join(receiver)?;
    sent?;
    Ok(LossReport {
        tally: LossTally::of(&arrived),
        stats: link.stats()?,
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

/// One TCP stream from the client to the server namespace for `warmup + measure`; goodput is
/// what the receiver got during `measure`.
pub fn tcp_goodput(
    link: &Link,
    warmup: Duration,
    measure: Duration,
) -> Result<GoodputReport, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = spawn_in(link, true, move || {
        let l = TcpListener::bind((SERVER_ADDR, 0)).map_err(io("binding the TCP receiver"))?;
        let _ = tx.send(l.local_addr().map_err(io("receiver address"))?);
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
    })?;
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| Error::Setup("the TCP receiver did not start".into()))?;
    let sender = spawn_in(link, false, move || {
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
    let goodput_bps = join(receiver)?;
    Ok(GoodputReport {
        goodput_bps,
        mss,
        stats: link.stats()?,
    })
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
