//! The counters view: a table (once, or refreshed like `top`) or JSON lines.
//!
//! Each counter is one row. A counter (it only grows) shows its rate over
//! the refresh interval; a gauge (a position, a capacity, the longest
//! cycle) shows its value and no rate; time counters (`*_ns` that only
//! grow: busy, idle, total) show their rate as a share of one core
//! (`37.5%`: 375 ms of each second).
//!
//! Live (`--watch`, the default on a terminal): the header stays at the
//! top, rows are cut to the terminal's height and width, `s` changes the
//! sort (rate, value, type, pid), `q` (or Ctrl-C) quits.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_counters::types;

use crate::{json_str, state_name, type_name, utc_now, Snapshot, JSON_SCHEMA};

/// Key of a counter across two reads: file, record, type, key.
pub(crate) type CounterKey = (PathBuf, usize, u32, u64);

/// The values of every counter in `snaps`, for the next rates.
pub(crate) fn values(snaps: &[Snapshot]) -> HashMap<CounterKey, u64> {
    snaps
        .iter()
        .flat_map(|s| {
            s.counters
                .iter()
                .map(|c| ((s.path.clone(), c.id, c.type_id, c.key), c.value))
        })
        .collect()
}

/// How the live view sorts its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sort {
    /// Largest rate first (gauges last).
    Rate,
    /// Largest value first.
    Value,
    /// By type name, then label.
    Type,
    /// By pid, then type.
    Pid,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Rate => Sort::Value,
            Sort::Value => Sort::Type,
            Sort::Type => Sort::Pid,
            Sort::Pid => Sort::Rate,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Rate => "rate",
            Sort::Value => "value",
            Sort::Type => "type",
            Sort::Pid => "pid",
        }
    }
}

/// One counter, read.
struct Row<'a> {
    pid: u32,
    node: &'a str,
    state: &'static str,
    type_name: String,
    type_id: u32,
    key: u64,
    value: u64,
    /// Per second; `None` for a gauge or before a second read.
    rate: Option<f64>,
    /// The rate is ns per second: shown as a share of a core.
    time: bool,
    gauge: bool,
    label: &'a str,
}

fn rows<'a>(
    snaps: &'a [Snapshot],
    before: &HashMap<CounterKey, u64>,
    secs: Option<f64>,
) -> Vec<Row<'a>> {
    let mut out = Vec::new();
    for s in snaps {
        for c in &s.counters {
            let metric = types::metric(c.type_id);
            let gauge = metric.is_some_and(|m| !m.counter);
            let rate = secs.filter(|_| !gauge).and_then(|secs| {
                before
                    .get(&(s.path.clone(), c.id, c.type_id, c.key))
                    .map(|&b| c.value.wrapping_sub(b) as f64 / secs)
            });
            out.push(Row {
                pid: s.pid,
                node: &s.label,
                state: state_name(s.state),
                type_name: type_name(c.type_id),
                type_id: c.type_id,
                key: c.key,
                value: c.value,
                rate,
                time: metric.is_some_and(|m| m.counter && m.divisor == 1e9),
                gauge,
                label: &c.label,
            });
        }
    }
    out
}

fn sort_rows(rows: &mut [Row<'_>], sort: Sort) {
    match sort {
        Sort::Rate => rows.sort_by(|a, b| {
            let r = |x: &Row<'_>| x.rate.unwrap_or(-1.0);
            r(b).total_cmp(&r(a))
        }),
        Sort::Value => rows.sort_by_key(|r| std::cmp::Reverse(r.value)),
        Sort::Type => rows.sort_by(|a, b| (&a.type_name, a.label).cmp(&(&b.type_name, b.label))),
        Sort::Pid => rows.sort_by(|a, b| (a.pid, &a.type_name).cmp(&(b.pid, &b.type_name))),
    }
}

fn rate_text(r: &Row<'_>) -> String {
    match (r.gauge, r.rate) {
        (true, _) => "gauge".into(),
        (false, None) => "-".into(),
        (false, Some(v)) if r.time => format!("{:.1}%", v / 1e7),
        (false, Some(v)) => format!("{v:.1}"),
    }
}

/// The table's columns; the label, last, takes what is left of the width.
const HEADER: &str =
    "    pid node         st type                     key         value       /s  label";

fn line(r: &Row<'_>) -> String {
    let node: String = r.node.chars().take(12).collect();
    let type_name: String = r.type_name.chars().take(24).collect();
    // The state's first letter: a(live), h(ung), d(ead), c(losed).
    let state = &r.state[..1];
    format!(
        "{:>7} {:<12} {:<2} {:<24} {:>4} {:>13} {:>8}  {}",
        r.pid,
        node,
        state,
        type_name,
        r.key,
        r.value,
        rate_text(r),
        r.label
    )
}

/// Prints every counter once, as a table or JSON lines (no rates).
pub(crate) fn print_once(snaps: &[Snapshot], json: bool) {
    let rows = rows(snaps, &HashMap::new(), None);
    if json {
        let time = utc_now();
        for r in &rows {
            print_json(r, &time);
        }
        return;
    }
    println!("{HEADER}");
    for r in &rows {
        println!("{}", line(r));
    }
}

fn print_json(r: &Row<'_>, time: &str) {
    println!(
        "{{\"schema\":{JSON_SCHEMA},\"time\":\"{time}\",\"pid\":{},\"process\":{},\"state\":\"{}\",\"type\":\"{}\",\"type_id\":{},\"key\":{},\"label\":{},\"value\":{},\"gauge\":{},\"per_s\":{}}}",
        r.pid,
        json_str(r.node),
        r.state,
        r.type_name,
        r.type_id,
        r.key,
        json_str(r.label),
        r.value,
        r.gauge,
        r.rate.map_or_else(|| "null".into(), |v| format!("{v:.1}"))
    );
}

/// The terminal's rows and columns (`stty size`); `None` when stdout is
/// not a terminal.
fn terminal_size() -> Option<(usize, usize)> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<usize>().ok());
    Some((it.next()??, it.next()??))
}

/// The terminal in "one key at a time, no echo" mode while it lives (so `q`
/// quits without Enter); restored on drop. `None` if stdin is not a
/// terminal.
struct RawKeys {
    saved: nix::sys::termios::Termios,
}

impl RawKeys {
    fn new() -> Option<Self> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        // No line editing, no echo, and Ctrl-C as a key (so the terminal is
        // always restored: we quit on it).
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }

    /// Waits up to `timeout` for a key.
    fn key(&self, timeout: Duration) -> Option<u8> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::Read;
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
        if poll(&mut fds, PollTimeout::from(ms)).ok()? == 0 {
            return None;
        }
        let mut b = [0u8; 1];
        (stdin.lock().read(&mut b).ok()? == 1).then_some(b[0])
    }
}

impl Drop for RawKeys {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Refreshes every `interval` until `q`: on a terminal, a screen like
/// `top`; otherwise (or with `json`) a block of lines per refresh, each
/// JSON line stamped with its time.
pub(crate) fn watch(
    read: impl Fn() -> Vec<Snapshot>,
    dir: &std::path::Path,
    interval: Duration,
    json: bool,
) {
    let keys = if json { None } else { RawKeys::new() };
    let mut sort = Sort::Rate;
    let mut before = values(&read());
    let mut at = Instant::now();
    let mut wait_until = at + interval;
    loop {
        // Wait out the interval, answering keys meanwhile.
        loop {
            let left = wait_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match &keys {
                Some(k) => match k.key(left) {
                    Some(b'q' | b'Q' | 3) => return,
                    Some(b's' | b'S') => {
                        sort = sort.next();
                        break;
                    }
                    _ => {}
                },
                None => std::thread::sleep(left),
            }
        }
        let snaps = read();
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        wait_until = at + interval;
        let mut rows = rows(&snaps, &before, Some(secs));
        sort_rows(&mut rows, sort);
        if json {
            let time = utc_now();
            for r in &rows {
                print_json(r, &time);
            }
        } else {
            draw(&rows, &snaps, dir, interval, sort, keys.is_some());
        }
        let _ = std::io::stdout().flush();
        before = values(&snaps);
    }
}

/// One screen: two header lines, then as many rows as fit, each cut to the
/// width.
fn draw(
    rows: &[Row<'_>],
    snaps: &[Snapshot],
    dir: &std::path::Path,
    interval: Duration,
    sort: Sort,
    keys: bool,
) {
    let size = terminal_size();
    let (height, width) = size.unwrap_or((usize::MAX, usize::MAX));
    let cut = |s: &str| -> String { s.chars().take(width).collect() };
    let mut out = String::new();
    if size.is_some() {
        // Clear the screen and go home, as `top` does.
        out.push_str("\x1b[2J\x1b[H");
    }
    let alive = snaps
        .iter()
        .filter(|s| s.state == weft_counters::ProcessState::Alive)
        .count();
    out.push_str(&cut(&format!(
        "weft-stat  sort: {}{}  every {:.1} s  {} processes ({alive} alive)  {}",
        sort.name(),
        if keys { " (s: sort, q: quit)" } else { "" },
        interval.as_secs_f64(),
        snaps.len(),
        dir.display(),
    )));
    out.push('\n');
    out.push_str(&cut(HEADER));
    out.push('\n');
    let room = height.saturating_sub(3);
    for r in rows.iter().take(room) {
        out.push_str(&cut(&line(r)));
        out.push('\n');
    }
    if rows.len() > room {
        out.push_str(&cut(&format!(
            "... {} more rows (a taller terminal, or --pid/--type/--label)",
            rows.len() - room
        )));
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no counters match)\n");
    }
    print!("{out}");
}
