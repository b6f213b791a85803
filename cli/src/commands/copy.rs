//! `cairn copy`: snapshots from one repository into another, only the
//! chunks the target lacks; the report and the exit code (4 if damage in
//! the source kept a snapshot from being copied).

use crate::args::CopyArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use crate::progress::CliProgress;
use anyhow::Result;
use cairn_store::StoreError;
use cairn_store::index::{OpenedIndex, open_index};
use cairn_store::ops::copy::{
    CopyOptions, CopyOutcome, CopyResult, CopyTrust, Endpoints, check_distinct, copy,
};
use serde_json::json;

pub fn run(context: &Context, args: &CopyArgs) -> Result<u8> {
    crate::interrupt::say_on_interrupt(
        "snapshots already copied are kept; the next copy stores only what the target still lacks",
    );
    let source = context.open_repository_at(&args.from)?;
    let target = context.open_repository_at(&args.to)?;
    check_distinct(&source, &target)?;
    // Source manifests are checked against the keys trusted for the
    // source; the target's forget records against those for the target.
    // The copies are signed for the target with the target's key.
    let source_trusted = context.trusted_keys(&source)?;
    let target_trusted = context.trusted_keys_or_none(&target)?;
    let key = context.signing_key(&target)?;
    let (source_index, target_index) = open_indexes(context, &source, &target)?;
    let options = CopyOptions {
        snapshots: args.snapshots.clone(),
        dry_run: args.dry_run,
    };
    let endpoints = Endpoints {
        source: &source,
        source_index: source_index.index.as_ref(),
        target: &target,
        target_index: target_index.index.as_ref(),
    };
    let progress = CliProgress::new(context.global.json);
    let trusted = CopyTrust {
        source: &source_trusted,
        target: &target_trusted,
    };
    let copied = copy(&endpoints, trusted, &key, &options, &progress);
    progress.finish();
    let outcome = match copied {
        Ok(outcome) => outcome,
        // A named snapshot whose manifest is damaged in the source.
        Err(error @ StoreError::Corrupt { .. }) => {
            eprintln!("cairn: error: {error}");
            return Ok(exit::DAMAGE);
        }
        Err(error) => return Err(error.into()),
    };
    for notice in &outcome.notices {
        eprintln!("cairn: notice: {notice}");
    }
    if context.global.json {
        print_json(args, &outcome)?;
    } else {
        print_text(args, &outcome);
    }
    Ok(if outcome.damaged().is_empty() {
        exit::SUCCESS
    } else {
        exit::DAMAGE
    })
}

/// Each repository's index; two repositories with the same id (one a file
/// copy of the other) would share a cache directory, so they get in-memory
/// indexes instead.
fn open_indexes(
    context: &Context,
    source: &cairn_store::Repository,
    target: &cairn_store::Repository,
) -> Result<(OpenedIndex, OpenedIndex)> {
    if source.config().repository_id != target.config().repository_id {
        return Ok((context.open_index(source)?, context.open_index(target)?));
    }
    eprintln!(
        "cairn: notice: {} and {} have the same repository id (is one a file copy of the other?); using in-memory indexes",
        source.backend().location(),
        target.backend().location()
    );
    Ok((
        open_index(source, None, &context.index_vouchers(source))?,
        open_index(target, None, &context.index_vouchers(target))?,
    ))
}

fn result_label(result: &CopyResult) -> (&'static str, Option<&str>) {
    match result {
        CopyResult::Copied => ("copied", None),
        CopyResult::WouldCopy => ("would-copy", None),
        CopyResult::AlreadyPresent => ("already-present", None),
        CopyResult::ForgottenInTarget => ("forgotten-in-target", None),
        CopyResult::Untrusted(why) => ("untrusted", Some(why)),
        CopyResult::Damaged(why) => ("damaged", Some(why)),
    }
}

fn print_json(args: &CopyArgs, outcome: &CopyOutcome) -> Result<()> {
    let snapshots: Vec<_> = outcome
        .snapshots
        .iter()
        .map(|snapshot| {
            let (result, reason) = result_label(&snapshot.result);
            json!({
                "id": snapshot.id.to_hex(),
                "target_id": snapshot.target_id.to_hex(),
                "time": snapshot.body.as_ref().map(|body| &body.time),
                "host": snapshot.body.as_ref().map(|body| &body.host),
                "result": result,
                "reason": reason,
                "blobs_copied": snapshot.blobs_copied,
                "blobs_present": snapshot.blobs_present,
                "bytes_read": snapshot.bytes_read,
            })
        })
        .collect();
    let written = &outcome.written;
    crate::output::print_json(&json!({
        "from": args.from,
        "to": args.to,
        "dry_run": args.dry_run,
        "snapshots": snapshots,
        "snapshots_copied": outcome.count(&CopyResult::Copied),
        "snapshots_would_copy": outcome.count(&CopyResult::WouldCopy),
        "snapshots_skipped": outcome.snapshots.len()
            - outcome.count(&CopyResult::Copied)
            - outcome.count(&CopyResult::WouldCopy)
            - outcome.damaged().len(),
        "snapshots_damaged": outcome.damaged().len(),
        "blobs_copied": outcome.blobs_copied(),
        "blobs_present": outcome.blobs_present(),
        "bytes_read": outcome.bytes_read(),
        "raw_bytes_written": written.new_raw_bytes,
        "bytes_written": written.new_stored_bytes,
        "packs_written": written.packs_written,
        "index_files_written": written.index_files_written,
        "notices": outcome.notices,
    }))
}

fn print_text(args: &CopyArgs, outcome: &CopyOutcome) {
    if outcome.snapshots.is_empty() {
        println!(
            "nothing to copy: {} holds every snapshot of {}",
            args.to, args.from
        );
        return;
    }
    for snapshot in &outcome.snapshots {
        let (result, reason) = result_label(&snapshot.result);
        let when = snapshot
            .body
            .as_ref()
            .map(|body| format!(" {} {}", body.time, body.host))
            .unwrap_or_default();
        match reason {
            Some(reason) => println!("{result:<20} {}{when}: {reason}", snapshot.id.short()),
            None if matches!(snapshot.result, CopyResult::Copied | CopyResult::WouldCopy) => {
                println!(
                    "{result:<20} {} as {}{when}: {} blobs copied, {} already present, {} read",
                    snapshot.id.short(),
                    snapshot.target_id.short(),
                    snapshot.blobs_copied,
                    snapshot.blobs_present,
                    bytes(snapshot.bytes_read)
                )
            }
            None => println!("{result:<20} {}{when}", snapshot.id.short()),
        }
    }
    let verb = if args.dry_run { "would copy" } else { "copied" };
    let done = outcome.count(&CopyResult::Copied) + outcome.count(&CopyResult::WouldCopy);
    let damaged = outcome.damaged().len();
    println!(
        "{verb} {done} snapshots ({} skipped, {damaged} damaged): {} blobs, {} already present; read {}, wrote {} in {} packs",
        outcome.snapshots.len() - done - damaged,
        outcome.blobs_copied(),
        outcome.blobs_present(),
        bytes(outcome.bytes_read()),
        bytes(outcome.written.new_stored_bytes),
        outcome.written.packs_written,
    );
    if damaged > 0 {
        println!(
            "DAMAGED: {damaged} snapshots of {} could not be copied (nothing of them is committed in {}); run `cairn verify --read-data` on {}",
            args.from, args.to, args.from
        );
    }
}
