//! Peer libraries measured in the same harness, each through its own idiomatic API.

use crate::clock::{ticks, Clock};
use crate::pin::pin;
use crate::report::{histogram, Outcome, Trials, TRIALS};

/// `rtrb-pingpong`: round trip of 32-byte messages through two rtrb rings between
/// two pinned threads (rtrb is an in-process ring).
pub fn rtrb_pingpong(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<[u8; 32]>::new(1024);
    let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<[u8; 32]>::new(1024);
    let total = warmup + samples;
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut n = 0;
        while n < total {
            if let Ok(m) = ping_rx.pop() {
                while pong_tx.push(m).is_err() {}
                n += 1;
            }
        }
    });
    pin(0);
    let mut h = histogram();
    let mut msg = [0u8; 32];
    for i in 1..=total {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = ticks();
        ping_tx.push(msg).expect("ping ring has room");
        let reply = loop {
            if let Ok(m) = pong_rx.pop() {
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
    Outcome::latency(
        "rtrb-pingpong",
        32,
        &h,
        "round trip through 2 rtrb rings, 2 pinned threads",
    )
}

/// `rtrb-throughput`: one-way stream of 64-byte messages, push/pop one at a time,
/// timed as `shm-throughput` is: the median of [`TRIALS`] slices after warm-up.
pub fn rtrb_throughput(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (mut tx, mut rx) = rtrb::RingBuffer::<[u8; 64]>::new(4096);
    let total = warmup + samples;
    let producer = std::thread::spawn(move || {
        pin(1);
        let mut msg = [0u8; 64];
        let mut seq = 0u64;
        while seq < total {
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            if tx.push(msg).is_ok() {
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
        if let Ok(m) = rx.pop() {
            assert_eq!(
                u64::from_le_bytes(m[..8].try_into().unwrap_or_default()),
                next,
                "out of order"
            );
            next += 1;
            trials.mark(next);
        } else {
            // The busy-spin idle strategy, as in the weft scenario: one PAUSE.
            std::hint::spin_loop();
        }
    }
    producer.join().expect("producer thread");
    let note = format!("one-way, rtrb push/pop, 2 pinned threads, median of {TRIALS} slices");
    Outcome::throughput(
        "rtrb-throughput",
        64,
        samples,
        trials.median_rate(clock),
        &note,
    )
}
