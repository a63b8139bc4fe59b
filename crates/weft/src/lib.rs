//! weft: what applications link. Channels named by URI over shared memory and
//! UDP multicast, worker agents that run the work with an idle strategy each,
//! and the utilization accounting that tools read.
//!
//! ```no_run
//! use weft::{Event, Node, NodeConfig};
//! let mut node = Node::new(NodeConfig::default())?;
//! let mut sub = node.subscription("udp://239.1.2.3:40456", 7)?;
//! let mut publ = node.publication("udp://239.1.2.3:40456", 7)?;
//! while publ.offer(b"hello").is_err() {} // NotConnected until the subscriber reports
//! sub.poll(16, |e| if let Event::Message(m) = e { assert_eq!(m, b"hello") })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod agent;
pub mod channel;
pub mod config;
pub mod control;
mod doorbell;
pub mod idle;
mod node;
mod udp;
pub mod uri;

pub use agent::{
    AgentConfig, AgentError, AgentStats, Agents, MoveTicket, Mover, TakenTask, Task, TaskId,
    TaskStats, ThreadingMode,
};
pub use channel::{
    Claim, Event, LossUnit, Publication, PublishError, SubscribeError, Subscription,
};
pub use config::{parse_size, NodeConfig, UdpDefaults, ENV_KEYS};
pub use idle::{IdleStep, IdleStrategy, Idler};
pub use node::{ChannelBacklog, Gateway, Node, Undelivered};
pub use uri::{ChannelUri, ShmUri, UdpUri, UriError};
pub use weft_counters;
/// The seeded loss injector of [`UdpDefaults::loss`] (tests and demos).
pub use weft_net::LossConfig;

/// Everything that can go wrong setting weft up. Each message names what was
/// wrong and, where it helps, what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A channel URI that does not parse.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// A node setting out of range.
    #[error("node configuration: {0}")]
    Config(String),
    /// Shared memory: a file, a mapping, a foreign or corrupt region.
    #[error(transparent)]
    Shm(#[from] weft_shm::ShmError),
    /// Sockets.
    #[error(transparent)]
    Net(#[from] weft_net::NetError),
    /// Agents and threads.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A flush or close ran out of time: what was not delivered, exactly.
    #[error("not delivered in time: {0}")]
    Undelivered(node::Undelivered),
}
