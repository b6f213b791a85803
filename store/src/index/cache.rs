//! The local index cache: a fast answer to "where is blob X?" kept outside
//! the repository, behind [`IndexCache`].
//!
//! Two implementations: [`SledIndex`], on disk under the user's cache
//! directory (blob locations in paged, checked run files, see
//! [`super::runs`]; the rest in sled trees), so lookups need not hold every
//! entry in RAM; and
//! [`MemoryIndex`], for one-off runs and as the fallback when the on-disk
//! cache cannot be used. The cache remembers which index files it has taken
//! in. [`open_index`] brings it up to date with the repository: new index
//! files are read in (leaving out packs that no longer exist); if one it
//! took in has vanished, it starts over.
//!
//! sled 0.34 is old and has open crash-corruption reports, so any error
//! opening or reading the on-disk cache (sled's or a run file's) means:
//! throw it away, rebuild from the repository, and say so. The cache never
//! decides anything the repository contradicts.

use super::runs::{Located, Run, merge, parse_run_name};
use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::index::{BlobLocation, IndexFile, PackEntry};
use crate::format::keys::PublicKey;
use crate::id::Id;
use crate::repository::Repository;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Lookups and updates of the local copy of the index.
///
/// The cache keeps one location per blob, and whether a vouched index file
/// lists it there (`crate::format::index::Vouching`): a vouched location is
/// never replaced by one that is not, so a planted index file cannot
/// shadow where a trusted writer put a blob.
pub trait IndexCache: Send + Sync {
    /// The location kept for `blob`, and whether it is vouched for.
    fn locate(&self, blob: &Id) -> Result<Option<Located>>;
    /// Records every blob of a pack as `vouched` or not (see the trait).
    fn insert_pack(&self, pack: &PackEntry, vouched: bool) -> Result<()>;
    /// Where to read `blob`: the kept location, vouched or only a hint.
    /// Fit for reading (every blob read is checked against its id), never
    /// for deciding that a blob is stored.
    fn lookup(&self, blob: &Id) -> Result<Option<BlobLocation>> {
        Ok(self.locate(blob)?.map(|located| located.location))
    }
    /// The location of `blob` only if a vouched index file lists it: what
    /// deduplication and deletion decide by.
    fn lookup_vouched(&self, blob: &Id) -> Result<Option<BlobLocation>> {
        Ok(self
            .locate(blob)?
            .filter(|located| located.vouched)
            .map(|located| located.location))
    }
    /// The fingerprint of the trusted keys the vouched flags were decided
    /// by (see [`trust_fingerprint`]); `None` if never recorded.
    fn vouchers(&self) -> Result<Option<Id>>;
    /// Sets the keys whose index files are vouched for from now on (and
    /// records their fingerprint); the caller clears the cache first if
    /// they differ from those its flags were decided by.
    fn set_trusted(&self, trusted: &[PublicKey]) -> Result<()>;
    /// The keys set by [`IndexCache::set_trusted`].
    fn trusted(&self) -> Vec<PublicKey>;
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
    blobs: HashMap<Id, Located>,
    trusted: Option<Vec<PublicKey>>,
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
    fn locate(&self, blob: &Id) -> Result<Option<Located>> {
        Ok(self.read().blobs.get(blob).copied())
    }

    fn insert_pack(&self, pack: &PackEntry, vouched: bool) -> Result<()> {
        let mut state = self.write();
        state.packs.insert(pack.id);
        for entry in &pack.blobs {
            keep_better(&mut state.blobs, located_in(pack, entry, vouched));
        }
        Ok(())
    }

    fn vouchers(&self) -> Result<Option<Id>> {
        Ok(self.read().trusted.as_deref().map(trust_fingerprint))
    }

    fn set_trusted(&self, trusted: &[PublicKey]) -> Result<()> {
        self.write().trusted = Some(trusted.to_vec());
        Ok(())
    }

    fn trusted(&self) -> Vec<PublicKey> {
        self.read().trusted.clone().unwrap_or_default()
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

fn located_in(pack: &PackEntry, entry: &crate::format::pack::BlobEntry, vouched: bool) -> Located {
    Located {
        location: BlobLocation {
            pack: pack.id,
            entry: *entry,
        },
        vouched,
    }
}

/// Records `located` unless the blob's location already kept supersedes
/// it (see [`Located::supersedes`]).
fn keep_better(blobs: &mut HashMap<Id, Located>, located: Located) {
    let id = located.location.entry.id;
    match blobs.get(&id) {
        Some(earlier) if !located.supersedes(earlier) => {}
        _ => {
            blobs.insert(id, located);
        }
    }
}

/// A fingerprint of a set of trusted keys: the cache's vouched flags hold
/// only for the keys they were decided by, so a change of trust rebuilds it.
pub fn trust_fingerprint(trusted: &[PublicKey]) -> Id {
    let mut keys: Vec<[u8; 32]> = trusted.iter().map(|key| key.0).collect();
    keys.sort_unstable();
    keys.dedup();
    Id::of(&keys.concat())
}

/// The on-disk cache: blob locations in sorted run files (see
/// [`super::runs`]), everything else in sled trees keyed by 32-byte ids.
pub struct SledIndex {
    path: PathBuf,
    database: sled::Db,
    packs: sled::Tree,
    index_files: sled::Tree,
    /// `vouchers`: the fingerprint of the keys the vouched flags hold for.
    meta: sled::Tree,
    /// Those keys, once set for this run.
    trusted: RwLock<Vec<PublicKey>>,
    /// Snapshot id to the pack ids it relies on, 32 bytes each.
    snapshot_packs: sled::Tree,
    runs_directory: PathBuf,
    /// Oldest first; a lookup asks the newest first.
    runs: RwLock<Vec<Run>>,
    /// Taken in but not yet in a run; written out by `flush` (or once
    /// [`PENDING_LIMIT`] blobs gather).
    pending: RwLock<Pending>,
}

#[derive(Default)]
struct Pending {
    blobs: HashMap<Id, Located>,
    /// Index files whose packs are all in `blobs` or in a run. Recorded in
    /// sled only once their blobs' run is on disk.
    index_files: Vec<Id>,
    /// Packs whose blobs are in `blobs`, with their sizes: recorded in
    /// sled, like the index files, only once those blobs' run is on disk.
    /// A pack recorded before could outlive its blobs (a backup
    /// interrupted, sled flushed, the pending blobs lost), and the next
    /// backup would take it for indexed: neither adopt it nor find its
    /// blobs, and store them all again.
    packs: HashMap<Id, u64>,
}

/// Blobs held in memory before they are written as a run, so a rebuild
/// from a large repository stays within about 40 MiB.
const PENDING_LIMIT: usize = 256 * 1024;

fn cache_error(path: &Path, error: sled::Error) -> StoreError {
    StoreError::io(
        format!("index cache {}", path.display()),
        std::io::Error::other(error.to_string()),
    )
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic elsewhere cannot leave these plain values inconsistent.
    lock.read().unwrap_or_else(|poison| poison.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poison| poison.into_inner())
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
        let index = SledIndex {
            path: path.to_path_buf(),
            packs: tree("packs")?,
            index_files: tree("index_files")?,
            meta: tree("meta")?,
            trusted: RwLock::new(Vec::new()),
            // Renamed when the packs remembered came to include those of
            // reused deltas' bases: sets remembered before are not relied
            // on (the next backup looks its chunks up once).
            snapshot_packs: tree("snapshot_packs_with_bases")?,
            runs_directory: path.join("runs"),
            runs: RwLock::new(Vec::new()),
            pending: RwLock::new(Pending::default()),
            database,
        };
        *write(&index.runs) = index.open_runs()?;
        // Only a cache's own space: what it held is not trusted (above).
        let _ = index.database.drop_tree("snapshot_packs");
        Ok(index)
    }

    fn error(&self, error: sled::Error) -> StoreError {
        cache_error(&self.path, error)
    }

    fn directory_error(&self, error: std::io::Error) -> StoreError {
        StoreError::io(
            format!("index cache {}", self.runs_directory.display()),
            error,
        )
    }

    /// Opens every run in the runs directory, oldest first, and removes
    /// temporaries a crash left.
    fn open_runs(&self) -> Result<Vec<Run>> {
        fs::create_dir_all(&self.runs_directory).map_err(|error| self.directory_error(error))?;
        let mut found = Vec::new();
        let listing =
            fs::read_dir(&self.runs_directory).map_err(|error| self.directory_error(error))?;
        for item in listing {
            let item = item.map_err(|error| self.directory_error(error))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            match parse_run_name(&name) {
                Some(sequence) => found.push((sequence, item.path())),
                None => {
                    let _ = fs::remove_file(item.path());
                }
            }
        }
        found.sort();
        found
            .into_iter()
            .map(|(sequence, path)| Run::open(&path, sequence))
            .collect()
    }

    /// Writes the pending blobs as a run, merges runs of similar size, and
    /// only then records the pending index files as taken in.
    fn write_pending(&self) -> Result<()> {
        let mut pending = write(&self.pending);
        let mut runs = write(&self.runs);
        if !pending.blobs.is_empty() {
            let sequence = runs.last().map_or(0, |run| run.sequence() + 1);
            let blobs: Vec<_> = pending.blobs.drain().collect();
            match Run::write(&self.runs_directory, sequence, blobs) {
                Ok(run) => runs.push(run),
                Err(error) => {
                    // Their blobs are gone from memory and not on disk: no
                    // index file or pack may count as taken in on their
                    // account.
                    pending.index_files.clear();
                    pending.packs.clear();
                    return Err(error);
                }
            }
            self.merge_similar(&mut runs)?;
        }
        for (pack, size) in pending.packs.drain() {
            self.packs
                .insert(pack.0, &size.to_le_bytes())
                .map_err(|error| self.error(error))?;
        }
        for index_file in pending.index_files.drain(..) {
            self.index_files
                .insert(index_file.0, &[])
                .map_err(|error| self.error(error))?;
        }
        Ok(())
    }

    /// Merges the newest two runs while the newer is at least half the
    /// older's size, so runs grow geometrically: a lookup asks a number of
    /// runs that grows with the logarithm of the cache's size, and each
    /// entry is rewritten that many times at most.
    fn merge_similar(&self, runs: &mut Vec<Run>) -> Result<()> {
        while let [.., older, newer] = runs.as_slice() {
            if newer.len() * 2 < older.len() {
                break;
            }
            let merged = merge(&self.runs_directory, newer.sequence() + 1, older, newer)?;
            let paths = [older.path().to_path_buf(), newer.path().to_path_buf()];
            runs.truncate(runs.len() - 2);
            runs.push(merged);
            // A crash before these removals leaves runs the merged one
            // repeats; lookups still find the same locations.
            for path in paths {
                fs::remove_file(&path).map_err(|error| self.directory_error(error))?;
            }
        }
        Ok(())
    }
}

impl IndexCache for SledIndex {
    fn locate(&self, blob: &Id) -> Result<Option<Located>> {
        // Newest first; the newest vouched location wins over any that is
        // not (as `Located::supersedes` decides on insertion), so a lookup
        // of a blob no vouched file lists asks every run.
        let mut hint = read(&self.pending).blobs.get(blob).copied();
        if hint.is_some_and(|located| located.vouched) {
            return Ok(hint);
        }
        let damage = {
            let runs = read(&self.runs);
            let mut damage = None;
            for run in runs.iter().rev() {
                match run.lookup(blob) {
                    Ok(Some(located)) if located.vouched => return Ok(Some(located)),
                    Ok(Some(located)) => hint = hint.or(Some(located)),
                    Ok(None) => {}
                    Err(error @ StoreError::Corrupt { .. }) => {
                        damage = Some(error);
                        break;
                    }
                    Err(error) => return Err(error),
                }
            }
            damage
        };
        if let Some(error) = damage {
            // A run's page failed its check (opening checks only a run's
            // directory). The run cannot answer, and no answer here may
            // leave it out: a blob only it lists would be missed. Emptied,
            // the cache is rebuilt from the repository when next opened;
            // this command stops with the error.
            let _ = self.clear();
            return Err(error);
        }
        Ok(hint)
    }

    fn insert_pack(&self, pack: &PackEntry, vouched: bool) -> Result<()> {
        // A blob listed twice (by overlapping index files) keeps the last
        // location taken in, unless only the earlier one is vouched.
        let full = {
            let mut pending = write(&self.pending);
            for entry in &pack.blobs {
                keep_better(&mut pending.blobs, located_in(pack, entry, vouched));
            }
            pending.packs.insert(pack.id, pack.size);
            pending.blobs.len() >= PENDING_LIMIT
        };
        if full {
            self.write_pending()?;
        }
        Ok(())
    }

    fn vouchers(&self) -> Result<Option<Id>> {
        let value = self
            .meta
            .get(b"vouchers")
            .map_err(|error| self.error(error))?;
        Ok(value.and_then(|bytes| bytes.as_ref().try_into().ok().map(Id)))
    }

    fn set_trusted(&self, trusted: &[PublicKey]) -> Result<()> {
        self.meta
            .insert(b"vouchers", &trust_fingerprint(trusted).0)
            .map_err(|error| self.error(error))?;
        *write(&self.trusted) = trusted.to_vec();
        Ok(())
    }

    fn trusted(&self) -> Vec<PublicKey> {
        read(&self.trusted).clone()
    }

    fn has_pack(&self, pack: &Id) -> Result<bool> {
        if read(&self.pending).packs.contains_key(pack) {
            return Ok(true);
        }
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
        write(&self.pending).index_files.push(*index_file);
        Ok(())
    }

    fn index_files(&self) -> Result<HashSet<Id>> {
        let mut ids: HashSet<Id> = read(&self.pending).index_files.iter().copied().collect();
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
        // Marks first: a crash part way must not leave a mark whose run is
        // gone.
        for tree in [
            &self.index_files,
            &self.packs,
            &self.snapshot_packs,
            &self.meta,
        ] {
            tree.clear().map_err(|error| self.error(error))?;
        }
        self.database.flush().map_err(|error| self.error(error))?;
        *write(&self.pending) = Pending::default();
        let mut runs = write(&self.runs);
        for run in runs.drain(..) {
            fs::remove_file(run.path()).map_err(|error| self.directory_error(error))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.write_pending()?;
        self.database
            .flush()
            .map(|_| ())
            .map_err(|error| self.error(error))
    }
}

/// The index, synchronised with the repository, plus what happened on the
/// way that the user should hear about.
pub struct OpenedIndex {
    pub index: Arc<dyn IndexCache>,
    /// About the cache, and index files that could not be read (each
    /// named; they were skipped, as planted garbage must never stop a
    /// command).
    pub notices: Vec<String>,
}

impl OpenedIndex {
    /// An opened index, made where `repository` (and its every clone)
    /// finds the bases of delta blobs: a delta read anywhere, by whatever
    /// command, decodes through the one index that command opened.
    fn new(repository: &Repository, index: Arc<dyn IndexCache>, notices: Vec<String>) -> Self {
        let lookup = Arc::clone(&index);
        repository.locate_bases_with(Arc::new(move |id: &Id| lookup.lookup(id)));
        OpenedIndex { index, notices }
    }
}

/// Opens the cache at `cache_path` (or an in-memory index when `None`) and
/// brings it up to date with the repository's index files; a location is
/// vouched for when its index file is sealed by one of `trusted` for this
/// repository (FORMAT.md section 9).
pub fn open_index(
    repository: &Repository,
    cache_path: Option<&Path>,
    trusted: &[PublicKey],
) -> Result<OpenedIndex> {
    let mut notices = Vec::new();
    let Some(path) = cache_path else {
        let index: Arc<dyn IndexCache> = Arc::new(MemoryIndex::new());
        synchronise(repository, index.as_ref(), trusted, &mut notices)?;
        return Ok(OpenedIndex::new(repository, index, notices));
    };
    match open_and_synchronise_sled(repository, path, trusted, &mut notices) {
        Ok(index) => return Ok(OpenedIndex::new(repository, index, notices)),
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
            match open_and_synchronise_sled(repository, path, trusted, &mut notices) {
                Ok(index) => return Ok(OpenedIndex::new(repository, index, notices)),
                Err(CacheFailure::Repository(error)) => return Err(error),
                Err(CacheFailure::Locked(reason) | CacheFailure::Cache(reason)) => {
                    notices.push(format!(
                        "rebuilt index cache is unusable too ({reason}); using an in-memory index for this run"
                    ));
                }
            }
        }
    }
    let index: Arc<dyn IndexCache> = Arc::new(MemoryIndex::new());
    synchronise(repository, index.as_ref(), trusted, &mut notices)?;
    Ok(OpenedIndex::new(repository, index, notices))
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
    trusted: &[PublicKey],
    notices: &mut Vec<String>,
) -> std::result::Result<Arc<dyn IndexCache>, CacheFailure> {
    let index = SledIndex::open(path).map_err(|error| {
        let reason = error.to_string();
        if reason.contains("could not acquire lock") {
            CacheFailure::Locked(reason)
        } else {
            CacheFailure::Cache(reason)
        }
    })?;
    match synchronise(repository, &index, trusted, notices) {
        Ok(()) => Ok(Arc::new(index)),
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

/// An index file read for the cache.
enum Taken {
    Read(IndexFile, bool),
    /// Removed since listing (a prune or repair replaced it).
    Vanished,
    /// Undecodable or not matching its name: skipped and named, never
    /// taken in (so it is named again next time).
    Unreadable(String),
}

fn take(repository: &Repository, id: &Id, trusted: &[PublicKey]) -> Result<Taken> {
    match repository.open_index_file(id, trusted) {
        Ok((file, vouching)) => Ok(Taken::Read(file, vouching.is_vouched())),
        Err(StoreError::Missing { .. }) => Ok(Taken::Vanished),
        Err(error @ StoreError::Io { .. }) => Err(error),
        // Too large for its kind, damaged or planted: never a reason to
        // stop (remove it if no cairn of yours wrote it, or run `cairn
        // repair index`).
        Err(error) => Ok(Taken::Unreadable(skipped_notice(id, &error))),
    }
}

/// Takes in index files written since the cache last looked (by other
/// processes) without starting over, and returns the packs they list that
/// exist, with their sizes. A long backup calls this now and then so that
/// concurrent backups deduplicate against each other. Unreadable files are
/// skipped (the cache's opening named them).
pub fn take_in_new_index_files(
    repository: &Repository,
    index: &dyn IndexCache,
) -> Result<Vec<(Id, u64)>> {
    let trusted = &index.trusted();
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
        let Taken::Read(file, vouched) = take(repository, &id, trusted)? else {
            continue;
        };
        for pack in &file.packs {
            if let Some(&size) = present.get(&pack.id) {
                index.insert_pack(pack, vouched)?;
                taken.push((pack.id, size));
            }
        }
        index.mark_index_file(&id)?;
    }
    Ok(taken)
}

/// What the user hears about an index file that cannot be read: it is
/// left out, and everything else goes on.
fn skipped_notice(id: &Id, error: &StoreError) -> String {
    format!("skipped index file {id}: {error}")
}

/// Takes in every index file the cache has not seen; starts over if the
/// repository no longer has one the cache took in, or if the trusted keys
/// changed since the cache decided what is vouched.
fn synchronise(
    repository: &Repository,
    index: &dyn IndexCache,
    trusted: &[PublicKey],
    notices: &mut Vec<String>,
) -> std::result::Result<(), SyncFailure> {
    if index.vouchers().map_err(SyncFailure::Cache)? != Some(trust_fingerprint(trusted)) {
        index.clear().map_err(SyncFailure::Cache)?;
    }
    index.set_trusted(trusted).map_err(SyncFailure::Cache)?;
    // A file that vanishes between listing and reading was replaced (by a
    // prune or repair, which write the replacement first): list again.
    for _ in 0..3 {
        notices.retain(|notice| !notice.starts_with("skipped index file "));
        if !synchronise_once(repository, index, trusted, notices)? {
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
    trusted: &[PublicKey],
    notices: &mut Vec<String>,
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
        index.set_trusted(trusted).map_err(SyncFailure::Cache)?;
        known.clear();
    }
    let mut vanished = false;
    for id in listed.difference(&known) {
        let (file, vouched) =
            match take(repository, id, trusted).map_err(SyncFailure::Repository)? {
                Taken::Read(file, vouched) => (file, vouched),
                Taken::Vanished => {
                    vanished = true;
                    continue;
                }
                Taken::Unreadable(notice) => {
                    notices.push(notice);
                    continue;
                }
            };
        for pack in file.packs.iter().filter(|pack| present.contains(&pack.id)) {
            index
                .insert_pack(pack, vouched)
                .map_err(SyncFailure::Cache)?;
        }
        // Marked only after its packs, so a crash mid-way redoes this file.
        index.mark_index_file(id).map_err(SyncFailure::Cache)?;
    }
    Ok(vanished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{BlobEntry, BlobKind, Compression};

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

    fn pack_of(name: &[u8], blobs: u64, shared: Option<Id>) -> PackEntry {
        let entry = |offset: u64, id: Id| BlobEntry {
            kind: BlobKind::Data,
            id,
            offset,
            length: 10,
            raw_length: 20,
            compression: Compression::Zstd,
            frame_offset: None,
            base: None,
        };
        let mut entries: Vec<BlobEntry> = (0..blobs)
            .map(|number| entry(number * 10, Id::of(&[name, &number.to_le_bytes()].concat())))
            .collect();
        entries.extend(shared.map(|id| entry(blobs * 10, id)));
        PackEntry {
            id: Id::of(name),
            size: (entries.len() * 10) as u64,
            blobs: entries,
        }
    }

    fn found_in(index: &dyn IndexCache, id: &Id) -> Option<Id> {
        index.lookup(id).unwrap().map(|location| location.pack)
    }

    fn run_files(path: &Path) -> usize {
        fs::read_dir(path.join("runs")).unwrap().count()
    }

    #[test]
    fn the_sled_index_keeps_what_it_flushed_in_runs_newest_first_and_merges_them() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cache");
        let shared = Id::of(b"stored twice");
        let first = pack_of(b"first", 1000, Some(shared));
        let second = pack_of(b"second", 10, Some(shared));
        let some_first_blob = first.blobs[500].id;
        let a_second_blob = second.blobs[3].id;
        let (index_one, index_two) = (Id::of(b"index one"), Id::of(b"index two"));
        {
            let index = SledIndex::open(&path).unwrap();
            index.insert_pack(&first, true).unwrap();
            index.mark_index_file(&index_one).unwrap();
            // Found before any run is written.
            assert_eq!(found_in(&index, &some_first_blob), Some(first.id));
            index.flush().unwrap();
            index.insert_pack(&second, true).unwrap();
            index.mark_index_file(&index_two).unwrap();
            assert_eq!(
                index.index_files().unwrap(),
                HashSet::from([index_one, index_two])
            );
            assert!(index.has_pack(&second.id).unwrap());
            // Dropped without a flush: the second pack is not kept, and
            // neither is its index file's mark, so it is taken in again.
        }
        let index = SledIndex::open(&path).unwrap();
        assert_eq!(index.index_files().unwrap(), HashSet::from([index_one]));
        // Nor is the pack itself known: a backup interrupted there leaves
        // it to the next one to adopt, not to take for indexed.
        assert!(index.has_pack(&first.id).unwrap());
        assert!(!index.has_pack(&second.id).unwrap());
        assert_eq!(found_in(&index, &some_first_blob), Some(first.id));
        assert_eq!(found_in(&index, &shared), Some(first.id));
        assert_eq!(found_in(&index, &a_second_blob), None);

        index.insert_pack(&second, true).unwrap();
        index.flush().unwrap();
        // Too small to merge with the first run; asked first all the same.
        assert_eq!(run_files(&path), 2);
        assert_eq!(found_in(&index, &shared), Some(second.id));
        assert_eq!(found_in(&index, &a_second_blob), Some(second.id));

        // A run as large as the first: the three merge into one.
        let third = pack_of(b"third", 1000, None);
        index.insert_pack(&third, true).unwrap();
        index.flush().unwrap();
        assert_eq!(run_files(&path), 1);
        for (id, pack) in [
            (some_first_blob, first.id),
            (shared, second.id),
            (a_second_blob, second.id),
            (third.blobs[999].id, third.id),
        ] {
            assert_eq!(found_in(&index, &id), Some(pack));
        }
        drop(index);
        let index = SledIndex::open(&path).unwrap();
        assert_eq!(found_in(&index, &shared), Some(second.id));
        index.clear().unwrap();
        assert_eq!(found_in(&index, &some_first_blob), None);
        assert_eq!(run_files(&path), 0);
    }

    /// A run page that rots on disk is refused when a lookup reads it,
    /// and the cache is emptied, so the next open takes every index file
    /// in again instead of answering from what is left.
    #[test]
    fn a_damaged_run_page_empties_the_cache_for_a_rebuild() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cache");
        let pack = pack_of(b"pack", 500, None);
        let index = SledIndex::open(&path).unwrap();
        index.insert_pack(&pack, true).unwrap();
        index.mark_index_file(&Id::of(b"index file")).unwrap();
        index.flush().unwrap();
        let run = fs::read_dir(path.join("runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // The first page's records: flip a byte of its first blob's pack id.
        let mut bytes = fs::read(&run).unwrap();
        bytes[16 + 40] ^= 1;
        fs::write(&run, &bytes).unwrap();
        let mut ids: Vec<Id> = pack.blobs.iter().map(|blob| blob.id).collect();
        ids.sort();
        let error = index
            .locate(&ids[0])
            .expect_err("a damaged page")
            .to_string();
        assert!(error.contains("checksum"), "{error}");
        assert_eq!(run_files(&path), 0);
        assert!(index.index_files().unwrap().is_empty());
        assert_eq!(found_in(&index, &ids[0]), None);
    }

    /// A planted listing, taken in after the true one, must not shadow it;
    /// only a vouched location counts for deduplication.
    fn keeps_the_vouched_location(index: &dyn IndexCache) {
        let true_pack = pack_of(b"true", 3, None);
        let blob = true_pack.blobs[1].id;
        let mut planted = pack_of(b"planted", 0, Some(blob));
        planted.blobs[0].offset = 999;
        let hint_only = pack_of(b"hint only", 1, None);
        index.insert_pack(&true_pack, true).unwrap();
        index.insert_pack(&planted, false).unwrap();
        index.insert_pack(&hint_only, false).unwrap();
        index.flush().unwrap();
        index.insert_pack(&planted, false).unwrap();
        assert_eq!(found_in(index, &blob), Some(true_pack.id));
        assert_eq!(
            index.lookup_vouched(&blob).unwrap().map(|at| at.pack),
            Some(true_pack.id)
        );
        let hinted = hint_only.blobs[0].id;
        assert_eq!(found_in(index, &hinted), Some(hint_only.id));
        assert_eq!(index.lookup_vouched(&hinted).unwrap(), None);
    }

    #[test]
    fn both_caches_keep_the_vouched_location_of_a_blob() {
        keeps_the_vouched_location(&MemoryIndex::new());
        let directory = tempfile::tempdir().unwrap();
        keeps_the_vouched_location(&SledIndex::open(&directory.path().join("cache")).unwrap());
    }

    #[test]
    fn a_change_of_trusted_keys_rebuilds_the_cache() {
        use crate::backend::MemoryBackend;
        use crate::format::keys::public_key_of;
        let (repository, key) =
            crate::repository::plaintext_for_tests(std::sync::Arc::new(MemoryBackend::new()));
        let mut pack = pack_of(b"pack", 2, None);
        pack.size = 100_000;
        for (number, blob) in pack.blobs.iter_mut().enumerate() {
            blob.offset = 8 + 10 * number as u64;
        }
        repository
            .backend()
            .create(ObjectKind::Pack, &pack.id.to_hex(), b"pack")
            .unwrap();
        repository
            .write_index_file(&IndexFile::new(vec![pack.clone()]), Some(&key))
            .unwrap();
        repository
            .backend()
            .create(ObjectKind::Index, &Id::of(b"junk").to_hex(), b"junk")
            .unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cache");
        let blob = pack.blobs[0].id;
        let opened = open_index(&repository, Some(&path), &[public_key_of(&key)]).unwrap();
        assert!(opened.index.lookup_vouched(&blob).unwrap().is_some());
        // The junk object is named and skipped, not fatal.
        assert!(
            opened
                .notices
                .iter()
                .any(|notice| notice.contains(&Id::of(b"junk").to_hex())),
            "{:?}",
            opened.notices
        );
        drop(opened);
        let opened = open_index(&repository, Some(&path), &[]).unwrap();
        assert!(opened.index.lookup_vouched(&blob).unwrap().is_none());
        assert!(opened.index.lookup(&blob).unwrap().is_some());
    }

    #[test]
    fn a_run_that_cannot_be_written_leaves_no_index_file_counted_as_taken_in() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cache");
        let index = SledIndex::open(&path).unwrap();
        index
            .insert_pack(&pack_of(b"pack", 10, None), true)
            .unwrap();
        index.mark_index_file(&Id::of(b"index file")).unwrap();
        fs::remove_dir_all(path.join("runs")).unwrap();
        assert!(index.flush().is_err());
        // Taken in again by the next synchronisation, not trusted blindly.
        assert!(index.index_files().unwrap().is_empty());
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
