//! One module per subcommand; `run` dispatches.

pub(crate) mod backup;
mod cat;
mod copy;
mod diff;
mod drill;
mod dump;
mod find;
mod forget;
mod generated;
mod init;
mod key;
mod lock;
pub(crate) mod ls;
mod mount;
pub(crate) mod plan;
mod prune;
mod repair;
pub(crate) mod restore;
mod restore_report;
pub(crate) mod snapshots;
mod stats;
mod tag;
mod trust;
mod undo_restore;
pub(crate) mod verify;

pub use key::keyring_trust;

use crate::args::Command;
use crate::context::Context;

/// Runs a command and returns its exit code.
pub fn run(context: &Context, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Init(args) => init::run(context, &args),
        Command::Backup(args) => backup::run(context, &args),
        Command::Copy(args) => copy::run(context, &args),
        Command::Snapshots(args) => snapshots::run(context, &args),
        Command::Trust(args) => trust::run(context, &args),
        Command::Ls(args) => ls::run(context, &args),
        Command::Restore(args) => restore::run(context, &args),
        Command::UndoRestore(args) => undo_restore::run(context, &args),
        Command::Verify(args) => verify::run(context, &args),
        Command::Repair(command) => repair::run(context, &command),
        Command::Forget(args) => forget::run(context, &args),
        Command::Prune(args) => prune::run(context, &args),
        Command::Diff(args) => diff::run(context, &args),
        Command::Find(args) => find::run(context, &args),
        Command::Stats(args) => stats::run(context, &args),
        Command::Dump(args) => dump::run(context, &args),
        Command::Plan(command) => plan::run(context, &command),
        Command::Drill(args) => drill::run(context, &args),
        Command::Cat(args) => cat::run(context, &args),
        Command::Mount(args) => mount::run(context, &args),
        Command::Key(command) => key::run(context, &command),
        Command::Serve(args) => crate::serve::run(context, &args),
        Command::Tag(args) => tag::run(context, &args),
        Command::Completions { shell } => generated::completions(shell),
        Command::Man { output } => generated::man_pages(&output),
        Command::Lock(command) => lock::run(context, &command),
    }
}

/// Resolves a snapshot argument (`latest` and `latest~N` chosen under
/// `filter`, `ops::select`) and returns its id with its verified body.
pub fn verified_snapshot(
    context: &Context,
    repository: &cairn_store::Repository,
    spec: &str,
    filter: &cairn_store::ops::select::SnapshotFilter,
) -> anyhow::Result<(cairn_store::Id, cairn_store::format::manifest::SnapshotBody)> {
    let trusted = context.trusted_keys(repository)?;
    let selected = cairn_store::ops::select::select(repository, &trusted, spec, filter)?;
    warn_passed_over(&selected.passed_over);
    let id = selected.id;
    let manifest = repository.read_manifest(&id)?;
    let body = manifest.verified_body(
        repository.id(),
        &trusted,
        &format!("snapshot {}", id.short()),
    )?;
    note_other_host(spec, filter, &id, &body);
    Ok((id, body))
}

/// `latest` means any host's newest unless `--host` (or a plan) says
/// which: when it chose another host's snapshot than this machine's, say
/// so, since in a shared repository that may not be what was meant.
pub fn note_other_host(
    spec: &str,
    filter: &cairn_store::ops::select::SnapshotFilter,
    id: &cairn_store::Id,
    body: &cairn_store::format::manifest::SnapshotBody,
) {
    let this_host = cairn_store::ops::common::host_name();
    if spec.starts_with("latest") && filter.hosts.is_empty() && body.host != this_host {
        eprintln!(
            "cairn: note: {spec} is snapshot {} of host {:?}, not this machine ({this_host:?}); --host chooses the host",
            id.short(),
            body.host
        );
    }
}

/// Says which manifests `latest` passed over, and why.
pub fn warn_passed_over(passed_over: &[cairn_store::repository::SkippedSnapshot]) {
    for (id, why) in passed_over {
        eprintln!("cairn: warning: snapshot {id} cannot be latest: {why}");
    }
}

/// Compares `repository` with the newest snapshots this machine has seen
/// there and remembers what it sees now; returns what has gone without a
/// trusted forget record. A memory that cannot be read or written is
/// said, never fatal: it is a local cache.
pub fn rolled_back(
    context: &Context,
    repository: &cairn_store::Repository,
    trusted: &[cairn_store::format::keys::PublicKey],
) -> Vec<cairn_store::ops::rollback::RolledBack> {
    let checked = context
        .rollback_memory(repository)
        .and_then(|path| match path {
            Some(path) => Ok(cairn_store::ops::rollback::check_and_remember(
                repository, trusted, &path,
            )?),
            None => Ok(Vec::new()),
        });
    checked.unwrap_or_else(|error| {
        eprintln!("cairn: warning: cannot check for a roll-back: {error:#}");
        Vec::new()
    })
}

/// Warns of each rolled-back snapshot.
pub fn warn_rolled_back(rolled_back: &[cairn_store::ops::rollback::RolledBack]) {
    for gone in rolled_back {
        eprintln!(
            "cairn: warning: {}",
            cairn_store::ops::rollback::describe(gone)
        );
    }
}

/// Splits a `NAME=VALUE` argument of `flag`; `form` (e.g. `NAME=PATH`) is
/// what the error says was expected.
pub fn split_spec<'a>(flag: &str, spec: &'a str, form: &str) -> anyhow::Result<(&'a str, &'a str)> {
    spec.split_once('=')
        .ok_or_else(|| crate::context::Usage(format!("{flag} {spec:?}: expected {form}")).into())
}

/// The line `snapshots` and `verify` start with: which kind of repository
/// this is.
pub fn encryption_line(repository: &cairn_store::Repository) -> &'static str {
    if repository.is_encrypted() {
        "repository: encrypted"
    } else {
        "repository: plaintext (not encrypted)"
    }
}
