//! The one walk over a snapshot's trees, used by every operation that
//! follows trees from a root: listing, verify, prune, copy, repair, a
//! backup's rescue of blobs in marked packs, and a restore's planner (in
//! path order, [`TreeWalk::in_order`]).
//!
//! [`TreeWalk::walk`] pops a tree from an explicit stack (so deep directory
//! nesting cannot overflow the call stack), asks the visitor to read it,
//! hands it each entry in order, then pushes the entries' subtrees. A
//! tree's subdirectories are therefore walked last first, as every walk
//! before this one did; callers that show entries sort them. Once all of
//! a tree's subtrees are done the visitor is told it is left, so a
//! rewrite (repair) can build new trees bottom up.
//!
//! The visitor decides how a tree is read (through the index, from a map
//! of checked blobs, from another repository) and what a tree that cannot
//! be read means: an error that ends the walk, or a finding and a tree
//! passed by. Options: skip trees already seen (a tree shared by many
//! snapshots or directories is read once), and give every entry its
//! component-relative path (off by default: building paths costs an
//! allocation per entry).
//!
//! Never writes anything, and owns no policy about damage.

use crate::error::{Result, StoreError};
use crate::format::pack::BlobKind;
use crate::format::tree::{Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;
use std::collections::HashSet;
use std::rc::Rc;

/// Reads and decodes one tree blob through the index. A tree the index
/// does not list is [`StoreError::Missing`], naming the tree's id.
pub fn read_tree(repository: &Repository, index: &dyn IndexCache, id: &Id) -> Result<Tree> {
    let location = index.lookup(id)?.ok_or_else(|| StoreError::Missing {
        object: format!("tree {id} (not in any index file)"),
    })?;
    let bytes = repository.read_blob(&location)?;
    Tree::decode(&bytes, &format!("tree {id}"))
}

/// What the walk does after a visitor's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// From [`TreeVisitor::enter`]: pass this tree by unread. From
    /// [`TreeVisitor::entry`]: do not walk into the entry's subtree.
    SkipSubtree,
    /// End the walk now; [`TreeWalk::walk`] returns [`Walked::Stopped`].
    Stop,
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walked {
    Finished,
    Stopped,
}

/// The caller's side of a walk. `path` is the component-relative path of
/// the tree or entry when the walk gives paths, and empty otherwise.
pub trait TreeVisitor {
    type Error;

    /// A tree is next, before it is read.
    fn enter(&mut self, _id: &Id, _path: &str) -> std::result::Result<Flow, Self::Error> {
        Ok(Flow::Continue)
    }

    /// Reads the tree; `None` passes it by (the visitor has noted why).
    fn read(&mut self, id: &Id, path: &str) -> std::result::Result<Option<Tree>, Self::Error>;

    /// One entry of a tree that was read. Any entry with a subtree is
    /// walked into unless this returns [`Flow::SkipSubtree`].
    fn entry(&mut self, _entry: &TreeEntry, _path: &str) -> std::result::Result<Flow, Self::Error> {
        Ok(Flow::Continue)
    }

    /// A tree that was read is done: every subtree below it has been
    /// walked (or skipped). Lets a visitor work bottom up, as a rewrite
    /// of the trees must, without recursion.
    fn leave(&mut self, _id: &Id, _path: &str) -> std::result::Result<(), Self::Error> {
        Ok(())
    }
}

/// What the walk's stack holds: a tree to walk, one entry of a tree that
/// was read (in order only), or a tree to leave once everything pushed
/// above it is done.
enum Step {
    Enter(Id, String),
    Entry(Rc<(Tree, String)>, usize),
    Leave(Id, String),
}

/// A walk's options and, when it skips trees already seen, the trees it
/// has met so far (across calls to [`TreeWalk::walk`]).
#[derive(Debug, Default)]
pub struct TreeWalk {
    seen: Option<HashSet<Id>>,
    paths: bool,
    in_order: bool,
}

impl TreeWalk {
    /// Every tree as often as it is reached, without paths.
    pub fn new() -> Self {
        TreeWalk::default()
    }

    /// Passes by trees already met, in this walk or an earlier one.
    pub fn skipping_seen(mut self) -> Self {
        self.seen = Some(HashSet::new());
        self
    }

    /// Gives every tree and entry its path below its root's path.
    pub fn with_paths(mut self) -> Self {
        self.paths = true;
        self
    }

    /// Walks into an entry's subtree as soon as the entry is visited, before
    /// the entries after it: entries come in path order (`a`, `a/x`, `b`),
    /// as a restore's plan must list them, instead of a tree's entries
    /// first and its subtrees after.
    pub fn in_order(mut self) -> Self {
        self.in_order = true;
        self
    }

    /// The trees met so far when skipping seen trees (empty otherwise).
    pub fn seen(&self) -> Option<&HashSet<Id>> {
        self.seen.as_ref()
    }

    pub fn into_seen(self) -> HashSet<Id> {
        self.seen.unwrap_or_default()
    }

    /// Walks from `roots`, each a tree and its path (ignored without
    /// paths), the first root first.
    pub fn walk<V: TreeVisitor>(
        &mut self,
        roots: impl IntoIterator<Item = (Id, String)>,
        visitor: &mut V,
    ) -> std::result::Result<Walked, V::Error> {
        let mut stack: Vec<Step> = roots
            .into_iter()
            .map(|(id, path)| Step::Enter(id, path))
            .collect();
        stack.reverse();
        let mut subtrees = Vec::new();
        while let Some(step) = stack.pop() {
            let (id, path) = match step {
                Step::Enter(id, path) => (id, path),
                Step::Entry(tree, index) => {
                    let (tree, path) = &*tree;
                    let entry = &tree.entries[index];
                    let entry_path = self.entry_path(path, entry);
                    match visitor.entry(entry, &entry_path)? {
                        Flow::Continue => {}
                        Flow::SkipSubtree => continue,
                        Flow::Stop => return Ok(Walked::Stopped),
                    }
                    if let Some(subtree) = entry.subtree {
                        stack.push(Step::Enter(subtree, entry_path));
                    }
                    continue;
                }
                Step::Leave(id, path) => {
                    visitor.leave(&id, &path)?;
                    continue;
                }
            };
            if let Some(seen) = &mut self.seen
                && !seen.insert(id)
            {
                continue;
            }
            match visitor.enter(&id, &path)? {
                Flow::Continue => {}
                Flow::SkipSubtree => continue,
                Flow::Stop => return Ok(Walked::Stopped),
            }
            let Some(tree) = visitor.read(&id, &path)? else {
                continue;
            };
            if self.in_order {
                let count = tree.entries.len();
                stack.push(Step::Leave(id, path.clone()));
                let shared = Rc::new((tree, path));
                stack.extend(
                    (0..count)
                        .rev()
                        .map(|index| Step::Entry(shared.clone(), index)),
                );
                continue;
            }
            for entry in &tree.entries {
                let entry_path = self.entry_path(&path, entry);
                match visitor.entry(entry, &entry_path)? {
                    Flow::Continue => {}
                    Flow::SkipSubtree => continue,
                    Flow::Stop => return Ok(Walked::Stopped),
                }
                if let Some(subtree) = entry.subtree {
                    subtrees.push(Step::Enter(subtree, entry_path));
                }
            }
            stack.push(Step::Leave(id, path));
            stack.append(&mut subtrees);
        }
        Ok(Walked::Finished)
    }

    fn entry_path(&self, tree_path: &str, entry: &TreeEntry) -> String {
        if self.paths {
            crate::ops::common::join_relative(tree_path, &entry.display_name())
        } else {
            String::new()
        }
    }
}

/// Calls `visit` once for every tree and every chunk reachable from `roots`
/// (a tree before its contents), skipping trees already in `seen`, which
/// it fills. A tree that cannot be read ends the walk with its error.
pub fn visit_blobs(
    repository: &Repository,
    index: &dyn IndexCache,
    roots: impl IntoIterator<Item = Id>,
    seen: &mut HashSet<Id>,
    visit: &mut dyn FnMut(BlobKind, &Id) -> Result<()>,
) -> Result<()> {
    struct Blobs<'a, 'v> {
        repository: &'a Repository,
        index: &'a dyn IndexCache,
        visit: &'v mut dyn FnMut(BlobKind, &Id) -> Result<()>,
    }
    impl TreeVisitor for Blobs<'_, '_> {
        type Error = StoreError;
        fn enter(&mut self, id: &Id, _: &str) -> Result<Flow> {
            (self.visit)(BlobKind::Tree, id)?;
            Ok(Flow::Continue)
        }
        fn read(&mut self, id: &Id, _: &str) -> Result<Option<Tree>> {
            read_tree(self.repository, self.index, id).map(Some)
        }
        fn entry(&mut self, entry: &TreeEntry, _: &str) -> Result<Flow> {
            for chunk in entry.chunks.iter().flatten() {
                (self.visit)(BlobKind::Data, chunk)?;
            }
            Ok(Flow::Continue)
        }
    }
    let mut walk = TreeWalk {
        seen: Some(std::mem::take(seen)),
        paths: false,
        in_order: false,
    };
    let walked = walk.walk(
        roots.into_iter().map(|root| (root, String::new())),
        &mut Blobs {
            repository,
            index,
            visit,
        },
    );
    *seen = walk.into_seen();
    walked.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::format::keys::{generate_signing_key, public_key_of};
    use crate::format::tree::EntryKind;
    use crate::index::MemoryIndex;
    use crate::ops::common::blob_writer::BlobWriter;
    use cairn_chunker::ChunkerParams;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A repository and its index, both in memory: the walker's tests are
    /// about trees, not disks.
    struct Fixture {
        repository: Repository,
        index: MemoryIndex,
    }

    fn fixture() -> Fixture {
        let backend = Arc::new(MemoryBackend::new());
        let key = generate_signing_key().unwrap();
        let repository =
            Repository::init(backend, ChunkerParams::DEFAULT, 3, public_key_of(&key)).unwrap();
        Fixture {
            repository,
            index: MemoryIndex::new(),
        }
    }

    fn entry(name: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nanos: 0,
            ctime: 0,
            ctime_nanos: 0,
            inode: 0,
            size: 0,
            chunks: None,
            hash: None,
            subtree: None,
            target: None,
        }
    }

    fn file(name: &str, content: &str) -> TreeEntry {
        let mut file = entry(name, EntryKind::File);
        file.chunks = Some(vec![Id::of(content.as_bytes())]);
        file.hash = Some(Id::of(content.as_bytes()));
        file.size = content.len() as u64;
        file
    }

    fn directory(name: &str, subtree: Id) -> TreeEntry {
        let mut directory = entry(name, EntryKind::Directory);
        directory.subtree = Some(subtree);
        directory
    }

    /// Stores a tree of `entries`; returns its id.
    fn store(writer: &BlobWriter, entries: Vec<TreeEntry>) -> Id {
        let bytes = Tree::new(entries).encode();
        let id = Id::of(&bytes);
        writer.add(BlobKind::Tree, id, &bytes).unwrap();
        id
    }

    /// Records every call, reading trees through the index.
    struct Recorder<'a> {
        fixture: &'a Fixture,
        events: Vec<String>,
        skip: Option<&'static str>,
        stop_after: Option<usize>,
        leaves: bool,
    }

    impl<'a> Recorder<'a> {
        fn new(fixture: &'a Fixture) -> Self {
            Recorder {
                fixture,
                events: Vec::new(),
                skip: None,
                stop_after: None,
                leaves: false,
            }
        }
    }

    impl TreeVisitor for Recorder<'_> {
        type Error = StoreError;
        fn enter(&mut self, _: &Id, path: &str) -> Result<Flow> {
            self.events.push(format!("tree {path}"));
            Ok(Flow::Continue)
        }
        fn read(&mut self, id: &Id, _: &str) -> Result<Option<Tree>> {
            read_tree(&self.fixture.repository, &self.fixture.index, id).map(Some)
        }
        fn leave(&mut self, _: &Id, path: &str) -> Result<()> {
            if self.leaves {
                self.events.push(format!("leave {path}"));
            }
            Ok(())
        }
        fn entry(&mut self, _: &TreeEntry, path: &str) -> Result<Flow> {
            self.events.push(path.to_string());
            if self.stop_after == Some(self.events.len()) {
                return Ok(Flow::Stop);
            }
            Ok(match self.skip {
                Some(skipped) if skipped == path => Flow::SkipSubtree,
                _ => Flow::Continue,
            })
        }
    }

    /// root: a/ (x, y/ (z)), b/ (shared), c/ (shared), f
    fn sample(fixture: &Fixture) -> Id {
        let writer = BlobWriter::new(&fixture.repository, &fixture.index, HashMap::new(), None);
        let y = store(&writer, vec![file("z", "z")]);
        let a = store(&writer, vec![file("x", "x"), directory("y", y)]);
        let shared = store(&writer, vec![file("s", "s")]);
        let root = store(
            &writer,
            vec![
                directory("a", a),
                directory("b", shared),
                directory("c", shared),
                file("f", "f"),
            ],
        );
        writer.finish().unwrap();
        root
    }

    #[test]
    fn in_order_an_entry_is_followed_by_everything_below_it_then_its_tree_is_left() {
        let fixture = fixture();
        let root = sample(&fixture);
        let mut recorder = Recorder::new(&fixture);
        recorder.leaves = true;
        recorder.skip = Some("b");
        let walked = TreeWalk::new()
            .with_paths()
            .in_order()
            .walk([(root, String::new())], &mut recorder)
            .unwrap();
        assert_eq!(walked, Walked::Finished);
        assert_eq!(
            recorder.events,
            [
                "tree ",
                "a",
                "tree a",
                "a/x",
                "a/y",
                "tree a/y",
                "a/y/z",
                "leave a/y",
                "leave a",
                "b",
                "c",
                "tree c",
                "c/s",
                "leave c",
                "f",
                "leave ",
            ]
        );
    }

    #[test]
    fn a_tree_gives_its_entries_in_order_then_its_subdirectories_last_first() {
        let fixture = fixture();
        let root = sample(&fixture);
        let mut recorder = Recorder::new(&fixture);
        let walked = TreeWalk::new()
            .with_paths()
            .walk([(root, "top".to_string())], &mut recorder)
            .unwrap();
        assert_eq!(walked, Walked::Finished);
        assert_eq!(
            recorder.events,
            [
                "tree top",
                "top/a",
                "top/b",
                "top/c",
                "top/f",
                "tree top/c",
                "top/c/s",
                "tree top/b",
                "top/b/s",
                "tree top/a",
                "top/a/x",
                "top/a/y",
                "tree top/a/y",
                "top/a/y/z",
            ]
        );
    }

    #[test]
    fn skipping_seen_reads_a_shared_tree_once_across_walks() {
        let fixture = fixture();
        let root = sample(&fixture);
        let mut walk = TreeWalk::new().skipping_seen();
        let mut recorder = Recorder::new(&fixture);
        walk.walk([(root, String::new())], &mut recorder).unwrap();
        let trees = recorder
            .events
            .iter()
            .filter(|event| event.starts_with("tree"))
            .count();
        assert_eq!(trees, 4, "root, a, a/y and the shared tree once");
        assert_eq!(walk.seen().map(HashSet::len), Some(4));
        assert!(
            recorder
                .events
                .iter()
                .all(|event| event.is_empty() || event == "tree ")
        );

        let mut again = Recorder::new(&fixture);
        walk.walk([(root, String::new())], &mut again).unwrap();
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn skipping_a_subtree_and_stopping() {
        let fixture = fixture();
        let root = sample(&fixture);
        let mut recorder = Recorder::new(&fixture);
        recorder.skip = Some("a");
        TreeWalk::new()
            .with_paths()
            .walk([(root, String::new())], &mut recorder)
            .unwrap();
        assert!(!recorder.events.iter().any(|event| event.starts_with("a/")));
        assert!(recorder.events.contains(&"b/s".to_string()));

        let mut stopped = Recorder::new(&fixture);
        stopped.stop_after = Some(3);
        let walked = TreeWalk::new()
            .with_paths()
            .walk([(root, String::new())], &mut stopped)
            .unwrap();
        assert_eq!(walked, Walked::Stopped);
        assert_eq!(stopped.events, ["tree ", "a", "b"]);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        const DEPTH: usize = 20_000;
        let fixture = fixture();
        let writer = BlobWriter::new(&fixture.repository, &fixture.index, HashMap::new(), None);
        let mut tree = store(&writer, vec![file("bottom", "bottom")]);
        for _ in 0..DEPTH {
            tree = store(&writer, vec![directory("d", tree)]);
        }
        writer.finish().unwrap();
        let mut blobs = 0;
        let mut seen = HashSet::new();
        visit_blobs(
            &fixture.repository,
            &fixture.index,
            [tree],
            &mut seen,
            &mut |_, _| {
                blobs += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(blobs, DEPTH + 2, "every tree and the one chunk");
        assert_eq!(seen.len(), DEPTH + 1);
    }

    #[test]
    fn a_missing_tree_ends_the_walk_with_its_id() {
        let fixture = fixture();
        let writer = BlobWriter::new(&fixture.repository, &fixture.index, HashMap::new(), None);
        let lost = Id::of(b"a tree nobody stored");
        let root = store(&writer, vec![directory("gone", lost)]);
        writer.finish().unwrap();
        let error = TreeWalk::new()
            .walk([(root, String::new())], &mut Recorder::new(&fixture))
            .unwrap_err();
        match error {
            StoreError::Missing { object } => {
                assert!(object.contains(&lost.to_string()), "{object}")
            }
            other => panic!("expected a missing tree, got {other}"),
        }
    }

    #[test]
    fn a_tree_is_left_after_everything_below_it() {
        let fixture = fixture();
        let root = sample(&fixture);
        let mut recorder = Recorder::new(&fixture);
        recorder.leaves = true;
        TreeWalk::new()
            .with_paths()
            .walk([(root, String::new())], &mut recorder)
            .unwrap();
        let trees: Vec<&str> = recorder
            .events
            .iter()
            .filter(|event| event.starts_with("tree ") || event.starts_with("leave "))
            .map(String::as_str)
            .collect();
        assert_eq!(
            trees,
            [
                "tree ",
                "tree c",
                "leave c",
                "tree b",
                "leave b",
                "tree a",
                "tree a/y",
                "leave a/y",
                "leave a",
                "leave ",
            ]
        );
    }
}
