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
//! Steps 1 and 2 are in `survey`; the decisions and writes here.
//!
//! Memory: the live set is the sorted ids of every blob in a present pack
//! with one bit each (about 33 bytes per blob), and trees' locations; index
//! files are read one at a time, twice, rather than held. No per-blob
//! record and no index cache is needed.
//!
//! Never deletes a pack that is not named by a trusted mark whose grace
//! period has passed, never deletes anything when it finds damage, and
//! never writes or deletes snapshots (forget does that). Never counts a
//! copy of a live blob that no vouched index file lists (FORMAT.md section
//! 9), and never seals a listing it did not read from a vouched file.

mod survey;

use survey::{Survey, copies_outside, count_use, read_index, survey};

use crate::backend::{ObjectKind, Purged};
use crate::error::{Result, StoreError};
use crate::format::index::{IndexFile, PackEntry};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::pack::BlobEntry;
use crate::format::records::{DELETION_DOMAIN, DeletionMark, MarkReason, MarkedPack, SignedRecord};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::blob_writer::{BlobWriter, WriterStatistics};
use crate::progress::{Amount, Phase, Progress};
use crate::repository::Repository;
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
    /// Manifests that cannot be read (not what their name says, or not a
    /// manifest): they name no tree that can be known, so they keep
    /// nothing alive and stop nothing; reported by id.
    pub ignored_snapshots: Vec<(Id, String)>,
    /// Manifests that may be real but cannot be used (bytes that no longer
    /// match their name, or a newer cairn's): what they need is unknown, so
    /// while any is there phase one (marking and repacking) is withheld;
    /// due marks are still carried out. Reported by id.
    pub unsure_snapshots: Vec<(Id, String)>,
    /// Phase one: packs with no live blob, to be marked.
    pub mark_unused: Vec<PackUse>,
    /// Phase one: packs to repack (live blobs copied), then mark.
    pub repack: Vec<PackUse>,
    /// Packs younger than the grace period, left alone.
    pub young_packs: u64,
    /// Packs whose header is unreadable, that no index file (or only an
    /// unvouched one) lists; left alone for verify and repair to deal with.
    pub unreadable_packs: Vec<(Id, String)>,
    /// Index files not vouched for (unsigned, or not sealed for this
    /// repository by a trusted key), and why: their listings were not
    /// relied on.
    pub unvouched_index_files: Vec<(Id, String)>,
    /// Index files that cannot be read: skipped.
    pub unreadable_index_files: Vec<(Id, String)>,
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
    /// Packs due for deletion that S3 Object Lock still retains (with the
    /// date, when known): not yet deleted, their marks kept, so a later
    /// prune finishes. Never an error.
    pub not_yet: Vec<(Id, Option<SystemTime>)>,
}

pub fn prune(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    trusted: &[PublicKey],
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneOutcome> {
    if !options.dry_run {
        let mut signers = trusted.to_vec();
        signers.push(crate::format::keys::public_key_of(key));
        crate::ops::forget::complete_forgets(repository, &signers)?;
    }
    let now = jiff::Timestamp::now();
    let mut plan = PrunePlan::default();
    let survey = survey(repository, trusted, now, &mut plan, progress)?;
    plan_phase_two(&survey, now, &mut plan);
    let marked_after_phase_two: HashSet<Id> = survey
        .marks
        .iter()
        .filter(|read| read.trusted && !plan.due_marks.contains(&read.id))
        .flat_map(|read| read.mark.packs.iter().map(|pack| pack.id))
        .collect();
    let unindexed = read_unindexed(repository, &survey, options.grace, &mut plan);
    if plan.unsure_snapshots.is_empty() {
        plan_phase_one(
            &survey,
            &unindexed,
            &marked_after_phase_two,
            options,
            &mut plan,
        );
    }

    let mut outcome = PruneOutcome::default();
    if options.dry_run {
        outcome.plan = plan;
        return Ok(outcome);
    }
    let leaving = plan.delete.iter().chain(&plan.repack);
    progress.phase(
        Phase::PruneDelete,
        Amount {
            bytes: leaving.clone().map(|pack| pack.size).sum(),
            items: leaving.count() as u64,
        },
    );
    delete_due(repository, key, &survey, &plan, &mut outcome, progress)?;
    // A repack decodes deltas through their bases: never at a copy that
    // phase two has just deleted.
    let deleted: HashSet<Id> = plan.delete.iter().map(|pack| pack.id).collect();
    survey.bases.install_outside(repository, &deleted);
    if !plan.mark_unused.is_empty() || !plan.repack.is_empty() {
        outcome.repacked = repack(
            repository,
            index,
            (key, trusted),
            &survey,
            &marked_after_phase_two,
            &plan,
            progress,
        )?;
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
        let record = SignedRecord::sign(&mark, DELETION_DOMAIN, repository.id(), key);
        outcome.mark_written =
            Some(repository.store_object(ObjectKind::Deletion, &record.encode())?);
    }
    outcome.plan = plan;
    Ok(outcome)
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
    key: &SigningKey,
    survey: &Survey,
    plan: &PrunePlan,
    outcome: &mut PruneOutcome,
    progress: &dyn Progress,
) -> Result<()> {
    if plan.due_marks.is_empty() {
        return Ok(());
    }
    // Under Object Lock a pack still retained cannot go yet: it stays
    // indexed, and the marks that name it stay for a later prune.
    let locked = repository.config().object_lock.is_some();
    if locked {
        let now = SystemTime::now();
        for pack in &plan.delete {
            let until = repository
                .backend()
                .retained_until(ObjectKind::Pack, &pack.id.to_hex())?;
            if until.is_some_and(|until| until > now) {
                outcome.not_yet.push((pack.id, until));
            }
        }
    }
    let waiting: HashSet<Id> = outcome.not_yet.iter().map(|(id, _)| *id).collect();
    let deleting: HashSet<Id> = plan
        .delete
        .iter()
        .map(|pack| pack.id)
        .filter(|id| !waiting.contains(id))
        .collect();
    // Index files listing a deleted pack, or a pack already gone.
    let stale: HashSet<Id> = survey
        .listed_in
        .iter()
        .filter(|(pack, _)| deleting.contains(pack) || !survey.present.contains_key(pack))
        .flat_map(|(_, files)| files.iter().copied())
        .collect();
    // What vouched files list is sealed again; what unvouched ones list
    // stays an unsigned hint (this prune never vouches for a listing it
    // did not read from a vouched file).
    let mut keep: [Vec<PackEntry>; 2] = [Vec::new(), Vec::new()];
    let mut kept_ids = [HashSet::new(), HashSet::new()];
    for file_id in &stale {
        let vouched = usize::from(survey.vouched_files.contains(file_id));
        let file: IndexFile = match read_index(repository, file_id, &[])? {
            Ok((file, _)) => file,
            Err(_) => continue,
        };
        for pack in file.packs {
            let keep_it = !deleting.contains(&pack.id)
                && survey.present.contains_key(&pack.id)
                && kept_ids[vouched].insert(pack.id);
            if keep_it {
                keep[vouched].push(pack);
            }
        }
    }
    let mut written = HashSet::new();
    for (vouched, mut packs) in keep.into_iter().enumerate() {
        packs.sort_by_key(|pack| pack.id);
        let signer = (vouched == 1).then_some(key);
        for batch in packs.chunks(PACKS_PER_INDEX_FILE) {
            let id = repository.write_index_file(&IndexFile::new(batch.to_vec()), signer)?;
            written.insert(id);
            outcome.index_files_written += 1;
        }
    }
    let backend = repository.backend();
    for pack in plan
        .delete
        .iter()
        .filter(|pack| deleting.contains(&pack.id))
    {
        let name = pack.id.to_hex();
        if !locked {
            backend.delete(ObjectKind::Pack, &name)?;
        } else if backend.purge(ObjectKind::Pack, &name)? == Purged::Retained {
            // Retained after all (a lock extended since the check): it is
            // no longer indexed, but its mark stays and a later prune ends it.
            outcome.not_yet.push((pack.id, None));
            continue;
        }
        outcome.packs_deleted += 1;
        progress.advance(Amount {
            bytes: pack.size,
            items: 1,
        });
    }
    // Index files and marks must stop being seen now; under Object Lock
    // one still retained is hidden behind a delete marker, and its version
    // expires with the bucket's lifecycle rule (docs/S3.md).
    let remove = |kind: ObjectKind, name: &str| -> Result<()> {
        if locked && backend.purge(kind, name)? == Purged::Gone {
            return Ok(());
        }
        backend.delete(kind, name)
    };
    for file_id in stale.difference(&written) {
        remove(ObjectKind::Index, &file_id.to_hex())?;
        outcome.index_files_removed += 1;
    }
    let waiting: HashSet<Id> = outcome.not_yet.iter().map(|(id, _)| *id).collect();
    for mark in &plan.due_marks {
        let names_waiting = survey.marks.iter().any(|read| {
            read.id == *mark
                && read
                    .mark
                    .packs
                    .iter()
                    .any(|pack| waiting.contains(&pack.id))
        });
        if names_waiting {
            continue;
        }
        remove(ObjectKind::Deletion, &mark.to_hex())?;
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
    (key, trusted): (&SigningKey, &[PublicKey]),
    survey: &Survey,
    already_marked: &HashSet<Id>,
    plan: &PrunePlan,
    progress: &dyn Progress,
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
    let writer =
        BlobWriter::new(repository, index, usable, Some(key)).with_refresh_interval(Duration::MAX);
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
        trusted,
        &repository.list_ids(ObjectKind::Index)?,
        &survey.present,
        &leaving,
        &wanted,
    )?;
    for pack in &plan.repack {
        // Read in bounded windows, never whole; every blob copied is
        // checked against its id on the way, and the pack against its
        // name once it has been read to the end.
        let header = repository.read_pack_header(&pack.id, pack.size)?;
        let copied: Vec<BlobEntry> = header
            .blobs
            .into_iter()
            .filter(|entry| survey.live.is_live(&entry.id) && !elsewhere.contains(&entry.id))
            .collect();
        let mut decoder = repository.blob_decoder();
        let mut failure = None;
        let scan = repository.scan_pack(&pack.id, pack.size, &copied, &mut |entry, stored| {
            if failure.is_some() {
                return;
            }
            let added = stored
                .and_then(|stored| decoder.decode(entry, stored, &pack.id))
                .and_then(|raw| writer.add(entry.kind, entry.id, &raw));
            if let Err(error) = added {
                failure = Some(error);
            }
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        if !scan.matches_name {
            return Err(StoreError::corrupt(
                format!("pack {}", pack.id),
                "content does not match its name; prune stopped before marking anything",
            ));
        }
        progress.advance(Amount {
            bytes: pack.size,
            items: 1,
        });
    }
    writer.finish()
}
