//! Mistakes a user makes at the command line: each one is refused with one
//! line naming the culprit, a non-zero exit, and an untouched repository.

mod common;
use common::*;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

/// Every path under `root` with its size (`None` for directories), sorted:
/// any write at all shows up as a difference.
fn listing(root: &Path) -> Vec<(PathBuf, Option<u64>)> {
    let mut entries: Vec<_> = walk(root)
        .into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).unwrap();
            let size = meta.is_file().then_some(meta.len());
            (path.strip_prefix(root).unwrap().to_path_buf(), size)
        })
        .collect();
    entries.sort();
    entries
}

/// Asserts a run was refused as an error (exit 1) with exactly one line on
/// stderr, `cairn: error: ...`, that contains every one of `culprits`.
fn assert_refused(run: &Run, culprits: &[&str]) {
    assert_refused_with(run, 1, culprits);
}

/// As [`assert_refused`], for a mistake in how cairn was called (exit 2).
fn assert_usage(run: &Run, culprits: &[&str]) {
    assert_refused_with(run, 2, culprits);
}

fn assert_refused_with(run: &Run, code: i32, culprits: &[&str]) {
    assert_eq!(
        run.code, code,
        "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{}",
        run.stderr
    );
    assert!(
        lines[0].starts_with("cairn: error: "),
        "stderr does not start with `cairn: error: `: {}",
        lines[0]
    );
    for culprit in culprits {
        assert!(
            lines[0].contains(culprit),
            "error does not name {culprit:?}: {}",
            lines[0]
        );
    }
}

fn args(parts: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    parts
        .iter()
        .map(|part| part.as_ref().to_os_string())
        .collect()
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A repository with one snapshot of `src`, returning the snapshot id.
fn repository_with_a_snapshot(workspace: &Workspace) -> String {
    workspace.init_plaintext();
    write(&workspace.path("src/a.txt"), b"alpha\n");
    write(&workspace.path("src/sub/b.bin"), &noise(5, 100_000));
    let summary = workspace.backup_json([workspace.path("src")]);
    summary["snapshot"].as_str().unwrap().to_string()
}

/// `cairn --json init` for a second repository with its own key file;
/// returns (repository, key file, public key hex).
fn second_repository(workspace: &Workspace) -> (PathBuf, PathBuf, String) {
    let repo = workspace.path("other-repo");
    let key = workspace.path("other.key");
    let init = workspace
        .cairn(args(&[
            &"--json",
            &"--repo",
            &repo,
            &"--key-file",
            &key,
            &"init",
            &"--plaintext",
        ]))
        .ok()
        .json();
    let public = init["public_key"].as_str().unwrap().to_string();
    assert_eq!(public.len(), 64);
    assert!(key.is_file());
    (repo, key, public)
}

/// The public key of the workspace's own repository, as pinned at init
/// (`trusted/<repository id>/<key>`).
fn own_public_key(workspace: &Workspace) -> String {
    let trusted: Vec<String> = fs::read_dir(workspace.path("config/trusted"))
        .unwrap()
        .flat_map(|repository| fs::read_dir(repository.unwrap().path()).unwrap())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(trusted.len(), 1, "{trusted:?}");
    trusted[0].clone()
}

#[test]
fn backup_of_a_missing_path_is_refused_and_writes_nothing() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    let before = listing(&workspace.repo());
    let missing = workspace.path("no-such-dir");

    let run = workspace.cairn_repo(args(&[&"backup", &missing]));
    assert_refused(&run, &[&display(&missing)]);

    // One good component and one missing: still nothing at all is written.
    let run = workspace.cairn_repo(args(&[
        &"backup",
        &"--component",
        &format!("good={}", display(&workspace.path("src"))),
        &"--component",
        &format!("bad={}", display(&missing)),
    ]));
    assert_refused(&run, &[&display(&missing)]);
    assert_eq!(before, listing(&workspace.repo()));
    let snapshots = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(snapshots["snapshots"].as_array().unwrap().len(), 1);
}

#[test]
fn a_directory_that_is_not_a_repository_is_refused_by_every_command() {
    let workspace = Workspace::new();
    write(&workspace.path("src/a.txt"), b"alpha\n");
    let not_repo = workspace.path("photos");
    write(&not_repo.join("holiday.jpg"), &noise(1, 5000));
    let before = listing(&not_repo);
    let out = workspace.path("out");
    let commands: Vec<Vec<OsString>> = vec![
        args(&[&"backup", &workspace.path("src")]),
        args(&[&"snapshots"]),
        args(&[&"restore", &"latest", &"--target", &out]),
        args(&[&"verify"]),
        args(&[&"verify", &"--read-data"]),
        args(&[&"ls", &"latest"]),
    ];
    for command in &commands {
        let mut all = args(&[&"--repo", &not_repo]);
        all.extend(command.iter().cloned());
        let run = workspace.cairn(&all);
        assert_refused(&run, &[&display(&not_repo), "not a cairn repository"]);
        assert_eq!(
            before,
            listing(&not_repo),
            "{command:?} wrote into {not_repo:?}"
        );
        assert!(!out.exists(), "{command:?} created the restore target");
    }

    // A path that does not exist at all is not created by any command.
    let nowhere = workspace.path("nowhere");
    for command in &commands {
        let mut all = args(&[&"--repo", &nowhere]);
        all.extend(command.iter().cloned());
        let run = workspace.cairn(&all);
        assert_refused(&run, &[&display(&nowhere)]);
        assert!(!nowhere.exists(), "{command:?} created {nowhere:?}");
    }
}

#[test]
fn init_on_an_existing_repository_is_refused() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    let before = listing(&workspace.repo());
    let keys_before = listing(&workspace.path("config"));

    let run = workspace.cairn_repo(["init", "--plaintext"]);
    assert_refused(&run, &[&display(&workspace.repo()), "already"]);
    assert_eq!(before, listing(&workspace.repo()));
    assert_eq!(
        keys_before,
        listing(&workspace.path("config")),
        "a key was made anyway"
    );
    // The repository still works with its original key.
    workspace
        .cairn_repo(["restore", "latest", "--target"])
        .expect(2);
    workspace.cairn_repo(["verify"]).ok();
}

#[test]
fn init_on_a_non_empty_directory_is_refused() {
    let workspace = Workspace::new();
    let directory = workspace.path("documents");
    write(&directory.join("thesis.tex"), b"\\documentclass{article}\n");
    let before = listing(&directory);

    let run = workspace.cairn(args(&[&"--repo", &directory, &"init", &"--plaintext"]));
    assert_refused(&run, &[&display(&directory)]);
    assert_eq!(before, listing(&directory));
    assert!(
        !workspace.path("config/keys").exists(),
        "a key was made anyway"
    );

    // The same with an explicit key file: the key file is not created.
    let key = workspace.path("new.key");
    let run = workspace.cairn(args(&[
        &"--repo",
        &directory,
        &"--key-file",
        &key,
        &"init",
        &"--plaintext",
    ]));
    assert_refused(&run, &[&display(&directory)]);
    assert_eq!(before, listing(&directory));
    assert!(!key.exists(), "a key file was made anyway");
}

#[test]
fn a_component_name_used_twice_is_refused() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    write(&workspace.path("other/src/x.txt"), b"x");
    let before = listing(&workspace.repo());

    let run = workspace.cairn_repo(args(&[
        &"backup",
        &"--component",
        &format!("site={}", display(&workspace.path("src"))),
        &"--component",
        &format!("site={}", display(&workspace.path("other"))),
    ]));
    assert_refused(&run, &["\"site\"", "twice"]);

    // Two bare paths with the same last element clash the same way.
    let run = workspace.cairn_repo(args(&[
        &"backup",
        &workspace.path("src"),
        &workspace.path("other/src"),
    ]));
    assert_refused(&run, &["\"src\"", "twice"]);
    assert_eq!(before, listing(&workspace.repo()));
}

#[test]
fn component_names_outside_the_allowed_characters_are_refused() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    let documents = workspace.path("MyDocuments");
    write(&documents.join("cv.txt"), b"cv");
    let before = listing(&workspace.repo());

    for name in ["Bad Name", "UPPER", "slash/inside", "ümlaut", "..", ""] {
        let run = workspace.cairn_repo(args(&[
            &"backup",
            &"--component",
            &format!("{name}={}", display(&documents)),
        ]));
        assert_refused(&run, &[&format!("{name:?}")]);
    }
    // A bare path names its component after its last element; uppercase
    // there is refused too, with a hint to name it explicitly.
    let run = workspace.cairn_repo(args(&[&"backup", &documents]));
    assert_refused(&run, &["\"MyDocuments\"", "--component"]);
    assert_eq!(before, listing(&workspace.repo()));

    // Named properly, the same directory backs up fine.
    workspace.backup_json(args(&[
        &"--component",
        &format!("documents={}", display(&documents)),
    ]));
}

#[test]
fn component_and_label_without_equals_are_refused() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    let before = listing(&workspace.repo());
    let source = display(&workspace.path("src"));

    let run = workspace.cairn_repo(args(&[&"backup", &"--component", &source]));
    assert_usage(&run, &["--component", &source, "NAME=PATH"]);

    let run = workspace.cairn_repo(args(&[
        &"backup",
        &"--label",
        &"ticket-OPS-1",
        &workspace.path("src"),
    ]));
    assert_refused(&run, &["--label", "ticket-OPS-1", "KEY=VALUE"]);

    let run = workspace.cairn_repo(args(&[
        &"backup",
        &"--label",
        &"=value",
        &workspace.path("src"),
    ]));
    assert_refused(&run, &["--label", "=value"]);
    assert_eq!(before, listing(&workspace.repo()));
}

#[test]
fn backup_with_a_missing_key_file_is_refused_naming_it() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    let before = listing(&workspace.repo());
    let key = workspace.path("lost/backup.key");

    let run = workspace.cairn_repo(args(&[
        &"--key-file",
        &key,
        &"backup",
        &workspace.path("src"),
    ]));
    assert_refused(&run, &[&display(&key)]);
    assert_eq!(before, listing(&workspace.repo()));
    assert!(!key.exists(), "the missing key file was created");
}

#[test]
fn backup_with_another_repositorys_key_is_refused() {
    let workspace = Workspace::new();
    repository_with_a_snapshot(&workspace);
    let (_, other_key, other_public) = second_repository(&workspace);
    let before = listing(&workspace.repo());

    let run = workspace.cairn_repo(args(&[
        &"--key-file",
        &other_key,
        &"backup",
        &workspace.path("src"),
    ]));
    assert_refused(
        &run,
        &[&display(&other_key), &other_public, "not a signing key"],
    );
    assert_eq!(before, listing(&workspace.repo()));
}

#[test]
fn restore_and_verify_refuse_a_snapshot_signed_by_a_key_not_pinned() {
    let workspace = Workspace::new();
    let snapshot = repository_with_a_snapshot(&workspace);
    let own = own_public_key(&workspace);
    let (_, _, stranger) = second_repository(&workspace);
    assert_ne!(own, stranger);
    let before = listing(&workspace.repo());
    let target = workspace.path("out");

    // Restore's preflight refuses it (exit 5), naming the key that signed.
    let run = workspace.cairn_repo(args(&[
        &"--trusted-key",
        &stranger,
        &"restore",
        &snapshot,
        &"--target",
        &target,
    ]));
    assert_eq!(
        run.code, 5,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("signed by untrusted key {own}")),
        "restore does not name the untrusted signer:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.starts_with("cairn: ") && run.stderr.contains("signature"),
        "{}",
        run.stderr
    );
    assert!(
        !target.exists(),
        "restore of an untrusted snapshot wrote {target:?}"
    );
    // `latest` is no way around it.
    let run = workspace.cairn_repo(args(&[
        &"--trusted-key",
        &stranger,
        &"restore",
        &"latest",
        &"--target",
        &target,
    ]));
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(!target.exists());

    let run = workspace.cairn_repo(args(&[&"--trusted-key", &stranger, &"ls", &snapshot]));
    assert_refused(&run, &[&own, "not trusted"]);

    let run = workspace.cairn_repo(args(&[&"--trusted-key", &stranger, &"verify"]));
    assert_ne!(
        run.code, 0,
        "verify accepted an untrusted snapshot:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&own) || run.stderr.contains(&own),
        "verify does not name the untrusted signer {own}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains(&snapshot),
        "verify does not name the snapshot:\n{}",
        run.stdout
    );
    assert_eq!(before, listing(&workspace.repo()));

    // The right key, pinned the same way, is accepted.
    workspace
        .cairn_repo(args(&[
            &"--trusted-key",
            &own,
            &"restore",
            &snapshot,
            &"--target",
            &target,
        ]))
        .ok();
    assert_same_tree(&workspace.path("src"), &target.join("src"));
}

#[test]
fn a_malformed_trusted_key_is_refused_naming_it() {
    let workspace = Workspace::new();
    let snapshot = repository_with_a_snapshot(&workspace);
    let before = listing(&workspace.repo());
    let target = workspace.path("out");
    for bad in ["0123abcd", "zz", "/no/such/key.pub"] {
        let run = workspace.cairn_repo(args(&[
            &"--trusted-key",
            &bad,
            &"restore",
            &snapshot,
            &"--target",
            &target,
        ]));
        assert_refused(&run, &[bad]);
        assert!(!target.exists());
    }
    assert_eq!(before, listing(&workspace.repo()));
}

#[test]
fn a_fresh_machine_without_trusted_keys_is_told_to_pin_one_and_then_restores() {
    let workspace = Workspace::new();
    let snapshot = repository_with_a_snapshot(&workspace);
    let own = own_public_key(&workspace);
    let before = listing(&workspace.repo());
    // The disaster: the machine with the config directory is gone; only the
    // repository and a note of its public key survive.
    let fresh_config = workspace.path("fresh-config");
    let fresh = |extra: &[&dyn AsRef<OsStr>]| {
        let mut all = args(&[&"--repo", &workspace.repo()]);
        all.extend(args(extra));
        run_of(
            workspace
                .command()
                .env("CAIRN_CONFIG_DIR", &fresh_config)
                .args(all)
                .output()
                .unwrap(),
        )
    };
    let target = workspace.path("recovered");

    let run = fresh(&[&"restore", &"latest", &"--target", &target]);
    assert_refused(&run, &["no trusted keys", "--trusted-key"]);
    assert!(!target.exists());
    let run = fresh(&[&"verify"]);
    assert_refused(&run, &["no trusted keys", "--trusted-key"]);

    // Listing still works, and says the snapshots are not trusted here.
    let listed = fresh(&[&"--json", &"snapshots"]).ok().json();
    assert_eq!(listed["snapshots"][0]["id"], snapshot.as_str());
    assert_eq!(listed["snapshots"][0]["trusted"], false);

    // Backing up needs the secret key, which is not on this machine.
    let run = fresh(&[&"backup", &workspace.path("src")]);
    assert_refused(&run, &[&display(&fresh_config), &own]);

    // Pinning the key from the note recovers everything.
    fresh(&[&"--trusted-key", &own, &"verify", &"--read-data"]).ok();
    fresh(&[
        &"--trusted-key",
        &own,
        &"restore",
        &"latest",
        &"--target",
        &target,
    ])
    .ok();
    assert_same_tree(&workspace.path("src"), &target.join("src"));
    assert_eq!(before, listing(&workspace.repo()));
}

#[test]
fn restore_of_a_snapshot_that_does_not_exist_is_refused() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let target = workspace.path("out");

    // An empty repository has no latest snapshot.
    let run = workspace.cairn_repo(args(&[&"restore", &"latest", &"--target", &target]));
    assert_refused(&run, &["\"latest\""]);

    let snapshot = repository_with_a_snapshot_in(&workspace);
    let before = listing(&workspace.repo());
    // A well-formed id that is not there, by its full length and a prefix.
    let absent = if snapshot.starts_with('0') { "1" } else { "0" }.repeat(64);
    for spec in [absent.as_str(), &absent[..8], "not-an-id"] {
        let run = workspace.cairn_repo(args(&[&"restore", &spec, &"--target", &target]));
        if spec == "not-an-id" {
            // Not an id by its form: a usage mistake, with the rule.
            assert_usage(&run, &[&format!("{spec:?}"), "at least 4 hex digits"]);
        } else {
            assert_refused(&run, &[&format!("{spec:?}")]);
        }
        assert!(!target.exists(), "restore of {spec} created the target");
    }
    assert_eq!(before, listing(&workspace.repo()));
}

/// Like [`repository_with_a_snapshot`], for a repository already made.
fn repository_with_a_snapshot_in(workspace: &Workspace) -> String {
    write(&workspace.path("src/a.txt"), b"alpha\n");
    let summary = workspace.backup_json([workspace.path("src")]);
    summary["snapshot"].as_str().unwrap().to_string()
}

#[test]
fn ls_of_a_component_or_path_that_does_not_exist_is_refused() {
    let workspace = Workspace::new();
    let snapshot = repository_with_a_snapshot(&workspace);
    let before = listing(&workspace.repo());

    let run = workspace.cairn_repo(["ls", &snapshot, "nosuch"]);
    assert_refused(&run, &["\"nosuch\"", &snapshot[..8]]);
    let run = workspace.cairn_repo(["ls", "latest", "nosuch/a.txt"]);
    assert_refused(&run, &["\"nosuch\""]);
    let run = workspace.cairn_repo(["ls", "latest", "src/missing.txt"]);
    assert_refused(&run, &["src/missing.txt"]);
    assert_eq!(before, listing(&workspace.repo()));

    // The real ones list.
    let listed = workspace
        .cairn_repo(["--json", "ls", "latest", "src/a.txt"])
        .ok()
        .json();
    assert_eq!(listed[0]["path"], "src/a.txt");
    assert_eq!(listed[0]["size"], 6);
}

#[test]
fn a_bare_path_ending_in_dot_dot_is_not_named_after_the_directory_it_leaves() {
    // `cairn backup work/src/..` backs up `work`: a component called "src"
    // would hold everything but what its name says.
    let workspace = Workspace::new();
    workspace.init_plaintext();
    write(&workspace.path("work/src/main.rs"), b"fn main() {}\n");
    write(&workspace.path("work/secrets.txt"), b"not part of src\n");
    let before = listing(&workspace.repo());
    let path = workspace.path("work/src/..");
    let run = workspace.cairn_repo(args(&[&"--json", &"backup", &path]));
    if run.code == 0 {
        let name = &run.json()["components"][0]["name"];
        assert_eq!(
            name, "work",
            "`backup work/src/..` named its component {name}"
        );
    } else {
        assert_refused(&run, &["--component"]);
        assert_eq!(before, listing(&workspace.repo()));
    }
}

#[test]
fn a_component_with_an_empty_path_is_refused_naming_it() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let before = listing(&workspace.repo());
    let run = workspace.cairn_repo(["backup", "--component", "docs="]);
    assert_refused(&run, &["docs"]);
    assert_eq!(before, listing(&workspace.repo()));
}

#[test]
fn restore_into_a_target_that_is_a_file_is_refused() {
    let workspace = Workspace::new();
    let snapshot = repository_with_a_snapshot(&workspace);
    let target = workspace.path("report.pdf");
    write(&target, b"%PDF-1.7");
    let run = workspace.cairn_repo(args(&[&"restore", &snapshot, &"--target", &target]));
    assert_refused(&run, &[&display(&target), "not a directory"]);
    assert_eq!(fs::read(&target).unwrap(), b"%PDF-1.7");
}
