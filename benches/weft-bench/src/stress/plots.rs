//! The stress run's plots (SVG and PNG, through `crate::plot`): latency
//! against offered rate per path with the knee and the saturation rate
//! marked; saturation and p99 against subscribers and against publishers;
//! burst timelines.

use std::path::Path;

use super::PathSummary;
use crate::plot::{write_charts, Axis, Chart};

/// A vertical marker at `x` spanning the chart's latencies.
fn marker(x: f64, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    vec![(x, lo), (x, hi)]
}

/// Writes every chart the summaries allow into `dir`.
pub fn write(dir: &Path, summaries: &[PathSummary]) -> Result<(), String> {
    let mut charts = Vec::new();
    for s in summaries {
        let r = &s.result;
        let ramp: Vec<_> = r.steps.iter().filter(|s| s.phase == "ramp").collect();
        if ramp.len() < 2 {
            continue;
        }
        let pts = |f: fn(&super::analysis::Step) -> u64| -> Vec<(f64, f64)> {
            ramp.iter()
                .map(|s| (s.offered_per_s, f(s).max(1) as f64))
                .collect()
        };
        let p50 = pts(|s| s.p50_ns);
        let p99 = pts(|s| s.p99_ns);
        let p99w = pts(|s| s.window_p99_ns);
        let p999 = pts(|s| s.p999_ns);
        let lo = p50.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        let hi = p999.iter().map(|p| p.1).fold(0.0, f64::max);
        let mut series = vec![
            ("p50".to_string(), p50),
            ("p99".to_string(), p99),
            ("p99 of a typical 10 ms (the knee's)".to_string(), p99w),
            ("p99.9".to_string(), p999),
        ];
        if r.knee_per_s > 0.0 {
            series.push((
                format!("knee ({:.0} msgs/s)", r.knee_per_s),
                marker(r.knee_per_s, lo, hi),
            ));
        }
        series.push((
            format!("saturation ({:.0} msgs/s delivered)", r.saturation_per_s),
            marker(r.saturation_per_s, lo, hi),
        ));
        charts.push(Chart {
            file: format!("stress-latency-{}", r.path),
            title: format!(
                "{}: one-way latency against offered rate (open loop, from the scheduled send)",
                r.path
            ),
            x: (Axis::Log10, "offered msgs/s"),
            y: (Axis::Log10, "latency, ns"),
            series,
        });
        if !r.bursts.is_empty() {
            let mut t = Vec::new();
            let mut starts = Vec::new();
            let mut at = 0.0;
            for b in &r.bursts {
                starts.push((b.label.clone(), at));
                for step in [&b.burst, &b.after] {
                    for (i, &worst) in step.timeline.iter().enumerate() {
                        if worst > 0 {
                            t.push((at + i as f64, worst as f64));
                        }
                    }
                    at += step.timeline.len().max(1) as f64;
                }
            }
            if t.len() >= 2 {
                let lo = t.iter().map(|p| p.1).fold(f64::MAX, f64::min);
                let hi = t.iter().map(|p| p.1).fold(0.0, f64::max);
                let mut series = vec![("worst latency in the ms".to_string(), t)];
                for (label, x) in starts {
                    series.push((format!("burst: {label}"), marker(x, lo, hi)));
                }
                charts.push(Chart {
                    file: format!("stress-bursts-{}", r.path),
                    title: format!(
                        "{}: bursts over a {} msgs/s base, worst latency per ms",
                        r.path,
                        r.steps
                            .iter()
                            .find(|s| s.phase == "ramp")
                            .map_or(0.0, |s| s.offered_per_s)
                    ),
                    x: (Axis::Linear, "ms (each burst, then the base rate after it)"),
                    y: (Axis::Log10, "ns"),
                    series,
                });
            }
        }
    }
    // Scaling: a family of paths that differ in a count.
    for (prefix, what, file) in [
        (
            "shm-broadcast-",
            "subscriber processes",
            "stress-scaling-subscribers",
        ),
        ("shm-many-", "publishers", "stress-scaling-publishers"),
        ("udp-", "subscriber processes (UDP)", "stress-scaling-udp"),
    ] {
        let mut fam: Vec<(f64, &PathSummary)> = summaries
            .iter()
            .filter_map(|s| {
                let n: f64 = s.result.path.strip_prefix(prefix)?.parse().ok()?;
                Some((n, s))
            })
            .collect();
        if fam.len() < 2 {
            continue;
        }
        fam.sort_by(|a, b| a.0.total_cmp(&b.0));
        charts.push(Chart {
            file: format!("{file}-throughput"),
            title: format!("{prefix}N: saturation and knee against {what}"),
            x: (Axis::Linear, what),
            y: (Axis::Log10, "msgs/s"),
            series: vec![
                (
                    "saturation (delivered)".into(),
                    fam.iter()
                        .map(|(n, s)| (*n, s.result.saturation_per_s.max(1.0)))
                        .collect(),
                ),
                (
                    "knee".into(),
                    fam.iter()
                        .map(|(n, s)| (*n, s.result.knee_per_s.max(1.0)))
                        .collect(),
                ),
            ],
        });
        let p99_at_knee = |s: &PathSummary| {
            s.result
                .steps
                .iter()
                .filter(|st| st.phase == "ramp" && st.offered_per_s <= s.result.knee_per_s)
                .map(|st| st.p99_ns)
                .max()
                .unwrap_or(0)
                .max(1) as f64
        };
        charts.push(Chart {
            file: format!("{file}-p99"),
            title: format!("{prefix}N: p99 against {what}"),
            x: (Axis::Linear, what),
            y: (Axis::Log10, "p99, ns"),
            series: vec![
                (
                    "p99 at low load".into(),
                    fam.iter()
                        .map(|(n, s)| (*n, s.result.baseline_p99_ns.max(1) as f64))
                        .collect(),
                ),
                (
                    "p99 at the knee".into(),
                    fam.iter().map(|(n, s)| (*n, p99_at_knee(s))).collect(),
                ),
            ],
        });
    }
    write_charts(dir, &charts).map(|_| ())
}
