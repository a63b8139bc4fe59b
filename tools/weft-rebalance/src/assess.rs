//! From collected windows to the planner's [`Instance`], and the report's
//! per-core figures.

use serde::Serialize;

use crate::collect::Window;
use crate::plan::{Agent, Bin, Instance, Plan, Task, Verdict};

/// A node of the instance: where to send its moves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeRef {
    /// Its process.
    pub pid: u32,
    /// Its counters file.
    pub counters_file: String,
    /// Its control ring.
    pub control_ring: String,
    /// Its label.
    pub label: String,
}

/// One agent's utilization over the valid windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentLoad {
    /// Its node (index into the nodes).
    pub node: usize,
    /// Its index in the node.
    pub index: u32,
    /// Its core.
    pub core: Option<u32>,
    /// Mean busy share.
    pub mean: f64,
    /// 95th percentile of the per-interval busy share.
    pub p95: f64,
    /// Run-queue delay, ns per second (the latest window), if known.
    pub runq_wait_ns_per_s: Option<f64>,
}

/// The instance to plan from, built from the valid windows: the newest
/// valid window's nodes, agents and assignment; each task's cost averaged
/// over the valid windows that saw it. An error says why nothing is valid.
pub fn instance(windows: &[Window]) -> Result<(Instance, Vec<NodeRef>, Vec<AgentLoad>), String> {
    let valid: Vec<&Window> = windows.iter().filter(|w| w.valid).collect();
    let Some(latest) = valid.last() else {
        let why: Vec<String> = windows
            .iter()
            .filter_map(|w| w.invalid_reason.clone())
            .collect();
        return Err(format!(
            "no valid window to plan from ({} collected): {}",
            windows.len(),
            why.join("; ")
        ));
    };
    let mut inst = Instance::default();
    let mut nodes = Vec::new();
    let mut loads = Vec::new();
    for (n, node) in latest.nodes.iter().enumerate() {
        nodes.push(NodeRef {
            pid: node.pid,
            counters_file: node.counters_file.clone(),
            control_ring: node.control_ring.clone(),
            label: node.label.clone(),
        });
        let first_agent = inst.agents.len();
        for a in &node.agents {
            inst.agents.push(Agent {
                node: n as u32,
                index: a.index,
                core: a.core,
            });
            let mut busy: Vec<f64> = valid
                .iter()
                .flat_map(|w| w.nodes.iter())
                .filter(|m| m.counters_file == node.counters_file && m.pid == node.pid)
                .flat_map(|m| m.agents.iter().filter(|b| b.index == a.index))
                .flat_map(|b| b.busy.iter().copied())
                .collect();
            busy.sort_by(f64::total_cmp);
            let mean = if busy.is_empty() {
                0.0
            } else {
                busy.iter().sum::<f64>() / busy.len() as f64
            };
            let p95 = busy
                .get(((busy.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0);
            loads.push(AgentLoad {
                node: n,
                index: a.index,
                core: a.core,
                mean,
                p95,
                runq_wait_ns_per_s: a.runq_wait_ns_per_s,
            });
        }
        for t in &node.tasks {
            let Some(agent) = node.agents.iter().position(|a| a.index == t.agent) else {
                return Err(format!(
                    "{}: task {} ({}) runs on agent {}, which the window does not list",
                    node.counters_file, t.id, t.name, t.agent
                ));
            };
            let costs: Vec<f64> = valid
                .iter()
                .flat_map(|w| w.nodes.iter())
                .filter(|m| m.counters_file == node.counters_file && m.pid == node.pid)
                .flat_map(|m| m.tasks.iter().filter(|u| u.id == t.id))
                .map(|u| u.cost)
                .collect();
            inst.tasks.push(Task {
                node: n as u32,
                id: t.id,
                name: t.name.clone(),
                agent: first_agent + agent,
                cost: costs.iter().sum::<f64>() / costs.len().max(1) as f64,
                pinned: false,
            });
        }
    }
    Ok((inst, nodes, loads))
}

/// The report's text: per agent, per bin, the balance ratio and the verdict.
pub fn report_text(loads: &[AgentLoad], nodes: &[NodeRef], plan: &Plan, capacity: f64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:>6} {:>8} {:>8} {:>12}",
        "agent", "core", "mean", "p95", "runq us/s"
    );
    for a in loads {
        let n = &nodes[a.node];
        let _ = writeln!(
            s,
            "{:<28} {:>6} {:>7.1}% {:>7.1}% {:>12}",
            format!("{} (pid {}) agent {}", n.label, n.pid, a.index),
            a.core.map_or("-".into(), |c| c.to_string()),
            a.mean * 100.0,
            a.p95 * 100.0,
            a.runq_wait_ns_per_s
                .map_or("-".into(), |w| format!("{:.1}", w / 1e3)),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<34} {:>9} {:>9} {:>10}",
        "bin (tasks' load)", "now", "p95", "headroom"
    );
    for (bin, before, _) in &plan.loads {
        let p95: f64 = loads
            .iter()
            .filter(|a| match bin {
                Bin::Core(c) => a.core == Some(*c),
                Bin::Unpinned(n, i) => a.core.is_none() && a.node == *n as usize && a.index == *i,
            })
            .map(|a| a.p95)
            .sum();
        let _ = writeln!(
            s,
            "{:<34} {:>8.1}% {:>8.1}% {:>9.1}%",
            bin.to_string(),
            before * 100.0,
            p95 * 100.0,
            (capacity - p95.max(*before)) * 100.0
        );
    }
    let bins = plan.loads.len().max(1) as f64;
    let mean = plan.loads.iter().map(|l| l.1).sum::<f64>() / bins;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "largest load {:.1}%, mean {:.1}%, balance ratio (max / mean) {}",
        plan.max_before * 100.0,
        mean * 100.0,
        if mean > 0.0 {
            format!("{:.2}", plan.max_before / mean)
        } else {
            "-".into()
        }
    );
    let _ = writeln!(
        s,
        "verdict: {}",
        match &plan.verdict {
            Verdict::Balanced => "balanced".to_string(),
            Verdict::RebalanceRecommended => format!(
                "rebalance recommended: {} move(s) take the largest load from {:.1}% to {:.1}% (lower bound {:.1}%)",
                plan.moves.len(),
                plan.max_before * 100.0,
                plan.max_after * 100.0,
                plan.lower_bound * 100.0
            ),
            Verdict::UnderProvisioned { more_cores } => format!(
                "under-provisioned: needs {more_cores} more core(s) at the capacity threshold of {:.0}%",
                capacity * 100.0
            ),
        }
    );
    s
}
