//! Findings 1, 2 and 8 (its fourth part) of the integrity review: what an
//! attacker who can only add objects does with a planted index file. Each
//! test plants an unsigned index file (what any writer can add), runs the
//! owner's routine commands, and checks that nothing is lost and that the
//! planted file is named.

use crate::common::*;
use cairn_store::Id;
use cairn_store::format::index::{IndexFile, PackEntry};
use cairn_store::format::pack::{BlobEntry, BlobKind, Compression};
use std::fs;
use std::path::{Path, PathBuf};

/// Writes `file` into the repository's index directory, named by its
/// hash, as any writer can; returns its id.
fn plant_index(workspace: &Workspace, file: &IndexFile) -> Id {
    let bytes = file.encode();
    let id = Id::of(&bytes);
    let directory = workspace.repo().join("index");
    fs::create_dir_all(&directory).unwrap();
    fs::write(directory.join(id.to_hex()), bytes).unwrap();
    id
}

/// A listing of `pack` (a real pack of `size` bytes) claiming it holds
/// every one of `blobs`, each as one stored byte just past the magic.
fn false_claim(pack: &Path, blobs: &[Id]) -> IndexFile {
    let size = fs::metadata(pack).unwrap().len();
    let entries = blobs
        .iter()
        .map(|id| BlobEntry {
            kind: BlobKind::Data,
            id: *id,
            offset: 8,
            length: 1,
            raw_length: 1,
            compression: Compression::None,
            frame_offset: None,
            base: None,
        })
        .collect();
    IndexFile::new(vec![PackEntry {
        id: id_of_file(pack),
        size,
        blobs: entries,
    }])
}

fn data_blobs(pack: &Path) -> Vec<Id> {
    header_of(pack)
        .blobs
        .iter()
        .filter(|blob| blob.kind == BlobKind::Data)
        .map(|blob| blob.id)
        .collect()
}

fn snapshot_of(summary: &serde_json::Value) -> String {
    summary["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot id in {summary}"))
        .to_string()
}

fn new_packs(before: &[PathBuf], after: &[PathBuf]) -> Vec<PathBuf> {
    after
        .iter()
        .filter(|pack| !before.contains(pack))
        .cloned()
        .collect()
}

/// `verify --read-data` finds no damage, and its report names `planted`.
fn assert_verify_clean_naming(workspace: &Workspace, planted: &Id) {
    let run = workspace.cairn_repo(["--json", "verify", "--read-data"]);
    let report = run.json();
    assert_eq!(run.code, 0, "verify found damage:\n{}", brief(&report));
    assert!(
        report.to_string().contains(&planted.to_hex()),
        "verify does not name the planted index file {planted}:\n{}",
        brief(&report)
    );
}

/// The owner backs up two files, then only one; forgets the first
/// snapshot and prunes twice with no grace, so the pack holding both files
/// is repacked and deleted. A planted index file claims the live file's
/// chunks are in the tree pack as well: on today's code the repack trusts
/// it, copies nothing, and the second prune deletes the only copy.
#[test]
fn finding_1_planted_index_cannot_make_prune_delete_live_data() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("source");
    write(&source.join("kept"), &noise(1, 200_000));
    write(&source.join("dropped"), &noise(2, 200_000));
    let first = snapshot_of(&workspace.backup_json([&source]));
    let packs_before = workspace.packs();
    fs::remove_file(source.join("dropped")).unwrap();
    let second = snapshot_of(&workspace.backup_json([&source]));
    let tree_packs = new_packs(&packs_before, &workspace.packs());
    assert_eq!(tree_packs.len(), 1, "the second backup writes only trees");
    let data = data_packs(&packs_before);
    let [data_pack] = &data[..] else {
        panic!("expected one data pack, found {data:?}");
    };
    let planted = plant_index(
        &workspace,
        &false_claim(&tree_packs[0], &data_blobs(data_pack)),
    );

    workspace.cairn_repo(["forget", &first]).ok();
    let prune = ["prune", "--grace", "0s", "--max-unused", "0%"];
    workspace.cairn_repo(prune).ok();
    let run = workspace.cairn_repo(prune).ok();
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(&planted.to_hex()) || said.contains(&planted.short()),
        "prune does not name the planted index file {planted}:\n{said}"
    );

    let target = workspace.path("restored");
    workspace.restore(&second, &target).ok();
    assert_same_tree(&source, &target.join("source"));
    assert_verify_clean_naming(&workspace, &planted);
}

/// An attacker who guesses a file the owner will back up plants an index
/// file claiming its chunk is already stored (in a real pack that lacks
/// it). On today's code the backup skips the chunk, and the new signed
/// snapshot names a chunk that exists nowhere.
#[test]
fn finding_2_poisoned_dedup_never_yields_a_snapshot_with_missing_chunks() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("source");
    write(&source.join("old"), &noise(3, 50_000));
    workspace.backup_json([&source]);
    // Smaller than the smallest chunk: one chunk, named by its hash.
    let secret = noise(4, 3_000);
    let pack = workspace.packs().remove(0);
    let planted = plant_index(&workspace, &false_claim(&pack, &[Id::of(&secret)]));

    write(&source.join("new"), &secret);
    let snapshot = snapshot_of(&workspace.backup_json([&source]));
    let target = workspace.path("restored");
    workspace.restore(&snapshot, &target).ok();
    assert_same_tree(&source, &target.join("source"));
    assert_verify_clean_naming(&workspace, &planted);
}

/// A planted index file names another location for a chunk the owner's
/// snapshot needs. On today's code the cache takes the newest listing, the
/// planted one shadows the real location, and the trusted restore fails.
#[test]
fn finding_8_planted_index_does_not_break_restore() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("source");
    write(&source.join("file"), &noise(5, 150_000));
    let before = workspace.packs();
    let snapshot = snapshot_of(&workspace.backup_json([&source]));
    let packs = new_packs(&before, &workspace.packs());
    let data = data_packs(&packs);
    let trees: Vec<_> = packs.iter().filter(|pack| !data.contains(pack)).collect();
    let planted = plant_index(&workspace, &false_claim(trees[0], &data_blobs(&data[0])));

    let target = workspace.path("restored");
    let run = workspace.restore(&snapshot, &target).ok();
    assert_same_tree(&source, &target.join("source"));
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(!said.contains("unrestorable"), "{said}");
    assert_verify_clean_naming(&workspace, &planted);
}

/// Rewrites every index file of the repository in the unsigned encoding
/// of a cairn from before sealed index files.
fn make_legacy(workspace: &Workspace) {
    let directory = workspace.repo().join("index");
    for entry in fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let (file, _) = IndexFile::open(&bytes, "index file", &Id::of(b"any"), &[]).unwrap();
        fs::remove_file(&path).unwrap();
        let legacy = file.encode();
        fs::write(directory.join(Id::of(&legacy).to_hex()), legacy).unwrap();
    }
}

/// Finding 8 in a repository written before sealed index files: every
/// listing is a hint, so the planted one may win in the cache; restore
/// then finds the true place among the other listed ones. Backups still
/// work (storing again what they cannot vouch for, and saying so), and
/// `repair index` makes the repository vouched for.
#[test]
fn finding_8_planted_index_does_not_break_restore_in_a_legacy_repository() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("source");
    write(&source.join("file"), &noise(6, 150_000));
    let snapshot = snapshot_of(&workspace.backup_json([&source]));
    let packs = workspace.packs();
    let data = data_packs(&packs);
    let trees: Vec<_> = packs.iter().filter(|pack| !data.contains(pack)).collect();
    make_legacy(&workspace);
    let planted = plant_index(&workspace, &false_claim(trees[0], &data_blobs(&data[0])));

    let target = workspace.path("restored");
    workspace.restore(&snapshot, &target).ok();
    assert_same_tree(&source, &target.join("source"));

    write(&source.join("more"), &noise(7, 20_000));
    let run = workspace
        .cairn_repo(["backup", source.to_str().unwrap()])
        .ok();
    assert!(run.stderr.contains("stored again"), "{}", run.stderr);

    workspace.cairn_repo(["repair", "index"]).ok();
    let run = workspace.cairn_repo(["--json", "verify", "--read-data"]);
    let report = run.json();
    assert_eq!(run.code, 0, "{}", brief(&report));
    let text = report.to_string();
    assert!(
        !text.contains("unvouched") && !text.contains(&planted.to_hex()),
        "after repair index every index file is vouched for:\n{}",
        brief(&report)
    );
    let target = workspace.path("restored again");
    workspace.restore("latest", &target).ok();
    assert_same_tree(&source, &target.join("source"));
}
