//! Errors. Setup and control problems are one [`ShmError`] enum whose messages say
//! what to do; hot-path outcomes are small `Copy` enums ([`ClaimError`],
//! [`PollError`]) that say why, as crossbeam-channel's `TrySendError` does.

use std::path::PathBuf;

/// Why a region or ring could not be created, attached, or reclaimed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The region file does not exist.
    #[error("shared-memory region {path:?} not found: is the process that creates it running, and does WEFT_DIR match?")]
    NotFound {
        /// The file looked for.
        path: PathBuf,
    },
    /// Exclusive create found a file already there.
    #[error("shared-memory region {path:?} already exists: another process owns it, or a crashed one left it (see `reclaim`)")]
    AlreadyExists {
        /// The file in the way.
        path: PathBuf,
    },
    /// The file exists but this user may not open it read-write.
    #[error("permission denied opening {path:?}: regions are created mode 0600 by default; run as the creating user or create with a wider mode")]
    PermissionDenied {
        /// The file.
        path: PathBuf,
    },
    /// The weft directory may not be trusted: another user owns it, or others
    /// may write to it, or it is not a directory.
    #[error("refusing the weft directory {path:?}: {why}")]
    UntrustedDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        why: String,
    },
    /// Where a region file was expected there is a symbolic link, a FIFO, a
    /// device or a directory; it is never followed or opened.
    #[error("{path:?} is {found}, not a region file; refusing to open it (remove it if it is not yours)")]
    NotARegularFile {
        /// The name.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// The file does not start with weft's magic number.
    #[error(
        "{path:?} is not a weft shared-memory region (magic {found:#018x}); refusing to touch it"
    )]
    NotWeft {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes found.
        found: u64,
    },
    /// Made by a weft with another layout version.
    #[error("{path:?} has layout version {found}, this build reads version {expected}: run both processes on the same weft version")]
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The creator has not finished initialising it (or died while doing so).
    #[error("{path:?} is not initialised yet (creator pid {creator_pid}): retry shortly, or reclaim it if that process is gone")]
    NotInitialized {
        /// The file.
        path: PathBuf,
        /// Pid recorded by the creator, 0 if not yet written.
        creator_pid: u32,
    },
    /// The file is shorter than its header says, or shorter than a header.
    #[error("{path:?} is truncated: {len} bytes, expected {expected}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The size its header requires (or the header's own size).
        expected: u64,
    },
    /// A header field is inconsistent (a foreign writer or corruption).
    #[error("{path:?} is corrupt: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The region holds another kind of ring than the one asked for.
    #[error("{path:?} holds a {found} ring, not a {expected} ring")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// Kind in the file.
        found: &'static str,
        /// Kind asked for.
        expected: &'static str,
    },
    /// Reclaim refused: the creator is alive.
    #[error("{path:?} is owned by live process {pid}: stop it before reclaiming the region")]
    OwnerAlive {
        /// The file.
        path: PathBuf,
        /// The creator's pid.
        pid: u32,
    },
    /// The single-holder role (SPSC producer or consumer, MPSC consumer, a slot)
    /// is held by a live process, or all slots are taken.
    #[error("{path:?}: {role} is already taken (by pid {pid}; 0 means all slots are in use)")]
    RoleTaken {
        /// The file.
        path: PathBuf,
        /// Which role.
        role: &'static str,
        /// Who holds it.
        pid: u32,
    },
    /// `mlock` failed.
    #[error("mlock of {len} bytes of {path:?} failed ({source}); RLIMIT_MEMLOCK is {limit}: raise it (ulimit -l, or LimitMEMLOCK= in systemd) or create without mlock")]
    Mlock {
        /// The file.
        path: PathBuf,
        /// Bytes asked.
        len: usize,
        /// The soft limit, as text ("unlimited" or bytes).
        limit: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A parameter is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Any other OS error, with what was being done.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a claim (or offer) failed. Nothing was written; try again later or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// No room until the consumer(s) catch up: back-pressure.
    #[error("ring full: back-pressured by the consumer")]
    Full,
    /// The frame is larger than the ring's maximum payload.
    #[error("payload of {len} bytes exceeds the ring's maximum of {max}")]
    TooLarge {
        /// Asked.
        len: usize,
        /// The maximum payload.
        max: usize,
    },
    /// The type id is one of the rings' reserved ids.
    #[error("type id {0:#x} is reserved (user type ids are below 0xFFFFFF00)")]
    ReservedType(u32),
    /// The other side has closed the ring.
    #[error("ring closed by the consumer")]
    Closed,
    /// Reliable broadcast with no live consumer: nobody to deliver to.
    #[error("no consumer connected")]
    NotConnected,
}

/// Something a poll must report before it can carry on. Only [`PollError::Closed`]
/// and [`PollError::Evicted`] are final; after the others, the next poll continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The producer closed the ring and every frame has been read.
    #[error("ring closed by the producer and drained")]
    Closed,
    /// The ring holds a header that cannot be valid: a foreign or faulty writer.
    /// The consumer stops at that position rather than hand out garbage.
    #[error("corrupt frame header {header:#018x} at position {position}")]
    Corrupt {
        /// Ring position (bytes since creation).
        position: u64,
        /// The header word found.
        header: u64,
    },
    /// Overwrite-mode broadcast: the producer lapped this consumer, which has
    /// resynchronised to the newest frame. `missed` frames were never seen.
    #[error("lapped by the producer: {missed} frames missed")]
    Lapped {
        /// Frames skipped over.
        missed: u64,
    },
    /// Reliable broadcast: this consumer was evicted (dead to the producer,
    /// stuck for the eviction timeout, or too slow for the slow-consumer
    /// timeout). Join again to resume from the newest frame.
    #[error("evicted by the producer (stuck or too slow)")]
    Evicted,
    /// Reliable broadcast: this consumer was evicted while the frames this
    /// poll handed to the callback (ring positions `from..to`) were being
    /// read in place, so the producer may have written over them meanwhile:
    /// treat them as lost. Join again to resume from the newest frame.
    #[error("evicted while reading frames at positions {from}..{to}: they may have changed during the read")]
    Overrun {
        /// Ring position of the first frame handed over in that poll.
        from: u64,
        /// Ring position after the last.
        to: u64,
    },
    /// MPSC: a producer died between claim and commit; its frame was skipped.
    #[error("skipped a {len}-byte frame at position {position} left by dead producer pid {pid}")]
    SkippedDeadProducer {
        /// Ring position of the frame.
        position: u64,
        /// Its length, header included.
        len: u64,
        /// The dead producer.
        pid: u32,
    },
}
