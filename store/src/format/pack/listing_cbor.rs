//! A direct decoder for blob listings (pack headers and index file
//! bodies) in exactly the CBOR cairn writes for them, beside the general
//! one (`codec::from_cbor`, ciborium through serde).
//!
//! The general decoder pulls every key and value through ciborium's
//! tokenizer and serde's visitors; for listings, which are tens of
//! thousands of small maps of the same six to eight keys, that was 8–11%
//! of a `verify --read-data`'s CPU (every index file and every pack's
//! header is decoded). This one walks the bytes once.
//!
//! It accepts only the shape `codec::to_cbor` writes: definite-length
//! maps and arrays, keys in the order the types declare them, the
//! optional keys omitted rather than null, no tags, nothing after the
//! value. On anything else (another order, a null, an indefinite length,
//! a value out of range, trailing bytes) it answers `None`, and the caller
//! decodes with the general decoder, which gives the error or the value
//! as before. So it must never accept bytes the general decoder would
//! read differently or refuse: the unit tests compare the two on every
//! listing shape and on mutated encodings. It never allocates more than
//! the input's size can justify, and it checks nothing a listing means
//! (lengths, versions, places): the callers still do.

use super::{BlobEntry, BlobKind, Compression};
use crate::id::Id;

/// A position in CBOR bytes, read forward.
struct Cursor<'a> {
    bytes: &'a [u8],
}

/// The smallest encoding of one blob entry (six keys and their values):
/// an array's claimed count is believed only up to the bytes left for it.
const SMALLEST_ENTRY: usize = 64;

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(taken)
    }

    /// An item's major type and argument; `None` for an indefinite length
    /// or a reserved encoding.
    fn head(&mut self) -> Option<(u8, u64)> {
        let &[first] = self.take(1)? else {
            return None;
        };
        let argument = match first & 0x1f {
            small @ 0..=23 => u64::from(small),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            27 => u64::from_be_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        Some((first >> 5, argument))
    }

    fn of_type(&mut self, major: u8) -> Option<u64> {
        match self.head()? {
            (found, argument) if found == major => Some(argument),
            _ => None,
        }
    }

    fn uint(&mut self) -> Option<u64> {
        self.of_type(0)
    }

    fn uint32(&mut self) -> Option<u32> {
        u32::try_from(self.uint()?).ok()
    }

    fn byte_string(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.of_type(2)?).ok()?;
        self.take(length)
    }

    fn text(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.of_type(3)?).ok()?;
        self.take(length)
    }

    fn key(&mut self, expected: &str) -> Option<()> {
        (self.text()? == expected.as_bytes()).then_some(())
    }

    fn map(&mut self) -> Option<u64> {
        self.of_type(5)
    }

    fn id(&mut self) -> Option<Id> {
        Some(Id(self.byte_string()?.try_into().ok()?))
    }

    /// An array's count, believed only as far as the bytes left could
    /// hold items of at least `smallest` bytes.
    fn array(&mut self, smallest: usize) -> Option<(u64, usize)> {
        let count = self.of_type(4)?;
        let room = self.bytes.len() / smallest.max(1);
        Some((
            count,
            usize::try_from(count).unwrap_or(usize::MAX).min(room),
        ))
    }

    fn blob_entry(&mut self) -> Option<BlobEntry> {
        let keys = self.map()?;
        self.key("kind")?;
        let kind = match self.text()? {
            b"data" => BlobKind::Data,
            b"tree" => BlobKind::Tree,
            _ => return None,
        };
        self.key("id")?;
        let id = self.id()?;
        self.key("offset")?;
        let offset = self.uint()?;
        self.key("length")?;
        let length = self.uint32()?;
        self.key("raw_length")?;
        let raw_length = self.uint32()?;
        self.key("compression")?;
        let compression = match self.text()? {
            b"none" => Compression::None,
            b"zstd" => Compression::Zstd,
            b"zstd-planes" => Compression::ZstdPlanes,
            b"zstd-delta" => Compression::ZstdDelta,
            _ => return None,
        };
        // The optional keys, each at most once and in order.
        let mut frame_offset = None;
        let mut base = None;
        let mut left = keys.checked_sub(6)?;
        if left > 0 && self.bytes.starts_with(b"\x6cframe_offset") {
            self.key("frame_offset")?;
            frame_offset = Some(self.uint32()?);
            left -= 1;
        }
        if left > 0 {
            self.key("base")?;
            base = Some(self.id()?);
            left -= 1;
        }
        (left == 0).then_some(BlobEntry {
            kind,
            id,
            offset,
            length,
            raw_length,
            compression,
            frame_offset,
            base,
        })
    }

    fn blob_entries(&mut self) -> Option<Vec<BlobEntry>> {
        let (count, believed) = self.array(SMALLEST_ENTRY)?;
        let mut entries = Vec::with_capacity(believed);
        for _ in 0..count {
            entries.push(self.blob_entry()?);
        }
        Some(entries)
    }

    fn finished(&self) -> Option<()> {
        self.bytes.is_empty().then_some(())
    }
}

/// A pack header's `version`, `blobs` and `nonce`, as
/// `format::pack::PackHeader` declares them.
pub(crate) fn pack_header(cbor: &[u8]) -> Option<(u32, Vec<BlobEntry>, Option<Vec<u8>>)> {
    let mut cursor = Cursor { bytes: cbor };
    let keys = cursor.map()?;
    cursor.key("version")?;
    let version = cursor.uint32()?;
    cursor.key("blobs")?;
    let blobs = cursor.blob_entries()?;
    let nonce = match keys {
        2 => None,
        3 => {
            cursor.key("nonce")?;
            Some(cursor.byte_string()?.to_vec())
        }
        _ => return None,
    };
    cursor.finished()?;
    Some((version, blobs, nonce))
}

/// A pack as an index body lists it: its `id`, `size` and `blobs`, as
/// `format::index::PackEntry` declares them.
pub(crate) type ListedPack = (Id, u64, Vec<BlobEntry>);

/// An index body's packs.
fn packs(cursor: &mut Cursor<'_>) -> Option<Vec<ListedPack>> {
    let (count, believed) = cursor.array(SMALLEST_ENTRY)?;
    let mut packs = Vec::with_capacity(believed);
    for _ in 0..count {
        if cursor.map()? != 3 {
            return None;
        }
        cursor.key("id")?;
        let id = cursor.id()?;
        cursor.key("size")?;
        let size = cursor.uint()?;
        cursor.key("blobs")?;
        packs.push((id, size, cursor.blob_entries()?));
    }
    Some(packs)
}

/// A legacy index file's `version` and `packs`.
pub(crate) fn index_file(cbor: &[u8]) -> Option<(u32, Vec<ListedPack>)> {
    let mut cursor = Cursor { bytes: cbor };
    if cursor.map()? != 2 {
        return None;
    }
    cursor.key("version")?;
    let version = cursor.uint32()?;
    cursor.key("packs")?;
    let packs = packs(&mut cursor)?;
    cursor.finished()?;
    Some((version, packs))
}

/// A sealed index file's body: `version`, `repository` and `packs`.
pub(crate) fn sealed_index_body(cbor: &[u8]) -> Option<(u32, Id, Vec<ListedPack>)> {
    let mut cursor = Cursor { bytes: cbor };
    if cursor.map()? != 3 {
        return None;
    }
    cursor.key("version")?;
    let version = cursor.uint32()?;
    cursor.key("repository")?;
    let repository = cursor.id()?;
    cursor.key("packs")?;
    let packs = packs(&mut cursor)?;
    cursor.finished()?;
    Some((version, repository, packs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::codec::{from_cbor, to_cbor};
    use crate::format::index::{IndexFile, PackEntry};
    use crate::format::pack::PackHeader;
    use serde::{Deserialize, Serialize};

    /// The shape of a sealed index file's body (private to `index`).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SealedBody {
        version: u32,
        repository: Id,
        packs: Vec<PackEntry>,
    }

    /// Entries of every shape: each kind, each compression, with and
    /// without a frame offset and a base, small and large numbers.
    fn entries() -> Vec<BlobEntry> {
        let mut entries = Vec::new();
        for (n, compression) in [
            Compression::None,
            Compression::Zstd,
            Compression::ZstdPlanes,
            Compression::ZstdDelta,
        ]
        .into_iter()
        .enumerate()
        {
            for kind in [BlobKind::Data, BlobKind::Tree] {
                let id = Id::of(&[n as u8, kind as u8]);
                let mut entry = BlobEntry::sole(
                    kind,
                    id,
                    [8, 300, 70_000, 5 << 32][n],
                    [1, 24, 256, 65_536][n],
                    [0, 23, 255, u32::MAX][n],
                    compression,
                );
                if compression == Compression::ZstdDelta {
                    entry.base = Some(Id::of(b"base"));
                }
                entries.push(entry);
                if compression != Compression::ZstdDelta {
                    entry.frame_offset = Some([0, 100, 4096, 1 << 20][n]);
                    entries.push(entry);
                }
            }
        }
        entries
    }

    fn header(nonce: Option<Vec<u8>>) -> PackHeader {
        PackHeader {
            version: 4,
            blobs: entries(),
            nonce,
        }
    }

    fn index_packs() -> Vec<PackEntry> {
        vec![
            PackEntry {
                id: Id::of(b"pack 1"),
                size: 1 << 40,
                blobs: entries(),
            },
            PackEntry {
                id: Id::of(b"pack 2"),
                size: 9,
                blobs: Vec::new(),
            },
        ]
    }

    fn direct_header(cbor: &[u8]) -> Option<PackHeader> {
        pack_header(cbor).map(|(version, blobs, nonce)| PackHeader {
            version,
            blobs,
            nonce,
        })
    }

    fn packs_of(packs: Vec<ListedPack>) -> Vec<PackEntry> {
        packs
            .into_iter()
            .map(|(id, size, blobs)| PackEntry { id, size, blobs })
            .collect()
    }

    fn direct_index(cbor: &[u8]) -> Option<IndexFile> {
        index_file(cbor).map(|(version, packs)| IndexFile {
            version,
            packs: packs_of(packs),
        })
    }

    fn direct_sealed(cbor: &[u8]) -> Option<SealedBody> {
        sealed_index_body(cbor).map(|(version, repository, packs)| SealedBody {
            version,
            repository,
            packs: packs_of(packs),
        })
    }

    #[test]
    fn what_cairn_writes_decodes_directly_to_what_the_general_decoder_gives() {
        for nonce in [None, Some(vec![7u8; 16])] {
            let written = header(nonce);
            assert_eq!(direct_header(&to_cbor(&written)), Some(written));
        }
        let index = IndexFile {
            version: 4,
            packs: index_packs(),
        };
        assert_eq!(direct_index(&to_cbor(&index)), Some(index));
        let sealed = SealedBody {
            version: 4,
            repository: Id::of(b"repository"),
            packs: index_packs(),
        };
        assert_eq!(direct_sealed(&to_cbor(&sealed)), Some(sealed));
    }

    /// Every byte of each encoding changed in turn (and the encoding cut
    /// short, and lengthened): whatever the direct decoder accepts, the
    /// general one decodes to the same value. What it refuses is left to
    /// the general decoder, so a refusal here is never wrong.
    #[test]
    fn a_damaged_encoding_is_never_read_differently_from_the_general_decoder() {
        fn agree<T: PartialEq + std::fmt::Debug + serde::de::DeserializeOwned>(
            cbor: &[u8],
            direct: fn(&[u8]) -> Option<T>,
        ) -> usize {
            let mut accepted = 0;
            let mut check = |bytes: &[u8]| {
                if let Some(value) = direct(bytes) {
                    accepted += 1;
                    let general: T = from_cbor(bytes, "test").unwrap();
                    assert_eq!(value, general, "{bytes:02x?}");
                }
            };
            for at in 0..cbor.len() {
                for flip in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                    let mut bytes = cbor.to_vec();
                    bytes[at] ^= flip;
                    check(&bytes);
                }
                check(&cbor[..at]);
            }
            let mut longer = cbor.to_vec();
            longer.push(0);
            check(&longer);
            accepted
        }
        let accepted = agree(&to_cbor(&header(Some(vec![1; 16]))), direct_header)
            + agree(&to_cbor(&header(None)), direct_header)
            + agree(
                &to_cbor(&IndexFile {
                    version: 1,
                    packs: index_packs(),
                }),
                direct_index,
            )
            + agree(
                &to_cbor(&SealedBody {
                    version: 2,
                    repository: Id::of(b"r"),
                    packs: index_packs(),
                }),
                direct_sealed,
            );
        // Changed ids and numbers are still listings: the comparison ran.
        assert!(accepted > 1000, "{accepted}");
    }

    /// Keys in another order, a null for an omitted key: valid CBOR the
    /// general decoder reads, left to it.
    #[test]
    fn another_shape_is_left_to_the_general_decoder() {
        #[derive(Serialize)]
        struct Reordered {
            blobs: Vec<BlobEntry>,
            version: u32,
        }
        let reordered = to_cbor(&Reordered {
            blobs: entries(),
            version: 4,
        });
        assert_eq!(direct_header(&reordered), None);
        assert_eq!(
            from_cbor::<PackHeader>(&reordered, "test").unwrap(),
            header(None)
        );

        #[derive(Serialize)]
        struct WithNull {
            version: u32,
            blobs: Vec<BlobEntry>,
            nonce: Option<Vec<u8>>,
        }
        let with_null = to_cbor(&WithNull {
            version: 4,
            blobs: entries(),
            nonce: None,
        });
        assert_eq!(direct_header(&with_null), None);
        assert_eq!(
            from_cbor::<PackHeader>(&with_null, "test").unwrap(),
            header(None)
        );
    }

    /// An array claiming more items than its bytes could hold allocates
    /// for what they could hold, and fails when they run out.
    #[test]
    fn a_claimed_count_is_believed_only_as_far_as_the_bytes_go() {
        let mut cbor = vec![0xa2];
        cbor.extend_from_slice(b"\x67version\x04\x65blobs");
        cbor.extend_from_slice(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(direct_header(&cbor), None);
        let mut cursor = Cursor { bytes: &cbor[16..] };
        assert_eq!(cursor.array(SMALLEST_ENTRY), Some((u64::MAX, 0)));
    }
}
