//! Cross-process tests of weft-shm: real processes (`shm-peer`), real `kill -9`.
//!
//! Counts scale with `WEFT_TEST_SCALE` (default 1.0) so slow tools can shrink the
//! runs without changing their structure. The tests take a lock so that only one
//! runs at a time: each keeps two processes busy, which is all a 2-core CI machine has.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weft_shm::broadcast::{self, BroadcastConfig, Mode};
use weft_shm::mpsc::{self, MpscConfig};
use weft_shm::spsc::{self, SpscConfig};
use weft_shm::{ClaimError, GoneReason, PeerState, PollError, ShmOptions};
use weft_tests::{fill_frame, frame_matches, scaled, seq_of, size_of_frame};

static SERIAL: Mutex<()> = Mutex::new(());

/// A private weft directory for one test, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/dev/shm/weft-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self(dir)
    }

    fn opts(&self) -> ShmOptions {
        ShmOptions::in_dir(&self.0)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A peer process; killed on drop so a failing test leaves nothing running.
struct Peer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(dir: &TestDir, args: &[&str]) -> Self {
        Self::spawn_cmd(
            Command::new(env!("CARGO_BIN_EXE_shm-peer"))
                .env("WEFT_DIR", &dir.0)
                .args(args),
        )
    }

    fn spawn_cmd(cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn shm-peer");
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Self { child, out }
    }

    /// The next line the peer prints (empty at EOF).
    fn line(&mut self) -> String {
        let mut s = String::new();
        self.out.read_line(&mut s).expect("read peer output");
        s.trim_end().to_string()
    }

    fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "peer said {got:?}, expected {want:?}");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, and leave the process a zombie (the drop reaps it).
    fn kill9_unreaped(&mut self) {
        self.child.kill().expect("SIGKILL");
        let stat = format!("/proc/{}/stat", self.pid());
        let end = deadline(10);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
            assert!(Instant::now() < end, "never became a zombie");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for exit; returns its last line of output and whether it succeeded.
    fn finish(mut self) -> (String, bool) {
        let mut last = String::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            last = l;
        }
        let ok = self.child.wait().expect("wait").success();
        (last, ok)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

#[test]
fn spsc_ten_million_frames_of_random_sizes_arrive_in_order_and_intact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("spsc");
    let (count, seed) = (scaled(10_000_000), 0x5eed);
    let mut rx = spsc::Consumer::create(&dir.opts(), "stream", &SpscConfig::new(1 << 20)).unwrap();
    let mut producer = Peer::spawn(
        &dir,
        &[
            "spsc-produce",
            "stream",
            &count.to_string(),
            &seed.to_string(),
        ],
    );
    producer.expect("ready");
    let mut next = 0u64;
    loop {
        let r = rx.poll(1024, |f| {
            assert_eq!(f.type_id(), next as u32, "frame out of order");
            assert_eq!(
                f.payload().len(),
                size_of_frame(seed, next, 1024),
                "frame {next} has the wrong size"
            );
            assert!(
                frame_matches(seed, next, f.payload()),
                "frame {next} is corrupt"
            );
            next += 1;
        });
        match r {
            Ok(0) => std::thread::yield_now(),
            Ok(_) => {}
            Err(PollError::Closed) => break,
            Err(e) => panic!("poll: {e}"),
        }
    }
    assert_eq!(next, count);
    let (last, ok) = producer.finish();
    assert!(ok && last == format!("sent {count}"), "producer: {last}");
}

#[test]
fn reliable_broadcast_delivers_everything_in_order_to_three_consumer_processes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("bc-reliable");
    let opts = ShmOptions {
        liveness_timeout: Duration::from_secs(30),
        ..dir.opts()
    };
    let (count, seed) = (scaled(1_000_000), 77u64);
    let config = BroadcastConfig::new(1 << 18, 4, Mode::Reliable);
    let mut tx = broadcast::Producer::create(&opts, "fanout", &config).unwrap();
    let mut peers: Vec<Peer> = (0..3)
        .map(|_| {
            Peer::spawn(
                &dir,
                &[
                    "bc-consume",
                    "fanout",
                    &count.to_string(),
                    &seed.to_string(),
                ],
            )
        })
        .collect();
    peers.iter_mut().for_each(|p| p.expect("ready"));
    assert_eq!(tx.consumers(), 3);
    let mut buf = vec![0u8; 600];
    for seq in 0..count {
        let len = 8 + size_of_frame(seed, seq, 512);
        fill_frame(seed, seq, &mut buf[..len]);
        loop {
            match tx.offer(1, &buf[..len]) {
                Ok(()) => break,
                Err(ClaimError::Full) => std::thread::yield_now(),
                Err(e) => panic!("offer {seq}: {e}"),
            }
        }
    }
    drop(tx);
    for p in peers {
        let (last, ok) = p.finish();
        assert!(
            ok && last == format!("received {count}"),
            "consumer: {last}"
        );
    }
}

#[test]
fn overwrite_broadcast_laps_a_slow_consumer_which_never_sees_a_torn_frame() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("bc-overwrite");
    let seed = 99u64;
    let mut tx = broadcast::Producer::create(
        &dir.opts(),
        "md",
        &BroadcastConfig::new(1 << 14, 2, Mode::Overwrite),
    )
    .unwrap();
    let mut slow = Peer::spawn(&dir, &["bc-slow", "md", &seed.to_string()]);
    slow.expect("ready");
    let mut buf = vec![0u8; 600];
    for seq in 0..scaled(400_000) {
        let len = 8 + size_of_frame(seed, seq, 512);
        fill_frame(seed, seq, &mut buf[..len]);
        tx.offer(1, &buf[..len])
            .expect("overwrite mode never waits");
        if seq % 200 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    drop(tx);
    let (last, ok) = slow.finish();
    assert!(ok, "slow consumer failed: {last}");
    let n: Vec<u64> = last
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [frames, laps, missed] = n[..] else {
        panic!("summary {last:?}")
    };
    assert!(
        frames > 0 && laps > 0 && missed > 0,
        "expected laps and deliveries: {last}"
    );
}

#[test]
fn mpsc_three_producer_processes_each_in_order_none_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("mpsc");
    let (count, seed) = (scaled(300_000), 5u64);
    let mut rx =
        mpsc::Consumer::create(&dir.opts(), "orders", &MpscConfig::new(1 << 20, 4)).unwrap();
    let mut peers: Vec<Peer> = (0..3)
        .map(|id| {
            Peer::spawn(
                &dir,
                &[
                    "mpsc-produce",
                    "orders",
                    &id.to_string(),
                    &count.to_string(),
                    &seed.to_string(),
                ],
            )
        })
        .collect();
    peers.iter_mut().for_each(|p| p.expect("ready"));
    let mut next = [0u64; 3];
    let end = deadline(600);
    while next.iter().sum::<u64>() < 3 * count {
        assert!(Instant::now() < end, "stalled at {next:?}");
        let n = rx
            .poll(1024, |f| {
                let id = f.type_id() as usize;
                let seq = next[id];
                assert_eq!(seq_of(f.payload()), Some(seq), "producer {id} out of order");
                assert_eq!(
                    f.payload().len(),
                    8 + size_of_frame(seed ^ id as u64, seq, 200)
                );
                assert!(
                    frame_matches(seed ^ id as u64, seq, f.payload()),
                    "corrupt frame"
                );
                next[id] += 1;
            })
            .unwrap();
        if n == 0 {
            std::thread::yield_now();
        }
    }
    for p in peers {
        let (last, ok) = p.finish();
        assert!(ok && last == format!("sent {count}"), "producer: {last}");
    }
    assert_eq!(rx.skipped(), 0);
}

#[test]
fn killing_the_producer_is_reported_as_gone_to_every_consumer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("kill-producer");
    let timeout = Duration::from_secs(5).as_nanos() as u64;
    // SPSC.
    let mut rx = spsc::Consumer::create(&dir.opts(), "trickle", &SpscConfig::new(1 << 16)).unwrap();
    let mut producer = Peer::spawn(&dir, &["spsc-trickle", "trickle"]);
    producer.expect("ready");
    let mut got = 0;
    let end = deadline(60);
    while got < 5 {
        assert!(Instant::now() < end);
        got += rx.poll(16, |_| {}).unwrap();
    }
    assert_eq!(
        rx.producer_state(timeout),
        PeerState::Live,
        "an idle, live producer is not gone"
    );
    producer.kill9();
    // What it committed before dying is still delivered; then the consumer is told.
    while rx.poll(16, |_| {}).unwrap() > 0 {}
    assert_eq!(
        rx.producer_state(timeout),
        PeerState::Gone(GoneReason::Died)
    );
}

/// A reliable broadcast consumer killed while it blocks the producer is
/// evicted as soon as its death is known, not after the eviction timeout
/// (here two minutes, longer than the test may take), and also while it is
/// an unreaped zombie. (Failed before: a dead consumer always cost the full
/// timeout, freezing the others.) The timeout remains for consumers that
/// are alive but stuck (unit tests in weft-shm).
#[test]
fn a_killed_reliable_consumer_is_evicted_as_soon_as_its_death_is_known() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("kill-consumer");
    let opts = ShmOptions {
        liveness_timeout: Duration::from_secs(120),
        ..dir.opts()
    };
    let mut tx = broadcast::Producer::create(
        &opts,
        "fanout",
        &BroadcastConfig::new(1 << 12, 2, Mode::Reliable),
    )
    .unwrap();
    let mut live = tx.join().expect("a slot");
    let mut victim = Peer::spawn(&dir, &["bc-hang", "fanout"]);
    victim.expect("ready");
    assert_eq!(tx.consumers(), 2);
    while tx.offer(1, &[7; 64]).is_ok() {
        live.poll(usize::MAX, |_| {}).unwrap();
    }
    victim.kill9_unreaped();
    let blocked = Instant::now();
    let end = deadline(60);
    let mut attempts = 0u64;
    loop {
        assert!(
            Instant::now() < end,
            "producer still blocked by a dead consumer after 60 s"
        );
        live.poll(usize::MAX, |_| {}).unwrap();
        attempts += 1;
        match tx.offer(1, &[7; 64]) {
            Ok(()) => break,
            Err(ClaimError::Full) => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!(
        "producer blocked {:?} ({attempts} attempts) with a 120 s eviction timeout",
        blocked.elapsed()
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", victim.pid())).unwrap();
    assert!(
        stat.contains(") Z "),
        "evicted while still a zombie: {stat}"
    );
    assert_eq!(tx.evictions(), 1);
    assert_eq!(tx.consumers(), 1);
    // The survivor keeps receiving.
    tx.offer(1, &[8; 64]).unwrap();
    let mut seen = Vec::new();
    live.poll(usize::MAX, |f| seen.push(f.payload()[0]))
        .unwrap();
    assert_eq!(seen, vec![7, 8]);
}

#[test]
fn killing_the_broadcast_producer_is_reported_to_every_consumer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("kill-bc-producer");
    let timeout = Duration::from_secs(5).as_nanos() as u64;
    let mut producer = Peer::spawn(&dir, &["bc-trickle", "fanout"]);
    producer.expect("ready");
    let mut consumers: Vec<_> = (0..2)
        .map(|_| broadcast::Consumer::attach(&dir.opts(), "fanout").unwrap())
        .collect();
    let end = deadline(60);
    for c in &mut consumers {
        let mut got = 0;
        while got < 3 {
            assert!(Instant::now() < end);
            got += c.poll(16, |_| {}).unwrap();
        }
        assert_eq!(c.producer_state(timeout), PeerState::Live);
    }
    producer.kill9();
    for c in &mut consumers {
        while c.poll(16, |_| {}).unwrap() > 0 {}
        assert_eq!(c.producer_state(timeout), PeerState::Gone(GoneReason::Died));
    }
}

#[test]
fn an_mpsc_producer_killed_between_claim_and_commit_is_skipped_and_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("kill-mpsc");
    let mut rx =
        mpsc::Consumer::create(&dir.opts(), "orders", &MpscConfig::new(1 << 16, 4)).unwrap();
    let mut victim = Peer::spawn(&dir, &["mpsc-claim-hang", "orders"]);
    victim.expect("claimed");
    let victim_pid = victim.pid();
    let mut after = mpsc::Producer::attach(&dir.opts(), "orders").unwrap();
    after.offer(1, b"after the stuck frame").unwrap();
    assert_eq!(
        rx.poll(10, |_| {}),
        Ok(0),
        "the stuck frame holds the line while its producer lives"
    );
    victim.kill9();
    let end = deadline(60);
    let skipped = loop {
        assert!(Instant::now() < end, "never skipped");
        match rx.poll(10, |_| panic!("nothing may be delivered before the skip")) {
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => break e,
        }
    };
    assert_eq!(
        skipped,
        PollError::SkippedDeadProducer {
            position: 0,
            // The peer's 100-byte claim plus the header, frame-aligned.
            len: (8 + 100u64).next_multiple_of(weft_shm::FRAME_ALIGNMENT as u64),
            pid: victim_pid
        }
    );
    let mut got = Vec::new();
    assert_eq!(rx.poll(10, |f| got.push(f.payload().to_vec())), Ok(1));
    assert_eq!(got, vec![b"after the stuck frame".to_vec()]);
    assert_eq!(rx.skipped(), 1);
}

/// Runs `shm-peer` as an unprivileged user (root bypasses both file modes and
/// RLIMIT_MEMLOCK), from a copy that user may execute. `None` when not root.
fn peer_as_nobody(dir: &TestDir, args: &[&str]) -> Option<(String, bool)> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let exe = dir.0.join("shm-peer");
    std::fs::copy(env!("CARGO_BIN_EXE_shm-peer"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(Peer::spawn_cmd(Command::new(&exe).args(args).uid(65534).gid(65534)).finish())
}

#[test]
fn mlock_beyond_the_limit_is_a_clear_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("mlock");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let regions = dir.0.join("regions");
    std::fs::create_dir(&regions).unwrap();
    // The peer's own directory: weft refuses one owned by another user.
    std::fs::set_permissions(&regions, std::fs::Permissions::from_mode(0o700)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&regions, Some(65534), Some(65534)).unwrap();
    }
    let Some((line, ok)) =
        peer_as_nobody(&dir, &["mlock-create", regions.to_str().unwrap(), "locked"])
    else {
        eprintln!("not root: cannot drop CAP_IPC_LOCK to test the limit; skipped");
        return;
    };
    assert!(ok, "peer failed: {line}");
    assert!(
        line.starts_with("error mlock of") && line.contains("RLIMIT_MEMLOCK is 0 bytes"),
        "peer said {line:?}"
    );
    assert!(
        !regions.join("locked").exists(),
        "a failed create leaves no file behind"
    );
}

/// Another user is refused twice over: our directory is not theirs to
/// trust, and in a directory they do trust our 0600 file is not theirs to
/// open. Both are typed errors, not crashes.
#[test]
fn another_user_gets_permission_denied_not_a_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TestDir::new("perm");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _rx = spsc::Consumer::create(&dir.opts(), "private", &SpscConfig::new(1 << 12)).unwrap();
    let dir_arg = dir.0.to_str().unwrap().to_string();
    if let Some((line, ok)) = peer_as_nobody(&dir, &["attach", &dir_arg, "private"]) {
        assert!(
            ok && line.starts_with("error UntrustedDirectory") && line.contains("owned by uid 0"),
            "peer said {line:?}"
        );
        // Now the directory is theirs; the file in it is still root's, 0600.
        std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (line, ok) = peer_as_nobody(&dir, &["attach", &dir_arg, "private"]).unwrap();
        assert!(
            ok && line.starts_with("error PermissionDenied"),
            "peer said {line:?}"
        );
        std::os::unix::fs::chown(&dir.0, Some(0), Some(0)).unwrap();
    } else {
        std::fs::set_permissions(
            dir.0.join("private"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let err = spsc::Consumer::attach(&dir.opts(), "private").unwrap_err();
        assert!(
            matches!(err, weft_shm::ShmError::PermissionDenied { .. }),
            "{err}"
        );
    }
}

/// Issue 22, CLI hygiene: the test peers answer `--help` with their usage.
#[test]
fn the_test_peers_answer_help() {
    for (exe, starts) in [
        (
            env!("CARGO_BIN_EXE_shm-peer"),
            "usage: shm-peer spsc-produce",
        ),
        (env!("CARGO_BIN_EXE_net-peer"), "usage: net-peer publish"),
    ] {
        let out = Command::new(exe).arg("--help").output().unwrap();
        assert!(out.status.success(), "{exe}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(starts));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_net-peer"))
        .args(["subscribe", "--gruop", "239.1.1.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --gruop"));
}
