//! Runs scenarios against transport variants on loopback and writes the results.
//!
//! For each variant one server runs on the server runtime (its own threads, so CPU time can
//! be split); for each scenario the client first runs unmeasured warm-up repetitions, then the
//! measured ones, each on a fresh session. Transports run one at a time, never two at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use tokio::runtime::Handle;
use wirelab_core::tls::{self, Identity, Trust};
use wirelab_core::wire::WireCounters;
use wirelab_core::{CancellationToken, ClientConfig, ServerConfig};

use crate::driver::{self, Experiment, Repetition};
use crate::env::Env;
use crate::probe::Probe;
use crate::results::{self, Rep, ResultFile, Step, VariantInfo};
use crate::scenario::{Kind, Scenario};
use crate::stats::HistData;
use crate::transports::{self, Variant};
use crate::with_client;
use crate::workload::{self, Schedule};

/// Send lateness above which the open-loop generator says it could not keep its rate.
pub const LATENESS_BUDGET: Duration = Duration::from_millis(1);

/// [`LATENESS_BUDGET`] for datagram echo, which is paced by tokio's timer (1 ms resolution):
/// a datagram sent up to 2 ms late still leaves the rate kept.
pub const DATAGRAM_LATENESS_BUDGET: Duration = Duration::from_millis(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Transport variants, in order.
    pub variants: Vec<Variant>,
    /// Measured repetitions per scenario and variant.
    pub reps: u32,
    /// Unmeasured repetitions first.
    pub warmup_reps: u32,
    /// Where the results go.
    pub out: PathBuf,
}

/// Where servers run.
#[derive(Debug, Clone)]
pub struct Servers {
    /// The runtime servers are spawned on.
    pub handle: Handle,
    /// Whether that runtime's threads are named [`crate::probe::SERVER_THREAD`] and serve
    /// nothing else, so CPU time can be split between server and client.
    pub separate: bool,
    /// The address servers listen on: 127.0.0.1, or the link emulator's server address.
    pub listen: std::net::IpAddr,
    /// The link emulator the client reaches the servers through (the in-process TUN link, or
    /// the lab's router), and its settings.
    pub link: Option<(Arc<dyn wirelab_link::LinkControl>, wirelab_link::LinkSpec)>,
    /// The lab's router, when the link is one (its sides and settings, for the record).
    pub router: Option<Arc<wirelab_link::router::RouterInfo>>,
    /// A remote server (the `remote` placement): its transports are measured instead of
    /// local ones, and its CPU time is read from its control endpoint.
    pub remote: Option<Arc<crate::control::Remote>>,
    /// Where the client and server threads run.
    pub cpus: crate::topology::Pinning,
    /// The QUIC congestion controller of local servers and of every client (`--quic-cc`).
    pub quic_cc: wirelab_core::QuicCongestion,
    /// quic, h3 and wt: one qlog file per connection of local servers and of every client,
    /// in this directory (`wirelab hol --qlog-dir`).
    pub qlog_dir: Option<std::path::PathBuf>,
}

impl Servers {
    /// Where the measurements run, as results record it.
    pub fn placement(&self) -> results::Placement {
        // A remote server (or the lab's) runs its own controller: only the client's is ours.
        let quic_cc = match self.remote {
            Some(_) => format!("client side: {}", self.quic_cc.name()),
            None => self.quic_cc.name().to_string(),
        };
        let p = match (&self.remote, &self.link) {
            (Some(r), Some(_)) if self.router.is_some() => results::Placement {
                kind: "lab".into(),
                server: Some(r.control.to_string()),
                clock: if r.clock_shared { "shared" } else { "separate" }.into(),
                server_env: Some(r.info.env.clone()),
                // The server runs in its own container: only the client's placement is ours.
                cpu: format!("client side: {}", self.cpus.describe()),
                ..results::Placement::default()
            },
            (Some(r), _) => results::Placement {
                kind: "remote".into(),
                server: Some(r.control.to_string()),
                clock: if r.clock_shared { "shared" } else { "separate" }.into(),
                server_env: Some(r.info.env.clone()),
                // The server's threads are on another host (or namespace): only the client's
                // placement is ours.
                cpu: format!("client side: {}", self.cpus.describe()),
                ..results::Placement::default()
            },
            (None, Some(_)) => results::Placement {
                kind: "link".into(),
                cpu: self.cpus.describe(),
                ..results::Placement::default()
            },
            (None, None) => results::Placement {
                cpu: self.cpus.describe(),
                ..results::Placement::default()
            },
        };
        results::Placement { quic_cc, ..p }
    }
}

/// Whether a scenario applies to a variant (0-RTT needs QUIC, datagram echo datagrams; fan-out
/// needs a transport that pushes, and subscribers as streams of one connection need one that
/// multiplexes).
pub fn applies(s: &Scenario, v: &Variant) -> bool {
    match s.kind {
        Kind::Setup => !s.zero_rtt || transports::has_zero_rtt(v.id),
        Kind::Datagram => v.descriptor().datagrams,
        Kind::Fanout => {
            crate::fanout::can_push(v)
                && (s.sharing == crate::scenario::SharingName::Pool
                    || crate::fanout::multiplexes(v.id))
        }
        _ => true,
    }
}

/// How many repetitions a plan runs in all (for progress bars).
pub fn total_reps(plan: &Plan) -> u64 {
    let pairs = plan
        .variants
        .iter()
        .flat_map(|v| plan.scenarios.iter().filter(move |s| applies(s, v)))
        .count() as u64;
    pairs * u64::from(plan.reps + plan.warmup_reps)
}

pub use crate::driver::Failure;

/// A self-signed identity for the servers and the trust a client needs for it.
#[derive(Debug)]
pub struct Certs {
    ident: Identity,
    trust: Trust,
}

impl Certs {
    /// Valid for `localhost`, 127.0.0.1 and the link emulator's server address.
    pub fn new() -> Result<Self> {
        let ident = Identity::self_signed(&["localhost", "127.0.0.1", "192.0.2.2"])?;
        let trust = Trust::Certificates(vec![ident.certificate()]);
        Ok(Self { ident, trust })
    }
}

/// One variant's server, running, and the TLS config its clients use.
#[derive(Debug)]
pub struct VariantServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Client TLS config (ALPN of the transport), or `None` for cleartext.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// The TLS server name clients use.
    pub server_name: String,
    /// A local server's broadcast hub (its counters go into fan-out results).
    pub fanout: Option<wirelab_core::fanout::Hub>,
    /// The QUIC congestion controller its clients use (`Servers::quic_cc`).
    pub quic_cc: wirelab_core::QuicCongestion,
    /// Where its clients write qlog files (`Servers::qlog_dir`).
    pub qlog_dir: Option<std::path::PathBuf>,
    /// A local server's shutdown and task (none for a remote one).
    local: Option<(
        CancellationToken,
        tokio::task::JoinHandle<wirelab_core::Result<()>>,
    )>,
}

impl VariantServer {
    /// Starts `v`'s server on `servers`, listening on `servers.listen`.
    pub async fn start(v: &Variant, certs: &Certs, servers: &Servers) -> Result<Self> {
        if let Some(r) = &servers.remote {
            let addr = r
                .addr_of(v)
                .with_context(|| format!("the remote server does not serve {}", v.label()))?;
            let client_tls = if v.tls {
                Some(tls::client_config(&r.trust, &[transports::alpn(v.id)])?)
            } else {
                None
            };
            return Ok(Self {
                addr,
                client_tls,
                server_name: r.server_name.clone(),
                fanout: None,
                quic_cc: servers.quic_cc,
                qlog_dir: servers.qlog_dir.clone(),
                local: None,
            });
        }
        let mut scfg = ServerConfig::new(SocketAddr::new(servers.listen, 0));
        scfg.quic.congestion = servers.quic_cc;
        scfg.qlog_dir = servers.qlog_dir.clone();
        let mut client_tls = None;
        if v.tls {
            let alpn = [transports::alpn(v.id)];
            scfg.tls = Some(certs.ident.server_config(&alpn)?);
            client_tls = Some(tls::client_config(&certs.trust, &alpn)?);
        }
        let shutdown = CancellationToken::new();
        let fanout = Some(scfg.fanout.clone());
        let (addr, task) =
            transports::start_server(v.id, scfg, shutdown.clone(), &servers.handle).await?;
        Ok(Self {
            addr,
            client_tls,
            server_name: ClientConfig::new(addr).server_name,
            fanout,
            quic_cc: servers.quic_cc,
            qlog_dir: servers.qlog_dir.clone(),
            local: Some((shutdown, task)),
        })
    }

    /// A client config for it.
    pub fn client(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.addr);
        cfg.tls = self.client_tls.clone();
        cfg.server_name = self.server_name.clone();
        cfg.quic.congestion = self.quic_cc;
        cfg.qlog_dir = self.qlog_dir.clone();
        cfg
    }

    /// Stops a local server and starts a fresh one of `v` on the same address: what a
    /// server process restart leaves (no state of the old one; a new resume epoch).
    pub async fn restart(&mut self, v: &Variant, certs: &Certs, servers: &Servers) -> Result<()> {
        let Some((shutdown, task)) = self.local.take() else {
            bail!("only a server in this process can be restarted");
        };
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        // A QUIC endpoint keeps its UDP socket until its connections have drained (a few
        // PTOs after the close), as a restarted process would find it: bind again as soon as
        // the port is free, for at most 10 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (addr, task, shutdown) = loop {
            let mut scfg = ServerConfig::new(self.addr);
            scfg.quic.congestion = servers.quic_cc;
            scfg.qlog_dir = servers.qlog_dir.clone();
            if v.tls {
                scfg.tls = Some(certs.ident.server_config(&[transports::alpn(v.id)])?);
            }
            let shutdown = CancellationToken::new();
            self.fanout = Some(scfg.fanout.clone());
            match transports::start_server(v.id, scfg, shutdown.clone(), &servers.handle).await {
                Ok((addr, task)) => break (addr, task, shutdown),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("restart: {e:#}; binding again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("binding the restarted server"),
            }
        };
        if addr != self.addr {
            bail!("the restarted server listens on {addr}, not {}", self.addr);
        }
        self.local = Some((shutdown, task));
        Ok(())
    }

    /// Shuts a local server down, waiting up to 10 s (a remote one keeps serving).
    pub async fn stop(self) {
        if let Some((shutdown, task)) = self.local {
            shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// `wirelab run` on the driver: rows are transport variants, cases are scenarios.
struct RunExperiment<'a> {
    plan: &'a Plan,
    servers: &'a Servers,
    env: Env,
    /// Scale scenarios serve from a child process on this host's loopback, which the client
    /// namespace of an emulated link cannot reach and a remote server is not.
    loopback_only_left_out: bool,
}

impl Experiment for RunExperiment<'_> {
    type Row = Variant;
    type Case = Scenario;
    type Rep = Rep;
    type Result = ResultFile;

    fn rows(&self) -> &[Variant] {
        &self.plan.variants
    }

    fn variant<'a>(&self, row: &'a Variant) -> &'a Variant {
        row
    }

    fn row_label(&self, row: &Variant) -> String {
        row.label()
    }

    fn cases(&self, v: &Variant) -> Vec<&Scenario> {
        self.plan
            .scenarios
            .iter()
            .filter(|s| applies(s, v) && !(self.loopback_only_left_out && s.kind == Kind::Scale))
            .collect()
    }

    fn case_name(&self, s: &Scenario) -> String {
        s.name.clone()
    }

    fn repetitions(&self) -> (u32, u32) {
        (self.plan.warmup_reps, self.plan.reps)
    }

    fn out(&self) -> &std::path::Path {
        &self.plan.out
    }

    async fn one(&self, r: Repetition<'_, Variant, Scenario>) -> Result<Rep> {
        let (s, v) = (r.case, r.row);
        if r.index == 0 {
            if let Some((l, spec)) = &self.servers.link {
                // Counters restart, and every variant meets the same losses.
                l.configure(spec.config())?;
            }
        }
        let mut cfg = r.server.client();
        cfg.mode = v.mode;
        if s.kind == Kind::Scale {
            let server_cpu = self.servers.cpus.on.map(|(_, server)| server);
            return crate::scale::one_rep(s, v, server_cpu).await;
        }
        if s.kind == Kind::Fanout {
            return crate::fanout::one_rep(s, v, cfg, r.server.fanout.as_ref()).await;
        }
        let probe = Probe {
            wire: None,
            cpu: self.servers.separate,
            remote: self.servers.remote.clone(),
        };
        one_rep(s, v, cfg, probe).await
    }

    fn note(&self, rep: &Rep) -> Option<String> {
        rep.behind.clone()
    }

    fn finish(
        &self,
        v: &Variant,
        s: &Scenario,
        reps: Vec<Rep>,
        mut notes: Vec<String>,
    ) -> Result<ResultFile> {
        if let Some((l, _)) = &self.servers.link {
            if let Some(why) = l.stats()?.invalid() {
                notes.push(format!(
                    "{}the link emulator fell behind: {why}",
                    crate::results::INVALID_NOTE
                ));
            }
        }
        Ok(ResultFile {
            link: self.servers.link.as_ref().map(|(_, s)| s.to_string()),
            placement: self.servers.placement(),
            schema: results::SCHEMA.into(),
            scenario: s.clone(),
            variant: VariantInfo {
                label: v.label(),
                slug: v.slug(),
                transport: v.id.to_string(),
                tls: v.tls,
                mode: transports::mode_name(v.mode).into(),
                floor: v.floor().map(|f| f.to_string()),
            },
            env: self.env.clone(),
            warmup_reps: self.plan.warmup_reps,
            summary: results::summarize(&reps),
            reps,
            notes,
        })
    }
}

/// Runs the plan on the driver; writes `out/<scenario>/<variant>.json` as each finishes. A
/// failed measurement does not stop the others: it is returned with the results.
pub async fn execute(
    plan: &Plan,
    servers: &Servers,
    pb: &ProgressBar,
) -> Result<(Vec<ResultFile>, Vec<Failure>)> {
    let loopback_only_left_out = servers.link.is_some() || servers.remote.is_some();
    if loopback_only_left_out && plan.scenarios.iter().any(|s| s.kind == Kind::Scale) {
        let note = "note: scale scenarios run on loopback only; left out over --link and --server";
        if pb.is_hidden() {
            eprintln!("{note}");
        } else {
            pb.println(note);
        }
    }
    let e = RunExperiment {
        plan,
        servers,
        env: Env::capture(),
        loopback_only_left_out,
    };
    driver::execute(&e, servers, pb).await
}

/// One repetition of `s` on a fresh session.
async fn one_rep(s: &Scenario, v: &Variant, mut cfg: ClientConfig, probe: Probe) -> Result<Rep> {
    let wire = WireCounters::new();
    let probe = Probe {
        wire: Some(wire.clone()),
        ..probe
    };
    cfg.wire = Some(wire);
    cfg.streams = s.streams;
    cfg.sharing = s.sharing.into();
    let size = s.size_bytes();
    let id = v.id;
    match s.kind {
        Kind::Echo => {
            let per_stream = (s.messages / u64::from(s.streams)).max(1);
            let warmup = (per_stream / 10).max(10);
            let r = with_client!(id, C => workload::closed_loop::<C>(&cfg, size, warmup, per_stream, Some(&probe)).await)?;
            Ok(Rep {
                messages: r.rtt.len(),
                elapsed_s: r.elapsed.as_secs_f64(),
                payload_bytes: r.rtt.len() * size as u64,
                latency: Some(HistData::from_histogram(&r.rtt)),
                cost: r.cost,
                ..Rep::default()
            })
        }
        Kind::Open => {
            let sched = Schedule {
                rate: s.rate,
                duration: Duration::from_millis(s.duration_ms),
                size,
                lateness_budget: LATENESS_BUDGET,
            };
            let r =
                with_client!(id, C => workload::open_loop::<C>(&cfg, sched, Some(&probe)).await)?;
            Ok(Rep {
                messages: r.messages,
                elapsed_s: r.elapsed.as_secs_f64(),
                payload_bytes: r.messages * size as u64,
                latency: Some(HistData::from_histogram(&r.corrected)),
                service: Some(HistData::from_histogram(&r.service)),
                lateness: Some(HistData::from_histogram(&r.lateness)),
                offered_per_s: Some(s.rate),
                behind: r.behind,
                cost: r.cost,
                ..Rep::default()
            })
        }
        Kind::Saturate => saturate(s, id, &cfg).await,
        Kind::Setup => {
            cfg.streams = 1;
            cfg.zero_rtt = s.zero_rtt;
            // Setup opens sessions back to back: a fresh ticket store per repetition, so
            // every repetition primes and resumes the same way.
            if s.zero_rtt {
                if let Some(t) = &cfg.tls {
                    let mut fresh = (**t).clone();
                    fresh.resumption = rustls_resumption();
                    cfg.tls = Some(Arc::new(fresh));
                }
            }
            cfg.wire = None;
            let n = u32::try_from(s.messages).context("setup count")?;
            let h = with_client!(id, C => workload::setup_many::<C>(&cfg, size, n).await)?;
            Ok(Rep {
                messages: h.len(),
                latency: Some(HistData::from_histogram(&h)),
                ..Rep::default()
            })
        }
        Kind::Scale => unreachable!("scale runs its own server process (see `Run::rep`)"),
        Kind::Datagram => {
            cfg.streams = 1;
            let sched = Schedule {
                rate: s.rate,
                duration: Duration::from_millis(s.duration_ms),
                size,
                // Paced by tokio's timer, whose resolution is 1 ms.
                lateness_budget: DATAGRAM_LATENESS_BUDGET,
            };
            let r = workload::datagram_echo(v.id, &cfg, sched, Some(&probe)).await?;
            Ok(Rep {
                messages: r.tally.received,
                elapsed_s: r.elapsed.as_secs_f64(),
                payload_bytes: r.tally.received * size as u64,
                latency: Some(HistData::from_histogram(&r.rtt)),
                cost: r.cost,
                datagrams: Some(crate::results::DatagramRep {
                    sent: r.tally.sent,
                    received: r.tally.received,
                    reordered: r.tally.reordered,
                    duplicates: r.tally.duplicates,
                }),
                behind: r.behind,
                ..Rep::default()
            })
        }
        Kind::Fanout => crate::fanout::one_rep(s, v, cfg, None).await,
        Kind::Stream => {
            let n = u32::try_from(s.messages).context("stream message count")?;
            let r = with_client!(id, C => workload::stream_goodput::<C>(&cfg, size, n, Some(&probe)).await)?;
            Ok(Rep {
                messages: r.messages,
                elapsed_s: r.elapsed.as_secs_f64(),
                payload_bytes: r.bytes,
                cost: r.cost,
                stream_done_s: if r.per_stream.len() > 1 {
                    r.per_stream.iter().map(Duration::as_secs_f64).collect()
                } else {
                    Vec::new()
                },
                ..Rep::default()
            })
        }
    }
}

fn rustls_resumption() -> rustls::client::Resumption {
    rustls::client::Resumption::in_memory_sessions(256)
}

/// Saturation search: open-loop steps at doubling rates from the scenario's rate until one is
/// not sustained, then three bisection steps between the last sustained and the first failed
/// rate. A step is sustained when every scheduled message was sent and answered and the 99th
/// percentile latency from the intended send time stayed within the objective. The generator's
/// own lateness is part of that latency, so its budget here is the objective itself: an
/// overloaded pair shows as a queue that grows for the whole step, far above the objective,
/// while a few-millisecond scheduler hiccup of the VM does not fail a step.
async fn saturate(s: &Scenario, id: wirelab_core::TransportId, cfg: &ClientConfig) -> Result<Rep> {
    /// The search stops here (4000 × 2^8); a pair that sustains it is reported at the ceiling.
    const MAX_RATE: f64 = 1_024_000.0;
    let size = s.size_bytes();
    let slo_us = s.slo_ms * 1000.0;
    let mut steps: Vec<Step> = Vec::new();
    let step = |rate: f64| {
        let cfg = cfg.clone();
        async move {
            let sched = Schedule {
                rate,
                duration: Duration::from_millis(s.duration_ms),
                size,
                lateness_budget: Duration::from_secs_f64(s.slo_ms / 1000.0),
            };
            let r = match with_client!(id, C => workload::open_loop::<C>(&cfg, sched, None).await) {
                Ok(r) => r,
                // Overload that breaks the session is not sustained; the step says why.
                Err(e) => {
                    return anyhow::Ok(Step {
                        rate,
                        p99_us: None,
                        sustained: false,
                        why: Some(format!("the session failed: {e:#}")),
                    })
                }
            };
            let p99_us = crate::stats::summarize(&r.corrected).p99_us;
            let why = r.behind.or_else(|| {
                (p99_us > slo_us)
                    .then(|| format!("p99 {p99_us:.0} us over the {slo_us:.0} us objective"))
            });
            anyhow::Ok(Step {
                rate,
                p99_us: Some(p99_us),
                sustained: why.is_none(),
                why,
            })
        }
    };
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut rate = s.rate;
    while rate <= MAX_RATE {
        let st = step(rate).await?;
        let ok = st.sustained;
        steps.push(st);
        if ok {
            good = Some(rate);
            rate *= 2.0;
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let Some(b) = bad {
        let mut lo = good.unwrap_or(0.0);
        let mut hi = b;
        for _ in 0..3 {
            let mid = ((lo + hi) / 2.0).round();
            if mid <= lo || mid >= hi {
                break;
            }
            let st = step(mid).await?;
            if st.sustained {
                lo = mid;
                good = Some(mid);
            } else {
                hi = mid;
            }
            steps.push(st);
        }
    }
    let behind = match bad {
        None => Some(format!(
            "sustained the search's ceiling of {MAX_RATE} msg/s: the figure is a lower bound"
        )),
        Some(_) => steps
            .iter()
            .rev()
            .find_map(|s| s.why.as_ref().filter(|w| w.contains("session failed")))
            .map(|w| format!("saturation: {w}")),
    };
    Ok(Rep {
        sustained_per_s: Some(good.unwrap_or(0.0)),
        steps,
        behind,
        ..Rep::default()
    })
}
