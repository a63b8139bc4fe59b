//! Network tests of weft-net with real processes (`net-peer`) and the kernel in
//! the path: on loopback always, and between network namespaces (one per host, a
//! bridge in its own namespace, addresses in 10.77.0.0/16 inside them only) when
//! run as root. The namespaces are created by the test and removed when it ends,
//! failed or not. Without root the multi-host test says it is skipped and why.
//!
//! Counts scale with `WEFT_TEST_SCALE` (default 1.0). Tests run one at a time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_tests::scaled;

static SERIAL: Mutex<()> = Mutex::new(());

/// A `net-peer` process whose output lines are collected by a thread; killed on drop.
struct Peer {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(l);
            }
        });
        Self {
            name: name.into(),
            child,
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits (at most `limit`, a hang guard) for a line starting with `prefix`.
    fn wait_line(&self, prefix: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.starts_with(prefix)) {
                return l;
            }
            assert!(
                Instant::now() < until,
                "{}: no {prefix:?} line within {limit:?}; output: {:?}",
                self.name,
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit successfully; returns its lines.
    fn finish(mut self, limit: Duration) -> Vec<String> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(50)); // let the reader drain
                let lines = self.lines();
                assert!(
                    status.success(),
                    "{} failed ({status}): {lines:?}",
                    self.name
                );
                return lines;
            }
            assert!(
                Instant::now() < until,
                "{}: still running after {limit:?}; output: {:?}",
                self.name,
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn peer_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_net-peer"));
    c.args(args);
    c
}

/// A group on loopback with a port nobody holds.
fn loopback_group(last: u8) -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("ephemeral port")
        .port();
    format!("239.77.200.{last}:{port}")
}

/// A number from a `key N` word pair in a `stats` line.
fn stat(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!("{key}: "))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {line}"))
}

fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}

const LIMIT: Duration = Duration::from_secs(300);

/// Checks a subscriber that must have received messages 0..count, in order.
fn assert_complete(lines: &[String], count: u64) {
    assert_eq!(line_with(lines, "first"), "first 0", "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("loss")), "{lines:?}");
    assert_eq!(line_with(lines, "done"), format!("done {count}"));
}

#[test]
fn loopback_one_publisher_three_subscriber_processes_a_million_messages() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let group = loopback_group(1);
    let count = scaled(1_000_000).to_string();
    let common = ["--group", &group, "--iface", "127.0.0.1", "--count", &count];
    let subs: Vec<Peer> = (0..3)
        .map(|i| {
            let mut args = vec!["subscribe"];
            args.extend(common);
            Peer::spawn(&format!("subscriber {i}"), peer_cmd(&args))
        })
        .collect();
    for s in &subs {
        s.wait_line("ready", LIMIT);
    }
    let mut args = vec!["publish", "--linger-ms", "3000"];
    args.extend(common);
    let publ = Peer::spawn("publisher", peer_cmd(&args));
    let started = Instant::now();
    for s in subs {
        let lines = s.finish(LIMIT);
        assert_complete(&lines, count.parse().unwrap());
        eprintln!("{}", line_with(&lines, "stats"));
    }
    eprintln!(
        "{count} messages to 3 subscribers in {:?}",
        started.elapsed()
    );
    let lines = publ.finish(LIMIT);
    eprintln!("{}", line_with(&lines, "stats"));
}

#[test]
fn a_hostile_sender_on_the_group_is_dropped_and_counted_and_the_stream_is_unaffected() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let group = loopback_group(2);
    let (hostile, stats) = stream_under_attack("junk", &group);
    let sent = stat(
        &line_with(&hostile, "sent").replace("sent ", "sent: "),
        "sent",
    );
    assert!(sent > 1000, "{hostile:?}");
    for s in &stats {
        let dropped = stat(s, "dropped") + stat(s, "truncated");
        assert!(dropped > 0, "hostile datagrams were not seen: {s}");
        eprintln!("hostile sent {sent}; subscriber dropped {dropped}: {s}");
    }
}

/// Runs a 50,000 msgs/s stream to three subscriber processes on loopback
/// while a hostile process runs `attack` for most of it; returns the
/// hostile's lines and each subscriber's stats line, after checking every
/// subscriber got the whole stream in order with no loss, never saw its
/// publisher reported gone, and followed only one session of its own.
fn stream_under_attack(attack: &str, group: &str) -> (Vec<String>, Vec<String>) {
    let count = scaled(200_000);
    let count_s = count.to_string();
    let common = [
        "--group",
        group,
        "--iface",
        "127.0.0.1",
        "--count",
        &count_s,
    ];
    let subs: Vec<Peer> = (0..3)
        .map(|i| {
            let mut args = vec!["subscribe"];
            args.extend(common);
            Peer::spawn(&format!("subscriber {i}"), peer_cmd(&args))
        })
        .collect();
    for s in &subs {
        s.wait_line("ready", LIMIT);
    }
    let mut args = vec!["publish", "--rate", "50000", "--linger-ms", "2000"];
    args.extend(common);
    let publ = Peer::spawn("publisher", peer_cmd(&args));
    for s in &subs {
        s.wait_line("first 0", LIMIT);
    }
    let secs = (count as f64 / 50_000.0 * 0.8).to_string();
    let hostile = Peer::spawn(
        "hostile",
        peer_cmd(&[
            "hostile",
            "--attack",
            attack,
            "--group",
            group,
            "--iface",
            "127.0.0.1",
            "--seconds",
            &secs,
        ]),
    );
    let hostile_lines = hostile.finish(LIMIT);
    let mut stats = Vec::new();
    for s in subs {
        let lines = s.finish(LIMIT);
        assert_complete(&lines, count);
        assert!(
            !lines.iter().any(|l| l.starts_with("gone")),
            "the real publisher was reported gone: {lines:?}"
        );
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("first")).count(),
            1,
            "one session of ours, never restarted: {lines:?}"
        );
        stats.push(line_with(&lines, "stats").to_string());
    }
    publ.finish(LIMIT);
    (hostile_lines, stats)
}

/// Issue 23, point 1: the 32-byte SETUP of a foreign session that used to
/// make every subscriber switch to the stranger (and report the real
/// publisher gone), then a flood of SETUPs at full speed that used to open a
/// silent gap: the real stream arrives whole and in order, its publisher is
/// never reported gone, and the strangers' sessions cost nothing but the
/// drops (a SETUP alone is never announced as a session).
#[test]
fn a_foreign_setup_and_a_setup_flood_leave_the_stream_complete() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let group = loopback_group(3);
    let (hostile, stats) = stream_under_attack("setup", &group);
    let sent = stat(
        &line_with(&hostile, "sent").replace("sent ", "sent: "),
        "sent",
    );
    assert!(sent > 1000, "{hostile:?}");
    for s in &stats {
        eprintln!("{sent} SETUPs sent; subscriber: {s}");
    }
}

/// Issue 23, point 2: a neighbour who reads the real session id off the
/// group and sends LOSS frames and heartbeats in that session claiming
/// everything up to 2^40 is gone (it used to end the stream with
/// `Loss { to: 2^40 }`): the claims are dropped and counted as implausible,
/// and the stream arrives whole.
#[test]
fn a_forged_loss_in_the_real_session_is_counted_and_ignored() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let group = loopback_group(4);
    let (hostile, stats) = stream_under_attack("forge-loss", &group);
    let sent = stat(
        &line_with(&hostile, "sent").replace("sent ", "sent: "),
        "sent",
    );
    assert!(sent > 100, "{hostile:?}");
    for s in &stats {
        let implausible = stat(s, "implausible");
        assert!(implausible > 0, "the forged frames were not seen: {s}");
        eprintln!("{sent} forged frames sent; subscriber counted {implausible} implausible: {s}");
    }
}

/// Network namespaces: a switch (bridge) and hosts `0..n`, host `i` at
/// 10.77.0.(i+1)/24 on `eth0`. Removed on drop.
struct Hosts {
    id: String,
    n: usize,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    fn new(n: usize) -> Result<Self, String> {
        let hosts = Self {
            id: format!("{}", std::process::id() % 100_000),
            n,
        };
        let sw = hosts.switch();
        sh(&["ip", "netns", "add", &sw])?;
        sh(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let (ns, port) = (hosts.ns(i), hosts.port(i));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", hosts.addr(i)),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        let nft = |cmd: &str| sh(&["ip", "netns", "exec", &sw, "nft", cmd]);
        nft("add table bridge weft")?;
        nft("add chain bridge weft forward_drop { type filter hook forward priority 0; policy accept; }")?;
        Ok(hosts)
    }

    fn switch(&self) -> String {
        format!("weft-{}-switch", self.id)
    }
    fn ns(&self, i: usize) -> String {
        format!("weft-{}-host{i}", self.id)
    }
    fn port(&self, i: usize) -> String {
        format!("wp{}h{i}", self.id)
    }
    fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    fn peer(&self, host: usize, name: &str, args: &[&str]) -> Peer {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns(host),
            env!("CARGO_BIN_EXE_net-peer"),
        ]);
        c.args(args);
        c.args(["--iface", &self.addr(host)]);
        Peer::spawn(name, c)
    }

    /// Drops `percent` % of what the bridge forwards to host `i`, at random.
    fn loss(&self, i: usize, percent: u32) {
        let rule = format!(
            "add rule bridge weft forward_drop oifname \"{}\" numgen random mod 100 < {percent} counter drop",
            self.port(i)
        );
        sh(&["ip", "netns", "exec", &self.switch(), "nft", &rule]).expect("nft rule");
    }

    fn flush_loss(&self) {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.switch(),
            "nft",
            "flush chain bridge weft forward_drop",
        ])
        .expect("nft flush");
    }

    /// Takes host `i`'s bridge port down or up: a partition.
    fn link(&self, i: usize, up: bool) {
        sh(&[
            "ip",
            "-n",
            &self.switch(),
            "link",
            "set",
            &self.port(i),
            if up { "up" } else { "down" },
        ])
        .expect("ip link set");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.n {
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = sh(&["ip", "netns", "del", &self.switch()]);
    }
}

/// Why the multi-host test cannot run here, if it cannot.
fn multi_host_unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root: network namespaces need root (CI runs as root)".into());
    }
    for tool in ["ip", "nft"] {
        if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            panic!(
                "{tool} is missing although running as root: run scripts/setup \
                 (it installs iproute2 and nftables)"
            );
        }
    }
    None
}

#[test]
fn multi_host_loss_restart_publisher_death_and_partition() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = multi_host_unavailable() {
        eprintln!("SKIPPED multi-host test: {why}");
        println!("SKIPPED multi-host test: {why}");
        return;
    }
    let hosts = Hosts::new(4).unwrap_or_else(|e| panic!("setting up namespaces: {e}"));
    let group = "239.77.1.1:40100";
    let sub = |hosts: &Hosts, i: usize, extra: &[&str]| {
        let mut args = vec!["subscribe", "--group", group];
        args.extend(extra);
        let p = hosts.peer(i, &format!("subscriber on host{i}"), &args);
        p.wait_line("ready", LIMIT);
        p
    };

    // (a) 5 % kernel loss towards host 1, 1 % towards host 2.
    {
        hosts.loss(1, 5);
        hosts.loss(2, 1);
        let count = scaled(100_000).to_string();
        let subs: Vec<Peer> = (1..4)
            .map(|i| sub(&hosts, i, &["--count", &count]))
            .collect();
        let publ = hosts.peer(
            0,
            "publisher",
            &[
                "publish",
                "--group",
                group,
                "--count",
                &count,
                "--receivers",
                "3",
            ],
        );
        for (i, s) in subs.into_iter().enumerate() {
            let lines = s.finish(LIMIT);
            assert_complete(&lines, count.parse().unwrap());
            let stats = line_with(&lines, "stats").to_string();
            eprintln!(
                "(a) host{}: naks {} stats {stats}",
                i + 1,
                stat(&stats, "naks_sent")
            );
            if i == 0 {
                assert!(
                    stat(&stats, "naks_sent") > 0,
                    "5 % loss but no NAK: {stats}"
                );
            }
        }
        let lines = publ.finish(LIMIT);
        eprintln!("(a) publisher {}", line_with(&lines, "stats"));
        hosts.flush_loss();
    }

    // (b) A subscriber killed -9 and restarted mid-stream joins at the live position.
    {
        let count = scaled(60_000);
        let count_s = count.to_string();
        let subs: Vec<Peer> = (1..3)
            .map(|i| sub(&hosts, i, &["--count", &count_s]))
            .collect();
        let mut victim = sub(&hosts, 3, &["--count", &count_s]);
        let publ = hosts.peer(
            0,
            "publisher",
            &[
                "publish",
                "--group",
                group,
                "--count",
                &count_s,
                "--rate",
                "20000",
                "--receiver-timeout-ms",
                "300",
            ],
        );
        victim.wait_line("first 0", LIMIT);
        std::thread::sleep(Duration::from_millis(500));
        victim.kill();
        let restarted = sub(&hosts, 3, &["--count", &count_s]);
        let lines = restarted.finish(LIMIT);
        let first: u64 = line_with(&lines, "first ")[6..].parse().unwrap();
        let session = line_with(&lines, "session");
        eprintln!("(b) restarted subscriber: {session}, first message {first}");
        assert!(
            first > 0,
            "a late joiner started at the beginning: {lines:?}"
        );
        assert_eq!(line_with(&lines, "done"), format!("done {}", count - first));
        for s in subs {
            assert_complete(&s.finish(LIMIT), count);
        }
        publ.finish(LIMIT);
    }

    // (c) The publisher killed: "publisher gone"; its restart is a new session.
    {
        let subs: Vec<Peer> = (1..4)
            .map(|i| {
                sub(
                    &hosts,
                    i,
                    &[
                        "--count",
                        "5000",
                        "--sessions",
                        "2",
                        "--publisher-timeout-ms",
                        "500",
                    ],
                )
            })
            .collect();
        let mut first = hosts.peer(
            0,
            "publisher 1",
            &[
                "publish",
                "--group",
                group,
                "--count",
                "1000000000",
                "--rate",
                "10000",
            ],
        );
        let old = first.wait_line("ready", LIMIT);
        for s in &subs {
            s.wait_line("first 0", LIMIT);
        }
        std::thread::sleep(Duration::from_millis(300));
        first.kill();
        for s in &subs {
            let gone = s.wait_line("gone", LIMIT);
            let ms: u64 = gone[5..].parse().unwrap();
            eprintln!("(c) {gone} (timeout 500 ms)");
            // The peer times from when it handled the last message; the protocol
            // from its clock read at the start of that pass, a few µs earlier,
            // and the peer rounds down to whole ms: 499 is on time.
            assert!(
                ms >= 499,
                "publisher reported gone before its timeout: {gone}"
            );
        }
        let second = hosts.peer(
            0,
            "publisher 2",
            &[
                "publish", "--group", group, "--count", "5000", "--seed", "1",
            ],
        );
        let new = second.wait_line("ready", LIMIT);
        assert_ne!(
            old.split(' ').nth(3),
            new.split(' ').nth(3),
            "same session id twice"
        );
        for s in subs {
            let lines = s.finish(LIMIT);
            let sessions: Vec<&String> =
                lines.iter().filter(|l| l.starts_with("session")).collect();
            assert_eq!(sessions.len(), 2, "{lines:?}");
            assert_ne!(sessions[0].split(' ').nth(1), sessions[1].split(' ').nth(1));
            // The second session's first message is its message 0.
            let firsts: Vec<&String> = lines.iter().filter(|l| l.starts_with("first")).collect();
            assert_eq!(
                firsts.last().map(|s| s.as_str()),
                Some("first 0"),
                "{lines:?}"
            );
        }
        second.finish(LIMIT);
    }

    // (d) A partition longer than the retransmit buffer: LOSS for exactly the
    // missing range, then delivery carries on.
    {
        let count = scaled(40_000);
        let count_s = count.to_string();
        let extra = [
            "--count",
            &count_s,
            "--small",
            "--publisher-timeout-ms",
            "10000",
        ];
        let subs: Vec<Peer> = (1..3).map(|i| sub(&hosts, i, &extra)).collect();
        let cut = sub(&hosts, 3, &extra);
        let publ = hosts.peer(
            0,
            "publisher",
            &[
                "publish",
                "--group",
                group,
                "--count",
                &count_s,
                "--rate",
                "10000",
                "--small",
                "--one-per-datagram",
                "--buffer",
                "256",
                "--receiver-timeout-ms",
                "200",
            ],
        );
        cut.wait_line("first 0", LIMIT);
        std::thread::sleep(Duration::from_millis(500));
        hosts.link(3, false);
        std::thread::sleep(Duration::from_millis(1000));
        hosts.link(3, true);
        let lines = cut.finish(LIMIT);
        let losses: Vec<(u64, u64, u64)> = lines
            .iter()
            .filter(|l| l.starts_with("loss"))
            .map(|l| {
                let w: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
                (w[0], w[1], w[2])
            })
            .collect();
        assert!(!losses.is_empty(), "no LOSS after a partition: {lines:?}");
        // The partition's LOSS is the first run of contiguous ranges. The healed
        // receiver is out of flow control while it catches up, so on a busy
        // machine it can fall a buffer behind again: a later, separate LOSS,
        // explicit like the first (net-peer fails on any silent gap).
        let first_run = 1 + losses.windows(2).take_while(|w| w[0].1 == w[1].0).count();
        let (from, to) = (losses[0].0, losses[first_run - 1].1);
        let lost: u64 = losses.iter().map(|l| l.1 - l.0).sum();
        // One message per datagram, numbered from 0: datagram k carries message k.
        assert_eq!(
            losses[0].2, from,
            "LOSS does not start at the first missing message"
        );
        let after: u64 = lines
            .iter()
            .filter(|l| l.starts_with("first"))
            .nth(1)
            .and_then(|l| l[6..].parse().ok())
            .unwrap_or_else(|| panic!("no message after the LOSS: {lines:?}"));
        assert_eq!(after, to, "LOSS does not end where delivery resumes");
        assert_eq!(line_with(&lines, "done"), format!("done {}", count - lost));
        eprintln!("(d) partitioned host lost datagrams {from}..{to} and carried on: {losses:?}");
        for s in subs {
            assert_complete(&s.finish(LIMIT), count);
        }
        publ.finish(LIMIT);
    }
}
