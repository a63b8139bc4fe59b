//! `weft-bench stress` and `weft-bench compare`: how each path behaves as
//! it approaches and passes saturation, run after run.
//!
//! For each path (see [`path::Kind`]) a run ramps the offered rate in
//! steps, open loop and corrected for coordinated omission, until the path
//! saturates; finds the knee and the saturation rate
//! ([`analysis`]); holds 1.2x the saturation rate (the overload) and
//! checks what the semantics promise: back-pressure or an explicit loss,
//! never a silent gap; then drops to half the knee and times the recovery.
//! Some paths also take bursts (1 and 10 ms at 5x and 20x the knee over a
//! low base rate). Each run appends one line per path to a results store
//! (JSON lines: commit, machine, floors, figures), and `compare` sets the
//! newest run against the previous one on the same machine, flagging a
//! knee or saturation rate that moved beyond the noise band.
//!
//! Rates are compared as multiples of the floor measured around the same
//! path (messages per floor round trip), since this VM runs at levels up to
//! four times apart for minutes at a time.

pub mod analysis;
pub mod path;
pub mod plots;
pub mod store;
pub mod subscriber;
pub mod wire;

use std::path::PathBuf;

use crate::clock::Clock;
use path::{Kind, PathResult};

/// How long and how far a run goes.
#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub msg_bytes: usize,
    /// The first ramp step's rate, msgs/s.
    pub start_rate: f64,
    /// Each ramp step's rate over the previous one's.
    pub factor: f64,
    pub step_secs: f64,
    pub max_steps: u32,
    pub overload_secs: f64,
    pub recovery_secs: f64,
    /// Bursts on the SPSC, one-subscriber broadcast and UDP paths.
    pub bursts: bool,
    /// Runs of each path (the spread of their saturation rates is the
    /// run's own noise band).
    pub repeats: u32,
    pub paths: &'static [&'static str],
}

/// Every path the full suite runs, with the counts the scaling plots need.
const ALL_PATHS: &[&str] = &[
    "shm-spsc",
    "shm-broadcast-1",
    "shm-broadcast-2",
    "shm-broadcast-4",
    "shm-broadcast-8",
    "shm-many-1",
    "shm-many-2",
    "shm-many-4",
    "udp-1",
    "udp-3",
    "gateway",
];

/// `--quick`: every path once, 0.2 s steps doubling the rate.
pub const QUICK: Preset = Preset {
    name: "quick",
    msg_bytes: 64,
    start_rate: 50_000.0,
    factor: 2.0,
    step_secs: 0.2,
    max_steps: 12,
    overload_secs: 1.0,
    recovery_secs: 1.0,
    bursts: true,
    repeats: 1,
    paths: ALL_PATHS,
};

/// `--nightly`: every path three times, 1 s steps up by half.
pub const NIGHTLY: Preset = Preset {
    name: "nightly",
    msg_bytes: 64,
    start_rate: 50_000.0,
    factor: 1.5,
    step_secs: 1.0,
    max_steps: 20,
    overload_secs: 5.0,
    recovery_secs: 3.0,
    bursts: true,
    repeats: 3,
    paths: ALL_PATHS,
};

/// `--preset test`: three paths, short steps: what the tests run.
pub const TEST: Preset = Preset {
    name: "test",
    msg_bytes: 64,
    start_rate: 50_000.0,
    factor: 2.0,
    step_secs: 0.05,
    max_steps: 10,
    overload_secs: 0.3,
    recovery_secs: 0.3,
    bursts: false,
    repeats: 1,
    paths: &["shm-spsc", "shm-broadcast-2", "udp-1"],
};

/// Options of `stress`.
#[derive(Clone, Debug, PartialEq)]
pub struct StressOpts {
    pub preset: String,
    pub paths: Option<Vec<String>>,
    pub results: PathBuf,
    pub out: Option<PathBuf>,
    pub json: bool,
}

/// Where runs are stored unless `--results` says otherwise.
pub fn default_results() -> PathBuf {
    std::env::var_os("WEFT_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/weft-bench-results"))
}

fn preset(name: &str) -> Result<Preset, String> {
    match name {
        "quick" => Ok(QUICK),
        "nightly" => Ok(NIGHTLY),
        "test" => Ok(TEST),
        other => Err(format!(
            "stress: unknown preset '{other}' (quick, nightly or test)"
        )),
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ns(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.1} ms", v as f64 / 1e6)
    } else if v >= 1_000 {
        format!("{:.1} us", v as f64 / 1e3)
    } else {
        format!("{v} ns")
    }
}

/// One path's figures over its repeats: the median run, and the spread.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathSummary {
    /// The run whose saturation rate is the median.
    pub result: PathResult,
    /// Every repeat's saturation and knee, msgs/s.
    pub saturations: Vec<f64>,
    pub knees: Vec<f64>,
    /// (max - min) / median of the repeats' floor-relative saturation: the
    /// run's own noise band (0 with one repeat).
    pub noise_band: f64,
}

/// `weft-bench stress`: runs the preset's paths, prints what each did,
/// stores the run, writes plots with `--out`. Exit code 1 if any path lost
/// a message silently or failed.
pub fn run(opts: &StressOpts) -> i32 {
    let mut preset = match preset(&opts.preset) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weft-bench: {e}");
            return 2;
        }
    };
    let names: Vec<String> = match &opts.paths {
        Some(p) => p.clone(),
        None => preset.paths.iter().map(|s| s.to_string()).collect(),
    };
    let mut kinds = Vec::new();
    for n in &names {
        match Kind::parse(n) {
            Some(k) => kinds.push(k),
            None => {
                eprintln!(
                    "weft-bench: stress: unknown path '{n}' (shm-spsc, shm-broadcast-N, shm-many-N, udp-N, gateway)"
                );
                return 2;
            }
        }
    }
    // A test hook: this much extra work per message in every subscriber,
    // to show that `compare` finds a slower path.
    let slow_ns: u64 = std::env::var("WEFT_BENCH_STRESS_SLOW_NS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if slow_ns > 0 {
        eprintln!("weft-bench: stress: every subscriber spends {slow_ns} ns more per message (WEFT_BENCH_STRESS_SLOW_NS)");
    }
    if let Some(r) = std::env::var("WEFT_BENCH_STRESS_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        preset.repeats = r;
    }
    let clock = Clock::calibrate();
    let meta = crate::harness::Meta::collect();
    let started = std::time::Instant::now();
    let mut summaries = Vec::new();
    let mut failed = false;
    for kind in kinds {
        let mut runs = Vec::new();
        for r in 0..preset.repeats.max(1) {
            eprintln!(
                "weft-bench: stress {}: {}{}",
                preset.name,
                kind.name(),
                if preset.repeats > 1 {
                    format!(" (repeat {}/{})", r + 1, preset.repeats)
                } else {
                    String::new()
                }
            );
            match path::run(kind, &preset, clock, slow_ns) {
                Ok(res) => runs.push(res),
                Err(e) => {
                    eprintln!("weft-bench: stress {}: FAILED: {e}", kind.name());
                    failed = true;
                }
            }
        }
        if runs.is_empty() {
            continue;
        }
        summaries.push(summarize(runs));
    }
    let elapsed = started.elapsed().as_secs_f64();
    for s in &summaries {
        if opts.json {
            println!(
                "{}",
                serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            );
        } else {
            print_path(s);
        }
    }
    if !opts.json {
        print_summary(&summaries, &preset);
        println!(
            "\n{} paths in {elapsed:.0} s; machine: {} ({} cores), kernel {}; commit {}",
            summaries.len(),
            meta.cpu,
            meta.cores,
            meta.kernel,
            meta.commit
        );
    }
    let silent: u64 = summaries.iter().map(|s| s.result.silent_missing).sum();
    let reordered: u64 = summaries.iter().map(|s| s.result.reordered).sum();
    if silent > 0 || reordered > 0 {
        eprintln!(
            "weft-bench: stress: SILENT LOSS: {silent} messages missing without a Loss event, {reordered} out of order"
        );
        failed = true;
    }
    match store::append(&opts.results, &meta, &preset, &summaries) {
        Ok(file) => eprintln!("weft-bench: stress: run stored in {}", file.display()),
        Err(e) => {
            eprintln!("weft-bench: stress: could not store the run: {e}");
            failed = true;
        }
    }
    if let Some(out) = &opts.out {
        if let Err(e) = std::fs::create_dir_all(out)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                std::fs::write(
                    out.join("stress.json"),
                    serde_json::to_string_pretty(&summaries).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())
            })
            .and_then(|()| plots::write(out, &summaries))
        {
            eprintln!("weft-bench: stress: {}: {e}", out.display());
            failed = true;
        } else {
            eprintln!("weft-bench: stress: results and plots in {}", out.display());
        }
    }
    i32::from(failed)
}

fn summarize(mut runs: Vec<PathResult>) -> PathSummary {
    let rel =
        |r: &PathResult| r.saturation_per_s * (r.floor_before_ns + r.floor_after_ns) as f64 / 2.0;
    let saturations = runs.iter().map(|r| r.saturation_per_s).collect();
    let knees = runs.iter().map(|r| r.knee_per_s).collect();
    runs.sort_by(|a, b| rel(a).total_cmp(&rel(b)));
    let noise_band = if runs.len() > 1 {
        let mid = rel(&runs[runs.len() / 2]).max(1e-9);
        (rel(&runs[runs.len() - 1]) - rel(&runs[0])) / mid
    } else {
        0.0
    };
    let result = runs.swap_remove(runs.len() / 2);
    PathSummary {
        result,
        saturations,
        knees,
        noise_band,
    }
}

fn print_path(s: &PathSummary) {
    let r = &s.result;
    println!(
        "\n{} ({} subscriber(s), {} publisher(s), {} B; floor {} / {} ns before / after)",
        r.path, r.subscribers, r.publishers, r.msg_bytes, r.floor_before_ns, r.floor_after_ns
    );
    println!(
        "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>6} {:>8}",
        "offered",
        "achieved",
        "p50",
        "p99 10ms",
        "p99",
        "p99.9",
        "max",
        "backpress",
        "backlog",
        "duty",
        "drain"
    );
    let rows = r
        .steps
        .iter()
        .filter(|s| s.phase == "ramp")
        .chain(r.overload.iter())
        .chain(r.recovery.iter());
    for st in rows {
        println!(
            "  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>5.0}% {:>6.0}ms{}",
            si(st.offered_per_s),
            si(st.achieved_per_s),
            ns(st.p50_ns),
            ns(st.window_p99_ns),
            ns(st.p99_ns),
            ns(st.p999_ns),
            ns(st.max_ns),
            st.backpressure,
            st.backlog_high_water,
            st.duty * 100.0,
            st.drain_ms,
            match st.phase.as_str() {
                "overload" => "  <- overload (1.2x saturation)",
                "recovery" => "  <- recovery (back to the low-load rate)",
                _ if st.saturated => "  saturated",
                _ => "",
            }
        );
    }
    for b in &r.bursts {
        println!(
            "  burst {}: p99 {}, max {}; every ms's worst back within {}x its low-load value {}",
            b.label,
            ns(b.burst.p99_ns.max(b.after.p99_ns)),
            ns(b.burst.max_ns.max(b.after.max_ns)),
            analysis::KNEE_FACTOR,
            b.recovery_ms
                .map_or("not within the base step".into(), |ms| format!(
                    "{ms:.0} ms after it"
                ))
        );
    }
}

fn print_summary(summaries: &[PathSummary], preset: &Preset) {
    println!(
        "\nstress {}: knee = the highest rate whose p99 (of a typical 10 ms window) is within {}x the low-load one; saturation = the most delivered per second",
        preset.name,
        analysis::KNEE_FACTOR
    );
    println!(
        "{:<16} {:>9} {:>11} {:>10}  past saturation (1.2x for {:.1} s)                                          recovery",
        "path", "knee/s", "saturation", "p99 low", preset.overload_secs
    );
    for s in summaries {
        let r = &s.result;
        let past = r.overload.as_ref().map_or("-".to_string(), |o| {
            format!(
                "{} delivered, {:.0} ms of queue at the end, {} back-pressure, {} lost (reported), {} silent, p99 {}",
                si(o.achieved_per_s),
                o.overrun_ms,
                o.backpressure,
                r.reported_missing,
                r.silent_missing,
                ns(o.p99_ns)
            )
        });
        println!(
            "{:<16} {:>9} {:>11} {:>10}  {:<75} {}",
            r.path,
            si(r.knee_per_s),
            si(r.saturation_per_s),
            ns(r.baseline_p99_ns),
            past,
            r.recovery_ms
                .map_or("not in the step".into(), |ms| format!("{ms:.0} ms"))
        );
    }
}

/// Options of `compare`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareOpts {
    pub results: PathBuf,
    /// The noise band to use instead of the measured or default one.
    pub band: Option<f64>,
}

/// `weft-bench compare`: the newest run against the previous one on this
/// machine. Exit code 0: no regression; 1: a regression (or silent loss in
/// the newest run); 2: nothing to compare.
pub fn compare(opts: &CompareOpts) -> i32 {
    match store::compare(&opts.results, opts.band) {
        Ok(report) => {
            print!("{}", report.text);
            i32::from(report.regressions > 0)
        }
        Err(e) => {
            eprintln!("weft-bench: compare: {e}");
            2
        }
    }
}
