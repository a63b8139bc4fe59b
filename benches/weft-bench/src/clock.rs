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

    /// Nanoseconds between two tick readings.
    #[inline(always)]
    pub fn ns(&self, from: u64, to: u64) -> u64 {
        (to.wrapping_sub(from) as f64 * self.ns_per_tick) as u64
    }
}
