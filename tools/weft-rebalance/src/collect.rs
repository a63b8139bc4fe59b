//! Collecting utilization: samples every live weft node's counters (and its
//! agents' scheduler statistics) over a window, and sums them up as a
//! [`Window`]: what `report` and `plan` work from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_counters::{scan, types, CountersReader, ProcessState};

/// The fewest samples a valid window has.
pub const MIN_SAMPLES: usize = 5;
/// The share of samples a node must appear in for the window to be valid.
pub const MIN_COVERAGE: f64 = 0.9;

/// One collected window. One JSON line in a collection file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Format version (1).
    pub version: u32,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Length, ms.
    pub window_ms: u64,
    /// Samples taken.
    pub samples: usize,
    /// The weft directory sampled.
    pub dir: PathBuf,
    /// Whether it may be planned from.
    pub valid: bool,
    /// Why not, if not.
    pub invalid_reason: Option<String>,
    /// Every node seen.
    pub nodes: Vec<NodeWindow>,
}

/// One node (a counters file) over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeWindow {
    /// Its process.
    pub pid: u32,
    /// Its counters file, `counters.PID.N`.
    pub counters_file: String,
    /// Its control ring, `control.PID.N` (the same N).
    pub control_ring: String,
    /// The process's label.
    pub label: String,
    /// Samples it appeared in.
    pub samples: usize,
    /// Its agents.
    pub agents: Vec<AgentWindow>,
    /// Its tasks.
    pub tasks: Vec<TaskWindow>,
}

/// One agent over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentWindow {
    /// Its index in the node.
    pub index: u32,
    /// The core it is pinned to.
    pub core: Option<u32>,
    /// The Linux thread running it (0: unknown).
    pub thread: u64,
    /// Busy share of wall time, per sampling interval.
    pub busy: Vec<f64>,
    /// Nanoseconds per second its thread waited for a CPU (run-queue delay,
    /// from `/proc/PID/task/TID/schedstat`); `None` if unreadable.
    pub runq_wait_ns_per_s: Option<f64>,
}

/// One task over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskWindow {
    /// Its id in the node.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The agent it ran on (at the end of the window).
    pub agent: u32,
    /// Share of a core its work took, over the whole window.
    pub cost: f64,
    /// Work items per second.
    pub work_per_s: f64,
}

/// What one read of one counters file gives.
#[derive(Clone, Debug, Default)]
struct Sample {
    at: Option<Instant>,
    /// Agent index → (busy ns, core + 1, thread).
    agents: BTreeMap<u64, (u64, u64, u64)>,
    /// Task id → (busy ns, work, agent, name).
    tasks: BTreeMap<u64, (u64, u64, u64, String)>,
    /// Agent index → run-queue wait ns.
    waits: BTreeMap<u64, u64>,
}

fn read(reader: &CountersReader, pid: u32) -> Sample {
    let mut s = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    for c in reader.counters() {
        match c.type_id {
            types::AGENT_BUSY_NS => s.agents.entry(c.key).or_default().0 = c.value,
            types::AGENT_CORE => s.agents.entry(c.key).or_default().1 = c.value,
            types::AGENT_THREAD => s.agents.entry(c.key).or_default().2 = c.value,
            types::TASK_BUSY_NS | types::TASK_WORK | types::TASK_AGENT => {
                let e = s.tasks.entry(c.key).or_default();
                let value = match c.type_id {
                    types::TASK_BUSY_NS => &mut e.0,
                    types::TASK_WORK => &mut e.1,
                    _ => &mut e.2,
                };
                *value = c.value;
                if e.3.is_empty() {
                    e.3 = types::subject(c.type_id, &c.label).to_string();
                }
            }
            _ => {}
        }
    }
    for (&i, &(_, _, tid)) in &s.agents {
        if let Some(w) = runq_wait_ns(pid, tid) {
            s.waits.insert(i, w);
        }
    }
    s
}

/// A thread's total run-queue wait (ns): the second field of its schedstat.
fn runq_wait_ns(pid: u32, tid: u64) -> Option<u64> {
    if tid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Samples every live node in `dir` every `interval` for `window`.
pub fn collect(dir: &Path, window: Duration, interval: Duration) -> Window {
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let start = Instant::now();
    // Counters file → its samples (None where it was absent).
    let mut seen: BTreeMap<PathBuf, (u32, String, Vec<Option<Sample>>)> = BTreeMap::new();
    let mut samples = 0;
    loop {
        let round = samples;
        for (path, reader) in scan(dir) {
            let Ok(reader) = reader else { continue };
            let pid = reader.pid();
            // Not a node: this tool's own counters.
            if reader.process_state() != ProcessState::Alive || pid == std::process::id() {
                continue;
            }
            let e = seen
                .entry(path)
                .or_insert_with(|| (pid, reader.process_label(), Vec::new()));
            e.2.resize_with(round, || None);
            e.2.push(Some(read(&reader, pid)));
        }
        samples += 1;
        if start.elapsed() >= window {
            break;
        }
        std::thread::sleep(interval);
    }
    for e in seen.values_mut() {
        e.2.resize_with(samples, || None);
    }
    summarise(dir, started_unix_ms, start.elapsed(), samples, seen)
}

fn summarise(
    dir: &Path,
    started_unix_ms: u64,
    elapsed: Duration,
    samples: usize,
    seen: BTreeMap<PathBuf, (u32, String, Vec<Option<Sample>>)>,
) -> Window {
    let mut reasons = Vec::new();
    if samples < MIN_SAMPLES {
        reasons.push(format!("{samples} samples, at least {MIN_SAMPLES} needed"));
    }
    let mut nodes = Vec::new();
    for (path, (pid, label, series)) in seen {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let control_ring = file.replacen("counters.", "control.", 1);
        let present: Vec<&Sample> = series.iter().flatten().collect();
        if (present.len() as f64) < MIN_COVERAGE * samples as f64 {
            reasons.push(format!(
                "{file} (pid {pid}) was there for {} of {samples} samples",
                present.len()
            ));
        }
        let (Some(first), Some(last)) = (present.first(), present.last()) else {
            continue;
        };
        let wall = |a: &Sample, b: &Sample| match (a.at, b.at) {
            (Some(x), Some(y)) => y.duration_since(x).as_nanos() as f64,
            _ => 0.0,
        };
        let total_ns = wall(first, last);
        let agents = last
            .agents
            .iter()
            .map(|(&i, &(_, core, thread))| {
                let busy = present
                    .windows(2)
                    .filter_map(|w| {
                        let (a, b) = (w[0].agents.get(&i)?, w[1].agents.get(&i)?);
                        let ns = wall(w[0], w[1]);
                        (ns > 0.0).then(|| b.0.saturating_sub(a.0) as f64 / ns)
                    })
                    .collect();
                let runq = match (first.waits.get(&i), last.waits.get(&i)) {
                    (Some(a), Some(b)) if total_ns > 0.0 => {
                        Some(b.saturating_sub(*a) as f64 / total_ns * 1e9)
                    }
                    _ => None,
                };
                AgentWindow {
                    index: i as u32,
                    core: core.checked_sub(1).map(|c| c as u32),
                    thread,
                    busy,
                    runq_wait_ns_per_s: runq,
                }
            })
            .collect();
        let mut tasks = Vec::new();
        for (&id, (busy, work, agent, name)) in &last.tasks {
            let Some(f) = first.tasks.get(&id) else {
                reasons.push(format!(
                    "{file}: task {id} ({name}) started during the window"
                ));
                continue;
            };
            if present
                .iter()
                .any(|s| s.tasks.get(&id).is_some_and(|t| t.2 != *agent))
            {
                reasons.push(format!(
                    "{file}: task {id} ({name}) moved during the window"
                ));
            }
            let secs = total_ns / 1e9;
            tasks.push(TaskWindow {
                id,
                name: name.clone(),
                agent: *agent as u32,
                cost: if total_ns > 0.0 {
                    busy.saturating_sub(f.0) as f64 / total_ns
                } else {
                    0.0
                },
                work_per_s: if secs > 0.0 {
                    work.saturating_sub(f.1) as f64 / secs
                } else {
                    0.0
                },
            });
        }
        nodes.push(NodeWindow {
            pid,
            counters_file: file,
            control_ring,
            label,
            samples: present.len(),
            agents,
            tasks,
        });
    }
    if nodes.is_empty() {
        reasons.push(format!("no live weft node in {}", dir.display()));
    }
    Window {
        version: 1,
        started_unix_ms,
        window_ms: elapsed.as_millis() as u64,
        samples,
        dir: dir.to_owned(),
        valid: reasons.is_empty(),
        invalid_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        nodes,
    }
}

/// Reads a collection file (one window per line). Errors name the line.
pub fn read_collection(path: &Path) -> Result<Vec<Window>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let w: Window = serde_json::from_str(line).map_err(|e| {
            format!(
                "{} line {}: not a weft-rebalance window ({e}); truncated or foreign?",
                path.display(),
                i + 1
            )
        })?;
        if w.version != 1 {
            return Err(format!(
                "{} line {}: format version {}, this tool reads 1",
                path.display(),
                i + 1,
                w.version
            ));
        }
        out.push(w);
    }
    if out.is_empty() {
        return Err(format!("{}: empty collection", path.display()));
    }
    Ok(out)
}
