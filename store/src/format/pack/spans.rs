//! Read spans: which byte ranges of which packs to read, with one request
//! each, to get a set of blobs.
//!
//! Owns grouping blobs by pack and merging neighbours across small gaps
//! (a request costs more than reading a few hundred KiB more), with a cap
//! so one read's buffer stays small. Never reads anything itself.

use super::BlobEntry;
use crate::id::Id;

/// Blobs this close in a pack are read in one request, gap included.
pub const SPAN_GAP: u64 = 256 * 1024;
/// A span never reads more than this (a single larger blob excepted).
pub const SPAN_MAX: u64 = 16 * 1024 * 1024;

/// A range of one pack read with one request, and the blobs wanted in it
/// (sorted by offset).
#[derive(Debug, PartialEq, Eq)]
pub struct Span {
    pub pack: Id,
    pub start: u64,
    pub end: u64,
    pub blobs: Vec<BlobEntry>,
}

impl Span {
    /// The stored bytes of `entry` within `bytes`, the span as read; `None`
    /// if they lie past what was read.
    pub fn blob_bytes<'a>(&self, bytes: &'a [u8], entry: &BlobEntry) -> Option<&'a [u8]> {
        let from = usize::try_from(entry.offset.checked_sub(self.start)?).ok()?;
        bytes.get(from..from.checked_add(entry.length as usize)?)
    }
}

/// Groups `wanted` blobs (pack, entry) by pack and merges neighbours into
/// spans. Every blob lands in exactly one span.
pub fn spans(mut wanted: Vec<(Id, BlobEntry)>) -> Vec<Span> {
    // Blobs sharing a frame share its offset; within it they go in frame
    // order, so that a reader finds them together, the frame's first blob
    // first ([`super::by_stored_bytes`]), and decompresses it once.
    wanted.sort_by_key(|(pack, entry)| (*pack, entry.offset, entry.frame_offset));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{BlobKind, Compression};

    const MIB: u64 = 1024 * 1024;

    fn blob(offset: u64, length: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id: Id::of(&offset.to_le_bytes()),
            offset,
            length,
            raw_length: length,
            compression: Compression::None,
            frame_offset: None,
            base: None,
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

    /// A frame's blobs asked for out of order (a restore asks in path
    /// order, not pack order) still come out together, its first blob
    /// first, so they are read as one frame, not as several.
    #[test]
    fn the_blobs_of_a_frame_come_out_together_in_frame_order() {
        let pack = Id::of(b"pack");
        let in_frame = |frame_offset: u32| BlobEntry {
            id: Id::of(&frame_offset.to_le_bytes()),
            offset: 4096,
            length: 1000,
            raw_length: 100,
            compression: Compression::Zstd,
            base: None,
            frame_offset: Some(frame_offset),
            ..blob(4096, 1000)
        };
        let wanted = vec![
            (pack, in_frame(200)),
            (pack, blob(0, 100)),
            (pack, in_frame(0)),
            (pack, in_frame(100)),
        ];
        let found = spans(wanted);
        assert_eq!(found.len(), 1);
        let groups: Vec<Vec<Option<u32>>> = crate::format::pack::by_stored_bytes(&found[0].blobs)
            .map(|group| group.iter().map(|entry| entry.frame_offset).collect())
            .collect();
        assert_eq!(
            groups,
            vec![vec![None], vec![Some(0), Some(100), Some(200)]]
        );
    }
}
