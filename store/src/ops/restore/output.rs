//! `HashingWriter`: a restored file's bytes on their way to disk,
//! buffered, hashed, with runs of zeros left as holes and large files
//! written with `O_DIRECT` where the filesystem allows it.
//!
//! Owns the byte layout of one file (its holes, its alignment, its
//! writeback); knows nothing of chunks, repositories or where the file
//! goes. Never reports a length or hash other than of the bytes the file
//! holds.

use crate::id::{Id, IdHasher};
use crate::os::direct_io::{self, AlignedBuffer};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// A file's bytes on their way to disk, buffered, and hashed a buffer at
/// a time: BLAKE3 hashes many 1 KiB pieces of one input side by side, so
/// a 4 KiB page handed to it alone used a quarter of its SIMD lanes (with
/// AVX-512), where a full buffer uses them all.
///
/// A large file is written with `O_DIRECT` where the filesystem allows it
/// ([`DIRECT_MIN`], [`crate::os::direct_io`] says why): its buffer is flushed
/// only in aligned lengths, the tail padded with zeros and the file cut
/// back to its length.
///
/// Runs of zeros become holes. Consecutive runs (a long stretch of zeros
/// comes as many zero chunks) are gathered first and placed as one, so
/// that a direct file, which can only leave aligned holes, writes the
/// zeros before the first aligned place and after the last once per
/// stretch, not once per chunk.
///
/// A buffered file asks the kernel every [`WRITEBACK_STEP`] bytes to start
/// writing its pages out, without waiting: the batch's `syncfs` then finds
/// little left to do, where it used to find a whole large file dirty
/// (with much RAM, the kernel writes nothing back on its own for a long
/// time) and the restore waited for all of it at once.
pub(super) struct HashingWriter {
    file: File,
    buffer: AlignedBuffer,
    filled: usize,
    /// How much of the buffer is hashed already (the rest is at flush).
    hashed: usize,
    /// Zeros hashed but not yet placed: they follow the buffer.
    pending_zeros: u64,
    /// `None` when the caller needs no whole-file hash.
    hasher: Option<blake3::Hasher>,
    /// Where the buffer's first byte goes in the file (holes included).
    flushed: u64,
    /// Where the last write ended, padding included.
    file_end: u64,
    /// Where writeback was last asked (buffered files only).
    written_back: u64,
    direct: bool,
}

/// How much of a large buffered file is written before its writeback is
/// started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Files from this size on are written with `O_DIRECT`. A direct write
/// waits for the device, so small files, written by the hundred and
/// synced together, stay buffered.
const DIRECT_MIN: u64 = 4 << 20;

/// The buffer of a file written with `O_DIRECT`.
const DIRECT_BUFFER: usize = 1 << 20;

impl HashingWriter {
    /// `size` is the file's length, which sizes the buffer and decides
    /// whether it is written directly.
    pub(super) fn new(file: File, size: u64, hash: Option<IdHasher>) -> Self {
        let direct = size >= DIRECT_MIN && direct_io::enable(&file);
        // Sized to the file: a 1 MiB buffer for each of 20,000 small
        // files kept the allocator busy consolidating freed memory.
        let capacity = if direct {
            DIRECT_BUFFER
        } else {
            size.clamp(4096, 1 << 20) as usize
        };
        HashingWriter {
            file,
            buffer: AlignedBuffer::new(capacity),
            filled: 0,
            hashed: 0,
            pending_zeros: 0,
            hasher: hash.map(|hasher| hasher.hasher()),
            flushed: 0,
            file_end: 0,
            written_back: 0,
            direct,
        }
    }

    /// Where the next byte goes, once pending zeros are placed.
    fn position(&self) -> u64 {
        self.flushed + self.filled as u64 + self.pending_zeros
    }

    fn hash(&mut self, data: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
    }

    /// Hashes what the buffer holds and is not hashed yet.
    fn hash_buffered(&mut self) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&self.buffer.as_slice()[self.hashed..self.filled]);
        }
        self.hashed = self.filled;
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        self.place_pending_zeros()?;
        // A buffered file's piece of at least a buffer goes to the file as
        // it is (a small file's only chunk is one): through the buffer, it
        // was copied once more for nothing.
        if !self.direct && self.filled == 0 && data.len() >= self.buffer.capacity() {
            self.hash(data);
            self.file.write_all_at(data, self.flushed)?;
            self.flushed += data.len() as u64;
            self.file_end = self.flushed;
            self.start_writeback();
            return Ok(());
        }
        while !data.is_empty() {
            let capacity = self.buffer.capacity();
            let taken = data.len().min(capacity - self.filled);
            self.buffer.as_mut_slice()[self.filled..self.filled + taken]
                .copy_from_slice(&data[..taken]);
            self.filled += taken;
            data = &data[taken..];
            if self.filled == capacity {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    /// Takes `zeros` (all zero bytes) into the hash now, and leaves their
    /// placing to the next write or the end.
    pub(super) fn skip(&mut self, zeros: &[u8]) {
        self.hash_buffered();
        self.hash(zeros);
        self.pending_zeros += zeros.len() as u64;
    }

    /// Places the pending zeros as a hole; a direct file writes those
    /// before the first aligned place and after the last as data.
    fn place_pending_zeros(&mut self) -> std::io::Result<()> {
        let zeros = std::mem::take(&mut self.pending_zeros);
        if zeros == 0 {
            return Ok(());
        }
        let align = if self.direct {
            direct_io::ALIGN as u64
        } else {
            1
        };
        let at = self.flushed + self.filled as u64;
        let before = ((align - at % align) % align).min(zeros);
        let hole = (zeros - before) / align * align;
        self.put_hashed_zeros(before)?;
        if hole > 0 {
            self.flush_buffer()?;
            self.flushed += hole;
        }
        self.put_hashed_zeros(zeros - before - hole)
    }

    /// Puts `count` zeros, hashed already, into the buffer.
    fn put_hashed_zeros(&mut self, mut count: u64) -> std::io::Result<()> {
        while count > 0 {
            let capacity = self.buffer.capacity();
            let taken = count.min((capacity - self.filled) as u64) as usize;
            self.buffer.as_mut_slice()[self.filled..self.filled + taken].fill(0);
            self.filled += taken;
            self.hashed = self.filled;
            count -= taken as u64;
            if self.filled == capacity {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    /// Writes what the buffer holds. A direct file's buffer is flushed
    /// whole, or at a hole on an aligned length, or at the end, padded.
    fn flush_buffer(&mut self) -> std::io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        self.hash_buffered();
        let length = self.filled;
        (self.direct, self.file_end) = direct_io::write_at(
            &self.file,
            self.buffer.as_mut_slice(),
            length,
            self.flushed,
            self.direct,
        )?;
        self.flushed += length as u64;
        self.filled = 0;
        self.hashed = 0;
        if !self.direct {
            self.start_writeback();
        }
        Ok(())
    }

    fn start_writeback(&mut self) {
        if self.flushed - self.written_back < WRITEBACK_STEP {
            return;
        }
        // SAFETY: the descriptor is valid for the life of `self.file`.
        // Only a hint: should it fail, the batch's sync still writes
        // everything, so its result is not needed.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.written_back as libc::off64_t,
                (self.flushed - self.written_back) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.written_back = self.flushed;
    }

    /// The file, everything written to it, its length set (a trailing
    /// hole, a direct file's padding), and the hash of all its bytes.
    pub(super) fn finish(mut self) -> std::io::Result<(File, u64, Option<Id>)> {
        self.place_pending_zeros()?;
        self.flush_buffer()?;
        let length = self.position();
        if self.file_end != length {
            self.file.set_len(length)?;
        }
        let hash = self.hasher.map(|hasher| Id(*hasher.finalize().as_bytes()));
        Ok((self.file, length, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn noise(seed: u8, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut bytes);
        bytes
    }

    /// Writes `pieces` (bytes, and whether they are zeros to skip) through
    /// a writer for a file of their total size. Returns whether it wrote
    /// directly, the file's bytes, its allocated bytes, the hash the writer
    /// computed and the one expected.
    fn write_pieces(pieces: &[(Vec<u8>, bool)]) -> (bool, Vec<u8>, u64, Option<Id>, Id) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("file");
        let file = File::create(&path).expect("create");
        let size: usize = pieces.iter().map(|(bytes, _)| bytes.len()).sum();
        let mut writer = HashingWriter::new(file, size as u64, Some(IdHasher::Plain));
        let direct = writer.direct;
        for (bytes, zeros) in pieces {
            if *zeros {
                writer.skip(bytes);
            } else {
                writer.write(bytes).expect("write");
            }
        }
        let (file, length, hash) = writer.finish().expect("finish");
        assert_eq!(length, size as u64);
        drop(file);
        let expected: Vec<u8> = pieces.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
        let allocated = fs::metadata(&path).expect("metadata").blocks() * 512;
        let read = fs::read(&path).expect("read back");
        assert_eq!(read.len(), expected.len());
        (
            direct,
            read,
            allocated,
            hash,
            Id(*blake3::hash(&expected).as_bytes()),
        )
    }

    #[test]
    fn a_large_file_with_holes_anywhere_reads_back_exactly_and_stays_sparse() {
        // Zero runs that start and end off the 4 KiB grid, a long one that
        // comes as many chunks (as a stretch of zeros does), one that ends
        // the file, and a data tail that is not a whole block.
        let mut pieces = vec![
            (noise(1, 5_000), false),
            (vec![0; 70_001], true),
            (noise(2, 3 << 20), false),
        ];
        pieces.extend((0..128).map(|_| (vec![0; 65_536], true)));
        pieces.extend([
            (noise(3, 1_234), false),
            (vec![0; 12_289], true),
            (noise(4, 1 << 20), false),
            (vec![0; 777], true),
        ]);
        let expected: Vec<u8> = pieces.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
        let data: u64 = pieces
            .iter()
            .filter(|(_, zeros)| !zeros)
            .map(|(bytes, _)| bytes.len() as u64)
            .sum();
        let (direct, read, allocated, hash, wanted) = write_pieces(&pieces);
        assert!(read == expected, "file differs (direct: {direct})");
        assert_eq!(hash, Some(wanted));
        // Each stretch of zeros costs at most two partly written blocks.
        assert!(
            allocated <= data + (128 << 10),
            "{allocated} bytes allocated for {data} bytes of data (direct: {direct})"
        );
    }

    #[test]
    fn a_large_file_is_written_directly_where_the_filesystem_allows() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let probe = File::create(directory.path().join("probe")).expect("create");
        let supported = direct_io::enable(&probe);
        let pieces = vec![(noise(5, (DIRECT_MIN as usize) + 4_095), false)];
        let (direct, read, _, hash, wanted) = write_pieces(&pieces);
        assert_eq!(direct, supported);
        assert!(read == pieces[0].0);
        assert_eq!(hash, Some(wanted));
    }

    #[test]
    fn a_small_file_ending_in_zeros_is_written_buffered_and_whole() {
        let pieces = vec![(noise(6, 10_000), false), (vec![0; 9_000], true)];
        let (direct, read, _, hash, wanted) = write_pieces(&pieces);
        assert!(!direct);
        assert_eq!(read.len(), 19_000);
        assert!(read[10_000..].iter().all(|&byte| byte == 0));
        assert_eq!(hash, Some(wanted));
    }
}
