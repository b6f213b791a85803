//! `cairn drill`: the quarterly restore rehearsal as one command. The
//! library ([`cairn_store::ops::drill`]) restores each component of a
//! snapshot into a scratch directory, runs the kind's own check and times
//! each; this command gives it the plan's check commands and the progress
//! bar, appends the drill's record to the history file (through the
//! library, synced), records metrics, and renders the result.

use crate::args::DrillArgs;
use crate::context::Context;
use crate::exit;
use crate::progress::CliProgress;
use anyhow::Result;
use cairn_store::ops::drill::{DrillOptions, append_history, choose_snapshot, drill};
use std::time::Instant;

pub fn run(context: &Context, args: &DrillArgs) -> Result<u8> {
    let Ok(plan) = super::plan::load_if_given(args.plan.as_deref()) else {
        return Ok(exit::ERROR);
    };
    let planned_context = crate::plan::context_for(context, plan.as_ref());
    let context = planned_context.as_ref().unwrap_or(context);
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshot `drill` restores")?;
    let required: Vec<String> = plan
        .iter()
        .flat_map(|plan| &plan.components)
        .map(|component| component.name.clone())
        .collect();
    // With a plan, `latest` is the plan's own last run (its host, its
    // components), never another plan's snapshot that happens to be newer.
    let (snapshot, body, chosen) = match &plan {
        // --host, when given, names the host instead of the plan's.
        Some(plan) if args.snapshot == "latest" && args.filter.tags.is_empty() => {
            let trusted = context.trusted_keys(&repository)?;
            let host = args.filter.hosts.first().or(plan.host.as_ref());
            let chosen =
                choose_snapshot(&repository, &trusted, host.map(String::as_str), &required)?;
            (chosen.id, chosen.body, chosen.why)
        }
        _ => {
            let mut filter = args.filter.filter();
            if let Some(plan) = &plan
                && filter.hosts.is_empty()
            {
                filter.hosts.push(
                    plan.host
                        .clone()
                        .unwrap_or_else(cairn_store::ops::common::host_name),
                );
            }
            let (snapshot, body) =
                super::verified_snapshot(context, &repository, &args.snapshot, &filter)?;
            let why = if args.snapshot.starts_with("latest") && !filter.is_empty() {
                format!("{} with {}", args.snapshot, filter.describe())
            } else if args.snapshot == "latest" {
                "the newest snapshot (no plan given)".to_string()
            } else {
                format!("named by --snapshot {}", args.snapshot)
            };
            (snapshot, body, why)
        }
    };
    let opened = context.open_index(&repository)?;
    let checks = plan
        .iter()
        .flat_map(|plan| &plan.hooks)
        .filter_map(|(name, hooks)| Some((name.clone(), hooks.check.clone()?)))
        .collect();
    let options = DrillOptions {
        scratch_parent: args.scratch.clone(),
        checks,
        required,
        chosen,
    };

    let started = Instant::now();
    let progress = CliProgress::new(context.global.json);
    let report = drill(
        &repository,
        opened.index.as_ref(),
        snapshot,
        &body,
        &options,
        &progress,
    )?;
    progress.finish();
    let ok = report.ok();
    let record = report.record(context.repository_location()?);
    let history = match &args.history {
        Some(path) => path.clone(),
        None => context.config_dir()?.join("drill-history.jsonl"),
    };
    append_history(&history, &record)?;
    let mut metrics = crate::metrics::Metrics::default();
    for component in &report.components {
        metrics.gauge(
            "drill_component_restore_seconds",
            "Seconds the drill took to restore and check each component.",
            &[("component", &component.name)],
            component.seconds,
        );
    }
    for component in &report.components {
        metrics.gauge(
            "drill_component_ok",
            "1 if the component restored and passed its checks, else 0.",
            &[("component", &component.name)],
            if component.ok() { 1.0 } else { 0.0 },
        );
    }
    crate::metrics::finish(context, "drill", metrics, ok, started)?;

    if context.global.json {
        crate::output::print_json(&record)?;
    } else {
        println!(
            "drill of snapshot {} ({}), {}:",
            snapshot.short(),
            body.time,
            report.chosen
        );
        for component in &report.components {
            let verdict = if component.ok() { "ok" } else { "FAILED" };
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
