//! Latency statistics over an HdrHistogram (nanosecond values, 3 significant digits).

use hdrhistogram::Histogram;

/// A latency summary in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// A new histogram for values from 1 ns to 100 s.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant bounds are valid")
}

pub(crate) fn summarize(h: &Histogram<u64>) -> Summary {
    let us = |ns: u64| ns as f64 / 1000.0;
    Summary {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_uniform_sample() {
        let mut h = histogram();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).unwrap();
        }
        let s = summarize(&h);
        assert_eq!(s.count, 1000);
        // 3 significant digits: values are exact to 0.1%.
        assert!((s.p50_us - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
    }
}
