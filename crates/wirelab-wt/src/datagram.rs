//! Datagram echo bookkeeping (pure, no I/O or time): which echoes came back, which were lost,
//! which arrived out of order or twice. Used by the harness's datagram echo workload.

/// What became of `sent` datagrams numbered `0..sent`, from the sequence numbers of the echoes
/// in the order they arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams whose echo arrived.
    pub received: u64,
    /// Echoes that arrived after an echo of a later datagram (a lower sequence number than
    /// the highest seen so far).
    pub reordered: u64,
    /// Echoes of a datagram already counted.
    pub duplicates: u64,
    /// Echoes with a sequence number never sent (counted nowhere else).
    pub unknown: u64,
}

impl Tally {
    /// Datagrams whose echo never arrived.
    pub fn lost(&self) -> u64 {
        self.sent - self.received
    }

    /// [`Tally::lost`] as a fraction of [`Tally::sent`] (0 when nothing was sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost() as f64 / self.sent as f64
        }
    }

    /// [`Tally::reordered`] as a fraction of [`Tally::received`] (0 when nothing arrived).
    pub fn reorder_ratio(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            self.reordered as f64 / self.received as f64
        }
    }
}

/// Counts echoes as they arrive.
#[derive(Debug, Clone)]
pub struct Tracker {
    seen: Vec<bool>,
    highest: Option<u64>,
    tally: Tally,
}

impl Tracker {
    /// A tracker for datagrams numbered `0..sent`.
    pub fn new(sent: u64) -> Self {
        Self {
            seen: vec![false; usize::try_from(sent).unwrap_or(usize::MAX)],
            highest: None,
            tally: Tally {
                sent,
                ..Tally::default()
            },
        }
    }

    /// Records the echo of datagram `seq`; returns whether it was new (not a duplicate or
    /// unknown).
    pub fn record(&mut self, seq: u64) -> bool {
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.seen.get_mut(i)) else {
            self.tally.unknown += 1;
            return false;
        };
        if *slot {
            self.tally.duplicates += 1;
            return false;
        }
        *slot = true;
        self.tally.received += 1;
        match self.highest {
            Some(h) if seq < h => self.tally.reordered += 1,
            _ => self.highest = Some(seq),
        }
        true
    }

    /// Whether every datagram's echo has arrived.
    pub fn complete(&self) -> bool {
        self.tally.received == self.tally.sent
    }

    /// The counts so far (final once the wait for stragglers is over: what has not arrived is
    /// lost).
    pub fn tally(&self) -> Tally {
        self.tally.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_nothing_lost() {
        let mut t = Tracker::new(4);
        for s in 0..4 {
            assert!(t.record(s));
        }
        assert!(t.complete());
        let y = t.tally();
        assert_eq!(
            (y.received, y.lost(), y.reordered, y.duplicates),
            (4, 0, 0, 0)
        );
        assert_eq!(y.loss_ratio(), 0.0);
    }

    #[test]
    fn loss_reorder_duplicates_unknown() {
        let mut t = Tracker::new(10);
        for s in [0, 2, 1, 5, 3, 3, 9, 42] {
            t.record(s);
        }
        let y = t.tally();
        assert_eq!(y.received, 6);
        assert_eq!(y.lost(), 4);
        // 1 after 2, 3 after 5.
        assert_eq!(y.reordered, 2);
        assert_eq!(y.duplicates, 1);
        assert_eq!(y.unknown, 1);
        assert!(!t.complete());
        assert!((y.loss_ratio() - 0.4).abs() < 1e-12);
        assert!((y.reorder_ratio() - 2.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn empty() {
        let t = Tracker::new(0);
        assert!(t.complete());
        assert_eq!(t.tally().loss_ratio(), 0.0);
        assert_eq!(t.tally().reorder_ratio(), 0.0);
    }
}
