//! Telling the kernel a file will be read soon (`POSIX_FADV_WILLNEED`), so
//! that it reads it into the page cache in the background while the caller
//! does something else. Only ever a hint: it reads nothing into the
//! caller's memory, reports no error, and never waits for the disk.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The most files [`hint_directory`] looks at: a cache directory is a few
/// dozen files; this only bounds a strange one.
const MOST_FILES: usize = 4096;

/// Starts the kernel reading the first `bytes` of `path` (0: all of it)
/// into the page cache, without waiting for any of it. A path that cannot
/// be opened is left alone: the read that follows reports it.
pub fn hint(path: &Path, bytes: i64) {
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
        libc::posix_fadvise(file.as_raw_fd(), 0, bytes, libc::POSIX_FADV_WILLNEED);
    }
}

/// Hints every regular file under `root` (symlinks are not followed)
/// whole, while each fits in what is left of `budget` (bytes, reduced by
/// what is hinted) and until `stop` is set. Returns how many it hinted.
pub fn hint_directory(root: &Path, budget: &mut u64, stop: &AtomicBool) -> usize {
    let mut hinted = 0;
    let mut seen = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MOST_FILES || stop.load(Ordering::Acquire) {
                return hinted;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() && metadata.len() <= *budget {
                *budget -= metadata.len();
                hint(&entry.path(), 0);
                hinted += 1;
            }
        }
    }
    hinted
}
