//! A results directory: `results.jsonl` (one JSON object per result, with the
//! machine, commit and command), `table.txt` (the printed table), one
//! hdrhistogram interval log per latency result under `hlog/`, and plots
//! (SVG and PNG) under `plots/`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::harness::Meta;
use crate::report::Outcome;

/// Writes everything into `dir` (created if missing; files there of the same
/// names are replaced). Returns the number of files written.
pub fn write_results(
    dir: &Path,
    outcomes: &[Outcome],
    meta: &Meta,
    table: &str,
) -> Result<usize, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let hlog_dir = dir.join("hlog");
    let plot_dir = dir.join("plots");
    for d in [dir, &hlog_dir, &plot_dir] {
        std::fs::create_dir_all(d).map_err(|e| io(&d.display().to_string(), e))?;
    }
    let mut files = 0;
    let jsonl: String = outcomes.iter().map(|o| o.json(meta) + "\n").collect();
    std::fs::write(dir.join("results.jsonl"), jsonl).map_err(|e| io("results.jsonl", e))?;
    std::fs::write(
        dir.join("table.txt"),
        format!("$ {}\n\n{table}", meta.command),
    )
    .map_err(|e| io("table.txt", e))?;
    files += 2;
    for o in outcomes.iter().filter(|o| !o.intervals.is_empty()) {
        let name = format!("{}-{}B-run{}.hlog", o.scenario, o.msg_bytes, o.run);
        let path = hlog_dir.join(&name);
        write_interval_log(&path, o, meta).map_err(|e| format!("{name}: {e}"))?;
        files += 1;
    }
    files += crate::plot::write_plots(&plot_dir, outcomes)?.len();
    Ok(files)
}

/// An interval log as HdrHistogram's `HistogramLogProcessor` reads it:
/// values in ns, intervals from the run's first sample.
fn write_interval_log(path: &Path, o: &Outcome, meta: &Meta) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let start = SystemTime::now()
        .checked_sub(
            o.intervals
                .last()
                .map_or(Duration::ZERO, |i| i.start + i.duration),
        )
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "weft-bench {} ({} B), run {}",
            o.scenario, o.msg_bytes, o.run
        ))
        .add_comment(&format!("commit {}; {}", meta.commit, meta.command))
        .add_comment("values in nanoseconds")
        .with_start_time(start)
        .begin_log_with(&mut buf, &mut ser)
        .map_err(|e| e.to_string())?;
    for i in &o.intervals {
        log.write_histogram(&i.histogram, i.start, i.duration, None)
            .map_err(|e| format!("{e:?}"))?;
    }
    drop(log);
    std::fs::write(path, buf).map_err(|e| e.to_string())
}
