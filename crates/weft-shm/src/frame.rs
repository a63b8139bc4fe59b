//! Frame headers, shared by all three rings.
//!
//! Every frame starts on an 8-byte boundary with one little-endian 64-bit header
//! word, written last (Release) so that a reader who sees it sees the payload:
//!
//! ```text
//!  63                 32 31                  0
//! +---------------------+---------------------+
//! |      type id        |  header + payload   |   length never 0, so a zero
//! +---------------------+---------------------+   word means "nothing here yet"
//! |  payload ... padded to the next multiple of 8                 |
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

/// Rounds up to the frame alignment (8).
#[inline(always)]
pub(crate) const fn align8(n: usize) -> usize {
    (n + 7) & !7
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
