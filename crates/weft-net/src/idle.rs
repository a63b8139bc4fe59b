//! How a polling loop waits when a pass found no work.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;

/// Something a loop can park on: a socket to watch and a protocol timer.
pub trait Waitable {
    /// The socket whose readability ends the wait.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Time until the protocol's next timer; `None` if none is armed.
    fn time_to_timer(&self) -> Option<Duration>;
}

/// An idle strategy: spin for `spins` empty passes, then yield the core for
/// `yields` more, then park in `ppoll` on the endpoints' sockets until one is
/// readable, a protocol timer is due, or `max_park` passes. Any pass with work
/// starts over at spinning.
///
/// [`Idle::busy_spin`] never leaves the core (lowest latency; needs a core per
/// spinning thread). [`Idle::backoff`] parks after a few microseconds of
/// spinning, so a 2-core machine can run more busy endpoints than cores.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    spins: u32,
    yields: u32,
    max_park: Duration,
    empty_passes: u32,
}

impl Idle {
    /// Spin `spins` passes, yield `yields` more, then park up to `max_park`.
    pub fn new(spins: u32, yields: u32, max_park: Duration) -> Self {
        Self {
            spins,
            yields,
            max_park,
            empty_passes: 0,
        }
    }

    /// Never park.
    pub fn busy_spin() -> Self {
        Self::new(u32::MAX, 0, Duration::ZERO)
    }

    /// Spin 100 passes, yield 100, then park up to 1 ms.
    pub fn backoff() -> Self {
        Self::new(100, 100, Duration::from_millis(1))
    }

    /// Called after each pass with the work it did; waits as the strategy says.
    /// Parking costs a `ppoll` syscall and the wake-up latency of the scheduler.
    pub fn idle(&mut self, work: usize, endpoints: &[&dyn Waitable]) {
        if work > 0 {
            self.empty_passes = 0;
            return;
        }
        self.empty_passes = self.empty_passes.saturating_add(1);
        if self.empty_passes <= self.spins {
            std::hint::spin_loop();
            return;
        }
        if self.empty_passes - self.spins <= self.yields {
            std::thread::yield_now();
            return;
        }
        let n = endpoints.len().min(8);
        let mut wait = self.max_park;
        for e in &endpoints[..n] {
            if let Some(t) = e.time_to_timer() {
                wait = wait.min(t);
            }
        }
        if wait.is_zero() {
            return;
        }
        if n == 0 {
            std::thread::sleep(wait);
            return;
        }
        // Entries past `n` repeat the last endpoint and are not passed to ppoll.
        let mut fds: [PollFd<'_>; 8] =
            std::array::from_fn(|i| PollFd::new(endpoints[i.min(n - 1)].fd(), PollFlags::POLLIN));
        // Interrupted or failed: the loop simply runs another pass.
        let _ = ppoll(&mut fds[..n], Some(TimeSpec::from_duration(wait)), None);
    }
}
