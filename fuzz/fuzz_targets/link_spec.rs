//! `--link` specs (`LinkSpec::from_str`), typed by users on the command line and read back from
//! result files (`ResultFile::link`, `LinkRecord::spec`).
//!
//! Asserts: no panic; an accepted spec prints (`Display`) to a spec that parses back to the same
//! value; it gives a link whose two directions are usable (`DirectionConfig::check`) and whose
//! loss model has the asked mean loss rate; a few packets through each direction never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirelab_link::{Direction, Fate, LinkSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = text.parse::<LinkSpec>() else {
        return;
    };
    let printed = spec.to_string();
    let again: LinkSpec = printed
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, spec, "{text:?} printed as {printed:?}");
    assert!((0.0..1.0).contains(&spec.loss));
    assert!(spec.jitter_ns <= spec.rtt_ns / 2);
    let model = spec.loss_model();
    model.validate().unwrap();
    let mean = model.mean_loss();
    assert!(
        (mean - spec.loss).abs() <= 1e-9 * spec.loss.max(1.0),
        "{text:?}: mean loss {mean} for {}",
        spec.loss
    );
    let cfg = spec.config();
    for dir in [cfg.up, cfg.down] {
        dir.check()
            .unwrap_or_else(|e| panic!("{text:?} gives an unusable direction: {e}"));
        let mut d = Direction::new(dir).unwrap();
        let mut last = 0;
        for i in 0..8u64 {
            let now = i * 100_000;
            if let Fate::Deliver(at) = d.offer(i, now, 1500) {
                assert!(at >= last, "reordered without reorder");
                last = at;
            }
        }
    }
});
