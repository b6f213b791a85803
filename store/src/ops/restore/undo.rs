//! Undoing a restore (`cairn undo-restore`): from its safety snapshot,
//! remove what the restore created and put back what it overwrote or
//! deleted ([`super::safety`] says how the snapshot and its journal are
//! laid out). Refuses a snapshot that is not a safety snapshot, and one
//! whose journal this host did not keep: the journal acted on is this
//! host's own copy, never the one in the repository.

use super::execute::restore_saved;
use super::safety::{self, JOURNAL_COMPONENT, SAFETY_TAG};
use crate::error::{Result, StoreError};
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;
use std::path::Path;

/// Undoes a restore from its safety snapshot (`cairn undo-restore`), with
/// the journal this host kept in `journals` (see
/// [`super::RestoreOptions::journals`]).
pub fn undo_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    safety: Id,
    body: &SnapshotBody,
    journals: &Path,
) -> Result<Vec<(String, String)>> {
    if !body.tags.iter().any(|tag| tag == SAFETY_TAG) {
        return Err(StoreError::Invalid(format!(
            "snapshot {} is not a safety snapshot (no {SAFETY_TAG} tag)",
            safety.short()
        )));
    }
    if body.component(JOURNAL_COMPONENT).is_none() {
        return Err(StoreError::corrupt(
            format!("safety snapshot {}", safety.short()),
            "it has no restore journal",
        ));
    }
    let journal = safety::read_local_journal(journals, &safety)?;
    let mut problems: Vec<(String, String)> =
        safety::remove_created(&journal, repository.id_hasher())
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
