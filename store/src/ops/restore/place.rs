//! Putting restored entries in place on disk: temporary names beside the
//! destination, renames (of a file, of a whole staging directory) that
//! never replace what appeared meanwhile, the filesystem sync that makes a
//! batch durable before its renames, owner, mode and times, and removal.
//!
//! Owns the order of those steps for one entry; knows nothing of plans,
//! chunks or repositories. Never renames anything into place that the
//! caller has not synced first.

use crate::error::{Result, StoreError};
use crate::format::manifest::RootMetadata;
use crate::format::tree::TreeEntry;
use filetime::FileTime;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
/// count. Files are created with `create_new`, so a clash fails rather
/// than overwrites.
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

/// Renames a prepared (and synced) temporary file into place.
pub fn commit(temporary: &Path, destination: &Path) -> Result<()> {
    fs::rename(temporary, destination).map_err(|error| {
        let _ = fs::remove_file(temporary);
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

/// Puts a component's staging directory, written whole, in place at
/// `destination`: syncs the filesystem (the directories' metadata and
/// symlinks written since the last batch's sync), renames it there unless
/// something appeared at `destination` meanwhile, and syncs the parent
/// directory so that the rename itself is durable.
pub fn move_into_place(staging: &Path, destination: &Path) -> Result<()> {
    sync_filesystem(staging)?;
    rename_no_replace(staging, destination)
        .map_err(io_at("moving the restored component into", destination))?;
    if let Some(parent) = destination.parent() {
        File::open(parent)
            .and_then(|directory| directory.sync_all())
            .map_err(io_at("syncing", parent))?;
    }
    Ok(())
}

/// `rename`, failing where `to` exists: a plain rename would put a
/// directory over an empty one that appeared since planning.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c_path = |path: &Path| {
        std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from_c, to_c) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    // A filesystem without RENAME_NOREPLACE: check, then rename.
    if error.raw_os_error() == Some(libc::EINVAL) {
        if fs::symlink_metadata(to).is_ok() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        }
        return fs::rename(from, to);
    }
    Err(error)
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

/// Gives `file` the entry's owner, mode and mtime, changing owner and mode
/// only where they differ (each change dirties the inode again).
pub(super) fn apply_file_metadata(file: &File, entry: &TreeEntry, path: &Path) -> Result<()> {
    let current = file.metadata().map_err(io_at("reading", path))?;
    let chown = running_as_root() && (current.uid() != entry.uid || current.gid() != entry.gid);
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
pub fn fix_file_metadata(entry: &TreeEntry, path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_at("opening", path))?;
    apply_file_metadata(&file, entry, path)
}

/// Creates a symlink at `destination`: under a temporary name renamed
/// into place, or, `staged`, right there (a staging directory is renamed
/// into place whole).
pub fn write_symlink(entry: &TreeEntry, destination: &Path, staged: bool) -> Result<()> {
    let temporary = if staged {
        destination.to_path_buf()
    } else {
        temporary_beside(destination)?
    };
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
        if staged {
            return Ok(());
        }
        fs::rename(&temporary, destination).map_err(io_at("renaming into", destination))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

pub fn apply_directory_metadata(entry: &TreeEntry, destination: &Path) -> Result<()> {
    if running_as_root() {
        std::os::unix::fs::chown(destination, Some(entry.uid), Some(entry.gid))
            .map_err(io_at("changing owner of", destination))?;
    }
    fs::set_permissions(destination, fs::Permissions::from_mode(entry.mode))
        .map_err(io_at("setting mode of", destination))?;
    let mtime = FileTime::from_unix_time(entry.mtime, entry.mtime_nanos);
    filetime::set_file_mtime(destination, mtime).map_err(io_at("setting times of", destination))
}

/// Applies a directory component's own metadata where it differs.
pub fn apply_root_metadata(root: &RootMetadata, destination: &Path) -> Result<()> {
    let meta = fs::metadata(destination).map_err(io_at("reading", destination))?;
    let owner_differs = running_as_root() && (meta.uid() != root.uid || meta.gid() != root.gid);
    if owner_differs {
        std::os::unix::fs::chown(destination, Some(root.uid), Some(root.gid))
            .map_err(io_at("changing owner of", destination))?;
    }
    if meta.mode() & 0o7777 != root.mode {
        fs::set_permissions(destination, fs::Permissions::from_mode(root.mode))
            .map_err(io_at("setting mode of", destination))?;
    }
    if meta.mtime() != root.mtime || meta.mtime_nsec() != i64::from(root.mtime_nanos) {
        let mtime = FileTime::from_unix_time(root.mtime, root.mtime_nanos);
        filetime::set_file_mtime(destination, mtime)
            .map_err(io_at("setting times of", destination))?;
    }
    Ok(())
}

/// Removes a file, symlink or whole directory tree.
pub fn remove_path(path: &Path, is_directory: bool) -> Result<()> {
    let result = if is_directory {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::io(
            format!("removing {}", path.display()),
            error,
        )),
    }
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
