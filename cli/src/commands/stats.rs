//! `cairn stats`: space used by the repository and each component, by one
//! snapshot, or what a retention policy would free.

use crate::args::StatsArgs;
use crate::commands::verified_snapshot;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use cairn_store::ops::forget::{ForgetOptions, choose};
use cairn_store::ops::stats::{GroupUse, freed_by_forgetting, repository_stats, snapshot_stats};
use serde_json::json;

pub fn run(context: &Context, args: &StatsArgs) -> Result<u8> {
    let retention = args.retention.read()?;
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots and index `stats` reads")?;
    let opened = context.open_index(&repository)?;
    let index = opened.index.as_ref();
    let json = context.global.json;
    if let Some(spec) = &args.snapshot {
        let (id, body) = verified_snapshot(context, &repository, spec, &args.filter.filter())?;
        let stats = snapshot_stats(&repository, index, &id, &body)?;
        if json {
            let mut value = serde_json::to_value(&stats)?;
            value["snapshot"] = json!(id.to_hex());
            crate::output::print_json(&value)?;
        } else {
            let restore = &stats.restore;
            println!("snapshot {} ({})", id.short(), body.time);
            println!(
                "restore size:     {} in {} file(s), {} directories, {} symlink(s)",
                bytes(restore.bytes),
                restore.files,
                restore.directories,
                restore.symlinks
            );
            print_use(&stats.usage);
        }
        return Ok(exit::SUCCESS);
    }
    if !retention.policy.is_empty() {
        let trusted = context.trusted_keys(&repository)?;
        let options = ForgetOptions {
            policy: retention.policy,
            group_by: retention.group_by,
            // As `forget` would: expired safety snapshots count as freed.
            keep_safety: retention.keep_safety,
            dry_run: true,
            // Stats says what a policy would do, even a policy that a
            // forget would refuse for emptying a group.
            allow_empty: true,
            ..ForgetOptions::default()
        };
        let (outcome, policy_text) = choose(&repository, &trusted, &options)?;
        let forgotten: Vec<_> = outcome.forgotten.iter().map(|s| s.id).collect();
        let freed = freed_by_forgetting(&repository, index, &forgotten)?;
        if json {
            crate::output::print_json(&json!({
                "policy": policy_text,
                "forgotten": forgotten.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
                "kept": outcome.groups.iter().flat_map(|g| g.decisions.iter())
                    .filter(|d| d.keep).map(|d| d.id.to_hex()).collect::<Vec<_>>(),
                "would_free": freed.unique,
            }))?;
        } else {
            println!("policy: {policy_text}");
            println!(
                "would forget {} snapshot(s): {}",
                forgotten.len(),
                forgotten
                    .iter()
                    .map(|id| id.short())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            println!(
                "a prune would then free up to {} ({} stored in {} blob(s), {} raw)",
                bytes(freed.unique.stored_bytes),
                freed.unique.stored_bytes,
                freed.unique.blobs,
                bytes(freed.unique.raw_bytes)
            );
        }
        return Ok(exit::SUCCESS);
    }
    let stats = repository_stats(&repository, index)?;
    for (id, why) in &stats.unreadable_snapshots {
        eprintln!("cairn: warning: snapshot {id} cannot be read and is not counted: {why}");
    }
    for (id, why) in &stats.unreadable_index_files {
        eprintln!("cairn: warning: index file {id} cannot be read and is not counted: {why}");
    }
    if json {
        let mut value = serde_json::to_value(&stats)?;
        let named = |unreadable: &[(cairn_store::Id, String)]| {
            unreadable
                .iter()
                .map(|(id, why)| json!({"id": id.to_hex(), "error": why}))
                .collect::<Vec<_>>()
        };
        value["unreadable_snapshots"] = json!(named(&stats.unreadable_snapshots));
        value["unreadable_index_files"] = json!(named(&stats.unreadable_index_files));
        crate::output::print_json(&value)?;
        return Ok(exit::SUCCESS);
    }
    println!("snapshots:          {}", stats.snapshots);
    println!(
        "stored:             {} in {} pack(s)",
        bytes(stats.stored_bytes),
        stats.packs
    );
    println!(
        "blobs:              {} data, {} tree ({} raw, {} stored)",
        stats.data_blobs,
        stats.tree_blobs,
        bytes(stats.blob_raw_bytes),
        bytes(stats.blob_stored_bytes)
    );
    println!("logical (restore):  {}", bytes(stats.logical_bytes));
    println!("compression ratio:  {:.2}", stats.compression_ratio);
    println!("deduplication:      {:.2}", stats.deduplication_ratio);
    if !stats.components.is_empty() {
        println!(
            "{:<20} {:>9} {:>12} {:>12} {:>12}",
            "component", "snapshots", "logical", "referenced", "unique"
        );
        for component in &stats.components {
            println!(
                "{:<20} {:>9} {:>12} {:>12} {:>12}",
                component.name,
                component.snapshots,
                bytes(component.logical_bytes),
                bytes(component.usage.referenced.stored_bytes),
                bytes(component.usage.unique.stored_bytes)
            );
        }
    }
    Ok(exit::SUCCESS)
}

fn print_use(usage: &GroupUse) {
    let line = |what: &str, bytes_of: &cairn_store::ops::stats::Bytes| {
        println!(
            "{what:<18}{} stored ({} raw) in {} blob(s)",
            bytes(bytes_of.stored_bytes),
            bytes(bytes_of.raw_bytes),
            bytes_of.blobs
        );
    };
    line("references:", &usage.referenced);
    line("only it holds:", &usage.unique);
}
