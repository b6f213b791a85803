//! Restores as an incident runbook runs them, against a small fake service
//! (a shell script with `stop`, `start` and `health` that keeps its state
//! in a file and logs every call) over a real SQLite database: the
//! before-hook stops the service, a failed health check rolls the target
//! back byte for byte, and the after-hook always starts it again.

mod common;
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
    sqlite3 "$dir/live/app" "select count(*) from sessions" > /dev/null || exit 1 ;;
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
            &workspace.path("live/app"),
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
        self.workspace.path("live/app")
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
        ];
        args.extend(extra.iter().cloned());
        self.workspace.cairn_repo(args)
    }
}

#[test]
fn a_failed_check_rolls_the_database_back_byte_for_byte_and_restarts_the_service() {
    let service = Service::new();
    let before = fs::read(service.database()).expect("live database");

    let run = service
        .restore(&[
            "--before".into(),
            service.script("stop"),
            "--check".into(),
            service.script("health"),
            "--after".into(),
            service.script("start"),
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
