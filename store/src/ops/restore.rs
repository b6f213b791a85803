//! Restore: write a snapshot's components back to disk, verified.
//!
//! 1. Select components (`only`, `skip`); an unknown name is an error before
//!    anything is written.
//! 2. Walk each component's trees into a list of directories, files and
//!    symlinks (the plan). A dry run stops here and reports the plan.
//! 3. Create directories; restore files in parallel; create symlinks; then
//!    apply directory metadata, deepest first, so that writing children does
//!    not disturb a parent's mtime.
//!
//! Each file is written to a temporary name beside its final place, every
//! chunk checked against its id as it is read, the whole file's BLAKE3
//! checked, synced, given its metadata, and only then renamed into place: an
//! interrupted restore never leaves a half-written file under a real name,
//! and a chunk that fails its check never reaches the target. A file that
//! fails is reported and the others still restore. Runs of zeros are
//! skipped with a seek, so sparse files stay sparse.

use crate::error::{Result, StoreError};
use crate::id::Id;
use crate::index::IndexCache;
use crate::manifest::{ComponentKind, SnapshotBody};
use crate::ops::{join_relative, read_tree};
use crate::repository::Repository;
use crate::tree::{EntryKind, TreeEntry};
use filetime::FileTime;
use rayon::prelude::*;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these components (all when empty).
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentRestore {
    pub name: String,
    pub destination: PathBuf,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFailure {
    pub component: String,
    /// Path inside the component.
    pub path: String,
    pub error: String,
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOutcome {
    pub components: Vec<ComponentRestore>,
    pub failures: Vec<RestoreFailure>,
    pub dry_run: bool,
}

/// Picks the components to restore, refusing names the snapshot lacks.
pub fn select_components<'a>(
    body: &'a SnapshotBody,
    only: &[String],
    skip: &[String],
    snapshot: &str,
) -> Result<Vec<&'a crate::manifest::ComponentRecord>> {
    for name in only.iter().chain(skip) {
        if body.component(name).is_none() {
            return Err(StoreError::ComponentNotFound {
                name: name.clone(),
                snapshot: snapshot.into(),
            });
        }
    }
    Ok(body
        .components
        .iter()
        .filter(|component| only.is_empty() || only.contains(&component.name))
        .filter(|component| !skip.contains(&component.name))
        .collect())
}

/// One thing to create on disk.
struct PlannedItem {
    /// Path inside the component, for messages.
    relative: String,
    destination: PathBuf,
    entry: TreeEntry,
}

pub fn restore(
    repository: &Repository,
    index: &dyn IndexCache,
    body: &SnapshotBody,
    snapshot: &str,
    options: &RestoreOptions,
) -> Result<RestoreOutcome> {
    let selected = select_components(body, &options.only, &options.skip, snapshot)?;
    let mut outcome = RestoreOutcome {
        dry_run: options.dry_run,
        ..RestoreOutcome::default()
    };
    for component in selected {
        let destination = options.target.join(&component.name);
        let mut failures = Vec::new();
        let mut items = Vec::new();
        plan_tree(
            repository,
            index,
            &component.tree,
            "",
            &destination,
            component.kind,
            &mut items,
            &mut |path, error| failures.push((path, error)),
        );
        let mut summary = ComponentRestore {
            name: component.name.clone(),
            destination: destination.clone(),
            ..ComponentRestore::default()
        };
        for item in &items {
            match item.entry.kind {
                EntryKind::File => {
                    summary.files += 1;
                    summary.bytes += item.entry.size;
                }
                EntryKind::Directory => summary.directories += 1,
                EntryKind::Symlink => summary.symlinks += 1,
            }
        }
        if !options.dry_run {
            write_component(
                repository,
                index,
                component.kind,
                &destination,
                &items,
                &mut |path, error| failures.push((path, error)),
            );
        }
        outcome
            .failures
            .extend(failures.into_iter().map(|(path, error)| RestoreFailure {
                component: component.name.clone(),
                path,
                error,
            }));
        outcome.components.push(summary);
    }
    Ok(outcome)
}

/// Lists everything under `tree`, directories before their contents.
#[allow(clippy::too_many_arguments)]
fn plan_tree(
    repository: &Repository,
    index: &dyn IndexCache,
    tree: &Id,
    relative: &str,
    directory: &Path,
    kind: ComponentKind,
    items: &mut Vec<PlannedItem>,
    fail: &mut dyn FnMut(String, String),
) {
    let tree = match read_tree(repository, index, tree) {
        Ok(tree) => tree,
        Err(error) => {
            let shown = if relative.is_empty() { "/" } else { relative };
            fail(shown.into(), format!("cannot read its tree: {error}"));
            return;
        }
    };
    for entry in tree.entries {
        let name = entry.display_name();
        let child_relative = join_relative(relative, &name);
        // A file component's one entry lands at the component's own path.
        let destination = if kind == ComponentKind::File {
            directory.to_path_buf()
        } else {
            directory.join(OsStr::from_bytes(&entry.name))
        };
        let subtree = entry.subtree;
        let is_directory = entry.kind == EntryKind::Directory;
        items.push(PlannedItem {
            relative: child_relative.clone(),
            destination: destination.clone(),
            entry,
        });
        if let (true, Some(subtree)) = (is_directory, subtree) {
            plan_tree(
                repository,
                index,
                &subtree,
                &child_relative,
                &destination,
                ComponentKind::Directory,
                items,
                fail,
            );
        }
    }
}

fn write_component(
    repository: &Repository,
    index: &dyn IndexCache,
    kind: ComponentKind,
    destination: &Path,
    items: &[PlannedItem],
    fail: &mut dyn FnMut(String, String),
) {
    let root = if kind == ComponentKind::Directory {
        destination
    } else {
        match destination.parent() {
            Some(parent) => parent,
            None => destination,
        }
    };
    if let Err(error) = fs::create_dir_all(root) {
        fail(
            "/".into(),
            format!("cannot create {}: {error}", root.display()),
        );
        return;
    }
    for item in items
        .iter()
        .filter(|item| item.entry.kind == EntryKind::Directory)
    {
        if let Err(error) = fs::create_dir_all(&item.destination) {
            fail(
                item.relative.clone(),
                format!(
                    "cannot create directory {}: {error}",
                    item.destination.display()
                ),
            );
        }
    }
    let file_failures: Vec<(String, String)> = items
        .par_iter()
        .filter(|item| item.entry.kind == EntryKind::File)
        .filter_map(|item| {
            restore_file(repository, index, &item.entry, &item.destination)
                .err()
                .map(|error| (item.relative.clone(), error.to_string()))
        })
        .collect();
    for (path, error) in file_failures {
        fail(path, error);
    }
    for item in items
        .iter()
        .filter(|item| item.entry.kind == EntryKind::Symlink)
    {
        if let Err(error) = restore_symlink(&item.entry, &item.destination) {
            fail(item.relative.clone(), error.to_string());
        }
    }
    for item in items
        .iter()
        .rev()
        .filter(|item| item.entry.kind == EntryKind::Directory)
    {
        if let Err(error) = apply_directory_metadata(&item.entry, &item.destination) {
            fail(item.relative.clone(), error.to_string());
        }
    }
}

fn temporary_beside(destination: &Path) -> Result<PathBuf> {
    let parent = destination.parent().ok_or_else(|| {
        StoreError::Invalid(format!("{} has no parent directory", destination.display()))
    })?;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|error| {
        StoreError::io(
            "reading the system random source",
            std::io::Error::other(error.to_string()),
        )
    })?;
    Ok(parent.join(format!(".cairn-restore-{}", hex::encode(random))))
}

fn io_at(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = format!("{action} {}", path.display());
    move |error| StoreError::io(context, error)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Writes one file under a temporary name, checks it, then renames it.
pub fn restore_file(
    repository: &Repository,
    index: &dyn IndexCache,
    entry: &TreeEntry,
    destination: &Path,
) -> Result<()> {
    let temporary = temporary_beside(destination)?;
    let result = write_verified_file(repository, index, entry, &temporary).and_then(|()| {
        fs::rename(&temporary, destination).map_err(io_at("renaming into", destination))
    });
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn write_verified_file(
    repository: &Repository,
    index: &dyn IndexCache,
    entry: &TreeEntry,
    temporary: &Path,
) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temporary)
        .map_err(io_at("creating", temporary))?;
    let mut output = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    // Consecutive repeats of one chunk (runs of zeros above all) are read once.
    let mut previous: Option<(Id, Vec<u8>, bool)> = None;
    for id in entry.chunks.as_deref().unwrap_or_default() {
        if previous.as_ref().is_none_or(|(last, _, _)| last != id) {
            let location = index.lookup(id)?.ok_or_else(|| StoreError::Missing {
                object: format!("chunk {id} (not in any index file)"),
            })?;
            let data = repository.read_blob(&location)?;
            let zeros = data.iter().all(|&byte| byte == 0);
            previous = Some((*id, data, zeros));
        }
        if let Some((_, data, zeros)) = &previous {
            if *zeros {
                output
                    .seek(SeekFrom::Current(data.len() as i64))
                    .map_err(io_at("writing", temporary))?;
            } else {
                output
                    .write_all(data)
                    .map_err(io_at("writing", temporary))?;
            }
            hasher.update(data);
            written += data.len() as u64;
        }
    }
    let file = output.into_inner().map_err(|error| {
        StoreError::io(
            format!("writing {}", temporary.display()),
            error.into_error(),
        )
    })?;
    file.set_len(written).map_err(io_at("sizing", temporary))?;
    if written != entry.size || entry.hash != Some(Id(*hasher.finalize().as_bytes())) {
        return Err(StoreError::corrupt(
            format!("restored file {}", entry.display_name()),
            "content does not match the snapshot's whole-file hash",
        ));
    }
    file.sync_all().map_err(io_at("syncing", temporary))?;
    if running_as_root() {
        std::os::unix::fs::fchown(&file, Some(entry.uid), Some(entry.gid))
            .map_err(io_at("changing owner of", temporary))?;
    }
    file.set_permissions(fs::Permissions::from_mode(entry.mode))
        .map_err(io_at("setting mode of", temporary))?;
    let mtime = FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
    filetime::set_file_handle_times(&file, None, Some(mtime))
        .map_err(io_at("setting times of", temporary))?;
    Ok(())
}

fn restore_symlink(entry: &TreeEntry, destination: &Path) -> Result<()> {
    let temporary = temporary_beside(destination)?;
    let target = OsStr::from_bytes(entry.target.as_deref().unwrap_or_default());
    let result = (|| {
        std::os::unix::fs::symlink(target, &temporary)
            .map_err(io_at("creating symlink", &temporary))?;
        if running_as_root() {
            std::os::unix::fs::lchown(&temporary, Some(entry.uid), Some(entry.gid))
                .map_err(io_at("changing owner of", &temporary))?;
        }
        let mtime = FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
        filetime::set_symlink_file_times(&temporary, mtime, mtime)
            .map_err(io_at("setting times of", &temporary))?;
        fs::rename(&temporary, destination).map_err(io_at("renaming into", destination))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn apply_directory_metadata(entry: &TreeEntry, destination: &Path) -> Result<()> {
    if running_as_root() {
        std::os::unix::fs::chown(destination, Some(entry.uid), Some(entry.gid))
            .map_err(io_at("changing owner of", destination))?;
    }
    fs::set_permissions(destination, fs::Permissions::from_mode(entry.mode))
        .map_err(io_at("setting mode of", destination))?;
    let mtime = FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
    filetime::set_file_mtime(destination, mtime).map_err(io_at("setting times of", destination))
}

/// Refuses a target that exists and is not a directory, before any work.
pub fn check_target(target: &Path) -> Result<()> {
    match fs::metadata(target) {
        Ok(meta) if !meta.is_dir() => Err(StoreError::Invalid(format!(
            "restore target {} exists and is not a directory",
            target.display()
        ))),
        _ => Ok(()),
    }
}
