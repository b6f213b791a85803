//! `cairn diff`: what changed between two snapshots, or between a
//! snapshot's component and the live files (`--live`).

use crate::args::DiffArgs;
use crate::commands::verified_snapshot;
use crate::context::{Context, Usage};
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use cairn_store::format::manifest::SnapshotBody;
use cairn_store::ops::diff::{ChangeKind, Diff, diff_live, diff_snapshots};
use serde_json::json;
use std::path::PathBuf;

pub fn run(context: &Context, args: &DiffArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots `diff` compares")?;
    let (older_id, older) =
        verified_snapshot(context, &repository, &args.older, &args.filter.filter())?;
    let opened = context.open_index(&repository)?;
    let index = opened.index.as_ref();
    let (diff, newer_id, live) = match (&args.newer, &args.live) {
        (Some(newer), _) => {
            let (newer_id, newer) =
                verified_snapshot(context, &repository, newer, &args.filter.filter())?;
            let diff = diff_snapshots(&repository, index, &older, &newer)?;
            (diff, Some(newer_id), None)
        }
        (None, Some(live)) => {
            let (component, path) = live_target(&older, live)?;
            let diff = diff_live(
                &repository,
                index,
                &older,
                &component,
                &older_id.short(),
                &path,
            )?;
            (diff, None, Some((component, path)))
        }
        (None, None) => {
            return Err(Usage("give a second snapshot or --live [NAME=]PATH".into()).into());
        }
    };
    if context.global.json {
        crate::output::print_json(&json!({
            "older": older_id.to_hex(),
            "newer": newer_id.map(|id| id.to_hex()),
            "live": live.as_ref().map(|(component, path)| json!({
                "component": component,
                "path": path.display().to_string(),
            })),
            "components_added": diff.components_added,
            "components_removed": diff.components_removed,
            "changes": diff.changes,
            "totals": diff.totals,
            "trees_read": diff.trees_read,
        }))?;
    } else {
        print_diff(&diff);
    }
    Ok(exit::SUCCESS)
}

/// The component and path `--live [NAME=]PATH` names: NAME when the
/// snapshot has such a component, else the component backed up from PATH,
/// else the snapshot's only component.
fn live_target(body: &SnapshotBody, live: &str) -> Result<(String, PathBuf)> {
    if let Some((name, path)) = live.split_once('=')
        && body.component(name).is_some()
    {
        return Ok((name.to_string(), PathBuf::from(path)));
    }
    let path = PathBuf::from(live);
    let canonical = std::fs::canonicalize(&path).ok();
    let from_source = body.components.iter().find(|component| {
        canonical.is_some() && std::fs::canonicalize(&component.source).ok() == canonical
    });
    match (from_source, body.components.as_slice()) {
        (Some(component), _) | (None, [component]) => Ok((component.name.clone(), path)),
        _ => Err(Usage(format!(
            "--live {live:?}: no component of the snapshot was backed up from there; name one as NAME=PATH (components: {})",
            body.component_names().join(", ")
        ))
        .into()),
    }
}

fn print_diff(diff: &Diff) {
    for name in &diff.components_added {
        println!("component added: {name}");
    }
    for name in &diff.components_removed {
        println!("component removed: {name}");
    }
    for change in &diff.changes {
        let (mark, detail) = match change.change {
            ChangeKind::Added => ('+', bytes(change.new_size.unwrap_or(0))),
            ChangeKind::Removed => ('-', bytes(change.old_size.unwrap_or(0))),
            ChangeKind::Changed => (
                'M',
                format!(
                    "{} -> {}",
                    bytes(change.old_size.unwrap_or(0)),
                    bytes(change.new_size.unwrap_or(0))
                ),
            ),
            ChangeKind::Metadata => ('U', change.fields.join(", ")),
        };
        let slash = if change.kind == cairn_store::format::tree::EntryKind::Directory {
            "/"
        } else {
            ""
        };
        println!("{mark} {}{slash}  ({detail})", change.path);
    }
    let totals = &diff.totals;
    println!(
        "added {} file(s), {}; removed {} file(s), {}; changed {} file(s), {}; metadata only {}",
        totals.added_files,
        bytes(totals.added_bytes),
        totals.removed_files,
        bytes(totals.removed_bytes),
        totals.changed_files,
        bytes(totals.changed_bytes),
        totals.metadata_only,
    );
}
