//! One result per scenario, printed as a table row or as one JSON object per line.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The outcome of one scenario.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: String,
    pub msg_bytes: usize,
    pub samples: u64,
    /// Latency percentiles in ns (p50, p90, p99, p99.9, p99.99, max); `None` for
    /// throughput scenarios.
    pub latency: Option<[u64; 6]>,
    pub msgs_per_s: Option<f64>,
    /// Free-form note (what was measured, how many runs).
    pub note: String,
    /// Every latency sample, for percentile plots.
    pub histogram: Option<Histogram<u64>>,
    /// The same samples by interval, for the hdrhistogram interval log.
    pub intervals: Vec<Interval>,
    /// Scenario-specific numbers (subscribers, loss percentage, rate, ...).
    pub extra: Vec<(&'static str, f64)>,
    /// The floor measured just before and after (set by the harness).
    pub probes: Option<crate::harness::Probes>,
    /// Runs it took until the probes agreed (set by the harness).
    pub attempts: u32,
    /// Other processes' CPU use during the run, in cores (set by the harness).
    pub busy_other_cores: Option<f64>,
    /// Which of several runs this is, from 1 (set by the harness).
    pub run: u32,
    /// The scenario name it was asked for (a row may be named differently).
    pub requested: String,
}

/// Slices a throughput run is timed in.
pub const TRIALS: u64 = 5;

/// Timestamps at the slice boundaries of a throughput run: after `warmup`
/// messages, then every `samples / TRIALS` messages.
#[derive(Debug)]
pub struct Trials {
    warmup: u64,
    slice: u64,
    next_mark: u64,
    marks: Vec<u64>,
}

impl Trials {
    pub fn new(warmup: u64, samples: u64) -> Self {
        let slice = (samples / TRIALS).max(1);
        Self {
            warmup,
            slice,
            next_mark: warmup,
            marks: Vec::with_capacity(TRIALS as usize + 1),
        }
    }

    /// Call with the count of messages received so far.
    #[inline(always)]
    pub fn mark(&mut self, received: u64) {
        if received == self.next_mark {
            self.marks.push(crate::clock::ticks());
            self.next_mark = if self.marks.len() as u64 > TRIALS {
                u64::MAX
            } else {
                self.next_mark + self.slice
            };
        }
    }

    /// Messages per second of the median slice.
    pub fn median_rate(&self, clock: crate::clock::Clock) -> f64 {
        let mut rates: Vec<f64> = self
            .marks
            .windows(2)
            .map(|w| self.slice as f64 * 1e9 / clock.ns(w[0], w[1]).max(1) as f64)
            .collect();
        assert!(
            !rates.is_empty(),
            "run too short to time (warm-up {})",
            self.warmup
        );
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }
}

/// A histogram of nanoseconds, 3 significant digits, up to 100 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// One interval of a latency run: when it started (since the run's first
/// sample) and how long it lasted, with the samples recorded in it.
#[derive(Clone, Debug)]
pub struct Interval {
    pub start: Duration,
    pub duration: Duration,
    pub histogram: Histogram<u64>,
}

/// Intervals kept per run: when full, neighbours merge and intervals double.
const MAX_INTERVALS: usize = 32;

/// Records latency samples (ns) in intervals of a fixed number of samples, so
/// a run can be written as an hdrhistogram interval log and checked for drift.
/// One record is one histogram increment and a counter; the clock is read
/// once per interval.
#[derive(Debug)]
pub struct Recorder {
    current: Histogram<u64>,
    in_current: u64,
    per_interval: u64,
    started: Option<Instant>,
    current_start: Instant,
    intervals: Vec<Interval>,
    /// The samples since the last [`Recorder::take_block_p50`], if asked for.
    block: Option<Histogram<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            current: histogram(),
            in_current: 0,
            per_interval: 2_000,
            started: None,
            current_start: Instant::now(),
            intervals: Vec::new(),
            block: None,
        }
    }

    /// A recorder that also keeps the current block's samples apart, for
    /// [`Recorder::take_block_p50`] (interleaved scenarios).
    pub fn with_blocks() -> Self {
        Self {
            block: Some(histogram()),
            ..Self::new()
        }
    }

    /// The p50 of the samples since the last call (0 if none, or if this
    /// recorder keeps no blocks), and starts a new block.
    pub fn take_block_p50(&mut self) -> u64 {
        match &mut self.block {
            Some(b) => {
                let p50 = if b.is_empty() {
                    0
                } else {
                    b.value_at_quantile(0.5)
                };
                b.reset();
                p50
            }
            None => 0,
        }
    }

    /// Records one sample, clamped into the histogram's range.
    #[inline]
    pub fn saturating_record(&mut self, ns: u64) {
        if self.started.is_none() {
            let now = Instant::now();
            self.started = Some(now);
            self.current_start = now;
        }
        self.current.saturating_record(ns);
        if let Some(b) = &mut self.block {
            b.saturating_record(ns);
        }
        self.in_current += 1;
        if self.in_current == self.per_interval {
            self.close_interval();
        }
    }

    #[cold]
    fn close_interval(&mut self) {
        let now = Instant::now();
        let started = self.started.unwrap_or(now);
        let h = std::mem::replace(&mut self.current, histogram());
        self.intervals.push(Interval {
            start: self.current_start - started,
            duration: now - self.current_start,
            histogram: h,
        });
        self.in_current = 0;
        self.current_start = now;
        if self.intervals.len() == MAX_INTERVALS {
            let old = std::mem::take(&mut self.intervals);
            let mut it = old.into_iter();
            while let (Some(mut a), b) = (it.next(), it.next()) {
                if let Some(b) = b {
                    a.duration = b.start + b.duration - a.start;
                    a.histogram.add(&b.histogram).expect("same bounds");
                }
                self.intervals.push(a);
            }
            self.per_interval *= 2;
        }
    }

    /// Every interval, the open one included, and all samples in one histogram.
    pub fn finish(&self) -> (Histogram<u64>, Vec<Interval>) {
        let mut intervals = self.intervals.clone();
        if self.in_current > 0 {
            let started = self.started.unwrap_or(self.current_start);
            intervals.push(Interval {
                start: self.current_start - started,
                duration: self.current_start.elapsed(),
                histogram: self.current.clone(),
            });
        }
        let mut total = histogram();
        for i in &intervals {
            total.add(&i.histogram).expect("same bounds");
        }
        (total, intervals)
    }
}

impl Outcome {
    pub fn latency(scenario: &str, msg_bytes: usize, r: &Recorder, note: &str) -> Self {
        let (h, intervals) = r.finish();
        let q = |p: f64| h.value_at_quantile(p);
        Self {
            latency: Some([q(0.5), q(0.9), q(0.99), q(0.999), q(0.9999), h.max()]),
            samples: h.len(),
            histogram: Some(h),
            intervals,
            ..Self::new(scenario, msg_bytes, note)
        }
    }

    pub fn throughput(
        scenario: &str,
        msg_bytes: usize,
        samples: u64,
        msgs_per_s: f64,
        note: &str,
    ) -> Self {
        Self {
            samples,
            msgs_per_s: Some(msgs_per_s),
            ..Self::new(scenario, msg_bytes, note)
        }
    }

    /// A result with nothing measured yet; the harness fills in the rest.
    fn new(scenario: &str, msg_bytes: usize, note: &str) -> Self {
        Self {
            scenario: scenario.into(),
            msg_bytes,
            samples: 0,
            latency: None,
            msgs_per_s: None,
            note: note.into(),
            histogram: None,
            intervals: Vec::new(),
            extra: Vec::new(),
            probes: None,
            attempts: 1,
            busy_other_cores: None,
            run: 1,
            requested: scenario.into(),
        }
    }

    /// Adds a scenario-specific number to the result.
    pub fn with(mut self, key: &'static str, value: f64) -> Self {
        self.extra.push((key, value));
        self
    }

    /// Adds several scenario-specific numbers.
    pub fn with_all(mut self, extras: Vec<(&'static str, f64)>) -> Self {
        self.extra.extend(extras);
        self
    }

    pub fn extra(&self, key: &str) -> Option<f64> {
        self.extra.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// p50 / the mean of its own floor probes (latency results only).
    pub fn ratio_to_probes(&self) -> Option<f64> {
        if self.extra("producer_ns_per_msg").is_some() {
            return None; // fan-out: its latency columns are not round trips
        }
        let p = self.probes?;
        Some(self.latency?[0] as f64 / p.mean_ns().max(1.0))
    }

    /// Whether the probes still disagreed after the last repeat.
    pub fn flagged(&self) -> bool {
        self.probes
            .is_some_and(|p| p.disagreement() > crate::harness::PROBE_DISAGREEMENT)
    }

    /// Whether other processes used the CPU during the run.
    pub fn busy(&self) -> bool {
        self.busy_other_cores
            .is_some_and(|b| b > crate::harness::BUSY_CORES)
    }

    /// One JSON object (no newline) with `meta` fields appended.
    pub fn json(&self, meta: &crate::harness::Meta) -> String {
        use crate::harness::json_str;
        let num = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let lat = |i: usize| num(self.latency.map(|l| l[i]));
        let f = |v: Option<f64>, prec: usize| {
            v.filter(|v| v.is_finite())
                .map_or("null".to_string(), |v| format!("{v:.prec$}"))
        };
        let mut s = format!(
            "{{\"scenario\":{},\"requested\":{},\"run\":{},\"msg_bytes\":{},\"samples\":{},\"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"p99_9_ns\":{},\"p99_99_ns\":{},\"max_ns\":{},\"msgs_per_s\":{}",
            json_str(&self.scenario),
            json_str(&self.requested),
            self.run,
            self.msg_bytes,
            self.samples,
            lat(0),
            lat(1),
            lat(2),
            lat(3),
            lat(4),
            lat(5),
            f(self.msgs_per_s, 0),
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(",{}:{}", json_str(k), f(Some(*v), 3)));
        }
        if let Some(p) = self.probes {
            s.push_str(&format!(
                ",\"probe_floor\":{},\"probe_before_ns\":{},\"probe_after_ns\":{},\"ratio_to_probes\":{},\"probes_disagree\":{}",
                json_str(p.floor.name()),
                p.before_ns,
                p.after_ns,
                f(self.ratio_to_probes(), 3),
                self.flagged()
            ));
        }
        s.push_str(&format!(
            ",\"attempts\":{},\"busy_other_cores\":{},\"busy\":{},\"note\":{},{}}}",
            self.attempts,
            f(self.busy_other_cores, 3),
            self.busy(),
            json_str(&self.note),
            meta.json_fields()
        ));
        s
    }
}
