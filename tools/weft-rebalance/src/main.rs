//! `weft-rebalance`: how close to saturation each core really is (by weft's
//! own accounting), and which task moves would even it out.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use weft_rebalance::assess::{
    host_extras_text, instance, plan_text, report_text, verdict_text, AgentLoad, NodeRef,
};
use weft_rebalance::collect::{collect, read_collection, Window};
use weft_rebalance::plan::{plan, Instance, Plan, Policy, Verdict};
use weft_rebalance::prometheus::{self, HostModel};
use weft_rebalance::time::{parse_duration, parse_time, utc};

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
    /// ratio and a verdict, from a collection or, per host, from
    /// Prometheus (with each core's busy share as the OS saw it, the
    /// bursts and the least headroom of the range).
    Report {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// The day's assessment across a fleet, from Prometheus: the report and
    /// the plan of every host written to OUT_DIR/weft-daily-<end>.txt (and
    /// .json, and a plan file per host that has moves, for `apply` there),
    /// and a notification on Redis (exactly once for this range and end).
    /// Run it from cron or a systemd timer.
    Daily {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where the day's files go.
        #[arg(long)]
        out_dir: PathBuf,
        /// Where the notification goes (none without --redis: files only).
        #[command(flatten)]
        redis: weft_notify::RedisArgs,
        /// How long to keep trying Redis before giving up (the files are
        /// written first; running again with the same --end sends it once).
        #[arg(long, default_value = "60s")]
        redis_wait: String,
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
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where to write the JSON plan (from Prometheus: one host's, see --host).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct SourceArgs {
    /// A collection file written by `collect` (or --prometheus).
    collection: Option<PathBuf>,
    /// Build the load model from this Prometheus server's range queries
    /// (http://HOST:PORT), scraping `weft-stat serve` on every host,
    /// instead of a collection file.
    #[arg(long, conflicts_with = "collection")]
    prometheus: Option<String>,
    /// With --prometheus: how far back (24h, 90m, 1d). Default 24h.
    #[arg(long)]
    range: Option<String>,
    /// With --prometheus: one sample a step. Default: the range / 1440
    /// (a minute a step over a day), at least 1 s; at least the scrape
    /// interval.
    #[arg(long)]
    step: Option<String>,
    /// With --prometheus: the end of the range (now, seconds since 1970,
    /// or 2026-12-07T09:00:00Z). Default now.
    #[arg(long)]
    end: Option<String>,
    /// With --prometheus: only this host (Prometheus's instance label).
    #[arg(long)]
    host: Option<String>,
}

/// What a report or a plan is made from: one collection, or a model per
/// host.
enum Models {
    Collection(Vec<Window>),
    Hosts(Vec<HostModel>, prometheus::Source),
}

impl SourceArgs {
    fn prometheus_source(&self) -> Result<Option<prometheus::Source>, String> {
        let Some(url) = &self.prometheus else {
            for (flag, set) in [
                ("--range", self.range.is_some()),
                ("--step", self.step.is_some()),
                ("--end", self.end.is_some()),
                ("--host", self.host.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{flag} reads from Prometheus: give --prometheus URL"
                    ));
                }
            }
            return Ok(None);
        };
        let range = parse_duration(self.range.as_deref().unwrap_or("24h"))
            .map_err(|e| format!("--range {e}"))?;
        let step = match &self.step {
            Some(s) => parse_duration(s).map_err(|e| format!("--step {e}"))?,
            None => (range / 1440).max(Duration::from_secs(1)),
        };
        let end_s =
            parse_time(self.end.as_deref().unwrap_or("now")).map_err(|e| format!("--end {e}"))?;
        Ok(Some(prometheus::Source {
            url: url.clone(),
            range,
            step,
            end_s,
            host: self.host.clone(),
        }))
    }

    fn models(&self) -> Result<Models, String> {
        match self.prometheus_source()? {
            Some(src) => Ok(Models::Hosts(prometheus::fetch(&src)?, src)),
            None => {
                let file = self.collection.as_ref().ok_or(
                    "give a collection file (weft-rebalance collect --out) or --prometheus URL",
                )?;
                Ok(Models::Collection(read_collection(file)?))
            }
        }
    }
}

/// One host's (or the collection's) plan and what the report needs.
struct Assessed {
    title: Option<String>,
    inst: Instance,
    nodes: Vec<NodeRef>,
    loads: Vec<AgentLoad>,
    plan: Plan,
    extras: String,
    host: Option<HostModel>,
}

/// Plans every host of `models` (one for a collection): an error for a
/// collection with nothing valid; a host with nothing valid is reported
/// with its reason and left out of the plans.
fn assess_all(models: Models, args: &PolicyArgs) -> Result<(Vec<Assessed>, Vec<String>), String> {
    let policy = args.policy()?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let one =
        |windows: &[Window]| -> Result<(Instance, Vec<NodeRef>, Vec<AgentLoad>, Plan), String> {
            let (mut inst, nodes, loads) = instance(windows)?;
            pin_tasks(&mut inst, &nodes, &args.pin)?;
            let plan = plan(&inst, &policy).map_err(|e| e.to_string())?;
            Ok((inst, nodes, loads, plan))
        };
    match models {
        Models::Collection(windows) => {
            let (inst, nodes, loads, plan) = one(&windows)?;
            out.push(Assessed {
                title: None,
                inst,
                nodes,
                loads,
                plan,
                extras: String::new(),
                host: None,
            });
        }
        Models::Hosts(hosts, src) => {
            for h in hosts {
                let title = format!(
                    "host {}: {} node(s), {} to {}, a sample every {}s",
                    h.host,
                    h.window.nodes.len(),
                    utc(src.end_s - src.range.as_secs_f64()),
                    utc(src.end_s),
                    src.step.as_secs_f64()
                );
                match one(std::slice::from_ref(&h.window)) {
                    Ok((inst, nodes, loads, plan)) => out.push(Assessed {
                        title: Some(title),
                        inst,
                        nodes,
                        loads,
                        plan,
                        extras: host_extras_text(&h),
                        host: Some(h),
                    }),
                    Err(e) => skipped.push(format!(
                        "{title}: not assessed: {e}\n{}",
                        host_extras_text(&h)
                    )),
                }
            }
            if out.is_empty() && skipped.is_empty() {
                return Err(format!(
                    "Prometheus at {} has no host with weft nodes",
                    src.url
                ));
            }
        }
    }
    Ok((out, skipped))
}

fn pin_tasks(inst: &mut Instance, nodes: &[NodeRef], pins: &[String]) -> Result<(), String> {
    for p in pins {
        let (pid, id) = p
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u64>().ok()?)))
            .ok_or_else(|| format!("--pin {p}: expected PID:TASK_ID"))?;
        let mut found = false;
        for t in &mut inst.tasks {
            if nodes[t.node as usize].pid == pid && t.id == id {
                t.pinned = true;
                found = true;
            }
        }
        if !found {
            return Err(format!(
                "--pin {p}: no task {id} in process {pid} in the collection"
            ));
        }
    }
    Ok(())
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

/// Writes `text` to `path` whole or not at all (a temporary file renamed
/// into place), so a notification never points at half a report.
fn write_whole(path: &Path, text: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn write_plan(path: &Path, doc: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    write_whole(path, &(text + "\n"))
}

/// A host name as part of a file name.
fn file_part(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `daily`: the fleet's assessment written to files, then notified. The
/// summary line on success.
fn daily(
    source: &SourceArgs,
    src: &prometheus::Source,
    args: &PolicyArgs,
    out_dir: &Path,
    target: Option<weft_notify::Target>,
    wait: Duration,
) -> Result<String, String> {
    use std::fmt::Write as _;
    let policy = args.policy()?;
    let hosts = prometheus::fetch(src)?;
    let (assessed, skipped) = assess_all(Models::Hosts(hosts, src.clone()), args)?;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let end = utc(src.end_s);
    let range = source.range.clone().unwrap_or_else(|| "24h".into());
    let base = out_dir.join(format!("weft-daily-{}", end.replace([':', '-'], "")));
    let with = |ext: &str| {
        let mut p = base.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let report_path = with(".txt");
    let mut text = String::new();
    let _ = writeln!(
        text,
        "weft daily assessment: {} host(s), the {range} to {end}, a sample every {}s, from {}",
        assessed.len() + skipped.len(),
        src.step.as_secs_f64(),
        src.url
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "{:<24} {:>5} {:>9} {:>9} {:>7} {:>6} {:>9} {:>12}  verdict",
        "host", "nodes", "largest", "mean", "ratio", "moves", "headroom", "peak 1ms/s"
    );
    let mut hosts_json = Vec::new();
    // The fleet's figures for the notification.
    let mut largest: Option<(f64, String)> = None;
    let mut least_headroom: Option<(f64, String)> = None;
    let (mut to_rebalance, mut under) = (0, 0);
    let mut sections = String::new();
    for a in &assessed {
        let h = a.host.as_ref().map_or("", |h| h.host.as_str());
        let bins = a.plan.loads.len().max(1) as f64;
        let mean = a.plan.loads.iter().map(|l| l.1).sum::<f64>() / bins;
        let ratio = if mean > 0.0 {
            a.plan.max_before / mean
        } else {
            0.0
        };
        let top = a
            .plan
            .loads
            .iter()
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .map_or(String::new(), |l| l.0.to_string());
        if largest.as_ref().is_none_or(|l| a.plan.max_before > l.0) {
            largest = Some((a.plan.max_before, format!("{h} {top}")));
        }
        let bursts = a.host.as_ref().map_or(&[][..], |m| &m.bursts[..]);
        let least = bursts
            .iter()
            .filter_map(|b| Some((b.least_headroom?, b.end.clone())))
            .min_by(|x, y| x.0.total_cmp(&y.0));
        if let Some((v, end)) = &least {
            if least_headroom.as_ref().is_none_or(|l| *v < l.0) {
                least_headroom = Some((*v, format!("{h} {end}")));
            }
        }
        let peak = bursts.iter().map(|b| b.peak_1ms).fold(0.0, f64::max);
        match a.plan.verdict {
            Verdict::RebalanceRecommended => to_rebalance += 1,
            Verdict::UnderProvisioned { .. } => under += 1,
            Verdict::Balanced => {}
        }
        let verdict = verdict_text(&a.plan.verdict);
        let _ = writeln!(
            text,
            "{:<24} {:>5} {:>8.1}% {:>8.1}% {:>7.2} {:>6} {:>9} {:>12.0}  {verdict}",
            h,
            a.nodes.len(),
            a.plan.max_before * 100.0,
            mean * 100.0,
            ratio,
            a.plan.moves.len(),
            least
                .as_ref()
                .map_or("-".into(), |l| format!("{:.1}%", l.0 * 100.0)),
            peak
        );
        let (plan_table, doc) = plan_text(&a.inst, &a.nodes, &a.plan, &policy);
        let plan_file = if a.plan.moves.is_empty() {
            None
        } else {
            let path = with(&format!(".{}.plan.json", file_part(h)));
            write_plan(&path, &doc)?;
            Some(path)
        };
        let _ = writeln!(sections, "== {}\n", a.title.as_deref().unwrap_or(h));
        sections.push_str(&report_text(&a.loads, &a.nodes, &a.plan, policy.capacity));
        sections.push_str(&a.extras);
        let _ = writeln!(sections, "\nthe plan it would apply:\n");
        sections.push_str(&plan_table);
        match &plan_file {
            Some(p) => {
                let _ = writeln!(
                    sections,
                    "plan file: {} (on {h}: weft-rebalance apply {} --dir DIR, then --execute)",
                    p.display(),
                    p.display()
                );
            }
            None => {
                let _ = writeln!(sections, "no moves: no plan file");
            }
        }
        let _ = writeln!(sections);
        hosts_json.push(serde_json::json!({
            "host": h,
            "nodes": a.nodes.len(),
            "largest_load": a.plan.max_before,
            "mean_load": mean,
            "balance_ratio": ratio,
            "verdict": verdict,
            "moves": a.plan.moves.len(),
            "largest_load_after": a.plan.max_after,
            "plan_file": plan_file.as_ref().map(|p| p.display().to_string()),
            "least_channel_headroom": least.as_ref().map(|l| l.0),
            "peak_1ms_messages_per_second": peak,
            "cores": a.host.as_ref().map(|m| m.cores.iter().map(|(c, v)| {
                let n = v.len().max(1) as f64;
                (c.to_string(), v.iter().sum::<f64>() / n)
            }).collect::<BTreeMap<_, _>>()),
            "notes": a.host.as_ref().map_or(Vec::new(), |m| m.notes.clone()),
        }));
    }
    for s in &skipped {
        let first = s.lines().next().unwrap_or("");
        let _ = writeln!(text, "{first}");
        let _ = writeln!(sections, "== {s}");
    }
    let _ = writeln!(text);
    text.push_str(&sections);
    write_whole(&report_path, &text)?;
    let json = serde_json::json!({
        "version": 1,
        "end": end,
        "range_s": src.range.as_secs_f64(),
        "step_s": src.step.as_secs_f64(),
        "prometheus": src.url,
        "report": report_path.display().to_string(),
        "hosts": hosts_json,
        "not_assessed": skipped.iter().map(|s| s.lines().next().unwrap_or("").to_string()).collect::<Vec<_>>(),
    });
    write_whole(
        &with(".json"),
        &(serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n"),
    )?;
    let mut summary = format!(
        "weft daily {end} ({range}): {} host(s)",
        assessed.len() + skipped.len()
    );
    if let Some((v, at)) = &largest {
        let _ = write!(summary, "; largest core load {:.1}% ({at})", v * 100.0);
    }
    let _ = write!(
        summary,
        "; {to_rebalance} to rebalance, {under} under-provisioned"
    );
    if !skipped.is_empty() {
        let _ = write!(summary, ", {} not assessed", skipped.len());
    }
    if let Some((v, at)) = &least_headroom {
        let _ = write!(summary, "; least headroom {:.1}% ({at})", v * 100.0);
    }
    let _ = write!(summary, "; report {}", report_path.display());
    let Some(target) = target else {
        return Ok(summary);
    };
    let warn = to_rebalance + under + skipped.len() > 0
        || least_headroom.as_ref().is_some_and(|l| l.0 < 0.2);
    let identity: BTreeMap<String, String> = [
        ("alertname", "WeftDailyAssessment".to_string()),
        ("range", range.clone()),
        ("end", end.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut labels = identity.clone();
    labels.insert("report".into(), report_path.display().to_string());
    labels.insert(
        "severity".into(),
        if warn { "warning" } else { "info" }.into(),
    );
    let n = weft_notify::Notification {
        status: "report",
        alertname: "WeftDailyAssessment".into(),
        severity: if warn { "warning" } else { "info" }.into(),
        summary: summary.clone(),
        fingerprint: weft_notify::fingerprint(&identity),
        labels,
        value: largest.as_ref().map_or(f64::NAN, |l| l.0),
        group: "alertname=WeftDailyAssessment".into(),
        starts_at_ns: (src.end_s * 1e9) as u64,
        ends_at_ns: 0,
        repeat: 0,
    };
    let mut notifier = weft_notify::Notifier::new(target.clone());
    notifier.push(n);
    let start = std::time::Instant::now();
    loop {
        notifier.flush();
        if notifier.queued() == 0 {
            let how = if notifier.sent == 1 {
                "notified"
            } else {
                "already notified (same --end)"
            };
            return Ok(format!(
                "{summary}; {how} on {} {}",
                target.url, target.stream
            ));
        }
        if start.elapsed() >= wait {
            return Err(format!(
                "the report is written ({}), the notification is not: redis {}: {}; run again with --end {end} to send it (once)",
                report_path.display(),
                target.url,
                notifier.down_since.clone().unwrap_or_else(|| "unreachable".into())
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
        Cmd::Report { source, policy } => {
            let models = source.models().unwrap_or_else(|e| fail(&e));
            let capacity = policy.policy().unwrap_or_else(|e| fail(&e)).capacity;
            let (assessed, skipped) = assess_all(models, &policy).unwrap_or_else(|e| fail(&e));
            for a in &assessed {
                if let Some(t) = &a.title {
                    println!("== {t}\n");
                }
                print!("{}", report_text(&a.loads, &a.nodes, &a.plan, capacity));
                print!("{}", a.extras);
                if a.title.is_some() {
                    println!();
                }
            }
            for s in &skipped {
                println!("== {s}");
            }
        }
        Cmd::Plan {
            source,
            policy,
            out,
        } => {
            let models = source.models().unwrap_or_else(|e| fail(&e));
            let pol = policy.policy().unwrap_or_else(|e| fail(&e));
            let (assessed, skipped) = assess_all(models, &policy).unwrap_or_else(|e| fail(&e));
            if out.is_some() && assessed.len() + skipped.len() > 1 {
                fail(&format!(
                    "--out writes one host's plan and Prometheus has {}: choose one with --host",
                    assessed.len() + skipped.len()
                ));
            }
            for a in &assessed {
                if let Some(t) = &a.title {
                    println!("== {t}\n");
                }
                let (text, doc) = plan_text(&a.inst, &a.nodes, &a.plan, &pol);
                print!("{text}");
                if let Some(out) = &out {
                    write_plan(out, &doc).unwrap_or_else(|e| fail(&e));
                }
            }
            for s in &skipped {
                println!("== {s}");
            }
        }
        Cmd::Daily {
            source,
            policy,
            out_dir,
            redis,
            redis_wait,
        } => {
            if source.prometheus.is_none() {
                fail("daily reads a fleet's day from Prometheus: give --prometheus URL");
            }
            let wait =
                parse_duration(&redis_wait).unwrap_or_else(|e| fail(&format!("--redis-wait {e}")));
            let target = redis.target();
            let src = source
                .prometheus_source()
                .unwrap_or_else(|e| fail(&e))
                .unwrap_or_else(|| fail("no --prometheus"));
            match daily(&source, &src, &policy, &out_dir, target, wait) {
                Ok(summary) => println!("{summary}"),
                Err(e) => fail(&e),
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
