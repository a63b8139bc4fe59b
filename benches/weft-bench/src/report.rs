//! One result per scenario, printed as a table row or as one JSON object per line.

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

impl Outcome {
    pub fn latency(scenario: &str, msg_bytes: usize, h: &Histogram<u64>, note: &str) -> Self {
        let q = |p: f64| h.value_at_quantile(p);
        Self {
            scenario: scenario.into(),
            msg_bytes,
            samples: h.len(),
            latency: Some([q(0.5), q(0.9), q(0.99), q(0.999), q(0.9999), h.max()]),
            msgs_per_s: None,
            note: note.into(),
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
            scenario: scenario.into(),
            msg_bytes,
            samples,
            latency: None,
            msgs_per_s: Some(msgs_per_s),
            note: note.into(),
        }
    }

    pub fn json(&self) -> String {
        let lat = |i: usize| {
            self.latency
                .map_or("null".to_string(), |l| l[i].to_string())
        };
        format!(
            "{{\"scenario\":\"{}\",\"msg_bytes\":{},\"samples\":{},\"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"p99_9_ns\":{},\"p99_99_ns\":{},\"max_ns\":{},\"msgs_per_s\":{},\"note\":\"{}\"}}",
            self.scenario,
            self.msg_bytes,
            self.samples,
            lat(0),
            lat(1),
            lat(2),
            lat(3),
            lat(4),
            lat(5),
            self.msgs_per_s.map_or("null".to_string(), |r| format!("{r:.0}")),
            self.note.replace('\\', "\\\\").replace('"', "\\\""),
        )
    }
}

pub fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<24} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>14}",
        "scenario", "bytes", "samples", "p50 ns", "p90", "p99", "p99.9", "p99.99", "max", "msgs/s"
    );
    for o in outcomes {
        let l = |i: usize| o.latency.map_or("-".to_string(), |l| l[i].to_string());
        println!(
            "{:<24} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>14}",
            o.scenario,
            o.msg_bytes,
            o.samples,
            l(0),
            l(1),
            l(2),
            l(3),
            l(4),
            l(5),
            o.msgs_per_s.map_or("-".to_string(), |r| format!("{r:.0}")),
        );
    }
    let p50 = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.scenario == name)
            .and_then(|o| o.latency)
            .map(|l| l[0] as f64)
    };
    let rate = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.scenario == name)
            .and_then(|o| o.msgs_per_s)
    };
    let mut ratios = Vec::new();
    if let (Some(a), Some(f)) = (p50("shm-pingpong"), p50("floor-shm")) {
        ratios.push(format!("shm-pingpong p50 / floor-shm p50 = {:.2}", a / f));
    }
    if let (Some(a), Some(f)) = (p50("rtrb-pingpong"), p50("floor-shm")) {
        ratios.push(format!("rtrb-pingpong p50 / floor-shm p50 = {:.2}", a / f));
    }
    if let (Some(a), Some(b)) = (rate("shm-throughput"), rate("rtrb-throughput")) {
        ratios.push(format!("shm-throughput / rtrb-throughput = {:.2}", a / b));
    }
    if let (Some(a), Some(f)) = (p50("udp-pingpong"), p50("floor-udp")) {
        ratios.push(format!("udp-pingpong p50 / floor-udp p50 = {:.2}", a / f));
    }
    if let (Some(w), Some(m), Some(u)) = (
        p50("interleaved-udp-pingpong"),
        p50("interleaved-floor-mcast"),
        p50("interleaved-floor-udp"),
    ) {
        ratios.push(format!(
            "interleaved: udp-pingpong / floor-udp = {:.2}, udp-pingpong / floor-mcast = {:.2}, floor-mcast / floor-udp = {:.2}",
            w / u,
            w / m,
            m / u
        ));
    }
    if let (Some(a), Some(b)) = (rate("mcast-throughput"), rate("udp-raw-throughput")) {
        ratios.push(format!(
            "mcast-throughput / udp-raw-throughput = {:.2}",
            a / b
        ));
    }
    for r in ratios {
        println!("{r}");
    }
}
