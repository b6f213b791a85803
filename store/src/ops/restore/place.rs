//! Putting restored entries in place on disk: temporary names beside the
//! destination, renames (of a file, of a whole staging directory) that
//! never replace what appeared meanwhile, the filesystem sync that makes a
//! batch durable before its renames, owner, mode and times, and removal.
//! Every write goes through the component's [`Ground`] (directory handles,
//! no symlink followed), and the snapshot's owners and special mode bits
//! are applied only as the [`MetadataPolicy`] says.
//!
//! Owns the order of those steps for one entry; knows nothing of plans,
//! chunks or repositories. Never renames anything into place that the
//! caller has not synced first.

use super::ground::Ground;
use crate::error::{Result, StoreError};
use crate::format::manifest::RootMetadata;
use crate::format::tree::TreeEntry;
use crate::os::dir::Dir;
use filetime::FileTime;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which of a snapshot's owners and mode bits a restore applies. By
/// default neither owners nor the set-user-id, set-group-id and sticky
/// bits: a snapshot (whoever signed it) does not decide who owns files
/// here or which programs run with raised privileges; the restoring user
/// asks for them (`--same-owner`, `--keep-special-bits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataPolicy {
    /// As root, give entries the snapshot's owner and group.
    pub same_owner: bool,
    /// Keep the snapshot's set-user-id, set-group-id and sticky bits.
    pub special_bits: bool,
}

impl MetadataPolicy {
    /// Owners and all mode bits: for putting back what this host had.
    pub fn everything() -> Self {
        MetadataPolicy {
            same_owner: true,
            special_bits: true,
        }
    }

    fn mode(&self, mode: u32) -> u32 {
        if self.special_bits {
            mode & 0o7777
        } else {
            mode & 0o777
        }
    }

    /// The entry as the restore will give it: its mode without the bits
    /// not asked for. (Owners are applied or not where they are set.)
    pub fn apply(&self, entry: &mut TreeEntry) {
        entry.mode = self.mode(entry.mode);
    }

    pub fn root(&self, mut root: RootMetadata) -> RootMetadata {
        root.mode = self.mode(root.mode);
        root
    }
}

/// Prefix of the temporary files a restore writes beside their final place.
pub const TEMPORARY_PREFIX: &str = ".cairn-restore-";

pub(crate) fn running_as_root() -> bool {
    // Asked once: a restore would otherwise ask for every file it writes.
    static ROOT: OnceLock<bool> = OnceLock::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    *ROOT.get_or_init(|| unsafe { libc::geteuid() == 0 })
}

pub(super) fn io_at<'a>(
    action: &'a str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    // Formatted only on error: this wraps every chunk's write, and naming
    // the path each time showed in a restore's profile.
    move |error| StoreError::io(format!("{action} {}", path.display()), error)
}

/// A name beside `destination` that no other temporary of any restore
/// uses: this process's random tag (drawn once, not once per file) and a
/// count. Files are created exclusively, so a clash fails rather than
/// overwrites.
pub(super) fn temporary_beside(destination: &Path) -> Result<PathBuf> {
    static TAG: OnceLock<String> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let parent = destination.parent().ok_or_else(|| {
        StoreError::Invalid(format!("{} has no parent directory", destination.display()))
    })?;
    let tag = match TAG.get() {
        Some(tag) => tag,
        None => {
            let random: [u8; 8] = crate::os::random::random_bytes()?;
            TAG.get_or_init(|| hex::encode(random))
        }
    };
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    Ok(parent.join(format!("{TEMPORARY_PREFIX}{tag}-{count:x}")))
}

/// Renames a prepared (and synced) temporary file into place, within
/// the directory both are in.
pub fn commit(ground: &Ground, temporary: &Path, destination: &Path) -> Result<()> {
    let (directory, name) = ground.parent_of(destination)?;
    let temporary_name = temporary.file_name().unwrap_or_default();
    directory
        .dir
        .rename(temporary_name, &directory.dir, name, false)
        .map_err(|error| {
            let _ = directory.dir.remove(temporary_name, false);
            StoreError::io(format!("renaming into {}", destination.display()), error)
        })
}

/// Flushes everything written to the filesystem holding `path`: one
/// `syncfs` for a whole batch of files costs far less than an fsync each.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let directory = File::open(path).map_err(io_at("opening", path))?;
    // SAFETY: the descriptor is valid for the life of `directory`.
    let result = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&directory)) };
    if result == 0 {
        Ok(())
    } else {
        Err(StoreError::io(
            format!("syncing the filesystem of {}", path.display()),
            std::io::Error::last_os_error(),
        ))
    }
}

/// The directory that holds `path`, opened without following a symlink at
/// its last name (for what lies beside a component, outside its ground).
fn parent_directory(path: &Path) -> Result<(Dir, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((
            Dir::open(parent).map_err(io_at("opening directory", parent))?,
            name,
        )),
        _ => Err(StoreError::Invalid(format!(
            "{} has no parent directory",
            path.display()
        ))),
    }
}

/// Creates a component's staging directory (mode 0700; nothing may be
/// there already) beside its destination.
pub fn create_staging(staging: &Path) -> Result<()> {
    let (parent, name) = parent_directory(staging)?;
    match parent.create_dir(name) {
        Ok((_, true)) => Ok(()),
        Ok((_, false)) => Err(StoreError::Invalid(format!(
            "{} exists already; a staging directory must be new",
            staging.display()
        ))),
        Err(error) => Err(StoreError::io(
            format!("creating {}", staging.display()),
            error,
        )),
    }
}

/// Puts a component's staging directory, written whole, in place at
/// `destination`: syncs the filesystem (the directories' metadata and
/// symlinks written since the last batch's sync), renames it there unless
/// something appeared at `destination` meanwhile, and syncs the parent
/// directory so that the rename itself is durable.
pub fn move_into_place(staging: &Path, destination: &Path) -> Result<()> {
    sync_filesystem(staging)?;
    let (parent, name) = parent_directory(destination)?;
    let staging_name = staging.file_name().unwrap_or_default();
    if staging.parent() != destination.parent() {
        return Err(StoreError::Invalid(format!(
            "{} is not beside {}",
            staging.display(),
            destination.display()
        )));
    }
    parent
        .rename(staging_name, &parent, name, true)
        .map_err(io_at("moving the restored component into", destination))?;
    parent.sync().map_err(io_at("syncing", destination))?;
    Ok(())
}

/// The mode a file is created with before its content is written and
/// checked: its own where that grants nothing special, so that (the
/// umask allowing) no `fchmod` follows, a change of the inode the kernel
/// pays for again on each of a restore's small files; owner-only where
/// the mode carries set-user-id, set-group-id or sticky bits, which it
/// gets only once the content has been checked.
pub(super) fn creation_mode(mode: u32) -> u32 {
    if mode & 0o7000 == 0 {
        mode & 0o777
    } else {
        0o600
    }
}

/// Whether owners are given: asked for, and only root can.
fn gives_owners(owners: bool) -> bool {
    owners && running_as_root()
}

/// Gives `file` the entry's mode and mtime, and its owner where `owners`
/// (the policy's `same_owner`) says so, changing owner and mode only where
/// they differ (each change dirties the inode again).
pub(super) fn apply_file_metadata(
    file: &File,
    entry: &TreeEntry,
    path: &Path,
    owners: bool,
) -> Result<()> {
    let current = file.metadata().map_err(io_at("reading", path))?;
    let chown = gives_owners(owners) && (current.uid() != entry.uid || current.gid() != entry.gid);
    if chown {
        std::os::unix::fs::fchown(file, Some(entry.uid), Some(entry.gid))
            .map_err(io_at("changing owner of", path))?;
    }
    // After the owner: changing it clears set-user-id and set-group-id.
    if chown || current.mode() & 0o7777 != entry.mode {
        file.set_permissions(fs::Permissions::from_mode(entry.mode))
            .map_err(io_at("setting mode of", path))?;
    }
    let mtime = FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
    filetime::set_file_handle_times(file, None, Some(mtime))
        .map_err(io_at("setting times of", path))
}

/// Fixes mode, owner and mtime of a file whose content is already right.
pub fn fix_file_metadata(
    ground: &Ground,
    entry: &TreeEntry,
    path: &Path,
    owners: bool,
) -> Result<()> {
    let (directory, name) = ground.parent_of(path)?;
    let file = directory
        .dir
        .open_file(name)
        .map_err(io_at("opening", path))?;
    if !file.metadata().is_ok_and(|meta| meta.is_file()) {
        return Err(StoreError::Invalid(format!(
            "{} is no longer a file",
            path.display()
        )));
    }
    apply_file_metadata(&file, entry, path, owners)
}

/// Creates a symlink at `destination`: under a temporary name renamed
/// into place, or, `staged`, right there (a staging directory is renamed
/// into place whole).
pub fn write_symlink(
    ground: &Ground,
    entry: &TreeEntry,
    destination: &Path,
    staged: bool,
    owners: bool,
) -> Result<()> {
    let (directory, name) = ground.parent_of(destination)?;
    let temporary = if staged {
        destination.to_path_buf()
    } else {
        temporary_beside(destination)?
    };
    let temporary_name = temporary.file_name().unwrap_or_default();
    let dir = &directory.dir;
    let target = OsStr::from_bytes(entry.target.as_deref().unwrap_or_default());
    let result = (|| {
        dir.symlink(target, temporary_name)
            .map_err(io_at("creating symlink", &temporary))?;
        if gives_owners(owners) {
            dir.chown_entry(temporary_name, entry.uid, entry.gid)
                .map_err(io_at("changing owner of", &temporary))?;
        }
        dir.set_entry_times(temporary_name, entry.mtime, entry.mtime_nanos)
            .map_err(io_at("setting times of", &temporary))?;
        if staged {
            return Ok(());
        }
        dir.rename(temporary_name, dir, name, false)
            .map_err(io_at("renaming into", destination))
    })();
    if result.is_err() {
        let _ = dir.remove(temporary_name, false);
    }
    result
}

/// Gives an open directory the entry's mode and mtime, and its owner
/// where `owners` says so, each only where it differs; returns whether
/// anything changed.
pub fn apply_directory_metadata(
    directory: &File,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, u32),
    path: &Path,
    owners: bool,
) -> Result<()> {
    let meta = directory.metadata().map_err(io_at("reading", path))?;
    let chown = gives_owners(owners) && (meta.uid() != owner.0 || meta.gid() != owner.1);
    if chown {
        std::os::unix::fs::fchown(directory, Some(owner.0), Some(owner.1))
            .map_err(io_at("changing owner of", path))?;
    }
    if chown || meta.mode() & 0o7777 != mode {
        directory
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_at("setting mode of", path))?;
    }
    if meta.mtime() != mtime.0 || meta.mtime_nsec() != i64::from(mtime.1) {
        let time = FileTime::from_unix_time(mtime.0, mtime.1);
        filetime::set_file_handle_times(directory, None, Some(time))
            .map_err(io_at("setting times of", path))?;
    }
    Ok(())
}

/// Applies a directory component's own metadata where it differs,
/// through a handle (the destination itself must not be a symlink).
pub fn apply_root_metadata(root: &RootMetadata, destination: &Path, owners: bool) -> Result<()> {
    let directory = Dir::open(destination).map_err(io_at("opening directory", destination))?;
    apply_directory_metadata(
        directory.file(),
        root.mode,
        (root.uid, root.gid),
        (root.mtime, root.mtime_nanos),
        destination,
        owners,
    )
}

/// Removes a file, symlink or whole directory tree inside the ground,
/// never following a symlink.
pub fn remove_path(ground: &Ground, path: &Path) -> Result<()> {
    let (directory, name) = ground.parent_of(path)?;
    directory
        .dir
        .remove_tree(name)
        .map_err(io_at("removing", path))
}

/// Removes a restore's leftover temporary beside a destination (outside
/// the ground), never following a symlink.
pub fn remove_beside(path: &Path) -> Result<()> {
    let (directory, name) = parent_directory(path)?;
    directory.remove_tree(name).map_err(io_at("removing", path))
}

/// OS errors that mean the target could not be written (not that the
/// repository is damaged): no space, quota exceeded, read-only, file too
/// large, I/O error.
const TARGET_WRITE_ERRORS: [i32; 5] = [
    libc::ENOSPC,
    libc::EDQUOT,
    libc::EROFS,
    libc::EFBIG,
    libc::EIO,
];

/// Whether a restore failure's text says the target could not be written.
/// The pipeline carries failures as text, and an I/O error's text ends in
/// `(os error N)`.
pub(crate) fn is_target_write_error(text: &str) -> bool {
    TARGET_WRITE_ERRORS
        .iter()
        .any(|code| text.contains(&format!("(os error {code})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_directory_never_replaces_what_appeared_at_its_destination() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let staging = directory.path().join(".cairn-restore-stage");
        let destination = directory.path().join("component");
        fs::create_dir(&staging).expect("staging");
        fs::write(staging.join("file"), b"restored").expect("file");
        // An empty directory that a plain rename would silently replace.
        fs::create_dir(&destination).expect("destination");
        let error = move_into_place(&staging, &destination).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains(&destination.display().to_string()),
            "{error}"
        );
        assert!(staging.join("file").is_file(), "staging left as it was");
        assert_eq!(fs::read_dir(&destination).expect("list").count(), 0);

        fs::remove_dir(&destination).expect("remove");
        move_into_place(&staging, &destination).expect("moved");
        assert_eq!(
            fs::read(destination.join("file")).expect("read"),
            b"restored"
        );
        assert!(!staging.exists());
    }
}
