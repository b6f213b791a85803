//! Stats: how the repository's space is used, by whom, and what forgetting
//! snapshots would give back.
//!
//! 1. [`BlobSizes::read`]: every blob of a present pack as the index files
//!    list it, with its share of the stored bytes (its own length, or its
//!    part of a frame it shares, as prune counts it: `stored_shares`) and
//!    its raw length. A blob listed in two packs counts once.
//! 2. [`exclusive_use`]: walk each group of snapshot roots (a snapshot, the
//!    snapshots a policy forgets, one component across every snapshot),
//!    each group's shared trees once, noting for every blob the one group
//!    that reaches it or that several do. A group's *unique* bytes are
//!    those of the blobs only it reaches: what deleting the group (and a
//!    prune) would give back.
//!
//! Every decodable manifest counts as keeping its data, trusted or not, as
//! it does for prune; blobs no snapshot reaches (a prune's business) are
//! in the repository totals and in no group. Reads only.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::manifest::SnapshotBody;
use crate::format::pack::{BlobKind, stored_shares};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::listing::{SnapshotSummary, list_snapshots};
use crate::ops::walk::visit_blobs;
use crate::repository::Repository;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// One blob's size: its share of the stored bytes, and raw.
#[derive(Clone, Copy, Debug)]
struct BlobSize {
    stored: u64,
    raw: u32,
    kind: BlobKind,
}

/// Every blob of a present pack, from the index files.
pub struct BlobSizes {
    blobs: HashMap<Id, BlobSize>,
    /// Packs present in the repository, and their bytes.
    pub packs: u64,
    pub pack_bytes: u64,
    /// Index files that could not be read, and why (their blobs are left
    /// out of the totals; `cairn repair index` rebuilds them).
    pub unreadable_index_files: Vec<(Id, String)>,
}

impl BlobSizes {
    pub fn read(repository: &Repository) -> Result<Self> {
        let present = repository.list_packs()?;
        let mut sizes = BlobSizes {
            blobs: HashMap::new(),
            packs: present.len() as u64,
            pack_bytes: present.values().sum(),
            unreadable_index_files: Vec::new(),
        };
        let mut packs_seen = HashSet::new();
        for id in repository.list_ids(ObjectKind::Index)? {
            let file = match repository.read_index_file(&id) {
                Ok(file) => file,
                // Rewritten by a prune or repair since the listing.
                Err(StoreError::Missing { .. }) => continue,
                Err(error @ StoreError::Corrupt { .. }) => {
                    sizes.unreadable_index_files.push((id, error.to_string()));
                    continue;
                }
                Err(error) => return Err(error),
            };
            for pack in file.packs {
                if !present.contains_key(&pack.id) || !packs_seen.insert(pack.id) {
                    continue;
                }
                for (blob, stored) in pack.blobs.iter().zip(stored_shares(&pack.blobs)) {
                    sizes.blobs.entry(blob.id).or_insert(BlobSize {
                        stored,
                        raw: blob.raw_length,
                        kind: blob.kind,
                    });
                }
            }
        }
        Ok(sizes)
    }
}

/// Blobs and their bytes, stored (compressed, and encrypted) and raw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    pub blobs: u64,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
}

impl Bytes {
    fn add(&mut self, size: &BlobSize) {
        self.blobs += 1;
        self.stored_bytes += size.stored;
        self.raw_bytes += u64::from(size.raw);
    }
}

/// What one group of roots reaches, and what only it reaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupUse {
    pub referenced: Bytes,
    pub unique: Bytes,
}

/// For each group of root trees, the blobs it reaches and those no other
/// group reaches. A blob the index does not list counts in no total.
pub fn exclusive_use(
    repository: &Repository,
    index: &dyn IndexCache,
    sizes: &BlobSizes,
    groups: &[Vec<Id>],
) -> Result<Vec<GroupUse>> {
    const SHARED: u32 = u32::MAX;
    // Per blob: the one group that reaches it (or SHARED), and the last
    // group that did. Groups are walked one after another, so "last is
    // this group" means this group has counted it already.
    let mut owner: HashMap<Id, (u32, u32)> = HashMap::new();
    let mut uses = vec![GroupUse::default(); groups.len()];
    for (at, roots) in groups.iter().enumerate() {
        let group = u32::try_from(at)
            .ok()
            .filter(|group| *group != SHARED)
            .ok_or_else(|| StoreError::Invalid("too many groups".into()))?;
        let mut seen = HashSet::new();
        let referenced = &mut uses[at].referenced;
        visit_blobs(
            repository,
            index,
            roots.iter().copied(),
            &mut seen,
            &mut |_, id| {
                let first_here = match owner.get_mut(id) {
                    None => {
                        owner.insert(*id, (group, group));
                        true
                    }
                    Some((_, last)) if *last == group => false,
                    Some((only, last)) => {
                        *only = SHARED;
                        *last = group;
                        true
                    }
                };
                if first_here && let Some(size) = sizes.blobs.get(id) {
                    referenced.add(size);
                }
                Ok(())
            },
        )?;
    }
    for (id, (group, _)) in &owner {
        if *group != SHARED
            && let Some(size) = sizes.blobs.get(id)
        {
            uses[*group as usize].unique.add(size);
        }
    }
    Ok(uses)
}

/// The roots of a snapshot: each component's tree.
fn roots(body: &SnapshotBody) -> Vec<Id> {
    body.components
        .iter()
        .map(|component| component.tree)
        .collect()
}

/// Bytes of a snapshot that restoring it would write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreSize {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sum of file sizes.
    pub bytes: u64,
}

pub fn restore_size(body: &SnapshotBody) -> RestoreSize {
    let mut size = RestoreSize::default();
    for component in &body.components {
        size.files += component.stats.files;
        size.directories += component.stats.directories;
        size.symlinks += component.stats.symlinks;
        size.bytes += component.stats.bytes;
    }
    size
}

/// One component name across every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ComponentUse {
    pub name: String,
    pub snapshots: u64,
    /// Sum of file sizes over every snapshot that holds it.
    pub logical_bytes: u64,
    /// What this component's trees reach, and what no other component's do.
    #[serde(flatten)]
    pub usage: GroupUse,
}

/// The repository as a whole.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepositoryStats {
    pub snapshots: u64,
    pub packs: u64,
    /// Bytes of every pack, as stored.
    pub stored_bytes: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Indexed blobs' stored and raw (uncompressed) bytes.
    pub blob_stored_bytes: u64,
    pub blob_raw_bytes: u64,
    /// Sum of file sizes over every snapshot: what restoring them all
    /// would write.
    pub logical_bytes: u64,
    /// Raw bytes over stored bytes of the indexed blobs.
    pub compression_ratio: f64,
    /// Logical bytes over the raw bytes of the data blobs.
    pub deduplication_ratio: f64,
    pub components: Vec<ComponentUse>,
    /// Manifests that could not be read (their data is not counted).
    #[serde(skip)]
    pub unreadable_snapshots: Vec<(Id, String)>,
    #[serde(skip)]
    pub unreadable_index_files: Vec<(Id, String)>,
}

fn ratio(over: u64, under: u64) -> f64 {
    if under == 0 {
        0.0
    } else {
        over as f64 / under as f64
    }
}

pub fn repository_stats(
    repository: &Repository,
    index: &dyn IndexCache,
) -> Result<RepositoryStats> {
    let sizes = BlobSizes::read(repository)?;
    let (listed, unreadable) = list_snapshots(repository, &[])?;
    let mut stats = RepositoryStats {
        snapshots: listed.len() as u64,
        packs: sizes.packs,
        stored_bytes: sizes.pack_bytes,
        unreadable_snapshots: unreadable,
        unreadable_index_files: sizes.unreadable_index_files.clone(),
        ..RepositoryStats::default()
    };
    let mut data_raw = 0u64;
    for size in sizes.blobs.values() {
        match size.kind {
            BlobKind::Data => {
                stats.data_blobs += 1;
                data_raw += u64::from(size.raw);
            }
            BlobKind::Tree => stats.tree_blobs += 1,
        }
        stats.blob_stored_bytes += size.stored;
        stats.blob_raw_bytes += u64::from(size.raw);
    }
    let mut components: Vec<ComponentUse> = Vec::new();
    let mut groups: Vec<Vec<Id>> = Vec::new();
    for summary in &listed {
        for component in &summary.body.components {
            stats.logical_bytes += component.stats.bytes;
            let at = match components.iter().position(|c| c.name == component.name) {
                Some(at) => at,
                None => {
                    components.push(ComponentUse {
                        name: component.name.clone(),
                        ..ComponentUse::default()
                    });
                    groups.push(Vec::new());
                    components.len() - 1
                }
            };
            components[at].snapshots += 1;
            components[at].logical_bytes += component.stats.bytes;
            groups[at].push(component.tree);
        }
    }
    let uses = exclusive_use(repository, index, &sizes, &groups)?;
    for (component, usage) in components.iter_mut().zip(uses) {
        component.usage = usage;
    }
    components.sort_by(|a, b| a.name.cmp(&b.name));
    stats.components = components;
    stats.compression_ratio = ratio(stats.blob_raw_bytes, stats.blob_stored_bytes);
    stats.deduplication_ratio = ratio(stats.logical_bytes, data_raw);
    Ok(stats)
}

/// One snapshot: what restoring it writes, and what only it holds.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStats {
    pub restore: RestoreSize,
    #[serde(flatten)]
    pub usage: GroupUse,
}

pub fn snapshot_stats(
    repository: &Repository,
    index: &dyn IndexCache,
    snapshot: &Id,
    body: &SnapshotBody,
) -> Result<SnapshotStats> {
    let usage = usage_of(repository, index, &[*snapshot], Some(body))?;
    Ok(SnapshotStats {
        restore: restore_size(body),
        usage,
    })
}

/// What forgetting `snapshots` would let a prune give back: the blobs
/// only they reach (`unique`), against every other decodable snapshot.
/// A prune frees these bytes less any it leaves in packs it does not
/// repack (its `--max-unused`).
pub fn freed_by_forgetting(
    repository: &Repository,
    index: &dyn IndexCache,
    snapshots: &[Id],
) -> Result<GroupUse> {
    usage_of(repository, index, snapshots, None)
}

/// `these` (with `body` for a single snapshot that may no longer be
/// listed) against every other decodable snapshot.
fn usage_of(
    repository: &Repository,
    index: &dyn IndexCache,
    these: &[Id],
    body: Option<&SnapshotBody>,
) -> Result<GroupUse> {
    let sizes = BlobSizes::read(repository)?;
    let (listed, _) = list_snapshots(repository, &[])?;
    let mut selected: Vec<Id> = body.map(roots).unwrap_or_default();
    let mut others = Vec::new();
    for SnapshotSummary {
        id,
        body: listed_body,
        ..
    } in &listed
    {
        if these.contains(id) {
            if body.is_none() {
                selected.extend(roots(listed_body));
            }
        } else {
            others.extend(roots(listed_body));
        }
    }
    let uses = exclusive_use(repository, index, &sizes, &[selected, others])?;
    Ok(uses.into_iter().next().unwrap_or_default())
}
