//! The local walk cache (FORMAT.md section 14.9): what this host needs of
//! its own last backup to skip unchanged files next time, kept on this
//! machine in plaintext, so that a write-only host (no read key: it cannot
//! read its own snapshots back from the repository, FORMAT.md 17.6) still
//! skips unchanged files.
//!
//! One file per lineage (repository, host, component names and signing
//! key) under `<cache>/<repository id>/walk/`: the trees the backup stored
//! and its signed manifest, exactly as signed (before any encryption).
//! Everything read back is verified: the manifest by this host's own
//! signature for this repository, each tree against its (keyed) id. A
//! damaged, stale or missing cache therefore only costs reading files
//! again, never a wrong snapshot.
//!
//! Owns that file's layout, its writing (to a temporary file renamed into
//! place once the snapshot is committed) and its reading. It never decides
//! which snapshot is the parent (the commit stage does), never reads the
//! repository's objects and never fails a backup: every error here is
//! swallowed into "no cache".

use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::limits::MAX_MANIFEST_SIZE;
use crate::format::manifest::{SignedManifest, SnapshotBody};
use crate::format::pack::MAX_BLOB_SIZE;
use crate::format::tree::Tree;
use crate::id::{Id, IdHasher};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Starts a walk cache file.
const MAGIC: &[u8; 8] = b"CAIRNWC1";
/// Ends one, after the manifest record's offset.
const END_MAGIC: &[u8; 8] = b"CAIRNWCE";
/// A record's head: id (32) and length (u32 LE).
const RECORD_HEAD: usize = 36;
/// The trailer: manifest record offset (u64 LE) and [`END_MAGIC`].
const TRAILER: usize = 16;
/// Temporary files of a crashed backup older than this are removed.
const STALE_TEMPORARY: Duration = Duration::from_secs(24 * 3600);

/// The file of one lineage: the same repository (the directory), host,
/// component names (in order) and signing key, as a parent must share.
pub(super) fn lineage_path(
    directory: &Path,
    host: &str,
    names: &[&str],
    key: &PublicKey,
) -> PathBuf {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn walk cache lineage v1\0");
    for part in std::iter::once(host).chain(names.iter().copied()) {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.update(&key.0);
    let name = &hasher.finalize().to_hex()[..32];
    directory.join(format!("{name}.walk"))
}

/// A lineage's cached last backup: its snapshot and where its trees lie.
pub(super) struct CachedWalk {
    file: File,
    /// The snapshot's id in the repository, as written.
    pub(super) snapshot: Id,
    /// Its body, verified under this host's own signature.
    pub(super) body: SnapshotBody,
    trees: HashMap<Id, (u64, u32)>,
    hasher: IdHasher,
}

impl CachedWalk {
    /// The cached last backup of the lineage at `path`, if there is one
    /// and its manifest is signed by `own` for `repository`. Anything
    /// wrong with the file is no cache.
    pub(super) fn load(
        path: &Path,
        repository: &Id,
        own: &PublicKey,
        hasher: IdHasher,
    ) -> Option<CachedWalk> {
        Self::read(path, repository, own, hasher).ok()
    }

    fn read(path: &Path, repository: &Id, own: &PublicKey, hasher: IdHasher) -> Result<Self> {
        let object = format!("walk cache {}", path.display());
        let damaged = |why: &str| StoreError::corrupt(&object, why.to_string());
        let io = |error| StoreError::io(format!("reading {}", path.display()), error);
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size < (MAGIC.len() + RECORD_HEAD + TRAILER) as u64 {
            return Err(damaged("too short"));
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0).map_err(io)?;
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, size - TRAILER as u64)
            .map_err(io)?;
        if &magic != MAGIC || &trailer[8..] != END_MAGIC {
            return Err(damaged("not a walk cache file (or cut short)"));
        }
        let manifest_at = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
        let end = size - TRAILER as u64;
        if manifest_at < MAGIC.len() as u64 || manifest_at + RECORD_HEAD as u64 > end {
            return Err(damaged("manifest offset out of range"));
        }
        let (snapshot, manifest_length) = read_head(&file, manifest_at).map_err(io)?;
        let manifest_start = manifest_at + RECORD_HEAD as u64;
        if u64::from(manifest_length) > MAX_MANIFEST_SIZE
            || manifest_start + u64::from(manifest_length) != end
        {
            return Err(damaged("manifest length out of range"));
        }
        let mut bytes = vec![0u8; manifest_length as usize];
        file.read_exact_at(&mut bytes, manifest_start).map_err(io)?;
        let body = SignedManifest::decode(&bytes, &object)?.verified_body(
            repository,
            std::slice::from_ref(own),
            &object,
        )?;
        let trees = scan_trees(&file, manifest_at).map_err(io)?;
        Ok(CachedWalk {
            file,
            snapshot,
            body,
            trees,
            hasher,
        })
    }

    /// The tree `id`, if the cache holds it and its bytes still hash to
    /// its id; anything else is `None` (the caller reads the repository
    /// or the files instead).
    pub(super) fn tree(&self, id: &Id) -> Option<Tree> {
        let &(offset, length) = self.trees.get(id)?;
        let mut bytes = vec![0u8; length as usize];
        self.file.read_exact_at(&mut bytes, offset).ok()?;
        if self.hasher.id(&bytes) != *id {
            return None;
        }
        Tree::decode(&bytes, &format!("cached tree {id}")).ok()
    }

    /// How many trees the cache holds.
    #[cfg(test)]
    pub(super) fn tree_count(&self) -> usize {
        self.trees.len()
    }
}

fn read_head(file: &File, at: u64) -> std::io::Result<(Id, u32)> {
    let mut head = [0u8; RECORD_HEAD];
    file.read_exact_at(&mut head, at)?;
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[..32]);
    let mut length = [0u8; 4];
    length.copy_from_slice(&head[32..]);
    Ok((Id(id), u32::from_le_bytes(length)))
}

/// Where each tree record before `end` lies. A record whose length runs
/// past `end` or over the blob limit ends the scan: the trees before it
/// are still good (each is checked against its id when read).
fn scan_trees(file: &File, end: u64) -> std::io::Result<HashMap<Id, (u64, u32)>> {
    let mut trees = HashMap::new();
    let mut reader = BufReader::new(file);
    reader.seek(std::io::SeekFrom::Start(MAGIC.len() as u64))?;
    let mut at = MAGIC.len() as u64;
    while at + RECORD_HEAD as u64 <= end {
        let mut head = [0u8; RECORD_HEAD];
        reader.read_exact(&mut head)?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&head[..32]);
        let mut length = [0u8; 4];
        length.copy_from_slice(&head[32..]);
        let length = u32::from_le_bytes(length);
        let start = at + RECORD_HEAD as u64;
        if length > MAX_BLOB_SIZE || start + u64::from(length) > end {
            break;
        }
        trees.insert(Id(id), (start, length));
        reader.seek_relative(i64::from(length))?;
        at = start + u64::from(length);
    }
    Ok(trees)
}

/// Records one lineage's backup as it is walked: every tree stored, then
/// the signed manifest once the snapshot is committed. Until
/// [`WalkRecorder::finish`] it writes a temporary file beside the
/// lineage's; the old cache stays in place until the new one is whole.
pub(super) struct WalkRecorder {
    path: PathBuf,
    state: Mutex<Recording>,
}

struct Recording {
    /// The temporary file, a buffered writer to it and the bytes written;
    /// `None` once writing failed: the old cache is then kept.
    out: Option<(tempfile::NamedTempFile, BufWriter<File>, u64)>,
    seen: HashSet<Id>,
}

impl WalkRecorder {
    /// A recorder for the lineage at `path` (see [`lineage_path`]); `None`
    /// if its directory cannot be made private or written.
    pub(super) fn start(path: PathBuf) -> Option<Self> {
        let directory = path.parent()?;
        crate::os::private::ensure_private_directory(directory).ok()?;
        remove_stale_temporaries(directory);
        let temporary = tempfile::Builder::new()
            .prefix(".walk-")
            .suffix(".tmp")
            .tempfile_in(directory)
            .ok()?;
        let mut file = BufWriter::with_capacity(1 << 20, temporary.as_file().try_clone().ok()?);
        file.write_all(MAGIC).ok()?;
        Some(WalkRecorder {
            path,
            state: Mutex::new(Recording {
                out: Some((temporary, file, MAGIC.len() as u64)),
                seen: HashSet::new(),
            }),
        })
    }

    /// Records a tree just stored, once per id. A write that fails stops
    /// the recording (the old cache stays), never the backup.
    pub(super) fn record(&self, id: &Id, bytes: &[u8]) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if state.out.is_none() || !state.seen.insert(*id) {
            return;
        }
        let Some((_, file, written)) = state.out.as_mut() else {
            return;
        };
        match write_record(file, id, bytes) {
            Ok(length) => *written += length,
            Err(_) => state.out = None,
        }
    }

    /// Ends the recording with the committed snapshot `snapshot` and its
    /// signed manifest, and puts the file in place of the lineage's old
    /// one.
    pub(super) fn finish(self, snapshot: &Id, manifest: &[u8]) -> Result<()> {
        let state = self
            .state
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some((temporary, mut file, written)) = state.out else {
            return Err(StoreError::Invalid(format!(
                "writing the walk cache {} failed part way",
                self.path.display()
            )));
        };
        let io = |error| StoreError::io("writing the walk cache", error);
        write_record(&mut file, snapshot, manifest).map_err(io)?;
        file.write_all(&written.to_le_bytes()).map_err(io)?;
        file.write_all(END_MAGIC).map_err(io)?;
        file.flush().map_err(io)?;
        drop(file);
        temporary
            .persist(&self.path)
            .map_err(|error| StoreError::io("putting the walk cache in place", error.error))?;
        Ok(())
    }
}

/// Writes one record; returns its length.
fn write_record(file: &mut impl Write, id: &Id, bytes: &[u8]) -> std::io::Result<u64> {
    let length =
        u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("a record over 4 GiB"))?;
    file.write_all(&id.0)?;
    file.write_all(&length.to_le_bytes())?;
    file.write_all(bytes)?;
    Ok((RECORD_HEAD + bytes.len()) as u64)
}

/// Removes temporary files a crashed backup left here over a day ago
/// (a running backup's own are younger).
fn remove_stale_temporaries(directory: &Path) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".walk-") && name.ends_with(".tmp")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_TEMPORARY);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};
    use crate::format::manifest::ChunkerRecord;
    use crate::format::tree::Tree;

    fn body() -> SnapshotBody {
        SnapshotBody {
            version: SnapshotBody::new_version(),
            time: "2026-12-06T10:00:00Z".into(),
            host: "h".into(),
            user: "u".into(),
            tags: Vec::new(),
            labels: Default::default(),
            parent: None,
            chunker: ChunkerRecord {
                min_size: 1,
                avg_size: 2,
                max_size: 3,
            },
            components: Vec::new(),
            problems: Vec::new(),
            cairn_version: "test".into(),
            app_version: None,
        }
    }

    #[test]
    fn a_recorded_walk_reads_back_verified_and_damage_costs_only_the_cache() {
        let directory = tempfile::tempdir().unwrap();
        let key = generate_signing_key().unwrap();
        let own = public_key_of(&key);
        let repository = Id::of(b"repository");
        let path = lineage_path(&directory.path().join("walk"), "h", &["a"], &own);
        let hasher = IdHasher::Keyed([7; 32]);
        let tree = Tree::new(Vec::new()).encode();
        let tree_id = hasher.id(&tree);
        let recorder = WalkRecorder::start(path.clone()).unwrap();
        recorder.record(&tree_id, &tree);
        recorder.record(&tree_id, &tree);
        let manifest = SignedManifest::sign(&body(), &repository, &key).encode();
        let snapshot = Id::of(b"snapshot");
        recorder.finish(&snapshot, &manifest).unwrap();

        let cached = CachedWalk::load(&path, &repository, &own, hasher).unwrap();
        assert_eq!(cached.snapshot, snapshot);
        assert_eq!(cached.body, body());
        assert_eq!(cached.tree_count(), 1);
        assert!(cached.tree(&tree_id).is_some());
        assert!(cached.tree(&Id::of(b"other")).is_none());
        // Another key, another repository or another id key: no cache or
        // no tree.
        let other = public_key_of(&generate_signing_key().unwrap());
        assert!(CachedWalk::load(&path, &repository, &other, hasher).is_none());
        assert!(CachedWalk::load(&path, &Id::of(b"x"), &own, hasher).is_none());
        let plain = CachedWalk::load(&path, &repository, &own, IdHasher::Plain).unwrap();
        assert!(plain.tree(&tree_id).is_none());

        // A flipped byte in the tree: that tree is gone, the rest stands.
        let mut bytes = fs::read(&path).unwrap();
        let at = MAGIC.len() + RECORD_HEAD;
        bytes[at] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let cached = CachedWalk::load(&path, &repository, &own, hasher).unwrap();
        assert!(cached.tree(&tree_id).is_none());
        // A flipped byte in the manifest, or a cut: no cache at all.
        bytes[at] ^= 1;
        let manifest_byte = bytes.len() - TRAILER - 10;
        bytes[manifest_byte] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(CachedWalk::load(&path, &repository, &own, hasher).is_none());
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(CachedWalk::load(&path, &repository, &own, hasher).is_none());
    }

    #[test]
    fn an_unfinished_recording_leaves_the_old_cache_in_place() {
        let directory = tempfile::tempdir().unwrap();
        let key = generate_signing_key().unwrap();
        let own = public_key_of(&key);
        let repository = Id::of(b"repository");
        let path = lineage_path(directory.path(), "h", &["a"], &own);
        let recorder = WalkRecorder::start(path.clone()).unwrap();
        let manifest = SignedManifest::sign(&body(), &repository, &key).encode();
        recorder.finish(&Id::of(b"first"), &manifest).unwrap();
        let second = WalkRecorder::start(path.clone()).unwrap();
        second.record(&Id::of(b"t"), b"t");
        drop(second);
        let cached = CachedWalk::load(&path, &repository, &own, IdHasher::Plain).unwrap();
        assert_eq!(cached.snapshot, Id::of(b"first"));
        let left: Vec<_> = fs::read_dir(directory.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temporary file is gone");
        assert_ne!(
            lineage_path(directory.path(), "h", &["a", "b"], &own),
            lineage_path(directory.path(), "h", &["ab"], &own)
        );
    }
}
