//! weft-rebalance end to end: nodes whose tasks all run on one agent are
//! collected, reported, planned and spread by an interrupted, resumed and
//! rolled-back apply while messages flow; bad input is refused clearly.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_rebalance::collect::read_collection;

#[path = "../../test-support/servers.rs"]
mod servers;
use servers::{free_port, http_get, prometheus_scraping, redis_server, stream_entries, KillOnDrop};

/// The (id, [alertname, status, summary]) of each entry of `weft:alerts`.
fn alerts(port: u16) -> Vec<(String, [String; 3])> {
    stream_entries(port, "weft:alerts", ["alertname", "status", "summary"])
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-rebalance-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The demo workload, `examples/skewed_pipeline.rs`, built by `cargo test`
/// with this test: `target/<profile>/examples/skewed_pipeline`.
fn skewed_pipeline() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/skewed_pipeline");
    assert!(
        path.exists(),
        "{} is missing: run through cargo test",
        path.display()
    );
    path
}

/// Counter types of the demo's own pipeline counters (not weft's).
const SEQUENCE_ERRORS: u32 = 9001;
const SEQUENCE_RECEIVED: u32 = 9002;

/// The pipeline's (errors, received) from the node's counters file.
fn pipeline(dir: &Path, pid: u32) -> (u64, u64) {
    let reader = weft::weft_counters::scan(dir)
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .find(|r| r.pid() == pid)
        .expect("the node's counters file");
    let value = |t: u32| {
        reader
            .counters()
            .into_iter()
            .find(|c| c.type_id == t)
            .map_or(0, |c| c.value)
    };
    (value(SEQUENCE_ERRORS), value(SEQUENCE_RECEIVED))
}

fn tool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-rebalance"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn skewed_nodes_are_collected_planned_and_spread_by_an_interrupted_apply() {
    let dir = temp_dir("skewed");
    // Two nodes, each with its four pipeline tasks on agent 0 (core 0).
    let mut children: Vec<KillOnDrop> = (0..2).map(|_| skewed_node(&dir, "2", "120")).collect();
    let pids: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    let collection = dir.join("collection.jsonl");
    let (ok, _, err) = tool(&[
        "collect",
        "--dir",
        dir.to_str().unwrap(),
        "--window",
        "1.5",
        "--interval",
        "100",
        "--out",
        collection.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let windows = read_collection(&collection).unwrap();
    let w = &windows[0];
    assert!(w.valid, "{:?}", w.invalid_reason);
    let mut seen: Vec<u32> = w.nodes.iter().map(|n| n.pid).collect();
    seen.sort_unstable();
    let mut want = pids.clone();
    want.sort_unstable();
    assert_eq!(seen, want, "{:?}", w.nodes);
    for node in &w.nodes {
        let pid = node.pid;
        assert_eq!(node.label, "skewed");
        assert_eq!(
            node.control_ring,
            node.counters_file.replace("counters", "control")
        );
        let cores: Vec<_> = node.agents.iter().map(|a| (a.index, a.core)).collect();
        assert_eq!(cores, vec![(0, Some(0)), (1, Some(1))]);
        for a in &node.agents {
            assert!(
                Path::new(&format!("/proc/{pid}/task/{}", a.thread)).exists(),
                "agent {} thread {} is not pid {pid}'s",
                a.index,
                a.thread
            );
        }
        let paced: Vec<_> = node
            .tasks
            .iter()
            .filter(|t| t.name.starts_with("paced"))
            .collect();
        assert_eq!(paced.len(), 4, "{:?}", node.tasks);
        assert!(paced
            .iter()
            .all(|t| t.agent == 0 && t.cost > 0.0 && t.work_per_s > 0.0));
    }

    // Collecting continuously, the tool exports the balance ratio in a
    // counters file of its own (what `weft-stat serve` scrapes): all the
    // load on one of two cores is a ratio of 2.
    let continuous = dir.join("continuous.jsonl");
    let collector = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_weft-rebalance"))
            .args([
                "collect",
                "--dir",
                dir.to_str().unwrap(),
                "--window",
                "0.5",
                "--windows",
                "0",
            ])
            .arg("--out")
            .arg(&continuous)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let ratio = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no balance ratio exported"
        );
        let found = weft::weft_counters::scan(&dir)
            .into_iter()
            .find_map(|(_, r)| {
                let r = r.ok()?;
                (r.pid() == collector.0.id()).then_some(())?;
                r.counters()
                    .into_iter()
                    .find(|c| {
                        c.type_id == weft::weft_counters::types::REBALANCE_BALANCE_RATIO
                            && c.value > 0
                    })
                    .map(|c| c.value)
            });
        if let Some(v) = found {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ratio, 2000);
    drop(collector);

    let (ok, report, err) = tool(&["report", collection.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        report.contains("verdict: rebalance recommended"),
        "{report}"
    );
    assert!(
        report.contains("core 0") && report.contains("core 1"),
        "{report}"
    );

    let plan_file = dir.join("plan.json");
    let (ok, table, err) = tool(&[
        "plan",
        collection.to_str().unwrap(),
        "--out",
        plan_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    let moves = plan["moves"].as_array().unwrap();
    assert!(!moves.is_empty(), "{table}");
    let mut moved: Vec<(u32, u64)> = Vec::new();
    for m in moves {
        assert_eq!(
            (m["from_agent"].as_u64(), m["to_agent"].as_u64()),
            (Some(0), Some(1)),
            "{table}"
        );
        let pid = m["pid"].as_u64().unwrap() as u32;
        assert!(pids.contains(&pid), "{table}");
        moved.push((pid, m["task_id"].as_u64().unwrap()));
    }
    assert!(
        plan["max_after"].as_f64() < plan["max_before"].as_f64(),
        "{table}"
    );
    assert_eq!(plan["state_hash"].as_str().map(str::len), Some(16));
    // The same collection, planned again: the same plan.
    let (_, again, _) = tool(&["plan", collection.to_str().unwrap()]);
    assert_eq!(again, table);

    // Apply: a dry run moves nothing; then one batch of one move, stopped
    // there (as an interrupted apply); then the rest, resumed.
    let dirs = dir.to_str().unwrap();
    let plan_path = plan_file.to_str().unwrap();
    let on_agent = |(pid, id): (u32, u64)| -> u32 {
        let c = dir.join("now.jsonl");
        let _ = std::fs::remove_file(&c);
        let (ok, _, err) = tool(&[
            "collect",
            "--dir",
            dirs,
            "--window",
            "0.2",
            "--interval",
            "50",
            "--out",
            c.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let w = read_collection(&c).unwrap();
        let node = w[0].nodes.iter().find(|n| n.pid == pid).unwrap();
        node.tasks.iter().find(|t| t.id == id).unwrap().agent
    };
    let received =
        |pids: &[u32]| -> Vec<(u64, u64)> { pids.iter().map(|&p| pipeline(&dir, p)).collect() };
    let before = received(&pids);
    let (ok, out, err) = tool(&["apply", plan_path, "--dir", dirs]);
    assert!(ok && out.contains("dry run"), "{out}{err}");
    assert!(moved.iter().all(|&m| on_agent(m) == 0));
    let (ok, out, err) = tool(&[
        "apply",
        plan_path,
        "--dir",
        dirs,
        "--execute",
        "--batch",
        "1",
        "--batches",
        "1",
    ]);
    assert!(
        ok && out.contains("verified: 1 of") && out.contains("stopped"),
        "{out}{err}"
    );
    assert_eq!(on_agent(moved[0]), 1);
    let (ok, out, err) = tool(&["apply", plan_path, "--dir", dirs, "--execute"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("verified: {} of {}", moved.len(), moved.len())),
        "{out}"
    );
    assert!(moved.iter().all(|&m| on_agent(m) == 1));
    // The moved tasks now run on agent 1: its busy time grows, on the
    // thread /proc lists for it.
    let c = dir.join("after.jsonl");
    let (ok, _, err) = tool(&[
        "collect",
        "--dir",
        dirs,
        "--window",
        "1",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let after = read_collection(&c).unwrap();
    for node in after[0]
        .nodes
        .iter()
        .filter(|n| moved.iter().any(|m| m.0 == n.pid))
    {
        let agent1 = &node.agents[1];
        assert!(agent1.busy.iter().sum::<f64>() > 0.0, "{agent1:?}");
        assert!(Path::new(&format!("/proc/{}/task/{}", node.pid, agent1.thread)).exists());
    }
    // Messages went on flowing through the moves, none lost, repeated or
    // out of order.
    for ((errors, now), (_, then)) in received(&pids).into_iter().zip(&before) {
        assert_eq!(errors, 0, "a pipeline saw sequence errors across the moves");
        assert!(now > *then, "{then} → {now}");
    }
    // Applying it again finds nothing to do; without its progress file, the
    // state no longer matches the plan: refused, nothing moved.
    let (ok, out, _) = tool(&["apply", plan_path, "--dir", dirs, "--execute"]);
    assert!(ok && out.contains("nothing to do"), "{out}");
    let progress = format!("{plan_path}.progress");
    let kept = std::fs::read_to_string(&progress).unwrap();
    std::fs::remove_file(&progress).unwrap();
    let (ok, _, err) = tool(&["apply", plan_path, "--dir", dirs, "--execute"]);
    assert!(
        !ok && err.contains("not in the state the plan expects"),
        "{err}"
    );
    // Rolled back with the progress file: everything on agent 0 again.
    std::fs::write(&progress, kept).unwrap();
    let (ok, out, err) = tool(&["apply", plan_path, "--dir", dirs, "--execute", "--rollback"]);
    assert!(ok && out.contains("verified: 0 of"), "{out}{err}");
    assert!(moved.iter().all(|&m| on_agent(m) == 0));
    assert!(
        received(&pids).iter().all(|r| r.0 == 0),
        "sequence errors after the rollback"
    );
    // A plan for a process that has exited: refused.
    drop(children.pop());
    std::fs::remove_file(&progress).unwrap();
    let (ok, _, err) = tool(&["apply", plan_path, "--dir", dirs, "--execute"]);
    assert!(!ok && err.contains("is gone"), "{err}");
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_collections_are_refused_with_the_reason() {
    let dir = temp_dir("bad");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let truncated = dir.join("truncated.jsonl");
    std::fs::write(&truncated, "{\"version\":1,\"started_unix_ms\":1,\"window").unwrap();
    let invalid = dir.join("invalid.jsonl");
    let (ok, _, err) = tool(&[
        "collect",
        "--dir",
        dir.to_str().unwrap(),
        "--window",
        "0.2",
        "--interval",
        "50",
        "--out",
        invalid.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("invalid: ") && err.contains("no live weft node"),
        "{err}"
    );
    for (file, why) in [
        (&empty, "empty collection"),
        (&truncated, "truncated or foreign"),
        (&invalid, "no valid window"),
        (&dir.join("missing.jsonl"), "No such file"),
    ] {
        for cmd in ["report", "plan"] {
            let (ok, out, err) = tool(&[cmd, file.to_str().unwrap()]);
            assert!(!ok, "{cmd} {file:?} succeeded: {out}");
            assert!(err.contains(why), "{cmd} {file:?}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, CLI hygiene: `--version` answers.
#[test]
fn version_is_answered() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-rebalance"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("weft-rebalance 0."),
        "{text}"
    );
}

/// A skewed node of the demo workload in `dir`, once it says it is ready.
fn skewed_node(dir: &Path, scale: &str, seconds: &str) -> KillOnDrop {
    let mut child = KillOnDrop(
        Command::new(skewed_pipeline())
            .arg("--dir")
            .arg(dir)
            .args(["--scale", scale, "--seconds", seconds])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().ends_with("ready")),
        "a node never started"
    );
    child
}

/// `weft-stat`, built beside this tool by `cargo test --workspace` (its
/// own integration tests need it).
fn weft_stat() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("weft-stat");
    assert!(
        path.exists(),
        "{} is missing: cargo test --workspace builds it (or cargo build -p weft-stat)",
        path.display()
    );
    path
}

/// A fleet's day, shortened to 24 s: two hosts (two weft directories, a
/// `weft-stat serve` each) of skewed nodes, scraped by a real Prometheus.
/// `report` and `plan --prometheus` model each host from range queries; a
/// plan for one host is one `apply` on that host accepts; `daily` writes
/// the report and the plans and notifies on Redis exactly once for its
/// range and end, across Redis being down (the files are written, the
/// notification is sent when run again). Prometheus down, something that
/// is not Prometheus, and --range without --prometheus are clear errors.
#[test]
fn a_fleets_day_from_prometheus_is_reported_planned_and_notified() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    for t in ["prometheus", "redis-server", "redis-cli"] {
        if Command::new(t).arg("--version").output().is_err() {
            assert!(!root, "{t} is not installed: run scripts/setup");
            eprintln!("skipped: {t} is not installed and scripts/setup needs root");
            return;
        }
    }
    let dir = temp_dir("fleet");
    let (host_a, host_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&host_a).unwrap();
    std::fs::create_dir_all(&host_b).unwrap();
    let _nodes = [
        skewed_node(&host_a, "4", "120"),
        skewed_node(&host_a, "4", "120"),
        skewed_node(&host_b, "4", "120"),
    ];
    // On host a, also a shared-memory channel that takes one burst, and
    // the saturation rate its serve judges headroom against (made up).
    let mut burst = weft::Node::new(weft::NodeConfig {
        dir: host_a.clone(),
        threading: weft::ThreadingMode::Dedicated,
        control_ring: false,
        name: "burst".into(),
        ..weft::NodeConfig::default()
    })
    .unwrap();
    let uri = "shm:fleet-burst?capacity=1MiB";
    let mut publ = burst.publication(uri, 1).unwrap();
    let mut sub = burst.subscription(uri, 1).unwrap();
    while !publ.is_connected() {
        sub.poll(16, |_| {}).unwrap();
    }
    let store = dir.join("stress.jsonl");
    std::fs::write(
        &store,
        "{\"time_s\":1,\"run\":\"r\",\"path\":\"shm-broadcast-1\",\"saturation_per_s\":1000000,\"msg_bytes\":64,\"commit\":\"c\"}\n",
    )
    .unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let _serve: Vec<KillOnDrop> = [(&host_a, port_a), (&host_b, port_b)]
        .into_iter()
        .map(|(d, port)| {
            KillOnDrop(
                Command::new(weft_stat())
                    .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
                    .arg(d)
                    .arg("--saturation")
                    .arg(&store)
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let (_prometheus, prom_port) = prometheus_scraping(&dir, &[port_a, port_b]);
    // 24 s of both hosts in Prometheus.
    let started = Instant::now();
    while !http_get(
        prom_port,
        "/api/v1/query?query=count(count%20by%20(instance)%20(weft_agent_busy_seconds_total))",
    )
    .is_some_and(|a| a.contains("\"2\"]"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus never scraped both hosts"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The burst: 3,000 messages at once, read a little later.
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3000u32 {
        publ.offer(&[i as u8; 64]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    let mut read = 0;
    while read < 3000 {
        read += sub.poll(1024, |_| {}).unwrap();
    }
    std::thread::sleep(Duration::from_secs(24));
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let url = format!("http://127.0.0.1:{prom_port}");
    let from = |cmd: &str| -> Vec<String> {
        [
            cmd,
            "--prometheus",
            &url,
            "--range",
            "24s",
            "--step",
            "2s",
            "--end",
            &end,
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |args: &[String]| tool(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let (ok, report, err) = run(&from("report"));
    assert!(ok, "{err}");
    let (a, b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));
    for host in [&a, &b] {
        assert!(report.contains(&format!("== host {host}: ")), "{report}");
    }
    assert!(
        report.contains(&format!("== host {a}: 3 node(s)")),
        "{report}"
    );
    assert_eq!(report.matches("verdict: ").count(), 2, "{report}");
    assert!(report.contains("core (the OS: 1 - idle)"), "{report}");
    assert!(report.contains("rebalance recommended"), "{report}");
    // The burst: its peak 1 ms rate, the ring's high-water mark and the
    // headroom it left.
    let line = report
        .lines()
        .find(|l| l.starts_with("burst (pid ") && l.contains("publication shm:fleet-burst"))
        .unwrap_or_else(|| panic!("no burst line in:\n{report}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let n = cols.len();
    let peak: f64 = cols[n - 4].parse().unwrap();
    assert!(peak > 100_000.0, "{line}");
    assert!(
        cols[n - 2].ends_with('%') && cols[n - 1].ends_with('%'),
        "{line}"
    );

    // A plan for host a from Prometheus is one apply on host a takes.
    let plan_file = dir.join("a.plan.json");
    let mut args = from("plan");
    args.extend([
        "--host".into(),
        a.clone(),
        "--out".into(),
        plan_file.display().to_string(),
    ]);
    let (ok, table, err) = run(&args);
    assert!(ok, "{err}");
    assert!(table.contains("verdict: rebalance recommended"), "{table}");
    let (ok, dry, err) = tool(&[
        "apply",
        plan_file.to_str().unwrap(),
        "--dir",
        host_a.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        dry.contains("would move task") && dry.contains("dry run"),
        "{dry}"
    );
    // Both hosts, one --out: which?
    let mut args = from("plan");
    args.extend(["--out".into(), plan_file.display().to_string()]);
    let (ok, _, err) = run(&args);
    assert!(!ok && err.contains("choose one with --host"), "{err}");

    // daily: the files, and one notification however often it runs.
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let redis_port = free_port();
    let mut redis = Some(redis_server(&redis_dir, redis_port));
    let out_dir = dir.join("daily");
    let daily = |end: &str, wait: &str| {
        let mut args = from("daily");
        let i = args.iter().position(|a| a == "--end").unwrap();
        args[i + 1] = end.to_string();
        args.extend(
            [
                "--out-dir",
                out_dir.to_str().unwrap(),
                "--redis",
                &format!("redis://127.0.0.1:{redis_port}"),
                "--redis-wait",
                wait,
            ]
            .map(String::from),
        );
        run(&args)
    };
    let (ok, summary, err) = daily(&end, "10s");
    assert!(ok, "{err}");
    assert!(
        summary.contains("2 host(s)") && summary.contains("notified on"),
        "{summary}"
    );
    let reports: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let txt = reports
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "txt"))
        .unwrap();
    let text = std::fs::read_to_string(txt).unwrap();
    eprintln!("{text}");
    for want in [
        "weft daily assessment: 2 host(s)",
        "the plan it would apply",
        "plan file: ",
        &a,
        &b,
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    let plans = reports
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".plan.json"))
        .count();
    assert_eq!(plans, 2, "a plan file per host with moves: {reports:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(txt.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(json["hosts"].as_array().map(Vec::len), Some(2));
    let daily_entries = |status: &str| {
        alerts(redis_port)
            .into_iter()
            .filter(|(_, [name, s, _])| name == "WeftDailyAssessment" && s == status)
            .count()
    };
    assert_eq!(daily_entries("report"), 1);
    let (ok, again, err) = daily(&end, "10s");
    assert!(ok && again.contains("already notified"), "{again}{err}");
    assert_eq!(daily_entries("report"), 1, "the same range and end: once");

    // Redis down: the files are written, the notification is not, and
    // says so; run again once it is back: sent, once.
    drop(redis.take());
    let later = (end.parse::<u64>().unwrap() - 1).to_string();
    let (ok, _, err) = daily(&later, "2s");
    assert!(!ok, "daily succeeded with Redis down");
    assert!(
        err.contains("the report is written") && err.contains("run again with --end "),
        "{err}"
    );
    redis = Some(redis_server(&redis_dir, redis_port));
    let (ok, _, err) = daily(&later, "10s");
    assert!(ok, "{err}");
    assert_eq!(daily_entries("report"), 2, "{:?}", alerts(redis_port));
    drop(redis);
    drop((publ, sub, burst));

    // Prometheus down, something that is not Prometheus, no --prometheus.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, _, err) = tool(&["report", "--prometheus", &dead]);
    assert!(!ok && err.contains("is unreachable"), "{err}");
    let (ok, _, err) = tool(&[
        "report",
        "--prometheus",
        &format!("http://127.0.0.1:{port_a}"),
    ]);
    assert!(!ok && err.contains("not Prometheus's JSON"), "{err}");
    let (ok, _, err) = tool(&["report", "--prometheus", "https://127.0.0.1:9090"]);
    assert!(!ok && err.contains("https"), "{err}");
    let (ok, _, err) = tool(&["report", "--range", "24h"]);
    assert!(!ok && err.contains("--prometheus"), "{err}");
    let (ok, _, err) = tool(&["daily", "--out-dir", out_dir.to_str().unwrap()]);
    assert!(!ok && err.contains("--prometheus"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
