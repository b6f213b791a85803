//! Chunk and hash: one opened file is read (ahead on a thread of its own if
//! it is large), cut into chunks in large batches, and each batch's chunks
//! are stored in parallel through the fan-out while the file's hash is
//! computed.
//!
//! Keeps two kinds of failure apart: the repository's (the outer error,
//! which aborts the backup) and the source's (the inner one, which leaves
//! only this file out). Never decides whether a file needs reading.

use super::fan_out::FanOut;
use super::progress::Reporter;
use super::read_ahead::{self, ReadAhead, ReadAheadSlots};
use crate::error::Result;
use crate::format::pack::FRAME_TARGET;
use crate::id::{Id, IdHasher};
use crate::ops::common::blob_writer::FrameSharing;
use cairn_chunker::{ChunkStream, Chunking};
use rayon::prelude::*;
use std::fs::File;
use std::io;

/// Files larger than this are read ahead on a thread of their own.
const READ_AHEAD_FROM: u64 = 2 * read_ahead::BLOCK_SIZE as u64;

/// The chunking buffer of a large file read without read-ahead (every slot
/// taken, see [`ReadAheadSlots`]): that file is the backup's one more than
/// its cores, worked on while the others wait for the disk, so its batches
/// need not be long enough to keep every core busy; small, it adds little
/// to the peak (the default buffer is 8 MiB).
const UNREAD_AHEAD_BUFFER: usize = 1024 * 1024;

/// A file's content as stored: its chunks, its hash and its length.
pub(super) struct StoredContent {
    pub(super) chunks: Vec<Id>,
    pub(super) hash: Id,
    pub(super) size: u64,
}

/// The chunks of the parent snapshot's version of a file, by where each
/// starts: the candidate bases of the new version's chunks.
pub(super) struct Near {
    chunks: Vec<(u64, Id)>,
}

impl Near {
    fn new(chunks: &[Id], starts: Vec<u64>) -> Self {
        Near {
            chunks: starts.into_iter().zip(chunks.iter().copied()).collect(),
        }
    }

    /// The parent's chunk covering `offset`: for fixed or page chunking,
    /// the chunk at the same position; for content-defined chunking the
    /// one a file rewritten in place had there (past its end, its last).
    fn at(&self, offset: u64) -> Id {
        let after = self.chunks.partition_point(|(start, _)| *start <= offset);
        self.chunks[after.saturating_sub(1)].1
    }
}

/// Where one component's chunks go.
pub(super) struct ChunkTarget<'a> {
    pub(super) writer: &'a FanOut<'a>,
    /// This component's packs (see [`BlobWriter::add_in`]).
    ///
    /// [`BlobWriter::add_in`]: crate::ops::common::blob_writer::BlobWriter::add_in
    pub(super) group: usize,
    pub(super) reporter: &'a Reporter<'a>,
    /// How chunks and whole files are named (keyed in an encrypted
    /// repository).
    pub(super) id_hasher: IdHasher,
    /// Shared by the whole backup: how many large files are read ahead.
    pub(super) read_aheads: &'a ReadAheadSlots,
}

impl ChunkTarget<'_> {
    /// Stores `file` from its current position; `expected_length` is its
    /// size as listed. A large file is read on a thread of its own, ahead
    /// of the chunking, so the disk is never idle while the CPU works; if
    /// as many files are read ahead already, it is read directly.
    ///
    /// `previous` lists the chunks of the parent snapshot's version of the
    /// file, if it has one: a new chunk may be stored as a delta against
    /// the one that covered the same offset (docs/FORMAT.md section 7.1).
    pub(super) fn store_file(
        &self,
        file: &File,
        chunking: Chunking,
        expected_length: u64,
        previous: Option<&[Id]>,
    ) -> Result<io::Result<StoredContent>> {
        let near = previous
            .filter(|chunks| !chunks.is_empty())
            .and_then(|chunks| Some(Near::new(chunks, self.writer.chunk_starts(chunks)?)));
        let slot = (expected_length > READ_AHEAD_FROM)
            .then(|| self.read_aheads.try_take())
            .flatten();
        if slot.is_some() {
            std::thread::scope(|scope| {
                let reader = ReadAhead::start(scope, file);
                let stream = ChunkStream::with_expected_length(reader, chunking, expected_length);
                self.store_chunks(stream, expected_length, near.as_ref())
            })
        } else if expected_length > READ_AHEAD_FROM {
            let stream = ChunkStream::with_buffer_size(file, chunking, UNREAD_AHEAD_BUFFER);
            self.store_chunks(stream, expected_length, near.as_ref())
        } else {
            let stream = ChunkStream::with_expected_length(file, chunking, expected_length);
            self.store_chunks(stream, expected_length, near.as_ref())
        }
    }

    /// Cuts what `stream` gives into chunks and stores them. On success:
    /// the chunk ids, the whole content's hash and its length.
    fn store_chunks(
        &self,
        stream: ChunkStream<impl io::Read>,
        expected_length: u64,
        near: Option<&Near>,
    ) -> Result<io::Result<StoredContent>> {
        let mut stream = stream.with_id_hasher(self.id_hasher);
        let sharing = if expected_length < FRAME_TARGET as u64 {
            FrameSharing::Thread
        } else {
            FrameSharing::Group
        };
        let mut hasher = self.id_hasher.hasher();
        let mut chunks = Vec::new();
        // A file of one chunk hashes to that chunk's id, so a lone first
        // chunk is only hashed into the file's hash if more follows (most
        // small files never pay for a second hash of their bytes).
        let mut lone_first: Option<Vec<u8>> = None;
        loop {
            let batch = match stream.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(error) => return Ok(Err(error)),
            };
            if let Some(first) = lone_first.take() {
                hasher.update(&first);
            }
            batch.chunks.par_iter().try_for_each(|chunk| {
                let base = near.map(|near| near.at(chunk.stream_offset));
                self.writer
                    .add_near(chunk.id, batch.bytes(chunk), self.group, sharing, base)
                    .map(|_| ())
            })?;
            self.reporter.read(batch.data.len() as u64);
            if chunks.is_empty() && batch.chunks.len() == 1 {
                lone_first = Some(batch.data.to_vec());
            } else {
                hasher.update_rayon(batch.data);
            }
            chunks.extend(batch.chunks.iter().map(|chunk| chunk.id));
        }
        let size = stream.bytes_read();
        let hash = match (&chunks[..], lone_first) {
            ([only], Some(_)) => *only,
            _ => Id(*hasher.finalize().as_bytes()),
        };
        Ok(Ok(StoredContent { chunks, hash, size }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::progress::Counting;
    use super::super::testing::TestRepository;
    use super::*;
    use cairn_chunker::ChunkerParams;
    use std::sync::atomic::Ordering;

    /// Bytes that do not repeat, so content-defined cuts fall at several
    /// places in them.
    fn noise(length: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn store(
        repository: &TestRepository,
        content: &[u8],
    ) -> (
        StoredContent,
        crate::ops::common::blob_writer::WriterStatistics,
        u64,
    ) {
        store_with_slots(repository, content, &ReadAheadSlots::new(1))
    }

    fn store_with_slots(
        repository: &TestRepository,
        content: &[u8],
        read_aheads: &ReadAheadSlots,
    ) -> (
        StoredContent,
        crate::ops::common::blob_writer::WriterStatistics,
        u64,
    ) {
        let path = repository.directory.path().join("source");
        std::fs::write(&path, content).unwrap();
        let file = File::open(&path).unwrap();
        let fan_out = FanOut::new(vec![repository.writer()]);
        let sink = Counting::default();
        let reporter = Reporter::new(&sink);
        let target = ChunkTarget {
            id_hasher: IdHasher::Plain,
            writer: &fan_out,
            group: 0,
            reporter: &reporter,
            read_aheads,
        };
        let chunking = Chunking::ContentDefined(ChunkerParams::DEFAULT);
        let stored = target
            .store_file(&file, chunking, content.len() as u64, None)
            .unwrap()
            .unwrap();
        reporter.flush();
        let mut finished = fan_out.finish();
        let (_, statistics) = finished.remove(0).unwrap();
        (stored, statistics, sink.done_bytes.load(Ordering::Relaxed))
    }

    #[test]
    fn a_file_of_one_chunk_hashes_to_that_chunk() {
        let repository = TestRepository::new();
        let content = b"a small file".to_vec();
        let (stored, written, reported) = store(&repository, &content);
        assert_eq!(stored.chunks, vec![Id::of(&content)]);
        assert_eq!(stored.hash, Id::of(&content));
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(written.new_blobs, 1);
        assert_eq!(reported, content.len() as u64);
    }

    #[test]
    fn a_large_file_is_read_ahead_and_hashed_whole() {
        let repository = TestRepository::new();
        let content = noise(READ_AHEAD_FROM as usize + 12_345);
        let (stored, written, reported) = store(&repository, &content);
        assert!(stored.chunks.len() > 1);
        assert_eq!(stored.hash, Id::of(&content));
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(written.new_blobs, stored.chunks.len() as u64);
        assert_eq!(reported, content.len() as u64);
        // Stored again, every chunk is found already there.
        let (again, written, _) = store(&repository, &content);
        assert_eq!(again.chunks, stored.chunks);
        assert_eq!(written.new_blobs, 0);
    }

    #[test]
    fn a_large_file_finding_no_read_ahead_slot_is_stored_alike() {
        let content = noise(READ_AHEAD_FROM as usize + 3 * UNREAD_AHEAD_BUFFER + 777);
        let ahead = TestRepository::new();
        let (read_ahead, _, _) = store(&ahead, &content);
        // Every slot taken: the file is read directly, through the small
        // buffer, and must come out the same (cuts do not depend on it).
        let slots = ReadAheadSlots::new(1);
        let taken = slots.try_take();
        assert!(taken.is_some());
        let direct = TestRepository::new();
        let (read_directly, written, reported) = store_with_slots(&direct, &content, &slots);
        assert!(read_directly.chunks.len() > 1);
        assert_eq!(read_directly.chunks, read_ahead.chunks);
        assert_eq!(read_directly.hash, Id::of(&content));
        assert_eq!(read_directly.size, content.len() as u64);
        assert_eq!(written.new_blobs, read_directly.chunks.len() as u64);
        assert_eq!(reported, content.len() as u64);
    }

    #[test]
    fn a_read_error_is_the_sources_not_the_repositorys() {
        let repository = TestRepository::new();
        // Reading a directory fails with EISDIR on Linux.
        let directory = File::open(repository.directory.path()).unwrap();
        let fan_out = FanOut::new(vec![repository.writer()]);
        let sink = Counting::default();
        let reporter = Reporter::new(&sink);
        let target = ChunkTarget {
            id_hasher: IdHasher::Plain,
            writer: &fan_out,
            group: 0,
            reporter: &reporter,
            read_aheads: &ReadAheadSlots::new(1),
        };
        let chunking = Chunking::ContentDefined(ChunkerParams::DEFAULT);
        let inner = target.store_file(&directory, chunking, 10, None).unwrap();
        assert_eq!(
            inner.err().and_then(|error| error.raw_os_error()),
            Some(libc::EISDIR)
        );
    }
}
