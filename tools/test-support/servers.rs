//! Real servers for the tools' integration tests, on 127.0.0.1 only:
//! Redis and Prometheus (installed by `scripts/setup`), each killed when
//! its handle drops, and the small clients the tests read them with.
//! Included by `tools/weft-stat/tests/stat.rs` and
//! `tools/weft-rebalance/tests/rebalance.rs` (`#[path]`), which both run
//! these servers; a file rather than a crate, so no test binary is added.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a child process when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`; the body of a 200 answer, or `None`
/// (nothing answers yet, or not with 200).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Redis on 127.0.0.1:`port`, with an append-only file in `dir` so what it
/// held survives a restart; returns once it answers PING.
pub fn redis_server(dir: &Path, port: u16) -> KillOnDrop {
    let child = KillOnDrop(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Of each entry of Redis stream `stream` on 127.0.0.1:`port`, in order:
/// its id and the values of `fields` (empty where absent). Nothing while
/// Redis is down.
pub fn stream_entries<const N: usize>(
    port: u16,
    stream: &str,
    fields: [&str; N],
) -> Vec<(String, [String; N])> {
    let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
    else {
        return Vec::new();
    };
    let Ok(reply) = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query::<redis::Value>(&mut conn)
    else {
        return Vec::new();
    };
    weft_notify::entries_of(&reply)
        .into_iter()
        .map(|(id, kv)| {
            let value = |k: &str| {
                kv.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (id, fields.map(value))
        })
        .collect()
}

/// Prometheus on a free port of 127.0.0.1, its storage in `dir`, scraping
/// 127.0.0.1:`target` for each of `targets` every second; and its port.
pub fn prometheus_scraping(dir: &Path, targets: &[u16]) -> (KillOnDrop, u16) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("'127.0.0.1:{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weft\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let child = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (child, port)
}
