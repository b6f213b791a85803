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
//! Bounds (docs/FORMAT.md section 15): a tree deeper than
//! [`MAX_TREE_DEPTH`] below its root is refused, and a walk that expands
//! every reference to a tree visits at most its budget of entries
//! ([`TreeWalk::within`], from the component's signed record:
//! [`entry_budget`]) or, without one, walks trees it has already walked (a
//! shared subtree, reached again at another path) for at most
//! [`MAX_REPEATED_ENTRIES`] entries, then refuses the rest: a small
//! snapshot whose trees name one subtree twice at every level would
//! otherwise expand to 2^depth entries. A refused tree is handed to the
//! visitor's [`TreeVisitor::refused`] and passed by unread. Trees cannot
//! form a cycle (a tree is named by the hash of its bytes, which name its
//! subtrees' hashes), so depth and repeats are all there is to bound.
//!
//! Never writes anything, and owns no policy about damage.

use crate::error::{Result, StoreError};
pub use crate::format::limits::{MAX_REPEATED_ENTRIES, MAX_TREE_DEPTH};
use crate::format::manifest::ComponentStats;
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

/// Why a walk passed a tree by unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It lies more than [`MAX_TREE_DEPTH`] levels below its root.
    TooDeep,
    /// The walk has already walked [`MAX_REPEATED_ENTRIES`] entries of
    /// trees it had walked before.
    RepeatedTooOften,
    /// The walk has visited as many entries as its budget allows
    /// ([`TreeWalk::within`]): more than the snapshot records.
    OverBudget(u64),
}

impl Refusal {
    /// The error that names the tree and says why.
    pub fn error(self, id: &Id, path: &str) -> StoreError {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {path}")
        };
        StoreError::corrupt(
            format!("tree {id}{at}"),
            match self {
                Refusal::TooDeep => format!(
                    "nests more than {MAX_TREE_DEPTH} directories deep, the most a reader accepts; not walked"
                ),
                Refusal::RepeatedTooOften => format!(
                    "repeats subtrees already walked beyond {MAX_REPEATED_ENTRIES} entries (a tree naming the same subtree many times over); not walked"
                ),
                Refusal::OverBudget(budget) => format!(
                    "expands past {budget} entries, far more than its snapshot records (a tree naming the same subtree many times over); not walked"
                ),
            },
        )
    }
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

    /// The walk will not go into tree `id` (why: `refusal`, see
    /// [`Refusal::error`]); it passes it by, unread and unentered, once
    /// this returns. A visitor either ends the walk with an error or notes
    /// the tree as damage, as it does for a tree it cannot read.
    fn refused(
        &mut self,
        id: &Id,
        path: &str,
        refusal: Refusal,
    ) -> std::result::Result<(), Self::Error>;

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
    /// A tree, its path and its depth below its root.
    Enter(Id, String, usize),
    /// An entry of a tree read at the given depth.
    Entry(Rc<(Tree, String, usize)>, usize),
    Leave(Id, String),
}

/// A walk's options and, when it skips trees already seen, the trees it
/// has met so far (across calls to [`TreeWalk::walk`]).
#[derive(Debug, Default)]
pub struct TreeWalk {
    seen: Option<HashSet<Id>>,
    paths: bool,
    in_order: bool,
    budget: Option<u64>,
}

/// The entries a walk of a component may visit: twice what its signed
/// record counts (files, directories and symlinks, each once per path),
/// plus a million. A component's walk visits exactly its count; the slack
/// only keeps a miscounted record from costing a restore.
pub fn entry_budget(stats: &ComponentStats) -> u64 {
    stats
        .files
        .saturating_add(stats.directories)
        .saturating_add(stats.symlinks)
        .saturating_mul(2)
        .saturating_add(1 << 20)
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

    /// Visits at most `budget` entries in each call to [`TreeWalk::walk`]
    /// (see [`entry_budget`]), refusing the trees past it; without a
    /// budget, a walk that expands every reference bounds only its repeats
    /// ([`MAX_REPEATED_ENTRIES`]).
    pub fn within(mut self, budget: u64) -> Self {
        self.budget = Some(budget);
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
            .map(|(id, path)| Step::Enter(id, path, 0))
            .collect();
        stack.reverse();
        let mut subtrees = Vec::new();
        // Trees walked in this call, and the entries of trees walked again:
        // only a walk that expands every reference keeps them.
        let mut walked: HashSet<Id> = HashSet::new();
        let mut repeated_entries = 0u64;
        let mut entries = 0u64;
        while let Some(step) = stack.pop() {
            let (id, path, depth) = match step {
                Step::Enter(id, path, depth) => (id, path, depth),
                Step::Entry(tree, index) => {
                    let (tree, path, depth) = &*tree;
                    let entry = &tree.entries[index];
                    let entry_path = self.entry_path(path, entry);
                    match visitor.entry(entry, &entry_path)? {
                        Flow::Continue => {}
                        Flow::SkipSubtree => continue,
                        Flow::Stop => return Ok(Walked::Stopped),
                    }
                    if let Some(subtree) = entry.subtree {
                        stack.push(Step::Enter(subtree, entry_path, depth + 1));
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
            let repeat = self.seen.is_none() && !walked.insert(id);
            let refusal = if depth > MAX_TREE_DEPTH {
                Some(Refusal::TooDeep)
            } else if let Some(budget) = self.budget.filter(|budget| entries >= *budget) {
                Some(Refusal::OverBudget(budget))
            } else if repeat && self.budget.is_none() && repeated_entries >= MAX_REPEATED_ENTRIES {
                Some(Refusal::RepeatedTooOften)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                visitor.refused(&id, &path, refusal)?;
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
            entries += tree.entries.len() as u64;
            if repeat {
                repeated_entries += tree.entries.len() as u64;
            }
            if self.in_order {
                let count = tree.entries.len();
                stack.push(Step::Leave(id, path.clone()));
                let shared = Rc::new((tree, path, depth));
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
                    subtrees.push(Step::Enter(subtree, entry_path, depth + 1));
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
        fn refused(&mut self, id: &Id, path: &str, refusal: Refusal) -> Result<()> {
            Err(refusal.error(id, path))
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
        budget: None,
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
    use crate::format::tree::EntryKind;
    use crate::index::MemoryIndex;
    use crate::ops::common::blob_writer::BlobWriter;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A repository and its index, both in memory: the walker's tests are
    /// about trees, not disks.
    struct Fixture {
        repository: Repository,
        index: MemoryIndex,
    }

    fn fixture() -> Fixture {
        let (repository, _) =
            crate::repository::plaintext_for_tests(Arc::new(MemoryBackend::new()));
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
        fn refused(&mut self, _: &Id, path: &str, refusal: Refusal) -> Result<()> {
            self.events.push(format!("refused {path}: {refusal:?}"));
            Ok(())
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

    /// A chain of `levels` trees below a root; returns the root and the
    /// deepest tree.
    fn chain(fixture: &Fixture, levels: usize) -> (Id, Id) {
        let writer = BlobWriter::new(&fixture.repository, &fixture.index, HashMap::new(), None);
        let bottom = store(&writer, vec![file("bottom", "bottom")]);
        let mut tree = bottom;
        for _ in 0..levels {
            tree = store(&writer, vec![directory("d", tree)]);
        }
        writer.finish().unwrap();
        (tree, bottom)
    }

    #[test]
    fn nesting_to_the_limit_is_walked_and_a_level_more_is_refused_by_name() {
        // The walk keeps its own stack: the limit is a rule of the format,
        // not the call stack's.
        let fixture = fixture();
        let (root, _) = chain(&fixture, MAX_TREE_DEPTH);
        let mut blobs = 0;
        let mut seen = HashSet::new();
        visit_blobs(
            &fixture.repository,
            &fixture.index,
            [root],
            &mut seen,
            &mut |_, _| {
                blobs += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(blobs, MAX_TREE_DEPTH + 2, "every tree and the one chunk");

        let fixture = self::fixture();
        let (root, bottom) = chain(&fixture, MAX_TREE_DEPTH + 1);
        let error = visit_blobs(
            &fixture.repository,
            &fixture.index,
            [root],
            &mut HashSet::new(),
            &mut |_, _| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(&bottom.to_string()) && error.contains("1024 directories deep"),
            "{error}"
        );
        // A visitor that notes damage instead is told, and the walk goes on.
        let mut recorder = Recorder::new(&fixture);
        let walked = TreeWalk::new()
            .walk([(root, String::new())], &mut recorder)
            .unwrap();
        assert_eq!(walked, Walked::Finished);
        assert_eq!(
            recorder.events.last().map(String::as_str),
            Some("refused : TooDeep")
        );
    }

    #[test]
    fn a_subtree_named_twice_at_every_level_expands_only_within_its_budget() {
        // 40 trees of two entries each that name the tree below: 2^40
        // entries if expanded without bound.
        let fixture = fixture();
        let writer = BlobWriter::new(&fixture.repository, &fixture.index, HashMap::new(), None);
        let mut tree = store(&writer, vec![file("f", "f")]);
        for _ in 0..40 {
            tree = store(&writer, vec![directory("a", tree), directory("b", tree)]);
        }
        writer.finish().unwrap();
        let mut recorder = Recorder::new(&fixture);
        let walked = TreeWalk::new()
            .within(1000)
            .walk([(tree, String::new())], &mut recorder)
            .unwrap();
        assert_eq!(walked, Walked::Finished);
        let entries = recorder
            .events
            .iter()
            .filter(|event| !event.starts_with("tree ") && !event.starts_with("refused "))
            .count();
        assert!((1000..1100).contains(&entries), "{entries} entries visited");
        assert!(
            recorder
                .events
                .iter()
                .any(|event| event.ends_with("OverBudget(1000)")),
            "the trees past the budget are refused"
        );
        // Skipping trees already seen reads each of the 41 once.
        let mut once = Recorder::new(&fixture);
        TreeWalk::new()
            .skipping_seen()
            .walk([(tree, String::new())], &mut once)
            .unwrap();
        assert_eq!(
            once.events
                .iter()
                .filter(|event| event.starts_with("tree "))
                .count(),
            41
        );
        // A component's budget: twice its recorded entries and a million.
        let stats = ComponentStats {
            files: 10,
            directories: 5,
            symlinks: 1,
            ..ComponentStats::default()
        };
        assert_eq!(entry_budget(&stats), 32 + (1 << 20));
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
