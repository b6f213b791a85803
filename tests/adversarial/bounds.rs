//! Findings of the integrity review answered here: see main.rs.
//!
//! Bounds (finding 7): every read is bounded before allocation, and an
//! object over its kind's limit is named and skipped, never read and never
//! a reason to stop. Audit semantics (finding 10): any object that fails
//! its check is damage, even when other copies keep every snapshot
//! restorable.

use crate::common::*;
use cairn_store::Id;
use cairn_store::format::index::{IndexFile, PackEntry};
use cairn_store::format::pack::{BlobKind, Compression, PackWriter, by_stored_bytes};
use std::fs;
use std::path::{Path, PathBuf};

/// A repository with one snapshot of `source`; returns the snapshot id.
fn backed_up(workspace: &Workspace, source: &Path) -> String {
    workspace.init_plaintext();
    let summary = workspace.backup_json([source]);
    summary["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// Where the local backend keeps pack `id`.
fn pack_path(workspace: &Workspace, id: &Id) -> PathBuf {
    let hex = id.to_hex();
    workspace.repo().join("data").join(&hex[..2]).join(hex)
}

/// Stores `bytes` as an object of the `index/` folder named by their hash,
/// as any writer of the repository could.
fn plant_index(workspace: &Workspace, bytes: &[u8]) -> Id {
    let id = Id::of(bytes);
    write(&workspace.repo().join("index").join(id.to_hex()), bytes);
    id
}

#[test]
fn finding_7_oversized_planted_index_is_skipped_not_read() {
    let workspace = Workspace::new();
    let source = workspace.path("src");
    write(&source.join("a.txt"), b"kept safe\n");
    backed_up(&workspace, &source);
    // 300 MiB, over the 256 MiB an index file may be; sparse, so planting
    // it costs no disk. Its name is not its hash: reading it whole would
    // only find that out after the 300 MiB.
    let planted = workspace.repo().join("index").join("ab".repeat(32));
    let file = fs::File::create(&planted).unwrap();
    file.set_len(300 << 20).unwrap();
    drop(file);

    let target = workspace.path("out");
    let run = workspace.restore("latest", &target).ok();
    assert!(
        run.stderr
            .contains(&format!("skipped index file {}", "ab".repeat(32)))
            && run
                .stderr
                .contains("314572800 bytes, more than the 268435456"),
        "the planted index file is named and skipped:\n{}",
        run.stderr
    );
    assert_same_tree(&source, &target.join("src"));

    // A key object over its 64 KiB does not stop the owner's backup.
    let planted_key = workspace.repo().join("keys").join("cd".repeat(32));
    let file = fs::File::create(&planted_key).unwrap();
    file.set_len(1 << 20).unwrap();
    drop(file);
    write(&source.join("b.txt"), b"backed up after the planting\n");
    workspace.backup_json([&source]);
    let target = workspace.path("again");
    workspace.restore("latest", &target).ok();
    assert_same_tree(&source, &target.join("src"));

    // The audit names both as damage, without reading them either.
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 4, "{}", brief(&report));
    assert!(
        findings(&report)
            .iter()
            .any(|finding| finding["kind"] == "corrupt-key"
                && finding["object"]
                    .as_str()
                    .is_some_and(|object| object.contains(&"cd".repeat(32)))),
        "{}",
        brief(&report)
    );
    let named = findings(&report).iter().any(|finding| {
        finding["kind"] == "corrupt-index"
            && finding["object"]
                .as_str()
                .is_some_and(|object| object.contains(&"ab".repeat(32)))
            && finding["message"]
                .as_str()
                .is_some_and(|message| message.contains("not read"))
    });
    assert!(named, "{}", brief(&report));
}

/// The sole-zstd tree blobs of the repository's packs: (pack, offset,
/// length, id).
fn sole_zstd_trees(workspace: &Workspace) -> Vec<(PathBuf, u64, u32, Id)> {
    let mut found = Vec::new();
    for pack in workspace.packs() {
        for blob in header_of(&pack).blobs {
            if blob.kind == BlobKind::Tree
                && blob.compression == Compression::Zstd
                && blob.frame_offset.is_none()
            {
                found.push((pack.clone(), blob.offset, blob.length, blob.id));
            }
        }
    }
    found
}

#[test]
fn finding_7_zstd_bomb_is_refused_before_allocation() {
    let workspace = Workspace::new();
    let source = workspace.path("src");
    // A directory of 900 empty files with long names: a tree blob of
    // well over 64 KiB, so its zstd frame declares its size in 4 bytes.
    for number in 0..900 {
        write(
            &source.join(format!("an-empty-file-with-a-long-name-{number:04}")),
            b"",
        );
    }
    backed_up(&workspace, &source);
    let trees = sole_zstd_trees(&workspace);
    let (pack, offset, _, tree) = trees
        .iter()
        .find(|(pack, offset, _, _)| {
            let bytes = fs::read(pack).unwrap();
            bytes[*offset as usize + 4] >> 6 == 2
        })
        .expect("a tree whose frame declares its size in 4 bytes")
        .clone();
    // The frame now declares 4 GiB - 1: a zstd bomb's header, in place.
    // Its size field follows the magic, the descriptor and, unless the
    // frame is a single segment, the window byte.
    let mut bytes = fs::read(&pack).unwrap();
    let single_segment = bytes[offset as usize + 4] & 0x20 != 0;
    let field = offset as usize + 5 + usize::from(!single_segment);
    bytes[field..field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&pack, &bytes).unwrap();

    let run = workspace.restore("latest", &workspace.path("out"));
    assert_ne!(run.code, 0, "{}", run.stdout);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains(&tree.to_string())
            && output.contains("declares 4294967295 bytes, the blob is recorded as"),
        "the tree and its lying frame are named:\n{output}"
    );
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 4, "{}", brief(&report));
    assert!(
        report.to_string().contains("declares 4294967295 bytes"),
        "{}",
        brief(&report)
    );
}

#[test]
fn finding_7_shared_frame_entry_is_bounded_by_its_frame() {
    let workspace = Workspace::new();
    let source = workspace.path("src");
    // A large compressible file: its chunks share the component's frames.
    let lines: String = (0..20_000)
        .map(|number| format!("line {number}: words that compress\n"))
        .collect();
    write(&source.join("lines.txt"), lines.as_bytes());
    backed_up(&workspace, &source);
    let (pack, entry) = workspace
        .packs()
        .into_iter()
        .find_map(|pack| {
            let entry = header_of(&pack)
                .blobs
                .into_iter()
                .find(|blob| blob.frame_offset.is_some())?;
            Some((id_of_file(&pack), entry))
        })
        .expect("a blob in a shared frame");
    // An index file that claims the blob's frame is 1 GiB long, for 12
    // bytes of content: listed at the real pack, said to be large enough.
    let mut lying = entry;
    lying.length = 1 << 30;
    lying.raw_length = 12;
    let size = lying.offset + u64::from(lying.length) + 4096;
    let planted = plant_index(
        &workspace,
        &IndexFile::new(vec![PackEntry {
            id: pack,
            size,
            blobs: vec![lying],
        }])
        .encode(),
    );

    let target = workspace.path("out");
    let run = workspace.restore("latest", &target).ok();
    assert!(
        run.stderr
            .contains(&format!("skipped index file {planted}"))
            && run.stderr.contains("implausible lengths"),
        "the planted index file is named and skipped:\n{}",
        run.stderr
    );
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn finding_7_deep_tree_is_refused() {
    // 1030 directories, one in another: deeper than the 1024 a reader
    // accepts. The backup leaves the levels past the limit out and says
    // so; what it stores restores.
    let workspace = Workspace::new();
    let source = workspace.path("src");
    let mut deep = source.clone();
    for _ in 0..1030 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    let kept: PathBuf = ["d"; 1024].iter().collect();
    write(&source.join(&kept).join("kept.txt"), b"at the limit\n");
    write(&deep.join("lost.txt"), b"past the limit\n");
    workspace.init_plaintext();
    let run = workspace.cairn_repo([std::ffi::OsStr::new("backup"), source.as_os_str()]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let too_deep: String = ["d"; 1025].join("/");
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains(&too_deep) && output.contains("1024 directories deep"),
        "the first level past the limit is named:\n{output}"
    );

    let target = workspace.path("out");
    workspace.restore("latest", &target).ok();
    let restored = target.join("src");
    assert_eq!(
        fs::read(restored.join(&kept).join("kept.txt")).unwrap(),
        b"at the limit\n"
    );
    assert!(!restored.join(&too_deep).exists());
}

#[test]
fn finding_10_verify_fails_on_a_damaged_pack_even_with_copies() {
    let workspace = Workspace::new();
    let source = workspace.path("src");
    write(&source.join("a.bin"), &noise(1, 300_000));
    write(&source.join("b.bin"), &noise(2, 300_000));
    let snapshot = backed_up(&workspace, &source);
    let [original] = &data_packs(&workspace.packs())[..] else {
        panic!("one data pack");
    };
    let original_id = id_of_file(original);

    // A second copy of every blob of that pack, in a pack of its own that
    // an index file lists: what two backups racing, or a repack's packs
    // before the old ones are deleted, leave behind.
    let bytes = fs::read(original).unwrap();
    let header = header_of(original);
    let mut writer = PackWriter::new();
    for run in by_stored_bytes(&header.blobs) {
        let first = run[0];
        let stored = &bytes[first.offset as usize..][..first.length as usize];
        if first.frame_offset.is_some() {
            let members: Vec<_> = run
                .iter()
                .map(|blob| (blob.kind, blob.id, blob.raw_length))
                .collect();
            writer.add_frame(&members, (first.compression, stored));
        } else {
            writer.add(
                first.kind,
                first.id,
                first.raw_length,
                first.compression,
                stored,
            );
        }
    }
    let (copy_id, copy_bytes, copy_entries) = writer.finish();
    write(&pack_path(&workspace, &copy_id), &copy_bytes);
    plant_index(
        &workspace,
        &IndexFile::new(vec![PackEntry {
            id: copy_id,
            size: copy_bytes.len() as u64,
            blobs: copy_entries,
        }])
        .encode(),
    );
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "two sound copies:\n{}", brief(&report));

    // The storage truncates the original.
    let file = fs::OpenOptions::new().write(true).open(original).unwrap();
    file.set_len(bytes.len() as u64 / 2).unwrap();
    drop(file);

    for args in [&[][..], &["--read-data"][..]] {
        let (code, report) = workspace.verify_json(args);
        assert_eq!(
            code,
            4,
            "{args:?}: damage, whatever the copies:\n{}",
            brief(&report)
        );
        assert_eq!(report["clean"], false);
        let damaged = findings(&report).iter().find(|finding| {
            finding["object"]
                .as_str()
                .is_some_and(|object| object.contains(&original_id.to_hex()))
        });
        let damaged =
            damaged.unwrap_or_else(|| panic!("{args:?}: names the pack:\n{}", brief(&report)));
        assert_eq!(damaged["severity"], "damage", "{damaged:#}");
        assert!(
            damaged["message"]
                .as_str()
                .unwrap()
                .contains("every snapshot is still restorable from other copies"),
            "{damaged:#}"
        );
        assert_eq!(report["damaged_snapshots"], serde_json::json!([]));
    }
    // The text says so too, and that a plain verify read no data.
    let run = workspace.cairn_repo(["verify"]).expect(4);
    assert!(
        run.stdout
            .contains("every snapshot is still restorable from other copies")
            && run.stdout.contains("read no data"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("no damage found"), "{}", run.stdout);
    let (_, report) = workspace.verify_json(&[]);
    assert!(
        report["data_check"]
            .as_str()
            .is_some_and(|said| said.starts_with("read no data")),
        "{report:#}"
    );
    // The snapshot itself still verifies whole from the copy.
    assert!(
        !report["damaged_snapshots"]
            .to_string()
            .contains(&snapshot[..8])
    );
}
