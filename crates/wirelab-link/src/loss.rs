//! Loss models, decided by packet index.

/// Which packets a direction loses.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LossModel {
    /// Nothing is lost.
    None,
    /// Each packet is lost with probability `p`, independently.
    Bernoulli {
        /// Loss probability, 0..=1.
        p: f64,
    },
    /// Gilbert-Elliott: a two-state Markov chain. In the good state a packet is lost with
    /// `loss_good`, in the bad state with `loss_bad`; after each packet the chain moves
    /// good -> bad with probability `p` and bad -> good with probability `r`.
    GilbertElliott {
        /// Good -> bad transition probability per packet.
        p: f64,
        /// Bad -> good transition probability per packet.
        r: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl LossModel {
    /// Checks that every probability is in 0..=1 (and that a Gilbert-Elliott chain can leave
    /// the bad state).
    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v} is not a probability (0..=1)"))
            }
        };
        match *self {
            LossModel::None => Ok(()),
            LossModel::Bernoulli { p } => prob("loss", p),
            LossModel::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                prob("p", p)?;
                prob("r", r)?;
                prob("loss_good", loss_good)?;
                prob("loss_bad", loss_bad)?;
                if r == 0.0 && p > 0.0 {
                    return Err("r = 0: the chain never leaves the bad state".into());
                }
                Ok(())
            }
        }
    }

    /// The long-run loss rate.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli { p } => p,
            LossModel::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                if p + r == 0.0 {
                    return loss_good;
                }
                let bad = p / (p + r);
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }

    /// The mean number of packets in a bad-state sojourn (`1 / r`): with `loss_bad = 1` and
    /// `loss_good = 0`, the mean loss burst length.
    pub fn mean_bad_sojourn(&self) -> Option<f64> {
        match *self {
            LossModel::GilbertElliott { r, .. } if r > 0.0 => Some(1.0 / r),
            _ => None,
        }
    }
}

/// A loss model run over packet indices 0, 1, 2, ... with a seed. Bernoulli decisions depend
/// only on (seed, index); the Gilbert-Elliott chain is advanced index by index, so indices
/// must be asked in increasing order (a skipped index still moves the chain).
#[derive(Debug, Clone)]
pub struct LossProcess {
    model: LossModel,
    seed: u64,
    next: u64,
    bad: bool,
}

impl LossProcess {
    /// A process starting at index 0, in the good state.
    pub fn new(model: LossModel, seed: u64) -> Self {
        Self {
            model,
            seed,
            next: 0,
            bad: false,
        }
    }

    /// Whether packet `index` is lost. An index below one already asked is answered from the
    /// current chain state (Gilbert-Elliott) or recomputed (Bernoulli).
    pub fn lost(&mut self, index: u64) -> bool {
        match self.model {
            LossModel::None => false,
            LossModel::Bernoulli { p } => crate::uniform(self.seed, index) < p,
            LossModel::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                // Advance the chain through any skipped indices.
                while self.next < index {
                    self.step(self.next, p, r);
                    self.next += 1;
                }
                let lp = if self.bad { loss_bad } else { loss_good };
                let lost = crate::uniform(self.seed, 2 * index + 1) < lp;
                if self.next == index {
                    self.step(index, p, r);
                    self.next += 1;
                }
                lost
            }
        }
    }

    fn step(&mut self, index: u64, p: f64, r: f64) {
        let u = crate::uniform(self.seed ^ 0x5EED, 2 * index);
        self.bad = if self.bad { u >= r } else { u < p };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(model: LossModel, seed: u64, n: u64) -> Vec<bool> {
        let mut lp = LossProcess::new(model, seed);
        (0..n).map(|i| lp.lost(i)).collect()
    }

    #[test]
    fn bernoulli_one_percent_within_sampling_error() {
        let n = 200_000;
        let lost = run(LossModel::Bernoulli { p: 0.01 }, 3, n)
            .iter()
            .filter(|l| **l)
            .count();
        // Binomial sd = sqrt(n p (1-p)) = 44.5: within 4 sd of 2000.
        assert!((lost as f64 - 2000.0).abs() < 4.0 * 44.5, "{lost}");
    }

    #[test]
    fn the_same_seed_gives_the_same_losses_whatever_the_order() {
        let m = LossModel::Bernoulli { p: 0.05 };
        let a = run(m, 9, 1000);
        let mut lp = LossProcess::new(m, 9);
        let backwards: Vec<bool> = (0..1000).rev().map(|i| lp.lost(i)).collect();
        assert_eq!(a, backwards.into_iter().rev().collect::<Vec<_>>());
        let ge = LossModel::GilbertElliott {
            p: 0.01,
            r: 0.3,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        assert_eq!(run(ge, 5, 5000), run(ge, 5, 5000));
        assert_ne!(run(ge, 5, 5000), run(ge, 6, 5000));
    }

    #[test]
    fn gilbert_elliott_mean_loss_and_burst_length_match_the_model() {
        // The shared notes' case: p = 0.005, r = 0.25, bad loses all, good none:
        // mean loss p/(p+r) = 1.96%, mean burst 1/r = 4.
        let m = LossModel::GilbertElliott {
            p: 0.005,
            r: 0.25,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        let n = 400_000;
        let xs = run(m, 11, n);
        let lost = xs.iter().filter(|l| **l).count() as f64;
        let rate = lost / n as f64;
        assert!(
            (rate - m.mean_loss()).abs() < 0.003,
            "{rate} vs {}",
            m.mean_loss()
        );
        let mut bursts = 0usize;
        for i in 0..xs.len() {
            if xs[i] && (i == 0 || !xs[i - 1]) {
                bursts += 1;
            }
        }
        let mean_burst = lost / bursts as f64;
        assert!((mean_burst - 4.0).abs() < 0.3, "{mean_burst}");
        assert_eq!(m.mean_bad_sojourn(), Some(4.0));
    }

    #[test]
    fn skipped_indices_still_move_the_chain() {
        let m = LossModel::GilbertElliott {
            p: 0.1,
            r: 0.2,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        let all = run(m, 4, 100);
        let mut lp = LossProcess::new(m, 4);
        assert_eq!(lp.lost(50), all[50]);
        assert_eq!(lp.lost(99), all[99]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(LossModel::Bernoulli { p: 1.5 }.validate().is_err());
        let stuck = LossModel::GilbertElliott {
            p: 0.1,
            r: 0.0,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        assert!(stuck.validate().unwrap_err().contains("never leaves"));
        assert!(LossModel::None.validate().is_ok());
    }
}
