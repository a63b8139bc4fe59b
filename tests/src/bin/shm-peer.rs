//! The other processes of the cross-process tests. Each role prints `ready` once it
//! has attached (so the test knows when to start), does its job, prints a summary
//! line, and exits 0 only if everything it checked held.
//!
//! ```text
//! shm-peer spsc-produce NAME COUNT SEED      send COUNT frames of sizes 1..=1024
//! shm-peer spsc-trickle NAME                 send a frame every ms until killed
//! shm-peer bc-trickle NAME                  create a reliable broadcast ring, send every ms
//! shm-peer bc-consume NAME COUNT SEED        reliable consumer: COUNT frames, in order
//! shm-peer bc-slow NAME SEED                 overwrite consumer that sleeps between polls
//! shm-peer bc-hang NAME                      join, read a little, then hang (to be killed)
//! shm-peer mpsc-produce NAME ID COUNT SEED   one of several MPSC producers
//! shm-peer mpsc-claim-hang NAME              claim a frame, print `claimed`, hang
//! shm-peer attach DIR NAME                   attach an SPSC consumer, print the outcome
//! shm-peer mlock-create DIR NAME             RLIMIT_MEMLOCK = 0, create with mlock, print the outcome
//! ```
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use weft_shm::broadcast;
use weft_shm::mpsc;
use weft_shm::spsc;
use weft_shm::{ClaimError, PollError, ShmError, ShmOptions};
use weft_tests::{fill_frame, frame_matches, seq_of, size_of_frame};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(msg: &str) -> ! {
    eprintln!("shm-peer: {msg}");
    std::process::exit(1)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(&format!("argument {i} missing or invalid")))
}

fn attach_retry<T>(f: impl Fn() -> Result<T, ShmError>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(t) => return t,
            Err(ShmError::NotFound { .. } | ShmError::NotInitialized { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => fail(&format!("attach: {e}")),
        }
    }
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

const USAGE: &str = "\
usage: shm-peer spsc-produce NAME COUNT SEED      send COUNT frames of sizes 1..=1024
       shm-peer spsc-trickle NAME                 send a frame every ms until killed
       shm-peer bc-trickle NAME                   create a reliable broadcast ring, send every ms
       shm-peer bc-consume NAME COUNT SEED        reliable consumer: COUNT frames, in order
       shm-peer bc-slow NAME SEED                 overwrite consumer that sleeps between polls
       shm-peer bc-hang NAME                      join, read a little, then hang (to be killed)
       shm-peer mpsc-produce NAME ID COUNT SEED   one of several MPSC producers
       shm-peer mpsc-claim-hang NAME              claim a frame, print `claimed`, hang
       shm-peer attach DIR NAME                   attach an SPSC consumer, print the outcome
       shm-peer mlock-create DIR NAME             RLIMIT_MEMLOCK = 0, create with mlock, print the outcome
(the other processes of the cross-process tests)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = ShmOptions::default();
    let role = args.first().map(String::as_str).unwrap_or("");
    if role == "--help" || role == "-h" {
        println!("{USAGE}");
        return;
    }
    match role {
        "spsc-produce" => {
            let (name, count, seed): (String, u64, u64) =
                (arg(&args, 1), arg(&args, 2), arg(&args, 3));
            let mut tx = attach_retry(|| spsc::Producer::attach(&opts, &name));
            say("ready");
            for seq in 0..count {
                let len = size_of_frame(seed, seq, 1024);
                loop {
                    match tx.try_claim(len, seq as u32) {
                        Ok(mut claim) => {
                            fill_frame(seed, seq, claim.payload_mut());
                            claim.commit();
                            break;
                        }
                        Err(ClaimError::Full) => std::hint::spin_loop(),
                        Err(e) => fail(&format!("claim: {e}")),
                    }
                }
            }
            say(&format!("sent {count}"));
        }
        "spsc-trickle" => {
            let name: String = arg(&args, 1);
            let mut tx = attach_retry(|| spsc::Producer::attach(&opts, &name));
            say("ready");
            for seq in 0u64.. {
                let _ = tx.offer(1, &seq.to_le_bytes());
                tx.heartbeat();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "bc-trickle" => {
            let name: String = arg(&args, 1);
            let config = broadcast::BroadcastConfig::new(1 << 14, 4, broadcast::Mode::Reliable);
            let mut tx = broadcast::Producer::create(&opts, &name, &config)
                .unwrap_or_else(|e| fail(&format!("create: {e}")));
            say("ready");
            for seq in 0u64.. {
                let _ = tx.offer(1, &seq.to_le_bytes());
                tx.heartbeat();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "bc-consume" => {
            let (name, count, seed): (String, u64, u64) =
                (arg(&args, 1), arg(&args, 2), arg(&args, 3));
            let mut rx = attach_retry(|| broadcast::Consumer::attach(&opts, &name));
            say("ready");
            let mut next = 0u64;
            loop {
                let r = rx.poll(256, |f| {
                    let seq = seq_of(f.payload()).unwrap_or(u64::MAX);
                    if seq != next || !frame_matches(seed, seq, f.payload()) {
                        fail(&format!(
                            "frame {seq} arrived where {next} was due, or is corrupt"
                        ));
                    }
                    next += 1;
                });
                match r {
                    Ok(_) => {}
                    Err(PollError::Closed) => break,
                    Err(e) => fail(&format!("poll: {e}")),
                }
            }
            if next != count {
                fail(&format!("received {next} of {count}"));
            }
            say(&format!("received {next}"));
        }
        "bc-slow" => {
            let (name, seed): (String, u64) = (arg(&args, 1), arg(&args, 2));
            let mut rx = attach_retry(|| broadcast::Consumer::attach(&opts, &name));
            say("ready");
            let (mut frames, mut laps, mut missed, mut last) = (0u64, 0u64, 0u64, None::<u64>);
            loop {
                let r = rx.poll(4, |f| {
                    let seq = seq_of(f.payload()).unwrap_or(u64::MAX);
                    if !frame_matches(seed, seq, f.payload()) {
                        fail(&format!("torn or corrupt frame {seq}"));
                    }
                    if last.is_some_and(|l| seq <= l) {
                        fail(&format!("frame {seq} after {last:?}"));
                    }
                    last = Some(seq);
                    frames += 1;
                });
                match r {
                    Ok(_) => std::thread::sleep(Duration::from_micros(200)),
                    Err(PollError::Lapped { missed: m }) => {
                        laps += 1;
                        missed += m;
                    }
                    Err(PollError::Closed) => break,
                    Err(e) => fail(&format!("poll: {e}")),
                }
            }
            say(&format!("frames {frames} laps {laps} missed {missed}"));
        }
        "bc-hang" => {
            let name: String = arg(&args, 1);
            let mut rx = attach_retry(|| broadcast::Consumer::attach(&opts, &name));
            let _ = rx.poll(16, |_| {});
            say("ready");
            hang();
        }
        "mpsc-produce" => {
            let (name, id, count, seed): (String, u32, u64, u64) =
                (arg(&args, 1), arg(&args, 2), arg(&args, 3), arg(&args, 4));
            let mut tx = attach_retry(|| mpsc::Producer::attach(&opts, &name));
            say("ready");
            let mut buf = vec![0u8; 256];
            for seq in 0..count {
                let len = 8 + size_of_frame(seed ^ id as u64, seq, 200);
                fill_frame(seed ^ id as u64, seq, &mut buf[..len]);
                loop {
                    match tx.offer(id, &buf[..len]) {
                        Ok(()) => break,
                        Err(ClaimError::Full) => std::hint::spin_loop(),
                        Err(e) => fail(&format!("offer: {e}")),
                    }
                }
            }
            say(&format!("sent {count}"));
        }
        "mpsc-claim-hang" => {
            let name: String = arg(&args, 1);
            let mut tx = attach_retry(|| mpsc::Producer::attach(&opts, &name));
            let claim = tx
                .try_claim(100, 9)
                .unwrap_or_else(|e| fail(&format!("claim: {e}")));
            say("claimed");
            std::mem::forget(claim);
            hang();
        }
        "attach" => {
            let (dir, name): (String, String) = (arg(&args, 1), arg(&args, 2));
            match spsc::Consumer::attach(&ShmOptions::in_dir(dir), &name) {
                Ok(_) => say("attached"),
                Err(e) => say(&format!("error {e:?}")),
            }
        }
        "mlock-create" => {
            use nix::sys::resource::{setrlimit, Resource};
            let (dir, name): (String, String) = (arg(&args, 1), arg(&args, 2));
            setrlimit(Resource::RLIMIT_MEMLOCK, 0, 0)
                .unwrap_or_else(|e| fail(&format!("setrlimit: {e}")));
            let opts = ShmOptions {
                mlock: true,
                ..ShmOptions::in_dir(dir)
            };
            match spsc::Producer::create(&opts, &name, &spsc::SpscConfig::new(1 << 16)) {
                Ok(_) => say("created"),
                Err(e) => say(&format!("error {e}")),
            }
        }
        _ => fail(&format!("unknown role {role:?}\n{USAGE}")),
    }
}
