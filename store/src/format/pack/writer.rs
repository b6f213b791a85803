//! [`PackWriter`]: assembles one pack in memory. Owns the byte layout of a
//! pack being written; never chooses what to store or writes to a backend.

use super::{BlobEntry, BlobKind, Compression, PACK_MAGIC, PackHeader, listing_version};
use super::{ENCRYPTED_AREA_START, PIECE_TAG};
use super::{planes, zstd_contexts};
use crate::format::codec::to_packed_cbor;
use crate::format::crypto::PackSealer;
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
        self.blobs.push(BlobEntry::sole(
            kind,
            id,
            self.bytes.len() as u64,
            stored.len() as u32,
            raw_length,
            compression,
        ));
        self.bytes.extend_from_slice(stored);
    }

    /// Appends one data blob stored as a delta against the blob `base`
    /// ([`super::delta`]).
    pub fn add_delta(&mut self, id: Id, raw_length: u32, base: Id, stored: &[u8]) {
        let mut entry = BlobEntry::sole(
            BlobKind::Data,
            id,
            self.bytes.len() as u64,
            stored.len() as u32,
            raw_length,
            Compression::ZstdDelta,
        );
        entry.base = Some(base);
        self.blobs.push(entry);
        self.bytes.extend_from_slice(stored);
    }

    /// Appends one shared frame holding the blobs `members` (kind, id, raw
    /// length), whose contents it decompresses to one after another;
    /// `compression` says how (`Zstd` or `ZstdPlanes`).
    pub fn add_frame(
        &mut self,
        members: &[(BlobKind, Id, u32)],
        (compression, frame): (Compression, &[u8]),
    ) {
        let offset = self.bytes.len() as u64;
        let mut start = 0u32;
        for &(kind, id, raw_length) in members {
            self.blobs.push(BlobEntry {
                kind,
                id,
                offset,
                length: frame.len() as u32,
                raw_length,
                compression,
                frame_offset: Some(start),
                base: None,
            });
            start += raw_length;
        }
        self.bytes.extend_from_slice(frame);
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
        let header = to_packed_cbor(&PackHeader {
            version: listing_version(&self.blobs),
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

impl PackWriter {
    /// [`PackWriter::finish`] as an encrypted pack (FORMAT.md 17.3) when
    /// `sealer` is given: the magic, the sealer's ephemeral public key, then
    /// every piece (a blob's stored bytes, or a shared frame) sealed under
    /// the pack's key with its offset as nonce, then the sealed header. The
    /// entries returned describe the sealed pieces.
    ///
    /// Sealed in the buffer that gathered the pieces, not copied into a
    /// second one: a second pack-sized buffer cost as many fresh pages as
    /// the pack itself (a quarter of a first backup's page faults) and was
    /// held beside it. The buffer grows by the tags; the pieces, last to
    /// first, move up to their sealed offsets (each lands at or past where
    /// it lay, over bytes already moved out) and are sealed there.
    pub fn finish_sealed(self, sealer: Option<&PackSealer>) -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let Some(sealer) = sealer else {
            return self.finish();
        };
        let PackWriter {
            mut bytes,
            mut blobs,
        } = self;
        // Each piece: its first entry, its offset and length as gathered.
        // The members of one shared frame share its piece.
        let mut pieces: Vec<(usize, u64, u32)> = Vec::new();
        for (position, blob) in blobs.iter().enumerate() {
            if pieces
                .last()
                .is_none_or(|&(_, offset, _)| offset != blob.offset)
            {
                pieces.push((position, blob.offset, blob.length));
            }
        }
        let tag = PIECE_TAG as usize;
        let gathered_start = PACK_MAGIC.len();
        let body = bytes.len() - gathered_start;
        let sealed_start = ENCRYPTED_AREA_START as usize;
        // Where piece `number`, gathered at `offset`, lies once sealed:
        // past the encrypted area's start and the tags of the pieces before it.
        let sealed_at = |number: usize, offset: u64| {
            sealed_start + (offset as usize - gathered_start) + number * tag
        };
        bytes.resize(sealed_start + body + pieces.len() * tag, 0);
        for (number, &(_, offset, length)) in pieces.iter().enumerate().rev() {
            let (from, length) = (offset as usize, length as usize);
            let to = sealed_at(number, offset);
            bytes.copy_within(from..from + length, to);
            let sealed_tag = sealer.seal_piece_detached(to as u64, &mut bytes[to..to + length]);
            bytes[to + length..to + length + tag].copy_from_slice(&sealed_tag);
        }
        let magic = sealer.cipher().magic();
        let ephemeral = sealer.ephemeral();
        bytes[..magic.len()].copy_from_slice(magic);
        bytes[magic.len()..magic.len() + ephemeral.len()].copy_from_slice(&ephemeral);
        for (number, &(first, offset, length)) in pieces.iter().enumerate() {
            let sealed_offset = sealed_at(number, offset) as u64;
            for blob in blobs[first..]
                .iter_mut()
                .take_while(|blob| blob.offset == offset)
            {
                blob.offset = sealed_offset;
                blob.length = length + PIECE_TAG;
            }
        }
        let mut header = to_packed_cbor(&PackHeader {
            version: listing_version(&blobs),
            blobs: blobs.clone(),
            nonce: Some(fresh_nonce()),
        });
        let header_start = bytes.len() as u64;
        sealer.seal_header(header_start, &mut header);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(magic);
        (Id::of(&bytes), bytes, blobs)
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
/// Small blobs are gathered into shared frames of about this many raw
/// bytes (zstd's largest block). Measured on the benchmark's SQLite file
/// with `zstd -b1`: 4 KiB frames compress at 200 MB/s to 44.6 MB, 128 KiB
/// frames at 344 MB/s to 33.4 MB, and decompress 1.7 times as fast.
pub const FRAME_TARGET: usize = 128 * 1024;

/// Compresses a blob with zstd unless that saves less than 3%, in which case
/// the blob is stored raw: decompressing costs time on every restore, so a
/// tiny saving is not worth it. Large blobs are judged first by a 4 KiB
/// sample (see [`looks_incompressible`]); a blob whose start looks like
/// 32-bit numbers is compressed as byte planes ([`planes`]).
pub fn compress_blob(raw: &[u8], level: i32) -> (Compression, Vec<u8>) {
    if looks_incompressible(raw) {
        return (Compression::None, raw.to_vec());
    }
    match compress_frame(raw, level) {
        Some(compressed) => compressed,
        None => (Compression::None, raw.to_vec()),
    }
}

/// The stored bytes of `raw` (one blob's bytes, or several blobs' one
/// after another) and how they were compressed: as byte planes if its
/// start looks like 32-bit numbers ([`planes::looks_like_words`]),
/// otherwise as one zstd frame; `None` if that does not save enough to be
/// worth decompressing.
pub fn compress_frame(raw: &[u8], level: i32) -> Option<(Compression, Vec<u8>)> {
    let sample = &raw[..raw.len().min(planes::SAMPLE_SIZE)];
    let (compression, compressed) = if planes::looks_like_words(sample) {
        (
            Compression::ZstdPlanes,
            zstd_contexts::compress_planes(raw, level),
        )
    } else {
        (Compression::Zstd, zstd_contexts::compress(raw, level))
    };
    compressed
        .ok()
        .filter(|compressed| saves_enough(compressed.len(), raw.len()))
        .map(|compressed| (compression, compressed))
}

/// Whether a blob larger than 8 KiB is judged incompressible by its first
/// 4 KiB, so that incompressible data (already-compressed files, random
/// bytes) costs almost no compression time: a sample whose byte
/// frequencies alone promise the saving passes at once; only one that
/// looks random is tried with zstd's fastest level, since repeats could
/// still make it compress.
pub fn looks_incompressible(raw: &[u8]) -> bool {
    raw.len() > SAMPLE_THRESHOLD && {
        let sample = &raw[..SAMPLE_SIZE];
        !bytes_skewed(sample) && !sample_compresses(sample)
    }
}

fn saves_enough(compressed: usize, raw: usize) -> bool {
    compressed * 100 < raw * 97
}

/// Whether `sample`'s byte frequencies (order-0 entropy) put it below 94%
/// of 8 bits a byte: then zstd's entropy stage alone saves more than the 3%
/// `saves_enough` asks, whatever the matches. Text and float arrays are
/// (their exponent bytes repeat); compressed and random data are not. A
/// histogram costs a fraction of a trial compression, which this spares on
/// every compressible blob.
fn bytes_skewed(sample: &[u8]) -> bool {
    planes::entropy_bits(sample) < sample.len() as f64 * 8.0 * 0.94
}

fn sample_compresses(sample: &[u8]) -> bool {
    zstd_contexts::compress(sample, 1)
        .map(|compressed| saves_enough(compressed.len(), sample.len()))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::{PackCipher, RepositoryKeys};
    use crate::format::pack::{PackHeader, TRAILER_SIZE};

    /// Sealing in place moves every piece: each must still open at the
    /// offset its entry gives, hold what was added, and the header must
    /// open where the trailer says and tile the area exactly.
    #[test]
    fn a_pack_sealed_in_place_opens_piece_by_piece() {
        let keys = RepositoryKeys::generate(Id::of(b"repository")).unwrap();
        for cipher in [PackCipher::XChaCha20Poly1305, PackCipher::Aes256Gcm] {
            let sealer = keys.pack_sealer_with(cipher).unwrap();
            let mut pack = PackWriter::new();
            let (first, frame, last) = (vec![1u8; 5000], b"ab cd".repeat(300), vec![7u8; 3]);
            pack.add(
                BlobKind::Data,
                Id::of(&first),
                9000,
                Compression::Zstd,
                &first,
            );
            let members = [
                (BlobKind::Data, Id::of(b"one"), 700),
                (BlobKind::Data, Id::of(b"two"), 800),
            ];
            pack.add_frame(&members, (Compression::Zstd, &frame));
            pack.add(BlobKind::Tree, Id::of(&last), 3, Compression::None, &last);
            let (id, bytes, blobs) = pack.finish_sealed(Some(&sealer));
            assert_eq!(id, Id::of(&bytes));
            assert_eq!(&bytes[..8], cipher.magic());
            assert_eq!(bytes[8..40], sealer.ephemeral());
            assert_eq!(&bytes[bytes.len() - 8..], cipher.magic());
            let opener = keys.pack_opener(cipher, &sealer.ephemeral(), "p").unwrap();
            let expected = [&first, &frame, &frame, &last];
            for (blob, content) in blobs.iter().zip(expected) {
                let (start, length) = (blob.offset as usize, blob.length as usize);
                let mut piece = bytes[start..start + length].to_vec();
                opener
                    .open_piece(blob.offset, &mut piece, &|| "p".into())
                    .unwrap();
                assert_eq!(&piece, content);
            }
            assert_eq!(blobs[1].offset, blobs[2].offset, "a frame is one piece");
            let trailer = bytes.len() - TRAILER_SIZE as usize;
            let header_length =
                u32::from_le_bytes(bytes[trailer..trailer + 4].try_into().unwrap()) as usize;
            let header_start = trailer - header_length;
            let mut header = bytes[header_start..trailer].to_vec();
            opener
                .open_header(header_start as u64, &mut header, "p")
                .unwrap();
            let header =
                PackHeader::decode_in(&header, ENCRYPTED_AREA_START, header_start as u64, "p")
                    .unwrap();
            assert_eq!(header.blobs, blobs);
        }
    }

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

    #[test]
    fn byte_frequencies_tell_text_and_floats_from_noise() {
        let text: Vec<u8> = b"{\"id\": 17, \"note\": \"the quick brown fox\"}\n"
            .iter()
            .copied()
            .cycle()
            .take(SAMPLE_SIZE)
            .collect();
        assert!(bytes_skewed(&text));
        // Floats in [-1, 1): every fourth byte is one of a few exponents.
        let mut noise = vec![0u8; SAMPLE_SIZE];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let floats: Vec<u8> = noise
            .chunks(4)
            .flat_map(|bytes| {
                let unit = f32::from(u16::from_le_bytes([bytes[0], bytes[1]])) / 32768.0 - 1.0;
                (unit * f32::from(bytes[2]) / 255.0).to_le_bytes()
            })
            .collect();
        assert!(bytes_skewed(&floats));
        assert!(!bytes_skewed(&noise));
        // Random bytes repeated: not skewed, yet they compress, and the
        // trial compression still finds it. (With a period that is a
        // multiple of four, each byte plane would repeat too few values,
        // and the blob would go to planes, compressing as well.)
        let repeated: Vec<u8> = noise[..513].repeat(16);
        assert!(!bytes_skewed(&repeated[..SAMPLE_SIZE]));
        assert_eq!(compress_blob(&repeated, 3).0, Compression::Zstd);
    }
}
