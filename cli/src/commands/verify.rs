//! `cairn verify`: an audit report and an exit code a job can act on.

use crate::args::VerifyArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use cairn_store::ops::verify::{Severity, VerifyOptions, verify};

pub fn run(context: &Context, args: &VerifyArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    let trusted = context.trusted_keys()?;
    let report = verify(
        &repository,
        &trusted,
        VerifyOptions {
            read_data: args.read_data,
        },
    )?;
    let clean = report.is_clean();
    if context.global.json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = serde_json::Value::Bool(clean);
        value["read_data"] = serde_json::Value::Bool(args.read_data);
        value["damaged_snapshots"] = serde_json::to_value(report.damaged_snapshots())?;
        crate::output::print_json(&value)?;
    } else {
        println!(
            "checked {} snapshots, {} index files, {} packs, {} trees, {} chunk references",
            report.snapshots,
            report.index_files,
            report.packs,
            report.trees,
            report.chunk_references
        );
        if args.read_data {
            println!(
                "read {} packs, {} blobs, {}",
                report.packs_read,
                report.blobs_read,
                bytes(report.bytes_read)
            );
        }
        for finding in &report.findings {
            let label = match finding.severity {
                Severity::Damage => "DAMAGE",
                Severity::Notice => "notice",
            };
            println!("{label}: {}: {}", finding.object, finding.message);
            for affected in &finding.affected {
                println!(
                    "    affects snapshot {} component {} path {}",
                    affected.snapshot, affected.component, affected.path
                );
            }
            let unlisted = finding.affected_total - finding.affected.len() as u64;
            if unlisted > 0 {
                println!("    … and {unlisted} more paths");
            }
        }
        if clean {
            println!("no damage found");
        } else {
            println!(
                "DAMAGED: snapshots that cannot be restored in full: {}",
                report.damaged_snapshots().join(", ")
            );
        }
    }
    Ok(if clean { exit::SUCCESS } else { exit::DAMAGE })
}
