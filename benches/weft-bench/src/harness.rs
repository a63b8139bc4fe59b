//! Noise discipline around every scenario: a short floor probe before and
//! after it (this VM's cross-core floor jumps between two levels for seconds
//! at a time, so each result is compared with its own probes), a repeat when
//! the two probes disagree, and a check that no other process used the CPU
//! meanwhile. Also what every result records: machine, commit, command.

use std::time::Instant;

use crate::clock::Clock;
use crate::report::Outcome;

/// Which floor a scenario is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    /// Cache-line ping-pong between the two pinned cores (`floor-shm`).
    Shm,
    /// Raw UDP ping-pong on loopback (`floor-udp`).
    Udp,
}

impl Floor {
    pub fn name(self) -> &'static str {
        match self {
            Floor::Shm => "floor-shm",
            Floor::Udp => "floor-udp",
        }
    }

    /// A short run of the floor: its p50 in ns.
    pub fn probe(self, clock: Clock) -> u64 {
        let o = match self {
            Floor::Shm => crate::shm::floor(clock, 20_000, PROBE_SHM_SAMPLES, Default::default()),
            Floor::Udp => crate::udp::floor(clock, 1_000, PROBE_UDP_SAMPLES),
        };
        o.latency.map_or(0, |l| l[0])
    }
}

/// Round trips per shared-memory probe, after 20,000 of warm-up (about 10
/// ms; shorter probes read about 10 % above a long floor-shm run).
pub const PROBE_SHM_SAMPLES: u64 = 50_000;
/// Round trips per UDP probe, after 1,000 of warm-up (about 25 ms).
pub const PROBE_UDP_SAMPLES: u64 = 2_000;
/// Probes further apart than this ratio flag the run and repeat it.
pub const PROBE_DISAGREEMENT: f64 = 1.5;
/// Other processes' CPU use, in cores, above which a run is marked busy.
pub const BUSY_CORES: f64 = 0.10;

/// Other processes' CPU below this many clock ticks counts as none.
const MIN_BUSY_TICKS: f64 = 5.0;

/// The floor measured just before and just after one scenario run.
#[derive(Clone, Copy, Debug)]
pub struct Probes {
    pub floor: Floor,
    pub before_ns: u64,
    pub after_ns: u64,
}

impl Probes {
    /// max / min of the two probes (1.0 when they agree).
    pub fn disagreement(&self) -> f64 {
        let (a, b) = (self.before_ns.max(1) as f64, self.after_ns.max(1) as f64);
        a.max(b) / a.min(b)
    }

    pub fn mean_ns(&self) -> f64 {
        (self.before_ns + self.after_ns) as f64 / 2.0
    }
}

/// CPU time, in clock ticks (`USER_HZ`), from `/proc`.
#[derive(Clone, Copy, Debug)]
struct CpuTimes {
    /// Every CPU's non-idle time.
    all_busy: u64,
    /// This process's threads and its waited-for children.
    own: u64,
    at: Instant,
}

impl CpuTimes {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...: processes run in
        // the first three. Interrupt time is left out (a UDP scenario's own
        // loopback traffic lands there), and so is steal (the hypervisor's).
        let processes: u64 = v.iter().take(3).sum();
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start at state.
        let rest = own_stat.rsplit_once(')')?.1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|x| x.parse().ok())
            .collect();
        Some(Self {
            all_busy: processes,
            own: f.iter().sum(),
            at: Instant::now(),
        })
    }

    /// Cores' worth of CPU used by other processes since `self`.
    fn others_since(&self) -> Option<f64> {
        let now = Self::now()?;
        let secs = (now.at - self.at).as_secs_f64();
        if secs < 0.05 {
            return None;
        }
        let others = (now.all_busy - self.all_busy) as f64 - (now.own - self.own) as f64;
        // Ticks are 10 ms: a few of them in a short run say nothing.
        if others < MIN_BUSY_TICKS {
            return Some(0.0);
        }
        Some((others / USER_HZ / secs).max(0.0))
    }
}

/// Clock ticks per second of `/proc/stat`: 100 on every Linux architecture
/// weft supports.
const USER_HZ: f64 = 100.0;

/// Runs `scenario` between two floor probes; repeats it (up to `retries`
/// more times) while the probes disagree by more than
/// [`PROBE_DISAGREEMENT`]. Every outcome carries its probes, the attempt
/// count and other processes' CPU use.
pub fn run_probed(
    clock: Clock,
    floor: Floor,
    retries: u32,
    mut scenario: impl FnMut() -> Vec<Outcome>,
) -> Vec<Outcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let cpu = CpuTimes::now();
        let before = floor.probe(clock);
        let mut out = scenario();
        let after = floor.probe(clock);
        let busy = cpu.and_then(|c| c.others_since());
        let probes = Probes {
            floor,
            before_ns: before,
            after_ns: after,
        };
        let disagree = probes.disagreement() > PROBE_DISAGREEMENT;
        if disagree && attempt <= retries {
            eprintln!(
                "weft-bench: {} probes disagree ({} ns before, {} ns after); repeating",
                floor.name(),
                before,
                after
            );
            continue;
        }
        for o in &mut out {
            o.probes = Some(probes);
            o.attempts = attempt;
            o.busy_other_cores = busy;
            if busy.is_some_and(|b| b > BUSY_CORES) {
                eprintln!(
                    "weft-bench: warning: other processes used {:.2} cores during {}; its numbers are suspect",
                    busy.unwrap_or(0.0),
                    o.scenario
                );
            }
        }
        return out;
    }
}

/// What every result records about where and how it was produced.
#[derive(Clone, Debug)]
pub struct Meta {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub commit: String,
    pub command: String,
}

impl Meta {
    pub fn collect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let command = std::env::args()
            .map(|a| {
                if a.contains(char::is_whitespace) || a.is_empty() {
                    format!("'{a}'")
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            cpu,
            cores,
            kernel,
            commit: git_commit(),
            command,
        }
    }

    pub fn json_fields(&self) -> String {
        format!(
            "\"commit\":{},\"cpu\":{},\"cores\":{},\"kernel\":{},\"command\":{}",
            json_str(&self.commit),
            json_str(&self.cpu),
            self.cores,
            json_str(&self.kernel),
            json_str(&self.command)
        )
    }
}

/// `git rev-parse HEAD` where the harness runs, `-dirty` when tracked files
/// differ from it; "unknown" outside a checkout.
fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head}-dirty")
            } else {
                head
            }
        }
        None => "unknown".into(),
    }
}

pub use weft::weft_counters::json_string as json_str;
