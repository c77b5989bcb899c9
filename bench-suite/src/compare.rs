//! `wirelab compare A B`: a Markdown diff of two runs.

use std::fmt::Write as _;

use crate::report::fmt_estimate;
use crate::results::{Metric, ResultFile};
use crate::scenario::Kind;

fn key_metrics(kind: Kind) -> &'static [(Metric, f64, usize)] {
    match kind {
        Kind::Echo => &[
            (Metric::P50Us, 1.0, 1),
            (Metric::P99Us, 1.0, 1),
            (Metric::MsgPerS, 1.0, 0),
            (Metric::WireBytesPerMsg, 1.0, 0),
        ],
        Kind::Open => &[(Metric::P50Us, 1.0, 1), (Metric::P99Us, 1.0, 1)],
        Kind::Saturate => &[(Metric::SustainedPerS, 1.0, 0)],
        Kind::Stream => &[(Metric::GoodputMibS, 1.0, 1)],
        Kind::Setup => &[(Metric::P50Us, 1e-3, 2)],
        Kind::Scale => &[
            (Metric::ServerKibPerIdleConn, 1.0, 1),
            (Metric::ConnsPerS, 1.0, 0),
            (Metric::ServerCpuUsPerMsg, 1.0, 1),
        ],
        Kind::Fanout => &[
            (Metric::P50Us, 1.0, 1),
            (Metric::P99Us, 1.0, 1),
            (Metric::Missed, 1.0, 0),
        ],
    }
}

/// The diff: for every scenario and transport in both runs, each key metric in A and B, the
/// change of the median, and whether the 95% intervals are apart (a clear change) or overlap.
pub fn compare(a: &[ResultFile], b: &[ResultFile]) -> String {
    let mut s = String::from(
        "| scenario | transport | metric | A | B | change | |\n|---|---|---|---:|---:|---:|---|\n",
    );
    let mut only = Vec::new();
    for ra in a {
        let Some(rb) = b
            .iter()
            .find(|r| r.scenario.name == ra.scenario.name && r.variant.slug == ra.variant.slug)
        else {
            only.push(format!(
                "{} · {} (only in A)",
                ra.scenario.name, ra.variant.label
            ));
            continue;
        };
        for (m, scale, d) in key_metrics(ra.scenario.kind) {
            let (Some(ea), Some(eb)) = (ra.summary.get(m), rb.summary.get(m)) else {
                continue;
            };
            let change = if ea.median != 0.0 {
                format!("{:+.1}%", (eb.median / ea.median - 1.0) * 100.0)
            } else {
                "–".into()
            };
            let verdict = if ea.overlaps(eb) {
                "within CI"
            } else {
                "**clear**"
            };
            let metric = m
                .name()
                .replace("_us", if *scale == 1.0 { " µs" } else { " ms" });
            let _ = writeln!(
                s,
                "| {} | {} | {metric} | {} | {} | {change} | {verdict} |",
                ra.scenario.name,
                ra.variant.label,
                fmt_estimate(ea, *scale, *d),
                fmt_estimate(eb, *scale, *d),
            );
        }
    }
    for rb in b {
        if !a
            .iter()
            .any(|r| r.scenario.name == rb.scenario.name && r.variant.slug == rb.variant.slug)
        {
            only.push(format!(
                "{} · {} (only in B)",
                rb.scenario.name, rb.variant.label
            ));
        }
    }
    if !only.is_empty() {
        s.push_str("\nNot compared:\n");
        for o in only {
            let _ = writeln!(s, "- {o}");
        }
    }
    if let (Some(x), Some(y)) = (a.first(), b.first()) {
        let _ = writeln!(
            s,
            "\nA: {} at {} ({}); B: {} at {} ({}).",
            x.env.started,
            x.env.git_rev,
            x.env.cpu_model,
            y.env.started,
            y.env.git_rev,
            y.env.cpu_model
        );
    }
    s
}
