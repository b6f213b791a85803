//! Listing: the snapshots in a repository, and the entries of one snapshot.
//! Reads only; never checks data beyond what it decodes.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::SnapshotBody;
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk, entry_budget, read_tree};
use crate::repository::Repository;

/// One snapshot as listed; `trust` says whether its signature holds.
pub struct SnapshotSummary {
    pub id: Id,
    pub body: SnapshotBody,
    pub trusted: std::result::Result<(), String>,
}

/// A snapshot whose manifest cannot be read, and why.
pub type UnreadableSnapshot = (Id, String);

/// Every decodable snapshot, oldest first, and the ids of those that are not.
pub fn list_snapshots(
    repository: &Repository,
    trusted: &[PublicKey],
) -> Result<(Vec<SnapshotSummary>, Vec<UnreadableSnapshot>)> {
    let mut listed = Vec::new();
    let mut broken = Vec::new();
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        let decoded = repository
            .read_manifest(&id)
            .and_then(|manifest| Ok((manifest.body_unverified()?, manifest)));
        match decoded {
            Ok((body, manifest)) => listed.push(SnapshotSummary {
                id,
                body,
                trusted: manifest
                    .verify(repository.id(), trusted)
                    .map_err(|failure| failure.to_string()),
            }),
            Err(error) => broken.push((id, error.to_string())),
        }
    }
    listed.sort_by(|a, b| (&a.body.time, a.id).cmp(&(&b.body.time, b.id)));
    Ok((listed, broken))
}

/// One entry of `cairn ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    /// `component/path/inside`.
    pub path: String,
    pub entry: TreeEntry,
}

/// Lists everything under `selector` (`COMPONENT[/PATH]`, or everything).
pub fn list_entries(
    repository: &Repository,
    index: &dyn IndexCache,
    body: &SnapshotBody,
    snapshot: &str,
    selector: Option<&str>,
) -> Result<Vec<ListedEntry>> {
    let selector = selector
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty());
    let (component_name, inner) = match selector {
        Some(selector) => match selector.split_once('/') {
            Some((component, inner)) => (Some(component), Some(inner)),
            None => (Some(selector), None),
        },
        None => (None, None),
    };
    let mut listed = Vec::new();
    for component in &body.components {
        if component_name.is_some_and(|name| name != component.name) {
            continue;
        }
        let mut lister = Lister {
            repository,
            index,
            single_file: component.kind.is_single_file().then_some(&component.name),
            listed: &mut listed,
        };
        TreeWalk::new()
            .with_paths()
            .within(entry_budget(&component.stats))
            .walk([(component.tree, component.name.clone())], &mut lister)?;
    }
    if let Some(name) = component_name
        && body.component(name).is_none()
    {
        return Err(StoreError::ComponentNotFound {
            name: name.into(),
            snapshot: snapshot.into(),
            existing: body.component_names(),
        });
    }
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    if let (Some(component), Some(inner)) = (component_name, inner) {
        let exact = format!("{component}/{inner}");
        let below = format!("{exact}/");
        listed.retain(|item| item.path == exact || item.path.starts_with(&below));
        if listed.is_empty() {
            return Err(StoreError::Invalid(format!(
                "no path {exact:?} in snapshot {snapshot}"
            )));
        }
    }
    Ok(listed)
}

/// Collects every entry the walk gives, with its path.
struct Lister<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    /// A single-file component's one entry is listed as the component.
    single_file: Option<&'a String>,
    listed: &'a mut Vec<ListedEntry>,
}

impl TreeVisitor for Lister<'_> {
    type Error = StoreError;

    fn refused(&mut self, id: &Id, path: &str, refusal: Refusal) -> Result<()> {
        Err(refusal.error(id, path))
    }

    fn read(&mut self, id: &Id, _: &str) -> Result<Option<Tree>> {
        read_tree(self.repository, self.index, id).map(Some)
    }

    fn entry(&mut self, entry: &TreeEntry, path: &str) -> Result<Flow> {
        self.listed.push(ListedEntry {
            path: self
                .single_file
                .cloned()
                .unwrap_or_else(|| path.to_string()),
            entry: entry.clone(),
        });
        Ok(match entry.kind {
            EntryKind::Directory => Flow::Continue,
            _ => Flow::SkipSubtree,
        })
    }
}
