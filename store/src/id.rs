//! [`Id`]: the one id type, defined by the chunker (the lowest crate) and
//! used for chunks, blobs and every repository object alike.

pub use cairn_chunker::{Id, IdHasher};
