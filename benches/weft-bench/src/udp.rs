//! Network scenarios on loopback: the raw UDP floors and weft's multicast channel,
//! each between two threads pinned to cores 0 and 1, busy-polling.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use weft_net::{ChannelConfig, Publication, Subscription};
use weft_proto::{Event, ReceiverConfig, SenderConfig};

use crate::api;
use crate::clock::{ticks, Clock, Pace};
use crate::pin::pin;
use crate::report::{Outcome, Recorder, Trials, TRIALS};

/// A port no socket on loopback holds right now.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

pub(crate) fn group(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(239, 77, 100, last), free_port())
}

fn loopback_pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
    a.connect(b.local_addr().expect("addr")).expect("connect");
    b.connect(a.local_addr().expect("addr")).expect("connect");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// Busy-polls `s` until a datagram arrives.
fn spin_recv(s: &UdpSocket, buf: &mut [u8]) -> usize {
    loop {
        match s.recv(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// A raw socket and where its datagrams go: `None` for a connected socket
/// (`send`), `Some(group)` for a multicast one (`send_to`).
type RawEnd = (UdpSocket, Option<SocketAddrV4>);

fn send_raw((s, to): &RawEnd, buf: &[u8]) {
    match to {
        Some(to) => s.send_to(buf, to),
        None => s.send(buf),
    }
    .expect("send");
}

/// Two pinned threads bounce a 64-byte datagram between raw sockets,
/// busy-polling: one send and one recv per hop.
fn raw_pingpong(clock: Clock, warmup: u64, samples: u64, a: RawEnd, b: RawEnd) -> Recorder {
    let total = warmup + samples;
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut buf = [0u8; 64];
        for _ in 0..total {
            let n = spin_recv(&b.0, &mut buf);
            send_raw(&b, &buf[..n]);
        }
    });
    pin(0);
    let mut h = Recorder::new();
    let mut buf = [0u8; 64];
    for i in 0..total {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = ticks();
        send_raw(&a, &buf);
        spin_recv(&a.0, &mut buf);
        let t1 = ticks();
        if i >= warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    echo.join().expect("echo thread");
    h
}

/// `floor-udp`: two pinned threads bounce a 64-byte datagram over loopback UDP,
/// busy-polling non-blocking connected sockets. The network floor for
/// `udp-pingpong`.
pub fn floor(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (a, b) = loopback_pair();
    let h = raw_pingpong(clock, warmup, samples, (a, None), (b, None));
    Outcome::latency(
        "floor-udp",
        64,
        &h,
        "round trip, raw UDP on loopback, busy-polled, 2 pinned threads",
    )
}

/// A raw socket joined to `group` on loopback, sending to `to`.
fn raw_mcast(group: SocketAddrV4, to: SocketAddrV4) -> RawEnd {
    let opts = weft_net::SocketOptions::default();
    let (s, _) = weft_net::group_socket(group, &opts).expect("group socket");
    (s.into(), Some(to))
}

/// `floor-mcast`: `floor-udp` over two multicast groups on 127.0.0.1 (raw
/// sockets, no weft): what the kernel's multicast path costs beside unicast.
pub fn floor_mcast(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (ping, pong) = (group(4), group(5));
    let h = raw_pingpong(
        clock,
        warmup,
        samples,
        raw_mcast(pong, ping),
        raw_mcast(ping, pong),
    );
    Outcome::latency(
        "floor-mcast",
        64,
        &h,
        "round trip, raw multicast on 127.0.0.1 (no weft), busy-polled, 2 pinned threads",
    )
}

/// A publication on `out` and a subscription on `inn`: one side of a ping-pong.
/// `loss_pct`: the subscription drops that percentage of the datagrams it
/// receives (independent drops, seeded by `seed`).
fn side(
    out: SocketAddrV4,
    inn: SocketAddrV4,
    seed: u64,
    loss_pct: Option<f64>,
) -> (Publication, Subscription) {
    side_keyed(out, inn, seed, loss_pct, None)
}

/// [`side`], with every datagram authenticated by `key` when given.
fn side_keyed(
    out: SocketAddrV4,
    inn: SocketAddrV4,
    seed: u64,
    loss_pct: Option<f64>,
    key: Option<&weft_proto::auth::AuthKey>,
) -> (Publication, Subscription) {
    let mut scfg = SenderConfig::new(1, seed);
    scfg.auth = key.cloned();
    let publ = Publication::open(&ChannelConfig::new(out), scfg).expect("open publication");
    let mut sub_cfg = ChannelConfig::new(inn);
    sub_cfg.loss = loss_pct.map(|pct| loss(pct, seed + 2));
    let mut rcfg = ReceiverConfig::new(1, seed + 1);
    rcfg.auth = key.cloned();
    let sub = Subscription::open(&sub_cfg, rcfg).expect("open subscription");
    (publ, sub)
}

/// Independent drops of `pct` % of received datagrams.
fn loss(pct: f64, seed: u64) -> weft_net::LossConfig {
    weft_net::LossConfig {
        seed,
        probability: pct / 100.0,
        mean_burst: 1.0,
    }
}

/// Spins `sub` (and now and then `publ`, for its STATUS and heartbeats) until a
/// message arrives; copies it into `buf` and returns its length.
fn await_message(publ: &mut Publication, sub: &mut Subscription, buf: &mut [u8]) -> usize {
    let mut spins = 0u32;
    loop {
        sub.do_work();
        while let Some(e) = sub.poll_event() {
            match e {
                Event::Message { message: m, .. } => {
                    buf[..m.len()].copy_from_slice(m);
                    return m.len();
                }
                Event::NewSession { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 {
            publ.do_work();
        }
    }
}

/// Offers `msg` until the publication takes it, then sends it at once.
fn send(publ: &mut Publication, msg: &[u8]) {
    while publ.offer(msg).is_err() {
        publ.do_work();
    }
    publ.do_work();
}

/// Echoes one message from `sub` back on `publ`.
fn echo_one(publ: &mut Publication, sub: &mut Subscription, buf: &mut [u8]) {
    let n = await_message(publ, sub, buf);
    send(publ, &buf[..n]);
}

/// Lets the last replies' repairs, if any, go out.
fn drain(publ: &mut Publication, sub: &mut Subscription) {
    for _ in 0..1000 {
        publ.do_work();
        sub.do_work();
    }
}

/// `udp-pingpong`: round trip of 32-byte messages through two weft channels
/// (multicast on 127.0.0.1, one per direction) between two pinned threads.
/// `udp-pingpong-lossP` (`loss_pct`): each subscription drops P % of what it
/// receives, data, heartbeats and repairs alike.
pub fn pingpong(
    clock: Clock,
    warmup: u64,
    samples: u64,
    bytes: usize,
    pace: Pace,
    loss_pct: Option<f64>,
) -> Outcome {
    let (ping, pong) = (group(1), group(2));
    let total = warmup + samples;
    // Both subscriptions exist before either side publishes.
    let (mut a_pub, mut a_sub) = side(ping, pong, 10, loss_pct);
    let (mut b_pub, mut b_sub) = side(pong, ping, 20, loss_pct);
    let done = Arc::new(AtomicBool::new(false));
    let echo = {
        let done = done.clone();
        std::thread::spawn(move || {
            pin(1);
            let mut buf = vec![0u8; 64 * 1024];
            for _ in 0..total {
                echo_one(&mut b_pub, &mut b_sub, &mut buf);
            }
            // Serves NAKs for the last replies until the pinging side has them
            // all (under injected loss a repair may itself be lost).
            while !done.load(Ordering::Relaxed) {
                drain(&mut b_pub, &mut b_sub);
            }
        })
    };
    pin(0);
    let mut h = Recorder::new();
    let mut pacer = pace.pacer();
    let mut msg = vec![0u8; bytes.max(8)];
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..total {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = pacer.start();
        send(&mut a_pub, &msg);
        let n = await_message(&mut a_pub, &mut a_sub, &mut buf);
        let t1 = ticks();
        assert_eq!(&buf[..n], &msg[..], "reply {i}");
        if i >= warmup {
            h.saturating_record(clock.ns(t0, t1));
        }
    }
    done.store(true, Ordering::Relaxed);
    echo.join().expect("echo thread");
    let dropped = a_sub.stats().io.injected_drops;
    let note = match loss_pct {
        Some(p) => format!(
            "round trip, weft multicast channel each way on 127.0.0.1, 2 pinned threads, {p} % of received datagrams dropped at each end ({dropped} at the pinging end)"
        ),
        None if pace.is_paced() => "round trip, weft multicast channel each way on 127.0.0.1, 2 pinned threads, fixed rate, timed from the scheduled send".into(),
        None => "round trip, weft multicast channel each way on 127.0.0.1, 2 pinned threads".into(),
    };
    let o = Outcome::latency("udp-pingpong", bytes, &h, &note);
    match loss_pct {
        Some(p) => o.with("loss_pct", p),
        None => o,
    }
}

/// `mcast-throughput`: one-way stream of `bytes`-byte messages over a weft channel
/// (multicast on 127.0.0.1), batched many to a datagram, sent with `sendmmsg` and
/// received with `recvmmsg`; reliable (flow control `Min`: the publisher never
/// outruns the subscriber, nothing is lost). Median of [`TRIALS`] slices.
///
/// `mcast-throughput-lossP` (`loss_pct`): the subscription drops P % of the
/// datagrams it receives; NAKs and repairs recover them.
pub fn mcast_throughput(
    clock: Clock,
    warmup: u64,
    samples: u64,
    bytes: usize,
    loss_pct: Option<f64>,
) -> Outcome {
    let ch = ChannelConfig::new(group(3));
    let total = warmup + samples;
    let mut sub_cfg = ch.clone();
    sub_cfg.loss = loss_pct.map(|pct| loss(pct, 33));
    let mut sub = Subscription::open(&sub_cfg, ReceiverConfig::new(1, 31)).expect("subscription");
    let mut publ = Publication::open(&ch, SenderConfig::new(1, 30)).expect("publication");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(1);
            let mut msg = vec![0u8; bytes.max(8)];
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    msg[..8].copy_from_slice(&seq.to_le_bytes());
                    if publ.offer(&msg).is_err() {
                        break;
                    }
                    seq += 1;
                }
                publ.do_work();
            }
        })
    };
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut next = 0u64;
    while next < total {
        sub.do_work();
        while let Some(e) = sub.poll_event() {
            match e {
                Event::Message { message: m, .. } => {
                    let seq = u64::from_le_bytes(m[..8].try_into().unwrap_or_default());
                    assert_eq!(seq, next, "messages out of order");
                    next += 1;
                    trials.mark(next);
                }
                Event::NewSession { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer thread");
    let stats = sub.stats();
    let note = format!(
        "one-way, weft multicast on 127.0.0.1, {:.1} messages per datagram, median of {TRIALS} slices{}",
        stats.proto.messages as f64 / stats.proto.data_received.max(1) as f64,
        match loss_pct {
            Some(p) => format!(
                ", {p} % of received datagrams dropped ({} dropped, {} NAKs sent)",
                stats.io.injected_drops, stats.proto.naks_sent
            ),
            None => String::new(),
        }
    );
    let o = Outcome::throughput(
        "mcast-throughput",
        bytes,
        samples,
        trials.median_rate(clock),
        &note,
    );
    match loss_pct {
        Some(p) => o.with("loss_pct", p),
        None => o,
    }
}

/// `udp-raw-throughput`: one 64-byte datagram per `send` on loopback, received one
/// per `recv`; the rate the receiver sees (datagrams the kernel drops when the
/// receiver falls behind do not count). The per-datagram floor. Median of
/// [`TRIALS`] slices.
pub fn raw_throughput(clock: Clock, warmup: u64, samples: u64) -> Outcome {
    let (a, b) = loopback_pair();
    let total = warmup + samples;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(1);
            let mut buf = [0u8; 64];
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                buf[..8].copy_from_slice(&seq.to_le_bytes());
                match a.send(&buf) {
                    Ok(_) => seq += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(e) => panic!("send: {e}"),
                }
            }
        })
    };
    pin(0);
    let mut trials = Trials::new(warmup, samples);
    let mut buf = [0u8; 64];
    let mut got = 0u64;
    while got < total {
        spin_recv(&b, &mut buf);
        got += 1;
        trials.mark(got);
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender thread");
    Outcome::throughput(
        "udp-raw-throughput",
        64,
        samples,
        trials.median_rate(clock),
        &format!("one 64-byte datagram per send and per recv, loopback, median of {TRIALS} slices"),
    )
}

/// Round trips per block of [`interleaved`].
const BLOCK: u64 = 2_000;

/// `udp-interleaved`: `floor-udp`, `floor-mcast`, `udp-pingpong`,
/// `api-udp-pingpong` and `udp-pingpong` with authenticated datagrams
/// (HMAC-SHA256 on every datagram both ways) in alternating
/// blocks of [`BLOCK`] round trips on the same two pinned threads, so all four
/// see the same machine state. This VM's round trip drifts between levels for
/// seconds at a time; scenarios run one after the other can land on different
/// levels, interleaved ones cannot. Returns one outcome per kind, named
/// `interleaved-…`.
pub fn interleaved(clock: Clock, warmup: u64, samples: u64) -> Vec<Outcome> {
    let blocks = (warmup + samples).div_ceil(BLOCK);
    let warm_blocks = warmup.div_ceil(BLOCK);
    let (ua, ub) = loopback_pair();
    let (m_ping, m_pong) = (group(6), group(7));
    let ma = raw_mcast(m_pong, m_ping);
    let mb = raw_mcast(m_ping, m_pong);
    let (w_ping, w_pong) = (group(8), group(9));
    let (mut a_pub, mut a_sub) = side(w_ping, w_pong, 30, None);
    let (mut b_pub, mut b_sub) = side(w_pong, w_ping, 40, None);
    let key = weft_proto::auth::AuthKey::new(&[0x5A; 32]).expect("a 32-byte key");
    let (k_ping, k_pong) = (group(12), group(13));
    let (mut ka_pub, mut ka_sub) = side_keyed(k_ping, k_pong, 50, None, Some(&key));
    let (mut kb_pub, mut kb_sub) = side_keyed(k_pong, k_ping, 60, None, Some(&key));
    let (api_ping, api_pong) = (api::udp_uri(10), api::udp_uri(11));
    let (mut na, mut nb) = (api::invoker_node(), api::invoker_node());
    let mut na_sub = na.subscription(&api_pong, 1).expect("pong subscription");
    let mut nb_sub = nb.subscription(&api_ping, 1).expect("ping subscription");
    let mut na_pub = na.publication(&api_ping, 1).expect("ping publication");
    let mut nb_pub = nb.publication(&api_pong, 1).expect("pong publication");
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..blocks {
            for _ in 0..BLOCK {
                let n = spin_recv(&ub, &mut buf);
                ub.send(&buf[..n]).expect("send");
            }
            for _ in 0..BLOCK {
                let n = spin_recv(&mb.0, &mut buf);
                send_raw(&mb, &buf[..n]);
            }
            for _ in 0..BLOCK {
                echo_one(&mut b_pub, &mut b_sub, &mut buf);
            }
            for _ in 0..BLOCK {
                assert!(
                    api::echo_one(&mut nb, &mut nb_sub, &mut nb_pub, true),
                    "ping publisher gone"
                );
                nb.do_work();
            }
            for _ in 0..BLOCK {
                echo_one(&mut kb_pub, &mut kb_sub, &mut buf);
            }
        }
        drain(&mut b_pub, &mut b_sub);
        drain(&mut kb_pub, &mut kb_sub);
        for _ in 0..1000 {
            nb.do_work();
        }
    });
    pin(0);
    let mut h = [
        Recorder::new(),
        Recorder::new(),
        Recorder::new(),
        Recorder::new(),
        Recorder::new(),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut raw = [0u8; 64];
    let mut msg = [0u8; 32];
    for b in 0..blocks {
        let keep = b >= warm_blocks;
        let record = |h: &mut Recorder, t0: u64| {
            if keep {
                h.saturating_record(clock.ns(t0, ticks()));
            }
        };
        for i in 0..BLOCK {
            raw[..8].copy_from_slice(&i.to_le_bytes());
            let t0 = ticks();
            ua.send(&raw).expect("send");
            spin_recv(&ua, &mut buf);
            record(&mut h[0], t0);
        }
        for i in 0..BLOCK {
            raw[..8].copy_from_slice(&i.to_le_bytes());
            let t0 = ticks();
            send_raw(&ma, &raw);
            spin_recv(&ma.0, &mut buf);
            record(&mut h[1], t0);
        }
        for i in 0..BLOCK {
            msg[..8].copy_from_slice(&(b * BLOCK + i).to_le_bytes());
            let t0 = ticks();
            send(&mut a_pub, &msg);
            let n = await_message(&mut a_pub, &mut a_sub, &mut buf);
            record(&mut h[2], t0);
            assert_eq!(&buf[..n], &msg[..], "reply {i} of block {b}");
        }
        for i in 0..BLOCK {
            msg[..8].copy_from_slice(&(b * BLOCK + i).to_le_bytes());
            let t0 = ticks();
            api::offer(&mut na, &mut na_pub, &msg);
            na.do_work();
            let n = api::await_message(&mut na, &mut na_sub, &mut buf, true).expect("echo");
            record(&mut h[3], t0);
            assert_eq!(&buf[..n], &msg[..], "api reply {i} of block {b}");
        }
        for i in 0..BLOCK {
            msg[..8].copy_from_slice(&(b * BLOCK + i).to_le_bytes());
            let t0 = ticks();
            send(&mut ka_pub, &msg);
            let n = await_message(&mut ka_pub, &mut ka_sub, &mut buf);
            record(&mut h[4], t0);
            assert_eq!(&buf[..n], &msg[..], "authenticated reply {i} of block {b}");
        }
    }
    echo.join().expect("echo thread");
    let note =
        "interleaved in blocks of 2000 round trips with the other four kinds, same 2 pinned threads";
    vec![
        Outcome::latency("interleaved-floor-udp", 64, &h[0], note),
        Outcome::latency("interleaved-floor-mcast", 64, &h[1], note),
        Outcome::latency("interleaved-udp-pingpong", 32, &h[2], note),
        Outcome::latency("interleaved-api-udp-pingpong", 32, &h[3], note),
        Outcome::latency(
            "interleaved-udp-pingpong-auth",
            32,
            &h[4],
            "interleaved as the others; every datagram both ways carries an HMAC-SHA256 tag (16 bytes) that the other end checks",
        ),
    ]
}
