//! `cairn forget` and `cairn prune` end to end: policies keep what they say
//! and say why, bad input changes nothing, the two-phase prune gives space
//! back (marking first, deleting a later run), repacks partly used packs,
//! stops at damage, survives running next to backups and being killed, and
//! every snapshot it leaves restores byte for byte.

mod common;
use common::*;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Every path under the repository: files with their BLAKE3, directories
/// with `None`. Any write, deletion or new directory shows as a difference.
fn repo_state(workspace: &Workspace) -> BTreeMap<PathBuf, Option<String>> {
    let root = workspace.repo();
    walk(&root)
        .into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).expect("stat repository entry");
            let hash = meta.is_file().then(|| {
                blake3::hash(&fs::read(&path).expect("read"))
                    .to_hex()
                    .to_string()
            });
            (path.strip_prefix(&root).unwrap().to_path_buf(), hash)
        })
        .collect()
}

/// The names in one of the repository's directories (empty if absent).
fn names_in(workspace: &Workspace, directory: &str) -> BTreeSet<String> {
    match fs::read_dir(workspace.repo().join(directory)) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Pack ids present in the repository.
fn pack_ids(workspace: &Workspace) -> BTreeSet<String> {
    workspace
        .packs()
        .iter()
        .map(|pack| pack.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Snapshot ids `cairn snapshots --json` lists.
fn listed_snapshots(workspace: &Workspace) -> BTreeSet<String> {
    let listing = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    listing["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|snapshot| snapshot["id"].as_str().unwrap().to_string())
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| item.as_str().expect("string").to_string())
        .collect()
}

fn ids<const N: usize>(list: [&String; N]) -> BTreeSet<String> {
    list.iter().map(|id| id.to_string()).collect()
}

/// Backs `source` up as component `name` and returns the snapshot id.
fn backup(workspace: &Workspace, name: &str, source: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "--component".to_string(),
        format!("{name}={}", source.display()),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let summary = workspace.backup_json(args);
    summary["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// `cp -a`: the copy keeps contents, modes and mtimes (of directories too),
/// so a restore can be compared with it by [`assert_same_tree`].
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Restores `snapshot` into a fresh directory and compares component
/// `name` with `expected`.
fn assert_restores(workspace: &Workspace, snapshot: &str, name: &str, expected: &Path) {
    let target = workspace.path(&format!("restored/{snapshot}-{}", unique()));
    workspace.restore(snapshot, &target).ok();
    assert_same_tree(expected, &target.join(name));
    fs::remove_dir_all(&target).unwrap();
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The `kind`s of a verify report's findings.
fn finding_kinds(report: &Value) -> Vec<String> {
    findings(report)
        .iter()
        .map(|finding| finding["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Findings a prune may leave behind without anything being lost: packs
/// no index lists yet, and packs a prune deleted that an index file still
/// names.
const NOTICE_KINDS: [&str; 2] = ["unreferenced-pack", "deleted-pack"];

/// Verify exits 0 and finds nothing but those notices.
fn assert_no_damage(workspace: &Workspace, read_data: bool, context: &str) -> Value {
    let args: &[&str] = if read_data { &["--read-data"] } else { &[] };
    let (code, report) = workspace.verify_json(args);
    for finding in findings(&report) {
        assert!(
            NOTICE_KINDS.contains(&finding["kind"].as_str().unwrap())
                && finding["severity"] == "notice",
            "{context}: unexpected finding:\n{}",
            brief(&report)
        );
    }
    assert_eq!(code, 0, "{context}:\n{}", brief(&report));
    assert_eq!(report["clean"], true, "{context}:\n{}", brief(&report));
    report
}

/// Verify (reading every byte) exits 0 with no finding at all.
fn assert_spotless(workspace: &Workspace, context: &str) {
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{context}:\n{}", brief(&report));
    assert_eq!(finding_kinds(&report), Vec::<String>::new(), "{context}");
}

fn prune_json(workspace: &Workspace, args: &[&str]) -> Value {
    let mut all = vec!["--json", "prune"];
    all.extend_from_slice(args);
    workspace.cairn_repo(all).ok().json()
}

fn forget_json(workspace: &Workspace, args: &[&str]) -> Value {
    let mut all = vec!["--json", "forget"];
    all.extend_from_slice(args);
    workspace.cairn_repo(all).ok().json()
}

fn pack_list(value: &Value) -> Vec<(String, u64)> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list of packs: {value}"))
        .iter()
        .map(|pack| {
            (
                pack["pack"].as_str().unwrap().to_string(),
                pack["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn total_size(packs: &[(String, u64)]) -> u64 {
    packs.iter().map(|(_, size)| size).sum()
}

/// One group of a forget report: (id, kept, reasons) newest first.
type GroupReport = Vec<(String, bool, Vec<String>)>;

fn groups_of(report: &Value) -> BTreeMap<String, GroupReport> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            let decisions = group["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|decision| {
                    let reasons = decision["reasons"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|reason| reason.as_str().unwrap().to_string())
                        .collect();
                    (
                        decision["id"].as_str().unwrap().to_string(),
                        decision["keep"].as_bool().unwrap(),
                        reasons,
                    )
                })
                .collect();
            (group["group"].as_str().unwrap().to_string(), decisions)
        })
        .collect()
}

fn kept(id: &str, reasons: &[&str]) -> (String, bool, Vec<String>) {
    (
        id.to_string(),
        true,
        reasons.iter().map(|r| r.to_string()).collect(),
    )
}

fn forgotten(id: &str) -> (String, bool, Vec<String>) {
    (id.to_string(), false, Vec::new())
}

// ---------------------------------------------------------------------------
// 1. Policies
// ---------------------------------------------------------------------------

#[test]
fn a_policy_keeps_what_it_says_per_group_and_forget_removes_only_the_rest() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let docs = workspace.path("docs");
    let photos = workspace.path("photos");
    let mut copies: HashMap<String, PathBuf> = HashMap::new();
    let mut version = 0u64;
    let mut take = |host: &str, tag: Option<&str>| -> String {
        version += 1;
        write(
            &docs.join("version.txt"),
            format!("version {version}\n").as_bytes(),
        );
        write(
            &docs.join(format!("data-{version}.bin")),
            &noise(version, 20 * KIB),
        );
        let mut extra = vec!["--host", host];
        if let Some(tag) = tag {
            extra.extend(["--tag", tag]);
        }
        let id = backup(&workspace, "docs", &docs, &extra);
        let copy = workspace.path(&format!("copies/{id}"));
        copy_tree(&docs, &copy);
        copies.insert(id.clone(), copy);
        id
    };
    let a1 = take("alpha", Some("monthly"));
    let a2 = take("alpha", Some("daily"));
    let a3 = take("alpha", Some("daily"));
    let a4 = take("alpha", Some("daily"));
    let b1 = take("beta", None);
    let b2 = take("beta", None);
    let b3 = take("beta", None);
    write(&photos.join("cat.jpg"), &noise(500, 30 * KIB));
    let p1 = backup(
        &workspace,
        "photos",
        &photos,
        &["--host", "alpha", "--tag", "daily"],
    );
    let all = ids([&a1, &a2, &a3, &a4, &b1, &b2, &b3, &p1]);
    assert_eq!(listed_snapshots(&workspace), all);

    // The dry run says, per group (host and components by default), what is
    // kept and by which rules, and writes nothing.
    let before = repo_state(&workspace);
    let plan = forget_json(
        &workspace,
        &["--dry-run", "--keep-last", "2", "--keep-tag", "monthly"],
    );
    assert_eq!(repo_state(&workspace), before, "a dry run wrote something");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["record"], Value::Null);
    let expected: BTreeMap<String, GroupReport> = [
        (
            "host=alpha components=docs".to_string(),
            vec![
                kept(&a4, &["keep-last"]),
                kept(&a3, &["keep-last"]),
                forgotten(&a2),
                kept(&a1, &["keep-tag monthly"]),
            ],
        ),
        (
            "host=alpha components=photos".to_string(),
            vec![kept(&p1, &["keep-last"])],
        ),
        (
            "host=beta components=docs".to_string(),
            vec![
                kept(&b3, &["keep-last"]),
                kept(&b2, &["keep-last"]),
                forgotten(&b1),
            ],
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(groups_of(&plan), expected, "{plan:#}");
    assert_eq!(strings(&plan["forgotten"]), ids([&a2, &b1]));

    // Text output says the same.
    let text = workspace
        .cairn_repo([
            "forget",
            "--dry-run",
            "--keep-last",
            "2",
            "--keep-tag",
            "monthly",
        ])
        .ok();
    assert!(
        text.stdout
            .contains(&format!("keep   {}  keep-tag monthly", &a1[..8])),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("forget {}", &a2[..8])),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("would forget 2 snapshot(s)"),
        "{}",
        text.stdout
    );

    // Other groupings and rules, still dry runs.
    let plan = forget_json(
        &workspace,
        &["--dry-run", "--keep-last", "1", "--group-by", "none"],
    );
    let groups = groups_of(&plan);
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["ungrouped"], "{plan:#}");
    assert_eq!(groups["ungrouped"][0], kept(&p1, &["keep-last"]));
    assert_eq!(groups["ungrouped"].len(), 8);
    assert_eq!(strings(&plan["forgotten"]).len(), 7);

    // keep-within reaches back from each group's newest snapshot: all of
    // these were taken within the last minutes.
    let plan = forget_json(
        &workspace,
        &["--dry-run", "--keep-within", "1h", "--group-by", "host"],
    );
    let groups = groups_of(&plan);
    assert_eq!(
        groups.keys().collect::<Vec<_>>(),
        ["host=alpha", "host=beta"]
    );
    assert_eq!(groups["host=alpha"].len(), 5);
    assert_eq!(groups["host=beta"].len(), 3);
    for (id, keep, reasons) in groups.values().flatten() {
        assert!(keep, "{id} not kept by keep-within 1h: {plan:#}");
        assert_eq!(reasons, &["keep-within"], "{id}");
    }
    assert_eq!(strings(&plan["forgotten"]), BTreeSet::new());

    // A bucket rule, grouped by tags: the newest of each group, labelled
    // with its bucket.
    let plan = forget_json(
        &workspace,
        &["--dry-run", "--keep-daily", "1", "--group-by", "tags"],
    );
    let groups = groups_of(&plan);
    assert_eq!(
        groups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["tags=(none)", "tags=daily", "tags=monthly"],
        "{plan:#}"
    );
    for (group, newest) in [
        ("tags=daily", &p1),
        ("tags=(none)", &b3),
        ("tags=monthly", &a1),
    ] {
        let (id, keep, reasons) = &groups[group][0];
        assert_eq!((id, *keep), (newest, true), "{group}: {plan:#}");
        assert_eq!(reasons.len(), 1, "{group}: {reasons:?}");
        assert!(reasons[0].starts_with("keep-daily "), "{reasons:?}");
        assert!(
            groups[group][1..].iter().all(|(_, keep, _)| !keep),
            "{group}: {plan:#}"
        );
    }
    assert_eq!(repo_state(&workspace), before, "a dry run wrote something");

    // The real forget: a record, then the manifests are gone.
    let outcome = forget_json(&workspace, &["--keep-last", "2", "--keep-tag", "monthly"]);
    assert_eq!(outcome["dry_run"], false);
    assert_eq!(
        groups_of(&outcome),
        expected,
        "the plan changed: {outcome:#}"
    );
    assert_eq!(strings(&outcome["forgotten"]), ids([&a2, &b1]));
    let record = outcome["record"]
        .as_str()
        .expect("a forget record")
        .to_string();
    assert_eq!(
        names_in(&workspace, "forgotten"),
        [record.clone()].into_iter().collect()
    );
    let remaining = ids([&a1, &a3, &a4, &b2, &b3, &p1]);
    assert_eq!(names_in(&workspace, "snapshots"), remaining);
    assert_eq!(listed_snapshots(&workspace), remaining);
    // Forget frees nothing by itself: every pack is still there.
    let packs_before: BTreeSet<PathBuf> = before
        .keys()
        .filter(|path| path.starts_with("data"))
        .cloned()
        .collect();
    let packs_after: BTreeSet<PathBuf> = repo_state(&workspace)
        .into_keys()
        .filter(|path| path.starts_with("data"))
        .collect();
    assert_eq!(packs_after, packs_before);
    assert_spotless(&workspace, "after forget");

    // The oldest snapshot, kept by its tag, still restores as it was; so
    // does every other survivor.
    for id in &remaining {
        let name = if *id == p1 { "photos" } else { "docs" };
        let expected = if *id == p1 { &photos } else { &copies[id] };
        assert_restores(&workspace, id, name, expected);
    }

    // Applying the same policy again forgets nothing and records nothing.
    let again = forget_json(&workspace, &["--keep-last", "2", "--keep-tag", "monthly"]);
    assert_eq!(strings(&again["forgotten"]), BTreeSet::new());
    assert_eq!(again["record"], Value::Null);
    assert_eq!(names_in(&workspace, "forgotten").len(), 1);

    // Forgetting by id works too, and refuses "latest".
    let outcome = forget_json(&workspace, &[&b2[..12]]);
    assert_eq!(strings(&outcome["forgotten"]), ids([&b2]));
    assert_eq!(outcome["groups"], serde_json::json!([]));
    assert_eq!(names_in(&workspace, "forgotten").len(), 2);
    let latest = workspace.cairn_repo(["forget", "latest"]);
    assert_eq!(latest.code, 1, "{}", latest.stderr);
    assert!(latest.stderr.contains("latest"), "{}", latest.stderr);
    assert_eq!(listed_snapshots(&workspace), ids([&a1, &a3, &a4, &b3, &p1]));
}

// ---------------------------------------------------------------------------
// 2. Bad input
// ---------------------------------------------------------------------------

#[test]
fn bad_forget_and_prune_input_is_refused_naming_the_flag_and_changes_nothing() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join("a.txt"), b"one");
    let first = backup(&workspace, "src", &source, &["--tag", "keep"]);
    write(&source.join("a.txt"), b"two");
    let second = backup(&workspace, "src", &source, &[]);
    // Something a prune could act on, should it run.
    forget_json(&workspace, &[&first]);
    let before = repo_state(&workspace);

    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["forget", "--keep-within", "3x"],
            2,
            &["--keep-within", "3x"],
        ),
        (&["forget", "--keep-daily", "0"], 2, &["--keep-daily 0"]),
        (&["forget", "--keep-last=-1"], 2, &["--keep-last", "-1"]),
        (
            &["forget", "--keep-last", "1", &second[..10]],
            2,
            &["--keep-last"],
        ),
        (&["forget"], 1, &["no policy", "--keep-last"]),
        (
            &["forget", "--keep-last", "1", "--group-by", "colour"],
            2,
            &["--group-by", "colour"],
        ),
        (&["prune", "--grace", "banana"], 2, &["--grace", "banana"]),
        (
            &["prune", "--max-unused", "120%"],
            2,
            &["--max-unused", "120%"],
        ),
        // A prune flag's typo must not leave the forget done.
        (
            &["forget", "--keep-last", "1", "--prune", "--grace", "banana"],
            2,
            &["--grace", "banana"],
        ),
        (
            &[
                "forget",
                "--keep-last",
                "1",
                "--prune",
                "--max-unused",
                "120%",
            ],
            2,
            &["--max-unused", "120%"],
        ),
        (
            &["forget", "--keep-tag", "nosuchtag"],
            1,
            &["every snapshot", "--allow-empty"],
        ),
        (
            &["forget", "--keep-tag", "nosuchtag", "--dry-run"],
            1,
            &["every snapshot", "--allow-empty"],
        ),
    ];
    for (args, code, culprits) in cases {
        let run = workspace.cairn_repo(*args);
        assert_eq!(
            run.code, *code,
            "{args:?}: exit code\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: stdout: {}", run.stdout);
        for culprit in *culprits {
            assert!(
                run.stderr.contains(culprit),
                "{args:?}: the message does not name {culprit:?}:\n{}",
                run.stderr
            );
        }
        assert_eq!(
            repo_state(&workspace),
            before,
            "{args:?} changed the repository"
        );
    }

    // `--keep-last -1` (a separate word) is refused too; see
    // `a_negative_keep_count_is_refused_naming_its_flag` for the wording.
    let run = workspace.cairn_repo(["forget", "--keep-last", "-1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("-1"), "{}", run.stderr);
    assert_eq!(repo_state(&workspace), before);

    // With --allow-empty, a policy may forget every snapshot.
    let outcome = forget_json(&workspace, &["--keep-tag", "nosuchtag", "--allow-empty"]);
    assert_eq!(strings(&outcome["forgotten"]), ids([&second]));
    assert!(outcome["record"].is_string(), "{outcome:#}");
    assert_eq!(names_in(&workspace, "snapshots"), BTreeSet::new());
    assert_eq!(names_in(&workspace, "forgotten").len(), 2);
}

/// `--keep-last -1` should be refused with a message that names
/// `--keep-last`, like `--keep-last=-1` is.
#[test]
fn a_negative_keep_count_is_refused_naming_its_flag() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join("a.txt"), b"one");
    backup(&workspace, "src", &source, &[]);
    let before = repo_state(&workspace);
    for flag in ["--keep-last", "--keep-daily"] {
        let run = workspace.cairn_repo(["forget", flag, "-1"]);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(flag),
            "`forget {flag} -1`: the message does not name {flag}:\n{}",
            run.stderr
        );
        assert_eq!(repo_state(&workspace), before);
    }
}

// ---------------------------------------------------------------------------
// 3. Space comes back, in two phases
// ---------------------------------------------------------------------------

#[test]
fn prune_marks_first_then_deletes_and_gives_the_space_back() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    // Data kept throughout, in its own pack.
    for index in 0..4 {
        write(
            &source.join(format!("keep/{index}.bin")),
            &noise(10 + index, 256 * KIB),
        );
    }
    let first = backup(&workspace, "src", &source, &[]);
    // A few MiB of scratch data, backed up once, then deleted.
    let scratch = 6 * 768 * KIB;
    for index in 0..6 {
        write(
            &source.join(format!("scratch/{index}.bin")),
            &noise(100 + index, 768 * KIB),
        );
    }
    let second = backup(&workspace, "src", &source, &[]);
    fs::remove_dir_all(source.join("scratch")).unwrap();
    write(&source.join("notes.txt"), b"scratch files gone\n");
    let third = backup(&workspace, "src", &source, &[]);

    let outcome = forget_json(&workspace, &["--keep-last", "1"]);
    assert_eq!(strings(&outcome["forgotten"]), ids([&first, &second]));
    assert_eq!(names_in(&workspace, "snapshots"), ids([&third]));

    // The plan, without writing anything.
    let before = repo_state(&workspace);
    let plan = prune_json(&workspace, &["--dry-run", "--grace", "0s"]);
    assert_eq!(repo_state(&workspace), before, "prune --dry-run wrote");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["snapshots"], 1);
    assert_eq!(strings(&plan["due_marks"]), BTreeSet::new());
    assert_eq!(pack_list(&plan["repack"]), vec![], "{plan:#}");
    let to_mark = pack_list(&plan["mark_unused"]);
    assert!(
        total_size(&to_mark) >= scratch as u64,
        "the scratch data is not all marked: {plan:#}"
    );
    assert!(
        plan["unused_bytes"].as_u64().unwrap() >= scratch as u64,
        "{plan:#}"
    );
    assert_eq!(plan["bytes_marked"], total_size(&to_mark));

    // Phase one: one mark naming those packs; nothing deleted or written
    // but the mark.
    let packs = pack_ids(&workspace);
    let size_before = workspace.repo_size();
    let run = prune_json(&workspace, &["--grace", "0s"]);
    let mark = run["mark_written"].as_str().expect("a mark").to_string();
    assert_eq!(pack_list(&run["mark_unused"]), to_mark);
    assert_eq!(run["packs_deleted"], 0);
    assert_eq!(
        names_in(&workspace, "deletions"),
        [mark.clone()].into_iter().collect()
    );
    assert_eq!(pack_ids(&workspace), packs, "phase one touched packs");
    let mut after = repo_state(&workspace);
    after.retain(|path, _| !path.starts_with("deletions"));
    assert_eq!(after, before, "phase one wrote more than its mark");
    assert_no_damage(&workspace, false, "after phase one");
    assert_restores(&workspace, &third, "src", &source);

    // The plan for phase two, again without writing anything.
    let before = repo_state(&workspace);
    let plan = prune_json(&workspace, &["--dry-run", "--grace", "0s"]);
    assert_eq!(repo_state(&workspace), before, "prune --dry-run wrote");
    assert_eq!(
        strings(&plan["due_marks"]),
        [mark.clone()].into_iter().collect()
    );
    assert_eq!(pack_list(&plan["delete"]), to_mark);
    assert_eq!(pack_list(&plan["revived"]), vec![]);
    assert_eq!(pack_list(&plan["mark_unused"]), vec![], "{plan:#}");

    // Phase two: the marked packs are deleted, and the mark with them.
    let run = prune_json(&workspace, &["--grace", "0s"]);
    assert_eq!(run["packs_deleted"], to_mark.len());
    assert_eq!(run["marks_removed"], 1);
    assert_eq!(run["mark_written"], Value::Null);
    assert_eq!(names_in(&workspace, "deletions"), BTreeSet::new());
    let left = pack_ids(&workspace);
    for (pack, _) in &to_mark {
        assert!(!left.contains(pack), "marked pack {pack} is still there");
    }
    assert_eq!(
        left,
        packs
            .iter()
            .filter(|pack| !to_mark.iter().any(|(marked, _)| marked == *pack))
            .cloned()
            .collect()
    );
    let size_after = workspace.repo_size();
    let freed = size_before - size_after;
    assert!(
        freed >= scratch as u64 && freed <= scratch as u64 + 256 * KIB as u64,
        "freed {freed} bytes for {scratch} bytes of forgotten data ({size_before} -> {size_after})"
    );
    assert!(
        size_after < (MIB + 256 * KIB) as u64,
        "{size_after} bytes left for 1 MiB of kept data"
    );
    assert_spotless(&workspace, "after phase two");
    assert_restores(&workspace, &third, "src", &source);

    // Nothing is left to do.
    let plan = prune_json(&workspace, &["--dry-run", "--grace", "0s"]);
    assert_eq!(pack_list(&plan["mark_unused"]), vec![], "{plan:#}");
    assert_eq!(pack_list(&plan["delete"]), vec![], "{plan:#}");
}

// ---------------------------------------------------------------------------
// 4. Repack
// ---------------------------------------------------------------------------

#[test]
fn a_partly_used_pack_is_repacked_and_its_dead_blobs_go() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    // One backup: all of it in one data pack.
    for index in 0..6 {
        write(
            &source.join(format!("{index}.bin")),
            &noise(200 + index, 768 * KIB),
        );
    }
    let first = backup(&workspace, "src", &source, &[]);
    for index in 1..6 {
        fs::remove_file(source.join(format!("{index}.bin"))).unwrap();
    }
    write(&source.join("readme.txt"), b"only 0.bin is left\n");
    let second = backup(&workspace, "src", &source, &[]);
    let live = 768 * KIB as u64;
    assert_eq!(
        strings(&forget_json(&workspace, &["--keep-last", "1"])["forgotten"]),
        ids([&first])
    );

    let tuning = ["--grace", "0s", "--max-unused", "0%"];
    let before = repo_state(&workspace);
    let mut args = vec!["--dry-run"];
    args.extend(tuning);
    let plan = prune_json(&workspace, &args);
    assert_eq!(repo_state(&workspace), before, "prune --dry-run wrote");
    let repack = plan["repack"].as_array().unwrap().clone();
    let big = repack
        .iter()
        .find(|pack| pack["size"].as_u64().unwrap() > 4 * MIB as u64)
        .unwrap_or_else(|| panic!("the data pack is not repacked: {plan:#}"));
    assert!(
        big["live_bytes"].as_u64().unwrap() >= live - KIB as u64
            && big["live_bytes"].as_u64().unwrap() < live + 16 * KIB as u64,
        "{big:#}"
    );
    assert!(big["dead_bytes"].as_u64().unwrap() >= 5 * live, "{big:#}");
    assert!(plan["bytes_to_rewrite"].as_u64().unwrap() >= live);

    // Phase one: live blobs copied into a new pack, the old one marked.
    let packs = pack_ids(&workspace);
    let run = prune_json(&workspace, &tuning);
    let mark = run["mark_written"].as_str().expect("a mark").to_string();
    assert!(run["repacked_bytes"].as_u64().unwrap() >= live, "{run:#}");
    let now = pack_ids(&workspace);
    assert!(now.is_superset(&packs), "phase one deleted a pack");
    assert!(now.len() > packs.len(), "no new pack was written");
    assert_eq!(
        names_in(&workspace, "deletions"),
        [mark].into_iter().collect()
    );
    assert_no_damage(&workspace, true, "after the repack");
    assert_restores(&workspace, &second, "src", &source);

    // Phase two: the old packs go.
    let run = prune_json(&workspace, &tuning);
    let deleted = pack_list(&run["delete"]);
    assert!(
        deleted
            .iter()
            .any(|(pack, _)| pack == big["pack"].as_str().unwrap()),
        "{run:#}"
    );
    assert_eq!(run["packs_deleted"], deleted.len());
    assert_eq!(names_in(&workspace, "deletions"), BTreeSet::new());

    // No dead blob is left anywhere: the plan says so, and the packs hold
    // no more than the live data (and a few trees).
    let mut args = vec!["--dry-run"];
    args.extend(tuning);
    let plan = prune_json(&workspace, &args);
    assert_eq!(plan["unused_bytes"], 0, "{plan:#}");
    assert_eq!(pack_list(&plan["repack"]), vec![], "{plan:#}");
    assert_eq!(pack_list(&plan["mark_unused"]), vec![], "{plan:#}");
    let stored = tree_size(&workspace.repo().join("data"));
    assert!(
        stored >= live && stored < live + 64 * KIB as u64,
        "{stored} bytes of packs for {live} bytes of live data"
    );
    assert_spotless(&workspace, "after the repack's phase two");
    assert_restores(&workspace, &second, "src", &source);
    // Without the local cache too: only the rewritten index files count.
    let target = workspace.path("no-cache");
    workspace
        .cairn_repo([
            "--no-cache".as_ref(),
            "restore".as_ref(),
            second.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ])
        .ok();
    assert_same_tree(&source, &target.join("src"));
}

// ---------------------------------------------------------------------------
// 5. Damage stops a prune
// ---------------------------------------------------------------------------

#[test]
fn damage_a_kept_snapshot_depends_on_stops_prune_before_it_deletes_anything() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join("old.bin"), &noise(1, MIB));
    let first = backup(&workspace, "src", &source, &[]);
    fs::remove_file(source.join("old.bin")).unwrap();
    let packs_before = pack_ids(&workspace);
    write(&source.join("new.bin"), &noise(2, MIB));
    let second = backup(&workspace, "src", &source, &[]);
    let new_packs: Vec<PathBuf> = workspace
        .packs()
        .into_iter()
        .filter(|pack| {
            !packs_before.contains(&pack.file_name().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    let needed = data_packs(&new_packs);
    assert_eq!(needed.len(), 1, "{new_packs:?}");
    let needed = needed[0].clone();
    let needed_id = needed.file_name().unwrap().to_string_lossy().into_owned();

    // A due mark exists, so a prune that went ahead would delete something.
    forget_json(&workspace, &[&first]);
    let marked = prune_json(&workspace, &["--grace", "0s"]);
    assert!(marked["mark_written"].is_string(), "{marked:#}");

    // 1. The pack the kept snapshot needs is lost.
    let saved = fs::read(&needed).unwrap();
    fs::remove_file(&needed).unwrap();
    let before = repo_state(&workspace);
    for dry_run in [false, true] {
        let mut args = vec!["prune", "--grace", "0s"];
        if dry_run {
            args.push("--dry-run");
        }
        let run = workspace.cairn_repo(&args).expect(4);
        assert!(
            run.stderr.contains(&needed_id) && run.stderr.contains("missing"),
            "the message does not name the missing pack {needed_id}:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("before deleting anything"),
            "{}",
            run.stderr
        );
        assert_eq!(
            repo_state(&workspace),
            before,
            "prune changed a damaged repository"
        );
    }
    // forget --prune: the forget is done (nothing to forget here), the
    // prune is not, and the JSON says why.
    let run = workspace
        .cairn_repo([
            "--json",
            "forget",
            "--keep-last",
            "5",
            "--prune",
            "--grace",
            "0s",
        ])
        .expect(4);
    let report = run.json();
    assert!(
        report["prune"]["error"]
            .as_str()
            .is_some_and(|error| error.contains(&needed_id)),
        "{report:#}"
    );
    assert_eq!(repo_state(&workspace), before);

    // 2. The pack is back but the kept snapshot's manifest is damaged: what
    // it needs is unknown, so the prune marks nothing new (that could mark
    // its data), names it, and only carries out the due mark (whose packs
    // no snapshot needed when marked, and no backup has used since). The
    // pack the damaged snapshot needs stays.
    fs::write(&needed, &saved).unwrap();
    let manifest = workspace.repo().join("snapshots").join(&second);
    let manifest_bytes = fs::read(&manifest).unwrap();
    replace_file(&manifest, &manifest_bytes[..manifest_bytes.len() / 2]);
    let run = workspace.cairn_repo(["prune", "--grace", "0s"]).ok();
    assert!(
        run.stderr.contains(&second) && run.stderr.contains("cannot be read"),
        "{}",
        run.stderr
    );
    assert!(
        needed.exists(),
        "prune deleted what a damaged snapshot needs"
    );
    let pruned = prune_json(&workspace, &["--grace", "0s", "--dry-run"]);
    assert_eq!(pruned["mark_unused"], Value::Array(vec![]), "{pruned:#}");
    assert_eq!(pruned["repack"], Value::Array(vec![]), "{pruned:#}");
    assert_eq!(pruned["unsure_snapshots"][0]["snapshot"], second.as_str());

    // 3. Repaired by hand: the prune goes on, and all is well.
    replace_file(&manifest, &manifest_bytes);
    prune_json(&workspace, &["--grace", "0s"]);
    assert_spotless(&workspace, "after the repaired prune");
    assert_restores(&workspace, &second, "src", &source);
}

/// Replaces a (possibly read-only) repository file's contents.
fn replace_file(path: &Path, contents: &[u8]) {
    fs::remove_file(path).unwrap();
    fs::write(path, contents).unwrap();
}

// ---------------------------------------------------------------------------
// 6. forget --prune
// ---------------------------------------------------------------------------

#[test]
fn forget_with_prune_does_both_in_one_job() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join("big.bin"), &noise(7, 2 * MIB));
    let first = backup(&workspace, "src", &source, &[]);
    fs::remove_file(source.join("big.bin")).unwrap();
    write(&source.join("small.bin"), &noise(8, 256 * KIB));
    let second = backup(&workspace, "src", &source, &[]);
    let size_before = workspace.repo_size();

    let job = [
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0s",
    ];
    let run = workspace.cairn_repo(job).ok();
    let report = run.json();
    assert_eq!(strings(&report["forgotten"]), ids([&first]));
    assert!(report["record"].is_string(), "{report:#}");
    let prune = &report["prune"];
    let mark = prune["mark_written"].as_str().expect("a mark").to_string();
    assert_eq!(prune["packs_deleted"], 0);
    assert!(
        prune["bytes_marked"].as_u64().unwrap() >= 2 * MIB as u64,
        "{report:#}"
    );
    assert_eq!(names_in(&workspace, "snapshots"), ids([&second]));
    assert_eq!(
        names_in(&workspace, "deletions"),
        [mark.clone()].into_iter().collect()
    );

    // The same job again: nothing more to forget, the marked packs go.
    let report = workspace.cairn_repo(job).ok().json();
    assert_eq!(strings(&report["forgotten"]), BTreeSet::new());
    assert_eq!(report["record"], Value::Null);
    let prune = &report["prune"];
    assert_eq!(strings(&prune["due_marks"]), [mark].into_iter().collect());
    assert!(prune["packs_deleted"].as_u64().unwrap() >= 1, "{report:#}");
    assert_eq!(prune["marks_removed"], 1);
    assert_eq!(names_in(&workspace, "deletions"), BTreeSet::new());
    let freed = size_before - workspace.repo_size();
    assert!(freed >= 2 * MIB as u64, "freed only {freed} bytes");
    assert_spotless(&workspace, "after forget --prune twice");
    assert_restores(&workspace, &second, "src", &source);

    // In text, a third time: it says what it did.
    let run = workspace
        .cairn_repo(["forget", "--keep-last", "1", "--prune", "--grace", "0s"])
        .ok();
    assert!(
        run.stdout.contains("forgot 0 snapshot(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("phase 1:"), "{}", run.stdout);
    assert!(
        run.stderr.contains("grace period under a minute"),
        "no warning about the short grace period: {}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 7. Next to running backups
// ---------------------------------------------------------------------------

/// The documented refusal (exit code 6) to write a snapshot whose data a
/// prune deleted (or kept marking) while the backup ran.
const BACKUP_CONFLICT: &str = "run the backup again";

fn spawn_cairn(workspace: &Workspace, args: &[String]) -> Child {
    workspace
        .command()
        .arg("--repo")
        .arg(workspace.repo())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn")
}

/// A sparse disk image (reading it takes a while, storing it almost
/// nothing), with a few bytes written at a place that depends on `round`.
fn touch_disk_image(path: &Path, round: u64) {
    use std::io::{Seek, SeekFrom, Write};
    const SIZE: u64 = 384 << 20;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("open disk image");
    file.set_len(SIZE).unwrap();
    file.seek(SeekFrom::Start((round * 7_919 * 4_096) % SIZE))
        .unwrap();
    file.write_all(format!("round {round}").as_bytes()).unwrap();
}

/// Rounds of two backups (overlapping sources that change every round)
/// while the main thread runs `forget --keep-last 2 --prune --grace 1s` and
/// `prune --grace 1s` back to back until both have finished. A backup may
/// succeed or be refused with the documented conflict (exit 6), nothing
/// else; every forget and prune succeeds; in the end nothing is damaged and
/// every snapshot left restores as its source was.
#[test]
fn forget_and_prune_next_to_running_backups_lose_nothing() {
    const ROUNDS: u64 = 8;
    let started = Instant::now();
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let names = ["a", "b"];
    let sources: Vec<PathBuf> = names.iter().map(|name| workspace.path(name)).collect();
    // Snapshot id -> (component, copy of its source as it was backed up).
    let mut taken: HashMap<String, (String, PathBuf)> = HashMap::new();
    let (mut succeeded, mut conflicts) = (0, 0);
    let mut failures = Vec::new();
    let mut prune_runs = 0;

    for round in 0..ROUNDS {
        // Both sources share a file that changes every other round, and
        // each has its own that changes every round. On odd rounds `a` also
        // holds what `b` held two rounds ago: data whose last snapshot is
        // forgotten (and whose pack a prune marks, and may delete) while
        // `a`'s backup, which reuses it, is still running. `a` also has a
        // large sparse disk image, changed a little on those rounds, so its
        // backup then outlasts the grace period; on even rounds both
        // backups are quick.
        let a = &sources[0];
        for (which, source) in sources.iter().enumerate() {
            write(&source.join("shared.bin"), &noise(7_000 + round / 2, MIB));
            write(
                &source.join("own.bin"),
                &noise(1_000 * (which as u64 + 1) + round, 512 * KIB),
            );
            write(
                &source.join(format!("log/{round}.txt")),
                format!("round {round} of {}\n", names[which]).as_bytes(),
            );
        }
        if round % 2 == 1 && round >= 2 {
            write(&a.join("handoff.bin"), &noise(2_000 + round - 2, 512 * KIB));
        } else {
            let _ = fs::remove_file(a.join("handoff.bin"));
        }
        if round % 2 == 1 || round == 0 {
            touch_disk_image(&a.join("disk.img"), round);
        }
        for (which, source) in sources.iter().enumerate() {
            copy_tree(
                source,
                &workspace.path(&format!("copies/{round}/{}", names[which])),
            );
        }
        let backups: Vec<Child> = sources
            .iter()
            .zip(names)
            .map(|(source, name)| {
                spawn_cairn(
                    &workspace,
                    &[
                        "--json".into(),
                        "backup".into(),
                        "--component".into(),
                        format!("{name}={}", source.display()),
                    ],
                )
            })
            .collect();

        // The main thread forgets and prunes for as long as they run, at
        // least once each.
        let mut backups = backups;
        let mut jobs = 0;
        loop {
            let job: &[&str] = if jobs % 2 == 0 {
                &[
                    "--json",
                    "forget",
                    "--keep-last",
                    "2",
                    "--prune",
                    "--grace",
                    "1s",
                ]
            } else {
                &["--json", "prune", "--grace", "1s"]
            };
            let run = workspace.cairn_repo(job);
            jobs += 1;
            if run.code != 0 {
                let error = serde_json::from_str::<Value>(&run.stdout)
                    .ok()
                    .and_then(|report| report["prune"]["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                failures.push(format!(
                    "round {round}: {} exited {}: {error}{}",
                    job[1..].join(" "),
                    run.code,
                    run.stderr
                ));
            }
            let running = backups
                .iter_mut()
                .map(|child| child.try_wait().unwrap())
                .filter(Option::is_none)
                .count();
            if jobs >= 2 && running == 0 {
                break;
            }
        }
        prune_runs += jobs;

        for (child, name) in backups.into_iter().zip(names) {
            let run = run_of(child.wait_with_output().expect("backup finishes"));
            if run.code == 0 {
                succeeded += 1;
                let id = run.json()["snapshot"].as_str().unwrap().to_string();
                let copy = workspace.path(&format!("copies/{round}/{name}"));
                taken.insert(id, (name.to_string(), copy));
            } else if run.code == 6 && run.stderr.contains(BACKUP_CONFLICT) {
                conflicts += 1;
                eprintln!("round {round}: backup of {name} refused: {}", run.stderr);
            } else {
                failures.push(format!(
                    "round {round}: backup of {name} exited {}:\n{}",
                    run.code, run.stderr
                ));
            }
        }
    }
    eprintln!(
        "{succeeded} backups succeeded, {conflicts} refused with the conflict message, \
         {prune_runs} forget/prune runs, in {:?}",
        started.elapsed()
    );

    // First what matters most: nothing lost, whatever else went wrong.
    let report = assert_no_damage(&workspace, true, "after the concurrent rounds");
    eprintln!("final verify findings: {:?}", finding_kinds(&report));
    let remaining = listed_snapshots(&workspace);
    assert!(remaining.len() >= 2, "{remaining:?}");
    for id in &remaining {
        let (name, copy) = taken
            .get(id)
            .unwrap_or_else(|| panic!("snapshot {id} is none of the backups taken"));
        assert_restores(&workspace, id, name, copy);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let total = succeeded + conflicts;
    assert!(
        succeeded * 2 > total,
        "only {succeeded} of {total} backups succeeded"
    );
    // Each component keeps at least its last two snapshots that succeeded.
    for name in names {
        let count = remaining.iter().filter(|id| taken[*id].0 == name).count();
        assert!(count >= 2, "component {name} has {count} snapshots left");
    }
    eprintln!("total {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// 8. Killed mid-run
// ---------------------------------------------------------------------------

/// When to kill a prune.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// After this fraction of the time a complete prune took.
    After(f64),
    /// As soon as a pack it was deleting is gone (phase two under way).
    FirstPackGone,
    /// As soon as a new pack appears (a repack under way).
    FirstNewPack,
}

/// A new version of the source (two of its four files rewritten), backed
/// up; the source is copied aside under the snapshot's id.
fn next_generation(
    workspace: &Workspace,
    source: &Path,
    generation: u64,
    copies: &mut HashMap<String, PathBuf>,
) -> String {
    for k in 0..2 {
        let file = (generation * 2 + k) % 4;
        write(
            &source.join(format!("f{file}.bin")),
            &noise(10_000 + generation * 10 + k, 512 * KIB),
        );
    }
    write(
        &source.join("generation.txt"),
        format!("generation {generation}\n").as_bytes(),
    );
    let id = backup(workspace, "src", source, &[]);
    let copy = workspace.path(&format!("copies/{id}"));
    copy_tree(source, &copy);
    copies.insert(id.clone(), copy);
    id
}

/// Every snapshot listed restores exactly as its source was.
fn assert_all_restore(workspace: &Workspace, copies: &HashMap<String, PathBuf>, context: &str) {
    let listed = listed_snapshots(workspace);
    assert!(!listed.is_empty(), "{context}: no snapshot left");
    for id in &listed {
        let copy = copies
            .get(id)
            .unwrap_or_else(|| panic!("{context}: unknown snapshot {id}"));
        assert_restores(workspace, id, "src", copy);
    }
}

#[test]
fn prune_killed_at_many_moments_leaves_a_repository_that_verifies_and_restores() {
    let started = Instant::now();
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    for file in 0..4u64 {
        write(
            &source.join(format!("f{file}.bin")),
            &noise(file, 512 * KIB),
        );
    }
    let mut copies = HashMap::new();
    let mut generation = 0;
    let mut new_generation = |copies: &mut HashMap<String, PathBuf>| {
        generation += 1;
        next_generation(&workspace, &source, generation, copies)
    };
    new_generation(&mut copies);
    new_generation(&mut copies);
    let tuning = ["--grace", "0s", "--max-unused", "0%"];

    use Moment::{After, FirstNewPack, FirstPackGone};
    const MOMENTS: [Moment; 10] = [
        After(0.3),
        FirstPackGone,
        After(0.05),
        FirstNewPack,
        After(0.6),
        After(0.15),
        FirstPackGone,
        After(0.9),
        FirstNewPack,
        After(0.45),
    ];
    let (mut killed, mut with_due_marks) = (0, 0);
    for (attempt, moment) in MOMENTS.iter().enumerate() {
        // Data to delete: a forgotten snapshot's, marked by a complete run
        // (which also finishes whatever the last killed run left).
        new_generation(&mut copies);
        forget_json(&workspace, &["--keep-last", "2"]);
        let clock = Instant::now();
        let marked = prune_json(&workspace, &tuning);
        let full = clock.elapsed();
        with_due_marks += usize::from(names_in(&workspace, "deletions").len() == 1);
        assert!(
            marked["mark_written"].is_string(),
            "attempt {attempt}: nothing marked: {marked:#}"
        );
        // And data to mark or repack in the run that is killed.
        new_generation(&mut copies);
        forget_json(&workspace, &["--keep-last", "2"]);

        let packs_before = workspace.packs();
        let clock = Instant::now();
        let mut child = workspace
            .command()
            .arg("--repo")
            .arg(workspace.repo())
            .arg("prune")
            .args(tuning)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prune");
        match moment {
            After(fraction) => {
                std::thread::sleep(full.mul_f64(*fraction).max(Duration::from_millis(1)))
            }
            FirstPackGone | FirstNewPack => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                    let now = workspace.packs();
                    let seen = match moment {
                        FirstPackGone => packs_before.iter().any(|pack| !now.contains(pack)),
                        _ => now.iter().any(|pack| !packs_before.contains(pack)),
                    };
                    if seen {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        let was_killed = kill(&mut child);
        let lived = clock.elapsed();
        killed += usize::from(was_killed);
        let context = format!(
            "attempt {attempt} ({moment:?}, killed={was_killed} after {lived:?}, a complete run took {full:?})"
        );

        let report = assert_no_damage(&workspace, true, &context);
        eprintln!(
            "{context}: findings {:?}, {} mark(s) left",
            finding_kinds(&report),
            names_in(&workspace, "deletions").len()
        );
        assert_objects_named_by_their_hash(&workspace.repo());
        assert_all_restore(&workspace, &copies, &context);
    }
    assert_eq!(with_due_marks, MOMENTS.len());
    assert!(
        killed >= MOMENTS.len() / 2,
        "only {killed} of {} prunes were still running when killed",
        MOMENTS.len()
    );

    // Two complete runs finish every deletion; what is left verifies with
    // at most notices, and restores.
    let mut runs = 0;
    loop {
        let run = prune_json(&workspace, &tuning);
        runs += 1;
        if run["mark_written"].is_null() {
            break;
        }
        assert!(runs < 4, "prune keeps marking: {run:#}");
    }
    assert_eq!(names_in(&workspace, "deletions"), BTreeSet::new());
    let report = assert_no_damage(&workspace, true, "after the final prunes");
    eprintln!(
        "{killed} of {} prunes killed; final findings {:?}; {:?}",
        MOMENTS.len(),
        finding_kinds(&report),
        started.elapsed()
    );
    assert_all_restore(&workspace, &copies, "after the final prunes");
}
