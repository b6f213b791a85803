//! `cairn copy` and `cairn init --like`: snapshots move between
//! repositories with only the missing chunks, their bodies byte for byte
//! (each manifest signed for the target), and damage in the source never
//! becomes a snapshot in the target.

mod common;
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// `cairn --repo REPO ARGS...` for a repository other than the workspace's.
fn at<I, S>(workspace: &Workspace, repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> = vec!["--repo".into(), repo.into()];
    all.extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
    workspace.cairn(all)
}

/// `cairn --json copy --from FROM --to TO EXTRA...`
fn copy(workspace: &Workspace, from: &Path, to: &Path, extra: &[&str]) -> Run {
    let mut all: Vec<std::ffi::OsString> = vec![
        "--json".into(),
        "copy".into(),
        "--from".into(),
        from.into(),
        "--to".into(),
        to.into(),
    ];
    all.extend(extra.iter().map(|arg| arg.into()));
    workspace.cairn(all)
}

fn backup(workspace: &Workspace, repo: &Path, source: &Path) -> String {
    let run = at(
        workspace,
        repo,
        [
            OsStr::new("--json"),
            OsStr::new("backup"),
            OsStr::new("--component"),
            format!("data={}", source.display()).as_ref(),
        ],
    )
    .ok();
    run.json()["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

fn snapshot_ids(workspace: &Workspace, repo: &Path) -> Vec<String> {
    let mut ids: Vec<String> =
        at(workspace, repo, ["--json", "snapshots"]).ok().json()["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|snapshot| snapshot["id"].as_str().expect("id").to_string())
            .collect();
    ids.sort();
    ids
}

/// A copy report's snapshots as the target names them (`target_id`),
/// each paired with its id in the source.
fn target_ids(report: &Value) -> Vec<(String, String)> {
    report["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|snapshot| {
            (
                snapshot["id"].as_str().expect("id").to_string(),
                snapshot["target_id"]
                    .as_str()
                    .expect("target id")
                    .to_string(),
            )
        })
        .collect()
}

/// The target id of source snapshot `id` in a copy report.
fn target_id_of(report: &Value, id: &str) -> String {
    target_ids(report)
        .into_iter()
        .find(|(source, _)| source == id)
        .unwrap_or_else(|| panic!("{id} is not in {report}"))
        .1
}

/// Each snapshot's time, host and components, as `snapshots` lists them.
fn summaries(workspace: &Workspace, repo: &Path) -> Vec<String> {
    let mut listed: Vec<String> =
        at(workspace, repo, ["--json", "snapshots"]).ok().json()["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|snapshot| {
                format!(
                    "{} {} {}",
                    snapshot["time"], snapshot["host"], snapshot["components"]
                )
            })
            .collect();
    listed.sort();
    listed
}

fn verify_clean(workspace: &Workspace, repo: &Path, extra: &[&str]) {
    let mut args = vec!["--json", "verify", "--read-data"];
    args.extend_from_slice(extra);
    let run = at(workspace, repo, &args);
    let report = run.json();
    assert_eq!(run.code, 0, "{}", brief(&report));
    assert_eq!(report["clean"], true);
}

fn public_key(init: &Run) -> String {
    init.json()["public_key"]
        .as_str()
        .expect("public key")
        .to_string()
}

/// A small tree: incompressible files in nested directories and a symlink.
fn make_source(root: &Path, seed: u64) {
    for index in 0..12u64 {
        write(
            &root.join(format!("dir{}/file{index}.bin", index % 3)),
            &noise(seed * 100 + index, 30_000 + 7_000 * index as usize),
        );
    }
    write(
        &root.join("notes.txt"),
        format!("notes of source {seed}\n").as_bytes(),
    );
    std::os::unix::fs::symlink("notes.txt", root.join("link")).unwrap();
}

#[test]
fn a_copy_restores_byte_identical_is_signed_for_the_target_and_a_second_copy_copies_nothing() {
    let workspace = Workspace::new();
    let (a, b) = (workspace.path("a"), workspace.path("b"));
    let source = workspace.path("src");
    make_source(&source, 1);
    let a_key = public_key(&at(&workspace, &a, ["--json", "init", "--plaintext"]).ok());
    backup(&workspace, &a, &source);
    write(&source.join("dir0/late.bin"), &noise(77, 50_000));
    backup(&workspace, &a, &source);
    let b_key = public_key(
        &at(
            &workspace,
            &b,
            [
                "--json",
                "init",
                "--plaintext",
                "--like",
                a.to_str().unwrap(),
            ],
        )
        .ok(),
    );

    let first = copy(&workspace, &a, &b, &[]).ok().json();
    assert_eq!(first["snapshots_copied"], 2, "{first}");
    assert_eq!(first["snapshots_damaged"], 0);
    assert!(first["blobs_copied"].as_u64().unwrap() > 12, "{first}");

    // The snapshots say in B what they say in A; each manifest is signed
    // for B (a manifest names its repository), under the id the report
    // gives.
    assert_eq!(summaries(&workspace, &a), summaries(&workspace, &b));
    let mut copied: Vec<String> = target_ids(&first).into_iter().map(|(_, id)| id).collect();
    copied.sort();
    assert_eq!(snapshot_ids(&workspace, &b), copied);
    assert_ne!(snapshot_ids(&workspace, &a), copied);
    assert_objects_named_by_their_hash(&b);
    let out = workspace.path("out");
    at(
        &workspace,
        &b,
        [
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    assert_same_tree(&source, &out.join("data"));
    verify_clean(&workspace, &b, &[]);
    // B's own key vouches for the copies; A's key is not needed there.
    verify_clean(&workspace, &b, &["--trusted-key", &b_key]);
    let refused = at(
        &workspace,
        &b,
        ["--json", "--trusted-key", &a_key, "verify"],
    );
    assert_ne!(refused.code, 0, "A's key vouches for B's copies");

    let size = tree_size(&b);
    let second = copy(&workspace, &a, &b, &[]).ok().json();
    assert_eq!(second["snapshots_copied"], 0, "{second}");
    assert_eq!(second["blobs_copied"], 0);
    assert_eq!(second["bytes_read"], 0);
    assert_eq!(tree_size(&b), size, "a second copy writes nothing");
    let named = copy(&workspace, &a, &b, &["latest"]).ok().json();
    assert_eq!(
        named["snapshots"][0]["result"], "already-present",
        "{named}"
    );
}

#[test]
fn a_like_repository_receives_only_the_chunks_it_lacks() {
    let workspace = Workspace::new();
    let (a, b, c) = (
        workspace.path("a"),
        workspace.path("b"),
        workspace.path("c"),
    );
    let source = workspace.path("src");
    for index in 0..8u64 {
        write(
            &source.join(format!("part{index}.bin")),
            &noise(index, 250_000),
        );
    }
    let made = at(
        &workspace,
        &a,
        [
            "--json",
            "init",
            "--plaintext",
            "--chunk-min",
            "2048",
            "--chunk-avg",
            "8192",
            "--chunk-max",
            "32768",
            "--compression-level",
            "7",
        ],
    )
    .ok()
    .json();
    backup(&workspace, &a, &source);

    let like = at(
        &workspace,
        &b,
        [
            "--json",
            "init",
            "--plaintext",
            "--like",
            a.to_str().unwrap(),
        ],
    )
    .ok()
    .json();
    assert_eq!(like["chunker"], made["chunker"]);
    assert_eq!(like["compression_level"], 7);
    assert_ne!(like["repository_id"], made["repository_id"]);
    let config: Value = serde_json::from_slice(&fs::read(b.join("config")).unwrap()).unwrap();
    assert_eq!(config["compression"]["level"], 7);
    assert_eq!(config["chunker"]["avg_size"], 8192);
    // B holds a snapshot of its own of the same data (its own key, its own
    // packs), then A moves on by one new file.
    backup(&workspace, &b, &source);
    write(&source.join("new.bin"), &noise(99, 100_000));
    backup(&workspace, &a, &source);

    let before = tree_size(&b);
    let report = copy(&workspace, &a, &b, &[]).ok().json();
    assert_eq!(report["snapshots_copied"], 2, "{report}");
    // The first snapshot's chunks and tree are all in B already (its own
    // backup cut the same chunks); the second brings its root tree and the
    // new file's chunks (100 kB at 8 KiB average).
    let first = &report["snapshots"][0];
    assert!(first["blobs_copied"].as_u64().unwrap() <= 1, "{report}");
    assert!(first["blobs_present"].as_u64().unwrap() > 100, "{report}");
    let second = report["snapshots"][1]["blobs_copied"].as_u64().unwrap();
    assert!((2..=30).contains(&second), "{report}");
    let grown = tree_size(&b) - before;
    assert!(
        grown < 100_000 + 60_000,
        "B grew by {grown} bytes for 100 kB of new data"
    );
    verify_clean(&workspace, &b, &[]);
    // Only 100 kB of the new file was ever read from A's packs, beside
    // the trees.
    assert!(report["bytes_read"].as_u64().unwrap() < 150_000, "{report}");

    // A repository that chunks differently shares few chunks with A (only
    // where both cut at the same places by chance): the copy is complete
    // but stores almost everything again, and says why.
    at(&workspace, &c, ["init", "--plaintext"]).ok();
    backup(&workspace, &c, &source);
    let unlike = copy(&workspace, &a, &c, &[]).ok();
    assert!(
        unlike.stderr.contains("chunk differently"),
        "{}",
        unlike.stderr
    );
    let unlike = unlike.json();
    let first = &unlike["snapshots"][0];
    assert!(first["blobs_present"].as_u64().unwrap() < 50, "{unlike}");
    assert!(first["blobs_copied"].as_u64().unwrap() > 100, "{unlike}");
    verify_clean(&workspace, &c, &[]);
}

#[test]
fn damage_in_the_source_fails_only_its_snapshot_and_names_the_pack() {
    let workspace = Workspace::new();
    let (a, b) = (workspace.repo(), workspace.path("b"));
    workspace.init_plaintext();
    let first_source = workspace.path("first");
    make_source(&first_source, 3);
    let damaged = backup(&workspace, &a, &first_source);
    let damaged_packs: Vec<PathBuf> = data_packs(&workspace.packs());
    let second_source = workspace.path("second");
    make_source(&second_source, 4);
    let healthy = backup(&workspace, &a, &second_source);
    at(
        &workspace,
        &b,
        ["init", "--plaintext", "--like", a.to_str().unwrap()],
    )
    .ok();

    let pack = &damaged_packs[0];
    let blob = header_of(pack).blobs[0];
    let mut bytes = fs::read(pack).unwrap();
    bytes[blob.offset as usize + 10] ^= 0x55;
    fs::write(pack, &bytes).unwrap();
    let pack_id = id_of_file(pack).to_hex();

    let run = copy(&workspace, &a, &b, &[]).expect(4);
    let report = run.json();
    assert_eq!(report["snapshots_damaged"], 1, "{report}");
    assert_eq!(report["snapshots_copied"], 1, "{report}");
    let failed = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|snapshot| snapshot["result"] == "damaged")
        .expect("a damaged snapshot");
    assert_eq!(failed["id"], damaged.as_str());
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains(&pack_id), "{reason}");
    assert!(reason.contains(&blob.id.to_hex()), "{reason}");

    // B holds only the healthy snapshot and nothing broken.
    let healthy = target_id_of(&report, &healthy);
    assert_eq!(snapshot_ids(&workspace, &b), vec![healthy.clone()]);
    verify_clean(&workspace, &b, &[]);

    // In text, the pack is named too.
    let text = workspace.cairn([
        OsStr::new("copy"),
        OsStr::new("--from"),
        a.as_os_str(),
        OsStr::new("--to"),
        b.as_os_str(),
        OsStr::new(&damaged),
    ]);
    assert_eq!(text.code, 4, "{}{}", text.stdout, text.stderr);
    assert!(text.stdout.contains(&pack_id), "{}", text.stdout);
    assert_eq!(snapshot_ids(&workspace, &b), vec![healthy]);
    verify_clean(&workspace, &b, &[]);
}

#[test]
fn named_snapshots_are_copied_alone_and_untrusted_ones_are_refused() {
    let workspace = Workspace::new();
    let (a, b) = (workspace.path("a"), workspace.path("b"));
    let source = workspace.path("src");
    at(&workspace, &a, ["init", "--plaintext"]).ok();
    let mut ids = Vec::new();
    for round in 0..3u64 {
        write(
            &source.join(format!("round{round}.bin")),
            &noise(round, 40_000),
        );
        ids.push(backup(&workspace, &a, &source));
    }
    let b_key = public_key(&at(&workspace, &b, ["--json", "init", "--plaintext"]).ok());

    let report = copy(&workspace, &a, &b, &[&ids[0][..8], &ids[2]])
        .ok()
        .json();
    assert_eq!(report["snapshots_copied"], 2, "{report}");
    let mut expected = vec![
        target_id_of(&report, &ids[0]),
        target_id_of(&report, &ids[2]),
    ];
    expected.sort();
    assert_eq!(snapshot_ids(&workspace, &b), expected);
    verify_clean(&workspace, &b, &[]);

    // Trusting only B's key, A's snapshots are not vouched for: named,
    // the copy refuses and names it; by default, they are left out.
    let refused = copy(&workspace, &a, &b, &["--trusted-key", &b_key, &ids[1]]).expect(1);
    assert!(
        refused.stderr.contains(&ids[1]) && refused.stderr.contains("not trusted"),
        "{}",
        refused.stderr
    );
    let skipped = copy(&workspace, &a, &b, &["--trusted-key", &b_key])
        .ok()
        .json();
    assert_eq!(skipped["snapshots_copied"], 0, "{skipped}");
    assert_eq!(skipped["snapshots"][0]["result"], "untrusted");
    assert_eq!(snapshot_ids(&workspace, &b).len(), 2);

    // A dry run says what the default would copy, and writes nothing.
    let size = tree_size(&b);
    let dry = copy(&workspace, &a, &b, &["--dry-run"]).ok().json();
    assert_eq!(dry["snapshots_would_copy"], 1, "{dry}");
    assert_eq!(dry["snapshots"][0]["id"], ids[1].as_str());
    assert!(dry["blobs_copied"].as_u64().unwrap() >= 1);
    assert_eq!(tree_size(&b), size);
    let rest = copy(&workspace, &a, &b, &[]).ok().json();
    assert_eq!(rest["snapshots_copied"], 1, "{rest}");
    expected.push(target_id_of(&rest, &ids[1]));
    expected.sort();
    assert_eq!(snapshot_ids(&workspace, &b), expected);
}

#[test]
fn init_like_takes_every_chunking_setting_including_sqlite_pages() {
    let workspace = Workspace::new();
    let (a, b, c) = (
        workspace.path("a"),
        workspace.path("b"),
        workspace.path("c"),
    );
    at(&workspace, &a, ["init", "--plaintext"]).ok();
    let config = |repo: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(repo.join("config")).unwrap()).unwrap()
    };
    assert_eq!(config(&a)["sqlite_pages_per_chunk"], 1);
    at(
        &workspace,
        &b,
        ["init", "--plaintext", "--like", a.to_str().unwrap()],
    )
    .ok();
    assert_eq!(config(&b)["sqlite_pages_per_chunk"], 1);
    // A repository made before SQLite pages existed has no such key; a
    // repository made like it must not gain one, or the two would cut
    // databases differently.
    let mut old = config(&a);
    old.as_object_mut()
        .unwrap()
        .remove("sqlite_pages_per_chunk");
    fs::write(a.join("config"), serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    at(
        &workspace,
        &c,
        ["init", "--plaintext", "--like", a.to_str().unwrap()],
    )
    .ok();
    assert!(
        config(&c).get("sqlite_pages_per_chunk").is_none(),
        "{}",
        config(&c)
    );
    assert_eq!(config(&c)["chunker"], config(&a)["chunker"]);
}
