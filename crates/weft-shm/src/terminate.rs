//! `SIGTERM` and `SIGINT` as a clean exit, as far as files go.
//!
//! A process killed by `SIGTERM` (a service manager stopping it) or `SIGINT`
//! (Ctrl-C) runs no destructors, so every file weft would have removed on a
//! clean close (the rings it created, its control ring) stayed behind, and
//! its counters file read as a crash. With [`install`] (the `weft` node does
//! it unless told not to), a handler does what a clean close does to files,
//! then lets the signal kill the process as it would have:
//!
//! - every registered file ([`remove_on_exit`]: each region created with
//!   [`ShmOptions::remove_on_drop`](crate::ShmOptions::remove_on_drop)) is
//!   unlinked;
//! - every registered word ([`stamp_on_exit`]: a counters file's "closed at")
//!   gets the wall-clock time, so tools show the process as closed, not
//!   crashed, and keep its last values for the linger time;
//! - the signal's previous disposition is restored and the signal raised
//!   again: the exit status still says "killed by SIGTERM".
//!
//! What it cannot do from a signal handler: flush UDP data not yet sent or
//! acknowledged (that needs the agents to run). An application that must
//! deliver everything on `SIGTERM` handles the signal itself and calls
//! `Node::close`; when the application already has a handler, [`install`]
//! leaves it alone.
//!
//! The handler is async-signal-safe: atomic loads and stores,
//! `clock_gettime`, `unlinkat`, `sigaction` and `raise`. The tables are
//! fixed arrays: registering costs no allocation and the handler takes no
//! lock.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Once;

use nix::libc;

/// Files that can be registered at once; more are removed on a clean close
/// only (and counted in [`unregistered`]).
const FILES: usize = 1024;
/// Longest file name registered (region names are at most 200 bytes, plus
/// the stream suffix).
const NAME_LEN: usize = 248;
/// Words that can be registered at once.
const WORDS: usize = 64;

struct FileSlot {
    /// 0 free, 1 being filled, 2 live.
    state: AtomicU8,
    dirfd: AtomicI32,
    name: [AtomicU8; NAME_LEN],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU8 = AtomicU8::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const FREE_FILE: FileSlot = FileSlot {
    state: AtomicU8::new(0),
    dirfd: AtomicI32::new(-1),
    name: [ZERO; NAME_LEN],
};
#[allow(clippy::declare_interior_mutable_const)]
const FREE_WORD: AtomicUsize = AtomicUsize::new(0);

static FILE_TABLE: [FileSlot; FILES] = [FREE_FILE; FILES];
/// Addresses of `AtomicU64`s to stamp; 0 = free.
static WORD_TABLE: [AtomicUsize; WORDS] = [FREE_WORD; WORDS];
static UNREGISTERED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
/// The dispositions before ours (SIGTERM, SIGINT), restored before the
/// signal is raised again.
static mut PREVIOUS: [Option<libc::sigaction>; 2] = [None, None];
const SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// A registered file; unregisters on drop (or [`FileGuard::disarm`]).
#[derive(Debug)]
pub struct FileGuard {
    slot: Option<usize>,
    armed: std::sync::atomic::AtomicBool,
}

impl FileGuard {
    /// Unregisters now: the file is no longer removed on a terminating
    /// signal (it is to outlive the process). Once; later calls do nothing.
    pub fn disarm(&self) {
        if let Some(i) = self.slot {
            if self.armed.swap(false, Ordering::AcqRel) {
                FILE_TABLE[i].state.store(0, Ordering::Release);
            }
        }
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// A registered word; unregisters on drop.
#[derive(Debug)]
pub struct WordGuard {
    slot: Option<usize>,
}

impl Drop for WordGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            WORD_TABLE[i].store(0, Ordering::Release);
        }
    }
}

/// Registers file `name` in the directory open as `dirfd`, to be unlinked
/// if the process is terminated by `SIGTERM` or `SIGINT` while the guard
/// lives. The caller keeps `dirfd` open for as long as the guard lives.
pub fn remove_on_exit(dirfd: RawFd, name: &str) -> FileGuard {
    let bytes = name.as_bytes();
    if bytes.len() >= NAME_LEN || bytes.contains(&0) {
        UNREGISTERED.fetch_add(1, Ordering::Relaxed);
        return FileGuard {
            slot: None,
            armed: false.into(),
        };
    }
    for (i, s) in FILE_TABLE.iter().enumerate() {
        if s.state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            s.dirfd.store(dirfd, Ordering::Relaxed);
            for (k, b) in s.name.iter().enumerate() {
                b.store(bytes.get(k).copied().unwrap_or(0), Ordering::Relaxed);
            }
            // SYNC POINT: pairs with the handler's Acquire load of `state`.
            s.state.store(2, Ordering::Release);
            return FileGuard {
                slot: Some(i),
                armed: true.into(),
            };
        }
    }
    UNREGISTERED.fetch_add(1, Ordering::Relaxed);
    FileGuard {
        slot: None,
        armed: false.into(),
    }
}

/// Registers `word` to be stamped with the wall-clock time (ns since the
/// Unix epoch) if the process is terminated by `SIGTERM` or `SIGINT` while
/// the guard lives.
///
/// # Safety
///
/// `word` must stay valid (mapped) for as long as the guard lives: drop the
/// guard before the memory goes.
pub unsafe fn stamp_on_exit(word: &AtomicU64) -> WordGuard {
    let addr = word as *const AtomicU64 as usize;
    for (i, s) in WORD_TABLE.iter().enumerate() {
        if s.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return WordGuard { slot: Some(i) };
        }
    }
    UNREGISTERED.fetch_add(1, Ordering::Relaxed);
    WordGuard { slot: None }
}

/// Registrations refused because a table was full (or a name too long):
/// those files and words are handled on a clean close only.
pub fn unregistered() -> usize {
    UNREGISTERED.load(Ordering::Relaxed)
}

/// Installs the handler for `SIGTERM` and `SIGINT`, once per process, for
/// each signal whose disposition is still the default (an application's
/// own handler, or `SIG_IGN`, is left alone). Returns whether weft's
/// handler is in place for `SIGTERM`.
pub fn install() -> bool {
    INSTALL.call_once(|| {
        for (k, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: a zeroed sigaction is a valid value to fill in; a null
            // new action only reads the current one. `handler` has the
            // plain-handler signature. PREVIOUS is written once, here, under
            // `Once`, before our handler can run for this signal.
            unsafe {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut current) != 0
                    || current.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as *const () as usize;
                sa.sa_flags = libc::SA_RESETHAND;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) == 0 {
                    PREVIOUS[k] = Some(old);
                }
            }
        }
    });
    // SAFETY: written only inside the `Once` above, which has completed.
    unsafe { std::ptr::addr_of!(PREVIOUS).read()[0].is_some() }
}

extern "C" fn handler(sig: libc::c_int) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let now = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
        .max(1);
    for w in WORD_TABLE.iter() {
        let addr = w.load(Ordering::Acquire);
        if addr != 0 {
            // SAFETY: a registered word stays mapped while registered
            // (`stamp_on_exit`'s contract).
            unsafe { (*(addr as *const AtomicU64)).store(now, Ordering::Release) };
        }
    }
    for s in FILE_TABLE.iter() {
        // SYNC POINT: pairs with the Release store in `remove_on_exit`.
        if s.state.load(Ordering::Acquire) != 2 {
            continue;
        }
        let mut name = [0u8; NAME_LEN];
        for (d, b) in name.iter_mut().zip(s.name.iter()) {
            *d = b.load(Ordering::Relaxed);
        }
        name[NAME_LEN - 1] = 0;
        // SAFETY: `name` is NUL-terminated; unlinkat is async-signal-safe.
        // A stale fd (a guard dropped meanwhile) fails harmlessly or names
        // the same directory.
        unsafe { libc::unlinkat(s.dirfd.load(Ordering::Relaxed), name.as_ptr().cast(), 0) };
    }
    // SA_RESETHAND restored the default; put back what was there before
    // (the default, since we only install over it) and raise again, so the
    // process ends as the signal says.
    let k = usize::from(sig != libc::SIGTERM);
    // SAFETY: PREVIOUS was written before the handler was installed;
    // sigaction and raise are async-signal-safe.
    unsafe {
        if let Some(old) = std::ptr::addr_of!(PREVIOUS).read()[k] {
            libc::sigaction(sig, &old, std::ptr::null_mut());
        }
        libc::raise(sig);
    }
}
