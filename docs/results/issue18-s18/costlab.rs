// CPU cost per message of each side of a throughput loop, on one thread
// (issue 18, session 18): K messages offered, then all polled, repeated;
// each phase timed. Nothing crosses cores, so the VM's levels do not enter:
// what is left is the work each side does per message, the ceiling a
// two-core stream meets once line transfers are cheap. Not built by the
// project: copy to benches/weft-bench/examples/costlab.rs, then
//   BLOCK=3000 ROUNDS=1 cargo run --release -p weft-bench --example costlab -- spsc bcast api dis
// (BLOCK: steps of one design in a row before the next design's; 3000 runs
// each design's steps together, a smaller block interleaves them). The
// disruptor's row is the control: the VM's single-core speed also changes
// (by up to 1.6x here), so builds are compared in alternate runs, each
// against its own `dis` row (cost-ab.txt, costlab-*.txt).
#![allow(clippy::all, missing_docs)]

use std::time::Instant;

const K: u64 = 1024;
const ITERS: usize = 3000;

fn report(name: &str, mut p: Vec<f64>, mut c: Vec<f64>) {
    p.sort_by(f64::total_cmp);
    c.sort_by(f64::total_cmp);
    let q = |v: &Vec<f64>, f: f64| v[((v.len() - 1) as f64 * f) as usize];
    println!(
        "{name:8} producer {:5.2} ns/msg ({:5.2}-{:5.2})  consumer {:5.2} ns/msg ({:5.2}-{:5.2})",
        q(&p, 0.5),
        q(&p, 0.25),
        q(&p, 0.75),
        q(&c, 0.5),
        q(&c, 0.25),
        q(&c, 0.75)
    )
}

type Step = Box<dyn FnMut() -> (f64, f64)>;

fn run(
    name: &'static str,
    mut produce: impl FnMut(u64, &mut [u8; 64]) + 'static,
    mut consume: impl FnMut(&mut u64) + 'static,
) -> Step {
    let mut msg = [0xa5u8; 64];
    let mut seq = 0u64;
    let mut next = 0u64;
    Box::new(move || {
        let t0 = Instant::now();
        produce(seq, std::hint::black_box(&mut msg));
        let t1 = Instant::now();
        consume(&mut next);
        let t2 = Instant::now();
        seq += K;
        assert_eq!(next, seq, "{name}: every message read");
        (
            (t1 - t0).as_nanos() as f64 / K as f64,
            (t2 - t1).as_nanos() as f64 / K as f64,
        )
    })
}

/// The stepper of a raw weft ring: its producer `tx` offers each message
/// whole, its consumer `rx` checks each one's sequence number in place (the
/// SPSC and broadcast rings have the same `offer` and `poll`, not a trait).
macro_rules! ring_step {
    ($name:expr, $tx:expr, $rx:expr) => {{
        let (mut tx, mut rx) = ($tx, $rx);
        run(
            $name,
            move |seq, msg| {
                for s in seq..seq + K {
                    msg[..8].copy_from_slice(&s.to_le_bytes());
                    tx.offer(1, msg).unwrap();
                }
            },
            move |next| {
                rx.poll(usize::MAX, |f| {
                    assert_eq!(u64::from_le_bytes(f.payload()[..8].try_into().unwrap()), *next);
                    *next += 1;
                })
                .unwrap();
            },
        )
    }};
}

fn spsc() -> Step {
    use weft_shm::spsc::{self, SpscConfig};
    let (tx, rx) = spsc::channel(SpscConfig::new(256 * 1024)).unwrap();
    ring_step!("spsc", tx, rx)
}

fn bcast() -> Step {
    use weft_shm::broadcast::{self, BroadcastConfig, Mode};
    let tx = broadcast::channel(BroadcastConfig::new(256 * 1024, 4, Mode::Reliable)).unwrap();
    let rx = tx.join().unwrap();
    ring_step!("bcast", tx, rx)
}

fn api() -> Step {
    use weft::{Node, NodeConfig, ThreadingMode};
    let mut node = Node::new(NodeConfig {
        threading: ThreadingMode::Invoker,
        control_ring: false,
        ..NodeConfig::default()
    })
    .unwrap();
    let uri = format!("shm:costlab-{}?capacity={}", std::process::id(), 256 * 1024);
    let mut publ = node.publication(&uri, 1).unwrap();
    let mut sub = node.subscription(&uri, 1).unwrap();
    while !publ.is_connected() {
        let _ = sub.poll(1, |_| {});
    }
    run(
        "api",
        move |seq, msg| {
            for s in seq..seq + K {
                msg[..8].copy_from_slice(&s.to_le_bytes());
                publ.offer(msg).unwrap();
            }
        },
        move |next| {
            let _ = &node;
            sub.poll(usize::MAX, |e| {
                if let weft::Event::Message(m) = e {
                    assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), *next);
                    *next += 1;
                }
            })
            .unwrap();
        },
    )
}

fn dis() -> Step {
    use disruptor::{build_single_producer, BusySpin, Polling, Producer};
    let (mut poller, builder) =
        build_single_producer(4096, || [0u8; 64], BusySpin).new_event_poller();
    let mut tx = builder.build();
    run(
        "dis",
        move |seq, msg| {
            for s in seq..seq + K {
                msg[..8].copy_from_slice(&s.to_le_bytes());
                tx.publish(|e| e.copy_from_slice(msg));
            }
        },
        move |next| match poller.poll() {
            Ok(mut events) => {
                for e in &mut events {
                    assert_eq!(u64::from_le_bytes(e[..8].try_into().unwrap()), *next);
                    *next += 1;
                }
            }
            Err(Polling::NoEvents) => {}
            Err(Polling::Shutdown) => panic!("shutdown"),
        },
    )
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let names: Vec<String> = std::env::args().skip(1).collect();
    for _ in 0..rounds {
        let mut steps: Vec<Step> = names
            .iter()
            .map(|n| match n.as_str() {
                "spsc" => spsc(),
                "bcast" => bcast(),
                "api" => api(),
                "dis" => dis(),
                other => panic!("unknown {other}"),
            })
            .collect();
        let mut p = vec![Vec::new(); names.len()];
        let mut c = vec![Vec::new(); names.len()];
        // Blocks of 16 steps per design, the first 4 of each block (cache
        // warm-up after the other designs ran) not counted.
        let block: usize = std::env::var("BLOCK").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
        for _ in 0..ITERS / block {
            for (j, step) in steps.iter_mut().enumerate() {
                for k in 0..block {
                    let (a, b) = step();
                    if k >= 4 {
                        p[j].push(a);
                        c[j].push(b);
                    }
                }
            }
        }
        for (j, n) in names.iter().enumerate() {
            report(n, p[j].clone(), c[j].clone());
        }
        println!();
    }
}
