//! `O_DIRECT`: writing large files from cairn's buffers to the disk
//! without passing through the page cache.
//!
//! Owns turning direct I/O on and off for an open file, the alignment it
//! asks for, buffers that meet it, and writing a whole object that way.
//! Never decides when direct I/O is used (the restore's writer and the
//! local backend do), and never fails where the filesystem refuses it:
//! callers fall back to ordinary writes.
//!
//! Why: filling the page cache is most of what a large buffered write
//! costs in kernel CPU (measured on the benchmark's VM: 700 MB written to
//! a new file took 2.0 s of kernel CPU buffered and 0.13 s direct), and a
//! restore of hundreds of megabytes would otherwise also evict the page
//! cache of the services on the machine; a backup's packs, likewise, are
//! written once and read back only by a restore or an audit. Reads were
//! measured too: reading a restore's or a verify's packs directly was no
//! faster than through the page cache (filling it for reads costs far
//! less than for writes), so reads stay buffered.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// What `O_DIRECT` asks of buffers, offsets and lengths: a page covers the
/// logical block size of the disks Linux filesystems sit on (512 B or
/// 4 KiB).
pub const ALIGN: usize = 4096;

/// Turns `O_DIRECT` on for `file`; false where the filesystem does not
/// support it (tmpfs before Linux 6.6, some FUSE filesystems).
pub fn enable(file: &File) -> bool {
    set_direct(file, true).is_ok()
}

/// Turns `O_DIRECT` off again, for a filesystem that accepted it at first
/// but refuses a read or write (a block size larger than [`ALIGN`]).
pub fn disable(file: &File) -> io::Result<()> {
    set_direct(file, false)
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let descriptor = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL on a descriptor that `file` keeps open
    // only read and change its status flags.
    let changed = unsafe {
        let flags = libc::fcntl(descriptor, libc::F_GETFL);
        let wanted = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        flags >= 0 && libc::fcntl(descriptor, libc::F_SETFL, wanted) == 0
    };
    if changed {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an error is the filesystem refusing direct I/O's terms.
pub fn refused(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINVAL)
}

/// A zeroed buffer whose start is aligned to [`ALIGN`].
pub struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl AlignedBuffer {
    pub fn new(capacity: usize) -> Self {
        // Over-allocated and used from its first aligned byte on; the
        // storage is never resized, so that byte does not move.
        let storage = vec![0u8; capacity + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuffer {
            storage,
            start,
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.capacity]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.capacity]
    }
}

/// The largest piece of an object [`write_whole`] hands the device at once.
const WHOLE_PIECE: usize = 4 << 20;

/// Writes the first `length` bytes of `block`, the slice of an
/// [`AlignedBuffer`], at `offset` of `file`. With `direct`, they are
/// padded with zeros to a whole block first; should the filesystem refuse
/// (a block size larger than [`ALIGN`]), direct I/O is turned off and they
/// are written unpadded. Returns whether the file is still written
/// directly, and where the write ended (padding included), so the caller
/// knows whether to cut the file back.
pub fn write_at(
    file: &File,
    block: &mut [u8],
    length: usize,
    offset: u64,
    direct: bool,
) -> io::Result<(bool, u64)> {
    if direct {
        let padded = length.next_multiple_of(ALIGN);
        block[length..padded].fill(0);
        match file.write_all_at(&block[..padded], offset) {
            Ok(()) => return Ok((true, offset + padded as u64)),
            Err(error) if refused(&error) => disable(file)?,
            Err(error) => return Err(error),
        }
    }
    file.write_all_at(&block[..length], offset)?;
    Ok((false, offset + length as u64))
}

/// Writes all of `bytes` to the empty `file` with `O_DIRECT`, a piece at a
/// time through an aligned buffer ([`write_at`]), and cuts the file back to
/// `bytes.len()` if the last piece was padded. `Ok(false)` where the
/// filesystem refuses direct I/O at once: nothing is written, for the
/// caller to write as usual.
pub fn write_whole(file: &File, bytes: &[u8]) -> io::Result<bool> {
    if !enable(file) {
        return Ok(false);
    }
    // A thread writing objects of a piece or more (a backup's uploader,
    // writing 16 MiB packs) keeps its buffer: a fresh one for every pack
    // was a tenth of a first backup's page faults, each page zeroed anew.
    let whole = bytes.len() >= WHOLE_PIECE;
    let mut buffer = whole
        .then(|| KEPT_BUFFER.with(|kept| kept.take()))
        .flatten()
        .unwrap_or_else(|| {
            AlignedBuffer::new(WHOLE_PIECE.min(bytes.len().next_multiple_of(ALIGN)))
        });
    let (mut direct, mut end, mut offset) = (true, 0, 0u64);
    for piece in bytes.chunks(buffer.capacity()) {
        let block = buffer.as_mut_slice();
        block[..piece.len()].copy_from_slice(piece);
        (direct, end) = write_at(file, block, piece.len(), offset, direct)?;
        offset += piece.len() as u64;
    }
    if whole {
        KEPT_BUFFER.with(|kept| kept.set(Some(buffer)));
    }
    if end != offset {
        file.set_len(offset)?;
    }
    Ok(true)
}

thread_local! {
    /// The buffer of [`write_whole`]'s last whole-piece write on this
    /// thread: [`WHOLE_PIECE`] bytes, freed with the thread.
    static KEPT_BUFFER: std::cell::Cell<Option<AlignedBuffer>> = const { std::cell::Cell::new(None) };
}
