//! `weft-stat` against real nodes: the counters it prints match what the node
//! did; a process killed with `kill -9` is shown dead with its counters still
//! readable; a corrupt file is reported and the others are still shown.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use weft::agent::Task;
use weft::{Node, NodeConfig, ThreadingMode};

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
    let out = Command::new(env!("CARGO_BIN_EXE_weft-stat"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "weft-stat {args:?} failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    counters.log_error("doomed: the application's own error", 2);
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
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_node_that_waits_to_be_killed",
            "--nocapture",
        ])
        .env("WEFT_STAT_CHILD_DIR", &dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
    }
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

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`; the body, or `None` if nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of the first sample in a Prometheus instant-query answer
/// (`"value":[TIME,"V"]`).
fn prom_value(answer: &str) -> Option<f64> {
    let at = answer.find("\"value\":[")?;
    let rest = &answer[at..];
    let v = rest.split('"').nth(3)?;
    v.parse().ok()
}

/// Kills a child process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weft-stat serve` passes `promtool check metrics`, and a real Prometheus
/// server scrapes it and answers a query for a weft counter with its value.
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
    let port = free_tcp_port();
    let _serve = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-stat"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--dir")
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    let metrics = loop {
        if let Some(m) = http_get(port, "/metrics") {
            break m;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "weft-stat serve never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let pid = std::process::id();
    assert!(
        metrics.contains(&format!(
            "weft_task_work_total{{process=\"stat-prom\",pid=\"{pid}\""
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weft_agent_cycle_seconds_count{{process=\"stat-prom\",pid=\"{pid}\",agent=\"0\"}} 5000"
        )),
        "{metrics}"
    );
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
    let prom_port = free_tcp_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weft\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
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
