//! Frame headers, shared by all three rings.
//!
//! Every frame starts on a [`FRAME_ALIGNMENT`] boundary with one little-endian 64-bit header
//! word, written last (Release) so that a reader who sees it sees the payload:
//!
//! ```text
//!  63                 32 31                  0
//! +---------------------+---------------------+
//! |      type id        |  header + payload   |   length never 0, so a zero
//! +---------------------+---------------------+   word means "nothing here yet"
//! |  payload ... padded to the next multiple of FRAME_ALIGNMENT   |
//! ```
//!
//! The broadcast ring adds a second header word holding the frame's sequence
//! number (see `broadcast`). Type ids at and above [`FIRST_RESERVED_TYPE`] are the
//! rings' own: padding at the wrap, and a claimed-but-uncommitted MPSC frame.

/// Bytes of the common frame header.
pub const HEADER_LEN: usize = 8;

/// The first type id reserved by the rings; user type ids are below it.
pub const FIRST_RESERVED_TYPE: u32 = 0xFFFF_FF00;

/// Padding frame: fills the space up to the end of the ring when a frame does not
/// fit there; readers skip it.
pub(crate) const TYPE_PADDING: u32 = 0xFFFF_FFFF;

/// An MPSC frame whose space is claimed but not yet committed; its length is
/// already valid, so a consumer can skip it if its producer dies.
pub(crate) const TYPE_PENDING: u32 = 0xFFFF_FFFE;

/// Frames start on multiples of this many bytes (a power of two, at least 8).
///
/// 32, not 8: a frame of up to 64 bytes (a 56-byte payload) then never
/// straddles two cache lines, so a small message crosses cores as one line.
/// With 8-byte alignment a 32-byte message's 40-byte frames straddled a line
/// boundary every other frame, and a round trip of them cost about 15 %
/// more than 24-byte messages whose frames never straddle (measured with
/// `weft-bench run shm-pingpong --size 24` / `--size 32`). The price is ring
/// space: an 8-byte payload takes 32 bytes instead of 16.
pub const FRAME_ALIGNMENT: usize = 32;

/// Frames of the single-producer broadcast ring start on multiples of 8.
///
/// Its overwrite mode's loom model (three frames through a 64-byte ring,
/// the third overwriting the first) did not finish in 5 minutes with
/// 32-byte frames, where it took seconds with 8-byte ones; until that is
/// understood, this ring keeps the old alignment. Its small frames (16-byte
/// header) can straddle a cache line.
pub const BROADCAST_FRAME_ALIGNMENT: usize = 8;

/// Rounds up to the broadcast ring's frame alignment (8).
#[inline(always)]
pub(crate) const fn align_broadcast_frame(n: usize) -> usize {
    crate::mem::align_up(n, BROADCAST_FRAME_ALIGNMENT)
}

/// Rounds up to the frame alignment ([`FRAME_ALIGNMENT`]).
#[inline(always)]
pub(crate) const fn align_frame(n: usize) -> usize {
    crate::mem::align_up(n, FRAME_ALIGNMENT)
}

/// Packs a header word.
#[inline(always)]
pub(crate) const fn pack(len_with_header: usize, type_id: u32) -> u64 {
    (len_with_header as u64 & 0xFFFF_FFFF) | ((type_id as u64) << 32)
}

/// The unaligned length (header included) in a header word.
#[inline(always)]
pub(crate) const fn len_of(word: u64) -> usize {
    (word & 0xFFFF_FFFF) as usize
}

/// The type id in a header word.
#[inline(always)]
pub(crate) const fn type_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// One received frame, borrowed in place from the ring (or from the consumer's
/// copy, in overwrite mode) for the duration of a poll callback.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    type_id: u32,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    #[inline(always)]
    pub(crate) fn new(type_id: u32, payload: &'a [u8]) -> Self {
        Self { type_id, payload }
    }

    /// The user type id given when the frame was claimed.
    #[inline(always)]
    pub fn type_id(&self) -> u32 {
        self.type_id
    }

    /// The payload bytes, exactly as long as claimed.
    #[inline(always)]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload as a `T`, or `None` if its length is not `size_of::<T>()` or
    /// `T` needs more than 8-byte alignment (payloads are 8-byte aligned).
    #[inline(always)]
    pub fn as_pod<T: bytemuck::Pod>(&self) -> Option<&'a T> {
        bytemuck::try_from_bytes(self.payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_word_round_trips() {
        let w = pack(8 + 1000, 7);
        assert_eq!(len_of(w), 1008);
        assert_eq!(type_of(w), 7);
        assert_ne!(
            pack(HEADER_LEN, 0),
            0,
            "a committed header is never the zero word"
        );
    }
}
