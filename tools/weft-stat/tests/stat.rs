//! `weft-stat` against real nodes: the counters it prints match what the node
//! did; a process killed with `kill -9` is shown dead with its counters still
//! readable; a corrupt file is reported and the others are still shown.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use weft::agent::Task;
use weft::{Node, NodeConfig, ThreadingMode};

#[path = "../../test-support/servers.rs"]
mod servers;
use servers::{free_port, http_get, prometheus_scraping, redis_server, stream_entries, KillOnDrop};

/// Does one unit of work per call for its first `work` calls.
struct Fixed {
    name: String,
    work: u64,
}

impl Task for Fixed {
    fn name(&self) -> &str {
        &self.name
    }
    fn do_work(&mut self, _now_ns: u64) -> usize {
        if self.work > 0 {
            self.work -= 1;
            1
        } else {
            0
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-stat-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn node(dir: &Path, name: &str) -> Node {
    node_with(dir, name, 0)
}

/// An invoker-mode node in `dir`, labelled `name`, sampling one-way latency
/// every `sample_every` messages (0: not).
fn node_with(dir: &Path, name: &str, sample_every: u32) -> Node {
    Node::new(NodeConfig {
        dir: dir.to_owned(),
        threading: ThreadingMode::Invoker,
        control_ring: false,
        name: name.into(),
        latency_sample_every: sample_every,
        ..NodeConfig::default()
    })
    .unwrap()
}

/// A node in `dir` running a task that does `work` units, called `calls` times.
fn node_with_fixed_task(dir: &Path, name: &str, work: u64, calls: u64) -> Node {
    let mut node = node(dir, name);
    node.add_task(
        0,
        Box::new(Fixed {
            name: format!("fixed-{work}"),
            work,
        }),
    )
    .unwrap();
    for _ in 0..calls {
        node.do_work();
    }
    node
}

fn stat(dir: &Path, args: &[&str]) -> (Vec<String>, String) {
    let (code, out, err) = stat_status(dir, args);
    assert_eq!(code, 0, "weft-stat {args:?} failed: {out}{err}");
    (out.lines().map(str::to_owned).collect(), err)
}

/// The number after `"key":` in a JSON line.
fn number(line: &str, key: &str) -> u64 {
    let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The value of the counter whose line has `type` and a label containing `label`.
fn value(lines: &[String], type_name: &str, label: &str) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("\"type\":\"{type_name}\"")) && l.contains(label))
        .unwrap_or_else(|| panic!("no {type_name} counter labelled {label:?} in {lines:#?}"));
    number(line, "value")
}

#[test]
fn counters_of_a_running_node_match_what_it_did() {
    let dir = temp_dir("live");
    let node = node_with_fixed_task(&dir, "stat-live", 700, 2000);
    let pid = std::process::id().to_string();
    let (lines, _) = stat(&dir, &["--once", "--json", "--pid", &pid]);
    assert_eq!(value(&lines, "task_work", "fixed-700 work"), 700);
    assert_eq!(value(&lines, "task_calls", "fixed-700 calls"), 2_000);
    assert_eq!(value(&lines, "agent_duty_cycles", "duty cycles"), 2_000);
    assert_eq!(value(&lines, "task_agent", "fixed-700 agent"), 0);
    // Not pinned; run (invoker mode) by this test's thread, whose task
    // directory /proc lists.
    assert_eq!(value(&lines, "agent_core", "core"), 0);
    let tid = value(&lines, "agent_thread", "thread");
    assert!(
        std::path::Path::new(&format!("/proc/self/task/{tid}")).exists(),
        "agent thread {tid} is not a thread of this process"
    );
    let busy = value(&lines, "agent_busy_ns", "busy ns");
    let idle = value(&lines, "agent_idle_ns", "idle ns");
    assert!(busy > 0 && idle > 0, "busy {busy} ns, idle {idle} ns");
    // Every duty cycle is in the agent's cycle-length histogram.
    let (hist, _) = stat(&dir, &["histograms", "--json", "--pid", &pid]);
    let cycles = hist
        .iter()
        .find(|l| l.contains("\"type\":\"agent_cycle_ns\"") && l.contains("agent-0 cycle"))
        .unwrap_or_else(|| panic!("{hist:#?}"));
    assert_eq!(number(cycles, "count"), 2_000);
    assert!(number(cycles, "p50_ns") <= number(cycles, "p99_ns"));
    assert!(number(cycles, "p99_ns") <= number(cycles, "max_ns"));
    // The filters.
    let (only_work, _) = stat(&dir, &["--once", "--json", "--type", "task_work"]);
    assert!(!only_work.is_empty());
    assert!(only_work
        .iter()
        .all(|l| l.contains("\"type\":\"task_work\"")));
    let (listed, _) = stat(&dir, &["list", "--json"]);
    assert!(
        listed.iter().any(|l| l.contains(&format!("\"pid\":{pid},"))
            && l.contains("\"label\":\"stat-live\"")
            && l.contains("\"state\":\"alive\"")),
        "{listed:#?}"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

fn udp_uri() -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("udp://239.77.57.1:{port}")
}

/// Sends `count` messages of `len` bytes on `uri` and receives them all;
/// returns both ends (their counters go when they do).
fn send_and_receive(
    node: &mut Node,
    uri: &str,
    count: u64,
    len: usize,
) -> (weft::Publication, weft::Subscription) {
    let mut sub = node.subscription(uri, 5).unwrap();
    let mut publ = node.publication(uri, 5).unwrap();
    let msg = vec![7u8; len];
    let (mut sent, mut got) = (0, 0);
    let start = std::time::Instant::now();
    while got < count {
        assert!(
            start.elapsed().as_secs() < 60,
            "{uri}: {sent} sent, {got} received"
        );
        if sent < count && publ.offer(&msg).is_ok() {
            sent += 1;
        }
        node.do_work();
        sub.poll(64, |e| {
            if let weft::Event::Message(m) = e {
                assert_eq!(m.len(), len);
                got += 1;
            }
        })
        .unwrap();
    }
    // The tasks copy their stream counters into the file every millisecond.
    std::thread::sleep(std::time::Duration::from_millis(3));
    node.do_work();
    (publ, sub)
}

#[test]
fn stream_counters_match_what_was_sent_and_received() {
    let dir = temp_dir("streams");
    let mut node = node_with(&dir, "stat-streams", 64);
    let _shm = send_and_receive(&mut node, "shm:stat-test", 1_000, 40);
    let udp = udp_uri();
    let _udp = send_and_receive(&mut node, &udp, 2_000, 24);
    let pid = std::process::id().to_string();
    let (lines, _) = stat(&dir, &["--once", "--json", "--pid", &pid]);
    assert_eq!(
        value(&lines, "shm_sent_messages", "shm:stat-test stream 5"),
        1_000
    );
    assert_eq!(
        value(&lines, "shm_sent_bytes", "shm:stat-test stream 5"),
        40_000
    );
    assert_eq!(
        value(&lines, "shm_received_messages", "shm:stat-test stream 5"),
        1_000
    );
    assert_eq!(
        value(&lines, "shm_received_bytes", "shm:stat-test stream 5"),
        40_000
    );
    // The subscription read everything: its position is the publication's,
    // and the frames hold at least their payload.
    let shm_position = value(&lines, "shm_send_position", "shm:stat-test stream 5");
    assert!(shm_position >= 40_000, "{shm_position}");
    assert_eq!(
        value(&lines, "shm_receive_position", "shm:stat-test stream 5"),
        shm_position
    );
    assert_eq!(value(&lines, "udp_sent_messages", "stream 5"), 2_000);
    assert_eq!(value(&lines, "udp_received_messages", "stream 5"), 2_000);
    assert_eq!(value(&lines, "udp_datagrams_lost", "stream 5"), 0);
    assert!(value(&lines, "udp_sent_bytes", "stream 5") >= 2_000 * 24);
    assert_eq!(value(&lines, "udp_receivers", "stream 5"), 1);
    assert!(value(&lines, "udp_send_position", "stream 5") >= 1);
    let (only_stream, _) = stat(&dir, &["--once", "--json", "--stream", "5"]);
    assert!(only_stream.len() > 10);
    assert!(only_stream.iter().all(|l| l.contains("\"key\":5,")));
    // One message in 64 carried its commit time: 15 one-way latencies.
    let (hist, _) = stat(&dir, &["histograms", "--json", "--pid", &pid]);
    let latency = hist
        .iter()
        .find(|l| l.contains("\"type\":\"one_way_latency_ns\"") && l.contains("shm:stat-test"))
        .unwrap_or_else(|| panic!("{hist:#?}"));
    assert_eq!(number(latency, "count"), 1_000 / 64);
    assert!(number(latency, "max_ns") > 0);
    // The same over UDP: the stamp crossed the send task, the wire (a
    // STAMPED entry) and the receive task.
    let latency = hist
        .iter()
        .find(|l| l.contains("\"type\":\"one_way_latency_ns\"") && l.contains(&udp))
        .unwrap_or_else(|| panic!("{hist:#?}"));
    assert_eq!(number(latency, "count"), 2_000 / 64);
    assert!(number(latency, "max_ns") > 0);
    drop((_shm, _udp));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not a test of its own: the process `a_killed_process...` starts and kills.
#[test]
fn child_node_that_waits_to_be_killed() {
    let Ok(dir) = std::env::var("WEFT_STAT_CHILD_DIR") else {
        return;
    };
    let node = node_with_fixed_task(Path::new(&dir), "doomed", 300, 500);
    let counters = node.counters().clone();
    counters.log_error("application", "doomed: the application's own error", 2);
    counters
        .loss_report(3, 0x5e55, "udp://239.77.58.1:4000")
        .record(12, 12_000);
    println!("ready");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn a_killed_process_is_shown_dead_and_its_counters_stay_readable() {
    let dir = temp_dir("dead");
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = child_ready(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_node_that_waits_to_be_killed",
                "--nocapture",
            ])
            .env("WEFT_STAT_CHILD_DIR", &dir),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // A foreign file beside it is reported, and does not hide it.
    std::fs::write(dir.join("counters.1.0"), b"not a weft counters file").unwrap();
    let pid = child.id().to_string();
    let (listed, err) = stat(&dir, &["list", "--json"]);
    assert!(err.contains("counters.1.0"), "the bad file is named: {err}");
    assert!(
        listed
            .iter()
            .any(|l| l.contains(&format!("\"pid\":{pid},")) && l.contains("\"state\":\"dead\"")),
        "{listed:#?}"
    );
    let (lines, _) = stat(&dir, &["--once", "--json", "--pid", &pid]);
    assert_eq!(value(&lines, "task_work", "fixed-300 work"), 300);
    assert_eq!(value(&lines, "task_calls", "fixed-300 calls"), 500);
    let (errors, _) = stat(&dir, &["errors", "--json", "--pid", &pid]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("\"state\":\"dead\""));
    assert!(errors[0].contains("\"error\":\"doomed: the application's own error\""));
    assert_eq!(number(&errors[0], "count"), 2);
    let (loss, _) = stat(&dir, &["loss", "--json", "--pid", &pid]);
    assert_eq!(loss.len(), 1, "{loss:#?}");
    assert!(loss[0].contains("\"channel\":\"udp://239.77.58.1:4000\""));
    assert_eq!(
        (number(&loss[0], "stream"), number(&loss[0], "session")),
        (3, 0x5e55)
    );
    assert_eq!(
        (
            number(&loss[0], "events"),
            number(&loss[0], "datagrams"),
            number(&loss[0], "bytes")
        ),
        (1, 12, 12_000)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for `weft-stat serve` on `port` to answer; its first `/metrics`.
fn first_scrape(port: u16) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(m) = http_get(port, "/metrics") {
            return m;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "weft-stat serve never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The value of the first sample in a Prometheus instant-query answer
/// (`"value":[TIME,"V"]`).
fn prom_value(answer: &str) -> Option<f64> {
    let at = answer.find("\"value\":[")?;
    let rest = &answer[at..];
    let v = rest.split('"').nth(3)?;
    v.parse().ok()
}

/// A market-data workload of four nodes in this process, run by one
/// thread until `stop`: a publisher sends on UDP (and on a shared-memory
/// channel of its own); a gateway republishes the UDP stream into
/// `shm:prom-md`; a subscriber reads both shared-memory channels, a few
/// messages per round, so it has a backlog; a telemetry node subscribes to
/// the UDP stream directly, losing 2 % of datagrams on purpose (NAKs,
/// repairs). Invoker mode, but for telemetry: its agent is a thread of its
/// own, pinned to the last core, backing off when idle (the thread-level
/// panels need one). Nothing spins; this thread sleeps.
fn market_data_workload(
    dir: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let dir = dir.to_owned();
    let udp = udp_uri();
    std::thread::spawn(move || {
        let cfg = |name: &str| NodeConfig {
            dir: dir.clone(),
            threading: ThreadingMode::Invoker,
            control_ring: false,
            name: name.into(),
            latency_sample_every: 16,
            ..NodeConfig::default()
        };
        let mut publisher = Node::new(cfg("md-publisher")).unwrap();
        let mut gateway = Node::new(cfg("md-gateway")).unwrap();
        let mut subscriber = Node::new(cfg("md-subscriber")).unwrap();
        let last_core = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
        let mut telemetry = Node::new(NodeConfig {
            threading: ThreadingMode::Dedicated,
            cores: vec![last_core],
            udp: weft::UdpDefaults {
                loss: Some(weft::LossConfig {
                    seed: 7,
                    probability: 0.02,
                    mean_burst: 2.0,
                }),
                ..weft::UdpDefaults::default()
            },
            ..cfg("telemetry")
        })
        .unwrap();
        let _gw = gateway.gateway_in(&udp, "shm:prom-md", 5).unwrap();
        // A foreign file where a channel's ring should be: an error in the
        // subscriber's error log (for the error panels).
        std::fs::write(dir.join("prom-bad.1"), [0xab; 8192]).unwrap();
        let mut bad = subscriber.subscription("shm:prom-bad", 1).unwrap();
        let mut md = subscriber.subscription("shm:prom-md", 5).unwrap();
        let mut ticks_in = subscriber.subscription("shm:prom-ticks", 3).unwrap();
        let mut direct = telemetry.subscription(&udp, 5).unwrap();
        let mut quotes = publisher.publication(&udp, 5).unwrap();
        let mut ticks = publisher
            .publication("shm:prom-ticks?capacity=65536", 3)
            .unwrap();
        let msg = [3u8; 48];
        let mut read = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..20 {
                let _ = quotes.offer(&msg);
                let _ = ticks.offer(&msg);
            }
            for _ in 0..4 {
                publisher.do_work();
                gateway.do_work();
                telemetry.do_work();
                subscriber.do_work();
            }
            // The market-data subscriber keeps up; the ticks reader takes
            // fewer than are published, so the ring fills and the
            // publisher is back-pressured.
            let count = |e: weft::Event<'_>| {
                if let weft::Event::Message(_) = e {
                    read += 1;
                }
            };
            let _ = md.poll(64, count);
            let _ = ticks_in.poll(10, |_| {});
            let _ = direct.poll(64, |_| {});
            let _ = bad.poll(1, |_| {});
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        read
    })
}

/// Runs a PromQL query; the number of series in its answer (`None`: no
/// answer, or an error).
fn prom_series(port: u16, query: &str) -> Option<usize> {
    let mut q = String::new();
    for b in query.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    let answer = http_get(port, &format!("/api/v1/query?query={q}"))?;
    if !answer.contains("\"status\":\"success\"") {
        return None;
    }
    Some(answer.matches("\"metric\":").count())
}

/// Every `"expr"` of the Grafana dashboard, with its template variables
/// set to match everything.
fn dashboard_queries() -> Vec<String> {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-weft.json"
    ))
    .unwrap();
    json.split("\"expr\": \"")
        .skip(1)
        .map(|rest| {
            let mut expr = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => expr.push(chars.next().unwrap()),
                    '"' => break,
                    c => expr.push(c),
                }
            }
            expr.replace("$node", ".*")
                .replace("$channel", ".*")
                .replace("$cpu", ".*")
        })
        .collect()
}

/// Every query of the Grafana dashboard returns series from Prometheus on
/// `prom_port`, which scrapes a `weft-stat serve` of a directory where
/// `market_data_workload` runs (and an alert fires, for the annotation,
/// and a stress store gives the headroom panels a saturation rate). `rate`
/// needs two samples in its window and the loss panel needs a loss:
/// retried for up to 90 s. Without a PMU, the cycles, instructions and
/// LLC-miss panels have no data, and must have none: nothing false is
/// exported.
fn every_dashboard_panel_has_data(prom_port: u16) {
    let queries = dashboard_queries();
    assert!(queries.len() >= 50, "{queries:?}");
    let pmu = prom_series(prom_port, "weft_hardware_counters_available == 1") == Some(1);
    let start = std::time::Instant::now();
    for q in &queries {
        if !pmu
            && ["weft_cpu_cycles", "weft_cpu_instructions", "weft_cpu_llc"]
                .iter()
                .any(|m| q.contains(m))
        {
            assert_eq!(
                prom_series(prom_port, q),
                Some(0),
                "no PMU, yet data for {q}"
            );
            eprintln!("no PMU, no series: {q}");
            continue;
        }
        while prom_series(prom_port, q).unwrap_or(0) == 0 {
            assert!(
                start.elapsed().as_secs() < 90,
                "no data for the dashboard query {q}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        eprintln!("{} series: {q}", prom_series(prom_port, q).unwrap_or(0));
    }
    // One headroom per agent, between 0 and 1 (an agent's busy and idle
    // time meet in one window: they once made two series, 1 and 0).
    assert_eq!(
        prom_series(prom_port, "weft_agent_headroom_ratio >= 0 <= 1"),
        prom_series(prom_port, "weft_agent_info"),
        "one headroom per agent"
    );
    // The pinned agent's thread is on its core in the OS and software
    // rows alike.
    let last_core = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
    assert_eq!(
        prom_series(prom_port, &format!(
            "rate(weft_thread_cpu_seconds_total{{node=\"telemetry\"}}[1m]) * on(node, pid, agent) group_left(core) weft_agent_info{{core=\"{last_core}\"}}"
        )),
        Some(1),
        "the telemetry agent's thread, pinned to core {last_core}"
    );
}

/// `weft-stat serve` passes `promtool check metrics`, and a real Prometheus
/// server scrapes it while clients hold connections open, with a real
/// market-data workload running: every scrape is up; the UDP send/receive
/// join and the backlog and ring-fill queries return series; the gateway's
/// republish counts as a shared-memory publication. (Every dashboard
/// query is checked in `alerts_arrive_on_redis_exactly_once_across_a_restart`,
/// where alerts fire for the annotation.)
#[test]
fn prometheus_scrapes_weft_stat_serve() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    for tool in ["promtool", "prometheus"] {
        if Command::new(tool).arg("--version").output().is_err() {
            // scripts/setup installs it as root (the README test command runs it).
            assert!(!root, "{tool} is not installed: run scripts/setup");
            eprintln!("skipped: {tool} is not installed and scripts/setup needs root");
            return;
        }
    }
    let dir = temp_dir("prom");
    let node = node_with_fixed_task(&dir, "stat-prom", 4321, 5000);
    // An application's own counter and gauge (a label with a quote in it).
    let orders = node.app_counter("orders \"sent\"", false).unwrap();
    orders.add(12);
    let depth = node.app_counter("book depth", true).unwrap();
    depth.set(7);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workload = market_data_workload(&dir, stop.clone());
    let port = free_port();
    let _serve = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--dir")
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics = first_scrape(port);
    let pid = std::process::id();
    assert!(
        metrics.contains(&format!(
            "weft_task_work_total{{node=\"stat-prom\",pid=\"{pid}\",task=\"1\",name=\"fixed-4321\"}} 4321"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weft_agent_cycle_seconds_count{{node=\"stat-prom\",pid=\"{pid}\",agent=\"0\",name=\"agent-0\"}} 5000"
        )),
        "{metrics}"
    );
    for series in [
        format!(
            "weft_app_total{{node=\"stat-prom\",pid=\"{pid}\",name=\"orders \\\"sent\\\"\"}} 12"
        ),
        format!("weft_app_value{{node=\"stat-prom\",pid=\"{pid}\",name=\"book depth\"}} 7"),
    ] {
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
    }
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Clients that hold connections open while Prometheus scrapes: idle ones
    // that never send a byte, and slow ones that trickle a request a byte a
    // second. (With one connection served at a time, they stalled scrapes
    // for seconds and Prometheus recorded `up=0`.)
    let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let idle: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let hold = hold.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                while hold.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter() {
                        if !hold.load(std::sync::atomic::Ordering::Relaxed)
                            || s.write_all(&[*b]).is_err()
                        {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    let (_prometheus, prom_port) = prometheus_scraping(&dir, &[port]);
    let query = format!("/api/v1/query?query=weft_task_work_total%7Bpid%3D%22{pid}%22%7D");
    let start = std::time::Instant::now();
    loop {
        if let Some(answer) = http_get(prom_port, &query) {
            if answer.contains("\"4321\"") {
                break;
            }
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "Prometheus never answered weft_task_work_total = 4321"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // Every scrape succeeded while those connections were held: at least
    // eight scrapes (1 s apart), and `up` never 0 among them.
    let start = std::time::Instant::now();
    let scrapes = "/api/v1/query?query=count_over_time(up%7Bjob%3D%22weft%22%7D%5B1m%5D)";
    loop {
        let n = http_get(prom_port, scrapes)
            .and_then(|a| prom_value(&a))
            .unwrap_or(0.0);
        if n >= 8.0 {
            break;
        }
        assert!(start.elapsed().as_secs() < 60, "only {n} scrapes in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let min_up = http_get(
        prom_port,
        "/api/v1/query?query=min_over_time(up%7Bjob%3D%22weft%22%7D%5B1m%5D)",
    )
    .and_then(|a| prom_value(&a));
    assert_eq!(
        min_up,
        Some(1.0),
        "a scrape failed while clients held connections"
    );
    let served = http_get(prom_port, "/api/v1/query?query=weft_stat_scrapes_total")
        .and_then(|a| prom_value(&a))
        .unwrap_or(0.0);
    assert!(served >= 8.0, "weft_stat_scrapes_total {served}");

    // The label schema: a sender's and its receivers' positions join on
    // channel and stream (two receivers: the gateway and telemetry); the
    // backlog and how full the ring is are one query each.
    let series = |q: &str| prom_series(prom_port, q);
    assert_eq!(
        series(
            "weft_udp_send_position - on(channel, stream) group_right weft_udp_receive_position"
        ),
        Some(2),
        "the UDP send/receive join"
    );
    assert_eq!(
        series("weft_udp_send_position - on(channel, stream) weft_udp_receive_position{role=\"gateway-in\"}"),
        Some(1)
    );
    assert_eq!(
        series(
            "weft_shm_subscriber_lag_bytes{node=\"md-subscriber\"} / weft_shm_ring_capacity_bytes"
        ),
        Some(2),
        "backlog over capacity, per subscription"
    );
    assert_eq!(
        series("weft_shm_sent_messages_total{role=\"gateway-in\",channel=\"shm:prom-md\"} > 0"),
        Some(1),
        "the gateway's republish is a shared-memory publication"
    );
    assert_eq!(
        series("weft_task_info{node=\"md-gateway\",name=~\"gateway-in udp://.* -> shm:prom-md\"}"),
        Some(1),
        "tasks are named"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(workload.join().unwrap() > 0, "the workload moved nothing");
    hold.store(false, std::sync::atomic::Ordering::Relaxed);
    drop(idle);
    for t in slow {
        t.join().unwrap();
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, CLI hygiene: `--version` says which build, and a directory
/// that does not exist is an error that says so (exit 2), not an empty
/// table.
#[test]
fn version_and_a_missing_directory_are_answered_plainly() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-stat"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("weft-stat 0."),
        "{text}"
    );
    assert!(text.contains("commit "), "{text}");
    for args in [&["list"][..], &["--once"], &["loss"], &["errors"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["--dir", "/nonexistent/weft"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("/nonexistent/weft is not a directory"),
            "{args:?}: {err}"
        );
    }
}

/// Not a test of its own: the lifecycle tests start it as a child. A node
/// with a task, a shared-memory publication (a ring file), a control ring,
/// an error and a loss; then, by `WEFT_STAT_LIFECYCLE`: `exit` closes it
/// and exits cleanly, `wait` waits to be signalled or killed.
#[test]
fn lifecycle_child() {
    let Ok(mode) = std::env::var("WEFT_STAT_LIFECYCLE") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("WEFT_STAT_CHILD_DIR").unwrap());
    let mut node = Node::new(NodeConfig {
        dir: dir.clone(),
        threading: ThreadingMode::Invoker,
        name: format!("lifecycle-{mode}"),
        ..NodeConfig::default()
    })
    .unwrap();
    node.add_task(
        0,
        Box::new(Fixed {
            name: "fixed-77".into(),
            work: 77,
        }),
    )
    .unwrap();
    for _ in 0..100 {
        node.do_work();
    }
    let publ = node.publication(&format!("shm:life-{mode}"), 1).unwrap();
    node.counters()
        .log_error("application", "lifecycle: the application's own error", 1);
    node.counters()
        .loss_report(2, 0x11fe, "udp://239.77.58.2:4000")
        .record(5, 500);
    if mode == "exit" {
        drop(publ);
        node.close().unwrap();
        println!("ready");
        return;
    }
    println!("ready");
    std::thread::sleep(std::time::Duration::from_secs(120));
    drop(publ);
}

/// Starts `lifecycle_child` in `mode` in `dir`; returns it once it is ready.
fn lifecycle_child_in(dir: &Path, mode: &str) -> std::process::Child {
    child_ready(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lifecycle_child", "--nocapture"])
            .env("WEFT_STAT_CHILD_DIR", dir)
            .env("WEFT_STAT_LIFECYCLE", mode),
    )
}

/// Starts `cmd` (this test binary running one of its child "tests") and
/// returns it once it has printed `ready`; the rest of its output is
/// drained, so its last lines do not meet a closed pipe.
fn child_ready(cmd: &mut Command) -> std::process::Child {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
    }
    // Drain the rest, so the child's last lines do not meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// `weft-stat` in `dir`, with its exit code and both outputs.
fn stat_status(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-stat"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `weft-stat serve --linger SECS` on a free port; its `/metrics` once it answers.
fn serve_once(dir: &Path, linger: &str) -> String {
    let port = free_port();
    let _serve = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--linger", linger])
            .arg("--dir")
            .arg(dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    loop {
        if let Some(m) = http_get(port, "/metrics") {
            return m;
        }
        assert!(start.elapsed().as_secs() < 20, "serve never answered");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Issue 22, lifecycle of a clean exit: the ring and control files go at
/// once; the counters file stays, marked closed, with its final values,
/// error log and loss report, exported for the linger time; then
/// `weft-stat reclaim` (or the next node in the directory) removes it.
#[test]
fn a_clean_exit_lingers_closed_then_goes() {
    let dir = temp_dir("clean-exit");
    let mut child = lifecycle_child_in(&dir, "exit");
    assert!(child.wait().unwrap().success());
    let pid = child.id();
    assert_eq!(
        files(&dir),
        [format!("counters.{pid}.0")],
        "only the counters file is left"
    );
    let (listed, _) = stat(&dir, &["list", "--json"]);
    assert!(listed[0].contains("\"state\":\"closed\""), "{listed:#?}");
    let (errors, _) = stat(&dir, &["errors", "--json"]);
    assert!(errors[0].contains("lifecycle: the application's own error"));
    let (loss, _) = stat(&dir, &["loss", "--json"]);
    assert_eq!(number(&loss[0], "datagrams"), 5);
    // Scraped within the linger: its final values, and its state.
    let metrics = serve_once(&dir, "60");
    assert!(
        metrics.contains(&format!(
            "weft_task_work_total{{node=\"lifecycle-exit\",pid=\"{pid}\",task=\"2\",name=\"fixed-77\"}} 77"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "weft_process_state{{node=\"lifecycle-exit\",pid=\"{pid}\",state=\"closed\"}} 1"
    )));
    assert!(metrics.contains("kind=\"application\""));
    // Within the linger, reclaim keeps it.
    let (code, out, _) = stat_status(&dir, &["reclaim", "--linger", "60"]);
    assert_eq!((code, out.as_str()), (0, ""));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Past the linger: no longer exported, and reclaim removes it.
    let metrics = serve_once(&dir, "1");
    assert!(!metrics.contains(&format!("pid=\"{pid}\"")), "{metrics}");
    let (code, out, _) = stat_status(&dir, &["reclaim", "--linger", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "removed counters.{pid}.0 (pid {pid}): closed cleanly, past its linger"
        )),
        "{out}"
    );
    assert!(files(&dir).is_empty());

    // The next node in the directory sweeps a closed file past its linger.
    let mut child = lifecycle_child_in(&dir, "exit");
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let sweeper = Node::new(NodeConfig {
        dir: dir.clone(),
        threading: ThreadingMode::Invoker,
        control_ring: false,
        name: "sweeper".into(),
        counters_linger: std::time::Duration::from_secs(1),
        ..NodeConfig::default()
    })
    .unwrap();
    let own = sweeper.counters().path().unwrap().file_name().unwrap();
    assert_eq!(
        files(&dir),
        [own.to_string_lossy()],
        "the closed file is gone, the sweeper's own is there"
    );
    drop(sweeper);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, lifecycle of `SIGTERM`: handled like a clean close as far as
/// files go (ring and control files removed, counters marked closed), and
/// the process still ends by the signal.
#[test]
fn sigterm_removes_the_files_and_marks_the_counters_closed() {
    use std::os::unix::process::ExitStatusExt;
    let dir = temp_dir("sigterm");
    let mut child = lifecycle_child_in(&dir, "wait");
    let pid = child.id();
    let before = files(&dir);
    assert_eq!(
        before,
        [
            format!("control.{pid}.0"),
            format!("counters.{pid}.0"),
            "life-wait.1".to_string()
        ]
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "ended by SIGTERM: {status:?}");
    assert_eq!(files(&dir), [format!("counters.{pid}.0")]);
    let (listed, _) = stat(&dir, &["list", "--json"]);
    assert!(listed[0].contains("\"state\":\"closed\""), "{listed:#?}");
    let (lines, _) = stat(&dir, &["--once", "--json"]);
    assert_eq!(value(&lines, "task_work", "fixed-77 work"), 77);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, lifecycle of `kill -9`: everything stays; `weft-stat reclaim`
/// lists and removes exactly the dead process's files (counters, control
/// ring, ring), never a live process's, never a foreign file.
#[test]
fn reclaim_removes_exactly_the_files_of_a_killed_process() {
    let dir = temp_dir("reclaim");
    let mut child = lifecycle_child_in(&dir, "wait");
    let pid = child.id();
    // A live node beside it, with files of its own, and a foreign file.
    let mut live = Node::new(NodeConfig {
        dir: dir.clone(),
        threading: ThreadingMode::Invoker,
        name: "live".into(),
        ..NodeConfig::default()
    })
    .unwrap();
    let _publ = live.publication("shm:live-ring", 1).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not weft's").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let n = live
        .counters()
        .path()
        .unwrap()
        .to_string_lossy()
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    let me = format!("{}.{n}", std::process::id());
    let dead = [
        format!("control.{pid}.0"),
        format!("counters.{pid}.0"),
        "life-wait.1".to_string(),
    ];
    let (code, out, err) = stat_status(&dir, &["reclaim", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(listed.len(), 3, "{out}");
    for (line, name) in listed.iter().zip(&dead) {
        assert_eq!(
            *line,
            format!("would remove {name} (pid {pid}): its process is gone")
        );
    }
    assert!(err.contains("3 to remove, 3 kept"), "{err}");
    assert_eq!(files(&dir).len(), 7, "a dry run removes nothing");
    let (code, out, _) = stat_status(&dir, &["reclaim"]);
    assert_eq!((code, out.lines().count()), (0, 3), "{out}");
    assert_eq!(
        files(&dir),
        [
            format!("control.{me}"),
            format!("counters.{me}"),
            "live-ring.1".to_string(),
            "notes.txt".to_string()
        ]
    );
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, CLI hygiene: a flag that means nothing in a mode is refused, an
/// unknown counter type is named, and a filter that matches nothing (or a
/// directory without counters files) says so and exits 1.
#[test]
fn meaningless_flags_and_empty_filters_are_errors_that_say_so() {
    let dir = temp_dir("cli");
    std::fs::create_dir_all(&dir).unwrap();
    // An empty directory: nothing could be read.
    for args in [
        &["list"][..],
        &["--once"],
        &["loss"],
        &["errors"],
        &["histograms"],
    ] {
        let (code, _, err) = stat_status(&dir, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("no weft process has a counters file"),
            "{args:?}: {err}"
        );
    }
    let node = node_with_fixed_task(&dir, "cli", 5, 5);
    for (args, says) in [
        (&["serve", "--json"][..], "serve: --json means nothing here"),
        (&["serve", "--once"], "--once means nothing here"),
        (
            &["list", "--type", "task_work"],
            "list: --type means nothing here",
        ),
        (
            &["errors", "--stream", "3"],
            "errors: --stream means nothing here",
        ),
        (
            &["reclaim", "--pid", "3"],
            "reclaim: --pid means nothing here (it takes: --dir only)",
        ),
        (
            &["--once", "--type", "nosuch"],
            "--type \"nosuch\" is no counter type",
        ),
        (&["--once", "--interval", "0"], "--interval 0"),
        (&["serve", "--linger", "nan"], "--linger NaN"),
    ] {
        let (code, _, err) = stat_status(&dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    for (args, says) in [
        (
            &["--once", "--pid", "1"][..],
            "no counter matches --pid 1 in",
        ),
        (
            &["--once", "--label", "no such label"],
            "no counter matches --label \"no such label\"",
        ),
        (&["list", "--pid", "1"], "no process matches --pid 1"),
        (&["loss", "--pid", "1"], "no process matches --pid 1"),
    ] {
        let (code, out, err) = stat_status(&dir, args);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // What does match still works.
    let (code, out, _) = stat_status(&dir, &["--once", "--type", "task_work"]);
    assert_eq!(code, 0);
    assert!(out.contains("fixed-5 work"), "{out}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, the live view: on a 12 x 80 terminal (a pty from `script`) the
/// header stays, rows are cut to fit with a "more rows" line, every line
/// fits the width, busy time is a percentage of a core, gauges say so, `s`
/// changes the sort and `q` quits (exit 0, the terminal restored).
#[test]
fn the_live_view_fits_the_terminal_sorts_and_quits_on_q() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to give weft-stat a terminal");
        return;
    }
    let dir = temp_dir("live");
    let mut node = node_with_fixed_task(&dir, "live", 1000, 10);
    let bin = env!("CARGO_BIN_EXE_weft-stat");
    let mut view = Command::new("script")
        .args(["-qfec"])
        .arg(format!(
            "stty rows 12 cols 80; {bin} --dir {} --interval 0.2",
            dir.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = view.stdin.take().unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        node.do_work();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    use std::io::Write;
    keys.write_all(b"s").unwrap();
    keys.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    keys.write_all(b"q").unwrap();
    keys.flush().unwrap();
    let out = view.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).replace("\x1b[2J\x1b[H", "\x0c");
    let screens: Vec<&str> = text
        .split('\x0c')
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert!(screens.len() >= 3, "{text}");
    for screen in &screens {
        let lines: Vec<&str> = screen.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert!(lines.len() <= 12, "{} lines: {screen}", lines.len());
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{screen}");
        assert!(lines[0].starts_with("weft-stat "), "{screen}");
        assert!(lines[1].trim_start().starts_with("pid node"), "{screen}");
        assert!(lines[1].contains(" /s "), "the rate column fits: {screen}");
        assert!(lines.last().unwrap().contains("more rows"), "{screen}");
    }
    let last = screens.last().unwrap();
    assert!(last.contains("sort: value"), "s changed the sort: {last}");
    assert!(screens[1].contains("sort: rate"), "{}", screens[1]);
    // Busy time as a share of a core, gauges as gauges (sorted by rate,
    // the time counters come first).
    assert!(
        screens[1]
            .lines()
            .any(|l| l.contains("_ns ") && l.trim_end().ends_with('%')
                || l.contains("_ns ") && l.contains('%')),
        "{}",
        screens[1]
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The operating-system and hardware levels: a node with an agent thread
/// pinned to core 1; `weft-stat host` shows it on that core beside the
/// core's OS figures, and says hardware counters are unavailable where the
/// machine has no PMU (this VM); `serve` exports the node_exporter-named
/// families, the agent thread's scheduling, the per-core perf software
/// events and the NICs, and says "unavailable" once, exporting no
/// hardware counter it cannot read.
#[test]
fn the_host_levels_are_shown_and_exported() {
    let dir = temp_dir("host");
    let mut node = Node::new(NodeConfig {
        dir: dir.clone(),
        threading: ThreadingMode::Dedicated,
        cores: vec![1],
        control_ring: false,
        name: "stat-host".into(),
        ..NodeConfig::default()
    })
    .unwrap();
    let _publ = node.publication("udp://239.77.57.1:40457?interface=127.0.0.1", 1);
    // The agent records its thread id at its first duty cycle.
    let start = std::time::Instant::now();
    let tid = loop {
        let (lines, _) = stat(&dir, &["--once", "--json", "--type", "agent_thread"]);
        if let Some(t) = lines.iter().map(|l| number(l, "value")).find(|&t| t > 0) {
            break t;
        }
        assert!(start.elapsed().as_secs() < 20, "no agent thread id");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = Command::new(env!("CARGO_BIN_EXE_weft-stat"))
        .args(["host", "--json", "--interval", "0.3", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let core1 = text
        .lines()
        .find(|l| l.contains("\"cpu\":1,"))
        .unwrap_or_else(|| panic!("core 1 in {text}"));
    assert!(
        core1.contains("stat-host") && core1.contains("duty"),
        "the agent on its core: {core1}"
    );
    assert!(core1.contains("\"busy_pct\":"), "{core1}");
    let pmu = Command::new("perf")
        .args(["stat", "-e", "cycles", "true"])
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stderr).contains("not supported"))
        .unwrap_or(false);
    if !pmu {
        assert!(
            core1.contains("unavailable: no hardware PMU"),
            "says why there is no IPC: {core1}"
        );
        assert_eq!(
            stderr.matches("unavailable: no hardware PMU").count(),
            1,
            "said once: {stderr}"
        );
    }

    let port = free_port();
    let mut serve = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--dir")
            .arg(&dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let metrics = first_scrape(port);
    let second = http_get(port, "/metrics").unwrap();
    let pid = std::process::id();
    let thread =
        format!("node=\"stat-host\",pid=\"{pid}\",agent=\"0\",name=\"agent-0\",thread=\"{tid}\"");
    for want in [
        "node_cpu_seconds_total{cpu=\"1\",mode=\"steal\"}".to_string(),
        "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}".to_string(),
        format!("weft_thread_cpu_seconds_total{{{thread}}}"),
        format!("weft_thread_run_delay_seconds_total{{{thread}}}"),
        format!("weft_thread_context_switches_total{{{thread},kind=\"involuntary\"}}"),
        format!("weft_thread_migrations_total{{{thread}}}"),
        "weft_host_udp_receive_buffer_errors_total ".to_string(),
        "weft_host_udp_in_errors_total ".to_string(),
        format!("weft_udp_socket_drops_total{{node=\"stat-host\",pid=\"{pid}\",local="),
        format!("weft_process_locked_memory_bytes{{node=\"stat-host\",pid=\"{pid}\"}}"),
        "weft_host_huge_pages ".to_string(),
        "weft_cpu_context_switches_total{cpu=\"1\"}".to_string(),
        "weft_cpu_page_faults_total{cpu=\"0\"}".to_string(),
        "node_network_receive_packets_total{device=\"lo\"}".to_string(),
    ] {
        assert!(metrics.contains(&want), "{want} in:\n{metrics}");
    }
    if !pmu {
        assert!(metrics.contains("weft_hardware_counters_available 0"));
        assert!(!metrics.contains("weft_cpu_cycles_total{"), "nothing false");
    }
    // The pinned agent's thread never moves.
    let migrations = |m: &str| {
        m.lines()
            .find(|l| l.starts_with(&format!("weft_thread_migrations_total{{{thread}}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap()
    };
    assert_eq!(migrations(&metrics), migrations(&second));
    let _ = serve.0.kill();
    let _ = serve.0.wait();
    let mut err = String::new();
    use std::io::Read;
    let _ = serve.0.stderr.take().unwrap().read_to_string(&mut err);
    if !pmu {
        assert_eq!(
            err.matches("unavailable").count(),
            1,
            "said once over two scrapes: {err}"
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Burst metrics and headroom: a burst that fills most of a ring in a
/// millisecond, then nothing for a second, shows as a 1 ms peak rate far
/// above the 1 s one and a ring fill high-water over a half; against a
/// saturation rate from a stress results store, as the publication's
/// headroom.
#[test]
fn a_burst_shows_in_the_peaks_and_the_headroom() {
    let dir = temp_dir("burst");
    let mut node = node(&dir, "stat-burst");
    let uri = "shm:burst?capacity=64KiB";
    let mut publ = node.publication(uri, 1).unwrap();
    let mut sub = node.subscription(uri, 1).unwrap();
    while !publ.is_connected() {
        sub.poll(16, |_| {}).unwrap();
    }
    let store = dir.join("stress.jsonl");
    std::fs::write(
        &store,
        "{\"time_s\":1,\"run\":\"r\",\"path\":\"shm-broadcast-1\",\"saturation_per_s\":4000000,\"msg_bytes\":64,\"commit\":\"c\"}\n",
    )
    .unwrap();
    let port = free_port();
    let _serve = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--saturation",
            ])
            .arg(&store)
            .arg("--dir")
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    first_scrape(port);
    // Past the sampler's rescan, so it tracks the channel; then the burst:
    // 600 messages of 64 bytes (an 80-byte frame each: 48,000 of 65,536
    // bytes) at once, read only after a while.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    for i in 0..600u64 {
        publ.offer(&[i as u8; 64]).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut got = 0;
    while got < 600 {
        got += sub.poll(256, |_| {}).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let metrics = http_get(port, "/metrics").unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in:\n{metrics}"))
    };
    let pid = std::process::id();
    let labels = format!(
        "node=\"stat-burst\",pid=\"{pid}\",role=\"publication\",channel=\"shm:burst\",stream=\"1\""
    );
    let ms = value(&format!(
        "weft_channel_peak_rate_messages_per_second{{{labels},window=\"1ms\"}}"
    ));
    let s = value(&format!(
        "weft_channel_peak_rate_messages_per_second{{{labels},window=\"1s\"}}"
    ));
    assert!(ms > 100_000.0, "600 messages within a tick or two: {ms}");
    assert!(
        s < ms / 10.0,
        "the 1 s window averages the burst away: {s} vs {ms}"
    );
    let fill = value("weft_shm_ring_fill_high_water_ratio{channel=\"shm:burst\",stream=\"1\"}");
    assert!(
        (0.5..=1.0).contains(&fill),
        "the burst filled most of the ring: {fill}"
    );
    let headroom = value(&format!("weft_channel_headroom_ratio{{{labels}}}"));
    assert!(
        (headroom - (1.0 - ms / 4e6)).abs() < 1e-6,
        "1 - peak / saturation: {headroom}"
    );
    assert!(metrics.contains("path=\"shm-broadcast-1\",msg_bytes=\"64\"} 4000000"));
    // The peaks are since the last scrape: the next one starts afresh.
    let again = http_get(port, "/metrics").unwrap();
    assert!(
        !again.contains(&format!("{labels},window=\"1ms\"}} {ms}")),
        "the peak was taken"
    );
    drop((publ, sub, node));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The process `alerts_arrive_on_redis_exactly_once_across_a_restart`
/// kills: a publisher, run as this test binary with WEFT_ALERTS_VICTIM set
/// to the directory (it does nothing otherwise).
#[test]
fn alerts_victim_process() {
    let Some(dir) = std::env::var_os("WEFT_ALERTS_VICTIM") else {
        return;
    };
    let mut node = Node::new(NodeConfig {
        dir: PathBuf::from(dir),
        threading: ThreadingMode::Dedicated,
        control_ring: false,
        name: "alerts-victim".into(),
        ..NodeConfig::default()
    })
    .unwrap();
    let mut publ = node.publication("shm:victim", 1).unwrap();
    println!("ready");
    loop {
        let _ = publ.offer(&[1; 16]);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The notification platform end to end: Redis on 127.0.0.1, `weft-stat
/// serve` evaluating rules every 200 ms against a real weft workload, and
/// four faults in turn: a saturating burst (headroom), a stalled consumer,
/// seeded loss (UDP LOSS events, while Redis is restarted: the firing and
/// its resolution are held and delivered when it is back), a publisher
/// killed with SIGKILL. Each alert arrives in the stream exactly once
/// firing and once resolved; `weft-stat watch` reads them all through a
/// consumer group, across its own restart. Meanwhile a real Prometheus
/// scrapes the same serve with the market-data workload running beside
/// the faults, and while the stalled consumer's alert fires, every query
/// of the Grafana dashboard returns series (all its rows, and the alerts
/// annotation).
#[test]
fn alerts_arrive_on_redis_exactly_once_across_a_restart() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    for tool in ["redis-server", "redis-cli", "prometheus"] {
        if Command::new(tool).arg("--version").output().is_err() {
            assert!(!root, "{tool} is not installed: run scripts/setup");
            eprintln!("skipped: {tool} is not installed and scripts/setup needs root");
            return;
        }
    }
    let dir = temp_dir("alerts");
    std::fs::create_dir_all(&dir).unwrap();
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let port = free_port();
    let mut server = Some(redis_server(&redis_dir, port));
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[notify]
eval_interval = "200ms"
repeat_interval = "1h"
group_by = ["alertname", "node"]

[[rule]]
name = "WeftHeadroomLow"
expr = 'weft_channel_headroom_ratio{node="alerts-burst"}'
op = "<"
threshold = 0.2
severity = "warning"
summary = "burst"

[[rule]]
name = "WeftConsumerStuck"
expr = 'weft_shm_subscriber_lag_ratio{node="alerts-shm"}'
op = ">"
threshold = 0.9
for = "1s"
severity = "warning"
summary = "stuck"

[[rule]]
name = "WeftUdpLoss"
expr = 'increase(weft_udp_loss_events_total{node="alerts-lossy"}[2s])'
op = ">"
threshold = 0
severity = "critical"
summary = "loss"

[[rule]]
name = "WeftPublisherGone"
expr = 'weft_publication_up{node="alerts-victim"}'
op = "=="
threshold = 0
severity = "critical"
summary = "gone"
"#,
    )
    .unwrap();
    // Saturation rates as a weft-bench stress store holds them (made up:
    // the burst of 3,000 saturates the shared-memory path; the others give
    // the workload's UDP and gateway ends a headroom for the dashboard).
    let saturation = dir.join("stress.jsonl");
    let mut rows = String::new();
    for (path, rate) in [("shm-broadcast-1", 2e4), ("udp-1", 5e5), ("gateway", 4e5)] {
        rows.push_str(&format!(
            "{{\"time_s\":1,\"run\":\"r\",\"path\":\"{path}\",\"saturation_per_s\":{rate},\"msg_bytes\":64,\"commit\":\"c\"}}\n"
        ));
    }
    std::fs::write(&saturation, rows).unwrap();
    let http = free_port();
    let _serve = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["serve", "--listen", &format!("127.0.0.1:{http}")])
            .args(["--linger", "2", "--dead-linger", "2", "--rules"])
            .arg(&rules)
            .args([
                "--redis",
                &format!("redis://127.0.0.1:{port}"),
                "--saturation",
            ])
            .arg(&saturation)
            .arg("--dir")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workload = market_data_workload(&dir, stop.clone());
    let (_prometheus, prom_port) = prometheus_scraping(&dir, &[http]);
    // (id, alertname, status, fingerprint, dedup) of each entry.
    let entries = || -> Vec<[String; 5]> {
        stream_entries(
            port,
            "weft:alerts",
            ["alertname", "status", "fingerprint", "dedup"],
        )
        .into_iter()
        .map(|(id, [name, status, fp, dedup])| [id, name, status, fp, dedup])
        .collect()
    };
    let wait_for = |what: &str, cond: &dyn Fn(&[[String; 5]]) -> bool| {
        let start = std::time::Instant::now();
        loop {
            let e = entries();
            if cond(&e) {
                return e;
            }
            assert!(
                start.elapsed().as_secs() < 30,
                "waited 30 s for {what}; the stream: {e:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let has = |e: &[[String; 5]], name: &str, status: &str| {
        e.iter().filter(|x| x[1] == name && x[2] == status).count()
    };
    let dedicated = |name: &str| NodeConfig {
        dir: dir.clone(),
        threading: ThreadingMode::Dedicated,
        control_ring: false,
        name: name.into(),
        ..NodeConfig::default()
    };
    // Let serve's sampler find the processes before each fault.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(1300));

    // 1. A saturating burst: 3,000 messages at once on a path measured to
    // saturate at 20,000 a second.
    let mut burst = Node::new(dedicated("alerts-burst")).unwrap();
    let mut bp = burst
        .publication("shm:alerts-burst?capacity=1MiB", 1)
        .unwrap();
    let mut bs = burst
        .subscription("shm:alerts-burst?capacity=1MiB", 1)
        .unwrap();
    while !bp.is_connected() {
        bs.poll(16, |_| {}).unwrap();
    }
    settle();
    for _ in 0..3000 {
        bp.offer(&[2; 64]).unwrap();
    }
    while bs.poll(1024, |_| {}).unwrap() > 0 {}
    wait_for("the burst's firing and resolution", &|e| {
        has(e, "WeftHeadroomLow", "firing") == 1 && has(e, "WeftHeadroomLow", "resolved") == 1
    });

    // 2. A stalled consumer: its ring fills, then it reads again.
    let mut shm = Node::new(dedicated("alerts-shm")).unwrap();
    let mut sp = shm
        .publication("shm:alerts-stall?capacity=64KiB", 1)
        .unwrap();
    let mut ss = shm
        .subscription("shm:alerts-stall?capacity=64KiB", 1)
        .unwrap();
    while !sp.is_connected() {
        ss.poll(16, |_| {}).unwrap();
    }
    while sp.offer(&[3; 64]).is_ok() {}
    wait_for("the stalled consumer's firing", &|e| {
        has(e, "WeftConsumerStuck", "firing") == 1
    });
    every_dashboard_panel_has_data(prom_port);
    while ss.poll(1024, |_| {}).unwrap() > 0 {}
    wait_for("the stalled consumer's resolution", &|e| {
        has(e, "WeftConsumerStuck", "resolved") == 1
    });

    // 3. Redis goes away; seeded loss fires and resolves meanwhile; Redis
    // comes back with what it held, and gets what it missed.
    let before = entries().len();
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "shutdown"])
        .output()
        .unwrap();
    drop(server.take());
    let mut lossy_cfg = dedicated("alerts-lossy");
    lossy_cfg.udp.loss = Some(weft::LossConfig {
        seed: 11,
        probability: 0.3,
        mean_burst: 4.0,
    });
    let udp = udp_uri();
    let mut lossy = Node::new(lossy_cfg).unwrap();
    let mut ls = lossy.subscription(&udp, 5).unwrap();
    let mut sender = Node::new(dedicated("alerts-sender")).unwrap();
    let mut lp = sender.publication(&format!("{udp}?flow=none"), 5).unwrap();
    settle();
    let mut losses = 0;
    let start = std::time::Instant::now();
    while losses == 0 {
        assert!(
            start.elapsed().as_secs() < 30,
            "no Loss event from 30 % loss"
        );
        for _ in 0..200 {
            let _ = lp.offer(&[5; 1000]);
        }
        ls.poll(1024, |e| {
            if let weft::Event::Loss { .. } = e {
                losses += 1;
            }
        })
        .unwrap();
    }
    drop(lp);
    // Past the 2 s window: the alert has fired and resolved while Redis
    // was down.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(entries().len(), 0, "Redis is down: nothing to read");
    server = Some(redis_server(&redis_dir, port));
    let after = wait_for("the loss alert, held through the restart", &|e| {
        has(e, "WeftUdpLoss", "firing") == 1 && has(e, "WeftUdpLoss", "resolved") == 1
    });
    assert!(
        after.len() >= before + 2,
        "the earlier entries survived the restart"
    );

    // 4. A publisher killed with SIGKILL.
    let mut victim = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "alerts_victim_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("WEFT_ALERTS_VICTIM", &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(victim.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the victim never got ready"
        );
    }
    settle();
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let all = wait_for("the killed publisher's firing and resolution", &|e| {
        has(e, "WeftPublisherGone", "firing") == 1 && has(e, "WeftPublisherGone", "resolved") == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let all_after = entries();
    // Exactly once: every alert once firing, once resolved; no dedup key
    // twice; nothing else.
    for name in [
        "WeftHeadroomLow",
        "WeftConsumerStuck",
        "WeftUdpLoss",
        "WeftPublisherGone",
    ] {
        assert_eq!(has(&all_after, name, "firing"), 1, "{name}: {all_after:?}");
        assert_eq!(
            has(&all_after, name, "resolved"),
            1,
            "{name}: {all_after:?}"
        );
        let fps: Vec<&String> = all_after
            .iter()
            .filter(|x| x[1] == name)
            .map(|x| &x[3])
            .collect();
        assert_eq!(fps[0], fps[1], "{name}: one alert");
    }
    let mut keys: Vec<&String> = all_after.iter().map(|x| &x[4]).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        all_after.len(),
        "a dedup key twice: {all_after:?}"
    );
    assert_eq!(all_after.len(), 8, "{all_after:?}");
    assert!(all.len() <= all_after.len());

    // A consumer group reads them all, across the consumer's restart.
    let watch = |max: u64| {
        let out = Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["watch", "--redis", &format!("redis://127.0.0.1:{port}")])
            .args([
                "--group",
                "test",
                "--consumer",
                "c1",
                "--max",
                &max.to_string(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let mut ids = watch(3);
    ids.extend(watch(5));
    let want: Vec<String> = all_after.iter().map(|x| x[0].clone()).collect();
    assert_eq!(ids, want, "the group read every entry once, in order");
    drop(server);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(workload.join().unwrap() > 0, "the workload moved nothing");
    drop((bp, bs, burst, sp, ss, shm, ls, lossy, sender));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped rules: well-formed, and docs/alerts/weft-alerts.yml is what
/// `weft-stat rules --prometheus` makes of them, which `promtool check
/// rules` accepts. A rules file with a typo in a metric is refused, naming
/// it.
#[test]
fn the_shipped_rules_are_checked_and_their_prometheus_file_matches() {
    let stat = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = stat(&["rules"]);
    assert!(out.status.success(), "{out:?}");
    let yaml = String::from_utf8(stat(&["rules", "--prometheus"]).stdout).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/alerts/weft-alerts.yml"),
    )
    .unwrap();
    assert_eq!(
        yaml, shipped,
        "docs/alerts/weft-alerts.yml is stale: weft-stat rules --prometheus > docs/alerts/weft-alerts.yml"
    );
    let dir = temp_dir("rules");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("weft-alerts.yml");
    std::fs::write(&file, &yaml).unwrap();
    match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => eprintln!("skipped promtool: not installed (scripts/setup installs it)"),
    }
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"X\"\nexpr = \"rate(weft_shm_sent_mesages_total[1m])\"\nop = \">\"\nthreshold = 1\nseverity = \"warning\"\n",
    )
    .unwrap();
    let out = stat(&["rules", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown metric \"weft_shm_sent_mesages_total\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
