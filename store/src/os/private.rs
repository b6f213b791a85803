//! Private scratch places: directories only this user can enter (0700,
//! made with a random name, as `mkdtemp` does) and files only this user
//! can read (0600, created exclusively, never through an existing name).
//! Staging copies of databases, command output and restore journals live
//! in these, so another local user can neither read them nor plant a file
//! or symlink where cairn will write.
//!
//! Owns the modes and the checks; never decides where the places are (the
//! caller names the parent) and never removes anything it did not create.

use crate::error::{Result, StoreError};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A new directory inside `parent` with a random name starting with
/// `prefix`, mode 0700, removed when the value is dropped. `parent` is made
/// (0700) if it does not exist, and must be a real directory owned by this
/// user ([`ensure_private_directory`]).
pub fn private_directory_in(parent: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    let make = || {
        tempfile::Builder::new()
            .prefix(prefix)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
    };
    ensure_private_directory(parent)?;
    let made = match make() {
        // Another run removed `parent`, empty, as it finished (see
        // [`remove_if_empty`]): make it again.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            ensure_private_directory(parent)?;
            make()
        }
        other => other,
    };
    made.map_err(|error| {
        StoreError::io(
            format!("creating a private directory in {}", parent.display()),
            error,
        )
    })
}

/// Removes the directory `path` if it is empty (a shared parent of
/// private directories, once the last is gone); anything else is left.
pub fn remove_if_empty(path: &Path) {
    let _ = fs::remove_dir(path);
}

/// A new directory with a random name, mode 0700, in the system's
/// temporary directory: for callers that were given no place of their own.
pub fn private_temporary_directory(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|error| StoreError::io("creating a private temporary directory", error))
}

/// Makes `path` (and missing parents) a directory, mode 0700 if new, and
/// checks that it is a real directory (not a symlink) owned by this user
/// that no one else may write to; where group or others may, that is
/// taken away.
pub fn ensure_private_directory(path: &Path) -> Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(path) {
        Ok(()) => {}
        Err(error) => {
            return Err(StoreError::io(
                format!("creating {}", path.display()),
                error,
            ));
        }
    }
    let meta = fs::symlink_metadata(path)
        .map_err(|error| StoreError::io(format!("reading {}", path.display()), error))?;
    let refuse = |why: &str| {
        Err(StoreError::Invalid(format!(
            "{} {why}; cairn keeps private files there",
            path.display()
        )))
    };
    if !meta.is_dir() {
        return refuse("is not a directory (a symlink?)");
    }
    if meta.uid() != effective_uid() {
        return refuse("belongs to another user");
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|error| StoreError::io(format!("making {} private", path.display()), error))?;
    }
    Ok(())
}

/// Creates the file `path`, mode 0600; fails if anything (a symlink too)
/// is there already.
pub fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| StoreError::io(format!("creating {}", path.display()), error))
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_places_are_private_and_refuse_symlinks() {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let parent = scratch.path().join("cache/staging");
        let directory = private_directory_in(&parent, "cairn-").expect("private directory");
        let mode = |path: &Path| fs::metadata(path).expect("stat").mode() & 0o777;
        assert_eq!(mode(directory.path()), 0o700);
        assert_eq!(mode(&parent), 0o700);
        let file = directory.path().join("copy");
        create_private_file(&file).expect("file");
        assert_eq!(mode(&file), 0o600);
        assert!(create_private_file(&file).is_err(), "created exclusively");

        let elsewhere = scratch.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("elsewhere");
        let link = scratch.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        let error = ensure_private_directory(&link).expect_err("a symlink");
        assert!(error.to_string().contains("link"), "{error}");
    }
}
