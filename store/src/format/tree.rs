//! Trees: one blob per directory, listing its entries with their metadata.
//!
//! A tree is the CBOR encoding of [`Tree`], stored as a `tree` blob and named
//! by the BLAKE3 hash of that encoding, so an unchanged directory encodes to
//! the same bytes and costs nothing in the next snapshot. Entries are sorted
//! by name bytes, names are unique and can never climb out of their
//! directory. This module owns the encoding and those checks; it never reads
//! the filesystem.

use crate::error::{Result, StoreError};
use crate::format::codec::{check_version, from_cbor, to_cbor};
use crate::id::Id;
use serde::{Deserialize, Serialize};

const TREE_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub version: u32,
    pub entries: Vec<TreeEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeEntry {
    /// The file name's raw bytes (Unix names need not be UTF-8).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds since the Unix epoch and nanoseconds.
    pub mtime: i64,
    pub mtime_nanos: u32,
    /// Status-change time and inode, to spot unchanged files next time.
    pub ctime: i64,
    pub ctime_nanos: u32,
    pub inode: u64,
    /// File size in bytes; 0 for directories and symlinks.
    pub size: u64,
    /// Files: chunk ids in order. Empty for an empty file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<Id>>,
    /// Files: BLAKE3 of the whole content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Id>,
    /// Directories: the subtree's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Symlinks: the target's raw bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_bytes"
    )]
    pub target: Option<Vec<u8>>,
}

mod optional_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => serializer.serialize_bytes(bytes),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Some(
            serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec(),
        ))
    }
}

impl TreeEntry {
    /// The name for display: lossy UTF-8.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

impl Tree {
    /// A tree from entries in any order.
    pub fn new(mut entries: Vec<TreeEntry>) -> Self {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Tree {
            version: TREE_VERSION,
            entries,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Decodes and checks every invariant a restore relies on.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let tree: Tree = from_cbor(bytes, object)?;
        check_version(tree.version, TREE_VERSION, object)?;
        let mut previous: Option<&[u8]> = None;
        for entry in &tree.entries {
            let name = &entry.name;
            let refuse = |reason: &str| {
                Err(StoreError::corrupt(
                    object,
                    format!("entry {:?}: {reason}", entry.display_name()),
                ))
            };
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.contains(&0)
            {
                return refuse("name could escape its directory");
            }
            if previous.is_some_and(|previous| previous >= name.as_slice()) {
                return refuse("entries are not sorted and unique");
            }
            previous = Some(name);
            let shaped = match entry.kind {
                EntryKind::File => {
                    entry.chunks.is_some()
                        && entry.hash.is_some()
                        && entry.subtree.is_none()
                        && entry.target.is_none()
                }
                EntryKind::Directory => {
                    entry.subtree.is_some()
                        && entry.chunks.is_none()
                        && entry.hash.is_none()
                        && entry.target.is_none()
                }
                EntryKind::Symlink => {
                    entry.target.is_some()
                        && entry.chunks.is_none()
                        && entry.hash.is_none()
                        && entry.subtree.is_none()
                }
            };
            if !shaped {
                return refuse("fields do not match its kind");
            }
            if entry.mode > 0o7777
                || entry.mtime_nanos >= 1_000_000_000
                || entry.ctime_nanos >= 1_000_000_000
            {
                return refuse("mode or time out of range");
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &[u8]) -> TreeEntry {
        TreeEntry {
            name: name.to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 1,
            gid: 1,
            mtime: 5,
            mtime_nanos: 6,
            ctime: 7,
            ctime_nanos: 8,
            inode: 9,
            size: 0,
            chunks: Some(vec![]),
            hash: Some(Id::of(b"")),
            subtree: None,
            target: None,
        }
    }

    #[test]
    fn trees_round_trip_and_sort_their_entries() {
        let mut link = file(b"link");
        link.kind = EntryKind::Symlink;
        link.chunks = None;
        link.hash = None;
        link.target = Some(b"../somewhere \xff".to_vec());
        let tree = Tree::new(vec![file("ünïcode".as_bytes()), link, file(b"a")]);
        let decoded = Tree::decode(&tree.encode(), "t").unwrap();
        assert_eq!(decoded, tree);
        assert_eq!(decoded.entries[0].name, b"a");
    }

    #[test]
    fn names_that_escape_or_repeat_are_refused() {
        for bad in [&b".."[..], b"a/b", b"", b"."] {
            let tree = Tree {
                version: 1,
                entries: vec![file(bad)],
            };
            assert!(Tree::decode(&tree.encode(), "t").is_err(), "{bad:?}");
        }
        let twice = Tree {
            version: 1,
            entries: vec![file(b"x"), file(b"x")],
        };
        assert!(Tree::decode(&twice.encode(), "t").is_err());
    }
}
