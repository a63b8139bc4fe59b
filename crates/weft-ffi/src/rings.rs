//! The raw shared-memory rings of `weft-shm` (SPSC, broadcast, MPSC) for
//! C users who want only those: no node, no agents, no URIs. A ring is a
//! file in a directory (`dir`, NULL for the default: `$WEFT_DIR`, else
//! `/dev/shm/weft-UID`); one side creates it, the other attaches.
//!
//! | kind | created by | attached by |
//! |---|---|---|
//! | `WEFT_RING_SPSC` | either end | the other end (a producer or consumer whose process died is taken over) |
//! | `WEFT_RING_BROADCAST`, `_OVERWRITE` | the producer | each consumer (joins at the newest frame) |
//! | `WEFT_RING_MPSC` | the consumer | each producer |
//!
//! Frames carry a type id (below `0xFFFFFF00`) and a payload; `poll` hands
//! them to a callback in place. Costs: `offer`, `try_claim`/`commit` and
//! `poll` allocate nothing, take no lock and make no syscall (what the Rust
//! rings cost, plus a call and a `match` on the ring's kind); the rare
//! faults a poll reports with a number (`LAPPED`, `OVERRUN`, `SKIPPED`,
//! `CORRUPT`) format their message.

use std::ffi::{c_char, c_int, c_void};
use weft_shm::{broadcast, mpsc, spsc, ClaimError, GoneReason, PeerState, PollError, ShmOptions};

use crate::{
    bytes_arg, free_handle, guard, null, set_fixed, set_text, str_arg, ClaimHolder,
    WEFT_ERR_CLOSED, WEFT_ERR_CORRUPT, WEFT_ERR_EVICTED, WEFT_ERR_FULL, WEFT_ERR_INVALID,
    WEFT_ERR_LAPPED, WEFT_ERR_NOT_CONNECTED, WEFT_ERR_OVERRUN, WEFT_ERR_RESERVED_TYPE,
    WEFT_ERR_SHM, WEFT_ERR_SKIPPED, WEFT_ERR_TOO_LARGE, WEFT_OK,
};

/// `weft_ring_config.kind`: one producer, one consumer.
pub const WEFT_RING_SPSC: c_int = 0;
/// One producer, up to `max_peers` consumers, each with its own cursor;
/// the producer waits for the slowest live one (a consumer stuck for the
/// liveness timeout is evicted).
pub const WEFT_RING_BROADCAST: c_int = 1;
/// A broadcast ring whose producer never waits: a consumer a lap behind
/// is told (`WEFT_ERR_LAPPED`) and carries on from the newest frames.
pub const WEFT_RING_BROADCAST_OVERWRITE: c_int = 2;
/// Up to `max_peers` producers, one consumer.
pub const WEFT_RING_MPSC: c_int = 3;

/// `weft_ring_producer_state`: nobody has taken the producer's end yet.
pub const WEFT_PEER_NOT_ATTACHED: c_int = 0;
/// The producer's process runs (it may be idle).
pub const WEFT_PEER_LIVE: c_int = 1;
/// The producer closed its end.
pub const WEFT_PEER_CLOSED: c_int = 2;
/// The producer's process died without closing.
pub const WEFT_PEER_DIED: c_int = 3;
/// The producer's process runs but stopped heartbeating.
pub const WEFT_PEER_STALE: c_int = 4;

/// Sizes of a new ring.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct weft_ring_config {
    /// `WEFT_RING_*`.
    pub kind: c_int,
    /// Bytes of the data area: a power of two, at least 1024.
    pub capacity: usize,
    /// Largest payload of one frame; 0 for the ring's default.
    pub max_payload: usize,
    /// Broadcast: consumer slots (1 to 1024); MPSC: producer slots (1 to
    /// 256); SPSC: ignored.
    pub max_peers: u32,
}

/// The poll callback of a ring: the frame's type id and payload, in place
/// and valid only during the call. It must not unwind and must not call
/// into the same consumer.
pub type weft_frame_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, type_id: u32, data: *const u8, len: usize)>;

enum ProducerEnd {
    Spsc(spsc::Producer),
    Broadcast(broadcast::Producer),
    Mpsc(mpsc::Producer),
}

enum OpenClaim {
    Spsc(spsc::Claim<'static>),
    Broadcast(broadcast::Claim<'static>),
    Mpsc(mpsc::Claim<'static>),
}

/// The writing end of a ring. While a claim is open only
/// `weft_ring_commit` and `weft_ring_abort` may be called on it.
pub struct weft_ring_producer {
    inner: ClaimHolder<ProducerEnd, OpenClaim>,
}

impl std::fmt::Debug for weft_ring_producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("weft_ring_producer").finish_non_exhaustive()
    }
}

/// The producer's holder (NULL stays NULL).
///
/// # Safety
/// `p` is NULL or a live handle.
unsafe fn holder(p: *mut weft_ring_producer) -> *mut ClaimHolder<ProducerEnd, OpenClaim> {
    if p.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a live handle by the caller's contract; only the field's
        // address is taken, nothing is read.
        unsafe { std::ptr::addr_of_mut!((*p).inner) }
    }
}

enum ConsumerEnd {
    Spsc(spsc::Consumer),
    Broadcast(broadcast::Consumer),
    Mpsc(mpsc::Consumer),
}

/// The reading end of a ring.
pub struct weft_ring_consumer {
    end: ConsumerEnd,
}

impl std::fmt::Debug for weft_ring_consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("weft_ring_consumer").finish_non_exhaustive()
    }
}

/// The options for `dir`, or the status to return.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string.
unsafe fn options(dir: *const c_char) -> Result<ShmOptions, c_int> {
    if dir.is_null() {
        return Ok(ShmOptions::default());
    }
    // SAFETY: by the caller's contract.
    let d = unsafe { str_arg(dir, "dir") }?;
    Ok(ShmOptions::in_dir(d))
}

fn kind_name(kind: c_int) -> &'static str {
    match kind {
        WEFT_RING_SPSC => "an SPSC ring",
        WEFT_RING_BROADCAST | WEFT_RING_BROADCAST_OVERWRITE => "a broadcast ring",
        WEFT_RING_MPSC => "an MPSC ring",
        _ => "a ring of an unknown kind",
    }
}

fn wrong_side(kind: c_int, what: &str) -> c_int {
    set_text(
        WEFT_ERR_INVALID,
        format!(
            "{} is not {what} (SPSC: either end creates, the other attaches; broadcast: the \
             producer creates, consumers attach; MPSC: the consumer creates, producers attach)",
            kind_name(kind)
        ),
    )
}

fn shm_error(e: weft_shm::ShmError) -> c_int {
    set_text(WEFT_ERR_SHM, e)
}

/// Stores a new handle in `*out`, or the error.
///
/// # Safety
/// `out` is a valid place for a pointer.
unsafe fn hand_out<T>(out: *mut *mut T, made: Result<T, c_int>) -> c_int {
    match made {
        Ok(h) => {
            // SAFETY: valid by the caller's contract.
            unsafe { *out = Box::into_raw(Box::new(h)) };
            WEFT_OK
        }
        Err(code) => code,
    }
}

/// The common checks of the four constructors: `out` (set to NULL first),
/// `name` and `dir`, then `make`.
///
/// # Safety
/// `dir` is NULL or NUL-terminated; `name` NUL-terminated (NULL is an
/// error); `out` NULL (an error) or a valid place for a pointer.
unsafe fn open_ring<T>(
    dir: *const c_char,
    name: *const c_char,
    out: *mut *mut T,
    make: impl FnOnce(&ShmOptions, &str) -> Result<T, c_int>,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return null("out");
        }
        // SAFETY: valid by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: by the caller's contract.
        let name = match unsafe { str_arg(name, "name") } {
            Ok(n) => n,
            Err(code) => return code,
        };
        // SAFETY: by the caller's contract.
        let opts = match unsafe { options(dir) } {
            Ok(o) => o,
            Err(code) => return code,
        };
        // SAFETY: as above.
        unsafe { hand_out(out, make(&opts, name)) }
    })
}

/// The config, or the status to return.
///
/// # Safety
/// `cfg` is NULL or points to a `weft_ring_config`.
unsafe fn config<'a>(cfg: *const weft_ring_config) -> Result<&'a weft_ring_config, c_int> {
    // SAFETY: by the caller's contract.
    unsafe { cfg.as_ref() }.ok_or_else(|| null("config"))
}

fn max_payload(cfg: &weft_ring_config) -> Option<usize> {
    (cfg.max_payload != 0).then_some(cfg.max_payload)
}

fn spsc_config(cfg: &weft_ring_config) -> spsc::SpscConfig {
    spsc::SpscConfig {
        capacity: cfg.capacity,
        max_payload: max_payload(cfg),
    }
}

fn producer(end: ProducerEnd) -> weft_ring_producer {
    weft_ring_producer {
        inner: ClaimHolder::new(end),
    }
}

/// Creates ring `name` in `dir` (NULL: the default directory) as `cfg`
/// says and returns its producer: SPSC and broadcast rings (an MPSC ring
/// is created by its consumer). Fails with `WEFT_ERR_SHM` if the file
/// exists or the sizes are wrong (the message says which), and
/// `WEFT_ERR_INVALID` for an MPSC kind. Cost: a file create, `mmap` and a
/// write to every page, once.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string; `name` a NUL-terminated
/// string; `cfg` points to a `weft_ring_config`; `out` is a valid place for
/// a pointer (set to NULL on failure).
#[no_mangle]
pub unsafe extern "C" fn weft_ring_producer_create(
    dir: *const c_char,
    name: *const c_char,
    cfg: *const weft_ring_config,
    out: *mut *mut weft_ring_producer,
) -> c_int {
    // SAFETY: the caller's contract is `open_ring`'s and `config`'s.
    unsafe {
        open_ring(dir, name, out, |opts, name| {
            let cfg = config(cfg)?;
            let end = match cfg.kind {
                WEFT_RING_SPSC => ProducerEnd::Spsc(
                    spsc::Producer::create(opts, name, &spsc_config(cfg)).map_err(shm_error)?,
                ),
                WEFT_RING_BROADCAST | WEFT_RING_BROADCAST_OVERWRITE => {
                    let mode = if cfg.kind == WEFT_RING_BROADCAST {
                        broadcast::Mode::Reliable
                    } else {
                        broadcast::Mode::Overwrite
                    };
                    let mut c =
                        broadcast::BroadcastConfig::new(cfg.capacity, cfg.max_peers as usize, mode);
                    c.max_payload = max_payload(cfg);
                    ProducerEnd::Broadcast(
                        broadcast::Producer::create(opts, name, &c).map_err(shm_error)?,
                    )
                }
                kind => return Err(wrong_side(kind, "created by its producer")),
            };
            Ok(producer(end))
        })
    }
}

/// Attaches to ring `name` of `kind` as a producer: an SPSC ring's (taking
/// over from a producer whose process died, after its last committed
/// frame) or one more of an MPSC ring's. `WEFT_ERR_SHM` for a missing,
/// foreign, corrupt or other-version file, another kind of ring, or a
/// role already held (the message says which); `WEFT_ERR_INVALID` for a
/// broadcast kind.
///
/// # Safety
/// As [`weft_ring_producer_create`], with `kind` in place of `cfg`.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_producer_attach(
    dir: *const c_char,
    name: *const c_char,
    kind: c_int,
    out: *mut *mut weft_ring_producer,
) -> c_int {
    // SAFETY: the caller's contract is `open_ring`'s.
    unsafe {
        open_ring(dir, name, out, |opts, name| {
            let end = match kind {
                WEFT_RING_SPSC => {
                    ProducerEnd::Spsc(spsc::Producer::attach(opts, name).map_err(shm_error)?)
                }
                WEFT_RING_MPSC => {
                    ProducerEnd::Mpsc(mpsc::Producer::attach(opts, name).map_err(shm_error)?)
                }
                kind => return Err(wrong_side(kind, "attached by a producer")),
            };
            Ok(producer(end))
        })
    }
}

/// Creates ring `name` as `cfg` says and returns its consumer: SPSC and
/// MPSC rings (a broadcast ring is created by its producer). Errors as
/// [`weft_ring_producer_create`].
///
/// # Safety
/// As [`weft_ring_producer_create`].
#[no_mangle]
pub unsafe extern "C" fn weft_ring_consumer_create(
    dir: *const c_char,
    name: *const c_char,
    cfg: *const weft_ring_config,
    out: *mut *mut weft_ring_consumer,
) -> c_int {
    // SAFETY: the caller's contract is `open_ring`'s and `config`'s.
    unsafe {
        open_ring(dir, name, out, |opts, name| {
            let cfg = config(cfg)?;
            let end = match cfg.kind {
                WEFT_RING_SPSC => ConsumerEnd::Spsc(
                    spsc::Consumer::create(opts, name, &spsc_config(cfg)).map_err(shm_error)?,
                ),
                WEFT_RING_MPSC => {
                    let mut c = mpsc::MpscConfig::new(cfg.capacity, cfg.max_peers as usize);
                    c.max_payload = max_payload(cfg);
                    ConsumerEnd::Mpsc(mpsc::Consumer::create(opts, name, &c).map_err(shm_error)?)
                }
                kind => return Err(wrong_side(kind, "created by its consumer")),
            };
            Ok(weft_ring_consumer { end })
        })
    }
}

/// Attaches to ring `name` of `kind` as a consumer: an SPSC ring's (taking
/// over from a consumer whose process died, at its last release) or a new
/// consumer of a broadcast ring (from the newest frame on). Errors as
/// [`weft_ring_producer_attach`]; `WEFT_ERR_INVALID` for an MPSC kind.
///
/// # Safety
/// As [`weft_ring_producer_attach`].
#[no_mangle]
pub unsafe extern "C" fn weft_ring_consumer_attach(
    dir: *const c_char,
    name: *const c_char,
    kind: c_int,
    out: *mut *mut weft_ring_consumer,
) -> c_int {
    // SAFETY: the caller's contract is `open_ring`'s.
    unsafe {
        open_ring(dir, name, out, |opts, name| {
            let end = match kind {
                WEFT_RING_SPSC => {
                    ConsumerEnd::Spsc(spsc::Consumer::attach(opts, name).map_err(shm_error)?)
                }
                WEFT_RING_BROADCAST | WEFT_RING_BROADCAST_OVERWRITE => ConsumerEnd::Broadcast(
                    broadcast::Consumer::attach(opts, name).map_err(shm_error)?,
                ),
                kind => return Err(wrong_side(kind, "attached by a consumer")),
            };
            Ok(weft_ring_consumer { end })
        })
    }
}

fn claim_code(e: ClaimError) -> c_int {
    match e {
        ClaimError::Full => set_fixed(
            WEFT_ERR_FULL,
            c"ring full: the consumer is a ring behind (try again)",
        ),
        ClaimError::NotConnected => set_fixed(
            WEFT_ERR_NOT_CONNECTED,
            c"no consumer: a reliable broadcast ring has nobody to deliver to",
        ),
        ClaimError::Closed => set_fixed(WEFT_ERR_CLOSED, c"the ring's consumer has closed it"),
        e @ ClaimError::TooLarge { .. } => set_text(WEFT_ERR_TOO_LARGE, e),
        e @ ClaimError::ReservedType(_) => set_text(WEFT_ERR_RESERVED_TYPE, e),
    }
}

/// The producer's end, or the status to return: NULL, or a claim is open.
///
/// # Safety
/// `p` is NULL or a live producer handle.
unsafe fn producer_end<'a>(p: *mut weft_ring_producer) -> Result<&'a mut ProducerEnd, c_int> {
    // SAFETY: by the caller's contract.
    unsafe {
        ClaimHolder::end(
            holder(p),
            "producer",
            c"a claim is open on this producer: commit or abort it first",
        )
    }
}

/// Copies `len` bytes at `data` into the ring as one frame of `type_id`.
/// Returns `WEFT_OK`, `WEFT_ERR_FULL` (try again: nothing written),
/// `WEFT_ERR_NOT_CONNECTED` (reliable broadcast with no consumer),
/// `WEFT_ERR_CLOSED`, `WEFT_ERR_TOO_LARGE` or `WEFT_ERR_RESERVED_TYPE`.
///
/// # Safety
/// `producer` is a live handle; `data` points to `len` readable bytes (NULL
/// when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn weft_ring_offer(
    producer: *mut weft_ring_producer,
    type_id: u32,
    data: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        let end = match unsafe { producer_end(producer) } {
            Ok(e) => e,
            Err(code) => return code,
        };
        // SAFETY: by the caller's contract.
        let msg = match unsafe { bytes_arg(data, len) } {
            Ok(m) => m,
            Err(code) => return code,
        };
        let r = match end {
            ProducerEnd::Spsc(p) => p.offer(type_id, msg),
            ProducerEnd::Broadcast(p) => p.offer(type_id, msg),
            ProducerEnd::Mpsc(p) => p.offer(type_id, msg),
        };
        match r {
            Ok(()) => WEFT_OK,
            Err(e) => claim_code(e),
        }
    })
}

/// Claims room for a frame of `len` bytes and `type_id`, to be written in
/// place at `*data`, then published with [`weft_ring_commit`] or dropped
/// with [`weft_ring_abort`]. Errors as [`weft_ring_offer`]; on error
/// `*data` is NULL and no claim is open. (An MPSC claim holds up the
/// consumer until it is committed: keep it short.)
///
/// # Safety
/// `producer` is a live handle; `data` a valid place for a pointer. The
/// `len` bytes at `*data` may be written until the commit or abort.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_try_claim(
    producer: *mut weft_ring_producer,
    len: usize,
    type_id: u32,
    data: *mut *mut u8,
) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract (`claim_into`'s and `producer_end`'s).
        unsafe {
            ClaimHolder::claim_into(
                holder(producer),
                data,
                || producer_end(producer).map(drop),
                |end| {
                    match end {
                        ProducerEnd::Spsc(p) => p.try_claim(len, type_id).map(|mut c| {
                            let at = c.payload_mut().as_mut_ptr();
                            (OpenClaim::Spsc(c), at)
                        }),
                        ProducerEnd::Broadcast(p) => p.try_claim(len, type_id).map(|mut c| {
                            let at = c.payload_mut().as_mut_ptr();
                            (OpenClaim::Broadcast(c), at)
                        }),
                        ProducerEnd::Mpsc(p) => p.try_claim(len, type_id).map(|mut c| {
                            let at = c.payload_mut().as_mut_ptr();
                            (OpenClaim::Mpsc(c), at)
                        }),
                    }
                    .map_err(claim_code)
                },
            )
        }
    })
}

/// The open claim, taken out of the handle.
///
/// # Safety
/// `p` is NULL or a live producer handle.
unsafe fn take_claim(p: *mut weft_ring_producer) -> Result<OpenClaim, c_int> {
    // SAFETY: by the caller's contract.
    unsafe { ClaimHolder::take_claim(holder(p), "producer", c"no claim is open on this producer") }
}

/// Publishes the open claim. `WEFT_ERR_INVALID` if none is open.
///
/// # Safety
/// `producer` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_commit(producer: *mut weft_ring_producer) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        match unsafe { take_claim(producer) } {
            Ok(OpenClaim::Spsc(c)) => c.commit(),
            Ok(OpenClaim::Broadcast(c)) => {
                c.commit();
            }
            Ok(OpenClaim::Mpsc(c)) => c.commit(),
            Err(code) => return code,
        }
        WEFT_OK
    })
}

/// Drops the open claim: the consumer never sees it. `WEFT_ERR_INVALID` if
/// none is open.
///
/// # Safety
/// `producer` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_abort(producer: *mut weft_ring_producer) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        match unsafe { take_claim(producer) } {
            Ok(claim) => {
                drop(claim);
                WEFT_OK
            }
            Err(code) => code,
        }
    })
}

/// The largest payload one frame may carry (0 for NULL or while a claim
/// is open).
///
/// # Safety
/// `producer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_max_payload(producer: *mut weft_ring_producer) -> usize {
    // SAFETY: by the caller's contract.
    match unsafe { producer_end(producer) } {
        Ok(ProducerEnd::Spsc(p)) => p.max_payload(),
        Ok(ProducerEnd::Broadcast(p)) => p.max_payload(),
        Ok(ProducerEnd::Mpsc(p)) => p.max_payload(),
        Err(_) => 0,
    }
}

/// Closes the producer's end (abandoning an open claim) and frees the
/// handle: the consumers drain what was committed, then see
/// `WEFT_ERR_CLOSED`. NULL is a no-op.
///
/// # Safety
/// `producer` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_producer_free(producer: *mut weft_ring_producer) {
    // SAFETY: the caller's contract is `free_handle`'s.
    unsafe { free_handle(producer) }
}

fn poll_code(e: PollError) -> c_int {
    match e {
        PollError::Closed => set_fixed(
            WEFT_ERR_CLOSED,
            c"the producer closed the ring and every frame is read",
        ),
        PollError::Evicted => set_fixed(
            WEFT_ERR_EVICTED,
            c"evicted by the producer (stuck or too slow): weft_ring_rejoin to resume",
        ),
        e @ PollError::Corrupt { .. } => set_text(WEFT_ERR_CORRUPT, e),
        e @ PollError::Lapped { .. } => set_text(WEFT_ERR_LAPPED, e),
        e @ PollError::Overrun { .. } => set_text(WEFT_ERR_OVERRUN, e),
        e @ PollError::SkippedDeadProducer { .. } => set_text(WEFT_ERR_SKIPPED, e),
    }
}

/// Hands up to `limit` frames, in order and in place, to `cb` (with `ctx`).
/// Returns how many (>= 0; 0 when there is nothing new), or:
/// `WEFT_ERR_CLOSED` once the producer closed and every frame is read;
/// `WEFT_ERR_LAPPED` (overwrite broadcast: frames were missed, the next
/// poll carries on from the newest); `WEFT_ERR_EVICTED` and
/// `WEFT_ERR_OVERRUN` (reliable broadcast: this consumer was cut loose;
/// [`weft_ring_rejoin`]); `WEFT_ERR_SKIPPED` (MPSC: a dead producer's
/// unfinished frame was skipped; the next poll carries on);
/// `WEFT_ERR_CORRUPT` (a header no weft producer writes: the consumer
/// stays there).
///
/// # Safety
/// `consumer` is a live handle; `cb` is safe to call with `ctx` and does
/// not unwind.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_poll(
    consumer: *mut weft_ring_consumer,
    limit: usize,
    cb: weft_frame_fn,
    ctx: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: a live handle by the caller's contract.
        let Some(c) = (unsafe { consumer.as_mut() }) else {
            return null("consumer");
        };
        let Some(cb) = cb else {
            return null("cb");
        };
        let limit = limit.min(c_int::MAX as usize);
        let each = |f: weft_shm::Frame<'_>| {
            let p = f.payload();
            // SAFETY: the caller vouches for `cb` and `ctx`; the payload
            // lives until the call returns.
            unsafe { cb(ctx, f.type_id(), p.as_ptr(), p.len()) };
        };
        let r = match &mut c.end {
            ConsumerEnd::Spsc(c) => c.poll(limit, each),
            ConsumerEnd::Broadcast(c) => c.poll(limit, each),
            ConsumerEnd::Mpsc(c) => c.poll(limit, each),
        };
        match r {
            Ok(n) => n as c_int,
            Err(e) => poll_code(e),
        }
    })
}

/// A reliable broadcast consumer that was evicted joins again at the
/// newest frame; `*from`/`*to` (either may be NULL) get the ring positions
/// it skipped. `WEFT_ERR_INVALID` for other rings.
///
/// # Safety
/// `consumer` is a live handle; `from` and `to` are NULL or valid places
/// for a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_rejoin(
    consumer: *mut weft_ring_consumer,
    from: *mut u64,
    to: *mut u64,
) -> c_int {
    guard(|| {
        // SAFETY: a live handle by the caller's contract.
        let Some(c) = (unsafe { consumer.as_mut() }) else {
            return null("consumer");
        };
        let ConsumerEnd::Broadcast(c) = &mut c.end else {
            return set_fixed(
                WEFT_ERR_INVALID,
                c"only a broadcast ring's consumer rejoins",
            );
        };
        let skipped = c.rejoin();
        // SAFETY: NULL or valid by the caller's contract.
        unsafe {
            if let Some(f) = from.as_mut() {
                *f = skipped.start;
            }
            if let Some(t) = to.as_mut() {
                *t = skipped.end;
            }
        }
        WEFT_OK
    })
}

/// Frames an overwrite broadcast consumer has missed so far (0 for other
/// rings and NULL).
///
/// # Safety
/// `consumer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_lapped(consumer: *const weft_ring_consumer) -> u64 {
    // SAFETY: by the caller's contract.
    match unsafe { consumer.as_ref() }.map(|c| &c.end) {
        Some(ConsumerEnd::Broadcast(c)) => c.lapped(),
        _ => 0,
    }
}

/// The producer's liveness as this consumer sees it, `WEFT_PEER_*`: one
/// that has not heartbeated for `liveness_timeout_ns` while its process
/// runs is `WEFT_PEER_STALE`. For SPSC and broadcast rings (an MPSC
/// consumer learns of a dead producer from `WEFT_ERR_SKIPPED`): else
/// `WEFT_ERR_INVALID`. Not for the hot path: it probes the process.
///
/// # Safety
/// `consumer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_producer_state(
    consumer: *const weft_ring_consumer,
    liveness_timeout_ns: u64,
) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        let Some(c) = (unsafe { consumer.as_ref() }) else {
            return null("consumer");
        };
        let state = match &c.end {
            ConsumerEnd::Spsc(c) => c.producer_state(liveness_timeout_ns),
            ConsumerEnd::Broadcast(c) => c.producer_state(liveness_timeout_ns),
            ConsumerEnd::Mpsc(_) => {
                return set_fixed(
                    WEFT_ERR_INVALID,
                    c"an MPSC ring has many producers: a dead one shows as WEFT_ERR_SKIPPED",
                )
            }
        };
        match state {
            PeerState::NotAttached => WEFT_PEER_NOT_ATTACHED,
            PeerState::Live => WEFT_PEER_LIVE,
            PeerState::Gone(GoneReason::Closed) => WEFT_PEER_CLOSED,
            PeerState::Gone(GoneReason::Died) => WEFT_PEER_DIED,
            PeerState::Gone(GoneReason::Stale) => WEFT_PEER_STALE,
        }
    })
}

/// Closes the consumer's end and frees the handle. NULL is a no-op.
///
/// # Safety
/// `consumer` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_ring_consumer_free(consumer: *mut weft_ring_consumer) {
    // SAFETY: the caller's contract is `free_handle`'s.
    unsafe { free_handle(consumer) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    extern "C" fn collect(ctx: *mut c_void, type_id: u32, data: *const u8, len: usize) {
        // SAFETY: the test passes a Vec and weft a payload valid for the call.
        let v = unsafe { &mut *(ctx as *mut Vec<(u32, Vec<u8>)>) };
        // SAFETY: as above.
        v.push((
            type_id,
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec(),
        ));
    }

    #[test]
    fn an_spsc_ring_carries_offers_and_claims_and_reports_close() {
        let dir = std::env::temp_dir().join(format!("weft-ffi-rings-{}", std::process::id()));
        let d = CString::new(dir.to_str().unwrap()).unwrap();
        let name = CString::new("r").unwrap();
        let cfg = weft_ring_config {
            kind: WEFT_RING_SPSC,
            capacity: 4096,
            max_payload: 0,
            max_peers: 0,
        };
        let mut p = std::ptr::null_mut();
        let mut c = std::ptr::null_mut();
        // SAFETY: valid strings, config and out pointers.
        unsafe {
            assert_eq!(
                weft_ring_producer_create(d.as_ptr(), name.as_ptr(), &cfg, &mut p),
                WEFT_OK
            );
            assert_eq!(
                weft_ring_consumer_attach(d.as_ptr(), name.as_ptr(), WEFT_RING_SPSC, &mut c),
                WEFT_OK
            );
            assert_eq!(weft_ring_offer(p, 7, b"abc".as_ptr(), 3), WEFT_OK);
            let mut at = std::ptr::null_mut();
            assert_eq!(weft_ring_try_claim(p, 2, 8, &mut at), WEFT_OK);
            assert_eq!(weft_ring_offer(p, 7, b"x".as_ptr(), 1), WEFT_ERR_INVALID);
            at.write(b'h');
            at.add(1).write(b'i');
            assert_eq!(weft_ring_commit(p), WEFT_OK);
            assert_eq!(weft_ring_commit(p), WEFT_ERR_INVALID);
            let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
            let ctx = &mut got as *mut _ as *mut c_void;
            assert_eq!(weft_ring_poll(c, 10, Some(collect), ctx), 2);
            assert_eq!(got, vec![(7, b"abc".to_vec()), (8, b"hi".to_vec())]);
            assert_eq!(
                weft_ring_offer(p, 0xFFFF_FF00, b"x".as_ptr(), 1),
                WEFT_ERR_RESERVED_TYPE
            );
            assert_eq!(weft_ring_producer_state(c, 5_000_000_000), WEFT_PEER_LIVE);
            weft_ring_producer_free(p);
            assert_eq!(weft_ring_poll(c, 10, Some(collect), ctx), WEFT_ERR_CLOSED);
            assert_eq!(weft_ring_producer_state(c, 0), WEFT_PEER_CLOSED);
            weft_ring_consumer_free(c);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
