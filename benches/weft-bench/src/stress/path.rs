//! One stressed path: its publisher threads (in this process, pinned to
//! core 0), its subscriber processes (and, for the gateway path, the
//! gateway process) on the other core, and the steps of its run: a warm-up,
//! the ramp, the overload, the recovery, and optionally the bursts.
//!
//! Open loop: a publisher sends on a fixed schedule whatever happens
//! downstream, each message stamped with the time it was *due*; a message
//! the path refuses (back-pressure) is retried until taken, and the wait
//! shows in its latency and in every later one (coordinated omission
//! corrected). What the schedule asked for and the publisher could not
//! send by the step's end is counted, not sent: the application's queue.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use weft::{Node, NodeConfig, Publication, PublishError, ThreadingMode};
use weft_shm::{spsc, ClaimError, Region, ShmOptions, Words};

use super::analysis::{self, Step};
use super::subscriber::SubReport;
use super::wire::{Stamp, DATA, END, STAMP_LEN};
use super::Preset;
use crate::clock::{ticks, Clock};
use crate::pin::pin;

/// The ring of the shared-memory paths: 1 MiB, so a backlog of a few
/// thousand messages fits, as a trading host's rings would hold.
pub const RING_BYTES: usize = 1 << 20;

/// What is stressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// weft-shm's SPSC ring between two processes.
    Spsc,
    /// A `shm:` channel (the one-publisher broadcast ring) to N subscriber
    /// processes.
    Broadcast(usize),
    /// A `shm:…?publishers=many` channel: P publisher threads, one
    /// subscriber process.
    Many(usize),
    /// A `udp://` multicast channel on 127.0.0.1 to N subscriber processes.
    Udp(usize),
    /// A `udp://` channel into an inbound gateway process, which
    /// republishes into a `shm:` ring, read by one subscriber process.
    Gateway,
}

impl Kind {
    pub fn name(self) -> String {
        match self {
            Kind::Spsc => "shm-spsc".into(),
            Kind::Broadcast(n) => format!("shm-broadcast-{n}"),
            Kind::Many(p) => format!("shm-many-{p}"),
            Kind::Udp(n) => format!("udp-{n}"),
            Kind::Gateway => "gateway".into(),
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        let num = |p: &str| name.strip_prefix(p).and_then(|n| n.parse().ok());
        match name {
            "shm-spsc" => Some(Kind::Spsc),
            "gateway" => Some(Kind::Gateway),
            _ => num("shm-broadcast-")
                .filter(|&n: &usize| (1..=64).contains(&n))
                .map(Kind::Broadcast)
                .or_else(|| {
                    num("shm-many-")
                        .filter(|n| (1..=16).contains(n))
                        .map(Kind::Many)
                })
                .or_else(|| num("udp-").filter(|n| (1..=16).contains(n)).map(Kind::Udp)),
        }
    }

    fn subscribers(self) -> usize {
        match self {
            Kind::Broadcast(n) | Kind::Udp(n) => n,
            _ => 1,
        }
    }

    fn publishers(self) -> usize {
        match self {
            Kind::Many(p) => p,
            _ => 1,
        }
    }

    /// Shared-memory paths are compared with the cache-line floor, the
    /// others with the UDP one.
    pub fn floor(self) -> crate::harness::Floor {
        match self {
            Kind::Udp(_) | Kind::Gateway => crate::harness::Floor::Udp,
            _ => crate::harness::Floor::Shm,
        }
    }
}

/// How a publisher sends.
enum Sink {
    Spsc(spsc::Producer),
    /// One node's publications: one per lane this thread drives.
    Node {
        node: Box<Node>,
        publs: Vec<Publication>,
        work: bool,
    },
}

impl Sink {
    /// Offers once on `lane` (one of this thread's publications):
    /// `Ok(false)` when refused for back-pressure (try again).
    #[inline]
    fn offer(&mut self, lane: usize, msg: &[u8]) -> Result<bool, String> {
        match self {
            Sink::Spsc(p) => match p.offer(1, msg) {
                Ok(()) => Ok(true),
                Err(ClaimError::Full) => Ok(false),
                Err(e) => Err(e.to_string()),
            },
            Sink::Node { publs, .. } => match publs[lane].offer(msg) {
                Ok(()) => Ok(true),
                Err(PublishError::BackPressured | PublishError::NotConnected) => Ok(false),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// The node's work (a UDP publication's sending and repairs).
    #[inline]
    fn work(&mut self) {
        if let Sink::Node {
            node, work: true, ..
        } = self
        {
            node.do_work();
        }
    }

    fn connected(&mut self) -> bool {
        match self {
            Sink::Spsc(_) => true,
            Sink::Node { publs, .. } => publs.iter().all(Publication::is_connected),
        }
    }
}

/// One step as a publisher thread is told it.
#[derive(Clone, Copy, Debug)]
struct Order {
    step: u32,
    /// This publisher's rate (the path's over the publishers).
    rate: f64,
    secs: f64,
    /// Wait for the subscribers to catch up before the next step (not
    /// after the overload or a burst: what follows starts with their
    /// backlog).
    drain: bool,
    /// Send every message the schedule asked for, past the step's end if
    /// need be (the overload, bursts), rather than giving up at the end.
    keep_schedule: bool,
    /// The session's last step: END follows.
    last: bool,
}

/// A publisher's account of one step.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    scheduled: u64,
    sent: u64,
    backpressure: u64,
    backpressured_messages: u64,
    backlog_high_water: u64,
    drain_ms: f64,
    /// A step that keeps its schedule (overload, burst): how long past its
    /// end the publisher took to send what it had been asked to, ms.
    overrun_ms: f64,
}

/// The state the publisher threads share.
struct Shared {
    /// DATA messages each publisher has sent.
    sent: Vec<AtomicU64>,
    /// The subscribers' positions (the sum of their next sequence numbers).
    board: Words,
    subscribers: usize,
    clock: Clock,
    barrier: Barrier,
}

impl Shared {
    fn total_sent(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    fn slowest(&self) -> u64 {
        (0..self.subscribers)
            .map(|i| self.board.get(i).map_or(0, |w| w.load(Ordering::Relaxed)))
            .min()
            .unwrap_or(0)
    }
}

/// A publisher thread: makes its sink, then runs the steps it is sent,
/// answering each with what it sent; after the last, sends END and keeps
/// its node working until `stop`.
/// What a publisher thread is given.
struct PublisherArgs {
    /// The first of this thread's lanes (publishers, in the stamps).
    first_lane: usize,
    /// How many lanes it drives, round robin: on a machine with too few
    /// cores for a thread per publisher, one thread drives them all.
    lanes: usize,
    core: usize,
    shared: Arc<Shared>,
    orders: mpsc::Receiver<Order>,
    done: mpsc::Sender<Result<Sent, String>>,
    bytes: usize,
    stop: Arc<AtomicU64>,
    /// Several publishers share core 0.
    many: bool,
}

fn publisher(make: impl FnOnce() -> Sink, a: PublisherArgs) {
    let PublisherArgs {
        first_lane,
        lanes,
        core,
        shared,
        orders,
        done,
        bytes,
        stop,
        many,
    } = a;
    pin(core);
    let mut sink = make();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sink.connected() {
        if Instant::now() > deadline {
            let _ = done.send(Err("the publication never connected".into()));
            return;
        }
        sink.work();
        std::thread::sleep(Duration::from_micros(200));
    }
    // Every subscriber joined (a late one would start mid-stream).
    while (0..shared.subscribers).any(|i| {
        shared
            .board
            .get(super::subscriber::JOINED + i)
            .is_none_or(|w| w.load(Ordering::Relaxed) == 0)
    }) {
        if Instant::now() > deadline {
            let _ = done.send(Err("the subscribers never all joined".into()));
            return;
        }
        sink.work();
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = done.send(Ok(Sent::default()));
    let mut msg = vec![0x5au8; bytes.max(STAMP_LEN)];
    // Per lane: the next sequence number.
    let mut seqs = vec![0u64; lanes];
    let mut lane = 0usize;
    let clock = shared.clock;
    let ticks_per_s = 1e9 / clock.ns_per_tick();
    while let Ok(order) = orders.recv() {
        let mut out = Sent::default();
        let interval = ticks_per_s / order.rate.max(1.0);
        let start = ticks();
        let end = start + (order.secs * ticks_per_s) as u64;
        let mut due = start as f64;
        let mut failed = None;
        'step: while (due as u64) < end {
            let due_tick = due as u64;
            loop {
                let now = ticks();
                if now >= due_tick {
                    break;
                }
                // Several publishers share core 0: sleep through a long
                // wait so the others run (a yield would not hand over the
                // core before the end of a time slice).
                let wait_us = clock.ns(now, due_tick) / 1000;
                if many && wait_us > 80 {
                    std::thread::sleep(Duration::from_micros(wait_us - 60));
                } else {
                    sink.work();
                    std::hint::spin_loop();
                }
            }
            // A ramp step gives up at its end what it could not send (the
            // rate it sustained is the point); a step that keeps its
            // schedule (the overload, a burst) sends it all, as an
            // application works through its queue, within ten times its
            // length.
            let now = ticks();
            if now >= end && (!order.keep_schedule || now >= end + 10 * (end - start)) {
                break;
            }
            Stamp {
                seq: seqs[lane],
                due: due_tick,
                step: order.step,
                publisher: (first_lane + lane) as u16,
                kind: DATA,
            }
            .write(&mut msg);
            let mut refused = 0u64;
            loop {
                match sink.offer(lane, &msg) {
                    Ok(true) => break,
                    Ok(false) => {
                        refused += 1;
                        sink.work();
                        if many && refused % 64 == 0 {
                            std::thread::sleep(Duration::from_micros(1));
                        }
                        if ticks() >= end + (ticks_per_s as u64) * 10 {
                            failed = Some("a message waited 10 s for room".to_string());
                            break 'step;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break 'step;
                    }
                }
            }
            out.backpressure += refused;
            out.backpressured_messages += u64::from(refused > 0);
            seqs[lane] += 1;
            out.sent += 1;
            shared.sent[first_lane + lane].store(seqs[lane], Ordering::Relaxed);
            lane = (lane + 1) % lanes;
            if out.sent % 256 == 0 {
                let backlog = shared.total_sent().saturating_sub(shared.slowest());
                out.backlog_high_water = out.backlog_high_water.max(backlog);
            }
            due += interval;
        }
        out.scheduled = ((order.secs * order.rate) as u64).max(out.sent);
        out.overrun_ms = clock.ns(end, ticks().max(end)) as f64 / 1e6;
        if let Some(e) = failed {
            let _ = done.send(Err(e));
            return;
        }
        // Every publisher has sent its share: wait for the subscribers to
        // catch up (the drain), keeping the node working.
        shared.barrier.wait();
        let t0 = Instant::now();
        let total = shared.total_sent();
        while order.drain && shared.slowest() < total && t0.elapsed() < Duration::from_secs(20) {
            let backlog = total.saturating_sub(shared.slowest());
            out.backlog_high_water = out.backlog_high_water.max(backlog);
            sink.work();
            std::thread::yield_now();
        }
        out.drain_ms = t0.elapsed().as_secs_f64() * 1e3;
        shared.barrier.wait();
        let last = order.last;
        let _ = done.send(Ok(out));
        if last {
            break;
        }
    }
    // END on every lane, then serve (UDP: repairs and status) until told
    // to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (l, seq) in seqs.iter().enumerate() {
        Stamp {
            seq: *seq,
            due: 0,
            step: 0,
            publisher: (first_lane + l) as u16,
            kind: END,
        }
        .write(&mut msg);
        while !matches!(sink.offer(l, &msg), Ok(true)) && Instant::now() < deadline {
            sink.work();
            std::thread::yield_now();
        }
    }
    while stop.load(Ordering::Relaxed) == 0 {
        sink.work();
        std::thread::yield_now();
    }
    if let Sink::Node { node, publs, .. } = sink {
        drop(publs);
        let _ = node.close();
    }
}

/// A child process of the run, with its output lines.
struct ChildProc {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    what: String,
}

impl ChildProc {
    fn spawn(args: &[String], what: String) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("__child")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{what}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(out).lines(),
            what,
        })
    }

    /// Waits for the line "ready".
    fn ready(&mut self) -> Result<(), String> {
        match self.lines.next() {
            Some(Ok(l)) if l == "ready" => Ok(()),
            other => Err(format!("{} did not get ready: {other:?}", self.what)),
        }
    }

    /// The last line it prints, once it exits successfully.
    fn finish(mut self) -> Result<String, String> {
        let mut last = String::new();
        for l in self.lines.by_ref() {
            last = l.map_err(|e| e.to_string())?;
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("{} failed: {status}", self.what));
        }
        Ok(last)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Harmless on an exited child; ends a stuck one.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The machine's cores, counted from /proc/cpuinfo (`available_parallelism`
/// counts only the cores this thread may use, and the floor probe pins it
/// to core 0).
fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(2)
        .max(1)
}

/// A free UDP port and a group address of our range for it.
fn udp_uri() -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_or(40_700, |a| a.port());
    format!(
        "udp://239.77.56.{}:{port}?interface=127.0.0.1",
        port % 200 + 1
    )
}

/// Everything one path's run produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathResult {
    pub path: String,
    pub subscribers: usize,
    pub publishers: usize,
    pub msg_bytes: usize,
    pub steps: Vec<Step>,
    pub baseline_p99_ns: u64,
    /// The 90th percentile over the first three ramp steps' milliseconds of
    /// each millisecond's worst latency: what recovery is judged against.
    pub calm_worst_ns: u64,
    pub knee_per_s: f64,
    pub saturation_per_s: f64,
    /// The floor of this path's kind, probed before and after it, ns.
    pub floor_before_ns: u64,
    pub floor_after_ns: u64,
    pub overload: Option<Step>,
    pub recovery: Option<Step>,
    /// Milliseconds from the end of the overload until every millisecond's
    /// worst latency was back within the knee factor of
    /// [`calm_worst_ns`](Self::calm_worst_ns) for 10 ms in a row (`None`:
    /// not within the recovery step).
    pub recovery_ms: Option<f64>,
    /// Per burst: its step, the burst and the base step after it, and how
    /// long latency took to come back after it, ms.
    pub bursts: Vec<Burst>,
    pub silent_missing: u64,
    pub reported_missing: u64,
    pub reordered: u64,
    pub loss_events: u64,
}

/// One burst of the burst scenario.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Burst {
    pub label: String,
    pub burst: Step,
    pub after: Step,
    pub recovery_ms: Option<f64>,
}

/// The plan of steps after the ramp, which needs the ramp's figures.
enum Phase {
    Warmup,
    Ramp,
    Overload,
    Recovery,
    Base,
    Burst(String),
}

impl Phase {
    fn name(&self) -> String {
        match self {
            Phase::Warmup => "warmup".into(),
            Phase::Ramp => "ramp".into(),
            Phase::Overload => "overload".into(),
            Phase::Recovery => "recovery".into(),
            Phase::Base => "base".into(),
            Phase::Burst(_) => "burst".into(),
        }
    }
}

/// The processes and threads of one session of a path: subscribers (and
/// the gateway) started, publishers connected; steps are run one by one
/// ([`Session::step`]), then [`Session::finish`] collects every account.
struct Session {
    kind: Kind,
    clock: Clock,
    bytes: usize,
    /// Publisher threads (each gets the rate over their number).
    pubs: usize,
    orders: Vec<mpsc::Sender<Order>>,
    answers: Vec<mpsc::Receiver<Result<Sent, String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicU64>,
    subs: Vec<ChildProc>,
    others: Vec<ChildProc>,
    steps: Vec<(Phase, f64, Sent)>,
}

impl Session {
    fn start(
        kind: Kind,
        preset: &Preset,
        clock: Clock,
        slow_ns: u64,
        tag: &str,
    ) -> Result<Self, String> {
        let opts = ShmOptions::default();
        let subs = kind.subscribers();
        let pubs = kind.publishers();
        let board_name = format!("{tag}-board");
        let board =
            Region::create_words(&opts, &board_name, 1024, |_| {}).map_err(|e| e.to_string())?;
        let bytes = preset.msg_bytes;
        let shm_uri = format!("shm:{tag}?capacity={RING_BYTES}");
        let (sub_kind, sub_target, pub_target) = match kind {
            Kind::Spsc => ("spsc", tag.to_string(), tag.to_string()),
            Kind::Broadcast(_) => ("shm", shm_uri.clone(), shm_uri.clone()),
            Kind::Many(_) => {
                let u = format!("shm:{tag}?capacity={RING_BYTES}&publishers=many");
                ("shm", u.clone(), u)
            }
            Kind::Udp(_) => {
                let u = udp_uri();
                ("udp", u.clone(), u)
            }
            Kind::Gateway => ("shm", shm_uri.clone(), udp_uri()),
        };
        // A publisher thread per core while cores last (core 0 up), the
        // subscribers (and the gateway) on the next core; with too few
        // cores one thread drives every publisher, round robin.
        let cores = machine_cores();
        let threads_n = if cores > pubs { pubs } else { 1 };
        let sub_core = threads_n.min(cores - 1);
        // Several processes on the subscribers' core share it by backing off.
        let crowded = subs + usize::from(kind == Kind::Gateway) > 1;
        // The SPSC ring is made before its consumer attaches.
        let mut spsc_tx = if kind == Kind::Spsc {
            let mut cfg = spsc::SpscConfig::new(RING_BYTES);
            cfg.max_payload = Some(bytes.max(STAMP_LEN).next_multiple_of(8).max(RING_BYTES / 8));
            Some(spsc::Producer::create(&opts, tag, &cfg).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let mut others = Vec::new();
        if kind == Kind::Gateway {
            let mut gw = ChildProc::spawn(
                &[
                    "stress-gateway".into(),
                    pub_target.clone(),
                    shm_uri.clone(),
                    sub_core.to_string(),
                ],
                "the gateway".into(),
            )?;
            gw.ready()?;
            others.push(gw);
        }
        let mut sub_procs = Vec::new();
        for i in 0..subs {
            let mut c = ChildProc::spawn(
                &[
                    "stress-sub".into(),
                    sub_kind.into(),
                    sub_target.clone(),
                    sub_core.to_string(),
                    i.to_string(),
                    board_name.clone(),
                    pubs.to_string(),
                    clock.ns_per_tick().to_string(),
                    if crowded { "1" } else { "0" }.into(),
                    slow_ns.to_string(),
                ],
                format!("subscriber {i}"),
            )?;
            c.ready()?;
            sub_procs.push(c);
        }
        let shared = Arc::new(Shared {
            sent: (0..pubs).map(|_| AtomicU64::new(0)).collect(),
            board,
            subscribers: subs,
            clock,
            barrier: Barrier::new(threads_n),
        });
        let stop = Arc::new(AtomicU64::new(0));
        let mut orders = Vec::new();
        let mut answers = Vec::new();
        let mut threads = Vec::new();
        let lanes = pubs / threads_n;
        for p in 0..threads_n {
            let (otx, orx) = mpsc::channel();
            let (dtx, drx) = mpsc::channel();
            orders.push(otx);
            answers.push(drx);
            let shared = shared.clone();
            let stop = stop.clone();
            let target = pub_target.clone();
            let spsc = spsc_tx.take();
            let many = threads_n > 1;
            threads.push(std::thread::spawn(move || {
                let make = move || match spsc {
                    Some(tx) => Sink::Spsc(tx),
                    None => {
                        let mut node = Node::new(NodeConfig {
                            threading: ThreadingMode::Invoker,
                            control_ring: false,
                            name: format!("stress-pub-{p}"),
                            ..NodeConfig::default()
                        })
                        .expect("stress publisher node");
                        let publs = (0..lanes)
                            .map(|_| node.publication(&target, 1).expect("stress publication"))
                            .collect();
                        let work = target.starts_with("udp:");
                        Sink::Node {
                            node: Box::new(node),
                            publs,
                            work,
                        }
                    }
                };
                publisher(
                    make,
                    PublisherArgs {
                        first_lane: p * lanes,
                        lanes,
                        core: p,
                        shared,
                        orders: orx,
                        done: dtx,
                        bytes,
                        stop,
                        many,
                    },
                );
            }));
        }
        for a in &answers {
            a.recv_timeout(Duration::from_secs(60))
                .map_err(|_| "a publisher thread did not start".to_string())??;
        }
        Ok(Self {
            kind,
            clock,
            bytes,
            pubs: threads_n,
            orders,
            answers,
            threads,
            stop,
            subs: sub_procs,
            others,
            steps: Vec::new(),
        })
    }

    /// Runs one step at `rate` for `secs`; `last` ends the session's
    /// sending (END follows).
    fn step(&mut self, phase: Phase, rate: f64, secs: f64, last: bool) -> Result<Sent, String> {
        let step = self.steps.len() as u32;
        let queueing = matches!(phase, Phase::Overload | Phase::Burst(_));
        let (drain, keep_schedule) = (!queueing, queueing);
        for o in &self.orders {
            o.send(Order {
                step,
                rate: rate / self.pubs as f64,
                secs,
                drain,
                keep_schedule,
                last,
            })
            .map_err(|_| "a publisher thread stopped".to_string())?;
        }
        let mut total = Sent::default();
        for a in &self.answers {
            let s = a
                .recv_timeout(Duration::from_secs(120))
                .map_err(|_| "a publisher thread did not answer".to_string())??;
            total.scheduled += s.scheduled;
            total.sent += s.sent;
            total.backpressure += s.backpressure;
            total.backpressured_messages += s.backpressured_messages;
            total.backlog_high_water = total.backlog_high_water.max(s.backlog_high_water);
            total.drain_ms = total.drain_ms.max(s.drain_ms);
            total.overrun_ms = total.overrun_ms.max(s.overrun_ms);
        }
        self.steps.push((phase, rate, total));
        Ok(total)
    }

    /// Collects the subscribers' accounts, stops everything, and merges
    /// per step (the slowest subscriber's rate, the worst latencies).
    fn finish(self) -> Result<(Vec<Step>, Vec<SubReport>), String> {
        let mut reports = Vec::new();
        for c in self.subs {
            let line = c.finish()?;
            let r: SubReport =
                serde_json::from_str(&line).map_err(|e| format!("a subscriber's report: {e}"))?;
            reports.push(r);
        }
        self.stop.store(1, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .map_err(|_| "a publisher thread panicked".to_string())?;
        }
        for c in self.others {
            c.finish()?;
        }
        let clock = self.clock;
        let mut merged = Vec::new();
        for (no, (phase, offered, sent)) in self.steps.iter().enumerate() {
            let no = no as u32;
            let mut s = Step {
                step: no,
                phase: phase.name(),
                offered_per_s: *offered,
                scheduled: sent.scheduled,
                sent: sent.sent,
                backpressure: sent.backpressure,
                backpressured_messages: sent.backpressured_messages,
                backlog_high_water: sent.backlog_high_water,
                drain_ms: sent.drain_ms,
                overrun_ms: sent.overrun_ms,
                achieved_per_s: f64::MAX,
                ..Step::default()
            };
            for r in &reports {
                let Some(ss) = r.steps.iter().find(|x| x.step == no) else {
                    s.achieved_per_s = 0.0;
                    continue;
                };
                let secs = clock.ns(ss.first_tick, ss.last_tick) as f64 / 1e9;
                let rate = if ss.count > 1 && secs > 0.0 {
                    (ss.count - 1) as f64 / secs
                } else {
                    0.0
                };
                s.achieved_per_s = s.achieved_per_s.min(rate);
                s.seconds = s.seconds.max(secs);
                s.p50_ns = s.p50_ns.max(ss.p50_ns);
                s.p99_ns = s.p99_ns.max(ss.p99_ns);
                s.window_p99_ns = s.window_p99_ns.max(ss.window_p99_ns);
                s.p999_ns = s.p999_ns.max(ss.p999_ns);
                s.max_ns = s.max_ns.max(ss.max_ns);
                if secs > 0.0 {
                    s.duty = s.duty.max(clock.ns(0, ss.busy_ticks) as f64 / 1e9 / secs);
                }
                if s.timeline.len() < ss.timeline.len() {
                    s.timeline.resize(ss.timeline.len(), 0);
                }
                for (i, (worst, _)) in ss.timeline.iter().enumerate() {
                    s.timeline[i] = s.timeline[i].max(*worst);
                }
            }
            if s.achieved_per_s == f64::MAX {
                s.achieved_per_s = 0.0;
            }
            if matches!(self.kind, Kind::Spsc | Kind::Broadcast(_) | Kind::Many(_)) {
                // A frame: the message, a header of 8 (SPSC) or 16 bytes, aligned.
                let frame = (self.bytes.max(STAMP_LEN) + 16).next_multiple_of(8);
                s.ring_fill_high_water =
                    (s.backlog_high_water as f64 * frame as f64) / RING_BYTES as f64;
            }
            s.saturated = analysis::saturated(&s);
            if let Phase::Burst(label) = phase {
                s.phase = format!("burst {label}");
            }
            merged.push(s);
        }
        Ok((merged, reports))
    }
}

/// Runs one path: a session of warm-up, ramp, overload and recovery; then,
/// with bursts, a second session of bursts sized by the first's knee.
pub fn run(kind: Kind, preset: &Preset, clock: Clock, slow_ns: u64) -> Result<PathResult, String> {
    let floor = kind.floor();
    let floor_before_ns = floor.probe(clock);
    let tag = format!("stress-{}-{}", std::process::id(), kind.name());
    let mut s = Session::start(kind, preset, clock, slow_ns, &tag)?;
    s.step(Phase::Warmup, preset.start_rate, preset.step_secs, false)?;
    // The ramp: up by `factor` until two steps in a row fell behind.
    let mut rate = preset.start_rate;
    let mut behind = 0;
    let mut best_sent_rate: f64 = 0.0;
    for _ in 0..preset.max_steps {
        let st = s.step(Phase::Ramp, rate, preset.step_secs, false)?;
        best_sent_rate = best_sent_rate.max(st.sent as f64 / preset.step_secs);
        let fell_behind = (st.sent as f64) < analysis::SATURATED_BELOW * st.scheduled as f64
            || st.drain_ms > 1e3 * preset.step_secs;
        behind = if fell_behind { behind + 1 } else { 0 };
        if behind >= 2 {
            break;
        }
        rate *= preset.factor;
    }
    // Past saturation, then back to the low-load rate.
    s.step(
        Phase::Overload,
        1.2 * best_sent_rate,
        preset.overload_secs,
        false,
    )?;
    s.step(
        Phase::Recovery,
        preset.start_rate,
        preset.recovery_secs,
        true,
    )?;
    let (merged, mut reports) = s.finish()?;
    let ramp: Vec<Step> = merged
        .iter()
        .filter(|s| matches!(s.phase.as_str(), "warmup" | "ramp"))
        .cloned()
        .collect();
    let baseline = analysis::baseline_p99(&ramp);
    let knee = analysis::knee(&ramp);
    // Recovery compares each millisecond's worst latency with the same
    // statistic at low load, times the knee factor.
    let calm_worst_ns = analysis::calm_worst(&ramp);
    let threshold = (analysis::KNEE_FACTOR * calm_worst_ns as f64) as u64;
    let overload = merged.iter().find(|s| s.phase == "overload").cloned();
    let recovery = merged.iter().find(|s| s.phase == "recovery").cloned();
    // From the overload's end: the publisher's own queue first (its
    // overrun), then the recovery step until its latency is calm.
    let recovery_ms = recovery
        .as_ref()
        .and_then(|r| analysis::recovery_ms(&r.timeline, threshold))
        .map(|ms| ms + overload.as_ref().map_or(0.0, |o| o.overrun_ms));
    // Bursts, sized by the knee just found.
    let mut bursts = Vec::new();
    let with_bursts = preset.bursts
        && knee > 0.0
        && matches!(kind, Kind::Broadcast(1) | Kind::Udp(1) | Kind::Spsc);
    if with_bursts {
        let mut s = Session::start(kind, preset, clock, slow_ns, &format!("{tag}-bursts"))?;
        s.step(Phase::Warmup, preset.start_rate, preset.step_secs, false)?;
        let plan = [(5.0, 0.001), (5.0, 0.010), (20.0, 0.001), (20.0, 0.010)];
        s.step(Phase::Base, preset.start_rate, 0.1, false)?;
        for (i, (times, secs)) in plan.iter().enumerate() {
            let label = format!("{:.0} ms at {times:.0}x the knee", secs * 1e3);
            s.step(Phase::Burst(label), times * knee, *secs, false)?;
            s.step(Phase::Base, preset.start_rate, 0.2, i + 1 == plan.len())?;
        }
        let (steps, more) = s.finish()?;
        for (i, st) in steps.iter().enumerate() {
            let Some(label) = st.phase.strip_prefix("burst ") else {
                continue;
            };
            let Some(after) = steps.get(i + 1) else {
                continue;
            };
            // From the burst's end: the publisher's queue (its overrun),
            // then the base step until its latency is calm.
            let recovery_ms =
                analysis::recovery_ms(&after.timeline, threshold).map(|ms| ms + st.overrun_ms);
            bursts.push(Burst {
                label: label.to_string(),
                burst: st.clone(),
                after: after.clone(),
                recovery_ms,
            });
        }
        reports.extend(more);
    }
    let floor_after_ns = floor.probe(clock);
    let sum = |f: fn(&SubReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut steps_out = ramp;
    for st in &mut steps_out {
        st.timeline.clear();
    }
    Ok(PathResult {
        path: kind.name(),
        subscribers: kind.subscribers(),
        publishers: kind.publishers(),
        msg_bytes: preset.msg_bytes,
        knee_per_s: knee,
        saturation_per_s: analysis::saturation(&steps_out),
        baseline_p99_ns: baseline,
        calm_worst_ns,
        steps: steps_out,
        floor_before_ns,
        floor_after_ns,
        overload,
        recovery,
        recovery_ms,
        bursts,
        silent_missing: sum(|r| r.silent_missing),
        reported_missing: sum(|r| r.reported_missing),
        reordered: sum(|r| r.reordered),
        loss_events: sum(|r| r.loss_events),
    })
}

/// The gateway process of the gateway path (`__child stress-gateway UDP
/// SHM CORE`): receives the UDP stream once and republishes it into the
/// shared-memory channel; watches that channel for END, then lingers a
/// moment (repairs) and exits.
pub fn gateway(args: &[String]) {
    let [udp, shm, core] = args else {
        panic!("stress-gateway: unexpected arguments {args:?}");
    };
    pin(core.parse().expect("core"));
    let mut node = Node::new(NodeConfig {
        threading: ThreadingMode::Invoker,
        control_ring: false,
        name: "stress-gateway".into(),
        ..NodeConfig::default()
    })
    .expect("gateway node");
    let gw = node.gateway_in(udp, shm, 1).expect("gateway");
    let mut watch = node.subscription(shm, 1).expect("gateway watch");
    println!("ready");
    let mut ended = false;
    // It shares its core with the subscriber: back off, parking briefly.
    let mut idler = weft::Idler::new(weft::IdleStrategy::Backoff {
        spins: 10,
        yields: 0,
        min_park: Duration::from_micros(1),
        max_park: Duration::from_micros(50),
    });
    while !ended {
        let work = node.do_work();
        let n = watch
            .poll(256, |e| {
                if let weft::Event::Message(m) = e {
                    if Stamp::read(m).is_some_and(|s| s.kind == END) {
                        ended = true;
                    }
                }
            })
            .expect("gateway watch poll");
        idler.idle(work + n);
    }
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        node.do_work();
        std::thread::yield_now();
    }
    drop(gw);
}
