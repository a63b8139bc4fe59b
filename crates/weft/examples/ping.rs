//! Sends `--count` messages on one channel and waits for each to come back on
//! another (run `pong` first); checks every reply and prints round-trip
//! percentiles.
//!
//! ```text
//! cargo run --release -p weft --example pong -- --count 10000 &
//! cargo run --release -p weft --example ping -- --count 10000
//! ```
mod common;

use std::time::{Duration, Instant};

use common::{fail, next_event, wait_for, Args};
use weft::{Event, Node, PublishError};

const USAGE: &str = "ping [--ping URI] [--pong URI] [--stream N] [--count N] [--size BYTES] [--timeout-s S] \
[--threading dedicated|shared|invoker] [--idle busy-spin|yield|backoff|sleep:50us] [--dir DIR] [--config FILE]";

fn main() {
    let args = Args::parse(USAGE);
    let stream: u32 = args.get("stream", 1);
    let count: u64 = args.get("count", 10_000);
    let size: usize = args.get("size", 32).clamp(8, 4096);
    let timeout = Duration::from_secs(args.get("timeout-s", 60));
    let ping_uri = args.string("ping", "shm:ping");
    let mut node = Node::new(args.node_config()).unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut publ = node
        .publication(&ping_uri, stream)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut sub = node
        .subscription(&args.string("pong", "shm:pong"), stream)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut rtt_ns = Vec::with_capacity(count as usize);
    let mut msg = vec![0u8; size];
    for i in 0..count {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        msg[8..].fill(i as u8);
        let t0 = Instant::now();
        wait_for(
            &mut node,
            timeout,
            "room to send (is pong running?)",
            |_| match publ.offer(&msg) {
                Ok(()) => (1, Some(())),
                Err(PublishError::BackPressured | PublishError::NotConnected) => (0, None),
                Err(e) => fail(USAGE, &e.to_string()),
            },
        );
        next_event(&mut node, &mut sub, timeout, "a reply", |e| match e {
            Event::Message(m) => {
                if m != &msg[..] {
                    eprintln!("ping: reply {i} differs from what was sent");
                    std::process::exit(1);
                }
                Some(())
            }
            Event::NewSession { .. } => None,
            other => {
                eprintln!("ping: {other:?}");
                None
            }
        });
        rtt_ns.push(t0.elapsed().as_nanos() as u64);
    }
    rtt_ns.sort_unstable();
    let q = |p: f64| rtt_ns[((rtt_ns.len() - 1) as f64 * p) as usize];
    println!(
        "ping: {count} round trips over {ping_uri}, {size} bytes: p50 {} ns, p99 {} ns, max {} ns",
        q(0.5),
        q(0.99),
        q(1.0)
    );
}
