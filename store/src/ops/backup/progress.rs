//! How far a backup has come, told to the caller's [`Progress`] sink.
//!
//! Work done is added to atomic counters from every thread of the walk and
//! handed to the sink only once a batch's worth has gathered (or when a
//! component ends), so that a walk of many small or unchanged files does
//! not call the sink, which may draw on a terminal, once per file. Never
//! takes a lock, never waits on the sink, never decides anything.

use crate::progress::{Amount, Progress};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes gathered before they are reported: a fraction of a second of
/// reading, small against the progress of a large file.
const REPORT_BYTES: u64 = 4 * 1024 * 1024;
/// Files gathered before they are reported.
const REPORT_FILES: u64 = 256;

pub(super) struct Reporter<'a> {
    sink: &'a dyn Progress,
    bytes: AtomicU64,
    files: AtomicU64,
}

impl<'a> Reporter<'a> {
    pub(super) fn new(sink: &'a dyn Progress) -> Self {
        Reporter {
            sink,
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
        }
    }

    /// The walk found files to back up: once per directory window, so
    /// passed on at once.
    pub(super) fn found(&self, more: Amount) {
        if more != Amount::default() {
            self.sink.expect_more(more);
        }
    }

    pub(super) fn component(&self, name: &str) {
        self.sink.component(name);
    }

    /// Bytes read (or taken unread from the parent snapshot).
    pub(super) fn read(&self, bytes: u64) {
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes >= REPORT_BYTES {
            self.flush();
        }
    }

    /// A file is done, whatever came of it.
    pub(super) fn file_done(&self) {
        if self.files.fetch_add(1, Ordering::Relaxed) + 1 >= REPORT_FILES {
            self.flush();
        }
    }

    /// Hands everything gathered to the sink. Counters are taken whole by
    /// one thread or another, so nothing is reported twice or lost.
    pub(super) fn flush(&self) {
        let done = Amount {
            bytes: self.bytes.swap(0, Ordering::Relaxed),
            items: self.files.swap(0, Ordering::Relaxed),
        };
        if done != Amount::default() {
            self.sink.advance(done);
        }
    }
}

/// A sink that adds up what it is told, for tests of the stages.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Counting {
    pub(super) expected_bytes: AtomicU64,
    pub(super) expected_files: AtomicU64,
    pub(super) done_bytes: AtomicU64,
    pub(super) done_files: AtomicU64,
    pub(super) advances: AtomicU64,
    pub(super) components: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl Progress for Counting {
    fn expect_more(&self, more: Amount) {
        self.expected_bytes.fetch_add(more.bytes, Ordering::Relaxed);
        self.expected_files.fetch_add(more.items, Ordering::Relaxed);
    }
    fn advance(&self, done: Amount) {
        self.done_bytes.fetch_add(done.bytes, Ordering::Relaxed);
        self.done_files.fetch_add(done.items, Ordering::Relaxed);
        self.advances.fetch_add(1, Ordering::Relaxed);
    }
    fn component(&self, name: &str) {
        self.components.lock().unwrap().push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_amounts_are_gathered_and_nothing_is_lost_or_counted_twice() {
        let sink = Counting::default();
        let reporter = Reporter::new(&sink);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        reporter.read(1000);
                        reporter.file_done();
                    }
                });
            }
        });
        reporter.flush();
        assert_eq!(sink.done_bytes.load(Ordering::Relaxed), 4_000_000);
        assert_eq!(sink.done_files.load(Ordering::Relaxed), 4000);
        // One call per file would be 8,000; gathered, about 4000 / 256.
        let advances = sink.advances.load(Ordering::Relaxed);
        assert!((1..=40).contains(&advances), "{advances} calls");
    }

    #[test]
    fn a_large_read_is_reported_at_once() {
        let sink = Counting::default();
        let reporter = Reporter::new(&sink);
        reporter.read(REPORT_BYTES);
        assert_eq!(sink.done_bytes.load(Ordering::Relaxed), REPORT_BYTES);
        reporter.flush();
        assert_eq!(
            sink.advances.load(Ordering::Relaxed),
            1,
            "nothing left to flush"
        );
    }
}
