//! Reading sources ahead of the backup, so the disk keeps working while the
//! CPU chunks, hashes and compresses what came before.
//!
//! - [`ReadAhead`] reads one large file on its own thread, a few blocks
//!   ahead of the reader. It owns the thread and its bounded queue (memory
//!   stays at a few blocks per file whatever the file's size), never reads
//!   more than the queue holds past what the consumer took, and never hides
//!   a read error: it reaches the consumer where it happened.
//! - [`ReadAheadSlots`] caps how many files are read ahead at once across
//!   the backup, so its memory does not grow with its threads. It never
//!   waits: a file finding no slot free is read without read-ahead.
//! - [`hint_files`] asks the kernel to start reading the beginning of many
//!   small files at once, so that a directory of them costs about one
//!   disk round trip rather than one per file. Only a hint: it never reads
//!   data into cairn, and what it cannot do it silently skips (the backup's
//!   own reads then report any problem).
//! - [`warm_tree`] lists and stats a directory tree ahead of a walk that
//!   expects most files unchanged, several directories at once, so the
//!   walk finds their inodes in memory. It only warms the kernel's caches:
//!   its threads mostly wait, never pass anything to the backup, and stop
//!   when the walk ends.

use crate::ops::common::join_relative;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{Scope, ScopedJoinHandle};

/// Bytes read by one `read` call of the reading thread.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Blocks read but not yet taken; with the block being read and the one
/// being consumed, at most three blocks are held per file.
const QUEUED_BLOCKS: usize = 1;

/// How many files may be read ahead at once. Each file read ahead holds up
/// to three blocks (12 MiB) besides its chunking buffer; a backup of more
/// components than cores runs one more thread (see
/// [`super::walk::walk_pool`]), and without this cap one more large file at
/// a time would hold them too. A file that finds every slot taken is
/// read by its consumer directly: the files already read ahead keep the
/// disk busy meanwhile.
pub struct ReadAheadSlots {
    taken: AtomicUsize,
    limit: usize,
}

/// One file's slot, given back when dropped.
pub struct ReadAheadSlot<'a> {
    taken: &'a AtomicUsize,
}

impl ReadAheadSlots {
    pub fn new(limit: usize) -> Self {
        ReadAheadSlots {
            taken: AtomicUsize::new(0),
            limit,
        }
    }

    /// A slot if one is free; never waits (a worker waiting here could
    /// hold, further up its stack, work that a slot's holder waits for).
    pub fn try_take(&self) -> Option<ReadAheadSlot<'_>> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.limit).then_some(taken + 1)
            })
            .ok()
            .map(|_| ReadAheadSlot { taken: &self.taken })
    }
}

impl Drop for ReadAheadSlot<'_> {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

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

/// Threads that list and stat a tree ahead of its walk ([`warm_tree`]).
/// Measured on an unchanged re-backup of the benchmark's latest night
/// (20,163 files in 1,011 directories, caches dropped): 4, 8, 16 and 32
/// all took 0.32-0.36 s, against 0.38-0.41 s for the walk's own parallel
/// stats without them.
const WARMERS: usize = 8;

/// The warm-up's directories still to be listed, and how many are being
/// listed now (none of either: done).
struct Warming {
    queue: Mutex<(Vec<(PathBuf, String)>, usize)>,
    changed: Condvar,
    stop: AtomicBool,
}

/// A warm-up under way; it stops when this is dropped.
pub struct WarmUp {
    state: Arc<Warming>,
}

impl Drop for WarmUp {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.changed.notify_all();
    }
}

/// Lists and `lstat`s every entry below `root`, [`WARMERS`] directories at
/// a time, on threads of `scope`, so that the walk that follows finds the
/// inodes in memory. A walk of unchanged files waits on little but the
/// inode tables, a directory at a time, and a directory's files share a
/// few of their blocks: it is directories that must be read side by
/// side. `skip(relative path)` leaves a path, and all below it, out.
/// Only a hint: it ignores every error (the walk reports its own), and
/// never follows a symlink.
pub fn warm_tree<'scope>(
    scope: &'scope Scope<'scope, '_>,
    root: &Path,
    skip: &'scope (dyn Fn(&str) -> bool + Sync),
) -> WarmUp {
    let state = Arc::new(Warming {
        queue: Mutex::new((vec![(root.to_path_buf(), String::new())], 0)),
        changed: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    for _ in 0..WARMERS {
        let state = Arc::clone(&state);
        // A thread that cannot start leaves its share to the others, or
        // the whole tree to the walk.
        let _ = std::thread::Builder::new().spawn_scoped(scope, move || warm(&state, skip));
    }
    WarmUp { state }
}

/// One warming thread: takes directories until none is left or the
/// warm-up is stopped.
fn warm(state: &Warming, skip: &(dyn Fn(&str) -> bool + Sync)) {
    while let Some((directory, relative)) = next_directory(state) {
        let subdirectories = list_and_stat(state, &directory, &relative, skip);
        let mut queue = lock(&state.queue);
        queue.1 -= 1;
        queue.0.extend(subdirectories);
        drop(queue);
        state.changed.notify_all();
    }
}

/// The next directory to list, waiting while others are listed (they may
/// find more); `None` once there is nothing left or the warm-up stops.
fn next_directory(state: &Warming) -> Option<(PathBuf, String)> {
    let mut queue = lock(&state.queue);
    loop {
        if state.stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(next) = queue.0.pop() {
            queue.1 += 1;
            return Some(next);
        }
        if queue.1 == 0 {
            return None;
        }
        queue = state
            .changed
            .wait(queue)
            .unwrap_or_else(|poison| poison.into_inner());
    }
}

/// Stats each entry of `directory` not skipped; returns its
/// subdirectories with their relative paths.
fn list_and_stat(
    state: &Warming,
    directory: &Path,
    relative: &str,
    skip: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<(PathBuf, String)> {
    let mut subdirectories = Vec::new();
    let Ok(entries) = fs::read_dir(directory) else {
        return subdirectories;
    };
    for entry in entries.flatten() {
        if state.stop.load(Ordering::Relaxed) {
            break;
        }
        let child = join_relative(relative, &entry.file_name().to_string_lossy());
        if skip(&child) {
            continue;
        }
        let path = entry.path();
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
            subdirectories.push((path, child));
        }
    }
    subdirectories
}

/// A lock whose holder panicked is still usable: the queue is whole
/// between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Starts the kernel reading the first MiB of each of `paths` in the
/// background (`POSIX_FADV_WILLNEED`), without waiting for any of it.
pub fn hint_files(paths: &[PathBuf]) {
    paths.iter().for_each(|path| hint_file(path));
}

fn hint_file(path: &Path) {
    crate::os::will_read::hint(path, HINT_BYTES);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn read_ahead_slots_stop_at_their_limit_and_come_back_when_dropped() {
        let slots = ReadAheadSlots::new(2);
        let first = slots.try_take();
        let second = slots.try_take();
        assert!(first.is_some() && second.is_some());
        assert!(slots.try_take().is_none(), "a third file is read directly");
        drop(first);
        assert!(slots.try_take().is_some(), "a slot given back serves again");
        assert!(ReadAheadSlots::new(0).try_take().is_none());
    }

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

    #[test]
    fn a_warm_up_lists_every_directory_below_the_root_but_skipped_ones_and_symlinks() {
        let root = tempfile::tempdir().unwrap();
        for directory in ["a/b/c", "a/d", "skipped/inner", "e"] {
            fs::create_dir_all(root.path().join(directory)).unwrap();
        }
        for file in ["a/b/c/f1", "a/d/f2", "skipped/inner/f3", "e/f4", "top"] {
            fs::write(root.path().join(file), b"x").unwrap();
        }
        // Followed, this loop would be listed again and again.
        std::os::unix::fs::symlink("..", root.path().join("a/loop")).unwrap();
        let skip_none = |_: &str| false;
        // Dropped at once, it stops: the scope would not return otherwise.
        std::thread::scope(|scope| {
            let _warm_up = warm_tree(scope, root.path(), &skip_none);
        });
        // Left to run until its queue is empty and nothing is being listed.
        let asked = Mutex::new(Vec::new());
        let skip = |relative: &str| {
            asked.lock().unwrap().push(relative.to_string());
            relative == "skipped"
        };
        std::thread::scope(|scope| {
            let warm_up = warm_tree(scope, root.path(), &skip);
            while {
                let queue = lock(&warm_up.state.queue);
                !queue.0.is_empty() || queue.1 > 0
            } {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let mut asked = asked.into_inner().unwrap();
        asked.sort();
        assert_eq!(
            asked,
            [
                "a", "a/b", "a/b/c", "a/b/c/f1", "a/d", "a/d/f2", "a/loop", "e", "e/f4", "skipped",
                "top"
            ]
        );
    }
}
