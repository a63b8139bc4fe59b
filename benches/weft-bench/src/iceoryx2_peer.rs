//! iceoryx2 (zero-copy shared-memory IPC) as a peer: publish-subscribe over
//! `ipc` services, loaned samples written in place, subscribers polled.
//! Built only with `--features iceoryx2` (a long build, not in CI).
//!
//! Both ends run as two pinned threads of this process, each with its own
//! iceoryx2 node, as the other in-process peers do; iceoryx2 goes through
//! shared memory either way.

use std::sync::{Arc, Barrier};

use iceoryx2::prelude::*;

use crate::clock::{ticks, Clock};
use crate::pin::pin;
use crate::report::{Outcome, Recorder, Trials, TRIALS};

fn service_name(tag: &str) -> ServiceName {
    format!("weft-bench/{}/{tag}", std::process::id())
        .as_str()
        .try_into()
        .expect("valid service name")
}

/// Opens (or creates) a one-publisher, one-subscriber service of `N`-byte
/// payloads. `reliable`: the publisher waits for room instead of
/// overwriting the subscriber's oldest sample.
fn service<const N: usize>(
    node: &Node<ipc::Service>,
    tag: &str,
    buffer: usize,
    reliable: bool,
) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8; N], ()> {
    node.service_builder(&service_name(tag))
        .publish_subscribe::<[u8; N]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(buffer)
        .enable_safe_overflow(!reliable)
        .open_or_create()
        .expect("iceoryx2 service")
}

fn node() -> Node<ipc::Service> {
    // Its default level warns that no config file was found, on every run.
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

/// `iceoryx2-pingpong`: round trip of 32-byte samples through two services.
pub fn pingpong(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let total = warmup + samples;
    let ready = Arc::new(Barrier::new(2));
    let echo = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            pin(1);
            let node = node();
            let ping = service::<32>(&node, "ping", 1, false);
            let pong = service::<32>(&node, "pong", 1, false);
            let sub = ping.subscriber_builder().create().expect("ping subscriber");
            let publ = pong.publisher_builder().create().expect("pong publisher");
            ready.wait();
            let mut n = 0;
            while n < total {
                if let Some(s) = sub.receive().expect("receive") {
                    let out = publ.loan_uninit().expect("loan").write_payload(*s);
                    out.send().expect("send");
                    n += 1;
                }
            }
            ready.wait();
        })
    };
    pin(0);
    let node = node();
    let ping = service::<32>(&node, "ping", 1, false);
    let pong = service::<32>(&node, "pong", 1, false);
    let sub = pong.subscriber_builder().create().expect("pong subscriber");
    let publ = ping.publisher_builder().create().expect("ping publisher");
    ready.wait();
    let mut h = Recorder::new();
    let mut msg = [0u8; 32];
    for i in 1..=total {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = ticks();
        publ.loan_uninit()
            .expect("loan")
            .write_payload(msg)
            .send()
            .expect("send");
        let reply = loop {
            if let Some(s) = sub.receive().expect("receive") {
                break *s;
            }
        };
        let t1 = ticks();
        assert_eq!(reply[..8], msg[..8]);
        if i > warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    ready.wait();
    echo.join().expect("echo thread");
    Outcome::latency(
        "iceoryx2-pingpong",
        32,
        &h,
        "round trip through 2 iceoryx2 publish-subscribe services (ipc, loaned samples), 2 pinned threads",
    )
}

/// `iceoryx2-throughput`: one-way stream of 64-byte samples; the publisher
/// retries while the subscriber's buffer is full, and sends a sample again
/// when `send` says it reached no subscriber, so nothing is dropped.
pub fn throughput(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let total = warmup + samples;
    let ready = Arc::new(Barrier::new(2));
    let producer = {
        let ready = ready.clone();
        std::thread::spawn(move || -> u64 {
            pin(1);
            let node = node();
            let stream = service::<64>(&node, "stream", 256, true);
            let publ = stream
                .publisher_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("publisher");
            ready.wait();
            let mut msg = [0u8; 64];
            // Sends that reached no subscriber (`send` returned 0), sent again.
            let mut resent = 0;
            for seq in 0..total {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                while publ
                    .loan_uninit()
                    .expect("loan")
                    .write_payload(msg)
                    .send()
                    .expect("send")
                    == 0
                {
                    resent += 1;
                }
            }
            ready.wait();
            resent
        })
    };
    pin(0);
    let node = node();
    let stream = service::<64>(&node, "stream", 256, true);
    let sub = stream
        .subscriber_builder()
        .buffer_size(256)
        .create()
        .expect("subscriber");
    ready.wait();
    let mut trials = Trials::new(warmup, samples);
    // Sequence numbers skipped: before the publisher resent samples that
    // reached no subscriber, runs lost 10 to 331 of 2.2 M despite
    // RetryUntilDelivered. Any still lost are counted and reported, not hidden.
    let (mut next, mut received, mut skipped) = (0u64, 0u64, 0u64);
    while next < total {
        match sub.receive().expect("receive") {
            Some(s) => {
                let seq = u64::from_le_bytes(s[..8].try_into().unwrap_or_default());
                assert!(seq >= next, "out of order: {seq} after {next}");
                skipped += seq - next;
                next = seq + 1;
                received += 1;
                trials.mark(received);
            }
            None => crate::reader_idle::after_empty_poll(),
        }
    }
    ready.wait();
    let resent = producer.join().expect("producer thread");
    let note = format!(
        "one-way, iceoryx2 publish-subscribe (ipc, loaned samples, retry until delivered), 2 pinned threads, median of {TRIALS} slices; {resent} sends reached no subscriber and were resent, {skipped} samples never arrived{}",
        crate::reader_idle::note()
    );
    Outcome::throughput(
        "iceoryx2-throughput",
        64,
        samples,
        trials.median_rate(clock),
        &note,
    )
    .with("skipped", skipped as f64)
    .with("resent", resent as f64)
}
