//! `cairn repair index` rebuilds the index from the packs, reading and
//! checking every blob, and seals it with this host's key (how a
//! repository from before signed index files becomes vouched for); `cairn
//! repair snapshots` salvages snapshots that need lost data.

use crate::args::RepairCommand;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use cairn_store::ops::repair::{repair_index, repair_snapshots};
use cairn_store::ops::verify::{DataCheck, VerifyOptions, verify};
use cairn_store::progress::NoProgress;
use serde_json::json;
use std::collections::HashSet;

pub fn run(context: &Context, command: &RepairCommand) -> Result<u8> {
    match command {
        RepairCommand::Index => index(context),
        RepairCommand::Snapshots { read_data } => snapshots(context, *read_data),
        RepairCommand::Undelete => undelete(context),
    }
}

/// Removes the delete markers that hide repository objects, then opens the
/// repository the ordinary way to show it is whole again.
fn undelete(context: &Context) -> Result<u8> {
    let location = context.repository_location()?;
    let s3 = context.s3_backend_at(location, "repair undelete")?;
    let as_of = match &context.global.as_of {
        Some(time) => Some(cairn_store::backend::parse_as_of(time)?),
        None => None,
    };
    let undeleted = s3.undelete(as_of)?;
    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
    for (kind, _) in &undeleted.objects {
        *counts.entry(kind.label()).or_default() += 1;
    }
    // Opened without --as-of: the repository as it now is.
    let reopened = cairn_store::Repository::open(std::sync::Arc::new(s3));
    let opens = reopened.as_ref().map_err(ToString::to_string);
    if context.global.json {
        crate::output::print_json(&json!({
            "markers_removed": undeleted.markers_removed,
            "objects_restored": undeleted.objects.len(),
            "by_kind": counts,
            "repository_opens": opens.is_ok(),
            "open_error": opens.as_ref().err(),
        }))?;
    } else {
        println!(
            "removed {} delete marker(s); {} object(s) visible again",
            undeleted.markers_removed,
            undeleted.objects.len()
        );
        for (kind, count) in &counts {
            println!("  {count} {kind}");
        }
        match &opens {
            Ok(_) => println!("the repository opens; run `cairn verify` to check it whole"),
            Err(error) => println!("the repository still does not open: {error}"),
        }
    }
    Ok(if opens.is_ok() {
        exit::SUCCESS
    } else {
        exit::DAMAGE
    })
}

fn snapshots(context: &Context, read_data: bool) -> Result<u8> {
    let repository = context.open_repository()?;
    let trusted = context.trusted_keys(&repository)?;
    let key = context.signing_key(&repository)?;
    let corrupt: HashSet<_> = if read_data {
        let options = VerifyOptions {
            data: DataCheck::All,
            ..VerifyOptions::default()
        };
        verify(&repository, &trusted, options, &NoProgress)?
            .corrupt_blobs
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    let opened = context.open_index(&repository)?;
    let repaired = repair_snapshots(&repository, opened.index.as_ref(), &key, &trusted, &corrupt)?;
    if context.global.json {
        crate::output::print_json(&json!({
            "repaired": repaired.iter().map(|snapshot| json!({
                "original": snapshot.original.to_hex(),
                "repaired": snapshot.repaired.to_hex(),
                "omitted": snapshot.omitted,
            })).collect::<Vec<_>>(),
        }))?;
    } else if repaired.is_empty() {
        println!("no snapshot needs repair");
    } else {
        for snapshot in &repaired {
            println!(
                "snapshot {} -> repaired snapshot {} without {} path(s):",
                snapshot.original.short(),
                snapshot.repaired.short(),
                snapshot.omitted.len()
            );
            for omitted in &snapshot.omitted {
                println!(
                    "    {}/{}: {}",
                    omitted.component, omitted.path, omitted.problem
                );
            }
        }
        println!("the original snapshots are unchanged");
    }
    Ok(exit::SUCCESS)
}

fn index(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    let key = context.signing_key(&repository);
    if let Err(error) = &key {
        eprintln!(
            "cairn: notice: no signing key for this repository ({error:#}); the rebuilt index files are unsigned, \
             so backups will store data again rather than trust them and prunes will read packs' headers"
        );
    }
    let outcome = repair_index(&repository, key.as_ref().ok())?;
    if context.global.json {
        crate::output::print_json(&json!({
            "sealed": outcome.sealed,
            "unverified_packs": outcome.unverified_packs.iter()
                .map(|(pack, why)| json!({"pack": pack.to_hex(), "error": why}))
                .collect::<Vec<_>>(),
            "packs_indexed": outcome.packs_indexed,
            "blobs_indexed": outcome.blobs_indexed,
            "index_files_written": outcome.index_files_written,
            "index_files_removed": outcome.index_files_removed,
            "unreadable_packs": outcome.unreadable_packs.iter()
                .map(|(pack, why)| json!({"pack": pack.to_hex(), "error": why}))
                .collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "indexed {} packs ({} blobs) in {} new index files; removed {} old index files",
            outcome.packs_indexed,
            outcome.blobs_indexed,
            outcome.index_files_written,
            outcome.index_files_removed
        );
    }
    if !outcome.unverified_packs.is_empty() {
        eprintln!(
            "cairn: {} pack(s) failed their check (damaged, or planted by someone who can add objects); \
             listed in unsigned index files only, as hints:",
            outcome.unverified_packs.len()
        );
        for (pack, why) in &outcome.unverified_packs {
            eprintln!("  pack {pack}: {why}");
        }
    }
    if outcome.unreadable_packs.is_empty() && outcome.unverified_packs.is_empty() {
        return Ok(exit::SUCCESS);
    }
    if outcome.unreadable_packs.is_empty() {
        return Ok(exit::DAMAGE);
    }
    eprintln!(
        "cairn: {} pack(s) have unreadable headers and were left out of the index:",
        outcome.unreadable_packs.len()
    );
    for (pack, why) in &outcome.unreadable_packs {
        eprintln!("  pack {pack}: {why}");
    }
    Ok(exit::DAMAGE)
}
