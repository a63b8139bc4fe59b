//! A telemetry sink: sensor threads in one or more processes publish samples
//! on one UDP channel, and a sink process aggregates them, checking that each
//! sensor's samples arrive in order and that the host sent them as one
//! session. Every publication writes into the channel's lock-free MPSC ring:
//! the first process to publish runs the sender, the others write into its
//! ring through shared memory.
//!
//! ```text
//! cargo run --release -p weft --example telemetry_sink -- --role all --processes 2 --sensors 2 --count 50000
//! ```
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fail, linger, wait_for, Args};
use weft::{Event, Node, PublishError};

const USAGE: &str =
    "telemetry_sink --role all|sensors|sink [--udp URI] [--processes P] [--sensors N-per-process] \
[--first-sensor K] [--count N-per-sensor] [--rate PER-SECOND-per-sensor] [--duration SECONDS] [--threading …] [--idle …] [--dir DIR] [--config FILE]";
const STREAM: u32 = 9;
const TIMEOUT: Duration = Duration::from_secs(60);

/// One sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Sample {
    sensor: u32,
    _pad: u32,
    seq: u64,
    value: f64,
}

fn main() {
    let args = Args::parse(USAGE);
    let udp = args.string("udp", "udp://239.77.55.1:40455");
    let sensors: u32 = args.get("sensors", 4);
    let processes: u32 = args.get("processes", 1).max(1);
    // `--rate` paces each sensor; with `--duration` it sets the count.
    let (_, count) = args.pacing(args.get("count", 50_000));
    let rate: f64 = args.get("rate", 0.0);
    let patience = TIMEOUT + Duration::from_secs_f64(args.get("duration", 0.0f64).max(0.0));
    match args.string("role", "all").as_str() {
        "sensors" => run_sensors(
            &args,
            &udp,
            args.get("first-sensor", 0),
            sensors,
            count,
            rate,
            patience,
        ),
        "sink" => sink(&args, &udp, sensors, count, patience),
        "all" => {
            let exe = std::env::current_exe().expect("own path");
            let pass = |role: &str, sensors: u32, first: u32| {
                let mut c = Command::new(&exe);
                c.args(["--role", role, "--udp", &udp]);
                c.args([
                    "--sensors",
                    &sensors.to_string(),
                    "--first-sensor",
                    &first.to_string(),
                    "--count",
                    &count.to_string(),
                    "--rate",
                    &rate.to_string(),
                ]);
                for key in ["threading", "idle", "dir", "config"] {
                    let v = args.string(key, "");
                    if !v.is_empty() {
                        c.arg(format!("--{key}")).arg(v);
                    }
                }
                c.stdout(Stdio::inherit());
                c.spawn()
                    .unwrap_or_else(|e| fail(USAGE, &format!("spawn: {e}")))
            };
            let mut sink = pass("sink", sensors * processes, 0);
            std::thread::sleep(Duration::from_millis(200));
            let mut children: Vec<_> = (0..processes)
                .map(|p| pass("sensors", sensors, p * sensors))
                .collect();
            let mut ok = true;
            for c in &mut children {
                ok &= c.wait().is_ok_and(|s| s.success());
            }
            ok &= sink.wait().is_ok_and(|s| s.success());
            if !ok {
                eprintln!("telemetry_sink: a process failed");
                std::process::exit(1);
            }
        }
        other => fail(USAGE, &format!("--role {other:?}")),
    }
}

fn run_sensors(
    args: &Args,
    udp: &str,
    first: u32,
    sensors: u32,
    count: u64,
    rate: f64,
    patience: Duration,
) {
    let mut node = Node::new(args.node_config()).unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let invoker = node.config().threading == weft::ThreadingMode::Invoker;
    let publications: Vec<_> = (0..sensors)
        .map(|_| {
            node.publication(udp, STREAM)
                .unwrap_or_else(|e| fail(USAGE, &e.to_string()))
        })
        .collect();
    // In invoker mode this thread does the node's work while the sensors run.
    let threads: Vec<_> = publications
        .into_iter()
        .enumerate()
        .map(|(i, mut publ)| {
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                let mut pacer = common::Pacer::new(rate);
                for seq in 0..count {
                    pacer.wait();
                    let s = Sample {
                        sensor: first + i as u32,
                        _pad: 0,
                        seq,
                        value: (seq as f64 * 0.001 + i as f64).sin(),
                    };
                    loop {
                        match publ.offer_pod(&s) {
                            Ok(()) => break,
                            Err(PublishError::BackPressured | PublishError::NotConnected) => {
                                if start.elapsed() > patience {
                                    eprintln!("sensor {i}: timed out (is the sink running?)");
                                    std::process::exit(1);
                                }
                                std::thread::yield_now();
                            }
                            Err(e) => fail(USAGE, &e.to_string()),
                        }
                    }
                }
            })
        })
        .collect();
    while !threads.iter().all(|t| t.is_finished()) {
        if invoker {
            node.do_work();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for t in threads {
        t.join().expect("sensor thread");
    }
    println!(
        "sensors {first}..{}: {count} samples each published on one channel",
        first + sensors
    );
    // If this process runs the channel's sender, sensors in other processes
    // may still be publishing through it: serve them until they are done.
    let start = std::time::Instant::now();
    while node.publications_elsewhere() > 0 && start.elapsed() < TIMEOUT {
        linger(&mut node, Duration::from_millis(20));
    }
    linger(&mut node, Duration::from_millis(300));
}

fn sink(args: &Args, udp: &str, sensors: u32, count: u64, patience: Duration) {
    let mut node = Node::new(args.node_config()).unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut sub = node
        .subscription(udp, STREAM)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut next = vec![0u64; sensors as usize];
    let mut sum = vec![0f64; sensors as usize];
    let total = sensors as u64 * count;
    let mut got = 0u64;
    let mut sessions = 0;
    wait_for(&mut node, patience, "samples", |_| {
        let n = sub
            .poll(256, |e| match e {
                Event::Message(m) => {
                    let s: Sample = bytemuck::pod_read_unaligned(m);
                    let i = s.sensor as usize;
                    if i >= next.len() || s.seq != next[i] {
                        eprintln!("sink: sensor {i} sample {} out of order", s.seq);
                        std::process::exit(1);
                    }
                    next[i] += 1;
                    sum[i] += s.value;
                    got += 1;
                }
                Event::Loss { from, to, .. } => {
                    eprintln!("sink: lost datagrams {from}..{to}");
                    std::process::exit(1);
                }
                Event::NewSession { .. } => sessions += 1,
                Event::PublisherGone { .. } => {}
            })
            .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
        (n, (got == total).then_some(()))
    });
    println!("sink: {sessions} publisher session(s)");
    for (i, s) in sum.iter().enumerate() {
        println!(
            "sink: sensor {i}: {count} samples in order, mean {:.4}",
            s / count as f64
        );
    }
}
