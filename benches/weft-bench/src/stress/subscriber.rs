//! A stress subscriber process (`__child stress-sub …`): reads a path's
//! messages until every publisher has sent END, and prints what it saw as
//! one JSON line: per step, the count, the receive times and a histogram of
//! one-way latency measured from each message's *scheduled* send time; per
//! millisecond of each step, the largest latency (the timelines the
//! recovery and burst figures come from); and every sequence gap, split
//! into gaps weft reported as a `Loss` and gaps it did not (silent loss,
//! which must never happen).
//!
//! Progress goes to the run's board (a word region): this subscriber's
//! position (the sum over publishers of the next sequence number it awaits), every 256 messages and on every empty poll, from which
//! the publisher reads the backlog (ring fill) without touching the path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft::{Event, Node, NodeConfig, Subscription, ThreadingMode};
use weft_shm::{spsc, PollError, Region, ShmOptions};

use super::wire::{Stamp, DATA, END};
use crate::clock::{ticks, Clock};
use crate::pin::pin;

/// Board word `JOINED + i`: subscriber `i` is connected (words below it are
/// the subscribers' positions).
pub const JOINED: usize = 64;

/// What a subscriber saw in one step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SubStep {
    pub step: u32,
    pub count: u64,
    pub first_tick: u64,
    pub last_tick: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// The median over the step's 10 ms windows (of at least 20 messages)
    /// of each window's p99: the p99 of a typical moment, which one VM
    /// hiccup does not move (it moves the whole step's p99 by 10x here).
    pub window_p99_ns: u64,
    /// Ticks spent in polls that handed over messages of this step.
    pub busy_ticks: u64,
    /// Per millisecond since the step began (its first message's due
    /// time): the largest latency (ns) and how many messages. Milliseconds
    /// before the first message came (it waited behind an earlier step's
    /// backlog) hold that message's latency.
    pub timeline: Vec<(u64, u64)>,
}

/// What a subscriber prints at the end.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SubReport {
    pub index: usize,
    pub steps: Vec<SubStep>,
    /// Messages missing with a `Loss` event just before the gap.
    pub reported_missing: u64,
    /// Messages missing with no `Loss` event: silent loss.
    pub silent_missing: u64,
    /// Messages that came again or out of order.
    pub reordered: u64,
    pub loss_events: u64,
    /// DATA messages each publisher said it sent (from END).
    pub sent: Vec<u64>,
}

/// How a subscriber reads its path. One per process: the size difference
/// costs nothing, and a box would put an indirection in the poll loop.
#[allow(clippy::large_enum_variant)]
enum Source {
    /// A raw SPSC ring (`shm-spsc`).
    Spsc(spsc::Consumer),
    /// A weft subscription on a node in invoker mode; `work`: run the
    /// node's work (UDP) or not (shared memory: the subscription alone).
    Node {
        node: Node,
        sub: Subscription,
        work: bool,
    },
}

/// Per-step accumulation.
struct StepAcc {
    hist: hdrhistogram::Histogram<u64>,
    count: u64,
    first_tick: u64,
    last_tick: u64,
    busy_ticks: u64,
    timeline: Vec<(u64, u64)>,
    /// When the step began: its first message's due time.
    start_due: u64,
    /// The current 10 ms window's latencies, and where it started.
    window: hdrhistogram::Histogram<u64>,
    window_start: u64,
    window_p99s: Vec<u64>,
}

/// Ticks-per-ms multiples of a window.
const WINDOW_MS: u64 = 10;
/// Messages a window needs for its p99 to count.
const WINDOW_MIN: u64 = 20;

impl StepAcc {
    /// Ends the current window, keeping its p99 if it had enough messages.
    fn close_window(&mut self, now: u64) {
        if self.window.len() >= WINDOW_MIN {
            self.window_p99s.push(self.window.value_at_quantile(0.99));
        }
        self.window.reset();
        self.window_start = now;
    }

    fn new(now: u64, due: u64) -> Self {
        Self {
            start_due: due,
            window: hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 2)
                .expect("valid bounds"),
            window_start: now,
            window_p99s: Vec::with_capacity(1024),
            hist: crate::report::histogram(),
            count: 0,
            first_tick: now,
            last_tick: now,
            busy_ticks: 0,
            timeline: Vec::with_capacity(16_384),
        }
    }
}

struct State {
    clock: Clock,
    ticks_per_ms: u64,
    steps: BTreeMap<u32, StepAcc>,
    next: Vec<u64>,
    /// Whether a message of each publisher has come yet: a subscriber that
    /// joined late starts at the first one it sees.
    seen: Vec<bool>,
    ended: Vec<Option<u64>>,
    loss_pending: bool,
    report: SubReport,
    /// The sum of the next sequence numbers: once caught up, the number of
    /// messages the publishers have sent (what the board shows).
    position: u64,
    slow_ns: u64,
    last_step: u32,
}

impl State {
    #[inline]
    fn message(&mut self, m: &[u8], now: u64) {
        let Some(s) = Stamp::read(m) else {
            self.report.reordered += 1;
            return;
        };
        let p = s.publisher as usize;
        if p >= self.next.len() {
            self.report.reordered += 1;
            return;
        }
        if s.kind == END {
            self.ended[p] = Some(s.seq);
            // Anything missing at the end is a gap too.
            self.gap(p, s.seq);
            return;
        }
        if s.kind != DATA {
            return;
        }
        if !self.seen[p] {
            self.seen[p] = true;
            self.position += s.seq;
            self.next[p] = s.seq;
        }
        self.gap(p, s.seq);
        if s.seq < self.next[p] {
            self.report.reordered += 1;
            return;
        }
        self.next[p] = s.seq + 1;
        self.position += 1;
        let lat = self.clock.ns(s.due, now.max(s.due));
        let ticks_per_ms = self.ticks_per_ms;
        let acc = self
            .steps
            .entry(s.step)
            .or_insert_with(|| StepAcc::new(now, s.due));
        acc.hist.saturating_record(lat.max(1));
        if now.wrapping_sub(acc.window_start) >= WINDOW_MS * ticks_per_ms {
            acc.close_window(now);
        }
        acc.window.saturating_record(lat.max(1));
        acc.count += 1;
        acc.last_tick = now;
        let bucket = (now.saturating_sub(acc.start_due) / ticks_per_ms) as usize;
        if bucket < 1 << 20 {
            if acc.timeline.is_empty() {
                // It waited this long; so did the milliseconds before it.
                acc.timeline.resize(bucket, (lat, 0));
            }
            if acc.timeline.len() <= bucket {
                acc.timeline.resize(bucket + 1, (0, 0));
            }
            let b = &mut acc.timeline[bucket];
            b.0 = b.0.max(lat);
            b.1 += 1;
        }
        self.last_step = s.step;
        if self.slow_ns > 0 {
            // The test hook: work per message, to make a regression.
            let until = ticks() + self.slow_ns * ticks_per_ms / 1_000_000;
            while ticks() < until {
                std::hint::spin_loop();
            }
        }
    }

    /// Messages `next..seq` of publisher `p` did not come.
    #[inline]
    fn gap(&mut self, p: usize, seq: u64) {
        if self.seen[p] && seq > self.next[p] {
            let missing = seq - self.next[p];
            if self.loss_pending {
                self.report.reported_missing += missing;
            } else {
                self.report.silent_missing += missing;
            }
            self.position += missing;
            self.next[p] = seq;
        }
        self.loss_pending = false;
    }

    fn done(&self) -> bool {
        self.ended.iter().all(Option::is_some)
    }
}

/// Runs a subscriber: `args` are
/// `KIND TARGET CORE INDEX BOARD PUBLISHERS NS_PER_TICK YIELD SLOW_NS` where
/// KIND is `spsc`, `shm` or `udp`, TARGET the ring name or channel URI,
/// BOARD the progress region's name, YIELD 1 to back off when idle
/// (several processes share the core), SLOW_NS extra work per
/// message (a test hook; 0 normally).
pub fn run(args: &[String]) {
    let [kind, target, core, index, board, publishers, ns_per_tick, yield_core, slow_ns] = args
    else {
        panic!("stress-sub: unexpected arguments {args:?}");
    };
    let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("stress-sub: {s:?}")) };
    pin(num(core) as usize);
    let index = num(index) as usize;
    let publishers = num(publishers) as usize;
    let clock = Clock::from_ns_per_tick(ns_per_tick.parse().expect("ns per tick"));
    let opts = ShmOptions::default();
    let words = crate::shm::attach_retry(|| Region::attach_words(&opts, board));
    let progress = words.get(index).expect("a board word per subscriber");
    let mut source = match kind.as_str() {
        "spsc" => Source::Spsc(crate::shm::attach_retry(|| {
            spsc::Consumer::attach(&opts, target)
        })),
        "shm" | "udp" => {
            let mut node = Node::new(NodeConfig {
                threading: ThreadingMode::Invoker,
                control_ring: false,
                name: format!("stress-sub-{index}"),
                ..NodeConfig::default()
            })
            .expect("stress subscriber node");
            let sub = node.subscription(target, 1).expect("stress subscription");
            Source::Node {
                node,
                sub,
                work: kind == "udp",
            }
        }
        other => panic!("stress-sub: unknown kind {other}"),
    };
    let mut st = State {
        clock,
        ticks_per_ms: ((1e6 / clock.ns_per_tick()) as u64).max(1),
        steps: BTreeMap::new(),
        next: vec![0; publishers],
        seen: vec![false; publishers],
        ended: vec![None; publishers],
        loss_pending: false,
        report: SubReport {
            index,
            ..SubReport::default()
        },
        position: 0,
        slow_ns: num(slow_ns),
        last_step: 0,
    };
    // Ready now; "joined" on the board once the subscription is connected
    // (a node subscription attaches at its first polls, after the
    // publisher has made the channel), which the publishers wait for.
    println!("ready");
    let joined = words
        .get(JOINED + index)
        .expect("a joined word per subscriber");
    let mut announced = false;
    // Alone on its core: spin. Sharing it: weft's backoff, parking at most
    // 50 us (a sched_yield between spinning processes hands the core over
    // only at the end of a time slice, milliseconds).
    let mut idler = weft::Idler::new(if yield_core == "1" {
        weft::IdleStrategy::Backoff {
            spins: 10,
            yields: 0,
            min_park: std::time::Duration::from_micros(1),
            max_park: std::time::Duration::from_micros(50),
        }
    } else {
        weft::IdleStrategy::BusySpin
    });
    let mut published = 0u64;
    while !st.done() {
        let t0 = ticks();
        let n = match &mut source {
            Source::Spsc(rx) => match rx.poll(256, |f| st.message(f.payload(), ticks())) {
                Ok(n) => n,
                Err(PollError::Closed) => break,
                Err(e) => panic!("stress-sub: poll: {e}"),
            },
            Source::Node { node, sub, work } => {
                if *work {
                    node.do_work();
                }
                sub.poll(256, |e| match e {
                    Event::Message(m) => st.message(m, ticks()),
                    Event::Loss { .. } => {
                        st.report.loss_events += 1;
                        st.loss_pending = true;
                    }
                    Event::NewSession { .. } | Event::PublisherGone { .. } => {}
                })
                .unwrap_or_else(|e| panic!("stress-sub: poll: {e}"))
            }
        };
        if !announced {
            let connected = match &source {
                Source::Spsc(_) => true,
                Source::Node { sub, .. } => sub.is_connected(),
            };
            if connected {
                announced = true;
                joined.store(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if n > 0 {
            let last = st.last_step;
            if let Some(acc) = st.steps.get_mut(&last) {
                acc.busy_ticks += ticks().wrapping_sub(t0);
            }
            idler.idle(n);
            if st.position - published >= 256 {
                progress.store(st.position, std::sync::atomic::Ordering::Relaxed);
                published = st.position;
            }
        } else {
            if published != st.position {
                progress.store(st.position, std::sync::atomic::Ordering::Relaxed);
                published = st.position;
            }
            idler.idle(0);
        }
    }
    progress.store(st.position, std::sync::atomic::Ordering::Relaxed);
    // A UDP subscriber's last status messages tell the publisher it has
    // everything: keep the node working a moment.
    if let Source::Node {
        node, work: true, ..
    } = &mut source
    {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(100);
        while std::time::Instant::now() < until {
            node.do_work();
        }
    }
    let mut report = st.report;
    report.sent = st.ended.iter().map(|e| e.unwrap_or(0)).collect();
    for (step, mut acc) in st.steps {
        let last = acc.last_tick;
        acc.close_window(last);
        acc.window_p99s.sort_unstable();
        let window_p99_ns = acc
            .window_p99s
            .get(acc.window_p99s.len() / 2)
            .copied()
            .unwrap_or_else(|| acc.hist.value_at_quantile(0.99));
        report.steps.push(SubStep {
            window_p99_ns,
            step,
            count: acc.count,
            first_tick: acc.first_tick,
            last_tick: acc.last_tick,
            p50_ns: acc.hist.value_at_quantile(0.5),
            p99_ns: acc.hist.value_at_quantile(0.99),
            p999_ns: acc.hist.value_at_quantile(0.999),
            max_ns: acc.hist.max(),
            busy_ticks: acc.busy_ticks,
            timeline: acc.timeline,
        });
    }
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
}
