//! Undoing a restore (`cairn undo-restore`): from its safety snapshot,
//! remove what the restore created and put back what it overwrote or
//! deleted ([`super::safety`] says how the snapshot and its journal are
//! laid out). Refuses a snapshot that is not a safety snapshot.

use super::execute::restore_saved;
use super::safety::{self, JOURNAL_COMPONENT, Journal, SAFETY_TAG};
use super::write::read_file_bytes;
use crate::error::{Result, StoreError};
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;

/// Undoes a restore from its safety snapshot (`cairn undo-restore`).
pub fn undo_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    safety: Id,
    body: &SnapshotBody,
) -> Result<Vec<(String, String)>> {
    if !body.tags.iter().any(|tag| tag == SAFETY_TAG) {
        return Err(StoreError::Invalid(format!(
            "snapshot {} is not a safety snapshot (no {SAFETY_TAG} tag)",
            safety.short()
        )));
    }
    let journal_component = body.component(JOURNAL_COMPONENT).ok_or_else(|| {
        StoreError::corrupt(
            format!("safety snapshot {}", safety.short()),
            "it has no restore journal",
        )
    })?;
    let tree = crate::ops::read_tree(repository, index, &journal_component.tree)?;
    let entry = tree.entries.first().ok_or_else(|| {
        StoreError::corrupt(
            format!("safety snapshot {}", safety.short()),
            "empty restore journal",
        )
    })?;
    let journal = Journal::decode(&read_file_bytes(repository, index, entry)?)?;
    let mut problems: Vec<(String, String)> = safety::remove_created(&journal)
        .into_iter()
        .map(|(path, why)| (path.display().to_string(), why))
        .collect();
    problems.extend(restore_saved(repository, index, safety, body, &journal)?);
    problems.extend(
        safety::restore_directory_metadata(&journal)
            .into_iter()
            .map(|(path, why)| (path.display().to_string(), why)),
    );
    Ok(problems)
}
