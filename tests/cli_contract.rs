//! The CLI contract every command keeps (README, "The CLI contract"):
//! usage mistakes exit 2, with `--json` every error is a JSON object with
//! documented fields, a name that does not exist is answered with what
//! does, global flags have a help section of their own, `plan check`
//! reports every mistake at once, completions and man pages generate, and
//! SIGINT/SIGTERM end a backup with one line, no temporary files and no
//! child left running. All against the real `cairn` binary.

mod common;
use common::*;
use serde_json::Value;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The one JSON error object a `--json` run printed on stderr.
fn json_error(run: &Run) -> Value {
    let line = run
        .stderr
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON on stderr: {}", run.stderr));
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("stderr line is not JSON ({error}): {line}"));
    let error = value["error"].clone();
    for field in ["code", "exit_code", "message", "object"] {
        assert!(error.get(field).is_some(), "{field} missing from {value}");
    }
    assert_eq!(
        error["exit_code"].as_i64(),
        Some(i64::from(run.code)),
        "the JSON names the exit code the process ended with: {value}"
    );
    error
}

/// A repository with one snapshot of two components, `memory` and `db`.
fn two_components() -> Workspace {
    let workspace = Workspace::new();
    write(&workspace.path("memory/notes.txt"), b"remember");
    write(&workspace.path("db/data.bin"), &noise(1, 10_000));
    workspace.init_plaintext();
    workspace.backup_json([
        "--component",
        &format!("memory={}", workspace.path("memory").display()),
        "--component",
        &format!("db={}", workspace.path("db").display()),
    ]);
    workspace
}

#[test]
fn usage_mistakes_exit_2_before_and_after_parsing() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    // clap's own, and each kind of value cairn parses itself.
    let cases: [&[&str]; 6] = [
        &["snapshots", "--bogus"],
        &["verify", "--read-data-subset", "five"],
        &["prune", "--grace", "3x"],
        &["forget", "--keep-within", "3x", "--dry-run"],
        &["restore", "latest", "--target", "t", "--at", "last tuesday"],
        &["backup", "--component", "no-equals-sign"],
    ];
    for args in cases {
        let run = workspace.cairn_repo(args).expect(2);
        assert!(!run.stderr.is_empty(), "{args:?}: nothing said");
    }
    // No repository at all: a usage mistake too.
    let run = workspace.cairn(["snapshots"]).expect(2);
    assert!(run.stderr.contains("--repo"), "{}", run.stderr);
}

#[test]
fn with_json_every_error_is_an_object_naming_code_and_object() {
    let workspace = two_components();

    let run = workspace.cairn(["--json", "snapshots"]).expect(2);
    let error = json_error(&run);
    assert_eq!(error["code"], "usage");
    assert_eq!(error["object"], "--repo");

    let run = workspace
        .cairn_repo(["--json", "prune", "--grace", "3x"])
        .expect(2);
    let error = json_error(&run);
    assert_eq!(error["code"], "usage");
    assert_eq!(error["object"], "--grace");
    assert!(error["message"].as_str().unwrap().contains("3x"), "{error}");

    // Rejected by clap itself.
    let run = workspace
        .cairn(["--json", "snapshots", "--bogus"])
        .expect(2);
    let error = json_error(&run);
    assert_eq!(error["code"], "usage");
    assert_eq!(error["object"], "--bogus");

    let run = workspace
        .cairn_repo(["--json", "ls", "latest", "memry"])
        .expect(1);
    let error = json_error(&run);
    assert_eq!(error["code"], "component-not-found");
    assert_eq!(error["object"], "memry");

    let missing = workspace.path("no-such-repo");
    let run = workspace
        .cairn(["--json", "--repo", missing.to_str().unwrap(), "snapshots"])
        .expect(1);
    let error = json_error(&run);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{error}"
    );
    // Nothing but the JSON object on stderr.
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

#[test]
fn names_that_do_not_exist_are_answered_with_what_does() {
    let workspace = two_components();
    let target = workspace.path("restored");

    let run = workspace
        .cairn_repo([
            "restore",
            "latest",
            "--only",
            "memry",
            "--target",
            target.to_str().unwrap(),
        ])
        .expect(1);
    assert!(
        (run.stderr.contains("it holds: memory, db")
            || run.stderr.contains("it holds: db, memory"))
            && run.stderr.contains("did you mean \"memory\""),
        "{}",
        run.stderr
    );
    assert!(!target.exists(), "nothing restored");

    // Too short a prefix states the rule (a usage mistake).
    let run = workspace.cairn_repo(["ls", "ab1"]).expect(2);
    assert!(
        run.stderr.contains("at least 4 hex digits"),
        "{}",
        run.stderr
    );

    // A plain file as --repo is not "does not exist".
    let file = workspace.path("memory/notes.txt");
    let run = workspace
        .cairn(["--repo", file.to_str().unwrap(), "snapshots"])
        .expect(1);
    assert!(
        run.stderr.contains("is a file, not a repository directory")
            && !run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );

    // A wrong --trusted-key with `latest`: no trusted snapshot, and how
    // many were passed over.
    let stranger: String = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let run = workspace
        .cairn_repo(["--trusted-key", &stranger, "ls", "latest"])
        .expect(1);
    assert!(
        run.stderr
            .contains("no trusted snapshot can be latest: 1 snapshot(s) passed over"),
        "{}",
        run.stderr
    );
}

#[test]
fn global_flags_have_a_help_section_of_their_own() {
    let workspace = Workspace::new();
    let help = workspace.cairn(["backup", "--help"]).ok().stdout;
    let heading = help
        .find("Global options:")
        .unwrap_or_else(|| panic!("no global section:\n{help}"));
    let own = help.find("--component").expect("backup's own flag");
    let global = help.find("--repo <").expect("a global flag");
    assert!(own < heading && heading < global, "{help}");
    assert_eq!(help.matches("--repo <").count(), 1, "listed once:\n{help}");
}

#[test]
fn plan_check_reports_every_mistake_and_each_repository_that_does_not_open() {
    let workspace = Workspace::new();
    let plan = workspace.path("cairn.toml");
    write(
        &plan,
        b"repository = \"nowhere\"\nhots = \"db1\"\n\n[[component]]\nname = \"notes\"\nkind = \"fils\"\ncritical = \"yes\"\npath = \".\"\n\n[[component]]\nkind = \"files\"\npath = \".\"\n\n[retention]\nkeep_daily = \"seven\"\n",
    );
    let run = workspace
        .cairn(["plan", "check", "--plan", plan.to_str().unwrap()])
        .expect(1);
    for expected in [
        "cairn.toml:2: `hots`: unknown key; did you mean `host`?",
        "cairn.toml:6: `component[0].kind`: \"fils\" is not one of files, sqlite, command; did you mean \"files\"?",
        "cairn.toml:7: `component[0].critical`: expected true or false, found string",
        "`component[1]`: missing `name`",
        "cairn.toml:15: `retention.keep_daily`: expected a whole number",
        "nowhere does not open: no such directory",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("6 mistake(s)"), "{}", run.stderr);

    // Right in shape, wrong in meaning, and a file for a repository: all
    // said in the one run.
    write(&workspace.path("not-a-repo"), b"x");
    write(
        &plan,
        b"repository = \"not-a-repo\"\n[[component]]\nname = \"notes\"\nkind = \"files\"\npath = \"missing-dir\"\n",
    );
    let run = workspace
        .cairn(["--json", "plan", "check", "--plan", plan.to_str().unwrap()])
        .expect(1);
    let report = run.json();
    assert_eq!(report["valid"], false);
    let mistakes = report["mistakes"].as_array().expect("mistakes");
    assert_eq!(mistakes.len(), 2, "{report}");
    assert!(
        mistakes[0].as_str().unwrap().contains("missing-dir"),
        "{report}"
    );
    assert!(
        mistakes[1]
            .as_str()
            .unwrap()
            .contains("not-a-repo does not open: a file, not a directory"),
        "{report}"
    );

    // And a repository that opens passes.
    workspace.init_plaintext();
    write(&workspace.path("notes/a.txt"), b"a");
    write(
        &plan,
        b"repository = \"repo\"\n[[component]]\nname = \"notes\"\nkind = \"files\"\npath = \"notes\"\n",
    );
    let run = workspace
        .cairn(["plan", "check", "--plan", plan.to_str().unwrap()])
        .ok();
    assert!(run.stdout.contains("repositories open"), "{}", run.stdout);
}

#[test]
fn completions_parse_and_man_pages_are_written() {
    let workspace = Workspace::new();
    let bash = workspace.cairn(["completions", "bash"]).ok().stdout;
    let script = workspace.path("cairn.bash");
    write(&script, bash.as_bytes());
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("run bash -n");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(bash.contains("backup") && bash.contains("--repo"), "{bash}");
    for shell in ["zsh", "fish"] {
        let script = workspace.cairn(["completions", shell]).ok().stdout;
        assert!(script.contains("snapshots"), "{shell}: {script}");
    }

    let pages = workspace.path("man");
    let run = workspace
        .cairn(["man", "--output", pages.to_str().unwrap()])
        .ok();
    for page in [
        "cairn.1",
        "cairn-backup.1",
        "cairn-key-add.1",
        "cairn-plan-check.1",
    ] {
        let text = std::fs::read_to_string(pages.join(page))
            .unwrap_or_else(|error| panic!("{page}: {error}\n{}", run.stdout));
        assert!(
            text.starts_with(".ie") || text.contains("\n.TH "),
            "{page}: {text}"
        );
    }
    let backup = std::fs::read_to_string(pages.join("cairn-backup.1")).unwrap();
    assert!(backup.contains("critical"), "the page documents the flags");
}

/// Whether process `pid` still runs (a zombie counts as gone).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Starts a backup whose command component writes its pid to a file and
/// sleeps; returns the running cairn and the command's pid once it runs.
// The child is handed to the caller, which waits for it (`stop`); clippy
// sees only that this function does not.
#[allow(clippy::zombie_processes)]
fn backup_with_a_slow_command(workspace: &Workspace, extra: &[&str]) -> (std::process::Child, i32) {
    let pid_file = workspace.path("dump.pid");
    let _ = std::fs::remove_file(&pid_file);
    let command = format!(
        "slow=printf partial; echo $$ > {}; exec sleep 60",
        pid_file.display()
    );
    let mut cairn = workspace.command();
    cairn
        .arg("--repo")
        .arg(workspace.repo())
        .args(extra)
        .args(["backup", "--component"])
        .arg(format!("data={}", workspace.path("data").display()))
        .args(["--command", &command])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cairn.spawn().expect("start cairn");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            return (child, pid);
        }
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("the command never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: std::process::Child, signal: i32) -> (i32, String) {
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().expect("wait for cairn");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "cairn handled the signal: {stderr}");
    (status.code().expect("an exit code"), stderr)
}

fn staging_left(workspace: &Workspace) -> Vec<std::path::PathBuf> {
    walk(&workspace.path("cache"))
        .into_iter()
        .filter(|path| path.to_string_lossy().contains("staging/"))
        .collect()
}

#[test]
fn an_interrupted_backup_says_what_was_kept_cleans_up_and_reruns() {
    let workspace = Workspace::new();
    write(&workspace.path("data/big.bin"), &noise(7, 2_000_000));
    workspace.init_plaintext();

    let (child, dump) = backup_with_a_slow_command(&workspace, &[]);
    let (code, stderr) = stop(child, libc::SIGINT);
    assert_eq!(code, 130, "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("interrupted"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains("by SIGINT: nothing was committed"),
        "{stderr}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(dump) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !running(dump),
        "the command component's process was left running"
    );
    assert_eq!(staging_left(&workspace), Vec::<std::path::PathBuf>::new());
    assert!(
        walk(&workspace.repo().join("tmp")).is_empty(),
        "temporary files left in the repository"
    );
    let snapshots = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(
        snapshots["snapshots"].as_array().map(Vec::len),
        Some(0),
        "{snapshots}"
    );

    // SIGTERM, with --json: one JSON error object, exit 143.
    let (child, _) = backup_with_a_slow_command(&workspace, &["--json"]);
    let (code, stderr) = stop(child, libc::SIGTERM);
    assert_eq!(code, 143, "{stderr}");
    let run = Run {
        code,
        stdout: String::new(),
        stderr,
    };
    let error = json_error(&run);
    assert_eq!(error["code"], "interrupted");
    assert!(
        error["message"].as_str().unwrap().contains("SIGTERM"),
        "{error}"
    );

    // The next run completes.
    let summary = workspace.backup_json([
        "--component",
        &format!("data={}", workspace.path("data").display()),
        "--command",
        "slow=printf whole",
    ]);
    assert!(summary["snapshot"].is_string(), "{summary}");
    assert_eq!(staging_left(&workspace), Vec::<std::path::PathBuf>::new());
}
