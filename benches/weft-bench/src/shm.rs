//! Shared-memory scenarios: the cache-line floor and weft's SPSC ring between two
//! pinned processes.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_shm::spsc::{Consumer, Producer, SpscConfig};
use weft_shm::{ClaimError, PollError, ShmError, ShmOptions};

use crate::clock::{ticks, Clock, Pace};
use crate::pin::pin;
use crate::report::{Outcome, Recorder, Trials, TRIALS};

/// An atomic alone on its 128-byte slot.
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// `floor-shm`: two pinned threads bounce one value through two cache lines (one
/// atomic store each way). Nothing can be faster between two cores.
pub fn floor(clock: Clock, warmup: u64, samples: u64, pace: Pace) -> Outcome {
    let (ping, pong) = (Arc::new(Line::default()), Arc::new(Line::default()));
    let total = warmup + samples;
    let echo = {
        let (ping, pong) = (ping.clone(), pong.clone());
        std::thread::spawn(move || {
            pin(1);
            for i in 1..=total {
                while ping.0.load(Ordering::Acquire) != i {}
                pong.0.store(i, Ordering::Release);
            }
        })
    };
    pin(0);
    let mut h = Recorder::new();
    let mut pacer = pace.pacer();
    for i in 1..=total {
        let t0 = pacer.start();
        ping.0.store(i, Ordering::Release);
        while pong.0.load(Ordering::Acquire) != i {}
        let t1 = ticks();
        if i > warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    echo.join().expect("echo thread");
    Outcome::latency(
        "floor-shm",
        8,
        &h,
        "round trip, one atomic store each way, 2 pinned threads",
    )
}

pub fn bench_opts() -> ShmOptions {
    ShmOptions::default()
}

pub fn unique(tag: &str) -> String {
    format!("bench-{}-{tag}", std::process::id())
}

pub fn spawn_child(args: &[String]) -> Child {
    let exe = std::env::current_exe().expect("own executable");
    Command::new(exe)
        .arg("__child")
        .args(args)
        .spawn()
        .expect("spawn benchmark child")
}

/// Attaches as soon as the other process has created the region.
pub fn attach_retry<T>(f: impl Fn() -> Result<T, ShmError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(t) => return t,
            // A 0-byte file is one being created (open, then set_len): wait.
            Err(
                ShmError::NotFound { .. }
                | ShmError::NotInitialized { .. }
                | ShmError::Truncated { len: 0, .. },
            ) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("attach: {e}"),
        }
    }
}

/// Bytes of a ping-pong ring: 64 KiB, or room for 4 messages of `bytes`.
pub fn ring_bytes(bytes: usize) -> usize {
    (4 * (bytes + 64)).next_power_of_two().max(64 * 1024)
}

/// SPSC ring config whose largest payload fits `bytes`.
fn spsc_config(bytes: usize) -> SpscConfig {
    let mut c = SpscConfig::new(ring_bytes(bytes));
    c.max_payload = Some(bytes.max(8).next_multiple_of(8).max(c.capacity / 8));
    c
}

/// `shm-pingpong`: round trip of `bytes`-byte messages through two weft SPSC rings
/// in shared memory between two pinned processes.
pub fn pingpong(clock: Clock, warmup: u64, samples: u64, bytes: usize, pace: Pace) -> Outcome {
    let opts = bench_opts();
    let (ping, pong) = (unique("ping"), unique("pong"));
    let mut tx = Producer::create(&opts, &ping, &spsc_config(bytes)).expect("create ping ring");
    let mut child = spawn_child(&["echo".into(), ping.clone(), pong.clone(), bytes.to_string()]);
    let mut rx = attach_retry(|| Consumer::attach(&opts, &pong));
    pin(0);
    let mut h = Recorder::new();
    let mut pacer = pace.pacer();
    let mut payload = vec![0u8; bytes.max(8)];
    for i in 1..=warmup + samples {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = pacer.start();
        let mut claim = tx.try_claim(payload.len(), 1).expect("ping ring has room");
        claim.payload_mut().copy_from_slice(&payload);
        claim.commit();
        let mut got = 0;
        while got != i {
            let _ = rx.poll(1, |f| {
                got = u64::from_le_bytes(f.payload()[..8].try_into().unwrap_or_default())
            });
        }
        let t1 = ticks();
        if i > warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    drop(tx);
    child.wait().expect("echo child");
    Outcome::latency(
        "shm-pingpong",
        bytes,
        &h,
        if pace.is_paced() {
            "round trip through 2 SPSC rings, 2 pinned processes, fixed rate, timed from the scheduled send"
        } else {
            "round trip through 2 SPSC rings, 2 pinned processes"
        },
    )
}

/// `shm-throughput`: one-way stream of `bytes`-byte messages from a producer
/// process to this (consumer) process. After warm-up the stream is timed in
/// [`TRIALS`] equal slices; the result is the median slice's rate.
/// Messages a batching producer writes per release (`shm-throughput-batch`,
/// and the peers' batch loops): each loop publishes up to this many with
/// one store of its position.
pub const BATCH: u64 = 32;

/// The ring of the throughput scenarios: 256 KiB (more for large messages).
fn stream_config(bytes: usize) -> SpscConfig {
    let mut cfg = SpscConfig::new(ring_bytes(bytes).max(256 * 1024));
    cfg.max_payload = Some(bytes.max(8).next_multiple_of(8).max(cfg.capacity / 8));
    cfg
}

/// The producer loop of the throughput scenarios: `total` messages of
/// `bytes`, each written whole (its sequence number, then the rest) by
/// `offer`, one release each or, `batch`, up to [`BATCH`] frames per release.
/// A 64-byte message is built in a local array, as every peer's loop builds
/// its event (the compiler keeps its constant bytes in the instructions);
/// other sizes in a buffer on the heap.
fn produce(tx: &mut Producer, total: u64, bytes: usize, batch: bool) {
    if bytes == 64 {
        produce_from(tx, total, [0xa5u8; 64], batch)
    } else {
        produce_from(tx, total, vec![0xa5u8; bytes.max(8)], batch)
    }
}

fn produce_from<M: AsMut<[u8]> + AsRef<[u8]>>(
    tx: &mut Producer,
    total: u64,
    mut msg: M,
    batch: bool,
) {
    let mut seq = 0u64;
    while seq < total {
        if !batch {
            // One offer (claim, copy, commit), as a one-at-a-time writer does.
            msg.as_mut()[..8].copy_from_slice(&seq.to_le_bytes());
            match tx.offer(1, msg.as_ref()) {
                Ok(()) => seq += 1,
                Err(ClaimError::Full) => std::hint::spin_loop(),
                Err(e) => panic!("offer: {e}"),
            }
            continue;
        }
        let mut b = tx.batch();
        let mut made = 0;
        while made < BATCH && seq < total {
            msg.as_mut()[..8].copy_from_slice(&seq.to_le_bytes());
            match b.offer(1, msg.as_ref()) {
                Ok(()) => {
                    seq += 1;
                    made += 1;
                }
                Err(ClaimError::Full) => break,
                Err(e) => panic!("offer: {e}"),
            }
        }
        drop(b); // one release store for the frames made
        if made == 0 {
            std::hint::spin_loop();
        }
    }
}

pub fn throughput(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Outcome {
    throughput_with(clock, warmup, samples, bytes, false)
}

/// `shm-throughput-batch`: `shm-throughput` with the producer publishing
/// up to [`BATCH`] frames per release ([`Producer::batch`]).
pub fn throughput_batch(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Outcome {
    throughput_with(clock, warmup, samples, bytes, true)
}

fn throughput_with(clock: Clock, warmup: u64, samples: u64, bytes: usize, batch: bool) -> Outcome {
    let opts = bench_opts();
    let name = unique("stream");
    let total = warmup + samples;
    let cfg = stream_config(bytes);
    let mut rx = Consumer::create(&opts, &name, &cfg).expect("create stream ring");
    let mut child = spawn_child(&[
        if batch { "produce-batch" } else { "produce" }.into(),
        name.clone(),
        total.to_string(),
        bytes.to_string(),
    ]);
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    loop {
        let r = rx.poll(usize::MAX, |f| {
            let seq = u64::from_le_bytes(f.payload()[..8].try_into().unwrap_or_default());
            assert_eq!(seq, next, "frames out of order");
            next += 1;
            trials.mark(next);
        });
        match r {
            Err(PollError::Closed) => break,
            Err(e) => panic!("poll: {e}"),
            Ok(0) => crate::reader_idle::after_empty_poll(),
            Ok(_) => {}
        }
    }
    child.wait().expect("producer child");
    assert_eq!(next, total, "every frame arrived");
    let note = format!(
        "one-way, SPSC ring of {} KiB, 2 pinned processes, each {bytes}-byte message written whole in place{}, median of {TRIALS} slices",
        cfg.capacity / 1024,
        if batch { format!(", up to {BATCH} per release") } else { String::new() }
    ) + &crate::reader_idle::note();
    Outcome::throughput(
        if batch {
            "shm-throughput-batch"
        } else {
            "shm-throughput"
        },
        bytes,
        samples,
        trials.median_rate(clock),
        &note,
    )
}

/// `shm-throughput-threads`: weft's SPSC ring placed as the peers' queues
/// are: on the heap, between two pinned threads of this process (the
/// producer loop is `shm-throughput`'s, message for message).
pub fn throughput_threads(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Outcome {
    let total = warmup + samples;
    let cfg = stream_config(bytes);
    let (mut tx, mut rx) = weft_shm::spsc::channel(cfg).expect("heap ring");
    let producer = std::thread::spawn(move || {
        pin(1);
        produce(&mut tx, total, bytes, false);
    });
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    // An experiment knob (docs/shm.md, "Throughput: where the time goes"):
    // frames per poll; the default reads all there are.
    let limit = std::env::var("WEFT_BENCH_POLL_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    // Polls that found frames, and empty ones: how far behind the reader ran.
    let (mut busy_polls, mut empty_polls) = (0u64, 0u64);
    while next < total {
        let r = rx.poll(limit, |f| {
            let seq = u64::from_le_bytes(f.payload()[..8].try_into().unwrap_or_default());
            assert_eq!(seq, next, "frames out of order");
            next += 1;
            trials.mark(next);
        });
        match r {
            Ok(0) => {
                empty_polls += 1;
                crate::reader_idle::after_empty_poll();
            }
            Ok(_) => busy_polls += 1,
            Err(e) => panic!("poll: {e}"),
        }
    }
    producer.join().expect("producer thread");
    let note = format!(
        "one-way, SPSC ring of {} KiB on the heap, 2 pinned threads, each {bytes}-byte message written whole in place, median of {TRIALS} slices{}",
        cfg.capacity / 1024,
        crate::reader_idle::note()
    );
    Outcome::throughput(
        "shm-throughput-threads",
        bytes,
        samples,
        trials.median_rate(clock),
        &note,
    )
    .with(
        "frames_per_busy_poll",
        total as f64 / busy_polls.max(1) as f64,
    )
    .with("empty_polls_per_frame", empty_polls as f64 / total as f64)
}

/// The other process of a two-process scenario.
pub fn child(args: &[String]) {
    let opts = bench_opts();
    pin(1);
    match args {
        [role, ping, pong, bytes] if role == "echo" => {
            let bytes: usize = bytes.parse().expect("size");
            let mut rx = attach_retry(|| Consumer::attach(&opts, ping));
            let mut tx =
                Producer::create(&opts, pong, &spsc_config(bytes)).expect("create pong ring");
            loop {
                match rx.poll(1, |f| {
                    let mut c = tx
                        .try_claim(f.payload().len(), f.type_id())
                        .expect("pong ring has room");
                    c.payload_mut().copy_from_slice(f.payload());
                    c.commit();
                }) {
                    Err(PollError::Closed) => break,
                    Err(e) => panic!("poll: {e}"),
                    Ok(_) => {}
                }
            }
        }
        [role, name, total, bytes] if role == "produce" || role == "produce-batch" => {
            let mut tx = attach_retry(|| Producer::attach(&opts, name));
            let (total, bytes) = (total.parse().expect("count"), bytes.parse().expect("size"));
            produce(&mut tx, total, bytes, role == "produce-batch");
        }
        [role, ping, pong] if role == "api-echo" => crate::api::shm_echo(ping, pong),
        [role, name, core] if role == "fanout-sub" => {
            crate::fanout::shm_subscriber(name, core.parse().expect("core"))
        }
        [role, group, total, core, seed] if role == "mcast-sub" => crate::fanout::mcast_subscriber(
            group,
            total.parse().expect("count"),
            core.parse().expect("core"),
            seed.parse().expect("seed"),
        ),
        [role, ping, pong] if role == "echo-instrumented" => echo_instrumented(&opts, ping, pong),
        [role, blocks, raw_ping, raw_pong, ping, pong] if role == "interleaved-echo" => {
            let blocks = blocks.parse().expect("block count");
            crate::api::shm_interleaved_echo(blocks, [raw_ping, raw_pong], [ping, pong]);
        }
        _ => panic!("unknown child role {args:?}"),
    }
}

/// Sample one message in this many for one-way latency (as weft does).
pub const LATENCY_SAMPLE_EVERY: u64 = 64;

/// What a weft shared-memory channel end counts, in a real counters file:
/// messages, bytes and the ring position per message, and a one-way latency
/// histogram fed by a timestamp in every [`LATENCY_SAMPLE_EVERY`]th message.
struct Instruments {
    _file: std::sync::Arc<weft::weft_counters::CountersFile>,
    sent: weft::weft_counters::Counter,
    sent_bytes: weft::weft_counters::Counter,
    sent_position: weft::weft_counters::Counter,
    received: weft::weft_counters::Counter,
    received_bytes: weft::weft_counters::Counter,
    received_position: weft::weft_counters::Counter,
    latency: weft::weft_counters::Histogram,
    until_sample: u64,
    /// Bytes through each ring, frame headers included (the positions).
    positions: (u64, u64),
}

impl Instruments {
    fn new(tag: &str) -> Self {
        use weft::weft_counters::{types, CountersConfig, CountersFile};
        let file = CountersFile::create(&CountersConfig::default(), &format!("weft-bench {tag}"))
            .expect("counters file");
        let c = |t, what: &str| {
            file.allocate(t, 1, &format!("bench {tag} {what}"))
                .expect("counter")
        };
        Self {
            sent: c(types::SHM_SENT_MESSAGES, "sent"),
            sent_bytes: c(types::SHM_SENT_BYTES, "sent bytes"),
            sent_position: c(types::SHM_SEND_POSITION, "sent position"),
            received: c(types::SHM_RECEIVED_MESSAGES, "received"),
            received_bytes: c(types::SHM_RECEIVED_BYTES, "received bytes"),
            received_position: c(types::SHM_RECEIVE_POSITION, "received position"),
            latency: file.histogram(
                types::ONE_WAY_LATENCY_NS,
                1,
                &format!("bench {tag} one-way"),
            ),
            until_sample: LATENCY_SAMPLE_EVERY,
            positions: (0, 0),
            _file: file,
        }
    }

    /// Before a send: the timestamp to put in the message (0: not sampled).
    #[inline]
    fn stamp(&mut self) -> u64 {
        self.until_sample -= 1;
        if self.until_sample == 0 {
            self.until_sample = LATENCY_SAMPLE_EVERY;
            weft_shm::liveness::now_ns()
        } else {
            0
        }
    }

    #[inline]
    fn sent(&mut self, len: usize) {
        self.sent.add(1);
        self.sent_bytes.add(len as u64);
        self.positions.0 += frame_len(len);
        self.sent_position.set(self.positions.0);
    }

    #[inline]
    fn received(&mut self, len: usize, stamp: u64) {
        self.received.add(1);
        self.received_bytes.add(len as u64);
        self.positions.1 += frame_len(len);
        self.received_position.set(self.positions.1);
        if stamp != 0 {
            self.latency
                .record(weft_shm::liveness::now_ns().saturating_sub(stamp));
        }
    }
}

/// A frame's bytes in an SPSC ring: 8-byte header and payload, rounded up
/// as the ring rounds them ([`weft_shm::spsc::frame_bytes`]).
fn frame_len(len: usize) -> u64 {
    weft_shm::spsc::frame_bytes(8 + len) as u64
}

/// `shm-pingpong-instrumented`: `shm-pingpong` with, on both sides, what a
/// weft channel end records per message in its counters file (messages,
/// bytes and ring position each way) and a one-way latency histogram sampled every
/// [`LATENCY_SAMPLE_EVERY`]th message (a timestamp in bytes 8..16).
pub fn pingpong_instrumented(clock: Clock, warmup: u64, samples: u64, bytes: usize) -> Outcome {
    let opts = bench_opts();
    let (ping, pong) = (unique("iping"), unique("ipong"));
    let mut tx =
        Producer::create(&opts, &ping, &SpscConfig::new(64 * 1024)).expect("create ping ring");
    let mut child = spawn_child(&["echo-instrumented".into(), ping.clone(), pong.clone()]);
    let mut rx = attach_retry(|| Consumer::attach(&opts, &pong));
    let mut inst = Instruments::new("ping");
    pin(0);
    let mut h = Recorder::new();
    let mut payload = vec![0u8; bytes.max(16)];
    for i in 1..=warmup + samples {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = ticks();
        let stamp = inst.stamp();
        let mut claim = tx.try_claim(payload.len(), 1).expect("ping ring has room");
        let p = claim.payload_mut();
        p.copy_from_slice(&payload);
        p[8..16].copy_from_slice(&stamp.to_le_bytes());
        claim.commit();
        inst.sent(payload.len());
        let mut got = 0;
        while got != i {
            let _ = rx.poll(1, |f| {
                let p = f.payload();
                got = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
                inst.received(
                    p.len(),
                    u64::from_le_bytes(p[8..16].try_into().unwrap_or_default()),
                );
            });
        }
        let t1 = ticks();
        if i > warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    drop(tx);
    child.wait().expect("echo child");
    Outcome::latency(
        "shm-pingpong-instrumented",
        bytes,
        &h,
        "shm-pingpong plus per-message counters and a 1-in-64 one-way latency histogram, both sides",
    )
}

/// The echo process of `shm-pingpong-instrumented`.
fn echo_instrumented(opts: &ShmOptions, ping: &str, pong: &str) {
    let mut rx = attach_retry(|| Consumer::attach(opts, ping));
    let mut tx =
        Producer::create(opts, pong, &SpscConfig::new(64 * 1024)).expect("create pong ring");
    let mut inst = Instruments::new("echo");
    loop {
        match rx.poll(1, |f| {
            let p = f.payload();
            inst.received(
                p.len(),
                u64::from_le_bytes(p[8..16].try_into().unwrap_or_default()),
            );
            let stamp = inst.stamp();
            let mut c = tx
                .try_claim(p.len(), f.type_id())
                .expect("pong ring has room");
            let out = c.payload_mut();
            out.copy_from_slice(p);
            out[8..16].copy_from_slice(&stamp.to_le_bytes());
            c.commit();
            inst.sent(p.len());
        }) {
            Err(PollError::Closed) => break,
            Err(e) => panic!("poll: {e}"),
            Ok(_) => {}
        }
    }
}
