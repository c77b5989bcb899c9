//! `wirelab link check` and `wirelab hol`: the link emulator from the command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wirelab::hol::{self, HolPlan};
use wirelab::runner::Servers;
use wirelab_link::check::{self, burst_tolerance, loss_tolerance};
use wirelab_link::router::{RouterInfo, WireStats};
use wirelab_link::{
    Link, LinkConfig, LinkControl, LinkOptions, LinkSpec, LossModel, Router, RouterClient,
    RouterOptions,
};

/// Options shared by everything that starts a link.
#[derive(Debug, Args, Clone)]
pub(crate) struct LinkSetup {
    /// TCP congestion control to set in both namespaces (see
    /// /proc/sys/net/ipv4/tcp_available_congestion_control).
    #[arg(long, default_value = "cubic")]
    pub(crate) cc: String,
    /// Leave the forwarder at normal priority instead of SCHED_FIFO 50.
    #[arg(long)]
    pub(crate) no_realtime: bool,
}

impl LinkSetup {
    pub(crate) fn start(&self, cfg: LinkConfig) -> Result<Link> {
        let opts = LinkOptions {
            congestion_control: self.cc.clone(),
            rt_priority: (!self.no_realtime).then_some(50),
        };
        let link = Link::start(&opts, cfg)?;
        let i = link.info();
        eprintln!(
            "link up: {} (192.0.2.1) ⇄ forwarder ⇄ {} (192.0.2.2), congestion control {} / {}, forwarder {}",
            i.client_dev,
            i.server_dev,
            i.congestion_control.0,
            i.congestion_control.1,
            match &i.realtime {
                Ok(p) => format!("SCHED_FIFO {p}"),
                Err(why) => format!("at normal priority ({why})"),
            }
        );
        Ok(link)
    }
}

/// `wirelab link ...`
#[derive(Debug, Args)]
pub(crate) struct LinkArgs {
    #[command(subcommand)]
    cmd: LinkCmd,
}

#[derive(Debug, Subcommand)]
enum LinkCmd {
    /// Measure the emulator on this machine: RTT for 2 x 20 ms, 1% random loss, bursty loss,
    /// TCP goodput under rate limits; prints each against its setting. Needs root.
    Check(CheckArgs),
    /// The docker compose lab's router: forwards IPv4 between the interfaces on two subnets
    /// through the link emulator's models (kernel forwarding must be off). Needs
    /// CAP_NET_RAW and CAP_NET_ADMIN. Runs until SIGTERM or SIGINT, then prints its counters
    /// as JSON (and writes them to --stats-out).
    Router(RouterArgs),
    /// Print a lab router's sides, settings and counters (since its last configuration) as
    /// JSON, with its verdict (`invalid`: why it fell behind, or null).
    RouterStats(RouterStatsArgs),
    /// The server half of `wirelab link check --router --peer` (UDP echo, UDP receiver, TCP
    /// receiver), for the lab's server container.
    Peer(PeerArgs),
}

#[derive(Debug, Args)]
struct RouterArgs {
    /// The client side's subnet: the interface with an address in it is used.
    #[arg(long, default_value = "198.18.0.0/24")]
    client_net: String,
    /// The server side's subnet.
    #[arg(long, default_value = "198.19.0.0/24")]
    server_net: String,
    /// The link until a harness configures another (keys as for `wirelab run --link`).
    #[arg(long, default_value = "rtt=0ms")]
    link: String,
    /// The control endpoint (TCP, JSON lines) the harness configures and reads the router
    /// through.
    #[arg(long, default_value = "0.0.0.0:7798")]
    control: std::net::SocketAddr,
    /// Also write the final counters to this file.
    #[arg(long)]
    stats_out: Option<PathBuf>,
    /// Leave the forwarder at normal priority instead of trying SCHED_FIFO 50 (which a
    /// container only gets with a real-time budget: compose `cpu_rt_runtime`).
    #[arg(long)]
    no_realtime: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    setup: LinkSetup,
    /// Rates for the TCP goodput check, Mbit/s (comma-separated). The highest rate whose
    /// goodput stays >= 95% of ideal with release lateness p99 <= 1 ms is the emulator's
    /// faithful limit on this machine.
    #[arg(long, value_delimiter = ',', default_values_t = [200u64, 500])]
    rates: Vec<u64>,
    /// Fewer packets and shorter transfers (about 15 s instead of 30 s).
    #[arg(long)]
    quick: bool,
    /// Check the lab's router instead of an in-process link: its control endpoint, HOST or
    /// HOST:PORT (port 7798 by default). Needs --peer; no root needed.
    #[arg(long, value_name = "HOST[:PORT]", requires = "peer")]
    router: Option<String>,
    /// With --router: `wirelab link peer` on the server side, HOST or HOST:PORT (port 7790
    /// by default), which runs the server half of each probe.
    #[arg(long, value_name = "HOST[:PORT]", requires = "router")]
    peer: Option<String>,
}

#[derive(Debug, Args)]
struct RouterStatsArgs {
    /// The router's control endpoint, HOST or HOST:PORT (port 7798 by default).
    router: String,
}

#[derive(Debug, Args)]
struct PeerArgs {
    /// Where to listen for probe requests.
    #[arg(long, default_value = "0.0.0.0:7790")]
    listen: std::net::SocketAddr,
}

pub(crate) fn link(a: LinkArgs) -> Result<()> {
    match a.cmd {
        LinkCmd::Check(c) => link_check(c),
        LinkCmd::Router(r) => router(r),
        LinkCmd::RouterStats(r) => {
            let c = RouterClient::connect(&r.router)
                .with_context(|| format!("the lab router at {}", r.router))?;
            let out = serde_json::json!({
                "router": c.info()?,
                "stats": c.wire_stats()?.summary(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        LinkCmd::Peer(p) => {
            let l = std::net::TcpListener::bind(p.listen)
                .with_context(|| format!("binding {}", p.listen))?;
            eprintln!("peer: serving probe requests on {}", p.listen);
            Ok(check::peer(l)?)
        }
    }
}

fn router(a: RouterArgs) -> Result<()> {
    let spec: LinkSpec = a
        .link
        .parse()
        .map_err(|e| anyhow::anyhow!("--link {}: {e}", a.link))?;
    let opts = RouterOptions {
        client: a.client_net.parse().map_err(anyhow::Error::msg)?,
        server: a.server_net.parse().map_err(anyhow::Error::msg)?,
        rt_priority: (!a.no_realtime).then_some(50),
    };
    // Block the stop signals before any thread starts, so they all inherit the mask and the
    // main thread takes them with sigwait.
    let sigs = wirelab_link::router::StopSignals::block()?;
    let router = Arc::new(Router::start(&opts, spec.config())?);
    let listener = std::net::TcpListener::bind(a.control)
        .with_context(|| format!("binding the control endpoint {}", a.control))?;
    router.serve_control(listener);
    eprintln!(
        "router: {} {} ({}) ⇄ forwarder ⇄ {} {} ({}), link {spec}, control on {}, {}",
        router.client.name,
        router.client.addr,
        opts.client,
        router.server.name,
        router.server.addr,
        opts.server,
        a.control,
        router.info().realtime
    );
    let sig = sigs.wait()?;
    let stats = router.stats()?;
    let out = serde_json::json!({
        "router": router.info(),
        "link": spec.to_string(),
        "signal": sig,
        "stats": WireStats::from(&stats).summary(),
    });
    let text = serde_json::to_string_pretty(&out)?;
    println!("{text}");
    if let Some(p) = &a.stats_out {
        std::fs::write(p, format!("{text}\n"))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Connects to the lab's router at `addr`, puts `spec` on it, and returns it as the link.
pub(crate) fn connect_router(
    addr: &str,
    spec: &LinkSpec,
    servers: &Servers,
) -> Result<(Arc<dyn LinkControl>, Arc<RouterInfo>)> {
    let mut r = RouterClient::connect(addr).with_context(|| format!("the lab router at {addr}"))?;
    if let Some(remote) = &servers.remote {
        r = r.with_server_cc(remote.info.env.tcp_congestion_control.clone());
    }
    r.configure(spec.config())?;
    let info = r.info()?;
    eprintln!(
        "lab router at {addr}: {} {} ⇄ {} {}, link {spec}, forwarder at {}",
        info.client.interface,
        info.client.address,
        info.server.interface,
        info.server.address,
        info.realtime
    );
    Ok((Arc::new(r), Arc::new(info)))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn link_check(a: CheckArgs) -> Result<()> {
    if a.rates.contains(&0) {
        bail!("--rates: a rate must be above 0 Mbit/s");
    }
    let start: LinkConfig = "rtt=40ms"
        .parse::<LinkSpec>()
        .map_err(anyhow::Error::msg)?
        .config();
    match (&a.router, &a.peer) {
        (Some(router), Some(peer)) => {
            let router = RouterClient::connect(router)
                .with_context(|| format!("the lab router at {router}"))?;
            let with_port = if peer.contains(':') {
                peer.clone()
            } else {
                format!("{peer}:7790")
            };
            let peer = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
                .with_context(|| format!("resolving {with_port}"))?
                .next()
                .with_context(|| format!("{with_port} resolves to nothing"))?;
            router.configure(start)?;
            let info = router.info()?;
            eprintln!(
                "lab router: {} {} ⇄ {} {}; peer {peer}",
                info.client.interface,
                info.client.address,
                info.server.interface,
                info.server.address
            );
            check_on(&check::LabSides { router, peer }, &a)
        }
        _ => check_on(&a.setup.start(start)?, &a),
    }
}

/// Attempts a check gets when the emulator marks its runs invalid (it fell behind).
const INVALID_ATTEMPTS: usize = 3;

fn check_on<S: check::Sides>(link: &S, a: &CheckArgs) -> Result<()> {
    let spec = |s: &str| -> Result<LinkConfig> {
        Ok(s.parse::<LinkSpec>().map_err(anyhow::Error::msg)?.config())
    };
    let link_ctl = link.control();
    let mut failed = 0;
    println!("| check | setting | measured | accepted | verdict |\n|---|---|---|---|---|");

    // The emulator's job is the delay it adds; the path under it (veths, a router container's
    // forwarding, scheduling on a busy host) adds a base of its own, which is measured first
    // with no delay configured and judged apart from it. Medians, so one scheduling hiccup on
    // a shared VM does not decide the verdict; the mean and p99 are shown beside them.
    let pings = if a.quick { 100 } else { 200 };
    link_ctl.configure(LinkConfig::default())?;
    let base = check::rtt(link, pings, Duration::from_millis(20))?;
    // As for goodput below: a run the emulator marks invalid is run again.
    let mut attempts = 0;
    let (r, st) = loop {
        attempts += 1;
        link_ctl.configure(spec("rtt=40ms")?)?;
        let r = check::rtt(link, pings, Duration::from_millis(20))?;
        let st = link_ctl.stats()?;
        if st.invalid().is_none() || attempts == INVALID_ATTEMPTS {
            break (r, st);
        }
    };
    let added = r.quantile_ms(0.5) - base.quantile_ms(0.5);
    let ok = (added - 40.0).abs() <= 0.5
        && base.unanswered == 0
        && r.unanswered == 0
        && st.invalid().is_none();
    failed += usize::from(!ok);
    println!(
        "| RTT (UDP ping) | 2 x 20 ms | added {added:.3} ms: p50 {:.3} ms (mean {:.3}, p99 {:.3}) over a base path of p50 {:.3} ms (mean {:.3}, p99 {:.3}); {} unanswered{}{} | added 40 ± 0.5 ms | {} |",
        r.quantile_ms(0.5),
        r.mean_ms(),
        r.quantile_ms(0.99),
        base.quantile_ms(0.5),
        base.mean_ms(),
        base.quantile_ms(0.99),
        r.unanswered + base.unanswered,
        if attempts > 1 {
            format!("; attempt {attempts} of {INVALID_ATTEMPTS}")
        } else {
            String::new()
        },
        st.invalid().map(|w| format!("; invalid: {w}")).unwrap_or_default(),
        verdict(ok)
    );

    let n = if a.quick { 20_000 } else { 50_000 };
    link_ctl.configure(spec("loss=1%,seed=11")?)?;
    let r = check::udp_loss(link, n, 10_000, 200)?;
    let tol = loss_tolerance(0.01, u64::from(n), 0.0);
    let ok = (r.tally.rate() - 0.01).abs() <= tol
        && r.tally.lost == r.stats.forwarder.up.counters.lost
        && r.stats.invalid().is_none();
    failed += usize::from(!ok);
    println!(
        "| random loss | 1% | {:.3}% ({} of {}) | ± {:.3}% (3 s.e.) | {} |",
        r.tally.rate() * 100.0,
        r.tally.lost,
        r.tally.sent,
        tol * 100.0,
        verdict(ok)
    );

    let (p, rr) = (0.005, 0.25);
    let mut cfg = LinkConfig::default();
    cfg.up.loss = LossModel::GilbertElliott {
        p,
        r: rr,
        loss_good: 0.0,
        loss_bad: 1.0,
    };
    cfg.up.seed = 5;
    link_ctl.configure(cfg)?;
    let r = check::udp_loss(link, n * 2, 20_000, 200)?;
    let btol = burst_tolerance(rr, r.tally.bursts);
    let ok = (r.tally.mean_burst() - 1.0 / rr).abs() <= btol && r.stats.invalid().is_none();
    failed += usize::from(!ok);
    println!(
        "| bursty loss (Gilbert-Elliott p=0.005 r=0.25) | mean burst 4, loss 1.96% | burst {:.2} over {} bursts, loss {:.2}% | burst ± {:.2} | {} |",
        r.tally.mean_burst(),
        r.tally.bursts,
        r.tally.rate() * 100.0,
        btol,
        verdict(ok)
    );

    let (warm, measure) = if a.quick {
        (Duration::from_secs(1), Duration::from_secs(2))
    } else {
        (Duration::from_millis(1500), Duration::from_secs(4))
    };
    for &rate in &a.rates {
        // A run the emulator marks invalid (it fell behind: on a shared VM, usually another
        // process's burst) measured nothing about the link; it is run again, at most
        // INVALID_ATTEMPTS times in all, and the row says how many it took. A link that cannot
        // keep up fails every attempt.
        let mut earlier = Vec::new();
        let r = loop {
            link_ctl.configure(spec(&format!("rtt=20ms,rate={rate}mbit,queue=20ms"))?)?;
            let r = check::tcp_goodput(link, warm, measure)?;
            match r.stats.invalid() {
                Some(why) if earlier.len() + 1 < INVALID_ATTEMPTS => earlier.push(why),
                _ => break r,
            }
        };
        let retried = if earlier.is_empty() {
            String::new()
        } else {
            format!(
                "; attempt {} of {INVALID_ATTEMPTS} (before: {})",
                earlier.len() + 1,
                earlier.join("; ")
            )
        };
        let ideal = check::ideal_goodput(rate * 1_000_000, r.mss);
        let lat = |d: &wirelab_link::forward::DirectionStats| {
            d.lateness.value_at_quantile(0.99) as f64 / 1e3
        };
        let invalid = r.stats.invalid();
        let ok = r.goodput_bps >= 0.95 * ideal && invalid.is_none();
        failed += usize::from(!ok);
        println!(
            "| TCP goodput ({}) | {rate} Mbit/s, RTT 20 ms, 20 ms queue | {:.1} Mbit/s = {:.1}% of ideal {:.1}; release lateness p99 {:.0} / {:.0} µs; {} queue drops{}{retried} | >= 95%, emulator kept up | {} |",
            link_ctl.congestion_control().0,
            r.goodput_bps / 1e6,
            r.goodput_bps / ideal * 100.0,
            ideal / 1e6,
            lat(&r.stats.forwarder.up),
            lat(&r.stats.forwarder.down),
            r.stats.forwarder.up.counters.queue_drops,
            invalid.map(|w| format!("; invalid: {w}")).unwrap_or_default(),
            verdict(ok)
        );
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// Options of `wirelab hol`.
#[derive(Debug, Args)]
pub(crate) struct HolArgs {
    #[command(flatten)]
    setup: LinkSetup,
    /// QUIC congestion control of the quic, h3 and wt clients and servers (quinn's); recorded
    /// in every result. `--cc` sets TCP's.
    #[arg(long, value_name = "CC", default_value = "cubic", value_parser = ["cubic", "newreno", "bbr"])]
    pub(crate) quic_cc: String,
    #[command(flatten)]
    cpu: crate::opts::CpuOpts,
    /// The CI grid: RTT 20 ms, loss 0 and 2% random, 600 messages per run (about a minute).
    #[arg(long)]
    quick: bool,
    /// Directory for the results; default `results/hol-<UTC date>-<time>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these variants (labels as in the report, e.g. "tcp shared,quic").
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Logical streams.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=64))]
    streams: u32,
    /// Messages per RTT per stream (the rate scales with the RTT).
    #[arg(long, default_value_t = 2.0)]
    per_rtt: f64,
    /// Messages per run, all streams together (default 2000; --quick 600).
    #[arg(long)]
    messages: Option<u64>,
    /// Message size, bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// RTTs, ms (default 20,100; --quick 20).
    #[arg(long, value_delimiter = ',')]
    rtt: Vec<u64>,
    /// Loss rates, % per direction (default 0,0.5,1,2,5; --quick 0,2).
    #[arg(long, value_delimiter = ',')]
    loss: Vec<f64>,
    /// Random loss only (no bursty cells).
    #[arg(long)]
    random_only: bool,
    /// Mean burst length of bursty loss, packets.
    #[arg(long, default_value_t = 4.0)]
    burst: f64,
    /// Repetitions per cell, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// First seed of the loss processes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measure HOL blocking over a real path instead of the emulator, against `wirelab serve
    /// --control ADDR` on another host (HOST or HOST:PORT, port 7799 by default): no emulated
    /// loss, so whatever the path itself loses. No root needed. The RTT that sets the rate and
    /// the stall threshold is measured (tcp echoes) unless --rtt gives it.
    #[arg(long, value_name = "HOST[:PORT]")]
    server: Option<String>,
    /// With --server: the server is reached through the lab's router (`wirelab link router`)
    /// at HOST or HOST:PORT (port 7798 by default), which emulates each cell's link: the
    /// same grid, seeds and losses as the in-process emulator.
    #[arg(long, value_name = "HOST[:PORT]", requires = "server")]
    router: Option<String>,
    /// With --server: trust the server's certificate through this CA (PEM) instead of by the
    /// fingerprint its control endpoint gives.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca: Option<PathBuf>,
    /// quic, h3 and wt: write one qlog file per connection, server's and client's, into this
    /// directory (packets, losses, the congestion window over time), to read what a run's
    /// QUIC connections did.
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<PathBuf>,
    /// Only rebuild report.md and the charts of an earlier `wirelab hol` directory from its
    /// JSON (no link, no root needed).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["quick", "out"])]
    report: Option<PathBuf>,
}

/// `wirelab hol --report DIR`.
pub(crate) fn hol_report(dir: &std::path::Path) -> Result<()> {
    let results = hol::load_dir(dir)?;
    if results.is_empty() {
        bail!("{} holds no HOL results", dir.display());
    }
    let path = hol::report(dir, &results)?;
    eprintln!("{} results; report: {}", results.len(), path.display());
    Ok(())
}

impl HolArgs {
    pub(crate) fn plan(&self) -> Result<HolPlan> {
        let mut variants = hol::hol_variants();
        if !self.only.is_empty() {
            let known: Vec<String> = variants.iter().map(|v| v.label()).collect();
            for o in &self.only {
                if !known.contains(o) {
                    bail!("unknown variant '{o}' (known: {})", known.join(", "));
                }
            }
            variants.retain(|v| self.only.contains(&v.label()));
        }
        if self.server.is_some()
            && self.router.is_none()
            && (!self.loss.is_empty() || self.random_only)
        {
            bail!("--loss and --random-only need a link: without --router, --server measures the real path's own loss");
        }
        if !(self.per_rtt.is_finite() && self.per_rtt > 0.0) {
            bail!("--per-rtt must be above 0");
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            bail!("--burst must be at least 1 packet");
        }
        if self.size < wirelab_core::codec::HEADER_LEN {
            bail!(
                "--size must be at least the {}-byte message header",
                wirelab_core::codec::HEADER_LEN
            );
        }
        let rtts = if self.rtt.is_empty() {
            if self.quick {
                vec![20]
            } else {
                vec![20, 100]
            }
        } else {
            self.rtt.clone()
        };
        if rtts.iter().any(|&r| r < 2) {
            bail!("--rtt must be at least 2 ms");
        }
        let losses: Vec<f64> = if self.loss.is_empty() {
            if self.quick {
                vec![0.0, 2.0]
            } else {
                vec![0.0, 0.5, 1.0, 2.0, 5.0]
            }
        } else {
            self.loss.clone()
        };
        if losses.iter().any(|l| !(0.0..50.0).contains(l)) {
            bail!("--loss must be in [0, 50) %");
        }
        let losses: Vec<f64> = losses.iter().map(|l| l / 100.0).collect();
        let bursty = !(self.random_only || self.quick);
        let messages = self.messages.unwrap_or(if self.quick { 600 } else { 2000 });
        if messages < u64::from(self.streams) * 10 {
            bail!("--messages must give each stream at least 10 messages");
        }
        let out = self.out.clone().unwrap_or_else(|| {
            let t = wirelab::env::rfc3339(wirelab::env::unix_now());
            let stamp: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
            PathBuf::from("results").join(format!("hol-{}-{}", &stamp[..8], &stamp[8..]))
        });
        Ok(HolPlan {
            variants,
            cells: hol::grid(&rtts, &losses, bursty),
            streams: self.streams,
            per_rtt: self.per_rtt,
            messages,
            size: self.size,
            burst: self.burst,
            reps: self.reps,
            seed: self.seed,
            out,
        })
    }

    pub(crate) fn link_setup(&self) -> &LinkSetup {
        &self.setup
    }

    /// Where the client and server threads run.
    pub(crate) fn cpu(&self) -> Option<wirelab::topology::Cpus> {
        self.cpu.cpu
    }

    /// `--report DIR`, if given.
    pub(crate) fn report_only(&self) -> Option<&std::path::Path> {
        self.report.as_deref()
    }

    /// `--server`, if given: no link is started.
    pub(crate) fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }
}

/// Measures the path's RTT to a remote server: the median of 50 echoes on the first floor
/// transport it serves (tcp, else quic), rounded up to whole ms, at least 2.
async fn path_rtt_ms(servers: &Servers) -> Result<u64> {
    let r = servers.remote.as_ref().context("a remote server")?;
    let certs = wirelab::runner::Certs::new()?;
    for d in wirelab::transports::LIST
        .iter()
        .filter(|d| d.floor.is_none())
    {
        let id = d.id;
        let v = wirelab::transports::Variant {
            id,
            tls: d.tls.by_default(),
            mode: d.modes[0],
        };
        if r.addr_of(&v).is_none() {
            continue;
        }
        let server = wirelab::runner::VariantServer::start(&v, &certs, servers).await?;
        let cfg = server.client();
        let o = wirelab::with_client!(id, C => wirelab::workload::closed_loop::<C>(&cfg, 64, 5, 50, None).await)?;
        let p50_ms = o.rtt.value_at_quantile(0.5) as f64 / 1e6;
        return Ok((p50_ms.ceil() as u64).max(2));
    }
    bail!(
        "the remote server serves neither tcp nor quic to measure the path's RTT with; give --rtt"
    )
}

pub(crate) async fn hol(
    mut plan: HolPlan,
    args: &HolArgs,
    mut link: Option<Arc<dyn LinkControl>>,
    mut servers: Servers,
) -> Result<()> {
    if let Some(dir) = &args.qlog_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the qlog directory {}", dir.display()))?;
        servers.qlog_dir = Some(dir.clone());
    }
    if let Some(server) = &args.server {
        let remote =
            wirelab::control::Remote::connect_async(server.clone(), args.ca.clone()).await?;
        eprint!("{}", remote.describe());
        let served = |v: &wirelab::transports::Variant| remote.addr_of(v).is_some();
        let before: Vec<String> = plan.variants.iter().map(|v| v.label()).collect();
        plan.variants.retain(|v| served(&v.variant));
        for l in before {
            if !plan.variants.iter().any(|v| v.label() == l) {
                eprintln!("note: the remote server does not serve {l}; left out");
            }
        }
        if plan.variants.is_empty() {
            bail!("the remote server serves none of the variants asked for");
        }
        servers.remote = Some(Arc::new(remote));
        if let Some(addr) = &args.router {
            let first = plan
                .cells
                .first()
                .map(|c| plan.link_spec(c, 0))
                .unwrap_or_default();
            let (router, info) = connect_router(addr, &first, &servers)?;
            servers.link = Some((router.clone(), first));
            servers.router = Some(info);
            link = Some(router);
        }
    }
    if let (Some(_), None) = (&args.server, &args.router) {
        let rtts: Vec<u64> = if args.rtt.is_empty() {
            let rtt = path_rtt_ms(&servers).await?;
            eprintln!("path RTT: {rtt} ms (p50 of 50 echoes, rounded up, at least 2)");
            vec![rtt]
        } else {
            args.rtt.clone()
        };
        plan.cells = rtts
            .into_iter()
            .map(|rtt_ms| hol::Cell {
                rtt_ms,
                loss: 0.0,
                kind: hol::LossKind::Path,
            })
            .collect();
    }
    let total = plan.variants.len() as u64 * plan.cells.len() as u64 * u64::from(plan.reps);
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs {msg}")
                .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    eprintln!(
        "{} variants x {} cells x {} reps = {total} runs, {} messages each; results in {}",
        plan.variants.len(),
        plan.cells.len(),
        plan.reps,
        plan.messages,
        plan.out.display()
    );
    let t0 = Instant::now();
    let (results, failures) = hol::execute(&plan, link.as_deref(), &servers, &pb).await?;
    pb.finish_and_clear();
    let path = hol::report(&plan.out, &results)?;
    eprintln!(
        "{} results in {:.0} s; report: {}",
        results.len(),
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    print!(
        "{}",
        std::fs::read_to_string(&path).context("reading the report back")?
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED {} · {}: {}", f.scenario, f.variant, f.error);
        }
        bail!("{} run(s) failed", failures.len());
    }
    Ok(())
}
