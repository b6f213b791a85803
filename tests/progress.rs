//! Progress as a user sees it: on a terminal every long operation draws a
//! bar naming its phase with bytes done out of a total; with `--json` it
//! writes JSON lines on stderr with the documented fields; when stderr is
//! neither, nothing is drawn. The real `cairn` runs on a pseudo-terminal
//! (see `common::pty`).

mod common;
use common::pty::TerminalRun;
use common::*;
use serde_json::Value;

/// A repository holding one snapshot of a few MB in nested directories.
fn workspace_with_snapshot() -> (Workspace, String) {
    let workspace = Workspace::new();
    let source = workspace.path("src");
    for index in 0..6u64 {
        write(
            &source.join(format!("dir{}/file{index}.bin", index % 2)),
            &noise(index, 600_000),
        );
    }
    workspace.init_plaintext();
    let summary = workspace.backup_json(["--component", &format!("data={}", source.display())]);
    let snapshot = summary["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    (workspace, snapshot)
}

fn assert_bar(run: &TerminalRun, phase: &str) {
    assert!(
        run.terminal.contains(phase),
        "no {phase:?} on the terminal:\n{:?}",
        run.terminal
    );
    assert!(
        run.shows_byte_count(),
        "no byte count on the terminal:\n{:?}",
        run.terminal
    );
    // The rate, the time left and the items (files, packs, snapshots)
    // beside the bytes.
    for part in ["/s", "eta "] {
        assert!(
            run.terminal.contains(part),
            "no {part:?} on the terminal:\n{:?}",
            run.terminal
        );
    }
    assert!(
        ["files", "packs", "snapshots"]
            .iter()
            .any(|unit| run.terminal.contains(unit)),
        "no count of items on the terminal:\n{:?}",
        run.terminal
    );
}

#[test]
fn restore_draws_a_bar_on_a_terminal() {
    let (workspace, snapshot) = workspace_with_snapshot();
    let target = workspace.path("restored");
    let run = workspace
        .cairn_repo_on_terminal(["restore", &snapshot, "--target", target.to_str().unwrap()])
        .ok();
    assert_bar(&run, "restore");
    assert_same_tree(&workspace.path("src"), &target.join("data"));
}

#[test]
fn backup_draws_a_bar_on_a_terminal() {
    let workspace = Workspace::new();
    let source = workspace.path("src");
    for index in 0..4u64 {
        write(
            &source.join(format!("file{index}.bin")),
            &noise(index, 700_000),
        );
    }
    workspace.init_plaintext();
    let component = format!("data={}", source.display());
    let run = workspace
        .cairn_repo_on_terminal(["backup", "--component", &component])
        .ok();
    assert_bar(&run, "backup");
    assert!(
        run.terminal.contains("data"),
        "the bar names the component:\n{:?}",
        run.terminal
    );
}

#[test]
fn drill_draws_a_bar_on_a_terminal() {
    let (workspace, _) = workspace_with_snapshot();
    let history = workspace.path("drills.jsonl");
    let run = workspace
        .cairn_repo_on_terminal(["drill", "--history", history.to_str().unwrap()])
        .ok();
    assert_bar(&run, "restore data");
}

#[test]
fn verify_read_data_draws_a_bar_on_a_terminal() {
    let (workspace, _) = workspace_with_snapshot();
    let run = workspace
        .cairn_repo_on_terminal(["verify", "--read-data"])
        .ok();
    assert_bar(&run, "verify-data");
    assert!(run.stdout.contains("no damage found"), "{}", run.stdout);
}

#[test]
fn prune_draws_a_bar_on_a_terminal() {
    let (workspace, first) = workspace_with_snapshot();
    write(&workspace.path("src/dir0/late.bin"), &noise(99, 300_000));
    workspace.backup_json([
        "--component",
        &format!("data={}", workspace.path("src").display()),
    ]);
    workspace.cairn_repo(["forget", &first]).ok();
    let run = workspace
        .cairn_repo_on_terminal(["prune", "--grace", "0s"])
        .ok();
    assert_bar(&run, "prune-survey");
    assert!(run.terminal.contains("prune-delete"), "{:?}", run.terminal);
}

#[test]
fn copy_draws_a_bar_on_a_terminal() {
    let (workspace, _) = workspace_with_snapshot();
    let target = workspace.path("copy");
    workspace
        .cairn(["--repo", target.to_str().unwrap(), "init", "--plaintext"])
        .ok();
    let mut command = workspace.command();
    command
        .args(["copy", "--from"])
        .arg(workspace.repo())
        .arg("--to")
        .arg(&target);
    let run = common::pty::on_terminal(command).ok();
    assert_bar(&run, "copy data");
}

/// A repository with a second snapshot and the first forgotten, so that
/// a prune has something to do; and the empty repository a copy fills.
fn workspace_for_every_long_operation() -> (Workspace, std::path::PathBuf) {
    let (workspace, first) = workspace_with_snapshot();
    // Data only the first snapshot holds, for the prune to delete.
    std::fs::remove_file(workspace.path("src/dir1/file1.bin")).unwrap();
    workspace.backup_json([
        "--component",
        &format!("data={}", workspace.path("src").display()),
    ]);
    workspace.cairn_repo(["forget", &first]).ok();
    let copy = workspace.path("copy");
    workspace
        .cairn(["--repo", copy.to_str().unwrap(), "init", "--plaintext"])
        .ok();
    (workspace, copy)
}

/// Each long operation: its arguments (after `--repo REPO`, or with its
/// own repositories for copy) and the phase its progress names.
fn long_operations(
    workspace: &Workspace,
    copy: &std::path::Path,
) -> Vec<(Vec<String>, &'static str)> {
    let repo = |args: &[&str]| {
        let mut all = vec!["--repo".to_string(), workspace.repo().display().to_string()];
        all.extend(args.iter().map(|arg| arg.to_string()));
        all
    };
    let source = format!("data={}", workspace.path("src").display());
    let target = workspace.path("restored");
    vec![
        (repo(&["backup", "--component", &source]), "backup"),
        (repo(&["verify", "--read-data"]), "verify-data"),
        (
            repo(&["restore", "latest", "--target", target.to_str().unwrap()]),
            "restore",
        ),
        (repo(&["prune", "--grace", "0s"]), "prune-survey"),
        (
            vec![
                "copy".to_string(),
                "--from".to_string(),
                workspace.repo().display().to_string(),
                "--to".to_string(),
                copy.display().to_string(),
            ],
            "copy",
        ),
    ]
}

#[test]
fn nothing_is_drawn_when_stderr_is_not_a_terminal() {
    let (workspace, copy) = workspace_for_every_long_operation();
    for (args, phase) in long_operations(&workspace, &copy) {
        let run = workspace.cairn(&args).ok();
        assert!(
            !run.stderr.contains(phase) && !run.stderr.contains('\u{1b}'),
            "{args:?}: drawn on a pipe: {:?}",
            run.stderr
        );
        assert!(
            !shows_byte_count_in(&run.stderr),
            "{args:?}: {:?}",
            run.stderr
        );
    }
}

/// With `--json`, each long operation writes JSON lines on stderr naming
/// its phase, with the documented counters (docs/JSON.md, "progress"),
/// and its result stays on stdout.
#[test]
fn every_long_operation_writes_json_progress_lines() {
    let (workspace, copy) = workspace_for_every_long_operation();
    for (mut args, phase) in long_operations(&workspace, &copy) {
        args.insert(0, "--json".to_string());
        let run = workspace.cairn(&args).ok();
        let _result = run.json();
        let lines = progress_lines(&run.stderr);
        let line = lines
            .iter()
            .find(|line| line["phase"] == phase)
            .unwrap_or_else(|| panic!("{args:?}: no {phase} line in {:?}", run.stderr));
        for field in ["component", "bytes_done", "bytes_total"] {
            assert!(
                line.get(field).is_some(),
                "{args:?}: {field} missing from {line}"
            );
        }
        // The phase's last line reports work done, even for a phase that
        // ends within the second between lines.
        let done = lines
            .iter()
            .filter(|line| line["phase"] == phase)
            .map(|line| line["bytes_done"].as_u64().unwrap_or(0))
            .max();
        assert!(
            done > Some(0),
            "{args:?}: no {phase} bytes ever done: {lines:?}"
        );
    }
}

fn shows_byte_count_in(text: &str) -> bool {
    common::pty::shows_byte_count(text)
}

/// The JSON progress lines of a run's stderr.
fn progress_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|value| value.get("progress").cloned())
        .collect()
}

#[test]
fn json_progress_lines_carry_the_documented_fields() {
    let (workspace, _) = workspace_with_snapshot();
    let run = workspace
        .cairn_repo(["--json", "verify", "--read-data"])
        .ok();
    assert_eq!(run.json()["clean"], true, "the report is still on stdout");
    let lines = progress_lines(&run.stderr);
    let data = lines
        .iter()
        .find(|line| line["phase"] == "verify-data")
        .unwrap_or_else(|| panic!("no verify-data line in {:?}", run.stderr));
    for field in [
        "component",
        "bytes_done",
        "bytes_total",
        "packs_done",
        "packs_total",
    ] {
        assert!(data.get(field).is_some(), "{field} missing from {data}");
    }
    assert!(data["packs_total"].as_u64().unwrap() >= 1, "{data}");
    assert!(data["bytes_total"].as_u64().unwrap() >= 3_000_000, "{data}");
    // The last line, written when the run ends, is the structure check
    // of the one snapshot, complete.
    let last = lines.last().expect("a progress line");
    assert_eq!(last["phase"], "verify-structure", "{last}");
    assert_eq!(last["component"], "data", "{last}");
    assert_eq!(last["snapshots_done"], 1, "{last}");
    assert_eq!(last["snapshots_total"], 1, "{last}");
}

#[test]
fn json_progress_of_a_copy_counts_snapshots_and_bytes() {
    let (workspace, _) = workspace_with_snapshot();
    let target = workspace.path("copy");
    workspace
        .cairn(["--repo", target.to_str().unwrap(), "init", "--plaintext"])
        .ok();
    let run = workspace
        .cairn([
            "--json",
            "copy",
            "--from",
            workspace.repo().to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ])
        .ok();
    let last = progress_lines(&run.stderr)
        .pop()
        .unwrap_or_else(|| panic!("no progress line in {:?}", run.stderr));
    assert_eq!(last["phase"], "copy", "{last}");
    assert_eq!(last["snapshots_done"], 1, "{last}");
    assert_eq!(last["snapshots_total"], 1, "{last}");
    assert!(last["bytes_done"].as_u64().unwrap() >= 3_000_000, "{last}");
}

#[test]
fn a_slow_command_component_is_named_on_the_bar_while_it_runs() {
    let workspace = Workspace::new();
    write(&workspace.path("src/a.bin"), &noise(3, 200_000));
    workspace.init_plaintext();
    let component = format!("data={}", workspace.path("src").display());
    let run = workspace
        .cairn_repo_on_terminal([
            "backup",
            "--component",
            &component,
            "--command",
            "pgdump=sleep 2; printf rows",
        ])
        .ok();
    assert!(
        run.terminal.contains("backup pgdump"),
        "the bar names the command while it runs:\n{:?}",
        run.terminal
    );
    assert_bar(&run, "backup");
}

#[test]
fn json_progress_of_a_backup_names_each_component_with_files_and_bytes() {
    let workspace = Workspace::new();
    for index in 0..3u64 {
        write(
            &workspace.path(&format!("src/file{index}.bin")),
            &noise(index, 400_000),
        );
    }
    workspace.init_plaintext();
    let run = workspace
        .cairn_repo([
            "--json",
            "backup",
            "--component",
            &format!("data={}", workspace.path("src").display()),
            "--command",
            "pgdump=printf rows",
        ])
        .ok();
    let lines = progress_lines(&run.stderr);
    assert!(
        lines
            .iter()
            .any(|line| line["phase"] == "backup" && line["component"] == "pgdump"),
        "{lines:?}"
    );
    let last = lines.last().expect("a progress line");
    assert_eq!(last["phase"], "backup", "{last}");
    assert!(last["bytes_done"].as_u64().unwrap() >= 1_200_000, "{last}");
    assert!(last["files_done"].as_u64().unwrap() >= 3, "{last}");
    assert!(last.get("files_total").is_some(), "{last}");
}

#[test]
fn progress_asked_for_on_a_pipe_is_written_as_lines_of_text() {
    let (workspace, _) = workspace_with_snapshot();
    let run = workspace
        .cairn_repo(["--progress", "verify", "--read-data"])
        .ok();
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("cairn: progress: "))
        .collect();
    assert!(
        lines.iter().any(|line| line.contains("verify-data")),
        "{:?}",
        run.stderr
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("MiB") && line.contains("/s")),
        "bytes and rate: {lines:?}"
    );
    assert!(
        !run.stderr.contains('\u{1b}'),
        "no terminal codes on a pipe"
    );
}
