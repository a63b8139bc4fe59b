//! Applying a plan: checks that the nodes are still in the state the plan
//! was made from, asks each node's control ring for the moves in small
//! batches, checks each batch took effect, and records progress so that an
//! interrupted apply resumes (or rolls back) where it stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::assess::instance;
use crate::collect::collect;
use crate::plan::{fnv1a, state_text};

/// A plan file, as `plan --out` writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Format version (1).
    pub version: u32,
    /// Hash of the whole plan, hex.
    pub plan_hash: String,
    /// Hash of the state planned from, hex.
    pub state_hash: String,
    /// The nodes, in the planner's order.
    pub nodes: Vec<PlanNode>,
    /// The state planned from: (node index, task id, agent index) per task.
    pub state: Vec<(u32, u64, u32)>,
    /// The moves, in order.
    pub moves: Vec<PlanMove>,
}

/// A node of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    /// Its process.
    pub pid: u32,
    /// Its counters file.
    pub counters_file: String,
    /// Its control ring.
    pub control_ring: String,
}

/// One move of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanMove {
    /// Index into the plan's nodes.
    pub node: u32,
    /// Its process (for people).
    pub pid: u32,
    /// The task's id in its node.
    pub task_id: u64,
    /// The task's name.
    pub task: String,
    /// Agent it leaves.
    pub from_agent: u32,
    /// Agent it goes to.
    pub to_agent: u32,
    /// Why.
    pub reason: String,
}

/// The state text of a plan's state with its first `applied` moves done
/// (forwards) — what the nodes must show before the next batch.
pub fn expected_state(plan: &PlanFile, applied: usize) -> String {
    let mut state = plan.state.clone();
    for m in &plan.moves[..applied.min(plan.moves.len())] {
        for s in &mut state {
            if s.0 == m.node && s.1 == m.task_id {
                s.2 = m.to_agent;
            }
        }
    }
    state
        .iter()
        .map(|(n, t, a)| format!("{n} {t} {a}\n"))
        .collect()
}

/// What the nodes show now, as the planner's state text; an error if a
/// node of the plan is gone or the node set changed.
fn current_state(dir: &Path, plan: &PlanFile) -> Result<String, String> {
    let mut w = collect(dir, Duration::from_millis(100), Duration::from_millis(50));
    // Only the assignment matters here, as the last sample shows it (a
    // window in which a move took effect is no good for costs, but fine
    // for this).
    w.valid = true;
    let nodes: Vec<(u32, &str)> = w
        .nodes
        .iter()
        .map(|n| (n.pid, n.counters_file.as_str()))
        .collect();
    for n in &plan.nodes {
        if !nodes.contains(&(n.pid, n.counters_file.as_str())) {
            return Err(format!(
                "process {} ({}) is gone: the plan is stale, collect and plan again",
                n.pid, n.counters_file
            ));
        }
    }
    if nodes.len() != plan.nodes.len() {
        return Err(format!(
            "{} weft nodes run now, the plan knew {}: collect and plan again",
            nodes.len(),
            plan.nodes.len()
        ));
    }
    let (inst, _, _) = instance(&[w])?;
    Ok(state_text(&inst))
}

/// Progress of an apply, one JSON line per batch in the progress file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Progress {
    plan_hash: String,
    /// Moves applied (forwards) after this batch.
    applied: usize,
}

fn read_progress(path: &Path, plan: &PlanFile) -> Result<usize, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(0);
    };
    let mut applied = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let p: Progress = serde_json::from_str(line)
            .map_err(|e| format!("{}: not a progress file ({e})", path.display()))?;
        if p.plan_hash != plan.plan_hash {
            return Err(format!(
                "{} records plan {}, not {}: remove it or apply that plan",
                path.display(),
                p.plan_hash,
                plan.plan_hash
            ));
        }
        applied = p.applied;
    }
    Ok(applied)
}

fn write_progress(path: &Path, plan: &PlanFile, applied: usize) -> Result<(), String> {
    use std::io::Write as _;
    let line = serde_json::to_string(&Progress {
        plan_hash: plan.plan_hash.clone(),
        applied,
    })
    .map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions<'a> {
    /// The weft directory.
    pub dir: &'a Path,
    /// Moves per batch.
    pub batch: usize,
    /// Where progress is recorded.
    pub progress: &'a Path,
    /// Undo the moves recorded as applied instead.
    pub rollback: bool,
    /// Do it (otherwise: check and say what would be done).
    pub execute: bool,
    /// Checked between batches: stop when it turns true.
    pub stop: &'a std::sync::atomic::AtomicBool,
    /// Stop after this many batches (a cautious step; run again to go on).
    pub max_batches: Option<usize>,
    /// Counts the moves applied and verified (the tool's own metric).
    pub moves_applied: Option<&'a weft_counters::Counter>,
}

/// Applies `plan` (or rolls it back). Returns what it did, line by line.
pub fn apply(plan: &PlanFile, opts: &ApplyOptions<'_>) -> Result<Vec<String>, String> {
    let mut log = Vec::new();
    let planned = format!("{:016x}", fnv1a(expected_state(plan, 0).as_bytes()));
    if planned != plan.state_hash {
        return Err(format!(
            "the plan's state does not match its hash ({planned} != {}): edited or corrupt",
            plan.state_hash
        ));
    }
    let mut applied = read_progress(opts.progress, plan)?;
    let now = current_state(opts.dir, plan)?;
    if now != expected_state(plan, applied) {
        return Err(format!(
            "the nodes are not in the state the plan expects after {applied} move(s) \
             (state {:016x}, expected {:016x}): nothing moved; collect and plan again",
            fnv1a(now.as_bytes()),
            fnv1a(expected_state(plan, applied).as_bytes())
        ));
    }
    let target = if opts.rollback { 0 } else { plan.moves.len() };
    if applied == target {
        log.push(format!(
            "nothing to do: {applied} of {} move(s) applied",
            plan.moves.len()
        ));
        return Ok(log);
    }
    let mut batches = 0;
    while applied != target {
        if opts.stop.load(std::sync::atomic::Ordering::Relaxed)
            || opts.max_batches.is_some_and(|m| batches >= m)
        {
            log.push(format!(
                "stopped on request after {applied} move(s); run again to resume"
            ));
            return Ok(log);
        }
        // The next batch: forwards from `applied`, or backwards below it.
        let batch: Vec<(usize, u32)> = if opts.rollback {
            (applied.saturating_sub(opts.batch)..applied)
                .rev()
                .map(|i| (i, plan.moves[i].from_agent))
                .collect()
        } else {
            (applied..(applied + opts.batch).min(target))
                .map(|i| (i, plan.moves[i].to_agent))
                .collect()
        };
        for &(i, to) in &batch {
            let m = &plan.moves[i];
            let node = &plan.nodes[m.node as usize];
            log.push(format!(
                "{} task {} ({}) of pid {} to agent {to}",
                if opts.execute { "moving" } else { "would move" },
                m.task_id,
                m.task,
                node.pid
            ));
            if opts.execute {
                weft::control::request_move(
                    opts.dir,
                    &node.control_ring,
                    weft::TaskId(m.task_id),
                    to as usize,
                )
                .map_err(|e| format!("pid {}: {e}", node.pid))?;
            }
        }
        let next = if opts.rollback {
            applied - batch.len()
        } else {
            applied + batch.len()
        };
        if !opts.execute {
            applied = next;
            batches += 1;
            continue;
        }
        // Took effect? The nodes' counters must show exactly the next state.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = current_state(opts.dir, plan)?;
            if now == expected_state(plan, next) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the batch ending at move {next} did not take effect within 10 s \
                     (state {:016x}); progress kept at {applied}",
                    fnv1a(now.as_bytes())
                ));
            }
        }
        if let Some(c) = opts.moves_applied {
            c.add(batch.len() as u64);
        }
        applied = next;
        batches += 1;
        write_progress(opts.progress, plan, applied)?;
        log.push(format!(
            "verified: {applied} of {} move(s) applied",
            plan.moves.len()
        ));
    }
    if !opts.execute {
        log.push("dry run: nothing moved (--execute applies it)".into());
    }
    Ok(log)
}
