//! `wirelab.result/1` files (`ResultFile::from_json`, what `wirelab report` and `wirelab
//! compare` load), then what those commands compute from them: the terminal tables, the
//! comparison, the merged latency histogram, each repetition's metrics and their summary, and
//! the link's RTT.
//!
//! Asserts: no panic; an accepted file has the schema, and printed as JSON and loaded again it
//! is the same result (a float may move by one unit in the last place: see `json_eq`); every
//! metric of a repetition is finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod json_eq;
use wirelab::results::{self, ResultFile, SCHEMA};
use wirelab::{compare, report};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = ResultFile::from_json(text, "fuzz.json") else {
        return;
    };
    assert_eq!(r.schema, SCHEMA);
    let printed = serde_json::to_string(&r).unwrap();
    let back = ResultFile::from_json(&printed, "printed.json")
        .unwrap_or_else(|e| panic!("printed as {printed:?}, which fails: {e:#}"));
    if back != r {
        // Only a float may differ, by one unit in the last place (see json_eq).
        let (a, b) = (
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(&back).unwrap(),
        );
        if let Some(d) = json_eq::diff(&a, &b, "$") {
            panic!("printed and loaded again it differs at {d}; printed as {printed:?}");
        }
    }

    let one = std::slice::from_ref(&r);
    let _ = report::terminal(one);
    let _ = compare::compare(one, one);
    let _ = r.merged_latency();
    let _ = r.link_rtt_ms();
    for rep in &r.reps {
        for (name, v) in results::metrics(rep) {
            assert!(v.is_finite(), "metric {name} = {v}");
        }
    }
    let _ = results::summarize(&r.reps);
});
