//! Fan-out: one producer, several subscriber processes.
//!
//! - `shm-fanout-N`: a reliable broadcast ring in shared memory, N subscriber
//!   processes. The producer writes each message once whatever N is; what N
//!   can add is the flow-control check against the slowest subscriber and
//!   the cache traffic of N readers. The result is the producer's time per
//!   message at a fixed rate.
//! - `mcast-fanout`: a weft multicast channel on 127.0.0.1 to several
//!   subscriber processes, flow-controlled on the slowest.
//!
//! This machine has two cores: the producer is pinned to core 0 and every
//! subscriber to the other core(s). Subscribers spin briefly on an empty
//! ring, then yield, so N of them can share one core; they read in batches.

use std::net::SocketAddrV4;
use std::process::Child;
use std::time::{Duration, Instant};

use weft_net::{ChannelConfig, Publication, Subscription};
use weft_proto::{Event, ReceiverConfig, SenderConfig};
use weft_shm::broadcast::{BroadcastConfig, Consumer, Mode, Producer};
use weft_shm::{ClaimError, PollError, ShmOptions};

use crate::clock::{ticks, Clock, Pace};
use crate::pin::pin;
use crate::report::{Outcome, Recorder, Trials, TRIALS};
use crate::shm::{attach_retry, spawn_child, unique};

/// Messages per timed burst: the producer's time is read once per burst.
const BURST: u64 = 64;
/// Frame type of the end-of-stream marker.
const END: u32 = 2;

/// Shared-memory options of the fan-out ring: a subscriber sharing a core
/// with seven others may be off it for a while; don't evict it for that.
fn fanout_opts() -> ShmOptions {
    ShmOptions {
        liveness_timeout: Duration::from_secs(30),
        ..crate::shm::bench_opts()
    }
}

/// The core for subscriber `i`: any core but 0, round robin.
fn subscriber_core(i: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    1 + i % (cores - 1).max(1)
}

fn wait_children(children: Vec<Child>, what: &str) {
    for mut c in children {
        let status = c.wait().expect("wait for subscriber");
        assert!(status.success(), "{what} subscriber failed: {status}");
    }
}

/// `shm-fanout-N`: the producer publishes `warmup + samples` messages of
/// `bytes` at `rate` per second, in bursts of [`BURST`], to `n` subscriber
/// processes. Latency columns: the producer's time per message (a burst's
/// claim-to-commit time over its length), one sample per burst.
/// `msgs_per_s`: the rate the producer sustained. Every subscriber checks it
/// got every message in order.
pub fn shm(clock: Clock, warmup: u64, samples: u64, bytes: usize, n: usize, rate: f64) -> Outcome {
    let opts = fanout_opts();
    let name = unique("fanout");
    // Bursts start on the warmup's end, so exactly `samples` are timed.
    let warmup = warmup.next_multiple_of(BURST);
    let total = warmup + samples;
    let mut cfg = BroadcastConfig::new(16 << 20, n, Mode::Reliable);
    cfg.max_payload = Some(bytes.max(8).next_multiple_of(8).max(64 * 1024));
    let mut tx = Producer::create(&opts, &name, &cfg).expect("create fan-out ring");
    let children: Vec<Child> = (0..n)
        .map(|i| {
            spawn_child(&[
                "fanout-sub".into(),
                name.clone(),
                subscriber_core(i).to_string(),
            ])
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tx.consumers() < n {
        assert!(Instant::now() < deadline, "subscribers did not join");
        std::thread::sleep(Duration::from_millis(1));
    }
    pin(0);
    let mut pacer = Pace::new(clock, Some(rate / BURST as f64)).pacer();
    let mut h = Recorder::new();
    let mut payload = vec![0u8; bytes.max(8)];
    let (mut busy_ticks, mut timed_msgs, mut full_waits) = (0u64, 0u64, 0u64);
    let mut seq = 0u64;
    let mut first_timed = None;
    while seq < total {
        pacer.start();
        let t0 = ticks();
        let burst = BURST.min(total - seq);
        for _ in 0..burst {
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            loop {
                match tx.try_claim(payload.len(), 1) {
                    Ok(mut c) => {
                        c.payload_mut().copy_from_slice(&payload);
                        c.commit();
                        break;
                    }
                    Err(ClaimError::Full) => {
                        full_waits += 1;
                        std::hint::spin_loop();
                    }
                    Err(e) => panic!("fan-out claim: {e}"),
                }
            }
            seq += 1;
        }
        let t1 = ticks();
        if seq > warmup {
            first_timed.get_or_insert(t0);
            busy_ticks += t1.wrapping_sub(t0);
            timed_msgs += burst;
            h.saturating_record(clock.ns(t0, t1) / burst);
        }
    }
    let elapsed_ns = clock.ns(first_timed.unwrap_or(0), ticks()).max(1);
    loop {
        match tx.offer(END, &[0u8; 8]) {
            Ok(()) => break,
            Err(ClaimError::Full) => std::thread::yield_now(),
            Err(e) => panic!("fan-out end marker: {e}"),
        }
    }
    wait_children(children, "shm fan-out");
    let producer_ns = clock.ns(0, busy_ticks) as f64 / timed_msgs.max(1) as f64;
    let note = format!(
        "broadcast ring, {n} subscriber process(es) sharing the other core(s), {rate:.0} msgs/s in bursts of {BURST}; \
         latency columns: producer time per message; {full_waits} claims found the ring full"
    );
    let mut o = Outcome::latency(&format!("shm-fanout-{n}"), bytes, &h, &note);
    o.samples = timed_msgs;
    o.msgs_per_s = Some(timed_msgs as f64 * 1e9 / elapsed_ns as f64);
    o.with("subscribers", n as f64)
        .with("producer_ns_per_msg", producer_ns)
        .with("full_waits", full_waits as f64)
}

/// A fan-out subscriber process: reads every message until the end marker,
/// checking the sequence; exits non-zero on a gap.
pub fn shm_subscriber(name: &str, core: usize) {
    pin(core);
    let opts = fanout_opts();
    let mut rx: Consumer = attach_retry(|| Consumer::attach(&opts, name));
    let mut next = 0u64;
    let mut done = false;
    let mut idle = 0u32;
    while !done {
        match rx.poll(usize::MAX, |f| {
            if f.type_id() == END {
                done = true;
                return;
            }
            let seq = u64::from_le_bytes(f.payload()[..8].try_into().unwrap_or_default());
            assert_eq!(seq, next, "fan-out subscriber: message out of order");
            next += 1;
        }) {
            Ok(0) => {
                idle += 1;
                if idle > 64 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            Ok(_) => idle = 0,
            Err(PollError::Closed) => panic!("fan-out producer went away at {next}"),
            Err(e) => panic!("fan-out poll: {e}"),
        }
    }
}

/// `mcast-fanout`: one weft multicast publication on 127.0.0.1 (this
/// process, core 0) to `n` subscriber processes; flow control holds the
/// publisher to the slowest. `msgs_per_s`: the publisher's median slice
/// rate; every subscriber checks it got every message in order.
pub fn mcast(clock: Clock, warmup: u64, samples: u64, bytes: usize, n: usize) -> Outcome {
    let group = crate::udp::group(12);
    let total = warmup + samples;
    let mut publ = Publication::open(&ChannelConfig::new(group), SenderConfig::new(1, 50))
        .expect("open publication");
    let children: Vec<Child> = (0..n)
        .map(|i| {
            spawn_child(&[
                "mcast-sub".into(),
                group.to_string(),
                total.to_string(),
                subscriber_core(i).to_string(),
                (60 + i).to_string(),
            ])
        })
        .collect();
    pin(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while publ.sender().receivers() < n {
        assert!(
            Instant::now() < deadline,
            "multicast subscribers did not join"
        );
        publ.do_work();
        while publ.poll_event().is_some() {}
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut trials = Trials::new(warmup, samples);
    let mut msg = vec![0u8; bytes.max(8)];
    let mut seq = 0u64;
    while seq < total {
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        if publ.offer(&msg).is_ok() {
            seq += 1;
            trials.mark(seq);
        } else {
            publ.do_work();
        }
    }
    // Keep serving STATUS and NAKs until every subscriber has everything.
    let mut children = children;
    let mut failed = Vec::new();
    while !children.is_empty() {
        publ.do_work();
        children.retain_mut(|c| match c.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    failed.push(status);
                }
                false
            }
            _ => true,
        });
    }
    assert!(
        failed.is_empty(),
        "multicast subscribers failed: {failed:?}"
    );
    let note = format!(
        "weft multicast on 127.0.0.1 to {n} subscriber processes sharing the other core(s), flow control on the slowest, median of {TRIALS} slices"
    );
    Outcome::throughput(
        "mcast-fanout",
        bytes,
        samples,
        trials.median_rate(clock),
        &note,
    )
    .with("subscribers", n as f64)
}

/// A multicast fan-out subscriber process: receives `total` messages in
/// order, then exits.
pub fn mcast_subscriber(group: &str, total: u64, core: usize, seed: u64) {
    pin(core);
    let group: SocketAddrV4 = group.parse().expect("group address");
    let mut sub = Subscription::open(&ChannelConfig::new(group), ReceiverConfig::new(1, seed))
        .expect("open subscription");
    let mut next = 0u64;
    while next < total {
        let work = sub.do_work();
        while let Some(e) = sub.poll_event() {
            match e {
                Event::Message { message: m, .. } => {
                    let seq = u64::from_le_bytes(m[..8].try_into().unwrap_or_default());
                    assert_eq!(seq, next, "multicast subscriber: message out of order");
                    next += 1;
                }
                Event::NewSession { .. } => {}
                other => panic!("multicast subscriber: unexpected {other:?}"),
            }
        }
        if work == 0 {
            std::thread::yield_now();
        }
    }
    // Let the last STATUS go out so the publisher sees everything consumed.
    for _ in 0..100 {
        sub.do_work();
    }
}
