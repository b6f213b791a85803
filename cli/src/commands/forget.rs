//! `cairn forget`: which snapshots a policy keeps and why, the record of
//! what was forgotten, and optionally the prune that follows.

use crate::args::ForgetArgs;
use crate::context::Context;
use crate::exit;
use anyhow::{Result, anyhow};
use cairn_store::ops::forget::{ForgetOptions, ForgetOutcome, forget};
use cairn_store::ops::stats::freed_by_forgetting;
use serde_json::json;

pub fn run(context: &Context, args: &ForgetArgs) -> Result<u8> {
    let Ok(plan) = super::plan::load_if_given(args.plan.as_deref()) else {
        return Ok(exit::ERROR);
    };
    let planned_context = crate::plan::context_for(context, plan.as_ref());
    let context = planned_context.as_ref().unwrap_or(context);
    let retention = args.retention.read()?;
    let mut policy = retention.policy;
    if let Some(plan) = plan
        .as_ref()
        .filter(|_| policy.is_empty() && args.snapshots.is_empty())
    {
        policy = plan.retention.clone().ok_or_else(|| {
            anyhow!("the plan has no [retention] table and no --keep-* flag was given")
        })?;
    }
    let options = ForgetOptions {
        policy,
        group_by: retention.group_by,
        explicit: args.snapshots.clone(),
        dry_run: args.dry_run,
        allow_empty: args.allow_empty,
        keep_safety: retention.keep_safety,
    };
    // Checked before anything is forgotten, so a typo in a prune flag
    // cannot leave a forget done and its prune not.
    let prune_options = args
        .prune
        .then(|| super::prune::options(&args.prune_options, args.dry_run))
        .transpose()?;
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots `forget` chooses among")?;
    let trusted = context.trusted_keys(&repository)?;
    let key = context.signing_key(&repository)?;
    let outcome = forget(&repository, &key, &trusted, &options)?;
    // What a prune could then give back, by the same accounting as
    // `cairn stats --keep-*`.
    let would_free = if args.dry_run {
        let forgotten: Vec<_> = outcome.forgotten.iter().map(|s| s.id).collect();
        let opened = context.open_index(&repository)?;
        Some(freed_by_forgetting(&repository, opened.index.as_ref(), &forgotten)?.unique)
    } else {
        None
    };
    if context.global.json && prune_options.is_none() {
        let mut value = outcome_json(&outcome, args.dry_run);
        value["would_free"] = json!(would_free);
        crate::output::print_json(&value)?;
    } else if !context.global.json {
        print_outcome(&outcome, args.dry_run, args.prune);
        if let Some(freed) = would_free {
            println!(
                "a prune would then free up to {} ({} stored in {} blob(s), {} raw)",
                crate::output::bytes(freed.stored_bytes),
                freed.stored_bytes,
                freed.blobs,
                crate::output::bytes(freed.raw_bytes)
            );
        }
    }
    let Some(prune_options) = prune_options else {
        return Ok(exit::SUCCESS);
    };
    if context.global.json {
        // One JSON document for the whole job.
        let (prune_value, code) = match super::prune::execute(context, &prune_options)? {
            super::prune::Pruned::Done(pruned) => (
                super::prune::report_json(&pruned, args.dry_run),
                exit::SUCCESS,
            ),
            super::prune::Pruned::Damage(error) => (json!({"error": error}), exit::DAMAGE),
        };
        let mut value = outcome_json(&outcome, args.dry_run);
        value["would_free"] = json!(would_free);
        value["prune"] = prune_value;
        crate::output::print_json(&value)?;
        return Ok(code);
    }
    super::prune::run_with(context, &prune_options)
}

fn outcome_json(outcome: &ForgetOutcome, dry_run: bool) -> serde_json::Value {
    json!({
        "dry_run": dry_run,
        "groups": outcome.groups.iter().map(|group| json!({
            "group": group.key.to_string(),
            "snapshots": group.decisions.iter().map(|decision| json!({
                "id": decision.id.to_hex(),
                "keep": decision.keep,
                "reasons": decision.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "forgotten": outcome.forgotten.iter().map(|s| s.id.to_hex()).collect::<Vec<_>>(),
        "untrusted": outcome.untrusted.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        "record": outcome.record.map(|id| id.to_hex()),
        "completed": outcome.completed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
    })
}

fn print_outcome(outcome: &ForgetOutcome, dry_run: bool, pruning: bool) {
    for group in &outcome.groups {
        println!("group {}:", group.key);
        for decision in &group.decisions {
            if decision.keep {
                let reasons: Vec<String> = decision.reasons.iter().map(|r| r.to_string()).collect();
                println!("    keep   {}  {}", decision.id.short(), reasons.join(", "));
            } else {
                println!("    forget {}", decision.id.short());
            }
        }
    }
    if outcome.groups.is_empty() {
        for snapshot in &outcome.forgotten {
            println!("    forget {}", snapshot.id.short());
        }
    }
    if !outcome.untrusted.is_empty() {
        println!(
            "{} snapshot(s) not signed by a trusted key were left alone",
            outcome.untrusted.len()
        );
    }
    let verb = if dry_run { "would forget" } else { "forgot" };
    match outcome.record {
        Some(record) => println!(
            "{verb} {} snapshot(s); recorded in forget record {}",
            outcome.forgotten.len(),
            record.short()
        ),
        None => println!("{verb} {} snapshot(s)", outcome.forgotten.len()),
    }
    if !outcome.completed.is_empty() {
        println!(
            "finished {} deletion(s) an interrupted forget had recorded",
            outcome.completed.len()
        );
    }
    if !dry_run && !pruning && !outcome.forgotten.is_empty() {
        println!("run `cairn prune` to give their space back");
    }
}
