//! `wirelab compare A B`: a Markdown diff of two runs.

use std::fmt::Write as _;

use crate::report::fmt_estimate;
use crate::results::ResultFile;
use crate::scenario::Kind;

fn key_metrics(kind: Kind) -> &'static [(&'static str, f64, usize)] {
    match kind {
        Kind::Echo => &[
            ("p50_us", 1.0, 1),
            ("p99_us", 1.0, 1),
            ("msg_per_s", 1.0, 0),
            ("wire_bytes_per_msg", 1.0, 0),
        ],
        Kind::Open => &[("p50_us", 1.0, 1), ("p99_us", 1.0, 1)],
        Kind::Saturate => &[("sustained_per_s", 1.0, 0)],
        Kind::Stream => &[("goodput_mib_s", 1.0, 1)],
        Kind::Setup => &[("p50_us", 1e-3, 2)],
        Kind::Scale => &[
            ("server_kib_per_idle_conn", 1.0, 1),
            ("conns_per_s", 1.0, 0),
            ("server_cpu_us_per_msg", 1.0, 1),
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
            let (Some(ea), Some(eb)) = (ra.summary.get(*m), rb.summary.get(*m)) else {
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
            let metric = m.replace("_us", if *scale == 1.0 { " µs" } else { " ms" });
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
