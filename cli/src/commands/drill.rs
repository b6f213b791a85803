//! `cairn drill`: the quarterly restore rehearsal as one command. Restores
//! each component of a snapshot into a scratch directory (every file is
//! checked against its hash as it is written), runs the kind's own check
//! (SQLite's integrity check; a plan's `check` command), times each, and
//! appends one JSON line per drill to a history file.

use crate::args::DrillArgs;
use crate::context::Context;
use crate::exit;
use anyhow::{Context as _, Result};
use cairn_store::manifest::{ComponentKind, ComponentRecord};
use cairn_store::ops::restore::{
    NoProgress, RestoreOptions, Selection, Sources, execute_restore, plan_restore,
};
use cairn_store::{Id, Repository};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// How one component fared.
struct ComponentDrill {
    name: String,
    kind: ComponentKind,
    seconds: f64,
    files: u64,
    bytes: u64,
    problems: Vec<String>,
}

pub fn run(context: &Context, args: &DrillArgs) -> Result<u8> {
    let Ok(plan) = super::plan::load_if_given(args.plan.as_deref()) else {
        return Ok(exit::ERROR);
    };
    let planned_context = crate::plan::context_for(context, plan.as_ref());
    let context = planned_context.as_ref().unwrap_or(context);
    let repository = context.open_repository()?;
    let (snapshot, body) = super::verified_snapshot(context, &repository, &args.snapshot)?;
    let opened = context.open_index(&repository)?;
    let mut scratch = tempfile::Builder::new();
    scratch.prefix("cairn-drill-");
    let scratch = match &args.scratch {
        Some(directory) => scratch.tempdir_in(directory),
        None => scratch.tempdir(),
    }
    .context("creating the drill's scratch directory")?;

    let started = Instant::now();
    let mut drilled = Vec::new();
    for component in &body.components {
        let check = plan
            .as_ref()
            .and_then(|plan| plan.hooks.get(&component.name))
            .and_then(|hooks| hooks.check.clone());
        drilled.push(drill_component(
            &repository,
            opened.index.as_ref(),
            snapshot,
            &body,
            component,
            scratch.path(),
            check.as_deref(),
        ));
    }
    let ok = drilled
        .iter()
        .all(|component| component.problems.is_empty());
    let record = json!({
        "time": cairn_store::ops::common::now_rfc3339(),
        "repository": context.repository_location()?,
        "snapshot": snapshot.to_hex(),
        "snapshot_time": body.time,
        "ok": ok,
        "seconds": started.elapsed().as_secs_f64(),
        "components": drilled.iter().map(|component| json!({
            "name": component.name,
            "kind": component.kind,
            "ok": component.problems.is_empty(),
            "seconds": component.seconds,
            "files": component.files,
            "bytes": component.bytes,
            "problems": component.problems,
        })).collect::<Vec<_>>(),
    });
    let history = match &args.history {
        Some(path) => path.clone(),
        None => context.config_dir()?.join("drill-history.jsonl"),
    };
    append_line(&history, &record)?;
    let mut metrics = crate::metrics::Metrics::default();
    for component in &drilled {
        metrics.gauge(
            "drill_component_restore_seconds",
            "Seconds the drill took to restore and check each component.",
            &[("component", &component.name)],
            component.seconds,
        );
    }
    for component in &drilled {
        metrics.gauge(
            "drill_component_ok",
            "1 if the component restored and passed its checks, else 0.",
            &[("component", &component.name)],
            if component.problems.is_empty() {
                1.0
            } else {
                0.0
            },
        );
    }
    crate::metrics::finish(context, "drill", metrics, ok, started)?;

    if context.global.json {
        crate::output::print_json(&record)?;
    } else {
        println!("drill of snapshot {} ({}):", snapshot.short(), body.time);
        for component in &drilled {
            let verdict = if component.problems.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            println!(
                "  {:<16} {verdict:<6} {:>8.2} s  {} files, {}",
                component.name,
                component.seconds,
                component.files,
                crate::output::bytes(component.bytes)
            );
            for problem in &component.problems {
                println!("      {problem}");
            }
        }
        println!(
            "{} in {:.2} s; recorded in {}",
            if ok { "drill passed" } else { "drill FAILED" },
            started.elapsed().as_secs_f64(),
            history.display()
        );
    }
    Ok(if ok { exit::SUCCESS } else { exit::DAMAGE })
}

fn drill_component(
    repository: &Repository,
    index: &dyn cairn_store::index::IndexCache,
    snapshot: Id,
    body: &cairn_store::manifest::SnapshotBody,
    component: &ComponentRecord,
    scratch: &Path,
    check: Option<&str>,
) -> ComponentDrill {
    let started = Instant::now();
    let mut drilled = ComponentDrill {
        name: component.name.clone(),
        kind: component.kind,
        seconds: 0.0,
        files: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    let options = RestoreOptions {
        target: scratch.to_path_buf(),
        selection: Selection {
            only: vec![component.name.clone()],
            ..Selection::default()
        },
        delete: false,
    };
    let restored = plan_restore(
        repository,
        index,
        &Sources::new(&[]),
        snapshot,
        body,
        &options,
    )
    .and_then(|plan| {
        let outcome = execute_restore(
            repository,
            index,
            &Sources::new(&[]),
            &plan,
            None,
            &NoProgress,
        )?;
        Ok((plan, outcome))
    });
    let destination = scratch.join(&component.name);
    match restored {
        Err(error) => drilled.problems.push(format!("restore failed: {error}")),
        Ok((plan, outcome)) => {
            for planned in &plan.components {
                for (path, why) in &planned.unreadable {
                    drilled.problems.push(format!("{path}: {why}"));
                }
                for (path, chunk) in &planned.missing_chunks {
                    drilled
                        .problems
                        .push(format!("{path}: chunk {chunk} is missing"));
                }
            }
            for failure in &outcome.failures {
                drilled
                    .problems
                    .push(format!("{}: {}", failure.path, failure.error));
            }
            drilled.files = outcome.files_written;
            drilled.bytes = outcome.bytes_written;
        }
    }
    if drilled.problems.is_empty() && component.kind == ComponentKind::Sqlite {
        match cairn_store::sqlite::integrity_check(&destination) {
            Ok(problems) => drilled.problems.extend(
                problems
                    .into_iter()
                    .map(|line| format!("SQLite integrity check: {line}")),
            ),
            Err(error) => drilled
                .problems
                .push(format!("SQLite integrity check: {error}")),
        }
    }
    if let (true, Some(check)) = (drilled.problems.is_empty(), check) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(check)
            .env("CAIRN_FILE", &destination)
            .env("CAIRN_COMPONENT", &component.name)
            .stdin(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => drilled
                .problems
                .push(format!("check {check:?} exited with {status}")),
            Err(error) => drilled
                .problems
                .push(format!("check {check:?} could not start: {error}")),
        }
    }
    drilled.seconds = started.elapsed().as_secs_f64();
    drilled
}

/// Appends one line and syncs it, so a history survives a crash.
fn append_line(path: &Path, record: &serde_json::Value) -> Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening drill history {}", path.display()))?;
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing drill history {}", path.display()))?;
    Ok(())
}
