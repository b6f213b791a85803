//! Opening and closing a repository's part of a backup.
//!
//! Before the walk ([`start`]): leave out packs a prune has marked (marks
//! are listed before packs, FORMAT.md, deletion protocol), adopt packs an
//! interrupted backup left unindexed, and choose the parent snapshot: the
//! newest one of the same host with the same component names, signed for
//! this repository by this backup's own key, and not a restore's safety
//! snapshot.
//!
//! After the walk ([`commit`]), in this order:
//! 1. the blob writer has finished (every pack and index file written);
//! 2. every pack the snapshot relies on is checked against deletion marks,
//!    and what it needs is copied out of marked packs
//!    ([`secure_against_prune`]);
//! 3. the manifest is signed and written: the snapshot exists from then.
//!
//! A failure before 3 leaves no snapshot, only unreferenced data that a
//! prune may collect. Never reads a source.

use super::options::{BackupOptions, Destination};
use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::keys::PublicKey;
use crate::format::manifest::{
    ChunkerRecord, ComponentRecord, Problem, SignedManifest, SnapshotBody,
};
use crate::id::Id;
use crate::ops::common::blob_writer::{BlobWriter, WriterStatistics};
use crate::ops::common::packs::{secure_against_prune, unindexed_packs};
use crate::ops::common::{now_rfc3339, user_name};
use crate::repository::Repository;
use crate::repository::{marked_packs, read_marks};
use cairn_chunker::ChunkerParams;

/// A destination ready to take blobs.
pub(super) struct Started<'a> {
    pub(super) writer: BlobWriter<'a>,
    pub(super) adopted_packs: usize,
    pub(super) parent: Option<(Id, SnapshotBody)>,
}

pub(super) fn start<'a>(
    destination: &Destination<'a>,
    host: &str,
    names: &[&str],
) -> Result<Started<'a>> {
    let Destination {
        repository,
        index,
        key,
    } = *destination;
    // Marks are listed before packs, so every pack a mark names that the
    // pack listing shows is left out (see FORMAT.md, deletion protocol).
    let (marks, _unreadable) = read_marks(repository, &[])?;
    let marked = marked_packs(&marks);
    let mut present = repository.list_packs()?;
    present.retain(|pack, _| !marked.contains(pack));
    let writer = BlobWriter::new(repository, index, present.clone(), Some(key));
    let orphans = unindexed_packs(repository, index, &present)?;
    // A pack that fails its check stays unindexed; verify reports it.
    let adopted_packs = orphans.len() - writer.adopt(orphans)?.len();
    // Files taken from the parent unread end up under this backup's
    // signature: only what this key signed itself may be taken so, never
    // what another key (another host's, trusted or not) vouches for.
    let own = [crate::format::keys::public_key_of(key)];
    let parent = find_parent(repository, host, names, &own)?;
    Ok(Started {
        writer,
        adopted_packs,
        parent,
    })
}

/// What one repository's snapshot will say, before it is signed.
pub(super) struct Snapshot {
    pub(super) parent: Option<Id>,
    pub(super) host: String,
    pub(super) params: ChunkerParams,
    pub(super) components: Vec<ComponentRecord>,
    pub(super) problems: Vec<Problem>,
}

/// Makes one repository's snapshot durable: secures what it reuses against
/// a concurrent prune, then signs and writes the manifest.
pub(super) fn commit(
    destination: &Destination,
    writer: &BlobWriter,
    mut written: WriterStatistics,
    snapshot: Snapshot,
    options: &BackupOptions,
) -> Result<(Id, SnapshotBody, WriterStatistics)> {
    let Destination {
        repository,
        index,
        key,
    } = *destination;
    let roots: Vec<Id> = snapshot
        .components
        .iter()
        .map(|component| component.tree)
        .collect();
    let rescued =
        secure_against_prune(repository, index, Some(key), writer.relied_packs(), &roots)?;
    written.add_new(&rescued);
    let body = SnapshotBody {
        version: SnapshotBody::new_version(),
        time: now_rfc3339(),
        host: snapshot.host,
        user: user_name(),
        tags: options.tags.clone(),
        labels: options.labels.clone(),
        parent: snapshot.parent,
        chunker: ChunkerRecord {
            min_size: snapshot.params.min_size,
            avg_size: snapshot.params.avg_size,
            max_size: snapshot.params.max_size,
        },
        components: snapshot.components,
        problems: snapshot.problems,
        cairn_version: env!("CARGO_PKG_VERSION").into(),
    };
    let manifest = SignedManifest::sign(&body, repository.id(), key);
    let id = repository.store_object(ObjectKind::Snapshot, &manifest.encode())?;
    // For the next backup's unchanged files. Only a cache: failing to
    // remember costs that backup its lookups, nothing else.
    let relied: Vec<Id> = writer.relied_packs().into_iter().collect();
    let _ = index.remember_snapshot_packs(&id, &relied);
    Ok((id, body, written))
}

/// The newest snapshot of the same host with the same component names.
/// Only a manifest of this repository signed by a key in `signers` (the
/// backup's own) can be a parent.
fn find_parent(
    repository: &Repository,
    host: &str,
    names: &[&str],
    signers: &[PublicKey],
) -> Result<Option<(Id, SnapshotBody)>> {
    let mut best: Option<(Id, SnapshotBody)> = None;
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        // An unreadable or untrusted manifest is verify's to report, not a
        // reason to fail a backup; it just cannot be a parent.
        let Ok(body) = repository
            .read_manifest(&id)
            .and_then(|manifest| manifest.verified_body(repository.id(), signers, "parent"))
        else {
            continue;
        };
        if body
            .tags
            .iter()
            .any(|tag| tag == crate::format::manifest::SAFETY_TAG)
        {
            continue;
        }
        let same = body.host == host
            && body.components.len() == names.len()
            && body.components.iter().zip(names).all(|(c, n)| c.name == *n);
        if same && best.as_ref().is_none_or(|(_, best)| body.time > best.time) {
            best = Some((id, body));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestRepository;
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};
    use crate::format::manifest::{ComponentKind, ComponentStats, SAFETY_TAG};

    /// Commits an empty snapshot of `names` from `host` with `tags`.
    fn snapshot(repository: &TestRepository, host: &str, names: &[&str], tags: &[&str]) -> Id {
        let writer = repository.writer();
        let written = writer.finish().unwrap();
        let components = names
            .iter()
            .map(|name| ComponentRecord {
                name: name.to_string(),
                kind: ComponentKind::Directory,
                source: format!("/{name}"),
                tree: Id::of(name.as_bytes()),
                stats: ComponentStats::default(),
                root: None,
                fixed_chunk_size: None,
                sqlite_pages_per_chunk: None,
            })
            .collect();
        let options = BackupOptions {
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
            ..BackupOptions::default()
        };
        let snapshot = Snapshot {
            parent: None,
            host: host.into(),
            params: ChunkerParams::DEFAULT,
            components,
            problems: Vec::new(),
        };
        let (id, body, _) = commit(
            &repository.destination(),
            &writer,
            written,
            snapshot,
            &options,
        )
        .unwrap();
        assert_eq!(body.host, host);
        id
    }

    #[test]
    fn the_parent_is_the_newest_trusted_snapshot_of_the_same_host_and_components() {
        let repository = TestRepository::new();
        let own = [public_key_of(&repository.key)];
        let find = |host, names: &[&str], trusted: &[PublicKey]| {
            find_parent(&repository.repository, host, names, trusted)
                .unwrap()
                .map(|(id, _)| id)
        };
        assert_eq!(find("h1", &["data"], &own), None, "no snapshot yet");
        snapshot(&repository, "h1", &["data"], &[]);
        let newest = snapshot(&repository, "h1", &["data"], &[]);
        snapshot(&repository, "h2", &["data"], &[]);
        snapshot(&repository, "h1", &["data", "db"], &[]);
        snapshot(&repository, "h1", &["data"], &[SAFETY_TAG]);
        assert_eq!(find("h1", &["data"], &own), Some(newest));
        assert!(find("h2", &["data"], &own).is_some_and(|id| id != newest));
        assert!(find("h1", &["data", "db"], &own).is_some());
        assert_eq!(find("h1", &["db", "data"], &own), None, "names in order");
        let stranger = [public_key_of(&generate_signing_key().unwrap())];
        assert_eq!(find("h1", &["data"], &stranger), None, "untrusted signer");
    }

    #[test]
    fn starting_chooses_the_parent_and_adopts_packs_no_index_lists() {
        let repository = TestRepository::new();
        // A pack uploaded but never indexed, as a crash leaves it: written
        // by one session whose index is then forgotten.
        let lost = crate::index::MemoryIndex::new();
        let present = repository.repository.list_packs().unwrap();
        let writer = BlobWriter::new(&repository.repository, &lost, present, None);
        let raw = b"left by a crash".to_vec();
        writer
            .add(crate::format::pack::BlobKind::Data, Id::of(&raw), &raw)
            .unwrap();
        writer.finish().unwrap();
        let parent = snapshot(&repository, "h1", &["data"], &[]);
        let started = start(&repository.destination(), "h1", &["data"]).unwrap();
        assert_eq!(started.adopted_packs, 1);
        assert_eq!(started.parent.map(|(id, _)| id), Some(parent));
        assert!(started.writer.all_stored(&[Id::of(&raw)]).unwrap());
    }
}
