//! `Node`: one process's weft context. It owns the agents, opens channels by
//! URI, and hands out publications and subscriptions.

use std::net::SocketAddrV4;
use std::sync::Arc;

use weft_net::{ChannelConfig, Interface, SocketOptions};
use weft_proto::{ReceiverConfig, SenderConfig};
use weft_shm::{broadcast, mp_broadcast, mpsc, PeerState, Region, ShmError, ShmOptions};

use weft_counters::{CounterSet, CountersConfig, CountersError, CountersFile, Histogram};

use crate::agent::{AgentConfig, AgentStats, Agents, Task, TaskId, TaskStats};
use crate::channel::{
    PubInner, Publication, Sampling, ShmCounters, SubInner, Subscription, UserGuard, Users,
};
use crate::config::NodeConfig;
use crate::control::{self, ControlStats, ControlTask};
use crate::doorbell::ReaderBells;
use crate::udp::{RecvCounters, RecvTask, SendCounters, SendProgress, SendTask, SenderStatus};
use crate::uri::{ChannelUri, ShmUri, UdpUri};
use crate::Error;

/// A UDP channel this node sends on: where its own publications join (those
/// of other processes attach to the ring's file).
struct UdpSend {
    group: SocketAddrV4,
    stream: u32,
    joiner: mpsc::Joiner,
    users: Arc<Users>,
    /// How far its send task is from having delivered everything.
    progress: Arc<SendProgress>,
}

/// A UDP channel this node receives: where subscriptions join.
struct UdpRecv {
    group: SocketAddrV4,
    stream: u32,
    joiner: broadcast::Joiner,
    users: Arc<Users>,
    bells: Arc<ReaderBells>,
}

/// One process's weft context: configuration, agents, channels.
///
/// Opening a channel allocates and makes syscalls (files, sockets, threads);
/// publishing and receiving afterwards do neither on shared memory, and on UDP
/// only the agents make the socket calls.
pub struct Node {
    cfg: NodeConfig,
    shm: ShmOptions,
    counters: Arc<CountersFile>,
    agents: Agents,
    sends: Vec<UdpSend>,
    recvs: Vec<UdpRecv>,
    next_agent: usize,
    seed: u64,
    control: Arc<ControlStats>,
    control_ring: Option<String>,
    /// `close` (or drop) has run.
    closed: bool,
}

impl Drop for Node {
    /// A node dropped without [`Node::close`] closes the same way; what it
    /// could not deliver goes to its error log (and stderr).
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            eprintln!("weft: {e}");
        }
    }
}

/// What a node could not deliver when it flushed or closed: one entry per
/// UDP channel that was not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// The channels.
    pub channels: Vec<ChannelBacklog>,
}

/// One UDP channel's backlog; see [`Undelivered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBacklog {
    /// The group.
    pub group: SocketAddrV4,
    /// The stream.
    pub stream: u32,
    /// Messages accepted by publications but never sent (counted at close,
    /// when the node gave up; 0 from `flush`, which gives nothing up).
    pub messages_not_sent: u64,
    /// Datagrams queued but not yet sent once.
    pub datagrams_not_sent: u64,
    /// Datagrams sent that a receiver has not reported delivered.
    pub datagrams_not_acknowledged: u64,
    /// Receivers in flow control at the time.
    pub receivers: u64,
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in self.channels.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(
                f,
                "udp://{} stream {}: {} messages not sent, {} datagrams not sent, {} not acknowledged by {} receivers",
                c.group,
                c.stream,
                c.messages_not_sent,
                c.datagrams_not_sent,
                c.datagrams_not_acknowledged,
                c.receivers
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.cfg.dir)
            .field("agents", &self.agents)
            .field("udp_sends", &self.sends.len())
            .field("udp_receives", &self.recvs.len())
            .finish()
    }
}

impl Node {
    /// Checks `cfg`, creates the agents and starts their threads (none in
    /// `Invoker` mode: call [`do_work`](Self::do_work)).
    pub fn new(cfg: NodeConfig) -> Result<Self, Error> {
        cfg.validate().map_err(Error::Config)?;
        if cfg.lock_memory {
            use nix::sys::mman::{mlockall, MlockAllFlags};
            mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| {
                Error::Config(format!(
                    "lock_memory: mlockall failed ({e}); raise RLIMIT_MEMLOCK (ulimit -l) or grant CAP_IPC_LOCK"
                ))
            })?;
        }
        let agents = (0..cfg.agents)
            .map(|i| AgentConfig {
                name: format!("agent-{i}"),
                core: (!cfg.cores.is_empty()).then(|| cfg.cores[i % cfg.cores.len()]),
                idle: cfg.idle,
                slow_cycle: cfg.slow_cycle,
            })
            .collect();
        let shm = ShmOptions {
            prefault: cfg.prefault,
            mlock: cfg.mlock,
            liveness_timeout: cfg.liveness_timeout,
            ..ShmOptions::in_dir(&cfg.dir)
        };
        if cfg.handle_signals {
            weft_shm::terminate::install();
        }
        if cfg.counters > 0 {
            sweep_closed_counters(&shm, cfg.counters_linger);
        }
        let counters = if cfg.counters == 0 {
            CountersFile::private(64)
        } else {
            let ccfg = CountersConfig {
                shm: shm.clone(),
                records: cfg.counters,
                ..CountersConfig::default()
            };
            CountersFile::create(&ccfg, &cfg.name).map_err(|e| match e {
                CountersError::Shm(e) => Error::from(e),
                other => Error::Config(other.to_string()),
            })?
        };
        let mut agents = Agents::counted(agents, cfg.threading, cfg.idle, counters.clone())?;
        let control = Arc::new(ControlStats::default());
        // The control ring shares its counters file's number (`counters.PID.N`
        // → `control.PID.N`), so a tool that reads the counters finds the
        // ring. Nodes without a counters file count from 2^20.
        static NODES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 20);
        let control_ring = cfg.control_ring.then(|| {
            let n = counters
                .path()
                .and_then(|p| p.file_name()?.to_str()?.rsplit('.').next()?.parse().ok())
                .unwrap_or_else(|| NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            control::ring_name(std::process::id(), n)
        });
        if let Some(name) = &control_ring {
            let config = mpsc::MpscConfig::new(64 * 1024, 8);
            let ring = match mpsc::Consumer::create(&shm, name, &config) {
                // Left by an earlier process with this pid that crashed.
                Err(ShmError::AlreadyExists { .. }) => {
                    Region::reclaim(&shm, name)?;
                    mpsc::Consumer::create(&shm, name, &config)?
                }
                other => other?,
            };
            let task = ControlTask {
                ring,
                mover: agents.mover(),
                stats: control.clone(),
            };
            agents.add_task(0, Box::new(task))?;
        }
        agents.start()?;
        let seed = std::process::id() as u64 ^ weft_shm::liveness::now_ns().rotate_left(17);
        Ok(Self {
            cfg,
            shm,
            counters,
            agents,
            control,
            control_ring,
            sends: Vec::new(),
            recvs: Vec::new(),
            next_agent: 0,
            seed,
            closed: false,
        })
    }

    /// The node's counters file (agents' and tasks' counters; add your own
    /// with [`CountersFile::allocate`]). Its path is `None` when
    /// `NodeConfig::counters` is 0.
    pub fn counters(&self) -> &Arc<CountersFile> {
        &self.counters
    }

    /// An application counter in the node's counters file, labelled
    /// `label`: `weft-stat` shows it with the node's own, and exports it as
    /// `weft_app_total{name="LABEL"}` (or, `gauge`,
    /// `weft_app_value{name="LABEL"}`). One writer: `add` and `set` are a
    /// load and a store, no lock. Dropping it frees its record.
    ///
    /// Set-up, not a hot path: takes the file's lock. Fails with
    /// [`Error::Config`] for an empty label or when every record is in use
    /// (raise `counters`). A label is cut to 96 bytes.
    pub fn app_counter(&self, label: &str, gauge: bool) -> Result<weft_counters::Counter, Error> {
        if label.is_empty() {
            return Err(Error::Config("an application counter needs a label".into()));
        }
        let type_id = if gauge {
            weft_counters::types::APP_GAUGE
        } else {
            weft_counters::types::APP_COUNTER
        };
        self.counters
            .allocate(type_id, 0, label)
            .map_err(|e| Error::Config(format!("application counter {label:?}: {e}")))
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The agents: their counters, their tasks' counters, and task moves.
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    /// One duty cycle of every agent on this thread: the whole of the node's
    /// background work in `Invoker` mode. Returns the work done.
    pub fn do_work(&mut self) -> usize {
        self.agents.invoke()
    }

    /// Gives an application task to agent `agent` (it runs from that agent's
    /// next duty cycle, is accounted, and can be moved like the node's own).
    pub fn add_task(&self, agent: usize, task: Box<dyn Task>) -> Result<TaskId, Error> {
        Ok(self.agents.add_task(agent, task)?)
    }

    /// The name of this node's control ring in its directory (for
    /// [`control::request_move`]); `None` if `control_ring` is off.
    pub fn control_ring(&self) -> Option<&str> {
        self.control_ring.as_deref()
    }

    /// What the control ring's commands did.
    pub fn control_stats(&self) -> &ControlStats {
        &self.control
    }

    /// Counters of every agent.
    pub fn agent_stats(&self) -> Vec<AgentStats> {
        self.agents.agent_stats()
    }

    /// Counters of every task.
    pub fn task_stats(&self) -> Vec<TaskStats> {
        self.agents.task_stats()
    }

    /// Waits until every message this node's UDP publications accepted has
    /// been sent and every receiver of the channel has reported it delivered
    /// (by STATUS: within about one status interval, 10 ms, of the last
    /// datagram), or `timeout` passes. Shared-memory channels need no flush:
    /// a committed message is in the ring. Receivers that left flow control
    /// (silent for the liveness timeout) are not waited for. In `Invoker`
    /// mode it runs the node's work itself; otherwise it sleeps in steps of
    /// 100 µs while the agents work.
    ///
    /// On timeout: [`Error::Undelivered`], per channel, with the datagrams not
    /// yet sent and those not yet acknowledged. Nothing is given up: the
    /// channels go on, and a later flush may succeed.
    pub fn flush(&mut self, timeout: std::time::Duration) -> Result<(), Error> {
        let until = std::time::Instant::now() + timeout;
        // What has been accepted so far: each ring's claimed position now.
        let upto: Vec<u64> = self.sends.iter().map(|s| s.joiner.claimed()).collect();
        let done = |sends: &[UdpSend]| {
            sends
                .iter()
                .zip(&upto)
                .all(|(s, &upto)| s.progress.flushed(upto))
        };
        // Several consistent looks: the task publishes after each duty cycle.
        let mut settled = 0;
        loop {
            if self.cfg.threading == crate::ThreadingMode::Invoker {
                self.do_work();
            }
            if done(&self.sends) {
                settled += 1;
                if settled >= 3 {
                    return Ok(());
                }
            } else {
                settled = 0;
            }
            if std::time::Instant::now() >= until {
                return Err(Error::Undelivered(self.backlog(&upto, false)));
            }
            if self.cfg.threading != crate::ThreadingMode::Invoker {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// What each UDP channel still has to deliver; with `abandoned`, the
    /// messages its task counted in its ring when told to give up.
    fn backlog(&self, upto: &[u64], abandoned: bool) -> Undelivered {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let channels = self
            .sends
            .iter()
            .zip(upto)
            .filter(|(s, &upto)| !s.progress.flushed(upto))
            .map(|(s, _)| {
                let p = &s.progress;
                ChannelBacklog {
                    group: s.group,
                    stream: s.stream,
                    messages_not_sent: if abandoned && p.counted.load(Acquire) {
                        p.abandoned.load(Relaxed)
                    } else {
                        0
                    },
                    datagrams_not_sent: p.unsent.load(Relaxed),
                    datagrams_not_acknowledged: p.unacknowledged.load(Relaxed),
                    receivers: p.receivers.load(Relaxed),
                }
            })
            .collect();
        Undelivered { channels }
    }

    /// Flushes (for at most [`NodeConfig::close_timeout`]), then stops the
    /// agent threads. Also done on drop, which logs what it could not
    /// deliver. What could not be delivered in time is not silently
    /// dropped: it is [`Error::Undelivered`], with, per channel, the messages
    /// never sent and the datagrams sent but not acknowledged.
    pub fn close(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let flushed = self.flush(self.cfg.close_timeout);
        let flushed = match flushed {
            Ok(()) => Ok(()),
            Err(_) => {
                // Give up: each task counts what is left in its ring.
                for s in &self.sends {
                    s.progress
                        .abandon
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                let upto: Vec<u64> = self.sends.iter().map(|s| s.joiner.claimed()).collect();
                let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
                while std::time::Instant::now() < until
                    && !self.sends.iter().zip(&upto).all(|(s, &upto)| {
                        s.progress.flushed(upto)
                            || s.progress
                                .counted
                                .load(std::sync::atomic::Ordering::Acquire)
                    })
                {
                    if self.cfg.threading == crate::ThreadingMode::Invoker {
                        self.do_work();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(100));
                    }
                }
                let report = self.backlog(&upto, true);
                self.counters
                    .log_error("undelivered", &format!("node closed: {report}"), 1);
                Err(Error::Undelivered(report))
            }
        };
        let stopped = self.agents.stop();
        // Final: the file stays, marked closed, for the tools' linger time.
        self.counters.close_lingering();
        stopped?;
        flushed
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.seed
    }

    fn pick_agent(&mut self) -> usize {
        let a = self.next_agent % self.agents.len();
        self.next_agent += 1;
        a
    }

    /// A publication on `uri` (see [`crate::uri`]), stream `stream`.
    ///
    /// Shared memory: creates the channel's ring file (`NAME.STREAM` in the
    /// node's directory); a file left by a dead publisher is removed first, one
    /// of a live publisher is an error naming its pid. UDP: the first
    /// publication of a channel opens its socket and gives its send task to an
    /// agent; later ones share it.
    pub fn publication(&mut self, uri: &str, stream: u32) -> Result<Publication, Error> {
        let parsed: ChannelUri = uri.parse()?;
        let mut inner = match &parsed {
            ChannelUri::Shm(s) => self.shm_publication(s, stream)?,
            ChannelUri::Udp(u) => self.udp_publication(uri, u, stream)?,
        };
        if let PubInner::Shm { ring, counters, .. } = &mut inner {
            // The ring stores its position once a frame anyway: in the
            // position counter, that counter needs no store of its own
            // (docs/shm.md, finding 40). Here, not in `shm_publication`:
            // an inbound gateway keeps the ring and drops these counters.
            // `PubInner::Shm` drops its ring before its counters.
            ring.keep_position_in(counters.position.word());
        }
        Ok(Publication {
            uri: parsed,
            stream,
            inner,
            sampling: Sampling::new(self.cfg.latency_sample_every),
            refusals: 0,
        })
    }

    /// A publication of a `publishers=many` channel: creates its ring, or
    /// joins the one other processes (live or not) left.
    fn shm_many_publication(
        &mut self,
        s: &ShmUri,
        stream: u32,
        name: &str,
    ) -> Result<PubInner, Error> {
        let config = mp_broadcast::MpBroadcastConfig::new(
            s.capacity.unwrap_or(self.cfg.shm_capacity),
            self.cfg.max_publications,
            self.cfg.shm_max_subscribers,
        );
        let mut tries = 0;
        let ring = loop {
            tries += 1;
            break match mp_broadcast::Ring::create(&self.shm, name, &config) {
                Err(ShmError::AlreadyExists { .. }) => {
                    match attach_settled(|| mp_broadcast::Ring::attach(&self.shm, name)) {
                        // Its last publisher left and removed it in between:
                        // create it anew.
                        Err(ShmError::NotFound { .. }) if tries < 1000 => continue,
                        Err(ShmError::WrongKind { .. }) => {
                            // A one-publisher ring: take it over only if its
                            // publisher is dead.
                            match Region::reclaim(&self.shm, name) {
                            Err(ShmError::OwnerAlive { pid, .. }) => {
                                return Err(Error::Config(format!(
                                    "shm:{} stream {stream} is published by pid {pid} alone (publishers=one): \
                                     every publisher of a channel needs the same publishers= setting",
                                    s.name
                                )))
                            }
                            other => other?,
                        }
                            mp_broadcast::Ring::create(&self.shm, name, &config)?
                        }
                        other => other?,
                    }
                }
                other => other?,
            };
        };
        let ring =
            ring.with_slow_consumer_timeout(s.slow_timeout.or(self.cfg.slow_consumer_timeout));
        let producer = ring.producer().ok_or_else(|| {
            Error::Config(format!(
                "shm:{} stream {stream}: all {} publisher slots are in use (max_publications)",
                s.name, self.cfg.max_publications
            ))
        })?;
        let counters = self.shm_publication_counters(s, stream, producer.capacity());
        Ok(PubInner::ShmMany {
            ring: producer,
            connected: false,
            counters,
        })
    }

    /// The counters of a shared-memory publication of `s`, stream `stream`,
    /// on a ring of `capacity` bytes.
    fn shm_publication_counters(
        &self,
        s: &ShmUri,
        stream: u32,
        capacity: usize,
    ) -> Box<ShmCounters> {
        let prefix = counter_prefix(ROLE_PUBLICATION, &s.address(), stream);
        let set = CounterSet::new(&self.counters, stream as u64, prefix);
        Box::new(ShmCounters::publication(&set, &self.counters, capacity))
    }

    /// A subscription to `uri`, stream `stream`. Shared memory: attaches when
    /// the publisher's ring exists (now or at a later poll). UDP: the first
    /// subscription of a channel joins the group and gives its receive task to
    /// an agent; later ones read the same local ring.
    pub fn subscription(&mut self, uri: &str, stream: u32) -> Result<Subscription, Error> {
        self.subscription_as(uri, stream, ROLE_SUBSCRIPTION)
    }

    /// A subscription whose counters say it is a `role`'s.
    fn subscription_as(
        &mut self,
        uri: &str,
        stream: u32,
        role: &str,
    ) -> Result<Subscription, Error> {
        let parsed: ChannelUri = uri.parse()?;
        let prefix = counter_prefix(role, &parsed.address(), stream);
        let inner = match &parsed {
            ChannelUri::Shm(s) => SubInner::Shm {
                counters: Box::new(ShmCounters::subscription(&CounterSet::new(
                    &self.counters,
                    stream as u64,
                    prefix.clone(),
                ))),
                latency: self.latency_histogram(&prefix, stream),
                ring: None,
                session_id: 0,
                attach_error: None,
                file: self.counters.clone(),
                name: shm_name(s, stream),
                opts: self.shm.clone(),
                liveness_ns: self.cfg.liveness_timeout.as_nanos() as u64,
                empty_polls: 0,
                last_probe: 0,
            },
            ChannelUri::Udp(u) => self.udp_subscription(uri, u, stream, &prefix)?,
        };
        Ok(Subscription {
            uri: parsed,
            stream,
            inner,
        })
    }

    fn shm_publication(&mut self, s: &ShmUri, stream: u32) -> Result<PubInner, Error> {
        let name = shm_name(s, stream);
        if s.many_publishers {
            return self.shm_many_publication(s, stream, &name);
        }
        let config = broadcast::BroadcastConfig {
            slow_consumer_timeout: s.slow_timeout.or(self.cfg.slow_consumer_timeout),
            ..broadcast::BroadcastConfig::new(
                s.capacity.unwrap_or(self.cfg.shm_capacity),
                self.cfg.shm_max_subscribers,
                broadcast::Mode::Reliable,
            )
        };
        let ring = match broadcast::Producer::create(&self.shm, &name, &config) {
            Err(ShmError::AlreadyExists { .. }) => {
                if attach_settled(|| mp_broadcast::Ring::attach(&self.shm, &name))
                    .is_ok_and(|r| r.live_producers() > 0)
                {
                    return Err(Error::Config(format!(
                        "shm:{} stream {stream} is published by several processes: open it with ?publishers=many",
                        s.name
                    )));
                }
                // A crashed publisher's file: reclaim refuses a live one.
                Region::reclaim(&self.shm, &name)?;
                broadcast::Producer::create(&self.shm, &name, &config)?
            }
            other => other?,
        };
        let counters = self.shm_publication_counters(s, stream, ring.capacity());
        Ok(PubInner::Shm {
            ring,
            connected: false,
            counters,
        })
    }

    fn socket_options(&self, u: &UdpUri) -> SocketOptions {
        let d = &self.cfg.udp;
        SocketOptions {
            interface: u.interface.clone().unwrap_or_else(|| {
                d.interface
                    .parse::<Interface>()
                    .unwrap_or_else(|e| match e {})
            }),
            ttl: u.ttl.unwrap_or(d.ttl) as u32,
            loopback: u.loopback.unwrap_or(d.loopback),
            rcvbuf: d.rcvbuf,
            sndbuf: d.sndbuf,
        }
    }

    fn udp_publication(&mut self, uri: &str, u: &UdpUri, stream: u32) -> Result<PubInner, Error> {
        let slots_full = || {
            Error::Config(format!(
                "{uri} stream {stream}: all {} publication slots are in use (max_publications of the node that sends it)",
                self.cfg.max_publications
            ))
        };
        self.sends.retain(|s| !s.users.is_closed());
        let existing = self
            .sends
            .iter()
            .find(|s| s.group == u.group && s.stream == stream);
        if let Some(s) = existing {
            if let Some(user) = s.users.join() {
                let tx = s.joiner.producer().ok_or_else(slots_full)?;
                return Ok(PubInner::Udp {
                    tx,
                    waker: Some(self.agents.waker()),
                    _user: Some(user),
                    liveness_ns: self.liveness_ns(),
                });
            }
            // Closed just now by its task: open a new one below.
            self.sends.retain(|s| !s.users.is_closed());
        }
        // Another process on this host may send the channel already: then
        // this publication writes into that sender's ring (one session on the
        // wire, whoever publishes). Otherwise this node becomes its sender.
        let name = udp_send_name(u, stream);
        let config = mpsc::MpscConfig::new(self.cfg.local_ring, self.cfg.max_publications);
        let mut rx = None;
        for _ in 0..1000 {
            match mpsc::Producer::attach(&self.shm, &name) {
                Ok(tx) => {
                    if tx.consumer_state(self.liveness_ns()) == PeerState::Live {
                        return Ok(PubInner::Udp {
                            tx,
                            waker: None,
                            _user: None,
                            liveness_ns: self.liveness_ns(),
                        });
                    }
                    // Its sender died: replace the file. If another process
                    // did so first (its creator is alive), attach to that one.
                    drop(tx);
                    match Region::reclaim(&self.shm, &name) {
                        Ok(()) | Err(ShmError::NotFound { .. }) => {}
                        Err(ShmError::OwnerAlive { .. }) => {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(ShmError::NotFound { .. }) => {}
                // Its creator is still setting it up (a file not yet sized
                // reads as truncated).
                Err(ShmError::NotInitialized { .. } | ShmError::Truncated { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Err(ShmError::RoleTaken { .. }) => return Err(slots_full()),
                Err(e) => return Err(e.into()),
            }
            match mpsc::Consumer::create(&self.shm, &name, &config) {
                Ok(r) => {
                    rx = Some(r);
                    break;
                }
                // Another process created it in between: attach to it.
                Err(ShmError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let rx = rx.ok_or_else(|| {
            Error::Config(format!(
                "{uri} stream {stream}: the sender's ring {name} stayed unusable for a second (a sender that closed without removing it?)"
            ))
        })?;
        match self.udp_sender(u, stream, rx, name.clone()) {
            Ok(inner) => Ok(inner),
            Err(e) => {
                let _ = Region::remove(&self.shm, &name);
                Err(e)
            }
        }
    }

    /// Starts the send task of a UDP channel that drains `rx` (the ring file
    /// `name`), and returns the first publication on it.
    fn udp_sender(
        &mut self,
        u: &UdpUri,
        stream: u32,
        rx: mpsc::Consumer,
        name: String,
    ) -> Result<PubInner, Error> {
        let mut proto = SenderConfig::new(stream, self.next_seed());
        proto.mtu = u.mtu.unwrap_or(self.cfg.udp.mtu);
        proto.auth = auth_key(u)?;
        proto.receiver_timeout_ns = self.liveness_ns();
        proto.flow = u.flow.unwrap_or(self.cfg.udp.flow);
        let channel = ChannelConfig {
            group: u.group,
            socket: self.socket_options(u),
            control_port: u.control_port.unwrap_or(0),
            loss: None,
            control_poll_interval: weft_net::CONTROL_POLL_INTERVAL,
        };
        let proto_max = proto.max_message;
        let net = weft_net::Publication::open(&channel, proto)?;
        let max = rx.max_payload().min(proto_max);
        rx.set_status(SenderStatus::new(false, max).0);
        let joiner = rx.joiner();
        let tx = joiner
            .producer()
            .ok_or_else(|| Error::Config("no publication slot".into()))?;
        let (users, user) = Users::first();
        let counters = SendCounters::new(
            &self.counters,
            stream,
            &counter_prefix(ROLE_PUBLICATION, &u.address(), stream),
        );
        let progress = Arc::new(SendProgress::default());
        let task = SendTask {
            counters,
            name: format!("udp-send udp://{} stream {stream}", u.group),
            rx,
            file: Some((self.shm.clone(), name)),
            net,
            pending: Vec::with_capacity(max),
            has_pending: false,
            pending_stamped: false,
            connected: false,
            max,
            users: users.clone(),
            linger_ns: self.liveness_ns() / 4,
            linger_until: 0,
            done: false,
            progress: progress.clone(),
        };
        let agent = self.pick_agent();
        self.agents.add_task(agent, Box::new(task))?;
        self.sends.push(UdpSend {
            group: u.group,
            stream,
            joiner,
            users,
            progress,
        });
        Ok(PubInner::Udp {
            tx,
            waker: Some(self.agents.waker()),
            _user: Some(user),
            liveness_ns: self.liveness_ns(),
        })
    }

    /// Publications of other processes on this host that write into the
    /// UDP senders this node runs. This node's senders serve them only while
    /// it is open: a process that owns a shared channel should wait for this
    /// to reach 0 before it closes its node. Probes each holder's process.
    pub fn publications_elsewhere(&self) -> usize {
        self.sends
            .iter()
            .filter(|s| !s.users.is_closed())
            .map(|s| s.joiner.producers_elsewhere())
            .sum()
    }

    fn liveness_ns(&self) -> u64 {
        self.cfg.liveness_timeout.as_nanos() as u64
    }

    fn udp_subscription(
        &mut self,
        uri: &str,
        u: &UdpUri,
        stream: u32,
        prefix: &str,
    ) -> Result<SubInner, Error> {
        let full = || {
            Error::Config(format!(
                "{uri} stream {stream}: all subscription slots of the local ring are in use (shm_max_subscribers)"
            ))
        };
        self.recvs.retain(|r| !r.users.is_closed());
        if let Some(r) = self
            .recvs
            .iter()
            .find(|r| r.group == u.group && r.stream == stream)
        {
            if let Some(user) = r.users.join() {
                return Ok(SubInner::Udp {
                    ring: r.joiner.join().ok_or_else(full)?,
                    bell: r.bells.take(),
                    bells: r.bells.clone(),
                    _user: user,
                    latency: self.latency_histogram(prefix, stream),
                });
            }
            self.recvs.retain(|r| !r.users.is_closed());
        }
        let out = broadcast::channel(broadcast::BroadcastConfig {
            eviction_timeout: self.cfg.liveness_timeout,
            slow_consumer_timeout: self.cfg.slow_consumer_timeout,
            ..broadcast::BroadcastConfig::new(
                self.cfg.local_ring,
                self.cfg.shm_max_subscribers,
                broadcast::Mode::Reliable,
            )
        })?;
        let joiner = out.joiner();
        let consumer = joiner.join().ok_or_else(full)?;
        let bells = Arc::new(ReaderBells::new(self.cfg.shm_max_subscribers));
        let task_name = format!("udp-recv udp://{} stream {stream}", u.group);
        let recv = RecvRole {
            counters: prefix.to_owned(),
            task: task_name,
            republish: None,
        };
        let user = self.spawn_recv_task(u, stream, out, recv, Some(bells.clone()))?;
        self.recvs.push(UdpRecv {
            group: u.group,
            stream,
            joiner,
            users: user.users(),
            bells: bells.clone(),
        });
        Ok(SubInner::Udp {
            ring: consumer,
            bell: bells.take(),
            bells,
            _user: user,
            latency: self.latency_histogram(prefix, stream),
        })
    }

    /// A subscription's one-way latency histogram in the counters file,
    /// labelled with its counters' prefix ([`counter_prefix`]).
    fn latency_histogram(&self, prefix: &str, stream: u32) -> Histogram {
        self.counters.histogram(
            weft_counters::types::ONE_WAY_LATENCY_NS,
            stream as u64,
            &format!("{prefix} one-way latency"),
        )
    }

    /// Joins `u`'s group and gives an agent the task that republishes it into
    /// `out`; returns the first user of the task (it ends when all are gone).
    fn spawn_recv_task(
        &mut self,
        u: &UdpUri,
        stream: u32,
        out: broadcast::Producer,
        role: RecvRole,
        bells: Option<Arc<ReaderBells>>,
    ) -> Result<UserGuard, Error> {
        let mut proto = ReceiverConfig::new(stream, self.next_seed());
        proto.mtu = u.mtu.unwrap_or(self.cfg.udp.mtu);
        proto.auth = auth_key(u)?;
        proto.publisher_timeout_ns = self.cfg.liveness_timeout.as_nanos() as u64;
        let channel = ChannelConfig {
            group: u.group,
            socket: self.socket_options(u),
            control_port: 0,
            loss: self.cfg.udp.loss,
            control_poll_interval: weft_net::CONTROL_POLL_INTERVAL,
        };
        let max = out.max_payload().min(proto.max_message);
        let net = weft_net::Subscription::open(&channel, proto)?;
        let (users, user) = Users::first();
        let mut counters = RecvCounters::new(&self.counters, stream, &role.counters, &u.address());
        if let Some(prefix) = &role.republish {
            counters.republish = Some(crate::udp::RepublishCounters::new(
                &CounterSet::new(&self.counters, stream as u64, prefix.clone()),
                out.capacity(),
            ));
        }
        let task = RecvTask {
            counters,
            name: role.task,
            net,
            out,
            pending: Vec::with_capacity(max),
            pending_type: None,
            users,
            done: false,
            bells,
        };
        let agent = self.pick_agent();
        self.agents.add_task(agent, Box::new(task))?;
        Ok(user)
    }

    /// Republishes UDP channel `udp` (stream `stream`) into the shared-memory
    /// channel `shm` (same stream), so any number of local processes subscribe
    /// to it at the cost of one network receive. Messages, losses, session
    /// changes and the publisher's departure all pass through, in order. The
    /// ring is reliable: the slowest live local subscriber holds the stream back
    /// (through UDP flow control); one stuck past the liveness timeout is evicted.
    pub fn gateway_in(&mut self, udp: &str, shm: &str, stream: u32) -> Result<Gateway, Error> {
        let (ChannelUri::Udp(u), ChannelUri::Shm(s)) = (udp.parse()?, shm.parse()?) else {
            return Err(Error::Config(format!(
                "gateway_in({udp:?}, {shm:?}): expected a udp:// URI, then a shm: URI"
            )));
        };
        if s.many_publishers {
            return Err(Error::Config(format!(
                "gateway_in({udp:?}, {shm:?}): the gateway is its ring's only publisher: drop ?publishers=many"
            )));
        }
        let PubInner::Shm { ring, .. } = self.shm_publication(&s, stream)? else {
            unreachable!("a one-publisher shm: URI makes a one-publisher ring")
        };
        // Its readers are other processes: they cannot be rung (they poll).
        let recv = RecvRole {
            counters: counter_prefix(ROLE_GATEWAY_IN, &u.address(), stream),
            task: format!(
                "gateway-in udp://{} stream {stream} -> shm:{}",
                u.group, s.name
            ),
            republish: Some(counter_prefix(ROLE_GATEWAY_IN, &s.address(), stream)),
        };
        let user = self.spawn_recv_task(&u, stream, ring, recv, None)?;
        Ok(Gateway { _user: user })
    }

    /// Publishes what local processes publish on shared-memory channel `shm`
    /// (stream `stream`) to UDP channel `udp` (same stream). Attaches when the
    /// local publisher's ring exists, and again after a restart. Only messages
    /// go on: the far side has its own session, loss and liveness events.
    pub fn gateway_out(&mut self, shm: &str, udp: &str, stream: u32) -> Result<Gateway, Error> {
        let (ChannelUri::Shm(s), ChannelUri::Udp(u)) = (shm.parse()?, udp.parse()?) else {
            return Err(Error::Config(format!(
                "gateway_out({shm:?}, {udp:?}): expected a shm: URI, then a udp:// URI"
            )));
        };
        let sub = self.subscription_as(shm, stream, ROLE_GATEWAY_OUT)?;
        let publ = self.publication(udp, stream)?;
        let (users, user) = Users::first();
        let task = crate::udp::ForwardTask {
            name: format!(
                "gateway-out shm:{} stream {stream} -> udp://{}",
                s.name, u.group
            ),
            pending: Vec::with_capacity(publ.max_message()),
            has_pending: false,
            sub,
            publ,
            users,
            done: false,
        };
        let agent = self.pick_agent();
        self.agents.add_task(agent, Box::new(task))?;
        Ok(Gateway { _user: user })
    }
}

/// A running gateway; dropping it stops it (its agent drops the task).
#[derive(Debug)]
#[must_use = "dropping a Gateway stops it"]
pub struct Gateway {
    _user: UserGuard,
}

/// Removes the counters files in `shm`'s directory that were closed cleanly
/// more than `linger` ago (by any process: a closed file is written by no
/// one). Errors are ignored: another node may be sweeping too.
fn sweep_closed_counters(shm: &ShmOptions, linger: std::time::Duration) {
    for (path, reader) in weft_counters::scan(&shm.dir) {
        let expired = reader
            .ok()
            .and_then(|r| r.closed_age())
            .is_some_and(|age| age > linger);
        if let (true, Some(name)) = (expired, path.file_name().and_then(|n| n.to_str())) {
            let _ = Region::remove(shm, name);
        }
    }
}

/// Attaches with `attach`, waiting up to a second while the ring's file is
/// one another process is creating right now (not yet sized, or not yet
/// initialized); any other outcome is returned at once.
fn attach_settled<T>(attach: impl Fn() -> Result<T, ShmError>) -> Result<T, ShmError> {
    for _ in 0..1000 {
        match attach() {
            Err(ShmError::NotInitialized { .. } | ShmError::Truncated { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return other,
        }
    }
    attach()
}

/// What a channel end's counters say it is (the `role` label): an
/// application's publication or subscription, or a gateway's end.
const ROLE_PUBLICATION: &str = "publication";
/// See [`ROLE_PUBLICATION`].
const ROLE_SUBSCRIPTION: &str = "subscription";
/// See [`ROLE_PUBLICATION`]: both ends of `gateway_in` (its UDP receive and
/// its shared-memory republish).
const ROLE_GATEWAY_IN: &str = "gateway-in";
/// See [`ROLE_PUBLICATION`]: the shared-memory subscription of `gateway_out`
/// (its UDP send is the channel's sender, a publication).
const ROLE_GATEWAY_OUT: &str = "gateway-out";

/// The label prefix of a channel end's counters, "ROLE ADDRESS stream S":
/// `weft-stat` splits it into the `role`, `channel` and `stream` labels, so
/// the two ends of a channel join on `channel` and `stream`.
fn counter_prefix(role: &str, address: &str, stream: u32) -> String {
    format!("{role} {address} stream {stream}")
}

/// How a receive task labels itself: its counters' prefix, its task name,
/// and (a gateway's) the prefix of the counters of its republish into
/// shared memory.
struct RecvRole {
    counters: String,
    task: String,
    republish: Option<String>,
}

/// The ring file of a shared-memory channel's stream.
fn shm_name(s: &ShmUri, stream: u32) -> String {
    format!("{}.{stream}", s.name)
}

/// The file of the ring that a UDP channel's sender drains, in the node's
/// directory: every process on the host that publishes the channel writes into it.
fn udp_send_name(u: &UdpUri, stream: u32) -> String {
    format!("udp-send.{}-{}.{stream}", u.group.ip(), u.group.port())
}

/// The channel's authentication key, from its `key_file=` (hex digits in a
/// file that only its owner may read); `None` without one.
fn auth_key(u: &UdpUri) -> Result<Option<weft_proto::auth::AuthKey>, Error> {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = &u.key_file else {
        return Ok(None);
    };
    let bad = |what: String| Error::Config(format!("{}: key file {path:?}: {what}", u.group));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o} lets other users read or change it: chmod 600 it",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > 4096 {
        return Err(bad(format!("{} bytes: expected a hex key", meta.len())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    weft_proto::auth::AuthKey::from_hex(&text)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}
