//! A file truncated under its mapping: a typed condition instead of a crash.
//!
//! Touching a page of a shared file mapping that lies beyond the file's end
//! raises `SIGBUS`, which kills the process. Any process that may write the
//! file (its owner: weft's directories are the user's own, see
//! [`crate::region`]) can truncate a live ring's file, by mistake or not.
//! Sealing (`F_SEAL_SHRINK`) would prevent it, but only for memfd regions,
//! which other processes cannot open by name; weft's regions are named
//! files.
//!
//! So every region's mapping is registered here, and a process-wide `SIGBUS`
//! handler, installed when the first region is mapped, looks the faulting
//! address up. Inside a registered mapping it maps private zero pages over
//! the rest of the mapping (`mmap(MAP_FIXED | MAP_ANONYMOUS)`), marks the
//! region truncated, and returns: the faulting access is retried on a zero
//! page and the process goes on. The ring then reads as empty (zero headers),
//! writes go nowhere, and [`Region::truncated`](crate::Region::truncated)
//! says why, so the layer above reports it (weft: the subscription's poll
//! returns an error, the publication refuses with `Closed`, and both log it).
//! A `SIGBUS` anywhere else is passed on to the handler that was there
//! before (by default: the process dies, as it would have).
//!
//! What the handler does is async-signal-safe: atomic loads and stores, one
//! `mmap` system call. The registry is a fixed array, so registering costs no
//! allocation and the handler takes no lock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use nix::libc;

/// Mappings that can be registered at once; a region beyond that works as
/// before (a truncation kills the process) and is counted.
const SLOTS: usize = 4096;

struct Slot {
    /// Start address; 0 = free. Set last (Release) on register.
    start: AtomicUsize,
    len: AtomicUsize,
    truncated: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    truncated: AtomicBool::new(false),
};

static SLOTS_TABLE: [Slot; SLOTS] = [FREE; SLOTS];
/// Registrations refused because every slot was in use.
static UNGUARDED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
/// The `SIGBUS` disposition before ours, to pass foreign faults on to.
static mut PREVIOUS: Option<libc::sigaction> = None;

/// A registered mapping; unregisters on drop (before the mapping goes).
#[derive(Debug)]
pub(crate) struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Whether the file was found truncated under this mapping.
    pub(crate) fn truncated(&self) -> bool {
        self.slot
            .is_some_and(|i| SLOTS_TABLE[i].truncated.load(Ordering::Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            SLOTS_TABLE[i].len.store(0, Ordering::Release);
            SLOTS_TABLE[i].start.store(0, Ordering::Release);
        }
    }
}

/// Registers `len` bytes mapped at `start` (page-aligned), installing the
/// handler the first time.
pub(crate) fn register(start: *mut u8, len: usize) -> Guard {
    INSTALL.call_once(install);
    let start = start as usize;
    for (i, s) in SLOTS_TABLE.iter().enumerate() {
        if s.start.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // Claim the slot with a placeholder, fill it, then publish the start.
        if s.start
            .compare_exchange(0, usize::MAX, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            s.truncated.store(false, Ordering::Relaxed);
            s.len.store(len, Ordering::Relaxed);
            // SYNC POINT: pairs with the handler's Acquire load of `start`.
            s.start.store(start, Ordering::Release);
            return Guard { slot: Some(i) };
        }
    }
    UNGUARDED.fetch_add(1, Ordering::Relaxed);
    Guard { slot: None }
}

fn install() {
    // SAFETY: a zeroed sigaction is a valid value to fill in; `handler` has
    // the signature SA_SIGINFO requires; `sigaction` writes the previous
    // disposition into `old`, which we keep before any SIGBUS can reach the
    // handler (it reads PREVIOUS only after it is set, and it is written
    // once, here, under `Once`).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &sa, &mut old) == 0 {
            PREVIOUS = Some(old);
        }
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers;
    // `si_addr` is the faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in SLOTS_TABLE.iter() {
        // SYNC POINT: pairs with the Release store in `register`.
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX {
            continue;
        }
        let len = s.len.load(Ordering::Relaxed);
        if addr < start || addr >= start + len {
            continue;
        }
        let page = addr & !4095;
        let rest = start + len - page;
        // SAFETY: [page, start + len) lies inside a live mapping of ours (it
        // is unregistered before it is unmapped); replacing it with private
        // zero pages keeps the addresses valid for every reference into it.
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                rest,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            s.truncated.store(true, Ordering::Release);
            return; // the access is retried on the zero page
        }
        break;
    }
    pass_on(sig, info, ctx);
}

/// A SIGBUS that is not ours: as the previous disposition would have it.
fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written once before the handler was installed;
    // restoring the default and returning re-raises the fault with the
    // default action (the faulting instruction runs again).
    unsafe {
        let previous = std::ptr::addr_of!(PREVIOUS).read();
        match previous {
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig);
                }
            }
            _ => {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file mapped, then truncated under the mapping: reading and writing
    /// past its new end no longer kills the process; the guard says why.
    #[test]
    fn a_truncated_mapping_reads_zeros_and_is_flagged() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("weft-sigbus-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&[7u8; 3 * 4096]).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(3 * 4096)
            .map_raw(&f)
            .unwrap();
        let guard = register(map.as_mut_ptr(), 3 * 4096);
        let p = map.as_mut_ptr();
        // SAFETY: inside the 3-page mapping.
        assert_eq!(unsafe { p.add(5000).read_volatile() }, 7);
        assert!(!guard.truncated());
        f.set_len(4096).unwrap();
        // SAFETY: as above; page 0 is still backed by the file.
        unsafe {
            assert_eq!(p.add(100).read_volatile(), 7);
            assert_eq!(p.add(5000).read_volatile(), 0, "a zero page now");
            p.add(9000).write_volatile(1);
            assert_eq!(p.add(9000).read_volatile(), 1);
        }
        assert!(guard.truncated());
        drop(guard);
        drop(map);
        let _ = std::fs::remove_file(&path);
    }
}
