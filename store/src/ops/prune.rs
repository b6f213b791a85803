//! Prune: give back the space of blobs that no snapshot needs, in two
//! phases separated by a grace period, without a lock (FORMAT.md §12).
//!
//! One run does, in this order:
//! 1. List deletion marks, then snapshots; read every manifest (one that
//!    cannot be read stops the prune: what it needs is unknown).
//! 2. Read the index files, then list packs; walk every snapshot's trees
//!    into a live set. A referenced blob that no present pack holds stops
//!    the prune before anything is deleted, naming it and its lost pack.
//! 3. Phase two, for each trusted mark whose grace period has passed:
//!    delete its packs unless one now holds a live blob (a snapshot written
//!    since the mark needs it again: that pack is kept); rewrite the index
//!    files that list deleted packs; then delete the mark.
//! 4. Phase one: among packs older than the grace period and not already
//!    marked, those with no live blob are marked; those with dead blobs are
//!    repacked (live blobs copied into new packs, which are indexed) until
//!    the unused space is under `--max-unused`, and marked too. One signed
//!    mark is written; nothing is deleted in this phase.
//!
//! Memory: the live set is the sorted ids of every blob in a present pack
//! with one bit each (about 33 bytes per blob), and trees' locations; index
//! files are read one at a time, twice, rather than held. No per-blob
//! record and no index cache is needed.
//!
//! Never deletes a pack that is not named by a trusted mark whose grace
//! period has passed, never deletes anything when it finds damage, and
//! never writes or deletes snapshots (forget does that).

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::index::{BlobLocation, IndexFile, PackEntry};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::pack::{BlobDecoder, BlobEntry, BlobKind, parse_pack, stored_shares};
use crate::format::records::{DELETION_DOMAIN, DeletionMark, MarkReason, MarkedPack, SignedRecord};
use crate::format::tree::Tree;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::blob_writer::{BlobWriter, WriterStatistics};
use crate::repository::Repository;
use crate::repository::{ReadMark, read_marks};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// Packs per index file written while rewriting the index.
const PACKS_PER_INDEX_FILE: usize = 64;
/// Damage findings gathered before the prune gives up listing them.
const DAMAGE_LIMIT: usize = 20;

/// How much unused space a prune may leave in packs it does not repack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// Percent of the bytes in packs.
    Percent(f64),
    Bytes(u64),
}

impl MaxUnused {
    /// `5%`, `0%`, `500M`, `2G`, or `unlimited`.
    pub fn parse(text: &str) -> std::result::Result<MaxUnused, String> {
        let help =
            || format!("{text:?}: use a percentage (5%), a size (500M, 2G) or \"unlimited\"");
        if text == "unlimited" {
            return Ok(MaxUnused::Percent(100.0));
        }
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.parse::<f64>() {
                Ok(value) if (0.0..=100.0).contains(&value) => Ok(MaxUnused::Percent(value)),
                _ => Err(help()),
            };
        }
        let (digits, factor) = match text.char_indices().last() {
            Some((at, unit)) if unit.is_ascii_alphabetic() => {
                let factor = match unit.to_ascii_uppercase() {
                    'K' => 1u64 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    'T' => 1 << 40,
                    _ => return Err(help()),
                };
                (&text[..at], factor)
            }
            _ => (text, 1),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(factor))
            .map(MaxUnused::Bytes)
            .ok_or_else(help)
    }

    fn allowed(self, total: u64) -> u64 {
        match self {
            MaxUnused::Percent(percent) => ((total as f64) * percent / 100.0) as u64,
            MaxUnused::Bytes(bytes) => bytes,
        }
    }
}

/// A grace period such as `1h`, `30m`, `2d`, `90s` or `0s`.
pub fn parse_grace(text: &str) -> std::result::Result<Duration, String> {
    let help = || format!("{text:?}: use a span such as 1h, 30m, 2d or 0s");
    let span: jiff::Span = text.parse().map_err(|_| help())?;
    let seconds = span
        .total((jiff::Unit::Second, jiff::civil::date(2000, 1, 1)))
        .map_err(|_| help())?;
    if !(0.0..=1e12).contains(&seconds) {
        return Err(help());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// How long a mark waits before its packs may be deleted, and how old
    /// a pack must be before it may be marked.
    pub grace: Duration,
    pub max_unused: MaxUnused,
    /// Plan only: read everything, write and delete nothing.
    pub dry_run: bool,
}

/// A pack as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackUse {
    pub id: Id,
    pub size: u64,
    pub live_blobs: u64,
    pub live_bytes: u64,
    pub dead_blobs: u64,
    pub dead_bytes: u64,
    /// For a pack a due mark names: live blobs with no copy in a present,
    /// indexed pack that no trusted mark names. Such a pack is kept.
    pub sole_copies: u64,
}

impl PackUse {
    fn unused(id: Id, size: u64) -> Self {
        PackUse {
            id,
            size,
            live_blobs: 0,
            live_bytes: 0,
            dead_blobs: 0,
            dead_bytes: 0,
            sole_copies: 0,
        }
    }
}

/// What a prune found and decided.
#[derive(Clone, Debug, Default)]
pub struct PrunePlan {
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Bytes of dead blobs in all packs (the live set may overstate what
    /// is live by a tiny fraction, never understate it).
    pub unused_bytes: u64,
    /// Phase two: trusted marks whose grace period has passed.
    pub due_marks: Vec<Id>,
    /// Packs those marks name that this run deletes.
    pub delete: Vec<PackUse>,
    /// Packs those marks name that a snapshot needs again: kept.
    pub revived: Vec<PackUse>,
    /// Marks still in their grace period: (mark, when due, packs).
    pub waiting_marks: Vec<(Id, String, usize)>,
    /// Marks not signed by a trusted key, or unreadable: never acted on.
    pub ignored_marks: Vec<(Id, String)>,
    /// Phase one: packs with no live blob, to be marked.
    pub mark_unused: Vec<PackUse>,
    /// Phase one: packs to repack (live blobs copied), then mark.
    pub repack: Vec<PackUse>,
    /// Packs younger than the grace period, left alone.
    pub young_packs: u64,
    /// Packs no index file lists whose header is unreadable; left alone
    /// for verify and repair to deal with.
    pub unreadable_packs: Vec<(Id, String)>,
}

impl PrunePlan {
    pub fn bytes_deleted(&self) -> u64 {
        self.delete.iter().map(|pack| pack.size).sum()
    }
    pub fn bytes_marked(&self) -> u64 {
        self.mark_unused
            .iter()
            .chain(&self.repack)
            .map(|pack| pack.size)
            .sum()
    }
    pub fn bytes_to_rewrite(&self) -> u64 {
        self.repack.iter().map(|pack| pack.live_bytes).sum()
    }
}

#[derive(Clone, Debug, Default)]
pub struct PruneOutcome {
    pub plan: PrunePlan,
    pub packs_deleted: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    pub marks_removed: u64,
    pub mark_written: Option<Id>,
    pub repacked: WriterStatistics,
}

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

/// Every blob in a present, indexed pack, as a sorted array of ids, with
/// one "live" bit each: about 33 bytes per blob, exact, and no per-blob
/// record or hash-table overhead.
struct BlobSet {
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

    fn is_live(&self, id: &Id) -> bool {
        self.ids
            .binary_search(id)
            .is_ok_and(|at| self.live[at / 64] & (1 << (at % 64)) != 0)
    }
}

/// Everything read before deciding.
struct Survey {
    marks: Vec<ReadMark>,
    live: BlobSet,
    /// Every indexed pack: its blobs' use, and the index files listing it.
    packs: HashMap<Id, PackUse>,
    listed_in: HashMap<Id, Vec<Id>>,
    present: HashMap<Id, (u64, Option<SystemTime>)>,
}

pub fn prune(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    trusted: &[PublicKey],
    options: &PruneOptions,
) -> Result<PruneOutcome> {
    if !options.dry_run {
        let mut signers = trusted.to_vec();
        signers.push(crate::format::keys::public_key_of(key));
        crate::ops::forget::complete_forgets(repository, &signers)?;
    }
    let now = jiff::Timestamp::now();
    let mut plan = PrunePlan::default();
    let survey = survey(repository, trusted, now, &mut plan)?;
    plan_phase_two(&survey, now, &mut plan);
    let marked_after_phase_two: HashSet<Id> = survey
        .marks
        .iter()
        .filter(|read| read.trusted && !plan.due_marks.contains(&read.id))
        .flat_map(|read| read.mark.packs.iter().map(|pack| pack.id))
        .collect();
    let unindexed = read_unindexed(repository, &survey, options.grace, &mut plan);
    plan_phase_one(
        &survey,
        &unindexed,
        &marked_after_phase_two,
        options,
        &mut plan,
    );

    let mut outcome = PruneOutcome::default();
    if options.dry_run {
        outcome.plan = plan;
        return Ok(outcome);
    }
    delete_due(repository, &survey, &plan, &mut outcome)?;
    if !plan.mark_unused.is_empty() || !plan.repack.is_empty() {
        outcome.repacked = repack(repository, index, &survey, &marked_after_phase_two, &plan)?;
        let packs: Vec<MarkedPack> = plan
            .mark_unused
            .iter()
            .map(|pack| (pack, MarkReason::Unused))
            .chain(plan.repack.iter().map(|pack| (pack, MarkReason::Repacked)))
            .map(|(pack, reason)| MarkedPack {
                id: pack.id,
                size: pack.size,
                reason,
            })
            .collect();
        let mark = DeletionMark::new(
            crate::ops::common::now_rfc3339(),
            options.grace.as_secs(),
            crate::ops::common::host_name(),
            packs,
        );
        let record = SignedRecord::sign(&mark, DELETION_DOMAIN, key);
        outcome.mark_written =
            Some(repository.write_object(ObjectKind::Deletion, &record.encode())?);
    }
    outcome.plan = plan;
    Ok(outcome)
}

/// Steps 1 and 2: marks, manifests, the live set, and every indexed pack's
/// use of space.
fn survey(
    repository: &Repository,
    trusted: &[PublicKey],
    now: jiff::Timestamp,
    plan: &mut PrunePlan,
) -> Result<Survey> {
    // Marks before snapshots: a mark listed here that becomes due is
    // checked against every manifest written up to the listing below.
    let (marks, unreadable) = read_marks(repository, trusted)?;
    for (id, why) in unreadable {
        plan.ignored_marks.push((id, format!("unreadable: {why}")));
    }
    let mut roots = Vec::new();
    let mut damage = Vec::new();
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        let body = repository
            .read_manifest(&id)
            .and_then(|manifest| manifest.body_unverified());
        match body {
            Ok(body) => roots.extend(body.components.iter().map(|c| c.tree)),
            Err(StoreError::Missing { .. }) => continue,
            Err(error) => damage.push(format!("snapshot {id} cannot be read ({error})")),
        }
        plan.snapshots += 1;
    }
    if !damage.is_empty() {
        return Err(damage_error(&damage));
    }
    // Index files are read after the manifests, so every blob those
    // manifests need is in a file read here (backups index before they
    // write their manifest); packs are listed after the index files, so
    // every pack those files name that exists is in the listing.
    let index_files = repository.list_ids(ObjectKind::Index)?;
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
    let mut trees: HashMap<Id, BlobLocation> = HashMap::new();
    for file_id in &index_files {
        let file = read_index(repository, file_id)?;
        for pack in file.packs {
            listed_in.entry(pack.id).or_default().push(*file_id);
            if packs.contains_key(&pack.id) {
                continue;
            }
            packs.insert(pack.id, PackUse::unused(pack.id, pack.size));
            if !present.contains_key(&pack.id) {
                continue;
            }
            for blob in &pack.blobs {
                ids.push(blob.id);
                if blob.kind == BlobKind::Tree {
                    trees.insert(
                        blob.id,
                        BlobLocation {
                            pack: pack.id,
                            entry: *blob,
                        },
                    );
                }
            }
        }
    }

    // The walk: every tree and chunk reachable from a snapshot is live. One
    // that no present pack holds is damage (a lost pack whose blobs were
    // not stored again elsewhere).
    let mut live = BlobSet::new(ids);
    let mut seen = HashSet::new();
    let mut stack = roots;
    while let Some(tree_id) = stack.pop() {
        if !seen.insert(tree_id) {
            continue;
        }
        let Some(location) = trees.get(&tree_id).filter(|_| live.mark_live(&tree_id)) else {
            damage.push(format!(
                "tree {tree_id} is referenced but no present pack holds it"
            ));
            if damage.len() >= DAMAGE_LIMIT {
                break;
            }
            continue;
        };
        let tree = repository
            .read_blob(location)
            .and_then(|bytes| Tree::decode(&bytes, &format!("tree {tree_id}")))
            .map_err(|error| match error {
                StoreError::Io { .. } => error,
                other => damage_error(&[other.to_string()]),
            })?;
        for entry in &tree.entries {
            for chunk in entry.chunks.iter().flatten() {
                if !live.mark_live(chunk) && damage.len() < DAMAGE_LIMIT {
                    damage.push(format!(
                        "chunk {chunk} is referenced but no present pack holds it"
                    ));
                }
            }
            stack.extend(entry.subtree);
        }
    }
    drop(trees);
    if !damage.is_empty() {
        name_lost_packs(repository, &index_files, &present, &mut damage)?;
        return Err(damage_error(&damage));
    }
    plan.trees = seen.len() as u64;

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
    // Second pass: each pack's live and dead bytes, counted once, and the
    // live blobs of packs due for deletion.
    let mut counted = HashSet::new();
    let mut due_live: HashMap<Id, Vec<Id>> = HashMap::new();
    for file_id in &index_files {
        let file = read_index(repository, file_id)?;
        for pack in file.packs {
            if !counted.insert(pack.id) {
                continue;
            }
            let Some(usage) = packs.get_mut(&pack.id) else {
                continue;
            };
            count_use(usage, &pack.blobs, &live);
            if due_marked.contains(&pack.id) && usage.live_blobs > 0 {
                let ids = pack.blobs.iter().map(|blob| blob.id);
                due_live.insert(pack.id, ids.filter(|id| live.is_live(id)).collect());
            }
        }
    }
    // Third pass, only if a due pack holds live blobs: are there copies in
    // packs that stay (present, indexed, named by no trusted mark)? A
    // backup that copied blobs out of marked packs, or a repack, made them.
    if !due_live.is_empty() {
        let wanted: HashSet<Id> = due_live.values().flatten().copied().collect();
        let covered = copies_outside(repository, &index_files, &present, &trusted_marked, &wanted)?;
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
        present,
    })
}

/// Adds to the damage report which missing packs the index says held the
/// lost blobs, so the user knows what to look for.
fn name_lost_packs(
    repository: &Repository,
    index_files: &[Id],
    present: &HashMap<Id, (u64, Option<SystemTime>)>,
    damage: &mut Vec<String>,
) -> Result<()> {
    let mut lost = std::collections::BTreeSet::new();
    for file_id in index_files {
        let file = read_index(repository, file_id)?;
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
    Ok(())
}

/// Which of `wanted` have a copy in a pack that stays: present, listed by
/// one of `index_files`, and not in `leaving`.
fn copies_outside(
    repository: &Repository,
    index_files: &[Id],
    present: &HashMap<Id, (u64, Option<SystemTime>)>,
    leaving: &HashSet<Id>,
    wanted: &HashSet<Id>,
) -> Result<HashSet<Id>> {
    let mut covered = HashSet::new();
    for file_id in index_files {
        // A file gone since listing only hides copies: fewer blobs count as
        // covered, which keeps or copies more, never less.
        let file = match repository.read_index_file(file_id) {
            Ok(file) => file,
            Err(StoreError::Missing { .. }) => continue,
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

/// An index file listed a moment ago; gone means another prune or a repair
/// rewrote the index meanwhile, and this run's picture is out of date.
fn read_index(repository: &Repository, id: &Id) -> Result<IndexFile> {
    repository.read_index_file(id).map_err(|error| match error {
        StoreError::Missing { .. } => StoreError::Conflict(format!(
            "index file {id} was removed while this prune read the index (another prune or a repair ran at the same time); nothing was deleted; run the prune again"
        )),
        other => other,
    })
}

fn count_use(usage: &mut PackUse, blobs: &[BlobEntry], live: &BlobSet) {
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

/// Step 3's decisions: which due marks' packs are deleted, which revived.
fn plan_phase_two(survey: &Survey, now: jiff::Timestamp, plan: &mut PrunePlan) {
    for read in &survey.marks {
        let due = read.mark.due();
        if !read.trusted {
            plan.ignored_marks.push((
                read.id,
                "not signed by a trusted key; never acted on (remove it if it is not yours)".into(),
            ));
            continue;
        }
        match due {
            Some(due) if due <= now => {
                plan.due_marks.push(read.id);
                for marked in &read.mark.packs {
                    let Some(usage) = survey.packs.get(&marked.id).cloned().or_else(|| {
                        survey
                            .present
                            .get(&marked.id)
                            .map(|(size, _)| PackUse::unused(marked.id, *size))
                    }) else {
                        continue; // already deleted
                    };
                    if usage.sole_copies > 0 {
                        plan.revived.push(usage);
                    } else if !plan.delete.iter().any(|pack| pack.id == usage.id) {
                        plan.delete.push(usage);
                    }
                }
            }
            Some(due) => plan
                .waiting_marks
                .push((read.id, due.to_string(), read.mark.packs.len())),
            None => plan.ignored_marks.push((
                read.id,
                format!("its time {:?} does not parse", read.mark.time),
            )),
        }
    }
    // A pack named by two due marks and needed is kept, whatever the order.
    let revived: HashSet<Id> = plan.revived.iter().map(|pack| pack.id).collect();
    plan.delete.retain(|pack| !revived.contains(&pack.id));
}

/// Packs present that no index file lists and that are old enough to
/// consider: their headers, read now.
fn read_unindexed(
    repository: &Repository,
    survey: &Survey,
    grace: Duration,
    plan: &mut PrunePlan,
) -> Vec<(PackUse, Vec<BlobEntry>)> {
    let mut found = Vec::new();
    for (id, (size, modified)) in &survey.present {
        if survey.packs.contains_key(id) || is_young(*modified, grace) {
            continue;
        }
        match repository.read_pack_header(id, *size) {
            Ok(header) => {
                let mut usage = PackUse::unused(*id, *size);
                count_use(&mut usage, &header.blobs, &survey.live);
                found.push((usage, header.blobs));
            }
            Err(error) => plan.unreadable_packs.push((*id, error.to_string())),
        }
    }
    found
}

/// A pack written less than `grace` ago may belong to a backup still
/// running; one whose age is unknown is treated as young.
fn is_young(modified: Option<SystemTime>, grace: Duration) -> bool {
    match modified.map(|time| SystemTime::now().duration_since(time)) {
        Some(Ok(age)) => age < grace,
        // A time in the future (clock skew) is young too.
        _ => true,
    }
}

/// Step 4's decisions.
fn plan_phase_one(
    survey: &Survey,
    unindexed: &[(PackUse, Vec<BlobEntry>)],
    already_marked: &HashSet<Id>,
    options: &PruneOptions,
    plan: &mut PrunePlan,
) {
    let deleting: HashSet<Id> = plan.delete.iter().map(|pack| pack.id).collect();
    let revived: HashSet<Id> = plan.revived.iter().map(|pack| pack.id).collect();
    let mut partly_used = Vec::new();
    let mut remaining_unused = 0u64;
    let mut remaining_total = 0u64;
    for usage in survey.packs.values() {
        if deleting.contains(&usage.id) {
            continue;
        }
        let size_known = survey.present.get(&usage.id);
        let young = size_known.is_none_or(|(_, modified)| is_young(*modified, options.grace));
        remaining_total += usage.size;
        if already_marked.contains(&usage.id) {
            continue;
        }
        if young || revived.contains(&usage.id) {
            plan.young_packs += u64::from(young);
            remaining_unused += usage.dead_bytes;
            continue;
        }
        if usage.live_blobs == 0 {
            plan.mark_unused.push(usage.clone());
            remaining_total -= usage.size;
        } else {
            remaining_unused += usage.dead_bytes;
            if usage.dead_blobs > 0 {
                partly_used.push(usage.clone());
            }
        }
    }
    // Unindexed packs with live blobs are left for a backup to adopt.
    for (usage, _) in unindexed {
        if usage.live_blobs == 0 && !already_marked.contains(&usage.id) {
            plan.mark_unused.push(usage.clone());
        }
    }
    // Most wasteful first, so the fewest bytes are rewritten.
    partly_used.sort_by(|a, b| {
        let waste = |pack: &PackUse| pack.dead_bytes as f64 / pack.size.max(1) as f64;
        waste(b).total_cmp(&waste(a)).then(a.id.cmp(&b.id))
    });
    let allowed = options.max_unused.allowed(remaining_total);
    for pack in partly_used {
        if remaining_unused <= allowed {
            break;
        }
        remaining_unused -= pack.dead_bytes;
        plan.repack.push(pack);
    }
    plan.mark_unused.sort_by_key(|pack| pack.id);
    plan.repack.sort_by_key(|pack| pack.id);
}

/// Step 3's writes: rewrite the index files that list packs being deleted,
/// delete the packs, drop the old index files, then the marks.
fn delete_due(
    repository: &Repository,
    survey: &Survey,
    plan: &PrunePlan,
    outcome: &mut PruneOutcome,
) -> Result<()> {
    if plan.due_marks.is_empty() {
        return Ok(());
    }
    let deleting: HashSet<Id> = plan.delete.iter().map(|pack| pack.id).collect();
    // Index files listing a deleted pack, or a pack already gone.
    let stale: HashSet<Id> = survey
        .listed_in
        .iter()
        .filter(|(pack, _)| deleting.contains(pack) || !survey.present.contains_key(pack))
        .flat_map(|(_, files)| files.iter().copied())
        .collect();
    let mut keep: Vec<PackEntry> = Vec::new();
    let mut kept_ids = HashSet::new();
    for file_id in &stale {
        let file: IndexFile = read_index(repository, file_id)?;
        for pack in file.packs {
            let keep_it = !deleting.contains(&pack.id)
                && survey.present.contains_key(&pack.id)
                && kept_ids.insert(pack.id);
            if keep_it {
                keep.push(pack);
            }
        }
    }
    keep.sort_by_key(|pack| pack.id);
    let mut written = HashSet::new();
    for batch in keep.chunks(PACKS_PER_INDEX_FILE) {
        let id =
            repository.write_object(ObjectKind::Index, &IndexFile::new(batch.to_vec()).encode())?;
        written.insert(id);
        outcome.index_files_written += 1;
    }
    for pack in &plan.delete {
        repository
            .backend()
            .delete(ObjectKind::Pack, &pack.id.to_hex())?;
        outcome.packs_deleted += 1;
    }
    for file_id in stale.difference(&written) {
        repository
            .backend()
            .delete(ObjectKind::Index, &file_id.to_hex())?;
        outcome.index_files_removed += 1;
    }
    for mark in &plan.due_marks {
        repository
            .backend()
            .delete(ObjectKind::Deletion, &mark.to_hex())?;
        outcome.marks_removed += 1;
    }
    Ok(())
}

/// Copies the live blobs of the packs to repack into new packs, indexed
/// before the old ones are marked. Each blob is checked against its id on
/// the way: a corrupt one stops the prune (nothing has been marked yet).
fn repack(
    repository: &Repository,
    index: &dyn IndexCache,
    survey: &Survey,
    already_marked: &HashSet<Id>,
    plan: &PrunePlan,
) -> Result<WriterStatistics> {
    let leaving: HashSet<Id> = plan
        .repack
        .iter()
        .chain(&plan.mark_unused)
        .chain(&plan.delete)
        .map(|pack| pack.id)
        .chain(already_marked.iter().copied())
        .collect();
    let usable: HashMap<Id, u64> = survey
        .present
        .iter()
        .filter(|(id, _)| !leaving.contains(id))
        .map(|(id, (size, _))| (*id, *size))
        .collect();
    // Taking in other index files mid-repack would fill the cache with
    // every blob of the repository; the repack needs none of them.
    let writer = BlobWriter::new(repository, index, usable).with_refresh_interval(Duration::MAX);
    // Live blobs that already have a copy in a pack that stays need none.
    let mut wanted = HashSet::new();
    for pack in &plan.repack {
        let header = repository.read_pack_header(&pack.id, pack.size)?;
        let live = header
            .blobs
            .iter()
            .filter(|entry| survey.live.is_live(&entry.id));
        wanted.extend(live.map(|entry| entry.id));
    }
    // Listed afresh: phase two may just have rewritten index files.
    let elsewhere = copies_outside(
        repository,
        &repository.list_ids(ObjectKind::Index)?,
        &survey.present,
        &leaving,
        &wanted,
    )?;
    for pack in &plan.repack {
        let bytes = repository
            .backend()
            .read(ObjectKind::Pack, &pack.id.to_hex())?;
        if Id::of(&bytes) != pack.id {
            return Err(StoreError::corrupt(
                format!("pack {}", pack.id),
                "content does not match its name; prune stopped before marking anything",
            ));
        }
        let header = parse_pack(&bytes, &pack.id)?;
        let mut decoder = BlobDecoder::default();
        for entry in header
            .blobs
            .iter()
            .filter(|entry| survey.live.is_live(&entry.id) && !elsewhere.contains(&entry.id))
        {
            let start = entry.offset as usize;
            let stored = bytes
                .get(start..start + entry.length as usize)
                .ok_or_else(|| {
                    StoreError::corrupt(format!("pack {}", pack.id), "blob past the end")
                })?;
            let raw = decoder.decode(entry, stored, &pack.id)?;
            writer.add(entry.kind, entry.id, &raw)?;
        }
    }
    writer.finish()
}
