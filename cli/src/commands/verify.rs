//! `cairn verify`: an audit report and an exit code a job can act on.

use crate::args::VerifyArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use anyhow::Result;
use anyhow::anyhow;
use cairn_store::ops::verify::{DataCheck, Severity, Subset, VerifyOptions, verify};

pub fn run(context: &Context, args: &VerifyArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    let trusted = context.trusted_keys()?;
    let data = match (&args.read_data_subset, args.read_data) {
        (Some(spec), _) => DataCheck::Subset(
            Subset::parse(spec).map_err(|error| anyhow!("--read-data-subset {error}"))?,
        ),
        (None, true) => DataCheck::All,
        (None, false) => DataCheck::None,
    };
    let snapshots = args
        .snapshots
        .iter()
        .map(|spec| repository.resolve_snapshot_trusted(spec, Some(&trusted)))
        .collect::<Result<Vec<_>, _>>()?;
    let options = VerifyOptions {
        data,
        snapshots,
        components: args.components.clone(),
    };
    let reads_data = options.data != DataCheck::None;
    let started = std::time::Instant::now();
    let report = verify(&repository, &trusted, options)?;
    let clean = report.is_clean();
    let mut metrics = crate::metrics::Metrics::default();
    metrics.gauge(
        "verify_healthy",
        "1 if the last verify found no damage, else 0.",
        &[],
        if clean { 1.0 } else { 0.0 },
    );
    let damage = report
        .findings
        .iter()
        .filter(|finding| finding.severity == Severity::Damage)
        .count();
    metrics.gauge(
        "verify_damage_findings",
        "Findings that cost data.",
        &[],
        damage as f64,
    );
    metrics.gauge(
        "verify_bytes_read",
        "Bytes of packs read back.",
        &[],
        report.bytes_read as f64,
    );
    metrics.gauge(
        "verify_packs_read",
        "Packs read back.",
        &[],
        report.packs_read as f64,
    );
    // A verify that ran is a success as a job; health says what it found.
    crate::metrics::finish(context, "verify", metrics, true, started)?;
    if context.global.json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = serde_json::Value::Bool(clean);
        value["read_data"] = serde_json::Value::Bool(reads_data);
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
        if reads_data {
            println!(
                "read {} of {} packs, {} blobs, {}",
                report.packs_read,
                report.packs_in_scope,
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
