//! What a measurement costs: CPU time of the server's and the client's threads, and the bytes
//! the client's sockets moved.
//!
//! CPU time is read per thread from `/proc/self/task/<tid>/schedstat` (nanoseconds on a CPU,
//! kept by the scheduler). The harness runs servers on their own runtime, whose threads are
//! named [`SERVER_THREAD`]; every other thread of the process counts as the client (the load
//! generator's ticker included). Linux only: elsewhere CPU time is not reported.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wirelab_core::wire::{WireCounters, WireSnapshot};

/// Name of the server runtime's threads.
pub const SERVER_THREAD: &str = "wl-server";

/// CPU time of the process's threads, split into server and client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimes {
    /// Server threads, ns.
    pub server_ns: u64,
    /// All other threads, ns.
    pub client_ns: u64,
}

/// Reads the CPU time of every live thread of this process; `None` where `/proc` has no
/// schedstat (not Linux, or a kernel without `CONFIG_SCHED_INFO`).
pub fn cpu_times() -> Option<CpuTimes> {
    let mut t = CpuTimes::default();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        // A thread may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let Some(ns) = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(SERVER_THREAD) {
            t.server_ns += ns;
        } else if comm.trim_end().starts_with("wl-forwarder") {
            // The link emulator's thread is neither side.
        } else {
            t.client_ns += ns;
        }
    }
    Some(t)
}

/// Where a measurement reads its costs from.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The client's socket counters (also put in its `ClientConfig::wire`).
    pub wire: Option<Arc<WireCounters>>,
    /// Whether servers run on their own named threads, so CPU time can be split.
    pub cpu: bool,
    /// A remote server whose CPU time is read from its control endpoint (the whole server
    /// process; the local threads then all count as the client).
    pub remote: Option<Arc<crate::control::Remote>>,
}

/// A [`Probe`] read at one instant.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSnapshot {
    wire: Option<WireSnapshot>,
    cpu: Option<CpuTimes>,
}

/// CPU time and socket traffic between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Client socket bytes sent.
    pub tx_bytes: Option<u64>,
    /// Client socket bytes received.
    pub rx_bytes: Option<u64>,
    /// Client UDP datagrams sent and received (QUIC transports).
    pub datagrams: Option<u64>,
    /// Server threads' CPU time, ns.
    pub server_cpu_ns: Option<u64>,
    /// Client threads' CPU time, ns.
    pub client_cpu_ns: Option<u64>,
}

impl Probe {
    /// Reads the counters now.
    pub fn snapshot(&self) -> ProbeSnapshot {
        let mut cpu = if self.cpu { cpu_times() } else { None };
        if let Some(r) = &self.remote {
            // A blocking request of about one round trip, made between the measured phases.
            cpu = match (cpu, r.cpu_ns()) {
                (Some(local), Ok(server_ns)) => Some(CpuTimes {
                    server_ns,
                    client_ns: local.client_ns + local.server_ns,
                }),
                (_, Err(e)) => {
                    tracing::warn!("server CPU time from {}: {e:#}", r.control);
                    None
                }
                (None, Ok(_)) => None,
            };
        }
        ProbeSnapshot {
            wire: self.wire.as_ref().map(|w| w.snapshot()),
            cpu,
        }
    }
}

/// A cost measurement under way: [`measure`] reads the probe, [`Measuring::finish`] gives the
/// cost since. Without a probe both do nothing.
#[derive(Debug)]
pub struct Measuring<'a>(Option<(&'a Probe, ProbeSnapshot)>);

/// Starts measuring with `probe`, if there is one.
pub fn measure(probe: Option<&Probe>) -> Measuring<'_> {
    Measuring(probe.map(|p| (p, p.snapshot())))
}

impl Measuring<'_> {
    /// The cost since [`measure`].
    pub fn finish(self) -> Option<Cost> {
        self.0.map(|(p, before)| p.snapshot().since(&before))
    }
}

impl ProbeSnapshot {
    /// The cost from `earlier` to this snapshot.
    pub fn since(&self, earlier: &ProbeSnapshot) -> Cost {
        let wire = match (self.wire, earlier.wire) {
            (Some(a), Some(b)) => Some(a.since(&b)),
            _ => None,
        };
        let cpu = match (self.cpu, earlier.cpu) {
            (Some(a), Some(b)) => Some((
                a.server_ns.saturating_sub(b.server_ns),
                a.client_ns.saturating_sub(b.client_ns),
            )),
            _ => None,
        };
        Cost {
            tx_bytes: wire.map(|w| w.tx_bytes),
            rx_bytes: wire.map(|w| w.rx_bytes),
            datagrams: wire.map(|w| w.tx_datagrams + w.rx_datagrams),
            server_cpu_ns: cpu.map(|c| c.0),
            client_cpu_ns: cpu.map(|c| c.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_on_a_named_server_thread() {
        let Some(before) = cpu_times() else {
            // Per-thread schedstat needs CONFIG_SCHEDSTATS; reading other threads' files
            // can also be refused without root.
            wirelab_test_support::skip(
                wirelab_test_support::Need::Root,
                "no readable /proc/self/task/*/schedstat on this system",
            );
            return;
        };
        let own = || -> u64 {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            s.split_whitespace().next().unwrap().parse().unwrap()
        };
        let during = std::thread::Builder::new()
            .name(format!("{SERVER_THREAD}-test"))
            .spawn(move || {
                // Burn 20 ms of this thread's own CPU time (bounded by 10 s of wall time).
                let (start, wall) = (own(), std::time::Instant::now());
                let mut x = 0u64;
                while own() < start + 20_000_000 && wall.elapsed().as_secs() < 10 {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                // Read while the thread is alive: its time leaves the sum when it exits.
                cpu_times().unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            during.server_ns >= before.server_ns + 20_000_000,
            "{before:?} -> {during:?}"
        );
    }
}
