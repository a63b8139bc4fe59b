//! Single-producer single-consumer ring of variable-length frames.
//!
//! ## Layout (after the region header, or at the start of a heap block)
//! ```text
//! +0     tail      AtomicU64   producer position (bytes since creation)   128-byte slot
//! +128   head      AtomicU64   consumer position                           128-byte slot
//! +256   producer  PeerWords   holder, heartbeat, closed                   128-byte slot
//! +384   consumer  PeerWords                                               128-byte slot
//! +4096  data      capacity bytes of frames (see `frame`), capacity a power of two
//! ```
//!
//! ## Protocol
//! The consumer finds a frame from the frame itself: it loads the header word at
//! `head` with Acquire, and a zero word means "nothing yet". So a small frame costs
//! one cache-line transfer and the consumer does not read `tail`. That works because the word at `head` is
//! always either zero or a committed header: frames are contiguous, `head` is
//! the end of the last frame read, and **the producer zeroes the word at the
//! end of every frame before it publishes the frame**.
//!
//! It does so cheaply, and the consumer never writes into the data area (it
//! stores only `head`), so a line crosses between the cores once per lap:
//! - a frame that ends inside a line: the producer stores 0 at its end, in the
//!   line it has just written (for a batch, only after its last frame: each
//!   other frame's end is the next one's header);
//! - a frame that ends on a line boundary: the next line's first word. The
//!   producer zeroes the first word of each line ahead of its `tail` (up to
//!   4 KiB, `ZERO_AHEAD`, in 512-byte steps after it publishes, off the latency path) once the
//!   consumer has released it, i.e. once `floor64(head) + capacity` is past
//!   the line. A claim whose end's line is not yet zeroed zeroes it first, or
//!   is `Full`.
//!
//! An earlier version had the consumer zero every line it had read: a store
//! into each line the producer was to write next lap, so each line crossed
//! twice, and the zeroing was on the consumer's path. Earlier still, the
//! producer zeroed the word after each frame in whatever line it fell, which put
//! a line transfer before the header store of a round trip (x86 commits stores
//! in order); now such a word is in a line the producer holds, or was zeroed a
//! line ahead.
//!
//! The consumer stores `head` (its release) on the poll that finds the ring
//! empty, or once an eighth of the ring (at most 4 KiB) is read and unreleased,
//! so a consumer that answers each frame stores its answer first.
//!
//! Memory ordering (every Release names its Acquire):
//! - producer payload writes and the zero after the frame → header store
//!   **Release** ↔ consumer header load **Acquire**;
//! - consumer payload reads → `head` store **Release** ↔ producer `head` load
//!   **Acquire** (only when its cached copy of `head` says "possibly full"), so
//!   the producer never overwrites a frame still being read.
//!
//! **Sizes.** A frame of up to 64 bytes takes a multiple of 32, as in the
//! other rings, so a stream of small messages never straddles a line; a
//! larger one a multiple of 8 ([`frame_bytes`]: a 64-byte message is a
//! 72-byte frame, 1.125 lines, where 32-byte alignment makes it 96). Padding a
//! small frame to the next line instead cost a round trip of 32-byte messages
//! a second line per message (the padding header, in the previous line):
//! 150–180 ns against 110–130 on the VM's fast level. A frame that does not
//! fit before the end of the data area is preceded by a padding frame up to
//! the end; frames never wrap.
//!
//! **No streaming mode, and a lazy `tail`.** The consumer always finds
//! frames by their headers and never loads `tail`; the producer stores
//! `tail` only when its position crosses a 4 KiB boundary (`TAIL_EVERY`), at
//! the end of a batch and when it closes, so `tail` is a lower bound that a
//! producer taking over walks past (it follows committed headers). Until
//! session 14 a reader handed 8 or more frames in a poll switched to reading
//! up to `tail` (so that a reader which caught up would not take the line
//! the producer is writing), which needed a `tail` store per frame to a line
//! of its own. Measured on the AMD VM (docs/shm.md, "fourth round"), the
//! store per frame and the reader's loads of that line cost more than the
//! header line they spared: a stream without either read 1.3 to 1.8 times
//! the rate of one with both, in the same minutes. The reliable broadcast
//! ring followed in session 15 (its joiners walk from `tail` to the newest
//! frame).
//!
//! Cost per frame: the producer stores the payload (8-byte word stores up to
//! 256 bytes, see `Area::copy_in`), one header word, about one zero word,
//! and its own position; `tail` once per 4 KiB; the consumer loads one header word per frame and stores `head`
//! once per release.

use std::marker::PhantomData;

use crate::error::{ClaimError, PollError};
use crate::frame::{self, Frame, FIRST_RESERVED_TYPE, HEADER_LEN, TYPE_PADDING};
use crate::mem::{crosses_tail_mark, line_end, RingMem, ZERO_AHEAD, ZERO_STEP};
use crate::peer::{PeerState, PeerWords};
use crate::sync::{AtomicU64, Ordering, Padded, Zeroed};

/// The shared control block. See the module doc for the layout.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Control {
    /// Producer position, frame-aligned, only grows, and a lower bound: at
    /// most [`TAIL_EVERY`](crate::mem::TAIL_EVERY) bytes behind the committed frames while the
    /// producer writes, exact after a batch and once it closes. Written by
    /// the producer (Release); read to resume after a producer crash (the new
    /// producer walks the committed frames past it) and by tools. The
    /// consumer never reads it.
    tail: Padded<AtomicU64>,
    /// Consumer position, frame-aligned, at most the committed end (it may
    /// be past `tail`, which lags). Written by the consumer
    /// (Release) after each poll; read by the producer (Acquire) when its cached
    /// copy says the ring may be full.
    head: Padded<AtomicU64>,
    producer: Padded<PeerWords>,
    consumer: Padded<PeerWords>,
}

impl Zeroed for Control {
    fn zeroed() -> Self {
        Self {
            tail: Zeroed::zeroed(),
            head: Zeroed::zeroed(),
            producer: Zeroed::zeroed(),
            consumer: Zeroed::zeroed(),
        }
    }
}

/// No per-participant slots in an SPSC ring.
#[derive(Debug)]
pub(crate) struct NoSlot;

impl Zeroed for NoSlot {
    fn zeroed() -> Self {
        NoSlot
    }
}

type Mem = RingMem<Control, NoSlot>;

/// Sizes of an SPSC ring.
#[derive(Clone, Copy, Debug)]
pub struct SpscConfig {
    /// Bytes of the data area: a power of two, at least 1024.
    pub capacity: usize,
    /// Largest payload of one frame. Default `capacity / 8`; at most
    /// `capacity / 2 - 16`, so a frame always fits once the consumer has caught up.
    pub max_payload: Option<usize>,
}

impl SpscConfig {
    /// A ring of `capacity` bytes with the default maximum payload.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            max_payload: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<usize, crate::ShmError> {
        validate_sizes(self.capacity, self.max_payload, 0)
    }
}

/// The most read-but-unreleased bytes a consumer keeps before a poll releases
/// them without having found the ring empty.
const RELEASE_BATCH: u64 = 4096;

/// Bytes a frame of `len_with_header` takes in an SPSC ring: up to 64, a
/// multiple of 32 (as in the other rings, so a stream of small messages
/// crosses cores a line per message and never straddles); beyond, a multiple
/// of 8, so a 64-byte message takes 72 bytes (1.125 lines), not 96.
#[inline(always)]
pub const fn frame_bytes(len_with_header: usize) -> usize {
    if len_with_header <= 64 {
        crate::mem::align_up(len_with_header, 32)
    } else {
        crate::mem::align_up(len_with_header, 8)
    }
}

/// The bytes the frame with header `w` takes: a padding frame's length is
/// exact (whatever is left to the end of the ring, a multiple of 8).
#[inline(always)]
fn stored_len(w: u64) -> usize {
    let len = frame::len_of(w);
    if frame::type_of(w) == TYPE_PADDING {
        crate::mem::align_up(len, 8)
    } else {
        frame_bytes(len)
    }
}

/// What the consumer has released at `head`: the whole lines below it. The
/// producer may write up to this plus the capacity.
#[inline(always)]
fn released(head: u64) -> u64 {
    head & !63
}

/// Checks a capacity and maximum payload; returns the maximum payload. `extra` is
/// slack beyond one frame and its padding that the ring must always keep free.
pub(crate) fn validate_sizes(
    capacity: usize,
    max_payload: Option<usize>,
    extra: usize,
) -> Result<usize, crate::ShmError> {
    if !capacity.is_power_of_two() || !(crate::mem::MIN_CAPACITY..=(1 << 40)).contains(&capacity) {
        return Err(crate::ShmError::InvalidConfig(format!(
            "ring capacity {capacity}: expected a power of two from 1024 to 2^40 bytes"
        )));
    }
    let max = max_payload.unwrap_or(capacity / 8);
    let limit = (capacity.saturating_sub(extra) / 2)
        .saturating_sub(16)
        .min(u32::MAX as usize - 64);
    if max == 0 || max > limit {
        return Err(crate::ShmError::InvalidConfig(format!(
            "max payload {max} for capacity {capacity}: expected 1 to {limit}"
        )));
    }
    Ok(max)
}

/// A ring over heap memory, for two threads of one process.
///
/// Cost: one allocation of `capacity` bytes plus 4 KiB, here; nothing afterwards.
pub fn channel(config: SpscConfig) -> Result<(Producer, Consumer), crate::ShmError> {
    let max = config.validate()?;
    let mem = Mem::heap(0, config.capacity);
    let me = crate::liveness::ProcessId::current();
    let _ = mem.ctrl().producer.take(me);
    let _ = mem.ctrl().consumer.take(me);
    Ok((Producer::new(mem.clone(), max), Consumer::new(mem, max)))
}

#[cfg(not(loom))]
mod shm {
    use super::*;
    use crate::region::{attach_ring, create_ring, Region, RegionSpec, RingKind, ShmOptions};
    use crate::ShmError;

    fn create(
        opts: &ShmOptions,
        name: &str,
        config: &SpscConfig,
    ) -> Result<(Mem, usize), ShmError> {
        let max = config.validate()?;
        let spec = RegionSpec {
            kind: RingKind::Spsc,
            capacity: config.capacity,
            max_payload: max,
            slots: 0,
            flags: 0,
        };
        Ok((create_ring(opts, name, spec, |_| {})?, max))
    }

    fn attach(opts: &ShmOptions, name: &str) -> Result<(Mem, usize), ShmError> {
        let (mem, info, path) = attach_ring(opts, name, RingKind::Spsc)?;
        let max = info.max_payload as usize;
        let sizes = validate_sizes(info.capacity as usize, Some(max), 0);
        if info.slots != 0 || sizes.is_err() {
            return Err(ShmError::Corrupt {
                path,
                what: format!("SPSC sizes: {} slots; {:?}", info.slots, sizes.err()),
            });
        }
        Ok((mem, max))
    }

    pub(super) fn region_of(mem: &Mem) -> &Region {
        mem.keep_alive()
            .downcast_ref::<Region>()
            .expect("a mapped ring is kept alive by its region")
    }

    fn take(mem: &Mem, role: &'static str, words: &PeerWords) -> Result<(), ShmError> {
        words
            .take(crate::liveness::ProcessId::current())
            .map_err(|pid| ShmError::RoleTaken {
                path: region_of(mem).path().to_owned(),
                role,
                pid,
            })
    }

    impl Producer {
        /// Creates region `name` holding an empty ring and returns its producer end.
        /// Fails if the region exists. Cost: file create, `ftruncate`, `mmap`, and a
        /// write to every page (prefault), once.
        pub fn create(
            opts: &ShmOptions,
            name: &str,
            config: &SpscConfig,
        ) -> Result<Self, ShmError> {
            let (mem, max) = create(opts, name, config)?;
            take(&mem, "SPSC producer", &mem.ctrl().producer)?;
            Ok(Self::new(mem, max))
        }

        /// Attaches to region `name` as its producer. Takes over from a producer
        /// whose process died, continuing after its last committed frame.
        pub fn attach(opts: &ShmOptions, name: &str) -> Result<Self, ShmError> {
            let (mem, max) = attach(opts, name)?;
            take(&mem, "SPSC producer", &mem.ctrl().producer)?;
            Ok(Self::new(mem, max))
        }

        /// The region this ring lives in, if it is a mapped ring.
        pub fn region(&self) -> Option<&Region> {
            self.mem.keep_alive().downcast_ref()
        }
    }

    impl Consumer {
        /// Creates region `name` holding an empty ring and returns its consumer end.
        pub fn create(
            opts: &ShmOptions,
            name: &str,
            config: &SpscConfig,
        ) -> Result<Self, ShmError> {
            let (mem, max) = create(opts, name, config)?;
            take(&mem, "SPSC consumer", &mem.ctrl().consumer)?;
            Ok(Self::new(mem, max))
        }

        /// Attaches to region `name` as its consumer. Takes over from a consumer
        /// whose process died at its last released position (frames it read but had
        /// not released are delivered again).
        pub fn attach(opts: &ShmOptions, name: &str) -> Result<Self, ShmError> {
            let (mem, max) = attach(opts, name)?;
            take(&mem, "SPSC consumer", &mem.ctrl().consumer)?;
            Ok(Self::new(mem, max))
        }

        /// The region this ring lives in, if it is a mapped ring.
        pub fn region(&self) -> Option<&Region> {
            self.mem.keep_alive().downcast_ref()
        }
    }
}

/// The writing end. `Send`, not `Sync`. Dropping it closes the ring: the consumer
/// drains what was committed, then sees [`PollError::Closed`] (until a new producer
/// attaches and reopens it, continuing where this one stopped).
#[derive(Debug)]
pub struct Producer {
    mem: Mem,
    /// Our position (== `ctrl.tail` between calls).
    tail: u64,
    /// Last `head` we loaded; only ever behind the real one.
    cached_head: u64,
    /// Lines below this position are fresh for the lap being written: their
    /// first word zeroed by us after the consumer released them (or never
    /// used), so a frame that ends on a line boundary is followed by a zero.
    zeroed: u64,
    max_payload: usize,
    /// A header whose store is deferred to the end of a batch: (offset, word).
    deferred: Option<(usize, u64)>,
    /// The end of the last claim handed out, until it is committed. If the next
    /// claim finds it set, that claim was abandoned, and its payload bytes (which
    /// a shorter frame's end may fall on) are zeroed again.
    open_claim_end: Option<u64>,
    batching: bool,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl Producer {
    /// Whether the ring's file was truncated under it while in use: the
    /// ring is then unusable (it reads as empty, writes go nowhere) and the
    /// process survived only because weft caught the fault. Not for every
    /// call: one atomic load and a type check; false for heap rings.
    pub fn truncated(&self) -> bool {
        self.mem.truncated()
    }

    fn new(mem: Mem, max_payload: usize) -> Self {
        let mut tail = mem.ctrl().tail.load(Ordering::Acquire);
        // After a crashed producer, frames may be committed past the recorded tail
        // (it died between the header store and the tail store): walk over them. The
        // word after the last committed frame is zero (its line was zeroed a lap ago)
        // unless it lies beyond what the consumer has released.
        let cap = mem.area.capacity();
        let limit = released(mem.ctrl().head.load(Ordering::Acquire)) + cap as u64;
        for _ in 0..cap / 8 {
            if tail >= limit {
                break;
            }
            let w = mem.area.word(tail as usize).load(Ordering::Acquire);
            let len = stored_len(w);
            if w == 0 || len < HEADER_LEN || len > cap || tail + len as u64 > limit {
                break;
            }
            tail += len as u64;
        }
        mem.ctrl().tail.store(tail, Ordering::Release);
        let cached_head = mem.ctrl().head.load(Ordering::Acquire);
        // The line holding `tail` was zeroed before the frame ending there was
        // published (a fresh ring is all zeros); what lies past it is unknown.
        let zeroed = line_end(tail);
        let producer = Self {
            mem,
            tail,
            cached_head,
            zeroed,
            max_payload,
            deferred: None,
            open_claim_end: None,
            batching: false,
            _not_sync: PhantomData,
        };
        // A producer that died holding a claim may have written its payload past
        // `tail`: the rest of `tail`'s line is cleared here (nothing from `tail`
        // on is committed), the lines after it before a frame ends in them.
        producer
            .mem
            .area
            .zero(tail as usize, (zeroed - tail) as usize);
        producer
    }

    /// Largest payload one frame may carry.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Bytes of the data area.
    pub fn capacity(&self) -> usize {
        self.mem.area.capacity()
    }

    /// Claims space for a frame of `len` payload bytes and type `type_id`; write the
    /// payload in place, then [`Claim::commit`]. Dropping the claim abandons it (the
    /// consumer never sees it). Never blocks, allocates, or makes a syscall.
    ///
    /// Fails with [`ClaimError::Full`] when the consumer is behind,
    /// [`ClaimError::TooLarge`], [`ClaimError::ReservedType`], or
    /// [`ClaimError::Closed`] once the consumer has gone away cleanly.
    #[inline]
    pub fn try_claim(&mut self, len: usize, type_id: u32) -> Result<Claim<'_>, ClaimError> {
        let (frame_off, pad) = self.reserve(len, type_id)?;
        self.open_claim_end = Some(self.tail + (pad + frame_bytes(HEADER_LEN + len)) as u64);
        Ok(Claim {
            producer: self,
            frame_off,
            pad,
            len,
            type_id,
        })
    }

    #[inline(always)]
    fn reserve(&mut self, len: usize, type_id: u32) -> Result<(usize, usize), ClaimError> {
        if let Some(end) = self.open_claim_end {
            // Only then a store: each store to our own fields is a
            // store-buffer entry that commits behind the ring's.
            self.open_claim_end = None;
            self.clear_abandoned(end);
        }
        if len > self.max_payload {
            return Err(ClaimError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        if type_id >= FIRST_RESERVED_TYPE {
            return Err(ClaimError::ReservedType(type_id));
        }
        let cap = self.mem.area.capacity();
        let frame_len = frame_bytes(HEADER_LEN + len);
        let off = self.tail as usize & (cap - 1);
        // Frames never wrap: one that does not fit before the end of the
        // area is preceded by padding up to there.
        let to_end = cap - off;
        let pad = if frame_len > to_end { to_end } else { 0 };
        let end = self.tail + (pad + frame_len) as u64;
        if line_end(end) > self.zeroed && !self.zero_to(line_end(end)) {
            return Err(if self.mem.ctrl().consumer.is_closed() {
                ClaimError::Closed
            } else {
                ClaimError::Full
            });
        }
        Ok(((off + pad) & (cap - 1), pad))
    }

    /// Zeroes the first word of the lines from `zeroed` up to `need` (a line
    /// boundary), and on up to [`ZERO_AHEAD`] past `tail` where the consumer
    /// has released them. False, zeroing nothing, if the consumer has not yet
    /// released up to `need`: the ring is full.
    #[inline(never)]
    fn zero_to(&mut self, need: u64) -> bool {
        let cap = self.mem.area.capacity() as u64;
        let want = need.max(line_end(self.tail + ZERO_AHEAD) - 64);
        if want > released(self.cached_head) + cap {
            // SYNC POINT: pairs with the consumer's Release store of `head`: the
            // frames before it are read, so their lines are ours to zero.
            self.cached_head = self.mem.ctrl().head.load(Ordering::Acquire);
        }
        let upto = want.min(released(self.cached_head) + cap);
        if upto < need {
            return false;
        }
        // Only a line's first word: a frame that ends inside a line has the
        // word at its end zeroed as it is published (`flush`), in a line the
        // producer holds anyway; one that ends on a line boundary ends here.
        self.zeroed = self.mem.area.zero_line_heads(self.zeroed, upto);
        true
    }

    /// Zeroes what an abandoned claim may have written (`tail + 8 .. end`: its
    /// header, at `tail`, was never stored), so that no later frame ends on one
    /// of its payload words and the consumer reads it as a header. Nothing
    /// there was handed to the consumer.
    #[cold]
    fn clear_abandoned(&mut self, end: u64) {
        let from = self.tail + HEADER_LEN as u64;
        if end > from {
            // Word offsets wrap at the end of the area (`Area::word` masks them).
            self.mem.area.zero(from as usize, (end - from) as usize);
        }
    }

    /// Claims, copies `payload` in, and commits.
    #[inline(always)]
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<(), ClaimError> {
        let (frame_off, pad) = self.reserve(payload.len(), type_id)?;
        // SAFETY: `reserve` gave us `frame_off .. frame_off + HEADER_LEN + len`, inside
        // the area (frames never wrap) and free: the consumer is past it.
        unsafe { self.mem.area.copy_in(frame_off + HEADER_LEN, payload) };
        if pad == 0 && !self.batching {
            // The common case, without the deferred-header bookkeeping (its
            // stores commit behind the ring's, docs/shm.md, "third round").
            let from = self.tail;
            self.tail += frame_bytes(HEADER_LEN + payload.len()) as u64;
            self.publish_one(frame_off, frame::pack(HEADER_LEN + payload.len(), type_id));
            self.note_tail(from);
        } else {
            self.publish(frame_off, pad, payload.len(), type_id);
        }
        Ok(())
    }

    /// Sends a `Pod` value as one frame of `size_of::<T>()` bytes.
    #[inline]
    pub fn offer_pod<T: bytemuck::Pod>(
        &mut self,
        type_id: u32,
        value: &T,
    ) -> Result<(), ClaimError> {
        self.offer(type_id, bytemuck::bytes_of(value))
    }

    /// Starts a batch: frames committed until [`Batch::publish`] (or the batch's
    /// drop) become visible to the consumer together, with one Release store.
    pub fn batch(&mut self) -> Batch<'_> {
        self.batching = true;
        Batch { producer: self }
    }

    /// Stores "alive now" for [`Consumer::producer_state`]. Call it from an idle loop
    /// at least once per liveness timeout if the consumer should detect a hung (not
    /// only a dead) producer; a producer that never calls it is judged by its pid.
    pub fn heartbeat(&self) {
        self.mem.ctrl().producer.heartbeat();
    }

    /// The consumer's liveness (not for the hot path: probes its process).
    pub fn consumer_state(&self, liveness_timeout_ns: u64) -> PeerState {
        self.mem.ctrl().consumer.state(liveness_timeout_ns)
    }

    #[inline(always)]
    fn publish(&mut self, frame_off: usize, pad: usize, len: usize, type_id: u32) {
        let area = &self.mem.area;
        let frame_len = frame_bytes(HEADER_LEN + len);
        let next = self.tail + (pad + frame_len) as u64;
        let start = self.tail as usize & (area.capacity() - 1);
        if pad != 0 {
            self.store_header(frame_off, frame::pack(HEADER_LEN + len, type_id));
            self.store_header(start, frame::pack(pad, TYPE_PADDING));
        } else {
            self.store_header(start, frame::pack(HEADER_LEN + len, type_id));
        }
        self.tail = next;
        if !self.batching {
            self.flush();
        }
    }

    /// Publishes what ends at `self.tail`, whose first header (at `off`,
    /// `word`) is the one not yet stored: one frame, or a batch (whose other
    /// headers are stored).
    #[inline(always)]
    fn publish_one(&mut self, off: usize, word: u64) {
        if self.tail % 64 != 0 {
            // The next header goes here: zero until then (a frame that
            // ends on a line boundary is followed by a word `zero_to`
            // zeroed). Inside the line the last frame ends in, which we
            // hold anyway; ordered before the Release store below. Inside
            // a batch each frame's end word is the next one's header.
            self.mem
                .area
                .word(self.tail as usize)
                .store(0, Ordering::Relaxed);
        }
        // SYNC POINT: pairs with the consumer's Acquire load of this header: it
        // then sees the payloads and the later headers of the batch.
        self.mem.area.word(off).store(word, Ordering::Release);
        // Off the latency path: the header is out, and x86 commits stores
        // in order, so zeroing the next lines now delays nothing published
        // (the next header store waits only if these are still in flight).
        // In steps of [`ZERO_STEP`]: one call per frame cost a 64-byte
        // message's offer about 15 % of its time.
        if self.zeroed + ZERO_STEP <= self.tail + ZERO_AHEAD {
            self.zero_to(self.zeroed);
        }
    }

    /// Stores `ctrl.tail` if the frame just published (from `from` to
    /// `self.tail`) crossed a [`TAIL_EVERY`](crate::mem::TAIL_EVERY) boundary. The consumer finds
    /// frames by their headers and never reads `tail`; it is kept for a
    /// producer that takes over (which walks the committed frames past it)
    /// and for tools, so it may lag by less than [`TAIL_EVERY`](crate::mem::TAIL_EVERY) bytes: a
    /// store per frame to a line of its own was a tenth of a stream's rate
    /// (docs/shm.md, "fourth round").
    #[inline(always)]
    fn note_tail(&mut self, from: u64) {
        if crosses_tail_mark(from, self.tail) {
            self.store_tail();
        }
    }

    /// Stores `ctrl.tail` (Release: it is read only to resume, after the
    /// frames before it; the consumer does not need it).
    #[inline(always)]
    fn store_tail(&self) {
        self.mem.ctrl().tail.store(self.tail, Ordering::Release);
    }

    #[inline(always)]
    fn store_header(&mut self, off: usize, word: u64) {
        match self.deferred {
            // The first header of a batch (or of padding + frame) is stored last.
            None => self.deferred = Some((off, word)),
            Some(_) => self.mem.area.word(off).store(word, Ordering::Relaxed),
        }
    }

    /// Publishes a batch (or padding and the frame after it), and stores
    /// `ctrl.tail`: once per batch.
    #[inline(always)]
    fn flush(&mut self) {
        if let Some((off, word)) = self.deferred.take() {
            self.publish_one(off, word);
            self.store_tail();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(end) = self.open_claim_end.take() {
            self.clear_abandoned(end);
        }
        self.flush();
        self.store_tail();
        self.mem.ctrl().producer.close();
    }
}

/// Space claimed for one frame. Write the payload, then [`Claim::commit`].
#[derive(Debug)]
pub struct Claim<'p> {
    producer: &'p mut Producer,
    frame_off: usize,
    pad: usize,
    len: usize,
    type_id: u32,
}

impl Claim<'_> {
    /// The payload, in place in the ring (its previous contents are stale bytes).
    #[cfg(not(loom))]
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: `reserve` gave this claim exclusive use of the frame's range inside
        // the area until it is committed; `&mut self` prevents a second borrow.
        unsafe {
            self.producer
                .mem
                .area
                .bytes_mut(self.frame_off + HEADER_LEN, self.len)
        }
    }

    /// Copies `src` into the payload at `at` (for loom tests and simple callers;
    /// under loom `at` must be a multiple of 8).
    ///
    /// # Panics
    /// If `at + src.len()` exceeds the claimed length (a caller bug).
    #[inline]
    pub fn write(&mut self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len, "write outside the claim");
        assert!(!cfg!(loom) || at % 8 == 0, "loom copies whole words");
        // SAFETY: checked inside the claim; the claim's range is exclusively ours.
        unsafe {
            self.producer
                .mem
                .area
                .copy_in(self.frame_off + HEADER_LEN + at, src)
        }
    }

    /// Publishes the frame (or adds it to the current batch).
    #[inline(always)]
    pub fn commit(self) {
        // Committed, so not abandoned (`offer` never sets it, and does not
        // pay for this store).
        self.producer.open_claim_end = None;
        self.producer
            .publish(self.frame_off, self.pad, self.len, self.type_id);
    }
}

/// Frames committed through a batch become visible together when it is published
/// or dropped. See [`Producer::batch`].
#[derive(Debug)]
pub struct Batch<'p> {
    producer: &'p mut Producer,
}

impl Batch<'_> {
    /// As [`Producer::try_claim`]; the commit joins the batch.
    #[inline]
    pub fn try_claim(&mut self, len: usize, type_id: u32) -> Result<Claim<'_>, ClaimError> {
        self.producer.try_claim(len, type_id)
    }

    /// As [`Producer::offer`]; the frame joins the batch.
    #[inline]
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<(), ClaimError> {
        self.producer.offer(type_id, payload)
    }

    /// Makes every frame of the batch visible.
    pub fn publish(self) {}
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.producer.batching = false;
        self.producer.flush();
    }
}

/// The reading end. `Send`, not `Sync`. Dropping it closes the ring for the
/// producer, whose claims then fail with [`ClaimError::Closed`] once it is full.
#[derive(Debug)]
pub struct Consumer {
    mem: Mem,
    /// Our read position: the next frame's header.
    head: u64,
    /// The position last stored to `ctrl.head` (`<= head`): the consumer's release.
    released_head: u64,
    /// Read-but-unreleased bytes after which a poll releases even when it did not
    /// find the ring empty (see [`Consumer::poll`]).
    release_every: u64,
    max_payload: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl Consumer {
    /// Whether the ring's file was truncated under it while in use: the
    /// ring is then unusable (it reads as empty, writes go nowhere) and the
    /// process survived only because weft caught the fault. Not for every
    /// call: one atomic load and a type check; false for heap rings.
    pub fn truncated(&self) -> bool {
        self.mem.truncated()
    }

    fn new(mem: Mem, max_payload: usize) -> Self {
        let head = mem.ctrl().head.load(Ordering::Acquire);
        let release_every = (mem.area.capacity() as u64 / 8).min(RELEASE_BATCH);
        Self {
            mem,
            head,
            released_head: head,
            release_every,
            max_payload,
            _not_sync: PhantomData,
        }
    }

    /// Largest payload one frame may carry.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Hands up to `limit` frames, in order and in place, to `f`. Returns how many
    /// frames it handed over (0 when the ring is empty). Never blocks, allocates,
    /// or makes a syscall.
    ///
    /// Space is released to the producer (lines zeroed, one `head` store) by the
    /// poll that finds the ring empty, or once an eighth of the ring (at most
    /// 4 KiB) is read and unreleased: so a consumer that answers each frame sends
    /// its answer before it zeroes, and zeroes while it waits. A frame is never
    /// read twice by this consumer; a consumer that takes over after a crash
    /// starts at the last release.
    ///
    /// Errors: [`PollError::Closed`] once the producer has closed and every frame
    /// is read; [`PollError::Corrupt`] if the ring holds a header no weft producer
    /// writes (the consumer stays at that frame).
    #[inline]
    pub fn poll<F: FnMut(Frame<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        self.poll_raw(limit, |area, off, len, type_id| {
            #[cfg(not(loom))]
            // SAFETY: the frame is committed (its header was acquired) and the producer
            // cannot reuse its space before we store `head` past it, after `f`.
            let payload = unsafe { area.bytes(off, len) };
            #[cfg(loom)]
            let payload = &{
                let mut v = vec![0u8; len];
                // SAFETY: as above.
                unsafe { area.copy_out(off, &mut v) };
                v
            }[..];
            f(Frame::new(type_id, payload));
        })
    }

    #[inline(always)]
    fn poll_raw<F>(&mut self, limit: usize, mut f: F) -> Result<usize, PollError>
    where
        F: FnMut(&crate::mem::Area, usize, usize, u32),
    {
        let area = &self.mem.area;
        let cap = area.capacity();
        let mut delivered = 0;
        let mut result = Ok(());
        // At most a lap per poll, whatever the headers say: a hostile producer
        // cannot keep one poll going for ever.
        let readable = self.head + cap as u64;
        while delivered < limit && self.head < readable {
            let off = self.head as usize & (cap - 1);
            // SYNC POINT: pairs with the producer's Release store of this header.
            let w = area.word(off).load(Ordering::Acquire);
            if w == 0 {
                break;
            }
            let len = frame::len_of(w);
            let frame_len = stored_len(w);
            let type_id = frame::type_of(w);
            let payload_len = len.wrapping_sub(HEADER_LEN);
            let end = off + frame_len;
            let valid = len >= HEADER_LEN
                && end <= cap
                && (if type_id == TYPE_PADDING {
                    end == cap
                } else {
                    type_id < FIRST_RESERVED_TYPE && payload_len <= self.max_payload
                });
            if !valid {
                result = Err(PollError::Corrupt {
                    position: self.head,
                    header: w,
                });
                break;
            }
            if type_id != TYPE_PADDING {
                f(area, off + HEADER_LEN, payload_len, type_id);
                delivered += 1;
            }
            self.head += frame_len as u64;
        }
        // Fewer than `limit` means the loop stopped at an empty ring, a corrupt
        // header or the readable end: release now. After a full `limit`, release
        // only past the batch size, so the caller's answer to these frames goes out
        // before the zeroing stores (x86 commits stores in order).
        if self.head != self.released_head
            && (delivered < limit || self.head - self.released_head >= self.release_every)
        {
            self.release();
        }
        if delivered > 0 {
            // A corrupt header after good frames is reported by the next poll.
            return Ok(delivered);
        }
        result?;
        if self.mem.ctrl().producer.is_closed() {
            // The producer closed; re-check for a frame committed before it did.
            let word = self.mem.area.word(self.head as usize);
            if word.load(Ordering::Acquire) == 0 {
                return Err(PollError::Closed);
            }
        }
        Ok(delivered)
    }

    /// Stores `head`: the producer may write over what was read.
    #[inline]
    fn release(&mut self) {
        // SYNC POINT: pairs with the producer's Acquire load of `head`: it then
        // sees the frames read (our reads of them are done).
        self.mem.ctrl().head.store(self.head, Ordering::Release);
        self.released_head = self.head;
    }

    /// Whether a frame is ready to read (one Acquire load).
    #[inline]
    pub fn has_frame(&self) -> bool {
        self.mem
            .area
            .word(self.head as usize)
            .load(Ordering::Acquire)
            != 0
    }

    /// The producer's liveness: live (maybe idle), gone (closed, died, or silent
    /// past `liveness_timeout_ns` after heartbeating), or never attached. Not for
    /// the hot path: it probes the producer's process.
    pub fn producer_state(&self, liveness_timeout_ns: u64) -> PeerState {
        self.mem.ctrl().producer.state(liveness_timeout_ns)
    }

    /// Stores "alive now" for [`Producer::consumer_state`].
    pub fn heartbeat(&self) {
        self.mem.ctrl().consumer.heartbeat();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.head != self.released_head {
            self.release();
        }
        self.mem.ctrl().consumer.close();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn drain(rx: &mut Consumer) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while rx
            .poll(usize::MAX, |f| {
                out.push((f.type_id(), f.payload().to_vec()))
            })
            .unwrap_or(0)
            > 0
        {}
        out
    }

    #[test]
    fn frames_arrive_in_order_across_many_wraps() {
        let (mut tx, mut rx) = channel(SpscConfig::new(1024)).unwrap();
        let mut expect = 0u64;
        for i in 0..10_000u64 {
            let len = (i % 100) as usize + 1;
            let mut payload = vec![0u8; len];
            payload[..len.min(8)].copy_from_slice(&i.to_le_bytes()[..len.min(8)]);
            while tx.offer(7, &payload) == Err(ClaimError::Full) {
                for (t, p) in drain(&mut rx) {
                    assert_eq!(t, 7);
                    let mut b = [0u8; 8];
                    b[..p.len().min(8)].copy_from_slice(&p[..p.len().min(8)]);
                    assert_eq!(
                        u64::from_le_bytes(b),
                        expect & (u64::MAX >> (64 - 8 * p.len().min(8) as u32))
                    );
                    assert_eq!(p.len(), (expect % 100) as usize + 1);
                    expect += 1;
                }
            }
        }
        expect += drain(&mut rx).len() as u64;
        assert_eq!(expect, 10_000);
    }

    #[test]
    fn claim_errors_say_why() {
        let (mut tx, rx) = channel(SpscConfig::new(1024)).unwrap();
        assert_eq!(tx.max_payload(), 128);
        assert_eq!(
            tx.try_claim(129, 0).err(),
            Some(ClaimError::TooLarge { len: 129, max: 128 })
        );
        assert_eq!(
            tx.try_claim(1, FIRST_RESERVED_TYPE).err(),
            Some(ClaimError::ReservedType(FIRST_RESERVED_TYPE))
        );
        let mut sent = 0;
        while tx.offer(1, &[0; 128]).is_ok() {
            sent += 1;
        }
        assert_eq!(
            sent, 7,
            "7 frames of 136 bytes fit in 1024; the 8th would need padding to the end and more"
        );
        assert_eq!(tx.offer(1, &[0; 128]), Err(ClaimError::Full));
        drop(rx);
        assert_eq!(tx.offer(1, &[0; 128]), Err(ClaimError::Closed));
    }

    #[test]
    fn zero_length_frames_and_closed_after_drain() {
        let (mut tx, mut rx) = channel(SpscConfig::new(1024)).unwrap();
        tx.offer(0, &[]).unwrap();
        tx.offer_pod(3, &42u64).unwrap();
        drop(tx);
        let mut got = Vec::new();
        assert_eq!(
            rx.poll(10, |f| got.push((
                f.type_id(),
                f.payload().len(),
                f.as_pod::<u64>().copied()
            ))),
            Ok(2)
        );
        assert_eq!(got, vec![(0, 0, None), (3, 8, Some(42))]);
        assert_eq!(rx.poll(10, |_| {}), Err(PollError::Closed));
    }

    #[test]
    fn abandoned_claims_are_invisible_and_batches_publish_together() {
        let (mut tx, mut rx) = channel(SpscConfig::new(1024)).unwrap();
        let _abandoned = tx.try_claim(10, 1).unwrap();
        assert!(!rx.has_frame());
        let mut batch = tx.batch();
        for i in 0..5u8 {
            batch.offer(1, &[i; 3]).unwrap();
        }
        assert!(
            !rx.has_frame(),
            "nothing visible before the batch is published"
        );
        batch.publish();
        let mut got = Vec::new();
        assert_eq!(rx.poll(10, |f| got.push(f.payload()[0])), Ok(5));
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// An abandoned claim's payload bytes stay in the ring; the frames written
    /// over and after them must never read them as a header.
    #[test]
    fn an_abandoned_claims_payload_never_reads_as_a_header() {
        let (mut tx, mut rx) = channel(SpscConfig::new(1024)).unwrap();
        let mut got = Vec::new();
        for lap in 0..4u64 {
            {
                let mut c = tx.try_claim(120, 1).unwrap();
                // Bytes that read as a valid header of a 16-byte frame, everywhere;
                // then the claim is abandoned (dropped, not committed).
                for at in (0..120).step_by(8) {
                    c.write(at, &frame::pack(16, 1).to_le_bytes());
                }
            }
            for i in 0..40u64 {
                tx.offer(2, &(lap * 100 + i).to_le_bytes()).unwrap();
                assert_eq!(
                    rx.poll(4, |f| got
                        .push(u64::from_le_bytes(f.payload().try_into().unwrap()))),
                    Ok(1)
                );
            }
        }
        let want: Vec<u64> = (0..4u64)
            .flat_map(|l| (0..40).map(move |i| l * 100 + i))
            .collect();
        assert_eq!(got, want);
    }

    /// A producer that died inside a claim leaves payload bytes past `tail`
    /// (its header never stored); the producer that takes over clears them.
    #[test]
    fn a_new_producer_clears_what_the_old_one_left_past_tail() {
        use crate::region::ShmOptions;
        let dir = std::env::temp_dir().join(format!("weft-spsc-clear-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = ShmOptions {
            remove_on_drop: false,
            ..ShmOptions::in_dir(&dir)
        };
        let mut tx = Producer::create(&opts, "r", &SpscConfig::new(1024)).unwrap();
        let mut rx = Consumer::attach(&opts, "r").unwrap();
        tx.offer(1, &7u64.to_le_bytes()).unwrap();
        for at in (tx.tail + 8..tx.tail + 128).step_by(8) {
            tx.mem
                .area
                .word(at as usize)
                .store(frame::pack(16, 1), Ordering::Relaxed);
        }
        drop(tx);
        let mut tx = Producer::attach(&opts, "r").unwrap();
        for i in 8..11u64 {
            tx.offer(1, &i.to_le_bytes()).unwrap();
        }
        let got: Vec<u64> = drain(&mut rx)
            .into_iter()
            .map(|(_, p)| u64::from_le_bytes(p.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![7, 8, 9, 10]);
        drop((tx, rx));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `tail` lags the committed frames by up to `TAIL_EVERY` bytes; a
    /// producer that takes over from one that died there walks the committed
    /// frames (those read and those not yet read) and continues after the
    /// last, so nothing is overwritten and nothing is sent twice.
    #[test]
    fn a_new_producer_continues_after_frames_committed_past_a_lagging_tail() {
        use crate::region::ShmOptions;
        let dir = std::env::temp_dir().join(format!("weft-spsc-lag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = ShmOptions {
            remove_on_drop: false,
            ..ShmOptions::in_dir(&dir)
        };
        let mut tx = Producer::create(&opts, "r", &SpscConfig::new(64 * 1024)).unwrap();
        let mut rx = Consumer::attach(&opts, "r").unwrap();
        // 200 frames of 32 bytes: tail was stored at the 4 KiB boundary
        // (frame 128), not since.
        for i in 0..200u64 {
            tx.offer(1, &i.to_le_bytes()).unwrap();
        }
        let ctrl_tail = |tx: &Producer| tx.mem.ctrl().tail.load(Ordering::Acquire);
        assert_eq!(ctrl_tail(&tx), 4096, "stored at the boundary only");
        let mut got: Vec<u64> = Vec::new();
        let mut take = |rx: &mut Consumer, n: usize| {
            rx.poll(n, |f| {
                got.push(u64::from_le_bytes(f.payload().try_into().unwrap()))
            })
            .unwrap()
        };
        // The consumer reads past the stored tail before the producer dies.
        assert_eq!(take(&mut rx, 150), 150);
        drop(tx);
        // As if it had died before its close stored the exact tail.
        rx.mem.ctrl().tail.store(4096, Ordering::Release);
        let mut tx = Producer::attach(&opts, "r").unwrap();
        assert_eq!(
            tx.tail,
            200 * 32,
            "continues after the last committed frame"
        );
        for i in 200..210u64 {
            tx.offer(1, &i.to_le_bytes()).unwrap();
        }
        while take(&mut rx, usize::MAX) > 0 {}
        assert_eq!(got, (0..210).collect::<Vec<_>>());
        drop((tx, rx));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_consumer_that_never_finds_the_ring_empty_still_releases_space() {
        // Each poll(1) hands over exactly one frame and never sees an empty ring,
        // so only the release batch frees space: ten laps must never be Full.
        let (mut tx, mut rx) = channel(SpscConfig::new(1024)).unwrap();
        tx.offer(1, &[0; 24]).unwrap();
        for i in 1..10 * 1024 / 32u64 {
            tx.offer(1, &i.to_le_bytes())
                .unwrap_or_else(|e| panic!("frame {i}: {e}"));
            assert_eq!(rx.poll(1, |_| {}), Ok(1));
        }
        assert!(rx.released_head > 0 && rx.released_head < rx.head);
        // The poll that finds the ring empty releases everything read.
        assert_eq!(rx.poll(1, |_| {}), Ok(1));
        assert_eq!(rx.poll(1, |_| {}), Ok(0));
        assert_eq!(rx.mem.ctrl().head.load(Ordering::Acquire), rx.head);
    }

    /// The consumer stores only `head`: a lap's worth of polling leaves the
    /// data area exactly as the producer wrote it.
    #[test]
    fn the_consumer_never_writes_into_the_data_area() {
        let (mut tx, mut rx) = channel(SpscConfig::new(4096)).unwrap();
        let area = |tx: &Producer| {
            // SAFETY: test only; the consumer runs on this thread, not now.
            unsafe { tx.mem.area.bytes(0, 4096) }.to_vec()
        };
        let mut got = 0;
        for round in 0..40u64 {
            for i in 0..7u64 {
                tx.offer(1, &[(round * 7 + i) as u8; 64]).unwrap();
            }
            let before = area(&tx);
            got += drain(&mut rx).len();
            assert_eq!(before, area(&tx), "round {round}: the consumer wrote");
        }
        assert_eq!(got, 280);
    }

    /// A poll never returns 0 while a frame is committed: a single frame
    /// ending in the middle of a line is handed over at the first poll, also
    /// after a poll that drained a burst.
    #[test]
    fn a_frame_in_the_producers_last_line_is_handed_over_at_once() {
        let (mut tx, mut rx) = channel(SpscConfig::new(64 * 1024)).unwrap();
        for i in 0..20u64 {
            tx.offer(1, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(rx.poll(usize::MAX, |_| {}), Ok(20));
        for i in 0..100u64 {
            // 72-byte frames: most end inside a line.
            tx.offer(2, &[i as u8; 64]).unwrap();
            let mut seen = Vec::new();
            assert_eq!(rx.poll(usize::MAX, |f| seen.push(f.payload()[0])), Ok(1));
            assert_eq!(seen, vec![i as u8]);
        }
    }

    #[test]
    fn a_corrupt_header_is_reported_not_followed() {
        let (mut tx, mut rx) = channel(SpscConfig::new(1024)).unwrap();
        tx.offer(1, &[1; 8]).unwrap();
        // A foreign writer scribbles a length that runs off the end of the ring.
        tx.mem
            .area
            .word(32) // after the first frame: 16 bytes, in 32
            .store(frame::pack(4000, 1), Ordering::Release);
        assert_eq!(
            rx.poll(10, |_| {}),
            Ok(1),
            "frames before the bad header are delivered"
        );
        assert_eq!(
            rx.poll(10, |_| {}),
            Err(PollError::Corrupt {
                position: 32,
                header: frame::pack(4000, 1)
            })
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Offer(usize),
        Poll(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..=256).prop_map(Op::Offer),
            1 => (1usize..8).prop_map(Op::Poll),
        ]
    }

    proptest! {
        /// The ring behaves as a FIFO queue of byte strings: what comes out is what
        /// went in, in order; `Full` only when the bytes in flight leave too little
        /// room; and an empty ring always takes a maximum-size frame.
        #[test]
        fn behaves_like_a_fifo(ops in proptest::collection::vec(op(), 1..400)) {
            let (mut tx, mut rx) = channel(SpscConfig { capacity: 2048, max_payload: Some(256) }).unwrap();
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut counter = 0u8;
            for op in ops {
                match op {
                    Op::Offer(len) => {
                        counter = counter.wrapping_add(1);
                        let payload: Vec<u8> = (0..len).map(|i| counter.wrapping_add(i as u8)).collect();
                        match tx.offer(counter as u32, &payload) {
                            Ok(()) => model.push_back(payload),
                            Err(ClaimError::Full) => {
                                // At most one padding frame (< one max frame) is in flight too, and
                                // fewer than an eighth of the ring (256 bytes) read but not yet released,
                                // plus a partial line.
                                // The new frame's end also needs its line released (64 more).
                                let in_flight: usize = model.iter().map(|p| frame_bytes(HEADER_LEN + p.len())).sum();
                                prop_assert!(in_flight + 2 * frame_bytes(HEADER_LEN + len) + 128 + 256 + 264 > 2048);
                            }
                            Err(e) => prop_assert!(false, "unexpected {e:?}"),
                        }
                    }
                    Op::Poll(limit) => {
                        let mut got = Vec::new();
                        let n = rx.poll(limit, |f| got.push(f.payload().to_vec())).unwrap();
                        prop_assert_eq!(n, got.len());
                        prop_assert!(n <= limit);
                        for g in got {
                            prop_assert_eq!(Some(g), model.pop_front());
                        }
                        if n < limit { prop_assert!(model.is_empty()); }
                    }
                }
            }
            let rest = drain(&mut rx);
            prop_assert_eq!(rest.len(), model.len());
            for ((_, g), m) in rest.into_iter().zip(model) { prop_assert_eq!(g, m); }
            prop_assert!(tx.offer(1, &[0u8; 256]).is_ok());
        }
    }
}
