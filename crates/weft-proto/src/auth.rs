//! Optional per-channel authentication: HMAC-SHA256 (RFC 2104) over the whole
//! datagram with a shared secret, truncated to 16 bytes (RFC 4868 §2.6 allows
//! truncation to 128 bits) and appended as a trailer.
//!
//! ```text
//! +------------------------------------------+---------------------------+
//! | frame (common header with kind | 0x80)   | tag: HMAC-SHA256(key, frame)[..16] |
//! +------------------------------------------+---------------------------+
//! ```
//!
//! The high bit of the kind byte marks an authenticated datagram, so a
//! receiver without the key drops it as such ([`crate::wire::WireError::NeedsKey`])
//! instead of misreading it, and one with the key drops every datagram that
//! does not carry a valid tag. The tag covers the header, so a captured
//! datagram cannot be moved to another stream or session or have its
//! sequence numbers or payload changed. What it does not stop is a replay of
//! a datagram that was sent: the protocol treats those as the duplicates they
//! are (`docs/operations.md`, threat model).
//!
//! Cost: one HMAC per datagram sent and received; the key's inner and outer
//! states are computed once, so a tag is the hash of the datagram plus two
//! compression calls. SHA-256 uses the CPU's SHA extensions where it has them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag appended to an authenticated datagram.
pub const TAG_LEN: usize = 16;

/// The bit of the kind byte (offset 3) that marks an authenticated datagram.
pub const AUTH_FLAG: u8 = 0x80;

/// A shared secret for authenticating a channel's datagrams, with its HMAC
/// state prepared. `Debug` never shows the key.
#[derive(Clone)]
pub struct AuthKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// A key that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "authentication key: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

impl AuthKey {
    /// Smallest key accepted, in bytes (128 bits).
    pub const MIN_LEN: usize = 16;

    /// A key of at least [`MIN_LEN`](Self::MIN_LEN) secret bytes.
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < Self::MIN_LEN {
            return Err(KeyError(format!(
                "{} bytes: expected at least {} (generate one with `head -c 32 /dev/urandom | xxd -p -c 64`)",
                secret.len(),
                Self::MIN_LEN
            )));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|e| KeyError(format!("rejected by HMAC: {e}")))?;
        Ok(Self { mac })
    }

    /// A key written as hexadecimal digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError(
                "expected an even number of hexadecimal digits".into(),
            ));
        }
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or(0))
            .collect();
        Self::new(&bytes)
    }

    fn tag(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Marks the frame in `buf[..len]` authenticated and appends its tag;
    /// returns the datagram's length, or `None` if `buf` has no room for
    /// the tag (or holds no frame header).
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        if len < crate::wire::COMMON_LEN || buf.len() < len + TAG_LEN {
            return None;
        }
        buf[3] |= AUTH_FLAG;
        let tag = self.tag(&buf[..len]);
        buf[len..len + TAG_LEN].copy_from_slice(&tag[..TAG_LEN]);
        Some(len + TAG_LEN)
    }

    /// The frame inside an authenticated datagram, if its tag is valid
    /// (compared in constant time); `None` for anything else.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let len = datagram.len().checked_sub(TAG_LEN)?;
        if len < crate::wire::COMMON_LEN || datagram[3] & AUTH_FLAG == 0 {
            return None;
        }
        let (frame, tag) = datagram.split_at(len);
        let mut mac = self.mac.clone();
        mac.update(frame);
        mac.verify_truncated_left(tag).ok()?;
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_datagram_opens_and_any_change_is_refused() {
        let key = AuthKey::new(&[7; 32]).unwrap();
        let other = AuthKey::new(&[8; 32]).unwrap();
        let mut buf = [0u8; 64];
        buf[..2].copy_from_slice(b"WF");
        buf[2] = 1;
        buf[3] = 2;
        for (i, b) in buf[4..40].iter_mut().enumerate() {
            *b = i as u8;
        }
        let n = key.seal(&mut buf, 40).unwrap();
        assert_eq!(n, 40 + TAG_LEN);
        assert_eq!(buf[3], 2 | AUTH_FLAG);
        assert_eq!(key.open(&buf[..n]).map(<[u8]>::len), Some(40));
        assert_eq!(other.open(&buf[..n]), None, "another key");
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 1;
            assert_eq!(key.open(&bad[..n]), None, "bit flipped in byte {i}");
        }
        assert_eq!(key.open(&buf[..n - 1]), None, "truncated");
        assert_eq!(key.open(&buf[..40]), None, "no tag");
        assert_eq!(key.seal(&mut buf, 60), None, "no room for the tag");
    }

    #[test]
    fn keys_are_checked() {
        assert!(AuthKey::new(&[1; 15]).is_err());
        assert!(AuthKey::from_hex("00112233445566778899aabbccddeeff").is_ok());
        assert!(AuthKey::from_hex("0011").is_err(), "too short");
        assert!(AuthKey::from_hex("zz112233445566778899aabbccddeeff").is_err());
        assert!(AuthKey::from_hex(" 00112233445566778899aabbccddeeff0\n").is_err());
        assert_eq!(
            format!("{:?}", AuthKey::new(&[1; 16]).unwrap()),
            "AuthKey(..)"
        );
    }
}
