//! The publishing side of a stream: batching, retransmission, heartbeats, flow
//! control.
//!
//! ## State
//! - A **retransmit buffer** that always holds the newest `buffer_datagrams`
//!   datagrams, allocated once. Datagrams are packed back to back in a byte ring
//!   of `(buffer_datagrams + 2) × mtu` bytes (a datagram never wraps: it starts
//!   again at 0 when less than an MTU is left), and `seq % buffer_datagrams`
//!   indexes its offset and length. Small datagrams thus share cache lines and
//!   pages instead of each taking an MTU-sized slot. The ring is large enough
//!   that the newest datagram never reaches the oldest one retained: those N + 1
//!   datagrams take at most `(N + 1) × mtu` bytes, plus less than one MTU
//!   skipped at the wrap. `oldest_seq()` is the oldest one still held; a NAK
//!   for anything older is answered with LOSS.
//! - The **open datagram**: messages offered between two `poll_transmit` calls are
//!   batched into it; `poll_transmit` seals and sends it. Messages larger than a
//!   datagram are fragmented over consecutive datagrams (BEGIN ... END).
//! - **Repairs**: ranges NAKed and not repaired within the last `nak_linger_ns`
//!   (duplicate NAKs in that window are coalesced), retransmitted with the REPAIR
//!   flag to the group.
//! - **Heartbeats**: after the last data, at `heartbeat_min_ns`, then doubling up to
//!   `heartbeat_max_ns`, so a lost last datagram is noticed within about a round
//!   trip, not at an idle heartbeat (Aeron's fixed 100 ms makes p99 at 1 % loss
//!   about 100 ms).
//! - **Receivers** known from their STATUS: position and window feed flow control
//!   (`Min`, `Max`, `None`); one silent for `receiver_timeout_ns` is dropped from
//!   the computation and counted. Before the first STATUS, `Min` and `Max` allow
//!   `initial_window` datagrams; once every receiver has timed out, nothing limits
//!   the stream (its data reaches nobody).
//!
//! Nothing allocates after [`Sender::new`].

use std::collections::VecDeque;

use crate::wire::{self, DataWriter, Frame, Header, Heartbeat, Loss, SeqRange, Setup};
use crate::{check, check_sizes, ConfigError, Destination, Nanos, SeqIndex, SplitMix, Transmit};

/// How the sender limits itself by its receivers' progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    /// Never run more than the slowest live receiver's window ahead.
    Min,
    /// Follow the fastest live receiver; slower ones may lose data.
    Max,
    /// Ignore receivers; only the retransmit buffer bounds what can be repaired.
    None,
}

/// A sender's configuration. Every field has a default; times are nanoseconds.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// The stream.
    pub stream_id: u32,
    /// Seeds the session id and every random choice.
    pub seed: u64,
    /// Largest datagram, bytes of UDP payload. Default 1408.
    pub mtu: usize,
    /// Retransmit buffer, in datagrams. Default 4096.
    pub buffer_datagrams: usize,
    /// Largest message; at most half the buffer's payload. Default 64 KiB.
    pub max_message: usize,
    /// First sequence number. Default 0.
    pub initial_seq: u64,
    /// First heartbeat after data. Default 50 µs.
    pub heartbeat_min_ns: Nanos,
    /// Heartbeat interval when idle. Default 100 ms.
    pub heartbeat_max_ns: Nanos,
    /// NAKs for a datagram repaired within this window are ignored. Default 200 µs.
    pub nak_linger_ns: Nanos,
    /// Flow control strategy. Default `Min`.
    pub flow: FlowControl,
    /// With `Min` or `Max`: datagrams that may be sent before the first STATUS
    /// arrives, so a publisher's opening burst cannot overrun receivers that have
    /// not yet said how much room they have. Default 1024 (a receiver's default
    /// window).
    pub initial_window: u64,
    /// A receiver silent this long leaves flow control. Default 1 s.
    pub receiver_timeout_ns: Nanos,
    /// Receivers tracked at most. Default 256.
    pub max_receivers: usize,
    /// Authenticate every datagram with this key (see [`crate::auth`]): each
    /// carries a [`TAG_LEN`](crate::auth::TAG_LEN)-byte tag within `mtu`, and
    /// NAK and STATUS without a valid tag are dropped and counted. Default none.
    pub auth: Option<crate::auth::AuthKey>,
}

impl SenderConfig {
    /// Defaults for `stream_id`, with `seed` for the session id.
    pub fn new(stream_id: u32, seed: u64) -> Self {
        Self {
            stream_id,
            seed,
            mtu: 1408,
            buffer_datagrams: 4096,
            max_message: 64 * 1024,
            initial_seq: 0,
            heartbeat_min_ns: 50_000,
            heartbeat_max_ns: 100_000_000,
            nak_linger_ns: 200_000,
            flow: FlowControl::Min,
            initial_window: 1024,
            receiver_timeout_ns: 1_000_000_000,
            max_receivers: 256,
            auth: None,
        }
    }
}

/// Why an offer was refused. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferError {
    /// Flow control or unsent data fills the window: try again after `poll_transmit`
    /// and receivers' STATUS.
    BackPressured,
    /// Larger than `max_message`.
    TooLarge,
    /// [`Sender::offer_stamped`] got fewer than [`wire::STAMP_LEN`] bytes.
    MissingStamp,
}

/// Something the sender reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderEvent {
    /// A receiver sent its first STATUS.
    ReceiverJoined {
        /// Its id.
        receiver_id: u64,
    },
    /// A receiver fell silent and left flow control.
    ReceiverTimedOut {
        /// Its id.
        receiver_id: u64,
    },
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// New DATA datagrams sent.
    pub data_sent: u64,
    /// Repairs sent.
    pub repairs_sent: u64,
    /// NAKs received (any receiver).
    pub naks_received: u64,
    /// NAKed datagrams ignored because they were repaired within the linger window.
    pub naks_coalesced: u64,
    /// LOSS notices sent.
    pub losses_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Receivers timed out.
    pub receivers_timed_out: u64,
    /// Datagrams dropped as malformed, foreign or of another stream/session,
    /// or (with a key) unauthenticated.
    pub dropped: u64,
    /// Of `dropped`: datagrams without a valid authentication tag.
    pub unauthenticated: u64,
    /// STATUS claiming a position beyond what was sent (clamped to it) and
    /// NAK ranges before the session's start (clipped).
    pub implausible: u64,
    /// Offers refused by back-pressure.
    pub back_pressured: u64,
}

#[derive(Clone, Copy, Debug)]
struct ReceiverInfo {
    id: u64,
    position: u64,
    window: u64,
    last_seen: Nanos,
}

/// A small fixed-capacity queue of disjoint ranges, merged on insert.
#[derive(Debug)]
pub(crate) struct RangeQueue {
    ranges: VecDeque<SeqRange>,
    cap: usize,
}

impl RangeQueue {
    pub(crate) fn with_capacity(cap: usize) -> Self {
        Self {
            ranges: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Adds `r`, merging with an adjacent or overlapping last range; when full,
    /// widens the last range instead (never allocates).
    pub(crate) fn push(&mut self, r: SeqRange) {
        if r.is_empty() {
            return;
        }
        let full = self.ranges.len() == self.cap;
        if let Some(last) = self.ranges.back_mut() {
            if (r.from <= last.to && r.to >= last.from) || full {
                last.from = last.from.min(r.from);
                last.to = last.to.max(r.to);
                return;
            }
        }
        self.ranges.push_back(r);
    }

    fn pop_one(&mut self) -> Option<u64> {
        let front = self.ranges.front_mut()?;
        let seq = front.from;
        front.from += 1;
        if front.is_empty() {
            self.ranges.pop_front();
        }
        Some(seq)
    }

    fn pop_range(&mut self) -> Option<SeqRange> {
        self.ranges.pop_front()
    }
}

/// The sender state machine. See the module doc.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    header: Header,
    /// The byte ring datagrams are packed into.
    slots: Vec<u8>,
    /// Per `seq % buffer_datagrams`: where the datagram starts in `slots`.
    offsets: Vec<usize>,
    lens: Vec<u32>,
    /// `seq % buffer_datagrams`.
    seq_index: SeqIndex,
    last_repair: Vec<Nanos>,
    next_seq: u64,
    /// The open datagram: (seq, len, entries).
    open: Option<(u64, usize, u16)>,
    /// First datagram not yet sent.
    unsent: u64,
    repairs: RangeQueue,
    losses: RangeQueue,
    setup_pending: bool,
    hb_interval: Nanos,
    next_hb: Nanos,
    hb_due: bool,
    receivers: Vec<ReceiverInfo>,
    flow_limit: u64,
    events: VecDeque<SenderEvent>,
    stats: SenderStats,
}

impl Sender {
    /// A sender for `cfg.stream_id` with a session id drawn from `cfg.seed`.
    /// Allocates the retransmit buffer (`buffer_datagrams × mtu`) and every queue;
    /// a value out of range is a [`ConfigError`] naming it.
    pub fn new(cfg: SenderConfig) -> Result<Self, ConfigError> {
        let mut cfg = cfg;
        if cfg.auth.is_some() {
            // Frames leave room for the tag, so datagrams stay within the MTU.
            cfg.mtu = cfg.mtu.saturating_sub(crate::auth::TAG_LEN);
        }
        check_sizes(cfg.mtu, cfg.buffer_datagrams, cfg.max_message)?;
        check(
            cfg.heartbeat_min_ns > 0 && cfg.heartbeat_min_ns <= cfg.heartbeat_max_ns,
            || {
                format!(
                    "heartbeat_min_ns {} / heartbeat_max_ns {}: expected 0 < min <= max",
                    cfg.heartbeat_min_ns, cfg.heartbeat_max_ns
                )
            },
        )?;
        check(cfg.max_receivers > 0, || {
            "max_receivers 0: expected at least 1".into()
        })?;
        let payload = cfg.mtu - wire::DATA_HEADER_LEN - wire::ENTRY_HEADER_LEN;
        cfg.max_message = cfg.max_message.min(payload * (cfg.buffer_datagrams / 2));
        let session_id = SplitMix::new(cfg.seed).next_u64() | 1;
        let n = cfg.buffer_datagrams;
        Ok(Self {
            seq_index: SeqIndex::new(n),
            header: Header {
                stream_id: cfg.stream_id,
                session_id,
            },
            slots: vec![0; (n + 2) * cfg.mtu],
            offsets: vec![0; n],
            lens: vec![0; n],
            last_repair: vec![0; n],
            next_seq: cfg.initial_seq,
            open: None,
            unsent: cfg.initial_seq,
            repairs: RangeQueue::with_capacity(64),
            losses: RangeQueue::with_capacity(16),
            setup_pending: true,
            hb_interval: cfg.heartbeat_min_ns,
            next_hb: 0,
            hb_due: false,
            receivers: Vec::with_capacity(cfg.max_receivers),
            flow_limit: match cfg.flow {
                FlowControl::None => u64::MAX,
                _ => cfg.initial_seq.saturating_add(cfg.initial_window),
            },
            events: VecDeque::with_capacity(2 * cfg.max_receivers + 8),
            stats: SenderStats::default(),
            cfg,
        })
    }

    /// This incarnation's session id.
    pub fn session_id(&self) -> u64 {
        self.header.session_id
    }

    /// Counters.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// The oldest sequence number still in the retransmit buffer.
    pub fn oldest_seq(&self) -> u64 {
        self.next_seq
            .saturating_sub(self.cfg.buffer_datagrams as u64)
            .max(self.cfg.initial_seq)
    }

    /// The sequence number the next new datagram will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Receivers currently in flow control.
    pub fn receivers(&self) -> usize {
        self.receivers.len()
    }

    /// New datagrams it could take now: the least of what flow control
    /// allows past the newest datagram and what the retransmit buffer has
    /// room for without wrapping unsent data; 0 means an offer that needs
    /// a new datagram is back-pressured.
    pub fn window(&self) -> u64 {
        let buffer = (self.cfg.buffer_datagrams as u64).saturating_sub(self.next_seq - self.unsent);
        self.flow_limit.saturating_sub(self.next_seq).min(buffer)
    }

    /// Datagrams the retransmit buffer holds (its configured size).
    pub fn buffer_datagrams(&self) -> usize {
        self.cfg.buffer_datagrams
    }

    /// Datagrams queued (or being batched) but not yet sent once.
    pub fn unsent(&self) -> u64 {
        self.next_seq - self.unsent
    }

    /// Datagrams sent that some receiver in flow control has not yet
    /// reported delivered (by STATUS); 0 with no receivers.
    pub fn unacknowledged(&self) -> u64 {
        self.receivers
            .iter()
            .map(|r| self.unsent.saturating_sub(r.position))
            .max()
            .unwrap_or(0)
    }

    /// Datagram `seq`'s room: an MTU from where it starts.
    fn slot(&mut self, seq: u64) -> &mut [u8] {
        let off = self.offsets[self.index(seq)];
        &mut self.slots[off..off + self.cfg.mtu]
    }

    fn index(&self, seq: u64) -> usize {
        self.seq_index.of(seq)
    }

    /// Places new datagram `seq` right after the one before it (whose length is
    /// final: only the newest datagram grows), or at 0 if less than an MTU is
    /// left. See the module doc for why it never overlaps a retained datagram.
    fn place(&mut self, seq: u64) {
        let start = if seq == self.cfg.initial_seq {
            0
        } else {
            let prev = self.index(seq - 1);
            self.offsets[prev] + self.lens[prev] as usize
        };
        let start = if start + self.cfg.mtu > self.slots.len() {
            0
        } else {
            start
        };
        let i = self.index(seq);
        self.offsets[i] = start;
        self.lens[i] = 0;
    }

    /// Queues one message; it is sent by the next `poll_transmit` calls, batched
    /// with the messages offered before them. Never allocates.
    pub fn offer(&mut self, msg: &[u8]) -> Result<(), OfferError> {
        self.queue(msg, 0)
    }

    /// Queues one message that starts with its send time: `stamped` is an
    /// 8-byte little-endian timestamp (ns) followed by the message, the whole
    /// no longer than `max_message`. Receivers hand it out as
    /// [`Event::StampedMessage`](crate::receiver::Event::StampedMessage), the
    /// time apart from the message, for one-way latency. Costs what
    /// [`offer`](Self::offer) costs; never allocates.
    pub fn offer_stamped(&mut self, stamped: &[u8]) -> Result<(), OfferError> {
        if stamped.len() < wire::STAMP_LEN {
            return Err(OfferError::MissingStamp);
        }
        self.queue(stamped, wire::ENTRY_STAMPED)
    }

    /// Puts `msg` into the open datagram or new ones; `stamped` is 0 or
    /// [`wire::ENTRY_STAMPED`], set on the first fragment.
    fn queue(&mut self, msg: &[u8], stamped: u8) -> Result<(), OfferError> {
        if msg.len() > self.cfg.max_message {
            return Err(OfferError::TooLarge);
        }
        let header = self.header;
        if let Some((seq, len, count)) = self.open {
            let mut w = DataWriter::resume(self.slot(seq), len, count);
            if w.push(msg, wire::ENTRY_BEGIN | wire::ENTRY_END | stamped)
                .is_ok()
            {
                let (len, count) = (w.len(), w.count());
                self.open = Some((seq, len, count));
                let i = self.index(seq);
                self.lens[i] = len as u32;
                return Ok(());
            }
        }
        let per = self.cfg.mtu - wire::DATA_HEADER_LEN - wire::ENTRY_HEADER_LEN;
        let needed = msg.len().div_ceil(per).max(1) as u64;
        let end = self.next_seq + needed;
        // The unsent backlog may not wrap the buffer, nor run past flow control.
        if end - self.unsent > self.cfg.buffer_datagrams as u64 || end > self.flow_limit {
            self.stats.back_pressured += 1;
            return Err(OfferError::BackPressured);
        }
        let mut chunks = msg.chunks(per).peekable();
        let mut first = true;
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let flags = if first {
                wire::ENTRY_BEGIN | stamped
            } else {
                0
            } | if last { wire::ENTRY_END } else { 0 };
            let seq = self.next_seq;
            let offset = (seq - self.cfg.initial_seq).min(u32::MAX as u64) as u32;
            self.place(seq);
            let mut w = DataWriter::new(self.slot(seq), header, seq, offset, 0)
                .expect("mtu checked at construction");
            w.push(chunk, flags)
                .expect("a fragment fits an empty datagram");
            let len = w.len();
            let i = self.index(seq);
            self.lens[i] = len as u32;
            self.open = Some((seq, len, 1));
            self.next_seq += 1;
            first = false;
            if last {
                return Ok(());
            }
        }
    }

    /// Processes a datagram from the network (NAK or STATUS; anything else from a
    /// receiver is ignored, anything malformed is dropped and counted). Its
    /// source is not needed: a sender answers to the group.
    pub fn handle_datagram(&mut self, now: Nanos, bytes: &[u8]) {
        let parsed = match &self.cfg.auth {
            None => Frame::parse(bytes),
            Some(key) => match key.open(bytes) {
                Some(frame) => Frame::parse_authenticated(frame),
                None => {
                    self.stats.dropped += 1;
                    self.stats.unauthenticated += 1;
                    return;
                }
            },
        };
        let Ok((h, frame)) = parsed else {
            self.stats.dropped += 1;
            return;
        };
        if h != self.header {
            self.stats.dropped += 1;
            return;
        }
        match frame {
            Frame::Nak(nak) => {
                self.stats.naks_received += 1;
                let oldest = self.oldest_seq();
                for r in nak.ranges() {
                    if r.from < self.cfg.initial_seq {
                        self.stats.implausible += 1;
                    }
                    // Gone for good: answer with LOSS (never before the start).
                    self.losses.push(SeqRange {
                        from: r.from.max(self.cfg.initial_seq),
                        to: r.to.min(oldest),
                    });
                    // Still held and already sent: repair, unless repaired just now.
                    let (from, to) = (r.from.max(oldest), r.to.min(self.unsent));
                    let mut run: Option<SeqRange> = None;
                    for seq in from..to {
                        let i = self.index(seq);
                        if self.last_repair[i] != 0
                            && now.saturating_sub(self.last_repair[i]) < self.cfg.nak_linger_ns
                        {
                            self.stats.naks_coalesced += 1;
                            if let Some(r) = run.take() {
                                self.repairs.push(r);
                            }
                            continue;
                        }
                        self.last_repair[i] = now.max(1);
                        match &mut run {
                            Some(r) => r.to = seq + 1,
                            None => {
                                run = Some(SeqRange {
                                    from: seq,
                                    to: seq + 1,
                                })
                            }
                        }
                    }
                    if let Some(r) = run {
                        self.repairs.push(r);
                    }
                }
            }
            Frame::Status(s) => {
                // A receiver cannot have more than was sent, nor more room
                // than a reorder buffer can have.
                if s.position > self.unsent {
                    self.stats.implausible += 1;
                }
                let s = wire::Status {
                    position: s.position.min(self.unsent),
                    window: s.window.min(1 << 24),
                    ..s
                };
                let room = self.receivers.len() < self.cfg.max_receivers;
                match self.receivers.iter_mut().find(|r| r.id == s.receiver_id) {
                    Some(r) => {
                        r.position = r.position.max(s.position);
                        r.window = s.window;
                        r.last_seen = now;
                    }
                    None if room => {
                        self.receivers.push(ReceiverInfo {
                            id: s.receiver_id,
                            position: s.position,
                            window: s.window,
                            last_seen: now,
                        });
                        self.push_event(SenderEvent::ReceiverJoined {
                            receiver_id: s.receiver_id,
                        });
                    }
                    None => self.stats.dropped += 1,
                }
                self.recompute_flow();
            }
            // Our own multicast looped back, or another sender: not for us.
            _ => {}
        }
    }

    fn push_event(&mut self, e: SenderEvent) {
        if self.events.len() == self.events.capacity() {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn recompute_flow(&mut self) {
        let limits = self
            .receivers
            .iter()
            .map(|r| r.position.saturating_add(r.window));
        self.flow_limit = match self.cfg.flow {
            FlowControl::None => u64::MAX,
            FlowControl::Min => limits.min().unwrap_or(u64::MAX),
            FlowControl::Max => limits.max().unwrap_or(u64::MAX),
        };
    }

    /// Runs due timers: heartbeats and receiver timeouts. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Nanos) {
        if self.next_hb != 0 && now >= self.next_hb {
            self.hb_due = true;
        }
        let timeout = self.cfg.receiver_timeout_ns;
        let mut i = 0;
        while i < self.receivers.len() {
            if now.saturating_sub(self.receivers[i].last_seen) >= timeout {
                let gone = self.receivers.swap_remove(i);
                self.stats.receivers_timed_out += 1;
                self.push_event(SenderEvent::ReceiverTimedOut {
                    receiver_id: gone.id,
                });
                self.recompute_flow();
            } else {
                i += 1;
            }
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let hb = (self.next_hb != 0 && !self.hb_due).then_some(self.next_hb);
        let rx = self
            .receivers
            .iter()
            .map(|r| r.last_seen + self.cfg.receiver_timeout_ns)
            .min();
        match (hb, rx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// Writes the next datagram to send into `buf` (at least the MTU): SETUP first,
    /// then LOSS notices, repairs, new data (sealing the open batch), heartbeats.
    /// With a key, each is authenticated (and still within the MTU).
    pub fn poll_transmit(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
        let mut t = self.poll_frame(now, buf)?;
        if let Some(key) = &self.cfg.auth {
            t.len = key.seal(buf, t.len)?;
        }
        Some(t)
    }

    fn poll_frame(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
        let header = self.header;
        if self.setup_pending {
            self.setup_pending = false;
            // Heartbeats run from the start, so a receiver learns of an idle stream.
            self.next_hb = now + self.hb_interval;
            let setup = Setup {
                initial_seq: self.cfg.initial_seq,
                mtu: self.cfg.mtu as u16,
            };
            let len = Frame::Setup(setup).emit(header, buf).ok()?;
            return Some(Transmit {
                len,
                dest: Destination::Group,
            });
        }
        if let Some(range) = self.losses.pop_range() {
            self.stats.losses_sent += 1;
            let len = Frame::Loss(Loss { range }).emit(header, buf).ok()?;
            return Some(Transmit {
                len,
                dest: Destination::Group,
            });
        }
        while let Some(seq) = self.repairs.pop_one() {
            if seq < self.oldest_seq() {
                self.losses.push(SeqRange {
                    from: seq,
                    to: seq + 1,
                });
                continue;
            }
            if seq >= self.unsent {
                continue;
            }
            let len = self.copy_datagram(seq, buf)?;
            // Mark the copy as a repair (flags field of the DATA header).
            buf[wire::COMMON_LEN + 10] |= wire::DATA_REPAIR as u8;
            self.stats.repairs_sent += 1;
            return Some(Transmit {
                len,
                dest: Destination::Group,
            });
        }
        if self.unsent < self.next_seq {
            // Seal the open batch: later offers start a new datagram.
            self.open = None;
            let seq = self.unsent;
            let len = self.copy_datagram(seq, buf)?;
            self.unsent += 1;
            self.stats.data_sent += 1;
            self.hb_interval = self.cfg.heartbeat_min_ns;
            self.next_hb = now + self.hb_interval;
            self.hb_due = false;
            return Some(Transmit {
                len,
                dest: Destination::Group,
            });
        }
        if self.hb_due {
            self.hb_due = false;
            self.stats.heartbeats_sent += 1;
            let hb = Heartbeat {
                next_seq: self.unsent,
                oldest_seq: self.oldest_seq().min(self.unsent),
            };
            self.hb_interval = (self.hb_interval * 2).min(self.cfg.heartbeat_max_ns);
            self.next_hb = now + self.hb_interval;
            let len = Frame::Heartbeat(hb).emit(header, buf).ok()?;
            return Some(Transmit {
                len,
                dest: Destination::Group,
            });
        }
        None
    }

    fn copy_datagram(&mut self, seq: u64, buf: &mut [u8]) -> Option<usize> {
        let len = self.lens[self.index(seq)] as usize;
        let src = &self.slot(seq)[..len];
        let dst = buf.get_mut(..len)?;
        dst.copy_from_slice(src);
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams of every size, fragments included, packed into the byte ring
    /// over many wraps: every datagram the sender still holds reads back exactly
    /// as it was first sent.
    #[test]
    fn the_packed_buffer_keeps_every_retained_datagram_intact() {
        let mut cfg = SenderConfig::new(1, 5);
        cfg.mtu = 200;
        cfg.buffer_datagrams = 8;
        cfg.flow = FlowControl::None;
        let mut tx = Sender::new(cfg).unwrap();
        let mut rng = SplitMix::new(9);
        let mut sent: std::collections::HashMap<u64, Vec<u8>> = Default::default();
        let mut buf = [0u8; 256];
        let mut now = 1;
        for round in 0..5_000u64 {
            // One to three messages of 1 to 450 bytes (up to 3 fragments).
            for _ in 0..1 + rng.next_u64() % 3 {
                let len = 1 + (rng.next_u64() % 450) as usize;
                let msg: Vec<u8> = (0..len).map(|i| (round as usize + i) as u8).collect();
                if tx.offer(&msg).is_err() {
                    break;
                }
            }
            while let Some(t) = tx.poll_transmit(now, &mut buf) {
                if let Ok((_, Frame::Data(d))) = Frame::parse(&buf[..t.len]) {
                    sent.insert(d.seq, buf[..t.len].to_vec());
                }
            }
            for seq in tx.oldest_seq()..tx.unsent {
                let len = tx.copy_datagram(seq, &mut buf).unwrap();
                assert_eq!(
                    &buf[..len],
                    &sent[&seq][..],
                    "datagram {seq} in round {round}"
                );
            }
            now += 1_000;
        }
        assert!(
            tx.next_seq() > 8 * 100,
            "wrapped many times: {}",
            tx.next_seq()
        );
    }
}
