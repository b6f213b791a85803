//! The sizes a reader accepts for each kind of object read whole, and the
//! shape a tree walk accepts (docs/FORMAT.md section 15).
//!
//! Every whole read is bounded by its kind's limit before a byte is read:
//! the backend compares the object's size with it first, so a planted giant
//! costs nothing and is named and skipped. Pack limits (header, blob,
//! shared frame) live with the pack format in `format::pack`; packs are
//! never read whole. Writers stay far below these: each is at least a
//! hundred times what cairn writes for a kind in ordinary use. This module
//! holds numbers only; it never reads anything.

/// The config object (about 300 bytes).
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;
/// A public key object (about 100 bytes).
pub const MAX_KEY_SIZE: u64 = 64 << 10;
/// An index file: 64 packs of the default 16 MiB list a few MiB of
/// entries.
pub const MAX_INDEX_FILE_SIZE: u64 = 256 << 20;
/// A snapshot manifest (a few KiB, more with many unreadable files).
pub const MAX_MANIFEST_SIZE: u64 = 64 << 20;
/// A forget record or a deletion mark (about 200 bytes per snapshot
/// forgotten, 100 per pack marked).
pub const MAX_RECORD_SIZE: u64 = 64 << 20;

/// An annotation (`cairn tag`): a snapshot's tags and labels, a few
/// hundred bytes.
pub const MAX_ANNOTATION_SIZE: u64 = 1 << 20;

/// Directories nest at most this many levels below a component's root
/// tree: a walk refuses a deeper tree, naming it, and a backup does not
/// store one (it leaves the directory out as a problem naming its path).
pub const MAX_TREE_DEPTH: usize = 1024;

/// A walk that expands every reference to a tree is given a budget from
/// the component's signed record where it has one (restore's plan, a
/// listing, verify naming damaged paths: `ops::walk::entry_budget`).
/// Without one, it walks trees it has already walked once (the same
/// directory contents at another path) at most this many entries' worth in
/// all; past either, it refuses the tree, naming it. A tree of two entries
/// naming one subtree twice, forty levels deep, would otherwise expand to
/// 2^40 entries from 40 small trees.
pub const MAX_REPEATED_ENTRIES: u64 = 1 << 27;
