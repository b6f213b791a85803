//! Index files: which pack holds each blob, and where.
//!
//! Index files in the repository are immutable CBOR objects, each listing
//! some packs with their sizes and blobs, named by their BLAKE3 hash. Index
//! files may overlap (a blob or pack may be listed twice, e.g. by two
//! concurrent backups).
//!
//! Anyone who can add an object can add an index file, so a listing is
//! only a claim. Since index file version 2 (docs/FORMAT.md section 9) the
//! writer seals it (`format::seal`, domain [`INDEX_DOMAIN`]) with this
//! repository's id inside the signed body: a listing is *vouched* for when
//! its file opens under a key trusted here and names this repository.
//! Vouched listings may decide what a backup skips and what a prune
//! deletes; any other listing (a legacy unsigned file, one signed by an
//! untrusted key, or one naming another repository) is only a hint of
//! where to look, since every blob read is checked against its id.
//!
//! This module owns the index file encodings, their validation and the
//! vouching rule; it never reads pack contents, never decides which keys
//! are trusted, and does no I/O (the local cache of lookups is
//! `crate::index`).

use crate::error::{Result, StoreError};
use crate::format::codec::{from_packed_cbor_or, to_packed_cbor};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::limits::MAX_INDEX_FILE_SIZE;
use crate::format::pack::{
    BlobEntry, PACK_MAGIC, TRAILER_SIZE, check_blob_lengths, check_listing_version, listing_cbor,
    listing_version,
};
use crate::format::seal::{Envelope, TrustFailure};
use crate::id::Id;
use serde::{Deserialize, Serialize};

/// The signing domain of sealed index files (index file version 2).
pub const INDEX_DOMAIN: &[u8] = b"cairn index v2\0";

/// One pack as an index file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    pub id: Id,
    /// The pack's total size in bytes.
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

/// The listings of an index file: the whole of a legacy (version 1,
/// unsigned) file, and the part of a sealed one that is not its
/// repository id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    pub version: u32,
    pub packs: Vec<PackEntry>,
}

/// Packs as `listing_cbor` decodes them.
fn pack_entries(packs: Vec<listing_cbor::ListedPack>) -> Vec<PackEntry> {
    packs
        .into_iter()
        .map(|(id, size, blobs)| PackEntry { id, size, blobs })
        .collect()
}

/// The signed body of a sealed index file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedBody {
    /// The listing version, as [`IndexFile::version`].
    version: u32,
    /// The repository the writer wrote it for.
    repository: Id,
    packs: Vec<PackEntry>,
}

/// Whether an index file's listings may decide anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vouching {
    /// Sealed by a trusted key for this repository.
    Vouched,
    /// A legacy unsigned file (written by a cairn from before sealing, or
    /// planted): a hint only.
    Unsigned,
    /// Sealed, but not for this repository by a key trusted here (the
    /// reason says which): a hint only.
    NotTrusted(String),
}

impl Vouching {
    pub fn is_vouched(&self) -> bool {
        *self == Vouching::Vouched
    }

    /// Why the file's listings are only hints; `None` when vouched.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Vouching::Vouched => None,
            Vouching::Unsigned => Some("unsigned (a legacy or planted index file)".into()),
            Vouching::NotTrusted(why) => Some(why.clone()),
        }
    }
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

    /// The legacy unsigned encoding: what a writer without a trusted key
    /// writes (a hint only, never vouched for).
    pub fn encode(&self) -> Vec<u8> {
        to_packed_cbor(self)
    }

    /// The sealed encoding (index file version 2): signed by `key` for
    /// `repository`.
    pub fn seal(&self, repository: &Id, key: &SigningKey) -> Vec<u8> {
        let body = SealedBody {
            version: self.version,
            repository: *repository,
            packs: self.packs.clone(),
        };
        Envelope::seal(to_packed_cbor(&body), INDEX_DOMAIN, repository, key).encode()
    }

    /// Decodes either encoding and checks its listings, and says whether
    /// it is vouched for: sealed under a key in `trusted` for `repository`.
    /// Only bytes that decode as neither are an error.
    pub fn open(
        bytes: &[u8],
        object: &str,
        repository: &Id,
        trusted: &[PublicKey],
    ) -> Result<(Self, Vouching)> {
        let Ok(envelope) = Envelope::decode(bytes, object) else {
            return Ok((Self::decode(bytes, object)?, Vouching::Unsigned));
        };
        let body: SealedBody =
            from_packed_cbor_or(&envelope.body, MAX_INDEX_FILE_SIZE, object, |cbor| {
                listing_cbor::sealed_index_body(cbor).map(|(version, repository, packs)| {
                    SealedBody {
                        version,
                        repository,
                        packs: pack_entries(packs),
                    }
                })
            })?;
        let file = IndexFile {
            version: body.version,
            packs: body.packs,
        };
        file.check(object)?;
        let vouching = match envelope.open(INDEX_DOMAIN, repository, trusted) {
            Err(TrustFailure::UntrustedSigner(key)) => {
                Vouching::NotTrusted(format!("signed by key {}, not trusted here", key.to_hex()))
            }
            Err(TrustFailure::BadSignature) => {
                Vouching::NotTrusted("its signature does not match its contents".into())
            }
            Err(TrustFailure::OtherRepository(other)) => {
                Vouching::NotTrusted(format!("written for another repository ({other})"))
            }
            // Sealed index files exist only in envelope version 2, which
            // names the repository; the body names it too.
            Ok(()) if envelope.repository.is_none() || body.repository != *repository => {
                Vouching::NotTrusted(format!(
                    "written for another repository ({})",
                    body.repository
                ))
            }
            Ok(()) => Vouching::Vouched,
        };
        Ok((file, vouching))
    }

    /// Decodes the legacy unsigned encoding and checks its listings.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let index: IndexFile = from_packed_cbor_or(bytes, MAX_INDEX_FILE_SIZE, object, |cbor| {
            listing_cbor::index_file(cbor).map(|(version, packs)| IndexFile {
                version,
                packs: pack_entries(packs),
            })
        })?;
        index.check(object)?;
        Ok(index)
    }

    /// Checks that every blob lies inside its pack's blob area.
    fn check(&self, object: &str) -> Result<()> {
        check_listing_version(self.version, &[], object)?;
        for pack in &self.packs {
            check_listing_version(self.version, &pack.blobs, object)?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};
    use crate::format::pack::{BlobKind, Compression};

    fn listing() -> IndexFile {
        IndexFile::new(vec![PackEntry {
            id: Id::of(b"pack"),
            size: 1000,
            blobs: vec![BlobEntry {
                kind: BlobKind::Data,
                id: Id::of(b"blob"),
                offset: 8,
                length: 10,
                raw_length: 10,
                compression: Compression::None,
                frame_offset: None,
                base: None,
            }],
        }])
    }

    #[test]
    fn a_sealed_index_file_is_vouched_only_by_a_trusted_key_for_its_repository() {
        let key = generate_signing_key().unwrap();
        let trusted = [public_key_of(&key)];
        let (here, elsewhere) = (Id::of(b"this repository"), Id::of(b"another"));
        let sealed = listing().seal(&here, &key);
        let open = |repository: &Id, trusted: &[PublicKey]| {
            IndexFile::open(&sealed, "index file", repository, trusted).unwrap()
        };
        assert_eq!(open(&here, &trusted), (listing(), Vouching::Vouched));
        assert!(!open(&here, &[]).1.is_vouched());
        assert!(!open(&elsewhere, &trusted).1.is_vouched());
        // The legacy encoding still reads, as a hint.
        let legacy = IndexFile::open(&listing().encode(), "index file", &here, &trusted).unwrap();
        assert_eq!(legacy, (listing(), Vouching::Unsigned));
        // A tampered body no longer opens as vouched.
        let mut envelope = Envelope::decode(&sealed, "index file").unwrap();
        let last = envelope.body.len() - 1;
        envelope.body[last] ^= 1;
        let tampered = IndexFile::open(&envelope.encode(), "index file", &here, &trusted);
        assert!(tampered.is_err() || !tampered.unwrap().1.is_vouched());
        assert!(IndexFile::open(b"garbage", "index file", &here, &trusted).is_err());
    }
}
