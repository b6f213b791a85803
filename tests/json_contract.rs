//! The `--json` contract (docs/JSON.md): every command that prints JSON is
//! run once against the real `cairn` binary (the two that need an S3
//! bucket with Object Lock in tests/s3_lock.rs), and each field docs/JSON.md
//! lists for it must be present with the listed type; every top-level
//! field a command prints must be listed. The field lists are read from
//! docs/JSON.md itself, so the document and the code cannot drift apart:
//! a renamed, retyped or dropped field fails here, and so does a new field
//! nobody documented. Every documented section must be run, and every
//! documented path must be met at least once (an empty array would let a
//! row pass unchecked).

mod common;
use common::json_doc::{Contract, S3_LOCK_SECTIONS};
use common::*;
use serde_json::Value;

/// Every `key` subcommand with `--json`, in an order each can run in: a
/// second passphrase added, changed and removed; the paper export and its
/// import; a second host's request, its key revoked; both rotations.
fn key_commands(workspace: &Workspace, contract: &mut Contract) {
    // `--json` commands run with `variable` set to `value` (a passphrase).
    let with = |variable: &'static str, value: &'static str| {
        move |args: &[&str]| {
            let mut command = workspace.command();
            command
                .env(variable, value)
                .args(["--json", "--repo"])
                .arg(workspace.repo())
                .args(args);
            let run = run_of(command.output().expect("run cairn"));
            assert_eq!(run.code, 0, "{args:?}\n{}{}", run.stdout, run.stderr);
            run.json()
        }
    };
    let with_new_passphrase = with("CAIRN_NEW_PASSWORD", "another passphrase");
    let added = with_new_passphrase(&["key", "add", "--passphrase", "--label", "spare"]);
    let slot = added["slot"].as_str().expect("slot").to_string();
    contract.record("key add", added);
    contract.record(
        "key remove",
        json_of(workspace, &["key", "remove", &slot]).0,
    );
    let (export, _) = json_of(workspace, &["key", "export"]);
    let paper = workspace.path("paper.txt");
    std::fs::write(&paper, export["export"].as_str().expect("export text")).expect("write export");
    contract.record("key export", export);
    let imported = with_new_passphrase(&["key", "import", paper.to_str().expect("utf-8")]);
    contract.record("key import", imported);
    contract.record("key passwd", with_new_passphrase(&["key", "passwd"]));
    // From here the repository opens with the new passphrase only.
    let owner = with("CAIRN_PASSWORD", "another passphrase");
    // A second host, with its own configuration directory.
    let mut command = workspace.command();
    command
        .env("CAIRN_CONFIG_DIR", workspace.path("second-host"))
        .args(["--json", "key", "host-init", "--label", "second"]);
    let run = run_of(command.output().expect("run cairn"));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let host = run.json();
    let host_key = host["signing_key"]
        .as_str()
        .expect("signing_key")
        .to_string();
    let request = host["request"].as_str().expect("request").to_string();
    contract.record("key host-init", host);
    contract.record(
        "key add",
        owner(&["key", "add", "--host", &request, "--write-only"]),
    );
    contract.record("key revoke", owner(&["key", "revoke", &host_key]));
    contract.record("key rotate", owner(&["key", "rotate"]));
    contract.record("key rotate --read", owner(&["key", "rotate", "--read"]));
}

/// `cairn --json --repo REPO ARGS`, which must succeed; its stdout parsed.
fn json_of(workspace: &Workspace, args: &[&str]) -> (Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = workspace.cairn_repo(&all);
    assert_eq!(
        run.code, 0,
        "cairn --json {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let value = serde_json::from_str(&run.stdout).unwrap_or_else(|error| {
        panic!(
            "{args:?}: stdout is not one JSON document ({error}):\n{}",
            run.stdout
        )
    });
    (value, run.stderr)
}

#[test]
fn every_json_output_has_the_fields_docs_json_md_lists() {
    let workspace = Workspace::new();
    let data = workspace.path("data");
    write(&data.join("notes/a.txt"), b"first\n");
    write(&data.join("notes/b.txt"), b"unchanged\n");
    write(&data.join("blob.bin"), &noise(27, 300_000));
    let component = format!("data={}", data.display());
    let mut contract = Contract::default();

    let (init, _) = json_of(&workspace, &["init"]);
    let public_key = init["public_key"].as_str().expect("public_key").to_string();
    contract.record("init", init);

    let backup_args = [
        "backup",
        "--component",
        &component,
        "--command",
        "dump=printf dumped",
        "--tag",
        "nightly",
    ];
    let (first, progress) = json_of(&workspace, &backup_args);
    let first_id = first["snapshot"].as_str().expect("snapshot").to_string();
    contract.record("backup", first);
    let lines: Vec<Value> = progress
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.get("progress").is_some())
        .collect();
    assert!(
        !lines.is_empty(),
        "a --json backup wrote no progress lines:\n{progress}"
    );
    for line in lines {
        contract.record("progress", line);
    }

    // The second night: one file changed, one added, one only chmod-ed.
    write(&data.join("notes/a.txt"), b"first, then more\n");
    write(&data.join("notes/c.txt"), b"new\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("notes/b.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let (second, _) = json_of(&workspace, &backup_args);
    contract.record("backup", second);

    contract.record("snapshots", json_of(&workspace, &["snapshots"]).0);
    contract.record("ls", json_of(&workspace, &["ls", "latest"]).0);
    contract.record("find", json_of(&workspace, &["find", "*.txt"]).0);
    contract.record(
        "diff",
        json_of(&workspace, &["diff", &first_id, "latest"]).0,
    );
    contract.record("stats", json_of(&workspace, &["stats"]).0);
    contract.record(
        "stats SNAPSHOT",
        json_of(&workspace, &["stats", "latest"]).0,
    );
    contract.record(
        "stats --keep-*",
        json_of(
            &workspace,
            &["stats", "--keep-last", "1", "--group-by", "none"],
        )
        .0,
    );
    contract.record("verify", json_of(&workspace, &["verify"]).0);
    contract.record("verify", json_of(&workspace, &["verify", "--read-data"]).0);
    let target = workspace.path("restored");
    contract.record(
        "restore",
        json_of(
            &workspace,
            &[
                "restore",
                "latest",
                "--target",
                target.to_str().expect("utf-8"),
            ],
        )
        .0,
    );
    let scratch = workspace.path("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let history = workspace.path("drills.jsonl");
    contract.record(
        "drill",
        json_of(
            &workspace,
            &[
                "drill",
                "--history",
                history.to_str().expect("utf-8"),
                "--scratch",
                scratch.to_str().expect("utf-8"),
            ],
        )
        .0,
    );
    contract.record(
        "tag",
        json_of(&workspace, &["tag", "--add", "kept", "latest"]).0,
    );
    let archive = workspace.path("data.tar");
    contract.record(
        "dump --output FILE",
        json_of(
            &workspace,
            &[
                "dump",
                "latest",
                "data",
                "--output",
                archive.to_str().expect("utf-8"),
            ],
        )
        .0,
    );

    let other = workspace.path("other");
    workspace
        .cairn(["--repo", other.to_str().expect("utf-8"), "init"])
        .ok();
    let (copy, _) = json_of(
        &workspace,
        &[
            "copy",
            "--from",
            workspace.repo().to_str().expect("utf-8"),
            "--to",
            other.to_str().expect("utf-8"),
        ],
    );
    contract.record("copy", copy);

    contract.record(
        "forget",
        json_of(
            &workspace,
            &[
                "forget",
                "--keep-last",
                "1",
                "--group-by",
                "none",
                "--dry-run",
            ],
        )
        .0,
    );
    let (forget, _) = json_of(
        &workspace,
        &["forget", "--keep-last", "1", "--group-by", "none"],
    );
    assert_eq!(
        forget["forgotten"],
        serde_json::json!([first_id]),
        "{forget}"
    );
    contract.record("forget", forget);
    contract.record(
        "snapshots --forgotten",
        json_of(&workspace, &["snapshots", "--forgotten"]).0,
    );
    contract.record("prune", json_of(&workspace, &["prune"]).0);
    contract.record("repair index", json_of(&workspace, &["repair", "index"]).0);
    contract.record(
        "repair snapshots",
        json_of(&workspace, &["repair", "snapshots"]).0,
    );
    contract.record("key list", json_of(&workspace, &["key", "list"]).0);
    contract.record("trust", json_of(&workspace, &["trust", &public_key]).0);

    let plan = workspace.path("cairn.toml");
    std::fs::write(
        &plan,
        format!(
            "repository = {:?}\n[[component]]\nname = \"data\"\nkind = \"files\"\npath = {:?}\n",
            workspace.repo().display().to_string(),
            data.display().to_string()
        ),
    )
    .expect("write plan");
    let checked = workspace.cairn([
        "--json",
        "plan",
        "check",
        "--plan",
        plan.to_str().expect("utf-8"),
    ]);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    contract.record("plan check", checked.json());

    // An error: one JSON object on stderr.
    let failed = workspace.cairn([
        "--json",
        "--repo",
        workspace.path("nowhere").to_str().expect("utf-8"),
        "snapshots",
    ]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let error: Vec<Value> = failed
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(error.len(), 1, "{}", failed.stderr);
    contract.record("error", error.into_iter().next().expect("one"));

    // Last: they change the passphrase the repository opens with.
    key_commands(&workspace, &mut contract);

    let wrong = contract.mismatches(|section| !S3_LOCK_SECTIONS.contains(&section));
    assert!(
        wrong.is_empty(),
        "the --json output and docs/JSON.md disagree:\n  {}",
        wrong.join("\n  ")
    );
}
