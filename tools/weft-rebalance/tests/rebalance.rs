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

/// Not a test of its own: the skewed node `a_skewed_node_...` starts. Two
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
fn a_skewed_node_is_collected_reported_and_planned_onto_its_idle_agent() {
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
    drop(child);
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
