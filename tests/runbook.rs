//! Restores as an incident runbook runs them, against a small fake service
//! (a shell script with `stop`, `start` and `health` that keeps its state
//! in a file and logs every call) over a real SQLite database: the
//! before-hook stops the service, a failed health check rolls the target
//! back byte for byte, and the after-hook always starts it again.

mod common;
use common::pty::on_terminal_answering;
use common::*;

use std::fs;
use std::path::Path;
use std::process::Command;

/// Runs SQL on the database at `path` with the sqlite3 shell; its stdout.
fn sql(path: &Path, statements: &str) -> String {
    let output = Command::new("sqlite3")
        .arg(path)
        .arg(statements)
        .output()
        .expect("sqlite3 runs");
    assert!(
        output.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The fake service. `stop` and `start` set its state; `health` passes
/// only if the database has the `sessions` table this version of the
/// application needs (a snapshot from before its migration fails it).
/// Every call is logged with CAIRN_PHASE, CAIRN_RESULT and
/// CAIRN_COMPONENT.
const SERVICE: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$1 phase=$CAIRN_PHASE result=$CAIRN_RESULT component=$CAIRN_COMPONENT" >> "$dir/log"
case "$1" in
  stop) echo stopped > "$dir/state" ;;
  start) echo running > "$dir/state" ;;
  health)
    test "$(cat "$dir/state")" = stopped || { echo "health: the service must be stopped" >&2; exit 1; }
    sqlite3 "$dir/live/app/app.db" "select count(*) from sessions" > /dev/null || exit 1 ;;
  fail) exit 3 ;;
esac
"#;

/// A workspace with a snapshot of `app` (a database holding `notes`, from
/// before the `sessions` migration), restored into `live/`, then migrated
/// and written to by the running service.
struct Service {
    workspace: Workspace,
    snapshot: String,
}

impl Service {
    fn new() -> Self {
        let workspace = Workspace::new();
        workspace.init();
        let source = workspace.path("source/app.db");
        fs::create_dir_all(source.parent().expect("parent")).expect("source dir");
        sql(
            &source,
            "create table notes(id integer primary key, text text); insert into notes(text) values ('first'), ('second');",
        );
        let snapshot =
            workspace.backup_json([format!("--sqlite=app={}", source.display())])["snapshot"]
                .as_str()
                .expect("snapshot id")
                .to_string();
        workspace
            .cairn_repo([
                "restore",
                snapshot.as_str(),
                "--target",
                workspace.path("live").to_str().expect("utf-8"),
            ])
            .ok();
        let script = workspace.path("service.sh");
        fs::write(&script, SERVICE).expect("service script");
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        fs::write(workspace.path("state"), "running\n").expect("state");
        // The running application migrates and writes.
        sql(
            &workspace.path("live/app/app.db"),
            "create table sessions(id integer primary key); insert into notes(text) values ('third');",
        );
        Service {
            workspace,
            snapshot,
        }
    }

    fn script(&self, action: &str) -> String {
        format!("{} {action}", self.workspace.path("service.sh").display())
    }

    fn database(&self) -> std::path::PathBuf {
        self.workspace.path("live/app/app.db")
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.workspace.path("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn state(&self) -> String {
        fs::read_to_string(self.workspace.path("state"))
            .expect("state")
            .trim()
            .to_string()
    }

    /// `cairn --json restore SNAPSHOT --target live --yes EXTRA...`
    fn restore(&self, extra: &[String]) -> Run {
        let mut args = vec![
            "--json".to_string(),
            "restore".to_string(),
            self.snapshot.clone(),
            "--target".to_string(),
            self.workspace.path("live").display().to_string(),
            "--yes".to_string(),
        ];
        args.extend(extra.iter().cloned());
        self.workspace.cairn_repo(args)
    }
}

#[test]
fn a_failed_check_rolls_the_database_back_byte_for_byte_and_restarts_the_service() {
    let service = Service::new();
    let before = fs::read(service.database()).expect("live database");
    let report_path = service.workspace.path("incident-42.json");

    let run = service
        .restore(&[
            "--before".into(),
            service.script("stop"),
            "--check".into(),
            service.script("health"),
            "--after".into(),
            service.script("start"),
            "--report".into(),
            report_path.display().to_string(),
        ])
        .expect(10);
    let report = run.json();
    assert_eq!(report["result"], "rolled-back", "{report}");
    assert_eq!(report["rolled_back"], true);
    assert!(
        run.stderr.contains("rolled back"),
        "the user is told: {}",
        run.stderr
    );
    assert_eq!(
        fs::read(service.database()).expect("live database"),
        before,
        "the database is exactly what it was before the restore"
    );
    assert_eq!(sql(&service.database(), "select count(*) from notes"), "3");
    assert_eq!(service.state(), "running", "the after-hook restarted it");
    assert_eq!(
        service.log(),
        [
            "stop phase=before result= component=app",
            "health phase=check result= component=app",
            "start phase=after result=rolled-back component=app",
        ]
    );
    let phases: Vec<(&str, bool)> = report["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|hook| {
            (
                hook["phase"].as_str().expect("phase"),
                hook["ok"].as_bool().expect("ok"),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [("before", true), ("check", false), ("after", true)]
    );

    // The report for the incident ticket.
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).expect("JSON report")).expect("JSON");
    assert_eq!(written["snapshot"], service.snapshot.as_str());
    assert_eq!(written["manifest_hash"], service.snapshot.as_str());
    assert_eq!(written["result"], "rolled-back");
    assert_eq!(written["exit_code"], 10);
    assert_eq!(written["rolled_back"], true);
    let signer = written["signer"].as_str().expect("signer");
    assert_eq!(signer.len(), 64, "a public key in hex: {signer}");
    assert!(
        verdict(&written, "signature")["detail"]
            .as_str()
            .expect("detail")
            .contains(signer)
    );
    assert_eq!(written["plan"]["at_risk"]["overwrite"], 1);
    assert_eq!(
        written["plan"]["at_risk"]["overwrite_bytes"],
        before.len() as u64
    );
    assert_eq!(written["plan"]["components"][0]["name"], "app");
    let timing = &written["timings"][0];
    assert_eq!(timing["component"], "app");
    assert!(timing["write_seconds"].as_f64().expect("seconds") >= 0.0);
    assert!(
        timing["check_seconds"].as_f64().is_none(),
        "no component check"
    );
    assert_eq!(written["hooks"].as_array().expect("hooks").len(), 3);
    assert_eq!(written["hooks"][1]["phase"], "check");
    assert_eq!(written["hooks"][1]["ok"], false);
    let safety = written["safety_snapshot"]
        .as_str()
        .expect("safety snapshot");
    assert_eq!(
        safety,
        report["safety_snapshot"].as_str().expect("in --json too")
    );
    let markdown = fs::read_to_string(service.workspace.path("incident-42.md")).expect("Markdown");
    assert!(
        markdown.starts_with("# cairn restore: rolled-back"),
        "{markdown}"
    );
    assert!(markdown.contains(&service.snapshot) && markdown.contains(safety));
}

#[test]
fn a_passing_check_from_the_plan_keeps_the_restore() {
    let service = Service::new();
    // The plan's check only asks for the notes table, which the snapshot
    // has; the whole-restore hooks come from its [restore] table and a
    // component's check from its own.
    let plan = service.workspace.path("cairn.toml");
    fs::write(
        &plan,
        format!(
            r#"repository = "{repo}"

[[component]]
name = "app"
kind = "sqlite"
path = "{source}"

[component.restore]
check = "sqlite3 \"$CAIRN_FILE\" 'select count(*) from notes' >/dev/null && echo \"check $CAIRN_COMPONENT\" >> {log}"

[restore]
before = "{stop}"
after = "{start}"
"#,
            repo = service.workspace.repo().display(),
            source = service.workspace.path("source/app.db").display(),
            log = service.workspace.path("log").display(),
            stop = service.script("stop"),
            start = service.script("start"),
        ),
    )
    .expect("plan");
    // The source is what was lost: the plan still serves the restore.
    fs::remove_file(service.workspace.path("source/app.db")).expect("lose the source");
    let run = service
        .workspace
        .cairn([
            "--json".to_string(),
            "restore".to_string(),
            service.snapshot.clone(),
            "--target".to_string(),
            service.workspace.path("live").display().to_string(),
            "--plan".to_string(),
            plan.display().to_string(),
            "--yes".to_string(),
        ])
        .ok();
    assert_eq!(run.json()["result"], "restored");
    assert_eq!(
        sql(&service.database(), "select count(*) from notes"),
        "2",
        "the snapshot's rows"
    );
    assert_eq!(service.state(), "running");
    assert_eq!(
        service.log(),
        [
            "stop phase=before result= component=app",
            "check app",
            "start phase=after result=restored component=app",
        ]
    );
}

#[test]
fn a_failed_before_hook_touches_nothing_and_the_after_hook_still_runs() {
    let service = Service::new();
    let before = fs::read(service.database()).expect("live database");
    let run = service
        .restore(&[
            "--before".into(),
            service.script("fail"),
            "--after".into(),
            service.script("start"),
        ])
        .expect(1);
    assert!(run.stderr.contains("nothing in the target was touched"));
    assert_eq!(fs::read(service.database()).expect("database"), before);
    assert_eq!(
        service.log(),
        [
            "fail phase=before result= component=app",
            "start phase=after result=before-failed component=app",
        ]
    );
}

/// `restore SNAPSHOT --target live` without --yes, as a command.
fn unconfirmed(service: &Service) -> Command {
    let mut command = service.workspace.command();
    command
        .arg("--repo")
        .arg(service.workspace.repo())
        .arg("restore")
        .arg(&service.snapshot)
        .arg("--target")
        .arg(service.workspace.path("live"));
    command
}

#[test]
fn overwriting_asks_on_a_terminal_and_needs_yes_without_one() {
    let service = Service::new();
    let before = fs::read(service.database()).expect("live database");

    // No terminal: refused as a usage error, naming --yes and the stakes.
    let run = run_of(
        unconfirmed(&service)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run cairn"),
    )
    .expect(2);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert!(
        run.stderr.contains("overwrites 1 existing file(s)"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(service.database()).expect("database"), before);

    // A terminal, answered no: nothing written.
    let declined = on_terminal_answering(unconfirmed(&service), "n");
    assert_eq!(declined.code, 1, "{}", declined.terminal);
    assert!(declined.terminal.contains("Proceed? [y/N]"));
    assert!(declined.terminal.contains("app -> "), "the plan is shown");
    assert_eq!(fs::read(service.database()).expect("database"), before);

    // Answered yes: restored.
    let accepted = on_terminal_answering(unconfirmed(&service), "y");
    assert_eq!(accepted.code, 0, "{}", accepted.terminal);
    assert_eq!(sql(&service.database(), "select count(*) from notes"), "2");

    // The same restore again changes nothing, so asks nothing.
    run_of(
        unconfirmed(&service)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run cairn"),
    )
    .ok();
}

/// A workspace with a `data` directory component backed up by `backup
/// EXTRA...`; returns the snapshot's id.
fn backup_data(workspace: &Workspace, contents: &str, extra: &[&str]) -> String {
    let data = workspace.path("data");
    fs::create_dir_all(&data).expect("data dir");
    fs::write(data.join("file.txt"), contents).expect("data file");
    let mut args = vec![format!("--component=data={}", data.display())];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    workspace.backup_json(args)["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// The verdict of `check` in a restore's JSON.
fn verdict<'a>(report: &'a serde_json::Value, check: &str) -> &'a serde_json::Value {
    report["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|verdict| verdict["check"] == check)
        .unwrap_or_else(|| panic!("no {check} verdict in {report}"))
}

#[test]
fn a_snapshot_of_a_newer_application_version_is_refused_unless_allowed() {
    let workspace = Workspace::new();
    workspace.init();
    let snapshot = backup_data(&workspace, "v2.1", &["--app-version", "2.1.0"]);
    let restore = |target: &str, extra: &[&str]| {
        let mut args = vec!["--json", "restore", snapshot.as_str(), "--target", target];
        args.extend_from_slice(extra);
        let target = workspace.path(target);
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all[4] = target.display().to_string();
        workspace.cairn_repo(all)
    };

    let refused = restore("older", &["--current-version", "2.0.5"]).expect(5);
    let report = refused.json();
    assert_eq!(report["refused"], "version");
    assert_eq!(verdict(&report, "version")["status"], "version-ahead");
    assert!(!workspace.path("older").exists(), "nothing written");
    // Semver precedence, not string order: 2.10.0 is newer than 2.1.0.
    restore("newer", &["--current-version", "v2.10.0"]).ok();
    restore("same", &["--current-version", "2.1.0"]).ok();
    // A pre-release of 2.1.0 is older than 2.1.0.
    restore("pre", &["--current-version", "2.1.0-rc.1"]).expect(5);
    let allowed = restore(
        "allowed",
        &["--current-version", "2.0.5", "--allow-version-ahead"],
    )
    .ok();
    assert_eq!(
        verdict(&allowed.json(), "version")["status"],
        "version-ahead",
        "overridden, still reported"
    );
    assert_eq!(
        fs::read_to_string(workspace.path("allowed/data/file.txt")).expect("restored"),
        "v2.1"
    );

    // Not semantic versions: only equal passes.
    let builds = Workspace::new();
    builds.init();
    let plan = builds.path("cairn.toml");
    fs::create_dir_all(builds.path("data")).expect("data");
    fs::write(builds.path("data/file.txt"), "build").expect("file");
    fs::write(
        &plan,
        format!(
            "repository = \"{}\"\napp_version = \"build-77\"\n\n[[component]]\nname = \"data\"\nkind = \"files\"\npath = \"{}\"\n",
            builds.repo().display(),
            builds.path("data").display()
        ),
    )
    .expect("plan");
    builds
        .cairn(["backup", "--plan", plan.to_str().expect("utf-8")])
        .ok();
    let target = builds.path("t");
    let target = target.to_str().expect("utf-8");
    let unequal = builds
        .cairn_repo([
            "--json",
            "restore",
            "--target",
            target,
            "--current-version",
            "build-78",
        ])
        .expect(5);
    assert!(
        verdict(&unequal.json(), "version")["detail"]
            .as_str()
            .expect("detail")
            .contains("not both semantic versions"),
        "{}",
        unequal.stdout
    );
    builds
        .cairn_repo([
            "restore",
            "--target",
            target,
            "--current-version",
            "build-77",
        ])
        .ok();

    // A snapshot that records no version is not compared.
    let old = Workspace::new();
    old.init();
    backup_data(&old, "old", &[]);
    let run = old
        .cairn_repo([
            "--json",
            "restore",
            "--target",
            old.path("t").to_str().expect("utf-8"),
            "--current-version",
            "1.0.0",
        ])
        .ok();
    assert!(
        verdict(&run.json(), "version")["detail"]
            .as_str()
            .expect("detail")
            .contains("records no application version")
    );
}

#[test]
fn at_chooses_the_newest_snapshot_at_or_before_a_time() {
    let workspace = Workspace::new();
    workspace.init();
    let mut snapshots = Vec::new();
    for contents in ["one", "two", "three"] {
        snapshots.push(backup_data(&workspace, contents, &[]));
        // Whole seconds apart, so a time to the second falls between.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let time_of = |id: &str| {
        listed["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .find(|snapshot| snapshot["id"] == id)
            .and_then(|snapshot| snapshot["time"].as_str())
            .expect("time")
            .to_string()
    };
    let second = time_of(&snapshots[1]);
    let restore_at = |target: &str, at: &str| {
        let target = workspace.path(target);
        let run = run_of(
            workspace
                .command()
                .env("TZ", "UTC")
                .arg("--repo")
                .arg(workspace.repo())
                .args(["--json", "restore", "--at", at, "--target"])
                .arg(&target)
                .output()
                .expect("run cairn"),
        );
        (run, target)
    };

    // Exactly the second snapshot's time: the second snapshot.
    let (run, target) = restore_at("exact", &second);
    let run = run.ok();
    assert_eq!(run.json()["snapshot"], snapshots[1].as_str());
    assert_eq!(
        fs::read_to_string(target.join("data/file.txt")).expect("restored"),
        "two"
    );

    // Local time to the second (TZ=UTC), just before it: the first.
    let local = format!("{} {}", &second[..10], &second[11..19]);
    let (run, target) = restore_at("local", &local);
    assert_eq!(run.ok().json()["snapshot"], snapshots[0].as_str());
    assert_eq!(
        fs::read_to_string(target.join("data/file.txt")).expect("restored"),
        "one"
    );

    // Before every snapshot: none, said so.
    let (run, target) = restore_at("none", "2001-01-01 00:00");
    let run = run.expect(1);
    assert!(run.stderr.contains("at or before"), "{}", run.stderr);
    assert!(!target.exists());
    let (run, _) = restore_at("bad", "last tuesday");
    // A time that does not parse is a usage mistake (exit 2).
    assert!(run.expect(2).stderr.contains("--at"));
}

#[test]
fn a_failed_check_on_a_new_target_removes_what_the_restore_created() {
    let workspace = Workspace::new();
    workspace.init();
    backup_data(&workspace, "fresh", &[]);
    let target = workspace.path("new");
    let run = workspace
        .cairn_repo([
            "--json",
            "restore",
            "--target",
            target.to_str().expect("utf-8"),
            "--check",
            "test \"$(cat \"$CAIRN_TARGET/data/file.txt\")\" = expected",
        ])
        .expect(10);
    assert_eq!(run.json()["result"], "rolled-back");
    assert!(
        run.json()["safety_snapshot"].is_null(),
        "nothing existed to save"
    );
    assert!(
        !target.join("data").exists(),
        "the component the restore created is gone"
    );
}
