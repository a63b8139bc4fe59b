//! From collected windows to the planner's [`Instance`], and the report's
//! per-core figures.

use std::fmt::Write as _;

use serde::Serialize;

use crate::collect::Window;
use crate::plan::{Agent, Bin, Instance, Plan, Policy, Task, Verdict};
use crate::prometheus::HostModel;

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

/// The verdict in words.
pub fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Balanced => "balanced".to_string(),
        Verdict::RebalanceRecommended => "rebalance recommended".to_string(),
        Verdict::UnderProvisioned { more_cores } => {
            format!("under-provisioned: needs {more_cores} more core(s)")
        }
    }
}

/// A plan as a table (moves, each bin before and after, the verdict) and
/// as the JSON document `apply` carries out.
pub fn plan_text(
    inst: &Instance,
    nodes: &[NodeRef],
    plan: &Plan,
    policy: &Policy,
) -> (String, serde_json::Value) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<6} {:>8} {:>6} {:>6}  reason",
        "pid", "task", "from", "to"
    );
    let mut moves = Vec::new();
    for m in &plan.moves {
        let t = &inst.tasks[m.task];
        let n = &nodes[t.node as usize];
        let (from, to) = (inst.agents[m.from].index, inst.agents[m.to].index);
        let _ = writeln!(
            s,
            "{:<6} {:>8} {:>6} {:>6}  {}",
            n.pid, t.id, from, to, m.reason
        );
        moves.push(serde_json::json!({
            "node": t.node,
            "pid": n.pid,
            "task_id": t.id,
            "task": t.name,
            "from_agent": from,
            "to_agent": to,
            "reason": m.reason,
        }));
    }
    let state: Vec<(u32, u64, u32)> = inst
        .tasks
        .iter()
        .map(|t| (t.node, t.id, inst.agents[t.agent].index))
        .collect();
    let _ = writeln!(s);
    let _ = writeln!(s, "{:<34} {:>9} {:>9}", "bin", "before", "after");
    for (bin, before, after) in &plan.loads {
        let _ = writeln!(
            s,
            "{:<34} {:>8.1}% {:>8.1}%",
            bin.to_string(),
            before * 100.0,
            after * 100.0
        );
    }
    let _ = writeln!(
        s,
        "largest load {:.1}% → {:.1}%; lower bound max(mean, largest task) {:.1}%; method: {}",
        plan.max_before * 100.0,
        plan.max_after * 100.0,
        plan.lower_bound * 100.0,
        plan.method
    );
    let verdict = verdict_text(&plan.verdict);
    let _ = writeln!(
        s,
        "verdict: {verdict}; plan {:016x} from state {:016x}",
        plan.plan_hash, plan.state_hash
    );
    let doc = serde_json::json!({
        "version": 1,
        "plan_hash": format!("{:016x}", plan.plan_hash),
        "state_hash": format!("{:016x}", plan.state_hash),
        "method": plan.method,
        "verdict": verdict,
        "max_before": plan.max_before,
        "max_after": plan.max_after,
        "lower_bound": plan.lower_bound,
        "policy": {
            "capacity": policy.capacity,
            "move_budget": policy.move_budget,
            "margin": policy.margin,
            "forbidden_cores": policy.forbidden_cores,
        },
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "pid": n.pid,
            "counters_file": n.counters_file,
            "control_ring": n.control_ring,
        })).collect::<Vec<_>>(),
        "state": state,
        "moves": moves,
    });
    (s, doc)
}

/// Mean, 95th percentile and largest of a list (zeros when empty).
fn summary(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    (v.iter().sum::<f64>() / v.len() as f64, p95, v[v.len() - 1])
}

/// What a host's range showed beside the tasks' load: each core's busy
/// share as the OS saw it, the bursts and headroom of its channels and
/// agents, and the model's notes.
pub fn host_extras_text(m: &HostModel) -> String {
    let mut s = String::new();
    if !m.cores.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<34} {:>9} {:>9} {:>9}",
            "core (the OS: 1 - idle)", "mean", "p95", "max"
        );
        for (cpu, busy) in &m.cores {
            let (mean, p95, max) = summary(busy);
            let _ = writeln!(
                s,
                "{:<34} {:>8.1}% {:>8.1}% {:>8.1}%",
                format!("core {cpu}"),
                mean * 100.0,
                p95 * 100.0,
                max * 100.0
            );
        }
    }
    if !m.bursts.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<60} {:>12} {:>12} {:>9} {:>9}",
            "channel end (bursts of the range)", "peak 1ms/s", "peak 1s/s", "ring max", "headroom"
        );
        for b in &m.bursts {
            let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
            let _ = writeln!(
                s,
                "{:<60} {:>12.0} {:>12.0} {:>9} {:>9}",
                b.end,
                b.peak_1ms,
                b.peak_1s,
                pct(b.fill_high_water),
                pct(b.least_headroom)
            );
        }
    }
    if !m.agent_headroom.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<60} {:>9}",
            "agent (least headroom: 1 - peak duty cycle)", "headroom"
        );
        for (node, pid, agent, name, v) in &m.agent_headroom {
            let _ = writeln!(
                s,
                "{:<60} {:>8.1}%",
                format!("{node} (pid {pid}) agent {agent} {name}"),
                v * 100.0
            );
        }
    }
    if !m.notes.is_empty() {
        let _ = writeln!(s);
        for n in &m.notes {
            let _ = writeln!(s, "note: {n}");
        }
    }
    s
}
