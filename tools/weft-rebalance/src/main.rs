//! `weft-rebalance`: how close to saturation each core really is (by weft's
//! own accounting), and which task moves would even it out.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use weft_rebalance::assess::{instance, report_text};
use weft_rebalance::collect::{collect, read_collection};
use weft_rebalance::plan::{plan, Plan, Policy, Verdict};

#[derive(Parser, Debug)]
#[command(
    name = "weft-rebalance",
    about = "Assess weft's core utilization and plan task moves that even it out",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Samples every live weft node in the directory for a window and
    /// appends it to FILE as one JSON line (valid or not, with the reason).
    Collect {
        /// The weft directory. Default: $WEFT_DIR, else /dev/shm/weft-UID (your user id).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Window length, seconds.
        #[arg(long, default_value_t = 10.0)]
        window: f64,
        /// Sampling interval, milliseconds.
        #[arg(long, default_value_t = 100)]
        interval: u64,
        /// Windows to collect one after another (0: until interrupted).
        #[arg(long, default_value_t = 1)]
        windows: u64,
        /// The collection file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Per agent and per core: utilization (mean, p95), headroom, balance
    /// ratio and a verdict, from a collection.
    Report {
        /// A collection file written by `collect`.
        collection: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Carries out a plan through each node's control ring, in batches,
    /// checking each took effect. Dry run unless --execute. Progress goes to
    /// PLAN.progress, so a stopped or interrupted apply resumes (or, with
    /// --rollback, undoes what it did). Ctrl-C stops after the current batch.
    Apply {
        /// A plan file written by `plan --out`.
        plan: PathBuf,
        /// The weft directory. Default: $WEFT_DIR, else /dev/shm/weft-UID (your user id).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Moves per batch.
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Do it.
        #[arg(long)]
        execute: bool,
        /// Undo the moves the progress file records as applied.
        #[arg(long)]
        rollback: bool,
        /// Stop after this many batches (run again to go on).
        #[arg(long)]
        batches: Option<usize>,
    },
    /// Task moves that lower the most loaded core, as a table and a JSON
    /// plan (with the hash of the state it was planned from).
    Plan {
        /// A collection file written by `collect`.
        collection: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where to write the JSON plan.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// The load a core may reach through moves, as a share (0.8 = 80 %).
    #[arg(long, default_value_t = 0.8)]
    capacity: f64,
    /// The most moves a plan may make.
    #[arg(long, default_value_t = 8)]
    budget: usize,
    /// The least improvement of the most loaded core worth moving for, as
    /// a share of a core.
    #[arg(long, default_value_t = 0.05)]
    margin: f64,
    /// Cores no task may move to (comma-separated), besides the kernel's
    /// isolcpus and nohz_full lists.
    #[arg(long, value_delimiter = ',')]
    forbid_cores: Vec<u32>,
    /// Tasks that must stay, as PID:TASK_ID (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pin: Vec<String>,
}

impl PolicyArgs {
    fn policy(&self) -> Result<Policy, String> {
        if !(self.capacity > 0.0 && self.capacity.is_finite()) {
            return Err(format!(
                "--capacity {}: expected a share above 0, e.g. 0.8",
                self.capacity
            ));
        }
        let mut forbidden = self.forbid_cores.clone();
        for list in ["isolated", "nohz_full"] {
            if let Ok(text) = std::fs::read_to_string(format!("/sys/devices/system/cpu/{list}")) {
                forbidden.extend(parse_cpu_list(text.trim()));
            }
        }
        forbidden.sort_unstable();
        forbidden.dedup();
        Ok(Policy {
            capacity: self.capacity,
            move_budget: self.budget,
            forbidden_cores: forbidden,
            margin: self.margin,
        })
    }
}

/// The kernel's CPU list format: `0-3,8,10-11`.
fn parse_cpu_list(text: &str) -> Vec<u32> {
    text.split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?..=b.parse().ok()?).collect::<Vec<u32>>()),
                None => part.parse().ok().map(|c| vec![c]),
            }
        })
        .flatten()
        .collect()
}

fn default_dir() -> PathBuf {
    weft_shm::region::default_dir()
}

/// This tool's own counters file in `dir` (for `weft-stat serve`): the
/// latest balance ratio and the moves applied. `None` (with a warning) if
/// it cannot be made: the tool works without it.
fn own_counters(dir: &Path) -> Option<std::sync::Arc<weft_counters::CountersFile>> {
    let cfg = weft_counters::CountersConfig {
        shm: weft_shm::ShmOptions::in_dir(dir),
        records: 8,
        ..weft_counters::CountersConfig::default()
    };
    weft_counters::CountersFile::create(&cfg, "weft-rebalance")
        .map_err(|e| eprintln!("weft-rebalance: warning: no counters file of its own: {e}"))
        .ok()
}

/// The balance ratio (largest bin load over the mean) of a valid window.
fn balance_ratio(w: &weft_rebalance::collect::Window) -> Option<f64> {
    let (inst, _, _) = instance(std::slice::from_ref(w)).ok()?;
    let p = plan(&inst, &Policy::default()).ok()?;
    let mean = p.loads.iter().map(|l| l.1).sum::<f64>() / p.loads.len().max(1) as f64;
    (mean > 0.0).then(|| p.max_before / mean)
}

fn fail(msg: &str) -> ! {
    eprintln!("weft-rebalance: {msg}");
    std::process::exit(1);
}

/// Plans from a collection under the policy arguments: the plan, with the
/// report's inputs.
fn plan_from(
    collection: &Path,
    args: &PolicyArgs,
) -> (
    Plan,
    Vec<weft_rebalance::assess::NodeRef>,
    Vec<weft_rebalance::assess::AgentLoad>,
    Policy,
) {
    let windows = read_collection(collection).unwrap_or_else(|e| fail(&e));
    let (mut inst, nodes, loads) = instance(&windows).unwrap_or_else(|e| fail(&e));
    let policy = args.policy().unwrap_or_else(|e| fail(&e));
    for p in &args.pin {
        let (pid, id) = p
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u64>().ok()?)))
            .unwrap_or_else(|| fail(&format!("--pin {p}: expected PID:TASK_ID")));
        let mut found = false;
        for t in &mut inst.tasks {
            if nodes[t.node as usize].pid == pid && t.id == id {
                t.pinned = true;
                found = true;
            }
        }
        if !found {
            fail(&format!(
                "--pin {p}: no task {id} in process {pid} in the collection"
            ));
        }
    }
    let plan = plan(&inst, &policy).unwrap_or_else(|e| fail(&e.to_string()));
    (plan, nodes, loads, policy)
}

fn main() {
    match Cli::parse().command {
        Cmd::Collect {
            dir,
            window,
            interval,
            windows,
            out,
        } => {
            if !(window > 0.0 && window.is_finite()) || interval == 0 {
                fail("--window and --interval must be above 0");
            }
            let dir = dir.unwrap_or_else(default_dir);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
            let counters = own_counters(&dir);
            let ratio = counters.as_ref().and_then(|c| {
                c.allocate(
                    weft_counters::types::REBALANCE_BALANCE_RATIO,
                    0,
                    "balance ratio x1000",
                )
                .ok()
            });
            let mut n = 0;
            while windows == 0 || n < windows {
                let w = collect(
                    &dir,
                    Duration::from_secs_f64(window),
                    Duration::from_millis(interval),
                );
                if let (Some(c), Some(r)) = (&ratio, balance_ratio(&w)) {
                    c.set((r * 1000.0).round() as u64);
                }
                let line = serde_json::to_string(&w).unwrap_or_else(|e| fail(&e.to_string()));
                writeln!(file, "{line}")
                    .unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
                eprintln!(
                    "window {}: {} node(s), {} samples, {}",
                    n + 1,
                    w.nodes.len(),
                    w.samples,
                    w.invalid_reason
                        .as_deref()
                        .map_or("valid".to_string(), |r| format!("invalid: {r}"))
                );
                n += 1;
            }
        }
        Cmd::Apply {
            plan,
            dir,
            batch,
            execute,
            rollback,
            batches,
        } => {
            let text = std::fs::read_to_string(&plan)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", plan.display())));
            let file: weft_rebalance::apply::PlanFile =
                serde_json::from_str(&text).unwrap_or_else(|e| {
                    fail(&format!(
                        "{}: not a weft-rebalance plan ({e})",
                        plan.display()
                    ))
                });
            if file.version != 1 {
                fail(&format!(
                    "{}: plan format {}, this tool reads 1",
                    plan.display(),
                    file.version
                ));
            }
            if batch == 0 {
                fail("--batch must be at least 1");
            }
            static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            extern "C" fn on_sigint(_: nix::libc::c_int) {
                STOP.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // SAFETY: the handler only stores to an atomic (async-signal-safe).
            let _ = unsafe {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGINT,
                    nix::sys::signal::SigHandler::Handler(on_sigint),
                )
            };
            let mut progress = plan.clone().into_os_string();
            progress.push(".progress");
            let dir = dir.unwrap_or_else(default_dir);
            let counters = if execute { own_counters(&dir) } else { None };
            let moves_applied = counters.as_ref().and_then(|c| {
                c.allocate(
                    weft_counters::types::REBALANCE_MOVES_APPLIED,
                    0,
                    "moves applied",
                )
                .ok()
            });
            let opts = weft_rebalance::apply::ApplyOptions {
                dir: &dir,
                batch,
                progress: Path::new(&progress),
                rollback,
                execute,
                stop: &STOP,
                max_batches: batches,
                moves_applied: moves_applied.as_ref(),
            };
            match weft_rebalance::apply::apply(&file, &opts) {
                Ok(log) => log.iter().for_each(|l| println!("{l}")),
                Err(e) => fail(&e),
            }
        }
        Cmd::Report { collection, policy } => {
            let (plan, nodes, loads, policy) = plan_from(&collection, &policy);
            print!("{}", report_text(&loads, &nodes, &plan, policy.capacity));
        }
        Cmd::Plan {
            collection,
            policy,
            out,
        } => {
            let (plan, nodes, _, policy) = plan_from(&collection, &policy);
            println!(
                "{:<6} {:>8} {:>6} {:>6}  reason",
                "pid", "task", "from", "to"
            );
            let windows = read_collection(&collection).unwrap_or_else(|e| fail(&e));
            let (inst, _, _) = instance(&windows).unwrap_or_else(|e| fail(&e));
            let mut moves = Vec::new();
            for m in &plan.moves {
                let t = &inst.tasks[m.task];
                let n = &nodes[t.node as usize];
                let (from, to) = (inst.agents[m.from].index, inst.agents[m.to].index);
                println!(
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
            println!();
            println!("{:<34} {:>9} {:>9}", "bin", "before", "after");
            for (bin, before, after) in &plan.loads {
                println!(
                    "{:<34} {:>8.1}% {:>8.1}%",
                    bin.to_string(),
                    before * 100.0,
                    after * 100.0
                );
            }
            println!(
                "largest load {:.1}% → {:.1}%; lower bound max(mean, largest task) {:.1}%; method: {}",
                plan.max_before * 100.0,
                plan.max_after * 100.0,
                plan.lower_bound * 100.0,
                plan.method
            );
            let verdict = match plan.verdict {
                Verdict::Balanced => "balanced".to_string(),
                Verdict::RebalanceRecommended => "rebalance recommended".to_string(),
                Verdict::UnderProvisioned { more_cores } => {
                    format!("under-provisioned: needs {more_cores} more core(s)")
                }
            };
            println!(
                "verdict: {verdict}; plan {:016x} from state {:016x}",
                plan.plan_hash, plan.state_hash
            );
            if let Some(out) = out {
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
                let text =
                    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| fail(&e.to_string()));
                std::fs::write(&out, text + "\n")
                    .unwrap_or_else(|e| fail(&format!("{}: {e}", out.display())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("5"), vec![5]);
    }
}
