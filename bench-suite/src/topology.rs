//! The process topology every experiment runs in: the runtimes, the link emulator's
//! namespaces, and their teardown, in one place that `wirelab` and the tests share.
//!
//! - Without a link: a server runtime (threads named [`crate::probe::SERVER_THREAD`], so CPU
//!   time can be split) and a client runtime, on loopback.
//! - With a link: the same, the server runtime's threads in the server namespace, the client
//!   runtime's threads and the calling thread in the client namespace.
//!
//! Dropping a [`Topology`] stops the client runtime, then the server runtime, then takes the
//! calling thread out of the namespaces and stops the link (the kernel frees the namespaces
//! and devices when the last thread leaves).
//!
//! Where the threads run ([`Cpus`]): every thread of the client side (its runtime's and the
//! calling thread) on one CPU and every server thread on another (`split`), all on one CPU
//! (`same`), or wherever the kernel puts them (`free`). On a small VM a loopback echo costs
//! about 20 µs when client and server happen to share a vCPU and 60-70 µs when they do not, so
//! a free placement gives figures that move with the scheduler; a pinned one does not.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;
use wirelab_link::Link;

use crate::runner::Servers;

/// Runtimes and, optionally, the link between them.
#[derive(Debug)]
pub struct Topology {
    client: Option<Runtime>,
    server: Option<Runtime>,
    link: Option<Arc<Link>>,
    cpus: Pinning,
}

/// Where client and server threads run (`--cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cpus {
    /// Client threads on one CPU, server threads on another (like two hosts; the default
    /// where the process may use two CPUs).
    Split,
    /// Client and server threads on the same CPU (the default on one CPU).
    Same,
    /// No pinning: the kernel's scheduler places and moves the threads.
    Free,
}

/// A [`Cpus`] choice resolved to CPU numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// The choice.
    pub cpus: Cpus,
    /// `(client CPU, server CPU)`; `None` for [`Cpus::Free`].
    pub on: Option<(usize, usize)>,
}

impl Pinning {
    /// Resolves `choice` (`None`: `split` where two CPUs are allowed, else `same`) against the
    /// CPUs this process may use. Fails if `split` is asked for with one CPU.
    pub fn resolve(choice: Option<Cpus>) -> Result<Self> {
        // Results record the process's CPUs as they were before any pinning.
        crate::env::process_cpus();
        let allowed = allowed_cpus()?;
        let cpus = choice.unwrap_or(if allowed.len() >= 2 {
            Cpus::Split
        } else {
            Cpus::Same
        });
        let on = match cpus {
            Cpus::Free => None,
            Cpus::Same => Some((allowed[0], allowed[0])),
            Cpus::Split => match allowed[..] {
                [c, s, ..] => Some((c, s)),
                _ => anyhow::bail!(
                    "--cpu split needs two CPUs, but this process may run on {} only \
                     (use --cpu same or --cpu free)",
                    allowed[0]
                ),
            },
        };
        Ok(Self { cpus, on })
    }

    /// As results record it: `split (client cpu 0, server cpu 1)`, `same (cpu 0)`, `free`.
    pub fn describe(&self) -> String {
        match (self.cpus, self.on) {
            (Cpus::Split, Some((c, s))) => format!("split (client cpu {c}, server cpu {s})"),
            (Cpus::Same, Some((c, _))) => format!("same (cpu {c})"),
            _ => "free".into(),
        }
    }
}

/// The CPUs this process may run on, in order; never empty.
fn allowed_cpus() -> Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .context("cannot read this process's CPU affinity")?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    anyhow::ensure!(!cpus.is_empty(), "this process may run on no CPU");
    Ok(cpus)
}

/// Pins the calling thread to `cpu` (threads and processes it starts inherit it).
pub(crate) fn pin(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

impl Topology {
    /// Starts the runtimes; with `link` (already started by the caller, from the host's
    /// namespace) their threads enter its namespaces, and so does the calling thread (the
    /// client side). `worker_threads` bounds each runtime's threads (`None`: one per CPU).
    /// `cpus` says where the threads run (the link's forwarder, started before, is not
    /// pinned).
    pub fn start(
        link: Option<Arc<Link>>,
        worker_threads: Option<usize>,
        cpus: Pinning,
    ) -> Result<Self> {
        let (client_cpu, server_cpu) = cpus.on.unzip();
        let server = runtime(
            crate::probe::SERVER_THREAD,
            link.as_ref().map(|l| (l, true)),
            worker_threads,
            server_cpu,
        )
        .context("cannot start the server runtime")?;
        if let Some(l) = &link {
            l.enter_client()
                .context("cannot enter the client namespace")?;
        }
        if let Some(c) = client_cpu {
            pin(c).with_context(|| format!("cannot pin the client thread to CPU {c}"))?;
        }
        let client = runtime(
            "wl-client",
            link.as_ref().map(|l| (l, false)),
            worker_threads,
            client_cpu,
        )
        .context("cannot start the client runtime")?;
        Ok(Self {
            client: Some(client),
            server: Some(server),
            link,
            cpus,
        })
    }

    /// Where servers run: the server runtime, listening on loopback or the link's server
    /// address.
    pub fn servers(&self) -> Servers {
        Servers {
            handle: self.server_runtime().handle().clone(),
            separate: true,
            listen: if self.link.is_some() {
                wirelab_link::SERVER_ADDR.into()
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            },
            link: None,
            router: None,
            remote: None,
            cpus: self.cpus,
            quic_cc: wirelab_core::QuicCongestion::default(),
            qlog_dir: None,
        }
    }

    /// The link, if there is one.
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.link.as_ref()
    }

    /// The server runtime.
    pub fn server_runtime(&self) -> &Runtime {
        self.server.as_ref().expect("present until drop")
    }

    /// Runs `f` on the client runtime from the calling thread.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.client
            .as_ref()
            .expect("present until drop")
            .block_on(f)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Runtime threads leave the namespaces first, then this thread; dropping the last
        // reference to the link stops the forwarder.
        drop(self.client.take());
        drop(self.server.take());
        if let Some(l) = self.link.take() {
            if let Err(e) = l.leave() {
                eprintln!("warning: leaving the link's namespaces: {e}");
            }
        }
    }
}

/// A multi-threaded runtime whose threads are named `name`, run on `cpu` if given, and, with
/// a link, live in its client or server namespace.
fn runtime(
    name: &str,
    link: Option<(&Arc<Link>, bool)>,
    worker_threads: Option<usize>,
    cpu: Option<usize>,
) -> std::io::Result<Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name(name);
    if let Some(n) = worker_threads {
        b.worker_threads(n);
    }
    let link = link.map(|(l, server)| (l.clone(), server));
    b.on_thread_start(move || {
        if let Some((l, server)) = &link {
            let r = if *server {
                l.enter_server()
            } else {
                l.enter_client()
            };
            if let Err(e) = r {
                eprintln!("error: a runtime thread could not enter the link namespace: {e}");
            }
        }
        if let Some(c) = cpu {
            if let Err(e) = pin(c) {
                eprintln!("error: a runtime thread could not be pinned to CPU {c}: {e}");
            }
        }
    });
    b.build()
}
