//! Drill: the quarterly restore rehearsal. Restores each component of a
//! snapshot into a scratch directory (every file is checked against its
//! hash as it is written), runs the kind's own check, times each, and
//! gives the history record of the drill.
//!
//! 0. With a plan, [`choose_snapshot`] picks the newest snapshot of the
//!    plan's host that holds (or failed) one of the plan's components, and
//!    says why; the drill then fails each plan component that snapshot
//!    lacks, failed in, or left files out of: a rehearsal of a snapshot
//!    that lost the database that night must not pass.
//! 1. Make a scratch directory (removed when the drill ends).
//! 2. For each component of the snapshot, in order: plan and execute its
//!    restore into the scratch directory (progress phase `restore`); if
//!    that went cleanly, run SQLite's integrity check on a database
//!    component and then the component's check command, if it has one,
//!    with `CAIRN_FILE` and `CAIRN_COMPONENT` set (phase `drill-check`).
//!    Any problem fails the component, and a component that fails does
//!    not stop the others.
//! 3. [`DrillReport::record`] is the JSON line for the drill history;
//!    [`append_history`] appends it, synced.
//!
//! Never writes to the repository or outside the scratch directory and
//! the history file; never prints.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::{ComponentKind, ComponentRecord, SAFETY_TAG, SnapshotBody};
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::hooks::Hook;
use crate::ops::restore::{
    DatabaseCheck, RestoreOptions, Selection, Sources, execute_restore, plan_restore,
};
use crate::progress::{Amount, Phase, Progress};
use crate::repository::{FUTURE_TOLERANCE_SECONDS, Repository};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Where the scratch directory is made; the system's temporary
    /// directory when `None`.
    pub scratch_parent: Option<PathBuf>,
    /// Each component's own check command (run with `sh -c`), by name.
    pub checks: BTreeMap<String, String>,
    /// The plan's components: each must be in the snapshot, whole.
    pub required: Vec<String>,
    /// Why this snapshot was chosen, for the history.
    pub chosen: String,
}

/// A snapshot chosen for a drill, and why.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub id: Id,
    pub body: SnapshotBody,
    pub why: String,
}

/// The newest trusted snapshot (not a safety snapshot, not dated ahead of
/// this machine's clock) taken on `host` (this machine's name when `None`)
/// that holds, or failed, at least one of `components`: the plan's last
/// run, whatever it stored. Snapshots of other plans on the same host (no
/// component in common) are passed over.
pub fn choose_snapshot(
    repository: &Repository,
    trusted: &[PublicKey],
    host: Option<&str>,
    components: &[String],
) -> Result<Chosen> {
    let host = host.map_or_else(crate::ops::common::host_name, str::to_string);
    let now = jiff::Timestamp::now();
    let mut newest: Option<(String, Id, SnapshotBody)> = None;
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        let body = match repository.read_manifest(&id).and_then(|manifest| {
            manifest.verified_body(repository.id(), trusted, &format!("snapshot {id}"))
        }) {
            Ok(body) => body,
            Err(error @ StoreError::Io { .. }) => return Err(error),
            // Gone since the listing, or not one to trust: never drilled.
            Err(_) => continue,
        };
        if body.host != host || body.tags.iter().any(|tag| tag == SAFETY_TAG) {
            continue;
        }
        let Ok(time) = body.time.parse::<jiff::Timestamp>() else {
            continue;
        };
        if time.as_second() > now.as_second().saturating_add(FUTURE_TOLERANCE_SECONDS) {
            continue;
        }
        let of_the_plan = components.iter().any(|name| {
            body.component(name).is_some()
                || body
                    .problems
                    .iter()
                    .any(|problem| &problem.component == name)
        });
        if of_the_plan
            && newest
                .as_ref()
                .is_none_or(|(best, best_id, _)| (&body.time, &id) > (best, best_id))
        {
            newest = Some((body.time.clone(), id, body));
        }
    }
    let Some((_, id, body)) = newest else {
        return Err(StoreError::SnapshotNotFound(format!(
            "a snapshot of host {host:?} holding any of the plan's components ({})",
            components.join(", ")
        )));
    };
    let why = format!(
        "the newest snapshot of host {host:?} from the plan (components {})",
        components.join(", ")
    );
    Ok(Chosen { id, body, why })
}

/// Each of the `required` components that `body` does not hold whole, with
/// why: missing, failed in that backup, or with files left out (the
/// snapshot is marked incomplete).
pub fn plan_problems(body: &SnapshotBody, required: &[String]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for name in required {
        let mine = body
            .problems
            .iter()
            .filter(|problem| &problem.component == name);
        if body.component(name).is_none() {
            let why = match mine.clone().find(|problem| problem.path.is_empty()) {
                Some(failure) => format!(
                    "failed in that backup ({}); the snapshot does not hold it",
                    failure.problem
                ),
                None => "missing from the snapshot, although the plan has it".to_string(),
            };
            found.push((name.clone(), why));
            continue;
        }
        for problem in mine {
            found.push((
                name.clone(),
                format!(
                    "the snapshot is marked incomplete: {}: {}",
                    problem.path, problem.problem
                ),
            ));
        }
    }
    found
}

/// How one component fared.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentDrill {
    pub name: String,
    pub kind: ComponentKind,
    /// Restoring and checking it.
    pub seconds: f64,
    pub files: u64,
    pub bytes: u64,
    /// Empty when it restored and passed its checks.
    pub problems: Vec<String>,
}

impl ComponentDrill {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DrillReport {
    pub snapshot: Id,
    /// When the snapshot was taken.
    pub snapshot_time: String,
    /// Why this snapshot was rehearsed.
    pub chosen: String,
    /// When the drill ended.
    pub time: String,
    /// The whole drill.
    pub seconds: f64,
    pub components: Vec<ComponentDrill>,
}

impl DrillReport {
    /// Whether every component restored and passed its checks.
    pub fn ok(&self) -> bool {
        self.components.iter().all(ComponentDrill::ok)
    }

    /// The drill's line in the history, naming the repository drilled.
    pub fn record(&self, repository: &str) -> Value {
        json!({
            "time": self.time,
            "repository": repository,
            "snapshot": self.snapshot.to_hex(),
            "snapshot_time": self.snapshot_time,
            "chosen": self.chosen,
            "ok": self.ok(),
            "seconds": self.seconds,
            "components": self.components.iter().map(|component| json!({
                "name": component.name,
                "kind": component.kind,
                "ok": component.ok(),
                "seconds": component.seconds,
                "files": component.files,
                "bytes": component.bytes,
                "problems": component.problems,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Drills `snapshot` (whose body the caller has verified).
pub fn drill(
    repository: &Repository,
    index: &dyn IndexCache,
    snapshot: Id,
    body: &SnapshotBody,
    options: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let mut scratch = tempfile::Builder::new();
    scratch.prefix("cairn-drill-");
    let scratch = match &options.scratch_parent {
        Some(directory) => scratch.tempdir_in(directory),
        None => scratch.tempdir(),
    }
    .map_err(|error| StoreError::io("creating the drill's scratch directory", error))?;
    let rehearsal = Rehearsal {
        repository,
        index,
        snapshot,
        body,
        scratch: scratch.path(),
        progress,
    };
    let started = Instant::now();
    let mut components: Vec<ComponentDrill> = body
        .components
        .iter()
        .map(|component| {
            let check = options.checks.get(&component.name).map(String::as_str);
            rehearsal.component(component, check)
        })
        .collect();
    for (name, why) in plan_problems(body, &options.required) {
        match components.iter_mut().find(|drilled| drilled.name == name) {
            Some(drilled) => drilled.problems.push(why),
            None => components.push(ComponentDrill {
                name,
                kind: ComponentKind::Directory,
                seconds: 0.0,
                files: 0,
                bytes: 0,
                problems: vec![why],
            }),
        }
    }
    Ok(DrillReport {
        snapshot,
        snapshot_time: body.time.clone(),
        chosen: options.chosen.clone(),
        time: crate::ops::common::now_rfc3339(),
        seconds: started.elapsed().as_secs_f64(),
        components,
    })
}

/// What every component's drill shares.
struct Rehearsal<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    snapshot: Id,
    body: &'a SnapshotBody,
    scratch: &'a Path,
    progress: &'a dyn Progress,
}

impl Rehearsal<'_> {
    fn component(&self, component: &ComponentRecord, check: Option<&str>) -> ComponentDrill {
        self.progress.component(&component.name);
        let started = Instant::now();
        let mut drilled = ComponentDrill {
            name: component.name.clone(),
            kind: component.kind,
            seconds: 0.0,
            files: 0,
            bytes: 0,
            problems: Vec::new(),
        };
        let destination = self.restore(component, &mut drilled);
        if let (true, Some(destination)) = (drilled.ok(), destination) {
            self.progress.phase(Phase::DrillCheck, Amount::items(1));
            drilled.problems.extend(check_component(
                component.kind,
                &component.name,
                &destination,
                check,
            ));
            self.progress.advance(Amount::items(1));
        }
        drilled.seconds = started.elapsed().as_secs_f64();
        drilled
    }

    /// Restores one component into the scratch directory, noting what was
    /// written and every problem in `drilled`; returns where it landed.
    fn restore(
        &self,
        component: &ComponentRecord,
        drilled: &mut ComponentDrill,
    ) -> Option<PathBuf> {
        let options = RestoreOptions {
            target: self.scratch.to_path_buf(),
            selection: Selection {
                only: vec![component.name.clone()],
                ..Selection::default()
            },
            delete: false,
            ..RestoreOptions::default()
        };
        let (repository, index) = (self.repository, self.index);
        let sources = Sources::new(&[]);
        let restored = plan_restore(
            repository,
            index,
            &sources,
            self.snapshot,
            self.body,
            &options,
        )
        .and_then(|plan| {
            let outcome = execute_restore(repository, index, &sources, &plan, None, self.progress)?;
            Ok((plan, outcome))
        });
        match restored {
            Err(error) => {
                drilled.problems.push(format!("restore failed: {error}"));
                None
            }
            Ok((plan, outcome)) => {
                for planned in &plan.components {
                    for (path, why) in &planned.unreadable {
                        drilled.problems.push(format!("{path}: {why}"));
                    }
                    for (path, chunk) in &planned.missing_chunks {
                        drilled
                            .problems
                            .push(format!("{path}: chunk {chunk} is missing"));
                    }
                }
                for failure in &outcome.failures {
                    drilled
                        .problems
                        .push(format!("{}: {}", failure.path, failure.error));
                }
                drilled.files = outcome.files_written;
                drilled.bytes = outcome.bytes_written;
                plan.components
                    .first()
                    .map(|planned| planned.destination.clone())
            }
        }
    }
}

/// The checks of a cleanly restored component at `destination`: SQLite's
/// integrity check for a database, then its own `check` command, which
/// runs only if that passed. Returns the problems found.
fn check_component(
    kind: ComponentKind,
    name: &str,
    destination: &Path,
    check: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if kind == ComponentKind::Sqlite {
        problems.extend(
            DatabaseCheck::run(name, destination)
                .problems
                .into_iter()
                .map(|line| format!("SQLite integrity check: {line}")),
        );
    }
    if let (true, Some(check)) = (problems.is_empty(), check) {
        let ran = Hook::new(check)
            .env("CAIRN_FILE", destination)
            .env("CAIRN_COMPONENT", name)
            .run();
        if let Err(failure) = ran {
            problems.push(format!("check {failure}"));
        }
    }
    problems
}

/// Appends one drill's record to the history at `path` as a line of JSON,
/// and syncs it, so a history survives a crash.
pub fn append_history(path: &Path, record: &Value) -> Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|error| StoreError::io(format!("creating {}", parent.display()), error))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| {
            StoreError::io(format!("opening drill history {}", path.display()), error)
        })?;
    let mut line = serde_json::to_vec(record)
        .map_err(|error| StoreError::Invalid(format!("encoding the drill's record: {error}")))?;
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_all())
        .map_err(|error| StoreError::io(format!("writing drill history {}", path.display()), error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::restore::testing::Scene;
    use crate::progress::NoProgress;

    #[test]
    fn a_drill_restores_every_component_and_fails_only_the_one_whose_check_fails() {
        let scene = Scene::new(|root| {
            let notes = root.join("notes");
            std::fs::create_dir_all(notes.join("inner")).expect("notes");
            std::fs::write(notes.join("a.md"), b"# notes\n").expect("a.md");
            std::fs::write(notes.join("inner/b.md"), b"more\n").expect("b.md");
            let dump = root.join("dump.sql");
            std::fs::write(&dump, b"-- a dump\n").expect("dump");
            vec![("notes", notes, false), ("dump", dump, false)]
        });
        let mut checks = BTreeMap::new();
        checks.insert(
            "notes".to_string(),
            "test -f \"$CAIRN_FILE/inner/b.md\" && test \"$CAIRN_COMPONENT\" = notes".to_string(),
        );
        checks.insert(
            "dump".to_string(),
            "grep -q 'not in the dump' \"$CAIRN_FILE\"".to_string(),
        );
        let scratch_parent = scene.path("scratch");
        std::fs::create_dir(&scratch_parent).expect("scratch parent");
        let options = DrillOptions {
            scratch_parent: Some(scratch_parent.clone()),
            checks,
            ..DrillOptions::default()
        };
        let report = drill(
            &scene.repository,
            scene.index.as_ref(),
            scene.snapshot,
            &scene.body,
            &options,
            &NoProgress,
        )
        .expect("the drill runs");

        assert!(!report.ok());
        assert_eq!(report.snapshot, scene.snapshot);
        let [notes, dump] = report.components.as_slice() else {
            panic!("two components expected: {:?}", report.components);
        };
        assert_eq!(
            (notes.name.as_str(), notes.ok()),
            ("notes", true),
            "{notes:?}"
        );
        assert_eq!(notes.files, 2);
        assert_eq!(notes.bytes, 13);
        assert_eq!(dump.name, "dump");
        assert_eq!(dump.files, 1, "restored before its check failed");
        assert_eq!(
            dump.problems,
            ["check \"grep -q 'not in the dump' \\\"$CAIRN_FILE\\\"\" exited with exit status: 1"]
        );
        assert_eq!(
            std::fs::read_dir(&scratch_parent).expect("list").count(),
            0,
            "the scratch directory is removed"
        );
    }

    #[test]
    fn a_plan_component_missing_failed_or_incomplete_is_named_with_its_cause() {
        use crate::format::manifest::Problem;
        let scene = Scene::new(|root| {
            let notes = root.join("notes");
            std::fs::create_dir_all(&notes).expect("notes");
            std::fs::write(notes.join("a.md"), b"# notes\n").expect("a.md");
            vec![("notes", notes, false)]
        });
        let required = ["notes".to_string(), "db".to_string(), "pg".to_string()];
        let mut body = scene.body.clone();
        body.problems = vec![
            Problem {
                component: "db".into(),
                path: String::new(),
                problem: "cannot open /srv/app.db".into(),
            },
            Problem {
                component: "notes".into(),
                path: "b.md".into(),
                problem: "changed while read".into(),
            },
        ];
        let found = plan_problems(&body, &required);
        let named: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(named, ["notes", "db", "pg"], "{found:?}");
        assert!(found[0].1.contains("marked incomplete: b.md"), "{found:?}");
        assert!(
            found[1].1.contains("failed in that backup (cannot open"),
            "{found:?}"
        );
        assert!(
            found[2].1.contains("missing from the snapshot"),
            "{found:?}"
        );
        assert!(plan_problems(&scene.body, &required[..1]).is_empty());
    }

    #[test]
    fn a_failing_check_command_fails_the_component_and_names_the_command() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let destination = directory.path().join("dump");
        std::fs::write(&destination, b"").expect("an empty dump");
        let problems = check_component(
            ComponentKind::File,
            "dump",
            &destination,
            Some("test -s \"$CAIRN_FILE\""),
        );
        assert_eq!(
            problems,
            ["check \"test -s \\\"$CAIRN_FILE\\\"\" exited with exit status: 1"]
        );

        std::fs::write(&destination, b"-- a dump\n").expect("a dump");
        let problems = check_component(
            ComponentKind::File,
            "dump",
            &destination,
            Some("test -s \"$CAIRN_FILE\" && test \"$CAIRN_COMPONENT\" = dump"),
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_damaged_database_fails_its_integrity_check_and_skips_the_check_command() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let destination = directory.path().join("db");
        std::fs::write(&destination, vec![0x5a; 8192]).expect("not a database");
        let ran = directory.path().join("check-ran");
        let problems = check_component(
            ComponentKind::Sqlite,
            "db",
            &destination,
            Some(&format!("touch {}", ran.display())),
        );
        assert!(!problems.is_empty());
        assert!(
            problems
                .iter()
                .all(|problem| problem.starts_with("SQLite integrity check: ")),
            "{problems:?}"
        );
        assert!(
            !ran.exists(),
            "the check command runs only on a sound database"
        );
    }

    #[test]
    fn a_report_with_one_failed_component_is_not_ok_and_its_record_says_which() {
        let component = |name: &str, problems: Vec<String>| ComponentDrill {
            name: name.into(),
            kind: ComponentKind::Directory,
            seconds: 0.5,
            files: 2,
            bytes: 10,
            problems,
        };
        let report = DrillReport {
            snapshot: Id([7; 32]),
            snapshot_time: "2026-01-01T00:00:00Z".into(),
            chosen: "named".into(),
            time: "2026-01-02T00:00:00Z".into(),
            seconds: 1.0,
            components: vec![
                component("notes", Vec::new()),
                component("vectors", vec!["a.bin: chunk is missing".into()]),
            ],
        };
        assert!(!report.ok());
        let record = report.record("/srv/repo");
        assert_eq!(record["ok"], false);
        assert_eq!(record["repository"], "/srv/repo");
        assert_eq!(record["components"][0]["ok"], true);
        assert_eq!(record["components"][1]["ok"], false);
        assert_eq!(
            record["components"][1]["problems"][0],
            "a.bin: chunk is missing"
        );
    }

    #[test]
    fn the_history_gains_one_synced_line_per_drill_in_a_directory_it_creates() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let history = directory.path().join("new/drills.jsonl");
        append_history(&history, &json!({"ok": true})).expect("first");
        append_history(&history, &json!({"ok": false})).expect("second");
        let text = std::fs::read_to_string(&history).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines, [json!({"ok": true}), json!({"ok": false})]);
    }
}
