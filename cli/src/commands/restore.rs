//! `cairn restore`: parses the arguments into a restore request, has the
//! library check, prepare and execute it, and renders each step (text,
//! `--json`, the progress bar) and its exit code. Decides nothing itself:
//! which verdicts refuse a restore is the request's policy.

use crate::args::RestoreArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use crate::progress::CliProgress;
use anyhow::{Result, anyhow};
use cairn_store::Repository;
use cairn_store::index::OpenedIndex;
use cairn_store::ops::restore::{
    Action, DatabaseCheck, Decision, Fallback, MetadataPolicy, PreflightPolicy, PreparedRestore,
    RestoreOptions, RestoreOutcome, RestorePlan, RestoreRequest, Selection, Sources,
    check_snapshot, execute, parse_duration, prepare_restore,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Paths listed per action in a human-readable dry run.
const SHOWN_PATHS: usize = 50;

fn selection(args: &RestoreArgs) -> Result<Selection> {
    let mut component_targets = BTreeMap::new();
    for spec in &args.component_targets {
        let (name, directory) = spec
            .split_once('=')
            .filter(|(name, directory)| !name.is_empty() && !directory.is_empty())
            .ok_or_else(|| anyhow!("--component-target {spec:?}: expected NAME=DIR"))?;
        component_targets.insert(name.to_string(), PathBuf::from(directory));
    }
    Ok(Selection {
        only: args.only.clone(),
        skip: args.skip.clone(),
        component_targets,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
    })
}

fn plan_json(plan: &RestorePlan) -> Value {
    json!(plan.components.iter().map(|component| json!({
        "name": component.name,
        "destination": component.destination.display().to_string(),
        "counts": component.counts,
        "entries": component.entries.iter()
            .filter(|item| item.action != Action::Unchanged)
            .map(|item| json!({"path": item.relative, "action": item.action, "kind": item.entry.kind,
                               "fetch_bytes": item.fetch_bytes, "reuse_bytes": item.reuse_bytes}))
            .collect::<Vec<_>>(),
        "delete": component.deletions.iter().map(|deletion| deletion.relative.clone()).collect::<Vec<_>>(),
    })).collect::<Vec<_>>())
}

fn print_plan(plan: &RestorePlan) {
    for component in &plan.components {
        let counts = &component.counts;
        println!(
            "  {} -> {}: create {}, update {}, metadata {}, delete {}, unchanged {}; fetch {}, reuse {} from the target",
            component.name,
            component.destination.display(),
            counts.create,
            counts.update,
            counts.metadata,
            counts.delete,
            counts.unchanged,
            bytes(counts.bytes_to_fetch),
            bytes(counts.bytes_reused)
        );
    }
}

fn print_plan_paths(plan: &RestorePlan) {
    for component in &plan.components {
        let mut lines: Vec<String> = component
            .entries
            .iter()
            .filter(|item| item.action != Action::Unchanged)
            .map(|item| {
                format!(
                    "    {:<9} {}/{}",
                    format!("{:?}", item.action).to_lowercase(),
                    component.name,
                    item.relative
                )
            })
            .collect();
        lines.extend(
            component
                .deletions
                .iter()
                .filter(|deletion| {
                    !component
                        .entries
                        .iter()
                        .any(|item| item.relative == deletion.relative)
                })
                .map(|deletion| {
                    format!(
                        "    {:<9} {}/{}",
                        "delete", component.name, deletion.relative
                    )
                }),
        );
        for line in lines.iter().take(SHOWN_PATHS) {
            println!("{line}");
        }
        if lines.len() > SHOWN_PATHS {
            println!(
                "    … and {} more (--json lists them all)",
                lines.len() - SHOWN_PATHS
            );
        }
    }
}

/// The repositories after the first, each with its index; one that cannot
/// be opened is skipped with a warning (the restore may not need it).
fn open_fallbacks(context: &Context, locations: &[String]) -> Vec<(Repository, OpenedIndex)> {
    let mut opened = Vec::new();
    for location in locations {
        let attempt = context.open_repository_at(location).and_then(|repository| {
            let index = context.open_index(&repository)?;
            Ok((repository, index))
        });
        match attempt {
            Ok(pair) => opened.push(pair),
            Err(error) => {
                eprintln!("cairn: fallback repository {location} is unavailable: {error:#}")
            }
        }
    }
    opened
}

pub fn run(context: &Context, args: &RestoreArgs) -> Result<u8> {
    let max_age = args
        .max_age
        .as_deref()
        .map(|text| parse_duration(text).map_err(|error| anyhow!("--max-age: {error}")))
        .transpose()?;
    let selection = selection(args)?;
    let locations = context.repository_locations()?;
    let repository = context.open_repository_at(&locations[0])?;
    let trusted = if args.allow_untrusted {
        context.trusted_keys(&repository).unwrap_or_default()
    } else {
        context.trusted_keys(&repository)?
    };
    let trusted = context.trusted_keys_for_snapshot(&repository, &args.snapshot, trusted)?;
    let request = RestoreRequest {
        snapshot: args.snapshot.clone(),
        trusted,
        options: RestoreOptions {
            target: args.target.clone(),
            selection,
            delete: args.delete,
            metadata: MetadataPolicy {
                same_owner: args.same_owner,
                special_bits: args.keep_special_bits,
            },
            journals: Some(context.journal_directory()?),
        },
        policy: PreflightPolicy {
            max_age,
            allow_untrusted: args.allow_untrusted,
            allow_too_old: args.allow_too_old,
            allow_missing_chunks: args.allow_missing_chunks,
        },
    };
    let checked = check_snapshot(&repository, &request)?;
    super::warn_passed_over(&checked.passed_over);
    super::warn_rolled_back(&super::rolled_back(context, &repository, &request.trusted));
    let opened = context.open_index(&repository)?;
    let others = open_fallbacks(context, &locations[1..]);
    let fallbacks: Vec<Fallback> = others
        .iter()
        .map(|(repository, opened)| Fallback {
            repository,
            index: opened.index.as_ref(),
        })
        .collect();
    let sources = Sources::new(&fallbacks);
    let prepared = prepare_restore(
        &repository,
        opened.index.as_ref(),
        &sources,
        checked,
        &request,
    )?;
    let id = prepared.snapshot;

    if !context.global.json {
        println!(
            "snapshot {} ({}, host {})",
            id.short(),
            prepared.body.time,
            prepared.body.host
        );
        for verdict in &prepared.verdicts {
            let status = serde_json::to_value(verdict.status)?;
            println!(
                "  preflight {:<9} {}: {}",
                verdict.check,
                status.as_str().unwrap_or("?"),
                verdict.detail
            );
        }
    }
    let plan = match &prepared.decision {
        Decision::Proceed(plan) => plan,
        Decision::Refused { check } => {
            if context.global.json {
                crate::output::print_json(
                    &json!({"snapshot": id.to_hex(), "verdicts": prepared.verdicts, "refused": check}),
                )?;
            }
            eprintln!(
                "cairn: restore refused by the {check} check (see the verdicts; each has an --allow-… override)"
            );
            return Ok(exit::REFUSED);
        }
    };

    if args.dry_run {
        if context.global.json {
            crate::output::print_json(&json!({
                "snapshot": id.to_hex(), "dry_run": true, "verdicts": prepared.verdicts,
                "totals": plan.totals(), "components": plan_json(plan),
            }))?;
        } else {
            println!("plan (dry run, nothing written):");
            print_plan(plan);
            print_plan_paths(plan);
        }
        return Ok(exit::SUCCESS);
    }

    let safety_key = if plan.touches_existing() && !args.no_safety_snapshot {
        Some(context.signing_key(&repository).map_err(|error| {
            anyhow!("{error:#}; the restore would overwrite or delete existing files and its safety snapshot needs the repository's signing key (or pass --no-safety-snapshot)")
        })?)
    } else {
        None
    };
    let progress = CliProgress::new(context.global.json);
    let outcome = execute(
        &repository,
        opened.index.as_ref(),
        &sources,
        &prepared,
        safety_key.as_ref(),
        &progress,
    )?;
    progress.finish();
    report(context, &locations[0], &prepared, plan, &outcome)
}

/// Renders a finished restore's outcome; returns its exit code.
fn report(
    context: &Context,
    repo_path: &str,
    prepared: &PreparedRestore,
    plan: &RestorePlan,
    outcome: &RestoreOutcome,
) -> Result<u8> {
    let undo = outcome
        .safety_snapshot
        .map(|safety| format!("cairn --repo {repo_path} undo-restore {}", safety.to_hex()));
    if context.global.json {
        crate::output::print_json(&json!({
            "snapshot": prepared.snapshot.to_hex(),
            "dry_run": false,
            "verdicts": prepared.verdicts,
            "totals": plan.totals(),
            "components": plan_json(plan),
            "files_written": outcome.files_written,
            "bytes_written": outcome.bytes_written,
            "chunks_fetched": outcome.chunks_fetched,
            "bytes_fetched": outcome.bytes_fetched,
            "bytes_reused": outcome.bytes_reused,
            "requests": outcome.requests,
            "deleted": outcome.deleted,
            "fallbacks": outcome.fallbacks.iter().map(|used| json!({
                "repository": used.repository, "blobs": used.blobs, "bytes": used.bytes,
            })).collect::<Vec<_>>(),
            "main_failures": outcome.main_failures,
            "main_failure_examples": outcome.main_failure_examples,
            "safety_snapshot": outcome.safety_snapshot.map(|safety| safety.to_hex()),
            "undo_command": if outcome.rolled_back { None } else { undo.clone() },
            "rolled_back": outcome.rolled_back,
            "rollback_problems": outcome.rollback_problems.iter().map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>(),
            "failures": outcome.failures.iter().map(|f| json!({
                "component": f.component, "path": f.path, "error": f.error,
            })).collect::<Vec<_>>(),
            "database_checks": outcome.database_checks.iter().map(|check| json!({
                "component": check.component,
                "path": check.path.display().to_string(),
                "ok": check.passed(),
                "problems": check.problems,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        print_plan(plan);
        println!(
            "  wrote {} files ({}); fetched {} chunks ({}, {} reads) from the repository, reused {} from the target; deleted {}",
            outcome.files_written,
            bytes(outcome.bytes_written),
            outcome.chunks_fetched,
            bytes(outcome.bytes_fetched),
            outcome.requests,
            bytes(outcome.bytes_reused),
            outcome.deleted
        );
        for used in outcome.fallbacks.iter().filter(|used| used.blobs > 0) {
            println!(
                "  {} chunks ({}) came from {} because {} could not give them intact",
                used.blobs,
                bytes(used.bytes),
                used.repository,
                repo_path
            );
        }
        if let Some(first) = outcome.main_failure_examples.first() {
            println!(
                "  {} failed {} time(s); first: {first}",
                repo_path, outcome.main_failures
            );
        }
        if let (Some(safety), Some(undo), false) =
            (outcome.safety_snapshot, &undo, outcome.rolled_back)
        {
            println!(
                "  safety snapshot {} holds what was overwritten or deleted; to undo this restore:",
                safety.short()
            );
            println!("    {undo}");
        }
        for check in outcome
            .database_checks
            .iter()
            .filter(|check| check.passed())
        {
            println!(
                "  SQLite integrity check of {} ({}): ok",
                check.component,
                check.path.display()
            );
        }
    }
    for check in outcome
        .database_checks
        .iter()
        .filter(|check| !check.passed())
    {
        eprintln!(
            "cairn: SQLite integrity check of {} ({}) failed:",
            check.component,
            check.path.display()
        );
        for problem in &check.problems {
            eprintln!("  {problem}");
        }
    }
    if outcome.failures.is_empty() {
        let databases_sound = outcome.database_checks.iter().all(DatabaseCheck::passed);
        return Ok(if databases_sound {
            exit::SUCCESS
        } else {
            exit::DAMAGE
        });
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
    if outcome.rolled_back {
        if outcome.rollback_problems.is_empty() {
            eprintln!("cairn: the restore failed, so the target was put back exactly as it was");
        } else {
            eprintln!("cairn: the restore failed; rolling back left these problems:");
            for (path, why) in &outcome.rollback_problems {
                eprintln!("  {path}: {why}");
            }
            if let Some(safety) = outcome.safety_snapshot {
                eprintln!(
                    "cairn: everything overwritten is still in safety snapshot {}",
                    safety.to_hex()
                );
            }
        }
    }
    Ok(exit::DAMAGE)
}
