//! `wirelab.hol/1` files (`HolResult::from_json`, what `wirelab hol --report DIR` loads), then
//! the pure parts of the report over them: cell names, medians, validity, the link specs.
//!
//! Asserts: no panic; an accepted file has the schema, and printed as JSON and loaded again it
//! is the same (a float may move by one unit in the last place: see `json_eq`).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod json_eq;
use wirelab::hol::{HolResult, SCHEMA};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = HolResult::from_json(data, "fuzz.json") else {
        return;
    };
    assert_eq!(r.schema, SCHEMA);
    let printed = serde_json::to_vec(&r).unwrap();
    let back = HolResult::from_json(&printed, "printed.json")
        .unwrap_or_else(|e| panic!("printed form fails: {e:#}"));
    let (a, b) = (
        serde_json::to_value(&r).unwrap(),
        serde_json::to_value(&back).unwrap(),
    );
    if let Some(d) = json_eq::diff(&a, &b, "$") {
        panic!("printed and loaded again it differs at {d}");
    }

    let _ = r.cell.name();
    let _ = r.invalid();
    let _ = r.median(|x| Some(x.p99_ms));
    let _ = r.median(|x| x.hol_index);
    for rep in &r.reps {
        let _ = rep.link.spec.parse::<wirelab_link::LinkSpec>();
    }
});
