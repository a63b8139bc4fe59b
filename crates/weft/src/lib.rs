//! weft: what applications link. Channels named by URI over shared memory and
//! UDP multicast, worker agents that run the work with an idle strategy each,
//! and the utilization accounting that tools read.
#![warn(missing_docs)]

pub mod agent;
pub mod idle;
pub mod uri;

pub use agent::{
    AgentConfig, AgentError, AgentStats, Agents, MoveTicket, TakenTask, Task, TaskId, TaskStats,
    ThreadingMode,
};
pub use idle::{IdleStrategy, Idler};
pub use uri::{ChannelUri, ShmUri, UdpUri, UriError};
