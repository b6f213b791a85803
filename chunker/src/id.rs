//! [`Id`]: the 32-byte BLAKE3 hash that names every chunk, and every
//! repository object and blob above this crate. Owns hex and serde encodings
//! (a CBOR byte string, a hex string in JSON); never knows what kind of
//! thing an id names or where it is stored.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The BLAKE3 hash of some bytes: a chunk's uncompressed content, or a
/// repository object's stored bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The BLAKE3 hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 8 hex digits, as shown to people.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    /// Parses a full 64-digit hex id (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        blake3::Hash::from_hex(text)
            .ok()
            .map(|hash| Id(*hash.as_bytes()))
    }
}

/// How blob ids are computed. A plaintext repository names a blob by the
/// plain BLAKE3 hash of its bytes; an encrypted one by BLAKE3 in keyed mode,
/// under a key derived from the repository's id key (FORMAT.md 17.2), so
/// that an id reveals nothing to whoever lacks that key, not even whether a
/// known file is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IdHasher {
    Plain,
    Keyed([u8; 32]),
}

impl IdHasher {
    /// The id of `bytes`.
    pub fn id(&self, bytes: &[u8]) -> Id {
        match self {
            IdHasher::Plain => Id::of(bytes),
            IdHasher::Keyed(key) => Id(*blake3::keyed_hash(key, bytes).as_bytes()),
        }
    }

    /// A streaming hasher that ends in the same id as [`IdHasher::id`].
    pub fn hasher(&self) -> blake3::Hasher {
        match self {
            IdHasher::Plain => blake3::Hasher::new(),
            IdHasher::Keyed(key) => blake3::Hasher::new_keyed(key),
        }
    }

    pub fn is_keyed(&self) -> bool {
        matches!(self, IdHasher::Keyed(_))
    }
}

impl fmt::Debug for IdHasher {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdHasher::Plain => f.write_str("IdHasher::Plain"),
            IdHasher::Keyed(_) => f.write_str("IdHasher::Keyed(..)"),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes or 64 hex digits")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Id, E> {
                let array: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))?;
                Ok(Id(array))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Id, E> {
                Id::from_hex(text).ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(IdVisitor)
        } else {
            deserializer.deserialize_bytes(IdVisitor)
        }
    }
}
