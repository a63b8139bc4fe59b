//! Tables: one row per scenario with medians and ranges over runs, the ratios
//! the project's targets are stated in (each computed within a run, then the
//! median over runs), and the short table of `weft-bench quick`.

use crate::report::Outcome;

/// Shared-memory peers, by scenario prefix.
pub const SHM_PEERS: &[&str] = &["rtrb", "crossbeam", "disruptor", "iceoryx2"];

/// A number taken from one result.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    P50,
    P99,
    Rate,
    /// A scenario-specific number (see [`Outcome::with`]).
    Extra(&'static str),
}

impl Metric {
    pub fn of(self, o: &Outcome) -> Option<f64> {
        match self {
            Metric::P50 => o.latency.map(|l| l[0] as f64),
            Metric::P99 => o.latency.map(|l| l[2] as f64),
            Metric::Rate => o.msgs_per_s,
            Metric::Extra(k) => o.extra(k),
        }
    }
}

/// Median, minimum and maximum.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Option<Self> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    fn show(&self, prec: usize) -> String {
        if self.n == 1 || self.min == self.max {
            format!("{:.prec$}", self.median)
        } else {
            format!(
                "{:.prec$} ({:.prec$}–{:.prec$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// Results of one scenario row (same name, size and requested scenario: a
/// sweep's 64-byte row is not the plain scenario's), one per run, in order
/// of first appearance.
pub fn groups(outcomes: &[Outcome]) -> Vec<Vec<&Outcome>> {
    let mut out: Vec<Vec<&Outcome>> = Vec::new();
    for o in outcomes {
        match out.iter_mut().find(|g| {
            g[0].scenario == o.scenario
                && g[0].msg_bytes == o.msg_bytes
                && g[0].requested == o.requested
        }) {
            Some(g) => g.push(o),
            None => out.push(vec![o]),
        }
    }
    out
}

/// Run `run`'s result named `name`, preferring the scenario asked for by
/// that name over a sweep's row of the same name.
fn find<'a>(outcomes: &'a [Outcome], run: u32, name: &str) -> Option<&'a Outcome> {
    let named = |o: &&Outcome| o.run == run && o.scenario == name;
    outcomes
        .iter()
        .filter(named)
        .find(|o| o.requested == name)
        .or_else(|| outcomes.iter().find(named))
}

fn runs(outcomes: &[Outcome]) -> Vec<u32> {
    let mut r: Vec<u32> = outcomes.iter().map(|o| o.run).collect();
    r.sort_unstable();
    r.dedup();
    r
}

/// `a`'s metric over `b`'s, within each run that has both.
pub fn ratio(outcomes: &[Outcome], a: (&str, Metric), b: (&str, Metric)) -> Option<Spread> {
    let v = runs(outcomes)
        .into_iter()
        .filter_map(|r| {
            let x = a.1.of(find(outcomes, r, a.0)?)?;
            let y = b.1.of(find(outcomes, r, b.0)?)?;
            Some(x / y)
        })
        .collect();
    Spread::of(v)
}

/// A level-split ratio (`levels`) of `name` over runs: each run's low- and
/// high-level groups of rounds are classified again against the lowest floor
/// of all runs (a run spent on the high level calls its rounds "low"). The
/// spread over the groups on the asked level, and their rounds.
fn by_level(outcomes: &[Outcome], name: &str, suffix: &str, high: bool) -> Option<(Spread, f64)> {
    let groups: Vec<(f64, Option<f64>, f64)> = runs(outcomes)
        .into_iter()
        .filter_map(|r| find(outcomes, r, name))
        .flat_map(|o| {
            ["low", "high"].into_iter().filter_map(move |g| {
                let floor = o.extra(&format!("{g}_level_floor_ns"))?;
                let ratio = o.extra(&format!("{g}_level_{suffix}"));
                let rounds = o.extra(&format!("{g}_level_rounds")).unwrap_or(0.0);
                Some((floor, ratio, rounds))
            })
        })
        .collect();
    let lowest = groups.iter().map(|g| g.0).fold(f64::INFINITY, f64::min);
    let on_level: Vec<_> = groups
        .iter()
        .filter(|g| (g.0 > crate::levels::HIGH_LEVEL as f64 * lowest) == high)
        .collect();
    let spread = Spread::of(on_level.iter().filter_map(|g| g.1).collect())?;
    Some((spread, on_level.iter().map(|g| g.2).sum()))
}

/// The best shared-memory peer of each run for `suffix` (`pingpong`: lowest
/// p50; `throughput`: highest rate), as (name, value) per run.
fn best_peer(outcomes: &[Outcome], run: u32, suffix: &str) -> Option<(String, f64)> {
    let lower_is_better = suffix == "pingpong";
    SHM_PEERS
        .iter()
        .filter_map(|p| {
            let name = format!("{p}-{suffix}");
            let o = find(outcomes, run, &name)?;
            let v = if lower_is_better {
                Metric::P50.of(o)?
            } else {
                Metric::Rate.of(o)?
            };
            Some((name, v))
        })
        .reduce(|a, b| {
            let a_wins = if lower_is_better {
                a.1 <= b.1
            } else {
                a.1 >= b.1
            };
            if a_wins {
                a
            } else {
                b
            }
        })
}

/// A paired scenario's own ratio over runs (`x_best_peer`: the median over
/// its rounds of weft over the best peer of the same round).
fn paired_ratio(outcomes: &[Outcome], weft: &str) -> Option<Spread> {
    Spread::of(
        runs(outcomes)
            .into_iter()
            .filter_map(|r| find(outcomes, r, weft)?.extra("x_best_peer"))
            .collect(),
    )
}

/// weft's metric over the best peer's, within each run; for a paired
/// scenario, its own ratio ([`paired_ratio`]).
fn ratio_to_best_peer(outcomes: &[Outcome], weft: &str, suffix: &str) -> Option<Spread> {
    if let Some(paired) = paired_ratio(outcomes, weft) {
        return Some(paired);
    }
    let metric = if suffix == "pingpong" {
        Metric::P50
    } else {
        Metric::Rate
    };
    let v = runs(outcomes)
        .into_iter()
        .filter_map(|r| {
            let w = metric.of(find(outcomes, r, weft)?)?;
            Some(w / best_peer(outcomes, r, suffix)?.1)
        })
        .collect();
    Spread::of(v)
}

fn spread_of(g: &[&Outcome], m: Metric) -> Option<Spread> {
    Spread::of(g.iter().filter_map(|o| m.of(o)).collect())
}

/// The full table: one row per scenario and size, medians over runs with
/// ranges, then the target ratios.
pub fn table(outcomes: &[Outcome]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<30} {:>6} {:>4} {:>22} {:>8} {:>8} {:>9} {:>26} {:>7} {:>5}",
        "scenario", "bytes", "runs", "p50 ns", "p99", "p99.9", "max", "msgs/s", "×probe", "flags"
    );
    for g in groups(outcomes) {
        let o = g[0];
        let lat = |i: usize| {
            Spread::of(
                g.iter()
                    .filter_map(|o| o.latency.map(|l| l[i] as f64))
                    .collect(),
            )
        };
        let show = |s: Option<Spread>, p: usize| s.map_or("-".into(), |s| s.show(p));
        let med = |s: Option<Spread>| s.map_or("-".into(), |s| format!("{:.0}", s.median));
        let flags = g.iter().filter(|o| o.flagged()).count();
        let busy = g.iter().filter(|o| o.busy()).count();
        let mut f = String::new();
        if flags > 0 {
            f.push_str(&format!("P{flags}"));
        }
        if busy > 0 {
            f.push_str(&format!("B{busy}"));
        }
        let _ = writeln!(
            t,
            "{:<30} {:>6} {:>4} {:>22} {:>8} {:>8} {:>9} {:>26} {:>7} {:>5}",
            o.scenario,
            o.msg_bytes,
            g.len(),
            show(lat(0), 0),
            med(lat(2)),
            med(lat(3)),
            med(lat(5)),
            show(spread_of(&g, Metric::Rate), 0),
            Spread::of(g.iter().filter_map(|o| o.ratio_to_probes()).collect())
                .map_or("-".into(), |s| format!("{:.2}", s.median)),
            if f.is_empty() { "-".into() } else { f },
        );
    }
    let _ = writeln!(
        t,
        "(medians over runs, min–max in brackets; ×probe: p50 over the mean of the floor probed just before and after; \
         flags: P = probes disagreed by more than {}x after repeats, B = other processes used the CPU)",
        crate::harness::PROBE_DISAGREEMENT
    );
    let lines = target_ratios(outcomes);
    if !lines.is_empty() {
        let _ = writeln!(t, "\nratios within each run (median, min–max over runs):");
        for l in lines {
            let _ = writeln!(t, "  {l}");
        }
    }
    t
}

/// The ratios the targets are stated in, where both sides were run.
pub fn target_ratios(outcomes: &[Outcome]) -> Vec<String> {
    use Metric::*;
    let mut lines = Vec::new();
    let mut push = |label: String, s: Option<Spread>| {
        if let Some(s) = s {
            lines.push(format!("{label:<52} {}", s.show(2)));
        }
    };
    for (a, floor) in [
        ("shm-pingpong", "floor-shm"),
        ("api-shm-pingpong", "floor-shm"),
        ("udp-pingpong", "floor-udp"),
        ("api-udp-pingpong", "floor-udp"),
    ] {
        push(
            format!("{a} p50 / {floor} p50"),
            ratio(outcomes, (a, P50), (floor, P50)),
        );
    }
    for p in SHM_PEERS {
        let name = format!("{p}-pingpong");
        push(
            format!("{name} p50 / floor-shm p50"),
            ratio(outcomes, (&name, P50), ("floor-shm", P50)),
        );
    }
    push(
        "interleaved-weft-spsc p50 / interleaved-floor-shm p50".into(),
        ratio(
            outcomes,
            ("interleaved-weft-spsc", P50),
            ("interleaved-floor-shm", P50),
        ),
    );
    for p in ["rtrb", "crossbeam", "disruptor"] {
        push(
            format!("interleaved-weft-spsc p50 / interleaved-{p} p50"),
            ratio(
                outcomes,
                ("interleaved-weft-spsc", P50),
                (&format!("interleaved-{p}"), P50),
            ),
        );
    }
    // The same, paired block by block and split by the floor's level (see
    // `levels`): the VM's level changes cannot favour one side.
    let paired: [(&str, &str, &str); 10] = [
        ("lines-same-line-40B", "x_floor", "lines-floor"),
        ("lines-new-line-40B", "x_floor", "lines-floor"),
        ("lines-cursor-slot", "x_floor", "lines-floor"),
        ("interleaved-weft-spsc", "x_floor", "interleaved-floor-shm"),
        ("interleaved-weft-spsc", "x_rtrb", "interleaved-rtrb"),
        (
            "interleaved-weft-spsc",
            "x_crossbeam",
            "interleaved-crossbeam",
        ),
        (
            "interleaved-weft-spsc",
            "x_disruptor",
            "interleaved-disruptor",
        ),
        (
            "interleaved-weft-spsc-mapped",
            "x_floor",
            "interleaved-floor-shm",
        ),
        (
            "interleaved-weft-spsc-mapped",
            "x_heap",
            "interleaved-weft-spsc",
        ),
        (
            "interleaved-weft-spsc-mapped",
            "x_disruptor",
            "interleaved-disruptor",
        ),
    ];
    for (level, high) in [("low", false), ("high", true)] {
        for (name, suffix, other) in paired {
            if let Some((s, rounds)) = by_level(outcomes, name, suffix, high) {
                push(
                    format!("{name} / {other}, {level} level ({rounds:.0} rounds)"),
                    Some(s),
                );
            }
        }
    }
    for (label, weft, suffix) in [
        (
            "shm-pingpong p50 / best shm peer's p50",
            "shm-pingpong",
            "pingpong",
        ),
        (
            "shm-throughput / best shm peer's throughput",
            "shm-throughput",
            "throughput",
        ),
        (
            "api-shm-throughput / best shm peer's throughput",
            "api-shm-throughput",
            "throughput",
        ),
        (
            "shm-throughput-paired: weft / best peer, same round",
            "shm-throughput-paired",
            "throughput-paired",
        ),
    ] {
        push(label.into(), ratio_to_best_peer(outcomes, weft, suffix));
    }
    for w in ["processes", "threads", "batch", "api"] {
        push(
            format!("shm-throughput-interleaved: weft-{w} / best peer"),
            paired_ratio(outcomes, &format!("interleaved-throughput-weft-{w}")),
        );
    }
    for n in [2, 4, 8] {
        push(
            format!("shm-fanout-{n} / shm-fanout-1 producer ns per message"),
            ratio(
                outcomes,
                (&format!("shm-fanout-{n}"), Extra("producer_ns_per_msg")),
                ("shm-fanout-1", Extra("producer_ns_per_msg")),
            ),
        );
    }
    for l in ["0.1", "1", "5"] {
        push(
            format!("udp-pingpong-loss{l} p99 / udp-pingpong p99"),
            ratio(
                outcomes,
                (&format!("udp-pingpong-loss{l}"), P99),
                ("udp-pingpong", P99),
            ),
        );
        push(
            format!("mcast-throughput-loss{l} / mcast-throughput"),
            ratio(
                outcomes,
                (&format!("mcast-throughput-loss{l}"), Rate),
                ("mcast-throughput", Rate),
            ),
        );
    }
    push(
        "mcast-throughput / udp-raw-throughput".into(),
        ratio(
            outcomes,
            ("mcast-throughput", Rate),
            ("udp-raw-throughput", Rate),
        ),
    );
    lines
}

/// One row of the quick table: label, weft's scenario, its floor, the
/// metric, and the suffix of the peers' scenarios (none: no peer).
type QuickRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Metric,
    Option<&'static str>,
);

/// Scenarios of `weft-bench quick`.
pub const QUICK: &[&str] = &[
    "floor-shm",
    "shm-pingpong",
    "rtrb-pingpong",
    "crossbeam-pingpong",
    "disruptor-pingpong",
    "shm-throughput-paired",
    "floor-udp",
    "udp-pingpong",
    "udp-raw-throughput",
    "mcast-throughput",
];

/// The short table: each of weft's key numbers beside its floor and its best
/// peer, as medians over runs of values and of same-run ratios.
pub fn quick_table(outcomes: &[Outcome]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let median = |name: &str, m: Metric| {
        Spread::of(
            outcomes
                .iter()
                .filter(|o| o.scenario == name)
                .filter_map(|o| m.of(o))
                .collect(),
        )
    };
    let best = |suffix: &str| {
        // The peer that was best in most runs, by name.
        let mut names: Vec<String> = runs(outcomes)
            .into_iter()
            .filter_map(|r| best_peer(outcomes, r, suffix).map(|b| b.0))
            .collect();
        names.sort();
        let mut top: Option<(String, usize)> = None;
        for n in &names {
            let c = names.iter().filter(|x| *x == n).count();
            if top.as_ref().is_none_or(|t| c > t.1) {
                top = Some((n.clone(), c));
            }
        }
        top.map(|t| t.0)
    };
    let v = |s: Option<Spread>, unit: &str| {
        s.map_or("-".to_string(), |s| {
            if unit == "msgs/s" {
                format!("{:.1} M/s", s.median / 1e6)
            } else {
                format!("{:.0} ns", s.median)
            }
        })
    };
    let r = |s: Option<Spread>| s.map_or("-".to_string(), |s| format!("{:.2}", s.median));
    let _ = writeln!(
        t,
        "{:<26} {:>11} {:>11} {:>8} {:>34} {:>8}",
        "", "weft", "floor", "/floor", "best peer", "/peer"
    );
    let rows: [QuickRow; 4] = [
        (
            "shm round trip p50, 32 B",
            "shm-pingpong",
            Some("floor-shm"),
            Metric::P50,
            Some("pingpong"),
        ),
        (
            "shm throughput, 64 B",
            "shm-throughput-paired",
            None,
            Metric::Rate,
            Some("throughput-paired"),
        ),
        (
            "udp round trip p50, 32 B",
            "udp-pingpong",
            Some("floor-udp"),
            Metric::P50,
            None,
        ),
        (
            "udp throughput, 64 B",
            "mcast-throughput",
            Some("udp-raw-throughput"),
            Metric::Rate,
            None,
        ),
    ];
    for (label, weft, floor, metric, peers) in rows {
        let unit = if matches!(metric, Metric::Rate) {
            "msgs/s"
        } else {
            "ns"
        };
        let peer = peers.and_then(best);
        let _ = writeln!(
            t,
            "{:<26} {:>11} {:>11} {:>8} {:>34} {:>8}",
            label,
            v(median(weft, metric), unit),
            floor.map_or("-".into(), |f| v(median(f, metric), unit)),
            floor.map_or("-".into(), |f| r(ratio(
                outcomes,
                (weft, metric),
                (f, metric)
            ))),
            match (&peer, peers) {
                (Some(p), _) => format!("{p} {}", v(median(p, metric), unit)),
                (None, None) => "- (no network peer built)".into(),
                (None, Some(_)) => "-".into(),
            },
            peers.map_or("-".into(), |s| r(ratio_to_best_peer(outcomes, weft, s))),
        );
    }
    let _ = writeln!(
        t,
        "\nfloor: floor-shm (cache-line ping-pong) / floor-udp (raw UDP ping-pong) / udp-raw-throughput \
         (one datagram per send); lower is better for round trips, higher for throughput. \
         Ratios are taken within each run, medians of {} runs; shm throughput's /peer is \
         the median over rounds of weft over the best peer of the same round (the loops \
         alternate in short trials, shm-throughput-paired).",
        runs(outcomes).len()
    );
    if let Some(f) = median("floor-shm", Metric::P50).filter(|f| f.max > 1.5 * f.min) {
        let _ = writeln!(
            t,
            "The shared-memory floor changed level between runs ({:.0} to {:.0} ns): the ns \
             columns are medians of runs on different levels, so compare the ratios.",
            f.min, f.max
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorder;

    /// A run that spent its whole time on the high level calls its rounds
    /// "low"; across runs they count as high, by their floor.
    #[test]
    fn level_groups_are_classified_against_the_lowest_floor_of_all_runs() {
        let run = |run: u32, groups: &[(&'static str, f64, f64)]| {
            let mut o = Outcome::latency("interleaved-weft-spsc", 32, &Recorder::new(), "");
            o.run = run;
            o.requested = "shm-peers-interleaved".into();
            for &(g, floor, ratio) in groups {
                let (f, x, n) = match g {
                    "low" => (
                        "low_level_floor_ns",
                        "low_level_x_floor",
                        "low_level_rounds",
                    ),
                    _ => (
                        "high_level_floor_ns",
                        "high_level_x_floor",
                        "high_level_rounds",
                    ),
                };
                o = o.with(f, floor).with(x, ratio).with(n, 10.0);
            }
            o
        };
        let outcomes = vec![
            run(1, &[("low", 140.0, 0.8), ("high", 520.0, 1.2)]),
            run(2, &[("low", 550.0, 1.1)]),
            run(3, &[("low", 130.0, 0.9)]),
        ];
        let (low, low_rounds) =
            by_level(&outcomes, "interleaved-weft-spsc", "x_floor", false).unwrap();
        let (high, high_rounds) =
            by_level(&outcomes, "interleaved-weft-spsc", "x_floor", true).unwrap();
        assert_eq!((low.n, low.min, low.max, low_rounds), (2, 0.8, 0.9, 20.0));
        assert_eq!(
            (high.n, high.min, high.max, high_rounds),
            (2, 1.1, 1.2, 20.0)
        );
    }
}
