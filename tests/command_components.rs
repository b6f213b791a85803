//! Command components: what a command writes to stdout is backed up as one
//! file and restores byte for byte; a command that fails costs only its
//! component, and the snapshot and exit code say so.

mod common;
use common::*;

use std::ffi::OsStr;

#[test]
fn a_multi_hundred_mib_stream_round_trips() {
    let workspace = Workspace::new();
    workspace.init();
    let copy = workspace.path("expected.bin");
    // The command writes 300 MiB of random bytes to stdout and keeps a
    // copy to compare with.
    let command = format!(
        "dump=head -c {} /dev/urandom | tee {}",
        300 * 1024 * 1024,
        copy.display()
    );
    let report = workspace.backup_json(["--command", command.as_str()]);
    let snapshot = report["snapshot"].as_str().unwrap().to_string();
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let component = &listed["snapshots"][0]["components"][0];
    assert_eq!(component["kind"], "command");
    assert_eq!(component["bytes"], 300 * 1024 * 1024);

    let target = workspace.path("out");
    workspace.restore(&snapshot, &target).ok();
    assert_eq!(file_hash(&target.join("dump")), file_hash(&copy));
    let (code, verified) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{verified}");
}

#[test]
fn a_failing_command_costs_only_its_component_and_a_critical_one_fails_the_backup() {
    let workspace = Workspace::new();
    workspace.init();
    let files = workspace.path("files");
    write(&files.join("kept.txt"), b"still backed up\n");
    let component = format!("files={}", files.display());
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all = vec![
            "--json".to_string(),
            "backup".into(),
            "--component".into(),
            component.clone(),
            "--command".into(),
            "good=printf 'hello from a command'".into(),
            "--command".into(),
            "broken=echo the database is down >&2; exit 2".into(),
        ];
        all.extend(extra.iter().map(|arg| arg.to_string()));
        all
    };

    // Not critical: the snapshot is written without `broken`, exit 3.
    let run = workspace.cairn_repo(args(&[]));
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = run.json();
    let names: Vec<&str> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|component| component["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["files", "good"], "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["component"], "broken");
    let why = problems[0]["problem"].as_str().unwrap();
    assert!(
        why.contains("exited with status 2") && why.contains("the database is down"),
        "{why}"
    );
    let snapshot = report["snapshot"].as_str().unwrap().to_string();
    let target = workspace.path("out");
    workspace.restore(&snapshot, &target).ok();
    assert_eq!(
        std::fs::read(target.join("good")).unwrap(),
        b"hello from a command"
    );
    assert_eq!(
        std::fs::read(target.join("files/kept.txt")).unwrap(),
        b"still backed up\n"
    );

    // `cat` streams one file to stdout, for a pipe into a restore tool.
    let cat = workspace
        .cairn_repo(["cat", snapshot.as_str(), "good"])
        .ok();
    assert_eq!(cat.stdout, "hello from a command");
    let cat = workspace
        .cairn_repo(["cat", snapshot.as_str(), "files/kept.txt"])
        .ok();
    assert_eq!(cat.stdout, "still backed up\n");
    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" --repo \"$1\" cat {snapshot} good | wc -c"))
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .arg(workspace.repo())
        .env("CAIRN_CONFIG_DIR", workspace.path("config"))
        .env("CAIRN_CACHE_DIR", workspace.path("cache"))
        .env("CAIRN_PASSWORD", TEST_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&piped.stdout).trim(), "20");
    let directory = workspace.cairn_repo(["cat", snapshot.as_str(), "files"]);
    assert_eq!(directory.code, 1);
    assert!(
        directory.stderr.contains("not a file"),
        "{}",
        directory.stderr
    );

    // Critical: the same, but the backup is reported as failed, exit 7.
    let run = workspace.cairn_repo(args(&["--critical", "broken"]));
    assert_eq!(run.code, 7, "{}", run.stderr);
    assert!(
        run.stderr.contains("critical") && run.stderr.contains("broken"),
        "{}",
        run.stderr
    );
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 2);

    // A critical component that succeeds changes nothing.
    let run = workspace.cairn_repo([
        OsStr::new("backup"),
        OsStr::new("--command"),
        OsStr::new("good=printf ok"),
        OsStr::new("--critical"),
        OsStr::new("good"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_command_that_cannot_start_or_is_empty_is_named() {
    let workspace = Workspace::new();
    workspace.init();
    let run = workspace.cairn_repo([
        "--json",
        "backup",
        "--command",
        "dump=/nonexistent/bin/pg_dump --format=custom",
        "--critical",
        "dump",
    ]);
    assert_eq!(run.code, 7, "{}", run.stderr);
    let report = run.json();
    let why = report["problems"][0]["problem"].as_str().unwrap();
    assert!(
        why.contains("/nonexistent/bin/pg_dump") && why.contains("status 127"),
        "{why}"
    );

    let empty = workspace.cairn_repo(["backup", "--command", "dump=  "]);
    assert_eq!(empty.code, 1);
    assert!(
        empty.stderr.contains("dump") && empty.stderr.contains("empty command"),
        "{}",
        empty.stderr
    );
    let unknown = workspace.cairn_repo(["backup", "--command", "a=true", "--critical", "b"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("--critical"), "{}", unknown.stderr);
}
