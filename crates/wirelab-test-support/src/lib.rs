//! wirelab's test scaffolding, one copy for every test binary in the workspace.
//!
//! - [`skip`]: a test that cannot run here (no root, a peer not installed) records *why* in the
//!   skip log that `scripts/test.sh` prints in its summary, so a skip is never a silent `ok`;
//!   with the matching `WIRELAB_REQUIRE_*` variable set (CI) it fails instead.
//! - [`panics`]: a process-wide panic counter. Servers run connections in task trackers, where a
//!   panic only closes that connection; tests that feed bad input assert that none happened.
//! - [`within`], [`start`], [`local`]: bounded waits and a served server on an OS-chosen port.
//! - [`find_program`]: peers found on `PATH`, never at a hard-coded location.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use wirelab_core::tls::{self, Identity, Trust};
use wirelab_core::{CancellationToken, Server, ServerConfig};

pub mod panics;

/// What a test needs that a machine may lack. Each has a `WIRELAB_REQUIRE_*` variable that
/// turns "skip" into "fail" (CI sets them all: there nothing may skip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root (namespaces, TUN devices, sysctls): `WIRELAB_REQUIRE_ROOT=1`.
    Root,
    /// An independent peer program or package: `WIRELAB_REQUIRE_PEERS=1`.
    Peer,
}

impl Need {
    /// The variable that makes a missing need a failure.
    pub fn require_var(self) -> &'static str {
        match self {
            Need::Root => "WIRELAB_REQUIRE_ROOT",
            Need::Peer => "WIRELAB_REQUIRE_PEERS",
        }
    }

    fn required(self) -> bool {
        std::env::var(self.require_var()).is_ok_and(|v| v == "1")
    }
}

/// Records that the calling test cannot run here, and why; the caller then returns.
///
/// The record goes to stderr and, when `WIRELAB_SKIP_LOG` names a file (`scripts/test.sh`
/// sets it), as one line `test<TAB>need<TAB>reason` appended to that file, which the script
/// prints in its summary. When the need's `WIRELAB_REQUIRE_*` variable is `1`, it panics
/// instead: the test fails.
#[track_caller]
pub fn skip(need: Need, reason: &str) {
    let loc = std::panic::Location::caller();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let name = format!("{test} ({}:{})", loc.file(), loc.line());
    if need.required() {
        panic!(
            "{name}: {} is set, but this test would skip: {reason}",
            need.require_var()
        );
    }
    eprintln!("SKIPPED {name}: {reason}");
    if let Some(path) = std::env::var_os("WIRELAB_SKIP_LOG") {
        let line = format!("{name}\t{need:?}\t{reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "cannot record the skip in {}: {e}",
                Path::new(&path).display()
            );
        }
    }
}

/// Whether the process's effective user is root (`/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `true` when running as root; otherwise records a skip for `what` (see [`skip`]) and
/// returns `false`.
#[track_caller]
pub fn root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(Need::Root, &format!("{what} needs root"));
    false
}

/// Finds `program` on `PATH` (or takes it as a path when it contains a `/`).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A peer program on `PATH`; when missing, records a skip naming `what` and how to install it
/// (see [`skip`]) and returns `None`.
#[track_caller]
pub fn find_program(program: &str, what: &str, install: &str) -> Option<PathBuf> {
    let found = which(program);
    if found.is_none() {
        skip(
            Need::Peer,
            &format!("{what}: `{program}` is not on PATH ({install})"),
        );
    }
    found
}

/// A peer at a known path (a program in the Python virtualenv); when missing, records a skip
/// (see [`skip`]) and returns `None`.
#[track_caller]
pub fn find_file(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    skip(
        Need::Peer,
        &format!(
            "{what}: not found at {} (scripts/test.sh installs it)",
            path.display()
        ),
    );
    None
}

/// Awaits `f` for at most `bound`; panics naming `what` when it takes longer.
pub async fn within<T>(what: &str, bound: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {bound:?}"))
}

/// A server configuration on 127.0.0.1 with an OS-chosen port and the defaults.
pub fn local() -> ServerConfig {
    ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A served server: where it listens, the token that stops it, and its task.
#[derive(Debug)]
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to shut it down gracefully.
    pub stop: CancellationToken,
    /// The serve task; its result says how shutdown went.
    pub task: tokio::task::JoinHandle<wirelab_core::Result<()>>,
}

/// Binds `S` with `cfg` and serves it on the current runtime until `stop` is cancelled.
pub async fn start<S: Server>(cfg: ServerConfig) -> Served {
    let s = S::bind(cfg).await.expect("server binds");
    let addr = s.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(s.serve(stop.clone()));
    Served { addr, stop, task }
}

/// Every reference on this host to the network namespaces named `ids` (as
/// `/proc/PID/ns/net` reads, `net:[INODE]`): threads inside one, and open descriptors to one,
/// across all processes. An anonymous namespace lives exactly as long as such a reference
/// (no name in `/run/netns` holds it), so an empty answer means the kernel has freed it and
/// the devices in it.
pub fn netns_holders(ids: &[String]) -> Vec<String> {
    let mut holders = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for p in procs.flatten() {
        let mut links = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(p.path().join("task")) {
            links.extend(tasks.flatten().map(|t| t.path().join("ns/net")));
        }
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        for l in links {
            if let Ok(target) = std::fs::read_link(&l) {
                let target = target.to_string_lossy().into_owned();
                if ids.contains(&target) {
                    holders.push(format!("{} -> {target}", l.display()));
                }
            }
        }
    }
    holders
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, with the server and client TLS
/// configurations for one ALPN that trust it.
#[derive(Debug)]
pub struct TestTls {
    /// The identity (certificate and key).
    pub identity: Identity,
    /// For `ServerConfig::tls`.
    pub server: Arc<rustls::ServerConfig>,
    /// For `ClientConfig::tls`: trusts exactly this certificate.
    pub client: Arc<rustls::ClientConfig>,
}

/// [`TestTls`] for `alpn`.
pub fn test_tls(alpn: &[u8]) -> TestTls {
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("a certificate");
    let server = identity.server_config(&[alpn]).expect("server TLS");
    let client = tls::client_config(&Trust::Certificates(vec![identity.certificate()]), &[alpn])
        .expect("client TLS");
    TestTls {
        identity,
        server,
        client,
    }
}

/// A served TLS server (QUIC and HTTP/3 tests, or any transport over TLS) and the client TLS
/// config that trusts it: one copy of what the quic and h3 tests each carried.
#[derive(Debug)]
pub struct TlsLab {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to shut it down gracefully.
    pub stop: CancellationToken,
    /// The serve task.
    pub task: tokio::task::JoinHandle<wirelab_core::Result<()>>,
    /// Trusts exactly the server's certificate, offering `alpn`.
    pub client_tls: Arc<rustls::ClientConfig>,
}

impl TlsLab {
    /// Binds `S` on 127.0.0.1 (OS-chosen port) with a fresh self-signed certificate for
    /// `alpn`, after `tune` has adjusted the configuration, and serves it.
    pub async fn start<S: Server>(alpn: &[u8], tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let t = test_tls(alpn);
        let mut cfg = local();
        cfg.tls = Some(t.server);
        tune(&mut cfg);
        let s = start::<S>(cfg).await;
        Self {
            addr: s.addr,
            stop: s.stop,
            task: s.task,
            client_tls: t.client,
        }
    }

    /// A client configuration for this server (one stream, TLS set).
    pub fn client(&self) -> wirelab_core::ClientConfig {
        let mut c = wirelab_core::ClientConfig::new(self.addr);
        c.tls = Some(self.client_tls.clone());
        c
    }

    /// Cancels the server and waits (at most `bound`) for it to return cleanly.
    pub async fn stop(self, bound: Duration) {
        self.stop.cancel();
        self.stopped(bound).await;
    }

    /// Waits (at most `bound`) for a server already told to stop to return cleanly.
    pub async fn stopped(self, bound: Duration) {
        within("server shutdown", bound, self.task)
            .await
            .expect("the serve task")
            .expect("a clean shutdown");
    }
}
