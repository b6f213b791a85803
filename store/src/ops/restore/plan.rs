//! Planning a restore: what to create, update, delete and leave alone in
//! the target, and how many bytes must come from the repository.
//!
//! For every selected entry of the snapshot the plan looks at the target:
//! a missing path is created; an existing file is read, cut into chunks and
//! hashed with the repository's chunker, so an identical file is left alone
//! (or only has its metadata fixed) and a changed one is rebuilt from the
//! chunks it still shares with the snapshot plus only the missing ones;
//! something of the wrong type is replaced. With `delete`, paths in the
//! target that the snapshot lacks (within the selection) are deleted.
//! Leftover temporary files of an interrupted restore are always removed.
//! A directory component whose destination does not exist is planned to be
//! built in a staging directory beside it (its leftovers there removed
//! too), unless it nests with another component.
//! Planning reads the target but never writes to it.
//!
//! A directory component's trees are read level by level before planning,
//! each level's in pack spans with several reads in flight (over object
//! storage a tree read one at a time costs a round trip per directory).
//! A tree that prefetch could not read or check is read again, on its own,
//! when planning reaches it; the failed read is kept in the plan for the
//! restore's report even when the second read succeeds.

use super::fetch::{FetchCounters, Sources, fetch_blobs};
use super::place::{MetadataPolicy, TEMPORARY_PREFIX, running_as_root};
use super::select::{PathFilter, PathVerdict};
use crate::error::{Result, StoreError};
use crate::format::chunking::FileChunking;
use crate::format::manifest::ChunkerRecord;
use crate::format::manifest::{ComponentKind, ComponentRecord};
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::{Id, IdHasher};
use crate::index::IndexCache;
use crate::ops::common::{chunking_of_file, join_relative};
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk, entry_budget};
use crate::repository::Repository;
use cairn_chunker::ChunkStream;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing there yet.
    Create,
    /// A file whose content differs; rebuilt from local and fetched chunks.
    Update,
    /// Something of another type is there; it is removed first.
    Replace,
    /// Same content; only mode, times or owner differ.
    Metadata,
    /// Already as the snapshot says.
    Unchanged,
}

/// A chunk already present in the target's old copy of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalChunk {
    pub offset: u64,
    pub length: u32,
}

#[derive(Clone, Debug)]
pub struct PlannedEntry {
    /// Path inside the component, `/`-separated.
    pub relative: String,
    pub destination: PathBuf,
    pub entry: TreeEntry,
    pub action: Action,
    /// For an update: chunks the old file already holds.
    pub local_chunks: HashMap<Id, LocalChunk>,
    /// Bytes of this file to come from the repository and from the target.
    pub fetch_bytes: u64,
    pub reuse_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub relative: String,
    pub destination: PathBuf,
    pub is_directory: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub create: u64,
    pub update: u64,
    pub metadata: u64,
    pub delete: u64,
    pub unchanged: u64,
    pub bytes_to_fetch: u64,
    pub bytes_reused: u64,
}

#[derive(Clone, Debug)]
pub struct ComponentPlan {
    pub name: String,
    pub kind: ComponentKind,
    pub destination: PathBuf,
    /// Directories before their contents.
    pub entries: Vec<PlannedEntry>,
    /// Paths to remove: replaced entries' old selves and, with `delete`,
    /// extras. Parents before children.
    pub deletions: Vec<Deletion>,
    /// Temporary files of an interrupted restore, removed silently.
    pub stale_temporaries: Vec<PathBuf>,
    pub counts: PlanCounts,
    /// Trees that could not be read: (path, error).
    pub unreadable: Vec<(String, String)>,
    /// Files needing a chunk that no index file lists: (path, chunk).
    pub missing_chunks: Vec<(String, Id)>,
    /// Tree reads that failed or failed their check during prefetch and were
    /// read again: how many, and the first few whys. Reported by the
    /// restore as the main repository's failures.
    pub prefetch_failures: (u64, Vec<String>),
    /// A directory component's own metadata, applied to the destination.
    pub root: Option<crate::format::manifest::RootMetadata>,
    /// Where a directory component whose destination does not exist yet is
    /// built: a temporary directory beside the destination, renamed into
    /// place once everything in it is written and synced. Its files are
    /// written under their final names (no rename each), and the component
    /// appears whole or not at all. Entries' `destination`s stay the final
    /// paths; [`ComponentPlan::written_at`] maps them into here.
    pub staging: Option<PathBuf>,
    /// Whether the snapshot's owners are applied (as root, with
    /// `--same-owner`); otherwise what the restore creates belongs to
    /// whoever runs it and existing owners are left alone.
    pub apply_owners: bool,
}

impl ComponentPlan {
    /// Where the entry planned for `destination` is written: the path
    /// itself, or its place in the staging directory.
    pub fn written_at<'p>(&self, destination: &'p Path) -> std::borrow::Cow<'p, Path> {
        match (&self.staging, destination.strip_prefix(&self.destination)) {
            (Some(staging), Ok(inside)) => std::borrow::Cow::Owned(staging.join(inside)),
            _ => std::borrow::Cow::Borrowed(destination),
        }
    }

    /// Relative paths of everything the restore will overwrite or delete.
    pub fn touched_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .entries
            .iter()
            .filter(|item| {
                matches!(
                    item.action,
                    Action::Update | Action::Replace | Action::Metadata
                )
            })
            .filter(|item| {
                item.entry.kind != EntryKind::Directory || item.action == Action::Replace
            })
            .map(|item| item.relative.clone())
            .chain(
                self.deletions
                    .iter()
                    .map(|deletion| deletion.relative.clone()),
            )
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }
}

pub struct Planner<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
    /// The snapshot's content-defined chunking.
    pub chunker: ChunkerRecord,
    pub sources: &'a Sources<'a>,
    pub filter: &'a PathFilter,
    pub delete: bool,
    /// Which of the snapshot's owners and mode bits are applied.
    pub metadata: MetadataPolicy,
}

fn metadata_matches(entry: &TreeEntry, meta: &Metadata, owners: bool) -> bool {
    let owner_matches =
        !(owners && running_as_root()) || (meta.uid() == entry.uid && meta.gid() == entry.gid);
    meta.mode() & 0o7777 == entry.mode
        && meta.mtime() == entry.mtime
        && meta.mtime_nsec() == i64::from(entry.mtime_nanos)
        && owner_matches
}

/// What the target holds at one path: its chunks and whole hash.
struct Scanned {
    hash: Id,
    chunks: HashMap<Id, LocalChunk>,
}

fn scan_file(path: &Path, chunking: FileChunking, hasher: IdHasher) -> std::io::Result<Scanned> {
    let file = File::open(path)?;
    let length = file.metadata()?.len();
    let mut stream =
        ChunkStream::with_expected_length(&file, chunking_of_file(&chunking, &file), length)
            .with_id_hasher(hasher);
    let mut hasher = hasher.hasher();
    let mut chunks = HashMap::new();
    while let Some(batch) = stream.next_batch()? {
        hasher.update(batch.data);
        for chunk in &batch.chunks {
            chunks.entry(chunk.id).or_insert(LocalChunk {
                offset: chunk.stream_offset,
                length: chunk.range.len() as u32,
            });
        }
    }
    Ok(Scanned {
        hash: Id(*hasher.finalize().as_bytes()),
        chunks,
    })
}

/// Whether a name is one of a restore's temporaries (a file, a symlink or
/// a staging directory).
fn is_temporary(name: &OsStr) -> bool {
    name.as_bytes().starts_with(TEMPORARY_PREFIX.as_bytes())
}

/// Temporaries an interrupted restore left beside `destination` (its
/// staging directory, above all), found in the destination's parent.
fn stale_temporaries_beside(destination: &Path) -> Vec<PathBuf> {
    let Some(Ok(listing)) = destination.parent().map(fs::read_dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter(|item| is_temporary(&item.file_name()))
        .map(|item| item.path())
        .collect()
}

impl Planner<'_> {
    /// Plans one component restored to `destination`. With `may_stage`, a
    /// directory component whose destination does not exist is built in a
    /// staging directory beside it (see [`ComponentPlan::staging`]); the
    /// caller forbids it where another component lands inside this one or
    /// this one inside another.
    pub fn plan_component(
        &self,
        component: &ComponentRecord,
        destination: &Path,
        may_stage: bool,
    ) -> Result<ComponentPlan> {
        let mut plan = ComponentPlan {
            name: component.name.clone(),
            kind: component.kind,
            destination: destination.to_path_buf(),
            entries: Vec::new(),
            deletions: Vec::new(),
            stale_temporaries: Vec::new(),
            counts: PlanCounts::default(),
            unreadable: Vec::new(),
            missing_chunks: Vec::new(),
            prefetch_failures: (0, Vec::new()),
            root: component.root.map(|root| self.metadata.root(root)),
            staging: None,
            apply_owners: self.metadata.same_owner,
        };
        match component.kind {
            ComponentKind::Directory => {
                match fs::symlink_metadata(destination) {
                    Ok(meta) if !meta.is_dir() => {
                        return Err(StoreError::Invalid(format!(
                            "restore destination {} of component {} exists and is not a directory",
                            destination.display(),
                            component.name
                        )));
                    }
                    Err(error) if may_stage && error.kind() == std::io::ErrorKind::NotFound => {
                        plan.staging = Some(super::place::temporary_beside(destination)?);
                        plan.stale_temporaries = stale_temporaries_beside(destination);
                    }
                    _ => {}
                }
                let trees = self.prefetch_trees(&component.tree, &mut plan);
                let budget = entry_budget(&component.stats);
                self.plan_directory(&component.tree, destination, &trees, budget, &mut plan);
            }
            ComponentKind::File | ComponentKind::Sqlite | ComponentKind::Command => {
                let tree = self
                    .sources
                    .read_tree(self.repository, self.index, &component.tree)?;
                if tree.entries.len() > 1
                    || tree
                        .entries
                        .iter()
                        .any(|entry| entry.kind != EntryKind::File)
                {
                    return Err(StoreError::corrupt(
                        format!("tree {}", component.tree),
                        format!(
                            "file component {} must hold exactly one file",
                            component.name
                        ),
                    ));
                }
                for entry in tree.entries {
                    let relative = entry.display_name();
                    if self.filter.judge(&relative, false, PathVerdict::Traverse)
                        == PathVerdict::Selected
                    {
                        self.push_entry(entry, relative, destination.to_path_buf(), &mut plan);
                    }
                }
            }
        }
        // The target's old copy is cut as the snapshot's was, or none of its
        // chunks would match.
        let chunking = component.chunking(&self.chunker);
        self.compare_files(&mut plan, chunking)?;
        for item in &plan.entries {
            let counts = &mut plan.counts;
            match item.action {
                Action::Create => counts.create += 1,
                Action::Update | Action::Replace => counts.update += 1,
                Action::Metadata => counts.metadata += 1,
                Action::Unchanged => counts.unchanged += 1,
            }
            counts.bytes_to_fetch += item.fetch_bytes;
            counts.bytes_reused += item.reuse_bytes;
        }
        plan.counts.delete = plan.deletions.len() as u64;
        Ok(plan)
    }

    fn push_entry(
        &self,
        mut entry: TreeEntry,
        relative: String,
        destination: PathBuf,
        plan: &mut ComponentPlan,
    ) {
        self.metadata.apply(&mut entry);
        // Nothing exists below a destination that does not exist: 20,000
        // lookups of missing paths are spared.
        let existing = if plan.staging.is_some() {
            None
        } else {
            fs::symlink_metadata(&destination).ok()
        };
        let action = match (&existing, entry.kind) {
            (None, _) => Action::Create,
            (Some(meta), EntryKind::Directory) if meta.is_dir() => {
                if metadata_matches(&entry, meta, self.metadata.same_owner) {
                    Action::Unchanged
                } else {
                    Action::Metadata
                }
            }
            (Some(meta), EntryKind::File) if meta.is_file() => Action::Update, // refined by compare_files
            (Some(meta), EntryKind::Symlink) if meta.file_type().is_symlink() => {
                let same = fs::read_link(&destination)
                    .map(|target| {
                        target.as_os_str().as_bytes() == entry.target.as_deref().unwrap_or_default()
                    })
                    .unwrap_or(false);
                if same {
                    Action::Unchanged
                } else {
                    Action::Replace
                }
            }
            (Some(_), _) => Action::Replace,
        };
        if action == Action::Replace {
            plan.deletions.push(Deletion {
                relative: relative.clone(),
                destination: destination.clone(),
                is_directory: existing.as_ref().is_some_and(|meta| meta.is_dir()),
            });
        }
        plan.entries.push(PlannedEntry {
            relative,
            destination,
            entry,
            action,
            local_chunks: HashMap::new(),
            fetch_bytes: 0,
            reuse_bytes: 0,
        });
    }

    /// Plans the directory tree `tree_id` at `directory` and everything
    /// below it, in path order, through the one tree walker.
    fn plan_directory(
        &self,
        tree_id: &Id,
        directory: &Path,
        trees: &HashMap<Id, Tree>,
        budget: u64,
        plan: &mut ComponentPlan,
    ) {
        let mut planning = DirectoryPlanning {
            planner: self,
            trees,
            plan,
            next: Some(Directory {
                relative: String::new(),
                destination: directory.to_path_buf(),
                verdict: PathVerdict::Traverse,
                position: None,
            }),
            open: Vec::new(),
        };
        let walked = TreeWalk::new()
            .with_paths()
            .in_order()
            .within(budget)
            .walk([(*tree_id, String::new())], &mut planning);
        match walked {
            Ok(_) => {}
            Err(never) => match never {},
        }
    }

    /// Reads the trees below `root` that the selection reaches, a level at
    /// a time. Trees that cannot be read or checked are left out (the
    /// planner reads them again) and the failures kept in `plan`.
    fn prefetch_trees(&self, root: &Id, plan: &mut ComponentPlan) -> HashMap<Id, Tree> {
        let counters = FetchCounters::default();
        let mut trees: HashMap<Id, Tree> = HashMap::new();
        let mut level = vec![(*root, String::new(), PathVerdict::Traverse)];
        while !level.is_empty() {
            let mut wanted = Vec::new();
            for (id, _, _) in &level {
                if let Ok(Some(location)) = self.index.lookup(id) {
                    wanted.push((location.pack, location.entry));
                }
            }
            let blobs = fetch_blobs(self.repository, wanted, &counters, true);
            let mut next = Vec::new();
            for (id, relative, verdict) in level {
                if trees.contains_key(&id) {
                    continue;
                }
                let Some(raw) = blobs.get(&id) else { continue };
                let tree = match Tree::decode(raw, &format!("tree {id}")) {
                    Ok(tree) => tree,
                    Err(error) => {
                        counters.note_failure(error.to_string());
                        continue;
                    }
                };
                for entry in &tree.entries {
                    let Some(subtree) =
                        entry.subtree.filter(|_| entry.kind == EntryKind::Directory)
                    else {
                        continue;
                    };
                    let child_relative = join_relative(&relative, &entry.display_name());
                    let child_verdict = self.filter.judge(&child_relative, true, verdict);
                    if child_verdict != PathVerdict::Skipped && !trees.contains_key(&subtree) {
                        next.push((subtree, child_relative, child_verdict));
                    }
                }
                trees.insert(id, tree);
            }
            level = next;
        }
        plan.prefetch_failures = counters.into_failures();
        trees
    }

    /// Finds what the target holds that the snapshot does not.
    fn plan_extras(
        &self,
        relative: &str,
        directory: &Path,
        verdict: PathVerdict,
        names: &HashSet<Vec<u8>>,
        plan: &mut ComponentPlan,
    ) {
        if plan.staging.is_some() {
            return;
        }
        let Ok(listing) = fs::read_dir(directory) else {
            return;
        };
        for item in listing.flatten() {
            let name = item.file_name();
            if is_temporary(&name) {
                plan.stale_temporaries.push(item.path());
                continue;
            }
            if !self.delete || names.contains(name.as_bytes()) {
                continue;
            }
            let child_relative = join_relative(relative, &name.to_string_lossy());
            let is_directory = item.file_type().map(|kind| kind.is_dir()).unwrap_or(false);
            if self.filter.judge(&child_relative, is_directory, verdict) == PathVerdict::Selected {
                plan.deletions.push(Deletion {
                    relative: child_relative,
                    destination: item.path(),
                    is_directory,
                });
            }
        }
    }

    /// Reads every existing file the plan would update and decides
    /// between unchanged, metadata-only and a real update; counts the bytes
    /// each written file needs from the repository and from the target, and
    /// notes chunks no index lists.
    fn compare_files(&self, plan: &mut ComponentPlan, chunking: FileChunking) -> Result<()> {
        let index = self.index;
        let sources = self.sources;
        let hasher = self.repository.id_hasher();
        let missing: Vec<(String, Id)> = plan
            .entries
            .par_iter_mut()
            .filter(|item| item.entry.kind == EntryKind::File && item.action != Action::Unchanged)
            .map(|item| -> Result<Vec<(String, Id)>> {
                let scanned = if item.action == Action::Update {
                    scan_file(&item.destination, chunking, hasher).ok()
                } else {
                    None
                };
                if let Some(scanned) = &scanned
                    && Some(scanned.hash) == item.entry.hash
                {
                    let meta = fs::symlink_metadata(&item.destination).map_err(|error| {
                        StoreError::io(format!("reading {}", item.destination.display()), error)
                    })?;
                    item.action = if metadata_matches(&item.entry, &meta, self.metadata.same_owner)
                    {
                        Action::Unchanged
                    } else {
                        Action::Metadata
                    };
                    return Ok(Vec::new());
                }
                let mut missing = Vec::new();
                let mut counted = HashSet::new();
                for chunk in item.entry.chunks.as_deref().unwrap_or_default() {
                    if !counted.insert(*chunk) {
                        continue;
                    }
                    if let Some(local) = scanned.as_ref().and_then(|s| s.chunks.get(chunk)) {
                        item.reuse_bytes += u64::from(local.length);
                        item.local_chunks.insert(*chunk, *local);
                    } else if let Some(location) = index.lookup(chunk)? {
                        item.fetch_bytes += u64::from(location.entry.raw_length);
                    } else if sources.lists(chunk) {
                        // Fetched from another repository when written.
                    } else {
                        missing.push((item.relative.clone(), *chunk));
                    }
                }
                Ok(missing)
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        plan.missing_chunks = missing;
        Ok(())
    }
}
/// A directory the walk is about to read or is inside: where it lands,
/// its path, the selection's verdict on it, and where its own entry stands
/// in the plan (none for the component's root).
struct Directory {
    relative: String,
    destination: PathBuf,
    verdict: PathVerdict,
    position: Option<usize>,
}

/// The planner as a visitor of the walk: each entry the selection keeps is
/// planned in path order; once a directory's tree is done, what the target
/// has there and the snapshot does not is planned (`plan_extras`), and a
/// directory kept only to reach selected entries below it is dropped if
/// nothing below was selected. A tree that cannot be read is noted, not
/// fatal: the rest of the component is still planned.
struct DirectoryPlanning<'p, 'a> {
    planner: &'p Planner<'a>,
    trees: &'p HashMap<Id, Tree>,
    plan: &'p mut ComponentPlan,
    /// The directory whose tree the walk reads next.
    next: Option<Directory>,
    /// The directories being planned, innermost last, with the names their
    /// trees hold.
    open: Vec<(Directory, HashSet<Vec<u8>>)>,
}

impl DirectoryPlanning<'_, '_> {
    fn subtree_done(&mut self, directory: &Directory) {
        let Some(position) = directory.position else {
            return;
        };
        // A directory kept only to reach selected entries below it is not
        // worth creating when nothing below was selected.
        if directory.verdict == PathVerdict::Traverse && self.plan.entries.len() == position + 1 {
            self.plan.entries.truncate(position);
            self.plan
                .deletions
                .retain(|deletion| deletion.relative != directory.relative);
        }
    }
}

impl DirectoryPlanning<'_, '_> {
    /// Notes `directory`'s tree as one that cannot be restored, and why.
    fn unreadable(&mut self, directory: &Directory, error: StoreError) {
        let shown = if directory.relative.is_empty() {
            "/"
        } else {
            directory.relative.as_str()
        };
        self.plan.unreadable.push((shown.into(), error.to_string()));
        self.subtree_done(directory);
    }
}

impl TreeVisitor for DirectoryPlanning<'_, '_> {
    type Error = std::convert::Infallible;

    fn read(&mut self, tree_id: &Id, _: &str) -> std::result::Result<Option<Tree>, Self::Error> {
        let Some(directory) = self.next.take() else {
            return Ok(None);
        };
        let read = match self.trees.get(tree_id) {
            Some(tree) => Ok(tree.clone()),
            None => {
                self.planner
                    .sources
                    .read_tree(self.planner.repository, self.planner.index, tree_id)
            }
        };
        match read {
            Ok(tree) => {
                self.open.push((directory, HashSet::new()));
                Ok(Some(tree))
            }
            Err(error) => {
                self.unreadable(&directory, error);
                Ok(None)
            }
        }
    }

    /// A tree the walk will not go into is left out as an unreadable one.
    fn refused(
        &mut self,
        tree_id: &Id,
        path: &str,
        refusal: Refusal,
    ) -> std::result::Result<(), Self::Error> {
        if let Some(directory) = self.next.take() {
            self.unreadable(&directory, refusal.error(tree_id, path));
        }
        Ok(())
    }

    fn entry(&mut self, entry: &TreeEntry, path: &str) -> std::result::Result<Flow, Self::Error> {
        let Some((parent, names)) = self.open.last_mut() else {
            return Ok(Flow::SkipSubtree);
        };
        names.insert(entry.name.clone());
        let is_directory = entry.kind == EntryKind::Directory;
        let verdict = self
            .planner
            .filter
            .judge(path, is_directory, parent.verdict);
        if verdict == PathVerdict::Skipped {
            return Ok(Flow::SkipSubtree);
        }
        let destination = parent.destination.join(OsStr::from_bytes(&entry.name));
        let position = self.plan.entries.len();
        self.planner.push_entry(
            entry.clone(),
            path.to_string(),
            destination.clone(),
            self.plan,
        );
        if is_directory && entry.subtree.is_some() {
            self.next = Some(Directory {
                relative: path.to_string(),
                destination,
                verdict,
                position: Some(position),
            });
            Ok(Flow::Continue)
        } else {
            Ok(Flow::SkipSubtree)
        }
    }

    fn leave(&mut self, _: &Id, _: &str) -> std::result::Result<(), Self::Error> {
        if let Some((directory, names)) = self.open.pop() {
            self.planner.plan_extras(
                &directory.relative,
                &directory.destination,
                directory.verdict,
                &names,
                self.plan,
            );
            self.subtree_done(&directory);
        }
        Ok(())
    }
}
