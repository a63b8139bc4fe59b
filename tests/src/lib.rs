//! Helpers shared by the cross-process tests and their peer processes
//! (`src/bin/shm-peer.rs`): deterministic frame sizes and contents, so that a
//! receiver can check every byte of frame `seq` without being told what was sent.
#![deny(unsafe_code)]

pub mod alloc_count;

/// `n` scaled by `WEFT_TEST_SCALE` (default 1.0, at least 1), so slow tools can
/// shrink a test's counts without changing its structure.
pub fn scaled(n: u64) -> u64 {
    let scale: f64 = std::env::var("WEFT_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale) as u64).max(1)
}

/// SplitMix64: a tiny, well-mixed, seedable generator.
#[inline]
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Payload size of frame `seq` for a stream seeded with `seed`: 1..=`max`.
#[inline]
pub fn size_of_frame(seed: u64, seq: u64, max: usize) -> usize {
    (splitmix(seed ^ seq.wrapping_mul(0xA24B_AED4_963E_E407)) % max as u64) as usize + 1
}

/// Fills `buf` with the contents of frame `seq`: its first 8 bytes (as far as they
/// fit) are `seq` little-endian, the rest a keyed pseudo-random stream, so a
/// reordered, torn or stale frame never matches.
#[inline]
pub fn fill_frame(seed: u64, seq: u64, buf: &mut [u8]) {
    let head = seq.to_le_bytes();
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&head[..n]);
    for (i, chunk) in buf[n..].chunks_mut(8).enumerate() {
        let w = splitmix(seed ^ seq.rotate_left(17) ^ i as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// Whether `buf` is exactly frame `seq`'s contents (no allocation).
#[inline]
pub fn frame_matches(seed: u64, seq: u64, buf: &[u8]) -> bool {
    let head = seq.to_le_bytes();
    let n = buf.len().min(8);
    if buf[..n] != head[..n] {
        return false;
    }
    buf[n..].chunks(8).enumerate().all(|(i, chunk)| {
        let w = splitmix(seed ^ seq.rotate_left(17) ^ i as u64).to_le_bytes();
        chunk == &w[..chunk.len()]
    })
}

/// The sequence number at the start of a payload of at least 8 bytes.
#[inline]
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    payload
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_check_themselves() {
        let mut buf = vec![0; 100];
        fill_frame(7, 42, &mut buf);
        assert!(frame_matches(7, 42, &buf));
        assert!(!frame_matches(7, 43, &buf));
        buf[50] ^= 1;
        assert!(!frame_matches(7, 42, &buf));
        assert!((1..=1024).contains(&size_of_frame(1, 5, 1024)));
    }
}
