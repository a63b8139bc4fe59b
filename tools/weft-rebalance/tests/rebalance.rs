//! weft-rebalance end to end: nodes whose tasks all run on one agent are
//! collected, reported, planned and spread by an interrupted, resumed and
//! rolled-back apply while messages flow; bad input is refused clearly.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_rebalance::collect::read_collection;

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

/// Kills the child when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn skewed_nodes_are_collected_planned_and_spread_by_an_interrupted_apply() {
    let dir = temp_dir("skewed");
    // Two nodes, each with its four pipeline tasks on agent 0 (core 0).
    let mut children: Vec<Child> = (0..2)
        .map(|_| {
            let mut child = Child(
                Command::new(skewed_pipeline())
                    .arg("--dir")
                    .arg(&dir)
                    .args(["--scale", "2", "--seconds", "120"])
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
        })
        .collect();
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
