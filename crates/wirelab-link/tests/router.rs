//! The lab's router without Docker: three network namespaces (client, router, server) joined by
//! two veth pairs, the router's forwarding off, [`Router`] in the middle over AF_PACKET.
//!
//! - Every datagram the model keeps arrives and every one it drops does not: datagram `i` is
//!   packet index `i` of the up direction, so a seed gives exactly the losses the TUN link's
//!   models give (the same [`LossProcess`]), and they match the router's own counters.
//! - The first packets wait for the server's MAC (learnt through the kernel's neighbour
//!   table) instead of being dropped.
//!
//! Needs root (namespaces, veth, packet sockets) and `ip` (iproute2): without them the test
//! says SKIPPED, and CI (`WIRELAB_REQUIRE_ROOT=1`) fails it.

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use nix::sched::CloneFlags;
use wirelab_link::router::{Router, RouterOptions};
use wirelab_link::{LinkSpec, LinkStats, LossProcess};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Named namespaces `wl<pid><c|r|s>`, deleted on drop.
struct Lab {
    names: [String; 3],
    client_addr: Ipv4Addr,
    server_addr: Ipv4Addr,
    client_net: String,
    server_net: String,
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        // /29s of 198.18.0.0/15 of our own (the process id), so runs never meet.
        let idx = pid % 8192;
        let (third, fourth) = ((idx / 32) as u8, ((idx % 32) * 8) as u8);
        let names = ["c", "r", "s"].map(|s| format!("wl{pid}{s}"));
        for n in &names {
            ip(&["netns", "add", n]);
        }
        let lab = Self {
            names,
            client_addr: Ipv4Addr::new(198, 18, third, fourth + 2),
            server_addr: Ipv4Addr::new(198, 19, third, fourth + 2),
            client_net: format!("198.18.{third}.{fourth}/29"),
            server_net: format!("198.19.{third}.{fourth}/29"),
        };
        let [c, r, s] = &lab.names;
        for (side, ns, net) in [("c", c, 18u8), ("s", s, 19u8)] {
            let (a, b) = (format!("wl{pid}{side}0"), format!("wl{pid}{side}1"));
            ip(&[
                "-n", r, "link", "add", &a, "type", "veth", "peer", "name", &b,
            ]);
            ip(&["-n", r, "link", "set", &b, "netns", ns]);
            let router_ip = format!("198.{net}.{third}.{}/29", fourth + 1);
            let end_ip = format!("198.{net}.{third}.{}/29", fourth + 2);
            let other = if net == 18 {
                &lab.server_net
            } else {
                &lab.client_net
            };
            ip(&["-n", r, "addr", "add", &router_ip, "dev", &a]);
            ip(&["-n", r, "link", "set", &a, "up"]);
            ip(&["-n", ns, "addr", "add", &end_ip, "dev", &b]);
            ip(&["-n", ns, "link", "set", &b, "up"]);
            // Full checksums and no segmentation offload: the router forwards frames as read.
            ip(&["netns", "exec", ns, "ethtool", "-K", &b, "tx", "off"]);
            let via = format!("198.{net}.{third}.{}", fourth + 1);
            ip(&["-n", ns, "route", "add", other, "via", &via]);
        }
        ip(&["-n", r, "link", "set", "lo", "up"]);
        // A new namespace inherits the host's IPv4 forwarding (Docker turns it on): off.
        ip(&["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        lab
    }

    /// Moves the calling thread into namespace `i` (0 client, 1 router, 2 server).
    fn enter(&self, i: usize) {
        let f = File::open(format!("/run/netns/{}", self.names[i])).unwrap();
        nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn the_router_loses_what_the_seeded_model_loses_and_forwards_the_rest() {
    if !wirelab_test_support::root("the lab router (namespaces, veth, packet sockets)") {
        return;
    }
    for (program, install) in [("ip", "iproute2"), ("ethtool", "ethtool")] {
        if wirelab_test_support::find_program(
            program,
            "the router test's namespaces",
            &format!("apt-get install {install}"),
        )
        .is_none()
        {
            return;
        }
    }
    let lab = Lab::new();
    let spec: LinkSpec = "rtt=2ms,loss=5%,seed=7".parse().unwrap();
    let cfg = spec.config();
    let opts = RouterOptions {
        client: lab.client_net.parse().unwrap(),
        server: lab.server_net.parse().unwrap(),
        rt_priority: None,
    };
    // The router thread's namespace is inherited by its forwarder thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let names = lab.names.clone();
    let router_thread = std::thread::spawn(move || {
        let f = File::open(format!("/run/netns/{}", names[1])).unwrap();
        nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
        let r = Router::start(&opts, cfg);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tx.send(Err(e.to_string())).unwrap();
                return None;
            }
        };
        tx.send(Ok(())).unwrap();
        let _ = stop_rx.recv();
        let stats: LinkStats = r.stats().unwrap();
        Some(stats)
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the router starts");

    const N: u32 = 2000;
    let server = {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let addr = lab.server_addr;
        let names = lab.names.clone();
        let h = std::thread::spawn(move || {
            let f = File::open(format!("/run/netns/{}", names[2])).unwrap();
            nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind((addr, 9000)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1000)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut arrived = vec![false; N as usize];
            let mut buf = [0u8; 64];
            while let Ok(n) = s.recv(&mut buf) {
                if n >= 4 {
                    let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if let Some(a) = arrived.get_mut(i) {
                        *a = true;
                    }
                }
            }
            arrived
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        h
    };
    lab.enter(0);
    let s = UdpSocket::bind((lab.client_addr, 0)).unwrap();
    for i in 0..N {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        s.send_to(&b, (lab.server_addr, 9000)).unwrap();
        // 2000 datagrams/s: far below what the router carries, so the kernel drops none.
        std::thread::sleep(Duration::from_micros(500));
    }
    let arrived = server.join().unwrap();
    stop_tx.send(()).unwrap();
    let stats = router_thread.join().unwrap().expect("router stats");

    let mut model = LossProcess::new(spec.loss_model(), cfg.up.seed);
    let mut mismatches = Vec::new();
    let mut lost = 0;
    for (i, &a) in arrived.iter().enumerate() {
        let l = model.lost(i as u64);
        lost += u64::from(l);
        if a == l {
            mismatches.push(i);
        }
    }
    assert!(
        mismatches.is_empty(),
        "datagrams whose fate differs from the model's: {:?} (first 20)",
        &mismatches[..mismatches.len().min(20)]
    );
    let up = &stats.forwarder.up;
    assert_eq!(up.counters.offered, u64::from(N), "{:?}", up.counters);
    assert_eq!(up.counters.lost, lost);
    assert_eq!(up.written, u64::from(N) - lost);
    assert!(lost > 50, "5% of 2000 is about 100: {lost}");
    assert_eq!(stats.tun_drops, (0, 0));
    assert_eq!(stats.forwarder.up.oversize, 0);
}
