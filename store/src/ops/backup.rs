//! Backup: read sources, store new chunks and trees, write a signed manifest.
//!
//! 1. Check every component (name, path) before writing anything.
//! 2. Adopt packs that no index file lists (left by an interrupted backup).
//! 3. Per component, walk the tree depth first; files in a directory are
//!    processed in parallel (rayon), each file streamed through the chunker
//!    in large batches whose chunks are hashed, compressed and packed in
//!    parallel. A directory's tree blob is stored once its entries are done.
//! 4. Flush packs and index files ([`BlobWriter::finish`]).
//! 5. Check that no pack the snapshot relies on has been marked for
//!    deletion by a prune since the backup started (or deleted); copy what
//!    it needs out of marked packs into new ones ([`secure_against_prune`]).
//! 6. Sign and write the manifest: the snapshot exists from this instant.
//!
//! Packs named by a deletion mark when the backup starts are never reused:
//! the backup stores such blobs again, so a prune may delete them.
//!
//! A file that cannot be read is left out and recorded as a problem; a file
//! that changes while being read is stored as read and recorded as a
//! problem; the snapshot still completes and its manifest lists both.
//! Failing to write to the repository aborts the backup before step 5, which
//! leaves the repository as it was plus unreferenced data.

use crate::backend::ObjectKind;
use crate::blob_writer::{BlobWriter, FrameSharing, WriterStatistics};
use crate::error::{Result, StoreError};
use crate::format::chunking::FileChunking;
use crate::format::config::RepositoryConfig;
use crate::format::index::PackEntry;
use crate::format::keys::PublicKey;
use crate::format::manifest::{
    ChunkerRecord, ComponentKind, ComponentRecord, ComponentStats, Problem, RootMetadata,
    SignedManifest, SnapshotBody,
};
use crate::format::pack::{BlobKind, FRAME_TARGET};
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::fan_out::FanOut;
use crate::ops::{join_relative, read_tree};
use crate::read_ahead::{self, ReadAhead};
use crate::repository::Repository;
use crate::repository::{marked_packs, read_marks};
use cairn_chunker::{ChunkStream, ChunkerParams, Chunking};
use ed25519_dalek::SigningKey;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Files larger than this are read ahead on a thread of their own.
const READ_AHEAD_FROM: u64 = 2 * read_ahead::BLOCK_SIZE as u64;
/// Files of a directory whose reading is asked for at once.
const HINT_WINDOW: usize = 64;

/// A file's content as stored: its chunks, its hash and its length.
struct StoredContent {
    chunks: Vec<Id>,
    hash: Id,
    size: u64,
}

/// One named thing to back up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSource {
    pub name: String,
    pub path: PathBuf,
    /// Back up only these paths (relative, `/`-separated) and everything
    /// below them; `None` backs up everything.
    pub only: Option<BTreeSet<String>>,
    pub kind: SourceKind,
    /// If this component fails, the backup as a whole is reported as
    /// failed (the other components are still stored).
    pub critical: bool,
    /// Paths (relative to the component root, `/`-separated) matching
    /// any of these globs are left out, with everything below them.
    pub exclude: Vec<String>,
    /// Set when something before the backup already failed this component
    /// (a before-hook): it is left out and the snapshot says why.
    pub failed_before: Option<String>,
    pub chunking: ChunkingChoice,
}

/// How a component asks to be cut into chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChunkingChoice {
    /// What the repository's config says: SQLite database files (a
    /// `sqlite` component's copy, or any file with the SQLite header) in
    /// fixed chunks of their own pages, if the config names a page count;
    /// everything else content-defined.
    #[default]
    KindDefault,
    /// The repository's FastCDC parameters for every file.
    ContentDefined,
    /// As the default, with one page per chunk where the config names no
    /// page count (repositories made before it existed).
    DatabasePages,
    /// Fixed chunks of this many bytes, for files changed in place in
    /// aligned blocks.
    Fixed(u32),
}

impl ChunkingChoice {
    /// `default`, `content-defined`, `pages` or `fixed:SIZE` (bytes, or
    /// with a K or M suffix).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        match text {
            "default" => return Ok(ChunkingChoice::KindDefault),
            "content-defined" => return Ok(ChunkingChoice::ContentDefined),
            "pages" => return Ok(ChunkingChoice::DatabasePages),
            _ => {}
        }
        let expected = || {
            format!(
                "chunking {text:?}: expected default, content-defined, pages or fixed:SIZE (e.g. fixed:4K)"
            )
        };
        let size = text.strip_prefix("fixed:").ok_or_else(expected)?;
        let (digits, unit) = match size.strip_suffix(['K', 'k']) {
            Some(digits) => (digits, 1024),
            None => match size.strip_suffix(['M', 'm']) {
                Some(digits) => (digits, 1024 * 1024),
                None => (size, 1),
            },
        };
        let bytes = digits
            .parse::<u32>()
            .ok()
            .and_then(|count| count.checked_mul(unit))
            .ok_or_else(expected)?;
        Chunking::Fixed(bytes)
            .validate()
            .map_err(|error| format!("chunking {text:?}: {error}"))?;
        Ok(ChunkingChoice::Fixed(bytes))
    }
}

impl std::fmt::Display for ChunkingChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkingChoice::KindDefault => write!(f, "default"),
            ChunkingChoice::ContentDefined => write!(f, "content-defined"),
            ChunkingChoice::DatabasePages => write!(f, "pages"),
            ChunkingChoice::Fixed(size) => write!(f, "fixed:{size}"),
        }
    }
}

/// The chunking a component gets: its choice, resolved against the
/// repository's config.
fn resolve_chunking(
    config: &RepositoryConfig,
    params: ChunkerParams,
    choice: ChunkingChoice,
) -> FileChunking {
    let content_defined = Chunking::ContentDefined(params);
    let (base, sqlite_pages_per_chunk) = match choice {
        ChunkingChoice::KindDefault => (content_defined, config.sqlite_pages_per_chunk),
        ChunkingChoice::ContentDefined => (content_defined, None),
        ChunkingChoice::DatabasePages => (
            content_defined,
            Some(config.sqlite_pages_per_chunk.unwrap_or(1)),
        ),
        ChunkingChoice::Fixed(size) => (Chunking::Fixed(size), None),
    };
    FileChunking {
        base,
        sqlite_pages_per_chunk,
    }
}

/// How a component's data is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory or file, read as it is.
    #[default]
    Files,
    /// A live SQLite database: a consistent copy is taken with SQLite's
    /// online backup API first, and that copy is backed up.
    Sqlite,
    /// What this shell command writes to stdout (e.g. `pg_dump -Fc app`)
    /// becomes the component's one file; `path` is unused. A command that
    /// cannot start or exits non-zero fails only its component.
    Command(String),
}

impl ComponentSource {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        ComponentSource {
            name: name.into(),
            path: path.into(),
            only: None,
            kind: SourceKind::Files,
            critical: false,
            exclude: Vec::new(),
            failed_before: None,
            chunking: ChunkingChoice::KindDefault,
        }
    }
}

/// Whether `path` or one of its parents is in `only`.
fn covered(only: &BTreeSet<String>, path: &str) -> bool {
    let mut prefix = path;
    loop {
        if only.contains(prefix) {
            return true;
        }
        match prefix.rsplit_once('/') {
            Some((parent, _)) => prefix = parent,
            None => return false,
        }
    }
}

/// Whether something below directory `path` is in `only`.
fn leads_to(only: &BTreeSet<String>, path: &str) -> bool {
    let below = format!("{path}/");
    only.range(below.clone()..)
        .next()
        .is_some_and(|first| first.starts_with(&below))
}

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub components: Vec<ComponentSource>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Defaults to this machine's host name.
    pub host: Option<String>,
    /// Read every file, even those whose size, mtime, ctime and inode match
    /// the parent snapshot.
    pub force_read: bool,
    /// Keys whose snapshots may serve as parent (the signing key's own is
    /// always trusted).
    pub trusted: Vec<PublicKey>,
}

#[derive(Clone, Debug)]
pub struct BackupOutcome {
    pub snapshot: Id,
    pub body: SnapshotBody,
    pub written: WriterStatistics,
    /// Packs left by an interrupted backup that this one indexed.
    pub adopted_packs: usize,
    /// Files taken from the parent snapshot without reading them, because
    /// their size, mtimes and inode had not changed.
    pub unchanged_files: u64,
    /// Components left out because their command failed (the snapshot's
    /// problems say why), each with whether it was critical.
    pub failed_components: Vec<(String, bool)>,
}

pub use crate::format::manifest::check_component_name;

/// A bare path becomes a component named after its last element.
pub fn component_from_path(path: &Path) -> Result<ComponentSource> {
    // Resolved, so that `dir/..` or `.` is named after the directory it
    // really is.
    let absolute =
        fs::canonicalize(path).map_err(|_| StoreError::SourceMissing(path.to_path_buf()))?;
    let name = absolute
        .components()
        .filter_map(|part| match part {
            std::path::Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .next_back()
        .ok_or_else(|| StoreError::InvalidComponentName {
            name: path.display().to_string(),
            reason: "the path has no last element to name it by; use --component NAME=PATH".into(),
        })?;
    check_component_name(&name).map_err(|error| match error {
        StoreError::InvalidComponentName { name, reason } => StoreError::InvalidComponentName {
            name,
            reason: format!(
                "{reason} (name it with --component NAME={})",
                path.display()
            ),
        },
        other => other,
    })?;
    Ok(ComponentSource::new(name, path))
}

pub fn check_sources(components: &[ComponentSource]) -> Result<()> {
    if components.is_empty() {
        return Err(StoreError::Invalid(
            "nothing to back up: give a PATH or --component NAME=PATH".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for component in components {
        check_component_name(&component.name)?;
        if !seen.insert(component.name.as_str()) {
            return Err(StoreError::DuplicateComponent(component.name.clone()));
        }
        if let SourceKind::Command(command) = &component.kind {
            if command.trim().is_empty() {
                return Err(StoreError::Invalid(format!(
                    "component {} has an empty command",
                    component.name
                )));
            }
            continue;
        }
        if component.path.as_os_str().is_empty() {
            return Err(StoreError::Invalid(format!(
                "component {} has an empty path",
                component.name
            )));
        }
        let meta = fs::metadata(&component.path)
            .map_err(|_| StoreError::SourceMissing(component.path.clone()))?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(StoreError::Invalid(format!(
                "source path {} is neither a directory nor a regular file",
                component.path.display()
            )));
        }
    }
    Ok(())
}

/// One repository a backup writes to, with the key that signs its snapshot.
pub struct Destination<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
    pub key: &'a SigningKey,
}

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
    };
    backup_to_each(std::slice::from_ref(&destination), options)?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Invalid("the backup had no repository".into())))
}

/// A destination ready to take blobs.
struct Started<'a> {
    writer: BlobWriter<'a>,
    adopted_packs: usize,
    parent: Option<(Id, SnapshotBody)>,
}

fn start<'a>(
    destination: &Destination<'a>,
    host: &str,
    names: &[&str],
    trusted: &[PublicKey],
) -> Result<Started<'a>> {
    let Destination {
        repository, index, ..
    } = *destination;
    // Marks are listed before packs, so every pack a mark names that the
    // pack listing shows is left out (see FORMAT.md, deletion protocol).
    let (marks, _unreadable) = read_marks(repository, &[])?;
    let marked = marked_packs(&marks);
    let mut present = repository.list_packs()?;
    present.retain(|pack, _| !marked.contains(pack));
    let writer = BlobWriter::new(repository, index, present.clone());
    let orphans = unindexed_packs(repository, index, &present)?;
    let adopted_packs = orphans.len();
    writer.adopt(orphans)?;
    let parent = find_parent(repository, host, names, trusted)?;
    Ok(Started {
        writer,
        adopted_packs,
        parent,
    })
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
    }
    Ok(())
}

/// Backs up once into every destination: the sources are read, chunked and
/// hashed once, each blob goes to every repository that lacks it, and each
/// repository gets its own snapshot signed with its own key. The outer
/// error means nothing was stored anywhere (bad sources, a database that
/// cannot be copied); otherwise there is one result per destination, in
/// order, and a repository that fails leaves the others to finish.
pub fn backup_to_each(
    destinations: &[Destination],
    options: &BackupOptions,
) -> Result<Vec<Result<BackupOutcome>>> {
    check_sources(&options.components)?;
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
    for (position, destination) in destinations.iter().enumerate() {
        let mut trusted = options.trusted.clone();
        trusted.push(crate::format::keys::public_key_of(destination.key));
        match start(destination, &host, &names, &trusted) {
            Ok(started) => {
                writers.push(started.writer);
                lanes.push((position, started.adopted_packs, started.parent));
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
    let fan_out = FanOut::new(writers);

    // Databases are copied before anything is stored, so one that cannot
    // be read fails the backup with the repositories untouched.
    let sources = Sources {
        options,
        prepared: prepare_components(&options.components)?,
        excludes,
    };
    let tallies = Tallies::default();
    let walked = walk_components(
        &destinations[primary],
        &fan_out,
        params,
        &sources,
        parent_body.as_ref(),
        &tallies,
    );
    let ReadSources {
        components,
        failed_components,
    } = walked.unwrap_or_else(|error| {
        fan_out.fail_all(error);
        ReadSources::default()
    });
    let mut problems = tallies
        .problems
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    problems.sort_by(|a, b| (&a.component, &a.path).cmp(&(&b.component, &b.path)));
    let unchanged_files = tallies.unchanged_files.into_inner();

    for (finished, (position, adopted_packs, parent)) in fan_out.finish().into_iter().zip(lanes) {
        let destination = &destinations[position];
        let outcome = finished.and_then(|(writer, written)| {
            let snapshot = Snapshot {
                parent: parent.map(|(id, _)| id),
                host: host.clone(),
                params,
                components: components.clone(),
                problems: problems.clone(),
            };
            commit(destination, &writer, written, snapshot, options).map(
                |(snapshot, body, written)| BackupOutcome {
                    snapshot,
                    body,
                    written,
                    adopted_packs,
                    unchanged_files,
                    failed_components: failed_components.clone(),
                },
            )
        });
        results[position] = Some(outcome);
    }
    Ok(results.into_iter().flatten().collect())
}

/// What one repository's snapshot will say, before it is signed.
struct Snapshot {
    parent: Option<Id>,
    host: String,
    params: ChunkerParams,
    components: Vec<ComponentRecord>,
    problems: Vec<Problem>,
}

/// The components to read, each prepared and with its excludes compiled.
struct Sources<'a> {
    options: &'a BackupOptions,
    prepared: Vec<Prepared>,
    excludes: Vec<Option<globset::GlobSet>>,
}

/// What the walk gathers from every thread.
#[derive(Default)]
struct Tallies {
    problems: Mutex<Vec<Problem>>,
    unchanged_files: AtomicU64,
}

/// What reading the sources gave, the same for every repository.
#[derive(Default)]
struct ReadSources {
    components: Vec<ComponentRecord>,
    /// Components left out, each with whether it was critical.
    failed_components: Vec<(String, bool)>,
}

/// Reads every component once, storing through `fan_out`.
fn walk_components(
    primary: &Destination,
    fan_out: &FanOut,
    params: ChunkerParams,
    sources: &Sources,
    parent_body: Option<&SnapshotBody>,
    tallies: &Tallies,
) -> Result<ReadSources> {
    let problems = &tallies.problems;
    let unchanged_files = &tallies.unchanged_files;
    let work: Vec<_> = sources
        .options
        .components
        .iter()
        .zip(&sources.prepared)
        .zip(&sources.excludes)
        .collect();
    // Components are read side by side: one's small files wait on the disk
    // while another's large ones keep the CPU busy.
    // Ok(Err(critical)): the component could not be prepared.
    let walked: Vec<std::result::Result<ComponentRecord, bool>> = work
        .into_par_iter()
        .enumerate()
        .map(|(group, ((source, preparation), exclude))| {
            if let Prepared::Failed(why) = preparation {
                problems
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .push(Problem {
                        component: source.name.clone(),
                        path: String::new(),
                        problem: why.clone(),
                    });
                return Ok(Err(source.critical));
            }
            let walker = Walker {
                repository: primary.repository,
                index: primary.index,
                writer: fan_out,
                group,
                chunking: resolve_chunking(primary.repository.config(), params, source.chunking),
                component: &source.name,
                only: source.only.as_ref(),
                exclude: exclude.as_ref(),
                problems,
                unchanged_files,
            };
            // A parent cut differently would hand down chunk lists cut the
            // old way: correct, but they would never deduplicate again.
            let parent_component = parent_body
                .and_then(|body| {
                    body.component(&source.name)
                        .filter(|component| component.chunking(&body.chunker) == walker.chunking)
                })
                .filter(|component| component.source == source.path.display().to_string());
            let record = match preparation {
                Prepared::Made(_directory, made, kind) => {
                    let mut record = walker.component(made, parent_component.map(|c| c.tree))?;
                    record.kind = *kind;
                    record.source = match &source.kind {
                        SourceKind::Command(command) => command.clone(),
                        _ => source.path.display().to_string(),
                    };
                    record
                }
                _ => walker.component(source, parent_component.map(|c| c.tree))?,
            };
            Ok(Ok(record))
        })
        .collect::<Result<_>>()?;
    let mut components = Vec::new();
    let mut failed_components = Vec::new();
    for (walked, source) in walked.into_iter().zip(&sources.options.components) {
        match walked {
            Ok(record) => components.push(record),
            Err(critical) => failed_components.push((source.name.clone(), critical)),
        }
    }
    Ok(ReadSources {
        components,
        failed_components,
    })
}

/// Makes one repository's snapshot durable: secures what it reuses against
/// a concurrent prune, then signs and writes the manifest.
fn commit(
    destination: &Destination,
    writer: &BlobWriter,
    mut written: WriterStatistics,
    snapshot: Snapshot,
    options: &BackupOptions,
) -> Result<(Id, SnapshotBody, WriterStatistics)> {
    let Destination {
        repository,
        index,
        key,
    } = *destination;
    let roots: Vec<Id> = snapshot
        .components
        .iter()
        .map(|component| component.tree)
        .collect();
    let rescued = secure_against_prune(repository, index, writer.relied_packs(), &roots)?;
    written.add_new(&rescued);
    let body = SnapshotBody {
        version: SnapshotBody::new_version(),
        time: now_rfc3339(),
        host: snapshot.host,
        user: user_name(),
        tags: options.tags.clone(),
        labels: options.labels.clone(),
        parent: snapshot.parent,
        chunker: ChunkerRecord {
            min_size: snapshot.params.min_size,
            avg_size: snapshot.params.avg_size,
            max_size: snapshot.params.max_size,
        },
        components: snapshot.components,
        problems: snapshot.problems,
        cairn_version: env!("CARGO_PKG_VERSION").into(),
    };
    let manifest = SignedManifest::sign(&body, key);
    let id = repository.write_object(ObjectKind::Snapshot, &manifest.encode())?;
    // For the next backup's unchanged files. Only a cache: failing to
    // remember costs that backup its lookups, nothing else.
    let relied: Vec<Id> = writer.relied_packs().into_iter().collect();
    let _ = index.remember_snapshot_packs(&id, &relied);
    Ok((id, body, written))
}

/// A component's exclude globs, compiled; a bad one is named.
fn exclusion_set(source: &ComponentSource) -> Result<Option<globset::GlobSet>> {
    if source.exclude.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in &source.exclude {
        let glob = globset::Glob::new(pattern).map_err(|error| {
            StoreError::Invalid(format!(
                "component {:?}: exclude pattern {pattern:?}: {error}",
                source.name
            ))
        })?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|error| StoreError::Invalid(format!("component {:?}: {error}", source.name)))
}

/// What a component is backed up from once prepared.
enum Prepared {
    /// Its path, as given.
    AsGiven,
    /// A file made for it in a temporary directory (removed on drop).
    Made(tempfile::TempDir, ComponentSource, ComponentKind),
    /// Its command failed: the component is left out, with this reason.
    Failed(String),
}

/// Copies every SQLite database and runs every command before anything is
/// stored: a database that cannot be read fails the backup with the
/// repository untouched; a failed command fails only its component.
fn prepare_components(components: &[ComponentSource]) -> Result<Vec<Prepared>> {
    let mut prepared = Vec::new();
    for source in components {
        let in_component = |error: StoreError| {
            StoreError::Invalid(format!("component {:?}: {error}", source.name))
        };
        let temporary = || {
            tempfile::Builder::new()
                .prefix("cairn-component-")
                .tempdir()
                .map_err(|error| {
                    StoreError::io("creating a temporary directory for a component", error)
                })
        };
        if let Some(why) = &source.failed_before {
            prepared.push(Prepared::Failed(why.clone()));
            continue;
        }
        match &source.kind {
            SourceKind::Files => prepared.push(Prepared::AsGiven),
            SourceKind::Sqlite => {
                let file_name = source.path.file_name().ok_or_else(|| {
                    in_component(StoreError::Invalid("a database must be a file".into()))
                })?;
                let directory = temporary()?;
                let copy = directory.path().join(file_name);
                crate::sqlite::copy_database(&source.path, &copy).map_err(in_component)?;
                let walked = ComponentSource::new(source.name.clone(), copy);
                prepared.push(Prepared::Made(directory, walked, ComponentKind::Sqlite));
            }
            SourceKind::Command(command) => {
                let directory = temporary()?;
                let output = directory.path().join(&source.name);
                match run_command(command, &output, directory.path()) {
                    Ok(()) => {
                        let walked = ComponentSource::new(source.name.clone(), output);
                        prepared.push(Prepared::Made(directory, walked, ComponentKind::Command));
                    }
                    Err(why) => prepared.push(Prepared::Failed(why)),
                }
            }
        }
    }
    Ok(prepared)
}

/// Runs `command` with `sh -c`, its stdout into `output`; on failure, why
/// (with the end of its stderr).
fn run_command(command: &str, output: &Path, scratch: &Path) -> std::result::Result<(), String> {
    let stdout = fs::File::create(output)
        .map_err(|error| format!("cannot create its output file: {error}"))?;
    let stderr_path = scratch.join("stderr");
    let stderr = fs::File::create(&stderr_path)
        .map_err(|error| format!("cannot capture its stderr: {error}"))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|error| format!("command {command:?} could not start: {error}"))?;
    if status.success() {
        return Ok(());
    }
    let said = fs::read(&stderr_path).unwrap_or_default();
    let tail = String::from_utf8_lossy(&said[said.len().saturating_sub(400)..])
        .trim()
        .to_string();
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(if tail.is_empty() {
        format!("command {command:?} {how}")
    } else {
        format!("command {command:?} {how}: {tail}")
    })
}

/// How many times the check before committing may find new marks and copy
/// blobs out of them before giving up (each round only follows a prune
/// that marked data again while the previous round ran).
const SECURE_ROUNDS: usize = 3;

/// Makes sure every pack the new snapshot relies on still exists and is not
/// marked for deletion, just before the manifest is written. Blobs found in
/// a marked pack are copied into new packs (the marked pack is readable
/// until its grace period ends). Returns what the copies added.
///
/// Safety argument (FORMAT.md, deletion protocol): a prune deletes a marked
/// pack only after the grace period and only if no manifest it lists then
/// needs it; a mark written after this check is therefore followed by a
/// manifest listing that includes this snapshot, as long as this check and
/// the manifest write are closer together than the grace period.
pub(crate) fn secure_against_prune(
    repository: &Repository,
    index: &dyn IndexCache,
    mut relied: HashSet<Id>,
    roots: &[Id],
) -> Result<WriterStatistics> {
    let mut total = WriterStatistics::default();
    for _ in 0..SECURE_ROUNDS {
        let (marks, _unreadable) = read_marks(repository, &[])?;
        let marked = marked_packs(&marks);
        let mut present = repository.list_packs()?;
        if let Some(lost) = relied.iter().find(|pack| !present.contains_key(pack)) {
            return Err(StoreError::Conflict(format!(
                "pack {lost}, which this backup reuses data from, was deleted while the backup ran (by a prune whose grace period the backup outlasted); no snapshot was written; run the backup again"
            )));
        }
        if relied.is_disjoint(&marked) {
            return Ok(total);
        }
        present.retain(|pack, _| !marked.contains(pack));
        let rescue = BlobWriter::new(repository, index, present);
        let mut seen = HashSet::new();
        crate::ops::visit_blobs(
            repository,
            index,
            roots.iter().copied(),
            &mut seen,
            &mut |kind, id| {
                let location = index.lookup(id)?.ok_or_else(|| {
                    StoreError::corrupt(
                        format!("blob {id}"),
                        "this backup refers to it but no index file lists it",
                    )
                })?;
                if marked.contains(&location.pack) {
                    let raw = repository.read_blob(&location)?;
                    rescue.add(kind, *id, &raw)?;
                }
                Ok(())
            },
        )
        .map_err(|error| match error {
            // Deleted while we copied out of it: the grace period is over.
            StoreError::Missing { object } => StoreError::Conflict(format!(
                "{object} was deleted by a prune while this backup copied data it reuses out of it \
                 (the backup outlasted the prune's grace period); no snapshot was written; \
                 run the backup again"
            )),
            other => other,
        })?;
        let copied = rescue.finish()?;
        total.add_new(&copied);
        relied.retain(|pack| !marked.contains(pack));
        relied.extend(rescue.relied_packs());
    }
    Err(StoreError::Conflict(format!(
        "prunes kept marking data this backup needs ({SECURE_ROUNDS} rounds of copying); no snapshot was written; run the backup again"
    )))
}

/// Packs present in the repository that no index file lists.
pub(crate) fn unindexed_packs(
    repository: &Repository,
    index: &dyn IndexCache,
    present: &HashMap<Id, u64>,
) -> Result<Vec<PackEntry>> {
    let mut orphans = Vec::new();
    for (&id, &size) in present {
        if index.has_pack(&id)? {
            continue;
        }
        // A pack whose header cannot be read is left for verify to report;
        // adopting it would only spread the damage.
        if let Ok(header) = repository.read_pack_header(&id, size) {
            orphans.push(PackEntry {
                id,
                size,
                blobs: header.blobs,
            });
        }
    }
    Ok(orphans)
}

/// The newest snapshot of the same host with the same component names.
/// Only a manifest signed by a trusted key can be a parent: files taken
/// from it unread end up under this backup's signature.
fn find_parent(
    repository: &Repository,
    host: &str,
    names: &[&str],
    trusted: &[PublicKey],
) -> Result<Option<(Id, SnapshotBody)>> {
    let mut best: Option<(Id, SnapshotBody)> = None;
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        // An unreadable or untrusted manifest is verify's to report, not a
        // reason to fail a backup; it just cannot be a parent.
        let Ok(body) = repository
            .read_manifest(&id)
            .and_then(|manifest| manifest.verified_body(trusted, "parent"))
        else {
            continue;
        };
        if body
            .tags
            .iter()
            .any(|tag| tag == crate::format::manifest::SAFETY_TAG)
        {
            continue;
        }
        let same = body.host == host
            && body.components.len() == names.len()
            && body.components.iter().zip(names).all(|(c, n)| c.name == *n);
        if same && best.as_ref().is_none_or(|(_, best)| body.time > best.time) {
            best = Some((id, body));
        }
    }
    Ok(best)
}

/// Fixed width, so that times compare correctly as strings.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "{}.{:09}Z",
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.subsec_nanosecond()
    )
}

pub(crate) fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at
    // most that many bytes.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "unknown".into();
    }
    let end = buffer
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

pub(crate) fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

struct Walker<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    writer: &'a FanOut<'a>,
    /// This component's packs (see [`BlobWriter::add_in`]).
    group: usize,
    chunking: FileChunking,
    component: &'a str,
    only: Option<&'a BTreeSet<String>>,
    exclude: Option<&'a globset::GlobSet>,
    problems: &'a Mutex<Vec<Problem>>,
    unchanged_files: &'a AtomicU64,
}

/// An entry and the statistics of everything under it.
type Walked = (TreeEntry, ComponentStats);

/// A directory entry's path and its `lstat`, taken once as its window is
/// looked ahead at.
type Looked = (PathBuf, io::Result<Metadata>);

impl Walker<'_> {
    fn problem(&self, path: &str, problem: String) {
        self.problems
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(Problem {
                component: self.component.into(),
                path: path.into(),
                problem,
            });
    }

    /// `parent_tree` is the component's root tree in the parent snapshot.
    fn component(
        &self,
        source: &ComponentSource,
        parent_tree: Option<Id>,
    ) -> Result<ComponentRecord> {
        let meta = fs::metadata(&source.path)
            .map_err(|_| StoreError::SourceMissing(source.path.clone()))?;
        let parent = parent_tree.and_then(|id| self.parent_tree(&id));
        let (kind, tree, stats) = if meta.is_dir() {
            let (tree, stats) = match parent {
                // With a parent most files are expected unchanged, and the
                // walk waits mostly on their metadata.
                Some(_) => {
                    let skip = |relative: &str| self.skipped(relative);
                    std::thread::scope(|scope| {
                        let _warm_up = read_ahead::warm_tree(scope, &source.path, &skip);
                        self.directory(&source.path, "", parent.as_ref())
                    })?
                }
                None => self.directory(&source.path, "", parent.as_ref())?,
            };
            (ComponentKind::Directory, tree, stats)
        } else {
            let name = source
                .path
                .file_name()
                .map(|name| name.as_bytes().to_vec())
                .unwrap_or_else(|| source.name.as_bytes().to_vec());
            let display = String::from_utf8_lossy(&name).into_owned();
            let previous = parent
                .as_ref()
                .and_then(|tree| tree.entries.iter().find(|entry| entry.name == name));
            let walked = self.file(&source.path, &meta, name.clone(), &display, previous)?;
            let (entries, stats) = match walked {
                Some((entry, stats)) => (vec![entry], stats),
                None => (Vec::new(), ComponentStats::default()),
            };
            (
                ComponentKind::File,
                self.store_tree(Tree::new(entries))?,
                stats,
            )
        };
        let root = (kind == ComponentKind::Directory).then(|| RootMetadata {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        });
        Ok(ComponentRecord {
            name: source.name.clone(),
            kind,
            source: source.path.display().to_string(),
            tree,
            stats,
            root,
            fixed_chunk_size: match self.chunking.base {
                Chunking::Fixed(size) => Some(size),
                Chunking::ContentDefined(_) => None,
            },
            sqlite_pages_per_chunk: self.chunking.sqlite_pages_per_chunk,
        })
    }

    fn store_tree(&self, tree: Tree) -> Result<Id> {
        let bytes = tree.encode();
        let id = Id::of(&bytes);
        self.writer.add(BlobKind::Tree, id, &bytes)?;
        Ok(id)
    }

    /// The parent snapshot's tree, if it can be read. A parent that cannot
    /// be read only means reading everything again.
    fn parent_tree(&self, id: &Id) -> Option<Tree> {
        read_tree(self.repository, self.index, id).ok()
    }

    /// Whether the path `relative` to the component's root is left out of
    /// the walk (not in `--only`, or excluded), with all below it.
    fn skipped(&self, relative: &str) -> bool {
        self.only
            .is_some_and(|only| !covered(only, relative) && !leads_to(only, relative))
            || self
                .exclude
                .is_some_and(|exclude| exclude.is_match(relative))
    }

    fn directory(
        &self,
        path: &Path,
        relative: &str,
        parent: Option<&Tree>,
    ) -> Result<(Id, ComponentStats)> {
        let mut names = Vec::new();
        let mut files = HashSet::new();
        match fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(entry) => {
                            // The listing's own file type (no stat): a
                            // hint, not a decision.
                            if entry.file_type().is_ok_and(|kind| kind.is_file()) {
                                files.insert(entry.file_name());
                            }
                            names.push(entry.file_name());
                        }
                        Err(error) => {
                            self.problem(relative, format!("listing failed part way: {error}"))
                        }
                    }
                }
            }
            Err(error) => self.problem(relative, format!("cannot list directory: {error}")),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.retain(|name| !self.skipped(&join_relative(relative, &name.to_string_lossy())));
        // Small files cost a disk round trip each when read one by one; the
        // next window's are asked for while this window's are processed.
        // Files the parent snapshot already holds unchanged are not read at
        // all, so they are not asked for. Each name is joined to the path
        // and stat'ed once, as its window is looked ahead at, and walked
        // with that path and metadata.
        let windows: Vec<&[std::ffi::OsString]> = names.chunks(HINT_WINDOW).collect();
        let look_ahead = |window: Option<&&[std::ffi::OsString]>| -> Vec<Looked> {
            let Some(window) = window else {
                return Vec::new();
            };
            // With a parent, the component's warm-up has most of this
            // metadata in memory already (see `component`).
            let looked: Vec<Looked> = window
                .iter()
                .map(|name| {
                    let path = path.join(name);
                    let meta = fs::symlink_metadata(&path);
                    (path, meta)
                })
                .collect();
            let to_read: Vec<PathBuf> = window
                .iter()
                .zip(&looked)
                .filter(|(name, (_, meta))| {
                    files.contains(*name)
                        && !previous_entry(parent, name)
                            .zip(meta.as_ref().ok())
                            .is_some_and(|(previous, meta)| looks_unchanged(previous, meta))
                })
                .map(|(_, (path, _))| path.clone())
                .collect();
            read_ahead::hint_files(&to_read);
            looked
        };
        let mut looked = look_ahead(windows.first());
        let mut walked: Vec<Option<Walked>> = Vec::with_capacity(names.len());
        for (position, window) in windows.iter().enumerate() {
            let next = look_ahead(windows.get(position + 1));
            let current = std::mem::replace(&mut looked, next);
            walked.extend(self.entries(relative, parent, window, current)?);
        }
        let mut stats = ComponentStats::default();
        let mut entries = Vec::with_capacity(walked.len());
        for (entry, child) in walked.into_iter().flatten() {
            add_stats(&mut stats, &child);
            entries.push(entry);
        }
        Ok((self.store_tree(Tree::new(entries))?, stats))
    }

    /// Walks the entries `names` of a directory, whose paths and metadata
    /// `looked` holds in the same order, in parallel.
    fn entries(
        &self,
        relative: &str,
        parent: Option<&Tree>,
        names: &[std::ffi::OsString],
        looked: Vec<Looked>,
    ) -> Result<Vec<Option<Walked>>> {
        names
            .par_iter()
            .zip(looked)
            .map(|(name, (path, meta))| {
                let display = join_relative(relative, &name.to_string_lossy());
                let previous = previous_entry(parent, name);
                self.entry(&path, meta, name.as_bytes().to_vec(), &display, previous)
            })
            .collect()
    }

    fn entry(
        &self,
        path: &Path,
        meta: io::Result<Metadata>,
        name: Vec<u8>,
        relative: &str,
        previous: Option<&TreeEntry>,
    ) -> Result<Option<Walked>> {
        let meta = match meta {
            Ok(meta) => meta,
            Err(error) => {
                self.problem(relative, format!("cannot read metadata: {error}"));
                return Ok(None);
            }
        };
        let file_type = meta.file_type();
        if file_type.is_file() {
            return self.file(path, &meta, name, relative, previous);
        }
        let mut entry = entry_from_metadata(name, &meta);
        let mut stats = ComponentStats::default();
        if file_type.is_dir() {
            let parent = previous
                .filter(|entry| entry.kind == EntryKind::Directory)
                .and_then(|entry| entry.subtree)
                .and_then(|id| self.parent_tree(&id));
            let (subtree, child) = self.directory(path, relative, parent.as_ref())?;
            entry.kind = EntryKind::Directory;
            entry.subtree = Some(subtree);
            add_stats(&mut stats, &child);
            stats.directories += 1;
        } else if file_type.is_symlink() {
            match fs::read_link(path) {
                Ok(target) => {
                    entry.kind = EntryKind::Symlink;
                    entry.target = Some(target.as_os_str().as_bytes().to_vec());
                    stats.symlinks += 1;
                }
                Err(error) => {
                    self.problem(relative, format!("cannot read symlink: {error}"));
                    return Ok(None);
                }
            }
        } else {
            self.problem(
                relative,
                "skipped: special file (device, socket or FIFO)".into(),
            );
            return Ok(None);
        }
        Ok(Some((entry, stats)))
    }

    fn file(
        &self,
        path: &Path,
        before: &Metadata,
        name: Vec<u8>,
        relative: &str,
        previous: Option<&TreeEntry>,
    ) -> Result<Option<Walked>> {
        if let Some(walked) = self.unchanged(before, &name, previous)? {
            return Ok(Some(walked));
        }
        // O_NONBLOCK and O_NOFOLLOW: if the path was swapped for a FIFO or a
        // symlink since it was listed, opening must neither hang nor follow.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => file,
            Err(error) => {
                self.problem(relative, format!("cannot open: {error}"));
                return Ok(None);
            }
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                self.problem(
                    relative,
                    "skipped: replaced by a non-file while listed".into(),
                );
                return Ok(None);
            }
            Err(error) => {
                self.problem(relative, format!("cannot read metadata: {error}"));
                return Ok(None);
            }
        }
        let chunking = self.chunking.for_file(&file);
        // A large file is read on a thread of its own, ahead of the
        // chunking, so the disk is never idle while the CPU works.
        let stored = if before.len() > READ_AHEAD_FROM {
            std::thread::scope(|scope| {
                self.store_chunks(ReadAhead::start(scope, &file), chunking, before.len())
            })
        } else {
            self.store_chunks(&file, chunking, before.len())
        };
        let StoredContent { chunks, hash, size } = match stored? {
            Ok(stored) => stored,
            Err(error) => {
                self.problem(relative, format!("read failed: {error}"));
                return Ok(None);
            }
        };
        let changed = match file.metadata() {
            Ok(after) => {
                after.len() != before.len()
                    || after.mtime() != before.mtime()
                    || after.mtime_nsec() != before.mtime_nsec()
                    || after.ctime() != before.ctime()
                    || after.ctime_nsec() != before.ctime_nsec()
                    || size != before.len()
            }
            Err(_) => true,
        };
        if changed {
            self.problem(relative, "changed while being read; stored as read".into());
        }
        let mut entry = entry_from_metadata(name, before);
        entry.kind = EntryKind::File;
        entry.size = size;
        let stats = ComponentStats {
            files: 1,
            bytes: size,
            chunks: chunks.len() as u64,
            ..ComponentStats::default()
        };
        entry.chunks = Some(chunks);
        entry.hash = Some(hash);
        Ok(Some((entry, stats)))
    }

    /// Cuts what `reader` gives into chunks and stores them. The outer
    /// error is the repository's (it aborts the backup); the inner one is
    /// the source's (the file is left out as a problem). On success: the
    /// chunk ids, the whole content's hash and its length.
    fn store_chunks(
        &self,
        reader: impl std::io::Read,
        chunking: Chunking,
        expected_length: u64,
    ) -> Result<std::result::Result<StoredContent, std::io::Error>> {
        let mut stream = ChunkStream::with_expected_length(reader, chunking, expected_length);
        let sharing = if expected_length < FRAME_TARGET as u64 {
            FrameSharing::Thread
        } else {
            FrameSharing::Group
        };
        let mut hasher = blake3::Hasher::new();
        let mut chunks = Vec::new();
        // A file of one chunk hashes to that chunk's id, so a lone first
        // chunk is only hashed into the file's hash if more follows (most
        // small files never pay for a second hash of their bytes).
        let mut lone_first: Option<Vec<u8>> = None;
        loop {
            let batch = match stream.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(error) => return Ok(Err(error)),
            };
            if let Some(first) = lone_first.take() {
                hasher.update(&first);
            }
            batch.chunks.par_iter().try_for_each(|chunk| {
                self.writer
                    .add_in(
                        BlobKind::Data,
                        chunk.id,
                        batch.bytes(chunk),
                        self.group,
                        sharing,
                    )
                    .map(|_| ())
            })?;
            if chunks.is_empty() && batch.chunks.len() == 1 {
                lone_first = Some(batch.data.to_vec());
            } else {
                hasher.update_rayon(batch.data);
            }
            chunks.extend(batch.chunks.iter().map(|chunk| chunk.id));
        }
        let size = stream.bytes_read();
        let hash = match (&chunks[..], lone_first) {
            ([only], Some(_)) => *only,
            _ => Id(*hasher.finalize().as_bytes()),
        };
        Ok(Ok(StoredContent { chunks, hash, size }))
    }
}

impl Walker<'_> {
    /// The parent snapshot's entry for a file whose size, mtime, ctime and
    /// inode are unchanged, if every chunk it names is still indexed. ctime
    /// cannot be set by a user, so a rewrite that restores the mtime is
    /// still caught.
    fn unchanged(
        &self,
        meta: &Metadata,
        name: &[u8],
        previous: Option<&TreeEntry>,
    ) -> Result<Option<Walked>> {
        let Some(previous) = previous else {
            return Ok(None);
        };
        let mut current = entry_from_metadata(name.to_vec(), meta);
        let same = looks_unchanged(previous, meta);
        let (Some(chunks), Some(hash), true) = (&previous.chunks, previous.hash, same) else {
            return Ok(None);
        };
        if !self.writer.all_stored(chunks)? {
            return Ok(None);
        }
        self.unchanged_files.fetch_add(1, Ordering::Relaxed);
        current.kind = EntryKind::File;
        current.size = previous.size;
        current.chunks = Some(chunks.clone());
        current.hash = Some(hash);
        let stats = ComponentStats {
            files: 1,
            bytes: previous.size,
            chunks: chunks.len() as u64,
            ..ComponentStats::default()
        };
        Ok(Some((current, stats)))
    }
}

/// Whether a file's metadata now is what the parent snapshot recorded:
/// same size, mtime, ctime and inode. ctime cannot be set by a user, so a
/// rewrite that restores the mtime is still caught.
fn looks_unchanged(previous: &TreeEntry, meta: &Metadata) -> bool {
    let current = entry_from_metadata(Vec::new(), meta);
    previous.kind == EntryKind::File
        && previous.size == meta.len()
        && previous.mtime == current.mtime
        && previous.mtime_nanos == current.mtime_nanos
        && previous.ctime == current.ctime
        && previous.ctime_nanos == current.ctime_nanos
        && previous.inode == current.inode
}

/// The parent tree's entry named `name`, if any.
fn previous_entry<'t>(parent: Option<&'t Tree>, name: &std::ffi::OsStr) -> Option<&'t TreeEntry> {
    let tree = parent?;
    tree.entries
        .binary_search_by(|entry| entry.name.as_slice().cmp(name.as_bytes()))
        .ok()
        .map(|position| &tree.entries[position])
}

fn add_stats(total: &mut ComponentStats, part: &ComponentStats) {
    total.files += part.files;
    total.directories += part.directories;
    total.symlinks += part.symlinks;
    total.bytes += part.bytes;
    total.chunks += part.chunks;
}

fn entry_from_metadata(name: Vec<u8>, meta: &Metadata) -> TreeEntry {
    TreeEntry {
        name,
        kind: EntryKind::File,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        ctime: meta.ctime(),
        ctime_nanos: meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        inode: meta.ino(),
        size: 0,
        chunks: None,
        hash: None,
        subtree: None,
        target: None,
    }
}
