//! `cairn undo-restore`: put a target back from a restore's safety snapshot.

use crate::args::UndoRestoreArgs;
use crate::commands::verified_snapshot;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use cairn_store::ops::restore::undo_restore;
use serde_json::json;

pub fn run(context: &Context, args: &UndoRestoreArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    let (id, body) = verified_snapshot(
        context,
        &repository,
        &args.safety_snapshot,
        &Default::default(),
    )?;
    let opened = context.open_index(&repository)?;
    let problems = undo_restore(
        &repository,
        opened.index.as_ref(),
        id,
        &body,
        &context.journal_directory()?,
    )?;
    if context.global.json {
        crate::output::print_json(&json!({
            "safety_snapshot": id.to_hex(),
            "problems": problems.iter().map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>(),
        }))?;
    } else if problems.is_empty() {
        println!(
            "undid the restore: the target is as safety snapshot {} recorded it",
            id.short()
        );
    }
    if problems.is_empty() {
        return Ok(exit::SUCCESS);
    }
    eprintln!("cairn: {} path(s) could not be put back:", problems.len());
    for (path, why) in &problems {
        eprintln!("  {path}: {why}");
    }
    Ok(exit::DAMAGE)
}
