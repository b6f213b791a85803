//! A restore as a runbook runs it: the before-hooks (stop the service),
//! the restore itself ([`execute()`](super::execute::execute)), the checks
//! on the restored data (a health probe, migrations), an automatic
//! rollback when a check fails, and the after-hooks (start the service),
//! which run whatever happened once the before-hooks were started.
//!
//! Owns the order of those steps, what each hook is told
//! (`CAIRN_PHASE`, `CAIRN_COMPONENT`, `CAIRN_TARGET`, `CAIRN_FILE`, and
//! for after-hooks `CAIRN_RESULT`), and the rule that a failed check puts
//! the target back. Never prints and never decides an exit code; runs
//! commands only through [`crate::ops::hooks`].
//!
//! Order: whole-restore before-hook, then each component's; if one fails,
//! nothing in the target has been touched and the restore does not run.
//! The plan is made again after the before-hooks, since stopping a service
//! changes its files (SQLite checkpoints its log on close). Then the
//! restore; then each component's check and the whole-restore check,
//! stopping at the first that fails; then each component's after-hook and
//! the whole-restore after-hook, every one of them, whatever the result.

use super::execute::{RestoreOutcome, execute, roll_back};
use super::fetch::Sources;
use super::prepare::{Decision, PreparedRestore, RestorePlan, RestoreRequest, plan_restore};
use super::safety::{self, Journal};
use crate::error::{Result, StoreError};
use crate::format::keys::SigningKey;
use crate::index::IndexCache;
use crate::ops::hooks::Hook;
use crate::progress::Progress;
use crate::repository::Repository;
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The commands of one component, or of the whole restore (`sh -c`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookSet {
    /// Runs before anything is written; its failure stops the restore.
    pub before: Option<String>,
    /// Runs on the restored data; its failure rolls the target back.
    pub check: Option<String>,
    /// Runs last, always, with the result in `CAIRN_RESULT`.
    pub after: Option<String>,
}

impl HookSet {
    fn is_empty(&self) -> bool {
        self.before.is_none() && self.check.is_none() && self.after.is_none()
    }
}

/// Every hook of a restore: the whole restore's and each component's (by
/// name; a component not restored has its hooks skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreHooks {
    pub whole: HookSet,
    pub components: BTreeMap<String, HookSet>,
}

impl RestoreHooks {
    pub fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.components.values().all(HookSet::is_empty)
    }

    /// Whether any check is declared (for a restore of these components).
    pub fn has_check(&self) -> bool {
        self.whole.check.is_some() || self.components.values().any(|set| set.check.is_some())
    }
}

/// How a runbook restore ended; after-hooks see it in `CAIRN_RESULT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunbookResult {
    /// Restored, and every check passed.
    Restored,
    /// A before-hook failed: nothing in the target was touched.
    BeforeFailed,
    /// The restore itself failed (put back as it was if a safety snapshot
    /// was taken; see the restore outcome).
    RestoreFailed,
    /// A check failed and the target was put back as it was.
    RolledBack,
    /// A check failed and putting the target back left problems.
    RollbackFailed,
}

impl RunbookResult {
    /// The value of `CAIRN_RESULT`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunbookResult::Restored => "restored",
            RunbookResult::BeforeFailed => "before-failed",
            RunbookResult::RestoreFailed => "restore-failed",
            RunbookResult::RolledBack => "rolled-back",
            RunbookResult::RollbackFailed => "rollback-failed",
        }
    }
}

/// One hook that ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HookRun {
    /// `before`, `check` or `after`.
    pub phase: &'static str,
    /// The component it belongs to; `None` for a whole-restore hook.
    pub component: Option<String>,
    pub command: String,
    pub ok: bool,
    /// Why it failed (exit status, the end of its stderr).
    pub failure: Option<String>,
    pub seconds: f64,
}

/// What a runbook restore did.
#[derive(Debug)]
pub struct RunbookOutcome {
    pub result: RunbookResult,
    /// The restore's outcome; `None` when it did not run (a before-hook
    /// failed) or failed before writing (the error is in `error`).
    pub restore: Option<RestoreOutcome>,
    /// Why the restore could not run at all (e.g. the safety snapshot
    /// could not be taken); nothing was written then.
    pub error: Option<StoreError>,
    /// The plan executed (made again after the before-hooks).
    pub plan: Option<RestorePlan>,
    /// Every hook run, in order.
    pub hooks: Vec<HookRun>,
    /// What the rollback after a failed check could not put back.
    pub rollback_problems: Vec<(String, String)>,
    /// Seconds spent writing (the safety snapshot included) and checking.
    pub restore_seconds: f64,
}

/// Runs a prepared restore with its hooks (see the module's header for
/// the order). A restore whose check may need a rollback but that would
/// take no safety snapshot of the existing files it overwrites is refused
/// before any hook runs: it could not be put back.
#[allow(clippy::too_many_arguments)]
pub fn run_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    request: &RestoreRequest,
    prepared: &PreparedRestore,
    safety_key: Option<&SigningKey>,
    hooks: &RestoreHooks,
    progress: &dyn Progress,
) -> Result<RunbookOutcome> {
    let first_plan = match &prepared.decision {
        Decision::Proceed(plan) => plan,
        Decision::Refused { check } => {
            return Err(StoreError::Invalid(format!(
                "restore refused by the {check} check"
            )));
        }
    };
    if hooks.has_check() && safety_key.is_none() && first_plan.touches_existing() {
        return Err(StoreError::Invalid(
            "a restore with a check overwrites existing files and takes no safety snapshot, so a failed check could not roll it back; drop --no-safety-snapshot".into(),
        ));
    }
    let restored: Vec<(String, PathBuf)> = first_plan
        .components
        .iter()
        .map(|component| (component.name.clone(), component.destination.clone()))
        .collect();
    let all_names = restored
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let target = request.options.target.clone();
    let component_sets: Vec<(&str, &Path, &HookSet)> = restored
        .iter()
        .filter_map(|(name, destination)| {
            hooks
                .components
                .get(name)
                .map(|set| (name.as_str(), destination.as_path(), set))
        })
        .collect();
    let mut runs = Vec::new();
    let mut outcome = RunbookOutcome {
        result: RunbookResult::Restored,
        restore: None,
        error: None,
        plan: None,
        hooks: Vec::new(),
        rollback_problems: Vec::new(),
        restore_seconds: 0.0,
    };

    // Before-hooks: the whole restore's, then each component's.
    let mut before_ok = run_one(
        &mut runs,
        "before",
        None,
        &all_names,
        &target,
        hooks.whole.before.as_deref(),
        None,
    );
    for (name, destination, set) in &component_sets {
        if !before_ok {
            break;
        }
        before_ok = run_one(
            &mut runs,
            "before",
            Some(name),
            name,
            destination,
            set.before.as_deref(),
            None,
        );
    }

    if !before_ok {
        outcome.result = RunbookResult::BeforeFailed;
    } else {
        let started = Instant::now();
        match restore_and_check(
            repository,
            index,
            sources,
            request,
            prepared,
            safety_key,
            progress,
            hooks,
            &component_sets,
            (&all_names, &target),
            &mut runs,
        ) {
            Ok((result, restore, plan, problems)) => {
                outcome.result = result;
                outcome.restore = Some(restore);
                outcome.plan = Some(plan);
                outcome.rollback_problems = problems;
            }
            Err(error) => {
                outcome.result = RunbookResult::RestoreFailed;
                outcome.error = Some(error);
            }
        }
        outcome.restore_seconds = started.elapsed().as_secs_f64();
    }

    // After-hooks, every one, whatever happened.
    let result = outcome.result.as_str();
    for (name, destination, set) in &component_sets {
        run_one(
            &mut runs,
            "after",
            Some(name),
            name,
            destination,
            set.after.as_deref(),
            Some(result),
        );
    }
    run_one(
        &mut runs,
        "after",
        None,
        &all_names,
        &target,
        hooks.whole.after.as_deref(),
        Some(result),
    );
    outcome.hooks = runs;
    Ok(outcome)
}

type Restored = (
    RunbookResult,
    RestoreOutcome,
    RestorePlan,
    Vec<(String, String)>,
);

/// Plans again, restores, runs the checks and rolls back if one fails.
#[allow(clippy::too_many_arguments)]
fn restore_and_check(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    request: &RestoreRequest,
    prepared: &PreparedRestore,
    safety_key: Option<&SigningKey>,
    progress: &dyn Progress,
    hooks: &RestoreHooks,
    component_sets: &[(&str, &Path, &HookSet)],
    (all_names, target): (&str, &Path),
    runs: &mut Vec<HookRun>,
) -> Result<Restored> {
    let plan = plan_restore(
        repository,
        index,
        sources,
        prepared.snapshot,
        &prepared.body,
        &request.options,
    )?;
    // The journal execute keeps for its own rollback, made the same way
    // from the same target: a failed check needs it too.
    let journal = Journal::new(plan.snapshot, &plan.components);
    let replanned = PreparedRestore {
        decision: Decision::Proceed(plan.clone()),
        ..prepared.clone()
    };
    let restore = execute(repository, index, sources, &replanned, safety_key, progress)?;
    if !restore.failures.is_empty() {
        return Ok((RunbookResult::RestoreFailed, restore, plan, Vec::new()));
    }
    let mut checks_ok = true;
    for (name, destination, set) in component_sets {
        if !checks_ok {
            break;
        }
        checks_ok = run_one(
            runs,
            "check",
            Some(name),
            name,
            destination,
            set.check.as_deref(),
            None,
        );
    }
    if checks_ok {
        checks_ok = run_one(
            runs,
            "check",
            None,
            all_names,
            target,
            hooks.whole.check.as_deref(),
            None,
        );
    }
    if checks_ok {
        return Ok((RunbookResult::Restored, restore, plan, Vec::new()));
    }
    let problems = match restore.safety_snapshot {
        Some(snapshot) => roll_back(repository, index, snapshot, &journal)?,
        // Nothing that existed was touched: removing what the restore
        // created puts the target back.
        None => safety::remove_created(&journal, repository.id_hasher())
            .into_iter()
            .chain(safety::restore_directory_metadata(&journal))
            .map(|(path, why)| (path.display().to_string(), why))
            .collect(),
    };
    let result = if problems.is_empty() {
        RunbookResult::RolledBack
    } else {
        RunbookResult::RollbackFailed
    };
    Ok((result, restore, plan, problems))
}

/// Runs one hook, if given, and records it; true unless it failed.
fn run_one(
    runs: &mut Vec<HookRun>,
    phase: &'static str,
    component: Option<&str>,
    names: &str,
    path: &Path,
    command: Option<&str>,
    result: Option<&str>,
) -> bool {
    let Some(command) = command else {
        return true;
    };
    let started = Instant::now();
    let mut hook = Hook::new(command)
        .env("CAIRN_PHASE", phase)
        .env("CAIRN_COMPONENT", names)
        .env("CAIRN_TARGET", path)
        .env("CAIRN_FILE", path)
        .capture_stderr();
    // The hook's stdout goes to our stderr: stdout is the restore's own
    // output (its JSON with --json).
    if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() {
        hook = hook.stdout_to(std::fs::File::from(stderr));
    }
    if let Some(result) = result {
        hook = hook.env("CAIRN_RESULT", result);
    }
    let failure = hook.run().err().map(|failure| {
        let tail = failure.stderr_tail(400);
        if tail.is_empty() {
            failure.to_string()
        } else {
            format!("{failure}: {tail}")
        }
    });
    runs.push(HookRun {
        phase,
        component: component.map(str::to_string),
        command: command.to_string(),
        ok: failure.is_none(),
        failure,
        seconds: started.elapsed().as_secs_f64(),
    });
    runs.last().is_some_and(|run| run.ok)
}
