//! Publications and subscriptions: the same shape over shared memory and UDP.
//!
//! A shared-memory channel is one broadcast ring in a file: the publication
//! writes in place, every subscription reads in place. A UDP channel runs on a
//! worker agent: publications write into an in-process MPSC ring that the
//! agent's send task drains into the protocol, and the agent's receive task
//! republishes what arrives into an in-process broadcast ring that every
//! subscription of this process reads (one network receive for all of them).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_shm::{broadcast, mp_broadcast, mpsc, ClaimError, PeerState, PollError, ShmOptions};

use weft_counters::{types, Counter, CounterSet, CountersFile, Histogram};

use crate::agent::Waker;
use crate::doorbell::ReaderBells;
use crate::udp::SenderStatus;
use crate::uri::ChannelUri;

/// Frame type of an application message in weft's rings.
pub(crate) const TYPE_MESSAGE: u32 = 0;
/// Frame types weft uses for events inside its rings (below weft-shm's own).
pub(crate) const TYPE_LOSS: u32 = 0xFFFF_FE01;
pub(crate) const TYPE_NEW_SESSION: u32 = 0xFFFF_FE02;
pub(crate) const TYPE_PUBLISHER_GONE: u32 = 0xFFFF_FE03;
/// A message whose first 8 bytes are its publisher's commit time (monotonic
/// ns): one in `NodeConfig::latency_sample_every`, for the one-way latency
/// histogram. Subscribers hand out the rest.
pub(crate) const TYPE_MESSAGE_STAMPED: u32 = 0xFFFF_FE10;
/// Bytes of the stamp.
const STAMP: usize = 8;

/// Why a message was not published. Nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Subscribers (or the network's flow control) are a full buffer behind:
    /// try again later. Back-pressure is never hidden in an unbounded queue.
    #[error("back-pressured: the subscribers are a full buffer behind")]
    BackPressured,
    /// No subscriber is there to receive it (shared memory: none joined; UDP:
    /// no receiver has reported status yet, or all timed out).
    #[error("not connected: no subscriber")]
    NotConnected,
    /// The channel is closed.
    #[error("the channel is closed")]
    Closed,
    /// Longer than [`Publication::max_message`].
    #[error("message of {len} bytes is larger than the channel's maximum of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
}

/// What a subscription hands out, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// One message, read in place; valid during the callback.
    Message(&'a [u8]),
    /// Messages that will never arrive, `to - from` of them in the units
    /// below; never a silent gap. UDP: datagrams `from..to` (transport
    /// sequence numbers) of the session, and the messages in them.
    Loss {
        /// The session they were lost from (0: not known, see [`LossUnit::RingBytes`]).
        session_id: u64,
        /// First lost datagram, or ring position.
        from: u64,
        /// One past the last.
        to: u64,
        /// What `from` and `to` count.
        unit: LossUnit,
    },
    /// A publisher session started (first contact, or a restarted publisher
    /// replacing the old one). Shared memory: `session_id` is the publisher's
    /// pid in the low 32 bits and its process start time in the high 32.
    NewSession {
        /// Identifies the session.
        session_id: u64,
    },
    /// The session's publisher has been silent past the liveness timeout, or
    /// closed the channel (delivered after its last message).
    PublisherGone {
        /// The session that ended.
        session_id: u64,
    },
}

/// What an [`Event::Loss`]'s range counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossUnit {
    /// UDP datagrams (transport sequence numbers): the messages in them are
    /// lost, however many a datagram held.
    Datagrams,
    /// Bytes of a shared-memory ring (its positions, frame headers
    /// included): this subscription was evicted (stuck, or too slow under
    /// the slow-subscriber policy) and rejoined at the newest message. If it
    /// was evicted while a poll's messages were being read in place, the
    /// range starts at those messages: the producer may have written over
    /// them during the callback, so they count as lost too. On a UDP subscription the ring is
    /// the process's own copy of the stream, which carries every session:
    /// `session_id` is 0 then.
    RingBytes,
}

/// A claimed message: write it in place, then [`commit`](Self::commit).
/// Dropping it abandons the message.
#[derive(Debug)]
pub struct Claim<'p>(ClaimInner<'p>);

#[derive(Debug)]
enum ClaimInner<'p> {
    /// In a shared-memory ring; counted at commit.
    Shm(broadcast::Claim<'p>, &'p ShmCounters),
    /// The same, sampled for latency: its first 8 bytes get the commit time.
    ShmStamped(broadcast::Claim<'p>, &'p ShmCounters),
    /// In a shared-memory ring several processes publish; counted at commit.
    ShmMany(mp_broadcast::Claim<'p>, &'p ShmCounters),
    /// The same, sampled for latency.
    ShmManyStamped(mp_broadcast::Claim<'p>, &'p ShmCounters),
    /// In the ring to the UDP send task (which the commit wakes if it is
    /// parked and in this process).
    Udp(mpsc::Claim<'p>, Option<&'p Waker>),
    /// The same, sampled for latency (the send task sends it stamped).
    UdpStamped(mpsc::Claim<'p>, Option<&'p Waker>),
}

impl Claim<'_> {
    /// The message's bytes, in place (stale contents: write all of them).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            ClaimInner::Shm(c, _) => c.payload_mut(),
            ClaimInner::ShmStamped(c, _) => &mut c.payload_mut()[STAMP..],
            ClaimInner::ShmMany(c, _) => c.payload_mut(),
            ClaimInner::ShmManyStamped(c, _) => &mut c.payload_mut()[STAMP..],
            ClaimInner::Udp(c, _) => c.payload_mut(),
            ClaimInner::UdpStamped(c, _) => &mut c.payload_mut()[STAMP..],
        }
    }

    /// Publishes the message.
    #[inline]
    pub fn commit(self) {
        match self.0 {
            // The ring keeps its position in the position counter itself.
            ClaimInner::Shm(c, counters) => {
                let len = c.len();
                c.commit();
                counters.counted(len);
            }
            ClaimInner::ShmStamped(mut c, counters) => {
                let len = c.len() - STAMP;
                stamp(c.payload_mut());
                c.commit();
                counters.counted(len);
            }
            ClaimInner::ShmMany(c, counters) => {
                let len = c.len();
                counters.sent(len, c.commit());
            }
            ClaimInner::ShmManyStamped(mut c, counters) => {
                let len = c.len() - STAMP;
                stamp(c.payload_mut());
                counters.sent(len, c.commit());
            }
            ClaimInner::Udp(c, waker) => {
                c.commit();
                if let Some(w) = waker {
                    w.wake();
                }
            }
            ClaimInner::UdpStamped(mut c, waker) => {
                stamp(c.payload_mut());
                c.commit();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }
}

/// Writes the commit time into a sampled message's first [`STAMP`] bytes.
#[inline]
fn stamp(payload: &mut [u8]) {
    payload[..STAMP].copy_from_slice(&weft_shm::liveness::now_ns().to_le_bytes());
}

/// Latency sampling of a publication: which claims get a stamp.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sampling {
    /// One claim in this many is stamped (0: none).
    every: u32,
    /// Claims until the next stamped one.
    until: u32,
}

impl Sampling {
    pub(crate) fn new(every: u32) -> Self {
        Self {
            every,
            until: every,
        }
    }

    /// The bytes a message gives up for the stamp: all messages do, so the
    /// largest message does not depend on which one is sampled.
    fn room(&self) -> usize {
        if self.every > 0 {
            STAMP
        } else {
            0
        }
    }

    /// Whether sampling is off: no claim is stamped and none gives up room.
    #[inline(always)]
    fn off(&self) -> bool {
        // `until` is 0 only when `every` is: `claimed` resets it to `every`
        // or 1, and `plain_claimed` stops at 0.
        self.until == 0
    }

    /// Whether this claim is to be stamped: the `every`th successful claim
    /// is (refused claims do not count).
    #[inline]
    fn due(&self) -> bool {
        self.until == 1
    }

    /// After a successful claim that was not stamped.
    #[inline]
    fn plain_claimed(&mut self) {
        // No store when sampling is off (`until` stays 0): a store per
        // message costs a streaming publisher (docs/shm.md, finding 33).
        if self.until != 0 {
            self.until -= 1;
        }
    }

    /// After a stamped claim: the next sample is `every` claims on, or the
    /// next claim if this one was refused.
    fn claimed(&mut self, ok: bool) {
        self.until = if ok { self.every } else { 1 };
    }
}

/// Messages sent between two counts of a shared-memory channel's
/// subscribers while it has some (a count reads every consumer slot); also
/// refused claims between two probes of another process's UDP sender.
const RECHECK_EVERY: u32 = 1024;

/// A shared-memory channel end's counters in the node's counters file:
/// messages, payload bytes, and back-pressure events (publication) or
/// evictions (subscription). One writer each: the thread using the end.
#[derive(Debug)]
pub(crate) struct ShmCounters {
    pub(crate) messages: Counter,
    pub(crate) bytes: Counter,
    pub(crate) other: Counter,
    /// The ring position written or read up to (a gauge).
    pub(crate) position: Counter,
    /// The ring's capacity in bytes (a gauge; set once the ring is known).
    pub(crate) capacity: Counter,
    /// A publication's: the subscribers its ring evicted, each logged.
    pub(crate) evictions: Option<EvictionLog>,
}

/// The subscribers a ring's producer evicted: counted, and each logged in
/// the node's error log by pid, process name and reason, for `weft-stat`.
#[derive(Debug)]
pub(crate) struct EvictionLog {
    file: Arc<CountersFile>,
    prefix: String,
    counter: Counter,
    seen: u64,
    /// The ring's file was found truncated (logged once).
    truncated: bool,
}

impl EvictionLog {
    pub(crate) fn new(set: &CounterSet<'_>, file: &Arc<CountersFile>, prefix: &str) -> Self {
        Self {
            file: file.clone(),
            prefix: prefix.to_owned(),
            counter: set.make(types::SHM_EVICTIONS, "subscribers evicted"),
            seen: 0,
            truncated: false,
        }
    }

    /// The ring has evicted `total` subscribers so far, the last one
    /// `last`: counts and logs the new ones as `PREFIX: pid P (NAME) cut
    /// loose: dead|stuck|slow` (a few syscalls and an allocation, only when
    /// there is one).
    pub(crate) fn note(&mut self, total: u64, last: Option<weft_shm::Eviction>) {
        if total <= self.seen {
            return;
        }
        self.counter.set(total);
        let who = match last {
            Some(e) => {
                let comm = std::fs::read_to_string(format!("/proc/{}/comm", e.pid))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "gone".into());
                let why = match e.reason {
                    weft_shm::EvictReason::Dead => "dead",
                    weft_shm::EvictReason::Stuck => "stuck",
                    weft_shm::EvictReason::Slow => "slow",
                };
                format!("pid {} ({comm}) cut loose: {why}", e.pid)
            }
            None => "a subscriber was evicted".into(),
        };
        self.file.log_error(
            "evicted",
            &format!("{}: {who}", self.prefix),
            total - self.seen,
        );
        self.seen = total;
    }
}

impl ShmCounters {
    /// Counts one message of `len` payload bytes committed, the ring now at
    /// `position`.
    #[inline]
    fn sent(&self, len: usize, position: u64) -> u64 {
        self.position.set(position);
        self.counted(len)
    }

    /// [`Self::sent`] for a ring that keeps its position in our position
    /// counter itself (a one-publisher channel's): messages and bytes.
    #[inline]
    fn counted(&self, len: usize) -> u64 {
        let n = self.messages.get().wrapping_add(1);
        self.messages.set(n);
        self.bytes.add(len as u64);
        n
    }

    /// Whether a connected publication counts its subscribers again before
    /// its next message: once per [`RECHECK_EVERY`] messages sent, read off
    /// the messages counter, so that the hot path keeps no countdown of its
    /// own (a store per message; docs/shm.md, finding 33). `offer` asks
    /// after each message with the count [`Self::sent`] returned; the claim
    /// path asks before each claim.
    #[inline(always)]
    fn recount_due(sent: u64) -> bool {
        sent % u64::from(RECHECK_EVERY) == 0
    }

    /// [`Self::recount_due`] for the messages sent so far.
    #[inline(always)]
    fn recount_due_now(&self) -> bool {
        Self::recount_due(self.messages.get())
    }

    /// A publication's counters, with the log of the subscribers its ring
    /// evicts; `capacity` is the ring's.
    pub(crate) fn publication(
        set: &CounterSet<'_>,
        file: &Arc<CountersFile>,
        capacity: usize,
    ) -> Self {
        Self {
            evictions: Some(EvictionLog::new(set, file, set.prefix())),
            ..Self::republish(set, capacity)
        }
    }

    /// A publication's counters without the eviction log: for a ring whose
    /// writer logs its evictions elsewhere (an inbound gateway's receive task).
    pub(crate) fn republish(set: &CounterSet<'_>, capacity: usize) -> Self {
        let counters = Self {
            messages: set.make(types::SHM_SENT_MESSAGES, "messages sent"),
            bytes: set.make(types::SHM_SENT_BYTES, "bytes sent"),
            other: set.make(types::SHM_BACK_PRESSURED, "back-pressure events"),
            position: set.make(types::SHM_SEND_POSITION, "ring position"),
            capacity: set.make(types::SHM_RING_CAPACITY, "ring capacity"),
            evictions: None,
        };
        counters.capacity.set(capacity as u64);
        counters
    }

    pub(crate) fn subscription(set: &CounterSet<'_>) -> Self {
        Self {
            messages: set.make(types::SHM_RECEIVED_MESSAGES, "messages received"),
            bytes: set.make(types::SHM_RECEIVED_BYTES, "bytes received"),
            other: set.make(types::SHM_EVICTIONS, "evictions"),
            position: set.make(types::SHM_RECEIVE_POSITION, "ring position"),
            capacity: set.make(types::SHM_RING_CAPACITY, "ring capacity"),
            evictions: None,
        }
    }
}

/// Counts a publication ring's subscribers (reads every consumer slot),
/// logging the evictions since the last count first; false if the ring's
/// file was truncated. A macro: the one- and many-publisher producers are
/// different types with the same methods.
macro_rules! count_subscribers {
    ($ring:expr, $counters:expr) => {{
        note_evictions($counters, $ring.evictions(), $ring.last_eviction());
        $ring.consumers() > 0 && !$ring.truncated()
    }};
}

#[derive(Debug)]
pub(crate) enum PubInner {
    /// The ring keeps its position in `counters.position`
    /// ([`broadcast::Producer::keep_position_in`]): `ring` is declared, so
    /// dropped, before `counters`, which frees that counter's record.
    Shm {
        ring: broadcast::Producer,
        /// Whether the last count of the ring's consumers found one.
        connected: bool,
        counters: Box<ShmCounters>,
    },
    /// A shared-memory channel several processes publish (`publishers=many`).
    ShmMany {
        ring: mp_broadcast::Producer,
        /// As for `Shm`.
        connected: bool,
        counters: Box<ShmCounters>,
    },
    /// Writes into the ring of the channel's send task: this node's, or that
    /// of another process on the host (then `waker` and `_user` are `None`).
    /// The ring's status word says whether receivers are there and the
    /// largest message.
    Udp {
        tx: mpsc::Producer,
        waker: Option<Waker>,
        _user: Option<UserGuard>,
        /// For probing another process's sender (this node's cannot die
        /// without this process).
        liveness_ns: u64,
    },
}

impl PubInner {
    fn max_message(&self, sampling: &Sampling) -> usize {
        match self {
            PubInner::Shm { ring, .. } => ring.max_payload(),
            PubInner::ShmMany { ring, .. } => ring.max_payload(),
            PubInner::Udp { tx, .. } => udp_max(tx),
        }
        .saturating_sub(sampling.room())
    }

    /// Whether a subscriber is there, as the hot path sees it: a shared-memory
    /// publication re-counts its subscribers on every offer while it has none,
    /// and every [`RECHECK_EVERY`] messages while it has some.
    #[inline]
    fn connected_now(&mut self) -> bool {
        match self {
            PubInner::Shm {
                ring,
                connected,
                counters,
            } => recount(
                connected,
                counters.recount_due_now(),
                counters,
                |counters| count_subscribers!(ring, counters),
            ),
            PubInner::ShmMany {
                ring,
                connected,
                counters,
            } => recount(
                connected,
                counters.recount_due_now(),
                counters,
                |counters| count_subscribers!(ring, counters),
            ),
            PubInner::Udp { tx, .. } => SenderStatus(tx.consumer_status()).connected(),
        }
    }

    /// Claims `len` bytes. A one-publisher shared-memory channel, the path a
    /// latency-sensitive publisher takes on every message, is kept small and
    /// inline; the other kinds are out of line in [`Self::claim_other`].
    #[inline]
    fn claim(&mut self, len: usize, sampling: &mut Sampling) -> Result<Claim<'_>, PublishError> {
        let PubInner::Shm {
            ring,
            connected,
            counters,
        } = self
        else {
            return self.claim_other(len, sampling);
        };
        let due = counters.recount_due_now();
        let max = shm_admit(ring, connected, due, counters, sampling, len)?;
        if sampling.due() {
            return claim_shm_stamped(ring, counters, sampling, len)
                .map_err(|e| claim_error(e, len, max));
        }
        match ring.try_claim(len, TYPE_MESSAGE) {
            Ok(c) => {
                sampling.plain_claimed();
                Ok(Claim(ClaimInner::Shm(c, counters)))
            }
            Err(e) => Err(shm_refused(counters, e, len, max)),
        }
    }

    /// [`Self::claim`] on a `publishers=many` or a UDP channel.
    #[inline(never)]
    fn claim_other(
        &mut self,
        len: usize,
        sampling: &mut Sampling,
    ) -> Result<Claim<'_>, PublishError> {
        if let PubInner::Udp {
            tx, waker: None, ..
        } = self
        {
            if tx.consumer_closed() {
                return Err(PublishError::Closed);
            }
        }
        let max = self.max_message(sampling);
        if len > max {
            return Err(PublishError::TooLarge { len, max });
        }
        if !self.connected_now() {
            if let PubInner::ShmMany { ring, counters, .. } = self {
                return Err(shm_unconnected(counters, ring.truncated()));
            }
            return Err(PublishError::NotConnected);
        }
        let err = |e: ClaimError| claim_error(e, len, max);
        match self {
            PubInner::Shm { .. } => unreachable!("`claim` takes one-publisher shm channels"),
            PubInner::ShmMany { ring, counters, .. } => {
                let stamped = sampling.due();
                let (len, t) = if stamped {
                    (len + STAMP, TYPE_MESSAGE_STAMPED)
                } else {
                    (len, TYPE_MESSAGE)
                };
                let claim = ring.try_claim(len, t);
                if stamped {
                    sampling.claimed(claim.is_ok());
                } else if claim.is_ok() {
                    sampling.plain_claimed();
                }
                match claim {
                    Ok(c) if stamped => Ok(Claim(ClaimInner::ShmManyStamped(c, counters))),
                    Ok(c) => Ok(Claim(ClaimInner::ShmMany(c, counters))),
                    Err(e) => Err(shm_refused(counters, e, len, max)),
                }
            }
            PubInner::Udp { tx, waker, .. } => {
                if sampling.due() {
                    return claim_udp_stamped(tx, waker.as_ref(), sampling, len).map_err(err);
                }
                match tx.try_claim(len, TYPE_MESSAGE) {
                    Ok(c) => {
                        sampling.plain_claimed();
                        Ok(Claim(ClaimInner::Udp(c, waker.as_ref())))
                    }
                    Err(e) => Err(err(e)),
                }
            }
        }
    }
}

/// Counts and logs a publication's ring's new evictions (see
/// [`EvictionLog::note`]); one load when there are none.
#[inline]
fn note_evictions(counters: &mut ShmCounters, total: u64, last: Option<weft_shm::Eviction>) {
    if let Some(log) = &mut counters.evictions {
        if total > log.seen {
            log.note(total, last);
        }
    }
}

/// Why a shared-memory publication with no subscriber in sight refuses:
/// `Closed` if its ring's file was truncated under it (logged once: the
/// ring is unusable), else `NotConnected`.
#[cold]
fn shm_unconnected(counters: &mut ShmCounters, truncated: bool) -> PublishError {
    if !truncated {
        return PublishError::NotConnected;
    }
    if let Some(log) = &mut counters.evictions {
        if !log.truncated {
            log.truncated = true;
            log.file.log_error(
                "ring_truncated",
                &format!("{}: ring file truncated under it", log.prefix),
                1,
            );
        }
    }
    PublishError::Closed
}

/// A shared-memory publication's subscriber count as the hot path sees it:
/// counted (`count`) on every call while there were none, and when `due`
/// (once per [`RECHECK_EVERY`] messages, [`ShmCounters::recount_due`])
/// while there are some.
#[inline(always)]
fn recount(
    connected: &mut bool,
    due: bool,
    counters: &mut ShmCounters,
    count: impl FnOnce(&mut ShmCounters) -> bool,
) -> bool {
    if !*connected || due {
        *connected = count(counters);
    }
    *connected
}

/// Admits a message of `len` bytes on a one-publisher shared-memory channel:
/// no longer than the largest message (returned), and a subscriber there.
#[inline(always)]
fn shm_admit(
    ring: &broadcast::Producer,
    connected: &mut bool,
    due: bool,
    counters: &mut ShmCounters,
    sampling: &Sampling,
    len: usize,
) -> Result<usize, PublishError> {
    let max = ring.max_payload().saturating_sub(sampling.room());
    if len > max {
        return Err(PublishError::TooLarge { len, max });
    }
    if !recount(connected, due, counters, |counters| {
        count_subscribers!(ring, counters)
    }) {
        return Err(shm_unconnected(counters, ring.truncated()));
    }
    Ok(max)
}

/// A shared-memory ring's refusal of a claim of `len` bytes (at most `max`),
/// counted when it is back-pressure, as the publisher's error.
#[cold]
fn shm_refused(counters: &ShmCounters, e: ClaimError, len: usize, max: usize) -> PublishError {
    if e == ClaimError::Full {
        counters.other.add(1);
    }
    claim_error(e, len, max)
}

/// What a refused claim of `len` bytes (at most `max`) tells the publisher.
#[inline]
fn claim_error(e: ClaimError, len: usize, max: usize) -> PublishError {
    match e {
        ClaimError::Full => PublishError::BackPressured,
        ClaimError::TooLarge { .. } => PublishError::TooLarge { len, max },
        ClaimError::NotConnected => PublishError::NotConnected,
        _ => PublishError::Closed,
    }
}

/// Claims a message sampled for latency (8 bytes more, a stamp type); on
/// failure the next claim is sampled instead.
#[cold]
fn claim_shm_stamped<'p>(
    ring: &'p mut broadcast::Producer,
    counters: &'p ShmCounters,
    sampling: &mut Sampling,
    len: usize,
) -> Result<Claim<'p>, ClaimError> {
    let claim = ring.try_claim(len + STAMP, TYPE_MESSAGE_STAMPED);
    sampling.claimed(claim.is_ok());
    if matches!(claim, Err(ClaimError::Full)) {
        counters.other.add(1);
    }
    claim.map(|c| Claim(ClaimInner::ShmStamped(c, counters)))
}

/// The same for a UDP channel: the send task sends the frame stamped.
#[cold]
fn claim_udp_stamped<'p>(
    tx: &'p mut mpsc::Producer,
    waker: Option<&'p Waker>,
    sampling: &mut Sampling,
    len: usize,
) -> Result<Claim<'p>, ClaimError> {
    let claim = tx.try_claim(len + STAMP, TYPE_MESSAGE_STAMPED);
    sampling.claimed(claim.is_ok());
    claim.map(|c| Claim(ClaimInner::UdpStamped(c, waker)))
}

/// The sending end of a channel. `Send`, not `Sync`: one per thread.
#[derive(Debug)]
pub struct Publication {
    pub(crate) uri: ChannelUri,
    pub(crate) stream: u32,
    pub(crate) inner: PubInner,
    /// Which claims carry a send time (`NodeConfig::latency_sample_every`).
    pub(crate) sampling: Sampling,
    /// Claims refused since the last probe of another process's sender.
    pub(crate) refusals: u32,
}

impl Publication {
    /// The channel.
    pub fn uri(&self) -> &ChannelUri {
        &self.uri
    }

    /// The stream id.
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// The largest message, in bytes.
    pub fn max_message(&self) -> usize {
        self.inner.max_message(&self.sampling)
    }

    /// Whether a subscriber is there (see [`PublishError::NotConnected`]).
    /// Shared memory: counts the ring's consumers (one load per slot).
    pub fn is_connected(&self) -> bool {
        match &self.inner {
            PubInner::Shm { ring, .. } => ring.consumers() > 0,
            PubInner::ShmMany { ring, .. } => ring.consumers() > 0,
            PubInner::Udp { tx, .. } => SenderStatus(tx.consumer_status()).connected(),
        }
    }

    /// Claims `len` bytes to write in place. No allocation, lock or syscall
    /// while it succeeds. A UDP publication whose sender is another process
    /// checks on every claim that the sender has not closed (one load), and
    /// probes that process every [`RECHECK_EVERY`] refused claims (a crashed
    /// sender shows as a ring that stays full, or never connected).
    #[inline]
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, PublishError> {
        if self.refusals >= RECHECK_EVERY {
            self.refusals = 0;
            if let PubInner::Udp {
                tx,
                waker: None,
                liveness_ns,
                ..
            } = &self.inner
            {
                if tx.consumer_state(*liveness_ns) != PeerState::Live {
                    return Err(PublishError::Closed);
                }
            }
        }
        let result = self.inner.claim(len, &mut self.sampling);
        if result.is_err() {
            self.refusals += 1;
        }
        result
    }

    /// Copies `msg` in and publishes it.
    #[inline(always)]
    pub fn offer(&mut self, msg: &[u8]) -> Result<(), PublishError> {
        // A one-publisher shared-memory channel copies straight into its ring:
        // no claim is built and moved about (a claim is a large value, and
        // moving it cost more than the ring's own work). Sampled messages
        // take the claim path, which stamps them.
        if let PubInner::Shm {
            ring,
            connected,
            counters,
        } = &mut self.inner
        {
            if !self.sampling.due() {
                let len = msg.len();
                // With sampling off no room is kept for a stamp, so the
                // ring's own size check is the channel's, and with the
                // subscribers counted lately there is nothing to check
                // first: the common case leaves out a load and a branch per
                // check (together about a twentieth of a stream's rate,
                // docs/shm.md, finding 39). Otherwise `shm_admit` checks the
                // size less the stamp's room and counts the subscribers.
                // Recounts are due after sends (below), when the count is
                // in hand: `connected` is then cleared.
                let off = self.sampling.off();
                let max = if off && *connected {
                    ring.max_payload()
                } else {
                    shm_admit(ring, connected, false, counters, &self.sampling, len)?
                };
                return match ring.offer(TYPE_MESSAGE, msg) {
                    Ok(()) => {
                        // With sampling off there is no countdown to keep
                        // (known here, without loading it again).
                        if !off {
                            self.sampling.plain_claimed();
                        }
                        if ShmCounters::recount_due(counters.counted(len)) {
                            *connected = false;
                        }
                        Ok(())
                    }
                    Err(e) => Err(shm_refused(counters, e, len, max)),
                };
            }
        }
        self.offer_by_claim(msg)
    }

    /// `offer` for everything but an unsampled message on a one-publisher
    /// shared-memory channel: out of line, so that path, inlined into the
    /// caller's loop, pays for no call and no spilled registers (each a
    /// store that waits behind the ring's, docs/shm.md, "third round").
    #[inline(never)]
    fn offer_by_claim(&mut self, msg: &[u8]) -> Result<(), PublishError> {
        let mut c = self.try_claim(msg.len())?;
        c.payload_mut().copy_from_slice(msg);
        c.commit();
        Ok(())
    }

    /// Publishes a plain-data value as its bytes.
    #[inline]
    pub fn offer_pod<T: bytemuck::Pod>(&mut self, value: &T) -> Result<(), PublishError> {
        self.offer(bytemuck::bytes_of(value))
    }
}

/// The largest message of a UDP channel, as its send task published it (the
/// ring's own limit until then).
#[inline]
fn udp_max(tx: &mpsc::Producer) -> usize {
    match SenderStatus(tx.consumer_status()).max_message() {
        0 => tx.max_payload(),
        m => m.min(tx.max_payload()),
    }
}

/// Why a subscription cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Shared memory: the channel's file is there but cannot be used (not a
    /// weft ring, corrupt, another version, not ours to open, an untrusted
    /// directory). Returned once per distinct problem (and written to the
    /// node's error log); the subscription keeps looking, and attaches when
    /// a good file replaces it.
    #[error("channel {uri}: cannot attach: {source}")]
    Attach {
        /// The channel.
        uri: String,
        /// What is wrong with the file.
        #[source]
        source: weft_shm::ShmError,
    },
    /// The ring holds data no weft writer produced; the subscription stopped
    /// there rather than hand out garbage.
    #[error("channel {uri}: {source}")]
    Corrupt {
        /// The channel.
        uri: String,
        /// What was found.
        #[source]
        source: PollError,
    },
}

#[derive(Debug)]
pub(crate) enum SubInner {
    /// A shared-memory channel; `None` until its file exists (and again after
    /// its publisher is gone, until a new one creates it).
    Shm {
        ring: Option<ShmReader>,
        /// The attached ring's session (see [`ShmReader::attach`]).
        session_id: u64,
        /// The last attach failure reported (so each is reported once).
        attach_error: Option<String>,
        /// The node's counters file, for its error log.
        file: Arc<CountersFile>,
        name: String,
        opts: ShmOptions,
        liveness_ns: u64,
        empty_polls: u32,
        /// When the last attach attempt or liveness probe ran (monotonic ns).
        last_probe: u64,
        counters: Box<ShmCounters>,
        /// One-way latency of the stamped (sampled) messages.
        latency: Histogram,
    },
    Udp {
        ring: broadcast::Consumer,
        /// This subscription's doorbell slot, if it got one.
        bells: Arc<ReaderBells>,
        bell: Option<usize>,
        _user: UserGuard,
        /// One-way latency of the stamped (sampled) messages, publisher's
        /// commit to this poll.
        latency: Histogram,
    },
}

impl Drop for SubInner {
    fn drop(&mut self) {
        if let SubInner::Udp {
            bells,
            bell: Some(i),
            ..
        } = self
        {
            bells.release(*i);
        }
    }
}

/// The receiving end of a channel. `Send`, not `Sync`.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) uri: ChannelUri,
    pub(crate) stream: u32,
    pub(crate) inner: SubInner,
}

/// Empty polls between two looks at the clock by a shared-memory subscription
/// (to attach to its publisher's ring, or to probe that it is alive).
const CLOCK_EVERY: u32 = 64;
/// How often a subscription without a ring looks for its file.
const ATTACH_EVERY_NS: u64 = 5_000_000;

impl Subscription {
    /// The channel.
    pub fn uri(&self) -> &ChannelUri {
        &self.uri
    }

    /// The stream id.
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// Whether a publisher's ring is attached (UDP: always).
    pub fn is_connected(&self) -> bool {
        match &self.inner {
            SubInner::Shm { ring, .. } => ring.is_some(),
            SubInner::Udp { .. } => true,
        }
    }

    /// Waits until this subscription may have something to read, or for at
    /// most `timeout`: for an idle strategy's park step, instead of sleeping.
    /// UDP: the agent that fills the subscription's ring wakes it (a syscall
    /// on that side only while it is parked). Shared memory: sleeps for
    /// `timeout` (a publisher in another process cannot wake it yet).
    pub fn park(&mut self, timeout: std::time::Duration) {
        match &self.inner {
            SubInner::Udp {
                ring,
                bells,
                bell: Some(i),
                ..
            } => bells.park(*i, timeout, || !ring.is_caught_up()),
            _ => std::thread::sleep(timeout),
        }
    }

    /// Hands up to `limit` events, in order, to `f`, reading messages in place.
    /// Returns how many. While messages flow: no allocation, lock or syscall.
    /// A shared-memory subscription whose publisher is not there yet looks for
    /// its file now and then (a few syscalls, only while there is nothing to read).
    #[inline]
    pub fn poll<F: FnMut(Event<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, SubscribeError> {
        // The path a spinning reader of a shared-memory channel takes on every
        // call is kept small; what it rarely needs is out of line below.
        let SubInner::Shm {
            ring: Some(r),
            empty_polls,
            counters,
            latency,
            ..
        } = &mut self.inner
        else {
            return self.poll_other(limit, f);
        };
        // Events come through too: a gateway republishes a UDP
        // stream's losses and session changes into its ring.
        let mut bytes = 0;
        let result = r.poll(limit, |frame| {
            let Some(event) = frame_event(frame.type_id(), frame.payload(), latency) else {
                return;
            };
            if let Event::Message(m) = event {
                bytes += m.len() as u64;
            }
            f(event);
        });
        match result {
            Ok(0) if !clock_due(empty_polls) => Ok(0),
            Ok(0) => self.probe_publisher(&mut f),
            Ok(n) => {
                *empty_polls = 0;
                // Events other than messages are rare: count them in.
                counters.messages.add(n as u64);
                counters.bytes.add(bytes);
                counters.position.set(r.position());
                Ok(n)
            }
            Err(e) => self.shm_poll_failed(e, &mut f),
        }
    }

    /// [`Self::poll`] of a UDP subscription, or of a shared-memory one that has
    /// no ring yet (it looks for the publisher's file now and then).
    #[inline(never)]
    fn poll_other<F: FnMut(Event<'_>)>(
        &mut self,
        limit: usize,
        mut f: F,
    ) -> Result<usize, SubscribeError> {
        match &mut self.inner {
            SubInner::Udp { ring, latency, .. } => {
                let r = ring.poll(limit, |frame| {
                    if let Some(event) = frame_event(frame.type_id(), frame.payload(), latency) {
                        f(event);
                    }
                });
                match r {
                    Ok(n) => Ok(n),
                    // Stuck or too slow (the slow-consumer policy): the
                    // receive task went on without this subscription. Rejoin
                    // and say how much of the process's copy was skipped.
                    Err(e @ (PollError::Evicted | PollError::Overrun { .. })) => {
                        let skipped = ring.rejoin();
                        let from = match e {
                            PollError::Overrun { from, .. } => from,
                            _ => skipped.start,
                        };
                        f(Event::Loss {
                            session_id: 0,
                            from,
                            to: skipped.end,
                            unit: LossUnit::RingBytes,
                        });
                        Ok(1)
                    }
                    Err(PollError::Closed) => Ok(0),
                    Err(e) => Err(SubscribeError::Corrupt {
                        uri: self.uri.to_string(),
                        source: e,
                    }),
                }
            }
            SubInner::Shm {
                ring,
                counters,
                session_id: session,
                attach_error,
                file,
                name,
                opts,
                liveness_ns,
                empty_polls,
                last_probe,
                ..
            } => {
                if ring.is_some() {
                    // An attached ring is `poll`'s own path.
                    return self.poll(limit, f);
                }
                if *last_probe == 0 || probe_due(empty_polls, last_probe, ATTACH_EVERY_NS) {
                    *last_probe = weft_shm::liveness::now_ns();
                    match ShmReader::attach(opts, name, *liveness_ns) {
                        Ok(Some((reader, session_id))) => {
                            counters.capacity.set(reader.capacity() as u64);
                            *ring = Some(reader);
                            *session = session_id;
                            *attach_error = None;
                            f(Event::NewSession { session_id });
                            return Ok(1);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let text = e.to_string();
                            if attach_error.as_deref() != Some(text.as_str()) {
                                let uri = self.uri.to_string();
                                file.log_error(
                                    "attach",
                                    &format!("{uri}: cannot attach: {text}"),
                                    1,
                                );
                                *attach_error = Some(text);
                                return Err(SubscribeError::Attach { uri, source: e });
                            }
                        }
                    }
                }
                Ok(0)
            }
        }
    }

    /// Every [`CLOCK_EVERY`]th empty poll of an attached shared-memory
    /// subscription: once a quarter of the liveness timeout has passed, checks
    /// that a publisher is still there. Returns the events handed to `f`.
    #[cold]
    #[inline(never)]
    fn probe_publisher<F: FnMut(Event<'_>)>(&mut self, f: &mut F) -> Result<usize, SubscribeError> {
        let SubInner::Shm {
            ring,
            session_id,
            liveness_ns,
            last_probe,
            file,
            ..
        } = &mut self.inner
        else {
            return Ok(0);
        };
        let Some(r) = ring else { return Ok(0) };
        if r.truncated() {
            // The file was cut under the mapping (weft caught the fault):
            // what lay past the cut is gone, and the ring is unusable.
            let path = r.path();
            *ring = None;
            let uri = self.uri.to_string();
            file.log_error(
                "ring_truncated",
                &format!("{uri}: ring file truncated under it"),
                1,
            );
            f(Event::PublisherGone {
                session_id: *session_id,
            });
            return Err(SubscribeError::Attach {
                uri,
                source: weft_shm::ShmError::Corrupt {
                    path,
                    what: "truncated while in use: messages past the cut are lost; \
                           the publisher must make the ring anew"
                        .into(),
                },
            });
        }
        let gone = time_passed(last_probe, *liveness_ns / 4) && r.publishers_gone(*liveness_ns);
        if !gone {
            return Ok(0);
        }
        *ring = None;
        f(Event::PublisherGone {
            session_id: *session_id,
        });
        Ok(1)
    }

    /// An attached shared-memory subscription's ring said `error`.
    #[cold]
    #[inline(never)]
    fn shm_poll_failed<F: FnMut(Event<'_>)>(
        &mut self,
        error: PollError,
        f: &mut F,
    ) -> Result<usize, SubscribeError> {
        let SubInner::Shm {
            ring,
            session_id,
            counters,
            ..
        } = &mut self.inner
        else {
            return Ok(0);
        };
        let session_id = *session_id;
        match error {
            PollError::Closed => {
                *ring = None;
                f(Event::PublisherGone { session_id });
                Ok(1)
            }
            PollError::Evicted | PollError::Overrun { .. } => {
                // Stuck, or too slow for too long: the publisher went on
                // without us. Rejoin at the newest message and say what was
                // lost: the ring bytes skipped over, from the messages just
                // handed over if we were evicted while they were read (they
                // may have changed under the callback).
                let Some(r) = ring else { return Ok(0) };
                let skipped = r.rejoin();
                counters.other.add(1);
                let from = match error {
                    PollError::Overrun { from, .. } => from,
                    _ => skipped.start,
                };
                f(Event::Loss {
                    session_id,
                    from,
                    to: skipped.end,
                    unit: LossUnit::RingBytes,
                });
                Ok(1)
            }
            e => Err(SubscribeError::Corrupt {
                uri: self.uri.to_string(),
                source: e,
            }),
        }
    }
}

/// The ring a shared-memory subscription reads: a one-publisher channel's
/// broadcast ring, or a `publishers=many` channel's many-producer ring.
#[derive(Debug)]
pub(crate) enum ShmReader {
    One(broadcast::Consumer),
    Many(mp_broadcast::Consumer),
}

impl ShmReader {
    /// The ring's capacity in bytes.
    fn capacity(&self) -> usize {
        match self {
            ShmReader::One(c) => c.capacity(),
            ShmReader::Many(c) => c.capacity(),
        }
    }

    /// Joins the channel's ring, whichever kind it is, with its session id:
    /// the publisher's process id for a one-publisher ring, the ring's own
    /// id for a many-publisher ring (which is only joined while a
    /// publisher of it lives). `None` if there is nothing to join yet.
    ///
    /// `Ok(None)` while there is nothing to join yet: no file, a file still
    /// being made, or a file whose publisher is gone (a crashed publisher's
    /// leftover: joining it would only report it gone again, and again).
    /// `Err` for a file that cannot be used.
    fn attach(
        opts: &ShmOptions,
        name: &str,
        liveness_ns: u64,
    ) -> Result<Option<(Self, u64)>, weft_shm::ShmError> {
        use weft_shm::ShmError;
        match broadcast::Consumer::attach(opts, name) {
            Ok(c) => {
                let session_id = c.producer_id().map_or(0, |p| p.to_word());
                if matches!(c.producer_state(liveness_ns), PeerState::Gone(_)) {
                    return Ok(None); // stale: its publisher is gone (the slot is freed on drop)
                }
                Ok(Some((ShmReader::One(c), session_id)))
            }
            Err(ShmError::WrongKind { .. }) => {
                let ring = mp_broadcast::Ring::attach(opts, name)?;
                if ring.live_producers() == 0 {
                    return Ok(None);
                }
                match ring.consumer() {
                    Some(c) => Ok(Some((ShmReader::Many(c), ring.id()))),
                    None => Ok(None), // every slot in use: try again later
                }
            }
            Err(ShmError::NotFound { .. } | ShmError::NotInitialized { .. }) => Ok(None),
            // Every consumer slot taken: one may free.
            Err(ShmError::RoleTaken { .. }) => Ok(None),
            // A file its creator has made but not yet sized.
            Err(ShmError::Truncated { len, .. })
                if len < weft_shm::region::REGION_HEADER_LEN as u64 =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    #[inline]
    fn poll<F: FnMut(weft_shm::Frame<'_>)>(
        &mut self,
        limit: usize,
        f: F,
    ) -> Result<usize, PollError> {
        match self {
            ShmReader::One(c) => c.poll(limit, f),
            ShmReader::Many(c) => match c.poll(limit, f) {
                // A publisher died writing: its message was never published.
                Err(PollError::SkippedDeadProducer { .. }) => Ok(0),
                other => other,
            },
        }
    }

    #[inline]
    fn position(&self) -> u64 {
        match self {
            ShmReader::One(c) => c.position(),
            ShmReader::Many(c) => c.position(),
        }
    }

    fn rejoin(&mut self) -> std::ops::Range<u64> {
        match self {
            ShmReader::One(c) => c.rejoin(),
            ShmReader::Many(c) => c.rejoin(),
        }
    }

    /// Whether the ring's file was truncated under it.
    fn truncated(&self) -> bool {
        match self {
            ShmReader::One(c) => c.truncated(),
            ShmReader::Many(c) => c.truncated(),
        }
    }

    /// The ring's file, for messages.
    fn path(&self) -> std::path::PathBuf {
        let region = match self {
            ShmReader::One(c) => c.region(),
            ShmReader::Many(c) => c.region(),
        };
        region.map(|r| r.path().to_owned()).unwrap_or_default()
    }

    /// Whether every publisher is gone (probes processes: not for the hot path).
    fn publishers_gone(&self, liveness_ns: u64) -> bool {
        match self {
            ShmReader::One(c) => matches!(c.producer_state(liveness_ns), PeerState::Gone(_)),
            ShmReader::Many(c) => c.is_caught_up() && c.live_producers() == 0,
        }
    }
}

/// Counts an empty poll; every [`CLOCK_EVERY`] of them looks at the clock and
/// says whether `every_ns` have passed since `last_probe` (then resets it).
#[inline]
fn probe_due(empty_polls: &mut u32, last_probe: &mut u64, every_ns: u64) -> bool {
    clock_due(empty_polls) && time_passed(last_probe, every_ns)
}

/// Counts an empty poll: true for every [`CLOCK_EVERY`]th (and starts over).
#[inline(always)]
fn clock_due(empty_polls: &mut u32) -> bool {
    *empty_polls += 1;
    if *empty_polls < CLOCK_EVERY {
        return false;
    }
    *empty_polls = 0;
    true
}

/// Whether `every_ns` have passed since `last_probe` (then sets it to now).
fn time_passed(last_probe: &mut u64, every_ns: u64) -> bool {
    let now = weft_shm::liveness::now_ns();
    if now.saturating_sub(*last_probe) < every_ns {
        return false;
    }
    *last_probe = now;
    true
}

/// A stamped message's bytes without the stamp, its latency recorded; `None`
/// (skipped) if it is too short to hold one. A stamp ahead of this host's
/// clock (a publisher on another host: clocks are per host) is not recorded.
#[inline]
fn unstamp<'a>(p: &'a [u8], latency: &Histogram) -> Option<&'a [u8]> {
    let (stamp, m) = p.split_first_chunk::<STAMP>()?;
    let sent = u64::from_le_bytes(*stamp);
    let now = weft_shm::liveness::now_ns();
    if sent <= now {
        latency.record(now - sent);
    }
    Some(m)
}

/// A subscription ring's frame as the event to hand over (`None`: skip it).
/// A plain message inline, the rest out of line ([`other_event`]), so that
/// a poll calls its closure once a frame and the closure is inlined once,
/// into the ring's loop (docs/shm.md, "seventh round", finding 35).
#[inline(always)]
fn frame_event<'a>(type_id: u32, p: &'a [u8], latency: &Histogram) -> Option<Event<'a>> {
    match type_id {
        TYPE_MESSAGE => Some(Event::Message(p)),
        t => other_event(t, p, latency),
    }
}

/// A frame other than a plain message as an event: a stamped message (its
/// latency recorded) or a gateway's or receive task's event; `None` for a
/// frame to skip. Out of line: [`Subscription::poll`]'s per-frame path stays
/// small.
#[cold]
#[inline(never)]
fn other_event<'a>(type_id: u32, p: &'a [u8], latency: &Histogram) -> Option<Event<'a>> {
    if type_id == TYPE_MESSAGE_STAMPED {
        unstamp(p, latency).map(Event::Message)
    } else {
        decode(type_id, p)
    }
}

/// An event frame of weft's in-process ring (loss, new session, publisher
/// gone) as an event; `None` for a type weft does not write (skipped).
/// Messages are [`frame_event`]'s.
fn decode(type_id: u32, p: &[u8]) -> Option<Event<'_>> {
    let word = |i: usize| -> u64 {
        p.get(i * 8..i * 8 + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    match type_id {
        TYPE_LOSS => Some(Event::Loss {
            from: word(0),
            to: word(1),
            session_id: word(2),
            unit: LossUnit::Datagrams,
        }),
        TYPE_NEW_SESSION => Some(Event::NewSession {
            session_id: word(0),
        }),
        TYPE_PUBLISHER_GONE => Some(Event::PublisherGone {
            session_id: word(0),
        }),
        _ => None,
    }
}

/// How many publications (or subscriptions) of this process use one UDP
/// channel, shared with the agent task that runs it. The task closes the
/// channel (count 0 → [`Users::CLOSED`]) when the last one is gone, and a
/// later publication then opens a new one (a new session).
#[derive(Debug)]
pub(crate) struct Users(std::sync::atomic::AtomicUsize);

impl Users {
    const CLOSED: usize = usize::MAX;

    /// A new count holding its first user.
    pub(crate) fn first() -> (Arc<Self>, UserGuard) {
        let users = Arc::new(Self(std::sync::atomic::AtomicUsize::new(1)));
        let guard = UserGuard(users.clone());
        (users, guard)
    }

    /// Counts one more user; `false` if the channel closed (open a new one).
    pub(crate) fn join(self: &Arc<Self>) -> Option<UserGuard> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != Self::CLOSED).then_some(n + 1)
            })
            .ok()
            .map(|_| UserGuard(self.clone()))
    }

    /// Users now.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Closes the channel if nobody uses it; `true` if it did.
    pub(crate) fn try_close(&self) -> bool {
        self.0
            .compare_exchange(0, Self::CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the channel is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.count() == Self::CLOSED
    }
}

/// One user of a UDP channel; dropping it counts the user out.
#[derive(Debug)]
pub(crate) struct UserGuard(Arc<Users>);

impl UserGuard {
    /// The count this guard is one of.
    pub(crate) fn users(&self) -> Arc<Users> {
        self.0.clone()
    }
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
