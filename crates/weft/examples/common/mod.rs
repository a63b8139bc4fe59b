//! Command-line handling shared by the examples: `--name value` pairs, and the
//! node settings every example takes.
#![allow(dead_code)] // each example uses part of it

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// `--key value` pairs; `--help` prints the usage; exits with a usage
/// message on anything else, including a flag the usage does not list.
pub struct Args {
    map: HashMap<String, String>,
    usage: &'static str,
}

impl Args {
    pub fn parse(usage: &'static str) -> Self {
        let known: Vec<&str> = usage
            .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
            .filter_map(|w| w.strip_prefix("--"))
            .collect();
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            if k == "--help" || k == "-h" {
                println!("usage: {usage}");
                std::process::exit(0);
            }
            if k == "--version" {
                println!(
                    "{} (weft {})",
                    usage.split(' ').next().unwrap_or(""),
                    env!("CARGO_PKG_VERSION")
                );
                std::process::exit(0);
            }
            let Some(key) = k.strip_prefix("--") else {
                fail(usage, &format!("unexpected {k:?}"))
            };
            if !known.contains(&key) {
                fail(usage, &format!("unknown flag --{key}"));
            }
            let Some(v) = it.next() else {
                fail(usage, &format!("--{key} needs a value"))
            };
            map.insert(key.to_string(), v);
        }
        Self { map, usage }
    }

    /// `--rate N` (messages per second, 0: as fast as it goes) and
    /// `--duration S` (seconds): the pacer of a publishing loop, and the
    /// message count, `rate × duration` when both are given, else `count`.
    pub fn pacing(&self, count: u64) -> (Pacer, u64) {
        let rate: f64 = self.get("rate", 0.0);
        let duration: f64 = self.get("duration", 0.0);
        if !(rate.is_finite() && rate >= 0.0 && duration.is_finite() && duration >= 0.0) {
            fail(self.usage, "--rate and --duration are numbers, 0 or more");
        }
        if duration > 0.0 && rate == 0.0 {
            fail(
                self.usage,
                "--duration needs a --rate (messages per second)",
            );
        }
        let count = if duration > 0.0 {
            (rate * duration).round() as u64
        } else {
            count
        };
        (Pacer::new(rate), count)
    }

    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T
    where
        T::Err: std::fmt::Display,
    {
        match self.map.get(key) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|e| fail(self.usage, &format!("--{key} {v:?}: {e}"))),
        }
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.map
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// The node settings: `--config FILE`, then the environment's `WEFT_*`
    /// overrides, then `--dir`, `--threading`, `--idle`.
    pub fn node_config(&self) -> weft::NodeConfig {
        let cfg = match self.map.get("config") {
            Some(path) => weft::NodeConfig::from_toml_file(path.as_ref())
                .unwrap_or_else(|e| fail(self.usage, &e.to_string())),
            None => weft::NodeConfig::default(),
        };
        // WEFT_AGENTS, WEFT_IDLE, WEFT_UDP_RCVBUF ... (docs/config.md), then
        // the flags below.
        let mut cfg = cfg.with_env().unwrap_or_else(|e| fail(self.usage, &e));
        if let Some(d) = self.map.get("dir") {
            cfg.dir = d.into();
        }
        cfg.threading = self.get("threading", cfg.threading);
        cfg.idle = self.get("idle", cfg.idle);
        cfg
    }
}

/// Spaces messages `1 / rate` seconds apart (sleeping when more than a
/// millisecond early); a rate of 0 never waits.
pub struct Pacer {
    every: Option<Duration>,
    start: Instant,
    sent: u32,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Self {
            every: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Waits until the next message is due.
    pub fn wait(&mut self) {
        if let Some(every) = self.every {
            let due = self.start + every * self.sent;
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
            self.sent = self.sent.saturating_add(1);
        }
    }
}

pub fn fail(usage: &str, why: &str) -> ! {
    eprintln!("error: {why}\nusage: {usage}");
    std::process::exit(2)
}

/// Runs `step` (which returns whether it made progress) with the node's idle
/// strategy until it returns `Some`, doing the node's work itself in invoker
/// mode; gives up after `timeout`.
pub fn wait_for<T>(
    node: &mut weft::Node,
    timeout: Duration,
    what: &str,
    mut step: impl FnMut(&mut weft::Node) -> (usize, Option<T>),
) -> T {
    let mut idler = weft::Idler::new(app_idle().unwrap_or(node.config().idle));
    let start = Instant::now();
    loop {
        let mut work = 0;
        if node.config().threading == weft::ThreadingMode::Invoker {
            work += node.do_work();
        }
        let (w, done) = step(node);
        if let Some(t) = done {
            return t;
        }
        work += w;
        if start.elapsed() > timeout {
            eprintln!("error: timed out after {timeout:?} waiting for {what}");
            std::process::exit(1);
        }
        idler.idle(work);
    }
}

/// Keeps the node's work going for `d` (in invoker mode nothing else sends what
/// was offered last, or answers repair requests), then returns.
pub fn linger(node: &mut weft::Node, d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        if node.config().threading == weft::ThreadingMode::Invoker {
            node.do_work();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `--app-idle`: how the example's own thread waits (default: as the agents).
fn app_idle() -> Option<weft::IdleStrategy> {
    // Parsed once: the waits below ask for it on every message, and
    // collecting the arguments each time cost a round trip 150-300 ns.
    static APP_IDLE: std::sync::OnceLock<Option<weft::IdleStrategy>> = std::sync::OnceLock::new();
    *APP_IDLE.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let i = args.iter().position(|a| a == "--app-idle")?;
        args.get(i + 1)?.parse().ok()
    })
}

/// Waits for the event `f` picks (it returns `Some` for it) on `sub`, idling by
/// the app's strategy; a park step waits on the subscription itself, so the
/// agent that fills it wakes this thread (except in invoker mode, where this
/// thread is the agent and sleeps).
pub fn next_event<T>(
    node: &mut weft::Node,
    sub: &mut weft::Subscription,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut(weft::Event<'_>) -> Option<T>,
) -> T {
    let invoker = node.config().threading == weft::ThreadingMode::Invoker;
    let mut idler = weft::Idler::new(app_idle().unwrap_or(node.config().idle));
    let start = Instant::now();
    loop {
        let mut work = if invoker { node.do_work() } else { 0 };
        let mut out = None;
        work += sub
            .poll(1, |e| out = f(e))
            .unwrap_or_else(|e| fail("", &e.to_string()));
        if let Some(t) = out {
            return t;
        }
        if start.elapsed() > timeout {
            eprintln!("error: timed out after {timeout:?} waiting for {what}");
            std::process::exit(1);
        }
        match idler.step(work) {
            weft::IdleStep::None => {}
            weft::IdleStep::Spin => std::hint::spin_loop(),
            weft::IdleStep::Pause(n) => weft::idle::pause(n),
            weft::IdleStep::Yield => std::thread::yield_now(),
            weft::IdleStep::Park(d) if invoker => std::thread::sleep(d),
            weft::IdleStep::Park(d) => sub.park(d),
        }
    }
}
