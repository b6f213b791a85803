//! Copy: snapshots from one repository (the source) into another (the
//! target), storing only the blobs the target lacks.
//!
//! Per snapshot, oldest first:
//! 1. Its manifest is read from the source, checked against its name and
//!    its signature checked against the trusted keys.
//! 2. Its trees are walked in the source (every tree is read, even one the
//!    target has: a tree being present never proves its chunks are). Each
//!    tree and chunk the target lacks is read from the source, checked
//!    against its BLAKE3 id, and stored through the target's
//!    [`BlobWriter`], exactly as a backup stores it (packs, index files,
//!    deletion marks avoided). Chunks are read grouped by pack, each pack's
//!    needed ranges once, packs in parallel.
//! 3. The writer's packs and index files are finished, the packs relied on
//!    are checked against deletion marks ([`secure_against_prune`]), and
//!    only then is the manifest created in the target: the source's body,
//!    byte for byte, signed for the target by the copier's key (one of the
//!    target's). A manifest names its repository (FORMAT.md, envelope
//!    version 2), so the source's signature cannot serve in the target;
//!    the copier vouches there for what it verified here. Signing is
//!    deterministic, so a snapshot always has the same id in the target,
//!    and that id (not the source's) is what "already present" and the
//!    target's forget records are checked against.
//!
//! When the two repositories name blobs differently (plaintext into
//! encrypted: plain against keyed ids, or two different id keys), step 2
//! renames instead: each tree is read and rewritten bottom-up (memoised
//! per copy), each chunk is read, checked against its source id and
//! stored under the target's id, each file's hash is taken anew over its
//! content (and the source's checked on the way), and step 3 signs the
//! same body over the new root trees for the target. The chunks themselves
//! are unchanged, so with the same chunker settings (`init --like`) a
//! later backup into the target deduplicates against them. Chunks are then
//! read one by one in file order, so this is slower than a same-key copy.
//! A snapshot's id in the target is not known before its trees are
//! rewritten, so "already present" means: a snapshot the target's trusted
//! keys signed says the same as this one in every field but its root trees
//! (its time to the nanosecond included).
//!
//! Damage found in the source (a corrupt or missing pack, chunk, tree or
//! manifest) fails only that snapshot: its manifest is never written, what
//! was copied for it so far is indexed (unreferenced until a later copy
//! uses it) and the other snapshots are still copied. Any other error
//! (writing the target, a concurrent prune) stops the copy.
//!
//! Never writes to the source, never deletes; signs only the target's
//! manifests.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::annotation::Annotation;
use crate::format::index::BlobLocation;
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::limits::MAX_TREE_DEPTH;
use crate::format::manifest::{SignedManifest, SnapshotBody, TrustFailure};
use crate::format::pack::BlobKind;
use crate::format::pack::spans::{Span, spans};
use crate::format::tree::{Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::annotate::{Annotations, read_annotations};
use crate::ops::common::blob_writer::{BlobWriter, WriterStatistics};
use crate::ops::common::packs::{secure_against_prune, unindexed_packs};
use crate::ops::forget::read_forget_records;
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk};
use crate::progress::{Amount, Phase, Progress};
use crate::repository::Repository;
use crate::repository::{marked_packs, read_marks};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// Chunks gathered before they are fetched: bounds the memory the list of
/// wanted chunks takes, while still grouping many per pack.
const FETCH_BATCH: usize = 100_000;

#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Snapshots to copy (ids, unique prefixes or `latest`). Empty: every
    /// snapshot in the source signed by a trusted key that the target
    /// lacks.
    pub snapshots: Vec<String>,
    /// Walk and count what would be copied; write nothing.
    pub dry_run: bool,
}

/// What happened to one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyResult {
    Copied,
    /// A dry run would have copied it.
    WouldCopy,
    /// The target already holds this manifest.
    AlreadyPresent,
    /// A forget record in the target (signed by a trusted key) names it:
    /// copying it back would only have the target's next forget or prune
    /// delete it again.
    ForgottenInTarget,
    /// Not signed by a trusted key (only when copying the default set).
    Untrusted(String),
    /// Damage in the source; nothing of it was committed in the target.
    Damaged(String),
}

#[derive(Clone, Debug)]
pub struct SnapshotCopy {
    /// Its id in the source.
    pub id: Id,
    /// Its id in the target (its manifest signed for the target).
    pub target_id: Id,
    /// The body, if the manifest could be read.
    pub body: Option<SnapshotBody>,
    pub result: CopyResult,
    /// Trees and chunks stored in the target for it (or that would be).
    pub blobs_copied: u64,
    /// Trees and chunks it reaches that the target already had.
    pub blobs_present: u64,
    /// Bytes read from the source's packs for it.
    pub bytes_read: u64,
}

#[derive(Clone, Debug, Default)]
pub struct CopyOutcome {
    /// Every snapshot considered, in the order handled.
    pub snapshots: Vec<SnapshotCopy>,
    /// What the target's writers added (packs, index files, bytes).
    pub written: WriterStatistics,
    /// Things the user should hear about (e.g. different chunker settings).
    pub notices: Vec<String>,
}

impl CopyOutcome {
    pub fn count(&self, wanted: &CopyResult) -> usize {
        self.snapshots
            .iter()
            .filter(|snapshot| &snapshot.result == wanted)
            .count()
    }

    pub fn damaged(&self) -> Vec<&SnapshotCopy> {
        self.snapshots
            .iter()
            .filter(|snapshot| matches!(snapshot.result, CopyResult::Damaged(_)))
            .collect()
    }

    pub fn blobs_copied(&self) -> u64 {
        self.snapshots.iter().map(|s| s.blobs_copied).sum()
    }

    pub fn blobs_present(&self) -> u64 {
        self.snapshots.iter().map(|s| s.blobs_present).sum()
    }

    pub fn bytes_read(&self) -> u64 {
        self.snapshots.iter().map(|s| s.bytes_read).sum()
    }
}

/// The two repositories and their indexes.
pub struct Endpoints<'a> {
    pub source: &'a Repository,
    pub source_index: &'a dyn IndexCache,
    pub target: &'a Repository,
    pub target_index: &'a dyn IndexCache,
}

/// Why copying one snapshot stopped.
enum Failure {
    /// Damage in the source: this snapshot fails, the copy goes on.
    Damage(StoreError),
    /// Anything else stops the whole copy.
    Abort(StoreError),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Abort(error)
    }
}

/// Classifies an error from reading the source: a corrupt or missing
/// object is damage there; an I/O failure is not (the same copy may well
/// succeed when run again).
fn from_source(error: StoreError) -> Failure {
    match error {
        StoreError::Corrupt { .. } | StoreError::Missing { .. } => Failure::Damage(error),
        other => Failure::Abort(other),
    }
}

/// A snapshot chosen for copying, with its manifest for the target.
struct Candidate {
    /// Its id in the source.
    id: Id,
    /// Its manifest signed for the target, and that manifest's id.
    bytes: Vec<u8>,
    target_id: Id,
    body: SnapshotBody,
}

/// The keys trusted for each repository of a copy.
#[derive(Clone, Copy)]
pub struct CopyTrust<'a> {
    /// Source manifests must be signed by one of these.
    pub source: &'a [PublicKey],
    /// The target's forget records count when signed by one of these.
    pub target: &'a [PublicKey],
}

/// Copies; `key` signs the copied manifests for the target and must be
/// one of the target's keys.
pub fn copy(
    endpoints: &Endpoints,
    trusted: CopyTrust,
    key: &SigningKey,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyOutcome> {
    let Endpoints { source, target, .. } = *endpoints;
    let mut outcome = CopyOutcome::default();
    check_distinct(source, target)?;
    // A target that names blobs with another key (plaintext into
    // encrypted, or two id keys) gets every blob under its own id: trees
    // are rewritten bottom-up and each manifest is signed anew over them.
    let rehash = source.id_hasher() != target.id_hasher();
    if source.config().chunker != target.config().chunker {
        let params = |repository: &Repository| {
            let chunker = &repository.config().chunker;
            format!(
                "{}/{}/{}",
                chunker.min_size, chunker.avg_size, chunker.max_size
            )
        };
        outcome.notices.push(format!(
            "the repositories chunk differently ({} has {}, {} has {} bytes min/avg/max): \
             the copies are complete, but backups into {} will not deduplicate against them \
             (create a target with `cairn init --like SOURCE` to share the settings)",
            source.backend().location(),
            params(source),
            target.backend().location(),
            params(target),
            target.backend().location(),
        ));
    }
    let (candidates, skipped) = select(source, target, trusted, key, options)?;
    // Tags and labels changed in the source (`cairn tag`) go with each
    // copy, as the copy's first annotation in the target.
    let annotations = read_annotations(source, trusted.source)?;
    let in_target = if rehash {
        renamed_copies_in(target, trusted.target)?
    } else {
        Vec::new()
    };
    outcome.snapshots.extend(skipped);
    progress.phase(Phase::Copy, Amount::items(candidates.len() as u64));
    let mut session = Session {
        endpoints,
        key,
        progress,
        dry_run: options.dry_run,
        planned: HashSet::new(),
        adopted: false,
        renamed: Renamed::default(),
    };
    for candidate in candidates {
        let mut copied = SnapshotCopy {
            id: candidate.id,
            target_id: candidate.target_id,
            body: Some(candidate.body.clone()),
            result: CopyResult::Copied,
            blobs_copied: 0,
            blobs_present: 0,
            bytes_read: 0,
        };
        let blanked = rehash.then(|| without_trees(&candidate.body));
        if let Some((_, id)) =
            blanked.and_then(|blanked| in_target.iter().find(|(body, _)| *body == blanked))
        {
            // As for a copy that keeps blob names: a snapshot the target
            // holds is reported when named, passed over silently otherwise.
            if !options.snapshots.is_empty() {
                copied.target_id = *id;
                copied.result = CopyResult::AlreadyPresent;
                outcome.snapshots.push(copied);
            }
            progress.advance(Amount::items(1));
            continue;
        }
        let copied_blobs = if rehash {
            session.copy_rehashed(&candidate, &mut copied)
        } else {
            session
                .copy_blobs(&candidate, &mut copied)
                .map(|written| (written, None))
        };
        let rewritten = match copied_blobs {
            Ok((written, rewritten)) => {
                outcome.written.add_new(&written);
                rewritten
            }
            Err(Failure::Damage(error)) => {
                copied.result = CopyResult::Damaged(error.to_string());
                outcome.snapshots.push(copied);
                progress.advance(Amount::items(1));
                continue;
            }
            Err(Failure::Abort(error)) => return Err(error),
        };
        if let Some(manifest) = rewritten {
            // Renamed blobs: the manifest over the new root trees, signed
            // for the target.
            copied.target_id = Id::of(&manifest);
            if options.dry_run {
                copied.result = CopyResult::WouldCopy;
            } else {
                copied.target_id = target.store_object(ObjectKind::Snapshot, &manifest)?;
                carry_annotation(target, key, &annotations, &candidate.id, &copied.target_id)?;
            }
        } else if options.dry_run {
            copied.result = CopyResult::WouldCopy;
        } else {
            let written = target.store_object(ObjectKind::Snapshot, &candidate.bytes)?;
            if target.is_encrypted() {
                // Encrypted under a fresh nonce: named by its ciphertext.
                copied.target_id = written;
            } else if written != candidate.target_id {
                return Err(StoreError::Invalid(format!(
                    "snapshot {} was written to the target as {written}",
                    candidate.id
                )));
            }
            carry_annotation(target, key, &annotations, &candidate.id, &copied.target_id)?;
        }
        outcome.snapshots.push(copied);
        progress.advance(Amount::items(1));
    }
    Ok(outcome)
}

/// Writes, for a snapshot copied as `target_id`, an annotation in the
/// target that gives the copy the tags and labels the source's winning
/// annotation gives `source_id` (none when it has none), signed by the
/// copier. Written after the manifest, since only then is the copy's id
/// known (an encrypted manifest is named by its ciphertext): a crash in
/// between leaves the copy with its manifest's own tags, and a later copy
/// passes it over as present. Later changes in the source are not carried.
fn carry_annotation(
    target: &Repository,
    key: &SigningKey,
    annotations: &Annotations,
    source_id: &Id,
    target_id: &Id,
) -> Result<()> {
    let Some((_, annotation)) = annotations.of(source_id) else {
        return Ok(());
    };
    let carried = Annotation::new(
        *target_id,
        1,
        (
            crate::ops::common::now_rfc3339(),
            crate::ops::common::host_name(),
            crate::ops::common::user_name(),
        ),
        annotation.tags.clone(),
        annotation.labels.clone(),
    )?;
    target.store_object(
        ObjectKind::Annotation,
        &carried.sign(target.id(), key).encode(),
    )?;
    Ok(())
}

/// A body with its components' root trees blanked: what a snapshot says
/// apart from how its repository names blobs.
fn without_trees(body: &SnapshotBody) -> SnapshotBody {
    let mut body = body.clone();
    for component in &mut body.components {
        component.tree = Id([0; 32]);
    }
    body
}

/// Each snapshot in `repository` signed for it by a key in `trusted`, by
/// its body without trees ([`without_trees`]), with its id: a snapshot
/// copied before under other blob names says the same in every other
/// field (its time to the nanosecond included). One that cannot be read or
/// is not trusted is left out.
fn renamed_copies_in(
    repository: &Repository,
    trusted: &[PublicKey],
) -> Result<Vec<(SnapshotBody, Id)>> {
    let mut bodies = Vec::new();
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        let body = repository.read_manifest(&id).and_then(|manifest| {
            manifest.verified_body(repository.id(), trusted, &format!("snapshot {id}"))
        });
        match body {
            Ok(body) => bodies.push((without_trees(&body), id)),
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(_) => {}
        }
    }
    Ok(bodies)
}

/// Refuses a copy of a repository onto itself (the same id at the same
/// location).
pub fn check_distinct(source: &Repository, target: &Repository) -> Result<()> {
    if source.config().repository_id == target.config().repository_id
        && source.backend().location() == target.backend().location()
    {
        return Err(StoreError::Invalid(format!(
            "{} is both the source and the target of the copy",
            source.backend().location()
        )));
    }
    Ok(())
}

/// The snapshots to copy (oldest first), and those considered but skipped.
fn select(
    source: &Repository,
    target: &Repository,
    trusted: CopyTrust,
    key: &SigningKey,
    options: &CopyOptions,
) -> Result<(Vec<Candidate>, Vec<SnapshotCopy>)> {
    let in_target: HashSet<Id> = target.list_ids(ObjectKind::Snapshot)?.into_iter().collect();
    let forgotten: HashSet<Id> = read_forget_records(target, trusted.target)?
        .iter()
        .flat_map(|(_, record, _)| record.snapshots.iter().map(|snapshot| snapshot.id))
        .collect();
    let skip =
        |id: Id, target_id: Id, body: Option<SnapshotBody>, result: CopyResult| SnapshotCopy {
            id,
            target_id,
            body,
            result,
            blobs_copied: 0,
            blobs_present: 0,
            bytes_read: 0,
        };
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    if options.snapshots.is_empty() {
        for id in source.list_ids(ObjectKind::Snapshot)? {
            match read_candidate(source, target, key, &id) {
                Ok((candidate, manifest)) if present_in(&in_target, &candidate, &manifest) => {}
                Ok((candidate, manifest)) => {
                    let target_id = candidate.target_id;
                    match manifest.verify(source.id(), trusted.source) {
                        Ok(()) if present_in(&forgotten, &candidate, &manifest) => {
                            skipped.push(skip(
                                id,
                                target_id,
                                Some(candidate.body),
                                CopyResult::ForgottenInTarget,
                            ))
                        }
                        Ok(()) => candidates.push(candidate),
                        Err(
                            failure @ (TrustFailure::UntrustedSigner(_)
                            | TrustFailure::OtherRepository(_)),
                        ) => skipped.push(skip(
                            id,
                            target_id,
                            Some(candidate.body),
                            CopyResult::Untrusted(failure.to_string()),
                        )),
                        Err(failure @ TrustFailure::BadSignature) => skipped.push(skip(
                            id,
                            target_id,
                            Some(candidate.body),
                            CopyResult::Damaged(format!("snapshot {id}: {failure}")),
                        )),
                    }
                }
                Err(error @ StoreError::Io { .. }) => return Err(error),
                // Forgotten in the source since it was listed.
                Err(StoreError::Missing { .. }) => {}
                Err(error) => {
                    skipped.push(skip(id, id, None, CopyResult::Damaged(error.to_string())))
                }
            }
        }
    } else {
        let mut chosen = HashSet::new();
        for spec in &options.snapshots {
            let id = source.resolve_snapshot(spec, trusted.source)?;
            if !chosen.insert(id) {
                continue;
            }
            // Every named snapshot is checked before anything is copied,
            // so a mistake in the list costs nothing.
            let (candidate, manifest) = read_candidate(source, target, key, &id)?;
            manifest.verified_body(
                source.id(),
                trusted.source,
                &format!("snapshot {id} in {}", source.backend().location()),
            )?;
            let target_id = candidate.target_id;
            if present_in(&in_target, &candidate, &manifest) {
                skipped.push(skip(
                    id,
                    target_id,
                    Some(candidate.body),
                    CopyResult::AlreadyPresent,
                ));
            } else if present_in(&forgotten, &candidate, &manifest) {
                skipped.push(skip(
                    id,
                    target_id,
                    Some(candidate.body),
                    CopyResult::ForgottenInTarget,
                ));
            } else {
                candidates.push(candidate);
            }
        }
    }
    candidates.sort_by(|a, b| (&a.body.time, a.id).cmp(&(&b.body.time, b.id)));
    Ok((candidates, skipped))
}

/// Whether `ids` (the target's snapshots, or those its forget records
/// name) hold the snapshot: its manifest signed for the target, or (for a
/// version-1 manifest, which names no repository) the very same object, as
/// a cairn before envelope version 2 copied it.
fn present_in(ids: &HashSet<Id>, candidate: &Candidate, manifest: &SignedManifest) -> bool {
    ids.contains(&candidate.target_id)
        || (manifest.repository.is_none() && ids.contains(&candidate.id))
}

/// Reads a manifest (checked against its name), decodes it and signs its
/// body for `target` with `key`; the source signature is the caller's to
/// check.
fn read_candidate(
    source: &Repository,
    target: &Repository,
    key: &SigningKey,
    id: &Id,
) -> Result<(Candidate, SignedManifest)> {
    let object = format!("snapshot {id}");
    let bytes = source.read_object(ObjectKind::Snapshot, id)?;
    let manifest = SignedManifest::decode(&bytes, &object)?;
    let body = manifest
        .body_unverified()
        .map_err(|error| StoreError::corrupt(&object, error.to_string()))?;
    let for_target = manifest.resign(target.id(), key).encode();
    Ok((
        Candidate {
            id: *id,
            target_id: Id::of(&for_target),
            bytes: for_target,
            body,
        },
        manifest,
    ))
}

/// State shared by the snapshots of one copy.
struct Session<'a> {
    endpoints: &'a Endpoints<'a>,
    /// The copier's key: it also seals the index files written into the
    /// target (FORMAT.md section 9).
    key: &'a SigningKey,
    progress: &'a dyn Progress,
    dry_run: bool,
    /// Dry run: blobs an earlier snapshot would already have copied.
    planned: HashSet<Id>,
    /// Whether packs an interrupted copy or backup left unindexed in the
    /// target have been adopted.
    adopted: bool,
    /// When the target names blobs with another key: what each source id
    /// became, for every snapshot of this copy.
    renamed: Renamed,
}

/// Source ids and what they are named in the target, remembered across the
/// snapshots of one copy so that each tree is rewritten and each file
/// hashed once.
#[derive(Default)]
struct Renamed {
    trees: HashMap<Id, Id>,
    chunks: HashMap<Id, Id>,
    /// A file's whole-content hash, by its source hash.
    files: HashMap<Id, Id>,
}

/// Per-snapshot counters, updated from parallel fetches.
struct Counters<'a> {
    copied: AtomicU64,
    present: AtomicU64,
    bytes_read: AtomicU64,
    progress: &'a dyn Progress,
}

impl<'a> Counters<'a> {
    fn new(progress: &'a dyn Progress) -> Self {
        Counters {
            copied: AtomicU64::new(0),
            present: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            progress,
        }
    }

    /// Counts bytes read from the source, and reports them.
    fn read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        self.progress.advance(Amount::bytes(bytes));
    }
}

impl<'a> Session<'a> {
    /// Stores every blob `candidate` reaches that the target lacks, and
    /// makes them durable and safe from a concurrent prune; returns what
    /// the writers added.
    fn copy_blobs(
        &mut self,
        candidate: &Candidate,
        report: &mut SnapshotCopy,
    ) -> std::result::Result<WriterStatistics, Failure> {
        let writer = self.open_writer()?;
        let roots: Vec<Id> = candidate
            .body
            .components
            .iter()
            .map(|component| component.tree)
            .collect();
        let counters = Counters::new(self.progress);
        let walked = self.walk(&writer, &candidate.body, &counters);
        report.blobs_copied = counters.copied.load(Ordering::Relaxed);
        report.blobs_present = counters.present.load(Ordering::Relaxed);
        report.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
        if let Err(failure) = walked {
            // Index what was copied, so that running the copy again (once
            // the source is repaired) does not copy it twice; a failure
            // here changes nothing about the snapshot's fate.
            if !self.dry_run {
                let _ = writer.finish();
            }
            return Err(failure);
        }
        self.finish_writer(&writer, &roots, &candidate.id)
    }

    /// [`Self::copy_blobs`] for a target that names blobs with another
    /// key: every tree is rewritten bottom-up with the target's ids (each
    /// chunk read, checked against its source id and named anew; each
    /// file's hash taken anew over its content), then the body is signed
    /// for the target over the new root trees. Returns what the writers
    /// added and the new manifest.
    fn copy_rehashed(
        &mut self,
        candidate: &Candidate,
        report: &mut SnapshotCopy,
    ) -> std::result::Result<(WriterStatistics, Option<Vec<u8>>), Failure> {
        let writer = self.open_writer()?;
        let counters = Counters::new(self.progress);
        let mut body = candidate.body.clone();
        let mut rewritten = Ok(());
        for component in &mut body.components {
            self.progress.component(&component.name);
            match self.rewrite_tree(&writer, &counters, &component.tree, 0) {
                Ok(tree) => component.tree = tree,
                Err(failure) => {
                    rewritten = Err(failure);
                    break;
                }
            }
        }
        report.blobs_copied = counters.copied.load(Ordering::Relaxed);
        report.blobs_present = counters.present.load(Ordering::Relaxed);
        report.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
        if let Err(failure) = rewritten {
            // As in copy_blobs: index what was stored, for a later run.
            if !self.dry_run {
                let _ = writer.finish();
            }
            return Err(failure);
        }
        let roots: Vec<Id> = body.components.iter().map(|c| c.tree).collect();
        let written = self.finish_writer(&writer, &roots, &candidate.id)?;
        let target = self.endpoints.target;
        let manifest = SignedManifest::sign(&body, target.id(), self.key).encode();
        Ok((written, Some(manifest)))
    }

    /// The target's id of the source tree `id`, storing it (and everything
    /// below it) in the target where the target lacks it. `depth` is how
    /// far below a component's root the tree lies.
    fn rewrite_tree(
        &mut self,
        writer: &BlobWriter,
        counters: &Counters,
        id: &Id,
        depth: usize,
    ) -> std::result::Result<Id, Failure> {
        if let Some(renamed) = self.renamed.trees.get(id) {
            return Ok(*renamed);
        }
        if depth > MAX_TREE_DEPTH {
            return Err(Failure::Damage(StoreError::corrupt(
                format!("tree {id}"),
                format!("lies more than {MAX_TREE_DEPTH} directories deep"),
            )));
        }
        let source = self.endpoints.source;
        let location = locate(self.endpoints.source_index, id, "tree")?;
        let raw = source.read_blob(&location).map_err(from_source)?;
        counters.read(u64::from(location.entry.length));
        let mut tree = Tree::decode(&raw, &format!("tree {id}")).map_err(from_source)?;
        for entry in &mut tree.entries {
            if let Some(subtree) = entry.subtree {
                entry.subtree = Some(self.rewrite_tree(writer, counters, &subtree, depth + 1)?);
            }
            if let Some(chunks) = &entry.chunks {
                let (chunks, hash) = self.rewrite_file(writer, counters, chunks, entry.hash)?;
                entry.chunks = Some(chunks);
                entry.hash = hash;
            }
        }
        // Names and order are unchanged, so the tree stays valid as it is.
        let bytes = tree.encode();
        let renamed = self.endpoints.target.id_hasher().id(&bytes);
        self.store(writer, counters, BlobKind::Tree, renamed, &bytes)?;
        self.renamed.trees.insert(*id, renamed);
        Ok(renamed)
    }

    /// A file's chunk list and content hash under the target's ids. A file
    /// whose chunks and hash were all renamed before is not read again.
    fn rewrite_file(
        &mut self,
        writer: &BlobWriter,
        counters: &Counters,
        chunks: &[Id],
        hash: Option<Id>,
    ) -> std::result::Result<(Vec<Id>, Option<Id>), Failure> {
        let known: Option<Vec<Id>> = chunks
            .iter()
            .map(|chunk| self.renamed.chunks.get(chunk).copied())
            .collect();
        let known_hash = hash.map(|hash| self.renamed.files.get(&hash).copied());
        if let (Some(known), Some(Some(_)) | None) = (known, known_hash) {
            return Ok((known, known_hash.flatten()));
        }
        let source = self.endpoints.source;
        let target_hasher = self.endpoints.target.id_hasher();
        // The content is hashed both ways: the source's hash checks that
        // the chunks make up the file the source recorded.
        let mut source_hash = source.id_hasher().hasher();
        let mut target_hash = target_hasher.hasher();
        let mut decoder = source.blob_decoder();
        let mut renamed = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let location = locate(self.endpoints.source_index, chunk, "chunk")?;
            let raw = source
                .read_blob_with(&mut decoder, &location)
                .map_err(from_source)?;
            counters.read(u64::from(location.entry.length));
            source_hash.update(&raw);
            target_hash.update(&raw);
            let id = target_hasher.id(&raw);
            if self.renamed.chunks.insert(*chunk, id).is_none() {
                self.store(writer, counters, BlobKind::Data, id, &raw)?;
            }
            renamed.push(id);
        }
        let Some(hash) = hash else {
            return Ok((renamed, None));
        };
        if Id(*source_hash.finalize().as_bytes()) != hash {
            return Err(Failure::Damage(StoreError::corrupt(
                format!("file content {hash}"),
                "its chunks do not hash to the file hash its tree records",
            )));
        }
        let new_hash = Id(*target_hash.finalize().as_bytes());
        self.renamed.files.insert(hash, new_hash);
        Ok((renamed, Some(new_hash)))
    }

    /// Stores one renamed blob unless the target has it (counted either
    /// way); a dry run only remembers it.
    fn store(
        &mut self,
        writer: &BlobWriter,
        counters: &Counters,
        kind: BlobKind,
        id: Id,
        raw: &[u8],
    ) -> std::result::Result<(), Failure> {
        if self.has(writer, &id)? {
            counters.present.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.copied.fetch_add(1, Ordering::Relaxed);
            if self.dry_run {
                self.planned.insert(id);
            } else {
                writer.add(kind, id, raw)?;
            }
        }
        Ok(())
    }

    /// A writer into the target that leaves out packs marked for deletion
    /// (and, once per copy, adopts packs an interrupted writer left
    /// unindexed).
    fn open_writer(&mut self) -> Result<BlobWriter<'a>> {
        let target = self.endpoints.target;
        let target_index = self.endpoints.target_index;
        // Marks before packs, as in a backup (FORMAT.md 12.7, B1).
        let (marks, _unreadable) = read_marks(target, &[])?;
        let marked = marked_packs(&marks);
        let mut present = target.list_packs()?;
        present.retain(|pack, _| !marked.contains(pack));
        let writer = BlobWriter::new(target, target_index, present.clone(), Some(self.key));
        if !self.adopted && !self.dry_run {
            writer.adopt(unindexed_packs(target, target_index, &present)?)?;
            self.adopted = true;
        }
        Ok(writer)
    }

    /// Makes what `writer` stored durable and safe from a concurrent prune
    /// for a snapshot whose root trees are `roots`; returns what it added.
    fn finish_writer(
        &self,
        writer: &BlobWriter,
        roots: &[Id],
        snapshot: &Id,
    ) -> std::result::Result<WriterStatistics, Failure> {
        if self.dry_run {
            return Ok(WriterStatistics::default());
        }
        let target = self.endpoints.target;
        let target_index = self.endpoints.target_index;
        let signer = Some(self.key);
        let mut written = writer.finish()?;
        let rescued =
            secure_against_prune(target, target_index, signer, writer.relied_packs(), roots)
                .map_err(|error| match error {
                    // Its messages speak of a backup; the advice is the same.
                    StoreError::Conflict(message) => StoreError::Conflict(format!(
                        "copying snapshot {}: {}",
                        snapshot,
                        message.replace("backup", "copy")
                    )),
                    other => other,
                })?;
        written.add_new(&rescued);
        Ok(written)
    }

    /// Walks the snapshot's trees in the source, component by component,
    /// storing trees as they are read and gathering the chunks to fetch in
    /// batches.
    fn walk(
        &mut self,
        writer: &BlobWriter,
        body: &SnapshotBody,
        counters: &Counters,
    ) -> std::result::Result<(), Failure> {
        let mut visitor = CopyWalk {
            session: self,
            writer,
            counters,
            chunks_seen: HashSet::new(),
            wanted: Vec::new(),
        };
        let mut walk = TreeWalk::new().skipping_seen();
        for component in &body.components {
            visitor.session.progress.component(&component.name);
            walk.walk([(component.tree, String::new())], &mut visitor)?;
        }
        let wanted = std::mem::take(&mut visitor.wanted);
        self.fetch(writer, wanted, counters)
    }

    /// Whether the target holds `id` (or, in a dry run, an earlier snapshot
    /// would have copied it).
    fn has(&self, writer: &BlobWriter, id: &Id) -> Result<bool> {
        Ok(self.planned.contains(id) || writer.is_stored(id)?)
    }

    /// Reads the wanted chunks from the source, grouped by pack, packs in
    /// parallel, and stores each in the target once its id checks out.
    fn fetch(
        &mut self,
        writer: &BlobWriter,
        wanted: Vec<BlobLocation>,
        counters: &Counters,
    ) -> std::result::Result<(), Failure> {
        if self.dry_run {
            for location in wanted {
                counters.copied.fetch_add(1, Ordering::Relaxed);
                counters.read(u64::from(location.entry.length));
                self.planned.insert(location.entry.id);
            }
            return Ok(());
        }
        // Spans are capped in size, so with one read in flight per thread
        // the pack data a copy holds stays bounded.
        let spans = spans(
            wanted
                .into_iter()
                .map(|location| (location.pack, location.entry))
                .collect(),
        );
        let source = self.endpoints.source;
        spans
            .into_par_iter()
            .try_for_each(|span| copy_span(source, writer, &span, counters))
    }
}

/// One snapshot's walk in the source: each tree is stored as it is read,
/// each chunk the target lacks is gathered, and gathered chunks are
/// fetched in batches between trees.
struct CopyWalk<'s, 'a, 'w> {
    session: &'s mut Session<'a>,
    writer: &'w BlobWriter<'w>,
    counters: &'w Counters<'w>,
    chunks_seen: HashSet<Id>,
    wanted: Vec<BlobLocation>,
}

impl TreeVisitor for CopyWalk<'_, '_, '_> {
    type Error = Failure;

    /// Damage in the source: this snapshot is not copied.
    fn refused(
        &mut self,
        id: &Id,
        path: &str,
        refusal: Refusal,
    ) -> std::result::Result<(), Failure> {
        Err(Failure::Damage(refusal.error(id, path)))
    }

    fn enter(&mut self, _: &Id, _: &str) -> std::result::Result<Flow, Failure> {
        if self.wanted.len() >= FETCH_BATCH {
            let wanted = std::mem::take(&mut self.wanted);
            self.session.fetch(self.writer, wanted, self.counters)?;
        }
        Ok(Flow::Continue)
    }

    fn read(&mut self, id: &Id, _: &str) -> std::result::Result<Option<Tree>, Failure> {
        let location = locate(self.session.endpoints.source_index, id, "tree")?;
        let raw = self
            .session
            .endpoints
            .source
            .read_blob(&location)
            .map_err(from_source)?;
        self.counters.read(u64::from(location.entry.length));
        let tree = Tree::decode(&raw, &format!("tree {id}")).map_err(from_source)?;
        if self.session.has(self.writer, id)? {
            self.counters.present.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.copied.fetch_add(1, Ordering::Relaxed);
            if self.session.dry_run {
                self.session.planned.insert(*id);
            } else {
                self.writer.add(BlobKind::Tree, *id, &raw)?;
            }
        }
        Ok(Some(tree))
    }

    fn entry(&mut self, entry: &TreeEntry, _: &str) -> std::result::Result<Flow, Failure> {
        for chunk in entry.chunks.iter().flatten() {
            if !self.chunks_seen.insert(*chunk) {
                continue;
            }
            if self.session.has(self.writer, chunk)? {
                self.counters.present.fetch_add(1, Ordering::Relaxed);
            } else {
                let source_index = self.session.endpoints.source_index;
                self.wanted.push(locate(source_index, chunk, "chunk")?);
            }
        }
        Ok(Flow::Continue)
    }
}

/// Where the source's index says a blob is; a blob no index file lists is
/// damage in the source.
fn locate(
    index: &dyn IndexCache,
    id: &Id,
    what: &str,
) -> std::result::Result<BlobLocation, Failure> {
    index.lookup(id)?.ok_or_else(|| {
        Failure::Damage(StoreError::Missing {
            object: format!("{what} {id} (not in any index file of the source)"),
        })
    })
}

/// Reads one span of a source pack and stores each decoded, checked blob
/// in it through `writer`.
fn copy_span(
    source: &Repository,
    writer: &BlobWriter,
    span: &Span,
    counters: &Counters,
) -> std::result::Result<(), Failure> {
    let pack = &span.pack;
    let bytes = source
        .backend()
        .read_range(
            ObjectKind::Pack,
            &pack.to_hex(),
            span.start,
            span.end - span.start,
        )
        .map_err(from_source)?;
    counters.read(bytes.len() as u64);
    let mut decoder = source.blob_decoder();
    for entry in &span.blobs {
        let stored = span.blob_bytes(&bytes, entry).ok_or_else(|| {
            Failure::Damage(StoreError::corrupt(
                format!("pack {pack}"),
                format!("blob {} lies past the end of the range read", entry.id),
            ))
        })?;
        let raw = decoder.decode(entry, stored, pack).map_err(from_source)?;
        if writer.add(entry.kind, entry.id, &raw)? {
            counters.copied.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.present.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::format::crypto::RepositoryKeys;
    use crate::format::keys::{generate_signing_key, public_key_of};
    use crate::index::MemoryIndex;
    use crate::ops::backup::{BackupOptions, ComponentSource, backup};
    use crate::ops::read_tree;
    use crate::progress::NoProgress;
    use cairn_chunker::ChunkerParams;
    use std::path::Path;
    use std::sync::Arc;

    fn repository(root: &Path, keys: Option<&RepositoryKeys>, key: &SigningKey) -> Repository {
        std::fs::create_dir_all(root).unwrap();
        let backend = Arc::new(LocalBackend::new(root));
        Repository::init(backend, ChunkerParams::DEFAULT, 3, public_key_of(key), keys).unwrap()
    }

    /// Every file under `tree` in `repository`, by path, rebuilt from its
    /// chunks (each checked against its id as it is read), with its
    /// recorded hash checked too.
    fn files(
        repository: &Repository,
        index: &MemoryIndex,
        tree: &Id,
        at: &str,
    ) -> Vec<(String, Vec<u8>)> {
        let mut found = Vec::new();
        for entry in read_tree(repository, index, tree).unwrap().entries {
            let path = format!("{at}/{}", String::from_utf8_lossy(&entry.name));
            if let Some(subtree) = entry.subtree {
                found.extend(files(repository, index, &subtree, &path));
            }
            if let Some(chunks) = entry.chunks {
                let mut content = Vec::new();
                for chunk in chunks {
                    let location = index.lookup(&chunk).unwrap().expect("chunk indexed");
                    content.extend(repository.read_blob(&location).unwrap());
                }
                assert_eq!(
                    entry.hash,
                    Some(repository.id_hasher().id(&content)),
                    "{path}"
                );
                found.push((path, content));
            }
        }
        found
    }

    #[test]
    fn a_plaintext_snapshot_copied_into_an_encrypted_repository_is_renamed_and_deduplicates() {
        let directory = tempfile::tempdir().unwrap();
        let data = directory.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|at| (at * 7 % 251) as u8).collect();
        std::fs::write(data.join("big"), &big).unwrap();
        std::fs::write(data.join("sub/small"), b"small file").unwrap();
        std::fs::write(data.join("sub/same"), b"small file").unwrap();
        let key = generate_signing_key().unwrap();
        let trusted = [public_key_of(&key)];
        let source = repository(&directory.path().join("source"), None, &key);
        let keys = RepositoryKeys::generate(Repository::new_id().unwrap()).unwrap();
        let target = repository(&directory.path().join("target"), Some(&keys), &key);
        let (source_index, target_index) = (MemoryIndex::new(), MemoryIndex::new());
        source_index.set_trusted(&trusted).unwrap();
        target_index.set_trusted(&trusted).unwrap();
        let options = BackupOptions {
            components: vec![ComponentSource::new("data", &data)],
            ..BackupOptions::default()
        };
        let backed_up = backup(&source, &source_index, &key, &options).unwrap();

        let endpoints = Endpoints {
            source: &source,
            source_index: &source_index,
            target: &target,
            target_index: &target_index,
        };
        let trust = CopyTrust {
            source: &trusted,
            target: &trusted,
        };
        let copy_once = || {
            copy(
                &endpoints,
                trust,
                &key,
                &CopyOptions::default(),
                &NoProgress,
            )
        };
        let copied = copy_once().unwrap();
        assert_eq!(copied.count(&CopyResult::Copied), 1);
        let target_id = copied.snapshots[0].target_id;
        let body = target
            .read_manifest(&target_id)
            .unwrap()
            .verified_body(target.id(), &trusted, "copied")
            .unwrap();
        let (old, new) = (&backed_up.body.components[0], &body.components[0]);
        assert_ne!(old.tree, new.tree, "renamed with the target's key");
        assert_eq!((&old.stats, &old.name), (&new.stats, &new.name));
        let mut expected = files(&source, &source_index, &old.tree, "");
        let mut got = files(&target, &target_index, &new.tree, "");
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "byte-identical");
        assert_eq!(got.len(), 3);

        // Copying again finds it there; a backup of the same files into
        // the target stores nothing new but its snapshot.
        let again = copy_once().unwrap();
        assert!(again.snapshots.is_empty(), "{:?}", again.snapshots);
        assert_eq!(again.written.new_blobs, 0);
        let named = CopyOptions {
            snapshots: vec![backed_up.snapshot.to_hex()],
            ..CopyOptions::default()
        };
        let again = copy(&endpoints, trust, &key, &named, &NoProgress).unwrap();
        assert_eq!(again.count(&CopyResult::AlreadyPresent), 1);
        assert_eq!(again.bytes_read(), 0, "found without reading the source");
        assert_eq!(again.snapshots[0].target_id, target_id);
        let into_target = backup(&target, &target_index, &key, &options).unwrap();
        assert_eq!(into_target.body.components[0].tree, new.tree);
        assert_eq!(into_target.written.new_blobs, 0);
    }
}
