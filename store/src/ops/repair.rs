//! Repair: rebuild what can be rebuilt from the repository's own data.
//!
//! `repair_index` rebuilds the index from pack headers alone:
//! 1. list the index files there are now (the ones to replace);
//! 2. list the packs and read each one's header (two ranged reads), in
//!    parallel; a pack whose header cannot be read is reported and left out;
//! 3. write new index files listing every readable pack;
//! 4. only then delete the index files listed in step 1 (unless one was
//!    just written again under the same name; one of those whose stored
//!    bytes are damaged is replaced by the right ones).
//!
//! `repair_snapshots` salvages snapshots that need blobs the repository has
//! lost: for each one it writes a new signed snapshot whose trees leave out
//! exactly the files (and unreadable directories) that cannot be restored in
//! full, lists them as problems, and tags it `repaired` with the label
//! `repaired-from`. The original is never changed or removed.
//!
//! A crash before step 4 leaves old and new index files side by side, which
//! readers accept (index files may overlap); a crash during step 4 leaves
//! some old ones, which the next repair removes. A backup running at the
//! same time writes index files after step 1, which are never deleted, so
//! its packs stay indexed.

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::index::{IndexFile, PackEntry};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::manifest::{Problem, SignedManifest};
use crate::format::pack::BlobKind;
use crate::format::tree::{EntryKind, Tree};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::blob_writer::BlobWriter;
use crate::ops::{common::join_relative, read_tree};
use crate::repository::Repository;
use rayon::prelude::*;
use std::collections::HashMap;
use std::collections::HashSet;

/// Packs per rebuilt index file, as a backup writes them.
const PACKS_PER_INDEX_FILE: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct RepairIndexOutcome {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Packs left out because their header could not be read: (pack, why).
    pub unreadable_packs: Vec<(Id, String)>,
    pub index_files_written: u64,
    pub index_files_removed: u64,
}

pub fn repair_index(repository: &Repository) -> Result<RepairIndexOutcome> {
    let old_index_files = repository.list_ids(ObjectKind::Index)?;
    let listed: Vec<(Id, u64)> = repository.list_packs()?.into_iter().collect();
    let headers: Vec<(Id, std::result::Result<PackEntry, String>)> = listed
        .par_iter()
        .map(|&(id, size)| {
            let header = repository
                .read_pack_header(&id, size)
                .map(|header| PackEntry {
                    id,
                    size,
                    blobs: header.blobs,
                })
                .map_err(|error| error.to_string());
            (id, header)
        })
        .collect();

    let mut outcome = RepairIndexOutcome::default();
    let mut packs = Vec::new();
    for (id, header) in headers {
        match header {
            Ok(entry) => {
                outcome.blobs_indexed += entry.blobs.len() as u64;
                packs.push(entry);
            }
            Err(why) => outcome.unreadable_packs.push((id, why)),
        }
    }
    packs.sort_by_key(|pack| pack.id);
    outcome.packs_indexed = packs.len() as u64;

    let mut written = HashSet::new();
    for batch in packs.chunks(PACKS_PER_INDEX_FILE) {
        let bytes = IndexFile::new(batch.to_vec()).encode();
        let id = repository.write_object(ObjectKind::Index, &bytes)?;
        // An object of that name may already exist with damaged content
        // (create-if-absent then keeps it): put the right bytes back.
        if repository.read_index_file(&id).is_err() {
            repository
                .backend()
                .delete(ObjectKind::Index, &id.to_hex())?;
            repository.write_object(ObjectKind::Index, &bytes)?;
            outcome.index_files_removed += 1;
        }
        written.insert(id);
        outcome.index_files_written += 1;
    }
    for old in old_index_files {
        if !written.contains(&old) {
            repository
                .backend()
                .delete(ObjectKind::Index, &old.to_hex())?;
            outcome.index_files_removed += 1;
        }
    }
    Ok(outcome)
}

/// A snapshot written by `repair_snapshots`.
#[derive(Clone, Debug)]
pub struct RepairedSnapshot {
    pub original: Id,
    pub repaired: Id,
    /// What the repaired snapshot leaves out, and why.
    pub omitted: Vec<Problem>,
}

/// The tag and label of a repaired snapshot.
pub const REPAIRED_TAG: &str = "repaired";
pub const REPAIRED_FROM_LABEL: &str = "repaired-from";

/// Writes a repaired copy of every trusted snapshot that needs a blob that
/// is not indexed in an existing pack, or is in `corrupt` (from a verify
/// that read the data).
pub fn repair_snapshots(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    trusted: &[PublicKey],
    corrupt: &HashSet<Id>,
) -> Result<Vec<RepairedSnapshot>> {
    let present: HashMap<Id, u64> = repository.list_packs()?;
    let mut ids = repository.list_ids(ObjectKind::Snapshot)?;
    ids.sort();
    let mut repaired = Vec::new();
    for id in ids {
        // Only a snapshot we trust is worth re-signing; others are verify's
        // to report.
        let Ok(body) = repository
            .read_manifest(&id)
            .and_then(|manifest| manifest.verified_body(trusted, "snapshot"))
        else {
            continue;
        };
        let salvage = Salvage {
            repository,
            index,
            present: &present,
            corrupt,
        };
        let mut new_body = body.clone();
        let mut omitted = Vec::new();
        let writer = BlobWriter::new(repository, index, present.clone());
        for component in &mut new_body.components {
            let mut lost = Vec::new();
            let tree = salvage.rewrite(&writer, &component.tree, "", &mut lost)?;
            let tree = match tree {
                Some(tree) => tree,
                None => store_tree(&writer, Tree::new(Vec::new()))?,
            };
            component.tree = tree;
            omitted.extend(lost.into_iter().map(|(path, problem)| Problem {
                component: component.name.clone(),
                path,
                problem,
            }));
        }
        writer.finish()?;
        if omitted.is_empty() {
            continue;
        }
        new_body.problems.extend(omitted.iter().cloned());
        new_body.tags.push(REPAIRED_TAG.into());
        new_body
            .labels
            .insert(REPAIRED_FROM_LABEL.into(), id.to_hex());
        let manifest = SignedManifest::sign(&new_body, key);
        let new_id = repository.write_object(ObjectKind::Snapshot, &manifest.encode())?;
        repaired.push(RepairedSnapshot {
            original: id,
            repaired: new_id,
            omitted,
        });
    }
    Ok(repaired)
}

struct Salvage<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    present: &'a HashMap<Id, u64>,
    corrupt: &'a HashSet<Id>,
}

fn store_tree(writer: &BlobWriter, tree: Tree) -> Result<Id> {
    let bytes = tree.encode();
    let id = Id::of(&bytes);
    writer.add(BlobKind::Tree, id, &bytes)?;
    Ok(id)
}

impl Salvage<'_> {
    fn available(&self, blob: &Id) -> Result<bool> {
        Ok(!self.corrupt.contains(blob)
            && self
                .index
                .lookup(blob)?
                .is_some_and(|location| self.present.contains_key(&location.pack)))
    }

    /// The tree with every damaged file left out, or `None` if the tree
    /// itself cannot be read. Records what it leaves out in `lost`.
    fn rewrite(
        &self,
        writer: &BlobWriter,
        tree_id: &Id,
        relative: &str,
        lost: &mut Vec<(String, String)>,
    ) -> Result<Option<Id>> {
        let shown = |path: &str| {
            if path.is_empty() {
                "/".to_string()
            } else {
                path.to_string()
            }
        };
        let tree = match self.available(tree_id)? {
            true => read_tree(self.repository, self.index, tree_id).ok(),
            false => None,
        };
        let Some(tree) = tree else {
            lost.push((
                shown(relative),
                "omitted by repair: its directory listing is lost".into(),
            ));
            return Ok(None);
        };
        let mut changed = false;
        let mut kept = Vec::with_capacity(tree.entries.len());
        for mut entry in tree.entries {
            let path = join_relative(relative, &entry.display_name());
            match entry.kind {
                EntryKind::File => {
                    let mut whole = true;
                    for chunk in entry.chunks.as_deref().unwrap_or_default() {
                        if !self.available(chunk)? {
                            whole = false;
                            break;
                        }
                    }
                    if !whole {
                        lost.push((
                            path,
                            "omitted by repair: some of its chunks are lost".into(),
                        ));
                        changed = true;
                        continue;
                    }
                }
                EntryKind::Directory => {
                    let Some(subtree) = entry.subtree else {
                        continue;
                    };
                    match self.rewrite(writer, &subtree, &path, lost)? {
                        Some(new) => {
                            changed |= new != subtree;
                            entry.subtree = Some(new);
                        }
                        None => {
                            changed = true;
                            continue;
                        }
                    }
                }
                EntryKind::Symlink => {}
            }
            kept.push(entry);
        }
        if !changed {
            return Ok(Some(*tree_id));
        }
        store_tree(writer, Tree::new(kept)).map(Some)
    }
}
