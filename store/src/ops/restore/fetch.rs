//! Fetching blobs for a restore: from the main repository's packs in
//! spans ([`fetch_blobs`]), and from other repositories when the main one
//! cannot give a blob intact ([`Sources`]).
//!
//! [`fetch_blobs`] groups wanted blobs by pack into spans (neighbours
//! merged across small gaps, a span capped in size), reads the spans with a
//! bounded number of requests in flight, and checks every blob
//! (`decode_blob`) before it enters the [`BlobCache`] that planning and
//! writing read from (a large file's windows may leave the check of content
//! to the file's whole hash: see [`fetch_blobs`]). It never fails: a span
//! that cannot be read, or a blob in it that does not decode to its id, is
//! left out of the cache and counted in [`FetchCounters`], and the caller
//! reads it again on its own.
//!
//! From a remote backend, the bases the deltas among the wanted blobs need
//! are read ahead (`Repository::read_bases_ahead`) and handed to the
//! decoders: fetched base by base, each was a round trip.
//!
//! [`Sources`] owns the fallback order and its accounting: first every
//! other location the main repository's index files list for the blob (a
//! planted index file may have shadowed the true one, or one copy may be
//! damaged; these are read from the index files once, on the first
//! failure), then other repositories holding the same chunks (written by
//! the same multi-repository backup, or by `cairn copy`), in order of
//! preference; whichever serves a blob is counted, and why the main
//! repository's first location could not is kept for the report. Once the
//! main repository stops answering (a read of it timed out or lost its
//! connection, after its own retries) and there are fallbacks, it is not
//! asked again in this restore ([`Sources::skips_main`]): each ask of a
//! silent service costs its whole timeout, and a restore that asked it for
//! every blob took minutes per megabyte.
//!
//! Knows nothing of plans, files or the target: planning and writing call
//! down into this module, never the other way. Never hands out a blob it
//! has not checked, and never writes to any repository.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::pack::spans::{Span, spans};
use crate::format::pack::{BlobDecoder, BlobEntry, Decoded, by_stored_bytes};
use crate::format::tree::Tree;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::read_tree;
use crate::repository::Repository;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;

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
/// Reads in flight at least, even where the backend asks for one: a local
/// disk gains from a few, and each reader also decodes what it read.
const MIN_READERS: usize = 2;

/// Frames of a span one decoding task takes at least: a shared frame
/// holds about 128 KiB, enough that handing work between threads costs
/// little beside decompressing and hashing it; two keep a run of sole
/// blobs from being handed out one by one.
const DECODE_BATCH_FRAMES: usize = 2;

/// At most this many of the main repository's failures are kept word for
/// word; the rest are only counted.
const KEPT_FAILURES: usize = 20;

/// Why a blob was not asked of a main repository that stopped answering.
const NOT_ASKED: &str = "not asked: it stopped answering earlier in this restore";

/// What fetching from the main repository did, shared by the threads of
/// one restore (or one plan's tree reads).
#[derive(Default)]
pub struct FetchCounters {
    pub chunks_fetched: AtomicU64,
    /// Stored (possibly compressed) bytes read from the repository.
    pub bytes_fetched: AtomicU64,
    /// Reads of the main repository's packs (one GET each over S3).
    pub requests: AtomicU64,
    /// What went wrong in span reads (a failed read, a blob failing its
    /// check): the blob was fetched again on its own, but the damage or
    /// fault is reported, never hidden. The count, and the first few whys.
    pub failures: Mutex<(u64, Vec<String>)>,
}

impl FetchCounters {
    /// Keeps a failed read or check for the report.
    pub fn note_failure(&self, why: String) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        failures.0 += 1;
        if failures.1.len() < KEPT_FAILURES {
            failures.1.push(why);
        }
    }

    /// The failures noted: how many, and the first few whys.
    pub fn into_failures(self) -> (u64, Vec<String>) {
        self.failures
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

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

    pub fn extend(&mut self, other: BlobCache) {
        self.blobs.extend(other.blobs);
    }
}

/// Reads `wanted` blobs (pack, entry) in spans, up to the backend's
/// parallelism at once, into a cache of those that pass their check:
/// against their ids with `check_ids`, otherwise of their lengths only,
/// for a caller that checks their content itself (see
/// [`crate::format::pack::BlobDecoder::decode_sharing`]).
pub fn fetch_blobs(
    repository: &Repository,
    wanted: Vec<(Id, BlobEntry)>,
    counters: &FetchCounters,
    check_ids: bool,
) -> BlobCache {
    // Only where a read is a round trip: from a local disk a base's read
    // is answered from the page cache, and its frame is mostly held
    // already (the repository keeps the frames of bases decoded last).
    // Measured on the real-applications restore (alternating, cold
    // cache): locally no faster, with 5% more CPU and 8 MiB more at the
    // peak; over S3 (moto on loopback), 4.4-6.6 s instead of 70-77 s.
    let remote = repository.backend().parallelism() > 1;
    let ahead = remote
        .then(|| {
            let entries: Vec<BlobEntry> = wanted.iter().map(|(_, entry)| *entry).collect();
            repository.read_bases_ahead(&entries)
        })
        .flatten();
    if let Some(ahead) = &ahead {
        // Counted as reads of the repository, not as chunks fetched.
        counters
            .requests
            .fetch_add(ahead.requests, Ordering::Relaxed);
        counters
            .bytes_fetched
            .fetch_add(ahead.bytes, Ordering::Relaxed);
    }
    let decoder = || match &ahead {
        Some(ahead) => repository.blob_decoder_holding(0, ahead.held()),
        None => repository.blob_decoder(),
    };
    read_spans(repository, wanted, counters, check_ids, &decoder)
}

/// Reads `wanted` in spans, up to the backend's parallelism at once, each
/// decoded by a decoder from `decoder`; keeps what passes its check.
fn read_spans(
    repository: &Repository,
    wanted: Vec<(Id, BlobEntry)>,
    counters: &FetchCounters,
    check_ids: bool,
    decoder: &(dyn Fn() -> BlobDecoder + Sync),
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
            read_span(repository, span, counters, check_ids, decoder, &mut blobs);
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
    counters: &FetchCounters,
    check_ids: bool,
    decoder: &(dyn Fn() -> BlobDecoder + Sync),
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
            counters.note_failure(format!("reading pack {}: {error}", span.pack));
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
            let mut decoder = decoder();
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
            Err(error) => counters.note_failure(error.to_string()),
        }
    }
}

/// A repository to fetch from when the main one fails.
#[derive(Clone, Copy)]
pub struct Fallback<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
}

/// What one fallback served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FallbackUse {
    /// The repository's location.
    pub repository: String,
    pub blobs: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Served {
    blobs: AtomicU64,
    bytes: AtomicU64,
}

impl Served {
    fn count(&self, raw: &[u8]) {
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
    }
}

pub struct Sources<'a> {
    fallbacks: &'a [Fallback<'a>],
    served: Vec<Served>,
    failures: Mutex<(u64, Vec<String>)>,
    /// The main repository's location, once another place its index
    /// files list a blob was asked for it (`Repository::listed_copies`).
    elsewhere: OnceLock<String>,
    /// What those other places served.
    served_elsewhere: Served,
    /// Set once a read of the main repository failed for want of an
    /// answer while there are fallbacks: the main one is not asked again.
    main_unanswering: AtomicBool,
}

impl<'a> Sources<'a> {
    pub fn new(fallbacks: &'a [Fallback<'a>]) -> Self {
        Sources {
            fallbacks,
            served: fallbacks.iter().map(|_| Served::default()).collect(),
            failures: Mutex::new((0, Vec::new())),
            elsewhere: OnceLock::new(),
            served_elsewhere: Served::default(),
            main_unanswering: AtomicBool::new(false),
        }
    }

    /// Whether the main repository is no longer asked: a read of it failed
    /// for want of an answer (timed out, connection refused or lost, after
    /// the backend's own retries) and there are fallbacks to ask instead.
    pub fn skips_main(&self) -> bool {
        self.main_unanswering.load(Ordering::Relaxed)
    }

    /// Why a blob was not asked of the main repository (see
    /// [`Sources::skips_main`]).
    pub fn skipped(&self, main: &Repository) -> StoreError {
        StoreError::io(
            format!("repository {}", main.backend().location()),
            std::io::Error::new(std::io::ErrorKind::TimedOut, NOT_ASKED),
        )
    }

    fn note_unanswered(&self, why: &StoreError) {
        use std::io::ErrorKind as K;
        let unanswered = matches!(why, StoreError::Io { source, .. } if matches!(
            source.kind(),
            K::TimedOut
                | K::ConnectionRefused
                | K::ConnectionAborted
                | K::ConnectionReset
                | K::NotConnected
                | K::UnexpectedEof
        ));
        if unanswered && !self.fallbacks.is_empty() {
            self.main_unanswering.store(true, Ordering::Relaxed);
        }
    }

    /// Blob `id` from another place `main`'s index files list for it.
    fn read_elsewhere_in(&self, main: &Repository, id: &Id) -> Option<Vec<u8>> {
        if self.skips_main() {
            return None;
        }
        self.elsewhere.get_or_init(|| main.backend().location());
        for location in main.listed_copies(id) {
            if let Ok(raw) = main.read_blob(location) {
                self.served_elsewhere.count(&raw);
                return Some(raw);
            }
        }
        None
    }

    fn note_failure(&self, why: &StoreError) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        failures.0 += 1;
        // The blobs not asked of a silent main repository are counted; the
        // failure that silenced it is the example worth keeping.
        let skipped =
            matches!(why, StoreError::Io { source, .. } if source.to_string() == NOT_ASKED);
        if failures.1.len() < KEPT_FAILURES && !skipped {
            failures.1.push(why.to_string());
        }
    }

    /// Blob `id`, which the main repository failed to give (`why`), from
    /// another place the main repository's index files list it, or else
    /// the first fallback that holds it intact; `why` itself if none does.
    pub fn fetch(&self, main: &Repository, id: &Id, why: StoreError) -> Result<Vec<u8>> {
        self.note_unanswered(&why);
        if let Some(raw) = self.read_elsewhere_in(main, id) {
            self.note_failure(&why);
            return Ok(raw);
        }
        if self.fallbacks.is_empty() {
            return Err(why);
        }
        self.note_failure(&why);
        for (fallback, served) in self.fallbacks.iter().zip(&self.served) {
            let Ok(Some(location)) = fallback.index.lookup(id) else {
                continue;
            };
            if let Ok(raw) = fallback.repository.read_blob(&location) {
                served.count(&raw);
                return Ok(raw);
            }
        }
        Err(why)
    }

    /// Tree `id` from the main repository, or from a fallback if the main
    /// one cannot give it intact.
    pub fn read_tree(&self, main: &Repository, index: &dyn IndexCache, id: &Id) -> Result<Tree> {
        // Skipped only where a fallback lists it: a tree only the main
        // repository holds is still asked of it.
        let read = match self.skips_main() && self.lists(id) {
            true => Err(self.skipped(main)),
            false => read_tree(main, index, id),
        };
        match read {
            Ok(tree) => Ok(tree),
            Err(why) => {
                let raw = self.fetch(main, id, why)?;
                Tree::decode(&raw, &format!("tree {id}"))
            }
        }
    }

    /// For a batch's prefetch once the main repository is not asked
    /// ([`Self::skips_main`]): the blobs of `ids` that a fallback lists,
    /// each read from the first that does, in spans as from the main
    /// repository and checked against their ids; and the ids no fallback
    /// lists, which the caller still asks the main repository for, last,
    /// as the per-file path does: a silence may pass, and a fallback may
    /// hold only part of a snapshot. A blob a fallback lists but did not
    /// give intact is in neither: the per-file path asks the fallbacks
    /// again, one by one, and reports it.
    pub fn prefetch_elsewhere(&self, main: &Repository, ids: Vec<Id>) -> (BlobCache, Vec<Id>) {
        let mut cache = BlobCache::default();
        let (mut left, mut failed) = (ids, HashSet::new());
        let not_asked = self.skipped(main);
        for (fallback, served) in self.fallbacks.iter().zip(&self.served) {
            let (mut wanted, mut unlisted) = (Vec::new(), Vec::new());
            for id in left {
                match fallback.index.lookup(&id) {
                    Ok(Some(location)) => wanted.push((location.pack, location.entry)),
                    _ => unlisted.push(id),
                }
            }
            let ids: Vec<Id> = wanted.iter().map(|(_, entry)| entry.id).collect();
            // Counted apart: these are not reads of the main repository.
            let read = fetch_blobs(fallback.repository, wanted, &FetchCounters::default(), true);
            for id in ids {
                match read.get(&id) {
                    Some(raw) => {
                        served.count(raw);
                        self.note_failure(&not_asked);
                        failed.remove(&id);
                    }
                    None => {
                        failed.insert(id);
                        unlisted.push(id);
                    }
                }
            }
            cache.extend(read);
            left = unlisted;
        }
        left.retain(|id| !failed.contains(id));
        (cache, left)
    }

    /// Whether some fallback's index lists `id`.
    pub fn lists(&self, id: &Id) -> bool {
        self.fallbacks
            .iter()
            .any(|fallback| matches!(fallback.index.lookup(id), Ok(Some(_))))
    }

    /// What each fallback served, in order of preference; first, if they
    /// served any, the main repository's other listed places.
    pub fn uses(&self) -> Vec<FallbackUse> {
        let use_of = |repository: String, served: &Served| FallbackUse {
            repository,
            blobs: served.blobs.load(Ordering::Relaxed),
            bytes: served.bytes.load(Ordering::Relaxed),
        };
        let elsewhere = self.elsewhere.get().map(|main| {
            use_of(
                format!("{main} (other places its index files list)"),
                &self.served_elsewhere,
            )
        });
        elsewhere
            .filter(|used| used.blobs > 0)
            .into_iter()
            .chain(
                self.fallbacks
                    .iter()
                    .zip(&self.served)
                    .map(|(fallback, served)| {
                        use_of(fallback.repository.backend().location(), served)
                    }),
            )
            .collect()
    }

    /// How many times the main repository failed, and the first few whys.
    pub fn main_failures(&self) -> (u64, Vec<String>) {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::format::index::IndexFile;
    use crate::format::pack::BlobKind;
    use crate::index::MemoryIndex;
    use crate::ops::common::blob_writer::BlobWriter;

    /// The cache knows only a planted place for a blob (as when a planted
    /// index file shadows the true one in a repository whose index files
    /// are all unsigned): the fetch finds the true place in the index
    /// files and says it served from there.
    #[test]
    fn a_blob_whose_known_place_fails_is_read_from_another_listed_place() {
        let directory = tempfile::tempdir().unwrap();
        let (repository, key) = crate::repository::plaintext_for_tests(std::sync::Arc::new(
            LocalBackend::new(directory.path()),
        ));
        // Incompressible, so it is stored as it is, alone.
        let mut raw = vec![0u8; 50_000];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut raw);
        let id = Id::of(&raw);
        let scratch = MemoryIndex::new();
        let writer = BlobWriter::new(&repository, &scratch, HashMap::new(), Some(&key));
        writer.add(BlobKind::Data, id, &raw).unwrap();
        writer.finish().unwrap();
        let true_place = repository
            .read_index_file(&repository.list_ids(ObjectKind::Index).unwrap()[0])
            .unwrap()
            .packs
            .remove(0);
        let mut planted = true_place.clone();
        planted.blobs[0].offset += 1;
        planted.blobs[0].length -= 1;
        planted.blobs[0].raw_length -= 1;
        repository
            .write_index_file(&IndexFile::new(vec![planted.clone()]), None)
            .unwrap();
        let shadowed = MemoryIndex::new();
        shadowed.insert_pack(&planted, false).unwrap();
        let known = shadowed.lookup(&id).unwrap().unwrap();
        let why = repository.read_blob(&known).unwrap_err();

        let sources = Sources::new(&[]);
        assert_eq!(sources.fetch(&repository, &id, why).unwrap(), raw);
        let uses = sources.uses();
        assert_eq!((uses.len(), uses[0].blobs), (1, 1), "{uses:?}");
        assert_eq!(sources.main_failures().0, 1);
        // A blob listed nowhere else still fails, with the first error.
        let unknown = Id::of(b"listed nowhere");
        let missing = StoreError::Missing {
            object: format!("blob {unknown}"),
        };
        assert!(matches!(
            sources.fetch(&repository, &unknown, missing),
            Err(StoreError::Missing { .. })
        ));
    }
}
