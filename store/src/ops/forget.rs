//! Forget: remove snapshots from the repository's list, by policy or by
//! name, and record that it happened.
//!
//! Order of writes: first a signed forget record naming every snapshot
//! forgotten (with its time, host, components and tags, and the policy
//! applied), then the manifests are deleted. A crash in between leaves
//! manifests that a record already names; the next forget or prune deletes
//! them ([`complete_forgets`]). Data is never deleted here: a prune gives
//! the space back later.
//!
//! Only snapshots signed by a trusted key are subject to a policy: cairn
//! does not decide the fate of snapshots it cannot vouch for. A restore's
//! safety snapshots are kept apart from the others by their own rule
//! (`keep_safety`, a span from now), so a `keep-last` never spends itself
//! on them and `keep-daily` never keeps them for good. Snapshots are
//! grouped by the components their backup was asked for (held or failed),
//! so a failed night stays in its plan's group.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::manifest::SAFETY_TAG;
use crate::format::records::{FORGET_DOMAIN, ForgetRecord, ForgottenSnapshot, SignedRecord};
use crate::id::Id;
use crate::ops::annotate::read_annotations;
use crate::ops::listing::list_snapshots;
use crate::ops::retention::{
    Candidate, GroupBy, GroupDecision, KeepWithin, Policy, apply, apply_safety,
};
use crate::repository::Repository;
use crate::repository::read_record;

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Snapshots named one by one (ids or prefixes); used instead of a
    /// policy, never with one.
    pub explicit: Vec<String>,
    pub dry_run: bool,
    /// Lets a policy leave a group with no snapshot at all.
    pub allow_empty: bool,
    /// How long a restore's safety snapshots are kept (from now); `None`
    /// keeps them all. The `--keep-*` rules never apply to them.
    pub keep_safety: Option<KeepWithin>,
}

pub struct ForgetOutcome {
    /// Per group, each snapshot with whether it is kept and why (empty for
    /// an explicit forget).
    pub groups: Vec<GroupDecision>,
    pub forgotten: Vec<ForgottenSnapshot>,
    /// Snapshots left alone because no trusted key signed them.
    pub untrusted: Vec<Id>,
    /// The forget record written (none for a dry run or nothing to do).
    pub record: Option<Id>,
    /// Manifests named by earlier records that a crash had left behind.
    pub completed: Vec<Id>,
}

pub fn forget(
    repository: &Repository,
    key: &SigningKey,
    trusted: &[PublicKey],
    options: &ForgetOptions,
) -> Result<ForgetOutcome> {
    let (mut outcome, policy_text) = choose(repository, trusted, options)?;
    if options.dry_run {
        return Ok(outcome);
    }
    record_and_delete(repository, key, trusted, &mut outcome, policy_text)?;
    Ok(outcome)
}

/// Which snapshots `options` forget, and the policy's description for the
/// record; changes nothing (what `--dry-run` and `cairn stats --keep-*`
/// show), and needs no signing key.
pub fn choose(
    repository: &Repository,
    trusted: &[PublicKey],
    options: &ForgetOptions,
) -> Result<(ForgetOutcome, String)> {
    let (listed, _unreadable) = list_snapshots(repository, trusted)?;
    let mut outcome = ForgetOutcome {
        groups: Vec::new(),
        forgotten: Vec::new(),
        untrusted: Vec::new(),
        record: None,
        completed: Vec::new(),
    };
    let describe = |id: Id| -> ForgottenSnapshot {
        match listed.iter().find(|summary| summary.id == id) {
            Some(summary) => ForgottenSnapshot {
                id,
                time: summary.body.time.clone(),
                host: summary.body.host.clone(),
                components: summary.body.component_names(),
                tags: summary.body.tags.clone(),
            },
            // An unreadable manifest can still be forgotten by name.
            None => ForgottenSnapshot {
                id,
                time: String::new(),
                host: String::new(),
                components: Vec::new(),
                tags: Vec::new(),
            },
        }
    };
    let policy_text;
    if !options.explicit.is_empty() {
        if !options.policy.is_empty() {
            return Err(StoreError::Invalid(
                "name snapshots to forget or give a policy (--keep-*), not both".into(),
            ));
        }
        let mut ids = Vec::new();
        for spec in &options.explicit {
            if spec == "latest" {
                return Err(StoreError::Invalid(
                    "forget needs snapshot ids, not \"latest\" (too easy to forget the wrong one)"
                        .into(),
                ));
            }
            let id = repository.resolve_snapshot(spec, trusted)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        outcome.forgotten = ids.into_iter().map(describe).collect();
        policy_text = "explicit".to_string();
    } else {
        if options.policy.is_empty() {
            return Err(StoreError::Invalid(
                "no policy given: use --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly/--keep-within/--keep-tag, or name snapshots".into(),
            ));
        }
        crate::ops::retention::validate(&options.policy)?;
        // `--keep-tag` and grouping by tags see the tags as they stand now.
        let annotations = read_annotations(repository, trusted)?;
        let mut regular = Vec::new();
        let mut safety = Vec::new();
        for summary in &listed {
            if summary.trusted.is_err() {
                outcome.untrusted.push(summary.id);
                continue;
            }
            let time: jiff::Timestamp = summary.body.time.parse().map_err(|error| {
                StoreError::corrupt(
                    format!("snapshot {}", summary.id),
                    format!("its time {:?} does not parse: {error}", summary.body.time),
                )
            })?;
            let candidate = Candidate {
                id: summary.id,
                time,
                host: summary.body.host.clone(),
                components: attempted_components(&summary.body),
                tags: annotations.effective(&summary.id, &summary.body).tags,
            };
            if candidate.tags.iter().any(|tag| tag == SAFETY_TAG) {
                safety.push(candidate);
            } else {
                regular.push(candidate);
            }
        }
        let zone = jiff::tz::TimeZone::system();
        outcome.groups = apply(&options.policy, options.group_by, &regular, &zone);
        // Checked before the safety group joins: safety snapshots expire
        // by design, and forgetting them all is no accident.
        let emptied = outcome
            .groups
            .iter()
            .find(|group| group.decisions.iter().all(|decision| !decision.keep))
            .cloned();
        if !safety.is_empty() {
            outcome.groups.push(apply_safety(
                &safety,
                options.keep_safety.as_ref(),
                jiff::Timestamp::now(),
                &zone,
            ));
        }
        if !options.allow_empty
            && let Some(group) = emptied
        {
            return Err(StoreError::Invalid(format!(
                "this policy would forget every snapshot of group {}; pass --allow-empty if that is what you want",
                group.key
            )));
        }
        outcome.forgotten = outcome
            .groups
            .iter()
            .flat_map(|group| group.decisions.iter())
            .filter(|decision| !decision.keep)
            .map(|decision| describe(decision.id))
            .collect();
        policy_text = options.policy.describe();
    }
    Ok((outcome, policy_text))
}

/// Writes the forget record for what [`choose`] chose, then deletes the
/// manifests (the order of writes in this module's header).
fn record_and_delete(
    repository: &Repository,
    key: &SigningKey,
    trusted: &[PublicKey],
    outcome: &mut ForgetOutcome,
    policy_text: String,
) -> Result<()> {
    if !outcome.forgotten.is_empty() {
        let record = ForgetRecord::new(
            crate::ops::common::now_rfc3339(),
            crate::ops::common::host_name(),
            crate::ops::common::user_name(),
            policy_text,
            outcome.forgotten.clone(),
        );
        let signed = SignedRecord::sign(&record, FORGET_DOMAIN, repository.id(), key);
        outcome.record = Some(repository.store_object(ObjectKind::Forget, &signed.encode())?);
        for snapshot in &outcome.forgotten {
            repository
                .backend()
                .delete(ObjectKind::Snapshot, &snapshot.id.to_hex())?;
        }
    }
    let mut signers = trusted.to_vec();
    signers.push(crate::format::keys::public_key_of(key));
    outcome.completed = complete_forgets(repository, &signers)?;
    Ok(())
}

/// Every forget record signed by a trusted key, decoded, with its signer;
/// records that are
/// unreadable or untrusted are left for verify to report.
pub fn read_forget_records(
    repository: &Repository,
    trusted: &[PublicKey],
) -> Result<Vec<(Id, ForgetRecord, PublicKey)>> {
    let mut records = Vec::new();
    for id in repository.list_ids(ObjectKind::Forget)? {
        let decoded =
            read_record::<ForgetRecord>(repository, ObjectKind::Forget, FORGET_DOMAIN, &id)
                .and_then(|(record, signed)| {
                    signed.verify(repository.id(), trusted).map_err(|failure| {
                        StoreError::corrupt(format!("forget record {id}"), failure.to_string())
                    })?;
                    Ok((record, signed.signer()))
                });
        if let Ok((record, signer)) = decoded {
            records.push((id, record, signer));
        }
    }
    Ok(records)
}

/// Deletes manifests that a trusted forget record names but that are still
/// present (a forget interrupted between its record and its deletions).
pub fn complete_forgets(repository: &Repository, trusted: &[PublicKey]) -> Result<Vec<Id>> {
    let present: std::collections::HashSet<Id> = repository
        .list_ids(ObjectKind::Snapshot)?
        .into_iter()
        .collect();
    let mut completed = Vec::new();
    for (_, record, _) in read_forget_records(repository, trusted)? {
        for snapshot in record.snapshots {
            if present.contains(&snapshot.id) && !completed.contains(&snapshot.id) {
                repository
                    .backend()
                    .delete(ObjectKind::Snapshot, &snapshot.id.to_hex())?;
                completed.push(snapshot.id);
            }
        }
    }
    Ok(completed)
}

/// The components a backup was asked for: those it holds and those that
/// failed (a problem with an empty path names a component that left no
/// record). Grouping by these keeps a night whose database dump failed in
/// its plan's group, instead of forming a group of its own that every
/// `keep-daily` would keep for good.
fn attempted_components(body: &crate::format::manifest::SnapshotBody) -> Vec<String> {
    let mut names = body.component_names();
    for problem in &body.problems {
        if problem.path.is_empty() && !names.contains(&problem.component) {
            names.push(problem.component.clone());
        }
    }
    names
}
