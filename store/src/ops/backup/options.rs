//! What a caller hands a backup and gets back: the options, the
//! repositories to write to, and each repository's outcome. Plain data;
//! the rules that use it live in the stages.

use super::sources::ComponentSource;
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::blob_writer::WriterStatistics;
use crate::repository::Repository;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Where copies of databases and commands' output are staged while the
    /// backup runs, each in a private directory of its own (the CLI's is
    /// under the cache directory); `None`: the system's temporary
    /// directory, privately too.
    pub staging: Option<PathBuf>,
    /// Secret key files, and directories of them (every `*.key` inside),
    /// that are never stored, wherever a component reaches them: the CLI
    /// names the config directory's `keys/` and the signing key's file.
    /// A file that looks like a cairn secret key anywhere else is left out
    /// too. Either way the outcome names it ([`BackupOutcome::secret_keys_left_out`]).
    pub secret_keys: Vec<PathBuf>,
    /// The backed-up application's version, recorded in the manifest
    /// (`--app-version`); checked with [`check_app_version`](crate::format::manifest::check_app_version).
    pub app_version: Option<String>,
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
    /// Files left out because they are cairn secret keys, as
    /// `component/path`, each with why (see [`BackupOptions::secret_keys`]).
    pub secret_keys_left_out: Vec<(String, String)>,
}

/// One repository a backup writes to, with the key that signs its snapshot.
pub struct Destination<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
    pub key: &'a SigningKey,
    /// This machine's walk cache for the repository
    /// (`<cache>/<repository id>/walk`, FORMAT.md 14.9), or `None` to
    /// keep none: then a host that cannot read the repository's snapshots
    /// (write-only) reads every file on every backup.
    pub walk_cache: Option<&'a Path>,
}
