//! Statistics, free of I/O and time: latency histograms (HdrHistogram, nanoseconds, 3
//! significant digits), their summaries and a portable form for the JSON results, and the
//! median of repetitions with a distribution-free confidence interval.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A new histogram for values from 1 ns to 100 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant bounds are valid")
}

/// A latency summary in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest value.
    pub max_us: f64,
}

/// The percentiles of `h`, in microseconds.
pub fn summarize(h: &Histogram<u64>) -> Summary {
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

/// A histogram as it is kept in the JSON results: its recorded buckets as
/// `[value_ns, count]` pairs (each value stands for its bucket, to 3 significant digits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistData(pub Vec<[u64; 2]>);

impl HistData {
    /// The recorded buckets of `h`.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Self(
            h.iter_recorded()
                .map(|v| {
                    [
                        h.highest_equivalent(v.value_iterated_to()),
                        v.count_at_value(),
                    ]
                })
                .collect(),
        )
    }

    /// Rebuilds a histogram; fails on values over 100 s.
    pub fn to_histogram(&self) -> Result<Histogram<u64>, String> {
        let mut h = histogram();
        for [v, n] in &self.0 {
            h.record_n(*v, *n)
                .map_err(|e| format!("histogram value {v} ns: {e}"))?;
        }
        Ok(h)
    }
}

/// Merges histograms (e.g. the repetitions of one measurement).
pub fn merge<'a>(hs: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut out = histogram();
    for h in hs {
        out.add(h).expect("histograms share the same bounds");
    }
    out
}

/// A median with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Median of the samples.
    pub median: f64,
    /// Lower end of the interval (an order statistic).
    pub lo: f64,
    /// Upper end of the interval (an order statistic).
    pub hi: f64,
    /// The interval's actual coverage: at least the level asked for when the sample is large
    /// enough, otherwise the best reachable (min..max covers `1 - 2 * 0.5^n`).
    pub level: f64,
    /// Number of samples.
    pub n: usize,
}

/// P(X <= k) for X ~ Binomial(n, 1/2).
fn binom_half_cdf(k: usize, n: usize) -> f64 {
    let mut c = 1.0f64; // C(n, 0)
    let mut sum = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            c = c * (n + 1 - i) as f64 / i as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}

/// The median of `samples` with a distribution-free confidence interval: the order statistics
/// `x(j)..x(n+1-j)` with the largest `j` whose coverage `1 - 2 P(B <= j-1)`, `B ~ Bin(n, 1/2)`,
/// is at least `level`. Needs no assumption about the distribution (repetition results are
/// often skewed). With too few samples for `level` (n = 5 reaches only 93.75%; n >= 6 reaches
/// 95%) the interval is min..max and `level` in the result says what it covers. Non-finite
/// samples are ignored; `None` when none are left.
pub fn median_ci(samples: &[f64], level: f64) -> Option<Estimate> {
    let mut x: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if x.is_empty() {
        return None;
    }
    x.sort_by(f64::total_cmp);
    let n = x.len();
    let median = if n % 2 == 1 {
        x[n / 2]
    } else {
        (x[n / 2 - 1] + x[n / 2]) / 2.0
    };
    let coverage = |j: usize| 1.0 - 2.0 * binom_half_cdf(j - 1, n);
    let mut j = 1;
    while j < n.div_ceil(2) && coverage(j + 1) >= level {
        j += 1;
    }
    Some(Estimate {
        median,
        lo: x[j - 1],
        hi: x[n - j],
        level: coverage(j),
        n,
    })
}

impl Estimate {
    /// Whether two intervals overlap (then the difference of the medians is not clear).
    pub fn overlaps(&self, other: &Estimate) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
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

    #[test]
    fn merging_is_the_same_as_recording_everything_once() {
        // Two halves of 1..=2000 us: odd values in one, even in the other.
        let (mut a, mut b, mut all) = (histogram(), histogram(), histogram());
        for us in 1..=2000u64 {
            let ns = us * 1000;
            if us % 2 == 1 { &mut a } else { &mut b }
                .record(ns)
                .unwrap();
            all.record(ns).unwrap();
        }
        let m = merge([&a, &b]);
        assert_eq!(m.len(), 2000);
        assert_eq!(summarize(&m), summarize(&all));
        let s = summarize(&m);
        assert!((s.p50_us - 1000.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999_us - 1998.0).abs() <= 2.0, "{s:?}");
        // A 200 ms outlier in one of them shows in the merge's max and nowhere else.
        a.record(200_000_000).unwrap();
        let m = merge([&a, &b]);
        assert!((summarize(&m).max_us - 200_000.0).abs() <= 200.0);
        assert!((summarize(&m).p99_us - 1980.0).abs() <= 2.0);
    }

    #[test]
    fn histograms_survive_the_json_form() {
        let mut h = histogram();
        for v in [1u64, 7, 1000, 1001, 123_456, 99_000_000_000] {
            h.record_n(v, v % 5 + 1).unwrap();
        }
        let back = HistData::from_histogram(&h).to_histogram().unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(summarize(&back), summarize(&h));
        assert!(HistData(vec![[200_000_000_000, 1]]).to_histogram().is_err());
    }

    #[test]
    fn binomial_tail_matches_hand_computed_values() {
        assert_eq!(binom_half_cdf(0, 5), 1.0 / 32.0);
        assert_eq!(binom_half_cdf(1, 10), 11.0 / 1024.0);
        assert_eq!(binom_half_cdf(5, 5), 1.0);
    }

    #[test]
    fn confidence_interval_on_known_samples() {
        // n = 6: min..max covers 1 - 2/64 = 96.9% >= 95%.
        let e = median_ci(&[5.0, 1.0, 4.0, 2.0, 6.0, 3.0], 0.95).unwrap();
        assert_eq!((e.median, e.lo, e.hi, e.n), (3.5, 1.0, 6.0, 6));
        assert!((e.level - 0.96875).abs() < 1e-12);
        // n = 5 cannot reach 95%: min..max, and it says it covers 93.75%.
        let e = median_ci(&[10.0, 30.0, 20.0, 50.0, 40.0], 0.95).unwrap();
        assert_eq!((e.median, e.lo, e.hi), (30.0, 10.0, 50.0));
        assert!((e.level - 0.9375).abs() < 1e-12);
        // n = 10: j = 2 covers 1 - 2*11/1024 = 97.9%; j = 3 only 89.1%.
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        let e = median_ci(&xs, 0.95).unwrap();
        assert_eq!((e.median, e.lo, e.hi), (5.5, 2.0, 9.0));
        assert!((e.level - (1.0 - 22.0 / 1024.0)).abs() < 1e-12);
        // n = 20: j = 6 (coverage 95.9%), the textbook table's ranks 6 and 15.
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        let e = median_ci(&xs, 0.95).unwrap();
        assert_eq!((e.lo, e.hi), (6.0, 15.0));
        assert!(e.level >= 0.95 && e.level < 0.96, "{e:?}");
        // NaN is dropped; nothing left is None.
        assert_eq!(median_ci(&[f64::NAN, 2.0], 0.95).unwrap().median, 2.0);
        assert!(median_ci(&[], 0.95).is_none());
        let one = median_ci(&[7.0], 0.95).unwrap();
        assert_eq!((one.lo, one.hi, one.level), (7.0, 7.0, 0.0));
    }

    #[test]
    fn overlap() {
        let a = median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0.95).unwrap();
        let b = median_ci(&[7.0, 8.0, 9.0, 10.0, 11.0, 12.0], 0.95).unwrap();
        let c = median_ci(&[6.0, 8.0, 9.0, 10.0, 11.0, 12.0], 0.95).unwrap();
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c));
    }
}
