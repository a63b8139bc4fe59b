//! Alert rules: a TOML file of rules over the metrics `weft-stat serve`
//! exports, evaluated continuously, with Alertmanager's behaviour (pending
//! for a `for` duration, firing once, resolved once, a repeat interval,
//! grouping and a fingerprint per alert), and the same rules written out as
//! a Prometheus alerting-rules file for teams on Alertmanager.
//!
//! ```toml
//! [notify]
//! eval_interval = "1s"     # how often the rules are evaluated
//! repeat_interval = "1h"   # a firing alert is sent again this often
//! group_by = ["alertname", "node"]
//!
//! [[rule]]
//! name = "WeftUdpLoss"
//! expr = "increase(weft_udp_loss_events_total[1m])"
//! op = ">"
//! threshold = 0
//! for = "0s"
//! severity = "critical"
//! summary = "A UDP subscription reported lost messages"
//! labels = { team = "trading" }
//! ```
//!
//! `expr` is a subset of PromQL, so that the Prometheus file is the same
//! expression: a selector `metric{label="v",other!="w"}`, or one of
//! `rate`, `increase`, `delta`, `max_over_time`, `min_over_time` of a
//! selector over a range (`[30s]`, `[1m]`). `increase` and `rate` here take
//! the first and last sample in the range (Prometheus extrapolates to its
//! ends), counter resets counted.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use weft_notify::{fingerprint, Notification};

/// One sample of a metric, as the exposition text has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition (what `serve` answers): one sample a
/// line, comments skipped; label values unescaped.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // label name
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            if let Some(&(i, '}')) = chars.peek() {
                end = Some(i + 1);
                break;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key.trim().to_string(), value);
        }
        &r[end?..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A label matcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub equal: bool,
    pub value: String,
}

/// `metric{matchers}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    fn matches(&self, s: &Sample) -> bool {
        s.name == self.metric
            && self.matchers.iter().all(|m| {
                let v = s.labels.get(&m.label).map_or("", String::as_str);
                (v == m.value) == m.equal
            })
    }
}

/// A range function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Rate,
    Increase,
    Delta,
    MaxOverTime,
    MinOverTime,
}

/// A rule's expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Instant(Selector),
    Range(Func, Selector, Duration),
}

impl Expr {
    /// The range the expression looks back over.
    pub fn range(&self) -> Duration {
        match self {
            Expr::Instant(_) => Duration::ZERO,
            Expr::Range(_, _, d) => *d,
        }
    }

    fn selector(&self) -> &Selector {
        match self {
            Expr::Instant(s) | Expr::Range(_, s, _) => s,
        }
    }
}

/// Parses a duration: a number and `ms`, `s`, `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?}: give a unit (ms, s, m, h)"))?;
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: {num:?} is not a number"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "duration {s:?}: unknown unit {other:?} (ms, s, m, h)"
            ))
        }
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("duration {s:?}: must be zero or more"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_selector(s: &str) -> Result<Selector, String> {
    let s = s.trim();
    let (metric, rest) = match s.find('{') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let metric = metric.trim();
    if metric.is_empty()
        || !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("{metric:?} is not a metric name"));
    }
    let mut matchers = Vec::new();
    if let Some(rest) = rest {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| format!("{rest:?}: expected {{label=\"value\", ...}}"))?;
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (label, equal, value) = if let Some((l, v)) = part.split_once("!=") {
                (l, false, v)
            } else if let Some((l, v)) = part.split_once('=') {
                (l, true, v)
            } else {
                return Err(format!(
                    "{part:?}: expected label=\"value\" or label!=\"value\""
                ));
            };
            let value = value
                .trim()
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("{part:?}: the value needs double quotes"))?;
            matchers.push(Matcher {
                label: label.trim().to_string(),
                equal,
                value: value.to_string(),
            });
        }
    }
    Ok(Selector {
        metric: metric.to_string(),
        matchers,
    })
}

/// Parses a rule expression (the module doc's subset of PromQL).
pub fn parse_expr(s: &str) -> Result<Expr, String> {
    let s = s.trim();
    for (name, func) in [
        ("rate", Func::Rate),
        ("increase", Func::Increase),
        ("delta", Func::Delta),
        ("max_over_time", Func::MaxOverTime),
        ("min_over_time", Func::MinOverTime),
    ] {
        if let Some(inner) = s
            .strip_prefix(name)
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
        {
            let (sel, range) = inner
                .rsplit_once('[')
                .and_then(|(sel, r)| Some((sel, r.strip_suffix(']')?)))
                .ok_or_else(|| {
                    format!("{name}(…): expected a selector and a range, as {name}(metric[1m])")
                })?;
            return Ok(Expr::Range(
                func,
                parse_selector(sel)?,
                parse_duration(range)?,
            ));
        }
    }
    if s.contains('(') {
        return Err(format!(
            "{s:?}: only rate, increase, delta, max_over_time and min_over_time of a selector are understood"
        ));
    }
    Ok(Expr::Instant(parse_selector(s)?))
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn parse(s: &str) -> Result<Op, String> {
        Ok(match s.trim() {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            other => return Err(format!("op {other:?}: expected >, >=, <, <=, == or !=")),
        })
    }

    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Gt => v > t,
            Op::Ge => v >= t,
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Eq => v == t,
            Op::Ne => v != t,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// One rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub expr_text: String,
    pub expr: Expr,
    pub op: Op,
    pub threshold: f64,
    pub for_: Duration,
    pub severity: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
}

/// How alerts are sent.
#[derive(Clone, Debug)]
pub struct Notify {
    pub eval_interval: Duration,
    pub repeat_interval: Duration,
    pub group_by: Vec<String>,
}

/// A rules file, checked.
#[derive(Clone, Debug)]
pub struct Rules {
    pub notify: Notify,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    notify: Option<NotifyFile>,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    eval_interval: Option<String>,
    repeat_interval: Option<String>,
    group_by: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    expr: String,
    op: String,
    threshold: f64,
    #[serde(rename = "for", default)]
    for_: Option<String>,
    severity: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The metric families `serve` exports: a rule over another is a mistake
/// (a typo would otherwise never fire).
pub fn known_metric(name: &str, extra: &[&str]) -> bool {
    weft_counters::types::METRICS.iter().any(|m| m.name == name)
        || weft_counters::types::HISTOGRAM_METRICS.iter().any(|h| {
            name.strip_prefix(h.1)
                .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        })
        || extra.contains(&name)
}

impl Rules {
    /// Parses and checks a rules file: TOML syntax, every field, every
    /// expression, and that each expression's metric is one `serve`
    /// exports (`extra`: the families beyond the counters table).
    pub fn parse(text: &str, extra: &[&str]) -> Result<Rules, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let n = f.notify.unwrap_or(NotifyFile {
            eval_interval: None,
            repeat_interval: None,
            group_by: None,
        });
        let notify = Notify {
            eval_interval: parse_duration(n.eval_interval.as_deref().unwrap_or("1s"))
                .map_err(|e| format!("[notify] eval_interval: {e}"))?,
            repeat_interval: parse_duration(n.repeat_interval.as_deref().unwrap_or("1h"))
                .map_err(|e| format!("[notify] repeat_interval: {e}"))?,
            group_by: n
                .group_by
                .unwrap_or_else(|| vec!["alertname".into(), "node".into()]),
        };
        if notify.eval_interval < Duration::from_millis(100) {
            return Err("[notify] eval_interval: at least 100ms".into());
        }
        let mut rules = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for r in f.rule {
            let ctx = |e: String| format!("rule {:?}: {e}", r.name);
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(ctx("the name must be letters, digits and _".into()));
            }
            if !names.insert(r.name.clone()) {
                return Err(ctx("a second rule of this name".into()));
            }
            let expr = parse_expr(&r.expr).map_err(ctx)?;
            let metric = &expr.selector().metric;
            if !known_metric(metric, extra) {
                return Err(ctx(format!(
                    "unknown metric {metric:?}: not one weft-stat serve exports (docs/operations.md lists them)"
                )));
            }
            if !r.threshold.is_finite() {
                return Err(ctx("the threshold must be a finite number".into()));
            }
            rules.push(Rule {
                expr_text: r.expr.trim().to_string(),
                op: Op::parse(&r.op).map_err(ctx)?,
                threshold: r.threshold,
                for_: parse_duration(r.for_.as_deref().unwrap_or("0s")).map_err(ctx)?,
                severity: r.severity,
                summary: r.summary,
                labels: r.labels,
                expr,
                name: r.name,
            });
        }
        Ok(Rules { notify, rules })
    }

    /// The same rules as a Prometheus alerting-rules file.
    pub fn prometheus_yaml(&self) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let mut out = String::from(
            "# Generated by `weft-stat rules --prometheus` from the weft rules file: do not edit.\ngroups:\n  - name: weft\n    rules:\n",
        );
        for r in &self.rules {
            let _ = writeln!(out, "      - alert: {}", r.name);
            let _ = writeln!(
                out,
                "        expr: {}",
                q(&format!("{} {} {}", r.expr_text, r.op.text(), r.threshold))
            );
            let _ = writeln!(out, "        for: {}s", r.for_.as_secs());
            let _ = writeln!(out, "        labels:");
            let _ = writeln!(out, "          severity: {}", q(&r.severity));
            for (k, v) in &r.labels {
                let _ = writeln!(out, "          {k}: {}", q(v));
            }
            let _ = writeln!(out, "        annotations:");
            let _ = writeln!(out, "          summary: {}", q(&r.summary));
        }
        out
    }
}

/// The recent samples the range functions look back over.
#[derive(Debug, Default)]
pub struct History {
    snaps: VecDeque<(Instant, Vec<Sample>)>,
}

impl History {
    /// Adds a snapshot taken at `at`, forgetting what is older than `keep`.
    pub fn push(&mut self, at: Instant, samples: Vec<Sample>, keep: Duration) {
        self.snaps.push_back((at, samples));
        while self
            .snaps
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > keep)
        {
            self.snaps.pop_front();
        }
    }

    /// The expression's value per series (its labels) now.
    pub fn eval(&self, expr: &Expr) -> Vec<(BTreeMap<String, String>, f64)> {
        let Some((now, latest)) = self.snaps.back() else {
            return Vec::new();
        };
        match expr {
            Expr::Instant(sel) => latest
                .iter()
                .filter(|s| sel.matches(s))
                .map(|s| (s.labels.clone(), s.value))
                .collect(),
            Expr::Range(func, sel, range) => {
                let mut series: BTreeMap<&BTreeMap<String, String>, Vec<(Instant, f64)>> =
                    BTreeMap::new();
                for (t, samples) in &self.snaps {
                    if now.duration_since(*t) > *range {
                        continue;
                    }
                    for s in samples.iter().filter(|s| sel.matches(s)) {
                        series.entry(&s.labels).or_default().push((*t, s.value));
                    }
                }
                series
                    .into_iter()
                    .filter_map(|(labels, pts)| {
                        let v = apply(*func, &pts)?;
                        Some((labels.clone(), v))
                    })
                    .collect()
            }
        }
    }
}

fn apply(func: Func, pts: &[(Instant, f64)]) -> Option<f64> {
    let (first, last) = (pts.first()?, pts.last()?);
    let increase = || {
        // A counter that went down restarted: count from 0 there.
        pts.windows(2)
            .map(|w| {
                if w[1].1 >= w[0].1 {
                    w[1].1 - w[0].1
                } else {
                    w[1].1
                }
            })
            .sum::<f64>()
    };
    match func {
        Func::Increase => (pts.len() >= 2).then(increase),
        Func::Rate => {
            let secs = last.0.duration_since(first.0).as_secs_f64();
            (pts.len() >= 2 && secs > 0.0).then(|| increase() / secs)
        }
        Func::Delta => (pts.len() >= 2).then_some(last.1 - first.1),
        Func::MaxOverTime => pts.iter().map(|p| p.1).reduce(f64::max),
        Func::MinOverTime => pts.iter().map(|p| p.1).reduce(f64::min),
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Debug)]
struct Alert {
    since: Instant,
    firing: bool,
    starts_at_ns: u64,
    last_sent: Option<Instant>,
    repeat: u32,
}

/// The rules' alerts over time.
#[derive(Debug)]
pub struct Evaluator {
    pub rules: Rules,
    history: History,
    alerts: BTreeMap<(usize, BTreeMap<String, String>), Alert>,
}

impl Evaluator {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            history: History::default(),
            alerts: BTreeMap::new(),
        }
    }

    /// How far back the rules look, plus a margin.
    fn keep(&self) -> Duration {
        self.rules
            .rules
            .iter()
            .map(|r| r.expr.range())
            .max()
            .unwrap_or_default()
            + self.rules.notify.eval_interval * 2
    }

    /// The alerts firing now: (alertname, labels).
    pub fn firing(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.alerts
            .iter()
            .filter(|(_, a)| a.firing)
            .map(|((i, l), _)| (self.rules.rules[*i].name.clone(), l.clone()))
            .collect()
    }

    /// Takes the samples of `now` and returns what changed: alerts that
    /// start firing, repeat, or resolve.
    pub fn step(&mut self, now: Instant, samples: Vec<Sample>) -> Vec<Notification> {
        let keep = self.keep();
        self.history.push(now, samples, keep);
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, rule) in self.rules.rules.iter().enumerate() {
            for (labels, value) in self.history.eval(&rule.expr) {
                if !rule.op.holds(value, rule.threshold) {
                    continue;
                }
                let key = (i, labels.clone());
                seen.insert(key.clone());
                let a = self.alerts.entry(key).or_insert(Alert {
                    since: now,
                    firing: false,
                    starts_at_ns: 0,
                    last_sent: None,
                    repeat: 0,
                });
                let due = if !a.firing {
                    if now.duration_since(a.since) < rule.for_ {
                        continue;
                    }
                    a.firing = true;
                    a.starts_at_ns = wall_ns();
                    true
                } else {
                    let repeat = a.last_sent.is_some_and(|t| {
                        now.duration_since(t) >= self.rules.notify.repeat_interval
                    });
                    if repeat {
                        a.repeat += 1;
                    }
                    repeat
                };
                if due {
                    a.last_sent = Some(now);
                    out.push(notification(
                        &self.rules.notify,
                        rule,
                        &labels,
                        value,
                        "firing",
                        a.starts_at_ns,
                        0,
                        a.repeat,
                    ));
                }
            }
        }
        let gone: Vec<_> = self
            .alerts
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            let Some(a) = self.alerts.remove(&key) else {
                continue;
            };
            if a.firing {
                let rule = &self.rules.rules[key.0];
                out.push(notification(
                    &self.rules.notify,
                    rule,
                    &key.1,
                    f64::NAN,
                    "resolved",
                    a.starts_at_ns,
                    wall_ns(),
                    0,
                ));
            }
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn notification(
    notify: &Notify,
    rule: &Rule,
    series: &BTreeMap<String, String>,
    value: f64,
    status: &'static str,
    starts_at_ns: u64,
    ends_at_ns: u64,
    repeat: u32,
) -> Notification {
    let mut labels = series.clone();
    labels.extend(rule.labels.clone());
    labels.insert("alertname".into(), rule.name.clone());
    labels.insert("severity".into(), rule.severity.clone());
    let group = notify
        .group_by
        .iter()
        .map(|g| format!("{g}={}", labels.get(g).map_or("", String::as_str)))
        .collect::<Vec<_>>()
        .join(",");
    Notification {
        status,
        alertname: rule.name.clone(),
        severity: rule.severity.clone(),
        summary: rule.summary.clone(),
        fingerprint: fingerprint(&labels),
        labels,
        value,
        group,
        starts_at_ns,
        ends_at_ns,
        repeat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_parse_with_escapes() {
        let s = parse_exposition(
            "# HELP x y\nweft_x{a=\"1\",b=\"q\\\"uote\\\\\"} 2.5\nplain 7\nnode_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 1e3\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["b"], "q\"uote\\");
        assert_eq!(s[0].value, 2.5);
        assert_eq!(s[1].name, "plain");
        assert_eq!(s[2].value, 1000.0);
    }

    #[test]
    fn expressions_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_expr("increase(weft_udp_loss_events_total{role=\"subscription\"}[1m])").unwrap(),
            Expr::Range(
                Func::Increase,
                Selector {
                    metric: "weft_udp_loss_events_total".into(),
                    matchers: vec![Matcher {
                        label: "role".into(),
                        equal: true,
                        value: "subscription".into()
                    }]
                },
                Duration::from_secs(60)
            )
        );
        assert!(matches!(
            parse_expr("weft_process_up{state!=\"x\"}"),
            Ok(Expr::Instant(_))
        ));
        for (bad, says) in [
            ("sum(weft_x)", "only rate"),
            ("rate(weft_x)", "a selector and a range"),
            ("rate(weft_x[1y])", "unknown unit"),
            ("weft_x{a=1}", "double quotes"),
            ("weft x", "not a metric name"),
        ] {
            let e = parse_expr(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_rules_file_is_checked() {
        let good = "[[rule]]\nname = \"Up\"\nexpr = \"weft_process_up\"\nop = \"==\"\nthreshold = 0\nseverity = \"critical\"\n";
        let r = Rules::parse(good, &["weft_process_up"]).unwrap();
        assert_eq!(r.rules[0].op, Op::Eq);
        for (bad, says) in [
            (
                good.replace("weft_process_up\"", "weft_proces_up\""),
                "unknown metric",
            ),
            (good.replace("\"==\"", "\"=>\""), "op \"=>\""),
            (
                good.replace("threshold = 0", "threshold = \"x\""),
                "threshold",
            ),
            (good.replace("severity", "sev"), "unknown field"),
            (format!("{good}{good}"), "a second rule"),
        ] {
            let e = Rules::parse(&bad, &["weft_process_up"]).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    fn sample(name: &str, node: &str, v: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: [("node".to_string(), node.to_string())].into(),
            value: v,
        }
    }

    #[test]
    fn an_alert_is_pending_then_fires_once_repeats_and_resolves_once() {
        let rules = Rules::parse(
            "[notify]\nrepeat_interval = \"10s\"\n[[rule]]\nname = \"Loss\"\nexpr = \"increase(weft_udp_loss_events_total[5s])\"\nop = \">\"\nthreshold = 0\nfor = \"2s\"\nseverity = \"critical\"\nlabels = { team = \"t\" }\n",
            &[],
        )
        .unwrap();
        let mut e = Evaluator::new(rules);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let m = |v: f64| vec![sample("weft_udp_loss_events_total", "a", v)];
        assert!(e.step(at(0), m(0.0)).is_empty());
        assert!(e.step(at(1), m(3.0)).is_empty(), "pending");
        assert!(e.step(at(2), m(3.0)).is_empty(), "pending for 1 s");
        let fired = e.step(at(3), m(3.0));
        assert_eq!(fired.len(), 1, "firing after 2 s");
        let n = &fired[0];
        assert_eq!((n.status, n.labels["team"].as_str()), ("firing", "t"));
        assert_eq!(n.group, "alertname=Loss,node=a");
        assert!(e.step(at(4), m(3.0)).is_empty(), "not sent twice");
        // The increase leaves the 5 s range: resolved, once.
        let r = e.step(at(9), m(3.0));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, "resolved");
        assert_eq!(r[0].fingerprint, n.fingerprint);
        assert_eq!(r[0].starts_at_ns, n.starts_at_ns);
        assert!(e.step(at(10), m(3.0)).is_empty());
        // Repeats every repeat_interval while it fires.
        let mut e2 = Evaluator::new(e.rules.clone());
        e2.step(at(0), m(0.0));
        e2.step(at(1), m(1.0));
        assert_eq!(e2.step(at(3), m(2.0)).len(), 1);
        for t in 4..13 {
            assert!(e2.step(at(t), m(t as f64)).is_empty(), "at {t}");
        }
        let again = e2.step(at(13), m(13.0));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].repeat, 1);
        assert_ne!(again[0].dedup_key(), n.dedup_key());
    }

    #[test]
    fn rate_counts_a_counter_reset() {
        let t0 = Instant::now();
        let pts = [
            (t0, 10.0),
            (t0 + Duration::from_secs(1), 20.0),
            (t0 + Duration::from_secs(2), 5.0),
        ];
        assert_eq!(apply(Func::Increase, &pts), Some(15.0));
        assert_eq!(apply(Func::Rate, &pts), Some(7.5));
        assert_eq!(apply(Func::MaxOverTime, &pts), Some(20.0));
    }

    #[test]
    fn the_prometheus_file_has_the_same_expressions() {
        let rules = Rules::parse(
            "[[rule]]\nname = \"Headroom\"\nexpr = \"weft_channel_headroom_ratio\"\nop = \"<\"\nthreshold = 0.2\nfor = \"30s\"\nseverity = \"warning\"\nsummary = \"it's low\"\n",
            &["weft_channel_headroom_ratio"],
        )
        .unwrap();
        let y = rules.prometheus_yaml();
        assert!(
            y.contains("expr: 'weft_channel_headroom_ratio < 0.2'"),
            "{y}"
        );
        assert!(y.contains("for: 30s"));
        assert!(y.contains("summary: 'it''s low'"), "{y}");
    }
}
