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
    RestoreHooks, RestoreOptions, RestoreOutcome, RestorePlan, RestoreRequest, RunbookOutcome,
    RunbookResult, Selection, Sources, check_snapshot, execute, parse_duration,
    parse_point_in_time, prepare_restore, run_restore,
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
        to_source: args.to_source,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
    })
}

pub(crate) fn plan_json(plan: &RestorePlan) -> Value {
    json!(plan.components.iter().map(|component| json!({
        "name": component.name,
        "destination": component.destination.display().to_string(),
        "counts": component.counts,
        "entries": component.entries.iter()
            .filter(|item| item.action != Action::Unchanged)
            .map(|item| json!({"path": item.relative, "destination": item.destination.display().to_string(),
                               "action": item.action, "kind": item.entry.kind,
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
                // The path the restore writes, not the one inside the
                // component: a file component's name is not its path.
                format!(
                    "    {:<9} {}",
                    format!("{:?}", item.action).to_lowercase(),
                    item.destination.display()
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
                .map(|deletion| format!("    {:<9} {}", "delete", deletion.destination.display())),
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
pub(crate) fn open_fallbacks(
    context: &Context,
    locations: &[String],
) -> Vec<(Repository, OpenedIndex)> {
    let mut opened = Vec::new();
    for location in locations {
        let attempt = context.open_repository_at(location).and_then(|repository| {
            repository.require_read_key("the snapshot `restore` restores")?;
            let index = context.open_index(&repository)?;
            Ok((repository, index))
        });
        match attempt {
            Ok(pair) => opened.push(pair),
            Err(error) => {
                eprintln!(
                    "cairn: fallback repository {} is unavailable: {error:#}",
                    cairn_store::backend::redact_location(location)
                )
            }
        }
    }
    opened
}

/// The restore's hooks: the plan's, with each flag replacing the plan's
/// whole-restore hook of its kind.
fn hooks(args: &RestoreArgs, plan: Option<&crate::plan::Plan>) -> RestoreHooks {
    let mut hooks = plan
        .map(|plan| plan.restore_hooks.clone())
        .unwrap_or_default();
    let whole = &mut hooks.whole;
    for (flag, slot) in [
        (&args.before, &mut whole.before),
        (&args.check, &mut whole.check),
        (&args.after, &mut whole.after),
    ] {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    hooks
}

pub fn run(context: &Context, args: &RestoreArgs) -> Result<u8> {
    let started = std::time::SystemTime::now();
    let plan_file = match args.plan.as_deref().map(crate::plan::load_for_restore) {
        None => None,
        Some(Ok(plan)) => Some(plan),
        Some(Err(mistakes)) => {
            super::plan::report_mistakes(&mistakes);
            return Ok(exit::ERROR);
        }
    };
    let planned_context = crate::plan::context_for(context, plan_file.as_ref());
    let context = planned_context.as_ref().unwrap_or(context);
    let hooks = hooks(args, plan_file.as_ref());
    let max_age = args
        .max_age
        .as_deref()
        .map(|text| {
            parse_duration(text)
                .map_err(|error| crate::context::Usage::flag("--max-age", text, error))
        })
        .transpose()?;
    let selection = selection(args)?;
    let locations = context.repository_locations()?;
    let repository = context.open_repository_at(&locations[0])?;
    repository.require_read_key("the snapshot `restore` restores")?;
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
            // Unused with --to-source: every component has its own place.
            target: args.target.clone().unwrap_or_default(),
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
            allow_version_ahead: args.allow_version_ahead,
            allow_low_space: args.allow_low_space,
        },
        current_version: args.current_version.clone(),
        at: args
            .at
            .as_deref()
            .map(|text| {
                parse_point_in_time(text)
                    .map_err(|error| crate::context::Usage::flag("--at", text, error))
            })
            .transpose()?,
        filter: restore_filter(args, plan_file.as_ref()),
    };
    let checked = check_snapshot(&repository, &request)?;
    super::note_other_host(
        &args.snapshot,
        &request.filter,
        &checked.snapshot,
        &checked.body,
    );
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
    let signer = repository.read_manifest(&id)?.signer().to_hex();
    let report_to = |plan: Option<&RestorePlan>,
                     outcome: Option<&RestoreOutcome>,
                     runbook: Option<&RunbookOutcome>,
                     result: &str,
                     code: u8|
     -> Result<u8> {
        let Some(path) = &args.report else {
            return Ok(code);
        };
        let facts = super::restore_report::ReportFacts {
            repository: &locations[0],
            target: args.target.as_deref().unwrap_or(std::path::Path::new(
                "(each component's source path: --to-source)",
            )),
            prepared: &prepared,
            signer: signer.clone(),
            plan,
            outcome,
            runbook,
            result,
            exit_code: code,
            started: started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            seconds: started.elapsed().map_or(0.0, |took| took.as_secs_f64()),
        };
        super::restore_report::write(path, &facts)?;
        Ok(code)
    };

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
            return report_to(None, None, None, "refused", exit::REFUSED);
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

    if !args.yes && !confirmed(plan)? {
        eprintln!("cairn: not confirmed; nothing was written");
        return Ok(exit::ERROR);
    }

    let safety_key = if plan.touches_existing() && !args.no_safety_snapshot {
        Some(context.signing_key(&repository).map_err(|error| {
            anyhow!("{error:#}; the restore would overwrite or delete existing files and its safety snapshot needs the repository's signing key (or pass --no-safety-snapshot)")
        })?)
    } else {
        None
    };
    let progress = CliProgress::new(context.global.json);
    if hooks.is_empty() {
        let outcome = execute(
            &repository,
            opened.index.as_ref(),
            &sources,
            &prepared,
            safety_key.as_ref(),
            &progress,
        )?;
        progress.finish();
        let code = report(context, &locations[0], &prepared, plan, &outcome, None)?;
        let result = if code == exit::SUCCESS {
            "restored"
        } else {
            "restore-failed"
        };
        return report_to(Some(plan), Some(&outcome), None, result, code);
    }
    let runbook = run_restore(
        &repository,
        opened.index.as_ref(),
        &sources,
        &request,
        &prepared,
        safety_key.as_ref(),
        &hooks,
        &progress,
    )?;
    progress.finish();
    let (code, runbook) = report_runbook(context, &locations[0], &prepared, runbook)?;
    report_to(
        runbook.plan.as_ref().or(Some(plan)),
        runbook.restore.as_ref(),
        Some(&runbook),
        runbook.result.as_str(),
        code,
    )
}

/// Whether the user lets a restore that loses existing data go ahead: one
/// that loses none needs no answer; otherwise what it would overwrite and
/// delete is shown and the question asked on the terminal. Without a
/// terminal to ask on, it is a usage error: automation says `--yes`.
fn confirmed(plan: &RestorePlan) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    let risk = plan.at_risk();
    if !risk.loses_data() {
        return Ok(true);
    }
    let summary = format!(
        "this restore overwrites {} existing file(s) ({}) and deletes {} ({}); a safety snapshot keeps them unless --no-safety-snapshot",
        risk.overwrite,
        bytes(risk.overwrite_bytes),
        risk.delete,
        bytes(risk.delete_bytes)
    );
    if !std::io::stdin().is_terminal() {
        return Err(anyhow::Error::new(crate::context::Usage(format!(
            "{summary}; there is no terminal to ask on, so pass --yes to confirm"
        ))));
    }
    let mut stderr = std::io::stderr();
    for component in &plan.components {
        let counts = &component.counts;
        if counts.update + counts.delete > 0 {
            writeln!(
                stderr,
                "  {} -> {}: update {}, delete {}",
                component.name,
                component.destination.display(),
                counts.update,
                counts.delete
            )?;
        }
    }
    write!(stderr, "cairn: {summary}.\nProceed? [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Renders a restore run with hooks; returns its exit code.
fn report_runbook(
    context: &Context,
    repo_path: &str,
    prepared: &PreparedRestore,
    mut runbook: RunbookOutcome,
) -> Result<(u8, RunbookOutcome)> {
    for run in &runbook.hooks {
        let whose = run.component.as_deref().unwrap_or("restore");
        match &run.failure {
            None if !context.global.json => {
                println!("  {} {}-hook ok: {}", whose, run.phase, run.command)
            }
            None => {}
            Some(why) => eprintln!("cairn: {} {}-hook failed: {why}", whose, run.phase),
        }
    }
    if let Some(error) = runbook.error.take() {
        return Err(
            anyhow::Error::new(error).context("the restore could not run (after-hooks ran)")
        );
    }
    let Some(outcome) = &runbook.restore else {
        eprintln!("cairn: a before-hook failed, so nothing in the target was touched");
        if context.global.json {
            crate::output::print_json(&json!({
                "snapshot": prepared.snapshot.to_hex(), "result": runbook.result,
                "hooks": runbook.hooks,
            }))?;
        }
        return Ok((exit::ERROR, runbook));
    };
    let plan = runbook
        .plan
        .as_ref()
        .ok_or_else(|| anyhow!("a restore ran without a plan"))?;
    let code = report(context, repo_path, prepared, plan, outcome, Some(&runbook))?;
    match runbook.result {
        RunbookResult::RolledBack => {
            eprintln!(
                "cairn: the check failed, so the target was rolled back to what it was before the restore"
            );
            Ok((exit::ROLLED_BACK, runbook))
        }
        RunbookResult::RollbackFailed => {
            eprintln!("cairn: the check failed; rolling back left these problems:");
            for (path, why) in &runbook.rollback_problems {
                eprintln!("  {path}: {why}");
            }
            if let Some(safety) = outcome.safety_snapshot {
                eprintln!(
                    "cairn: everything overwritten is still in safety snapshot {}",
                    safety.to_hex()
                );
            }
            Ok((exit::DAMAGE, runbook))
        }
        _ => Ok((code, runbook)),
    }
}

/// Renders a finished restore's outcome; returns its exit code.
fn report(
    context: &Context,
    repo_path: &str,
    prepared: &PreparedRestore,
    plan: &RestorePlan,
    outcome: &RestoreOutcome,
    runbook: Option<&RunbookOutcome>,
) -> Result<u8> {
    // A check that failed has already put the target back: nothing to undo.
    let checked_back = runbook.is_some_and(|runbook| {
        matches!(
            runbook.result,
            RunbookResult::RolledBack | RunbookResult::RollbackFailed
        )
    });
    let undo = outcome
        .safety_snapshot
        .filter(|_| !checked_back)
        .map(|safety| format!("cairn --repo {repo_path} undo-restore {}", safety.to_hex()));
    if context.global.json {
        crate::output::print_json(&json!({
            "result": runbook.map(|runbook| runbook.result),
            "hooks": runbook.map(|runbook| &runbook.hooks),
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
            "rolled_back": outcome.rolled_back || checked_back,
            "rollback_problems": outcome.rollback_problems.iter().chain(runbook.iter().flat_map(|runbook| &runbook.rollback_problems)).map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>(),
            "failures": outcome.failures.iter().map(|f| json!({
                "component": f.component, "path": f.path, "error": f.error,
            })).collect::<Vec<_>>(),
            "database_checks": outcome.database_checks.iter().map(|check| json!({
                "component": check.component,
                "path": check.path.display().to_string(),
                "ok": check.passed(),
                "problems": check.problems,
            })).collect::<Vec<_>>(),
            "journals_set_aside": outcome.journals_set_aside.iter().map(|path| path.display().to_string()).collect::<Vec<_>>(),
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
        for aside in &outcome.journals_set_aside {
            println!(
                "  a stale SQLite journal was moved aside (no safety snapshot holds it): {}",
                aside.display()
            );
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
    if outcome.target_unwritable() {
        eprintln!("cairn: the target could not be written (see the errors above)");
        return Ok(exit::TARGET_UNWRITABLE);
    }
    Ok(exit::DAMAGE)
}

/// What `latest` must pass: the flags' filter; with a plan and no --host,
/// the plan's host (this machine's when it names none), since a plan's
/// restore means that plan's own snapshots.
fn restore_filter(
    args: &RestoreArgs,
    plan: Option<&crate::plan::Plan>,
) -> cairn_store::ops::select::SnapshotFilter {
    let mut filter = args.filter.filter();
    if let Some(plan) = plan
        && filter.hosts.is_empty()
    {
        filter.hosts.push(
            plan.host
                .clone()
                .unwrap_or_else(cairn_store::ops::common::host_name),
        );
    }
    filter
}
