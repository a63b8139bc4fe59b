//! `weft-stat`: what every weft process on this host is doing, read live from
//! their counters files without touching their hot paths.
//!
//! ```text
//! weft-stat list                 # processes, their state and heartbeat age
//! weft-stat                      # every counter with its rate, refreshed each second
//! weft-stat --once --json        # one JSON object per counter, for scripts
//! weft-stat --pid 4242 --type task_work
//! ```
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use weft_counters::{scan, types, CounterValue, CountersReader, ProcessState};

#[derive(Parser)]
#[command(
    name = "weft-stat",
    about = "Live counters of the weft processes on this host"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The weft directory. Default: $WEFT_DIR, else /dev/shm/weft.
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
    /// Print once and exit instead of refreshing.
    #[arg(long, global = true)]
    once: bool,
    /// One JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds between refreshes (and the window of the rates).
    #[arg(long, global = true, default_value_t = 1.0)]
    interval: f64,
}

#[derive(Subcommand)]
enum Cmd {
    /// The weft processes: pid, label, state, heartbeat age, counters.
    List,
}

/// One counters file, read now.
struct Snapshot {
    path: PathBuf,
    pid: u32,
    label: String,
    state: ProcessState,
    heartbeat_age_ms: Option<u64>,
    counters: Vec<CounterValue>,
}

fn type_name(t: u32) -> String {
    types::name(t).map_or_else(|| format!("type_{t}"), str::to_owned)
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

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
            .collect();
        out.push(Snapshot {
            pid: r.pid(),
            label: r.process_label(),
            state: r.process_state(),
            heartbeat_age_ms: r.heartbeat_age().map(|d| d.as_millis() as u64),
            counters,
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
    }
}

fn list(snaps: &[Snapshot], json: bool) {
    if !json {
        println!(
            "{:>8}  {:<24} {:<6} {:>13} {:>9}  file",
            "pid", "label", "state", "heartbeat ms", "counters"
        );
    }
    for s in snaps {
        let age = s
            .heartbeat_age_ms
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        if json {
            println!(
                "{{\"pid\":{},\"label\":{},\"state\":\"{}\",\"heartbeat_age_ms\":{},\"counters\":{},\"file\":{}}}",
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

/// Key of a counter across two reads: file, record, type, key.
type CounterKey = (PathBuf, usize, u32, u64);

fn show(snaps: &[Snapshot], before: &HashMap<CounterKey, u64>, secs: Option<f64>, json: bool) {
    if !json {
        println!(
            "{:>8} {:<6} {:<20} {:>10} {:>16} {:>14}  label",
            "pid", "state", "type", "key", "value", "per second"
        );
    }
    for s in snaps {
        for c in &s.counters {
            let rate = secs.and_then(|secs| {
                before
                    .get(&(s.path.clone(), c.id, c.type_id, c.key))
                    .map(|&b| c.value.wrapping_sub(b) as f64 / secs)
            });
            if json {
                println!(
                    "{{\"pid\":{},\"process\":{},\"state\":\"{}\",\"type\":\"{}\",\"type_id\":{},\"key\":{},\"label\":{},\"value\":{},\"per_s\":{}}}",
                    s.pid,
                    json_str(&s.label),
                    state_name(s.state),
                    type_name(c.type_id),
                    c.type_id,
                    c.key,
                    json_str(&c.label),
                    c.value,
                    rate.map_or_else(|| "null".into(), |r| format!("{r:.1}"))
                );
            } else {
                println!(
                    "{:>8} {:<6} {:<20} {:>10} {:>16} {:>14}  {}",
                    s.pid,
                    state_name(s.state),
                    type_name(c.type_id),
                    c.key,
                    c.value,
                    rate.map_or_else(|| "-".into(), |r| format!("{r:.1}")),
                    c.label
                );
            }
        }
    }
}

fn values(snaps: &[Snapshot]) -> HashMap<CounterKey, u64> {
    snaps
        .iter()
        .flat_map(|s| {
            s.counters
                .iter()
                .map(|c| ((s.path.clone(), c.id, c.type_id, c.key), c.value))
        })
        .collect()
}

fn main() {
    let cli = Cli::parse();
    let dir = cli
        .dir
        .clone()
        .unwrap_or_else(|| weft_shm::ShmOptions::default().dir);
    if let Some(Cmd::List) = cli.command {
        list(&read_all(&cli, &dir), cli.json);
        return;
    }
    if cli.once {
        show(&read_all(&cli, &dir), &HashMap::new(), None, cli.json);
        return;
    }
    let interval = Duration::from_secs_f64(cli.interval.max(0.05));
    let mut before = values(&read_all(&cli, &dir));
    let mut at = Instant::now();
    loop {
        std::thread::sleep(interval);
        let snaps = read_all(&cli, &dir);
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        if !cli.json {
            // Clear the screen and go home, as `top` does.
            print!("\x1b[2J\x1b[H");
            println!(
                "weft-stat  {}  every {:.1} s  (Ctrl-C to quit)",
                dir.display(),
                interval.as_secs_f64()
            );
        }
        show(&snaps, &before, Some(secs), cli.json);
        before = values(&snaps);
    }
}
