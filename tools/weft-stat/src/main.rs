//! `weft-stat`: what every weft process on this host is doing, read live from
//! their counters files without touching their hot paths.
//!
//! ```text
//! weft-stat list                 # processes, their state and heartbeat age
//! weft-stat                      # every counter with its rate, refreshed each second
//! weft-stat --once --json        # one JSON object per counter, for scripts
//! weft-stat --pid 4242 --type task_work
//! weft-stat loss                 # the loss report: what each stream lost, when
//! weft-stat errors               # the error log: distinct errors, counts, when
//! weft-stat histograms           # duty-cycle percentiles per agent
//! weft-stat serve --listen 127.0.0.1:9464   # Prometheus: GET /metrics
//! ```
#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod burst;
mod host;
mod rules;
mod view;
use weft_counters::{scan, types, CounterValue, CountersReader, ProcessState};

#[derive(Parser)]
#[command(
    name = "weft-stat",
    about = "Live counters of the weft processes on this host",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WEFT_COMMIT"), ")")
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The weft directory. Default: $WEFT_DIR, else /dev/shm/weft-UID (your user id).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Only this process.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Only counters of this type (a name such as `task_work`, or a number).
    #[arg(long = "type", global = true)]
    type_filter: Option<String>,
    /// Only counters whose label contains this text (a stream, agent or task).
    #[arg(long, global = true)]
    label: Option<String>,
    /// Only counters of this stream id (streams' counters are keyed by it).
    #[arg(long, global = true)]
    stream: Option<u64>,
    /// Print once and exit instead of refreshing.
    #[arg(long, global = true, conflicts_with = "watch")]
    once: bool,
    /// Refresh like `top` (the default without `--once`).
    #[arg(long, global = true)]
    watch: bool,
    /// One JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds between refreshes (and the window of the rates). Default 1.
    #[arg(long, global = true)]
    interval: Option<f64>,
}

impl Cli {
    /// The global flags given on the command line, by name.
    fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |on: bool, name| {
            if on {
                v.push(name);
            }
        };
        add(self.pid.is_some(), "--pid");
        add(self.type_filter.is_some(), "--type");
        add(self.label.is_some(), "--label");
        add(self.stream.is_some(), "--stream");
        add(self.once, "--once");
        add(self.watch, "--watch");
        add(self.json, "--json");
        add(self.interval.is_some(), "--interval");
        v
    }

    /// Refuses (exit 2) a flag that means nothing in this mode, rather than
    /// ignore it.
    fn check_flags(&self) {
        let (mode, allowed): (&str, &[&str]) = match &self.command {
            None => (
                "the counters view",
                &[
                    "--pid",
                    "--type",
                    "--label",
                    "--stream",
                    "--once",
                    "--watch",
                    "--json",
                    "--interval",
                ],
            ),
            Some(Cmd::List) => ("list", &["--pid", "--json"]),
            Some(Cmd::Loss) => ("loss", &["--pid", "--stream", "--json"]),
            Some(Cmd::Errors) => ("errors", &["--pid", "--json"]),
            Some(Cmd::Histograms) => (
                "histograms",
                &["--pid", "--type", "--label", "--stream", "--json"],
            ),
            Some(Cmd::Serve { .. }) => ("serve", &["--pid", "--type", "--label", "--stream"]),
            Some(Cmd::Host) => ("host", &["--pid", "--interval", "--json"]),
            Some(Cmd::Rules { .. }) => ("rules", &[]),
            Some(Cmd::Watch { .. }) => ("watch", &["--json"]),
            Some(Cmd::Reclaim { .. }) => ("reclaim", &[]),
        };
        let wrong: Vec<&str> = self
            .given()
            .into_iter()
            .filter(|f| !allowed.contains(f))
            .collect();
        if !wrong.is_empty() {
            eprintln!(
                "weft-stat {mode}: {} means nothing here (it takes: {})",
                wrong.join(", "),
                if allowed.is_empty() {
                    "--dir only".to_string()
                } else {
                    allowed.join(" ")
                }
            );
            std::process::exit(2);
        }
        if let Some(t) = &self.type_filter {
            let known = (0..1000).any(|id| types::name(id) == Some(t.as_str()));
            if !known && t.parse::<u32>().is_err() {
                let names: Vec<&str> = (0..1000).filter_map(types::name).collect();
                eprintln!(
                    "weft-stat: --type {t:?} is no counter type; the types: {}",
                    names.join(" ")
                );
                std::process::exit(2);
            }
        }
        if let Some(i) = self.interval {
            if !(i.is_finite() && i >= 0.05) {
                eprintln!("weft-stat: --interval {i}: expected seconds, at least 0.05");
                std::process::exit(2);
            }
        }
    }

    /// The filters given, for "nothing matches" messages.
    fn filters(&self) -> String {
        let mut f = Vec::new();
        if let Some(p) = self.pid {
            f.push(format!("--pid {p}"));
        }
        if let Some(t) = &self.type_filter {
            f.push(format!("--type {t}"));
        }
        if let Some(l) = &self.label {
            f.push(format!("--label {l:?}"));
        }
        if let Some(s) = self.stream {
            f.push(format!("--stream {s}"));
        }
        f.join(" ")
    }
}

/// Exit 1 with a message saying why there is nothing to show: no counters
/// file in `dir` at all, no process `--pid`, or filters that match nothing.
fn nothing_read(cli: &Cli, dir: &std::path::Path, files: usize, what: &str) -> ! {
    if files == 0 {
        eprintln!(
            "weft-stat: no weft process has a counters file in {} (none running, or they use another directory: --dir, WEFT_DIR)",
            dir.display()
        );
    } else {
        eprintln!(
            "weft-stat: {what} matches {} in {} ({files} counters files there)",
            cli.filters(),
            dir.display()
        );
    }
    std::process::exit(1);
}

#[derive(Subcommand)]
enum Cmd {
    /// The weft processes: pid, label, state, heartbeat age, counters.
    List,
    /// The loss report of each process: one row per (stream, session) that
    /// lost data, with first and last time, events, datagrams and bytes.
    Loss,
    /// The error log of each process: distinct errors, their counts, first
    /// and last time.
    Errors,
    /// Latency histograms (agents' duty cycles): count and percentiles.
    Histograms,
    /// Answers `GET /metrics` in the Prometheus text format, gathered from
    /// every live counters file at scrape time.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
        /// Seconds a cleanly closed process's series are still exported
        /// after it closed (its final values get scraped).
        #[arg(long, default_value_t = 60.0)]
        linger: f64,
        /// Seconds a crashed process's series are still exported after its
        /// last heartbeat (`weft_process_up` 0, so an alert can fire), after
        /// which it is left out until `weft-stat reclaim` removes its files.
        #[arg(long, default_value_t = 600.0)]
        dead_linger: f64,
        /// Leave out the operating-system and hardware levels (CPU modes,
        /// agent threads' scheduling, UDP drops, memory, perf counters,
        /// NICs) and the burst sampler: only weft's own counters.
        #[arg(long)]
        no_host: bool,
        /// A `weft-bench stress` results store (`stress.jsonl`) whose
        /// newest run's saturation rates headroom is judged against.
        /// Default: $WEFT_BENCH_RESULTS/stress.jsonl, else
        /// target/weft-bench-results/stress.jsonl, if there.
        #[arg(long)]
        saturation: Option<PathBuf>,
        /// Milliseconds between the burst sampler's reads (the "1ms" peak
        /// window is one of them). Each read wakes a thread: on a host
        /// whose cores all spin, it lengthens the tail (p99.9) of the
        /// processes whose core it takes; run weft-stat on a housekeeping
        /// core, or read less often.
        #[arg(long, default_value_t = 1.0)]
        sample_ms: f64,
        /// Alert rules (TOML, docs/operations.md "Alerts"), evaluated
        /// continuously; with --redis and no --rules, the shipped defaults.
        #[arg(long)]
        rules: Option<PathBuf>,
        #[command(flatten)]
        redis: weft_notify::RedisArgs,
    },
    /// Checks an alert rules file (the shipped defaults without FILE), or
    /// prints it as a Prometheus alerting-rules file (`--prometheus`).
    Rules {
        file: Option<PathBuf>,
        #[arg(long)]
        prometheus: bool,
    },
    /// Follows the notification stream on Redis with a consumer group,
    /// printing each notification and acknowledging it: a consumer
    /// restarted with the same --consumer first gets what it read but had
    /// not acknowledged.
    Watch {
        #[command(flatten)]
        redis: weft_notify::RedisArgs,
        /// The consumer group.
        #[arg(long, default_value = "weft-watch")]
        group: String,
        /// This consumer's name in the group.
        #[arg(long, default_value = "watch")]
        consumer: String,
        /// Exit after this many notifications.
        #[arg(long)]
        max: Option<u64>,
    },
    /// The three levels per core, side by side, over `--interval` seconds:
    /// the operating system's (busy, user, system, irq, softirq, steal),
    /// the hardware's (context switches, migrations and page faults per
    /// second; IPC and LLC misses where the machine has a PMU), and weft's
    /// (the agents pinned to the core: duty cycle, run-queue delay,
    /// migrations of their threads).
    Host,
    /// Lists and removes what dead processes left in the directory: every
    /// weft file whose creating process is gone (counters, control and ring
    /// files of crashed processes), and counters files closed cleanly more
    /// than `--linger` seconds ago. A file of a live process is never
    /// removed; a file that is not weft's is never touched.
    Reclaim {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Seconds a cleanly closed counters file is kept.
        #[arg(long, default_value_t = 60.0)]
        linger: f64,
    },
}

/// The alert rules weft ships (`weft-stat rules` prints them checked).
const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

fn load_rules(file: Option<&std::path::Path>) -> Result<rules::Rules, String> {
    let (text, what) = match file {
        Some(f) => (
            std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
            f.display().to_string(),
        ),
        None => (DEFAULT_RULES.to_string(), "the default rules".to_string()),
    };
    rules::Rules::parse(&text, SERVED).map_err(|e| format!("{what}: {e}"))
}

/// One counters file, read now.
struct Snapshot {
    path: PathBuf,
    pid: u32,
    label: String,
    state: ProcessState,
    heartbeat_age_ms: Option<u64>,
    /// How long ago it closed cleanly (state `Closed`).
    closed_age: Option<Duration>,
    counters: Vec<CounterValue>,
    histograms: Vec<weft_counters::HistogramValue>,
    errors: Vec<weft_counters::ErrorEntry>,
}

fn type_name(t: u32) -> String {
    types::name(t).map_or_else(|| format!("type_{t}"), str::to_owned)
}

use weft_counters::json_string as json_str;

fn read_all(cli: &Cli, dir: &std::path::Path) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for (path, reader) in scan(dir) {
        let r: CountersReader = match reader {
            Ok(r) => r,
            Err(e) => {
                // A corrupt or foreign file: say so and carry on with the others.
                eprintln!("weft-stat: {}: {e}", path.display());
                continue;
            }
        };
        if cli.pid.is_some_and(|p| p != r.pid()) {
            continue;
        }
        let wanted_type = cli.type_filter.as_deref();
        let counters = r
            .counters()
            .into_iter()
            .filter(|c| {
                wanted_type.is_none_or(|t| t == type_name(c.type_id) || t == c.type_id.to_string())
            })
            .filter(|c| cli.label.as_deref().is_none_or(|l| c.label.contains(l)))
            .filter(|c| {
                cli.stream.is_none_or(|s| {
                    c.key == s
                        && types::metric(c.type_id).is_some_and(|m| m.key == types::KeyKind::Stream)
                })
            })
            .collect();
        out.push(Snapshot {
            pid: r.pid(),
            label: r.process_label(),
            state: r.process_state(),
            heartbeat_age_ms: r.heartbeat_age().map(|d| d.as_millis() as u64),
            closed_age: r.closed_age(),
            counters,
            histograms: r.histograms(),
            errors: r.errors(),
            path,
        });
    }
    out
}

fn state_name(s: ProcessState) -> &'static str {
    match s {
        ProcessState::Alive => "alive",
        ProcessState::Hung => "hung",
        ProcessState::Dead => "dead",
        ProcessState::Closed => "closed",
    }
}

fn list(snaps: &[Snapshot], json: bool) {
    if !json {
        println!(
            "{:>8}  {:<24} {:<6} {:>13} {:>9}  file",
            "pid", "node", "state", "heartbeat ms", "counters"
        );
    }
    for s in snaps {
        let age = s
            .heartbeat_age_ms
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        if json {
            println!(
                "{{\"schema\":{JSON_SCHEMA},\"time\":\"{}\",\"pid\":{},\"label\":{},\"state\":\"{}\",\"heartbeat_age_ms\":{},\"counters\":{},\"file\":{}}}",
                utc_now(),
                s.pid,
                json_str(&s.label),
                state_name(s.state),
                s.heartbeat_age_ms.map_or_else(|| "null".into(), |a| a.to_string()),
                s.counters.len(),
                json_str(&s.path.display().to_string())
            );
        } else {
            println!(
                "{:>8}  {:<24} {:<6} {:>13} {:>9}  {}",
                s.pid,
                s.label,
                state_name(s.state),
                age,
                s.counters.len(),
                s.path.display()
            );
        }
    }
}

/// The version of the JSON lines' shape (`"schema"` in each): it changes
/// when a key is renamed or removed, not when one is added.
const JSON_SCHEMA: u32 = 2;

/// The wall clock now, as [`utc`] writes it.
fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64))
}

/// Wall-clock ns since the Unix epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ns / 1_000_000 % 1000
    )
}

/// Every readable counters file (filtered by `--pid`) with its reader.
fn readers(cli: &Cli, dir: &std::path::Path) -> Vec<CountersReader> {
    scan(dir)
        .into_iter()
        .filter_map(|(path, r)| match r {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("weft-stat: {}: {e}", path.display());
                None
            }
        })
        .filter(|r| cli.pid.is_none_or(|p| p == r.pid()))
        .collect()
}

fn loss(cli: &Cli, dir: &std::path::Path) {
    let rs = readers(cli, dir);
    if rs.is_empty() {
        nothing_read(cli, dir, scan(dir).len(), "no process");
    }
    if !cli.json {
        println!(
            "{:>8} {:<6} {:>6} {:>18} {:<24} {:<24} {:>8} {:>10} {:>12}  channel",
            "pid",
            "state",
            "stream",
            "session",
            "first",
            "last",
            "events",
            "datagrams",
            "bytes (est)"
        );
    }
    for r in rs {
        for l in r
            .loss_report()
            .into_iter()
            .filter(|l| cli.stream.is_none_or(|s| l.stream == s))
        {
            if cli.json {
                println!(
                    "{{\"schema\":{JSON_SCHEMA},\"time\":\"{}\",\"pid\":{},\"process\":{},\"state\":\"{}\",\"stream\":{},\"session\":{},\"channel\":{},\"first\":\"{}\",\"last\":\"{}\",\"events\":{},\"datagrams\":{},\"bytes\":{}}}",
                    utc_now(),
                    r.pid(),
                    json_str(&r.process_label()),
                    state_name(r.process_state()),
                    l.stream,
                    l.source,
                    json_str(&l.channel),
                    utc(l.first_wall_ns),
                    utc(l.last_wall_ns),
                    l.events,
                    l.datagrams,
                    l.bytes
                );
            } else {
                println!(
                    "{:>8} {:<6} {:>6} {:>18x} {:<24} {:<24} {:>8} {:>10} {:>12}  {}",
                    r.pid(),
                    state_name(r.process_state()),
                    l.stream,
                    l.source,
                    utc(l.first_wall_ns),
                    utc(l.last_wall_ns),
                    l.events,
                    l.datagrams,
                    l.bytes,
                    l.channel
                );
            }
        }
    }
}

fn histograms(cli: &Cli, dir: &std::path::Path) {
    let rs = readers(cli, dir);
    if rs.is_empty() {
        nothing_read(cli, dir, scan(dir).len(), "no process");
    }
    const QS: [(f64, &str); 5] = [
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p999"),
        (1.0, "max"),
    ];
    if !cli.json {
        println!(
            "{:>8} {:<6} {:<16} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}  label",
            "pid",
            "state",
            "type",
            "key",
            "count",
            "p50 ns",
            "p90 ns",
            "p99 ns",
            "p99.9 ns",
            "max ns"
        );
    }
    for r in rs {
        for h in r.histograms().into_iter().filter(|h| {
            cli.type_filter
                .as_deref()
                .is_none_or(|t| t == type_name(h.type_id) || t == h.type_id.to_string())
                && cli.label.as_deref().is_none_or(|l| h.label.contains(l))
                && cli
                    .stream
                    .is_none_or(|s| h.key == s && h.type_id == types::ONE_WAY_LATENCY_NS)
        }) {
            let q: Vec<u64> = QS.iter().map(|(q, _)| h.quantile(*q)).collect();
            if cli.json {
                let qs: Vec<String> = QS
                    .iter()
                    .zip(&q)
                    .map(|((_, n), v)| format!("\"{n}_ns\":{v}"))
                    .collect();
                println!(
                    "{{\"schema\":{JSON_SCHEMA},\"time\":\"{}\",\"pid\":{},\"process\":{},\"state\":\"{}\",\"type\":\"{}\",\"key\":{},\"label\":{},\"count\":{},{}}}",
                    utc_now(),
                    r.pid(),
                    json_str(&r.process_label()),
                    state_name(r.process_state()),
                    type_name(h.type_id),
                    h.key,
                    json_str(&h.label),
                    h.count,
                    qs.join(",")
                );
            } else {
                println!(
                    "{:>8} {:<6} {:<16} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
                    r.pid(),
                    state_name(r.process_state()),
                    type_name(h.type_id),
                    h.key,
                    h.count,
                    q[0],
                    q[1],
                    q[2],
                    q[3],
                    q[4],
                    h.label
                );
            }
        }
    }
}

fn errors(cli: &Cli, dir: &std::path::Path) {
    let rs = readers(cli, dir);
    if rs.is_empty() {
        nothing_read(cli, dir, scan(dir).len(), "no process");
    }
    if !cli.json {
        println!(
            "{:>8} {:<6} {:>10} {:<24} {:<24} {:<16}  error",
            "pid", "state", "count", "first", "last", "kind"
        );
    }
    for r in rs {
        for e in r.errors() {
            if cli.json {
                println!(
                    "{{\"schema\":{JSON_SCHEMA},\"time\":\"{}\",\"pid\":{},\"process\":{},\"state\":\"{}\",\"count\":{},\"first\":\"{}\",\"last\":\"{}\",\"kind\":{},\"error\":{}}}",
                    utc_now(),
                    r.pid(),
                    json_str(&r.process_label()),
                    state_name(r.process_state()),
                    e.count,
                    utc(e.first_wall_ns),
                    utc(e.last_wall_ns),
                    json_str(&e.kind),
                    json_str(&e.text)
                );
            } else {
                println!(
                    "{:>8} {:<6} {:>10} {:<24} {:<24} {:<16}  {}",
                    r.pid(),
                    state_name(r.process_state()),
                    e.count,
                    utc(e.first_wall_ns),
                    utc(e.last_wall_ns),
                    e.kind,
                    e.text
                );
            }
        }
    }
}

/// A Prometheus label value, escaped; control characters (a label a
/// hostile process wrote) become `?`.
fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels a stream counter's label carries: it is made as "ROLE
/// CHANNEL stream S WHAT" (see `weft::Node`), so role and channel are its
/// first two words. A label of another shape gives empty ones.
fn stream_labels(label: &str) -> (&str, &str) {
    let mut words = label.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some(role), Some(channel), Some("stream")) => (role, channel),
        _ => ("", ""),
    }
}

/// The labels that say which thing a counter of `key` kind counts:
/// `agent` and its `name`; `task` and its `name`; `role`, `channel` and
/// `stream`; an application counter's `name` (its label); nothing for a
/// per-process one.
fn key_labels(key: types::KeyKind, type_id: u32, id: u64, label: &str) -> String {
    match key {
        types::KeyKind::Agent | types::KeyKind::Task => format!(
            ",{}=\"{id}\",name=\"{}\"",
            if key == types::KeyKind::Agent {
                "agent"
            } else {
                "task"
            },
            label_value(types::subject(type_id, label))
        ),
        types::KeyKind::Stream => {
            let (role, channel) = stream_labels(label);
            format!(
                ",role=\"{}\",channel=\"{}\",stream=\"{id}\"",
                label_value(role),
                label_value(channel)
            )
        }
        types::KeyKind::Process => String::new(),
        types::KeyKind::Named => format!(",name=\"{}\"", label_value(label)),
    }
}

/// IDs that are not quantities: exported as labels of `weft_agent_info`
/// and `weft_task_info`, not as values.
const INFO_TYPES: [u32; 3] = [types::AGENT_CORE, types::AGENT_THREAD, types::TASK_AGENT];

/// Gauges that are read positions: of two ends with the same labels, the
/// slowest's is exported.
const RECEIVE_POSITIONS: [u32; 2] = [types::SHM_RECEIVE_POSITION, types::UDP_RECEIVE_POSITION];

/// Writes `# HELP` and `# TYPE` of a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The text exposition format (version 0.0.4) of every counter in `snaps`,
/// in base units, grouped by metric family. Every series carries `node`
/// (the process's configured name, stable across restarts) and `pid`.
fn metrics_text(snaps: &[Snapshot]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let node = |s: &Snapshot| format!("node=\"{}\",pid=\"{}\"", label_value(&s.label), s.pid);
    family(
        &mut out,
        "weft_process_up",
        "gauge",
        "Whether the process that writes a counters file is alive (1) or hung or dead (0).",
    );
    for s in snaps {
        let _ = writeln!(
            out,
            "weft_process_up{{{}}} {}",
            node(s),
            u8::from(s.state == ProcessState::Alive)
        );
    }
    family(
        &mut out,
        "weft_process_heartbeat_age_seconds",
        "gauge",
        "Time since the process last stored its heartbeat.",
    );
    for s in snaps {
        if let Some(ms) = s.heartbeat_age_ms {
            let _ = writeln!(
                out,
                "weft_process_heartbeat_age_seconds{{{}}} {}",
                node(s),
                ms as f64 / 1e3
            );
        }
    }
    family(
        &mut out,
        "weft_process_state",
        "gauge",
        "The process's state as a label: alive, hung, dead (crashed or killed) or closed (exited cleanly); always 1.",
    );
    for s in snaps {
        let _ = writeln!(
            out,
            "weft_process_state{{{},state=\"{}\"}} 1",
            node(s),
            state_name(s.state)
        );
    }
    family(
        &mut out,
        "weft_process_info",
        "gauge",
        "The counters file a node writes (its control ring is the same name with control. for counters.): how weft-rebalance, reading Prometheus, names the node in a plan that apply can carry out on its host; always 1.",
    );
    for s in snaps {
        let file = s.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let _ = writeln!(
            out,
            "weft_process_info{{{},counters_file=\"{}\"}} 1",
            node(s),
            label_value(file)
        );
    }
    for m in types::METRICS
        .iter()
        .filter(|m| !INFO_TYPES.contains(&m.type_id))
    {
        family(
            &mut out,
            m.name,
            if m.counter { "counter" } else { "gauge" },
            m.help,
        );
        // Two ends with the same labels (two subscriptions of one stream
        // in one process) are one series: counters add up, a receive
        // position is the slowest's, another gauge the largest.
        let mut series: std::collections::BTreeMap<String, u64> = Default::default();
        for s in snaps {
            for c in s.counters.iter().filter(|c| c.type_id == m.type_id) {
                let labels = format!(
                    "{}{}",
                    node(s),
                    key_labels(m.key, c.type_id, c.key, &c.label)
                );
                series
                    .entry(labels)
                    .and_modify(|v| {
                        *v = if m.counter {
                            v.wrapping_add(c.value)
                        } else if RECEIVE_POSITIONS.contains(&m.type_id) {
                            (*v).min(c.value)
                        } else {
                            (*v).max(c.value)
                        }
                    })
                    .or_insert(c.value);
            }
        }
        for (labels, v) in series {
            let v = if m.divisor == 1.0 {
                v.to_string()
            } else {
                (v as f64 / m.divisor).to_string()
            };
            let _ = writeln!(out, "{}{{{labels}}} {v}", m.name);
        }
    }
    info_metrics(&mut out, snaps);
    lag_metrics(&mut out, snaps);
    error_metrics(&mut out, snaps);
    // Histograms in seconds, on fixed bounds (a fine bucket straddling a
    // bound counts above it).
    const LE: [f64; 16] = [
        1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2,
        1e-1, 1.0,
    ];
    for (type_id, name, help, key) in types::HISTOGRAM_METRICS {
        family(&mut out, name, "histogram", help);
        // Histograms with the same labels add up: buckets, count, sum.
        let mut series: std::collections::BTreeMap<String, ([u64; 16], u64, u64)> =
            Default::default();
        for s in snaps {
            for h in s.histograms.iter().filter(|h| h.type_id == *type_id) {
                let labels = format!(
                    "{}{}",
                    node(s),
                    key_labels(*key, h.type_id, h.key, &h.label)
                );
                let e = series.entry(labels).or_default();
                for (b, le) in e.0.iter_mut().zip(LE) {
                    *b += h.count_at_most((le * 1e9) as u64);
                }
                e.1 += h.count;
                e.2 += h.sum;
            }
        }
        for (labels, (buckets, count, sum)) in series {
            for (b, le) in buckets.iter().zip(LE) {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {b}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum as f64 / 1e9);
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }
    out
}

/// `weft_agent_info` (an agent's name, core and thread id) and
/// `weft_task_info` (a task's name and the agent it runs on), value 1:
/// join them onto a series with `* on(node, pid, agent) group_left(core)`.
fn info_metrics(out: &mut String, snaps: &[Snapshot]) {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    family(
        out,
        "weft_agent_info",
        "gauge",
        "An agent: its name, the core it is pinned to (\"none\": not pinned) and its Linux thread id (\"\" before it first ran); always 1.",
    );
    for s in snaps {
        // Agent index -> (name, core, thread).
        let mut agents: BTreeMap<u64, (String, Option<u64>, Option<u64>)> = BTreeMap::new();
        for c in &s.counters {
            let e = match c.type_id {
                types::AGENT_CORE | types::AGENT_THREAD | types::AGENT_DUTY_CYCLES => {
                    agents.entry(c.key).or_default()
                }
                _ => continue,
            };
            e.0 = types::subject(c.type_id, &c.label).to_owned();
            match c.type_id {
                types::AGENT_CORE => e.1 = Some(c.value),
                types::AGENT_THREAD => e.2 = Some(c.value),
                _ => {}
            }
        }
        for (i, (name, core, thread)) in agents {
            let core = match core {
                Some(0) | None => "none".to_string(),
                Some(c) => (c - 1).to_string(),
            };
            let thread = thread
                .filter(|&t| t > 0)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "weft_agent_info{{node=\"{}\",pid=\"{}\",agent=\"{i}\",name=\"{}\",core=\"{core}\",thread=\"{thread}\"}} 1",
                label_value(&s.label),
                s.pid,
                label_value(&name)
            );
        }
    }
    family(
        out,
        "weft_task_info",
        "gauge",
        "A task: its name and the agent it runs on now; always 1.",
    );
    for s in snaps {
        for c in s.counters.iter().filter(|c| c.type_id == types::TASK_AGENT) {
            let _ = writeln!(
                out,
                "weft_task_info{{node=\"{}\",pid=\"{}\",task=\"{}\",name=\"{}\",agent=\"{}\"}} 1",
                label_value(&s.label),
                s.pid,
                c.key,
                label_value(types::subject(c.type_id, &c.label)),
                c.value
            );
        }
    }
}

/// Every channel end of the live processes: (role, channel, stream), one
/// per end (from its message counter).
fn channel_ends(snaps: &[Snapshot]) -> Vec<(String, String, u64)> {
    snaps
        .iter()
        .filter(|s| !matches!(s.state, ProcessState::Dead | ProcessState::Closed))
        .flat_map(|s| &s.counters)
        .filter(|c| {
            matches!(
                c.type_id,
                types::SHM_SENT_MESSAGES
                    | types::SHM_RECEIVED_MESSAGES
                    | types::UDP_SENT_MESSAGES
                    | types::UDP_RECEIVED_MESSAGES
            )
        })
        .map(|c| {
            let (role, channel) = stream_labels(&c.label);
            (role.to_string(), channel.to_string(), c.key)
        })
        .collect()
}

/// One agent as the host view shows it.
struct AgentRow {
    node: String,
    pid: u32,
    name: String,
    core: Option<u64>,
    tid: u32,
    busy_ns: u64,
    idle_ns: u64,
}

fn agent_rows(snaps: &[Snapshot]) -> Vec<AgentRow> {
    let mut rows: std::collections::BTreeMap<(u32, u64), AgentRow> = Default::default();
    for s in snaps.iter().filter(|s| s.state == ProcessState::Alive) {
        for c in &s.counters {
            if !matches!(
                c.type_id,
                types::AGENT_CORE
                    | types::AGENT_THREAD
                    | types::AGENT_BUSY_NS
                    | types::AGENT_IDLE_NS
            ) {
                continue;
            }
            let r = rows.entry((s.pid, c.key)).or_insert_with(|| AgentRow {
                node: s.label.clone(),
                pid: s.pid,
                name: types::subject(c.type_id, &c.label).to_owned(),
                core: None,
                tid: 0,
                busy_ns: 0,
                idle_ns: 0,
            });
            match c.type_id {
                types::AGENT_CORE => r.core = c.value.checked_sub(1),
                types::AGENT_THREAD => r.tid = c.value as u32,
                types::AGENT_BUSY_NS => r.busy_ns = c.value,
                _ => r.idle_ns = c.value,
            }
        }
    }
    rows.into_values().collect()
}

/// A thread's run-queue delay and migrations so far.
fn thread_sched(pid: u32, tid: u32) -> (u64, u64) {
    let base = format!("/proc/{pid}/task/{tid}");
    let delay = std::fs::read_to_string(format!("{base}/schedstat"))
        .ok()
        .and_then(|s| host::parse_schedstat(&s))
        .map_or(0, |(_, d)| d);
    let migrations = std::fs::read_to_string(format!("{base}/sched"))
        .ok()
        .and_then(|s| host::sched_field(&s, "se.nr_migrations"))
        .unwrap_or(0);
    (delay, migrations)
}

/// One core in the host view.
struct CoreRow {
    cpu: usize,
    busy: f64,
    /// user, system, irq, softirq, steal: percent of the interval.
    modes: [f64; 5],
    /// Context switches, migrations, page faults per second (perf).
    events: [Option<f64>; 3],
    hardware: String,
    agents: Vec<String>,
}

/// `weft-stat host`: the three levels per core over one interval.
fn host_view(cli: &Cli, dir: &std::path::Path) {
    let interval = Duration::from_secs_f64(cli.interval.unwrap_or(1.0));
    let h = host::Host::new();
    let stat = || {
        std::fs::read_to_string("/proc/stat")
            .map(|t| host::parse_proc_stat(&t))
            .unwrap_or_default()
    };
    let (cpu0, sw0, hw0) = (stat(), h.software_counts(), h.hardware_counts());
    let agents0 = agent_rows(&read_all(cli, dir));
    let sched0: Vec<(u64, u64)> = agents0.iter().map(|a| thread_sched(a.pid, a.tid)).collect();
    let started = Instant::now();
    std::thread::sleep(interval);
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, sw1, hw1) = (stat(), h.software_counts(), h.hardware_counts());
    let agents1 = agent_rows(&read_all(cli, dir));
    let hardware = match &h.pmu {
        host::Pmu::Available => None,
        host::Pmu::Unavailable(why) => Some(why.clone()),
    };
    let mut lines = Vec::new();
    for c1 in &cpu1 {
        let Some(c0) = cpu0.iter().find(|c| c.cpu == c1.cpu) else {
            continue;
        };
        let delta: Vec<(&str, f64)> = c1
            .modes
            .iter()
            .zip(&c0.modes)
            .map(|((m, a), (_, b))| (*m, a.saturating_sub(*b) as f64))
            .collect();
        let total: f64 = delta.iter().map(|d| d.1).sum::<f64>().max(1.0);
        let pct = |m: &str| 100.0 * delta.iter().find(|d| d.0 == m).map_or(0.0, |d| d.1) / total;
        let busy = 100.0 - pct("idle") - pct("iowait");
        let cpu = c1.cpu as usize;
        let rate = |a: &[host::PerCpu], b: &[host::PerCpu], i: usize| {
            let x = a.iter().find(|p| p.cpu == cpu)?;
            let y = b.iter().find(|p| p.cpu == cpu)?;
            Some(y.values[i].saturating_sub(x.values[i]) as f64 / secs)
        };
        let hw_text = match &hardware {
            Some(why) => why.clone(),
            None => match (
                rate(&hw0, &hw1, 0),
                rate(&hw0, &hw1, 1),
                rate(&hw0, &hw1, 2),
            ) {
                (Some(cy), Some(ins), Some(llc)) => {
                    format!("IPC {:.2}, {:.0} LLC misses/s", ins / cy.max(1.0), llc)
                }
                _ => "-".into(),
            },
        };
        let mut weft = Vec::new();
        for a in &agents1 {
            if a.core != Some(cpu as u64) {
                continue;
            }
            let Some(b) = agents0
                .iter()
                .position(|b| b.pid == a.pid && b.name == a.name)
            else {
                continue;
            };
            let (d0, m0) = sched0[b];
            let (d1, m1) = thread_sched(a.pid, a.tid);
            let busy = a.busy_ns.saturating_sub(agents0[b].busy_ns) as f64;
            let idle = a.idle_ns.saturating_sub(agents0[b].idle_ns) as f64;
            weft.push(format!(
                "{} {} (pid {}): duty {:.1}%, run delay {:.2} ms/s, {} migrations",
                a.node,
                a.name,
                a.pid,
                100.0 * busy / (busy + idle).max(1.0),
                d1.saturating_sub(d0) as f64 / 1e6 / secs,
                m1.saturating_sub(m0)
            ));
        }
        lines.push(CoreRow {
            cpu,
            busy,
            modes: [
                pct("user"),
                pct("system"),
                pct("irq"),
                pct("softirq"),
                pct("steal"),
            ],
            events: [
                rate(&sw0, &sw1, 0),
                rate(&sw0, &sw1, 1),
                rate(&sw0, &sw1, 2),
            ],
            hardware: hw_text,
            agents: weft,
        });
    }
    if cli.json {
        for r in &lines {
            let (cpu, busy, hw, weft) = (r.cpu, r.busy, &r.hardware, &r.agents);
            let [user, sys, irq, softirq, steal] = r.modes;
            let [ctx, migr, faults] = r.events;
            println!(
                "{{\"schema\":{JSON_SCHEMA},\"time\":{},\"cpu\":{cpu},\"busy_pct\":{busy:.2},\"user_pct\":{user:.2},\"system_pct\":{sys:.2},\"irq_pct\":{irq:.2},\"softirq_pct\":{softirq:.2},\"steal_pct\":{steal:.2},\"context_switches_per_s\":{},\"migrations_per_s\":{},\"page_faults_per_s\":{},\"hardware\":{},\"agents\":[{}]}}",
                json_str(&utc_now()),
                ctx.map_or("null".into(), |v| format!("{v:.1}")),
                migr.map_or("null".into(), |v| format!("{v:.1}")),
                faults.map_or("null".into(), |v| format!("{v:.1}")),
                json_str(hw),
                weft.iter().map(|w| json_str(w)).collect::<Vec<_>>().join(",")
            );
        }
        return;
    }
    println!(
        "over {secs:.1} s: operating system | hardware (perf) | weft\n{:>4} {:>6} {:>6} {:>6} {:>5} {:>6} {:>6} | {:>8} {:>7} {:>7} | {:<30} | agents pinned here",
        "core", "busy", "user", "system", "irq", "sirq", "steal", "ctxsw/s", "migr/s", "flt/s", "cycles, IPC, LLC"
    );
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for r in &lines {
        let (cpu, busy, hw, weft) = (r.cpu, r.busy, &r.hardware, &r.agents);
        let [user, sys, irq, softirq, steal] = r.modes;
        let [ctx, migr, faults] = r.events;
        println!(
            "{cpu:>4} {busy:>5.1}% {user:>5.1}% {sys:>5.1}% {irq:>4.1}% {softirq:>5.1}% {steal:>5.1}% | {:>8} {:>7} {:>7} | {:<30} | {}",
            opt(ctx),
            opt(migr),
            opt(faults),
            hw,
            if weft.is_empty() { "-".to_string() } else { weft.join("; ") }
        );
    }
    let unpinned: Vec<String> = agents1
        .iter()
        .filter(|a| a.core.is_none())
        .map(|a| format!("{} {} (pid {})", a.node, a.name, a.pid))
        .collect();
    if !unpinned.is_empty() {
        println!("not pinned: {}", unpinned.join("; "));
    }
    if let Some(why) = &h.software_unavailable {
        println!("perf software events (ctxsw, migr, flt) {why}");
    }
}

/// The agent threads and processes of the live processes in `snaps`, for
/// the host levels: an agent's thread id and name come from its counters.
fn host_targets(snaps: &[Snapshot]) -> (Vec<host::AgentThread>, Vec<host::Process>) {
    let mut threads = Vec::new();
    let mut procs = Vec::new();
    for s in snaps.iter().filter(|s| s.state == ProcessState::Alive) {
        let node_labels = format!("node=\"{}\",pid=\"{}\"", label_value(&s.label), s.pid);
        procs.push(host::Process {
            node_labels: node_labels.clone(),
            pid: s.pid,
        });
        for c in s
            .counters
            .iter()
            .filter(|c| c.type_id == types::AGENT_THREAD && c.value > 0)
        {
            threads.push(host::AgentThread {
                node_labels: node_labels.clone(),
                pid: s.pid,
                agent: c.key,
                name: types::subject(c.type_id, &c.label).to_owned(),
                tid: c.value as u32,
            });
        }
    }
    (threads, procs)
}

/// `weft_shm_subscriber_lag_bytes`: for each shared-memory subscription on
/// this host, how far it is behind the newest publication of its channel
/// and stream (from every counters file, so publisher and subscriber may
/// be different processes). Divided by `weft_shm_ring_capacity_bytes` (same
/// labels) it is how full the ring is for that subscriber.
fn lag_metrics(out: &mut String, snaps: &[Snapshot]) {
    use std::fmt::Write;
    let mut newest: HashMap<(String, u64), u64> = HashMap::new();
    let mut capacity: HashMap<(String, u64), u64> = HashMap::new();
    for s in snaps {
        for c in &s.counters {
            let (_, channel) = stream_labels(&c.label);
            let key = (channel.to_owned(), c.key);
            match c.type_id {
                types::SHM_SEND_POSITION => {
                    let e = newest.entry(key).or_default();
                    *e = (*e).max(c.value);
                }
                types::SHM_RING_CAPACITY => {
                    let e = capacity.entry(key).or_default();
                    *e = (*e).max(c.value);
                }
                _ => {}
            }
        }
    }
    family(
        out,
        "weft_shm_subscriber_lag_bytes",
        "gauge",
        "Ring bytes a shared-memory subscription is behind its channel's newest publication on this host (its backlog).",
    );
    // Two subscriptions with the same labels: the one further behind.
    let mut series: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for s in snaps {
        for c in s
            .counters
            .iter()
            .filter(|c| c.type_id == types::SHM_RECEIVE_POSITION)
        {
            let (_, channel) = stream_labels(&c.label);
            let key = (channel.to_owned(), c.key);
            if let Some(&head) = newest.get(&key) {
                let labels = format!(
                    "node=\"{}\",pid=\"{}\"{}",
                    label_value(&s.label),
                    s.pid,
                    key_labels(types::KeyKind::Stream, c.type_id, c.key, &c.label)
                );
                let lag = head.saturating_sub(c.value);
                let e = series.entry(labels).or_default();
                e.0 = e.0.max(lag);
                e.1 = capacity.get(&key).copied().unwrap_or(0);
            }
        }
    }
    for (labels, (lag, _)) in &series {
        let _ = writeln!(out, "weft_shm_subscriber_lag_bytes{{{labels}}} {lag}");
    }
    family(
        out,
        "weft_shm_subscriber_lag_ratio",
        "gauge",
        "A shared-memory subscription's backlog over its ring's capacity: at 1 it holds its publisher back (or is cut loose).",
    );
    for (labels, (lag, cap)) in &series {
        if *cap > 0 {
            let _ = writeln!(
                out,
                "weft_shm_subscriber_lag_ratio{{{labels}}} {}",
                *lag as f64 / *cap as f64
            );
        }
    }
    family(
        out,
        "weft_publication_up",
        "gauge",
        "1 while a publication's process is alive; 0 once it is hung, dead or closed (its series linger for --linger / --dead-linger): the publisher is gone.",
    );
    let mut pubs = std::collections::BTreeSet::new();
    for s in snaps {
        for c in s.counters.iter().filter(|c| {
            matches!(
                c.type_id,
                types::SHM_SENT_MESSAGES | types::UDP_SENT_MESSAGES
            ) && stream_labels(&c.label).0 == "publication"
        }) {
            pubs.insert((
                format!(
                    "node=\"{}\",pid=\"{}\"{}",
                    label_value(&s.label),
                    s.pid,
                    key_labels(types::KeyKind::Stream, c.type_id, c.key, &c.label)
                ),
                u8::from(s.state == ProcessState::Alive),
            ));
        }
    }
    for (labels, up) in pubs {
        let _ = writeln!(out, "weft_publication_up{{{labels}}} {up}");
    }
}

/// The error log: `weft_errors_total` by kind, and each distinct error
/// (`weft_error_log_total` with its text as a label, control characters
/// replaced) with the time it was last seen.
fn error_metrics(out: &mut String, snaps: &[Snapshot]) {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    family(
        out,
        "weft_errors_total",
        "counter",
        "Errors in the process's error log, by kind (kernel_drops, evicted, attach, ...).",
    );
    for s in snaps {
        let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &s.errors {
            *by_kind.entry(e.kind.as_str()).or_default() += e.count;
        }
        for (kind, n) in by_kind {
            let _ = writeln!(
                out,
                "weft_errors_total{{node=\"{}\",pid=\"{}\",kind=\"{}\"}} {n}",
                label_value(&s.label),
                s.pid,
                label_value(kind)
            );
        }
    }
    for (name, kind, help) in [
        (
            "weft_error_log_total",
            "counter",
            "One distinct error of the error log: how often it happened (its text in full as a label).",
        ),
        (
            "weft_error_log_last_seen_seconds",
            "gauge",
            "One distinct error of the error log: when it last happened, seconds since the Unix epoch.",
        ),
    ] {
        family(out, name, kind, help);
        for s in snaps {
            for e in &s.errors {
                let v = if name.ends_with("_total") {
                    e.count.to_string()
                } else {
                    (e.last_wall_ns as f64 / 1e9).to_string()
                };
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{}\",pid=\"{}\",kind=\"{}\",error=\"{}\"}} {v}",
                    label_value(&s.label),
                    s.pid,
                    label_value(&e.kind),
                    label_value(&e.text)
                );
            }
        }
    }
}

/// Connections `serve` handles at once; one more is answered `503` at once.
const MAX_CONNECTIONS: u64 = 64;
/// How long a connection may take to send its request, or to take the reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// `serve`'s own counters, exported beside the processes' (as
/// `weft_stat_*`), so a scrape shows the exporter's health too.
#[derive(Default)]
struct ServeStats {
    scrapes: std::sync::atomic::AtomicU64,
    open: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    /// The last scrape's time to read the counters files, ns.
    last_scrape_ns: std::sync::atomic::AtomicU64,
}

impl ServeStats {
    fn text(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            use std::fmt::Write;
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "weft_stat_scrapes_total",
            "counter",
            "Scrapes of /metrics this weft-stat has answered.",
            self.scrapes.load(Relaxed).to_string(),
        );
        metric(
            "weft_stat_scrape_duration_seconds",
            "gauge",
            "How long the last scrape took to read every counters file.",
            (self.last_scrape_ns.load(Relaxed) as f64 / 1e9).to_string(),
        );
        metric(
            "weft_stat_connections",
            "gauge",
            "HTTP connections being served now (this scrape's included).",
            self.open.load(Relaxed).to_string(),
        );
        metric(
            "weft_stat_connections_rejected_total",
            "counter",
            "Connections answered 503 because 64 were being served.",
            self.rejected.load(Relaxed).to_string(),
        );
        metric(
            "weft_stat_request_errors_total",
            "counter",
            "Requests that timed out, were malformed, or asked for another path or method.",
            self.errors.load(Relaxed).to_string(),
        );
        out.push_str(&format!(
            "# HELP weft_build_info The build of this weft-stat: always 1, its version and commit in labels.\n\
             # TYPE weft_build_info gauge\n\
             weft_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            env!("WEFT_COMMIT")
        ));
        out
    }
}

/// How long `serve` still exports processes that are gone.
#[derive(Clone, Copy)]
struct Lingers {
    closed: Duration,
    dead: Duration,
}

impl Lingers {
    /// Whether `s` is exported: a live or hung process always; a closed one
    /// for `closed` after it closed; a crashed one for `dead` after its
    /// last heartbeat.
    fn exported(&self, s: &Snapshot) -> bool {
        match s.state {
            ProcessState::Alive | ProcessState::Hung => true,
            ProcessState::Closed => s.closed_age.is_none_or(|a| a <= self.closed),
            ProcessState::Dead => s
                .heartbeat_age_ms
                .is_none_or(|ms| Duration::from_millis(ms) <= self.dead),
        }
    }
}

/// A duration flag in seconds: finite and not negative, else exit 2.
fn seconds(flag: &str, v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or_else(|_| {
        eprintln!("weft-stat: {flag} {v}: expected seconds, 0 or more");
        std::process::exit(2);
    })
}

/// `weft-stat reclaim`: removes (or, `dry_run`, lists) the files of dead
/// processes and the counters files closed more than `linger` ago. Returns
/// the exit code: 0, or 1 if a file could not be removed.
fn reclaim(dir: &std::path::Path, dry_run: bool, linger: Duration) -> i32 {
    let opts = weft_shm::ShmOptions::in_dir(dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let (mut removed, mut kept, mut failed) = (0, 0, 0);
    for name in names {
        let path = dir.join(&name);
        // Only weft regions: anything else is not ours to touch.
        let Ok(region) = weft_shm::Region::open(&path) else {
            continue;
        };
        let pid =
            weft_shm::liveness::ProcessId::from_word(region.info().creator).map_or(0, |p| p.pid);
        // A counters file closed cleanly: removed once its linger is past
        // (whether or not its process still runs), never before.
        let closed_age = if name.starts_with("counters.") {
            CountersReader::open(&path)
                .ok()
                .and_then(|r| r.closed_age())
        } else {
            None
        };
        let closed = closed_age.is_some_and(|age| age > linger);
        let why = match (closed_age, region.creator_state()) {
            (Some(_), _) if closed => "closed cleanly, past its linger",
            (None, weft_shm::CreatorState::Dead) => "its process is gone",
            _ => {
                kept += 1;
                continue;
            }
        };
        drop(region);
        if dry_run {
            println!("would remove {name} (pid {pid}): {why}");
            removed += 1;
            continue;
        }
        // `reclaim` checks again that the creator is dead (it may have
        // been a pid that came back); a closed file is removed as it is.
        let result = if closed {
            weft_shm::Region::remove(&opts, &name)
        } else {
            weft_shm::Region::reclaim(&opts, &name)
        };
        match result {
            Ok(()) => {
                println!("removed {name} (pid {pid}): {why}");
                removed += 1;
            }
            Err(e) => {
                eprintln!("weft-stat: {name}: not removed: {e}");
                failed += 1;
            }
        }
    }
    eprintln!(
        "weft-stat reclaim: {removed} {}, {kept} kept (live, or closed within the linger), {failed} failed",
        if dry_run { "to remove" } else { "removed" }
    );
    i32::from(failed > 0)
}

/// Serves `/metrics` (GET and HEAD) until killed: each connection on a
/// thread of its own, at most [`MAX_CONNECTIONS`] at once, each bounded by
/// [`IO_TIMEOUT`] to send its request and to take the reply, so idle or
/// slow clients cannot hold a scrape up.
/// What `serve` adds to weft's counters: the host levels, the burst
/// sampler, the saturation rates headroom is judged against.
struct Extras {
    host: host::Host,
    sampler: burst::Sampler,
    saturation: Option<burst::Saturation>,
    /// With rules: what the evaluation found, for the scrape.
    alerts: Option<std::sync::Mutex<AlertState>>,
}

fn saturation_file(given: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(f) = given {
        return Some(f.to_owned());
    }
    let env = std::env::var_os("WEFT_BENCH_RESULTS").map(|d| PathBuf::from(d).join("stress.jsonl"));
    env.into_iter()
        .chain([PathBuf::from("target/weft-bench-results/stress.jsonl")])
        .find(|p| p.is_file())
}

#[allow(clippy::too_many_arguments)] // serve's flags, one each
fn serve(
    cli: &Cli,
    dir: &std::path::Path,
    listen: &str,
    lingers: Lingers,
    extras: bool,
    saturation: Option<&std::path::Path>,
    tick: Duration,
    alerting: Option<(rules::Evaluator, Option<weft_notify::Notifier>)>,
) {
    let listen_on = std::net::TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("weft-stat: cannot listen on {listen}: {e}");
        std::process::exit(2);
    });
    eprintln!("weft-stat: serving http://{listen}/metrics");
    let extras = extras.then(|| {
        let saturation = match saturation_file(saturation) {
            Some(f) => match burst::Saturation::load(&f) {
                Ok(s) => {
                    eprintln!("weft-stat: headroom against the saturation rates of {}", s.source);
                    Some(s)
                }
                Err(e) => {
                    eprintln!("weft-stat: no headroom: {e}");
                    None
                }
            },
            None => {
                eprintln!("weft-stat: no headroom: no saturation measurement (run `weft-bench stress`, then --saturation DIR/stress.jsonl)");
                None
            }
        };
        Extras {
            host: host::Host::new(),
            sampler: burst::Sampler::start(dir.to_owned(), tick),
            saturation,
            alerts: alerting
                .as_ref()
                .map(|_| std::sync::Mutex::new(AlertState::default())),
        }
    });
    if let (Some(x), Some((evaluator, notifier))) = (extras.as_ref(), alerting) {
        std::thread::scope(|scope| {
            scope.spawn(|| evaluate_rules(cli, dir, lingers, x, evaluator, notifier));
            accept(cli, dir, listen_on, lingers, extras.as_ref());
        });
        return;
    }
    accept(cli, dir, listen_on, lingers, extras.as_ref());
}

/// Serves connections on `listener` until the process ends.
fn accept(
    cli: &Cli,
    dir: &std::path::Path,
    listener: std::net::TcpListener,
    lingers: Lingers,
    extras: Option<&Extras>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = ServeStats::default();
    std::thread::scope(|scope| {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
            let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
            if stats.open.load(Relaxed) >= MAX_CONNECTIONS {
                stats.rejected.fetch_add(1, Relaxed);
                respond(
                    &mut conn,
                    "503 Service Unavailable",
                    "too many connections\n",
                    true,
                );
                continue;
            }
            stats.open.fetch_add(1, Relaxed);
            let stats = &stats;
            scope.spawn(move || {
                handle(&mut conn, cli, dir, stats, lingers, extras);
                stats.open.fetch_sub(1, Relaxed);
            });
        }
    });
}

/// Everything `serve` exports but its own statistics: weft's counters, and
/// with `extras` the host levels and the burst peaks since `reader` last
/// took them.
fn exposition(
    cli: &Cli,
    dir: &std::path::Path,
    lingers: Lingers,
    extras: Option<&Extras>,
    reader: usize,
) -> String {
    let mut snaps = read_all(cli, dir);
    snaps.retain(|s| lingers.exported(s));
    let mut body = metrics_text(&snaps);
    if let Some(x) = extras {
        let (threads, procs) = host_targets(&snaps);
        x.host.metrics(&mut body, &threads, &procs);
        burst::metrics(
            &mut body,
            &x.sampler.window,
            &x.sampler.take(reader),
            x.saturation.as_ref(),
            &channel_ends(&snaps),
        );
    }
    if let Some(a) = extras.and_then(|x| x.alerts.as_ref()) {
        if let Ok(a) = a.lock() {
            alert_metrics(&mut body, &a.0, &a.1);
        }
    }
    body
}

/// The families beyond the counters table that `serve` exports: what an
/// alert rule may name.
const SERVED: &[&str] = &[
    "weft_process_up",
    "weft_process_heartbeat_age_seconds",
    "weft_process_state",
    "weft_process_info",
    "weft_agent_info",
    "weft_task_info",
    "weft_shm_subscriber_lag_bytes",
    "weft_shm_subscriber_lag_ratio",
    "weft_publication_up",
    "weft_errors_total",
    "weft_error_log_total",
    "weft_error_log_last_seen_seconds",
    "node_cpu_seconds_total",
    "weft_thread_cpu_seconds_total",
    "weft_thread_run_delay_seconds_total",
    "weft_thread_context_switches_total",
    "weft_thread_migrations_total",
    "weft_host_udp_in_datagrams_total",
    "weft_host_udp_out_datagrams_total",
    "weft_host_udp_in_errors_total",
    "weft_host_udp_receive_buffer_errors_total",
    "weft_host_udp_send_buffer_errors_total",
    "weft_udp_socket_drops_total",
    "weft_process_locked_memory_bytes",
    "weft_process_huge_pages_bytes",
    "weft_host_huge_pages",
    "weft_host_huge_pages_free",
    "node_memory_Hugepagesize_bytes",
    "weft_hardware_counters_available",
    "weft_cpu_cycles_total",
    "weft_cpu_instructions_total",
    "weft_cpu_llc_misses_total",
    "weft_cpu_context_switches_total",
    "weft_cpu_migrations_total",
    "weft_cpu_page_faults_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "node_network_receive_drop_total",
    "node_network_transmit_drop_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "weft_channel_peak_rate_messages_per_second",
    "weft_shm_ring_fill_high_water_ratio",
    "weft_agent_peak_duty_cycle_ratio",
    "weft_agent_headroom_ratio",
    "weft_channel_saturation_messages_per_second",
    "weft_channel_headroom_ratio",
    "weft_stat_alerts_firing",
    "weft_stat_notifications_total",
    "weft_stat_notifications_queued",
    "weft_stat_redis_up",
];

/// The rules' state for the scrape: the alerts firing, and the notifier's
/// counts.
type AlertState = (Vec<(String, BTreeMap<String, String>)>, NotifierStats);

/// The notifier's counts, as the last evaluation left them.
#[derive(Debug, Default, Clone)]
struct NotifierStats {
    sent: u64,
    duplicates: u64,
    dropped: u64,
    queued: usize,
    redis_up: bool,
    configured: bool,
}

fn alert_metrics(
    out: &mut String,
    firing: &[(String, BTreeMap<String, String>)],
    n: &NotifierStats,
) {
    use std::fmt::Write;
    family(
        out,
        "weft_stat_alerts_firing",
        "gauge",
        "Alerts of weft-stat's rules firing now, by rule.",
    );
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, _) in firing {
        *by.entry(name).or_default() += 1;
    }
    for (name, count) in by {
        let _ = writeln!(
            out,
            "weft_stat_alerts_firing{{alertname=\"{}\"}} {count}",
            label_value(name)
        );
    }
    if !n.configured {
        return;
    }
    family(
        out,
        "weft_stat_notifications_total",
        "counter",
        "Notifications: added to the Redis stream (outcome=\"sent\"), already there on a retry (\"duplicate\"), dropped from a full queue (\"dropped\").",
    );
    for (outcome, v) in [
        ("sent", n.sent),
        ("duplicate", n.duplicates),
        ("dropped", n.dropped),
    ] {
        let _ = writeln!(
            out,
            "weft_stat_notifications_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
    family(
        out,
        "weft_stat_notifications_queued",
        "gauge",
        "Notifications waiting for Redis.",
    );
    let _ = writeln!(out, "weft_stat_notifications_queued {}", n.queued);
    family(
        out,
        "weft_stat_redis_up",
        "gauge",
        "1 if the last delivery to Redis worked.",
    );
    let _ = writeln!(out, "weft_stat_redis_up {}", u8::from(n.redis_up));
}

/// The alert loop of `serve`: every evaluation interval, the same metrics a
/// scrape gets (with the burst peaks of its own reader), through the
/// rules; what changes is queued for Redis and sent.
fn evaluate_rules(
    cli: &Cli,
    dir: &std::path::Path,
    lingers: Lingers,
    extras: &Extras,
    mut evaluator: rules::Evaluator,
    mut notifier: Option<weft_notify::Notifier>,
) {
    let interval = evaluator.rules.notify.eval_interval;
    loop {
        let started = Instant::now();
        let text = exposition(cli, dir, lingers, Some(extras), burst::RULES);
        let changes = evaluator.step(started, rules::parse_exposition(&text));
        for n in changes {
            if cli.json || notifier.is_none() {
                eprintln!("weft-stat: alert {}", n.json());
            }
            if let Some(x) = notifier.as_mut() {
                x.push(n);
            }
        }
        let mut stats = NotifierStats::default();
        if let Some(x) = notifier.as_mut() {
            x.flush();
            stats = NotifierStats {
                sent: x.sent,
                duplicates: x.duplicates,
                dropped: x.dropped,
                queued: x.queued(),
                redis_up: x.up(),
                configured: true,
            };
        }
        if let Some(a) = &extras.alerts {
            if let Ok(mut a) = a.lock() {
                *a = (evaluator.firing(), stats);
            }
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// One HTTP request on `conn`.
fn handle(
    conn: &mut std::net::TcpStream,
    cli: &Cli,
    dir: &std::path::Path,
    stats: &ServeStats,
    lingers: Lingers,
    extras: Option<&Extras>,
) {
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    // The whole request within the timeout, not each read: a client that
    // trickles a byte now and then is cut off too.
    let deadline = Instant::now() + IO_TIMEOUT;
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            stats.errors.fetch_add(1, Relaxed);
            return;
        }
        if req.len() > 16 * 1024 {
            stats.errors.fetch_add(1, Relaxed);
            respond(
                conn,
                "431 Request Header Fields Too Large",
                "request too large\n",
                true,
            );
            return;
        }
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
            // Closed, or silent past the timeout: nothing to answer.
            _ => {
                stats.errors.fetch_add(1, Relaxed);
                return;
            }
        }
    }
    let line = String::from_utf8_lossy(&req);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let metrics = target == "/metrics" || target.starts_with("/metrics?");
    match (method, metrics) {
        ("GET" | "HEAD", true) => {
            let started = Instant::now();
            let mut body = exposition(cli, dir, lingers, extras, burst::SCRAPE);
            stats
                .last_scrape_ns
                .store(started.elapsed().as_nanos() as u64, Relaxed);
            stats.scrapes.fetch_add(1, Relaxed);
            body.push_str(&stats.text());
            respond(conn, "200 OK", &body, method == "GET");
        }
        ("GET" | "HEAD", false) => {
            stats.errors.fetch_add(1, Relaxed);
            respond(
                conn,
                "404 Not Found",
                "only /metrics is served here\n",
                method == "GET",
            );
        }
        _ => {
            stats.errors.fetch_add(1, Relaxed);
            respond(
                conn,
                "405 Method Not Allowed",
                "GET or HEAD /metrics\n",
                true,
            );
        }
    }
}

/// Writes an HTTP/1.1 response and closes (`Connection: close`); the body
/// only when `with_body` (not for HEAD).
fn respond(conn: &mut std::net::TcpStream, status: &str, body: &str, with_body: bool) {
    use std::io::Write;
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        let _ = conn.write_all(body.as_bytes());
    }
}

fn main() {
    let cli = Cli::parse();
    cli.check_flags();
    let dir = cli
        .dir
        .clone()
        .unwrap_or_else(|| weft_shm::ShmOptions::default().dir);
    if !dir.is_dir() && !matches!(cli.command, Some(Cmd::Rules { .. } | Cmd::Watch { .. })) {
        let default = weft_shm::region::default_dir();
        let hint = if cli.dir.is_some() {
            "check --dir".to_string()
        } else {
            format!("no weft process has run as this user yet, or they use another WEFT_DIR (the default is {})", default.display())
        };
        if let Some(Cmd::Serve { .. }) = &cli.command {
            // The processes may start later: serve, and say so.
            eprintln!("weft-stat: warning: {} is not a directory ({hint}); serving empty metrics until it is", dir.display());
        } else {
            eprintln!(
                "weft-stat: {} is not a directory: nothing to read ({hint})",
                dir.display()
            );
            std::process::exit(2);
        }
    }
    match &cli.command {
        Some(Cmd::List) => {
            let snaps = read_all(&cli, &dir);
            if snaps.is_empty() {
                nothing_read(&cli, &dir, scan(&dir).len(), "no process");
            }
            list(&snaps, cli.json);
            return;
        }
        Some(Cmd::Loss) => {
            loss(&cli, &dir);
            return;
        }
        Some(Cmd::Errors) => {
            errors(&cli, &dir);
            return;
        }
        Some(Cmd::Histograms) => {
            histograms(&cli, &dir);
            return;
        }
        Some(Cmd::Serve {
            listen,
            linger,
            dead_linger,
            no_host,
            saturation,
            sample_ms,
            rules: rules_file,
            redis,
        }) => {
            if !(sample_ms.is_finite() && *sample_ms >= 0.1) {
                eprintln!("weft-stat: --sample-ms {sample_ms}: expected at least 0.1");
                std::process::exit(2);
            }
            let lingers = Lingers {
                closed: seconds("--linger", *linger),
                dead: seconds("--dead-linger", *dead_linger),
            };
            let tick = Duration::from_secs_f64(sample_ms / 1e3);
            let alerting = if rules_file.is_some() || redis.redis.is_some() {
                if *no_host {
                    eprintln!(
                        "weft-stat serve: --rules and --redis need the levels --no-host leaves out"
                    );
                    std::process::exit(2);
                }
                let r = load_rules(rules_file.as_deref()).unwrap_or_else(|e| {
                    eprintln!("weft-stat: {e}");
                    std::process::exit(2);
                });
                eprintln!(
                    "weft-stat: {} alert rules, evaluated every {:?}{}",
                    r.rules.len(),
                    r.notify.eval_interval,
                    redis.redis.as_ref().map_or(
                        " (no --redis: alerts on stderr)".to_string(),
                        |u| format!(", notifications to {u} stream {}", redis.redis_stream)
                    )
                );
                Some((
                    rules::Evaluator::new(r),
                    redis.target().map(weft_notify::Notifier::new),
                ))
            } else {
                None
            };
            serve(
                &cli,
                &dir,
                listen,
                lingers,
                !no_host,
                saturation.as_deref(),
                tick,
                alerting,
            );
            return;
        }
        Some(Cmd::Host) => {
            host_view(&cli, &dir);
            return;
        }
        Some(Cmd::Rules { file, prometheus }) => {
            match load_rules(file.as_deref()) {
                Ok(r) if *prometheus => print!("{}", r.prometheus_yaml()),
                Ok(r) => println!(
                    "{}: {} rules, all well-formed",
                    file.as_ref()
                        .map_or("the default rules".into(), |f| f.display().to_string()),
                    r.rules.len()
                ),
                Err(e) => {
                    eprintln!("weft-stat: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        Some(Cmd::Watch {
            redis,
            group,
            consumer,
            max,
        }) => {
            let Some(target) = redis.target() else {
                eprintln!("weft-stat watch: give --redis redis://HOST:PORT");
                std::process::exit(2);
            };
            if let Err(e) = weft_notify::watch(&target, group, consumer, *max, cli.json) {
                eprintln!("weft-stat watch: {e}");
                std::process::exit(1);
            }
            return;
        }
        Some(Cmd::Reclaim { dry_run, linger }) => {
            std::process::exit(reclaim(&dir, *dry_run, seconds("--linger", *linger)));
        }
        None => {}
    }
    if cli.once {
        let snaps = read_all(&cli, &dir);
        if snaps.iter().all(|s| s.counters.is_empty()) {
            nothing_read(&cli, &dir, scan(&dir).len(), "no counter");
        }
        view::print_once(&snaps, cli.json);
        return;
    }
    let interval = Duration::from_secs_f64(cli.interval.unwrap_or(1.0));
    view::watch(|| read_all(&cli, &dir), &dir, interval, cli.json);
}
