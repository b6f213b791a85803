//! `cairn prune`: the plan, or the plan carried out, in words or JSON.

use crate::args::{PruneArgs, PruneTuning};
use crate::context::{Context, Usage};
use crate::exit;
use crate::output::bytes;
use crate::progress::CliProgress;
use anyhow::Result;
use cairn_store::StoreError;
use cairn_store::index::{IndexCache, MemoryIndex};
use cairn_store::ops::prune::{MaxUnused, PackUse, PruneOptions, PruneOutcome, parse_grace, prune};
use serde_json::json;

pub fn run(context: &Context, args: &PruneArgs) -> Result<u8> {
    crate::interrupt::say_on_interrupt(
        "every snapshot is intact (a prune deletes only data no snapshot needs); run prune again to finish",
    );
    let options = options(&args.tuning, args.dry_run)?;
    run_with(context, &options)
}

/// Parses the flags a prune shares with `forget --prune`.
pub fn options(tuning: &PruneTuning, dry_run: bool) -> Result<PruneOptions> {
    let grace =
        parse_grace(&tuning.grace).map_err(|error| Usage::flag("--grace", &tuning.grace, error))?;
    let max_unused = MaxUnused::parse(&tuning.max_unused)
        .map_err(|error| Usage::flag("--max-unused", &tuning.max_unused, error))?;
    Ok(PruneOptions {
        grace,
        max_unused,
        dry_run,
    })
}

/// The protocol's margin is the grace period: say so when it is thin.
pub fn warn_if_short_grace(options: &PruneOptions) {
    if options.grace < std::time::Duration::from_secs(60) && !options.dry_run {
        eprintln!(
            "cairn: warning: a grace period under a minute is only safe when no backup runs at the same time"
        );
    }
}

/// A prune that ran: its outcome, or the damage that stopped it.
pub enum Pruned {
    Done(Box<PruneOutcome>),
    Damage(String),
}

/// Runs a prune and writes its metrics (if asked); prints nothing.
pub fn execute(context: &Context, options: &PruneOptions) -> Result<Pruned> {
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots `prune` must read to know what is live")?;
    let trusted = context.trusted_keys(&repository)?;
    let key = context.signing_key(&repository)?;
    warn_if_short_grace(options);
    // Prune reads the index files itself; the cache only receives the
    // repacked packs, so an empty in-memory one spares a sled rebuild.
    let index = MemoryIndex::new();
    index.set_trusted(&trusted)?;
    let started = std::time::Instant::now();
    let progress = CliProgress::new(context.global.json);
    let pruned = prune(&repository, &index, &key, &trusted, options, &progress);
    progress.finish();
    let outcome = match pruned {
        Ok(outcome) => outcome,
        Err(error @ StoreError::Corrupt { .. }) => {
            let metrics = crate::metrics::Metrics::default();
            crate::metrics::finish(context, "prune", metrics, false, started)?;
            return Ok(Pruned::Damage(error.to_string()));
        }
        Err(error) => return Err(error.into()),
    };
    let mut metrics = crate::metrics::Metrics::default();
    let plan = &outcome.plan;
    let figures = [
        (
            "prune_packs_deleted",
            "Packs deleted by the last prune.",
            outcome.packs_deleted as f64,
        ),
        (
            "prune_bytes_deleted",
            "Bytes given back by the last prune.",
            plan.bytes_deleted() as f64,
        ),
        (
            "prune_bytes_marked",
            "Bytes marked for deletion after the grace period.",
            plan.bytes_marked() as f64,
        ),
        (
            "prune_bytes_rewritten",
            "Live bytes repacked.",
            plan.bytes_to_rewrite() as f64,
        ),
        (
            "prune_unused_bytes",
            "Bytes of unused blobs in packs before the prune.",
            plan.unused_bytes as f64,
        ),
        (
            "prune_repository_bytes",
            "Bytes in packs before the prune.",
            plan.pack_bytes as f64,
        ),
    ];
    for (name, help, value) in figures {
        metrics.gauge(name, help, &[], value);
    }
    crate::metrics::finish(context, "prune", metrics, true, started)?;
    Ok(Pruned::Done(Box::new(outcome)))
}

pub fn run_with(context: &Context, options: &PruneOptions) -> Result<u8> {
    let outcome = match execute(context, options)? {
        Pruned::Done(outcome) => outcome,
        Pruned::Damage(error) => {
            eprintln!("cairn: {error}");
            return Ok(exit::DAMAGE);
        }
    };
    if context.global.json {
        crate::output::print_json(&report_json(&outcome, options.dry_run))?;
    } else {
        print_report(&outcome, options.dry_run);
    }
    Ok(exit::SUCCESS)
}

fn packs_json(packs: &[PackUse]) -> Vec<serde_json::Value> {
    packs
        .iter()
        .map(|pack| {
            json!({
                "pack": pack.id.to_hex(),
                "size": pack.size,
                "live_blobs": pack.live_blobs,
                "live_bytes": pack.live_bytes,
                "dead_blobs": pack.dead_blobs,
                "dead_bytes": pack.dead_bytes,
            })
        })
        .collect()
}

pub fn report_json(outcome: &PruneOutcome, dry_run: bool) -> serde_json::Value {
    let plan = &outcome.plan;
    json!({
        "dry_run": dry_run,
        "snapshots": plan.snapshots,
        "trees": plan.trees,
        "packs": plan.packs,
        "pack_bytes": plan.pack_bytes,
        "unused_bytes": plan.unused_bytes,
        "due_marks": plan.due_marks.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        "delete": packs_json(&plan.delete),
        "revived": packs_json(&plan.revived),
        "waiting_marks": plan.waiting_marks.iter()
            .map(|(id, due, packs)| json!({"mark": id.to_hex(), "due": due, "packs": packs}))
            .collect::<Vec<_>>(),
        "ignored_marks": plan.ignored_marks.iter()
            .map(|(id, why)| json!({"mark": id.to_hex(), "why": why}))
            .collect::<Vec<_>>(),
        "ignored_snapshots": plan.ignored_snapshots.iter()
            .map(|(id, why)| json!({"snapshot": id.to_hex(), "why": why}))
            .collect::<Vec<_>>(),
        "unsure_snapshots": plan.unsure_snapshots.iter()
            .map(|(id, why)| json!({"snapshot": id.to_hex(), "why": why}))
            .collect::<Vec<_>>(),
        "mark_unused": packs_json(&plan.mark_unused),
        "repack": packs_json(&plan.repack),
        "young_packs": plan.young_packs,
        "unreadable_packs": plan.unreadable_packs.iter()
            .map(|(id, why)| json!({"pack": id.to_hex(), "error": why}))
            .collect::<Vec<_>>(),
        "unvouched_index_files": plan.unvouched_index_files.iter()
            .map(|(id, why)| json!({"index_file": id.to_hex(), "why": why}))
            .collect::<Vec<_>>(),
        "unreadable_index_files": plan.unreadable_index_files.iter()
            .map(|(id, why)| json!({"index_file": id.to_hex(), "error": why}))
            .collect::<Vec<_>>(),
        "bytes_deleted": plan.bytes_deleted(),
        "bytes_marked": plan.bytes_marked(),
        "bytes_to_rewrite": plan.bytes_to_rewrite(),
        "packs_deleted": outcome.packs_deleted,
        "packs_not_yet": outcome.not_yet.iter()
            .map(|(id, until)| json!({
                "pack": id.to_hex(),
                "retained_until": until.map(utc_time),
            }))
            .collect::<Vec<_>>(),
        "index_files_written": outcome.index_files_written,
        "index_files_removed": outcome.index_files_removed,
        "marks_removed": outcome.marks_removed,
        "mark_written": outcome.mark_written.map(|id| id.to_hex()),
        "repacked_blobs": outcome.repacked.new_blobs,
        "repacked_bytes": outcome.repacked.new_stored_bytes,
    })
}

fn print_report(outcome: &PruneOutcome, dry_run: bool) {
    let plan = &outcome.plan;
    let would = if dry_run { "would " } else { "" };
    println!(
        "{} snapshots, {} trees, {} packs ({}), of which about {} unused",
        plan.snapshots,
        plan.trees,
        plan.packs,
        bytes(plan.pack_bytes),
        bytes(plan.unused_bytes)
    );
    if !plan.due_marks.is_empty() {
        println!(
            "phase 2: {} mark(s) past their grace period: {would}delete {} pack(s) ({}); {} pack(s) kept because a snapshot needs them again",
            plan.due_marks.len(),
            plan.delete.len(),
            bytes(plan.bytes_deleted()),
            plan.revived.len()
        );
        for pack in &plan.delete {
            println!("    delete pack {} ({})", pack.id, bytes(pack.size));
        }
    }
    for (mark, due, packs) in &plan.waiting_marks {
        println!(
            "mark {} ({packs} pack(s)) waits for its grace period until {due}",
            mark.short()
        );
    }
    for (mark, why) in &plan.ignored_marks {
        println!("mark {} ignored: {why}", mark.short());
    }
    for (snapshot, why) in &plan.ignored_snapshots {
        eprintln!("cairn: warning: snapshot {snapshot} ignored (it keeps nothing alive): {why}");
    }
    for (snapshot, why) in &plan.unsure_snapshots {
        eprintln!(
            "cairn: warning: snapshot {snapshot} {why}: nothing new is marked or repacked while it is there (due marks are still carried out); run `cairn verify`, then restore it from a replica or remove it"
        );
    }
    println!(
        "phase 1: {would}mark {} unused pack(s) and repack {} pack(s) ({} of live data to rewrite); {} to be freed after the grace period",
        plan.mark_unused.len(),
        plan.repack.len(),
        bytes(plan.bytes_to_rewrite()),
        bytes(plan.bytes_marked())
    );
    for pack in &plan.mark_unused {
        println!("    mark pack {} ({}, unused)", pack.id, bytes(pack.size));
    }
    for pack in &plan.repack {
        println!(
            "    repack pack {} ({} live of {})",
            pack.id,
            bytes(pack.live_bytes),
            bytes(pack.size)
        );
    }
    if plan.young_packs > 0 {
        println!(
            "{} pack(s) younger than the grace period left alone",
            plan.young_packs
        );
    }
    for (pack, why) in &plan.unreadable_packs {
        println!(
            "pack {} has an unreadable header, left alone: {why}",
            pack.short()
        );
    }
    for (file, why) in &plan.unreadable_index_files {
        println!("index file {file} skipped: {why}");
    }
    print_unvouched(&plan.unvouched_index_files);
    if !dry_run {
        println!(
            "deleted {} pack(s), {} mark(s); wrote {} index file(s), removed {}{}",
            outcome.packs_deleted,
            outcome.marks_removed,
            outcome.index_files_written,
            outcome.index_files_removed,
            outcome
                .mark_written
                .map(|mark| format!("; wrote mark {}", mark.short()))
                .unwrap_or_default()
        );
        if !outcome.not_yet.is_empty() {
            let latest = outcome.not_yet.iter().filter_map(|(_, until)| *until).max();
            println!(
                "not yet: {} pack(s) still retained by S3 Object Lock{}; their marks stay and a \
                 later prune deletes them",
                outcome.not_yet.len(),
                latest
                    .map(|until| format!(" (the last until {})", utc_time(until)))
                    .unwrap_or_default()
            );
        }
    }
}

/// A time as RFC 3339, in UTC.
fn utc_time(time: std::time::SystemTime) -> String {
    cairn_store::ops::common::rfc3339(time)
}

/// Index files shown by name before the rest are only counted.
const UNVOUCHED_SHOWN: usize = 10;

/// Index files whose listings the prune did not rely on, by name.
fn print_unvouched(files: &[(cairn_store::Id, String)]) {
    if files.is_empty() {
        return;
    }
    println!(
        "{} index file(s) not vouched for by a trusted key: used as hints only (their packs were read instead); \
         if they are yours (written by a cairn before signed index files), `cairn repair index` seals them",
        files.len()
    );
    for (file, why) in files.iter().take(UNVOUCHED_SHOWN) {
        println!("    index file {file}: {why}");
    }
    if files.len() > UNVOUCHED_SHOWN {
        println!("    and {} more", files.len() - UNVOUCHED_SHOWN);
    }
}
