//! [`LocalBackend`]: a repository in a directory on a local filesystem.
//!
//! Layout under the root: `config`, `keys/<name>`, `data/<first two hex
//! digits>/<name>` for packs, `index/<name>`, `snapshots/<name>`,
//! `forgotten/<name>`, `deletions/<name>`, and `tmp/`
//! for objects being written. An object is written whole into `tmp/`,
//! fsynced, then hard-linked to its final name (the link fails if the name
//! exists, which gives create-if-absent without a race) and the directory is
//! fsynced. A crash leaves at most a stray file in `tmp/`, which no reader
//! ever looks at and later writers remove once it is old.

use super::{Backend, Created, ObjectInfo, ObjectKind, check_name, missing, past_end, too_large};
use crate::error::{Result, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Objects from this size on (packs, mostly) are written with `O_DIRECT`
/// where the filesystem allows it (see `crate::os::direct_io` for why);
/// smaller ones, through the page cache.
const DIRECT_WRITE_MIN: usize = 1 << 20;

/// Temporary files older than this belong to a crashed writer.
const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// Opens an object for reading, with its path (for errors) and its
    /// size as the filesystem lists it.
    fn open_sized(&self, kind: ObjectKind, name: &str) -> Result<(PathBuf, File, u64)> {
        let path = self.path(kind, name)?;
        let file = File::open(&path).map_err(|error| match error.kind() {
            ErrorKind::NotFound => missing(kind, name),
            _ => io_error("opening", &path, error),
        })?;
        let size = file
            .metadata()
            .map_err(|error| io_error("reading metadata of", &path, error))?
            .len();
        Ok((path, file, size))
    }

    /// A backend over `root`; nothing is created until the first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An object's size, `Missing` if absent: a server answers a read too
    /// large for its limit, or a range past the end, with the size alone.
    pub fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        self.open_sized(kind, name).map(|(_, _, size)| size)
    }

    fn directory(&self, kind: ObjectKind) -> PathBuf {
        match kind {
            ObjectKind::Config => self.root.clone(),
            ObjectKind::Key => self.root.join("keys"),
            ObjectKind::Pack => self.root.join("data"),
            ObjectKind::Index => self.root.join("index"),
            ObjectKind::Snapshot => self.root.join("snapshots"),
            ObjectKind::Forget => self.root.join("forgotten"),
            ObjectKind::Deletion => self.root.join("deletions"),
            ObjectKind::KeySlot => self.root.join("keyslots"),
            ObjectKind::Keyring => self.root.join("keyring"),
            ObjectKind::Annotation => self.root.join("annotations"),
        }
    }

    fn path(&self, kind: ObjectKind, name: &str) -> Result<PathBuf> {
        check_name(kind, name)?;
        Ok(match kind {
            ObjectKind::Pack if name.len() >= 2 => self.directory(kind).join(&name[..2]).join(name),
            _ => self.directory(kind).join(name),
        })
    }
}

fn io_error(action: &str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::io(format!("{action} {}", path.display()), source)
}

fn sync_directory(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| io_error("syncing directory", path, error))
}

/// Creates a directory (and missing parents) and fsyncs each new one's
/// parent, so an object created inside survives a power loss.
fn create_directory_durably(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_directory_durably(parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(io_error("creating", path, error)),
    }
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => sync_directory(Path::new(".")),
        Some(parent) => sync_directory(parent),
        None => Ok(()),
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // Only uniqueness matters here; fall back to the clock if the OS RNG fails.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        bytes = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn prefetch(&self, kind: ObjectKind, name: &str) {
        if let Ok(path) = self.path(kind, name) {
            crate::os::will_read::hint(&path, 0);
        }
    }

    fn prefetches(&self) -> bool {
        true
    }

    /// Removes temporary files left by writers that crashed long ago and
    /// returns how many it removed. A young temporary file may belong to a
    /// running writer, so it is left alone.
    fn remove_stale_temporaries(&self) -> Result<usize> {
        let directory = self.root.join("tmp");
        let entries = match fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(io_error("listing", &directory, error)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|error| io_error("listing", &directory, error))?;
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > STALE_TEMPORARY_AGE);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        let final_path = self.path(kind, name)?;
        if final_path.exists() {
            return Ok(Created::AlreadyExisted);
        }
        let temporary_directory = self.root.join("tmp");
        create_directory_durably(&temporary_directory)?;
        let temporary = temporary_directory.join(format!("{name}.{}", random_suffix()));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            let direct =
                bytes.len() >= DIRECT_WRITE_MIN && crate::os::direct_io::write_whole(&file, bytes)?;
            if !direct {
                file.write_all(bytes)?;
            }
            file.sync_all()
        };
        if let Err(error) = write() {
            let _ = fs::remove_file(&temporary);
            return Err(io_error("writing", &temporary, error));
        }
        let parent = final_path.parent().ok_or_else(|| {
            StoreError::Invalid(format!("no parent for {}", final_path.display()))
        })?;
        create_directory_durably(parent)?;
        let linked = fs::hard_link(&temporary, &final_path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                sync_directory(parent)?;
                Ok(Created::New)
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(Created::AlreadyExisted),
            Err(error) => Err(io_error("linking", &final_path, error)),
        }
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        let (path, mut file, size) = self.open_sized(kind, name)?;
        if size > limit {
            return Err(too_large(kind, name, size, limit));
        }
        // At most one byte past the limit, should the file grow meanwhile
        // (objects are immutable, but the directory is not ours alone).
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut file)
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|error| io_error("reading", &path, error))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(kind, name, bytes.len() as u64, limit));
        }
        Ok(bytes)
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let mut buffer = Vec::new();
        self.read_range_into(kind, name, offset, length, &mut buffer)?;
        Ok(buffer)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
        buffer: &mut Vec<u8>,
    ) -> Result<()> {
        let (path, mut file, size) = self.open_sized(kind, name)?;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(past_end(kind, name, offset, length, size));
        }
        // Read into spare capacity rather than a zero-filled buffer: spans
        // run to 16 MiB, and filling them with zeros first showed in a
        // restore's profile. The range is within the file's size, checked
        // above, before anything is reserved.
        buffer.clear();
        buffer.reserve_exact(length as usize);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| (&mut file).take(length).read_to_end(buffer))
            .map_err(|error| io_error("reading", &path, error))?;
        if buffer.len() as u64 != length {
            return Err(io_error(
                "reading",
                &path,
                std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("{} of {length} bytes at offset {offset}", buffer.len()),
                ),
            ));
        }
        Ok(())
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let directory = self.directory(kind);
        let mut objects = Vec::new();
        if kind == ObjectKind::Config {
            if let Ok(meta) = fs::metadata(directory.join("config")) {
                objects.push(ObjectInfo {
                    name: "config".into(),
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
            return Ok(objects);
        }
        let mut directories = vec![directory];
        while let Some(directory) = directories.pop() {
            let entries = match fs::read_dir(&directory) {
                Ok(entries) => entries,
                Err(error) if error.kind() == ErrorKind::NotFound => continue,
                Err(error) => return Err(io_error("listing", &directory, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|error| io_error("listing", &directory, error))?;
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted since the directory was read (a prune, or a
                    // backup's own clean-up, running beside this one): a
                    // listing may or may not name what is removed while it
                    // runs, and every caller reads what it lists as a
                    // possibly missing object already.
                    Err(error) if error.kind() == ErrorKind::NotFound => continue,
                    Err(error) => {
                        return Err(io_error("reading metadata of", &entry.path(), error));
                    }
                };
                if meta.is_dir() {
                    if kind == ObjectKind::Pack {
                        directories.push(entry.path());
                    }
                    continue;
                }
                if let Some(name) = entry.file_name().to_str()
                    && check_name(kind, name).is_ok()
                {
                    objects.push(ObjectInfo {
                        name: name.to_string(),
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        Ok(objects)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("deleting", &path, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn create_is_create_if_absent() {
        let directory = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(directory.path());
        let name = "ab".repeat(32);
        assert_eq!(
            backend.create(ObjectKind::Pack, &name, b"first").unwrap(),
            Created::New
        );
        assert_eq!(
            backend.create(ObjectKind::Pack, &name, b"second").unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(
            backend.read(ObjectKind::Pack, &name, u64::MAX).unwrap(),
            b"first"
        );
        assert_eq!(
            backend.read_range(ObjectKind::Pack, &name, 1, 3).unwrap(),
            b"irs"
        );
        let listed = backend.list(ObjectKind::Pack).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].size),
            (name.as_str(), 5)
        );
        assert!(listed[0].modified.is_some());
    }

    #[test]
    fn large_objects_read_back_whole_whatever_their_length() {
        // Written with O_DIRECT where /tmp allows it: in pieces, the last
        // padded to a block and cut back.
        let directory = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(directory.path());
        for (seed, length) in [
            (1u8, DIRECT_WRITE_MIN),
            (2, 4 << 20),
            (3, (9 << 20) + 4_097),
        ] {
            let mut bytes = vec![0; length];
            blake3::Hasher::new()
                .update(&[seed])
                .finalize_xof()
                .fill(&mut bytes);
            let name = Id::of(&bytes).to_hex();
            assert_eq!(
                backend.create(ObjectKind::Pack, &name, &bytes).unwrap(),
                Created::New
            );
            let read = backend.read(ObjectKind::Pack, &name, u64::MAX).unwrap();
            assert_eq!(read.len(), length);
            assert!(read == bytes, "object of {length} bytes differs");
            assert!(
                fs::read_dir(directory.path().join("tmp"))
                    .unwrap()
                    .next()
                    .is_none()
            );
        }
    }

    #[test]
    fn range_past_the_end_is_corruption() {
        let directory = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(directory.path());
        backend.create(ObjectKind::Index, "aa", b"12345").unwrap();
        assert!(matches!(
            backend.read_range(ObjectKind::Index, "aa", 3, 5),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(directory.path());
        assert!(backend.create(ObjectKind::Index, "../x", b"1").is_err());
        assert!(backend.read(ObjectKind::Index, "a/b", 1024).is_err());
    }
}
