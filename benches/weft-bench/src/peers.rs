//! Peer libraries measured in the same harness, each through its own API:
//! the same pinned threads, message sizes and busy-polling as weft's own
//! scenarios. Every peer here is an in-process queue, so its scenarios run
//! two threads, not two processes.

use crate::clock::{ticks, Clock, Pace};
use crate::pin::pin;
use crate::report::{Outcome, Recorder, Trials, TRIALS};

/// The sending end of a peer's queue, polled (never blocking).
trait PeerTx<T>: Send + 'static {
    /// `false` if the queue is full.
    fn try_push(&mut self, v: T) -> bool;
}

/// The receiving end, polled.
trait PeerRx<T>: Send + 'static {
    fn try_pop(&mut self) -> Option<T>;
}

impl<T: Send + 'static> PeerTx<T> for rtrb::Producer<T> {
    #[inline]
    fn try_push(&mut self, v: T) -> bool {
        self.push(v).is_ok()
    }
}

impl<T: Send + 'static> PeerRx<T> for rtrb::Consumer<T> {
    #[inline]
    fn try_pop(&mut self) -> Option<T> {
        self.pop().ok()
    }
}

impl<T: Send + 'static> PeerTx<T> for crossbeam_channel::Sender<T> {
    #[inline]
    fn try_push(&mut self, v: T) -> bool {
        self.try_send(v).is_ok()
    }
}

impl<T: Send + 'static> PeerRx<T> for crossbeam_channel::Receiver<T> {
    #[inline]
    fn try_pop(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

/// A 64-byte message on a cache line of its own: the slot of the peers'
/// 64-byte throughput rings (rtrb's, the disruptor's), so that each slot is
/// one line, as weft's ring area starts on a page and its frames are laid
/// out from there. A `[u8; 64]` slot lies wherever the allocator put the
/// array: glibc places a 256 KiB one 16 bytes past a page when it maps it,
/// anywhere once the process has freed a mapping that size, so each slot
/// straddled two lines and the peer's rate depended on what the process had
/// allocated before (the disruptor read 50–55 M msgs/s with its slots at 16
/// bytes past a line and 74–83 on lines, same rounds:
/// docs/results/issue18-s19/dis-align-1.txt). Aligned is the peers' best
/// setting, and the same in every run. crossbeam's slot carries a stamp
/// word beside the message (72 bytes), so aligning its message would double
/// its ring; it keeps `[u8; 64]`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line64(pub [u8; 64]);

impl AsRef<[u8]> for Line64 {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Line64 {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// A bounded queue's two ends (generic, so the hot loops call the peer's
/// own methods directly, as its users would).
type Pair<Tx, Rx> = (Tx, Rx);

fn rtrb_pair<const N: usize>(cap: usize) -> Pair<rtrb::Producer<[u8; N]>, rtrb::Consumer<[u8; N]>> {
    rtrb::RingBuffer::<[u8; N]>::new(cap)
}

fn crossbeam_pair<const N: usize>(
    cap: usize,
) -> Pair<crossbeam_channel::Sender<[u8; N]>, crossbeam_channel::Receiver<[u8; N]>> {
    crossbeam_channel::bounded::<[u8; N]>(cap)
}

/// `rtrb-pingpong`: round trip of 32-byte messages through two rtrb rings
/// between two pinned threads.
pub fn rtrb_pingpong(clock: Clock, warmup: u64, samples: u64, pace: Pace) -> Outcome {
    let queues = (rtrb_pair::<32>(1024), rtrb_pair::<32>(1024));
    pingpong(
        clock,
        (warmup, samples, pace),
        queues,
        "rtrb-pingpong",
        "round trip through 2 rtrb rings, 2 pinned threads",
    )
}

/// `crossbeam-pingpong`: the same through two bounded crossbeam channels,
/// polled with `try_send` / `try_recv`.
pub fn crossbeam_pingpong(clock: Clock, warmup: u64, samples: u64, pace: Pace) -> Outcome {
    let queues = (crossbeam_pair::<32>(1024), crossbeam_pair::<32>(1024));
    pingpong(
        clock,
        (warmup, samples, pace),
        queues,
        "crossbeam-pingpong",
        "round trip through 2 bounded crossbeam channels (try_send/try_recv), 2 pinned threads",
    )
}

fn pingpong<Tx: PeerTx<[u8; 32]>, Rx: PeerRx<[u8; 32]>>(
    clock: Clock,
    (warmup, samples, pace): (u64, u64, Pace),
    ((mut ping_tx, mut ping_rx), (mut pong_tx, mut pong_rx)): (Pair<Tx, Rx>, Pair<Tx, Rx>),
    name: &str,
    note: &str,
) -> Outcome {
    let total = warmup + samples;
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut n = 0;
        while n < total {
            if let Some(m) = ping_rx.try_pop() {
                while !pong_tx.try_push(m) {}
                n += 1;
            }
        }
    });
    pin(0);
    let mut h = Recorder::new();
    let mut pacer = pace.pacer();
    let mut msg = [0u8; 32];
    for i in 1..=total {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = pacer.start();
        assert!(ping_tx.try_push(msg), "ping queue has room");
        let reply = loop {
            if let Some(m) = pong_rx.try_pop() {
                break m;
            }
        };
        let t1 = ticks();
        assert_eq!(reply[..8], msg[..8]);
        if i > warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    echo.join().expect("echo thread");
    Outcome::latency(name, 32, &h, note)
}

/// `rtrb-throughput`: one-way stream of 64-byte messages, push/pop one at a
/// time, timed as `shm-throughput` is: the median of [`TRIALS`] slices after
/// warm-up.
pub fn rtrb_throughput(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (tx, rx) = rtrb::RingBuffer::<Line64>::new(4096);
    throughput(
        clock,
        warmup,
        samples,
        (tx, rx, Line64([0u8; 64])),
        "rtrb-throughput",
        "rtrb push/pop, 64-byte slots on cache lines",
    )
}

/// `crossbeam-throughput`: the same through a bounded crossbeam channel.
pub fn crossbeam_throughput(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (tx, rx) = crossbeam_pair::<64>(4096);
    throughput(
        clock,
        warmup,
        samples,
        (tx, rx, [0u8; 64]),
        "crossbeam-throughput",
        "bounded crossbeam channel, try_send/try_recv",
    )
}

/// A one-way stream of `msg`-sized messages (64 bytes) from `tx` to `rx`.
fn throughput<M, Tx, Rx>(
    clock: Clock,
    warmup: u64,
    samples: u64,
    (mut tx, mut rx, mut msg): (Tx, Rx, M),
    name: &str,
    what: &str,
) -> Outcome
where
    M: AsRef<[u8]> + AsMut<[u8]> + Copy + Send + 'static,
    Tx: PeerTx<M>,
    Rx: PeerRx<M>,
{
    let total = warmup + samples;
    let producer = std::thread::spawn(move || {
        pin(1);
        let mut seq = 0u64;
        while seq < total {
            msg.as_mut()[..8].copy_from_slice(&seq.to_le_bytes());
            if tx.try_push(msg) {
                seq += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    while next < total {
        if let Some(m) = rx.try_pop() {
            assert_eq!(
                u64::from_le_bytes(m.as_ref()[..8].try_into().unwrap_or_default()),
                next,
                "out of order"
            );
            next += 1;
            trials.mark(next);
        } else {
            crate::reader_idle::after_empty_poll();
        }
    }
    producer.join().expect("producer thread");
    let note = format!(
        "one-way, {what}, 2 pinned threads, median of {TRIALS} slices{}",
        crate::reader_idle::note()
    );
    Outcome::throughput(name, 64, samples, trials.median_rate(clock), &note)
}

/// `disruptor-pingpong`: round trip of 32-byte events through two
/// single-producer disruptors, as the crate is meant to be used: the echo
/// is an event handler on a processor thread the disruptor pins to core 1
/// (busy-spin wait strategy), publishing each event into the second
/// disruptor, which this thread reads with an event poller.
pub fn disruptor_pingpong(clock: Clock, warmup: u64, samples: u64, pace: Pace) -> Outcome {
    use disruptor::{build_single_producer, BusySpin, Polling, Producer, Sequence};
    let total = warmup + samples;
    let (mut pong_poller, pong) =
        build_single_producer(1024, || [0u8; 32], BusySpin).new_event_poller();
    let mut pong_tx = pong.build();
    // The processor pins itself on its first event: the crate's `pin_at_core`
    // checks the core against this thread's affinity mask, which an earlier
    // scenario has narrowed to core 0.
    let mut pinned = false;
    let mut ping_tx = build_single_producer(1024, || [0u8; 32], BusySpin)
        .handle_events_with(move |e: &[u8; 32], _: Sequence, _: bool| {
            if !pinned {
                pinned = pin(1);
            }
            pong_tx.publish(|out| *out = *e);
        })
        .build();
    pin(0);
    let mut h = Recorder::new();
    let mut pacer = pace.pacer();
    let mut msg = [0u8; 32];
    for i in 1..=total {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = pacer.start();
        ping_tx.publish(|e| *e = msg);
        let reply = loop {
            match pong_poller.poll() {
                Ok(mut events) => {
                    let mut last = [0u8; 32];
                    for e in &mut events {
                        last = *e;
                    }
                    break last;
                }
                Err(Polling::NoEvents) => {}
                Err(Polling::Shutdown) => panic!("echo processor stopped"),
            }
        };
        let t1 = ticks();
        assert_eq!(reply[..8], msg[..8]);
        if i > warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    // Dropping the producer stops and joins the processor thread.
    drop(ping_tx);
    Outcome::latency(
        "disruptor-pingpong",
        32,
        &h,
        "round trip through 2 disruptors (busy-spin processor echoing, event poller), 2 pinned threads",
    )
}

/// `disruptor-throughput`: one-way stream of 64-byte events from a producer
/// thread pinned to core 1 to an event poller on this thread, timed as the
/// other throughput scenarios are.
pub fn disruptor_throughput(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    disruptor_throughput_with(clock, warmup, samples, false)
}

/// `disruptor-throughput-batch`: `disruptor-throughput` with the producer's
/// own batch API, `batch_publish` of up to [`crate::shm::BATCH`] events (one
/// sequence publication per batch).
pub fn disruptor_throughput_batch(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    disruptor_throughput_with(clock, warmup, samples, true)
}

fn disruptor_throughput_with(clock: Clock, warmup: u64, samples: u64, batch: bool) -> Outcome {
    use disruptor::{build_single_producer, BusySpin, Polling, Producer};
    let total = warmup + samples;
    let (mut poller, builder) =
        build_single_producer(4096, || Line64([0u8; 64]), BusySpin).new_event_poller();
    let mut tx = builder.build();
    let producer = std::thread::spawn(move || {
        pin(1);
        // The whole event is written, as every loop writes its message.
        let mut msg = [0xa5u8; 64];
        let mut seq = 0u64;
        while seq < total {
            if batch {
                let n = crate::shm::BATCH.min(total - seq);
                tx.batch_publish(n as usize, |events| {
                    for e in events {
                        msg[..8].copy_from_slice(&seq.to_le_bytes());
                        e.0.copy_from_slice(&msg);
                        seq += 1;
                    }
                });
            } else {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                tx.publish(|e| e.0.copy_from_slice(&msg));
                seq += 1;
            }
        }
    });
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    while next < total {
        match poller.poll() {
            Ok(mut events) => {
                for e in &mut events {
                    assert_eq!(
                        u64::from_le_bytes(e.0[..8].try_into().unwrap_or_default()),
                        next,
                        "out of order"
                    );
                    next += 1;
                    trials.mark(next);
                }
            }
            Err(Polling::NoEvents) => crate::reader_idle::after_empty_poll(),
            Err(Polling::Shutdown) => break,
        }
    }
    producer.join().expect("producer thread");
    assert_eq!(next, total, "every event arrived");
    let (name, how) = if batch {
        (
            "disruptor-throughput-batch",
            format!(" (batch_publish of up to {})", crate::shm::BATCH),
        )
    } else {
        ("disruptor-throughput", String::new())
    };
    let note = format!(
        "one-way, disruptor single producer{how} to an event poller, 4096 x 64-byte events on cache lines, 2 pinned threads, median of {TRIALS} slices{}",
        crate::reader_idle::note()
    );
    Outcome::throughput(name, 64, samples, trials.median_rate(clock), &note)
}

/// `rtrb-throughput-chunks`: `rtrb-throughput` through rtrb's chunk API:
/// the producer writes up to [`crate::shm::BATCH`] slots per chunk, the
/// consumer reads every slot available in one chunk; each commit is one
/// position store.
pub fn rtrb_throughput_chunks(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Line64>::new(4096);
    let total = warmup + samples;
    let producer = std::thread::spawn(move || {
        pin(1);
        let mut seq = 0u64;
        while seq < total {
            let n = (tx.slots() as u64).min(crate::shm::BATCH).min(total - seq);
            if n == 0 {
                std::hint::spin_loop();
                continue;
            }
            let Ok(chunk) = tx.write_chunk_uninit(n as usize) else {
                continue;
            };
            let first = seq;
            seq += chunk.fill_from_iter((first..first + n).map(|s| {
                let mut m = Line64([0xa5u8; 64]);
                m.0[..8].copy_from_slice(&s.to_le_bytes());
                m
            })) as u64;
        }
    });
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    while next < total {
        let n = rx.slots();
        if n == 0 {
            crate::reader_idle::after_empty_poll();
            continue;
        }
        let Ok(chunk) = rx.read_chunk(n) else {
            continue;
        };
        for m in chunk {
            assert_eq!(
                u64::from_le_bytes(m.0[..8].try_into().unwrap_or_default()),
                next,
                "out of order"
            );
            next += 1;
            trials.mark(next);
        }
    }
    producer.join().expect("producer thread");
    let note = format!(
        "one-way, rtrb chunks (write_chunk_uninit of up to {}, read_chunk of all available), 4096 x 64-byte slots on cache lines, 2 pinned threads, median of {TRIALS} slices{}",
        crate::shm::BATCH,
        crate::reader_idle::note()
    );
    Outcome::throughput(
        "rtrb-throughput-chunks",
        64,
        samples,
        trials.median_rate(clock),
        &note,
    )
}

/// weft's SPSC ring as a polled queue of 32-byte messages: claim, copy,
/// commit; poll one frame and copy it out. Heap memory, so it runs between
/// two threads exactly as the peers do.
impl PeerTx<[u8; 32]> for weft_shm::spsc::Producer {
    #[inline]
    fn try_push(&mut self, v: [u8; 32]) -> bool {
        match self.try_claim(32, 1) {
            Ok(mut c) => {
                c.payload_mut().copy_from_slice(&v);
                c.commit();
                true
            }
            Err(_) => false,
        }
    }
}

impl PeerRx<[u8; 32]> for weft_shm::spsc::Consumer {
    #[inline]
    fn try_pop(&mut self) -> Option<[u8; 32]> {
        let mut out = None;
        let _ = self.poll(1, |f| {
            let mut m = [0u8; 32];
            m.copy_from_slice(&f.payload()[..32]);
            out = Some(m);
        });
        out
    }
}

/// The disruptor's producer, publishing without waiting.
impl PeerTx<[u8; 32]> for disruptor::SingleProducer<[u8; 32], disruptor::SingleConsumerBarrier> {
    #[inline]
    fn try_push(&mut self, v: [u8; 32]) -> bool {
        use disruptor::Producer;
        self.try_publish(|e| *e = v).is_ok()
    }
}

/// The disruptor's event poller, one event at a time.
impl PeerRx<[u8; 32]> for disruptor::EventPoller<[u8; 32], disruptor::SingleProducerBarrier> {
    #[inline]
    fn try_pop(&mut self) -> Option<[u8; 32]> {
        let mut events = self.take(1).ok()?;
        (&mut events).next().copied()
    }
}

/// Round trips per block of [`interleaved`].
const BLOCK: u64 = 5_000;

/// Echoes `n` messages from `rx` to `tx`.
fn echo_block<Tx: PeerTx<[u8; 32]>, Rx: PeerRx<[u8; 32]>>(rx: &mut Rx, tx: &mut Tx, n: u64) {
    for _ in 0..n {
        let m = loop {
            if let Some(m) = rx.try_pop() {
                break m;
            }
        };
        while !tx.try_push(m) {}
    }
}

/// Sends `n` messages numbered from `first` and times each round trip.
fn ping_block<Tx: PeerTx<[u8; 32]>, Rx: PeerRx<[u8; 32]>>(
    clock: Clock,
    (tx, rx): (&mut Tx, &mut Rx),
    first: u64,
    n: u64,
    h: Option<&mut Recorder>,
) {
    let mut msg = [0u8; 32];
    let mut h = h;
    for i in first..first + n {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = ticks();
        assert!(tx.try_push(msg), "ping queue has room");
        let reply = loop {
            if let Some(m) = rx.try_pop() {
                break m;
            }
        };
        let t1 = ticks();
        assert_eq!(reply[..8], msg[..8]);
        if let Some(h) = h.as_deref_mut() {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
}

type Disruptor32 = (
    disruptor::SingleProducer<[u8; 32], disruptor::SingleConsumerBarrier>,
    disruptor::EventPoller<[u8; 32], disruptor::SingleProducerBarrier>,
);

fn disruptor_pair() -> Disruptor32 {
    let (poller, builder) =
        disruptor::build_single_producer(1024, || [0u8; 32], disruptor::BusySpin)
            .new_event_poller();
    (builder.build(), poller)
}

/// `shm-peers-interleaved`: weft's SPSC ring (heap memory, two threads),
/// rtrb, crossbeam-channel and the disruptor (event pollers on both sides)
/// round trips in alternating blocks of [`BLOCK`] on the same two pinned
/// threads, with the cache-line floor as a fifth kind and weft's ring in a
/// shared-memory file (as `shm-pingpong` maps it, here between the same two
/// threads) as a sixth. All see the same machine state, so the VM's level
/// changes cannot favour one of them. Returns one outcome per kind, named
/// `interleaved-…`.
pub fn interleaved(clock: Clock, warmup: u64, samples: u64) -> Vec<Outcome> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    #[repr(align(128))]
    #[derive(Default)]
    struct Line(AtomicU64);
    let blocks = (warmup + samples).div_ceil(BLOCK);
    let warm_blocks = warmup.div_ceil(BLOCK);
    let weft =
        |_| weft_shm::spsc::channel(weft_shm::spsc::SpscConfig::new(64 * 1024)).expect("ring");
    let (mut w_ping_tx, mut w_ping_rx) = weft(());
    let (mut w_pong_tx, mut w_pong_rx) = weft(());
    let mapped = |tag: &str| {
        let (opts, name) = (crate::shm::bench_opts(), crate::shm::unique(tag));
        let cfg = weft_shm::spsc::SpscConfig::new(64 * 1024);
        let tx = weft_shm::spsc::Producer::create(&opts, &name, &cfg).expect("create ring");
        let rx = weft_shm::spsc::Consumer::attach(&opts, &name).expect("attach ring");
        (tx, rx)
    };
    let (mut m_ping_tx, mut m_ping_rx) = mapped("ilv-ping");
    let (mut m_pong_tx, mut m_pong_rx) = mapped("ilv-pong");
    let (mut r_ping_tx, mut r_ping_rx) = rtrb_pair::<32>(1024);
    let (mut r_pong_tx, mut r_pong_rx) = rtrb_pair::<32>(1024);
    let (mut c_ping_tx, mut c_ping_rx) = crossbeam_pair::<32>(1024);
    let (mut c_pong_tx, mut c_pong_rx) = crossbeam_pair::<32>(1024);
    let (mut d_ping_tx, mut d_ping_rx) = disruptor_pair();
    let (mut d_pong_tx, mut d_pong_rx) = disruptor_pair();
    let (ping, pong) = (Arc::new(Line::default()), Arc::new(Line::default()));
    let echo = {
        let (ping, pong) = (ping.clone(), pong.clone());
        std::thread::spawn(move || {
            pin(1);
            let mut n = 0u64;
            for _ in 0..blocks {
                for _ in 0..BLOCK {
                    n += 1;
                    while ping.0.load(Ordering::Acquire) != n {}
                    pong.0.store(n, Ordering::Release);
                }
                echo_block(&mut w_ping_rx, &mut w_pong_tx, BLOCK);
                echo_block(&mut r_ping_rx, &mut r_pong_tx, BLOCK);
                echo_block(&mut c_ping_rx, &mut c_pong_tx, BLOCK);
                echo_block(&mut d_ping_rx, &mut d_pong_tx, BLOCK);
                echo_block(&mut m_ping_rx, &mut m_pong_tx, BLOCK);
            }
        })
    };
    pin(0);
    let mut h: [Recorder; 6] = std::array::from_fn(|_| Recorder::with_blocks());
    let mut rounds: Vec<crate::levels::Round> = Vec::with_capacity(blocks as usize);
    let mut n = 0u64;
    for b in 0..blocks {
        let keep = b >= warm_blocks;
        let [floor, weft, rtrb, crossbeam, disruptor, mapped] = &mut h;
        for _ in 0..BLOCK {
            n += 1;
            let t0 = ticks();
            ping.0.store(n, Ordering::Release);
            while pong.0.load(Ordering::Acquire) != n {}
            let t1 = ticks();
            if keep {
                floor.saturating_record(clock.ns(t0, t1));
            }
        }
        let first = b * BLOCK;
        ping_block(
            clock,
            (&mut w_ping_tx, &mut w_pong_rx),
            first,
            BLOCK,
            keep.then_some(weft),
        );
        ping_block(
            clock,
            (&mut r_ping_tx, &mut r_pong_rx),
            first,
            BLOCK,
            keep.then_some(rtrb),
        );
        ping_block(
            clock,
            (&mut c_ping_tx, &mut c_pong_rx),
            first,
            BLOCK,
            keep.then_some(crossbeam),
        );
        ping_block(
            clock,
            (&mut d_ping_tx, &mut d_pong_rx),
            first,
            BLOCK,
            keep.then_some(disruptor),
        );
        ping_block(
            clock,
            (&mut m_ping_tx, &mut m_pong_rx),
            first,
            BLOCK,
            keep.then_some(mapped),
        );
        if keep {
            rounds.push(h.iter_mut().map(Recorder::take_block_p50).collect());
        }
    }
    echo.join().expect("echo thread");
    let levels = crate::levels::extras(
        &rounds,
        1,
        &[
            (0, "low_level_x_floor", "high_level_x_floor"),
            (2, "low_level_x_rtrb", "high_level_x_rtrb"),
            (3, "low_level_x_crossbeam", "high_level_x_crossbeam"),
            (4, "low_level_x_disruptor", "high_level_x_disruptor"),
        ],
    );
    let mapped_levels = crate::levels::extras(
        &rounds,
        5,
        &[
            (0, "low_level_x_floor", "high_level_x_floor"),
            (1, "low_level_x_heap", "high_level_x_heap"),
            (4, "low_level_x_disruptor", "high_level_x_disruptor"),
        ],
    );
    let note = "interleaved in blocks of 5000 round trips with the other five kinds, same 2 pinned threads, 32-byte messages";
    vec![
        Outcome::latency("interleaved-floor-shm", 8, &h[0], note),
        Outcome::latency("interleaved-weft-spsc", 32, &h[1], note).with_all(levels),
        Outcome::latency("interleaved-rtrb", 32, &h[2], note),
        Outcome::latency("interleaved-crossbeam", 32, &h[3], note),
        Outcome::latency("interleaved-disruptor", 32, &h[4], note),
        Outcome::latency("interleaved-weft-spsc-mapped", 32, &h[5], note).with_all(mapped_levels),
    ]
}

/// One contender of the interleaved throughput scenarios: its row name,
/// whether it is weft's, whether it batches, and its loop (warmup, samples)
/// → outcome.
struct Contender {
    name: &'static str,
    weft: bool,
    batch: bool,
    run: fn(Clock, u64, u64) -> Outcome,
}

const fn contender(
    name: &'static str,
    weft: bool,
    batch: bool,
    run: fn(Clock, u64, u64) -> Outcome,
) -> Contender {
    Contender {
        name,
        weft,
        batch,
        run,
    }
}

/// `shm-throughput-interleaved`: weft's ring and every peer, each as its
/// own throughput scenario does it, in alternating short trials, `rounds`
/// times over (`samples` messages per contender in all); a row per
/// contender (`interleaved-throughput-NAME`) with its median rate, and for
/// weft's rows the median over rounds of its rate over the best peer's in
/// the same round (one at a time against one at a time, batch against
/// batch). The VM's speed changes for seconds at a time; trials a few ms
/// long taken round by round see the same speed.
pub fn throughput_interleaved(clock: Clock, rounds: u32, samples: u64) -> Vec<Outcome> {
    const CONTENDERS: &[Contender] = &[
        contender("weft-threads", true, false, |c, w, n| {
            crate::shm::throughput_threads(c, w, n, 64)
        }),
        contender("weft-processes", true, false, |c, w, n| {
            crate::shm::throughput(c, w, n, 64)
        }),
        contender("weft-batch", true, true, |c, w, n| {
            crate::shm::throughput_batch(c, w, n, 64)
        }),
        contender("weft-api", true, false, |c, w, n| {
            crate::api::shm_throughput(c, w, n, 64)
        }),
        contender("rtrb", false, false, rtrb_throughput),
        contender("rtrb-chunks", false, true, rtrb_throughput_chunks),
        contender("crossbeam", false, false, crossbeam_throughput),
        contender("disruptor", false, false, disruptor_throughput),
        contender("disruptor-batch", false, true, disruptor_throughput_batch),
    ];
    interleave_throughput(clock, rounds, samples, CONTENDERS, |n| {
        format!("interleaved-throughput-{n}")
    })
}

/// `shm-throughput-paired`: the loops of `shm-throughput` (weft, two
/// processes), `rtrb-throughput`, `crossbeam-throughput` and
/// `disruptor-throughput`, interleaved as in `shm-throughput-interleaved`;
/// rows `NAME-throughput-paired` (`shm` for weft's), weft's with
/// `x_best_peer`. What `quick` shows for shared-memory throughput: the
/// peers' loops jump to rates of their own for seconds at a time on this
/// VM, and one-after-another runs of a few hundred ms each caught that.
pub fn throughput_paired(clock: Clock, rounds: u32, samples: u64) -> Vec<Outcome> {
    const CONTENDERS: &[Contender] = &[
        contender("shm", true, false, |c, w, n| {
            crate::shm::throughput(c, w, n, 64)
        }),
        contender("rtrb", false, false, rtrb_throughput),
        contender("crossbeam", false, false, crossbeam_throughput),
        contender("disruptor", false, false, disruptor_throughput),
    ];
    interleave_throughput(clock, rounds, samples, CONTENDERS, |n| {
        format!("{n}-throughput-paired")
    })
}

/// Runs every contender's loop in turn, `rounds` times, `samples / rounds`
/// messages a trial; one outcome per contender named by `row`.
fn interleave_throughput(
    clock: Clock,
    rounds: u32,
    samples: u64,
    contenders: &[Contender],
    row: fn(&str) -> String,
) -> Vec<Outcome> {
    // Each contender measures `samples` messages in all, a `rounds`th per trial.
    let per_trial = (samples / rounds as u64).max(1);
    let warm = (per_trial / 10).max(10_000);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..rounds {
        for (i, c) in contenders.iter().enumerate() {
            rates[i].push((c.run)(clock, warm, per_trial).msgs_per_s.unwrap_or(0.0));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    // Per round, the best peer one at a time and the best with batches.
    let best = |batch: bool, round: usize| {
        contenders
            .iter()
            .zip(&rates)
            .filter(|(c, _)| !c.weft && c.batch == batch)
            .map(|(_, r)| r[round])
            .fold(0.0, f64::max)
    };
    contenders
        .iter()
        .zip(&rates)
        .map(|(c, r)| {
            let note = format!(
                "{rounds} rounds of {per_trial}-message trials of every contender in turn; median rate over rounds"
            );
            let o = Outcome::throughput(&row(c.name), 64, per_trial * rounds as u64, median(r), &note);
            if c.weft {
                let ratios: Vec<f64> = (0..r.len())
                    .map(|k| r[k] / best(c.batch, k).max(1.0))
                    .collect();
                o.with("x_best_peer", median(&ratios))
            } else {
                o
            }
        })
        .collect()
}
