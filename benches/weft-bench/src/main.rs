//! `weft-bench`: latency and throughput of weft beside the physical floor and peer
//! libraries, measured in the same run on pinned cores.
//!
//! ```text
//! weft-bench quick
//! weft-bench list
//! weft-bench run floor-shm shm-pingpong rtrb-pingpong --runs 5 --out results/
//! ```
#![deny(unsafe_code)]

mod api;
mod cli;
mod clock;
mod fanout;
mod harness;
#[cfg(feature = "iceoryx2")]
mod iceoryx2_peer;
mod levels;
mod lines;
mod output;
mod peers;
mod pin;
mod plot;
mod reader_idle;
mod report;
mod shm;
mod stress;
mod summary;
mod udp;

use crate::cli::{Cmd, RunOpts};
use crate::clock::{Clock, Pace};
use crate::harness::{Floor, Meta};
use crate::report::Outcome;

/// A scenario: its name, what it measures, the floor it is probed against,
/// and which of `--size` / `--rate` / `--subscribers` it takes.
#[derive(Debug)]
struct Scenario {
    name: &'static str,
    what: &'static str,
    floor: Floor,
    takes: &'static [Opt],
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Opt {
    Size,
    Rate,
    Subscribers,
}

const SIZE: &[Opt] = &[Opt::Size];
const SIZE_RATE: &[Opt] = &[Opt::Size, Opt::Rate];
const RATE: &[Opt] = &[Opt::Rate];
const NONE: &[Opt] = &[];

macro_rules! scenarios {
    ($($name:literal, $floor:ident, $takes:ident, $what:literal;)*) => {
        &[$(Scenario { name: $name, what: $what, floor: Floor::$floor, takes: $takes }),*]
    };
}

/// Every scenario, with one line saying what it measures.
const SCENARIOS: &[Scenario] = scenarios![
    "floor-shm", Shm, RATE, "raw cache-line ping-pong between two pinned threads: the shared-memory floor (round trip)";
    "floor-shm-lines", Shm, NONE, "the cache-line patterns rings are built from (same line, a new line per message, cursor plus slot) beside the floor, interleaved (4 rows)";
    "shm-pingpong", Shm, SIZE_RATE, "weft SPSC round trip, 32-byte messages, two pinned processes";
    "shm-pingpong-sizes", Shm, NONE, "shm-pingpong at 8 B, 64 B, 512 B, 4 KiB, 16 KiB and 64 KiB (one row per size)";
    "shm-pingpong-instrumented", Shm, NONE, "shm-pingpong plus per-message counters and a sampled one-way latency histogram in a counters file";
    "api-shm-pingpong", Shm, SIZE_RATE, "shm-pingpong through the public API (weft::Node, shm: channels), two pinned processes";
    "api-shm-many-pingpong", Shm, SIZE, "api-shm-pingpong on publishers=many channels (the ring several processes may publish)";
    "shm-peers-interleaved", Shm, NONE, "the floor, weft's SPSC ring (heap, two threads), rtrb, crossbeam, the disruptor (event pollers) and weft's ring in a shared-memory file, in alternating blocks on the same two pinned threads (6 rows)";
    "shm-interleaved", Shm, NONE, "shm-pingpong, api-shm-pingpong and the raw broadcast ring in alternating blocks between the same processes (3 rows)";
    "shm-throughput", Shm, SIZE, "weft SPSC one-way stream, two pinned processes, 256 KiB ring: the producer offers each 64-byte message whole (claim, copy in, commit: a 72-byte frame); the consumer polls every frame available and reads each one's 8-byte sequence number in place, and after a poll that finds none spins --empty-poll-pauses PAUSEs (default 256), as every peer's reader does (msgs/s)";
    "shm-throughput-interleaved", Shm, NONE, "weft's ring (threads, processes, batch, and through the API) and every peer's throughput loop (rtrb, rtrb chunks, crossbeam, disruptor, disruptor batch) in alternating trials (10 rounds); weft's rows carry x_best_peer, the median over rounds of weft over the best peer of the same round, batch against batch (9 rows)";
    "shm-throughput-paired", Shm, NONE, "shm-throughput (weft, two pinned processes) and the rtrb, crossbeam and disruptor throughput loops, in alternating trials (8 rounds; --samples: each contender's messages in all); weft's row carries x_best_peer, the median over rounds of weft over the best peer of the same round (4 rows; quick's shared-memory throughput row)";
    "api-shm-throughput", Shm, SIZE, "a one-way stream through the public API (Publication::offer, Subscription::poll on a shm: channel of 256 KiB), two pinned threads, each 64-byte message written whole; the reader waits as shm-throughput's (msgs/s)";
    "shm-throughput-threads", Shm, SIZE, "shm-throughput placed as the peers are: the ring on the heap, two pinned threads of one process (msgs/s)";
    "shm-throughput-batch", Shm, SIZE, "shm-throughput with the producer's batch API: up to 32 messages offered, then one release (msgs/s)";
    "shm-throughput-sizes", Shm, NONE, "shm-throughput at 8 B, 64 B, 512 B, 4 KiB, 16 KiB and 64 KiB (one row per size)";
    "shm-fanout-1", Shm, SIZE_RATE, "broadcast ring to 1 subscriber process at 1M msgs/s: producer time per message (msgs_per_s: the producer's rate)";
    "shm-fanout-2", Shm, SIZE_RATE, "shm-fanout-1 with 2 subscriber processes";
    "shm-fanout-4", Shm, SIZE_RATE, "shm-fanout-1 with 4 subscriber processes";
    "shm-fanout-8", Shm, SIZE_RATE, "shm-fanout-1 with 8 subscriber processes";
    "rtrb-pingpong", Shm, RATE, "rtrb round trip, 32-byte messages, two pinned threads (peer)";
    "rtrb-throughput", Shm, NONE, "rtrb one-way stream, two pinned threads, 4096 x 64-byte slots, each on a cache line of its own (256 KiB): push copies each whole 64-byte message in, pop copies it out; the reader waits as shm-throughput's (peer, msgs/s)";
    "rtrb-throughput-chunks", Shm, NONE, "rtrb-throughput through rtrb's chunks: up to 32 messages written per write_chunk_uninit, every available one read per read_chunk (peer, msgs/s)";
    "crossbeam-pingpong", Shm, RATE, "crossbeam-channel (bounded, polled) round trip, 32-byte messages, two pinned threads (peer)";
    "crossbeam-throughput", Shm, NONE, "crossbeam-channel (bounded to 4096, polled) one-way stream, two pinned threads: try_send copies each whole 64-byte message in, try_recv copies it out (its slots are 72 bytes, a stamp beside each message, as they come); it has no batch API; the reader waits as shm-throughput's (peer, msgs/s)";
    "disruptor-pingpong", Shm, RATE, "disruptor crate round trip, 32-byte events: a pinned busy-spin processor echoes into a second disruptor polled by the sender (peer)";
    "disruptor-throughput", Shm, NONE, "disruptor crate one-way stream, two pinned threads, 4096 x 64-byte events, each on a cache line of its own (256 KiB): publish writes each whole event in place, an event poller reads each one's 8-byte sequence number in place and waits as shm-throughput's reader (peer, msgs/s)";
    "disruptor-throughput-batch", Shm, NONE, "disruptor-throughput with the disruptor's batch_publish of up to 32 events (peer, msgs/s)";
    "floor-udp", Udp, NONE, "raw UDP ping-pong of 64-byte datagrams on loopback, busy-polled: the network floor (round trip)";
    "floor-mcast", Udp, NONE, "floor-udp over multicast groups on 127.0.0.1, raw sockets: the kernel's multicast cost (round trip)";
    "udp-pingpong", Udp, SIZE_RATE, "weft round trip over multicast on 127.0.0.1, 32-byte messages, two pinned threads";
    "udp-pingpong-sizes", Udp, NONE, "udp-pingpong at 8 B, 64 B, 512 B, 4 KiB, 16 KiB and 64 KiB (fragmented above the MTU; one row per size)";
    "udp-pingpong-loss0.1", Udp, SIZE, "udp-pingpong with 0.1 % of datagrams dropped on receive at each end (seeded injector)";
    "udp-pingpong-loss1", Udp, SIZE, "udp-pingpong with 1 % injected loss at each end";
    "udp-pingpong-loss5", Udp, SIZE, "udp-pingpong with 5 % injected loss at each end";
    "api-udp-pingpong", Udp, SIZE, "udp-pingpong through the public API (weft::Node in invoker mode, udp: channels), two pinned threads";
    "udp-interleaved", Udp, NONE, "floor-udp, floor-mcast, udp-pingpong, api-udp-pingpong and udp-pingpong with authenticated datagrams in alternating blocks on the same threads (5 rows)";
    "mcast-throughput", Udp, SIZE, "weft one-way multicast stream on 127.0.0.1, 64-byte messages batched per datagram (msgs/s)";
    "mcast-throughput-loss0.1", Udp, SIZE, "mcast-throughput with 0.1 % of datagrams dropped at the subscriber (seeded), repaired by NAK";
    "mcast-throughput-loss1", Udp, SIZE, "mcast-throughput with 1 % injected loss";
    "mcast-throughput-loss5", Udp, SIZE, "mcast-throughput with 5 % injected loss";
    "mcast-fanout", Udp, SUBSCRIBERS, "weft multicast stream on 127.0.0.1 to 3 subscriber processes (--subscribers N), flow control on the slowest (msgs/s)";
    "udp-raw-throughput", Udp, NONE, "one 64-byte datagram per send on loopback: the per-datagram floor (msgs/s)";
];

const SUBSCRIBERS: &[Opt] = &[Opt::Size, Opt::Subscribers];

/// Scenarios that exist only when built with `--features iceoryx2`.
#[cfg(feature = "iceoryx2")]
const ICEORYX2_SCENARIOS: &[Scenario] = scenarios![
    "iceoryx2-pingpong", Shm, NONE, "iceoryx2 publish-subscribe round trip, 32-byte messages, two pinned threads (peer; feature iceoryx2)";
    "iceoryx2-throughput", Shm, NONE, "iceoryx2 publish-subscribe one-way stream, 64-byte messages, two pinned threads (peer, msgs/s; feature iceoryx2)";
];
#[cfg(not(feature = "iceoryx2"))]
const ICEORYX2_SCENARIOS: &[Scenario] = &[];

fn all_scenarios() -> impl Iterator<Item = &'static Scenario> {
    SCENARIOS.iter().chain(ICEORYX2_SCENARIOS)
}

/// What one scenario run gets from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub clock: Clock,
    pub samples: Option<u64>,
    pub size: Option<usize>,
    pub rate: Option<f64>,
    pub subscribers: Option<usize>,
}

impl Ctx {
    pub fn pace(&self) -> Pace {
        Pace::new(self.clock, self.rate)
    }
}

/// Message sizes of the `-sizes` sweeps.
const SWEEP_SIZES: &[usize] = &[8, 64, 512, 4096, 16384, 65536];

fn run(name: &str, ctx: Ctx) -> Vec<Outcome> {
    let clock = ctx.clock;
    // `--samples N` is exactly N measured samples in every scenario (in
    // each size of a sweep, and in each kind of an interleaved set); each
    // default is smaller for the slower transports.
    let n = |default: u64| ctx.samples.unwrap_or(default);
    let lat = n(500_000);
    let lat_warm = (lat / 5).max(10_000);
    let udp_lat = n(50_000);
    let udp_warm = (udp_lat / 5).max(1_000);
    let thr = n(20_000_000);
    let thr_warm = (thr / 10).max(100_000);
    let given = ctx.samples.is_some();
    // A sweep's default shrinks with the message size; a given count does not.
    let scaled = |default: u64, by: u64, min: u64| {
        if given {
            default
        } else {
            (default / by).max(min)
        }
    };
    let size = |default: usize| ctx.size.unwrap_or(default);
    let pace = ctx.pace();
    let one = match name {
        "shm-interleaved" => return api::shm_interleaved(clock, lat_warm, lat, 32),
        "udp-interleaved" => return udp::interleaved(clock, udp_warm, udp_lat),
        "shm-peers-interleaved" => return peers::interleaved(clock, lat_warm, lat),
        "shm-throughput-paired" => {
            return peers::throughput_paired(clock, 8, n(8_000_000));
        }
        "shm-throughput-interleaved" => {
            // 10 rounds; --samples: each contender's messages in all.
            return peers::throughput_interleaved(clock, 10, n(20_000_000));
        }
        "floor-shm-lines" => return lines::run(clock, lat_warm, lat),
        "shm-pingpong-sizes" => {
            return SWEEP_SIZES
                .iter()
                .map(|&b| {
                    // Large messages: fewer round trips, the same order of run time.
                    let n = scaled(lat, 1 + b as u64 / 512, 2_000);
                    shm::pingpong(clock, (n / 5).max(1_000), n, b, pace)
                })
                .collect();
        }
        "shm-throughput-sizes" => {
            return SWEEP_SIZES
                .iter()
                .map(|&b| {
                    let n = scaled(thr, 1 + b as u64 / 64, 50_000);
                    shm::throughput(clock, (n / 10).max(10_000), n, b)
                })
                .collect()
        }
        "udp-pingpong-sizes" => {
            return SWEEP_SIZES
                .iter()
                .map(|&b| {
                    let n = scaled(udp_lat, 1 + b as u64 / 4096, 1_000);
                    udp::pingpong(clock, (n / 5).max(200), n, b, pace, None)
                })
                .collect()
        }
        "floor-shm" => shm::floor(clock, lat_warm, lat, pace),
        "shm-pingpong" => shm::pingpong(clock, lat_warm, lat, size(32), pace),
        "shm-pingpong-instrumented" => shm::pingpong_instrumented(clock, lat_warm, lat, 32),
        "api-shm-pingpong" => api::shm_pingpong(clock, lat_warm, lat, size(32), false, pace),
        "api-shm-many-pingpong" => api::shm_pingpong(clock, lat_warm, lat, size(32), true, pace),
        "api-udp-pingpong" => api::udp_pingpong(clock, udp_warm, udp_lat, size(32)),
        "shm-throughput" => shm::throughput(clock, thr_warm, thr, size(64)),
        "shm-throughput-batch" => shm::throughput_batch(clock, thr_warm, thr, size(64)),
        "shm-throughput-threads" => shm::throughput_threads(clock, thr_warm, thr, size(64)),
        "api-shm-throughput" => api::shm_throughput(clock, thr_warm, thr, size(64)),
        "rtrb-pingpong" => peers::rtrb_pingpong(clock, lat_warm, lat, pace),
        "rtrb-throughput" => peers::rtrb_throughput(clock, thr_warm, thr),
        "rtrb-throughput-chunks" => peers::rtrb_throughput_chunks(clock, thr_warm, thr),
        "crossbeam-pingpong" => peers::crossbeam_pingpong(clock, lat_warm, lat, pace),
        "crossbeam-throughput" => peers::crossbeam_throughput(clock, thr_warm, thr),
        "disruptor-pingpong" => peers::disruptor_pingpong(clock, lat_warm, lat, pace),
        "disruptor-throughput" => peers::disruptor_throughput(clock, thr_warm, thr),
        "disruptor-throughput-batch" => peers::disruptor_throughput_batch(clock, thr_warm, thr),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2-pingpong" => iceoryx2_peer::pingpong(clock, lat_warm, lat),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2-throughput" => {
            let m = n(5_000_000);
            iceoryx2_peer::throughput(clock, (m / 10).max(25_000), m)
        }
        "floor-udp" => udp::floor(clock, udp_warm, udp_lat),
        "floor-mcast" => udp::floor_mcast(clock, udp_warm, udp_lat),
        "udp-pingpong" => udp::pingpong(clock, udp_warm, udp_lat, size(32), pace, None),
        "mcast-throughput" => {
            let m = n(5_000_000);
            udp::mcast_throughput(clock, (m / 10).max(25_000), m, size(64), None)
        }
        "mcast-fanout" => {
            let m = n(500_000);
            fanout::mcast(
                clock,
                (m / 10).max(2_500),
                m,
                size(64),
                ctx.subscribers.unwrap_or(3),
            )
        }
        "udp-raw-throughput" => {
            let m = n(1_000_000);
            udp::raw_throughput(clock, (m / 10).max(5_000), m)
        }
        _ => {
            if let Some(n) = name.strip_prefix("shm-fanout-") {
                let n: usize = n.parse().expect("listed fan-out");
                let msgs = ctx.samples.unwrap_or(2_000_000);
                fanout::shm(
                    clock,
                    (msgs / 10).max(10_000),
                    msgs,
                    size(64),
                    n,
                    ctx.rate.unwrap_or(1e6),
                )
            } else if let Some(pct) = name.strip_prefix("udp-pingpong-loss") {
                let pct: f64 = pct.parse().expect("listed loss");
                let mut o = udp::pingpong(clock, udp_warm, udp_lat, size(32), pace, Some(pct));
                o.scenario = name.into();
                o
            } else if let Some(pct) = name.strip_prefix("mcast-throughput-loss") {
                let pct: f64 = pct.parse().expect("listed loss");
                let m = n(2_500_000);
                let mut o =
                    udp::mcast_throughput(clock, (m / 10).max(12_500), m, size(64), Some(pct));
                o.scenario = name.into();
                o
            } else {
                unreachable!("checked against SCENARIOS: {name}")
            }
        }
    };
    vec![one]
}

/// `quick`'s sample counts, each the exact number measured: short, so that
/// on a fresh clone the build and the table together take under 90 s on 2
/// cores.
fn quick_samples(name: &str) -> Option<u64> {
    Some(match name {
        // The slowest streams (about 5 and 0.2 M msgs/s).
        "crossbeam-throughput" => 2_000_000,
        // Each contender's messages in all, over 8 rounds (crossbeam's
        // trials take about 0.15 s).
        "shm-throughput-paired" => 6_000_000,
        "udp-raw-throughput" => 50_000,
        "mcast-throughput" => 1_000_000,
        n if n.ends_with("-throughput") => 4_000_000,
        // UDP round trips take some 7 us, shared memory's 0.1-0.3 us.
        n if n.contains("udp") || n.contains("mcast") => 10_000,
        _ => 100_000,
    })
}

/// `quick`'s runs of each scenario.
const QUICK_RUNS: u32 = 3;

/// Runs `names` `opts.runs` times round robin, each between floor probes,
/// with `samples_for(name)` (or `--samples`) samples. Prints JSON lines as
/// results arrive when asked; returns every result.
fn run_all(
    names: &[String],
    opts: &RunOpts,
    meta: &Meta,
    samples_for: impl Fn(&str) -> Option<u64>,
) -> Vec<Outcome> {
    let clock = Clock::calibrate();
    reader_idle::set_empty_poll_pauses(opts.empty_poll_pauses);
    let mut outcomes = Vec::new();
    for run_no in 1..=opts.runs.max(1) {
        for name in names {
            let ctx = Ctx {
                clock,
                samples: samples_for(name).or(opts.samples),
                size: opts.size,
                rate: opts.rate,
                subscribers: opts.subscribers,
            };
            let s = all_scenarios()
                .find(|s| s.name == name)
                .expect("checked names");
            if !opts.json {
                eprintln!("weft-bench: run {run_no}/{}: {name}", opts.runs.max(1));
            }
            for mut o in harness::run_probed(clock, s.floor, opts.retries, || run(name, ctx)) {
                o.run = run_no;
                o.requested = name.clone();
                if let Some(r) = opts.rate.filter(|_| s.takes.contains(&Opt::Rate)) {
                    o.extra.push(("rate", r));
                }
                if opts.json {
                    println!("{}", o.json(meta));
                }
                outcomes.push(o);
            }
        }
    }
    outcomes
}

/// Checks names and options before anything runs: a clear error, exit 2.
fn validate(names: &[String], opts: &RunOpts) -> Result<(), String> {
    for n in names {
        let Some(s) = all_scenarios().find(|s| s.name == n) else {
            if n.starts_with("iceoryx2-") {
                return Err(format!(
                    "scenario {n:?} needs the iceoryx2 peer: cargo run --release -p weft-bench --features iceoryx2 -- run {n}"
                ));
            }
            return Err(format!(
                "unknown scenario {n:?}; `weft-bench list` shows them all"
            ));
        };
        let check = |given: bool, opt: Opt, flag: &str| {
            if given && !s.takes.contains(&opt) {
                Err(format!(
                    "scenario {n:?} does not take {flag} (see `weft-bench list`)"
                ))
            } else {
                Ok(())
            }
        };
        check(opts.size.is_some(), Opt::Size, "--size")?;
        check(opts.rate.is_some(), Opt::Rate, "--rate")?;
        check(
            opts.subscribers.is_some(),
            Opt::Subscribers,
            "--subscribers",
        )?;
    }
    if let Some(b) = opts.size {
        if !(8..=65536).contains(&b) {
            return Err(format!("--size {b}: expected 8 to 65536 bytes"));
        }
    }
    if let Some(r) = opts.rate {
        if !(1.0..=1e9).contains(&r) {
            return Err(format!("--rate {r}: expected 1 to 1e9 messages per second"));
        }
    }
    if let Some(n) = opts.subscribers {
        if !(1..=16).contains(&n) {
            return Err(format!("--subscribers {n}: expected 1 to 16"));
        }
    }
    if opts.samples == Some(0) {
        return Err("--samples 0: expected at least 1".into());
    }
    Ok(())
}

fn finish(outcomes: &[Outcome], opts: &RunOpts, meta: &Meta, quick: bool) {
    let mut table = if quick {
        summary::quick_table(outcomes)
    } else {
        summary::table(outcomes)
    };
    table.push_str(&format!(
        "\nmachine: {} ({} cores), kernel {}; commit {}\n",
        meta.cpu, meta.cores, meta.kernel, meta.commit
    ));
    if !opts.json {
        println!("\n{table}");
    }
    if let Some(dir) = &opts.out {
        match output::write_results(dir, outcomes, meta, &table) {
            Ok(written) => eprintln!("weft-bench: wrote {written} files to {}", dir.display()),
            Err(e) => {
                eprintln!("weft-bench: writing {}: {e}", dir.display());
                std::process::exit(1);
            }
        }
    }
}

fn main() {
    let cmd = cli::parse(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("weft-bench: {e}\n(`weft-bench help` shows the commands and options)");
        std::process::exit(2);
    });
    match cmd {
        Cmd::Help => print!("{}", cli::USAGE),
        Cmd::Version => println!("weft-bench {}", env!("CARGO_PKG_VERSION")),
        Cmd::List => {
            for s in all_scenarios() {
                let takes: Vec<&str> = s
                    .takes
                    .iter()
                    .map(|o| match o {
                        Opt::Size => "SIZE",
                        Opt::Rate => "RATE",
                        Opt::Subscribers => "SUBSCRIBERS",
                    })
                    .collect();
                let takes = if takes.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", takes.join(" "))
                };
                println!("{:<26} {}{takes}", s.name, s.what);
            }
        }
        Cmd::Run { scenarios, opts } => {
            if let Err(e) = validate(&scenarios, &opts) {
                eprintln!("weft-bench: {e}");
                std::process::exit(2);
            }
            let meta = Meta::collect();
            let outcomes = run_all(&scenarios, &opts, &meta, |_| None);
            finish(&outcomes, &opts, &meta, false);
        }
        Cmd::Quick { out } => {
            let started = std::time::Instant::now();
            let opts = RunOpts {
                runs: QUICK_RUNS,
                retries: 1,
                out,
                ..RunOpts::default()
            };
            let meta = Meta::collect();
            let names: Vec<String> = summary::QUICK.iter().map(|s| s.to_string()).collect();
            let outcomes = run_all(&names, &opts, &meta, quick_samples);
            finish(&outcomes, &opts, &meta, true);
            println!(
                "({:.0} s; `weft-bench run …` measures longer, `weft-bench list` shows every scenario)",
                started.elapsed().as_secs_f64()
            );
        }
        Cmd::Stress(opts) => std::process::exit(stress::run(&opts)),
        Cmd::Compare(opts) => std::process::exit(stress::compare(&opts)),
        Cmd::Child { args } => match args.first().map(String::as_str) {
            Some("stress-sub") => stress::subscriber::run(&args[1..]),
            Some("stress-gateway") => stress::path::gateway(&args[1..]),
            _ => shm::child(&args),
        },
    }
}
