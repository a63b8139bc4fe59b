//! The subscribing side of a stream: reordering, gap detection, NAKs with
//! suppression, in-order delivery, reassembly, loss reports, and several
//! publisher sessions at once.
//!
//! ## Sessions (images)
//! Each publisher incarnation is a session, named by the random session id
//! every frame carries. A receiver follows up to `max_sessions` of them at
//! once, each in its own *image* (Aeron's word) with its own buffers, position,
//! NAK and STATUS timers, so a new session never replaces a live one: a
//! restarted publisher, a second publisher of the stream on another host, and a
//! stranger's forged SETUP all get images of their own, and the session that
//! was there goes on untouched.
//!
//! - An image is *confirmed* once its session has sent more than a SETUP (DATA,
//!   a heartbeat or a LOSS). [`Event::NewSession`] is delivered then, before
//!   the session's first message. A SETUP alone costs nothing else.
//! - When every image is taken, a new session takes the image of a session
//!   reported gone (its events all delivered), else that of the longest-silent
//!   unconfirmed one (which has delivered nothing: it goes silently). If all are
//!   confirmed and live, the newcomer is refused and counted
//!   (`sessions_refused`): a live session is never dropped for a new one.
//! - A session silent for `publisher_timeout_ns` is gone: what it still lacks
//!   will never come, so its gaps are reported as [`Event::Loss`], what it holds
//!   beyond them is delivered, and then [`Event::PublisherGone`]. If it speaks
//!   again before its image is reused, it goes on where it was.
//!
//! ## State of an image
//! - A **reorder buffer**, allocated once per image: datagram `seq` waits,
//!   indexed by `seq % buffer_datagrams`, until everything before it is
//!   delivered or reported lost. Datagrams are stored back to back in arrival
//!   order in a byte ring of `(2 × buffer_datagrams + 2) × mtu` bytes, so
//!   in-order traffic of small datagrams reuses cache lines and pages. While a
//!   datagram `S` waits, fewer than `2 × buffer_datagrams` others can be stored
//!   after it: each is a distinct sequence number between the `expected` of when
//!   `S` arrived and `S + buffer_datagrams`. Those take less than
//!   `(2 × buffer_datagrams + 1) × mtu` bytes with the wrap, so the ring never
//!   overwrites a datagram still waiting. `expected` is the next datagram to
//!   deliver, `highest` one past the highest datagram the session has shown to
//!   exist (by DATA or a heartbeat's `next_seq`).
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
//!
//! ## What a frame may claim
//! Sequence numbers in a frame are believed only as far as the session could
//! have sent them. DATA or a heartbeat more than `max_seq_jump` datagrams past
//! the highest the session has shown is *implausible*: dropped and counted. A
//! LOSS range counts only up to the highest datagram the session has shown (a
//! sender declares lost only what it sent), and one reaching past that by more
//! than `max_seq_jump` is implausible too. So one forged datagram can no longer
//! move a stream to sequence 2^40 and kill it; what a forger who knows the
//! session id can still do is bounded and always explicit (a Loss event),
//! never a silent gap. `docs/operations.md` has the threat model and the
//! authentication that closes it.
//!
//! Nothing allocates after [`Receiver::new`] but a new session's first image
//! beyond the first (once per image, reused after).

use std::net::SocketAddr;

use crate::wire::{self, Frame, Header, SeqRange, Status};
use crate::{
    check, check_sizes, wrap_add, ConfigError, Destination, Nanos, SeqIndex, SplitMix, Transmit,
};

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
    /// Silence after which a publisher session is reported gone. Default 1 s.
    pub publisher_timeout_ns: Nanos,
    /// A session first heard within this many datagrams of its start is received
    /// from its start (capped at half the reorder buffer). Default 512.
    pub join_window: u64,
    /// Publisher sessions followed at once, each with its own reorder buffer
    /// (`(2 × buffer_datagrams + 2) × mtu` bytes, allocated when first needed).
    /// Default 4.
    pub max_sessions: usize,
    /// How far past the highest datagram a session has shown a frame may
    /// claim before it is dropped as implausible. Default 64 × `buffer_datagrams`.
    pub max_seq_jump: u64,
    /// Authenticate every datagram with this key (see [`crate::auth`]);
    /// datagrams without a valid tag are dropped and counted. Default none.
    pub auth: Option<crate::auth::AuthKey>,
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
            join_window: 512,
            max_sessions: 4,
            max_seq_jump: 64 * 1024,
            auth: None,
        }
    }
}

/// Why datagrams were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The sender no longer holds them (LOSS frame or heartbeat's oldest_seq).
    SenderEvicted,
    /// The publisher went silent for `publisher_timeout_ns` with them missing.
    PublisherGone,
}

/// What a receiver hands the application. Every event names its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// One message, in order within its session, borrowed until the next call.
    Message {
        /// The session it came from.
        session_id: u64,
        /// The bytes.
        message: &'a [u8],
    },
    /// One message its publisher stamped with its send time
    /// ([`Sender::offer_stamped`](crate::sender::Sender::offer_stamped)), in
    /// order like any other.
    StampedMessage {
        /// The session it came from.
        session_id: u64,
        /// The publisher's send time (ns, the publisher's clock: comparable
        /// with this host's only if the publisher runs here).
        sent_ns: u64,
        /// The message, without the stamp.
        message: &'a [u8],
    },
    /// Datagrams `range` of the session will never arrive; messages in them
    /// (and a message fragmented across them) are lost.
    Loss {
        /// The session.
        session_id: u64,
        /// Sequence numbers of the lost datagrams.
        range: SeqRange,
        /// Why.
        reason: LossReason,
    },
    /// A publisher session started (delivered before its first message).
    NewSession {
        /// Its id.
        session_id: u64,
        /// Where delivery starts.
        start_seq: u64,
    },
    /// A session has been silent for `publisher_timeout_ns` (delivered after
    /// everything it had sent that could be delivered).
    PublisherGone {
        /// The session.
        session_id: u64,
    },
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
    /// Datagrams dropped (malformed, another stream, an unknown or left
    /// session, implausible, failed authentication) and messages dropped
    /// (larger than `max_message`, stamped without a stamp).
    pub dropped: u64,
    /// Of `dropped`: frames claiming sequence numbers their session could not
    /// have sent (see the module doc).
    pub implausible: u64,
    /// Of `dropped`: datagrams without a valid authentication tag.
    pub unauthenticated: u64,
    /// New sessions refused because every image held a live, confirmed session.
    pub sessions_refused: u64,
    /// Sessions heard only as a SETUP and forgotten (silent for the publisher
    /// timeout, or displaced by a newcomer): a SETUP flood shows here.
    pub setups_forgotten: u64,
    /// DATA beyond the reorder buffer (dropped; NAKed later).
    pub overflow: u64,
    /// Datagrams reported lost.
    pub lost: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Datagrams of a session not yet followed that came without their source
    /// address ([`Receiver::handle_datagram_without_source`]): not dropped for
    /// a fault, only not used; the session starts from a later datagram and
    /// NAKs what it missed.
    pub sourceless: u64,
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
fn message_event(session_id: u64, m: &[u8], flags: u8) -> Event<'_> {
    match m.split_first_chunk::<{ wire::STAMP_LEN }>() {
        Some((stamp, message)) if flags & wire::ENTRY_STAMPED != 0 => Event::StampedMessage {
            session_id,
            sent_ns: u64::from_le_bytes(*stamp),
            message,
        },
        _ => Event::Message {
            session_id,
            message: m,
        },
    }
}

/// What an image has ready to hand out, as plain data: the receiver turns it
/// into an [`Event`] borrowing the image's buffers.
#[derive(Clone, Copy, Debug)]
enum Ready {
    NewSession(u64),
    Loss(SeqRange, LossReason),
    /// A whole message at `slots[from..to]` (or `reasm[..to]` when `reasm`).
    Message {
        from: usize,
        to: usize,
        reasm: bool,
        flags: u8,
    },
    Gone,
}

/// Where an image is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not in use.
    Free,
    /// Heard only a SETUP: nothing delivered, no event yet.
    Unconfirmed,
    /// In use; `NewSession` queued or delivered.
    Live,
}

/// A stored DATA datagram's length and entry count, kept from its parse on
/// arrival so delivery need not parse it again.
#[derive(Clone, Copy, Debug, Default)]
struct Shape {
    len: u16,
    entries: u16,
}

/// One session's state. See the module doc.
#[derive(Debug)]
struct Image {
    phase: Phase,
    session_id: u64,
    sender: SocketAddr,
    start_seq: u64,
    new_session_due: bool,
    /// Silent past the publisher timeout: gaps are losses, then `Gone` is due.
    gone: bool,
    gone_reported: bool,
    last_heard: Nanos,
    expected: u64,
    highest: u64,
    gone_until: u64,
    /// The byte ring datagrams are stored in (see the module doc).
    slots: Vec<u8>,
    /// Per `seq % buffer_datagrams`: where the datagram starts in `slots`.
    offsets: Vec<usize>,
    /// Where the next datagram goes.
    tail: usize,
    /// Per `seq % buffer_datagrams`: the stored datagram's length and entries.
    shapes: Vec<Shape>,
    /// `seq % buffer_datagrams`, the index of `offsets`, `shapes`, `held`.
    seq_index: SeqIndex,
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
    /// The ranges of the last NAK (sent twice).
    ranges: Vec<SeqRange>,
}

impl Image {
    /// An unused image with every buffer allocated.
    fn new(cfg: &ReceiverConfig) -> Self {
        let n = cfg.buffer_datagrams;
        Self {
            phase: Phase::Free,
            session_id: 0,
            sender: SocketAddr::from(([0, 0, 0, 0], 0)),
            start_seq: 0,
            new_session_due: false,
            gone: false,
            gone_reported: false,
            last_heard: 0,
            expected: 0,
            highest: 0,
            gone_until: 0,
            slots: vec![0; (2 * n + 2) * cfg.mtu],
            offsets: vec![0; n],
            tail: 0,
            shapes: vec![Shape::default(); n],
            seq_index: SeqIndex::new(n),
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
            ranges: Vec::with_capacity(wire::MAX_NAK_RANGES),
        }
    }

    /// Takes the image for `session_id`, delivering from `start`.
    /// `confirmed`: heard more than a SETUP.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        cfg: &ReceiverConfig,
        session_id: u64,
        start: u64,
        src: SocketAddr,
        now: Nanos,
        confirmed: bool,
    ) {
        self.phase = if confirmed {
            Phase::Live
        } else {
            Phase::Unconfirmed
        };
        self.session_id = session_id;
        self.sender = src;
        self.start_seq = start;
        self.new_session_due = confirmed;
        self.gone = false;
        self.gone_reported = false;
        self.last_heard = now;
        self.expected = start;
        self.highest = start;
        self.gone_until = start;
        self.status_position = start;
        // Clearing the buffers' index is O(buffer); a SETUP-only session
        // (a flood of forged ones included) never gets that far.
        if confirmed {
            self.clear_index();
        }
        self.cursor = None;
        self.reasm_active = false;
        self.nak_timer = 0;
        self.nak_due = false;
        self.nak_copy_due = false;
        self.nak_retry = cfg.nak_retry_min_ns;
        self.status_timer = 0;
        self.status_due = true;
    }

    /// Forgets every datagram held (the index; the bytes stay).
    fn clear_index(&mut self) {
        self.held.fill(NONE);
        self.requested_until.fill(0);
    }

    fn idx(&self, seq: u64) -> usize {
        self.seq_index.of(seq)
    }

    fn window_end(&self) -> u64 {
        self.expected + self.held.len() as u64
    }

    /// Where delivery may run to without waiting: below it, what is missing
    /// will never come (declared by the sender, or the publisher is gone).
    fn give_up_until(&self) -> u64 {
        if self.gone {
            self.gone_until.max(self.highest)
        } else {
            self.gone_until
        }
    }

    /// Whether nothing is left to hand out (for reusing a gone session's image).
    fn drained(&self) -> bool {
        !self.new_session_due
            && self.gone_reported
            && self.held[self.idx(self.expected)] != self.expected
            && self.expected >= self.give_up_until()
    }

    /// A frame of this image's session (not a NAK or STATUS).
    #[allow(clippy::too_many_arguments)]
    fn on_frame(
        &mut self,
        cfg: &ReceiverConfig,
        rng: &mut SplitMix,
        stats: &mut ReceiverStats,
        now: Nanos,
        src: Option<SocketAddr>,
        frame: Frame<'_>,
        bytes: &[u8],
    ) {
        // What the frame says exists; believed only as far as the session
        // could have sent it (module doc).
        let claim = match frame {
            Frame::Data(d) => d.seq.saturating_add(1),
            Frame::Heartbeat(hb) => hb.next_seq,
            Frame::Loss(l) => l.range.to,
            _ => 0,
        };
        let limit = self.highest.saturating_add(cfg.max_seq_jump);
        if claim > limit {
            if !self.gone {
                stats.dropped += 1;
                stats.implausible += 1;
                return;
            }
            // The session fell silent (to us) for the publisher timeout and
            // is now far ahead: rejoin it where it is, the rest reported lost.
            if matches!(frame, Frame::Loss(_)) {
                stats.dropped += 1;
                stats.implausible += 1;
                return;
            }
            let start = match frame {
                Frame::Heartbeat(hb) => hb.next_seq,
                _ => claim - 1,
            };
            self.gone_until = self.gone_until.max(start);
            self.highest = self.highest.max(start);
        }
        if self.phase == Phase::Unconfirmed && !matches!(frame, Frame::Setup(_)) {
            self.phase = Phase::Live;
            self.new_session_due = true;
            self.clear_index();
        }
        self.last_heard = now;
        if self.gone {
            self.gone = false;
            if self.gone_reported {
                // Back after being reported gone: announced again.
                self.gone_reported = false;
                self.new_session_due = true;
                self.start_seq = self.expected;
            }
        }
        if let Some(src) = src {
            self.sender = src;
        }
        match frame {
            Frame::Data(d) => self.on_data(cfg, rng, stats, now, d, bytes),
            Frame::Heartbeat(hb) => {
                // Like a LOSS: only what the session had already shown can be
                // given up on (the rest, once a later frame shows it).
                self.gone_until = self.gone_until.max(hb.oldest_seq.min(self.highest));
                self.learn_highest(cfg, rng, now, hb.next_seq);
            }
            Frame::Loss(l) => {
                // A sender declares lost only what it sent: up to `highest`.
                let to = l.range.to.min(self.highest);
                if to < l.range.to {
                    stats.implausible += 1;
                }
                self.gone_until = self.gone_until.max(to);
            }
            Frame::Setup(_) | Frame::Nak(_) | Frame::Status(_) => {}
        }
    }

    /// Another receiver's NAK for this session: hold back our own for those
    /// datagrams (suppression).
    fn hear_nak(&mut self, now: Nanos, nak: wire::Nak<'_>) {
        let until = now + self.nak_retry;
        for r in nak.ranges() {
            let (from, to) = (r.from.max(self.expected), r.to.min(self.window_end()));
            for seq in from..to {
                let i = self.idx(seq);
                self.requested_until[i] = self.requested_until[i].max(until);
            }
        }
    }

    fn on_data(
        &mut self,
        cfg: &ReceiverConfig,
        rng: &mut SplitMix,
        stats: &mut ReceiverStats,
        now: Nanos,
        d: wire::Data<'_>,
        bytes: &[u8],
    ) {
        let seq = d.seq;
        let i = self.idx(seq);
        if seq < self.expected || self.held[i] == seq {
            stats.duplicates += 1;
            return;
        }
        if seq >= self.window_end() {
            stats.overflow += 1;
            self.learn_highest(cfg, rng, now, seq + 1);
            return;
        }
        let len = bytes.len();
        if len > cfg.mtu {
            stats.dropped += 1; // larger than our MTU
            return;
        }
        let start = if self.tail + len > self.slots.len() {
            0
        } else {
            self.tail
        };
        self.slots[start..start + len].copy_from_slice(bytes);
        // Stored as a plain frame (its tag, if any, was checked on arrival).
        self.slots[start + 3] &= !crate::auth::AUTH_FLAG;
        self.tail = start + len;
        self.offsets[i] = start;
        // Both fit: `len` is at most the MTU, which is at most 65535.
        self.shapes[i] = Shape {
            len: len as u16,
            entries: d.len() as u16,
        };
        self.held[i] = seq;
        stats.data_received += 1;
        if d.flags & wire::DATA_REPAIR != 0 && seq < self.highest {
            stats.repairs_received += 1;
        }
        self.learn_highest(cfg, rng, now, seq + 1);
    }

    /// `next` datagrams exist: schedule a NAK if that opens a gap.
    ///
    /// A newly opened gap gets its first NAK after the random NAK delay even
    /// when the timer is already set further out (a retry of an older gap,
    /// up to `nak_retry_max_ns` away, or a stale retry time left after that
    /// gap was repaired). Otherwise a loss soon after a repair would wait for
    /// the old retry: at 1 % loss that put the round trip's p99 at the retry
    /// interval.
    fn learn_highest(&mut self, cfg: &ReceiverConfig, rng: &mut SplitMix, now: Nanos, next: u64) {
        let before = self.highest;
        if next > self.highest {
            self.highest = next;
        }
        if self.nak_due {
            return;
        }
        let opened = next > before && self.missing_in(before, next);
        if opened || (self.nak_timer == 0 && self.missing_exists()) {
            let due = (now + nak_delay(cfg, rng)).max(1);
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

    fn missing_exists(&self) -> bool {
        self.missing_in(self.expected, self.highest)
    }

    fn handle_timeout(&mut self, cfg: &ReceiverConfig, stats: &mut ReceiverStats, now: Nanos) {
        let silent = now.saturating_sub(self.last_heard) >= cfg.publisher_timeout_ns;
        if self.phase == Phase::Unconfirmed {
            if silent {
                self.phase = Phase::Free; // a SETUP and nothing else: forgotten
                stats.setups_forgotten += 1;
            }
            return;
        }
        if self.nak_timer != 0 && now >= self.nak_timer {
            self.nak_timer = 0;
            self.nak_due = !self.gone;
        }
        if now >= self.status_timer && !self.gone {
            self.status_due = true;
        }
        if silent && !self.gone {
            self.gone = true;
            self.nak_due = false;
            self.nak_timer = 0;
            self.status_due = false;
        }
    }

    fn poll_timeout(&self, cfg: &ReceiverConfig) -> Option<Nanos> {
        match self.phase {
            Phase::Free => return None,
            Phase::Unconfirmed => return Some(self.last_heard + cfg.publisher_timeout_ns),
            Phase::Live => {}
        }
        if self.gone {
            return None; // until the session speaks again
        }
        let mut t = self.status_timer.max(1);
        if self.nak_timer != 0 {
            t = t.min(self.nak_timer);
        }
        Some(t.min(self.last_heard + cfg.publisher_timeout_ns))
    }

    fn header(&self, cfg: &ReceiverConfig) -> Header {
        Header {
            stream_id: cfg.stream_id,
            session_id: self.session_id,
        }
    }

    /// See [`Receiver::poll_transmit`].
    fn poll_transmit(
        &mut self,
        cfg: &ReceiverConfig,
        stats: &mut ReceiverStats,
        now: Nanos,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        if self.nak_copy_due {
            self.nak_copy_due = false;
            let nak = wire::Nak::new(cfg.receiver_id, &self.ranges);
            let len = Frame::Nak(nak).emit(self.header(cfg), buf).ok()?;
            return Some(Transmit {
                len,
                dest: Destination::Unicast(self.sender),
            });
        }
        if self.nak_due {
            self.nak_due = false;
            if let Some(t) = self.build_nak(cfg, stats, now, buf) {
                return Some(t);
            }
        }
        if self.status_due {
            self.status_due = false;
            self.status_timer = now + cfg.status_interval_ns;
            self.status_position = self.expected;
            let status = Status {
                receiver_id: cfg.receiver_id,
                position: self.expected,
                window: cfg.buffer_datagrams as u64,
            };
            let len = Frame::Status(status).emit(self.header(cfg), buf).ok()?;
            return Some(Transmit {
                len,
                dest: Destination::Unicast(self.sender),
            });
        }
        None
    }

    fn build_nak(
        &mut self,
        cfg: &ReceiverConfig,
        stats: &mut ReceiverStats,
        now: Nanos,
        buf: &mut [u8],
    ) -> Option<Transmit> {
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
            self.nak_retry = (self.nak_retry * 2).min(cfg.nak_retry_max_ns);
            next_try = next_try.min(now + self.nak_retry);
        }
        if self.missing_exists() {
            self.nak_timer = next_try.max(now + 1);
        }
        if !sent {
            return None;
        }
        stats.naks_sent += 1;
        self.nak_copy_due = true;
        let nak = wire::Nak::new(cfg.receiver_id, &self.ranges);
        let len = Frame::Nak(nak).emit(self.header(cfg), buf).ok()?;
        Some(Transmit {
            len,
            dest: Destination::Group,
        })
    }

    /// The next thing to hand out, in order: the session's start, then
    /// messages and losses, then its departure.
    fn next_ready(&mut self, cfg: &ReceiverConfig, stats: &mut ReceiverStats) -> Option<Ready> {
        if self.new_session_due {
            self.new_session_due = false;
            return Some(Ready::NewSession(self.start_seq));
        }
        loop {
            let i = self.idx(self.expected);
            if self.held[i] != self.expected {
                let give_up = self.give_up_until();
                if self.expected >= give_up {
                    if self.gone && !self.gone_reported {
                        self.gone_reported = true;
                        return Some(Ready::Gone);
                    }
                    return None;
                }
                // A run of datagrams that will never come. Only the reorder
                // window can hold anything, so the scan stops there: a LOSS or
                // heartbeat naming a far-away sequence number costs one step.
                let from = self.expected;
                let window_end = self.window_end().min(give_up);
                while self.expected < window_end
                    && self.held[self.idx(self.expected)] != self.expected
                {
                    self.expected += 1;
                }
                if self.expected == window_end {
                    self.expected = give_up;
                }
                self.reasm_active = false;
                self.cursor = None;
                self.advanced(cfg);
                let range = SeqRange {
                    from,
                    to: self.expected,
                };
                stats.lost += range.len();
                let reason = if from < self.gone_until {
                    LossReason::SenderEvicted
                } else {
                    LossReason::PublisherGone
                };
                return Some(Ready::Loss(range, reason));
            }
            let base = self.offsets[i];
            let Shape { len, entries } = self.shapes[i];
            let len = len as usize;
            // Parsed on arrival: the entries follow the header.
            let (off, left) = self.cursor.unwrap_or((wire::DATA_HEADER_LEN, entries));
            if left == 0 {
                self.held[i] = NONE;
                self.expected += 1;
                self.cursor = None;
                self.advanced(cfg);
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
                    stats.dropped += 1;
                    continue;
                }
                stats.messages += 1;
                return Some(Ready::Message {
                    from: p_from,
                    to: p_to,
                    reasm: false,
                    flags,
                });
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
                stats.dropped += 1;
                continue;
            }
            self.reasm[self.reasm_len..self.reasm_len + elen]
                .copy_from_slice(&self.slots[p_from..p_to]);
            self.reasm_len += elen;
            if end {
                self.reasm_active = false;
                if holds_stamp(self.reasm_len, self.reasm_flags) {
                    stats.messages += 1;
                    return Some(Ready::Message {
                        from: 0,
                        to: self.reasm_len,
                        reasm: true,
                        flags: self.reasm_flags,
                    });
                }
                stats.dropped += 1;
            }
        }
    }

    fn advanced(&mut self, cfg: &ReceiverConfig) {
        self.nak_retry = cfg.nak_retry_min_ns;
        if self.expected.saturating_sub(self.status_position) >= cfg.buffer_datagrams as u64 / 4 {
            self.status_due = true;
        }
    }
}

/// A random NAK delay (see [`ReceiverConfig::nak_delay_lambda`]).
fn nak_delay(cfg: &ReceiverConfig, rng: &mut SplitMix) -> Nanos {
    let spread = cfg.nak_delay_max_ns.saturating_sub(cfg.nak_delay_min_ns) as f64;
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let lambda = cfg.nak_delay_lambda;
    let fraction = if lambda > 0.0 {
        (u * lambda.exp_m1()).ln_1p() / lambda
    } else {
        u
    };
    cfg.nak_delay_min_ns + (spread * fraction) as Nanos
}

/// Events taken from one image in a row before the others get a turn.
const RUN: u32 = 64;

/// The receiver state machine. See the module doc.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    rng: SplitMix,
    /// One per session followed; allocated when first needed, then reused.
    images: Vec<Image>,
    /// Sessions whose images were reused after they were gone: their
    /// stragglers are ignored.
    left_sessions: [u64; 8],
    /// The image `poll_event` reads first, and how many events in a row.
    current: usize,
    run: u32,
    /// The image `poll_transmit` asks first.
    tx_next: usize,
    /// See [`Receiver::wants_source`].
    want_source: bool,
    stats: ReceiverStats,
}

impl Receiver {
    /// A receiver for `cfg.stream_id`. Allocates the first session's image (a
    /// reorder buffer of `(2 × buffer_datagrams + 2) × mtu` bytes, a
    /// reassembly buffer of `max_message`); a value out of range is a
    /// [`ConfigError`] naming it.
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
        check((1..=64).contains(&cfg.max_sessions), || {
            format!("max_sessions {}: expected 1 to 64", cfg.max_sessions)
        })?;
        check(cfg.max_seq_jump >= cfg.buffer_datagrams as u64, || {
            format!(
                "max_seq_jump {}: expected at least buffer_datagrams ({})",
                cfg.max_seq_jump, cfg.buffer_datagrams
            )
        })?;
        let mut images = Vec::with_capacity(cfg.max_sessions);
        images.push(Image::new(&cfg));
        Ok(Self {
            rng: SplitMix::new(cfg.seed),
            images,
            left_sessions: [0; 8],
            current: 0,
            run: 0,
            tx_next: 0,
            want_source: true,
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

    /// The next datagram to deliver of the session heard from most recently
    /// (everything below is delivered or reported lost); 0 before any.
    pub fn position(&self) -> u64 {
        self.images
            .iter()
            .filter(|im| im.phase == Phase::Live)
            .max_by_key(|im| im.last_heard)
            .map_or(0, |im| im.expected)
    }

    /// Sessions followed now (heard more than a SETUP, not yet gone).
    pub fn sessions(&self) -> usize {
        self.images
            .iter()
            .filter(|im| im.phase == Phase::Live && !im.gone)
            .count()
    }

    /// Processes one datagram from the network. Malformed, foreign-stream,
    /// unknown- or left-session, implausible and (with a key) unauthenticated
    /// datagrams are dropped and counted; none can panic.
    pub fn handle_datagram(&mut self, now: Nanos, src: SocketAddr, bytes: &[u8]) {
        self.handle(now, Some(src), bytes)
    }

    /// [`handle_datagram`](Self::handle_datagram) for a datagram read without
    /// its source address, which a receive call returns sooner (about 60 ns a hop
    /// on loopback here, docs/benchmarks.md "Issue 18, sixth round"). A session this receiver already follows keeps the address its
    /// NAKs and STATUS go to. A session it does not follow cannot be answered
    /// without one: its datagram is counted in
    /// [`ReceiverStats::sourceless`], and [`wants_source`](Self::wants_source)
    /// is true until a datagram of a new session arrives with its source. That
    /// session then starts as usual (from the stream's start if it is within
    /// `join_window`), and the missed datagram is NAKed like any gap.
    pub fn handle_datagram_without_source(&mut self, now: Nanos, bytes: &[u8]) {
        self.handle(now, None, bytes)
    }

    /// Whether the caller should read the next datagrams with their source
    /// address: until the first session starts, and after a datagram of a
    /// session not followed came without it (see
    /// [`handle_datagram_without_source`](Self::handle_datagram_without_source)).
    pub fn wants_source(&self) -> bool {
        self.want_source
    }

    fn handle(&mut self, now: Nanos, src: Option<SocketAddr>, bytes: &[u8]) {
        let bytes = match &self.cfg.auth {
            None => bytes,
            Some(key) => match key.open(bytes) {
                Some(frame) => frame,
                None => {
                    self.stats.dropped += 1;
                    self.stats.unauthenticated += 1;
                    return;
                }
            },
        };
        let parsed = if self.cfg.auth.is_some() {
            Frame::parse_authenticated(bytes)
        } else {
            Frame::parse(bytes)
        };
        let Ok((h, frame)) = parsed else {
            self.stats.dropped += 1;
            return;
        };
        if h.stream_id != self.cfg.stream_id {
            self.stats.dropped += 1;
            return;
        }
        let found = self
            .images
            .iter()
            .position(|im| im.phase != Phase::Free && im.session_id == h.session_id);
        match frame {
            // Another receiver's STATUS, if unicast ever reaches us.
            Frame::Status(_) => return,
            Frame::Nak(nak) => {
                match found {
                    // Another receiver's NAK: suppression. Our own, looped back: nothing.
                    Some(i) if nak.receiver_id != self.cfg.receiver_id => {
                        self.images[i].hear_nak(now, nak)
                    }
                    Some(_) => {}
                    None => self.stats.dropped += 1,
                }
                return;
            }
            _ => {}
        }
        let i = match found {
            Some(i) => i,
            None => {
                if self.left_sessions.contains(&h.session_id) {
                    self.stats.dropped += 1;
                    return;
                }
                let Some(src) = src else {
                    self.stats.sourceless += 1;
                    self.want_source = true;
                    return;
                };
                self.want_source = false;
                let window = self
                    .cfg
                    .join_window
                    .min(self.cfg.buffer_datagrams as u64 / 2);
                let start = match frame {
                    Frame::Setup(s) => s.initial_seq,
                    Frame::Data(d) if (d.offset as u64) < window => d.seq - d.offset as u64,
                    Frame::Data(d) => d.seq,
                    Frame::Heartbeat(hb) if hb.next_seq - hb.oldest_seq < window => hb.oldest_seq,
                    Frame::Heartbeat(hb) => hb.next_seq,
                    _ => {
                        self.stats.dropped += 1; // a LOSS of a session we never heard
                        return;
                    }
                };
                let Some(i) = self.admit() else {
                    self.stats.dropped += 1;
                    self.stats.sessions_refused += 1;
                    return;
                };
                let confirmed = !matches!(frame, Frame::Setup(_));
                self.images[i].start(&self.cfg, h.session_id, start, src, now, confirmed);
                i
            }
        };
        self.images[i].on_frame(
            &self.cfg,
            &mut self.rng,
            &mut self.stats,
            now,
            src,
            frame,
            bytes,
        );
    }

    /// An image for a new session: a free one, a new one while fewer than
    /// `max_sessions` exist, a gone session's with nothing left to deliver, or
    /// the longest-silent unconfirmed one's. `None`: every image holds a live
    /// session, none of which is dropped for a newcomer.
    fn admit(&mut self) -> Option<usize> {
        if let Some(i) = self.images.iter().position(|im| im.phase == Phase::Free) {
            return Some(i);
        }
        if self.images.len() < self.cfg.max_sessions {
            self.images.push(Image::new(&self.cfg));
            return Some(self.images.len() - 1);
        }
        if let Some(i) = self
            .images
            .iter()
            .position(|im| im.phase == Phase::Live && im.drained())
        {
            self.left_sessions.rotate_right(1);
            self.left_sessions[0] = self.images[i].session_id;
            return Some(i);
        }
        let i = self
            .images
            .iter()
            .enumerate()
            .filter(|(_, im)| im.phase == Phase::Unconfirmed)
            .min_by_key(|(_, im)| im.last_heard)
            .map(|(i, _)| i)?;
        self.stats.setups_forgotten += 1;
        Some(i)
    }

    /// Runs due timers (NAK, STATUS, publisher liveness) of every session. A
    /// spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Nanos) {
        for im in &mut self.images {
            im.handle_timeout(&self.cfg, &mut self.stats, now);
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.images
            .iter()
            .filter_map(|im| im.poll_timeout(&self.cfg))
            .min()
    }

    /// Writes the next datagram to send, taking the sessions in turn: a NAK,
    /// twice (multicast, so other receivers hear it and hold back theirs, then
    /// unicast to the sender's address, since a sender need not be a member of
    /// its own group), or a STATUS (unicast to the sender), sent every
    /// `status_interval_ns` and whenever delivery has moved a quarter of the
    /// window since the last one, so flow control never waits a whole interval
    /// for room. With a key, `buf` needs [`crate::auth::TAG_LEN`] bytes beyond
    /// the frame for the tag.
    pub fn poll_transmit(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
        let n = self.images.len();
        for k in 0..n {
            let i = wrap_add(self.tx_next, k, n);
            if self.images[i].phase != Phase::Live {
                continue;
            }
            if let Some(mut t) = self.images[i].poll_transmit(&self.cfg, &mut self.stats, now, buf)
            {
                self.tx_next = wrap_add(i, 1, n);
                if let Some(key) = &self.cfg.auth {
                    t.len = key.seal(buf, t.len)?;
                }
                return Some(t);
            }
        }
        None
    }

    /// The next event: a session's start, its messages in order with loss
    /// reports where datagrams will never come, its departure; sessions take
    /// turns, a run of up to 64 events each. A message is borrowed from the
    /// receiver's buffers until the next call. Never allocates.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        let n = self.images.len();
        if self.run >= RUN {
            self.current = wrap_add(self.current, 1, n);
            self.run = 0;
        }
        let mut found = None;
        for k in 0..n {
            let i = wrap_add(self.current, k, n);
            if self.images[i].phase != Phase::Live {
                continue;
            }
            if let Some(r) = self.images[i].next_ready(&self.cfg, &mut self.stats) {
                if k != 0 {
                    (self.current, self.run) = (i, 0);
                }
                self.run += 1;
                found = Some((i, r));
                break;
            }
        }
        let (i, ready) = found?;
        let im = &self.images[i];
        let session_id = im.session_id;
        Some(match ready {
            Ready::NewSession(start_seq) => Event::NewSession {
                session_id,
                start_seq,
            },
            Ready::Loss(range, reason) => Event::Loss {
                session_id,
                range,
                reason,
            },
            Ready::Gone => Event::PublisherGone { session_id },
            Ready::Message {
                from,
                to,
                reasm: false,
                flags,
            } => message_event(session_id, &im.slots[from..to], flags),
            Ready::Message { to, flags, .. } => message_event(session_id, &im.reasm[..to], flags),
        })
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
                tx.offer(&message(chunk * 2 * n as u64 + k)).unwrap();
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
                        Event::Message { message: m, .. } => {
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
            tx.offer(&k.to_le_bytes()).unwrap();
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
        let due = rx.images[0].nak_timer;
        assert!(
            due > 0 && due <= now + delay_max,
            "first NAK at +{}",
            due - now
        );
        now = due;
        assert!(naks(&mut rx, now) > 0, "the NAK for 1");
        // The retry timer is now set (the NAK timer field: `poll_timeout` is
        // the earliest of every timer); the repair fills the gap.
        assert!(rx.images[0].nak_timer >= now + retry);
        rx.handle_datagram(now + 20_000, src, &datagrams[1]);
        now += 50_000;
        // 3, then 5: 4 is missing. Its NAK is due within the NAK delay, not
        // at the earlier gap's retry time.
        rx.handle_datagram(now, src, &datagrams[3]);
        rx.handle_datagram(now, src, &datagrams[5]);
        let due = rx.images[0].nak_timer;
        assert!(
            due > 0 && due <= now + delay_max,
            "second gap's NAK at +{} ns, retry interval {retry}",
            due - now
        );
        assert!(naks(&mut rx, due) > 0, "the NAK for 4");
    }

    /// Datagrams read without their source: a followed session's are handled
    /// as usual and keep its NAK address; a new session's first one is counted
    /// as sourceless, asks for sources, and the session starts from the next
    /// datagram with a source, the missed one NAKed to that source; every
    /// message arrives, in order.
    #[test]
    fn a_new_session_starts_from_a_datagram_with_its_source() {
        let mut scfg = SenderConfig::new(3, 1);
        scfg.flow = crate::FlowControl::None;
        let mut tx = Sender::new(scfg).unwrap();
        let rcfg = ReceiverConfig::new(3, 2);
        let nak_delay_max = rcfg.nak_delay_max_ns;
        let mut rx = Receiver::new(rcfg).unwrap();
        assert!(rx.wants_source(), "no session yet");
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut buf = [0u8; 2048];
        let mut datagrams = Vec::new();
        let mut now = 1_000;
        for k in 0..4u64 {
            tx.offer(&k.to_le_bytes()).unwrap();
            while let Some(t) = tx.poll_transmit(now, &mut buf) {
                datagrams.push(buf[..t.len].to_vec()); // SETUP, then DATA 0 to 3
            }
        }
        rx.handle_datagram_without_source(now, &datagrams[0]);
        rx.handle_datagram_without_source(now, &datagrams[1]);
        assert_eq!(rx.stats().sourceless, 2);
        assert_eq!(rx.stats().dropped, 0, "not a fault of the datagram");
        assert!(rx.wants_source() && rx.poll_event().is_none());
        rx.handle_datagram(now, src, &datagrams[2]);
        assert!(!rx.wants_source());
        rx.handle_datagram_without_source(now, &datagrams[4]);
        assert_eq!(
            rx.stats().sourceless,
            2,
            "a followed session needs no source"
        );
        // DATA 0 and 2 are missing: their NAK goes (also) to the source learned.
        now += nak_delay_max + 1;
        rx.handle_timeout(now);
        let mut naked_to = Vec::new();
        while let Some(t) = rx.poll_transmit(now, &mut buf) {
            if let Ok((_, Frame::Nak(_))) = Frame::parse(&buf[..t.len]) {
                naked_to.push(t.dest);
            }
        }
        assert!(
            naked_to.contains(&Destination::Unicast(src)),
            "{naked_to:?}"
        );
        rx.handle_datagram_without_source(now, &datagrams[1]);
        rx.handle_datagram_without_source(now, &datagrams[3]);
        let mut got = Vec::new();
        while let Some(e) = rx.poll_event() {
            match e {
                Event::Message { message, .. } => {
                    got.push(u64::from_le_bytes(message.try_into().unwrap()))
                }
                Event::NewSession { start_seq, .. } => assert_eq!(start_seq, 0),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, [0, 1, 2, 3]);
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
            tx.offer_stamped(&[1, 2, 3]),
            Err(crate::OfferError::MissingStamp)
        );
        for m in [&b"short"[..], &long] {
            tx.offer_stamped(&[&42u64.to_le_bytes()[..], m].concat())
                .unwrap();
        }
        tx.offer(b"plain").unwrap();
        let mut datagrams = Vec::new();
        while let Some(t) = tx.poll_transmit(1, &mut buf) {
            datagrams.push(buf[..t.len].to_vec());
        }
        let mut got = Vec::new();
        for d in &datagrams {
            rx.handle_datagram(1, src, d);
            while let Some(e) = rx.poll_event() {
                match e {
                    Event::StampedMessage {
                        sent_ns, message, ..
                    } => got.push((Some(sent_ns), message.to_vec())),
                    Event::Message { message: m, .. } => got.push((None, m.to_vec())),
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
