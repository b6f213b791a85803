//! Making a restore reversible: the safety snapshot taken before anything
//! in the target changes, the journal of what the restore created, and the
//! undo that puts the target back.
//!
//! The safety snapshot is an ordinary signed snapshot in the same
//! repository, tagged `pre-restore` and labelled with the snapshot being
//! restored. It holds exactly the paths the restore will overwrite or
//! delete (one component per restored component, named alike) plus a
//! component named [`JOURNAL_COMPONENT`]: a JSON file listing every path the
//! restore will create, with the hash it will have. Undo deletes each
//! created path that still holds what the restore wrote, then restores the
//! saved paths over the target. Nothing here decides what to restore.
//!
//! The host that restored also keeps the journal in its own private
//! directory ([`local_journal_path`]): `undo-restore` acts only on that
//! copy, never on a journal read from the repository (which anyone holding
//! a trusted key could have written), and only where every path it names
//! lies inside its component's destination ([`check_journal_paths`]).
//! Removals go through directory handles and never follow a symlink.

use super::plan::ComponentPlan;
use crate::error::{Result, StoreError};
use crate::format::tree::EntryKind;
use crate::id::{Id, IdHasher};
use crate::os::dir::{Dir, EntryType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The safety snapshot's journal component.
pub const JOURNAL_COMPONENT: &str = "cairn-restore-journal";
pub use crate::format::manifest::SAFETY_TAG;
pub const RESTORED_LABEL: &str = "restore-of";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub format: String,
    /// The snapshot being restored.
    pub restored: Id,
    pub components: Vec<JournalComponent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalComponent {
    pub name: String,
    pub destination: PathBuf,
    /// Whether the safety snapshot holds a component of this name.
    pub saved: bool,
    pub created: Vec<CreatedPath>,
    /// Existing directories whose mode or mtime the restore may change
    /// (by writing them or their contents), as they were before.
    #[serde(default)]
    pub directories: Vec<SavedDirectory>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedDirectory {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedPath {
    pub path: PathBuf,
    pub kind: CreatedKind,
    /// For files: the BLAKE3 the restore gives them.
    pub hash: Option<Id>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreatedKind {
    File,
    Directory,
    Symlink,
}

impl Journal {
    pub fn new(restored: Id, plans: &[ComponentPlan]) -> Self {
        let components = plans
            .iter()
            .map(|plan| JournalComponent {
                name: plan.name.clone(),
                destination: plan.destination.clone(),
                saved: !plan.touched_paths().is_empty(),
                created: created_paths(plan),
                directories: changed_directories(plan),
            })
            .collect();
        Journal {
            format: "cairn-restore-journal-v1".into(),
            restored,
            components,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        crate::format::codec::to_json(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let journal: Journal = crate::format::codec::from_json(bytes, "restore journal")?;
        if journal.format != "cairn-restore-journal-v1" {
            return Err(StoreError::corrupt("restore journal", "unknown format"));
        }
        Ok(journal)
    }
}

/// Paths where the restore puts something that was not there before (or
/// was there as another type), including the component root if new.
fn created_paths(plan: &ComponentPlan) -> Vec<CreatedPath> {
    use super::plan::Action;
    let mut created = Vec::new();
    if fs::symlink_metadata(&plan.destination).is_err()
        && plan.kind == crate::format::manifest::ComponentKind::Directory
    {
        created.push(CreatedPath {
            path: plan.destination.clone(),
            kind: CreatedKind::Directory,
            hash: None,
        });
    }
    for item in &plan.entries {
        if !matches!(item.action, Action::Create | Action::Replace) {
            continue;
        }
        let kind = match item.entry.kind {
            EntryKind::File => CreatedKind::File,
            EntryKind::Directory => CreatedKind::Directory,
            EntryKind::Symlink => CreatedKind::Symlink,
        };
        created.push(CreatedPath {
            path: item.destination.clone(),
            kind,
            hash: item.entry.hash,
        });
    }
    created
}

/// Existing directories the restore may change: the destination, each
/// directory whose metadata is rewritten, and the parent of everything
/// written or deleted.
fn changed_directories(plan: &ComponentPlan) -> Vec<SavedDirectory> {
    use super::plan::Action;
    use std::os::unix::fs::MetadataExt;
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    if plan.kind == crate::format::manifest::ComponentKind::Directory {
        paths.insert(plan.destination.clone());
    }
    for item in &plan.entries {
        if item.action == Action::Unchanged {
            continue;
        }
        if item.entry.kind == EntryKind::Directory && item.action == Action::Metadata {
            paths.insert(item.destination.clone());
        }
        if let Some(parent) = item.destination.parent() {
            paths.insert(parent.to_path_buf());
        }
    }
    for deletion in &plan.deletions {
        if let Some(parent) = deletion.destination.parent() {
            paths.insert(parent.to_path_buf());
        }
    }
    paths
        .into_iter()
        .filter_map(|path| {
            let meta = fs::symlink_metadata(&path)
                .ok()
                .filter(|meta| meta.is_dir())?;
            Some(SavedDirectory {
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
                path,
            })
        })
        .collect()
}

/// Puts saved directories' metadata back, deepest first (so restoring a
/// child does not disturb a parent's mtime). Returns what failed.
pub fn restore_directory_metadata(journal: &Journal) -> Vec<(PathBuf, String)> {
    let mut directories: Vec<&SavedDirectory> = journal
        .components
        .iter()
        .flat_map(|component| component.directories.iter())
        .collect();
    directories.sort_by_key(|directory| std::cmp::Reverse(directory.path.components().count()));
    let mut problems = Vec::new();
    for directory in directories {
        if !fs::symlink_metadata(&directory.path).is_ok_and(|meta| meta.is_dir()) {
            continue;
        }
        let root = crate::format::manifest::RootMetadata {
            mode: directory.mode,
            uid: directory.uid,
            gid: directory.gid,
            mtime: directory.mtime,
            mtime_nanos: directory.mtime_nanos,
        };
        // What is put back is what this host had: owners included.
        if let Err(error) = super::place::apply_root_metadata(&root, &directory.path, true) {
            problems.push((directory.path.clone(), error.to_string()));
        }
    }
    problems
}

/// The relative paths a component's safety copy must hold.
pub fn saved_paths(plan: &ComponentPlan) -> BTreeSet<String> {
    plan.touched_paths().into_iter().collect()
}

/// Where this host keeps the journal of the restore whose safety
/// snapshot is `safety`: `<journals>/<safety snapshot id>.json`.
pub fn local_journal_path(journals: &Path, safety: &Id) -> PathBuf {
    journals.join(format!("{}.json", safety.to_hex()))
}

/// The largest journal read back (about five million created paths).
const JOURNAL_MAX: u64 = 1 << 30;

/// This host's journal of the restore whose safety snapshot is `safety`,
/// checked ([`check_journal_paths`]); refused, by name, when this host has
/// none.
pub fn read_local_journal(journals: &Path, safety: &Id) -> Result<Journal> {
    let path = local_journal_path(journals, safety);
    let refuse = |why: String| {
        StoreError::Invalid(format!(
            "safety snapshot {} has no restore journal on this host ({}: {why}); undo-restore acts only on restores this host made, and never on a journal read from the repository",
            safety.to_hex(),
            path.display()
        ))
    };
    let file = match Dir::open(journals)
        .and_then(|dir| dir.open_file(path.file_name().unwrap_or_default()))
    {
        Ok(file) => file,
        Err(error) => return Err(refuse(error.to_string())),
    };
    let meta = file
        .metadata()
        .map_err(|error| StoreError::io(format!("reading {}", path.display()), error))?;
    if !meta.is_file() || meta.len() > JOURNAL_MAX {
        return Err(refuse("not a journal file".into()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, JOURNAL_MAX), &mut bytes)
        .map_err(|error| StoreError::io(format!("reading {}", path.display()), error))?;
    let journal = Journal::decode(&bytes)
        .map_err(|error| StoreError::Invalid(format!("{}: {error}", path.display())))?;
    check_journal_paths(&journal)
        .map_err(|error| StoreError::Invalid(format!("{}: {error}", path.display())))?;
    Ok(journal)
}

/// Every path a journal names must lie inside its component's destination
/// (itself absolute, with no `..`); the first that does not is named.
pub fn check_journal_paths(journal: &Journal) -> Result<()> {
    let plain = |path: &Path| {
        path.is_absolute()
            && path
                .components()
                .all(|part| matches!(part, Component::RootDir | Component::Normal(_)))
    };
    for component in &journal.components {
        let destination = &component.destination;
        if !plain(destination) {
            return Err(StoreError::Invalid(format!(
                "the journal names {} as the destination of component {}, which is not a plain absolute path; nothing was undone",
                destination.display(),
                component.name
            )));
        }
        let paths = component.created.iter().map(|created| &created.path).chain(
            component
                .directories
                .iter()
                .map(|directory| &directory.path),
        );
        for path in paths {
            if !plain(path) || !path.starts_with(destination) {
                return Err(StoreError::Invalid(format!(
                    "the journal names {}, outside the restore's target {} (component {}); nothing was undone",
                    path.display(),
                    destination.display(),
                    component.name
                )));
            }
        }
    }
    Ok(())
}

/// The directory holding `path` and `path`'s last name.
fn parent_of(path: &Path) -> std::io::Result<(Dir, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((Dir::open(parent)?, name)),
        _ => Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    }
}

/// Removes what the restore created, newest and deepest first, leaving any
/// file that no longer holds what the restore wrote. Returns paths kept.
pub fn remove_created(journal: &Journal, hasher: IdHasher) -> Vec<(PathBuf, String)> {
    let mut kept = Vec::new();
    let mut all: Vec<&CreatedPath> = journal
        .components
        .iter()
        .flat_map(|component| component.created.iter())
        .collect();
    all.sort_by_key(|created| std::cmp::Reverse(created.path.as_os_str().len()));
    for created in all {
        // Through the parent's handle: the last name is never followed.
        let Ok((parent, name)) = parent_of(&created.path) else {
            continue;
        };
        let Ok(Some(kind)) = parent.kind_of(name) else {
            continue;
        };
        let result = match (created.kind, kind) {
            (CreatedKind::Directory, EntryType::Directory) => parent.remove(name, true),
            (CreatedKind::Symlink, EntryType::Symlink) => parent.remove(name, false),
            (CreatedKind::File, EntryType::File) => {
                if parent
                    .open_file(name)
                    .and_then(|file| hash_file(file, hasher))
                    .ok()
                    == created.hash
                {
                    parent.remove(name, false)
                } else {
                    kept.push((
                        created.path.clone(),
                        "changed since the restore wrote it".into(),
                    ));
                    continue;
                }
            }
            _ => {
                kept.push((
                    created.path.clone(),
                    "is no longer what the restore created".into(),
                ));
                continue;
            }
        };
        if let Err(error) = result {
            kept.push((created.path.clone(), error.to_string()));
        }
    }
    kept
}

/// The file's whole-content hash as trees record it (keyed in an encrypted
/// repository).
fn hash_file(file: fs::File, hasher: IdHasher) -> std::io::Result<Id> {
    let mut hasher = hasher.hasher();
    hasher.update_reader(file)?;
    Ok(Id(*hasher.finalize().as_bytes()))
}
