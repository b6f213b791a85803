//! Plan files: one declarative file runs the nightly job (components of
//! every kind, excludes, hooks, a critical failure), and `plan check`
//! names each mistake with its line.

mod common;
use common::*;

use std::path::Path;

fn create_database(path: &Path) {
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('create table t(id integer primary key, v text)')
db.executemany('insert into t(v) values (?)', [('row',)] * 100)
db.commit()",
        )
        .arg(path)
        .status()
        .expect("python3 runs");
    assert!(status.success());
}

#[test]
fn a_plan_runs_every_kind_with_hooks_and_reports_a_critical_failure() {
    let workspace = Workspace::new();
    workspace.init();
    let site = workspace.path("site");
    write(&site.join("memory/a.md"), b"# kept\n");
    write(&site.join("memory/scratch.tmp"), b"left out\n");
    write(&site.join("memory/cache/big.bin"), &noise(1, 10_000));
    create_database(&site.join("app.db"));
    let log = site.join("hooks.log");
    let plan = site.join("cairn.toml");
    write(
        &plan,
        format!(
            r#"repository = "{repo}"
tags = ["nightly"]
labels = {{ env = "test" }}

[[component]]
name = "db"
kind = "sqlite"
path = "app.db"
before = "echo before $CAIRN_COMPONENT $CAIRN_PHASE >> {log}"
after = "echo after $CAIRN_COMPONENT $CAIRN_RESULT >> {log}"

[[component]]
name = "memory"
kind = "files"
path = "memory"
exclude = ["*.tmp", "cache"]

[[component]]
name = "pg"
kind = "command"
command = "echo connection refused >&2; exit 1"
critical = true
after = "echo after $CAIRN_COMPONENT $CAIRN_RESULT >> {log}"

[[component]]
name = "vectors"
kind = "command"
command = "printf vectors"
before = "exit 9"
"#,
            repo = workspace.repo().display(),
            log = log.display()
        )
        .as_bytes(),
    );
    // No --repo: the plan names the repository.
    let run = workspace.cairn([
        "--json".as_ref(),
        "backup".as_ref(),
        "--plan".as_ref(),
        plan.as_os_str(),
    ]);
    assert_eq!(run.code, 7, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let names: Vec<&str> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|component| component["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "memory"], "{report}");
    let problems: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["component"].as_str().unwrap().to_string(),
                p["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "pg");
    assert!(problems[0].1.contains("connection refused"), "{problems:?}");
    assert_eq!(problems[1].0, "vectors");
    assert!(problems[1].1.contains("before-hook"), "{problems:?}");
    assert!(
        run.stderr.contains("critical") && run.stderr.contains("pg"),
        "{}",
        run.stderr
    );

    let hooks = std::fs::read_to_string(&log).unwrap();
    assert_eq!(hooks, "before db before\nafter db ok\nafter pg failed\n");

    let snapshot = report["snapshot"].as_str().unwrap().to_string();
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let listed = &listed["snapshots"][0];
    assert_eq!(listed["tags"][0], "nightly");
    assert_eq!(listed["labels"]["env"], "test");
    let target = workspace.path("restored");
    workspace.restore(&snapshot, &target).ok();
    assert_eq!(
        std::fs::read(target.join("memory/a.md")).unwrap(),
        b"# kept\n"
    );
    assert!(!target.join("memory/scratch.tmp").exists());
    assert!(!target.join("memory/cache").exists());
    assert!(target.join("db/app.db").is_file());
}

#[test]
fn plan_check_names_each_mistake_with_its_line() {
    let workspace = Workspace::new();
    let dir = workspace.path("plans");
    write(
        &dir.join("notes.txt"),
        b"not a database at all, just some text\n",
    );
    let check = |name: &str, text: &str| {
        let path = dir.join(name);
        write(&path, text.as_bytes());
        workspace.cairn([
            "plan".as_ref(),
            "check".as_ref(),
            "--plan".as_ref(),
            path.as_os_str(),
        ])
    };

    let run = check(
        "kind.toml",
        "[[component]]\nname = \"x\"\nkind = \"tape\"\npath = \".\"\n",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("kind.toml:3") && run.stderr.contains("tape"),
        "{}",
        run.stderr
    );

    let run = check(
        "key.toml",
        "[[component]]\nname = \"x\"\nkind = \"files\"\npath = \".\"\ncolour = \"red\"\n",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("key.toml:5") && run.stderr.contains("colour"),
        "{}",
        run.stderr
    );

    let run = check(
        "many.toml",
        "[[component]]\nname = \"files\"\nkind = \"files\"\npath = \"missing-dir\"\n\n[[component]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"notes.txt\"\n\n[[component]]\nname = \"pg\"\nkind = \"command\"\n\n[retention]\nkeep_within = \"3x\"\n",
    );
    assert_eq!(run.code, 1);
    for expected in [
        "many.toml:4: component \"files\"",
        "missing-dir",
        "many.toml:9: component \"db\"",
        "not a SQLite database",
        "many.toml:11: component \"pg\" needs a command",
        "many.toml:15: [retention]",
        "3x",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }

    let run = check(
        "chunking.toml",
        "[[component]]\nname = \"a\"\nkind = \"files\"\npath = \"notes.txt\"\nchunking = \"pagez\"\n\n[[component]]\nname = \"b\"\nkind = \"files\"\npath = \"notes.txt\"\nchunking = \"fixed:3\"\n",
    );
    assert_eq!(run.code, 1);
    for expected in [
        "chunking.toml:5: component \"a\": chunking \"pagez\": expected default",
        "chunking.toml:11: component \"b\": chunking \"fixed:3\"",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }

    let run = check(
        "good.toml",
        "[[component]]\nname = \"notes\"\nkind = \"files\"\npath = \"notes.txt\"\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("valid"), "{}", run.stdout);
}

#[test]
fn forget_applies_the_plans_retention_to_the_plans_repository() {
    let workspace = Workspace::new();
    workspace.init();
    let site = workspace.path("site");
    write(&site.join("docs/a.txt"), b"one\n");
    let plan = site.join("cairn.toml");
    write(
        &plan,
        format!(
            "repository = \"{}\"\n\n[[component]]\nname = \"docs\"\nkind = \"files\"\npath = \"docs\"\n\n[retention]\nkeep_last = 1\n",
            workspace.repo().display()
        )
        .as_bytes(),
    );
    for round in 0..3 {
        write(
            &site.join("docs/a.txt"),
            format!("round {round}\n").as_bytes(),
        );
        workspace
            .cairn(["backup".as_ref(), "--plan".as_ref(), plan.as_os_str()])
            .ok();
    }
    let run = workspace
        .cairn([
            "--json".as_ref(),
            "forget".as_ref(),
            "--plan".as_ref(),
            plan.as_os_str(),
        ])
        .ok();
    assert_eq!(
        run.json()["forgotten"].as_array().unwrap().len(),
        2,
        "{}",
        run.stdout
    );
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1);
    let last = listed["snapshots"][0]["id"].as_str().unwrap().to_string();
    let cat = workspace
        .cairn_repo(["cat", last.as_str(), "docs/a.txt"])
        .ok();
    assert_eq!(cat.stdout, "round 2\n");
}

#[test]
fn hooks_can_be_given_with_flags_too() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("docs");
    write(&source.join("a.txt"), b"a\n");
    let log = workspace.path("hooks.log");
    let component = format!("docs={}", source.display());
    let before = format!("docs=echo before $CAIRN_COMPONENT >> {}", log.display());
    let after = format!("docs=echo after $CAIRN_RESULT >> {}", log.display());
    workspace
        .cairn_repo([
            "backup",
            "--component",
            &component,
            "--before",
            &before,
            "--after",
            &after,
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "before docs\nafter ok\n"
    );
    let unknown =
        workspace.cairn_repo(["backup", "--component", &component, "--before", "nope=true"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("--before") && unknown.stderr.contains("nope"),
        "{}",
        unknown.stderr
    );
}
