//! [`Dir`]: an open directory, and the calls that act on names inside it
//! rather than on paths (`openat`, `mkdirat`, `renameat`, `symlinkat`,
//! `fchownat`, `utimensat`, `unlinkat`), each refusing to follow a symlink
//! at the name it is given. A restore walks its target through these, so a
//! directory swapped for a symlink (or a file) by another user while the
//! restore runs makes the next step fail instead of writing elsewhere.
//!
//! Built on `rustix`, whose wrappers are safe: no `unsafe` here. Owns no
//! policy (what to create, which metadata to apply); never follows a
//! symlink in the name it acts on, and never resolves a path with more than
//! one component except in [`Dir::open`], where the caller's path is trusted.

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Timestamps};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// An open directory, opened without following a symlink at its last name.
#[derive(Debug)]
pub(crate) struct Dir {
    file: File,
}

fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno.raw_os_error())
}

const DIRECTORY_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A name inside a directory must be one component: no `/`, not `..`.
fn one_component(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_encoded_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b".." || bytes == b"." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single name"),
        ));
    }
    Ok(name)
}

impl Dir {
    /// Opens the directory at `path` (its parents resolved as usual; the
    /// last name must not be a symlink).
    pub(crate) fn open(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(path, DIRECTORY_FLAGS, Mode::empty()).map_err(io_error)?;
        Ok(Dir::from_fd(fd))
    }

    /// Opens the directory at `path`, following a symlink at its last name
    /// too: for a directory the user named (a restore's target).
    pub(crate) fn open_following(path: &Path) -> io::Result<Dir> {
        let flags = DIRECTORY_FLAGS.difference(OFlags::NOFOLLOW);
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io_error)?;
        Ok(Dir::from_fd(fd))
    }

    fn from_fd(fd: OwnedFd) -> Dir {
        Dir {
            file: File::from(fd),
        }
    }

    /// The directory itself, for `fchmod`, `fchown`, `futimens`, `fstat`
    /// and `fsync`.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Opens the directory `name` inside this one; fails (ELOOP, ENOTDIR)
    /// where `name` is a symlink or not a directory.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let fd = rustix::fs::openat(
            self.file.as_fd(),
            one_component(name)?,
            DIRECTORY_FLAGS,
            Mode::empty(),
        )
        .map_err(io_error)?;
        Ok(Dir::from_fd(fd))
    }

    /// Creates the directory `name` (mode 0700 until its own mode is
    /// applied) and opens it. Where something exists at `name` already, it
    /// is opened only if it is a real directory, never through a symlink.
    /// Returns the directory and whether it was created.
    pub(crate) fn create_dir(&self, name: &OsStr) -> io::Result<(Dir, bool)> {
        let created = match rustix::fs::mkdirat(self.file.as_fd(), one_component(name)?, Mode::RWXU)
        {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(errno) => return Err(io_error(errno)),
        };
        Ok((self.open_dir(name)?, created))
    }

    /// Creates the file `name`, which must not exist (not even as a
    /// dangling symlink), for writing, with `mode`.
    pub(crate) fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY
            .union(OFlags::CREATE)
            .union(OFlags::EXCL)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC);
        let fd = rustix::fs::openat(
            self.file.as_fd(),
            one_component(name)?,
            flags,
            Mode::from_bits_truncate(mode),
        )
        .map_err(io_error)?;
        Ok(File::from(fd))
    }

    /// Opens the existing file `name` for reading (a symlink fails).
    pub(crate) fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let flags = OFlags::RDONLY
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC)
            .union(OFlags::NONBLOCK);
        let fd = rustix::fs::openat(
            self.file.as_fd(),
            one_component(name)?,
            flags,
            Mode::empty(),
        )
        .map_err(io_error)?;
        Ok(File::from(fd))
    }

    /// Renames `from` in this directory to `to` in `into`, replacing what
    /// is there unless `no_replace`.
    pub(crate) fn rename(
        &self,
        from: &OsStr,
        into: &Dir,
        to: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let (from, to) = (one_component(from)?, one_component(to)?);
        let result = if no_replace {
            rustix::fs::renameat_with(
                self.file.as_fd(),
                from,
                into.file.as_fd(),
                to,
                RenameFlags::NOREPLACE,
            )
        } else {
            rustix::fs::renameat(self.file.as_fd(), from, into.file.as_fd(), to)
        };
        match result {
            // A filesystem without RENAME_NOREPLACE: check, then rename.
            Err(Errno::INVAL) if no_replace => {
                if into.kind_of(to)?.is_some() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                rustix::fs::renameat(self.file.as_fd(), from, into.file.as_fd(), to)
                    .map_err(io_error)
            }
            other => other.map_err(io_error),
        }
    }

    /// Creates a symlink `name` pointing at `target`.
    pub(crate) fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        rustix::fs::symlinkat(target, self.file.as_fd(), one_component(name)?).map_err(io_error)
    }

    /// Changes the owner of `name` itself (a symlink is not followed).
    pub(crate) fn chown_entry(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            self.file.as_fd(),
            one_component(name)?,
            owner(uid),
            group(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_error)
    }

    /// Sets the access and modification times of `name` itself (a symlink
    /// is not followed).
    pub(crate) fn set_entry_times(&self, name: &OsStr, seconds: i64, nanos: u32) -> io::Result<()> {
        let time = rustix::fs::Timespec {
            tv_sec: seconds,
            tv_nsec: i64::from(nanos.min(999_999_999)) as _,
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        rustix::fs::utimensat(
            self.file.as_fd(),
            one_component(name)?,
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_error)
    }

    /// Removes the file or symlink (`directory`: the empty directory)
    /// `name`.
    pub(crate) fn remove(&self, name: &OsStr, directory: bool) -> io::Result<()> {
        let flags = if directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rustix::fs::unlinkat(self.file.as_fd(), one_component(name)?, flags).map_err(io_error)
    }

    /// Removes `name` and, if it is a directory, everything below it, each
    /// level through its own handle (a symlink is removed, never
    /// followed). Nothing there is not an error.
    pub(crate) fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
        match self.kind_of(name)? {
            None => Ok(()),
            Some(EntryType::Directory) => {
                let child = self.open_dir(name)?;
                let mut names = Vec::new();
                for entry in rustix::fs::Dir::read_from(child.file.as_fd()).map_err(io_error)? {
                    let entry = entry.map_err(io_error)?;
                    let bytes = entry.file_name().to_bytes();
                    if bytes != b"." && bytes != b".." {
                        names.push(std::ffi::OsString::from_vec(bytes.to_vec()));
                    }
                }
                for inner in &names {
                    child.remove_tree(inner)?;
                }
                self.remove(name, true)
            }
            Some(_) => self.remove(name, false),
        }
    }

    /// What `name` is (not following a symlink), or `None` if nothing is
    /// there.
    pub(crate) fn kind_of(&self, name: &OsStr) -> io::Result<Option<EntryType>> {
        match rustix::fs::statat(
            self.file.as_fd(),
            one_component(name)?,
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            // st_mode is narrower than u32 on some targets.
            #[allow(clippy::unnecessary_cast)]
            Ok(stat) => Ok(Some(EntryType::of_mode(stat.st_mode as u32))),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(io_error(errno)),
        }
    }

    /// The directory's device and inode, which say whether two handles are
    /// the same directory.
    pub(crate) fn identity(&self) -> io::Result<(u64, u64)> {
        let stat = rustix::fs::fstat(self.file.as_fd()).map_err(io_error)?;
        Ok((stat.st_dev as u64, stat.st_ino as u64))
    }

    /// Makes the directory's entries durable (after renames into it).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// What kind of thing a name is, as `lstat` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryType {
    Directory,
    File,
    Symlink,
    Other,
}

impl EntryType {
    fn of_mode(mode: u32) -> EntryType {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => EntryType::Directory,
            libc::S_IFREG => EntryType::File,
            libc::S_IFLNK => EntryType::Symlink,
            _ => EntryType::Other,
        }
    }

    /// How an error message names it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            EntryType::Directory => "a directory",
            EntryType::File => "a file",
            EntryType::Symlink => "a symlink",
            EntryType::Other => "a special file",
        }
    }
}

/// `None` for the id -1, which means "leave unchanged" to the kernel.
fn owner(uid: u32) -> Option<rustix::fs::Uid> {
    (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw_unchecked(uid))
}

fn group(gid: u32) -> Option<rustix::fs::Gid> {
    (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw_unchecked(gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_that_are_symlinks_are_never_followed() {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        let root = scratch.path().join("root");
        std::fs::create_dir(&root).expect("root");
        symlink(&outside, root.join("sub")).expect("symlink");
        let dir = Dir::open(&root).expect("open root");
        let name = OsStr::new("sub");
        // ENOTDIR or ELOOP, as the kernel checks O_DIRECTORY or O_NOFOLLOW
        // first.
        let refused = dir.open_dir(name).expect_err("a symlink").raw_os_error();
        assert!(
            matches!(refused, Some(libc::ELOOP | libc::ENOTDIR)),
            "{refused:?}"
        );
        assert!(dir.create_dir(name).is_err(), "an existing symlink");
        assert_eq!(dir.kind_of(name).expect("stat"), Some(EntryType::Symlink));
        symlink(outside.join("file"), root.join("link")).expect("dangling");
        assert!(dir.create_file(OsStr::new("link"), 0o600).is_err());
        assert!(Dir::open(&root.join("sub")).is_err(), "the last name");
        assert!(dir.open_dir(OsStr::new("../root")).is_err(), "one name");
        assert_eq!(std::fs::read_dir(&outside).expect("list").count(), 0);

        let (made, created) = dir.create_dir(OsStr::new("made")).expect("mkdir");
        assert!(created);
        made.create_file(OsStr::new("f"), 0o600).expect("file");
        made.rename(OsStr::new("f"), &dir, OsStr::new("g"), true)
            .expect("rename");
        assert!(root.join("g").is_file());
        let (_, created) = dir.create_dir(OsStr::new("made")).expect("exists");
        assert!(!created);
    }
}
