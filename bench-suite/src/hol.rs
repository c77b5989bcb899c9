//! `wirelab hol`: head-of-line blocking under packet loss, through the link emulator.
//!
//! K logical streams (default 8) send small messages open-loop at a fixed rate, staggered
//! (message n goes to stream n mod K), for every transport and mode that carries K streams,
//! over a grid of loss rates, RTTs and loss models. Each run records every message's latency
//! per stream and the link's losses; the report gives per-stream percentiles, the HOL index
//! ([`crate::holindex`]), a chart of p99 against loss per transport and timelines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use wirelab_link::{LinkControl, LinkSpec, LinkStats};

use crate::driver::{Experiment, Failure, Repetition, Saved};
use crate::env::Env;
use crate::holindex::{self, HolIndex};
use crate::runner::{Servers, VariantServer};
use crate::stats;
use crate::with_client;
use crate::workload::{self, Schedule};

/// Schema id of a HOL result file.
pub const SCHEMA: &str = "wirelab.hol/1";

/// A way of carrying K streams (derived from the transports' descriptors).
pub type HolVariant = crate::transports::StreamsVariant;

/// Every way the transports carry K streams: each transport at its default security, in each
/// of its descriptor's sharings and modes (tcp and ws on one connection and on one per
/// stream, h1 over a keep-alive pool of 6, h2 and h3 request/response and duplex, h2ws, quic).
pub fn hol_variants() -> Vec<HolVariant> {
    crate::transports::streams_variants()
}

/// Random (Bernoulli) or bursty (Gilbert-Elliott) loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Each packet independently.
    Random,
    /// In bursts of [`HolPlan::burst`] packets on average, same mean rate.
    Bursty,
    /// No emulator: whatever a real network path loses (`hol --server`).
    Path,
}

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Round-trip propagation delay, ms.
    pub rtt_ms: u64,
    /// Mean loss rate per direction, 0..1.
    pub loss: f64,
    /// Loss model.
    pub kind: LossKind,
}

impl Cell {
    /// Directory name: `rtt20_loss1_random`.
    pub fn name(&self) -> String {
        let loss = format!("{}", self.loss * 100.0).replace('.', "p");
        let kind = match self.kind {
            LossKind::Path => "path",
            _ if self.loss == 0.0 => "none",
            LossKind::Random => "random",
            LossKind::Bursty => "bursty",
        };
        if self.kind == LossKind::Path {
            return format!("rtt{}_path", self.rtt_ms);
        }
        format!("rtt{}_loss{loss}_{kind}", self.rtt_ms)
    }
}

/// What `wirelab hol` runs.
#[derive(Debug, Clone)]
pub struct HolPlan {
    /// Ways of carrying the streams.
    pub variants: Vec<HolVariant>,
    /// Grid cells, in order.
    pub cells: Vec<Cell>,
    /// Logical streams.
    pub streams: u32,
    /// Messages per RTT per stream (the rate scales with the RTT so every stream has
    /// messages in flight during any loss recovery).
    pub per_rtt: f64,
    /// Messages per run (all streams).
    pub messages: u64,
    /// Message size, bytes.
    pub size: usize,
    /// Mean burst length of bursty loss, packets.
    pub burst: f64,
    /// Repetitions (seeds `seed`, `seed + 1`, ...).
    pub reps: u32,
    /// First seed.
    pub seed: u64,
    /// Where results go.
    pub out: PathBuf,
}

impl HolPlan {
    /// The grid of the issue: loss {0, 0.5, 1, 2, 5}% × RTT {20, 100} ms × {random, bursty}
    /// (no loss once per RTT).
    pub fn full_grid() -> Vec<Cell> {
        grid(&[20, 100], &[0.0, 0.005, 0.01, 0.02, 0.05], true)
    }

    /// The CI grid: RTT 20 ms, loss 0 and 2% random.
    pub fn quick_grid() -> Vec<Cell> {
        grid(&[20], &[0.0, 0.02], false)
    }

    /// Messages per second per stream in a cell.
    pub fn rate_per_stream(&self, cell: &Cell) -> f64 {
        self.per_rtt * 1000.0 / cell.rtt_ms.max(1) as f64
    }

    /// The stall threshold of a cell: half the RTT, at least 5 ms. A loss recovery adds at
    /// least about one RTT (fast retransmit: an RTT plus the duplicate ACKs' wait; QUIC: 9/8
    /// RTT), so a stall is well over it, while the client's and the VM's scheduling noise
    /// (a few ms in a debug build) stays under it. With 2 messages per RTT per stream every
    /// stream sends at least once inside a recovery's window, so a shared connection's
    /// stall shows on every stream.
    pub fn theta(cell: &Cell) -> Duration {
        Duration::from_millis((cell.rtt_ms / 2).max(5))
    }

    /// The link of a cell for repetition `rep`.
    pub fn link_spec(&self, cell: &Cell, rep: u32) -> LinkSpec {
        LinkSpec {
            rtt_ns: cell.rtt_ms * 1_000_000,
            loss: cell.loss,
            burst: (cell.kind == LossKind::Bursty).then_some(self.burst),
            seed: self.seed + u64::from(rep),
            ..LinkSpec::default()
        }
    }
}

/// Cells for every RTT and loss rate; loss 0 once, others random (and bursty).
pub fn grid(rtts: &[u64], losses: &[f64], bursty: bool) -> Vec<Cell> {
    let mut out = Vec::new();
    for &rtt_ms in rtts {
        for &loss in losses {
            out.push(Cell {
                rtt_ms,
                loss,
                kind: LossKind::Random,
            });
            if bursty && loss > 0.0 {
                out.push(Cell {
                    rtt_ms,
                    loss,
                    kind: LossKind::Bursty,
                });
            }
        }
    }
    out
}

/// Latency percentiles of one stream, ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamStats {
    /// Messages.
    pub messages: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// What the link did in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The link as a `--link` spec.
    pub spec: String,
    /// Packets offered / lost by the loss model / dropped at the queue, client to server.
    pub up: [u64; 3],
    /// The same, server to client.
    pub down: [u64; 3],
    /// Release lateness p99, µs (up, down).
    pub lateness_p99_us: [f64; 2],
    /// Packets the kernel dropped before the forwarder read them (client side, server side:
    /// the TUN queues, or the lab router's packet sockets).
    pub tun_drops: [u64; 2],
    /// Why the run is invalid (the emulator fell behind), if it is.
    pub invalid: Option<String>,
    /// Congestion control in the client and server namespaces.
    pub congestion_control: [String; 2],
}

impl LinkRecord {
    /// From the link's counters.
    pub fn new(spec: &LinkSpec, stats: &LinkStats, link: &dyn LinkControl) -> Self {
        let c = |d: &wirelab_link::forward::DirectionStats| {
            [d.counters.offered, d.counters.lost, d.counters.queue_drops]
        };
        let p99 = |d: &wirelab_link::forward::DirectionStats| {
            d.lateness.value_at_quantile(0.99) as f64 / 1e3
        };
        let cc = &link.congestion_control();
        Self {
            spec: spec.to_string(),
            up: c(&stats.forwarder.up),
            down: c(&stats.forwarder.down),
            lateness_p99_us: [p99(&stats.forwarder.up), p99(&stats.forwarder.down)],
            tun_drops: [stats.tun_drops.0, stats.tun_drops.1],
            invalid: stats.invalid(),
            congestion_control: [cc.0.clone(), cc.1.clone()],
        }
    }
}

/// One repetition of one cell on one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolRep {
    /// Seed of the loss processes.
    pub seed: u64,
    /// HOL index (`None`: no stream stalled).
    pub hol_index: Option<f64>,
    /// Stalls the index was computed from.
    pub stalls: u64,
    /// Latency floor and stall threshold, ms.
    pub base_ms: f64,
    /// Stall threshold, ms.
    pub theta_ms: f64,
    /// All messages: p50, p99, p99.9, max, ms.
    pub p50_ms: f64,
    /// 99th percentile over all streams.
    pub p99_ms: f64,
    /// 99.9th percentile over all streams.
    pub p999_ms: f64,
    /// Maximum over all streams.
    pub max_ms: f64,
    /// Per stream.
    pub streams: Vec<StreamStats>,
    /// The link.
    pub link: LinkRecord,
    /// The generator's verdict, if it fell behind.
    pub behind: Option<String>,
    /// Every message per stream: (intended send ns, latency ns); times are relative to the
    /// first send; loss events likewise below.
    pub records: Vec<Vec<(u64, u64)>>,
    /// Loss-model drops (up, down), ns from the first send.
    pub losses: [Vec<u64>; 2],
    /// Datagram variants: what became of the datagrams (a lost one has no record above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<crate::results::DatagramRep>,
}

impl HolRep {
    /// Datagram variants: echoes that never came back, % of those sent.
    pub fn datagram_loss_pct(&self) -> Option<f64> {
        self.datagrams
            .filter(|d| d.sent > 0)
            .map(|d| (d.sent - d.received) as f64 / d.sent as f64 * 100.0)
    }

    /// Datagram variants: echoes that came after a later one, % of those received.
    pub fn datagram_reorder_pct(&self) -> Option<f64> {
        self.datagrams
            .filter(|d| d.received > 0)
            .map(|d| d.reordered as f64 / d.received as f64 * 100.0)
    }
}

/// The results of one cell on one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolResult {
    /// [`SCHEMA`].
    pub schema: String,
    /// The variant's label.
    pub variant: String,
    /// The cell.
    pub cell: Cell,
    /// Streams, messages per stream per second, message size.
    pub streams: u32,
    /// Messages per second per stream.
    pub rate_per_stream: f64,
    /// Message size, bytes.
    pub size: usize,
    /// Environment.
    pub env: Env,
    /// Where it ran.
    #[serde(default)]
    pub placement: crate::results::Placement,
    /// Median and confidence interval over the repetitions of `hol_index`, `stalls`,
    /// `p50_ms`, `p99_ms`, `p999_ms`, `max_ms`, and for datagram variants
    /// `datagram_loss_pct` and `datagram_reorder_pct` (absent in files from before the driver).
    #[serde(default)]
    pub summary: std::collections::BTreeMap<String, crate::stats::Estimate>,
    /// Repetitions.
    pub reps: Vec<HolRep>,
}

/// Median and confidence interval of each HOL metric over `reps` (the driver's statistics,
/// as `run` computes them).
pub fn summarize(reps: &[HolRep]) -> std::collections::BTreeMap<String, crate::stats::Estimate> {
    type Of = fn(&HolRep) -> Option<f64>;
    let metrics: [(&str, Of); 8] = [
        ("hol_index", |r| r.hol_index),
        ("stalls", |r| Some(r.stalls as f64)),
        ("p50_ms", |r| Some(r.p50_ms)),
        ("p99_ms", |r| Some(r.p99_ms)),
        ("p999_ms", |r| Some(r.p999_ms)),
        ("max_ms", |r| Some(r.max_ms)),
        ("datagram_loss_pct", HolRep::datagram_loss_pct),
        ("datagram_reorder_pct", HolRep::datagram_reorder_pct),
    ];
    metrics
        .iter()
        .filter_map(|(name, f)| {
            let xs: Vec<f64> = reps.iter().filter_map(f).collect();
            crate::stats::median_ci(&xs, crate::results::CONFIDENCE).map(|e| (name.to_string(), e))
        })
        .collect()
}

impl Saved for HolResult {
    const SCHEMA: &'static str = SCHEMA;
    const WHAT: &'static str = "HOL result";

    /// `DIR/<cell>/<variant slug>.json`.
    fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.cell.name())
            .join(format!("{}.json", self.variant.replace(' ', "-")))
    }
}

impl HolResult {
    /// Parses and checks the bytes of one HOL result file (pure: what [`load_dir`] does with
    /// each file it reads). `origin` names the file in error messages.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .with_context(|| format!("{origin} is not a HOL result (not UTF-8)"))?;
        <Self as Saved>::from_json(text, origin)
    }

    /// Median over repetitions of `f` (repetitions where it is defined).
    pub fn median(&self, f: impl Fn(&HolRep) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self.reps.iter().filter_map(f).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// Whether any repetition ran on a link that fell behind.
    pub fn invalid(&self) -> bool {
        self.reps.iter().any(|r| r.link.invalid.is_some())
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Round trips at the start of a run left out of its statistics.
pub const WARMUP_RTTS: u64 = 5;

/// Computes a repetition's statistics from the records (pure): the first [`WARMUP_RTTS`]
/// round trips are left out.
pub fn summarize_rep(
    records: Vec<Vec<(u64, u64)>>,
    losses: [Vec<u64>; 2],
    theta: Duration,
    seed: u64,
    link: LinkRecord,
    behind: Option<String>,
) -> Result<HolRep> {
    // Warm-up: messages intended in the first `WARMUP_RTTS` RTTs (2 theta each) are kept in
    // the records but left out of the statistics (connection start-up is not loss).
    let first = records.iter().flatten().map(|&(s, _)| s).min().unwrap_or(0);
    let from = first + WARMUP_RTTS * 2 * theta.as_nanos() as u64;
    let measured: Vec<Vec<(u64, u64)>> = records
        .iter()
        .map(|r| r.iter().copied().filter(|&(s, _)| s >= from).collect())
        .collect();
    let HolIndex {
        index,
        stalls,
        base_ns,
        theta_ns,
    } = holindex::hol_index(&measured, theta.as_nanos() as u64);
    let mut all = stats::histogram();
    let mut streams = Vec::new();
    for r in &measured {
        let mut h = stats::histogram();
        for &(_, lat) in r {
            h.record(lat.max(1))?;
        }
        all.add(&h)?;
        streams.push(stream_stats(&h));
    }
    let t0 = records.iter().flatten().map(|&(s, _)| s).min().unwrap_or(0);
    let rel = |v: Vec<u64>| v.into_iter().map(|t| t.saturating_sub(t0)).collect();
    let [up, down] = losses;
    Ok(HolRep {
        seed,
        hol_index: index,
        stalls,
        base_ms: ms(base_ns),
        theta_ms: ms(theta_ns),
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        p999_ms: ms(all.value_at_quantile(0.999)),
        max_ms: ms(all.max()),
        streams,
        link,
        behind,
        records: records
            .into_iter()
            .map(|r| r.into_iter().map(|(s, l)| (s - t0, l)).collect())
            .collect(),
        losses: [rel(up), rel(down)],
        datagrams: None,
    })
}

fn stream_stats(h: &Histogram<u64>) -> StreamStats {
    StreamStats {
        messages: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// Runs one repetition of `cell` on `hv` against a server at `addr`: configures the link,
/// runs the open loop, reads the link's counters.
#[allow(clippy::too_many_arguments)]
pub async fn one_run(
    plan: &HolPlan,
    hv: &HolVariant,
    cell: &Cell,
    rep: u32,
    link: Option<&dyn LinkControl>,
    server: &VariantServer,
) -> Result<HolRep> {
    let spec = plan.link_spec(cell, rep);
    if let Some(link) = link {
        link.configure(spec.config())?;
    }
    let mut cfg = server.client();
    cfg.mode = hv.variant.mode;
    cfg.streams = plan.streams;
    cfg.sharing = hv.sharing;
    cfg.pool_size = 6;
    // A graceful close under heavy or bursty loss waits out TCP's retransmission backoff
    // (several doubling timeouts of a few RTTs each) after the measurement is complete: give it
    // 100 RTTs, at least the default, so a slow close does not fail a measured run.
    cfg.timeouts.shutdown_grace = cfg
        .timeouts
        .shutdown_grace
        .max(Duration::from_millis(cell.rtt_ms.saturating_mul(100)));
    let rate = plan.rate_per_stream(cell) * f64::from(plan.streams);
    let sched = Schedule {
        rate,
        duration: Duration::from_secs_f64(plan.messages as f64 / rate),
        size: plan.size,
        lateness_budget: crate::runner::LATENESS_BUDGET,
    };
    // Datagram variants: the K streams are tags on datagrams of one session, sent once each;
    // a lost one is counted, never waited for.
    let (records, behind, datagrams) = if hv.datagrams {
        let sched = Schedule {
            lateness_budget: crate::runner::DATAGRAM_LATENESS_BUDGET,
            ..sched
        };
        let r = workload::datagram_echo(hv.variant.id, &cfg, sched, None).await?;
        let d = crate::results::DatagramRep {
            sent: r.tally.sent,
            received: r.tally.received,
            reordered: r.tally.reordered,
            duplicates: r.tally.duplicates,
        };
        (r.records, r.behind, Some(d))
    } else {
        let r =
            with_client!(hv.variant.id, C => workload::open_loop::<C>(&cfg, sched, None).await)?;
        (r.records, r.behind, None)
    };
    let (record, losses) = match link {
        Some(link) => {
            let stats = link.stats()?;
            let losses = [
                stats.forwarder.up.loss_events.clone(),
                stats.forwarder.down.loss_events.clone(),
            ];
            (LinkRecord::new(&spec, &stats, link), losses)
        }
        // A real path: its losses are not seen, only their effect on latency.
        None => (
            LinkRecord {
                spec: format!("the real path (RTT {} ms as measured)", cell.rtt_ms),
                ..LinkRecord::default()
            },
            [Vec::new(), Vec::new()],
        ),
    };
    let mut rep = summarize_rep(
        records,
        losses,
        HolPlan::theta(cell),
        spec.seed,
        record,
        behind,
    )?;
    rep.datagrams = datagrams;
    Ok(rep)
}

/// `wirelab hol` on the driver: rows are ways of carrying K streams, cases are grid cells.
struct HolExperiment<'a> {
    plan: &'a HolPlan,
    link: Option<&'a dyn LinkControl>,
    env: Env,
    placement: crate::results::Placement,
}

impl Experiment for HolExperiment<'_> {
    type Row = HolVariant;
    type Case = Cell;
    type Rep = HolRep;
    type Result = HolResult;

    fn rows(&self) -> &[HolVariant] {
        &self.plan.variants
    }

    fn variant<'a>(&self, row: &'a HolVariant) -> &'a crate::transports::Variant {
        &row.variant
    }

    fn row_label(&self, row: &HolVariant) -> String {
        row.label()
    }

    fn cases(&self, _row: &HolVariant) -> Vec<&Cell> {
        self.plan.cells.iter().collect()
    }

    fn case_name(&self, cell: &Cell) -> String {
        cell.name()
    }

    fn repetitions(&self) -> (u32, u32) {
        (0, self.plan.reps)
    }

    fn out(&self) -> &Path {
        &self.plan.out
    }

    async fn one(&self, r: Repetition<'_, HolVariant, Cell>) -> Result<HolRep> {
        one_run(self.plan, r.row, r.case, r.index, self.link, r.server).await
    }

    fn note(&self, rep: &HolRep) -> Option<String> {
        rep.behind.clone()
    }

    fn finish(
        &self,
        row: &HolVariant,
        cell: &Cell,
        reps: Vec<HolRep>,
        _notes: Vec<String>,
    ) -> Result<HolResult> {
        Ok(HolResult {
            schema: SCHEMA.into(),
            variant: row.label(),
            cell: *cell,
            streams: self.plan.streams,
            rate_per_stream: self.plan.rate_per_stream(cell),
            size: self.plan.size,
            env: self.env.clone(),
            placement: self.placement.clone(),
            summary: summarize(&reps),
            reps,
        })
    }
}

/// Runs the plan on the driver through `link` (servers on `servers`, listening on the link's
/// server address), or against `servers`' remote server over the real path; writes
/// `out/<cell>/<variant>.json` as each finishes.
pub async fn execute(
    plan: &HolPlan,
    link: Option<&dyn LinkControl>,
    servers: &Servers,
    pb: &ProgressBar,
) -> Result<(Vec<HolResult>, Vec<Failure>)> {
    let e = HolExperiment {
        plan,
        link,
        env: Env::capture(),
        placement: servers.placement(),
    };
    crate::driver::execute(&e, servers, pb).await
}

/// Loads every HOL result under `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<HolResult>> {
    crate::driver::load_dir(dir)
}

fn fmt_index(i: Option<f64>) -> String {
    i.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
}

/// The per-stream rate at each RTT of the results, from the data: `20 ms: 100 msg/s, ...`.
fn rates(results: &[HolResult]) -> String {
    let mut seen: Vec<(u64, f64)> = Vec::new();
    for r in results {
        if !seen.iter().any(|(rtt, _)| *rtt == r.cell.rtt_ms) {
            seen.push((r.cell.rtt_ms, r.rate_per_stream));
        }
    }
    seen.sort_by_key(|x| x.0);
    let parts: Vec<String> = seen
        .iter()
        .map(|(rtt, rate)| format!("RTT {rtt} ms: {rate:.0} msg/s"))
        .collect();
    parts.join(", ")
}

/// Writes `report.md` and the charts into `dir`; returns the report's path.
pub fn report(dir: &Path, results: &[HolResult]) -> Result<PathBuf> {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(md, "# Head-of-line blocking under loss\n");
    if let Some(r) = results.first() {
        let e = &r.env;
        let _ = writeln!(
            md,
            "{} streams, {} B messages, open loop at {} messages per RTT per stream (the rate \
             scales with each cell's RTT: {}), staggered. wirelab {} ({}), {} build, {}, {} cores, \
             kernel {}. {} Cells are single seeded runs unless several repetitions are listed; \
             the HOL index is defined in docs/src/hol.md.\n",
            r.streams,
            r.size,
            r.rate_per_stream * r.cell.rtt_ms as f64 / 1000.0,
            rates(results),
            e.wirelab,
            e.git_rev,
            e.profile,
            e.cpu_model,
            e.cores,
            e.kernel,
            if r.placement.kind == "remote" {
                format!(
                    "{}: no emulator, so the path's own losses, which are not seen, only their effect.",
                    r.placement.describe(None)
                )
            } else {
                format!(
                    "Link: {}, congestion control {} / {} (client / server side), QUIC congestion control {}.",
                    if r.placement.kind == "lab" {
                        "the compose lab's router (the emulator's models over AF_PACKET, between the client and server containers)"
                    } else {
                        "TUN emulator"
                    },
                    r.reps
                        .first()
                        .map_or("?", |x| x.link.congestion_control[0].as_str()),
                    r.reps
                        .first()
                        .map_or("?", |x| x.link.congestion_control[1].as_str()),
                    r.placement.quic_cc,
                )
            },
        );
    }
    let mut variants: Vec<String> = Vec::new();
    for r in results {
        if !variants.contains(&r.variant) {
            variants.push(r.variant.clone());
        }
    }
    let mut rtts: Vec<u64> = results.iter().map(|r| r.cell.rtt_ms).collect();
    rtts.sort_unstable();
    rtts.dedup();
    // A loss-free emulated cell belongs to both emulated tables; a real path's to its own.
    let same_kind = |cell: &Cell, kind: LossKind| {
        cell.kind == kind
            || (cell.loss == 0.0 && kind != LossKind::Path && cell.kind != LossKind::Path)
    };
    let find = |v: &str, rtt: u64, loss: f64, kind: LossKind| {
        results.iter().find(|r| {
            r.variant == v
                && r.cell.rtt_ms == rtt
                && r.cell.loss == loss
                && same_kind(&r.cell, kind)
        })
    };
    for &rtt in &rtts {
        for kind in [LossKind::Random, LossKind::Bursty, LossKind::Path] {
            let mut losses: Vec<f64> = results
                .iter()
                .filter(|r| r.cell.rtt_ms == rtt && same_kind(&r.cell, kind))
                .map(|r| r.cell.loss)
                .collect();
            losses.sort_by(f64::total_cmp);
            losses.dedup();
            if losses.is_empty() || (!losses.iter().any(|&l| l > 0.0) && kind == LossKind::Bursty) {
                continue;
            }
            let kname = match kind {
                LossKind::Random => "random",
                LossKind::Bursty => "bursty",
                LossKind::Path => "the real path's own",
            };
            let _ = writeln!(
                md,
                "## RTT {rtt} ms, {kname} loss\n\nEach cell: p99 latency (ms) · HOL index \
                 (0: a loss stalls only its own stream, 1: every stream); datagram rows also \
                 give the echoes lost (a lost datagram is not retransmitted, so the latency \
                 and index are those of the echoes that came back).\n"
            );
            let _ = write!(md, "| transport |");
            for l in &losses {
                if kind == LossKind::Path {
                    let _ = write!(md, " path |");
                } else {
                    let _ = write!(md, " {}% |", l * 100.0);
                }
            }
            let _ = write!(md, "\n|---|");
            for _ in &losses {
                let _ = write!(md, "---|");
            }
            md.push('\n');
            let mut series = Vec::new();
            for v in &variants {
                let _ = write!(md, "| {v} |");
                let mut pts = Vec::new();
                for &l in &losses {
                    match find(v, rtt, l, kind) {
                        Some(r) => {
                            let p99 = r.median(|x| Some(x.p99_ms)).unwrap_or(f64::NAN);
                            let flag = if r.invalid() { " ⚠" } else { "" };
                            let behind = if r.reps.iter().any(|x| x.behind.is_some()) {
                                " †"
                            } else {
                                ""
                            };
                            let lost = r
                                .median(HolRep::datagram_loss_pct)
                                .map(|l| format!(" · lost {l:.1}%"))
                                .unwrap_or_default();
                            let _ = write!(
                                md,
                                " {p99:.1} · {}{lost}{flag}{behind} |",
                                fmt_index(r.median(|x| x.hol_index))
                            );
                            pts.push((l * 100.0, p99));
                        }
                        None => {
                            let _ = write!(md, " – |");
                        }
                    }
                }
                md.push('\n');
                series.push((v.clone(), pts));
            }
            let slug = match kind {
                LossKind::Path => "path",
                _ => kname,
            };
            let chart = format!("hol_p99_rtt{rtt}_{slug}.svg");
            crate::chart::lines_log_y(
                &dir.join(&chart),
                &format!("p99 latency against loss, RTT {rtt} ms, {kname} loss"),
                "loss per direction (%)",
                "p99 latency (ms, log scale)",
                &series,
            )?;
            let _ = writeln!(md, "\n![p99 against loss]({chart})\n");
        }
    }
    let _ = writeln!(
        md,
        "⚠: the emulator fell behind in a repetition (the run is invalid). †: the generator \
         could not keep the rate (overload; h1's pool of 6 serves at most 6 messages per RTT).\n"
    );
    // Per-stream percentiles and timelines of the most lossy random cell of the first RTT.
    let pick = rtts.first().and_then(|&rtt| {
        results
            .iter()
            .filter(|r| r.cell.rtt_ms == rtt && r.cell.kind != LossKind::Bursty)
            .map(|r| r.cell)
            .max_by(|a, b| a.loss.total_cmp(&b.loss))
    });
    if let Some(cell) = pick {
        let _ = writeln!(
            md,
            "## Per stream, {} (first repetition)\n\np50 / p99 latency per stream, ms.\n",
            cell.name()
        );
        let k = results.iter().map(|r| r.streams).max().unwrap_or(0);
        let _ = write!(md, "| transport |");
        for s in 0..k {
            let _ = write!(md, " s{s} |");
        }
        let _ = write!(md, "\n|---|");
        for _ in 0..k {
            let _ = write!(md, "---|");
        }
        md.push('\n');
        for v in &variants {
            let Some(r) = find(v, cell.rtt_ms, cell.loss, cell.kind) else {
                continue;
            };
            let Some(rep) = r.reps.first() else { continue };
            let _ = write!(md, "| {v} |");
            for s in &rep.streams {
                let _ = write!(md, " {:.1} / {:.1} |", s.p50_ms, s.p99_ms);
            }
            md.push('\n');
            let chart = format!("timeline_{}_{}.svg", cell.name(), v.replace(' ', "-"));
            let recs: Vec<Vec<(f64, f64)>> = rep
                .records
                .iter()
                .map(|s| s.iter().map(|&(t, l)| (ms(t), ms(l))).collect())
                .collect();
            let up: Vec<f64> = rep.losses[0].iter().map(|&t| ms(t)).collect();
            let down: Vec<f64> = rep.losses[1].iter().map(|&t| ms(t)).collect();
            // Two seconds from the middle of the run.
            let end = recs.iter().flatten().map(|m| m.0).fold(0.0, f64::max);
            let start = (end / 2.0 - 1000.0).max(0.0);
            crate::chart::timeline(
                &dir.join(&chart),
                &format!(
                    "{v}, {}: red = stalled (latency over {:.0} ms), lines = losses \
                     (blue up, orange down)",
                    cell.name(),
                    rep.base_ms + rep.theta_ms
                ),
                &recs,
                rep.base_ms + rep.theta_ms,
                [&up, &down],
                (start, (start + 2000.0).min(end.max(start + 1.0))),
            )?;
        }
        md.push('\n');
        for v in &variants {
            let _ = writeln!(
                md,
                "![timeline {v}](timeline_{}_{}.svg)\n",
                cell.name(),
                v.replace(' ', "-")
            );
        }
    }
    let notes: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.reps.iter().filter_map(move |x| {
                let why = x.link.invalid.clone().or_else(|| x.behind.clone())?;
                Some(format!(
                    "- {} · {} (seed {}): {why}",
                    r.cell.name(),
                    r.variant,
                    x.seed
                ))
            })
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "## Notes\n\n{}\n", notes.join("\n"));
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
