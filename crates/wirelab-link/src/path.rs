//! One direction of the emulated link: loss, then a rate-limited drop-tail byte queue, then
//! propagation delay with jitter. Given a packet's index, arrival time and size it says the
//! packet's fate; the forwarder only has to carry that out.

use std::collections::VecDeque;

use crate::loss::{LossModel, LossProcess};

/// The settings of one direction.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DirectionConfig {
    /// Loss model.
    pub loss: LossModel,
    /// Bottleneck rate in bits per second (`None`: unlimited, no queue).
    pub rate_bps: Option<u64>,
    /// Drop-tail queue capacity in bytes (ignored without a rate).
    pub queue_bytes: u64,
    /// One-way propagation delay, ns.
    pub delay_ns: u64,
    /// Jitter: each packet's delay is `delay ± jitter` (uniform), ns.
    pub jitter_ns: u64,
    /// Let jitter reorder packets (otherwise a packet never leaves before the one before it).
    pub reorder: bool,
    /// Seed for loss and jitter.
    pub seed: u64,
}

impl DirectionConfig {
    /// Whether these settings can be used (the checks [`Direction::new`] makes).
    pub fn check(&self) -> Result<(), String> {
        Direction::new(*self).map(|_| ())
    }
}

impl Default for DirectionConfig {
    fn default() -> Self {
        Self {
            loss: LossModel::None,
            rate_bps: None,
            queue_bytes: 0,
            delay_ns: 0,
            jitter_ns: 0,
            reorder: false,
            seed: 0,
        }
    }
}

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped by the loss model.
    Lost,
    /// Dropped because the bottleneck queue was full.
    QueueFull,
    /// Delivered at this time, ns.
    Deliver(u64),
}

/// Packets and bytes at every stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Packets offered.
    pub offered: u64,
    /// Bytes offered.
    pub offered_bytes: u64,
    /// Dropped by the loss model.
    pub lost: u64,
    /// Dropped at the full queue.
    pub queue_drops: u64,
    /// Scheduled for delivery.
    pub delivered: u64,
    /// Bytes scheduled for delivery.
    pub delivered_bytes: u64,
}

/// One direction's state.
#[derive(Debug)]
pub struct Direction {
    cfg: DirectionConfig,
    loss: LossProcess,
    /// When the bottleneck finishes sending what it holds, ns.
    busy_until: u64,
    /// Departure times and sizes of packets still in the queue.
    queued: VecDeque<(u64, u64)>,
    queued_bytes: u64,
    last_delivery: u64,
    counters: Counters,
}

impl Direction {
    /// A direction with nothing in flight.
    pub fn new(cfg: DirectionConfig) -> Result<Self, String> {
        cfg.loss.validate()?;
        if cfg.rate_bps == Some(0) {
            return Err("rate must be above 0 bit/s".into());
        }
        if cfg.jitter_ns > cfg.delay_ns {
            return Err("jitter cannot exceed the delay".into());
        }
        Ok(Self {
            loss: LossProcess::new(cfg.loss, cfg.seed),
            cfg,
            busy_until: 0,
            queued: VecDeque::new(),
            queued_bytes: 0,
            last_delivery: 0,
            counters: Counters::default(),
        })
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes in the queue at `now_ns` (before any new arrival).
    pub fn queued_bytes(&mut self, now_ns: u64) -> u64 {
        while let Some(&(dep, size)) = self.queued.front() {
            if dep > now_ns {
                break;
            }
            self.queued.pop_front();
            self.queued_bytes -= size;
        }
        self.queued_bytes
    }

    /// The fate of packet `index` (0, 1, 2, ... in arrival order) arriving at `now_ns` with
    /// `size` bytes (the IP packet).
    pub fn offer(&mut self, index: u64, now_ns: u64, size: u64) -> Fate {
        self.counters.offered += 1;
        self.counters.offered_bytes += size;
        if self.loss.lost(index) {
            self.counters.lost += 1;
            return Fate::Lost;
        }
        let departure = match self.cfg.rate_bps {
            None => now_ns,
            Some(rate) => {
                if self.queued_bytes(now_ns) + size > self.cfg.queue_bytes {
                    self.counters.queue_drops += 1;
                    return Fate::QueueFull;
                }
                let tx = (size * 8 * 1_000_000_000).div_ceil(rate);
                let dep = self.busy_until.max(now_ns) + tx;
                self.busy_until = dep;
                self.queued.push_back((dep, size));
                self.queued_bytes += size;
                dep
            }
        };
        let jitter = if self.cfg.jitter_ns == 0 {
            0i64
        } else {
            let u = crate::uniform(self.cfg.seed ^ 0x0017_7E12, index);
            ((u * 2.0 - 1.0) * self.cfg.jitter_ns as f64) as i64
        };
        let mut at = (departure + self.cfg.delay_ns).saturating_add_signed(jitter);
        if !self.cfg.reorder {
            at = at.max(self.last_delivery);
        }
        self.last_delivery = self.last_delivery.max(at);
        self.counters.delivered += 1;
        self.counters.delivered_bytes += size;
        Fate::Deliver(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn delay_alone_shifts_every_packet() {
        let mut d = Direction::new(DirectionConfig {
            delay_ns: 20 * MS,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(d.offer(0, 5, 1500), Fate::Deliver(20 * MS + 5));
        assert_eq!(d.offer(1, 7, 60), Fate::Deliver(20 * MS + 7));
    }

    #[test]
    fn the_bottleneck_serialises_at_its_rate_and_drops_at_the_tail() {
        // 12 Mbit/s: a 1500-byte packet takes 1 ms. Queue: 3 packets.
        let cfg = DirectionConfig {
            rate_bps: Some(12_000_000),
            queue_bytes: 4500,
            ..Default::default()
        };
        let mut d = Direction::new(cfg).unwrap();
        let fates: Vec<_> = (0..5).map(|i| d.offer(i, 0, 1500)).collect();
        assert_eq!(
            fates[..3],
            [
                Fate::Deliver(MS),
                Fate::Deliver(2 * MS),
                Fate::Deliver(3 * MS)
            ]
        );
        assert_eq!(fates[3..], [Fate::QueueFull, Fate::QueueFull]);
        // After the first packet has left there is room for one more, sent after the third.
        assert_eq!(d.offer(5, MS, 1500), Fate::Deliver(4 * MS));
        let c = d.counters();
        assert_eq!((c.offered, c.queue_drops, c.delivered), (6, 2, 4));
        // An idle link sends at once.
        assert_eq!(d.offer(6, 100 * MS, 1500), Fate::Deliver(101 * MS));
    }

    #[test]
    fn jitter_keeps_order_unless_reordering_is_asked_for() {
        let base = DirectionConfig {
            delay_ns: 20 * MS,
            jitter_ns: 5 * MS,
            seed: 1,
            ..Default::default()
        };
        let mut fifo = Direction::new(base).unwrap();
        let mut last = 0;
        let mut spread = (u64::MAX, 0);
        for i in 0..10_000u64 {
            let Fate::Deliver(at) = fifo.offer(i, i * 10_000, 100) else {
                unreachable!()
            };
            assert!(at >= last, "packet {i} overtook the one before");
            last = at;
            spread = (spread.0.min(at - i * 10_000), spread.1.max(at - i * 10_000));
        }
        // Holding a packet behind its predecessor never makes it later than the latest any
        // packet may be (its predecessor left no later than 25 ms after arriving, earlier),
        // and never earlier than the earliest: every delay stays within 20 ± 5 ms. And the
        // jitter is really there: the delays reach both ends of the range.
        assert!(spread.0 >= 15 * MS && spread.1 <= 25 * MS, "{spread:?}");
        assert!(spread.1 > 24 * MS, "{spread:?}");
        // Packets 10 ms apart (more than the jitter's span) are never held: their delays
        // cover the whole range, down to its low end.
        let mut sparse = Direction::new(base).unwrap();
        let low = (0..1000u64)
            .map(|i| match sparse.offer(i, i * 10 * MS, 100) {
                Fate::Deliver(at) => at - i * 10 * MS,
                other => panic!("{other:?}"),
            })
            .min()
            .unwrap();
        assert!((15 * MS..16 * MS).contains(&low), "{low}");
        let mut any = Direction::new(DirectionConfig {
            reorder: true,
            ..base
        })
        .unwrap();
        let mut overtaken = 0;
        let mut last = 0;
        for i in 0..10_000u64 {
            let Fate::Deliver(at) = any.offer(i, i * 10_000, 100) else {
                unreachable!()
            };
            if at < last {
                overtaken += 1;
            }
            last = last.max(at);
            assert!((15 * MS..=25 * MS).contains(&(at - i * 10_000)));
        }
        assert!(overtaken > 100, "{overtaken}");
    }

    #[test]
    fn losses_come_before_the_queue_and_are_counted() {
        let cfg = DirectionConfig {
            loss: LossModel::Bernoulli { p: 0.5 },
            seed: 2,
            ..Default::default()
        };
        let mut d = Direction::new(cfg).unwrap();
        for i in 0..1000 {
            d.offer(i, 0, 100);
        }
        let c = d.counters();
        assert_eq!(c.lost + c.delivered, 1000);
        assert!((400..600).contains(&c.lost), "{c:?}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Direction::new(DirectionConfig {
            rate_bps: Some(0),
            ..Default::default()
        })
        .is_err());
        assert!(Direction::new(DirectionConfig {
            delay_ns: 1,
            jitter_ns: 2,
            ..Default::default()
        })
        .is_err());
    }
}
