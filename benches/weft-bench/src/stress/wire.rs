//! What a stress message carries in its first 24 bytes (little-endian):
//!
//! ```text
//! +0   seq        u64  per publisher, 0, 1, 2 … across the whole run
//! +8   due        u64  the tick the message was scheduled for (not when it
//!                      went): latency measured from it is corrected for
//!                      coordinated omission
//! +16  step       u32  which step of the run (ramp steps, overload, …)
//! +20  publisher  u16  which publisher (many-publisher paths)
//! +22  kind       u16  DATA, or END (the publisher is done)
//! ```
//! The rest of the message (up to `--size`) is filler.

/// A message to measure.
pub const DATA: u16 = 0;
/// The publisher has sent everything; `seq` is how many DATA it sent.
pub const END: u16 = 1;

/// Bytes the stamp takes; messages are at least this long.
pub const STAMP_LEN: usize = 24;

/// The stamp of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub due: u64,
    pub step: u32,
    pub publisher: u16,
    pub kind: u16,
}

impl Stamp {
    /// Writes the stamp into the start of `msg` (at least [`STAMP_LEN`]).
    #[inline(always)]
    pub fn write(&self, msg: &mut [u8]) {
        msg[..8].copy_from_slice(&self.seq.to_le_bytes());
        msg[8..16].copy_from_slice(&self.due.to_le_bytes());
        msg[16..20].copy_from_slice(&self.step.to_le_bytes());
        msg[20..22].copy_from_slice(&self.publisher.to_le_bytes());
        msg[22..24].copy_from_slice(&self.kind.to_le_bytes());
    }

    /// Reads a stamp; `None` for a message too short to hold one.
    #[inline(always)]
    pub fn read(msg: &[u8]) -> Option<Self> {
        let m = msg.get(..STAMP_LEN)?;
        let u64_at = |i: usize| u64::from_le_bytes(m[i..i + 8].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(m[i..i + 2].try_into().unwrap_or_default());
        Some(Self {
            seq: u64_at(0),
            due: u64_at(8),
            step: u32::from_le_bytes(m[16..20].try_into().unwrap_or_default()),
            publisher: u16_at(20),
            kind: u16_at(22),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_a_short_message_has_none() {
        let s = Stamp {
            seq: 1 << 40,
            due: 77,
            step: 5,
            publisher: 3,
            kind: END,
        };
        let mut m = [0u8; 64];
        s.write(&mut m);
        assert_eq!(Stamp::read(&m), Some(s));
        assert_eq!(Stamp::read(&m[..23]), None);
    }
}
