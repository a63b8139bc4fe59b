//! Hostile input and hot-path allocation: random datagram sequences never make the
//! sender or receiver panic, and after construction neither allocates per message.

use std::net::SocketAddr;

use proptest::prelude::*;
use weft_proto::wire::{DataWriter, Frame, Header, Heartbeat, Loss, Nak, SeqRange, Setup, Status};
use weft_proto::{Event, Receiver, ReceiverConfig, Sender, SenderConfig};
use weft_tests::alloc_count::{allocations_during, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const SRC: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 20_000);

/// A datagram a hostile or confused peer could send: well-formed frames with
/// arbitrary fields (any session, any sequence numbers, huge ranges), or noise.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let session = prop_oneof![Just(1u64), Just(2u64), any::<u64>()];
    let seq = prop_oneof![0u64..64, any::<u64>()];
    let frame = (
        0u8..7,
        session,
        seq.clone(),
        seq,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, session_id, a, b, payload)| {
            let h = Header {
                stream_id: 7,
                session_id,
            };
            let mut buf = vec![0u8; 2048];
            let (lo, hi) = (a.min(b), a.max(b).max(a.min(b) + 1));
            let n = match kind {
                0 => {
                    let mut w = DataWriter::new(&mut buf, h, a, (a % 1000) as u32, 0).unwrap();
                    w.push(&payload, (b % 4) as u8).unwrap();
                    w.finish().unwrap()
                }
                1 => Frame::Heartbeat(Heartbeat {
                    next_seq: hi,
                    oldest_seq: lo,
                })
                .emit(h, &mut buf)
                .unwrap(),
                2 => Frame::Nak(Nak::new(b, &[SeqRange { from: lo, to: hi }]))
                    .emit(h, &mut buf)
                    .unwrap(),
                3 => Frame::Status(Status {
                    receiver_id: a,
                    position: b,
                    window: a ^ b,
                })
                .emit(h, &mut buf)
                .unwrap(),
                4 => Frame::Setup(Setup {
                    initial_seq: a,
                    mtu: 1408,
                })
                .emit(h, &mut buf)
                .unwrap(),
                5 => Frame::Loss(Loss {
                    range: SeqRange { from: lo, to: hi },
                })
                .emit(h, &mut buf)
                .unwrap(),
                _ => {
                    buf[..payload.len()].copy_from_slice(&payload);
                    payload.len()
                }
            };
            buf.truncate(n);
            buf
        });
    frame
}

proptest! {
    #[test]
    fn random_datagram_sequences_never_panic(datagrams in proptest::collection::vec((datagram(), 0u64..5_000_000), 1..60)) {
        let mut rx = Receiver::new(ReceiverConfig::new(7, 1)).unwrap();
        let mut tx = Sender::new(SenderConfig::new(7, 1)).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut now = 1;
        for (d, dt) in &datagrams {
            now += dt;
            rx.handle_datagram(now, SRC, d);
            tx.handle_datagram(now, SRC, d);
            rx.handle_timeout(now);
            tx.handle_timeout(now);
            let _ = tx.offer(now, d);
            for _ in 0..100 {
                let a = rx.poll_transmit(now, &mut buf).is_some();
                let b = tx.poll_transmit(now, &mut buf).is_some();
                if !a && !b { break; }
            }
            let mut events = 0;
            while let Some(e) = rx.poll_event() {
                if let Event::Message(m) = e { prop_assert!(m.len() <= 64 * 1024); }
                events += 1;
                prop_assert!(events < 100_000, "poll_event never ends");
            }
        }
    }
}

#[test]
fn sender_and_receiver_allocate_nothing_per_message() {
    let mut tx = Sender::new(SenderConfig::new(7, 3)).unwrap();
    let mut rx = Receiver::new(ReceiverConfig::new(7, 4)).unwrap();
    let mut buf = vec![0u8; 2048];
    let msg = vec![5u8; 300];
    let big = vec![6u8; 5_000];
    let mut now = 1u64;
    let mut round = |now: &mut u64, n: usize| {
        for i in 0..n {
            *now += 100_000;
            tx.offer(*now, if i % 50 == 0 { &big } else { &msg })
                .unwrap();
            tx.offer(*now, &msg).unwrap();
            while let Some(t) = tx.poll_transmit(*now, &mut buf) {
                rx.handle_datagram(*now, SRC, &buf[..t.len]);
            }
            while let Some(t) = rx.poll_transmit(*now, &mut buf) {
                tx.handle_datagram(*now, SRC, &buf[..t.len]);
            }
            while rx.poll_event().is_some() {}
            tx.handle_timeout(*now);
            rx.handle_timeout(*now);
        }
    };
    round(&mut now, 100);
    assert_eq!(allocations_during(|| round(&mut now, 10_000)), 0);
    assert_eq!(rx.stats().messages, 2 * 10_100);
}

#[test]
fn bad_configurations_are_errors_that_name_the_field() {
    let mut s = SenderConfig::new(7, 1);
    s.mtu = 10;
    assert_eq!(
        Sender::new(s).unwrap_err().0,
        "mtu 10: expected 41 to 65535 bytes"
    );
    let mut s = SenderConfig::new(7, 1);
    s.buffer_datagrams = 1;
    assert!(Sender::new(s)
        .unwrap_err()
        .to_string()
        .contains("buffer_datagrams 1"));
    let mut r = ReceiverConfig::new(7, 1);
    r.nak_delay_min_ns = 5;
    r.nak_delay_max_ns = 1;
    assert!(Receiver::new(r)
        .unwrap_err()
        .to_string()
        .contains("nak_delay_min_ns 5"));
    let mut r = ReceiverConfig::new(7, 1);
    r.nak_delay_lambda = f64::NAN;
    assert!(Receiver::new(r).is_err());
}
