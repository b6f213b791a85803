//! Cut-point search over one buffer on several threads, giving exactly the
//! cuts one thread would give.
//!
//! Owns splitting a buffer into segments, cutting each from its own start
//! at once (speculatively: the true chunk boundaries do not yet know where
//! they will cross into it), and re-synchronising: the boundaries coming
//! from the previous segment are followed one chunk at a time until they
//! land on a boundary the segment found itself, and from there on the two
//! agree, because a cut point depends only on where its chunk starts and
//! the bytes after it. Never hashes, and never reads anything but the
//! buffer it is given.

use crate::Cutter;
use rayon::prelude::*;
use std::ops::Range;

/// Buffers smaller than this are cut on one thread: the gain would not pay
/// for the extra chunks cut at each segment's start.
const PARALLEL_FROM: usize = 1024 * 1024;
/// The smallest segment worth a thread of its own.
const MIN_SEGMENT: usize = 256 * 1024;

/// Whether a chunk may be cut at `position`: always once the input has
/// ended; before that only if `max_size` bytes follow, since a cut point is
/// final only once every byte it could depend on is known.
fn may_cut(cutter: &Cutter, length: usize, position: usize, at_end: bool) -> bool {
    position < length && (at_end || length - position >= cutter.max_size)
}

/// Chunk starts from `from` on, ending with the first position at or past
/// `stop` (or where cutting must stop). The first element is `from`.
fn walk(cutter: &Cutter, data: &[u8], at_end: bool, from: usize, stop: usize) -> Vec<usize> {
    let mut starts = vec![from];
    let mut position = from;
    while position < stop && may_cut(cutter, data.len(), position, at_end) {
        position += cutter.cut(&data[position..]);
        starts.push(position);
    }
    starts
}

/// The chunks of `data`, in order, as one thread would cut them from its
/// start: the last range ends where cutting must stop (the end of `data`
/// if `at_end`, otherwise the last cut point that is final).
pub(crate) fn cut_ranges(cutter: &Cutter, data: &[u8], at_end: bool) -> Vec<Range<usize>> {
    let segments = if cutter.is_content_defined() && data.len() >= PARALLEL_FROM {
        rayon::current_num_threads().min(data.len() / MIN_SEGMENT)
    } else {
        1
    };
    to_ranges(&cut_starts(cutter, data, at_end, segments.max(1)))
}

/// Chunk starts (and the final position) found with `segments` threads.
fn cut_starts(cutter: &Cutter, data: &[u8], at_end: bool, segments: usize) -> Vec<usize> {
    let length = data.len();
    if segments <= 1 {
        return walk(cutter, data, at_end, 0, length);
    }
    let bounds: Vec<usize> = (0..=segments)
        .map(|segment| segment * length / segments)
        .collect();
    let found: Vec<Vec<usize>> = (0..segments)
        .into_par_iter()
        .map(|segment| walk(cutter, data, at_end, bounds[segment], bounds[segment + 1]))
        .collect();
    let mut found = found.into_iter();
    let mut starts = found.next().unwrap_or_else(|| vec![0]);
    for speculative in found {
        let Some(&last) = speculative.last() else {
            continue;
        };
        loop {
            let position = *starts.last().unwrap_or(&0);
            if let Ok(at) = speculative.binary_search(&position) {
                starts.extend_from_slice(&speculative[at + 1..]);
                break;
            }
            if position >= last || !may_cut(cutter, length, position, at_end) {
                break;
            }
            starts.push(position + cutter.cut(&data[position..]));
        }
    }
    starts
}

fn to_ranges(starts: &[usize]) -> Vec<Range<usize>> {
    starts.windows(2).map(|pair| pair[0]..pair[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkerParams, Chunking};
    use proptest::prelude::*;

    fn noise(seed: u64, length: usize) -> Vec<u8> {
        let mut out = vec![0u8; length];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn small() -> Cutter {
        Cutter::new(&Chunking::ContentDefined(ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        }))
    }

    proptest! {
        #[test]
        fn any_number_of_segments_cuts_exactly_as_one_thread(
            seed in any::<u64>(),
            length in 0usize..200_000,
            segments in 1usize..12,
            at_end in any::<bool>(),
            // Runs of one byte value have no content-defined cut points, so
            // segments must re-synchronise across max-size cuts too.
            flat in 0usize..20_000,
        ) {
            let mut data = noise(seed, length);
            let flat_start = length / 3;
            for byte in data.iter_mut().skip(flat_start).take(flat) {
                *byte = 0;
            }
            let cutter = small();
            let one = cut_starts(&cutter, &data, at_end, 1);
            let many = cut_starts(&cutter, &data, at_end, segments);
            prop_assert_eq!(one, many);
        }
    }

    #[test]
    fn large_buffers_are_cut_in_segments_and_still_cover_all_final_cuts() {
        let data = noise(9, 3 * PARALLEL_FROM + 12_345);
        let cutter = Cutter::new(&Chunking::ContentDefined(ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        }));
        for at_end in [true, false] {
            let ranges = cut_ranges(&cutter, &data, at_end);
            let one = to_ranges(&cut_starts(&cutter, &data, at_end, 1));
            assert_eq!(ranges, one);
            assert_eq!(ranges.first().map(|range| range.start), Some(0));
            if at_end {
                assert_eq!(ranges.last().map(|range| range.end), Some(data.len()));
            } else {
                let end = ranges.last().map(|range| range.end).unwrap_or(0);
                assert!(data.len() - end < 65536);
            }
        }
    }
}
