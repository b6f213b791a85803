//! Cat: one file of a snapshot, streamed to a writer (stdout, a pipe into
//! `pg_restore` or `psql`), each chunk checked against its id as it is
//! read and the whole against the file's hash at the end. Never writes to
//! the filesystem.

use crate::error::{Result, StoreError};
use crate::format::tree::{EntryKind, TreeEntry};
use crate::index::IndexCache;
use crate::repository::Repository;
use std::io::Write;

/// Writes the content of `entry` (a file) to `out`; returns its size.
/// Bytes already written when a later chunk fails its check cannot be
/// taken back, so the error says so, and a reader of the pipe must treat
/// a non-zero exit as "discard what you got".
pub fn write_file(
    repository: &Repository,
    index: &dyn IndexCache,
    path: &str,
    entry: &TreeEntry,
    out: &mut dyn Write,
) -> Result<u64> {
    if entry.kind != EntryKind::File {
        return Err(StoreError::Invalid(format!("{path} is not a file")));
    }
    let mut hasher = repository.id_hasher().hasher();
    let mut written = 0u64;
    for chunk in entry.chunks.iter().flatten() {
        let location = index.lookup(chunk)?.ok_or_else(|| StoreError::Missing {
            object: format!("chunk {chunk} of {path} (not in any index file)"),
        })?;
        let bytes = repository.read_blob(&location)?;
        hasher.update(&bytes);
        out.write_all(&bytes)
            .map_err(|error| StoreError::io(format!("writing {path}"), error))?;
        written += bytes.len() as u64;
    }
    out.flush()
        .map_err(|error| StoreError::io(format!("writing {path}"), error))?;
    let hash = crate::id::Id(*hasher.finalize().as_bytes());
    if written != entry.size || entry.hash.is_some_and(|expected| expected != hash) {
        return Err(StoreError::corrupt(
            path,
            "the content written does not match the file's recorded size and hash; discard it",
        ));
    }
    Ok(written)
}
