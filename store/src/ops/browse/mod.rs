//! Browse: a snapshot store seen as one read-only directory tree, for front
//! ends that show it as a filesystem (`cairn mount` through FUSE; WebDAV or
//! HTTP could use the same). Owns the numbering of nodes, the lazy reading
//! of trees, the bounded caches, and reads of a byte range of a file with
//! every chunk checked. Never writes to the repository or the filesystem,
//! never walks a whole snapshot, and knows nothing of FUSE.
//!
//! Memory stays flat however many files a repository holds:
//! 1. The fixed part (grouping directories, `latest` links, one node per
//!    place a component appears; see [`layout`]) is built once from the
//!    snapshot list: proportional to snapshots, not files.
//! 2. A tree is read only when a directory is listed or a name in it is
//!    looked up, and kept in an LRU bounded by tree entries
//!    ([`BrowseOptions::tree_entries`]); one entry is found by binary
//!    search (a tree's entries are sorted by name).
//! 3. A node for a file or directory inside a tree exists only while the
//!    front end holds it: [`Browser::lookup`] counts a reference,
//!    [`Browser::forget`] drops them (FUSE's lookup count), so the node
//!    table is as big as the kernel's own inode cache, no bigger. A node
//!    is named by its parent and its position in the parent's tree, so
//!    one directory reached by two paths (a subtree two snapshots share)
//!    is two nodes, as a filesystem needs.
//! 4. Decompressed chunks are kept in an LRU bounded by bytes
//!    ([`BrowseOptions::chunk_bytes`]).
//!
//! Every byte handed out was checked: a tree or chunk read through
//! [`Repository::read_blob`] is checked against its id (keyed BLAKE3 in
//! an encrypted repository), trees are named by the verified snapshots'
//! signed manifests, and a chunk's length must be the one the file's
//! chunk list implies. A read that fails a check is an error, never
//! bytes; a front end turns it into EIO.

mod cache;
pub mod layout;

use crate::error::{Result, StoreError};
use crate::format::manifest::{ComponentRecord, SnapshotBody};
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;
use cache::BoundedCache;
use layout::{Fixed, Shape};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use layout::ROOT;

/// A node's number, as a front end hands it back (FUSE's inode number).
pub type NodeId = u64;

/// How much a browser may keep.
#[derive(Clone, Copy, Debug)]
pub struct BrowseOptions {
    /// Tree entries kept decoded, over all cached trees (the tree used last
    /// is kept whatever its size).
    pub tree_entries: usize,
    /// Bytes of decompressed chunks kept.
    pub chunk_bytes: usize,
    /// The owner shown for the grouping directories and links.
    pub owner: (u32, u32),
}

impl Default for BrowseOptions {
    fn default() -> Self {
        BrowseOptions {
            // About 25 MB of decoded entries at ~200 bytes each.
            tree_entries: 128 * 1024,
            chunk_bytes: 64 << 20,
            owner: (0, 0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Directory,
    File,
    Symlink,
}

/// What `stat` shows of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub node: NodeId,
    pub kind: NodeKind,
    pub size: u64,
    /// Permission bits, with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
}

/// One entry of a directory listing. `node` is set when the entry already
/// has a node (listing never creates one: only a lookup does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub node: Option<NodeId>,
}

/// An open file: its chunks and where each ends, ready for reads at any
/// offset. Costs 40 bytes a chunk while open.
pub struct OpenFile {
    node: NodeId,
    chunks: Vec<Id>,
    /// `ends[i]`: the offset just past chunk `i`.
    ends: Vec<u64>,
    size: u64,
}

impl OpenFile {
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A node inside a tree: the parent it was looked up in, the tree holding
/// its entry and the entry's position there.
#[derive(Clone, Copy)]
struct TreeNode {
    parent: NodeId,
    tree: Id,
    index: u32,
    references: u64,
}

#[derive(Default)]
struct NodeTable {
    next: NodeId,
    nodes: HashMap<NodeId, TreeNode>,
    by_place: HashMap<(NodeId, u32), NodeId>,
}

/// Where a node's metadata and content come from.
enum Place<'a> {
    Fixed(&'a Fixed),
    /// A directory component: its record (for the root metadata) and tree.
    ComponentDirectory(&'a ComponentRecord, i64),
    /// An entry of a tree (a single-file component is entry 0 of its tree).
    Entry(Arc<Tree>, usize),
}

pub struct Browser {
    repository: Repository,
    index: std::sync::Arc<dyn IndexCache>,
    snapshots: Vec<(Id, SnapshotBody)>,
    fixed: Vec<Fixed>,
    nodes: Mutex<NodeTable>,
    trees: Mutex<BoundedCache<Id, Arc<Tree>>>,
    chunks: Mutex<BoundedCache<Id, Arc<Vec<u8>>>>,
    options: BrowseOptions,
}

/// Locks `mutex`, taking the value even if a thread panicked holding it:
/// every structure behind these locks stays consistent between calls.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Browser {
    /// A browser of `snapshots` (verified by the caller, oldest first).
    pub fn new(
        repository: Repository,
        index: std::sync::Arc<dyn IndexCache>,
        snapshots: Vec<(Id, SnapshotBody)>,
        options: BrowseOptions,
    ) -> Self {
        let times: Vec<i64> = snapshots
            .iter()
            .map(|(_, body)| layout::seconds_of(&body.time))
            .collect();
        let fixed = layout::build(&snapshots, &times);
        let nodes = NodeTable {
            next: fixed.len() as NodeId + 1,
            ..NodeTable::default()
        };
        Browser {
            repository,
            index,
            snapshots,
            fixed,
            nodes: Mutex::new(nodes),
            trees: Mutex::new(BoundedCache::new(options.tree_entries)),
            chunks: Mutex::new(BoundedCache::new(options.chunk_bytes)),
            options,
        }
    }

    /// How many snapshots are shown.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots.len()
    }

    /// What the browser holds now, for measurements: nodes inside trees,
    /// decoded tree entries cached, decompressed chunk bytes cached.
    pub fn held(&self) -> (usize, usize, usize) {
        (
            lock(&self.nodes).nodes.len(),
            lock(&self.trees).used(),
            lock(&self.chunks).used(),
        )
    }

    fn fixed(&self, node: NodeId) -> Option<&Fixed> {
        node.checked_sub(1)
            .and_then(|position| self.fixed.get(usize::try_from(position).ok()?))
    }

    fn tree_node(&self, node: NodeId) -> Result<TreeNode> {
        lock(&self.nodes).nodes.get(&node).copied().ok_or_else(|| {
            StoreError::Invalid(format!(
                "node {node} is not held (forgotten or never looked up)"
            ))
        })
    }

    /// Reads tree `id` through the cache.
    fn tree(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(tree) = lock(&self.trees).get(id) {
            return Ok(tree);
        }
        let tree = Arc::new(crate::ops::walk::read_tree(
            &self.repository,
            self.index.as_ref(),
            id,
        )?);
        lock(&self.trees).insert(*id, tree.clone(), tree.entries.len() + 1);
        Ok(tree)
    }

    fn place(&self, node: NodeId) -> Result<Place<'_>> {
        if let Some(fixed) = self.fixed(node) {
            if let Shape::Component(position, index) = fixed.shape {
                let component = &self.snapshots[position].1.components[index];
                if component.kind.is_single_file() {
                    let tree = self.tree(&component.tree)?;
                    if tree.entries.len() != 1 || tree.entries[0].kind != EntryKind::File {
                        return Err(StoreError::corrupt(
                            format!("tree {} of component {}", component.tree, component.name),
                            "a single-file component's tree must hold exactly one file",
                        ));
                    }
                    return Ok(Place::Entry(tree, 0));
                }
                return Ok(Place::ComponentDirectory(component, fixed.mtime));
            }
            return Ok(Place::Fixed(fixed));
        }
        let held = self.tree_node(node)?;
        let tree = self.tree(&held.tree)?;
        let index = held.index as usize;
        if index >= tree.entries.len() {
            return Err(StoreError::Invalid(format!("node {node} names no entry")));
        }
        Ok(Place::Entry(tree, index))
    }

    /// The attributes of `node`.
    pub fn attributes(&self, node: NodeId) -> Result<Attributes> {
        let (uid, gid) = self.options.owner;
        Ok(match self.place(node)? {
            Place::Fixed(fixed) => {
                let (kind, size, mode) = match &fixed.shape {
                    Shape::Link(target) => (NodeKind::Symlink, target.len() as u64, 0o777),
                    _ => (NodeKind::Directory, 0, 0o555),
                };
                Attributes {
                    node,
                    kind,
                    size,
                    mode,
                    uid,
                    gid,
                    mtime: fixed.mtime,
                    mtime_nanos: 0,
                }
            }
            Place::ComponentDirectory(component, mtime) => match &component.root {
                Some(root) => Attributes {
                    node,
                    kind: NodeKind::Directory,
                    size: 0,
                    mode: root.mode & 0o7777,
                    uid: root.uid,
                    gid: root.gid,
                    mtime: root.mtime,
                    mtime_nanos: root.mtime_nanos,
                },
                None => Attributes {
                    node,
                    kind: NodeKind::Directory,
                    size: 0,
                    mode: 0o555,
                    uid,
                    gid,
                    mtime,
                    mtime_nanos: 0,
                },
            },
            Place::Entry(tree, index) => entry_attributes(node, &tree.entries[index]),
        })
    }

    /// The tree listing a directory node's entries; `None` for a fixed
    /// directory or a node that is no directory.
    fn listing_tree(&self, place: &Place<'_>) -> Option<Id> {
        match place {
            Place::ComponentDirectory(component, _) => Some(component.tree),
            Place::Entry(tree, index) => tree.entries[*index].subtree,
            Place::Fixed(_) => None,
        }
    }

    /// Finds `name` in directory `parent` and, for a node inside a tree,
    /// counts one reference to it (drop it with [`Browser::forget`]).
    /// `None` if there is no such name.
    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Result<Option<Attributes>> {
        let place = self.place(parent)?;
        if let Place::Fixed(fixed) = &place {
            let Shape::Directory(children) = &fixed.shape else {
                return Ok(None);
            };
            return match children.binary_search_by(|(child, _)| child.as_slice().cmp(name)) {
                Ok(found) => self.attributes(children[found].1).map(Some),
                Err(_) => Ok(None),
            };
        }
        let Some(tree_id) = self.listing_tree(&place) else {
            return Ok(None);
        };
        let tree = self.tree(&tree_id)?;
        let Ok(index) = tree
            .entries
            .binary_search_by(|entry| entry.name.as_slice().cmp(name))
        else {
            return Ok(None);
        };
        let index32 = u32::try_from(index).map_err(|_| {
            StoreError::corrupt(format!("tree {tree_id}"), "more than 2^32 entries")
        })?;
        let node = {
            let mut table = lock(&self.nodes);
            let node = match table.by_place.get(&(parent, index32)) {
                Some(&node) => node,
                None => {
                    let node = table.next;
                    table.next += 1;
                    table.by_place.insert((parent, index32), node);
                    table.nodes.insert(
                        node,
                        TreeNode {
                            parent,
                            tree: tree_id,
                            index: index32,
                            references: 0,
                        },
                    );
                    node
                }
            };
            if let Some(held) = table.nodes.get_mut(&node) {
                held.references += 1;
            }
            node
        };
        Ok(Some(entry_attributes(node, &tree.entries[index])))
    }

    /// Drops `references` lookups of `node`; a node with none left is
    /// forgotten. Fixed nodes live as long as the browser.
    pub fn forget(&self, node: NodeId, references: u64) {
        let mut table = lock(&self.nodes);
        let Some(held) = table.nodes.get_mut(&node) else {
            return;
        };
        held.references = held.references.saturating_sub(references);
        if held.references == 0 {
            let (parent, index) = (held.parent, held.index);
            table.nodes.remove(&node);
            table.by_place.remove(&(parent, index));
        }
    }

    /// The parent directory of `node` (the root's is itself).
    pub fn parent(&self, node: NodeId) -> NodeId {
        match self.fixed(node) {
            Some(fixed) if node != ROOT => fixed.parent,
            Some(_) => ROOT,
            None => lock(&self.nodes)
                .nodes
                .get(&node)
                .map_or(ROOT, |held| held.parent),
        }
    }

    /// Hands the entries of directory `node` from position `from` on to
    /// `take`, each with the position after it, until `take` returns
    /// `false` (its buffer is full) or the entries end.
    pub fn list(
        &self,
        node: NodeId,
        from: u64,
        take: &mut dyn FnMut(u64, ListedEntry) -> bool,
    ) -> Result<()> {
        let place = self.place(node)?;
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        if let Place::Fixed(fixed) = &place {
            let Shape::Directory(children) = &fixed.shape else {
                return Err(StoreError::Invalid(format!(
                    "{} is not a directory",
                    self.describe(node)
                )));
            };
            for (position, (name, child)) in children.iter().enumerate().skip(from) {
                let kind = match self.fixed(*child).map(|fixed| &fixed.shape) {
                    Some(Shape::Link(_)) => NodeKind::Symlink,
                    Some(Shape::Component(snapshot, index))
                        if self.snapshots[*snapshot].1.components[*index]
                            .kind
                            .is_single_file() =>
                    {
                        NodeKind::File
                    }
                    _ => NodeKind::Directory,
                };
                let listed = ListedEntry {
                    name: name.clone(),
                    kind,
                    node: Some(*child),
                };
                if !take(position as u64 + 1, listed) {
                    break;
                }
            }
            return Ok(());
        }
        let tree_id = self.listing_tree(&place).ok_or_else(|| {
            StoreError::Invalid(format!("{} is not a directory", self.describe(node)))
        })?;
        let tree = self.tree(&tree_id)?;
        for (position, entry) in tree.entries.iter().enumerate().skip(from) {
            let held = u32::try_from(position)
                .ok()
                .and_then(|index| lock(&self.nodes).by_place.get(&(node, index)).copied());
            let listed = ListedEntry {
                name: entry.name.clone(),
                kind: kind_of(entry.kind),
                node: held,
            };
            if !take(position as u64 + 1, listed) {
                break;
            }
        }
        Ok(())
    }

    /// The target of symlink `node`.
    pub fn read_link(&self, node: NodeId) -> Result<Vec<u8>> {
        match self.place(node)? {
            Place::Fixed(Fixed {
                shape: Shape::Link(target),
                ..
            }) => Ok(target.clone()),
            Place::Entry(tree, index) if tree.entries[index].kind == EntryKind::Symlink => {
                Ok(tree.entries[index].target.clone().unwrap_or_default())
            }
            _ => Err(StoreError::Invalid(format!(
                "{} is not a symlink",
                self.describe(node)
            ))),
        }
    }

    /// Opens file `node` for reads: looks up where each chunk ends (one
    /// index lookup a chunk, no pack read). The lengths are the index's
    /// word; each read checks the chunk it gets against them, and they
    /// must add up to the size the signed tree records.
    pub fn open(&self, node: NodeId) -> Result<OpenFile> {
        let Place::Entry(tree, index) = self.place(node)? else {
            return Err(StoreError::Invalid(format!(
                "{} is not a file",
                self.describe(node)
            )));
        };
        let entry = &tree.entries[index];
        if entry.kind != EntryKind::File {
            return Err(StoreError::Invalid(format!(
                "{} is not a file",
                self.describe(node)
            )));
        }
        let chunks = entry.chunks.clone().unwrap_or_default();
        let mut ends = Vec::with_capacity(chunks.len());
        let mut end = 0u64;
        for chunk in &chunks {
            let location = self
                .index
                .lookup(chunk)?
                .ok_or_else(|| StoreError::Missing {
                    object: format!(
                        "chunk {chunk} of {} (not in any index file)",
                        self.describe(node)
                    ),
                })?;
            end = end.saturating_add(u64::from(location.entry.raw_length));
            ends.push(end);
        }
        if end != entry.size {
            return Err(StoreError::corrupt(
                self.describe(node),
                format!(
                    "its chunks hold {end} bytes by the index, but the file has {}",
                    entry.size
                ),
            ));
        }
        Ok(OpenFile {
            node,
            chunks,
            ends,
            size: entry.size,
        })
    }

    /// Up to `length` bytes of `file` from `offset` (fewer only at its
    /// end), every chunk checked.
    pub fn read(&self, file: &OpenFile, offset: u64, length: u32) -> Result<Vec<u8>> {
        let end = offset.saturating_add(u64::from(length)).min(file.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut position = offset;
        let mut chunk = file.ends.partition_point(|&chunk_end| chunk_end <= offset);
        while position < end {
            let chunk_end = file.ends[chunk];
            let chunk_start = if chunk == 0 { 0 } else { file.ends[chunk - 1] };
            let bytes = self.chunk(file, chunk, chunk_end - chunk_start)?;
            let from = (position - chunk_start) as usize;
            let to = (end.min(chunk_end) - chunk_start) as usize;
            out.extend_from_slice(&bytes[from..to]);
            position = chunk_start + to as u64;
            chunk += 1;
        }
        Ok(out)
    }

    /// Chunk `chunk` of `file`, through the cache, checked against its id
    /// and its expected `length`.
    fn chunk(&self, file: &OpenFile, chunk: usize, length: u64) -> Result<Arc<Vec<u8>>> {
        let id = &file.chunks[chunk];
        if let Some(bytes) = lock(&self.chunks).get(id) {
            return Ok(bytes);
        }
        let location = self.index.lookup(id)?.ok_or_else(|| StoreError::Missing {
            object: format!(
                "chunk {id} of {} (not in any index file)",
                self.describe(file.node)
            ),
        })?;
        let bytes = self
            .repository
            .read_blob(&location)
            .map_err(|error| match error {
                StoreError::Corrupt { object, reason } => StoreError::Corrupt {
                    object: format!("{object} (chunk {id} of {})", self.describe(file.node)),
                    reason,
                },
                other => other,
            })?;
        if bytes.len() as u64 != length {
            return Err(StoreError::corrupt(
                format!("chunk {id} of {}", self.describe(file.node)),
                format!("holds {} bytes where its file needs {length}", bytes.len()),
            ));
        }
        let bytes = Arc::new(bytes);
        lock(&self.chunks).insert(*id, bytes.clone(), bytes.len());
        Ok(bytes)
    }

    /// The path of `node` below the mount, for messages (reads the trees
    /// on its way up; only called when something is to be said).
    pub fn describe(&self, node: NodeId) -> String {
        let mut names: Vec<String> = Vec::new();
        let mut current = node;
        for _ in 0..=crate::format::limits::MAX_TREE_DEPTH + 8 {
            if current == ROOT {
                break;
            }
            if let Some(fixed) = self.fixed(current) {
                names.push(String::from_utf8_lossy(&fixed.name).into_owned());
                current = fixed.parent;
                continue;
            }
            let held = lock(&self.nodes).nodes.get(&current).copied();
            let Some(held) = held else {
                names.push(format!("<node {current}>"));
                break;
            };
            let name = lock(&self.trees)
                .get(&held.tree)
                .and_then(|tree| {
                    tree.entries
                        .get(held.index as usize)
                        .map(TreeEntry::display_name)
                })
                .unwrap_or_else(|| format!("<entry {} of tree {}>", held.index, held.tree.short()));
            names.push(name);
            current = held.parent;
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }
}

fn kind_of(kind: EntryKind) -> NodeKind {
    match kind {
        EntryKind::File => NodeKind::File,
        EntryKind::Directory => NodeKind::Directory,
        EntryKind::Symlink => NodeKind::Symlink,
    }
}

fn entry_attributes(node: NodeId, entry: &TreeEntry) -> Attributes {
    Attributes {
        node,
        kind: kind_of(entry.kind),
        size: match entry.kind {
            EntryKind::Symlink => entry
                .target
                .as_ref()
                .map_or(0, |target| target.len() as u64),
            _ => entry.size,
        },
        mode: entry.mode & 0o7777,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        mtime_nanos: entry.mtime_nanos,
    }
}
