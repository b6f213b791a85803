//! `cairn verify`: an audit report and an exit code a job can act on.

use crate::args::VerifyArgs;
use crate::context::Context;
use crate::exit;
use crate::output::bytes;
use crate::progress::CliProgress;
use anyhow::Result;
use cairn_store::Repository;
use cairn_store::index::IndexCache;
use cairn_store::ops::verify::{
    CrossCheck, DataCheck, FindingKind, Severity, Subset, VerifyOptions, VerifyReport, cross_check,
    finding, verify,
};
use cairn_store::progress::Progress;

/// Audits one repository as the flags say.
/// Audits one repository, with the keys trusted for it; a snapshot this
/// machine saw as the newest of its group that has gone without a trusted
/// forget record is damage too (a roll-back).
pub(crate) fn audit(
    context: &Context,
    repository: &Repository,
    args: &VerifyArgs,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let trusted = context.trusted_keys(repository)?;
    let data = match (&args.read_data_subset, args.read_data) {
        (Some(spec), _) => DataCheck::Subset(
            Subset::parse(spec)
                .map_err(|error| crate::context::Usage::flag("--read-data-subset", spec, error))?,
        ),
        (None, true) => DataCheck::All,
        (None, false) => DataCheck::None,
    };
    if args.snapshots.is_empty() && !(args.filter.hosts.is_empty() && args.filter.tags.is_empty()) {
        return Err(anyhow::Error::new(crate::context::Usage(
            "--host and --tag choose which snapshot `--snapshot latest` means; give --snapshot"
                .into(),
        )));
    }
    let filter = args.filter.filter();
    let snapshots = args
        .snapshots
        .iter()
        .map(|spec| {
            let selected = cairn_store::ops::select::select(repository, &trusted, spec, &filter)?;
            super::warn_passed_over(&selected.passed_over);
            Ok::<_, cairn_store::StoreError>(selected.id)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = VerifyOptions {
        data,
        snapshots,
        components: args.filter.components.clone(),
    };
    let mut report = verify(repository, &trusted, options, progress)?;
    for gone in super::rolled_back(context, repository, &trusted) {
        report.findings.push(finding(
            FindingKind::RolledBack,
            format!("snapshot {}", gone.id),
            cairn_store::ops::rollback::describe(&gone),
        ));
    }
    Ok(report)
}

fn reads_data(args: &VerifyArgs) -> bool {
    args.read_data || args.read_data_subset.is_some()
}

pub fn run(context: &Context, args: &VerifyArgs) -> Result<u8> {
    crate::interrupt::say_on_interrupt("nothing was changed (verify only reads)");
    if context.repository_locations()?.len() > 1 {
        return run_on_each(context, args);
    }
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots and trees `verify` checks")?;
    let reads_data = reads_data(args);
    let started = std::time::Instant::now();
    let progress = CliProgress::new(context.global.json);
    let report = audit(context, &repository, args, &progress);
    progress.finish();
    let report = report?;
    let clean = report.is_clean();
    let mut metrics = crate::metrics::Metrics::default();
    metrics.gauge(
        "verify_healthy",
        "1 if the last verify found no damage, else 0.",
        &[],
        if clean { 1.0 } else { 0.0 },
    );
    let damage = report.damage_count();
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
        let mut value = report_json(&report, reads_data)?;
        value["encrypted"] = serde_json::Value::Bool(repository.is_encrypted());
        crate::output::print_json(&value)?;
    } else {
        println!("{}", super::encryption_line(&repository));
        print_report(&report, reads_data);
    }
    Ok(if clean { exit::SUCCESS } else { exit::DAMAGE })
}

/// Said whenever a verify read no pack: its "clean" covers structure only.
const READ_NO_DATA: &str =
    "read no data: packs were checked by their listed size only, not read (--read-data reads them)";

/// Said when objects failed their check but no snapshot lost anything.
const DAMAGED_BUT_RESTORABLE: &str =
    "objects failed their check; every snapshot is still restorable from other copies";

fn report_json(report: &VerifyReport, reads_data: bool) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(report)?;
    value["clean"] = serde_json::Value::Bool(report.is_clean());
    value["read_data"] = serde_json::Value::Bool(reads_data);
    value["data_check"] = data_check(reads_data);
    value["damaged_snapshots"] = serde_json::to_value(report.damaged_snapshots())?;
    Ok(value)
}

/// The `data_check` sentence of a run that read no pack contents, null
/// for one that did: always present, so a script need not test for it.
fn data_check(reads_data: bool) -> serde_json::Value {
    if reads_data {
        serde_json::Value::Null
    } else {
        serde_json::Value::String(READ_NO_DATA.into())
    }
}

fn print_report(report: &VerifyReport, reads_data: bool) {
    let clean = report.is_clean();
    println!(
        "checked {} snapshots, {} index files, {} packs, {} trees, {} chunk references",
        report.snapshots, report.index_files, report.packs, report.trees, report.chunk_references
    );
    if reads_data {
        println!(
            "read {} of {} packs, {} blobs, {}",
            report.packs_read,
            report.packs_in_scope,
            report.blobs_read,
            bytes(report.bytes_read)
        );
    } else {
        println!("{READ_NO_DATA}");
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
    let damaged = report.damaged_snapshots();
    if clean {
        println!("no damage found");
    } else if damaged.is_empty() {
        println!(
            "DAMAGED: {} {DAMAGED_BUT_RESTORABLE}",
            report.damage_count()
        );
    } else {
        println!(
            "DAMAGED: snapshots that cannot be restored in full: {}",
            damaged.join(", ")
        );
    }
}

/// One repository's audit and, for what it cannot give intact, whether
/// another repository given holds an intact copy.
struct Audited {
    location: String,
    encrypted: Option<bool>,
    report: std::result::Result<VerifyReport, String>,
    cross: CrossCheck,
}

/// `verify` with several `--repo`: each repository audited in turn; the
/// blobs one cannot give intact are looked for in the others, so the report
/// says whether a restore given all of them would still be whole.
fn run_on_each(context: &Context, args: &VerifyArgs) -> Result<u8> {
    let started = std::time::Instant::now();
    let reads_data = reads_data(args);
    let mut opened = Vec::new();
    for location in context.repository_locations()? {
        let repository = context.open_repository_at(location).and_then(|repository| {
            repository.require_read_key("the snapshots and trees `verify` checks")?;
            let index = context.open_index(&repository)?;
            Ok((repository, index))
        });
        opened.push((location.clone(), repository));
    }
    let progress = CliProgress::new(context.global.json);
    let mut audited = Vec::new();
    for (position, (location, repository)) in opened.iter().enumerate() {
        let report = match repository {
            Ok((repository, _)) => {
                audit(context, repository, args, &progress).map_err(|error| format!("{error:#}"))
            }
            Err(error) => Err(format!("{error:#}")),
        };
        let others: Vec<(&Repository, &dyn IndexCache)> = opened
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != position)
            .filter_map(|(_, (_, candidate))| candidate.as_ref().ok())
            .map(|(repository, index)| (repository, index.index.as_ref()))
            .collect();
        let cross = match &report {
            Ok(report) => cross_check(report, &others),
            Err(_) => CrossCheck::default(),
        };
        audited.push(Audited {
            location: location.clone(),
            encrypted: repository
                .as_ref()
                .ok()
                .map(|(repository, _)| repository.is_encrypted()),
            report,
            cross,
        });
    }
    progress.finish();
    let mut metrics = crate::metrics::Metrics::default();
    for each in &audited {
        metrics.gauge(
            "verify_healthy",
            "1 if the last verify found no damage, else 0.",
            &[("repository", &each.location)],
            if each.report.as_ref().is_ok_and(VerifyReport::is_clean) {
                1.0
            } else {
                0.0
            },
        );
    }
    crate::metrics::finish(context, "verify", metrics, true, started)?;
    let all_clean = audited
        .iter()
        .all(|each| each.report.as_ref().is_ok_and(VerifyReport::is_clean));
    let whole = audited
        .iter()
        .all(|each| each.report.is_ok() && each.cross.is_whole());
    if context.global.json {
        let mut repositories = Vec::new();
        for each in &audited {
            repositories.push(match &each.report {
                Ok(report) => serde_json::json!({
                    "repository": each.location,
                    "encrypted": each.encrypted,
                    "report": report_json(report, reads_data)?,
                    "unreadable_blobs": each.cross.unreadable,
                    "intact_elsewhere": each.cross.intact_elsewhere,
                }),
                Err(why) => serde_json::json!({"repository": each.location, "error": why}),
            });
        }
        let mut summary = serde_json::json!({
            "repositories": repositories,
            "clean": all_clean,
            "restorable_from_all": whole,
            "read_data": reads_data,
        });
        summary["data_check"] = data_check(reads_data);
        crate::output::print_json(&summary)?;
    } else {
        for each in &audited {
            println!("== {}", each.location);
            match each.encrypted {
                Some(true) => println!("repository: encrypted"),
                Some(false) => println!("repository: plaintext (not encrypted)"),
                None => {}
            }
            match &each.report {
                Ok(report) => {
                    print_report(report, reads_data);
                    if each.cross.unreadable > 0 {
                        println!(
                            "{} of the {} blobs it cannot give intact are intact in another repository given{}",
                            each.cross.intact_elsewhere,
                            each.cross.unreadable,
                            if each.cross.is_whole() {
                                ": a restore given all of them is whole"
                            } else {
                                ""
                            }
                        );
                    }
                }
                Err(why) => println!("cannot audit: {why}"),
            }
        }
    }
    Ok(if all_clean {
        exit::SUCCESS
    } else {
        exit::DAMAGE
    })
}
