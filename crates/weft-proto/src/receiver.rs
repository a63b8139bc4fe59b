//! The subscribing side of a stream: reordering, gap detection, NAKs with
//! suppression, in-order delivery, reassembly, loss reports, session changes.
//!
//! ## State
//! - A **reorder buffer**, allocated once: datagram `seq` waits, indexed by
//!   `seq % buffer_datagrams`, until everything before it is delivered or
//!   reported lost. Datagrams are stored back to back in arrival order in a byte
//!   ring of `(2 × buffer_datagrams + 2) × mtu` bytes, so in-order traffic of
//!   small datagrams reuses cache lines and pages. While a datagram `S` waits,
//!   fewer than `2 × buffer_datagrams` others can be stored after it: each is a
//!   distinct sequence number between the `expected` of when `S` arrived and
//!   `S + buffer_datagrams`. Those take less than
//!   `(2 × buffer_datagrams + 1) × mtu` bytes with the wrap, so the ring never
//!   overwrites a datagram still waiting. `expected` is the next datagram to deliver,
//!   `highest` one past the highest datagram known to exist (from DATA or from a
//!   heartbeat's `next_seq`).
//! - **NAKs.** When a gap appears, a NAK is scheduled after a random delay in
//!   `[nak_delay_min_ns, nak_delay_max_ns]`. It is multicast, so other receivers
//!   hear it. Each missing datagram carries a "requested until" time: set when
//!   this receiver NAKs it, when it hears another receiver's NAK for it (that is
//!   the suppression), or when it hears its repair. A NAK includes only datagrams
//!   whose time has passed, and is retried with a backoff that doubles from
//!   `nak_retry_min_ns` to `nak_retry_max_ns` while nothing arrives.
//! - **Loss.** The sender's LOSS frames and its heartbeats' `oldest_seq` move
//!   `gone_until`: a datagram below it that is still missing will never come.
//!   Delivery reports each such run once as [`Event::Loss`] and carries on.
//! - **Joining.** A receiver that first hears a session within `join_window`
//!   datagrams of its start (default: half its reorder buffer) starts at the
//!   session's first datagram and recovers what it missed by NAK, whichever frame
//!   it heard first (SETUP's `initial_seq`, a DATA's `seq - offset`, or a
//!   heartbeat's `oldest_seq`). So loss or reordering of the first datagrams never
//!   costs a receiver that was there from the start. A receiver that first hears a
//!   session later *joins late*: it starts at the datagram it heard (a heartbeat's
//!   `next_seq`), reports that start in [`Event::NewSession`], and skips fragments
//!   of a message begun before it.
//! - **Sessions.** A frame with a new session id is a restarted publisher. The
//!   receiver switches on a SETUP, or when the old session has been silent for
//!   `session_switch_ns`; frames of sessions it left are ignored.
//!
//! Nothing allocates after [`Receiver::new`].

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::wire::{self, Frame, Header, SeqRange, Status};
use crate::{check, check_sizes, ConfigError, Destination, Nanos, SplitMix, Transmit};

/// A receiver's configuration; times are nanoseconds.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// The stream to receive.
    pub stream_id: u32,
    /// This receiver's id in NAK and STATUS (default: drawn from `seed`).
    pub receiver_id: u64,
    /// Seeds every random choice.
    pub seed: u64,
    /// Largest datagram. Default 1408.
    pub mtu: usize,
    /// Reorder buffer, in datagrams; also the window advertised in STATUS. Default 1024.
    pub buffer_datagrams: usize,
    /// Largest message to reassemble. Default 64 KiB.
    pub max_message: usize,
    /// NAK delay after a gap appears, in [min, max], skewed by `nak_delay_lambda`.
    /// Default 0 to 200 µs.
    pub nak_delay_min_ns: Nanos,
    /// See `nak_delay_min_ns`.
    pub nak_delay_max_ns: Nanos,
    /// Skew of the NAK delay (SRM; NORM, RFC 5740): delay = min + spread ×
    /// ln(1 + u (e^λ − 1)) / λ for u uniform in [0, 1). Most receivers pick late
    /// times, so one early NAK suppresses the others; about ln(group size) + 1.
    /// 0 means uniform. Default 5.
    pub nak_delay_lambda: f64,
    /// NAK retry interval, doubling while nothing arrives. Default 1 ms to 50 ms.
    pub nak_retry_min_ns: Nanos,
    /// See `nak_retry_min_ns`.
    pub nak_retry_max_ns: Nanos,
    /// STATUS interval. Default 10 ms.
    pub status_interval_ns: Nanos,
    /// Silence after which the publisher is reported gone. Default 1 s.
    pub publisher_timeout_ns: Nanos,
    /// Silence of the current session after which another session may take over
    /// without a SETUP. Default 100 ms.
    pub session_switch_ns: Nanos,
    /// A session first heard within this many datagrams of its start is received
    /// from its start (capped at half the reorder buffer). Default 512.
    pub join_window: u64,
}

impl ReceiverConfig {
    /// Defaults for `stream_id`, with `seed` for the receiver id and random choices.
    pub fn new(stream_id: u32, seed: u64) -> Self {
        Self {
            stream_id,
            receiver_id: SplitMix::new(seed ^ 0x5EC0_4D3B_17A2_99C1).next_u64(),
            seed,
            mtu: 1408,
            buffer_datagrams: 1024,
            max_message: 64 * 1024,
            nak_delay_min_ns: 0,
            nak_delay_max_ns: 200_000,
            nak_delay_lambda: 5.0,
            nak_retry_min_ns: 1_000_000,
            nak_retry_max_ns: 50_000_000,
            status_interval_ns: 10_000_000,
            publisher_timeout_ns: 1_000_000_000,
            session_switch_ns: 100_000_000,
            join_window: 512,
        }
    }
}

/// Why datagrams were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The sender no longer holds them (LOSS frame or heartbeat's oldest_seq).
    SenderEvicted,
}

/// What a receiver hands the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// One message, in order, borrowed until the next call.
    Message(&'a [u8]),
    /// One message its publisher stamped with its send time
    /// ([`Sender::offer_stamped`](crate::sender::Sender::offer_stamped)), in
    /// order like any other.
    StampedMessage {
        /// The publisher's send time (ns, the publisher's clock: comparable
        /// with this host's only if the publisher runs here).
        sent_ns: u64,
        /// The message, without the stamp.
        message: &'a [u8],
    },
    /// Datagrams `range` will never arrive; messages in them (and a message
    /// fragmented across them) are lost.
    Loss {
        /// Sequence numbers of the lost datagrams.
        range: SeqRange,
        /// Why.
        reason: LossReason,
    },
    /// A publisher session started or replaced the previous one.
    NewSession {
        /// Its id.
        session_id: u64,
        /// Where delivery starts.
        start_seq: u64,
    },
    /// The publisher has been silent for `publisher_timeout_ns`.
    PublisherGone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    NewSession(u64, u64),
    PublisherGone,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// DATA datagrams stored (new or repairs that filled a gap).
    pub data_received: u64,
    /// DATA that was already delivered or stored.
    pub duplicates: u64,
    /// Repairs that filled a gap.
    pub repairs_received: u64,
    /// NAKs sent.
    pub naks_sent: u64,
    /// Datagrams dropped (malformed, another stream, a left session) and
    /// messages dropped (larger than `max_message`, stamped without a stamp).
    pub dropped: u64,
    /// DATA beyond the reorder buffer (dropped; NAKed later).
    pub overflow: u64,
    /// Datagrams reported lost.
    pub lost: u64,
    /// Messages delivered.
    pub messages: u64,
}

/// The receiver state machine. See the module doc.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    rng: SplitMix,
    session: Option<u64>,
    left_sessions: [u64; 4],
    sender: Option<SocketAddr>,
    last_heard: Nanos,
    gone_reported: bool,
    expected: u64,
    highest: u64,
    gone_until: u64,
    /// The byte ring datagrams are stored in (see the module doc).
    slots: Vec<u8>,
    /// Per `seq % buffer_datagrams`: where the datagram starts in `slots`.
    offsets: Vec<usize>,
    /// Where the next datagram goes.
    tail: usize,
    lens: Vec<u32>,
    held: Vec<u64>,
    requested_until: Vec<Nanos>,
    /// Delivery position inside the datagram at `expected`: (byte offset of the
    /// next entry, entries left); `None` until that datagram is opened.
    cursor: Option<(usize, u16)>,
    reasm: Vec<u8>,
    reasm_len: usize,
    reasm_active: bool,
    /// The flags of the first fragment of the message being reassembled.
    reasm_flags: u8,
    nak_timer: Nanos,
    nak_due: bool,
    nak_retry: Nanos,
    status_timer: Nanos,
    status_due: bool,
    /// Delivery position carried by the last STATUS.
    status_position: u64,
    /// The NAK just multicast still has to go to the sender's address.
    nak_copy_due: bool,
    control: VecDeque<Control>,
    ranges: Vec<SeqRange>,
    stats: ReceiverStats,
}

const NONE: u64 = u64::MAX;

/// Whether a message of `len` bytes with its first fragment's `flags` holds
/// the stamp those flags announce (one that does not is the publisher's
/// fault: dropped and counted).
fn holds_stamp(len: usize, flags: u8) -> bool {
    flags & wire::ENTRY_STAMPED == 0 || len >= wire::STAMP_LEN
}

/// A whole message as an event, by its first fragment's flags (checked with
/// [`holds_stamp`]).
fn message_event(m: &[u8], flags: u8) -> Event<'_> {
    match m.split_first_chunk::<{ wire::STAMP_LEN }>() {
        Some((stamp, message)) if flags & wire::ENTRY_STAMPED != 0 => Event::StampedMessage {
            sent_ns: u64::from_le_bytes(*stamp),
            message,
        },
        _ => Event::Message(m),
    }
}

impl Receiver {
    /// A receiver for `cfg.stream_id`. Allocates the reorder buffer
    /// (`(2 × buffer_datagrams + 2) × mtu` bytes), the reassembly buffer and every queue; a value
    /// out of range is a [`ConfigError`] naming it.
    pub fn new(cfg: ReceiverConfig) -> Result<Self, ConfigError> {
        check_sizes(cfg.mtu, cfg.buffer_datagrams, cfg.max_message)?;
        check(cfg.nak_delay_min_ns <= cfg.nak_delay_max_ns, || {
            format!(
                "nak_delay_min_ns {} > nak_delay_max_ns {}",
                cfg.nak_delay_min_ns, cfg.nak_delay_max_ns
            )
        })?;
        check(
            cfg.nak_retry_min_ns > 0 && cfg.nak_retry_min_ns <= cfg.nak_retry_max_ns,
            || {
                format!(
                    "nak_retry_min_ns {} / nak_retry_max_ns {}: expected 0 < min <= max",
                    cfg.nak_retry_min_ns, cfg.nak_retry_max_ns
                )
            },
        )?;
        check(cfg.status_interval_ns > 0, || {
            "status_interval_ns 0: expected more than 0".into()
        })?;
        check(
            cfg.nak_delay_lambda.is_finite() && cfg.nak_delay_lambda >= 0.0,
            || {
                format!(
                    "nak_delay_lambda {}: expected a finite number >= 0",
                    cfg.nak_delay_lambda
                )
            },
        )?;
        let n = cfg.buffer_datagrams;
        Ok(Self {
            rng: SplitMix::new(cfg.seed),
            session: None,
            left_sessions: [0; 4],
            sender: None,
            last_heard: 0,
            gone_reported: false,
            expected: 0,
            highest: 0,
            gone_until: 0,
            slots: vec![0; (2 * n + 2) * cfg.mtu],
            offsets: vec![0; n],
            tail: 0,
            lens: vec![0; n],
            held: vec![NONE; n],
            requested_until: vec![0; n],
            cursor: None,
            reasm: vec![0; cfg.max_message],
            reasm_len: 0,
            reasm_active: false,
            reasm_flags: 0,
            nak_timer: 0,
            nak_due: false,
            nak_retry: cfg.nak_retry_min_ns,
            status_timer: 0,
            status_due: false,
            status_position: 0,
            nak_copy_due: false,
            control: VecDeque::with_capacity(64),
            ranges: Vec::with_capacity(wire::MAX_NAK_RANGES),
            stats: ReceiverStats::default(),
            cfg,
        })
    }

    /// This receiver's id.
    pub fn receiver_id(&self) -> u64 {
        self.cfg.receiver_id
    }

    /// Counters.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The next datagram to deliver: everything below is delivered or reported lost.
    pub fn position(&self) -> u64 {
        self.expected
    }

    fn idx(&self, seq: u64) -> usize {
        (seq % self.cfg.buffer_datagrams as u64) as usize
    }

    fn header(&self) -> Header {
        Header {
            stream_id: self.cfg.stream_id,
            session_id: self.session.unwrap_or(0),
        }
    }

    fn push_control(&mut self, c: Control) {
        if self.control.len() == self.control.capacity() {
            self.control.pop_front();
        }
        self.control.push_back(c);
    }

    /// Processes one datagram from the network. Malformed, foreign-stream and
    /// left-session datagrams are dropped and counted; none can panic.
    pub fn handle_datagram(&mut self, now: Nanos, src: SocketAddr, bytes: &[u8]) {
        let Ok((h, frame)) = Frame::parse(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        if h.stream_id != self.cfg.stream_id || self.left_sessions.contains(&h.session_id) {
            self.stats.dropped += 1;
            return;
        }
        if let Frame::Nak(nak) = frame {
            // Another receiver's NAK (or our own, looped back): suppression.
            if Some(h.session_id) == self.session && nak.receiver_id != self.cfg.receiver_id {
                let until = now + self.nak_retry;
                for r in nak.ranges() {
                    let (from, to) = (r.from.max(self.expected), r.to.min(self.window_end()));
                    for seq in from..to {
                        let i = self.idx(seq);
                        self.requested_until[i] = self.requested_until[i].max(until);
                    }
                }
            }
            return;
        }
        if matches!(frame, Frame::Status(_)) {
            return; // another receiver's STATUS, if unicast ever reaches us
        }
        if Some(h.session_id) != self.session {
            let window = self
                .cfg
                .join_window
                .min(self.cfg.buffer_datagrams as u64 / 2);
            let start = match frame {
                Frame::Setup(s) => Some(s.initial_seq),
                Frame::Data(d) if (d.offset as u64) < window => Some(d.seq - d.offset as u64),
                Frame::Data(d) => Some(d.seq),
                Frame::Heartbeat(hb) if hb.next_seq - hb.oldest_seq < window => Some(hb.oldest_seq),
                Frame::Heartbeat(hb) => Some(hb.next_seq),
                _ => None,
            };
            let may_switch = self.session.is_none()
                || matches!(frame, Frame::Setup(_))
                || now.saturating_sub(self.last_heard) >= self.cfg.session_switch_ns;
            match start {
                Some(start) if may_switch => self.start_session(h.session_id, start, src),
                _ => {
                    self.stats.dropped += 1;
                    return;
                }
            }
        }
        self.last_heard = now;
        self.gone_reported = false;
        self.sender = Some(src);
        match frame {
            Frame::Data(d) => self.on_data(now, d, bytes),
            Frame::Heartbeat(hb) => {
                self.gone_until = self.gone_until.max(hb.oldest_seq);
                self.learn_highest(now, hb.next_seq);
            }
            Frame::Loss(l) => {
                self.gone_until = self.gone_until.max(l.range.to);
                self.learn_highest(now, l.range.to);
            }
            Frame::Setup(_) | Frame::Nak(_) | Frame::Status(_) => {}
        }
    }

    fn start_session(&mut self, session_id: u64, start: u64, src: SocketAddr) {
        if let Some(old) = self.session {
            self.left_sessions.rotate_right(1);
            self.left_sessions[0] = old;
        }
        self.session = Some(session_id);
        self.sender = Some(src);
        self.expected = start;
        self.highest = start;
        self.gone_until = start;
        self.status_position = start;
        self.held.fill(NONE);
        self.cursor = None;
        self.reasm_active = false;
        self.nak_timer = 0;
        self.nak_due = false;
        self.nak_copy_due = false;
        self.nak_retry = self.cfg.nak_retry_min_ns;
        self.status_due = true;
        self.push_control(Control::NewSession(session_id, start));
    }

    fn window_end(&self) -> u64 {
        self.expected + self.cfg.buffer_datagrams as u64
    }

    fn on_data(&mut self, now: Nanos, d: wire::Data<'_>, bytes: &[u8]) {
        let seq = d.seq;
        let i = self.idx(seq);
        if seq < self.expected || self.held[i] == seq {
            self.stats.duplicates += 1;
            return;
        }
        if seq >= self.window_end() {
            self.stats.overflow += 1;
            self.learn_highest(now, seq + 1);
            return;
        }
        let len = bytes.len();
        if len > self.cfg.mtu {
            self.stats.dropped += 1; // larger than our MTU
            return;
        }
        let start = if self.tail + len > self.slots.len() {
            0
        } else {
            self.tail
        };
        self.slots[start..start + len].copy_from_slice(bytes);
        self.tail = start + len;
        self.offsets[i] = start;
        self.lens[i] = len as u32;
        self.held[i] = seq;
        self.stats.data_received += 1;
        if d.flags & wire::DATA_REPAIR != 0 && seq < self.highest {
            self.stats.repairs_received += 1;
        }
        self.learn_highest(now, seq + 1);
    }

    /// `next` datagrams exist: schedule a NAK if that opens a gap.
    ///
    /// A newly opened gap gets its first NAK after the random NAK delay even
    /// when the timer is already set further out (a retry of an older gap,
    /// up to `nak_retry_max_ns` away, or a stale retry time left after that
    /// gap was repaired). Otherwise a loss soon after a repair would wait for
    /// the old retry: at 1 % loss that put the round trip's p99 at the retry
    /// interval.
    fn learn_highest(&mut self, now: Nanos, next: u64) {
        let before = self.highest;
        if next > self.highest {
            self.highest = next;
        }
        if self.nak_due {
            return;
        }
        let opened = next > before && self.missing_in(before, next);
        if opened || (self.nak_timer == 0 && self.missing_exists()) {
            let due = (now + self.nak_delay()).max(1);
            if self.nak_timer == 0 || due < self.nak_timer {
                self.nak_timer = due;
            }
        }
    }

    /// Whether a datagram in `from..to` is missing (and not given up on).
    /// In-order arrival asks about one held datagram: O(1).
    fn missing_in(&self, from: u64, to: u64) -> bool {
        let from = from.max(self.expected).max(self.gone_until);
        let to = to.min(self.window_end());
        (from..to).any(|s| self.held[self.idx(s)] != s)
    }

    fn nak_delay(&mut self) -> Nanos {
        let spread = self
            .cfg
            .nak_delay_max_ns
            .saturating_sub(self.cfg.nak_delay_min_ns) as f64;
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let lambda = self.cfg.nak_delay_lambda;
        let fraction = if lambda > 0.0 {
            (u * lambda.exp_m1()).ln_1p() / lambda
        } else {
            u
        };
        self.cfg.nak_delay_min_ns + (spread * fraction) as Nanos
    }

    fn missing_exists(&self) -> bool {
        self.missing_in(self.expected, self.highest)
    }

    /// Runs due timers (NAK, STATUS, publisher liveness). A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Nanos) {
        if self.nak_timer != 0 && now >= self.nak_timer {
            self.nak_timer = 0;
            self.nak_due = true;
        }
        if self.session.is_some() && now >= self.status_timer {
            self.status_due = true;
        }
        if self.session.is_some()
            && !self.gone_reported
            && now.saturating_sub(self.last_heard) >= self.cfg.publisher_timeout_ns
        {
            self.gone_reported = true;
            self.push_control(Control::PublisherGone);
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.session?;
        let mut t = self.status_timer.max(1);
        if self.nak_timer != 0 {
            t = t.min(self.nak_timer);
        }
        if !self.gone_reported {
            t = t.min(self.last_heard + self.cfg.publisher_timeout_ns);
        }
        Some(t)
    }

    /// Writes the next datagram to send: a NAK, twice (multicast, so other receivers
    /// hear it and hold back theirs, then unicast to the sender's address, since a
    /// sender need not be a member of its own group), or a STATUS (unicast to the
    /// sender), sent every `status_interval_ns` and whenever delivery has moved a
    /// quarter of the window since the last one, so flow control never waits a
    /// whole interval for room.
    pub fn poll_transmit(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
        if self.nak_copy_due {
            self.nak_copy_due = false;
            if let Some(sender) = self.sender {
                let nak = wire::Nak::new(self.cfg.receiver_id, &self.ranges);
                let len = Frame::Nak(nak).emit(self.header(), buf).ok()?;
                return Some(Transmit {
                    len,
                    dest: Destination::Unicast(sender),
                });
            }
        }
        if self.nak_due {
            self.nak_due = false;
            if let Some(t) = self.build_nak(now, buf) {
                return Some(t);
            }
        }
        if self.status_due {
            self.status_due = false;
            self.status_timer = now + self.cfg.status_interval_ns;
            self.status_position = self.expected;
            let status = Status {
                receiver_id: self.cfg.receiver_id,
                position: self.expected,
                window: self.cfg.buffer_datagrams as u64,
            };
            let len = Frame::Status(status).emit(self.header(), buf).ok()?;
            let dest = self.sender.map_or(Destination::Group, Destination::Unicast);
            return Some(Transmit { len, dest });
        }
        None
    }

    fn build_nak(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
        self.ranges.clear();
        let end = self.highest.min(self.window_end());
        let mut next_try = Nanos::MAX;
        let mut seq = self.expected.max(self.gone_until);
        while seq < end && self.ranges.len() < wire::MAX_NAK_RANGES {
            let i = self.idx(seq);
            if self.held[i] != seq {
                if self.requested_until[i] <= now {
                    self.requested_until[i] = now + self.nak_retry;
                    match self.ranges.last_mut() {
                        Some(r) if r.to == seq => r.to = seq + 1,
                        _ => self.ranges.push(SeqRange {
                            from: seq,
                            to: seq + 1,
                        }),
                    }
                } else {
                    next_try = next_try.min(self.requested_until[i]);
                }
            }
            seq += 1;
        }
        let sent = !self.ranges.is_empty();
        if sent {
            self.nak_retry = (self.nak_retry * 2).min(self.cfg.nak_retry_max_ns);
            next_try = next_try.min(now + self.nak_retry);
        }
        if self.missing_exists() {
            self.nak_timer = next_try.max(now + 1);
        }
        if !sent {
            return None;
        }
        self.stats.naks_sent += 1;
        self.nak_copy_due = true;
        let nak = wire::Nak::new(self.cfg.receiver_id, &self.ranges);
        let len = Frame::Nak(nak).emit(self.header(), buf).ok()?;
        Some(Transmit {
            len,
            dest: Destination::Group,
        })
    }

    /// The next event: control events first, then messages in order, with loss
    /// reports where datagrams will never come. A message is borrowed from the
    /// receiver's buffers until the next call. Never allocates.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if let Some(c) = self.control.pop_front() {
            return Some(match c {
                Control::NewSession(session_id, start_seq) => Event::NewSession {
                    session_id,
                    start_seq,
                },
                Control::PublisherGone => Event::PublisherGone,
            });
        }
        loop {
            let i = self.idx(self.expected);
            if self.held[i] != self.expected {
                if self.expected >= self.gone_until {
                    return None;
                }
                // A run of datagrams the sender no longer holds. Only the reorder
                // window can hold anything, so the scan stops there: a LOSS or
                // heartbeat naming a far-away sequence number costs one step.
                let from = self.expected;
                let window_end = self.window_end().min(self.gone_until);
                while self.expected < window_end
                    && self.held[self.idx(self.expected)] != self.expected
                {
                    self.expected += 1;
                }
                if self.expected == window_end {
                    self.expected = self.gone_until;
                }
                self.reasm_active = false;
                self.cursor = None;
                self.advanced();
                let range = SeqRange {
                    from,
                    to: self.expected,
                };
                self.stats.lost += range.len();
                return Some(Event::Loss {
                    range,
                    reason: LossReason::SenderEvicted,
                });
            }
            let base = self.offsets[i];
            let len = self.lens[i] as usize;
            let (off, left) = match self.cursor {
                Some(c) => c,
                None => match Frame::parse(&self.slots[base..base + len]) {
                    Ok((_, Frame::Data(d))) => (wire::DATA_HEADER_LEN, d.len() as u16),
                    _ => (len, 0),
                },
            };
            if left == 0 {
                self.held[i] = NONE;
                self.expected += 1;
                self.cursor = None;
                self.advanced();
                continue;
            }
            // The entry at `off` was checked when the datagram was parsed on arrival.
            let entry = &self.slots[base + off..base + len];
            let elen = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
            let flags = entry[4];
            let (p_from, p_to) = (
                base + off + wire::ENTRY_HEADER_LEN,
                base + off + wire::ENTRY_HEADER_LEN + elen,
            );
            self.cursor = Some((off + wire::ENTRY_HEADER_LEN + elen, left - 1));
            let begin = flags & wire::ENTRY_BEGIN != 0;
            let end = flags & wire::ENTRY_END != 0;
            if begin && end {
                self.reasm_active = false;
                if !holds_stamp(p_to - p_from, flags) {
                    self.stats.dropped += 1;
                    continue;
                }
                self.stats.messages += 1;
                return Some(message_event(&self.slots[p_from..p_to], flags));
            }
            if begin {
                self.reasm_len = 0;
                self.reasm_active = true;
                self.reasm_flags = flags;
            }
            if !self.reasm_active {
                continue; // a fragment of a message begun before we joined or before a loss
            }
            if self.reasm_len + elen > self.reasm.len() {
                self.reasm_active = false; // larger than max_message: dropped
                self.stats.dropped += 1;
                continue;
            }
            self.reasm[self.reasm_len..self.reasm_len + elen]
                .copy_from_slice(&self.slots[p_from..p_to]);
            self.reasm_len += elen;
            if end {
                self.reasm_active = false;
                if holds_stamp(self.reasm_len, self.reasm_flags) {
                    self.stats.messages += 1;
                    return Some(message_event(
                        &self.reasm[..self.reasm_len],
                        self.reasm_flags,
                    ));
                }
                self.stats.dropped += 1;
            }
        }
    }

    fn advanced(&mut self) {
        self.nak_retry = self.cfg.nak_retry_min_ns;
        if self.expected.saturating_sub(self.status_position)
            >= self.cfg.buffer_datagrams as u64 / 4
        {
            self.status_due = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sender, SenderConfig};

    /// Full-size datagrams arrive out of order inside the window: whole
    /// windows reversed, random shuffles, and the worst case for the byte ring,
    /// where one datagram waits while 2N - 3 others are stored after it. The
    /// ring never overwrites a datagram that waits, and every message comes out
    /// intact and in order.
    #[test]
    fn the_packed_buffer_keeps_every_waiting_datagram_intact() {
        let n = 8;
        let mut scfg = SenderConfig::new(3, 1);
        scfg.mtu = 200;
        scfg.flow = crate::FlowControl::None;
        scfg.buffer_datagrams = 64;
        let mut tx = Sender::new(scfg).unwrap();
        let mut rcfg = ReceiverConfig::new(3, 2);
        rcfg.mtu = 200;
        rcfg.buffer_datagrams = n;
        let mut rx = Receiver::new(rcfg).unwrap();
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let message = |k: u64| -> Vec<u8> {
            let len = 100 + (k % 60) as usize; // one message per datagram, near full
            (0..len).map(|i| (k as usize * 7 + i) as u8).collect()
        };
        let mut rng = SplitMix::new(4);
        let (mut next_msg, mut delivered) = (0u64, 0u64);
        let mut buf = [0u8; 256];
        let now = 1;
        // The SETUP first, so the receiver starts at the stream's first datagram.
        while let Some(t) = tx.poll_transmit(now, &mut buf) {
            rx.handle_datagram(now, src, &buf[..t.len]);
        }
        // Arrival orders of 2N datagrams, as indices into the chunk.
        let reversed: Vec<usize> = (0..n).rev().chain((n..2 * n).rev()).collect();
        // N-1 first; N-2 held back until N..2N-3 have arrived behind it.
        let worst: Vec<usize> = [n - 1]
            .into_iter()
            .chain(1..n - 2)
            .chain([0])
            .chain(n..2 * n - 2)
            .chain([n - 2, 2 * n - 2, 2 * n - 1])
            .collect();
        for chunk in 0..300u64 {
            let mut datagrams = Vec::new();
            for k in 0..2 * n as u64 {
                tx.offer(now, &message(chunk * 2 * n as u64 + k)).unwrap();
                while let Some(t) = tx.poll_transmit(now, &mut buf) {
                    datagrams.push(buf[..t.len].to_vec());
                }
            }
            let order: Vec<usize> = match chunk % 3 {
                0 => reversed.clone(),
                1 => worst.clone(),
                _ => {
                    let mut o: Vec<usize> = (0..2 * n).collect();
                    for half in o.chunks_mut(n) {
                        for i in (1..half.len()).rev() {
                            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                            half.swap(i, j);
                        }
                    }
                    o
                }
            };
            for d in order.iter().map(|&i| &datagrams[i]) {
                rx.handle_datagram(now, src, d);
                while let Some(e) = rx.poll_event() {
                    match e {
                        Event::Message(m) => {
                            assert_eq!(m, &message(next_msg)[..], "message {next_msg}");
                            next_msg += 1;
                            delivered += 1;
                        }
                        Event::NewSession { .. } => {}
                        other => panic!("{other:?} at message {next_msg}"),
                    }
                }
            }
        }
        assert_eq!(delivered, 300 * 2 * n as u64);
    }

    /// A gap that opens while the NAK timer is set for a retry of an earlier
    /// gap (here a stale retry: the earlier gap was repaired) is NAKed after
    /// the NAK delay, not at the retry time.
    #[test]
    fn a_new_gap_is_naked_after_the_nak_delay_even_with_a_retry_pending() {
        let mut scfg = SenderConfig::new(3, 1);
        scfg.flow = crate::FlowControl::None;
        let mut tx = Sender::new(scfg).unwrap();
        let rcfg = ReceiverConfig::new(3, 2);
        let (delay_max, retry) = (rcfg.nak_delay_max_ns, rcfg.nak_retry_min_ns);
        let mut rx = Receiver::new(rcfg).unwrap();
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut buf = [0u8; 2048];
        // One datagram per message: each offer is flushed before the next.
        let mut datagrams = Vec::new();
        let mut now = 1_000;
        while let Some(t) = tx.poll_transmit(now, &mut buf) {
            rx.handle_datagram(now, src, &buf[..t.len]); // SETUP
        }
        for k in 0..6u64 {
            tx.offer(now, &k.to_le_bytes()).unwrap();
            while let Some(t) = tx.poll_transmit(now, &mut buf) {
                datagrams.push(buf[..t.len].to_vec());
            }
            now += 10_000;
        }
        let mut naks = |rx: &mut Receiver, now: Nanos| {
            rx.handle_timeout(now);
            let mut n = 0;
            while let Some(t) = rx.poll_transmit(now, &mut buf) {
                n += Frame::parse(&buf[..t.len]).is_ok_and(|(_, f)| matches!(f, Frame::Nak(_)))
                    as usize;
            }
            n
        };
        // 0, then 2: 1 is missing; its NAK goes within the NAK delay.
        rx.handle_datagram(now, src, &datagrams[0]);
        rx.handle_datagram(now, src, &datagrams[2]);
        let due = rx.nak_timer;
        assert!(
            due > 0 && due <= now + delay_max,
            "first NAK at +{}",
            due - now
        );
        now = due;
        assert!(naks(&mut rx, now) > 0, "the NAK for 1");
        // The retry timer is now set (the NAK timer field: `poll_timeout` is
        // the earliest of every timer); the repair fills the gap.
        assert!(rx.nak_timer >= now + retry);
        rx.handle_datagram(now + 20_000, src, &datagrams[1]);
        now += 50_000;
        // 3, then 5: 4 is missing. Its NAK is due within the NAK delay, not
        // at the earlier gap's retry time.
        rx.handle_datagram(now, src, &datagrams[3]);
        rx.handle_datagram(now, src, &datagrams[5]);
        let due = rx.nak_timer;
        assert!(
            due > 0 && due <= now + delay_max,
            "second gap's NAK at +{} ns, retry interval {retry}",
            due - now
        );
        assert!(naks(&mut rx, due) > 0, "the NAK for 4");
    }

    /// A stamped message comes out with its stamp apart, whole or fragmented;
    /// a peer's STAMPED entry too short to hold a stamp is dropped and
    /// counted, and the stream goes on.
    #[test]
    fn stamps_come_apart_from_messages_and_a_short_stamped_entry_is_dropped() {
        let mut scfg = SenderConfig::new(3, 1);
        scfg.mtu = 200;
        scfg.flow = crate::FlowControl::None;
        let mut tx = Sender::new(scfg).unwrap();
        let mut rcfg = ReceiverConfig::new(3, 2);
        rcfg.mtu = 200;
        let mut rx = Receiver::new(rcfg).unwrap();
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut buf = [0u8; 256];
        let long: Vec<u8> = (0..500).map(|i| i as u8).collect(); // three fragments
        assert_eq!(
            tx.offer_stamped(1, &[1, 2, 3]),
            Err(crate::OfferError::MissingStamp)
        );
        for m in [&b"short"[..], &long] {
            tx.offer_stamped(1, &[&42u64.to_le_bytes()[..], m].concat())
                .unwrap();
        }
        tx.offer(1, b"plain").unwrap();
        let mut datagrams = Vec::new();
        while let Some(t) = tx.poll_transmit(1, &mut buf) {
            datagrams.push(buf[..t.len].to_vec());
        }
        let mut got = Vec::new();
        for d in &datagrams {
            rx.handle_datagram(1, src, d);
            while let Some(e) = rx.poll_event() {
                match e {
                    Event::StampedMessage { sent_ns, message } => {
                        got.push((Some(sent_ns), message.to_vec()))
                    }
                    Event::Message(m) => got.push((None, m.to_vec())),
                    _ => {}
                }
            }
        }
        assert_eq!(
            got,
            [
                (Some(42), b"short".to_vec()),
                (Some(42), long.clone()),
                (None, b"plain".to_vec())
            ]
        );
        // The next datagram, forged: a STAMPED entry of 3 bytes.
        let mut forged = [0u8; 64];
        let header = Header {
            stream_id: 3,
            session_id: tx.session_id(),
        };
        let mut w = wire::DataWriter::new(&mut forged, header, tx.next_seq(), 0, 0).unwrap();
        w.push(
            &[7; 3],
            wire::ENTRY_BEGIN | wire::ENTRY_END | wire::ENTRY_STAMPED,
        )
        .unwrap();
        let n = w.finish().unwrap();
        let dropped = rx.stats().dropped;
        rx.handle_datagram(1, src, &forged[..n]);
        assert_eq!(rx.poll_event(), None);
        assert_eq!(rx.stats().dropped, dropped + 1);
    }
}
