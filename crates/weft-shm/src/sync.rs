//! The one place atomics come from, so that `RUSTFLAGS="--cfg loom"` swaps every
//! shared variable of the ring algorithms for loom's model-checked version
//! (the pattern of crossbeam-utils' `primitive` module).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A value alone in a 128-byte slot, so that two indexes written by different
/// cores never share a cache line. 128 rather than 64 because x86-64's adjacent-line
/// prefetcher pulls lines in pairs (crossbeam-utils `CachePadded` documents why).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> core::ops::Deref for Padded<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A zeroed value of a control structure, built field by field under loom
/// (loom's atomics are not plain memory and cannot be made from zero bytes).
pub(crate) trait Zeroed: Sized {
    /// A value whose every atomic holds zero.
    #[cfg_attr(not(loom), allow(dead_code))] // outside loom, zeroed memory is used as is
    fn zeroed() -> Self;
}

impl Zeroed for AtomicU64 {
    fn zeroed() -> Self {
        AtomicU64::new(0)
    }
}

impl Zeroed for AtomicU32 {
    fn zeroed() -> Self {
        AtomicU32::new(0)
    }
}

impl<T: Zeroed> Zeroed for Padded<T> {
    fn zeroed() -> Self {
        Padded(T::zeroed())
    }
}
