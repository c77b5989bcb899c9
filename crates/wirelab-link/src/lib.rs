//! The link emulator's per-direction models, free of I/O and clocks: loss (Bernoulli and
//! Gilbert-Elliott), a rate-limited drop-tail byte queue, and propagation delay with jitter
//! that keeps packets in order. Time is passed in as nanoseconds, randomness comes from a seed
//! and the packet's index, so the same seed gives every transport the same losses.
//!
//! This crate is the pure half of `wirelab-link` (issue #6). The TUN forwarder, the network
//! namespaces and `wirelab link check` / `wirelab hol` that drive it are not built yet.

pub mod loss;
pub mod path;

pub use loss::{LossModel, LossProcess};
pub use path::{Counters, Direction, DirectionConfig, Fate};

/// A uniform number in [0, 1) from a seed and an index (SplitMix64 of their mix): the same
/// pair always gives the same number, whatever was asked before.
pub fn uniform(seed: u64, index: u64) -> f64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn uniform_is_a_function_of_seed_and_index_and_looks_uniform() {
        assert_eq!(super::uniform(7, 42), super::uniform(7, 42));
        assert_ne!(super::uniform(7, 42), super::uniform(8, 42));
        let n = 100_000;
        let mean: f64 = (0..n).map(|i| super::uniform(1, i)).sum::<f64>() / n as f64;
        // Mean of U(0,1): 0.5 with standard error 0.289/sqrt(n) = 0.0009.
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let below: usize = (0..n).filter(|&i| super::uniform(1, i) < 0.1).count();
        assert!((9_000..11_000).contains(&below), "{below}");
    }
}
