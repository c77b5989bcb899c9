//! `StreamRequest::from_query`, the parser of the `GET /stream?count=&size=&interval_ms=` query
//! every HTTP server (h1, h2, h3) runs on a client's URL.
//!
//! Asserts: no panic; an accepted query prints back (`to_query`) to a query that parses to the
//! same request; validation never panics and agrees with the fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelab_core::codec::{StreamRequest, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = StreamRequest::from_query(q) else {
        return;
    };
    let printed = r.to_query();
    assert_eq!(
        StreamRequest::from_query(&printed),
        Ok(r),
        "{q:?} -> {printed:?}"
    );
    let ok = r.validate(1 << 20, 1000).is_ok();
    assert_eq!(
        ok,
        (HEADER_LEN..=1 << 20).contains(&(r.size as usize)) && r.count <= 1000
    );
});
