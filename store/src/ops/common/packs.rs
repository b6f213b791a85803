//! Packs a writer must treat specially: those no index file lists (left by
//! an interrupted writer), which it adopts, and those a prune has marked
//! for deletion, which it must not rely on when it commits.
//!
//! Used by backup and copy, the operations that write snapshots. Never
//! deletes a pack and never writes a manifest.

use crate::error::{Result, StoreError};
use crate::format::index::PackEntry;
use crate::format::keys::SigningKey;
use crate::format::pack::BlobKind;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::blob_writer::{BlobWriter, WriterStatistics};
use crate::repository::Repository;
use crate::repository::{marked_packs, read_marks};
use std::collections::{HashMap, HashSet};

/// How many times the check before committing may find new marks and copy
/// blobs out of them before giving up (each round only follows a prune
/// that marked data again while the previous round ran).
const SECURE_ROUNDS: usize = 3;

/// Makes sure every pack the new snapshot relies on still exists and is not
/// marked for deletion, just before the manifest is written. Blobs found in
/// a marked pack are copied into new packs (the marked pack is readable
/// until its grace period ends). Returns what the copies added.
///
/// Safety argument (FORMAT.md, deletion protocol): a prune deletes a marked
/// pack only after the grace period and only if no manifest it lists then
/// needs it; a mark written after this check is therefore followed by a
/// manifest listing that includes this snapshot, as long as this check and
/// the manifest write are closer together than the grace period.
pub(crate) fn secure_against_prune(
    repository: &Repository,
    index: &dyn IndexCache,
    signer: Option<&SigningKey>,
    mut relied: HashSet<Id>,
    roots: &[Id],
) -> Result<WriterStatistics> {
    let mut total = WriterStatistics::default();
    for _ in 0..SECURE_ROUNDS {
        let (marks, _unreadable) = read_marks(repository, &[])?;
        let marked = marked_packs(&marks);
        let mut present = repository.list_packs()?;
        if let Some(lost) = relied.iter().find(|pack| !present.contains_key(pack)) {
            return Err(StoreError::Conflict(format!(
                "pack {lost}, which this backup reuses data from, was deleted while the backup ran (by a prune whose grace period the backup outlasted); no snapshot was written; run the backup again"
            )));
        }
        if relied.is_disjoint(&marked) {
            return Ok(total);
        }
        present.retain(|pack, _| !marked.contains(pack));
        let rescue = BlobWriter::new(repository, index, present, signer);
        let mut seen = HashSet::new();
        let mut seen_bases = HashSet::new();
        crate::ops::visit_blobs(
            repository,
            index,
            roots.iter().copied(),
            &mut seen,
            &mut |kind, id| {
                let location = index.lookup(id)?.ok_or_else(|| {
                    StoreError::corrupt(
                        format!("blob {id}"),
                        "this backup refers to it but no index file lists it",
                    )
                })?;
                if marked.contains(&location.pack) {
                    // Copied whole: it needs no base any more.
                    let raw = repository.read_blob(&location)?;
                    rescue.add(kind, *id, &raw)?;
                    return Ok(());
                }
                // A delta kept where it is still needs its bases, which
                // no tree names: those in marked packs are copied too.
                let mut next = location.entry.base;
                while let Some(base) = next.filter(|base| seen_bases.insert(*base)) {
                    let place = index.lookup(&base)?.ok_or_else(|| {
                        StoreError::corrupt(
                            format!("delta base {base}"),
                            format!("blob {id} of this backup needs it but no index file lists it"),
                        )
                    })?;
                    if marked.contains(&place.pack) {
                        // Copied whole, so the rest of its chain is not
                        // needed through it.
                        let raw = repository.read_blob(&place)?;
                        rescue.add(BlobKind::Data, base, &raw)?;
                        break;
                    }
                    next = place.entry.base;
                }
                Ok(())
            },
        )
        .map_err(|error| match error {
            // Deleted while we copied out of it: the grace period is over.
            StoreError::Missing { object } => StoreError::Conflict(format!(
                "{object} was deleted by a prune while this backup copied data it reuses out of it \
                 (the backup outlasted the prune's grace period); no snapshot was written; \
                 run the backup again"
            )),
            other => other,
        })?;
        let copied = rescue.finish()?;
        total.add_new(&copied);
        relied.retain(|pack| !marked.contains(pack));
        relied.extend(rescue.relied_packs());
    }
    Err(StoreError::Conflict(format!(
        "prunes kept marking data this backup needs ({SECURE_ROUNDS} rounds of copying); no snapshot was written; run the backup again"
    )))
}

/// Packs present in the repository that no index file lists.
pub(crate) fn unindexed_packs(
    repository: &Repository,
    index: &dyn IndexCache,
    present: &HashMap<Id, u64>,
) -> Result<Vec<PackEntry>> {
    let mut orphans = Vec::new();
    for (&id, &size) in present {
        if index.has_pack(&id)? {
            continue;
        }
        // A pack whose header cannot be read is left for verify to report;
        // adopting it would only spread the damage.
        if let Ok(header) = repository.read_pack_header(&id, size) {
            orphans.push(PackEntry {
                id,
                size,
                blobs: header.blobs,
            });
        }
    }
    Ok(orphans)
}
