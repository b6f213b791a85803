//! Writing a restore's components: each on a thread of its own, a few at
//! a time; within one, its files in batches with three in flight (the next
//! batch's chunks fetched, this one written, the previous one synced and
//! renamed into place), then symlinks, then directory metadata deepest
//! first, then a staged component moved into place whole.
//!
//! Owns the order and overlap of those steps; the per-file write is
//! [`super::write`]'s, and what lands where [`super::place`]'s. Never
//! renames a batch into place before a sync that began after it was
//! written.

use super::fetch::BlobCache;
use super::ground::Ground;
use super::place;
use super::plan::{Action, ComponentPlan, PlannedEntry};
use super::prefetch;
use super::write::Writer;
use crate::error::{Result, StoreError};
use crate::format::manifest::ComponentKind;
use crate::format::tree::EntryKind;
use crate::progress::Amount;
use rayon::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Threads that write files during a restore.
const RESTORE_THREADS: usize = 8;

/// Writes the components, each on a thread of its own, as many at once
/// as there are writing slots ([`WRITING_COMPONENTS`]); a component waits
/// for a free slot, in the snapshot's order. A component gives its slot
/// back once its last batch is written; the sync of that batch, and its
/// directories' metadata, run after that. Returns each component's
/// failures, deletions and seconds of writing (from taking its slot to
/// its last rename), in order.
pub(super) fn write_components(
    writer: &Writer,
    components: &[ComponentPlan],
) -> Vec<(Failures, u64, f64)> {
    let slots = WritingSlots::new(WRITING_COMPONENTS);
    let large_at_once = large_files_per_component(components.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = components
            .iter()
            .map(|component| {
                let slots = &slots;
                scope.spawn(move || {
                    let slot = slots.take();
                    let started = std::time::Instant::now();
                    let mut deleted = 0;
                    let failures =
                        write_component(writer, component, large_at_once, &mut deleted, || {
                            drop(slot)
                        });
                    (failures, deleted, started.elapsed().as_secs_f64())
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
pub(super) type Failures = Vec<(String, String)>;

/// Writes one component, at most `large_at_once` of its large files at a
/// time; calls `written` once its last batch is written (before it is
/// synced and renamed into place).
fn write_component(
    writer: &Writer,
    plan: &ComponentPlan,
    large_at_once: usize,
    deleted: &mut u64,
    written: impl FnOnce(),
) -> Failures {
    let mut failures = Vec::new();
    let owners = plan.apply_owners;
    for temporary in &plan.stale_temporaries {
        let _ = place::remove_beside(temporary);
    }
    for (path, error) in &plan.unreadable {
        failures.push((path.clone(), format!("cannot read its tree: {error}")));
    }
    let root = match &plan.staging {
        Some(staging) => staging.as_path(),
        None if plan.kind.is_single_file() => plan.destination.parent().unwrap_or(Path::new("/")),
        None => plan.destination.as_path(),
    };
    // The target itself (and the places given for components) are the
    // user's: made as paths. Below the root, everything goes through its
    // handles.
    let created = match (&plan.staging, plan.destination.parent()) {
        (Some(staging), Some(parent)) => fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))
            .and_then(|()| place::create_staging(staging).map_err(|error| error.to_string())),
        _ => fs::create_dir_all(root)
            .map_err(|error| format!("cannot create {}: {error}", root.display())),
    };
    // A file component's root is the directory the user named; a
    // directory component's is its own destination (or staging directory),
    // which must not be a symlink (planning refused one already).
    let named_by_user = plan.staging.is_none() && plan.kind.is_single_file();
    let ground =
        created.and_then(|()| Ground::open(root, named_by_user).map_err(|error| error.to_string()));
    let ground = match ground {
        Ok(ground) => ground,
        Err(error) => {
            failures.push(("/".into(), error));
            return failures;
        }
    };
    for deletion in &plan.deletions {
        match place::remove_path(&ground, &deletion.destination) {
            Ok(()) => *deleted += 1,
            Err(error) => failures.push((deletion.relative.clone(), error.to_string())),
        }
    }
    let writes = |kind: EntryKind| {
        plan.entries
            .iter()
            .filter(move |item| item.entry.kind == kind && item.action != Action::Unchanged)
    };
    for item in writes(EntryKind::Directory) {
        if matches!(item.action, Action::Create | Action::Replace)
            && let Err(error) = ground.create_directory(&plan.written_at(&item.destination))
        {
            failures.push((
                item.relative.clone(),
                format!("cannot create directory: {error}"),
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
        prefetch::prefetch(
            writer.repository,
            writer.index,
            batch,
            &writer.counters.fetch,
            writer.sources,
        )
    };
    // Three batches are in flight: the next one's chunks are read while
    // this one is written, so the repository's round trips overlap the
    // disk's work; and the previous one is synced and renamed into place,
    // so the CPU does not wait for the disk. One sync at a time, so every
    // batch is renamed only after a sync that began once it was written.
    std::thread::scope(|scope| {
        let pool = pool.as_ref();
        let ground = &ground;
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
            let prepared = prepare_batch(writer, plan, batch, &cache, pool, ground, large_at_once);
            drop(cache);
            if let Some((handle, batch)) = committing.take() {
                failures.extend(committed(handle, batch));
            }
            let batch = *batch;
            committing = Some((
                scope.spawn(move || commit_batch(writer, plan, prepared, pool, root, ground)),
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
        if let Err(error) = place::write_symlink(&ground, &item.entry, &at, staged, owners) {
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
        // Opened afresh, name by name: a directory swapped for a symlink
        // (or for another directory) since it was written is named, and
        // nothing is applied through it.
        let applied = ground.reopen_directory(&at).and_then(|directory| {
            let entry = &item.entry;
            place::apply_directory_metadata(
                directory.dir.file(),
                entry.mode,
                (entry.uid, entry.gid),
                (entry.mtime, entry.mtime_nanos),
                &at,
                owners,
            )
        });
        if let Err(error) = applied {
            failures.push((item.relative.clone(), error.to_string()));
        }
    }
    // A staged component the target could not take (a disk that filled
    // meanwhile) is never renamed into place: it appears whole or not at
    // all. (Files the repository could not give, under
    // --allow-missing-chunks, are reported and the rest is kept.)
    if let Some(staging) = &plan.staging
        && failures
            .iter()
            .any(|(_, error)| place::is_target_write_error(error))
    {
        let _ = place::remove_beside(staging);
        failures.push((
            "/".into(),
            "not moved into place: the component was not written whole".into(),
        ));
        return failures;
    }
    if let Some(staging) = &plan.staging
        && let Err(error) = place::move_into_place(staging, &plan.destination)
    {
        // Nothing of the component is in place: all of it failed.
        let _ = place::remove_beside(staging);
        failures.push(("/".into(), error.to_string()));
        return failures;
    }
    // The selection may leave the root's contents partly untouched; its own
    // metadata is the snapshot's whenever the component is restored.
    if let (ComponentKind::Directory, Some(root)) = (plan.kind, plan.root)
        && let Err(error) = place::apply_root_metadata(&root, &plan.destination, owners)
    {
        failures.push(("/".into(), error.to_string()));
    }
    // Written in place: the last batch's renames, the symlinks and the
    // directories' metadata are made durable before the restore says it is
    // done. One `syncfs` (each earlier batch's renames were made durable by
    // the next batch's): an fsync of every directory renamed into, tried
    // first, cost a journal commit each, and the 20,000-file restore took
    // longer (5.7-7.3 s against 3.9-5.9 s, alternating, loaded machine).
    if plan.staging.is_none()
        && let Err(error) = place::sync_filesystem(root)
    {
        failures.push(("/".into(), error.to_string()));
    }
    failures
}

/// Files written and checked under temporary names (`None`: only
/// metadata was fixed, in place), each with its entry.
type Prepared<'p> = Vec<(&'p PlannedEntry, Result<Option<PathBuf>>)>;

/// Writes one batch of files in parallel, each checked under a temporary
/// name.
fn prepare_batch<'p>(
    writer: &Writer,
    plan: &ComponentPlan,
    batch: &[&'p PlannedEntry],
    cache: &BlobCache,
    pool: Option<&rayon::ThreadPool>,
    ground: &Ground,
    large_at_once: usize,
) -> Prepared<'p> {
    let owners = plan.apply_owners;
    let one = |item: &&'p PlannedEntry| {
        let result = if item.action == Action::Metadata {
            place::fix_file_metadata(ground, &item.entry, &item.destination, owners).map(|()| None)
        } else {
            let staged_at = plan
                .staging
                .is_some()
                .then(|| plan.written_at(&item.destination));
            writer
                .prepare_file(item, cache, staged_at.as_deref(), ground, owners)
                .map(Some)
        };
        (*item, result)
    };
    let (large, small): (Vec<&'p PlannedEntry>, Vec<&'p PlannedEntry>) =
        batch.iter().partition(|item| prefetch::reads_windows(item));
    // At most `large_at_once` groups, each written one file after
    // another: even when a thread waiting inside one large file's parallel
    // decode steals another group, each group has one file in progress.
    let per_group = large.len().div_ceil(large_at_once.max(1)).max(1);
    let prepare = || -> Prepared<'p> {
        let (mut prepared, large) = rayon::join(
            || small.par_iter().map(one).collect::<Prepared<'p>>(),
            || {
                large
                    .par_chunks(per_group)
                    .flat_map_iter(|group| group.iter().map(one))
                    .collect::<Prepared<'p>>()
            },
        );
        prepared.extend(large);
        prepared
    };
    match pool {
        Some(pool) => pool.install(prepare),
        None => prepare(),
    }
}

/// Large files (those that read their own windows) written at the same
/// time in a restore: each holds two windows while it is written, and
/// with one per thread (eight) the toolchain's libraries took about 40 MiB
/// of the restore's peak (heaptrack). Each window is decoded in parallel,
/// so two still keep both cores busy beside the small files.
const LARGE_FILES_AT_ONCE: usize = 2;

/// Large files each component writes at once, when `components` are
/// restored: [`LARGE_FILES_AT_ONCE`] shared out among those written side
/// by side, one each at least. Two per component, with two components
/// written together, were four large files and eight windows at once: 32
/// MiB of the real-applications restore's 83 MiB peak (heaptrack). A
/// count fixed per component, not a semaphore across them: a rayon thread
/// blocked on one could be the thread whose work it waits for (a thread
/// waiting inside a window's parallel decode steals other jobs).
fn large_files_per_component(components: usize) -> usize {
    let side_by_side = components.clamp(1, WRITING_COMPONENTS);
    (LARGE_FILES_AT_ONCE / side_by_side).max(1)
}

/// Makes a prepared batch durable with one filesystem sync, and only then
/// renames each file into place (a staged component's files are in place
/// in its staging directory already). The renames become durable with the
/// next batch's sync, the last batch's with the component's final one
/// ([`write_component`]). Returns the failures (path, error).
fn commit_batch(
    writer: &Writer,
    plan: &ComponentPlan,
    prepared: Prepared,
    pool: Option<&rayon::ThreadPool>,
    root: &Path,
    ground: &Ground,
) -> Vec<(String, String)> {
    let synced = place::sync_filesystem(root);
    // Renamed in parallel too: a rename is a directory update in the
    // kernel, and a batch of small files has hundreds.
    let commit = || -> Vec<(String, String)> {
        prepared
            .into_par_iter()
            .filter_map(|(item, result)| {
                let outcome = match (result, &synced) {
                    (Ok(Some(_)), Ok(())) if plan.staging.is_some() => Ok(()),
                    (Ok(Some(temporary)), Ok(())) => {
                        place::commit(ground, &temporary, &item.destination)
                    }
                    (Ok(Some(temporary)), Err(error)) => {
                        let _ = place::remove_path(ground, &temporary);
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
