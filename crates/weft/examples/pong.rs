//! Echoes every message of one channel onto another, `--count` times, then exits.
//!
//! ```text
//! cargo run --release -p weft --example pong -- --ping shm:ping --pong shm:pong --count 10000
//! ```
mod common;

use std::time::Duration;

use common::{fail, linger, next_event, wait_for, Args};
use weft::{Event, Node, PublishError};

const USAGE: &str = "pong [--ping URI] [--pong URI] [--stream N] [--count N] [--timeout-s S] \
[--threading dedicated|shared|invoker] [--idle busy-spin|yield|backoff|sleep:50us] [--dir DIR] [--config FILE]";

fn main() {
    let args = Args::parse(USAGE);
    let stream: u32 = args.get("stream", 1);
    let count: u64 = args.get("count", 10_000);
    let timeout = Duration::from_secs(args.get("timeout-s", 60));
    let mut node = Node::new(args.node_config()).unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut sub = node
        .subscription(&args.string("ping", "shm:ping"), stream)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    let mut publ = node
        .publication(&args.string("pong", "shm:pong"), stream)
        .unwrap_or_else(|e| fail(USAGE, &e.to_string()));
    println!("pong: ready");
    let mut buf = [0u8; 4096];
    for _ in 0..count {
        let len = next_event(&mut node, &mut sub, timeout, "a ping", |e| match e {
            Event::Message(m) => {
                buf[..m.len()].copy_from_slice(m);
                Some(m.len())
            }
            Event::NewSession { .. } => None,
            other => {
                eprintln!("pong: {other:?}");
                None
            }
        });
        wait_for(&mut node, timeout, "room to reply", |_| {
            match publ.offer(&buf[..len]) {
                Ok(()) => (1, Some(())),
                Err(PublishError::BackPressured | PublishError::NotConnected) => (0, None),
                Err(e) => fail(USAGE, &e.to_string()),
            }
        });
    }
    println!("pong: echoed {count}");
    // Stay until ping has our last reply: UDP repairs may still be asked for.
    linger(&mut node, Duration::from_millis(200));
}
