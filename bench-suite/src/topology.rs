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
}

impl Topology {
    /// Starts the runtimes; with `link` (already started by the caller, from the host's
    /// namespace) their threads enter its namespaces, and so does the calling thread (the
    /// client side). `worker_threads` bounds each runtime's threads (`None`: one per CPU).
    pub fn start(link: Option<Arc<Link>>, worker_threads: Option<usize>) -> Result<Self> {
        let server = runtime(
            crate::probe::SERVER_THREAD,
            link.as_ref().map(|l| (l, true)),
            worker_threads,
        )
        .context("cannot start the server runtime")?;
        if let Some(l) = &link {
            l.enter_client()
                .context("cannot enter the client namespace")?;
        }
        let client = runtime(
            "wl-client",
            link.as_ref().map(|l| (l, false)),
            worker_threads,
        )
        .context("cannot start the client runtime")?;
        Ok(Self {
            client: Some(client),
            server: Some(server),
            link,
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

/// A multi-threaded runtime whose threads are named `name` and, with a link, live in its
/// client or server namespace.
fn runtime(
    name: &str,
    link: Option<(&Arc<Link>, bool)>,
    worker_threads: Option<usize>,
) -> std::io::Result<Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_name(name);
    if let Some(n) = worker_threads {
        b.worker_threads(n);
    }
    if let Some((l, server)) = link {
        let l = l.clone();
        b.on_thread_start(move || {
            let r = if server {
                l.enter_server()
            } else {
                l.enter_client()
            };
            if let Err(e) = r {
                eprintln!("error: a runtime thread could not enter the link namespace: {e}");
            }
        });
    }
    b.build()
}
