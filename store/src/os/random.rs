//! Random bytes from the operating system, for ids, keys, seeds and
//! temporary names. Owns the one error a failed read of the random source
//! becomes; never falls back to anything predictable (callers that only
//! need uniqueness choose their own fallback).

use crate::error::{Result, StoreError};

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| {
        StoreError::io(
            "reading the system random source",
            std::io::Error::other(error.to_string()),
        )
    })?;
    Ok(bytes)
}
