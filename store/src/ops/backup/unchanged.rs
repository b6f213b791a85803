//! Unchanged-file detection against the parent snapshot: a file whose
//! size, mtime, ctime and inode are what the parent recorded, and whose
//! chunks every repository still holds, is taken from the parent without
//! being read.
//!
//! ctime cannot be set by a user, so a rewrite that restores the mtime is
//! still caught. Never reads a file's content; a parent that cannot be
//! trusted is the commit stage's to refuse, not this one's.

use super::fan_out::FanOut;
use crate::error::Result;
use crate::format::manifest::ComponentStats;
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The parent snapshot's entry for this file, renewed with its metadata
/// now, if the file looks unchanged and every chunk it names is still
/// stored in every repository.
pub(super) fn taken_from_parent(
    writer: &FanOut,
    meta: &Metadata,
    name: &[u8],
    previous: Option<&TreeEntry>,
) -> Result<Option<TreeEntry>> {
    let Some(previous) = previous else {
        return Ok(None);
    };
    let (Some(chunks), Some(hash), true) = (
        &previous.chunks,
        previous.hash,
        looks_unchanged(previous, meta),
    ) else {
        return Ok(None);
    };
    if !writer.all_stored(chunks)? {
        return Ok(None);
    }
    let mut current = entry_from_metadata(name.to_vec(), meta);
    current.kind = EntryKind::File;
    current.size = previous.size;
    current.chunks = Some(chunks.clone());
    current.hash = Some(hash);
    Ok(Some(current))
}

/// Whether a file's metadata now is what the parent snapshot recorded:
/// same size, mtime, ctime and inode.
pub(super) fn looks_unchanged(previous: &TreeEntry, meta: &Metadata) -> bool {
    let current = entry_from_metadata(Vec::new(), meta);
    previous.kind == EntryKind::File
        && previous.size == meta.len()
        && previous.mtime == current.mtime
        && previous.mtime_nanos == current.mtime_nanos
        && previous.ctime == current.ctime
        && previous.ctime_nanos == current.ctime_nanos
        && previous.inode == current.inode
}

/// The parent tree's entry named `name`, if any.
pub(super) fn previous_entry<'t>(
    parent: Option<&'t Tree>,
    name: &std::ffi::OsStr,
) -> Option<&'t TreeEntry> {
    let tree = parent?;
    tree.entries
        .binary_search_by(|entry| entry.name.as_slice().cmp(name.as_bytes()))
        .ok()
        .map(|position| &tree.entries[position])
}

/// A tree entry with `meta`'s mode, owner, times and inode; its kind and
/// content are the caller's to fill in.
pub(super) fn entry_from_metadata(name: Vec<u8>, meta: &Metadata) -> TreeEntry {
    TreeEntry {
        name,
        kind: EntryKind::File,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        ctime: meta.ctime(),
        ctime_nanos: meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        inode: meta.ino(),
        size: 0,
        chunks: None,
        hash: None,
        subtree: None,
        target: None,
    }
}

/// The statistics of one regular file's entry.
pub(super) fn file_stats(entry: &TreeEntry) -> ComponentStats {
    ComponentStats {
        files: 1,
        bytes: entry.size,
        chunks: entry
            .chunks
            .as_ref()
            .map_or(0, |chunks| chunks.len() as u64),
        ..ComponentStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestRepository;
    use super::*;
    use crate::format::pack::BlobKind;
    use crate::id::Id;
    use std::fs;

    /// A parent entry for the file at `path` as it is now, naming `chunks`.
    fn recorded(path: &std::path::Path, chunks: Vec<Id>) -> TreeEntry {
        let meta = fs::symlink_metadata(path).unwrap();
        let mut entry = entry_from_metadata(b"file".to_vec(), &meta);
        entry.size = meta.len();
        entry.hash = chunks.first().copied();
        entry.chunks = Some(chunks);
        entry
    }

    #[test]
    fn a_file_as_recorded_is_taken_from_the_parent_unread() {
        let repository = TestRepository::new();
        let path = repository.directory.path().join("file");
        fs::write(&path, b"content").unwrap();
        let writer = repository.writer();
        let id = Id::of(b"content");
        writer.add(BlobKind::Data, id, b"content").unwrap();
        let fan_out = FanOut::new(vec![writer]);
        let previous = recorded(&path, vec![id]);
        let meta = fs::symlink_metadata(&path).unwrap();
        let taken = taken_from_parent(&fan_out, &meta, b"file", Some(&previous))
            .unwrap()
            .expect("unchanged");
        assert_eq!(taken.chunks, Some(vec![id]));
        assert_eq!(taken.size, 7);
        assert_eq!(file_stats(&taken).bytes, 7);
        assert!(
            taken_from_parent(&fan_out, &meta, b"file", None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_file_is_read_again_if_its_chunks_are_gone_or_its_metadata_moved() {
        let repository = TestRepository::new();
        let path = repository.directory.path().join("file");
        fs::write(&path, b"content").unwrap();
        let fan_out = FanOut::new(vec![repository.writer()]);
        let meta = fs::symlink_metadata(&path).unwrap();
        // Never stored: a prune may have deleted them since.
        let previous = recorded(&path, vec![Id::of(b"content")]);
        assert!(
            taken_from_parent(&fan_out, &meta, b"file", Some(&previous))
                .unwrap()
                .is_none()
        );

        let mut moved = previous.clone();
        moved.mtime_nanos = (moved.mtime_nanos + 1) % 1_000_000_000;
        assert!(!looks_unchanged(&moved, &meta), "mtime");
        let mut moved = previous.clone();
        moved.ctime -= 1;
        assert!(!looks_unchanged(&moved, &meta), "ctime restored by hand");
        let mut moved = previous.clone();
        moved.inode += 1;
        assert!(!looks_unchanged(&moved, &meta), "replaced by another file");
        let mut moved = previous;
        moved.kind = EntryKind::Symlink;
        assert!(!looks_unchanged(&moved, &meta), "was not a file");
    }

    #[test]
    fn a_previous_entry_is_found_by_its_exact_name() {
        let entry = |name: &[u8]| TreeEntry {
            name: name.to_vec(),
            ..entry_from_metadata(Vec::new(), &fs::metadata("/").unwrap())
        };
        let tree = Tree::new(vec![entry(b"b"), entry(b"a"), entry(b"c")]);
        let found = previous_entry(Some(&tree), std::ffi::OsStr::new("b"));
        assert_eq!(found.map(|entry| entry.name.as_slice()), Some(&b"b"[..]));
        assert!(previous_entry(Some(&tree), std::ffi::OsStr::new("bb")).is_none());
        assert!(previous_entry(None, std::ffi::OsStr::new("a")).is_none());
    }
}
