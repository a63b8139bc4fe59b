//! The demo workload of `docs/rebalance.md`: one node whose four pipeline
//! tasks all run on agent 0 (core 0) though it has a second agent on core 1,
//! so `weft-rebalance` has something to even out. Start two of them:
//!
//! ```text
//! cargo build --release -p weft-rebalance --example skewed_pipeline
//! target/release/examples/skewed_pipeline --dir /tmp/rb-demo &
//! target/release/examples/skewed_pipeline --dir /tmp/rb-demo &
//! weft-rebalance collect --dir /tmp/rb-demo --window 3 --out /tmp/rb-demo/c.jsonl
//! ```
//!
//! Each task spins a known share of every millisecond (0.1, 0.075, 0.05 and
//! 0.025 of a core with the default `--scale 2`: 0.25 of a core per node)
//! and passes numbered messages down the pipeline; the last stage counts
//! any number out of order in the node's counters (type 9001), so a task
//! move that lost or repeated a message would show.
//!
//! Flags: `--dir DIR` (required), `--scale N` (divides every task's cost;
//! default 2, for two nodes on two cores), `--seconds S` (how long it runs;
//! default 600), `--name NAME` (default `skewed`).

use std::time::{Duration, Instant};

use weft::weft_counters::Counter;
use weft::{Node, NodeConfig, Task, ThreadingMode};
use weft_shm::spsc;

/// Counter types of the demo's own pipeline counters (not weft's).
const SEQUENCE_ERRORS: u32 = 9001;
const SEQUENCE_RECEIVED: u32 = 9002;

/// A task of known cost and a stage of a message pipeline: every
/// millisecond it spins for `spin`; on every call it passes messages on.
/// The first stage makes a numbered message per turn, the middle ones
/// forward, the last checks that the numbers come in order, none missing
/// or repeated, whichever agents the stages run on.
struct Paced {
    name: String,
    spin: Duration,
    next: Instant,
    input: Option<spsc::Consumer>,
    output: Option<spsc::Producer>,
    /// First stage: the next number to send. Last: the next expected.
    seq: u64,
    /// Last stage: (errors, received).
    check: Option<(Counter, Counter)>,
}

impl Task for Paced {
    fn name(&self) -> &str {
        &self.name
    }

    fn timer_in(&self) -> Option<Duration> {
        Some(self.next.saturating_duration_since(Instant::now()))
    }

    fn do_work(&mut self, _now_ns: u64) -> usize {
        let mut work = 0;
        // Pass on what came in (a message is taken only when it can go on).
        if let Some(input) = &mut self.input {
            for _ in 0..64 {
                let (out, seq, check) = (&mut self.output, &mut self.seq, &self.check);
                let mut moved = false;
                let claim = match out {
                    Some(o) => match o.try_claim(8, 1) {
                        Ok(c) => Some(c),
                        Err(_) => break,
                    },
                    None => None,
                };
                let mut claim = claim;
                let _ = input.poll(1, |f| {
                    let v = u64::from_le_bytes(f.payload().try_into().unwrap_or_default());
                    if let Some(c) = &mut claim {
                        c.payload_mut().copy_from_slice(&v.to_le_bytes());
                    }
                    if let Some((errors, received)) = check {
                        if v != *seq {
                            errors.add(1);
                        }
                        received.add(1);
                        *seq = v + 1;
                    }
                    moved = true;
                });
                if !moved {
                    break; // the claim drops uncommitted: abandoned
                }
                if let Some(c) = claim {
                    c.commit();
                }
                work += 1;
            }
        }
        let now = Instant::now();
        if now < self.next {
            return work;
        }
        if self.input.is_none() {
            if let Some(o) = &mut self.output {
                if o.offer(1, &self.seq.to_le_bytes()).is_ok() {
                    self.seq += 1;
                }
            }
        }
        while Instant::now() < now + self.spin {
            std::hint::spin_loop();
        }
        self.next = (self.next + Duration::from_millis(1)).max(now);
        work + 1
    }
}

const USAGE: &str = "skewed_pipeline --dir DIR [--scale N] [--seconds S] [--name NAME]";

fn main() {
    let mut dir = None;
    let (mut scale, mut seconds, mut name) = (2u64, 600u64, "skewed".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("usage: {USAGE}");
            return;
        }
        let value = args
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let number = |v: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| fail(&format!("{flag} {v:?}: expected a number")))
        };
        match flag.as_str() {
            "--dir" => dir = Some(value),
            "--scale" => scale = number(&value).max(1),
            "--seconds" => seconds = number(&value),
            "--name" => name = value,
            other => fail(&format!("unknown flag {other}")),
        }
    }
    let dir = dir.unwrap_or_else(|| fail("--dir is required"));
    let node = Node::new(NodeConfig {
        dir: dir.into(),
        agents: 2,
        cores: vec![0, 1],
        threading: ThreadingMode::Dedicated,
        name,
        ..NodeConfig::default()
    })
    .unwrap_or_else(|e| fail(&e.to_string()));
    // The four stages of the pipeline, joined by three rings.
    let rings: Vec<_> = (0..3)
        .map(|_| spsc::channel(spsc::SpscConfig::new(64 * 1024)).expect("a heap ring"))
        .collect();
    let (mut outputs, mut inputs): (Vec<_>, Vec<_>) = rings.into_iter().unzip();
    let counters = node.counters().clone();
    for (i, us) in [200u64 / scale, 150 / scale, 100 / scale, 50 / scale]
        .into_iter()
        .enumerate()
    {
        let last = i == 3;
        let check = last.then(|| {
            (
                counters
                    .allocate(SEQUENCE_ERRORS, 0, "pipeline sequence errors")
                    .expect("a counter record"),
                counters
                    .allocate(SEQUENCE_RECEIVED, 0, "pipeline messages received")
                    .expect("a counter record"),
            )
        });
        node.add_task(
            0,
            Box::new(Paced {
                name: format!("paced-{us}us"),
                spin: Duration::from_micros(us),
                next: Instant::now() + Duration::from_millis(i as u64),
                input: (i > 0).then(|| inputs.remove(0)),
                output: (!last).then(|| outputs.remove(0)),
                seq: 0,
                check,
            }),
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(seconds));
}

fn fail(why: &str) -> ! {
    eprintln!("error: {why}\nusage: {USAGE}");
    std::process::exit(2)
}
