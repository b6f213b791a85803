//! `cairn backup`: one snapshot of one or more components.

use crate::args::BackupArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use crate::progress::CliProgress;
use anyhow::{Result, anyhow};
use cairn_store::Repository;
use cairn_store::format::keys::SigningKey;
use cairn_store::format::manifest::SnapshotBody;
use cairn_store::index::OpenedIndex;
use cairn_store::ops::backup::{
    BackupOptions, BackupOutcome, ChunkingChoice, ComponentSource, Destination, SourceKind, Target,
    TargetFailure, TargetsOutcome, Verdict, backup_into_targets, backup_with_progress,
    component_from_path,
};
use cairn_store::ops::hooks::Hook;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plan's components (if any) followed by those the flags give.
fn parse_components(
    args: &BackupArgs,
    mut components: Vec<ComponentSource>,
) -> Result<Vec<ComponentSource>> {
    let planned = components.len();
    for spec in &args.components {
        let (name, path) = super::split_spec("--component", spec, "NAME=PATH")?;
        components.push(ComponentSource::new(name, PathBuf::from(path)));
    }
    for spec in &args.databases {
        let (name, path) = super::split_spec("--sqlite", spec, "NAME=PATH")?;
        let mut source = ComponentSource::new(name, PathBuf::from(path));
        source.kind = SourceKind::Sqlite;
        components.push(source);
    }
    for spec in &args.commands {
        let (name, command) = super::split_spec("--command", spec, "NAME=COMMAND")?;
        let mut source = ComponentSource::new(name, PathBuf::new());
        source.kind = SourceKind::Command(command.to_string());
        components.push(source);
    }
    for path in &args.paths {
        components.push(component_from_path(path)?);
    }
    for component in &mut components[planned..] {
        if component.kind == SourceKind::Files {
            component.exclude.extend(args.exclude.iter().cloned());
        }
    }
    for name in &args.critical {
        let component = components
            .iter_mut()
            .find(|component| &component.name == name)
            .ok_or_else(|| anyhow!("--critical {name:?}: no component of that name"))?;
        component.critical = true;
    }
    for spec in &args.chunking {
        let (name, profile) = super::split_spec("--chunking", spec, "NAME=PROFILE")?;
        let choice = ChunkingChoice::parse(profile).map_err(|why| anyhow!("--chunking {why}"))?;
        let component = components
            .iter_mut()
            .find(|component| component.name == name)
            .ok_or_else(|| anyhow!("--chunking {name:?}: no component of that name"))?;
        component.chunking = choice;
    }
    Ok(components)
}

fn parse_labels(args: &BackupArgs) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for spec in &args.labels {
        let (key, value) = spec
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| anyhow!("--label {spec:?}: expected KEY=VALUE"))?;
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(anyhow!("--label {key:?} is given twice"));
        }
    }
    Ok(labels)
}

pub fn run(context: &Context, args: &BackupArgs) -> Result<u8> {
    crate::interrupt::say_on_interrupt(
        "nothing was committed (no snapshot written); packs already written are reused by the next run",
    );
    let Ok(plan) = super::plan::load_if_given(args.plan.as_deref()) else {
        return Ok(exit::ERROR);
    };
    let planned_context = crate::plan::context_for(context, plan.as_ref());
    let context = planned_context.as_ref().unwrap_or(context);
    let planned = plan
        .as_ref()
        .map(|plan| plan.components.clone())
        .unwrap_or_default();
    let mut components = parse_components(args, planned)?;
    let mut labels = plan
        .as_ref()
        .map(|plan| plan.labels.clone())
        .unwrap_or_default();
    labels.extend(parse_labels(args)?);
    let mut tags = plan
        .as_ref()
        .map(|plan| plan.tags.clone())
        .unwrap_or_default();
    tags.extend(args.tags.iter().cloned());
    let host = args
        .host
        .clone()
        .or_else(|| plan.as_ref().and_then(|plan| plan.host.clone()));
    let mut hooks = plan
        .as_ref()
        .map(|plan| plan.hooks.clone())
        .unwrap_or_default();
    for (flag, specs, before) in [
        ("--before", &args.before, true),
        ("--after", &args.after, false),
    ] {
        for spec in specs {
            let (name, command) = super::split_spec(flag, spec, "NAME=COMMAND")?;
            if !components.iter().any(|component| component.name == name) {
                return Err(anyhow!("{flag} {name:?}: no component of that name"));
            }
            let entry = hooks.entry(name.to_string()).or_default();
            let slot = if before {
                &mut entry.before
            } else {
                &mut entry.after
            };
            *slot = Some(command.to_string());
        }
    }
    let app_version = args
        .app_version
        .clone()
        .or_else(|| plan.as_ref().and_then(|plan| plan.app_version.clone()));
    if let Some(version) = &app_version {
        cairn_store::format::manifest::check_app_version(version)
            .map_err(|error| anyhow!("--app-version: {error}"))?;
    }
    backup_with_hooks(
        context,
        args,
        &mut components,
        tags,
        labels,
        (host, app_version),
        &hooks,
    )
}

/// Runs each component's before-hook (a failing one fails its component),
/// the backup, then each after-hook with the component's result.
fn backup_with_hooks(
    context: &Context,
    args: &BackupArgs,
    components: &mut [ComponentSource],
    tags: Vec<String>,
    labels: BTreeMap<String, String>,
    host_and_version: (Option<String>, Option<String>),
    hooks: &BTreeMap<String, crate::plan::Hooks>,
) -> Result<u8> {
    for component in components.iter_mut() {
        let Some(before) = hooks.get(&component.name).and_then(|h| h.before.as_ref()) else {
            continue;
        };
        if let Err(why) = run_hook(before, &component.name, "before", None) {
            component.failed_before = Some(format!("before-hook {why}"));
        }
    }
    let started = std::time::Instant::now();
    let mut metrics = crate::metrics::Metrics::default();
    let result = run_backup(
        context,
        args,
        components.to_vec(),
        tags,
        labels,
        host_and_version,
        &mut metrics,
    );
    // `success` says a snapshot was stored; `complete` that it holds every
    // component whole, so an alert on it fires when any component failed
    // (`success` alone stays 1 while a non-critical pg dump is missing).
    let success =
        matches!(&result, Ok((code, _)) if *code == exit::SUCCESS || *code == exit::INCOMPLETE);
    let complete = matches!(&result, Ok((code, _)) if *code == exit::SUCCESS);
    metrics.gauge(
        "backup_complete",
        "1 if the last backup stored every component whole (no component failed, no file left out), else 0.",
        &[],
        if complete { 1.0 } else { 0.0 },
    );
    crate::metrics::finish(context, "backup", metrics, success, started)?;
    for component in components.iter() {
        let Some(after) = hooks.get(&component.name).and_then(|h| h.after.as_ref()) else {
            continue;
        };
        let failed = match &result {
            Ok((_, failed)) => failed.contains(&component.name),
            Err(_) => true,
        };
        let verdict = if failed { "failed" } else { "ok" };
        if let Err(why) = run_hook(after, &component.name, "after", Some(verdict)) {
            eprintln!("cairn: component {}: after-hook {why}", component.name);
        }
    }
    result.map(|(code, _)| code)
}

/// Runs a hook with `sh -c`, telling it the component, the phase and (after
/// the backup) the component's result in its environment.
pub(crate) fn run_hook(
    hook: &str,
    component: &str,
    phase: &str,
    result: Option<&str>,
) -> std::result::Result<(), String> {
    let mut hook = Hook::new(hook)
        .env("CAIRN_COMPONENT", component)
        .env("CAIRN_PHASE", phase);
    if let Some(result) = result {
        hook = hook.env("CAIRN_RESULT", result);
    }
    hook.run().map_err(|failure| failure.to_string())
}

/// The backup proper: its exit code and the components that failed.
fn run_backup(
    context: &Context,
    args: &BackupArgs,
    components: Vec<ComponentSource>,
    tags: Vec<String>,
    labels: BTreeMap<String, String>,
    (host, app_version): (Option<String>, Option<String>),
    metrics: &mut crate::metrics::Metrics,
) -> Result<(u8, Vec<String>)> {
    if let Some(tag) = tags.iter().find(|tag| tag.is_empty()) {
        return Err(anyhow!("--tag {tag:?}: a tag cannot be empty"));
    }
    let options = BackupOptions {
        components,
        tags,
        labels,
        host,
        force_read: args.force_read,
        staging: None,
        secret_keys: context.secret_key_paths(),
        app_version,
    };
    // Sources are checked before the index is opened, so bad input costs
    // nothing and writes nothing.
    cairn_store::ops::backup::check_sources(&options.components)?;
    if context.repository_locations()?.len() > 1 {
        return run_backup_to_each(context, &options, metrics);
    }
    let target = open_target(context, context.repository_location()?)?;
    let staging = context.staging_directory()?;
    let options = BackupOptions {
        staging: staging.path().map(Path::to_path_buf),
        ..options
    };
    let progress = CliProgress::new(context.global.json);
    let outcome = backup_with_progress(&target.destination(), &options, &progress);
    drop(staging);
    progress.finish();
    let outcome = outcome?;
    remember(context, &target.repository, &outcome);
    let failed = outcome.failed_component_names();
    record_metrics(metrics, &outcome);
    let body = &outcome.body;
    let written = &outcome.written;
    if context.global.json {
        crate::output::print_json(&json!({
            "snapshot": outcome.snapshot.to_hex(),
            "time": body.time,
            "host": body.host,
            "parent": body.parent.map(|id| id.to_hex()),
            "components": summarise_components(body),
            "new_chunks": written.new_blobs,
            "reused_chunks": written.reused_blobs,
            "new_bytes": written.new_raw_bytes,
            "stored_bytes": written.new_stored_bytes,
            "packs_written": written.packs_written,
            "index_files_written": written.index_files_written,
            "unvouched_stored_again": written.unvouched_stored_again,
            "delta_chunks": written.delta_blobs,
            "adopted_packs": outcome.adopted_packs,
            "unchanged_files": outcome.unchanged_files,
            "problems": body.problems,
            "complete": body.problems.is_empty(),
            "secret_keys_left_out": secret_keys_json(&outcome),
        }))?;
    } else {
        println!("snapshot {} saved", outcome.snapshot.short());
        for component in &body.components {
            let stats = &component.stats;
            println!(
                "  {:<16} {} files, {} directories, {}",
                component.name,
                stats.files,
                stats.directories,
                bytes(stats.bytes)
            );
        }
        println!(
            "  added {} ({} stored) in {} packs; {} new blobs ({} as deltas), {} reused",
            bytes(written.new_raw_bytes),
            bytes(written.new_stored_bytes),
            written.packs_written,
            written.new_blobs,
            written.delta_blobs,
            written.reused_blobs
        );
        if outcome.unchanged_files > 0 {
            println!(
                "  {} unchanged files taken from the parent snapshot without reading them",
                outcome.unchanged_files
            );
        }
        if outcome.adopted_packs > 0 {
            println!(
                "  indexed {} packs left by an interrupted backup",
                outcome.adopted_packs
            );
        }
    }
    warn_unvouched(written.unvouched_stored_again);
    warn_secret_keys(&outcome);
    Ok((report_problems(&outcome), failed))
}

/// Secret key files left out, for `--json`.
fn secret_keys_json(outcome: &BackupOutcome) -> serde_json::Value {
    json!(
        outcome
            .secret_keys_left_out
            .iter()
            .map(|(path, why)| json!({"path": path, "why": why}))
            .collect::<Vec<_>>()
    )
}

/// Names each secret key file the backup left out (cairn never stores
/// its own secrets; README, "Secret keys are never backed up").
fn warn_secret_keys(outcome: &BackupOutcome) {
    for (path, why) in &outcome.secret_keys_left_out {
        eprintln!("cairn: warning: left out {path}: {why} (cairn never stores secret keys)");
    }
}

/// Each component of a snapshot, for `--json`.
pub(crate) fn summarise_components(body: &SnapshotBody) -> Vec<serde_json::Value> {
    body.components
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "kind": c.kind, "source": c.source, "tree": c.tree.to_hex(),
                "files": c.stats.files, "directories": c.stats.directories, "symlinks": c.stats.symlinks,
                "bytes": c.stats.bytes, "chunks": c.stats.chunks,
                "chunking": c.chunking(&body.chunker).to_string(),
            })
        })
        .collect()
}

/// The exit status a verdict stands for.
pub(crate) fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Complete => exit::SUCCESS,
        Verdict::Incomplete => exit::INCOMPLETE,
        Verdict::CriticalFailed => exit::CRITICAL,
        Verdict::SomeRepositoriesFailed => exit::SOME_REPOSITORIES_FAILED,
        Verdict::Failed => exit::ERROR,
    }
}

/// Says what the snapshot could not hold; the exit code that follows from
/// it (0, 3, or 7 for a failed critical component).
fn report_problems(outcome: &BackupOutcome) -> u8 {
    let body = &outcome.body;
    let verdict = outcome.verdict();
    if verdict == Verdict::Complete {
        return exit::SUCCESS;
    }
    eprintln!(
        "cairn: snapshot {} is incomplete: {} problem(s)",
        outcome.snapshot.short(),
        body.problems.len()
    );
    for problem in &body.problems {
        eprintln!(
            "  {}/{}: {}",
            problem.component, problem.path, problem.problem
        );
    }
    if verdict == Verdict::CriticalFailed {
        eprintln!(
            "cairn: backup FAILED: critical component(s) {} failed (the others are stored in snapshot {})",
            outcome.critical_failures().join(", "),
            outcome.snapshot.short()
        );
    }
    exit_code(verdict)
}

/// A repository opened for a backup, with its index and signing key.
pub(crate) struct OpenedTarget {
    pub(crate) repository: Repository,
    index: OpenedIndex,
    key: SigningKey,
    walk_cache: Option<PathBuf>,
}

/// Remembers the snapshot just written as the newest of its group, so that
/// its disappearance is noticed (roll-back detection). Only a cache: a
/// failure is said and costs nothing else.
pub(crate) fn remember(context: &Context, repository: &Repository, outcome: &BackupOutcome) {
    let remembered = context
        .rollback_memory(repository)
        .and_then(|path| match path {
            Some(path) => Ok(cairn_store::ops::rollback::remember(
                &path,
                repository.id(),
                outcome.snapshot,
                &outcome.body,
            )?),
            None => Ok(()),
        });
    if let Err(error) = remembered {
        eprintln!(
            "cairn: warning: cannot remember the new snapshot for roll-back detection: {error:#}"
        );
    }
}

pub(crate) fn open_target(context: &Context, location: &str) -> Result<OpenedTarget> {
    let repository = context.open_repository_at(location)?;
    let key = context.signing_key(&repository)?;
    let removed = repository.backend().remove_stale_temporaries()?;
    if removed > 0 {
        eprintln!(
            "cairn: removed {removed} temporary file(s) left by crashed writers over a day ago in {location}"
        );
    }
    let index = context.open_index(&repository)?;
    let walk_cache = context.walk_cache(&repository)?;
    Ok(OpenedTarget {
        repository,
        index,
        key,
        walk_cache,
    })
}

impl OpenedTarget {
    pub(crate) fn destination(&self) -> Destination<'_> {
        Destination {
            repository: &self.repository,
            index: self.index.index.as_ref(),
            key: &self.key,
            walk_cache: self.walk_cache.as_deref(),
        }
    }
}

/// One pass into every `--repo`: each repository that can be opened gets
/// its own snapshot; one failing leaves the others to finish. Exit code 8
/// if some failed, an error if all did.
fn run_backup_to_each(
    context: &Context,
    options: &BackupOptions,
    metrics: &mut crate::metrics::Metrics,
) -> Result<(u8, Vec<String>)> {
    let locations = context.repository_locations()?;
    let opened: Vec<std::result::Result<OpenedTarget, String>> = locations
        .iter()
        .map(|location| open_target(context, location).map_err(|error| format!("{error:#}")))
        .collect();
    let targets = locations
        .iter()
        .zip(&opened)
        .map(|(location, target)| Target {
            location: location.clone(),
            opened: target
                .as_ref()
                .map(OpenedTarget::destination)
                .map_err(Clone::clone),
        })
        .collect();
    let progress = CliProgress::new(context.global.json);
    let staging = context.staging_directory()?;
    let options = BackupOptions {
        staging: staging.path().map(Path::to_path_buf),
        ..options.clone()
    };
    let outcome = backup_into_targets(targets, &options, &progress);
    drop(staging);
    progress.finish();
    let outcome = outcome?;
    for (target, (_, result)) in opened.iter().zip(&outcome.repositories) {
        if let (Ok(target), Ok(done)) = (target, result) {
            remember(context, &target.repository, done);
        }
    }
    let first = outcome.first();
    if let Some(first) = first {
        record_metrics(metrics, first);
    }
    for (location, result) in &outcome.repositories {
        metrics.gauge(
            "backup_repository_ok",
            "1 for each repository this backup stored its snapshot in, 0 for each it failed.",
            &[("repository", location)],
            if result.is_ok() { 1.0 } else { 0.0 },
        );
    }
    let verdict = outcome.verdict();
    if context.global.json {
        let repositories: Vec<serde_json::Value> = outcome
            .repositories
            .iter()
            .map(|(location, result)| match result {
                Ok(outcome) => json!({
                    "repository": location,
                    "ok": true,
                    "snapshot": outcome.snapshot.to_hex(),
                    "parent": outcome.body.parent.map(|id| id.to_hex()),
                    "new_chunks": outcome.written.new_blobs,
                    "reused_chunks": outcome.written.reused_blobs,
                    "new_bytes": outcome.written.new_raw_bytes,
                    "stored_bytes": outcome.written.new_stored_bytes,
                    "packs_written": outcome.written.packs_written,
                    "adopted_packs": outcome.adopted_packs,
                }),
                Err(why) => json!({"repository": location, "ok": false, "error": failure(why)}),
            })
            .collect();
        crate::output::print_json(&json!({
            "repositories": repositories,
            "components": first.map(|outcome| summarise_components(&outcome.body)),
            "unchanged_files": first.map(|outcome| outcome.unchanged_files),
            "problems": first.map(|outcome| &outcome.body.problems),
            "secret_keys_left_out": first.map(secret_keys_json),
            "complete": verdict == Verdict::Complete,
        }))?;
    } else {
        for (location, result) in &outcome.repositories {
            if let Ok(outcome) = result {
                println!(
                    "snapshot {} saved in {location}: {} new chunks ({} stored)",
                    outcome.snapshot.short(),
                    outcome.written.new_blobs,
                    bytes(outcome.written.new_stored_bytes)
                );
            }
        }
    }
    for (location, result) in &outcome.repositories {
        if let Err(why) = result {
            eprintln!("cairn: backup into {location} FAILED: {}", failure(why));
        }
    }
    let Some(first) = first else {
        return Err(anyhow!(
            "the backup failed in every repository ({})",
            locations.join(", ")
        ));
    };
    for (_, result) in &outcome.repositories {
        if let Ok(stored) = result {
            warn_unvouched(stored.written.unvouched_stored_again);
        }
    }
    warn_secret_keys(first);
    let code = report_problems(first);
    if verdict == Verdict::SomeRepositoriesFailed {
        report_failed_repositories(&outcome);
        return Ok((exit_code(verdict), outcome.failed_components()));
    }
    Ok((code, outcome.failed_components()))
}

/// Why a repository holds no snapshot, as one line.
pub(crate) fn failure(failure: &TargetFailure) -> String {
    match failure {
        TargetFailure::NotOpened(why) => why.clone(),
        TargetFailure::Failed(error) => {
            let mut line = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            line
        }
    }
}

fn report_failed_repositories(outcome: &TargetsOutcome) {
    let failed = outcome.failed_locations();
    let total = outcome.repositories.len();
    eprintln!(
        "cairn: backup stored in {} of {total} repositories; failed in {}",
        total - failed.len(),
        failed.join(", ")
    );
}

/// What a backup did, as metrics: totals, then per component.
pub(crate) fn record_metrics(
    metrics: &mut crate::metrics::Metrics,
    outcome: &cairn_store::ops::backup::BackupOutcome,
) {
    let body = &outcome.body;
    let written = &outcome.written;
    let read: u64 = body.components.iter().map(|c| c.stats.bytes).sum();
    let files: u64 = body.components.iter().map(|c| c.stats.files).sum();
    let totals = [
        (
            "backup_bytes_read",
            "Bytes in the components backed up.",
            read as f64,
        ),
        (
            "backup_bytes_added",
            "Bytes of new chunks, uncompressed.",
            written.new_raw_bytes as f64,
        ),
        (
            "backup_bytes_stored",
            "Bytes of new chunks as stored.",
            written.new_stored_bytes as f64,
        ),
        ("backup_files", "Files in the snapshot.", files as f64),
        (
            "backup_chunks_new",
            "Chunks stored by this backup.",
            written.new_blobs as f64,
        ),
        (
            "backup_chunks_reused",
            "Chunks found already stored.",
            written.reused_blobs as f64,
        ),
        (
            "backup_errors",
            "Problems recorded in the snapshot (unreadable files, failed components).",
            body.problems.len() as f64,
        ),
    ];
    for (name, help, value) in totals {
        metrics.gauge(name, help, &[], value);
    }
    for component in &body.components {
        metrics.gauge(
            "backup_component_bytes",
            "Bytes in each component.",
            &[("component", &component.name)],
            component.stats.bytes as f64,
        );
    }
    for component in &body.components {
        metrics.gauge(
            "backup_component_files",
            "Files in each component.",
            &[("component", &component.name)],
            component.stats.files as f64,
        );
    }
    metrics.gauge(
        "backup_components_failed",
        "Components that failed in the last backup (critical or not); 0 when none did.",
        &[],
        outcome.failed_components.len() as f64,
    );
    for (name, _) in &outcome.failed_components {
        metrics.gauge(
            "backup_component_failed",
            "1 for each component that failed.",
            &[("component", name)],
            1.0,
        );
    }
}

/// Says, on stderr, that chunks were stored again because only index files
/// no trusted key vouches for listed them: what a repository written
/// before signed index files costs until `cairn repair index` seals it.
fn warn_unvouched(stored_again: u64) {
    if stored_again > 0 {
        eprintln!(
            "cairn: notice: {stored_again} chunk(s) were stored again because only unsigned or untrusted index files \
             list them (a repository from before signed index files, or planted ones); \
             `cairn repair index` reads every pack, checks it and seals the index so later backups reuse them"
        );
    }
}
