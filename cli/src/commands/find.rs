//! `cairn find`: where files matching a glob are, across the trusted
//! snapshots, newest first.

use crate::args::FindArgs;
use crate::context::{Context, Usage};
use crate::exit;
use anyhow::Result;
use cairn_store::format::tree::EntryKind;
use cairn_store::ops::find::{Pattern, find};
use cairn_store::ops::listing::list_snapshots;
use serde_json::json;
use std::collections::HashMap;

pub fn run(context: &Context, args: &FindArgs) -> Result<u8> {
    let pattern = Pattern::new(&args.pattern).map_err(|error| Usage(error.to_string()))?;
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots `find` searches")?;
    let trusted = context.trusted_keys(&repository)?;
    let (listed, _) = list_snapshots(&repository, &trusted)?;
    let (trusted_snapshots, untrusted): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .partition(|summary| summary.trusted.is_ok());
    if !untrusted.is_empty() {
        eprintln!(
            "cairn: warning: {} snapshot(s) not signed by a trusted key were not searched",
            untrusted.len()
        );
    }
    // The filters, with tags as they stand now (`cairn tag` annotations).
    let filter = args.filter.filter();
    let annotations = cairn_store::ops::annotate::read_annotations(&repository, &trusted)?;
    let snapshots: Vec<_> = trusted_snapshots
        .into_iter()
        .filter(|summary| {
            filter.matches(
                &summary.body,
                &annotations.effective(&summary.id, &summary.body).tags,
            )
        })
        .map(|summary| (summary.id, summary.body))
        .collect();
    let times: HashMap<_, _> = snapshots
        .iter()
        .map(|(id, body)| (*id, body.time.clone()))
        .collect();
    let opened = context.open_index(&repository)?;
    let found = find(&repository, opened.index.as_ref(), &snapshots, &pattern)?;
    let time_of = |id: &cairn_store::Id| times.get(id).cloned().unwrap_or_default();
    if context.global.json {
        let matches: Vec<_> = found
            .iter()
            .map(|item| {
                json!({
                    "snapshot": item.snapshot.to_hex(),
                    "time": time_of(&item.snapshot),
                    "path": item.path,
                    "kind": item.entry.kind,
                    "size": item.entry.size,
                    "mode": format!("{:04o}", item.entry.mode),
                    "mtime": item.entry.mtime,
                    "mtime_nanos": item.entry.mtime_nanos,
                })
            })
            .collect();
        crate::output::print_json(&matches)?;
    } else {
        for item in &found {
            let kind = match item.entry.kind {
                EntryKind::File => '-',
                EntryKind::Directory => 'd',
                EntryKind::Symlink => 'l',
            };
            let mtime = jiff::Timestamp::from_second(item.entry.mtime)
                .map(|time| time.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            println!(
                "{}  {}  {kind}{:04o} {:>12}  {mtime}  {}",
                item.snapshot.short(),
                time_of(&item.snapshot),
                item.entry.mode,
                item.entry.size,
                item.path
            );
        }
        if found.is_empty() {
            eprintln!(
                "cairn: nothing matches {:?} in {} snapshot(s)",
                args.pattern,
                snapshots.len()
            );
        }
    }
    Ok(exit::SUCCESS)
}
