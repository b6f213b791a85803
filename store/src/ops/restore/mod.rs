//! Restore: put a snapshot's components back on disk, into an empty or an
//! existing target, verified, atomically per file, and reversibly.
//!
//! 1. [`plan_restore`]: select components and paths, compare the snapshot
//!    with the target ([`plan`]), and count what must be fetched. Planning
//!    writes nothing; `--dry-run` stops here and prints the plan.
//! 2. [`execute_restore`]:
//!    - if the plan overwrites or deletes anything that exists, take a
//!      safety snapshot of exactly those paths, plus a journal of what will
//!      be created ([`safety`]); if it cannot be taken, stop;
//!    - remove leftover temporaries, then what is replaced or extra;
//!    - create directories, write files in batches: each batch's chunks
//!      are read from the repository pack by pack ([`prefetch`], the next
//!      batch's while this one is written), then its files are written in
//!      parallel, each to a temporary name, verified ([`write`]), made
//!      durable with one sync, then renamed (the sync and renames run while
//!      the next batch is written); then create symlinks, and set
//!      directory metadata deepest first. A directory component whose
//!      destination does not exist is built in a staging directory beside
//!      it instead ([`ComponentPlan::staging`]): files go under their final
//!      names there, with no rename each, and the whole directory is
//!      renamed into place at the end. Components are written side by
//!      side, three at a time at most (the rest wait, in order, for a
//!      slot); a component frees its slot once its last batch is written,
//!      and that batch's sync and renames, and the symlinks and directory
//!      metadata after them, run meanwhile;
//!    - if anything failed and a safety snapshot was taken, undo: remove
//!      what was created, restore the saved paths, and say so.
//!
//! Without a safety snapshot (a target whose existing contents the restore
//! does not touch, or `--no-safety-snapshot`), a file that fails is
//! reported and the others stay restored; running the same restore again
//! finishes the job and skips what is already right.

pub mod plan;
pub mod prefetch;
pub mod preflight;
pub mod safety;
pub mod select;
pub mod sources;
pub mod write;

pub use crate::progress::{NoProgress, Progress};
pub use plan::{Action, ComponentPlan, PlanCounts};
pub use select::{Selection, select_components};
pub use sources::{Fallback, FallbackUse, Sources};

use crate::error::{Result, StoreError};
use crate::format::keys::SigningKey;
use crate::format::manifest::{ComponentKind, SnapshotBody};
use crate::format::tree::EntryKind;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::backup::{BackupOptions, ComponentSource, backup};
use crate::progress::{Amount, Phase};
use crate::repository::Repository;
use plan::{PlannedEntry, Planner};
use rayon::prelude::*;
use safety::{JOURNAL_COMPONENT, Journal, RESTORED_LABEL, SAFETY_TAG};
use select::PathFilter;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use write::{WriteCounters, Writer};

/// Threads that write files during a restore.
const RESTORE_THREADS: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub selection: Selection,
    /// Delete what the target holds and the snapshot does not (within the
    /// selection).
    pub delete: bool,
}

#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub snapshot: Id,
    pub components: Vec<ComponentPlan>,
}

impl RestorePlan {
    /// Whether executing it overwrites or deletes anything that exists.
    pub fn touches_existing(&self) -> bool {
        self.components
            .iter()
            .any(|component| !component.touched_paths().is_empty())
    }

    pub fn totals(&self) -> PlanCounts {
        let mut total = PlanCounts::default();
        for component in &self.components {
            let counts = &component.counts;
            total.create += counts.create;
            total.update += counts.update;
            total.metadata += counts.metadata;
            total.delete += counts.delete;
            total.unchanged += counts.unchanged;
            total.bytes_to_fetch += counts.bytes_to_fetch;
            total.bytes_reused += counts.bytes_reused;
        }
        total
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFailure {
    pub component: String,
    /// Path inside the component.
    pub path: String,
    pub error: String,
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOutcome {
    pub failures: Vec<RestoreFailure>,
    pub safety_snapshot: Option<Id>,
    /// The restore failed and the target was put back as it was.
    pub rolled_back: bool,
    /// What the rollback could not put back: (path, why).
    pub rollback_problems: Vec<(String, String)>,
    pub files_written: u64,
    pub bytes_written: u64,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    pub bytes_reused: u64,
    /// Reads of the main repository's packs while writing files (one GET
    /// each over S3).
    pub requests: u64,
    pub deleted: u64,
    /// What each fallback repository served, in order of preference.
    pub fallbacks: Vec<FallbackUse>,
    /// How many blobs the main repository could not give intact, and the
    /// first few reasons.
    pub main_failures: u64,
    pub main_failure_examples: Vec<String>,
}

/// Plans a restore of `body` into `options.target`; reads, never writes.
pub fn plan_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    snapshot: Id,
    body: &SnapshotBody,
    options: &RestoreOptions,
) -> Result<RestorePlan> {
    let selected = select_components(body, &options.selection, &options.target, &snapshot.short())?;
    if selected
        .iter()
        .any(|(component, _)| component.name == JOURNAL_COMPONENT)
        && body.tags.iter().all(|tag| tag != SAFETY_TAG)
    {
        return Err(StoreError::Invalid(format!(
            "component name {JOURNAL_COMPONENT} is reserved for safety snapshots"
        )));
    }
    let filter = PathFilter::new(&options.selection)?;
    let planner = Planner {
        repository,
        index,
        chunker: body.chunker,
        sources,
        filter: &filter,
        delete: options.delete,
    };
    let destinations: Vec<PathBuf> = selected
        .iter()
        .map(|(_, destination)| destination.clone())
        .collect();
    // Side by side: reading and decoding a component's trees waits on
    // the disk and runs on one thread.
    let components = selected
        .into_par_iter()
        .enumerate()
        .map(|(position, (component, destination))| {
            // A component landing inside another (or holding another) is
            // written in place: renaming one into place whole would race
            // with the other's writes.
            let alone = destinations
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != position)
                .all(|(_, other)| {
                    !other.starts_with(&destination) && !destination.starts_with(other)
                });
            planner.plan_component(component, &destination, alone)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RestorePlan {
        snapshot,
        components,
    })
}

/// Executes a plan. `safety_key` signs the safety snapshot; `None` means
/// none is taken (the caller has made the user say so).
pub fn execute_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    plan: &RestorePlan,
    safety_key: Option<&SigningKey>,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    // The journal (a stat of every path created) only goes with a safety
    // snapshot.
    let safety = match safety_key {
        Some(key) if plan.touches_existing() => {
            let journal = Journal::new(plan.snapshot, &plan.components);
            let snapshot = take_safety_snapshot(repository, index, key, plan, &journal)?;
            Some((snapshot, journal))
        }
        _ => None,
    };
    let safety_snapshot = safety.as_ref().map(|(snapshot, _)| *snapshot);
    let counters = WriteCounters::default();
    let writer = Writer {
        repository,
        index,
        sources,
        counters: &counters,
        progress,
    };
    let (files_total, bytes_total) = progress_totals(plan);
    progress.phase(
        Phase::Restore,
        Amount {
            bytes: bytes_total,
            items: files_total,
        },
    );
    let mut outcome = RestoreOutcome {
        safety_snapshot,
        ..RestoreOutcome::default()
    };
    let written = write_components(&writer, &plan.components);
    for (component, (failures, deleted)) in plan.components.iter().zip(written) {
        outcome.deleted += deleted;
        outcome
            .failures
            .extend(failures.into_iter().map(|(path, error)| RestoreFailure {
                component: component.name.clone(),
                path,
                error,
            }));
    }
    outcome.files_written = counters.files_written.load(Ordering::Relaxed);
    outcome.bytes_written = counters.bytes_written.load(Ordering::Relaxed);
    outcome.chunks_fetched = counters.chunks_fetched.load(Ordering::Relaxed);
    outcome.bytes_fetched = counters.bytes_fetched.load(Ordering::Relaxed);
    outcome.bytes_reused = counters.bytes_reused.load(Ordering::Relaxed);
    outcome.requests = counters.requests.load(Ordering::Relaxed);
    outcome.fallbacks = sources.uses();
    (outcome.main_failures, outcome.main_failure_examples) = sources.main_failures();
    // Prefetch reads that failed were retried file by file; they still
    // count as the main repository failing, so damage is never hidden.
    let (prefetch_failures, examples) = counters
        .prefetch_failures
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    outcome.main_failures += prefetch_failures;
    outcome.main_failure_examples.extend(examples);
    for component in &plan.components {
        let (count, examples) = &component.prefetch_failures;
        outcome.main_failures += count;
        outcome
            .main_failure_examples
            .extend(examples.iter().cloned());
    }

    if !outcome.failures.is_empty()
        && let Some((safety, journal)) = &safety
    {
        outcome.rollback_problems = roll_back(repository, index, *safety, journal)?;
        outcome.rolled_back = true;
    }
    Ok(outcome)
}

fn take_safety_snapshot(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    plan: &RestorePlan,
    journal: &Journal,
) -> Result<Id> {
    let scratch = std::env::temp_dir().join(format!(
        "cairn-restore-journal-{}-{}",
        std::process::id(),
        plan.snapshot.short()
    ));
    fs::create_dir_all(&scratch)
        .map_err(|error| StoreError::io(format!("creating {}", scratch.display()), error))?;
    let journal_path = scratch.join("journal.json");
    fs::write(&journal_path, journal.encode())
        .map_err(|error| StoreError::io(format!("writing {}", journal_path.display()), error))?;
    let mut components = vec![ComponentSource::new(JOURNAL_COMPONENT, &journal_path)];
    for component in &plan.components {
        let saved = safety::saved_paths(component);
        if saved.is_empty() {
            continue;
        }
        let mut source =
            ComponentSource::new(component.name.clone(), component.destination.clone());
        if component.kind == ComponentKind::Directory {
            source.only = Some(saved);
        }
        components.push(source);
    }
    let mut labels = BTreeMap::new();
    labels.insert(RESTORED_LABEL.to_string(), plan.snapshot.to_hex());
    let options = BackupOptions {
        components,
        tags: vec![SAFETY_TAG.into()],
        labels,
        host: None,
        force_read: true,
        trusted: Vec::new(),
    };
    let result = backup(repository, index, key, &options);
    let _ = fs::remove_dir_all(&scratch);
    let outcome = result?;
    if let Some(problem) = outcome.body.problems.first() {
        return Err(StoreError::Invalid(format!(
            "the safety snapshot could not save {}/{} ({}); nothing was changed (use --no-safety-snapshot to restore anyway)",
            problem.component, problem.path, problem.problem
        )));
    }
    Ok(outcome.snapshot)
}

/// Writes the components, each on a thread of its own, as many at once
/// as there are writing slots ([`WRITING_COMPONENTS`]); a component waits
/// for a free slot, in the snapshot's order. A component gives its slot
/// back once its last batch is written; the sync of that batch, and its
/// directories' metadata, run after that. Returns each component's
/// failures and deletions, in order.
fn write_components(writer: &Writer, components: &[ComponentPlan]) -> Vec<(Failures, u64)> {
    let slots = WritingSlots::new(WRITING_COMPONENTS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = components
            .iter()
            .map(|component| {
                let slots = &slots;
                scope.spawn(move || {
                    let slot = slots.take();
                    let mut deleted = 0;
                    let failures = write_component(writer, component, &mut deleted, || drop(slot));
                    (failures, deleted)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Components whose files are written at the same time. A component of
/// small files waits on the filesystem (inode and directory reads) more
/// than on the CPU, and one of a few large files keeps a core busy per
/// file: three, started together, keep two cores busy where two, the
/// second started only as the first ended, left a core idle. Measured on
/// the benchmark's full restore (db, vectors, memory), alternating,
/// caches dropped: 1.03-1.17 s against 1.09-1.31 s. Each writing
/// component holds a batch's cache and its large files' windows; more
/// would add to memory without a core to use them.
const WRITING_COMPONENTS: usize = 3;

/// A counting semaphore: a component holds a slot while it writes files.
struct WritingSlots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A slot taken; given back when dropped (a component that panics too).
struct WritingSlot<'a>(&'a WritingSlots);

impl WritingSlots {
    fn new(count: usize) -> Self {
        WritingSlots {
            free: std::sync::Mutex::new(count),
            freed: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> WritingSlot<'_> {
        // A poisoned count is still a count: the panic that poisoned it
        // gave its slot back on unwinding.
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        *free -= 1;
        WritingSlot(self)
    }
}

impl Drop for WritingSlot<'_> {
    fn drop(&mut self) {
        let mut free = self
            .0
            .free
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// Paths that could not be restored, each with why.
type Failures = Vec<(String, String)>;

/// Writes one component; calls `written` once its last batch is written
/// (before it is synced and renamed into place).
fn write_component(
    writer: &Writer,
    plan: &ComponentPlan,
    deleted: &mut u64,
    written: impl FnOnce(),
) -> Failures {
    let mut failures = Vec::new();
    for temporary in &plan.stale_temporaries {
        let is_directory = fs::symlink_metadata(temporary).is_ok_and(|meta| meta.is_dir());
        let _ = write::remove_path(temporary, is_directory);
    }
    for deletion in &plan.deletions {
        match write::remove_path(&deletion.destination, deletion.is_directory) {
            Ok(()) => *deleted += 1,
            Err(error) => failures.push((deletion.relative.clone(), error.to_string())),
        }
    }
    for (path, error) in &plan.unreadable {
        failures.push((path.clone(), format!("cannot read its tree: {error}")));
    }
    let root = match &plan.staging {
        Some(staging) => staging.as_path(),
        None if plan.kind.is_single_file() => plan.destination.parent().unwrap_or(Path::new("/")),
        None => plan.destination.as_path(),
    };
    let created = match (&plan.staging, plan.destination.parent()) {
        (Some(staging), Some(parent)) => {
            fs::create_dir_all(parent).and_then(|()| fs::create_dir(staging))
        }
        _ => fs::create_dir_all(root),
    };
    if let Err(error) = created {
        failures.push((
            "/".into(),
            format!("cannot create {}: {error}", root.display()),
        ));
        return failures;
    }
    let writes = |kind: EntryKind| {
        plan.entries
            .iter()
            .filter(move |item| item.entry.kind == kind && item.action != Action::Unchanged)
    };
    for item in writes(EntryKind::Directory) {
        if matches!(item.action, Action::Create | Action::Replace)
            && let Err(error) = fs::create_dir(plan.written_at(&item.destination))
            && error.kind() != std::io::ErrorKind::AlreadyExists
        {
            failures.push((
                item.relative.clone(),
                format!(
                    "cannot create directory {}: {error}",
                    item.destination.display()
                ),
            ));
        }
    }
    let files: Vec<_> = writes(EntryKind::File).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(RESTORE_THREADS)
        .build()
        .ok();
    let batches = prefetch::batches(&files);
    let fetch = |batch: &[&PlannedEntry]| {
        prefetch::prefetch(writer.repository, writer.index, batch, writer.counters)
    };
    // Three batches are in flight: the next one's chunks are read while
    // this one is written, so the repository's round trips overlap the
    // disk's work; and the previous one is synced and renamed into place,
    // so the CPU does not wait for the disk. One sync at a time, so every
    // batch is renamed only after a sync that began once it was written.
    std::thread::scope(|scope| {
        let pool = pool.as_ref();
        let mut next = batches.first().map(|batch| scope.spawn(|| fetch(batch)));
        let mut committing = None;
        for (number, batch) in batches.iter().enumerate() {
            // A prefetch that panicked leaves everything to the per-file path.
            let cache = next
                .take()
                .and_then(|handle| handle.join().ok())
                .unwrap_or_default();
            next = batches
                .get(number + 1)
                .map(|batch| scope.spawn(|| fetch(batch)));
            let prepared = prepare_batch(writer, plan, batch, &cache, pool);
            drop(cache);
            if let Some((handle, batch)) = committing.take() {
                failures.extend(committed(handle, batch));
            }
            let batch = *batch;
            committing = Some((
                scope.spawn(move || commit_batch(writer, plan, batch, prepared, pool, root)),
                batch,
            ));
        }
        written();
        if let Some((handle, batch)) = committing.take() {
            failures.extend(committed(handle, batch));
        }
    });
    let staged = plan.staging.is_some();
    for item in writes(EntryKind::Symlink) {
        let at = plan.written_at(&item.destination);
        if let Err(error) = write::write_symlink(&item.entry, &at, staged) {
            failures.push((item.relative.clone(), error.to_string()));
        }
    }
    // Deepest first, so writing children does not disturb a parent's mtime;
    // only where it differs, so an identical target is not touched at all.
    for item in plan
        .entries
        .iter()
        .rev()
        .filter(|item| item.entry.kind == EntryKind::Directory)
    {
        let at = plan.written_at(&item.destination);
        let current = fs::symlink_metadata(&at);
        let differs = current.is_ok_and(|meta| {
            meta.mode() & 0o7777 != item.entry.mode
                || meta.mtime() != item.entry.mtime
                || meta.mtime_nsec() != i64::from(item.entry.mtime_nanos)
                || (write::running_as_root()
                    && (meta.uid() != item.entry.uid || meta.gid() != item.entry.gid))
        });
        if differs && let Err(error) = write::apply_directory_metadata(&item.entry, &at) {
            failures.push((item.relative.clone(), error.to_string()));
        }
    }
    if let Some(staging) = &plan.staging
        && let Err(error) = write::move_into_place(staging, &plan.destination)
    {
        // Nothing of the component is in place: all of it failed.
        let _ = fs::remove_dir_all(staging);
        failures.push(("/".into(), error.to_string()));
        return failures;
    }
    // The selection may leave the root's contents partly untouched; its own
    // metadata is the snapshot's whenever the component is restored.
    if let (ComponentKind::Directory, Some(root)) = (plan.kind, plan.root)
        && let Err(error) = write::apply_root_metadata(&root, &plan.destination)
    {
        failures.push(("/".into(), error.to_string()));
    }
    failures
}

/// What the progress counts up to: one `file_done` for every file not
/// left unchanged, and `advance` for every byte of those whose content is
/// written (a repeated chunk counts each time it is written). The plan's
/// own totals count each distinct chunk once and directories as entries,
/// which left the progress past 100% at the end.
fn progress_totals(plan: &RestorePlan) -> (u64, u64) {
    plan.components
        .iter()
        .flat_map(|component| &component.entries)
        .filter(|item| item.entry.kind == EntryKind::File && item.action != Action::Unchanged)
        .fold((0, 0), |(files, bytes), item| {
            let written = if item.action == Action::Metadata {
                0
            } else {
                item.entry.size
            };
            (files + 1, bytes + written)
        })
}

/// A batch's files written and checked under temporary names (`None`:
/// only metadata was fixed, in place), by position in the batch.
type Prepared = Vec<(usize, Result<Option<PathBuf>>)>;

/// Writes one batch of files in parallel, each checked under a temporary
/// name.
fn prepare_batch(
    writer: &Writer,
    plan: &ComponentPlan,
    batch: &[&PlannedEntry],
    cache: &prefetch::BlobCache,
    pool: Option<&rayon::ThreadPool>,
) -> Prepared {
    let prepare = || -> Prepared {
        batch
            .par_iter()
            .enumerate()
            .map(|(position, item)| {
                let result = if item.action == Action::Metadata {
                    write::fix_file_metadata(&item.entry, &item.destination).map(|()| None)
                } else {
                    let staged_at = plan
                        .staging
                        .is_some()
                        .then(|| plan.written_at(&item.destination));
                    writer
                        .prepare_file(item, cache, staged_at.as_deref())
                        .map(Some)
                };
                (position, result)
            })
            .collect()
    };
    match pool {
        Some(pool) => pool.install(prepare),
        None => prepare(),
    }
}

/// Makes a prepared batch durable with one filesystem sync, and only then
/// renames each file into place (a staged component's files are in place
/// in its staging directory already). Returns the failures (path, error).
fn commit_batch(
    writer: &Writer,
    plan: &ComponentPlan,
    batch: &[&PlannedEntry],
    prepared: Prepared,
    pool: Option<&rayon::ThreadPool>,
    root: &Path,
) -> Vec<(String, String)> {
    let synced = write::sync_filesystem(root);
    // Renamed in parallel too: a rename is a directory update in the
    // kernel, and a batch of small files has hundreds.
    let commit = || -> Vec<(String, String)> {
        prepared
            .into_par_iter()
            .filter_map(|(position, result)| {
                let item = batch[position];
                let outcome = match (result, &synced) {
                    (Ok(Some(_)), Ok(())) if plan.staging.is_some() => Ok(()),
                    (Ok(Some(temporary)), Ok(())) => write::commit(&temporary, &item.destination),
                    (Ok(Some(temporary)), Err(error)) => {
                        let _ = fs::remove_file(&temporary);
                        Err(StoreError::Invalid(error.to_string()))
                    }
                    (Ok(None), _) => Ok(()),
                    (Err(error), _) => Err(error),
                };
                writer.progress.advance(Amount::items(1));
                outcome
                    .err()
                    .map(|error| (item.relative.clone(), error.to_string()))
            })
            .collect()
    };
    match pool {
        Some(pool) => pool.install(commit),
        None => commit(),
    }
}

/// The failures of a batch's commit; if its thread panicked, every file of
/// the batch counts as failed (none can be known to be in place).
fn committed(
    handle: std::thread::ScopedJoinHandle<'_, Vec<(String, String)>>,
    batch: &[&PlannedEntry],
) -> Vec<(String, String)> {
    handle.join().unwrap_or_else(|_| {
        batch
            .iter()
            .map(|item| {
                (
                    item.relative.clone(),
                    "internal error while syncing and renaming its batch".into(),
                )
            })
            .collect()
    })
}

/// Puts the target back as the safety snapshot and journal describe:
/// removes what the restore created, then restores the saved paths.
fn roll_back(
    repository: &Repository,
    index: &dyn IndexCache,
    safety: Id,
    journal: &Journal,
) -> Result<Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = safety::remove_created(journal)
        .into_iter()
        .map(|(path, why)| (path.display().to_string(), why))
        .collect();
    let body = repository.read_manifest(&safety)?.body_unverified()?;
    problems.extend(restore_saved(repository, index, safety, &body, journal)?);
    problems.extend(
        safety::restore_directory_metadata(journal)
            .into_iter()
            .map(|(path, why)| (path.display().to_string(), why)),
    );
    Ok(problems)
}

/// Restores a safety snapshot's saved components over their destinations.
fn restore_saved(
    repository: &Repository,
    index: &dyn IndexCache,
    safety: Id,
    body: &SnapshotBody,
    journal: &Journal,
) -> Result<Vec<(String, String)>> {
    let mut selection = Selection::default();
    for component in &journal.components {
        if component.saved && body.component(&component.name).is_some() {
            selection.only.push(component.name.clone());
            selection
                .component_targets
                .insert(component.name.clone(), component.destination.clone());
        }
    }
    if selection.only.is_empty() {
        return Ok(Vec::new());
    }
    let options = RestoreOptions {
        target: PathBuf::from("/"),
        selection,
        delete: false,
    };
    let sources = Sources::new(&[]);
    let plan = plan_restore(repository, index, &sources, safety, body, &options)?;
    let outcome = execute_restore(repository, index, &sources, &plan, None, &NoProgress)?;
    Ok(outcome
        .failures
        .into_iter()
        .map(|failure| {
            (
                format!("{}/{}", failure.component, failure.path),
                failure.error,
            )
        })
        .collect())
}

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
    let journal = Journal::decode(&write::read_file_bytes(repository, index, entry)?)?;
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
