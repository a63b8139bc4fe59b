//! Many producers (threads or processes), many consumers: every consumer reads
//! every frame, in claim order, in place. Reliable only: producers never pass
//! the slowest active consumer. For a channel several processes publish; a
//! channel with one publisher uses [`crate::broadcast`], which costs less.
//!
//! ## Layout
//! ```text
//! +0      tail       AtomicU64  claimed position (bytes since creation); producers CAS it
//! +128    evictions  AtomicU64  consumers evicted so far
//! +256    skipped    AtomicU64  claims skipped because their producer died
//! +384    key        AtomicU64  random per ring: a frame's stamp is `position ^ key`
//! +512    slot[0..C+P] 128 bytes each: C consumer slots, then P producer slots
//!           consumer: cursor, progress, state (free / active / evicted), peer
//!           producer: claim_pos, claim_len (0 = no claim), end, peer
//! +4096·k data area; frames are FRAME_ALIGNMENT (32) byte aligned: the common
//!         header word, the stamp word, the payload. Padding frames (at least
//!         32 bytes) too.
//! ```
//!
//! ## Claims
//! A producer reads `tail`, checks the room against its cached limit (the
//! slowest active consumer's cursor plus the capacity, rescanned when a claim
//! would pass it), records the claim in its slot (`claim_pos` then
//! `claim_len`, Release) and moves `tail` by compare-and-swap (AcqRel). A
//! frame that would cross the end of the area is claimed together with the
//! padding up to the end, and starts at the beginning. The CAS decides the
//! order every consumer sees. To commit, the producer writes the header and
//! stamp words, stores `claim_len = 0`, then `end` (the position after its
//! claim), both Release.
//!
//! ## Reading without zeroing
//! A consumer never looks at bytes it cannot prove committed, so nothing has
//! to be zeroed after a lap (no one consumer could: all of them read every
//! frame). It reads up to a *horizon*: the largest `end` of any producer
//! (Acquire), lowered to the position of every claim outstanding at or after
//! its cursor (loaded after all the ends). Every tail change is a CAS (AcqRel),
//! so the CAS of the claim that ends at that `end` synchronises with the CAS
//! of every claim below it, and with the slot stores made before those: the
//! consumer then sees each such claim's `claim_len` (or the commit that
//! cleared it, or a later claim, each a Release store after the commit) and
//! its `claim_pos` (or a later one). A claim recorded at a position below the
//! cursor is a CAS that failed (a real one would have held the horizon below
//! it) and is ignored. The horizon is computed again only when the cursor
//! reaches it, from the producer slots alone: `tail`, which every claim
//! writes, stays in the producers' caches (consumers read it only when
//! joining and, every 1,024 empty polls, to notice a stuck claim).
//!
//! Each frame's stamp word holds `position ^ key`. A consumer checks it on
//! every frame (a corrupt ring is reported, never handed out), and the
//! dead-producer check below uses it to tell a committed frame from stale
//! bytes. Stale bytes match only if a payload held exactly that value at
//! that place: the key makes that a 2^-64 chance for data not made to hit it.
//!
//! ## A producer that dies holding a claim
//! The horizon stops at its claim. A consumer stuck there looks (every
//! millisecond) for the claim's owner: a slot whose claim starts at the
//! cursor. While any such owner lives, it waits (a slow producer is never
//! skipped). When all are dead: if the frame at the cursor carries its stamp,
//! a live producer committed it and the dead slot's claim was a CAS that
//! failed; otherwise the claim was the dead producer's, and the consumer
//! writes padding over it (compare-and-swap against the stale words, so a
//! consumer that was evicted meanwhile never overwrites new frames). Then it
//! clears the dead slot's claim (CAS), counts the skip, and reports
//! [`PollError::SkippedDeadProducer`]. A dead producer's slot is reused only
//! once its claim is cleared.
//!
//! ## Joining
//! As in [`crate::broadcast`]: the joiner stores `state = joining`, a SeqCst
//! fence, then loads `tail`, stores it as its cursor and only then moves
//! `joining → active`. A producer's rescan reads `tail` with a
//! read-modify-write before its SeqCst fence and caps its limit at that value
//! plus the capacity. If the rescan missed the joiner, the fences order the
//! joiner's load after that read-modify-write, so the joiner starts at or
//! after it and the producer's limit never reaches into the joiner's first
//! lap. Producers keep a joining slot's lap free but count only active slots
//! as consumers: one that sees the joiner active claims with a CAS of `tail`
//! that comes after the joiner's load of it, so every frame accepted on the
//! joiner's account lies at or past its start.

use std::marker::PhantomData;
use std::time::Duration;

use crate::error::{ClaimError, PollError};
use crate::frame::{self, align_frame, Frame, FIRST_RESERVED_TYPE, TYPE_PADDING};
use crate::liveness::{now_ns, ProcessId};
use crate::mem::RingMem;
use crate::peer::slot_state::{ACTIVE, FREE, JOINING};
use crate::peer::{PeerState, PeerWords};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering, Padded, Zeroed};

/// Bytes of a frame header: header word + stamp word.
pub const HEADER_LEN: usize = 16;

/// How often (ns) a consumer stuck at a claim probes the claim's owner.
const STALL_PROBE_NS: u64 = 1_000_000;
/// How often (in empty polls) a consumer looks whether a claim holds it up.
const STALL_CHECK_EVERY: u32 = 1024;

/// Sizes and policy of a many-producer broadcast ring.
#[derive(Clone, Copy, Debug)]
pub struct MpBroadcastConfig {
    /// Bytes of the data area: a power of two, at least 1024.
    pub capacity: usize,
    /// Largest payload; default `capacity / 8`.
    pub max_payload: Option<usize>,
    /// Consumer slots (1 to 1024).
    pub max_consumers: usize,
    /// Producer slots (1 to 256).
    pub max_producers: usize,
    /// How long a consumer may block the producers without polling before
    /// it is evicted. Default 1 s. (Mapped rings take it from
    /// [`crate::ShmOptions::liveness_timeout`].)
    pub eviction_timeout: Duration,
}

impl MpBroadcastConfig {
    /// A ring of `capacity` bytes for up to `max_producers` producers and
    /// `max_consumers` consumers.
    pub fn new(capacity: usize, max_producers: usize, max_consumers: usize) -> Self {
        Self {
            capacity,
            max_payload: None,
            max_consumers,
            max_producers,
            eviction_timeout: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<usize, crate::ShmError> {
        if self.max_consumers == 0 || self.max_consumers > 1024 {
            return Err(crate::ShmError::InvalidConfig(format!(
                "max_consumers {}: expected 1 to 1024",
                self.max_consumers
            )));
        }
        if self.max_producers == 0 || self.max_producers > 256 {
            return Err(crate::ShmError::InvalidConfig(format!(
                "max_producers {}: expected 1 to 256",
                self.max_producers
            )));
        }
        crate::spsc::validate_sizes(self.capacity, self.max_payload, 0)
    }
}

#[derive(Clone, Copy, Debug)]
struct Params {
    max_payload: usize,
    eviction_timeout_ns: u64,
    /// Producer side: see [`Ring::with_slow_consumer_timeout`].
    slow_consumer_ns: Option<u64>,
    consumers: usize,
    producers: usize,
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct Control {
    /// Claimed position, frame-aligned, only grows; every change is a CAS.
    tail: Padded<AtomicU64>,
    /// Consumers evicted so far.
    evictions: Padded<AtomicU64>,
    /// Claims skipped because their producer died.
    skipped: Padded<AtomicU64>,
    /// Stamps are `position ^ key`. Written once, before the ring is shared.
    key: Padded<AtomicU64>,
}

impl Zeroed for Control {
    fn zeroed() -> Self {
        Self {
            tail: Zeroed::zeroed(),
            evictions: Zeroed::zeroed(),
            skipped: Zeroed::zeroed(),
            key: Zeroed::zeroed(),
        }
    }
}

/// A consumer's or a producer's slot (128 bytes, its own cache lines).
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Slot {
    /// Consumer: its position (Release after each poll that moved it).
    cursor: AtomicU64,
    /// Consumer: bumped by every poll (proof of life for eviction).
    progress: AtomicU64,
    /// Producer: where its claim starts (Release, before `claim_len`).
    claim_pos: AtomicU64,
    /// Producer: bytes of its claim, padding included; 0 = none (Release).
    claim_len: AtomicU64,
    /// Producer: the position after its latest committed claim (Release,
    /// after `claim_len = 0`); only grows.
    end: AtomicU64,
    /// Consumer: FREE, JOINING, ACTIVE or EVICTED (as in [`crate::broadcast`]).
    state: AtomicU32,
    _pad: AtomicU32,
    peer: PeerWords,
}

impl Zeroed for Slot {
    fn zeroed() -> Self {
        Self {
            cursor: Zeroed::zeroed(),
            progress: Zeroed::zeroed(),
            claim_pos: Zeroed::zeroed(),
            claim_len: Zeroed::zeroed(),
            end: Zeroed::zeroed(),
            state: Zeroed::zeroed(),
            _pad: Zeroed::zeroed(),
            peer: Zeroed::zeroed(),
        }
    }
}

type Mem = RingMem<Control, Slot>;

/// A random key for the stamps of a new ring (not secret: it only keeps
/// ordinary payload bytes from looking like a stamp).
fn new_key() -> u64 {
    let seed = now_ns() ^ (u64::from(std::process::id()) << 32);
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// A ring over heap memory, for threads of one process; producers and
/// consumers join through [`Ring::producer`] and [`Ring::consumer`].
pub fn channel(config: MpBroadcastConfig) -> Result<Ring, crate::ShmError> {
    let max_payload = config.validate()?;
    let mem = Mem::heap(config.max_consumers + config.max_producers, config.capacity);
    mem.ctrl().key.store(new_key(), Ordering::Relaxed);
    Ok(Ring {
        mem,
        params: Params {
            max_payload,
            eviction_timeout_ns: config.eviction_timeout.as_nanos() as u64,
            slow_consumer_ns: None,
            consumers: config.max_consumers,
            producers: config.max_producers,
        },
    })
}

#[cfg(not(loom))]
mod shm {
    use super::*;
    use crate::region::{attach_ring, create_ring, RegionSpec, RingKind, ShmOptions};
    use crate::ShmError;

    impl Ring {
        /// Creates region `name` holding an empty ring. The eviction timeout
        /// is `opts.liveness_timeout`. Fails with [`ShmError::AlreadyExists`]
        /// if the region exists (then [`Ring::attach`] to it).
        pub fn create(
            opts: &ShmOptions,
            name: &str,
            config: &MpBroadcastConfig,
        ) -> Result<Self, ShmError> {
            let max_payload = config.validate()?;
            let spec = RegionSpec {
                kind: RingKind::MpBroadcast,
                capacity: config.capacity,
                max_payload,
                slots: (config.max_consumers + config.max_producers) as u32,
                flags: config.max_producers as u32,
            };
            let mem = create_ring(opts, name, spec, |mem: &Mem| {
                mem.ctrl().key.store(new_key(), Ordering::Relaxed);
            })?;
            Ok(Self {
                mem,
                params: Params {
                    max_payload,
                    eviction_timeout_ns: opts.liveness_timeout.as_nanos() as u64,
                    slow_consumer_ns: None,
                    consumers: config.max_consumers,
                    producers: config.max_producers,
                },
            })
        }

        /// Attaches to region `name`, made by [`Ring::create`] here or in
        /// another process.
        pub fn attach(opts: &ShmOptions, name: &str) -> Result<Self, ShmError> {
            let (mem, info, path) =
                attach_ring::<Control, Slot>(opts, name, RingKind::MpBroadcast)?;
            let producers = info.flags as usize;
            let slots = info.slots as usize;
            if producers == 0 || producers > 256 || slots <= producers || slots - producers > 1024 {
                return Err(ShmError::Corrupt {
                    path,
                    what: format!("slots {slots} with {producers} producer slots"),
                });
            }
            crate::spsc::validate_sizes(info.capacity as usize, Some(info.max_payload as usize), 0)
                .map_err(|e| ShmError::Corrupt {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
            Ok(Self {
                mem,
                params: Params {
                    max_payload: info.max_payload as usize,
                    eviction_timeout_ns: info.liveness_timeout_ns,
                    slow_consumer_ns: None,
                    consumers: slots - producers,
                    producers,
                },
            })
        }
    }
}

/// A handle on a ring that makes producers and consumers. `Send` and
/// `Clone`; holds no slot and keeps the ring's memory alive.
#[derive(Debug, Clone)]
pub struct Ring {
    mem: Mem,
    params: Params,
}

impl Ring {
    /// The slow-consumer policy of the producers made from this handle (see
    /// [`crate::broadcast::BroadcastConfig::slow_consumer_timeout`]): each
    /// producer process applies its own, so all of a channel's publishers
    /// should set the same. Default `None`.
    pub fn with_slow_consumer_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.params.slow_consumer_ns = timeout.map(|d| (d.as_nanos() as u64).max(1));
        self
    }

    /// A new producer; `None` if every producer slot is taken (a dead
    /// producer's slot is taken over once no claim of it is outstanding).
    pub fn producer(&self) -> Option<Producer> {
        Producer::join(self.mem.clone(), self.params)
    }

    /// A new consumer at the newest position; `None` if every consumer slot
    /// is taken.
    pub fn consumer(&self) -> Option<Consumer> {
        Consumer::join(self.mem.clone(), self.params)
    }

    /// Largest payload.
    pub fn max_payload(&self) -> usize {
        self.params.max_payload
    }

    /// Producer slots held by live processes (probes each holder's process:
    /// not for the hot path).
    pub fn live_producers(&self) -> usize {
        live_producers(&self.mem, &self.params)
    }

    /// Active consumers; reads every consumer slot.
    pub fn consumers(&self) -> usize {
        active_consumers(&self.mem, &self.params)
    }

    /// Claims skipped so far because their producer died.
    pub fn skipped(&self) -> u64 {
        self.mem.ctrl().skipped.load(Ordering::Relaxed)
    }

    /// Random per ring (the stamps' key): tells one ring from another that
    /// later took its name. Never 0.
    pub fn id(&self) -> u64 {
        self.mem.ctrl().key.load(Ordering::Relaxed)
    }
}

fn producer_slots<'m>(mem: &'m Mem, params: &Params) -> &'m [Slot] {
    &mem.slots()[params.consumers..params.consumers + params.producers]
}

fn consumer_slots<'m>(mem: &'m Mem, params: &Params) -> &'m [Slot] {
    &mem.slots()[..params.consumers]
}

fn live_producers(mem: &Mem, params: &Params) -> usize {
    producer_slots(mem, params)
        .iter()
        .filter(|s| s.peer.state(u64::MAX) == PeerState::Live)
        .count()
}

fn active_consumers(mem: &Mem, params: &Params) -> usize {
    consumer_slots(mem, params)
        .iter()
        .filter(|s| s.state.load(Ordering::Acquire) == ACTIVE)
        .count()
}

/// One producer. `Send`, not `Sync`; make one per thread. Dropping it frees
/// its slot.
#[derive(Debug)]
pub struct Producer {
    mem: Mem,
    params: Params,
    slot: usize,
    key: u64,
    /// May claim up to here without rescanning the consumer slots.
    limit: u64,
    /// Per consumer slot: what we know of the consumer while it blocks us.
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

    fn join(mem: Mem, params: Params) -> Option<Self> {
        let me = ProcessId::current();
        let slot = params.consumers
            + producer_slots(&mem, &params).iter().position(|s| {
                s.claim_len.load(Ordering::Acquire) == 0 && s.peer.take(me).is_ok()
            })?;
        let key = mem.ctrl().key.load(Ordering::Relaxed);
        Some(Self {
            watch: vec![crate::peer::BlockerWatch::default(); params.consumers],
            last_eviction: None,
            mem,
            params,
            slot,
            key,
            limit: 0,
            _not_sync: PhantomData,
        })
    }

    fn slot(&self) -> &Slot {
        &self.mem.slots()[self.slot]
    }

    /// The last consumer this producer evicted, and why (dead, stuck or
    /// slow); `None` before any.
    pub fn last_eviction(&self) -> Option<crate::peer::Eviction> {
        self.last_eviction
    }

    /// Consumers evicted so far, by any producer of the ring.
    pub fn evictions(&self) -> u64 {
        self.mem.ctrl().evictions.load(Ordering::Relaxed)
    }

    /// Largest payload.
    pub fn max_payload(&self) -> usize {
        self.params.max_payload
    }

    /// Active consumers; reads every consumer slot.
    pub fn consumers(&self) -> usize {
        active_consumers(&self.mem, &self.params)
    }

    /// Claims space for one frame of `len` bytes: a compare-and-swap on the
    /// shared tail (retried while other producers win it). Fails with
    /// `Full` while the slowest active consumer is a ring behind (evicting
    /// one that has not polled for the eviction timeout), `NotConnected`
    /// with no active consumer. Write the payload, then [`Claim::commit`];
    /// dropping the claim turns it into padding.
    #[inline]
    pub fn try_claim(&mut self, len: usize, type_id: u32) -> Result<Claim<'_>, ClaimError> {
        let (pos, pad) = self.reserve(len, type_id)?;
        Ok(Claim {
            producer: self,
            pos,
            pad,
            len,
            type_id,
            committed: false,
        })
    }

    /// Claims, copies `payload` in, and commits.
    #[inline]
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<(), ClaimError> {
        let mut claim = self.try_claim(payload.len(), type_id)?;
        claim.write(payload);
        claim.commit();
        Ok(())
    }

    #[inline]
    fn reserve(&mut self, len: usize, type_id: u32) -> Result<(u64, usize), ClaimError> {
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
        let frame_len = align_frame(HEADER_LEN + len);
        let mut recorded = false;
        loop {
            let t = self.mem.ctrl().tail.load(Ordering::Relaxed);
            let off = t as usize & (cap - 1);
            let pad = if frame_len > cap - off { cap - off } else { 0 };
            let end = t + (pad + frame_len) as u64;
            if end > self.limit {
                if let Err(e) = self.rescan(end) {
                    if recorded {
                        self.slot().claim_len.store(0, Ordering::Release);
                    }
                    return Err(e);
                }
            }
            let slot = &self.mem.slots()[self.slot];
            // SYNC POINT: both Release, position first: a consumer that
            // acquires this `claim_len` sees this position (or a later one).
            slot.claim_pos.store(t, Ordering::Release);
            slot.claim_len
                .store((pad + frame_len) as u64, Ordering::Release);
            recorded = true;
            // SYNC POINT: Release: a consumer that acquires a tail at or past
            // `end` sees the slot stores above. Every tail change is a CAS,
            // so later claims carry this one's release sequence on.
            if self
                .mem
                .ctrl()
                .tail
                .compare_exchange(t, end, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok((t, pad));
            }
        }
    }

    /// Recomputes `limit` from the active consumers' cursors; evicts a
    /// consumer that blocks `need` and has not polled for the eviction timeout.
    #[cold]
    fn rescan(&mut self, need: u64) -> Result<(), ClaimError> {
        let cap = self.mem.area.capacity() as u64;
        // A read-modify-write, so that a joiner whose SeqCst fence follows
        // ours in the fence order starts at or after this value (module doc).
        let tail = self.mem.ctrl().tail.fetch_add(0, Ordering::AcqRel);
        // SYNC POINT: pairs with the SeqCst fence in `Consumer::activate`.
        fence(Ordering::SeqCst);
        let (mut min, mut connected) = (u64::MAX, false);
        let mut now = 0;
        for (i, slot) in consumer_slots(&self.mem, &self.params).iter().enumerate() {
            let state = slot.state.load(Ordering::Acquire);
            if state != ACTIVE && state != JOINING {
                continue;
            }
            // SYNC POINT: pairs with the consumer's Release store of its
            // cursor: frames below it are read, their space may be reused.
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
            // A joiner's lap is kept free; it counts once it is active.
            min = min.min(cursor);
            connected |= state == ACTIVE;
        }
        if !connected {
            self.limit = 0;
            return Err(ClaimError::NotConnected);
        }
        self.limit = min.min(tail) + cap;
        if need > self.limit {
            return Err(ClaimError::Full);
        }
        Ok(())
    }

    /// Writes one padding frame of `len` bytes at `pos` (inside the area).
    fn write_padding(&self, pos: u64, len: usize) {
        let area = &self.mem.area;
        let off = pos as usize & (area.capacity() - 1);
        area.word(off)
            .store(frame::pack(len, TYPE_PADDING), Ordering::Relaxed);
        area.word(off + 8).store(pos ^ self.key, Ordering::Relaxed);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.slot().peer.release();
    }
}

/// Space claimed for one frame.
#[derive(Debug)]
pub struct Claim<'p> {
    producer: &'p mut Producer,
    /// Where the claim starts (padding first if `pad > 0`).
    pos: u64,
    pad: usize,
    len: usize,
    type_id: u32,
    committed: bool,
}

impl Claim<'_> {
    fn frame_pos(&self) -> u64 {
        self.pos + self.pad as u64
    }

    fn frame_off(&self) -> usize {
        self.frame_pos() as usize & (self.producer.mem.area.capacity() - 1)
    }

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

    /// The payload, in place in the ring (stale contents: write all of it).
    #[cfg(not(loom))]
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: the CAS gave this claim its range, inside the area (frames
        // never cross the end); no consumer reads it before the commit, and
        // no producer claims it before every consumer has read it.
        unsafe {
            self.producer
                .mem
                .area
                .bytes_mut(self.frame_off() + HEADER_LEN, self.len)
        }
    }

    /// Copies `src` into the start of the payload.
    ///
    /// # Panics
    /// If `src` is longer than the claim (a caller bug).
    #[inline]
    pub fn write(&mut self, src: &[u8]) {
        assert!(src.len() <= self.len, "write outside the claim");
        // SAFETY: inside this claim's range, as in `payload_mut`.
        unsafe {
            self.producer
                .mem
                .area
                .copy_in(self.frame_off() + HEADER_LEN, src)
        }
    }

    /// Publishes the frame. Returns the ring position after it.
    #[inline]
    pub fn commit(mut self) -> u64 {
        let header = frame::pack(HEADER_LEN + self.len, self.type_id);
        self.finish(header)
    }

    fn finish(&mut self, header: u64) -> u64 {
        let p = &*self.producer;
        if self.pad > 0 {
            p.write_padding(self.pos, self.pad);
        }
        let off = self.frame_off();
        p.mem.area.word(off).store(header, Ordering::Relaxed);
        p.mem
            .area
            .word(off + 8)
            .store(self.frame_pos() ^ p.key, Ordering::Relaxed);
        let end = self.frame_pos() + align_frame(frame::len_of(header)) as u64;
        // SYNC POINT: pairs with the consumers' Acquire load of `claim_len`.
        p.slot().claim_len.store(0, Ordering::Release);
        // SYNC POINT: pairs with the consumers' Acquire load of `end`: they
        // see the frame, this slot's cleared claim, and (through the tail
        // CASes) every claim below `end`.
        p.slot().end.store(end, Ordering::Release);
        self.committed = true;
        end
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // An abandoned claim becomes padding, so nobody waits for it.
            self.finish(frame::pack(
                align_frame(HEADER_LEN + self.len),
                TYPE_PADDING,
            ));
        }
    }
}

/// One consumer. `Send`, not `Sync`. Dropping it frees its slot.
#[derive(Debug)]
pub struct Consumer {
    mem: Mem,
    params: Params,
    slot: usize,
    key: u64,
    cursor: u64,
    /// Everything below is committed (see the module doc).
    horizon: u64,
    progress: u64,
    /// When the stuck claim's owner was last probed (ns), 0 = not stuck.
    last_probe: u64,
    empty_polls: u32,
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

    fn join(mem: Mem, params: Params) -> Option<Self> {
        let me = ProcessId::current();
        let slot = consumer_slots(&mem, &params)
            .iter()
            .position(|s| s.peer.take(me).is_ok())?;
        let key = mem.ctrl().key.load(Ordering::Relaxed);
        let mut c = Self {
            mem,
            params,
            slot,
            key,
            cursor: 0,
            horizon: 0,
            progress: 0,
            last_probe: 0,
            empty_polls: 0,
            _not_sync: PhantomData,
        };
        c.activate();
        Some(c)
    }

    fn slot(&self) -> &Slot {
        &self.mem.slots()[self.slot]
    }

    /// Joins (or rejoins) at the newest position: JOINING, choose the start,
    /// then ACTIVE (module doc, "Joining").
    fn activate(&mut self) {
        loop {
            let tail = self.mem.ctrl().tail.load(Ordering::Acquire);
            self.slot().cursor.store(tail, Ordering::Relaxed);
            self.slot().state.store(JOINING, Ordering::Relaxed);
            // SYNC POINT: pairs with the SeqCst fence in `Producer::rescan`.
            fence(Ordering::SeqCst);
            self.cursor = self.mem.ctrl().tail.load(Ordering::Acquire);
            self.horizon = self.cursor;
            self.slot().cursor.store(self.cursor, Ordering::Release);
            // SYNC POINT: pairs with the Acquire load of `state` in
            // `Producer::rescan` and `consumers`: a producer that sees us
            // active claims by a CAS of `tail` ordered after our load of it,
            // so at or past our start.
            if crate::peer::finish_join(&self.slot().state) {
                return;
            }
            // Evicted while joining (stalled for the eviction timeout): again.
        }
    }

    /// After [`PollError::Evicted`]: joins again at the newest position,
    /// keeping this consumer's slot. Returns the ring positions skipped over
    /// (`from..to`, bytes, frame headers included): what it lost.
    pub fn rejoin(&mut self) -> std::ops::Range<u64> {
        let from = self.cursor;
        self.activate();
        from..self.cursor.max(from)
    }

    /// The ring position this consumer has read up to, in bytes. A plain
    /// field read.
    #[inline]
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// Whether nothing is claimed past this consumer's position (one Acquire
    /// load).
    pub fn is_caught_up(&self) -> bool {
        self.mem.ctrl().tail.load(Ordering::Acquire) <= self.cursor
    }

    /// Producer slots held by live processes (probes: not for the hot path).
    pub fn live_producers(&self) -> usize {
        live_producers(&self.mem, &self.params)
    }

    /// Where everything below is committed: the largest `end`, lowered to
    /// every claim outstanding at or after the cursor (module doc).
    #[inline]
    fn compute_horizon(&self) -> u64 {
        let slots = producer_slots(&self.mem, &self.params);
        let mut horizon = self.cursor;
        for s in slots {
            // SYNC POINT: pairs with the producers' Release store of `end`.
            horizon = horizon.max(s.end.load(Ordering::Acquire));
        }
        if horizon == self.cursor {
            return horizon;
        }
        for s in slots {
            // SYNC POINT: pairs with the producers' Release stores of
            // `claim_len` (a commit, or a new claim after one).
            if s.claim_len.load(Ordering::Acquire) != 0 {
                // SYNC POINT: pairs with the Release store of `claim_pos`.
                let pos = s.claim_pos.load(Ordering::Acquire);
                if pos >= self.cursor {
                    horizon = horizon.min(pos);
                }
            }
        }
        horizon
    }

    /// Hands up to `limit` frames, in claim order and in place, to `f`.
    /// Never blocks or allocates; it makes a syscall only when a claim has
    /// held it up for a millisecond (to probe the claim's owner).
    ///
    /// Errors: [`PollError::Evicted`] (call [`Consumer::rejoin`]),
    /// [`PollError::SkippedDeadProducer`] (the next poll carries on),
    /// [`PollError::Corrupt`].
    #[inline]
    pub fn poll<F: FnMut(Frame<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        self.progress += 1;
        self.slot().progress.store(self.progress, Ordering::Relaxed);
        if self.slot().state.load(Ordering::Acquire) != ACTIVE {
            return Err(PollError::Evicted);
        }
        if self.cursor >= self.horizon {
            self.horizon = self.compute_horizon();
        }
        let area = &self.mem.area;
        let cap = area.capacity();
        let start = self.cursor;
        let mut delivered = 0;
        let mut result = Ok(());
        while delivered < limit && self.cursor < self.horizon {
            let off = self.cursor as usize & (cap - 1);
            // Committed: ordered before us by the horizon's Acquire loads.
            let w = area.word(off).load(Ordering::Relaxed);
            let stamp = area.word(off + 8).load(Ordering::Relaxed);
            let Some((frame_len, type_id, payload_len)) = self.check(off, w, stamp, self.cursor)
            else {
                result = Err(PollError::Corrupt {
                    position: self.cursor,
                    header: w,
                });
                break;
            };
            if type_id != TYPE_PADDING {
                #[cfg(not(loom))]
                // SAFETY: committed (below the horizon) and not reusable by a
                // producer until our cursor passes it, after `f` returns.
                let payload = unsafe { area.bytes(off + HEADER_LEN, payload_len) };
                #[cfg(loom)]
                let payload = &{
                    let mut v = vec![0u8; payload_len];
                    // SAFETY: as above.
                    unsafe { area.copy_out(off + HEADER_LEN, &mut v) };
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
            self.last_probe = 0;
            // SYNC POINT: pairs with the producers' Acquire load in `rescan`.
            self.slot().cursor.store(self.cursor, Ordering::Release);
        }
        if delivered > 0 {
            return Ok(delivered);
        }
        result?;
        if self.cursor == self.horizon {
            self.empty_polls = self.empty_polls.wrapping_add(1);
            if self.empty_polls % STALL_CHECK_EVERY == 0 && self.stall_probe_due() {
                return self.skip_dead_claim();
            }
        }
        Ok(0)
    }

    /// Whether the cursor is held at a claim and its owner is due a probe.
    #[cold]
    fn stall_probe_due(&mut self) -> bool {
        if self.is_caught_up() {
            self.last_probe = 0;
            return false;
        }
        let now = now_ns();
        if self.last_probe == 0 {
            self.last_probe = now;
            return false;
        }
        if now - self.last_probe < STALL_PROBE_NS {
            return false;
        }
        self.last_probe = now;
        true
    }

    /// The claim at the cursor whose owners are all dead: skips it (module
    /// doc). `Ok(0)` while an owner lives or none is found.
    #[cold]
    fn skip_dead_claim(&mut self) -> Result<usize, PollError> {
        let area = &self.mem.area;
        let cap = area.capacity();
        let mut dead = None;
        for s in producer_slots(&self.mem, &self.params) {
            let len = s.claim_len.load(Ordering::Acquire);
            if len == 0 || s.claim_pos.load(Ordering::Acquire) != self.cursor {
                continue;
            }
            match s.peer.state(u64::MAX) {
                PeerState::Gone(_) | PeerState::NotAttached => dead = Some((s, len)),
                PeerState::Live => return Ok(0),
            }
        }
        let Some((slot, len)) = dead else {
            return Ok(0);
        };
        let pid =
            ProcessId::from_word(slot.peer.holder.load(Ordering::Acquire)).map_or(0, |p| p.pid);
        let off = self.cursor as usize & (cap - 1);
        let w = area.word(off).load(Ordering::Acquire);
        let stamp = area.word(off + 8).load(Ordering::Acquire);
        let padded = self.check(off, w, stamp, self.cursor).is_none();
        if padded {
            // The dead producer's own claim: pad it over, piece by piece
            // (a claim that reaches the end goes on at the start).
            let first = (len as usize).min(cap - off);
            if !self.pad_over(self.cursor, first, w, stamp) {
                return Ok(0);
            }
            let rest = len as usize - first;
            if rest > 0 {
                let pos = self.cursor + first as u64;
                let (w0, s0) = (
                    area.word(0).load(Ordering::Acquire),
                    area.word(8).load(Ordering::Acquire),
                );
                if !self.pad_over(pos, rest, w0, s0) {
                    return Ok(0);
                }
            }
        }
        // Committed by another producer (the dead one's CAS failed), or
        // padded over just now: the slot's claim is done either way. A
        // padded claim may be the newest: its end lets the horizon past it.
        let cleared = slot
            .claim_len
            .compare_exchange(len, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if padded {
            // SYNC POINT: as the producer's `end` store: publishes the padding.
            slot.end.fetch_max(self.cursor + len, Ordering::AcqRel);
        }
        self.horizon = self.compute_horizon();
        if !padded {
            return Ok(0);
        }
        if cleared {
            self.mem.ctrl().skipped.fetch_add(1, Ordering::Relaxed);
        }
        Err(PollError::SkippedDeadProducer {
            position: self.cursor,
            len,
            pid,
        })
    }

    /// Writes a padding frame of `len` bytes at `pos` over the stale words
    /// `(w, stamp)` by compare-and-swap; `false` if they changed (another
    /// consumer padded it first — fine — or this consumer was evicted and a
    /// producer wrote there: then nothing is overwritten).
    fn pad_over(&self, pos: u64, len: usize, w: u64, stamp: u64) -> bool {
        let area = &self.mem.area;
        let off = pos as usize & (area.capacity() - 1);
        let (header, new_stamp) = (frame::pack(len, TYPE_PADDING), pos ^ self.key);
        let swap = |word: &AtomicU64, old: u64, new: u64| {
            old == new
                || word
                    .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                    .map_or_else(|actual| actual == new, |_| true)
        };
        // Header first: until the stamp matches too, every consumer still
        // reads the pair as not committed.
        swap(area.word(off), w, header) && swap(area.word(off + 8), stamp, new_stamp)
    }

    /// A frame's (frame length, type, payload length) if its header and stamp
    /// are sane for position `pos` at `off`.
    #[inline]
    fn check(&self, off: usize, w: u64, stamp: u64, pos: u64) -> Option<(usize, u32, usize)> {
        let cap = self.mem.area.capacity();
        let len = frame::len_of(w);
        let frame_len = align_frame(len);
        let type_id = frame::type_of(w);
        let ok = stamp == pos ^ self.key
            && len >= HEADER_LEN
            && off + frame_len <= cap
            && (type_id == TYPE_PADDING
                || (type_id < FIRST_RESERVED_TYPE && len - HEADER_LEN <= self.params.max_payload));
        ok.then_some((frame_len, type_id, len.saturating_sub(HEADER_LEN)))
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

    fn ring(capacity: usize, producers: usize, consumers: usize) -> Ring {
        channel(MpBroadcastConfig {
            max_payload: Some(120),
            ..MpBroadcastConfig::new(capacity, producers, consumers)
        })
        .unwrap()
    }

    fn drain(c: &mut Consumer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.poll(usize::MAX, |f| out.push(f.payload().to_vec()))
            .unwrap();
        out
    }

    #[test]
    fn without_consumers_claims_are_not_connected_and_slots_run_out() {
        let r = ring(1024, 2, 1);
        let mut p = r.producer().unwrap();
        let _q = r.producer().unwrap();
        assert!(r.producer().is_none());
        assert_eq!(p.offer(1, b"x"), Err(ClaimError::NotConnected));
        let c = r.consumer().unwrap();
        assert!(r.consumer().is_none());
        assert_eq!(p.offer(1, b"x"), Ok(()));
        assert_eq!(r.consumers(), 1);
        drop(c);
        assert_eq!(r.consumers(), 0);
        drop(p);
        assert!(r.producer().is_some());
    }

    #[test]
    fn an_uncommitted_claim_holds_back_what_was_claimed_after_it() {
        let r = ring(1024, 2, 1);
        let mut c = r.consumer().unwrap();
        let (mut a, mut b) = (r.producer().unwrap(), r.producer().unwrap());
        let mut first = a.try_claim(8, 1).unwrap();
        b.offer(2, b"second").unwrap();
        assert_eq!(c.poll(10, |_| panic!("behind an open claim")), Ok(0));
        first.write(b"first!!!");
        let end = first.commit();
        assert_eq!(end, 32, "16-byte header, 8 bytes rounded to 16");
        assert_eq!(
            drain(&mut c),
            vec![b"first!!!".to_vec(), b"second".to_vec()]
        );
        assert_eq!(c.position(), 64);
        // An abandoned claim is padding: nobody waits for it.
        drop(a.try_claim(40, 1).unwrap());
        b.offer(2, b"after").unwrap();
        assert_eq!(drain(&mut c), vec![b"after".to_vec()]);
    }

    #[test]
    fn producers_on_threads_reach_every_consumer_in_their_own_order() {
        const N: u64 = 50_000;
        let r = ring(4096, 3, 2);
        let consumers: Vec<_> = (0..2).map(|_| r.consumer().unwrap()).collect();
        let producers: Vec<_> = (0..3u32)
            .map(|id| {
                let mut p = r.producer().unwrap();
                std::thread::spawn(move || {
                    for i in 0..N {
                        let len = 8 + (i % 50) as usize;
                        let mut msg = vec![id as u8; len];
                        msg[..8].copy_from_slice(&i.to_le_bytes());
                        while p.offer(id, &msg) == Err(ClaimError::Full) {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let readers: Vec<_> = consumers
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut next = [0u64; 3];
                    while next.iter().any(|&n| n < N) {
                        let got = c
                            .poll(64, |f| {
                                let id = f.type_id() as usize;
                                let p = f.payload();
                                let i = u64::from_le_bytes(p[..8].try_into().unwrap());
                                assert_eq!(i, next[id], "producer {id} out of order");
                                assert_eq!(p.len(), 8 + (i % 50) as usize);
                                assert!(p[8..].iter().all(|&b| b == id as u8), "torn frame");
                                next[id] += 1;
                            })
                            .unwrap();
                        if got == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for t in producers.into_iter().chain(readers) {
            t.join().unwrap();
        }
    }

    /// Marks producer slot `i` (an index among producer slots) as held by a
    /// process that no longer exists.
    fn simulate_death(r: &Ring, i: usize) {
        let dead = ProcessId {
            pid: 0x7FFF_FFF0,
            start: 1,
        };
        producer_slots(&r.mem, &r.params)[i]
            .peer
            .holder
            .store(dead.to_word(), Ordering::Release);
    }

    fn poll_until_skip(c: &mut Consumer) -> PollError {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            assert!(std::time::Instant::now() < deadline, "never skipped");
            match c.poll(10, |_| panic!("nothing committed before the stuck claim")) {
                Err(e) => return e,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
    }

    #[test]
    fn a_producer_dead_between_claim_and_commit_is_padded_over_once_for_all_consumers() {
        let r = ring(1024, 2, 2);
        let (mut c1, mut c2) = (r.consumer().unwrap(), r.consumer().unwrap());
        let mut dying = r.producer().unwrap();
        let mut other = r.producer().unwrap();
        std::mem::forget(dying.try_claim(20, 1).unwrap()); // never committed
        other.offer(2, b"next").unwrap();
        simulate_death(&r, 0);
        let skipped = PollError::SkippedDeadProducer {
            position: 0,
            len: 64, // 16-byte header + 20 bytes, aligned to 32
            pid: 0x7FFF_FFF0,
        };
        assert_eq!(poll_until_skip(&mut c1), skipped);
        assert_eq!(drain(&mut c1), vec![b"next".to_vec()]);
        // The second consumer finds the claim already padded over.
        assert_eq!(drain(&mut c2), vec![b"next".to_vec()]);
        assert_eq!(r.skipped(), 1);
        std::mem::forget(dying);
        // The dead producer's slot is free again.
        assert!(r.producer().is_some());
    }

    #[test]
    fn a_dead_producer_whose_claim_lost_the_race_is_cleared_without_a_skip() {
        let r = ring(1024, 2, 1);
        let mut c = r.consumer().unwrap();
        let mut live = r.producer().unwrap();
        let dying = r.producer().unwrap();
        // It recorded a claim at 0 and died before its CAS; the live one won 0.
        let slot = &r.mem.slots()[dying.slot];
        slot.claim_pos.store(0, Ordering::Release);
        slot.claim_len.store(32, Ordering::Release);
        simulate_death(&r, 1);
        std::mem::forget(dying);
        live.offer(1, b"won").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut got = Vec::new();
        while got.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck behind a dead slot"
            );
            c.poll(10, |f| got.push(f.payload().to_vec())).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, vec![b"won".to_vec()]);
        assert_eq!(r.skipped(), 0);
    }

    #[test]
    fn a_consumer_that_stops_polling_is_evicted_and_may_rejoin() {
        let r = channel(MpBroadcastConfig {
            eviction_timeout: Duration::from_millis(5),
            max_payload: Some(64),
            ..MpBroadcastConfig::new(1024, 1, 2)
        })
        .unwrap();
        let mut p = r.producer().unwrap();
        let mut live = r.consumer().unwrap();
        let mut stuck = r.consumer().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut sent = 0u64;
        while sent < 200 {
            assert!(std::time::Instant::now() < deadline, "never evicted");
            match p.offer(1, &sent.to_le_bytes()) {
                Ok(()) => sent += 1,
                Err(ClaimError::Full) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
            drain(&mut live);
        }
        assert_eq!(stuck.poll(1, |_| {}), Err(PollError::Evicted));
        stuck.rejoin();
        p.offer(1, &sent.to_le_bytes()).unwrap();
        assert_eq!(drain(&mut stuck), vec![sent.to_le_bytes().to_vec()]);
    }

    #[test]
    fn a_foreign_stamp_is_corrupt_not_delivered() {
        let r = ring(1024, 1, 1);
        let mut c = r.consumer().unwrap();
        let mut p = r.producer().unwrap();
        p.offer(1, b"fine").unwrap();
        r.mem.area.word(8).store(12345, Ordering::Relaxed);
        assert!(matches!(
            c.poll(10, |_| panic!("handed out a corrupt frame")),
            Err(PollError::Corrupt { position: 0, .. })
        ));
    }

    proptest! {
        /// Two producers interleaving random sizes over many wraps, against a
        /// FIFO model of what was committed, read by two consumers.
        #[test]
        fn behaves_like_one_fifo_per_consumer(
            ops in proptest::collection::vec((0u8..4, 0usize..=120), 1..400)
        ) {
            let r = ring(2048, 2, 2);
            let mut cs = [r.consumer().unwrap(), r.consumer().unwrap()];
            let mut ps = [r.producer().unwrap(), r.producer().unwrap()];
            let mut models = [std::collections::VecDeque::new(), std::collections::VecDeque::new()];
            for (i, (op, len)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        let payload = vec![i as u8; len];
                        match ps[op as usize].offer(op as u32, &payload) {
                            Ok(()) => models.iter_mut().for_each(|m| m.push_back(payload.clone())),
                            Err(ClaimError::Full) => prop_assert!(models.iter().any(|m| !m.is_empty())),
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    k => {
                        let k = (k - 2) as usize;
                        let mut got = Vec::new();
                        cs[k].poll(len % 5 + 1, |f| got.push(f.payload().to_vec())).unwrap();
                        for g in got { prop_assert_eq!(Some(g), models[k].pop_front()); }
                    }
                }
            }
        }
    }
}
