//! The operator's read-only questions (issue 27): what changed between two
//! nights or since the backup (`diff`), where a file is across snapshots
//! (`find`), how big things are and what a policy would free (`stats`,
//! `forget --dry-run`), and a component as an archive (`dump`), each
//! through the real binary on an encrypted repository.

mod common;
use common::*;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// `cairn --json backup --component src=SOURCE`; the snapshot's id.
fn night(workspace: &Workspace, source: &Path) -> String {
    let component = format!("src={}", source.display());
    workspace.backup_json(["--component", &component])["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// The change `diff --json` reports for `path`, if any.
fn change_of<'a>(diff: &'a Value, path: &str) -> Option<&'a Value> {
    diff["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|change| change["path"] == path)
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn diff_of_two_nights_names_added_removed_changed_and_metadata_only_files() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    write(&source.join("keep.txt"), b"the same every night");
    write(&source.join("change.txt"), b"first night");
    write(&source.join("remove.txt"), &noise(1, 3000));
    write(&source.join("perm.txt"), b"mode changes, content does not");
    write(&source.join("sub/deep.txt"), b"an untouched directory");
    let first = night(&workspace, &source);

    write(&source.join("change.txt"), b"second night, longer");
    fs::remove_file(source.join("remove.txt")).unwrap();
    write(&source.join("new.txt"), &noise(2, 1234));
    set_mode(&source.join("perm.txt"), 0o600);
    let second = night(&workspace, &source);

    let diff = workspace
        .cairn_repo(["--json", "diff", &first[..8], &second[..8]])
        .ok()
        .json();
    let added = change_of(&diff, "src/new.txt").expect("new.txt added");
    assert_eq!(added["change"], "added");
    assert_eq!(added["kind"], "file");
    assert_eq!(added["component"], "src");
    assert_eq!(added["new_size"], 1234);
    assert_eq!(added["old_size"], Value::Null);
    let removed = change_of(&diff, "src/remove.txt").expect("remove.txt removed");
    assert_eq!(removed["change"], "removed");
    assert_eq!(removed["old_size"], 3000);
    let changed = change_of(&diff, "src/change.txt").expect("change.txt changed");
    assert_eq!(changed["change"], "changed");
    assert_eq!(changed["old_size"], 11);
    assert_eq!(changed["new_size"], 20);
    let metadata = change_of(&diff, "src/perm.txt").expect("perm.txt metadata");
    assert_eq!(metadata["change"], "metadata");
    assert_eq!(metadata["fields"], serde_json::json!(["mode"]));
    assert!(change_of(&diff, "src/keep.txt").is_none(), "{diff:#}");
    assert!(change_of(&diff, "src/sub/deep.txt").is_none(), "{diff:#}");
    assert_eq!(diff["changes"].as_array().unwrap().len(), 4, "{diff:#}");
    let totals = &diff["totals"];
    assert_eq!(totals["added_files"], 1);
    assert_eq!(totals["added_bytes"], 1234);
    assert_eq!(totals["removed_files"], 1);
    assert_eq!(totals["removed_bytes"], 3000);
    assert_eq!(totals["changed_files"], 1);
    assert_eq!(totals["metadata_only"], 1);
    // The two root trees differ and are read; `sub` is the same tree in
    // both snapshots and is not read at all.
    assert_eq!(diff["trees_read"], 2, "{diff:#}");

    let text = workspace.cairn_repo(["diff", &first, "latest"]).ok().stdout;
    for line in [
        "+ src/new.txt",
        "- src/remove.txt",
        "M src/change.txt",
        "U src/perm.txt  (mode)",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
}

#[test]
fn diff_against_the_live_directory_shows_what_changed_since_the_backup() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    write(&source.join("grows.log"), b"line one\n");
    write(&source.join("touched.txt"), b"same bytes, new mtime");
    write(&source.join("quiet/still.txt"), b"nothing happens here");
    night(&workspace, &source);

    write(&source.join("grows.log"), b"line one\nline two\n");
    let touched = source.join("touched.txt");
    filetime::set_file_mtime(&touched, filetime::FileTime::from_unix_time(1_000_000, 0)).unwrap();
    write(&source.join("fresh.txt"), b"written after the backup");

    // The component is found by the path it was backed up from.
    let live = source.display().to_string();
    let diff = workspace
        .cairn_repo(["--json", "diff", "latest", "--live", &live])
        .ok()
        .json();
    assert_eq!(diff["newer"], Value::Null);
    assert_eq!(diff["live"]["component"], "src");
    assert_eq!(
        change_of(&diff, "src/grows.log").unwrap()["change"],
        "changed"
    );
    let touched_change = change_of(&diff, "src/touched.txt").unwrap();
    assert_eq!(touched_change["change"], "metadata", "{diff:#}");
    assert_eq!(touched_change["fields"], serde_json::json!(["mtime"]));
    assert_eq!(
        change_of(&diff, "src/fresh.txt").unwrap()["change"],
        "added"
    );
    assert_eq!(diff["changes"].as_array().unwrap().len(), 3, "{diff:#}");

    // Named explicitly, and against another directory: the missing file
    // is removed there.
    let elsewhere = workspace.path("elsewhere");
    write(&elsewhere.join("grows.log"), b"line one\n");
    let named = format!("src={}", elsewhere.display());
    let diff = workspace
        .cairn_repo(["--json", "diff", "latest", "--live", &named])
        .ok()
        .json();
    assert_eq!(
        change_of(&diff, "src/touched.txt").unwrap()["change"],
        "removed"
    );
    assert_eq!(change_of(&diff, "src/quiet").unwrap()["change"], "removed");
    assert_eq!(
        change_of(&diff, "src/quiet/still.txt").unwrap()["change"],
        "removed"
    );
}

#[test]
fn find_matches_names_and_paths_newest_snapshot_first() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    write(&source.join("notes/a.md"), b"first");
    write(&source.join("b.txt"), b"not markdown");
    let older = night(&workspace, &source);
    write(&source.join("notes/a.md"), b"first, edited");
    write(&source.join("notes/deeper/c.md"), b"another note");
    let newer = night(&workspace, &source);

    let found = workspace.cairn_repo(["--json", "find", "*.md"]).ok().json();
    let listed: Vec<(String, String, u64)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["snapshot"].as_str().unwrap().to_string(),
                item["path"].as_str().unwrap().to_string(),
                item["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (newer.clone(), "src/notes/a.md".to_string(), 13),
            (newer.clone(), "src/notes/deeper/c.md".to_string(), 12),
            (older.clone(), "src/notes/a.md".to_string(), 5),
        ]
    );
    let mtime = fs::metadata(source.join("notes/deeper/c.md"))
        .unwrap()
        .mtime();
    assert_eq!(found[1]["mtime"], mtime);

    // With a `/` the glob is on the whole path, and `*` stops at `/`.
    let on_path = workspace
        .cairn_repo(["--json", "find", "src/notes/*.md"])
        .ok()
        .json();
    assert_eq!(on_path.as_array().unwrap().len(), 2, "{on_path:#}");
    let deep = workspace
        .cairn_repo(["--json", "find", "src/**/c.md"])
        .ok()
        .json();
    assert_eq!(deep.as_array().unwrap().len(), 1, "{deep:#}");

    let text = workspace.cairn_repo(["find", "b.txt"]).ok().stdout;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().next().unwrap().starts_with(&newer[..8]));
    let bad = workspace.cairn_repo(["find", "a[b"]).expect(2);
    assert!(bad.stderr.contains("a[b"), "{}", bad.stderr);
}

/// Two nights: the first holds `gone.bin` (100 000 incompressible bytes)
/// that the second does not; the second holds `new.bin` (60 000) that the
/// first does not; both hold `both.txt` (5 000 compressible bytes).
fn two_nights(workspace: &Workspace) -> (String, String) {
    workspace.init();
    let source = workspace.path("src");
    write(&source.join("gone.bin"), &noise(10, 100_000));
    let text = "compressible text ".repeat(278);
    write(&source.join("both.txt"), &text.as_bytes()[..5000]);
    let first = night(workspace, &source);
    fs::remove_file(source.join("gone.bin")).unwrap();
    write(&source.join("new.bin"), &noise(11, 60_000));
    let second = night(workspace, &source);
    (first, second)
}

/// Stored bytes of a blob set holding `raw` incompressible bytes plus a
/// tree or two: at least those bytes, and not much more (per-chunk
/// sealing, the trees).
fn about(stored: &Value, raw: u64) {
    let stored = stored.as_u64().expect("a byte count");
    assert!(
        (raw..raw + 4000).contains(&stored),
        "{stored} stored bytes for {raw} bytes of noise"
    );
}

#[test]
fn stats_count_logical_bytes_and_the_bytes_only_one_snapshot_holds() {
    let workspace = Workspace::new();
    let (first, second) = two_nights(&workspace);

    let repository = workspace.cairn_repo(["--json", "stats"]).ok().json();
    assert_eq!(repository["snapshots"], 2);
    // Logical bytes are the sum of file sizes over both snapshots.
    assert_eq!(repository["logical_bytes"], 105_000 + 65_000);
    let packs = workspace.packs();
    assert_eq!(repository["packs"], packs.len());
    let pack_bytes: u64 = packs
        .iter()
        .map(|pack| fs::metadata(pack).unwrap().len())
        .sum();
    assert_eq!(repository["stored_bytes"], pack_bytes);
    assert!(repository["compression_ratio"].as_f64().unwrap() > 1.0);
    // 170 000 logical bytes held in 165 000 raw bytes of data.
    let dedup = repository["deduplication_ratio"].as_f64().unwrap();
    assert!((1.02..1.04).contains(&dedup), "{repository:#}");
    let component = &repository["components"][0];
    assert_eq!(component["name"], "src");
    assert_eq!(component["snapshots"], 2);
    assert_eq!(component["logical_bytes"], 170_000);
    // The only component: everything is its own.
    assert_eq!(component["unique"], component["referenced"]);

    let second_stats = workspace
        .cairn_repo(["--json", "stats", &second[..8]])
        .ok()
        .json();
    assert_eq!(second_stats["snapshot"], second.as_str());
    assert_eq!(second_stats["restore"]["files"], 2);
    assert_eq!(second_stats["restore"]["bytes"], 65_000);
    about(&second_stats["unique"]["stored_bytes"], 60_000);
    let first_stats = workspace
        .cairn_repo(["--json", "stats", &first[..8]])
        .ok()
        .json();
    about(&first_stats["unique"]["stored_bytes"], 100_000);

    let text = workspace.cairn_repo(["stats"]).ok().stdout;
    assert!(text.contains("deduplication:"), "{text}");
}

#[test]
fn forget_dry_run_and_stats_of_a_policy_say_what_it_would_free() {
    let workspace = Workspace::new();
    let (first, _) = two_nights(&workspace);
    let only_first = workspace
        .cairn_repo(["--json", "stats", &first[..8]])
        .ok()
        .json();

    let policy = workspace
        .cairn_repo(["--json", "stats", "--keep-last", "1"])
        .ok()
        .json();
    assert_eq!(policy["forgotten"], serde_json::json!([first.as_str()]));
    assert_eq!(policy["would_free"], only_first["unique"]);
    about(&policy["would_free"]["stored_bytes"], 100_000);

    let dry_run = workspace
        .cairn_repo(["--json", "forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .json();
    assert_eq!(dry_run["would_free"], only_first["unique"]);
    let text = workspace
        .cairn_repo(["forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .stdout;
    let stored = only_first["unique"]["stored_bytes"].as_u64().unwrap();
    assert!(
        text.contains("a prune would then free up to")
            && text.contains(&format!("({stored} stored")),
        "{text}"
    );
    // Nothing was forgotten.
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(
        listed["snapshots"].as_array().map(Vec::len),
        Some(2),
        "{listed:#}"
    );
}

/// A source with modes, whole-second mtimes, a subdirectory and a symlink,
/// as tar and zip can carry them.
fn archive_source(workspace: &Workspace) -> std::path::PathBuf {
    let source = workspace.path("src");
    write(&source.join("big.bin"), &noise(20, 150_000));
    write(&source.join("script.sh"), b"#!/bin/sh\necho hi\n");
    set_mode(&source.join("script.sh"), 0o750);
    write(&source.join("sub/inner.txt"), b"inside");
    write(&source.join("empty"), b"");
    std::os::unix::fs::symlink("sub/inner.txt", source.join("link")).unwrap();
    for (path, second) in [
        ("big.bin", 1_600_000_000),
        ("script.sh", 1_600_000_100),
        ("sub/inner.txt", 1_600_000_200),
        ("empty", 1_600_000_300),
        ("sub", 1_600_000_400),
    ] {
        filetime::set_file_mtime(
            source.join(path),
            filetime::FileTime::from_unix_time(second, 0),
        )
        .unwrap();
    }
    filetime::set_file_mtime(
        &source,
        filetime::FileTime::from_unix_time(1_600_000_500, 0),
    )
    .unwrap();
    source
}

#[test]
fn dump_as_tar_round_trips_through_the_system_tar() {
    let workspace = Workspace::new();
    workspace.init();
    let source = archive_source(&workspace);
    night(&workspace, &source);

    let archive = workspace.path("src.tar");
    let run = workspace
        .cairn_repo(["dump", "latest", "src", "--output"])
        .expect(2);
    assert!(run.stderr.contains("--output"), "{}", run.stderr);
    let archive_arg = archive.display().to_string();
    let run = workspace
        .cairn_repo(["--json", "dump", "latest", "src", "--output", &archive_arg])
        .ok()
        .json();
    assert_eq!(run["files"], 4);
    assert_eq!(run["bytes"], 150_000 + 18 + 6);
    let out = workspace.path("out");
    fs::create_dir(&out).unwrap();
    let tar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    assert_same_tree(&source, &out.join("src"));

    // A directory inside the component, streamed to stdout into tar.
    let streamed = workspace
        .command()
        .args(["--repo"])
        .arg(workspace.repo())
        .args(["dump", "latest", "src/sub"])
        .output()
        .unwrap();
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    let listing = Command::new("tar")
        .arg("-tf")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&streamed.stdout)?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "src/sub/\nsrc/sub/inner.txt\n"
    );
}

#[test]
fn dump_as_zip_extracts_with_pythons_zipfile() {
    let workspace = Workspace::new();
    workspace.init();
    let source = archive_source(&workspace);
    night(&workspace, &source);
    let archive = workspace.path("src.zip");
    let dumped = workspace
        .command()
        .args(["--repo"])
        .arg(workspace.repo())
        .args(["dump", "latest", "src", "--format", "zip"])
        .output()
        .unwrap();
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    fs::write(&archive, &dumped.stdout).unwrap();
    let out = workspace.path("out");
    let python = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             assert z.testzip() is None\n\
             z.extractall(sys.argv[2])\n\
             for i in z.infolist(): print(i.filename, oct(i.external_attr >> 16 & 0o7777))\n",
        )
        .arg(&archive)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    let listing = String::from_utf8_lossy(&python.stdout);
    assert!(listing.contains("src/script.sh 0o750"), "{listing}");
    for file in ["big.bin", "script.sh", "sub/inner.txt", "empty"] {
        assert_eq!(
            fs::read(out.join("src").join(file)).unwrap(),
            fs::read(source.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn dump_of_a_corrupted_chunk_exits_4_naming_the_file_and_leaves_no_archive() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    write(&source.join("big.bin"), &noise(30, 150_000));
    night(&workspace, &source);
    // The data pack is the largest; its middle lies inside a chunk.
    let pack = workspace
        .packs()
        .into_iter()
        .max_by_key(|pack| fs::metadata(pack).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();

    let archive = workspace.path("out.tar");
    let archive_arg = archive.display().to_string();
    let run = workspace
        .cairn_repo(["dump", "latest", "src", "--output", &archive_arg])
        .expect(4);
    assert!(run.stderr.contains("src/big.bin"), "{}", run.stderr);
    assert!(!archive.exists(), "a failed dump leaves no archive");
    assert!(
        fs::read_dir(workspace.path(""))
            .unwrap()
            .flatten()
            .all(|entry| !entry
                .file_name()
                .to_string_lossy()
                .starts_with(".cairn-dump-")),
        "no partial archive left behind"
    );
    let streamed = workspace
        .command()
        .args(["--repo"])
        .arg(workspace.repo())
        .args(["dump", "latest", "src", "--format", "zip"])
        .output()
        .unwrap();
    assert_eq!(streamed.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&streamed.stderr).contains("src/big.bin"));
}
