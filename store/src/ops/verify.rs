//! Verify: audit a repository and describe damage by what it costs.
//!
//! 1. Check every published key object, then read every index file (each
//!    checked against its name).
//! 2. List packs: every indexed pack must exist with the indexed size;
//!    packs no index lists are noted (left by an interrupted backup), not
//!    counted as damage.
//! 3. With `read_data`, read every indexed pack whole, in parallel: its hash
//!    must match its name, its header the index, and every blob must
//!    decompress to bytes that hash to its id.
//! 4. Every manifest must decode and carry a valid signature by a trusted
//!    key; its trees are walked, and every tree and chunk must be indexed in
//!    a pack that exists. Findings collect the snapshot, component and path
//!    of every file they damage.
//!
//! Never writes or repairs anything.

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::index::BlobLocation;
use crate::format::keys::PublicKey;
use crate::format::manifest::{ComponentKind, TrustFailure};
use crate::format::pack::{BlobDecoder, parse_pack};
use crate::format::records::{FORGET_DOMAIN, SignedRecord};
use crate::format::tree::{EntryKind, Tree};
use crate::id::Id;
use crate::ops::common::join_relative;
use crate::repository::Repository;
use crate::repository::{read_marks, read_record};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Paths listed per finding; the total is always counted.
const AFFECTED_LIMIT: usize = 1000;

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
    UnreferencedPack,
    /// A forget record or deletion mark that cannot be read.
    CorruptRecord,
    /// A pack a prune deleted that an index file still lists (a prune was
    /// interrupted; the next one rewrites the index).
    DeletedPack,
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
    /// Blobs whose stored bytes failed their check when read.
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

fn finding(kind: FindingKind, object: String, message: String) -> Finding {
    let severity = match kind {
        FindingKind::UnreferencedPack | FindingKind::DeletedPack => Severity::Notice,
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

struct Audit {
    report: VerifyReport,
    blobs: HashMap<Id, BlobLocation>,
    /// Findings that damage every blob in a pack (missing, wrong size).
    pack_findings: HashMap<Id, usize>,
    /// Findings for single blobs (corrupt chunk, or missing from the index).
    blob_findings: HashMap<Id, usize>,
    trees: HashMap<Id, Option<Tree>>,
    /// Further locations of blobs listed in more than one pack.
    alternates: HashMap<Id, Vec<BlobLocation>>,
}

pub fn verify(
    repository: &Repository,
    trusted: &[PublicKey],
    options: VerifyOptions,
) -> Result<VerifyReport> {
    let mut audit = Audit {
        report: VerifyReport::default(),
        blobs: HashMap::new(),
        pack_findings: HashMap::new(),
        blob_findings: HashMap::new(),
        trees: HashMap::new(),
        alternates: HashMap::new(),
    };
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
    let indexed_packs = audit.read_index(repository)?;
    let readable = audit.check_packs(repository, &indexed_packs, &marked)?;
    audit.prefer_present_copies();
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
        audit.read_packs(repository, &chosen);
    }
    for root in &roots {
        audit.walk(
            repository,
            &root.snapshot,
            &root.component,
            root.tree,
            root.path,
        );
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

/// A component's root tree, to walk.
struct Root {
    snapshot: String,
    component: String,
    tree: Id,
    path: &'static str,
}

/// A stable, per-run random order: BLAKE3 of a fresh seed and the pack id.
fn shuffled(packs: &[Id]) -> Result<Vec<Id>> {
    let seed: [u8; 32] = crate::os::random::random_bytes()?;
    let mut keyed: Vec<(Id, Id)> = packs
        .iter()
        .map(|pack| (Id(*blake3::keyed_hash(&seed, &pack.0).as_bytes()), *pack))
        .collect();
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, pack)| pack).collect())
}

fn choose_packs(packs: &[Id], sizes: &HashMap<Id, u64>, check: DataCheck) -> Result<Vec<Id>> {
    Ok(match check {
        DataCheck::None => Vec::new(),
        DataCheck::All => packs.to_vec(),
        DataCheck::Subset(Subset::Slice { n, t }) => packs
            .iter()
            .filter(|pack| {
                let mut low = [0u8; 8];
                low.copy_from_slice(&pack.0[..8]);
                u64::from_le_bytes(low) % t == n - 1
            })
            .copied()
            .collect(),
        DataCheck::Subset(Subset::Percent(percent)) => {
            let count = ((packs.len() as f64) * percent / 100.0).ceil() as usize;
            shuffled(packs)?
                .into_iter()
                .take(count.min(packs.len()))
                .collect()
        }
        DataCheck::Subset(Subset::Bytes(budget)) => {
            let mut chosen = Vec::new();
            let mut total = 0u64;
            for pack in shuffled(packs)? {
                let size = sizes.get(&pack).copied().unwrap_or(0);
                if !chosen.is_empty() && total + size > budget {
                    continue;
                }
                total += size;
                chosen.push(pack);
            }
            chosen
        }
    })
}

impl Audit {
    fn add(&mut self, finding: Finding) -> usize {
        self.report.findings.push(finding);
        self.report.findings.len() - 1
    }

    fn affect(&mut self, finding: usize, affected: Affected) {
        let finding = &mut self.report.findings[finding];
        // Whatever it was, a finding that costs a file is damage.
        finding.severity = Severity::Damage;
        finding.affected_total += 1;
        if finding.affected.len() < AFFECTED_LIMIT {
            finding.affected.push(affected);
        }
    }

    /// Every published key object must match its name and decode.
    fn check_keys(&mut self, repository: &Repository) -> Result<()> {
        for id in repository.list_ids(ObjectKind::Key)? {
            let decoded = repository
                .read_verified(ObjectKind::Key, &id)
                .and_then(|bytes| {
                    crate::format::keys::PublicKeyObject::decode(&bytes, &format!("key {id}"))
                });
            if let Err(error) = decoded {
                self.add(finding(
                    FindingKind::CorruptKey,
                    format!("key {id}"),
                    error.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Forget records must be intact and signed by a trusted key (one that
    /// is not could hide snapshots from a reader who trusts it).
    fn check_forget_records(
        &mut self,
        repository: &Repository,
        trusted: &[PublicKey],
    ) -> Result<()> {
        for id in repository.list_ids(ObjectKind::Forget)? {
            let object = format!("forget record {id}");
            let read = read_record::<crate::format::records::ForgetRecord>(
                repository,
                ObjectKind::Forget,
                FORGET_DOMAIN,
                &id,
            );
            match read.map(|(_, signed)| signed) {
                Err(error) => {
                    self.add(finding(
                        FindingKind::CorruptRecord,
                        object,
                        error.to_string(),
                    ));
                }
                Ok(signed) => self.check_record_signature(&signed, object, trusted),
            }
        }
        Ok(())
    }

    /// Deletion marks must be intact; returns the packs they name, each
    /// with its mark.
    fn check_marks(
        &mut self,
        repository: &Repository,
        trusted: &[PublicKey],
    ) -> Result<HashMap<Id, Id>> {
        let (marks, unreadable) = read_marks(repository, trusted)?;
        for (id, why) in unreadable {
            self.add(finding(
                FindingKind::CorruptRecord,
                format!("deletion mark {id}"),
                why,
            ));
        }
        let mut marked = HashMap::new();
        for read in marks {
            if !read.trusted {
                let mut notice = finding(
                    FindingKind::UntrustedSigner,
                    format!("deletion mark {}", read.id),
                    "not signed by a trusted key; no prune here will act on it".into(),
                );
                notice.severity = Severity::Notice;
                self.add(notice);
            }
            for pack in &read.mark.packs {
                marked.insert(pack.id, read.id);
            }
        }
        Ok(marked)
    }

    fn check_record_signature(
        &mut self,
        signed: &SignedRecord,
        object: String,
        trusted: &[PublicKey],
    ) {
        match signed.verify(trusted) {
            Ok(()) => {}
            Err(TrustFailure::BadSignature) => {
                self.add(finding(
                    FindingKind::BadSignature,
                    object,
                    "signature does not match its contents (tampered?)".into(),
                ));
            }
            Err(TrustFailure::UntrustedSigner(key)) => {
                self.add(finding(
                    FindingKind::UntrustedSigner,
                    object,
                    format!("signed by untrusted key {}", key.to_hex()),
                ));
            }
        }
    }

    /// Returns every indexed pack with its indexed size.
    fn read_index(&mut self, repository: &Repository) -> Result<HashMap<Id, u64>> {
        let mut packs = HashMap::new();
        for id in repository.list_ids(ObjectKind::Index)? {
            self.report.index_files += 1;
            let file = match repository.read_index_file(&id) {
                Ok(file) => file,
                // Removed since listing (a prune or repair replaced it).
                Err(crate::StoreError::Missing { .. }) => {
                    self.report.index_files -= 1;
                    continue;
                }
                Err(error) => {
                    self.add(finding(
                        FindingKind::CorruptIndex,
                        format!("index file {id}"),
                        error.to_string(),
                    ));
                    continue;
                }
            };
            for pack in file.packs {
                if let Some(size) = packs.insert(pack.id, pack.size)
                    && size != pack.size
                {
                    self.add(finding(
                        FindingKind::CorruptIndex,
                        format!("index file {id}"),
                        format!(
                            "lists pack {} as {} bytes where another index file says {size}",
                            pack.id, pack.size
                        ),
                    ));
                }
                for entry in pack.blobs {
                    let location = BlobLocation {
                        pack: pack.id,
                        entry,
                    };
                    match self.blobs.entry(entry.id) {
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(location);
                        }
                        std::collections::hash_map::Entry::Occupied(first) => {
                            if first.get().pack != pack.id {
                                self.alternates.entry(entry.id).or_default().push(location);
                            }
                        }
                    }
                }
            }
        }
        Ok(packs)
    }

    /// Checks every indexed pack exists with its size; returns those that do.
    fn check_packs(
        &mut self,
        repository: &Repository,
        indexed: &HashMap<Id, u64>,
        marked: &HashMap<Id, Id>,
    ) -> Result<Vec<Id>> {
        let present: HashMap<Id, u64> = repository.list_packs()?;
        self.report.packs = present.len() as u64;
        let mut readable = Vec::new();
        for (pack, size) in indexed {
            match present.get(pack) {
                None if marked.contains_key(pack) => {
                    // A notice unless the walk finds a snapshot needing it.
                    let index = self.add(finding(
                        FindingKind::DeletedPack,
                        format!("pack {pack}"),
                        format!(
                            "deleted by a prune (deletion mark {}) and still listed in the index; the next prune rewrites the index",
                            marked[pack].short()
                        ),
                    ));
                    self.pack_findings.insert(*pack, index);
                }
                None => {
                    let index = self.add(finding(
                        FindingKind::MissingPack,
                        format!("pack {pack}"),
                        "listed in the index but missing from the repository".into(),
                    ));
                    self.pack_findings.insert(*pack, index);
                }
                Some(actual) if actual != size => {
                    let index = self.add(finding(
                        FindingKind::PackSizeMismatch,
                        format!("pack {pack}"),
                        format!("is {actual} bytes, the index says {size}"),
                    ));
                    self.pack_findings.insert(*pack, index);
                }
                Some(_) => readable.push(*pack),
            }
        }
        for (pack, size) in &present {
            if !indexed.contains_key(pack) {
                self.add(finding(
                    FindingKind::UnreferencedPack,
                    format!("pack {pack}"),
                    format!(
                        "{size} bytes that no index file lists (left by an interrupted backup?)"
                    ),
                ));
            }
        }
        Ok(readable)
    }

    /// Points each blob whose pack is missing or the wrong size at another
    /// copy in a sound pack, if the index lists one (a later backup stores a
    /// lost blob again). A lost pack none of whose blobs is needed from it
    /// any more is only a notice.
    fn prefer_present_copies(&mut self) {
        let bad_packs: HashSet<Id> = self.pack_findings.keys().copied().collect();
        if bad_packs.is_empty() {
            return;
        }
        for (blob, location) in self.blobs.iter_mut() {
            if !bad_packs.contains(&location.pack) {
                continue;
            }
            if let Some(sound) = self
                .alternates
                .get(blob)
                .and_then(|copies| copies.iter().find(|copy| !bad_packs.contains(&copy.pack)))
            {
                *location = *sound;
            }
        }
        let still_needed: HashSet<Id> = self
            .blobs
            .values()
            .filter(|location| bad_packs.contains(&location.pack))
            .map(|location| location.pack)
            .collect();
        for (pack, index) in &self.pack_findings {
            let finding = &mut self.report.findings[*index];
            if !still_needed.contains(pack) && finding.kind != FindingKind::DeletedPack {
                finding.severity = Severity::Notice;
                finding.message.push_str("; every blob it held is stored again in other packs (`cairn repair index` forgets it)");
            }
        }
    }

    /// Packs holding a blob that the roots reach.
    fn referenced_packs(&mut self, repository: &Repository, roots: &[Root]) -> HashSet<Id> {
        let mut packs = HashSet::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<Id> = roots.iter().map(|root| root.tree).collect();
        while let Some(tree_id) = stack.pop() {
            if !seen.insert(tree_id) {
                continue;
            }
            if let Some(location) = self.blobs.get(&tree_id) {
                packs.insert(location.pack);
            }
            let Ok(tree) = self.load_tree(repository, &tree_id) else {
                continue;
            };
            for entry in &tree.entries {
                stack.extend(entry.subtree);
                for chunk in entry.chunks.as_deref().unwrap_or_default() {
                    if let Some(location) = self.blobs.get(chunk) {
                        packs.insert(location.pack);
                    }
                }
            }
        }
        packs
    }

    fn read_packs(&mut self, repository: &Repository, packs: &[Id]) {
        let mut by_pack: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
        for location in self.blobs.values() {
            by_pack.entry(location.pack).or_default().push(*location);
        }
        let results: Vec<PackReading> = packs
            .par_iter()
            .map(|pack| {
                read_pack(
                    repository,
                    pack,
                    by_pack.get(pack).map(Vec::as_slice).unwrap_or_default(),
                )
            })
            .collect();
        for reading in results {
            self.report.packs_read += 1;
            self.report.blobs_read += reading.blobs_read;
            self.report.bytes_read += reading.bytes_read;
            for finding in reading.pack_findings {
                self.add(finding);
            }
            for (blob, finding) in reading.bad_blobs {
                self.report.corrupt_blobs.push(blob);
                // A tree already found unreadable keeps its one finding.
                if self.blob_findings.contains_key(&blob) {
                    continue;
                }
                let index = self.add(finding);
                self.blob_findings.insert(blob, index);
            }
        }
    }

    /// Checks each manifest; returns the component roots to walk.
    fn check_snapshots(
        &mut self,
        repository: &Repository,
        trusted: &[PublicKey],
        ids: Vec<Id>,
        components: &[String],
    ) -> Result<Vec<Root>> {
        let mut roots = Vec::new();
        let mut found_components = HashSet::new();
        for id in ids {
            self.report.snapshots += 1;
            let object = format!("snapshot {id}");
            let manifest = match repository.read_manifest(&id) {
                Ok(manifest) => manifest,
                Err(error) => {
                    self.add(finding(
                        FindingKind::CorruptManifest,
                        object,
                        error.to_string(),
                    ));
                    continue;
                }
            };
            if let Err(failure) = manifest.verify(trusted) {
                let kind = match failure {
                    TrustFailure::UntrustedSigner(_) => FindingKind::UntrustedSigner,
                    TrustFailure::BadSignature => FindingKind::BadSignature,
                };
                self.add(finding(kind, object, failure.to_string()));
                continue;
            }
            let body = match manifest.body_unverified() {
                Ok(body) => body,
                Err(error) => {
                    self.add(finding(
                        FindingKind::CorruptManifest,
                        object,
                        error.to_string(),
                    ));
                    continue;
                }
            };
            for component in &body.components {
                if !components.is_empty() && !components.contains(&component.name) {
                    continue;
                }
                found_components.insert(component.name.clone());
                roots.push(Root {
                    snapshot: id.short(),
                    component: component.name.clone(),
                    tree: component.tree,
                    path: if component.kind == ComponentKind::Directory {
                        "/"
                    } else {
                        ""
                    },
                });
            }
        }
        if let Some(missing) = components
            .iter()
            .find(|name| !found_components.contains(*name))
        {
            return Err(crate::StoreError::Invalid(format!(
                "no audited snapshot has a component named {missing:?}"
            )));
        }
        Ok(roots)
    }

    /// Where a blob's damage is recorded, if it is damaged.
    fn damage_of(&mut self, blob: &Id, kind: &str) -> Option<usize> {
        let damage = self.find_damage(blob, kind);
        if damage.is_some() {
            self.report.unreadable_blobs.push(*blob);
        }
        damage
    }

    fn find_damage(&mut self, blob: &Id, kind: &str) -> Option<usize> {
        match self.blobs.get(blob) {
            None => Some(*self.blob_findings.entry(*blob).or_insert_with(|| {
                self.report.findings.push(finding(
                    FindingKind::MissingBlob,
                    format!("{kind} {blob}"),
                    "referenced by a snapshot but in no index file".into(),
                ));
                self.report.findings.len() - 1
            })),
            Some(location) => self
                .blob_findings
                .get(blob)
                .or_else(|| self.pack_findings.get(&location.pack))
                .copied(),
        }
    }

    fn walk(
        &mut self,
        repository: &Repository,
        snapshot: &str,
        component: &str,
        root: Id,
        root_path: &str,
    ) {
        let mut stack = vec![(root, root_path.to_string())];
        while let Some((tree_id, path)) = stack.pop() {
            let affected = |path: &str| Affected {
                snapshot: snapshot.into(),
                component: component.into(),
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
            };
            if let Some(damage) = self.damage_of(&tree_id, "tree") {
                self.affect(damage, affected(&path));
                continue;
            }
            let tree = match self.load_tree(repository, &tree_id) {
                Ok(tree) => tree,
                Err(index) => {
                    self.affect(index, affected(&path));
                    continue;
                }
            };
            for entry in &tree.entries {
                let name = entry.display_name();
                let child = if path == "/" {
                    name
                } else {
                    join_relative(&path, &name)
                };
                match entry.kind {
                    EntryKind::Directory => {
                        if let Some(subtree) = entry.subtree {
                            stack.push((subtree, child));
                        }
                    }
                    EntryKind::File => {
                        let mut damaged = Vec::new();
                        for chunk in entry.chunks.as_deref().unwrap_or_default() {
                            self.report.chunk_references += 1;
                            if let Some(damage) = self.damage_of(chunk, "chunk")
                                && !damaged.contains(&damage)
                            {
                                damaged.push(damage);
                            }
                        }
                        for damage in damaged {
                            self.affect(damage, affected(&child));
                        }
                    }
                    EntryKind::Symlink => {}
                }
            }
        }
    }

    /// Reads a tree once; a tree that fails to read gets one finding.
    fn load_tree(&mut self, repository: &Repository, id: &Id) -> std::result::Result<Tree, usize> {
        if let Some(Some(tree)) = self.trees.get(id) {
            return Ok(tree.clone());
        }
        if let Some(index) = self.blob_findings.get(id) {
            return Err(*index);
        }
        self.report.trees += 1;
        let decoded = self
            .blobs
            .get(id)
            .ok_or_else(|| "not indexed".to_string())
            .and_then(|location| {
                repository
                    .read_blob(location)
                    .map_err(|error| error.to_string())
            })
            .and_then(|bytes| {
                Tree::decode(&bytes, &format!("tree {id}")).map_err(|error| error.to_string())
            });
        match decoded {
            Ok(tree) => {
                self.trees.insert(*id, Some(tree.clone()));
                Ok(tree)
            }
            Err(message) => {
                let index = self.add(finding(
                    FindingKind::CorruptTree,
                    format!("tree {id}"),
                    message,
                ));
                self.blob_findings.insert(*id, index);
                Err(index)
            }
        }
    }
}

struct PackReading {
    blobs_read: u64,
    bytes_read: u64,
    pack_findings: Vec<Finding>,
    bad_blobs: Vec<(Id, Finding)>,
}

fn read_pack(repository: &Repository, pack: &Id, blobs: &[BlobLocation]) -> PackReading {
    let mut reading = PackReading {
        blobs_read: 0,
        bytes_read: 0,
        pack_findings: Vec::new(),
        bad_blobs: Vec::new(),
    };
    let object = format!("pack {pack}");
    let bytes = match repository.backend().read(ObjectKind::Pack, &pack.to_hex()) {
        Ok(bytes) => bytes,
        Err(error) => {
            reading.pack_findings.push(finding(
                FindingKind::CorruptPack,
                object,
                error.to_string(),
            ));
            for location in blobs {
                reading.bad_blobs.push((
                    location.entry.id,
                    finding(
                        FindingKind::CorruptChunk,
                        format!(
                            "{:?} blob {} in pack {pack}",
                            location.entry.kind, location.entry.id
                        )
                        .to_lowercase(),
                        "its pack cannot be read".into(),
                    ),
                ));
            }
            return reading;
        }
    };
    reading.bytes_read = bytes.len() as u64;
    if Id::of(&bytes) != *pack {
        reading.pack_findings.push(finding(
            FindingKind::CorruptPack,
            object.clone(),
            "content does not match its name (BLAKE3 hash)".into(),
        ));
    }
    match parse_pack(&bytes, pack) {
        Ok(header) => {
            let listed: HashSet<_> = header.blobs.iter().collect();
            if blobs
                .iter()
                .any(|location| !listed.contains(&location.entry))
            {
                reading.pack_findings.push(finding(
                    FindingKind::CorruptPack,
                    object.clone(),
                    "its header disagrees with the index".into(),
                ));
            }
        }
        Err(error) => reading.pack_findings.push(finding(
            FindingKind::CorruptPack,
            object.clone(),
            error.to_string(),
        )),
    }
    // In pack order, so that each shared frame is decompressed once.
    let mut blobs = blobs.to_vec();
    blobs.sort_by_key(|location| location.entry.offset);
    let mut decoder = BlobDecoder::default();
    for location in &blobs {
        let entry = &location.entry;
        reading.blobs_read += 1;
        let start = entry.offset as usize;
        let stored = bytes.get(start..start.saturating_add(entry.length as usize));
        let result = match stored {
            Some(stored) => decoder
                .decode_sharing(entry, stored, pack, true)
                .map(|_| ()),
            None => Err(crate::StoreError::corrupt(
                format!("blob {}", entry.id),
                "lies past the end of its pack",
            )),
        };
        if let Err(error) = result {
            let kind = match entry.kind {
                crate::format::pack::BlobKind::Data => "chunk",
                crate::format::pack::BlobKind::Tree => "tree",
            };
            reading.bad_blobs.push((
                entry.id,
                finding(
                    if kind == "tree" {
                        FindingKind::CorruptTree
                    } else {
                        FindingKind::CorruptChunk
                    },
                    format!("{kind} {} in pack {pack}", entry.id),
                    error.to_string(),
                ),
            ));
        }
    }
    reading
}
