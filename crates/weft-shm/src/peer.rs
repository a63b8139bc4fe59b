//! Who holds a ring end, and whether it is still there.
//!
//! Each single-holder role (SPSC producer and consumer, broadcast producer, MPSC
//! consumer) and each slot (broadcast consumer, MPSC producer) records its holder
//! as a [`ProcessId`] word, a "closed" flag set by a clean drop, and an optional
//! heartbeat. Another process tells "idle" from "gone" with [`PeerState`]: a peer is
//! gone when it closed, when its process died (or its pid was recycled), or when it
//! once heartbeated and then fell silent for longer than the liveness timeout.

use crate::liveness::{now_ns, ProcessId};
use crate::sync::{AtomicU32, AtomicU64, Ordering, Zeroed};

/// A peer's liveness, as another process sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Nobody has taken this end yet.
    NotAttached,
    /// Attached and its process runs (it may simply be idle).
    Live,
    /// Attached once and no longer there.
    Gone(GoneReason),
}

/// Why a peer counts as gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoneReason {
    /// It dropped its end cleanly.
    Closed,
    /// Its process exited or crashed without closing.
    Died,
    /// Its process exists but has not heartbeated within the liveness timeout.
    Stale,
}

/// The words describing one holder. All written by the holder except `holder`,
/// which a process taking over a dead holder's role also writes (by CAS).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PeerWords {
    /// [`ProcessId`] word of the holder; 0 = free.
    pub(crate) holder: AtomicU64,
    /// CLOCK_MONOTONIC ns of the holder's last heartbeat; 0 = never heartbeats.
    pub(crate) heartbeat: AtomicU64,
    /// 1 once the holder dropped its end.
    pub(crate) closed: AtomicU32,
    _reserved: AtomicU32,
}

impl Zeroed for PeerWords {
    fn zeroed() -> Self {
        Self {
            holder: AtomicU64::zeroed(),
            heartbeat: AtomicU64::zeroed(),
            closed: AtomicU32::zeroed(),
            _reserved: AtomicU32::zeroed(),
        }
    }
}

impl PeerWords {
    /// Takes the role for `me`: free (never taken, or closed cleanly) → me, or
    /// dead holder → me; a closed role is reopened. `Err(pid)` names a live holder.
    pub(crate) fn take(&self, me: ProcessId) -> Result<(), u32> {
        let mut current = 0;
        loop {
            match self.holder.compare_exchange(
                current,
                me.to_word(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.heartbeat.store(0, Ordering::Relaxed);
                    self.closed.store(0, Ordering::Release);
                    return Ok(());
                }
                Err(actual) => match ProcessId::from_word(actual) {
                    Some(holder) if holder.is_alive() => return Err(holder.pid),
                    _ => current = actual,
                },
            }
        }
    }

    /// Releases a slot so that another participant may take it.
    pub(crate) fn release(&self) {
        self.heartbeat.store(0, Ordering::Relaxed);
        self.holder.store(0, Ordering::Release);
    }

    /// Marks the end closed on a clean drop and frees the role, so that a restarted
    /// process may take it again (and reopen the ring).
    pub(crate) fn close(&self) {
        // SYNC POINT: pairs with the Acquire load in `state`/`is_closed`: a peer that
        // sees `closed` sees every frame committed before it.
        self.closed.store(1, Ordering::Release);
        self.holder.store(0, Ordering::Release);
    }

    /// Whether the holder closed its end.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// Stores a heartbeat now (one clock read, one store).
    pub(crate) fn heartbeat(&self) {
        self.heartbeat.store(now_ns().max(1), Ordering::Relaxed);
    }

    /// The holder's state. Not for the hot path: probes the process.
    pub(crate) fn state(&self, liveness_timeout_ns: u64) -> PeerState {
        if self.is_closed() {
            return PeerState::Gone(GoneReason::Closed);
        }
        let Some(holder) = ProcessId::from_word(self.holder.load(Ordering::Acquire)) else {
            return PeerState::NotAttached;
        };
        if !holder.is_alive() {
            return PeerState::Gone(GoneReason::Died);
        }
        let beat = self.heartbeat.load(Ordering::Relaxed);
        if beat != 0 && now_ns().saturating_sub(beat) > liveness_timeout_ns {
            return PeerState::Gone(GoneReason::Stale);
        }
        PeerState::Live
    }
}

/// How often a producer blocked by a consumer looks at that consumer's
/// process (one `kill(pid, 0)` and one read of `/proc/<pid>/stat`): 1 ms.
const PROBE_EVERY_NS: u64 = 1_000_000;

/// Why a producer evicts a consumer that blocks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictReason {
    /// Its process is gone (exited, killed, a zombie) or closed its end.
    Dead,
    /// Alive, but no progress for the eviction timeout.
    Stuck,
    /// Alive and reading, but a whole ring behind for the slow-consumer
    /// timeout: cut loose so the others go on.
    Slow,
}

/// A producer's watch on one consumer slot: while that consumer blocks it,
/// the progress count it last saw and since when, and when it last probed
/// the consumer's process; and since when the consumer has been more than
/// half a ring behind (the slow-consumer policy). Plain data in the
/// producer's own memory.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockerWatch {
    seen: u64,
    since: u64,
    probed: u64,
    /// When the consumer's present spell of lagging began (0: not lagging).
    lag_since: u64,
    /// When a rescan last saw it lagging.
    lag_seen: u64,
}

impl BlockerWatch {
    /// The consumer blocks the producer now (`now` > 0, ns): whether to evict
    /// it, and why. At once if its process is known dead (probed when it
    /// first blocks, then at most every millisecond), and once it has made no
    /// progress for `timeout_ns` (stuck). A consumer that moves is watched
    /// afresh.
    pub(crate) fn should_evict(
        &mut self,
        progress: u64,
        now: u64,
        timeout_ns: u64,
        peer: &PeerWords,
    ) -> Option<EvictReason> {
        if self.seen != progress || self.since == 0 {
            (self.seen, self.since) = (progress, now);
        } else if now - self.since >= timeout_ns {
            return Some(EvictReason::Stuck);
        }
        // Loom models run one process and no clock: nothing to probe.
        if !cfg!(loom) && (self.probed == 0 || now.saturating_sub(self.probed) >= PROBE_EVERY_NS) {
            self.probed = now;
            if let PeerState::Gone(GoneReason::Died | GoneReason::Closed) = peer.state(timeout_ns) {
                return Some(EvictReason::Dead);
            }
        }
        None
    }

    /// The slow-consumer policy, at a rescan (the producer wants room): the
    /// consumer is `lagging` (more than half a ring behind where the
    /// producer wants to write) or not. Whether it has lagged for `slow_ns`
    /// without a break, however much it reads meanwhile. A spell ends when a
    /// rescan finds it closer, or when rescans stop for a tenth of `slow_ns`
    /// (the producer was not held back meanwhile).
    pub(crate) fn too_slow(&mut self, lagging: bool, now: u64, slow_ns: u64) -> bool {
        if !lagging {
            self.lag_since = 0;
            return false;
        }
        if self.lag_since == 0 || now.saturating_sub(self.lag_seen) > slow_ns / 10 {
            self.lag_since = now;
        }
        self.lag_seen = now;
        now - self.lag_since >= slow_ns
    }

    /// A producer's rescan looks at an active consumer at `cursor` while it
    /// wants room up to `need` in a ring of `cap` bytes: whether to evict it,
    /// and why (dead or stuck while it blocks; slow, with a slow-consumer
    /// timeout, however much it reads). See the module doc of each ring.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn judge(
        &mut self,
        cursor: u64,
        need: u64,
        cap: u64,
        now: u64,
        progress: &AtomicU64,
        peer: &PeerWords,
        timeout_ns: u64,
        slow_ns: Option<u64>,
    ) -> Option<EvictReason> {
        let reason = if cursor + cap < need {
            // It blocks us: is it dead, or has it not moved for the timeout?
            self.should_evict(progress.load(Ordering::Relaxed), now, timeout_ns, peer)
        } else {
            self.clear();
            None
        };
        // Or is it slow: more than half a ring behind for the slow timeout?
        reason.or_else(|| {
            self.too_slow(cursor + cap / 2 < need, now, slow_ns?)
                .then_some(EvictReason::Slow)
        })
    }

    /// The consumer does not block the producer: forget what it did while it
    /// blocked (not its lagging spell).
    pub(crate) fn clear(&mut self) {
        (self.seen, self.since, self.probed) = (0, 0, 0);
    }

    /// The consumer was evicted: forget everything.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The `state` word of a consumer slot in both broadcast rings.
pub(crate) mod slot_state {
    /// No consumer.
    pub(crate) const FREE: u32 = 0;
    /// A counted consumer.
    pub(crate) const ACTIVE: u32 = 1;
    /// Cut loose by a producer; the consumer may rejoin.
    pub(crate) const EVICTED: u32 = 2;
    /// Joining: producers keep the slot's cursor's lap free but do not count
    /// it as a consumer yet (`broadcast` module doc, "Joining").
    pub(crate) const JOINING: u32 = 3;
}

/// Ends a consumer's join: moves its slot from joining to active (CAS,
/// Release: pairs with the Acquire load of the state in a producer's rescan
/// and in its consumer count, so whoever sees the slot active sees the
/// cursor stored before, the joiner's start). False if a producer evicted
/// the slot meanwhile (the joiner stalled for the eviction timeout).
pub(crate) fn finish_join(state: &AtomicU32) -> bool {
    state
        .compare_exchange(
            slot_state::JOINING,
            slot_state::ACTIVE,
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Moves a consumer slot from `from` (active or joining, as the producer saw
/// it) to evicted (CAS, so a consumer leaving at the same moment wins),
/// counts it in `evictions`, and names the consumer; `None` if the slot had
/// moved on.
pub(crate) fn evict(
    state: &AtomicU32,
    from: u32,
    evictions: &AtomicU64,
    peer: &PeerWords,
    reason: EvictReason,
) -> Option<Eviction> {
    state
        .compare_exchange(
            from,
            slot_state::EVICTED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .ok()?;
    evictions.fetch_add(1, Ordering::Relaxed);
    let pid = ProcessId::from_word(peer.holder.load(Ordering::Relaxed)).map_or(0, |p| p.pid);
    Some(Eviction { pid, reason })
}

/// The last consumer a producer evicted: who, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The consumer's process (0 if its slot named none).
    pub pid: u32,
    /// Why.
    pub reason: EvictReason,
}
