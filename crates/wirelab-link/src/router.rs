//! The lab's router: the link emulator's second front end, between two Ethernet interfaces
//! instead of two TUN devices (DESIGN §4b, docs: the lab chapter).
//!
//! ```text
//!  client net [eth 198.18.0.2] ⇄ AF_PACKET ⇄ loss → queue → delay ⇄ AF_PACKET ⇄ [eth 198.19.0.2] server net
//! ```
//!
//! The kernel's own forwarding is off (`net.ipv4.ip_forward=0`); each interface (found by the
//! subnet its address is in) gets an AF_PACKET socket bound to it for IPv4 only, so ARP stays
//! with the kernel. A frame addressed to the router's MAC but not to its own IP is a packet
//! to forward: its TTL is decremented (with a fresh header checksum), the Ethernet header is
//! stripped, and the IP packet goes through the same [`crate::forward`] loop and models as the
//! TUN link: same packet indices, same seeds, same lateness, drop and oversize accounting. On
//! release it gets a new Ethernet header for the next hop, whose MAC is learnt from the frames
//! it sent, else from the kernel's neighbour table; on a miss the router makes its kernel
//! resolve it and holds the packet (up to [`NEIGHBOUR_WAIT`]) rather than dropping it.
//!
//! Sockets come from `nix` (safe wrappers: `socket(AF_PACKET)`, `bind` to the interface's
//! link-layer address as `getifaddrs` gives it, `recvmsg` with `SO_RXQ_OVFL` for the kernel's
//! drop count); the workspace has no `unsafe`. Checksum offload: frames are forwarded as
//! read, so the endpoints must send full checksums (`ethtool -K eth0 tx off`, which also turns
//! segmentation offload off); a partial checksum or an oversize (GSO) frame is counted.
//!
//! A small control endpoint (TCP, one JSON line each way) lets the harness in the client
//! container do what it does with an in-process link: configure (counters and packet indices
//! restart) and read the statistics ([`RouterClient`], a [`LinkControl`]).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nix::sys::socket::{self as sock, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag};
use serde::{Deserialize, Serialize};

use crate::forward::{self, Command, DirectionStats, ForwarderStats, Port, PortCounters, Received};
use crate::frame::{self, Mac, Subnet, ETH_HEADER, MAX_FRAME};
use crate::link::{LinkConfig, LinkControl, LinkStats};
use crate::path::{Counters, DirectionConfig};
use crate::Error;

/// How long a packet waits for its next hop's MAC before it is dropped.
pub const NEIGHBOUR_WAIT: Duration = Duration::from_secs(1);
/// Packets held per side while neighbours are resolved.
const MAX_HELD: usize = 4096;
/// The default control port.
pub const CONTROL_PORT: u16 = 7798;
/// Largest frame read: a 64 KiB GSO super-frame fits, so it can be seen and counted.
const RECV_BUF: usize = 65536 + ETH_HEADER;
/// `PACKET_OUTGOING`: a frame this host sent (packet sockets see those too).
const PACKET_OUTGOING: u8 = 4;

/// One interface of the router.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Its name (`eth0`).
    pub name: String,
    /// The router's address on it.
    pub addr: Ipv4Addr,
    /// Its MAC.
    pub mac: Mac,
    /// The subnet asked for.
    pub subnet: Subnet,
    link: LinkAddr,
}

/// Finds the interface whose IPv4 address is in `subnet`.
pub fn find_interface(subnet: Subnet) -> Result<Interface, Error> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|e| Error::io("listing interfaces (getifaddrs)", e.into()))?
        .collect();
    let (name, addr) = addrs
        .iter()
        .find_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            subnet.contains(ip).then(|| (a.interface_name.clone(), ip))
        })
        .ok_or_else(|| {
            Error::Setup(format!(
                "no interface has an address in {subnet} (this host has: {})",
                addrs
                    .iter()
                    .filter_map(|a| Some(format!(
                        "{} {}",
                        a.interface_name,
                        a.address.as_ref()?.as_sockaddr_in()?.ip()
                    )))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let link = addrs
        .iter()
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address.as_ref()?.as_link_addr().copied())
        .ok_or_else(|| Error::Setup(format!("{name} has no link-layer address")))?;
    let mac = link
        .addr()
        .ok_or_else(|| Error::Setup(format!("{name} has no MAC")))?;
    Ok(Interface {
        name,
        addr,
        mac,
        subnet,
        link,
    })
}

/// An AF_PACKET socket on one interface, as a [`Port`] of the forwarder.
#[derive(Debug)]
pub struct PacketPort {
    fd: OwnedFd,
    iface: Interface,
    rbuf: Vec<u8>,
    cmsg: Vec<u8>,
    wbuf: Vec<u8>,
    /// Next hops learnt: address -> MAC.
    neighbours: HashMap<Ipv4Addr, Mac>,
    /// Packets waiting for their next hop's MAC: (given up at, packet).
    held: Vec<(Instant, Vec<u8>)>,
    last_arp_read: Option<Instant>,
    /// Asks the kernel to resolve a neighbour (a datagram to its discard port).
    nudge: Option<UdpSocket>,
    counters: PortCounters,
}

fn privilege(what: &str, e: nix::errno::Errno) -> Error {
    match e {
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => Error::Privilege(format!(
            "{what} was refused ({e}): the router needs CAP_NET_RAW (packet sockets) and \
             CAP_NET_ADMIN; in compose: `cap_add: [NET_ADMIN, NET_RAW]`"
        )),
        e => Error::io(what, e.into()),
    }
}

impl PacketPort {
    /// Opens a packet socket bound to `iface` for IPv4 frames.
    pub fn open(iface: Interface) -> Result<Self, Error> {
        let fd = sock::socket(
            AddressFamily::Packet,
            sock::SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            sock::SockProtocol::EthIp,
        )
        .map_err(|e| privilege("opening an AF_PACKET socket", e))?;
        // The address getifaddrs gives has protocol 0, which keeps the socket's (IPv4).
        sock::bind(fd.as_raw_fd(), &iface.link)
            .map_err(|e| privilege(&format!("binding the packet socket to {}", iface.name), e))?;
        // Room for bursts while the forwarder writes; force past rmem_max where allowed.
        let big = 8 << 20;
        if sock::setsockopt(&fd, sockopt::RcvBufForce, &big).is_err() {
            let _ = sock::setsockopt(&fd, sockopt::RcvBuf, &big);
        }
        if sock::setsockopt(&fd, sockopt::SndBufForce, &big).is_err() {
            let _ = sock::setsockopt(&fd, sockopt::SndBuf, &big);
        }
        sock::setsockopt(&fd, sockopt::RxqOvfl, &1)
            .map_err(|e| Error::io("SO_RXQ_OVFL", e.into()))?;
        let nudge = UdpSocket::bind((iface.addr, 0)).ok();
        Ok(Self {
            fd,
            iface,
            rbuf: vec![0; RECV_BUF],
            cmsg: nix::cmsg_space!(u32),
            wbuf: Vec::with_capacity(MAX_FRAME),
            neighbours: HashMap::new(),
            held: Vec::new(),
            last_arp_read: None,
            nudge,
            counters: PortCounters::default(),
        })
    }

    /// The interface.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    fn read_arp(&mut self) {
        if let Ok(t) = std::fs::read_to_string("/proc/net/arp") {
            for (ip, mac, dev) in frame::parse_arp_table(&t) {
                if dev == self.iface.name {
                    self.neighbours.insert(ip, mac);
                }
            }
        }
        self.last_arp_read = Some(Instant::now());
    }

    fn mac_of(&mut self, ip: Ipv4Addr) -> Option<Mac> {
        if let Some(m) = self.neighbours.get(&ip) {
            return Some(*m);
        }
        self.read_arp();
        self.neighbours.get(&ip).copied()
    }

    fn transmit(&mut self, mac: Mac, packet: &[u8]) -> io::Result<()> {
        frame::build(mac, self.iface.mac, packet, &mut self.wbuf);
        sock::send(self.fd.as_raw_fd(), &self.wbuf, MsgFlags::empty())
            .map(|_| ())
            .map_err(io::Error::from)
    }
}

impl AsFd for PacketPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Port for PacketPort {
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Received>> {
        let (n, pkttype, drops) = loop {
            let mut iov = [io::IoSliceMut::new(&mut self.rbuf)];
            match sock::recvmsg::<LinkAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut self.cmsg),
                MsgFlags::MSG_TRUNC,
            ) {
                Ok(m) => {
                    let drops = m.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|c| match c {
                            sock::ControlMessageOwned::RxqOvfl(d) => Some(d),
                            _ => None,
                        })
                    });
                    break (m.bytes, m.address.map(|a| a.pkttype()), drops);
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(d) = drops {
            self.counters.kernel_drops = self.counters.kernel_drops.max(u64::from(d));
        }
        if pkttype == Some(PACKET_OUTGOING) {
            self.counters.skipped += 1;
            return Ok(Some(Received::Skipped));
        }
        let len = n.min(self.rbuf.len());
        let f = match frame::parse(&self.rbuf[..len]) {
            Ok(f) => f,
            Err(_) => {
                self.counters.skipped += 1;
                return Ok(Some(Received::Skipped));
            }
        };
        // Learn the sender's MAC: the next hop for packets to it.
        if self.iface.subnet.contains(f.src) && f.src != self.iface.addr {
            self.neighbours.insert(f.src, f.src_mac);
        }
        if f.dst_mac != self.iface.mac || f.dst == self.iface.addr {
            // Broadcast, or for the router itself (its kernel answers).
            self.counters.skipped += 1;
            return Ok(Some(Received::Skipped));
        }
        buf.clear();
        buf.extend_from_slice(&self.rbuf[ETH_HEADER..ETH_HEADER + f.total_len]);
        if !frame::decrement_ttl(buf, f.header_len) {
            self.counters.ttl_expired += 1;
            return Ok(Some(Received::Skipped));
        }
        Ok(Some(Received::Packet {
            oversize: n > MAX_FRAME,
        }))
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        let dst = frame::ipv4_dst(packet)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IPv4 packet"))?;
        match self.mac_of(dst) {
            Some(mac) if self.held.is_empty() => self.transmit(mac, packet),
            mac => {
                // Unknown next hop (or older packets waiting: keep the order).
                if mac.is_none() {
                    if let Some(u) = &self.nudge {
                        let _ = u.send_to(&[], (dst, 9));
                    }
                }
                if self.held.len() >= MAX_HELD {
                    self.counters.no_neighbour += 1;
                } else {
                    self.counters.held_for_neighbour += 1;
                    self.held
                        .push((Instant::now() + NEIGHBOUR_WAIT, packet.to_vec()));
                }
                Ok(())
            }
        }
    }

    fn service(&mut self) -> bool {
        if self.held.is_empty() {
            return false;
        }
        if self
            .last_arp_read
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(1))
        {
            self.read_arp();
        }
        let now = Instant::now();
        let held = std::mem::take(&mut self.held);
        let mut blocked = false;
        for (until, p) in held {
            let mac = frame::ipv4_dst(&p).and_then(|d| self.neighbours.get(&d).copied());
            match mac {
                Some(m) if !blocked => {
                    let _ = self.transmit(m, &p);
                }
                _ if now >= until => self.counters.no_neighbour += 1,
                _ => {
                    blocked = true;
                    self.held.push((until, p));
                }
            }
        }
        !self.held.is_empty()
    }

    fn counters(&self) -> PortCounters {
        self.counters
    }
}

/// SIGTERM and SIGINT, blocked in this thread (and every thread it starts afterwards) so
/// that [`StopSignals::wait`] takes them: the router's way to stop cleanly and print its
/// counters when `docker compose` stops it.
#[derive(Debug)]
pub struct StopSignals(nix::sys::signal::SigSet);

impl StopSignals {
    /// Blocks the signals; call before starting any thread.
    pub fn block() -> Result<Self, Error> {
        use nix::sys::signal::{SigSet, Signal};
        let mut s = SigSet::empty();
        s.add(Signal::SIGTERM);
        s.add(Signal::SIGINT);
        s.thread_block()
            .map_err(|e| Error::io("blocking SIGTERM and SIGINT", e.into()))?;
        Ok(Self(s))
    }

    /// Waits for one; returns its name.
    pub fn wait(&self) -> Result<String, Error> {
        let sig = self
            .0
            .wait()
            .map_err(|e| Error::io("waiting for a signal", e.into()))?;
        Ok(sig.as_str().to_string())
    }
}

/// Settings of [`Router::start`].
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// The client side's subnet.
    pub client: Subnet,
    /// The server side's subnet.
    pub server: Subnet,
    /// Real-time priority (`SCHED_FIFO`, via `chrt`) for the forwarder thread, where the
    /// container may have it; `None` leaves it at normal priority.
    pub rt_priority: Option<u8>,
}

/// A running router: the forwarder thread between two packet ports.
#[derive(Debug)]
pub struct Router {
    commands: Mutex<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The client side's interface.
    pub client: Interface,
    /// The server side's interface.
    pub server: Interface,
    config: Mutex<LinkConfig>,
    realtime: String,
}

impl Router {
    /// Finds both interfaces, opens their sockets and starts forwarding with `cfg`.
    pub fn start(opts: &RouterOptions, cfg: LinkConfig) -> Result<Self, Error> {
        DirectionConfig::check(&cfg.up).map_err(|e| Error::Config(format!("up: {e}")))?;
        DirectionConfig::check(&cfg.down).map_err(|e| Error::Config(format!("down: {e}")))?;
        if let Ok(f) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
            if f.trim() != "0" {
                return Err(Error::Setup(
                    "net.ipv4.ip_forward is 1: the kernel would forward every packet as well \
                     as the router (duplicates); set it to 0 (compose: `sysctls: \
                     {net.ipv4.ip_forward: 0}`)"
                        .into(),
                ));
            }
        }
        let (ci, si) = (find_interface(opts.client)?, find_interface(opts.server)?);
        if ci.name == si.name {
            return Err(Error::Config(format!(
                "{} and {} are on the same interface {}",
                opts.client, opts.server, ci.name
            )));
        }
        let mut cport = PacketPort::open(ci.clone())?;
        let mut sport = PacketPort::open(si.clone())?;
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wl-router".into())
            .spawn(move || {
                let _ = nix::sys::prctl::set_timerslack(1);
                let _ = tid_tx.send(nix::unistd::gettid().as_raw());
                forward::run(&mut cport, &mut sport, (cfg.up, cfg.down), rx)
            })
            .map_err(|e| Error::io("starting the forwarder thread", e))?;
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| Error::Setup("the forwarder thread did not start".into()))?;
        let realtime = match opts.rt_priority {
            None => "normal priority (not asked for)".to_string(),
            Some(p) => match crate::link::set_fifo(tid, p) {
                Ok(()) => format!("SCHED_FIFO {p}"),
                Err(why) => format!("normal priority ({why})"),
            },
        };
        Ok(Self {
            commands: Mutex::new(tx),
            thread: Some(thread),
            client: ci,
            server: si,
            config: Mutex::new(cfg),
            realtime,
        })
    }

    fn dead(&self) -> Error {
        Error::Setup("the router's forwarder thread has stopped".into())
    }

    fn send(&self, c: Command) -> Result<(), Error> {
        self.commands
            .lock()
            .map_err(|_| self.dead())?
            .send(c)
            .map_err(|_| self.dead())
    }

    /// The settings in force.
    pub fn config(&self) -> LinkConfig {
        *self.config.lock().expect("config lock")
    }

    /// Replaces both directions' settings; counters, packet indices and lateness restart.
    pub fn configure(&self, cfg: LinkConfig) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Configure(Box::new((cfg.up, cfg.down)), tx))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| self.dead())?
            .map_err(Error::Config)?;
        *self.config.lock().expect("config lock") = cfg;
        Ok(())
    }

    /// The counters since the last configuration.
    pub fn stats(&self) -> Result<LinkStats, Error> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::Stats(tx))?;
        let forwarder: ForwarderStats = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| self.dead())?;
        let tun_drops = (
            forwarder.client_port.kernel_drops,
            forwarder.server_port.kernel_drops,
        );
        Ok(LinkStats {
            forwarder,
            tun_drops,
        })
    }

    /// Serves the control endpoint on `listener` until the process ends (one thread, one
    /// connection at a time; each request is one JSON line, answered by one).
    pub fn serve_control(self: &Arc<Self>, listener: TcpListener) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = me.control_conn(conn);
            }
        })
    }

    fn control_conn(&self, conn: TcpStream) -> io::Result<()> {
        let mut w = conn.try_clone()?;
        for line in BufReader::new(conn).lines() {
            let line = line?;
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Configure(cfg)) => match self.configure(cfg) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error(e.to_string()),
                },
                Ok(Request::Stats) => match self.stats() {
                    Ok(s) => Reply::Stats(Box::new(WireStats::from(&s))),
                    Err(e) => Reply::Error(e.to_string()),
                },
                Ok(Request::Info) => Reply::Info(Box::new(self.info())),
                Err(e) => Reply::Error(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_vec(&reply).map_err(io::Error::other)?;
            out.push(b'\n');
            w.write_all(&out)?;
        }
        Ok(())
    }

    /// What the router is and does.
    pub fn info(&self) -> RouterInfo {
        let side = |i: &Interface| RouterSide {
            interface: i.name.clone(),
            address: i.addr.to_string(),
            subnet: i.subnet.to_string(),
        };
        RouterInfo {
            client: side(&self.client),
            server: side(&self.server),
            config: self.config(),
            realtime: self.realtime.clone(),
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One side of the router, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSide {
    /// Interface name.
    pub interface: String,
    /// The router's address.
    pub address: String,
    /// The subnet.
    pub subnet: String,
}

/// The router's sides and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterInfo {
    /// Client side.
    pub client: RouterSide,
    /// Server side.
    pub server: RouterSide,
    /// Settings in force.
    pub config: LinkConfig,
    /// The forwarder's scheduling: `SCHED_FIFO <prio>`, or normal priority and why.
    #[serde(default)]
    pub realtime: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Configure(LinkConfig),
    Stats,
    Info,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok,
    Stats(Box<WireStats>),
    Info(Box<RouterInfo>),
    Error(String),
}

/// One direction's statistics as JSON: the histogram as (value, count) pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDirection {
    /// The model's counters.
    pub counters: Counters,
    /// Packets written.
    pub written: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Over the MTU.
    pub oversize: u64,
    /// Release lateness, ns: (value, count) of every recorded bucket.
    pub lateness: Vec<(u64, u64)>,
    /// Loss events, `CLOCK_MONOTONIC` ns.
    pub loss_events: Vec<u64>,
}

/// [`LinkStats`] as JSON (what the control endpoint answers and the router prints on exit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireStats {
    /// Client to server.
    pub up: WireDirection,
    /// Server to client.
    pub down: WireDirection,
    /// The client-side port's counters.
    pub client_port: PortCounters,
    /// The server-side port's counters.
    pub server_port: PortCounters,
}

impl From<&LinkStats> for WireStats {
    fn from(s: &LinkStats) -> Self {
        let d = |d: &DirectionStats| WireDirection {
            counters: d.counters,
            written: d.written,
            write_errors: d.write_errors,
            oversize: d.oversize,
            lateness: d
                .lateness
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            loss_events: d.loss_events.clone(),
        };
        Self {
            up: d(&s.forwarder.up),
            down: d(&s.forwarder.down),
            client_port: s.forwarder.client_port,
            server_port: s.forwarder.server_port,
        }
    }
}

impl WireStats {
    /// Back to [`LinkStats`] (lateness at the histogram's bucket resolution).
    pub fn to_stats(&self) -> LinkStats {
        let d = |w: &WireDirection| {
            let mut lateness =
                Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
            for &(v, n) in &w.lateness {
                let _ = lateness.record_n(v.clamp(1, 60_000_000_000), n);
            }
            let mut s = DirectionStats::new();
            s.counters = w.counters;
            s.written = w.written;
            s.write_errors = w.write_errors;
            s.oversize = w.oversize;
            s.lateness = lateness;
            s.loss_events = w.loss_events.clone();
            s
        };
        LinkStats {
            forwarder: ForwarderStats {
                up: d(&self.up),
                down: d(&self.down),
                client_port: self.client_port,
                server_port: self.server_port,
            },
            tun_drops: (self.client_port.kernel_drops, self.server_port.kernel_drops),
        }
    }

    /// A summary for people and scripts: counters, lateness percentiles, the verdict.
    pub fn summary(&self) -> serde_json::Value {
        let s = self.to_stats();
        let d = |w: &WireDirection, h: &DirectionStats| {
            serde_json::json!({
                "counters": w.counters,
                "written": w.written,
                "write_errors": w.write_errors,
                "oversize": w.oversize,
                "lateness_us": {
                    "p50": h.lateness.value_at_quantile(0.5) as f64 / 1e3,
                    "p99": h.lateness.value_at_quantile(0.99) as f64 / 1e3,
                    "max": h.lateness.max() as f64 / 1e3,
                },
            })
        };
        serde_json::json!({
            "up": d(&self.up, &s.forwarder.up),
            "down": d(&self.down, &s.forwarder.down),
            "client_port": self.client_port,
            "server_port": self.server_port,
            "invalid": s.invalid(),
        })
    }
}

/// The harness's handle on a router in another container: its control endpoint.
#[derive(Debug)]
pub struct RouterClient {
    addr: SocketAddr,
    conn: Mutex<Option<(BufReader<TcpStream>, TcpStream)>>,
    cc: String,
    server_cc: String,
}

impl RouterClient {
    /// Connects to the control endpoint at `addr` (HOST or HOST:PORT, port 7798 by default).
    pub fn connect(addr: &str) -> Result<Self, Error> {
        let with_port = if addr.contains(':') {
            addr.to_string()
        } else {
            format!("{addr}:{CONTROL_PORT}")
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
            .map_err(|e| Error::io(&format!("resolving the router {with_port}"), e))?
            .next()
            .ok_or_else(|| Error::Config(format!("{with_port} resolves to nothing")))?;
        let cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let c = Self {
            addr,
            conn: Mutex::new(None),
            cc,
            server_cc: "?".into(),
        };
        c.info()?;
        Ok(c)
    }

    fn call(&self, req: &Request) -> Result<Reply, Error> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| Error::Setup("router connection lock".into()))?;
        if guard.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| Error::io(&format!("connecting to the router at {}", self.addr), e))?;
            let _ = s.set_nodelay(true);
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| Error::io("router timeout", e))?;
            let r = s
                .try_clone()
                .map_err(|e| Error::io("router connection", e))?;
            *guard = Some((BufReader::new(r), s));
        }
        let (r, w) = guard.as_mut().expect("connected above");
        let mut line = serde_json::to_vec(req).map_err(|e| Error::Setup(e.to_string()))?;
        line.push(b'\n');
        let res = w.write_all(&line).and_then(|()| {
            let mut back = String::new();
            r.read_line(&mut back).map(|_| back)
        });
        let back = match res {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => {
                *guard = None;
                return Err(Error::Setup(
                    "the router closed its control connection".into(),
                ));
            }
            Err(e) => {
                *guard = None;
                return Err(Error::io("talking to the router", e));
            }
        };
        match serde_json::from_str(&back) {
            Ok(Reply::Error(e)) => Err(Error::Setup(format!("the router says: {e}"))),
            Ok(r) => Ok(r),
            Err(e) => Err(Error::Setup(format!("bad answer from the router: {e}"))),
        }
    }

    /// Records the server side's congestion control (as its control endpoint reports it).
    pub fn with_server_cc(mut self, cc: String) -> Self {
        self.server_cc = cc;
        self
    }

    /// The router's sides and settings.
    pub fn info(&self) -> Result<RouterInfo, Error> {
        match self.call(&Request::Info)? {
            Reply::Info(i) => Ok(*i),
            _ => Err(Error::Setup("unexpected answer from the router".into())),
        }
    }

    /// The router's statistics as sent.
    pub fn wire_stats(&self) -> Result<WireStats, Error> {
        match self.call(&Request::Stats)? {
            Reply::Stats(s) => Ok(*s),
            _ => Err(Error::Setup("unexpected answer from the router".into())),
        }
    }
}

impl LinkControl for RouterClient {
    fn configure(&self, cfg: LinkConfig) -> Result<(), Error> {
        match self.call(&Request::Configure(cfg))? {
            Reply::Ok => Ok(()),
            _ => Err(Error::Setup("unexpected answer from the router".into())),
        }
    }

    fn stats(&self) -> Result<LinkStats, Error> {
        Ok(self.wire_stats()?.to_stats())
    }

    /// This (client) side's, read here, and the server side's as given to
    /// [`RouterClient::with_server_cc`] (`?` if it was not).
    fn congestion_control(&self) -> (String, String) {
        (self.cc.clone(), self.server_cc.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_survive_the_wire() {
        let mut d = DirectionStats::new();
        for v in [50_000u64, 60_000, 2_000_000] {
            d.lateness.record(v).unwrap();
        }
        d.counters.offered = 10;
        d.counters.lost = 2;
        d.loss_events = vec![5, 9];
        let s = LinkStats {
            forwarder: ForwarderStats {
                up: d.clone(),
                down: DirectionStats::new(),
                client_port: PortCounters {
                    kernel_drops: 3,
                    ..Default::default()
                },
                server_port: PortCounters::default(),
            },
            tun_drops: (3, 0),
        };
        let json = serde_json::to_string(&WireStats::from(&s)).unwrap();
        let back: WireStats = serde_json::from_str(&json).unwrap();
        let t = back.to_stats();
        assert_eq!(t.forwarder.up.counters, d.counters);
        assert_eq!(t.forwarder.up.loss_events, vec![5, 9]);
        assert_eq!(t.forwarder.up.lateness.len(), 3);
        assert_eq!(
            t.forwarder.up.lateness.value_at_quantile(1.0),
            d.lateness.value_at_quantile(1.0)
        );
        assert_eq!(t.tun_drops, (3, 0));
        assert_eq!(t.invalid(), s.invalid());
        assert!(t.invalid().unwrap().contains("3 + 0 packets"));
        let sum = back.summary();
        assert_eq!(sum["up"]["counters"]["lost"], 2);
    }

    #[test]
    fn requests_are_one_json_line() {
        let r = serde_json::to_string(&Request::Stats).unwrap();
        assert_eq!(r, "\"stats\"");
        let c = serde_json::to_string(&Request::Configure(LinkConfig::default())).unwrap();
        assert!(c.starts_with("{\"configure\""), "{c}");
        assert!(!c.contains('\n'));
    }
}
