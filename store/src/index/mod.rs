//! The index cache: fast lookups of which pack holds each blob, kept on
//! this machine and brought up to date from the repository's index files
//! (whose encoding is `crate::format::index`).
//!
//! The cache is a copy that can always be thrown away and rebuilt; it never
//! decides anything the repository's index files contradict.

mod cache;
mod runs;

pub use runs::Located;

pub use cache::{
    IndexCache, MemoryIndex, OpenedIndex, SledIndex, open_index, take_in_new_index_files,
    trust_fingerprint,
};
