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
//! - [`Chunking`]: content-defined (FastCDC with some params) or fixed-size
//!   cuts; fixed sizes suit files changed in place in aligned pages.
//! - [`chunk_slice`]: the boundaries of an in-memory buffer.
//! - [`ChunkStream`]: reads any `Read` in large batches and yields, per batch,
//!   the buffer and its chunks with their [`Id`]s, hashed in parallel;
//!   a large buffer's cut points are also searched on several threads, with
//!   exactly the result of one.
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

// Guard rails (docs/DESIGN.md): no unwrap or expect outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
// The library never prints: it returns outcomes and reports progress.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod id;
mod parallel;
mod params;
mod stream;

pub use id::{Id, IdHasher};
pub use params::{ChunkerParams, Chunking, ParamsError};
pub use stream::{Batch, ChunkStream, StreamChunk};

use fastcdc::v2020;
use std::ops::Range;

/// The boundaries of `data` as byte ranges, in order, covering it exactly.
pub fn chunk_slice<'a>(
    data: &'a [u8],
    chunking: impl Into<Chunking>,
) -> impl Iterator<Item = Range<usize>> + 'a {
    let cutter = Cutter::new(&chunking.into());
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

/// The cut-point search: FastCDC's with precomputed masks, or fixed-size.
///
/// The cut point of a chunk that starts at `s` depends only on the bytes
/// `s..s + max_size`; [`ChunkStream`] relies on this to cut a stream in
/// batches without changing any boundary.
#[derive(Clone, Copy)]
pub(crate) struct Cutter {
    /// `None` cuts every `max_size` bytes.
    content_defined: Option<Masks>,
    pub(crate) max_size: usize,
}

#[derive(Clone, Copy)]
struct Masks {
    min_size: usize,
    avg_size: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    pub(crate) fn new(chunking: &Chunking) -> Self {
        match *chunking {
            Chunking::ContentDefined(params) => {
                let avg_size = params.avg_size as usize;
                let (mask_s, mask_l) = v2020::select_masks(avg_size, v2020::Normalization::Level1);
                Cutter {
                    content_defined: Some(Masks {
                        min_size: params.min_size as usize,
                        avg_size,
                        mask_s,
                        mask_l,
                    }),
                    max_size: params.max_size as usize,
                }
            }
            Chunking::Fixed(size) => Cutter {
                content_defined: None,
                // A size of 0 would never advance; `Chunking::validate`
                // refuses it, and this guard keeps an unvalidated one safe.
                max_size: (size as usize).max(1),
            },
        }
    }

    /// Whether cut points depend on content (and so are worth searching on
    /// several threads).
    pub(crate) fn is_content_defined(&self) -> bool {
        self.content_defined.is_some()
    }

    /// Length of the chunk that starts at `rest[0]`; `rest` must be non-empty.
    pub(crate) fn cut(&self, rest: &[u8]) -> usize {
        let Some(masks) = self.content_defined else {
            return self.max_size.min(rest.len());
        };
        let (_, length) = v2020::cut(
            rest,
            masks.min_size,
            masks.avg_size,
            self.max_size,
            masks.mask_s,
            masks.mask_l,
            masks.mask_s << 1,
            masks.mask_l << 1,
        );
        // fastcdc returns 0 only for empty input, which callers never pass;
        // guard anyway so a caller can never loop forever.
        length.max(1).min(rest.len())
    }
}
