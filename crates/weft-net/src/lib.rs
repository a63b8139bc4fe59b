//! weft's UDP multicast driver: it moves datagrams between sockets and the
//! `weft-proto` state machines, runs their timers, and counts.
//!
//! No protocol logic lives here. A [`Publication`] owns a [`weft_proto::Sender`]
//! and one unicast socket: DATA, heartbeats and repairs go from it to the group,
//! NAKs and STATUS come back to it. A [`Subscription`] owns a
//! [`weft_proto::Receiver`] and one socket bound to the group (shared with other
//! subscribers on the host through `SO_REUSEPORT`), which also sends its NAKs and
//! STATUS.
//!
//! IO is batched: one `recvmmsg` takes up to [`BATCH`] datagrams, one `sendmmsg`
//! sends everything the protocol has ready. `do_work` never blocks; a polling
//! loop chooses how to wait with [`Idle`] (spin for latency, or park in `ppoll`
//! until a socket is readable or a protocol timer is due, so two busy processes
//! do not starve a third on a small machine).
//!
//! Cost: `do_work` makes one `recvmmsg` (more while full batches keep coming), at
//! most one `sendmmsg` per [`BATCH`] datagrams to send, and reads the monotonic
//! clock (vDSO, no syscall). After `open`, nothing allocates.
//!
//! ```no_run
//! use weft_net::{ChannelConfig, Publication, Subscription};
//! use weft_proto::{Event, ReceiverConfig, SenderConfig};
//! let channel = ChannelConfig::new("239.77.0.1:40123".parse().unwrap());
//! let mut sub = Subscription::open(&channel, ReceiverConfig::new(1, 7)).unwrap();
//! let mut publ = Publication::open(&channel, SenderConfig::new(1, 42)).unwrap();
//! publ.offer(b"hello").unwrap();
//! publ.do_work();
//! sub.do_work();
//! while let Some(event) = sub.poll_event() {
//!     if let Event::Message { message: m, .. } = event {
//!         assert_eq!(m, b"hello");
//!     }
//! }
//! ```
#![warn(missing_docs)]

mod batch;
mod endpoint;
mod idle;
mod loss;
mod socket;

pub use batch::{Flushed, RecvBatch, SendBatch, BATCH};
pub use endpoint::{
    ChannelConfig, IoStats, Publication, PublicationStats, Subscription, SubscriptionStats,
    CONTROL_POLL_INTERVAL,
};
pub use idle::{Idle, Waitable};
pub use loss::{LossConfig, LossInjector};
pub use socket::{group_socket, unicast_socket, BufferGrant, Interface, SocketOptions};

use std::net::SocketAddrV4;

/// Why a channel could not be set up. Each names what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket call failed; `what` names the call and its arguments.
    #[error("{what}: {source}")]
    Io {
        /// The call, e.g. `join 239.77.0.1 on 10.77.0.2`.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No interface of that name has an IPv4 address.
    #[error("no interface named {0:?} with an IPv4 address")]
    NoSuchInterface(String),
    /// The group address is not in 224.0.0.0/4.
    #[error("{0} is not an IPv4 multicast group (expected an address in 224.0.0.0/4)")]
    NotMulticast(SocketAddrV4),
    /// A driver setting out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A protocol setting out of range.
    #[error(transparent)]
    Proto(#[from] weft_proto::ConfigError),
}
