//! [`PackWriter`]: assembles one pack in memory. Owns the byte layout of a
//! pack being written; never chooses what to store or writes to a backend.

use super::zstd_contexts;
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
            nonce: Some(fresh_nonce()),
        });
        self.bytes.extend_from_slice(&header);
        self.bytes
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(PACK_MAGIC);
        (Id::of(&self.bytes), self.bytes, self.blobs)
    }
}

/// 16 bytes from the system's random source. Should that fail, bytes
/// derived from the time and process id still make a pack distinct from
/// any earlier one, which is all the nonce is for.
fn fresh_nonce() -> Vec<u8> {
    let mut nonce = [0u8; 16];
    if getrandom::fill(&mut nonce).is_err() {
        let mut hasher = blake3::Hasher::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        hasher.update(&now.as_nanos().to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    }
    nonce.to_vec()
}

/// Blobs larger than this are first judged by compressing a sample.
const SAMPLE_THRESHOLD: usize = 8 * 1024;
const SAMPLE_SIZE: usize = 4 * 1024;

/// Compresses a blob with zstd unless that saves less than 3%, in which case
/// the blob is stored raw: decompressing costs time on every restore, so a
/// tiny saving is not worth it. Large blobs are judged first by a 4 KiB
/// sample at zstd's fastest level, so incompressible data (vector floats,
/// already-compressed files) costs almost no compression time.
pub fn compress_blob(raw: &[u8], level: i32) -> (Compression, Vec<u8>) {
    if raw.len() > SAMPLE_THRESHOLD && !sample_compresses(&raw[..SAMPLE_SIZE]) {
        return (Compression::None, raw.to_vec());
    }
    match zstd_contexts::compress(raw, level) {
        Ok(compressed) if saves_enough(compressed.len(), raw.len()) => {
            (Compression::Zstd, compressed)
        }
        _ => (Compression::None, raw.to_vec()),
    }
}

fn saves_enough(compressed: usize, raw: usize) -> bool {
    compressed * 100 < raw * 97
}

fn sample_compresses(sample: &[u8]) -> bool {
    zstd_contexts::compress(sample, 1)
        .map(|compressed| saves_enough(compressed.len(), sample.len()))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_noise_is_stored_raw() {
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .copied()
            .cycle()
            .take(64 * 1024)
            .collect();
        assert_eq!(compress_blob(&text, 3).0, Compression::Zstd);
        let mut noise = vec![0u8; 64 * 1024];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let (compression, stored) = compress_blob(&noise, 3);
        assert_eq!(compression, Compression::None);
        assert_eq!(stored, noise);
    }
}
