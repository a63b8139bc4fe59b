//! A cheap timestamp for per-sample latency: the TSC on x86-64 (calibrated against
//! the monotonic clock once per run), the monotonic clock elsewhere. Floors and
//! weft are timed the same way in the same run, so the timer's own cost (~10 ns)
//! is in both sides of every ratio.

use std::time::{Duration, Instant};

/// Converts timestamps to nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    ns_per_tick: f64,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)] // the one unsafe call of the harness
pub fn ticks() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86-64; it only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn ticks() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl Clock {
    /// Measures the tick rate over ~50 ms.
    pub fn calibrate() -> Self {
        let (t0, i0) = (ticks(), Instant::now());
        while i0.elapsed() < Duration::from_millis(50) {
            std::hint::spin_loop();
        }
        let (t1, i1) = (ticks(), Instant::now());
        let ns = (i1 - i0).as_nanos() as f64;
        Self {
            ns_per_tick: ns / (t1.wrapping_sub(t0)).max(1) as f64,
        }
    }

    /// A clock of a known tick rate (another process's calibration, so
    /// both convert the same ticks alike).
    pub fn from_ns_per_tick(ns_per_tick: f64) -> Self {
        Self { ns_per_tick }
    }

    /// Nanoseconds per tick.
    pub fn ns_per_tick(&self) -> f64 {
        self.ns_per_tick
    }

    /// Nanoseconds between two tick readings.
    #[inline(always)]
    pub fn ns(&self, from: u64, to: u64) -> u64 {
        (to.wrapping_sub(from) as f64 * self.ns_per_tick) as u64
    }
}

/// A fixed send rate for round-trip scenarios, or none (send as soon as the
/// last reply is in). `Default` is none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pace {
    /// Ticks between scheduled sends; 0 when unpaced.
    interval_ticks: f64,
}

impl Pace {
    /// `rate` sends per second (`None`: unpaced).
    pub fn new(clock: Clock, rate: Option<f64>) -> Self {
        Self {
            interval_ticks: rate.map_or(0.0, |r| 1e9 / r / clock.ns_per_tick),
        }
    }

    pub fn is_paced(&self) -> bool {
        self.interval_ticks > 0.0
    }

    pub fn pacer(&self) -> Pacer {
        Pacer {
            interval_ticks: self.interval_ticks,
            next: None,
        }
    }
}

/// Hands out send times on a fixed schedule.
///
/// [`Pacer::start`] returns the time a message was *due*, not the time it
/// went: a round trip measured from it includes any wait behind a late
/// predecessor. That is the coordinated-omission correction: a stall is
/// charged to every message scheduled during it, as a client sending at a
/// fixed rate would see it.
#[derive(Debug)]
pub struct Pacer {
    interval_ticks: f64,
    next: Option<f64>,
}

impl Pacer {
    /// Unpaced: now. Paced: waits (spinning) until the next scheduled time
    /// and returns it; never waits when behind schedule.
    #[inline(always)]
    pub fn start(&mut self) -> u64 {
        if self.interval_ticks == 0.0 {
            return ticks();
        }
        let due = *self.next.get_or_insert(ticks() as f64);
        while (ticks() as f64) < due {
            std::hint::spin_loop();
        }
        self.next = Some(due + self.interval_ticks);
        due as u64
    }
}
