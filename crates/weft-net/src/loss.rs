//! A seeded receive-side loss injector for tests (the kernel's `netem` is not
//! available everywhere): a two-state Gilbert model, so losses come in bursts.

use weft_proto::SplitMix;

use crate::NetError;

/// How much to drop. Opt-in: a channel without one drops nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    /// Seeds the drop decisions, so a run is reproducible.
    pub seed: u64,
    /// Long-run fraction of datagrams dropped, in [0, 1).
    pub probability: f64,
    /// Mean length of a run of drops, in datagrams (≥ 1; 1 means independent drops).
    pub mean_burst: f64,
}

/// Decides, datagram by datagram, whether to drop it.
///
/// In the "bad" state every datagram is dropped, in the "good" state none; a bad
/// run ends with probability `1 / mean_burst` per datagram, and one starts with
/// the probability that makes the long-run drop fraction `probability`.
#[derive(Clone, Debug)]
pub struct LossInjector {
    rng: SplitMix,
    enter_bad: f64,
    leave_bad: f64,
    bad: bool,
    dropped: u64,
}

impl LossInjector {
    /// An injector for `cfg`; a value out of range is an error naming it.
    pub fn new(cfg: LossConfig) -> Result<Self, NetError> {
        if !(0.0..1.0).contains(&cfg.probability) {
            return Err(NetError::Config(format!(
                "loss probability {}: expected 0 <= p < 1",
                cfg.probability
            )));
        }
        if !(cfg.mean_burst >= 1.0 && cfg.mean_burst.is_finite()) {
            return Err(NetError::Config(format!(
                "loss mean_burst {}: expected a finite number >= 1",
                cfg.mean_burst
            )));
        }
        let leave_bad = 1.0 / cfg.mean_burst;
        let enter_bad = cfg.probability * leave_bad / (1.0 - cfg.probability);
        Ok(Self {
            rng: SplitMix::new(cfg.seed),
            enter_bad,
            leave_bad,
            bad: false,
            dropped: 0,
        })
    }

    /// Whether to drop the next datagram.
    pub fn drop_next(&mut self) -> bool {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.bad = if self.bad {
            u >= self.leave_bad
        } else {
            u < self.enter_bad
        };
        self.dropped += self.bad as u64;
        self.bad
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_fraction_and_burst_length_match_the_configuration() {
        for (p, burst) in [(0.01, 1.0), (0.05, 1.0), (0.05, 4.0), (0.2, 2.0)] {
            let mut inj = LossInjector::new(LossConfig {
                seed: 9,
                probability: p,
                mean_burst: burst,
            })
            .unwrap();
            let n = 1_000_000;
            let (mut runs, mut prev) = (0u64, false);
            for _ in 0..n {
                let d = inj.drop_next();
                runs += (d && !prev) as u64;
                prev = d;
            }
            let frac = inj.dropped() as f64 / n as f64;
            let mean_run = inj.dropped() as f64 / runs as f64;
            assert!((frac - p).abs() < p * 0.1, "p {p}: measured {frac}");
            assert!(
                (mean_run - burst).abs() < burst * 0.1 + 0.05,
                "burst {burst}: {mean_run}"
            );
        }
    }

    #[test]
    fn out_of_range_settings_are_errors() {
        let bad = |probability, mean_burst| {
            LossInjector::new(LossConfig {
                seed: 1,
                probability,
                mean_burst,
            })
            .is_err()
        };
        assert!(bad(1.0, 1.0) && bad(-0.1, 1.0) && bad(0.1, 0.5) && bad(0.1, f64::NAN));
        assert!(!bad(0.0, 1.0));
    }
}
