//! Counters through the C ABI: an application's own counters and gauges in
//! its node's counters file (where `weft-stat` reads them, and exports them
//! to Prometheus as `weft_app_total{name=…}` and
//! `weft_app_value{name=…}`), and a read of every counter of the node.

use std::ffi::{c_char, c_int, c_void, CString};

use crate::{
    free_handle, guard, null, set_error, set_fixed, set_text, str_arg, weft_node, WEFT_ERR_INVALID,
    WEFT_OK,
};

/// `weft_counter_new`: a counter, which only grows (`weft_counter_add`).
pub const WEFT_COUNTER_TOTAL: c_int = 0;
/// `weft_counter_new`: a gauge, set to any value (`weft_counter_set`).
pub const WEFT_COUNTER_GAUGE: c_int = 1;

/// An application counter. One thread writes it at a time.
#[derive(Debug)]
pub struct weft_counter {
    counter: weft::weft_counters::Counter,
}

/// One counter of a node, as [`weft_node_counters`] hands it over; the
/// strings are valid only during the callback.
#[repr(C)]
#[derive(Debug)]
pub struct weft_counter_value {
    /// The counter's type id (`weft-stat`'s `type` column).
    pub type_id: u32,
    /// The type's name ("shm_sent_messages", "app_counter" …), or "" for a
    /// type this build does not know.
    pub type_name: *const c_char,
    /// The counter's label ("publication shm:md stream 1 messages" …).
    pub label: *const c_char,
    /// Stream, agent or task id; 0 for per-process and application counters.
    pub key: u64,
    /// The value when read.
    pub value: u64,
}

/// The counters callback: `ctx` is the pointer given to the call. It must
/// not unwind.
pub type weft_counter_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, counter: *const weft_counter_value)>;

/// Makes an application counter (`kind` `WEFT_COUNTER_TOTAL`) or gauge
/// (`WEFT_COUNTER_GAUGE`) labelled `label` in the node's counters file.
/// Set-up, not a hot path (it takes the file's lock). `WEFT_ERR_CONFIG`
/// for an empty label or a full file (raise `counters`); the label is cut
/// to 96 bytes. Free it with [`weft_counter_free`]; it may outlive its node.
///
/// # Safety
/// `node` is a live node handle; `label` a NUL-terminated string; `out` a
/// valid place for a pointer (NULL on failure).
#[no_mangle]
pub unsafe extern "C" fn weft_counter_new(
    node: *mut weft_node,
    label: *const c_char,
    kind: c_int,
    out: *mut *mut weft_counter,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return null("out");
        }
        // SAFETY: valid by the caller's contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: a live handle by the caller's contract.
        let Some(n) = (unsafe { node.as_ref() }) else {
            return null("node");
        };
        // SAFETY: by the caller's contract.
        let label = match unsafe { str_arg(label, "label") } {
            Ok(l) => l,
            Err(code) => return code,
        };
        let gauge = match kind {
            WEFT_COUNTER_TOTAL => false,
            WEFT_COUNTER_GAUGE => true,
            k => {
                return set_text(
                    WEFT_ERR_INVALID,
                    format!("counter kind {k}: expected WEFT_COUNTER_TOTAL or WEFT_COUNTER_GAUGE"),
                )
            }
        };
        match n.node.app_counter(label, gauge) {
            Ok(counter) => {
                // SAFETY: as above.
                unsafe { *out = Box::into_raw(Box::new(weft_counter { counter })) };
                WEFT_OK
            }
            Err(e) => set_error(e),
        }
    })
}

/// Adds `n` to the counter: a load and a store, no lock, no call into the
/// kernel. NULL is a no-op.
///
/// # Safety
/// `counter` is NULL or a live counter handle.
#[no_mangle]
pub unsafe extern "C" fn weft_counter_add(counter: *const weft_counter, n: u64) {
    // SAFETY: by the caller's contract.
    if let Some(c) = unsafe { counter.as_ref() } {
        c.counter.add(n);
    }
}

/// Sets the counter (a gauge's value). NULL is a no-op.
///
/// # Safety
/// `counter` is NULL or a live counter handle.
#[no_mangle]
pub unsafe extern "C" fn weft_counter_set(counter: *const weft_counter, value: u64) {
    // SAFETY: by the caller's contract.
    if let Some(c) = unsafe { counter.as_ref() } {
        c.counter.set(value);
    }
}

/// The counter's value (0 for NULL).
///
/// # Safety
/// `counter` is NULL or a live counter handle.
#[no_mangle]
pub unsafe extern "C" fn weft_counter_get(counter: *const weft_counter) -> u64 {
    // SAFETY: by the caller's contract.
    unsafe { counter.as_ref() }.map_or(0, |c| c.counter.get())
}

/// Frees the counter's record (`weft-stat` stops showing it). NULL is a
/// no-op.
///
/// # Safety
/// `counter` is NULL or a live counter handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn weft_counter_free(counter: *mut weft_counter) {
    // SAFETY: the caller's contract is `free_handle`'s.
    unsafe { free_handle(counter) }
}

/// Hands every live counter of the node's counters file (weft's own and
/// the application's) to `cb`, as `weft-stat` would read them. Returns how
/// many, or `WEFT_ERR_INVALID` when the node keeps no file (`counters =
/// 0`), `WEFT_ERR_SHM` if it cannot be read. Allocates: for monitoring,
/// not the message path.
///
/// # Safety
/// `node` is a live node handle; `cb` is safe to call with `ctx` and does
/// not unwind.
#[no_mangle]
pub unsafe extern "C" fn weft_node_counters(
    node: *mut weft_node,
    cb: weft_counter_fn,
    ctx: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: a live handle by the caller's contract.
        let Some(n) = (unsafe { node.as_ref() }) else {
            return null("node");
        };
        let Some(cb) = cb else {
            return null("cb");
        };
        let Some(path) = n.node.counters().path() else {
            return set_fixed(
                WEFT_ERR_INVALID,
                c"this node keeps no counters file (counters = 0)",
            );
        };
        let reader = match weft::weft_counters::CountersReader::open(path) {
            Ok(r) => r,
            Err(e) => return set_text(crate::WEFT_ERR_SHM, e),
        };
        let values = reader.counters();
        for v in &values {
            let label = CString::new(v.label.replace('\0', "")).unwrap_or_default();
            let type_name = weft::weft_counters::types::name(v.type_id).unwrap_or("");
            let type_name = CString::new(type_name).unwrap_or_default();
            let c = weft_counter_value {
                type_id: v.type_id,
                type_name: type_name.as_ptr(),
                label: label.as_ptr(),
                key: v.key,
                value: v.value,
            };
            // SAFETY: the caller vouches for `cb` and `ctx`; `c` and its
            // strings live until the call returns.
            unsafe { cb(ctx, &c) };
        }
        values.len().min(c_int::MAX as usize) as c_int
    })
}
