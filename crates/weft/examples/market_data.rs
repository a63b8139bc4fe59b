//! Market data through the gateway: a publisher sends quotes over UDP
//! multicast; on this host one gateway receives them once and republishes them
//! into a shared-memory ring; several subscriber processes read that ring.
//! N local subscribers cost one network receive.
//!
//! ```text
//! cargo run --release -p weft --example market_data -- --role all --subscribers 3 --count 100000
//! ```
//!
//! `--role all` starts the other roles as child processes of this binary and
//! checks that every subscriber got every quote, in order.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fail, linger, wait_for, Args};
use weft::{Event, Node, PublishError};

const USAGE: &str = "market_data --role all|publisher|gateway|subscriber [--udp URI] [--shm URI] \
[--count N] [--rate PER-SECOND] [--duration SECONDS] [--subscribers N] [--id N] [--threading …] [--idle …] [--dir DIR] [--config FILE]";

/// One quote, as it travels.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Quote {
    seq: u64,
    instrument: u32,
    _pad: u32,
    bid: f64,
    ask: f64,
}

fn quote(seq: u64) -> Quote {
    let mid = 100.0 + (seq % 1000) as f64 * 0.01;
    Quote {
        seq,
        instrument: (seq % 16) as u32,
        _pad: 0,
        bid: mid - 0.005,
        ask: mid + 0.005,
    }
}

const STREAM: u32 = 1;
const TIMEOUT: Duration = Duration::from_secs(60);

/// How long a role waits for the others: a minute, plus the `--duration`.
fn patience(args: &Args) -> Duration {
    TIMEOUT + Duration::from_secs_f64(args.get("duration", 0.0f64).max(0.0))
}

fn main() {
    let args = Args::parse(USAGE);
    let role = args.string("role", "all");
    let udp = args.string("udp", "udp://239.77.54.1:40454");
    let shm = args.string("shm", "shm:md");
    // `--rate` paces the publisher; with `--duration` it sets the count,
    // so a newcomer can watch a run in `weft-stat` for as long as they like.
    let (_, count) = args.pacing(args.get("count", 100_000));
    match role.as_str() {
        "all" => all(&args, count),
        "publisher" => publisher(&args, &udp, count),
        "gateway" => gateway(&args, &udp, &shm),
        "subscriber" => subscriber(&args, &shm, count, args.get("id", 0)),
        other => fail(USAGE, &format!("--role {other:?}")),
    }
}

fn node(args: &Args) -> Node {
    Node::new(args.node_config()).unwrap_or_else(|e| fail(USAGE, &e.to_string()))
}

fn publisher(args: &Args, udp: &str, count: u64) {
    let (mut pacer, _) = args.pacing(count);
    let mut node = node(args);
    let mut publ = node
        .publication(udp, STREAM)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    for seq in 0..count {
        pacer.wait();
        let q = quote(seq);
        wait_for(
            &mut node,
            TIMEOUT,
            "room to publish (is the gateway up?)",
            |_| match publ.offer_pod(&q) {
                Ok(()) => (1, Some(())),
                Err(PublishError::BackPressured | PublishError::NotConnected) => (0, None),
                Err(e) => fail(USAGE, &e.to_string()),
            },
        );
    }
    println!("publisher: {count} quotes sent");
    linger(&mut node, Duration::from_millis(300));
}

fn gateway(args: &Args, udp: &str, shm: &str) {
    let mut node = node(args);
    let gw = node
        .gateway_in(udp, shm, STREAM)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    // Watch the local ring too, to know when the publisher has gone.
    let mut watch = node
        .subscription(shm, STREAM)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    println!("gateway: ready");
    let mut seen = 0u64;
    wait_for(
        &mut node,
        patience(args) * 2,
        "the publisher to finish",
        |_| {
            let mut gone = false;
            let n = watch
                .poll(256, |e| match e {
                    Event::Message(_) => seen += 1,
                    Event::PublisherGone { .. } => gone = true,
                    _ => {}
                })
                .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
            (n, gone.then_some(()))
        },
    );
    println!("gateway: {seen} quotes received once from the network, republished to every local subscriber");
    drop(gw);
}

fn subscriber(args: &Args, shm: &str, count: u64, id: u32) {
    let mut node = node(args);
    let mut sub = node
        .subscription(shm, STREAM)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    wait_for(&mut node, TIMEOUT, "the gateway's ring", |_| {
        let n = sub
            .poll(16, |_| {})
            .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
        (n, sub.is_connected().then_some(()))
    });
    println!("subscriber {id}: ready");
    let mut next = 0u64;
    let mut spread = 0.0;
    wait_for(&mut node, patience(args), "quotes", |_| {
        let n = sub
            .poll(256, |e| match e {
                Event::Message(m) => {
                    let q: Quote = bytemuck::pod_read_unaligned(m);
                    if q.seq != next {
                        eprintln!("subscriber {id}: quote {} where {next} was due", q.seq);
                        std::process::exit(1);
                    }
                    spread += q.ask - q.bid;
                    next += 1;
                }
                Event::Loss { from, to, .. } => {
                    eprintln!("subscriber {id}: lost datagrams {from}..{to}");
                    std::process::exit(1);
                }
                Event::NewSession { .. } | Event::PublisherGone { .. } => {}
            })
            .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
        (n, (next == count).then_some(()))
    });
    println!(
        "subscriber {id}: {count} quotes in order, mean spread {:.4}",
        spread / count as f64
    );
}

/// Starts a child with this binary and the given role; waits for its "ready" line.
fn start(args: &Args, role: &[&str], wait_ready: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.args(role).stdout(Stdio::piped());
    for key in [
        "udp",
        "shm",
        "count",
        "rate",
        "duration",
        "threading",
        "idle",
        "dir",
        "config",
    ] {
        let v = args.string(key, "");
        if !v.is_empty() {
            cmd.arg(format!("--{key}")).arg(v);
        }
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(USAGE, &format!("spawn: {e}")));
    let out = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    if wait_ready {
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            println!("{line}");
            if line.ends_with("ready") {
                break;
            }
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
        }
    });
    child
}

fn all(args: &Args, count: u64) {
    let n: u32 = args.get("subscribers", 3);
    let mut gateway = start(args, &["--role", "gateway"], true);
    let mut subs: Vec<Child> = (0..n)
        .map(|i| {
            start(
                args,
                &["--role", "subscriber", "--id", &i.to_string()],
                true,
            )
        })
        .collect();
    let mut publisher = start(args, &["--role", "publisher"], false);
    let mut ok = publisher.wait().is_ok_and(|s| s.success());
    for s in &mut subs {
        ok &= s.wait().is_ok_and(|s| s.success());
    }
    ok &= gateway.wait().is_ok_and(|s| s.success());
    std::thread::sleep(Duration::from_millis(50)); // let the output threads finish
    if !ok {
        eprintln!("market_data: a process failed");
        std::process::exit(1);
    }
    println!("market_data: {count} quotes to {n} subscribers through one gateway");
}
