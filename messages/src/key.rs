//! WireGuard public keys. Private keys never enter this crate: they live in
//! the daemon's key store and nowhere else.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not valid standard base64.
    #[error(
        "{text:?} is not a WireGuard public key: not base64 (expected 44 characters like `wg pubkey` prints)"
    )]
    NotBase64 {
        /// The text that was parsed.
        text: String,
    },
    /// Decoded to the wrong number of bytes.
    #[error(
        "WireGuard public key {text:?} decodes to {len} bytes; a key is exactly 32 bytes (44 base64 characters)"
    )]
    WrongLength {
        /// The text that was parsed (empty when raw bytes were given).
        text: String,
        /// How many bytes it had.
        len: usize,
    },
}

/// A Curve25519 public key as WireGuard uses it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// Takes a byte slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| KeyError::WrongLength { text: String::new(), len: bytes.len() })?;
        Ok(PublicKey(arr))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Standard base64, as `wg` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The first 8 base64 characters: enough to tell keys apart in a table.
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes =
            STANDARD.decode(text.trim()).map_err(|_| KeyError::NotBase64 { text: text.to_owned() })?;
        let len = bytes.len();
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| KeyError::WrongLength { text: text.to_owned(), len })?;
        Ok(PublicKey(arr))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_base64() {
        let key = PublicKey::from_bytes([7; 32]);
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        assert_eq!(key.short(), &text[..8]);
    }

    #[test]
    fn rejects_wrong_length_and_garbage() {
        let short = STANDARD.encode([1u8; 31]);
        assert_eq!(
            short.parse::<PublicKey>().unwrap_err(),
            KeyError::WrongLength { text: short.clone(), len: 31 }
        );
        assert!(matches!("not base64!".parse::<PublicKey>(), Err(KeyError::NotBase64 { .. })));
        assert!(matches!(PublicKey::from_slice(&[0; 33]), Err(KeyError::WrongLength { len: 33, .. })));
        let err = "abc".parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.contains("\"abc\""), "{err}");
    }
}
