//! What every throughput scenario's reader does after a poll that found
//! nothing: the same number of CPU pause hints for weft and for every peer
//! (`--empty-poll-pauses N`, default [`DEFAULT_EMPTY_POLL_PAUSES`]).
//!
//! A reader that has caught up and polls again at once reads the line the
//! writer is filling, so the two cores pass that line back and forth and
//! both slow down (`docs/shm.md`, findings 1 and 29). A streaming reader
//! backs off instead; the default is the count at which the best peer, the
//! disruptor, streams fastest here (the sweep is in `docs/benchmarks.md`),
//! so no peer is held at a setting that suits weft. Round-trip scenarios
//! never wait here: their reader spins one pause at a time.

use std::sync::atomic::{AtomicU32, Ordering};

/// Pause hints after an empty poll unless `--empty-poll-pauses` says otherwise.
pub const DEFAULT_EMPTY_POLL_PAUSES: u32 = 256;

static EMPTY_POLL_PAUSES: AtomicU32 = AtomicU32::new(DEFAULT_EMPTY_POLL_PAUSES);

/// Sets the count for the scenarios that run after this call.
pub fn set_empty_poll_pauses(n: u32) {
    EMPTY_POLL_PAUSES.store(n.max(1), Ordering::Relaxed);
}

/// The count in force: what each throughput result's note states.
pub fn empty_poll_pauses() -> u32 {
    EMPTY_POLL_PAUSES.load(Ordering::Relaxed)
}

/// What a result's note says of it: `; reader: N pauses after an empty poll`.
pub fn note() -> String {
    format!(
        "; reader: {} pauses after an empty poll",
        empty_poll_pauses()
    )
}

/// Idles a throughput reader after an empty poll: [`empty_poll_pauses`]
/// CPU pause hints, as `weft::IdleStrategy::Pause` does. No syscall, no
/// shared-memory access.
#[inline]
pub fn after_empty_poll() {
    weft::idle::pause(empty_poll_pauses());
}
