//! [`Repository`]: a backend plus its validated config, and the verified
//! reading and writing of whole objects.
//!
//! Every object read through here is checked against its name (the BLAKE3
//! hash of its bytes) before it is decoded; a mismatch is corruption, never
//! a silent skip. This module never walks trees or decides what to back up.

mod base_frames;
mod bases_ahead;
mod listed_copies;
mod pack_scan;
mod records;

pub use bases_ahead::{AHEAD_BYTES, BasesAhead};
pub use pack_scan::{LOCAL_SCAN_WINDOW, PackScan, SCAN_WINDOW, scan_window};
pub use records::{ReadMark, UnreadableMark, marked_packs, read_mark, read_marks, read_record};

use crate::backend::{Backend, Created, ObjectKind};
use crate::error::{Result, StoreError};
use crate::format::config::{CONFIG_NAME, RepositoryConfig};
use crate::format::crypto::{PackCipher, PackOpener, PackSealer, RepositoryKeys, SealedKind};
use crate::format::index::{BlobLocation, IndexFile, PackEntry, Vouching};
use crate::format::keys::{PublicKey, PublicKeyObject, SigningKey};
use crate::format::limits;
use crate::format::manifest::{SAFETY_TAG, SignedManifest, SnapshotBody};
use crate::format::pack::{
    BlobDecoder, Decoded, ENCRYPTED_AREA_START, PACK_MAGIC, PackHeader, TRAILER_SIZE,
    parse_trailer, trailer_is_encrypted,
};
use crate::id::{Id, IdHasher};
use base_frames::BaseFrames;
use cairn_chunker::ChunkerParams;
use listed_copies::ListedCopies;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The lock, even if a thread panicked holding it (the map stays valid).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 32 random bytes: a repository's id names it, e.g. for local caches.
fn random_repository_id() -> Result<Id> {
    Ok(Id(crate::os::random::random_bytes()?))
}

#[derive(Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepositoryConfig,
    /// The key material, once an encrypted repository is unlocked; always
    /// `None` in a plaintext one.
    keys: Option<Arc<RepositoryKeys>>,
    /// The ciphers of the encrypted packs read so far, shared by every
    /// clone: each pack's key is derived once per run.
    openers: Arc<Mutex<HashMap<Id, Arc<PackOpener>>>>,
    /// Where the bases of delta blobs are looked up: the index opened for
    /// this repository last ([`Self::locate_bases_with`]), shared by every
    /// clone.
    base_locator: Arc<Mutex<Option<BaseLocator>>>,
    /// The shared frames decoded last for delta bases, shared by every
    /// clone ([`base_frames`]).
    base_frames: Arc<Mutex<BaseFrames>>,
    /// Reads of the backend for delta bases fetched one by one through the
    /// index, shared by every clone: a restore counts them among its
    /// requests.
    base_reads: Arc<AtomicU64>,
    /// Every place the index files list the blobs they list more than
    /// once, read on the first failure and shared by every clone.
    listed_copies: ListedCopies,
}

/// Finds a blob's location by its id (an index's lookup).
pub type BaseLocator = Arc<dyn Fn(&Id) -> Result<Option<BlobLocation>> + Send + Sync>;

/// Delta bases a caller decoded ahead (unchecked against their ids, as a
/// decoder takes a base): the content of one by its id, if held.
pub type HeldBases = Arc<dyn Fn(&Id) -> Option<Decoded> + Send + Sync>;

/// A plaintext repository on `backend` with the default chunker, and the
/// key it trusts: the set-up the crate's unit tests share.
#[cfg(test)]
pub(crate) fn plaintext_for_tests(backend: Arc<dyn Backend>) -> (Repository, SigningKey) {
    let key = crate::format::keys::generate_signing_key().expect("a signing key");
    let repository = Repository::init(
        backend,
        ChunkerParams::DEFAULT,
        3,
        crate::format::keys::public_key_of(&key),
        None,
    )
    .expect("a plaintext repository");
    (repository, key)
}

impl Repository {
    /// A fresh repository id, for the keys of a repository about to be
    /// made ([`RepositoryKeys::generate`]).
    pub fn new_id() -> Result<Id> {
        random_repository_id()
    }

    /// Creates a repository: the public key first, the config last, since
    /// the config is what makes a directory a repository. With `keys`, it
    /// is encrypted to them and takes their repository id (the caller
    /// writes a key slot holding them first, so that an encrypted
    /// repository never exists without a way to open it); without,
    /// plaintext.
    pub fn init(
        backend: Arc<dyn Backend>,
        chunker: ChunkerParams,
        compression_level: i32,
        signer: PublicKey,
        keys: Option<&RepositoryKeys>,
    ) -> Result<Self> {
        chunker.validate()?;
        let id = match keys {
            Some(keys) => *keys.repository(),
            None => random_repository_id()?,
        };
        let mut config = RepositoryConfig::new(id, chunker);
        config.compression.level = compression_level;
        Self::create(backend, config, signer, keys)
    }

    /// Creates a repository that chunks and stores exactly as `like` does
    /// (chunk sizes, SQLite pages, compression, pack size), with its own
    /// id: copies between the two stay deduplicated.
    /// Encrypted with `keys` or plaintext without, whatever `like` is.
    pub fn init_like(
        backend: Arc<dyn Backend>,
        like: &RepositoryConfig,
        signer: PublicKey,
        keys: Option<&RepositoryKeys>,
    ) -> Result<Self> {
        let id = match keys {
            Some(keys) => *keys.repository(),
            None => random_repository_id()?,
        };
        let config = RepositoryConfig {
            repository_id: id,
            ..like.clone()
        };
        Self::create(backend, config, signer, keys)
    }

    fn create(
        backend: Arc<dyn Backend>,
        mut config: RepositoryConfig,
        signer: PublicKey,
        keys: Option<&RepositoryKeys>,
    ) -> Result<Self> {
        match keys {
            Some(keys) => config.encrypt_to(keys.public_key()),
            None => config.plaintext(),
        }
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
            Created::New => Ok(Repository {
                backend,
                config,
                keys: keys.map(|keys| Arc::new(keys.clone())),
                openers: Arc::default(),
                base_locator: Arc::default(),
                base_frames: Arc::default(),
                base_reads: Arc::default(),
                listed_copies: ListedCopies::default(),
            }),
            Created::AlreadyExisted => Err(StoreError::AlreadyARepository {
                path: backend.location(),
            }),
        }
    }

    pub fn open(backend: Arc<dyn Backend>) -> Result<Self> {
        let bytes = match backend.read(ObjectKind::Config, CONFIG_NAME, limits::MAX_CONFIG_SIZE) {
            Ok(bytes) => bytes,
            Err(StoreError::Missing { .. }) => {
                return Err(StoreError::NotARepository {
                    path: backend.location(),
                });
            }
            Err(error) => return Err(error),
        };
        let config = RepositoryConfig::decode(&bytes)?;
        Ok(Repository {
            backend,
            config,
            keys: None,
            openers: Arc::default(),
            base_locator: Arc::default(),
            base_frames: Arc::default(),
            base_reads: Arc::default(),
            listed_copies: ListedCopies::default(),
        })
    }

    /// Whether the repository encrypts its objects (its config says so).
    pub fn is_encrypted(&self) -> bool {
        self.config.encryption.is_some()
    }

    /// Gives an encrypted repository its keys. Keys of another repository,
    /// or whose public key is not the one the config names (nor rotated
    /// from it), are refused:
    /// a replaced config would otherwise make writers encrypt to someone
    /// else's key.
    pub fn unlock(&mut self, keys: RepositoryKeys) -> Result<()> {
        let Some(public) = self.config.encryption_public_key() else {
            return Err(StoreError::Invalid(format!(
                "{} is a plaintext repository: it has no keys to unlock",
                self.backend.location()
            )));
        };
        if keys.repository() != self.id() {
            return Err(StoreError::KeyMismatch(format!(
                "the keys given are repository {}'s, not this one's ({})",
                keys.repository(),
                self.id()
            )));
        }
        // After a read-key rotation the config still names the first
        // public key, and the slot lists it among the earlier ones it
        // carries (FORMAT.md 17.7).
        if !keys.knows_public_key(&public) {
            return Err(StoreError::KeyMismatch(format!(
                "the key slot's public encryption key {} is not the one the repository's \
                 config names ({}): the config was replaced, or the slot belongs elsewhere; \
                 nothing is written to a key not in the slot",
                keys.public_key().to_hex(),
                public.to_hex()
            )));
        }
        self.keys = Some(Arc::new(keys));
        Ok(())
    }

    /// The keys of an unlocked encrypted repository.
    pub fn keys(&self) -> Option<&RepositoryKeys> {
        self.keys.as_deref()
    }

    /// How blobs are named: plain BLAKE3 in a plaintext repository, keyed
    /// in an encrypted one. An encrypted repository that is not unlocked
    /// has no hasher: every operation that names blobs unlocks it first
    /// ([`Self::require_keys`]), and this falls back to plain only so
    /// that callers never hash with a wrong key silently; they fail on
    /// the first encrypted object instead.
    pub fn id_hasher(&self) -> IdHasher {
        match &self.keys {
            Some(keys) => keys.id_hasher(),
            None => IdHasher::Plain,
        }
    }

    /// A decoder that checks blobs against this repository's ids and, in
    /// an encrypted repository, opens every piece first.
    pub fn blob_decoder(&self) -> BlobDecoder {
        self.blob_decoder_at(0)
    }

    /// [`Self::blob_decoder`] for blobs `depth` bases down a chain of
    /// deltas (0: a blob asked for itself).
    fn blob_decoder_at(&self, depth: usize) -> BlobDecoder {
        self.blob_decoder_from(depth, None)
    }

    /// [`Self::blob_decoder`] for blobs `depth` bases down a chain, taking
    /// the bases of deltas from `held` where it holds them: bases a caller
    /// read and decoded ahead, side by side, for a run of deltas (see
    /// `ops::restore::fetch`). A base is taken from `held` only where the
    /// decoder takes it unchecked; where it asks for a checked base (to
    /// name a damaged one after a delta failed), and for a base `held`
    /// lacks, the base is read and decoded through the index as always.
    pub fn blob_decoder_holding(&self, depth: usize, held: HeldBases) -> BlobDecoder {
        self.blob_decoder_from(depth, Some(held))
    }

    fn blob_decoder_from(&self, depth: usize, held: Option<HeldBases>) -> BlobDecoder {
        let decoder = if self.is_encrypted() {
            let repository = self.clone();
            BlobDecoder::encrypted(
                self.id_hasher(),
                Arc::new(move |pack: &Id| repository.pack_opener(pack)),
            )
        } else {
            BlobDecoder::new(self.id_hasher())
        };
        let repository = self.clone();
        decoder.with_bases(
            Arc::new(move |base: &Id, depth: usize, check: bool| {
                if !check && let Some(content) = held.as_ref().and_then(|held| held(base)) {
                    return Ok(content);
                }
                repository.read_base(base, depth, check)
            }),
            depth,
        )
    }

    /// Reads of the backend made so far, by every clone, for delta bases
    /// fetched one by one (bases read ahead in spans are the caller's to
    /// count).
    pub fn base_reads(&self) -> u64 {
        self.base_reads.load(Ordering::Relaxed)
    }

    /// Makes `locate` (an index's lookup) where every clone of this
    /// repository finds the bases of delta blobs from now on.
    pub fn locate_bases_with(&self, locate: BaseLocator) {
        *lock(&self.base_locator) = Some(locate);
    }

    /// Where the blob `id` is stored, by the index set with
    /// [`Self::locate_bases_with`]; `None` if it lists no such blob.
    pub fn locate_base(&self, id: &Id) -> Result<Option<BlobLocation>> {
        let locate = lock(&self.base_locator).clone();
        match locate {
            Some(locate) => locate(id),
            None => Ok(None),
        }
    }

    /// The content of the delta base `id`, `depth` bases down a chain:
    /// located through the index and read; checked against `id` with
    /// `check` (a decoder reading a delta checks what the delta decodes to
    /// instead, and asks for the check only to name a damaged base: see
    /// `BlobDecoder::decode_delta`).
    ///
    /// Where the place the index gives fails (its pack is missing, or the
    /// base does not decode or, checked, is not what its id says), every
    /// other place the index files list the base is read, checked, and the
    /// first that passes serves: a base a later backup stored again, or a
    /// copy a prune made, keeps its deltas readable when one copy rots.
    /// The first place's error stands if none passes.
    fn read_base(&self, id: &Id, depth: usize, check: bool) -> Result<Decoded> {
        // Named only when something is wrong: a restore of deltas reads
        // tens of thousands of bases.
        let object = || format!("delta base {id}");
        let location = self
            .locate_base(id)?
            .ok_or_else(|| StoreError::corrupt(object(), "no index file lists it"))?;
        if location.entry.id != *id {
            return Err(StoreError::corrupt(
                object(),
                format!("the index lists blob {} in its place", location.entry.id),
            ));
        }
        let first = self.decode_base_at(&location, depth, check);
        if first.is_ok() {
            return first;
        }
        self.listed_copies
            .of(self, id)
            .iter()
            .filter(|copy| **copy != location)
            .find_map(|copy| self.decode_base_at(copy, depth, true).ok())
            .map_or(first, Ok)
    }

    /// Every place the index files list blob `id`, if they list it more
    /// than once (read from them on the first call, then kept): where a
    /// reader turns when the place it was given fails.
    pub fn listed_copies(&self, id: &Id) -> &[BlobLocation] {
        self.listed_copies.of(self, id)
    }

    /// Reads the blob at `location` as a delta base (one a backup patches
    /// against, or one a delta being read needs, `depth` bases down its
    /// chain), checked against its id like any blob. The bases of a run
    /// of deltas lie side by side, often in one shared frame: the frame
    /// decoded for one base serves the next, so a changed file's pages
    /// cost one read, opening and decompression per frame, not per page.
    /// A base in a shared frame is handed out as its place in the frame,
    /// not copied out: a backup only reads it (its patch against it).
    pub fn read_base_at(&self, location: &BlobLocation, depth: usize) -> Result<Decoded> {
        self.decode_base_at(location, depth, true)
    }

    /// [`Self::read_base_at`], handing a base in a shared frame out as its
    /// place in the frame (not copied out), checked against its id only
    /// with `check`.
    fn decode_base_at(
        &self,
        location: &BlobLocation,
        depth: usize,
        check: bool,
    ) -> Result<Decoded> {
        let mut decoder = self.blob_decoder_at(depth);
        let (pack, piece) = (location.pack, location.entry.offset);
        let in_frame = location.entry.frame_offset.is_some();
        let held = in_frame
            && match lock(&self.base_frames).get(&pack, piece) {
                Some(content) => {
                    decoder.hold_frame(pack, piece, content);
                    true
                }
                None => false,
            };
        if !held {
            self.base_reads.fetch_add(1, Ordering::Relaxed);
        }
        let content = self.read_decoded_with(&mut decoder, location, check)?;
        if in_frame && let Some((pack, piece, frame)) = decoder.held_frame() {
            lock(&self.base_frames).insert(pack, piece, frame);
        }
        Ok(content)
    }

    /// The cipher for a new pack, in an encrypted repository.
    pub fn pack_sealer(&self) -> Result<Option<PackSealer>> {
        self.require_keys()?
            .map(RepositoryKeys::pack_sealer)
            .transpose()
    }

    /// The cipher of the encrypted pack `pack`, from the ephemeral key
    /// after its magic (read once per run, then kept).
    pub fn pack_opener(&self, pack: &Id) -> Result<Arc<PackOpener>> {
        if let Some(opener) = lock(&self.openers).get(pack) {
            return Ok(Arc::clone(opener));
        }
        let object = format!("pack {pack}");
        let keys = self.require_keys()?.ok_or_else(|| {
            StoreError::Invalid(format!("{object}: this repository is not encrypted"))
        })?;
        let start =
            self.backend
                .read_range(ObjectKind::Pack, &pack.to_hex(), 0, ENCRYPTED_AREA_START)?;
        let cipher = (start.len() == ENCRYPTED_AREA_START as usize)
            .then(|| PackCipher::of_magic(&start[..8]))
            .flatten()
            .ok_or_else(|| {
                StoreError::corrupt(
                    &object,
                    "does not start with an encrypted pack magic, but this repository encrypts \
                     every pack",
                )
            })?;
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&start[8..40]);
        let opener = Arc::new(keys.pack_opener(cipher, &ephemeral, &object)?);
        lock(&self.openers).insert(*pack, Arc::clone(&opener));
        Ok(opener)
    }

    /// Refuses, up front and naming the read key, an operation that must
    /// read what only the read key opens (snapshots, trees, file contents)
    /// when this host holds only the write-only keys (FORMAT.md 17.6).
    /// `reading` says what the operation reads, as the error's subject.
    pub fn require_read_key(&self, reading: &str) -> Result<()> {
        match self.keys.as_deref() {
            Some(keys) if !keys.can_read() => Err(StoreError::ReadKeyMissing {
                object: reading.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The keys, or an error saying this encrypted repository must be
    /// unlocked first; `None` for a plaintext repository.
    pub fn require_keys(&self) -> Result<Option<&RepositoryKeys>> {
        if !self.is_encrypted() {
            return Ok(None);
        }
        match self.keys.as_deref() {
            Some(keys) => Ok(Some(keys)),
            None => Err(StoreError::Locked {
                location: self.backend.location(),
            }),
        }
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

    /// Reads a whole object, refusing one larger than its kind may be
    /// before reading it, and checks it hashes to its name.
    pub fn read_verified(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self
            .backend
            .read(kind, &id.to_hex(), whole_read_limit(kind)?)?;
        if Id::of(&bytes) != *id {
            return Err(StoreError::corrupt(
                format!("{} {id}", kind.label()),
                "content does not match its name (BLAKE3 hash)",
            ));
        }
        Ok(bytes)
    }

    /// Reads a whole object of a kind that is encrypted in an encrypted
    /// repository (index files, snapshots, forget records, deletion marks,
    /// the keyring), checks it against its name and, in an encrypted
    /// repository, decrypts it (FORMAT.md 17.4): what is returned is the
    /// plaintext exactly as a plaintext repository stores it. Of any other
    /// kind, the bytes as stored.
    pub fn read_object(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.read_verified(kind, id)?;
        match (sealed_kind(kind), self.require_keys()?) {
            (Some(sealed), Some(keys)) => {
                keys.decrypt_object(sealed, &bytes, &format!("{} {id}", kind.label()))
            }
            _ => Ok(bytes),
        }
    }

    /// Stores `plain` as an object of `kind`: encrypted first in an
    /// encrypted repository when the kind is one [`Self::read_object`]
    /// decrypts. The name is the hash of the bytes stored.
    pub fn store_object(&self, kind: ObjectKind, plain: &[u8]) -> Result<Id> {
        match (sealed_kind(kind), self.require_keys()?) {
            (Some(sealed), Some(keys)) => {
                self.write_object(kind, &keys.encrypt_object(sealed, plain)?)
            }
            _ => self.write_object(kind, plain),
        }
    }

    /// Stores an object under the hash of its bytes. A small object (all
    /// but packs) found already there is read back and compared: an object
    /// under that name with other bytes is damaged or planted, and is
    /// reported rather than taken for this one.
    pub fn write_object(&self, kind: ObjectKind, bytes: &[u8]) -> Result<Id> {
        let id = Id::of(bytes);
        let created = self.backend.create(kind, &id.to_hex(), bytes)?;
        if created == Created::AlreadyExisted && kind != ObjectKind::Pack {
            let existing = self
                .backend
                .read(kind, &id.to_hex(), whole_read_limit(kind)?)?;
            if existing != bytes {
                return Err(StoreError::corrupt(
                    format!("{} {id}", kind.label()),
                    "already exists with other bytes (damaged or planted): the object being written was not stored",
                ));
            }
        }
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
        let bytes = self.read_object(ObjectKind::Index, id)?;
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
        self.store_object(ObjectKind::Index, &self.index_file_bytes(file, signer))
    }

    pub fn read_manifest(&self, id: &Id) -> Result<SignedManifest> {
        let bytes = self.read_object(ObjectKind::Snapshot, id)?;
        SignedManifest::decode(&bytes, &format!("snapshot {id}"))
    }

    /// The public keys published in the repository (not trusted for that).
    /// A key object that cannot be used (over its size limit, not matching
    /// its name, not decoding: damaged or planted) is left out rather than
    /// stopping the caller; `verify` names it. An I/O error is an error.
    pub fn published_keys(&self) -> Result<Vec<PublicKey>> {
        let mut keys = Vec::new();
        for id in self.list_ids(ObjectKind::Key)? {
            let key = self
                .read_verified(ObjectKind::Key, &id)
                .and_then(|bytes| PublicKeyObject::decode(&bytes, &format!("key {id}")));
            match key {
                Ok(key) => keys.push(key),
                Err(error @ StoreError::Io { .. }) => return Err(error),
                Err(_) => {}
            }
        }
        Ok(keys)
    }

    /// Reads one blob with a ranged read and checks it against its id.
    pub fn read_blob(&self, location: &BlobLocation) -> Result<Vec<u8>> {
        self.read_blob_with(&mut self.blob_decoder(), location)
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
        self.read_decoded_with(decoder, location, true)
            .map(Decoded::into_vec)
    }

    /// [`Self::read_blob_with`], as `BlobDecoder::decode_sharing` decodes:
    /// a blob of a shared frame as its place in the frame, checked against
    /// its id only with `check`.
    fn read_decoded_with(
        &self,
        decoder: &mut BlobDecoder,
        location: &BlobLocation,
        check: bool,
    ) -> Result<Decoded> {
        let (entry, pack) = (&location.entry, &location.pack);
        if let Some(decoded) = decoder.decode_from_held_frame_sharing(entry, pack, check) {
            return decoded;
        }
        let stored = self.backend.read_range(
            ObjectKind::Pack,
            &pack.to_hex(),
            entry.offset,
            u64::from(entry.length),
        )?;
        decoder.decode_sharing_owned(entry, stored, pack, check)
    }

    /// Reads a whole pack (`size` bytes as listed, in bounded windows),
    /// checks it against its name and every blob in it against its id, and
    /// returns its listing: what a writer may vouch for in an index file it
    /// seals (a pack's header alone says only what the pack's writer
    /// claimed, and anyone may add a pack).
    pub fn verified_pack_listing(&self, id: &Id, size: u64) -> Result<PackEntry> {
        let object = format!("pack {id}");
        let header = self.read_pack_header(id, size)?;
        let mut decoder = self.blob_decoder();
        let mut failure = None;
        let scan = self.scan_pack(id, size, &header.blobs, &mut |entry, stored| {
            if failure.is_none()
                && let Err(error) =
                    stored.and_then(|stored| decoder.decode_sharing(entry, stored, id, true))
            {
                failure = Some(error);
            }
        })?;
        if !scan.matches_name {
            return Err(StoreError::corrupt(
                &object,
                "content does not match its name (BLAKE3 hash)",
            ));
        }
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(PackEntry {
            id: *id,
            size,
            blobs: header.blobs,
        })
    }

    /// The name [`Self::write_index_file`] gives `file` sealed by `signer`.
    pub fn index_file_id(&self, file: &IndexFile, signer: Option<&SigningKey>) -> Id {
        Id::of(&self.index_file_bytes(file, signer))
    }

    fn index_file_bytes(&self, file: &IndexFile, signer: Option<&SigningKey>) -> Vec<u8> {
        match signer {
            Some(key) => file.seal(&self.config.repository_id, key),
            None => file.encode(),
        }
    }

    /// Resolves `latest`, a full id or a unique prefix of at least 4 hex
    /// digits to a snapshot id; see [`Repository::latest_snapshot`].
    pub fn resolve_snapshot(&self, spec: &str, trusted: &[PublicKey]) -> Result<Id> {
        self.resolve_snapshot_reporting(spec, trusted)
            .map(|(id, _)| id)
    }

    /// As [`Repository::resolve_snapshot`], with the manifests `latest`
    /// passed over (none for an id or prefix).
    pub fn resolve_snapshot_reporting(
        &self,
        spec: &str,
        trusted: &[PublicKey],
    ) -> Result<(Id, Vec<SkippedSnapshot>)> {
        if spec == "latest" {
            return self.latest_snapshot(trusted);
        }
        let ids = self.list_ids(ObjectKind::Snapshot)?;
        let prefix = spec.to_ascii_lowercase();
        if !prefix.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(StoreError::BadSnapshotSpec {
                spec: spec.into(),
                rule: format!(
                    "not a snapshot id: give `latest` or at least {MIN_SNAPSHOT_PREFIX} hex digits of an id"
                ),
            });
        }
        if prefix.len() < MIN_SNAPSHOT_PREFIX {
            return Err(StoreError::BadSnapshotSpec {
                spec: spec.into(),
                rule: format!(
                    "a snapshot prefix needs at least {MIN_SNAPSHOT_PREFIX} hex digits (this has {})",
                    prefix.len()
                ),
            });
        }
        let matching: Vec<Id> = ids
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect();
        match matching.len() {
            0 => Err(StoreError::SnapshotNotFound(spec.into())),
            1 => Ok((matching[0], Vec::new())),
            count => Err(StoreError::AmbiguousSnapshot {
                prefix: spec.into(),
                count,
            }),
        }
    }
}

/// The encrypted-object kind `kind` is stored as in an encrypted
/// repository, if it is one (FORMAT.md 17.4); config, keys, key slots and
/// packs are not.
fn sealed_kind(kind: ObjectKind) -> Option<SealedKind> {
    match kind {
        ObjectKind::Index => Some(SealedKind::Index),
        ObjectKind::Snapshot => Some(SealedKind::Snapshot),
        ObjectKind::Forget => Some(SealedKind::Forget),
        ObjectKind::Deletion => Some(SealedKind::Deletion),
        ObjectKind::Keyring => Some(SealedKind::Keyring),
        ObjectKind::Annotation => Some(SealedKind::Annotation),
        ObjectKind::Config | ObjectKind::Key | ObjectKind::KeySlot | ObjectKind::Pack => None,
    }
}

/// The most a whole read of `kind` takes (docs/FORMAT.md section 15);
/// packs are never read whole.
pub fn whole_read_limit(kind: ObjectKind) -> Result<u64> {
    Ok(match kind {
        ObjectKind::Config => limits::MAX_CONFIG_SIZE,
        ObjectKind::Key => limits::MAX_KEY_SIZE,
        ObjectKind::Index => limits::MAX_INDEX_FILE_SIZE,
        ObjectKind::Snapshot => limits::MAX_MANIFEST_SIZE,
        ObjectKind::Forget | ObjectKind::Deletion | ObjectKind::Keyring => limits::MAX_RECORD_SIZE,
        ObjectKind::Annotation => limits::MAX_ANNOTATION_SIZE,
        ObjectKind::KeySlot => crate::format::keyslot::MAX_KEY_SLOT_SIZE,
        ObjectKind::Pack => {
            return Err(StoreError::Invalid(
                "packs are read in ranges, never whole".into(),
            ));
        }
    })
}

impl Repository {
    /// `latest`: the newest snapshot, by its signed time, among the
    /// manifests of this repository validly signed by a key in `trusted`
    /// (the keys trusted for it), leaving out restores' safety snapshots.
    /// Whatever a caller allows elsewhere, nothing else can become
    /// `latest`: an unreadable, unsigned, untrusted or other repository's
    /// manifest, or one dated more than [`FUTURE_TOLERANCE_SECONDS`] ahead
    /// of this machine's clock (which would stay `latest` for good), is
    /// passed over and returned with why, for the caller to report.
    pub fn latest_snapshot(&self, trusted: &[PublicKey]) -> Result<(Id, Vec<SkippedSnapshot>)> {
        self.newest_snapshot(trusted, None, &|_| true)
    }

    /// As [`Repository::latest_snapshot`], among the snapshots taken at or
    /// before `at` (when given) whose body `matches`: "the last good state
    /// before 14:00". None there is `SnapshotNotFound`.
    pub fn newest_snapshot(
        &self,
        trusted: &[PublicKey],
        at: Option<jiff::Timestamp>,
        matches: &dyn Fn(&SnapshotBody) -> bool,
    ) -> Result<(Id, Vec<SkippedSnapshot>)> {
        let (candidates, skipped) = self.latest_candidates(trusted)?;
        let newest = candidates
            .into_iter()
            .find(|candidate| at.is_none_or(|at| candidate.time <= at) && matches(&candidate.body));
        match newest {
            Some(candidate) => Ok((candidate.id, skipped)),
            None if at.is_some() => Err(StoreError::SnapshotNotFound(format!(
                "a matching snapshot taken at or before {}",
                at.map(|at| at.to_string()).unwrap_or_default()
            ))),
            None => Err(no_latest(&skipped)),
        }
    }

    /// Every snapshot that may be `latest` (11.5: trusted, this
    /// repository's, not a safety snapshot, not dated more than
    /// [`FUTURE_TOLERANCE_SECONDS`] ahead), newest first (ties: the greater
    /// id first), with the manifests passed over and why.
    pub fn latest_candidates(
        &self,
        trusted: &[PublicKey],
    ) -> Result<(Vec<LatestCandidate>, Vec<SkippedSnapshot>)> {
        let now = jiff::Timestamp::now();
        let mut skipped = Vec::new();
        let mut candidates = Vec::new();
        for id in self.list_ids(ObjectKind::Snapshot)? {
            let body = match self.read_manifest(&id).and_then(|manifest| {
                manifest.verified_body(self.id(), trusted, &format!("snapshot {id}"))
            }) {
                Ok(body) => body,
                // Deleted (by a forget) between listing and reading.
                Err(StoreError::Missing { .. }) => continue,
                Err(error @ StoreError::Io { .. }) => return Err(error),
                Err(error) => {
                    skipped.push((id, error.to_string()));
                    continue;
                }
            };
            if body.tags.iter().any(|tag| tag == SAFETY_TAG) {
                continue;
            }
            let Ok(time) = body.time.parse::<jiff::Timestamp>() else {
                skipped.push((id, format!("its time {:?} does not parse", body.time)));
                continue;
            };
            if time.as_second() > now.as_second().saturating_add(FUTURE_TOLERANCE_SECONDS) {
                let why = format!(
                    "dated {}, ahead of this machine's clock ({now}); name it by id to use it",
                    body.time
                );
                skipped.push((id, why));
                continue;
            }
            candidates.push(LatestCandidate { id, time, body });
        }
        candidates.sort_by_key(|candidate| std::cmp::Reverse((candidate.time, candidate.id)));
        Ok((candidates, skipped))
    }

    /// This repository's id (from its config).
    pub fn id(&self) -> &Id {
        &self.config.repository_id
    }
}

/// How far ahead of this machine's clock a trusted snapshot may be dated
/// and still be `latest`: clocks of backup hosts disagree by seconds, not
/// an hour; a snapshot dated further ahead would stay `latest` until then.
pub const FUTURE_TOLERANCE_SECONDS: i64 = 3600;

/// The fewest hex digits of a snapshot id that name it: shorter prefixes
/// match too much by chance to be typed safely.
pub const MIN_SNAPSHOT_PREFIX: usize = 4;

/// A manifest `latest` passed over, and why.
pub type SkippedSnapshot = (Id, String);

/// A snapshot `latest` may mean, with its verified body.
#[derive(Clone, Debug)]
pub struct LatestCandidate {
    pub id: Id,
    pub time: jiff::Timestamp,
    pub body: SnapshotBody,
}

/// The error for a `latest` that found nothing: no snapshot at all, or
/// none trusted, saying how many were passed over and why.
pub fn no_latest(skipped: &[SkippedSnapshot]) -> StoreError {
    if skipped.is_empty() {
        return StoreError::SnapshotNotFound("latest".into());
    }
    StoreError::NoTrustedSnapshot {
        passed_over: skipped.len(),
        reasons: skipped
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect::<Vec<_>>()
            .join("; "),
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
        let mut header =
            self.backend
                .read_range(ObjectKind::Pack, &name, header_start, header_length)?;
        match (self.is_encrypted(), trailer_is_encrypted(&trailer)) {
            (false, false) => PackHeader::decode(&header, header_start, &object),
            (true, true) => {
                let opener = self.pack_opener(pack)?;
                opener.open_header(header_start, &mut header, &object)?;
                PackHeader::decode_in(&header, ENCRYPTED_AREA_START, header_start, &object)
            }
            (true, false) => Err(StoreError::corrupt(
                &object,
                "is not encrypted, but this repository encrypts every pack",
            )),
            (false, true) => Err(StoreError::corrupt(
                &object,
                "is an encrypted pack, in a plaintext repository",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::format::keys::{generate_signing_key, public_key_of};

    fn repository(directory: &std::path::Path) -> Repository {
        plaintext_for_tests(Arc::new(LocalBackend::new(directory))).0
    }

    #[test]
    fn an_object_over_its_kinds_limit_is_refused_from_its_size_before_it_is_read() {
        let directory = tempfile::tempdir().unwrap();
        let repository = repository(directory.path());
        // 1 TiB, sparse: reading any of it, let alone all, would show.
        let id = Id::of(b"planted");
        let path = directory.path().join("index").join(id.to_hex());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let started = std::time::Instant::now();
        let error = repository.read_index_file(&id).unwrap_err().to_string();
        assert!(
            error.contains(&id.to_hex())
                && error.contains("1099511627776 bytes, more than the 268435456")
                && error.contains("not read"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Every kind read whole has its limit; packs are never read whole.
        for kind in [
            ObjectKind::Config,
            ObjectKind::Key,
            ObjectKind::Index,
            ObjectKind::Snapshot,
            ObjectKind::Forget,
            ObjectKind::Deletion,
        ] {
            assert!(whole_read_limit(kind).unwrap() <= limits::MAX_INDEX_FILE_SIZE);
        }
        assert!(whole_read_limit(ObjectKind::Pack).is_err());
    }

    #[test]
    fn an_encrypted_repository_refuses_keys_whose_public_key_is_not_its_configs() {
        let directory = tempfile::tempdir().unwrap();
        let signing = generate_signing_key().unwrap();
        let keys = RepositoryKeys::generate(Repository::new_id().unwrap()).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(directory.path()));
        Repository::init(
            backend.clone(),
            ChunkerParams::DEFAULT,
            3,
            public_key_of(&signing),
            Some(&keys),
        )
        .unwrap();
        let mut opened = Repository::open(backend).unwrap();
        assert!(opened.is_encrypted() && opened.keys().is_none());
        // Locked: sealed objects are refused with a clear error.
        let error = opened.require_keys().unwrap_err().to_string();
        assert!(error.contains("CAIRN_PASSWORD"), "{error}");
        // Keys of the same repository id but another public key (as a
        // replaced config, or a slot from elsewhere, would give).
        let other = RepositoryKeys::generate(*keys.repository()).unwrap();
        let error = opened.unlock(other).unwrap_err().to_string();
        assert!(error.contains("is not the one the repository's"), "{error}");
        assert!(opened.keys().is_none());
        opened.unlock(keys.clone()).unwrap();
        assert_eq!(opened.id_hasher(), keys.id_hasher());
        assert_ne!(opened.id_hasher(), IdHasher::Plain);
    }

    #[test]
    fn writing_a_small_object_that_exists_with_other_bytes_is_reported() {
        let directory = tempfile::tempdir().unwrap();
        let repository = repository(directory.path());
        let bytes = b"an index file's bytes".to_vec();
        let id = repository.write_object(ObjectKind::Index, &bytes).unwrap();
        // Written again with the same bytes: nothing to report.
        assert_eq!(
            repository.write_object(ObjectKind::Index, &bytes).unwrap(),
            id
        );
        // Someone put other bytes under that name first.
        let other = b"the next index file".to_vec();
        let planted = directory.path().join("index").join(Id::of(&other).to_hex());
        std::fs::write(&planted, b"planted").unwrap();
        let error = repository
            .write_object(ObjectKind::Index, &other)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&Id::of(&other).to_hex()) && error.contains("other bytes"),
            "{error}"
        );
    }
}
