//! Burst metrics and headroom: what a once-a-second average hides.
//!
//! A sampler thread of `weft-stat serve` reads, a thousand times a second,
//! the few counters a burst moves (each channel end's message count, each
//! shared-memory ring's send and receive positions and capacity, each
//! agent's busy and idle time) straight from the processes' counters files:
//! two loads a counter, no allocation, nothing asked of the processes. From
//! them it keeps, until the next scrape takes them:
//!
//! - per channel end, the peak message rate over any 1 ms and any 1 s
//!   window (`weft_channel_peak_rate_messages_per_second{window}`);
//! - per ring, the fullest it got: the newest publication's position minus
//!   the slowest subscription's, over the capacity
//!   (`weft_shm_ring_fill_high_water_ratio`), so a 1 ms burst that filled
//!   90 % of a ring shows even when the 1 s average is 5 %;
//! - per agent, the peak duty cycle over 1 s windows
//!   (`weft_agent_peak_duty_cycle_ratio`).
//!
//! **Headroom.** With a saturation rate for a channel's kind of path,
//! measured on this host by `weft-bench stress` (its results store,
//! `--saturation FILE`), a publication's headroom is `1 - peak 1 ms rate /
//! saturation rate` (`weft_channel_headroom_ratio`; the rate used is
//! exported as `weft_channel_saturation_messages_per_second{path}`); an
//! agent's is `1 - peak duty cycle` (`weft_agent_headroom_ratio`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_counters::{scan, types, CountersReader, ProcessState};

/// How often it looks for new files and counters.
const RESCAN: Duration = Duration::from_secs(1);

/// What one tracked counter is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum What {
    /// A channel end's messages; the series' labels.
    Messages(String),
    /// A ring's publication position: (channel, stream).
    SendPosition(String, u64),
    ReceivePosition(String, u64),
    Capacity(String, u64),
    /// An agent's busy and idle time; its labels.
    Busy(String),
    Idle(String),
}

struct Tracked {
    reader: usize,
    id: usize,
    state: u64,
    what: What,
    last: u64,
}

/// A series' 1 s window of a count.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    sum: u64,
}

/// The peaks since the last scrape.
#[derive(Debug, Default, Clone)]
pub struct Peaks {
    /// Series labels -> (peak 1 ms rate, peak 1 s rate), messages/s.
    pub rates: BTreeMap<String, (f64, f64)>,
    /// (channel, stream) -> the ring's fullest, a ratio.
    pub fill: BTreeMap<(String, u64), f64>,
    /// Agent labels -> peak duty cycle over 1 s windows.
    pub duty: BTreeMap<String, f64>,
}

/// Who takes the peaks: each reader has its own "since I last took them".
pub const SCRAPE: usize = 0;
/// The alert rules' evaluation.
pub const RULES: usize = 1;

/// The sampler thread and what it found, per reader.
pub struct Sampler {
    peaks: Arc<Mutex<[Peaks; 2]>>,
    stop: Arc<AtomicBool>,
    /// The short peak window's label: the tick ("1ms" by default).
    pub window: String,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The labels of a channel end's series, as the counters export has them.
fn stream_series(node: &str, pid: u32, type_id: u32, key: u64, label: &str) -> String {
    format!(
        "node=\"{}\",pid=\"{pid}\"{}",
        crate::label_value(node),
        crate::key_labels(types::KeyKind::Stream, type_id, key, label)
    )
}

/// The labels of an agent's series: its busy and idle counters (whose own
/// labels differ in their suffix) give the same, so they meet in one window.
fn agent_series(node: &str, pid: u32, agent: u64, type_id: u32, label: &str) -> String {
    format!(
        "node=\"{}\",pid=\"{pid}\",agent=\"{agent}\",name=\"{}\"",
        crate::label_value(node),
        crate::label_value(types::subject(type_id, label))
    )
}

/// The channel and stream of a channel end's counter label.
fn channel_of(label: &str) -> String {
    crate::stream_labels(label).1.to_string()
}

impl Sampler {
    /// Starts sampling the counters files in `dir` every `tick` (1 ms:
    /// the "1ms" window is then one tick).
    pub fn start(dir: PathBuf, tick: Duration) -> Self {
        let peaks = Arc::new(Mutex::new([Peaks::default(), Peaks::default()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peaks.clone(), stop.clone());
        std::thread::Builder::new()
            .name("weft-stat-sampler".into())
            .spawn(move || run(&dir, &p, &s, tick))
            .expect("start the sampler thread");
        let ms = tick.as_secs_f64() * 1e3;
        Self {
            peaks,
            stop,
            window: format!("{}ms", (ms * 1e3).round() / 1e3),
        }
    }

    /// The peaks since `reader`'s last call (and starts new ones for it).
    pub fn take(&self, reader: usize) -> Peaks {
        self.peaks
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(reader).map(std::mem::take))
            .unwrap_or_default()
    }
}

/// Finds the counters to track in every live file of `dir`.
fn discover(dir: &Path) -> (Vec<CountersReader>, Vec<Tracked>) {
    let mut readers = Vec::new();
    let mut tracked = Vec::new();
    for (_, r) in scan(dir) {
        let Ok(r) = r else { continue };
        // A hung process's counters do not move, but one whose heartbeat
        // is late (an invoker-mode node between its calls) still counts.
        if matches!(r.process_state(), ProcessState::Dead | ProcessState::Closed) {
            continue;
        }
        let (node, pid) = (r.process_label(), r.pid());
        let index = readers.len();
        for c in r.counters() {
            let what = match c.type_id {
                types::SHM_SENT_MESSAGES
                | types::SHM_RECEIVED_MESSAGES
                | types::UDP_SENT_MESSAGES
                | types::UDP_RECEIVED_MESSAGES => {
                    What::Messages(stream_series(&node, pid, c.type_id, c.key, &c.label))
                }
                types::SHM_SEND_POSITION => What::SendPosition(channel_of(&c.label), c.key),
                types::SHM_RECEIVE_POSITION => What::ReceivePosition(channel_of(&c.label), c.key),
                types::SHM_RING_CAPACITY => What::Capacity(channel_of(&c.label), c.key),
                types::AGENT_BUSY_NS | types::AGENT_IDLE_NS => {
                    let agent = agent_series(&node, pid, c.key, c.type_id, &c.label);
                    if c.type_id == types::AGENT_BUSY_NS {
                        What::Busy(agent)
                    } else {
                        What::Idle(agent)
                    }
                }
                _ => continue,
            };
            let Some(state) = r.record_state(c.id) else {
                continue;
            };
            tracked.push(Tracked {
                reader: index,
                id: c.id,
                state,
                what,
                last: c.value,
            });
        }
        readers.push(r);
    }
    (readers, tracked)
}

fn run(dir: &Path, peaks: &Mutex<[Peaks; 2]>, stop: &AtomicBool, tick: Duration) {
    let (mut readers, mut tracked) = discover(dir);
    let mut rescanned = Instant::now();
    let mut prev = Instant::now();
    let mut windows: HashMap<What, Window> = HashMap::new();
    // Agents: the 1 s window's busy and idle sums.
    let mut agent_windows: HashMap<String, (Instant, u64, u64)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let now = Instant::now();
        if now.duration_since(rescanned) >= RESCAN {
            // Keep the last values of the counters still there, so no
            // delta is lost across a rescan.
            let lasts: HashMap<What, u64> =
                tracked.iter().map(|t| (t.what.clone(), t.last)).collect();
            (readers, tracked) = discover(dir);
            for t in &mut tracked {
                if let Some(&l) = lasts.get(&t.what) {
                    t.last = l.min(t.last);
                }
            }
            rescanned = now;
        }
        let dt = now.duration_since(prev).as_secs_f64().max(1e-6);
        prev = now;
        let mut positions: BTreeMap<(String, u64), (u64, u64, u64)> = BTreeMap::new();
        let Ok(mut slots) = peaks.lock() else { return };
        let mut p = Peaks::default();
        for t in &mut tracked {
            let Some(v) = readers
                .get(t.reader)
                .and_then(|r| r.value_if(t.id, t.state))
            else {
                continue;
            };
            let delta = v.saturating_sub(t.last);
            t.last = v;
            match &t.what {
                What::Messages(labels) => {
                    let e = p.rates.entry(labels.clone()).or_default();
                    e.0 = e.0.max(delta as f64 / dt);
                    let w = windows
                        .entry(t.what.clone())
                        .or_insert(Window { start: now, sum: 0 });
                    w.sum += delta;
                    let span = now.duration_since(w.start);
                    if span >= Duration::from_secs(1) {
                        e.1 = e.1.max(w.sum as f64 / span.as_secs_f64());
                        *w = Window { start: now, sum: 0 };
                    }
                }
                What::SendPosition(ch, s) => {
                    let e = positions
                        .entry((ch.clone(), *s))
                        .or_insert((0, u64::MAX, 0));
                    e.0 = e.0.max(v);
                }
                What::ReceivePosition(ch, s) => {
                    let e = positions
                        .entry((ch.clone(), *s))
                        .or_insert((0, u64::MAX, 0));
                    e.1 = e.1.min(v);
                }
                What::Capacity(ch, s) => {
                    let e = positions
                        .entry((ch.clone(), *s))
                        .or_insert((0, u64::MAX, 0));
                    e.2 = e.2.max(v);
                }
                What::Busy(a) | What::Idle(a) => {
                    let busy = matches!(t.what, What::Busy(_));
                    let w = agent_windows.entry(a.clone()).or_insert((now, 0, 0));
                    if busy {
                        w.1 += delta;
                    } else {
                        w.2 += delta;
                    }
                }
            }
        }
        for (key, (send, recv, cap)) in positions {
            if cap > 0 && recv != u64::MAX && send >= recv {
                let e = p.fill.entry(key).or_default();
                *e = e.max((send - recv) as f64 / cap as f64);
            }
        }
        for (a, w) in agent_windows.iter_mut() {
            if now.duration_since(w.0) >= Duration::from_secs(1) {
                let total = (w.1 + w.2).max(1) as f64;
                let e = p.duty.entry(a.clone()).or_default();
                *e = e.max(w.1 as f64 / total);
                *w = (now, 0, 0);
            }
        }
        // This tick's observations raise every reader's peaks.
        for slot in slots.iter_mut() {
            for (k, (ms, s)) in &p.rates {
                let e = slot.rates.entry(k.clone()).or_default();
                e.0 = e.0.max(*ms);
                e.1 = e.1.max(*s);
            }
            for (k, v) in &p.fill {
                let e = slot.fill.entry(k.clone()).or_default();
                *e = e.max(*v);
            }
            for (k, v) in &p.duty {
                let e = slot.duty.entry(k.clone()).or_default();
                *e = e.max(*v);
            }
        }
    }
}

/// Saturation rates measured on this host, by path (`shm-broadcast-2`,
/// `udp-1`, `gateway` …): the newest run of a `weft-bench stress` results
/// store.
#[derive(Debug, Default, Clone)]
pub struct Saturation {
    pub rates: BTreeMap<String, f64>,
    pub msg_bytes: usize,
    pub source: String,
}

impl Saturation {
    /// Reads the newest run of `file` (a `stress.jsonl`).
    pub fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut rows: Vec<(f64, String, String, f64, usize, String)> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", file.display()))?;
            let (Some(t), Some(run), Some(path), Some(sat)) = (
                v["time_s"].as_f64(),
                v["run"].as_str(),
                v["path"].as_str(),
                v["saturation_per_s"].as_f64(),
            ) else {
                continue;
            };
            rows.push((
                t,
                run.to_string(),
                path.to_string(),
                sat,
                v["msg_bytes"].as_u64().unwrap_or(64) as usize,
                v["commit"].as_str().unwrap_or("").to_string(),
            ));
        }
        let newest = rows
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .ok_or_else(|| format!("{}: no stress run in it", file.display()))?
            .1
            .clone();
        let mut out = Saturation {
            source: format!("{} run {newest}", file.display()),
            ..Saturation::default()
        };
        for (_, run, path, sat, bytes, _) in rows.into_iter().filter(|r| r.1 == newest) {
            out.rates.insert(path, sat);
            out.msg_bytes = bytes;
            let _ = run;
        }
        Ok(out)
    }

    /// The measured path nearest to a channel of this kind with `count`
    /// subscribers (or publishers): the same count, else the next larger
    /// (more readers saturate sooner: conservative), else the largest.
    pub fn path_for(&self, prefix: &str, count: usize) -> Option<(&str, f64)> {
        let mut candidates: Vec<(usize, &str, f64)> = self
            .rates
            .iter()
            .filter_map(|(p, r)| Some((p.strip_prefix(prefix)?.parse().ok()?, p.as_str(), *r)))
            .collect();
        candidates.sort_by_key(|c| c.0);
        candidates
            .iter()
            .find(|c| c.0 >= count)
            .or(candidates.last())
            .map(|c| (c.1, c.2))
    }
}

/// Appends the burst and headroom families for `peaks` to `out`. `snaps`
/// says how many subscriptions and publications each channel has (which
/// measured path it resembles).
pub fn metrics(
    out: &mut String,
    window: &str,
    peaks: &Peaks,
    saturation: Option<&Saturation>,
    ends: &[(String, String, u64)],
) {
    crate::family(
        out,
        "weft_channel_peak_rate_messages_per_second",
        "gauge",
        "A channel end's highest message rate over any sampling tick (window=\"1ms\" by default: weft-stat serve --sample-ms) or 1 s (window=\"1s\") since the last scrape.",
    );
    for (labels, (ms, s)) in &peaks.rates {
        let _ = writeln!(
            out,
            "weft_channel_peak_rate_messages_per_second{{{labels},window=\"{window}\"}} {ms}"
        );
        let _ = writeln!(
            out,
            "weft_channel_peak_rate_messages_per_second{{{labels},window=\"1s\"}} {s}"
        );
    }
    crate::family(
        out,
        "weft_shm_ring_fill_high_water_ratio",
        "gauge",
        "The fullest a shared-memory ring got since the last scrape: the newest publication's position minus the slowest subscription's, over the capacity, sampled every millisecond.",
    );
    for ((channel, stream), fill) in &peaks.fill {
        let _ = writeln!(
            out,
            "weft_shm_ring_fill_high_water_ratio{{channel=\"{}\",stream=\"{stream}\"}} {fill}",
            crate::label_value(channel)
        );
    }
    crate::family(
        out,
        "weft_agent_peak_duty_cycle_ratio",
        "gauge",
        "An agent's highest duty cycle (busy over busy plus idle) over 1 s windows since the last scrape.",
    );
    for (labels, d) in &peaks.duty {
        let _ = writeln!(out, "weft_agent_peak_duty_cycle_ratio{{{labels}}} {d}");
    }
    crate::family(
        out,
        "weft_agent_headroom_ratio",
        "gauge",
        "1 - the agent's peak duty cycle: how much of its core's time it has left.",
    );
    for (labels, d) in &peaks.duty {
        let _ = writeln!(out, "weft_agent_headroom_ratio{{{labels}}} {}", 1.0 - d);
    }
    let Some(sat) = saturation else {
        return;
    };
    crate::family(
        out,
        "weft_channel_saturation_messages_per_second",
        "gauge",
        "The saturation rate measured on this host (weft-bench stress) for the kind of path a publication's channel is: the rate headroom is judged against.",
    );
    let mut headroom = String::new();
    for (labels, (ms, _)) in &peaks.rates {
        if !labels.contains("role=\"publication\"") && !labels.contains("role=\"gateway-in\"") {
            continue;
        }
        let channel = labels
            .split("channel=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        let stream: u64 = labels
            .split("stream=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let count = |role: &str| {
            ends.iter()
                .filter(|(r, c, s)| r == role && c == channel && *s == stream)
                .count()
                .max(1)
        };
        let path = if labels.contains("role=\"gateway-in\"") {
            sat.rates.get("gateway").map(|r| ("gateway", *r))
        } else if channel.starts_with("udp://") {
            sat.path_for("udp-", count("subscription"))
        } else if count("publication") > 1 {
            sat.path_for("shm-many-", count("publication"))
        } else {
            sat.path_for("shm-broadcast-", count("subscription"))
        };
        let Some((path, rate)) = path else { continue };
        let _ = writeln!(
            out,
            "weft_channel_saturation_messages_per_second{{{labels},path=\"{path}\",msg_bytes=\"{}\"}} {rate}",
            sat.msg_bytes
        );
        let _ = writeln!(
            headroom,
            "weft_channel_headroom_ratio{{{labels}}} {}",
            1.0 - ms / rate.max(1.0)
        );
    }
    crate::family(
        out,
        "weft_channel_headroom_ratio",
        "gauge",
        "1 - a publication's peak 1 ms rate over the saturation rate measured for its kind of path: below 0.2, a burst is near what the path can take.",
    );
    out.push_str(&headroom);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_measured_path_is_the_same_count_or_the_next_larger() {
        let mut s = Saturation::default();
        for (p, r) in [
            ("shm-broadcast-1", 4e6),
            ("shm-broadcast-2", 3e6),
            ("shm-broadcast-8", 1e6),
            ("udp-1", 2e6),
        ] {
            s.rates.insert(p.into(), r);
        }
        assert_eq!(
            s.path_for("shm-broadcast-", 2),
            Some(("shm-broadcast-2", 3e6))
        );
        assert_eq!(
            s.path_for("shm-broadcast-", 3),
            Some(("shm-broadcast-8", 1e6))
        );
        assert_eq!(
            s.path_for("shm-broadcast-", 20),
            Some(("shm-broadcast-8", 1e6))
        );
        assert_eq!(s.path_for("udp-", 3), Some(("udp-1", 2e6)));
        assert_eq!(s.path_for("shm-many-", 2), None);
    }

    #[test]
    fn headroom_is_one_minus_the_peak_over_saturation() {
        let mut peaks = Peaks::default();
        let pub_labels =
            "node=\"n\",pid=\"1\",role=\"publication\",channel=\"shm:md\",stream=\"1\"".to_string();
        peaks.rates.insert(pub_labels.clone(), (2e6, 1e5));
        peaks
            .duty
            .insert("node=\"n\",pid=\"1\",agent=\"0\",name=\"a\"".into(), 0.9);
        let mut sat = Saturation::default();
        sat.rates.insert("shm-broadcast-2".into(), 4e6);
        sat.msg_bytes = 64;
        let ends = vec![
            ("publication".to_string(), "shm:md".to_string(), 1),
            ("subscription".to_string(), "shm:md".to_string(), 1),
            ("subscription".to_string(), "shm:md".to_string(), 1),
        ];
        let mut out = String::new();
        metrics(&mut out, "1ms", &peaks, Some(&sat), &ends);
        assert!(
            out.contains(&format!("weft_channel_headroom_ratio{{{pub_labels}}} 0.5")),
            "{out}"
        );
        assert!(out.contains("path=\"shm-broadcast-2\""), "{out}");
        assert!(out.contains("weft_agent_headroom_ratio{node=\"n\",pid=\"1\",agent=\"0\",name=\"a\"} 0.09999999999999998"), "{out}");
        assert!(out.contains(",window=\"1ms\"} 2000000"), "{out}");
    }
}
