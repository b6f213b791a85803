//! Prune's steps 1 and 2: read marks, manifests and index files, and walk
//! every snapshot's trees into the live set; then each indexed pack's use
//! of space. Reads only: a referenced blob that no present pack holds
//! stops the prune here, before anything is written or deleted.
//!
//! What a pack holds is taken from a vouched listing (an index file sealed
//! by a trusted key for this repository, FORMAT.md section 9) or else
//! from the pack's own header (the pack is named by its hash, so its header
//! is what it holds); a copy of a live blob counts only where a vouched
//! listing puts it. So a planted index file can neither hide a pack's live
//! blobs nor invent a copy that lets a prune delete the only one.
//! Unreadable index files are named in the plan and skipped.

use super::{DAMAGE_LIMIT, PackUse, PrunePlan};
use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::index::{BlobLocation, IndexFile, PackEntry, Vouching};
use crate::format::keys::PublicKey;
use crate::format::manifest::{SignedManifest, from_a_newer_writer};
use crate::format::pack::{BlobEntry, BlobKind, stored_shares};
use crate::format::tree::{Tree, TreeEntry};
use crate::id::Id;
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk, Walked};
use crate::progress::{Amount, Phase, Progress};
use crate::repository::Repository;
use crate::repository::{ReadMark, read_marks};
use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

/// A referenced blob the repository cannot provide; the prune stops.
fn damage_error(missing: &[String]) -> StoreError {
    StoreError::corrupt(
        "repository",
        format!(
            "prune stopped before deleting anything: {} (run `cairn verify`, then `cairn repair`)",
            missing.join("; ")
        ),
    )
}

/// Where the index files place each base of a delta blob, so that a
/// repack can decode the delta: every present pack that a listing puts it
/// in, vouched listings first. All are kept, not the first: a copy may be
/// in a pack that this prune's phase two deletes
/// ([`BaseLocations::install_outside`]).
/// Read again only when some listing holds a delta, so a repository
/// without deltas pays nothing and none keeps every data blob's location
/// in memory.
fn locate_bases(
    repository: &Repository,
    index_files: &[Id],
    present: &HashMap<Id, (u64, Option<SystemTime>)>,
    bases: &HashMap<Id, Vec<Id>>,
    trusted: &[PublicKey],
) -> Result<BaseLocations> {
    let wanted: HashSet<Id> = bases.values().flatten().copied().collect();
    let mut found: HashMap<Id, Vec<(bool, BlobLocation)>> = HashMap::new();
    for file_id in index_files {
        let Ok((file, vouching)) = read_index(repository, file_id, trusted)? else {
            continue;
        };
        let vouched = vouching.is_vouched();
        for pack in file
            .packs
            .iter()
            .filter(|pack| present.contains_key(&pack.id))
        {
            for blob in pack.blobs.iter().filter(|blob| wanted.contains(&blob.id)) {
                let location = BlobLocation {
                    pack: pack.id,
                    entry: *blob,
                };
                found.entry(blob.id).or_default().push((vouched, location));
            }
        }
    }
    let places = found
        .into_iter()
        .map(|(id, mut places)| {
            // Stable: among vouched listings, the first read stays first.
            places.sort_by_key(|(vouched, _)| !vouched);
            (id, places.into_iter().map(|(_, place)| place).collect())
        })
        .collect();
    Ok(BaseLocations { places })
}

/// Every listed place of each delta base in a present pack, vouched
/// listings first.
#[derive(Default)]
pub(super) struct BaseLocations {
    places: HashMap<Id, Vec<BlobLocation>>,
}

impl BaseLocations {
    /// Makes `repository` find each base at its first place outside
    /// `gone` (the packs this prune deletes before it repacks): a repack
    /// that decodes a delta must never look for its base in a pack just
    /// deleted when the copy that let it go is still there.
    pub(super) fn install_outside(&self, repository: &Repository, gone: &HashSet<Id>) {
        let chosen: HashMap<Id, BlobLocation> = self
            .places
            .iter()
            .filter_map(|(id, places)| {
                let place = places.iter().find(|place| !gone.contains(&place.pack))?;
                Some((*id, *place))
            })
            .collect();
        repository.locate_bases_with(std::sync::Arc::new(move |id: &Id| {
            Ok(chosen.get(id).copied())
        }));
    }
}

/// Marks live the base of every live delta blob (docs/FORMAT.md section
/// 7.3), down whole chains: a base outlives the snapshots that named it
/// for as long as a delta needs it. Any listing's claim of a base is
/// followed, vouched or not: keeping a blob too many costs space, keeping
/// one too few a restore. A base no present pack holds is damage.
fn keep_bases_alive(live: &mut BlobSet, bases: &HashMap<Id, Vec<Id>>, damage: &mut Vec<String>) {
    if bases.is_empty() {
        return;
    }
    let mut pending: Vec<Id> = bases
        .keys()
        .filter(|delta| live.is_live(delta))
        .copied()
        .collect();
    while let Some(delta) = pending.pop() {
        for base in bases.get(&delta).into_iter().flatten() {
            if live.is_live(base) {
                continue;
            }
            if live.mark_live(base) {
                pending.push(*base);
            } else if damage.len() < DAMAGE_LIMIT {
                damage.push(format!(
                    "delta blob {delta} needs base {base}, which no present pack holds"
                ));
            }
        }
    }
}

/// Every blob in a present, indexed pack, as a sorted array of ids, with
/// one "live" bit each: about 33 bytes per blob, exact, and no per-blob
/// record or hash-table overhead.
pub(super) struct BlobSet {
    ids: Vec<Id>,
    live: Vec<u64>,
}

impl BlobSet {
    fn new(mut ids: Vec<Id>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        ids.shrink_to_fit();
        let words = ids.len().div_ceil(64);
        BlobSet {
            ids,
            live: vec![0; words],
        }
    }

    /// Marks `id` live; false if no present pack holds it.
    fn mark_live(&mut self, id: &Id) -> bool {
        match self.ids.binary_search(id) {
            Ok(at) => {
                self.live[at / 64] |= 1 << (at % 64);
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn is_live(&self, id: &Id) -> bool {
        self.ids
            .binary_search(id)
            .is_ok_and(|at| self.live[at / 64] & (1 << (at % 64)) != 0)
    }
}

/// Step 2's walk: every tree and chunk a snapshot reaches is marked live;
/// one that no present pack holds is damage.
struct LiveWalk<'a> {
    repository: &'a Repository,
    /// Every listed location of each tree, vouched ones first.
    trees: &'a HashMap<Id, Vec<BlobLocation>>,
    live: BlobSet,
    damage: Vec<String>,
    /// Bytes of trees read since the last progress report.
    bytes_read: u64,
}

impl TreeVisitor for LiveWalk<'_> {
    type Error = StoreError;

    /// A tree passed by would leave its blobs unmarked: the prune stops.
    fn refused(&mut self, id: &Id, path: &str, refusal: Refusal) -> Result<()> {
        Err(refusal.error(id, path))
    }

    fn enter(&mut self, id: &Id, _: &str) -> Result<Flow> {
        if self.trees.contains_key(id) && self.live.mark_live(id) {
            return Ok(Flow::Continue);
        }
        self.damage.push(format!(
            "tree {id} is referenced but no present pack holds it"
        ));
        Ok(match self.damage.len() >= DAMAGE_LIMIT {
            true => Flow::Stop,
            false => Flow::SkipSubtree,
        })
    }

    fn read(&mut self, id: &Id, _: &str) -> Result<Option<Tree>> {
        let Some(locations) = self.trees.get(id) else {
            return Ok(None);
        };
        // Each listed location in turn: a planted listing of a tree must
        // not stop the prune while a true one exists.
        let mut failure = None;
        for location in locations {
            self.bytes_read += u64::from(location.entry.length);
            let read = self
                .repository
                .read_blob(location)
                .and_then(|bytes| Tree::decode(&bytes, &format!("tree {id}")));
            match read {
                Ok(tree) => return Ok(Some(tree)),
                Err(error @ StoreError::Io { .. }) => return Err(error),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        Err(damage_error(&[failure.map_or_else(
            || format!("tree {id} has no location"),
            |error| error.to_string(),
        )]))
    }

    fn entry(&mut self, entry: &TreeEntry, _: &str) -> Result<Flow> {
        for chunk in entry.chunks.iter().flatten() {
            if !self.live.mark_live(chunk) && self.damage.len() < DAMAGE_LIMIT {
                self.damage.push(format!(
                    "chunk {chunk} is referenced but no present pack holds it"
                ));
            }
        }
        Ok(Flow::Continue)
    }
}

/// Everything read before deciding.
pub(super) struct Survey {
    pub(super) marks: Vec<ReadMark>,
    pub(super) live: BlobSet,
    /// Every indexed pack: its blobs' use, and the index files listing it.
    pub(super) packs: HashMap<Id, PackUse>,
    pub(super) listed_in: HashMap<Id, Vec<Id>>,
    /// Index files sealed for this repository by a trusted key.
    pub(super) vouched_files: HashSet<Id>,
    pub(super) present: HashMap<Id, (u64, Option<SystemTime>)>,
    /// Where each delta base is listed; installed once phase two's
    /// deletions are known.
    pub(super) bases: BaseLocations,
}
/// Steps 1 and 2: marks, manifests, the live set, and every indexed pack's
/// use of space.
pub(super) fn survey(
    repository: &Repository,
    trusted: &[PublicKey],
    now: jiff::Timestamp,
    plan: &mut PrunePlan,
    progress: &dyn Progress,
) -> Result<Survey> {
    // Marks before snapshots: a mark listed here that becomes due is
    // checked against every manifest written up to the listing below.
    let (marks, unreadable) = read_marks(repository, trusted)?;
    for (id, why) in unreadable {
        plan.ignored_marks.push((id, format!("unreadable: {why}")));
    }
    // Every decodable manifest keeps its trees alive, trusted or not (the
    // safe direction). Bytes that hash to their name but are no manifest
    // were never written by a cairn (damage would break the hash): they
    // name no tree anyone could restore, keep nothing alive and are
    // reported and passed, so one planted object cannot block a prune. A
    // manifest that no longer matches its name (a damaged real one, or a
    // plant under a false name) or that a newer cairn wrote may need data
    // no tree here names: while one is there, phase one is withheld (it
    // would mark what such a snapshot may need), but due marks are still
    // carried out (their packs were unused by every manifest when marked,
    // and every backup since has avoided them).
    let mut roots = Vec::new();
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        let bytes = match repository.read_object(ObjectKind::Snapshot, &id) {
            Ok(bytes) => bytes,
            Err(StoreError::Missing { .. }) => continue,
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error) => {
                plan.unsure_snapshots
                    .push((id, format!("cannot be read ({error})")));
                continue;
            }
        };
        let body = SignedManifest::decode(&bytes, &format!("snapshot {id}"))
            .and_then(|manifest| manifest.body_unverified());
        match body {
            Ok(body) => roots.push(body.components.iter().map(|c| c.tree).collect::<Vec<_>>()),
            Err(error) if from_a_newer_writer(&bytes) => {
                plan.unsure_snapshots.push((
                    id,
                    format!("was written by a newer cairn ({error}); prune with that version"),
                ));
                continue;
            }
            Err(error) => {
                plan.ignored_snapshots.push((id, error.to_string()));
                continue;
            }
        }
        plan.snapshots += 1;
    }
    // Index files are read after the manifests, so every blob those
    // manifests need is in a file read here (backups index before they
    // write their manifest); packs are listed after the index files, so
    // every pack those files name that exists is in the listing.
    let mut index_files = repository.list_ids(ObjectKind::Index)?;
    let present: HashMap<Id, (u64, Option<SystemTime>)> = repository
        .backend()
        .list(ObjectKind::Pack)?
        .into_iter()
        .filter_map(|object| Some((Id::from_hex(&object.name)?, (object.size, object.modified))))
        .collect();
    let mut packs: HashMap<Id, PackUse> = HashMap::new();
    let mut listed_in: HashMap<Id, Vec<Id>> = HashMap::new();
    // First pass: pack sizes, the ids of blobs in present packs, and where
    // trees are (trees are few; data blobs are not kept as records).
    let mut ids = Vec::new();
    // Each delta blob's bases, as listed (kept alive with it).
    let mut bases: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut trees: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
    let mut vouched_files = HashSet::new();
    let mut vouched_packs = HashSet::new();
    let mut unreadable = HashSet::new();
    for file_id in &index_files {
        let (file, vouched) = match read_index(repository, file_id, trusted)? {
            Ok((file, vouching)) => {
                if let Some(why) = vouching.why_not() {
                    plan.unvouched_index_files.push((*file_id, why));
                }
                (file, vouching.is_vouched())
            }
            Err(why) => {
                plan.unreadable_index_files.push((*file_id, why));
                unreadable.insert(*file_id);
                continue;
            }
        };
        if vouched {
            vouched_files.insert(*file_id);
        }
        for pack in file.packs {
            listed_in.entry(pack.id).or_default().push(*file_id);
            let size = present.get(&pack.id).map_or(pack.size, |(size, _)| *size);
            packs
                .entry(pack.id)
                .or_insert_with(|| PackUse::unused(pack.id, size));
            if !present.contains_key(&pack.id) {
                continue;
            }
            if vouched {
                vouched_packs.insert(pack.id);
            }
            for blob in &pack.blobs {
                ids.push(blob.id);
                if let Some(base) = blob.base {
                    bases.entry(blob.id).or_default().push(base);
                }
                if blob.kind == BlobKind::Tree {
                    let location = BlobLocation {
                        pack: pack.id,
                        entry: *blob,
                    };
                    let listed = trees.entry(blob.id).or_default();
                    match vouched {
                        true => listed.insert(0, location),
                        false => listed.push(location),
                    }
                }
            }
        }
    }
    index_files.retain(|id| !unreadable.contains(id));
    let base_locations = if bases.is_empty() {
        BaseLocations::default()
    } else {
        locate_bases(repository, &index_files, &present, &bases, trusted)?
    };

    // The walk: every tree and chunk reachable from a snapshot is live. One
    // that no present pack holds is damage (a lost pack whose blobs were
    // not stored again elsewhere).
    // Every indexed tree is the most the walk can read.
    progress.phase(
        Phase::PruneSurvey,
        Amount {
            bytes: trees
                .values()
                .filter_map(|places| places.first())
                .map(|tree| u64::from(tree.entry.length))
                .sum(),
            items: roots.len() as u64,
        },
    );
    let mut visitor = LiveWalk {
        repository,
        trees: &trees,
        live: BlobSet::new(ids),
        damage: Vec::new(),
        bytes_read: 0,
    };
    let mut walk = TreeWalk::new().skipping_seen();
    for snapshot_roots in roots {
        let walked = walk.walk(
            snapshot_roots.into_iter().map(|root| (root, String::new())),
            &mut visitor,
        )?;
        progress.advance(Amount {
            bytes: std::mem::take(&mut visitor.bytes_read),
            items: 1,
        });
        if walked == Walked::Stopped {
            break;
        }
    }
    let LiveWalk {
        mut live,
        mut damage,
        ..
    } = visitor;
    keep_bases_alive(&mut live, &bases, &mut damage);
    drop(trees);
    if !damage.is_empty() {
        name_lost_packs(repository, &index_files, &present, &mut damage);
        return Err(damage_error(&damage));
    }
    plan.trees = walk.seen().map_or(0, |seen| seen.len() as u64);

    // Packs a trusted mark names, and those of them whose mark is due.
    let trusted_marked: HashSet<Id> = marks
        .iter()
        .filter(|read| read.trusted)
        .flat_map(|read| read.mark.packs.iter().map(|pack| pack.id))
        .collect();
    let due_marked: HashSet<Id> = marks
        .iter()
        .filter(|read| read.trusted && read.mark.due().is_some_and(|due| due <= now))
        .flat_map(|read| read.mark.packs.iter().map(|pack| pack.id))
        .collect();
    // Second pass: each pack's live and dead bytes, counted once from a
    // vouched listing, and the live blobs of packs due for deletion.
    let mut counted = HashSet::new();
    let mut due_live: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut count = |pack: &PackEntry, usage: &mut PackUse| {
        count_use(usage, &pack.blobs, &live);
        if due_marked.contains(&pack.id) && usage.live_blobs > 0 {
            let ids = pack.blobs.iter().map(|blob| blob.id);
            due_live.insert(pack.id, ids.filter(|id| live.is_live(id)).collect());
        }
    };
    for file_id in index_files.iter().filter(|id| vouched_files.contains(id)) {
        let Ok((file, _)) = read_index(repository, file_id, trusted)? else {
            continue;
        };
        for pack in file.packs {
            if !counted.insert(pack.id) {
                continue;
            }
            if let Some(usage) = packs.get_mut(&pack.id) {
                count(&pack, usage);
            }
        }
    }
    // Present packs only unvouched files list: what their own headers say.
    for (id, usage) in packs.iter_mut() {
        let Some((size, _)) = present.get(id) else {
            continue;
        };
        if vouched_packs.contains(id) {
            continue;
        }
        match repository.read_pack_header(id, *size) {
            Ok(header) => count(
                &PackEntry {
                    id: *id,
                    size: *size,
                    blobs: header.blobs,
                },
                usage,
            ),
            Err(error @ StoreError::Io { .. }) => return Err(error),
            // Nothing is known of it: never marked, never deleted.
            Err(error) => {
                usage.live_blobs = 1;
                usage.sole_copies = 1;
                plan.unreadable_packs.push((*id, error.to_string()));
            }
        }
    }
    // Third pass, only if a due pack holds live blobs: are there copies in
    // packs that stay (present, indexed by a vouched listing, named by no
    // trusted mark)? A backup that copied blobs out of marked packs, or a
    // repack, made them.
    if !due_live.is_empty() {
        let wanted: HashSet<Id> = due_live.values().flatten().copied().collect();
        let covered = copies_outside(
            repository,
            trusted,
            &index_files,
            &present,
            &trusted_marked,
            &wanted,
        )?;
        for (pack, blobs) in due_live {
            if let Some(usage) = packs.get_mut(&pack) {
                usage.sole_copies = blobs.iter().filter(|id| !covered.contains(id)).count() as u64;
            }
        }
    }
    packs.retain(|id, _| present.contains_key(id));
    plan.packs = present.len() as u64;
    plan.pack_bytes = present.values().map(|(size, _)| size).sum();
    plan.unused_bytes = packs.values().map(|usage| usage.dead_bytes).sum();
    Ok(Survey {
        marks,
        live,
        packs,
        listed_in,
        vouched_files,
        present,
        bases: base_locations,
    })
}

/// Adds to the damage report which missing packs the index says held the
/// lost blobs, so the user knows what to look for.
fn name_lost_packs(
    repository: &Repository,
    index_files: &[Id],
    present: &HashMap<Id, (u64, Option<SystemTime>)>,
    damage: &mut Vec<String>,
) {
    let mut lost = std::collections::BTreeSet::new();
    for file_id in index_files {
        let Ok(file) = repository.read_index_file(file_id) else {
            continue;
        };
        for pack in file
            .packs
            .iter()
            .filter(|pack| !present.contains_key(&pack.id))
        {
            let holds_lost = pack
                .blobs
                .iter()
                .any(|blob| damage.iter().any(|line| line.contains(&blob.id.to_hex())));
            if holds_lost {
                lost.insert(pack.id);
            }
        }
    }
    for pack in lost {
        damage.push(format!("pack {pack}, which held them, is missing"));
    }
}

/// Which of `wanted` have a copy in a pack that stays: present, listed by
/// a vouched one of `index_files` (sealed by one of `trusted`), and not in
/// `leaving`. A copy only an unvouched file claims does not count: a
/// planted claim must never let a prune drop a live blob's only copy.
pub(super) fn copies_outside(
    repository: &Repository,
    trusted: &[PublicKey],
    index_files: &[Id],
    present: &HashMap<Id, (u64, Option<SystemTime>)>,
    leaving: &HashSet<Id>,
    wanted: &HashSet<Id>,
) -> Result<HashSet<Id>> {
    let mut covered = HashSet::new();
    for file_id in index_files {
        // A file gone since listing, unreadable or not vouched for only
        // hides copies: fewer blobs count as covered, which keeps or
        // copies more, never less.
        let file = match repository.open_index_file(file_id, trusted) {
            Ok((file, vouching)) if vouching.is_vouched() => file,
            Ok(_) | Err(StoreError::Missing { .. } | StoreError::Corrupt { .. }) => continue,
            Err(error) => return Err(error),
        };
        for pack in file.packs {
            if leaving.contains(&pack.id) || !present.contains_key(&pack.id) {
                continue;
            }
            let ids = pack.blobs.iter().map(|blob| blob.id);
            covered.extend(ids.filter(|id| wanted.contains(id)));
        }
    }
    Ok(covered)
}

/// An index file listed a moment ago, and whether it is vouched for; gone
/// means another prune or a repair rewrote the index meanwhile, and this
/// run's picture is out of date. One that cannot be decoded (or does not
/// match its name) is `Ok(Err(why))`: the caller names it and skips it.
pub(super) fn read_index(
    repository: &Repository,
    id: &Id,
    trusted: &[PublicKey],
) -> Result<std::result::Result<(IndexFile, Vouching), String>> {
    match repository.open_index_file(id, trusted) {
        Ok(read) => Ok(Ok(read)),
        Err(StoreError::Missing { .. }) => Err(StoreError::Conflict(format!(
            "index file {id} was removed while this prune read the index (another prune or a repair ran at the same time); nothing was deleted; run the prune again"
        ))),
        Err(error @ StoreError::Corrupt { .. }) => Ok(Err(error.to_string())),
        Err(error) => Err(error),
    }
}

pub(super) fn count_use(usage: &mut PackUse, blobs: &[BlobEntry], live: &BlobSet) {
    for (blob, share) in blobs.iter().zip(stored_shares(blobs)) {
        if live.is_live(&blob.id) {
            usage.live_blobs += 1;
            usage.live_bytes += share;
        } else {
            usage.dead_blobs += 1;
            usage.dead_bytes += share;
        }
    }
}
