//! The audit's state: the index as read, the findings so far, and the
//! trees read once each. Its checks (keys, records, marks, index, packs,
//! manifests) add findings; its two walks over a snapshot's trees find the
//! packs the audited roots need and name the files each finding damages.
//! Never writes anything.

use super::packs::read_pack;
use super::{
    AFFECTED_LIMIT, Affected, Finding, FindingKind, Root, Severity, VerifyReport, finding,
};
use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::index::BlobLocation;
use crate::format::keys::PublicKey;
use crate::format::manifest::TrustFailure;
use crate::format::records::{FORGET_DOMAIN, SignedRecord};
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk, entry_budget};
use crate::progress::{Amount, Progress};
use crate::repository::Repository;
use crate::repository::{read_marks, read_record};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;

/// Said of a blob whose copy failed its check while another listed copy
/// passes it.
pub(super) const RESTORABLE_FROM_COPY: &str =
    "every snapshot is still restorable from another copy of this blob, which passed its check";
/// Said of damage that costs no snapshot: other copies hold what it held.
pub(super) const RESTORABLE_ELSEWHERE: &str =
    "the pack is damaged, but every snapshot is still restorable from other copies";

#[derive(Default)]
pub(super) struct Audit {
    pub(super) report: VerifyReport,
    pub(super) blobs: HashMap<Id, BlobLocation>,
    /// Findings that damage every blob in a pack (missing, wrong size).
    pub(super) pack_findings: HashMap<Id, usize>,
    /// Findings for single blobs (corrupt chunk, or missing from the index).
    blob_findings: HashMap<Id, usize>,
    trees: HashMap<Id, Option<Tree>>,
    /// Further locations of blobs listed in more than one pack.
    alternates: HashMap<Id, Vec<BlobLocation>>,
    /// Blobs whose location in `blobs` only an index file not vouched for
    /// lists, with that file.
    hinted: HashMap<Id, Id>,
    /// Trees a walk refused (too deep, or past its budget), with their
    /// finding.
    refused_trees: HashMap<Id, usize>,
    /// Files and trees found damaged so far, every time one is.
    affected: u64,
    /// Component trees whose whole walk found nothing, with what it
    /// counted (see [`Audit::walk`]).
    clean_walks: HashMap<Id, CleanWalk>,
}

/// What the walk of a component tree that found nothing counted.
#[derive(Clone, Copy)]
struct CleanWalk {
    entries: u64,
    chunk_references: u64,
    bytes_read: u64,
}

impl Audit {
    fn add(&mut self, finding: Finding) -> usize {
        self.report.findings.push(finding);
        self.report.findings.len() - 1
    }

    fn affect(&mut self, finding: usize, affected: Affected) {
        self.affected += 1;
        let finding = &mut self.report.findings[finding];
        // Whatever it was, a finding that costs a file is damage.
        finding.severity = Severity::Damage;
        finding.affected_total += 1;
        if finding.affected.len() < AFFECTED_LIMIT {
            finding.affected.push(affected);
        }
    }

    /// Every published key object must match its name and decode.
    pub(super) fn check_keys(&mut self, repository: &Repository) -> Result<()> {
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
    pub(super) fn check_forget_records(
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
                Ok(signed) => {
                    self.check_record_signature(&signed, object, repository.id(), trusted)
                }
            }
        }
        Ok(())
    }

    /// Deletion marks must be intact; returns the packs they name, each
    /// with its mark.
    pub(super) fn check_marks(
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
        repository: &Id,
        trusted: &[PublicKey],
    ) {
        match signed.verify(repository, trusted) {
            Ok(()) => {}
            Err(failure @ TrustFailure::OtherRepository(_)) => {
                self.add(finding(
                    FindingKind::OtherRepository,
                    object,
                    failure.to_string(),
                ));
            }
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

    /// Returns every indexed pack with its indexed size. Vouched index
    /// files (FORMAT.md section 9) are taken first, so each blob's place
    /// to check is a vouched one where there is one; the others are named
    /// as notices, their places kept as alternates.
    pub(super) fn read_index(
        &mut self,
        repository: &Repository,
        trusted: &[PublicKey],
    ) -> Result<HashMap<Id, u64>> {
        let mut packs = HashMap::new();
        let mut files = Vec::new();
        // Opened side by side (each is read, decrypted, its signature
        // checked and decoded, while the other core had nothing to do),
        // then taken in the listing's order, so findings keep their order.
        let opened: Vec<_> = repository
            .list_ids(ObjectKind::Index)?
            .into_par_iter()
            .map(|id| (id, repository.open_index_file(&id, trusted)))
            .collect();
        for (id, opened) in opened {
            self.report.index_files += 1;
            let file = match opened {
                Ok((file, vouching)) => {
                    if let Some(why) = vouching.why_not() {
                        self.add(finding(
                            FindingKind::UnvouchedIndex,
                            format!("index file {id}"),
                            format!(
                                "not vouched for: {why}; used only as a hint of where blobs are, never to skip storing or to delete data (`cairn repair index` seals the index if it is yours)"
                            ),
                        ));
                    }
                    (vouching.is_vouched(), file)
                }
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
            files.push((id, file));
        }
        // Vouched first (a stable sort keeps the listing's order otherwise).
        files.sort_by_key(|(_, (vouched, _))| !vouched);
        for (id, (vouched, file)) in files {
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
                            if !vouched {
                                self.hinted.insert(entry.id, id);
                            }
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
    pub(super) fn check_packs(
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
    /// any more is still damage (storage that loses or truncates objects
    /// must not pass an audit), said to cost no snapshot.
    pub(super) fn prefer_present_copies(&mut self) {
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
                finding.message.push_str(&format!(
                    "; {RESTORABLE_ELSEWHERE} (every blob it held is stored again in other packs; `cairn repair index` forgets pack {})",
                    pack.short()
                ));
            }
        }
    }

    /// Makes every delta read from now on decode through its base where
    /// this audit keeps it: after [`Self::prefer_present_copies`], so a
    /// base stored again after its pack was lost is read from the copy
    /// that exists, and its deltas are not reported as corrupt.
    pub(super) fn locate_bases(&self, repository: &Repository) {
        let mut bases = HashMap::new();
        for location in self.blobs.values() {
            let mut next = location.entry.base;
            while let Some(base) = next.filter(|base| !bases.contains_key(base)) {
                let Some(found) = self.blobs.get(&base) else {
                    break;
                };
                bases.insert(base, *found);
                next = found.entry.base;
            }
        }
        repository.locate_bases_with(std::sync::Arc::new(move |id: &Id| {
            Ok(bases.get(id).copied())
        }));
    }

    /// Packs holding a blob that the roots reach.
    pub(super) fn referenced_packs(
        &mut self,
        repository: &Repository,
        roots: &[Root],
    ) -> HashSet<Id> {
        let mut visitor = PacksReached {
            audit: self,
            repository,
            packs: HashSet::new(),
        };
        // Last root first, as findings for unreadable trees were always
        // made in that order.
        let roots = roots.iter().rev().map(|root| (root.tree, String::new()));
        let Ok(_) = TreeWalk::new().skipping_seen().walk(roots, &mut visitor);
        visitor.packs
    }

    pub(super) fn read_packs(
        &mut self,
        repository: &Repository,
        packs: &[Id],
        sizes: &HashMap<Id, u64>,
        progress: &dyn Progress,
    ) {
        // Each pack's blobs as places in `self.blobs`, not copies: a copy
        // of every location (128 bytes each) was 11 MiB of a full verify's
        // peak on the real-applications repository (heaptrack).
        let mut by_pack: HashMap<Id, Vec<&BlobLocation>> = HashMap::new();
        let mut hinted_in: HashMap<Id, HashSet<Id>> = HashMap::new();
        for location in self.blobs.values() {
            by_pack.entry(location.pack).or_default().push(location);
            if self.hinted.contains_key(&location.entry.id) {
                let hinted = hinted_in.entry(location.pack).or_default();
                hinted.insert(location.entry.id);
            }
        }
        let nothing_hinted = HashSet::new();
        // Scan windows, reused from pack to pack: at most one per thread
        // reading, and all freed when the reading is done.
        let windows = WindowPool::new(repository);
        let read_one = |pack: &Id| {
            let mut window = windows.take();
            let reading = read_pack(
                repository,
                pack,
                sizes.get(pack).copied().unwrap_or_default(),
                by_pack.get(pack).map(Vec::as_slice).unwrap_or_default(),
                hinted_in.get(pack).unwrap_or(&nothing_hinted),
                &mut window,
            );
            windows.give_back(window);
            progress.advance(Amount {
                bytes: reading.bytes_read,
                items: 1,
            });
            reading
        };
        let cost = |pack: &Id| {
            let deltas: u64 = by_pack
                .get(pack)
                .into_iter()
                .flatten()
                .filter(|location| location.entry.base.is_some())
                .map(|location| u64::from(location.entry.raw_length))
                .sum();
            sizes.get(pack).copied().unwrap_or_default() + deltas
        };
        let results = costliest_first(packs, cost, read_one);
        for reading in results {
            self.report.packs_read += 1;
            self.report.blobs_read += reading.blobs_read;
            self.report.bytes_read += reading.bytes_read;
            for finding in reading.pack_findings {
                self.add(finding);
            }
            // A notice naming the lying index file; damage only if a
            // snapshot needs the blob (the damage walk makes it so).
            for blob in reading.false_hints {
                let Some(file) = self.hinted.get(&blob).copied() else {
                    continue;
                };
                let pack = self.blobs.get(&blob).map(|location| location.pack);
                self.report.corrupt_blobs.push(blob);
                let index = self.add(finding(
                    FindingKind::UnvouchedIndex,
                    format!("index file {file}"),
                    format!(
                        "not vouched for, and claims blob {blob} is in pack {}, whose header does not list it: a false hint, ignored",
                        pack.map(|pack| pack.to_hex()).unwrap_or_default()
                    ),
                ));
                self.blob_findings.entry(blob).or_insert(index);
            }
            for (blob, mut finding) in reading.bad_blobs {
                // Damage all the same, but it costs nothing while another
                // listed copy passes its check (a later backup stored the
                // blob again): the walks find the blob there.
                if let Some(copy) = self.sound_copy(repository, &blob) {
                    finding
                        .message
                        .push_str(&format!("; {RESTORABLE_FROM_COPY} (pack {})", copy.pack));
                    self.blobs.insert(blob, copy);
                    self.add(finding);
                    continue;
                }
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

    /// Another listed copy of `blob` that reads back intact, if any: each
    /// is read whole and checked against the id (a delta through its
    /// bases), in the order the index files were read.
    fn sound_copy(&self, repository: &Repository, blob: &Id) -> Option<BlobLocation> {
        self.alternates
            .get(blob)?
            .iter()
            .filter(|copy| !self.pack_findings.contains_key(&copy.pack))
            .find(|copy| repository.read_blob(copy).is_ok())
            .copied()
    }

    /// Checks each manifest; returns the component roots to walk.
    pub(super) fn check_snapshots(
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
            if let Err(failure) = manifest.verify(repository.id(), trusted) {
                let kind = match failure {
                    TrustFailure::UntrustedSigner(_) => FindingKind::UntrustedSigner,
                    TrustFailure::BadSignature => FindingKind::BadSignature,
                    TrustFailure::OtherRepository(_) => FindingKind::OtherRepository,
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
                    budget: entry_budget(&component.stats),
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

    /// Walks one component, recording the paths each finding damages;
    /// returns the bytes of the trees it walked.
    ///
    /// A component tree already walked whole without a finding (the same
    /// directory in snapshot after snapshot, an unchanged re-backup's every
    /// component) is not walked again: what damages a file is a fact of
    /// the blobs it names, settled before any walk begins (their index
    /// entries, the packs read) or by the first walk that meets them, so
    /// the same tree finds the same nothing. It is walked again when its
    /// entries reach this root's budget, where the walk may refuse it.
    pub(super) fn walk(&mut self, repository: &Repository, root: &Root) -> u64 {
        if let Some(clean) = self.clean_walks.get(&root.tree)
            && clean.entries < root.budget
        {
            self.report.chunk_references += clean.chunk_references;
            return clean.bytes_read;
        }
        let (affected, references) = (self.affected, self.report.chunk_references);
        let mut visitor = DamageWalk {
            audit: self,
            repository,
            root,
            bytes_read: 0,
            entries: 0,
        };
        let Ok(_) = TreeWalk::new()
            .with_paths()
            .within(root.budget)
            .walk([(root.tree, String::new())], &mut visitor);
        let (bytes_read, entries) = (visitor.bytes_read, visitor.entries);
        if self.affected == affected {
            let clean = CleanWalk {
                entries,
                chunk_references: self.report.chunk_references - references,
                bytes_read,
            };
            self.clean_walks.insert(root.tree, clean);
        }
        bytes_read
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

/// `read` of every pack of `packs`, its results in `packs`' order, the
/// packs taken by the pool's threads one at a time from a queue in order of
/// `cost` (stored bytes, plus the raw bytes of the deltas whose bases
/// each decodes), costliest first. Split the way `par_iter` splits a list
/// (each thread a half, in the list's order), the last large or
/// delta-heavy pack ran alone while the other core idled: about 0.1 s at
/// the end of the real applications' 0.8 s verify (`perf`, 2 cores).
fn costliest_first<R: Send>(
    packs: &[Id],
    cost: impl Fn(&Id) -> u64,
    read: impl Fn(&Id) -> R + Sync,
) -> Vec<R> {
    let mut order: Vec<usize> = (0..packs.len()).collect();
    let costs: Vec<u64> = packs.iter().map(cost).collect();
    order.sort_by_key(|&at| std::cmp::Reverse(costs[at]));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = rayon::current_num_threads().clamp(1, packs.len().max(1));
    let mut done: Vec<(usize, R)> = (0..threads)
        .into_par_iter()
        .flat_map_iter(|_| {
            let mut mine = Vec::new();
            loop {
                let taken = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&at) = order.get(taken) else {
                    break;
                };
                mine.push((at, read(&packs[at])));
            }
            mine
        })
        .collect();
    done.sort_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Buffers for the scans' windows, handed from one pack's scan to the
/// next so that their pages are faulted in once, not for every window
/// (with the fixed mmap threshold a freed 4 MiB buffer goes back to the
/// kernel at once). Holds at most one buffer per thread reading, each at
/// most twice a window: one stretched further, to hold a large blob
/// whole, is freed rather than kept.
struct WindowPool {
    idle: std::sync::Mutex<Vec<Vec<u8>>>,
    largest_kept: usize,
}

impl WindowPool {
    fn new(repository: &Repository) -> Self {
        let window = crate::repository::scan_window(repository.backend().parallelism());
        WindowPool {
            idle: std::sync::Mutex::new(Vec::new()),
            largest_kept: usize::try_from(window.saturating_mul(2)).unwrap_or(usize::MAX),
        }
    }

    fn take(&self) -> Vec<u8> {
        self.idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_default()
    }

    fn give_back(&self, window: Vec<u8>) {
        if window.capacity() <= self.largest_kept
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(window);
        }
    }
}

/// The walk that finds which packs the audited roots need.
struct PacksReached<'a> {
    audit: &'a mut Audit,
    repository: &'a Repository,
    packs: HashSet<Id>,
}

impl TreeVisitor for PacksReached<'_> {
    type Error = Infallible;

    fn enter(&mut self, id: &Id, _: &str) -> std::result::Result<Flow, Infallible> {
        if let Some(location) = self.audit.blobs.get(id) {
            self.packs.insert(location.pack);
        }
        Ok(Flow::Continue)
    }

    fn read(&mut self, id: &Id, _: &str) -> std::result::Result<Option<Tree>, Infallible> {
        Ok(self.audit.load_tree(self.repository, id).ok())
    }

    /// The damage walk reports it, with the paths it costs.
    fn refused(&mut self, _: &Id, _: &str, _: Refusal) -> std::result::Result<(), Infallible> {
        Ok(())
    }

    fn entry(&mut self, entry: &TreeEntry, _: &str) -> std::result::Result<Flow, Infallible> {
        for chunk in entry.chunks.as_deref().unwrap_or_default() {
            if let Some(location) = self.audit.blobs.get(chunk) {
                self.packs.insert(location.pack);
            }
        }
        Ok(Flow::Continue)
    }
}

/// The walk of one component that names the files each finding damages.
struct DamageWalk<'a> {
    audit: &'a mut Audit,
    repository: &'a Repository,
    root: &'a Root,
    bytes_read: u64,
    /// Entries visited, as the walk counts them against its budget.
    entries: u64,
}

impl DamageWalk<'_> {
    fn affected(&self, path: &str) -> Affected {
        Affected {
            snapshot: self.root.snapshot.clone(),
            component: self.root.component.clone(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        }
    }
}

impl TreeVisitor for DamageWalk<'_> {
    type Error = Infallible;

    fn enter(&mut self, id: &Id, path: &str) -> std::result::Result<Flow, Infallible> {
        match self.audit.damage_of(id, "tree") {
            Some(damage) => {
                let affected = self.affected(path);
                self.audit.affect(damage, affected);
                Ok(Flow::SkipSubtree)
            }
            None => Ok(Flow::Continue),
        }
    }

    fn read(&mut self, id: &Id, path: &str) -> std::result::Result<Option<Tree>, Infallible> {
        if let Some(location) = self.audit.blobs.get(id) {
            self.bytes_read += u64::from(location.entry.length);
        }
        match self.audit.load_tree(self.repository, id) {
            Ok(tree) => Ok(Some(tree)),
            Err(index) => {
                let affected = self.affected(path);
                self.audit.affect(index, affected);
                Ok(None)
            }
        }
    }

    /// A tree too deep or expanding too far is damage: everything below
    /// its path is lost to a reader.
    fn refused(
        &mut self,
        id: &Id,
        path: &str,
        refusal: Refusal,
    ) -> std::result::Result<(), Infallible> {
        // Kept apart from the blob findings: the same tree may be walked
        // whole where it is reached within bounds.
        let index = match self.audit.refused_trees.get(id) {
            Some(index) => *index,
            None => {
                let error = refusal.error(id, path);
                let index = self.audit.add(finding(
                    FindingKind::CorruptTree,
                    format!("tree {id}"),
                    error.to_string(),
                ));
                self.audit.refused_trees.insert(*id, index);
                index
            }
        };
        let affected = self.affected(path);
        self.audit.affect(index, affected);
        Ok(())
    }

    fn entry(&mut self, entry: &TreeEntry, path: &str) -> std::result::Result<Flow, Infallible> {
        self.entries += 1;
        match entry.kind {
            EntryKind::Directory => return Ok(Flow::Continue),
            EntryKind::Symlink => return Ok(Flow::SkipSubtree),
            EntryKind::File => {}
        }
        let mut damaged = Vec::new();
        for chunk in entry.chunks.as_deref().unwrap_or_default() {
            self.audit.report.chunk_references += 1;
            if let Some(damage) = self.audit.damage_of(chunk, "chunk")
                && !damaged.contains(&damage)
            {
                damaged.push(damage);
            }
        }
        for damage in damaged {
            let affected = self.affected(path);
            self.audit.affect(damage, affected);
        }
        Ok(Flow::SkipSubtree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn packs_are_read_once_each_costliest_first_and_reported_in_their_order() {
        let packs: Vec<Id> = (0u32..40).map(|n| Id::of(&n.to_le_bytes())).collect();
        let cost_of = |pack: &Id| u64::from(pack.0[0]);
        let read_in = |threads: usize| {
            let started = Mutex::new(Vec::new());
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let results = pool.install(|| {
                costliest_first(&packs, cost_of, |pack| {
                    started.lock().unwrap().push(*pack);
                    *pack
                })
            });
            assert_eq!(
                results, packs,
                "{threads} threads: results in the packs' order"
            );
            started.into_inner().unwrap()
        };
        // One thread takes the whole queue: costliest first.
        let costs: Vec<u64> = read_in(1).iter().map(cost_of).collect();
        assert!(costs.windows(2).all(|pair| pair[0] >= pair[1]), "{costs:?}");
        // Several share it, each pack read by exactly one of them.
        let started = read_in(4);
        let unique: HashSet<_> = started.iter().collect();
        assert_eq!((started.len(), unique.len()), (packs.len(), packs.len()));
    }
}
