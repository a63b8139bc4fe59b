//! Scenario and property tests of the protocol in the deterministic simulator.

mod sim;

use std::collections::VecDeque;

use sim::{check_log, message, NetConfig, Sim, MTU};
use weft_proto::{Nanos, ReceiverConfig, SenderConfig};

const MS: Nanos = 1_000_000;
const US: Nanos = 1_000;

fn burst(n: u64, size: impl Fn(u64) -> usize) -> VecDeque<(Nanos, Vec<u8>)> {
    (0..n).map(|i| (1, message(i, size(i)))).collect()
}

fn sim(seed: u64, receivers: usize, net: NetConfig) -> Sim {
    Sim::new(seed, receivers, net, SenderConfig::new(7, seed), |i| {
        ReceiverConfig::new(7, seed * 1000 + i as u64)
    })
}

#[test]
fn lossless_delivery_in_order_with_batching_and_fragments() {
    let mut s = sim(1, 3, NetConfig::lossy(0.0, 100 * US));
    let sizes = |i: u64| {
        if i % 10 == 0 {
            3 * MTU + 17
        } else {
            8 + (i as usize * 37) % 300
        }
    };
    let mut schedule = burst(500, sizes);
    s.run(200 * MS, &mut schedule);
    for log in &s.logs {
        assert_eq!(log.messages, (0..500).collect::<Vec<_>>());
        assert!(log.losses.is_empty());
    }
    // Small messages were batched: far fewer datagrams than messages.
    let stats = s.sender.stats();
    assert!(stats.data_sent < 500, "{stats:?}");
}

#[test]
fn a_single_lost_datagram_is_nakked_once_and_repaired() {
    // Drop exactly the sender's 5th DATA datagram to receiver 1: use a partition
    // window around it instead of randomness.
    let mut net = NetConfig::lossy(0.0, 100 * US);
    net.jitter_ns = 0;
    let mut s = sim(2, 1, net);
    // Messages sent 1 ms apart: each its own datagram.
    let mut schedule: VecDeque<_> = (0..20).map(|i| (1 + i * MS, message(i, 100))).collect();
    // SETUP and the first heartbeats go first; cut the link while message 5 travels.
    s.net.partitions.push((1, 5 * MS + 1, 5 * MS + 10 * US));
    s.run(100 * MS, &mut schedule);
    check_log(&s.logs[0], 20).unwrap();
    assert_eq!(s.logs[0].messages, (0..20).collect::<Vec<_>>());
    let rx = s.receivers[0].stats();
    assert_eq!(rx.naks_sent, 1, "{rx:?}");
    assert_eq!(s.sender.stats().repairs_sent, 1);
}

#[test]
fn the_last_message_lost_is_recovered_within_a_few_round_trips() {
    let mut net = NetConfig::lossy(0.0, 100 * US);
    net.jitter_ns = 0;
    let mut s = sim(3, 1, net);
    let mut schedule: VecDeque<_> = (0..10).map(|i| (1 + i * MS, message(i, 100))).collect();
    // The last message (sent at 9 ms) is lost; only heartbeats can reveal it.
    s.net.partitions.push((1, 9 * MS + 1, 9 * MS + 10 * US));
    s.run(200 * MS, &mut schedule);
    assert_eq!(s.logs[0].messages, (0..10).collect::<Vec<_>>());
    let recovered = s.logs[0].times[9] - 9 * MS;
    // Round trip 200 µs: heartbeat after 50 µs, NAK delay ≤ 200 µs, repair.
    assert!(recovered < 2 * MS, "recovered after {recovered} ns");
}

#[test]
fn a_receiver_partitioned_beyond_the_buffer_gets_an_exact_loss_then_continues() {
    let mut scfg = SenderConfig::new(7, 4);
    scfg.buffer_datagrams = 64;
    let mut s = Sim::new(4, 1, NetConfig::lossy(0.0, 100 * US), scfg, |i| {
        ReceiverConfig::new(7, 40 + i as u64)
    });
    // One message per ms for 400 ms; the receiver is cut off from 50 to 250 ms.
    let mut schedule: VecDeque<_> = (0..400).map(|i| (1 + i * MS, message(i, 200))).collect();
    s.net.partitions.push((1, 50 * MS, 250 * MS));
    s.run(1_000 * MS, &mut schedule);
    let log = &s.logs[0];
    check_log(log, 400).unwrap();
    assert_eq!(log.losses.len(), 1, "{:?}", log.losses);
    let (range, _) = log.losses[0];
    // Exactly the datagrams the sender no longer held.
    assert!(range.to <= s.sender.oldest_seq());
    assert_eq!(
        *log.messages.last().unwrap(),
        399,
        "it continues after the loss"
    );
}

#[test]
fn joining_near_the_start_recovers_everything_and_a_late_joiner_starts_where_it_joined() {
    let mut s = sim(5, 3, NetConfig::lossy(0.0, 100 * US));
    // One datagram per ms. Receiver 2 hears nothing for 50 ms (within the join
    // window of 512 datagrams); receiver 3 for 700 ms (beyond it).
    s.net.partitions.push((2, 0, 50 * MS));
    s.net.partitions.push((3, 0, 700 * MS));
    let mut schedule: VecDeque<_> = (0..1_000).map(|i| (1 + i * MS, message(i, 64))).collect();
    s.run(1_500 * MS, &mut schedule);
    assert_eq!(s.logs[0].messages, (0..1_000).collect::<Vec<_>>());
    assert_eq!(
        s.logs[1].messages,
        (0..1_000).collect::<Vec<_>>(),
        "joined near the start: recovers from the start"
    );
    let late = &s.logs[2];
    assert!(
        late.losses.is_empty(),
        "a late joiner reports no loss for what came before it"
    );
    let first = late.messages[0];
    assert!((699..=701).contains(&first), "joined at {first}");
    assert_eq!(
        late.sessions[0].1, first,
        "NewSession says where it started"
    );
    assert_eq!(late.messages, (first..1_000).collect::<Vec<_>>());
}

#[test]
fn a_restarted_publisher_is_a_new_session() {
    let mut s = sim(6, 1, NetConfig::lossy(0.0, 100 * US));
    let mut schedule: VecDeque<_> = (0..10).map(|i| (1 + i * MS, message(i, 64))).collect();
    s.run(50 * MS, &mut schedule);
    let first_session = s.sender.session_id();
    // The publisher restarts with another seed: a new session, sequence from 0.
    s.sender = weft_proto::Sender::new(SenderConfig::new(7, 999)).unwrap();
    let mut schedule: VecDeque<_> = (0..10)
        .map(|i| (s.now + 1 + i * MS, message(i, 64)))
        .collect();
    s.run(s.now + 100 * MS, &mut schedule);
    let log = &s.logs[0];
    let sessions: Vec<u64> = log.sessions.iter().map(|&(id, _)| id).collect();
    assert_eq!(sessions, vec![first_session, s.sender.session_id()]);
    assert_eq!(log.messages.len(), 20);
}

#[test]
fn min_flow_control_holds_the_sender_back_until_the_slow_receiver_times_out() {
    let mut scfg = SenderConfig::new(7, 8);
    scfg.receiver_timeout_ns = 50 * MS;
    let mut s = Sim::new(8, 2, NetConfig::lossy(0.0, 100 * US), scfg, |i| {
        let mut c = ReceiverConfig::new(7, 80 + i as u64);
        c.buffer_datagrams = 32;
        c.status_interval_ns = MS;
        c
    });
    let mut schedule: VecDeque<_> = (0..2_000)
        .map(|i| (1 + i * 10 * US, message(i, 1_000)))
        .collect();
    // Receiver 2 goes silent at 5 ms (its STATUS stops reaching the sender).
    s.net.partitions.push((2, 5 * MS, 10_000 * MS));
    s.run(30 * MS, &mut schedule);
    let held_back = s.sender.next_seq();
    assert!(!schedule.is_empty(), "the sender was held back");
    s.run(500 * MS, &mut schedule);
    assert!(
        schedule.is_empty(),
        "released once the silent receiver timed out"
    );
    assert!(s.sender.next_seq() > held_back);
    assert_eq!(s.sender.stats().receivers_timed_out, 1);
    assert_eq!(s.logs[0].messages.len(), 2_000);
}

/// Runs one seeded scenario and returns the per-receiver logs' verdicts.
fn random_scenario(seed: u64) -> Result<(), String> {
    let mut rng = weft_proto::SplitMix::new(seed);
    let mut pick = |n: u64| rng.next_u64() % n;
    let receivers = 1 + pick(4) as usize;
    let loss = [0.0, 0.01, 0.05, 0.2][pick(4) as usize];
    let mut net = NetConfig::lossy(loss, (20 + pick(200)) * US);
    net.jitter_ns = pick(100) * US;
    net.duplicate = [0.0, 0.01][pick(2) as usize];
    if pick(3) == 0 {
        net.burst_start = 0.01;
        net.burst_len = 1 + pick(8) as u32;
    }
    if pick(4) == 0 {
        let r = 1 + pick(receivers as u64) as usize;
        let from = pick(100) * MS;
        net.partitions.push((r, from, from + pick(300) * MS));
    }
    let mut scfg = SenderConfig::new(7, seed);
    scfg.buffer_datagrams = [64, 256, 4096][pick(3) as usize];
    // One network in three authenticates every datagram.
    let key = (pick(3) == 0)
        .then(|| weft_proto::auth::AuthKey::new(&seed.to_le_bytes().repeat(4)).unwrap());
    scfg.auth = key.clone();
    let n = 50 + pick(300);
    let mut s = Sim::new(seed, receivers, net, scfg, |i| {
        let mut c = ReceiverConfig::new(7, seed ^ (i as u64) << 40);
        c.auth = key.clone();
        c
    });
    // Latency samples: none, some (fragmented ones among them), or all.
    s.stamp_every = [0, 3, 1][pick(3) as usize];
    let mut schedule: VecDeque<_> = (0..n)
        .map(|i| {
            let size = if i % 17 == 0 {
                2 * MTU + (i as usize % 500)
            } else {
                8 + (i as usize * 131) % 400
            };
            (1 + i * 200 * US, message(i, size))
        })
        .collect();
    s.run(3_000 * MS, &mut schedule);
    if !schedule.is_empty() {
        return Err(format!(
            "seed {seed}: {} messages never accepted",
            schedule.len()
        ));
    }
    let oldest = s.sender.oldest_seq();
    for (r, log) in s.logs.iter().enumerate() {
        check_log(log, n).map_err(|e| format!("seed {seed} receiver {r}: {e}"))?;
        let expected = match s.stamp_every {
            0 => 0,
            k => log.messages.iter().filter(|&&m| m % k == 0).count(),
        };
        if log.stamped != expected {
            return Err(format!(
                "seed {seed} receiver {r}: {} stamped messages delivered, {expected} expected",
                log.stamped
            ));
        }
        for (range, _) in &log.losses {
            if range.to > oldest {
                return Err(format!("seed {seed} receiver {r}: LOSS {range:?} of data the sender still holds (oldest {oldest})"));
            }
        }
    }
    Ok(())
}

#[test]
fn a_thousand_seeded_random_networks_deliver_in_order_or_report_loss() {
    let scenarios: u64 = std::env::var("WEFT_SIM_SCENARIOS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let failures: Vec<String> = (0..scenarios)
        .filter_map(|seed| random_scenario(seed).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {scenarios} failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Messages 1 ms apart, each its own datagram: message `i` is datagram `i`.
fn spaced(n: u64) -> VecDeque<(Nanos, Vec<u8>)> {
    (0..n).map(|i| (1 + i * MS, message(i, 100))).collect()
}

fn quiet_net() -> NetConfig {
    let mut net = NetConfig::lossy(0.0, 100 * US);
    net.jitter_ns = 0;
    net
}

#[test]
fn a_lost_nak_is_retried() {
    let mut s = sim(10, 1, quiet_net());
    s.drop_once.push((1, 5, false));
    s.drop_naks = 1;
    s.run(200 * MS, &mut spaced(20));
    assert_eq!(s.logs[0].messages, (0..20).collect::<Vec<_>>());
    assert_eq!(
        s.receivers[0].stats().naks_sent,
        2,
        "the first NAK was lost; the retry got through"
    );
    assert_eq!(s.sender.stats().repairs_sent, 1);
}

#[test]
fn a_lost_repair_is_nakked_again() {
    let mut s = sim(11, 1, quiet_net());
    s.drop_once.push((1, 5, false)); // the original
    s.drop_once.push((1, 5, false)); // its first repair
    s.run(200 * MS, &mut spaced(20));
    assert_eq!(s.logs[0].messages, (0..20).collect::<Vec<_>>());
    assert_eq!(s.receivers[0].stats().naks_sent, 2);
    assert_eq!(s.sender.stats().repairs_sent, 2);
}

/// Delivery latencies in round trips: for each receiver and message, (delivered −
/// offered) / RTT.
fn latencies_in_rtts(s: &Sim, rtt: Nanos) -> Vec<f64> {
    let mut v: Vec<f64> = s
        .logs
        .iter()
        .flat_map(|log| {
            log.messages
                .iter()
                .zip(&log.times)
                .map(|(&m, &t)| (t - s.offered_at[m as usize]) as f64 / rtt as f64)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn cell(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1}")
    }
}

#[test]
fn at_1_percent_loss_the_last_message_of_a_burst_arrives_within_2_ms_at_p99() {
    // 8 receivers, 100 µs one way, 1 % independent loss; 400 bursts of 10 messages,
    // 5 ms apart. Latency of each burst's last message at each receiver.
    let mut s = sim(12, 8, NetConfig::lossy(0.01, 100 * US));
    let mut schedule: VecDeque<_> = (0..4_000u64)
        .map(|i| (1 + (i / 10) * 5 * MS, message(i, 64)))
        .collect();
    s.run(3_000 * MS, &mut schedule);
    let mut last: Vec<Nanos> = Vec::new();
    for log in &s.logs {
        check_log(log, 4_000).unwrap();
        assert!(log.losses.is_empty());
        for (&m, &t) in log.messages.iter().zip(&log.times) {
            if m % 10 == 9 {
                last.push(t - s.offered_at[m as usize]);
            }
        }
    }
    last.sort_unstable();
    let p99 = last[(last.len() - 1) * 99 / 100];
    eprintln!(
        "last message of a burst: p50 {} µs, p99 {} µs, max {} µs",
        last[last.len() / 2] / US,
        p99 / US,
        last[last.len() - 1] / US
    );
    assert!(p99 < 2 * MS, "p99 {} µs", p99 / US);
}

#[test]
fn nak_suppression_keeps_naks_per_lost_datagram_small_with_64_receivers() {
    // NAK delay window 4 × RTT, as NORM recommends (RTT 200 µs here).
    let mut s = Sim::new(
        13,
        64,
        NetConfig::lossy(0.05, 100 * US),
        SenderConfig::new(7, 13),
        |i| {
            let mut c = ReceiverConfig::new(7, 13_000 + i as u64);
            c.nak_delay_max_ns = 800 * US;
            c
        },
    );
    s.run(2_000 * MS, &mut spaced(1_000));
    for log in &s.logs {
        check_log(log, 1_000).unwrap();
    }
    let naks: u64 = s.receivers.iter().map(|r| r.stats().naks_sent).sum();
    let lost = s.data_dropped_seqs.len() as u64;
    let per_lost = naks as f64 / lost as f64;
    let without = s.data_dropped as f64 / lost as f64;
    eprintln!(
        "64 receivers, 5 % loss: {naks} NAKs for {lost} datagrams lost by at least one receiver = {per_lost:.2} NAKs per lost datagram \
         (each was lost by {without:.2} receivers on average: that many NAKs without suppression)"
    );
    // Measured: 1.83 (6.94 without suppression). The rest are mostly retries after
    // a lost repair (repairs see 5 % loss too). A regression guard:
    assert!(per_lost < 2.5, "{per_lost:.2} NAKs per lost datagram");
}

/// `cargo test --release -p weft-proto --test protocol loss_rate_table -- --nocapture`
/// prints the table in docs/protocol.md.
#[test]
fn loss_rate_table() {
    let delay = 100 * US;
    let rtt = 2 * delay;
    let mut rows = Vec::new();
    for receivers in [1usize, 8, 64] {
        for loss in [0.0, 0.01, 0.05, 0.2] {
            let n = 1_000;
            let mut s = sim(
                100 + receivers as u64,
                receivers,
                NetConfig::lossy(loss, delay),
            );
            s.run(5_000 * MS, &mut spaced(n));
            let mut delivered = 0;
            let mut losses = 0;
            for log in &s.logs {
                check_log(log, n).unwrap(); // in order, no duplicate, gaps only at LOSS
                delivered += log.messages.len();
                losses += log.losses.len();
            }
            let lost = s.data_dropped_seqs.len().max(1) as f64;
            let naks: u64 = s.receivers.iter().map(|r| r.stats().naks_sent).sum();
            let lat = latencies_in_rtts(&s, rtt);
            // Recovery: messages whose datagram the network dropped on the way to
            // that receiver (message i is datagram i here: one per datagram).
            let mut rec: Vec<f64> = s
                .logs
                .iter()
                .zip(&s.dropped_to)
                .flat_map(|(log, dropped)| {
                    log.messages
                        .iter()
                        .zip(&log.times)
                        .filter(|(m, _)| dropped.contains(m))
                        .map(|(&m, &t)| (t - s.offered_at[m as usize]) as f64 / rtt as f64)
                        .collect::<Vec<_>>()
                })
                .collect();
            rec.sort_by(f64::total_cmp);
            rows.push(format!(
                "| {receivers} | {:.0} % | {delivered} / {} | 0 | {losses} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                loss * 100.0,
                n as usize * receivers,
                naks as f64 / lost,
                s.sender.stats().repairs_sent as f64 / lost,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                rec.len(),
                cell(percentile(&rec, 0.5)),
                cell(percentile(&rec, 0.99)),
            ));
            assert_eq!(
                losses, 0,
                "the buffer (4096 datagrams) holds everything: no LOSS"
            );
            assert_eq!(delivered, n as usize * receivers);
        }
    }
    println!("| receivers | loss | messages delivered | duplicates | LOSS events | NAKs per lost datagram | repairs per lost datagram | delivery p50 (RTT) | delivery p99 (RTT) | recovered | recovery p50 (RTT) | recovery p99 (RTT) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

#[test]
fn a_silent_publisher_is_reported_gone_once() {
    let mut s = sim(14, 2, NetConfig::lossy(0.0, 100 * US));
    s.run(50 * MS, &mut spaced(10));
    assert!(
        s.logs.iter().all(|l| l.gone == 0),
        "heartbeats keep an idle publisher alive"
    );
    s.sender_dead = true;
    s.run(3_000 * MS, &mut VecDeque::new());
    for log in &s.logs {
        assert_eq!(log.messages.len(), 10);
        assert_eq!(log.gone, 1, "reported once, after the publisher timeout");
    }
}
