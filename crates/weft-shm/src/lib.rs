//! Shared-memory regions and lock-free rings: weft's intra-host transport.
//!
//! Processes on one host exchange frames through rings in files under
//! `/dev/shm/weft-UID` (or `$WEFT_DIR`), with no syscall, lock or allocation per frame:
//!
//! - [`spsc`]: one producer, one consumer, variable-length frames, zero-copy
//!   claim → write → commit and in-place poll.
//! - [`broadcast`]: one producer, up to N consumers joining and leaving at run time;
//!   *reliable* (the slowest live consumer back-pressures, a stuck one is evicted
//!   after a timeout) or *overwrite* (the producer never waits; a lapped consumer is
//!   told how many frames it missed).
//! - [`mpsc`]: many producers claim space with one atomic add; a producer that dies
//!   between claim and commit is skipped and reported.
//!
//! Every region starts with a versioned header ([`region`]) that is validated before
//! anything else is read, so a corrupt, foreign, truncated or half-created file is a
//! typed [`ShmError`], never a crash. Peers are watched with pid + start time and an
//! optional heartbeat ([`PeerState`]).
//!
//! What it costs: a frame is one header word plus the payload, rounded up to
//! [`FRAME_ALIGNMENT`] (32) bytes, so a frame of up to 64 bytes is one cache line
//! (the one-producer broadcast ring aligns to 8, [`BROADCAST_FRAME_ALIGNMENT`], and
//! so do SPSC frames over 64 bytes: [`spsc::frame_bytes`]);
//! publishing it is a few stores to that line; the consumer finds it with one load. Setup (create, attach) maps and prefaults the file once.
//!
//! ```
//! use weft_shm::{spsc, ShmOptions};
//! let dir = std::env::temp_dir().join(format!("weft-doc-{}", std::process::id()));
//! let opts = ShmOptions::in_dir(&dir);
//! let mut tx = spsc::Producer::create(&opts, "orders", &spsc::SpscConfig::new(64 * 1024))?;
//! let mut rx = spsc::Consumer::attach(&opts, "orders")?;
//!
//! let mut claim = tx.try_claim(5, 1).expect("empty ring has room");
//! claim.payload_mut().copy_from_slice(b"hello");
//! claim.commit();
//!
//! let n = rx.poll(16, |frame| assert_eq!(frame.payload(), b"hello"))?;
//! assert_eq!(n, 1);
//! # drop((tx, rx)); std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The ring algorithms are written over a plain memory block (`mem`), so the same
//! code runs over heap memory in unit tests, over loom's model (`RUSTFLAGS="--cfg
//! loom"`) and over a mapping. `docs/shm.md` draws every layout and states the
//! memory-ordering protocol.
#![warn(missing_docs)]

pub mod broadcast;
mod error;
pub mod frame;
pub mod liveness;
mod mem;
pub mod mp_broadcast;
pub mod mpsc;
mod peer;
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
mod sigbus;
pub mod spsc;
mod sync;
pub mod terminate;

pub use error::{ClaimError, PollError, ShmError};
pub use frame::{Frame, BROADCAST_FRAME_ALIGNMENT, FRAME_ALIGNMENT};
pub use peer::{EvictReason, Eviction, GoneReason, PeerState};
#[cfg(not(loom))]
pub use region::{CreatorState, Region, RegionInfo, RingKind, ShmOptions, WordRef, Words};
