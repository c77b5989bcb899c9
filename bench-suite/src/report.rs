//! `report.md` and the charts, rebuilt from the JSON results alone (`wirelab report DIR`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::chart;
use crate::results::{Metric, ResultFile, CONFIDENCE};
use crate::scenario::Kind;
use crate::stats::Estimate;

/// A table column: header, metric name, scale factor, decimals.
struct Col(&'static str, Metric, f64, usize);

fn columns(kind: Kind, streams: u32) -> Vec<Col> {
    match kind {
        Kind::Echo => vec![
            Col("p50 µs", Metric::P50Us, 1.0, 1),
            Col("p99 µs", Metric::P99Us, 1.0, 1),
            Col("p99.9 µs", Metric::P999Us, 1.0, 0),
            Col("max µs", Metric::MaxUs, 1.0, 0),
            Col("msg/s", Metric::MsgPerS, 1.0, 0),
            Col("wire B/msg", Metric::WireBytesPerMsg, 1.0, 0),
            Col("client CPU µs/msg", Metric::ClientCpuUsPerMsg, 1.0, 1),
            Col("server CPU µs/msg", Metric::ServerCpuUsPerMsg, 1.0, 1),
        ],
        Kind::Open => vec![
            Col("p50 µs (from intended)", Metric::P50Us, 1.0, 1),
            Col("p99 µs (from intended)", Metric::P99Us, 1.0, 1),
            Col("max µs", Metric::MaxUs, 1.0, 0),
            Col("p99 µs (from actual send)", Metric::ServiceP99Us, 1.0, 1),
            Col("send lateness p99 µs", Metric::LatenessP99Us, 1.0, 1),
            Col("wire B/msg", Metric::WireBytesPerMsg, 1.0, 0),
        ],
        Kind::Saturate => vec![Col("sustained msg/s", Metric::SustainedPerS, 1.0, 0)],
        Kind::Datagram => vec![
            Col("loss %", Metric::LossPct, 1.0, 2),
            Col("reordered %", Metric::ReorderPct, 1.0, 2),
            Col("p50 µs (echoes back)", Metric::P50Us, 1.0, 1),
            Col("p99 µs (echoes back)", Metric::P99Us, 1.0, 1),
            Col("echoes/s", Metric::MsgPerS, 1.0, 0),
        ],
        Kind::Stream => {
            let mut cols = vec![
                Col("goodput MiB/s", Metric::GoodputMibS, 1.0, 1),
                Col("msg/s", Metric::MsgPerS, 1.0, 0),
                Col("wire B/msg", Metric::WireBytesPerMsg, 1.0, 0),
                Col("client CPU µs/msg", Metric::ClientCpuUsPerMsg, 1.0, 2),
                Col("server CPU µs/msg", Metric::ServerCpuUsPerMsg, 1.0, 2),
            ];
            if streams > 1 {
                cols.insert(
                    1,
                    Col("first stream done ms", Metric::FirstStreamDoneMs, 1.0, 1),
                );
            }
            cols
        }
        Kind::Setup => vec![
            Col("p50 ms", Metric::P50Us, 1e-3, 2),
            Col("p90 ms", Metric::P90Us, 1e-3, 2),
            Col("max ms", Metric::MaxUs, 1e-3, 2),
        ],
        Kind::Scale => vec![
            Col("server KiB/idle conn", Metric::ServerKibPerIdleConn, 1.0, 1),
            Col(
                "server KiB/active conn",
                Metric::ServerKibPerActiveConn,
                1.0,
                1,
            ),
            Col("conns/s at set-up", Metric::ConnsPerS, 1.0, 0),
            Col(
                "server CPU µs/conn set-up",
                Metric::ServerCpuUsPerConnSetup,
                1.0,
                0,
            ),
            Col("server CPU µs/msg", Metric::ServerCpuUsPerMsg, 1.0, 1),
            Col("p50 µs", Metric::P50Us, 1.0, 1),
            Col("p99 µs", Metric::P99Us, 1.0, 1),
        ],
        Kind::Fanout => vec![
            Col("slowest sub p50 µs", Metric::P50Us, 1.0, 1),
            Col("slowest sub p99 µs", Metric::P99Us, 1.0, 1),
            Col("slowest sub max µs", Metric::MaxUs, 1.0, 0),
            Col("delivery p99 µs", Metric::DeliveryP99Us, 1.0, 1),
            Col("deliveries/s", Metric::MsgPerS, 1.0, 0),
            Col("missed", Metric::Missed, 1.0, 0),
            Col("stalled missed", Metric::StalledMissed, 1.0, 0),
            Col("cut off", Metric::CutSubscribers, 1.0, 0),
            Col("server dropped", Metric::ServerDropped, 1.0, 0),
            Col("out of order", Metric::Disordered, 1.0, 0),
        ],
    }
}

/// `median [lo–hi]`, scaled.
pub fn fmt_estimate(e: &Estimate, scale: f64, decimals: usize) -> String {
    if e.n > 1 {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            e.median * scale,
            e.lo * scale,
            e.hi * scale,
            d = decimals
        )
    } else {
        format!("{:.d$}", e.median * scale, d = decimals)
    }
}

/// The metric whose ratio to the floor is shown, per kind.
fn headline(kind: Kind) -> Option<Metric> {
    match kind {
        Kind::Echo | Kind::Open | Kind::Setup => Some(Metric::P50Us),
        _ => None,
    }
}

/// Groups results by scenario, keeping their order.
fn by_scenario(results: &[ResultFile]) -> Vec<(String, Vec<&ResultFile>)> {
    let mut out: Vec<(String, Vec<&ResultFile>)> = Vec::new();
    for r in results {
        match out.iter_mut().find(|(n, _)| *n == r.scenario.name) {
            Some((_, v)) => v.push(r),
            None => out.push((r.scenario.name.clone(), vec![r])),
        }
    }
    out
}

/// The Markdown table of one scenario.
pub fn table(rs: &[&ResultFile]) -> String {
    let Some(first) = rs.first() else {
        return String::new();
    };
    let kind = first.scenario.kind;
    let cols = columns(kind, first.scenario.streams);
    let mut s = String::from("| transport |");
    for c in &cols {
        let _ = write!(s, " {} |", c.0);
    }
    let head = headline(kind);
    if head.is_some() {
        s.push_str(" p50 ÷ floor |");
    }
    s.push_str("\n|---|");
    for _ in &cols {
        s.push_str("---:|");
    }
    if head.is_some() {
        s.push_str("---:|");
    }
    s.push('\n');
    let floors: BTreeMap<&str, f64> = rs
        .iter()
        .filter(|r| r.variant.floor.is_none())
        .filter_map(|r| Some((r.variant.transport.as_str(), r.summary.get(&head?)?.median)))
        .collect();
    for r in rs {
        let flag = if r.is_invalid() { " ⚠ invalid" } else { "" };
        let _ = write!(s, "| {}{flag} |", r.variant.label);
        for c in &cols {
            match r.summary.get(&c.1) {
                Some(e) => {
                    let _ = write!(s, " {} |", fmt_estimate(e, c.2, c.3));
                }
                None => s.push_str(" – |"),
            }
        }
        if let Some(h) = head {
            let ratio = r
                .variant
                .floor
                .as_deref()
                .and_then(|f| Some(r.summary.get(&h)?.median / floors.get(f)?));
            match ratio {
                Some(x) => {
                    let _ = write!(s, " {x:.2}× {} |", r.variant.floor.as_deref().unwrap_or(""));
                }
                None if r.variant.floor.is_none() => s.push_str(" floor |"),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    // Over an emulated link, setup also in round trips of that link.
    if kind == Kind::Setup {
        if let Some(rtt) = first.link_rtt_ms() {
            let _ = writeln!(
                s,
                "\nIn round trips of the emulated link ({}, RTT {rtt} ms), p50:",
                first.link.as_deref().unwrap_or("")
            );
            for r in rs {
                if let Some(e) = r.summary.get(&Metric::P50Us) {
                    let _ = writeln!(s, "- {}: {:.2} RTTs", r.variant.label, e.median / 1e3 / rtt);
                }
            }
        }
    }
    s
}

fn est(r: &ResultFile, m: Metric) -> Option<(String, Estimate)> {
    r.summary.get(&m).map(|e| (r.variant.label.clone(), *e))
}

/// Draws a scenario's charts into `dir/<scenario>/`; returns their file names.
fn charts(dir: &Path, name: &str, rs: &[&ResultFile]) -> Result<Vec<(String, String)>> {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub)?;
    let kind = rs[0].scenario.kind;
    let mut made = Vec::new();
    let mut bar =
        |file: &str, title: String, unit: &str, metric: Metric, scale: f64| -> Result<()> {
            let rows: Vec<_> = rs
                .iter()
                .filter_map(|r| est(r, metric))
                .map(|(l, e)| {
                    (
                        l,
                        Estimate {
                            median: e.median * scale,
                            lo: e.lo * scale,
                            hi: e.hi * scale,
                            ..e
                        },
                    )
                })
                .collect();
            if !rows.is_empty() {
                chart::bars(&sub.join(file), &title, unit, &rows)?;
                made.push((title, format!("{name}/{file}")));
            }
            Ok(())
        };
    match kind {
        Kind::Echo | Kind::Open => {
            bar(
                "throughput.svg",
                format!("{name}: messages/s (median, 95% CI)"),
                "messages/s",
                Metric::MsgPerS,
                1.0,
            )?;
            bar(
                "overhead.svg",
                format!("{name}: socket bytes per message, both ways"),
                "bytes/message",
                Metric::WireBytesPerMsg,
                1.0,
            )?;
            bar(
                "cpu.svg",
                format!("{name}: server CPU µs per message"),
                "µs/message",
                Metric::ServerCpuUsPerMsg,
                1.0,
            )?;
        }
        Kind::Saturate => bar(
            "throughput.svg",
            format!("{name}: highest sustained rate"),
            "messages/s",
            Metric::SustainedPerS,
            1.0,
        )?,
        Kind::Stream => bar(
            "throughput.svg",
            format!("{name}: goodput"),
            "MiB/s",
            Metric::GoodputMibS,
            1.0,
        )?,
        Kind::Setup => bar(
            "setup.svg",
            format!("{name}: time to first echo, p50"),
            "ms",
            Metric::P50Us,
            1e-3,
        )?,
        Kind::Datagram => bar(
            "loss.svg",
            format!("{name}: datagram echoes lost"),
            "% of those sent",
            Metric::LossPct,
            1.0,
        )?,
        Kind::Scale => bar(
            "memory.svg",
            format!("{name}: server memory per idle connection"),
            "KiB/connection",
            Metric::ServerKibPerIdleConn,
            1.0,
        )?,
        Kind::Fanout => bar(
            "slowest_p99.svg",
            format!("{name}: slowest subscriber's p99 per message (median, 95% CI)"),
            "µs",
            Metric::P99Us,
            1.0,
        )?,
    }
    if matches!(kind, Kind::Echo | Kind::Open | Kind::Fanout) {
        let series: Vec<_> = rs
            .iter()
            .filter_map(|r| Some((r.variant.label.clone(), r.merged_latency()?)))
            .collect();
        if !series.is_empty() {
            let title = format!("{name}: latency CDF, all repetitions merged");
            chart::latency_cdf(&sub.join("latency_cdf.svg"), &title, &series)?;
            made.insert(0, (title, format!("{name}/latency_cdf.svg")));
        }
    }
    Ok(made)
}

/// Writes `dir/report.md` and every chart from `results`; returns the report's path.
pub fn write(dir: &Path, results: &[ResultFile]) -> Result<PathBuf> {
    let mut md = String::new();
    let _ = writeln!(md, "# wirelab run\n");
    if let Some(e) = results.first().map(|r| &r.env) {
        let _ = writeln!(md, "| | |\n|---|---|");
        let crates: Vec<_> = e.crates.iter().map(|(k, v)| format!("{k} {v}")).collect();
        for (k, v) in [
            ("started", e.started.clone()),
            ("command", format!("`{}`", e.command)),
            (
                "wirelab",
                format!(
                    "{} ({} {}, {} build)",
                    e.wirelab, e.git_rev, e.git_state, e.profile
                ),
            ),
            ("compiler", e.rustc.clone()),
            (
                "CPU",
                format!(
                    "{} — {} usable, allowed CPUs {}",
                    e.cpu_model, e.cores, e.cpus_allowed
                ),
            ),
            (
                "kernel",
                format!(
                    "{} (TCP congestion control {})",
                    e.kernel, e.tcp_congestion_control
                ),
            ),
            ("crates", crates.join(", ")),
        ] {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        let p = &results[0].placement;
        let mut kinds: Vec<String> = Vec::new();
        for r in results {
            let k = match &r.placement.browser {
                Some(b) => format!("{} ({b})", r.placement.kind),
                None => r.placement.kind.clone(),
            };
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        let _ = writeln!(
            md,
            "| placement | {} (clock {}; threads {}; QUIC congestion control {}) |",
            kinds.join(", "),
            p.clock,
            p.cpu,
            p.quic_cc
        );
        if let Some(se) = &p.server_env {
            let _ = writeln!(
                md,
                "| server | {} — wirelab {} ({} {}, {} build); {} × {}; kernel {} (TCP congestion control {}) |",
                p.server.as_deref().unwrap_or("?"),
                se.wirelab,
                se.git_rev,
                se.git_state,
                se.profile,
                se.cores,
                se.cpu_model,
                se.kernel,
                se.tcp_congestion_control
            );
        }
        if e.profile != "release" {
            md.push_str("\n**This is a debug build: its figures are not comparable. Use `cargo run --release`.**\n");
        }
    }
    let reps = results.first().map_or(0, |r| r.reps.len());
    let level = results
        .iter()
        .flat_map(|r| r.summary.values())
        .map(|e| e.level)
        .fold(f64::INFINITY, f64::min);
    let _ = writeln!(
        md,
        "\n{}. Each cell is the median over {reps} \
         repetitions (after {} warm-up) with a distribution-free confidence interval in brackets \
         (asked: {:.0}%, reached: {:.1}%). Definitions: the methodology chapter (docs/src/methodology.md).\n",
        results.first().map_or_else(
            || "No results".to_string(),
            |r| r.placement.describe(r.link.as_deref())
        ),
        results.first().map_or(0, |r| r.warmup_reps),
        CONFIDENCE * 100.0,
        if level.is_finite() { level * 100.0 } else { 0.0 },
    );
    for (name, rs) in by_scenario(results) {
        let _ = writeln!(md, "## {name}\n\n{}\n", rs[0].scenario.about);
        md.push_str(&table(&rs));
        for r in &rs {
            if !r.placement.negotiated.is_empty() {
                let _ = writeln!(
                    md,
                    "\n- **{}**: the browser used {}",
                    r.variant.label,
                    r.placement.negotiated.join("; ")
                );
            }
            for n in &r.notes {
                let _ = writeln!(md, "\n- **{}**: {n}", r.variant.label);
            }
        }
        md.push('\n');
        for (title, file) in charts(dir, &name, &rs)? {
            let _ = writeln!(md, "![{title}]({file})\n");
        }
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md)?;
    Ok(path)
}

/// The comparison tables for the terminal: one per scenario.
pub fn terminal(results: &[ResultFile]) -> String {
    let mut out = String::new();
    for (name, rs) in by_scenario(results) {
        let _ = writeln!(out, "\n{name} — {}\n", rs[0].scenario.about);
        out.push_str(&table(&rs));
    }
    out
}
