//! Scenario files (`Scenario::parse`: TOML, then validation), as `--scenario FILE` reads them.
//!
//! The input is `NAME\nTOML`: the first line is the file stem. The TOML is also parsed under the
//! name its parameters give it, so validation is reached past the name check.
//!
//! Asserts: no panic; an accepted scenario is valid, is named by its parameters, has a size
//! label that is canonical and in range, and survives TOML serialisation (printed and parsed
//! again it is the same scenario) and JSON, as result files hold it (a float may move by one
//! unit in the last place: see `json_eq`).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod json_eq;
use wirelab::scenario::{size_label, Scenario};

fn check(s: &Scenario, name: &str) {
    assert_eq!(s.name, name);
    assert_eq!(s.validate(), Ok(()));
    assert_eq!(s.canonical_name(), s.name);
    let size = s.size_bytes();
    assert!((32..=16 << 20).contains(&size), "size {size}");
    assert_eq!(size_label(size), s.size);
    assert!((1..=1000).contains(&s.streams));
    let text = toml::to_string(s).unwrap_or_else(|e| panic!("{s:?} does not print: {e}"));
    let back = Scenario::parse(name, &text)
        .unwrap_or_else(|e| panic!("{s:?} printed as {text:?}, which fails: {e}"));
    assert_eq!(&back, s, "printed as {text:?}");
    // As it is copied into every result file.
    let json = serde_json::to_value(s).unwrap();
    let loaded: Scenario = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{s:?} does not load back from JSON {json}: {e}"));
    if let Some(d) = json_eq::diff(&json, &serde_json::to_value(&loaded).unwrap(), "$") {
        panic!("{s:?} changes through JSON at {d}");
    }
    assert_eq!(loaded.validate(), Ok(()));
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (name, text) = input.split_once('\n').unwrap_or(("", input));
    if let Ok(s) = Scenario::parse(name, text) {
        check(&s, name);
    }
    // Past the name check: the name its parameters give it.
    if let Ok(raw) = toml::from_str::<Scenario>(text) {
        let name = raw.canonical_name();
        if let Ok(s) = Scenario::parse(&name, text) {
            check(&s, &name);
        }
    }
});
