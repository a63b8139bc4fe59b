//! weft's reliable multicast protocol, as a pure state machine.
//!
//! The crate owns no socket, no clock, no thread and no OS randomness (the
//! quinn-proto and smoltcp discipline): bytes and the current time go in,
//! datagrams to send, timers and events come out, so a deterministic simulator can
//! drive it through any network it can imagine. This first part is the wire
//! format ([`wire`]): every frame as a checked view over bytes plus a typed value
//! that parses and emits, with decoders that never panic on any input.
//!
//! ```
//! use weft_proto::wire::{Frame, Header, Kind, Status};
//! let status = Frame::Status(Status { receiver_id: 7, position: 100, window: 64 });
//! let header = Header { stream_id: 1, session_id: 0xABCD };
//! let mut buf = [0u8; 64];
//! let n = status.emit(header, &mut buf).unwrap();
//! let (h, parsed) = Frame::parse(&buf[..n]).unwrap();
//! assert_eq!((h, parsed.kind()), (header, Kind::Status));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod receiver;
pub mod sender;
pub mod wire;

pub use receiver::{Event, LossReason, Receiver, ReceiverConfig, ReceiverStats};
pub use sender::{FlowControl, OfferError, Sender, SenderConfig, SenderEvent, SenderStats};

/// Time, in nanoseconds since an arbitrary epoch chosen by the caller (the driver's
/// monotonic clock, or the simulator's virtual clock).
pub type Nanos = u64;

/// A configuration value out of range. The message names the field and what it
/// must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Checks one condition of a configuration.
pub(crate) fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError(what()))
    }
}

/// `seq % n` for a table of `n` entries indexed by sequence number, with a
/// mask instead of a division when `n` is a power of two (as the defaults
/// are): each message takes several lookups on both ends, and the divisions
/// showed in `perf annotate` of the receiver's delivery.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeqIndex {
    n: u64,
    pow2: bool,
}

impl SeqIndex {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n: n as u64,
            pow2: n.is_power_of_two(),
        }
    }

    /// The entry of `seq`.
    #[inline]
    pub(crate) fn of(self, seq: u64) -> usize {
        (if self.pow2 {
            seq & (self.n - 1)
        } else {
            seq % self.n
        }) as usize
    }
}

/// `(i + k) % n` for `i, k < n`, without a division.
#[inline]
pub(crate) fn wrap_add(i: usize, k: usize, n: usize) -> usize {
    let j = i + k;
    if j >= n {
        j - n
    } else {
        j
    }
}

/// The sizes both ends check the same way: MTU, buffer in datagrams, largest message.
pub(crate) fn check_sizes(
    mtu: usize,
    buffer_datagrams: usize,
    max_message: usize,
) -> Result<(), ConfigError> {
    let min_mtu = wire::DATA_HEADER_LEN + wire::ENTRY_HEADER_LEN + 1;
    check((min_mtu..=u16::MAX as usize).contains(&mtu), || {
        format!("mtu {mtu}: expected {min_mtu} to 65535 bytes")
    })?;
    check((2..=1 << 24).contains(&buffer_datagrams), || {
        format!("buffer_datagrams {buffer_datagrams}: expected 2 to 2^24")
    })?;
    check(max_message > 0, || {
        "max_message 0: expected at least 1 byte".into()
    })
}

/// Where a datagram from `poll_transmit` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The stream's multicast group.
    Group,
    /// One peer (a receiver's STATUS goes to the sender's address).
    Unicast(std::net::SocketAddr),
}

/// A datagram written by `poll_transmit`: `buf[..len]` goes to `dest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written.
    pub len: usize,
    /// Where they go.
    pub dest: Destination,
}

/// SplitMix64: the protocol's only source of randomness, seeded from the config,
/// so a run is reproducible from its seeds.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask and the division agree, for powers of two and other sizes,
    /// up to the largest sequence numbers.
    #[test]
    fn a_seq_index_is_the_remainder() {
        let mut rng = SplitMix::new(7);
        for n in [2usize, 3, 7, 8, 4096, 5000, 1 << 24] {
            let index = SeqIndex::new(n);
            for seq in (0..10_000).chain((0..10_000).map(|_| rng.next_u64())) {
                assert_eq!(index.of(seq), (seq % n as u64) as usize, "{seq} % {n}");
            }
            assert_eq!(index.of(u64::MAX), (u64::MAX % n as u64) as usize);
        }
        for n in 1..10 {
            for i in 0..n {
                for k in 0..n {
                    assert_eq!(wrap_add(i, k, n), (i + k) % n);
                }
            }
        }
    }
}
