//! Writing a restore's plan to disk, one entry at a time.
//!
//! Each file is written to a temporary name beside its final place: chunks
//! the old copy already holds are read from it (and re-hashed, in case it
//! changed since planning); the rest come from the batch's prefetched
//! [`BlobCache`] (see [`super::prefetch`]); a large file, which its batch
//! does not prefetch, reads its chunks a window at a time, in spans as a
//! batch does. A blob neither gave intact is read on its own, and then
//! asked of other repositories ([`Sources`]).
//! Every chunk is checked against its id, the whole file against its
//! BLAKE3 hash; except that the chunks a file of several reads in windows
//! are checked through that whole-file hash alone (it covers every byte of
//! them), and only if it fails is the file written again with each chunk
//! checked, which names the damaged one and fetches it from elsewhere.
//! The file gets its metadata; the caller syncs a batch of
//! such files with one `syncfs` and only then renames each into place (or,
//! for a component built in a staging directory, writes each under its
//! final name there and moves the whole directory into place at the end,
//! [`move_into_place`]). A chunk that fails its check never reaches the
//! target.
//! Runs of zeros are left as holes, so sparse files stay sparse. Large
//! files are written with `O_DIRECT` where the filesystem allows it.
//!
//! Owns the per-file write and its counters; never renames a file into
//! place before its whole-file hash matched.

use super::plan::{LocalChunk, PlannedEntry, TEMPORARY_PREFIX};
use super::prefetch::{BlobCache, fetch_blobs, window_bytes};
use super::sources::Sources;
use crate::error::{Result, StoreError};
use crate::format::index::BlobLocation;
use crate::format::pack::BlobDecoder;
use crate::format::tree::TreeEntry;
use crate::id::Id;
use crate::index::IndexCache;
use crate::os::direct_io::{self, AlignedBuffer};
use crate::progress::{Amount, Progress};
use crate::repository::Repository;
use filetime::FileTime;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct WriteCounters {
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub chunks_fetched: AtomicU64,
    /// Stored (possibly compressed) bytes read from the repository.
    pub bytes_fetched: AtomicU64,
    /// Bytes taken from the target's old copies.
    pub bytes_reused: AtomicU64,
    /// Reads of the main repository's packs (one GET each over S3).
    pub requests: AtomicU64,
    /// What went wrong in prefetch reads (a failed read, a blob failing its
    /// check): the blob was fetched again file by file, but the damage or
    /// fault is reported, never hidden. The count, and the first few whys.
    pub prefetch_failures: std::sync::Mutex<(u64, Vec<String>)>,
}

impl WriteCounters {
    /// Keeps a prefetch failure for the report.
    pub fn note_prefetch_failure(&self, why: String) {
        let mut failures = self
            .prefetch_failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        failures.0 += 1;
        if failures.1.len() < 20 {
            failures.1.push(why);
        }
    }
}

pub struct Writer<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
    /// Where a chunk comes from when the repository cannot give it intact.
    pub sources: &'a Sources<'a>,
    pub counters: &'a WriteCounters,
    pub progress: &'a dyn Progress,
}

pub(crate) fn running_as_root() -> bool {
    // Asked once: a restore would otherwise ask for every file it writes.
    static ROOT: OnceLock<bool> = OnceLock::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    *ROOT.get_or_init(|| unsafe { libc::geteuid() == 0 })
}

fn io_at<'a>(action: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
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

/// A file's bytes on their way to disk, buffered, and hashed a buffer at
/// a time: BLAKE3 hashes many 1 KiB pieces of one input side by side, so
/// a 4 KiB page handed to it alone used a quarter of its SIMD lanes (with
/// AVX-512), where a full buffer uses them all.
///
/// A large file is written with `O_DIRECT` where the filesystem allows it
/// ([`DIRECT_MIN`], [`crate::os::direct_io`] says why): its buffer is flushed
/// only in aligned lengths, the tail padded with zeros and the file cut
/// back to its length.
///
/// Runs of zeros become holes. Consecutive runs (a long stretch of zeros
/// comes as many zero chunks) are gathered first and placed as one, so
/// that a direct file, which can only leave aligned holes, writes the
/// zeros before the first aligned place and after the last once per
/// stretch, not once per chunk.
///
/// A buffered file asks the kernel every [`WRITEBACK_STEP`] bytes to start
/// writing its pages out, without waiting: the batch's `syncfs` then finds
/// little left to do, where it used to find a whole large file dirty
/// (with much RAM, the kernel writes nothing back on its own for a long
/// time) and the restore waited for all of it at once.
struct HashingWriter {
    file: File,
    buffer: AlignedBuffer,
    filled: usize,
    /// How much of the buffer is hashed already (the rest is at flush).
    hashed: usize,
    /// Zeros hashed but not yet placed: they follow the buffer.
    pending_zeros: u64,
    /// `None` when the caller needs no whole-file hash.
    hasher: Option<blake3::Hasher>,
    /// Where the buffer's first byte goes in the file (holes included).
    flushed: u64,
    /// Where the last write ended, padding included.
    file_end: u64,
    /// Where writeback was last asked (buffered files only).
    written_back: u64,
    direct: bool,
}

/// How much of a large buffered file is written before its writeback is
/// started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Files from this size on are written with `O_DIRECT`. A direct write
/// waits for the device, so small files, written by the hundred and
/// synced together, stay buffered.
const DIRECT_MIN: u64 = 4 << 20;

/// The buffer of a file written with `O_DIRECT`.
const DIRECT_BUFFER: usize = 1 << 20;

impl HashingWriter {
    /// `size` is the file's length, which sizes the buffer and decides
    /// whether it is written directly.
    fn new(file: File, size: u64, hash: bool) -> Self {
        let direct = size >= DIRECT_MIN && direct_io::enable(&file);
        // Sized to the file: a 1 MiB buffer for each of 20,000 small
        // files kept the allocator busy consolidating freed memory.
        let capacity = if direct {
            DIRECT_BUFFER
        } else {
            size.clamp(4096, 1 << 20) as usize
        };
        HashingWriter {
            file,
            buffer: AlignedBuffer::new(capacity),
            filled: 0,
            hashed: 0,
            pending_zeros: 0,
            hasher: hash.then(blake3::Hasher::new),
            flushed: 0,
            file_end: 0,
            written_back: 0,
            direct,
        }
    }

    /// Where the next byte goes, once pending zeros are placed.
    fn position(&self) -> u64 {
        self.flushed + self.filled as u64 + self.pending_zeros
    }

    fn hash(&mut self, data: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
    }

    /// Hashes what the buffer holds and is not hashed yet.
    fn hash_buffered(&mut self) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&self.buffer.as_slice()[self.hashed..self.filled]);
        }
        self.hashed = self.filled;
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        self.place_pending_zeros()?;
        // A buffered file's piece of at least a buffer goes to the file as
        // it is (a small file's only chunk is one): through the buffer, it
        // was copied once more for nothing.
        if !self.direct && self.filled == 0 && data.len() >= self.buffer.capacity() {
            self.hash(data);
            self.file.write_all_at(data, self.flushed)?;
            self.flushed += data.len() as u64;
            self.file_end = self.flushed;
            self.start_writeback();
            return Ok(());
        }
        while !data.is_empty() {
            let capacity = self.buffer.capacity();
            let taken = data.len().min(capacity - self.filled);
            self.buffer.as_mut_slice()[self.filled..self.filled + taken]
                .copy_from_slice(&data[..taken]);
            self.filled += taken;
            data = &data[taken..];
            if self.filled == capacity {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    /// Takes `zeros` (all zero bytes) into the hash now, and leaves their
    /// placing to the next write or the end.
    fn skip(&mut self, zeros: &[u8]) {
        self.hash_buffered();
        self.hash(zeros);
        self.pending_zeros += zeros.len() as u64;
    }

    /// Places the pending zeros as a hole; a direct file writes those
    /// before the first aligned place and after the last as data.
    fn place_pending_zeros(&mut self) -> std::io::Result<()> {
        let zeros = std::mem::take(&mut self.pending_zeros);
        if zeros == 0 {
            return Ok(());
        }
        let align = if self.direct {
            direct_io::ALIGN as u64
        } else {
            1
        };
        let at = self.flushed + self.filled as u64;
        let before = ((align - at % align) % align).min(zeros);
        let hole = (zeros - before) / align * align;
        self.put_hashed_zeros(before)?;
        if hole > 0 {
            self.flush_buffer()?;
            self.flushed += hole;
        }
        self.put_hashed_zeros(zeros - before - hole)
    }

    /// Puts `count` zeros, hashed already, into the buffer.
    fn put_hashed_zeros(&mut self, mut count: u64) -> std::io::Result<()> {
        while count > 0 {
            let capacity = self.buffer.capacity();
            let taken = count.min((capacity - self.filled) as u64) as usize;
            self.buffer.as_mut_slice()[self.filled..self.filled + taken].fill(0);
            self.filled += taken;
            self.hashed = self.filled;
            count -= taken as u64;
            if self.filled == capacity {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    /// Writes what the buffer holds. A direct file's buffer is flushed
    /// whole, or at a hole on an aligned length, or at the end, padded.
    fn flush_buffer(&mut self) -> std::io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        self.hash_buffered();
        let length = self.filled;
        (self.direct, self.file_end) = direct_io::write_at(
            &self.file,
            self.buffer.as_mut_slice(),
            length,
            self.flushed,
            self.direct,
        )?;
        self.flushed += length as u64;
        self.filled = 0;
        self.hashed = 0;
        if !self.direct {
            self.start_writeback();
        }
        Ok(())
    }

    fn start_writeback(&mut self) {
        if self.flushed - self.written_back < WRITEBACK_STEP {
            return;
        }
        // SAFETY: the descriptor is valid for the life of `self.file`.
        // Only a hint: should it fail, the batch's sync still writes
        // everything, so its result is not needed.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.written_back as libc::off64_t,
                (self.flushed - self.written_back) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.written_back = self.flushed;
    }

    /// The file, everything written to it, its length set (a trailing
    /// hole, a direct file's padding), and the hash of all its bytes.
    fn finish(mut self) -> std::io::Result<(File, u64, Option<Id>)> {
        self.place_pending_zeros()?;
        self.flush_buffer()?;
        let length = self.position();
        if self.file_end != length {
            self.file.set_len(length)?;
        }
        let hash = self.hasher.map(|hasher| Id(*hasher.finalize().as_bytes()));
        Ok((self.file, length, hash))
    }
}

impl Writer<'_> {
    /// Writes a file under a temporary name beside its destination and
    /// checks it; returns that name. Not yet durable: the caller syncs a
    /// batch of these at once ([`sync_filesystem`]) and then renames each
    /// into place ([`commit`]).
    /// Chunks in `cache` are taken from it.
    /// `staged_at`: the file's place in its component's staging directory,
    /// where it is written under its final name, renamed with the whole
    /// directory later.
    pub fn prepare_file(
        &self,
        item: &PlannedEntry,
        cache: &BlobCache,
        staged_at: Option<&Path>,
    ) -> Result<PathBuf> {
        let temporary = match staged_at {
            Some(path) => path.to_path_buf(),
            None => temporary_beside(&item.destination)?,
        };
        // A file of several chunks is hashed whole anyway, and that hash
        // covers every chunk of it: so the chunks it reads in windows are
        // not hashed each as well (that was a second BLAKE3 pass over most
        // of a restore's bytes). Should the file not match, it is written
        // again with every chunk checked, which names a damaged chunk and
        // fetches it from elsewhere.
        let several_chunks = item
            .entry
            .chunks
            .as_ref()
            .is_some_and(|chunks| chunks.len() > 1);
        let mut written = self.write_verified(item, cache, &temporary, !several_chunks);
        if several_chunks && matches!(written, Err(StoreError::Corrupt { .. })) {
            let _ = fs::remove_file(&temporary);
            written = self.write_verified(item, cache, &temporary, true);
        }
        match written {
            Ok(()) => Ok(temporary),
            Err(error) => {
                let _ = fs::remove_file(&temporary);
                Err(error)
            }
        }
    }

    /// Writes the file at `temporary` and checks it against its whole-file
    /// hash; `check_ids`: also checks each chunk read in windows against
    /// its id.
    fn write_verified(
        &self,
        item: &PlannedEntry,
        cache: &BlobCache,
        temporary: &Path,
        check_ids: bool,
    ) -> Result<()> {
        let entry = &item.entry;
        let chunks = entry.chunks.as_deref().unwrap_or_default();
        let old_copy = if item.local_chunks.is_empty() {
            None
        } else {
            File::open(&item.destination).ok()
        };
        let mut locations: Vec<Option<BlobLocation>> = Vec::with_capacity(chunks.len());
        for id in chunks {
            let elsewhere = cache.get(id).is_some()
                || (old_copy.is_some() && item.local_chunks.contains_key(id));
            locations.push(if elsewhere {
                None
            } else {
                self.index.lookup(id)?
            });
        }

        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(creation_mode(entry.mode))
            .open(temporary)
            .map_err(io_at("creating", temporary))?;
        std::thread::scope(|scope| -> Result<()> {
            let single_chunk = chunks.len() == 1;
            let mut output = HashingWriter::new(file, entry.size, !single_chunk);
            let mut window = BlobCache::default();
            let mut window_end = 0;
            // The window after the current one, read while this one is written
            // (a large file over object storage would otherwise wait for each
            // window's round trips in turn): where it starts, and its reader.
            let mut ahead: Option<(usize, std::thread::ScopedJoinHandle<(BlobCache, usize)>)> =
                None;
            // Consecutive repeats of one chunk (runs of zeros above all) are
            // decoded once.
            let mut previous: Option<(Id, Held, bool)> = None;
            for (position, id) in chunks.iter().enumerate() {
                if previous.as_ref().is_none_or(|(last, _, _)| last != id) {
                    let cached = cache.get(id);
                    let held = match (&old_copy, item.local_chunks.get(id), cached) {
                        (Some(old), Some(local), _) => match read_local(old, id, local) {
                            Some(data) => {
                                self.counters
                                    .bytes_reused
                                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                                Held::Owned(data)
                            }
                            // The old copy changed since planning: fetch instead.
                            None => Held::Owned(
                                self.locate(id)
                                    .and_then(|location| self.fetch_single(&location))
                                    .or_else(|why| self.sources.fetch(id, why))?,
                            ),
                        },
                        (_, _, Some(data)) => Held::Cached(data),
                        _ => {
                            if position >= window_end {
                                (window, window_end) = match ahead.take() {
                                    Some((start, reader)) if start <= position => {
                                        match reader.join() {
                                            Ok((read, end)) if position < end => (read, end),
                                            _ => self.read_window(&locations, position, check_ids),
                                        }
                                    }
                                    _ => self.read_window(&locations, position, check_ids),
                                };
                                if window_end < locations.len() {
                                    let (locations, start) = (&locations, window_end);
                                    ahead = Some((
                                        start,
                                        scope.spawn(move || {
                                            self.read_window(locations, start, check_ids)
                                        }),
                                    ));
                                }
                            }
                            let fetched = match (window.get(id), &locations[position]) {
                                (Some(_), _) => Ok(None),
                                (None, Some(location)) => self.fetch_single(location).map(Some),
                                (None, None) => Err(missing(id)),
                            };
                            match fetched.or_else(|why| self.sources.fetch(id, why).map(Some))? {
                                Some(data) => Held::Owned(data),
                                None => Held::InWindow,
                            }
                        }
                    };
                    let data = held.bytes(id, &window)?;
                    let zeros = data.iter().all(|&byte| byte == 0);
                    previous = Some((*id, held, zeros));
                }
                if let Some((id, held, zeros)) = &previous {
                    let data = held.bytes(id, &window)?;
                    if *zeros {
                        output.skip(data);
                    } else {
                        output.write(data).map_err(io_at("writing", temporary))?;
                    }
                    self.progress.advance(Amount::bytes(data.len() as u64));
                }
            }
            let (file, written, file_hash) =
                output.finish().map_err(io_at("writing", temporary))?;
            // A file of one chunk hashes to that chunk's id (FORMAT section 10),
            // and its bytes were checked against that id when read.
            let hash = file_hash.or(match chunks {
                [only] => Some(*only),
                _ => None,
            });
            if written != entry.size || hash.is_none() || entry.hash != hash {
                return Err(StoreError::corrupt(
                    format!("restored file {}", item.relative),
                    "content does not match the snapshot's whole-file hash",
                ));
            }
            apply_file_metadata(&file, entry, temporary)?;
            self.counters
                .bytes_written
                .fetch_add(written, Ordering::Relaxed);
            Ok(())
        })?;
        self.counters.files_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.index.lookup(id)?.ok_or_else(|| missing(id))
    }

    fn fetch_single(&self, location: &BlobLocation) -> Result<Vec<u8>> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_fetched
            .fetch_add(u64::from(location.entry.length), Ordering::Relaxed);
        self.repository.read_blob(location)
    }

    /// Reads the located chunks from `position` on, each once, until
    /// [`window_bytes`] of them, and on to the end of the shared frame the
    /// last one lies in (a frame cut between two windows was read and
    /// decompressed for each); returns them and the position after the
    /// last one the window covers.
    fn read_window(
        &self,
        locations: &[Option<BlobLocation>],
        position: usize,
        check_ids: bool,
    ) -> (BlobCache, usize) {
        let mut seen = HashSet::new();
        let mut wanted = Vec::new();
        let mut bytes = 0u64;
        let mut end = position;
        let limit = window_bytes(self.repository.backend().parallelism());
        let mut last_frame = None;
        for location in &locations[position..] {
            let frame = location.as_ref().and_then(shared_frame);
            if bytes >= limit && (frame.is_none() || frame != last_frame) {
                break;
            }
            end += 1;
            if let Some(location) = location
                && seen.insert(location.entry.id)
            {
                bytes += u64::from(location.entry.raw_length);
                wanted.push((location.pack, location.entry));
            }
            last_frame = frame;
        }
        (
            fetch_blobs(self.repository, wanted, self.counters, check_ids),
            end.max(position + 1),
        )
    }
}

/// The shared frame a blob lies in (its pack and the frame's offset), if
/// it shares one.
fn shared_frame(location: &BlobLocation) -> Option<(Id, u64)> {
    location
        .entry
        .frame_offset
        .map(|_| (location.pack, location.entry.offset))
}

/// Where the chunk being written lies.
enum Held<'c> {
    /// In the batch's prefetched cache.
    Cached(&'c [u8]),
    /// In the large file's current window, under its id: looked up again
    /// rather than copied out, as the window is replaced only when the
    /// next chunk is another one.
    InWindow,
    /// Read on its own, from the target's old copy or from elsewhere.
    Owned(Vec<u8>),
}

impl Held<'_> {
    fn bytes<'a>(&'a self, id: &Id, window: &'a BlobCache) -> Result<&'a [u8]> {
        match self {
            Held::Cached(data) => Ok(data),
            Held::InWindow => window.get(id).ok_or_else(|| missing(id)),
            Held::Owned(data) => Ok(data),
        }
    }
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

fn missing(id: &Id) -> StoreError {
    StoreError::Missing {
        object: format!("chunk {id} (not in any index file)"),
    }
}

/// Reads a chunk from the old copy; `None` unless it still hashes right.
fn read_local(old: &File, id: &Id, local: &LocalChunk) -> Option<Vec<u8>> {
    let mut data = vec![0u8; local.length as usize];
    old.read_exact_at(&mut data, local.offset).ok()?;
    (Id::of(&data) == *id).then_some(data)
}

/// The mode a file is created with before its content is written and
/// checked: its own where that grants nothing special, so that (the
/// umask allowing) no `fchmod` follows, a change of the inode the kernel
/// pays for again on each of a restore's small files; owner-only where
/// the mode carries set-user-id, set-group-id or sticky bits, which it
/// gets only once the content has been checked.
fn creation_mode(mode: u32) -> u32 {
    if mode & 0o7000 == 0 {
        mode & 0o777
    } else {
        0o600
    }
}

/// Gives `file` the entry's owner, mode and mtime, changing owner and mode
/// only where they differ (each change dirties the inode again).
fn apply_file_metadata(file: &File, entry: &TreeEntry, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
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
pub fn apply_root_metadata(
    root: &crate::format::manifest::RootMetadata,
    destination: &Path,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
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

/// Chunks of one file by id, for callers that rebuild a file in memory.
pub fn read_file_bytes(
    repository: &Repository,
    index: &dyn IndexCache,
    entry: &TreeEntry,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(entry.size as usize);
    let mut cache: HashMap<Id, Vec<u8>> = HashMap::new();
    let mut decoder = BlobDecoder::default();
    for id in entry.chunks.as_deref().unwrap_or_default() {
        if !cache.contains_key(id) {
            let location = index.lookup(id)?.ok_or_else(|| missing(id))?;
            cache.insert(*id, repository.read_blob_with(&mut decoder, &location)?);
        }
        bytes.extend_from_slice(&cache[id]);
    }
    if entry.hash != Some(Id::of(&bytes)) {
        return Err(StoreError::corrupt(
            format!("file {}", entry.display_name()),
            "content does not match the snapshot's whole-file hash",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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

    fn noise(seed: u8, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut bytes);
        bytes
    }

    /// Writes `pieces` (bytes, and whether they are zeros to skip) through
    /// a writer for a file of their total size. Returns whether it wrote
    /// directly, the file's bytes, its allocated bytes, the hash the writer
    /// computed and the one expected.
    fn write_pieces(pieces: &[(Vec<u8>, bool)]) -> (bool, Vec<u8>, u64, Option<Id>, Id) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("file");
        let file = File::create(&path).expect("create");
        let size: usize = pieces.iter().map(|(bytes, _)| bytes.len()).sum();
        let mut writer = HashingWriter::new(file, size as u64, true);
        let direct = writer.direct;
        for (bytes, zeros) in pieces {
            if *zeros {
                writer.skip(bytes);
            } else {
                writer.write(bytes).expect("write");
            }
        }
        let (file, length, hash) = writer.finish().expect("finish");
        assert_eq!(length, size as u64);
        drop(file);
        let expected: Vec<u8> = pieces.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
        let allocated = fs::metadata(&path).expect("metadata").blocks() * 512;
        let read = fs::read(&path).expect("read back");
        assert_eq!(read.len(), expected.len());
        (
            direct,
            read,
            allocated,
            hash,
            Id(*blake3::hash(&expected).as_bytes()),
        )
    }

    #[test]
    fn a_large_file_with_holes_anywhere_reads_back_exactly_and_stays_sparse() {
        // Zero runs that start and end off the 4 KiB grid, a long one that
        // comes as many chunks (as a stretch of zeros does), one that ends
        // the file, and a data tail that is not a whole block.
        let mut pieces = vec![
            (noise(1, 5_000), false),
            (vec![0; 70_001], true),
            (noise(2, 3 << 20), false),
        ];
        pieces.extend((0..128).map(|_| (vec![0; 65_536], true)));
        pieces.extend([
            (noise(3, 1_234), false),
            (vec![0; 12_289], true),
            (noise(4, 1 << 20), false),
            (vec![0; 777], true),
        ]);
        let expected: Vec<u8> = pieces.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
        let data: u64 = pieces
            .iter()
            .filter(|(_, zeros)| !zeros)
            .map(|(bytes, _)| bytes.len() as u64)
            .sum();
        let (direct, read, allocated, hash, wanted) = write_pieces(&pieces);
        assert!(read == expected, "file differs (direct: {direct})");
        assert_eq!(hash, Some(wanted));
        // Each stretch of zeros costs at most two partly written blocks.
        assert!(
            allocated <= data + (128 << 10),
            "{allocated} bytes allocated for {data} bytes of data (direct: {direct})"
        );
    }

    #[test]
    fn a_large_file_is_written_directly_where_the_filesystem_allows() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let probe = File::create(directory.path().join("probe")).expect("create");
        let supported = direct_io::enable(&probe);
        let pieces = vec![(noise(5, (DIRECT_MIN as usize) + 4_095), false)];
        let (direct, read, _, hash, wanted) = write_pieces(&pieces);
        assert_eq!(direct, supported);
        assert!(read == pieces[0].0);
        assert_eq!(hash, Some(wanted));
    }

    #[test]
    fn a_small_file_ending_in_zeros_is_written_buffered_and_whole() {
        let pieces = vec![(noise(6, 10_000), false), (vec![0; 9_000], true)];
        let (direct, read, _, hash, wanted) = write_pieces(&pieces);
        assert!(!direct);
        assert_eq!(read.len(), 19_000);
        assert!(read[10_000..].iter().all(|&byte| byte == 0));
        assert_eq!(hash, Some(wanted));
    }
}
