//! Preparing a restore, before anything is written: a [`RestoreRequest`]
//! (which snapshot, into where, under which [`PreflightPolicy`]) becomes a
//! [`PreparedRestore`] that either holds the plan to execute or names the
//! check that refused it.
//!
//! 1. [`check_snapshot`]: resolve the snapshot (among trusted ones unless
//!    the policy allows untrusted), judge its signature and its age, and
//!    check the target and the selection. Needs no index.
//! 2. [`prepare_restore`]: unless a verdict already refuses, plan the
//!    restore ([`plan_restore`], which compares the snapshot with the
//!    target) and judge whether every chunk and tree it needs is indexed.
//!
//! Two steps so that the caller opens the index (costly over object
//! storage) and the fallback repositories only for a snapshot and a
//! selection that can be restored. Which verdicts stop the restore is the
//! policy's to say ([`super::preflight`]), not the caller's. Reads the
//! repository and the target; never writes to either.

use super::fetch::Sources;
use super::place::MetadataPolicy;
use super::plan::{ComponentPlan, PlanCounts, Planner};
use super::preflight::{self, PreflightPolicy, Verdict};
use super::safety::{JOURNAL_COMPONENT, SAFETY_TAG};
use super::select::{PathFilter, Selection, select_components};
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use crate::index::IndexCache;
use crate::repository::Repository;
use rayon::prelude::*;
use std::path::PathBuf;

/// Where to restore and what.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub selection: Selection,
    /// Delete what the target holds and the snapshot does not (within the
    /// selection).
    pub delete: bool,
    /// Which of the snapshot's owners and set-user-id, set-group-id and
    /// sticky bits are applied; by default none (`--same-owner`,
    /// `--keep-special-bits`).
    pub metadata: MetadataPolicy,
    /// This host's private directory of restore journals (the CLI's is the
    /// config directory's `restore-journals/`): a restore that takes a
    /// safety snapshot keeps its journal there, and `undo-restore` acts
    /// only on a journal found there. `None`: none is kept.
    pub journals: Option<PathBuf>,
}

/// What a restore will do, component by component; made by
/// [`plan_restore`], carried out by `execute_restore`.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub snapshot: Id,
    pub components: Vec<ComponentPlan>,
    /// Where this host keeps the restore's journal (see
    /// [`RestoreOptions::journals`]).
    pub journals: Option<PathBuf>,
}

impl RestorePlan {
    /// Whether executing it overwrites or deletes anything that exists.
    pub fn touches_existing(&self) -> bool {
        self.components.iter().any(|component| {
            !component.touched_paths().is_empty() || !component.sqlite_journals.is_empty()
        })
    }

    /// What executing it would overwrite or delete of what the target
    /// holds now (sizes as they are on disk now): what a restore asks the
    /// user to confirm.
    pub fn at_risk(&self) -> AtRisk {
        use super::plan::Action;
        let size = |path: &std::path::Path| {
            std::fs::symlink_metadata(path)
                .ok()
                .filter(|meta| meta.is_file())
                .map_or(0, |meta| meta.len())
        };
        let mut risk = AtRisk::default();
        for component in &self.components {
            let deleted: std::collections::BTreeSet<&str> = component
                .deletions
                .iter()
                .map(|deletion| deletion.relative.as_str())
                .collect();
            for item in &component.entries {
                // A replaced entry's old self is among the deletions.
                if item.action == Action::Update && !deleted.contains(item.relative.as_str()) {
                    risk.overwrite += 1;
                    risk.overwrite_bytes += size(&item.destination);
                }
            }
            for deletion in &component.deletions {
                risk.delete += 1;
                risk.delete_bytes += size(&deletion.destination);
            }
        }
        risk
    }

    pub fn totals(&self) -> PlanCounts {
        let mut total = PlanCounts::default();
        for component in &self.components {
            let counts = &component.counts;
            total.create += counts.create;
            total.update += counts.update;
            total.metadata += counts.metadata;
            total.delete += counts.delete;
            total.unchanged += counts.unchanged;
            total.bytes_to_fetch += counts.bytes_to_fetch;
            total.bytes_reused += counts.bytes_reused;
        }
        total
    }
}

/// What a restore would overwrite or delete of the target's existing
/// files, and their bytes now ([`RestorePlan::at_risk`]). Metadata-only
/// changes lose no data and are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AtRisk {
    /// Existing files whose content is rewritten.
    pub overwrite: u64,
    pub overwrite_bytes: u64,
    /// Paths removed (extras with `--delete`, and entries replaced by
    /// another type).
    pub delete: u64,
    pub delete_bytes: u64,
}

impl AtRisk {
    /// Whether existing data would be lost (and so a user must confirm).
    pub fn loses_data(&self) -> bool {
        self.overwrite + self.delete > 0
    }
}

/// A restore as asked for: the snapshot, where it goes, and which
/// preflight verdicts may be overridden.
#[derive(Clone, Debug, Default)]
pub struct RestoreRequest {
    /// A snapshot id, a unique prefix of one, or `latest`.
    pub snapshot: String,
    /// The keys whose signatures are trusted.
    pub trusted: Vec<PublicKey>,
    pub options: RestoreOptions,
    pub policy: PreflightPolicy,
    /// The running application's version: when given, the snapshot's
    /// recorded one is compared with it (verdict `version`).
    pub current_version: Option<String>,
    /// Choose the newest matching snapshot taken at or before this time
    /// (`--at`) instead of resolving `snapshot`, which must then be
    /// `latest`. Matching: trusted, not a safety snapshot, holding every
    /// component `--only` names.
    pub at: Option<jiff::Timestamp>,
    /// What `latest` (or `latest~N`, or `--at`) must pass, with the
    /// `--only` components added: `ops::select`.
    pub filter: crate::ops::select::SnapshotFilter,
}

/// A snapshot judged before planning: its id, its body (trusted or not,
/// as the signature verdict says) and the signature and age verdicts.
#[derive(Clone, Debug)]
pub struct CheckedSnapshot {
    pub snapshot: Id,
    pub body: SnapshotBody,
    pub verdicts: Vec<Verdict>,
    /// Manifests `latest` passed over (unreadable, untrusted, another
    /// repository's, dated ahead), with why: for the caller to report.
    pub passed_over: Vec<crate::repository::SkippedSnapshot>,
}

/// Whether a prepared restore goes ahead.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Every verdict passed or the policy overrides it: the plan to execute.
    Proceed(RestorePlan),
    /// The policy lets this check's verdict stop the restore (`signature`,
    /// `age` or `chunks`).
    Refused { check: &'static str },
}

/// A restore ready to execute, or refused, with every verdict reached.
#[derive(Clone, Debug)]
pub struct PreparedRestore {
    pub snapshot: Id,
    pub body: SnapshotBody,
    /// In the order they were reached: signature, age, then chunks (only
    /// when the first two let the restore be planned).
    pub verdicts: Vec<Verdict>,
    pub decision: Decision,
}

impl PreparedRestore {
    /// The plan, unless the restore was refused.
    pub fn plan(&self) -> Option<&RestorePlan> {
        match &self.decision {
            Decision::Proceed(plan) => Some(plan),
            Decision::Refused { .. } => None,
        }
    }
}

/// Step 1: resolves and judges the snapshot, and checks that the target is
/// not something other than a directory and that the selection names
/// components the snapshot has.
pub fn check_snapshot(
    repository: &Repository,
    request: &RestoreRequest,
) -> Result<CheckedSnapshot> {
    let policy = &request.policy;
    // `latest` is chosen among trusted snapshots of this repository even
    // with --allow-untrusted: that flag lets the user restore a snapshot
    // they name, never one an attacker planted.
    let spec = crate::ops::select::SnapshotSpec::parse(&request.snapshot)?;
    if request.at.is_some() && !spec.is_latest() {
        return Err(StoreError::Invalid(format!(
            "a point in time chooses the snapshot, so {:?} cannot be named too",
            request.snapshot
        )));
    }
    // `latest` (and `--at`) mean the newest snapshot that holds every
    // component `--only` names: after a one-off backup of one component,
    // `restore latest --only other` takes the newest that has `other`.
    let mut filter = request
        .filter
        .clone()
        .with_components(&request.options.selection.only);
    filter.at = request.at;
    let selected =
        crate::ops::select::select(repository, &request.trusted, &request.snapshot, &filter)?;
    let (snapshot, passed_over) = (selected.id, selected.passed_over);
    let manifest = repository.read_manifest(&snapshot)?;
    let mut verdicts = vec![preflight::signature(
        &manifest,
        repository.id(),
        &request.trusted,
    )];
    let body = manifest.body_unverified()?;
    verdicts.push(preflight::age(&body, policy.max_age)?);
    if let Some(current) = &request.current_version {
        verdicts.push(preflight::version(&body, current));
    }
    let options = &request.options;
    if let Ok(meta) = std::fs::metadata(&options.target)
        && !meta.is_dir()
    {
        return Err(StoreError::Invalid(format!(
            "restore target {} exists and is not a directory",
            options.target.display()
        )));
    }
    select_components(
        &body,
        &options.selection,
        &options.target,
        &snapshot.short(),
    )?;
    Ok(CheckedSnapshot {
        snapshot,
        body,
        verdicts,
        passed_over,
    })
}

/// Step 2: plans the restore of a checked snapshot, unless its verdicts
/// already refuse it, and judges the plan's chunks. `sources` are the
/// fallback repositories a missing chunk may still come from.
pub fn prepare_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    checked: CheckedSnapshot,
    request: &RestoreRequest,
) -> Result<PreparedRestore> {
    let CheckedSnapshot {
        snapshot,
        body,
        mut verdicts,
        ..
    } = checked;
    let policy = &request.policy;
    let decision = match policy.refusal(&verdicts) {
        Some(refused) => Decision::Refused {
            check: refused.check,
        },
        None => {
            let plan = plan_restore(
                repository,
                index,
                sources,
                snapshot,
                &body,
                &request.options,
            )?;
            verdicts.push(preflight::chunks(&plan.components));
            verdicts.push(preflight::space(&plan.components));
            match policy.refusal(&verdicts) {
                Some(refused) => Decision::Refused {
                    check: refused.check,
                },
                None => Decision::Proceed(plan),
            }
        }
    };
    Ok(PreparedRestore {
        snapshot,
        body,
        verdicts,
        decision,
    })
}

/// Plans a restore of `body` into `options.target`; reads, never writes.
pub fn plan_restore(
    repository: &Repository,
    index: &dyn IndexCache,
    sources: &Sources,
    snapshot: Id,
    body: &SnapshotBody,
    options: &RestoreOptions,
) -> Result<RestorePlan> {
    let selected = select_components(body, &options.selection, &options.target, &snapshot.short())?;
    if selected
        .iter()
        .any(|(component, _)| component.name == JOURNAL_COMPONENT)
        && body.tags.iter().all(|tag| tag != SAFETY_TAG)
    {
        return Err(StoreError::Invalid(format!(
            "component name {JOURNAL_COMPONENT} is reserved for safety snapshots"
        )));
    }
    let filter = PathFilter::new(&options.selection)?;
    let planner = Planner {
        repository,
        index,
        chunker: body.chunker,
        sources,
        filter: &filter,
        delete: options.delete,
        metadata: options.metadata,
    };
    let destinations: Vec<PathBuf> = selected
        .iter()
        .map(|(_, destination)| destination.clone())
        .collect();
    // Side by side: reading and decoding a component's trees waits on
    // the disk and runs on one thread.
    let components = selected
        .into_par_iter()
        .enumerate()
        .map(|(position, (component, destination))| {
            // A component landing inside another (or holding another) is
            // written in place: renaming one into place whole would race
            // with the other's writes.
            let alone = destinations
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != position)
                .all(|(_, other)| {
                    !other.starts_with(&destination) && !destination.starts_with(other)
                });
            planner.plan_component(component, &destination, alone)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RestorePlan {
        snapshot,
        components,
        journals: options.journals.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};
    use crate::ops::restore::preflight::Status;
    use crate::ops::restore::testing::Scene;

    fn scene() -> Scene {
        Scene::new(|root| {
            let notes = root.join("notes");
            std::fs::create_dir_all(&notes).expect("notes");
            std::fs::write(notes.join("a.md"), b"# notes\n").expect("a.md");
            vec![("notes", notes, false)]
        })
    }

    fn request(scene: &Scene, trusted: Vec<PublicKey>, policy: PreflightPolicy) -> RestoreRequest {
        RestoreRequest {
            snapshot: scene.snapshot.to_hex(),
            trusted,
            options: RestoreOptions {
                target: scene.path("target"),
                ..RestoreOptions::default()
            },
            policy,
            ..RestoreRequest::default()
        }
    }

    fn prepare(scene: &Scene, request: &RestoreRequest) -> PreparedRestore {
        let checked = check_snapshot(&scene.repository, request).expect("checked");
        prepare_restore(
            &scene.repository,
            scene.index.as_ref(),
            &Sources::new(&[]),
            checked,
            request,
        )
        .expect("prepared")
    }

    fn statuses(prepared: &PreparedRestore) -> Vec<(&'static str, Status)> {
        prepared
            .verdicts
            .iter()
            .map(|verdict| (verdict.check, verdict.status))
            .collect()
    }

    #[test]
    fn a_trusted_snapshot_is_planned_after_all_four_checks_pass() {
        let scene = scene();
        let request = request(&scene, vec![scene.public], PreflightPolicy::default());
        let prepared = prepare(&scene, &request);
        assert_eq!(
            statuses(&prepared),
            [
                ("signature", Status::Ok),
                ("age", Status::Ok),
                ("chunks", Status::Ok),
                ("space", Status::Ok)
            ]
        );
        let plan = prepared.plan().expect("a plan");
        assert_eq!(plan.snapshot, scene.snapshot);
        assert_eq!(plan.components.len(), 1);
        assert_eq!(plan.components[0].counts.create, 1);
        assert!(!scene.path("target").exists(), "preparing writes nothing");
    }

    #[test]
    fn an_untrusted_signer_refuses_before_planning_unless_the_policy_allows_it() {
        let scene = scene();
        let stranger = public_key_of(&generate_signing_key().expect("key"));
        let strict = request(&scene, vec![stranger], PreflightPolicy::default());
        let refused = prepare(&scene, &strict);
        assert!(
            matches!(refused.decision, Decision::Refused { check: "signature" }),
            "{:?}",
            refused.decision
        );
        assert_eq!(
            statuses(&refused),
            [("signature", Status::Untrusted), ("age", Status::Ok)],
            "the chunks are not judged for a snapshot that cannot be planned"
        );

        let lenient = request(
            &scene,
            vec![stranger],
            PreflightPolicy {
                allow_untrusted: true,
                ..PreflightPolicy::default()
            },
        );
        let allowed = prepare(&scene, &lenient);
        assert_eq!(
            statuses(&allowed),
            [
                ("signature", Status::Untrusted),
                ("age", Status::Ok),
                ("chunks", Status::Ok),
                ("space", Status::Ok)
            ]
        );
        assert!(allowed.plan().is_some());
    }

    #[test]
    fn a_target_that_is_a_file_or_a_component_the_snapshot_lacks_is_refused_before_any_plan() {
        let scene = scene();
        let mut request = request(&scene, vec![scene.public], PreflightPolicy::default());
        std::fs::write(scene.path("a-file"), b"").expect("file");
        request.options.target = scene.path("a-file");
        let error = check_snapshot(&scene.repository, &request).expect_err("not a directory");
        assert_eq!(
            error.to_string(),
            format!(
                "restore target {} exists and is not a directory",
                scene.path("a-file").display()
            )
        );

        request.options.target = scene.path("target");
        request.options.selection.only = vec!["photos".into()];
        let error = check_snapshot(&scene.repository, &request).expect_err("no such component");
        assert!(error.to_string().contains("photos"), "{error}");
    }
}
