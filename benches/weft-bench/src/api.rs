//! The same round trips as `shm-pingpong` and `udp-pingpong`, through weft's
//! public API (`weft::Node`, `Publication`, `Subscription`): what an
//! application pays on top of the rings and the protocol.

use std::net::UdpSocket;

use weft::{Event, Node, NodeConfig, Publication, PublishError, Subscription, ThreadingMode};

use crate::clock::{ticks, Clock, Pace};
use crate::pin::pin;
use crate::report::{Outcome, Recorder};
use crate::shm::{self, spawn_child};
use weft_shm::broadcast;
use weft_shm::spsc::{Consumer, Producer, SpscConfig};

fn bcast_config() -> broadcast::BroadcastConfig {
    broadcast::BroadcastConfig::new(SHM_CAPACITY, 16, broadcast::Mode::Reliable)
}

/// The shared-memory channels' ring: the size `shm-pingpong`'s SPSC rings have,
/// so both sweep the same memory.
const SHM_CAPACITY: usize = 64 * 1024;

/// A node that runs no threads of its own: the measuring thread does its work
/// (`Node::do_work`), as `udp-pingpong` drives its endpoints itself.
pub(crate) fn invoker_node() -> Node {
    let cfg = NodeConfig {
        threading: ThreadingMode::Invoker,
        control_ring: false,
        ..NodeConfig::default()
    };
    Node::new(cfg).expect("weft node")
}

/// A `shm:` channel whose ring holds messages of `bytes` (broadcast rings
/// take payloads up to an eighth of their capacity).
fn shm_uri(tag: &str, bytes: usize) -> String {
    let capacity = (8 * (bytes + 64)).next_power_of_two().max(SHM_CAPACITY);
    format!("shm:bench-{}-{tag}?capacity={capacity}", std::process::id())
}

/// How long [`offer`] waits for a subscriber, or for room, before it says
/// the other side is gone: a benchmark whose peer process died (it panicked
/// before subscribing, say) fails instead of spinning a core for ever.
const OFFER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Offers `msg` until `publ` takes it, running the node's work in between (a
/// UDP publication needs its send task; a shared-memory one needs a subscriber).
/// Panics after [`OFFER_PATIENCE`] without success (the clock is read only
/// while refused, once per 4,096 tries).
pub(crate) fn offer(node: &mut Node, publ: &mut Publication, msg: &[u8]) {
    let mut tries = 0u32;
    let mut since = None;
    loop {
        match publ.offer(msg) {
            Ok(()) => return,
            Err(e @ (PublishError::BackPressured | PublishError::NotConnected)) => {
                node.do_work();
                tries = tries.wrapping_add(1);
                if tries % 4096 == 0 {
                    let started = *since.get_or_insert_with(std::time::Instant::now);
                    assert!(
                        started.elapsed() < OFFER_PATIENCE,
                        "offer: {e} for {OFFER_PATIENCE:?}: the other side is gone"
                    );
                }
            }
            Err(e) => panic!("offer: {e}"),
        }
    }
}

/// Spins until a message arrives on `sub`, copies it into `buf`; returns its
/// length, or `None` when the publisher is gone. `work` says whether the node
/// has background work (UDP) or none (shared memory: the API path alone).
pub(crate) fn await_message(
    node: &mut Node,
    sub: &mut Subscription,
    buf: &mut [u8],
    work: bool,
) -> Option<usize> {
    loop {
        if work {
            node.do_work();
        }
        let mut got = None;
        sub.poll(1, |e| match e {
            Event::Message(m) => {
                buf[..m.len()].copy_from_slice(m);
                got = Some(Some(m.len()));
            }
            Event::PublisherGone { .. } => got = Some(None),
            Event::NewSession { .. } => {}
            other => panic!("unexpected {other:?}"),
        })
        .expect("poll");
        if let Some(g) = got {
            return g;
        }
    }
}

/// Spins until one message arrives on `sub` and offers it back on `publ` from
/// inside the poll callback, in place (the zero-copy echo an application
/// would write). Returns `false` when the publisher is gone.
pub(crate) fn echo_one(
    node: &mut Node,
    sub: &mut Subscription,
    publ: &mut Publication,
    work: bool,
) -> bool {
    loop {
        if work {
            node.do_work();
        }
        let mut done = None;
        sub.poll(1, |e| match e {
            Event::Message(m) => {
                offer(node, publ, m);
                done = Some(true);
            }
            Event::PublisherGone { .. } => done = Some(false),
            Event::NewSession { .. } => {}
            other => panic!("unexpected {other:?}"),
        })
        .expect("poll");
        if let Some(d) = done {
            return d;
        }
    }
}

/// Sends `total` messages and waits for each echo; records the last `samples`.
fn ping_loop(
    clock: Clock,
    node: &mut Node,
    (publ, sub): (&mut Publication, &mut Subscription),
    (warmup, samples): (u64, u64),
    bytes: usize,
    work: bool,
    pace: Pace,
) -> Recorder {
    let mut h = Recorder::new();
    let mut pacer = pace.pacer();
    let mut msg = vec![0u8; bytes.max(8)];
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..warmup + samples {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = pacer.start();
        offer(node, publ, &msg);
        if work {
            // The send task takes the message out of the publication's ring now.
            node.do_work();
        }
        let n = await_message(node, sub, &mut buf, work).expect("echo side went away");
        let t1 = ticks();
        assert_eq!(&buf[..n], &msg[..], "reply {i}");
        if i >= warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    h
}

/// `api-shm-pingpong`: `shm-pingpong` through the API. Two pinned processes,
/// one `shm:` channel each way (a broadcast ring of the same size as the SPSC
/// rings of `shm-pingpong`). `api-shm-many-pingpong` (`many`): the same with
/// `publishers=many` channels, whose ring several processes may publish.
pub fn shm_pingpong(
    clock: Clock,
    warmup: u64,
    samples: u64,
    bytes: usize,
    many: bool,
    pace: Pace,
) -> Outcome {
    let (mut ping, mut pong) = (shm_uri("aping", bytes), shm_uri("apong", bytes));
    if many {
        ping.push_str("&publishers=many");
        pong.push_str("&publishers=many");
    }
    let mut node = invoker_node();
    let mut publ = node.publication(&ping, 1).expect("ping publication");
    let mut sub = node.subscription(&pong, 1).expect("pong subscription");
    let mut child = spawn_child(&["api-echo".into(), ping, pong]);
    pin(0);
    let h = ping_loop(
        clock,
        &mut node,
        (&mut publ, &mut sub),
        (warmup, samples),
        bytes,
        false,
        pace,
    );
    drop(publ);
    child.wait().expect("echo child");
    if many {
        Outcome::latency(
            "api-shm-many-pingpong",
            bytes,
            &h,
            "round trip through weft::Publication/Subscription on shm:…?publishers=many channels, 2 pinned processes",
        )
    } else {
        Outcome::latency(
            "api-shm-pingpong",
            bytes,
            &h,
            "round trip through weft::Publication/Subscription on shm: channels, 2 pinned processes",
        )
    }
}

/// The echo process of `api-shm-pingpong`: echoes until the ping publisher is gone.
pub fn shm_echo(ping: &str, pong: &str) {
    pin(1);
    let mut node = invoker_node();
    let mut sub = node.subscription(ping, 1).expect("ping subscription");
    let mut publ = node.publication(pong, 1).expect("pong publication");
    while echo_one(&mut node, &mut sub, &mut publ, false) {}
}

/// A multicast group on 127.0.0.1 with a free port, as a channel URI.
pub(crate) fn udp_uri(last: u8) -> String {
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral port")
        .port();
    format!("udp://239.77.101.{last}:{port}?interface=127.0.0.1")
}

/// `api-udp-pingpong`: `udp-pingpong` through the API. Two pinned threads,
/// each with its own node in invoker mode (so its send and receive tasks run
/// on that thread, as `udp-pingpong`'s endpoints do).
pub fn udp_pingpong(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Outcome {
    let (ping, pong) = (udp_uri(1), udp_uri(2));
    let total = warmup + samples;
    let mut a = invoker_node();
    let mut b = invoker_node();
    // Both subscriptions exist before either side publishes.
    let mut a_sub = a.subscription(&pong, 1).expect("pong subscription");
    let mut b_sub = b.subscription(&ping, 1).expect("ping subscription");
    let mut a_pub = a.publication(&ping, 1).expect("ping publication");
    let mut b_pub = b.publication(&pong, 1).expect("pong publication");
    let echo = std::thread::spawn(move || {
        pin(1);
        for _ in 0..total {
            assert!(
                echo_one(&mut b, &mut b_sub, &mut b_pub, true),
                "ping publisher gone"
            );
            b.do_work();
        }
        // Lets the last replies' repairs, if any, go out.
        for _ in 0..1000 {
            b.do_work();
        }
    });
    pin(0);
    let h = ping_loop(
        clock,
        &mut a,
        (&mut a_pub, &mut a_sub),
        (warmup, samples),
        bytes,
        true,
        Pace::default(),
    );
    echo.join().expect("echo thread");
    Outcome::latency(
        "api-udp-pingpong",
        bytes,
        &h,
        "round trip through weft::Publication/Subscription on udp: channels (invoker nodes), 2 pinned threads",
    )
}

/// Round trips per block of an interleaved shared-memory scenario.
const SHM_BLOCK: u64 = 5_000;

/// `shm-interleaved`: `shm-pingpong` and `api-shm-pingpong` in alternating
/// blocks of [`SHM_BLOCK`] round trips between the same two pinned processes,
/// so both see the same machine state (this VM's cross-core latency moves
/// between levels for seconds at a time). One outcome per kind, named
/// `interleaved-…`.
pub fn shm_interleaved(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Vec<Outcome> {
    let blocks = (warmup + samples).div_ceil(SHM_BLOCK);
    let warm_blocks = warmup.div_ceil(SHM_BLOCK);
    let opts = shm::bench_opts();
    let (raw_ping, raw_pong) = (shm::unique("iping"), shm::unique("ipong"));
    let (ping, pong) = (shm_uri("iaping", bytes), shm_uri("iapong", bytes));
    let mut raw_tx = Producer::create(&opts, &raw_ping, &SpscConfig::new(SHM_CAPACITY))
        .expect("create ping ring");
    let mut node = invoker_node();
    let mut publ = node.publication(&ping, 1).expect("ping publication");
    let mut sub = node.subscription(&pong, 1).expect("pong subscription");
    let mut child = spawn_child(&[
        "interleaved-echo".into(),
        blocks.to_string(),
        raw_ping.clone(),
        raw_pong.clone(),
        ping,
        pong,
    ]);
    let mut raw_rx = shm::attach_retry(|| Consumer::attach(&opts, &raw_pong));
    let mut b_tx = broadcast::Producer::create(&opts, &format!("{raw_ping}b"), &bcast_config())
        .expect("create bcast ping ring");
    let mut b_rx =
        shm::attach_retry(|| broadcast::Consumer::attach(&opts, &format!("{raw_pong}b")));
    pin(0);
    let mut h = [Recorder::new(), Recorder::new(), Recorder::new()];
    let mut msg = vec![0u8; bytes.max(8)];
    let mut buf = vec![0u8; 64 * 1024];
    for b in 0..blocks {
        let keep = b >= warm_blocks;
        for i in 0..SHM_BLOCK {
            msg[..8].copy_from_slice(&(b * SHM_BLOCK + i).to_le_bytes());
            let t0 = ticks();
            let mut claim = raw_tx.try_claim(msg.len(), 1).expect("ping ring has room");
            claim.payload_mut().copy_from_slice(&msg);
            claim.commit();
            let mut got = false;
            while !got {
                let _ = raw_rx.poll(1, |f| {
                    buf[..f.payload().len()].copy_from_slice(f.payload());
                    got = true;
                });
            }
            if keep {
                h[0].saturating_record(clock.ns(t0, ticks()));
            }
            assert_eq!(&buf[..msg.len()], &msg[..], "raw reply {i} of block {b}");
        }
        for i in 0..SHM_BLOCK {
            msg[..8].copy_from_slice(&(b * SHM_BLOCK + i).to_le_bytes());
            let t0 = ticks();
            loop {
                match b_tx.try_claim(msg.len(), 0) {
                    Ok(mut claim) => {
                        claim.payload_mut().copy_from_slice(&msg);
                        claim.commit();
                        break;
                    }
                    Err(weft_shm::ClaimError::NotConnected) => {}
                    Err(e) => panic!("bcast claim: {e}"),
                }
            }
            let mut got = false;
            while !got {
                let _ = b_rx.poll(1, |f| {
                    buf[..f.payload().len()].copy_from_slice(f.payload());
                    got = true;
                });
            }
            if keep {
                h[2].saturating_record(clock.ns(t0, ticks()));
            }
            assert_eq!(&buf[..msg.len()], &msg[..], "bcast reply {i} of block {b}");
        }
        for i in 0..SHM_BLOCK {
            msg[..8].copy_from_slice(&(b * SHM_BLOCK + i).to_le_bytes());
            let t0 = ticks();
            offer(&mut node, &mut publ, &msg);
            let n = await_message(&mut node, &mut sub, &mut buf, false).expect("echo process");
            if keep {
                h[1].saturating_record(clock.ns(t0, ticks()));
            }
            assert_eq!(&buf[..n], &msg[..], "api reply {i} of block {b}");
        }
    }
    child.wait().expect("echo child");
    let note = format!(
        "interleaved in blocks of {SHM_BLOCK} round trips with the other kind, same 2 pinned processes"
    );
    vec![
        Outcome::latency("interleaved-shm-pingpong", bytes, &h[0], &note),
        Outcome::latency("interleaved-api-shm-pingpong", bytes, &h[1], &note),
        Outcome::latency("interleaved-bcast-pingpong", bytes, &h[2], &note),
    ]
}

/// The echo process of `shm-interleaved`: `blocks` times, [`SHM_BLOCK`] echoes
/// on the raw rings, then as many through the API.
pub fn shm_interleaved_echo(blocks: u64, [raw_ping, raw_pong]: [&str; 2], [ping, pong]: [&str; 2]) {
    pin(1);
    let opts = shm::bench_opts();
    let mut raw_rx = shm::attach_retry(|| Consumer::attach(&opts, raw_ping));
    let mut raw_tx = Producer::create(&opts, raw_pong, &SpscConfig::new(SHM_CAPACITY))
        .expect("create pong ring");
    let mut b_rx =
        shm::attach_retry(|| broadcast::Consumer::attach(&opts, &format!("{raw_ping}b")));
    let mut b_tx = broadcast::Producer::create(&opts, &format!("{raw_pong}b"), &bcast_config())
        .expect("create bcast pong ring");
    let mut node = invoker_node();
    let mut sub = node.subscription(ping, 1).expect("ping subscription");
    let mut publ = node.publication(pong, 1).expect("pong publication");
    for _ in 0..blocks {
        let mut echoed = 0;
        while echoed < SHM_BLOCK {
            let r = raw_rx.poll(1, |f| {
                let mut c = raw_tx
                    .try_claim(f.payload().len(), f.type_id())
                    .expect("pong ring has room");
                c.payload_mut().copy_from_slice(f.payload());
                c.commit();
            });
            echoed += r.expect("raw ping ring") as u64;
        }
        let mut echoed = 0;
        while echoed < SHM_BLOCK {
            let r = b_rx.poll(1, |f| loop {
                match b_tx.try_claim(f.payload().len(), 0) {
                    Ok(mut c) => {
                        c.payload_mut().copy_from_slice(f.payload());
                        c.commit();
                        break;
                    }
                    Err(weft_shm::ClaimError::NotConnected) => {}
                    Err(e) => panic!("bcast claim: {e}"),
                }
            });
            echoed += r.expect("bcast ping ring") as u64;
        }
        for _ in 0..SHM_BLOCK {
            assert!(
                echo_one(&mut node, &mut sub, &mut publ, false),
                "ping publisher gone"
            );
        }
    }
}

/// `api-shm-throughput`: a one-way stream of 64-byte messages through
/// `weft::Publication::offer` and `weft::Subscription::poll` on a `shm:`
/// channel of 256 KiB, between two pinned threads of one process (placed
/// as the peers' queues are); each message is written whole, the reader
/// checks each one's sequence number in place. Median of the
/// [`crate::report::TRIALS`] slices after warm-up.
/// Offers `total` messages, each `msg` with its sequence number in front,
/// retrying while back-pressured.
fn offer_all<M: AsMut<[u8]> + AsRef<[u8]>>(publ: &mut weft::Publication, total: u64, mut msg: M) {
    let mut seq = 0u64;
    while seq < total {
        msg.as_mut()[..8].copy_from_slice(&seq.to_le_bytes());
        match publ.offer(msg.as_ref()) {
            Ok(()) => seq += 1,
            Err(PublishError::BackPressured) => std::hint::spin_loop(),
            Err(e) => panic!("offer: {e}"),
        }
    }
}

pub fn shm_throughput(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Outcome {
    use crate::report::Trials;
    let total = warmup + samples;
    let uri = format!(
        "shm:bench-{}-athr?capacity={}",
        std::process::id(),
        (256 * 1024usize).max((8 * (bytes + 64)).next_power_of_two())
    );
    let mut node = invoker_node();
    let mut publ = node.publication(&uri, 1).expect("publication");
    let mut sub = node.subscription(&uri, 1).expect("subscription");
    // Attach before the stream starts (the first poll joins the ring).
    while !publ.is_connected() {
        let _ = sub.poll(1, |_| {});
    }
    let producer = std::thread::spawn(move || {
        pin(1);
        // As in `shm-throughput` and the peers' loops: a 64-byte message in a
        // local array, other sizes on the heap.
        if bytes == 64 {
            offer_all(&mut publ, total, [0xa5u8; 64]);
        } else {
            offer_all(&mut publ, total, vec![0xa5u8; bytes.max(8)]);
        }
    });
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    while next < total {
        let n = sub
            .poll(usize::MAX, |e| {
                if let weft::Event::Message(m) = e {
                    let seq = u64::from_le_bytes(m[..8].try_into().unwrap_or_default());
                    assert_eq!(seq, next, "messages out of order");
                    next += 1;
                    trials.mark(next);
                }
            })
            .expect("poll");
        if n == 0 {
            crate::reader_idle::after_empty_poll();
        }
    }
    producer.join().expect("producer thread");
    drop(node);
    let note = format!(
        "one-way, weft::Publication::offer to weft::Subscription::poll on a shm: channel, 2 pinned threads, each {bytes}-byte message written whole, median of {} slices{}",
        crate::report::TRIALS,
        crate::reader_idle::note()
    );
    Outcome::throughput(
        "api-shm-throughput",
        bytes,
        samples,
        trials.median_rate(clock),
        &note,
    )
}
