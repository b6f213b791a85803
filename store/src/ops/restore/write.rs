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
//! The file gets its metadata; the caller syncs a batch of such files with
//! one `syncfs` and only then renames each into place (or, for a component
//! built in a staging directory, writes each under its final name there
//! and moves the whole directory into place at the end; [`super::place`]
//! does both). A chunk that fails its check never reaches the target.
//! Runs of zeros are left as holes, so sparse files stay sparse. Large
//! files are written with `O_DIRECT` where the filesystem allows it
//! ([`super::output`]).
//!
//! Owns the per-file write and its counters; never renames a file into
//! place before its whole-file hash matched.

use super::fetch::{BlobCache, FetchCounters, Sources, fetch_blobs, window_bytes};
use super::ground::Ground;
use super::output::HashingWriter;
use super::place::{apply_file_metadata, creation_mode, io_at, temporary_beside};
use super::plan::{LocalChunk, PlannedEntry};
use crate::error::{Result, StoreError};
use crate::format::index::BlobLocation;
use crate::id::{Id, IdHasher};
use crate::index::IndexCache;
use crate::progress::{Amount, Progress};
use crate::repository::Repository;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What writing did, shared by the threads of one restore.
#[derive(Default)]
pub struct WriteCounters {
    /// Reads from the main repository, in spans and one blob at a time.
    pub fetch: FetchCounters,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Bytes taken from the target's old copies.
    pub bytes_reused: AtomicU64,
}

pub struct Writer<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
    /// Where a chunk comes from when the repository cannot give it intact.
    pub sources: &'a Sources<'a>,
    pub counters: &'a WriteCounters,
    pub progress: &'a dyn Progress,
}

impl Writer<'_> {
    /// Writes a file under a temporary name beside its destination and
    /// checks it; returns that name. Not yet durable: the caller syncs a
    /// batch of these at once ([`super::place::sync_filesystem`]) and then renames each
    /// into place ([`super::place::commit`]).
    /// Chunks in `cache` are taken from it.
    /// `staged_at`: the file's place in its component's staging directory,
    /// where it is written under its final name, renamed with the whole
    /// directory later.
    /// Every file is created and opened through `ground`'s directory
    /// handles, never through a symlink; `owners`: the snapshot's owner
    /// is applied (as root).
    pub fn prepare_file(
        &self,
        item: &PlannedEntry,
        cache: &BlobCache,
        staged_at: Option<&Path>,
        ground: &Ground,
        owners: bool,
    ) -> Result<PathBuf> {
        let temporary = match staged_at {
            Some(path) => path.to_path_buf(),
            None => temporary_beside(&item.destination)?,
        };
        let (directory, _) = ground.parent_of(&temporary)?;
        let temporary_name = temporary.file_name().unwrap_or_default();
        let remove = || {
            let _ = directory.dir.remove(temporary_name, false);
        };
        let place = Place {
            ground,
            temporary: &temporary,
            owners,
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
        let mut written = self.write_verified(item, cache, &place, !several_chunks);
        if several_chunks && matches!(written, Err(StoreError::Corrupt { .. })) {
            remove();
            written = self.write_verified(item, cache, &place, true);
        }
        match written {
            Ok(()) => Ok(temporary),
            Err(error) => {
                remove();
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
        place: &Place,
        check_ids: bool,
    ) -> Result<()> {
        let temporary = place.temporary;
        let entry = &item.entry;
        let chunks = entry.chunks.as_deref().unwrap_or_default();
        // The target's old copy, opened through the ground too: a symlink
        // swapped in for it is not read.
        let old_copy = if item.local_chunks.is_empty() {
            None
        } else {
            place
                .ground
                .parent_of(&item.destination)
                .ok()
                .and_then(|(directory, name)| directory.dir.open_file(name).ok())
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

        let (directory, _) = place.ground.parent_of(temporary)?;
        let file = directory
            .dir
            .create_file(
                temporary.file_name().unwrap_or_default(),
                creation_mode(entry.mode),
            )
            .map_err(io_at("creating", temporary))?;
        std::thread::scope(|scope| -> Result<()> {
            let single_chunk = chunks.len() == 1;
            let mut output = HashingWriter::new(
                file,
                entry.size,
                (!single_chunk).then(|| self.repository.id_hasher()),
            );
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
                        (Some(old), Some(local), _) => {
                            match read_local(old, id, local, self.repository.id_hasher()) {
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
                                        .or_else(|why| {
                                            self.sources.fetch(self.repository, id, why)
                                        })?,
                                ),
                            }
                        }
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
                            let fetched = fetched.or_else(|why| {
                                self.sources.fetch(self.repository, id, why).map(Some)
                            });
                            match fetched? {
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
            apply_file_metadata(&file, entry, temporary, place.owners)?;
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

    /// Blob at `location` of the main repository, unless it is no longer
    /// asked (see [`Sources::skips_main`]) and a fallback lists the blob:
    /// one that only the main repository holds is still asked of it, as a
    /// last chance, rather than failing its file unasked.
    fn fetch_single(&self, location: &BlobLocation) -> Result<Vec<u8>> {
        if self.sources.skips_main() && self.sources.lists(&location.entry.id) {
            return Err(self.sources.skipped(self.repository));
        }
        self.counters.fetch.requests.fetch_add(1, Ordering::Relaxed);
        self.counters
            .fetch
            .chunks_fetched
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .fetch
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
        // A main repository no longer asked leaves each blob to the
        // fallbacks, one by one.
        let cache = match self.sources.skips_main() {
            true => BlobCache::default(),
            false => fetch_blobs(self.repository, wanted, &self.counters.fetch, check_ids),
        };
        (cache, end.max(position + 1))
    }
}

/// Where one file is written: the ground whose handles reach it, its
/// temporary (or staged) path, and whether owners are given.
struct Place<'a> {
    ground: &'a Ground,
    temporary: &'a Path,
    owners: bool,
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

fn missing(id: &Id) -> StoreError {
    StoreError::Missing {
        object: format!("chunk {id} (not in any index file)"),
    }
}

/// Reads a chunk from the old copy; `None` unless it still hashes right.
fn read_local(old: &File, id: &Id, local: &LocalChunk, hasher: IdHasher) -> Option<Vec<u8>> {
    let mut data = vec![0u8; local.length as usize];
    old.read_exact_at(&mut data, local.offset).ok()?;
    (hasher.id(&data) == *id).then_some(data)
}
