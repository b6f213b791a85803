//! Prefetch for one batch of a restore: read the chunks a batch of files
//! needs from the repository pack by pack, not file by file.
//!
//! Owns choosing which files are prefetched (small ones; a large file is
//! read a window at a time, with [`fetch_blobs`], so it is never held in
//! memory whole), forming batches by
//! file count and by bytes to fetch, grouping the batch's chunks by pack
//! into spans (neighbours merged across small gaps, a span capped in
//! size), reading the spans with a bounded number of requests in flight,
//! and checking every blob (`decode_blob`) before it enters the
//! [`BlobCache`] the batch's writers read from (a large file's windows,
//! read with the same code, may leave the check of content to the file's
//! whole hash: see [`fetch_blobs`]).
//!
//! Never fails a restore and never hands out a blob that failed its check:
//! a span that cannot be read, or a blob in it that does not decode to its
//! id, is left out of the cache, and the writer's per-file path fetches it
//! again (falling back to other repositories through `Sources`) and reports
//! it if that fails too.

use super::plan::{Action, PlannedEntry};
use super::write::WriteCounters;
use crate::backend::ObjectKind;
use crate::format::pack::spans::{Span, spans};
use crate::format::pack::{BlobDecoder, BlobEntry, Decoded, by_stored_bytes};
use crate::format::tree::EntryKind;
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Files needing more than this from the repository are not prefetched
/// with their batch: they read their own windows (see [`fetch_blobs`]).
pub const LARGE_FILE_BYTES: u64 = 4 * MIB;
/// Raw bytes of a large file read ahead at once, in spans as a batch is.
/// Each large file being written holds two windows (the one written and
/// the one read ahead), and a component may write several side by side. A
/// local disk answers at once, so its windows are small: 8 MiB windows put
/// a full restore's peak RSS above restic's (114 vs 110 MiB), 4 MiB ones
/// brought it to 95 MiB. Object storage pays a round trip per span, so its
/// windows stay larger.
pub fn window_bytes(backend_parallelism: usize) -> u64 {
    if backend_parallelism > 1 {
        8 * MIB
    } else {
        4 * MIB
    }
}
/// Raw bytes one batch may prefetch: what its cache holds at most.
pub const BATCH_FETCH_BYTES: u64 = 32 * MIB;
/// Files made durable together by one filesystem sync.
pub const BATCH_FILES: usize = 512;
/// Reads in flight at least, even where the backend asks for one: a local
/// disk gains from a few, and each reader also decodes what it read.
const MIN_READERS: usize = 2;

/// Frames of a span one decoding task takes at least: a shared frame
/// holds about 128 KiB, enough that handing work between threads costs
/// little beside decompressing and hashing it; two keep a run of sole
/// blobs from being handed out one by one.
const DECODE_BATCH_FRAMES: usize = 2;

/// Checked blobs of one batch, by id; the blobs of a shared frame are
/// held as places in its content, not copies.
#[derive(Default)]
pub struct BlobCache {
    blobs: HashMap<Id, Decoded>,
}

impl BlobCache {
    pub fn get(&self, id: &Id) -> Option<&[u8]> {
        self.blobs.get(id).map(Decoded::bytes)
    }
}

/// Whether a file's chunks are prefetched with its batch's.
fn prefetched(item: &PlannedEntry) -> bool {
    item.entry.kind == EntryKind::File
        && matches!(
            item.action,
            Action::Create | Action::Update | Action::Replace
        )
        && item.fetch_bytes <= LARGE_FILE_BYTES
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
    counters: &WriteCounters,
) -> BlobCache {
    let mut seen = HashSet::new();
    let mut wanted = Vec::new();
    for item in batch.iter().filter(|item| prefetched(item)) {
        for id in item.entry.chunks.as_deref().unwrap_or_default() {
            if item.local_chunks.contains_key(id) || !seen.insert(*id) {
                continue;
            }
            // A chunk no index lists is the per-file path's to report.
            if let Ok(Some(location)) = index.lookup(id) {
                wanted.push((location.pack, location.entry));
            }
        }
    }
    fetch_blobs(repository, wanted, counters, true)
}

/// Reads `wanted` blobs (pack, entry) in spans, up to the backend's
/// parallelism at once, into a cache of those that pass their check:
/// against their ids with `check_ids`, otherwise of their lengths only,
/// for a caller that checks their content itself (see
/// [`crate::format::pack::BlobDecoder::decode_sharing`]).
pub fn fetch_blobs(
    repository: &Repository,
    wanted: Vec<(Id, BlobEntry)>,
    counters: &WriteCounters,
    check_ids: bool,
) -> BlobCache {
    let spans = spans(wanted);
    if spans.is_empty() {
        return BlobCache::default();
    }
    let readers = repository
        .backend()
        .parallelism()
        .max(MIN_READERS)
        .min(spans.len());
    let next = AtomicUsize::new(0);
    let read_some = || {
        let mut blobs = Vec::new();
        while let Some(span) = spans.get(next.fetch_add(1, Ordering::Relaxed)) {
            read_span(repository, span, counters, check_ids, &mut blobs);
        }
        blobs
    };
    let mut cache = BlobCache::default();
    if readers == 1 {
        cache.blobs.extend(read_some());
        return cache;
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers).map(|_| scope.spawn(read_some)).collect();
        for handle in handles {
            // A reader that panicked leaves its blobs to the per-file path.
            if let Ok(blobs) = handle.join() {
                cache.blobs.extend(blobs);
            }
        }
    });
    cache
}

/// Reads one span and appends the blobs in it that pass their check.
fn read_span(
    repository: &Repository,
    span: &Span,
    counters: &WriteCounters,
    check_ids: bool,
    blobs: &mut Vec<(Id, Decoded)>,
) {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let bytes = match repository.backend().read_range(
        ObjectKind::Pack,
        &span.pack.to_hex(),
        span.start,
        span.end - span.start,
    ) {
        Ok(bytes) => bytes,
        Err(error) => {
            counters.note_prefetch_failure(format!("reading pack {}: {error}", span.pack));
            return;
        }
    };
    counters
        .bytes_fetched
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    // Decoded side by side: a large file's window is often one span, and
    // decoding it on the reader's thread alone left the restore of one
    // large file on one core.
    let bytes = bytes.as_slice();
    // Blobs sharing a frame stay together, so it is decompressed once.
    let frames: Vec<&[BlobEntry]> = by_stored_bytes(&span.blobs).collect();
    let decoded: Vec<_> = frames
        .par_iter()
        .with_min_len(DECODE_BATCH_FRAMES)
        .flat_map_iter(|frame| {
            let mut decoder = BlobDecoder::default();
            frame.iter().filter_map(move |entry| {
                let stored = span.blob_bytes(bytes, entry)?;
                let decoded = decoder.decode_sharing(entry, stored, &span.pack, check_ids);
                Some(decoded.map(|raw| (entry.id, raw)))
            })
        })
        .collect();
    for result in decoded {
        match result {
            Ok(blob) => {
                counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                blobs.push(blob);
            }
            Err(error) => counters.note_prefetch_failure(error.to_string()),
        }
    }
}
