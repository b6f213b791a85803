//! Choosing a snapshot: `latest`, `latest~N`, an id or a unique prefix,
//! scoped by a [`SnapshotFilter`] (host, tag, component, point in time).
//!
//! The one place every command resolves a snapshot argument, so `restore`,
//! `ls`, `cat`, `drill`, `verify --snapshot` (and any later command) mean
//! the same by `latest`:
//! 1. the candidates are those `latest` may ever mean (FORMAT.md 11.5:
//!    trusted, this repository's, no safety snapshot, not dated ahead),
//!    newest first;
//! 2. a candidate passes the filter when its host is one of `hosts`, its
//!    tags *now* (annotations included, `ops::annotate`) hold every one of
//!    `tags`, it holds every one of `components`, and it was taken at or
//!    before `at`;
//! 3. `latest` is the first that passes, `latest~N` the one N places after
//!    it.
//!
//! A snapshot named by id or prefix is taken as named: the filter chooses
//! among snapshots, it does not second-guess a name (the caller's trust and
//! preflight checks still apply to it). Reads only; never prints.

use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use crate::ops::annotate::{Annotations, read_annotations};
use crate::repository::{Repository, SkippedSnapshot, no_latest};

/// What a chosen snapshot must be. Empty lists allow anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Its host is one of these.
    pub hosts: Vec<String>,
    /// Its tags (after annotations) include every one of these.
    pub tags: Vec<String>,
    /// It holds every one of these components.
    pub components: Vec<String>,
    /// It was taken at or before this time (`restore --at`).
    pub at: Option<jiff::Timestamp>,
}

impl SnapshotFilter {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.tags.is_empty()
            && self.components.is_empty()
            && self.at.is_none()
    }

    /// Whether a snapshot whose body is `body` and whose tags are now
    /// `tags` passes.
    pub fn matches(&self, body: &SnapshotBody, tags: &[String]) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&body.host))
            && self.tags.iter().all(|wanted| tags.contains(wanted))
            && self
                .components
                .iter()
                .all(|name| body.component(name).is_some())
            && self.at.is_none_or(|at| {
                body.time
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|time| time <= at)
            })
    }

    /// The filter in words, for messages: `host a, tag nightly, component
    /// db, taken at or before …`; empty when it allows anything.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.hosts.is_empty() {
            parts.push(format!("host {}", self.hosts.join(" or ")));
        }
        for tag in &self.tags {
            parts.push(format!("tag {tag}"));
        }
        for component in &self.components {
            parts.push(format!("component {component}"));
        }
        if let Some(at) = self.at {
            parts.push(format!("taken at or before {at}"));
        }
        parts.join(", ")
    }

    /// Adds `more` components the snapshot must hold (a restore's `--only`).
    pub fn with_components(mut self, more: &[String]) -> Self {
        for name in more {
            if !self.components.contains(name) {
                self.components.push(name.clone());
            }
        }
        self
    }
}

/// A snapshot argument, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotSpec {
    /// `latest` (0) or `latest~N`: the N-th before the newest that passes.
    Latest(u32),
    /// A full id or a unique prefix of at least 4 hex digits.
    Named(String),
}

impl SnapshotSpec {
    pub fn parse(text: &str) -> Result<Self> {
        if text == "latest" {
            return Ok(SnapshotSpec::Latest(0));
        }
        if let Some(back) = text.strip_prefix("latest~") {
            return back
                .parse::<u32>()
                .ok()
                .filter(|_| back.bytes().all(|byte| byte.is_ascii_digit()))
                .map(SnapshotSpec::Latest)
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "snapshot {text:?}: after `latest~` give how many snapshots back, e.g. latest~1"
                    ))
                });
        }
        Ok(SnapshotSpec::Named(text.to_string()))
    }

    /// Whether this chooses among snapshots (so a filter applies).
    pub fn is_latest(&self) -> bool {
        matches!(self, SnapshotSpec::Latest(_))
    }
}

/// The chosen snapshot, and the manifests `latest` passed over (for the
/// caller to report).
#[derive(Clone, Debug)]
pub struct Selected {
    pub id: Id,
    pub passed_over: Vec<SkippedSnapshot>,
}

/// Resolves `spec` under `filter` (see the module's rules). Reads the
/// annotations only when the filter names tags.
pub fn select(
    repository: &Repository,
    trusted: &[PublicKey],
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<Selected> {
    let back = match SnapshotSpec::parse(spec)? {
        SnapshotSpec::Named(name) => {
            let (id, passed_over) = repository.resolve_snapshot_reporting(&name, trusted)?;
            return Ok(Selected { id, passed_over });
        }
        SnapshotSpec::Latest(back) => back,
    };
    let annotations = if filter.tags.is_empty() {
        Annotations::default()
    } else {
        read_annotations(repository, trusted)?
    };
    let (candidates, skipped) = repository.latest_candidates(trusted)?;
    let trusted_count = candidates.len();
    // A component no trusted snapshot holds is a name that does not
    // exist, not a snapshot that does not: answer with the names that do.
    if let Some(missing) = filter.components.iter().find(|name| {
        !candidates
            .iter()
            .any(|candidate| candidate.body.component(name).is_some())
    }) && trusted_count > 0
    {
        let mut existing: Vec<String> = candidates
            .iter()
            .flat_map(|candidate| candidate.body.component_names())
            .collect();
        existing.sort();
        existing.dedup();
        return Err(StoreError::ComponentNotFound {
            name: missing.clone(),
            snapshot: format!("{spec} (nor in any other trusted snapshot)"),
            existing,
        });
    }
    let passing: Vec<Id> = candidates
        .into_iter()
        .filter(|candidate| {
            let tags = annotations.effective(&candidate.id, &candidate.body).tags;
            filter.matches(&candidate.body, &tags)
        })
        .map(|candidate| candidate.id)
        .collect();
    if let Some(id) = passing.get(back as usize) {
        return Ok(Selected {
            id: *id,
            passed_over: skipped,
        });
    }
    if trusted_count == 0 {
        return Err(no_latest(&skipped));
    }
    let scope = match filter.describe() {
        described if described.is_empty() => String::new(),
        described => format!(" with {described}"),
    };
    Err(StoreError::SnapshotNotFound(format!(
        "{spec}: {} trusted snapshot(s){scope} (of {trusted_count} that `latest` may mean)",
        passing.len()
    )))
}
