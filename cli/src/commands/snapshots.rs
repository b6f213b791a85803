//! `cairn snapshots`: every snapshot, oldest first, with its trust status;
//! warns of unreadable manifests and of snapshots gone without a trusted
//! forget record (roll-back detection).

use crate::args::SnapshotsArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use cairn_store::ops::annotate::read_annotations;
use cairn_store::ops::listing::list_snapshots;
use serde_json::json;

pub fn run(context: &Context, args: &SnapshotsArgs) -> Result<u8> {
    if args.forgotten {
        return forgotten(context);
    }
    let repository = context.open_repository()?;
    // Listing works without trust; it only reports it.
    let trusted = context.trusted_keys_or_none(&repository)?;
    let (mut snapshots, broken) = list_snapshots(&repository, &trusted)?;
    super::warn_rolled_back(&super::rolled_back(context, &repository, &trusted));
    for (id, why) in &broken {
        eprintln!("cairn: warning: snapshot {id} cannot be read: {why}");
    }
    // Tags and labels as they stand now: the manifest's, unless a trusted
    // annotation (`cairn tag`) changed them.
    let annotations = read_annotations(&repository, &trusted)?;
    for (id, why) in &annotations.ignored {
        eprintln!("cairn: warning: annotation {id} is ignored: {why}");
    }
    let filter = args.filter.filter();
    snapshots.retain(|snapshot| {
        filter.matches(
            &snapshot.body,
            &annotations.effective(&snapshot.id, &snapshot.body).tags,
        )
    });
    if context.global.json {
        let listed: Vec<_> = snapshots
            .iter()
            .map(|snapshot| snapshot_json(snapshot, &annotations))
            .collect();
        let broken: Vec<_> = broken
            .iter()
            .map(|(id, error)| json!({"id": id.to_hex(), "error": error}))
            .collect();
        crate::output::print_json(&json!({
            "snapshots": listed,
            "unreadable": broken,
            "encrypted": repository.is_encrypted(),
        }))?;
    } else {
        println!("{}", super::encryption_line(&repository));
        println!(
            "{:<10} {:<20} {:<16} {:>10}  components",
            "id", "time (UTC)", "host", "size"
        );
        for snapshot in &snapshots {
            let body = &snapshot.body;
            let total: u64 = body.components.iter().map(|c| c.stats.bytes).sum();
            let names: Vec<&str> = body.components.iter().map(|c| c.name.as_str()).collect();
            let mut notes = Vec::new();
            if snapshot.trusted.is_err() {
                notes.push("UNTRUSTED".to_string());
            }
            if !body.problems.is_empty() {
                notes.push(format!("incomplete: {} problems", body.problems.len()));
            }
            let now = annotations.effective(&snapshot.id, body);
            if !now.tags.is_empty() {
                notes.push(format!("tags: {}", now.tags.join(",")));
            }
            if !now.labels.is_empty() {
                let labels: Vec<String> = now
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                notes.push(format!("labels: {}", labels.join(",")));
            }
            println!(
                "{:<10} {:<20} {:<16} {:>10}  {}{}",
                snapshot.id.short(),
                body.time.get(..19).unwrap_or(&body.time).replace('T', " "),
                body.host,
                bytes(total),
                names.join(","),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", notes.join("; "))
                }
            );
        }
        for (id, error) in &broken {
            println!("{:<10} UNREADABLE: {error}", id.short());
        }
    }
    // An unreadable manifest is listed and warned about by id, never a
    // failure of the listing: one planted object must not break it (the
    // audit that fails on it is `verify`).
    Ok(exit::SUCCESS)
}

/// One snapshot as `snapshots --json` (and `cairn serve`'s
/// `GET /snapshots`) lists it.
pub(crate) fn snapshot_json(
    snapshot: &cairn_store::ops::listing::SnapshotSummary,
    annotations: &cairn_store::ops::annotate::Annotations,
) -> serde_json::Value {
    let body = &snapshot.body;
    let now = annotations.effective(&snapshot.id, body);
    json!({
        "id": snapshot.id.to_hex(),
        "time": body.time,
        "host": body.host,
        "user": body.user,
        "tags": now.tags,
        "labels": now.labels,
        "manifest_tags": body.tags,
        "manifest_labels": body.labels,
        "annotation": now.annotation.map(|(id, sequence)| json!({
            "id": id.to_hex(), "sequence": sequence,
        })),
        "parent": body.parent.map(|id| id.to_hex()),
        "trusted": snapshot.trusted.is_ok(),
        "trust_problem": snapshot.trusted.as_ref().err(),
        "complete": body.problems.is_empty(),
        "components": body.components.iter().map(|c| json!({
            "name": c.name, "kind": c.kind, "files": c.stats.files,
            "bytes": c.stats.bytes, "chunks": c.stats.chunks,
            "chunking": c.chunking(&body.chunker).to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// The forget records, oldest first.
fn forgotten(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    let trusted = context.trusted_keys(&repository)?;
    let mut records = cairn_store::ops::forget::read_forget_records(&repository, &trusted)?;
    records.sort_by(|a, b| (&a.1.time, a.0).cmp(&(&b.1.time, b.0)));
    if context.global.json {
        let listed: Vec<_> = records
            .iter()
            .map(|(id, record, signer)| {
                json!({
                    "record": id.to_hex(),
                    "signer": signer.to_hex(),
                    "time": record.time,
                    "host": record.host,
                    "user": record.user,
                    "policy": record.policy,
                    "snapshots": record.snapshots.iter().map(|s| json!({
                        "id": s.id.to_hex(), "time": s.time, "host": s.host,
                        "components": s.components, "tags": s.tags,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        crate::output::print_json(&listed)?;
        return Ok(exit::SUCCESS);
    }
    for (id, record, signer) in &records {
        println!(
            "{}  {}  {}@{} (key {})  {}  forgot {} snapshot(s)",
            id.short(),
            record.time,
            record.user,
            record.host,
            &signer.to_hex()[..16],
            record.policy,
            record.snapshots.len()
        );
        for snapshot in &record.snapshots {
            println!(
                "    {}  {}  {}  {}",
                snapshot.id.short(),
                snapshot.time,
                snapshot.host,
                snapshot.components.join(",")
            );
        }
    }
    if records.is_empty() {
        println!("no snapshot has been forgotten");
    }
    Ok(exit::SUCCESS)
}
