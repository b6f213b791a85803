//! Repair and self-healing: the index rebuilt from packs alone, and a lost
//! pack whose data still exists in the source written again by the next
//! backup (its loss stays damage in the audit until `repair index`).

mod common;
use common::*;
use std::fs;

fn source(workspace: &Workspace) -> std::path::PathBuf {
    let source = workspace.path("src");
    write(&source.join("big.bin"), &noise(1, 3_000_000));
    write(&source.join("notes/a.md"), b"# notes\n");
    write(&source.join("notes/b.json"), br#"{"k": 1}"#);
    source
}

fn restore_into(workspace: &Workspace, snapshot: &str, target: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "restore".to_string(),
        snapshot.to_string(),
        "--target".into(),
    ];
    args.push(workspace.path(target).display().to_string());
    args.extend(extra.iter().map(|arg| arg.to_string()));
    workspace.cairn_repo(args)
}

#[test]
fn repair_index_rebuilds_everything_from_pack_headers_alone() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = source(&workspace);
    workspace.backup_json([&source]);
    write(&source.join("notes/c.md"), b"more\n");
    workspace.backup_json([&source]);

    // Lose every index file and the local cache.
    fs::remove_dir_all(workspace.repo().join("index")).unwrap();
    fs::remove_dir_all(workspace.path("cache")).unwrap();
    let (code, _) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "without an index the snapshots are damaged");

    let repaired = workspace
        .cairn_repo(["--json", "repair", "index"])
        .ok()
        .json();
    assert_eq!(repaired["packs_indexed"], workspace.packs().len());
    assert_eq!(repaired["index_files_removed"], 0);
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    restore_into(&workspace, "latest", "out", &[]).ok();
    assert_same_tree(&source, &workspace.path("out/src"));
}

#[test]
fn repair_index_replaces_a_corrupt_index_file() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = source(&workspace);
    workspace.backup_json([&source]);
    let index_file = walk(&workspace.repo().join("index"))[0].clone();
    fs::write(&index_file, b"not an index file").unwrap();
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4);
    assert!(report.to_string().contains("corrupt-index"), "{report:#}");

    let repaired = workspace
        .cairn_repo(["--json", "repair", "index"])
        .ok()
        .json();
    assert_eq!(repaired["index_files_removed"], 1);
    // Gone, or (when the rebuilt index has the same bytes, hence the same
    // name) holding the right bytes again.
    assert!(
        !index_file.exists()
            || cairn_store::Id::of(&fs::read(&index_file).unwrap()) == id_of_file(&index_file),
        "the corrupt index file is gone or mended"
    );
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report:#}");
    restore_into(&workspace, "latest", "out", &["--no-cache"]).ok();
    assert_same_tree(&source, &workspace.path("out/src"));
}

#[test]
fn a_lost_pack_is_written_again_by_the_next_backup_of_the_same_data() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = source(&workspace);
    let first = workspace.backup_json([&source]);
    let first = first["snapshot"].as_str().unwrap().to_string();
    for pack in data_packs(&workspace.packs()) {
        fs::remove_file(pack).unwrap();
    }
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{report:#}");
    assert!(report.to_string().contains("missing-pack"));

    // The source still has every byte: the next backup stores it again,
    // although the files are unchanged since the parent snapshot.
    let second = workspace.backup_json([&source]);
    assert!(second["new_chunks"].as_u64().unwrap() > 0, "{second}");
    assert_eq!(second["unchanged_files"], 0, "{second}");

    // Every snapshot is whole again, but the lost pack is still damage
    // (storage that loses objects must not pass an audit) until `repair
    // index` forgets it; the finding says nothing is lost.
    let report = workspace.verify_finds_damage_without_loss("the lost pack is stored again");
    for finding in report["findings"].as_array().unwrap() {
        assert_eq!(finding["kind"], "missing-pack", "{finding:#}");
        assert!(
            finding["message"]
                .as_str()
                .unwrap()
                .contains("every snapshot is still restorable from other copies"),
            "{finding:#}"
        );
    }
    // Both snapshots restore, also with an index cache rebuilt from scratch.
    restore_into(&workspace, &first, "old", &["--no-cache"]).ok();
    assert_same_tree(&source, &workspace.path("old/src"));
    restore_into(&workspace, "latest", "new", &[]).ok();
    assert_same_tree(&source, &workspace.path("new/src"));

    // Repair forgets the lost pack, and the audit is then silent.
    workspace.cairn_repo(["repair", "index"]).ok();
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0);
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
}

#[test]
fn repair_snapshots_writes_a_signed_copy_without_only_the_damaged_files() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join("kept.bin"), &noise(1, 500_000));
    write(&source.join("notes/kept.md"), b"# kept\n");
    workspace.backup_json([&source]);
    let packs_of_first = workspace.packs();
    // The second backup's new file lands in a data pack of its own; lose it.
    write(&source.join("sub/lost.bin"), &noise(2, 500_000));
    let second = workspace.backup_json([&source]);
    let damaged = second["snapshot"].as_str().unwrap().to_string();
    let new_data_packs: Vec<_> = data_packs(&workspace.packs())
        .into_iter()
        .filter(|pack| !packs_of_first.contains(pack))
        .collect();
    assert_eq!(new_data_packs.len(), 1);
    fs::remove_file(&new_data_packs[0]).unwrap();

    let repaired = workspace
        .cairn_repo(["--json", "repair", "snapshots"])
        .ok()
        .json();
    let list = repaired["repaired"].as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "only the second snapshot needs repair: {repaired:#}"
    );
    assert_eq!(list[0]["original"], damaged.as_str());
    let omitted: Vec<&str> = list[0]["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["path"].as_str().unwrap())
        .collect();
    assert_eq!(omitted, vec!["sub/lost.bin"]);
    let fixed = list[0]["repaired"].as_str().unwrap().to_string();

    // The repaired snapshot is signed, listed with its origin, and restores
    // everything but the lost file.
    let snapshots = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let entry = snapshots["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|snapshot| snapshot["id"] == fixed.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["trusted"], true);
    assert_eq!(entry["labels"]["repaired-from"], damaged.as_str());
    assert!(
        entry["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|tag| tag == "repaired")
    );
    restore_into(&workspace, &fixed, "out", &[]).ok();
    assert_eq!(
        fs::read(workspace.path("out/src/kept.bin")).unwrap(),
        fs::read(source.join("kept.bin")).unwrap()
    );
    assert!(workspace.path("out/src/notes/kept.md").exists());
    assert!(!workspace.path("out/src/sub/lost.bin").exists());
    // The original is untouched, and still reported as damaged.
    assert!(workspace.repo().join("snapshots").join(&damaged).exists());
    let (code, _) = workspace.verify_json(&["--snapshot", &fixed]);
    assert_eq!(code, 0, "the repaired snapshot verifies clean");
}
