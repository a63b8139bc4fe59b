//! `weft-bench`: latency and throughput of weft beside the physical floor and peer
//! libraries, measured in the same run on pinned cores.
//!
//! ```text
//! weft-bench list
//! weft-bench run floor-shm shm-pingpong shm-throughput rtrb-pingpong rtrb-throughput --json
//! ```
#![deny(unsafe_code)]

mod api;
mod clock;
mod peers;
mod pin;
mod report;
mod shm;
mod udp;

use clap::{Parser, Subcommand};

use crate::clock::Clock;
use crate::report::Outcome;

/// Every scenario, with one line saying what it measures.
const SCENARIOS: &[(&str, &str)] = &[
    (
        "floor-shm",
        "raw cache-line ping-pong between two pinned threads: the shared-memory floor (round trip)",
    ),
    (
        "shm-pingpong",
        "weft SPSC round trip, 32-byte messages, two pinned processes",
    ),
    (
        "shm-pingpong-instrumented",
        "shm-pingpong plus per-message counters and a sampled one-way latency histogram in a counters file",
    ),
    (
        "api-shm-pingpong",
        "shm-pingpong through the public API (weft::Node, shm: channels), two pinned processes",
    ),
    (
        "api-shm-many-pingpong",
        "api-shm-pingpong on publishers=many channels (the ring several processes may publish)",
    ),
    (
        "shm-interleaved",
        "shm-pingpong, api-shm-pingpong and the raw broadcast ring in alternating blocks between the same processes (3 rows)",
    ),
    (
        "shm-throughput",
        "weft SPSC one-way stream, 64-byte messages, two pinned processes (msgs/s)",
    ),
    (
        "rtrb-pingpong",
        "rtrb round trip, 32-byte messages, two pinned threads (peer)",
    ),
    (
        "rtrb-throughput",
        "rtrb one-way stream, 64-byte messages, two pinned threads (peer, msgs/s)",
    ),
    (
        "crossbeam-pingpong",
        "crossbeam-channel (bounded, polled) round trip, 32-byte messages, two pinned threads (peer)",
    ),
    (
        "crossbeam-throughput",
        "crossbeam-channel (bounded, polled) one-way stream, 64-byte messages, two pinned threads (peer, msgs/s)",
    ),
    (
        "floor-udp",
        "raw UDP ping-pong of 64-byte datagrams on loopback, busy-polled: the network floor (round trip)",
    ),
    (
        "floor-mcast",
        "floor-udp over multicast groups on 127.0.0.1, raw sockets: the kernel's multicast cost (round trip)",
    ),
    (
        "udp-pingpong",
        "weft round trip over multicast on 127.0.0.1, 32-byte messages, two pinned threads",
    ),
    (
        "api-udp-pingpong",
        "udp-pingpong through the public API (weft::Node in invoker mode, udp: channels), two pinned threads",
    ),
    (
        "udp-interleaved",
        "floor-udp, floor-mcast, udp-pingpong and api-udp-pingpong in alternating blocks on the same threads (4 rows)",
    ),
    (
        "mcast-throughput",
        "weft one-way multicast stream on 127.0.0.1, 64-byte messages batched per datagram (msgs/s)",
    ),
    (
        "udp-raw-throughput",
        "one 64-byte datagram per send on loopback: the per-datagram floor (msgs/s)",
    ),
];

#[derive(Parser)]
#[command(
    name = "weft-bench",
    about = "weft latency and throughput beside the floor and peer libraries"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Run scenarios in the order given.
    Run {
        /// Scenario names (see `list`).
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// One JSON object per scenario per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Measured samples: round trips for latency scenarios (default 500000;
        /// 50000 over UDP), messages for throughput scenarios (default 20000000;
        /// 5000000 for mcast-throughput, 1000000 for udp-raw-throughput).
        #[arg(long)]
        samples: Option<u64>,
    },
    /// Internal: the second process of a two-process scenario.
    #[command(name = "__child", hide = true)]
    Child { args: Vec<String> },
}

fn run(name: &str, clock: Clock, samples: Option<u64>) -> Vec<Outcome> {
    let lat = samples.unwrap_or(500_000);
    let lat_warm = (lat / 5).max(10_000);
    let thr = samples.unwrap_or(20_000_000);
    let thr_warm = (thr / 10).max(100_000);
    let one = match name {
        "shm-interleaved" => return api::shm_interleaved(clock, lat_warm, lat, 32),
        "udp-interleaved" => return udp::interleaved(clock, lat_warm / 10, lat / 10),
        "floor-shm" => shm::floor(clock, lat_warm, lat),
        "shm-pingpong" => shm::pingpong(clock, lat_warm, lat, 32),
        "shm-pingpong-instrumented" => shm::pingpong_instrumented(clock, lat_warm, lat, 32),
        "api-shm-pingpong" => api::shm_pingpong(clock, lat_warm, lat, 32, false),
        "api-shm-many-pingpong" => api::shm_pingpong(clock, lat_warm, lat, 32, true),
        "api-udp-pingpong" => api::udp_pingpong(clock, lat_warm / 10, lat / 10, 32),
        "shm-throughput" => shm::throughput(clock, thr_warm, thr, 64),
        "rtrb-pingpong" => peers::rtrb_pingpong(clock, lat_warm, lat),
        "rtrb-throughput" => peers::rtrb_throughput(clock, thr_warm, thr),
        "crossbeam-pingpong" => peers::crossbeam_pingpong(clock, lat_warm, lat),
        "crossbeam-throughput" => peers::crossbeam_throughput(clock, thr_warm, thr),
        "floor-udp" => udp::floor(clock, lat_warm / 10, lat / 10),
        "floor-mcast" => udp::floor_mcast(clock, lat_warm / 10, lat / 10),
        "udp-pingpong" => udp::pingpong(clock, lat_warm / 10, lat / 10, 32),
        "mcast-throughput" => udp::mcast_throughput(clock, thr_warm / 4, thr / 4, 64),
        "udp-raw-throughput" => udp::raw_throughput(clock, thr_warm / 20, thr / 20),
        _ => unreachable!("checked against SCENARIOS"),
    };
    vec![one]
}

fn main() {
    match Cli::parse().command {
        Cmd::List => {
            for (name, what) in SCENARIOS {
                println!("{name:<18} {what}");
            }
        }
        Cmd::Run {
            scenarios,
            json,
            samples,
        } => {
            if let Some(bad) = scenarios
                .iter()
                .find(|s| !SCENARIOS.iter().any(|(n, _)| n == s))
            {
                eprintln!("weft-bench: unknown scenario {bad:?}; `weft-bench list` shows them all");
                std::process::exit(2);
            }
            let clock = Clock::calibrate();
            let mut outcomes = Vec::new();
            for name in &scenarios {
                for o in run(name, clock, samples) {
                    if json {
                        println!("{}", o.json());
                    }
                    outcomes.push(o);
                }
            }
            if !json {
                report::print_table(&outcomes);
            }
        }
        Cmd::Child { args } => shm::child(&args),
    }
}
