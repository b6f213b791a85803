//! Verify: audit a repository and describe damage by what it costs.
//!
//! 1. Check every published key object, then read every index file (each
//!    checked against its name).
//! 2. List packs: every indexed pack must exist with the indexed size;
//!    packs no index lists are noted (left by an interrupted backup), not
//!    counted as damage.
//! 3. With `read_data`, read every indexed pack in bounded windows, in
//!    parallel: its hash must match its name, its header the index, and
//!    every blob must decompress to bytes that hash to its id. A blob that
//!    fails is read at its other listed copies; one that passes keeps the
//!    failure from costing any snapshot (the finding says so).
//! 4. Every manifest must decode and carry a valid signature by a trusted
//!    key; its trees are walked, and every tree and chunk must be indexed in
//!    a pack that exists. Findings collect the snapshot, component and path
//!    of every file they damage.
//!
//! Any object that fails its check is damage, even when other copies keep
//! every snapshot restorable (the finding says so): an audit must not stay
//! clean while the storage loses or rots objects. Only what costs nothing
//! and fails no check (a pack no index lists, a pack a prune deleted) is a
//! notice. Never writes or repairs anything.
//!
//! The audit's state and its walks are in `audit`; choosing and reading
//! packs in `packs`.

mod audit;
mod packs;

use audit::Audit;
use packs::choose_packs;

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::keys::PublicKey;
use crate::id::Id;
use crate::index::IndexCache;
use crate::progress::{Amount, Phase, Progress};
use crate::repository::Repository;
use serde::Serialize;
use std::collections::HashSet;

/// Paths listed per finding; the total is always counted.
pub(super) const AFFECTED_LIMIT: usize = 1000;

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub data: DataCheck,
    /// Audit only these snapshots (all when empty).
    pub snapshots: Vec<Id>,
    /// Audit only these components of them (all when empty).
    pub components: Vec<String>,
}

/// How much data `verify` reads back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum DataCheck {
    /// Structure only: no pack is read.
    #[default]
    None,
    /// Every pack in scope.
    All,
    Subset(Subset),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// A random share of the packs in scope, in percent.
    Percent(f64),
    /// Slice `n` of `t` (1-based): packs whose id modulo `t` is `n - 1`.
    /// The same every run, so `t` runs with n = 1..=t read every pack once.
    Slice { n: u64, t: u64 },
    /// Random packs up to this many bytes (at least one pack).
    Bytes(u64),
}

impl Subset {
    /// Parses `10%`, `2/7` or a byte budget such as `5G`, `500M`, `4096`.
    pub fn parse(text: &str) -> std::result::Result<Subset, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.parse::<f64>() {
                Ok(value) if value > 0.0 && value <= 100.0 => Ok(Subset::Percent(value)),
                _ => Err(format!(
                    "{text:?}: a percentage must be above 0% and at most 100%"
                )),
            };
        }
        if let Some((n, t)) = text.split_once('/') {
            return match (n.parse::<u64>(), t.parse::<u64>()) {
                (Ok(n), Ok(t)) if n >= 1 && n <= t => Ok(Subset::Slice { n, t }),
                _ => Err(format!("{text:?}: a slice is n/t with 1 <= n <= t")),
            };
        }
        let (digits, unit) = text.split_at(
            text.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len()),
        );
        let factor: u64 = match unit
            .to_ascii_uppercase()
            .trim_end_matches("IB")
            .trim_end_matches('B')
        {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            "T" => 1 << 40,
            _ => {
                return Err(format!(
                    "{text:?}: use a percentage (10%), a slice (2/7) or a size (5G)"
                ));
            }
        };
        match digits
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(factor))
        {
            Some(bytes) if bytes > 0 => Ok(Subset::Bytes(bytes)),
            _ => Err(format!(
                "{text:?}: use a percentage (10%), a slice (2/7) or a size (5G)"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    CorruptIndex,
    MissingPack,
    PackSizeMismatch,
    CorruptPack,
    CorruptChunk,
    CorruptTree,
    MissingBlob,
    CorruptManifest,
    CorruptKey,
    BadSignature,
    UntrustedSigner,
    /// A signed object made for another repository (copied or replayed
    /// from there).
    OtherRepository,
    /// A snapshot this machine saw as the newest of its host and
    /// components has disappeared without a trusted forget record naming
    /// it: the repository was rolled back.
    RolledBack,
    UnreferencedPack,
    /// A forget record or deletion mark that cannot be read.
    CorruptRecord,
    /// A pack a prune deleted that an index file still lists (a prune was
    /// interrupted; the next one rewrites the index).
    DeletedPack,
    /// An index file not vouched for (unsigned, or not sealed for this
    /// repository by a trusted key): its listings are used as hints only.
    UnvouchedIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something a snapshot needs is missing or wrong.
    Damage,
    /// Worth knowing, costs nothing (e.g. data no index lists).
    Notice,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub snapshot: String,
    pub component: String,
    pub path: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// The object at fault, e.g. `pack 3fa…` or `chunk 9c1… in pack 3fa…`.
    pub object: String,
    pub message: String,
    /// Files and directories that cannot be restored in full because of it.
    pub affected: Vec<Affected>,
    pub affected_total: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub findings: Vec<Finding>,
    /// Packs the data check could have read (all in scope), and read.
    pub packs_in_scope: u64,
    pub snapshots: u64,
    pub index_files: u64,
    pub packs: u64,
    pub trees: u64,
    pub chunk_references: u64,
    pub packs_read: u64,
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Blobs whose stored bytes failed their check when read, and for
    /// which no other listed copy passes it (`repair snapshots` drops the
    /// files that need them).
    pub corrupt_blobs: Vec<Id>,
    /// Blobs an audited snapshot needs that this repository cannot give
    /// intact (missing, in a lost pack, or failing their check), sorted:
    /// what another repository holding the same chunks could stand in for.
    #[serde(skip)]
    pub unreadable_blobs: Vec<Id>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|finding| finding.severity == Severity::Notice)
    }

    /// Damage findings: objects that failed their check, whether or not
    /// they cost a snapshot anything.
    pub fn damage_count(&self) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == Severity::Damage)
            .count()
    }

    /// Snapshots with at least one damaged file or tree.
    pub fn damaged_snapshots(&self) -> Vec<String> {
        let mut snapshots: Vec<String> = self
            .findings
            .iter()
            .flat_map(|finding| finding.affected.iter().map(|a| a.snapshot.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        snapshots.sort();
        snapshots
    }
}

/// A finding of `kind` about `object`, with the severity that kind has.
pub fn finding(kind: FindingKind, object: String, message: String) -> Finding {
    let severity = match kind {
        FindingKind::UnreferencedPack | FindingKind::DeletedPack | FindingKind::UnvouchedIndex => {
            Severity::Notice
        }
        _ => Severity::Damage,
    };
    Finding {
        kind,
        severity,
        object,
        message,
        affected: Vec::new(),
        affected_total: 0,
    }
}

pub fn verify(
    repository: &Repository,
    trusted: &[PublicKey],
    options: VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let mut audit = Audit::default();
    // Snapshots are listed before index files: a backup that finishes in
    // between then adds a snapshot we do not check, never one whose index
    // we have not read (which would look like missing blobs).
    let mut snapshots = if options.snapshots.is_empty() {
        repository.list_ids(ObjectKind::Snapshot)?
    } else {
        options.snapshots.clone()
    };
    snapshots.sort();
    audit.check_keys(repository)?;
    audit.check_forget_records(repository, trusted)?;
    let marked = audit.check_marks(repository, trusted)?;
    let indexed_packs = audit.read_index(repository, trusted)?;
    let readable = audit.check_packs(repository, &indexed_packs, &marked)?;
    audit.prefer_present_copies();
    audit.locate_bases(repository);
    let roots = audit.check_snapshots(repository, trusted, snapshots, &options.components)?;
    let scoped = !options.snapshots.is_empty() || !options.components.is_empty();
    let referenced = scoped.then(|| audit.referenced_packs(repository, &roots));
    if options.data != DataCheck::None {
        let mut in_scope: Vec<Id> = match &referenced {
            Some(referenced) => readable
                .into_iter()
                .filter(|pack| referenced.contains(pack))
                .collect(),
            None => readable,
        };
        in_scope.sort();
        audit.report.packs_in_scope = in_scope.len() as u64;
        let chosen = choose_packs(&in_scope, &indexed_packs, options.data)?;
        progress.phase(
            Phase::VerifyData,
            Amount {
                bytes: chosen
                    .iter()
                    .filter_map(|pack| indexed_packs.get(pack))
                    .sum(),
                items: chosen.len() as u64,
            },
        );
        audit.read_packs(repository, &chosen, &indexed_packs, progress);
    }
    let snapshots_walked: HashSet<&str> = roots.iter().map(|root| root.snapshot.as_str()).collect();
    progress.phase(
        Phase::VerifyStructure,
        Amount::items(snapshots_walked.len() as u64),
    );
    for (position, root) in roots.iter().enumerate() {
        progress.component(&root.component);
        let bytes = audit.walk(repository, root);
        // A snapshot's roots are consecutive: it is done at its last one.
        let last_of_snapshot = roots
            .get(position + 1)
            .is_none_or(|next| next.snapshot != root.snapshot);
        progress.advance(Amount {
            bytes,
            items: u64::from(last_of_snapshot),
        });
    }
    // A limited audit reports only what its snapshots and components need.
    if let Some(referenced) = referenced {
        let unneeded: HashSet<usize> = audit
            .pack_findings
            .iter()
            .filter(|(pack, _)| !referenced.contains(pack))
            .map(|(_, index)| *index)
            .collect();
        let mut position = 0;
        audit.report.findings.retain(|_| {
            position += 1;
            !unneeded.contains(&(position - 1))
        });
    }
    audit.report.unreadable_blobs.sort();
    audit.report.unreadable_blobs.dedup();
    Ok(audit.report)
}

/// For one repository audited with others: how many of the blobs it
/// cannot give intact another of them holds intact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrossCheck {
    /// The report's `unreadable_blobs`.
    pub unreadable: usize,
    pub intact_elsewhere: usize,
}

impl CrossCheck {
    /// Whether a restore given every repository would still be whole.
    pub fn is_whole(&self) -> bool {
        self.intact_elsewhere == self.unreadable
    }
}

/// Looks for each blob `report` cannot give intact in `others`: a blob
/// counts as intact there when an index lists it and it reads back
/// matching its id. Never writes to any repository.
pub fn cross_check(report: &VerifyReport, others: &[(&Repository, &dyn IndexCache)]) -> CrossCheck {
    let intact_elsewhere = report
        .unreadable_blobs
        .iter()
        .filter(|blob| {
            others.iter().any(|(repository, index)| {
                matches!(index.lookup(blob), Ok(Some(location))
                    if repository.read_blob(&location).is_ok())
            })
        })
        .count();
    CrossCheck {
        unreadable: report.unreadable_blobs.len(),
        intact_elsewhere,
    }
}

/// A component's root tree, to walk.
pub(super) struct Root {
    pub(super) snapshot: String,
    pub(super) component: String,
    pub(super) tree: Id,
    /// The entries its walk may visit (`ops::walk::entry_budget`).
    pub(super) budget: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::format::pack::BlobKind;
    use crate::index::MemoryIndex;
    use crate::ops::common::blob_writer::BlobWriter;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Every file below `root` named `name`.
    fn find(root: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut directories = vec![root.to_path_buf()];
        while let Some(directory) = directories.pop() {
            for entry in std::fs::read_dir(&directory).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    directories.push(path);
                } else if entry.file_name() == name {
                    found.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn a_blob_counts_as_intact_elsewhere_only_if_it_reads_back_matching_its_id() {
        let directory = tempfile::tempdir().unwrap();
        let (other, _) =
            crate::repository::plaintext_for_tests(Arc::new(LocalBackend::new(directory.path())));
        let index = MemoryIndex::new();
        let writer = BlobWriter::new(&other, &index, HashMap::new(), None);
        // Incompressible, so each blob is stored as it is, alone.
        let contents: Vec<Vec<u8>> = (0..2u8)
            .map(|seed| {
                let mut bytes = vec![0u8; 64 * 1024];
                blake3::Hasher::new()
                    .update(&[seed])
                    .finalize_xof()
                    .fill(&mut bytes);
                bytes
            })
            .collect();
        let [intact, damaged] = [&contents[0], &contents[1]].map(|bytes| {
            let id = Id::of(bytes);
            writer.add(BlobKind::Data, id, bytes).unwrap();
            id
        });
        writer.finish().unwrap();
        let location = index.lookup(&damaged).unwrap().unwrap();
        let [pack] = &find(directory.path(), &location.pack.to_hex())[..] else {
            panic!("one pack file named {}", location.pack);
        };
        let mut bytes = std::fs::read(pack).unwrap();
        bytes[location.entry.offset as usize + 100] ^= 0xff;
        std::fs::write(pack, bytes).unwrap();

        let report = VerifyReport {
            unreadable_blobs: vec![intact, damaged, Id::of(b"held by no repository")],
            ..VerifyReport::default()
        };
        let cross = cross_check(&report, &[(&other, &index)]);
        assert_eq!(
            cross,
            CrossCheck {
                unreadable: 3,
                intact_elsewhere: 1
            }
        );
        assert!(!cross.is_whole());
        let only_intact = VerifyReport {
            unreadable_blobs: vec![intact],
            ..VerifyReport::default()
        };
        assert!(cross_check(&only_intact, &[(&other, &index)]).is_whole());
        assert!(!cross_check(&only_intact, &[]).is_whole());
    }
}
