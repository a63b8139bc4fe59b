//! The load model from a Prometheus server instead of local counters files:
//! range queries over what `weft-stat serve` exports on every host, so a
//! day of utilization across a fleet feeds `report`, `plan` and `daily`.
//!
//! One [`Window`] per host (Prometheus's `instance` label: one
//! `weft-stat serve` a host), covering the whole range, with one sample a
//! step: an agent's busy share in each step is the difference of its
//! `weft_agent_busy_seconds_total` between two steps over the time between
//! them (as `collect` does from the counters files), a task's cost its
//! busy seconds over the range divided by the time it was there. Tasks
//! move only within their process, so hosts never share a bin and each is
//! planned on its own.
//!
//! The nodes planned are those still reporting at the end of the range; a
//! process that restarted is its new pid, with the part of the range it
//! has (said in the notes). Beside the tasks' load: each core's busy share
//! as the OS sees it (`node_cpu_seconds_total`), and the bursts and the
//! least headroom of the range (`weft-stat serve`'s burst sampler).
//!
//! Only `http://` (a TLS or authenticating proxy in front of Prometheus is
//! the operator's). Every answer is checked: a Prometheus that is down, an
//! error it returns, or an answer that is not its JSON is a clear error.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::collect::{AgentWindow, NodeWindow, TaskWindow, Window, MIN_SAMPLES};

/// The largest answer read from Prometheus (a day at one-minute steps for
/// thousands of series fits many times over).
const MAX_ANSWER: u64 = 1 << 30;

/// Where and what to read.
#[derive(Clone, Debug)]
pub struct Source {
    /// `http://HOST:PORT` with an optional path prefix.
    pub url: String,
    /// How far back from `end_s`.
    pub range: Duration,
    /// The resolution: one sample of each agent a step.
    pub step: Duration,
    /// The end of the range, seconds since the Unix epoch.
    pub end_s: f64,
    /// Only this `instance` (host), if given.
    pub host: Option<String>,
}

/// One host's model and what else the range showed there.
#[derive(Clone, Debug)]
pub struct HostModel {
    /// Prometheus's `instance` label for it.
    pub host: String,
    /// The tasks' and agents' load, as `collect` would have written it.
    pub window: Window,
    /// Each core's busy share as the OS saw it, per step.
    pub cores: BTreeMap<u32, Vec<f64>>,
    /// The bursts and headroom of the range.
    pub bursts: Vec<Burst>,
    /// Agents' least headroom over the range: (node, pid, agent, name, least).
    pub agent_headroom: Vec<(String, u32, u32, String, f64)>,
    /// What the model left out or could not tell.
    pub notes: Vec<String>,
}

/// One channel end's busiest moment of the range.
#[derive(Clone, Debug, PartialEq)]
pub struct Burst {
    /// The node, pid, role, channel and stream, as labels.
    pub end: String,
    /// The peak 1 ms rate (messages/s).
    pub peak_1ms: f64,
    /// The peak 1 s rate (messages/s).
    pub peak_1s: f64,
    /// The least headroom (publications with a measured saturation only).
    pub least_headroom: Option<f64>,
    /// The fullest its ring got (shared-memory channels only).
    pub fill_high_water: Option<f64>,
}

/// A `http://HOST:PORT/prefix` URL, split.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("--prometheus {url}: expected http://HOST:PORT (https: put a local proxy in front)")
    })?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return Err(format!("--prometheus {url}: no host"));
    }
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((hostport, prefix.to_string()))
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One GET of Prometheus's HTTP API; the `data` of its JSON answer.
fn get(url: &str, path_and_query: &str) -> Result<Value, String> {
    let (hostport, prefix) = split_url(url)?;
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("Prometheus at {url} is unreachable: {e} (is it running? --prometheus names it)")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| unreachable(&e))?
        .next()
        .ok_or_else(|| unreachable(&"no address"))?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| unreachable(&e))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    // HTTP/1.0: the answer ends when the connection does (no chunking).
    write!(
        conn,
        "GET {prefix}{path_and_query} HTTP/1.0\r\nHost: {hostport}\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| unreachable(&e))?;
    let mut raw = Vec::new();
    conn.take(MAX_ANSWER + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("Prometheus at {url}: reading its answer: {e}"))?;
    if raw.len() as u64 > MAX_ANSWER {
        return Err(format!(
            "Prometheus at {url}: an answer over {MAX_ANSWER} bytes: use a larger --step or --host"
        ));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("Prometheus at {url}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let json: Value = serde_json::from_str(body).map_err(|_| {
        format!(
            "{url}{prefix} answered HTTP {status} with something that is not Prometheus's JSON: is it a Prometheus server?"
        )
    })?;
    if json["status"] != "success" {
        return Err(format!(
            "Prometheus at {url}: {} (HTTP {status}): {}",
            json["errorType"].as_str().unwrap_or("error"),
            json["error"].as_str().unwrap_or("no reason given")
        ));
    }
    Ok(json["data"].clone())
}

/// A series of a query's answer: its labels and its points (time s, value).
#[derive(Clone, Debug, Default)]
struct Series {
    labels: BTreeMap<String, String>,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

fn parse_series(data: &Value) -> Vec<Series> {
    let point = |p: &Value| -> Option<(f64, f64)> {
        let t = p.get(0)?.as_f64()?;
        let v: f64 = p.get(1)?.as_str()?.parse().ok()?;
        Some((t, v))
    };
    data["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| Series {
                    labels: s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    points: match (s.get("values"), s.get("value")) {
                        (Some(Value::Array(vs)), _) => vs.iter().filter_map(point).collect(),
                        (_, Some(v)) => point(v).into_iter().collect(),
                        _ => Vec::new(),
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Source {
    /// `{matchers}` with the --host matcher added (empty: no braces).
    fn selector(&self, matchers: &str) -> String {
        let mut all: Vec<String> = Vec::new();
        if !matchers.is_empty() {
            all.push(matchers.to_string());
        }
        if let Some(h) = &self.host {
            all.push(format!(
                "instance=\"{}\"",
                h.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        if all.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", all.join(","))
        }
    }

    /// A range query of `metric` with `matchers` (and the host's).
    fn range_query(&self, metric: &str, matchers: &str) -> Result<Vec<Series>, String> {
        let q = format!("{metric}{}", self.selector(matchers));
        let start = self.end_s - self.range.as_secs_f64();
        let data = get(
            &self.url,
            &format!(
                "/api/v1/query_range?query={}&start={start:.3}&end={:.3}&step={}",
                encode(&q),
                self.end_s,
                self.step.as_secs_f64()
            ),
        )?;
        Ok(parse_series(&data))
    }

    /// `FUNC(METRIC{instance}[RANGE])` at the end of the range.
    fn over_range(&self, func: &str, metric: &str) -> Result<Vec<Series>, String> {
        let sel = self.selector("");
        let q = format!("{func}({metric}{sel}[{}s])", self.range.as_secs().max(1));
        let data = get(
            &self.url,
            &format!("/api/v1/query?query={}&time={:.3}", encode(&q), self.end_s),
        )?;
        Ok(parse_series(&data))
    }
}

/// Per-step rates of a counter's points: (start of the step, rate). Steps
/// across a counter reset or a gap longer than two steps are left out.
fn step_rates(points: &[(f64, f64)], step: f64) -> Vec<(f64, f64)> {
    points
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].0 - w[0].0;
            let dv = w[1].1 - w[0].1;
            (dt > 0.0 && dt <= 2.0 * step + 1e-9 && dv >= 0.0).then_some((w[0].0, dv / dt))
        })
        .collect()
}

/// A counter's mean rate over its points: (last - first) / time, or 0.
fn mean_rate(points: &[(f64, f64)]) -> f64 {
    match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.0 > a.0 && b.1 >= a.1 => (b.1 - a.1) / (b.0 - a.0),
        _ => 0.0,
    }
}

type NodeKey = (String, u32);

fn node_key(s: &Series) -> Option<(String, NodeKey)> {
    Some((
        s.label("instance").to_string(),
        (s.label("node").to_string(), s.label("pid").parse().ok()?),
    ))
}

/// Reads the range from Prometheus and builds each host's model.
pub fn fetch(src: &Source) -> Result<Vec<HostModel>, String> {
    if src.step.is_zero() || src.range < src.step * 2 {
        return Err(format!(
            "--range {}s with --step {}s: the range must hold at least two steps",
            src.range.as_secs_f64(),
            src.step.as_secs_f64()
        ));
    }
    let step = src.step.as_secs_f64();
    let end = src.end_s;
    let busy = src.range_query("weft_agent_busy_seconds_total", "")?;
    if busy.is_empty() {
        return Err(format!(
            "Prometheus at {} has no weft_agent_busy_seconds_total{} in the {}s before {end:.0}: does it scrape weft-stat serve?",
            src.url,
            src.selector(""),
            src.range.as_secs()
        ));
    }
    let agent_info = src.range_query("weft_agent_info", "")?;
    let task_busy = src.range_query("weft_task_busy_seconds_total", "")?;
    let task_work = src.range_query("weft_task_work_total", "")?;
    let task_info = src.range_query("weft_task_info", "")?;
    let runq = src.range_query("weft_thread_run_delay_seconds_total", "")?;
    let files = src.range_query("weft_process_info", "")?;
    let up = src.range_query("weft_process_up", "")?;
    let idle = src.range_query("node_cpu_seconds_total", "mode=\"idle\"")?;
    let peaks = src.over_range(
        "max_over_time",
        "weft_channel_peak_rate_messages_per_second",
    )?;
    let headroom = src.over_range("min_over_time", "weft_channel_headroom_ratio")?;
    let fill = src.over_range("max_over_time", "weft_shm_ring_fill_high_water_ratio")?;
    let agent_room = src.over_range("min_over_time", "weft_agent_headroom_ratio")?;

    let steps = (src.range.as_secs_f64() / step).floor() as usize + 1;
    let started_unix_ms = ((end - src.range.as_secs_f64()) * 1e3).max(0.0) as u64;
    let mut hosts: BTreeMap<String, HostModel> = BTreeMap::new();

    // Nodes: every (host, node, pid) with agent busy time; those still
    // reporting in the last two steps are planned.
    let mut nodes: BTreeMap<String, BTreeMap<NodeKey, NodeWindow>> = BTreeMap::new();
    let mut ended: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let last_seen = |points: &[(f64, f64)]| points.last().map_or(f64::MIN, |p| p.0);
    for s in &busy {
        let Some((h, key)) = node_key(s) else {
            continue;
        };
        if last_seen(&s.points) < end - 2.0 * step {
            ended.entry(h).or_default().insert(format!(
                "{} (pid {}) stopped reporting at {}: not planned",
                key.0,
                key.1,
                crate::time::utc(last_seen(&s.points))
            ));
            continue;
        }
        let alive = up
            .iter()
            .filter(|u| node_key(u).as_ref() == Some(&(h.clone(), key.clone())))
            .filter_map(|u| u.points.last())
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .is_some_and(|p| p.1 == 1.0);
        if !alive {
            ended.entry(h).or_default().insert(format!(
                "{} (pid {}) is not alive at the end (hung, dead or closed: weft_process_up): not planned",
                key.0, key.1
            ));
            continue;
        }
        let agent: u32 = s.label("agent").parse().unwrap_or(0);
        let node = nodes
            .entry(h.clone())
            .or_default()
            .entry(key.clone())
            .or_insert_with(|| NodeWindow {
                pid: key.1,
                counters_file: String::new(),
                control_ring: String::new(),
                label: key.0.clone(),
                samples: 0,
                agents: Vec::new(),
                tasks: Vec::new(),
            });
        node.samples = node.samples.max(s.points.len());
        let (core, thread) = agent_info
            .iter()
            .filter(|i| {
                node_key(i).as_ref() == Some(&(h.clone(), key.clone()))
                    && i.label("agent") == s.label("agent")
            })
            .max_by(|a, b| last_seen(&a.points).total_cmp(&last_seen(&b.points)))
            .map_or((None, 0), |i| {
                (
                    i.label("core").parse().ok(),
                    i.label("thread").parse().unwrap_or(0),
                )
            });
        let wait = runq
            .iter()
            .find(|r| {
                node_key(r).as_ref() == Some(&(h.clone(), key.clone()))
                    && r.label("agent") == s.label("agent")
            })
            .map(|r| mean_rate(&r.points) * 1e9);
        node.agents.push(AgentWindow {
            index: agent,
            core,
            thread,
            busy: step_rates(&s.points, step)
                .into_iter()
                .map(|r| r.1)
                .collect(),
            runq_wait_ns_per_s: wait,
        });
    }
    for (h, by_node) in &mut nodes {
        let model = hosts
            .entry(h.clone())
            .or_insert_with(|| new_model(src, h, steps, started_unix_ms));
        model.notes.extend(ended.remove(h).unwrap_or_default());
        for (key, node) in by_node.iter_mut() {
            node.agents.sort_by_key(|a| a.index);
            let mine = |s: &&Series| node_key(s).as_ref() == Some(&(h.clone(), key.clone()));
            match files.iter().filter(mine).max_by(|a, b| last_seen(&a.points).total_cmp(&last_seen(&b.points))) {
                Some(f) => {
                    node.counters_file = f.label("counters_file").to_string();
                    node.control_ring = node.counters_file.replacen("counters.", "control.", 1);
                }
                None => model.notes.push(format!(
                    "{} (pid {}): no weft_process_info (weft-stat serve older than this tool?): its plan cannot be applied",
                    key.0, key.1
                )),
            }
            if node.samples < steps * 9 / 10 {
                model.notes.push(format!(
                    "{} (pid {}) was there for {} of {steps} steps (started within the range)",
                    key.0, key.1, node.samples
                ));
            }
            if node.samples < MIN_SAMPLES {
                model.window.valid = false;
                model.window.invalid_reason = Some(format!(
                    "{} (pid {}): {} samples, at least {MIN_SAMPLES} needed (a smaller --step or a longer --range)",
                    key.0, key.1, node.samples
                ));
            }
            for t in task_busy.iter().filter(mine) {
                let id: u64 = t.label("task").parse().unwrap_or(0);
                let infos: Vec<&Series> = task_info
                    .iter()
                    .filter(mine)
                    .filter(|i| i.label("task") == t.label("task"))
                    .collect();
                let Some(current) = infos
                    .iter()
                    .max_by(|a, b| last_seen(&a.points).total_cmp(&last_seen(&b.points)))
                else {
                    model.notes.push(format!(
                        "{} (pid {}) task {id}: no weft_task_info, left out",
                        key.0, key.1
                    ));
                    continue;
                };
                let agents: std::collections::BTreeSet<&str> =
                    infos.iter().map(|i| i.label("agent")).collect();
                if agents.len() > 1 {
                    model.notes.push(format!(
                        "{} (pid {}) task {id} ({}) moved during the range (agents {}): planned from agent {}",
                        key.0,
                        key.1,
                        t.label("name"),
                        agents.into_iter().collect::<Vec<_>>().join(", "),
                        current.label("agent")
                    ));
                }
                let work = task_work
                    .iter()
                    .filter(mine)
                    .find(|w| w.label("task") == t.label("task"))
                    .map_or(0.0, |w| mean_rate(&w.points));
                node.tasks.push(TaskWindow {
                    id,
                    name: t.label("name").to_string(),
                    agent: current.label("agent").parse().unwrap_or(0),
                    cost: mean_rate(&t.points),
                    work_per_s: work,
                });
            }
            node.tasks.sort_by_key(|t| t.id);
        }
        // The planner's node order is the counters files' (as `collect`
        // scans them), so `apply` on the host sees the same state.
        let mut list: Vec<NodeWindow> = std::mem::take(by_node).into_values().collect();
        list.sort_by(|a, b| {
            a.counters_file
                .cmp(&b.counters_file)
                .then(a.pid.cmp(&b.pid))
        });
        model.window.nodes = list;
    }
    for (h, notes) in ended {
        let model = hosts
            .entry(h.clone())
            .or_insert_with(|| new_model(src, &h, steps, started_unix_ms));
        model.notes.extend(notes);
        model.window.valid = false;
        model.window.invalid_reason = Some("no weft node reports at the end of the range".into());
    }
    for s in &idle {
        let Some(model) = hosts.get_mut(s.label("instance")) else {
            continue;
        };
        let Ok(cpu) = s.label("cpu").parse::<u32>() else {
            continue;
        };
        model.cores.insert(
            cpu,
            step_rates(&s.points, step)
                .into_iter()
                .map(|r| (1.0 - r.1).clamp(0.0, 1.0))
                .collect(),
        );
    }
    let end_of = |s: &Series| {
        format!(
            "{} (pid {}) {} {} stream {}",
            s.label("node"),
            s.label("pid"),
            s.label("role"),
            s.label("channel"),
            s.label("stream")
        )
    };
    let value = |s: &Series| s.points.last().map(|p| p.1);
    let mut bursts: BTreeMap<(String, String), Burst> = BTreeMap::new();
    for s in &peaks {
        let e = bursts
            .entry((s.label("instance").to_string(), end_of(s)))
            .or_insert_with(|| Burst {
                end: end_of(s),
                peak_1ms: 0.0,
                peak_1s: 0.0,
                least_headroom: None,
                fill_high_water: None,
            });
        let v = value(s).unwrap_or(0.0);
        if s.label("window") == "1s" {
            e.peak_1s = e.peak_1s.max(v);
        } else {
            e.peak_1ms = e.peak_1ms.max(v);
        }
    }
    for s in &headroom {
        if let Some(e) = bursts.get_mut(&(s.label("instance").to_string(), end_of(s))) {
            e.least_headroom = value(s);
        }
    }
    for s in &fill {
        // The ring is the channel's: shown on each of its ends.
        for ((h, _), e) in bursts.iter_mut() {
            if h == s.label("instance")
                && e.end.contains(&format!(
                    " {} stream {}",
                    s.label("channel"),
                    s.label("stream")
                ))
            {
                e.fill_high_water = value(s);
            }
        }
    }
    for ((h, _), b) in bursts {
        if let Some(m) = hosts.get_mut(&h) {
            m.bursts.push(b);
        }
    }
    for s in &agent_room {
        if let (Some(m), Some(v)) = (hosts.get_mut(s.label("instance")), value(s)) {
            m.agent_headroom.push((
                s.label("node").to_string(),
                s.label("pid").parse().unwrap_or(0),
                s.label("agent").parse().unwrap_or(0),
                s.label("name").to_string(),
                v,
            ));
        }
    }
    Ok(hosts.into_values().collect())
}

fn new_model(src: &Source, h: &str, steps: usize, started_unix_ms: u64) -> HostModel {
    HostModel {
        host: h.to_string(),
        window: Window {
            version: 1,
            started_unix_ms,
            window_ms: src.range.as_millis() as u64,
            samples: steps,
            dir: PathBuf::from(format!("{} instance {h}", src.url)),
            valid: true,
            invalid_reason: None,
            nodes: Vec::new(),
        },
        cores: BTreeMap::new(),
        bursts: Vec::new(),
        agent_headroom: Vec::new(),
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_refuse_what_is_not_http() {
        assert_eq!(
            split_url("http://127.0.0.1:9090").unwrap(),
            ("127.0.0.1:9090".into(), String::new())
        );
        assert_eq!(
            split_url("http://prom/prefix/").unwrap(),
            ("prom:80".into(), "/prefix".into())
        );
        assert!(split_url("https://prom:9090")
            .unwrap_err()
            .contains("https"));
        assert!(split_url("http://").is_err());
    }

    #[test]
    fn step_rates_skip_resets_and_gaps() {
        let pts = [
            (0.0, 0.0),
            (10.0, 5.0),
            (20.0, 2.0),
            (30.0, 4.0),
            (70.0, 8.0),
        ];
        assert_eq!(step_rates(&pts, 10.0), vec![(0.0, 0.5), (20.0, 0.2)]);
        assert_eq!(mean_rate(&[(0.0, 1.0), (100.0, 51.0)]), 0.5);
        assert_eq!(mean_rate(&[(0.0, 1.0)]), 0.0);
    }

    #[test]
    fn answers_that_are_not_prometheus_are_refused_by_parse() {
        let data: Value = serde_json::from_str(
            r#"{"resultType":"matrix","result":[{"metric":{"instance":"h:1","node":"n","pid":"7"},"values":[[1,"0.5"],[2,"bad"],[3,"1.5"]]}]}"#,
        )
        .unwrap();
        let s = parse_series(&data);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points, vec![(1.0, 0.5), (3.0, 1.5)]);
        assert_eq!(node_key(&s[0]), Some(("h:1".into(), ("n".into(), 7))));
        assert!(parse_series(&Value::Null).is_empty());
    }
}
