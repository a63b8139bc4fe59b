//! Many producers (threads or processes), one consumer.
//!
//! ## Layout
//! ```text
//! +0      tail      AtomicU64  claim counter: producers fetch_add their frame length
//! +128    head      AtomicU64  consumer position
//! +256    skipped   AtomicU64  frames skipped because their producer died
//! +384    consumer  PeerWords
//! +512    status    AtomicU64  a word the consumer publishes to producers (Release)
//! +640    slot[0..N] 128 bytes each, one per producer:
//!           pending_len AtomicU64  frame length being claimed, 0 = none
//!           pending_pos AtomicU64  its position once known, u64::MAX before
//!           peer        PeerWords  holder pid
//! +4096·k data area (frames as in `frame`)
//! ```
//!
//! ## Protocol
//! A producer claims with **one atomic add** on `tail`, which fixes the frame's
//! position and so the order in which the consumer sees it. Because an add cannot
//! be undone, the capacity check happens before it, and a slack of one maximum frame
//! per producer absorbs claims that pass the check concurrently: a claim is allowed
//! while `tail + frame + slack <= head + capacity`. A claim that would cross the end
//! of the data area is filled with padding (up to the end, and the remainder at the
//! start) and the producer claims again.
//!
//! Frame states at a position: zero (nothing there yet), `PENDING` header (claimed:
//! the length is valid, the payload is not), or the committed header (Release).
//! Producers cannot write ahead of each other, so the consumer zeroes every frame it
//! has read before releasing it with its `head` store (Release ↔ producers' Acquire
//! load of `head`).
//!
//! Before its add a producer records `pending_len` in its slot; after it, it writes
//! the `PENDING` header and records `pending_pos`. If a producer dies between claim
//! and commit, the consumer finds the stuck frame's owner from the slots: the slot
//! whose `pending_pos` is the stuck position, or, if the producer died before
//! recording it, the only dead slot with a claim of unknown position (provided no
//! live producer is in that window). It skips the frame only once that owner's
//! process is dead, so a slow producer is never skipped, and reports
//! [`PollError::SkippedDeadProducer`].

use std::marker::PhantomData;

use crate::error::{ClaimError, PollError};
use crate::frame::{
    self, align_frame, Frame, FIRST_RESERVED_TYPE, HEADER_LEN, TYPE_PADDING, TYPE_PENDING,
};
use crate::liveness::{now_ns, ProcessId};
use crate::mem::RingMem;
use crate::peer::{PeerState, PeerWords};
use crate::sync::{AtomicU64, Ordering, Padded, Zeroed};

const UNKNOWN: u64 = u64::MAX;
/// How often (in empty polls) the consumer looks for a claim that never appeared.
const STALL_CHECK_EVERY: u32 = 1024;
/// How often (ns) a stalled consumer probes the owner of the stuck frame.
const STALL_PROBE_NS: u64 = 1_000_000;

/// Sizes of an MPSC ring.
#[derive(Clone, Copy, Debug)]
pub struct MpscConfig {
    /// Bytes of the data area: a power of two, at least 1024.
    pub capacity: usize,
    /// Largest payload; default `capacity / (4 × (max_producers + 2))`.
    pub max_payload: Option<usize>,
    /// Producer slots (1 to 256).
    pub max_producers: usize,
}

impl MpscConfig {
    /// A ring of `capacity` bytes for up to `max_producers` producers.
    pub fn new(capacity: usize, max_producers: usize) -> Self {
        Self {
            capacity,
            max_payload: None,
            max_producers,
        }
    }

    fn validate(&self) -> Result<Params, crate::ShmError> {
        if self.max_producers == 0 || self.max_producers > 256 {
            return Err(crate::ShmError::InvalidConfig(format!(
                "max_producers {}: expected 1 to 256",
                self.max_producers
            )));
        }
        let default =
            (self.capacity / (4 * (self.max_producers + 2))).saturating_sub(HEADER_LEN) & !7;
        let max_payload = self.max_payload.unwrap_or(default.max(8));
        Params::new(self.capacity, max_payload, self.max_producers)
    }
}

#[derive(Clone, Copy, Debug)]
struct Params {
    max_payload: usize,
    /// Free space every claim must leave: one maximum frame per producer.
    slack: u64,
}

impl Params {
    fn new(capacity: usize, max_payload: usize, producers: usize) -> Result<Self, crate::ShmError> {
        let max_frame = align_frame(HEADER_LEN + max_payload);
        let slack = producers * max_frame;
        if !capacity.is_power_of_two()
            || capacity < crate::mem::MIN_CAPACITY
            || max_payload == 0
            || 2 * max_frame + slack > capacity
        {
            return Err(crate::ShmError::InvalidConfig(format!(
                "MPSC capacity {capacity} with {producers} producers and max payload {max_payload}: \
                 need a power of two >= 1024 and (producers + 2) maximum frames to fit"
            )));
        }
        Ok(Self {
            max_payload,
            slack: slack as u64,
        })
    }
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct Control {
    /// Sum of all claimed frame lengths. Producers fetch_add (AcqRel).
    tail: Padded<AtomicU64>,
    /// Consumer position; everything below it is read and zeroed. Release.
    head: Padded<AtomicU64>,
    /// Frames skipped because their producer died between claim and commit.
    skipped: Padded<AtomicU64>,
    consumer: Padded<PeerWords>,
    /// Whatever the consumer's application tells its producers (weft: whether
    /// the UDP sender behind the ring has receivers). Release / Acquire.
    status: Padded<AtomicU64>,
}

impl Zeroed for Control {
    fn zeroed() -> Self {
        Self {
            tail: Zeroed::zeroed(),
            head: Zeroed::zeroed(),
            skipped: Zeroed::zeroed(),
            consumer: Zeroed::zeroed(),
            status: Zeroed::zeroed(),
        }
    }
}

/// One producer's slot.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Slot {
    pending_len: AtomicU64,
    pending_pos: AtomicU64,
    peer: PeerWords,
}

impl Zeroed for Slot {
    fn zeroed() -> Self {
        Self {
            pending_len: Zeroed::zeroed(),
            pending_pos: Zeroed::zeroed(),
            peer: Zeroed::zeroed(),
        }
    }
}

type Mem = RingMem<Control, Slot>;

/// An MPSC ring over heap memory; producers join with [`Consumer::producer`].
pub fn channel(config: MpscConfig) -> Result<Consumer, crate::ShmError> {
    let params = config.validate()?;
    let mem = Mem::heap(config.max_producers, config.capacity);
    let _ = mem.ctrl().consumer.take(ProcessId::current());
    Ok(Consumer::new(mem, params))
}

#[cfg(not(loom))]
mod shm {
    use super::*;
    use crate::region::{attach_ring, create_ring, RegionSpec, RingKind, ShmOptions};
    use crate::ShmError;

    impl Consumer {
        /// Creates region `name` holding an empty MPSC ring and returns its consumer.
        pub fn create(
            opts: &ShmOptions,
            name: &str,
            config: &MpscConfig,
        ) -> Result<Self, ShmError> {
            let params = config.validate()?;
            let spec = RegionSpec {
                kind: RingKind::Mpsc,
                capacity: config.capacity,
                max_payload: params.max_payload,
                slots: config.max_producers as u32,
                flags: 0,
            };
            let mem = create_ring(opts, name, spec, |mem: &Mem| {
                let _ = mem.ctrl().consumer.take(ProcessId::current());
            })?;
            Ok(Self::new(mem, params))
        }
    }

    impl Producer {
        /// Attaches to region `name` as one more producer. Fails with
        /// [`ShmError::RoleTaken`] when every producer slot is in use.
        pub fn attach(opts: &ShmOptions, name: &str) -> Result<Self, ShmError> {
            let (mem, info, path) = attach_ring::<Control, Slot>(opts, name, RingKind::Mpsc)?;
            // The general bounds first, so the frame arithmetic below cannot
            // overflow on sizes another process wrote.
            let params = crate::spsc::validate_sizes(
                info.capacity as usize,
                Some(info.max_payload as usize),
                0,
            )
            .and_then(|_| {
                if info.slots == 0 || info.slots > 256 {
                    return Err(ShmError::InvalidConfig(format!(
                        "{} producer slots: expected 1 to 256",
                        info.slots
                    )));
                }
                Params::new(
                    info.capacity as usize,
                    info.max_payload as usize,
                    info.slots as usize,
                )
            })
            .map_err(|e| ShmError::Corrupt {
                path: path.clone(),
                what: e.to_string(),
            })?;
            Producer::join(mem, params).ok_or(ShmError::RoleTaken {
                path,
                role: "MPSC producer slot",
                pid: 0,
            })
        }
    }
}

/// Makes producers for a ring; see [`Consumer::joiner`]. `Send`.
#[derive(Debug)]
pub struct Joiner {
    mem: Mem,
    params: Params,
}

impl Joiner {
    /// A new producer; `None` if every slot is taken.
    pub fn producer(&self) -> Option<Producer> {
        Producer::join(self.mem.clone(), self.params)
    }

    /// See [`Consumer::producers_elsewhere`].
    pub fn producers_elsewhere(&self) -> usize {
        producers_elsewhere(&self.mem)
    }

    /// The ring position claimed so far by every producer (bytes since
    /// creation): once the consumer's [`position`](Consumer::position) has
    /// reached it, it has read everything committed before this call.
    pub fn claimed(&self) -> u64 {
        self.mem.ctrl().tail.load(Ordering::Acquire)
    }
}

/// Slots held by live processes other than this one.
fn producers_elsewhere(mem: &Mem) -> usize {
    let me = std::process::id();
    mem.slots()
        .iter()
        .filter(|s| {
            ProcessId::from_word(s.peer.holder.load(Ordering::Acquire)).is_some_and(|p| p.pid != me)
                && s.peer.state(u64::MAX) == PeerState::Live
        })
        .count()
}

/// One producer. `Send`, not `Sync`; make one per thread. Dropping it frees its slot.
#[derive(Debug)]
pub struct Producer {
    mem: Mem,
    params: Params,
    slot: usize,
    cached_head: u64,
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

    fn join(mem: Mem, params: Params) -> Option<Self> {
        let me = ProcessId::current();
        // A dead producer's slot with a claim outstanding is left for the consumer,
        // which needs it to skip the stuck frame.
        let slot = mem
            .slots()
            .iter()
            .position(|s| s.pending_len.load(Ordering::Acquire) == 0 && s.peer.take(me).is_ok())?;
        let cached_head = mem.ctrl().head.load(Ordering::Acquire);
        Some(Self {
            mem,
            params,
            slot,
            cached_head,
            _not_sync: PhantomData,
        })
    }

    fn slot(&self) -> &Slot {
        &self.mem.slots()[self.slot]
    }

    /// Largest payload.
    pub fn max_payload(&self) -> usize {
        self.params.max_payload
    }

    /// The word the consumer last published with [`Consumer::set_status`]
    /// (0 before it did). One Acquire load.
    #[inline]
    pub fn consumer_status(&self) -> u64 {
        self.mem.ctrl().status.load(Ordering::Acquire)
    }

    /// Whether the consumer dropped its end. One Acquire load of a line the
    /// consumer writes once: cheap enough for every claim.
    #[inline]
    pub fn consumer_closed(&self) -> bool {
        self.mem.ctrl().consumer.is_closed()
    }

    /// Whether the consumer is there: `Gone` once it dropped its end or its
    /// process died. Not for the hot path: probes the process.
    pub fn consumer_state(&self, liveness_timeout_ns: u64) -> PeerState {
        self.mem.ctrl().consumer.state(liveness_timeout_ns)
    }

    /// Claims space for one frame (one atomic add, plus a second one when the frame
    /// would cross the end of the ring); write it, then [`Claim::commit`]. Dropping
    /// the claim turns it into padding the consumer skips.
    #[inline]
    pub fn try_claim(&mut self, len: usize, type_id: u32) -> Result<Claim<'_>, ClaimError> {
        let pos = self.reserve(len, type_id)?;
        Ok(Claim {
            producer: self,
            pos,
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

    /// Sends a `Pod` value as one frame.
    #[inline]
    pub fn offer_pod<T: bytemuck::Pod>(
        &mut self,
        type_id: u32,
        value: &T,
    ) -> Result<(), ClaimError> {
        self.offer(type_id, bytemuck::bytes_of(value))
    }

    #[inline]
    fn reserve(&mut self, len: usize, type_id: u32) -> Result<u64, ClaimError> {
        if len > self.params.max_payload {
            return Err(ClaimError::TooLarge {
                len,
                max: self.params.max_payload,
            });
        }
        if type_id >= FIRST_RESERVED_TYPE {
            return Err(ClaimError::ReservedType(type_id));
        }
        let area = &self.mem.area;
        let cap = area.capacity() as u64;
        let frame_len = align_frame(HEADER_LEN + len) as u64;
        let ctrl = self.mem.ctrl();
        loop {
            let tail = ctrl.tail.load(Ordering::Relaxed);
            if tail + frame_len + self.params.slack > self.cached_head + cap {
                // SYNC POINT: pairs with the consumer's Release store of `head`:
                // everything below it is read and zeroed.
                self.cached_head = ctrl.head.load(Ordering::Acquire);
                if tail + frame_len + self.params.slack > self.cached_head + cap {
                    return Err(if ctrl.consumer.is_closed() {
                        ClaimError::Closed
                    } else {
                        ClaimError::Full
                    });
                }
            }
            let slot = &self.mem.slots()[self.slot];
            slot.pending_pos.store(UNKNOWN, Ordering::Relaxed);
            slot.pending_len.store(frame_len, Ordering::Relaxed);
            // SYNC POINT: the add is Release so that a consumer that acquires `tail`
            // sees our `pending_len`; Acquire to order our writes after it.
            let pos = ctrl.tail.fetch_add(frame_len, Ordering::AcqRel);
            let off = pos as usize & (cap as usize - 1);
            if off as u64 + frame_len <= cap {
                area.word(off).store(
                    frame::pack(HEADER_LEN + len, TYPE_PENDING),
                    Ordering::Release,
                );
                slot.pending_pos.store(pos, Ordering::Release);
                return Ok(pos);
            }
            // The frame would cross the end: pad to the end, pad the remainder at
            // the start, and claim again.
            let first = cap as usize - off;
            let rest = frame_len as usize - first;
            if rest > 0 {
                area.word(0)
                    .store(frame::pack(rest, TYPE_PADDING), Ordering::Release);
            }
            area.word(off)
                .store(frame::pack(first, TYPE_PADDING), Ordering::Release);
            slot.pending_len.store(0, Ordering::Release);
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.slot().peer.release();
    }
}

/// Space claimed for one MPSC frame.
#[derive(Debug)]
pub struct Claim<'p> {
    producer: &'p mut Producer,
    pos: u64,
    len: usize,
    type_id: u32,
    committed: bool,
}

impl Claim<'_> {
    fn off(&self) -> usize {
        self.pos as usize & (self.producer.mem.area.capacity() - 1)
    }

    /// The payload, in place in the ring.
    #[cfg(not(loom))]
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: the add gave this claim exclusive use of its range, inside the area
        // (frames never cross the end), until it is committed.
        unsafe {
            self.producer
                .mem
                .area
                .bytes_mut(self.off() + HEADER_LEN, self.len)
        }
    }

    /// Copies `src` into the start of the payload.
    ///
    /// # Panics
    /// If `src` is longer than the claim (a caller bug).
    #[inline]
    pub fn write(&mut self, src: &[u8]) {
        assert!(src.len() <= self.len, "write outside the claim");
        // SAFETY: inside this claim's exclusive range.
        unsafe { self.producer.mem.area.copy_in(self.off() + HEADER_LEN, src) }
    }

    /// Publishes the frame.
    #[inline]
    pub fn commit(mut self) {
        self.finish(frame::pack(HEADER_LEN + self.len, self.type_id));
    }

    fn finish(&mut self, header: u64) {
        let off = self.off();
        // SYNC POINT: pairs with the consumer's Acquire load of this header.
        self.producer
            .mem
            .area
            .word(off)
            .store(header, Ordering::Release);
        self.producer.slot().pending_len.store(0, Ordering::Release);
        self.committed = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // An abandoned claim becomes padding so the consumer does not wait for it.
            self.finish(frame::pack(
                align_frame(HEADER_LEN + self.len),
                TYPE_PADDING,
            ));
        }
    }
}

/// The consumer. `Send`, not `Sync`. Dropping it closes the ring: producers' claims
/// then fail with [`ClaimError::Closed`] once it is full.
#[derive(Debug)]
pub struct Consumer {
    mem: Mem,
    params: Params,
    head: u64,
    empty_polls: u32,
    /// Since when (ns) the frame at `head` has been stuck, 0 = not stuck.
    stuck_since: u64,
    last_probe: u64,
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

    /// The ring position read up to (bytes since creation). A field read.
    pub fn position(&self) -> u64 {
        self.head
    }

    fn new(mem: Mem, params: Params) -> Self {
        let head = mem.ctrl().head.load(Ordering::Acquire);
        Self {
            mem,
            params,
            head,
            empty_polls: 0,
            stuck_since: 0,
            last_probe: 0,
            _not_sync: PhantomData,
        }
    }

    /// A new producer for this (heap or mapped) ring; `None` if every slot is taken.
    pub fn producer(&self) -> Option<Producer> {
        Producer::join(self.mem.clone(), self.params)
    }

    /// A handle that makes producers for this ring later, from any thread, after
    /// the consumer has moved elsewhere. It holds no producer slot and keeps the
    /// ring's memory alive.
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

    /// Frames skipped so far because their producer died between claim and commit.
    pub fn skipped(&self) -> u64 {
        self.mem.ctrl().skipped.load(Ordering::Relaxed)
    }

    /// Publishes `status` to the producers ([`Producer::consumer_status`]).
    /// One Release store.
    #[inline]
    pub fn set_status(&self, status: u64) {
        self.mem.ctrl().status.store(status, Ordering::Release);
    }

    /// Producer slots held by other processes that are alive (not for the
    /// hot path: probes each holder's process).
    pub fn producers_elsewhere(&self) -> usize {
        producers_elsewhere(&self.mem)
    }

    /// State of the producer in slot `i` (not for the hot path).
    pub fn producer_state(&self, i: usize, liveness_timeout_ns: u64) -> Option<PeerState> {
        self.mem
            .slots()
            .get(i)
            .map(|s| s.peer.state(liveness_timeout_ns))
    }

    /// Hands up to `limit` frames, in claim order and in place, to `f`, then zeroes
    /// and releases their space. Never blocks or allocates; it makes a syscall only
    /// when a claimed frame has been stuck for a while (to probe its producer).
    ///
    /// Errors: [`PollError::SkippedDeadProducer`] (the next poll carries on),
    /// [`PollError::Corrupt`].
    #[inline]
    pub fn poll<F: FnMut(Frame<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        let area = &self.mem.area;
        let cap = area.capacity();
        let start = self.head;
        let mut delivered = 0;
        let mut result = Ok(());
        let mut stuck = None;
        while delivered < limit {
            let off = self.head as usize & (cap - 1);
            // SYNC POINT: pairs with the producer's Release store of this header.
            let w = area.word(off).load(Ordering::Acquire);
            if w == 0 {
                break;
            }
            let len = frame::len_of(w);
            let frame_len = align_frame(len);
            let type_id = frame::type_of(w);
            if len < HEADER_LEN
                || off + frame_len > cap
                || (type_id != TYPE_PADDING && len - HEADER_LEN > self.params.max_payload)
            {
                result = Err(PollError::Corrupt {
                    position: self.head,
                    header: w,
                });
                break;
            }
            if type_id == TYPE_PENDING {
                stuck = Some(w);
                break;
            }
            if type_id < FIRST_RESERVED_TYPE {
                #[cfg(not(loom))]
                // SAFETY: committed (header acquired); no producer reuses the range
                // before our `head` store passes it.
                let payload = unsafe { area.bytes(off + HEADER_LEN, len - HEADER_LEN) };
                #[cfg(loom)]
                let payload = &{
                    let mut v = vec![0u8; len - HEADER_LEN];
                    // SAFETY: as above.
                    unsafe { area.copy_out(off + HEADER_LEN, &mut v) };
                    v
                }[..];
                f(Frame::new(type_id, payload));
                delivered += 1;
            } else if type_id != TYPE_PADDING {
                result = Err(PollError::Corrupt {
                    position: self.head,
                    header: w,
                });
                break;
            }
            area.zero(off, frame_len);
            self.head += frame_len as u64;
        }
        if self.head != start {
            self.stuck_since = 0;
            self.empty_polls = 0;
            // SYNC POINT: pairs with the producers' Acquire load of `head`; the
            // zeroing above happens-before their next writes here.
            self.mem.ctrl().head.store(self.head, Ordering::Release);
        }
        if delivered > 0 {
            return Ok(delivered);
        }
        result?;
        if stuck.is_none() {
            self.empty_polls += 1;
            if self.empty_polls % STALL_CHECK_EVERY != 0
                || self.mem.ctrl().tail.load(Ordering::Acquire) <= self.head
            {
                return Ok(0);
            }
        }
        self.unstick(stuck)
    }

    /// The frame at `head` is claimed but not committed (or not even marked yet).
    /// If its producer is dead, skip it.
    #[cold]
    fn unstick(&mut self, pending: Option<u64>) -> Result<usize, PollError> {
        let now = now_ns();
        if self.stuck_since == 0 {
            self.stuck_since = now;
        }
        if now.saturating_sub(self.last_probe) < STALL_PROBE_NS {
            return Ok(0);
        }
        self.last_probe = now;
        let area = &self.mem.area;
        let ctrl = self.mem.ctrl();
        let head = self.head;
        let (mut owner, mut live_unknown) = (None, false);
        let (mut dead_unknown, mut dead_unknown_count) = (None, 0);
        for (i, s) in self.mem.slots().iter().enumerate() {
            let len = s.pending_len.load(Ordering::Acquire);
            if len == 0 {
                continue;
            }
            let pos = s.pending_pos.load(Ordering::Acquire);
            let holder = ProcessId::from_word(s.peer.holder.load(Ordering::Acquire));
            let alive = holder.is_some_and(ProcessId::is_alive);
            if pos == head {
                owner = Some((i, len, alive, holder));
            } else if pos == UNKNOWN {
                if alive {
                    live_unknown = true;
                } else {
                    dead_unknown = Some((i, len, holder));
                    dead_unknown_count += 1;
                }
            }
        }
        // Re-read: a producer that committed `head` after our first look shows now.
        let w = area.word(head as usize).load(Ordering::Acquire);
        if w != pending.unwrap_or(0) {
            return Ok(0);
        }
        let (i, len, holder) = match owner {
            Some((i, len, false, holder)) => (i, len, holder),
            Some(_) => return Ok(0), // a live producer, merely slow
            None if !live_unknown && dead_unknown_count == 1 => dead_unknown.expect("counted"),
            None => return Ok(0),
        };
        let len = pending.map_or(len, |w| align_frame(frame::len_of(w)) as u64);
        area.zero(head as usize & (area.capacity() - 1), len as usize);
        self.head += len;
        ctrl.head.store(self.head, Ordering::Release);
        let slot = &self.mem.slots()[i];
        slot.pending_len.store(0, Ordering::Release);
        slot.peer.release();
        ctrl.skipped.fetch_add(1, Ordering::Relaxed);
        self.stuck_since = 0;
        Err(PollError::SkippedDeadProducer {
            position: head,
            len,
            pid: holder.map_or(0, |p| p.pid),
        })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.mem.ctrl().consumer.close();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn config_is_checked() {
        assert!(channel(MpscConfig::new(1000, 2)).is_err());
        assert!(channel(MpscConfig::new(1024, 0)).is_err());
        assert!(channel(MpscConfig {
            max_payload: Some(512),
            ..MpscConfig::new(1024, 2)
        })
        .is_err());
        let c = channel(MpscConfig::new(1 << 16, 4)).unwrap();
        assert_eq!(c.max_payload(), 2720);
    }

    #[test]
    fn producers_threads_each_in_order_none_lost() {
        let mut c = channel(MpscConfig::new(1 << 14, 4)).unwrap();
        let producers: Vec<_> = (0..3u64)
            .map(|id| {
                let mut p = c.producer().unwrap();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let len = 16 + (i % 50) as usize;
                        loop {
                            match p.try_claim(len, id as u32) {
                                Ok(mut claim) => {
                                    claim.payload_mut()[..8].copy_from_slice(&i.to_le_bytes());
                                    claim.commit();
                                    break;
                                }
                                Err(ClaimError::Full) => std::thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u64; 3];
        while next.iter().sum::<u64>() < 60_000 {
            c.poll(64, |f| {
                let id = f.type_id() as usize;
                assert_eq!(
                    u64::from_le_bytes(f.payload()[..8].try_into().unwrap()),
                    next[id]
                );
                assert_eq!(f.payload().len(), 16 + (next[id] % 50) as usize);
                next[id] += 1;
            })
            .unwrap();
        }
        producers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.skipped(), 0);
    }

    #[test]
    fn an_abandoned_claim_is_skipped_silently() {
        let mut c = channel(MpscConfig::new(1024, 1)).unwrap();
        let mut p = c.producer().unwrap();
        drop(p.try_claim(10, 1).unwrap());
        p.offer(2, b"after").unwrap();
        let mut got = Vec::new();
        assert_eq!(c.poll(10, |f| got.push(f.payload().to_vec())), Ok(1));
        assert_eq!(got, vec![b"after".to_vec()]);
    }

    fn simulate_death(c: &Consumer, slot: usize) {
        // A pid that cannot exist (above pid_max's ceiling), as a crashed producer.
        let dead = ProcessId {
            pid: 0x7FFF_FFF0,
            start: 1,
        };
        c.mem.slots()[slot]
            .peer
            .holder
            .store(dead.to_word(), Ordering::Release);
    }

    fn poll_until_skip(c: &mut Consumer) -> PollError {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            assert!(std::time::Instant::now() < deadline, "never skipped");
            match c.poll(10, |_| panic!("nothing committed before the stuck frame")) {
                Err(e) => return e,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
    }

    #[test]
    fn a_producer_dead_between_claim_and_commit_is_skipped_and_reported() {
        let mut c = channel(MpscConfig::new(1024, 2)).unwrap();
        let mut dying = c.producer().unwrap();
        let mut other = c.producer().unwrap();
        std::mem::forget(dying.try_claim(20, 1).unwrap()); // never committed
        other.offer(2, b"next").unwrap();
        simulate_death(&c, 0);
        let err = poll_until_skip(&mut c);
        assert_eq!(
            err,
            PollError::SkippedDeadProducer {
                position: 0,
                len: 32,
                pid: 0x7FFF_FFF0
            }
        );
        let mut got = Vec::new();
        assert_eq!(c.poll(10, |f| got.push(f.payload().to_vec())), Ok(1));
        assert_eq!(got, vec![b"next".to_vec()]);
        assert_eq!(c.skipped(), 1);
        std::mem::forget(dying);
    }

    #[test]
    fn a_producer_dead_right_after_its_add_is_found_from_its_slot() {
        let mut c = channel(MpscConfig::new(1024, 2)).unwrap();
        let p = c.producer().unwrap();
        // The claim as the producer left it: length recorded, add done, no header.
        let slot = &c.mem.slots()[p.slot];
        slot.pending_pos.store(UNKNOWN, Ordering::Relaxed);
        slot.pending_len.store(24, Ordering::Relaxed);
        c.mem.ctrl().tail.fetch_add(24, Ordering::AcqRel);
        simulate_death(&c, p.slot);
        std::mem::forget(p);
        let err = poll_until_skip(&mut c);
        assert_eq!(
            err,
            PollError::SkippedDeadProducer {
                position: 0,
                len: 24,
                pid: 0x7FFF_FFF0
            }
        );
    }

    proptest! {
        /// One producer with random sizes across many wraps, against a FIFO model.
        #[test]
        fn behaves_like_a_fifo(ops in proptest::collection::vec((any::<bool>(), 0usize..=120), 1..400)) {
            let mut c = channel(MpscConfig { max_payload: Some(120), ..MpscConfig::new(2048, 2) }).unwrap();
            let mut p = c.producer().unwrap();
            let mut model = std::collections::VecDeque::new();
            for (i, (offer, len)) in ops.into_iter().enumerate() {
                if offer {
                    let payload = vec![i as u8; len];
                    match p.offer(1, &payload) {
                        Ok(()) => model.push_back(payload),
                        Err(ClaimError::Full) => prop_assert!(!model.is_empty()),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                } else {
                    let mut got = Vec::new();
                    c.poll(len % 5 + 1, |f| got.push(f.payload().to_vec())).unwrap();
                    for g in got { prop_assert_eq!(Some(g), model.pop_front()); }
                }
            }
        }
    }
}
