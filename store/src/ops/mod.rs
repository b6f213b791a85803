//! Operations on a repository, one per file. Each takes an options value and
//! returns an outcome with statistics; none prints.

pub mod backup;
pub mod listing;
pub mod repair;
pub mod restore;
pub mod verify;

use crate::error::{Result, StoreError};
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;
use crate::tree::Tree;

/// Reads and decodes one tree blob through the index.
pub fn read_tree(repository: &Repository, index: &dyn IndexCache, id: &Id) -> Result<Tree> {
    let location = index.lookup(id)?.ok_or_else(|| StoreError::Missing {
        object: format!("tree {id} (not in any index file)"),
    })?;
    let bytes = repository.read_blob(&location)?;
    Tree::decode(&bytes, &format!("tree {id}"))
}

/// Joins a component-relative path and a name, `/`-separated.
pub fn join_relative(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}
