//! The local index cache: a fast answer to "where is blob X?" kept outside
//! the repository, behind [`IndexCache`].
//!
//! Two implementations: [`SledIndex`], on disk under the user's cache
//! directory, so lookups need not hold every entry in RAM; and
//! [`MemoryIndex`], for one-off runs and as the fallback when the on-disk
//! cache cannot be used. The cache remembers which index files it has taken
//! in. [`open_index`] brings it up to date with the repository: new index
//! files are read in (leaving out packs that no longer exist); if one it
//! took in has vanished, it starts over.
//!
//! sled 0.34 is old and has open crash-corruption reports, so any error
//! opening or reading the sled cache means: throw it away, rebuild from the
//! repository, and say so. The cache never decides anything the repository
//! contradicts.

use super::{BlobLocation, IndexFile, PackEntry};
use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::id::Id;
use crate::pack::{BlobEntry, BlobKind, Compression};
use crate::repository::Repository;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Lookups and updates of the local copy of the index.
pub trait IndexCache: Send + Sync {
    fn lookup(&self, blob: &Id) -> Result<Option<BlobLocation>>;
    /// Records every blob of a pack (for a blob already recorded, either
    /// location may be kept: both hold the same bytes).
    fn insert_pack(&self, pack: &PackEntry) -> Result<()>;
    /// Whether any index file taken in so far lists this pack.
    fn has_pack(&self, pack: &Id) -> Result<bool>;
    /// Packs that held every blob of `snapshot` when a backup on this
    /// machine wrote it (see [`IndexCache::remember_snapshot_packs`]);
    /// `None` if not remembered.
    fn snapshot_packs(&self, snapshot: &Id) -> Result<Option<Vec<Id>>>;
    /// Remembers the packs a finished backup's snapshot relies on, so the
    /// next backup can take unchanged files from it without looking up
    /// each of their chunks: if all these packs still exist, so does every
    /// chunk the snapshot names (packs are immutable).
    fn remember_snapshot_packs(&self, snapshot: &Id, packs: &[Id]) -> Result<()>;
    fn mark_index_file(&self, index_file: &Id) -> Result<()>;
    fn index_files(&self) -> Result<HashSet<Id>>;
    /// Forgets everything, to rebuild.
    fn clear(&self) -> Result<()>;
    fn flush(&self) -> Result<()>;
}

/// Everything in RAM; nothing survives the process.
#[derive(Default)]
pub struct MemoryIndex {
    state: RwLock<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    blobs: HashMap<Id, BlobLocation>,
    packs: HashSet<Id>,
    index_files: HashSet<Id>,
    snapshot_packs: HashMap<Id, Vec<Id>>,
}

impl MemoryIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, MemoryState> {
        // A panic elsewhere cannot leave these plain maps inconsistent.
        self.state
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MemoryState> {
        self.state
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl IndexCache for MemoryIndex {
    fn lookup(&self, blob: &Id) -> Result<Option<BlobLocation>> {
        Ok(self.read().blobs.get(blob).copied())
    }

    fn insert_pack(&self, pack: &PackEntry) -> Result<()> {
        let mut state = self.write();
        state.packs.insert(pack.id);
        // The newest listing wins, as in the sled cache: a blob stored
        // again after its pack was lost must be found in its new pack.
        for entry in &pack.blobs {
            state.blobs.insert(
                entry.id,
                BlobLocation {
                    pack: pack.id,
                    entry: *entry,
                },
            );
        }
        Ok(())
    }

    fn has_pack(&self, pack: &Id) -> Result<bool> {
        Ok(self.read().packs.contains(pack))
    }

    fn snapshot_packs(&self, snapshot: &Id) -> Result<Option<Vec<Id>>> {
        Ok(self.read().snapshot_packs.get(snapshot).cloned())
    }

    fn remember_snapshot_packs(&self, snapshot: &Id, packs: &[Id]) -> Result<()> {
        self.write()
            .snapshot_packs
            .insert(*snapshot, packs.to_vec());
        Ok(())
    }

    fn mark_index_file(&self, index_file: &Id) -> Result<()> {
        self.write().index_files.insert(*index_file);
        Ok(())
    }

    fn index_files(&self) -> Result<HashSet<Id>> {
        Ok(self.read().index_files.clone())
    }

    fn clear(&self) -> Result<()> {
        *self.write() = MemoryState::default();
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The on-disk cache: four sled trees keyed by 32-byte ids.
pub struct SledIndex {
    path: PathBuf,
    database: sled::Db,
    blobs: sled::Tree,
    packs: sled::Tree,
    index_files: sled::Tree,
    /// Snapshot id to the pack ids it relies on, 32 bytes each.
    snapshot_packs: sled::Tree,
}

/// Bytes of one blob location in the sled cache: pack id, offset (u64 LE),
/// length, raw length (u32 LE each), kind, compression (one byte each).
const LOCATION_SIZE: usize = 32 + 8 + 4 + 4 + 1 + 1;

fn cache_error(path: &Path, error: sled::Error) -> StoreError {
    StoreError::io(
        format!("index cache {}", path.display()),
        std::io::Error::other(error.to_string()),
    )
}

impl SledIndex {
    pub fn open(path: &Path) -> Result<Self> {
        let database = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|error| cache_error(path, error))?;
        let tree = |name: &str| {
            database
                .open_tree(name)
                .map_err(|error| cache_error(path, error))
        };
        Ok(SledIndex {
            path: path.to_path_buf(),
            blobs: tree("blobs")?,
            packs: tree("packs")?,
            index_files: tree("index_files")?,
            snapshot_packs: tree("snapshot_packs")?,
            database,
        })
    }

    fn error(&self, error: sled::Error) -> StoreError {
        cache_error(&self.path, error)
    }
}

fn encode_location(location: &BlobLocation) -> [u8; LOCATION_SIZE] {
    let mut bytes = [0u8; LOCATION_SIZE];
    let entry = &location.entry;
    bytes[..32].copy_from_slice(&location.pack.0);
    bytes[32..40].copy_from_slice(&entry.offset.to_le_bytes());
    bytes[40..44].copy_from_slice(&entry.length.to_le_bytes());
    bytes[44..48].copy_from_slice(&entry.raw_length.to_le_bytes());
    bytes[48] = match entry.kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    };
    bytes[49] = match entry.compression {
        Compression::None => 0,
        Compression::Zstd => 1,
    };
    bytes
}

fn decode_location(id: &Id, bytes: &[u8]) -> Option<BlobLocation> {
    if bytes.len() != LOCATION_SIZE {
        return None;
    }
    let pack = Id(bytes[..32].try_into().ok()?);
    let offset = u64::from_le_bytes(bytes[32..40].try_into().ok()?);
    let length = u32::from_le_bytes(bytes[40..44].try_into().ok()?);
    let raw_length = u32::from_le_bytes(bytes[44..48].try_into().ok()?);
    let kind = match bytes[48] {
        0 => BlobKind::Data,
        1 => BlobKind::Tree,
        _ => return None,
    };
    let compression = match bytes[49] {
        0 => Compression::None,
        1 => Compression::Zstd,
        _ => return None,
    };
    Some(BlobLocation {
        pack,
        entry: BlobEntry {
            kind,
            id: *id,
            offset,
            length,
            raw_length,
            compression,
        },
    })
}

impl IndexCache for SledIndex {
    fn lookup(&self, blob: &Id) -> Result<Option<BlobLocation>> {
        match self.blobs.get(blob.0).map_err(|error| self.error(error))? {
            None => Ok(None),
            Some(bytes) => decode_location(blob, &bytes).map(Some).ok_or_else(|| {
                StoreError::corrupt(
                    format!("index cache {}", self.path.display()),
                    format!("undecodable entry for blob {blob}"),
                )
            }),
        }
    }

    fn insert_pack(&self, pack: &PackEntry) -> Result<()> {
        // A blob listed twice (by overlapping index files) keeps the last
        // location written; every listed location holds the same bytes.
        // One insert at a time, not `apply_batch`: sled 0.34 keeps batched
        // pages in memory (a million-blob rebuild peaked at 3.0 GB, against
        // 0.4 GB this way, in the same time; sled issues #1093, #1303).
        for entry in &pack.blobs {
            let location = BlobLocation {
                pack: pack.id,
                entry: *entry,
            };
            self.blobs
                .insert(entry.id.0, &encode_location(&location)[..])
                .map_err(|error| self.error(error))?;
        }
        self.packs
            .insert(pack.id.0, &pack.size.to_le_bytes())
            .map_err(|error| self.error(error))?;
        Ok(())
    }

    fn has_pack(&self, pack: &Id) -> Result<bool> {
        self.packs
            .contains_key(pack.0)
            .map_err(|error| self.error(error))
    }

    fn snapshot_packs(&self, snapshot: &Id) -> Result<Option<Vec<Id>>> {
        let Some(bytes) = self
            .snapshot_packs
            .get(snapshot.0)
            .map_err(|error| self.error(error))?
        else {
            return Ok(None);
        };
        if bytes.len() % 32 != 0 {
            return Err(StoreError::corrupt(
                format!("index cache {}", self.path.display()),
                format!("malformed pack list for snapshot {snapshot}"),
            ));
        }
        Ok(Some(
            bytes
                .chunks_exact(32)
                .filter_map(|id| id.try_into().ok().map(Id))
                .collect(),
        ))
    }

    fn remember_snapshot_packs(&self, snapshot: &Id, packs: &[Id]) -> Result<()> {
        let bytes: Vec<u8> = packs.iter().flat_map(|pack| pack.0).collect();
        self.snapshot_packs
            .insert(snapshot.0, bytes)
            .map_err(|error| self.error(error))?;
        Ok(())
    }

    fn mark_index_file(&self, index_file: &Id) -> Result<()> {
        self.index_files
            .insert(index_file.0, &[])
            .map_err(|error| self.error(error))?;
        Ok(())
    }

    fn index_files(&self) -> Result<HashSet<Id>> {
        let mut ids = HashSet::new();
        for item in self.index_files.iter() {
            let (key, _) = item.map_err(|error| self.error(error))?;
            let id: [u8; 32] = key.as_ref().try_into().map_err(|_| {
                StoreError::corrupt(
                    format!("index cache {}", self.path.display()),
                    "malformed index file key",
                )
            })?;
            ids.insert(Id(id));
        }
        Ok(ids)
    }

    fn clear(&self) -> Result<()> {
        for tree in [
            &self.blobs,
            &self.packs,
            &self.index_files,
            &self.snapshot_packs,
        ] {
            tree.clear().map_err(|error| self.error(error))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.database
            .flush()
            .map(|_| ())
            .map_err(|error| self.error(error))
    }
}

/// The index, synchronised with the repository, plus what happened on the
/// way that the user should hear about.
pub struct OpenedIndex {
    pub index: Box<dyn IndexCache>,
    pub notices: Vec<String>,
}

/// Opens the cache at `cache_path` (or an in-memory index when `None`) and
/// brings it up to date with the repository's index files.
pub fn open_index(repository: &Repository, cache_path: Option<&Path>) -> Result<OpenedIndex> {
    let mut notices = Vec::new();
    let Some(path) = cache_path else {
        let index: Box<dyn IndexCache> = Box::new(MemoryIndex::new());
        synchronise(repository, index.as_ref())?;
        return Ok(OpenedIndex { index, notices });
    };
    match open_and_synchronise_sled(repository, path) {
        Ok(index) => return Ok(OpenedIndex { index, notices }),
        Err(CacheFailure::Repository(error)) => return Err(error),
        Err(CacheFailure::Locked(_)) => {
            notices.push(format!(
                "index cache {} is in use by another cairn process; using an in-memory index for this run",
                path.display()
            ));
        }
        Err(CacheFailure::Cache(reason)) => {
            notices.push(format!(
                "index cache {} is unusable ({reason}); discarding it and rebuilding from the repository",
                path.display()
            ));
            let _ = std::fs::remove_dir_all(path);
            match open_and_synchronise_sled(repository, path) {
                Ok(index) => return Ok(OpenedIndex { index, notices }),
                Err(CacheFailure::Repository(error)) => return Err(error),
                Err(CacheFailure::Locked(reason) | CacheFailure::Cache(reason)) => {
                    notices.push(format!(
                        "rebuilt index cache is unusable too ({reason}); using an in-memory index for this run"
                    ));
                }
            }
        }
    }
    let index: Box<dyn IndexCache> = Box::new(MemoryIndex::new());
    synchronise(repository, index.as_ref())?;
    Ok(OpenedIndex { index, notices })
}

enum CacheFailure {
    /// The repository itself failed: not something a rebuild can fix.
    Repository(StoreError),
    /// Another process holds sled's lock: leave its cache alone.
    Locked(String),
    Cache(String),
}

fn open_and_synchronise_sled(
    repository: &Repository,
    path: &Path,
) -> std::result::Result<Box<dyn IndexCache>, CacheFailure> {
    let index = SledIndex::open(path).map_err(|error| {
        let reason = error.to_string();
        if reason.contains("could not acquire lock") {
            CacheFailure::Locked(reason)
        } else {
            CacheFailure::Cache(reason)
        }
    })?;
    match synchronise(repository, &index) {
        Ok(()) => Ok(Box::new(index)),
        Err(SyncFailure::Repository(error)) => Err(CacheFailure::Repository(error)),
        Err(SyncFailure::Cache(error)) => Err(CacheFailure::Cache(error.to_string())),
    }
}

enum SyncFailure {
    Repository(StoreError),
    Cache(StoreError),
}

impl From<SyncFailure> for StoreError {
    fn from(failure: SyncFailure) -> Self {
        match failure {
            SyncFailure::Repository(error) | SyncFailure::Cache(error) => error,
        }
    }
}

/// Takes in index files written since the cache last looked (by other
/// processes) without starting over, and returns the packs they list that
/// exist, with their sizes. A long backup calls this now and then so that
/// concurrent backups deduplicate against each other.
pub fn take_in_new_index_files(
    repository: &Repository,
    index: &dyn IndexCache,
) -> Result<Vec<(Id, u64)>> {
    let known = index.index_files()?;
    let fresh: Vec<Id> = repository
        .list_ids(ObjectKind::Index)?
        .into_iter()
        .filter(|id| !known.contains(id))
        .collect();
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    // Listed after the index files, as in `synchronise`.
    let present = repository.list_packs()?;
    let mut taken = Vec::new();
    for id in fresh {
        let file = match repository.read_index_file(&id) {
            Ok(file) => file,
            // Removed by a prune or repair since listing: nothing to take.
            Err(StoreError::Missing { .. }) => continue,
            Err(error) => return Err(error),
        };
        for pack in &file.packs {
            if let Some(&size) = present.get(&pack.id) {
                index.insert_pack(pack)?;
                taken.push((pack.id, size));
            }
        }
        index.mark_index_file(&id)?;
    }
    Ok(taken)
}

/// Takes in every index file the cache has not seen; starts over if the
/// repository no longer has one the cache took in.
fn synchronise(
    repository: &Repository,
    index: &dyn IndexCache,
) -> std::result::Result<(), SyncFailure> {
    // A file that vanishes between listing and reading was replaced (by a
    // prune or repair, which write the replacement first): list again.
    for _ in 0..3 {
        if !synchronise_once(repository, index)? {
            break;
        }
    }
    index.flush().map_err(SyncFailure::Cache)?;
    Ok(())
}

/// One pass of [`synchronise`]; returns whether a listed file had vanished.
fn synchronise_once(
    repository: &Repository,
    index: &dyn IndexCache,
) -> std::result::Result<bool, SyncFailure> {
    let listed: HashSet<Id> = repository
        .list_ids(ObjectKind::Index)
        .map_err(SyncFailure::Repository)?
        .into_iter()
        .collect();
    // Packs are listed after index files: every pack an index file names
    // was created before that file, so a listed index file's pack missing
    // from this listing is really gone, and its blobs are left out of the
    // cache (a backup then stores them again).
    let present: HashSet<Id> = repository
        .list_ids(ObjectKind::Pack)
        .map_err(SyncFailure::Repository)?
        .into_iter()
        .collect();
    let mut known = index.index_files().map_err(SyncFailure::Cache)?;
    if !known.is_subset(&listed) {
        index.clear().map_err(SyncFailure::Cache)?;
        known.clear();
    }
    let mut vanished = false;
    for id in listed.difference(&known) {
        let file: IndexFile = match repository.read_index_file(id) {
            Ok(file) => file,
            Err(StoreError::Missing { .. }) => {
                vanished = true;
                continue;
            }
            Err(error) => return Err(SyncFailure::Repository(error)),
        };
        for pack in file.packs.iter().filter(|pack| present.contains(&pack.id)) {
            index.insert_pack(pack).map_err(SyncFailure::Cache)?;
        }
        // Marked only after its packs, so a crash mid-way redoes this file.
        index.mark_index_file(id).map_err(SyncFailure::Cache)?;
    }
    Ok(vanished)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembers_snapshot_packs_until_cleared(index: &dyn IndexCache) {
        let snapshot = Id::of(b"snapshot");
        let packs = vec![Id::of(b"pack one"), Id::of(b"pack two")];
        assert_eq!(index.snapshot_packs(&snapshot).unwrap(), None);
        index.remember_snapshot_packs(&snapshot, &packs).unwrap();
        assert_eq!(index.snapshot_packs(&snapshot).unwrap(), Some(packs));
        assert_eq!(index.snapshot_packs(&Id::of(b"other")).unwrap(), None);
        // A rebuild (an index file vanished: a prune rewrote the index)
        // forgets them with everything else.
        index.clear().unwrap();
        assert_eq!(index.snapshot_packs(&snapshot).unwrap(), None);
    }

    #[test]
    fn the_memory_index_remembers_snapshot_packs_until_cleared() {
        remembers_snapshot_packs_until_cleared(&MemoryIndex::new());
    }

    #[test]
    fn the_sled_index_remembers_snapshot_packs_across_reopening_until_cleared() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cache");
        let snapshot = Id::of(b"kept");
        {
            let index = SledIndex::open(&path).unwrap();
            index
                .remember_snapshot_packs(&snapshot, &[Id::of(b"pack")])
                .unwrap();
            index.flush().unwrap();
        }
        let index = SledIndex::open(&path).unwrap();
        assert_eq!(
            index.snapshot_packs(&snapshot).unwrap(),
            Some(vec![Id::of(b"pack")])
        );
        index.clear().unwrap();
        remembers_snapshot_packs_until_cleared(&index);
    }
}
