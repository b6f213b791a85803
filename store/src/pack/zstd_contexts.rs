//! zstd contexts kept per thread and reused from blob to blob.
//!
//! Owns the reuse of zstd's compression and decompression state. A blob is
//! small (a 4 KiB database page, a 16 KiB chunk), and setting up a fresh
//! context for each one (allocating and clearing its tables) cost more than
//! compressing it. Never decides whether a blob is compressed, and never
//! keeps data between calls: only zstd's working memory survives.

use std::cell::RefCell;
use std::io;
use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    /// One compressor per level used on this thread (the sample check's
    /// and the repository's), each keeping its tables.
    static COMPRESSORS: RefCell<Vec<(i32, Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `data` compressed at `level`, as `zstd::bulk::compress` would.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let position = match compressors.iter().position(|(used, _)| *used == level) {
            Some(position) => position,
            None => {
                compressors.push((level, Compressor::new(level)?));
                compressors.len() - 1
            }
        };
        compressors[position].1.compress(data)
    })
}

/// `data` decompressed, refusing more than `capacity` bytes of output, as
/// `zstd::bulk::decompress` would.
pub fn decompress(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(decompressor) => decompressor,
            None => slot.insert(Decompressor::new()?),
        };
        decompressor.decompress(data, capacity)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_contexts_give_what_fresh_ones_give() {
        let text: Vec<u8> = b"pages of a database, rows of a dump; "
            .iter()
            .copied()
            .cycle()
            .take(20_000)
            .collect();
        for level in [1, 3, 1, 19, 3] {
            let reused = compress(&text, level).unwrap();
            assert_eq!(reused, zstd::bulk::compress(&text, level).unwrap());
            assert_eq!(decompress(&reused, text.len()).unwrap(), text);
        }
        let compressed = compress(&text, 3).unwrap();
        assert!(decompress(&compressed, text.len() - 1).is_err());
        assert!(decompress(b"not zstd at all", 1024).is_err());
        // A context that saw an error still works.
        assert_eq!(decompress(&compressed, text.len()).unwrap(), text);
    }
}
