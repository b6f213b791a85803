//! Repair: rebuild what can be rebuilt from the repository's own data.
//!
//! `repair_index` rebuilds the index from the packs themselves, and is how
//! a repository written before signed index files becomes vouched for
//! (FORMAT.md section 9):
//! 1. list the index files there are now (the ones to replace);
//! 2. list the packs and read each one whole, in parallel, checking it
//!    against its name and every blob in it against its id; a pack that
//!    passes is listed in index files sealed by the given key; one that
//!    fails is listed from its header in unsigned index files (a hint that
//!    restore may use, that no backup or prune relies on), and reported; a
//!    pack whose header cannot be read is reported and left out;
//! 3. write the new index files;
//! 4. only then delete the index files listed in step 1 (unless one was
//!    just written again under the same name; one of those whose stored
//!    bytes are damaged is replaced by the right ones).
//!
//! `repair_snapshots` salvages snapshots that need blobs the repository has
//! lost: for each one it writes a new signed snapshot whose trees leave out
//! exactly the files (and unreadable directories) that cannot be restored in
//! full, lists them as problems, and tags it `repaired` with the label
//! `repaired-from`. The original is never changed or removed.
//!
//! A crash before step 4 leaves old and new index files side by side, which
//! readers accept (index files may overlap); a crash during step 4 leaves
//! some old ones, which the next repair removes. A backup running at the
//! same time writes index files after step 1, which are never deleted, so
//! its packs stay indexed.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::index::{IndexFile, PackEntry};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::manifest::{Problem, SignedManifest};
use crate::format::pack::BlobKind;
use crate::format::tree::{EntryKind, Tree, TreeEntry};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::common::blob_writer::BlobWriter;
use crate::ops::walk::{Flow, Refusal, TreeVisitor, TreeWalk, read_tree};
use crate::repository::Repository;
use rayon::prelude::*;
use std::collections::HashMap;
use std::collections::HashSet;

/// Packs per rebuilt index file, as a backup writes them.
const PACKS_PER_INDEX_FILE: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct RepairIndexOutcome {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Packs left out because their header could not be read: (pack, why).
    pub unreadable_packs: Vec<(Id, String)>,
    /// Packs listed from their header in unsigned index files only, since
    /// they failed their check (a damaged or planted pack): (pack, why).
    pub unverified_packs: Vec<(Id, String)>,
    /// Whether the index files written are sealed (a signing key was
    /// given): only then does the repository vouch for its packs.
    pub sealed: bool,
    pub index_files_written: u64,
    pub index_files_removed: u64,
}

/// What reading one pack for `repair_index` found.
enum Listed {
    /// Every blob checked: fit to be vouched for.
    Verified(PackEntry),
    /// Its header, from a pack that failed its check (why).
    Unverified(PackEntry, String),
}

/// Rebuilds the index from the packs; with `signer`, seals the listings of
/// packs whose every blob checks out (see the module header).
pub fn repair_index(
    repository: &Repository,
    signer: Option<&SigningKey>,
) -> Result<RepairIndexOutcome> {
    let old_index_files = repository.list_ids(ObjectKind::Index)?;
    let listed: Vec<(Id, u64)> = repository.list_packs()?.into_iter().collect();
    let read: Vec<(Id, Result<std::result::Result<Listed, String>>)> = listed
        .par_iter()
        .map(|&(id, size)| (id, list_pack(repository, id, size)))
        .collect();

    let mut outcome = RepairIndexOutcome {
        sealed: signer.is_some(),
        ..RepairIndexOutcome::default()
    };
    let (mut verified, mut unverified) = (Vec::new(), Vec::new());
    for (id, listing) in read {
        match listing? {
            Ok(Listed::Verified(entry)) => {
                outcome.blobs_indexed += entry.blobs.len() as u64;
                verified.push(entry);
            }
            Ok(Listed::Unverified(entry, why)) => {
                outcome.blobs_indexed += entry.blobs.len() as u64;
                outcome.unverified_packs.push((id, why));
                unverified.push(entry);
            }
            Err(why) => outcome.unreadable_packs.push((id, why)),
        }
    }
    outcome.packs_indexed = (verified.len() + unverified.len()) as u64;

    let mut written = HashSet::new();
    for (mut packs, signer) in [(verified, signer), (unverified, None)] {
        packs.sort_by_key(|pack| pack.id);
        for batch in packs.chunks(PACKS_PER_INDEX_FILE) {
            let file = IndexFile::new(batch.to_vec());
            let id = match repository.write_index_file(&file, signer) {
                Ok(id) => id,
                // An object of that name already exists with damaged
                // content (create-if-absent keeps it, and the write says
                // so): put the right bytes back.
                Err(StoreError::Corrupt { .. }) => {
                    let id = repository.index_file_id(&file, signer);
                    repository
                        .backend()
                        .delete(ObjectKind::Index, &id.to_hex())?;
                    repository.write_index_file(&file, signer)?;
                    outcome.index_files_removed += 1;
                    id
                }
                Err(error) => return Err(error),
            };
            written.insert(id);
            outcome.index_files_written += 1;
        }
    }
    for old in old_index_files {
        if !written.contains(&old) {
            repository
                .backend()
                .delete(ObjectKind::Index, &old.to_hex())?;
            outcome.index_files_removed += 1;
        }
    }
    Ok(outcome)
}

/// One pack read whole and checked; a pack that fails is listed from its
/// header if that can be read (`Err(why)` if not); only a failed read of
/// the repository itself is an error.
fn list_pack(
    repository: &Repository,
    id: Id,
    size: u64,
) -> Result<std::result::Result<Listed, String>> {
    let why = match repository.verified_pack_listing(&id, size) {
        Ok(entry) => return Ok(Ok(Listed::Verified(entry))),
        Err(error @ StoreError::Io { .. }) => return Err(error),
        Err(error) => error.to_string(),
    };
    Ok(repository
        .read_pack_header(&id, size)
        .map(|header| {
            let entry = PackEntry {
                id,
                size,
                blobs: header.blobs,
            };
            Listed::Unverified(entry, why)
        })
        .map_err(|error| error.to_string()))
}

/// A snapshot written by `repair_snapshots`.
#[derive(Clone, Debug)]
pub struct RepairedSnapshot {
    pub original: Id,
    pub repaired: Id,
    /// What the repaired snapshot leaves out, and why.
    pub omitted: Vec<Problem>,
}

/// The tag and label of a repaired snapshot.
pub const REPAIRED_TAG: &str = "repaired";
pub const REPAIRED_FROM_LABEL: &str = "repaired-from";

/// Writes a repaired copy of every trusted snapshot that needs a blob that
/// is not indexed in an existing pack, or is in `corrupt` (from a verify
/// that read the data).
pub fn repair_snapshots(
    repository: &Repository,
    index: &dyn IndexCache,
    key: &SigningKey,
    trusted: &[PublicKey],
    corrupt: &HashSet<Id>,
) -> Result<Vec<RepairedSnapshot>> {
    let present: HashMap<Id, u64> = repository.list_packs()?;
    let mut ids = repository.list_ids(ObjectKind::Snapshot)?;
    ids.sort();
    let mut repaired = Vec::new();
    for id in ids {
        // Only a snapshot we trust is worth re-signing; others are verify's
        // to report.
        let Ok(body) = repository
            .read_manifest(&id)
            .and_then(|manifest| manifest.verified_body(repository.id(), trusted, "snapshot"))
        else {
            continue;
        };
        let salvage = Salvage {
            repository,
            index,
            present: &present,
            corrupt,
        };
        let mut new_body = body.clone();
        let mut omitted = Vec::new();
        let writer = BlobWriter::new(repository, index, present.clone(), Some(key));
        for component in &mut new_body.components {
            let mut lost = Vec::new();
            let tree = salvage.rewrite(&writer, &component.tree, &mut lost)?;
            let tree = match tree {
                Some(tree) => tree,
                None => store_tree(&writer, Tree::new(Vec::new()))?,
            };
            component.tree = tree;
            omitted.extend(lost.into_iter().map(|(path, problem)| Problem {
                component: component.name.clone(),
                path,
                problem,
            }));
        }
        writer.finish()?;
        if omitted.is_empty() {
            continue;
        }
        new_body.problems.extend(omitted.iter().cloned());
        new_body.tags.push(REPAIRED_TAG.into());
        new_body
            .labels
            .insert(REPAIRED_FROM_LABEL.into(), id.to_hex());
        let manifest = SignedManifest::sign(&new_body, repository.id(), key);
        let new_id = repository.store_object(ObjectKind::Snapshot, &manifest.encode())?;
        repaired.push(RepairedSnapshot {
            original: id,
            repaired: new_id,
            omitted,
        });
    }
    Ok(repaired)
}

struct Salvage<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    present: &'a HashMap<Id, u64>,
    corrupt: &'a HashSet<Id>,
}

fn store_tree(writer: &BlobWriter, tree: Tree) -> Result<Id> {
    let bytes = tree.encode();
    let id = writer.id_hasher().id(&bytes);
    writer.add(BlobKind::Tree, id, &bytes)?;
    Ok(id)
}

impl Salvage<'_> {
    fn available(&self, blob: &Id) -> Result<bool> {
        Ok(!self.corrupt.contains(blob)
            && self
                .index
                .lookup(blob)?
                .is_some_and(|location| self.present.contains_key(&location.pack)))
    }

    /// The component's tree with every damaged file left out, or `None`
    /// if its root cannot be read. Records what it leaves out in `lost`,
    /// in the order of the paths' components (a directory before what is
    /// in it).
    fn rewrite(
        &self,
        writer: &BlobWriter,
        root: &Id,
        lost: &mut Vec<(String, String)>,
    ) -> Result<Option<Id>> {
        let mut rewrite = Rewrite {
            salvage: self,
            writer,
            lost,
            frames: Vec::new(),
            root: None,
        };
        TreeWalk::new()
            .with_paths()
            .walk([(*root, String::new())], &mut rewrite)?;
        let root = rewrite.root;
        lost.sort_by(|(a, _), (b, _)| a.split('/').cmp(b.split('/')));
        Ok(root)
    }
}

/// A tree being rewritten: the entries it keeps (`None`: a directory
/// left out because its listing is lost), and which of them are
/// directories whose rewritten subtree is still to come, by path.
struct Frame {
    kept: Vec<Option<TreeEntry>>,
    directories: HashMap<String, usize>,
    changed: bool,
}

/// The walk that rewrites one component bottom up: a tree's entries are
/// sorted into kept and lost as it is read, and its new tree is written
/// when it is left, once every directory below it has its own.
struct Rewrite<'s, 'a> {
    salvage: &'s Salvage<'a>,
    writer: &'s BlobWriter<'a>,
    lost: &'s mut Vec<(String, String)>,
    /// The trees on the way from the root to the one being walked.
    frames: Vec<Frame>,
    /// The root's rewritten tree, once it is left.
    root: Option<Id>,
}

impl Rewrite<'_, '_> {
    /// Gives the directory at `path` its rewritten tree in its parent;
    /// `None` leaves it out.
    fn settle(&mut self, path: &str, original: &Id, new: Option<Id>) {
        let Some(parent) = self.frames.last_mut() else {
            self.root = new;
            return;
        };
        let Some(index) = parent.directories.remove(path) else {
            return;
        };
        match new {
            Some(new) => {
                if let Some(entry) = &mut parent.kept[index] {
                    parent.changed |= new != *original;
                    entry.subtree = Some(new);
                }
            }
            None => {
                parent.kept[index] = None;
                parent.changed = true;
            }
        }
    }

    fn lose_directory(&mut self, path: &str, id: &Id) {
        let shown = if path.is_empty() { "/" } else { path };
        self.lost.push((
            shown.to_string(),
            "omitted by repair: its directory listing is lost".into(),
        ));
        self.settle(path, id, None);
    }
}

impl TreeVisitor for Rewrite<'_, '_> {
    type Error = StoreError;

    fn refused(&mut self, id: &Id, path: &str, refusal: Refusal) -> Result<()> {
        Err(refusal.error(id, path))
    }

    fn enter(&mut self, id: &Id, path: &str) -> Result<Flow> {
        if self.salvage.available(id)? {
            return Ok(Flow::Continue);
        }
        self.lose_directory(path, id);
        Ok(Flow::SkipSubtree)
    }

    fn read(&mut self, id: &Id, path: &str) -> Result<Option<Tree>> {
        match read_tree(self.salvage.repository, self.salvage.index, id) {
            Ok(tree) => {
                self.frames.push(Frame {
                    kept: Vec::with_capacity(tree.entries.len()),
                    directories: HashMap::new(),
                    changed: false,
                });
                Ok(Some(tree))
            }
            Err(_) => {
                self.lose_directory(path, id);
                Ok(None)
            }
        }
    }

    fn entry(&mut self, entry: &TreeEntry, path: &str) -> Result<Flow> {
        let mut flow = Flow::SkipSubtree;
        match entry.kind {
            EntryKind::File => {
                for chunk in entry.chunks.as_deref().unwrap_or_default() {
                    if !self.salvage.available(chunk)? {
                        self.lost.push((
                            path.to_string(),
                            "omitted by repair: some of its chunks are lost".into(),
                        ));
                        if let Some(frame) = self.frames.last_mut() {
                            frame.changed = true;
                        }
                        return Ok(Flow::SkipSubtree);
                    }
                }
            }
            // A directory without a subtree is dropped from a tree that
            // changes for another reason, as it always was.
            EntryKind::Directory if entry.subtree.is_none() => return Ok(Flow::SkipSubtree),
            EntryKind::Directory => flow = Flow::Continue,
            EntryKind::Symlink => {}
        }
        if let Some(frame) = self.frames.last_mut() {
            if flow == Flow::Continue {
                frame.directories.insert(path.to_string(), frame.kept.len());
            }
            frame.kept.push(Some(entry.clone()));
        }
        Ok(flow)
    }

    fn leave(&mut self, id: &Id, path: &str) -> Result<()> {
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        let new = match frame.changed {
            true => store_tree(
                self.writer,
                Tree::new(frame.kept.into_iter().flatten().collect()),
            )?,
            false => *id,
        };
        self.settle(path, id, Some(new));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::index::MemoryIndex;
    use std::sync::Arc;

    fn entry(name: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nanos: 0,
            ctime: 0,
            ctime_nanos: 0,
            inode: 0,
            size: 0,
            chunks: None,
            hash: None,
            subtree: None,
            target: None,
        }
    }

    /// A file whose one chunk is stored when `stored`, lost otherwise.
    fn file(writer: &BlobWriter, name: &str, stored: bool) -> TreeEntry {
        let content = format!("content of {name}").into_bytes();
        let id = Id::of(&content);
        if stored {
            writer.add(BlobKind::Data, id, &content).unwrap();
        }
        let mut file = entry(name, EntryKind::File);
        file.size = content.len() as u64;
        file.chunks = Some(vec![id]);
        file.hash = Some(id);
        file
    }

    fn directory(name: &str, subtree: Id) -> TreeEntry {
        let mut directory = entry(name, EntryKind::Directory);
        directory.subtree = Some(subtree);
        directory
    }

    fn names(repository: &Repository, index: &MemoryIndex, tree: &Id) -> Vec<String> {
        let tree = read_tree(repository, index, tree).unwrap();
        tree.entries.iter().map(TreeEntry::display_name).collect()
    }

    /// root: a/ (b/ (lost, kept), x.bin lost), a.txt lost, keep, z/ (listing lost)
    #[test]
    fn a_rewrite_leaves_out_lost_files_and_listings_and_rewrites_every_tree_above_them() {
        let scratch = tempfile::tempdir().unwrap();
        let (repository, key) =
            crate::repository::plaintext_for_tests(Arc::new(LocalBackend::new(scratch.path())));
        let index = MemoryIndex::new();
        let writer = BlobWriter::new(&repository, &index, HashMap::new(), Some(&key));
        let b = store_tree(
            &writer,
            Tree::new(vec![
                file(&writer, "lost", false),
                file(&writer, "kept", true),
            ]),
        )
        .unwrap();
        let a = store_tree(
            &writer,
            Tree::new(vec![directory("b", b), file(&writer, "x.bin", false)]),
        )
        .unwrap();
        let unstored = Id::of(b"a listing nobody stored");
        let untouched = store_tree(&writer, Tree::new(vec![file(&writer, "s", true)])).unwrap();
        let root = store_tree(
            &writer,
            Tree::new(vec![
                directory("a", a),
                file(&writer, "a.txt", false),
                file(&writer, "keep", true),
                directory("u", untouched),
                directory("z", unstored),
            ]),
        )
        .unwrap();
        writer.finish().unwrap();

        let present = repository.list_packs().unwrap();
        let corrupt = HashSet::new();
        let salvage = Salvage {
            repository: &repository,
            index: &index,
            present: &present,
            corrupt: &corrupt,
        };
        let writer = BlobWriter::new(&repository, &index, present.clone(), Some(&key));
        let mut lost = Vec::new();
        let new_root = salvage
            .rewrite(&writer, &root, &mut lost)
            .unwrap()
            .expect("the root is readable");
        writer.finish().unwrap();

        let paths: Vec<&str> = lost.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["a/b/lost", "a/x.bin", "a.txt", "z"]);
        assert_ne!(new_root, root);
        assert_eq!(names(&repository, &index, &new_root), ["a", "keep", "u"]);
        let tree = read_tree(&repository, &index, &new_root).unwrap();
        let new_a = tree.entries[0].subtree.unwrap();
        assert_ne!(new_a, a);
        assert_eq!(
            tree.entries[2].subtree,
            Some(untouched),
            "an intact tree is kept as it is"
        );
        assert_eq!(names(&repository, &index, &new_a), ["b"]);
        let new_b = read_tree(&repository, &index, &new_a).unwrap().entries[0]
            .subtree
            .unwrap();
        assert_eq!(names(&repository, &index, &new_b), ["kept"]);
    }
}
