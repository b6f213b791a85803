//! Prefetch for one batch of a restore: the chunks a batch of files needs,
//! read from the repository pack by pack ([`super::fetch`]), not file by
//! file.
//!
//! Owns choosing which files are prefetched (small ones; a large file is
//! read a window at a time by the writer, so it is never held in memory
//! whole) and forming batches by file count and by bytes to fetch.
//!
//! Never fails a restore and never hands out a blob that failed its check:
//! what the fetch leaves out of the cache, the writer's per-file path
//! fetches again (falling back to other repositories through
//! [`super::fetch::Sources`]) and reports if that fails too. Once the main
//! repository stopped answering, a batch is read from the fallbacks, in
//! spans, as far as they list its blobs ([`Sources::prefetch_elsewhere`]):
//! asked for each batch, a silent repository cost a read timeout per
//! batch.

use super::fetch::{BlobCache, FetchCounters, MIB, Sources, fetch_blobs};
use super::plan::{Action, PlannedEntry};
use crate::format::tree::EntryKind;
use crate::index::IndexCache;
use crate::repository::Repository;
use std::collections::HashSet;

/// Files needing more than this from the repository are not prefetched
/// with their batch: they read their own windows (see [`fetch_blobs`]).
pub const LARGE_FILE_BYTES: u64 = 4 * MIB;
/// Raw bytes one batch may prefetch: what its cache holds at most. A
/// component holds two such caches (the batch written, the next one
/// read), and three components write at once. Batches of small files are
/// mostly cut at [`BATCH_FILES`] before this (the toolchain's 52,000 files
/// made 105 batches with 32 MiB), so a smaller cap costs few syncs; 32 MiB
/// put the toolchain restore's peak RSS at 180-220
/// MiB, over restic's 131, and 8 MiB (with [`super::pipeline`]'s two
/// large files at once) brought it to 103-106 MiB at the same wall time
/// (alternating runs, loaded machine).
pub const BATCH_FETCH_BYTES: u64 = 8 * MIB;
/// Files made durable together by one filesystem sync.
pub const BATCH_FILES: usize = 512;

/// Whether a file's chunks are prefetched with its batch's.
fn prefetched(item: &PlannedEntry) -> bool {
    written(item) && item.fetch_bytes <= LARGE_FILE_BYTES
}

/// Whether a file is written and reads its own windows: it holds two of
/// them ([`super::fetch::window_bytes`]) while it is written.
pub fn reads_windows(item: &PlannedEntry) -> bool {
    written(item) && item.fetch_bytes > LARGE_FILE_BYTES
}

/// Whether a file's content is written (not only its metadata fixed).
fn written(item: &PlannedEntry) -> bool {
    item.entry.kind == EntryKind::File
        && matches!(
            item.action,
            Action::Create | Action::Update | Action::Replace
        )
}

/// Cuts `files` into batches of at most [`BATCH_FILES`] files and at most
/// [`BATCH_FETCH_BYTES`] of prefetched bytes (a batch always takes at
/// least one file).
pub fn batches<'a, 'b>(files: &'b [&'a PlannedEntry]) -> Vec<&'b [&'a PlannedEntry]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (position, item) in files.iter().enumerate() {
        let needed = if prefetched(item) {
            item.fetch_bytes
        } else {
            0
        };
        let count = position - start;
        if count > 0 && (count >= BATCH_FILES || bytes + needed > BATCH_FETCH_BYTES) {
            batches.push(&files[start..position]);
            start = position;
            bytes = 0;
        }
        bytes += needed;
    }
    if start < files.len() {
        batches.push(&files[start..]);
    }
    batches
}

/// Reads the chunks `batch` needs from the repository into a cache. What
/// cannot be read or checked is left out; see the module header.
pub fn prefetch(
    repository: &Repository,
    index: &dyn IndexCache,
    batch: &[&PlannedEntry],
    counters: &FetchCounters,
    sources: &Sources,
) -> BlobCache {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for item in batch.iter().filter(|item| prefetched(item)) {
        for id in item.entry.chunks.as_deref().unwrap_or_default() {
            if !item.local_chunks.contains_key(id) && seen.insert(*id) {
                ids.push(*id);
            }
        }
    }
    let (mut cache, ids) = match sources.skips_main() {
        true => sources.prefetch_elsewhere(repository, ids),
        false => (BlobCache::default(), ids),
    };
    // A chunk no index lists is the per-file path's to report.
    let wanted = ids
        .iter()
        .filter_map(|id| index.lookup(id).ok().flatten())
        .map(|location| (location.pack, location.entry))
        .collect();
    cache.extend(fetch_blobs(repository, wanted, counters, true));
    cache
}
