//! The filesystem walk: every component once, depth first, the entries of
//! a directory in parallel, each directory's tree blob stored once its
//! entries are. With a parent snapshot the tree is warmed up first and
//! unchanged files are taken from the parent unread ([`super::unchanged`]);
//! other regular files go to the chunk stage ([`super::chunk`]).
//!
//! A path that cannot be listed, read or stat'ed is recorded as a problem
//! and left out; only the repository failing stops the walk. Tells the
//! progress sink the files and bytes it finds and finishes. Never signs or
//! commits anything.

use super::chunk::{ChunkTarget, StoredContent};
use super::fan_out::FanOut;
use super::prepare::{Prepared, Sources};
use super::progress::Reporter;
use super::read_ahead;
use super::sources::{ComponentSource, SourceKind, covered, leads_to, resolve_chunking};
use super::unchanged::{
    entry_from_metadata, file_stats, looks_unchanged, previous_entry, taken_from_parent,
};
use super::walk_cache::{CachedWalk, WalkRecorder};
use crate::error::{Result, StoreError};
use crate::format::chunking::FileChunking;
use crate::format::limits::MAX_TREE_DEPTH;
use crate::format::manifest::{
    ComponentKind, ComponentRecord, ComponentStats, Problem, RootMetadata, SnapshotBody,
};
use crate::format::pack::BlobKind;
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::{chunking_of_file, join_relative};
use crate::ops::read_tree;
use crate::progress::Amount;
use crate::repository::Repository;
use cairn_chunker::{ChunkerParams, Chunking};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Files of a directory whose reading is asked for at once.
const HINT_WINDOW: usize = 64;

/// The cores a backup keeps busy: the global pool's threads (one per core
/// unless `RAYON_NUM_THREADS` says otherwise).
fn cores() -> usize {
    rayon::current_num_threads().max(1)
}

/// The walk's own threads when it has more components than cores: one per
/// component, up to one more than the cores; `None` (the global pool, a
/// thread per core) otherwise. Components are walked side by side, each
/// from a worker of its own; with a thread per core the components after
/// the first ones waited for one of those to end, so a component of small
/// files (waiting on the disk for each) came last, its waits with nothing
/// to fill them: the modelled first backup walked its 20,000 small files
/// alone for its last second. The extra thread works while another waits
/// on the disk. It costs memory (one more file chunked at a time, one more
/// compressor), so a backup of fewer components keeps a thread per core.
pub(super) fn walk_pool(components: usize) -> Option<rayon::ThreadPool> {
    let threads = components.min(cores() + 1);
    if threads <= cores() {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|index| format!("cairn-walk-{index}"))
        .build()
        .ok()
}

/// What the walks of every component share: where blobs go, where parent
/// trees are read from (the first repository), and what they gather from
/// every thread.
pub(super) struct Walk<'a> {
    pub(super) repository: &'a Repository,
    pub(super) index: &'a dyn IndexCache,
    pub(super) writer: &'a FanOut<'a>,
    pub(super) reporter: &'a Reporter<'a>,
    problems: Mutex<Vec<Problem>>,
    unchanged_files: AtomicU64,
    /// Device and inode of every secret key file named by the caller.
    secret_keys: HashSet<(u64, u64)>,
    /// Secret keys left out: `component/path` and why.
    secret_keys_left_out: Mutex<Vec<(String, String)>>,
    /// The parent's trees on this machine: read before the repository.
    cached: Option<&'a CachedWalk>,
    /// Each repository's walk cache recording, given every tree stored.
    recorders: &'a [Option<WalkRecorder>],
    /// How many large files are read ahead at once, across components.
    read_aheads: read_ahead::ReadAheadSlots,
}

/// What the walk gathered besides the components: its problems, how many
/// files were taken from the parent unread, and the secret keys it left
/// out.
pub(super) struct Tallies {
    pub(super) problems: Vec<Problem>,
    pub(super) unchanged_files: u64,
    pub(super) secret_keys_left_out: Vec<(String, String)>,
}

/// A file no larger than this may be a cairn secret key file (one is about
/// 200 bytes), and is looked at before it is stored.
const SECRET_KEY_MAX: u64 = 1024;
/// What a secret key file holds (`keystore`'s format names, in quotes): a
/// signing key, one sealed under a passphrase, or an X25519 identity.
const SECRET_KEY_MARKS: [&[u8]; 3] = [
    b"\"cairn-secret-key-v1\"",
    b"\"cairn-protected-secret-key-v1\"",
    b"\"cairn-identity-v1\"",
];

/// Device and inode of each secret key file in `paths` (a directory
/// stands for every `*.key` file in it); what does not exist is skipped.
pub(super) fn secret_key_identities(paths: &[PathBuf]) -> HashSet<(u64, u64)> {
    let mut identities = HashSet::new();
    let mut add = |path: &Path| {
        if let Ok(meta) = fs::metadata(path)
            && meta.is_file()
        {
            identities.insert((meta.dev(), meta.ino()));
        }
    };
    for path in paths {
        match fs::read_dir(path) {
            Ok(entries) => entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|extension| extension == "key"))
                .for_each(|path| add(&path)),
            Err(_) => add(path),
        }
    }
    identities
}

/// Whether an open file of `size` bytes holds a cairn secret key: a small
/// JSON object naming the key file format. One read, of small files only.
fn looks_like_secret_key(file: &fs::File, size: u64) -> bool {
    use std::os::unix::fs::FileExt;
    if !(16..=SECRET_KEY_MAX).contains(&size) {
        return false;
    }
    let mut buffer = [0u8; SECRET_KEY_MAX as usize];
    let Ok(read) = file.read_at(&mut buffer, 0) else {
        return false;
    };
    let bytes = &buffer[..read];
    bytes.trim_ascii_start().starts_with(b"{")
        && SECRET_KEY_MARKS
            .iter()
            .any(|mark| bytes.windows(mark.len()).any(|window| window == *mark))
}

/// What reading the sources gave, the same for every repository.
#[derive(Default)]
pub(super) struct ReadSources {
    pub(super) components: Vec<ComponentRecord>,
    /// Components left out, each with whether it was critical.
    pub(super) failed_components: Vec<(String, bool)>,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        repository: &'a Repository,
        index: &'a dyn IndexCache,
        writer: &'a FanOut<'a>,
        reporter: &'a Reporter<'a>,
        secret_keys: HashSet<(u64, u64)>,
    ) -> Self {
        Walk {
            repository,
            index,
            writer,
            reporter,
            problems: Mutex::new(Vec::new()),
            unchanged_files: AtomicU64::new(0),
            secret_keys,
            secret_keys_left_out: Mutex::new(Vec::new()),
            cached: None,
            recorders: &[],
            read_aheads: read_ahead::ReadAheadSlots::new(cores()),
        }
    }

    /// Reads parent trees from `cached` first, and records every tree
    /// stored into each of `recorders`.
    pub(super) fn caching(
        mut self,
        cached: Option<&'a CachedWalk>,
        recorders: &'a [Option<WalkRecorder>],
    ) -> Self {
        self.cached = cached;
        self.recorders = recorders;
        self
    }

    /// The problems met, in path order, how many files were taken from the
    /// parent unread, and the secret keys left out.
    pub(super) fn into_tallies(self) -> Tallies {
        let mut problems = self
            .problems
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner());
        problems.sort_by(|a, b| (&a.component, &a.path).cmp(&(&b.component, &b.path)));
        let mut secret_keys_left_out = self
            .secret_keys_left_out
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner());
        secret_keys_left_out.sort();
        Tallies {
            problems,
            unchanged_files: self.unchanged_files.into_inner(),
            secret_keys_left_out,
        }
    }

    fn secret_key_left_out(&self, component: &str, path: &str, why: &str) {
        self.secret_keys_left_out
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push((format!("{component}/{path}"), why.to_string()));
    }

    fn problem(&self, component: &str, path: &str, problem: String) {
        self.problems
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(Problem {
                component: component.into(),
                path: path.into(),
                problem,
            });
    }

    /// Reads every component once, storing through the fan-out.
    pub(super) fn components(
        &self,
        params: ChunkerParams,
        sources: &Sources,
        parent_body: Option<&SnapshotBody>,
    ) -> Result<ReadSources> {
        let work: Vec<_> = sources
            .components
            .iter()
            .zip(&sources.prepared)
            .zip(&sources.excludes)
            .collect();
        // Components are read side by side: one's small files wait on the disk
        // while another's large ones keep the CPU busy.
        // Ok(Err(critical)): the component could not be prepared.
        let walked: Vec<std::result::Result<ComponentRecord, bool>> = work
            .into_par_iter()
            .enumerate()
            .map(|(group, ((source, preparation), exclude))| {
                if let Prepared::Failed(why) = preparation {
                    self.problem(&source.name, "", why.clone());
                    return Ok(Err(source.critical));
                }
                let walker = Walker {
                    walk: self,
                    chunks: ChunkTarget {
                        writer: self.writer,
                        group,
                        reporter: self.reporter,
                        id_hasher: self.repository.id_hasher(),
                        read_aheads: &self.read_aheads,
                    },
                    chunking: resolve_chunking(self.repository.config(), params, source.chunking),
                    component: &source.name,
                    only: source.only.as_ref(),
                    exclude: exclude.as_ref(),
                };
                self.reporter.component(&source.name);
                // A parent cut differently would hand down chunk lists cut the
                // old way: correct, but they would never deduplicate again.
                let parent_component = parent_body
                    .and_then(|body| {
                        body.component(&source.name).filter(|component| {
                            component.chunking(&body.chunker) == walker.chunking
                        })
                    })
                    .filter(|component| component.source == source.path.display().to_string());
                let record = match preparation {
                    Prepared::Made(_directory, made, kind, journal_mode) => {
                        let mut record =
                            walker.component(made, parent_component.map(|c| c.tree))?;
                        record.kind = *kind;
                        record.sqlite_journal_mode = journal_mode.clone();
                        record.source = match &source.kind {
                            SourceKind::Command(command) => command.clone(),
                            _ => source.path.display().to_string(),
                        };
                        record
                    }
                    _ => walker.component(source, parent_component.map(|c| c.tree))?,
                };
                self.reporter.flush();
                Ok(Ok(record))
            })
            .collect::<Result<_>>()?;
        let mut components = Vec::new();
        let mut failed_components = Vec::new();
        for (walked, source) in walked.into_iter().zip(sources.components) {
            match walked {
                Ok(record) => components.push(record),
                Err(critical) => failed_components.push((source.name.clone(), critical)),
            }
        }
        Ok(ReadSources {
            components,
            failed_components,
        })
    }
}

/// One component's walk.
struct Walker<'a> {
    walk: &'a Walk<'a>,
    chunks: ChunkTarget<'a>,
    chunking: FileChunking,
    component: &'a str,
    only: Option<&'a BTreeSet<String>>,
    exclude: Option<&'a globset::GlobSet>,
}

/// An entry and the statistics of everything under it.
type Walked = (TreeEntry, ComponentStats);

/// A directory entry's path and its `lstat`, taken once as its window is
/// looked ahead at.
type Looked = (PathBuf, io::Result<Metadata>);

impl Walker<'_> {
    fn problem(&self, path: &str, problem: String) {
        self.walk.problem(self.component, path, problem);
    }

    /// `parent_tree` is the component's root tree in the parent snapshot.
    fn component(
        &self,
        source: &ComponentSource,
        parent_tree: Option<Id>,
    ) -> Result<ComponentRecord> {
        let meta = fs::metadata(&source.path)
            .map_err(|_| StoreError::SourceMissing(source.path.clone()))?;
        let parent = parent_tree.and_then(|id| self.parent_tree(&id));
        let (kind, tree, stats) = if meta.is_dir() {
            let (tree, stats) = match parent {
                // With a parent most files are expected unchanged, and the
                // walk waits mostly on their metadata.
                Some(_) => {
                    let skip = |relative: &str| self.skipped(relative);
                    std::thread::scope(|scope| {
                        let _warm_up = read_ahead::warm_tree(scope, &source.path, &skip);
                        self.directory(&source.path, "", parent.as_ref())
                    })?
                }
                None => self.directory(&source.path, "", parent.as_ref())?,
            };
            (ComponentKind::Directory, tree, stats)
        } else {
            let name = source
                .path
                .file_name()
                .map(|name| name.as_bytes().to_vec())
                .unwrap_or_else(|| source.name.as_bytes().to_vec());
            let display = String::from_utf8_lossy(&name).into_owned();
            let previous = parent
                .as_ref()
                .and_then(|tree| tree.entries.iter().find(|entry| entry.name == name));
            self.chunks.reporter.found(Amount {
                bytes: meta.len(),
                items: 1,
            });
            let walked = self.file(&source.path, &meta, name.clone(), &display, previous)?;
            let (entries, stats) = match walked {
                Some((entry, stats)) => (vec![entry], stats),
                None => (Vec::new(), ComponentStats::default()),
            };
            (
                ComponentKind::File,
                self.store_tree(Tree::new(entries))?,
                stats,
            )
        };
        let root = (kind == ComponentKind::Directory).then(|| RootMetadata {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        });
        Ok(ComponentRecord {
            name: source.name.clone(),
            kind,
            source: source.path.display().to_string(),
            tree,
            stats,
            root,
            fixed_chunk_size: match self.chunking.base {
                Chunking::Fixed(size) => Some(size),
                Chunking::ContentDefined(_) => None,
            },
            sqlite_pages_per_chunk: self.chunking.sqlite_pages_per_chunk,
            // Set by the caller for a database it copied.
            sqlite_journal_mode: None,
        })
    }

    fn store_tree(&self, tree: Tree) -> Result<Id> {
        let bytes = tree.encode();
        let id = self.walk.repository.id_hasher().id(&bytes);
        self.walk.writer.add(BlobKind::Tree, id, &bytes)?;
        for recorder in self.walk.recorders.iter().flatten() {
            recorder.record(&id, &bytes);
        }
        Ok(id)
    }

    /// The parent snapshot's tree, if it can be read: from this host's
    /// walk cache (local, and the only place a write-only host can read
    /// it), else from the repository. A parent that cannot be read only
    /// means reading everything again.
    fn parent_tree(&self, id: &Id) -> Option<Tree> {
        self.walk
            .cached
            .and_then(|cached| cached.tree(id))
            .or_else(|| read_tree(self.walk.repository, self.walk.index, id).ok())
    }

    /// Whether the path `relative` to the component's root is left out of
    /// the walk (not in `--only`, or excluded), with all below it.
    fn skipped(&self, relative: &str) -> bool {
        self.only
            .is_some_and(|only| !covered(only, relative) && !leads_to(only, relative))
            || self
                .exclude
                .is_some_and(|exclude| exclude.is_match(relative))
    }

    fn directory(
        &self,
        path: &Path,
        relative: &str,
        parent: Option<&Tree>,
    ) -> Result<(Id, ComponentStats)> {
        let mut names = Vec::new();
        let mut files = HashSet::new();
        match fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(entry) => {
                            // The listing's own file type (no stat): a
                            // hint, not a decision.
                            if entry.file_type().is_ok_and(|kind| kind.is_file()) {
                                files.insert(entry.file_name());
                            }
                            names.push(entry.file_name());
                        }
                        Err(error) => {
                            self.problem(relative, format!("listing failed part way: {error}"))
                        }
                    }
                }
            }
            Err(error) => self.problem(relative, format!("cannot list directory: {error}")),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.retain(|name| !self.skipped(&join_relative(relative, &name.to_string_lossy())));
        // Small files cost a disk round trip each when read one by one; the
        // next window's are asked for while this window's are processed.
        // Files the parent snapshot already holds unchanged are not read at
        // all, so they are not asked for. Each name is joined to the path
        // and stat'ed once, as its window is looked ahead at, and walked
        // with that path and metadata.
        let windows: Vec<&[std::ffi::OsString]> = names.chunks(HINT_WINDOW).collect();
        let look_ahead = |window: Option<&&[std::ffi::OsString]>| -> Vec<Looked> {
            let Some(window) = window else {
                return Vec::new();
            };
            // With a parent, the component's warm-up has most of this
            // metadata in memory already (see `component`).
            let looked: Vec<Looked> = window
                .iter()
                .map(|name| {
                    let path = path.join(name);
                    let meta = fs::symlink_metadata(&path);
                    (path, meta)
                })
                .collect();
            self.chunks.reporter.found(found_files(&looked));
            let to_read: Vec<PathBuf> = window
                .iter()
                .zip(&looked)
                .filter(|(name, (_, meta))| {
                    files.contains(*name)
                        && !previous_entry(parent, name)
                            .zip(meta.as_ref().ok())
                            .is_some_and(|(previous, meta)| looks_unchanged(previous, meta))
                })
                .map(|(_, (path, _))| path.clone())
                .collect();
            read_ahead::hint_files(&to_read);
            looked
        };
        let mut looked = look_ahead(windows.first());
        let mut walked: Vec<Option<Walked>> = Vec::with_capacity(names.len());
        for (position, window) in windows.iter().enumerate() {
            let next = look_ahead(windows.get(position + 1));
            let current = std::mem::replace(&mut looked, next);
            walked.extend(self.entries(relative, parent, window, current)?);
        }
        let mut stats = ComponentStats::default();
        let mut entries = Vec::with_capacity(walked.len());
        for (entry, child) in walked.into_iter().flatten() {
            add_stats(&mut stats, &child);
            entries.push(entry);
        }
        Ok((self.store_tree(Tree::new(entries))?, stats))
    }

    /// Walks the entries `names` of a directory, whose paths and metadata
    /// `looked` holds in the same order, in parallel.
    fn entries(
        &self,
        relative: &str,
        parent: Option<&Tree>,
        names: &[std::ffi::OsString],
        looked: Vec<Looked>,
    ) -> Result<Vec<Option<Walked>>> {
        names
            .par_iter()
            .zip(looked)
            .map(|(name, (path, meta))| {
                let display = join_relative(relative, &name.to_string_lossy());
                let previous = previous_entry(parent, name);
                self.entry(&path, meta, name.as_bytes().to_vec(), &display, previous)
            })
            .collect()
    }

    fn entry(
        &self,
        path: &Path,
        meta: io::Result<Metadata>,
        name: Vec<u8>,
        relative: &str,
        previous: Option<&TreeEntry>,
    ) -> Result<Option<Walked>> {
        let meta = match meta {
            Ok(meta) => meta,
            Err(error) => {
                self.problem(relative, format!("cannot read metadata: {error}"));
                return Ok(None);
            }
        };
        let file_type = meta.file_type();
        if file_type.is_file() {
            let walked = self.file(path, &meta, name, relative, previous);
            self.chunks.reporter.file_done();
            return walked;
        }
        let mut entry = entry_from_metadata(name, &meta);
        let mut stats = ComponentStats::default();
        if file_type.is_dir() {
            // Its tree would lie this many levels below the root tree.
            let depth = relative.bytes().filter(|byte| *byte == b'/').count() + 1;
            if depth > MAX_TREE_DEPTH {
                self.problem(
                    relative,
                    format!("skipped: nests more than {MAX_TREE_DEPTH} directories deep, the most a reader accepts"),
                );
                return Ok(None);
            }
            let parent = previous
                .filter(|entry| entry.kind == EntryKind::Directory)
                .and_then(|entry| entry.subtree)
                .and_then(|id| self.parent_tree(&id));
            let (subtree, child) = self.directory(path, relative, parent.as_ref())?;
            entry.kind = EntryKind::Directory;
            entry.subtree = Some(subtree);
            add_stats(&mut stats, &child);
            stats.directories += 1;
        } else if file_type.is_symlink() {
            match fs::read_link(path) {
                Ok(target) => {
                    entry.kind = EntryKind::Symlink;
                    entry.target = Some(target.as_os_str().as_bytes().to_vec());
                    stats.symlinks += 1;
                }
                Err(error) => {
                    self.problem(relative, format!("cannot read symlink: {error}"));
                    return Ok(None);
                }
            }
        } else {
            self.problem(
                relative,
                "skipped: special file (device, socket or FIFO)".into(),
            );
            return Ok(None);
        }
        Ok(Some((entry, stats)))
    }

    fn file(
        &self,
        path: &Path,
        before: &Metadata,
        name: Vec<u8>,
        relative: &str,
        previous: Option<&TreeEntry>,
    ) -> Result<Option<Walked>> {
        // cairn never stores its own secrets: not the keys it was told of,
        // whatever name they are reached by.
        if self
            .walk
            .secret_keys
            .contains(&(before.dev(), before.ino()))
        {
            self.walk.secret_key_left_out(
                self.component,
                relative,
                "a cairn secret key file of this machine",
            );
            return Ok(None);
        }
        if let Some(entry) = taken_from_parent(self.walk.writer, before, &name, previous)? {
            self.walk.unchanged_files.fetch_add(1, Ordering::Relaxed);
            self.chunks.reporter.read(entry.size);
            let stats = file_stats(&entry);
            return Ok(Some((entry, stats)));
        }
        // O_NONBLOCK and O_NOFOLLOW: if the path was swapped for a FIFO or a
        // symlink since it was listed, opening must neither hang nor follow.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => file,
            Err(error) => {
                self.problem(relative, format!("cannot open: {error}"));
                return Ok(None);
            }
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                self.problem(
                    relative,
                    "skipped: replaced by a non-file while listed".into(),
                );
                return Ok(None);
            }
            Err(error) => {
                self.problem(relative, format!("cannot read metadata: {error}"));
                return Ok(None);
            }
        }
        if looks_like_secret_key(&file, before.len()) {
            self.walk
                .secret_key_left_out(self.component, relative, "it holds a cairn secret key");
            return Ok(None);
        }
        let chunking = chunking_of_file(&self.chunking, &file);
        let stored = self.chunks.store_file(
            &file,
            chunking,
            before.len(),
            previous.and_then(|entry| entry.chunks.as_deref()),
        );
        let StoredContent { chunks, hash, size } = match stored? {
            Ok(stored) => stored,
            Err(error) => {
                self.problem(relative, format!("read failed: {error}"));
                return Ok(None);
            }
        };
        let changed = match file.metadata() {
            Ok(after) => {
                after.len() != before.len()
                    || after.mtime() != before.mtime()
                    || after.mtime_nsec() != before.mtime_nsec()
                    || after.ctime() != before.ctime()
                    || after.ctime_nsec() != before.ctime_nsec()
                    || size != before.len()
            }
            Err(_) => true,
        };
        if changed {
            self.problem(relative, "changed while being read; stored as read".into());
        }
        let mut entry = entry_from_metadata(name, before);
        entry.kind = EntryKind::File;
        entry.size = size;
        entry.chunks = Some(chunks);
        entry.hash = Some(hash);
        let stats = file_stats(&entry);
        Ok(Some((entry, stats)))
    }
}

/// The regular files among a window's entries, and their bytes.
fn found_files(looked: &[Looked]) -> Amount {
    looked
        .iter()
        .filter_map(|(_, meta)| meta.as_ref().ok().filter(|meta| meta.is_file()))
        .fold(Amount::default(), |total, meta| Amount {
            bytes: total.bytes + meta.len(),
            items: total.items + 1,
        })
}

fn add_stats(total: &mut ComponentStats, part: &ComponentStats) {
    total.files += part.files;
    total.directories += part.directories;
    total.symlinks += part.symlinks;
    total.bytes += part.bytes;
    total.chunks += part.chunks;
}

#[cfg(test)]
mod tests {
    use super::super::prepare::prepare_components;
    use super::super::progress::Counting;
    use super::super::sources::exclusion_set;
    use super::super::testing::TestRepository;
    use super::*;

    /// Walks `components` once into a fresh repository, without a parent.
    fn walk(components: &[ComponentSource]) -> (ReadSources, Vec<Problem>, Counting) {
        let repository = TestRepository::new();
        let fan_out = FanOut::new(vec![repository.writer()]);
        let sink = Counting::default();
        let reporter = Reporter::new(&sink);
        let sources = Sources {
            components,
            prepared: prepare_components(components, None, &crate::progress::NoProgress).unwrap(),
            excludes: components
                .iter()
                .map(exclusion_set)
                .collect::<Result<_>>()
                .unwrap(),
        };
        let walk = Walk::new(
            &repository.repository,
            &repository.index,
            &fan_out,
            &reporter,
            HashSet::new(),
        );
        let read = walk
            .components(ChunkerParams::DEFAULT, &sources, None)
            .unwrap();
        reporter.flush();
        let tallies = walk.into_tallies();
        let (problems, unchanged) = (tallies.problems, tallies.unchanged_files);
        assert_eq!(unchanged, 0, "no parent, nothing unchanged");
        for finished in fan_out.finish() {
            finished.unwrap();
        }
        (read, problems, sink)
    }

    fn tree(root: &Path, files: &[(&str, &[u8])]) {
        for (path, content) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
    }

    #[test]
    fn only_and_excludes_leave_paths_out_with_everything_below_them() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("app");
        tree(
            &root,
            &[
                ("etc/app.conf", b"conf"),
                ("etc/other.conf", b"other"),
                ("var/log/a.log", b"log"),
                ("var/cache/blob.tmp", b"tmp"),
                ("var/cache/keep", b"keep"),
                ("home/user/notes", b"notes"),
            ],
        );
        let mut source = ComponentSource::new("app", &root);
        source.only = Some(["etc/app.conf", "var"].map(String::from).into());
        source.exclude = vec!["*.tmp".into(), "var/log".into()];
        let (read, problems, progress) = walk(&[source]);
        assert!(problems.is_empty(), "{problems:?}");
        let stats = &read.components[0].stats;
        // etc/app.conf and var/cache/keep.
        assert_eq!(stats.files, 2);
        assert_eq!(stats.bytes, 8);
        assert_eq!(progress.expected_files.load(Ordering::Relaxed), 2);
        assert_eq!(progress.done_bytes.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn what_cannot_be_stored_is_a_problem_and_the_rest_is_stored() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("app");
        tree(&root, &[("a", b"first"), ("b", b"second")]);
        let fifo = std::ffi::CString::new(root.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
        let (read, problems, progress) = walk(&[ComponentSource::new("app", &root)]);
        let stats = &read.components[0].stats;
        assert_eq!((stats.files, stats.symlinks, stats.bytes), (2, 1, 11));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "pipe");
        assert!(problems[0].problem.contains("special file"));
        assert_eq!(progress.done_files.load(Ordering::Relaxed), 2);
        assert_eq!(*progress.components.lock().unwrap(), ["app"]);
    }

    #[test]
    fn a_component_that_could_not_be_prepared_is_left_out_with_its_reason() {
        let directory = tempfile::tempdir().unwrap();
        let mut failing = ComponentSource::new("dump", "");
        failing.kind = SourceKind::Command("exit 4".into());
        failing.critical = true;
        tree(directory.path(), &[("file", b"content")]);
        let file = ComponentSource::new("file", directory.path().join("file"));
        let (read, problems, _) = walk(&[failing, file]);
        assert_eq!(read.failed_components, [("dump".to_string(), true)]);
        assert_eq!(read.components.len(), 1);
        assert_eq!(read.components[0].kind, ComponentKind::File);
        assert_eq!(read.components[0].stats.files, 1);
        assert_eq!(problems[0].component, "dump");
        assert!(problems[0].problem.contains("status 4"), "{problems:?}");
    }
}
