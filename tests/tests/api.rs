//! The weft API end to end: agents running tasks in every threading mode and
//! idle strategy, and tasks moved between agents while messages flow.

use std::time::{Duration, Instant};

use weft::{AgentConfig, AgentError, Agents, IdleStrategy, Task, ThreadingMode};
use weft_shm::spsc;

/// Forwards 8-byte sequence numbers from one ring to another, up to 64 per call.
struct Forward {
    rx: spsc::Consumer,
    tx: spsc::Producer,
}

impl Task for Forward {
    fn name(&self) -> &str {
        "forward"
    }
    fn do_work(&mut self, _now_ns: u64) -> usize {
        let mut n = 0;
        while n < 64 {
            // Claim first, so a frame is only taken when it can be passed on.
            let Ok(mut claim) = self.tx.try_claim(8, 1) else {
                break;
            };
            let mut got = false;
            let _ = self.rx.poll(1, |f| {
                claim.payload_mut().copy_from_slice(f.payload());
                got = true;
            });
            if !got {
                break; // the claim drops uncommitted: abandoned
            }
            claim.commit();
            n += 1;
        }
        n
    }
}

/// Does nothing, ever.
struct Nothing;

impl Task for Nothing {
    fn name(&self) -> &str {
        "nothing"
    }
    fn do_work(&mut self, _now_ns: u64) -> usize {
        0
    }
}

fn rings() -> (
    (spsc::Producer, spsc::Consumer),
    (spsc::Producer, spsc::Consumer),
) {
    let cfg = spsc::SpscConfig::new(64 * 1024);
    (spsc::channel(cfg).unwrap(), spsc::channel(cfg).unwrap())
}

/// 1,000,000 sequence numbers pass through a task that is moved between two
/// agents (each on its own thread) every 2,000 messages or so: every number
/// arrives once, in order.
#[test]
fn moving_a_task_while_a_million_messages_flow_loses_and_duplicates_nothing() {
    let total = weft_tests::scaled(1_000_000);
    let ((mut src, rx), (tx, mut sink)) = rings();
    let mut agents = Agents::new(
        vec![AgentConfig::new("a"), AgentConfig::new("b")],
        ThreadingMode::Dedicated,
        IdleStrategy::backoff(),
    )
    .unwrap();
    let id = agents.add_task(0, Box::new(Forward { rx, tx })).unwrap();
    agents.add_task(1, Box::new(Nothing)).unwrap();
    agents.start().unwrap();
    let (mut sent, mut next, mut moves, mut to) = (0u64, 0u64, 0u64, 1usize);
    let mut last_move = 0;
    let started = Instant::now();
    while next < total {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stalled at {next}"
        );
        while sent < total && src.offer(1, &sent.to_le_bytes()).is_ok() {
            sent += 1;
        }
        let _ = sink.poll(256, |f| {
            let v = u64::from_le_bytes(f.payload().try_into().unwrap());
            assert_eq!(v, next, "after {moves} moves");
            next += 1;
        });
        if next >= last_move + 2_000 {
            last_move = next;
            match agents.move_task(id, to) {
                Ok(t) => {
                    t.wait(Duration::from_secs(10)).unwrap();
                    moves += 1;
                    to = 1 - to;
                }
                Err(AgentError::InTransit(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        std::thread::yield_now();
    }
    assert!(moves >= total / 4_000, "only {moves} moves");
    let stats = agents.task_stats();
    assert_eq!(stats[0].work, total, "{stats:?}");
    assert_eq!(stats[0].agent, Some(1 - to));
    agents.stop().unwrap();
    let tasks = agents.take_tasks().unwrap();
    assert_eq!(tasks.len(), 2, "both tasks still exist");
    eprintln!("{total} messages, {moves} moves");
}

/// Every mode runs every task, and the accounting adds up: the working task
/// has busy time and the idle one none; every call is counted.
#[test]
fn every_threading_mode_runs_its_tasks_and_accounts_for_them() {
    for mode in [
        ThreadingMode::Invoker,
        ThreadingMode::Shared,
        ThreadingMode::Dedicated,
    ] {
        for idle in [
            IdleStrategy::BusySpin,
            IdleStrategy::Yield,
            IdleStrategy::backoff(),
            IdleStrategy::Sleep(Duration::from_micros(50)),
        ] {
            let ((mut src, rx), (tx, mut sink)) = rings();
            let mut cfg = [AgentConfig::new("work"), AgentConfig::new("idle")];
            for c in &mut cfg {
                c.idle = idle;
            }
            let mut agents = Agents::new(cfg.to_vec(), mode, idle).unwrap();
            agents.add_task(0, Box::new(Forward { rx, tx })).unwrap();
            agents.add_task(1, Box::new(Nothing)).unwrap();
            agents.start().unwrap();
            let total = 20_000u64;
            let (mut sent, mut next) = (0u64, 0u64);
            while next < total {
                while sent < total && src.offer(1, &sent.to_le_bytes()).is_ok() {
                    sent += 1;
                }
                if mode == ThreadingMode::Invoker {
                    agents.invoke();
                } else {
                    std::thread::yield_now();
                }
                let _ = sink.poll(256, |f| {
                    assert_eq!(f.payload(), next.to_le_bytes());
                    next += 1;
                });
            }
            agents.stop().unwrap();
            let (a, t) = (agents.agent_stats(), agents.task_stats());
            assert_eq!(t[0].work, total, "{mode:?} {idle:?}");
            assert!(t[0].busy_ns > 0 && t[0].busy_ns <= t[0].total_ns);
            assert_eq!((t[1].work, t[1].busy_ns), (0, 0));
            assert!(a[0].busy_ns > 0 && a[1].busy_ns == 0, "{a:?}");
            assert!(a[0].duty_cycles >= t[0].calls.min(1));
            assert_eq!(t[0].calls, a[0].duty_cycles, "one call per cycle");
            assert!((0.0..=1.0).contains(&a[0].utilization()));
            assert_eq!((a[0].tasks, a[1].tasks), (1, 1));
        }
    }
}

/// A node in a fresh temporary directory.
fn node(threading: ThreadingMode) -> (weft::Node, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "weft-api-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let cfg = weft::NodeConfig {
        dir: dir.clone(),
        threading,
        shm_capacity: 64 * 1024,
        ..weft::NodeConfig::default()
    };
    (weft::Node::new(cfg).unwrap(), dir)
}

static NEXT_DIR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A multicast group on loopback with a port nobody holds.
fn udp_uri() -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("udp://239.77.50.{}:{port}", port % 200 + 1)
}

/// Polls `sub` (and runs the node's work in invoker mode) until `want` messages
/// arrived; returns every event seen, messages as their u64 value.
fn receive(
    node: &mut weft::Node,
    sub: &mut weft::Subscription,
    want: usize,
) -> (Vec<u64>, Vec<String>) {
    let (mut msgs, mut events) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while msgs.len() < want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "got {} of {want}: {events:?}",
            msgs.len()
        );
        node.do_work();
        sub.poll(64, |e| match e {
            weft::Event::Message(m) => msgs.push(u64::from_le_bytes(m.try_into().unwrap())),
            other => events.push(format!("{other:?}")),
        })
        .unwrap();
    }
    (msgs, events)
}

/// Both transports, same calls: not connected before a subscriber; a new
/// session when it connects; then every message in order, through `offer`,
/// `offer_pod` and `try_claim`; and the publisher's departure is reported.
#[test]
fn shm_and_udp_channels_have_the_same_shape() {
    for mode in [ThreadingMode::Invoker, ThreadingMode::Dedicated] {
        let (mut node, dir) = node(mode);
        for uri in [
            "shm:prices".to_string(),
            "shm:prices-many?publishers=many".to_string(),
            udp_uri(),
        ] {
            let mut publ = node.publication(&uri, 7).unwrap();
            assert_eq!(
                publ.offer(&0u64.to_le_bytes()),
                Err(weft::PublishError::NotConnected),
                "{uri}"
            );
            let mut sub = node.subscription(&uri, 7).unwrap();
            let mut events = Vec::new();
            let started = Instant::now();
            while !publ.is_connected() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{uri}: never connected"
                );
                node.do_work();
                sub.poll(16, |e| events.push(format!("{e:?}"))).unwrap();
            }
            let total = 3000u64;
            let mut got = Vec::new();
            let mut i = 0u64;
            while i < total {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{uri}: stuck at {i}"
                );
                node.do_work();
                let r = match i % 3 {
                    0 => publ.offer(&i.to_le_bytes()),
                    1 => publ.offer_pod(&i),
                    _ => publ.try_claim(8).map(|mut c| {
                        c.payload_mut().copy_from_slice(&i.to_le_bytes());
                        c.commit()
                    }),
                };
                match r {
                    Ok(()) => i += 1,
                    Err(weft::PublishError::BackPressured) => {}
                    Err(e) => panic!("{uri}: {e} at {i}"),
                }
                sub.poll(64, |e| match e {
                    weft::Event::Message(m) => got.push(u64::from_le_bytes(m.try_into().unwrap())),
                    other => events.push(format!("{other:?}")),
                })
                .unwrap();
            }
            let (rest, more) = receive(
                &mut node,
                &mut sub,
                (total as usize).saturating_sub(got.len()),
            );
            got.extend(rest);
            events.extend(more);
            assert_eq!(got, (0..total).collect::<Vec<_>>(), "{uri} {mode:?}");
            assert!(
                events.len() == 1 && events[0].starts_with("NewSession"),
                "{uri}: {events:?}"
            );
            drop(publ);
            let started = Instant::now();
            let mut gone = false;
            while !gone {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{uri}: publisher never gone"
                );
                node.do_work();
                sub.poll(16, |e| {
                    gone |= matches!(e, weft::Event::PublisherGone { .. })
                })
                .unwrap();
            }
        }
        node.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_bad_uri_is_an_error_that_quotes_it() {
    let (mut node, dir) = node(ThreadingMode::Invoker);
    let e = node.publication("udp://239.1.2.3:x", 1).unwrap_err();
    assert!(e.to_string().contains("\"x\": expected a port"), "{e}");
    let e = node.subscription("tcp://host:1", 1).unwrap_err();
    assert!(e.to_string().contains("shm:"), "{e}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The largest message of a shared-memory channel, with latency sampling off,
/// on every message, and on one in three (a sampled message gives up 8 bytes
/// for its stamp, so all messages do): `max_message` bytes go through both
/// `offer` and `try_claim`, one byte more is refused whole as `TooLarge`
/// naming both sizes, and the subscriber gets exactly the accepted messages.
#[test]
fn a_message_over_the_largest_is_refused_whole() {
    for sample_every in [0, 1, 3] {
        let dir = std::env::temp_dir().join(format!(
            "weft-api-sizes-{}-{sample_every}",
            std::process::id()
        ));
        let mut node = weft::Node::new(weft::NodeConfig {
            dir: dir.clone(),
            threading: ThreadingMode::Invoker,
            shm_capacity: 64 * 1024,
            latency_sample_every: sample_every,
            ..weft::NodeConfig::default()
        })
        .unwrap();
        let mut publ = node.publication("shm:sizes", 1).unwrap();
        let mut sub = node.subscription("shm:sizes", 1).unwrap();
        let started = Instant::now();
        while !publ.is_connected() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never connected"
            );
            sub.poll(16, |_| {}).unwrap();
        }
        let max = publ.max_message();
        let too_large = weft::PublishError::TooLarge { len: max + 1, max };
        let (mut sent, mut got) = (0u8, Vec::new());
        while sent < 12 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "stuck at {sent}"
            );
            assert_eq!(publ.offer(&vec![sent; max + 1]), Err(too_large));
            assert_eq!(publ.try_claim(max + 1).err(), Some(too_large));
            let r = if sent % 2 == 0 {
                publ.offer(&vec![sent; max])
            } else {
                publ.try_claim(max).map(|mut c| {
                    c.payload_mut().fill(sent);
                    c.commit()
                })
            };
            match r {
                Ok(()) => sent += 1,
                Err(weft::PublishError::BackPressured) => {}
                Err(e) => panic!("sample_every {sample_every}: {e} at {sent}"),
            }
            take_messages(&mut sub, &mut got);
        }
        while got.len() < 12 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "got {}",
                got.len()
            );
            take_messages(&mut sub, &mut got);
        }
        let want: Vec<Vec<u8>> = (0..12).map(|i| vec![i; max]).collect();
        assert_eq!(got, want, "sample_every {sample_every}");
        drop((publ, sub, node));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Polls `sub` once, appending the messages it hands out to `got`.
fn take_messages(sub: &mut weft::Subscription, got: &mut Vec<Vec<u8>>) {
    sub.poll(64, |e| {
        if let weft::Event::Message(m) = e {
            got.push(m.to_vec())
        }
    })
    .unwrap();
}

/// Another process's view: a move written into the node's control ring in
/// shared memory is applied, and a move of an unknown task is refused.
#[test]
fn a_move_written_to_the_control_ring_is_applied() {
    let dir = std::env::temp_dir().join(format!("weft-api-control-{}", std::process::id()));
    let node = weft::Node::new(weft::NodeConfig {
        dir: dir.clone(),
        agents: 2,
        ..weft::NodeConfig::default()
    })
    .unwrap();
    let id = node.add_task(0, Box::new(Nothing)).unwrap();
    let ring = node.control_ring().unwrap().to_string();
    let task_agent = |node: &weft::Node| {
        node.task_stats()
            .into_iter()
            .find(|t| t.id == id)
            .unwrap()
            .agent
    };
    let started = Instant::now();
    while task_agent(&node) != Some(0) {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1));
    }
    weft::control::request_move(&dir, &ring, id, 1).unwrap();
    weft::control::request_move(&dir, &ring, weft::TaskId(999_999), 1).unwrap();
    while task_agent(&node) != Some(1) || node.control_stats().rejected() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            node.task_stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        (
            node.control_stats().applied(),
            node.control_stats().rejected()
        ),
        (1, 1)
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway republishes a UDP stream into a shared-memory ring: a local
/// subscriber sees the ring's own session, then the upstream publisher's
/// session, every message in order, and the upstream publisher's departure.
#[test]
fn a_gateway_passes_messages_and_session_events_to_local_subscribers() {
    let dir = std::env::temp_dir().join(format!("weft-api-gw-{}", std::process::id()));
    let cfg = || weft::NodeConfig {
        dir: dir.clone(),
        ..weft::NodeConfig::default()
    };
    let udp = udp_uri();
    let mut host = weft::Node::new(cfg()).unwrap();
    let gateway = host.gateway_in(&udp, "shm:gw", 3).unwrap();
    let mut local = host.subscription("shm:gw", 3).unwrap();
    let mut events = Vec::new();
    let started = Instant::now();
    while !local.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never attached"
        );
        local.poll(16, |e| events.push(format!("{e:?}"))).unwrap();
    }
    let mut remote = weft::Node::new(cfg()).unwrap();
    let mut publ = Some(remote.publication(&udp, 3).unwrap());
    let total = 1000u64;
    let mut got = Vec::new();
    let mut sent = 0u64;
    let mut gone = false;
    while !gone {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{sent} sent, {events:?}"
        );
        if let Some(p) = &mut publ {
            if p.offer_pod(&sent).is_ok() {
                sent += 1;
                if sent == total {
                    // The last publication goes: after its linger the upstream
                    // publisher falls silent, and the gateway reports it gone.
                    publ = None;
                }
            }
        }
        local
            .poll(64, |e| match e {
                weft::Event::Message(m) => got.push(u64::from_le_bytes(m.try_into().unwrap())),
                weft::Event::PublisherGone { .. } => gone = true,
                other => events.push(format!("{other:?}")),
            })
            .unwrap();
    }
    assert_eq!(got, (0..total).collect::<Vec<_>>());
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events.iter().all(|e| e.starts_with("NewSession")),
        "{events:?}"
    );
    assert_ne!(
        events[0], events[1],
        "the ring's session, then the upstream one"
    );
    drop(gateway);
    drop((remote, local, host));
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `flow=none` and a seeded 30 % loss on the gateway's receive, the
/// publisher runs ahead of repairs: whatever is lost for good reaches the
/// local subscriber as a Loss event, never as a silent gap, and what arrives
/// arrives in order.
#[test]
fn losses_pass_through_a_gateway_never_as_a_silent_gap() {
    let dir = std::env::temp_dir().join(format!("weft-api-gwloss-{}", std::process::id()));
    let mut lossy = weft::NodeConfig {
        dir: dir.clone(),
        ..weft::NodeConfig::default()
    };
    lossy.udp.loss = Some(weft_net::LossConfig {
        seed: 11,
        probability: 0.3,
        mean_burst: 4.0,
    });
    let udp = udp_uri();
    let mut host = weft::Node::new(lossy).unwrap();
    let gateway = host.gateway_in(&udp, "shm:lossy", 5).unwrap();
    let mut local = host.subscription("shm:lossy", 5).unwrap();
    let started = Instant::now();
    while !local.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never attached"
        );
        local.poll(16, |_| {}).unwrap();
    }
    let mut remote = weft::Node::new(weft::NodeConfig {
        dir: dir.clone(),
        ..weft::NodeConfig::default()
    })
    .unwrap();
    let mut publ = Some(remote.publication(&format!("{udp}?flow=none"), 5).unwrap());
    let total = weft_tests::scaled(30_000);
    let payload = [0u8; 1000]; // one message per datagram: the buffer holds 4096
    let (mut sent, mut received, mut losses, mut lost_datagrams) = (0u64, 0u64, 0u64, 0u64);
    let mut last: Option<u64> = None;
    let mut loss_since_last = false;
    let mut gone = false;
    while !gone {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{sent} sent, {received} received"
        );
        if let Some(p) = &mut publ {
            if let Ok(mut c) = p.try_claim(payload.len()) {
                let b = c.payload_mut();
                b.copy_from_slice(&payload);
                b[..8].copy_from_slice(&sent.to_le_bytes());
                c.commit();
                sent += 1;
            }
        }
        if sent == total {
            publ = None;
        }
        local
            .poll(64, |e| match e {
                weft::Event::Message(m) => {
                    let v = u64::from_le_bytes(m[..8].try_into().unwrap());
                    let expected = last.map_or(0, |l| l + 1);
                    assert!(
                        v == expected || (v > expected && loss_since_last),
                        "message {v} after {last:?} with no Loss event between"
                    );
                    last = Some(v);
                    loss_since_last = false;
                    received += 1;
                }
                weft::Event::Loss { from, to, .. } => {
                    losses += 1;
                    lost_datagrams += to - from;
                    loss_since_last = true;
                }
                weft::Event::PublisherGone { .. } => gone = true,
                weft::Event::NewSession { .. } => {}
            })
            .unwrap();
    }
    eprintln!("{sent} sent, {received} received in order, {losses} Loss events");
    assert!(received > 0);
    // The host's loss report has them all, under the gateway's stream.
    let report = weft::weft_counters::CountersReader::open(host.counters().path().unwrap())
        .unwrap()
        .loss_report();
    let (events, datagrams) = report
        .iter()
        .filter(|l| l.stream == 5)
        .fold((0, 0), |(e, d), l| (e + l.events, d + l.datagrams));
    assert_eq!((events, datagrams), (losses, lost_datagrams), "{report:#?}");
    drop(gateway);
    drop((remote, local, host));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not a test of its own: a publishing process that
/// `several_processes_publish_one_shm_channel` starts. Publishes
/// `WEFT_API_COUNT` messages `(id << 32) | i` on `shm:fanin?publishers=many`;
/// with `WEFT_API_CHILD_LINGER`, the second half slowly (so that it is
/// killed mid-stream), then waits to be killed; with `WEFT_API_CHILD_HOLD`,
/// it then claims one more message, says "claimed" and waits to be killed
/// with the claim open.
#[test]
fn child_fanin_publisher() {
    let (Ok(dir), Ok(id), Ok(count)) = (
        std::env::var("WEFT_API_CHILD_DIR"),
        std::env::var("WEFT_API_CHILD_ID"),
        std::env::var("WEFT_API_COUNT"),
    ) else {
        return;
    };
    let (id, count): (u64, u64) = (id.parse().unwrap(), count.parse().unwrap());
    let linger = std::env::var("WEFT_API_CHILD_LINGER").is_ok();
    let hold = std::env::var("WEFT_API_CHILD_HOLD").is_ok();
    let mut node = weft::Node::new(weft::NodeConfig {
        dir: dir.into(),
        threading: ThreadingMode::Invoker,
        shm_capacity: 64 * 1024,
        control_ring: false,
        ..weft::NodeConfig::default()
    })
    .unwrap();
    let mut publ = node.publication("shm:fanin?publishers=many", 3).unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < count {
        assert!(started.elapsed() < Duration::from_secs(60), "stuck at {i}");
        match publ.offer_pod(&((id << 32) | i)) {
            Ok(()) => {
                i += 1;
                if i == count / 2 {
                    println!("half");
                }
                if linger && i > count / 2 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            Err(weft::PublishError::BackPressured | weft::PublishError::NotConnected) => {
                std::thread::yield_now()
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!("done");
    if hold {
        let claim = loop {
            match publ.try_claim(8) {
                Ok(c) => break c,
                Err(weft::PublishError::BackPressured | weft::PublishError::NotConnected) => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("{e}"),
            }
        };
        println!("claimed");
        std::thread::sleep(Duration::from_secs(120));
        drop(claim);
    }
    if linger {
        std::thread::sleep(Duration::from_secs(120));
    }
}

/// Polls a fan-in subscription once: messages checked with [`in_order`],
/// other events kept as text.
fn poll_fanin(sub: &mut weft::Subscription, next: &mut [u64; 3], events: &mut Vec<String>) {
    sub.poll(256, |e| match e {
        weft::Event::Message(m) => in_order(next, m),
        other => events.push(format!("{other:?}")),
    })
    .unwrap();
}

/// Checks message `(id << 32) | i` is publisher `id`'s next, and counts it.
fn in_order(next: &mut [u64; 3], m: &[u8]) {
    let v = u64::from_le_bytes(m.try_into().unwrap());
    let (id, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
    assert_eq!(i, next[id], "publisher {id}: out of order or lost");
    next[id] += 1;
}

/// A child publisher process.
fn spawn_publisher(
    dir: &std::path::Path,
    id: u64,
    count: u64,
    linger: bool,
) -> std::process::Child {
    spawn_publisher_with(
        dir,
        id,
        count,
        if linger { "WEFT_API_CHILD_LINGER" } else { "" },
    )
}

/// A child publisher process; `flag` names an environment variable to set
/// (`WEFT_API_CHILD_LINGER`, `WEFT_API_CHILD_HOLD`) or is empty.
fn spawn_publisher_with(
    dir: &std::path::Path,
    id: u64,
    count: u64,
    flag: &str,
) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_fanin_publisher",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("WEFT_API_CHILD_DIR", dir)
    .env("WEFT_API_CHILD_ID", id.to_string())
    .env("WEFT_API_COUNT", count.to_string())
    .stdout(std::process::Stdio::piped());
    if !flag.is_empty() {
        cmd.env(flag, "1");
    }
    cmd.spawn().unwrap()
}

/// Reads `child`'s output up to a line ending in `word` (past the test
/// harness's own "test … ..." prefix).
fn wait_for_word(out: &mut impl std::io::BufRead, word: &str) {
    let mut line = String::new();
    while !line.trim_end().ends_with(word) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no {word:?} line");
    }
}

/// A `publishers=many` publisher killed with `kill -9` while it holds a
/// claim, and never reaped (a zombie, as under a parent that does not wait
/// or a container's PID 1): it counts as dead, so its open claim is skipped
/// and the publishers after it are delivered in full, each in order, while
/// the zombie still exists. (Failed before: a zombie counted as alive, the
/// subscriber waited on its claim, and the others stayed back-pressured
/// until the parent reaped it.)
#[test]
fn a_killed_unreaped_publisher_does_not_wedge_a_many_publisher_channel() {
    const COUNT: u64 = 20_000;
    let (mut node, dir) = node(ThreadingMode::Invoker);
    let mut sub = node.subscription("shm:fanin", 3).unwrap();
    let mut zombie = spawn_publisher_with(&dir, 2, 10, "WEFT_API_CHILD_HOLD");
    let mut out = std::io::BufReader::new(zombie.stdout.take().unwrap());
    // The subscription attaches when polled: poll while the child starts.
    let claimed = std::thread::spawn(move || wait_for_word(&mut out, "claimed"));
    let mut next = [0u64; 3];
    let mut events = Vec::new();
    while !claimed.is_finished() {
        poll_fanin(&mut sub, &mut next, &mut events);
        std::thread::sleep(Duration::from_millis(1));
    }
    claimed.join().unwrap();
    let zpid = nix::unistd::Pid::from_raw(zombie.id() as i32);
    nix::sys::signal::kill(zpid, nix::sys::signal::Signal::SIGKILL).unwrap();
    // Not reaped: the kernel keeps it as a zombie until we wait.
    let mut survivors: Vec<_> = (0..2)
        .map(|id| spawn_publisher(&dir, id, COUNT, false))
        .collect();
    let started = Instant::now();
    while next[0] < COUNT || next[1] < COUNT {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "got {next:?} with the zombie unreaped: {events:?}"
        );
        poll_fanin(&mut sub, &mut next, &mut events);
    }
    assert_eq!(
        next[2], 10,
        "the zombie's committed messages, not its open claim"
    );
    let stat = std::fs::read_to_string(format!("/proc/{zpid}/stat")).unwrap();
    assert!(stat.contains(") Z "), "still a zombie at the end: {stat}");
    for c in &mut survivors {
        assert!(c.wait().unwrap().success());
    }
    zombie.wait().unwrap();
    node.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three processes publish one `publishers=many` shared-memory channel, one
/// of them killed with `kill -9` halfway: the subscriber gets each
/// publisher's messages in its order, none lost or duplicated (the killed
/// one's up to where it died), then the publishers' departure. A second
/// process opening the channel without `publishers=many` is told why not.
#[test]
fn several_processes_publish_one_shm_channel() {
    const COUNT: u64 = 100_000;
    let (mut node, dir) = node(ThreadingMode::Invoker);
    let mut sub = node.subscription("shm:fanin", 3).unwrap();
    let mut children: Vec<_> = (0..3)
        .map(|id| spawn_publisher(&dir, id, COUNT, id == 2))
        .collect();
    let mut next = [0u64; 3];
    let mut events = Vec::new();
    let mut half = std::io::BufReader::new(children[2].stdout.take().unwrap());
    let mut killed = false;
    let started = Instant::now();
    while next[0] < COUNT || next[1] < COUNT || !killed {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "got {next:?}: {events:?}"
        );
        poll_fanin(&mut sub, &mut next, &mut events);
        if !killed && next[2] >= COUNT / 2 {
            wait_for_word(&mut half, "half");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(children[2].id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            children[2].wait().unwrap();
            killed = true;
        }
    }
    assert!(
        (COUNT / 2..COUNT).contains(&next[2]),
        "killed mid-stream: {next:?}"
    );
    assert!(
        events.first().is_some_and(|e| e.starts_with("NewSession")),
        "{events:?}"
    );
    for c in &mut children[..2] {
        assert!(c.wait().unwrap().success());
    }
    let started = Instant::now();
    let mut gone = false;
    while !gone {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "publishers never gone: {events:?}"
        );
        sub.poll(256, |e| match e {
            weft::Event::PublisherGone { .. } => gone = true,
            weft::Event::Message(m) => in_order(&mut next, m),
            other => events.push(format!("{other:?}")),
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    // Opening it as a one-publisher channel while it has a publisher is
    // refused with the reason.
    let many = node.publication("shm:fanin?publishers=many", 3).unwrap();
    let err = node.publication("shm:fanin", 3).unwrap_err().to_string();
    assert!(err.contains("publishers=many"), "{err}");
    drop(many);
    node.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Nodes opening one `publishers=many` channel at the same moment each get a
/// publication: one creates the ring, and the others wait out the instant
/// in which its file exists but is not yet sized or initialized, instead of
/// failing with "truncated".
#[test]
fn nodes_racing_to_create_a_many_publisher_ring_all_publish() {
    use std::sync::{Arc, Barrier};
    let (first, dir) = node(ThreadingMode::Invoker);
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(3));
        let racers: Vec<_> = (0..3)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut node = weft::Node::new(weft::NodeConfig {
                        dir,
                        threading: ThreadingMode::Invoker,
                        shm_capacity: 64 * 1024,
                        ..weft::NodeConfig::default()
                    })
                    .unwrap();
                    barrier.wait();
                    let opened = node
                        .publication(&format!("shm:race{round}?publishers=many"), 1)
                        .map(drop)
                        .map_err(|e| e.to_string());
                    node.close().unwrap();
                    opened
                })
            })
            .collect();
        for r in racers {
            r.join().unwrap().unwrap();
        }
    }
    first.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A channel with `key_file=`: every datagram is authenticated, so a
/// subscriber with the key gets the stream and one without it gets nothing
/// (it drops them as authenticated datagrams it has no key for); a key
/// file others may read is refused with the fix.
#[test]
fn a_keyed_udp_channel_reaches_only_subscribers_with_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let (mut keyed, dir) = node(ThreadingMode::Invoker);
    let (mut plain, plain_dir) = node(ThreadingMode::Invoker);
    let key = dir.join("md.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let base = udp_uri();
    let uri = format!("{base}?key_file={}", key.display());
    let err = keyed.publication(&uri, 9).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut publ = keyed.publication(&uri, 9).unwrap();
    let mut sub = keyed.subscription(&uri, 9).unwrap();
    let mut stranger = plain.subscription(&base, 9).unwrap();
    let started = Instant::now();
    while !publ.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never connected"
        );
        keyed.do_work();
        plain.do_work();
    }
    let mut stranger_events = Vec::new();
    for i in 0..1000u64 {
        while publ.offer(&i.to_le_bytes()).is_err() {
            keyed.do_work();
        }
        keyed.do_work();
        plain.do_work();
        stranger
            .poll(64, |e| stranger_events.push(format!("{e:?}")))
            .unwrap();
    }
    let (got, _) = receive(&mut keyed, &mut sub, 1000);
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    for _ in 0..100 {
        plain.do_work();
        stranger
            .poll(64, |e| stranger_events.push(format!("{e:?}")))
            .unwrap();
    }
    assert!(stranger_events.is_empty(), "{stranger_events:?}");
    drop((publ, sub, stranger));
    keyed.close().unwrap();
    plain.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&plain_dir);
}

/// Issue 23, point 4: half a million messages accepted by `offer` on a UDP
/// channel, then the publication and its node dropped at once: every one
/// arrives (the node's close waits until the receivers have reported them
/// delivered). Then a node whose only receiver went away: `close` says
/// exactly what was not acknowledged instead of dropping it silently.
/// (Failed before: 474,079 to 475,987 of 500,000 arrived, and only
/// `PublisherGone` said anything.)
#[test]
fn a_udp_publisher_closing_cleanly_delivers_every_accepted_message() {
    const COUNT: u64 = 500_000;
    let uri = udp_uri();
    let (mut rx_node, rx_dir) = node(ThreadingMode::Dedicated);
    let mut sub = rx_node.subscription(&uri, 4).unwrap();
    // The subscriber polls on a thread of its own, as an application would.
    let receiver = std::thread::spawn(move || {
        let started = Instant::now();
        let mut got = 0u64;
        let mut other = Vec::new();
        while got < COUNT && started.elapsed() < Duration::from_secs(60) {
            let n = sub
                .poll(1024, |e| match e {
                    weft::Event::Message(m) => {
                        assert_eq!(u64::from_le_bytes(m.try_into().unwrap()), got, "in order");
                        got += 1;
                    }
                    e => other.push(format!("{e:?}")),
                })
                .unwrap();
            if n == 0 {
                std::thread::yield_now();
            }
        }
        (got, other)
    });
    let (mut tx_node, tx_dir) = node(ThreadingMode::Dedicated);
    let mut publ = tx_node.publication(&uri, 4).unwrap();
    let started = Instant::now();
    let mut i = 0u64;
    while i < COUNT {
        assert!(started.elapsed() < Duration::from_secs(60), "stuck at {i}");
        match publ.offer(&i.to_le_bytes()) {
            Ok(()) => i += 1,
            Err(weft::PublishError::BackPressured | weft::PublishError::NotConnected) => {
                std::thread::yield_now()
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Every message accepted: drop the publication and its node at once.
    drop(publ);
    drop(tx_node);
    let (got, other) = receiver.join().unwrap();
    assert_eq!(
        got, COUNT,
        "delivered after a clean close; other events: {other:?}"
    );

    // A node whose receiver is gone (not yet timed out): close reports it.
    let (tx_node, tx_dir2) = node(ThreadingMode::Dedicated);
    let mut cfg = tx_node.config().clone();
    cfg.close_timeout = Duration::from_millis(100);
    drop(tx_node);
    let mut tx_node = weft::Node::new(cfg).unwrap();
    let mut publ = tx_node.publication(&uri, 5).unwrap();
    let sub = rx_node.subscription(&uri, 5).unwrap();
    let started = Instant::now();
    while !publ.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never connected"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(sub);
    rx_node.close().unwrap(); // the receiver leaves without a word
    let mut accepted = 0;
    for i in 0..100u64 {
        if publ.offer(&i.to_le_bytes()).is_ok() {
            accepted += 1;
        }
    }
    assert!(accepted > 0);
    drop(publ);
    match tx_node.close() {
        Err(weft::Error::Undelivered(u)) => {
            assert_eq!(u.channels.len(), 1, "{u}");
            let c = &u.channels[0];
            assert!(c.datagrams_not_acknowledged > 0 && c.receivers == 1, "{u}");
            eprintln!("close said: {u}");
        }
        other => panic!("close should report the unacknowledged datagrams: {other:?}"),
    }
    for d in [rx_dir, tx_dir, tx_dir2] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Issue 23, point 7: a gateway's local subscriber that sleeps 1 ms per
/// message but keeps polling used to hold the gateway's ring, and through
/// UDP flow control the remote publisher, to its pace. With the channel's
/// `slow_timeout=`, it is cut loose with a `Loss` saying how many ring bytes
/// it missed (and rejoins), the gateway logs it by pid and name, and the
/// fast subscriber gets every message while the slow one has handled only a
/// few. (Failed before: no policy, no loss; the slow one set everyone's pace.)
#[test]
fn a_slow_subscriber_is_cut_loose_with_a_counted_loss_and_the_others_go_on() {
    const COUNT: u64 = 20_000;
    let (mut host, dir) = node(ThreadingMode::Dedicated);
    let udp = udp_uri();
    let shm = "shm:slowgw?capacity=16384&slow_timeout=50ms";
    let gateway = host.gateway_in(&udp, shm, 3).unwrap();
    let attach = |host: &mut weft::Node| {
        let mut s = host.subscription("shm:slowgw", 3).unwrap();
        let started = Instant::now();
        while !s.is_connected() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never attached"
            );
            s.poll(16, |_| {}).unwrap();
        }
        s
    };
    let mut fast = attach(&mut host);
    let mut slow = attach(&mut host);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow_done = done.clone();
    let slow_thread = std::thread::spawn(move || {
        let (mut handled, mut losses) = (0u64, Vec::new());
        let started = Instant::now();
        // Until the others are done and it has been told what it lost.
        let finished = |losses: &Vec<_>| {
            slow_done.load(std::sync::atomic::Ordering::Relaxed) && !losses.is_empty()
        };
        while !finished(&losses) && started.elapsed() < Duration::from_secs(60) {
            slow.poll(1, |e| match e {
                weft::Event::Message(_) => handled += 1,
                weft::Event::Loss { from, to, unit, .. } => losses.push((from, to, unit)),
                _ => {}
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        (handled, losses)
    });
    let fast_thread = std::thread::spawn(move || {
        let (mut next, mut other) = (0u64, Vec::new());
        let started = Instant::now();
        while next < COUNT && started.elapsed() < Duration::from_secs(60) {
            fast.poll(256, |e| match e {
                weft::Event::Message(m) => {
                    assert_eq!(u64::from_le_bytes(m.try_into().unwrap()), next, "in order");
                    next += 1;
                }
                weft::Event::NewSession { .. } => {}
                e => other.push(format!("{e:?}")),
            })
            .unwrap();
        }
        (next, other)
    });
    let (mut remote, remote_dir) = node(ThreadingMode::Dedicated);
    let mut publ = remote.publication(&udp, 3).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while sent < COUNT {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "publisher stuck at {sent}"
        );
        match publ.offer_pod(&sent) {
            Ok(()) => sent += 1,
            Err(_) => std::thread::yield_now(),
        }
    }
    let (fast_got, fast_other) = fast_thread.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (slow_handled, slow_losses) = slow_thread.join().unwrap();
    assert_eq!(
        fast_got, COUNT,
        "the fast subscriber lost nothing: {fast_other:?}"
    );
    assert!(fast_other.is_empty(), "{fast_other:?}");
    assert!(
        slow_handled < COUNT / 2,
        "the slow one handled {slow_handled}: it did not set the pace"
    );
    assert!(!slow_losses.is_empty(), "the slow one was never cut loose");
    for (from, to, unit) in &slow_losses {
        assert!(
            to > from && *unit == weft::LossUnit::RingBytes,
            "{slow_losses:?}"
        );
    }
    // The gateway logs an eviction at its next export (every millisecond),
    // which can come after the subscriber has seen its loss: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let errors = weft::weft_counters::CountersReader::open(host.counters().path().unwrap())
            .unwrap()
            .errors();
        if let Some(line) = errors.iter().find(|e| e.text.contains("cut loose")) {
            break line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no eviction in the error log: {errors:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        line.text.contains(&format!("pid {}", std::process::id())) && line.text.contains("slow"),
        "{line:?}"
    );
    eprintln!(
        "slow subscriber: {} losses ({} bytes), {slow_handled} handled; log: {}",
        slow_losses.len(),
        slow_losses.iter().map(|(f, t, _)| t - f).sum::<u64>(),
        line.text
    );
    drop(publ);
    drop(gateway);
    drop((remote, host));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&remote_dir);
}

/// Issue 23, point 9: a shared-memory subscription whose channel file is
/// foreign or crafted says so (once, from `poll`, and in the node's error
/// log) instead of staying unconnected in silence, and attaches when a good
/// file replaces it; a stale file of a dead publisher is not joined over and
/// over (it used to flap: NewSession, PublisherGone, several times a second).
#[test]
fn a_bad_or_stale_channel_file_is_reported_once_and_never_flaps() {
    let (mut node, dir) = node(ThreadingMode::Invoker);
    // A foreign file where shm:bad stream 1's ring would be.
    std::fs::write(dir.join("bad.1"), vec![0xAB; 8192]).unwrap();
    let mut sub = node.subscription("shm:bad", 1).unwrap();
    let mut errors = Vec::new();
    let mut events = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        match sub.poll(16, |e| events.push(format!("{e:?}"))) {
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(errors.len(), 1, "reported once: {errors:?}");
    assert!(
        errors[0].contains("not a weft shared-memory region"),
        "{errors:?}"
    );
    assert!(events.is_empty(), "{events:?}");
    let logged = weft::weft_counters::CountersReader::open(node.counters().path().unwrap())
        .unwrap()
        .errors();
    assert!(
        logged.iter().any(|e| e.text.contains("cannot attach")),
        "{logged:?}"
    );
    // The publisher comes: it replaces the file (a foreign file is never
    // deleted by weft; the operator removes it), and the subscription attaches.
    std::fs::remove_file(dir.join("bad.1")).unwrap();
    let mut publ = node.publication("shm:bad", 1).unwrap();
    let started = Instant::now();
    while !sub.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never attached"
        );
        sub.poll(16, |_| {}).unwrap();
    }
    let _ = publ.offer(b"x");

    // A stale file: its publisher closed without removing it (a crash).
    let opts = weft_shm::ShmOptions {
        remove_on_drop: false,
        ..weft_shm::ShmOptions::in_dir(&dir)
    };
    let cfg =
        weft_shm::broadcast::BroadcastConfig::new(4096, 4, weft_shm::broadcast::Mode::Reliable);
    drop(weft_shm::broadcast::Producer::create(&opts, "stale.1", &cfg).unwrap());
    let mut stale = node.subscription("shm:stale", 1).unwrap();
    let mut events = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        stale.poll(16, |e| events.push(format!("{e:?}"))).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(events.is_empty(), "a stale file flaps: {events:?}");
    assert!(!stale.is_connected());
    drop((publ, sub, stale));
    node.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 23, point 10: a live shared-memory channel's file truncated under
/// both ends (by its owner: nobody else may write it) used to kill both
/// with SIGBUS. Now the fault is caught: the subscription's poll says the
/// file was truncated (and the publisher is gone), the publication refuses
/// with `Closed`, both log it, and the process goes on.
#[test]
fn a_ring_file_truncated_under_both_ends_is_an_error_not_a_crash() {
    let (mut node, dir) = node(ThreadingMode::Invoker);
    let mut publ = node.publication("shm:cut", 2).unwrap();
    let mut sub = node.subscription("shm:cut", 2).unwrap();
    let started = Instant::now();
    while !sub.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never attached"
        );
        sub.poll(16, |_| {}).unwrap();
    }
    let mut got = 0;
    for i in 0..100u64 {
        publ.offer(&i.to_le_bytes()).unwrap();
    }
    sub.poll(1000, |e| got += matches!(e, weft::Event::Message(_)) as u64)
        .unwrap();
    assert_eq!(got, 100);
    // Cut the file to nothing under both mappings.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cut.2"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let (mut sub_error, mut publ_error, mut events) = (None, None, Vec::new());
    let started = Instant::now();
    while sub_error.is_none() || publ_error.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{sub_error:?} {publ_error:?} {events:?}"
        );
        if publ_error.is_none() {
            match publ.offer(b"after the cut") {
                Ok(()) | Err(weft::PublishError::BackPressured) => {}
                Err(e) => publ_error = Some(e),
            }
        }
        if sub_error.is_none() {
            match sub.poll(64, |e| events.push(format!("{e:?}"))) {
                Ok(_) => {}
                Err(e) => sub_error = Some(e.to_string()),
            }
        }
    }
    assert_eq!(publ_error, Some(weft::PublishError::Closed));
    assert!(
        sub_error.as_deref().unwrap().contains("truncated"),
        "{sub_error:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("PublisherGone")),
        "{events:?}"
    );
    let logged = weft::weft_counters::CountersReader::open(node.counters().path().unwrap())
        .unwrap()
        .errors();
    assert_eq!(
        logged
            .iter()
            .filter(|e| e.text.contains("truncated"))
            .count(),
        2,
        "{logged:?}"
    );
    drop((publ, sub));
    node.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
