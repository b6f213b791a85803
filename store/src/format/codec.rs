//! Serialisation of repository objects: CBOR (via `ciborium`) for packs'
//! headers, index files, trees and manifests; JSON for the small objects a
//! person may want to read (config, keys). Owns the decoding limits; never
//! knows what the objects mean.

use crate::error::{Result, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Deep enough for every object cairn writes (trees are not nested in one
/// object: subdirectories are separate blobs), shallow enough that hostile
/// input cannot exhaust the stack.
const RECURSION_LIMIT: usize = 32;

#[allow(
    clippy::expect_used,
    reason = "encoding our own types into memory has no failure to report"
)]
pub fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and every type we encode has only
    // serialisable fields.
    ciborium::into_writer(value, &mut bytes).expect("CBOR encoding into memory cannot fail");
    bytes
}

pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8], object: &str) -> Result<T> {
    ciborium::de::from_reader_with_recursion_limit(bytes, RECURSION_LIMIT)
        .map_err(|error| StoreError::corrupt(object, format!("undecodable CBOR: {error}")))
}

#[allow(
    clippy::expect_used,
    reason = "encoding our own types into memory has no failure to report"
)]
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our types have string keys and no failing Serialize impls.
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON encoding cannot fail");
    bytes.push(b'\n');
    bytes
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8], object: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::corrupt(object, format!("undecodable JSON: {error}")))
}

/// Refuses an object whose format version this build does not know.
pub fn check_version(found: u32, expected: u32, object: &str) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::corrupt(
            object,
            format!(
                "format version {found} is not supported (this cairn reads version {expected})"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[allow(dead_code)]
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        #[allow(dead_code)]
        list: Vec<u64>,
    }

    #[test]
    fn hostile_lengths_are_refused_without_huge_allocations() {
        // {"bytes": h'<claims 2^62 bytes>'} and a list claiming 2^62 items.
        let mut lying_bytes = vec![0xA2, 0x65];
        lying_bytes.extend_from_slice(b"bytes");
        lying_bytes.push(0x5B);
        lying_bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
        lying_bytes.extend_from_slice(b"abc");
        assert!(from_cbor::<Holder>(&lying_bytes, "test").is_err());

        let mut lying_list = vec![0xA2, 0x65];
        lying_list.extend_from_slice(b"bytes");
        lying_list.push(0x40);
        lying_list.push(0x64);
        lying_list.extend_from_slice(b"list");
        lying_list.push(0x9B);
        lying_list.extend_from_slice(&(1u64 << 62).to_be_bytes());
        lying_list.push(0x01);
        assert!(from_cbor::<Holder>(&lying_list, "test").is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let nested = vec![0x81; 10_000];
        assert!(from_cbor::<serde_json::Value>(&nested, "test").is_err());
    }
}
