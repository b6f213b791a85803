//! `cairn repair index`: rebuild the index from pack headers.

use crate::args::RepairCommand;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use cairn_store::ops::repair::repair_index;
use serde_json::json;

pub fn run(context: &Context, command: &RepairCommand) -> Result<u8> {
    match command {
        RepairCommand::Index => index(context),
    }
}

fn index(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    let outcome = repair_index(&repository)?;
    if context.global.json {
        crate::output::print_json(&json!({
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
    if outcome.unreadable_packs.is_empty() {
        return Ok(exit::SUCCESS);
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
