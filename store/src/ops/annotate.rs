//! Annotations (`cairn tag`): reading which tags and labels each snapshot
//! has now, and writing a new annotation that changes them.
//!
//! The rule (FORMAT.md 11.7): among the annotations that name a snapshot,
//! are sealed for this repository and signed by a key trusted for it, the
//! one with the greatest `sequence` (ties: the greatest annotation id)
//! states the snapshot's tags and labels; with none, the manifest's own
//! stand. A restore's safety tag is the manifest's alone: it is kept when
//! the manifest has it and never taken from an annotation.
//!
//! Writing (numbered, so a crash at any step is plain):
//! 1. read every trusted annotation and find the current state of each
//!    snapshot named;
//! 2. apply the change; a snapshot whose tags and labels do not change
//!    gets no annotation;
//! 3. sign and store one annotation per changed snapshot, sequence one
//!    above the current. A crash between two leaves the earlier ones
//!    stored and complete, the later snapshots unchanged; running the
//!    command again finishes it (step 2 skips those already changed).
//!
//! Never changes a manifest, never deletes anything; an annotation that
//! is unreadable or untrusted is ignored and reported, never a failure.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::annotation::Annotation;
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::manifest::{SAFETY_TAG, SnapshotBody};
use crate::id::Id;
use crate::repository::Repository;
use std::collections::{BTreeMap, HashMap};

/// The winning annotation of each snapshot, and those passed over.
#[derive(Debug, Default)]
pub struct Annotations {
    winners: HashMap<Id, (Id, Annotation)>,
    /// Annotations that are unreadable, untrusted or another repository's,
    /// with why: ignored, for the caller to report.
    pub ignored: Vec<(Id, String)>,
}

/// A snapshot's tags and labels as they stand now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The annotation that says so, and its sequence; `None` when the
    /// manifest's own stand.
    pub annotation: Option<(Id, u64)>,
}

impl Annotations {
    /// The annotation that decides `snapshot`'s tags, if any.
    pub fn of(&self, snapshot: &Id) -> Option<(&Id, &Annotation)> {
        self.winners.get(snapshot).map(|(id, body)| (id, body))
    }

    /// `snapshot`'s tags and labels now: its winning annotation's (with
    /// the manifest's safety tag kept), else its manifest's.
    pub fn effective(&self, snapshot: &Id, body: &SnapshotBody) -> Effective {
        match self.winners.get(snapshot) {
            None => Effective {
                tags: body.tags.clone(),
                labels: body.labels.clone(),
                annotation: None,
            },
            Some((id, annotation)) => {
                let mut tags = annotation.tags.clone();
                if body.tags.iter().any(|tag| tag == SAFETY_TAG) {
                    tags.push(SAFETY_TAG.to_string());
                }
                Effective {
                    tags,
                    labels: annotation.labels.clone(),
                    annotation: Some((*id, annotation.sequence)),
                }
            }
        }
    }

    /// How many snapshots have an annotation.
    pub fn len(&self) -> usize {
        self.winners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.winners.is_empty()
    }
}

/// Reads every annotation and keeps, per snapshot, the one that decides
/// it. A repository opened without its read key (a write-only host) has
/// none readable: every snapshot keeps its manifest's tags.
pub fn read_annotations(repository: &Repository, trusted: &[PublicKey]) -> Result<Annotations> {
    let mut annotations = Annotations::default();
    if repository.require_read_key("annotations").is_err() {
        return Ok(annotations);
    }
    for id in repository.list_ids(ObjectKind::Annotation)? {
        let object = format!("annotation {id}");
        let read = repository
            .read_object(ObjectKind::Annotation, &id)
            .and_then(|bytes| Annotation::decode(&bytes, &object));
        let (annotation, record) = match read {
            Ok(read) => read,
            // Removed between listing and reading: nothing to decide.
            Err(StoreError::Missing { .. }) => continue,
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error) => {
                annotations.ignored.push((id, error.to_string()));
                continue;
            }
        };
        if let Err(failure) = record.verify(repository.id(), trusted) {
            annotations.ignored.push((id, failure.to_string()));
            continue;
        }
        let wins = annotations
            .winners
            .get(&annotation.snapshot)
            .is_none_or(|(best_id, best)| (annotation.sequence, id) > (best.sequence, *best_id));
        if wins {
            annotations
                .winners
                .insert(annotation.snapshot, (id, annotation));
        }
    }
    Ok(annotations)
}

/// What `cairn tag` changes: tags and labels added, removed, or set whole.
/// `set_*` replaces the list first; then `remove_*`, then `add_*`.
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    pub set_tags: Option<Vec<String>>,
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub set_labels: Option<BTreeMap<String, String>>,
    pub add_labels: BTreeMap<String, String>,
    pub remove_labels: Vec<String>,
}

impl TagChange {
    pub fn is_empty(&self) -> bool {
        self.set_tags.is_none()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
            && self.set_labels.is_none()
            && self.add_labels.is_empty()
            && self.remove_labels.is_empty()
    }

    /// The safety tag marks what a restore saved; letting a user add or
    /// remove it would hide a snapshot from `latest` or make a safety
    /// snapshot `latest`.
    fn check(&self) -> Result<()> {
        let named = self
            .set_tags
            .iter()
            .flatten()
            .chain(&self.add_tags)
            .chain(&self.remove_tags);
        for tag in named {
            if tag == SAFETY_TAG {
                return Err(StoreError::Invalid(format!(
                    "tag {SAFETY_TAG:?} is given only by a restore to its safety snapshot; it cannot be added or removed"
                )));
            }
            if tag.is_empty() {
                return Err(StoreError::Invalid("a tag cannot be empty".into()));
            }
        }
        Ok(())
    }

    fn apply(&self, now: &Effective) -> (Vec<String>, BTreeMap<String, String>) {
        let mut tags: Vec<String> = match &self.set_tags {
            Some(set) => set.clone(),
            None => now.tags.clone(),
        };
        tags.retain(|tag| tag != SAFETY_TAG && !self.remove_tags.contains(tag));
        for tag in &self.add_tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        let mut deduplicated = Vec::new();
        for tag in tags {
            if !deduplicated.contains(&tag) {
                deduplicated.push(tag);
            }
        }
        let mut labels = self
            .set_labels
            .clone()
            .unwrap_or_else(|| now.labels.clone());
        for key in &self.remove_labels {
            labels.remove(key);
        }
        labels.extend(self.add_labels.clone());
        (deduplicated, labels)
    }
}

/// What a tag command did to one snapshot.
#[derive(Clone, Debug)]
pub struct Tagged {
    pub snapshot: Id,
    pub before: Effective,
    pub after: Effective,
    /// The annotation written; `None` when nothing changed or on a dry run.
    pub annotation: Option<Id>,
}

/// Applies `change` to each of `snapshots` (ids already resolved, each
/// with its verified body), writing one annotation signed by `key` per
/// snapshot whose tags or labels change; without a key (a dry run) it
/// only says what would change.
pub fn tag(
    repository: &Repository,
    key: Option<&SigningKey>,
    trusted: &[PublicKey],
    snapshots: &[(Id, SnapshotBody)],
    change: &TagChange,
) -> Result<Vec<Tagged>> {
    change.check()?;
    repository.require_read_key("the annotations `tag` changes")?;
    let annotations = read_annotations(repository, trusted)?;
    let mut done = Vec::new();
    for (snapshot, body) in snapshots {
        let before = annotations.effective(snapshot, body);
        let (tags, labels) = change.apply(&before);
        let safety = body.tags.iter().any(|tag| tag == SAFETY_TAG);
        let mut shown_tags = tags.clone();
        if safety {
            shown_tags.push(SAFETY_TAG.to_string());
        }
        let unchanged = shown_tags == before.tags && labels == before.labels;
        let mut after = Effective {
            tags: shown_tags,
            labels: labels.clone(),
            annotation: before.annotation,
        };
        let mut written = None;
        if let Some(key) = key.filter(|_| !unchanged) {
            let sequence = before
                .annotation
                .map_or(1, |(_, sequence)| sequence.saturating_add(1));
            let annotation = Annotation::new(
                *snapshot,
                sequence,
                (
                    crate::ops::common::now_rfc3339(),
                    crate::ops::common::host_name(),
                    crate::ops::common::user_name(),
                ),
                tags,
                labels,
            )?;
            let signed = annotation.sign(repository.id(), key);
            let id = repository.store_object(ObjectKind::Annotation, &signed.encode())?;
            after.annotation = Some((id, sequence));
            written = Some(id);
        }
        done.push(Tagged {
            snapshot: *snapshot,
            before,
            after,
            annotation: written,
        });
    }
    Ok(done)
}
