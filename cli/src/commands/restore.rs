//! `cairn restore`: a snapshot's components back onto disk, verified.

use crate::args::RestoreArgs;
use crate::commands::verified_snapshot;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use cairn_store::ops::restore::{RestoreOptions, check_target, restore};
use serde_json::json;

pub fn run(context: &Context, args: &RestoreArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    let (id, body) = verified_snapshot(context, &repository, &args.snapshot)?;
    check_target(&args.target)?;
    let options = RestoreOptions {
        target: args.target.clone(),
        only: args.only.clone(),
        skip: args.skip.clone(),
        dry_run: args.dry_run,
    };
    // Check the selection before opening the index, so a typo costs nothing.
    cairn_store::ops::restore::select_components(&body, &options.only, &options.skip, &id.short())?;
    let opened = context.open_index(&repository)?;
    let outcome = restore(
        &repository,
        opened.index.as_ref(),
        &body,
        &id.short(),
        &options,
    )?;
    if context.global.json {
        crate::output::print_json(&json!({
            "snapshot": id.to_hex(),
            "dry_run": outcome.dry_run,
            "components": outcome.components.iter().map(|c| json!({
                "name": c.name, "destination": c.destination.display().to_string(),
                "files": c.files, "directories": c.directories, "symlinks": c.symlinks, "bytes": c.bytes,
            })).collect::<Vec<_>>(),
            "failures": outcome.failures.iter().map(|f| json!({
                "component": f.component, "path": f.path, "error": f.error,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let verb = if outcome.dry_run {
            "would restore"
        } else {
            "restored"
        };
        println!("snapshot {} ({})", id.short(), body.time);
        for component in &outcome.components {
            println!(
                "  {verb} {:<16} {} files, {} directories, {} symlinks, {} -> {}",
                component.name,
                component.files,
                component.directories,
                component.symlinks,
                bytes(component.bytes),
                component.destination.display()
            );
        }
    }
    if outcome.failures.is_empty() {
        return Ok(exit::SUCCESS);
    }
    eprintln!(
        "cairn: {} item(s) could not be restored:",
        outcome.failures.len()
    );
    for failure in &outcome.failures {
        eprintln!(
            "  {}/{}: {}",
            failure.component, failure.path, failure.error
        );
    }
    Ok(exit::DAMAGE)
}
