//! Issue 27, part B: which snapshot a command means. `latest` and
//! `latest~N` scoped by `--host`, `--tag` and `--component`; `restore
//! latest --only C` after a one-off backup; `cairn tag` and its signed
//! annotations (seen by `snapshots`, the filters and `forget --keep-tag`,
//! and ignored when untrusted or replayed: FORMAT.md 16.6); `ls -l`;
//! retention that keeps a failed night in its plan's group and gives
//! safety snapshots their own rule.

mod common;
use common::*;

use cairn_store::Id;
use cairn_store::format::annotation::Annotation;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Backs up `components` (NAME=PATH) with extra flags; returns the id.
fn backup(workspace: &Workspace, components: &[(&str, &Path)], extra: &[&str]) -> String {
    let mut args: Vec<String> = Vec::new();
    for (name, path) in components {
        args.push("--component".into());
        args.push(format!("{name}={}", path.display()));
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    workspace.backup_json(&args)["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// `cairn cat ARGS...` as text.
fn cat(workspace: &Workspace, args: &[&str]) -> String {
    let mut all = vec!["cat"];
    all.extend_from_slice(args);
    workspace.cairn_repo(all).ok().stdout
}

/// `snapshots --json ARGS...`: each snapshot by id.
fn snapshots(workspace: &Workspace, args: &[&str]) -> BTreeMap<String, Value> {
    let mut all = vec!["--json", "snapshots"];
    all.extend_from_slice(args);
    let listed = workspace.cairn_repo(all).ok().json();
    listed["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|snapshot| {
            (
                snapshot["id"].as_str().unwrap().to_string(),
                snapshot.clone(),
            )
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|item| item.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn two_hosts_share_a_repository_and_latest_is_scoped_by_host_tag_and_component() {
    let workspace = Workspace::new();
    workspace.init();
    let (alpha, beta) = (workspace.path("alpha"), workspace.path("beta"));
    write(&alpha.join("memory/notes.md"), b"alpha, night one\n");
    let alpha_one = backup(
        &workspace,
        &[("memory", &alpha.join("memory"))],
        &["--host", "alpha", "--tag", "nightly"],
    );
    write(&alpha.join("memory/notes.md"), b"alpha, night two\n");
    write(&alpha.join("db/app.db"), b"alpha's database\n");
    let alpha_two = backup(
        &workspace,
        &[("memory", &alpha.join("memory")), ("db", &alpha.join("db"))],
        &["--host", "alpha"],
    );
    write(&beta.join("memory/notes.md"), b"beta's memory\n");
    backup(
        &workspace,
        &[("memory", &beta.join("memory"))],
        &["--host", "beta", "--tag", "nightly"],
    );

    // Without --host, latest is any host's newest (beta's), and cairn says
    // that it chose another host's snapshot than this machine's.
    let target = workspace.path("restored-any");
    let run = workspace
        .cairn_repo([
            "restore",
            "latest",
            "--only",
            "memory",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read(target.join("memory/notes.md")).unwrap(),
        b"beta's memory\n"
    );
    assert!(run.stderr.contains("of host \"beta\""), "{}", run.stderr);

    // --host alpha: alpha's newest memory, never beta's (issue 27).
    let target = workspace.path("restored-alpha");
    workspace
        .cairn_repo([
            "restore",
            "latest",
            "--only",
            "memory",
            "--host",
            "alpha",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read(target.join("memory/notes.md")).unwrap(),
        b"alpha, night two\n"
    );

    // latest~1 is the one before, under the same filter.
    assert_eq!(
        cat(
            &workspace,
            &["latest~1", "memory/notes.md", "--host", "alpha"]
        ),
        "alpha, night one\n"
    );
    // --tag nightly on alpha: night two has no tag, so night one.
    assert_eq!(
        cat(
            &workspace,
            &[
                "latest",
                "memory/notes.md",
                "--host",
                "alpha",
                "--tag",
                "nightly"
            ]
        ),
        "alpha, night one\n"
    );
    // --component db: only alpha's second night holds it.
    let with_db = snapshots(&workspace, &["--component", "db"]);
    assert_eq!(with_db.keys().collect::<Vec<_>>(), vec![&alpha_two]);
    let listed = workspace
        .cairn_repo(["--json", "ls", "latest", "--component", "db"])
        .ok()
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["path"] == "db/app.db"),
        "{listed}"
    );
    // Hosts and tags filter `snapshots` too.
    let nightly_alpha = snapshots(&workspace, &["--host", "alpha", "--tag", "nightly"]);
    assert_eq!(nightly_alpha.keys().collect::<Vec<_>>(), vec![&alpha_one]);

    // Past the end: an error that says how many passed.
    let run = workspace.cairn_repo(["cat", "latest~2", "memory/notes.md", "--host", "alpha"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("latest~2")
            && run.stderr.contains("2 trusted snapshot(s) with host alpha"),
        "{}",
        run.stderr
    );
    let run = workspace.cairn_repo(["cat", "latest~x", "memory/notes.md"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("latest~1"), "{}", run.stderr);

    // verify --snapshot latest and drill take the same filters.
    let (code, report) = workspace.verify_json(&[
        "--snapshot",
        "latest",
        "--host",
        "alpha",
        "--component",
        "db",
    ]);
    assert_eq!(code, 0, "{report}");
    let run = workspace.cairn_repo(["verify", "--host", "alpha"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let history = workspace.path("drills.jsonl");
    let drilled = workspace
        .cairn_repo([
            "--json",
            "drill",
            "--host",
            "alpha",
            "--tag",
            "nightly",
            "--history",
            history.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(drilled["snapshot"], alpha_one.as_str(), "{drilled}");

    // ls -l: owner, human size and mtime.
    let long = workspace
        .cairn_repo(["ls", "-l", "latest", "memory", "--host", "alpha"])
        .ok()
        .stdout;
    let line = long
        .lines()
        .find(|line| line.ends_with("memory/notes.md"))
        .unwrap_or_else(|| panic!("{long}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    // -rw-r--r-- OWNER GROUP 17 B YYYY-MM-DD HH:MM memory/notes.md
    assert!(fields[0].starts_with("-rw"), "{line}");
    // The tests run as root (CI) or as a user /etc/passwd names.
    let uid = std::fs::metadata(&alpha).map(|meta| {
        use std::os::unix::fs::MetadataExt;
        meta.uid()
    });
    if uid.as_ref().is_ok_and(|uid| *uid == 0) {
        assert_eq!(fields[1], "root", "{line}");
    }
    assert_eq!((fields[3], fields[4]), ("17", "B"), "{line}");
    let date = fields[5].as_bytes();
    assert!(
        date.len() == 10 && date[4] == b'-' && date[7] == b'-' && fields[6].len() == 5,
        "{line}"
    );
}

#[test]
fn after_a_one_off_backup_of_one_component_restore_latest_only_takes_the_newest_that_holds_it() {
    let workspace = Workspace::new();
    workspace.init();
    let (app, memory) = (workspace.path("src/app"), workspace.path("src/memory"));
    write(&app.join("app.cfg"), b"the app\n");
    write(&memory.join("m.txt"), b"memory one\n");
    backup(&workspace, &[("app", &app), ("memory", &memory)], &[]);
    write(&memory.join("m.txt"), b"memory two\n");
    // A one-off backup of one component.
    backup(&workspace, &[("memory", &memory)], &[]);

    let target = workspace.path("out");
    workspace
        .cairn_repo([
            "restore",
            "latest",
            "--only",
            "app",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read(target.join("app/app.cfg")).unwrap(),
        b"the app\n"
    );
    // A component no snapshot holds still fails, naming those that exist.
    let run = workspace.cairn_repo([
        "restore",
        "latest",
        "--only",
        "nothing",
        "--target",
        workspace.path("out2").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("component \"nothing\"") && run.stderr.contains("app, memory"),
        "{}",
        run.stderr
    );
}

#[test]
fn tags_add_remove_and_set_are_seen_by_snapshots_filters_and_keep_tag() {
    let workspace = Workspace::new();
    workspace.init();
    let data = workspace.path("data");
    let mut ids = Vec::new();
    for night in 1..=3 {
        write(&data.join("f.txt"), format!("night {night}\n").as_bytes());
        ids.push(backup(
            &workspace,
            &[("data", &data)],
            &["--tag", "nightly"],
        ));
    }
    let (one, two, three) = (&ids[0], &ids[1], &ids[2]);

    let tagged = workspace
        .cairn_repo([
            "--json",
            "tag",
            one,
            "--add",
            "keep",
            "--add-label",
            "ticket=42",
        ])
        .ok()
        .json();
    assert_eq!(tagged["snapshots"][0]["changed"], true, "{tagged}");
    workspace
        .cairn_repo(["tag", one, "--remove", "nightly"])
        .ok();
    // `latest~1` names the second night.
    workspace
        .cairn_repo(["tag", "latest~1", "--set", "pinned"])
        .ok();
    // Asking for what is already so writes nothing.
    let again = workspace
        .cairn_repo(["--json", "tag", two, "--add", "pinned"])
        .ok()
        .json();
    assert_eq!(again["snapshots"][0]["changed"], false, "{again}");
    let annotations = std::fs::read_dir(workspace.repo().join("annotations"))
        .unwrap()
        .count();
    assert_eq!(annotations, 3);

    let listed = snapshots(&workspace, &[]);
    // The newest of the first snapshot's two annotations decides.
    assert_eq!(strings(&listed[one]["tags"]), vec!["keep"]);
    assert_eq!(listed[one]["labels"]["ticket"], "42");
    assert_eq!(listed[one]["annotation"]["sequence"], 2);
    assert_eq!(strings(&listed[one]["manifest_tags"]), vec!["nightly"]);
    assert_eq!(strings(&listed[two]["tags"]), vec!["pinned"]);
    assert_eq!(strings(&listed[three]["tags"]), vec!["nightly"]);
    assert!(listed[three]["annotation"].is_null());
    let text = workspace.cairn_repo(["snapshots"]).ok().stdout;
    assert!(text.contains("labels: ticket=42"), "{text}");

    // The filters see the tags as they are now.
    assert_eq!(
        snapshots(&workspace, &["--tag", "keep"])
            .keys()
            .collect::<Vec<_>>(),
        vec![one]
    );
    assert_eq!(
        cat(&workspace, &["latest", "data/f.txt", "--tag", "pinned"]),
        "night 2\n"
    );
    assert_eq!(
        cat(&workspace, &["latest", "data/f.txt", "--tag", "nightly"]),
        "night 3\n"
    );

    // forget --keep-tag honours the annotation.
    let plan = workspace
        .cairn_repo([
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--keep-tag",
            "keep",
            "--dry-run",
        ])
        .ok()
        .json();
    let forgotten = strings(&plan["forgotten"]);
    assert_eq!(forgotten, vec![two.clone()], "{plan}");
    let decisions = &plan["groups"][0]["snapshots"];
    let of_one = decisions
        .as_array()
        .unwrap()
        .iter()
        .find(|decision| decision["id"] == one.as_str())
        .unwrap();
    assert_eq!(strings(&of_one["reasons"]), vec!["keep-tag keep"]);

    // The safety tag is a restore's alone.
    let run = workspace.cairn_repo(["tag", three, "--add", "pre-restore"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("safety snapshot"), "{}", run.stderr);
    let run = workspace.cairn_repo(["tag", three]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// A plaintext repository with one snapshot, for tests that plant
/// annotations: its repository id, the snapshot, and the owner's key.
fn planted_scene(workspace: &Workspace) -> (Id, String, cairn_store::format::keys::SigningKey) {
    let made = workspace
        .cairn_repo(["--json", "init", "--plaintext"])
        .ok()
        .json();
    let key = cairn_store::keystore::read_secret_key(Path::new(
        made["key_file"].as_str().expect("key file"),
    ))
    .unwrap();
    let config: Value =
        serde_json::from_slice(&std::fs::read(workspace.repo().join("config")).unwrap()).unwrap();
    let repository = Id::from_hex(config["repository_id"].as_str().unwrap()).unwrap();
    let data = workspace.path("data");
    write(&data.join("f.txt"), b"kept\n");
    let snapshot = backup(workspace, &[("data", &data)], &["--tag", "nightly"]);
    (repository, snapshot, key)
}

/// Writes an annotation of `snapshot` giving it `tags`, signed by `key`
/// for `repository`, straight into the repository's storage, as an
/// attacker who can add objects would.
fn plant(
    workspace: &Workspace,
    repository: &Id,
    snapshot: &str,
    sequence: u64,
    tags: &[&str],
    key: &cairn_store::format::keys::SigningKey,
) {
    let annotation = Annotation::new(
        Id::from_hex(snapshot).unwrap(),
        sequence,
        (
            "2026-12-06T13:00:00Z".into(),
            "mallory".into(),
            "mallory".into(),
        ),
        tags.iter().map(|tag| tag.to_string()).collect(),
        BTreeMap::new(),
    )
    .unwrap();
    let bytes = annotation.sign(repository, key).encode();
    let folder = workspace.repo().join("annotations");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(Id::of(&bytes).to_hex()), &bytes).unwrap();
}

/// What an attacker's annotation must not change: the tags `snapshots`
/// shows, the `--tag` filter, `forget --keep-tag`.
fn assert_still_untagged(workspace: &Workspace, snapshot: &str) {
    let listed = snapshots(workspace, &[]);
    assert_eq!(strings(&listed[snapshot]["tags"]), vec!["nightly"]);
    assert!(listed[snapshot]["annotation"].is_null());
    assert!(snapshots(workspace, &["--tag", "evil"]).is_empty());
    let run = workspace.cairn_repo(["cat", "latest", "data/f.txt", "--tag", "evil"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let plan = workspace
        .cairn_repo([
            "--json",
            "forget",
            "--keep-tag",
            "evil",
            "--dry-run",
            "--allow-empty",
        ])
        .ok()
        .json();
    assert_eq!(strings(&plan["forgotten"]), vec![snapshot.to_string()]);
}

#[test]
fn an_annotation_signed_by_an_untrusted_key_is_ignored() {
    let workspace = Workspace::new();
    let (repository, snapshot, _) = planted_scene(&workspace);
    let mallory = cairn_store::format::keys::SigningKey::from_bytes(&[66; 32]);
    plant(&workspace, &repository, &snapshot, 7, &["evil"], &mallory);

    assert_still_untagged(&workspace, &snapshot);
    let run = workspace.cairn_repo(["snapshots"]).ok();
    assert!(
        run.stderr.contains("is ignored") && run.stderr.contains("trusted"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_annotation_replayed_from_another_repository_is_ignored() {
    let workspace = Workspace::new();
    let (repository, snapshot, owner) = planted_scene(&workspace);
    // Signed by the owner's own key, but for another repository (one that
    // trusts the same key): the repository check refuses it here.
    let elsewhere = Id::of(b"another repository the owner's key signs for");
    plant(&workspace, &elsewhere, &snapshot, 9, &["evil"], &owner);
    assert_still_untagged(&workspace, &snapshot);

    // The same annotation made for this repository is taken: the check
    // above is what refused the replay.
    plant(&workspace, &repository, &snapshot, 1, &["evil"], &owner);
    let listed = snapshots(&workspace, &[]);
    assert_eq!(strings(&listed[&snapshot]["tags"]), vec!["evil"]);
}

#[test]
fn retention_keeps_a_failed_night_in_its_group_and_safety_snapshots_by_their_own_rule() {
    let workspace = Workspace::new();
    workspace.init();
    let files = workspace.path("files");
    let dump = workspace.path("dump.txt");
    write(&dump, b"rows\n");
    let nightly = |night: u32, dump_command: &str| {
        write(&files.join("f.txt"), format!("night {night}\n").as_bytes());
        let component = format!("files={}", files.display());
        let command = format!("pg={dump_command}");
        let run = workspace.cairn_repo([
            "--json",
            "backup",
            "--component",
            &component,
            "--command",
            &command,
        ]);
        run.json()["snapshot"].as_str().unwrap().to_string()
    };
    let cat_dump = format!("cat {}", dump.display());
    let first = nightly(1, &cat_dump);
    // The pg dump fails: a snapshot of `files` alone, naming `pg` failed.
    let failed = nightly(2, "exit 1");
    let third = nightly(3, &cat_dump);

    // One group: the failed night does not form its own.
    let plan = workspace
        .cairn_repo(["--json", "forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .json();
    let groups = plan["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{plan}");
    let mut forgotten = strings(&plan["forgotten"]);
    forgotten.sort();
    let mut expected = vec![first.clone(), failed.clone()];
    expected.sort();
    assert_eq!(forgotten, expected, "{plan}");

    // A restore over changed files leaves a safety snapshot.
    let target = workspace.path("target");
    workspace.restore(&third, &target).ok();
    write(&target.join("files/f.txt"), b"changed by hand\n");
    workspace.restore(&third, &target).ok();
    let safety: Vec<String> = snapshots(&workspace, &[])
        .into_iter()
        .filter(|(_, snapshot)| strings(&snapshot["tags"]).contains(&"pre-restore".to_string()))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(safety.len(), 1);

    // --keep-tag alone keeps no safety snapshot by its rules; the safety
    // rule (default 14 days) keeps the fresh one, and does not count as a
    // group a policy empties.
    let plan = workspace
        .cairn_repo([
            "--json",
            "forget",
            "--keep-tag",
            "nothing",
            "--allow-empty",
            "--dry-run",
        ])
        .ok()
        .json();
    let safety_group = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["group"] == "tags=pre-restore")
        .unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(safety_group["snapshots"][0]["id"], safety[0].as_str());
    assert_eq!(
        strings(&safety_group["snapshots"][0]["reasons"]),
        vec!["keep-safety 14d"]
    );
    assert!(!strings(&plan["forgotten"]).contains(&safety[0]));
    // stats prices the very choice forget makes (the same flags, safety
    // snapshots' rule included).
    let policy = ["--keep-last", "1", "--keep-safety", "forever"];
    let forget: Vec<&str> = ["--json", "forget", "--dry-run"]
        .into_iter()
        .chain(policy)
        .collect();
    let stats: Vec<&str> = ["--json", "stats"].into_iter().chain(policy).collect();
    let mut would_forget = strings(&workspace.cairn_repo(&forget).ok().json()["forgotten"]);
    let mut priced = strings(&workspace.cairn_repo(&stats).ok().json()["forgotten"]);
    would_forget.sort();
    priced.sort();
    assert_eq!(priced, would_forget);
    assert!(!priced.contains(&safety[0]), "{priced:?}");
    assert!(priced.contains(&failed), "{priced:?}");
    let run = workspace.cairn_repo(["forget", "--keep-last", "1", "--keep-safety", "0d"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("--keep-safety"), "{}", run.stderr);
}
