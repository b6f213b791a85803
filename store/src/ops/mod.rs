//! Operations on a repository, one per file (or folder, for backup and
//! restore). Each takes an options value and returns an outcome with
//! statistics; none prints. What several share lives in [`common`], below
//! them all; no operation borrows from another's module.

pub mod backup;
pub mod cat;
pub mod common;
pub mod copy;
pub mod drill;
pub mod forget;
pub mod hooks;
pub mod init;
pub mod listing;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod verify;

use crate::error::{Result, StoreError};
use crate::format::tree::Tree;
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;

/// Reads and decodes one tree blob through the index.
pub fn read_tree(repository: &Repository, index: &dyn IndexCache, id: &Id) -> Result<Tree> {
    let location = index.lookup(id)?.ok_or_else(|| StoreError::Missing {
        object: format!("tree {id} (not in any index file)"),
    })?;
    let bytes = repository.read_blob(&location)?;
    Tree::decode(&bytes, &format!("tree {id}"))
}

/// Calls `visit` once for every tree and every chunk reachable from `roots`
/// (trees before their contents), skipping trees already in `seen`, which
/// it fills. Depth first with an explicit stack, so deep directory nesting
/// cannot overflow the call stack.
pub fn visit_blobs(
    repository: &Repository,
    index: &dyn IndexCache,
    roots: impl IntoIterator<Item = Id>,
    seen: &mut std::collections::HashSet<Id>,
    visit: &mut dyn FnMut(crate::format::pack::BlobKind, &Id) -> Result<()>,
) -> Result<()> {
    let mut stack: Vec<Id> = roots.into_iter().collect();
    while let Some(tree_id) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        visit(crate::format::pack::BlobKind::Tree, &tree_id)?;
        let tree = read_tree(repository, index, &tree_id)?;
        for entry in &tree.entries {
            for chunk in entry.chunks.iter().flatten() {
                visit(crate::format::pack::BlobKind::Data, chunk)?;
            }
            if let Some(subtree) = entry.subtree {
                stack.push(subtree);
            }
        }
    }
    Ok(())
}
