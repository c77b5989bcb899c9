//! The scale scenario: N connections to a server that runs in its own process.
//!
//! A server's memory per connection cannot be read in a process that also holds the clients,
//! so each repetition starts `wirelab serve -t ID` as a child process (the same binary) on an
//! OS-chosen port and reads its `VmRSS` and CPU time from `/proc/PID`. The clients run here:
//!
//! 1. a warm-up of `min(100, N/10)` connections (the server's runtime, allocator arenas, TLS and
//!    QUIC endpoint state exist after it), then the baseline `VmRSS`;
//! 2. N connections, each with one logical stream and one echo answered (so it is fully set
//!    up), opened 64 at a time: connections per second, and the server's CPU time for them;
//! 3. `VmRSS` with all of them idle;
//! 4. the active phase: every connection echoes `max(1, rate × duration / N)` times, spread
//!    over the duration (latency of each echo, the server's CPU per echo), then `VmRSS` again;
//! 5. every client closes, the child gets SIGTERM and must exit within 10 s.
//!
//! The file-descriptor limit is raised to what both sides need (the child inherits it), or
//! the repetition fails saying how to raise it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use wirelab_core::codec::{self, Kind as MsgKind};
use wirelab_core::tls::{self, Trust};
use wirelab_core::{Channel, Client, ClientConfig};

use crate::probe::Cost;
use crate::results::{Rep, ScaleRep};
use crate::scenario::Scenario;
use crate::stats::HistData;
use crate::transports::{self, Variant};
use crate::with_client;

/// Connections opened at once.
const OPEN_AT_ONCE: usize = 64;
/// How long the child may take to listen, and to stop after SIGTERM.
const CHILD_BOUND: Duration = Duration::from_secs(10);
/// How long one connection may take to open and answer its first echo.
const CONNECT_BOUND: Duration = Duration::from_secs(30);

/// One repetition of scale scenario `s` for variant `v`; the server process runs on
/// `server_cpu` if given (`--cpu`).
pub async fn one_rep(s: &Scenario, v: &Variant, server_cpu: Option<usize>) -> Result<Rep> {
    let n = usize::try_from(s.connections).context("connections")?;
    let warm = (n / 10).clamp(1, 100);
    raise_nofile(2 * (n + warm) as u64 + 1024)?;
    let cert = std::env::temp_dir().join(format!(
        "wirelab-scale-{}-{}.pem",
        std::process::id(),
        v.slug()
    ));
    let server = ServerProcess::start(v, &cert, server_cpu)?;
    let result = async {
        let mut cfg = ClientConfig::new(server.addr);
        cfg.mode = v.mode;
        cfg.streams = 1;
        if v.tls {
            let alpn = [transports::alpn(v.id)];
            cfg.tls = Some(tls::client_config(&Trust::PemFile(cert.clone()), &alpn)?);
        }
        let size = s.size_bytes();
        let per_conn = ((s.rate * s.duration_ms as f64 / 1000.0 / n as f64).ceil() as u64).max(1);
        let duration = Duration::from_millis(s.duration_ms);
        with_client!(v.id, C => measure::<C>(&cfg, &server, size, warm, n, per_conn, duration).await)
    }
    .await;
    let stopped = server.stop();
    let _ = std::fs::remove_file(&cert);
    let rep = result?;
    stopped?;
    Ok(rep)
}

async fn measure<C: Client>(
    cfg: &ClientConfig,
    server: &ServerProcess,
    size: usize,
    warm: usize,
    n: usize,
    per_conn: u64,
    duration: Duration,
) -> Result<Rep> {
    let warm_conns = open_many::<C>(cfg, size, warm).await?;
    let rss_base_kib = server.rss_kib()?;
    let cpu0 = server.cpu_ns()?;
    let t0 = Instant::now();
    let conns = open_many::<C>(cfg, size, n).await?;
    let setup_s = t0.elapsed().as_secs_f64();
    let cpu1 = server.cpu_ns()?;
    let rss_idle_kib = server.rss_kib()?;

    // Active phase: connection i sends at offset i/N of the period, every period.
    let period = duration.div_f64(per_conn as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (client, mut ch))| {
            let offset = period.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                for j in 0..per_conn {
                    tokio::time::sleep_until(start + offset + period * j as u32).await;
                    let m =
                        codec::encode(0, j, wirelab_core::clock::now_ns(), MsgKind::Echo, size)?;
                    let t = Instant::now();
                    let back = tokio::time::timeout(CONNECT_BOUND, ch.echo(m.clone()))
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!("an echo got no answer in {CONNECT_BOUND:?}")
                        })??;
                    if back != m {
                        bail!("an echo came back changed");
                    }
                    h.record(t.elapsed().as_nanos() as u64)?;
                }
                Ok::<_, anyhow::Error>((client, ch, h))
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut kept = Vec::with_capacity(n);
    let mut failed = None;
    let t_active = Instant::now();
    for t in tasks {
        match t.await.context("an echo task")? {
            Ok((client, ch, h)) => {
                latency.add(&h)?;
                kept.push((client, ch));
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    let elapsed = t_active.elapsed();
    let cpu2 = server.cpu_ns()?;
    let rss_active_kib = server.rss_kib()?;
    close_all::<C>(kept).await;
    close_all::<C>(warm_conns).await;
    if let Some(e) = failed {
        return Err(e.context("the active phase"));
    }
    Ok(Rep {
        messages: latency.len(),
        elapsed_s: elapsed.as_secs_f64(),
        payload_bytes: latency.len() * size as u64,
        latency: Some(HistData::from_histogram(&latency)),
        cost: Some(Cost {
            server_cpu_ns: Some(cpu2.saturating_sub(cpu1)),
            ..Cost::default()
        }),
        scale: Some(ScaleRep {
            connections: n as u64,
            setup_s,
            rss_base_kib,
            rss_idle_kib,
            rss_active_kib,
            setup_cpu_ns: cpu1.saturating_sub(cpu0),
        }),
        ..Rep::default()
    })
}

/// Opens `n` sessions of one stream each, `OPEN_AT_ONCE` at a time; each answers one echo.
async fn open_many<C: Client>(
    cfg: &ClientConfig,
    size: usize,
    n: usize,
) -> Result<Vec<(C, C::Channel)>> {
    let opened: Vec<_> = stream::iter(0..n)
        .map(|i| async move {
            tokio::time::timeout(CONNECT_BOUND, async {
                let mut c = C::connect(cfg).await?;
                let mut ch = c
                    .channels()
                    .pop()
                    .ok_or_else(|| anyhow::anyhow!("a session without a channel"))?;
                let m: Bytes = codec::encode(
                    0,
                    i as u64,
                    wirelab_core::clock::now_ns(),
                    MsgKind::Echo,
                    size,
                )?;
                if ch.echo(m.clone()).await? != m {
                    bail!("the first echo came back changed");
                }
                Ok((c, ch))
            })
            .await
            .map_err(|_| anyhow::anyhow!("a connection took over {CONNECT_BOUND:?} to open"))?
        })
        .buffer_unordered(OPEN_AT_ONCE)
        .collect()
        .await;
    let mut out = Vec::with_capacity(n);
    let mut first_error = None;
    for r in opened {
        match r {
            Ok(c) => out.push(c),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(e) = first_error {
        let opened = out.len();
        close_all::<C>(out).await;
        return Err(e.context(format!("{opened} of {n} connections opened")));
    }
    Ok(out)
}

async fn close_all<C: Client>(conns: Vec<(C, C::Channel)>) {
    stream::iter(conns)
        .for_each_concurrent(OPEN_AT_ONCE, |(c, ch)| async move {
            drop(ch);
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        })
        .await;
}

/// Raises the soft limit on open files to at least `need`, up to the hard limit.
fn raise_nofile(need: u64) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let cur = l.current.unwrap_or(u64::MAX);
    if cur >= need {
        return Ok(());
    }
    let max = l.maximum.unwrap_or(u64::MAX);
    if max < need {
        bail!(
            "the scale scenario needs {need} open files, and the hard limit is {max}: raise it \
             (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE in a service unit)"
        );
    }
    l.current = Some(need);
    setrlimit(Resource::Nofile, l).context("raising the open-file limit")?;
    Ok(())
}

/// `wirelab serve -t ID` in a child process.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(v: &Variant, cert: &Path, cpu: Option<usize>) -> Result<Self> {
        let exe = std::env::var_os("WIRELAB_EXE")
            .map(PathBuf::from)
            .map_or_else(std::env::current_exe, Ok)
            .context("finding the wirelab binary")?;
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "-t", v.id.as_str(), "--listen", "127.0.0.1:0"])
            // No connection may be closed as idle while it is being measured.
            .args(["--idle-timeout", "600s"])
            .arg("--cert-out")
            .arg(cert);
        if v.tls && !v.descriptor().tls.by_default() {
            cmd.arg("--tls");
        }
        if !v.tls && v.descriptor().tls.by_default() {
            cmd.arg("--h2c");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // A child inherits the CPUs of the thread that starts it: start it from a thread on
        // the server's CPU, not from this (client) one.
        let spawned = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if let Some(c) = cpu {
                        crate::topology::pin(c)
                            .with_context(|| format!("pinning the server to CPU {c}"))?;
                    }
                    cmd.spawn()
                        .with_context(|| format!("starting {} serve", exe.display()))
                })
                .join()
        });
        let mut child = spawned
            .map_err(|_| anyhow::anyhow!("the thread starting the server process panicked"))??;
        let stdout = child.stdout.take().expect("piped");
        // The first lines say where it listens, then "serving"; read them on a thread so the
        // wait is bounded.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut addr = None;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(a) = listen_addr(&line) {
                    addr = Some(a);
                }
                if line.starts_with("serving") {
                    let _ = tx.send(addr);
                    break;
                }
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let addr = match rx.recv_timeout(CHILD_BOUND) {
            Ok(Some(a)) => a,
            Ok(None) => {
                let _ = child.kill();
                bail!("the server process did not say where it listens");
            }
            Err(_) => {
                let _ = child.kill();
                bail!("the server process was not serving within {CHILD_BOUND:?}");
            }
        };
        Ok(Self { child, addr })
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the server's /proc/PID/status")?;
        parse_vm_rss(&status).context("no VmRSS in the server's /proc/PID/status")
    }

    /// The server's CPU time, ns: the sum of its threads' `schedstat` (nanoseconds, where
    /// `/proc/PID/stat` counts 10 ms ticks); a thread that has exited takes its time with it,
    /// and the server's runtime threads live as long as it does.
    fn cpu_ns(&self) -> Result<u64> {
        let dir = format!("/proc/{}/task", self.child.id());
        let mut sum = 0;
        for t in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = t?.path().join("schedstat");
            // A thread may exit between the listing and the read.
            if let Ok(text) = std::fs::read_to_string(&path) {
                sum += parse_schedstat_ns(&text).context("unreadable schedstat")?;
            }
        }
        Ok(sum)
    }

    /// SIGTERM, then a bounded wait; a server that does not stop is killed and reported.
    fn stop(mut self) -> Result<()> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).context("child pid")?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server process exited with {status}");
                }
                return Ok(());
            }
            if t0.elapsed() > CHILD_BOUND {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server process did not stop within {CHILD_BOUND:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a `serve` line such as `ws    listening on ws://127.0.0.1:7701/ws`.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split_once(" listening on ")?.1;
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let end = rest.find(['/', ' ']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `VmRSS` in KiB from `/proc/PID/status` text.
fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Time on CPU, ns: the first field of a `schedstat` file.
fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serve_line_and_proc_files() {
        assert_eq!(
            listen_addr("ws    listening on ws://127.0.0.1:7701/ws"),
            Some("127.0.0.1:7701".parse().unwrap())
        );
        assert_eq!(
            listen_addr("h2    listening on http://127.0.0.1:40000 (cleartext: no TLS mode)"),
            Some("127.0.0.1:40000".parse().unwrap())
        );
        assert_eq!(
            listen_addr("quic  listening on quic://[::1]:9"),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(listen_addr("serving; Ctrl-C or SIGTERM to stop"), None);
        let status = "Name:\twirelab\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_schedstat_ns("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
    }
}
