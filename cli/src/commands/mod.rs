//! One module per subcommand; `run` dispatches.

mod backup;
mod cat;
mod copy;
mod drill;
mod forget;
mod init;
mod ls;
mod plan;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod undo_restore;
mod verify;

use crate::args::Command;
use crate::context::Context;

/// Runs a command and returns its exit code.
pub fn run(context: &Context, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Init(args) => init::run(context, &args),
        Command::Backup(args) => backup::run(context, &args),
        Command::Copy(args) => copy::run(context, &args),
        Command::Snapshots(args) => snapshots::run(context, &args),
        Command::Ls(args) => ls::run(context, &args),
        Command::Restore(args) => restore::run(context, &args),
        Command::UndoRestore(args) => undo_restore::run(context, &args),
        Command::Verify(args) => verify::run(context, &args),
        Command::Repair(command) => repair::run(context, &command),
        Command::Forget(args) => forget::run(context, &args),
        Command::Prune(args) => prune::run(context, &args),
        Command::Plan(command) => plan::run(context, &command),
        Command::Drill(args) => drill::run(context, &args),
        Command::Cat(args) => cat::run(context, &args),
    }
}

/// Resolves a snapshot argument and returns its id with its verified body.
pub fn verified_snapshot(
    context: &Context,
    repository: &cairn_store::Repository,
    spec: &str,
) -> anyhow::Result<(cairn_store::Id, cairn_store::format::manifest::SnapshotBody)> {
    let trusted = context.trusted_keys()?;
    let id = repository.resolve_snapshot_trusted(spec, Some(&trusted))?;
    let manifest = repository.read_manifest(&id)?;
    let body = manifest.verified_body(&trusted, &format!("snapshot {}", id.short()))?;
    Ok((id, body))
}

/// Splits a `NAME=VALUE` argument of `flag`; `form` (e.g. `NAME=PATH`) is
/// what the error says was expected.
pub fn split_spec<'a>(flag: &str, spec: &'a str, form: &str) -> anyhow::Result<(&'a str, &'a str)> {
    spec.split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{flag} {spec:?}: expected {form}"))
}
