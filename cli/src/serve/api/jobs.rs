//! The API's jobs: the registry of what was started and how it ended, and
//! the four kinds of work (backup, restore, verify, drill) as functions
//! that call the same library operations and command helpers the command
//! line uses and return their facts as JSON. Never runs the `cairn` binary
//! and never prints a result (warnings go to the server's stderr, as the
//! commands' do).
//!
//! One job runs at a time per server (and so per plan): a second is
//! refused with [`Busy`], which the API turns into 409. Jobs are kept in
//! memory (the newest [`KEPT_JOBS`]); what outlives the server is in the
//! repository and in the verify and drill history files.

use super::Server;
use crate::commands::backup::{
    exit_code, failure, open_target, record_metrics, remember, run_hook, summarise_components,
};
use crate::exit;
use crate::metrics::Metrics;
use anyhow::{Result, anyhow};
use cairn_store::ops::backup::{
    BackupOptions, ComponentSource, Target, Verdict, backup_into_targets, check_sources,
};
use cairn_store::progress::NoProgress;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Finished jobs kept for `GET /jobs`; older ones are forgotten.
pub const KEPT_JOBS: usize = 200;

/// Verify or drill records shown and read back from a history file.
pub const HISTORY_SHOWN: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Backup,
    Restore,
    Verify,
    Drill,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Restore => "restore",
            Kind::Verify => "verify",
            Kind::Drill => "drill",
        }
    }
}

/// `completed` is what the command line ends with exit code 0; anything
/// else is `failed`, with the command line's exit code in `exit_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Completed,
    Failed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub kind: Kind,
    pub status: Status,
    pub created: String,
    pub finished: Option<String>,
    pub seconds: Option<f64>,
    /// The request as given.
    pub request: Value,
    /// The facts of the run (snapshot, sizes, problems, verdicts, ...).
    pub result: Option<Value>,
    /// The exit code `cairn` would have ended the same run with.
    pub exit_code: Option<u8>,
    /// Why the job could not run at all.
    pub error: Option<String>,
    #[serde(skip)]
    started: Option<Instant>,
}

/// A job refused because another one is running.
pub struct Busy {
    pub running: String,
    pub kind: Kind,
}

/// How a job's work ended.
pub struct Finished {
    pub exit_code: u8,
    pub result: Value,
    pub metrics: Metrics,
}

#[derive(Default)]
struct Inner {
    next: u64,
    jobs: VecDeque<Job>,
    running: Option<String>,
    counts: BTreeMap<(Kind, Status), u64>,
    /// The metrics of the last run of each kind, as the textfile has them.
    metrics: BTreeMap<Kind, Metrics>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A job that panicked is marked failed; the registry stays usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a job as running, unless one already is.
    pub fn start(&self, kind: Kind, request: Value) -> std::result::Result<String, Busy> {
        let mut inner = self.lock();
        if let Some(running) = &inner.running {
            let kind = inner
                .jobs
                .iter()
                .find(|job| &job.id == running)
                .map_or(kind, |job| job.kind);
            return Err(Busy {
                running: running.clone(),
                kind,
            });
        }
        inner.next += 1;
        let id = inner.next.to_string();
        inner.jobs.push_back(Job {
            id: id.clone(),
            kind,
            status: Status::Running,
            created: now_rfc3339(),
            finished: None,
            seconds: None,
            request,
            result: None,
            exit_code: None,
            error: None,
            started: Some(Instant::now()),
        });
        while inner.jobs.len() > KEPT_JOBS {
            inner.jobs.pop_front();
        }
        inner.running = Some(id.clone());
        Ok(id)
    }

    /// Records how job `id` ended and frees the slot.
    pub fn finish(&self, id: &str, outcome: std::result::Result<Finished, String>) {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.iter_mut().find(|job| job.id == id) else {
            return;
        };
        job.finished = Some(now_rfc3339());
        job.seconds = job.started.map(|started| started.elapsed().as_secs_f64());
        let kind = job.kind;
        let mut metrics = None;
        match outcome {
            Ok(finished) => {
                job.status = if finished.exit_code == exit::SUCCESS {
                    Status::Completed
                } else {
                    Status::Failed
                };
                job.exit_code = Some(finished.exit_code);
                job.result = Some(finished.result);
                metrics = Some(finished.metrics);
            }
            Err(error) => {
                job.status = Status::Failed;
                job.exit_code = Some(exit::ERROR);
                job.error = Some(error);
            }
        }
        let status = job.status;
        *inner.counts.entry((kind, status)).or_default() += 1;
        if let Some(metrics) = metrics {
            inner.metrics.insert(kind, metrics);
        }
        if inner.running.as_deref() == Some(id) {
            inner.running = None;
        }
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().jobs.iter().find(|job| job.id == id).cloned()
    }

    /// Every job kept, newest first.
    pub fn list(&self) -> Vec<Job> {
        self.lock().jobs.iter().rev().cloned().collect()
    }

    pub fn running(&self) -> Vec<Job> {
        self.lock()
            .jobs
            .iter()
            .filter(|job| job.status == Status::Running)
            .cloned()
            .collect()
    }

    /// Job counters and the last run's metrics of each kind, in the
    /// Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let inner = self.lock();
        let mut counters = Metrics::default();
        for kind in [Kind::Backup, Kind::Restore, Kind::Verify, Kind::Drill] {
            for status in [Status::Completed, Status::Failed] {
                counters.counter(
                    "serve_jobs_total",
                    "Jobs this server ran to the end, by kind and status.",
                    &[("kind", kind.name()), ("status", status.name())],
                    inner.counts.get(&(kind, status)).copied().unwrap_or(0) as f64,
                );
            }
        }
        counters.gauge(
            "serve_jobs_running",
            "Jobs running now (at most one).",
            &[],
            if inner.running.is_some() { 1.0 } else { 0.0 },
        );
        let mut text = counters.text().to_string();
        for metrics in inner.metrics.values() {
            text.push_str(metrics.text());
        }
        text
    }
}

/// Runs `work` for job `id` on a thread of its own and records its end;
/// a panic in it fails the job instead of the server.
pub fn spawn(
    server: std::sync::Arc<Server>,
    id: String,
    work: impl FnOnce(&Server) -> Result<Finished> + Send + 'static,
) {
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&server)));
        let outcome = match outcome {
            Ok(Ok(finished)) => Ok(finished),
            Ok(Err(error)) => Err(format!("{error:#}")),
            Err(_) => Err("the job panicked (see the server's log)".to_string()),
        };
        server.jobs.finish(&id, outcome);
    });
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ---- backup ----------------------------------------------------------

/// `POST /snapshots`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The plan's components to back up [default: all].
    #[serde(default)]
    pub components: Vec<String>,
    /// Tags added to the plan's.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Labels added to the plan's (a request's wins).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Read every file, even unchanged ones.
    #[serde(default)]
    pub force_read: bool,
}

impl BackupRequest {
    /// What is wrong with the request, before anything starts.
    pub fn check(&self, server: &Server) -> std::result::Result<(), (&'static str, String)> {
        for name in &self.components {
            if !server.plan.components.iter().any(|c| &c.name == name) {
                return Err((
                    "unknown-component",
                    format!("the plan has no component {name:?}"),
                ));
            }
        }
        if self.tags.iter().any(String::is_empty) {
            return Err(("bad-tag", "a tag cannot be empty".into()));
        }
        if self.labels.keys().any(String::is_empty) {
            return Err(("bad-label", "a label's key cannot be empty".into()));
        }
        Ok(())
    }
}

/// A backup by the plan: before-hooks, one pass into every repository of
/// the plan, after-hooks, as `cairn backup --plan` does.
pub fn backup(server: &Server, request: &BackupRequest) -> Result<Finished> {
    let plan = &server.plan;
    let context = &server.context;
    let mut components: Vec<ComponentSource> = plan
        .components
        .iter()
        .filter(|c| request.components.is_empty() || request.components.contains(&c.name))
        .cloned()
        .collect();
    for component in &mut components {
        let Some(before) = plan
            .hooks
            .get(&component.name)
            .and_then(|h| h.before.as_ref())
        else {
            continue;
        };
        if let Err(why) = run_hook(before, &component.name, "before", None) {
            component.failed_before = Some(format!("before-hook {why}"));
        }
    }
    let mut tags = plan.tags.clone();
    tags.extend(request.tags.iter().cloned());
    let mut labels = plan.labels.clone();
    labels.extend(request.labels.clone());
    let options = BackupOptions {
        components: components.clone(),
        tags,
        labels,
        host: plan.host.clone(),
        force_read: request.force_read,
        staging: None,
        secret_keys: context.secret_key_paths(),
        app_version: plan.app_version.clone(),
    };
    let started = Instant::now();
    let mut metrics = Metrics::default();
    let result = backup_into_plan(server, options, &mut metrics);
    let ok = matches!(&result, Ok(finished) if finished.exit_code == exit::SUCCESS || finished.exit_code == exit::INCOMPLETE);
    metrics.run_outcome("backup", ok, started);
    for component in &components {
        let Some(after) = plan
            .hooks
            .get(&component.name)
            .and_then(|h| h.after.as_ref())
        else {
            continue;
        };
        let failed = match &result {
            Ok(finished) => finished.result["failed_components"]
                .as_array()
                .is_some_and(|failed| failed.iter().any(|name| name == &component.name)),
            Err(_) => true,
        };
        let verdict = if failed { "failed" } else { "ok" };
        if let Err(why) = run_hook(after, &component.name, "after", Some(verdict)) {
            eprintln!(
                "cairn serve: component {}: after-hook {why}",
                component.name
            );
        }
    }
    result.map(|finished| Finished {
        metrics,
        ..finished
    })
}

fn backup_into_plan(
    server: &Server,
    options: BackupOptions,
    metrics: &mut Metrics,
) -> Result<Finished> {
    let context = &server.context;
    check_sources(&options.components)?;
    let locations = context.repository_locations()?;
    let opened: Vec<std::result::Result<_, String>> = locations
        .iter()
        .map(|location| open_target(context, location).map_err(|error| format!("{error:#}")))
        .collect();
    let targets = locations
        .iter()
        .zip(&opened)
        .map(|(location, target)| Target {
            location: location.clone(),
            opened: target
                .as_ref()
                .map(|target| target.destination())
                .map_err(Clone::clone),
        })
        .collect();
    let staging = context.staging_directory()?;
    let options = BackupOptions {
        staging: staging.path().map(Path::to_path_buf),
        ..options
    };
    let outcome = backup_into_targets(targets, &options, &NoProgress);
    drop(staging);
    let outcome = outcome?;
    for (target, (_, result)) in opened.iter().zip(&outcome.repositories) {
        if let (Ok(target), Ok(done)) = (target, result) {
            remember(context, &target.repository, done);
        }
    }
    let Some(first) = outcome.first() else {
        let why: Vec<String> = outcome
            .repositories
            .iter()
            .filter_map(|(location, result)| {
                result
                    .as_ref()
                    .err()
                    .map(|why| format!("{location}: {}", failure(why)))
            })
            .collect();
        return Err(anyhow!(
            "the backup failed in every repository: {}",
            why.join("; ")
        ));
    };
    record_metrics(metrics, first);
    let verdict = outcome.verdict();
    let body = &first.body;
    let written = &first.written;
    let repositories: Vec<Value> = outcome
        .repositories
        .iter()
        .map(|(location, result)| match result {
            Ok(stored) => json!({
                "repository": location, "ok": true, "snapshot": stored.snapshot.to_hex(),
                "new_bytes": stored.written.new_raw_bytes, "stored_bytes": stored.written.new_stored_bytes,
            }),
            Err(why) => json!({"repository": location, "ok": false, "error": failure(why)}),
        })
        .collect();
    let result = json!({
        "snapshot": first.snapshot.to_hex(),
        // A snapshot's id is the BLAKE3 hash of its signed manifest.
        "manifest_hash": first.snapshot.to_hex(),
        "time": body.time,
        "host": body.host,
        "tags": body.tags,
        "labels": body.labels,
        "parent": body.parent.map(|id| id.to_hex()),
        "verdict": verdict_name(verdict),
        "complete": verdict == Verdict::Complete,
        "components": summarise_components(body),
        "bytes": body.components.iter().map(|c| c.stats.bytes).sum::<u64>(),
        "new_bytes": written.new_raw_bytes,
        "stored_bytes": written.new_stored_bytes,
        "new_chunks": written.new_blobs,
        "reused_chunks": written.reused_blobs,
        "unchanged_files": first.unchanged_files,
        "problems": body.problems,
        "failed_components": outcome.failed_components(),
        "repositories": repositories,
    });
    Ok(Finished {
        exit_code: exit_code(verdict),
        result,
        metrics: Metrics::default(),
    })
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Complete => "complete",
        Verdict::Incomplete => "incomplete",
        Verdict::CriticalFailed => "critical-failed",
        Verdict::SomeRepositoriesFailed => "some-repositories-failed",
        Verdict::Failed => "failed",
    }
}

// ---- restore ---------------------------------------------------------

/// `POST /snapshots/{id}/restore`: the command line's restore flags, by
/// the same names.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreBody {
    /// An absolute directory; each component lands in TARGET/NAME.
    pub target: Option<PathBuf>,
    pub to_source: bool,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub component_targets: BTreeMap<String, PathBuf>,
    pub delete: bool,
    pub dry_run: bool,
    pub no_safety_snapshot: bool,
    pub max_age: Option<String>,
    pub allow_untrusted: bool,
    pub allow_too_old: bool,
    pub allow_missing_chunks: bool,
    pub allow_version_ahead: bool,
    pub allow_low_space: bool,
    pub current_version: Option<String>,
    pub same_owner: bool,
    pub keep_special_bits: bool,
}

impl RestoreBody {
    /// What is wrong with the request, before anything starts.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        match (&self.target, self.to_source) {
            (None, false) => {
                return Err((
                    "missing-target",
                    "give target (an absolute directory) or to_source".into(),
                ));
            }
            (Some(target), _) if !target.is_absolute() => {
                return Err((
                    "bad-target",
                    format!("target {} must be an absolute path", target.display()),
                ));
            }
            _ => {}
        }
        if self.to_source && self.allow_untrusted {
            return Err((
                "bad-request",
                "to_source cannot be combined with allow_untrusted".into(),
            ));
        }
        for (name, directory) in &self.component_targets {
            if name.is_empty() || !directory.is_absolute() {
                return Err((
                    "bad-target",
                    format!("component_targets {name:?}: an absolute directory is needed"),
                ));
            }
        }
        if let Some(text) = &self.max_age {
            cairn_store::ops::restore::parse_duration(text)
                .map_err(|error| ("bad-duration", format!("max_age: {error}")))?;
        }
        Ok(())
    }
}

/// A restore with the command line's preflight verdicts, dry run, safety
/// snapshot, the plan's hooks, check and rollback (`cairn restore --plan
/// --yes`: the request is the confirmation).
pub fn restore(server: &Server, snapshot: &str, body: &RestoreBody) -> Result<Finished> {
    use cairn_store::ops::restore::{
        Decision, Fallback, MetadataPolicy, PreflightPolicy, RestoreOptions, RestoreRequest,
        RunbookResult, Selection, Sources, check_snapshot, execute, parse_duration,
        prepare_restore, run_restore,
    };
    let context = &server.context;
    let locations = context.repository_locations()?;
    let repository = context.open_repository_at(&locations[0])?;
    repository.require_read_key("the snapshot a restore restores")?;
    let trusted = if body.allow_untrusted {
        context.trusted_keys(&repository).unwrap_or_default()
    } else {
        context.trusted_keys(&repository)?
    };
    let trusted = context.trusted_keys_for_snapshot(&repository, snapshot, trusted)?;
    let request = RestoreRequest {
        snapshot: snapshot.to_string(),
        trusted,
        options: RestoreOptions {
            target: body.target.clone().unwrap_or_default(),
            selection: Selection {
                only: body.only.clone(),
                skip: body.skip.clone(),
                component_targets: body.component_targets.clone(),
                to_source: body.to_source,
                include: body.include.clone(),
                exclude: body.exclude.clone(),
            },
            delete: body.delete,
            metadata: MetadataPolicy {
                same_owner: body.same_owner,
                special_bits: body.keep_special_bits,
            },
            journals: Some(context.journal_directory()?),
        },
        policy: PreflightPolicy {
            max_age: body
                .max_age
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|error| anyhow!("max_age: {error}"))?,
            allow_untrusted: body.allow_untrusted,
            allow_too_old: body.allow_too_old,
            allow_missing_chunks: body.allow_missing_chunks,
            allow_version_ahead: body.allow_version_ahead,
            allow_low_space: body.allow_low_space,
        },
        current_version: body.current_version.clone(),
        at: None,
        // As `restore --plan`: `latest` is the plan's host's newest.
        filter: cairn_store::ops::select::SnapshotFilter {
            hosts: vec![
                server
                    .plan
                    .host
                    .clone()
                    .unwrap_or_else(cairn_store::ops::common::host_name),
            ],
            ..Default::default()
        },
    };
    let checked = check_snapshot(&repository, &request)?;
    crate::commands::warn_passed_over(&checked.passed_over);
    let opened = context.open_index(&repository)?;
    let others = crate::commands::restore::open_fallbacks(context, &locations[1..]);
    let fallbacks: Vec<Fallback> = others
        .iter()
        .map(|(repository, opened)| Fallback {
            repository,
            index: opened.index.as_ref(),
        })
        .collect();
    let sources = Sources::new(&fallbacks);
    let prepared = prepare_restore(
        &repository,
        opened.index.as_ref(),
        &sources,
        checked,
        &request,
    )?;
    let id = prepared.snapshot.to_hex();
    let plan = match &prepared.decision {
        Decision::Proceed(plan) => plan,
        Decision::Refused { check } => {
            return Ok(Finished {
                exit_code: exit::REFUSED,
                result: json!({
                    "snapshot": id, "result": "refused", "refused": check,
                    "verdicts": prepared.verdicts,
                }),
                metrics: Metrics::default(),
            });
        }
    };
    if body.dry_run {
        return Ok(Finished {
            exit_code: exit::SUCCESS,
            result: json!({
                "snapshot": id, "result": "dry-run", "dry_run": true,
                "verdicts": prepared.verdicts, "totals": plan.totals(),
                "components": crate::commands::restore::plan_json(plan),
            }),
            metrics: Metrics::default(),
        });
    }
    let safety_key = if plan.touches_existing() && !body.no_safety_snapshot {
        Some(context.signing_key(&repository).map_err(|error| {
            anyhow!("{error:#}; the restore would overwrite or delete existing files and its safety snapshot needs the repository's signing key (or pass no_safety_snapshot)")
        })?)
    } else {
        None
    };
    let hooks = server.plan.restore_hooks.clone();
    let (outcome, runbook) = if hooks.is_empty() {
        let outcome = execute(
            &repository,
            opened.index.as_ref(),
            &sources,
            &prepared,
            safety_key.as_ref(),
            &NoProgress,
        )?;
        (Some(outcome), None)
    } else {
        let mut runbook = run_restore(
            &repository,
            opened.index.as_ref(),
            &sources,
            &request,
            &prepared,
            safety_key.as_ref(),
            &hooks,
            &NoProgress,
        )?;
        if let Some(error) = runbook.error.take() {
            return Err(
                anyhow::Error::new(error).context("the restore could not run (after-hooks ran)")
            );
        }
        (runbook.restore.take(), Some(runbook))
    };
    let restored_cleanly = outcome.as_ref().is_some_and(|outcome| {
        outcome.failures.is_empty()
            && outcome
                .database_checks
                .iter()
                .all(cairn_store::ops::restore::DatabaseCheck::passed)
    });
    let (result, code) = match runbook.as_ref().map(|runbook| runbook.result) {
        Some(RunbookResult::BeforeFailed) => ("before-failed", exit::ERROR),
        Some(RunbookResult::RolledBack) => ("rolled-back", exit::ROLLED_BACK),
        Some(RunbookResult::RollbackFailed) => ("rollback-failed", exit::DAMAGE),
        _ if restored_cleanly => ("restored", exit::SUCCESS),
        _ if outcome
            .as_ref()
            .is_some_and(cairn_store::ops::restore::RestoreOutcome::target_unwritable) =>
        {
            ("restore-failed", exit::TARGET_UNWRITABLE)
        }
        _ => ("restore-failed", exit::DAMAGE),
    };
    let facts = outcome.as_ref().map(|outcome| {
        json!({
            "files_written": outcome.files_written,
            "bytes_written": outcome.bytes_written,
            "bytes_fetched": outcome.bytes_fetched,
            "bytes_reused": outcome.bytes_reused,
            "deleted": outcome.deleted,
            "safety_snapshot": outcome.safety_snapshot.map(|safety| safety.to_hex()),
            "rolled_back": outcome.rolled_back,
            "failures": outcome.failures.iter().map(|f| json!({
                "component": f.component, "path": f.path, "error": f.error,
            })).collect::<Vec<_>>(),
            "database_checks": outcome.database_checks.iter().map(|check| json!({
                "component": check.component, "ok": check.passed(), "problems": check.problems,
            })).collect::<Vec<_>>(),
        })
    });
    Ok(Finished {
        exit_code: code,
        result: json!({
            "snapshot": id,
            "manifest_hash": id,
            "result": result,
            "verdicts": prepared.verdicts,
            "totals": plan.totals(),
            "restore": facts,
            "hooks": runbook.as_ref().map(|runbook| &runbook.hooks),
            "rollback_problems": runbook.as_ref().map(|runbook| runbook.rollback_problems.iter()
                .map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>()),
        }),
        metrics: Metrics::default(),
    })
}

// ---- verify and drill ------------------------------------------------

/// `POST /verify`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyBody {
    pub read_data: bool,
    pub read_data_subset: Option<String>,
    pub snapshots: Vec<String>,
    pub components: Vec<String>,
}

impl VerifyBody {
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.read_data && self.read_data_subset.is_some() {
            return Err((
                "bad-request",
                "read_data and read_data_subset exclude each other".into(),
            ));
        }
        if let Some(spec) = &self.read_data_subset {
            cairn_store::ops::verify::Subset::parse(spec)
                .map_err(|error| ("bad-subset", format!("read_data_subset {error}")))?;
        }
        Ok(())
    }
}

/// A verify of the plan's first repository, recorded in the verify history.
pub fn verify(server: &Server, body: &VerifyBody) -> Result<Finished> {
    let context = &server.context;
    let started = Instant::now();
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots and trees `verify` checks")?;
    let args = crate::args::VerifyArgs {
        read_data: body.read_data,
        read_data_subset: body.read_data_subset.clone(),
        snapshots: body.snapshots.clone(),
        filter: crate::args::SnapshotFilterArgs {
            hosts: Vec::new(),
            tags: Vec::new(),
            components: body.components.clone(),
        },
    };
    let report = crate::commands::verify::audit(context, &repository, &args, &NoProgress)?;
    let clean = report.is_clean();
    let mut metrics = Metrics::default();
    metrics.gauge(
        "verify_healthy",
        "1 if the last verify found no damage, else 0.",
        &[],
        if clean { 1.0 } else { 0.0 },
    );
    metrics.gauge(
        "verify_damage_findings",
        "Findings that cost data.",
        &[],
        report.damage_count() as f64,
    );
    metrics.run_outcome("verify", true, started);
    let mut result = serde_json::to_value(&report)?;
    result["clean"] = Value::Bool(clean);
    result["damaged_snapshots"] = serde_json::to_value(report.damaged_snapshots())?;
    let record = json!({
        "time": now_rfc3339(),
        "repository": context.repository_location()?,
        "ok": clean,
        "read_data": body.read_data || body.read_data_subset.is_some(),
        "snapshots": report.snapshots,
        "damage": report.damage_count(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    // The history is what /health and the status page read after a
    // restart; one that cannot be written is said, not fatal.
    if let Err(error) = cairn_store::ops::drill::append_history(&server.verify_history, &record) {
        eprintln!("cairn serve: cannot record the verify: {error}");
    }
    Ok(Finished {
        exit_code: if clean { exit::SUCCESS } else { exit::DAMAGE },
        result,
        metrics,
    })
}

/// `POST /drill`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillBody {
    /// A snapshot id or prefix [default: the plan's latest].
    pub snapshot: Option<String>,
}

/// A restore drill of the plan's latest snapshot (or the one named), as
/// `cairn drill --plan`, appended to the drill history.
pub fn drill(server: &Server, body: &DrillBody) -> Result<Finished> {
    use cairn_store::ops::drill::{DrillOptions, append_history, choose_snapshot, drill};
    let context = &server.context;
    let plan = &server.plan;
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshot `drill` restores")?;
    let required: Vec<String> = plan.components.iter().map(|c| c.name.clone()).collect();
    let (snapshot, snapshot_body, chosen) = match &body.snapshot {
        None => {
            let trusted = context.trusted_keys(&repository)?;
            let chosen = choose_snapshot(&repository, &trusted, plan.host.as_deref(), &required)?;
            (chosen.id, chosen.body, chosen.why)
        }
        Some(spec) => {
            let (id, snapshot_body) = crate::commands::verified_snapshot(
                context,
                &repository,
                spec,
                &Default::default(),
            )?;
            (id, snapshot_body, format!("named by the request: {spec}"))
        }
    };
    let opened = context.open_index(&repository)?;
    let options = DrillOptions {
        scratch_parent: None,
        checks: plan
            .hooks
            .iter()
            .filter_map(|(name, hooks)| Some((name.clone(), hooks.check.clone()?)))
            .collect(),
        required,
        chosen,
    };
    let started = Instant::now();
    let report = drill(
        &repository,
        opened.index.as_ref(),
        snapshot,
        &snapshot_body,
        &options,
        &NoProgress,
    )?;
    let ok = report.ok();
    let record = report.record(context.repository_location()?);
    append_history(&server.drill_history, &record)?;
    let mut metrics = Metrics::default();
    for component in &report.components {
        metrics.gauge(
            "drill_component_ok",
            "1 if the component restored and passed its checks, else 0.",
            &[("component", &component.name)],
            if component.ok() { 1.0 } else { 0.0 },
        );
    }
    metrics.run_outcome("drill", ok, started);
    Ok(Finished {
        exit_code: if ok { exit::SUCCESS } else { exit::DAMAGE },
        result: record,
        metrics,
    })
}

/// The last `HISTORY_SHOWN` records of a JSON-lines history file, newest
/// last; lines that do not parse are skipped (a torn last line after a
/// crash). A missing file has none. Bounded: only the file's last
/// 256 KiB are read.
pub fn read_history(path: &Path) -> Vec<Value> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let start = length.saturating_sub(TAIL);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.take(TAIL).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    // The tail may begin inside a character; that first line is skipped.
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().skip(usize::from(start > 0)).collect();
    let mut records: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let skip = records.len().saturating_sub(HISTORY_SHOWN);
    records.drain(..skip);
    records
}
