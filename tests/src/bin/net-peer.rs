//! The processes of the network tests: a publisher, a subscriber that checks every
//! byte, and a hostile sender. Options are `--name value` pairs. Each prints
//! `ready` when its socket is open, then one line per notable event, then a
//! summary; it exits 0 only if everything it checked held.
//!
//! ```text
//! net-peer publish   --group G --iface I --count N [--seed S] [--rate MSGS_PER_S]
//!                    [--flow min|max] [--receiver-timeout-ms MS] [--linger-ms MS]
//!                    [--buffer DATAGRAMS] [--one-per-datagram] [--small]
//! net-peer subscribe --group G --iface I [--count N] [--seed S] [--loss P]
//!                    [--publisher-timeout-ms MS] [--until-gone] [--id ID]
//!                    [--sessions N] [--small]
//! net-peer hostile   --group G --iface I --seconds T [--seed S]
//!                    [--attack junk|setup|setup-flood|forge-loss]
//! ```
//!
//! Message `k` is 8 bytes of `k` then bytes derived from (seed, k): mostly up to
//! 600 bytes, one in twenty up to 6000 (fragmented over several datagrams;
//! `--small`: never). A subscriber stops after message `count - 1` of its
//! `--sessions`-th session.
//! Every session is checked apart; one whose first message is not the
//! test's pattern is a stranger's (`foreign ID`, its messages counted in
//! `foreign messages N`, never mistaken for the stream's).
//! Subscriber lines: `session ID START_SEQ`, `first K` (first message after a
//! session start), `loss FROM TO after NEXT` (the datagram range, and the message
//! that was expected next), `gone MS` (publisher gone, ms after the last
//! message), `done RECEIVED` and `stats ...`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use weft_net::{ChannelConfig, Idle, LossConfig, Publication, Subscription, Waitable};
use weft_proto::wire::{self, DataWriter, Frame, Header, Heartbeat, Loss, SeqRange};
use weft_proto::{Event, FlowControl, ReceiverConfig, SenderConfig};
use weft_tests::{fill_frame, frame_matches, seq_of, splitmix};

const STREAM: u32 = 7;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(msg: &str) -> ! {
    say(&format!("error {msg}"));
    eprintln!("net-peer: {msg}");
    std::process::exit(1)
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Self {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(k) = k.strip_prefix("--") else {
                fail(&format!("expected --option, got {k:?}"))
            };
            if !OPTIONS.contains(&k) {
                fail(&format!("unknown option --{k}\n{USAGE}"));
            }
            let v = match k {
                "until-gone" | "one-per-datagram" | "small" => "1".to_string(),
                _ => it
                    .next()
                    .cloned()
                    .unwrap_or_else(|| fail(&format!("--{k} needs a value"))),
            };
            m.insert(k.to_string(), v);
        }
        Opts(m)
    }
    fn get<T: std::str::FromStr>(&self, k: &str) -> Option<T> {
        self.0.get(k).map(|v| {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("--{k} {v}: invalid")))
        })
    }
    fn req<T: std::str::FromStr>(&self, k: &str) -> T {
        self.get(k)
            .unwrap_or_else(|| fail(&format!("--{k} is required")))
    }
    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

fn channel(o: &Opts) -> ChannelConfig {
    let mut ch = ChannelConfig::new(o.req::<SocketAddrV4>("group"));
    ch.socket.interface = o.req::<String>("iface").parse().expect("infallible");
    if let Some(p) = o.get::<f64>("loss") {
        ch.loss = Some(LossConfig {
            seed: o.get("seed").unwrap_or(1),
            probability: p,
            mean_burst: 2.0,
        });
    }
    ch
}

/// The size of message `k` (`small`: never fragmented).
fn size_of_message(seed: u64, k: u64, small: bool) -> usize {
    let r = splitmix(seed ^ k.wrapping_mul(0x9E37_79B9));
    let max = if r % 20 == 0 && !small { 6000 } else { 600 };
    8 + (r >> 8) as usize % max
}

fn publish(o: &Opts) {
    let seed: u64 = o.get("seed").unwrap_or(1);
    let count: u64 = o.req("count");
    let rate: Option<f64> = o.get("rate");
    let one_per_datagram = o.flag("one-per-datagram");
    let small = o.flag("small");
    let mut cfg = SenderConfig::new(STREAM, splitmix(seed ^ std::process::id() as u64));
    cfg.flow = match o.get::<String>("flow").as_deref() {
        None | Some("min") => FlowControl::Min,
        Some("max") => FlowControl::Max,
        Some(f) => fail(&format!("--flow {f}: expected min or max")),
    };
    if let Some(ms) = o.get::<u64>("receiver-timeout-ms") {
        cfg.receiver_timeout_ns = ms * 1_000_000;
    }
    if let Some(b) = o.get::<usize>("buffer") {
        cfg.buffer_datagrams = b;
    }
    let mut publ = Publication::open(&channel(o), cfg).unwrap_or_else(|e| fail(&e.to_string()));
    if let Some(w) = publ.buffer_grant().warning() {
        eprintln!("net-peer: warning: {w}");
    }
    say(&format!(
        "ready {} session {:x}",
        publ.local_addr().map_or("?".into(), |a| a.to_string()),
        publ.sender().session_id()
    ));
    let mut idle = Idle::backoff();
    // `--receivers N`: publish only once N receivers are in flow control, so
    // that a receiver whose first STATUS was lost is not left behind (a
    // receiver joins flow control with its first STATUS; until then the
    // sender may run ahead of it and retire data it never got).
    if let Some(n) = o.get::<usize>("receivers") {
        let deadline = Instant::now() + Duration::from_secs(60);
        while publ.sender().receivers() < n {
            if Instant::now() > deadline {
                fail(&format!(
                    "only {} of {n} receivers after 60 s",
                    publ.sender().receivers()
                ));
            }
            let work = publ.do_work();
            idle.idle(work, &[&publ as &dyn Waitable]);
        }
    }
    let mut buf = vec![0u8; 6100];
    let started = Instant::now();
    let mut k = 0u64;
    while k < count {
        let mut work = 0;
        for _ in 0..64 {
            if k == count {
                break;
            }
            if let Some(r) = rate {
                if (k as f64) > started.elapsed().as_secs_f64() * r {
                    break;
                }
            }
            let len = size_of_message(seed, k, small);
            fill_frame(seed, k, &mut buf[..len]);
            if publ.offer(&buf[..len]).is_err() {
                break;
            }
            k += 1;
            work += 1;
            if one_per_datagram {
                break;
            }
        }
        work += publ.do_work();
        if rate.is_some() && work == 0 {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            idle.idle(work, &[&publ as &dyn Waitable]);
        }
    }
    say(&format!("sent {count}"));
    // Serve NAKs for a while so every receiver can finish.
    let linger = Duration::from_millis(o.get("linger-ms").unwrap_or(2000));
    let until = Instant::now() + linger;
    while Instant::now() < until {
        let work = publ.do_work();
        idle.idle(work, &[&publ as &dyn Waitable]);
    }
    say(&format!("stats {:?}", publ.stats()));
}

fn subscribe(o: &Opts) {
    let seed: u64 = o.get("seed").unwrap_or(1);
    let count: Option<u64> = o.get("count");
    let until_gone = o.flag("until-gone");
    let small = o.flag("small");
    let want_sessions: u32 = o.get("sessions").unwrap_or(1);
    let mut cfg = ReceiverConfig::new(STREAM, o.get("id").unwrap_or(std::process::id() as u64));
    if let Some(ms) = o.get::<u64>("publisher-timeout-ms") {
        cfg.publisher_timeout_ns = ms * 1_000_000;
    }
    let mut sub = Subscription::open(&channel(o), cfg).unwrap_or_else(|e| fail(&e.to_string()));
    if let Some(w) = sub.buffer_grant().warning() {
        eprintln!("net-peer: warning: {w}");
    }
    say("ready");
    let mut idle = Idle::backoff();
    let mut received = 0u64;
    let mut foreign = 0u64;
    // Per session: the next message number expected (None right after its
    // start or a loss), and whether it is the test's publisher (its first
    // message checked out) or a stranger's (it did not: ignored, counted).
    let mut streams: HashMap<u64, (Option<u64>, Option<bool>)> = HashMap::new();
    // Loss lines of sessions not yet known to be ours, said once they are.
    let mut held_lines: HashMap<u64, Vec<String>> = HashMap::new();
    let mut last_msg_at = Instant::now();
    let mut sessions = 0;
    loop {
        let work = sub.do_work();
        let mut done = false;
        while let Some(e) = sub.poll_event() {
            match e {
                Event::Message {
                    session_id,
                    message: m,
                } => {
                    let (next, ours) = streams.entry(session_id).or_insert((None, None));
                    let valid = seq_of(m).filter(|&k| {
                        frame_matches(seed, k, m) && m.len() == size_of_message(seed, k, small)
                    });
                    if *ours == Some(false) || (ours.is_none() && valid.is_none()) {
                        if ours.is_none() {
                            say(&format!("foreign {session_id:x}"));
                        }
                        *ours = Some(false);
                        foreign += 1;
                        continue;
                    }
                    let Some(k) = valid else {
                        fail(&format!(
                            "session {session_id:x}, after message {next:?}: contents or length wrong ({} bytes)",
                            m.len()
                        ))
                    };
                    if ours.is_none() {
                        *ours = Some(true);
                        sessions += 1;
                        for l in held_lines.remove(&session_id).unwrap_or_default() {
                            say(&l);
                        }
                    }
                    match *next {
                        None => say(&format!("first {k}")),
                        Some(n) if n != k => fail(&format!("expected message {n}, got {k}")),
                        Some(_) => {}
                    }
                    *next = Some(k + 1);
                    received += 1;
                    last_msg_at = Instant::now();
                    if count.is_some_and(|c| k + 1 == c) && !until_gone && sessions >= want_sessions
                    {
                        done = true;
                    }
                }
                Event::StampedMessage { .. } => {
                    fail("a stamped message (this publisher sends none)")
                }
                Event::Loss {
                    session_id, range, ..
                } => {
                    // Messages skipped are learned from the next message's number.
                    let (next, ours) = streams.entry(session_id).or_insert((None, None));
                    let line = format!(
                        "loss {} {} after {}",
                        range.from,
                        range.to,
                        next.unwrap_or(0)
                    );
                    match ours {
                        Some(true) => say(&line),
                        Some(false) => {}
                        None => held_lines.entry(session_id).or_default().push(line),
                    }
                    *next = None;
                }
                Event::NewSession {
                    session_id,
                    start_seq,
                } => {
                    say(&format!("session {session_id:x} {start_seq}"));
                    streams.entry(session_id).or_insert((None, None)).0 = None;
                }
                Event::PublisherGone { session_id } => {
                    if streams.get(&session_id).is_some_and(|s| s.1 == Some(false)) {
                        continue; // a stranger's session ended
                    }
                    say(&format!("gone {}", last_msg_at.elapsed().as_millis()));
                    if until_gone && sessions > 0 {
                        done = true;
                    }
                }
            }
            if done {
                break;
            }
        }
        if done {
            break;
        }
        idle.idle(work, &[&sub as &dyn Waitable]);
    }
    if foreign > 0 {
        say(&format!("foreign messages {foreign}"));
    }
    say(&format!("done {received}"));
    say(&format!("stats {:?}", sub.stats()));
}

/// A hostile neighbour on the group, by `--attack`:
/// - `junk` (default): as fast as it can, random bytes, truncated frames,
///   frames of another version, and well-formed frames of a foreign session on
///   the same stream;
/// - `setup`: one 32-byte SETUP of a foreign session, then `setup-flood`:
///   SETUPs of random sessions as fast as it can;
/// - `forge-loss`: listens on the group for the real stream's session id and
///   position, then sends LOSS frames and heartbeats in that session claiming
///   everything up to 2^40 is gone.
fn hostile(o: &Opts) {
    match o.get::<String>("attack").as_deref().unwrap_or("junk") {
        "junk" => hostile_junk(o),
        "setup" | "setup-flood" => hostile_setups(o),
        "forge-loss" => hostile_forge_loss(o),
        other => fail(&format!("unknown attack {other:?}")),
    }
}

/// A socket to send hostile datagrams from, and the group's address.
fn hostile_socket(ch: &ChannelConfig) -> (socket2::Socket, socket2::SockAddr) {
    let (sock, _) =
        weft_net::unicast_socket(0, &ch.socket).unwrap_or_else(|e| fail(&e.to_string()));
    (sock, ch.group.into())
}

fn hostile_setups(o: &Opts) {
    let seed: u64 = o.get("seed").unwrap_or(99);
    let seconds: f64 = o.req("seconds");
    let (sock, to) = hostile_socket(&channel(o));
    say("ready");
    let mut buf = [0u8; 64];
    let setup = |session_id: u64, initial_seq: u64, buf: &mut [u8]| {
        let header = Header {
            stream_id: STREAM,
            session_id,
        };
        let setup = wire::Setup {
            initial_seq,
            mtu: 1408,
        };
        Frame::Setup(setup).emit(header, buf).expect("fits")
    };
    // The single datagram that used to hijack the stream.
    let n = setup(0xBAD_5E55, 0, &mut buf);
    assert_eq!(n, 32);
    let mut sent = sock.send_to(&buf[..n], &to).is_ok() as u64;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let r = splitmix(seed ^ i);
        let n = setup(r | 1, r >> 20, &mut buf);
        if sock.send_to(&buf[..n], &to).is_ok() {
            sent += 1;
        }
    }
    say(&format!("sent {sent}"));
}

fn hostile_forge_loss(o: &Opts) {
    let seconds: f64 = o.req("seconds");
    let ch = channel(o);
    let (listen, _) =
        weft_net::group_socket(ch.group, &ch.socket).unwrap_or_else(|e| fail(&e.to_string()));
    let (sock, to) = hostile_socket(&ch);
    say("ready");
    // Any datagram of the stream shows its session id: wait for a DATA.
    let listen: std::net::UdpSocket = listen.into();
    let mut bytes = [0u8; 2048];
    let (session_id, seq) = loop {
        match listen.recv(&mut bytes) {
            Ok(n) => {
                if let Ok((h, Frame::Data(d))) = Frame::parse(&bytes[..n]) {
                    if h.stream_id == STREAM {
                        break (h.session_id, d.seq);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(100))
            }
            Err(e) => fail(&e.to_string()),
        }
    };
    say(&format!("session {session_id:x} at {seq}"));
    let header = Header {
        stream_id: STREAM,
        session_id,
    };
    let mut buf = [0u8; 64];
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut sent, mut i) = (0u64, 0u64);
    while Instant::now() < until {
        i += 1;
        let frame = if i % 2 == 0 {
            Frame::Loss(Loss {
                range: SeqRange {
                    from: seq,
                    to: 1 << 40,
                },
            })
        } else {
            Frame::Heartbeat(Heartbeat {
                next_seq: 1 << 40,
                oldest_seq: (1 << 40) - 1,
            })
        };
        let n = frame.emit(header, &mut buf).expect("fits");
        if sock.send_to(&buf[..n], &to).is_ok() {
            sent += 1;
        }
        // A steady trickle, not a flood: what is tested is the claim.
        std::thread::sleep(Duration::from_micros(200));
    }
    say(&format!("sent {sent}"));
}

fn hostile_junk(o: &Opts) {
    let seed: u64 = o.get("seed").unwrap_or(99);
    let seconds: f64 = o.req("seconds");
    let (sock, to) = hostile_socket(&channel(o));
    say("ready");
    let header = Header {
        stream_id: STREAM,
        session_id: 0xBAD_5E55,
    };
    let mut buf = [0u8; 1500];
    let mut good = [0u8; 1500];
    let mut sent = 0u64;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let r = splitmix(seed ^ i);
        // A well-formed foreign frame: DATA, heartbeat or LOSS of another session.
        let glen = match r % 3 {
            0 => {
                let mut w = DataWriter::new(&mut good, header, i, 0, 0).expect("fits");
                w.push(b"not yours", wire::ENTRY_BEGIN | wire::ENTRY_END)
                    .expect("fits");
                w.finish().expect("fits")
            }
            1 => Frame::Heartbeat(Heartbeat {
                next_seq: i + 10,
                oldest_seq: i,
            })
            .emit(header, &mut good)
            .expect("fits"),
            _ => Frame::Loss(Loss {
                range: SeqRange { from: 0, to: i },
            })
            .emit(header, &mut good)
            .expect("fits"),
        };
        let len = match (r >> 8) % 4 {
            // Random bytes, sometimes starting with the magic.
            0 => {
                let n = 1 + (r >> 16) as usize % 1400;
                for (j, b) in buf[..n].iter_mut().enumerate() {
                    *b = splitmix(r ^ j as u64) as u8;
                }
                if r & 1 == 0 && n >= 2 {
                    buf[..2].copy_from_slice(b"WF");
                }
                n
            }
            // Truncated.
            1 => {
                let n = (r >> 16) as usize % glen;
                buf[..n].copy_from_slice(&good[..n]);
                n
            }
            // Another version.
            2 => {
                buf[..glen].copy_from_slice(&good[..glen]);
                buf[2] = 9;
                glen
            }
            // Well-formed, foreign session.
            _ => {
                buf[..glen].copy_from_slice(&good[..glen]);
                glen
            }
        };
        if sock.send_to(&buf[..len], &to).is_ok() {
            sent += 1;
        }
    }
    say(&format!("sent {sent}"));
}

const USAGE: &str = "\
usage: net-peer publish   --group G --iface I --count N [--seed S] [--rate MSGS_PER_S]
                          [--flow min|max] [--receiver-timeout-ms MS] [--linger-ms MS]
                          [--buffer DATAGRAMS] [--receivers N] [--one-per-datagram] [--small]
       net-peer subscribe --group G --iface I [--count N] [--seed S] [--loss P]
                          [--publisher-timeout-ms MS] [--until-gone] [--id ID]
                          [--sessions N] [--small]
       net-peer hostile   --group G --iface I --seconds T [--seed S]
                          [--attack junk|setup|setup-flood|forge-loss]
(the processes of the network tests; see the doc comment of tests/src/bin/net-peer.rs)";

/// Every option any role takes (a typo is an error, not a default).
const OPTIONS: &[&str] = &[
    "group",
    "iface",
    "count",
    "seed",
    "rate",
    "flow",
    "receiver-timeout-ms",
    "linger-ms",
    "buffer",
    "receivers",
    "one-per-datagram",
    "small",
    "loss",
    "publisher-timeout-ms",
    "until-gone",
    "id",
    "sessions",
    "seconds",
    "attack",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let Some((role, rest)) = args.split_first() else {
        fail(USAGE)
    };
    let o = Opts::parse(rest);
    match role.as_str() {
        "publish" => publish(&o),
        "subscribe" => subscribe(&o),
        "hostile" => hostile(&o),
        _ => fail(&format!("unknown role {role:?}")),
    }
}
