//! `wirelab.hol/1` files (`HolResult::from_json`, what `wirelab hol --report DIR` loads), then
//! the pure parts of the report over them: cell names, medians, validity, the link specs.
//!
//! Asserts: no panic; an accepted file has the schema, and printed as JSON and loaded again it
//! prints the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelab::hol::{HolResult, SCHEMA};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = HolResult::from_json(data, "fuzz.json") else {
        return;
    };
    assert_eq!(r.schema, SCHEMA);
    let printed = serde_json::to_vec(&r).unwrap();
    let back = HolResult::from_json(&printed, "printed.json")
        .unwrap_or_else(|e| panic!("printed form fails: {e:#}"));
    assert_eq!(
        serde_json::to_vec(&back).unwrap(),
        printed,
        "loading the printed form changed it"
    );

    let _ = r.cell.name();
    let _ = r.invalid();
    let _ = r.median(|x| Some(x.p99_ms));
    let _ = r.median(|x| x.hol_index);
    for rep in &r.reps {
        let _ = rep.link.spec.parse::<wirelab_link::LinkSpec>();
    }
});
