//! An eventfd that wakes a parked agent: the only way a publishing thread can
//! end an agent's `ppoll` early. Rung only when the agent says it is parked
//! (see [`crate::agent`]), so a busy agent costs a publisher no syscall.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking eventfd.
#[derive(Debug)]
pub(crate) struct Doorbell(OwnedFd);

impl Doorbell {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable (one `write` syscall). A full counter (which
    /// takes 2^64 - 2 rings) only means it is readable already.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd this struct owns.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets it to unreadable (one `read` syscall).
    pub(crate) fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from an fd this struct owns.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Doorbells for the subscriptions reading one in-process ring: the task that
/// fills the ring rings the ones whose subscription is parked. One slot per
/// possible subscription, allocated when the ring is.
#[derive(Debug)]
pub(crate) struct ReaderBells {
    slots: Box<[ReaderSlot]>,
}

#[derive(Debug, Default)]
struct ReaderSlot {
    taken: std::sync::atomic::AtomicBool,
    parked: std::sync::atomic::AtomicBool,
    bell: std::sync::OnceLock<Doorbell>,
}

impl ReaderBells {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| ReaderSlot::default()).collect(),
        }
    }

    /// Takes a free slot (creating its eventfd the first time); `None` if all
    /// are taken or no eventfd could be made (the subscription then parks by
    /// sleeping).
    pub(crate) fn take(&self) -> Option<usize> {
        use std::sync::atomic::Ordering;
        for (i, s) in self.slots.iter().enumerate() {
            if s.taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if s.bell.get().is_none() {
                    match Doorbell::new() {
                        Ok(b) => {
                            let _ = s.bell.set(b);
                        }
                        Err(_) => {
                            s.taken.store(false, Ordering::Release);
                            return None;
                        }
                    }
                }
                return Some(i);
            }
        }
        None
    }

    pub(crate) fn release(&self, i: usize) {
        self.slots[i]
            .taken
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Rings every parked reader. A fence and one load per slot; a syscall per
    /// parked reader only.
    #[inline]
    pub(crate) fn wake(&self) {
        use std::sync::atomic::Ordering;
        // SYNC POINT: pairs with the fence in `park`: either the reader's check
        // after announcing sees what we published, or we see it parked.
        std::sync::atomic::fence(Ordering::SeqCst);
        for s in self.slots.iter() {
            if s.parked.load(Ordering::Relaxed) {
                if let Some(b) = s.bell.get() {
                    b.ring();
                }
            }
        }
    }

    /// Parks reader `i` for at most `timeout`, unless `ready()` says there is
    /// something to read once it has announced itself.
    pub(crate) fn park(&self, i: usize, timeout: std::time::Duration, ready: impl Fn() -> bool) {
        use std::sync::atomic::Ordering;
        let s = &self.slots[i];
        let Some(bell) = s.bell.get() else {
            std::thread::sleep(timeout);
            return;
        };
        s.parked.store(true, Ordering::Relaxed);
        // SYNC POINT: pairs with the fence in `wake`.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !ready() {
            let mut fd = libc::pollfd {
                fd: bell.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: one live pollfd and timespec on this stack frame; the fd
            // is owned by `bell`, borrowed for the call.
            let r = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
            if r > 0 {
                bell.drain();
            }
        }
        s.parked.store(false, Ordering::Relaxed);
    }
}
