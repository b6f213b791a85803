//! Property tests: chunks cover the input exactly, boundaries depend only on
//! content (not on how the stream is read), and ids are BLAKE3 of the bytes.

use cairn_chunker::{ChunkStream, ChunkerParams, Chunking, Id, chunk_slice};
use proptest::prelude::*;
use std::io::Read;

const SMALL: ChunkerParams = ChunkerParams {
    min_size: 256,
    avg_size: 1024,
    max_size: 4096,
};

/// Deterministic pseudo-random bytes, so content has real cut points.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A reader that returns at most `step` bytes per call, to shake out any
/// dependence on read sizes.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let count = self.step.min(buf.len()).min(self.data.len());
        buf[..count].copy_from_slice(&self.data[..count]);
        self.data = &self.data[count..];
        Ok(count)
    }
}

fn stream_chunks(data: &[u8], buffer: usize, step: usize) -> Vec<(u64, usize, Id)> {
    stream_chunks_with(data, buffer, step, Chunking::ContentDefined(SMALL))
}

fn stream_chunks_with(
    data: &[u8],
    buffer: usize,
    step: usize,
    chunking: Chunking,
) -> Vec<(u64, usize, Id)> {
    streamed(ChunkStream::with_buffer_size(
        Trickle { data, step },
        chunking,
        buffer,
    ))
}

/// Every chunk a stream hands out, checking each against its id and that
/// every batch hands out one at least (one without would make no progress,
/// for ever).
fn streamed<R: Read>(mut stream: ChunkStream<R>) -> Vec<(u64, usize, Id)> {
    let mut out = Vec::new();
    while let Some(batch) = stream.next_batch().unwrap() {
        assert!(!batch.chunks.is_empty(), "a batch without a chunk");
        for chunk in &batch.chunks {
            assert_eq!(chunk.id, Id::of(batch.bytes(chunk)));
            out.push((chunk.stream_offset, chunk.range.len(), chunk.id));
        }
    }
    out
}

/// The chunks of `data` cut in one piece, as a stream should hand them out.
fn whole_chunks(data: &[u8], chunking: impl Into<Chunking>) -> Vec<(u64, usize, Id)> {
    chunk_slice(data, chunking)
        .map(|range| (range.start as u64, range.len(), Id::of(&data[range])))
        .collect()
}

proptest! {
    #[test]
    fn chunks_concatenate_to_the_input(seed: u64, len in 0usize..60_000) {
        let data = noise(seed, len);
        let mut joined = Vec::new();
        for range in chunk_slice(&data, &SMALL) {
            prop_assert!(range.len() <= SMALL.max_size as usize);
            joined.extend_from_slice(&data[range]);
        }
        prop_assert_eq!(joined, data);
    }

    #[test]
    fn streaming_with_any_buffer_equals_whole_input(
        seed: u64,
        len in 0usize..80_000,
        buffer in 1usize..20_000,
        step in 1usize..9_000,
    ) {
        let data = noise(seed, len);
        prop_assert_eq!(stream_chunks(&data, buffer, step), whole_chunks(&data, SMALL));
    }

    #[test]
    fn a_stream_of_any_announced_length_equals_whole_input(
        seed: u64,
        len in 0usize..80_000,
        announced in 0u64..80_000,
        step in 1usize..9_000,
    ) {
        // A file can grow or shrink between its stat and its read: the
        // announced length only sizes the first buffer, never the chunks.
        let data = noise(seed, len);
        let reader = Trickle { data: &data, step };
        let stream =
            ChunkStream::with_expected_length(reader, Chunking::ContentDefined(SMALL), announced);
        prop_assert_eq!(streamed(stream), whole_chunks(&data, SMALL));
    }

    #[test]
    fn fixed_chunks_are_aligned_and_stream_alike(
        seed: u64,
        len in 0usize..80_000,
        size in 512u32..9_000,
        buffer in 1usize..20_000,
        step in 1usize..9_000,
    ) {
        let data = noise(seed, len);
        let chunking = Chunking::Fixed(size);
        let whole = whole_chunks(&data, chunking);
        for (position, (offset, length, _)) in whole.iter().enumerate() {
            prop_assert_eq!(*offset, position as u64 * u64::from(size));
            let last = position + 1 == whole.len();
            prop_assert!(*length == size as usize || (last && *length < size as usize));
        }
        prop_assert_eq!(whole.iter().map(|c| c.1).sum::<usize>(), len);
        prop_assert_eq!(stream_chunks_with(&data, buffer, step, chunking), whole);
    }

    #[test]
    fn boundaries_resynchronise_after_an_edit(seed: u64, at in 0usize..50_000) {
        // Boundaries depend only on nearby content: after an inserted byte,
        // chunking falls back into step and the tail's chunks are unchanged.
        let data = noise(seed, 100_000);
        let mut edited = data.clone();
        edited.insert(at, 0xA5);
        let ids = |bytes: &[u8]| -> Vec<Id> {
            chunk_slice(bytes, &SMALL).map(|range| Id::of(&bytes[range])).collect()
        };
        let before = ids(&data);
        let after = ids(&edited);
        let tail_before: Vec<_> = before.iter().rev().take(10).collect();
        let tail_after: Vec<_> = after.iter().rev().take(10).collect();
        prop_assert_eq!(tail_before, tail_after);
    }
}

#[test]
fn one_inserted_byte_in_a_large_input_reuses_almost_every_chunk() {
    let params = ChunkerParams::DEFAULT;
    let data = noise(7, 8 << 20);
    let mut edited = data.clone();
    edited.insert(data.len() / 2, 1);
    let ids = |bytes: &[u8]| -> std::collections::HashSet<Id> {
        chunk_slice(bytes, &params)
            .map(|range| Id::of(&bytes[range]))
            .collect()
    };
    let before = ids(&data);
    let after = ids(&edited);
    let reused = after.intersection(&before).count();
    assert!(
        reused * 100 >= after.len() * 99,
        "only {reused} of {} chunks reused",
        after.len()
    );
}

#[test]
fn identical_content_gives_identical_chunks() {
    let data = noise(3, 200_000);
    let first: Vec<_> = chunk_slice(&data, &SMALL).collect();
    let second: Vec<_> = chunk_slice(&data.clone(), &SMALL).collect();
    assert_eq!(first, second);
    assert!(first.len() > 20, "noise must have many cut points");
}
