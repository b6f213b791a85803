//! Content-defined chunking for cairn: bytes in, chunks and their BLAKE3 ids out.
//!
//! This crate owns exactly one job: deciding where chunk boundaries fall (the
//! FastCDC v2020 algorithm of the `fastcdc` crate, normalisation level 1, no
//! seed) and naming each chunk by the BLAKE3 hash of its bytes. It knows
//! nothing of repositories, packs or compression, and it must never do I/O
//! other than reading the `Read` it is handed.
//!
//! The main types:
//! - [`ChunkerParams`]: min/avg/max chunk sizes, validated.
//! - [`chunk_slice`]: the boundaries of an in-memory buffer.
//! - [`ChunkStream`]: reads any `Read` in large batches and yields, per batch,
//!   the buffer and its chunks with their [`ChunkId`]s, hashed in parallel.
//!
//! Invariant: boundaries depend only on content. Chunking a stream through
//! [`ChunkStream`] with any buffer size yields exactly the chunks that
//! [`chunk_slice`] yields for the whole input at once.
//!
//! ```
//! use cairn_chunker::{chunk_slice, ChunkerParams};
//! let data = vec![7u8; 100_000];
//! let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
//! let total: usize = chunk_slice(&data, &params).map(|range| range.len()).sum();
//! assert_eq!(total, data.len());
//! ```

mod id;
mod params;
mod stream;

pub use id::ChunkId;
pub use params::{ChunkerParams, ParamsError};
pub use stream::{Batch, ChunkStream, StreamChunk};

use fastcdc::v2020;
use std::ops::Range;

/// The boundaries of `data` as byte ranges, in order, covering it exactly.
pub fn chunk_slice<'a>(
    data: &'a [u8],
    params: &ChunkerParams,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let cutter = Cutter::new(params);
    let mut start = 0usize;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = start + cutter.cut(&data[start..]);
        let range = start..end;
        start = end;
        Some(range)
    })
}

/// FastCDC's cut-point search with precomputed masks.
///
/// The cut point of a chunk that starts at `s` depends only on the bytes
/// `s..s + max_size`; [`ChunkStream`] relies on this to cut a stream in
/// batches without changing any boundary.
#[derive(Clone, Copy)]
pub(crate) struct Cutter {
    min_size: usize,
    avg_size: usize,
    pub(crate) max_size: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    pub(crate) fn new(params: &ChunkerParams) -> Self {
        let avg_size = params.avg_size as usize;
        let (mask_s, mask_l) = v2020::select_masks(avg_size, v2020::Normalization::Level1);
        Cutter {
            min_size: params.min_size as usize,
            avg_size,
            max_size: params.max_size as usize,
            mask_s,
            mask_l,
        }
    }

    /// Length of the chunk that starts at `rest[0]`; `rest` must be non-empty.
    pub(crate) fn cut(&self, rest: &[u8]) -> usize {
        let (_, length) = v2020::cut(
            rest,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        // fastcdc returns 0 only for empty input, which callers never pass;
        // guard anyway so a caller can never loop forever.
        length.max(1).min(rest.len())
    }
}
