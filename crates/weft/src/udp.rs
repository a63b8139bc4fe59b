//! The agent tasks that run a UDP channel: one sends (drains the publications'
//! MPSC ring into the protocol and the socket), one receives (runs the
//! subscription socket and republishes messages and events into a broadcast
//! ring for every local subscriber).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_net::{Publication as NetPublication, Subscription as NetSubscription, Waitable};
use weft_proto::wire::STAMP_LEN;
use weft_proto::{Event as ProtoEvent, OfferError};
use weft_shm::{broadcast, mpsc, ClaimError, PollError, ShmOptions};

use weft_counters::{types, Counter, CounterSet, CountersFile, LossReport};

use crate::agent::Task;
use crate::channel::{
    Users, TYPE_LOSS, TYPE_MESSAGE, TYPE_MESSAGE_STAMPED, TYPE_NEW_SESSION, TYPE_PUBLISHER_GONE,
};
use crate::doorbell::ReaderBells;

/// Frames taken from the publications' ring per duty cycle.
const SEND_BURST: usize = 256;
/// Events republished per duty cycle.
const RECV_BURST: usize = 256;

/// What a UDP channel's send task tells the publications writing into its
/// ring, in the ring's status word: whether receivers are there (bit 0) and
/// the largest message (the high 32 bits). Publications in other processes
/// read it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SenderStatus(pub(crate) u64);

impl SenderStatus {
    pub(crate) fn new(connected: bool, max_message: usize) -> Self {
        Self(((max_message.min(u32::MAX as usize) as u64) << 32) | connected as u64)
    }

    /// Whether a receiver has reported status and not timed out.
    #[inline]
    pub(crate) fn connected(self) -> bool {
        self.0 & 1 != 0
    }

    /// The largest message; 0 until the send task has said.
    #[inline]
    pub(crate) fn max_message(self) -> usize {
        (self.0 >> 32) as usize
    }
}

/// How often a task copies its protocol and socket counters into the node's
/// counters file, in ns.
const EXPORT_EVERY_NS: u64 = 1_000_000;

/// A UDP sender's counters in the node's counters file.
pub(crate) struct SendCounters {
    messages: Counter,
    bytes: Counter,
    datagrams: Counter,
    repairs: Counter,
    naks: Counter,
    loss_notices: Counter,
    back_pressured: Counter,
    dropped: Counter,
    receivers: Counter,
    send_errors: Counter,
    timed_out: Counter,
    position: Counter,
    window: Counter,
    unacknowledged: Counter,
    buffer: Counter,
    /// Messages taken from the ring so far (not in the protocol's stats).
    taken: u64,
    last_export: u64,
    /// For the error log: the file, the label prefix, and the error counts
    /// already logged (send errors, dropped, short sends, skipped frames).
    file: Arc<CountersFile>,
    prefix: String,
    logged: [u64; 4],
    /// Frames of publishers that died mid-claim (skipped by the ring).
    pub(crate) skipped: u64,
}

impl SendCounters {
    pub(crate) fn new(file: &Arc<CountersFile>, stream: u32, prefix: &str) -> Self {
        let set = CounterSet::new(file, stream as u64, prefix);
        Self {
            file: file.clone(),
            prefix: prefix.to_owned(),
            logged: [0; 4],
            skipped: 0,
            messages: set.make(types::UDP_SENT_MESSAGES, "messages sent"),
            bytes: set.make(types::UDP_SENT_BYTES, "bytes sent"),
            datagrams: set.make(types::UDP_SENT_DATAGRAMS, "datagrams sent"),
            repairs: set.make(types::UDP_REPAIRS_SENT, "repairs sent"),
            naks: set.make(types::UDP_NAKS_RECEIVED, "NAKs received"),
            loss_notices: set.make(types::UDP_LOSS_NOTICES_SENT, "loss notices sent"),
            back_pressured: set.make(types::UDP_SEND_BACK_PRESSURED, "back-pressure events"),
            dropped: set.make(types::UDP_SEND_DROPPED, "datagrams dropped"),
            receivers: set.make(types::UDP_RECEIVERS, "receivers"),
            send_errors: set.make(types::UDP_SEND_ERRORS, "send errors"),
            timed_out: set.make(types::UDP_RECEIVERS_TIMED_OUT, "receivers timed out"),
            position: set.make(types::UDP_SEND_POSITION, "position"),
            window: set.make(types::UDP_SEND_WINDOW, "window"),
            unacknowledged: set.make(types::UDP_SEND_UNACKNOWLEDGED, "unacknowledged"),
            buffer: set.make(types::UDP_SEND_BUFFER, "retransmit buffer"),
            taken: 0,
            last_export: 0,
        }
    }

    fn export(&mut self, net: &NetPublication) {
        let st = net.stats();
        self.messages.set(self.taken);
        self.bytes.set(st.io.bytes_out);
        self.datagrams.set(st.proto.data_sent);
        self.repairs.set(st.proto.repairs_sent);
        self.naks.set(st.proto.naks_received);
        self.loss_notices.set(st.proto.losses_sent);
        self.back_pressured.set(st.proto.back_pressured);
        self.dropped.set(st.proto.dropped);
        self.receivers.set(net.sender().receivers() as u64);
        self.send_errors.set(st.io.send_errors);
        self.timed_out.set(st.proto.receivers_timed_out);
        self.position.set(net.sender().next_seq());
        self.window.set(net.sender().window());
        self.unacknowledged.set(net.sender().unacknowledged());
        self.buffer.set(net.sender().buffer_datagrams() as u64);
        let now = [
            st.io.send_errors,
            st.proto.dropped,
            st.io.short_sends,
            self.skipped,
        ];
        const WHAT: [(&str, &str); 4] = [
            ("send_errors", "datagrams lost to send errors"),
            ("dropped", "malformed or foreign datagrams dropped"),
            ("short_sends", "datagrams the kernel took only in part"),
            (
                "skipped_frames",
                "frames of publishers that died mid-claim skipped",
            ),
        ];
        log_increases(&self.file, &self.prefix, &mut self.logged, now, WHAT);
    }
}

/// Logs every count in `now` that grew since `logged` as an error of the
/// node (`PREFIX: what`); allocates only when one did.
fn log_increases<const N: usize>(
    file: &CountersFile,
    prefix: &str,
    logged: &mut [u64; N],
    now: [u64; N],
    what: [(&str, &str); N],
) {
    for i in 0..N {
        if now[i] > logged[i] {
            let (kind, what) = what[i];
            file.log_error(kind, &format!("{prefix}: {what}"), now[i] - logged[i]);
            logged[i] = now[i];
        }
    }
}

/// A UDP receiver's counters in the node's counters file.
pub(crate) struct RecvCounters {
    messages: Counter,
    bytes: Counter,
    datagrams: Counter,
    duplicates: Counter,
    repairs: Counter,
    naks: Counter,
    lost: Counter,
    dropped: Counter,
    overflow: Counter,
    kernel_drops: Counter,
    loss_events: Counter,
    injected: Counter,
    position: Counter,
    losses: u64,
    last_export: u64,
    file: Arc<CountersFile>,
    prefix: String,
    stream: u32,
    /// Error counts already logged (see `export`).
    logged: [u64; 8],
    /// Messages larger than the local ring's largest frame, dropped.
    pub(crate) oversize: u64,
    /// The loss-report entries of the sessions that lost data, newest last
    /// (at most [`LOSS_SESSIONS`]: the oldest makes room).
    reports: Vec<(u64, LossReport)>,
    /// The local subscribers the republishing ring cut loose.
    evictions: crate::channel::EvictionLog,
    /// The channel's address, for the loss report.
    channel: String,
    /// A gateway's: its republish into shared memory, counted as that
    /// channel's publication.
    pub(crate) republish: Option<RepublishCounters>,
}

/// What an inbound gateway writes into its shared-memory channel, counted
/// as a publication of that channel (role `gateway-in`): the task counts
/// locally and stores these when it exports.
pub(crate) struct RepublishCounters {
    counters: crate::channel::ShmCounters,
    pub(crate) sent: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) refused: u64,
}

impl RepublishCounters {
    pub(crate) fn new(set: &CounterSet<'_>, capacity: usize) -> Self {
        Self {
            counters: crate::channel::ShmCounters::republish(set, capacity),
            sent: 0,
            sent_bytes: 0,
            refused: 0,
        }
    }

    fn export(&self, out: &broadcast::Producer) {
        let c = &self.counters;
        c.messages.set(self.sent);
        c.bytes.set(self.sent_bytes);
        c.other.set(self.refused);
        c.position.set(out.position());
    }
}

/// Sessions of one stream whose losses a receive task keeps an entry of the
/// loss report for at once.
const LOSS_SESSIONS: usize = 8;

impl RecvCounters {
    pub(crate) fn new(file: &Arc<CountersFile>, stream: u32, prefix: &str, channel: &str) -> Self {
        let set = CounterSet::new(file, stream as u64, prefix);
        Self {
            file: file.clone(),
            prefix: prefix.to_owned(),
            channel: channel.to_owned(),
            republish: None,
            stream,
            logged: [0; 8],
            oversize: 0,
            reports: Vec::with_capacity(LOSS_SESSIONS),
            evictions: crate::channel::EvictionLog::new(&set, file, prefix),
            messages: set.make(types::UDP_RECEIVED_MESSAGES, "messages received"),
            bytes: set.make(types::UDP_RECEIVED_BYTES, "bytes received"),
            datagrams: set.make(types::UDP_RECEIVED_DATAGRAMS, "datagrams received"),
            duplicates: set.make(types::UDP_DUPLICATES, "duplicates"),
            repairs: set.make(types::UDP_REPAIRS_RECEIVED, "repairs received"),
            naks: set.make(types::UDP_NAKS_SENT, "NAKs sent"),
            lost: set.make(types::UDP_DATAGRAMS_LOST, "datagrams lost"),
            dropped: set.make(types::UDP_RECEIVE_DROPPED, "datagrams dropped"),
            overflow: set.make(types::UDP_OVERFLOW, "beyond the reorder buffer"),
            kernel_drops: set.make(types::UDP_KERNEL_DROPS, "kernel drops"),
            loss_events: set.make(types::UDP_LOSS_EVENTS, "loss events"),
            injected: set.make(types::UDP_INJECTED_DROPS, "injected drops"),
            position: set.make(types::UDP_RECEIVE_POSITION, "position"),
            losses: 0,
            last_export: 0,
        }
    }

    fn export(&mut self, net: &NetSubscription, out: &broadcast::Producer) {
        self.evictions.note(out.evictions(), out.last_eviction());
        if let Some(r) = &self.republish {
            r.export(out);
        }
        let st = net.stats();
        self.messages.set(st.proto.messages);
        self.bytes.set(st.io.bytes_in);
        self.datagrams.set(st.proto.data_received);
        self.duplicates.set(st.proto.duplicates);
        self.repairs.set(st.proto.repairs_received);
        self.naks.set(st.proto.naks_sent);
        self.lost.set(st.proto.lost);
        self.dropped.set(st.proto.dropped + st.io.truncated);
        self.overflow.set(st.proto.overflow);
        self.kernel_drops.set(st.io.kernel_drops);
        self.loss_events.set(self.losses);
        self.injected.set(st.io.injected_drops);
        self.position.set(net.receiver().position());
        let now = [
            st.io.kernel_drops,
            st.proto.dropped.saturating_sub(
                st.proto.unauthenticated + st.proto.implausible + st.proto.sessions_refused,
            ),
            st.io.truncated,
            st.io.recv_errors,
            self.oversize,
            st.proto.unauthenticated,
            st.proto.implausible,
            st.proto.sessions_refused,
        ];
        const WHAT: [(&str, &str); 8] = [
            ("kernel_drops", "datagrams dropped by the kernel (receive buffer full: raise udp.rcvbuf)"),
            ("dropped", "malformed, foreign or stale datagrams dropped"),
            ("truncated", "datagrams longer than the MTU dropped"),
            ("receive_errors", "receive calls failed"),
            ("oversize", "messages larger than the local ring dropped"),
            ("unauthenticated", "datagrams without a valid authentication tag dropped (a forger, or a key_file that differs)"),
            ("implausible", "frames claiming sequence numbers their session never sent dropped (forged?)"),
            ("sessions_refused", "new sessions refused: every session slot holds a live session"),
        ];
        log_increases(&self.file, &self.prefix, &mut self.logged, now, WHAT);
    }

    /// Puts a loss of `datagrams` datagrams of `session` in the loss report
    /// (an entry per session); the bytes are estimated from the stream's mean
    /// datagram size so far.
    fn loss(&mut self, session: u64, datagrams: u64, net: &NetSubscription) {
        self.losses += 1;
        let io = net.stats().io;
        let bytes = datagrams.saturating_mul(io.bytes_in.checked_div(io.datagrams_in).unwrap_or(0));
        let i = match self.reports.iter().position(|(s, _)| *s == session) {
            Some(i) => i,
            None => {
                if self.reports.len() == LOSS_SESSIONS {
                    self.reports.remove(0);
                }
                let entry = self
                    .file
                    .loss_report(self.stream as u64, session, &self.channel);
                self.reports.push((session, entry));
                self.reports.len() - 1
            }
        };
        self.reports[i].1.record(datagrams, bytes);
    }
}

/// How far a UDP send task is from having delivered everything it was
/// given: written by the task at the end of each duty cycle, read by
/// [`Node::flush`](crate::Node::flush) and the node's close. Relaxed atomics:
/// a reader acts on them only after several consistent looks.
#[derive(Debug, Default)]
pub(crate) struct SendProgress {
    /// Messages taken from the ring so far.
    pub(crate) taken: AtomicU64,
    /// The ring position read up to.
    pub(crate) consumed: AtomicU64,
    /// The ring was found empty and no message waits for the protocol.
    pub(crate) drained: AtomicBool,
    /// Datagrams not yet sent once.
    pub(crate) unsent: AtomicU64,
    /// Datagrams some receiver has not reported delivered.
    pub(crate) unacknowledged: AtomicU64,
    /// Receivers in flow control.
    pub(crate) receivers: AtomicU64,
    /// Set by the node when it gives up on flushing: the task counts what
    /// is left in its ring into `abandoned` (those messages are not sent).
    pub(crate) abandon: AtomicBool,
    /// Messages left in the ring when the node gave up (see `abandon`).
    pub(crate) abandoned: AtomicU64,
    /// `abandoned` is final.
    pub(crate) counted: AtomicBool,
}

impl SendProgress {
    /// Whether everything up to ring position `upto` was taken, sent, and
    /// reported delivered by every receiver.
    pub(crate) fn flushed(&self, upto: u64) -> bool {
        self.consumed.load(Ordering::Acquire) >= upto
            && self.drained.load(Ordering::Acquire)
            && self.unsent.load(Ordering::Relaxed) == 0
            && self.unacknowledged.load(Ordering::Relaxed) == 0
    }
}

/// Sends one UDP stream.
pub(crate) struct SendTask {
    pub(crate) counters: SendCounters,
    pub(crate) name: String,
    /// The ring every publication of the channel on this host writes into.
    pub(crate) rx: mpsc::Consumer,
    /// The ring's file, removed when the task ends (before the ring closes,
    /// so a process that opens the channel later creates a new one).
    pub(crate) file: Option<(ShmOptions, String)>,
    pub(crate) net: NetPublication,
    /// A message taken from the ring that the protocol refused (back-pressure):
    /// it goes first next time, so nothing taken is ever dropped.
    pub(crate) pending: Vec<u8>,
    pub(crate) has_pending: bool,
    /// Whether `pending` starts with a send time (a latency sample).
    pub(crate) pending_stamped: bool,
    /// What the status word says now.
    pub(crate) connected: bool,
    pub(crate) max: usize,
    /// The publications using the channel.
    pub(crate) users: Arc<Users>,
    /// How long the protocol keeps running (repairs, last data) after the last
    /// publication is gone and everything was handed over.
    pub(crate) linger_ns: u64,
    pub(crate) linger_until: u64,
    pub(crate) done: bool,
    /// What the node reads to flush and close.
    pub(crate) progress: Arc<SendProgress>,
}

impl Task for SendTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.net.fd().as_raw_fd())
    }

    fn timer_in(&self) -> Option<Duration> {
        self.net.time_to_timer()
    }

    fn is_done(&self) -> bool {
        self.done
    }

    /// A fresh message leaves before the agent's other tasks read their sockets.
    fn runs_first(&self) -> bool {
        true
    }

    fn do_work(&mut self, now_ns: u64) -> usize {
        let mut work = 0;
        let mut drained = false;
        if self.has_pending {
            match send(&mut self.net, &self.pending, self.pending_stamped) {
                Ok(()) => {
                    self.has_pending = false;
                    work += 1;
                }
                Err(OfferError::BackPressured) => {}
                // Checked against max_message when the publication claimed it;
                // a stamped frame always holds its stamp.
                Err(OfferError::TooLarge | OfferError::MissingStamp) => self.has_pending = false,
            }
        }
        while !self.has_pending && work < SEND_BURST {
            let (net, pending, has_pending, pending_stamped) = (
                &mut self.net,
                &mut self.pending,
                &mut self.has_pending,
                &mut self.pending_stamped,
            );
            match self.rx.poll(1, |f| {
                let stamped = f.type_id() == TYPE_MESSAGE_STAMPED;
                if send(net, f.payload(), stamped) == Err(OfferError::BackPressured) {
                    pending.clear();
                    pending.extend_from_slice(f.payload()); // within capacity: no allocation
                    *has_pending = true;
                    *pending_stamped = stamped;
                }
            }) {
                Ok(0) => {
                    drained = true;
                    break;
                }
                Ok(n) => {
                    work += n;
                    self.counters.taken += n as u64;
                }
                Err(PollError::SkippedDeadProducer { .. }) => self.counters.skipped += 1,
                Err(_) => break,
            }
        }
        work += self.net.do_work();
        while self.net.poll_event().is_some() {}
        if now_ns.saturating_sub(self.counters.last_export) >= EXPORT_EVERY_NS {
            self.counters.last_export = now_ns;
            self.counters.export(&self.net);
        }
        self.report(drained);
        let connected = self.net.sender().receivers() > 0;
        if connected != self.connected {
            self.connected = connected;
            self.rx.set_status(SenderStatus::new(connected, self.max).0);
        }
        // The last publication is gone and everything it sent is handed over:
        // keep serving repairs for the linger time and until every receiver
        // has reported it all delivered (a receiver that falls silent leaves
        // flow control after the liveness timeout, so this ends), then fall
        // silent, so the receivers see the publisher go. Publications of
        // other processes keep the sender running while their processes live
        // (looked at once per linger time: it probes each one's process).
        let sender = self.net.sender();
        let delivered = sender.unsent() == 0 && sender.unacknowledged() == 0;
        if self.users.count() == 0 && drained && !self.has_pending {
            if self.linger_until == 0 {
                self.linger_until = now_ns + self.linger_ns;
            } else if now_ns >= self.linger_until && delivered {
                if self.rx.producers_elsewhere() > 0 {
                    self.linger_until = now_ns + self.linger_ns;
                } else if self.users.try_close() {
                    self.finish();
                }
            }
        } else {
            self.linger_until = 0;
        }
        work
    }
}

/// Offers one frame of the publications' ring to the protocol: a latency
/// sample (its payload starts with the publisher's commit time) goes out
/// stamped, so the receivers hand the time out apart from the message.
#[inline]
fn send(net: &mut NetPublication, payload: &[u8], stamped: bool) -> Result<(), OfferError> {
    if stamped {
        net.offer_stamped(payload)
    } else {
        net.offer(payload)
    }
}

impl SendTask {
    /// Publishes how far the task is from having delivered everything; when
    /// the node gave up on it, counts the messages left in the ring (read
    /// and discarded: they are reported, not sent).
    fn report(&mut self, drained: bool) {
        let p = &self.progress;
        let sender = self.net.sender();
        p.taken.store(self.counters.taken, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load in `SendProgress::flushed`:
        // the numbers below are at least as new as this position.
        p.unsent.store(sender.unsent(), Ordering::Relaxed);
        p.unacknowledged
            .store(sender.unacknowledged(), Ordering::Relaxed);
        p.receivers
            .store(sender.receivers() as u64, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load in `SendProgress::flushed`.
        p.drained
            .store(drained && !self.has_pending, Ordering::Release);
        p.consumed.store(self.rx.position(), Ordering::Release);
        if p.abandon.load(Ordering::Acquire) && !p.counted.load(Ordering::Relaxed) {
            let mut left = self.has_pending as u64;
            self.has_pending = false;
            loop {
                match self.rx.poll(usize::MAX, |_| {}) {
                    Ok(0) => break,
                    Ok(n) => left += n as u64,
                    Err(PollError::SkippedDeadProducer { .. }) => {}
                    Err(_) => break,
                }
            }
            p.abandoned.store(left, Ordering::Relaxed);
            // SYNC POINT: pairs with the node's Acquire load of `counted`.
            p.counted.store(true, Ordering::Release);
        }
    }

    /// Ends the task: removes the ring's file first, so no process attaches
    /// to a ring whose sender is leaving; one that attached just before sees
    /// the ring close and gets `PublishError::Closed`.
    fn finish(&mut self) {
        self.counters.export(&self.net);
        self.report(true);
        if let Some((opts, name)) = self.file.take() {
            let _ = weft_shm::Region::remove(&opts, &name);
        }
        self.done = true;
    }
}

impl Drop for SendTask {
    fn drop(&mut self) {
        // A node closed with the channel still open: the file goes too.
        if let Some((opts, name)) = self.file.take() {
            let _ = weft_shm::Region::remove(&opts, &name);
        }
    }
}

/// Receives one UDP stream for every local subscriber.
pub(crate) struct RecvTask {
    pub(crate) counters: RecvCounters,
    pub(crate) name: String,
    pub(crate) net: NetSubscription,
    pub(crate) out: broadcast::Producer,
    /// An event the ring refused (subscribers a full ring behind): it goes first
    /// next time. Meanwhile the protocol holds the rest, and its flow control
    /// holds the publisher back.
    pub(crate) pending: Vec<u8>,
    pub(crate) pending_type: Option<u32>,
    /// The subscriptions reading the local ring; the task ends (leaving the
    /// group) when the last one is gone.
    pub(crate) users: Arc<Users>,
    pub(crate) done: bool,
    /// The in-process subscriptions' doorbells (none for a gateway's ring).
    pub(crate) bells: Option<Arc<ReaderBells>>,
}

impl Task for RecvTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.net.fd().as_raw_fd())
    }

    fn timer_in(&self) -> Option<Duration> {
        self.net.time_to_timer()
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn do_work(&mut self, now_ns: u64) -> usize {
        if self.users.try_close() {
            self.counters.export(&self.net, &self.out);
            self.done = true;
            return 0;
        }
        if now_ns.saturating_sub(self.counters.last_export) >= EXPORT_EVERY_NS {
            self.counters.last_export = now_ns;
            self.counters.export(&self.net, &self.out);
        }
        let mut work = 0;
        let mut republished = 0;
        if let Some(t) = self.pending_type {
            if self.out.offer(t, &self.pending).is_ok() {
                self.pending_type = None;
                work += 1;
                republished += 1;
                let len = self.pending.len()
                    - if t == TYPE_MESSAGE_STAMPED {
                        STAMP_LEN
                    } else {
                        0
                    };
                counted(&mut self.counters.republish, t, len, true);
            }
        }
        work += self.net.do_work();
        let mut words = [0u8; 24];
        while self.pending_type.is_none() && work < RECV_BURST {
            let mut lost = None;
            let Some(e) = self.net.poll_event() else {
                break;
            };
            let (t, bytes): (u32, &[u8]) = match e {
                ProtoEvent::Message { message, .. } => (TYPE_MESSAGE, message),
                ProtoEvent::StampedMessage {
                    sent_ns, message, ..
                } => {
                    // The local ring carries the stamp in front, as a
                    // shared-memory publication writes it.
                    match republish_stamped(&mut self.out, sent_ns, message) {
                        Ok(()) => {
                            republished += 1;
                            counted(
                                &mut self.counters.republish,
                                TYPE_MESSAGE,
                                message.len(),
                                true,
                            );
                        }
                        Err(ClaimError::TooLarge { .. }) => self.counters.oversize += 1,
                        Err(_) => {
                            counted(&mut self.counters.republish, TYPE_MESSAGE, 0, false);
                            self.pending.clear();
                            self.pending.extend_from_slice(&sent_ns.to_le_bytes());
                            self.pending.extend_from_slice(message); // within capacity
                            self.pending_type = Some(TYPE_MESSAGE_STAMPED);
                        }
                    }
                    work += 1;
                    continue;
                }
                ProtoEvent::Loss {
                    session_id, range, ..
                } => {
                    lost = Some((session_id, range.to.saturating_sub(range.from)));
                    words[..8].copy_from_slice(&range.from.to_le_bytes());
                    words[8..16].copy_from_slice(&range.to.to_le_bytes());
                    words[16..].copy_from_slice(&session_id.to_le_bytes());
                    (TYPE_LOSS, &words)
                }
                ProtoEvent::NewSession { session_id, .. } => {
                    words[..8].copy_from_slice(&session_id.to_le_bytes());
                    (TYPE_NEW_SESSION, &words[..8])
                }
                ProtoEvent::PublisherGone { session_id } => {
                    words[..8].copy_from_slice(&session_id.to_le_bytes());
                    (TYPE_PUBLISHER_GONE, &words[..8])
                }
            };
            match self.out.offer(t, bytes) {
                Ok(()) => {
                    republished += 1;
                    counted(&mut self.counters.republish, t, bytes.len(), true);
                }
                // Larger than this node's local ring takes (the publisher's node
                // allows more): dropped and counted, never stuck on.
                Err(ClaimError::TooLarge { .. }) => self.counters.oversize += 1,
                Err(_) => {
                    counted(&mut self.counters.republish, t, 0, false);
                    self.pending.clear();
                    self.pending.extend_from_slice(bytes); // within capacity: no allocation
                    self.pending_type = Some(t);
                }
            }
            if let Some((session, datagrams)) = lost {
                self.counters.loss(session, datagrams, &self.net);
            }
            work += 1;
        }
        if republished > 0 {
            if let Some(b) = &self.bells {
                b.wake();
            }
        }
        work
    }
}

/// Counts, for a gateway, a frame of type `t` written into its shared-memory
/// ring (`ok`, with `len` payload bytes; messages only) or refused by it
/// (held back: back-pressure). Nothing for a plain receive task.
#[inline]
fn counted(r: &mut Option<RepublishCounters>, t: u32, len: usize, ok: bool) {
    if let Some(r) = r {
        if !ok {
            r.refused += 1;
        } else if t == TYPE_MESSAGE || t == TYPE_MESSAGE_STAMPED {
            r.sent += 1;
            r.sent_bytes += len as u64;
        }
    }
}

/// Writes a stamped message into a local ring: the stamp, then the message.
fn republish_stamped(
    out: &mut broadcast::Producer,
    sent_ns: u64,
    message: &[u8],
) -> Result<(), ClaimError> {
    let mut c = out.try_claim(STAMP_LEN + message.len(), TYPE_MESSAGE_STAMPED)?;
    let p = c.payload_mut();
    p[..STAMP_LEN].copy_from_slice(&sent_ns.to_le_bytes());
    p[STAMP_LEN..].copy_from_slice(message);
    c.commit();
    Ok(())
}

/// Forwards a local stream to another channel (the outbound gateway): reads a
/// subscription, offers into a publication; a message the publication refuses
/// waits here, and nothing more is read until it is taken.
pub(crate) struct ForwardTask {
    pub(crate) name: String,
    pub(crate) sub: crate::channel::Subscription,
    pub(crate) publ: crate::channel::Publication,
    pub(crate) pending: Vec<u8>,
    pub(crate) has_pending: bool,
    pub(crate) users: Arc<Users>,
    pub(crate) done: bool,
}

impl Task for ForwardTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn do_work(&mut self, _now_ns: u64) -> usize {
        if self.users.try_close() {
            self.done = true;
            return 0;
        }
        let mut work = 0;
        if self.has_pending {
            if self.publ.offer(&self.pending).is_err() {
                return 0;
            }
            self.has_pending = false;
            work += 1;
        }
        while !self.has_pending && work < SEND_BURST {
            let (publ, pending, has_pending) =
                (&mut self.publ, &mut self.pending, &mut self.has_pending);
            let n = self
                .sub
                .poll(1, |e| {
                    if let crate::channel::Event::Message(m) = e {
                        if publ.offer(m).is_err() {
                            pending.clear();
                            pending.extend_from_slice(m); // within capacity: no allocation
                            *has_pending = true;
                        }
                    }
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            work += n;
        }
        work
    }
}
