//! `weft-bench stress` and `compare` as a user runs them: a short preset
//! ramps three paths (an SPSC ring, a broadcast channel to two subscriber
//! processes, multicast) past saturation and must lose nothing silently;
//! a run compared with a copy of itself shows no regression; a run whose
//! subscribers do 20 us of extra work per message (the test hook
//! `WEFT_BENCH_STRESS_SLOW_NS`) compares as one, with exit code 1.
//!
//! Two real runs of one build are not compared here: on this VM their
//! saturation rates differ by up to 75 % (the floor changes level), and a
//! test asserting they agree asserts a timing.

use std::path::Path;
use std::process::Command;

fn stress(results: &Path, slow_ns: u64) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-bench"))
        .args(["stress", "--preset", "test", "--results"])
        .arg(results)
        .env("WEFT_BENCH_STRESS_SLOW_NS", slow_ns.to_string())
        .output()
        .expect("run weft-bench stress");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The test preset's steps are 50 ms: its saturation rates move by up to
/// about 60 % between runs of one build here (against 45 % for `--quick`),
/// so the comparison gets a band of 70 %. The slowed build is 99 % slower.
fn compare(results: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-bench"))
        .args(["compare", "--band", "0.7", "--results"])
        .arg(results)
        .output()
        .expect("run weft-bench compare");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn stress_finds_knees_loses_nothing_silently_and_compare_flags_a_slower_build() {
    let results = std::env::temp_dir().join(format!("weft-stress-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&results);

    let (ok, text) = stress(&results, 0);
    assert!(ok, "stress failed:\n{text}");
    for path in ["shm-spsc", "shm-broadcast-2", "udp-1"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(path) && l.contains("delivered")),
            "{path} has a summary line:\n{text}"
        );
    }
    assert!(!text.contains("SILENT LOSS"), "{text}");
    // Every stored path: past saturation (back-pressure), nothing silent.
    let stored = std::fs::read_to_string(results.join("stress.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = stored
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{stored}");
    for r in &rows {
        assert_eq!(r["silent_missing"], 0, "{r}");
        assert!(r["saturation_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["overload_backpressure"].as_u64().is_some(),
            "an overload step ran: {r}"
        );
    }

    let (code, text) = compare(&results);
    assert_eq!(code, Some(2), "one run: nothing to compare\n{text}");

    // The same rows again as a later run: the comparison's own logic, with
    // no timing in it.
    let copy: String = stored
        .lines()
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["run"] = format!("{}-copy", r["run"].as_str().unwrap()).into();
            r["time_s"] = (r["time_s"].as_f64().unwrap() + 1.0).into();
            format!("{r}\n")
        })
        .collect();
    std::fs::write(
        results.join("stress.jsonl"),
        format!("{}\n{copy}", stored.trim_end()),
    )
    .unwrap();
    let (code, text) = compare(&results);
    assert_eq!(code, Some(0), "a run against a copy of itself:\n{text}");
    assert!(text.contains("no regression"), "{text}");

    let (ok, text) = stress(&results, 20_000);
    assert!(ok, "slowed stress run failed:\n{text}");
    let (code, text) = compare(&results);
    assert_eq!(code, Some(1), "a build 20 us a message slower:\n{text}");
    assert!(text.contains("REGRESSION: saturation"), "{text}");
    let _ = std::fs::remove_dir_all(&results);
}
