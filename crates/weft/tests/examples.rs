//! Runs the examples as a user would: `pong` and `ping` as two processes, over
//! shared memory and over UDP multicast on loopback, in every threading mode
//! with every idle strategy. `ping` checks every reply byte for byte.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `target/<profile>/examples/<name>`, built by `cargo test` with this test.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run through `cargo test`, which builds the examples",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ping_pong_runs_in_every_threading_mode_and_idle_strategy() {
    let dir = std::env::temp_dir().join(format!("weft-examples-{}", std::process::id()));
    let count = "300";
    for transport in ["shm", "udp"] {
        for threading in ["dedicated", "shared", "invoker"] {
            for idle in ["busy-spin", "yield", "backoff", "sleep:20us"] {
                let (ping, pong) = match transport {
                    "shm" => (
                        format!("shm:ping-{threading}-{}", idle.replace(':', "")),
                        format!("shm:pong-{threading}-{}", idle.replace(':', "")),
                    ),
                    _ => {
                        let port = free_port();
                        (
                            format!("udp://239.77.53.1:{port}"),
                            format!("udp://239.77.53.2:{port}"),
                        )
                    }
                };
                let common = [
                    "--ping",
                    &ping,
                    "--pong",
                    &pong,
                    "--count",
                    count,
                    "--threading",
                    threading,
                    "--idle",
                    idle,
                    "--timeout-s",
                    "60",
                ];
                let mut pong_proc = Command::new(example("pong"))
                    .args(common)
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("start pong");
                let out = Command::new(example("ping"))
                    .args(common)
                    .arg("--dir")
                    .arg(&dir)
                    .output()
                    .expect("run ping");
                let pong_status = pong_proc.wait().expect("pong exit");
                let what = format!("{transport} {threading} {idle}");
                assert!(
                    out.status.success() && pong_status.success(),
                    "{what}: ping {:?} pong {pong_status:?}\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    stdout.contains(&format!("{count} round trips")),
                    "{what}: {stdout}"
                );
                eprintln!("{what}: {}", stdout.trim());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs an example with `args`; it must exit 0 and print every `expect`ed line part.
fn run(name: &str, args: &[&str], expect: &[&str]) {
    let out = Command::new(example(name))
        .args(args)
        .output()
        .expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} {args:?}: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for e in expect {
        assert!(stdout.contains(e), "{name}: no {e:?} in\n{stdout}");
    }
    eprintln!("{stdout}");
}

/// ping and pong read their settings from a TOML file, one of which locks
/// the process in memory (needs root or `RLIMIT_MEMLOCK`: skipped, saying so,
/// when the limit is too small).
#[test]
fn ping_pong_take_their_settings_from_a_config_file() {
    let dir = std::env::temp_dir().join(format!("weft-examples-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let locked = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .is_ok_and(|(soft, _)| soft == nix::sys::resource::RLIM_INFINITY)
        || nix::unistd::geteuid().is_root();
    if !locked {
        eprintln!("SKIPPED the lock_memory half: RLIMIT_MEMLOCK is limited and this is not root");
    }
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "dir = {:?}\nthreading = \"shared\"\nidle = \"yield\"\nlock_memory = {locked}\nshm_capacity = 65536\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let args = [
        "--config",
        cfg,
        "--count",
        "500",
        "--ping",
        "shm:cfg-ping",
        "--pong",
        "shm:cfg-pong",
    ];
    let mut pong = Command::new(example("pong"))
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("start pong");
    run("ping", &args, &["500 round trips"]);
    assert!(pong.wait().unwrap().success());
    std::fs::write(&config, "agnets = 2\n").unwrap();
    let out = Command::new(example("ping"))
        .args(["--config", cfg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agnets"),
        "names the bad key"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three subscriber processes read one gateway's shared-memory ring; every
/// quote arrives at each, in order.
#[test]
fn market_data_reaches_every_local_subscriber_through_one_gateway() {
    let dir = std::env::temp_dir().join(format!("weft-md-{}", std::process::id()));
    let udp = format!("udp://239.77.54.1:{}", free_port());
    run(
        "market_data",
        &[
            "--role",
            "all",
            "--subscribers",
            "3",
            "--count",
            "20000",
            "--udp",
            &udp,
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[
            "subscriber 0: 20000 quotes in order",
            "subscriber 1: 20000 quotes in order",
            "subscriber 2: 20000 quotes in order",
            "gateway: 20000 quotes received once",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Four sensor threads in two processes share one UDP channel: the sink gets
/// each one's samples in order, as one publisher session (the second process
/// writes into the first one's sender instead of starting a session of its own).
#[test]
fn telemetry_from_several_publisher_processes_reaches_the_sink_in_order_as_one_session() {
    let dir = std::env::temp_dir().join(format!("weft-tm-{}", std::process::id()));
    let udp = format!("udp://239.77.55.1:{}", free_port());
    run(
        "telemetry_sink",
        &[
            "--role",
            "all",
            "--processes",
            "2",
            "--sensors",
            "2",
            "--count",
            "20000",
            "--udp",
            &udp,
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[
            "sink: 1 publisher session(s)",
            "sink: sensor 0: 20000 samples in order",
            "sink: sensor 3: 20000 samples in order",
        ],
    );
    let leftover: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !leftover
            .iter()
            .any(|n| n.to_string_lossy().starts_with("udp-send.")),
        "the sender removed its ring file: {leftover:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A publication in this process writes into the UDP sender of a `pong`
/// process (the channel's first publisher on the host). When that process is
/// killed, the publication says `Closed` instead of taking messages nobody
/// will send; opened again, it makes this process the channel's sender.
#[test]
fn a_publication_whose_sender_process_is_killed_reports_closed_and_can_take_over() {
    use std::io::BufRead;
    use weft::{Node, NodeConfig, PublishError, ThreadingMode};

    let dir = std::env::temp_dir().join(format!("weft-crash-{}", std::process::id()));
    let port = free_port();
    let (ping, pong) = (
        format!("udp://239.77.56.1:{port}"),
        format!("udp://239.77.56.2:{port}"),
    );
    let mut child = Command::new(example("pong"))
        .args(["--ping", &ping, "--pong", &pong, "--count", "1"])
        .args(["--dir", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "pong: ready");
    let mut node = Node::new(NodeConfig {
        dir: dir.clone(),
        threading: ThreadingMode::Invoker,
        control_ring: false,
        ..NodeConfig::default()
    })
    .unwrap();
    let mut publ = node.publication(&pong, 1).unwrap();
    assert_eq!(
        publ.offer(b"no receiver yet"),
        Err(PublishError::NotConnected)
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let mut refusals = 0;
    let closed = loop {
        match publ.offer(b"after the crash") {
            Err(PublishError::Closed) => break true,
            Err(PublishError::NotConnected) if refusals < 5_000 => refusals += 1,
            other => panic!("after {refusals} refusals: {other:?}"),
        }
    };
    assert!(closed, "the dead sender is reported");

    drop(publ);
    let mut publ = node.publication(&pong, 1).unwrap();
    for _ in 0..3_000 {
        node.do_work();
        assert_eq!(publ.offer(b"mine now"), Err(PublishError::NotConnected));
    }
    assert_eq!(node.publications_elsewhere(), 0);
    drop(publ);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 22, CLI hygiene: every example answers `--help` (exit 0, its
/// usage) and refuses a flag its usage does not list (exit 2, naming it),
/// rather than run with a silent default.
#[test]
fn every_example_answers_help_and_refuses_an_unknown_flag() {
    for name in ["ping", "pong", "market_data", "telemetry_sink"] {
        let out = Command::new(example(name)).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help: {out:?}");
        assert!(text.starts_with(&format!("usage: {name} ")), "{text}");
        let out = Command::new(example(name))
            .args(["--cuont", "5"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("unknown flag --cuont"), "{name}: {err}");
    }
    // --duration without a --rate has no count to run for: said plainly.
    let out = Command::new(example("market_data"))
        .args(["--duration", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration needs a --rate"));
}

/// `--rate` and `--duration`: a paced run of a chosen length, every quote
/// delivered (rate × duration of them).
#[test]
fn market_data_runs_for_a_duration_at_a_rate() {
    let dir = std::env::temp_dir().join(format!("weft-examples-rate-{}", std::process::id()));
    let udp = format!("udp://239.77.56.9:{}", free_port());
    let out = Command::new(example("market_data"))
        .args([
            "--role",
            "all",
            "--subscribers",
            "1",
            "--rate",
            "2000",
            "--duration",
            "1",
        ])
        .args([
            "--udp",
            &udp,
            "--shm",
            "shm:md-rate",
            "--threading",
            "shared",
        ])
        .arg("--dir")
        .arg(&dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("market_data: 2000 quotes to 1 subscribers"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
