//! [`Progress`]: how every long operation (backup, restore, verify, prune,
//! copy, drill) tells its caller how far it has come.
//!
//! An operation announces a [`Phase`] with the work it expects, then reports
//! work done as it goes, and names the component it is on. The caller
//! decides how to show it (a bar on a terminal, JSON lines, nothing); this
//! module never prints, and an operation never waits on its progress sink,
//! so every method must return quickly and may be called from any thread.

/// A stretch of an operation whose work is counted in one kind of item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Backup: reading, chunking and storing the components' files.
    Backup,
    /// Restore or drill: writing files into the target.
    Restore,
    /// Verify: checking manifests and trees.
    VerifyStructure,
    /// Verify: reading and re-hashing packs.
    VerifyData,
    /// Prune: reading the snapshots' trees to find what is live.
    PruneSurvey,
    /// Prune: repacking and deleting packs.
    PruneDelete,
    /// Copy: copying snapshots' chunks and trees into the target.
    Copy,
    /// Drill: checking the restored components.
    DrillCheck,
}

impl Phase {
    /// The phase's name in JSON progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Backup => "backup",
            Phase::Restore => "restore",
            Phase::VerifyStructure => "verify-structure",
            Phase::VerifyData => "verify-data",
            Phase::PruneSurvey => "prune-survey",
            Phase::PruneDelete => "prune-delete",
            Phase::Copy => "copy",
            Phase::DrillCheck => "drill-check",
        }
    }

    /// What the phase's items are, plural (`files`, `packs`, ...).
    pub fn unit(self) -> &'static str {
        match self {
            Phase::Backup | Phase::Restore => "files",
            Phase::VerifyStructure | Phase::PruneSurvey | Phase::Copy => "snapshots",
            Phase::VerifyData | Phase::PruneDelete => "packs",
            Phase::DrillCheck => "components",
        }
    }
}

/// An amount of work: bytes and items (files, packs, snapshots: the phase
/// says which). Either may be zero when it is not known or not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    pub bytes: u64,
    pub items: u64,
}

impl Amount {
    pub fn bytes(bytes: u64) -> Self {
        Amount { bytes, items: 0 }
    }

    pub fn items(items: u64) -> Self {
        Amount { bytes: 0, items }
    }
}

/// Receives an operation's progress. Every method has a default that does
/// nothing, so a sink implements only what it shows.
pub trait Progress: Sync {
    /// A phase begins; `expected` is its whole work (zero where unknown).
    /// Counts of work done start again from zero.
    fn phase(&self, _phase: Phase, _expected: Amount) {}
    /// The expected work of the current phase grew (a walk found more).
    fn expect_more(&self, _more: Amount) {}
    /// Work done since the last report.
    fn advance(&self, _done: Amount) {}
    /// The operation moved on to this component.
    fn component(&self, _name: &str) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_has_a_distinct_name_and_a_unit() {
        let phases = [
            Phase::Backup,
            Phase::Restore,
            Phase::VerifyStructure,
            Phase::VerifyData,
            Phase::PruneSurvey,
            Phase::PruneDelete,
            Phase::Copy,
            Phase::DrillCheck,
        ];
        let names: std::collections::HashSet<_> = phases.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), phases.len());
        assert!(phases.iter().all(|p| !p.unit().is_empty()));
    }
}
