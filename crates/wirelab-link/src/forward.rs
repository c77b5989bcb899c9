//! The forwarder: one thread that holds both sides of the link, reads every packet either
//! side sends, asks the direction's model ([`Direction`]) for its fate and writes it to the
//! other side when it is due.
//!
//! A side is a [`Port`]: a TUN device ([`TunPort`], the namespace link of [`crate::link`]) or
//! an AF_PACKET socket on an Ethernet interface ([`crate::router::PacketPort`], the lab's
//! router). Both front ends run this same loop on the same models, so a seed gives the same
//! losses whichever carries the packets.
//!
//! It waits in `ppoll(2)` with a nanosecond timeout (the next release), under a 1 ns timer
//! slack and, where allowed, `SCHED_FIFO`, and ends long sleeps 300 µs before a release to
//! finish with a short one (timer wake-ups of an idle VM CPU are that late); lateness (actual write minus scheduled release) is
//! recorded for every packet, so a run can say whether the emulator kept up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::Duration;

use hdrhistogram::Histogram;
use nix::poll::{PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};
use tun_rs::SyncDevice;

use crate::path::{Counters, Direction, DirectionConfig, Fate};

/// Largest packet read from a TUN device: the MTU (1500) with room to spare. A read that
/// fills the buffer means a packet over the MTU (offloads on), which is counted.
pub(crate) const BUF: usize = 2048;
/// Longest wait in `ppoll`, so commands are picked up promptly.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// Packets read from one side before looking at the other and at due releases.
const BATCH: usize = 64;
/// How long before a release a long sleep ends: a timer wake-up of an idle virtual CPU lands
/// 100-300 µs late, a short sleep on a running one is close to on time.
const SPIN: Duration = Duration::from_micros(300);
/// Loss events kept per direction for timelines.
const MAX_EVENTS: usize = 200_000;

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock messages are stamped with.
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// What one direction did since it was last configured.
#[derive(Debug, Clone)]
pub struct DirectionStats {
    /// The model's counters (offered, lost, queue drops, delivered).
    pub counters: Counters,
    /// Packets written to the far side.
    pub written: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Packets that filled the read buffer (over the MTU: offloads on).
    pub oversize: u64,
    /// Release lateness (write time minus scheduled time), ns.
    pub lateness: Histogram<u64>,
    /// When each loss-model drop happened (`CLOCK_MONOTONIC` ns), up to 200,000.
    pub loss_events: Vec<u64>,
}

impl DirectionStats {
    /// Empty counters and histogram.
    pub(crate) fn new() -> Self {
        Self {
            counters: Counters::default(),
            written: 0,
            write_errors: 0,
            oversize: 0,
            lateness: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("valid histogram bounds"),
            loss_events: Vec::new(),
        }
    }
}

/// Both directions: `up` is client to server, `down` server to client.
#[derive(Debug, Clone)]
pub struct ForwarderStats {
    /// Client to server.
    pub up: DirectionStats,
    /// Server to client.
    pub down: DirectionStats,
    /// What the client side's port counted itself (zero for a TUN device).
    pub client_port: PortCounters,
    /// What the server side's port counted itself.
    pub server_port: PortCounters,
}

/// What a front end's port counts besides the models: frames it did not forward and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Frames read that were not for forwarding (the router's own traffic, broadcasts,
    /// frames to its own addresses, not IPv4).
    pub skipped: u64,
    /// Packets dropped because their TTL ran out.
    pub ttl_expired: u64,
    /// Packets held until the next hop's MAC was known.
    pub held_for_neighbour: u64,
    /// Packets dropped because the next hop's MAC was not learnt in time.
    pub no_neighbour: u64,
    /// Packets the kernel dropped before the port read them (the socket's queue overflowed),
    /// as far as the port can see.
    pub kernel_drops: u64,
}

/// What [`Port::recv`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An IP packet, now in the buffer; `oversize` when it was over the MTU (offloads on).
    Packet {
        /// Over the MTU.
        oversize: bool,
    },
    /// Something not to forward (counted by the port); read on.
    Skipped,
}

/// One side of the forwarder: where packets come in and go out.
pub trait Port: AsFd {
    /// Reads the next packet into `buf` (replacing its contents: the IP packet only), or
    /// `Ok(None)` when nothing is waiting.
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Received>>;
    /// Sends an IP packet out of this side.
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
    /// Does deferred work (packets waiting for a neighbour); returns whether some is left,
    /// so the loop comes back soon.
    fn service(&mut self) -> bool {
        false
    }
    /// The port's own counters.
    fn counters(&self) -> PortCounters {
        PortCounters::default()
    }
}

/// A TUN device as a [`Port`]: packets are IP packets already.
pub struct TunPort(pub SyncDevice);

impl std::fmt::Debug for TunPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunPort")
    }
}

impl AsFd for TunPort {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Port for TunPort {
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Received>> {
        buf.resize(BUF, 0);
        loop {
            match self.0.recv(buf) {
                Ok(n) => {
                    buf.truncate(n);
                    // A read that fills the buffer is a packet over the MTU.
                    return Ok(Some(Received::Packet { oversize: n >= BUF }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.send(packet).map(|_| ())
    }
}

/// Commands to the forwarder thread.
pub(crate) enum Command {
    /// Replace both directions' models (counters and packet indices restart at 0); packets
    /// already scheduled are still released on time.
    Configure(
        Box<(DirectionConfig, DirectionConfig)>,
        mpsc::Sender<Result<(), String>>,
    ),
    /// Send a copy of the statistics.
    Stats(mpsc::Sender<ForwarderStats>),
    /// Stop.
    Stop,
}

struct Side {
    dir: Direction,
    stats: DirectionStats,
    index: u64,
}

impl Side {
    fn new(cfg: DirectionConfig) -> Result<Self, String> {
        Ok(Self {
            dir: Direction::new(cfg)?,
            stats: DirectionStats::new(),
            index: 0,
        })
    }
}

/// A packet waiting for release: (due, sequence for FIFO among equal times, bytes).
type Held = Reverse<(u64, u64, Vec<u8>)>;

/// The forwarding loop between two non-blocking ports. Returns when told to stop or when a
/// port fails.
pub(crate) fn run<C: Port, S: Port>(
    client: &mut C,
    server: &mut S,
    cfg: (DirectionConfig, DirectionConfig),
    commands: mpsc::Receiver<Command>,
) -> io::Result<()> {
    let mut up = Side::new(cfg.0).map_err(io::Error::other)?;
    let mut down = Side::new(cfg.1).map_err(io::Error::other)?;
    // Held packets, due to the server (up) and to the client (down).
    let mut to_server: BinaryHeap<Held> = BinaryHeap::new();
    let mut to_client: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut spinning = false;
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Configure(c, reply)) => {
                    let r = Side::new(c.0).and_then(|u| Ok((u, Side::new(c.1)?)));
                    let _ = reply.send(r.map(|(u, d)| {
                        up = u;
                        down = d;
                    }));
                }
                Ok(Command::Stats(reply)) => {
                    let mut s = ForwarderStats {
                        up: up.stats.clone(),
                        down: down.stats.clone(),
                        client_port: client.counters(),
                        server_port: server.counters(),
                    };
                    s.up.counters = up.dir.counters();
                    s.down.counters = down.dir.counters();
                    let _ = reply.send(s);
                }
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        let now = now_ns();
        let next = [&to_server, &to_client]
            .iter()
            .filter_map(|h| h.peek().map(|Reverse((due, _, _))| *due))
            .min();
        // A port with deferred work is looked at again within 1 ms.
        let deferred = client.service() | server.service();
        let wait = match next {
            Some(due) if due <= now => Duration::ZERO,
            // A long sleep ends SPIN early and the rest is polled without sleeping; between
            // releases closer together than that, short sleeps. Never a continuous busy
            // loop: real-time throttling would answer it with 50 ms stalls.
            Some(due) if due - now > 2 * SPIN.as_nanos() as u64 => {
                spinning = true;
                Duration::from_nanos(due - now)
                    .saturating_sub(SPIN)
                    .min(MAX_WAIT)
            }
            Some(_) if spinning => Duration::ZERO,
            Some(due) => Duration::from_nanos(due - now),
            None => MAX_WAIT,
        };
        let wait = if deferred {
            wait.min(Duration::from_millis(1))
        } else {
            wait
        };
        let (c_ready, s_ready) = {
            let mut fds = [
                PollFd::new(client.as_fd(), PollFlags::POLLIN),
                PollFd::new(server.as_fd(), PollFlags::POLLIN),
            ];
            match nix::poll::ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| {
                f.revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
            };
            (ready(&fds[0]), ready(&fds[1]))
        };
        if c_ready {
            read_side(client, &mut up, &mut to_server, &mut seq, &mut pool)?;
        }
        if s_ready {
            read_side(server, &mut down, &mut to_client, &mut seq, &mut pool)?;
        }
        let released = release(server, &mut to_server, &mut up.stats, &mut pool)
            | release(client, &mut to_client, &mut down.stats, &mut pool);
        if released {
            spinning = false;
        }
    }
}

fn read_side<P: Port>(
    port: &mut P,
    side: &mut Side,
    held: &mut BinaryHeap<Held>,
    seq: &mut u64,
    pool: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    for _ in 0..BATCH {
        let mut buf = pool.pop().unwrap_or_else(|| Vec::with_capacity(BUF));
        let oversize = match port.recv(&mut buf)? {
            None => {
                pool.push(buf);
                return Ok(());
            }
            Some(Received::Skipped) => {
                pool.push(buf);
                continue;
            }
            Some(Received::Packet { oversize }) => oversize,
        };
        let now = now_ns();
        if oversize {
            side.stats.oversize += 1;
        }
        let n = buf.len();
        let index = side.index;
        side.index += 1;
        match side.dir.offer(index, now, n as u64) {
            Fate::Deliver(at) => {
                *seq += 1;
                held.push(Reverse((at, *seq, buf)));
            }
            Fate::Lost => {
                if side.stats.loss_events.len() < MAX_EVENTS {
                    side.stats.loss_events.push(now);
                }
                pool.push(buf);
            }
            Fate::QueueFull => pool.push(buf),
        }
    }
    Ok(())
}

fn release<P: Port>(
    dev: &mut P,
    held: &mut BinaryHeap<Held>,
    stats: &mut DirectionStats,
    pool: &mut Vec<Vec<u8>>,
) -> bool {
    let now = now_ns();
    let mut any = false;
    while held.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
        let Reverse((due, _, buf)) = held.pop().expect("peeked");
        match dev.send(&buf) {
            Ok(()) => stats.written += 1,
            Err(_) => stats.write_errors += 1,
        }
        let late = now_ns().saturating_sub(due).max(1);
        let _ = stats.lateness.record(late);
        pool.push(buf);
        any = true;
    }
    any
}
