//! `cairn snapshots`: every snapshot, oldest first, with its trust status.

use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use cairn_store::keys::TrustStore;
use cairn_store::ops::listing::list_snapshots;
use serde_json::json;

pub fn run(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    // Listing works without trust; it only reports it.
    let trusted = if context.global.trusted_keys.is_empty() {
        TrustStore::new(&context.config_dir()?).trusted_keys()?
    } else {
        context.trusted_keys()?
    };
    let (snapshots, broken) = list_snapshots(&repository, &trusted)?;
    if context.global.json {
        let listed: Vec<_> = snapshots
            .iter()
            .map(|snapshot| {
                let body = &snapshot.body;
                json!({
                    "id": snapshot.id.to_hex(),
                    "time": body.time,
                    "host": body.host,
                    "user": body.user,
                    "tags": body.tags,
                    "labels": body.labels,
                    "parent": body.parent.map(|id| id.to_hex()),
                    "trusted": snapshot.trusted.is_ok(),
                    "trust_problem": snapshot.trusted.as_ref().err(),
                    "complete": body.problems.is_empty(),
                    "components": body.components.iter().map(|c| json!({
                        "name": c.name, "kind": c.kind, "files": c.stats.files,
                        "bytes": c.stats.bytes, "chunks": c.stats.chunks,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let broken: Vec<_> = broken
            .iter()
            .map(|(id, error)| json!({"id": id.to_hex(), "error": error}))
            .collect();
        crate::output::print_json(&json!({"snapshots": listed, "unreadable": broken}))?;
    } else {
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
            if !body.tags.is_empty() {
                notes.push(format!("tags: {}", body.tags.join(",")));
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
    Ok(if broken.is_empty() {
        exit::SUCCESS
    } else {
        exit::DAMAGE
    })
}
