//! `cairn ls`: the files of a snapshot, or of one component or path in it.

use crate::args::LsArgs;
use crate::commands::verified_snapshot;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use cairn_store::format::tree::EntryKind;
use cairn_store::ops::listing::list_entries;
use serde_json::json;

pub fn run(context: &Context, args: &LsArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshot `ls` lists")?;
    let (id, body) = verified_snapshot(context, &repository, &args.snapshot)?;
    let opened = context.open_index(&repository)?;
    let listed = list_entries(
        &repository,
        opened.index.as_ref(),
        &body,
        &id.short(),
        args.path.as_deref(),
    )?;
    if context.global.json {
        let entries: Vec<_> = listed.iter().map(entry_json).collect();
        crate::output::print_json(&entries)?;
    } else {
        for item in &listed {
            let entry = &item.entry;
            let kind = match entry.kind {
                EntryKind::File => '-',
                EntryKind::Directory => 'd',
                EntryKind::Symlink => 'l',
            };
            let target = entry
                .target
                .as_ref()
                .map(|target| format!(" -> {}", String::from_utf8_lossy(target)))
                .unwrap_or_default();
            println!(
                "{kind}{:04o} {:>12}  {}{target}",
                entry.mode, entry.size, item.path
            );
        }
    }
    Ok(exit::SUCCESS)
}

/// One entry as `ls --json` (and `cairn serve`'s `GET /snapshots/{id}`)
/// lists it.
pub(crate) fn entry_json(item: &cairn_store::ops::listing::ListedEntry) -> serde_json::Value {
    let entry = &item.entry;
    json!({
        "path": item.path,
        "kind": entry.kind,
        "size": entry.size,
        "mode": format!("{:04o}", entry.mode),
        "uid": entry.uid,
        "gid": entry.gid,
        "mtime": entry.mtime,
        "mtime_nanos": entry.mtime_nanos,
        "hash": entry.hash.map(|hash| hash.to_hex()),
        "chunks": entry.chunks.as_ref().map(|chunks| chunks.iter().map(|c| c.to_hex()).collect::<Vec<_>>()),
        "target": entry.target.as_ref().map(|target| String::from_utf8_lossy(target).into_owned()),
    })
}
