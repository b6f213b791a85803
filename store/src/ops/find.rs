//! Find: where a file is across snapshots.
//!
//! A pattern is a glob. Without a `/` it matches an entry's name (`*.md`,
//! `notes.txt`); with one, the whole path `COMPONENT/PATH` as `ls` shows it
//! (`memory/notes/**`, `*/config.toml`), where `*` stops at a `/` and `**`
//! crosses any number. Each snapshot given is walked (its trees checked
//! against their ids as they are read), newest first; the matches of one
//! snapshot come in path order.
//!
//! Reads only; never writes.

use crate::error::{Result, StoreError};
use crate::format::manifest::SnapshotBody;
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk, entry_budget, read_tree};
use crate::repository::Repository;
use globset::{GlobBuilder, GlobMatcher};

/// A compiled find pattern.
pub struct Pattern {
    matcher: GlobMatcher,
    /// Whether it matches whole paths (it holds a `/`) or names.
    on_path: bool,
}

impl Pattern {
    pub fn new(pattern: &str) -> Result<Self> {
        let trimmed = pattern.trim_matches('/');
        let on_path = trimmed.contains('/');
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .build()
            .map_err(|error| {
                StoreError::Invalid(format!("pattern {pattern:?} is not a valid glob: {error}"))
            })?;
        Ok(Pattern {
            matcher: glob.compile_matcher(),
            on_path,
        })
    }

    /// Whether the entry at `path` (`COMPONENT/PATH`) named `name` matches.
    pub fn matches(&self, path: &str, name: &str) -> bool {
        self.matcher
            .is_match(if self.on_path { path } else { name })
    }
}

/// One match.
#[derive(Clone, Debug)]
pub struct Found {
    pub snapshot: Id,
    /// `COMPONENT/PATH`, as `ls` shows it.
    pub path: String,
    pub entry: TreeEntry,
}

/// Every entry matching `pattern` in `snapshots`, newest snapshot first
/// (by recorded time), each snapshot's in path order.
pub fn find(
    repository: &Repository,
    index: &dyn IndexCache,
    snapshots: &[(Id, SnapshotBody)],
    pattern: &Pattern,
) -> Result<Vec<Found>> {
    let mut ordered: Vec<&(Id, SnapshotBody)> = snapshots.iter().collect();
    ordered.sort_by(|a, b| (&b.1.time, b.0).cmp(&(&a.1.time, a.0)));
    let mut found = Vec::new();
    for (snapshot, body) in ordered {
        let mut in_snapshot = Vec::new();
        for component in &body.components {
            let mut finder = Finder {
                repository,
                index,
                pattern,
                snapshot: *snapshot,
                single_file: component.kind.is_single_file().then_some(&component.name),
                found: &mut in_snapshot,
            };
            TreeWalk::new()
                .with_paths()
                .within(entry_budget(&component.stats))
                .walk([(component.tree, component.name.clone())], &mut finder)?;
        }
        in_snapshot.sort_by(|a, b| a.path.cmp(&b.path));
        found.append(&mut in_snapshot);
    }
    Ok(found)
}

struct Finder<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    pattern: &'a Pattern,
    snapshot: Id,
    /// A single-file component's one entry is shown as the component.
    single_file: Option<&'a String>,
    found: &'a mut Vec<Found>,
}

impl TreeVisitor for Finder<'_> {
    type Error = StoreError;

    fn refused(&mut self, id: &Id, path: &str, refusal: Refusal) -> Result<()> {
        Err(refusal.error(id, path))
    }

    fn read(&mut self, id: &Id, _: &str) -> Result<Option<Tree>> {
        read_tree(self.repository, self.index, id).map(Some)
    }

    fn entry(&mut self, entry: &TreeEntry, path: &str) -> Result<Flow> {
        let name = entry.display_name();
        let shown = self
            .single_file
            .cloned()
            .unwrap_or_else(|| path.to_string());
        if self.pattern.matches(&shown, &name) {
            self.found.push(Found {
                snapshot: self.snapshot,
                path: shown,
                entry: entry.clone(),
            });
        }
        Ok(match entry.kind {
            EntryKind::Directory => Flow::Continue,
            _ => Flow::SkipSubtree,
        })
    }
}
