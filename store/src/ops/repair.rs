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
//! A crash before step 4 leaves old and new index files side by side, which
//! readers accept (index files may overlap); a crash during step 4 leaves
//! some old ones, which the next repair removes. A backup running at the
//! same time writes index files after step 1, which are never deleted, so
//! its packs stay indexed.

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{IndexFile, PackEntry};
use crate::pack::read_header;
use crate::repository::Repository;
use rayon::prelude::*;
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
    let listed = repository.backend().list(ObjectKind::Pack)?;
    let headers: Vec<(Id, std::result::Result<PackEntry, String>)> = listed
        .par_iter()
        .filter_map(|object| Some((Id::from_hex(&object.name)?, object.size)))
        .map(|(id, size)| {
            let header = read_header(repository.backend(), &id, size)
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
