//! The emulated link: two anonymous network namespaces, a TUN device in each, and the
//! forwarder thread between them.
//!
//! ```text
//!  client ns                          forwarder thread                          server ns
//!  [wl<pid>c 192.0.2.1/24] ⇄ fd ⇄ loss → queue → delay ⇄ fd ⇄ [wl<pid>s 192.0.2.2/24]
//! ```

use std::net::Ipv4Addr;
use std::process::Command as Proc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tun_rs::{DeviceBuilder, SyncDevice};

use crate::forward::{self, Command, DirectionStats, ForwarderStats};
use crate::netns::{self, Namespace};
use crate::path::DirectionConfig;
use crate::Error;

/// The client side's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server side's address.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The MTU of both TUN devices.
pub const MTU: u16 = 1500;
/// Packets the kernel queues for the forwarder per TUN device (the default is 500): room for
/// a sender's burst while the forwarder is writing. Time spent there is not emulated delay,
/// and the forwarder reads it at once; overflowing it invalidates the run.
pub const TUN_QUEUE: u32 = 1000;
/// Release lateness (99th percentile) above which a run is invalid.
pub const LATENESS_BUDGET: Duration = Duration::from_millis(1);

/// Both directions' settings.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LinkConfig {
    /// Client to server.
    pub up: DirectionConfig,
    /// Server to client.
    pub down: DirectionConfig,
}

/// How the link is set up (fixed for its life).
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// TCP congestion control set in both namespaces (`net.ipv4.tcp_congestion_control`).
    pub congestion_control: String,
    /// Real-time priority (`SCHED_FIFO`) for the forwarder thread, via `chrt`; `None` leaves
    /// it at normal priority.
    pub rt_priority: Option<u8>,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            congestion_control: "cubic".into(),
            rt_priority: Some(50),
        }
    }
}

/// What was actually set up, for the record.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// Client TUN device.
    pub client_dev: String,
    /// Server TUN device.
    pub server_dev: String,
    /// Congestion control read back from the client and server namespaces.
    pub congestion_control: (String, String),
    /// Whether the forwarder runs under `SCHED_FIFO`, or why not.
    pub realtime: Result<u8, String>,
}

/// Everything the forwarder and the kernel counted since the last [`Link::configure`].
#[derive(Debug, Clone)]
pub struct LinkStats {
    /// The forwarder's counters and lateness, per direction.
    pub forwarder: ForwarderStats,
    /// Packets the kernel dropped because the forwarder did not read them in time (client
    /// side, server side): at the TUN queues since the link started, or, for the lab's
    /// router, at its packet sockets' receive queues.
    pub tun_drops: (u64, u64),
}

/// What the harness needs of an emulated link, whichever front end carries it: the TUN link
/// of this process ([`Link`]) or the lab's router in another container
/// ([`crate::router::RouterClient`]).
pub trait LinkControl: std::fmt::Debug + Send + Sync {
    /// Replaces both directions' settings; counters, packet indices and lateness restart.
    fn configure(&self, cfg: LinkConfig) -> Result<(), Error>;
    /// The counters since the last [`LinkControl::configure`].
    fn stats(&self) -> Result<LinkStats, Error>;
    /// TCP congestion control on the client and server sides, as far as known.
    fn congestion_control(&self) -> (String, String);
}

impl LinkControl for Link {
    fn configure(&self, cfg: LinkConfig) -> Result<(), Error> {
        Link::configure(self, cfg)
    }
    fn stats(&self) -> Result<LinkStats, Error> {
        Link::stats(self)
    }
    fn congestion_control(&self) -> (String, String) {
        self.info().congestion_control.clone()
    }
}

impl LinkStats {
    /// `None` when the emulator kept up; otherwise why the run is invalid: the kernel dropped
    /// packets before the forwarder read them, a packet over the MTU came through, a write failed, or release lateness
    /// at the 99th percentile exceeded [`LATENESS_BUDGET`].
    pub fn invalid(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.tun_drops != (0, 0) {
            why.push(format!(
                "the kernel dropped {} + {} packets before the forwarder read them (it fell behind)",
                self.tun_drops.0, self.tun_drops.1
            ));
        }
        for (name, d) in [("up", &self.forwarder.up), ("down", &self.forwarder.down)] {
            if d.oversize > 0 {
                why.push(format!("{name}: {} packets over the MTU", d.oversize));
            }
            if d.write_errors > 0 {
                why.push(format!("{name}: {} writes failed", d.write_errors));
            }
            let p99 = d.lateness.value_at_quantile(0.99);
            if !d.lateness.is_empty() && p99 > LATENESS_BUDGET.as_nanos() as u64 {
                why.push(format!(
                    "{name}: release lateness p99 {:.2} ms over the {:.1} ms budget",
                    p99 as f64 / 1e6,
                    LATENESS_BUDGET.as_secs_f64() * 1e3
                ));
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// Both directions.
    pub fn directions(&self) -> [(&'static str, &DirectionStats); 2] {
        [("up", &self.forwarder.up), ("down", &self.forwarder.down)]
    }
}

/// A running emulated link. Dropping it stops the forwarder and closes the devices; the
/// namespaces disappear when no thread is left in them (see [`crate::netns`]).
#[derive(Debug)]
pub struct Link {
    root: Namespace,
    client: Namespace,
    server: Namespace,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    info: LinkInfo,
    /// `/proc/thread-self/net/dev` of each namespace, opened inside it (TUN queue drops).
    netdev: (std::fs::File, std::fs::File),
}

/// Outside the initial namespace the kernel only lets a namespace's default congestion
/// control be one of `net.ipv4.tcp_allowed_congestion_control` (a host-wide list, by default
/// reno and the host's default). Adds `cc` to that list when it is missing; returns the old
/// list so [`Link::start`] can put it back as soon as both namespaces are set.
fn allow_congestion_control(cc: &str) -> Result<Option<String>, Error> {
    let key = "net.ipv4.tcp_allowed_congestion_control";
    let allowed = netns::read_sysctl(key)?;
    if allowed.split_whitespace().any(|a| a == cc) {
        return Ok(None);
    }
    let available = netns::read_sysctl("net.ipv4.tcp_available_congestion_control")?;
    if !available.split_whitespace().any(|a| a == cc) {
        return Err(Error::Config(format!(
            "congestion control '{cc}' is not available on this kernel (available: {available})"
        )));
    }
    netns::write_sysctl(key, &format!("{allowed} {cc}"))?;
    Ok(Some(allowed))
}

struct SideSetup {
    dev: SyncDevice,
    cc: String,
    netdev: std::fs::File,
}

fn setup_side(name: String, addr: Ipv4Addr, cc: String) -> Result<SideSetup, Error> {
    // IPv6 off: nothing but the test addresses, no router solicitations on the link.
    netns::write_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
    netns::write_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    netns::write_sysctl("net.ipv4.tcp_congestion_control", &cc).map_err(|e| {
        let avail =
            netns::read_sysctl("net.ipv4.tcp_available_congestion_control").unwrap_or_default();
        Error::Setup(format!(
            "congestion control '{cc}' cannot be set ({e}); available here: {avail}"
        ))
    })?;
    let dev = DeviceBuilder::new()
        .name(name.clone())
        .mtu(MTU)
        .ipv4(addr, 24u8, None)
        .offload(false)
        .tx_queue_len(TUN_QUEUE)
        .build_sync()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Privilege(format!(
                "creating TUN device {name} was refused ({e}): it needs root or CAP_NET_ADMIN"
            )),
            _ => Error::io(&format!("creating TUN device {name}"), e),
        })?;
    let cc = netns::read_sysctl("net.ipv4.tcp_congestion_control")?;
    let netdev = std::fs::File::open("/proc/thread-self/net/dev")
        .map_err(|e| Error::io("opening /proc/thread-self/net/dev", e))?;
    Ok(SideSetup { dev, cc, netdev })
}

impl Link {
    /// Creates the namespaces and devices and starts the forwarder with `cfg`.
    ///
    /// Fails with [`Error::Privilege`] (naming what is missing) when the process may not
    /// create namespaces or TUN devices.
    pub fn start(opts: &LinkOptions, cfg: LinkConfig) -> Result<Self, Error> {
        DirectionConfig::check(&cfg.up).map_err(|e| Error::Config(format!("up: {e}")))?;
        DirectionConfig::check(&cfg.down).map_err(|e| Error::Config(format!("down: {e}")))?;
        // Privileges first: nothing host-wide (the allowed congestion-control list) is touched
        // by a process that could not go on to create the link.
        netns::check_privileges()?;
        netns::check_tun_device()?;
        let root = Namespace::current().map_err(|e| Error::io("opening this namespace", e))?;
        let pid = std::process::id();
        let (cname, sname) = (format!("wl{pid}c"), format!("wl{pid}s"));
        let cc = opts.congestion_control.clone();
        let allowed_before = allow_congestion_control(&cc)?;
        let client = {
            let (n, cc) = (cname.clone(), cc.clone());
            Namespace::create(move || setup_side(n, CLIENT_ADDR, cc))
        };
        if let (Err(_), Some(before)) = (&client, &allowed_before) {
            netns::write_sysctl("net.ipv4.tcp_allowed_congestion_control", before)?;
        }
        let (client, c) = client?;
        let server = {
            let (n, cc) = (sname.clone(), cc.clone());
            Namespace::create(move || setup_side(n, SERVER_ADDR, cc))
        };
        // The list only matters while a namespace's default is set: put it back now, so no
        // host-wide setting outlives this call, whatever happens to the process later.
        if let Some(before) = allowed_before {
            netns::write_sysctl("net.ipv4.tcp_allowed_congestion_control", &before)?;
        }
        let (server, s) = server?;
        let (tx, rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (cdev, sdev) = (c.dev, s.dev);
        let thread = std::thread::Builder::new()
            .name("wl-forwarder".into())
            .spawn(move || {
                let _ = nix::sys::prctl::set_timerslack(1);
                let _ = tid_tx.send(nix::unistd::gettid().as_raw());
                cdev.set_nonblocking(true)?;
                sdev.set_nonblocking(true)?;
                let (mut c, mut s) = (forward::TunPort(cdev), forward::TunPort(sdev));
                forward::run(&mut c, &mut s, (cfg.up, cfg.down), rx)
            })
            .map_err(|e| Error::io("starting the forwarder thread", e))?;
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| Error::Setup("the forwarder thread did not start".into()))?;
        let realtime = match opts.rt_priority {
            None => Err("not asked for".to_string()),
            Some(p) => set_fifo(tid, p).map(|()| p),
        };
        Ok(Self {
            root,
            client,
            server,
            commands: tx,
            thread: Some(thread),
            info: LinkInfo {
                client_dev: cname,
                server_dev: sname,
                congestion_control: (c.cc, s.cc),
                realtime,
            },
            netdev: (c.netdev, s.netdev),
        })
    }

    /// What was set up.
    pub fn info(&self) -> &LinkInfo {
        &self.info
    }

    /// Replaces both directions' settings; counters, packet indices and lateness restart.
    pub fn configure(&self, cfg: LinkConfig) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Configure(Box::new((cfg.up, cfg.down)), tx))
            .map_err(|_| self.dead())?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| self.dead())?
            .map_err(Error::Config)
    }

    /// The counters since the last [`Link::configure`] (TUN queue drops: since the start).
    pub fn stats(&self) -> Result<LinkStats, Error> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Stats(tx))
            .map_err(|_| self.dead())?;
        let forwarder = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| self.dead())?;
        let tun_drops = (
            tx_dropped(&self.netdev.0, &self.info.client_dev)?,
            tx_dropped(&self.netdev.1, &self.info.server_dev)?,
        );
        Ok(LinkStats {
            forwarder,
            tun_drops,
        })
    }

    fn dead(&self) -> Error {
        Error::Setup("the forwarder thread has stopped".into())
    }

    /// Moves the calling thread into the client namespace.
    pub fn enter_client(&self) -> std::io::Result<()> {
        self.client.enter()
    }

    /// Moves the calling thread into the server namespace.
    pub fn enter_server(&self) -> std::io::Result<()> {
        self.server.enter()
    }

    /// Moves the calling thread back to the namespace the link was started from.
    pub fn leave(&self) -> std::io::Result<()> {
        self.root.enter()
    }

    /// The namespaces' ids (client, server), as `/proc/<pid>/task/<tid>/ns/net` shows them.
    pub fn namespace_ids(&self) -> (u64, u64) {
        (self.client.id(), self.server.id())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Puts thread `tid` under `SCHED_FIFO` at `prio` with `chrt` (util-linux).
pub(crate) fn set_fifo(tid: i32, prio: u8) -> Result<(), String> {
    match Proc::new("chrt")
        .args(["-f", "-p", &prio.to_string(), &tid.to_string()])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "chrt failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("chrt could not run: {e}")),
    }
}

/// The `tx drop` column of `dev` in a `/proc/net/dev` file (packets the kernel could not
/// queue to the TUN reader).
fn tx_dropped(file: &std::fs::File, dev: &str) -> Result<u64, Error> {
    use std::io::{Read, Seek};
    let mut f = file;
    let mut text = String::new();
    f.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| f.read_to_string(&mut text))
        .map_err(|e| Error::io("reading /proc/net/dev", e))?;
    parse_tx_dropped(&text, dev)
        .ok_or_else(|| Error::Setup(format!("device {dev} is missing from /proc/net/dev")))
}

/// Parses the `tx drop` counter of `dev` out of `/proc/net/dev` text.
pub fn parse_tx_dropped(text: &str, dev: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast;
        // tx: bytes packets errs drop ...
        rest.split_whitespace().nth(11)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::{LinkStats, LATENESS_BUDGET};
    use crate::forward::{DirectionStats, ForwarderStats};

    fn clean() -> LinkStats {
        let mut d = DirectionStats::new();
        for _ in 0..1000 {
            d.lateness.record(50_000).unwrap();
        }
        LinkStats {
            forwarder: ForwarderStats {
                up: d.clone(),
                down: d,
                client_port: Default::default(),
                server_port: Default::default(),
            },
            tun_drops: (0, 0),
        }
    }

    /// Each reason alone makes a run invalid, and says which; a clean one is valid.
    #[test]
    fn each_kind_of_falling_behind_makes_a_run_invalid() {
        assert_eq!(clean().invalid(), None);

        let mut s = clean();
        s.tun_drops = (0, 3);
        assert!(s
            .invalid()
            .unwrap()
            .contains("0 + 3 packets before the forwarder read them"));

        let mut s = clean();
        s.forwarder.up.oversize = 1;
        assert!(s.invalid().unwrap().contains("up: 1 packets over the MTU"));

        let mut s = clean();
        s.forwarder.down.write_errors = 2;
        assert!(s.invalid().unwrap().contains("down: 2 writes failed"));

        // Lateness: 2% of releases 3 ms late puts p99 over the 1 ms budget; 0.5% does not.
        let late = 3 * LATENESS_BUDGET.as_nanos() as u64;
        let mut s = clean();
        for _ in 0..5 {
            s.forwarder.down.lateness.record(late).unwrap();
        }
        assert_eq!(s.invalid(), None, "p99 still within budget");
        for _ in 0..20 {
            s.forwarder.down.lateness.record(late).unwrap();
        }
        let why = s.invalid().unwrap();
        assert!(
            why.contains("down: release lateness p99 3.00 ms over the 1.0 ms budget"),
            "{why}"
        );
        assert!(!why.contains("up:"), "{why}");
    }

    #[test]
    fn reads_the_tx_drop_column() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
wl77c:  123456     100    0    0    0     0          0         0   654321     200    0   17    0     0       0          0\n";
        assert_eq!(super::parse_tx_dropped(text, "wl77c"), Some(17));
        assert_eq!(super::parse_tx_dropped(text, "lo"), Some(0));
        assert_eq!(super::parse_tx_dropped(text, "eth0"), None);
    }
}
