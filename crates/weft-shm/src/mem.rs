//! The memory a ring runs over: a control block, an array of per-participant
//! slots, and a power-of-two data area.
//!
//! The ring algorithms only ever see a [`RingMem`], so the same code runs over a
//! heap block (unit and property tests), over loom's model-checked atomics (under
//! `--cfg loom`, where every data word is a loom atomic) and over a file mapping
//! shared by several processes (production). That is iceoryx2's split between
//! owning and relocatable pointers, reduced to what a ring needs.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::sync::{AtomicU64, Ordering, Zeroed};

/// Smallest data area: 1 KiB, or 64 bytes under loom so that a few frames wrap
/// the ring within the model checker's budget.
pub(crate) const MIN_CAPACITY: usize = if cfg!(loom) { 64 } else { 1024 };

/// Rounds `n` up to a multiple of `align` (a power of two).
#[inline(always)]
pub(crate) const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// `len` zeroed bytes on the heap, or `None` if the allocator refuses them:
/// for buffers whose size comes from a file another process wrote, where an
/// infallible allocation would abort the process. The pages are the
/// allocator's zeroed pages, so a large buffer costs address space, not
/// memory, until it is written.
pub(crate) fn try_zeroed_bytes(len: usize) -> Option<Box<[u8]>> {
    if len == 0 {
        return Some(Box::default());
    }
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` is a fresh allocation of `len` initialised (zero) bytes
    // made with the global allocator and the layout `Box<[u8]>` frees with.
    Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) })
}

/// Copies of up to this many bytes into a ring are word stores (see
/// [`Area::copy_in`]); longer ones are a `memcpy`.
#[cfg(not(loom))]
const SMALL_COPY: usize = 256;

/// The ring's data area: `cap` bytes, `cap` a power of two of at least 64,
/// addressed by offsets that are always masked into range.
#[derive(Debug)]
pub(crate) struct Area {
    #[cfg(not(loom))]
    base: NonNull<u8>,
    #[cfg(loom)]
    words: Arc<[AtomicU64]>,
    mask: usize,
}

// SAFETY: the area is shared memory whose every concurrent access goes through
// atomics or through the ring protocols' exclusive hand-over (claim → commit →
// read → release); the pointer itself is plain data.
unsafe impl Send for Area {}
// SAFETY: as above.
unsafe impl Sync for Area {}

impl Area {
    /// Capacity in bytes.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The 8-byte word at `off`, not masked: for a run of words whose whole
    /// range the caller has checked, so that each costs one instruction.
    ///
    /// # Safety
    /// `off` is 8-aligned and `off + 8 <= capacity`.
    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn word_in_range(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.capacity());
        // SAFETY: in the area and aligned, by the caller's contract (the base
        // is 8-aligned); the memory lives as long as `self`, as in `word`.
        unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU64) }
    }

    /// The 8-byte word at `off` (masked into range, rounded down to 8).
    #[inline(always)]
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        let off = off & self.mask & !7;
        #[cfg(not(loom))]
        {
            // SAFETY: `off + 8 <= capacity` because the capacity is a power of two of
            // at least 64 and `off` is masked and 8-aligned; the base is 8-aligned
            // (the data area starts a line past a page boundary), so the word is aligned; the memory lives as
            // long as `self`, which is owned next to the keep-alive of its backing.
            // AtomicU64 has the layout of u64 and zero is a valid value.
            unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU64) }
        }
        #[cfg(loom)]
        {
            &self.words[off / 8]
        }
    }

    /// Copies `src` into the area at `off`. Under loom the copy is a series of
    /// relaxed word stores, so the model sees every byte that a reader races with.
    ///
    /// # Safety
    /// `off..off + src.len()` lies inside the area, `off` is 8-aligned, and the ring
    /// protocol gives the caller exclusive write access to that range.
    #[inline(always)]
    pub(crate) unsafe fn copy_in(&self, off: usize, src: &[u8]) {
        debug_assert!(off + src.len() <= self.capacity());
        #[cfg(not(loom))]
        let off = off & self.mask;
        #[cfg(not(loom))]
        if off % 8 == 0 && src.len() <= SMALL_COPY && src.len() <= self.capacity() - off {
            // A small message goes in as 8-byte word stores, not by a call
            // to `memcpy`: the words are 8-aligned, so no store is split
            // across two cache lines, where `memcpy`'s wide stores split
            // wherever a payload crosses a line (docs/shm.md, "Throughput:
            // where the time goes"). Atomic stores, so the compiler does not
            // turn the loop back into a `memcpy` call; relaxed ones are
            // plain moves.
            //
            // A block of up to eight words is loaded whole before any of it is
            // stored: a load issued after stores into the ring waits for them
            // here, and loads interleaved with the stores cost a stream of
            // 64-byte messages 2.5x its rate (docs/shm.md, "third round").
            //
            // The range was checked whole above, so each word is addressed
            // from `off` without masking its own offset: one store a word
            // rather than three instructions (docs/shm.md, "seventh round").
            let blocks = src.chunks_exact(64);
            let blocks_rest = blocks.remainder();
            let tail_words = blocks_rest.chunks_exact(8);
            let (rest, rest_off) = (tail_words.remainder(), off + src.len() / 8 * 8);
            let mut at = off;
            for block in blocks {
                let v: [u64; 8] = std::array::from_fn(|i| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&block[i * 8..i * 8 + 8]);
                    u64::from_ne_bytes(w)
                });
                // No instruction: keeps the compiler from sinking the loads
                // back between the stores.
                std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
                for (i, w) in v.into_iter().enumerate() {
                    // SAFETY: `at + i * 8 + 8 <= off + src.len() <= capacity`, 8-aligned.
                    unsafe { self.word_in_range(at + i * 8) }.store(w, Ordering::Relaxed);
                }
                at += 64;
            }
            // The words after the last whole block, loaded first as well.
            let n = tail_words.len();
            let word_at = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&blocks_rest[i * 8..i * 8 + 8]);
                u64::from_ne_bytes(w)
            };
            let v: [u64; 7] = std::array::from_fn(|i| if i < n { word_at(i) } else { 0 });
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            for (i, w) in v.into_iter().enumerate().take(n) {
                // SAFETY: as above: the `n` whole words lie inside the checked range.
                unsafe { self.word_in_range(at + i * 8) }.store(w, Ordering::Relaxed);
            }
            // The last partial word byte for byte: a claim's later bytes may
            // already be written.
            for (i, b) in rest.iter().enumerate() {
                // SAFETY: in range and exclusively ours, by the caller's contract.
                unsafe { *self.base.as_ptr().add(rest_off + i) = *b };
            }
        } else {
            // SAFETY: in range and exclusively ours, by the caller's contract.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.as_ptr().add(off), src.len())
            }
        }
        #[cfg(loom)]
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.word(off + i * 8)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    /// Copies `dst.len()` bytes at `off` out of the area (loom stands this in for
    /// the in-place slices it cannot model).
    ///
    /// # Safety
    /// `off..off + dst.len()` lies inside the area, `off` is 8-aligned, and the ring
    /// protocol guarantees no writer touches that range during the copy.
    #[cfg(loom)]
    #[inline(always)]
    pub(crate) unsafe fn copy_out(&self, off: usize, dst: &mut [u8]) {
        debug_assert!(off + dst.len() <= self.capacity());
        self.copy_out_racy(off, dst);
    }

    /// Copies `src` in with relaxed atomic word stores, the last word padded with
    /// zeros: sound even while readers copy the range with
    /// [`Area::copy_out_racy`] (the overwrite-mode broadcast producer). `off` must
    /// be 8-aligned and the range rounded up to 8 must be the caller's to write.
    #[inline]
    pub(crate) fn copy_in_racy(&self, off: usize, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.word(off + i * 8)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    /// Copies bytes out with relaxed atomic word loads: sound even while a writer
    /// overwrites the range (the overwrite-mode broadcast consumer validates the
    /// copy afterwards, seqlock style). `off` must be 8-aligned; the range is
    /// masked into the area, never out of bounds.
    #[inline]
    pub(crate) fn copy_out_racy(&self, off: usize, dst: &mut [u8]) {
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let w = self.word(off + i * 8).load(Ordering::Relaxed).to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    /// Writes zeros over `off..off + len` (both 8-aligned) with relaxed word stores.
    #[inline]
    pub(crate) fn zero(&self, off: usize, len: usize) {
        let mut o = off;
        while o < off + len {
            self.word(o).store(0, Ordering::Relaxed);
            o += 8;
        }
    }

    /// Zeroes the first word of each line from ring position `from` (a line
    /// boundary) up to `to`, and returns the new zeroed mark, `max(from, to)`:
    /// a producer's zero-ahead ([`ZERO_AHEAD`]). Relaxed stores; the header
    /// store that publishes the next frame orders them.
    #[inline]
    pub(crate) fn zero_line_heads(&self, from: u64, to: u64) -> u64 {
        let mut line = from;
        while line < to {
            self.word(line as usize).store(0, Ordering::Relaxed);
            line += 64;
        }
        from.max(to)
    }

    /// The bytes at `off..off + len`, in place.
    ///
    /// # Safety
    /// The range lies inside the area and the ring protocol guarantees no writer
    /// touches it while the slice lives.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + len <= self.capacity());
        // SAFETY: by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) }
    }

    /// The bytes at `off..off + len`, in place and writable.
    ///
    /// # Safety
    /// The range lies inside the area and the ring protocol gives the caller
    /// exclusive access to it while the slice lives.
    #[cfg(not(loom))]
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // exclusive by the ring protocol, not by `&mut self`
    pub(crate) unsafe fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.capacity());
        // SAFETY: by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len) }
    }
}

/// What keeps a ring's memory alive: a heap block or a mapped region.
pub(crate) type KeepAlive = Arc<dyn std::any::Any + Send + Sync>;

/// A ring's memory: control block `C`, `slots` per-participant slots `S`, and the
/// data area. Cloning shares the same memory (each ring end holds one).
#[derive(Debug)]
pub(crate) struct RingMem<C, S> {
    ctrl: NonNull<C>,
    slots: NonNull<S>,
    n_slots: usize,
    pub(crate) area: Area,
    keep: KeepAlive,
}

// SAFETY: `C` and `S` are made of atomics only (they are `Sync`), and the memory is
// kept alive by `keep`; sharing the pointers across threads is what the rings are for.
unsafe impl<C: Sync, S: Sync> Send for RingMem<C, S> {}
// SAFETY: as above.
unsafe impl<C: Sync, S: Sync> Sync for RingMem<C, S> {}

impl<C, S> Clone for RingMem<C, S> {
    fn clone(&self) -> Self {
        Self {
            ctrl: self.ctrl,
            slots: self.slots,
            n_slots: self.n_slots,
            #[cfg(not(loom))]
            area: Area {
                base: self.area.base,
                mask: self.area.mask,
            },
            #[cfg(loom)]
            area: Area {
                words: self.area.words.clone(),
                mask: self.area.mask,
            },
            keep: self.keep.clone(),
        }
    }
}

impl<C, S> RingMem<C, S> {
    /// The control block.
    #[inline(always)]
    pub(crate) fn ctrl(&self) -> &C {
        // SAFETY: `ctrl` points at a live, aligned `C` for as long as `keep` lives.
        unsafe { self.ctrl.as_ref() }
    }

    /// All per-participant slots.
    #[inline(always)]
    pub(crate) fn slots(&self) -> &[S] {
        // SAFETY: `slots` points at `n_slots` live, aligned `S` for as long as `keep` lives.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.n_slots) }
    }

    /// The value that keeps the memory alive (a region, for mapped rings).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn keep_alive(&self) -> &KeepAlive {
        &self.keep
    }

    /// Whether this is a mapped region whose file was truncated under it
    /// (see the `sigbus` module); false for heap memory. One atomic load.
    pub(crate) fn truncated(&self) -> bool {
        #[cfg(not(loom))]
        {
            self.keep
                .downcast_ref::<crate::region::Region>()
                .is_some_and(crate::region::Region::truncated)
        }
        #[cfg(loom)]
        {
            false
        }
    }
}

/// How far past a page boundary the data area starts: one line. A stream
/// whose data area began on a page boundary read at 45-55 M msgs/s where the
/// same loops, bare or weft's, read 90-130 with the area one line (or 128,
/// 512, 2048 bytes) further on, on the Intel VM (docs/shm.md, "third
/// round"; the cause inside the CPU is not known). Lines stay aligned.
pub(crate) const DATA_SHIFT: usize = 64;

/// The end of the line holding ring position `pos`: a frame ending at `pos`
/// may be published once the lines below this are fresh (their first word
/// zeroed this lap), since the next header goes at `pos`.
#[inline(always)]
pub(crate) fn line_end(pos: u64) -> u64 {
    (pos & !63) + 64
}

/// The SPSC and reliable broadcast producers store `ctrl.tail` when their
/// position crosses a multiple of this (and at the end of a batch, in a
/// broadcast rescan, on close): readers find frames by their headers, so
/// `tail` is a lower bound for joiners, takers-over and tools, lagging the
/// committed frames by less than this. A store per frame to a line of its
/// own cost a stream about a tenth of its rate (docs/shm.md, findings 26
/// and 30). A power of two.
pub(crate) const TAIL_EVERY: u64 = 4096;

/// Whether a producer moving from `from` to `to` crossed a multiple of
/// [`TAIL_EVERY`], so stores `tail`.
#[inline(always)]
pub(crate) fn crosses_tail_mark(from: u64, to: u64) -> bool {
    (from ^ to) >= TAIL_EVERY
}

/// How far past `tail` the SPSC and reliable broadcast producers zero
/// lines' first words after a publish, so that the lines a frame goes into
/// are the producer's before its stores reach them, and a claim rarely
/// zeroes (and so waits for a line) before its header store. 512 and 16384
/// measured the same as this.
#[cfg(not(loom))]
pub(crate) const ZERO_AHEAD: u64 = 4096;
/// Under loom the rings are a line or two: the claim path does all the zeroing.
#[cfg(loom)]
pub(crate) const ZERO_AHEAD: u64 = 0;

/// A producer zeroes ahead once it is this far behind [`ZERO_AHEAD`]: one
/// call per frame cost a 64-byte message's offer about 15 % of its time.
#[cfg(not(loom))]
pub(crate) const ZERO_STEP: u64 = 512;
#[cfg(loom)]
pub(crate) const ZERO_STEP: u64 = 0;

/// Where the control block, the slots and the data area sit inside one block.
#[cfg_attr(loom, allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingLayout {
    pub(crate) ctrl_off: usize,
    pub(crate) slots_off: usize,
    pub(crate) n_slots: usize,
    pub(crate) data_off: usize,
    pub(crate) capacity: usize,
    pub(crate) total: usize,
}

#[cfg_attr(loom, allow(dead_code))]
impl RingLayout {
    /// The layout of a ring with control `C`, `n_slots` of `S` and `capacity` data
    /// bytes, starting at `start` (a multiple of 4096). The data area starts one
    /// line past a page boundary ([`DATA_SHIFT`]).
    pub(crate) fn new<C, S>(start: usize, n_slots: usize, capacity: usize) -> Self {
        let ctrl_off = start;
        let slots_off = align_up(ctrl_off + std::mem::size_of::<C>(), 128);
        let data_off = align_up(slots_off + n_slots * std::mem::size_of::<S>(), 4096) + DATA_SHIFT;
        let total = align_up(data_off + capacity, 4096);
        Self {
            ctrl_off,
            slots_off,
            n_slots,
            data_off,
            capacity,
            total,
        }
    }
}

impl<C: Zeroed + 'static, S: Zeroed + 'static> RingMem<C, S> {
    /// A ring over fresh zeroed heap memory (loom: fresh zeroed loom atomics).
    pub(crate) fn heap(n_slots: usize, capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two() && capacity >= 64);
        #[cfg(not(loom))]
        {
            let layout = RingLayout::new::<C, S>(0, n_slots, capacity);
            let block = HeapBlock::zeroed(layout.total);
            let base = block.ptr;
            // SAFETY: the block is `layout.total` zeroed bytes, page-aligned, and the
            // layout's offsets lie inside it with the alignment `C` and `S` need
            // (128) and zero is a valid `C`/`S` (atomics only).
            unsafe { Self::from_raw(base, layout, Arc::new(block)) }
        }
        #[cfg(loom)]
        {
            let ctrl = Box::new(C::zeroed());
            let slots: Box<[S]> = (0..n_slots).map(|_| S::zeroed()).collect();
            let words: Arc<[AtomicU64]> = (0..capacity / 8).map(|_| AtomicU64::new(0)).collect();
            let ctrl_ptr = NonNull::from(&*ctrl);
            let slots_ptr = NonNull::new(slots.as_ptr() as *mut S).unwrap_or(NonNull::dangling());
            let keep: KeepAlive = Arc::new(LoomBlock {
                _ctrl: ctrl,
                _slots: slots,
            });
            Self {
                ctrl: ctrl_ptr,
                slots: slots_ptr,
                n_slots,
                area: Area {
                    words,
                    mask: capacity - 1,
                },
                keep,
            }
        }
    }
}

impl<C, S> RingMem<C, S> {
    /// A ring over memory at `base` laid out as `layout`, kept alive by `keep`.
    ///
    /// # Safety
    /// `base .. base + layout.total` is valid, writable, shared memory that lives as
    /// long as `keep`; `base` is page-aligned; the bytes at the control and slot
    /// offsets hold valid `C` and `S` values (all-zero is valid for atomics).
    #[cfg(not(loom))]
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, layout: RingLayout, keep: KeepAlive) -> Self {
        // SAFETY: all offsets lie inside the block, by the caller's contract.
        unsafe {
            Self {
                ctrl: NonNull::new_unchecked(base.as_ptr().add(layout.ctrl_off) as *mut C),
                slots: NonNull::new_unchecked(base.as_ptr().add(layout.slots_off) as *mut S),
                n_slots: layout.n_slots,
                area: Area {
                    base: NonNull::new_unchecked(base.as_ptr().add(layout.data_off)),
                    mask: layout.capacity - 1,
                },
                keep,
            }
        }
    }
}

#[cfg(loom)]
struct LoomBlock<C, S> {
    _ctrl: Box<C>,
    _slots: Box<[S]>,
}

// SAFETY: the block only holds atomics (loom's), which are Send + Sync.
#[cfg(loom)]
unsafe impl<C, S> Send for LoomBlock<C, S> {}
// SAFETY: as above.
#[cfg(loom)]
unsafe impl<C, S> Sync for LoomBlock<C, S> {}

/// Zeroed, page-aligned heap memory, freed on drop.
#[cfg(not(loom))]
struct HeapBlock {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

#[cfg(not(loom))]
impl HeapBlock {
    fn zeroed(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096)
            .expect("ring sizes are validated before allocation");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, layout }
    }
}

#[cfg(not(loom))]
impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this very layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: the block is plain memory; its users synchronise through atomics.
#[cfg(not(loom))]
unsafe impl Send for HeapBlock {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for HeapBlock {}
