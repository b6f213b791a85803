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
//! blobs (raw, one zstd frame each, or several small blobs sharing one
//! frame; the bytes as they are or as byte planes, [`planes`]); it never decides which blobs go into which pack and never
//! touches a backend except through `read_header`.

pub mod delta;
pub(crate) mod listing_cbor;
pub(crate) mod planes;
pub(crate) mod spans;
mod writer;
mod zstd_contexts;

pub use writer::{FRAME_TARGET, PackWriter, compress_blob, compress_frame, looks_incompressible};
pub use zstd_contexts::Expected;

use crate::error::{Result, StoreError};
use crate::format::codec::from_packed_cbor_or;
use crate::format::crypto::PackOpener;
use crate::id::{Id, IdHasher};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPK1";
/// Header length (u32 LE) plus the closing magic.
pub const TRAILER_SIZE: u64 = 12;
// An encrypted pack starts and ends with its cipher's magic
// (`format::crypto::PackCipher::magic`, FORMAT.md 17.3).
/// Where the pieces of an encrypted pack start: after its magic and the
/// 32-byte ephemeral public key its key is derived from.
pub const ENCRYPTED_AREA_START: u64 = 40;
/// What sealing adds to each piece of an encrypted pack (its tag).
pub const PIECE_TAG: u32 = crate::format::crypto::TAG_LENGTH as u32;

/// Gives the cipher for the pieces of a pack, by the pack's id: a
/// repository's, which reads the pack's ephemeral key once and keeps it.
pub type OpenerSource = Arc<dyn Fn(&Id) -> Result<Arc<PackOpener>> + Send + Sync>;

/// Gives the content of a delta's base blob by its id: a repository's,
/// which finds the base through its index and decodes it (through a
/// decoder `depth` bases down, so a chain longer than
/// [`delta::MAX_CHAIN`] is refused however it is reached). Its length is
/// always checked; its content against the id only when `check` is set
/// (the decoder asks so only to name a damaged base, see
/// [`BlobDecoder::decode_sharing`]).
pub type BaseSource = Arc<dyn Fn(&Id, usize, bool) -> Result<Decoded> + Send + Sync>;
/// Headers without shared frames are written as version 1, which every
/// cairn reads; version 2 adds shared frames (`frame_offset`).
pub const HEADER_VERSION_SOLE: u32 = 1;
pub const HEADER_VERSION_SHARED: u32 = 2;
/// Version 3 adds blobs stored as byte planes (`zstd-planes`).
pub const HEADER_VERSION_PLANES: u32 = 3;
/// Version 4 adds blobs stored as a zstd patch against another blob
/// (`zstd-delta`, with `base`; see [`delta`]).
pub const HEADER_VERSION_DELTA: u32 = 4;
/// No blob cairn writes is larger (chunks are at most 16 MiB; a tree of a
/// directory with a million entries stays below this). Larger claims are lies.
pub const MAX_BLOB_SIZE: u32 = 256 * 1024 * 1024;
/// Headers are read whole into memory; this bounds what a lying trailer costs.
pub const MAX_HEADER_SIZE: u64 = 64 * 1024 * 1024;
/// A shared frame's content (the raw bytes of all its blobs) is at most
/// this long. cairn closes a frame once it holds [`FRAME_TARGET`] bytes of
/// blobs each smaller than that, so it never writes one of 256 KiB; a
/// reader holding only an index entry bounds what it decompresses by this,
/// not by the 256 MiB of a blob.
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;

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
    /// Four zstd frames, one per byte plane ([`planes`]).
    #[serde(rename = "zstd-planes")]
    ZstdPlanes,
    /// One zstd frame compressed with the content of the blob `base` as
    /// its prefix (a patch against it, [`delta`]).
    #[serde(rename = "zstd-delta")]
    ZstdDelta,
}

impl Compression {
    /// The most stored bytes a writer can produce for `raw` bytes: what
    /// zstd may expand them to, or their four planes to.
    pub fn stored_bound(self, raw: usize) -> usize {
        match self {
            Compression::None => raw,
            Compression::Zstd | Compression::ZstdDelta => zstd::zstd_safe::compress_bound(raw),
            Compression::ZstdPlanes => planes::plane_lengths(raw)
                .into_iter()
                .map(zstd::zstd_safe::compress_bound)
                .sum(),
        }
    }
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
    /// Set when the blob shares its stored zstd frame (`offset`, `length`)
    /// with its neighbours in the pack: where its bytes start in the
    /// frame's decompressed content. Compressing a few small blobs
    /// together spares zstd's per-frame tables and finds repeats across
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_offset: Option<u32>,
    /// Set exactly when `compression` is `zstd-delta`: the id of the blob
    /// whose content is the prefix the stored frame was compressed
    /// against. The blob's own id stays the hash of its own content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Id>,
}

impl BlobEntry {
    /// The entry of a blob with stored bytes of its own.
    pub fn sole(
        kind: BlobKind,
        id: Id,
        offset: u64,
        length: u32,
        raw_length: u32,
        compression: Compression,
    ) -> Self {
        BlobEntry {
            kind,
            id,
            offset,
            length,
            raw_length,
            compression,
            frame_offset: None,
            base: None,
        }
    }
}

/// The version a header or index file listing `blobs` is written with.
/// The lowest version that can list `blob`.
fn version_needed(blob: &BlobEntry) -> u32 {
    if blob.compression == Compression::ZstdDelta || blob.base.is_some() {
        HEADER_VERSION_DELTA
    } else if blob.compression == Compression::ZstdPlanes {
        HEADER_VERSION_PLANES
    } else if blob.frame_offset.is_some() {
        HEADER_VERSION_SHARED
    } else {
        HEADER_VERSION_SOLE
    }
}

/// The version a header or index file listing `blobs` is written with:
/// the lowest that lists them all, so that a listing without shared
/// frames or planes stays readable by a cairn from before them.
pub fn listing_version<'a>(blobs: impl IntoIterator<Item = &'a BlobEntry>) -> u32 {
    blobs
        .into_iter()
        .map(version_needed)
        .max()
        .unwrap_or(HEADER_VERSION_SOLE)
}

/// Refuses a listing version this build does not read, and entries its
/// version cannot hold (shared frames in version 1, planes before 3).
pub fn check_listing_version(version: u32, blobs: &[BlobEntry], object: &str) -> Result<()> {
    if !(HEADER_VERSION_SOLE..=HEADER_VERSION_DELTA).contains(&version) {
        return Err(StoreError::corrupt(
            object,
            format!(
                "format version {version} is not supported (this cairn reads versions {HEADER_VERSION_SOLE} to {HEADER_VERSION_DELTA})"
            ),
        ));
    }
    match blobs.iter().find(|blob| version_needed(blob) > version) {
        Some(blob) => Err(StoreError::corrupt(
            object,
            format!(
                "a version {version} listing has blob {} {}",
                blob.id,
                if version_needed(blob) == HEADER_VERSION_DELTA {
                    "stored as a delta"
                } else if blob.compression == Compression::ZstdPlanes {
                    "stored as planes"
                } else {
                    "in a shared frame"
                }
            ),
        )),
        None => Ok(()),
    }
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
        Self::decode_in(bytes, PACK_MAGIC.len() as u64, header_start, object)
    }

    /// [`PackHeader::decode`] for a blob area `[area_start, header_start)`
    /// (an encrypted pack's starts at [`ENCRYPTED_AREA_START`]).
    pub fn decode_in(
        bytes: &[u8],
        area_start: u64,
        header_start: u64,
        object: &str,
    ) -> Result<Self> {
        let header: PackHeader = from_packed_cbor_or(bytes, MAX_HEADER_SIZE, object, |cbor| {
            listing_cbor::pack_header(cbor).map(|(version, blobs, nonce)| PackHeader {
                version,
                blobs,
                nonce,
            })
        })?;
        check_listing_version(header.version, &header.blobs, object)?;
        let mut expected_offset = area_start;
        let mut frame: Option<OpenFrame> = None;
        for blob in &header.blobs {
            check_blob_lengths(blob, || object.to_string())?;
            match blob.frame_offset {
                Some(start) if start > 0 => {
                    let follows = frame.as_mut().filter(|open| {
                        open.offset == blob.offset
                            && open.length == blob.length
                            && open.compression == blob.compression
                            && open.raw_total == u64::from(start)
                    });
                    let Some(open) = follows else {
                        return Err(StoreError::corrupt(
                            object,
                            format!(
                                "header places blob {} at {} in a frame at offset {} that does not hold the blobs before it",
                                blob.id, start, blob.offset
                            ),
                        ));
                    };
                    open.raw_total += u64::from(blob.raw_length);
                    continue;
                }
                _ => {}
            }
            if let Some(open) = frame.take() {
                open.check(object)?;
            }
            if blob.offset != expected_offset {
                return Err(StoreError::corrupt(
                    object,
                    format!(
                        "header places blob {} at offset {}, expected {expected_offset}",
                        blob.id, blob.offset
                    ),
                ));
            }
            if blob.frame_offset.is_some() {
                frame = Some(OpenFrame {
                    offset: blob.offset,
                    length: blob.length,
                    compression: blob.compression,
                    raw_total: u64::from(blob.raw_length),
                });
            }
            expected_offset += u64::from(blob.length);
        }
        if let Some(open) = frame.take() {
            open.check(object)?;
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

/// A shared frame met while checking a header: its stored bytes and the
/// raw bytes of the blobs listed in it so far.
struct OpenFrame {
    offset: u64,
    length: u32,
    compression: Compression,
    raw_total: u64,
}

impl OpenFrame {
    fn check(&self, object: &str) -> Result<()> {
        let plausible = self.raw_total <= u64::from(MAX_FRAME_SIZE)
            && self.length as usize
                <= self.compression.stored_bound(self.raw_total as usize) + PIECE_TAG as usize;
        if plausible {
            Ok(())
        } else {
            Err(StoreError::corrupt(
                object,
                format!(
                    "the frame at offset {} claims implausible lengths (stored {}, raw {})",
                    self.offset, self.length, self.raw_total
                ),
            ))
        }
    }
}

/// Lengths that no writer produces are refused before anything is allocated.
/// `object` names what holds the blob; it is asked for only on failure.
pub fn check_blob_lengths(blob: &BlobEntry, object: impl FnOnce() -> String) -> Result<()> {
    let plausible = blob.raw_length <= MAX_BLOB_SIZE
        && match (blob.compression, blob.frame_offset) {
            // Only a delta names a base.
            (compression, _) if compression != Compression::ZstdDelta && blob.base.is_some() => {
                false
            }
            // In an encrypted pack, every piece also holds its tag.
            (Compression::None, None) => {
                blob.length == blob.raw_length
                    || u64::from(blob.length) == u64::from(blob.raw_length) + u64::from(PIECE_TAG)
            }
            // zstd never expands input by more than a small bound.
            // A delta names its base, and only a delta does; it never
            // shares a frame, and is never its own base.
            (Compression::ZstdDelta, None) => {
                blob.base.is_some_and(|base| base != blob.id)
                    && blob.length as usize
                        <= Compression::ZstdDelta.stored_bound(blob.raw_length as usize)
                            + PIECE_TAG as usize
            }
            (compression, None) => {
                blob.length as usize
                    <= compression.stored_bound(blob.raw_length as usize) + PIECE_TAG as usize
            }
            // A frame's own bound is checked against all its blobs (a
            // header's); one entry can only be checked to fit in a frame,
            // and its stored length in what the largest frame may take.
            (compression @ (Compression::Zstd | Compression::ZstdPlanes), Some(start)) => {
                u64::from(start) + u64::from(blob.raw_length) <= u64::from(MAX_FRAME_SIZE)
                    && blob.length as usize
                        <= compression.stored_bound(MAX_FRAME_SIZE as usize) + PIECE_TAG as usize
            }
            (Compression::None | Compression::ZstdDelta, Some(_)) => false,
        };
    if plausible {
        Ok(())
    } else {
        Err(StoreError::corrupt(
            object(),
            format!(
                "blob {} claims implausible lengths (stored {}, raw {}, {:?}{})",
                blob.id,
                blob.length,
                blob.raw_length,
                blob.compression,
                match blob.frame_offset {
                    Some(start) => format!(", at {start} in a shared frame"),
                    None => String::new(),
                }
            ),
        ))
    }
}

/// Turns a blob's stored bytes back into its content, checking every length
/// and the BLAKE3 id. Corrupt data is an error, never returned. For a blob
/// in a shared frame, `stored` is the whole frame.
pub fn decode_blob(entry: &BlobEntry, stored: &[u8], pack: &Id) -> Result<Vec<u8>> {
    BlobDecoder::default().decode(entry, stored, pack)
}

/// A decoded and checked blob: bytes of its own, or its place in a shared
/// frame's decompressed content, which the blobs of one frame share
/// rather than each copying itself out (a restore copied and allocated
/// every blob of every frame once more that way).
#[derive(Clone, Debug)]
pub enum Decoded {
    Own(Vec<u8>),
    InFrame(Arc<Vec<u8>>, Range<usize>),
}

impl Decoded {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Decoded::Own(bytes) => bytes,
            Decoded::InFrame(content, range) => &content[range.clone()],
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Decoded::Own(bytes) => bytes,
            Decoded::InFrame(content, range) => content[range].to_vec(),
        }
    }
}

/// Decodes blobs one after another, decompressing a shared frame once for
/// all the consecutive blobs taken from it.
pub struct BlobDecoder {
    /// The last shared frame decompressed: its pack, offset and content.
    frame: Option<(Id, u64, Arc<Vec<u8>>)>,
    /// How blob ids are computed (keyed in an encrypted repository).
    hasher: IdHasher,
    /// In an encrypted repository: the ciphers that open pieces, and the
    /// last one used (a decoder mostly reads one pack after another).
    openers: Option<(OpenerSource, Option<LastOpener>)>,
    /// Where the bases of delta blobs come from; without one, a delta is
    /// refused (named), never guessed at.
    bases: Option<BaseSource>,
    /// How many bases down this decoder works: 0 for a blob asked for
    /// itself, 1 for its base, and so on.
    depth: usize,
}

/// The pack a decoder opened a piece of last, and its cipher.
type LastOpener = (Id, Arc<PackOpener>);

/// A decoder for a plaintext repository (plain BLAKE3 ids).
impl Default for BlobDecoder {
    fn default() -> Self {
        Self::new(IdHasher::Plain)
    }
}

impl BlobDecoder {
    /// A decoder checking ids with `hasher`.
    pub fn new(hasher: IdHasher) -> Self {
        BlobDecoder {
            frame: None,
            hasher,
            openers: None,
            bases: None,
            depth: 0,
        }
    }

    /// This decoder, fetching the bases of delta blobs from `bases`, as a
    /// decoder `depth` bases down a chain.
    pub fn with_bases(mut self, bases: BaseSource, depth: usize) -> Self {
        self.bases = Some(bases);
        self.depth = depth;
        self
    }

    /// The content of `entry`'s base, fetched by the base source (checked
    /// against the base's id with `check`), unless that would make a chain
    /// longer than [`delta::MAX_CHAIN`].
    fn base_of(
        &self,
        entry: &BlobEntry,
        check: bool,
        object: impl Fn() -> String,
    ) -> Result<Decoded> {
        let Some(base) = entry.base else {
            return Err(StoreError::corrupt(object(), "a delta without a base"));
        };
        if self.depth >= delta::MAX_CHAIN {
            return Err(StoreError::corrupt(
                object(),
                format!(
                    "a delta against {base} at the end of a chain of {} deltas: longer than the limit of {}",
                    self.depth + 1,
                    delta::MAX_CHAIN
                ),
            ));
        }
        let Some(source) = &self.bases else {
            return Err(StoreError::corrupt(
                object(),
                format!("a delta against {base}, whose base this reader cannot look up"),
            ));
        };
        source(&base, self.depth + 1, check).map_err(|error| match error {
            StoreError::Io { .. } => error,
            other => StoreError::corrupt(
                object(),
                format!("its delta base {base} is unusable: {other}"),
            ),
        })
    }

    /// A decoder for an encrypted repository: every piece is opened (its
    /// tag checked, then decrypted) before it is decoded.
    pub fn encrypted(hasher: IdHasher, openers: OpenerSource) -> Self {
        BlobDecoder {
            frame: None,
            hasher,
            openers: Some((openers, None)),
            bases: None,
            depth: 0,
        }
    }

    /// The piece's stored bytes, opened when the pack is encrypted (`None`
    /// when it is not: `stored` is used as it is).
    fn open<'s>(
        &mut self,
        entry: &BlobEntry,
        stored: Cow<'s, [u8]>,
        pack: &Id,
    ) -> Result<Cow<'s, [u8]>> {
        let Some((source, last)) = self.openers.as_mut() else {
            return Ok(stored);
        };
        let opener = match last {
            Some((id, opener)) if id == pack => Arc::clone(opener),
            _ => {
                let opener = source(pack)?;
                *last = Some((*pack, Arc::clone(&opener)));
                opener
            }
        };
        // Opened in place: bytes read for this piece alone are not copied.
        let mut piece = stored.into_owned();
        opener.open_piece(entry.offset, &mut piece, &|| format!("pack {pack}"))?;
        Ok(Cow::Owned(piece))
    }

    /// As [`decode_blob`].
    pub fn decode(&mut self, entry: &BlobEntry, stored: &[u8], pack: &Id) -> Result<Vec<u8>> {
        self.decode_sharing(entry, stored, pack, true)
            .map(Decoded::into_vec)
    }

    /// As [`BlobDecoder::decode`], but a blob in a shared frame is handed
    /// out as its place in the frame's content, not copied; and without
    /// `check`, its content is not hashed against its id (its length still
    /// is). Not checking is only for a caller that checks every byte
    /// otherwise, before anything is trusted: a restore checks a large
    /// file's whole-file hash, which covers all its chunks, and decodes
    /// with `check` to find the culprit when that hash does not match.
    pub fn decode_sharing(
        &mut self,
        entry: &BlobEntry,
        stored: &[u8],
        pack: &Id,
        check: bool,
    ) -> Result<Decoded> {
        self.decode_stored(entry, Cow::Borrowed(stored), pack, check)
    }

    /// As [`BlobDecoder::decode_sharing`], for stored bytes read for this
    /// blob alone: they are opened and kept in place, not copied first.
    pub fn decode_sharing_owned(
        &mut self,
        entry: &BlobEntry,
        stored: Vec<u8>,
        pack: &Id,
        check: bool,
    ) -> Result<Decoded> {
        self.decode_stored(entry, Cow::Owned(stored), pack, check)
    }

    fn decode_stored(
        &mut self,
        entry: &BlobEntry,
        stored: Cow<'_, [u8]>,
        pack: &Id,
        check: bool,
    ) -> Result<Decoded> {
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
        // A member of the frame decoded last needs no opening again.
        let opened = match entry.frame_offset.is_some() && self.held(entry, pack).is_some() {
            true => stored,
            false => self.open(entry, stored, pack)?,
        };
        let raw = match (entry.compression, entry.frame_offset) {
            (Compression::None, _) => Decoded::Own(opened.into_owned()),
            // The frame must declare the recorded length before anything
            // is allocated for it: a zstd bomb costs nothing.
            (Compression::Zstd, None) => Decoded::Own(
                zstd_contexts::decompress_frame(
                    &opened,
                    Expected::Exactly(entry.raw_length as usize),
                )
                .map_err(|error| StoreError::corrupt(object(), format!("zstd: {error}")))?,
            ),
            (Compression::ZstdPlanes, None) => Decoded::Own(
                zstd_contexts::decompress_planes(
                    &opened,
                    Expected::Exactly(entry.raw_length as usize),
                )
                .map_err(|error| StoreError::corrupt(object(), format!("zstd planes: {error}")))?,
            ),
            (Compression::ZstdDelta, None) => {
                return self
                    .decode_delta(entry, &opened, check, object)
                    .map(Decoded::Own);
            }
            (Compression::ZstdDelta, Some(_)) => {
                return Err(StoreError::corrupt(object(), "a delta in a shared frame"));
            }
            (Compression::Zstd | Compression::ZstdPlanes, Some(start)) => {
                let content = self.frame_content(entry, &opened, pack, object)?;
                let range = range_in_frame(entry, start, content, object)?;
                Decoded::InFrame(Arc::clone(content), range)
            }
        };
        if check {
            check_content(self.hasher, entry, raw.bytes(), object)?;
        } else {
            check_length(entry, raw.bytes(), object)?;
        }
        Ok(raw)
    }

    /// The content of the delta `entry` (its opened `stored` bytes),
    /// decompressed against its base; checked against its id with `check`,
    /// its length always.
    ///
    /// The base is taken unchecked against its own id (and so is its base,
    /// down the chain): what this blob decodes to is checked, here or by a
    /// caller that checks every byte otherwise (see
    /// [`BlobDecoder::decode_sharing`]), and a base that is not what its id
    /// says (damaged, or swapped by a hostile store) can only make this
    /// blob decode to bytes that fail that check, or not decode at all.
    /// Checking each base as well hashed every base, and every base's
    /// base, once more for each delta read. Only when this blob fails is
    /// its base fetched again, checked, so that the error names a damaged
    /// base rather than this blob; and if a sound copy of the base serves
    /// that fetch (the reader turns to other copies when the first fails
    /// its check), this blob is decoded again through it.
    fn decode_delta(
        &self,
        entry: &BlobEntry,
        stored: &[u8],
        check: bool,
        object: impl Fn() -> String,
    ) -> Result<Vec<u8>> {
        let through = |base: &Decoded| {
            delta::decompress(stored, base.bytes(), entry.raw_length as usize)
                .map_err(|error| StoreError::corrupt(object(), format!("zstd delta: {error}")))
                .and_then(|raw| {
                    match check {
                        true => check_content(self.hasher, entry, &raw, &object)?,
                        false => check_length(entry, &raw, &object)?,
                    }
                    Ok(raw)
                })
        };
        let decoded = self
            .base_of(entry, false, &object)
            .and_then(|base| through(&base));
        if decoded.is_ok() {
            return decoded;
        }
        let checked = self.base_of(entry, true, &object)?;
        through(&checked).or(decoded)
    }

    /// `entry`'s blob, if it lies in the shared frame this decoder
    /// decompressed last, so that its stored bytes need not be read again.
    pub fn decode_from_held_frame(&self, entry: &BlobEntry, pack: &Id) -> Option<Result<Vec<u8>>> {
        self.decode_from_held_frame_sharing(entry, pack, true)
            .map(|decoded| decoded.map(Decoded::into_vec))
    }

    /// As [`BlobDecoder::decode_from_held_frame`], handing the blob out as
    /// its place in the frame, checked against its id only with `check`
    /// (as [`BlobDecoder::decode_sharing`]).
    pub fn decode_from_held_frame_sharing(
        &self,
        entry: &BlobEntry,
        pack: &Id,
        check: bool,
    ) -> Option<Result<Decoded>> {
        let start = entry.frame_offset?;
        let content = self.held(entry, pack)?;
        let object = || format!("blob {} in pack {}", entry.id, pack);
        Some(
            check_blob_lengths(entry, object)
                .and_then(|()| range_in_frame(entry, start, content, object))
                .and_then(|range| {
                    let raw = &content[range.clone()];
                    match check {
                        true => check_content(self.hasher, entry, raw, object)?,
                        false => check_length(entry, raw, object)?,
                    }
                    Ok(Decoded::InFrame(Arc::clone(content), range))
                }),
        )
    }

    /// The decompressed content of `entry`'s shared frame, decompressed
    /// now unless it is the frame decoded last.
    fn frame_content(
        &mut self,
        entry: &BlobEntry,
        stored: &[u8],
        pack: &Id,
        object: impl Fn() -> String,
    ) -> Result<&Arc<Vec<u8>>> {
        let frame = match self.frame.take() {
            Some(held) if held.0 == *pack && held.1 == entry.offset => held,
            _ => {
                let limit = Expected::AtMost(MAX_FRAME_SIZE as usize);
                let content = match entry.compression {
                    Compression::ZstdPlanes => zstd_contexts::decompress_planes(stored, limit),
                    _ => zstd_contexts::decompress_frame(stored, limit),
                }
                .map_err(|error| StoreError::corrupt(object(), format!("zstd: {error}")))?;
                (*pack, entry.offset, Arc::new(content))
            }
        };
        Ok(&self.frame.insert(frame).2)
    }

    /// The content of the frame decoded last, if it is `entry`'s.
    /// Makes `content`, the decompressed frame stored at `offset` in
    /// `pack` (as an earlier decoder decoded it), the frame this decoder
    /// holds: a member asked for next is taken from it, and still checked
    /// against its id.
    pub fn hold_frame(&mut self, pack: Id, offset: u64, content: Arc<Vec<u8>>) {
        self.frame = Some((pack, offset, content));
    }

    /// The frame this decoder decoded or was given last: its pack, the
    /// offset of its stored piece and its content.
    pub fn held_frame(&self) -> Option<(Id, u64, Arc<Vec<u8>>)> {
        self.frame.clone()
    }

    fn held(&self, entry: &BlobEntry, pack: &Id) -> Option<&Arc<Vec<u8>>> {
        match &self.frame {
            Some((in_pack, offset, content)) if in_pack == pack && *offset == entry.offset => {
                Some(content)
            }
            _ => None,
        }
    }
}

/// Where the bytes of `entry` (at `start`) lie in its frame's decompressed
/// content.
fn range_in_frame(
    entry: &BlobEntry,
    start: u32,
    content: &[u8],
    object: impl FnOnce() -> String,
) -> Result<Range<usize>> {
    let from = start as usize;
    let range = from..from + entry.raw_length as usize;
    match content.get(range.clone()) {
        Some(_) => Ok(range),
        None => Err(StoreError::corrupt(
            object(),
            format!(
                "its frame holds {} bytes, too few for {} bytes at {start}",
                content.len(),
                entry.raw_length
            ),
        )),
    }
}

/// Checks decoded bytes against the entry's raw length.
fn check_length(entry: &BlobEntry, raw: &[u8], object: impl FnOnce() -> String) -> Result<()> {
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
    Ok(())
}

/// Checks decoded bytes against the entry's raw length and BLAKE3 id
/// (keyed in an encrypted repository).
fn check_content(
    hasher: IdHasher,
    entry: &BlobEntry,
    raw: &[u8],
    object: impl Fn() -> String,
) -> Result<()> {
    check_length(entry, raw, &object)?;
    if hasher.id(raw) != entry.id {
        return Err(StoreError::corrupt(
            object(),
            "content does not match its BLAKE3 id",
        ));
    }
    Ok(())
}

/// `blobs` (in pack order) cut into runs that share stored bytes: each
/// shared frame's blobs together, every other blob alone.
pub fn by_stored_bytes(blobs: &[BlobEntry]) -> impl Iterator<Item = &[BlobEntry]> {
    blobs.chunk_by(|a, b| {
        a.frame_offset.is_some()
            && b.frame_offset.is_some_and(|start| start > 0)
            && a.offset == b.offset
    })
}

/// Each blob's share of the stored bytes, in `blobs`' order: its own
/// length, or for blobs sharing a frame the frame's length split in
/// proportion to their raw lengths (what deleting them would free).
pub fn stored_shares(blobs: &[BlobEntry]) -> Vec<u64> {
    let mut shares = Vec::with_capacity(blobs.len());
    for frame in by_stored_bytes(blobs) {
        let raw_total: u64 = frame.iter().map(|blob| u64::from(blob.raw_length)).sum();
        for blob in frame {
            shares.push(if frame.len() == 1 || raw_total == 0 {
                u64::from(blob.length)
            } else {
                u64::from(blob.length) * u64::from(blob.raw_length) / raw_total
            });
        }
    }
    shares
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

/// Whether a pack's trailer is an encrypted pack's.
pub fn trailer_is_encrypted(trailer: &[u8]) -> bool {
    trailer.len() == TRAILER_SIZE as usize
        && crate::format::crypto::PackCipher::of_magic(&trailer[4..]).is_some()
}

/// The header length a trailer (plaintext or encrypted pack's) gives,
/// bounded by the pack's size.
pub fn parse_trailer(trailer: &[u8], pack_size: u64, object: &str) -> Result<u64> {
    if trailer.len() != TRAILER_SIZE as usize
        || (&trailer[4..] != PACK_MAGIC
            && crate::format::crypto::PackCipher::of_magic(&trailer[4..]).is_none())
    {
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

    /// A pack holding one delta, its base's content, and its entry.
    fn delta_pack() -> (Id, Vec<u8>, BlobEntry, Vec<u8>, Vec<u8>) {
        let base: Vec<u8> = (0..20_000u32)
            .flat_map(|n| (n * 7919).to_le_bytes())
            .collect();
        let mut changed = base.clone();
        changed[4_000] ^= 1;
        changed[60_000] ^= 2;
        let stored = delta::compress(&changed, &base, 3).unwrap();
        let mut writer = PackWriter::new();
        writer.add_delta(
            Id::of(&changed),
            changed.len() as u32,
            Id::of(&base),
            &stored,
        );
        let (id, bytes, entries) = writer.finish();
        (id, bytes, entries[0], base, changed)
    }

    fn serving(content: Vec<u8>) -> BaseSource {
        let id = Id::of(&content);
        Arc::new(move |asked: &Id, _, _| match *asked == id {
            true => Ok(Decoded::Own(content.clone())),
            false => Err(StoreError::corrupt(format!("blob {asked}"), "not here")),
        })
    }

    #[test]
    fn a_delta_decodes_through_its_base_and_nothing_else() {
        let (pack, bytes, entry, base, changed) = delta_pack();
        let header = parse_pack(&bytes, &pack).unwrap();
        assert_eq!(header.version, HEADER_VERSION_DELTA);
        assert_eq!(header.blobs, vec![entry]);
        let stored = &bytes[entry.offset as usize..][..entry.length as usize];
        let decoded = BlobDecoder::default()
            .with_bases(serving(base.clone()), 0)
            .decode(&entry, stored, &pack)
            .unwrap();
        assert_eq!(decoded, changed);

        // A reader that cannot look bases up refuses, naming the base.
        let alone = BlobDecoder::default()
            .decode(&entry, stored, &pack)
            .unwrap_err();
        assert!(alone.to_string().contains("base"), "{alone}");

        // A store that swaps the base for other bytes: the base source
        // serves them under the base's id, and the delta's own id check
        // catches what they decode to.
        let mut swapped = base.clone();
        swapped[9] ^= 0xff;
        let lying: BaseSource = Arc::new(move |_, _, _| Ok(Decoded::Own(swapped.clone())));
        for check in [true, false] {
            let refused = BlobDecoder::default()
                .with_bases(Arc::clone(&lying), 0)
                .decode_sharing(&entry, stored, &pack, check);
            // Unchecked, it decodes to the right length of wrong bytes:
            // the caller's whole-file hash is what refuses them.
            match refused {
                Ok(wrong) => assert!(!check && wrong.bytes() != changed.as_slice()),
                Err(error) => assert!(matches!(error, StoreError::Corrupt { .. }), "{error}"),
            }
        }

        // A base that is damaged where it is stored: the bases are taken
        // unchecked, but a delta that fails has its base fetched again,
        // checked, and the error names the base.
        let base_id = Id::of(&base);
        let mut damaged = base.clone();
        damaged[9] ^= 0xff;
        let checked_asks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let asks = Arc::clone(&checked_asks);
        let stored_damaged: BaseSource = Arc::new(move |asked: &Id, _, check| {
            if !check {
                return Ok(Decoded::Own(damaged.clone()));
            }
            asks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(StoreError::corrupt(
                format!("blob {asked}"),
                "content does not match its BLAKE3 id",
            ))
        });
        let named = BlobDecoder::default()
            .with_bases(stored_damaged, 0)
            .decode(&entry, stored, &pack)
            .unwrap_err()
            .to_string();
        assert!(
            named.contains(&format!("its delta base {base_id} is unusable")),
            "{named}"
        );
        assert_eq!(checked_asks.load(std::sync::atomic::Ordering::Relaxed), 1);

        // At the end of a chain as long as the bound, no base is fetched.
        let too_deep = BlobDecoder::default()
            .with_bases(serving(base), delta::MAX_CHAIN)
            .decode(&entry, stored, &pack)
            .unwrap_err();
        assert!(too_deep.to_string().contains("chain"), "{too_deep}");
        assert_ne!(base_id, entry.id);
    }

    #[test]
    fn delta_entries_that_break_the_rules_are_refused() {
        let (_, _, entry, _, _) = delta_pack();
        let object = || "test".to_string();
        let mut no_base = entry;
        no_base.base = None;
        assert!(check_blob_lengths(&no_base, object).is_err());
        let mut own_base = entry;
        own_base.base = Some(entry.id);
        assert!(check_blob_lengths(&own_base, object).is_err());
        let mut framed = entry;
        framed.frame_offset = Some(0);
        assert!(check_blob_lengths(&framed, object).is_err());
        let mut zstd_with_base = entry;
        zstd_with_base.compression = Compression::Zstd;
        assert!(check_blob_lengths(&zstd_with_base, object).is_err());
        assert!(check_listing_version(HEADER_VERSION_PLANES, &[entry], "test").is_err());
        assert!(check_listing_version(HEADER_VERSION_DELTA, &[entry], "test").is_ok());
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
        let encoded = crate::format::codec::to_cbor(&lying);
        let start = bytes.len() as u64 - TRAILER_SIZE - encoded.len() as u64;
        assert!(PackHeader::decode(&encoded, start, "test").is_err());
        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 3);
        assert!(parse_pack(&truncated, &id).is_err());
    }

    /// A pack of a sole blob and a shared frame of three blobs.
    fn framed_pack() -> (Id, Vec<u8>, Vec<BlobEntry>, Vec<Vec<u8>>) {
        let contents: Vec<Vec<u8>> = (0..3u8)
            .map(|n| {
                format!("row {n}: the quick brown fox ")
                    .repeat(40 + usize::from(n))
                    .into_bytes()
            })
            .collect();
        let mut writer = PackWriter::new();
        writer.add(BlobKind::Tree, Id::of(b"t"), 1, Compression::None, b"t");
        let members: Vec<_> = contents
            .iter()
            .map(|content| (BlobKind::Data, Id::of(content), content.len() as u32))
            .collect();
        let (compression, frame) = compress_frame(&contents.concat(), 1).unwrap();
        writer.add_frame(&members, (compression, &frame));
        let (id, bytes, entries) = writer.finish();
        (id, bytes, entries, contents)
    }

    #[test]
    fn float_vectors_are_stored_as_planes_alone_and_in_frames_and_decode_back() {
        let floats = planes::tests::floats(64 * 1024);
        let (compression, stored) = compress_blob(&floats, 1);
        assert_eq!(compression, Compression::ZstdPlanes);
        let plain = zstd::bulk::compress(&floats, 1).unwrap();
        assert!(
            stored.len() < plain.len(),
            "{} vs {}",
            stored.len(),
            plain.len()
        );
        let mut writer = PackWriter::new();
        writer.add(
            BlobKind::Data,
            Id::of(&floats),
            floats.len() as u32,
            compression,
            &stored,
        );
        let members: Vec<_> = floats
            .chunks(10_001)
            .take(3)
            .map(|blob| (BlobKind::Data, Id::of(blob), blob.len() as u32))
            .collect();
        let (frame_compression, frame) = compress_frame(&floats[..30_003], 1).unwrap();
        assert_eq!(frame_compression, Compression::ZstdPlanes);
        writer.add_frame(&members, (frame_compression, &frame));
        let (id, bytes, entries) = writer.finish();
        let header = parse_pack(&bytes, &id).unwrap();
        assert_eq!(header.version, HEADER_VERSION_PLANES);
        let expected = std::iter::once(&floats[..]).chain(floats.chunks(10_001).take(3));
        for (entry, content) in entries.iter().zip(expected) {
            let stored = &bytes[entry.offset as usize..][..entry.length as usize];
            assert_eq!(decode_blob(entry, stored, &id).unwrap(), content);
        }
        // A flipped byte in the planes fails the blob it lands in; a blob
        // of the frame it misses decodes to its own bytes, never others.
        let contents: Vec<&[u8]> = std::iter::once(&floats[..])
            .chain(floats.chunks(10_001).take(3))
            .collect();
        for damaged_entry in [&entries[0], &entries[2]] {
            let mut damaged = bytes.clone();
            damaged[damaged_entry.offset as usize + damaged_entry.length as usize / 2] ^= 0x10;
            let mut failed = 0;
            for (entry, content) in entries.iter().zip(&contents) {
                let stored = &damaged[entry.offset as usize..][..entry.length as usize];
                match decode_blob(entry, stored, &id) {
                    Ok(raw) => assert_eq!(raw, *content),
                    Err(StoreError::Corrupt { .. }) => failed += 1,
                    Err(other) => panic!("{other}"),
                }
            }
            assert_eq!(failed, 1);
        }
        // Planes in a listing of an earlier version are refused.
        let error = check_listing_version(HEADER_VERSION_SHARED, &header.blobs, "pack x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("stored as planes"), "{error}");
    }

    #[test]
    fn blobs_sharing_a_frame_decode_one_by_one_and_from_the_held_frame() {
        let (id, bytes, entries, contents) = framed_pack();
        let header = parse_pack(&bytes, &id).unwrap();
        assert_eq!(header.version, HEADER_VERSION_SHARED);
        assert_eq!(header.blobs, entries);
        assert_eq!(entries[1].frame_offset, Some(0));
        assert_eq!(entries[2].offset, entries[1].offset);
        assert_eq!(
            entries[3].frame_offset,
            Some((contents[0].len() + contents[1].len()) as u32)
        );
        let mut decoder = BlobDecoder::default();
        assert!(decoder.decode_from_held_frame(&entries[2], &id).is_none());
        for (entry, content) in entries[1..].iter().zip(&contents) {
            let stored = &bytes[entry.offset as usize..][..entry.length as usize];
            assert_eq!(&decode_blob(entry, stored, &id).unwrap(), content);
            assert_eq!(&decoder.decode(entry, stored, &id).unwrap(), content);
        }
        let held = decoder.decode_from_held_frame(&entries[2], &id).unwrap();
        assert_eq!(held.unwrap(), contents[1]);
        // Shared, the frame's blobs are places in one decompressed content;
        // checked or not, a blob whose place is wrong fails.
        let mut sharing = BlobDecoder::default();
        let shared: Vec<Decoded> = entries[1..]
            .iter()
            .map(|entry| {
                let stored = &bytes[entry.offset as usize..][..entry.length as usize];
                sharing.decode_sharing(entry, stored, &id, true).unwrap()
            })
            .collect();
        for (decoded, content) in shared.iter().zip(&contents) {
            assert_eq!(decoded.bytes(), content.as_slice());
        }
        match (&shared[0], &shared[2]) {
            (Decoded::InFrame(first, _), Decoded::InFrame(last, _)) => {
                assert!(Arc::ptr_eq(first, last));
            }
            other => panic!("not shared: {other:?}"),
        }
        let mut too_long = entries[3];
        too_long.raw_length += 1;
        let stored = &bytes[too_long.offset as usize..][..too_long.length as usize];
        for check in [true, false] {
            assert!(
                sharing
                    .decode_sharing(&too_long, stored, &id, check)
                    .is_err()
            );
        }
        // Another pack's frame at the same offset is not the one held.
        assert!(
            decoder
                .decode_from_held_frame(&entries[2], &Id::of(b"other"))
                .is_none()
        );
        // An entry that claims the wrong place in the frame fails its check.
        let mut shifted = entries[2];
        shifted.frame_offset = Some(1);
        assert!(
            decoder
                .decode_from_held_frame(&shifted, &id)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn a_flipped_byte_in_a_frame_fails_every_blob_in_it() {
        let (id, mut bytes, entries, _) = framed_pack();
        bytes[entries[1].offset as usize + entries[1].length as usize / 2] ^= 0x40;
        for entry in &entries[1..] {
            let stored = &bytes[entry.offset as usize..][..entry.length as usize];
            assert!(matches!(
                decode_blob(entry, stored, &id),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn headers_with_frames_that_do_not_add_up_are_refused() {
        let (id, bytes, _, _) = framed_pack();
        let header = parse_pack(&bytes, &id).unwrap();
        let start = bytes.len() as u64 - TRAILER_SIZE - to_cbor_len(&header);
        assert!(PackHeader::decode(&crate::format::codec::to_cbor(&header), start, "test").is_ok());
        let refused = |change: &dyn Fn(&mut PackHeader)| {
            let mut lying = header.clone();
            change(&mut lying);
            let encoded = crate::format::codec::to_cbor(&lying);
            let start = bytes.len() as u64 - TRAILER_SIZE - encoded.len() as u64;
            PackHeader::decode(&encoded, start, "test").is_err()
        };
        // A gap or overlap between the blobs of a frame.
        assert!(refused(&|h| h.blobs[2].frame_offset = Some(1)));
        // A member that names another frame's bytes.
        assert!(refused(&|h| h.blobs[3].length -= 1));
        // A frame listed in a version 1 header.
        assert!(refused(&|h| h.version = HEADER_VERSION_SOLE));
        // An unknown version, named with the ones this cairn reads.
        assert!(refused(&|h| h.version = HEADER_VERSION_DELTA + 1));
        let error = check_listing_version(HEADER_VERSION_DELTA + 1, &header.blobs, "pack x")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("version 5") && error.contains("versions 1 to 4"),
            "{error}"
        );
        // Raw blobs cannot share a frame.
        assert!(refused(&|h| h.blobs[1].compression = Compression::None));
        // A frame longer than zstd's bound for its blobs' raw bytes.
        let mut writer = PackWriter::new();
        let tiny = [
            (BlobKind::Data, Id::of(b"a"), 1),
            (BlobKind::Data, Id::of(b"b"), 1),
        ];
        writer.add_frame(&tiny, (Compression::Zstd, &[0u8; 200]));
        let (id, bytes, _) = writer.finish();
        let error = parse_pack(&bytes, &id).unwrap_err().to_string();
        assert!(error.contains("implausible lengths"), "{error}");
    }

    #[test]
    fn a_shared_frame_entry_is_bounded_by_the_largest_frame() {
        let (_, _, entries, _) = framed_pack();
        let entry = entries[2];
        assert!(check_blob_lengths(&entry, String::new).is_ok());
        // 1 GiB of stored frame for a blob of 12 bytes: refused from the
        // entry alone, before anything is read or allocated.
        let mut lying = entry;
        lying.length = 1 << 30;
        lying.raw_length = 12;
        let error = check_blob_lengths(&lying, || "index file x".into())
            .unwrap_err()
            .to_string();
        assert!(error.contains("implausible lengths"), "{error}");
        // A place past the largest frame's content.
        let mut beyond = entry;
        beyond.frame_offset = Some(MAX_FRAME_SIZE);
        assert!(check_blob_lengths(&beyond, String::new).is_err());
        // The frame itself may not declare more than the largest frame.
        let mut decoder = BlobDecoder::default();
        let big = vec![7u8; MAX_FRAME_SIZE as usize + 1];
        let (compression, frame) = compress_frame(&big, 1).unwrap();
        let member = BlobEntry {
            kind: BlobKind::Data,
            id: Id::of(&big[..12]),
            offset: 8,
            length: frame.len() as u32,
            raw_length: 12,
            compression,
            frame_offset: Some(0),
            base: None,
        };
        let error = decoder
            .decode(&member, &frame, &Id::of(b"pack"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("more than 1048576"), "{error}");
    }

    fn to_cbor_len(header: &PackHeader) -> u64 {
        crate::format::codec::to_cbor(header).len() as u64
    }

    #[test]
    fn a_frame_is_shared_out_among_its_blobs_by_raw_length() {
        let (_, _, entries, contents) = framed_pack();
        let shares = stored_shares(&entries);
        assert_eq!(shares[0], 1);
        let frame = u64::from(entries[1].length);
        let raw: u64 = contents.iter().map(|content| content.len() as u64).sum();
        for (share, content) in shares[1..].iter().zip(&contents) {
            assert_eq!(*share, frame * content.len() as u64 / raw);
        }
        assert!(shares[1..].iter().sum::<u64>() <= frame);
    }
}
