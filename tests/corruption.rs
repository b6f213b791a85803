//! Damage to a repository: a flipped byte, a tampered or edited manifest, a
//! lost, truncated or orphaned pack, a lost index file, a stranger's
//! snapshot. `verify` must name the object at fault and the files it costs;
//! `restore` must keep bad bytes out of the target and restore the rest.

mod common;
use common::*;

use cairn_store::Id;
use cairn_store::format::manifest::{SignedManifest, SnapshotBody};
use cairn_store::format::pack::{BlobEntry, BlobKind, decode_blob};
use cairn_store::format::tree::Tree;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `cairn --json backup SOURCE`; returns the snapshot's full id.
fn backup(workspace: &Workspace, source: &Path) -> String {
    let summary = workspace.backup_json([source]);
    summary["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

fn short(id: &str) -> &str {
    &id[..8]
}

fn findings<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|finding| finding["kind"] == kind)
        .collect()
}

/// (snapshot, component, path) of everything a finding says it damages.
fn affected(finding: &Value) -> BTreeSet<(String, String, String)> {
    finding["affected"]
        .as_array()
        .expect("affected")
        .iter()
        .map(|item| {
            let field = |name: &str| item[name].as_str().expect("affected field").to_string();
            (field("snapshot"), field("component"), field("path"))
        })
        .collect()
}

fn restore(workspace: &Workspace, snapshot: &str, target: &Path) -> Run {
    workspace.restore(snapshot, target)
}

/// Every file of `source` except `missing` (component-relative paths) is in
/// `restored` with the same content, size, mode and mtime; the `missing`
/// ones are absent; nothing else is there.
fn assert_restored_except(source: &Path, restored: &Path, missing: &[&str]) {
    let relative = |root: &Path| -> BTreeSet<PathBuf> {
        walk(root)
            .into_iter()
            .map(|path| path.strip_prefix(root).expect("below root").to_path_buf())
            .collect()
    };
    let missing: BTreeSet<PathBuf> = missing.iter().map(PathBuf::from).collect();
    let expected: BTreeSet<PathBuf> = relative(source).difference(&missing).cloned().collect();
    assert_eq!(relative(restored), expected, "restored paths");
    for path in &expected {
        let (a, b) = (source.join(path), restored.join(path));
        let (meta_a, meta_b) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        if !meta_a.is_file() {
            continue;
        }
        assert_eq!(meta_a.len(), meta_b.len(), "{}: size", path.display());
        assert_eq!(file_hash(&a), file_hash(&b), "{}: content", path.display());
        assert_eq!(
            meta_a.mode() & 0o7777,
            meta_b.mode() & 0o7777,
            "{}: mode",
            path.display()
        );
        assert_eq!(
            (meta_a.mtime(), meta_a.mtime_nsec()),
            (meta_b.mtime(), meta_b.mtime_nsec()),
            "{}: mtime",
            path.display()
        );
    }
}

fn snapshot_path(workspace: &Workspace, id: &str) -> PathBuf {
    workspace.repo().join("snapshots").join(id)
}

fn read_manifest(workspace: &Workspace, id: &str) -> SignedManifest {
    let bytes = fs::read(snapshot_path(workspace, id)).expect("read manifest");
    SignedManifest::decode(&bytes, "test manifest").expect("decode manifest")
}

/// Writes a manifest the way the repository names objects: by its hash.
fn write_manifest(workspace: &Workspace, manifest: &SignedManifest) -> String {
    let bytes = manifest.encode();
    let id = Id::of(&bytes).to_hex();
    write(&snapshot_path(workspace, &id), &bytes);
    id
}

/// A directory of noise files, `size` bytes each, one of them in a subdirectory.
fn noise_tree(root: &Path, names: &[&str], size: usize) {
    for (seed, name) in names.iter().enumerate() {
        write(&root.join(name), &noise(seed as u64 + 100, size));
    }
    write(
        &root.join("notes.txt"),
        b"plain words, compressible words, words\n",
    );
}

/// The paths `cairn ls` lists as holding chunk `chunk` (hex) in `snapshot`.
fn files_holding(workspace: &Workspace, snapshot: &str, chunk: &str) -> Vec<String> {
    let listing = workspace.cairn_repo(["--json", "ls", snapshot]).ok().json();
    listing
        .as_array()
        .expect("ls entries")
        .iter()
        .filter(|entry| {
            entry["chunks"]
                .as_array()
                .is_some_and(|chunks| chunks.iter().any(|c| c.as_str() == Some(chunk)))
        })
        .map(|entry| entry["path"].as_str().expect("path").to_string())
        .collect()
}

#[test]
fn a_flipped_byte_in_a_data_pack_is_found_by_read_data_and_kept_out_of_a_restore() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    let names = ["a.bin", "b.bin", "c.bin", "deep/d.bin", "e.bin"];
    noise_tree(&source, &names, 200_000);
    let snapshot = backup(&workspace, &source);

    // The pack of file content, and the chunk in the middle of its blob area.
    let packs = data_packs(&workspace.packs());
    assert_eq!(packs.len(), 1, "one data pack for 1 MB: {packs:?}");
    let pack = &packs[0];
    let pack_id = id_of_file(pack).to_hex();
    let header = header_of(pack);
    let last = header.blobs.last().expect("blobs");
    let middle = (8 + last.offset + u64::from(last.length)) / 2;
    let hit: &BlobEntry = header
        .blobs
        .iter()
        .find(|blob| blob.offset <= middle && middle < blob.offset + u64::from(blob.length))
        .expect("a blob covers the middle");
    let chunk = hit.id.to_hex();

    // Which file holds that chunk, as `ls` tells it.
    let holders = files_holding(&workspace, &snapshot, &chunk);
    assert_eq!(
        holders.len(),
        1,
        "exactly one file holds chunk {chunk}: {holders:?}"
    );
    let damaged = holders[0]
        .strip_prefix("src/")
        .expect("in component src")
        .to_string();

    let mut bytes = fs::read(pack).unwrap();
    bytes[middle as usize] ^= 0x01;
    fs::write(pack, &bytes).unwrap();

    // Plain verify checks structure, not content bytes (documented: only
    // --read-data reads every pack whole), so it has nothing to say.
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 0, "plain verify does not read data: {report:#}");
    assert_eq!(report["clean"], true);

    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 4, "{report:#}");
    assert_eq!(report["clean"], false);
    let corrupt = findings(&report, "corrupt-chunk");
    assert_eq!(corrupt.len(), 1, "one corrupt chunk: {report:#}");
    let finding = corrupt[0];
    assert_eq!(finding["severity"], "damage");
    let object = finding["object"].as_str().unwrap();
    assert!(
        object.contains(&chunk) && object.contains(&pack_id),
        "object names chunk and pack: {object}"
    );
    assert_eq!(
        affected(finding),
        BTreeSet::from([(
            short(&snapshot).to_string(),
            "src".to_string(),
            damaged.clone()
        )]),
        "{finding:#}"
    );
    assert_eq!(finding["affected_total"], 1);
    // The pack as a whole no longer matches its name either.
    assert!(
        findings(&report, "corrupt-pack")
            .iter()
            .any(|f| f["object"].as_str().unwrap().contains(&pack_id)),
        "{report:#}"
    );
    assert_eq!(
        report["damaged_snapshots"],
        serde_json::json!([short(&snapshot)])
    );

    let target = workspace.path("out");
    let run = restore(&workspace, &snapshot, &target).expect(4);
    assert!(
        run.stderr.contains(&damaged),
        "stderr names {damaged}: {}",
        run.stderr
    );
    assert!(
        !target.join("src").join(&damaged).exists(),
        "bad bytes must not be restored as {damaged}"
    );
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
    assert_restored_except(&source, &target.join("src"), &[&damaged]);
}

#[test]
fn a_flipped_byte_in_a_directory_tree_is_found_by_plain_verify_and_costs_only_that_directory() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(
        &source,
        &["kept/a.bin", "kept/b.bin", "lost/c.bin", "lost/d.bin"],
        30_000,
    );
    let snapshot = backup(&workspace, &source);

    // The tree blob of directory `lost`, found by decoding every tree blob.
    let mut found = None;
    for pack in workspace.packs() {
        let bytes = fs::read(&pack).unwrap();
        let pack_id = id_of_file(&pack);
        for blob in header_of(&pack)
            .blobs
            .iter()
            .filter(|b| b.kind == BlobKind::Tree)
        {
            let stored = &bytes[blob.offset as usize..][..blob.length as usize];
            let tree = Tree::decode(&decode_blob(blob, stored, &pack_id).unwrap(), "tree").unwrap();
            let names: Vec<String> = tree.entries.iter().map(|e| e.display_name()).collect();
            if names == ["c.bin", "d.bin"] {
                found = Some((pack.clone(), *blob));
            }
        }
    }
    let (pack, blob) = found.expect("the tree of directory lost");
    let mut bytes = fs::read(&pack).unwrap();
    bytes[(blob.offset + u64::from(blob.length) / 2) as usize] ^= 0x20;
    fs::write(&pack, &bytes).unwrap();

    // Plain verify reads every tree, so it needs no --read-data for this.
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let corrupt = findings(&report, "corrupt-tree");
    assert_eq!(corrupt.len(), 1, "{report:#}");
    assert!(
        corrupt[0]["object"]
            .as_str()
            .unwrap()
            .contains(&blob.id.to_hex()),
        "{:#}",
        corrupt[0]
    );
    assert_eq!(
        affected(corrupt[0]),
        BTreeSet::from([(
            short(&snapshot).to_string(),
            "src".to_string(),
            "lost".to_string()
        )])
    );

    // Planning reads every tree, so the preflight check refuses the restore
    // before writing anything, naming the damaged directory...
    let target = workspace.path("out");
    let refused = restore(&workspace, &snapshot, &target).expect(5);
    assert!(
        refused.stdout.contains("missing-chunks") && refused.stdout.contains("src/lost"),
        "{}",
        refused.stdout
    );
    assert!(!target.exists(), "a refused restore writes nothing");
    // ...and with the override, everything else is restored.
    let run = workspace
        .cairn_repo([
            "restore".as_ref(),
            snapshot.as_ref() as &std::ffi::OsStr,
            "--target".as_ref(),
            target.as_os_str(),
            "--allow-missing-chunks".as_ref(),
        ])
        .expect(4);
    assert!(run.stderr.contains("lost"), "{}", run.stderr);
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
    for name in ["notes.txt", "kept/a.bin", "kept/b.bin"] {
        assert_eq!(
            file_hash(&target.join("src").join(name)),
            file_hash(&source.join(name)),
            "{name}"
        );
    }
    assert!(!target.join("src/lost/c.bin").exists() && !target.join("src/lost/d.bin").exists());
}

#[test]
fn a_manifest_tampered_under_its_old_signature_is_refused_by_verify_and_restore() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(&source, &["a.bin"], 50_000);
    let old = backup(&workspace, &source);
    write(&source.join("b.bin"), &noise(7, 50_000));
    let new = backup(&workspace, &source);

    // Roll the newer snapshot back to the older one's tree, and claim another
    // host, keeping the signature the real body was given.
    let old_body = read_manifest(&workspace, &old).body_unverified().unwrap();
    let mut manifest = read_manifest(&workspace, &new);
    let mut body: SnapshotBody = manifest.body_unverified().unwrap();
    body.components[0].tree = old_body.components[0].tree;
    body.host = "somewhere-else".into();
    manifest.body = cairn_store::format::codec::to_cbor(&body);
    let tampered = write_manifest(&workspace, &manifest);
    fs::remove_file(snapshot_path(&workspace, &new)).unwrap();

    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let bad = findings(&report, "bad-signature");
    assert_eq!(bad.len(), 1, "{report:#}");
    assert_eq!(bad[0]["severity"], "damage");
    assert!(
        bad[0]["object"].as_str().unwrap().contains(&tampered),
        "{:#}",
        bad[0]
    );
    // The real manifest it replaced is gone without a forget record: this
    // machine saw it as the newest, so that is a roll-back, named too.
    let rolled_back = findings(&report, "rolled-back");
    assert_eq!(rolled_back.len(), 1, "{report:#}");
    assert!(
        rolled_back[0]["object"].as_str().unwrap().contains(&new),
        "{report:#}"
    );
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        2,
        "only the tampered manifest and the roll-back are at fault: {report:#}"
    );

    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let entry = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == tampered.as_str())
        .expect("tampered snapshot listed");
    assert_eq!(entry["trusted"], false, "{entry:#}");

    let target = workspace.path("out");
    // Exit code 5: refused by the signature preflight check.
    let run = restore(&workspace, &tampered, &target).expect(5);
    assert!(
        run.stderr.contains("signature"),
        "stderr names the signature problem: {}",
        run.stderr
    );
    assert!(!target.exists(), "a refused restore writes nothing");

    // The untouched snapshot still restores.
    restore(&workspace, &old, &target).ok();
    assert_eq!(
        file_hash(&target.join("src/a.bin")),
        file_hash(&source.join("a.bin"))
    );
    assert!(!target.join("src/b.bin").exists());
}

#[test]
fn a_manifest_edited_in_place_is_reported_as_corrupt() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(&source, &["a.bin"], 50_000);
    let snapshot = backup(&workspace, &source);

    let path = snapshot_path(&workspace, &snapshot);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40; // inside the signature: still decodes, no longer its name
    fs::write(&path, &bytes).unwrap();

    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let corrupt = findings(&report, "corrupt-manifest");
    assert_eq!(corrupt.len(), 1, "{report:#}");
    assert_eq!(corrupt[0]["severity"], "damage");
    assert!(
        corrupt[0]["object"].as_str().unwrap().contains(&snapshot),
        "{:#}",
        corrupt[0]
    );

    let target = workspace.path("out");
    let run = restore(&workspace, &snapshot, &target).expect(1);
    assert!(run.stderr.contains("corrupt"), "{}", run.stderr);
    assert!(!target.exists(), "a refused restore writes nothing");
}

#[test]
fn a_deleted_pack_is_named_by_plain_verify_and_costs_only_the_files_it_held() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(&source, &["a.bin", "b.bin", "sub/c.bin"], 200_000);
    let first = backup(&workspace, &source);
    let before: BTreeSet<PathBuf> = workspace.packs().into_iter().collect();
    write(&source.join("sub/new.bin"), &noise(42, 200_000));
    let second = backup(&workspace, &source);

    // The second backup's only new content is sub/new.bin: its own data pack.
    let added: Vec<PathBuf> = workspace
        .packs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let lost = data_packs(&added);
    assert_eq!(lost.len(), 1, "{added:?}");
    let lost_id = id_of_file(&lost[0]).to_hex();
    fs::remove_file(&lost[0]).unwrap();

    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let missing = findings(&report, "missing-pack");
    assert_eq!(missing.len(), 1, "{report:#}");
    assert_eq!(missing[0]["severity"], "damage");
    assert!(
        missing[0]["object"].as_str().unwrap().contains(&lost_id),
        "{:#}",
        missing[0]
    );
    assert_eq!(
        affected(missing[0]),
        BTreeSet::from([(
            short(&second).to_string(),
            "src".to_string(),
            "sub/new.bin".to_string()
        )])
    );
    assert_eq!(
        report["damaged_snapshots"],
        serde_json::json!([short(&second)])
    );

    let target = workspace.path("second");
    let run = restore(&workspace, &second, &target).expect(4);
    assert!(run.stderr.contains("sub/new.bin"), "{}", run.stderr);
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
    assert_restored_except(&source, &target.join("src"), &["sub/new.bin"]);

    // The first snapshot never needed that pack.
    let target = workspace.path("first");
    restore(&workspace, &first, &target).ok();
    fs::remove_file(source.join("sub/new.bin")).unwrap();
    assert_restored_except(&source, &target.join("src"), &[]);
}

/// Verify walks a component tree it has already walked clean once, not
/// once per snapshot holding it: the counts must stay those of a walk of
/// every snapshot, and damage must still be named in every snapshot that
/// holds it, next to a component that is clean in all of them.
#[test]
fn identical_trees_in_many_snapshots_are_counted_and_named_in_each() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let (source, other) = (workspace.path("src"), workspace.path("other"));
    noise_tree(&source, &["a.bin", "sub/c.bin"], 200_000);
    for (seed, name) in ["x.bin", "y.bin"].iter().enumerate() {
        write(&other.join(name), &noise(500 + seed as u64, 150_000));
    }
    let references = |workspace: &Workspace| {
        let (code, report) = workspace.verify_json(&[]);
        assert_eq!(code, 0, "{report:#}");
        report["chunk_references"]
            .as_u64()
            .expect("chunk_references")
    };
    workspace.backup_json([&other]);
    let other_only = references(&workspace);
    let before: BTreeSet<PathBuf> = workspace.packs().into_iter().collect();
    let snapshots: Vec<String> = (0..3)
        .map(|_| {
            workspace.backup_json([&source, &other])["snapshot"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let all = references(&workspace);
    // Four walks of `other`, three of `src`: src's share is a third of the rest.
    let source_only = (all - 4 * other_only) / 3;
    assert!(
        source_only > 0 && all == 4 * other_only + 3 * source_only,
        "{all} {other_only}"
    );

    // src's own data (its notes.txt too) is in the packs the first of the
    // three wrote.
    let added: Vec<PathBuf> = workspace
        .packs()
        .into_iter()
        .filter(|pack| !before.contains(pack))
        .collect();
    let lost = data_packs(&added);
    assert!(!lost.is_empty(), "{added:?}");
    for pack in &lost {
        fs::remove_file(pack).unwrap();
    }
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    assert_eq!(report["chunk_references"].as_u64(), Some(all), "{report:#}");
    let damaged: BTreeSet<(String, String, String)> = findings(&report, "missing-pack")
        .into_iter()
        .flat_map(affected)
        .collect();
    let expected: BTreeSet<(String, String, String)> = snapshots
        .iter()
        .flat_map(|snapshot| {
            ["a.bin", "notes.txt", "sub/c.bin"].map(|path| {
                (
                    short(snapshot).to_string(),
                    "src".to_string(),
                    path.to_string(),
                )
            })
        })
        .collect();
    assert_eq!(damaged, expected, "{report:#}");
}

#[test]
fn a_truncated_pack_is_a_size_mismatch_for_plain_verify() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(&source, &["a.bin", "b.bin"], 100_000);
    let snapshot = backup(&workspace, &source);
    let packs = data_packs(&workspace.packs());
    assert_eq!(packs.len(), 1);
    let pack = &packs[0];
    let full = fs::metadata(pack).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(pack).unwrap();
    file.set_len(full / 2).unwrap();
    drop(file);

    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let mismatch = findings(&report, "pack-size-mismatch");
    assert_eq!(mismatch.len(), 1, "{report:#}");
    let pack_id = id_of_file(pack).to_hex();
    assert!(mismatch[0]["object"].as_str().unwrap().contains(&pack_id));
    let message = mismatch[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&(full / 2).to_string()) && message.contains(&full.to_string()),
        "{message}"
    );
    let paths: BTreeSet<String> = affected(mismatch[0])
        .into_iter()
        .map(|(_, _, path)| path)
        .collect();
    // Every file's content lives in that one pack.
    assert_eq!(
        paths,
        BTreeSet::from(["a.bin", "b.bin", "notes.txt"].map(String::from))
    );
    assert_eq!(
        report["damaged_snapshots"],
        serde_json::json!([short(&snapshot)])
    );
}

#[test]
fn a_lost_index_file_leaves_orphan_packs_that_the_next_backup_adopts() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(&source, &["a.bin", "sub/b.bin"], 100_000);
    let snapshot = backup(&workspace, &source);
    let packs = workspace.packs();
    let index_files: Vec<PathBuf> = walk(&workspace.repo().join("index"));
    assert_eq!(index_files.len(), 1);
    fs::remove_file(&index_files[0]).unwrap();

    // Verify still runs: the packs are there but unlisted (a notice), and the
    // snapshot's blobs are in no index (damage).
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let orphans = findings(&report, "unreferenced-pack");
    assert_eq!(orphans.len(), packs.len(), "{report:#}");
    for orphan in &orphans {
        assert_eq!(orphan["severity"], "notice");
    }
    let unlisted: BTreeSet<String> = orphans
        .iter()
        .map(|f| f["object"].as_str().unwrap().to_string())
        .collect();
    for pack in &packs {
        assert!(
            unlisted.contains(&format!("pack {}", id_of_file(pack))),
            "{unlisted:?}"
        );
    }
    let missing = findings(&report, "missing-blob");
    assert!(!missing.is_empty(), "{report:#}");
    for finding in &missing {
        assert_eq!(finding["severity"], "damage");
    }
    assert_eq!(
        report["damaged_snapshots"],
        serde_json::json!([short(&snapshot)])
    );

    // The same data again: nothing new is stored, the orphans are indexed.
    let summary = workspace.backup_json([&source]);
    assert_eq!(summary["adopted_packs"], packs.len(), "{summary:#}");
    assert_eq!(summary["new_chunks"], 0, "{summary:#}");
    assert_eq!(summary["packs_written"], 0, "{summary:#}");
    assert_eq!(workspace.packs(), packs);

    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["findings"],
        serde_json::json!([]),
        "not even a notice is left"
    );
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target).ok();
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn a_manifest_signed_by_a_key_not_trusted_here_is_reported_as_untrusted() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    noise_tree(&source, &["a.bin"], 20_000);
    let own = backup(&workspace, &source);

    let stranger = Workspace::new();
    let created = stranger
        .cairn_repo(["--json", "init", "--plaintext"])
        .ok()
        .json();
    let stranger_key = created["public_key"]
        .as_str()
        .expect("public key")
        .to_string();
    let stranger_source = stranger.path("src");
    noise_tree(&stranger_source, &["x.bin"], 20_000);
    let foreign = backup(&stranger, &stranger_source);
    fs::copy(
        snapshot_path(&stranger, &foreign),
        snapshot_path(&workspace, &foreign),
    )
    .unwrap();

    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    let untrusted = findings(&report, "untrusted-signer");
    assert_eq!(untrusted.len(), 1, "{report:#}");
    assert!(
        untrusted[0]["object"].as_str().unwrap().contains(&foreign),
        "{:#}",
        untrusted[0]
    );
    assert!(
        untrusted[0]["message"]
            .as_str()
            .unwrap()
            .contains(&stranger_key),
        "{:#}",
        untrusted[0]
    );
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        1,
        "our own snapshot is fine: {report:#}"
    );

    let target = workspace.path("out");
    let run = restore(&workspace, &foreign, &target).expect(5);
    assert!(run.stdout.contains("untrusted"), "{}", run.stdout);
    assert!(!target.exists());
    restore(&workspace, &own, &target).ok();
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn a_damaged_blob_in_a_prefetched_span_costs_only_its_file() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    let files = 300u64;
    for index in 0..files {
        write(
            &source.join(format!("small/f{index:03}")),
            &noise(900 + index, 2_000 + (index as usize % 7) * 1_000),
        );
    }
    let snapshot = backup(&workspace, &source);

    let packs = data_packs(&workspace.packs());
    assert_eq!(packs.len(), 1, "one data pack for 1.5 MB: {packs:?}");
    let pack = &packs[0];
    let header = header_of(pack);
    let hit = &header.blobs[header.blobs.len() / 2];
    let holders = files_holding(&workspace, &snapshot, &hit.id.to_hex());
    assert_eq!(holders.len(), 1, "{holders:?}");
    let damaged = holders[0].strip_prefix("src/").expect("in src").to_string();
    let mut bytes = fs::read(pack).unwrap();
    bytes[(hit.offset + u64::from(hit.length) / 2) as usize] ^= 0x10;
    fs::write(pack, &bytes).unwrap();

    let target = workspace.path("out");
    let run = workspace
        .cairn_repo([
            "--json".as_ref(),
            "restore".as_ref(),
            snapshot.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ])
        .expect(4);
    let report = run.json();
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["path"], damaged.as_str());
    assert!(
        failures[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains(&hit.id.to_hex())),
        "the error names the damaged chunk: {failures:?}"
    );
    assert!(!target.join("src").join(&damaged).exists());
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
    assert_restored_except(&source, &target.join("src"), &[&damaged]);
    // The other 299 came from one prefetched span; the damaged blob was
    // left out of it and read once more on its own, which failed again.
    let requests = report["requests"].as_u64().expect("requests");
    assert!(
        (2..=4).contains(&requests),
        "{requests} requests for {files} files"
    );
    assert_eq!(report["files_written"], files - 1);
}

#[test]
fn a_damaged_shared_frame_costs_exactly_the_files_whose_chunks_it_holds() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    let files = 300u64;
    for index in 0..files {
        let record = format!(
            "{{\"id\": {index}, \"note\": \"memory {} of the nightly job\", \"noise\": \"{}\"}}\n",
            index * 7919 % 1000,
            noise(index, 8)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        );
        write(
            &source.join(format!("memory/m{index:03}.json")),
            record.repeat(40 + (index as usize % 9) * 20).as_bytes(),
        );
    }
    let snapshot = backup(&workspace, &source);

    // Small compressible chunks are stored in shared frames; damage one.
    let packs = data_packs(&workspace.packs());
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack = &packs[0];
    let header = header_of(pack);
    assert_eq!(header.version, 2, "a header with shared frames");
    let frame_start = header
        .blobs
        .iter()
        .filter(|blob| blob.frame_offset == Some(0))
        .nth(2)
        .expect("at least three shared frames");
    let members: Vec<&BlobEntry> = header
        .blobs
        .iter()
        .filter(|blob| blob.frame_offset.is_some() && blob.offset == frame_start.offset)
        .collect();
    assert!(members.len() > 2, "{} blobs in the frame", members.len());
    let mut bytes = fs::read(pack).unwrap();
    bytes[(frame_start.offset + u64::from(frame_start.length) / 2) as usize] ^= 0x10;
    fs::write(pack, &bytes).unwrap();

    // read-data names chunks of that frame only: those whose bytes the
    // damage changed (all of them if zstd cannot decode the frame; a
    // frame carries no checksum, so a flipped literal may cost one blob).
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 4, "{report:#}");
    let corrupt: Vec<String> = findings(&report, "corrupt-chunk")
        .iter()
        .map(|finding| finding["object"].as_str().expect("object").to_string())
        .collect();
    let corrupt_members: Vec<&&BlobEntry> = members
        .iter()
        .filter(|member| {
            corrupt
                .iter()
                .any(|object| object.contains(&member.id.to_hex()))
        })
        .collect();
    assert!(!corrupt.is_empty(), "{report:#}");
    assert_eq!(
        corrupt_members.len(),
        corrupt.len(),
        "only chunks of the frame: {corrupt:#?}"
    );
    let mut damaged: BTreeSet<String> = BTreeSet::new();
    for member in corrupt_members {
        for holder in files_holding(&workspace, &snapshot, &member.id.to_hex()) {
            damaged.insert(holder.strip_prefix("src/").expect("in src").to_string());
        }
    }

    // A restore keeps exactly those files out and restores the rest.
    let target = workspace.path("out");
    let run = restore(&workspace, &snapshot, &target).expect(4);
    for path in &damaged {
        assert!(run.stderr.contains(path.as_str()), "{path}: {}", run.stderr);
    }
    let missing: Vec<&str> = damaged.iter().map(String::as_str).collect();
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
    assert_restored_except(&source, &target.join("src"), &missing);
}
