//! Idle strategies: what an agent's thread does after a duty cycle that found
//! no work. Each trades wake-up latency against the CPU it leaves to others.

use std::time::Duration;

/// What to do when a duty cycle did no work.
///
/// On a host with as many busy threads as cores (two spinning agents on a
/// 2-core machine), only `BusySpin` keeps latency flat, and it leaves nothing
/// for a third thread: give every other agent `Backoff` or `Sleep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Spin with a CPU pause hint. Lowest latency; holds the core at 100 %.
    BusySpin,
    /// `sched_yield` each time: another runnable thread on the core gets it,
    /// otherwise about a microsecond per call.
    Yield,
    /// `spins` pauses, then `yields` yields, then sleeps starting at `min_park`
    /// and doubling up to `max_park`; any work resets it to spinning. Costs at
    /// most `max_park` of extra latency once fully backed off.
    Backoff {
        /// Spins before yielding.
        spins: u32,
        /// Yields before parking.
        yields: u32,
        /// First sleep.
        min_park: Duration,
        /// Longest sleep.
        max_park: Duration,
    },
    /// Sleep this long after every idle cycle (a floor on latency: use for
    /// housekeeping, not for traffic).
    Sleep(Duration),
    /// This many CPU pause hints after every idle cycle, then look again: a
    /// streaming reader's wait. A reader that looks again at once reads the
    /// cache line its writer is filling, so the two cores pass that line
    /// back and forth; one that waits a few hundred pauses comes back to a
    /// run of finished lines. Every library measured here streamed 1.4 to
    /// 4.5 times faster so (`docs/shm.md`, finding 29; `weft-bench`'s
    /// throughput readers use 256). Costs up to that many pauses of latency
    /// on the first message after a lull, and holds the core at 100 %: not
    /// for round trips.
    Pause(u32),
}

impl IdleStrategy {
    /// `Backoff` with 10 spins, 100 yields and parks from 1 µs to 1 ms.
    ///
    /// Few spins on purpose: in a virtual machine, a tight loop of CPU pause
    /// hints makes the hypervisor take the vCPU away (pause-loop exiting). Here,
    /// 100 spins before the yields made a UDP ping/pong round trip about 0.7 ms
    /// at p50; 10 spins made it 70–90 µs, and no spins 40–50 µs (see
    /// `docs/architecture.md`).
    pub const fn backoff() -> Self {
        IdleStrategy::Backoff {
            spins: 10,
            yields: 100,
            min_park: Duration::from_micros(1),
            max_park: Duration::from_millis(1),
        }
    }
}

impl Default for IdleStrategy {
    /// [`IdleStrategy::backoff`]: safe on any core count.
    fn default() -> Self {
        Self::backoff()
    }
}

impl std::str::FromStr for IdleStrategy {
    type Err = String;

    /// `busy-spin`, `yield`, `backoff` (the defaults of [`IdleStrategy::backoff`]),
    /// `backoff:SPINS:YIELDS:MIN_PARK:MAX_PARK` (`backoff:100:50:1us:1ms`),
    /// `sleep:DURATION` with a unit (`sleep:50us`, `sleep:1ms`), or
    /// `pause:N` with N from 1 to 65536 (`pause:256`).
    fn from_str(s: &str) -> Result<Self, String> {
        let expected =
            "expected busy-spin, yield, backoff, backoff:SPINS:YIELDS:MIN_PARK:MAX_PARK \
                        (e.g. backoff:100:50:1us:1ms), sleep:DURATION (e.g. sleep:50us) \
                        or pause:N (e.g. pause:256)";
        match s {
            "busy-spin" => Ok(Self::BusySpin),
            "yield" => Ok(Self::Yield),
            "backoff" => Ok(Self::backoff()),
            _ => {
                if let Some(d) = s.strip_prefix("sleep:") {
                    return parse_duration(d).map(Self::Sleep);
                }
                if let Some(n) = s.strip_prefix("pause:") {
                    return match n.parse::<u32>() {
                        Ok(n @ 1..=65536) => Ok(Self::Pause(n)),
                        _ => Err(format!(
                            "idle strategy {s:?}: expected pause:N with N from 1 to 65536"
                        )),
                    };
                }
                let Some(rest) = s.strip_prefix("backoff:") else {
                    return Err(format!("idle strategy {s:?}: {expected}"));
                };
                let parts: Vec<&str> = rest.split(':').collect();
                let [spins, yields, min, max] = parts[..] else {
                    return Err(format!("idle strategy {s:?}: {expected}"));
                };
                let count = |v: &str| {
                    v.parse::<u32>()
                        .map_err(|_| format!("idle strategy {s:?}: {v:?} is not a count"))
                };
                let (min_park, max_park) = (parse_duration(min)?, parse_duration(max)?);
                if min_park.is_zero() || min_park > max_park {
                    return Err(format!(
                        "idle strategy {s:?}: expected 0 < MIN_PARK <= MAX_PARK"
                    ));
                }
                Ok(Self::Backoff {
                    spins: count(spins)?,
                    yields: count(yields)?,
                    min_park,
                    max_park,
                })
            }
        }
    }
}

/// `DURATION` with a unit: `ns`, `us`, `ms` or `s` (`250us`, `1s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a whole number and a unit, e.g. 50us"))?;
    match unit {
        "ns" => Ok(Duration::from_nanos(n)),
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "duration {s:?}: expected a unit of ns, us, ms or s"
        )),
    }
}

/// Writes a duration in the largest unit [`parse_duration`] reads that
/// holds it exactly (`100ms`, `1500us`), so it parses back to the same value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DurationText(pub(crate) Duration);

impl std::fmt::Display for DurationText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0.as_nanos();
        for (unit, per) in [("s", 1_000_000_000u128), ("ms", 1_000_000), ("us", 1_000)] {
            if ns % per == 0 {
                return write!(f, "{}{unit}", ns / per);
            }
        }
        write!(f, "{ns}ns")
    }
}

/// An [`IdleStrategy`] with its state (how far it has backed off).
#[derive(Clone, Debug)]
pub struct Idler {
    strategy: IdleStrategy,
    count: u32,
    park: Duration,
}

impl Idler {
    /// Starts at the spinning end.
    pub fn new(strategy: IdleStrategy) -> Self {
        Self {
            strategy,
            count: 0,
            park: Duration::ZERO,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// Called after each duty cycle with its work count: returns at once when
    /// `work > 0` (and resets the backoff), otherwise idles one step. Never
    /// allocates.
    #[inline]
    pub fn idle(&mut self, work: usize) {
        match self.step(work) {
            IdleStep::None => {}
            IdleStep::Spin => std::hint::spin_loop(),
            IdleStep::Pause(n) => pause(n),
            IdleStep::Yield => std::thread::yield_now(),
            IdleStep::Park(d) => std::thread::sleep(d),
        }
    }

    /// What [`idle`](Self::idle) would do now, advancing the backoff, without
    /// doing it: an agent parks in `ppoll` on its tasks' sockets instead of
    /// sleeping, so a datagram wakes it.
    #[inline]
    pub fn step(&mut self, work: usize) -> IdleStep {
        if work > 0 {
            self.count = 0;
            self.park = Duration::ZERO;
            return IdleStep::None;
        }
        match self.strategy {
            IdleStrategy::BusySpin => IdleStep::Spin,
            IdleStrategy::Yield => IdleStep::Yield,
            IdleStrategy::Sleep(d) => IdleStep::Park(d),
            IdleStrategy::Pause(n) => IdleStep::Pause(n),
            IdleStrategy::Backoff {
                spins,
                yields,
                min_park,
                max_park,
            } => {
                if self.count < spins {
                    self.count += 1;
                    IdleStep::Spin
                } else if self.count < spins.saturating_add(yields) {
                    self.count += 1;
                    IdleStep::Yield
                } else {
                    self.park = if self.park.is_zero() {
                        min_park
                    } else {
                        (self.park * 2).min(max_park)
                    };
                    IdleStep::Park(self.park)
                }
            }
        }
    }
}

/// `n` CPU pause hints: [`IdleStep::Pause`]'s wait. No syscall.
#[inline]
pub fn pause(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// One step of an idle strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleStep {
    /// There was work: go straight on.
    None,
    /// One CPU pause hint.
    Spin,
    /// This many CPU pause hints ([`pause`] does them).
    Pause(u32),
    /// One `sched_yield`.
    Yield,
    /// Wait this long, or until woken.
    Park(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_from_text_and_bad_text_says_what_is_expected() {
        assert_eq!("busy-spin".parse(), Ok(IdleStrategy::BusySpin));
        assert_eq!("backoff".parse(), Ok(IdleStrategy::backoff()));
        assert_eq!(
            "backoff:10:0:50us:2ms".parse(),
            Ok(IdleStrategy::Backoff {
                spins: 10,
                yields: 0,
                min_park: Duration::from_micros(50),
                max_park: Duration::from_millis(2),
            })
        );
        assert_eq!(
            "sleep:1ms".parse(),
            Ok(IdleStrategy::Sleep(Duration::from_millis(1)))
        );
        assert_eq!("pause:256".parse(), Ok(IdleStrategy::Pause(256)));
        let mut i = Idler::new(IdleStrategy::Pause(256));
        assert_eq!(i.step(0), IdleStep::Pause(256));
        assert_eq!(i.step(3), IdleStep::None);
        for bad in [
            "pause:0",
            "pause:65537",
            "pause:",
            "spin",
            "backoff:1:2:3us",
            "backoff:x:0:1us:1ms",
            "backoff:1:1:2ms:1ms",
            "sleep:5",
        ] {
            assert!(bad.parse::<IdleStrategy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_spins_then_yields_then_parks_longer_and_resets_on_work() {
        let mut i = Idler::new(IdleStrategy::Backoff {
            spins: 2,
            yields: 1,
            min_park: Duration::from_micros(1),
            max_park: Duration::from_micros(4),
        });
        for _ in 0..3 {
            i.idle(0);
        }
        assert_eq!(i.park, Duration::ZERO, "spins and yields do not park");
        let parks: Vec<_> = (0..4)
            .map(|_| {
                i.idle(0);
                i.park
            })
            .collect();
        assert_eq!(
            parks,
            [1, 2, 4, 4].map(Duration::from_micros),
            "doubling, capped"
        );
        i.idle(1);
        assert_eq!((i.count, i.park), (0, Duration::ZERO));
    }
}
