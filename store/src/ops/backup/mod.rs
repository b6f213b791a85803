//! Backup: read sources, store new chunks and trees, write a signed
//! manifest, into one repository or several at once. One stage per module:
//!
//! 1. [`sources`]: check every component (name, path, excludes) before
//!    writing anything; [`prepare`]: copy SQLite databases and run
//!    commands into temporary files.
//! 2. [`commit::start`], per repository: leave out packs marked for
//!    deletion, adopt packs an interrupted backup left unindexed, choose
//!    the parent snapshot (from the repository, else from this host's
//!    [`walk_cache`]).
//! 3. [`walk`]: per component, walk the tree depth first, files of a
//!    directory in parallel; [`unchanged`] files are taken from the parent
//!    unread, the others are [`read_ahead`] and cut into chunks, hashed and
//!    compressed in parallel ([`chunk`]). A directory's tree blob is stored
//!    once its entries are. Every blob goes through the [`fan_out`] to each
//!    repository that lacks it.
//! 4. Flush packs and index files (the blob writer's `finish`).
//! 5. [`commit::commit`], per repository: copy what the snapshot needs out
//!    of packs a prune marked since the backup started, then sign and
//!    write the manifest: the snapshot exists from this instant.
//! 6. [`targets`]: across repositories, which were set aside and why, and
//!    the verdict that follows.
//!
//! Packs named by a deletion mark when the backup starts are never reused:
//! the backup stores such blobs again, so a prune may delete them.
//!
//! A file that cannot be read is left out and recorded as a problem; a file
//! that changes while being read is stored as read and recorded as a
//! problem; the snapshot still completes and its manifest lists both.
//! Failing to write to the repository aborts the backup before step 5, which
//! leaves the repository as it was plus unreferenced data.

mod chunk;
mod commit;
mod fan_out;
mod options;
mod prepare;
mod progress;
mod read_ahead;
mod sources;
pub mod targets;
#[cfg(test)]
mod testing;
mod unchanged;
mod walk;
mod walk_cache;

pub use crate::format::manifest::check_component_name;
pub use options::{BackupOptions, BackupOutcome, Destination};
pub use sources::{
    ChunkingChoice, ComponentSource, SourceKind, check_sources, component_from_path,
};
pub use targets::{Target, TargetFailure, TargetsOutcome, Verdict};

use crate::error::{Result, StoreError};
use crate::format::config::RepositoryConfig;
use crate::format::keys::SigningKey;
use crate::index::IndexCache;
use crate::ops::common::host_name;
use crate::progress::{Amount, NoProgress, Phase, Progress};
use crate::repository::Repository;
use commit::{Snapshot, commit, start};
use fan_out::FanOut;
use prepare::{Sources, prepare_components};
use progress::Reporter;
use sources::exclusion_set;
use walk::{ReadSources, Walk};

/// Backs up once into every target the caller could open
/// ([`backup_to_each`]) and gives every target its result, those set aside
/// included. Fails before reading anything if no target was opened.
pub fn backup_into_targets(
    targets: Vec<Target>,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<TargetsOutcome> {
    let opened = targets::open(targets)?;
    let outcomes = backup_to_each(&opened.destinations, options, progress)?;
    Ok(opened.merge(outcomes))
}

/// Backs up into one repository, reporting nothing.
pub fn backup(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    let destination = Destination {
        repository,
        index,
        key,
        walk_cache: None,
    };
    backup_with_progress(&destination, options, &NoProgress)
}

/// Backs up into one repository; the walk reports to `progress`.
pub fn backup_with_progress(
    destination: &Destination,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    backup_to_each(std::slice::from_ref(destination), options, progress)?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Invalid("the backup had no repository".into())))
}

/// Repositories chunk alike only with the same chunk sizes and SQLite page
/// rule; a backup into several reads each file once, so they must.
fn check_same_chunking(destinations: &[Destination]) -> Result<()> {
    let Some(first) = destinations.first() else {
        return Err(StoreError::Invalid("the backup has no repository".into()));
    };
    let rule = |config: &RepositoryConfig| (config.chunker.clone(), config.sqlite_pages_per_chunk);
    for other in &destinations[1..] {
        if rule(first.repository.config()) != rule(other.repository.config()) {
            return Err(StoreError::Invalid(format!(
                "repositories {} and {} chunk differently, so one pass cannot serve both: back them up in separate runs, or make new ones with `cairn init --like`",
                first.repository.backend().location(),
                other.repository.backend().location()
            )));
        }
        // Blobs are named once for all: an encrypted repository names them
        // with its own key, so it can share a pass only with repositories
        // holding the same id key.
        if first.repository.id_hasher() != other.repository.id_hasher() {
            return Err(StoreError::Invalid(format!(
                "repositories {} and {} name blobs with different keys (one is encrypted, or \
                 they have different id keys), so one pass cannot serve both: make the second \
                 with `init --like` the first (it then shares the first's id key), or back them \
                 up in separate runs",
                first.repository.backend().location(),
                other.repository.backend().location()
            )));
        }
    }
    Ok(())
}

/// Backs up once into every destination: the sources are read, chunked and
/// hashed once, each blob goes to every repository that lacks it, and each
/// repository gets its own snapshot signed with its own key. The outer
/// error means nothing was stored anywhere (bad sources, a database that
/// cannot be copied); otherwise there is one result per destination, in
/// order, and a repository that fails leaves the others to finish.
/// The walk reports to `progress` in [`Phase::Backup`].
pub fn backup_to_each(
    destinations: &[Destination],
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<Vec<Result<BackupOutcome>>> {
    check_sources(&options.components)?;
    if let Some(version) = &options.app_version {
        crate::format::manifest::check_app_version(version).map_err(StoreError::Invalid)?;
    }
    check_same_chunking(destinations)?;
    let host = options.host.clone().unwrap_or_else(host_name);
    let names: Vec<&str> = options.components.iter().map(|c| c.name.as_str()).collect();
    let excludes = options
        .components
        .iter()
        .map(exclusion_set)
        .collect::<Result<Vec<_>>>()?;

    let mut results: Vec<Option<Result<BackupOutcome>>> = Vec::new();
    let mut writers = Vec::new();
    let mut lanes = Vec::new();
    let mut recorders = Vec::new();
    let mut primary_cache = None;
    for (position, destination) in destinations.iter().enumerate() {
        match start(destination, &host, &names) {
            Ok(started) => {
                writers.push(started.writer);
                if lanes.is_empty() {
                    primary_cache = started.cached;
                }
                lanes.push((position, started.adopted_packs, started.parent));
                recorders.push(started.recorder);
                results.push(None);
            }
            Err(error) => results.push(Some(Err(error))),
        }
    }
    let Some(&(primary, _, ref primary_parent)) = lanes.first() else {
        return Ok(results.into_iter().flatten().collect());
    };
    // Files unchanged since the first repository's parent snapshot are not
    // read again; the fan-out checks every repository holds their chunks.
    let parent = primary_parent.as_ref().filter(|_| !options.force_read);
    let parent_body = parent.map(|(_, body)| body.clone());
    if let Some((parent, _)) = parent {
        for writer in &mut writers {
            writer.set_parent(*parent);
        }
    }
    let params = destinations[primary].repository.chunker_params()?;
    // The phase begins before the databases are copied and the commands
    // run, so a slow `pg_dump` shows as its component's name, not silence.
    progress.phase(Phase::Backup, Amount::default());
    let fan_out = FanOut::new(writers);

    // Databases are copied before anything is stored, so one that cannot
    // be read fails the backup with the repositories untouched.
    let sources = Sources {
        components: &options.components,
        prepared: prepare_components(&options.components, options.staging.as_deref(), progress)?,
        excludes,
    };
    let reporter = Reporter::new(progress);
    let primary_destination = &destinations[primary];
    let walk = Walk::new(
        primary_destination.repository,
        primary_destination.index,
        &fan_out,
        &reporter,
        walk::secret_key_identities(&options.secret_keys),
    )
    .caching(primary_cache.as_ref(), &recorders);
    let walked = match walk::walk_pool(options.components.len()) {
        Some(pool) => pool.install(|| walk.components(params, &sources, parent_body.as_ref())),
        None => walk.components(params, &sources, parent_body.as_ref()),
    };
    reporter.flush();
    let ReadSources {
        components,
        failed_components,
    } = walked.unwrap_or_else(|error| {
        fan_out.fail_all(error);
        ReadSources::default()
    });
    let walk::Tallies {
        problems,
        unchanged_files,
        secret_keys_left_out,
    } = walk.into_tallies();

    for ((finished, (position, adopted_packs, parent)), recorder) in
        fan_out.finish().into_iter().zip(lanes).zip(recorders)
    {
        let destination = &destinations[position];
        let outcome = finished.and_then(|(writer, written)| {
            let snapshot = Snapshot {
                parent: parent.map(|(id, _)| id),
                host: host.clone(),
                params,
                components: components.clone(),
                problems: problems.clone(),
            };
            commit(destination, &writer, written, snapshot, options).map(|committed| {
                // Only a cache: failing to keep it costs the next backup
                // reading files again, never this snapshot.
                if let Some(recorder) = recorder {
                    let _ = recorder.finish(&committed.id, &committed.manifest);
                }
                BackupOutcome {
                    snapshot: committed.id,
                    body: committed.body,
                    written: committed.written,
                    adopted_packs,
                    unchanged_files,
                    failed_components: failed_components.clone(),
                    secret_keys_left_out: secret_keys_left_out.clone(),
                }
            })
        });
        results[position] = Some(outcome);
    }
    Ok(results.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::progress::Counting;
    use super::testing::TestRepository;
    use super::*;
    use std::sync::atomic::Ordering;

    /// A source tree of a few files over two levels, with one large
    /// enough to be read ahead.
    fn sources(root: &std::path::Path) {
        for (path, length) in [
            ("a", 10),
            ("b/c", 5000),
            ("b/d/e", 9 * 1024 * 1024),
            ("f", 0),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let content: Vec<u8> = (0..length).map(|at| (at * 7 % 251) as u8).collect();
            std::fs::write(path, content).unwrap();
        }
    }

    fn totals(progress: &Counting) -> [u64; 4] {
        [
            progress.expected_files.load(Ordering::Relaxed),
            progress.expected_bytes.load(Ordering::Relaxed),
            progress.done_files.load(Ordering::Relaxed),
            progress.done_bytes.load(Ordering::Relaxed),
        ]
    }

    #[test]
    fn progress_expects_and_finishes_the_files_backed_up_read_or_unchanged() {
        let repository = TestRepository::new();
        let root = repository.directory.path().join("data");
        sources(&root);
        let options = BackupOptions {
            components: vec![ComponentSource::new("data", &root)],
            ..BackupOptions::default()
        };
        for (round, unchanged) in [(1, 0), (2, 4)] {
            let progress = Counting::default();
            let outcome =
                backup_with_progress(&repository.destination(), &options, &progress).unwrap();
            let stats = &outcome.body.components[0].stats;
            assert_eq!(stats.files, 4, "round {round}");
            assert_eq!(outcome.unchanged_files, unchanged, "round {round}");
            assert_eq!(
                totals(&progress),
                [stats.files, stats.bytes, stats.files, stats.bytes],
                "round {round}"
            );
            assert_eq!(*progress.components.lock().unwrap(), ["data"]);
            assert_eq!(outcome.verdict(), Verdict::Complete);
        }
    }

    #[test]
    fn more_components_than_cores_are_walked_on_one_more_thread_and_stored_whole() {
        let cores = rayon::current_num_threads();
        assert!(
            walk::walk_pool(cores).is_none(),
            "as many as the cores: as before"
        );
        let pool = walk::walk_pool(cores + 2).expect("a pool for more components");
        assert_eq!(pool.current_num_threads(), cores + 1);

        // Each component holds a file large enough to be read ahead, so
        // some of them may find every read-ahead slot taken and be read
        // directly: read again, however each is read, nothing is new.
        let repository = TestRepository::new();
        let components: Vec<ComponentSource> = (0..cores + 2)
            .map(|number| {
                let root = repository.directory.path().join(format!("c{number}"));
                sources(&root);
                ComponentSource::new(format!("c{number}"), &root)
            })
            .collect();
        let options = BackupOptions {
            components,
            ..BackupOptions::default()
        };
        let first = backup_with_progress(&repository.destination(), &options, &NoProgress).unwrap();
        assert_eq!(first.body.components.len(), cores + 2);
        for component in &first.body.components {
            assert_eq!(component.stats.files, 4, "{}", component.name);
            assert_eq!(component.stats.bytes, 10 + 5000 + 9 * 1024 * 1024);
        }
        let again = BackupOptions {
            force_read: true,
            ..options
        };
        let second = backup_with_progress(&repository.destination(), &again, &NoProgress).unwrap();
        assert_eq!(second.written.new_blobs, 0, "read again, cut alike");
        assert_eq!(second.body.components, first.body.components);
    }

    #[test]
    fn the_walk_cache_skips_unchanged_files_when_the_repository_parent_is_unreadable() {
        let repository = TestRepository::new();
        let root = repository.directory.path().join("data");
        sources(&root);
        let cache = repository.directory.path().join("cache/walk");
        let options = BackupOptions {
            components: vec![ComponentSource::new("data", &root)],
            host: Some("h".into()),
            ..BackupOptions::default()
        };
        let mut destination = repository.destination();
        destination.walk_cache = Some(&cache);
        // Make the repository's copy of a snapshot unreadable, as it is to
        // a write-only host.
        let hide = |snapshot: &crate::id::Id| {
            let path = repository
                .directory
                .path()
                .join("repository/snapshots")
                .join(snapshot.to_hex());
            std::fs::write(path, b"unreadable here").unwrap();
        };
        let first = backup_with_progress(&destination, &options, &NoProgress).unwrap();
        assert_eq!(first.unchanged_files, 0);
        hide(&first.snapshot);
        let second = backup_with_progress(&destination, &options, &NoProgress).unwrap();
        assert_eq!(second.unchanged_files, 4, "taken from the cached walk");
        assert_eq!(second.body.parent, Some(first.snapshot));
        assert_eq!(second.body.components, first.body.components);
        assert_eq!(second.written.new_blobs, 0, "nothing stored again");

        // The cache follows the newest backup; without it (or with it
        // damaged) every file is read again, and the snapshot is the same.
        hide(&second.snapshot);
        for entry in std::fs::read_dir(&cache).unwrap() {
            let path = entry.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 20;
            bytes[last] ^= 1;
            std::fs::write(&path, bytes).unwrap();
        }
        let third = backup_with_progress(&destination, &options, &NoProgress).unwrap();
        assert_eq!(third.unchanged_files, 0, "a damaged cache is no cache");
        assert_eq!(third.body.parent, None);
        assert_eq!(third.body.components, first.body.components);
    }

    #[test]
    fn a_failed_component_makes_the_backup_incomplete_or_failed_if_critical() {
        let repository = TestRepository::new();
        let root = repository.directory.path().join("data");
        sources(&root);
        let mut dump = ComponentSource::new("dump", "");
        dump.kind = SourceKind::Command("exit 1".into());
        let mut options = BackupOptions {
            components: vec![ComponentSource::new("data", &root), dump],
            ..BackupOptions::default()
        };
        let outcome = backup(
            &repository.repository,
            &repository.index,
            &repository.key,
            &options,
        )
        .unwrap();
        assert_eq!(outcome.verdict(), Verdict::Incomplete);
        assert_eq!(outcome.failed_component_names(), ["dump"]);
        assert!(outcome.critical_failures().is_empty());
        options.components[1].critical = true;
        let outcome = backup(
            &repository.repository,
            &repository.index,
            &repository.key,
            &options,
        )
        .unwrap();
        assert_eq!(outcome.verdict(), Verdict::CriticalFailed);
        assert_eq!(outcome.critical_failures(), ["dump"]);
    }

    #[test]
    fn a_repository_set_aside_leaves_the_others_their_snapshot() {
        let (first, third) = (TestRepository::new(), TestRepository::new());
        let root = first.directory.path().join("data");
        sources(&root);
        let options = BackupOptions {
            components: vec![ComponentSource::new("data", &root)],
            ..BackupOptions::default()
        };
        let targets = vec![
            Target {
                location: "first".into(),
                opened: Ok(first.destination()),
            },
            Target {
                location: "second".into(),
                opened: Err("no such repository".into()),
            },
            Target {
                location: "third".into(),
                opened: Ok(third.destination()),
            },
        ];
        let outcome = backup_into_targets(targets, &options, &NoProgress).unwrap();
        assert_eq!(outcome.verdict(), Verdict::SomeRepositoriesFailed);
        assert_eq!(outcome.failed_locations(), ["second"]);
        for (position, repository) in [(0, &first), (2, &third)] {
            let stored = outcome.repositories[position].1.as_ref().unwrap();
            let listed = repository
                .repository
                .list_ids(crate::backend::ObjectKind::Snapshot)
                .unwrap();
            assert_eq!(listed, [stored.snapshot]);
        }
        assert_eq!(outcome.first().map(|o| o.body.components.len()), Some(1));
    }
}
