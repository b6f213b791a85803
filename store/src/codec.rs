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

pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
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
