//! Diff: what changed between two snapshots, or between a snapshot's
//! component and a live directory, file by file.
//!
//! The comparison walks the two sides together, one directory at a time:
//! 1. Push each component's pair of root trees (a component on one side
//!    only pairs with nothing).
//! 2. Pop a pair. Two snapshot trees with the same id are equal, bytes and
//!    all below them (a tree is named by the hash of its encoding, which
//!    names its subtrees' and files' hashes): pass them by unread. This is
//!    what makes the diff of two nights cost the directories that changed,
//!    not the whole snapshot ([`Diff::trees_read`] counts what was read).
//! 3. Otherwise list both sides (read the tree, or read the live
//!    directory), merge the two sorted lists by name, and report each name:
//!    on one side only (added or removed), content changed (file hash or
//!    symlink target differs, or the kind changed), or metadata only
//!    (mode, owner, or a file's or symlink's mtime). A directory's mtime
//!    is not reported: it changes whenever its entries do, which the diff
//!    already shows. Directories present on either side are pushed as a
//!    pair (with nothing on the side that lacks them, so everything below
//!    an added directory is listed as added).
//!
//! A live file's content is taken as unchanged when its size and mtime
//! equal the snapshot's (the rule a backup uses to skip reading it);
//! otherwise it is read and hashed with the repository's id hasher and
//! compared with the recorded hash, so a touched but unchanged file is a
//! metadata change, not a content change.
//!
//! Bounds: a pair deeper than [`MAX_TREE_DEPTH`] is refused, and the
//! entries listed may not exceed the sum of the two components' entry
//! budgets ([`entry_budget`]), as every other walk of trees.
//!
//! Reads only; never writes to the repository or to the filesystem.

use crate::error::{Result, StoreError};
use crate::format::manifest::{ComponentRecord, RootMetadata, SnapshotBody};
use crate::format::tree::{EntryKind, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::join_relative;
use crate::ops::walk::{MAX_TREE_DEPTH, Refusal, entry_budget, read_tree};
use crate::repository::Repository;
use serde::Serialize;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How an entry differs between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only on the newer side.
    Added,
    /// Only on the older side.
    Removed,
    /// Content differs (or the entry's kind does).
    Changed,
    /// Same content; mode, owner or mtime differ.
    Metadata,
}

/// One entry that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub component: String,
    /// `component/path/inside` (a single-file component's file is the
    /// component's name), as `ls` shows it.
    pub path: String,
    pub change: ChangeKind,
    /// The entry's kind on the newer side, or the older when removed.
    pub kind: EntryKind,
    /// Size on the older side (files; 0 for others), absent when added.
    pub old_size: Option<u64>,
    /// Size on the newer side, absent when removed.
    pub new_size: Option<u64>,
    /// For metadata changes: which of `mode`, `owner`, `mtime` differ.
    pub fields: Vec<&'static str>,
}

/// Counts and bytes of one kind of change, files only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChangeTotals {
    pub added_files: u64,
    pub added_bytes: u64,
    pub removed_files: u64,
    pub removed_bytes: u64,
    pub changed_files: u64,
    /// Size of the changed files on the newer side.
    pub changed_bytes: u64,
    pub metadata_only: u64,
}

/// What a diff found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    /// Every difference, sorted by path.
    pub changes: Vec<Change>,
    /// Components present only on the newer / older side.
    pub components_added: Vec<String>,
    pub components_removed: Vec<String>,
    pub totals: ChangeTotals,
    /// Trees read from the repository: an unchanged subtree is not read.
    pub trees_read: u64,
}

/// Where the newer side of a directory comes from.
#[derive(Clone, Debug)]
enum Newer {
    Tree(Id),
    Directory(PathBuf),
    /// A single-file component compared with a live file: the file's path
    /// and the name the snapshot's root tree gives it.
    File(PathBuf, Vec<u8>),
}

/// One pair of directories to compare.
struct Pair {
    component: usize,
    older: Option<Id>,
    newer: Option<Newer>,
    path: String,
    depth: usize,
}

/// An entry of the newer side, with where its directory's contents are.
struct NewEntry {
    entry: TreeEntry,
    /// The live file or directory behind the entry (live side only).
    live: Option<PathBuf>,
}

struct Differ<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    /// Component names, and whether each holds a single file.
    components: Vec<(String, bool)>,
    diff: Diff,
    budget: u64,
    entries: u64,
}

/// The differences from snapshot `older` to snapshot `newer`.
pub fn diff_snapshots(
    repository: &Repository,
    index: &dyn IndexCache,
    older: &SnapshotBody,
    newer: &SnapshotBody,
) -> Result<Diff> {
    let mut differ = Differ::new(repository, index);
    let mut pairs = Vec::new();
    for component in &older.components {
        let other = newer.component(&component.name);
        if other.is_none() {
            differ.diff.components_removed.push(component.name.clone());
        }
        let at = differ.add_component(component, other);
        if let Some(other) = other {
            differ.root_metadata(at, component.root.as_ref(), other.root.as_ref());
        }
        pairs.push(Pair {
            component: at,
            older: Some(component.tree),
            newer: other.map(|other| Newer::Tree(other.tree)),
            path: String::new(),
            depth: 0,
        });
    }
    for component in &newer.components {
        if older.component(&component.name).is_none() {
            differ.diff.components_added.push(component.name.clone());
            let at = differ.add_component(component, None);
            pairs.push(Pair {
                component: at,
                older: None,
                newer: Some(Newer::Tree(component.tree)),
                path: String::new(),
                depth: 0,
            });
        }
    }
    differ.run(pairs)
}

/// The differences from component `component` of snapshot `older` to the
/// live file or directory at `live` (what changed since the backup).
pub fn diff_live(
    repository: &Repository,
    index: &dyn IndexCache,
    older: &SnapshotBody,
    component: &str,
    snapshot: &str,
    live: &Path,
) -> Result<Diff> {
    let record = older
        .component(component)
        .ok_or_else(|| StoreError::ComponentNotFound {
            name: component.into(),
            snapshot: snapshot.into(),
            existing: older.component_names(),
        })?;
    let metadata = std::fs::symlink_metadata(live)
        .map_err(|error| StoreError::io(format!("reading {}", live.display()), error))?;
    let mut differ = Differ::new(repository, index);
    let at = differ.add_component(record, Some(record));
    let newer = if record.kind.is_single_file() {
        if !metadata.is_file() {
            return Err(StoreError::Invalid(format!(
                "{} is not a file, and component {component} holds one file",
                live.display()
            )));
        }
        // The root tree's one entry names the file; the live file is
        // compared with it under that name, whatever it is called now.
        let tree = read_tree(repository, index, &record.tree)?;
        differ.diff.trees_read += 1;
        let name = tree
            .entries
            .first()
            .map(|entry| entry.name.clone())
            .unwrap_or_default();
        Newer::File(live.to_path_buf(), name)
    } else {
        if !metadata.is_dir() {
            return Err(StoreError::Invalid(format!(
                "{} is not a directory, and component {component} is one",
                live.display()
            )));
        }
        differ.root_metadata(at, record.root.as_ref(), Some(&root_of(&metadata)));
        Newer::Directory(live.to_path_buf())
    };
    differ.run(vec![Pair {
        component: at,
        older: Some(record.tree),
        newer: Some(newer),
        path: String::new(),
        depth: 0,
    }])
}

fn root_of(metadata: &std::fs::Metadata) -> RootMetadata {
    RootMetadata {
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        mtime: metadata.mtime(),
        mtime_nanos: u32::try_from(metadata.mtime_nsec()).unwrap_or(0),
    }
}

impl<'a> Differ<'a> {
    fn new(repository: &'a Repository, index: &'a dyn IndexCache) -> Self {
        Differ {
            repository,
            index,
            components: Vec::new(),
            diff: Diff::default(),
            budget: 0,
            entries: 0,
        }
    }

    fn add_component(
        &mut self,
        record: &ComponentRecord,
        other: Option<&ComponentRecord>,
    ) -> usize {
        self.budget = self
            .budget
            .saturating_add(entry_budget(&record.stats))
            .saturating_add(other.map_or(0, |other| entry_budget(&other.stats)));
        self.components
            .push((record.name.clone(), record.kind.is_single_file()));
        self.components.len() - 1
    }

    /// A directory component's own mode or owner changed (its mtime is
    /// not reported, as for every directory).
    fn root_metadata(
        &mut self,
        component: usize,
        older: Option<&RootMetadata>,
        newer: Option<&RootMetadata>,
    ) {
        let (Some(older), Some(newer)) = (older, newer) else {
            return;
        };
        let mut fields = Vec::new();
        if older.mode != newer.mode {
            fields.push("mode");
        }
        if (older.uid, older.gid) != (newer.uid, newer.gid) {
            fields.push("owner");
        }
        if !fields.is_empty() {
            let name = self.components[component].0.clone();
            self.diff.totals.metadata_only += 1;
            self.diff.changes.push(Change {
                component: name.clone(),
                path: name,
                change: ChangeKind::Metadata,
                kind: EntryKind::Directory,
                old_size: Some(0),
                new_size: Some(0),
                fields,
            });
        }
    }

    fn run(mut self, mut pairs: Vec<Pair>) -> Result<Diff> {
        pairs.reverse();
        while let Some(pair) = pairs.pop() {
            if let (Some(older), Some(Newer::Tree(newer))) = (&pair.older, &pair.newer)
                && older == newer
            {
                continue;
            }
            if pair.depth > MAX_TREE_DEPTH {
                return Err(self.refuse(&pair, Refusal::TooDeep));
            }
            let older = match pair.older {
                Some(id) => {
                    self.diff.trees_read += 1;
                    read_tree(self.repository, self.index, &id)?.entries
                }
                None => Vec::new(),
            };
            let newer = match &pair.newer {
                Some(newer) => self.list_newer(newer)?,
                None => Vec::new(),
            };
            self.entries += (older.len() + newer.len()) as u64;
            if self.entries > self.budget {
                return Err(self.refuse(&pair, Refusal::OverBudget(self.budget)));
            }
            self.merge(&pair, older, newer, &mut pairs)?;
        }
        let mut diff = self.diff;
        diff.changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(diff)
    }

    /// Merges two name-sorted listings, reporting each difference and
    /// pushing the directory pairs below.
    fn merge(
        &mut self,
        pair: &Pair,
        older: Vec<TreeEntry>,
        newer: Vec<NewEntry>,
        pairs: &mut Vec<Pair>,
    ) -> Result<()> {
        let mut older = older.into_iter().peekable();
        let mut newer = newer.into_iter().peekable();
        let mut below = Vec::new();
        loop {
            let order = match (older.peek(), newer.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(old), Some(new)) => old.name.cmp(&new.entry.name),
            };
            let (old, new) = match order {
                std::cmp::Ordering::Less => (older.next(), None),
                std::cmp::Ordering::Greater => (None, newer.next()),
                std::cmp::Ordering::Equal => (older.next(), newer.next()),
            };
            let name = old
                .as_ref()
                .map(|entry| entry.display_name())
                .or_else(|| new.as_ref().map(|entry| entry.entry.display_name()))
                .unwrap_or_default();
            let path = join_relative(&pair.path, &name);
            match (&old, &new) {
                (Some(old), None) => {
                    self.report(pair, &path, ChangeKind::Removed, Some(old), None, vec![])
                }
                (None, Some(new)) => self.report(
                    pair,
                    &path,
                    ChangeKind::Added,
                    None,
                    Some(&new.entry),
                    vec![],
                ),
                (Some(old), Some(new)) => {
                    if let Some((change, fields)) = self.compare(old, new)? {
                        self.report(pair, &path, change, Some(old), Some(&new.entry), fields);
                    }
                }
                (None, None) => {}
            }
            let older_tree = old
                .as_ref()
                .filter(|entry| entry.kind == EntryKind::Directory)
                .and_then(|entry| entry.subtree);
            let newer_side = new
                .as_ref()
                .filter(|entry| entry.entry.kind == EntryKind::Directory)
                .and_then(|entry| match (&entry.live, entry.entry.subtree) {
                    (Some(live), _) => Some(Newer::Directory(live.clone())),
                    (None, Some(subtree)) => Some(Newer::Tree(subtree)),
                    (None, None) => None,
                });
            if older_tree.is_some() || newer_side.is_some() {
                below.push(Pair {
                    component: pair.component,
                    older: older_tree,
                    newer: newer_side,
                    path,
                    depth: pair.depth + 1,
                });
            }
        }
        // Walked in name order: the stack pops the last pushed first.
        pairs.extend(below.into_iter().rev());
        Ok(())
    }

    /// How `old` and `new` (same name) differ, if they do.
    fn compare(
        &mut self,
        old: &TreeEntry,
        new: &NewEntry,
    ) -> Result<Option<(ChangeKind, Vec<&'static str>)>> {
        let entry = &new.entry;
        if old.kind != entry.kind {
            return Ok(Some((ChangeKind::Changed, vec![])));
        }
        let same_content = match old.kind {
            EntryKind::Directory => true,
            EntryKind::Symlink => old.target == entry.target,
            EntryKind::File => match &new.live {
                None => old.hash == entry.hash && old.size == entry.size,
                Some(live) => self.live_file_matches(old, entry, live)?,
            },
        };
        if !same_content {
            return Ok(Some((ChangeKind::Changed, vec![])));
        }
        let mut fields = Vec::new();
        if old.mode != entry.mode {
            fields.push("mode");
        }
        if (old.uid, old.gid) != (entry.uid, entry.gid) {
            fields.push("owner");
        }
        if old.kind != EntryKind::Directory
            && (old.mtime, old.mtime_nanos) != (entry.mtime, entry.mtime_nanos)
        {
            fields.push("mtime");
        }
        Ok((!fields.is_empty()).then_some((ChangeKind::Metadata, fields)))
    }

    /// Whether a live file holds what the snapshot recorded: same size and
    /// mtime is taken as yes (as a backup does); otherwise its bytes are
    /// hashed.
    fn live_file_matches(&self, old: &TreeEntry, entry: &TreeEntry, live: &Path) -> Result<bool> {
        if old.size != entry.size {
            return Ok(false);
        }
        if (old.mtime, old.mtime_nanos) == (entry.mtime, entry.mtime_nanos) {
            return Ok(true);
        }
        let reading = || format!("reading {}", live.display());
        let mut file =
            std::fs::File::open(live).map_err(|error| StoreError::io(reading(), error))?;
        let mut hasher = self.repository.id_hasher().hasher();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|error| StoreError::io(reading(), error))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(old.hash == Some(Id(*hasher.finalize().as_bytes())))
    }

    /// The error for a pair the bounds refuse, naming a tree of it.
    fn refuse(&self, pair: &Pair, refusal: Refusal) -> StoreError {
        let tree = match (&pair.older, &pair.newer) {
            (Some(id), _) | (None, Some(Newer::Tree(id))) => *id,
            _ => Id([0; 32]),
        };
        let component = &self.components[pair.component].0;
        refusal.error(&tree, &join_relative(component, &pair.path))
    }

    fn report(
        &mut self,
        pair: &Pair,
        path: &str,
        change: ChangeKind,
        old: Option<&TreeEntry>,
        new: Option<&TreeEntry>,
        fields: Vec<&'static str>,
    ) {
        let (component, single_file) = &self.components[pair.component];
        let shown = if *single_file && pair.depth == 0 {
            component.clone()
        } else {
            join_relative(component, path)
        };
        let old_size = old.map(|entry| entry.size);
        let new_size = new.map(|entry| entry.size);
        let Some(kind) = new.or(old).map(|entry| entry.kind) else {
            return;
        };
        let totals = &mut self.diff.totals;
        let is_file = kind == EntryKind::File;
        match change {
            ChangeKind::Added if is_file => {
                totals.added_files += 1;
                totals.added_bytes += new_size.unwrap_or(0);
            }
            ChangeKind::Removed if is_file => {
                totals.removed_files += 1;
                totals.removed_bytes += old_size.unwrap_or(0);
            }
            ChangeKind::Changed if is_file => {
                totals.changed_files += 1;
                totals.changed_bytes += new_size.unwrap_or(0);
            }
            ChangeKind::Metadata => totals.metadata_only += 1,
            _ => {}
        }
        self.diff.changes.push(Change {
            component: component.clone(),
            path: shown,
            change,
            kind,
            old_size,
            new_size,
            fields,
        });
    }

    /// The newer side's entries of one directory, sorted by name.
    fn list_newer(&mut self, newer: &Newer) -> Result<Vec<NewEntry>> {
        match newer {
            Newer::Tree(id) => {
                self.diff.trees_read += 1;
                Ok(read_tree(self.repository, self.index, id)?
                    .entries
                    .into_iter()
                    .map(|entry| NewEntry { entry, live: None })
                    .collect())
            }
            Newer::File(path, name) => Ok(live_entry(path, name.clone())?.into_iter().collect()),
            Newer::Directory(directory) => {
                let reading = || format!("reading directory {}", directory.display());
                let mut listed = Vec::new();
                for item in std::fs::read_dir(directory)
                    .map_err(|error| StoreError::io(reading(), error))?
                {
                    let item = item.map_err(|error| StoreError::io(reading(), error))?;
                    // Sockets, pipes and devices are not backed up either.
                    if let Some(entry) =
                        live_entry(&item.path(), item.file_name().as_bytes().to_vec())?
                    {
                        listed.push(entry);
                    }
                }
                listed.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
                Ok(listed)
            }
        }
    }
}

/// A live file, directory or symlink as a tree entry (no chunks or hash:
/// content is compared by [`Differ::live_file_matches`]); `None` for
/// anything else (a socket, pipe or device).
fn live_entry(path: &Path, name: Vec<u8>) -> Result<Option<NewEntry>> {
    let reading = || format!("reading {}", path.display());
    let metadata =
        std::fs::symlink_metadata(path).map_err(|error| StoreError::io(reading(), error))?;
    let kind = if metadata.is_dir() {
        EntryKind::Directory
    } else if metadata.file_type().is_symlink() {
        EntryKind::Symlink
    } else if metadata.is_file() {
        EntryKind::File
    } else {
        return Ok(None);
    };
    let target = match kind {
        EntryKind::Symlink => Some(
            std::fs::read_link(path)
                .map_err(|error| StoreError::io(reading(), error))?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        ),
        _ => None,
    };
    let root = root_of(&metadata);
    Ok(Some(NewEntry {
        entry: TreeEntry {
            name,
            kind,
            mode: root.mode,
            uid: root.uid,
            gid: root.gid,
            mtime: root.mtime,
            mtime_nanos: root.mtime_nanos,
            ctime: metadata.ctime(),
            ctime_nanos: 0,
            inode: metadata.ino(),
            size: if kind == EntryKind::File {
                metadata.len()
            } else {
                0
            },
            chunks: None,
            hash: None,
            subtree: None,
            target,
        },
        live: Some(path.to_path_buf()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::{BackupOptions, ComponentSource, backup};
    use crate::ops::restore::testing::Scene;

    #[test]
    fn a_subtree_with_the_same_id_on_both_sides_is_never_read() {
        let scene = Scene::new(|root| {
            for directory in 0..20 {
                let path = root.join(format!("src/dir{directory}"));
                std::fs::create_dir_all(&path).unwrap();
                std::fs::write(path.join("file.txt"), format!("file {directory}")).unwrap();
            }
            vec![("src", root.join("src"), false)]
        });
        std::fs::write(scene.path("src/dir7/file.txt"), b"changed, and longer").unwrap();
        let options = BackupOptions {
            components: vec![ComponentSource::new("src", scene.path("src"))],
            ..BackupOptions::default()
        };
        let second = backup(
            &scene.repository,
            scene.index.as_ref(),
            &scene.key,
            &options,
        )
        .unwrap();

        let diff = diff_snapshots(
            &scene.repository,
            scene.index.as_ref(),
            &scene.body,
            &second.body,
        )
        .unwrap();
        // The two roots and the two `dir7` trees; the other 19 directories
        // are the same tree on both sides and cost nothing.
        assert_eq!(diff.trees_read, 4);
        assert_eq!(diff.changes.len(), 1, "{:?}", diff.changes);
        assert_eq!(diff.changes[0].path, "src/dir7/file.txt");
        assert_eq!(diff.changes[0].change, ChangeKind::Changed);

        // Against itself: the roots are equal and nothing is read.
        let same = diff_snapshots(
            &scene.repository,
            scene.index.as_ref(),
            &second.body,
            &second.body,
        )
        .unwrap();
        assert_eq!((same.trees_read, same.changes.len()), (0, 0));

        // The live directory as it is now matches the second snapshot.
        let live = diff_live(
            &scene.repository,
            scene.index.as_ref(),
            &second.body,
            "src",
            "second",
            &scene.path("src"),
        )
        .unwrap();
        assert!(live.changes.is_empty(), "{:?}", live.changes);
    }
}
