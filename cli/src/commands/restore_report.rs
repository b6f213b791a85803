//! `cairn restore --report PATH`: the restore's record for an incident
//! ticket, written as JSON to PATH and as Markdown beside it (PATH with
//! the extension `.md`). Renders facts the library's outcomes hold (the
//! snapshot and its manifest hash, the signer, the verdicts, the plan's
//! summary, the timings, the hooks, the safety snapshot); decides nothing
//! and never changes the exit code it is given.

use crate::output::bytes;
use anyhow::{Context as _, Result};
use cairn_store::ops::restore::{
    PreparedRestore, RestoreOutcome, RestorePlan, RunbookOutcome, Verdict,
};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything a report says; absent parts were not reached.
pub struct ReportFacts<'a> {
    pub repository: &'a str,
    pub target: &'a Path,
    pub prepared: &'a PreparedRestore,
    /// The manifest's signer, hex.
    pub signer: String,
    pub plan: Option<&'a RestorePlan>,
    pub outcome: Option<&'a RestoreOutcome>,
    pub runbook: Option<&'a RunbookOutcome>,
    /// `restored`, `refused`, `not-confirmed`, or the runbook's result.
    pub result: &'a str,
    pub exit_code: u8,
    /// Unix seconds when the restore command started, and its duration.
    pub started: f64,
    pub seconds: f64,
}

/// Where the Markdown twin of the JSON report at `path` goes.
pub fn markdown_path(path: &Path) -> PathBuf {
    path.with_extension("md")
}

/// Writes the JSON report to `path` and the Markdown one beside it.
pub fn write(path: &Path, facts: &ReportFacts) -> Result<()> {
    let report = to_json(facts);
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    let markdown_path = markdown_path(path);
    if markdown_path == path {
        anyhow::bail!(
            "--report {}: give the JSON report a name not ending in .md (the Markdown report goes beside it with .md)",
            path.display()
        );
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(&markdown_path, to_markdown(&report))
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    Ok(())
}

fn verdicts_json(verdicts: &[Verdict]) -> Value {
    json!(verdicts)
}

fn to_json(facts: &ReportFacts) -> Value {
    let prepared = facts.prepared;
    let plan = facts.plan.map(|plan| {
        json!({
            "totals": plan.totals(),
            "at_risk": plan.at_risk(),
            "components": plan.components.iter().map(|component| json!({
                "name": component.name,
                "destination": component.destination.display().to_string(),
                "counts": component.counts,
            })).collect::<Vec<_>>(),
        })
    });
    let outcome = facts.outcome;
    let timings = outcome.map(|outcome| {
        outcome
            .component_seconds
            .iter()
            .map(|(name, seconds)| {
                let check = facts.runbook.and_then(|runbook| {
                    runbook
                        .hooks
                        .iter()
                        .find(|run| run.phase == "check" && run.component.as_deref() == Some(name))
                        .map(|run| run.seconds)
                });
                json!({"component": name, "write_seconds": seconds, "check_seconds": check})
            })
            .collect::<Vec<_>>()
    });
    json!({
        "format": "cairn-restore-report-v1",
        "repository": facts.repository,
        "target": facts.target.display().to_string(),
        "snapshot": prepared.snapshot.to_hex(),
        // Objects are named by the BLAKE3 hash of their bytes: the
        // snapshot's id is the hash of its signed manifest.
        "manifest_hash": prepared.snapshot.to_hex(),
        "snapshot_time": prepared.body.time,
        "host": prepared.body.host,
        "app_version": prepared.body.app_version,
        "signer": facts.signer,
        "verdicts": verdicts_json(&prepared.verdicts),
        "plan": plan,
        "result": facts.result,
        "exit_code": facts.exit_code,
        "started_unix": facts.started,
        "seconds": facts.seconds,
        "restore_seconds": facts.runbook.map(|runbook| runbook.restore_seconds),
        "timings": timings,
        "files_written": outcome.map(|outcome| outcome.files_written),
        "bytes_written": outcome.map(|outcome| outcome.bytes_written),
        "failures": outcome.map(|outcome| outcome.failures.iter().map(|failure| json!({
            "component": failure.component, "path": failure.path, "error": failure.error,
        })).collect::<Vec<_>>()),
        "database_checks": outcome.map(|outcome| outcome.database_checks.iter().map(|check| json!({
            "component": check.component, "ok": check.passed(), "problems": check.problems,
        })).collect::<Vec<_>>()),
        "hooks": facts.runbook.map(|runbook| &runbook.hooks),
        "rolled_back": outcome.is_some_and(|outcome| outcome.rolled_back)
            || facts.runbook.is_some_and(|runbook| runbook.result.as_str().starts_with("roll")),
        "rollback_problems": facts.runbook.map(|runbook| runbook.rollback_problems.iter()
            .map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>()),
        "safety_snapshot": outcome.and_then(|outcome| outcome.safety_snapshot).map(|id| id.to_hex()),
    })
}

/// The same facts for a person: a heading, a table of facts, the
/// verdicts, the plan, the timings and the hooks.
fn to_markdown(report: &Value) -> String {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "—".to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "# cairn restore: {}\n", text(&report["result"]));
    let _ = writeln!(out, "| | |\n| --- | --- |");
    for (label, key) in [
        ("Snapshot", "snapshot"),
        ("Manifest hash (BLAKE3)", "manifest_hash"),
        ("Taken", "snapshot_time"),
        ("Host", "host"),
        ("Application version", "app_version"),
        ("Signer", "signer"),
        ("Repository", "repository"),
        ("Target", "target"),
        ("Exit code", "exit_code"),
        ("Seconds", "seconds"),
        ("Safety snapshot", "safety_snapshot"),
    ] {
        let _ = writeln!(out, "| {label} | `{}` |", text(&report[key]));
    }
    let _ = writeln!(out, "\n## Verdicts\n");
    for verdict in report["verdicts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "- {}: **{}**, {}",
            text(&verdict["check"]),
            text(&verdict["status"]),
            text(&verdict["detail"])
        );
    }
    if let Some(components) = report["plan"]["components"].as_array() {
        let risk = &report["plan"]["at_risk"];
        let _ = writeln!(
            out,
            "\n## Plan\n\nOverwrites {} existing file(s) ({}), deletes {} ({}).\n",
            text(&risk["overwrite"]),
            bytes(risk["overwrite_bytes"].as_u64().unwrap_or(0)),
            text(&risk["delete"]),
            bytes(risk["delete_bytes"].as_u64().unwrap_or(0)),
        );
        let _ = writeln!(
            out,
            "| component | destination | create | update | delete | unchanged |\n| --- | --- | --- | --- | --- | --- |"
        );
        for component in components {
            let counts = &component["counts"];
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} | {} |",
                text(&component["name"]),
                text(&component["destination"]),
                text(&counts["create"]),
                text(&counts["update"]),
                text(&counts["delete"]),
                text(&counts["unchanged"])
            );
        }
    }
    if let Some(timings) = report["timings"].as_array() {
        let _ = writeln!(
            out,
            "\n## Timings\n\n| component | write s | check s |\n| --- | --- | --- |"
        );
        for timing in timings {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {} |",
                text(&timing["component"]),
                timing["write_seconds"].as_f64().unwrap_or(0.0),
                timing["check_seconds"]
                    .as_f64()
                    .map_or("—".to_string(), |seconds| format!("{seconds:.3}"))
            );
        }
    }
    if let Some(hooks) = report["hooks"].as_array() {
        let _ = writeln!(out, "\n## Hooks\n");
        for hook in hooks {
            let _ = writeln!(
                out,
                "- {} ({}): `{}`: {}{}",
                text(&hook["phase"]),
                hook["component"].as_str().unwrap_or("whole restore"),
                text(&hook["command"]),
                if hook["ok"] == true {
                    "ok"
                } else {
                    "**failed**"
                },
                hook["failure"]
                    .as_str()
                    .map_or(String::new(), |why| format!(" ({why})"))
            );
        }
    }
    out
}
