//! Executing a restore's plan: the safety snapshot taken first, the
//! components written ([`super::pipeline`]), the outcome counted, the
//! rollback if anything failed, and SQLite's check of the restored
//! databases.
//!
//! Owns the order of those steps and the [`RestoreOutcome`]. Never writes
//! to the target before the safety snapshot, when one is asked for, is
//! committed; never leaves a failed restore half done when one was taken.

use super::fetch::{FallbackUse, Sources};
use super::pipeline::write_components;
use super::place::MetadataPolicy;
use super::plan::Action;
use super::prepare::{Decision, PreparedRestore, RestoreOptions, RestorePlan, plan_restore};
use super::safety::{self, JOURNAL_COMPONENT, Journal, RESTORED_LABEL, SAFETY_TAG};
use super::select::Selection;
use super::write::{WriteCounters, Writer};
use crate::error::{Result, StoreError};
use crate::format::keys::SigningKey;
use crate::format::manifest::{ComponentKind, SnapshotBody};
use crate::format::tree::EntryKind;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::backup::{BackupOptions, ComponentSource, backup};
use crate::progress::{Amount, NoProgress, Phase, Progress};
use crate::repository::Repository;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// A path that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreFailure {
    pub component: String,
    /// Path inside the component.
    pub path: String,
    pub error: String,
}

/// What a restore did.
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
    /// each over S3), delta bases read one by one among them.
    pub requests: u64,
    pub deleted: u64,
    /// What each fallback repository served, in order of preference.
    pub fallbacks: Vec<FallbackUse>,
    /// How many blobs the main repository could not give intact, and the
    /// first few reasons.
    pub main_failures: u64,
    pub main_failure_examples: Vec<String>,
    /// SQLite's integrity check of each restored database component (see
    /// [`execute`]; empty from [`execute_restore`] and after a rollback).
    pub database_checks: Vec<DatabaseCheck>,
    /// Seconds each component took to write, by name, in the plan's order.
    pub component_seconds: Vec<(String, f64)>,
    /// Stale journal files of a restored database, moved aside (renamed
    /// `NAME.cairn-aside`) and kept because no safety snapshot holds them.
    pub journals_set_aside: Vec<PathBuf>,
}

impl RestoreOutcome {
    /// Whether the restore failed because the target could not be written
    /// (a full disk, a quota, a read-only filesystem), with no sign of
    /// damage in the repository.
    pub fn target_unwritable(&self) -> bool {
        self.main_failures == 0
            && self
                .failures
                .iter()
                .any(|failure| super::place::is_target_write_error(&failure.error))
    }
}

/// The outcome of SQLite's integrity check on one restored database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseCheck {
    pub component: String,
    pub path: PathBuf,
    /// Empty when SQLite says "ok"; its messages (or why the check could
    /// not run) otherwise.
    pub problems: Vec<String>,
}

impl DatabaseCheck {
    /// Runs SQLite's integrity check on the database at `path`.
    /// It reads the file alone, never a journal beside it; when it fails,
    /// the first problem says why.
    pub fn run(component: &str, path: &Path) -> Self {
        use crate::ops::common::sqlite::{integrity_check, journals_beside};
        let mut problems = integrity_check(path).unwrap_or_else(|error| vec![error.to_string()]);
        if !problems.is_empty() {
            let journals = journals_beside(path);
            let cause = if journals.is_empty() {
                "cause: the database file fails SQLite's check as the snapshot holds it (every chunk matched its hash): the database was already damaged when it was backed up".to_string()
            } else {
                format!(
                    "cause: unknown; the check read the file alone, but journal files are beside it now ({}): another process has the database open",
                    journals
                        .iter()
                        .map(|(_, path)| path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            problems.insert(0, cause);
        }
        DatabaseCheck {
            component: component.to_string(),
            path: path.to_path_buf(),
            problems,
        }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Executes a prepared restore (one its preflight refused is an error):
/// [`execute_restore`], then SQLite's integrity check of every restored
/// database component, unless the restore was rolled back.
pub fn execute(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    prepared: &PreparedRestore,
    safety_key: Option<&SigningKey>,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let plan = match &prepared.decision {
        Decision::Proceed(plan) => plan,
        Decision::Refused { check } => {
            return Err(StoreError::Invalid(format!(
                "restore refused by the {check} check"
            )));
        }
    };
    let mut outcome = execute_restore(repository, index, sources, plan, safety_key, progress)?;
    if !outcome.rolled_back {
        outcome.database_checks = check_databases(plan);
    }
    Ok(outcome)
}

/// Runs SQLite's integrity check on every restored database component
/// (one left out by the selection is not there to check).
/// A database that was in WAL mode at backup is put back in WAL mode
/// first (the stored copy is in rollback-journal mode).
fn check_databases(plan: &RestorePlan) -> Vec<DatabaseCheck> {
    plan.components
        .iter()
        .filter(|component| component.kind == ComponentKind::Sqlite)
        .filter(|component| component.destination.is_file())
        .map(|component| {
            let wal = component.sqlite_journal_mode.as_deref()
                == Some(crate::ops::common::sqlite::WAL_MODE);
            let mode = if wal {
                crate::ops::common::sqlite::set_wal_mode(&component.destination).err()
            } else {
                None
            };
            let mut check = DatabaseCheck::run(&component.name, &component.destination);
            if let Some(error) = mode {
                check
                    .problems
                    .push(format!("could not put back WAL mode: {error}"));
            }
            check
        })
        .collect()
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
    // A database's stale journal files go aside before its new file is
    // installed: SQLite would replay them into it. From here until the
    // database is renamed into place the old file stands alone, which is
    // its last checkpoint, never a mix of old journal and new database.
    let aside = match set_journals_aside(plan) {
        Ok(aside) => aside,
        Err(error) => {
            if let Some((safety, journal)) = &safety {
                outcome.rollback_problems = roll_back(repository, index, *safety, journal)?;
                outcome.rolled_back = true;
            }
            return Err(error);
        }
    };
    let base_reads_before = repository.base_reads();
    let written = write_components(&writer, &plan.components);
    for (component, (failures, deleted, seconds)) in plan.components.iter().zip(written) {
        outcome.deleted += deleted;
        outcome
            .component_seconds
            .push((component.name.clone(), seconds));
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
    outcome.chunks_fetched = counters.fetch.chunks_fetched.load(Ordering::Relaxed);
    outcome.bytes_fetched = counters.fetch.bytes_fetched.load(Ordering::Relaxed);
    outcome.bytes_reused = counters.bytes_reused.load(Ordering::Relaxed);
    outcome.requests = counters.fetch.requests.load(Ordering::Relaxed)
        + repository.base_reads().saturating_sub(base_reads_before);
    outcome.fallbacks = sources.uses();
    (outcome.main_failures, outcome.main_failure_examples) = sources.main_failures();
    // Prefetch reads that failed were retried file by file; they still
    // count as the main repository failing, so damage is never hidden.
    let (prefetch_failures, examples) = counters.fetch.into_failures();
    outcome.main_failures += prefetch_failures;
    outcome.main_failure_examples.extend(examples);
    for component in &plan.components {
        let (count, examples) = &component.prefetch_failures;
        outcome.main_failures += count;
        outcome
            .main_failure_examples
            .extend(examples.iter().cloned());
    }

    // A database whose restore failed is still the old one (or, after the
    // rollback, is again): its journals go back beside it (the rollback
    // puts them back from the safety snapshot too, should this fail).
    let (back, aside): (Vec<_>, Vec<_>) = aside.into_iter().partition(|(component, _, _)| {
        (safety.is_some() && !outcome.failures.is_empty())
            || outcome
                .failures
                .iter()
                .any(|failure| &failure.component == component)
    });
    let problems = put_journals_back(&back, safety.is_some());
    if !outcome.failures.is_empty() {
        outcome.rollback_problems.extend(problems);
        if let Some((safety, journal)) = &safety {
            outcome
                .rollback_problems
                .extend(roll_back(repository, index, *safety, journal)?);
            outcome.rolled_back = true;
        }
    } else if safety.is_some() {
        // Saved in the safety snapshot: the aside copies are not needed.
        for (_, _, set_aside) in &aside {
            let _ = std::fs::remove_file(set_aside);
        }
    } else {
        outcome.journals_set_aside = aside.into_iter().map(|(_, _, path)| path).collect();
    }
    Ok(outcome)
}

/// Where a database's journal file `path` is moved aside: beside it, so
/// the move is one rename on the same filesystem.
fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".cairn-aside");
    PathBuf::from(name)
}

/// Renames each database's journal files aside; returns (component, from,
/// to). On an error, what was moved is moved back first.
fn set_journals_aside(plan: &RestorePlan) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut moved = Vec::new();
    for component in &plan.components {
        for (_, path) in &component.sqlite_journals {
            let aside = aside_path(path);
            match std::fs::rename(path, &aside) {
                Ok(()) => moved.push((component.name.clone(), path.clone(), aside)),
                // Gone since planning (the application checkpointed it).
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    put_journals_back(&moved, false);
                    return Err(StoreError::io(
                        format!("moving the stale journal {} aside", path.display()),
                        error,
                    ));
                }
            }
        }
    }
    Ok(moved)
}

/// Moves journal files set aside back; returns what could not be, unless
/// `saved` (a safety snapshot holds them and the rollback restores them).
fn put_journals_back(moved: &[(String, PathBuf, PathBuf)], saved: bool) -> Vec<(String, String)> {
    moved
        .iter()
        .filter_map(|(_, path, aside)| {
            let error = std::fs::rename(aside, path).err()?;
            (!saved).then(|| {
                (
                    path.display().to_string(),
                    format!("left at {}: {error}", aside.display()),
                )
            })
        })
        .collect()
}

fn take_safety_snapshot(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    plan: &RestorePlan,
    journal: &Journal,
) -> Result<Id> {
    // The journal is staged in a private directory (this host's journal
    // directory, or else a private one in the system's temporary
    // directory), never under a name another user could guess and plant.
    let scratch = match &plan.journals {
        Some(journals) => crate::os::private::private_directory_in(journals, "pending-")?,
        None => crate::os::private::private_temporary_directory("cairn-restore-journal-")?,
    };
    let journal_path = scratch.path().join("journal.json");
    let encoded = journal.encode();
    write_private(&journal_path, &encoded)?;
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
    for component in &plan.components {
        for (suffix, path) in &component.sqlite_journals {
            components.push(ComponentSource::new(
                safety::journal_file_component(&component.name, suffix),
                path.clone(),
            ));
        }
    }
    let mut labels = BTreeMap::new();
    labels.insert(RESTORED_LABEL.to_string(), plan.snapshot.to_hex());
    let options = BackupOptions {
        components,
        tags: vec![SAFETY_TAG.into()],
        labels,
        host: None,
        force_read: true,
        staging: None,
        // A secret key among what is overwritten is left out of the
        // safety snapshot too (cairn never stores secrets).
        secret_keys: Vec::new(),
        app_version: None,
    };
    let result = backup(repository, index, key, &options);
    drop(scratch);
    let outcome = result?;
    if let Some(problem) = outcome.body.problems.first() {
        return Err(StoreError::Invalid(format!(
            "the safety snapshot could not save {}/{} ({}); nothing was changed (use --no-safety-snapshot to restore anyway)",
            problem.component, problem.path, problem.problem
        )));
    }
    // This host's copy of the journal, under the safety snapshot's id: the
    // one `undo-restore` acts on (a journal in the repository is not).
    if let Some(journals) = &plan.journals {
        write_private(
            &safety::local_journal_path(journals, &outcome.snapshot),
            &encoded,
        )?;
    }
    Ok(outcome.snapshot)
}

/// Writes a new private file (0600, created exclusively) and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = crate::os::private::create_private_file(path)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))
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

/// Puts the target back as the safety snapshot and journal describe:
/// removes what the restore created, then restores the saved paths.
pub(super) fn roll_back(
    repository: &Repository,
    index: &dyn IndexCache,
    safety: Id,
    journal: &Journal,
) -> Result<Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> =
        safety::remove_created(journal, repository.id_hasher())
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
pub(super) fn restore_saved(
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
        // What is put back is what this host had, owners and all.
        metadata: MetadataPolicy::everything(),
        journals: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::restore::preflight::PreflightPolicy;
    use crate::ops::restore::prepare::{RestoreRequest, check_snapshot, prepare_restore};
    use crate::ops::restore::testing::Scene;

    /// A snapshot of a SQLite database `db` and a directory `notes`.
    fn scene() -> Scene {
        Scene::new(|root| {
            let database = root.join("app.db");
            let connection = rusqlite::Connection::open(&database).expect("open");
            connection
                .execute_batch("create table notes(text); insert into notes values ('kept');")
                .expect("fill");
            drop(connection);
            let notes = root.join("notes");
            std::fs::create_dir_all(&notes).expect("notes");
            std::fs::write(notes.join("a.md"), b"# notes\n").expect("a.md");
            vec![("db", database, true), ("notes", notes, false)]
        })
    }

    fn prepared(scene: &Scene, only: &[&str], policy: PreflightPolicy) -> PreparedRestore {
        let request = RestoreRequest {
            snapshot: scene.snapshot.to_hex(),
            trusted: vec![scene.public],
            options: RestoreOptions {
                target: scene.path("target"),
                selection: Selection {
                    only: only.iter().map(|name| name.to_string()).collect(),
                    ..Selection::default()
                },
                delete: false,
                ..RestoreOptions::default()
            },
            policy,
            ..RestoreRequest::default()
        };
        let checked = check_snapshot(&scene.repository, &request).expect("checked");
        prepare_restore(
            &scene.repository,
            scene.index.as_ref(),
            &Sources::new(&[]),
            checked,
            &request,
        )
        .expect("prepared")
    }

    fn run(scene: &Scene, prepared: &PreparedRestore, key: Option<&SigningKey>) -> RestoreOutcome {
        execute(
            &scene.repository,
            scene.index.as_ref(),
            &Sources::new(&[]),
            prepared,
            key,
            &NoProgress,
        )
        .expect("executed")
    }

    #[test]
    fn the_outcome_reports_the_integrity_check_of_each_restored_database_only() {
        let scene = scene();
        let outcome = run(
            &scene,
            &prepared(&scene, &[], PreflightPolicy::default()),
            None,
        );
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(
            outcome.database_checks,
            [DatabaseCheck {
                component: "db".into(),
                path: scene.path("target/db/app.db"),
                problems: Vec::new(),
            }]
        );

        let notes_only = prepared(&scene, &["notes"], PreflightPolicy::default());
        std::fs::remove_dir_all(scene.path("target")).expect("clean target");
        let outcome = run(&scene, &notes_only, None);
        assert!(outcome.database_checks.is_empty(), "no database restored");
    }

    #[test]
    fn the_database_checked_is_the_one_restored_over_a_damaged_copy() {
        let scene = scene();
        run(
            &scene,
            &prepared(&scene, &["db"], PreflightPolicy::default()),
            None,
        );
        let restored = scene.path("target/db/app.db");
        std::fs::write(&restored, vec![0x5a; 8192]).expect("damage the target's copy");
        assert!(!DatabaseCheck::run("db", &restored).passed());

        let again = prepared(&scene, &["db"], PreflightPolicy::default());
        let outcome = run(&scene, &again, Some(&scene.key));
        assert!(
            outcome.safety_snapshot.is_some(),
            "an overwrite is saved first"
        );
        assert_eq!(outcome.database_checks.len(), 1);
        assert!(
            outcome.database_checks[0].passed(),
            "{:?}",
            outcome.database_checks
        );
    }

    #[test]
    fn a_refused_restore_cannot_be_executed() {
        let scene = scene();
        let mut refused = prepared(&scene, &[], PreflightPolicy::default());
        refused.decision = Decision::Refused { check: "signature" };
        let error = execute(
            &scene.repository,
            scene.index.as_ref(),
            &Sources::new(&[]),
            &refused,
            None,
            &NoProgress,
        )
        .expect_err("refused");
        assert_eq!(error.to_string(), "restore refused by the signature check");
        assert!(!scene.path("target").exists(), "nothing written");
    }
}
