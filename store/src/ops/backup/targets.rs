//! Backing up into every repository the caller names, some of which it may
//! not have been able to open: which were set aside and why, each one's
//! result, and the [`Verdict`] that follows for the whole run.
//!
//! Owns the rules: a repository that cannot be opened or fails leaves the
//! others to finish; a run with no repository opened is an error before
//! anything is read; a run stored nowhere has failed; one stored in some
//! but not all is its own verdict, above any problem of the snapshot.
//! Never opens a repository (the caller does, with its keys and caches)
//! and never says how a verdict is shown.

use super::options::{BackupOutcome, Destination};
use crate::error::{Result, StoreError};

/// One repository the caller asked for: opened, or why it could not be.
pub struct Target<'a> {
    /// How the caller names it (a path or URL), for reports.
    pub location: String,
    pub opened: std::result::Result<Destination<'a>, String>,
}

/// Why a repository holds no snapshot of this backup.
#[derive(Debug)]
pub enum TargetFailure {
    /// It could not be opened; the caller's reason.
    NotOpened(String),
    /// The backup into it failed.
    Failed(StoreError),
}

/// What a backup's result means for whoever ran it (the CLI maps each to
/// an exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every component stored in full.
    Complete,
    /// Stored, with problems the snapshot lists (files left out, changed
    /// while read, components whose command failed).
    Incomplete,
    /// A component marked critical failed; the others are stored.
    CriticalFailed,
    /// Stored in some of the repositories, not all.
    SomeRepositoriesFailed,
    /// Stored in none.
    Failed,
}

impl BackupOutcome {
    pub fn verdict(&self) -> Verdict {
        if self.body.problems.is_empty() {
            Verdict::Complete
        } else if self.failed_components.iter().any(|(_, critical)| *critical) {
            Verdict::CriticalFailed
        } else {
            Verdict::Incomplete
        }
    }

    /// The critical components that failed, by name.
    pub fn critical_failures(&self) -> Vec<&str> {
        self.failed_components
            .iter()
            .filter(|(_, critical)| *critical)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Every component that failed, by name.
    pub fn failed_component_names(&self) -> Vec<String> {
        self.failed_components
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Each repository's location and result, in the order they were given.
#[derive(Debug)]
pub struct TargetsOutcome {
    pub repositories: Vec<(String, std::result::Result<BackupOutcome, TargetFailure>)>,
}

impl TargetsOutcome {
    /// The first repository's outcome that was stored: the components,
    /// problems and unchanged files are the same in every one.
    pub fn first(&self) -> Option<&BackupOutcome> {
        self.repositories
            .iter()
            .find_map(|(_, result)| result.as_ref().ok())
    }

    /// The locations of the repositories that hold no snapshot.
    pub fn failed_locations(&self) -> Vec<&str> {
        self.repositories
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(location, _)| location.as_str())
            .collect()
    }

    pub fn verdict(&self) -> Verdict {
        match self.first() {
            None => Verdict::Failed,
            Some(_) if !self.failed_locations().is_empty() => Verdict::SomeRepositoriesFailed,
            Some(outcome) => outcome.verdict(),
        }
    }

    /// The components that failed (the same in every repository).
    pub fn failed_components(&self) -> Vec<String> {
        self.first()
            .map(BackupOutcome::failed_component_names)
            .unwrap_or_default()
    }
}

/// The targets that were opened, ready for [`super::backup_to_each`], and
/// where those that were not go back in among the results.
pub(super) struct Opened<'a> {
    locations: Vec<String>,
    pub(super) destinations: Vec<Destination<'a>>,
    /// Position among the targets, and why it could not be opened.
    set_aside: Vec<(usize, String)>,
}

/// Sets aside the targets that could not be opened; fails, naming each
/// one's reason, if none was.
pub(super) fn open(targets: Vec<Target>) -> Result<Opened> {
    let mut opened = Opened {
        locations: Vec::new(),
        destinations: Vec::new(),
        set_aside: Vec::new(),
    };
    for target in targets {
        match target.opened {
            Ok(destination) => opened.destinations.push(destination),
            Err(why) => opened.set_aside.push((opened.locations.len(), why)),
        }
        opened.locations.push(target.location);
    }
    if opened.destinations.is_empty() {
        let whys: Vec<String> = opened
            .set_aside
            .iter()
            .map(|(position, why)| format!("{}: {why}", opened.locations[*position]))
            .collect();
        return Err(StoreError::Invalid(format!(
            "no repository could be opened: {}",
            whys.join("; ")
        )));
    }
    Ok(opened)
}

impl Opened<'_> {
    /// Every target's result, in the order given: `outcomes` holds one per
    /// destination, in their order.
    pub(super) fn merge(self, outcomes: Vec<Result<BackupOutcome>>) -> TargetsOutcome {
        let mut outcomes = outcomes.into_iter();
        let mut set_aside = self.set_aside.into_iter().peekable();
        let repositories = self
            .locations
            .into_iter()
            .enumerate()
            .map(|(position, location)| {
                let result = match set_aside.next_if(|(aside, _)| *aside == position) {
                    Some((_, why)) => Err(TargetFailure::NotOpened(why)),
                    None => match outcomes.next() {
                        Some(result) => result.map_err(TargetFailure::Failed),
                        None => Err(TargetFailure::Failed(StoreError::Invalid(
                            "no outcome".into(),
                        ))),
                    },
                };
                (location, result)
            })
            .collect();
        TargetsOutcome { repositories }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestRepository;
    use super::*;

    #[test]
    fn with_no_target_opened_the_error_names_every_reason() {
        let targets = vec![
            Target {
                location: "/mnt/a".into(),
                opened: Err("no such directory".into()),
            },
            Target {
                location: "s3://b".into(),
                opened: Err("access denied".into()),
            },
        ];
        let error = open(targets)
            .err()
            .expect("nothing to back up into")
            .to_string();
        assert_eq!(
            error,
            "no repository could be opened: /mnt/a: no such directory; s3://b: access denied"
        );
    }

    #[test]
    fn results_come_back_in_the_order_of_the_targets() {
        let (first, third) = (TestRepository::new(), TestRepository::new());
        let targets = vec![
            Target {
                location: "first".into(),
                opened: Ok(first.destination()),
            },
            Target {
                location: "second".into(),
                opened: Err("locked".into()),
            },
            Target {
                location: "third".into(),
                opened: Ok(third.destination()),
            },
        ];
        let opened = open(targets).unwrap();
        assert_eq!(opened.destinations.len(), 2);
        let outcome = opened.merge(vec![
            Err(StoreError::Invalid("first failed".into())),
            Err(StoreError::Conflict("third failed".into())),
        ]);
        let locations: Vec<&str> = outcome
            .repositories
            .iter()
            .map(|(location, _)| location.as_str())
            .collect();
        assert_eq!(locations, ["first", "second", "third"]);
        assert!(matches!(
            &outcome.repositories[0].1,
            Err(TargetFailure::Failed(StoreError::Invalid(_)))
        ));
        assert!(matches!(
            &outcome.repositories[1].1,
            Err(TargetFailure::NotOpened(why)) if why == "locked"
        ));
        assert!(matches!(
            &outcome.repositories[2].1,
            Err(TargetFailure::Failed(StoreError::Conflict(_)))
        ));
        assert_eq!(outcome.verdict(), Verdict::Failed);
        assert_eq!(outcome.failed_locations(), ["first", "second", "third"]);
        assert!(outcome.failed_components().is_empty());
    }
}
