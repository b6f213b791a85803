//! [`Repository`]: a backend plus its validated config, and the verified
//! reading and writing of whole objects.
//!
//! Every object read through here is checked against its name (the BLAKE3
//! hash of its bytes) before it is decoded; a mismatch is corruption, never
//! a silent skip. This module never walks trees or decides what to back up.

mod records;

pub use records::{ReadMark, UnreadableMark, marked_packs, read_mark, read_marks, read_record};

use crate::backend::{Backend, Created, ObjectKind};
use crate::error::{Result, StoreError};
use crate::format::config::{CONFIG_NAME, RepositoryConfig};
use crate::format::index::{BlobLocation, IndexFile, PackEntry, Vouching};
use crate::format::keys::{PublicKey, PublicKeyObject, SigningKey};
use crate::format::manifest::SignedManifest;
use crate::format::pack::{
    BlobDecoder, PACK_MAGIC, PackHeader, TRAILER_SIZE, parse_pack, parse_trailer,
};
use crate::id::Id;
use cairn_chunker::ChunkerParams;
use std::sync::Arc;

/// 32 random bytes: a repository's id names it, e.g. for local caches.
fn random_repository_id() -> Result<Id> {
    Ok(Id(crate::os::random::random_bytes()?))
}

#[derive(Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepositoryConfig,
}

impl Repository {
    /// Creates a repository: the public key first, the config last, since
    /// the config is what makes a directory a repository.
    pub fn init(
        backend: Arc<dyn Backend>,
        chunker: ChunkerParams,
        compression_level: i32,
        signer: PublicKey,
    ) -> Result<Self> {
        chunker.validate()?;
        let mut config = RepositoryConfig::new(random_repository_id()?, chunker);
        config.compression.level = compression_level;
        Self::create(backend, config, signer)
    }

    /// Creates a repository that chunks and stores exactly as `like` does
    /// (chunk sizes, SQLite pages, compression, pack size), with its own
    /// id: copies between the two stay deduplicated.
    pub fn init_like(
        backend: Arc<dyn Backend>,
        like: &RepositoryConfig,
        signer: PublicKey,
    ) -> Result<Self> {
        let config = RepositoryConfig {
            repository_id: random_repository_id()?,
            ..like.clone()
        };
        Self::create(backend, config, signer)
    }

    fn create(
        backend: Arc<dyn Backend>,
        config: RepositoryConfig,
        signer: PublicKey,
    ) -> Result<Self> {
        if !backend.list(ObjectKind::Config)?.is_empty() {
            return Err(StoreError::AlreadyARepository {
                path: backend.location(),
            });
        }
        // Validate what will be written exactly as readers will.
        RepositoryConfig::decode(&config.encode())?;
        let key_object = PublicKeyObject::new(signer).encode();
        backend.create(ObjectKind::Key, &Id::of(&key_object).to_hex(), &key_object)?;
        match backend.create(ObjectKind::Config, CONFIG_NAME, &config.encode())? {
            Created::New => Ok(Repository { backend, config }),
            Created::AlreadyExisted => Err(StoreError::AlreadyARepository {
                path: backend.location(),
            }),
        }
    }

    pub fn open(backend: Arc<dyn Backend>) -> Result<Self> {
        let bytes = match backend.read(ObjectKind::Config, CONFIG_NAME) {
            Ok(bytes) => bytes,
            Err(StoreError::Missing { .. }) => {
                return Err(StoreError::NotARepository {
                    path: backend.location(),
                });
            }
            Err(error) => return Err(error),
        };
        let config = RepositoryConfig::decode(&bytes)?;
        Ok(Repository { backend, config })
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn config(&self) -> &RepositoryConfig {
        &self.config
    }

    pub fn chunker_params(&self) -> Result<ChunkerParams> {
        self.config.chunker_params()
    }

    /// Ids of every object of `kind`; names that are not ids are ignored
    /// (nothing cairn writes has such a name).
    pub fn list_ids(&self, kind: ObjectKind) -> Result<Vec<Id>> {
        Ok(self
            .backend
            .list(kind)?
            .iter()
            .filter_map(|object| Id::from_hex(&object.name))
            .collect())
    }

    /// Every pack in the repository with its size (names that are not ids
    /// are ignored, as in [`Repository::list_ids`]).
    pub fn list_packs(&self) -> Result<std::collections::HashMap<Id, u64>> {
        Ok(self
            .backend
            .list(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|object| Some((Id::from_hex(&object.name)?, object.size)))
            .collect())
    }

    /// Reads a whole object and checks it hashes to its name.
    pub fn read_verified(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.backend.read(kind, &id.to_hex())?;
        if Id::of(&bytes) != *id {
            return Err(StoreError::corrupt(
                format!("{} {id}", kind.label()),
                "content does not match its name (BLAKE3 hash)",
            ));
        }
        Ok(bytes)
    }

    /// Stores an object under the hash of its bytes.
    pub fn write_object(&self, kind: ObjectKind, bytes: &[u8]) -> Result<Id> {
        let id = Id::of(bytes);
        self.backend.create(kind, &id.to_hex(), bytes)?;
        Ok(id)
    }

    /// An index file's listings, whoever wrote them: hints of where blobs
    /// are (every blob read is checked against its id), never grounds to
    /// skip storing or to delete anything (see [`Self::open_index_file`]).
    pub fn read_index_file(&self, id: &Id) -> Result<IndexFile> {
        self.open_index_file(id, &[]).map(|(file, _)| file)
    }

    /// An index file's listings, and whether they are vouched for: sealed
    /// for this repository by one of `trusted` (FORMAT.md section 9).
    pub fn open_index_file(&self, id: &Id, trusted: &[PublicKey]) -> Result<(IndexFile, Vouching)> {
        let bytes = self.read_verified(ObjectKind::Index, id)?;
        IndexFile::open(
            &bytes,
            &format!("index file {id}"),
            &self.config.repository_id,
            trusted,
        )
    }

    /// Stores an index file: sealed for this repository by `signer`, or,
    /// without one, unsigned (a hint that no reader acts on).
    pub fn write_index_file(&self, file: &IndexFile, signer: Option<&SigningKey>) -> Result<Id> {
        let bytes = match signer {
            Some(key) => file.seal(&self.config.repository_id, key),
            None => file.encode(),
        };
        self.write_object(ObjectKind::Index, &bytes)
    }

    pub fn read_manifest(&self, id: &Id) -> Result<SignedManifest> {
        let bytes = self.read_verified(ObjectKind::Snapshot, id)?;
        SignedManifest::decode(&bytes, &format!("snapshot {id}"))
    }

    /// The public keys published in the repository (not trusted for that).
    pub fn published_keys(&self) -> Result<Vec<PublicKey>> {
        let mut keys = Vec::new();
        for id in self.list_ids(ObjectKind::Key)? {
            let bytes = self.read_verified(ObjectKind::Key, &id)?;
            keys.push(PublicKeyObject::decode(&bytes, &format!("key {id}"))?);
        }
        Ok(keys)
    }

    /// Reads one blob with a ranged read and checks it against its id.
    pub fn read_blob(&self, location: &BlobLocation) -> Result<Vec<u8>> {
        self.read_blob_with(&mut BlobDecoder::default(), location)
    }

    /// [`Self::read_blob`], through `decoder`: a blob in the shared frame
    /// it decoded last is taken from there, with no read, so a caller
    /// reading the blobs of a frame one by one reads and decompresses it
    /// once.
    pub fn read_blob_with(
        &self,
        decoder: &mut BlobDecoder,
        location: &BlobLocation,
    ) -> Result<Vec<u8>> {
        if let Some(decoded) = decoder.decode_from_held_frame(&location.entry, &location.pack) {
            return decoded;
        }
        let stored = self.backend.read_range(
            ObjectKind::Pack,
            &location.pack.to_hex(),
            location.entry.offset,
            u64::from(location.entry.length),
        )?;
        decoder.decode(&location.entry, &stored, &location.pack)
    }

    /// Reads a whole pack, checks it against its name and every blob in it
    /// against its id, and returns its listing: what a writer may vouch
    /// for in an index file it seals (a pack's header alone says only what
    /// the pack's writer claimed, and anyone may add a pack).
    pub fn verified_pack_listing(&self, id: &Id) -> Result<PackEntry> {
        let object = format!("pack {id}");
        let bytes = self.read_verified(ObjectKind::Pack, id)?;
        let header = parse_pack(&bytes, id)?;
        let mut decoder = BlobDecoder::default();
        for entry in &header.blobs {
            let stored = usize::try_from(entry.offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(entry.length as usize)?))
                .ok_or_else(|| {
                    StoreError::corrupt(&object, format!("blob {} lies past the end", entry.id))
                })?;
            decoder.decode(entry, stored, id)?;
        }
        Ok(PackEntry {
            id: *id,
            size: bytes.len() as u64,
            blobs: header.blobs,
        })
    }

    /// Resolves `latest` (the newest snapshot that is not a restore's
    /// safety snapshot), a full id or a unique prefix of at least 4 hex
    /// digits to a snapshot id.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<Id> {
        self.resolve_snapshot_trusted(spec, None)
    }

    /// As [`Repository::resolve_snapshot`]; with `trusted`, `latest` skips
    /// snapshots not validly signed by one of those keys, so a planted
    /// manifest cannot become "latest".
    pub fn resolve_snapshot_trusted(
        &self,
        spec: &str,
        trusted: Option<&[PublicKey]>,
    ) -> Result<Id> {
        let ids = self.list_ids(ObjectKind::Snapshot)?;
        if spec == "latest" {
            let mut newest: Option<(String, Id)> = None;
            for id in ids {
                // Skipping an unreadable manifest could pick an older
                // snapshot than the user means; refuse and say why.
                let manifest = self.read_manifest(&id).map_err(|error| {
                    StoreError::Invalid(format!(
                        "cannot tell which snapshot is latest: {error}; name a snapshot id instead"
                    ))
                })?;
                if let Some(trusted) = trusted
                    && manifest.verify(trusted).is_err()
                {
                    continue;
                }
                let body = manifest.body_unverified().map_err(|error| {
                    StoreError::Invalid(format!(
                        "cannot tell which snapshot is latest: {error}; name a snapshot id instead"
                    ))
                })?;
                if body
                    .tags
                    .iter()
                    .any(|tag| tag == crate::format::manifest::SAFETY_TAG)
                {
                    continue;
                }
                let time = body.time;
                if newest.as_ref().is_none_or(|(best, _)| time > *best) {
                    newest = Some((time, id));
                }
            }
            return newest
                .map(|(_, id)| id)
                .ok_or_else(|| StoreError::SnapshotNotFound(spec.into()));
        }
        let prefix = spec.to_ascii_lowercase();
        if prefix.len() < 4 || !prefix.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(StoreError::SnapshotNotFound(spec.into()));
        }
        let matching: Vec<Id> = ids
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect();
        match matching.len() {
            0 => Err(StoreError::SnapshotNotFound(spec.into())),
            1 => Ok(matching[0]),
            count => Err(StoreError::AmbiguousSnapshot {
                prefix: spec.into(),
                count,
            }),
        }
    }
}

impl Repository {
    /// Reads only a pack's header, with two ranged reads (trailer, then
    /// header), each bounded by the pack's listed size before it is made.
    pub fn read_pack_header(&self, pack: &Id, pack_size: u64) -> Result<PackHeader> {
        let object = format!("pack {pack}");
        let name = pack.to_hex();
        if pack_size < PACK_MAGIC.len() as u64 + TRAILER_SIZE {
            return Err(StoreError::corrupt(
                &object,
                format!("only {pack_size} bytes long"),
            ));
        }
        let trailer = self.backend.read_range(
            ObjectKind::Pack,
            &name,
            pack_size - TRAILER_SIZE,
            TRAILER_SIZE,
        )?;
        let header_length = parse_trailer(&trailer, pack_size, &object)?;
        let header_start = pack_size - TRAILER_SIZE - header_length;
        let header =
            self.backend
                .read_range(ObjectKind::Pack, &name, header_start, header_length)?;
        PackHeader::decode(&header, header_start, &object)
    }
}
