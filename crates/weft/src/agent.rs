//! Agents: threads that run [`Task`]s in duty cycles, with an idle strategy, on
//! a pinned core, measuring how much of their time was work.
//!
//! A duty cycle calls `do_work(now)` once on every task the agent hosts, in
//! order, and passes the total work count to the agent's [`Idler`]. Three
//! threading modes ([`ThreadingMode`]): a thread per agent, one thread for all
//! agents, or none (the application calls [`Agents::invoke`]).
//!
//! **Moving a task** ([`Agents::move_task`]) is lossless by construction: the
//! source agent takes the task out of its list between two duty cycles (a safe
//! point, never inside `do_work`), and hands the same object, with all its
//! state, to the target agent, which adds it between two of its cycles. The
//! task is never run by two agents at once and never skipped: it simply does
//! not run while in transit (one duty cycle of each agent at most).
//!
//! **Cost**: a duty cycle reads the monotonic clock once per task plus once
//! (about 25–30 ns each here) and does a handful of relaxed stores to counters
//! only this agent writes; it takes no lock and allocates nothing. Commands
//! (add, move) go through a mutex-guarded inbox that the agent looks at only
//! when an atomic flag says it holds something.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::doorbell::Doorbell;
use crate::idle::{IdleStep, IdleStrategy, Idler};
// Agent and task counters live in the node's counters file (so `weft-stat`
// reads them live); each has one writer: a plain load and store.
use weft_counters::{types, Counter, CountersFile, Histogram};

/// A unit of work an agent runs: receiving a channel, sending a stream,
/// feeding the gateway, housekeeping.
pub trait Task: Send {
    /// A short label for accounting and tools (`udp-recv 239.1.2.3:40456/7`).
    fn name(&self) -> &str;

    /// Does a bounded amount of work and returns how much (messages or
    /// datagrams moved; 0 means it found nothing to do). `now_ns` is monotonic
    /// nanoseconds since the agents started. Must not block.
    fn do_work(&mut self, now_ns: u64) -> usize;

    /// A file descriptor whose readability means work for this task (a
    /// socket): a parked agent waits in `ppoll` on it, so a datagram wakes it.
    /// Default: none (the task is looked at when the park ends).
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// How soon the task has a timer due: a parked agent wakes by then.
    /// Default: no timer.
    fn timer_in(&self) -> Option<Duration> {
        None
    }

    /// Whether the task has finished for good: its agent drops it after the
    /// current duty cycle (on the agent's thread) and its stats show no agent.
    /// Default: never.
    fn is_done(&self) -> bool {
        false
    }

    /// Whether the task runs ahead of the others in its agent's duty cycle.
    /// A task that moves fresh messages out (a UDP send task) says yes: its
    /// message then leaves before the other tasks' socket reads (each a
    /// syscall) rather than after them. Among such tasks, and among the rest,
    /// the order is the order of arrival. Default: no.
    fn runs_first(&self) -> bool {
        false
    }
}

/// A task taken out of the agents, with its id ([`Agents::take_tasks`]).
pub type TakenTask = (TaskId, Box<dyn Task>);

/// Identifies a task for its whole life, across moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// How agents get threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadingMode {
    /// One thread per agent, pinned to the agent's core if it has one.
    #[default]
    Dedicated,
    /// One thread runs every agent's duty cycle in turn (pinned to the first
    /// agent's core, if any), idling with the shared strategy when none had work.
    Shared,
    /// No threads: the application calls [`Agents::invoke`] from its own loop.
    Invoker,
}

impl std::str::FromStr for ThreadingMode {
    type Err = String;

    /// `dedicated`, `shared` or `invoker`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dedicated" => Ok(Self::Dedicated),
            "shared" => Ok(Self::Shared),
            "invoker" => Ok(Self::Invoker),
            _ => Err(format!(
                "threading mode {s:?}: expected dedicated, shared or invoker"
            )),
        }
    }
}

/// One agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// A label for tools (`net-rx`, `gateway`).
    pub name: String,
    /// The CPU to pin the agent's thread to (`Dedicated` mode); `None`: not pinned.
    pub core: Option<usize>,
    /// What to do after a cycle with no work (`Dedicated` mode).
    pub idle: IdleStrategy,
    /// A duty cycle longer than this counts as slow (see [`AgentStats::slow_cycles`]).
    /// Default 100 µs.
    pub slow_cycle: Duration,
}

impl AgentConfig {
    /// An unpinned agent with [`IdleStrategy::backoff`] and a 100 µs slow-cycle threshold.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            core: None,
            idle: IdleStrategy::backoff(),
            slow_cycle: Duration::from_micros(100),
        }
    }
}

/// Errors of agent setup and control.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No agent has this index.
    #[error("no agent {0} (there are {1})")]
    NoSuchAgent(usize, usize),
    /// No task has this id (it never existed, or it was taken out).
    #[error("no {0}")]
    NoSuchTask(TaskId),
    /// The configured core does not exist on this machine.
    #[error("agent {agent:?}: core {core} does not exist (this machine has cores {available:?})")]
    NoSuchCore {
        /// The agent's name.
        agent: String,
        /// The core asked for.
        core: usize,
        /// The cores there are.
        available: Vec<usize>,
    },
    /// The kernel refused to pin the thread (a cpuset or affinity mask excludes the core).
    #[error("agent {agent:?}: could not pin its thread to core {core} (check the process's CPU affinity and cpuset)")]
    Pin {
        /// The agent's name.
        agent: String,
        /// The core asked for.
        core: usize,
    },
    /// The call needs stopped agents (or started ones) and they are not.
    #[error("agents are {0}")]
    WrongState(&'static str),
    /// A thread could not be spawned.
    #[error("spawning the thread of agent {agent:?}: {source}")]
    Spawn {
        /// The agent's name.
        agent: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An agent's thread panicked (a task's `do_work` panicked); its tasks are lost.
    #[error("the thread of agent {0:?} panicked")]
    Panicked(String),
    /// The task is between agents (just added, or an earlier move is not done);
    /// try again once that has finished.
    #[error("{0} is between agents (just added, or an earlier move is not done); try again")]
    InTransit(TaskId),
    /// A move did not finish in time (the agents may be stopped, or a task's
    /// `do_work` never returns).
    #[error("moving {0} did not finish within {1:?}")]
    MoveTimeout(TaskId, Duration),
}

/// Counters of one agent, as read by [`Agents::agent_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// The agent's name.
    pub name: String,
    /// Its pinned core.
    pub core: Option<usize>,
    /// Duty cycles run.
    pub duty_cycles: u64,
    /// Nanoseconds in duty cycles that did work.
    pub busy_ns: u64,
    /// Nanoseconds in duty cycles that found nothing, plus in the idle strategy.
    pub idle_ns: u64,
    /// The longest duty cycle, ns.
    pub max_cycle_ns: u64,
    /// Duty cycles longer than the agent's `slow_cycle`.
    pub slow_cycles: u64,
    /// Tasks hosted now.
    pub tasks: usize,
}

impl AgentStats {
    /// `busy / (busy + idle)`, 0 to 1: how much of the agent's thread was work
    /// (a busy-spinning thread shows 100 % in `top` whatever this says).
    pub fn utilization(&self) -> f64 {
        let total = self.busy_ns + self.idle_ns;
        if total == 0 {
            0.0
        } else {
            self.busy_ns as f64 / total as f64
        }
    }
}

/// Counters of one task, as read by [`Agents::task_stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStats {
    /// Its id.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// The agent hosting it; `None` while it moves, and once finished.
    pub agent: Option<usize>,
    /// It said it was done and was dropped.
    pub finished: bool,
    /// Calls of `do_work`.
    pub calls: u64,
    /// Nanoseconds in `do_work` calls that did work.
    pub busy_ns: u64,
    /// Nanoseconds in all `do_work` calls (including ones that found nothing).
    pub total_ns: u64,
    /// Sum of the work counts it returned (messages or datagrams).
    pub work: u64,
}

/// Where a move stands.
#[derive(Debug)]
pub struct MoveTicket {
    id: TaskId,
    state: Arc<AtomicU8>,
}

const MOVE_PENDING: u8 = 0;
const MOVE_DONE: u8 = 1;
const MOVE_FAILED: u8 = 2;

impl MoveTicket {
    /// Whether the target agent has adopted the task (it runs there from its next cycle).
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == MOVE_DONE
    }

    /// Waits (sleeping 20 µs between looks) until the move is done; fails with
    /// [`AgentError::InTransit`] if the source agent no longer had the task (a
    /// concurrent move took it). In
    /// `Invoker` mode call [`Agents::invoke`] instead: nothing else runs the agents.
    pub fn wait(&self, timeout: Duration) -> Result<(), AgentError> {
        let start = Instant::now();
        loop {
            match self.state.load(Ordering::Acquire) {
                MOVE_DONE => return Ok(()),
                MOVE_FAILED => return Err(AgentError::InTransit(self.id)),
                _ if start.elapsed() >= timeout => {
                    return Err(AgentError::MoveTimeout(self.id, timeout))
                }
                _ => std::thread::sleep(Duration::from_micros(20)),
            }
        }
    }
}

/// How often agent 0 stores the counters file's heartbeat, in ns of its clock.
const HEARTBEAT_NS: u64 = 100_000_000;

const IN_TRANSIT: usize = usize::MAX;
const FINISHED: usize = usize::MAX - 1;

#[derive(Debug)]
struct TaskCounters {
    name: String,
    agent: AtomicUsize,
    calls: Counter,
    busy_ns: Counter,
    total_ns: Counter,
    work: Counter,
    /// The agent it runs on, for tools (`agent` is the in-process truth).
    on_agent: Counter,
}

struct Hosted {
    id: TaskId,
    task: Box<dyn Task>,
    counters: Arc<TaskCounters>,
}

enum Command {
    Adopt(Hosted, Option<Arc<AtomicU8>>),
    Release {
        id: TaskId,
        to: usize,
        ticket: Arc<AtomicU8>,
    },
}

/// The part of an agent other threads see.
#[derive(Debug)]
struct Shared {
    name: String,
    core: Option<usize>,
    /// Set while the agent waits in `ppoll`; a publisher that sees it rings `bell`.
    parked: AtomicBool,
    bell: Doorbell,
    pending: AtomicBool,
    inbox: Mutex<Vec<Command>>,
    duty_cycles: Counter,
    busy_ns: Counter,
    idle_ns: Counter,
    max_cycle_ns: Counter,
    slow_cycles: Counter,
    /// The thread running the agent (its Linux tid).
    thread: Counter,
    /// Held for its value in the counters file: the pinned core plus one.
    _core: Counter,
    /// Duty-cycle lengths (ns).
    cycles: Histogram,
    tasks: AtomicUsize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Adopt(h, _) => write!(f, "Adopt({})", h.id),
            Command::Release { id, to, .. } => write!(f, "Release({id} to agent {to})"),
        }
    }
}

/// What all agents share: their public halves, the task directory, the clock.
#[derive(Debug)]
struct Registry {
    agents: Box<[Shared]>,
    counters: Arc<CountersFile>,
    /// When agent 0 last stored the counters file's heartbeat (ns).
    last_beat: AtomicU64,
    directory: Mutex<Vec<(TaskId, Arc<TaskCounters>)>>,
    next_id: AtomicU64,
    epoch: Instant,
    stop: AtomicBool,
}

/// Commands an inbox holds without growing.
const INBOX: usize = 64;

impl Registry {
    #[inline(always)]
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn post(&self, agent: usize, cmd: Command) {
        let a = &self.agents[agent];
        let mut inbox = a.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        inbox.push(cmd);
        a.pending.store(true, Ordering::Release);
    }
}

impl Registry {
    fn move_task(&self, id: TaskId, to: usize) -> Result<MoveTicket, AgentError> {
        if to >= self.agents.len() {
            return Err(AgentError::NoSuchAgent(to, self.agents.len()));
        }
        let from = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, c)| c.agent.load(Ordering::Relaxed))
            .ok_or(AgentError::NoSuchTask(id))?;
        if from == FINISHED {
            return Err(AgentError::NoSuchTask(id));
        }
        if from == IN_TRANSIT {
            // Not adopted yet (just added, or mid-move): it cannot be released
            // until an agent holds it.
            return Err(AgentError::InTransit(id));
        }
        let state = Arc::new(AtomicU8::new(MOVE_PENDING));
        if from == to {
            state.store(MOVE_DONE, Ordering::Release);
        } else {
            self.post(
                from,
                Command::Release {
                    id,
                    to,
                    ticket: state.clone(),
                },
            );
        }
        Ok(MoveTicket { id, state })
    }
}

/// Wakes the agents that are parked, after a publisher put work in a ring
/// one of them drains. Costs a fence and one load per agent; a syscall per
/// parked agent only.
#[derive(Clone, Debug)]
pub(crate) struct Waker {
    reg: Arc<Registry>,
}

impl Waker {
    #[inline]
    pub(crate) fn wake(&self) {
        // SYNC POINT: pairs with the fence in `park_group`: either that agent's
        // re-check after announcing `parked` sees our commit, or we see
        // `parked` and ring. Never both miss.
        std::sync::atomic::fence(Ordering::SeqCst);
        for a in self.reg.agents.iter() {
            if a.parked.load(Ordering::Relaxed) {
                a.bell.ring();
            }
        }
    }
}

/// Moves tasks between the agents it came from; see [`Agents::mover`].
#[derive(Clone, Debug)]
pub struct Mover {
    reg: Arc<Registry>,
}

impl Mover {
    /// As [`Agents::move_task`].
    pub fn move_task(&self, id: TaskId, to: usize) -> Result<MoveTicket, AgentError> {
        self.reg.move_task(id, to)
    }
}

/// One agent: its tasks, its idle strategy, its counters. Runs on whatever
/// thread calls [`duty_cycle`](Self::duty_cycle).
struct Agent {
    index: usize,
    reg: Arc<Registry>,
    tasks: Vec<Hosted>,
    commands: Vec<Command>,
    idler: Idler,
    slow_cycle_ns: u64,
    cycle_end: u64,
}

impl Agent {
    /// Applies pending commands, then calls every task once. Returns the work done.
    fn duty_cycle(&mut self) -> usize {
        let me = &self.reg.agents[self.index];
        if me.pending.load(Ordering::Acquire) {
            self.apply_commands();
        }
        let start = self.reg.now_ns();
        let mut t = start;
        let mut work = 0;
        let mut finished = false;
        for h in &mut self.tasks {
            let w = h.task.do_work(t);
            finished |= h.task.is_done();
            let t2 = self.reg.now_ns();
            let c = &h.counters;
            c.calls.add(1);
            c.total_ns.add(t2 - t);
            if w > 0 {
                c.busy_ns.add(t2 - t);
                c.work.add(w as u64);
            }
            work += w;
            t = t2;
        }
        if finished {
            self.drop_finished();
        }
        let me = &self.reg.agents[self.index];
        let len = t - start;
        me.duty_cycles.add(1);
        if work > 0 {
            me.busy_ns.add(len);
        } else {
            me.idle_ns.add(len);
        }
        me.max_cycle_ns.max(len);
        me.cycles.record(len);
        if len > self.slow_cycle_ns {
            me.slow_cycles.add(1);
        }
        if self.index == 0
            && t.saturating_sub(self.reg.last_beat.load(Ordering::Relaxed)) > HEARTBEAT_NS
        {
            self.reg.last_beat.store(t, Ordering::Relaxed);
            self.reg.counters.heartbeat();
        }
        self.cycle_end = t;
        work
    }

    /// Drops the tasks that say they are done (deallocating on this thread).
    fn drop_finished(&mut self) {
        self.tasks.retain(|h| {
            let done = h.task.is_done();
            if done {
                h.counters.agent.store(FINISHED, Ordering::Relaxed);
            }
            !done
        });
        self.reg.agents[self.index]
            .tasks
            .store(self.tasks.len(), Ordering::Relaxed);
    }

    fn apply_commands(&mut self) {
        let me = &self.reg.agents[self.index];
        {
            let mut inbox = me.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            me.pending.store(false, Ordering::Relaxed);
            std::mem::swap(&mut *inbox, &mut self.commands);
        }
        let mut commands = std::mem::take(&mut self.commands);
        for cmd in commands.drain(..) {
            match cmd {
                Command::Adopt(h, ticket) => {
                    h.counters.agent.store(self.index, Ordering::Relaxed);
                    h.counters.on_agent.set(self.index as u64);
                    // After the last task that runs first, or at the end.
                    let at = if h.task.runs_first() {
                        self.tasks.partition_point(|t| t.task.runs_first())
                    } else {
                        self.tasks.len()
                    };
                    self.tasks.insert(at, h);
                    if let Some(t) = ticket {
                        t.store(MOVE_DONE, Ordering::Release);
                    }
                }
                Command::Release { id, to, ticket } => {
                    match self.tasks.iter().position(|h| h.id == id) {
                        Some(i) => {
                            let h = self.tasks.remove(i);
                            h.counters.agent.store(IN_TRANSIT, Ordering::Relaxed);
                            self.reg.post(to, Command::Adopt(h, Some(ticket)));
                        }
                        None => ticket.store(MOVE_FAILED, Ordering::Release),
                    }
                }
            }
        }
        self.commands = commands;
        self.reg.agents[self.index]
            .tasks
            .store(self.tasks.len(), Ordering::Relaxed);
    }
}

/// A set of agents, their tasks, and the threads that run them.
pub struct Agents {
    reg: Arc<Registry>,
    mode: ThreadingMode,
    shared_idle: IdleStrategy,
    parked: Vec<Agent>,
    threads: Vec<(String, JoinHandle<Vec<Agent>>)>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("mode", &self.mode)
            .field("agents", &self.reg.agents.len())
            .field("running", &!self.threads.is_empty())
            .finish()
    }
}

impl Agents {
    /// Agents with no tasks yet, not running. `shared_idle` is the idle
    /// strategy of the one thread in `Shared` mode. Checks that configured
    /// cores exist.
    pub fn new(
        configs: Vec<AgentConfig>,
        mode: ThreadingMode,
        shared_idle: IdleStrategy,
    ) -> Result<Self, AgentError> {
        Self::counted(configs, mode, shared_idle, CountersFile::private(64))
    }

    /// As [`new`](Self::new), with the agents' and tasks' counters in
    /// `counters` (a node's counters file), where tools read them live.
    /// Agent 0 stores the file's heartbeat every 100 ms of duty cycles.
    pub fn counted(
        configs: Vec<AgentConfig>,
        mode: ThreadingMode,
        shared_idle: IdleStrategy,
        counters: Arc<CountersFile>,
    ) -> Result<Self, AgentError> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        for c in &configs {
            if let Some(core) = c.core {
                if !available.contains(&core) {
                    return Err(AgentError::NoSuchCore {
                        agent: c.name.clone(),
                        core,
                        available,
                    });
                }
            }
        }
        let reg = Arc::new(Registry {
            agents: configs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    // Labelled "NAME WHAT" so tools take the name back off.
                    let counter = |t: u32| {
                        let what = types::what(t).unwrap_or_default();
                        Counter::in_file_or_standalone(
                            &counters,
                            t,
                            i as u64,
                            &format!("{} {what}", c.name),
                        )
                    };
                    Ok(Shared {
                        name: c.name.clone(),
                        core: c.core,
                        parked: AtomicBool::new(false),
                        bell: Doorbell::new().map_err(|source| AgentError::Spawn {
                            agent: c.name.clone(),
                            source,
                        })?,
                        pending: AtomicBool::new(false),
                        inbox: Mutex::new(Vec::with_capacity(INBOX)),
                        duty_cycles: counter(types::AGENT_DUTY_CYCLES),
                        busy_ns: counter(types::AGENT_BUSY_NS),
                        idle_ns: counter(types::AGENT_IDLE_NS),
                        max_cycle_ns: counter(types::AGENT_MAX_CYCLE_NS),
                        slow_cycles: counter(types::AGENT_SLOW_CYCLES),
                        thread: counter(types::AGENT_THREAD),
                        _core: {
                            let core = counter(types::AGENT_CORE);
                            core.set(c.core.map_or(0, |c| c as u64 + 1));
                            core
                        },
                        cycles: counters.histogram(
                            types::AGENT_CYCLE_NS,
                            i as u64,
                            &format!(
                                "{} {}",
                                c.name,
                                types::what(types::AGENT_CYCLE_NS).unwrap_or_default()
                            ),
                        ),
                        tasks: AtomicUsize::new(0),
                    })
                })
                .collect::<Result<_, AgentError>>()?,
            directory: Mutex::new(Vec::new()),
            counters,
            last_beat: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let parked = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Agent {
                index,
                reg: reg.clone(),
                tasks: Vec::with_capacity(INBOX),
                commands: Vec::with_capacity(INBOX),
                idler: Idler::new(c.idle),
                slow_cycle_ns: c.slow_cycle.as_nanos() as u64,
                cycle_end: 0,
            })
            .collect();
        Ok(Self {
            reg,
            mode,
            shared_idle,
            parked,
            threads: Vec::new(),
        })
    }

    /// The number of agents.
    pub fn len(&self) -> usize {
        self.reg.agents.len()
    }

    /// Whether there are no agents.
    pub fn is_empty(&self) -> bool {
        self.reg.agents.is_empty()
    }

    /// The threading mode.
    pub fn mode(&self) -> ThreadingMode {
        self.mode
    }

    fn check_agent(&self, agent: usize) -> Result<(), AgentError> {
        if agent < self.len() {
            Ok(())
        } else {
            Err(AgentError::NoSuchAgent(agent, self.len()))
        }
    }

    /// Gives `task` to `agent`; it runs from that agent's next duty cycle
    /// (running or not yet started). Allocates (the directory entry): setup,
    /// not hot path.
    pub fn add_task(&self, agent: usize, task: Box<dyn Task>) -> Result<TaskId, AgentError> {
        self.check_agent(agent)?;
        let id = TaskId(self.reg.next_id.fetch_add(1, Ordering::Relaxed));
        let name = task.name().to_string();
        let counter = |t: u32| {
            let what = types::what(t).unwrap_or_default();
            Counter::in_file_or_standalone(&self.reg.counters, t, id.0, &format!("{name} {what}"))
        };
        let counters = Arc::new(TaskCounters {
            agent: AtomicUsize::new(IN_TRANSIT),
            calls: counter(types::TASK_CALLS),
            busy_ns: counter(types::TASK_BUSY_NS),
            total_ns: counter(types::TASK_TOTAL_NS),
            work: counter(types::TASK_WORK),
            on_agent: counter(types::TASK_AGENT),
            name,
        });
        self.reg
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, counters.clone()));
        self.reg
            .post(agent, Command::Adopt(Hosted { id, task, counters }, None));
        Ok(id)
    }

    /// Moves task `id` to agent `to` at the next safe point of both agents (see
    /// the module doc); returns at once with a ticket to wait on. Moving a task to
    /// the agent that has it is done at once.
    pub fn move_task(&self, id: TaskId, to: usize) -> Result<MoveTicket, AgentError> {
        self.reg.move_task(id, to)
    }

    /// A handle that wakes parked agents (for publications feeding their tasks).
    pub(crate) fn waker(&self) -> Waker {
        Waker {
            reg: self.reg.clone(),
        }
    }

    /// A handle that moves tasks from any thread (or task), e.g. the node's
    /// control-ring task.
    pub fn mover(&self) -> Mover {
        Mover {
            reg: self.reg.clone(),
        }
    }

    /// Starts the threads of the threading mode (none in `Invoker` mode). Pins
    /// each thread before it runs a cycle; a failed pin stops them all and is
    /// returned.
    pub fn start(&mut self) -> Result<(), AgentError> {
        if !self.threads.is_empty() {
            return Err(AgentError::WrongState("already running"));
        }
        self.reg.stop.store(false, Ordering::Relaxed);
        let groups: Vec<Vec<Agent>> = match self.mode {
            ThreadingMode::Invoker => return Ok(()),
            ThreadingMode::Dedicated => self.parked.drain(..).map(|a| vec![a]).collect(),
            ThreadingMode::Shared => vec![std::mem::take(&mut self.parked)],
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), AgentError>>();
        let mut spawned = 0;
        let mut first_error = None;
        for group in groups {
            let Some(first) = group.first() else { continue };
            let shared = &self.reg.agents[first.index];
            let (name, core) = (shared.name.clone(), shared.core);
            let idle = Idler::new(self.shared_idle);
            let ready = ready_tx.clone();
            let reg = self.reg.clone();
            let thread_name = format!("weft-{name}");
            let spawn = std::thread::Builder::new().name(thread_name).spawn({
                let name = name.clone();
                move || run_thread(group, core, &name, idle, reg, ready)
            });
            match spawn {
                Ok(h) => {
                    self.threads.push((name, h));
                    spawned += 1;
                }
                Err(source) => {
                    first_error = Some(AgentError::Spawn {
                        agent: name,
                        source,
                    });
                    break;
                }
            }
        }
        for _ in 0..spawned {
            if let Ok(Err(e)) = ready_rx.recv() {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            let _ = self.stop();
            return Err(e);
        }
        Ok(())
    }

    /// One duty cycle of every agent, in order, on the calling thread; returns
    /// the total work. For `Invoker` mode (or any mode while stopped). Never
    /// allocates unless a command (add, move) is being applied.
    pub fn invoke(&mut self) -> usize {
        let tid = current_tid();
        for a in &self.parked {
            let thread = &self.reg.agents[a.index].thread;
            if thread.get() != tid {
                thread.set(tid);
            }
        }
        self.parked.iter_mut().map(Agent::duty_cycle).sum()
    }

    /// Stops and joins the threads; the agents keep their tasks and can be
    /// started again. Reports the first agent whose thread panicked.
    pub fn stop(&mut self) -> Result<(), AgentError> {
        self.reg.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for (name, h) in self.threads.drain(..) {
            match h.join() {
                Ok(agents) => self.parked.extend(agents),
                Err(_) => {
                    if result.is_ok() {
                        result = Err(AgentError::Panicked(name));
                    }
                }
            }
        }
        self.parked.sort_by_key(|a| a.index);
        result
    }

    /// Counters of every agent, by index. Reads atomics; allocates the names.
    pub fn agent_stats(&self) -> Vec<AgentStats> {
        self.reg
            .agents
            .iter()
            .map(|a| AgentStats {
                name: a.name.clone(),
                core: a.core,
                duty_cycles: a.duty_cycles.get(),
                busy_ns: a.busy_ns.get(),
                idle_ns: a.idle_ns.get(),
                max_cycle_ns: a.max_cycle_ns.get(),
                slow_cycles: a.slow_cycles.get(),
                tasks: a.tasks.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Counters of every task ever added, in the order they were added.
    pub fn task_stats(&self) -> Vec<TaskStats> {
        self.reg
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, c)| {
                let agent = c.agent.load(Ordering::Relaxed);
                TaskStats {
                    id: *id,
                    name: c.name.clone(),
                    agent: (agent < FINISHED).then_some(agent),
                    finished: agent == FINISHED,
                    calls: c.calls.get(),
                    busy_ns: c.busy_ns.get(),
                    total_ns: c.total_ns.get(),
                    work: c.work.get(),
                }
            })
            .collect()
    }

    /// Stops the agents and takes every task out, with its id (to inspect or
    /// drop it). Tasks still in an inbox (added or mid-move) are included.
    pub fn take_tasks(&mut self) -> Result<Vec<TakenTask>, AgentError> {
        self.stop()?;
        let mut out = Vec::new();
        // Apply pending adoptions first, so tasks in transit are found too.
        for a in &mut self.parked {
            if a.reg.agents[a.index].pending.load(Ordering::Acquire) {
                a.apply_commands();
            }
        }
        for a in &mut self.parked {
            if a.reg.agents[a.index].pending.load(Ordering::Acquire) {
                a.apply_commands();
            }
            out.extend(a.tasks.drain(..).map(|h| (h.id, h.task)));
            a.reg.agents[a.index].tasks.store(0, Ordering::Relaxed);
        }
        self.reg
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The calling thread's Linux thread id: one syscall the first time on
/// each thread, then a thread-local read.
fn current_tid() -> u64 {
    thread_local! {
        static TID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    TID.with(|t| {
        if t.get() == 0 {
            t.set(nix::unistd::gettid().as_raw() as u64);
        }
        t.get()
    })
}

/// The body of an agent thread: pin, report, run duty cycles until stopped.
fn run_thread(
    mut group: Vec<Agent>,
    core: Option<usize>,
    name: &str,
    shared_idle: Idler,
    reg: Arc<Registry>,
    ready: std::sync::mpsc::Sender<Result<(), AgentError>>,
) -> Vec<Agent> {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            let _ = ready.send(Err(AgentError::Pin {
                agent: name.to_string(),
                core,
            }));
            return group;
        }
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    let tid = current_tid();
    for a in &group {
        reg.agents[a.index].thread.set(tid);
    }
    // A lone agent idles by its own strategy; agents sharing a thread by the
    // shared one.
    let mut idler = match group.as_slice() {
        [one] => one.idler.clone(),
        _ => shared_idle,
    };
    let n = group.len().max(1) as u64;
    while !reg.stop.load(Ordering::Relaxed) {
        let work: usize = group.iter_mut().map(Agent::duty_cycle).sum();
        match idler.step(work) {
            IdleStep::None => continue,
            IdleStep::Spin => std::hint::spin_loop(),
            IdleStep::Pause(n) => crate::idle::pause(n),
            IdleStep::Yield => std::thread::yield_now(),
            IdleStep::Park(d) => park_group(&mut group, &reg, d),
        }
        // The thread's idle time, shared out evenly among its agents.
        let end = group.iter().map(|a| a.cycle_end).max().unwrap_or(0);
        let idle = reg.now_ns().saturating_sub(end) / n;
        for a in &group {
            reg.agents[a.index].idle_ns.add(idle);
        }
    }
    group
}

/// File descriptors one park waits on: the agents' doorbells, then their
/// tasks' sockets. A task past this many is looked at when the park ends.
const MAX_WAIT_FDS: usize = 32;

/// Parks the agents of one thread for at most `d` (less if a task's timer is
/// due sooner): announces it, looks for work once more, then waits in `ppoll`
/// on the doorbells and the tasks' sockets. Allocates nothing.
fn park_group(group: &mut [Agent], reg: &Registry, d: Duration) {
    for a in group.iter() {
        reg.agents[a.index].parked.store(true, Ordering::Relaxed);
    }
    // SYNC POINT: pairs with the fence in `Waker::wake`.
    std::sync::atomic::fence(Ordering::SeqCst);
    let work: usize = group.iter_mut().map(Agent::duty_cycle).sum();
    if work == 0 {
        let empty = libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        };
        let mut fds = [empty; MAX_WAIT_FDS];
        let mut n = 0;
        let mut wait = d;
        for a in group.iter() {
            if n < MAX_WAIT_FDS {
                fds[n].fd = reg.agents[a.index].bell.fd();
                fds[n].events = libc::POLLIN;
                n += 1;
            }
            for h in &a.tasks {
                if let Some(t) = h.task.timer_in() {
                    wait = wait.min(t);
                }
                if let Some(fd) = h.task.wait_fd() {
                    if n < MAX_WAIT_FDS {
                        fds[n].fd = fd;
                        fds[n].events = libc::POLLIN;
                        n += 1;
                    }
                }
            }
        }
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds[..n]` are initialised pollfds on this stack frame, `ts` a
        // live timespec; the fds belong to this thread's agents and tasks, which
        // this function borrows for the call, so none is closed meanwhile.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
        if r > 0 {
            for a in group.iter() {
                let bell = &reg.agents[a.index].bell;
                if fds
                    .iter()
                    .take(n)
                    .any(|p| p.fd == bell.fd() && p.revents != 0)
                {
                    bell.drain();
                }
            }
        }
    }
    for a in group.iter() {
        reg.agents[a.index].parked.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does nothing, ever.
    struct Nothing;

    impl Task for Nothing {
        fn name(&self) -> &str {
            "nothing"
        }
        fn do_work(&mut self, _now_ns: u64) -> usize {
            0
        }
    }

    #[test]
    fn bad_agent_core_and_task_are_errors() {
        let e = Agents::new(
            vec![AgentConfig {
                core: Some(4096),
                ..AgentConfig::new("x")
            }],
            ThreadingMode::Dedicated,
            IdleStrategy::BusySpin,
        )
        .unwrap_err();
        assert!(e.to_string().contains("core 4096 does not exist"), "{e}");
        let mut agents = Agents::new(
            vec![AgentConfig::new("x")],
            ThreadingMode::Invoker,
            IdleStrategy::BusySpin,
        )
        .unwrap();
        assert!(matches!(
            agents.add_task(3, Box::new(Nothing)),
            Err(AgentError::NoSuchAgent(3, 1))
        ));
        assert!(matches!(
            agents.move_task(TaskId(99), 0),
            Err(AgentError::NoSuchTask(TaskId(99)))
        ));
        let id = agents.add_task(0, Box::new(Nothing)).unwrap();
        assert!(matches!(
            agents.move_task(id, 0),
            Err(AgentError::InTransit(_))
        ));
        agents.invoke();
        assert!(agents.move_task(id, 0).unwrap().is_done());
    }
}
