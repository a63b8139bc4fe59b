//! The results store: one JSON line per path per stress run in
//! `DIR/stress.jsonl` (commit, machine, floors, the figures), and the
//! comparison of the newest run with the previous one on the same machine.
//!
//! **The noise band.** A rate is compared as a multiple of the floor
//! measured around its path (`saturation x floor round trip`: messages per
//! floor round trip), since this VM runs at levels up to four times apart.
//! What is left is noise: a run that repeats its paths (`--nightly`: three
//! times) measures its own band, the spread of those repeats over their
//! median; otherwise [`DEFAULT_BAND`], measured here from repeated quick
//! runs of one build (docs/benchmarks.md, "Stress"). Where the floor moved
//! while a path ran (its probes disagree), the band widens by a whole VM
//! level. A saturation rate that falls by more than the band is a
//! regression; a knee that falls by more than [`KNEE_BAND`] is one; and
//! any silent loss in the newest run is one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PathSummary, Preset};
use crate::harness::Meta;

/// The saturation band used when neither run measured its own: in eleven
/// comparisons of consecutive quick runs of one build here, a path's
/// floor-relative saturation moved by at most 57 % where the floor held
/// (most paths by under 15 %; the SPSC ring's rate is bimodal), and by up
/// to 68 % where the floor moved, which the widened band covers.
pub const DEFAULT_BAND: f64 = 0.6;

/// The knee's band: the same comparisons moved a knee by up to 97 % (five
/// ramp steps), since a step's p99 here is set by the VM's hiccups more
/// than by weft. So only a knee that collapses counts: one of 0, a path
/// saturated at its first, lowest step.
pub const KNEE_BAND: f64 = 0.99;

/// One stored line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub schema: u32,
    pub run: String,
    pub time_s: f64,
    pub commit: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub preset: String,
    pub factor: f64,
    pub path: String,
    pub subscribers: usize,
    pub publishers: usize,
    pub msg_bytes: usize,
    pub knee_per_s: f64,
    pub saturation_per_s: f64,
    pub baseline_p99_ns: u64,
    pub floor_before_ns: u64,
    pub floor_after_ns: u64,
    pub noise_band: f64,
    pub saturations: Vec<f64>,
    pub knees: Vec<f64>,
    pub recovery_ms: Option<f64>,
    pub overload_p99_ns: Option<u64>,
    pub overload_backpressure: Option<u64>,
    pub silent_missing: u64,
    pub reported_missing: u64,
}

impl Row {
    fn floor_ns(&self) -> f64 {
        (self.floor_before_ns + self.floor_after_ns) as f64 / 2.0
    }

    /// Saturation in messages per floor round trip.
    fn rel_saturation(&self) -> f64 {
        self.saturation_per_s * self.floor_ns() / 1e9
    }

    fn rel_knee(&self) -> f64 {
        self.knee_per_s * self.floor_ns() / 1e9
    }

    /// The floor probed before and after the path disagree by more than
    /// [`crate::harness::PROBE_DISAGREEMENT`]: the VM changed level while
    /// the path ran, so its floor-relative figures are off by up to that.
    fn floor_moved(&self) -> bool {
        let (a, b) = (self.floor_before_ns.max(1), self.floor_after_ns.max(1));
        a.max(b) as f64 / a.min(b) as f64 > crate::harness::PROBE_DISAGREEMENT
    }
}

/// The most a VM level change moves a rate (its levels are up to four
/// times apart): the band widens to allow it where a floor moved.
const LEVEL_RATIO: f64 = 4.0;

/// Appends the run to `dir/stress.jsonl`; returns the file.
pub fn append(
    dir: &Path,
    meta: &Meta,
    preset: &Preset,
    summaries: &[PathSummary],
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join("stress.jsonl");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let run = format!("{:.0}-{}", now * 1e3, std::process::id());
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    for s in summaries {
        let r = &s.result;
        let row = Row {
            schema: 1,
            run: run.clone(),
            time_s: now,
            commit: meta.commit.clone(),
            cpu: meta.cpu.clone(),
            cores: meta.cores,
            kernel: meta.kernel.clone(),
            preset: preset.name.into(),
            factor: preset.factor,
            path: r.path.clone(),
            subscribers: r.subscribers,
            publishers: r.publishers,
            msg_bytes: r.msg_bytes,
            knee_per_s: r.knee_per_s,
            saturation_per_s: r.saturation_per_s,
            baseline_p99_ns: r.baseline_p99_ns,
            floor_before_ns: r.floor_before_ns,
            floor_after_ns: r.floor_after_ns,
            noise_band: s.noise_band,
            saturations: s.saturations.clone(),
            knees: s.knees.clone(),
            recovery_ms: r.recovery_ms,
            overload_p99_ns: r.overload.as_ref().map(|o| o.p99_ns),
            overload_backpressure: r.overload.as_ref().map(|o| o.backpressure),
            silent_missing: r.silent_missing,
            reported_missing: r.reported_missing,
        };
        let line = serde_json::to_string(&row).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(file)
}

/// What `compare` found.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub regressions: usize,
}

/// Reads every row of `dir/stress.jsonl` (lines that do not parse are
/// counted and skipped).
pub fn load(dir: &Path) -> Result<(Vec<Row>, usize), String> {
    let file = dir.join("stress.jsonl");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e} (run `weft-bench stress` first, or give --results DIR)",
            file.display()
        )
    })?;
    let mut rows = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Row>(line) {
            Ok(r) => rows.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((rows, bad))
}

/// Compares the newest run in `dir` with the one before it on the same
/// machine and preset.
pub fn compare(dir: &Path, band: Option<f64>) -> Result<Report, String> {
    let (rows, bad) = load(dir)?;
    compare_rows(&rows, bad, band)
}

/// The comparison itself, over rows already read.
pub fn compare_rows(rows: &[Row], bad: usize, band: Option<f64>) -> Result<Report, String> {
    let newest = rows
        .iter()
        .max_by(|a, b| a.time_s.total_cmp(&b.time_s))
        .ok_or("the results store holds no run")?;
    let same_machine =
        |r: &Row| r.cpu == newest.cpu && r.cores == newest.cores && r.preset == newest.preset;
    let previous = rows
        .iter()
        .filter(|r| r.run != newest.run && r.time_s <= newest.time_s && same_machine(r))
        .max_by(|a, b| a.time_s.total_cmp(&b.time_s))
        .ok_or_else(|| {
            format!(
                "no earlier '{}' run on this machine ({}, {} cores) to compare run {} with",
                newest.preset, newest.cpu, newest.cores, newest.run
            )
        })?;
    let new_rows: Vec<&Row> = rows.iter().filter(|r| r.run == newest.run).collect();
    let old_rows: Vec<&Row> = rows.iter().filter(|r| r.run == previous.run).collect();
    let mut text = format!(
        "newest run {} (commit {}) against {} (commit {}), preset {}, {} ({} cores)\n",
        newest.run,
        short(&newest.commit),
        previous.run,
        short(&previous.commit),
        newest.preset,
        newest.cpu,
        newest.cores
    );
    if bad > 0 {
        text += &format!("({bad} lines of the store did not parse and were skipped)\n");
    }
    text += "rates as messages per floor round trip (rate x the floor probed around the path)\n";
    text += &format!(
        "{:<16} {:>12} {:>12} {:>8} {:>12} {:>12} {:>8} {:>6}  verdict\n",
        "path", "sat before", "sat after", "change", "knee before", "knee after", "change", "band"
    );
    let mut regressions = 0;
    for n in &new_rows {
        let Some(o) = old_rows.iter().find(|o| o.path == n.path) else {
            text += &format!("{:<16} (not in the earlier run)\n", n.path);
            continue;
        };
        let mut band = band.unwrap_or_else(|| DEFAULT_BAND.max(n.noise_band).max(o.noise_band));
        let moved = n.floor_moved() || o.floor_moved();
        if moved {
            band = 1.0 - (1.0 - band) / LEVEL_RATIO;
        }
        let sat_change = n.rel_saturation() / o.rel_saturation().max(1e-12) - 1.0;
        let knee_change = if o.rel_knee() > 0.0 {
            n.rel_knee() / o.rel_knee() - 1.0
        } else {
            0.0
        };
        let mut verdict = Vec::new();
        if sat_change < -band {
            verdict.push("REGRESSION: saturation".to_string());
        }
        if knee_change < -KNEE_BAND.max(band) {
            verdict.push("REGRESSION: knee".to_string());
        }
        if n.silent_missing > 0 {
            verdict.push(format!("SILENT LOSS of {} messages", n.silent_missing));
        }
        if verdict.is_empty() {
            verdict.push(if sat_change > band {
                "better".into()
            } else {
                "same (within the band)".into()
            });
        } else {
            regressions += 1;
        }
        if moved {
            verdict.push("(the floor moved during the path: band widened)".into());
        }
        text += &format!(
            "{:<16} {:>12.4} {:>12.4} {:>7.0}% {:>12.4} {:>12.4} {:>7.0}% {:>5.0}%  {}\n",
            n.path,
            o.rel_saturation(),
            n.rel_saturation(),
            sat_change * 100.0,
            o.rel_knee(),
            n.rel_knee(),
            knee_change * 100.0,
            band * 100.0,
            verdict.join("; ")
        );
    }
    text += &if regressions == 0 {
        "no regression\n".to_string()
    } else {
        format!("{regressions} path(s) regressed\n")
    };
    Ok(Report { text, regressions })
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &str, t: f64, path: &str, sat: f64, knee: f64, floor: u64) -> Row {
        Row {
            schema: 1,
            run: run.into(),
            time_s: t,
            commit: "c".into(),
            cpu: "cpu".into(),
            cores: 2,
            kernel: "k".into(),
            preset: "quick".into(),
            factor: 2.0,
            path: path.into(),
            subscribers: 1,
            publishers: 1,
            msg_bytes: 64,
            knee_per_s: knee,
            saturation_per_s: sat,
            baseline_p99_ns: 1000,
            floor_before_ns: floor,
            floor_after_ns: floor,
            noise_band: 0.0,
            saturations: vec![sat],
            knees: vec![knee],
            recovery_ms: Some(1.0),
            overload_p99_ns: None,
            overload_backpressure: None,
            silent_missing: 0,
            reported_missing: 0,
        }
    }

    #[test]
    fn a_slower_level_of_the_vm_is_not_a_regression_but_a_slower_path_is() {
        // The second run ran on a level four times slower: same relative rate.
        let rows = vec![
            row("a", 1.0, "shm-spsc", 4e6, 1e6, 120),
            row("b", 2.0, "shm-spsc", 1e6, 2.5e5, 480),
        ];
        let r = compare_rows(&rows, 0, None).unwrap();
        assert_eq!(r.regressions, 0, "{}", r.text);
        assert!(r.text.contains("no regression"));
        let mut slow = rows.clone();
        slow.push(row("c", 3.0, "shm-spsc", 1e6, 1e5, 120));
        let r = compare_rows(&slow, 0, None).unwrap();
        assert_eq!(r.regressions, 1, "{}", r.text);
        assert!(r.text.contains("REGRESSION: saturation"), "{}", r.text);
        // A knee that collapses is one; one that moves by a few steps is not.
        let mut knees = rows.clone();
        knees.push(row("c", 3.0, "shm-spsc", 1e6, 2.5e4, 480));
        assert_eq!(compare_rows(&knees, 0, None).unwrap().regressions, 0);
        knees.push(row("d", 4.0, "shm-spsc", 1e6, 0.0, 480));
        let r = compare_rows(&knees, 0, None).unwrap();
        assert!(r.text.contains("REGRESSION: knee"), "{}", r.text);
    }

    #[test]
    fn a_floor_that_moved_during_a_path_widens_the_band() {
        let mut b = row("b", 2.0, "shm-spsc", 1.5e6, 1e6, 120);
        b.floor_after_ns = 480;
        let rows = vec![row("a", 1.0, "shm-spsc", 4e6, 1e6, 120), b.clone()];
        let r = compare_rows(&rows, 0, None).unwrap();
        assert_eq!(r.regressions, 0, "{}", r.text);
        assert!(r.text.contains("band widened"));
        // Still a regression beyond what a level change explains.
        b.saturation_per_s = 1e5;
        let r = compare_rows(&[rows[0].clone(), b], 0, None).unwrap();
        assert_eq!(r.regressions, 1, "{}", r.text);
    }

    #[test]
    fn silent_loss_is_a_regression_and_a_lone_run_has_nothing_to_compare() {
        let mut rows = vec![row("a", 1.0, "udp-1", 1e6, 1e5, 7000)];
        assert!(compare_rows(&rows, 0, None).is_err());
        let mut b = row("b", 2.0, "udp-1", 1e6, 1e5, 7000);
        b.silent_missing = 3;
        rows.push(b);
        let r = compare_rows(&rows, 0, None).unwrap();
        assert_eq!(r.regressions, 1);
        assert!(r.text.contains("SILENT LOSS of 3"));
    }

    #[test]
    fn only_runs_of_the_same_machine_and_preset_are_compared() {
        let mut other = row("x", 1.5, "shm-spsc", 9e9, 9e9, 120);
        other.cpu = "another".into();
        let rows = vec![
            row("a", 1.0, "shm-spsc", 4e6, 1e6, 120),
            other,
            row("b", 2.0, "shm-spsc", 4e6, 1e6, 120),
        ];
        let r = compare_rows(&rows, 0, None).unwrap();
        assert!(r.text.contains("against a "), "{}", r.text);
    }
}
