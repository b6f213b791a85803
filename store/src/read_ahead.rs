//! Reading sources ahead of the backup, so the disk keeps working while the
//! CPU chunks, hashes and compresses what came before.
//!
//! - [`ReadAhead`] reads one large file on its own thread, a few blocks
//!   ahead of the reader. It owns the thread and its bounded queue (memory
//!   stays at a few blocks per file whatever the file's size), never reads
//!   more than the queue holds past what the consumer took, and never hides
//!   a read error: it reaches the consumer where it happened.
//! - [`hint_files`] asks the kernel to start reading the beginning of many
//!   small files at once, so that a directory of them costs about one
//!   disk round trip rather than one per file. Only a hint: it never reads
//!   data into cairn, and what it cannot do it silently skips (the backup's
//!   own reads then report any problem).
//! - [`stat_all`] stats many paths at once, on a small pool of its own
//!   wider than the cores: those threads mostly wait, and the disk serves
//!   several requests at once. That pool never does CPU work for the backup.

use rayon::prelude::*;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Bytes read by one `read` call of the reading thread.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Blocks read but not yet taken; with the block being read and the one
/// being consumed, at most three blocks are held per file.
const QUEUED_BLOCKS: usize = 1;

/// The consuming end: a `Read` over the blocks the thread sends.
pub struct ReadAhead<'scope> {
    blocks: Receiver<io::Result<Vec<u8>>>,
    /// Consumed blocks go back to the thread to be filled again, so a
    /// file's blocks are allocated once, not once per block read.
    spent: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    finished: bool,
    _thread: ScopedJoinHandle<'scope, ()>,
}

impl<'scope> ReadAhead<'scope> {
    /// Starts reading `file` from its current position on a thread of
    /// `scope`. The thread stops at the end of the file, at the first
    /// error, or as soon as this `ReadAhead` is dropped.
    pub fn start<'env>(scope: &'scope Scope<'scope, 'env>, file: &'env File) -> Self {
        let (sender, blocks) = sync_channel(QUEUED_BLOCKS);
        let (spent, reusable) = sync_channel(QUEUED_BLOCKS + 1);
        let thread = scope.spawn(move || read_blocks(file, &sender, &reusable));
        ReadAhead {
            blocks,
            spent,
            current: Vec::new(),
            position: 0,
            finished: false,
            _thread: thread,
        }
    }
}

/// The thread's loop: full blocks until the end of the file (an empty
/// channel closing), an error (sent, then the end), or nobody listening.
fn read_blocks(
    mut file: &File,
    sender: &SyncSender<io::Result<Vec<u8>>>,
    reusable: &Receiver<Vec<u8>>,
) {
    loop {
        let mut block = reusable.try_recv().unwrap_or_default();
        block.resize(BLOCK_SIZE, 0);
        let mut filled = 0;
        while filled < block.len() {
            match file.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if filled > 0 {
                        block.truncate(filled);
                        let _ = sender.send(Ok(block));
                    }
                    let _ = sender.send(Err(error));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        let at_end = filled < block.len();
        block.truncate(filled);
        if sender.send(Ok(block)).is_err() || at_end {
            return;
        }
    }
}

impl Read for ReadAhead<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            if self.finished {
                return Ok(0);
            }
            match self.blocks.recv() {
                Ok(Ok(block)) => {
                    let spent = std::mem::replace(&mut self.current, block);
                    // The thread may have ended; then the block is freed.
                    let _ = self.spent.try_send(spent);
                    self.position = 0;
                }
                Ok(Err(error)) => {
                    self.finished = true;
                    return Err(error);
                }
                // The thread has stopped: the file has ended.
                Err(_) => {
                    self.finished = true;
                    return Ok(0);
                }
            }
        }
        let count = buffer.len().min(self.current.len() - self.position);
        buffer[..count].copy_from_slice(&self.current[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

/// How much of each file [`hint_files`] asks for: all of a small file.
const HINT_BYTES: i64 = 1024 * 1024;

/// Threads of the disk-waiting pool. Measured on the 2-core VM of
/// docs/PERFORMANCE.md, a cold `lstat` of 20,000 files in 1,008 directories
/// took 0.36 s on one thread, 0.25 s on two and 0.15 s on eight; sixteen
/// were no faster.
const DISK_WAITERS: usize = 8;

/// The disk-waiting pool (rayon, for its ordered parallel collect), or `None` if its threads cannot be started (then
/// the work is done on the calling thread, only more slowly).
fn disk_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(DISK_WAITERS)
            .thread_name(|number| format!("cairn-disk-{number}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// `lstat` of each of `paths`, in order, several at a time.
pub fn stat_all(paths: &[PathBuf]) -> Vec<io::Result<Metadata>> {
    let stat = |path: &PathBuf| fs::symlink_metadata(path);
    match disk_pool() {
        Some(pool) => pool.install(|| paths.par_iter().map(stat).collect()),
        None => paths.iter().map(stat).collect(),
    }
}

/// Starts the kernel reading the first MiB of each of `paths` in the
/// background (`POSIX_FADV_WILLNEED`), without waiting for any of it.
pub fn hint_files(paths: &[PathBuf]) {
    paths.iter().for_each(|path| hint_file(path));
}

fn hint_file(path: &Path) {
    // O_NONBLOCK and O_NOFOLLOW: a path swapped for a FIFO or a symlink
    // since it was listed must neither hang this nor be followed.
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
    else {
        return;
    };
    // SAFETY: the descriptor is open for the whole call; the advice only
    // affects the page cache.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, HINT_BYTES, libc::POSIX_FADV_WILLNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(length: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let content: Vec<u8> = (0..length).map(|at| (at * 31 % 251) as u8).collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&content).unwrap();
        (file, content)
    }

    #[test]
    fn reads_exactly_the_file_whatever_its_length() {
        for length in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            3 * BLOCK_SIZE + 17,
        ] {
            let (file, content) = file_of(length);
            let opened = File::open(file.path()).unwrap();
            let read = std::thread::scope(|scope| {
                let mut reader = ReadAhead::start(scope, &opened);
                let mut read = Vec::new();
                // Odd-sized reads cross block boundaries.
                let mut buffer = vec![0u8; 1_000_003];
                loop {
                    let count = reader.read(&mut buffer).unwrap();
                    if count == 0 {
                        break;
                    }
                    read.extend_from_slice(&buffer[..count]);
                }
                read
            });
            assert_eq!(read.len(), content.len(), "length {length}");
            assert!(read == content, "content of length {length}");
        }
    }

    #[test]
    fn a_reader_dropped_early_stops_the_thread() {
        let (file, _) = file_of(5 * BLOCK_SIZE);
        let opened = File::open(file.path()).unwrap();
        // The scope only ends once the thread has: this returning at all
        // shows the thread saw the reader go.
        std::thread::scope(|scope| {
            let mut reader = ReadAhead::start(scope, &opened);
            let mut buffer = [0u8; 10];
            reader.read_exact(&mut buffer).unwrap();
        });
    }

    #[test]
    fn a_read_error_reaches_the_reader() {
        // Reading a directory fails with EISDIR on Linux.
        let directory = tempfile::tempdir().unwrap();
        let opened = File::open(directory.path()).unwrap();
        let error = std::thread::scope(|scope| {
            let mut reader = ReadAhead::start(scope, &opened);
            let mut buffer = [0u8; 10];
            reader.read(&mut buffer).unwrap_err()
        });
        assert_eq!(error.raw_os_error(), Some(libc::EISDIR));
    }
}
