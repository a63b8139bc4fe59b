//! From the steps of a ramp to the figures a stress run reports: the knee,
//! the saturation rate, and how long latency takes to come back.
//!
//! - **Saturation rate**: the most messages per second the path delivered
//!   to its slowest subscriber in any step (the ceiling; offering more only
//!   queues).
//! - **Knee**: the highest offered rate of a step that was not saturated
//!   and whose p99 stayed within [`KNEE_FACTOR`] times the p99 of the first
//!   (lowest-rate) step. Below it, latency is flat; above it, a queue forms.
//! - **Recovery**: after a step that queued (overload, a burst), the time
//!   from its end until every millisecond's largest latency is within
//!   [`KNEE_FACTOR`] times the same at low load ([`calm_worst`]) for
//!   [`CALM_MS`] milliseconds in a row.

use serde::{Deserialize, Serialize};

/// p99 within this factor of the lowest step's p99 is "flat": the knee rule.
/// Three: on this VM a low-load p99 moves by up to about 2x from step to
/// step on its own (the VM's levels), and a queue that forms multiplies it
/// by tens.
pub const KNEE_FACTOR: f64 = 3.0;

/// Milliseconds in a row at low latency that count as recovered.
pub const CALM_MS: usize = 10;

/// A step is saturated when the publisher could not send this share of
/// what it was asked to (it fell behind its schedule: the path pushed
/// back, or the publisher is the limit), or the subscribers took longer
/// than the step itself to catch up after it. Not from the subscribers'
/// rate within the step: a 10 ms hiccup of the VM stretches a 50 ms step's
/// receive times by a fifth without anything being saturated.
pub const SATURATED_BELOW: f64 = 0.95;

/// One step of a ramp, as the run merges it from the publisher's and the
/// subscribers' accounts (the slowest subscriber's figures).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub step: u32,
    /// What the step is: "warmup", "ramp", "overload", "recovery", "base",
    /// "burst".
    pub phase: String,
    pub offered_per_s: f64,
    /// Messages the publisher was scheduled to send in the step.
    pub scheduled: u64,
    /// Messages it sent (the rest it never offered: the application's queue
    /// when the path is saturated).
    pub sent: u64,
    pub seconds: f64,
    /// The slowest subscriber's rate: its messages over the time from its
    /// first to its last of the step.
    pub achieved_per_s: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// The p99 of a typical 10 ms window of the step (the median window's):
    /// what the knee is judged on, since one VM hiccup moves a whole step's
    /// p99 tenfold here and a queue moves every window's.
    pub window_p99_ns: u64,
    /// Offers refused for back-pressure (each retried until taken).
    pub backpressure: u64,
    /// Messages that needed at least one retry.
    pub backpressured_messages: u64,
    /// The largest backlog seen: messages sent but not yet received by the
    /// slowest subscriber.
    pub backlog_high_water: u64,
    /// That backlog as a share of the ring (shared-memory paths).
    pub ring_fill_high_water: f64,
    /// The busiest subscriber's share of the step's time spent in polls that
    /// found messages (its duty cycle).
    pub duty: f64,
    /// How long the subscribers took to catch up once the step ended, ms
    /// (0 after the overload, which the recovery follows at once).
    pub drain_ms: f64,
    /// A step that keeps its schedule (the overload, a burst): how long
    /// past its end the publisher took to send all it was asked to, ms.
    #[serde(default)]
    pub overrun_ms: f64,
    pub saturated: bool,
    /// Per millisecond of the step: the largest latency (ns) any
    /// subscriber saw.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub timeline: Vec<u64>,
}

/// Whether a step is saturated: see [`SATURATED_BELOW`].
pub fn saturated(s: &Step) -> bool {
    let scheduled = s.scheduled.max(1) as f64;
    let secs = scheduled / s.offered_per_s.max(1.0);
    (s.sent as f64) < SATURATED_BELOW * scheduled || s.drain_ms > 1e3 * secs
}

/// The saturation rate: the most any ramp step delivered.
pub fn saturation(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.phase == "ramp")
        .map(|s| s.achieved_per_s)
        .fold(0.0, f64::max)
}

/// The low-load p99: the median of the first three ramp steps' window p99s
/// (see [`Step::window_p99_ns`]).
pub fn baseline_p99(steps: &[Step]) -> u64 {
    let mut first: Vec<u64> = steps
        .iter()
        .filter(|s| s.phase == "ramp")
        .take(3)
        .map(|s| s.window_p99_ns)
        .collect();
    first.sort_unstable();
    first.get(first.len() / 2).copied().unwrap_or(0)
}

/// The knee: scanning the ramp up from the lowest step, the offered rate
/// of the last unsaturated step before the first two steps in a row whose
/// window p99 is more than [`KNEE_FACTOR`] times the baseline (one such
/// step alone, followed by a flat one, is a hiccup, not a queue). 0 when
/// the first steps already are.
pub fn knee(steps: &[Step]) -> f64 {
    let threshold = KNEE_FACTOR * baseline_p99(steps) as f64;
    let ramp: Vec<&Step> = steps.iter().filter(|s| s.phase == "ramp").collect();
    let mut knee = 0.0;
    for (i, s) in ramp.iter().enumerate() {
        let high = |s: &Step| s.saturated || s.window_p99_ns as f64 > threshold;
        if s.saturated || (high(s) && ramp.get(i + 1).is_none_or(|n| high(n))) {
            break;
        }
        if !high(s) {
            knee = s.offered_per_s;
        }
    }
    knee
}

/// The low-load worst latency per millisecond: the 90th percentile, over
/// the milliseconds of the first three ramp steps, of each one's worst
/// latency (what [`recovery_ms`] is judged against: a millisecond's worst
/// and a step's p99 are different statistics, and on this VM a tenth of
/// quiet milliseconds hold a hiccup; against the median, ten quiet
/// milliseconds in a row were often not found in a second).
pub fn calm_worst(steps: &[Step]) -> u64 {
    let mut ms: Vec<u64> = steps
        .iter()
        .filter(|s| s.phase == "ramp")
        .take(3)
        .flat_map(|s| s.timeline.iter().copied().filter(|&w| w > 0))
        .collect();
    ms.sort_unstable();
    ms.get(ms.len() * 9 / 10).copied().unwrap_or(0)
}

/// Milliseconds from the start of `timeline` until [`CALM_MS`] in a row are
/// within `threshold_ns` (empty milliseconds, with no message, count as
/// calm); `None` if that never happens.
pub fn recovery_ms(timeline: &[u64], threshold_ns: u64) -> Option<f64> {
    let mut calm = 0;
    for (i, &worst) in timeline.iter().enumerate() {
        if worst <= threshold_ns {
            calm += 1;
            if calm >= CALM_MS {
                return Some((i + 1 - CALM_MS) as f64);
            }
        } else {
            calm = 0;
        }
    }
    (calm > 0 && calm == timeline.len()).then_some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(offered: f64, achieved: f64, p99: u64) -> Step {
        let mut s = Step {
            phase: "ramp".into(),
            offered_per_s: offered,
            scheduled: offered as u64,
            sent: offered as u64,
            achieved_per_s: achieved,
            p99_ns: p99,
            window_p99_ns: p99,
            ..Step::default()
        };
        s.saturated = saturated(&s);
        s
    }

    #[test]
    fn knee_and_saturation_of_a_ramp() {
        let steps = vec![
            ramp(1e5, 1e5, 1000),
            ramp(2e5, 2e5, 800),
            ramp(4e5, 4e5, 2900),
            ramp(8e5, 7.9e5, 9000), // p99 past 3x: the knee is below
            ramp(1.6e6, 1.1e6, 90_000),
            ramp(3.2e6, 1.2e6, 900_000),
        ];
        let mut steps = steps;
        for s in &mut steps[4..] {
            // The publisher fell behind: it sent what the path took.
            s.sent = (s.achieved_per_s) as u64;
            s.saturated = saturated(s);
        }
        assert!(!steps[3].saturated && steps[4].saturated);
        assert_eq!(knee(&steps), 4e5);
        assert_eq!(saturation(&steps), 1.2e6);
        assert_eq!(baseline_p99(&steps), 1000);
    }

    #[test]
    fn one_noisy_step_is_a_hiccup_two_are_the_knee() {
        let steps = vec![
            ramp(1e5, 1e5, 1000),
            ramp(2e5, 2e5, 50_000),
            ramp(4e5, 4e5, 1000),
            ramp(8e5, 8e5, 5000),
            ramp(1.6e6, 1.6e6, 6000),
            ramp(3.2e6, 3.2e6, 1000),
        ];
        assert_eq!(baseline_p99(&steps), 1000);
        assert_eq!(knee(&steps), 4e5);
    }

    #[test]
    fn a_step_that_fell_behind_or_drained_long_is_saturated_a_hiccup_is_not() {
        let mut s = ramp(1e6, 1e6, 100);
        s.sent = s.scheduled / 2;
        assert!(saturated(&s));
        let mut s = ramp(1e6, 8e5, 100);
        assert!(!saturated(&s), "a slower receive span alone");
        s.drain_ms = 1500.0; // the step was 1 s long
        assert!(saturated(&s));
    }

    #[test]
    fn recovery_is_the_start_of_the_first_calm_stretch() {
        let mut t = vec![50_000u64; 7];
        t.extend([100; 3]);
        t.push(60_000);
        t.extend([100; 12]);
        assert_eq!(recovery_ms(&t, 1000), Some(11.0));
        assert_eq!(recovery_ms(&[100; 4], 1000), Some(0.0));
        assert_eq!(recovery_ms(&[50_000; 40], 1000), None);
    }

    #[test]
    fn the_calm_worst_is_the_90th_percentile_millisecond_of_the_first_steps() {
        let mut steps = vec![
            ramp(1e5, 1e5, 1000),
            ramp(2e5, 2e5, 1000),
            ramp(4e5, 4e5, 1000),
            ramp(8e5, 8e5, 1000),
        ];
        steps[0].timeline = vec![100, 0, 300];
        steps[1].timeline = vec![200, 90_000];
        steps[2].timeline = vec![150];
        steps[3].timeline = vec![1, 1, 1, 1, 1, 1];
        assert_eq!(calm_worst(&steps), 90_000);
        steps[1].timeline.extend([120; 10]);
        assert_eq!(calm_worst(&steps), 300);
    }
}
