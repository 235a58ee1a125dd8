//! Content digests and action keys (blake3, 32 bytes), and the stable hasher
//! every key is computed with.
//!
//! Keys must never depend on `std::hash::Hash`, field order of a struct, or
//! anything platform specific: [`KeyHasher`] writes every field with an explicit
//! tag and length prefix, so two different field sequences can never collide by
//! concatenation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! digest_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                let hex = self.hex_bytes();
                String::from_utf8_lossy(&hex).into_owned()
            }

            /// Lowercase hex as ASCII bytes, without allocating.
            pub fn hex_bytes(&self) -> [u8; 64] {
                let mut out = [0u8; 64];
                for (i, byte) in self.0.iter().enumerate() {
                    out[2 * i] = HEX[usize::from(byte >> 4)];
                    out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
                }
                out
            }

            /// The first 12 hex characters, for human output.
            pub fn short(&self) -> String {
                let mut hex = self.to_hex();
                hex.truncate(12);
                hex
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = DigestParseError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hex(text).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    let hex = self.hex_bytes();
                    serializer.serialize_str(std::str::from_utf8(&hex).unwrap_or_default())
                } else {
                    self.0.serialize(serializer)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = String::deserialize(deserializer)?;
                    text.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(deserializer).map($name)
                }
            }
        }
    };
}

digest_type!(
    /// blake3 of some content: a file, a blob, or (Merkle) a partition's files.
    ContentDigest
);
digest_type!(
    /// blake3 Merkle hash of everything that determines an action's outputs
    /// (docs/internals.md, "Action keys").
    ActionKey
);

const HEX: &[u8; 16] = b"0123456789abcdef";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {text:?}: expected 64 hex characters")]
pub struct DigestParseError {
    pub text: String,
}

fn parse_hex(text: &str) -> Result<[u8; 32], DigestParseError> {
    let error = || DigestParseError {
        text: text.to_owned(),
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(error());
    }
    let mut out = [0u8; 32];
    for (index, pair) in bytes.chunks_exact(2).enumerate() {
        let high = hex_value(pair[0]).ok_or_else(error)?;
        let low = hex_value(pair[1]).ok_or_else(error)?;
        out[index] = (high << 4) | low;
    }
    Ok(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Buffers at least this long are hashed on every core by
/// [`ContentDigest::of`].
const PARALLEL_FROM: usize = 1024 * 1024;

impl ContentDigest {
    /// blake3 of `bytes`; a buffer of [`PARALLEL_FROM`] bytes or more is
    /// hashed on every core (rayon's pool).
    pub fn of(bytes: &[u8]) -> Self {
        if bytes.len() < PARALLEL_FROM {
            return ContentDigest(*blake3::hash(bytes).as_bytes());
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_rayon(bytes);
        ContentDigest(*hasher.finalize().as_bytes())
    }
}

/// A blake3 hasher that writes tagged, length-prefixed fields, for keys and
/// Merkle digests. Start it with a recipe/domain string such as
/// `"cairn/action/v1"`; bump that string whenever the sequence of fields changes.
pub struct KeyHasher {
    hasher: blake3::Hasher,
}

impl KeyHasher {
    pub fn new(domain: &str) -> Self {
        let mut hasher = KeyHasher {
            hasher: blake3::Hasher::new(),
        };
        hasher.str("domain", domain);
        hasher
    }

    /// Writes `tag`, then `bytes`, each length-prefixed.
    pub fn bytes(&mut self, tag: &str, bytes: &[u8]) -> &mut Self {
        self.raw(tag.as_bytes());
        self.raw(bytes);
        self
    }

    pub fn str(&mut self, tag: &str, text: &str) -> &mut Self {
        self.bytes(tag, text.as_bytes())
    }

    pub fn u64(&mut self, tag: &str, value: u64) -> &mut Self {
        self.bytes(tag, &value.to_le_bytes())
    }

    pub fn digest(&mut self, tag: &str, digest: &ContentDigest) -> &mut Self {
        self.bytes(tag, digest.as_bytes())
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let digest = ContentDigest::of(b"hello");
        let parsed: ContentDigest = digest.to_hex().parse().unwrap();
        assert_eq!(parsed, digest);
        assert_eq!(digest.short().len(), 12);
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!("zz".parse::<ContentDigest>().is_err());
        assert!("g".repeat(64).parse::<ContentDigest>().is_err());
    }

    #[test]
    fn fields_do_not_collide_by_concatenation() {
        let a = KeyHasher::new("t").str("x", "ab").str("x", "c").finish();
        let b = KeyHasher::new("t").str("x", "a").str("x", "bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn json_is_hex_and_postcard_is_bytes() {
        let digest = ContentDigest::of(b"x");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{digest}\""));
        let back: ContentDigest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, digest);
    }
}
