//! Restoring into a target that already holds something: identical files
//! are left alone, changed ones are rebuilt from what they still share with
//! the snapshot, extras go only with `--delete`, globs and component targets
//! pick what is written where, a killed or failed restore never leaves a
//! half-written file, a safety snapshot makes every restore undoable, and
//! the preflight verdicts refuse what should not be restored.

mod common;
use common::*;

use cairn_store::Id;
use cairn_store::format::index::IndexFile;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------- helpers

/// `cairn --repo REPO --json backup ARGS...`; returns the snapshot's id.
fn backup<S: Into<OsString> + Clone>(workspace: &Workspace, args: &[S]) -> String {
    let args: Vec<OsString> = args.iter().cloned().map(Into::into).collect();
    workspace.backup_json(args)["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// Backs up each (name, path) as a component; returns the snapshot's id.
fn backup_components(workspace: &Workspace, components: &[(&str, &Path)]) -> String {
    let args: Vec<OsString> = components
        .iter()
        .flat_map(|(name, path)| {
            [
                OsString::from("--component"),
                format!("{name}={}", path.display()).into(),
            ]
        })
        .collect();
    backup(workspace, &args)
}

/// `cairn --repo REPO --json restore SNAPSHOT --target TARGET EXTRA...`
fn restore(workspace: &Workspace, snapshot: &str, target: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<OsString> = vec![
        "--json".into(),
        "restore".into(),
        snapshot.into(),
        "--target".into(),
        target.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    workspace.cairn_repo(args)
}

/// Each snapshot as (id, tags, labels), oldest first.
fn snapshots(workspace: &Workspace) -> Vec<(String, Vec<String>, Value)> {
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    listed["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|snapshot| {
            let tags = snapshot["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|tag| tag.as_str().expect("tag").to_string())
                .collect();
            (
                snapshot["id"].as_str().expect("id").to_string(),
                tags,
                snapshot["labels"].clone(),
            )
        })
        .collect()
}

/// The status of the verdict of `check` (`signature`, `age`, `chunks`).
fn verdict<'a>(report: &'a Value, check: &str) -> &'a str {
    report["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|verdict| verdict["check"] == check)
        .unwrap_or_else(|| panic!("no {check} verdict: {report:#}"))["status"]
        .as_str()
        .expect("status")
}

/// What one path is: kind, permission bits, mtime, and content hash or
/// symlink target.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    content: String,
}

/// Paths (relative to some root) and what they are.
type State = BTreeMap<PathBuf, Node>;

/// Everything below `root` (relative paths), as [`Node`]s.
fn state(root: &Path) -> State {
    walk(root)
        .into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).expect("stat");
            let (kind, content) = if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("read link");
                ("symlink", target.display().to_string())
            } else if meta.is_dir() {
                ("directory", String::new())
            } else {
                ("file", file_hash(&path).to_hex().to_string())
            };
            let node = Node {
                kind,
                mode: meta.mode() & 0o7777,
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content,
            };
            (
                path.strip_prefix(root).expect("below root").to_path_buf(),
                node,
            )
        })
        .collect()
}

/// Panics listing every path whose [`Node`] differs between two states.
fn assert_same_state(expected: &State, actual: &State, what: &str) {
    let paths: BTreeSet<&PathBuf> = expected.keys().chain(actual.keys()).collect();
    let differences: Vec<String> = paths
        .into_iter()
        .filter(|path| expected.get(*path) != actual.get(*path))
        .map(|path| {
            format!(
                "  {}:\n    expected {:?}\n    actual   {:?}",
                path.display(),
                expected.get(path),
                actual.get(path)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{what}: {} path(s) differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// (inode, mtime, ctime) of `root` and of everything below it.
fn stamps(root: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, i64, i64)> {
    std::iter::once(root.to_path_buf())
        .chain(walk(root))
        .map(|path| {
            let meta = fs::symlink_metadata(&path).expect("stat");
            let stamp = (
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec(),
            );
            (path, stamp)
        })
        .collect()
}

/// Relative paths below `root`, `/`-separated.
fn relative_paths(root: &Path) -> BTreeSet<String> {
    walk(root)
        .into_iter()
        .map(|path| {
            path.strip_prefix(root)
                .expect("below root")
                .to_str()
                .expect("utf-8 path")
                .to_string()
        })
        .collect()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A small tree with nested and empty directories, a symlink and a few modes.
fn sample_tree(root: &Path) {
    write(&root.join("readme.txt"), b"read me first\n");
    write(&root.join("data/a.bin"), &noise(1, 300 * KIB));
    write(&root.join("data/b.bin"), &noise(2, 70 * KIB));
    write(&root.join("data/deep/c.bin"), &noise(3, 150 * KIB));
    write(&root.join("tools/run.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&root.join("tools/run.sh"), 0o755);
    write(&root.join("private.txt"), b"secret-ish\n");
    chmod(&root.join("private.txt"), 0o600);
    fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("data/a.bin", root.join("link-to-a")).unwrap();
}

/// Packs in the repository that are not in `before`.
fn new_packs(workspace: &Workspace, before: &[PathBuf]) -> Vec<PathBuf> {
    workspace
        .packs()
        .into_iter()
        .filter(|pack| !before.contains(pack))
        .collect()
}

// ---------------------------------------------------------------- 1

#[test]
fn restoring_over_an_identical_target_touches_nothing() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    let snapshot = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target, &[]).ok();
    assert_same_tree(&source, &target.join("src"));

    let before = stamps(&target);
    let snapshots_before = snapshots(&workspace);
    let report = restore(&workspace, &snapshot, &target, &[]).ok().json();
    assert_eq!(report["files_written"], 0, "{report:#}");
    assert_eq!(report["bytes_written"], 0, "{report:#}");
    assert_eq!(report["chunks_fetched"], 0, "{report:#}");
    assert_eq!(report["bytes_fetched"], 0, "{report:#}");
    assert_eq!(report["deleted"], 0, "{report:#}");
    let totals = &report["totals"];
    for count in ["create", "update", "metadata", "delete", "bytes_to_fetch"] {
        assert_eq!(totals[count], 0, "totals.{count}: {report:#}");
    }
    assert!(totals["unchanged"].as_u64().unwrap() >= 9, "{report:#}");
    assert_eq!(
        report["components"][0]["entries"],
        serde_json::json!([]),
        "{report:#}"
    );
    // Nothing was overwritten, so there is nothing to save or undo.
    assert_eq!(report["safety_snapshot"], Value::Null, "{report:#}");
    assert_eq!(report["undo_command"], Value::Null, "{report:#}");
    assert_eq!(snapshots(&workspace), snapshots_before);

    let after = stamps(&target);
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, stamp)| after.get(*path) != Some(stamp))
        .map(|(path, stamp)| format!("{}: {stamp:?} -> {:?}", path.display(), after.get(path)))
        .collect();
    assert!(
        changed.is_empty(),
        "inode, mtime or ctime changed:\n{}",
        changed.join("\n")
    );
    assert_eq!(before.len(), after.len(), "the same paths");
}

// ---------------------------------------------------------------- 2

#[test]
fn progress_ends_at_its_totals_when_chunks_repeat_and_directories_exist() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    // Zeros and a repeated block: the same chunk is written many times, but
    // fetched, and counted by the plan, once.
    write(&source.join("zeros.img"), &vec![0u8; 3 * MIB]);
    write(
        &source.join("a/b/repeated.bin"),
        &noise(7, 64 * KIB).repeat(40),
    );
    write(&source.join("a/note.md"), b"# a note\n");
    write(&source.join("c/empty"), b"");
    let snapshot = backup(&workspace, &[&source]);
    let run = restore(&workspace, &snapshot, &workspace.path("out"), &[]).ok();
    let last = run
        .stderr
        .lines()
        .rfind(|line| line.starts_with('{'))
        .expect("a progress line");
    let last: Value = serde_json::from_str(last).expect("progress line is JSON");
    let progress = &last["progress"];
    let bytes = (3 * MIB + 40 * 64 * KIB + 9) as u64;
    assert_eq!(progress["files_done"], 4, "{}", run.stderr);
    assert_eq!(progress["files_total"], 4, "{}", run.stderr);
    assert_eq!(progress["bytes_done"], bytes, "{}", run.stderr);
    assert_eq!(progress["bytes_total"], bytes, "{}", run.stderr);
}

#[test]
fn one_changed_byte_in_a_large_file_fetches_only_the_chunks_around_it() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    let mut big = noise(20, 20 * MIB);
    write(&source.join("big.bin"), &big);
    write(&source.join("small.txt"), b"small and unchanged\n");
    let first = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &first, &target, &[]).ok();

    big[11 * MIB + 12_345] ^= 0x80;
    write(&source.join("big.bin"), &big);
    let second = backup(&workspace, &[&source]);

    let run = restore(&workspace, &second, &target, &[]).ok();
    let report = run.json();
    // Progress goes to stderr as JSON lines; the last one says it all.
    let progress: Vec<Value> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str::<Value>(line).expect("progress line is JSON"))
        .collect();
    let last = &progress.last().expect("a progress line")["progress"];
    assert_eq!(last["files_done"], 1, "{}", run.stderr);
    assert_eq!(last["files_total"], 1, "{}", run.stderr);
    assert_eq!(last["bytes_done"], 20 * MIB, "{}", run.stderr);
    assert_eq!(last["bytes_total"], 20 * MIB, "{}", run.stderr);
    let entries = report["components"][0]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only big.bin changes: {report:#}");
    assert_eq!(entries[0]["path"], "big.bin");
    assert_eq!(entries[0]["action"], "update");
    assert!(
        entries[0]["fetch_bytes"].as_u64().unwrap() <= 2 * 64 * KIB as u64,
        "{report:#}"
    );
    assert_eq!(report["files_written"], 1, "{report:#}");
    let chunks_fetched = report["chunks_fetched"].as_u64().unwrap();
    let bytes_fetched = report["bytes_fetched"].as_u64().unwrap();
    let bytes_reused = report["bytes_reused"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&chunks_fetched),
        "chunks fetched: {chunks_fetched}\n{report:#}"
    );
    assert!(
        bytes_fetched < 256 * KIB as u64,
        "bytes fetched: {bytes_fetched}\n{report:#}"
    );
    assert!(
        bytes_reused >= 19 * MIB as u64,
        "bytes reused: {bytes_reused}\n{report:#}"
    );
    assert_eq!(report["bytes_written"], 20 * MIB, "{report:#}");
    assert_same_tree(&source, &target.join("src"));
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------- 3

#[test]
fn delete_removes_the_extras_of_the_selected_component_and_nothing_else() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let (a, b) = (workspace.path("a"), workspace.path("b"));
    sample_tree(&a);
    write(&b.join("b.txt"), b"component b\n");
    let snapshot = backup_components(&workspace, &[("a", &a), ("b", &b)]);
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target, &[]).ok();

    // Extras inside component a, in component b, and beside both.
    let extras_in_a = ["extra.txt", "data/extra2.bin", "extra-dir"];
    write(&target.join("a/extra.txt"), b"extra");
    write(&target.join("a/data/extra2.bin"), &noise(9, 10 * KIB));
    write(&target.join("a/extra-dir/nested/x.txt"), b"x");
    write(&target.join("a/extra-dir/y.txt"), b"y");
    write(&target.join("b/extra-b.txt"), b"extra in b");
    write(&target.join("outside.txt"), b"not in any component");
    // And a change to a file the snapshot has, which is restored either way.
    write(&target.join("a/readme.txt"), b"edited\n");

    // Without --delete the extras stay.
    let report = restore(&workspace, &snapshot, &target, &["--only", "a"])
        .ok()
        .json();
    assert_eq!(report["totals"]["delete"], 0, "{report:#}");
    assert_eq!(report["deleted"], 0, "{report:#}");
    assert_eq!(report["components"][0]["delete"], serde_json::json!([]));
    for extra in [
        "a/extra.txt",
        "a/data/extra2.bin",
        "a/extra-dir/nested/x.txt",
        "a/extra-dir/y.txt",
    ] {
        assert!(target.join(extra).exists(), "{extra} kept without --delete");
    }
    assert_eq!(
        fs::read(target.join("a/readme.txt")).unwrap(),
        b"read me first\n"
    );

    // With --delete, exactly the extras of a go.
    write(&target.join("a/readme.txt"), b"edited again\n");
    let b_before = state(&target.join("b"));
    let outside_before = fs::symlink_metadata(target.join("outside.txt")).unwrap();
    let report = restore(&workspace, &snapshot, &target, &["--only", "a", "--delete"])
        .ok()
        .json();
    let planned: BTreeSet<&str> = report["components"][0]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|path| path.as_str().unwrap())
        .collect();
    assert_eq!(planned, BTreeSet::from(extras_in_a), "{report:#}");
    assert_eq!(report["totals"]["delete"], 3, "{report:#}");
    assert_eq!(report["deleted"], 3, "{report:#}");
    assert_same_tree(&a, &target.join("a"));
    assert_same_state(&b_before, &state(&target.join("b")), "component b");
    assert_eq!(
        fs::read(target.join("b/extra-b.txt")).unwrap(),
        b"extra in b"
    );
    let outside_after = fs::symlink_metadata(target.join("outside.txt")).unwrap();
    assert_eq!(
        (outside_before.ino(), outside_before.ctime_nsec()),
        (outside_after.ino(), outside_after.ctime_nsec())
    );
    assert_eq!(
        fs::read(target.join("outside.txt")).unwrap(),
        b"not in any component"
    );
}

// ---------------------------------------------------------------- 4

#[test]
fn include_exclude_and_component_target_restore_exactly_the_selected_paths() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let (a, b) = (workspace.path("a"), workspace.path("b"));
    for (name, seed) in [
        ("notes/one.txt", 1),
        ("notes/deep/two.txt", 2),
        ("readme.md", 3),
        ("changes.md", 4),
        ("docs/guide.txt", 5),
        ("cache/blob.bin", 6),
        ("cache/sub/x.bin", 7),
        ("main.rs", 8),
    ] {
        write(&a.join(name), &noise(seed, 5 * KIB));
    }
    write(&b.join("b.txt"), b"component b\n");
    let snapshot = backup_components(&workspace, &[("a", &a), ("b", &b)]);
    let everything = relative_paths(&a);
    let without = |gone: &[&str]| -> BTreeSet<String> {
        everything
            .iter()
            .filter(|path| !gone.contains(&path.as_str()))
            .cloned()
            .collect()
    };
    let set = |paths: &[&str]| -> BTreeSet<String> {
        paths.iter().map(|path| path.to_string()).collect()
    };
    let notes = ["notes", "notes/one.txt", "notes/deep", "notes/deep/two.txt"];
    let cases: Vec<(Vec<&str>, BTreeSet<String>)> = vec![
        (vec!["--include", "notes/**"], set(&notes)),
        (vec!["--include", "*.md"], set(&["readme.md", "changes.md"])),
        (
            vec!["--include", "notes/**", "--include", "*.md"],
            set(&[&notes[..], &["readme.md", "changes.md"]].concat()),
        ),
        // `cache/**` matches what is below cache, not cache itself.
        (
            vec!["--exclude", "cache/**"],
            without(&["cache/blob.bin", "cache/sub", "cache/sub/x.bin"]),
        ),
        (
            vec!["--exclude", "cache"],
            without(&["cache", "cache/blob.bin", "cache/sub", "cache/sub/x.bin"]),
        ),
    ];
    for (number, (flags, expected)) in cases.iter().enumerate() {
        let target = workspace.path(&format!("out-{number}"));
        let mut args = vec!["--only", "a"];
        args.extend(flags);
        let report = restore(&workspace, &snapshot, &target, &args).ok().json();
        assert_eq!(
            relative_paths(&target.join("a")),
            *expected,
            "restore {flags:?}: {report:#}"
        );
        assert!(!target.join("b").exists(), "{flags:?}: --only a");
        for path in expected {
            let restored = target.join("a").join(path);
            if restored.is_file() {
                assert_eq!(
                    file_hash(&restored),
                    file_hash(&a.join(path)),
                    "{flags:?}: {path}"
                );
            }
        }
        assert_eq!(
            report["totals"]["create"].as_u64().unwrap(),
            expected.len() as u64,
            "{flags:?}: {report:#}"
        );
    }

    // --component-target lands a in its own directory; b goes to TARGET/b.
    let target = workspace.path("out-elsewhere");
    let elsewhere = workspace.path("somewhere/else/a-here");
    let spec = format!("a={}", elsewhere.display());
    let report = restore(
        &workspace,
        &snapshot,
        &target,
        &["--component-target", &spec],
    )
    .ok()
    .json();
    let destinations: BTreeMap<&str, &str> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["destination"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(destinations["a"], elsewhere.to_str().unwrap());
    assert_eq!(destinations["b"], target.join("b").to_str().unwrap());
    assert_same_tree(&a, &elsewhere);
    assert_same_tree(&b, &target.join("b"));
    assert!(!target.join("a").exists(), "a is not also in TARGET/a");
}

// ---------------------------------------------------------------- 5

/// When to kill a restore.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// As soon as the first temporary file appears.
    FirstTemporary,
    /// As soon as one of the files has been replaced (has a new inode).
    FirstReplaced,
}

/// `cairn --repo REPO restore SNAPSHOT --target TARGET`, started in the
/// background with its output discarded.
fn spawn_restore(workspace: &Workspace, snapshot: &str, target: &Path) -> std::process::Child {
    workspace
        .command()
        .arg("--repo")
        .arg(workspace.repo())
        .arg("restore")
        .arg(snapshot)
        .arg("--target")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn restore")
}

/// `cairn --repo REPO restore SNAPSHOT --target TARGET` in the background,
/// SIGKILLed at `moment`. Panics unless the kill is what ended it.
fn kill_restore_at(workspace: &Workspace, snapshot: &str, target: &Path, moment: Moment) {
    let component = target.join("src");
    let inodes = |paths: &[PathBuf]| -> Vec<u64> {
        paths
            .iter()
            .map(|path| {
                fs::symlink_metadata(path)
                    .map(|meta| meta.ino())
                    .unwrap_or(0)
            })
            .collect()
    };
    let files: Vec<PathBuf> = walk(&component)
        .into_iter()
        .filter(|path| path.is_file() && !is_temporary(path))
        .collect();
    let inodes_before = inodes(&files);
    let mut child = spawn_restore(workspace, snapshot, target);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reached = false;
    while !reached && Instant::now() < deadline && child.try_wait().expect("poll").is_none() {
        reached = match moment {
            Moment::FirstTemporary => !leftover_temporaries(&component).is_empty(),
            Moment::FirstReplaced => inodes(&files) != inodes_before,
        };
        if !reached {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if child.try_wait().expect("poll child").is_none() {
        child.kill().expect("SIGKILL");
    }
    let status = child.wait().expect("reap child");
    assert!(
        reached && status.signal() == Some(libc::SIGKILL),
        "the restore was killed at {moment:?} (reached: {reached}, status {status:?})"
    );
}

#[test]
fn a_restore_killed_mid_way_leaves_whole_files_and_a_rerun_finishes_it() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    let names: Vec<String> = (0..6).map(|n| format!("file-{n}.bin")).collect();
    for (n, name) in names.iter().enumerate() {
        write(&source.join(name), &noise(100 + n as u64, 8 * MIB));
    }
    let old = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &old, &target, &[]).ok();
    let old_hashes: Vec<blake3::Hash> = names
        .iter()
        .map(|name| file_hash(&source.join(name)))
        .collect();

    for (n, name) in names.iter().enumerate() {
        write(&source.join(name), &noise(200 + n as u64, 8 * MIB));
    }
    let new = backup(&workspace, &[&source]);
    let new_hashes: Vec<blake3::Hash> = names
        .iter()
        .map(|name| file_hash(&source.join(name)))
        .collect();

    let mut fresh = 0;
    for moment in [Moment::FirstTemporary, Moment::FirstReplaced] {
        kill_restore_at(&workspace, &new, &target, moment);
        // Right after the kill: every file is wholly old or wholly new, and
        // nothing but temporaries is there besides them.
        fresh = 0;
        for (n, name) in names.iter().enumerate() {
            let hash = file_hash(&target.join("src").join(name));
            assert!(
                hash == old_hashes[n] || hash == new_hashes[n],
                "{moment:?}: {name} is neither the old nor the new version"
            );
            fresh += usize::from(hash == new_hashes[n]);
        }
        let visible: BTreeSet<String> = relative_paths(&target.join("src"))
            .into_iter()
            .filter(|path| !path.starts_with(".cairn-restore-"))
            .collect();
        assert_eq!(visible, names.iter().cloned().collect::<BTreeSet<_>>());
        eprintln!(
            "killed at {moment:?} with {fresh} of {} files new",
            names.len()
        );
    }
    assert!(fresh >= 1, "the second kill came after a file was replaced");

    let report = restore(&workspace, &new, &target, &[]).ok().json();
    assert_eq!(
        report["files_written"].as_u64().unwrap(),
        (names.len() - fresh) as u64,
        "the re-run skips what the killed runs finished: {report:#}"
    );
    assert_same_tree(&source, &target.join("src"));
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
}

/// A component restored where nothing exists yet is built in a staging
/// directory beside its destination and renamed into place whole: killed
/// while the staging directory fills, the target shows nothing of the
/// component; a rerun removes the leftover and restores all of it, with
/// its directories' and its own metadata.
#[test]
fn a_new_component_appears_whole_or_not_at_all_and_a_rerun_clears_what_a_kill_left() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    for n in 0..600 {
        write(
            &source.join(format!("d{}/f-{n}.json", n % 6)),
            &noise(n, 12 * KIB),
        );
    }
    for n in 0..4 {
        write(
            &source.join(format!("big-{n}.bin")),
            &noise(900 + n, 6 * MIB),
        );
    }
    std::os::unix::fs::symlink("d0/f-0.json", source.join("link")).expect("symlink");
    fs::create_dir(source.join("empty")).expect("empty dir");
    chmod(&source.join("d1"), 0o750);
    chmod(&source, 0o751);
    let snapshot = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    fs::create_dir(&target).expect("target");

    let mut child = spawn_restore(&workspace, &snapshot, &target);
    // Killed once the staging directory holds a written file.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut staged_file = None;
    while staged_file.is_none()
        && Instant::now() < deadline
        && child.try_wait().expect("poll").is_none()
    {
        staged_file = leftover_temporaries(&target)
            .into_iter()
            .flat_map(|staging| walk(&staging))
            .find(|path| {
                path.is_file()
                    && path
                        .extension()
                        .is_some_and(|extension| extension == "json")
            });
        if staged_file.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let killed = kill(&mut child);
    let staged_file = staged_file.expect("a file appeared in a staging directory");
    assert!(killed, "the restore was still running when killed");
    // Written under its final name, inside the staging directory.
    assert!(
        staged_file
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("f-")),
        "{} is not under its final name",
        staged_file.display()
    );
    let left: Vec<PathBuf> = fs::read_dir(&target)
        .expect("list target")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(
        !target.join("src").exists() && left.iter().all(|path| is_temporary(path)),
        "after the kill the target shows only the staging directory: {left:?}"
    );

    let report = restore(&workspace, &snapshot, &target, &[]).ok().json();
    assert_eq!(report["files_written"].as_u64(), Some(604), "{report:#}");
    assert_same_tree(&source, &target.join("src"));
    assert_eq!(
        fs::symlink_metadata(target.join("src"))
            .expect("component")
            .mode()
            & 0o7777,
        0o751
    );
    let entries: Vec<PathBuf> = fs::read_dir(&target)
        .expect("list target")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(entries, vec![target.join("src")], "leftovers in the target");
}

/// One new component landing inside another new one: neither may be built
/// aside and renamed into place (the inner one's writes would make the
/// outer one's destination exist), and both restore whole.
#[test]
fn a_component_landing_inside_another_new_one_restores_with_it() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let (outer, inner) = (workspace.path("outer"), workspace.path("inner"));
    for n in 0..40 {
        write(&outer.join(format!("o/{n}.txt")), &noise(n, 3 * KIB));
        write(&inner.join(format!("i/{n}.txt")), &noise(100 + n, 3 * KIB));
    }
    let snapshot = backup_components(&workspace, &[("outer", &outer), ("inner", &inner)]);
    let target = workspace.path("out");
    let nested = target.join("outer").join("nested-inner");
    let spec = format!("inner={}", nested.display());
    restore(
        &workspace,
        &snapshot,
        &target,
        &["--component-target", &spec],
    )
    .ok();
    let outer_restored: BTreeSet<String> = relative_paths(&target.join("outer"))
        .into_iter()
        .filter(|path| !path.starts_with("nested-inner"))
        .collect();
    assert_eq!(outer_restored, relative_paths(&outer));
    assert_same_tree(&inner, &nested);
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------- 6

/// Only the files and symlinks of a state.
fn files(state: &State) -> State {
    state
        .iter()
        .filter(|(_, node)| node.kind != "directory")
        .map(|(path, node)| (path.clone(), node.clone()))
        .collect()
}

/// Only the directories of a state.
fn directories(state: &State) -> State {
    state
        .iter()
        .filter(|(_, node)| node.kind == "directory")
        .map(|(path, node)| (path.clone(), node.clone()))
        .collect()
}

/// A target holding old versions of several files and extras; a `--delete`
/// restore of a snapshot whose new version of `sub/c.bin` has a corrupt
/// chunk. Checks the restore failed and says it rolled back; returns the
/// target's state before and after.
fn restore_failing_on_a_corrupt_chunk() -> (State, State) {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join("a.bin"), &noise(1, 200 * KIB));
    write(&source.join("b.bin"), &noise(2, 200 * KIB));
    write(&source.join("sub/c.bin"), &noise(3, 200 * KIB));
    write(&source.join("keep.txt"), b"unchanged throughout\n");
    write(&source.join("docs/guide.txt"), b"unchanged throughout\n");
    let first = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &first, &target, &[]).ok();
    // The user tightened a directory's permissions since.
    chmod(&target.join("src/docs"), 0o700);
    // Extras that --delete would remove.
    write(&target.join("src/extra.txt"), b"only in the target\n");
    write(&target.join("src/sub/extra-dir/e.bin"), &noise(4, 20 * KIB));

    // New versions of a and b, new files; then, alone in its own data pack,
    // a new version of sub/c.bin.
    write(&source.join("a.bin"), &noise(11, 200 * KIB));
    write(&source.join("b.bin"), &noise(12, 200 * KIB));
    write(&source.join("new.txt"), b"new in the snapshot\n");
    write(&source.join("newdir/n.bin"), &noise(13, 30 * KIB));
    backup(&workspace, &[&source]);
    let before = workspace.packs();
    write(&source.join("sub/c.bin"), &noise(14, 200 * KIB));
    let last = backup(&workspace, &[&source]);
    let added = data_packs(&new_packs(&workspace, &before));
    assert_eq!(
        added.len(),
        1,
        "one new data pack, for sub/c.bin: {added:?}"
    );
    let pack = &added[0];
    let header = header_of(pack);
    let end = header
        .blobs
        .iter()
        .map(|blob| blob.offset + u64::from(blob.length))
        .max()
        .unwrap();
    let middle = (8 + end) / 2;
    let mut bytes = fs::read(pack).unwrap();
    bytes[middle as usize] ^= 0x01;
    fs::write(pack, &bytes).unwrap();

    let before_restore = state(&target);
    let run = restore(&workspace, &last, &target, &["--delete"]).expect(4);
    let report = run.json();
    assert_eq!(report["rolled_back"], true, "{report:#}");
    assert_eq!(
        report["rollback_problems"],
        serde_json::json!([]),
        "{report:#}"
    );
    assert_eq!(report["undo_command"], Value::Null, "{report:#}");
    assert!(report["safety_snapshot"].is_string(), "{report:#}");
    let failed: Vec<&str> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| failure["path"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["sub/c.bin"], "{report:#}");
    assert!(
        run.stderr.contains("put back exactly as it was"),
        "{}",
        run.stderr
    );
    assert_eq!(leftover_temporaries(&target), Vec::<PathBuf>::new());

    (before_restore, state(&target))
}

#[test]
fn a_restore_that_fails_on_a_corrupt_chunk_rolls_every_file_back_exactly() {
    let (before, after) = restore_failing_on_a_corrupt_chunk();
    // Contents, modes, mtimes and symlinks of every file, and the set of
    // paths (directories included).
    assert_same_state(&files(&before), &files(&after), "files after rollback");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the set of paths after rollback"
    );
}

#[test]
fn a_restore_that_fails_on_a_corrupt_chunk_rolls_directory_metadata_back_too() {
    let (before, after) = restore_failing_on_a_corrupt_chunk();
    assert_same_state(
        &directories(&before),
        &directories(&after),
        "directories after rollback",
    );
}

// ---------------------------------------------------------------- 7

#[test]
fn a_dry_run_writes_nothing_and_plans_exactly_what_the_real_run_does() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    let snapshot = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target, &[]).ok();

    // Every kind of difference: changed, metadata only, missing, extra,
    // wrong type.
    let component = target.join("src");
    let mut changed = fs::read(component.join("data/a.bin")).unwrap();
    changed[1000] ^= 1;
    write(&component.join("data/a.bin"), &changed);
    chmod(&component.join("readme.txt"), 0o640);
    fs::remove_file(component.join("data/b.bin")).unwrap();
    write(&component.join("extra.txt"), b"extra");
    write(&component.join("data/extra-dir/x"), b"x");
    fs::remove_dir(component.join("empty")).unwrap();
    write(&component.join("empty"), b"a file where a directory was");

    let before = state(&target);
    let stamps_before = stamps(&target);
    let snapshots_before = snapshots(&workspace);
    let dry = restore(&workspace, &snapshot, &target, &["--delete", "--dry-run"])
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true, "{dry:#}");
    assert!(dry.get("files_written").is_none(), "{dry:#}");
    assert_same_state(&before, &state(&target), "after the dry run");
    assert_eq!(stamps_before, stamps(&target), "inodes, mtimes and ctimes");
    assert_eq!(snapshots(&workspace), snapshots_before, "no snapshot taken");

    let totals = &dry["totals"];
    assert_eq!(totals["create"], 1, "{dry:#}"); // data/b.bin
    assert_eq!(totals["update"], 2, "{dry:#}"); // data/a.bin, empty
    assert_eq!(totals["metadata"], 2, "{dry:#}"); // readme.txt, data (its mtime)
    assert_eq!(totals["delete"], 3, "{dry:#}"); // extra.txt, data/extra-dir, empty (a file)
    let deleted: BTreeSet<&str> = dry["components"][0]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|path| path.as_str().unwrap())
        .collect();
    assert_eq!(
        deleted,
        BTreeSet::from(["extra.txt", "data/extra-dir", "empty"]),
        "{dry:#}"
    );

    let real = restore(&workspace, &snapshot, &target, &["--delete"])
        .ok()
        .json();
    assert_eq!(real["dry_run"], false);
    assert_eq!(dry["totals"], real["totals"], "totals");
    assert_eq!(dry["components"], real["components"], "per-component plans");
    assert_eq!(dry["snapshot"], real["snapshot"]);
    assert_same_tree(&source, &component);
}

// ---------------------------------------------------------------- 8

/// A restored target changed by its user in every way, a `--delete`
/// restore of `latest` over it (checked: a safety snapshot tagged
/// pre-restore, the undo command, `latest` still the real snapshot), then
/// `undo-restore`. Returns the target's state before the restore and after
/// the undo.
fn restore_then_undo() -> (State, State) {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    let snapshot = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target, &[]).ok();

    // The user's own changes since: all of them are what undo must bring back.
    let component = target.join("src");
    write(&component.join("data/a.bin"), &noise(50, 310 * KIB));
    chmod(&component.join("private.txt"), 0o644);
    chmod(&component.join("tools"), 0o700);
    fs::remove_file(component.join("data/deep/c.bin")).unwrap();
    write(&component.join("mine.txt"), b"my own notes\n");
    write(
        &component.join("my-dir/deeper/mine.bin"),
        &noise(51, 40 * KIB),
    );
    fs::remove_file(component.join("link-to-a")).unwrap();
    std::os::unix::fs::symlink("elsewhere", component.join("link-to-a")).unwrap();
    filetime::set_file_mtime(
        component.join("readme.txt"),
        filetime::FileTime::from_unix_time(1_000_000_000, 123),
    )
    .unwrap();
    let before = state(&target);

    let report = restore(&workspace, "latest", &target, &["--delete"])
        .ok()
        .json();
    assert_eq!(report["snapshot"], snapshot.as_str(), "{report:#}");
    assert_same_tree(&source, &component);
    let safety = report["safety_snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("a safety snapshot: {report:#}"))
        .to_string();
    assert_eq!(
        report["undo_command"],
        format!(
            "cairn --repo {} undo-restore {safety}",
            workspace.repo().display()
        ),
        "{report:#}"
    );
    assert_eq!(report["rolled_back"], false);

    let listed = snapshots(&workspace);
    let (_, tags, labels) = listed
        .iter()
        .find(|(id, _, _)| *id == safety)
        .unwrap_or_else(|| panic!("safety snapshot {safety} listed: {listed:?}"));
    assert_eq!(tags, &["pre-restore"]);
    assert_eq!(labels["restore-of"], snapshot.as_str());

    // `latest` is still the real snapshot.
    let again = restore(
        &workspace,
        "latest",
        &workspace.path("fresh"),
        &["--dry-run"],
    )
    .ok()
    .json();
    assert_eq!(again["snapshot"], snapshot.as_str(), "{again:#}");
    let listing = workspace.cairn_repo(["--json", "ls", "latest"]).ok().json();
    assert!(
        listing
            .as_array()
            .unwrap()
            .iter()
            .all(|entry| !entry["path"]
                .as_str()
                .unwrap()
                .contains("cairn-restore-journal")),
        "ls latest lists the real snapshot"
    );

    let undo = workspace
        .cairn_repo(["--json", "undo-restore", &safety])
        .ok()
        .json();
    assert_eq!(undo["problems"], serde_json::json!([]), "{undo:#}");
    (before, state(&target))
}

#[test]
fn undo_restore_puts_every_file_back_and_latest_never_means_a_safety_snapshot() {
    let (before, after) = restore_then_undo();
    assert_same_state(&files(&before), &files(&after), "files after undo");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the set of paths after undo"
    );
}

#[test]
fn undo_restore_puts_directory_metadata_back_too() {
    let (before, after) = restore_then_undo();
    assert_same_state(
        &directories(&before),
        &directories(&after),
        "directories after undo",
    );
}

// ---------------------------------------------------------------- 9

#[test]
fn max_age_refuses_an_older_snapshot_unless_allowed() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    let snapshot = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target, &[]).ok();
    write(&target.join("src/readme.txt"), b"edited, to be kept\n");
    write(&target.join("src/extra.txt"), b"extra, to be kept\n");
    std::thread::sleep(Duration::from_millis(2100));

    let before = state(&target);
    let run = restore(
        &workspace,
        &snapshot,
        &target,
        &["--max-age", "1s", "--delete"],
    )
    .expect(5);
    let report = run.json();
    assert_eq!(verdict(&report, "age"), "too-old", "{report:#}");
    assert_eq!(verdict(&report, "signature"), "ok", "{report:#}");
    assert_eq!(report["refused"], "age", "{report:#}");
    assert!(run.stderr.contains("--allow"), "{}", run.stderr);
    assert_same_state(&before, &state(&target), "target after a refusal");

    // A generous limit is fine.
    let report = restore(
        &workspace,
        &snapshot,
        &target,
        &["--max-age", "1h", "--dry-run"],
    )
    .ok()
    .json();
    assert_eq!(verdict(&report, "age"), "ok", "{report:#}");

    let report = restore(
        &workspace,
        &snapshot,
        &target,
        &["--max-age", "1s", "--allow-too-old", "--delete"],
    )
    .ok()
    .json();
    assert_eq!(verdict(&report, "age"), "too-old", "{report:#}");
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn a_snapshot_by_an_untrusted_key_is_refused_unless_allowed() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    let snapshot = backup(&workspace, &[&source]);
    let stranger = Workspace::new();
    let other_key = stranger
        .cairn_repo(["--json", "init", "--plaintext"])
        .ok()
        .json()["public_key"]
        .as_str()
        .expect("public key")
        .to_string();

    let target = workspace.path("out");
    let run = restore(
        &workspace,
        &snapshot,
        &target,
        &["--trusted-key", &other_key],
    )
    .expect(5);
    let report = run.json();
    assert_eq!(verdict(&report, "signature"), "untrusted", "{report:#}");
    assert_eq!(report["refused"], "signature", "{report:#}");
    assert!(!target.exists(), "a refused restore writes nothing");

    let report = restore(
        &workspace,
        &snapshot,
        &target,
        &["--trusted-key", &other_key, "--allow-untrusted"],
    )
    .ok()
    .json();
    assert_eq!(verdict(&report, "signature"), "untrusted", "{report:#}");
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn a_chunk_that_no_index_lists_is_refused_as_missing_chunks() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    backup(&workspace, &[&source]);
    let packs_before = workspace.packs();
    let indexes_before = walk(&workspace.repo().join("index"));
    write(&source.join("data/new.bin"), &noise(77, 100 * KIB));
    let snapshot = backup(&workspace, &[&source]);

    // Drop the new data pack from the new index file: its chunks are then
    // in no index, while the snapshot's trees still are.
    let lost = data_packs(&new_packs(&workspace, &packs_before));
    assert_eq!(lost.len(), 1, "{lost:?}");
    let lost = id_of_file(&lost[0]);
    let new_indexes: Vec<PathBuf> = walk(&workspace.repo().join("index"))
        .into_iter()
        .filter(|path| !indexes_before.contains(path))
        .collect();
    assert_eq!(new_indexes.len(), 1, "{new_indexes:?}");
    // Rewritten unsigned (a hint): what matters is what it leaves out.
    let (mut index, _) = IndexFile::open(
        &fs::read(&new_indexes[0]).unwrap(),
        "index",
        &Id::of(b"any repository"),
        &[],
    )
    .unwrap();
    let packs = index.packs.len();
    index.packs.retain(|pack| pack.id != lost);
    assert_eq!(index.packs.len(), packs - 1);
    let bytes = index.encode();
    fs::remove_file(&new_indexes[0]).unwrap();
    write(
        &workspace.repo().join("index").join(Id::of(&bytes).to_hex()),
        &bytes,
    );

    let target = workspace.path("out");
    let run = restore(&workspace, &snapshot, &target, &[]);
    // The index cache notices the index file it knew is gone and rebuilds;
    // an in-memory index (--no-cache) sees the same.
    let run_uncached = {
        let mut args: Vec<OsString> = vec!["--no-cache".into()];
        args.extend(
            ["--json", "restore", &snapshot, "--target"]
                .iter()
                .map(OsString::from),
        );
        args.push(target.clone().into());
        workspace.cairn_repo(args)
    };
    for run in [run_uncached, run] {
        let run = run.expect(5);
        let report = run.json();
        assert_eq!(verdict(&report, "chunks"), "missing-chunks", "{report:#}");
        assert_eq!(report["refused"], "chunks", "{report:#}");
        let detail = report["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|verdict| verdict["check"] == "chunks")
            .unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(detail.contains("src/data/new.bin"), "{detail}");
        assert!(!target.exists(), "a refused restore writes nothing");
    }

    // Overridden, everything else is restored and the file is a failure.
    let run = restore(
        &workspace,
        &snapshot,
        &target,
        &["--no-cache", "--allow-missing-chunks"],
    )
    .expect(4);
    let report = run.json();
    let failed: Vec<&str> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| failure["path"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["data/new.bin"], "{report:#}");
    let mut expected = state(&source);
    expected.remove(Path::new("data/new.bin"));
    assert_same_state(&expected, &state(&target.join("src")), "the rest");
}

// ---------------------------------------------------------------- 10

#[test]
fn no_safety_snapshot_overwrites_without_taking_one() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    sample_tree(&source);
    let snapshot = backup(&workspace, &[&source]);
    let target = workspace.path("out");
    restore(&workspace, &snapshot, &target, &[]).ok();
    write(&target.join("src/data/a.bin"), &noise(60, 300 * KIB));
    write(&target.join("src/extra.txt"), b"extra");
    let listed_before = snapshots(&workspace);

    let run = restore(
        &workspace,
        &snapshot,
        &target,
        &["--delete", "--no-safety-snapshot"],
    )
    .ok();
    let report = run.json();
    assert_eq!(report["safety_snapshot"], Value::Null, "{report:#}");
    assert_eq!(report["undo_command"], Value::Null, "{report:#}");
    assert_eq!(report["totals"]["update"], 1, "{report:#}");
    assert_eq!(report["deleted"], 1, "{report:#}");
    assert_same_tree(&source, &target.join("src"));
    let listed_after = snapshots(&workspace);
    assert_eq!(listed_after, listed_before, "no snapshot was added");
    assert!(
        listed_after
            .iter()
            .all(|(_, tags, _)| !tags.iter().any(|tag| tag == "pre-restore"))
    );
}
