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

/// A whole zstd frame decompressed, refusing more than `limit` bytes. The
/// frame's declared content size (cairn always writes it) sizes the
/// output; without one, it is decoded as a stream.
pub fn decompress_frame(data: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a zstd frame"))?;
    match declared {
        Some(size) if size > limit as u64 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the frame declares {size} bytes, more than {limit}"),
        )),
        Some(size) => decompress(data, size as usize),
        None => {
            let mut content = Vec::new();
            let decoder = zstd::stream::read::Decoder::with_buffer(data)?;
            io::Read::read_to_end(&mut io::Read::take(decoder, limit as u64 + 1), &mut content)?;
            if content.len() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the frame holds more than {limit} bytes"),
                ));
            }
            Ok(content)
        }
    }
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

    #[test]
    fn frames_decode_whole_within_their_limit_with_or_without_a_declared_size() {
        let text = b"frame of several blobs, ".repeat(500);
        let declared = compress(&text, 1).unwrap();
        assert_eq!(decompress_frame(&declared, text.len()).unwrap(), text);
        assert!(decompress_frame(&declared, text.len() - 1).is_err());
        // A streamed frame does not declare its size.
        let streamed = zstd::stream::encode_all(&text[..], 1).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        assert_eq!(decompress_frame(&streamed, text.len()).unwrap(), text);
        assert!(decompress_frame(&streamed, text.len() - 1).is_err());
        assert!(decompress_frame(b"not zstd at all", 1024).is_err());
    }
}
