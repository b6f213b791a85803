//! The command line, as clap derive types. Owns flag names and help text;
//! never does any work.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Content-addressed, deduplicating, signed backups",
    after_help = "Exit codes: 0 success; 1 error (nothing done or could not run); 2 bad usage; \
3 backup completed but some files could not be read or changed while read; \
4 damage found (verify) or some files could not be restored (restore)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct GlobalArgs {
    /// Repository directory.
    #[arg(long, global = true, env = "CAIRN_REPO")]
    pub repo: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Secret signing key file (default: the config directory's key for the
    /// repository).
    #[arg(long, global = true, env = "CAIRN_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Trust only this public key (64 hex digits or a key file); repeatable.
    /// Without it, the keys trusted in the config directory are used.
    #[arg(long = "trusted-key", global = true, value_name = "KEY")]
    pub trusted_keys: Vec<String>,
    /// Directory for keys and trusted keys [default: ~/.config/cairn].
    #[arg(long, global = true, env = "CAIRN_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Directory for the local index cache [default: ~/.cache/cairn].
    #[arg(long, global = true, env = "CAIRN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Keep the index in memory only, leaving no cache behind.
    #[arg(long, global = true)]
    pub no_cache: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository and a signing key.
    Init(InitArgs),
    /// Back up one or more components into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots,
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot's components into a directory.
    Restore(RestoreArgs),
    /// Check signatures, structure and (with --read-data) every byte.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Minimum chunk size in bytes.
    #[arg(long, default_value_t = 4096)]
    pub chunk_min: u32,
    /// Average chunk size in bytes.
    #[arg(long, default_value_t = 16384)]
    pub chunk_avg: u32,
    /// Maximum chunk size in bytes.
    #[arg(long, default_value_t = 65536)]
    pub chunk_max: u32,
}

#[derive(Args)]
pub struct BackupArgs {
    /// A path to back up as a component named after its last element.
    pub paths: Vec<PathBuf>,
    /// A named component: NAME=PATH (NAME matches [a-z0-9_.-]+).
    #[arg(long = "component", value_name = "NAME=PATH")]
    pub components: Vec<String>,
    /// A tag for the snapshot; repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A label for the snapshot: KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Host name to record [default: this machine's].
    #[arg(long)]
    pub host: Option<String>,
    /// Read every file, even those unchanged (same size, mtime, ctime and
    /// inode) since the parent snapshot.
    #[arg(long)]
    pub force_read: bool,
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id (a unique prefix will do) or `latest`.
    pub snapshot: String,
    /// COMPONENT or COMPONENT/PATH to list.
    pub path: Option<String>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id (a unique prefix will do) or `latest`.
    pub snapshot: String,
    /// Directory to restore into; each component lands in TARGET/NAME.
    #[arg(long)]
    pub target: PathBuf,
    /// Restore only these components (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "C1,C2")]
    pub only: Vec<String>,
    /// Do not restore these components (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "C3")]
    pub skip: Vec<String>,
    /// Print what would be restored and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Also read, decompress and re-hash every chunk.
    #[arg(long)]
    pub read_data: bool,
}
