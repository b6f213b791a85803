//! `cairn ls`: the files of a snapshot, or of one component or path in it;
//! `-l` adds owners (named as on this machine), human sizes and mtimes.

use crate::args::LsArgs;
use crate::commands::verified_snapshot;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use cairn_store::format::tree::EntryKind;
use cairn_store::ops::listing::list_entries;
use serde_json::json;
use std::collections::HashMap;

pub fn run(context: &Context, args: &LsArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshot `ls` lists")?;
    let (id, body) =
        verified_snapshot(context, &repository, &args.snapshot, &args.filter.filter())?;
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
    } else if args.long {
        let users = names("/etc/passwd");
        let groups = names("/etc/group");
        let zone = jiff::tz::TimeZone::system();
        for item in &listed {
            let entry = &item.entry;
            let owner = |names: &HashMap<u32, String>, id: u32| {
                names.get(&id).cloned().unwrap_or_else(|| id.to_string())
            };
            let mtime = jiff::Timestamp::from_second(entry.mtime)
                .map(|time| {
                    time.to_zoned(zone.clone())
                        .strftime("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_else(|_| format!("@{}", entry.mtime));
            let target = entry
                .target
                .as_ref()
                .map(|target| format!(" -> {}", String::from_utf8_lossy(target)))
                .unwrap_or_default();
            println!(
                "{} {:<8} {:<8} {:>10}  {mtime}  {}{target}",
                mode_text(entry.kind, entry.mode),
                owner(&users, entry.uid),
                owner(&groups, entry.gid),
                crate::output::bytes(entry.size),
                item.path
            );
        }
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

/// `drwxr-xr-x`: the kind and the permission bits as `ls -l` writes them,
/// set-id and sticky bits included.
fn mode_text(kind: EntryKind, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(match kind {
        EntryKind::File => '-',
        EntryKind::Directory => 'd',
        EntryKind::Symlink => 'l',
    });
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (shift, (bit, set_x, set_no_x)) in [6u32, 3, 0].into_iter().zip(special) {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(match (bits & 1 != 0, mode & bit != 0) {
            (true, true) => set_x,
            (false, true) => set_no_x,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    text
}

/// Names by numeric id from this machine's `/etc/passwd` or `/etc/group`
/// (the owner a restore with --same-owner would give); an id with no
/// name here is shown as the number. A file that cannot be read gives
/// numbers only.
fn names(path: &str) -> HashMap<u32, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((id, name.to_string()))
        })
        .collect()
}
