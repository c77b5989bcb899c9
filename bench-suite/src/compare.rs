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
        Kind::Datagram => &[(Metric::LossPct, 1.0, 2), (Metric::P50Us, 1.0, 1)],
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

/// How a result's placement reads for a comparison: where, through what, its threads, and for
/// the QUIC transports their congestion controller.
fn placement_of(r: &ResultFile) -> String {
    let p = &r.placement;
    let mut out = p.kind.clone();
    if let Some(link) = &r.link {
        out.push_str(&format!(" ({link})"));
    }
    if let Some(server) = &p.server {
        out.push_str(&format!(" server {server}"));
    }
    out.push_str(&format!(", threads {}", p.cpu));
    // The QUIC controller changes QUIC's figures as a link does.
    if r.variant.transport == "quic" || r.variant.transport == "h3" || r.variant.transport == "wt" {
        out.push_str(&format!(", QUIC congestion control {}", p.quic_cc));
    }
    out
}

/// A paragraph that says so when the two runs ran in different placements (where they ran,
/// the link, where their threads ran): their differences may be the placement's, not the
/// code's. Empty when every result of both runs shares one placement.
fn placement_warning(a: &[ResultFile], b: &[ResultFile]) -> String {
    let set = |rs: &[ResultFile]| {
        let mut v: Vec<String> = rs.iter().map(placement_of).collect();
        v.sort();
        v.dedup();
        v
    };
    let (pa, pb) = (set(a), set(b));
    if pa == pb && pa.len() <= 1 {
        return String::new();
    }
    format!(
        "**Different placements: a change below may be the placement's, not the code's.** \
         A ran {}; B ran {}.\n\n",
        pa.join(" / "),
        pb.join(" / ")
    )
}

/// The diff: for every scenario and transport in both runs, each key metric in A and B, the
/// change of the median, and whether the 95% intervals are apart (a clear change) or overlap.
pub fn compare(a: &[ResultFile], b: &[ResultFile]) -> String {
    let mut s = placement_warning(a, b);
    s.push_str(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result_in(kind: &str, cpu: &str) -> ResultFile {
        let json = include_str!("../tests/data/result-tcp-setup.json");
        let mut r: ResultFile = serde_json::from_str(json).unwrap();
        r.placement.kind = kind.into();
        r.placement.cpu = cpu.into();
        r
    }

    #[test]
    fn compare_says_so_when_placements_differ() {
        let split = result_in("in-process", "split (client cpu 0, server cpu 1)");
        let free = result_in("in-process", "free");
        let same = compare(std::slice::from_ref(&split), std::slice::from_ref(&split));
        assert!(!same.contains("Different placements"), "{same}");
        let diff = compare(&[split], &[free]);
        assert!(diff.starts_with("**Different placements"), "{diff}");
        assert!(
            diff.contains("threads split (client cpu 0, server cpu 1)"),
            "{diff}"
        );
        assert!(
            diff.contains("B ran in-process (rtt=50ms,loss=0%,seed=1), threads free"),
            "{diff}"
        );
    }
}
