//! [`ChunkStream`]: chunk any `Read` in large batches, hashing each batch's
//! chunks in parallel. Owns buffering and the carry-over of the unfinished
//! tail between batches; never looks at what the bytes mean.

use crate::parallel::cut_ranges;
use crate::{Chunking, Cutter, Id, IdHasher};
use rayon::prelude::*;
use std::io::{self, Read};
use std::ops::Range;

/// Default batch buffer: big enough that per-batch overhead vanishes and both
/// cores get a long run of chunks to hash, small enough to keep memory flat.
const DEFAULT_BUFFER_SIZE: usize = 8 * 1024 * 1024;

/// One chunk of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamChunk {
    /// Position of the chunk's first byte in the whole stream.
    pub stream_offset: u64,
    /// Where the chunk's bytes lie in [`Batch::data`].
    pub range: Range<usize>,
    pub id: Id,
}

/// Chunks cut from one buffer-full of the stream.
pub struct Batch<'a> {
    pub data: &'a [u8],
    pub chunks: Vec<StreamChunk>,
}

impl Batch<'_> {
    /// The bytes of one of this batch's chunks.
    pub fn bytes(&self, chunk: &StreamChunk) -> &[u8] {
        &self.data[chunk.range.clone()]
    }
}

/// Reads a stream and cuts it into chunks, batch by batch.
pub struct ChunkStream<R> {
    reader: R,
    cutter: Cutter,
    buffer: Vec<u8>,
    /// Valid bytes in `buffer`.
    filled: usize,
    /// Bytes at the front of `buffer` already handed out in a batch.
    handed_out: usize,
    /// Stream position of `buffer[0]`.
    buffer_offset: u64,
    at_eof: bool,
    /// What `buffer` grows to if the stream outlasts it: at least twice
    /// the maximum chunk size, so that a batch not at the end of the stream
    /// always holds a complete chunk.
    full_size: usize,
    /// How chunks are named: plain BLAKE3, or keyed in an encrypted
    /// repository.
    hasher: IdHasher,
}

impl<R: Read> ChunkStream<R> {
    pub fn new(reader: R, chunking: impl Into<Chunking>) -> Self {
        Self::with_buffer_size(reader, chunking, DEFAULT_BUFFER_SIZE)
    }

    /// For a stream of known length: a buffer no larger than needed, since
    /// zero-filling a large buffer for every small file costs more than
    /// reading it (20,000 small files each zero-filled 128 KiB before). The
    /// buffer starts at `length + 1` bytes (the extra byte sees the end)
    /// and grows only if the stream turns out longer.
    pub fn with_expected_length(reader: R, chunking: impl Into<Chunking>, length: u64) -> Self {
        let needed = usize::try_from(length.saturating_add(1)).unwrap_or(usize::MAX);
        Self::with_sizes(reader, chunking, needed.min(DEFAULT_BUFFER_SIZE), needed)
    }

    /// `buffer_size` is raised to twice the maximum chunk size if smaller, so
    /// that every batch but the last holds at least one complete chunk.
    pub fn with_buffer_size(reader: R, chunking: impl Into<Chunking>, buffer_size: usize) -> Self {
        Self::with_sizes(reader, chunking, buffer_size, usize::MAX)
    }

    /// A buffer that grows to `buffer_size` (raised as above), of which the
    /// first `first` bytes are allocated until the stream outlasts them.
    fn with_sizes(
        reader: R,
        chunking: impl Into<Chunking>,
        buffer_size: usize,
        first: usize,
    ) -> Self {
        let cutter = Cutter::new(&chunking.into());
        let full_size = buffer_size.max(2 * cutter.max_size);
        ChunkStream {
            reader,
            cutter,
            buffer: vec![0; first.min(full_size)],
            filled: 0,
            handed_out: 0,
            buffer_offset: 0,
            at_eof: false,
            full_size,
            hasher: IdHasher::Plain,
        }
    }

    /// Names chunks with `hasher` (an encrypted repository's keyed BLAKE3)
    /// instead of plain BLAKE3.
    pub fn with_id_hasher(mut self, hasher: IdHasher) -> Self {
        self.hasher = hasher;
        self
    }

    /// Total bytes read from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.buffer_offset + self.filled as u64
    }

    /// The next batch of chunks, or `None` once the stream is exhausted.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch<'_>>> {
        self.buffer.copy_within(self.handed_out..self.filled, 0);
        self.buffer_offset += self.handed_out as u64;
        self.filled -= self.handed_out;
        self.handed_out = 0;
        self.fill()?;
        if !self.at_eof && self.buffer.len() < self.full_size {
            // Longer than announced: only a full-size buffer is sure to
            // hold a complete chunk.
            self.buffer.resize(self.full_size, 0);
            self.fill()?;
        }
        if self.filled == 0 {
            return Ok(None);
        }

        let ranges = cut_ranges(&self.cutter, &self.buffer[..self.filled], self.at_eof);
        let position = ranges.last().map_or(0, |range| range.end);
        self.handed_out = position;

        let data = &self.buffer[..self.filled];
        let buffer_offset = self.buffer_offset;
        let hasher = &self.hasher;
        let chunks = ranges
            .into_par_iter()
            .map(|range| StreamChunk {
                stream_offset: buffer_offset + range.start as u64,
                id: hasher.id(&data[range.clone()]),
                range,
            })
            .collect();
        Ok(Some(Batch {
            data: &self.buffer[..position],
            chunks,
        }))
    }

    fn fill(&mut self) -> io::Result<()> {
        while !self.at_eof && self.filled < self.buffer.len() {
            match self.reader.read(&mut self.buffer[self.filled..]) {
                Ok(0) => self.at_eof = true,
                Ok(count) => self.filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}
