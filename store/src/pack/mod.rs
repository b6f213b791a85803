//! Packs: many blobs (chunks and trees) in one immutable object.
//!
//! ```text
//! +----------+--------+--------+-----+--------+---------------+----------------+----------+
//! | CAIRNPK1 | blob 0 | blob 1 | ... | blob n | header (CBOR) | header length  | CAIRNPK1 |
//! | 8 bytes  |        |        |     |        |               | u32 little-end | 8 bytes  |
//! +----------+--------+--------+-----+--------+---------------+----------------+----------+
//! ```
//!
//! Blobs lie back to back from offset 8; the header lists them in order, so
//! the index can be rebuilt from packs alone. A pack is named by the BLAKE3
//! hash of all its bytes. This module owns that layout and the encoding of
//! one blob (zstd or raw); it never decides which blobs go into which pack
//! and never touches a backend except through `read_header`.

pub mod spans;
mod writer;
mod zstd_contexts;

pub use writer::{PackWriter, compress_blob};

use crate::backend::{Backend, ObjectKind};
use crate::codec::{check_version, from_cbor};
use crate::error::{Result, StoreError};
use crate::id::Id;
use serde::{Deserialize, Serialize};

pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPK1";
/// Header length (u32 LE) plus the closing magic.
pub const TRAILER_SIZE: u64 = 12;
const HEADER_VERSION: u32 = 1;
/// No blob cairn writes is larger (chunks are at most 16 MiB; a tree of a
/// directory with a million entries stays below this). Larger claims are lies.
pub const MAX_BLOB_SIZE: u32 = 256 * 1024 * 1024;
/// Headers are read whole into memory; this bounds what a lying trailer costs.
pub const MAX_HEADER_SIZE: u64 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// An encoded directory tree.
    Tree,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// One zstd frame.
    Zstd,
}

/// Where one blob lies in its pack and how to turn it back into its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobEntry {
    pub kind: BlobKind,
    /// BLAKE3 of the blob's uncompressed bytes.
    pub id: Id,
    /// Byte offset of the stored bytes within the pack.
    pub offset: u64,
    /// Length of the stored (possibly compressed) bytes.
    pub length: u32,
    /// Length once decompressed.
    pub raw_length: u32,
    pub compression: Compression,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackHeader {
    pub version: u32,
    pub blobs: Vec<BlobEntry>,
    /// 16 random bytes, so that a pack is never byte-for-byte a pack that
    /// already exists (perhaps one a prune has marked for deletion), even
    /// when it holds the same blobs in the same order. Optional on read.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub nonce: Option<Vec<u8>>,
}

impl PackHeader {
    /// Decodes a header and checks that its entries tile the blob area
    /// `[8, header_start)` exactly, in order.
    pub fn decode(bytes: &[u8], header_start: u64, object: &str) -> Result<Self> {
        let header: PackHeader = from_cbor(bytes, object)?;
        check_version(header.version, HEADER_VERSION, object)?;
        let mut expected_offset = PACK_MAGIC.len() as u64;
        for blob in &header.blobs {
            if blob.offset != expected_offset {
                return Err(StoreError::corrupt(
                    object,
                    format!(
                        "header places blob {} at offset {}, expected {expected_offset}",
                        blob.id, blob.offset
                    ),
                ));
            }
            check_blob_lengths(blob, || object.to_string())?;
            expected_offset += u64::from(blob.length);
        }
        if expected_offset != header_start {
            return Err(StoreError::corrupt(
                object,
                format!(
                    "header's blobs end at {expected_offset} but the header starts at {header_start}"
                ),
            ));
        }
        Ok(header)
    }
}

/// Lengths that no writer produces are refused before anything is allocated.
/// `object` names what holds the blob; it is asked for only on failure.
pub fn check_blob_lengths(blob: &BlobEntry, object: impl FnOnce() -> String) -> Result<()> {
    let plausible = blob.raw_length <= MAX_BLOB_SIZE
        && match blob.compression {
            Compression::None => blob.length == blob.raw_length,
            // zstd never expands input by more than a small bound.
            Compression::Zstd => {
                blob.length as usize <= zstd::zstd_safe::compress_bound(blob.raw_length as usize)
            }
        };
    if plausible {
        Ok(())
    } else {
        Err(StoreError::corrupt(
            object(),
            format!(
                "blob {} claims implausible lengths (stored {}, raw {}, {:?})",
                blob.id, blob.length, blob.raw_length, blob.compression
            ),
        ))
    }
}

/// Turns a blob's stored bytes back into its content, checking every length
/// and the BLAKE3 id. Corrupt data is an error, never returned.
pub fn decode_blob(entry: &BlobEntry, stored: &[u8], pack: &Id) -> Result<Vec<u8>> {
    // Named only when something is wrong: formatting two ids for every
    // blob was a visible share of a verify's CPU.
    let object = || format!("blob {} in pack {}", entry.id, pack);
    check_blob_lengths(entry, object)?;
    if stored.len() != entry.length as usize {
        return Err(StoreError::corrupt(
            object(),
            format!("{} stored bytes, index says {}", stored.len(), entry.length),
        ));
    }
    let raw = match entry.compression {
        Compression::None => stored.to_vec(),
        Compression::Zstd => zstd_contexts::decompress(stored, entry.raw_length as usize)
            .map_err(|error| StoreError::corrupt(object(), format!("zstd: {error}")))?,
    };
    if raw.len() != entry.raw_length as usize {
        return Err(StoreError::corrupt(
            object(),
            format!(
                "decompressed to {} bytes, expected {}",
                raw.len(),
                entry.raw_length
            ),
        ));
    }
    if Id::of(&raw) != entry.id {
        return Err(StoreError::corrupt(
            object(),
            "content does not match its BLAKE3 id",
        ));
    }
    Ok(raw)
}

/// Splits a whole pack into its header, checking magic, trailer and layout.
/// Does not check blob contents (see [`decode_blob`]).
pub fn parse_pack(bytes: &[u8], pack: &Id) -> Result<PackHeader> {
    let object = format!("pack {pack}");
    let size = bytes.len() as u64;
    if size < PACK_MAGIC.len() as u64 + TRAILER_SIZE || &bytes[..8] != PACK_MAGIC {
        return Err(StoreError::corrupt(
            &object,
            "does not start with the pack magic",
        ));
    }
    let trailer = &bytes[bytes.len() - TRAILER_SIZE as usize..];
    let header_length = parse_trailer(trailer, size, &object)?;
    let header_start = size - TRAILER_SIZE - header_length;
    let header = &bytes[header_start as usize..(size - TRAILER_SIZE) as usize];
    PackHeader::decode(header, header_start, &object)
}

fn parse_trailer(trailer: &[u8], pack_size: u64, object: &str) -> Result<u64> {
    if trailer.len() != TRAILER_SIZE as usize || &trailer[4..] != PACK_MAGIC {
        return Err(StoreError::corrupt(
            object,
            "does not end with the pack magic",
        ));
    }
    let mut length = [0u8; 4];
    length.copy_from_slice(&trailer[..4]);
    let header_length = u64::from(u32::from_le_bytes(length));
    let room = pack_size.saturating_sub(PACK_MAGIC.len() as u64 + TRAILER_SIZE);
    if header_length > room || header_length > MAX_HEADER_SIZE {
        return Err(StoreError::corrupt(
            object,
            format!("trailer claims a {header_length}-byte header in a {pack_size}-byte pack"),
        ));
    }
    Ok(header_length)
}

/// Reads only a pack's header, with two ranged reads (trailer, header).
pub fn read_header(backend: &dyn Backend, pack: &Id, pack_size: u64) -> Result<PackHeader> {
    let object = format!("pack {pack}");
    let name = pack.to_hex();
    if pack_size < PACK_MAGIC.len() as u64 + TRAILER_SIZE {
        return Err(StoreError::corrupt(
            &object,
            format!("only {pack_size} bytes long"),
        ));
    }
    let trailer = backend.read_range(
        ObjectKind::Pack,
        &name,
        pack_size - TRAILER_SIZE,
        TRAILER_SIZE,
    )?;
    let header_length = parse_trailer(&trailer, pack_size, &object)?;
    let header_start = pack_size - TRAILER_SIZE - header_length;
    let header = backend.read_range(ObjectKind::Pack, &name, header_start, header_length)?;
    PackHeader::decode(&header, header_start, &object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_pack() -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let mut writer = PackWriter::new();
        for content in [&b"hello hello hello hello"[..], &[0u8; 5000][..], b"x"] {
            let (compression, stored) = compress_blob(content, 3);
            writer.add(
                BlobKind::Data,
                Id::of(content),
                content.len() as u32,
                compression,
                &stored,
            );
        }
        writer.finish()
    }

    #[test]
    fn a_pack_parses_back_to_its_blobs() {
        let (id, bytes, entries) = sample_pack();
        assert_eq!(id, Id::of(&bytes));
        let header = parse_pack(&bytes, &id).unwrap();
        assert_eq!(header.blobs, entries);
        let zeros = &entries[1];
        assert_eq!(zeros.compression, Compression::Zstd);
        let stored = &bytes[zeros.offset as usize..][..zeros.length as usize];
        assert_eq!(decode_blob(zeros, stored, &id).unwrap(), vec![0u8; 5000]);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_blob_hash() {
        let (id, mut bytes, entries) = sample_pack();
        let last = entries[2];
        bytes[last.offset as usize] ^= 1;
        let stored = &bytes[last.offset as usize..][..last.length as usize];
        assert!(matches!(
            decode_blob(&last, stored, &id),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_header_that_lies_about_lengths_is_refused() {
        let (id, bytes, _) = sample_pack();
        let header = parse_pack(&bytes, &id).unwrap();
        let mut lying = header.clone();
        lying.blobs[0].length += 1;
        let encoded = crate::codec::to_cbor(&lying);
        let start = bytes.len() as u64 - TRAILER_SIZE - encoded.len() as u64;
        assert!(PackHeader::decode(&encoded, start, "test").is_err());
        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 3);
        assert!(parse_pack(&truncated, &id).is_err());
    }
}
