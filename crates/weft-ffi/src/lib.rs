//! weft's C ABI (`include/weft.h`): a node, publications and subscriptions
//! by channel URI, offer and claim-in-place, poll with a callback that sees
//! each message in place, and the events `Loss`, `NewSession` and
//! `PublisherGone`; gateways between a multicast stream and a local ring;
//! application counters and a read of a node's counters
//! ([`counters`](crate::counters)); and the raw shared-memory rings, for
//! users who want only those ([`rings`](crate::rings)).
//!
//! **Errors.** Every entry point returns a status: `WEFT_OK` (0), a count
//! (`weft_subscription_poll`), or one of the negative `WEFT_ERR_*` codes.
//! After a failure, [`weft_last_error`] gives this thread's message for it.
//! No panic crosses the boundary: each entry point catches one and returns
//! `WEFT_ERR_PANIC`.
//!
//! **Costs.** `offer`, `try_claim`/`commit` and `poll` allocate nothing and
//! take no lock: what the Rust API costs, plus a call. Back-pressure and
//! "not connected" are flow, not faults: their codes carry a fixed message
//! and allocate nothing either. Creating and closing handles allocates.
//!
//! **Ownership.** Each `*_new` hands out a handle the caller frees exactly
//! once with its `*_free` (or `weft_node_close`); a handle is used by one
//! thread at a time (it may move between threads). A publication or
//! subscription may outlive its node.

#![allow(non_camel_case_types)]

pub mod counters;
pub mod rings;

pub use counters::*;
pub use rings::*;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use weft::{Event, LossUnit, PublishError, SubscribeError};

/// Success.
pub const WEFT_OK: c_int = 0;
/// A required pointer argument was NULL.
pub const WEFT_ERR_NULL: c_int = -1;
/// An argument is not valid: a string that is not UTF-8, a call the
/// handle's state does not allow (a second claim while one is open).
pub const WEFT_ERR_INVALID: c_int = -2;
/// A channel URI that does not parse; the message says why.
pub const WEFT_ERR_URI: c_int = -3;
/// The node configuration (TOML text or `WEFT_*` environment) is wrong.
pub const WEFT_ERR_CONFIG: c_int = -4;
/// Shared memory: a file, mapping, or a foreign or corrupt region.
pub const WEFT_ERR_SHM: c_int = -5;
/// Sockets.
pub const WEFT_ERR_NET: c_int = -6;
/// The node's agent threads could not start.
pub const WEFT_ERR_AGENT: c_int = -7;
/// Close ran out of time with messages not delivered (the message says
/// which).
pub const WEFT_ERR_UNDELIVERED: c_int = -8;
/// The subscribers (or the network's flow control) are a full buffer
/// behind: try again later. Nothing was written.
pub const WEFT_ERR_BACK_PRESSURED: c_int = -9;
/// No subscriber is there yet. Nothing was written.
pub const WEFT_ERR_NOT_CONNECTED: c_int = -10;
/// The channel is closed.
pub const WEFT_ERR_CLOSED: c_int = -11;
/// The message is longer than the channel's maximum.
pub const WEFT_ERR_TOO_LARGE: c_int = -12;
/// Shared memory: the channel's file is there but cannot be used (foreign,
/// corrupt, another version, not ours). Reported once per problem; the
/// subscription keeps looking and attaches when a good file replaces it.
pub const WEFT_ERR_ATTACH: c_int = -13;
/// The ring holds data no weft writer produced; the subscription stopped
/// there.
pub const WEFT_ERR_CORRUPT: c_int = -14;
/// weft panicked inside the call (a bug: please report the message).
pub const WEFT_ERR_PANIC: c_int = -15;
/// A raw ring is full: the consumer is a ring behind. Try again; nothing
/// was written.
pub const WEFT_ERR_FULL: c_int = -16;
/// A raw ring's frame type id is one of the rings' own (0xFFFFFF00 and up).
pub const WEFT_ERR_RESERVED_TYPE: c_int = -17;
/// An overwrite broadcast consumer was lapped: frames were missed (the
/// message says how many); the next poll carries on from the newest.
pub const WEFT_ERR_LAPPED: c_int = -18;
/// A reliable broadcast consumer was evicted (stuck or too slow):
/// `weft_ring_rejoin` to resume from the newest frame.
pub const WEFT_ERR_EVICTED: c_int = -19;
/// A reliable broadcast consumer was evicted while the frames of this poll
/// were being read in place: treat them as lost, then `weft_ring_rejoin`.
pub const WEFT_ERR_OVERRUN: c_int = -20;
/// An MPSC consumer skipped the unfinished frame of a producer that died
/// (the message says where and whose); the next poll carries on.
pub const WEFT_ERR_SKIPPED: c_int = -21;

/// `weft_event.kind`: a message, `data`/`len` valid during the callback.
pub const WEFT_EVENT_MESSAGE: c_int = 0;
/// `weft_event.kind`: messages `from..to` (in `loss_unit`s) of `session_id`
/// will never arrive.
pub const WEFT_EVENT_LOSS: c_int = 1;
/// `weft_event.kind`: a publisher session started.
pub const WEFT_EVENT_NEW_SESSION: c_int = 2;
/// `weft_event.kind`: the session's publisher closed or went silent.
pub const WEFT_EVENT_PUBLISHER_GONE: c_int = 3;

/// `weft_event.loss_unit`: UDP datagrams (transport sequence numbers).
pub const WEFT_LOSS_DATAGRAMS: c_int = 0;
/// `weft_event.loss_unit`: bytes of a shared-memory ring.
pub const WEFT_LOSS_RING_BYTES: c_int = 1;

/// One event of a subscription, as the poll callback sees it. Fields a kind
/// does not use are zero (`data` NULL).
#[repr(C)]
#[derive(Debug)]
pub struct weft_event {
    /// `WEFT_EVENT_*`.
    pub kind: c_int,
    /// `WEFT_LOSS_*` for a loss, else 0.
    pub loss_unit: c_int,
    /// The message, in place in the ring: valid only during the callback.
    pub data: *const u8,
    /// Its length in bytes.
    pub len: usize,
    /// The session (loss, new session, publisher gone).
    pub session_id: u64,
    /// A loss's first lost datagram or ring position.
    pub from: u64,
    /// One past its last.
    pub to: u64,
}

/// The poll callback: `ctx` is the pointer given to the poll. It must not
/// unwind (no C++ exception, no `longjmp`) and must not call into the same
/// subscription.
pub type weft_event_fn = Option<unsafe extern "C" fn(ctx: *mut c_void, event: *const weft_event)>;

/// A node: the process's agents, counters and channel resources.
#[derive(Debug)]
pub struct weft_node {
    node: weft::Node,
}

/// A sending end `E` and the claim `C` open on it, if any: the handle of a
/// publication and of a raw ring's producer. The claim borrows `*end`, a
/// separate allocation, so a reference to this struct never covers what
/// the claim borrows; it is declared first, so it is dropped before `end`
/// is freed.
pub(crate) struct ClaimHolder<E, C> {
    claim: Option<C>,
    end: *mut E,
}

impl<E, C> ClaimHolder<E, C> {
    pub(crate) fn new(end: E) -> Self {
        Self {
            claim: None,
            end: Box::into_raw(Box::new(end)),
        }
    }

    /// The end of the live handle at `h`, or the status to return: `h` is
    /// NULL (`what` names it), or a claim is open (`open` says so).
    ///
    /// # Safety
    /// `h` is NULL or a live handle.
    pub(crate) unsafe fn end<'a>(
        h: *mut Self,
        what: &str,
        open: &'static CStr,
    ) -> Result<&'a mut E, c_int> {
        // SAFETY: a live handle by the caller's contract.
        let Some(h) = (unsafe { h.as_mut() }) else {
            return Err(null(what));
        };
        if h.claim.is_some() {
            return Err(set_fixed(WEFT_ERR_INVALID, open));
        }
        // SAFETY: `end` came from `Box::into_raw` and is freed only by
        // `free`; no claim borrows it (checked above).
        Ok(unsafe { &mut *h.end })
    }

    /// Both handles' try_claim: `*data` is set to NULL; `check` says
    /// whether the handle may claim (as [`ClaimHolder::end`]: not NULL, no
    /// claim open); `claim` makes a claim on the end and the address of its
    /// payload, or the status to return. The claim is kept in the handle
    /// (it borrows the end until it is committed, aborted or dropped: `end`
    /// refuses the handle meanwhile, and the drop drops the claim first),
    /// and `*data` is set to the payload. On any error `*data` stays NULL
    /// and no claim is open.
    ///
    /// # Safety
    /// `h` is NULL or a live handle; `data` is NULL or a valid place for a
    /// pointer.
    pub(crate) unsafe fn claim_into(
        h: *mut Self,
        data: *mut *mut u8,
        check: impl FnOnce() -> Result<(), c_int>,
        claim: impl FnOnce(&'static mut E) -> Result<(C, *mut u8), c_int>,
    ) -> c_int
    where
        E: 'static,
    {
        if data.is_null() {
            return null("data");
        }
        // SAFETY: valid by the caller's contract.
        unsafe { *data = std::ptr::null_mut() };
        if let Err(code) = check() {
            return code;
        }
        // SAFETY: a live handle with no claim open (checked above): nothing
        // borrows the end, and the box stays put until the drop; the claim
        // made from it is stored below before the handle is used again.
        let end = unsafe { &mut *(*h).end };
        match claim(end) {
            Ok((c, at)) => {
                // SAFETY: live (checked above); valid by the caller's contract.
                unsafe {
                    (*h).claim = Some(c);
                    *data = at;
                }
                WEFT_OK
            }
            Err(code) => code,
        }
    }

    /// The open claim, taken out of the handle at `h`, or the status to
    /// return (`none` when no claim is open).
    ///
    /// # Safety
    /// `h` is NULL or a live handle.
    pub(crate) unsafe fn take_claim(
        h: *mut Self,
        what: &str,
        none: &'static CStr,
    ) -> Result<C, c_int> {
        // SAFETY: a live handle by the caller's contract.
        let Some(h) = (unsafe { h.as_mut() }) else {
            return Err(null(what));
        };
        h.claim
            .take()
            .ok_or_else(|| set_fixed(WEFT_ERR_INVALID, none))
    }
}

impl<E, C> Drop for ClaimHolder<E, C> {
    /// The claim first (abandoned), then the end it borrowed.
    fn drop(&mut self) {
        drop(self.claim.take());
        // SAFETY: from `Box::into_raw` in `new`, freed only here; no claim
        // borrows it any more.
        drop(unsafe { Box::from_raw(self.end) });
    }
}

/// A publication. While a claim is open only `weft_claim_commit` and
/// `weft_claim_abort` may be called on it.
pub struct weft_publication {
    inner: ClaimHolder<weft::Publication, weft::Claim<'static>>,
}

impl std::fmt::Debug for weft_publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("weft_publication")
            .field("claim_open", &self.inner.claim.is_some())
            .finish()
    }
}

/// A subscription.
#[derive(Debug)]
pub struct weft_subscription {
    sub: weft::Subscription,
}

/// This thread's last error: a fixed text for flow conditions (no
/// allocation on the message path), a formatted one for faults.
enum LastError {
    None,
    Fixed(&'static CStr),
    Text(CString),
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const { RefCell::new(LastError::None) };
}

fn set_fixed(code: c_int, text: &'static CStr) -> c_int {
    LAST_ERROR.with(|e| *e.borrow_mut() = LastError::Fixed(text));
    code
}

fn set_text(code: c_int, text: impl std::fmt::Display) -> c_int {
    // A message with a NUL in it (from a file name, say) is cut there.
    let mut bytes = text.to_string().into_bytes();
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    let text = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = LastError::Text(text));
    code
}

/// Runs `f`, turning a panic into `WEFT_ERR_PANIC` with its message.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            set_text(WEFT_ERR_PANIC, format!("weft panicked: {what}"))
        }
    }
}

fn error_code(e: &weft::Error) -> c_int {
    match e {
        weft::Error::Uri(_) => WEFT_ERR_URI,
        weft::Error::Config(_) => WEFT_ERR_CONFIG,
        weft::Error::Shm(_) => WEFT_ERR_SHM,
        weft::Error::Net(_) => WEFT_ERR_NET,
        weft::Error::Agent(_) => WEFT_ERR_AGENT,
        weft::Error::Undelivered(_) => WEFT_ERR_UNDELIVERED,
    }
}

fn set_error(e: weft::Error) -> c_int {
    set_text(error_code(&e), e)
}

fn publish_code(e: PublishError) -> c_int {
    match e {
        PublishError::BackPressured => set_fixed(
            WEFT_ERR_BACK_PRESSURED,
            c"back-pressured: the subscribers are a full buffer behind",
        ),
        PublishError::NotConnected => {
            set_fixed(WEFT_ERR_NOT_CONNECTED, c"not connected: no subscriber")
        }
        PublishError::Closed => set_fixed(WEFT_ERR_CLOSED, c"the channel is closed"),
        e @ PublishError::TooLarge { .. } => set_text(WEFT_ERR_TOO_LARGE, e),
    }
}

/// A `&str` from a C string, or the status to return.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged during the call.
unsafe fn str_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(set_text(WEFT_ERR_NULL, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|e| set_text(WEFT_ERR_INVALID, format!("{what} is not UTF-8: {e}")))
}

/// Frees a handle made by `Box::into_raw`, inside [`guard`]; NULL is a
/// no-op. What the handle holds is dropped in its fields' order.
///
/// # Safety
/// `h` is NULL or a live handle of this type, not used afterwards.
pub(crate) unsafe fn free_handle<T>(h: *mut T) {
    let _ = guard(|| {
        if !h.is_null() {
            // SAFETY: a live handle, handed back once, by the caller's contract.
            drop(unsafe { Box::from_raw(h) });
        }
        WEFT_OK
    });
}

fn null(what: &str) -> c_int {
    set_text(WEFT_ERR_NULL, format!("{what} is NULL"))
}

/// The message of this thread's last failed call: valid until this thread's
/// next failing weft call. Never NULL ("" before any failure). Costs one
/// thread-local read.
#[no_mangle]
pub extern "C" fn weft_last_error() -> *const c_char {
    LAST_ERROR.with(|e| match &*e.borrow() {
        LastError::None => c"".as_ptr(),
        LastError::Fixed(s) => s.as_ptr(),
        // The CString lives in the thread-local until it is replaced.
        LastError::Text(s) => s.as_ptr(),
    })
}

/// The name of a status code ("WEFT_ERR_URI" ...), a static string; "" for
/// a code weft does not return.
#[no_mangle]
pub extern "C" fn weft_status_name(code: c_int) -> *const c_char {
    let name: &'static CStr = match code {
        WEFT_OK => c"WEFT_OK",
        WEFT_ERR_NULL => c"WEFT_ERR_NULL",
        WEFT_ERR_INVALID => c"WEFT_ERR_INVALID",
        WEFT_ERR_URI => c"WEFT_ERR_URI",
        WEFT_ERR_CONFIG => c"WEFT_ERR_CONFIG",
        WEFT_ERR_SHM => c"WEFT_ERR_SHM",
        WEFT_ERR_NET => c"WEFT_ERR_NET",
        WEFT_ERR_AGENT => c"WEFT_ERR_AGENT",
        WEFT_ERR_UNDELIVERED => c"WEFT_ERR_UNDELIVERED",
        WEFT_ERR_BACK_PRESSURED => c"WEFT_ERR_BACK_PRESSURED",
        WEFT_ERR_NOT_CONNECTED => c"WEFT_ERR_NOT_CONNECTED",
        WEFT_ERR_CLOSED => c"WEFT_ERR_CLOSED",
        WEFT_ERR_TOO_LARGE => c"WEFT_ERR_TOO_LARGE",
        WEFT_ERR_ATTACH => c"WEFT_ERR_ATTACH",
        WEFT_ERR_CORRUPT => c"WEFT_ERR_CORRUPT",
        WEFT_ERR_PANIC => c"WEFT_ERR_PANIC",
        WEFT_ERR_FULL => c"WEFT_ERR_FULL",
        WEFT_ERR_RESERVED_TYPE => c"WEFT_ERR_RESERVED_TYPE",
        WEFT_ERR_LAPPED => c"WEFT_ERR_LAPPED",
        WEFT_ERR_EVICTED => c"WEFT_ERR_EVICTED",
        WEFT_ERR_OVERRUN => c"WEFT_ERR_OVERRUN",
        WEFT_ERR_SKIPPED => c"WEFT_ERR_SKIPPED",
        _ => c"",
    };
    name.as_ptr()
}

/// Starts a node. `config_toml` is the node configuration as TOML text (the
/// keys of `docs/config.md`), or NULL for the defaults; the `WEFT_*`
/// environment variables override it either way. On success stores the
/// handle in `*out` and returns `WEFT_OK`; on failure `*out` is NULL.
///
/// # Safety
/// `config_toml` is NULL or a NUL-terminated string; `out` is a valid place
/// for a pointer.
#[no_mangle]
pub unsafe extern "C" fn weft_node_new(
    config_toml: *const c_char,
    out: *mut *mut weft_node,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return null("out");
        }
        // SAFETY: `out` is valid by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        let cfg = if config_toml.is_null() {
            weft::NodeConfig::default()
        } else {
            // SAFETY: by the caller's contract.
            let text = match unsafe { str_arg(config_toml, "config_toml") } {
                Ok(t) => t,
                Err(code) => return code,
            };
            match weft::NodeConfig::from_toml(text) {
                Ok(c) => c,
                Err(e) => return set_text(WEFT_ERR_CONFIG, format!("node configuration: {e}")),
            }
        };
        let cfg = match cfg.with_env() {
            Ok(c) => c,
            Err(e) => return set_text(WEFT_ERR_CONFIG, format!("node configuration: {e}")),
        };
        match weft::Node::new(cfg) {
            Ok(node) => {
                let handle = Box::into_raw(Box::new(weft_node { node }));
                // SAFETY: as above.
                unsafe { *out = handle };
                WEFT_OK
            }
            Err(e) => set_error(e),
        }
    })
}

/// Runs one round of the node's work on this thread (for the `invoker`
/// threading mode; with agent threads it does nothing). Returns how much
/// work was done (>= 0) or an error code.
///
/// # Safety
/// `node` is NULL or a handle from [`weft_node_new`], not yet closed.
#[no_mangle]
pub unsafe extern "C" fn weft_node_do_work(node: *mut weft_node) -> c_int {
    guard(|| {
        // SAFETY: a live handle by the caller's contract.
        let Some(n) = (unsafe { node.as_mut() }) else {
            return null("node");
        };
        n.node.do_work().min(c_int::MAX as usize) as c_int
    })
}

/// Closes the node: flushes what its publications sent (up to the node's
/// close timeout), stops its agents and frees the handle (always, even on
/// an error). Returns `WEFT_OK`, or `WEFT_ERR_UNDELIVERED` naming what was
/// not delivered. NULL is a no-op.
///
/// # Safety
/// `node` is NULL or a handle from [`weft_node_new`], not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_node_close(node: *mut weft_node) -> c_int {
    guard(|| {
        if node.is_null() {
            return WEFT_OK;
        }
        // SAFETY: a live handle, handed back once, by the caller's contract.
        let n = unsafe { Box::from_raw(node) };
        match n.node.close() {
            Ok(()) => WEFT_OK,
            Err(e) => set_error(e),
        }
    })
}

/// The common part of `weft_publication_new` and `weft_subscription_new`:
/// checks the arguments, runs `open` on the node and the URI, and stores the
/// boxed handle in `*out` (NULL on any failure).
///
/// # Safety
/// `node` is a live node handle; `uri` a NUL-terminated string; `out` a
/// valid place for a pointer (each may be NULL: an error).
unsafe fn open_handle<T>(
    node: *mut weft_node,
    uri: *const c_char,
    out: *mut *mut T,
    open: impl FnOnce(&mut weft::Node, &str) -> Result<T, weft::Error>,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return null("out");
        }
        // SAFETY: valid by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: a live handle by the caller's contract.
        let Some(n) = (unsafe { node.as_mut() }) else {
            return null("node");
        };
        // SAFETY: by the caller's contract.
        let uri = match unsafe { str_arg(uri, "uri") } {
            Ok(u) => u,
            Err(code) => return code,
        };
        match open(&mut n.node, uri) {
            Ok(handle) => {
                // SAFETY: as above.
                unsafe { *out = Box::into_raw(Box::new(handle)) };
                WEFT_OK
            }
            Err(e) => set_error(e),
        }
    })
}

/// Opens a publication on `uri` (`shm:NAME`, `udp://GROUP:PORT?...`) and
/// `stream`. Stores the handle in `*out` (NULL on failure).
///
/// # Safety
/// `node` is a live node handle; `uri` a NUL-terminated string; `out` a
/// valid place for a pointer.
#[no_mangle]
pub unsafe extern "C" fn weft_publication_new(
    node: *mut weft_node,
    uri: *const c_char,
    stream: u32,
    out: *mut *mut weft_publication,
) -> c_int {
    // SAFETY: the caller's contract is `open_handle`'s.
    unsafe {
        open_handle(node, uri, out, |n, uri| {
            let publ = n.publication(uri, stream)?;
            Ok(weft_publication {
                inner: ClaimHolder::new(publ),
            })
        })
    }
}

/// The publication's holder (NULL stays NULL).
///
/// # Safety
/// `p` is NULL or a live handle.
unsafe fn holder(
    p: *mut weft_publication,
) -> *mut ClaimHolder<weft::Publication, weft::Claim<'static>> {
    if p.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a live handle by the caller's contract; only the field's
        // address is taken, nothing is read.
        unsafe { std::ptr::addr_of_mut!((*p).inner) }
    }
}

/// The publication, or the status to return: NULL, or a claim is open.
///
/// # Safety
/// `p` is NULL or a live publication handle.
unsafe fn publication<'a>(p: *mut weft_publication) -> Result<&'a mut weft::Publication, c_int> {
    // SAFETY: by the caller's contract.
    unsafe {
        ClaimHolder::end(
            holder(p),
            "publication",
            c"a claim is open on this publication: commit or abort it first",
        )
    }
}

/// The `len` bytes at `data` (NULL is allowed when `len` is 0), or the
/// status to return.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes that stay unchanged
/// while the slice is used.
pub(crate) unsafe fn bytes_arg<'a>(data: *const u8, len: usize) -> Result<&'a [u8], c_int> {
    if len == 0 {
        Ok(&[])
    } else if data.is_null() {
        Err(null("data"))
    } else {
        // SAFETY: `len` readable bytes by the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts(data, len) })
    }
}

/// Copies `len` bytes from `data` into the channel as one message. Returns
/// `WEFT_OK`, or `WEFT_ERR_BACK_PRESSURED` / `WEFT_ERR_NOT_CONNECTED` (try
/// again; nothing written), `WEFT_ERR_TOO_LARGE`, `WEFT_ERR_CLOSED`. No
/// allocation, lock or syscall on shared memory.
///
/// # Safety
/// `publ` is a live publication handle; `data` points to `len` readable
/// bytes (it may be NULL when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn weft_publication_offer(
    publ: *mut weft_publication,
    data: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        let p = match unsafe { publication(publ) } {
            Ok(p) => p,
            Err(code) => return code,
        };
        // SAFETY: by the caller's contract.
        let msg = match unsafe { bytes_arg(data, len) } {
            Ok(m) => m,
            Err(code) => return code,
        };
        match p.offer(msg) {
            Ok(()) => WEFT_OK,
            Err(e) => publish_code(e),
        }
    })
}

/// Claims room for a message of `len` bytes, to be written in place at
/// `*data` and then published with [`weft_claim_commit`] (or dropped with
/// [`weft_claim_abort`]). Errors as [`weft_publication_offer`]; on error
/// `*data` is NULL and no claim is open.
///
/// # Safety
/// `publ` is a live publication handle; `data` a valid place for a pointer.
/// The `len` bytes at `*data` may be written until the commit or abort.
#[no_mangle]
pub unsafe extern "C" fn weft_publication_try_claim(
    publ: *mut weft_publication,
    len: usize,
    data: *mut *mut u8,
) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract (`claim_into`'s and `publication`'s).
        unsafe {
            ClaimHolder::claim_into(
                holder(publ),
                data,
                || publication(publ).map(drop),
                |p| match p.try_claim(len) {
                    Ok(mut c) => {
                        let at = c.payload_mut().as_mut_ptr();
                        Ok((c, at))
                    }
                    Err(e) => Err(publish_code(e)),
                },
            )
        }
    })
}

/// The open claim, taken out of the handle.
///
/// # Safety
/// `p` is NULL or a live publication handle.
unsafe fn take_claim(p: *mut weft_publication) -> Result<weft::Claim<'static>, c_int> {
    // SAFETY: by the caller's contract.
    unsafe {
        ClaimHolder::take_claim(
            holder(p),
            "publication",
            c"no claim is open on this publication",
        )
    }
}

/// Publishes the open claim. `WEFT_ERR_INVALID` if none is open.
///
/// # Safety
/// `publ` is a live publication handle.
#[no_mangle]
pub unsafe extern "C" fn weft_claim_commit(publ: *mut weft_publication) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        match unsafe { take_claim(publ) } {
            Ok(claim) => {
                claim.commit();
                WEFT_OK
            }
            Err(code) => code,
        }
    })
}

/// Drops the open claim: subscribers never see it. `WEFT_ERR_INVALID` if
/// none is open.
///
/// # Safety
/// `publ` is a live publication handle.
#[no_mangle]
pub unsafe extern "C" fn weft_claim_abort(publ: *mut weft_publication) -> c_int {
    guard(|| {
        // SAFETY: by the caller's contract.
        match unsafe { take_claim(publ) } {
            Ok(claim) => {
                drop(claim);
                WEFT_OK
            }
            Err(code) => code,
        }
    })
}

/// The largest message the publication takes, in bytes (0 for NULL or
/// while a claim is open).
///
/// # Safety
/// `publ` is NULL or a live publication handle.
#[no_mangle]
pub unsafe extern "C" fn weft_publication_max_message(publ: *mut weft_publication) -> usize {
    // SAFETY: by the caller's contract.
    match unsafe { publication(publ) } {
        Ok(p) => p.max_message(),
        Err(_) => 0,
    }
}

/// 1 if a subscriber is there (an offer can succeed), else 0.
///
/// # Safety
/// `publ` is NULL or a live publication handle.
#[no_mangle]
pub unsafe extern "C" fn weft_publication_is_connected(publ: *mut weft_publication) -> c_int {
    // SAFETY: by the caller's contract.
    match unsafe { publication(publ) } {
        Ok(p) => c_int::from(p.is_connected()),
        Err(_) => 0,
    }
}

/// Closes the publication (abandoning an open claim) and frees the handle.
/// NULL is a no-op.
///
/// # Safety
/// `publ` is NULL or a live publication handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_publication_free(publ: *mut weft_publication) {
    // SAFETY: the caller's contract is `free_handle`'s.
    unsafe { free_handle(publ) }
}

/// Opens a subscription on `uri` and `stream`. Stores the handle in `*out`
/// (NULL on failure). A shared-memory subscription may be opened before its
/// publisher: it attaches when the channel's file appears.
///
/// # Safety
/// As [`weft_publication_new`].
#[no_mangle]
pub unsafe extern "C" fn weft_subscription_new(
    node: *mut weft_node,
    uri: *const c_char,
    stream: u32,
    out: *mut *mut weft_subscription,
) -> c_int {
    // SAFETY: the caller's contract is `open_handle`'s.
    unsafe {
        open_handle(node, uri, out, |n, uri| {
            Ok(weft_subscription {
                sub: n.subscription(uri, stream)?,
            })
        })
    }
}

/// Hands up to `limit` events, in order, to `cb` (with `ctx`), messages in
/// place. Returns how many (>= 0), or `WEFT_ERR_ATTACH` / `WEFT_ERR_CORRUPT`
/// (see their doc). No allocation, lock or syscall while messages flow.
///
/// # Safety
/// `sub` is a live subscription handle; `cb` is safe to call with `ctx`
/// and does not unwind.
#[no_mangle]
pub unsafe extern "C" fn weft_subscription_poll(
    sub: *mut weft_subscription,
    limit: usize,
    cb: weft_event_fn,
    ctx: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: a live handle by the caller's contract.
        let Some(s) = (unsafe { sub.as_mut() }) else {
            return null("subscription");
        };
        let Some(cb) = cb else {
            return null("cb");
        };
        let r = s.sub.poll(limit.min(c_int::MAX as usize), |e| {
            let ev = to_c(e);
            // SAFETY: the caller vouches for `cb` and `ctx`; `ev` and the
            // message it points to live until the call returns.
            unsafe { cb(ctx, &ev) };
        });
        match r {
            Ok(n) => n as c_int,
            Err(e @ SubscribeError::Attach { .. }) => set_text(WEFT_ERR_ATTACH, e),
            Err(e @ SubscribeError::Corrupt { .. }) => set_text(WEFT_ERR_CORRUPT, e),
        }
    })
}

fn to_c(e: Event<'_>) -> weft_event {
    let mut ev = weft_event {
        kind: WEFT_EVENT_MESSAGE,
        loss_unit: 0,
        data: std::ptr::null(),
        len: 0,
        session_id: 0,
        from: 0,
        to: 0,
    };
    match e {
        Event::Message(m) => {
            ev.data = m.as_ptr();
            ev.len = m.len();
        }
        Event::Loss {
            session_id,
            from,
            to,
            unit,
        } => {
            ev.kind = WEFT_EVENT_LOSS;
            ev.loss_unit = match unit {
                LossUnit::Datagrams => WEFT_LOSS_DATAGRAMS,
                LossUnit::RingBytes => WEFT_LOSS_RING_BYTES,
            };
            (ev.session_id, ev.from, ev.to) = (session_id, from, to);
        }
        Event::NewSession { session_id } => {
            ev.kind = WEFT_EVENT_NEW_SESSION;
            ev.session_id = session_id;
        }
        Event::PublisherGone { session_id } => {
            ev.kind = WEFT_EVENT_PUBLISHER_GONE;
            ev.session_id = session_id;
        }
    }
    ev
}

/// 1 if a publisher is attached, else 0.
///
/// # Safety
/// `sub` is NULL or a live subscription handle.
#[no_mangle]
pub unsafe extern "C" fn weft_subscription_is_connected(sub: *mut weft_subscription) -> c_int {
    // SAFETY: by the caller's contract.
    match unsafe { sub.as_ref() } {
        Some(s) => c_int::from(s.sub.is_connected()),
        None => 0,
    }
}

/// Closes the subscription and frees the handle. NULL is a no-op.
///
/// # Safety
/// `sub` is NULL or a live subscription handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_subscription_free(sub: *mut weft_subscription) {
    // SAFETY: the caller's contract is `free_handle`'s.
    unsafe { free_handle(sub) }
}

/// A gateway between a multicast stream and a local shared-memory ring; it
/// runs on the node's agents (or in `weft_node_do_work`).
#[derive(Debug)]
pub struct weft_gateway {
    _gateway: weft::Gateway,
}

/// The common part of the two gateway constructors: `from` is checked as
/// `open_handle` checks a URI, `to` before it.
///
/// # Safety
/// As [`weft_gateway_in_new`].
unsafe fn open_gateway(
    node: *mut weft_node,
    from: *const c_char,
    to: *const c_char,
    out: *mut *mut weft_gateway,
    open: impl FnOnce(&mut weft::Node, &str, &str) -> Result<weft::Gateway, weft::Error>,
) -> c_int {
    // SAFETY: by the caller's contract.
    let to = match unsafe { str_arg(to, "the second URI") } {
        Ok(t) => t,
        Err(code) => {
            if !out.is_null() {
                // SAFETY: valid by the caller's contract.
                unsafe { *out = std::ptr::null_mut() };
            }
            return code;
        }
    };
    // SAFETY: by the caller's contract (`from` plays the URI).
    unsafe {
        open_handle(node, from, out, |n, from| {
            Ok(weft_gateway {
                _gateway: open(n, from, to)?,
            })
        })
    }
}

/// Starts an inbound gateway: receives `stream` of the multicast channel
/// `udp_uri` once and republishes it into the shared-memory channel
/// `shm_uri`, where any number of local subscribers read it (N local
/// subscribers cost one network receive). Stores the handle in `*out`
/// (NULL on failure); [`weft_gateway_free`] stops it.
///
/// # Safety
/// `node` is a live node handle; `udp_uri` and `shm_uri` NUL-terminated
/// strings; `out` a valid place for a pointer.
#[no_mangle]
pub unsafe extern "C" fn weft_gateway_in_new(
    node: *mut weft_node,
    udp_uri: *const c_char,
    shm_uri: *const c_char,
    stream: u32,
    out: *mut *mut weft_gateway,
) -> c_int {
    // SAFETY: the caller's contract is `open_gateway`'s.
    unsafe {
        open_gateway(node, udp_uri, shm_uri, out, |n, udp, shm| {
            n.gateway_in(udp, shm, stream)
        })
    }
}

/// Starts an outbound gateway: sends what local publishers write to the
/// shared-memory channel `shm_uri` (stream `stream`) out on the multicast
/// channel `udp_uri`. Otherwise as [`weft_gateway_in_new`].
///
/// # Safety
/// As [`weft_gateway_in_new`].
#[no_mangle]
pub unsafe extern "C" fn weft_gateway_out_new(
    node: *mut weft_node,
    shm_uri: *const c_char,
    udp_uri: *const c_char,
    stream: u32,
    out: *mut *mut weft_gateway,
) -> c_int {
    // SAFETY: the caller's contract is `open_gateway`'s.
    unsafe {
        open_gateway(node, shm_uri, udp_uri, out, |n, shm, udp| {
            n.gateway_out(shm, udp, stream)
        })
    }
}

/// Stops the gateway and frees the handle. NULL is a no-op.
///
/// # Safety
/// `gateway` is NULL or a live gateway handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_gateway_free(gateway: *mut weft_gateway) {
    // SAFETY: the caller's contract is `free_handle`'s.
    unsafe { free_handle(gateway) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: weft_last_error never returns NULL and the text lives
        // until this thread's next failing call.
        unsafe { CStr::from_ptr(weft_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let code = guard(|| panic!("boom {}", 7));
        assert_eq!(code, WEFT_ERR_PANIC);
        assert_eq!(last_error(), "weft panicked: boom 7");
    }

    #[test]
    fn flow_errors_have_fixed_messages_and_faults_formatted_ones() {
        assert_eq!(
            publish_code(PublishError::BackPressured),
            WEFT_ERR_BACK_PRESSURED
        );
        assert!(last_error().starts_with("back-pressured"));
        assert_eq!(
            publish_code(PublishError::TooLarge { len: 9, max: 8 }),
            WEFT_ERR_TOO_LARGE
        );
        assert!(last_error().contains("9 bytes"), "{}", last_error());
        // A NUL inside a message cuts it there rather than failing.
        set_text(WEFT_ERR_SHM, "a\0b");
        assert_eq!(last_error(), "a");
    }

    #[test]
    fn every_code_has_a_name() {
        for code in WEFT_ERR_SKIPPED..=WEFT_OK {
            // SAFETY: a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(weft_status_name(code)) };
            assert!(name.to_bytes().starts_with(b"WEFT_"), "{code}");
        }
        // SAFETY: as above.
        assert!(unsafe { CStr::from_ptr(weft_status_name(1)) }.is_empty());
    }
}
