//! [`PackWriter`]: assembles one pack in memory. Owns the byte layout of a
//! pack being written; never chooses what to store or writes to a backend.

use super::{BlobEntry, BlobKind, Compression, HEADER_VERSION, PACK_MAGIC, PackHeader};
use crate::codec::to_cbor;
use crate::id::Id;

pub struct PackWriter {
    bytes: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    pub fn new() -> Self {
        PackWriter {
            bytes: PACK_MAGIC.to_vec(),
            blobs: Vec::new(),
        }
    }

    /// Appends one blob's stored bytes.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: Id,
        raw_length: u32,
        compression: Compression,
        stored: &[u8],
    ) {
        self.blobs.push(BlobEntry {
            kind,
            id,
            offset: self.bytes.len() as u64,
            length: stored.len() as u32,
            raw_length,
            compression,
        });
        self.bytes.extend_from_slice(stored);
    }

    /// Bytes so far, without the header.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends header and trailer; returns the pack's id, bytes and entries.
    pub fn finish(mut self) -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let header = to_cbor(&PackHeader {
            version: HEADER_VERSION,
            blobs: self.blobs.clone(),
        });
        self.bytes.extend_from_slice(&header);
        self.bytes
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(PACK_MAGIC);
        (Id::of(&self.bytes), self.bytes, self.blobs)
    }
}

/// Compresses a blob with zstd unless that saves less than 3%, in which case
/// the blob is stored raw: decompressing costs time on every restore, so a
/// tiny saving is not worth it.
pub fn compress_blob(raw: &[u8], level: i32) -> (Compression, Vec<u8>) {
    match zstd::bulk::compress(raw, level) {
        Ok(compressed) if compressed.len() * 100 < raw.len() * 97 => {
            (Compression::Zstd, compressed)
        }
        _ => (Compression::None, raw.to_vec()),
    }
}
