//! weft-rebalance end to end: a node whose tasks are all on one agent is
//! collected, reported and planned; bad collections are refused clearly.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft::{Node, NodeConfig, Task, ThreadingMode};
use weft_rebalance::collect::read_collection;

/// A task of known cost: every millisecond it spins for `spin` (work 1),
/// otherwise it has nothing to do and asks to be woken at its next turn.
struct Paced {
    name: String,
    spin: Duration,
    next: Instant,
}

impl Task for Paced {
    fn name(&self) -> &str {
        &self.name
    }

    fn timer_in(&self) -> Option<Duration> {
        Some(self.next.saturating_duration_since(Instant::now()))
    }

    fn do_work(&mut self, _now_ns: u64) -> usize {
        let now = Instant::now();
        if now < self.next {
            return 0;
        }
        while Instant::now() < now + self.spin {
            std::hint::spin_loop();
        }
        self.next = (self.next + Duration::from_millis(1)).max(now);
        1
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-rebalance-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Not a test of its own: the skewed node `a_skewed_node_is_collected_planned_and_spread_by_an_interrupted_apply` starts. Two
/// agents pinned to cores 0 and 1, four paced tasks (0.2, 0.15, 0.1 and
/// 0.05 of a core) all on agent 0.
#[test]
fn child_skewed_node() {
    let Ok(dir) = std::env::var("WEFT_REBALANCE_CHILD_DIR") else {
        return;
    };
    let node = Node::new(NodeConfig {
        dir: dir.into(),
        agents: 2,
        cores: vec![0, 1],
        threading: ThreadingMode::Dedicated,
        name: "skewed".into(),
        ..NodeConfig::default()
    })
    .unwrap();
    for (i, us) in [200u64, 150, 100, 50].into_iter().enumerate() {
        node.add_task(
            0,
            Box::new(Paced {
                name: format!("paced-{us}us"),
                spin: Duration::from_micros(us),
                next: Instant::now() + Duration::from_millis(i as u64),
            }),
        )
        .unwrap();
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(120));
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

/// Kills the child when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_skewed_node_is_collected_planned_and_spread_by_an_interrupted_apply() {
    let dir = temp_dir("skewed");
    let mut child = Child(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_skewed_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WEFT_REBALANCE_CHILD_DIR", &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().ends_with("ready")),
        "the node never started"
    );
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
    let [node] = &w.nodes[..] else {
        panic!("{:?}", w.nodes)
    };
    assert_eq!((node.pid, node.label.as_str()), (pid, "skewed"));
    assert_eq!(
        node.control_ring,
        node.counters_file.replace("counters", "control")
    );
    let cores: Vec<_> = node.agents.iter().map(|a| (a.index, a.core)).collect();
    assert_eq!(cores, vec![(0, Some(0)), (1, Some(1))]);
    for a in &node.agents {
        assert!(
            Path::new(&format!("/proc/{pid}/task/{}", a.thread)).exists(),
            "agent {} thread {} is not the node's",
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

    // Collecting continuously, the tool exports the balance ratio in a
    // counters file of its own (what `weft-stat serve` scrapes): all the
    // load on one of two cores is a ratio of 2.
    let continuous = dir.join("continuous.jsonl");
    let collector = Child(
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
        let found = weft_counters::scan(&dir).into_iter().find_map(|(_, r)| {
            let r = r.ok()?;
            (r.pid() == collector.0.id()).then_some(())?;
            r.counters()
                .into_iter()
                .find(|c| c.type_id == weft_counters::types::REBALANCE_BALANCE_RATIO && c.value > 0)
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
    for m in moves {
        assert_eq!(
            (m["from_agent"].as_u64(), m["to_agent"].as_u64()),
            (Some(0), Some(1)),
            "{table}"
        );
        assert_eq!(m["pid"].as_u64(), Some(pid as u64));
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
    let on_agent = |id: u64| -> u32 {
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
        w[0].nodes[0]
            .tasks
            .iter()
            .find(|t| t.id == id)
            .unwrap()
            .agent
    };
    let ids: Vec<u64> = moves
        .iter()
        .map(|m| m["task_id"].as_u64().unwrap())
        .collect();
    let (ok, out, err) = tool(&["apply", plan_path, "--dir", dirs]);
    assert!(ok && out.contains("dry run"), "{out}{err}");
    assert!(ids.iter().all(|&id| on_agent(id) == 0));
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
    assert_eq!(on_agent(ids[0]), 1);
    let (ok, out, err) = tool(&["apply", plan_path, "--dir", dirs, "--execute"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("verified: {} of {}", ids.len(), ids.len())),
        "{out}"
    );
    assert!(ids.iter().all(|&id| on_agent(id) == 1));
    // The moved tasks now run on agent 1: its busy time grows, and its
    // thread (the one /proc lists for it) runs them.
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
    let agent1 = &after[0].nodes[0].agents[1];
    assert!(agent1.busy.iter().sum::<f64>() > 0.0, "{agent1:?}");
    assert!(Path::new(&format!("/proc/{pid}/task/{}", agent1.thread)).exists());
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
    assert!(ids.iter().all(|&id| on_agent(id) == 0));
    // A plan for a process that has exited: refused.
    drop(child);
    std::fs::remove_file(&progress).unwrap();
    let (ok, _, err) = tool(&["apply", plan_path, "--dir", dirs, "--execute"]);
    assert!(!ok && err.contains("is gone"), "{err}");
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
