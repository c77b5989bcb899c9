//! The results of a run: one JSON file per scenario and transport variant, with a versioned
//! schema, the environment, every repetition (raw histograms included) and the medians with
//! their confidence intervals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::driver::Saved;
use crate::env::Env;
use crate::probe::Cost;
use crate::scenario::{Kind, Scenario};
use crate::stats::{self, Estimate, HistData};

/// The schema id every result file carries. Bump the number on any incompatible change.
pub const SCHEMA: &str = "wirelab.result/1";

/// The confidence level asked of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// Which transport variant a result is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantInfo {
    /// Label in tables, e.g. `h2 rr`.
    pub label: String,
    /// File name stem, e.g. `h2-rr`.
    pub slug: String,
    /// Transport id.
    pub transport: String,
    /// Over TLS.
    pub tls: bool,
    /// `rr` or `duplex`.
    pub mode: String,
    /// The floor it is compared with (`tcp`, `quic`), if any.
    pub floor: Option<String>,
}

/// One saturation step: an open-loop run at one rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Offered messages per second.
    pub rate: f64,
    /// 99th percentile latency from the intended send time, µs (none if the session failed).
    pub p99_us: Option<f64>,
    /// Whether the rate was sustained (generator kept up, p99 within the objective).
    pub sustained: bool,
    /// Why not, when it was not.
    pub why: Option<String>,
}

/// One repetition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rep {
    /// Messages measured (echoes, stream messages, or sessions for setup).
    pub messages: u64,
    /// Wall time of the measured phase, s.
    pub elapsed_s: f64,
    /// Payload bytes moved one way (for goodput).
    pub payload_bytes: u64,
    /// Latency, ns: closed-loop RTT; open loop: from the intended send; setup: to first echo.
    pub latency: Option<HistData>,
    /// Open loop: latency from the actual send, ns.
    pub service: Option<HistData>,
    /// Open loop: actual minus intended send time, ns.
    pub lateness: Option<HistData>,
    /// Open loop: offered rate, messages/s.
    pub offered_per_s: Option<f64>,
    /// Open loop: `None` when the generator kept its schedule, otherwise why not.
    pub behind: Option<String>,
    /// CPU and socket bytes of the measured phase.
    pub cost: Option<Cost>,
    /// Saturation: the steps tried and the highest sustained rate.
    pub steps: Vec<Step>,
    /// Saturation: highest sustained rate, messages/s.
    pub sustained_per_s: Option<f64>,
    /// Scale: what N connections cost the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleRep>,
    /// Fan-out: deliveries, what was missed, cut off or out of order, every delivery's
    /// latency. (`latency` is then the slowest healthy subscriber's, per message.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fanout: Option<crate::fanout::FanoutRep>,
    /// Datagram echo: what became of the datagrams sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<DatagramRep>,
    /// Stream with more than one stream: when each stream's last message arrived, s from the
    /// requests (in the session's stream order; the last of them is `elapsed_s`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_done_s: Vec<f64>,
}

/// What became of the datagrams of one datagram-echo repetition (see
/// `wirelab_wt::datagram::Tally`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatagramRep {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct echoes received.
    pub received: u64,
    /// Echoes that came after the echo of a later datagram.
    pub reordered: u64,
    /// Echoes of a datagram already received.
    pub duplicates: u64,
}

/// What N connections cost a server in its own process (scale scenarios).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleRep {
    /// Connections opened (each with one echo answered).
    pub connections: u64,
    /// Wall time to open them all, s.
    pub setup_s: f64,
    /// Server resident memory before the connections, KiB.
    pub rss_base_kib: u64,
    /// Server resident memory with every connection open and idle, KiB.
    pub rss_idle_kib: u64,
    /// Server resident memory right after the active phase, KiB.
    pub rss_active_kib: u64,
    /// Server CPU time while the connections were opened, ns.
    pub setup_cpu_ns: u64,
}

/// One result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    /// [`SCHEMA`].
    pub schema: String,
    /// The scenario as run.
    pub scenario: Scenario,
    /// The transport variant.
    pub variant: VariantInfo,
    /// Where and with what.
    pub env: Env,
    /// Unmeasured repetitions run first.
    pub warmup_reps: u32,
    /// The measured repetitions.
    pub reps: Vec<Rep>,
    /// Median and confidence interval over the repetitions, per metric (see [`metrics`]).
    pub summary: BTreeMap<Metric, Estimate>,
    /// Anything a reader must know (e.g. the generator fell behind).
    pub notes: Vec<String>,
    /// The emulated link the run went through (`--link` spec); absent on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Where it ran (absent in files from before placements: in-process).
    #[serde(default)]
    pub placement: Placement,
}

/// Where a measurement ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// `in-process` (client and servers in one process on loopback), `link` (the same through
    /// the link emulator), `remote` (a server on another host, or namespace, over a real
    /// network path), `lab` (the docker compose lab: a server container reached through the
    /// router container, which emulates the link) or `browser` (a headless browser on loopback
    /// running the page the servers serve, `wirelab browser`).
    pub kind: String,
    /// The remote server's control endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `shared` when client and server read one clock (one kernel), so one-way figures are
    /// valid; `separate` when only round-trip figures are.
    pub clock: String,
    /// The remote server's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_env: Option<Env>,
    /// `browser`: the browser that ran the page, as it names itself (DevTools
    /// `Browser.getVersion`, e.g. `HeadlessChrome/156.0.8078.108`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    /// `browser`: the protocols the browser really used, in its own words
    /// (`nextHopProtocol` of the page and of each request; the status of WebSocket
    /// handshakes: 101 for the HTTP/1.1 Upgrade, 200 for an extended CONNECT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negotiated: Vec<String>,
    /// Where client and server threads ran (`--cpu`): `split (client cpu 0, server cpu 1)`,
    /// `same (cpu 0)` or `free` (files from before `--cpu`: free).
    #[serde(default = "free")]
    pub cpu: String,
    /// The QUIC congestion controller (`--quic-cc`) of the local servers and the clients
    /// (`client side: …` against a remote server, which runs its own; files from before
    /// `--quic-cc`: cubic, quinn's default, which they used).
    #[serde(default = "cubic")]
    pub quic_cc: String,
}

fn free() -> String {
    "free".into()
}

fn cubic() -> String {
    "cubic".into()
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            kind: "in-process".into(),
            server: None,
            clock: "shared".into(),
            server_env: None,
            browser: None,
            negotiated: Vec::new(),
            cpu: free(),
            quic_cc: cubic(),
        }
    }
}

impl Placement {
    /// One sentence for reports: where it ran and which figures that allows.
    pub fn describe(&self, link: Option<&str>) -> String {
        let place = match self.kind.as_str() {
            "remote" => format!(
                "Remote server {} over a real network path ({}); client on {}",
                self.server.as_deref().unwrap_or("?"),
                if self.clock == "shared" {
                    "one kernel, so one clock"
                } else {
                    "separate clocks: round-trip figures only"
                },
                "this host"
            ),
            "lab" => format!(
                "The docker compose lab: server container {} reached through the router container ({}); {}",
                self.server.as_deref().unwrap_or("?"),
                link.unwrap_or("?"),
                if self.clock == "shared" {
                    "one kernel, so one clock"
                } else {
                    "separate clocks: round-trip figures only"
                }
            ),
            "browser" => format!(
                "Loopback, from the browser ({}, headless, driven over the DevTools protocol) to servers in this process",
                self.browser.as_deref().unwrap_or("?")
            ),
            "link" => format!(
                "Through the link emulator ({}), client and servers in one process in two network namespaces",
                link.unwrap_or("?")
            ),
            _ => "Loopback, client and servers in one process on separate runtimes".into(),
        };
        format!("{place}; threads: {}", self.cpu)
    }
}

/// How a note that invalidates a result starts (the link emulator fell behind).
pub const INVALID_NOTE: &str = "invalid: ";

impl ResultFile {
    /// Whether a note says the result is invalid (see [`INVALID_NOTE`]): the report marks it.
    pub fn is_invalid(&self) -> bool {
        self.notes.iter().any(|n| n.starts_with(INVALID_NOTE))
    }

    /// The round-trip time of the emulated link, ms, if the run went through one with a
    /// delay.
    pub fn link_rtt_ms(&self) -> Option<f64> {
        let spec: wirelab_link::LinkSpec = self.link.as_deref()?.parse().ok()?;
        (spec.rtt_ns > 0).then(|| spec.rtt_ns as f64 / 1e6)
    }
}

/// A metric of `run`'s results: the keys of [`ResultFile::summary`], written in result files
/// in snake case (`p50_us`, `msg_per_s`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `p50_us`.
    P50Us,
    /// `p90_us`.
    P90Us,
    /// `p99_us`.
    P99Us,
    /// `p999_us`.
    P999Us,
    /// `max_us`.
    MaxUs,
    /// `service_p99_us`.
    ServiceP99Us,
    /// `lateness_p99_us`.
    LatenessP99Us,
    /// `msg_per_s`.
    MsgPerS,
    /// `goodput_mib_s`.
    GoodputMibS,
    /// `wire_bytes_per_msg`.
    WireBytesPerMsg,
    /// `datagrams_per_msg`.
    DatagramsPerMsg,
    /// `client_cpu_us_per_msg`.
    ClientCpuUsPerMsg,
    /// `server_cpu_us_per_msg`.
    ServerCpuUsPerMsg,
    /// `sustained_per_s`.
    SustainedPerS,
    /// `server_kib_per_idle_conn`.
    ServerKibPerIdleConn,
    /// `server_kib_per_active_conn`.
    ServerKibPerActiveConn,
    /// `conns_per_s`.
    ConnsPerS,
    /// `server_cpu_us_per_conn_setup`.
    ServerCpuUsPerConnSetup,
    /// `loss_pct`: datagram echoes that never came back, % of those sent.
    LossPct,
    /// `reorder_pct`: datagram echoes that came back after a later one, % of those received.
    ReorderPct,
    /// `delivery_p50_us`: fan-out, every delivery to a healthy subscriber.
    DeliveryP50Us,
    /// `delivery_p99_us`.
    DeliveryP99Us,
    /// `missed`: fan-out deliveries healthy subscribers never got.
    Missed,
    /// `stalled_missed`: fan-out deliveries stalled subscribers never got.
    StalledMissed,
    /// `cut_subscribers`: fan-out subscribers whose connection or stream was ended.
    CutSubscribers,
    /// `disordered`: fan-out deliveries that came twice or out of order.
    Disordered,
    /// `server_dropped`: fan-out deliveries the server dropped (drop-oldest).
    ServerDropped,
    /// `first_stream_done_ms`: a stream scenario with several streams, when the first stream
    /// had all its messages (the last one's is the elapsed time behind `goodput_mib_s`).
    FirstStreamDoneMs,
}

impl Metric {
    /// The name in result files.
    pub fn name(self) -> &'static str {
        match self {
            Self::P50Us => "p50_us",
            Self::P90Us => "p90_us",
            Self::P99Us => "p99_us",
            Self::P999Us => "p999_us",
            Self::MaxUs => "max_us",
            Self::ServiceP99Us => "service_p99_us",
            Self::LatenessP99Us => "lateness_p99_us",
            Self::MsgPerS => "msg_per_s",
            Self::GoodputMibS => "goodput_mib_s",
            Self::WireBytesPerMsg => "wire_bytes_per_msg",
            Self::DatagramsPerMsg => "datagrams_per_msg",
            Self::ClientCpuUsPerMsg => "client_cpu_us_per_msg",
            Self::ServerCpuUsPerMsg => "server_cpu_us_per_msg",
            Self::SustainedPerS => "sustained_per_s",
            Self::ServerKibPerIdleConn => "server_kib_per_idle_conn",
            Self::ServerKibPerActiveConn => "server_kib_per_active_conn",
            Self::ConnsPerS => "conns_per_s",
            Self::ServerCpuUsPerConnSetup => "server_cpu_us_per_conn_setup",
            Self::LossPct => "loss_pct",
            Self::ReorderPct => "reorder_pct",
            Self::DeliveryP50Us => "delivery_p50_us",
            Self::DeliveryP99Us => "delivery_p99_us",
            Self::Missed => "missed",
            Self::StalledMissed => "stalled_missed",
            Self::CutSubscribers => "cut_subscribers",
            Self::Disordered => "disordered",
            Self::ServerDropped => "server_dropped",
            Self::FirstStreamDoneMs => "first_stream_done_ms",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The metrics of one repetition, by name:
/// `p50_us p90_us p99_us p999_us max_us` (of `latency`), `msg_per_s`, `goodput_mib_s`,
/// `wire_bytes_per_msg`, `datagrams_per_msg`, `client_cpu_us_per_msg`, `server_cpu_us_per_msg`,
/// `service_p99_us`, `lateness_p99_us`, `sustained_per_s`.
pub fn metrics(rep: &Rep) -> BTreeMap<Metric, f64> {
    let mut m = BTreeMap::new();
    let mut put = |k: Metric, v: f64| {
        if v.is_finite() {
            m.insert(k, v);
        }
    };
    if let Some(h) = rep.latency.as_ref().and_then(|h| h.to_histogram().ok()) {
        if !h.is_empty() {
            let s = stats::summarize(&h);
            put(Metric::P50Us, s.p50_us);
            put(Metric::P90Us, s.p90_us);
            put(Metric::P99Us, s.p99_us);
            put(Metric::P999Us, s.p999_us);
            put(Metric::MaxUs, s.max_us);
        }
    }
    for (name, h) in [
        (Metric::ServiceP99Us, &rep.service),
        (Metric::LatenessP99Us, &rep.lateness),
    ] {
        if let Some(h) = h.as_ref().and_then(|h| h.to_histogram().ok()) {
            if !h.is_empty() {
                put(name, stats::summarize(&h).p99_us);
            }
        }
    }
    if rep.messages > 0 && rep.elapsed_s > 0.0 {
        put(Metric::MsgPerS, rep.messages as f64 / rep.elapsed_s);
        if rep.payload_bytes > 0 {
            put(
                Metric::GoodputMibS,
                rep.payload_bytes as f64 / rep.elapsed_s / (1 << 20) as f64,
            );
        }
    }
    if let (Some(c), true) = (&rep.cost, rep.messages > 0) {
        let per = |v: u64| v as f64 / rep.messages as f64;
        if let (Some(tx), Some(rx)) = (c.tx_bytes, c.rx_bytes) {
            // Each side on its own: a loaded file's counters may not add up within u64. Nothing
            // counted at all means the socket was not counted (wt's client makes its own).
            if tx > 0 || rx > 0 {
                put(Metric::WireBytesPerMsg, per(tx) + per(rx));
            }
        }
        if let Some(d) = c.datagrams.filter(|d| *d > 0) {
            put(Metric::DatagramsPerMsg, per(d));
        }
        if let Some(ns) = c.client_cpu_ns {
            put(Metric::ClientCpuUsPerMsg, per(ns) / 1000.0);
        }
        if let Some(ns) = c.server_cpu_ns {
            put(Metric::ServerCpuUsPerMsg, per(ns) / 1000.0);
        }
    }
    if let Some(r) = rep.sustained_per_s {
        put(Metric::SustainedPerS, r);
    }
    if let Some(first) = rep.stream_done_s.iter().copied().reduce(f64::min) {
        put(Metric::FirstStreamDoneMs, first * 1000.0);
    }
    if let Some(d) = rep.datagrams.filter(|d| d.sent > 0) {
        put(
            Metric::LossPct,
            100.0 * d.sent.saturating_sub(d.received) as f64 / d.sent as f64,
        );
        if d.received > 0 {
            put(
                Metric::ReorderPct,
                100.0 * d.reordered as f64 / d.received as f64,
            );
        }
    }
    if let Some(s) = rep.scale.filter(|s| s.connections > 0) {
        let n = s.connections as f64;
        put(
            Metric::ServerKibPerIdleConn,
            s.rss_idle_kib.saturating_sub(s.rss_base_kib) as f64 / n,
        );
        put(
            Metric::ServerKibPerActiveConn,
            s.rss_active_kib.saturating_sub(s.rss_base_kib) as f64 / n,
        );
        if s.setup_s > 0.0 {
            put(Metric::ConnsPerS, n / s.setup_s);
        }
        put(
            Metric::ServerCpuUsPerConnSetup,
            s.setup_cpu_ns as f64 / n / 1000.0,
        );
    }
    if let Some(f) = &rep.fanout {
        if let Some(h) = f.delivery.as_ref().and_then(|h| h.to_histogram().ok()) {
            if !h.is_empty() {
                let s = stats::summarize(&h);
                put(Metric::DeliveryP50Us, s.p50_us);
                put(Metric::DeliveryP99Us, s.p99_us);
            }
        }
        put(Metric::Missed, f.missed as f64);
        put(Metric::CutSubscribers, f.cut as f64);
        put(Metric::Disordered, f.disordered as f64);
        if f.stalled > 0 {
            put(Metric::StalledMissed, f.stalled_missed as f64);
        }
        if let Some(c) = f.server {
            put(Metric::ServerDropped, c.dropped as f64);
        }
    }
    m
}

/// Median and confidence interval of every metric over `reps`.
pub fn summarize(reps: &[Rep]) -> BTreeMap<Metric, Estimate> {
    let per: Vec<_> = reps.iter().map(metrics).collect();
    let mut names: Vec<Metric> = per.iter().flat_map(|m| m.keys().copied()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| {
            let xs: Vec<f64> = per.iter().filter_map(|m| m.get(&n).copied()).collect();
            stats::median_ci(&xs, CONFIDENCE).map(|e| (n, e))
        })
        .collect()
}

impl ResultFile {
    /// The merged latency histogram of all repetitions.
    pub fn merged_latency(&self) -> Option<hdrhistogram::Histogram<u64>> {
        let hs: Vec<_> = self
            .reps
            .iter()
            .filter_map(|r| r.latency.as_ref()?.to_histogram().ok())
            .collect();
        (!hs.is_empty()).then(|| stats::merge(&hs))
    }

    /// Parses and checks the text of one result file (pure: what [`load_dir`] does with each
    /// file). `origin` names the file in error messages.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        <Self as Saved>::from_json(text, origin)
    }
}

impl Saved for ResultFile {
    const SCHEMA: &'static str = SCHEMA;
    const WHAT: &'static str = "result";

    /// `DIR/<scenario>/<variant>.json`.
    fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.scenario.name)
            .join(format!("{}.json", self.variant.slug))
    }
}

/// Every result file under a run directory, in scenario then variant order of the run.
pub fn load_dir(dir: &Path) -> Result<Vec<ResultFile>> {
    let mut out: Vec<ResultFile> = crate::driver::load_dir(dir)?;
    out.sort_by_key(|r| {
        (
            kind_order(r.scenario.kind),
            r.scenario.name.clone(),
            order_of(&r.variant),
        )
    });
    Ok(out)
}

fn kind_order(k: Kind) -> u8 {
    match k {
        Kind::Echo => 0,
        Kind::Open => 1,
        Kind::Saturate => 2,
        Kind::Stream => 3,
        Kind::Setup => 4,
        Kind::Scale => 5,
        Kind::Datagram => 6,
        Kind::Fanout => 7,
    }
}

fn order_of(v: &VariantInfo) -> (usize, String) {
    let pos = crate::transports::LIST
        .iter()
        .position(|d| d.id.as_str() == v.transport)
        .unwrap_or(usize::MAX);
    (pos, v.label.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_loss_and_reordering_in_percent() {
        let rep = Rep {
            datagrams: Some(DatagramRep {
                sent: 200,
                received: 196,
                reordered: 2,
                duplicates: 0,
            }),
            ..Rep::default()
        };
        let m = metrics(&rep);
        assert!((m[&Metric::LossPct] - 2.0).abs() < 1e-9);
        assert!((m[&Metric::ReorderPct] - 100.0 * 2.0 / 196.0).abs() < 1e-9);
        // Nothing sent: no figure rather than 0% or NaN.
        let none = Rep {
            datagrams: Some(DatagramRep::default()),
            ..Rep::default()
        };
        assert!(!metrics(&none).contains_key(&Metric::LossPct));
        // No socket bytes counted (wt's client): no wire figure rather than 0 B.
        let uncounted = Rep {
            messages: 10,
            cost: Some(crate::probe::Cost {
                tx_bytes: Some(0),
                rx_bytes: Some(0),
                ..Default::default()
            }),
            ..Rep::default()
        };
        assert!(!metrics(&uncounted).contains_key(&Metric::WireBytesPerMsg));
    }

    #[test]
    fn metric_names_are_their_serde_names() {
        for m in [
            Metric::P50Us,
            Metric::P90Us,
            Metric::P99Us,
            Metric::P999Us,
            Metric::MaxUs,
            Metric::ServiceP99Us,
            Metric::LatenessP99Us,
            Metric::MsgPerS,
            Metric::GoodputMibS,
            Metric::WireBytesPerMsg,
            Metric::DatagramsPerMsg,
            Metric::ClientCpuUsPerMsg,
            Metric::ServerCpuUsPerMsg,
            Metric::SustainedPerS,
            Metric::ServerKibPerIdleConn,
            Metric::ServerKibPerActiveConn,
            Metric::ConnsPerS,
            Metric::ServerCpuUsPerConnSetup,
            Metric::LossPct,
            Metric::ReorderPct,
            Metric::DeliveryP50Us,
            Metric::DeliveryP99Us,
            Metric::Missed,
            Metric::StalledMissed,
            Metric::CutSubscribers,
            Metric::Disordered,
            Metric::ServerDropped,
            Metric::FirstStreamDoneMs,
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
            assert_eq!(m.to_string(), m.name());
        }
    }

    #[test]
    fn metrics_of_a_known_repetition() {
        let mut h = stats::histogram();
        for us in 1..=100u64 {
            h.record(us * 1000).unwrap();
        }
        let rep = Rep {
            messages: 100,
            elapsed_s: 0.5,
            payload_bytes: 100 * 1024,
            latency: Some(HistData::from_histogram(&h)),
            cost: Some(Cost {
                tx_bytes: Some(6400),
                rx_bytes: Some(6400),
                datagrams: Some(0),
                server_cpu_ns: Some(1_000_000),
                client_cpu_ns: Some(2_000_000),
            }),
            ..Rep::default()
        };
        let m = metrics(&rep);
        assert!((m[&Metric::P50Us] - 50.0).abs() < 0.1);
        assert_eq!(m[&Metric::MsgPerS], 200.0);
        assert_eq!(m[&Metric::WireBytesPerMsg], 128.0);
        assert_eq!(m[&Metric::ServerCpuUsPerMsg], 10.0);
        assert_eq!(m[&Metric::ClientCpuUsPerMsg], 20.0);
        assert!(!m.contains_key(&Metric::DatagramsPerMsg));
        assert!((m[&Metric::GoodputMibS] - 200.0 * 1024.0 / 1048576.0).abs() < 1e-9);
        let s = summarize(&vec![rep; 6]);
        assert_eq!(s[&Metric::MsgPerS].median, 200.0);
        assert_eq!(s[&Metric::MsgPerS].n, 6);
    }

    #[test]
    fn first_stream_done_is_the_earliest_stream() {
        let rep = Rep {
            messages: 48,
            elapsed_s: 0.3,
            payload_bytes: 48 << 16,
            stream_done_s: vec![0.2, 0.1, 0.3],
            ..Rep::default()
        };
        let m = metrics(&rep);
        assert!((m[&Metric::FirstStreamDoneMs] - 100.0).abs() < 1e-9);
        assert!(!metrics(&Rep::default()).contains_key(&Metric::FirstStreamDoneMs));
    }

    /// An input of the `result_json` fuzz target (fuzz/fuzz_targets/result_json.rs): a real
    /// result file whose first repetition's socket counters are at the top of u64. Its metrics
    /// overflowed adding the two directions.
    #[test]
    fn metrics_of_a_loaded_file_with_huge_counters() {
        const INPUT: &str = r#"{"schema":"wirelab.result/1","scenario":{"name":"echo_64B_c1_shared","about":"64-byte echoes on one stream (fuzz seed: few messages)","kind":"echo","sets":[],"size":"64B","streams":1,"sharing":"shared","messages":40,"rate":0.0,"duration_ms":0,"slo_ms":0.0,"zero_rtt":false},"variant":{"label":"tcp","slug":"tcp","transport":"tcp","tls":false,"mode":"duplex","floor":null},"env":{"wirelab":"0.1.0","git_rev":"4bf4ffb5ce3fbdf8c9c5f5631c5f04dcbe3a8178","git_state":"dirty","rustc":"rustc 1.95.0 (59807616e 2026-04-14)","profile":"debug","crates":{},"cpu_model":"AMD EPYC","cores":2,"cpus_allowed":"0-1","kernel":"6.18.44-fc-v657","tcp_congestion_control":"bbr","started":"2026-11-30T03:50:37Z","command":"target/debug/wirelab run --scenario /tmp/scn/echo_64B_c1_shared.toml --transports tcp,quic --reps 2 --warmup 0 --out /tmp/wl-res"},"warmup_reps":0,"reps":[{"messages":40,"elapsed_s":0.001666003,"payload_bytes":2560,"latency":null,"service":null,"lateness":null,"offered_per_s":null,"behind":null,"cost":{"tx_bytes":18446744073709551615,"rx_bytes":2720,"datagrams":0,"server_cpu_ns":710607,"client_cpu_ns":1060524},"steps":[],"sustained_per_s":null}],"summary":{},"notes":[]}"#;
        let r = ResultFile::from_json(INPUT, "fuzz input").unwrap();
        let m = metrics(&r.reps[0]);
        let want = (u64::MAX as f64 + 2720.0) / 40.0;
        assert!((m[&Metric::WireBytesPerMsg] / want - 1.0).abs() < 1e-12);
        assert!(summarize(&r.reps).contains_key(&Metric::WireBytesPerMsg));
    }
}
