//! Process identity and liveness: a pid plus its start time (so a reused pid is not
//! mistaken for the original), and monotonic nanoseconds for heartbeats.
//!
//! Nothing here is on a hot path: a poll never calls it. Reading the clock is a vDSO
//! call (no syscall with the TSC clocksource); the pid probe is one `kill(pid, 0)`
//! and one read of `/proc/<pid>/stat`.

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;

/// Nanoseconds of CLOCK_MONOTONIC: one clock for every process on the host.
/// Under loom it is always 0: models must be deterministic, and the timeouts it
/// drives (eviction, stall probes) are not part of what loom checks.
#[inline]
pub fn now_ns() -> u64 {
    if cfg!(loom) {
        return 0;
    }
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch, for humans reading a header.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A process as recorded in shared memory: pid and start time in clock ticks
/// since boot (field 22 of `/proc/<pid>/stat`), packed into one word so it can be
/// published and read atomically. Zero means "nobody".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks since boot, truncated to 32 bits (0 if unknown).
    pub start: u32,
}

impl ProcessId {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Packs into one word (0 stays "nobody").
    pub fn to_word(self) -> u64 {
        (self.pid as u64) | ((self.start as u64) << 32)
    }

    /// Unpacks a word written by [`ProcessId::to_word`]; `None` for 0.
    pub fn from_word(w: u64) -> Option<Self> {
        (w != 0).then_some(Self {
            pid: w as u32,
            start: (w >> 32) as u32,
        })
    }

    /// Whether this process still runs: the pid exists and (when the start time
    /// is known) started at the recorded time, so a recycled pid reads as dead.
    pub fn is_alive(self) -> bool {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return false;
        }
        match kill(Pid::from_raw(self.pid as i32), None) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(_) => return false,
        }
        match start_time(self.pid) {
            Some(now) if self.start != 0 => now == self.start,
            // A zombie or a /proc we cannot read: trust kill().
            _ => true,
        }
    }
}

/// Start time of `pid` in clock ticks since boot, low 32 bits; `None` if unreadable
/// or the process is a zombie (exited, not yet reaped: as good as dead).
fn start_time(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3; field 22 is the 20th from here.
    fields.nth(18)?.parse::<u64>().ok().map(|t| t as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_round_trips() {
        let me = ProcessId::current();
        assert_ne!(me.start, 0);
        assert!(me.is_alive());
        assert_eq!(ProcessId::from_word(me.to_word()), Some(me));
        assert_eq!(ProcessId::from_word(0), None);
    }

    #[test]
    fn recycled_or_absent_pids_read_as_dead() {
        let me = ProcessId::current();
        assert!(!ProcessId {
            start: me.start.wrapping_add(1),
            ..me
        }
        .is_alive());
        assert!(!ProcessId { pid: 0, start: 0 }.is_alive());
        assert!(!ProcessId {
            pid: u32::MAX,
            start: 0
        }
        .is_alive());
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }
}
