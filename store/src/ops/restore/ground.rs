//! [`Ground`]: the place a component is written to, held through directory
//! handles. Its root is opened once; every directory below it is reached
//! name by name from its parent's handle, never through a symlink, and
//! kept open (a few hundred at most) for the files written into it. A
//! local user who swaps a directory for a symlink or a file while the
//! restore runs makes the next step there fail, naming the path, instead
//! of sending writes, modes or owners elsewhere.
//!
//! Owns the handles and the error that names a replaced directory; knows
//! nothing of plans, entries or metadata. Never resolves a path below the
//! root other than name by name.

use crate::error::{Result, StoreError};
use crate::os::dir::Dir;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Directory handles kept open per component: enough for the directories a
/// batch of files lands in; past it the cache starts again (handles in use
/// stay open until dropped).
const OPEN_DIRECTORIES: usize = 256;

/// An open directory of the ground and what it was when opened.
pub(crate) struct Held {
    pub(crate) dir: Dir,
    /// Device and inode: whether the name still leads to this directory.
    pub(crate) identity: (u64, u64),
}

/// A component's place on disk, walked through directory handles.
pub(crate) struct Ground {
    root_path: PathBuf,
    root: Arc<Held>,
    open: Mutex<HashMap<PathBuf, Arc<Held>>>,
}

impl Ground {
    /// Opens the root, which must exist and be a directory: not a symlink
    /// unless `named_by_user` (a file component's root is the target
    /// directory the user gave, which may be one).
    pub(crate) fn open(root: &Path, named_by_user: bool) -> Result<Ground> {
        let opened = if named_by_user {
            Dir::open_following(root)
        } else {
            Dir::open(root)
        };
        let dir = opened.map_err(|error| not_a_directory(root, error))?;
        Ok(Ground {
            root_path: root.to_path_buf(),
            root: Arc::new(held(dir, root)?),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// `path` relative to the root; a path elsewhere is refused.
    fn relative<'p>(&self, path: &'p Path) -> Result<&'p Path> {
        let relative = path.strip_prefix(&self.root_path).map_err(|_| {
            StoreError::Invalid(format!(
                "{} is outside {}, where this restore writes",
                path.display(),
                self.root_path.display()
            ))
        })?;
        if relative
            .components()
            .any(|part| !matches!(part, Component::Normal(_)))
        {
            return Err(StoreError::Invalid(format!(
                "{} is not a plain path below {}",
                path.display(),
                self.root_path.display()
            )));
        }
        Ok(relative)
    }

    /// The directory at `path` (the root or below it), opened name by name
    /// from the root without following symlinks, or from the handles kept.
    pub(crate) fn directory(&self, path: &Path) -> Result<Arc<Held>> {
        let relative = self.relative(path)?;
        if relative.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(held) = self.cached(relative) {
            return Ok(held);
        }
        let (parent, name) = self.parent_of(path)?;
        let dir = parent
            .dir
            .open_dir(name)
            .map_err(|error| replaced(path, &parent.dir, name, error))?;
        let held = Arc::new(held(dir, path)?);
        self.keep(relative, &held);
        Ok(held)
    }

    /// The directory holding `path`, and `path`'s last name.
    pub(crate) fn parent_of<'p>(&self, path: &'p Path) -> Result<(Arc<Held>, &'p OsStr)> {
        self.relative(path)?;
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if path != self.root_path => {
                Ok((self.directory(parent)?, name))
            }
            _ => Err(StoreError::Invalid(format!(
                "{} has no parent directory below {}",
                path.display(),
                self.root_path.display()
            ))),
        }
    }

    /// Creates the directory `path` (mode 0700 until its metadata is
    /// applied); one that exists already must be a real directory.
    pub(crate) fn create_directory(&self, path: &Path) -> Result<()> {
        let (parent, name) = self.parent_of(path)?;
        let (dir, _) = parent
            .dir
            .create_dir(name)
            .map_err(|error| replaced(path, &parent.dir, name, error))?;
        let held = Arc::new(held(dir, path)?);
        self.keep(self.relative(path)?, &held);
        Ok(())
    }

    /// Opens the directory `path` afresh from its parent and checks that it
    /// is the one the restore wrote into (when that one is still known):
    /// for applying its metadata at the end, when a swap would otherwise
    /// go unnoticed.
    pub(crate) fn reopen_directory(&self, path: &Path) -> Result<Held> {
        let (parent, name) = self.parent_of(path)?;
        let dir = parent
            .dir
            .open_dir(name)
            .map_err(|error| replaced(path, &parent.dir, name, error))?;
        let fresh = held(dir, path)?;
        if let Some(known) = self.cached(self.relative(path)?)
            && known.identity != fresh.identity
        {
            return Err(StoreError::Invalid(format!(
                "directory {} was replaced while the restore wrote into it; what was written there is not in place",
                path.display()
            )));
        }
        Ok(fresh)
    }

    fn cached(&self, relative: &Path) -> Option<Arc<Held>> {
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(relative)
            .cloned()
    }

    fn keep(&self, relative: &Path, held: &Arc<Held>) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if open.len() >= OPEN_DIRECTORIES {
            open.clear();
        }
        open.insert(relative.to_path_buf(), held.clone());
    }
}

fn held(dir: Dir, path: &Path) -> Result<Held> {
    let identity = dir
        .identity()
        .map_err(|error| StoreError::io(format!("reading {}", path.display()), error))?;
    Ok(Held { dir, identity })
}

/// The error for a directory that could not be opened or made: named, and
/// said to be replaced when something other than a directory is there.
fn replaced(path: &Path, parent: &Dir, name: &OsStr, error: io::Error) -> StoreError {
    let swapped = matches!(error.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR));
    match parent.kind_of(name) {
        Ok(Some(kind)) if swapped => StoreError::Invalid(format!(
            "{} was replaced by {} where the restore expects a directory; nothing is written through it",
            path.display(),
            kind.describe()
        )),
        _ => StoreError::io(format!("opening directory {}", path.display()), error),
    }
}

fn not_a_directory(path: &Path, error: io::Error) -> StoreError {
    if matches!(error.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
        return StoreError::Invalid(format!(
            "{} is not a directory (a symlink?) where the restore expects one; nothing is written through it",
            path.display()
        ));
    }
    StoreError::io(format!("opening directory {}", path.display()), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_swapped_for_a_symlink_is_refused_by_name() {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let root = scratch.path().join("root");
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::create_dir_all(&root).expect("root");
        let ground = Ground::open(&root, false).expect("ground");
        let sub = root.join("sub");
        ground.create_directory(&sub).expect("sub");
        ground.directory(&sub).expect("held");
        std::fs::rename(&sub, scratch.path().join("moved")).expect("move away");
        std::os::unix::fs::symlink(&outside, &sub).expect("swap");
        let error = match ground.reopen_directory(&sub) {
            Ok(_) => panic!("a symlink was opened"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains("sub") && error.contains("replaced"),
            "{error}"
        );
        let error = ground
            .create_directory(&sub.join("deeper"))
            .err()
            .map(|error| error.to_string());
        // The handle kept for `sub` is the moved directory: nothing reaches
        // the outside.
        assert!(error.is_none() || error.is_some_and(|e| e.contains("sub")));
        assert_eq!(std::fs::read_dir(&outside).expect("list").count(), 0);
        assert!(ground.directory(Path::new("/elsewhere")).is_err());
    }
}
