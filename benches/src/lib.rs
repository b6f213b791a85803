//! cairn's benchmarks. This crate owns two things and nothing in the product
//! depends on it:
//!
//! - criterion micro-benchmarks of the hot paths, under `benches/benches/`:
//!   `chunker` (FastCDC cut points and [`cairn_chunker::ChunkStream`]),
//!   `hashing` (BLAKE3 of 16 KiB chunks), `pack` ([`cairn_store::format::pack::PackWriter`]
//!   with `compress_blob` on noise and on text) and `index`
//!   ([`cairn_store::index::MemoryIndex`] and `SledIndex` lookups) and
//!   `crypto` (sealing and opening pack pieces, keyed against plain BLAKE3
//!   ids). Run them
//!   with `cargo bench -p cairn-benches`; throughput is in bytes (or lookups)
//!   per second.
//! - the comparison with restic and borg on a modelled nightly workload:
//!   `benches/compare.sh` (which drives `compare.py` and `workload.py`).
//! - `chunk_profiles OLD NEW`: what each chunking profile would store for
//!   two versions of one file (docs/PERFORMANCE.md, "Chunking SQLite
//!   databases").
//!
//! This library holds only the deterministic test data the micro-benchmarks
//! share, so every run measures the same bytes without a `rand` dependency.

use cairn_store::Id;
use cairn_store::format::index::PackEntry;
use cairn_store::format::pack::{BlobEntry, BlobKind, Compression};

/// SplitMix64: a tiny, fast, seeded generator; plenty for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0; the bias is negligible here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for block in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            block.copy_from_slice(&word[..block.len()]);
        }
    }

    /// A random 32-byte id.
    pub fn id(&mut self) -> Id {
        let mut bytes = [0u8; 32];
        self.fill(&mut bytes);
        Id(bytes)
    }
}

/// `len` bytes of incompressible noise.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    SplitMix64::new(seed).fill(&mut bytes);
    bytes
}

/// `len` bytes of English-like text: words from a Zipf-ish vocabulary of
/// made-up words, in sentences. zstd -3 shrinks it about 3×, like prose.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "sta", "ri", "po", "an", "the", "or", "us", "el", "ti", "ba",
        "gro", "ve", "en", "sh", "qu", "ar", "io", "de", "ly", "ing",
    ];
    let mut rng = SplitMix64::new(seed);
    let vocabulary: Vec<String> = (0..4096)
        .map(|_| {
            let syllables = 1 + rng.below(3) as usize;
            (0..syllables)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 64);
    let mut words_in_sentence = 0;
    while out.len() < len {
        // Squaring a uniform draw favours low ranks: a few words are common.
        let draw = rng.below(1 << 16) as f64 / f64::from(1u32 << 16);
        let rank = (draw * draw * vocabulary.len() as f64) as usize;
        out.extend_from_slice(vocabulary[rank].as_bytes());
        words_in_sentence += 1;
        if words_in_sentence > 6 && rng.below(8) == 0 {
            out.extend_from_slice(b". ");
            words_in_sentence = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// `count` distinct random blob ids.
pub fn random_ids(count: usize, seed: u64) -> Vec<Id> {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(|_| rng.id()).collect()
}

/// Index entries for `ids`, `per_pack` blobs to a pack, laid out as a
/// writer would (16 KiB chunks, zstd, back to back from offset 8).
pub fn pack_entries(ids: &[Id], per_pack: usize, seed: u64) -> Vec<PackEntry> {
    let mut rng = SplitMix64::new(seed);
    ids.chunks(per_pack)
        .map(|blobs| {
            let mut offset = 8u64;
            let blobs: Vec<BlobEntry> = blobs
                .iter()
                .map(|id| {
                    let raw_length = 4096 + rng.below(60 * 1024) as u32;
                    let length = raw_length / 2 + 1;
                    let entry = BlobEntry {
                        kind: BlobKind::Data,
                        id: *id,
                        offset,
                        length,
                        raw_length,
                        compression: Compression::Zstd,
                        frame_offset: None,
                        base: None,
                    };
                    offset += u64::from(length);
                    entry
                })
                .collect();
            PackEntry {
                id: rng.id(),
                size: offset + 4096,
                blobs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_deterministic_and_sized() {
        assert_eq!(noise(1001, 7), noise(1001, 7));
        assert_ne!(noise(64, 7), noise(64, 8));
        let prose = text(10_000, 1);
        assert_eq!(prose.len(), 10_000);
        assert_eq!(prose, text(10_000, 1));
        assert!(prose.iter().all(u8::is_ascii));
    }

    #[test]
    fn pack_entries_tile_their_packs() {
        let ids = random_ids(2500, 3);
        let packs = pack_entries(&ids, 1000, 4);
        assert_eq!(packs.len(), 3);
        assert_eq!(packs.iter().map(|p| p.blobs.len()).sum::<usize>(), 2500);
        for pack in &packs {
            let mut expected = 8;
            for blob in &pack.blobs {
                assert_eq!(blob.offset, expected);
                expected += u64::from(blob.length);
            }
            assert!(pack.size > expected);
        }
    }
}
