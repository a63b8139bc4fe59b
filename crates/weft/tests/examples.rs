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
