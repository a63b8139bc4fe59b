//! A deterministic network simulator for weft-proto: one sender, N receivers, a
//! virtual clock, and a seeded network with per-link loss and loss bursts,
//! delay with jitter (and so reordering), duplication, and temporary partitions.
//!
//! Each step advances time to the earliest of the next arrival, the next protocol
//! timeout and the next application action, as quinn-proto's and smoltcp's test
//! networks do. Loss is simply not delivering a datagram. Every random choice
//! comes from one seed, so a failing run is replayed exactly by its seed.

#![allow(dead_code)] // each test binary uses a different part

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use weft_proto::wire::{Frame, SeqRange};
use weft_proto::{
    Destination, Event, Nanos, Receiver, ReceiverConfig, Sender, SenderConfig, SplitMix,
};

/// The network's behaviour.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Independent loss probability per datagram per link.
    pub loss: f64,
    /// Probability that a link starts a burst of losses...
    pub burst_start: f64,
    /// ...of this many consecutive datagrams.
    pub burst_len: u32,
    /// One-way delay.
    pub delay_ns: Nanos,
    /// Extra uniform delay in [0, jitter] (reorders datagrams).
    pub jitter_ns: Nanos,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Receivers (1-based node ids) cut off during [from, to): nothing in or out.
    pub partitions: Vec<(usize, Nanos, Nanos)>,
    /// Per-receiver extra loss (node id, probability), on the sender→receiver link.
    pub receiver_loss: Vec<(usize, f64)>,
}

impl NetConfig {
    pub fn lossy(loss: f64, delay_ns: Nanos) -> Self {
        Self {
            loss,
            burst_start: 0.0,
            burst_len: 0,
            delay_ns,
            jitter_ns: delay_ns / 10,
            duplicate: 0.0,
            partitions: Vec::new(),
            receiver_loss: Vec::new(),
        }
    }
}

/// What one receiver saw.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// Sequence numbers (the first 8 bytes) of delivered messages, in order.
    pub messages: Vec<u64>,
    /// Delivery time of each message.
    pub times: Vec<Nanos>,
    /// Loss events, with how many messages had been delivered before each.
    pub losses: Vec<(SeqRange, usize)>,
    /// New sessions seen: (session id, first sequence number delivered from).
    pub sessions: Vec<(u64, u64)>,
    /// Publisher-gone events.
    pub gone: usize,
    /// Messages whose contents did not match their sequence number, and
    /// stamps missing, unexpected or not the time the message was offered.
    pub corrupt: usize,
    /// Stamped messages delivered with the right stamp.
    pub stamped: usize,
}

pub const MTU: usize = 1408;

/// A datagram on the wire: (arrival time, tie-break order, destination node, source node, bytes).
type InFlight = (Nanos, u64, usize, usize, Vec<u8>);

pub fn addr(node: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + node as u16))
}

/// A message of `len` bytes for sequence `seq`: seq in the first 8 bytes, then a
/// pattern derived from it, so a receiver can check every byte.
pub fn message(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(8)];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in v[8..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    v
}

fn intact(m: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(m.get(..8)?.try_into().ok()?);
    m[8..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .then_some(seq)
}

pub struct Sim {
    pub now: Nanos,
    pub net: NetConfig,
    rng: SplitMix,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    burst_left: Vec<u32>,
    pub sender: Sender,
    pub receivers: Vec<Receiver>,
    pub logs: Vec<Log>,
    /// Datagrams put on the wire by each node (0 = sender).
    pub sent: Vec<u64>,
    /// DATA datagrams (new or repair) the network dropped on a sender→receiver link.
    pub data_dropped: u64,
    /// Distinct DATA sequence numbers dropped to at least one receiver.
    pub data_dropped_seqs: std::collections::BTreeSet<u64>,
    /// Per receiver, the DATA sequence numbers whose first transmission (not a
    /// repair) was dropped on its way.
    pub dropped_to: Vec<std::collections::BTreeSet<u64>>,
    /// When each message (by its sequence number) was accepted by the sender.
    pub offered_at: Vec<Nanos>,
    /// Scripted loss: drop DATA `seq` to receiver node `dst` once: (dst, seq, done).
    pub drop_once: Vec<(usize, u64, bool)>,
    /// Scripted loss: drop the next `n` NAKs receivers send.
    pub drop_naks: u32,
    /// The sender's process is gone: it sends nothing and hears nothing.
    pub sender_dead: bool,
    /// Messages whose sequence number is a multiple of this are offered
    /// stamped with the (virtual) time they were offered at; 0: none.
    pub stamp_every: u64,
    buf: Vec<u8>,
}

impl Sim {
    pub fn new(
        seed: u64,
        receivers: usize,
        net: NetConfig,
        scfg: SenderConfig,
        rcfg: impl Fn(usize) -> ReceiverConfig,
    ) -> Self {
        Self {
            now: 1,
            net,
            rng: SplitMix::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            burst_left: vec![0; (receivers + 1) * (receivers + 1)],
            sender: Sender::new(scfg).expect("valid sender config"),
            receivers: (1..=receivers)
                .map(&rcfg)
                .map(|c| Receiver::new(c).expect("valid receiver config"))
                .collect(),
            logs: vec![Log::default(); receivers],
            sent: vec![0; receivers + 1],
            data_dropped: 0,
            data_dropped_seqs: Default::default(),
            dropped_to: vec![Default::default(); receivers],
            offered_at: Vec::new(),
            drop_once: Vec::new(),
            drop_naks: 0,
            sender_dead: false,
            stamp_every: 0,
            buf: vec![0; 65536],
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn partitioned(&self, node: usize, t: Nanos) -> bool {
        self.net
            .partitions
            .iter()
            .any(|&(n, from, to)| n == node && t >= from && t < to)
    }

    /// Whether the network delivers this datagram (partitions, bursts, loss).
    fn deliverable(&mut self, src: usize, dst: usize) -> bool {
        if self.partitioned(src, self.now) || self.partitioned(dst, self.now) {
            return false;
        }
        let link = src * (self.receivers.len() + 1) + dst;
        if self.burst_left[link] > 0 {
            self.burst_left[link] -= 1;
            return false;
        }
        if self.chance(self.net.burst_start) {
            self.burst_left[link] = self.net.burst_len.saturating_sub(1);
            return false;
        }
        let extra = match src {
            0 => self
                .net
                .receiver_loss
                .iter()
                .find(|(n, _)| *n == dst)
                .map_or(0.0, |(_, p)| *p),
            _ => 0.0,
        };
        !(self.chance(self.net.loss) || self.chance(extra))
    }

    /// Puts a datagram from `src` on the link to `dst`.
    fn send_link(&mut self, src: usize, dst: usize, bytes: &[u8]) {
        let (data_seq, repair) = match Frame::parse(bytes) {
            Ok((_, Frame::Data(d))) if src == 0 => {
                (Some(d.seq), d.flags & weft_proto::wire::DATA_REPAIR != 0)
            }
            _ => (None, false),
        };
        let scripted = data_seq.and_then(|seq| {
            self.drop_once
                .iter_mut()
                .find(|d| d.0 == dst && d.1 == seq && !d.2)
        });
        let dropped = match scripted {
            Some(d) => {
                d.2 = true;
                true
            }
            None => !self.deliverable(src, dst),
        };
        if dropped {
            if let Some(seq) = data_seq {
                self.data_dropped += 1;
                self.data_dropped_seqs.insert(seq);
                if dst > 0 && !repair {
                    self.dropped_to[dst - 1].insert(seq);
                }
            }
            return;
        }
        let copies = if self.chance(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.net.jitter_ns == 0 {
                0
            } else {
                self.rng.next_u64() % (self.net.jitter_ns + 1)
            };
            let at = self.now + self.net.delay_ns + jitter;
            self.order += 1;
            self.queue
                .push(Reverse((at, self.order, dst, src, bytes.to_vec())));
        }
    }

    /// Sends everything every node has to send now.
    fn flush(&mut self) {
        let n = self.receivers.len();
        loop {
            let mut any = false;
            let mut buf = std::mem::take(&mut self.buf);
            while let Some(t) = (!self.sender_dead)
                .then(|| self.sender.poll_transmit(self.now, &mut buf))
                .flatten()
            {
                any = true;
                self.sent[0] += 1;
                for dst in 1..=n {
                    self.send_link(0, dst, &buf[..t.len]);
                }
            }
            for r in 0..n {
                while let Some(t) = self.receivers[r].poll_transmit(self.now, &mut buf) {
                    any = true;
                    self.sent[r + 1] += 1;
                    let is_nak = matches!(Frame::parse(&buf[..t.len]), Ok((_, Frame::Nak(_))));
                    // A dropped NAK loses both its copies (group, then sender).
                    if is_nak && self.drop_naks > 0 {
                        if matches!(t.dest, Destination::Unicast(_)) {
                            self.drop_naks -= 1;
                        }
                        continue;
                    }
                    match t.dest {
                        // A receiver's multicast reaches the other receivers; the
                        // sender is not a member of its group (as with weft-net).
                        Destination::Group => {
                            for dst in (1..=n).filter(|&d| d != r + 1) {
                                self.send_link(r + 1, dst, &buf[..t.len]);
                            }
                        }
                        Destination::Unicast(a) => {
                            let dst = (a.port() - 20_000) as usize;
                            self.send_link(r + 1, dst, &buf[..t.len]);
                        }
                    }
                }
            }
            self.buf = buf;
            if !any {
                break;
            }
        }
    }

    /// Whether message `seq` is offered stamped.
    fn stamped(&self, seq: u64) -> bool {
        self.stamp_every > 0 && seq % self.stamp_every == 0
    }

    fn drain_events(&mut self) {
        for r in 0..self.receivers.len() {
            while let Some(e) = self.receivers[r].poll_event() {
                let log = &mut self.logs[r];
                match e {
                    Event::Message { message: m, .. } => match intact(m) {
                        Some(seq) if !(self.stamp_every > 0 && seq % self.stamp_every == 0) => {
                            log.messages.push(seq);
                            log.times.push(self.now);
                        }
                        _ => log.corrupt += 1,
                    },
                    Event::StampedMessage {
                        sent_ns, message, ..
                    } => match intact(message) {
                        Some(seq)
                            if self.stamp_every > 0
                                && seq % self.stamp_every == 0
                                && self.offered_at.get(seq as usize) == Some(&sent_ns) =>
                        {
                            log.messages.push(seq);
                            log.times.push(self.now);
                            log.stamped += 1;
                        }
                        _ => log.corrupt += 1,
                    },
                    Event::Loss { range, .. } => log.losses.push((range, log.messages.len())),
                    Event::NewSession {
                        session_id,
                        start_seq,
                    } => log.sessions.push((session_id, start_seq)),
                    Event::PublisherGone { .. } => log.gone += 1,
                }
            }
        }
        while self.sender.poll_event().is_some() {}
    }

    /// The time of the next arrival or timeout, if any.
    fn next_event_time(&self) -> Option<Nanos> {
        let arrivals = self.queue.peek().map(|Reverse((t, ..))| *t);
        let timers = std::iter::once(self.sender.poll_timeout().filter(|_| !self.sender_dead))
            .chain(self.receivers.iter().map(Receiver::poll_timeout))
            .flatten();
        arrivals.into_iter().chain(timers).min()
    }

    /// Runs until `until` (virtual), offering `schedule` messages (time, message)
    /// as the sender accepts them.
    pub fn run(
        &mut self,
        until: Nanos,
        schedule: &mut std::collections::VecDeque<(Nanos, Vec<u8>)>,
    ) {
        while self.now < until {
            // The application: offer what is due; back-pressure keeps it queued.
            while let Some((t, _)) = schedule.front() {
                if *t > self.now {
                    break;
                }
                let (_, m) = schedule.front().expect("peeked");
                let seq = u64::from_le_bytes(m[..8].try_into().expect("messages carry their seq"));
                let offered = if self.stamped(seq) {
                    let stamped = [&self.now.to_le_bytes()[..], m].concat();
                    self.sender.offer_stamped(&stamped)
                } else {
                    self.sender.offer(m)
                };
                if offered.is_err() {
                    break;
                }
                let seq = seq as usize;
                if self.offered_at.len() <= seq {
                    self.offered_at.resize(seq + 1, 0);
                }
                self.offered_at[seq] = self.now;
                schedule.pop_front();
            }
            self.flush();
            self.drain_events();
            let app_next = schedule.front().map(|(t, _)| (*t).max(self.now + 1_000));
            let next = [self.next_event_time(), app_next]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            self.now = next.max(self.now + 1).min(until);
            while let Some(Reverse((t, ..))) = self.queue.peek() {
                if *t > self.now {
                    break;
                }
                let Reverse((_, _, dst, src, bytes)) = self.queue.pop().expect("peeked");
                if dst == 0 {
                    if !self.sender_dead {
                        self.sender.handle_datagram(self.now, &bytes);
                    }
                } else {
                    self.receivers[dst - 1].handle_datagram(self.now, addr(src), &bytes);
                }
            }
            self.sender.handle_timeout(self.now);
            for r in &mut self.receivers {
                r.handle_timeout(self.now);
            }
        }
        self.flush();
        self.drain_events();
    }
}

/// Checks one receiver's log against what was published: in order, no duplicate,
/// nothing corrupt, and every gap covered by a loss event at that point. A
/// receiver that joined late (its session started after datagram 0) may begin
/// anywhere.
pub fn check_log(log: &Log, published: u64) -> Result<(), String> {
    if log.corrupt > 0 {
        return Err(format!("{} corrupt messages", log.corrupt));
    }
    let late = log.sessions.first().is_some_and(|&(_, start)| start > 0);
    let mut prev: Option<u64> = None;
    for (i, &m) in log.messages.iter().enumerate() {
        let expected = match prev {
            Some(p) => p + 1,
            None if late => m,
            None => 0,
        };
        if m < expected {
            return Err(format!(
                "message {m} after {prev:?}: duplicate or out of order"
            ));
        }
        if m > expected && !log.losses.iter().any(|&(_, at)| at == i) {
            return Err(format!(
                "silent gap: message {m} after {prev:?} with no loss event"
            ));
        }
        prev = Some(m);
    }
    let last = prev.map_or(0, |p| p + 1);
    if last < published && !log.losses.iter().any(|&(_, at)| at == log.messages.len()) {
        return Err(format!(
            "delivered {last} of {published} messages with no loss event at the end"
        ));
    }
    Ok(())
}
