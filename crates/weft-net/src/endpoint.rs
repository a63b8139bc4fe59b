//! Publications and subscriptions: a protocol state machine, its socket, batched
//! IO, timers and counters.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use socket2::Socket;
use weft_proto::{
    Destination, Event, Nanos, OfferError, Receiver, ReceiverConfig, ReceiverStats, Sender,
    SenderConfig, SenderEvent, SenderStats, Transmit,
};

use crate::batch::{RecvBatch, SendBatch, BATCH};
use crate::idle::Waitable;
use crate::loss::{LossConfig, LossInjector};
use crate::socket::{group_socket, unicast_socket, BufferGrant, SocketOptions};
use crate::NetError;

/// Where a channel lives and how its sockets are set up.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// The multicast group and port.
    pub group: SocketAddrV4,
    /// Interface, TTL, loopback, buffer sizes.
    pub socket: SocketOptions,
    /// A publication's own port for NAK and STATUS (0: any free port).
    pub control_port: u16,
    /// Drop received datagrams on purpose (tests only). Default: none.
    pub loss: Option<LossConfig>,
    /// A publication reads its socket for NAK and STATUS at most this often
    /// while it is not back-pressured (every [`Publication::do_work`] while it
    /// is). An empty read is a syscall (about 0.4 µs here) that a busy sender
    /// would otherwise pay on every pass, ahead of the next message; NAKs and
    /// STATUS wait at most this long more. Zero: read on every pass. Default 10 µs.
    pub control_poll_interval: Duration,
}

/// Default of [`ChannelConfig::control_poll_interval`].
pub const CONTROL_POLL_INTERVAL: Duration = Duration::from_micros(10);

impl ChannelConfig {
    /// `group` on loopback with default socket options and no loss injection.
    pub fn new(group: SocketAddrV4) -> Self {
        Self {
            group,
            socket: SocketOptions::default(),
            control_port: 0,
            loss: None,
            control_poll_interval: CONTROL_POLL_INTERVAL,
        }
    }
}

/// What crossed one endpoint's socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams received (before loss injection).
    pub datagrams_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Datagrams the kernel took only in part.
    pub short_sends: u64,
    /// Datagrams dropped on a send error other than a full buffer.
    pub send_errors: u64,
    /// Times the send buffer was full (the datagrams stayed queued).
    pub send_would_block: u64,
    /// Receive calls that failed (the datagram, if any, is the protocol's to recover).
    pub recv_errors: u64,
    /// Received datagrams longer than the receive slot, dropped.
    pub truncated: u64,
    /// Datagrams the loss injector dropped.
    pub injected_drops: u64,
    /// Datagrams the kernel dropped on arrival because the receive buffer was
    /// full: the socket's own counter, read when the stats are taken.
    pub kernel_drops: u64,
}

/// The protocol's calls the driver makes; the same for both ends.
trait Machine: Timers {
    /// `src`: `None` when the datagram was read without its source.
    fn handle_datagram(&mut self, now: Nanos, src: Option<SocketAddr>, bytes: &[u8]);
    /// Whether the next datagrams must be read with their sources.
    fn wants_source(&self) -> bool;
}

/// The calls both machines have under the same names.
trait Timers {
    fn handle_timeout(&mut self, now: Nanos);
    fn poll_timeout(&self) -> Option<Nanos>;
    fn poll_transmit(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit>;
}

impl Machine for Sender {
    fn handle_datagram(&mut self, now: Nanos, _src: Option<SocketAddr>, bytes: &[u8]) {
        Sender::handle_datagram(self, now, bytes)
    }
    fn wants_source(&self) -> bool {
        false
    }
}

impl Machine for Receiver {
    fn handle_datagram(&mut self, now: Nanos, src: Option<SocketAddr>, bytes: &[u8]) {
        match src {
            Some(src) => Receiver::handle_datagram(self, now, src, bytes),
            None => self.handle_datagram_without_source(now, bytes),
        }
    }
    fn wants_source(&self) -> bool {
        Receiver::wants_source(self)
    }
}

macro_rules! machine {
    ($t:ty) => {
        impl Timers for $t {
            fn handle_timeout(&mut self, now: Nanos) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_timeout(&self) -> Option<Nanos> {
                <$t>::poll_timeout(self)
            }
            fn poll_transmit(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
                <$t>::poll_transmit(self, now, buf)
            }
        }
    };
}
machine!(Sender);
machine!(Receiver);

/// A machine, its socket and its batches.
#[derive(Debug)]
struct Endpoint<M> {
    machine: M,
    socket: Socket,
    fd: RawFd,
    group: SocketAddrV4,
    rx: RecvBatch,
    tx: SendBatch,
    epoch: Instant,
    io: IoStats,
    loss: Option<LossInjector>,
    grant: BufferGrant,
}

/// Large enough for any control frame (a NAK with 64 ranges is about 1 KiB).
const MIN_SLOT: usize = 2048;

impl<M: Machine> Endpoint<M> {
    fn new(
        machine: M,
        socket: Socket,
        grant: BufferGrant,
        cfg: &ChannelConfig,
        mtu: usize,
    ) -> Result<Self, NetError> {
        let slot = mtu.max(MIN_SLOT);
        Ok(Self {
            machine,
            fd: socket.as_raw_fd(),
            socket,
            group: cfg.group,
            rx: RecvBatch::new(slot),
            tx: SendBatch::new(slot),
            epoch: Instant::now(),
            io: IoStats::default(),
            loss: cfg.loss.map(LossInjector::new).transpose()?,
            grant,
        })
    }

    /// Nanoseconds since the endpoint opened; never 0 (the protocol's "unset").
    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos + 1
    }

    /// Drains the socket (up to 4 full batches, so sending is not starved).
    fn receive(&mut self, now: Nanos) -> usize {
        let mut work = 0;
        for _ in 0..4 {
            let n = match self.rx.recv(self.fd, self.machine.wants_source()) {
                Ok(n) => n,
                Err(_) => {
                    // E.g. ECONNREFUSED from an ICMP error: the next call goes on.
                    self.io.recv_errors += 1;
                    break;
                }
            };
            for i in 0..n {
                let Some((bytes, src)) = self.rx.get(i) else {
                    self.io.truncated += 1;
                    continue;
                };
                self.io.datagrams_in += 1;
                self.io.bytes_in += bytes.len() as u64;
                if let Some(loss) = &mut self.loss {
                    if loss.drop_next() {
                        self.io.injected_drops += 1;
                        continue;
                    }
                }
                self.machine
                    .handle_datagram(now, src.map(SocketAddr::V4), bytes);
            }
            work += n;
            if n < BATCH {
                break;
            }
        }
        work
    }

    fn timers(&mut self, now: Nanos) {
        if self.machine.poll_timeout().is_some_and(|t| t <= now) {
            self.machine.handle_timeout(now);
        }
    }

    /// Sends everything the machine has ready, in batches; stops when the socket's
    /// buffer is full (the rest stays queued for the next call).
    fn transmit(&mut self, now: Nanos) -> usize {
        let mut work = 0;
        loop {
            if !self.tx.is_empty() {
                let f = self.tx.flush(self.fd);
                self.io.datagrams_out += f.datagrams as u64;
                self.io.bytes_out += f.bytes as u64;
                self.io.short_sends += f.short as u64;
                self.io.send_errors += f.errors as u64;
                work += f.datagrams;
                if f.would_block {
                    self.io.send_would_block += 1;
                    return work;
                }
            }
            while self.tx.has_room() {
                let Some(t) = self.machine.poll_transmit(now, self.tx.slot_mut()) else {
                    break;
                };
                match t.dest {
                    Destination::Group => self.tx.push(t.len, self.group),
                    Destination::Unicast(SocketAddr::V4(a)) => self.tx.push(t.len, a),
                    // Only IPv4 sockets exist here, so a V6 source cannot occur.
                    Destination::Unicast(SocketAddr::V6(_)) => self.io.send_errors += 1,
                }
            }
            if self.tx.is_empty() {
                return work;
            }
        }
    }

    /// The socket's counters, with the kernel's drop counter read now.
    fn io(&self) -> IoStats {
        IoStats {
            kernel_drops: crate::batch::kernel_drops(self.fd).unwrap_or(0),
            ..self.io
        }
    }

    fn time_to_timer(&self) -> Option<Duration> {
        let t = self.machine.poll_timeout()?;
        Some(Duration::from_nanos(t.saturating_sub(self.now())))
    }
}

/// Counters of a publication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublicationStats {
    /// The socket's.
    pub io: IoStats,
    /// The protocol's (`dropped` counts malformed and foreign datagrams).
    pub proto: SenderStats,
}

/// The publishing end of a channel: a [`Sender`] on a unicast socket that sends to
/// the group. See the crate doc.
#[derive(Debug)]
pub struct Publication {
    ep: Endpoint<Sender>,
    /// See [`ChannelConfig::control_poll_interval`].
    control_every: Nanos,
    /// When the socket is next read for NAK and STATUS.
    control_at: Nanos,
    /// The clock as the last [`do_work`](Self::do_work) read it.
    last_now: Nanos,
}

impl Publication {
    /// Opens the socket (bound to the interface's address and `control_port`) and
    /// the sender; allocates every buffer now.
    pub fn open(channel: &ChannelConfig, proto: SenderConfig) -> Result<Self, NetError> {
        if !channel.group.ip().is_multicast() {
            return Err(NetError::NotMulticast(channel.group));
        }
        let mtu = proto.mtu;
        let sender = Sender::new(proto)?;
        let (socket, grant) = unicast_socket(channel.control_port, &channel.socket)?;
        Ok(Self {
            ep: Endpoint::new(sender, socket, grant, channel, mtu)?,
            control_every: channel.control_poll_interval.as_nanos() as Nanos,
            control_at: 0,
            last_now: 0,
        })
    }

    /// Queues a message (see [`Sender::offer`]); it leaves at the next
    /// [`do_work`](Self::do_work), batched with the messages offered before it.
    /// Back-pressure makes the next `do_work` read the socket, since only a
    /// STATUS can open the window.
    pub fn offer(&mut self, msg: &[u8]) -> Result<(), OfferError> {
        let r = self.ep.machine.offer(msg);
        self.refused(r)
    }

    /// Queues a message that starts with its 8-byte send time (see
    /// [`Sender::offer_stamped`]); otherwise as [`offer`](Self::offer).
    pub fn offer_stamped(&mut self, stamped: &[u8]) -> Result<(), OfferError> {
        let r = self.ep.machine.offer_stamped(stamped);
        self.refused(r)
    }

    #[inline]
    fn refused(&mut self, r: Result<(), OfferError>) -> Result<(), OfferError> {
        if r == Err(OfferError::BackPressured) {
            self.control_at = 0;
        }
        r
    }

    /// One pass: sends what is ready (first, so a fresh message leaves at once),
    /// reads NAKs and STATUS (when due: see
    /// [`ChannelConfig::control_poll_interval`]), runs timers, sends what they
    /// produced. Returns the datagrams moved; never blocks.
    ///
    /// One clock read per pass (about 25 ns under KVM here), taken after the first
    /// send so that it is not on a fresh message's path: that send times its
    /// heartbeat from the previous pass's reading, so after an idle spell a
    /// heartbeat may follow the message at once.
    pub fn do_work(&mut self) -> usize {
        let mut work = self.ep.transmit(self.last_now);
        let now = self.ep.now();
        self.last_now = now;
        if now >= self.control_at {
            self.control_at = now + self.control_every;
            work += self.ep.receive(now);
        }
        self.ep.timers(now);
        work + self.ep.transmit(now)
    }

    /// The next sender event (receivers joining or timing out).
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.ep.machine.poll_event()
    }

    /// The protocol state machine, for its position and session id.
    pub fn sender(&self) -> &Sender {
        &self.ep.machine
    }

    /// Counters. Reads the socket's drop counter: one `getsockopt`, a
    /// syscall, so take them now and then, not per message.
    pub fn stats(&self) -> PublicationStats {
        PublicationStats {
            io: self.ep.io(),
            proto: self.ep.machine.stats(),
        }
    }

    /// The socket buffer sizes the kernel granted; see [`BufferGrant::warning`].
    pub fn buffer_grant(&self) -> BufferGrant {
        self.ep.grant
    }

    /// The address NAKs and STATUS come to (the source of this publication's DATA).
    pub fn local_addr(&self) -> Option<SocketAddrV4> {
        self.ep.socket.local_addr().ok()?.as_socket_ipv4()
    }
}

impl Waitable for Publication {
    fn fd(&self) -> BorrowedFd<'_> {
        self.ep.socket.as_fd()
    }
    fn time_to_timer(&self) -> Option<Duration> {
        self.ep.time_to_timer()
    }
}

/// Counters of a subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// The socket's.
    pub io: IoStats,
    /// The protocol's (`dropped` counts malformed, foreign and left-session datagrams).
    pub proto: ReceiverStats,
}

/// The subscribing end of a channel: a [`Receiver`] on the group's socket. See the
/// crate doc.
#[derive(Debug)]
pub struct Subscription {
    ep: Endpoint<Receiver>,
}

impl Subscription {
    /// Joins the group on the configured interface and builds the receiver;
    /// allocates every buffer now.
    pub fn open(channel: &ChannelConfig, proto: ReceiverConfig) -> Result<Self, NetError> {
        let mtu = proto.mtu;
        let receiver = Receiver::new(proto)?;
        let (socket, grant) = group_socket(channel.group, &channel.socket)?;
        Ok(Self {
            ep: Endpoint::new(receiver, socket, grant, channel, mtu)?,
        })
    }

    /// One pass: reads datagrams (first: they are the latency path), runs timers,
    /// sends NAKs and STATUS. Returns the datagrams moved; never blocks. Messages
    /// are then taken with [`poll_event`](Self::poll_event).
    pub fn do_work(&mut self) -> usize {
        let now = self.ep.now();
        let work = self.ep.receive(now);
        self.ep.timers(now);
        work + self.ep.transmit(now)
    }

    /// The next event: messages in order, losses, session changes (see
    /// [`Receiver::poll_event`]). A message is borrowed until the next call.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.ep.machine.poll_event()
    }

    /// The protocol state machine, for its position and id.
    pub fn receiver(&self) -> &Receiver {
        &self.ep.machine
    }

    /// Counters. Reads the socket's drop counter: one `getsockopt`, a
    /// syscall, so take them now and then, not per message.
    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            io: self.ep.io(),
            proto: self.ep.machine.stats(),
        }
    }

    /// The socket buffer sizes the kernel granted; see [`BufferGrant::warning`].
    pub fn buffer_grant(&self) -> BufferGrant {
        self.ep.grant
    }
}

impl Waitable for Subscription {
    fn fd(&self) -> BorrowedFd<'_> {
        self.ep.socket.as_fd()
    }
    fn time_to_timer(&self) -> Option<Duration> {
        self.ep.time_to_timer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use weft_proto::SplitMix;

    fn message(seq: u64, buf: &mut [u8]) -> usize {
        let len = 8 + (SplitMix::new(seq).next_u64() % 3000) as usize;
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..len].fill(seq as u8);
        len
    }

    /// `group` on a port no socket on loopback holds now (bound, then released).
    fn group_on_a_free_port(group: Ipv4Addr) -> SocketAddrV4 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        SocketAddrV4::new(group, port)
    }

    /// A subscription whose receive buffer overflows counts what the kernel
    /// dropped: every datagram sent is either received or counted as dropped.
    #[test]
    fn datagrams_the_kernel_drops_are_counted() {
        let group = group_on_a_free_port(Ipv4Addr::new(239, 77, 9, 2));
        let mut cfg = ChannelConfig::new(group);
        cfg.socket.rcvbuf = 8 << 10;
        let mut sub = Subscription::open(&cfg, ReceiverConfig::new(5, 1)).unwrap();
        let (tx, _) = unicast_socket(0, &SocketOptions::default()).unwrap();
        let sent = 2_000u64;
        for i in 0..sent {
            let datagram = [i as u8; 1000];
            tx.send_to(&datagram, &group.into()).unwrap();
        }
        let dropped = sub.stats().io.kernel_drops;
        assert!(dropped > 0, "nothing dropped into an 8 KiB buffer");
        while sub.do_work() > 0 {}
        let io = sub.stats().io;
        assert_eq!(io.datagrams_in + io.kernel_drops, sent, "{io:?}");
        assert_eq!(io.kernel_drops, dropped);
    }

    /// In one thread: a publication and two subscriptions on loopback, one of them
    /// with 5 % injected loss in bursts; every message arrives, in order, intact.
    #[test]
    fn messages_cross_loopback_in_order_through_injected_loss() {
        let group = group_on_a_free_port(Ipv4Addr::new(239, 77, 9, 1));
        let clean = ChannelConfig::new(group);
        let lossy = ChannelConfig {
            loss: Some(LossConfig {
                seed: 3,
                probability: 0.05,
                mean_burst: 2.0,
            }),
            ..ChannelConfig::new(group)
        };
        let mut subs = [
            Subscription::open(&clean, ReceiverConfig::new(5, 1)).unwrap(),
            Subscription::open(&lossy, ReceiverConfig::new(5, 2)).unwrap(),
        ];
        let mut publ = Publication::open(&clean, SenderConfig::new(5, 9)).unwrap();
        let total = 20_000u64;
        let (mut sent, mut next) = (0u64, [0u64; 2]);
        let mut buf = vec![0u8; 4096];
        let started = Instant::now();
        while next.iter().any(|&n| n < total) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "stalled at {next:?}"
            );
            while sent < total {
                let len = message(sent, &mut buf);
                if publ.offer(&buf[..len]).is_err() {
                    break;
                }
                sent += 1;
            }
            publ.do_work();
            for (s, next) in subs.iter_mut().zip(next.iter_mut()) {
                s.do_work();
                while let Some(e) = s.poll_event() {
                    match e {
                        Event::Message { message: m, .. } => {
                            let len = message(*next, &mut buf);
                            assert_eq!(m, &buf[..len], "message {next}");
                            *next += 1;
                        }
                        Event::NewSession { start_seq, .. } => assert_eq!(start_seq, 0),
                        other => panic!(
                            "{other:?} at message {next}; publication: {:?}",
                            publ.stats()
                        ),
                    }
                }
            }
        }
        let lossy = subs[1].stats();
        assert!(
            lossy.io.injected_drops > 0 && lossy.proto.naks_sent > 0,
            "{lossy:?}"
        );
        assert!(publ.stats().proto.repairs_sent > 0);
        assert_eq!(subs[0].stats().io.truncated, 0);
    }
}
