//! Every place a repository's index files list each blob they list more
//! than once: where a reader turns when the place it was given for a blob
//! fails (its pack is missing or damaged, or a planted index file named a
//! place that never held it).
//!
//! Read from the index files on the first failure and then kept for the
//! run, shared by every clone of the repository: the slow path of a
//! restore, and of any reader of delta bases, never the fast one. Every
//! index file counts, vouched for or not, since whatever is read from a
//! place is checked against its id. It never decides which copy is read
//! first (the index cache does) and never reads a blob itself.

use super::Repository;
use crate::backend::ObjectKind;
use crate::format::index::BlobLocation;
use crate::id::Id;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The places, read once (see the module's header).
#[derive(Clone, Default)]
pub(super) struct ListedCopies(Arc<OnceLock<HashMap<Id, Vec<BlobLocation>>>>);

impl ListedCopies {
    /// Every place `repository`'s index files list `id`, if they list it
    /// in more than one; empty otherwise.
    pub(super) fn of(&self, repository: &Repository, id: &Id) -> &[BlobLocation] {
        self.0
            .get_or_init(|| locations_listed_twice(repository))
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Reads every index file; one that cannot be read is skipped (the
/// index's opening named it).
fn locations_listed_twice(repository: &Repository) -> HashMap<Id, Vec<BlobLocation>> {
    let mut listed: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
    let files = repository.list_ids(ObjectKind::Index).unwrap_or_default();
    for file in files {
        let Ok(file) = repository.read_index_file(&file) else {
            continue;
        };
        for pack in file.packs {
            for entry in pack.blobs {
                let location = BlobLocation {
                    pack: pack.id,
                    entry,
                };
                let places = listed.entry(entry.id).or_default();
                if !places.contains(&location) {
                    places.push(location);
                }
            }
        }
    }
    listed.retain(|_, places| places.len() > 1);
    listed
}
