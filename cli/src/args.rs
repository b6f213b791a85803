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
4 damage found (verify, copy) or some files could not be restored (restore); \
5 restore refused by a preflight check (untrusted, too-old, missing-chunks, version-ahead, space); \
6 a concurrent prune deleted data this backup reused (nothing written; run it again); \
7 a critical component failed (the other components were stored); \
8 a backup into several repositories failed in some of them (the others hold their snapshot); \
9 restore: the target could not be written (disk full, quota, read-only; rolled back or nothing half-built left in place); \
10 a restore's check failed and the target was rolled back; \
11 an encrypted repository could not be opened (no key slot opens with the passphrase given, or the read key is needed and this host holds a write-only key)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes; `--help` lists them under a heading of
/// their own, after the subcommand's own options.
#[derive(Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository: a directory; s3://BUCKET/PREFIX, optionally with its
    /// own settings: ?region=R&profile=P&endpoint=URL&storage_class=C
    /// &path_style=true&retries=N&read_timeout=SECONDS&credentials_file=PATH
    /// &access_key_id_env=VAR&secret_access_key_env=VAR (credentials
    /// otherwise from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE
    /// and ~/.aws/credentials, web identity, container, or the EC2 instance
    /// role; region from AWS_REGION or the profile); or
    /// http(s)://HOST:PORT/NAME served by `cairn serve` (requests signed
    /// with this host's key). Repeat it for `backup` (one pass
    /// writes a snapshot into each), `restore` (later ones, in order of
    /// preference, serve what the first cannot give intact) and `verify`
    /// (each audited; damage looked for intact in the others).
    #[arg(long, global = true, env = "CAIRN_REPO", value_name = "LOCATION")]
    pub repo: Vec<String>,
    /// URL of an S3-compatible service for s3:// repositories (e.g.
    /// http://127.0.0.1:9000); Amazon S3 when not given.
    #[arg(long, global = true, env = "CAIRN_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// s3:// repositories in a versioned bucket: open the repository as it
    /// was at TIME (RFC 3339, e.g. 2026-12-06T13:00:00Z), reading the newest
    /// version of each object at or before it and ignoring later delete
    /// markers; read-only (restore, verify, ls, snapshots, cat). With
    /// `repair undelete`: the time to go back to.
    #[arg(long, global = true, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Never delete anything in the repository: every delete is refused,
    /// as a backup host's credentials without delete permission would
    /// (docs/S3.md). Backups need none.
    #[arg(long, global = true, env = "CAIRN_NO_DELETE")]
    pub no_delete: bool,
    /// Hold uploads to every repository to RATE (KiB/s, or with a unit:
    /// 512KiB, 4MiB, 1GiB).
    #[arg(long, global = true, env = "CAIRN_LIMIT_UPLOAD", value_name = "RATE",
          value_parser = cairn_store::backend::parse_rate)]
    pub limit_upload: Option<u64>,
    /// Hold downloads from every repository to RATE (KiB/s, or with a
    /// unit: 512KiB, 4MiB, 1GiB).
    #[arg(long, global = true, env = "CAIRN_LIMIT_DOWNLOAD", value_name = "RATE",
          value_parser = cairn_store::backend::parse_rate)]
    pub limit_download: Option<u64>,
    /// Print machine-readable JSON instead of text: results on stdout,
    /// progress lines and errors as JSON objects on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Report progress even when stderr is not a terminal: a line of text
    /// every few seconds (JSON lines with --json, which report anyway).
    #[arg(long, global = true)]
    pub progress: bool,
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
    /// backup, verify, prune, forget --prune and drill: write Prometheus
    /// text-format metrics to PATH (atomically; for node_exporter's
    /// textfile collector).
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Read the passphrase of an encrypted repository from this file (its
    /// first line end is dropped).
    #[arg(long, global = true, env = "CAIRN_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and take its output as the passphrase.
    #[arg(
        long,
        global = true,
        env = "CAIRN_PASSWORD_COMMAND",
        value_name = "COMMAND"
    )]
    pub password_command: Option<String>,
    /// Argon2id memory for new passphrase key slots, in MiB [default: 32].
    #[arg(
        long = "kdf-memory",
        global = true,
        env = "CAIRN_KDF_MEMORY_MIB",
        value_name = "MIB"
    )]
    pub kdf_memory: Option<u32>,
    /// Argon2id passes for new passphrase key slots [default: 6].
    #[arg(long, global = true, env = "CAIRN_KDF_PASSES", value_name = "N")]
    pub kdf_passes: Option<u32>,
    /// The AEAD for new encrypted packs [default: aes-256-gcm where the
    /// processor accelerates AES, else xchacha20poly1305]. An operator's
    /// knob (a CPU whose AES is slow or untrusted, a compliance rule);
    /// readers open both kinds of pack whatever it says.
    #[arg(
        long = "pack-cipher",
        global = true,
        env = "CAIRN_PACK_CIPHER",
        value_name = "CIPHER"
    )]
    pub pack_cipher: Option<PackCipherArg>,
}

/// `--pack-cipher` / `CAIRN_PACK_CIPHER` (FORMAT.md 17.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PackCipherArg {
    /// `CAIRNPE2` packs.
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// `CAIRNPE1` packs.
    #[value(name = "xchacha20poly1305")]
    Xchacha20poly1305,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository and a signing key.
    Init(InitArgs),
    /// Back up one or more components into a new snapshot.
    Backup(BackupArgs),
    /// Copy snapshots from one repository into another, storing only the
    /// chunks the target lacks; each copied manifest is signed for the
    /// target with the target's key.
    Copy(CopyArgs),
    /// Trust public keys for this repository on this machine (snapshots
    /// and records they sign for it are accepted from then on).
    Trust(TrustArgs),
    /// List snapshots (or, with --forgotten, the record of forgotten ones).
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot's components into a directory.
    Restore(RestoreArgs),
    /// Put a target back as it was before a restore, from the restore's
    /// safety snapshot.
    UndoRestore(UndoRestoreArgs),
    /// Check signatures, structure and (with --read-data) every byte.
    Verify(VerifyArgs),
    /// Rebuild what can be rebuilt from the repository's own data.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Forget snapshots by a retention policy or by id (recorded in the
    /// repository); their space comes back with `prune`.
    Forget(ForgetArgs),
    /// Give back the space of data no snapshot needs: mark it, and delete
    /// what an earlier prune marked once its grace period has passed.
    Prune(PruneArgs),
    /// Write one file of a snapshot to stdout, checked as it is read
    /// (e.g. `cairn cat latest pg | pg_restore -d app`).
    Cat(CatArgs),
    /// What changed between two snapshots (files added, removed, changed,
    /// metadata only), or between a snapshot and a live directory (--live).
    Diff(DiffArgs),
    /// Find files by name or path glob across snapshots, newest first.
    Find(FindArgs),
    /// Space used: by the repository and each component, by one snapshot,
    /// or what a retention policy (--keep-*) would free.
    Stats(StatsArgs),
    /// Write a component or a directory of a snapshot as a tar or zip
    /// archive, every chunk checked as it is read.
    Dump(DumpArgs),
    /// Show the repository as a read-only filesystem (FUSE) at MOUNTPOINT:
    /// snapshots by id, by host and time, and by component; every read is
    /// checked. Runs in the foreground until Ctrl-C, SIGTERM or `umount`.
    Mount(MountArgs),
    /// Work with plan files (cairn.toml).
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Rehearse a restore: every component into a scratch directory, every
    /// file's hash checked, each kind's own check run, each timed; one JSON
    /// line per drill appended to a history file.
    Drill(DrillArgs),
    /// Add, remove or set tags and labels on existing snapshots (a signed
    /// annotation; the manifest itself never changes).
    Tag(TagArgs),
    /// Manage an encrypted repository's keys: key slots, hosts, the
    /// keyring of writers' signing keys, revocation and rotation.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run cairn as an HTTP service: with --plan, the snapshot API
    /// (backups, restores, verifies and drills as jobs), /health,
    /// /metrics and a status page at / (README, "cairn serve"); with
    /// --repo PATH [--append-only], the repository itself for other
    /// machines, which use it as `--repo http(s)://HOST:PORT/NAME`, each
    /// request signed with the client's cairn key.
    Serve(ServeArgs),
    /// Print a shell completion script (e.g. `cairn completions bash >
    /// /etc/bash_completion.d/cairn`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (cairn.1 and one per subcommand, cairn-backup.1 ...)
    /// into a directory.
    Man {
        /// The directory to write them into (created if missing).
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
    },
    /// S3 Object Lock of a repository made with `init --object-lock`.
    #[command(subcommand)]
    Lock(LockCommand),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The plan whose backups, restores, verifies and drills the API runs
    /// (its repository, components, hooks and `[serve] max_age`).
    #[arg(long, value_name = "PATH")]
    pub plan: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the
    /// address is printed as `listening on URL`).
    #[arg(long, default_value = "127.0.0.1:8470", value_name = "ADDR")]
    pub listen: String,
    /// Bearer tokens, one per line: `read-only:TOKEN`, `operator:TOKEN`,
    /// or `ROLE:blake3:HEX` (the token's BLAKE3 hash). CAIRN_SERVE_TOKEN
    /// adds one operator token. Every route but /health and /metrics
    /// needs one.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serving --repo PATH: clients may create, read and list, never
    /// delete or overwrite; only --allow-prune-key keys may delete (or
    /// prune on this machine).
    #[arg(long, conflicts_with = "plan")]
    pub append_only: bool,
    /// Serving --repo PATH: a maintenance key (64 hex digits or a key
    /// file) that may delete under --append-only, for `cairn prune` from
    /// another machine; repeatable. Clients are trusted by --trusted-key
    /// and this machine's list for the repository (`cairn trust`).
    #[arg(long = "allow-prune-key", value_name = "KEY", conflicts_with = "plan")]
    pub allow_prune_keys: Vec<String>,
    /// Serving --repo PATH: the repository's name in clients' URLs
    /// [default: its directory's name].
    #[arg(long, value_name = "NAME", conflicts_with = "plan")]
    pub name: Option<String>,
}

#[derive(Subcommand)]
pub enum LockCommand {
    /// Retain every object a kept snapshot may need (all but packs a
    /// deletion mark names, and the marks) until at least DAYS from now.
    /// Run it from the maintenance role, more often than DAYS.
    Extend {
        /// Days from now [default: the repository's --object-lock DAYS].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List the key slots (and, with the read key, the keyring's keys).
    List,
    /// Add a key slot: a new passphrase (CAIRN_NEW_PASSWORD or a prompt),
    /// a recipient's X25519 public key, or a host's request line.
    Add(KeyAddArgs),
    /// Remove a key slot (never the last one that holds the read key).
    Remove {
        /// The slot's id or a unique prefix of it.
        slot: String,
    },
    /// Change the passphrase: a new passphrase slot, then the old one
    /// removed; with --signing-key, re-seal this host's signing key file.
    Passwd(KeyPasswdArgs),
    /// Print a paper backup of the repository's keys (keep it offline).
    Export,
    /// Add a passphrase slot from a paper backup (`cairn key export`),
    /// when every passphrase is lost.
    Import {
        /// The export file.
        file: PathBuf,
    },
    /// On a new backup host: make its signing key and identity and print
    /// the request line for `cairn key add --host` on the owner's machine.
    HostInit(KeyHostInitArgs),
    /// Revoke a writer's signing key: its snapshots present now stay
    /// trusted, any later one is refused.
    Revoke {
        /// The public signing key (64 hex digits or a key file).
        key: String,
    },
    /// Give this host a new signing key; the old one is revoked, its
    /// snapshots kept. With --read, rotate the repository's read key
    /// instead.
    Rotate(KeyRotateArgs),
}

#[derive(Args)]
pub struct KeyAddArgs {
    /// A passphrase slot (the new passphrase from CAIRN_NEW_PASSWORD or a
    /// prompt).
    #[arg(long, conflicts_with_all = ["recipient", "host"])]
    pub passphrase: bool,
    /// A slot for this X25519 public key (64 hex digits).
    #[arg(long, value_name = "PUBLIC_KEY", conflicts_with = "host")]
    pub recipient: Option<String>,
    /// A host's request line from `cairn key host-init`: a slot for its
    /// identity, and its signing key added to the keyring.
    #[arg(long, value_name = "REQUEST")]
    pub host: Option<String>,
    /// The slot holds no read key: the holder backs up but reads nothing.
    #[arg(long)]
    pub write_only: bool,
    /// A name for the slot, for `key list`.
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Args)]
pub struct KeyPasswdArgs {
    /// Re-seal this host's signing key file under a new passphrase
    /// instead (CAIRN_NEW_PASSWORD or a prompt).
    #[arg(long)]
    pub signing_key: bool,
}

#[derive(Args)]
pub struct KeyRotateArgs {
    /// Rotate the read key instead of this host's signing key: a new read
    /// key for what is written from now on, given to every key slot with
    /// every earlier one (so old snapshots restore); a removed slot gets
    /// nothing. Needs the read key and an owner key; every passphrase slot
    /// must open with this passphrase.
    #[arg(long, conflicts_with = "protect")]
    pub read: bool,
    /// Seal the new signing key file under a passphrase
    /// (CAIRN_NEW_PASSWORD or a prompt).
    #[arg(long)]
    pub protect: bool,
}

#[derive(Args)]
pub struct KeyProtectArgs {
    /// Seal the new signing key file under a passphrase
    /// (CAIRN_NEW_PASSWORD or a prompt).
    #[arg(long)]
    pub protect: bool,
}

#[derive(Args)]
pub struct KeyHostInitArgs {
    /// Seal the new signing key file under a passphrase
    /// (CAIRN_NEW_PASSWORD or a prompt).
    #[arg(long)]
    pub protect: bool,
    /// The host's name in the request [default: this host's name].
    #[arg(long)]
    pub label: Option<String>,
    /// The owner's public signing key (64 hex digits or a key file), from
    /// `cairn key list` on the owner's machine: trusted for the repository
    /// here, so this host encrypts only to keys that owner endorsed.
    /// Without it, the owner of the first endorsed slot opened here is
    /// remembered.
    #[arg(long, value_name = "KEY")]
    pub owner: Option<String>,
}

#[derive(Args)]
pub struct TrustArgs {
    /// Public keys: 64 hex digits, or files holding them.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

/// Which snapshots `latest` (and `latest~N`) chooses among: flattened into
/// every command that takes a snapshot. A snapshot named by id is taken
/// as named.
#[derive(Args, Clone, Debug, Default)]
pub struct SnapshotFilterArgs {
    /// Only snapshots of this host; repeatable (any of them). Without it,
    /// any host's (or, with --plan, the plan's host's).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots that carry this tag now (annotations included);
    /// repeatable (every one).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots that hold this component; repeatable (every one).
    #[arg(long = "component", value_name = "NAME")]
    pub components: Vec<String>,
}

impl SnapshotFilterArgs {
    pub fn filter(&self) -> cairn_store::ops::select::SnapshotFilter {
        cairn_store::ops::select::SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            components: self.components.clone(),
            at: None,
        }
    }
}

#[derive(Args)]
pub struct TagArgs {
    /// The snapshots to change: ids, prefixes, `latest` or `latest~N`
    /// (chosen under --host/--tag/--component).
    #[arg(required = true, value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Add this tag; repeatable.
    #[arg(long = "add", value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag; repeatable.
    #[arg(long = "remove", value_name = "TAG")]
    pub remove: Vec<String>,
    /// Replace every tag with these; repeatable.
    #[arg(long = "set", value_name = "TAG", conflicts_with = "clear_tags")]
    pub set: Vec<String>,
    /// Remove every tag.
    #[arg(long)]
    pub clear_tags: bool,
    /// Add (or change) a label: KEY=VALUE; repeatable.
    #[arg(long = "add-label", value_name = "KEY=VALUE")]
    pub add_labels: Vec<String>,
    /// Remove the label KEY; repeatable.
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
    /// Replace every label with these: KEY=VALUE; repeatable.
    #[arg(long = "set-label", value_name = "KEY=VALUE")]
    pub set_labels: Vec<String>,
    /// Say what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct CatArgs {
    /// Snapshot id, prefix, `latest` or `latest~N`.
    pub snapshot: String,
    /// COMPONENT for a file, sqlite or command component, or
    /// COMPONENT/PATH for a file inside a directory component.
    pub path: String,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older snapshot (id, prefix or `latest`).
    pub older: String,
    /// The newer snapshot (id, prefix or `latest`).
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    pub newer: Option<String>,
    /// Compare the snapshot with a live file or directory instead: NAME=PATH
    /// for component NAME, or PATH for the component backed up from PATH
    /// (or the snapshot's only component).
    #[arg(long, value_name = "[NAME=]PATH")]
    pub live: Option<String>,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct FindArgs {
    /// A glob: without `/` it matches names (`*.md`), with one the whole
    /// COMPONENT/PATH (`memory/notes/**`); `*` stops at `/`, `**` does not.
    pub pattern: String,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct StatsArgs {
    /// One snapshot (id, prefix or `latest`): its restore size and the
    /// bytes only it holds.
    #[arg(conflicts_with_all = [
        "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
        "keep_yearly", "keep_within", "keep_tags",
    ])]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
    // Last: its help heading applies to every argument after it.
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// The archive formats of `cairn dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DumpFormat {
    Tar,
    Zip,
}

#[derive(Args)]
pub struct DumpArgs {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// COMPONENT, or COMPONENT/PATH for a directory inside it.
    pub path: String,
    /// The archive format.
    #[arg(long, value_enum, default_value = "tar")]
    pub format: DumpFormat,
    /// Write the archive to FILE (removed again if the dump fails) instead
    /// of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct MountArgs {
    /// An existing empty directory to show the repository in.
    pub mountpoint: PathBuf,
    /// Let other users than the one mounting read the view (FUSE
    /// `allow_other`; as a non-root user it needs `user_allow_other` in
    /// /etc/fuse.conf). File modes still apply.
    #[arg(long)]
    pub allow_other: bool,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct DrillArgs {
    /// The plan file: its repository and each component's `check`.
    #[arg(long, value_name = "PATH")]
    pub plan: Option<PathBuf>,
    /// The snapshot to rehearse (id, prefix, `latest` or `latest~N`).
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub snapshot: String,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
    /// Where to append the drill's JSON line [default: CONFIG_DIR/drill-history.jsonl].
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
    /// Directory in which to create the scratch directory [default: the
    /// system's temporary directory]; the scratch directory is removed
    /// afterwards.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Validate a plan file, naming each mistake with its line.
    Check {
        /// The plan file.
        #[arg(long, default_value = "cairn.toml", value_name = "PATH")]
        plan: PathBuf,
    },
}

#[derive(Args)]
pub struct SnapshotsArgs {
    /// List the forget records instead: what was forgotten, when, by whom,
    /// under which policy (only records signed by a trusted key).
    #[arg(long)]
    pub forgotten: bool,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

/// The retention policy `forget` applies and `stats` prices: one set of
/// flags, so the two cannot read the same words differently.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Retention policy")]
pub struct RetentionArgs {
    /// Keep the N newest snapshots.
    // Negative counts are parsed (and refused naming the flag) rather than
    // taken for flags of their own.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this span of the group's newest
    /// (e.g. 30d, 1y6m, 2w, 12h).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag; repeatable.
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Apply the policy separately per group: a comma list of host,
    /// components (those the backup was asked for: held or failed), tags;
    /// or "none". With --plan: the plan's host and components.
    #[arg(long, default_value = "host,components", value_name = "FIELDS")]
    pub group_by: String,
    /// Keep a restore's safety snapshots (tag pre-restore) taken within
    /// this span of now, and forget older ones; the --keep-* rules do not
    /// apply to them. "forever" keeps them all.
    #[arg(long, default_value = "14d", value_name = "DURATION")]
    pub keep_safety: String,
}

#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to forget by id or prefix (instead of a policy).
    #[arg(value_name = "ID", conflicts_with_all = [
        "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
        "keep_yearly", "keep_within", "keep_tags",
    ])]
    pub snapshots: Vec<String>,
    /// Say what would be kept and forgotten, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a policy to forget every snapshot of a group.
    #[arg(long)]
    pub allow_empty: bool,
    /// Then prune, with the options below.
    #[arg(long)]
    pub prune: bool,
    /// Use the plan file's repository and, when no --keep-* flag is given,
    /// its [retention] policy.
    #[arg(long, value_name = "PATH")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub prune_options: PruneTuning,
    // Last: its help heading applies to every argument after it.
    #[command(flatten)]
    pub retention: RetentionArgs,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Print the plan (packs to delete, mark and repack; bytes freed and
    /// rewritten); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub tuning: PruneTuning,
}

#[derive(Args)]
pub struct PruneTuning {
    /// How long marked data waits before deletion, and how old data must be
    /// before it is marked (a backup running longer than this while a prune
    /// marks data it reuses fails instead of writing a broken snapshot).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub grace: String,
    /// Unused space to tolerate in packs that still hold live data, as a
    /// percentage of the repository (5%), a size (500M) or "unlimited";
    /// packs beyond it are repacked.
    #[arg(long, default_value = "5%", value_name = "LIMIT")]
    pub max_unused: String,
}

#[derive(Args)]
pub struct CopyArgs {
    /// The repository to copy from.
    #[arg(long, value_name = "REPO")]
    pub from: String,
    /// The repository to copy into (made with `cairn init --like FROM`, it
    /// chunks as FROM does, so later backups into it deduplicate against
    /// the copies).
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// Snapshots to copy: ids, unique prefixes or `latest` [default: every
    /// snapshot of FROM signed by a trusted key that TO lacks].
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Say what would be copied (snapshots, blobs, bytes to read); write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// s3:// only: create (or set up) the bucket with versioning and S3
    /// Object Lock, every object retained at least DAYS after it is written
    /// (recorded in the config; `cairn lock extend` keeps live data locked).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub object_lock: Option<u32>,
    /// With --object-lock: governance (a role allowed to bypass it may
    /// still delete) or compliance (nobody can, not even the account root).
    #[arg(long, value_name = "MODE", requires = "object_lock", default_value = "governance",
          value_parser = ["governance", "compliance"])]
    pub lock_mode: String,
    /// zstd level for compressible chunks (1 = fastest, 19 = smallest).
    #[arg(long, default_value_t = cairn_store::format::config::DEFAULT_ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Take the chunker and compression settings of repository REPO (the
    /// new repository still gets its own id), so that `cairn copy` between
    /// the two keeps deduplicating.
    #[arg(long, value_name = "REPO", conflicts_with_all = [
        "chunk_min", "chunk_avg", "chunk_max", "compression_level",
    ])]
    pub like: Option<String>,
    /// Store everything unencrypted (blobs named by plain BLAKE3): anyone
    /// who can read the storage reads every file, name and command line.
    #[arg(long, conflicts_with = "recipient")]
    pub plaintext: bool,
    /// Wrap the new repository's keys for this X25519 public key (64 hex
    /// digits) instead of a passphrase.
    #[arg(long, value_name = "HEX")]
    pub recipient: Option<String>,
}

#[derive(Args)]
pub struct BackupArgs {
    /// A path to back up as a component named after its last element.
    pub paths: Vec<PathBuf>,
    /// A named component: NAME=PATH (NAME matches [a-z0-9_.-]+).
    #[arg(long = "component", value_name = "NAME=PATH")]
    pub components: Vec<String>,
    /// A live SQLite database as a component: NAME=PATH. It is copied
    /// consistently with SQLite's online backup API while writers carry
    /// on; a restore runs SQLite's integrity check on it.
    #[arg(long = "sqlite", value_name = "NAME=PATH")]
    pub databases: Vec<String>,
    /// A component made of what a shell command writes to stdout (e.g.
    /// `db=pg_dump -Fc app`): NAME=COMMAND. If the command cannot start or
    /// exits non-zero, that component is left out and the snapshot lists
    /// why (exit code 3, or 7 if it is --critical).
    #[arg(long = "command", value_name = "NAME=COMMAND")]
    pub commands: Vec<String>,
    /// Report the backup as failed (exit code 7) if this component fails;
    /// the others are still stored. Repeatable.
    #[arg(long = "critical", value_name = "NAME")]
    pub critical: Vec<String>,
    /// Cut component NAME into chunks as PROFILE says: NAME=PROFILE, with
    /// PROFILE one of `default` (SQLite database files in chunks of their
    /// own pages, as the repository's config says; content-defined chunks
    /// for everything else), `content-defined` (every file), `pages` (as
    /// default, one page per chunk even if the config names no page count)
    /// or `fixed:SIZE` (e.g. fixed:4K, every file, for files changed in
    /// place in aligned blocks). Repeatable.
    #[arg(long = "chunking", value_name = "NAME=PROFILE")]
    pub chunking: Vec<String>,
    /// Run COMMAND (sh -c) before component NAME is backed up: NAME=COMMAND.
    /// A failing before-hook fails its component. Repeatable.
    #[arg(long = "before", value_name = "NAME=COMMAND")]
    pub before: Vec<String>,
    /// Run COMMAND after the backup with the component's result in
    /// CAIRN_RESULT (ok or failed): NAME=COMMAND. Repeatable.
    #[arg(long = "after", value_name = "NAME=COMMAND")]
    pub after: Vec<String>,
    /// Leave out paths matching GLOB (relative to the component root) in
    /// every directory component given by flags; repeatable.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Run the plan file's components, with its repository (unless --repo
    /// or CAIRN_REPO says otherwise), tags, labels and hooks; flags add to
    /// it. See `cairn plan check`.
    #[arg(long, value_name = "PATH")]
    pub plan: Option<PathBuf>,
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
    /// The backed-up application's version, recorded in the snapshot
    /// (`restore --current-version` compares it); replaces the plan's
    /// `app_version`.
    #[arg(long, value_name = "VERSION")]
    pub app_version: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id (a unique prefix will do), `latest` or `latest~N`.
    pub snapshot: String,
    /// COMPONENT or COMPONENT/PATH to list.
    pub path: Option<String>,
    /// Long listing: mode, owner and group, size in human units, mtime.
    #[arg(long, short = 'l')]
    pub long: bool,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id (a unique prefix will do), `latest` or `latest~N`
    /// [default: latest]. `latest` is the newest that passes --host,
    /// --tag, --component and holds every --only component.
    #[arg(default_value = "latest")]
    pub snapshot: String,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
    /// Directory to restore into; each component lands in TARGET/NAME (a
    /// file or database component as TARGET/NAME/FILE, keeping its name).
    #[arg(long, required_unless_present = "to_source")]
    pub target: Option<PathBuf>,
    /// Restore each component to the path it was backed up from (recorded
    /// in the snapshot); --component-target still wins for its component.
    /// Refused with --allow-untrusted: only a trusted snapshot may say
    /// where to write.
    #[arg(long, conflicts_with = "allow_untrusted")]
    pub to_source: bool,
    /// Restore only these components (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "C1,C2")]
    pub only: Vec<String>,
    /// Do not restore these components (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "C3")]
    pub skip: Vec<String>,
    /// Restore only paths matching GLOB (relative to the component root,
    /// e.g. 'notes/**/*.md'; a matching directory brings all below it).
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out paths matching GLOB (a matching directory and all below it).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Restore component NAME into DIR instead of TARGET/NAME; repeatable.
    #[arg(long = "component-target", value_name = "NAME=DIR")]
    pub component_targets: Vec<String>,
    /// Delete files in the target that the snapshot does not have (within
    /// the selected components and paths).
    #[arg(long)]
    pub delete: bool,
    /// Print the plan (what would be created, updated, deleted and left
    /// alone, and how many bytes would be fetched) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// DANGEROUS: do not save what the restore overwrites or deletes. A
    /// failed restore then cannot be rolled back, nor a finished one undone.
    #[arg(long)]
    pub no_safety_snapshot: bool,
    /// Refuse (verdict too-old) a snapshot older than this: 90m, 36h, 7d, 2w.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Restore even if the snapshot's signature is not by a trusted key or
    /// does not verify.
    #[arg(long)]
    pub allow_untrusted: bool,
    /// Restore even if the snapshot is older than --max-age.
    #[arg(long)]
    pub allow_too_old: bool,
    /// Restore what can be restored even if chunks or trees are missing.
    #[arg(long)]
    pub allow_missing_chunks: bool,
    /// The application version running here: a snapshot that records a
    /// newer one is refused (verdict version-ahead). Versions compare as
    /// semver when both are; otherwise only equal passes.
    #[arg(long, value_name = "VERSION")]
    pub current_version: Option<String>,
    /// Restore even a snapshot taken by a newer application version.
    #[arg(long)]
    pub allow_version_ahead: bool,
    /// Restore the newest snapshot taken at or before TIME (instead of
    /// naming one): RFC 3339 (2026-12-01T14:00:00Z) or local time
    /// (2026-12-01 14:00, in TZ or the system's zone). Only snapshots that
    /// hold the --only components count.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Write a report for the incident ticket: JSON to PATH and Markdown
    /// to PATH with the extension .md (snapshot and manifest hash, signer,
    /// verdicts, plan summary, timings, hooks, safety snapshot).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Restore even if a target filesystem has fewer free bytes or inodes
    /// than the restore writes (the `space` verdict).
    #[arg(long)]
    pub allow_low_space: bool,
    /// As root, give restored files the owner and group the snapshot
    /// records (as tar's --same-owner). By default what the restore
    /// creates belongs to whoever runs it, and existing owners are kept.
    #[arg(long)]
    pub same_owner: bool,
    /// Apply the set-user-id, set-group-id and sticky bits the snapshot
    /// records. By default they are cleared: a snapshot does not decide
    /// which programs run with raised privileges here.
    #[arg(long)]
    pub keep_special_bits: bool,
    /// The plan file: its repository (unless --repo says otherwise) and its
    /// restore hooks (the `[restore]` table and each component's).
    #[arg(long, value_name = "PATH")]
    pub plan: Option<PathBuf>,
    /// Run CMD (sh -c) before anything is written, e.g. to stop the
    /// service; if it fails, nothing is touched. Replaces the plan's.
    #[arg(long, value_name = "CMD")]
    pub before: Option<String>,
    /// Run CMD on the restored data (a health check, migrations); if it
    /// fails, the target is rolled back from the safety snapshot (exit 10).
    /// Replaces the plan's.
    #[arg(long, value_name = "CMD")]
    pub check: Option<String>,
    /// Run CMD at the end, always (even when the restore or the check
    /// failed), with CAIRN_RESULT set, e.g. to start the service again.
    /// Replaces the plan's.
    #[arg(long, value_name = "CMD")]
    pub after: Option<String>,
    /// Overwrite or delete existing files without asking. Without it, such
    /// a restore shows what it would lose and asks on a terminal, and is
    /// refused (exit 2) when there is no terminal to ask on.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Args)]
pub struct UndoRestoreArgs {
    /// The safety snapshot a restore printed.
    pub safety_snapshot: String,
}

#[derive(Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers alone (index files and the
    /// local cache may all be gone), then remove the old index files.
    Index,
    /// For each snapshot that needs lost data, write a new signed snapshot
    /// that leaves out only the damaged files (and lists them); the
    /// original is kept.
    Snapshots {
        /// Also read every pack, so corrupt (not only missing) chunks count
        /// as lost.
        #[arg(long)]
        read_data: bool,
    },
    /// s3:// repositories in a versioned bucket: put back the objects delete
    /// markers hide, by removing the markers (with --as-of TIME, only those
    /// made after TIME, for objects that existed then).
    Undelete,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Also read, decompress and re-hash every chunk.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read back only part of the data: a random percentage (`10%`), a
    /// deterministic slice (`2/7`: seven nightly runs cover every pack once)
    /// or a byte budget (`5G`).
    #[arg(long, value_name = "SPEC")]
    pub read_data_subset: Option<String>,
    /// Audit only this snapshot (id, prefix, `latest` or `latest~N`);
    /// repeatable.
    #[arg(long = "snapshot", value_name = "ID")]
    pub snapshots: Vec<String>,
    /// --component: audit only this component of the audited snapshots
    /// (and `latest` must hold it); --host, --tag: which snapshot
    /// `--snapshot latest` means.
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}
