//! One producer, up to N consumers (N fixed at create), each with its own cursor.
//! Consumers join and leave at run time.
//!
//! ## Layout
//! ```text
//! +0      tail         AtomicU64  producer position (bytes since creation; reliable
//!                                 mode: a lower bound, stored every 4 KiB)  128-byte slot
//! +128    last         AtomicU64  overwrite mode: start of the newest frame
//! +256    tail_intent  AtomicU64  overwrite mode: end of the range being written
//! +384    evictions    AtomicU64  consumers evicted so far (reliable mode)
//! +512    producer     PeerWords  holder, heartbeat, closed
//! +640    slot[0..N]   128 bytes each:
//!           cursor AtomicU64   consumer position           progress AtomicU64  polls so far
//!           state  AtomicU32   0 free, 1 active, 2 evicted  lapped   AtomicU64  frames missed
//!           peer   PeerWords   holder pid, heartbeat
//! +4096·k data area; a reliable-mode frame starts with the common header word
//!         alone (8 bytes); an overwrite-mode frame's header is 16 bytes, the header
//!         word, then the frame's sequence number (0, 1, 2, … per producer)
//! ```
//!
//! ## Reliable mode
//! The producer never writes more than `capacity` bytes ahead of the slowest
//! *active* consumer: it caches `limit = min(active cursors) + capacity` and rescans
//! the slots only when a claim would pass it. Consumers find frames as in `spsc`
//! (header word, Acquire) and read them in place. The word after the last frame
//! is always zero: the producer stores it with the frame when it falls inside the
//! frame's last line, and otherwise zeroed it ahead: it zeroes the first word of
//! each line up to 4 KiB past `tail` once every consumer is a lap past it, so the
//! lines a frame goes into are already the producer's when its stores reach them.
//! A consumer whose `progress` counter has not moved while it blocks the producer
//! for the eviction timeout is marked evicted (CAS active → evicted, counted), so a
//! dead consumer blocks the producer for at most that long. A live but evicted
//! consumer gets [`PollError::Evicted`] and may [`Consumer::rejoin`].
//!
//! Consumers never read `tail`, so the producer stores it only when its position
//! crosses a 4 KiB boundary, in every rescan and on close.
//!
//! ## Joining
//! Joining must not let a producer holding a stale `limit` overwrite the
//! joiner's starting point, and must not lose a frame the producer accepted
//! because it counted the joiner. The joiner stores its cursor (the `tail` it
//! loaded) and `state = joining`, issues a SeqCst fence, then loads `tail`;
//! the producer stores `tail` and issues a SeqCst fence before scanning the
//! slots. Either the scan sees the joiner, or the joiner's load sees the tail
//! the producer stored before it scanned (or a later one), and every cursor
//! it saw was at most that tail, so its cached limit is at most the joiner's
//! start plus the capacity. The joiner then walks the committed frames from there to the
//! first empty header (the newest position; the producer cannot write over
//! what it walks), stores that position as its cursor (Release), and only
//! then moves `joining → active` (CAS, Release). The producer keeps a joining
//! slot's lap free but counts only active slots as consumers, and a claim
//! rescans until one is active; a producer that sees the joiner active has
//! already committed every frame the joiner walked, so whatever it accepts
//! from then on lies at or past the joiner's start and reaches it.
//!
//! ## Overwrite mode
//! The producer never waits. Before it writes into the ring it stores `tail_intent`
//! (the end of the range it is about to overwrite) and a Release fence. Consumers
//! (1) load `tail` (Acquire, pairs with the producer's Release store of `tail`),
//! (2) copy the frame out with relaxed atomic loads, (3) Acquire fence, (4) load
//! `tail_intent`. If `tail_intent > cursor + capacity`, the copy may be torn, so it is
//! discarded. A lapped consumer jumps to the newest frame (`last`, stored with
//! Release before `tail`), reads it with the same validation, and reports
//! [`PollError::Lapped`] with the difference of sequence numbers before delivering
//! it. A joiner starts right after the newest frame, so it knows the next sequence
//! number from the start. The application only
//! ever sees validated copies, never bytes the producer may be writing.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::time::Duration;

use crate::error::{ClaimError, PollError};
use crate::frame::{self, align_broadcast_frame, Frame, FIRST_RESERVED_TYPE, TYPE_PADDING};
use crate::liveness::{now_ns, ProcessId};
use crate::mem::{crosses_tail_mark, line_end, RingMem, ZERO_AHEAD, ZERO_STEP};
use crate::peer::slot_state::{ACTIVE, FREE, JOINING};
use crate::peer::{PeerState, PeerWords};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering, Padded, Zeroed};

/// Bytes of a reliable-mode frame header: the header word alone. A reliable
/// consumer finds frames by their headers, in order, and never needs a
/// sequence number (layout version 9; docs/shm.md, "seventh round").
pub const RELIABLE_HEADER_LEN: usize = 8;

/// Bytes of an overwrite-mode frame header: the header word, then the frame's
/// sequence number, from which a lapped consumer counts what it missed.
pub const OVERWRITE_HEADER_LEN: usize = 16;

/// What the producer does when the slowest consumer is a full ring behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Wait (claims fail with `Full`) for the slowest live consumer; evict a
    /// consumer that makes no progress for the eviction timeout.
    Reliable,
    /// Never wait: overwrite the oldest frames; lapped consumers are told.
    Overwrite,
}

impl Mode {
    /// Bytes of a frame header in this mode: [`RELIABLE_HEADER_LEN`] or
    /// [`OVERWRITE_HEADER_LEN`].
    #[inline(always)]
    pub const fn header_len(self) -> usize {
        match self {
            Mode::Reliable => RELIABLE_HEADER_LEN,
            Mode::Overwrite => OVERWRITE_HEADER_LEN,
        }
    }
}

/// Sizes and policy of a broadcast ring.
#[derive(Clone, Copy, Debug)]
pub struct BroadcastConfig {
    /// Bytes of the data area: a power of two, at least 1024.
    pub capacity: usize,
    /// Largest payload; default `capacity / 8`.
    pub max_payload: Option<usize>,
    /// Consumer slots (1 to 1024).
    pub max_consumers: usize,
    /// Reliable or overwrite.
    pub mode: Mode,
    /// Reliable mode: how long a consumer may block the producer without making
    /// progress before it is evicted. Default 1 s. (Mapped rings take it from
    /// [`crate::ShmOptions::liveness_timeout`].)
    pub eviction_timeout: Duration,
    /// Reliable mode, the slow-consumer policy: a consumer that keeps the
    /// producer blocked (a whole ring behind) for this long without a break
    /// is evicted even though it is reading, so one slow reader cannot set
    /// everyone's pace; it learns it with [`PollError::Evicted`] and how much
    /// it missed from [`Consumer::rejoin`]. `None` (default): a consumer that
    /// makes progress is waited for, however slow.
    pub slow_consumer_timeout: Option<Duration>,
}

impl BroadcastConfig {
    /// A ring of `capacity` bytes for up to `max_consumers` consumers.
    pub fn new(capacity: usize, max_consumers: usize, mode: Mode) -> Self {
        Self {
            capacity,
            max_payload: None,
            max_consumers,
            mode,
            eviction_timeout: Duration::from_secs(1),
            slow_consumer_timeout: None,
        }
    }

    fn slow_ns(&self) -> Option<u64> {
        self.slow_consumer_timeout
            .map(|d| (d.as_nanos() as u64).max(1))
    }

    fn validate(&self) -> Result<usize, crate::ShmError> {
        if self.max_consumers == 0 || self.max_consumers > 1024 {
            return Err(crate::ShmError::InvalidConfig(format!(
                "max_consumers {}: expected 1 to 1024",
                self.max_consumers
            )));
        }
        crate::spsc::validate_sizes(self.capacity, self.max_payload, self.mode.header_len())
    }
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct Control {
    /// Producer position, frame-aligned, only grows. Release after each commit.
    tail: Padded<AtomicU64>,
    /// Overwrite mode only: start of the newest frame (Release, before `tail`),
    /// where a lapped or joining consumer resynchronises.
    last: Padded<AtomicU64>,
    /// Overwrite mode: the producer may be writing anywhere below this position.
    tail_intent: Padded<AtomicU64>,
    /// Consumers evicted so far.
    evictions: Padded<AtomicU64>,
    producer: Padded<PeerWords>,
}

impl Zeroed for Control {
    fn zeroed() -> Self {
        Self {
            tail: Zeroed::zeroed(),
            last: Zeroed::zeroed(),
            tail_intent: Zeroed::zeroed(),
            evictions: Zeroed::zeroed(),
            producer: Zeroed::zeroed(),
        }
    }
}

/// One consumer's slot (128 bytes, its own cache lines).
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Slot {
    /// Consumer position. Written by the consumer (Release) after each poll; read by
    /// the producer (Acquire) when it rescans.
    cursor: AtomicU64,
    /// Bumped by every poll: proof of life for eviction, no clock needed.
    progress: AtomicU64,
    /// Frames this consumer missed by being lapped (overwrite mode).
    lapped: AtomicU64,
    /// FREE, JOINING, ACTIVE or EVICTED. The consumer stores JOINING when it
    /// joins, moves it to ACTIVE (CAS) once it has chosen where it starts, and
    /// stores FREE on leave; the producer moves JOINING or ACTIVE → EVICTED (CAS).
    state: AtomicU32,
    _pad: AtomicU32,
    peer: PeerWords,
}

impl Zeroed for Slot {
    fn zeroed() -> Self {
        Self {
            cursor: Zeroed::zeroed(),
            progress: Zeroed::zeroed(),
            lapped: Zeroed::zeroed(),
            state: Zeroed::zeroed(),
            _pad: Zeroed::zeroed(),
            peer: Zeroed::zeroed(),
        }
    }
}

type Mem = RingMem<Control, Slot>;

/// What both ends need to know about the ring.
#[derive(Clone, Copy, Debug)]
struct Params {
    max_payload: usize,
    mode: Mode,
    eviction_timeout_ns: u64,
    /// Producer side: see [`BroadcastConfig::slow_consumer_timeout`].
    slow_consumer_ns: Option<u64>,
}

/// A broadcast ring over heap memory; consumers join with [`Producer::join`].
pub fn channel(config: BroadcastConfig) -> Result<Producer, crate::ShmError> {
    let max_payload = config.validate()?;
    let mem = Mem::heap(config.max_consumers, config.capacity);
    let _ = mem.ctrl().producer.take(ProcessId::current());
    let params = Params {
        max_payload,
        mode: config.mode,
        eviction_timeout_ns: config.eviction_timeout.as_nanos() as u64,
        slow_consumer_ns: config.slow_ns(),
    };
    Ok(Producer::new(mem, params))
}

#[cfg(not(loom))]
mod shm {
    use super::*;
    use crate::region::{attach_ring, create_ring, RegionSpec, RingKind, ShmOptions};
    use crate::ShmError;

    impl Producer {
        /// Creates region `name` holding an empty broadcast ring and returns its
        /// producer. The eviction timeout is `opts.liveness_timeout`.
        pub fn create(
            opts: &ShmOptions,
            name: &str,
            config: &BroadcastConfig,
        ) -> Result<Self, ShmError> {
            let max_payload = config.validate()?;
            let spec = RegionSpec {
                kind: RingKind::Broadcast,
                capacity: config.capacity,
                max_payload,
                slots: config.max_consumers as u32,
                flags: (config.mode == Mode::Overwrite) as u32,
            };
            let mem = create_ring(opts, name, spec, |mem: &Mem| {
                let _ = mem.ctrl().producer.take(ProcessId::current());
            })?;
            let params = Params {
                max_payload,
                mode: config.mode,
                eviction_timeout_ns: opts.liveness_timeout.as_nanos() as u64,
                slow_consumer_ns: config.slow_ns(),
            };
            Ok(Self::new(mem, params))
        }
    }

    impl Consumer {
        /// Attaches to region `name` and joins as a new consumer, starting at the
        /// newest position (frames published before the join are not delivered).
        /// Fails with [`ShmError::RoleTaken`] when every slot is in use.
        pub fn attach(opts: &ShmOptions, name: &str) -> Result<Self, ShmError> {
            let (mem, info, path) = attach_ring::<Control, Slot>(opts, name, RingKind::Broadcast)?;
            if info.slots == 0 || info.slots > 1024 || info.flags > 1 {
                return Err(ShmError::Corrupt {
                    path,
                    what: "broadcast slots or flags".into(),
                });
            }
            let params = Params {
                max_payload: info.max_payload as usize,
                mode: if info.flags == 1 {
                    Mode::Overwrite
                } else {
                    Mode::Reliable
                },
                eviction_timeout_ns: info.liveness_timeout_ns,
                slow_consumer_ns: None,
            };
            crate::spsc::validate_sizes(
                info.capacity as usize,
                Some(params.max_payload),
                params.mode.header_len(),
            )
            .map_err(|e| ShmError::Corrupt {
                path: path.clone(),
                what: e.to_string(),
            })?;
            Consumer::join(mem, params).map_err(|e| match e {
                JoinFailure::NoSlot => ShmError::RoleTaken {
                    path,
                    role: "broadcast consumer slot",
                    pid: 0,
                },
                JoinFailure::NoMemory(len) => ShmError::Corrupt {
                    path,
                    what: format!(
                        "its largest frame needs a {len}-byte copy buffer that cannot be allocated"
                    ),
                },
            })
        }
    }
}

/// Joins consumers to a ring; see [`Producer::joiner`]. `Send`.
#[derive(Debug)]
pub struct Joiner {
    mem: Mem,
    params: Params,
}

impl Joiner {
    /// Joins a new consumer at the newest position; `None` if every slot is
    /// taken (or, overwrite mode, its copy buffer cannot be allocated).
    pub fn join(&self) -> Option<Consumer> {
        Consumer::join(self.mem.clone(), self.params).ok()
    }
}

/// Why a consumer could not join.
#[derive(Clone, Copy, Debug)]
enum JoinFailure {
    /// Every slot is taken.
    NoSlot,
    /// Overwrite mode: the copy buffer of this many bytes could not be allocated.
    #[cfg_attr(loom, allow(dead_code))] // read by the mapped rings' attach only
    NoMemory(usize),
}

/// Where a producer keeps its position: a word of its own, or one it was
/// handed ([`Producer::keep_position_in`]), so that the one store a frame
/// makes serves the ring and a counter of its position. Only the producer
/// reads or writes it through here; others (`weft-stat`) read the handed
/// word as a counter.
#[derive(Debug)]
struct Tail {
    /// `_own`'s word, or the handed one.
    word: NonNull<StdAtomicU64>,
    _own: Box<StdAtomicU64>,
    /// Keeps the handed word's memory mapped.
    #[cfg(not(loom))]
    _keep: Option<crate::WordRef>,
}

// SAFETY: `word` points at `_own`'s heap word or into memory `_keep` keeps
// mapped, both owned by the `Tail`; access is atomic.
unsafe impl Send for Tail {}

impl Tail {
    /// The largest position a producer reads back: 2^62 bytes (a stream of
    /// 10 GB/s reaches it after 14 years), far enough below `u64::MAX` that
    /// no sum of a position and a ring's sizes overflows.
    const MAX: u64 = 1 << 62;

    fn new(position: u64) -> Self {
        let own = Box::new(StdAtomicU64::new(position));
        Self {
            word: NonNull::from(&*own),
            _own: own,
            #[cfg(not(loom))]
            _keep: None,
        }
    }

    /// The position, at most [`Tail::MAX`]: a handed word lies in a file
    /// that whoever may write the ring may write too, and the sums the
    /// producer makes from it must not overflow (a panic in a debug build).
    /// A position changed under the producer misplaces frames (consumers
    /// report them corrupt) or holds the producer back; it never moves a
    /// store out of the area, whose offsets are masked.
    #[inline(always)]
    fn get(&self) -> u64 {
        // SAFETY: see the `Send` impl: the word lives as long as `self`.
        let position = unsafe { self.word.as_ref() }.load(StdOrdering::Relaxed);
        position.min(Self::MAX)
    }

    #[inline(always)]
    fn set(&self, position: u64) {
        // SAFETY: as in `get`. Release, as a counter's store is: readers of
        // a handed word load it with Acquire.
        unsafe { self.word.as_ref() }.store(position, StdOrdering::Release)
    }

    #[cfg(not(loom))]
    fn keep_in(&mut self, word: crate::WordRef) {
        word.store(self.get(), StdOrdering::Release);
        self.word = NonNull::from(&*word);
        self._keep = Some(word);
    }
}

/// The producer. `Send`, not `Sync`. Dropping it closes the ring.
#[derive(Debug)]
pub struct Producer {
    mem: Mem,
    params: Params,
    /// Our position: where the next frame goes.
    tail: Tail,
    /// Overwrite mode: the next frame's sequence number.
    seq: u64,
    /// Reliable mode: may write up to here without rescanning the slots.
    limit: u64,
    /// Reliable mode: the lines below this have their first word zeroed this
    /// lap (a line boundary).
    zeroed: u64,
    /// Per slot: what we know of the consumer while it blocks us.
    watch: Vec<crate::peer::BlockerWatch>,
    last_eviction: Option<crate::peer::Eviction>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl Producer {
    /// The ring's data capacity in bytes (a power of two): what a consumer
    /// can be behind before the producer waits (reliable) or laps it.
    pub fn capacity(&self) -> usize {
        self.mem.area.capacity()
    }

    /// Whether the ring's file was truncated under it while in use: the
    /// ring is then unusable (it reads as empty, writes go nowhere) and the
    /// process survived only because weft caught the fault. Not for every
    /// call: one atomic load and a type check; false for heap rings.
    pub fn truncated(&self) -> bool {
        self.mem.truncated()
    }

    fn new(mem: Mem, params: Params) -> Self {
        let tail = mem.ctrl().tail.load(Ordering::Acquire);
        let watch = vec![crate::peer::BlockerWatch::default(); mem.slots().len()];
        Self {
            mem,
            params,
            tail: Tail::new(tail),
            seq: 0,
            limit: tail,
            // The producer is made with its ring, whose area is all zero.
            zeroed: line_end(tail),
            watch,
            last_eviction: None,
            _not_sync: PhantomData,
        }
    }

    /// Joins a new consumer to this (heap or mapped) ring, starting at the newest
    /// position; `None` if every slot is taken (or, overwrite mode, its copy
    /// buffer cannot be allocated).
    pub fn join(&self) -> Option<Consumer> {
        Consumer::join(self.mem.clone(), self.params).ok()
    }

    /// A handle that joins consumers to this ring later, from any thread, after
    /// the producer has moved elsewhere. It holds no consumer slot (so it never
    /// holds the producer back) and keeps the ring's memory alive.
    pub fn joiner(&self) -> Joiner {
        Joiner {
            mem: self.mem.clone(),
            params: self.params,
        }
    }

    /// Largest payload.
    pub fn max_payload(&self) -> usize {
        self.params.max_payload
    }

    /// The ring's position: bytes written into it since it was created (frame
    /// headers and padding included). One load through a pointer (see
    /// [`Producer::keep_position_in`]).
    #[inline]
    pub fn position(&self) -> u64 {
        self.tail.get()
    }

    /// Keeps the producer's position (what [`position`](Self::position)
    /// returns, stored once per frame) in `word` from now on, instead of in
    /// a word of its own: a counter of the ring's position, such as a
    /// publication's, is then current without a store of its own per
    /// message. `word` must have no other writer, and nobody who may not
    /// write the ring may write it (a file with the ring's permissions):
    /// its value becomes where the next frame goes.
    #[cfg(not(loom))]
    pub fn keep_position_in(&mut self, word: crate::WordRef) {
        self.tail.keep_in(word);
    }

    /// The last consumer this producer evicted, and why (dead, stuck or
    /// slow); `None` before any.
    pub fn last_eviction(&self) -> Option<crate::peer::Eviction> {
        self.last_eviction
    }

    /// Consumers evicted so far (reliable mode).
    pub fn evictions(&self) -> u64 {
        self.mem.ctrl().evictions.load(Ordering::Relaxed)
    }

    /// Active (joined, not evicted) consumers; scans the slots.
    pub fn consumers(&self) -> usize {
        self.mem
            .slots()
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) == ACTIVE)
            .count()
    }

    /// Records "alive now" for consumers' [`Consumer::producer_state`].
    pub fn heartbeat(&self) {
        self.mem.ctrl().producer.heartbeat();
    }

    /// Claims space for one frame; write it, then [`Claim::commit`]. Reliable mode
    /// fails with `Full` while the slowest active consumer is a ring behind (and
    /// evicts it once it has made no progress for the eviction timeout), or
    /// `NotConnected` with no active consumer. Overwrite mode never fails for room.
    #[inline]
    pub fn try_claim(&mut self, len: usize, type_id: u32) -> Result<Claim<'_>, ClaimError> {
        let (frame_off, pad) = self.reserve(len, type_id)?;
        Ok(Claim {
            producer: self,
            frame_off,
            pad,
            len,
            type_id,
        })
    }

    /// Claims, copies `payload` in, and commits. In overwrite mode the copy is made
    /// of relaxed atomic word stores, so that lapped readers copying the same bytes
    /// never race with plain writes (see [`Claim::payload_mut`]).
    #[inline(always)]
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<(), ClaimError> {
        // The mode is read once: each arm passes it on as a constant, so
        // the inlined claim and publish carry no test of it of their own
        // (each was a load and a branch, reloaded after the ring's stores).
        match self.params.mode {
            Mode::Reliable => self.offer_in(Mode::Reliable, type_id, payload),
            Mode::Overwrite => self.offer_in(Mode::Overwrite, type_id, payload),
        }
    }

    /// [`Producer::offer`] in `mode`, the ring's own.
    #[inline(always)]
    fn offer_in(&mut self, mode: Mode, type_id: u32, payload: &[u8]) -> Result<(), ClaimError> {
        let (frame_off, pad) = self.reserve_in(mode, payload.len(), type_id)?;
        let at = frame_off + mode.header_len();
        match mode {
            // SAFETY: `reserve` handed us this frame's range, inside the area, and no
            // active consumer reads it before the frame is published.
            Mode::Reliable => unsafe { self.mem.area.copy_in(at, payload) },
            Mode::Overwrite => self.mem.area.copy_in_racy(at, payload),
        }
        self.publish_in(mode, frame_off, pad, payload.len(), type_id);
        Ok(())
    }

    /// Sends a `Pod` value as one frame.
    #[inline]
    pub fn offer_pod<T: bytemuck::Pod>(
        &mut self,
        type_id: u32,
        value: &T,
    ) -> Result<(), ClaimError> {
        self.offer(type_id, bytemuck::bytes_of(value))
    }

    #[inline(always)]
    fn reserve(&mut self, len: usize, type_id: u32) -> Result<(usize, usize), ClaimError> {
        self.reserve_in(self.params.mode, len, type_id)
    }

    /// [`Producer::reserve`] in `mode`, the ring's own.
    #[inline(always)]
    fn reserve_in(
        &mut self,
        mode: Mode,
        len: usize,
        type_id: u32,
    ) -> Result<(usize, usize), ClaimError> {
        if len > self.params.max_payload {
            return Err(ClaimError::TooLarge {
                len,
                max: self.params.max_payload,
            });
        }
        if type_id >= FIRST_RESERVED_TYPE {
            return Err(ClaimError::ReservedType(type_id));
        }
        let cap = self.mem.area.capacity();
        let frame_len = align_broadcast_frame(mode.header_len() + len);
        let tail = self.tail.get();
        let off = tail as usize & (cap - 1);
        let pad = if frame_len > cap - off { cap - off } else { 0 };
        let end = tail + (pad + frame_len) as u64;
        match mode {
            Mode::Reliable => {
                if end + 8 > self.limit {
                    self.rescan(end + 8)?;
                }
                // The word at `end` must read as empty until the next frame:
                // zeroed here if it starts a line, else by `publish`.
                if line_end(end) > self.zeroed {
                    self.zero_to(line_end(end));
                }
            }
            Mode::Overwrite => {
                // Everything below `end + 8` (the zero-ahead word) may now change.
                self.mem
                    .ctrl()
                    .tail_intent
                    .store(end + 8, Ordering::Relaxed);
                // SYNC POINT: orders the intent before our writes into the area;
                // pairs with the consumers' Acquire fence before they load the intent.
                fence(Ordering::Release);
            }
        }
        Ok(((off + pad) & (cap - 1), pad))
    }

    /// Reliable mode: zeroes the first word of the lines from `zeroed` up to
    /// `need` (a line boundary) and on up to [`ZERO_AHEAD`] past `tail`, as
    /// far as the cached `limit` allows: a line's first word `L` may be
    /// written once `L + 8 <= limit`. `need` is always within it (a claim
    /// checked `end + 8 <= limit` first).
    #[inline(never)]
    fn zero_to(&mut self, need: u64) {
        let want = need.max(line_end(self.tail.get() + ZERO_AHEAD) - 64);
        let bound = if self.limit >= 8 {
            line_end(self.limit - 8)
        } else {
            0
        };
        self.zeroed = self.mem.area.zero_line_heads(self.zeroed, want.min(bound));
    }

    /// Recomputes `limit` from the active consumers' cursors; evicts a consumer
    /// that blocks `need` and has made no progress for the eviction timeout.
    #[cold]
    fn rescan(&mut self, need: u64) -> Result<(), ClaimError> {
        let cap = self.mem.area.capacity() as u64;
        // Our position, before the fence: a joiner this scan misses loads it
        // (or a later one) and starts there, within the limit we compute.
        self.store_tail();
        // SYNC POINT: pairs with the SeqCst fence in `Consumer::activate` (see the
        // module doc: a joiner is either seen here or starts at or after our tail).
        fence(Ordering::SeqCst);
        let (mut min, mut connected) = (u64::MAX, false);
        let mut now = 0;
        for (i, slot) in self.mem.slots().iter().enumerate() {
            let state = slot.state.load(Ordering::Acquire);
            if state != ACTIVE && state != JOINING {
                continue;
            }
            // SYNC POINT: pairs with the consumer's Release store of its cursor:
            // frames below it are read, their space may be reused.
            let cursor = slot.cursor.load(Ordering::Acquire);
            if now == 0 {
                now = now_ns().max(1);
            }
            let (timeout, slow) = (
                self.params.eviction_timeout_ns,
                self.params.slow_consumer_ns,
            );
            let reason = self.watch[i].judge(
                cursor,
                need,
                cap,
                now,
                &slot.progress,
                &slot.peer,
                timeout,
                slow,
            );
            let evictions = &self.mem.ctrl().evictions;
            if let Some(e) = reason
                .and_then(|r| crate::peer::evict(&slot.state, state, evictions, &slot.peer, r))
            {
                self.last_eviction = Some(e);
                self.watch[i].reset();
                continue;
            }
            // A joiner's lap is kept free, but it is not a consumer until it
            // is ACTIVE: what we accept from then on is at or past its start.
            min = min.min(cursor);
            connected |= state == ACTIVE;
        }
        if !connected {
            // Every claim rescans until a consumer is active.
            self.limit = self.tail.get();
            return Err(ClaimError::NotConnected);
        }
        self.limit = min + cap;
        if need > self.limit {
            return Err(ClaimError::Full);
        }
        Ok(())
    }

    #[inline(always)]
    fn publish(&mut self, frame_off: usize, pad: usize, len: usize, type_id: u32) -> u64 {
        self.publish_in(self.params.mode, frame_off, pad, len, type_id)
    }

    /// [`Producer::publish`] in `mode`, the ring's own.
    #[inline(always)]
    fn publish_in(
        &mut self,
        mode: Mode,
        frame_off: usize,
        pad: usize,
        len: usize,
        type_id: u32,
    ) -> u64 {
        let area = &self.mem.area;
        let cap = area.capacity();
        let header_len = mode.header_len();
        let from = self.tail.get();
        let next = from + (pad + align_broadcast_frame(header_len + len)) as u64;
        // The next header goes at `next`: empty until then. Reliable mode:
        // a word that starts a line was zeroed ahead (`zero_to`), so only one
        // inside the frame's last line, which we hold, is stored here.
        if mode == Mode::Overwrite || next % 64 != 0 {
            area.word(next as usize).store(0, Ordering::Relaxed);
        }
        if mode == Mode::Overwrite {
            area.word(frame_off + 8).store(self.seq, Ordering::Relaxed);
            self.seq += 1;
        }
        let first = from as usize & (cap - 1);
        if pad != 0 {
            area.word(frame_off)
                .store(frame::pack(header_len + len, type_id), Ordering::Relaxed);
            // SYNC POINT: pairs with reliable consumers' Acquire load of this header.
            area.word(first)
                .store(frame::pack(pad, TYPE_PADDING), Ordering::Release);
        } else {
            // SYNC POINT: as above.
            area.word(first)
                .store(frame::pack(header_len + len, type_id), Ordering::Release);
        }
        if mode == Mode::Overwrite {
            // SYNC POINT: pairs with the Acquire load in `Consumer::newest` (only
            // overwrite-mode consumers resynchronise to the newest frame).
            self.mem
                .ctrl()
                .last
                .store(from + pad as u64, Ordering::Release);
        }
        self.tail.set(next);
        match mode {
            Mode::Overwrite => self.store_tail(),
            Mode::Reliable => {
                // Consumers find frames by their headers; `tail` is for
                // joiners (a lower bound they walk on from) and tools, so it
                // is stored once per `TAIL_EVERY` bytes, in `rescan` and on close.
                if crosses_tail_mark(from, next) {
                    self.store_tail();
                }
                // Off the latency path (the header is out; x86 commits stores
                // in order), in steps of `ZERO_STEP`.
                if self.zeroed + ZERO_STEP <= next + ZERO_AHEAD {
                    self.zero_to(self.zeroed);
                }
            }
        }
        next
    }

    /// Stores `ctrl.tail`.
    #[inline(always)]
    fn store_tail(&self) {
        // SYNC POINT: pairs with overwrite consumers' Acquire load of `tail`,
        // and with a joiner's (the frames before it are committed).
        self.mem
            .ctrl()
            .tail
            .store(self.tail.get(), Ordering::Release);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.store_tail();
        self.mem.ctrl().producer.close();
    }
}

/// Space claimed for one broadcast frame.
#[derive(Debug)]
pub struct Claim<'p> {
    producer: &'p mut Producer,
    frame_off: usize,
    pad: usize,
    len: usize,
    type_id: u32,
}

impl Claim<'_> {
    /// Bytes of the payload claimed.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload, in place in the ring.
    ///
    /// Overwrite mode: a consumer that is being lapped may be copying these bytes
    /// (with atomic loads) while you write them with plain stores, and will then
    /// discard its copy. Between processes that is ordinary shared memory; between
    /// threads of one process it is, to the letter of Rust's memory model, a data
    /// race. [`Producer::offer`] writes with atomic stores and avoids it.
    #[cfg(not(loom))]
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: the range is this claim's, inside the area. Reliable mode: no
        // active consumer reads it (the producer stays a ring ahead of the slowest).
        // Overwrite mode: see above; lapped readers validate and discard their copy.
        unsafe {
            self.producer.mem.area.bytes_mut(
                self.frame_off + self.producer.params.mode.header_len(),
                self.len,
            )
        }
    }

    /// Publishes the frame. Returns the ring's position after it (see
    /// [`Producer::position`]).
    #[inline(always)]
    pub fn commit(self) -> u64 {
        self.producer
            .publish(self.frame_off, self.pad, self.len, self.type_id)
    }
}

/// A consumer. `Send`, not `Sync`. Dropping it frees its slot.
#[derive(Debug)]
pub struct Consumer {
    mem: Mem,
    params: Params,
    slot: usize,
    cursor: u64,
    progress: u64,
    /// Overwrite mode: sequence number of the next frame, once known.
    expected: Option<u64>,
    /// Overwrite mode: the validated copy handed to the application.
    scratch: Box<[u8]>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl Consumer {
    /// The ring's data capacity in bytes (a power of two): what a consumer
    /// can be behind before the producer waits (reliable) or laps it.
    pub fn capacity(&self) -> usize {
        self.mem.area.capacity()
    }

    /// The region this ring lives in, if it is a mapped ring.
    #[cfg(not(loom))]
    pub fn region(&self) -> Option<&crate::Region> {
        self.mem.keep_alive().downcast_ref()
    }

    /// Whether the ring's file was truncated under it while in use: the
    /// ring is then unusable (it reads as empty, writes go nowhere) and the
    /// process survived only because weft caught the fault. Not for every
    /// call: one atomic load and a type check; false for heap rings.
    pub fn truncated(&self) -> bool {
        self.mem.truncated()
    }

    /// The ring position this consumer has read up to, in bytes (the
    /// producer's [`position`](Producer::position) once it has read
    /// everything). A plain field read.
    #[inline]
    pub fn position(&self) -> u64 {
        self.cursor
    }

    fn join(mem: Mem, params: Params) -> Result<Self, JoinFailure> {
        // Overwrite mode copies each frame out before handing it over. The
        // size comes from the header, which another process wrote: allocate
        // fallibly, before taking a slot.
        let scratch = if params.mode == Mode::Overwrite {
            let len = align_broadcast_frame(params.max_payload);
            crate::mem::try_zeroed_bytes(len).ok_or(JoinFailure::NoMemory(len))?
        } else {
            Box::default()
        };
        let me = ProcessId::current();
        let slot = mem
            .slots()
            .iter()
            .position(|s| s.peer.take(me).is_ok())
            .ok_or(JoinFailure::NoSlot)?;
        let mut c = Self {
            mem,
            params,
            slot,
            cursor: 0,
            progress: 0,
            expected: None,
            scratch,
            _not_sync: PhantomData,
        };
        c.activate();
        Ok(c)
    }

    fn slot(&self) -> &Slot {
        &self.mem.slots()[self.slot]
    }

    /// Joins (or rejoins) at the newest position: JOINING, choose the start,
    /// then ACTIVE (module doc, "Joining").
    fn activate(&mut self) {
        loop {
            let ctrl_tail = self.mem.ctrl().tail.load(Ordering::Acquire);
            self.slot().cursor.store(ctrl_tail, Ordering::Relaxed);
            self.slot().state.store(JOINING, Ordering::Relaxed);
            // SYNC POINT: pairs with the SeqCst fence in `Producer::rescan`.
            fence(Ordering::SeqCst);
            // SYNC POINT: pairs with the producer's Release store of `tail`; we
            // then see the zero-ahead word at that position.
            self.cursor = self.mem.ctrl().tail.load(Ordering::Acquire);
            self.expected = None;
            match self.params.mode {
                // `tail` lags the committed frames by less than `TAIL_EVERY`:
                // walk to the first empty header, so that the join starts at
                // the newest position. Our slot's cursor is at or before where
                // we start, so the producer cannot write over what we walk.
                Mode::Reliable => self.cursor = self.first_empty_from(self.cursor),
                Mode::Overwrite => {
                    if self.cursor == 0 {
                        self.expected = Some(0);
                    } else if let Some((pos, frame_len, seq)) = self.newest() {
                        (self.cursor, self.expected) = (pos + frame_len as u64, Some(seq + 1));
                    }
                }
            }
            self.slot().cursor.store(self.cursor, Ordering::Release);
            // SYNC POINT: pairs with the Acquire load of `state` in
            // `Producer::rescan` and `consumers`: whoever sees us active sees
            // our start, and everything it commits afterwards lies at or past
            // it (the headers we walked were committed before it looked).
            if crate::peer::finish_join(&self.slot().state) {
                return;
            }
            // Evicted while joining: we stalled for the eviction timeout
            // between the two stores. Join again.
        }
    }

    /// Reliable mode: the position of the first empty header at or after
    /// `pos`, walking committed frames by their headers (Acquire, as a poll
    /// reads them); stops at a header that does not check (the first poll
    /// reports it) and after a lap whatever the headers say.
    fn first_empty_from(&self, mut pos: u64) -> u64 {
        let area = &self.mem.area;
        let cap = area.capacity();
        let end = pos + cap as u64;
        while pos < end {
            let off = pos as usize & (cap - 1);
            // SYNC POINT: pairs with the producer's Release store of this header.
            let w = area.word(off).load(Ordering::Acquire);
            match (w != 0).then(|| self.check(off, w)).flatten() {
                Some((frame_len, _, _)) => pos += frame_len as u64,
                None => break,
            }
        }
        pos
    }

    /// Overwrite mode: the newest frame as (position, frame length, sequence), read
    /// and validated against `tail_intent`; `None` if the producer kept overwriting it.
    fn newest(&self) -> Option<(u64, usize, u64)> {
        let ctrl = self.mem.ctrl();
        let area = &self.mem.area;
        let cap = area.capacity() as u64;
        for _ in 0..8 {
            // SYNC POINT: pairs with the producer's Release store of `last`.
            let pos = ctrl.last.load(Ordering::Acquire);
            let off = pos as usize & (cap as usize - 1);
            let w = area.word(off).load(Ordering::Relaxed);
            let seq = area.word(off + 8).load(Ordering::Relaxed);
            // SYNC POINT: pairs with the producer's Release fence after `tail_intent`.
            fence(Ordering::Acquire);
            if ctrl.tail_intent.load(Ordering::Relaxed) > pos + cap {
                continue;
            }
            if let Some((frame_len, type_id, _)) = self.check(off, w) {
                if type_id != TYPE_PADDING {
                    return Some((pos, frame_len, seq));
                }
            }
            return None;
        }
        None
    }

    /// Overwrite mode: after being lapped, moves to the newest frame and reports how
    /// many frames were missed (the next poll delivers that frame).
    #[cold]
    fn resync(&mut self) -> Result<(), PollError> {
        let Some((pos, _, seq)) = self.newest() else {
            // The producer is lapping even its newest frame: retry on the next pass.
            self.cursor = self.mem.ctrl().tail.load(Ordering::Acquire);
            return Ok(());
        };
        self.cursor = pos;
        let missed = self.expected.map_or(0, |e| seq.saturating_sub(e));
        self.expected = Some(seq);
        if missed == 0 {
            return Ok(());
        }
        self.slot().lapped.fetch_add(missed, Ordering::Relaxed);
        Err(PollError::Lapped { missed })
    }

    /// After [`PollError::Evicted`]: joins again at the newest position, keeping
    /// this consumer's slot. Returns the ring positions skipped over
    /// (`from..to`, bytes, frame headers included): what it lost.
    pub fn rejoin(&mut self) -> std::ops::Range<u64> {
        let from = self.cursor;
        self.activate();
        from..self.cursor.max(from)
    }

    /// Frames this consumer has missed by being lapped (overwrite mode).
    pub fn lapped(&self) -> u64 {
        self.slot().lapped.load(Ordering::Relaxed)
    }

    /// The producer's liveness (probes its process; not for the hot path).
    pub fn producer_state(&self, liveness_timeout_ns: u64) -> PeerState {
        self.mem.ctrl().producer.state(liveness_timeout_ns)
    }

    /// Whether the producer has published nothing past this consumer's
    /// position (one Acquire load). `false` may still mean no frame for the
    /// application (padding at the end of the ring): then `poll` returns 0.
    pub fn is_caught_up(&self) -> bool {
        match self.params.mode {
            // SYNC POINT: pairs with the producer's Release store of the header.
            Mode::Reliable => {
                self.mem
                    .area
                    .word(self.cursor as usize)
                    .load(Ordering::Acquire)
                    == 0
            }
            // SYNC POINT: pairs with the producer's Release store of `tail`.
            Mode::Overwrite => self.mem.ctrl().tail.load(Ordering::Acquire) <= self.cursor,
        }
    }

    /// The process holding the producer end (pid and start time), if any: it
    /// identifies a publisher session. One atomic load.
    pub fn producer_id(&self) -> Option<crate::liveness::ProcessId> {
        crate::liveness::ProcessId::from_word(
            self.mem.ctrl().producer.holder.load(Ordering::Acquire),
        )
    }

    /// Hands up to `limit` frames, in order, to `f`: in place in reliable mode, as a
    /// validated copy in overwrite mode. Never blocks, allocates, or makes a syscall.
    ///
    /// A reliable consumer finds frames by their headers alone (one Acquire
    /// load a frame) and never reads the producer's `tail`; a poll that
    /// returns fewer than `limit` found the ring empty.
    ///
    /// Errors: [`PollError::Lapped`] (overwrite; the next poll carries on from the
    /// newest frames), [`PollError::Evicted`] (reliable; call [`Consumer::rejoin`]),
    /// [`PollError::Closed`] (producer gone and everything read),
    /// [`PollError::Corrupt`].
    #[inline]
    pub fn poll<F: FnMut(Frame<'_>)>(&mut self, limit: usize, f: F) -> Result<usize, PollError> {
        self.progress += 1;
        self.slot().progress.store(self.progress, Ordering::Relaxed);
        match self.params.mode {
            Mode::Reliable => self.poll_reliable(limit, f),
            Mode::Overwrite => self.poll_overwrite(limit, f),
        }
    }

    fn poll_reliable<F: FnMut(Frame<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        if self.slot().state.load(Ordering::Acquire) != ACTIVE {
            return Err(PollError::Evicted);
        }
        let area = &self.mem.area;
        let cap = area.capacity();
        let start = self.cursor;
        let mut delivered = 0;
        let mut result = Ok(());
        while delivered < limit {
            let off = self.cursor as usize & (cap - 1);
            // SYNC POINT: pairs with the producer's Release store of this header.
            let w = area.word(off).load(Ordering::Acquire);
            if w == 0 {
                break;
            }
            let Some((frame_len, type_id, payload_len)) = self.check(off, w) else {
                result = Err(PollError::Corrupt {
                    position: self.cursor,
                    header: w,
                });
                break;
            };
            if type_id != TYPE_PADDING {
                #[cfg(not(loom))]
                // SAFETY: committed (header acquired) and not reusable by the producer
                // until our cursor passes it, after `f` returns.
                let payload = unsafe { area.bytes(off + RELIABLE_HEADER_LEN, payload_len) };
                #[cfg(loom)]
                let payload = &{
                    let mut v = vec![0u8; payload_len];
                    // SAFETY: as above.
                    unsafe { area.copy_out(off + RELIABLE_HEADER_LEN, &mut v) };
                    v
                }[..];
                f(Frame::new(type_id, payload));
                delivered += 1;
            }
            self.cursor += frame_len as u64;
        }
        if delivered > 0 {
            // The frames were read in place while we were a live consumer;
            // if the producer evicted us meanwhile (a stall longer than the
            // eviction or slow-consumer timeout), it may have written over
            // them while the callback read them. Checked after the reads,
            // as a seqlock reader checks its sequence: the producer's CAS
            // of our state comes before any such write.
            fence(Ordering::Acquire);
            if self.slot().state.load(Ordering::Relaxed) != ACTIVE {
                return Err(PollError::Overrun {
                    from: start,
                    to: self.cursor,
                });
            }
        }
        if self.cursor != start {
            // SYNC POINT: pairs with the producer's Acquire load in `rescan`.
            self.slot().cursor.store(self.cursor, Ordering::Release);
        }
        if delivered > 0 {
            return Ok(delivered);
        }
        result?;
        let cursor = self.cursor as usize;
        self.closed_if_drained(|| area.word(cursor).load(Ordering::Acquire) == 0)
    }

    fn poll_overwrite<F: FnMut(Frame<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        let cap = self.mem.area.capacity() as u64;
        let mut delivered = 0;
        let mut result = Ok(());
        // Each pass either delivers a frame, resynchronises, or stops; a producer
        // that laps us on every pass cannot keep us here for more than `limit` + 64.
        for _ in 0..limit.saturating_add(64) {
            if delivered >= limit {
                break;
            }
            // SYNC POINT: pairs with the producer's Release store of `tail`.
            let tail = self.mem.ctrl().tail.load(Ordering::Acquire);
            if tail <= self.cursor {
                break;
            }
            if tail - self.cursor > cap {
                if let Err(e) = self.resync() {
                    result = Err(e);
                    break;
                }
                continue;
            }
            let off = self.cursor as usize & (cap as usize - 1);
            let w = self.mem.area.word(off).load(Ordering::Relaxed);
            let seq = self.mem.area.word(off + 8).load(Ordering::Relaxed);
            let checked = self.check(off, w);
            if let Some((_, type_id, payload_len)) = checked {
                if type_id != TYPE_PADDING {
                    self.mem.area.copy_out_racy(
                        off + OVERWRITE_HEADER_LEN,
                        &mut self.scratch[..payload_len],
                    );
                }
            }
            // SYNC POINT: pairs with the producer's Release fence after `tail_intent`.
            fence(Ordering::Acquire);
            if self.mem.ctrl().tail_intent.load(Ordering::Relaxed) > self.cursor + cap {
                // The producer may have overwritten what we read: jump to the newest.
                if let Err(e) = self.resync() {
                    result = Err(e);
                    break;
                }
                continue;
            }
            let Some((frame_len, type_id, payload_len)) = checked else {
                result = Err(PollError::Corrupt {
                    position: self.cursor,
                    header: w,
                });
                break;
            };
            if type_id != TYPE_PADDING {
                if let Some(expected) = self.expected.filter(|&e| e != seq) {
                    // Frames expected..seq were overwritten before we read them.
                    let missed = seq.wrapping_sub(expected);
                    self.expected = Some(seq);
                    self.slot().lapped.fetch_add(missed, Ordering::Relaxed);
                    result = Err(PollError::Lapped { missed });
                    break;
                }
                self.expected = Some(seq + 1);
                f(Frame::new(type_id, &self.scratch[..payload_len]));
                delivered += 1;
            }
            self.cursor += frame_len as u64;
        }
        self.slot().cursor.store(self.cursor, Ordering::Release);
        if delivered > 0 {
            return Ok(delivered);
        }
        result?;
        self.closed_if_drained(|| self.mem.ctrl().tail.load(Ordering::Acquire) <= self.cursor)
    }

    /// Validates a header word at `off`: (frame length, type id, payload length).
    #[inline(always)]
    fn check(&self, off: usize, w: u64) -> Option<(usize, u32, usize)> {
        let cap = self.mem.area.capacity();
        let header_len = self.params.mode.header_len();
        let len = frame::len_of(w);
        let frame_len = align_broadcast_frame(len);
        let type_id = frame::type_of(w);
        let ok = if type_id == TYPE_PADDING {
            len >= 8 && off + frame_len == cap
        } else {
            len >= header_len
                && type_id < FIRST_RESERVED_TYPE
                && len - header_len <= self.params.max_payload
                && off + frame_len <= cap
        };
        ok.then_some((frame_len, type_id, len.saturating_sub(header_len)))
    }

    /// `Closed` if the producer has closed and nothing is left. The order matters:
    /// `closed` is loaded (Acquire) first, then `drained` looks again, so frames the
    /// producer published just before closing are never mistaken for "drained".
    fn closed_if_drained(&self, drained: impl FnOnce() -> bool) -> Result<usize, PollError> {
        if self.mem.ctrl().producer.is_closed() && drained() {
            return Err(PollError::Closed);
        }
        Ok(0)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let slot = self.slot();
        slot.state.store(FREE, Ordering::Release);
        slot.peer.release();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything readable now: polls until a poll hands over nothing.
    fn seqs(c: &mut Consumer) -> Result<Vec<u64>, PollError> {
        let mut out = Vec::new();
        while c.poll(usize::MAX, |f| {
            out.push(u64::from_le_bytes(f.payload()[..8].try_into().unwrap()))
        })? > 0
        {}
        Ok(out)
    }

    /// Reliable mode stores `tail` once per 4 KiB (and in rescans): a
    /// consumer joining between those stores walks from it to the newest
    /// frame, and `is_caught_up` reads the next header, not `tail`.
    /// A producer handed a word keeps its position there, current after
    /// every offer; whatever another writer of that word puts in it, the
    /// producer and its consumer go on without a panic (frames may be
    /// misplaced: consumers report them as corrupt).
    #[test]
    fn a_position_kept_in_a_handed_word_is_current_and_no_value_there_panics() {
        let words = crate::Words::private(1);
        let word = || words.get(0).unwrap();
        let mut p = channel(BroadcastConfig::new(64 * 1024, 2, Mode::Reliable)).unwrap();
        let mut c = p.join().unwrap();
        p.offer(1, &0u64.to_le_bytes()).unwrap();
        let before = p.position();
        p.keep_position_in(words.word(0).unwrap());
        assert_eq!(word().load(Ordering::Acquire), before);
        let mut got = Vec::new();
        for i in 1..2000u64 {
            p.offer(1, &i.to_le_bytes()).unwrap();
            if i % 100 == 0 {
                got.extend(seqs(&mut c).unwrap());
            }
            assert_eq!(word().load(Ordering::Acquire), p.position());
        }
        got.extend(seqs(&mut c).unwrap());
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
        let end = p.position();
        for hostile in [
            u64::MAX,
            u64::MAX - 7,
            1 << 63,
            0,
            3,
            end - 4096,
            end + 12_345,
        ] {
            word().store(hostile, Ordering::Release);
            for i in 0..3000u64 {
                let _ = p.offer(1, &i.to_le_bytes());
                if i % 500 == 0 {
                    let _ = c.poll(usize::MAX, |_| {});
                }
            }
            if c.poll(usize::MAX, |_| {}).is_err() {
                c = p.join().unwrap();
            }
        }
    }

    #[test]
    fn a_joiner_starts_at_the_newest_frame_though_tail_lags() {
        let mut p = channel(BroadcastConfig::new(64 * 1024, 2, Mode::Reliable)).unwrap();
        let mut a = p.join().unwrap();
        for i in 0..10u64 {
            p.offer(1, &i.to_le_bytes()).unwrap();
        }
        let stored = p.mem.ctrl().tail.load(Ordering::Acquire);
        assert!(stored < p.position(), "tail lags: {stored}");
        let mut late = p.join().unwrap();
        assert_eq!(late.position(), p.position());
        assert!(late.is_caught_up());
        assert!(!a.is_caught_up());
        p.offer(1, &10u64.to_le_bytes()).unwrap();
        assert!(!late.is_caught_up());
        assert_eq!(seqs(&mut late), Ok(vec![10]));
        assert_eq!(seqs(&mut a), Ok((0..11).collect()));
        // A stream past 4 KiB stores it; closing stores the rest.
        for i in 11..300u64 {
            p.offer(1, &i.to_le_bytes()).unwrap();
        }
        assert!(p.mem.ctrl().tail.load(Ordering::Acquire) >= 4096);
        let end = p.position();
        let mem = p.mem.clone();
        drop(p);
        assert_eq!(mem.ctrl().tail.load(Ordering::Acquire), end);
        let mut got = 0;
        while let Ok(n) = late.poll(usize::MAX, |_| {}) {
            got += n;
        }
        assert_eq!(got, 289);
        assert_eq!(late.poll(1, |_| {}), Err(PollError::Closed));
    }

    #[test]
    fn reliable_without_consumers_is_not_connected() {
        let mut p = channel(BroadcastConfig::new(1024, 2, Mode::Reliable)).unwrap();
        assert_eq!(p.offer(1, &[0; 8]), Err(ClaimError::NotConnected));
        let c = p.join().unwrap();
        assert_eq!(p.offer(1, &[0; 8]), Ok(()));
        drop(c);
        assert_eq!(p.consumers(), 0);
    }

    #[test]
    fn slots_run_out_and_free_on_drop() {
        let p = channel(BroadcastConfig::new(1024, 2, Mode::Reliable)).unwrap();
        let (a, _b) = (p.join().unwrap(), p.join().unwrap());
        assert!(p.join().is_none());
        drop(a);
        assert!(p.join().is_some());
    }

    #[test]
    fn reliable_consumers_each_get_everything_in_order_from_their_join() {
        let mut p = channel(BroadcastConfig::new(1024, 3, Mode::Reliable)).unwrap();
        let mut a = p.join().unwrap();
        p.offer(1, &0u64.to_le_bytes()).unwrap();
        let mut b = p.join().unwrap();
        let mut got_a = seqs(&mut a).unwrap();
        let mut got_b = Vec::new();
        for i in 1..1000u64 {
            while p.offer(1, &i.to_le_bytes()) == Err(ClaimError::Full) {
                got_a.extend(seqs(&mut a).unwrap());
                got_b.extend(seqs(&mut b).unwrap());
            }
        }
        got_a.extend(seqs(&mut a).unwrap());
        got_b.extend(seqs(&mut b).unwrap());
        assert_eq!(got_a, (0..1000).collect::<Vec<_>>());
        assert_eq!(
            got_b,
            (1..1000).collect::<Vec<_>>(),
            "b joined after frame 0"
        );
        drop(p);
        assert_eq!(a.poll(1, |_| {}), Err(PollError::Closed));
    }

    #[test]
    fn a_slow_consumer_is_cut_loose_only_with_the_policy_and_told_what_it_missed() {
        for policy in [None, Some(Duration::from_millis(20))] {
            let config = BroadcastConfig {
                eviction_timeout: Duration::from_secs(60),
                slow_consumer_timeout: policy,
                ..BroadcastConfig::new(1024, 2, Mode::Reliable)
            };
            let mut p = channel(config).unwrap();
            let mut fast = p.join().unwrap();
            let mut slow = p.join().unwrap();
            let (mut sent, mut slow_read) = (0u64, 0u64);
            // `slow` reads one frame per pass (progress, so never "stuck");
            // `fast` reads all. Without a policy the producer waits for
            // `slow`: it is never evicted.
            let started = std::time::Instant::now();
            let mut passes = 0;
            while p.evictions() == 0 && (policy.is_some() || passes < 500) {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "never cut loose"
                );
                passes += 1;
                for _ in 0..10 {
                    if p.offer(1, &sent.to_le_bytes()).is_ok() {
                        sent += 1;
                    }
                }
                seqs(&mut fast).unwrap();
                if let Ok(n) = slow.poll(1, |_| {}) {
                    slow_read += n as u64;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            match policy {
                None => {
                    assert_eq!(p.evictions(), 0, "a reading consumer is waited for");
                    // The producer went at the slow one's pace: at most a ring ahead.
                    assert!(
                        slow_read > 0 && sent <= slow_read + 64,
                        "{sent} {slow_read}"
                    );
                }
                Some(_) => {
                    assert_eq!(p.evictions(), 1);
                    assert_eq!(
                        p.last_eviction().map(|e| e.reason),
                        Some(crate::peer::EvictReason::Slow)
                    );
                    for _ in 0..100 {
                        p.offer(1, &sent.to_le_bytes()).unwrap();
                        sent += 1;
                        seqs(&mut fast).unwrap();
                    }
                    assert_eq!(slow.poll(10, |_| {}), Err(PollError::Evicted));
                    let before = slow.position();
                    let missed = slow.rejoin();
                    assert_eq!(missed.start, before);
                    assert_eq!(missed.end, p.position());
                    assert!(missed.end - missed.start >= 100 * 24, "{missed:?}");
                }
            }
        }
    }

    /// A consumer that stalls inside its callback, holding a frame read in
    /// place, past the eviction timeout: the producer evicts it and writes
    /// over that frame. The poll says so (`Overrun`, with the frames it had
    /// handed over) instead of returning as if the bytes had been stable.
    /// (Failed before: `Ok(1)`, and the callback's slice had changed.)
    #[test]
    fn a_consumer_evicted_while_reading_in_place_is_told_its_frames_may_have_changed() {
        let config = BroadcastConfig {
            eviction_timeout: Duration::from_millis(5),
            ..BroadcastConfig::new(1024, 2, Mode::Reliable)
        };
        let mut p = channel(config).unwrap();
        let mut c = p.join().unwrap();
        let mut live = p.join().unwrap();
        p.offer(1, &[1u8; 64]).unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<u64>();
        let producer = std::thread::spawn(move || {
            wait.recv().unwrap(); // the consumer is inside its callback
            let started = std::time::Instant::now();
            let mut written = 0u64;
            // Until it is evicted, and then a whole ring more.
            while p.evictions() == 0 || written < 4096 {
                assert!(started.elapsed() < Duration::from_secs(30), "never evicted");
                if p.offer(1, &[2u8; 64]).is_ok() && p.evictions() > 0 {
                    written += 64;
                }
                live.poll(usize::MAX, |_| {}).unwrap();
            }
            done.send(written).unwrap();
            p
        });
        // (The callback does not look at its slice after the stall: that
        // is the race the error reports.)
        let r = c.poll(1, |f| {
            assert_eq!(f.payload(), &[1u8; 64]);
            go.send(()).unwrap();
            finished.recv().unwrap();
        });
        let p = producer.join().unwrap();
        assert!(
            matches!(r, Err(PollError::Overrun { from: 0, to: 72 })),
            "{r:?}"
        );
        let skipped = c.rejoin();
        assert_eq!(skipped.end, p.position());
    }

    /// A slot caught between joining and active (its process stalled or
    /// died there) does not connect the producer, holds its lap free while
    /// it lasts, and is evicted like a stuck consumer.
    #[test]
    fn a_joining_slot_holds_the_producer_back_without_connecting_it() {
        let config = BroadcastConfig {
            eviction_timeout: Duration::from_millis(5),
            ..BroadcastConfig::new(1024, 2, Mode::Reliable)
        };
        let mut p = channel(config).unwrap();
        let stuck = &p.mem.slots()[0];
        stuck.peer.take(ProcessId::current()).unwrap();
        stuck.state.store(JOINING, Ordering::Release);
        assert_eq!(p.offer(1, &[0; 64]), Err(ClaimError::NotConnected));
        assert_eq!(p.consumers(), 0);
        let mut a = p.join().unwrap();
        assert_eq!(a.slot, 1);
        // `a` reads everything, yet the producer stops a ring past the joiner.
        let mut sent = 0u64;
        while p.offer(1, &[1; 64]).is_ok() {
            sent += 1;
            assert_eq!(a.poll(usize::MAX, |_| {}), Ok(1));
        }
        // 72-byte frames (an 8-byte header): 14 fit before the lap's end.
        assert_eq!(sent, 1024 / (RELIABLE_HEADER_LEN as u64 + 64));
        // It makes no progress: evicted after the timeout, then the stream goes on.
        let started = std::time::Instant::now();
        while p.offer(1, &[1; 64]).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "never evicted");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.evictions(), 1);
        assert_eq!(
            p.mem.slots()[0].state.load(Ordering::Acquire),
            crate::peer::slot_state::EVICTED
        );
    }

    #[test]
    fn a_stuck_consumer_is_evicted_and_may_rejoin() {
        let config = BroadcastConfig {
            eviction_timeout: Duration::from_millis(5),
            ..BroadcastConfig::new(1024, 2, Mode::Reliable)
        };
        let mut p = channel(config).unwrap();
        let mut live = p.join().unwrap();
        let mut stuck = p.join().unwrap();
        let mut sent = 0u64;
        // `stuck` never polls; `live` keeps up. The producer is held back until the
        // eviction timeout passes, then runs on.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while p.evictions() == 0 {
            assert!(std::time::Instant::now() < deadline, "never evicted");
            if p.offer(1, &sent.to_le_bytes()).is_ok() {
                sent += 1;
            }
            seqs(&mut live).unwrap();
        }
        for _ in 0..100 {
            p.offer(1, &sent.to_le_bytes()).unwrap();
            sent += 1;
            seqs(&mut live).unwrap();
        }
        assert_eq!(stuck.poll(10, |_| {}), Err(PollError::Evicted));
        stuck.rejoin();
        p.offer(1, &sent.to_le_bytes()).unwrap();
        assert_eq!(seqs(&mut stuck).unwrap(), vec![sent]);
    }

    #[test]
    fn overwrite_laps_a_slow_consumer_with_an_exact_count() {
        let mut p = channel(BroadcastConfig::new(1024, 1, Mode::Overwrite)).unwrap();
        let mut c = p.join().unwrap();
        for i in 0..1000u64 {
            p.offer(1, &i.to_le_bytes()).unwrap();
        }
        let mut got = Vec::new();
        let mut missed = 0;
        loop {
            match seqs(&mut c) {
                Ok(v) if v.is_empty() => break,
                Ok(v) => got.extend(v),
                Err(PollError::Lapped { missed: m }) => missed += m,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(missed > 0 && !got.is_empty());
        assert_eq!(
            missed + got.len() as u64,
            1000,
            "every frame is delivered or counted as missed"
        );
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(*got.last().unwrap(), 999);
        assert_eq!(c.lapped(), missed);
    }

    proptest! {
        /// Two reliable consumers polling at random against a model: each sees
        /// exactly the frames published since it joined, in order.
        #[test]
        fn reliable_matches_model(ops in proptest::collection::vec((0u8..3, 0usize..=200), 1..300)) {
            let mut p = channel(BroadcastConfig { max_payload: Some(200), ..BroadcastConfig::new(2048, 2, Mode::Reliable) }).unwrap();
            let mut cs = [p.join().unwrap(), p.join().unwrap()];
            let mut model: [std::collections::VecDeque<Vec<u8>>; 2] = Default::default();
            let mut n = 0u8;
            for (op, len) in ops {
                match op {
                    0 => {
                        n = n.wrapping_add(1);
                        let payload = vec![n; len];
                        match p.offer(n as u32, &payload) {
                            Ok(()) => model.iter_mut().for_each(|m| m.push_back(payload.clone())),
                            Err(ClaimError::Full) => {}
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    i => {
                        let i = i as usize - 1;
                        let mut got = Vec::new();
                        cs[i].poll(len % 7 + 1, |f| got.push(f.payload().to_vec())).unwrap();
                        for g in got { prop_assert_eq!(Some(g), model[i].pop_front()); }
                    }
                }
            }
        }
    }
}
