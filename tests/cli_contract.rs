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

/// `forget` and `stats` read the retention flags through one struct and
/// one builder: each bad value is a usage error (exit 2) naming its flag
/// in both, where `stats` used to exit 1 on a bad `--keep-within`.
#[test]
fn forget_and_stats_refuse_the_same_bad_retention_flags_alike() {
    let workspace = two_components();
    let cases: [(&str, &str); 6] = [
        ("--keep-within", "3x"),
        ("--keep-daily", "0"),
        ("--keep-last", "-1"),
        ("--keep-tag", ""),
        ("--group-by", "colour"),
        ("--keep-safety", "soon"),
    ];
    for command in ["forget", "stats"] {
        for (flag, value) in cases {
            let run = workspace.cairn_repo(["--json", command, flag, value]);
            assert_eq!(run.code, 2, "{command} {flag} {value:?}: {}", run.stderr);
            let error = json_error(&run);
            // clap names a flag it parses with its value name (`--keep-last <N>`).
            assert!(
                error["object"]
                    .as_str()
                    .and_then(|object| object.split(' ').next())
                    .is_some_and(|word| word == flag),
                "{command} {flag} {value:?}: {error}"
            );
        }
    }
    // The same good policy is read alike, and stats changes nothing.
    let stats = workspace
        .cairn_repo([
            "--json",
            "stats",
            "--keep-last",
            "1",
            "--keep-safety",
            "forever",
        ])
        .ok()
        .json();
    assert_eq!(stats["policy"], "keep-last 1", "{stats}");
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

/// A rerun resumes: packs an interrupted backup had written are indexed
/// and reused by the next run, which stores only the rest. Uploads are
/// held to 8 MiB/s so that the interruption falls between the first
/// 16 MiB pack and the end, whatever the machine's speed.
#[test]
fn a_backup_interrupted_after_its_first_pack_is_resumed_by_the_next_run() {
    let workspace = Workspace::new();
    let size = 40_000_000;
    write(&workspace.path("data/big.bin"), &noise(11, size));
    workspace.init_plaintext();
    let component = format!("data={}", workspace.path("data").display());
    let mut cairn = workspace.command();
    cairn
        .arg("--repo")
        .arg(workspace.repo())
        .args([
            "--limit-upload",
            "8MiB",
            "backup",
            "--component",
            &component,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cairn.spawn().expect("start cairn");
    let packs = || walk(&workspace.repo().join("data")).len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs() == 0 {
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("no pack was written within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stderr) = stop(child, libc::SIGINT);
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("packs already written are reused"),
        "{stderr}"
    );
    let kept = packs();
    assert!(kept >= 1, "the interrupted backup's packs were removed");

    let summary = workspace.backup_json(["--component", &component]);
    assert!(
        summary["adopted_packs"].as_u64() >= Some(1),
        "the rerun did not take up the packs left behind: {summary}"
    );
    let new_bytes = summary["new_bytes"].as_u64().expect("new_bytes");
    assert!(
        new_bytes + 16_000_000 <= size as u64,
        "the rerun stored {new_bytes} new bytes of {size}: it did not reuse the first pack"
    );
    assert!(summary["reused_chunks"].as_u64() > Some(0), "{summary}");
}

/// The subcommands `cairn --help` lists (for `cairn key --help`, those of
/// `key`), without `help`.
fn subcommands(workspace: &Workspace, path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = workspace.cairn(&args).ok().stdout;
    let Some(start) = help.find("Commands:\n") else {
        return Vec::new();
    };
    help[start + "Commands:\n".len()..]
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every subcommand is a row of README's "Every command" table, and every
/// subcommand's `--help`, nested ones included, lists the global flags
/// once, under their own heading after the command's own.
#[test]
fn the_readme_table_names_every_subcommand_and_every_help_has_a_global_section() {
    let workspace = Workspace::new();
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("read README.md");
    let table = &readme[readme
        .find("### Every command")
        .expect("the table's heading")..];
    let table: Vec<&str> = table
        .lines()
        .skip(1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .collect();
    let named: std::collections::BTreeSet<String> = table
        .iter()
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split(','))
        .map(|name| name.trim().trim_matches('`').to_string())
        .collect();
    let top = subcommands(&workspace, &[]);
    assert!(top.len() > 20, "{top:?}");
    let missing: Vec<&String> = top.iter().filter(|name| !named.contains(*name)).collect();
    assert!(
        missing.is_empty(),
        "README's command table lacks {missing:?}"
    );

    let mut checked = 0;
    for name in &top {
        let nested = subcommands(&workspace, &[name]);
        let mut paths = vec![vec![name.as_str()]];
        paths.extend(nested.iter().map(|sub| vec![name.as_str(), sub.as_str()]));
        for path in paths {
            let mut args = path.clone();
            args.push("--help");
            let help = workspace.cairn(&args).ok().stdout;
            let heading = help
                .find("\nGlobal options:\n")
                .unwrap_or_else(|| panic!("{path:?}: no \"Global options\" section:\n{help}"));
            for flag in ["--repo", "--json", "--config-dir"] {
                // A flag's own line starts with it (other lines may name
                // it), followed by its value, its help on the same line, or
                // (when clap puts every help on the next line) nothing.
                let lines: Vec<usize> = help
                    .match_indices('\n')
                    .map(|(at, _)| at + 1)
                    .filter(|at| {
                        help[*at..]
                            .trim_start_matches(' ')
                            .strip_prefix(flag)
                            .is_some_and(|rest| rest.starts_with([' ', '\n']))
                    })
                    .collect();
                assert_eq!(lines.len(), 1, "{path:?}: {flag} listed once:\n{help}");
                assert!(
                    lines[0] > heading,
                    "{path:?}: {flag} under the heading:\n{help}"
                );
            }
            checked += 1;
        }
    }
    // The retention flags of forget and stats have a section of their
    // own, after the command's own flags.
    for command in ["forget", "stats"] {
        let help = workspace.cairn([command, "--help"]).ok().stdout;
        let section = help
            .find("\nRetention policy:\n")
            .expect("a retention section");
        let own = help
            .find(if command == "forget" {
                "--dry-run"
            } else {
                "--host <"
            })
            .expect("an own flag");
        let keep = help.find("--keep-last <").expect("--keep-last");
        assert!(own < section && section < keep, "{command}:\n{help}");
    }
    assert!(
        checked > top.len(),
        "nested subcommands were checked too ({checked})"
    );
}
