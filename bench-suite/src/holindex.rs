//! The head-of-line (HOL) blocking index: pure, from per-message records.
//!
//! Definition (docs: "Head-of-line blocking"). K logical streams send messages on a fixed
//! schedule; each message has an intended send time and a latency. With `base` the lowest
//! latency of the run (the path's floor) and a threshold `theta`:
//!
//! 1. A message is *overdue* from `sent + base + theta` until it arrives (`sent + latency`),
//!    if it arrives after that. A stream's overdue intervals, merged, are its *stalls*.
//! 2. For every stall `I` of stream `s` and every other stream `j`: `hit = 1` if a stall of
//!    `j` overlaps `I`, else 0; and `chance` = the probability that an interval as long as
//!    `I`, placed uniformly in the run, overlaps a stall of `j` (from `j`'s own stalls).
//! 3. `HOL index = Σ w (hit − chance) / Σ w (1 − chance)` over all such pairs, each weighted
//!    by the stall's length `w`: after a long blockage a TCP sender drains its backlog over
//!    a few round trips (congestion window), which leaves short, ragged tails of lateness
//!    on some streams and not others; weighting by length counts stalled *time*, so those
//!    tails weigh what they last.
//!
//! A loss that stalls only its own stream gives hits no more often than chance: index ≈ 0.
//! A loss that stalls every stream gives hit = 1 for every pair: index = 1. The chance term
//! keeps independent stalls that happen to coincide (likely at high loss and long RTTs) from
//! reading as head-of-line blocking; it is the same correction as Cohen's kappa. Building on
//! Marx et al., "Head-of-Line Blocking in QUIC and HTTP/3: The Details" (2020), which shows
//! per stream which data waited behind a loss; this condenses that view into one number
//! computed from what the application saw, without needing to decrypt packets.

/// A stream's records: (intended send time, latency), ns.
pub type StreamRecords = [(u64, u64)];

/// The index and what it was computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HolIndex {
    /// The index; `None` when no stream stalled (nothing to attribute).
    pub index: Option<f64>,
    /// Stalls over all streams.
    pub stalls: u64,
    /// The latency floor used, ns.
    pub base_ns: u64,
    /// The threshold used, ns.
    pub theta_ns: u64,
}

/// Merged overdue intervals of one stream, sorted.
pub fn stalls(records: &StreamRecords, base_ns: u64, theta_ns: u64) -> Vec<(u64, u64)> {
    let mut iv: Vec<(u64, u64)> = records
        .iter()
        .filter(|&&(_, lat)| lat > base_ns + theta_ns)
        .map(|&(sent, lat)| (sent + base_ns + theta_ns, sent + lat))
        .collect();
    iv.sort_unstable();
    merge(iv)
}

fn merge(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn overlaps(set: &[(u64, u64)], a: u64, b: u64) -> bool {
    // First interval ending after a; it overlaps if it starts before b.
    let i = set.partition_point(|&(_, end)| end <= a);
    set.get(i).is_some_and(|&(start, _)| start < b)
}

/// Probability that `[t, t + len]`, with `t` uniform in `[w0, w1]`, overlaps `set`.
fn chance(set: &[(u64, u64)], len: u64, w0: u64, w1: u64) -> f64 {
    if w1 <= w0 {
        return 0.0;
    }
    let widened: Vec<(u64, u64)> = set
        .iter()
        .map(|&(a, b)| (a.saturating_sub(len).max(w0), b.min(w1)))
        .filter(|&(a, b)| b > a)
        .collect();
    let covered: u64 = merge(widened).iter().map(|&(a, b)| b - a).sum();
    covered as f64 / (w1 - w0) as f64
}

/// The HOL index of a run (see the module docs).
pub fn hol_index(streams: &[Vec<(u64, u64)>], theta_ns: u64) -> HolIndex {
    let base_ns = streams
        .iter()
        .flatten()
        .map(|&(_, lat)| lat)
        .min()
        .unwrap_or(0);
    let w0 = streams.iter().flatten().map(|&(s, _)| s).min().unwrap_or(0);
    let w1 = streams
        .iter()
        .flatten()
        .map(|&(s, l)| s + l)
        .max()
        .unwrap_or(0);
    let sets: Vec<Vec<(u64, u64)>> = streams
        .iter()
        .map(|r| stalls(r, base_ns, theta_ns))
        .collect();
    let (mut num, mut den) = (0.0, 0.0);
    let mut n = 0u64;
    for (s, own) in sets.iter().enumerate() {
        for &(a, b) in own {
            n += 1;
            for (j, other) in sets.iter().enumerate() {
                if j == s {
                    continue;
                }
                let hit = if overlaps(other, a, b) { 1.0 } else { 0.0 };
                let p = chance(other, b - a, w0, w1);
                let w = (b - a) as f64;
                num += w * (hit - p);
                den += w * (1.0 - p);
            }
        }
    }
    HolIndex {
        index: (n > 0 && den > 0.0).then(|| num / den),
        stalls: n,
        base_ns,
        theta_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// K streams, one message per `period` each, staggered; `extra(stream, sent)` adds delay.
    fn run(
        k: usize,
        n: u64,
        period: u64,
        extra: impl Fn(usize, u64) -> u64,
    ) -> Vec<Vec<(u64, u64)>> {
        (0..k)
            .map(|s| {
                (0..n)
                    .map(|i| {
                        let sent = i * period + s as u64 * period / k as u64;
                        (sent, 20 * MS + extra(s, sent))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn no_stalls_no_index() {
        let r = run(8, 100, 10 * MS, |_, _| 0);
        let h = hol_index(&r, 5 * MS);
        assert_eq!(h.index, None);
        assert_eq!(h.stalls, 0);
        assert_eq!(h.base_ns, 20 * MS);
    }

    #[test]
    fn a_loss_that_blocks_everyone_scores_one() {
        // Every 500 ms a "loss" at t0 holds every message sent in [t0, t0 + 25 ms) until
        // t0 + 25 ms + the path: one shared connection.
        let hold = |_: usize, sent: u64| {
            let t0 = sent / (500 * MS) * (500 * MS) + 100 * MS;
            if sent >= t0 && sent < t0 + 25 * MS {
                t0 + 25 * MS - sent
            } else {
                0
            }
        };
        let h = hol_index(&run(8, 1000, 10 * MS, hold), 5 * MS);
        assert!(h.index.unwrap() > 0.99, "{h:?}");
        assert!(h.stalls >= 8 * 19, "{h:?}");
    }

    #[test]
    fn losses_that_block_only_their_stream_score_near_zero() {
        // Stream s is held at its own times (a pseudo-random phase per stream): independent
        // connections. Some stalls coincide by chance; the correction removes them.
        let hold = |s: usize, sent: u64| {
            let period = (300 + 37 * s as u64) * MS;
            let t0 = sent / period * period + (s as u64 * 53 % 200) * MS;
            if sent >= t0 && sent < t0 + 25 * MS {
                t0 + 25 * MS - sent
            } else {
                0
            }
        };
        let h = hol_index(&run(8, 1000, 10 * MS, hold), 5 * MS);
        let i = h.index.unwrap();
        assert!(i.abs() < 0.1, "{h:?}");
    }

    #[test]
    fn chance_is_the_covered_share_of_the_window() {
        let set = [(10, 20), (50, 60)];
        // Intervals of length 5 starting in [5, 20] or [45, 60] overlap: 30 of 100.
        assert!((chance(&set, 5, 0, 100) - 0.30).abs() < 1e-12);
        assert!(overlaps(&set, 15, 16));
        assert!(!overlaps(&set, 20, 50));
        assert!(overlaps(&set, 0, 11));
    }
}
