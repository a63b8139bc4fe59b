//! Live counters in shared memory: one file per node, `counters.PID.N` in the
//! weft directory, that any tool reads while the process runs, without
//! touching it.
//!
//! ## Layout
//! The file is a weft-shm word region ([`weft_shm::RingKind::Words`]): the
//! common 4 KiB header (magic, layout version, creator pid and start time,
//! heartbeat), then 64-bit words:
//!
//! ```text
//! word 0        magic "WEFTCNTR"
//! word 1        counters layout version (1)
//! word 2        number of counter records
//! word 3        reuse delay, ns: a freed record is not reused before this
//! word 4        loss-report entries (64)
//! word 5        error-log entries (64)
//! word 6        histograms (16)
//! word 8..16    the process's label (64 bytes of UTF-8, zero-padded)
//! then the loss report, 64 entries of 128 bytes:
//!   +0 state  +8 stream  +16 source (session)  +24 first seen  +32 last seen
//!   (wall-clock ns)  +40 loss events  +48 datagrams lost  +56 bytes lost
//!   (estimated)  +64 channel (64 bytes of UTF-8)
//! then the error log, 64 entries of 128 bytes:
//!   +0 state  +8 code  +16 count  +24 first seen  +32 last seen  +40 text (88 bytes)
//! then 16 histograms of 6 KiB:
//!   +0 state  +8 type id  +16 key  +24..+88 label (64 bytes)  +88 count  +96 sum
//!   +104 max  +128 720 bucket counts (see [`bucket_of`])
//! then records of 256 bytes:
//!   +0    state    generation << 2 | state (0 free, 1 live, 2 freed, 3 being written)
//!   +8    type id  (u32, see [`types`])
//!   +16   key      (u64: stream, agent or task id)
//!   +24   freed at (ns, CLOCK_MONOTONIC) once freed
//!   +32   label    96 bytes of UTF-8, zero-padded
//!   +128  value    the counter, alone on its 128-byte line
//! ```
//!
//! ## Protocol
//! Each counter has one writer: it stores its value with Release, and a
//! reader loads it with Acquire. Records are allocated and freed under a
//! mutex in the writing process (never on a hot path) and published like a
//! seqlock: the allocator stores state "being written", writes type, key and
//! label, then stores "live" with a new generation (Release). A reader loads
//! the state (Acquire), reads the metadata, and keeps it only if the state is
//! unchanged afterwards. A freed record is reused only after the reuse delay,
//! so a reader that saw it live a moment ago never attributes a new counter's
//! value to the old label.
//!
//! Writing a counter costs one relaxed load and one store to a line only
//! that counter's writer writes; reading never blocks or slows the writer.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use weft_shm::liveness::now_ns;
use weft_shm::{CreatorState, Region, ShmError, ShmOptions, WordRef, Words};

/// "WEFTCNTR", little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"WEFTCNTR");
/// The counters layout version this build writes and reads.
/// Version 2: error-log entries carry a kind and 448 bytes of text.
pub const VERSION: u64 = 2;
/// Bytes of a process label; longer labels are cut at a character boundary.
pub const PROCESS_LABEL_LEN: usize = 64;
/// Bytes of a counter label; longer labels are cut at a character boundary.
pub const LABEL_LEN: usize = 96;
/// A closed counters file also shows the counters freed this long before
/// its last heartbeat (see [`CountersReader::counters`]).
pub const CLOSING_WINDOW: Duration = Duration::from_secs(10);
/// Default of [`CountersConfig::reuse_delay`].
pub const REUSE_DELAY: Duration = Duration::from_secs(1);

const HEADER_WORDS: usize = 16;
/// Entries of the loss report and of the error log.
pub const LOG_ENTRIES: usize = 64;
const ENTRY_WORDS: usize = 16;
/// Words of an error-log entry: the loss entry's fields, a kind and a
/// longer text.
const ERROR_ENTRY_WORDS: usize = 64;
const LOSS_BASE: usize = HEADER_WORDS;
const ERROR_BASE: usize = LOSS_BASE + LOG_ENTRIES * ENTRY_WORDS;
/// Histogram slots in a counters file.
pub const HISTOGRAMS: usize = 16;
/// Buckets of a histogram: values 0..16 exactly, then 16 buckets per power
/// of two (about 6 % wide) up to 2^48 ns (78 hours); larger values go in the last.
pub const HISTOGRAM_BUCKETS: usize = 720;
const HISTOGRAM_WORDS: usize = 768;
const H_META: usize = 16;
const H_COUNT: usize = 11;
const H_SUM: usize = 12;
const H_MAX: usize = 13;
const HISTOGRAM_BASE: usize = ERROR_BASE + LOG_ENTRIES * ERROR_ENTRY_WORDS;
const RECORDS_BASE: usize = HISTOGRAM_BASE + HISTOGRAMS * HISTOGRAM_WORDS;
const W_HISTOGRAMS: usize = 6;
/// Wall-clock ns at which the process closed the file cleanly (0: open, or
/// crashed): written by [`CountersFile::close_lingering`] or by the
/// terminating-signal handler.
const W_CLOSED_AT: usize = 7;
const W_LOSS_ENTRIES: usize = 4;
const W_ERROR_ENTRIES: usize = 5;
const E_STATE: usize = 0;
const E_KEY: usize = 1;
const E_SOURCE: usize = 2;
const E_FIRST: usize = 3;
const E_LAST: usize = 4;
const E_COUNT: usize = 5;
const E_DATAGRAMS: usize = 6;
const E_BYTES: usize = 7;
const E_CHANNEL: usize = 8;
const E_ERR_COUNT: usize = 2;
const E_ERR_KIND: usize = 5;
/// Bytes of an error's kind (a short snake_case word such as
/// `kernel_drops`); longer kinds are cut.
pub const ERROR_KIND_LEN: usize = 24;
const E_ERR_TEXT: usize = 8;
/// Bytes of an error's text; longer texts are cut at a character boundary.
pub const ERROR_TEXT_LEN: usize = (ERROR_ENTRY_WORDS - E_ERR_TEXT) * 8;
const RECORD_WORDS: usize = 32;
const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_RECORDS: usize = 2;
const W_REUSE: usize = 3;
const W_PROCESS_LABEL: usize = 8;
const R_STATE: usize = 0;
const R_TYPE: usize = 1;
const R_KEY: usize = 2;
const R_FREED_AT: usize = 3;
const R_LABEL: usize = 4;
const R_VALUE: usize = 16;

const FREE: u64 = 0;
const LIVE: u64 = 1;
const FREED: u64 = 2;
const WRITING: u64 = 3;

/// Counter type ids. Stable: tools and dashboards key on them. See
/// `docs/operations.md` for what each counts.
pub mod types {
    /// Duty cycles an agent ran. Key: agent index.
    pub const AGENT_DUTY_CYCLES: u32 = 1;
    /// Nanoseconds of cycles that found work. Key: agent index.
    pub const AGENT_BUSY_NS: u32 = 2;
    /// Nanoseconds of cycles that found none. Key: agent index.
    pub const AGENT_IDLE_NS: u32 = 3;
    /// The longest cycle, ns. Key: agent index.
    pub const AGENT_MAX_CYCLE_NS: u32 = 4;
    /// Cycles longer than the slow-cycle threshold. Key: agent index.
    pub const AGENT_SLOW_CYCLES: u32 = 5;
    /// The core the agent is pinned to, plus one; 0: not pinned (a gauge).
    /// Key: agent index.
    pub const AGENT_CORE: u32 = 6;
    /// The Linux thread id that runs the agent (a gauge; 0 before its first
    /// duty cycle): where `/proc/PID/task/TID/schedstat` says how long it
    /// waited for a CPU. Key: agent index.
    pub const AGENT_THREAD: u32 = 7;
    /// Calls of a task's `do_work`. Key: task id.
    pub const TASK_CALLS: u32 = 20;
    /// Nanoseconds of calls that did work. Key: task id.
    pub const TASK_BUSY_NS: u32 = 21;
    /// Nanoseconds of all calls. Key: task id.
    pub const TASK_TOTAL_NS: u32 = 22;
    /// Work items (messages or datagrams) the task moved. Key: task id.
    pub const TASK_WORK: u32 = 23;
    /// The agent index the task runs on now. Key: task id.
    pub const TASK_AGENT: u32 = 24;

    /// UDP sender: messages taken from the publications. Key: stream id.
    pub const UDP_SENT_MESSAGES: u32 = 40;
    /// UDP sender: bytes handed to the socket (data, repairs, heartbeats).
    pub const UDP_SENT_BYTES: u32 = 41;
    /// UDP sender: new DATA datagrams sent.
    pub const UDP_SENT_DATAGRAMS: u32 = 42;
    /// UDP sender: repair datagrams sent.
    pub const UDP_REPAIRS_SENT: u32 = 43;
    /// UDP sender: NAKs received.
    pub const UDP_NAKS_RECEIVED: u32 = 44;
    /// UDP sender: LOSS notices sent (data asked for but no longer held).
    pub const UDP_LOSS_NOTICES_SENT: u32 = 45;
    /// UDP sender: offers refused by flow control (back-pressure events).
    pub const UDP_SEND_BACK_PRESSURED: u32 = 46;
    /// UDP sender: datagrams dropped as malformed or foreign.
    pub const UDP_SEND_DROPPED: u32 = 47;
    /// UDP sender: receivers in flow control now (a gauge).
    pub const UDP_RECEIVERS: u32 = 48;
    /// UDP sender: datagrams lost to send errors.
    pub const UDP_SEND_ERRORS: u32 = 49;
    /// UDP sender: receivers timed out.
    pub const UDP_RECEIVERS_TIMED_OUT: u32 = 50;
    /// UDP sender: the next datagram sequence number (its position, a gauge).
    pub const UDP_SEND_POSITION: u32 = 51;
    /// UDP sender: new datagrams flow control and the retransmit buffer let
    /// it send now, before it must wait (a gauge; 0: back-pressured).
    pub const UDP_SEND_WINDOW: u32 = 52;
    /// UDP sender: datagrams sent that the slowest receiver has not yet
    /// reported delivered (a gauge).
    pub const UDP_SEND_UNACKNOWLEDGED: u32 = 53;
    /// UDP sender: datagrams its retransmit buffer holds (a gauge, fixed).
    pub const UDP_SEND_BUFFER: u32 = 54;
    /// UDP receiver: the next datagram sequence number it will deliver (a gauge).
    pub const UDP_RECEIVE_POSITION: u32 = 72;
    /// UDP receiver: messages delivered. Key: stream id.
    pub const UDP_RECEIVED_MESSAGES: u32 = 60;
    /// UDP receiver: bytes received on the socket.
    pub const UDP_RECEIVED_BYTES: u32 = 61;
    /// UDP receiver: DATA datagrams stored.
    pub const UDP_RECEIVED_DATAGRAMS: u32 = 62;
    /// UDP receiver: duplicate DATA.
    pub const UDP_DUPLICATES: u32 = 63;
    /// UDP receiver: repairs that filled a gap.
    pub const UDP_REPAIRS_RECEIVED: u32 = 64;
    /// UDP receiver: NAKs sent.
    pub const UDP_NAKS_SENT: u32 = 65;
    /// UDP receiver: datagrams reported lost.
    pub const UDP_DATAGRAMS_LOST: u32 = 66;
    /// UDP receiver: datagrams dropped as malformed, foreign or of a left session.
    pub const UDP_RECEIVE_DROPPED: u32 = 67;
    /// UDP receiver: DATA beyond the reorder buffer (dropped, NAKed later).
    pub const UDP_OVERFLOW: u32 = 68;
    /// UDP receiver: datagrams the kernel dropped (receive buffer full).
    pub const UDP_KERNEL_DROPS: u32 = 69;
    /// UDP receiver: LOSS events handed to subscribers.
    pub const UDP_LOSS_EVENTS: u32 = 70;
    /// UDP receiver: datagrams the test loss injector dropped.
    pub const UDP_INJECTED_DROPS: u32 = 71;
    /// Histogram: an agent's duty-cycle length, ns. Key: agent index.
    pub const AGENT_CYCLE_NS: u32 = 100;
    /// Histogram: one-way latency of sampled messages, ns, publisher's
    /// commit to subscriber's read on one host's clock. Key: stream id.
    pub const ONE_WAY_LATENCY_NS: u32 = 101;

    /// Shared-memory publication: messages published. Key: stream id.
    pub const SHM_SENT_MESSAGES: u32 = 80;
    /// Shared-memory publication: payload bytes published.
    pub const SHM_SENT_BYTES: u32 = 81;
    /// Shared-memory publication: claims refused because subscribers were a
    /// full ring behind (back-pressure events).
    pub const SHM_BACK_PRESSURED: u32 = 82;
    /// Shared-memory subscription: messages read. Key: stream id.
    pub const SHM_RECEIVED_MESSAGES: u32 = 83;
    /// Shared-memory subscription: payload bytes read.
    pub const SHM_RECEIVED_BYTES: u32 = 84;
    /// Shared-memory subscription: times it was evicted as too slow (and rejoined).
    pub const SHM_EVICTIONS: u32 = 85;
    /// Shared-memory publication: bytes written into the ring since it was
    /// created, frame headers and padding included (its position, a gauge).
    pub const SHM_SEND_POSITION: u32 = 86;
    /// Shared-memory subscription: the ring position it has read up to (a
    /// gauge); the publication's position minus this is its backlog in bytes.
    pub const SHM_RECEIVE_POSITION: u32 = 87;
    /// Shared-memory publication or subscription: the ring's capacity in
    /// bytes (a gauge, fixed): a subscriber this far behind stops the
    /// publisher (or is cut loose).
    pub const SHM_RING_CAPACITY: u32 = 88;
    /// weft-rebalance: the latest balance ratio (largest core load over the
    /// mean), times 1000 (a gauge). Key: 0.
    pub const REBALANCE_BALANCE_RATIO: u32 = 90;
    /// weft-rebalance: task moves applied and verified. Key: 0.
    pub const REBALANCE_MOVES_APPLIED: u32 = 91;
    /// An application's own counter (only grows), named by its label (see
    /// `weft::Node::app_counter`). Key: 0.
    pub const APP_COUNTER: u32 = 92;
    /// An application's own gauge (any value), named by its label. Key: 0.
    pub const APP_GAUGE: u32 = 93;

    /// What a counter's key identifies.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum KeyKind {
        /// An agent index.
        Agent,
        /// A task id.
        Task,
        /// A stream id (with a channel).
        Stream,
        /// Nothing: one per process (the key is 0).
        Process,
        /// Nothing, but the label names the series: an application's own
        /// counters, exported with a `name` label.
        Named,
    }

    /// How a counter type is exported as a Prometheus metric.
    #[derive(Clone, Copy, Debug)]
    pub struct Metric {
        /// The type id.
        pub type_id: u32,
        /// The metric name, in base units (`_seconds`, `_bytes`), `_total`
        /// for counters.
        pub name: &'static str,
        /// A counter (only grows) or a gauge.
        pub counter: bool,
        /// Divide the raw value by this to get base units (1e9 for ns).
        pub divisor: f64,
        /// What the key is.
        pub key: KeyKind,
        /// The HELP text.
        pub help: &'static str,
    }

    const fn m(
        type_id: u32,
        name: &'static str,
        counter: bool,
        divisor: f64,
        key: KeyKind,
        help: &'static str,
    ) -> Metric {
        Metric {
            type_id,
            name,
            counter,
            divisor,
            key,
            help,
        }
    }

    /// Every counter type as a metric. The names are stable.
    pub const METRICS: &[Metric] = &[
        m(
            AGENT_DUTY_CYCLES,
            "weft_agent_duty_cycles_total",
            true,
            1.0,
            KeyKind::Agent,
            "Duty cycles the agent ran.",
        ),
        m(
            AGENT_BUSY_NS,
            "weft_agent_busy_seconds_total",
            true,
            1e9,
            KeyKind::Agent,
            "Time in duty cycles that found work.",
        ),
        m(
            AGENT_IDLE_NS,
            "weft_agent_idle_seconds_total",
            true,
            1e9,
            KeyKind::Agent,
            "Time in duty cycles that found none (spinning, not parked).",
        ),
        m(
            AGENT_MAX_CYCLE_NS,
            "weft_agent_max_cycle_seconds",
            false,
            1e9,
            KeyKind::Agent,
            "The longest duty cycle so far.",
        ),
        m(
            AGENT_SLOW_CYCLES,
            "weft_agent_slow_cycles_total",
            true,
            1.0,
            KeyKind::Agent,
            "Duty cycles longer than the slow-cycle threshold.",
        ),
        m(
            AGENT_CORE,
            "weft_agent_core",
            false,
            1.0,
            KeyKind::Agent,
            "The core the agent is pinned to, plus one (0: not pinned).",
        ),
        m(
            AGENT_THREAD,
            "weft_agent_thread_id",
            false,
            1.0,
            KeyKind::Agent,
            "The Linux thread id running the agent (0 before it first ran).",
        ),
        m(
            TASK_CALLS,
            "weft_task_calls_total",
            true,
            1.0,
            KeyKind::Task,
            "Calls of the task's do_work.",
        ),
        m(
            TASK_BUSY_NS,
            "weft_task_busy_seconds_total",
            true,
            1e9,
            KeyKind::Task,
            "Time in calls that did work.",
        ),
        m(
            TASK_TOTAL_NS,
            "weft_task_seconds_total",
            true,
            1e9,
            KeyKind::Task,
            "Time in all calls.",
        ),
        m(
            TASK_WORK,
            "weft_task_work_total",
            true,
            1.0,
            KeyKind::Task,
            "Messages or datagrams the task moved.",
        ),
        m(
            TASK_AGENT,
            "weft_task_agent",
            false,
            1.0,
            KeyKind::Task,
            "The agent the task runs on now.",
        ),
        m(
            UDP_SENT_MESSAGES,
            "weft_udp_sent_messages_total",
            true,
            1.0,
            KeyKind::Stream,
            "Messages a UDP sender took from its publications.",
        ),
        m(
            UDP_SENT_BYTES,
            "weft_udp_sent_bytes_total",
            true,
            1.0,
            KeyKind::Stream,
            "Bytes a UDP sender handed to its socket.",
        ),
        m(
            UDP_SENT_DATAGRAMS,
            "weft_udp_sent_datagrams_total",
            true,
            1.0,
            KeyKind::Stream,
            "New DATA datagrams sent.",
        ),
        m(
            UDP_REPAIRS_SENT,
            "weft_udp_repairs_sent_total",
            true,
            1.0,
            KeyKind::Stream,
            "Repair datagrams sent.",
        ),
        m(
            UDP_NAKS_RECEIVED,
            "weft_udp_naks_received_total",
            true,
            1.0,
            KeyKind::Stream,
            "NAKs a UDP sender received.",
        ),
        m(
            UDP_LOSS_NOTICES_SENT,
            "weft_udp_loss_notices_sent_total",
            true,
            1.0,
            KeyKind::Stream,
            "LOSS notices sent for data no longer held.",
        ),
        m(
            UDP_SEND_BACK_PRESSURED,
            "weft_udp_send_back_pressured_total",
            true,
            1.0,
            KeyKind::Stream,
            "Offers refused by flow control.",
        ),
        m(
            UDP_SEND_DROPPED,
            "weft_udp_send_dropped_total",
            true,
            1.0,
            KeyKind::Stream,
            "Malformed or foreign datagrams a sender dropped.",
        ),
        m(
            UDP_RECEIVERS,
            "weft_udp_receivers",
            false,
            1.0,
            KeyKind::Stream,
            "Receivers in the sender's flow control.",
        ),
        m(
            UDP_SEND_ERRORS,
            "weft_udp_send_errors_total",
            true,
            1.0,
            KeyKind::Stream,
            "Datagrams lost to send errors.",
        ),
        m(
            UDP_RECEIVERS_TIMED_OUT,
            "weft_udp_receivers_timed_out_total",
            true,
            1.0,
            KeyKind::Stream,
            "Receivers that timed out.",
        ),
        m(
            UDP_SEND_POSITION,
            "weft_udp_send_position",
            false,
            1.0,
            KeyKind::Stream,
            "The sender's next datagram sequence number.",
        ),
        m(
            UDP_SEND_WINDOW,
            "weft_udp_send_window_datagrams",
            false,
            1.0,
            KeyKind::Stream,
            "New datagrams flow control and the retransmit buffer let the sender send now (0: back-pressured).",
        ),
        m(
            UDP_SEND_UNACKNOWLEDGED,
            "weft_udp_send_unacknowledged_datagrams",
            false,
            1.0,
            KeyKind::Stream,
            "Datagrams sent that the slowest receiver has not reported delivered.",
        ),
        m(
            UDP_SEND_BUFFER,
            "weft_udp_send_buffer_datagrams",
            false,
            1.0,
            KeyKind::Stream,
            "Datagrams the sender's retransmit buffer holds.",
        ),
        m(
            UDP_RECEIVE_POSITION,
            "weft_udp_receive_position",
            false,
            1.0,
            KeyKind::Stream,
            "The next datagram sequence number the receiver will deliver.",
        ),
        m(
            UDP_RECEIVED_MESSAGES,
            "weft_udp_received_messages_total",
            true,
            1.0,
            KeyKind::Stream,
            "Messages a UDP receiver delivered.",
        ),
        m(
            UDP_RECEIVED_BYTES,
            "weft_udp_received_bytes_total",
            true,
            1.0,
            KeyKind::Stream,
            "Bytes a UDP receiver read from its socket.",
        ),
        m(
            UDP_RECEIVED_DATAGRAMS,
            "weft_udp_received_datagrams_total",
            true,
            1.0,
            KeyKind::Stream,
            "DATA datagrams stored.",
        ),
        m(
            UDP_DUPLICATES,
            "weft_udp_duplicates_total",
            true,
            1.0,
            KeyKind::Stream,
            "Duplicate DATA datagrams.",
        ),
        m(
            UDP_REPAIRS_RECEIVED,
            "weft_udp_repairs_received_total",
            true,
            1.0,
            KeyKind::Stream,
            "Repairs that filled a gap.",
        ),
        m(
            UDP_NAKS_SENT,
            "weft_udp_naks_sent_total",
            true,
            1.0,
            KeyKind::Stream,
            "NAKs a UDP receiver sent.",
        ),
        m(
            UDP_DATAGRAMS_LOST,
            "weft_udp_datagrams_lost_total",
            true,
            1.0,
            KeyKind::Stream,
            "Datagrams reported lost (never a silent gap).",
        ),
        m(
            UDP_RECEIVE_DROPPED,
            "weft_udp_receive_dropped_total",
            true,
            1.0,
            KeyKind::Stream,
            "Malformed, foreign or stale datagrams a receiver dropped.",
        ),
        m(
            UDP_OVERFLOW,
            "weft_udp_overflow_total",
            true,
            1.0,
            KeyKind::Stream,
            "DATA beyond the reorder buffer (dropped, NAKed later).",
        ),
        m(
            UDP_KERNEL_DROPS,
            "weft_udp_kernel_drops_total",
            true,
            1.0,
            KeyKind::Stream,
            "Datagrams the kernel dropped for a full receive buffer.",
        ),
        m(
            UDP_LOSS_EVENTS,
            "weft_udp_loss_events_total",
            true,
            1.0,
            KeyKind::Stream,
            "LOSS events handed to subscribers.",
        ),
        m(
            UDP_INJECTED_DROPS,
            "weft_udp_injected_drops_total",
            true,
            1.0,
            KeyKind::Stream,
            "Datagrams the test loss injector dropped.",
        ),
        m(
            SHM_SENT_MESSAGES,
            "weft_shm_sent_messages_total",
            true,
            1.0,
            KeyKind::Stream,
            "Messages a shared-memory publication published.",
        ),
        m(
            SHM_SENT_BYTES,
            "weft_shm_sent_bytes_total",
            true,
            1.0,
            KeyKind::Stream,
            "Payload bytes a shared-memory publication published.",
        ),
        m(
            SHM_BACK_PRESSURED,
            "weft_shm_back_pressured_total",
            true,
            1.0,
            KeyKind::Stream,
            "Claims refused because subscribers were a full ring behind.",
        ),
        m(
            SHM_RECEIVED_MESSAGES,
            "weft_shm_received_messages_total",
            true,
            1.0,
            KeyKind::Stream,
            "Messages (and events) a shared-memory subscription read.",
        ),
        m(
            SHM_RECEIVED_BYTES,
            "weft_shm_received_bytes_total",
            true,
            1.0,
            KeyKind::Stream,
            "Payload bytes a shared-memory subscription read.",
        ),
        m(
            SHM_EVICTIONS,
            "weft_shm_evictions_total",
            true,
            1.0,
            KeyKind::Stream,
            "Times a shared-memory subscription was evicted as too slow.",
        ),
        m(
            SHM_SEND_POSITION,
            "weft_shm_send_position_bytes",
            false,
            1.0,
            KeyKind::Stream,
            "Bytes a shared-memory publication has written into its ring (frames, headers included).",
        ),
        m(
            SHM_RECEIVE_POSITION,
            "weft_shm_receive_position_bytes",
            false,
            1.0,
            KeyKind::Stream,
            "The ring position a shared-memory subscription has read up to, in bytes.",
        ),
        m(
            SHM_RING_CAPACITY,
            "weft_shm_ring_capacity_bytes",
            false,
            1.0,
            KeyKind::Stream,
            "The ring's capacity: a subscriber this far behind holds the publisher back (or is cut loose).",
        ),
        m(
            REBALANCE_BALANCE_RATIO,
            "weft_rebalance_balance_ratio",
            false,
            1000.0,
            KeyKind::Process,
            "Largest core load over the mean, in weft-rebalance's latest collected window.",
        ),
        m(
            REBALANCE_MOVES_APPLIED,
            "weft_rebalance_moves_applied_total",
            true,
            1.0,
            KeyKind::Process,
            "Task moves weft-rebalance applied and verified.",
        ),
        m(
            APP_COUNTER,
            "weft_app_total",
            true,
            1.0,
            KeyKind::Named,
            "An application's own counter; `name` is the label it gave it.",
        ),
        m(
            APP_GAUGE,
            "weft_app_value",
            false,
            1.0,
            KeyKind::Named,
            "An application's own gauge; `name` is the label it gave it.",
        ),
    ];

    /// Histogram types as Prometheus histograms (in seconds): type id,
    /// metric name, HELP text. Type ids from 100 up are histograms.
    pub const HISTOGRAM_METRICS: &[(u32, &str, &str, KeyKind)] = &[
        (
            AGENT_CYCLE_NS,
            "weft_agent_cycle_seconds",
            "Length of the agent's duty cycles.",
            KeyKind::Agent,
        ),
        (
            ONE_WAY_LATENCY_NS,
            "weft_one_way_latency_seconds",
            "Time from publication to subscription of sampled messages (same-host clock).",
            KeyKind::Stream,
        ),
    ];

    /// The metric of a type id.
    pub fn metric(type_id: u32) -> Option<&'static Metric> {
        METRICS.iter().find(|m| m.type_id == type_id)
    }

    /// What an agent's or a task's counter of `type_id` counts, as its label
    /// ends: such a counter is labelled "NAME WHAT", so a tool takes the
    /// agent's or task's name back off it. `None` for other types.
    pub fn what(type_id: u32) -> Option<&'static str> {
        Some(match type_id {
            AGENT_DUTY_CYCLES => "duty cycles",
            AGENT_BUSY_NS => "busy ns",
            AGENT_IDLE_NS => "idle ns",
            AGENT_MAX_CYCLE_NS => "longest cycle ns",
            AGENT_SLOW_CYCLES => "slow cycles",
            AGENT_CORE => "core",
            AGENT_THREAD => "thread",
            AGENT_CYCLE_NS => "cycle",
            TASK_CALLS => "calls",
            TASK_BUSY_NS => "busy ns",
            TASK_TOTAL_NS => "total ns",
            TASK_WORK => "work",
            TASK_AGENT => "agent",
            _ => return None,
        })
    }

    /// The agent's or task's name in a counter label made as "NAME WHAT"
    /// (see [`what`]): the label without its " WHAT"; a label cut short
    /// (longer than [`LABEL_LEN`](crate::LABEL_LEN)) is returned whole.
    pub fn subject(type_id: u32, label: &str) -> &str {
        what(type_id)
            .and_then(|w| label.strip_suffix(w))
            .and_then(|l| l.strip_suffix(' '))
            .unwrap_or(label)
    }

    /// A name for a type id, for tools; `None` for an unknown id.
    pub fn name(type_id: u32) -> Option<&'static str> {
        Some(match type_id {
            UDP_SENT_MESSAGES => "udp_sent_messages",
            UDP_SENT_BYTES => "udp_sent_bytes",
            UDP_SENT_DATAGRAMS => "udp_sent_datagrams",
            UDP_REPAIRS_SENT => "udp_repairs_sent",
            UDP_NAKS_RECEIVED => "udp_naks_received",
            UDP_LOSS_NOTICES_SENT => "udp_loss_notices_sent",
            UDP_SEND_BACK_PRESSURED => "udp_send_back_pressured",
            UDP_SEND_DROPPED => "udp_send_dropped",
            UDP_RECEIVERS => "udp_receivers",
            UDP_SEND_ERRORS => "udp_send_errors",
            UDP_RECEIVERS_TIMED_OUT => "udp_receivers_timed_out",
            UDP_SEND_POSITION => "udp_send_position",
            UDP_RECEIVE_POSITION => "udp_receive_position",
            UDP_SEND_WINDOW => "udp_send_window",
            UDP_SEND_UNACKNOWLEDGED => "udp_send_unacknowledged",
            UDP_SEND_BUFFER => "udp_send_buffer",
            SHM_RING_CAPACITY => "shm_ring_capacity",
            UDP_RECEIVED_MESSAGES => "udp_received_messages",
            UDP_RECEIVED_BYTES => "udp_received_bytes",
            UDP_RECEIVED_DATAGRAMS => "udp_received_datagrams",
            UDP_DUPLICATES => "udp_duplicates",
            UDP_REPAIRS_RECEIVED => "udp_repairs_received",
            UDP_NAKS_SENT => "udp_naks_sent",
            UDP_DATAGRAMS_LOST => "udp_datagrams_lost",
            UDP_RECEIVE_DROPPED => "udp_receive_dropped",
            UDP_OVERFLOW => "udp_overflow",
            UDP_KERNEL_DROPS => "udp_kernel_drops",
            UDP_LOSS_EVENTS => "udp_loss_events",
            UDP_INJECTED_DROPS => "udp_injected_drops",
            SHM_SENT_MESSAGES => "shm_sent_messages",
            SHM_SENT_BYTES => "shm_sent_bytes",
            SHM_BACK_PRESSURED => "shm_back_pressured",
            SHM_RECEIVED_MESSAGES => "shm_received_messages",
            SHM_RECEIVED_BYTES => "shm_received_bytes",
            SHM_EVICTIONS => "shm_evictions",
            SHM_SEND_POSITION => "shm_send_position",
            SHM_RECEIVE_POSITION => "shm_receive_position",
            REBALANCE_BALANCE_RATIO => "rebalance_balance_ratio",
            REBALANCE_MOVES_APPLIED => "rebalance_moves_applied",
            APP_COUNTER => "app_counter",
            APP_GAUGE => "app_gauge",
            AGENT_CYCLE_NS => "agent_cycle_ns",
            ONE_WAY_LATENCY_NS => "one_way_latency_ns",
            AGENT_DUTY_CYCLES => "agent_duty_cycles",
            AGENT_BUSY_NS => "agent_busy_ns",
            AGENT_IDLE_NS => "agent_idle_ns",
            AGENT_MAX_CYCLE_NS => "agent_max_cycle_ns",
            AGENT_SLOW_CYCLES => "agent_slow_cycles",
            AGENT_CORE => "agent_core",
            AGENT_THREAD => "agent_thread",
            TASK_CALLS => "task_calls",
            TASK_BUSY_NS => "task_busy_ns",
            TASK_TOTAL_NS => "task_total_ns",
            TASK_WORK => "task_work",
            TASK_AGENT => "task_agent",
            _ => return None,
        })
    }
}

/// Why a counters file could not be made, read, or grown.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// The file system or the region header said no.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// A weft region, but not a counters file of this version.
    #[error("{path}: not a weft counters file ({what})")]
    NotCounters {
        /// The file.
        path: String,
        /// What was found.
        what: String,
    },
    /// Every record is live or waiting out its reuse delay.
    #[error("all {0} counter records are in use (raise CountersConfig::records)")]
    Full(usize),
}

/// How a counters file is made.
#[derive(Clone, Debug)]
pub struct CountersConfig {
    /// Where, with which permissions. Default: weft's directory.
    pub shm: ShmOptions,
    /// Counter records (each 256 bytes). Default 1024.
    pub records: usize,
    /// A freed record waits this long before reuse. Default [`REUSE_DELAY`].
    pub reuse_delay: Duration,
}

impl Default for CountersConfig {
    fn default() -> Self {
        Self {
            shm: ShmOptions::default(),
            records: 1024,
            reuse_delay: REUSE_DELAY,
        }
    }
}

/// `s` as a JSON string literal (quotes, backslashes and control
/// characters escaped): how the tools write labels and other text into JSON
/// without a serializer. Allocates; not for the hot path.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The name of this process's next counters file: `counters.PID.N`, N
/// counting the files this process made (a process may run several nodes).
pub fn next_file_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("counters.{}.{n}", std::process::id())
}

/// Stores `text` (cut to `max` bytes at a character boundary) in `words`
/// starting at word `at`, zero-padded.
fn store_text(words: &Words, at: usize, max: usize, text: &str) {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &text.as_bytes()[..end];
    for i in 0..max / 8 {
        let mut w = [0u8; 8];
        for (j, b) in w.iter_mut().enumerate() {
            *b = bytes.get(i * 8 + j).copied().unwrap_or(0);
        }
        if let Some(word) = words.get(at + i) {
            word.store(u64::from_le_bytes(w), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Reads text stored by [`store_text`]; invalid UTF-8 is replaced, and so
/// is every control character (by `?`): the file is another process's, and
/// a newline or an escape sequence in a label must not forge a row of a
/// tool's table or move its terminal's cursor.
fn load_text(words: &Words, at: usize, max: usize) -> String {
    let mut bytes = Vec::with_capacity(max);
    for i in 0..max / 8 {
        let w = words
            .get(at + i)
            .map_or(0, |w| w.load(std::sync::atomic::Ordering::Relaxed));
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Word `i` of `w` (Acquire); 0 past the end, so a corrupt file reads as
/// zeros, never out of bounds.
fn acquire(w: &Words, i: usize) -> u64 {
    w.get(i)
        .map_or(0, |x| x.load(std::sync::atomic::Ordering::Acquire))
}

fn record_base(i: usize) -> usize {
    RECORDS_BASE + i * RECORD_WORDS
}

/// The bucket of value `v` in a counters-file histogram.
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // 4..=63
    let sub = ((v >> (e - 4)) & 15) as usize;
    ((e - 3) * 16 + sub).min(HISTOGRAM_BUCKETS - 1)
}

/// The smallest value of bucket `i` (its values are below the next one's).
pub fn bucket_low(i: usize) -> u64 {
    if i < 16 {
        return i as u64;
    }
    let (e, sub) = (i / 16 + 3, (i % 16) as u64);
    (16 + sub) << (e - 4)
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// FNV-1a of `text`: an error's identity in the log.
fn error_code(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// This process's counters file: allocates counters. `Send` and `Sync`; share
/// it in an `Arc`.
#[derive(Debug)]
pub struct CountersFile {
    /// Stamps "closed at" if the process is terminated by SIGTERM or
    /// SIGINT; dropped before `words` (the memory it points into).
    _exit_stamp: Option<weft_shm::terminate::WordGuard>,
    words: Words,
    records: usize,
    reuse_delay_ns: u64,
    alloc: Mutex<()>,
}

impl CountersFile {
    /// Creates the next `counters.PID.N` for this process, labelled
    /// `process_label` (the application's name). A file left by a dead
    /// process with this pid is replaced; a live one is an error.
    pub fn create(cfg: &CountersConfig, process_label: &str) -> Result<Arc<Self>, CountersError> {
        let name = next_file_name();
        let records = cfg.records.max(1);
        let len = ((RECORDS_BASE + records * RECORD_WORDS) * 8)
            .next_power_of_two()
            .max(1024);
        // Whole records that fit in the power-of-two area.
        let records = (len / 8 - RECORDS_BASE) / RECORD_WORDS;
        let reuse_delay_ns = cfg.reuse_delay.as_nanos() as u64;
        let init = |w: &Words| {
            let set = |i: usize, v: u64| {
                if let Some(word) = w.get(i) {
                    word.store(v, std::sync::atomic::Ordering::Relaxed);
                }
            };
            set(W_MAGIC, MAGIC);
            set(W_VERSION, VERSION);
            set(W_RECORDS, records as u64);
            set(W_REUSE, reuse_delay_ns);
            set(W_LOSS_ENTRIES, LOG_ENTRIES as u64);
            set(W_ERROR_ENTRIES, LOG_ENTRIES as u64);
            set(W_HISTOGRAMS, HISTOGRAMS as u64);
            store_text(w, W_PROCESS_LABEL, PROCESS_LABEL_LEN, process_label);
        };
        let words = match Region::create_words(&cfg.shm, &name, len, init) {
            Err(ShmError::AlreadyExists { .. }) => {
                Region::reclaim(&cfg.shm, &name)?;
                Region::create_words(&cfg.shm, &name, len, init)?
            }
            other => other?,
        };
        // A terminating signal marks the file closed; it is not removed.
        if let Some(r) = words.region() {
            r.keep_file_on_signal();
        }
        // SAFETY: the word is in `words`' mapping, which the file keeps
        // (the guard is dropped first: it is declared before `words`).
        let exit_stamp = words
            .get(W_CLOSED_AT)
            .map(|w| unsafe { weft_shm::terminate::stamp_on_exit(w) });
        Ok(Arc::new(Self {
            _exit_stamp: exit_stamp,
            words,
            records,
            reuse_delay_ns,
            alloc: Mutex::new(()),
        }))
    }

    /// Counters that live in this process's memory only (no file): the same
    /// API when telemetry is off.
    pub fn private(records: usize) -> Arc<Self> {
        let records = records.max(1);
        Arc::new(Self {
            _exit_stamp: None,
            words: Words::private(RECORDS_BASE + records * RECORD_WORDS),
            records,
            reuse_delay_ns: 0,
            alloc: Mutex::new(()),
        })
    }

    /// The file, if there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.words.region().map(|r| r.path())
    }

    /// Marks the file closed cleanly, now, and keeps it when dropped: tools
    /// show the process as closed (not crashed) with its last values, loss
    /// report and error log for their linger time, after which
    /// `weft-stat reclaim` (or the next node started in the directory)
    /// removes it. Call it last, when nothing will count any more.
    pub fn close_lingering(&self) {
        // The last heartbeat dates the close for readers (see
        // `CountersReader::counters`).
        self.heartbeat();
        if let Some(w) = self.words.get(W_CLOSED_AT) {
            w.store(wall_ns().max(1), std::sync::atomic::Ordering::Release);
        }
        if let Some(r) = self.words.region() {
            r.keep_file();
        }
    }

    /// Records "alive now" (one clock read, one store): readers judge a file
    /// whose heartbeat is older than its liveness timeout as hung.
    pub fn heartbeat(&self) {
        if let Some(r) = self.words.region() {
            r.heartbeat();
        }
    }

    /// A new counter at 0. Takes a mutex and scans the records: for set-up,
    /// not a hot path.
    pub fn allocate(
        self: &Arc<Self>,
        type_id: u32,
        key: u64,
        label: &str,
    ) -> Result<Counter, CountersError> {
        use std::sync::atomic::Ordering;
        let _held = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_ns();
        let w = &self.words;
        let load = |i: usize| w.get(i).map_or(0, |x| x.load(Ordering::Relaxed));
        let store = |i: usize, v: u64, o: Ordering| {
            if let Some(x) = w.get(i) {
                x.store(v, o)
            }
        };
        let free = (0..self.records).find(|&i| {
            let b = record_base(i);
            let st = load(b + R_STATE);
            match st & 3 {
                FREE => true,
                FREED => now.saturating_sub(load(b + R_FREED_AT)) >= self.reuse_delay_ns,
                _ => false,
            }
        });
        let Some(i) = free else {
            return Err(CountersError::Full(self.records));
        };
        let b = record_base(i);
        let generation = (load(b + R_STATE) >> 2) + 1;
        store(b + R_STATE, generation << 2 | WRITING, Ordering::Relaxed);
        // SYNC POINT: orders "being written" before the metadata stores; pairs
        // with a reader's Acquire fence before its second state load.
        std::sync::atomic::fence(Ordering::Release);
        store(b + R_TYPE, type_id as u64, Ordering::Relaxed);
        store(b + R_KEY, key, Ordering::Relaxed);
        store(b + R_FREED_AT, 0, Ordering::Relaxed);
        store_text(w, b + R_LABEL, LABEL_LEN, label);
        store(b + R_VALUE, 0, Ordering::Relaxed);
        // SYNC POINT: publishes the record; pairs with a reader's Acquire load.
        store(b + R_STATE, (generation + 1) << 2 | LIVE, Ordering::Release);
        let Some(value) = w.word(b + R_VALUE) else {
            return Err(CountersError::Full(self.records));
        };
        Ok(Counter {
            file: self.clone(),
            value,
            record: i,
        })
    }

    /// An entry of the loss report for losses of `stream` from `source` (a
    /// session id) on `channel`: the first free entry, else the one seen
    /// least recently. Takes the mutex: call it when the first loss of a
    /// session happens, not per message.
    pub fn loss_report(self: &Arc<Self>, stream: u64, source: u64, channel: &str) -> LossReport {
        use std::sync::atomic::Ordering;
        let _held = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let i = self.pick_entry(LOSS_BASE, ENTRY_WORDS, |_| false);
        let b = LOSS_BASE + i * ENTRY_WORDS;
        let generation = self.begin_entry(b);
        let w = &self.words;
        let store = |k: usize, v: u64| {
            if let Some(x) = w.get(b + k) {
                x.store(v, Ordering::Relaxed)
            }
        };
        store(E_KEY, stream);
        store(E_SOURCE, source);
        store(E_FIRST, 0);
        store(E_LAST, 0);
        store(E_COUNT, 0);
        store(E_DATAGRAMS, 0);
        store(E_BYTES, 0);
        store_text(w, b + E_CHANNEL, 64, channel);
        self.end_entry(b, generation);
        LossReport {
            file: self.clone(),
            base: b,
        }
    }

    /// Adds `n` occurrences of the error `text`, of sort `kind` (a short
    /// snake_case word tools count by, such as `kernel_drops`), to the error
    /// log: the entry with the same kind and text gets its count and last
    /// time updated, else a free
    /// entry (or the one seen least recently) takes it. Takes the mutex:
    /// for errors, not for every message.
    pub fn log_error(&self, kind: &str, text: &str, n: u64) {
        use std::sync::atomic::Ordering;
        let _held = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let code = error_code(kind) ^ error_code(text).rotate_left(1);
        let w = &self.words;
        let load = |i: usize| w.get(i).map_or(0, |x| x.load(Ordering::Acquire));
        let store = |i: usize, v: u64| {
            if let Some(x) = w.get(i) {
                x.store(v, Ordering::Release)
            }
        };
        let now = wall_ns();
        let i = self.pick_entry(ERROR_BASE, ERROR_ENTRY_WORDS, |b| load(b + E_KEY) == code);
        let b = ERROR_BASE + i * ERROR_ENTRY_WORDS;
        if load(b + E_STATE) & 3 == LIVE && load(b + E_KEY) == code {
            store(b + E_ERR_COUNT, load(b + E_ERR_COUNT).saturating_add(n));
            store(b + E_LAST, now);
            return;
        }
        let generation = self.begin_entry(b);
        store(b + E_KEY, code);
        store(b + E_ERR_COUNT, n);
        store(b + E_FIRST, now);
        store(b + E_LAST, now);
        store_text(w, b + E_ERR_KIND, ERROR_KIND_LEN, kind);
        store_text(w, b + E_ERR_TEXT, ERROR_TEXT_LEN, text);
        self.end_entry(b, generation);
    }

    /// A live entry that `matches`, else a free one, else the one whose last
    /// time is oldest. Under the mutex.
    fn pick_entry(&self, base: usize, stride: usize, matches: impl Fn(usize) -> bool) -> usize {
        use std::sync::atomic::Ordering;
        let w = &self.words;
        let load = |i: usize| w.get(i).map_or(0, |x| x.load(Ordering::Relaxed));
        let live = |i: usize| load(base + i * stride + E_STATE) & 3 == LIVE;
        (0..LOG_ENTRIES)
            .find(|&i| live(i) && matches(base + i * stride))
            .or_else(|| (0..LOG_ENTRIES).find(|&i| !live(i)))
            .unwrap_or_else(|| {
                (0..LOG_ENTRIES)
                    .min_by_key(|&i| load(base + i * stride + E_LAST))
                    .unwrap_or(0)
            })
    }

    /// Marks entry `b` "being written"; returns its new generation.
    fn begin_entry(&self, b: usize) -> u64 {
        use std::sync::atomic::{fence, Ordering};
        let Some(state) = self.words.get(b + E_STATE) else {
            return 0;
        };
        let generation = (state.load(Ordering::Relaxed) >> 2) + 1;
        state.store(generation << 2 | WRITING, Ordering::Relaxed);
        // SYNC POINT: orders "being written" before the entry's stores; pairs
        // with a reader's Acquire fence before its second state load.
        fence(Ordering::Release);
        generation
    }

    /// Publishes entry `b` (Release).
    fn end_entry(&self, b: usize, generation: u64) {
        if let Some(state) = self.words.get(b + E_STATE) {
            // SYNC POINT: pairs with a reader's Acquire load of the state.
            state.store(
                (generation + 1) << 2 | LIVE,
                std::sync::atomic::Ordering::Release,
            );
        }
    }

    /// A new histogram of `type_id` (ns values), or a standalone one if all
    /// [`HISTOGRAMS`] slots are live. Takes the mutex: set-up, not hot path.
    pub fn histogram(self: &Arc<Self>, type_id: u32, key: u64, label: &str) -> Histogram {
        use std::sync::atomic::Ordering;
        let _held = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let w = &self.words;
        let free = (0..HISTOGRAMS).find(|&i| {
            let b = HISTOGRAM_BASE + i * HISTOGRAM_WORDS;
            w.get(b + E_STATE)
                .is_some_and(|x| x.load(Ordering::Relaxed) & 3 != LIVE)
                && w.get(b + HISTOGRAM_WORDS - 1).is_some()
        });
        let Some(i) = free else {
            return Histogram::standalone();
        };
        let b = HISTOGRAM_BASE + i * HISTOGRAM_WORDS;
        let generation = self.begin_entry(b);
        let store = |k: usize, v: u64| {
            if let Some(x) = w.get(b + k) {
                x.store(v, Ordering::Relaxed)
            }
        };
        store(1, type_id as u64);
        store(2, key);
        store_text(w, b + 3, 64, label);
        for k in H_COUNT..H_META + HISTOGRAM_BUCKETS {
            store(k, 0);
        }
        self.end_entry(b, generation);
        Histogram {
            file: self.clone(),
            base: b,
        }
    }

    fn free(&self, record: usize) {
        use std::sync::atomic::Ordering;
        let _held = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let b = record_base(record);
        let Some(state) = self.words.get(b + R_STATE) else {
            return;
        };
        if let Some(at) = self.words.get(b + R_FREED_AT) {
            at.store(now_ns(), Ordering::Relaxed);
        }
        let generation = state.load(Ordering::Relaxed) >> 2;
        // SYNC POINT: a reader that sees "freed" skips the record.
        state.store((generation + 1) << 2 | FREED, Ordering::Release);
    }
}

/// One counter: a 64-bit value with one writer. Dropping it frees its record
/// (reused after the reuse delay).
#[derive(Debug)]
pub struct Counter {
    /// The value word, held directly: an update is one load and one store.
    value: WordRef,
    file: Arc<CountersFile>,
    record: usize,
}

impl Counter {
    /// A counter no file holds (when a file is full or telemetry is off).
    pub fn standalone() -> Self {
        let file = CountersFile::private(1);
        let value = file
            .words
            .word(record_base(0) + R_VALUE)
            .unwrap_or_else(|| unreachable!("a private file holds its one record"));
        Self {
            file,
            value,
            record: 0,
        }
    }

    /// Allocates in `file`, or makes a standalone counter if it is full.
    pub fn in_file_or_standalone(
        file: &Arc<CountersFile>,
        type_id: u32,
        key: u64,
        label: &str,
    ) -> Self {
        file.allocate(type_id, key, label)
            .unwrap_or_else(|_| Self::standalone())
    }

    /// Adds `n`. One writer per counter: a load and a Release store, no
    /// read-modify-write.
    #[inline]
    pub fn add(&self, n: u64) {
        let now = self.value.load(std::sync::atomic::Ordering::Relaxed);
        self.value
            .store(now.wrapping_add(n), std::sync::atomic::Ordering::Release);
    }

    /// A handle on the value word, for a writer that keeps the value there
    /// itself as part of its own work (a ring keeping its position in a
    /// publication's position counter: one store serves both). Nothing
    /// else may then write the counter.
    pub fn word(&self) -> WordRef {
        self.value.clone()
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, value: u64) {
        self.value
            .store(value, std::sync::atomic::Ordering::Release);
    }

    /// Raises the value to `n` if it is below.
    #[inline]
    pub fn max(&self, n: u64) {
        if n > self.get() {
            self.set(n);
        }
    }

    /// The value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.file.free(self.record);
    }
}

/// Makes the counters of one thing (a stream, an agent) with a common key
/// and label prefix: `make(type, "what")` labels it "PREFIX what".
#[derive(Debug)]
pub struct CounterSet<'a> {
    file: &'a Arc<CountersFile>,
    key: u64,
    prefix: String,
}

impl<'a> CounterSet<'a> {
    /// Counters keyed `key`, labelled `prefix` + what.
    pub fn new(file: &'a Arc<CountersFile>, key: u64, prefix: impl Into<String>) -> Self {
        Self {
            file,
            key,
            prefix: prefix.into(),
        }
    }

    /// The label prefix of its counters.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One counter (standalone if the file is full).
    pub fn make(&self, type_id: u32, what: &str) -> Counter {
        Counter::in_file_or_standalone(
            self.file,
            type_id,
            self.key,
            &format!("{} {what}", self.prefix),
        )
    }
}

/// A histogram of nanosecond values in the counters file, with one writer.
/// Recording costs a bucket computation and four load/store pairs; no
/// allocation, lock or syscall. Dropping it frees the slot.
#[derive(Debug)]
pub struct Histogram {
    file: Arc<CountersFile>,
    base: usize,
}

impl Histogram {
    /// One no file holds (all slots live, or telemetry off).
    pub fn standalone() -> Self {
        let file = CountersFile::private(1);
        let base = HISTOGRAM_BASE;
        Self { file, base }
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, v: u64) {
        use std::sync::atomic::Ordering;
        let w = &self.file.words;
        let bump = |k: usize, n: u64| {
            if let Some(x) = w.get(self.base + k) {
                x.store(x.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
            }
        };
        bump(H_META + bucket_of(v), 1);
        bump(H_COUNT, 1);
        bump(H_SUM, v);
        if let Some(m) = w.get(self.base + H_MAX) {
            if v > m.load(Ordering::Relaxed) {
                m.store(v, Ordering::Release);
            }
        }
    }
}

impl Drop for Histogram {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let _held = self
            .file
            .alloc
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = self.file.words.get(self.base + E_STATE) {
            let generation = state.load(Ordering::Relaxed) >> 2;
            // SYNC POINT: a reader that sees "freed" skips the slot.
            state.store((generation + 1) << 2 | FREED, Ordering::Release);
        }
    }
}

/// A histogram as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramValue {
    /// See [`types`].
    pub type_id: u32,
    /// Agent index or stream id.
    pub key: u64,
    /// Human label.
    pub label: String,
    /// Values recorded.
    pub count: u64,
    /// Their sum (ns).
    pub sum: u64,
    /// The largest (ns).
    pub max: u64,
    /// Count per bucket (see [`bucket_low`]).
    pub buckets: Vec<u64>,
}

impl HistogramValue {
    /// The value at quantile `q` (0..=1): the upper end of the bucket that
    /// holds it, so at most about 6 % high; the max for `q` = 1.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let high = if i + 1 < HISTOGRAM_BUCKETS {
                    bucket_low(i + 1) - 1
                } else {
                    self.max
                };
                return high.min(self.max);
            }
        }
        self.max
    }

    /// How many values are at most `v` (whole buckets whose upper end is at
    /// most `v`: a bucket straddling `v` is left out).
    pub fn count_at_most(&self, v: u64) -> u64 {
        self.buckets
            .iter()
            .enumerate()
            .take_while(|(i, _)| *i + 1 < HISTOGRAM_BUCKETS && bucket_low(i + 1) - 1 <= v)
            .map(|(_, &n)| n)
            .sum()
    }
}

/// One entry of the loss report, written by the one task that receives its
/// stream and session.
#[derive(Debug)]
pub struct LossReport {
    file: Arc<CountersFile>,
    base: usize,
}

impl LossReport {
    /// Records one loss event of `datagrams` datagrams (about `bytes` bytes).
    pub fn record(&self, datagrams: u64, bytes: u64) {
        use std::sync::atomic::Ordering;
        let w = &self.file.words;
        let now = wall_ns();
        let add = |k: usize, n: u64| {
            if let Some(x) = w.get(self.base + k) {
                x.store(
                    x.load(Ordering::Relaxed).saturating_add(n),
                    Ordering::Release,
                );
            }
        };
        if let Some(first) = w.get(self.base + E_FIRST) {
            if first.load(Ordering::Relaxed) == 0 {
                first.store(now, Ordering::Release);
            }
        }
        if let Some(last) = w.get(self.base + E_LAST) {
            last.store(now, Ordering::Release);
        }
        add(E_COUNT, 1);
        add(E_DATAGRAMS, datagrams);
        add(E_BYTES, bytes);
    }
}

/// One entry of the loss report as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossEntry {
    /// The stream id.
    pub stream: u64,
    /// The publisher's session id.
    pub source: u64,
    /// The channel (its URI or group).
    pub channel: String,
    /// First and last loss, wall-clock ns since the Unix epoch (0: none yet).
    pub first_wall_ns: u64,
    /// See `first_wall_ns`.
    pub last_wall_ns: u64,
    /// Loss events.
    pub events: u64,
    /// Datagrams lost.
    pub datagrams: u64,
    /// Bytes lost, estimated from the stream's mean datagram size (the
    /// receiver never saw them).
    pub bytes: u64,
}

/// One entry of the error log as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorEntry {
    /// What sort of error: a short snake_case word (`kernel_drops`,
    /// `evicted`, `attach`, ...) that tools count by.
    pub kind: String,
    /// What happened, in full (with the kind, the entry's identity).
    pub text: String,
    /// How often.
    pub count: u64,
    /// First and last time, wall-clock ns since the Unix epoch.
    pub first_wall_ns: u64,
    /// See `first_wall_ns`.
    pub last_wall_ns: u64,
}

/// One counter as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterValue {
    /// Its record index (stable while it lives).
    pub id: usize,
    /// See [`types`].
    pub type_id: u32,
    /// Stream, agent or task id.
    pub key: u64,
    /// Human label.
    pub label: String,
    /// The value when read.
    pub value: u64,
}

/// Whether a counters file's process is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// Runs, and its heartbeat (if any) is fresh.
    Alive,
    /// Runs, but its heartbeat is older than the liveness timeout.
    Hung,
    /// Gone without closing (crashed or killed): what is left is what it
    /// counted before it died.
    Dead,
    /// Closed its counters cleanly (a clean exit, or `SIGTERM`/`SIGINT`
    /// handled): what is left is its final count.
    Closed,
}

/// A counters file opened by a tool. Reading never writes to it.
#[derive(Debug)]
pub struct CountersReader {
    words: Words,
    records: usize,
}

impl CountersReader {
    /// Opens `path`, checking the region header and the counters header.
    pub fn open(path: &std::path::Path) -> Result<Self, CountersError> {
        let region = Region::open(path)?;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        drop(region);
        let words = Region::attach_words(&ShmOptions::in_dir(dir), &name)?;
        let not = |what: String| CountersError::NotCounters {
            path: path.display().to_string(),
            what,
        };
        let load = |i: usize| acquire(&words, i);
        if load(W_MAGIC) != MAGIC {
            return Err(not(format!("magic {:#x}", load(W_MAGIC))));
        }
        if load(W_VERSION) != VERSION {
            return Err(not(format!(
                "counters version {}, this build reads {VERSION}",
                load(W_VERSION)
            )));
        }
        if load(W_LOSS_ENTRIES) != LOG_ENTRIES as u64 || load(W_ERROR_ENTRIES) != LOG_ENTRIES as u64
        {
            return Err(not(format!(
                "{} loss and {} error entries, expected {LOG_ENTRIES}",
                load(W_LOSS_ENTRIES),
                load(W_ERROR_ENTRIES)
            )));
        }
        if load(W_HISTOGRAMS) != HISTOGRAMS as u64 {
            return Err(not(format!(
                "{} histograms, expected {HISTOGRAMS}",
                load(W_HISTOGRAMS)
            )));
        }
        let records = load(W_RECORDS) as usize;
        if records == 0 || RECORDS_BASE + records * RECORD_WORDS > words.len() {
            return Err(not(format!(
                "{records} records do not fit in {} words",
                words.len()
            )));
        }
        Ok(Self { words, records })
    }

    /// The writing process's pid.
    pub fn pid(&self) -> u32 {
        self.words
            .region()
            .and_then(|r| weft_shm::liveness::ProcessId::from_word(r.info().creator))
            .map_or(0, |p| p.pid)
    }

    /// When the file was made, ns since the Unix epoch.
    pub fn created_wall_ns(&self) -> u64 {
        self.words.region().map_or(0, |r| r.info().created_wall_ns)
    }

    /// The process's label.
    pub fn process_label(&self) -> String {
        load_text(&self.words, W_PROCESS_LABEL, PROCESS_LABEL_LEN)
    }

    /// Whether the writing process is alive, hung or dead. Probes the process.
    pub fn process_state(&self) -> ProcessState {
        if self.closed_wall_ns().is_some() {
            return ProcessState::Closed;
        }
        match self.words.region().map(Region::creator_state) {
            Some(CreatorState::Alive) => ProcessState::Alive,
            Some(CreatorState::Stale) => ProcessState::Hung,
            _ => ProcessState::Dead,
        }
    }

    /// When the process closed the file cleanly (wall-clock ns since the
    /// Unix epoch); `None` while open, or if it died without closing.
    pub fn closed_wall_ns(&self) -> Option<u64> {
        match acquire(&self.words, W_CLOSED_AT) {
            0 => None,
            t => Some(t),
        }
    }

    /// How long ago the process closed the file cleanly (by the wall clock).
    pub fn closed_age(&self) -> Option<Duration> {
        self.closed_wall_ns()
            .map(|t| Duration::from_nanos(wall_ns().saturating_sub(t)))
    }

    /// How long ago the process last stored its heartbeat; `None` if it
    /// never did.
    pub fn heartbeat_age(&self) -> Option<Duration> {
        let beat = self.words.region()?.heartbeat_ns()?;
        Some(Duration::from_nanos(now_ns().saturating_sub(beat)))
    }

    /// Reads every live entry of a log area with `read(base)`, seqlock style.
    fn entries<T>(&self, area: usize, stride: usize, read: impl Fn(usize) -> T) -> Vec<T> {
        use std::sync::atomic::{fence, Ordering};
        let w = &self.words;
        let state = |b: usize, o: Ordering| w.get(b + E_STATE).map_or(0, |x| x.load(o));
        (0..LOG_ENTRIES)
            .filter_map(|i| {
                let b = area + i * stride;
                // SYNC POINT: pairs with `end_entry`'s Release store.
                let s1 = state(b, Ordering::Acquire);
                if s1 & 3 != LIVE {
                    return None;
                }
                let t = read(b);
                // SYNC POINT: pairs with `begin_entry`'s Release fence.
                fence(Ordering::Acquire);
                (state(b, Ordering::Relaxed) == s1).then_some(t)
            })
            .collect()
    }

    /// Every live histogram with its buckets now.
    pub fn histograms(&self) -> Vec<HistogramValue> {
        use std::sync::atomic::{fence, Ordering};
        let w = &self.words;
        let load = |i: usize| acquire(w, i);
        (0..HISTOGRAMS)
            .filter_map(|i| {
                let b = HISTOGRAM_BASE + i * HISTOGRAM_WORDS;
                // SYNC POINT: pairs with `end_entry`'s Release store.
                let s1 = load(b + E_STATE);
                if s1 & 3 != LIVE {
                    return None;
                }
                let (type_id, key, label) =
                    (load(b + 1) as u32, load(b + 2), load_text(w, b + 3, 64));
                // SYNC POINT: pairs with `begin_entry`'s Release fence.
                fence(Ordering::Acquire);
                if w.get(b + E_STATE).map_or(0, |x| x.load(Ordering::Relaxed)) != s1 {
                    return None;
                }
                let buckets: Vec<u64> = (0..HISTOGRAM_BUCKETS)
                    .map(|k| load(b + H_META + k))
                    .collect();
                Some(HistogramValue {
                    type_id,
                    key,
                    label,
                    // The buckets' sum, so the count matches them even while
                    // the writer records.
                    count: buckets.iter().sum(),
                    sum: load(b + H_SUM),
                    max: load(b + H_MAX),
                    buckets,
                })
            })
            .collect()
    }

    /// The loss report: one entry per (stream, session) that lost data.
    pub fn loss_report(&self) -> Vec<LossEntry> {
        let w = &self.words;
        let load = |i: usize| acquire(w, i);
        self.entries(LOSS_BASE, ENTRY_WORDS, |b| LossEntry {
            stream: load(b + E_KEY),
            source: load(b + E_SOURCE),
            channel: load_text(w, b + E_CHANNEL, 64),
            first_wall_ns: load(b + E_FIRST),
            last_wall_ns: load(b + E_LAST),
            events: load(b + E_COUNT),
            datagrams: load(b + E_DATAGRAMS),
            bytes: load(b + E_BYTES),
        })
    }

    /// The error log: distinct errors with their counts.
    pub fn errors(&self) -> Vec<ErrorEntry> {
        let w = &self.words;
        let load = |i: usize| acquire(w, i);
        self.entries(ERROR_BASE, ERROR_ENTRY_WORDS, |b| ErrorEntry {
            kind: load_text(w, b + E_ERR_KIND, ERROR_KIND_LEN),
            text: load_text(w, b + E_ERR_TEXT, ERROR_TEXT_LEN),
            count: load(b + E_ERR_COUNT),
            first_wall_ns: load(b + E_FIRST),
            last_wall_ns: load(b + E_LAST),
        })
    }

    /// The value of record `id` if it is still the counter [`counters`]
    /// found there (same state word: not freed, not reused since): two
    /// loads, no allocation, for a sampler that reads a few counters a
    /// thousand times a second. `state` is from [`record_state`].
    ///
    /// [`counters`]: Self::counters
    /// [`record_state`]: Self::record_state
    pub fn value_if(&self, id: usize, state: u64) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let b = record_base(id);
        let value = self.words.get(b + R_VALUE)?.load(Ordering::Acquire);
        (self.words.get(b + R_STATE)?.load(Ordering::Acquire) == state).then_some(value)
    }

    /// Record `id`'s state word (its generation and state), for
    /// [`value_if`](Self::value_if).
    pub fn record_state(&self, id: usize) -> Option<u64> {
        use std::sync::atomic::Ordering;
        Some(
            self.words
                .get(record_base(id) + R_STATE)?
                .load(Ordering::Acquire),
        )
    }

    /// Every live counter with its value now. A record being rewritten while
    /// read is left out of this pass.
    ///
    /// A closed file (see [`CountersFile::close_lingering`]) also shows the
    /// counters freed in the last [`CLOSING_WINDOW`] before its last
    /// heartbeat, with their final values: the channel ends an application
    /// dropped just before its node (Rust drops them first) closed with the
    /// process, and their totals are what a last scrape wants.
    pub fn counters(&self) -> Vec<CounterValue> {
        use std::sync::atomic::{fence, Ordering};
        let w = &self.words;
        let load = |i: usize, o: Ordering| w.get(i).map_or(0, |x| x.load(o));
        let closing_since = self
            .closed_wall_ns()
            .and_then(|_| self.words.region()?.heartbeat_ns())
            .map(|beat| beat.saturating_sub(CLOSING_WINDOW.as_nanos() as u64));
        let mut out = Vec::new();
        // Freed with the process: (freed at, value), added after the live.
        let mut closing: Vec<(u64, CounterValue)> = Vec::new();
        for i in 0..self.records {
            let b = record_base(i);
            // SYNC POINT: pairs with the allocator's Release store of "live".
            let s1 = load(b + R_STATE, Ordering::Acquire);
            let freed_at = load(b + R_FREED_AT, Ordering::Relaxed);
            let closed_with = s1 & 3 == FREED && closing_since.is_some_and(|t| freed_at >= t);
            if s1 & 3 != LIVE && !closed_with {
                continue;
            }
            let type_id = load(b + R_TYPE, Ordering::Relaxed) as u32;
            let key = load(b + R_KEY, Ordering::Relaxed);
            let label = load_text(w, b + R_LABEL, LABEL_LEN);
            // SYNC POINT: orders the metadata loads before the second state
            // load; pairs with the allocator's Release fence.
            fence(Ordering::Acquire);
            if load(b + R_STATE, Ordering::Relaxed) != s1 {
                continue;
            }
            let c = CounterValue {
                id: i,
                type_id,
                key,
                label,
                value: load(b + R_VALUE, Ordering::Acquire),
            };
            if closed_with {
                closing.push((freed_at, c));
            } else {
                out.push(c);
            }
        }
        // One per thing counted: a live counter wins, else the last freed.
        closing.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (_, c) in closing {
            let same =
                |o: &CounterValue| (o.type_id, o.key, &o.label) == (c.type_id, c.key, &c.label);
            if !out.iter().any(same) {
                out.push(c);
            }
        }
        out
    }
}

/// Every `counters.*` file in `dir`: its path and the reader, or why it
/// could not be read (a corrupt or foreign file does not hide the others).
pub fn scan(
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, Result<CountersReader, CountersError>)> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("counters."))
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let r = CountersReader::open(&p);
            (p, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tag: &str) -> CountersConfig {
        let dir = std::env::temp_dir().join(format!("weft-counters-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        CountersConfig {
            shm: ShmOptions::in_dir(dir),
            records: 8,
            reuse_delay: Duration::from_millis(50),
        }
    }

    #[test]
    fn a_reader_sees_labels_and_values_the_writer_set() {
        let c = cfg("rw");
        let file = CountersFile::create(&c, "trader-1").unwrap();
        let a = file
            .allocate(types::TASK_WORK, 7, "udp-send 239.1.2.3:4000/7")
            .unwrap();
        let b = file.allocate(types::AGENT_BUSY_NS, 0, "agent 0").unwrap();
        a.add(5);
        a.add(6);
        b.set(1_000);
        b.max(10);
        let r = CountersReader::open(file.path().unwrap()).unwrap();
        assert_eq!(r.pid(), std::process::id());
        assert_eq!(r.process_label(), "trader-1");
        assert_eq!(r.process_state(), ProcessState::Alive);
        let got = r.counters();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (
                got[0].type_id,
                got[0].key,
                got[0].label.as_str(),
                got[0].value
            ),
            (types::TASK_WORK, 7, "udp-send 239.1.2.3:4000/7", 11)
        );
        assert_eq!((got[1].label.as_str(), got[1].value), ("agent 0", 1_000));
        drop(a);
        assert_eq!(r.counters().len(), 1, "a freed counter disappears");
        let _ = std::fs::remove_dir_all(&c.shm.dir);
    }

    #[test]
    fn a_freed_record_waits_out_the_reuse_delay() {
        let c = cfg("reuse");
        let file = CountersFile::create(&c, "p").unwrap();
        let all: Vec<_> = (0..file.records)
            .map(|i| file.allocate(1, i as u64, "x").unwrap())
            .collect();
        assert!(matches!(
            file.allocate(1, 99, "y"),
            Err(CountersError::Full(_))
        ));
        drop(all);
        assert!(
            matches!(file.allocate(1, 99, "y"), Err(CountersError::Full(_))),
            "no record is reused at once"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(file.allocate(1, 99, "y").is_ok());
        let _ = std::fs::remove_dir_all(&c.shm.dir);
    }

    /// A label with a newline or an escape sequence (any process can write
    /// its own counters file) reads back with them replaced, so it cannot
    /// forge a row of `weft-stat list` or drive the terminal.
    #[test]
    fn control_characters_in_a_label_read_back_replaced() {
        let c = cfg("ctrl");
        let file = CountersFile::create(&c, "evil\n12345 forged\x1b[2J").unwrap();
        let _k = file.allocate(1, 0, "a\rb\tc").unwrap();
        let r = CountersReader::open(file.path().unwrap()).unwrap();
        assert_eq!(r.process_label(), "evil?12345 forged?[2J");
        assert_eq!(r.counters()[0].label, "a?b?c");
        let _ = std::fs::remove_dir_all(&c.shm.dir);
    }

    #[test]
    fn long_labels_are_cut_at_a_character_boundary() {
        let c = cfg("label");
        let file = CountersFile::create(&c, &"é".repeat(100)).unwrap();
        let _k = file.allocate(1, 0, &"ü".repeat(100)).unwrap();
        let r = CountersReader::open(file.path().unwrap()).unwrap();
        assert_eq!(r.process_label(), "é".repeat(32));
        assert_eq!(r.counters()[0].label, "ü".repeat(48));
        let _ = std::fs::remove_dir_all(&c.shm.dir);
    }

    #[test]
    fn a_foreign_or_corrupt_file_is_an_error_and_scan_goes_on() {
        let c = cfg("scan");
        let file = CountersFile::create(&c, "good").unwrap();
        let dir = c.shm.dir.clone();
        std::fs::write(dir.join("counters.1"), b"not a weft region at all").unwrap();
        let found = scan(&dir);
        assert_eq!(found.len(), 2);
        let bad = found
            .iter()
            .find(|(p, _)| p.ends_with("counters.1"))
            .unwrap();
        assert!(bad.1.is_err());
        let good = found
            .iter()
            .find(|(p, _)| p == file.path().unwrap())
            .unwrap();
        assert_eq!(good.1.as_ref().unwrap().process_label(), "good");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_type_has_one_valid_metric_name() {
        let mut names = std::collections::HashSet::new();
        for m in types::METRICS {
            assert!(
                types::name(m.type_id).is_some(),
                "type {} has a name",
                m.type_id
            );
            assert!(names.insert(m.name), "{} is unique", m.name);
            assert!(m.name.starts_with("weft_"));
            assert!(m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(m.counter, m.name.ends_with("_total"), "{}", m.name);
            assert!(!m.name.contains("_ns"), "{}: base units", m.name);
        }
        for t in 0..100 {
            assert_eq!(
                types::name(t).is_some(),
                types::metric(t).is_some(),
                "type {t}"
            );
        }
        for t in 100..300 {
            let histogram = types::HISTOGRAM_METRICS.iter().any(|h| h.0 == t);
            assert_eq!(types::name(t).is_some(), histogram, "type {t}");
        }
    }

    #[test]
    fn the_loss_report_and_error_log_keep_first_last_and_counts() {
        let c = cfg("logs");
        let file = CountersFile::create(&c, "p").unwrap();
        let report = file.loss_report(9, 0xabc, "udp://239.1.2.3:4000");
        report.record(3, 3_000);
        report.record(2, 2_000);
        let long = "subscription udp://239.1.2.3:4000 stream 9: datagrams dropped by the kernel \
                    (receive buffer full: raise udp.rcvbuf), a text longer than the 88 bytes \
                    version 1 kept";
        file.log_error("kernel_drops", long, 4);
        file.log_error("kernel_drops", long, 1);
        file.log_error("other", "another", 1);
        // The same text of another kind is another error.
        file.log_error("dropped", "another", 1);
        let r = CountersReader::open(file.path().unwrap()).unwrap();
        let loss = r.loss_report();
        assert_eq!(loss.len(), 1);
        let l = &loss[0];
        assert_eq!(
            (
                l.stream,
                l.source,
                l.channel.as_str(),
                l.events,
                l.datagrams,
                l.bytes
            ),
            (9, 0xabc, "udp://239.1.2.3:4000", 2, 5, 5_000)
        );
        assert!(l.first_wall_ns > 0 && l.first_wall_ns <= l.last_wall_ns);
        let errors = r.errors();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].count, 5);
        assert_eq!(errors[0].kind, "kernel_drops");
        assert_eq!(errors[0].text, long, "kept whole");
        assert_eq!((errors[2].kind.as_str(), errors[2].count), ("dropped", 1));
        assert!(errors[0].first_wall_ns <= errors[0].last_wall_ns);
        // A full log reuses the entry seen least recently.
        for i in 0..LOG_ENTRIES {
            file.log_error("other", &format!("error {i}"), 1);
        }
        let texts: Vec<_> = r.errors().into_iter().map(|e| e.text).collect();
        assert_eq!(texts.len(), LOG_ENTRIES);
        assert!(texts.contains(&format!("error {}", LOG_ENTRIES - 1)));
        let _ = std::fs::remove_dir_all(&c.shm.dir);
    }

    #[test]
    fn buckets_cover_every_value_in_order_within_7_percent() {
        let mut last = 0;
        for i in 1..HISTOGRAM_BUCKETS {
            assert!(bucket_low(i) > bucket_low(i - 1));
            assert_eq!(bucket_of(bucket_low(i)), i);
            assert_eq!(bucket_of(bucket_low(i) - 1), i - 1);
            if i > 16 {
                let width = bucket_low(i) - bucket_low(i - 1);
                assert!(width as f64 / bucket_low(i - 1) as f64 <= 1.0 / 15.0);
            }
            last = i;
        }
        assert_eq!(bucket_of(u64::MAX), last);
    }

    #[test]
    fn a_reader_gets_the_histograms_percentiles() {
        let c = cfg("hist");
        let file = CountersFile::create(&c, "p").unwrap();
        let h = file.histogram(types::AGENT_CYCLE_NS, 0, "agent-0 cycle");
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let r = CountersReader::open(file.path().unwrap()).unwrap();
        let got = r.histograms();
        assert_eq!(got.len(), 1);
        let g = &got[0];
        assert_eq!(
            (g.count, g.max, g.sum),
            (10_000, 10_000, 10_000 * 10_001 / 2)
        );
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let v = g.quantile(q) as f64;
            assert!(v >= exact && v <= exact * 1.07, "q{q}: {v}");
        }
        assert_eq!(g.quantile(1.0), 10_000);
        assert_eq!(g.count_at_most(15), 15);
        drop(h);
        assert!(r.histograms().is_empty());
        let _ = std::fs::remove_dir_all(&c.shm.dir);
    }

    #[test]
    fn private_counters_count_without_a_file() {
        let file = CountersFile::private(4);
        let k = file.allocate(1, 0, "x").unwrap();
        k.add(3);
        assert_eq!(k.get(), 3);
        assert!(file.path().is_none());
    }
}
