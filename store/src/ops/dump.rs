//! Dump: a component, or a subtree of one, as a tar or zip archive,
//! streamed to a writer (stdout, a file) without touching the filesystem.
//!
//! 1. List the selection (`COMPONENT[/PATH]`) through
//!    [`list_entries`], which reads its trees (each checked against its
//!    id) and sorts the entries by path, so a directory comes before what
//!    it holds.
//! 2. Write each entry: directories and symlinks as headers, files as a
//!    header (the recorded size) and then their chunks, each read and
//!    checked against its id as the archive asks for it, and the whole
//!    file against its recorded size and hash at its end.
//!
//! Entries are named `COMPONENT/PATH` (a single-file component's file as
//! `COMPONENT/FILE`, as a restore lays it out), with the recorded mode,
//! owner (tar) and mtime. A check that fails ends the dump with
//! [`StoreError::Corrupt`] naming the file; what was written before
//! cannot be taken back, so a reader must discard the archive when the
//! dump fails (the CLI removes an `--output` file).
//!
//! Never writes to the repository or the filesystem.

use crate::error::{Result, StoreError};
use crate::format::manifest::SnapshotBody;
use crate::format::tree::{EntryKind, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::listing::{ListedEntry, list_entries};
use crate::repository::Repository;
use std::io::{Read, Write};

/// The archive format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// POSIX ustar with GNU long names, as GNU tar and bsdtar read.
    Tar,
    /// Zip, deflated, written as a stream (sizes and CRCs in data
    /// descriptors after each file), so it can go down a pipe.
    Zip,
}

/// What a dump wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpOutcome {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// File content bytes, checked.
    pub bytes: u64,
}

/// Writes the archive of `selector` in snapshot `body` to `out`.
pub fn dump(
    repository: &Repository,
    index: &dyn IndexCache,
    body: &SnapshotBody,
    snapshot: &str,
    selector: &str,
    format: ArchiveFormat,
    out: &mut dyn Write,
) -> Result<DumpOutcome> {
    let selector = selector.trim_matches('/');
    let component_name = selector.split('/').next().unwrap_or_default();
    let component =
        body.component(component_name)
            .ok_or_else(|| StoreError::ComponentNotFound {
                name: component_name.into(),
                snapshot: snapshot.into(),
                existing: body.component_names(),
            })?;
    let mut entries = list_entries(repository, index, body, snapshot, Some(selector))?;
    if component.kind.is_single_file() {
        // Listed as the component; archived under its file's name.
        for item in &mut entries {
            item.path = format!("{}/{}", component.name, item.entry.display_name());
        }
    } else if selector == component.name
        && let Some(root) = &component.root
    {
        // The component's own directory, with its recorded metadata.
        entries.insert(
            0,
            ListedEntry {
                path: component.name.clone(),
                entry: TreeEntry {
                    name: component.name.as_bytes().to_vec(),
                    kind: EntryKind::Directory,
                    mode: root.mode,
                    uid: root.uid,
                    gid: root.gid,
                    mtime: root.mtime,
                    mtime_nanos: root.mtime_nanos,
                    ctime: 0,
                    ctime_nanos: 0,
                    inode: 0,
                    size: 0,
                    chunks: None,
                    hash: None,
                    subtree: Some(component.tree),
                    target: None,
                },
            },
        );
    }
    let mut outcome = DumpOutcome::default();
    match format {
        ArchiveFormat::Tar => write_tar(repository, index, &entries, out, &mut outcome)?,
        ArchiveFormat::Zip => write_zip(repository, index, &entries, out, &mut outcome)?,
    }
    Ok(outcome)
}

fn writing(error: std::io::Error) -> StoreError {
    StoreError::io("writing the archive", error)
}

fn write_tar(
    repository: &Repository,
    index: &dyn IndexCache,
    entries: &[ListedEntry],
    out: &mut dyn Write,
    outcome: &mut DumpOutcome,
) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    for item in entries {
        let entry = &item.entry;
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(u64::from(entry.uid));
        header.set_gid(u64::from(entry.gid));
        header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
        match entry.kind {
            EntryKind::Directory => {
                outcome.directories += 1;
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{}/", item.path), std::io::empty())
                    .map_err(writing)?;
            }
            EntryKind::Symlink => {
                outcome.symlinks += 1;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                let target = String::from_utf8_lossy(entry.target.as_deref().unwrap_or_default())
                    .into_owned();
                builder
                    .append_link(&mut header, &item.path, target)
                    .map_err(writing)?;
            }
            EntryKind::File => {
                outcome.files += 1;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(entry.size);
                let mut reader = ChunkReader::new(repository, index, item);
                let appended = builder.append_data(&mut header, &item.path, &mut reader);
                if let Some(failure) = reader.failure.take() {
                    return Err(failure);
                }
                appended.map_err(writing)?;
                outcome.bytes += entry.size;
            }
        }
    }
    builder
        .into_inner()
        .map_err(writing)?
        .flush()
        .map_err(writing)
}

fn write_zip(
    repository: &Repository,
    index: &dyn IndexCache,
    entries: &[ListedEntry],
    out: &mut dyn Write,
    outcome: &mut DumpOutcome,
) -> Result<()> {
    use zip::write::SimpleFileOptions;
    let zipping = |error: zip::result::ZipError| {
        StoreError::io("writing the archive", std::io::Error::other(error))
    };
    let mut archive = zip::ZipWriter::new_stream(out);
    for item in entries {
        let entry = &item.entry;
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(entry.mode)
            .last_modified_time(zip_time(entry.mtime))
            .large_file(entry.size >= u64::from(u32::MAX));
        match entry.kind {
            EntryKind::Directory => {
                outcome.directories += 1;
                archive
                    .add_directory(format!("{}/", item.path), options)
                    .map_err(zipping)?;
            }
            EntryKind::Symlink => {
                outcome.symlinks += 1;
                let target = String::from_utf8_lossy(entry.target.as_deref().unwrap_or_default())
                    .into_owned();
                archive
                    .add_symlink(&item.path, target, options)
                    .map_err(zipping)?;
            }
            EntryKind::File => {
                outcome.files += 1;
                archive.start_file(&item.path, options).map_err(zipping)?;
                let mut reader = ChunkReader::new(repository, index, item);
                let copied = std::io::copy(&mut reader, &mut archive);
                if let Some(failure) = reader.failure.take() {
                    return Err(failure);
                }
                copied.map_err(writing)?;
                outcome.bytes += entry.size;
            }
        }
    }
    archive.finish().map_err(zipping)?.flush().map_err(writing)
}

/// A zip (DOS) time from seconds since the epoch, in UTC; times zip
/// cannot hold (before 1980, after 2107) become its earliest.
fn zip_time(seconds: i64) -> zip::DateTime {
    let civil = jiff::Timestamp::from_second(seconds)
        .map(|time| time.to_zoned(jiff::tz::TimeZone::UTC).datetime())
        .ok();
    civil
        .and_then(|time| {
            zip::DateTime::from_date_and_time(
                u16::try_from(time.year()).ok()?,
                u8::try_from(time.month()).ok()?,
                u8::try_from(time.day()).ok()?,
                u8::try_from(time.hour()).ok()?,
                u8::try_from(time.minute()).ok()?,
                u8::try_from(time.second()).ok()?,
            )
            .ok()
        })
        .unwrap_or_default()
}

/// A file's content as a reader: each chunk read and checked as it is
/// needed, the whole checked against the recorded size and hash before
/// the end is reported. A failed check is kept in `failure` (the archive
/// writer sees only an I/O error) for the caller to return.
struct ChunkReader<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    item: &'a ListedEntry,
    next_chunk: usize,
    buffer: Vec<u8>,
    position: usize,
    hasher: blake3::Hasher,
    read: u64,
    failure: Option<StoreError>,
}

impl<'a> ChunkReader<'a> {
    fn new(repository: &'a Repository, index: &'a dyn IndexCache, item: &'a ListedEntry) -> Self {
        ChunkReader {
            repository,
            index,
            item,
            next_chunk: 0,
            buffer: Vec::new(),
            position: 0,
            hasher: repository.id_hasher().hasher(),
            read: 0,
            failure: None,
        }
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::corrupt(format!("file {}", self.item.path), reason)
    }

    /// The next chunk, checked; `None` after the last, once the whole
    /// file is checked.
    fn next(&mut self) -> Result<Option<Vec<u8>>> {
        let entry = &self.item.entry;
        let chunks = entry.chunks.as_deref().unwrap_or_default();
        let Some(chunk) = chunks.get(self.next_chunk) else {
            let hash = Id(*self.hasher.finalize().as_bytes());
            if self.read != entry.size || entry.hash.is_some_and(|expected| expected != hash) {
                return Err(
                    self.corrupt("its content does not match its recorded size and hash".into())
                );
            }
            return Ok(None);
        };
        self.next_chunk += 1;
        let location = self
            .index
            .lookup(chunk)?
            .ok_or_else(|| self.corrupt(format!("chunk {chunk} is in no index file")))?;
        let bytes = self
            .repository
            .read_blob(&location)
            .map_err(|error| match error {
                StoreError::Corrupt { .. } | StoreError::Missing { .. } => {
                    self.corrupt(format!("chunk {chunk}: {error}"))
                }
                other => other,
            })?;
        // Bounded by the recorded size: a chunk list that runs past it is
        // damage, found before more is written.
        self.read += bytes.len() as u64;
        if self.read > entry.size {
            return Err(self.corrupt("its chunks hold more than its recorded size".into()));
        }
        self.hasher.update(&bytes);
        Ok(Some(bytes))
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.failure.is_some() {
            return Err(std::io::Error::other("an earlier chunk failed its check"));
        }
        while self.position == self.buffer.len() {
            match self.next() {
                Ok(Some(bytes)) => {
                    self.buffer = bytes;
                    self.position = 0;
                }
                Ok(None) => return Ok(0),
                Err(error) => {
                    let message = error.to_string();
                    self.failure = Some(error);
                    return Err(std::io::Error::other(message));
                }
            }
        }
        let count = out.len().min(self.buffer.len() - self.position);
        out[..count].copy_from_slice(&self.buffer[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}
