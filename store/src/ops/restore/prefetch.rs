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
//! [`BlobCache`] the batch's writers read from.
//!
//! Never fails a restore and never hands out a blob that failed its check:
//! a span that cannot be read, or a blob in it that does not decode to its
//! id, is left out of the cache, and the writer's per-file path fetches it
//! again (falling back to other repositories through `Sources`) and reports
//! it if that fails too.

use super::plan::{Action, PlannedEntry};
use super::write::WriteCounters;
use crate::backend::ObjectKind;
use crate::id::Id;
use crate::index::IndexCache;
use crate::pack::{BlobEntry, decode_blob};
use crate::repository::Repository;
use crate::tree::EntryKind;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Files needing more than this from the repository are not prefetched
/// with their batch: they read their own windows (see [`fetch_blobs`]).
pub const LARGE_FILE_BYTES: u64 = 4 * MIB;
/// Raw bytes of a large file read ahead at once, in spans as a batch is.
pub const WINDOW_BYTES: u64 = 8 * MIB;
/// Raw bytes one batch may prefetch: what its cache holds at most.
pub const BATCH_FETCH_BYTES: u64 = 32 * MIB;
/// Files made durable together by one filesystem sync.
pub const BATCH_FILES: usize = 512;
/// Blobs this close in a pack are read in one request, gap included: a
/// request costs more than reading a few hundred KiB more.
const SPAN_GAP: u64 = 256 * KIB;
/// A span never reads more than this, so a request's buffer stays small.
const SPAN_MAX: u64 = 16 * MIB;
/// Reads in flight at least, even where the backend asks for one: a local
/// disk gains from a few, and each reader also decodes what it read.
const MIN_READERS: usize = 2;

/// Checked blobs of one batch, by id.
#[derive(Default)]
pub struct BlobCache {
    blobs: HashMap<Id, Vec<u8>>,
}

impl BlobCache {
    pub fn get(&self, id: &Id) -> Option<&[u8]> {
        self.blobs.get(id).map(Vec::as_slice)
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

/// A range of one pack read with one request, and the blobs wanted in it.
#[derive(Debug, PartialEq, Eq)]
struct Span {
    pack: Id,
    start: u64,
    end: u64,
    blobs: Vec<BlobEntry>,
}

/// Groups blobs by pack and merges neighbours into spans.
fn spans(mut wanted: Vec<(Id, BlobEntry)>) -> Vec<Span> {
    wanted.sort_by_key(|(pack, entry)| (*pack, entry.offset));
    let mut spans: Vec<Span> = Vec::new();
    for (pack, entry) in wanted {
        let end = entry.offset + u64::from(entry.length);
        if let Some(span) = spans.last_mut()
            && span.pack == pack
            && entry.offset <= span.end + SPAN_GAP
            && end.max(span.end) - span.start <= SPAN_MAX
        {
            span.end = span.end.max(end);
            span.blobs.push(entry);
            continue;
        }
        spans.push(Span {
            pack,
            start: entry.offset,
            end,
            blobs: vec![entry],
        });
    }
    spans
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
    fetch_blobs(repository, wanted, counters)
}

/// Reads `wanted` blobs (pack, entry) in spans, up to the backend's
/// parallelism at once, into a cache of those that pass their check.
pub fn fetch_blobs(
    repository: &Repository,
    wanted: Vec<(Id, BlobEntry)>,
    counters: &WriteCounters,
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
            read_span(repository, span, counters, &mut blobs);
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
    blobs: &mut Vec<(Id, Vec<u8>)>,
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
    for entry in &span.blobs {
        let from = (entry.offset - span.start) as usize;
        let Some(stored) = bytes.get(from..from + entry.length as usize) else {
            continue;
        };
        match decode_blob(entry, stored, &span.pack) {
            Ok(raw) => {
                counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                blobs.push((entry.id, raw));
            }
            Err(error) => counters.note_prefetch_failure(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{BlobKind, Compression};

    fn blob(offset: u64, length: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id: Id::of(&offset.to_le_bytes()),
            offset,
            length,
            raw_length: length,
            compression: Compression::None,
        }
    }

    #[test]
    fn neighbours_merge_across_small_gaps_and_spans_stay_capped() {
        let a = Id::of(b"pack a");
        let b = Id::of(b"pack b");
        let chunk = 64 * 1024;
        let wanted = vec![
            (a, blob(10 * MIB, chunk)),
            (a, blob(0, chunk)),
            (b, blob(0, chunk)),
            (a, blob(u64::from(chunk) + SPAN_GAP, chunk)),
            (a, blob(u64::from(chunk) * 2 + SPAN_GAP * 2 + 1, chunk)),
        ];
        let found = spans(wanted);
        let summary: Vec<(Id, u64, u64, usize)> = found
            .iter()
            .map(|span| (span.pack, span.start, span.end, span.blobs.len()))
            .collect();
        let mut expected = vec![
            (a, 0, u64::from(chunk) * 2 + SPAN_GAP, 2),
            (
                a,
                u64::from(chunk) * 2 + SPAN_GAP * 2 + 1,
                u64::from(chunk) * 3 + SPAN_GAP * 2 + 1,
                1,
            ),
            (a, 10 * MIB, 10 * MIB + u64::from(chunk), 1),
            (b, 0, u64::from(chunk), 1),
        ];
        expected.sort();
        let mut summary = summary;
        summary.sort();
        assert_eq!(summary, expected);

        let many: Vec<(Id, BlobEntry)> = (0..600)
            .map(|index| (a, blob(index * u64::from(chunk), chunk)))
            .collect();
        let found = spans(many);
        assert!(found.iter().all(|span| span.end - span.start <= SPAN_MAX));
        assert_eq!(found.len(), 3, "600 × 64 KiB in 16 MiB spans");
        assert_eq!(
            found.iter().map(|span| span.blobs.len()).sum::<usize>(),
            600
        );
    }
}
