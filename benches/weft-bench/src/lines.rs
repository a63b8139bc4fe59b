//! `floor-shm-lines`: the cache-line patterns any shared-memory ring is built
//! from, timed as round trips between the same two pinned threads in
//! interleaved blocks, so the VM's floor level is the same for all of them:
//!
//! - `lines-floor`: one 8-byte store each way into the same line every time
//!   (this is `floor-shm`);
//! - `lines-same-line-40B`: four payload words, then the sequence word, into
//!   the same line every time;
//! - `lines-new-line-40B`: the same 40 bytes into the next line of a 64-line
//!   ring each time, the reader spinning on that line (weft's SPSC ring for
//!   one small frame per line);
//! - `lines-cursor-slot`: 32 bytes into the next half line of a slot ring, then
//!   a cursor word in a line of its own, the reader spinning on the cursor (the
//!   disruptor's pattern).
//!
//! It explains where a ring design can stand against the floor on this
//! machine; it measures no weft code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::{ticks, Clock};
use crate::pin::pin;
use crate::report::{Outcome, Recorder};

/// One cache line of words.
#[repr(C, align(64))]
#[derive(Default)]
struct Line([AtomicU64; 8]);

/// Lines in each direction's ring.
const RING: usize = 64;
/// Round trips per block.
const BLOCK: u64 = 5000;

#[derive(Clone, Copy)]
enum Pattern {
    Floor,
    SameLine,
    NewLine,
    CursorSlot,
}

const PATTERNS: [(Pattern, &str); 4] = [
    (Pattern::Floor, "lines-floor"),
    (Pattern::SameLine, "lines-same-line-40B"),
    (Pattern::NewLine, "lines-new-line-40B"),
    (Pattern::CursorSlot, "lines-cursor-slot"),
];

impl Pattern {
    /// The ring line message `n` goes into, for the patterns that spin on
    /// their data line: the next one for `NewLine`, always the first otherwise.
    fn line_of(self, n: u64) -> usize {
        match self {
            Pattern::NewLine => n as usize % RING,
            _ => 0,
        }
    }
}

/// One direction: a ring of lines and a cursor line. The cursor gets a
/// 128-byte pair of lines to itself (as `floor-shm`'s words do), away from the
/// ring's pointer that both threads read, so a pair-wise prefetcher cannot
/// tie them together.
#[repr(C, align(128))]
struct Way {
    ring: Vec<Line>,
    cursor: Pair,
}

/// A line alone in its 128-byte pair.
#[repr(C, align(128))]
#[derive(Default)]
struct Pair(Line);

impl Way {
    fn new() -> Self {
        Self {
            ring: (0..RING).map(|_| Line::default()).collect(),
            cursor: Pair::default(),
        }
    }

    fn send(&self, p: Pattern, n: u64) {
        match p {
            Pattern::Floor => self.ring[0].0[0].store(n, Ordering::Release),
            Pattern::SameLine | Pattern::NewLine => {
                let line = &self.ring[p.line_of(n)].0;
                for w in &line[1..5] {
                    w.store(n, Ordering::Relaxed);
                }
                line[0].store(n, Ordering::Release);
            }
            Pattern::CursorSlot => {
                let line = &self.ring[(n as usize / 2) % RING].0;
                let half = (n as usize % 2) * 4;
                for w in &line[half..half + 4] {
                    w.store(n, Ordering::Relaxed);
                }
                self.cursor.0 .0[0].store(n, Ordering::Release);
            }
        }
    }

    /// Spins until message `n` is there; returns one of its payload words.
    fn recv(&self, p: Pattern, n: u64) -> u64 {
        match p {
            Pattern::Floor | Pattern::SameLine | Pattern::NewLine => {
                let line = &self.ring[p.line_of(n)].0;
                while line[0].load(Ordering::Acquire) != n {}
                line[1].load(Ordering::Relaxed)
            }
            Pattern::CursorSlot => {
                while self.cursor.0 .0[0].load(Ordering::Acquire) != n {}
                let line = &self.ring[(n as usize / 2) % RING].0;
                line[(n as usize % 2) * 4].load(Ordering::Relaxed)
            }
        }
    }
}

/// Runs the four patterns in alternating blocks; one outcome each, with each
/// pattern's block-paired ratio to the floor on each floor level (`levels`).
pub fn run(clock: Clock, warmup: u64, samples: u64) -> Vec<Outcome> {
    let blocks = (warmup + samples).div_ceil(BLOCK);
    let warm_blocks = warmup.div_ceil(BLOCK);
    let ways: Arc<Vec<(Way, Way)>> =
        Arc::new(PATTERNS.iter().map(|_| (Way::new(), Way::new())).collect());
    let echo = {
        let ways = ways.clone();
        std::thread::spawn(move || {
            pin(1);
            for b in 0..blocks {
                for ((p, _), (ping, pong)) in PATTERNS.iter().zip(ways.iter()) {
                    for n in b * BLOCK + 1..=(b + 1) * BLOCK {
                        std::hint::black_box(ping.recv(*p, n));
                        pong.send(*p, n);
                    }
                }
            }
        })
    };
    pin(0);
    let mut h: Vec<Recorder> = PATTERNS.iter().map(|_| Recorder::with_blocks()).collect();
    let mut rounds: Vec<crate::levels::Round> = Vec::with_capacity(blocks as usize);
    for b in 0..blocks {
        let keep = b >= warm_blocks;
        for (((p, _), (ping, pong)), h) in PATTERNS.iter().zip(ways.iter()).zip(&mut h) {
            for n in b * BLOCK + 1..=(b + 1) * BLOCK {
                let t0 = ticks();
                ping.send(*p, n);
                std::hint::black_box(pong.recv(*p, n));
                let t1 = ticks();
                if keep {
                    h.saturating_record(clock.ns(t0, t1));
                }
            }
        }
        if keep {
            rounds.push(h.iter_mut().map(Recorder::take_block_p50).collect());
        }
    }
    echo.join().expect("echo thread");
    let note = "interleaved blocks of 5000 round trips, same 2 pinned threads; no weft code";
    PATTERNS
        .iter()
        .zip(&h)
        .enumerate()
        .map(|(k, ((_, name), h))| {
            let to_floor = (0, "low_level_x_floor", "high_level_x_floor");
            Outcome::latency(name, 8, h, note).with_all(crate::levels::extras(
                &rounds,
                k,
                &[to_floor],
            ))
        })
        .collect()
}
