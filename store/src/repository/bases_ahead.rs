//! Delta bases read ahead: for blobs about to be decoded, the bases their
//! deltas need, down their chains (at most `delta::MAX_CHAIN` deep), read
//! in spans and decoded side by side, the deepest level first so that each
//! level's deltas find their own bases held.
//!
//! Why: a changed page of a database or vector index is stored as a delta
//! against its previous version, and a decoder otherwise fetches each base
//! on its own as it meets it. From object storage that is a round trip per
//! base: the real applications' restore over S3 took 70-77 s that way and
//! 4.4-6.6 s with its bases read ahead; a verify of the same repository, 59
//! s. A local disk answers a base's read from the page cache, and the
//! repository keeps the frames of bases decoded last ([`super::base_frames`]),
//! so callers read ahead only from a remote backend.
//!
//! Owns choosing the bases (bounded by [`AHEAD_BYTES`]), reading and
//! decoding them. Never vouches for a base: bases are decoded as a decoder
//! takes them, unchecked against their ids, and what a delta decodes to is
//! checked by its caller (`BlobDecoder::decode_delta`); a delta that fails
//! asks for its base again, checked, through the index, which names a
//! damaged one. Never fails: a base it cannot locate, read or decode is
//! left out, for the decoder's own per-base path to fetch and report.

use super::{HeldBases, Repository};
use crate::backend::ObjectKind;
use crate::format::index::BlobLocation;
use crate::format::pack::delta::MAX_CHAIN;
use crate::format::pack::spans::{Span, spans};
use crate::format::pack::{BlobEntry, Decoded, by_stored_bytes};
use crate::id::Id;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The most raw bytes of bases read ahead at once (each is held as its
/// own bytes, not its frame): beyond it, bases are left to the per-base
/// path. A restore's
/// window of deltas (8 MiB over object storage) has bases of about its own
/// size at each level.
pub const AHEAD_BYTES: u64 = 16 << 20;

/// Spans of bases read at once at most: each may be a span's 16 MiB.
const AHEAD_READERS: usize = 4;

/// Bases read ahead, and what reading them took.
pub struct BasesAhead {
    held: Arc<HashMap<Id, Decoded>>,
    /// Reads of the backend (one GET each over S3).
    pub requests: u64,
    /// Stored bytes read.
    pub bytes: u64,
}

impl BasesAhead {
    /// The bases, for [`Repository::blob_decoder_holding`].
    pub fn held(&self) -> HeldBases {
        let held = Arc::clone(&self.held);
        Arc::new(move |id: &Id| held.get(id).cloned())
    }
}

impl Repository {
    /// The bases the deltas among `wanted` need, read ahead (see the module
    /// header); `None` when `wanted` holds no delta.
    pub fn read_bases_ahead(&self, wanted: &[BlobEntry]) -> Option<BasesAhead> {
        let levels = self.base_levels(wanted)?;
        let requests = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let mut held: HashMap<Id, Decoded> = HashMap::new();
        for depth in (1..=MAX_CHAIN).rev() {
            let level: Vec<(Id, BlobEntry)> = levels
                .values()
                .filter(|(level, _)| *level == depth)
                .map(|(_, location)| (location.pack, location.entry))
                .collect();
            if level.is_empty() {
                continue;
            }
            let deeper = BasesAhead {
                held: Arc::new(std::mem::take(&mut held)),
                requests: 0,
                bytes: 0,
            };
            let decoded = self.read_level(level, depth, &deeper, &requests, &bytes);
            held = Arc::try_unwrap(deeper.held).unwrap_or_else(|shared| (*shared).clone());
            held.extend(decoded);
        }
        Some(BasesAhead {
            held: Arc::new(held),
            requests: requests.into_inner(),
            bytes: bytes.into_inner(),
        })
    }

    /// Each base `wanted` needs, down the chains, located through the
    /// index, at the deepest level it is needed at: decoded there, it
    /// serves every shallower level too (a chain that fits deeper fits
    /// higher up). Stops adding bases at [`AHEAD_BYTES`].
    fn base_levels(&self, wanted: &[BlobEntry]) -> Option<HashMap<Id, (usize, BlobLocation)>> {
        let mut frontier: Vec<Id> = wanted.iter().filter_map(|entry| entry.base).collect();
        if frontier.is_empty() {
            return None;
        }
        let mut levels: HashMap<Id, (usize, BlobLocation)> = HashMap::new();
        let mut total = 0u64;
        for depth in 1..=MAX_CHAIN {
            let mut next = Vec::new();
            let mut seen = HashSet::new();
            for id in frontier.drain(..) {
                if !seen.insert(id) {
                    continue;
                }
                match levels.get_mut(&id) {
                    Some((level, location)) => {
                        if *level < depth {
                            *level = depth;
                            next.extend(location.entry.base);
                        }
                    }
                    None => {
                        if total >= AHEAD_BYTES {
                            continue;
                        }
                        let Ok(Some(location)) = self.locate_base(&id) else {
                            continue;
                        };
                        if location.entry.id != id {
                            continue;
                        }
                        total += u64::from(location.entry.raw_length);
                        next.extend(location.entry.base);
                        levels.insert(id, (depth, location));
                    }
                }
            }
            frontier = next;
        }
        Some(levels)
    }

    /// Reads and decodes one level's bases, `depth` bases down their
    /// chains, with the deeper levels' bases held: the spans up to the
    /// backend's parallelism at once, each decoded by its reader.
    fn read_level(
        &self,
        level: Vec<(Id, BlobEntry)>,
        depth: usize,
        deeper: &BasesAhead,
        requests: &AtomicU64,
        bytes: &AtomicU64,
    ) -> Vec<(Id, Decoded)> {
        let spans = spans(level);
        let next = AtomicUsize::new(0);
        let read_some = || {
            let mut decoded = Vec::new();
            while let Some(span) = spans.get(next.fetch_add(1, Ordering::Relaxed)) {
                requests.fetch_add(1, Ordering::Relaxed);
                self.decode_span(span, depth, deeper, bytes, &mut decoded);
            }
            decoded
        };
        let readers = self
            .backend
            .parallelism()
            .min(AHEAD_READERS)
            .clamp(1, spans.len().max(1));
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..readers).map(|_| scope.spawn(read_some)).collect();
            handles
                .into_iter()
                // A reader that panicked leaves its bases to the per-base path.
                .filter_map(|handle| handle.join().ok())
                .flatten()
                .collect()
        })
    }

    /// Reads one span and appends the bases in it that decode.
    fn decode_span(
        &self,
        span: &Span,
        depth: usize,
        deeper: &BasesAhead,
        bytes: &AtomicU64,
        decoded: &mut Vec<(Id, Decoded)>,
    ) {
        let Ok(read) = self.backend.read_range(
            ObjectKind::Pack,
            &span.pack.to_hex(),
            span.start,
            span.end - span.start,
        ) else {
            return;
        };
        bytes.fetch_add(read.len() as u64, Ordering::Relaxed);
        let mut decoder = self.blob_decoder_holding(depth, deeper.held());
        // Blobs sharing a frame stay together, so it is decompressed once.
        for frame in by_stored_bytes(&span.blobs) {
            for entry in frame {
                let Some(stored) = span.blob_bytes(&read, entry) else {
                    continue;
                };
                // Copied out of its frame: held in place, each base kept
                // its whole frame alive, and the bases of a group of
                // deltas scattered over many frames held far more than
                // their own bytes (a verify over S3 peaked at 208 MiB).
                if let Ok(base) = decoder.decode_sharing(entry, stored, &span.pack, false) {
                    decoded.push((entry.id, Decoded::Own(base.into_vec())));
                }
            }
        }
    }
}
