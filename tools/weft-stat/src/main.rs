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

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
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
    /// Seconds between refreshes (and the window of the rates).
    #[arg(long, global = true, default_value_t = 1.0)]
    interval: f64,
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
    },
}

/// One counters file, read now.
struct Snapshot {
    path: PathBuf,
    pid: u32,
    label: String,
    state: ProcessState,
    heartbeat_age_ms: Option<u64>,
    counters: Vec<CounterValue>,
    histograms: Vec<weft_counters::HistogramValue>,
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
            counters,
            histograms: r.histograms(),
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
            "{:>8} {:<6} {:<24} {:>10} {:>16} {:>14}  label",
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
                    "{:>8} {:<6} {:<24} {:>10} {:>16} {:>14}  {}",
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
    for r in readers(cli, dir) {
        for l in r.loss_report() {
            if cli.json {
                println!(
                    "{{\"pid\":{},\"process\":{},\"state\":\"{}\",\"stream\":{},\"session\":{},\"channel\":{},\"first\":\"{}\",\"last\":\"{}\",\"events\":{},\"datagrams\":{},\"bytes\":{}}}",
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
    const QS: [(f64, &str); 5] = [
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
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
    for r in readers(cli, dir) {
        for h in r.histograms() {
            let q: Vec<u64> = QS.iter().map(|(q, _)| h.quantile(*q)).collect();
            if cli.json {
                let qs: Vec<String> = QS
                    .iter()
                    .zip(&q)
                    .map(|((_, n), v)| format!("\"{n}_ns\":{v}"))
                    .collect();
                println!(
                    "{{\"pid\":{},\"process\":{},\"state\":\"{}\",\"type\":\"{}\",\"key\":{},\"label\":{},\"count\":{},{}}}",
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
    if !cli.json {
        println!(
            "{:>8} {:<6} {:>10} {:<24} {:<24}  error",
            "pid", "state", "count", "first", "last"
        );
    }
    for r in readers(cli, dir) {
        for e in r.errors() {
            if cli.json {
                println!(
                    "{{\"pid\":{},\"process\":{},\"state\":\"{}\",\"count\":{},\"first\":\"{}\",\"last\":\"{}\",\"error\":{}}}",
                    r.pid(),
                    json_str(&r.process_label()),
                    state_name(r.process_state()),
                    e.count,
                    utc(e.first_wall_ns),
                    utc(e.last_wall_ns),
                    json_str(&e.text)
                );
            } else {
                println!(
                    "{:>8} {:<6} {:>10} {:<24} {:<24}  {}",
                    r.pid(),
                    state_name(r.process_state()),
                    e.count,
                    utc(e.first_wall_ns),
                    utc(e.last_wall_ns),
                    e.text
                );
            }
        }
    }
}

/// A Prometheus label value, escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text exposition format (version 0.0.4) of every counter in `snaps`,
/// in base units, grouped by metric family.
fn metrics_text(snaps: &[Snapshot]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP weft_process_up Whether the process that writes a counters file is alive (1) or hung or dead (0).\n# TYPE weft_process_up gauge"
    );
    for s in snaps {
        let _ = writeln!(
            out,
            "weft_process_up{{process=\"{}\",pid=\"{}\"}} {}",
            label_value(&s.label),
            s.pid,
            u8::from(s.state == ProcessState::Alive)
        );
    }
    let _ = writeln!(
        out,
        "# HELP weft_process_heartbeat_age_seconds Time since the process last stored its heartbeat.\n# TYPE weft_process_heartbeat_age_seconds gauge"
    );
    for s in snaps {
        if let Some(ms) = s.heartbeat_age_ms {
            let _ = writeln!(
                out,
                "weft_process_heartbeat_age_seconds{{process=\"{}\",pid=\"{}\"}} {}",
                label_value(&s.label),
                s.pid,
                ms as f64 / 1e3
            );
        }
    }
    for m in types::METRICS {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            m.name,
            m.help,
            m.name,
            if m.counter { "counter" } else { "gauge" }
        );
        for s in snaps {
            for c in s.counters.iter().filter(|c| c.type_id == m.type_id) {
                let key = match m.key {
                    types::KeyKind::Agent => format!(",agent=\"{}\"", c.key),
                    types::KeyKind::Task => format!(",task=\"{}\"", c.key),
                    types::KeyKind::Stream => {
                        // The label starts with the channel: "udp-send GROUP:PORT
                        // stream S what" or "shm:NAME stream S what".
                        let channel = c.label.split(" stream ").next().unwrap_or_default();
                        format!(",stream=\"{}\",channel=\"{}\"", c.key, label_value(channel))
                    }
                    types::KeyKind::Process => String::new(),
                };
                let v = if m.divisor == 1.0 {
                    c.value.to_string()
                } else {
                    (c.value as f64 / m.divisor).to_string()
                };
                let _ = writeln!(
                    out,
                    "{}{{process=\"{}\",pid=\"{}\"{key}}} {v}",
                    m.name,
                    label_value(&s.label),
                    s.pid
                );
            }
        }
    }
    // Histograms in seconds, on fixed bounds (a fine bucket straddling a
    // bound counts above it).
    const LE: [f64; 16] = [
        1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2,
        1e-1, 1.0,
    ];
    for (type_id, name, help, key) in types::HISTOGRAM_METRICS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for s in snaps {
            for h in s.histograms.iter().filter(|h| h.type_id == *type_id) {
                let key = match key {
                    types::KeyKind::Agent => format!(",agent=\"{}\"", h.key),
                    types::KeyKind::Task => format!(",task=\"{}\"", h.key),
                    types::KeyKind::Process => String::new(),
                    types::KeyKind::Stream => format!(
                        ",stream=\"{}\",channel=\"{}\"",
                        h.key,
                        label_value(h.label.split(" stream ").next().unwrap_or_default())
                    ),
                };
                let labels = format!(
                    "process=\"{}\",pid=\"{}\"{key}",
                    label_value(&s.label),
                    s.pid
                );
                for le in LE {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"{le}\"}} {}",
                        h.count_at_most((le * 1e9) as u64)
                    );
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum as f64 / 1e9);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
    }
    out
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

/// Serves `/metrics` (GET and HEAD) until killed: each connection on a
/// thread of its own, at most [`MAX_CONNECTIONS`] at once, each bounded by
/// [`IO_TIMEOUT`] to send its request and to take the reply, so idle or
/// slow clients cannot hold a scrape up.
fn serve(cli: &Cli, dir: &std::path::Path, listen: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let listener = std::net::TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("weft-stat: cannot listen on {listen}: {e}");
        std::process::exit(2);
    });
    eprintln!("weft-stat: serving http://{listen}/metrics");
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
                handle(&mut conn, cli, dir, stats);
                stats.open.fetch_sub(1, Relaxed);
            });
        }
    });
}

/// One HTTP request on `conn`.
fn handle(conn: &mut std::net::TcpStream, cli: &Cli, dir: &std::path::Path, stats: &ServeStats) {
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
            let mut body = metrics_text(&read_all(cli, dir));
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
    let dir = cli
        .dir
        .clone()
        .unwrap_or_else(|| weft_shm::ShmOptions::default().dir);
    if !dir.is_dir() {
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
            list(&read_all(&cli, &dir), cli.json);
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
        Some(Cmd::Serve { listen }) => {
            serve(&cli, &dir, listen);
            return;
        }
        None => {}
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
