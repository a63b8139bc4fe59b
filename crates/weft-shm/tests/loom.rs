//! Model checks of the four ring algorithms with loom, over tiny rings so that a
//! few frames wrap. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p weft-shm --test loom
//! ```
//!
//! Under loom every word of the data area is a loom atomic and payloads are copied
//! with relaxed word accesses, so a missing Release/Acquire shows up as a stale
//! payload or header that the assertions catch.
//!
//! Loom explores every value a load may return, so an unbounded spin loop is an
//! unbounded model. Each thread therefore makes a bounded number of attempts, and
//! the checks are the safety properties: whatever a consumer receives while the
//! others run is intact, in order, and a prefix of what was sent. Once every thread
//! has joined, a final poll must deliver the rest: nothing is lost.
#![cfg(loom)]

use loom::thread;
use weft_shm::broadcast::{self, BroadcastConfig, Mode};
use weft_shm::mp_broadcast::{self, MpBroadcastConfig};
use weft_shm::mpsc::{self, MpscConfig};
use weft_shm::spsc::{self, SpscConfig};
use weft_shm::{ClaimError, Frame, PollError};

const ATTEMPTS: usize = 3;

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 20_000;
    builder.check(f);
}

/// Payload of frame `i`: eight copies of `i`, so a torn or stale copy shows.
fn payload(i: u8) -> [u8; 8] {
    [i; 8]
}

/// Checks a frame is intact and is the next one expected.
fn expect_next(next: &mut u8) -> impl FnMut(Frame<'_>) + '_ {
    move |f| {
        let p = f.payload();
        assert!(
            p.len() == 8 && p.iter().all(|&b| b == p[0]),
            "torn frame {p:?}"
        );
        assert_eq!(p[0], *next, "frame out of order");
        *next += 1;
    }
}

/// Polls, treating `Closed` (a bounded producer gave up and dropped) as empty.
fn poll_some<F: FnMut(Frame<'_>)>(poll: impl FnOnce(F) -> Result<usize, PollError>, f: F) {
    match poll(f) {
        Ok(_) | Err(PollError::Closed) => {}
        Err(e) => panic!("{e}"),
    }
}

/// Polls until a poll hands over nothing, as a reader told the writer has
/// finished reads the rest.
fn drain(
    mut poll: impl FnMut(&mut dyn FnMut(Frame<'_>)) -> Result<usize, PollError>,
    mut f: impl FnMut(Frame<'_>),
) {
    loop {
        match poll(&mut f) {
            Ok(0) | Err(PollError::Closed) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Offers frames 1..=n, each up to ATTEMPTS times; returns how many went out.
fn offer_some(n: u8, mut offer: impl FnMut(u8) -> Result<(), ClaimError>) -> u8 {
    for i in 1..=n {
        let mut sent = false;
        for _ in 0..ATTEMPTS {
            match offer(i) {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(ClaimError::Full) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        if !sent {
            return i - 1;
        }
    }
    n
}

/// The consumer side of the SPSC models: polls (up to `limit` frames each)
/// while the producer runs, then reads the rest; every frame sent arrives
/// intact and in order, then `Closed`.
fn spsc_read_all(rx: &mut spsc::Consumer, limit: usize, producer: thread::JoinHandle<u8>) {
    let mut next = 1;
    for _ in 0..ATTEMPTS {
        poll_some(|f| rx.poll(limit, f), expect_next(&mut next));
        thread::yield_now();
    }
    let sent = producer.join().unwrap();
    while next <= sent {
        poll_some(|f| rx.poll(limit, f), expect_next(&mut next));
    }
    assert_eq!(next, sent + 1);
    assert_eq!(rx.poll(1, |_| {}), Err(PollError::Closed));
}

#[test]
fn spsc_frames_arrive_in_order_across_the_wrap() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel(SpscConfig {
            capacity: 64,
            max_payload: Some(8),
        })
        .unwrap();
        let producer = thread::spawn(move || offer_some(4, |i| tx.offer(1, &payload(i))));
        spsc_read_all(&mut rx, 4, producer);
    });
}

/// Three batches of two 32-byte frames through a two-line ring: the producer
/// zeroes a line's first word ahead of its frames and the word after each
/// batch; the consumer reads them by their headers.
#[test]
fn spsc_batches_arrive_in_order_across_lines_and_the_wrap() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel(SpscConfig {
            capacity: 128,
            max_payload: Some(8),
        })
        .unwrap();
        let producer = thread::spawn(move || {
            let mut sent = 0u8;
            for round in 0..3u8 {
                let mut batch = tx.batch();
                for k in 1..=2u8 {
                    let i = round * 2 + k;
                    if batch.offer(1, &payload(i)).is_err() {
                        return sent;
                    }
                    sent = i;
                }
            }
            sent
        });
        spsc_read_all(&mut rx, 8, producer);
    });
}

/// A reliable broadcast ring of 64 bytes (two frames of 8 bytes) for two
/// consumers.
fn reliable_ring() -> broadcast::Producer {
    let config = BroadcastConfig {
        max_payload: Some(8),
        ..BroadcastConfig::new(64, 2, Mode::Reliable)
    };
    broadcast::channel(config).unwrap()
}

#[test]
fn reliable_broadcast_two_consumers_get_every_frame() {
    model(|| {
        let mut tx = reliable_ring();
        let mut a = tx.join().unwrap();
        let mut b = tx.join().unwrap();
        let reader = thread::spawn(move || {
            let mut next = 1;
            for _ in 0..ATTEMPTS {
                poll_some(|f| a.poll(4, f), expect_next(&mut next));
                thread::yield_now();
            }
            (a, next)
        });
        let producer = thread::spawn(move || offer_some(3, |i| tx.offer(1, &payload(i))));
        let mut next_b = 1;
        poll_some(|f| b.poll(4, f), expect_next(&mut next_b));
        let sent = producer.join().unwrap();
        let (mut a, mut next_a) = reader.join().unwrap();
        drain(|f| a.poll(4, f), expect_next(&mut next_a));
        drain(|f| b.poll(4, f), expect_next(&mut next_b));
        assert_eq!(
            (next_a, next_b),
            (sent + 1, sent + 1),
            "every consumer got every frame sent"
        );
    });
}

#[test]
fn a_consumer_joining_mid_stream_sees_an_intact_suffix() {
    model(|| {
        let mut tx = reliable_ring();
        let mut first = tx.join().unwrap();
        let (joiner_tx, joiner_rx) = loom::sync::mpsc::channel();
        let producer = thread::spawn(move || {
            let sent = offer_some(3, |i| tx.offer(1, &payload(i)));
            joiner_tx.send(()).unwrap();
            (tx, sent)
        });
        let mut next = 1;
        poll_some(|f| first.poll(4, f), expect_next(&mut next));
        let _ = joiner_rx;
        let (tx, sent) = producer.join().unwrap();
        let mut late = tx.join().unwrap();
        assert_eq!(
            late.poll(4, |_| panic!("nothing was published after the join")),
            Ok(0)
        );
        drain(|f| first.poll(4, f), expect_next(&mut next));
        assert_eq!(next, sent + 1);
    });
}

/// A consumer joins while the producer publishes and the ring wraps. The
/// producer stores `tail` only in its rescans (the ring is smaller than
/// `TAIL_EVERY`), so the joiner loads a stale `tail` and walks the committed
/// frames from there: what it then receives is intact, in order, and ends
/// with the last frame sent; the producer never overwrites what it walks.
#[test]
fn a_consumer_joining_while_frames_are_published_gets_an_intact_suffix() {
    model(|| {
        let mut tx = reliable_ring();
        let mut first = tx.join().unwrap();
        let joiner = tx.joiner();
        let late = thread::spawn(move || {
            let mut late = joiner.join().unwrap();
            let mut seen = Vec::new();
            poll_some(
                |f| late.poll(4, f),
                |f: Frame<'_>| {
                    expect_intact(f);
                    seen.push(f.payload()[0]);
                },
            );
            (late, seen)
        });
        let producer = thread::spawn(move || (offer_some(3, |i| tx.offer(1, &payload(i))), tx));
        let mut next = 1;
        poll_some(|f| first.poll(4, f), expect_next(&mut next));
        let (sent, tx) = producer.join().unwrap();
        let (mut late, mut seen) = late.join().unwrap();
        drop(tx);
        drain(|f| first.poll(4, f), expect_next(&mut next));
        assert_eq!(next, sent + 1, "the first consumer got every frame");
        drain(
            |f| late.poll(4, f),
            |f: Frame<'_>| {
                expect_intact(f);
                seen.push(f.payload()[0]);
            },
        );
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "the joiner's frames are in order: {seen:?}"
        );
        if let Some(&last) = seen.last() {
            assert_eq!(last, sent, "the joiner's frames end with the last sent");
        }
    });
}

#[test]
fn overwrite_broadcast_never_hands_out_a_torn_frame() {
    model(|| {
        let config = BroadcastConfig {
            max_payload: Some(8),
            ..BroadcastConfig::new(64, 1, Mode::Overwrite)
        };
        let mut tx = broadcast::channel(config).unwrap();
        let mut rx = tx.join().unwrap();
        let producer = thread::spawn(move || {
            for i in 1..=3u8 {
                tx.offer(1, &payload(i)).unwrap();
            }
        });
        let mut last = 0;
        for _ in 0..2 {
            let r = rx.poll(4, |f| {
                let p = f.payload();
                assert!(
                    p.len() == 8 && p.iter().all(|&b| b == p[0]),
                    "torn frame {p:?}"
                );
                assert!(p[0] > last, "frame {} after {last}", p[0]);
                last = p[0];
            });
            match r {
                Ok(_) | Err(PollError::Lapped { .. } | PollError::Closed) => {}
                Err(e) => panic!("{e}"),
            }
            thread::yield_now();
        }
        producer.join().unwrap();
    });
}

#[test]
fn mpsc_two_producers_each_in_order() {
    model(|| {
        // Two 32-byte frames of slack (one per producer) plus room for two
        // frames: one frame in flight at a time, so every claim races the
        // consumer's release.
        let mut rx = mpsc::channel(MpscConfig {
            capacity: 128,
            max_payload: Some(8),
            max_producers: 2,
        })
        .unwrap();
        let producers: Vec<_> = (0..2u8)
            .map(|id| {
                let mut tx = rx.producer().unwrap();
                thread::spawn(move || offer_some(2, |i| tx.offer(id as u32, &payload(i + 10 * id))))
            })
            .collect();
        let mut next = [1u8, 11];
        let check = |rx: &mut mpsc::Consumer, next: &mut [u8; 2]| {
            rx.poll(4, |f| {
                let id = f.type_id() as usize;
                expect_next(&mut next[id])(f);
            })
            .unwrap();
        };
        check(&mut rx, &mut next);
        let sent: Vec<u8> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        check(&mut rx, &mut next);
        check(&mut rx, &mut next);
        assert_eq!(
            next,
            [sent[0] + 1, sent[1] + 11],
            "every frame sent arrived"
        );
    });
}

#[test]
fn closed_is_reported_only_after_every_frame_is_read() {
    model(|| {
        let config = BroadcastConfig {
            max_payload: Some(8),
            ..BroadcastConfig::new(64, 1, Mode::Reliable)
        };
        let mut tx = broadcast::channel(config).unwrap();
        let mut rx = tx.join().unwrap();
        let producer = thread::spawn(move || offer_some(2, |i| tx.offer(1, &payload(i))));
        let mut next = 1;
        let mut closed = false;
        for _ in 0..ATTEMPTS {
            match rx.poll(4, expect_next(&mut next)) {
                Ok(_) => thread::yield_now(),
                Err(PollError::Closed) => {
                    closed = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let sent = producer.join().unwrap();
        if closed {
            assert_eq!(next, sent + 1, "Closed reported with frames unread");
        }
    });
}

/// A two-frame many-producer broadcast ring (frames of 8 bytes take 32).
fn mp_ring(producers: usize, consumers: usize) -> mp_broadcast::Ring {
    mp_broadcast::channel(MpBroadcastConfig {
        max_payload: Some(8),
        ..MpBroadcastConfig::new(64, producers, consumers)
    })
    .unwrap()
}

#[test]
fn mp_broadcast_two_producers_each_in_order_to_a_concurrent_consumer() {
    model(|| {
        let ring = mp_ring(2, 1);
        let mut rx = ring.consumer().unwrap();
        let producers: Vec<_> = (0..2u8)
            .map(|id| {
                let mut tx = ring.producer().unwrap();
                thread::spawn(move || offer_some(2, |i| tx.offer(id as u32, &payload(i + 10 * id))))
            })
            .collect();
        let mut next = [1u8, 11];
        let check = |rx: &mut mp_broadcast::Consumer, next: &mut [u8; 2]| {
            rx.poll(4, |f| {
                let id = f.type_id() as usize;
                expect_next(&mut next[id])(f);
            })
            .unwrap();
        };
        check(&mut rx, &mut next);
        let sent: Vec<u8> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        check(&mut rx, &mut next);
        check(&mut rx, &mut next);
        assert_eq!(
            next,
            [sent[0] + 1, sent[1] + 11],
            "every frame sent arrived"
        );
    });
}

#[test]
fn mp_broadcast_a_consumer_on_its_own_thread_gets_every_frame_across_the_wrap() {
    model(|| {
        let ring = mp_ring(1, 2);
        let mut a = ring.consumer().unwrap();
        let mut b = ring.consumer().unwrap();
        let mut tx = ring.producer().unwrap();
        let reader = thread::spawn(move || {
            let mut next = 1;
            for _ in 0..ATTEMPTS {
                b.poll(4, expect_next(&mut next)).unwrap();
            }
            (b, next)
        });
        let sent = offer_some(2, |i| {
            let r = tx.offer(1, &payload(i));
            let _ = a.poll(4, |_| {});
            r
        });
        let (mut b, mut next) = reader.join().unwrap();
        b.poll(4, expect_next(&mut next)).unwrap();
        assert_eq!(next, sent + 1, "every frame sent arrived");
    });
}

#[test]
fn mp_broadcast_a_consumer_joining_mid_stream_sees_an_intact_suffix() {
    model(|| {
        let ring = mp_ring(1, 2);
        let mut first = ring.consumer().unwrap();
        let mut tx = ring.producer().unwrap();
        let joiner = ring.clone();
        let late = thread::spawn(move || {
            // Whatever it joins behind must never be overwritten under it:
            // a frame from a later lap would fail its stamp (Corrupt).
            let mut c = joiner.consumer().unwrap();
            for _ in 0..ATTEMPTS {
                c.poll(4, expect_intact).unwrap();
            }
        });
        let mut next = 1;
        let sent = offer_some(2, |i| {
            let r = tx.offer(1, &payload(i));
            first.poll(4, expect_next(&mut next)).unwrap();
            r
        });
        late.join().unwrap();
        first.poll(4, expect_next(&mut next)).unwrap();
        assert_eq!(next, sent + 1);
    });
}

/// Checks a frame is intact (eight equal bytes).
fn expect_intact(f: Frame<'_>) {
    let p = f.payload();
    assert!(
        p.len() == 8 && p.iter().all(|&b| b == p[0]),
        "torn frame {p:?}"
    );
}

/// Offers frames 1..=3 once each while a consumer joins; returns the frames
/// the ring accepted (it refuses with `NotConnected` until its producer
/// counts the joiner, and with `Full` once a ring is unread).
fn offer_while_joining(mut offer: impl FnMut(u8) -> Result<(), ClaimError>) -> Vec<u8> {
    let mut accepted = Vec::new();
    for i in 1..=3u8 {
        match offer(i) {
            Ok(()) => accepted.push(i),
            Err(ClaimError::NotConnected | ClaimError::Full) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    accepted
}

/// Drains a consumer whose producer is gone; returns each intact frame's
/// first byte.
fn drain_firsts(
    poll: impl FnMut(&mut dyn FnMut(Frame<'_>)) -> Result<usize, PollError>,
) -> Vec<u8> {
    let mut seen = Vec::new();
    drain(poll, |f: Frame<'_>| {
        expect_intact(f);
        seen.push(f.payload()[0]);
    });
    seen
}

/// The joiner is the only consumer: every frame the producer accepts was
/// accepted because it counted the joiner, so the joiner must receive every
/// one of them (a join that skipped frames committed between the producer's
/// count and the joiner's choice of start lost them: accepted, never read).
#[test]
fn a_joiner_receives_every_frame_accepted_once_it_is_counted() {
    model(|| {
        let mut tx = reliable_ring();
        let joiner = tx.joiner();
        let late = thread::spawn(move || joiner.join().unwrap());
        let accepted = offer_while_joining(|i| tx.offer(1, &payload(i)));
        let mut rx = late.join().unwrap();
        drop(tx);
        let seen = drain_firsts(|f| rx.poll(4, f));
        assert_eq!(seen, accepted, "the joiner got every accepted frame");
    });
}

/// As above, for the many-producer ring.
#[test]
fn mp_broadcast_a_joiner_receives_every_frame_accepted_once_it_is_counted() {
    model(|| {
        let ring = mp_ring(1, 1);
        let mut tx = ring.producer().unwrap();
        let joiner = ring.clone();
        let late = thread::spawn(move || joiner.consumer().unwrap());
        let accepted = offer_while_joining(|i| tx.offer(1, &payload(i)));
        let mut rx = late.join().unwrap();
        drop(tx);
        let seen = drain_firsts(|f| rx.poll(4, f));
        assert_eq!(seen, accepted, "the joiner got every accepted frame");
    });
}
