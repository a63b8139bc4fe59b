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

    /// Whether this process still runs: the pid exists, is not a zombie
    /// (exited or killed, not yet reaped by its parent), and (when the start
    /// time is known) started at the recorded time, so a recycled pid reads as
    /// dead. A zombie holds no memory and runs no code, so a peer waiting on
    /// it would wait until some parent reaps it, which may be never (a parent
    /// that does not `wait`, a container's PID 1).
    pub fn is_alive(self) -> bool {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return false;
        }
        match kill(Pid::from_raw(self.pid as i32), None) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(_) => return false,
        }
        match stat_of(self.pid) {
            Some(Stat::Exited) => false,
            Some(Stat::Running { start }) => self.start == 0 || start == self.start,
            // A /proc we cannot read (another pid namespace, hidepid): trust kill().
            None => true,
        }
    }
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stat {
    /// A zombie (`Z`) or dead (`X`): exited, whatever its parent does.
    Exited,
    /// Anything else, with its start time in clock ticks since boot, low 32 bits.
    Running { start: u32 },
}

/// Parses `/proc/<pid>/stat`; `None` if unreadable or not in the expected shape.
fn stat_of(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may contain spaces and ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" || state == "x" {
        return Some(Stat::Exited);
    }
    // `rest` starts at field 3; field 22 is the 20th from here.
    let start = fields.nth(18)?.parse::<u64>().ok()? as u32;
    Some(Stat::Running { start })
}

/// Start time of `pid` in clock ticks since boot, low 32 bits; `None` if unreadable
/// or the process has exited (a zombie: as good as dead).
fn start_time(pid: u32) -> Option<u32> {
    match stat_of(pid)? {
        Stat::Running { start } => Some(start),
        Stat::Exited => None,
    }
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

    /// A child killed and not yet reaped is a zombie: `kill(pid, 0)` still
    /// succeeds, but it is dead. (Failed before: a zombie read as alive until
    /// its parent reaped it.)
    #[test]
    fn a_killed_unreaped_child_reads_as_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let id = ProcessId {
            pid,
            start: start_time(pid).expect("a running child has a start time"),
        };
        assert!(id.is_alive());
        child.kill().expect("kill");
        // Not reaped: wait until the kernel has made it a zombie.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stat_of(pid) != Some(Stat::Exited) {
            assert!(std::time::Instant::now() < until, "never became a zombie");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            kill(Pid::from_raw(pid as i32), None).is_ok(),
            "the pid still exists"
        );
        assert!(!id.is_alive(), "a zombie is dead");
        assert!(
            !ProcessId { pid, start: 0 }.is_alive(),
            "also without a start time"
        );
        child.wait().expect("reap");
    }

    #[test]
    fn stat_lines_parse_including_odd_command_names() {
        let line = |name: &str, state: &str| {
            format!("42 ({name}) {state} 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 19 20")
        };
        assert_eq!(
            parse_stat(&line("a b) c", "S")),
            Some(Stat::Running { start: 12345 })
        );
        assert_eq!(parse_stat(&line("x", "Z")), Some(Stat::Exited));
        assert_eq!(parse_stat(&line("x", "X")), Some(Stat::Exited));
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("42 (x)"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }
}
