//! Index files: which pack holds each blob, and where.
//!
//! Index files in the repository are the truth: immutable CBOR objects, each
//! listing some packs with their sizes and blobs, named by their BLAKE3 hash.
//! Index files may overlap (a blob or pack may be listed twice, e.g. by two
//! concurrent backups); readers take any listing. This module owns the index
//! file encoding and its validation; it never reads pack contents and does
//! no I/O (the local cache of lookups is `crate::index`).

use crate::error::{Result, StoreError};
use crate::format::codec::{from_cbor, to_cbor};
use crate::format::pack::{
    BlobEntry, PACK_MAGIC, TRAILER_SIZE, check_blob_lengths, check_listing_version, listing_version,
};
use crate::id::Id;
use serde::{Deserialize, Serialize};

/// One pack as an index file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    pub id: Id,
    /// The pack's total size in bytes.
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    pub version: u32,
    pub packs: Vec<PackEntry>,
}

/// Where a blob is: its pack and its entry there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub entry: BlobEntry,
}

impl IndexFile {
    pub fn new(packs: Vec<PackEntry>) -> Self {
        // Version 1 unless a pack has shared frames, so that index files
        // without them stay readable by a cairn from before them.
        IndexFile {
            version: listing_version(packs.iter().flat_map(|pack| &pack.blobs)),
            packs,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Decodes and checks that every blob lies inside its pack's blob area.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let index: IndexFile = from_cbor(bytes, object)?;
        check_listing_version(index.version, &[], object)?;
        for pack in &index.packs {
            check_listing_version(index.version, &pack.blobs, object)?;
            let blob_area_end = pack.size.saturating_sub(TRAILER_SIZE);
            for blob in &pack.blobs {
                check_blob_lengths(blob, || object.to_string())?;
                let end = blob.offset.checked_add(u64::from(blob.length));
                if blob.offset < PACK_MAGIC.len() as u64
                    || end.is_none_or(|end| end > blob_area_end)
                {
                    return Err(StoreError::corrupt(
                        object,
                        format!(
                            "blob {} at {}+{} lies outside pack {} ({} bytes)",
                            blob.id, blob.offset, blob.length, pack.id, pack.size
                        ),
                    ));
                }
            }
        }
        Ok(index)
    }
}
