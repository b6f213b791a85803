//! A repository in an S3 bucket behaves as one on a local disk: the full
//! round trip, damage found and kept out of a restore, backups killed
//! mid-way, two backups at once, and the two-phase forget + prune; and a
//! restore of many small files reads packs in a few spans, not a range per
//! file, and one of deltas reads their bases likewise. Each test
//! runs the real `cairn` against a real S3-compatible server (moto's) on
//! loopback, with made-up credentials.

mod common;
use common::rewrites::{rewrite_in_place, vector_index};
use common::s3::{BUCKET, S3Server};
use common::*;

use cairn_store::Id;
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Where in the bucket the tests' repository lives.
const PREFIX: &str = "backups/repo";

/// A workspace whose repository is `s3://cairn-test/backups/repo` on its
/// own server.
struct S3Repo {
    workspace: Workspace,
    server: S3Server,
}

impl S3Repo {
    fn new() -> Self {
        S3Repo {
            workspace: Workspace::new(),
            server: S3Server::start(),
        }
    }

    fn location(&self) -> String {
        format!("s3://{BUCKET}/{PREFIX}")
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.workspace.path(relative)
    }

    /// `cairn --repo s3://… ` with the server's endpoint and credentials.
    fn command(&self) -> Command {
        let mut command = self.workspace.command();
        self.server.configure(&mut command);
        command.arg("--repo").arg(self.location());
        command
    }

    fn cairn<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_of(self.command().args(args).output().expect("run cairn"))
    }

    fn backup(&self, args: &[&OsStr]) -> Value {
        let mut all = vec![OsStr::new("--json"), OsStr::new("backup")];
        all.extend_from_slice(args);
        self.cairn(all).ok().json()
    }

    fn backup_of(&self, source: &Path) -> String {
        let summary = self.backup(&[source.as_os_str()]);
        summary["snapshot"]
            .as_str()
            .expect("snapshot id")
            .to_string()
    }

    fn restore(&self, snapshot: &str, target: &Path) -> Run {
        self.cairn([
            OsStr::new("restore"),
            OsStr::new(snapshot),
            OsStr::new("--target"),
            target.as_os_str(),
        ])
    }

    fn verify(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json", "verify"];
        all.extend_from_slice(args);
        let run = self.cairn(all);
        (run.code, run.json())
    }

    fn assert_clean(&self, context: &str) {
        let (code, report) = self.verify(&["--read-data"]);
        assert!(
            code == 0 && report["clean"] == true,
            "{context}: verify --read-data exited {code}:\n{}",
            brief(&report)
        );
    }

    /// Plain verify finds no damage (leftovers of a killed backup, such as
    /// packs no index lists yet, are findings but not damage).
    fn assert_undamaged(&self, context: &str) {
        let (code, report) = self.verify(&[]);
        assert_eq!(
            code,
            0,
            "{context}: repository damaged:\n{}",
            brief(&report)
        );
    }

    /// The data packs of a fresh copy of the repository on disk.
    fn data_packs(&self) -> Vec<PathBuf> {
        let copy = self.download("copy");
        data_packs(
            &walk(&copy.join("data"))
                .into_iter()
                .filter(|path| path.is_file())
                .collect::<Vec<_>>(),
        )
    }

    /// Puts `bytes` in the bucket in place of the pack `pack` (a file of
    /// [`Self::data_packs`]), behind cairn's back.
    fn replace_pack(&self, pack: &Path, bytes: &[u8]) {
        let id = id_of_file(pack).to_hex();
        self.server
            .put(&format!("{PREFIX}/data/{}/{id}", &id[..2]), bytes);
    }

    /// A copy of the repository's objects on disk, for the local helpers.
    fn download(&self, name: &str) -> PathBuf {
        let copy = self.path(name);
        self.server.download(&format!("{PREFIX}/"), &copy);
        copy
    }

    /// Pack keys in the bucket.
    fn pack_keys(&self) -> Vec<String> {
        self.server
            .list(&format!("{PREFIX}/data/"))
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }
}

/// Files of each sort a backup meets: large noise, small text, an empty
/// file, a symlink, nested directories.
fn make_source(root: &Path, seed: u64) {
    for index in 0..3 {
        write(
            &root.join(format!("big/{index}.bin")),
            &noise(seed * 100 + index, 5 * MIB + 1_234),
        );
    }
    for index in 0..40u64 {
        let text = format!("note {index} of source {seed}\n").repeat(index as usize * 50 + 1);
        write(
            &root.join(format!("notes/{}/n{index}.txt", index % 4)),
            text.as_bytes(),
        );
    }
    write(&root.join("empty"), b"");
    std::os::unix::fs::symlink("notes/0/n0.txt", root.join("link")).unwrap();
}

#[test]
fn a_repository_in_a_bucket_round_trips_and_verifies() {
    let repo = S3Repo::new();
    let init = repo.cairn(["--json", "init"]).ok().json();
    assert_eq!(init["repository"], repo.location().as_str());
    let again = repo.cairn(["init"]).expect(1);
    assert!(
        again.stderr.contains("already holds a cairn repository"),
        "{}",
        again.stderr
    );

    let source = repo.path("src");
    make_source(&source, 1);
    let first = repo.backup_of(&source);
    let listed = repo.cairn(["--json", "snapshots"]).ok().json();
    assert_eq!(
        listed["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    let target = repo.path("restored");
    repo.restore(&first, &target).ok();
    assert_same_tree(&source, &target.join("src"));
    repo.assert_clean("after the first backup");

    // The layout in the bucket is the local one, under the prefix, and every
    // object is named by its hash.
    let copy = repo.download("copy");
    assert!(copy.join("config").is_file());
    for folder in ["keys", "data", "index", "snapshots"] {
        assert!(copy.join(folder).is_dir(), "no {folder}/ in the bucket");
    }
    assert_objects_named_by_their_hash(&copy);

    // A second backup stores only what changed.
    write(&source.join("notes/new.txt"), b"a new note\n");
    let summary = repo.backup(&[source.as_os_str()]);
    assert!(
        summary["reused_chunks"].as_u64().unwrap() > 0
            && summary["new_chunks"].as_u64().unwrap() <= 3,
        "{summary:#}"
    );
    let target = repo.path("restored-latest");
    repo.restore("latest", &target).ok();
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn bad_s3_locations_and_missing_buckets_are_named() {
    let repo = S3Repo::new();
    let workspace = &repo.workspace;
    let mut command = workspace.command();
    repo.server.configure(&mut command);
    let run = run_of(
        command
            .args(["--repo", "s3://no-such-bucket-here/repo", "init"])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        run.stderr.contains("S3 bucket `no-such-bucket-here`")
            && run.stderr.contains("no such bucket"),
        "{}",
        run.stderr
    );

    let mut command = workspace.command();
    repo.server.configure(&mut command);
    command.env_remove("AWS_ACCESS_KEY_ID");
    let run = run_of(
        command
            .args(["--repo", &repo.location(), "snapshots"])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(run.stderr.contains("AWS_ACCESS_KEY_ID"), "{}", run.stderr);

    for (location, expected) in [
        ("s3://x/repo", "bucket name"),
        ("s3://bucket/a//b", "prefix"),
        ("gs://bucket/repo", "unknown scheme"),
    ] {
        let run = repo
            .workspace
            .cairn(["--repo", location, "snapshots"])
            .expect(1);
        assert!(
            run.stderr.contains(location) && run.stderr.contains(expected),
            "{location}: {}",
            run.stderr
        );
    }
    // A prefix with no repository yet is not one.
    let run = repo.cairn(["snapshots"]).expect(1);
    assert!(
        run.stderr.contains("not a cairn repository"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_damaged_pack_in_the_bucket_is_found_and_kept_out_of_a_restore() {
    let repo = S3Repo::new();
    // Plaintext: the test reads pack headers to choose the byte to damage.
    repo.cairn(["init", "--plaintext"]).ok();
    let source = repo.path("src");
    for index in 0..5 {
        write(
            &source.join(format!("f{index}.bin")),
            &noise(500 + index, 200_000),
        );
    }
    let snapshot = repo.backup_of(&source);

    // Damage one byte in the middle of the data pack, behind cairn's back.
    let packs = repo.data_packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack_id = id_of_file(&packs[0]).to_hex();
    let mut bytes = fs::read(&packs[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    repo.replace_pack(&packs[0], &bytes);

    let (code, report) = repo.verify(&["--read-data"]);
    assert_eq!(code, 4, "{}", brief(&report));
    assert!(
        findings(&report).iter().any(|finding| finding["object"]
            .as_str()
            .is_some_and(|object| object.contains(&pack_id))),
        "no finding names pack {pack_id}:\n{}",
        brief(&report)
    );

    let target = repo.path("restored");
    let run = repo.restore(&snapshot, &target).expect(4);
    let mut lost = 0;
    for index in 0..5 {
        let name = format!("f{index}.bin");
        let restored = target.join("src").join(&name);
        if restored.exists() {
            assert_eq!(
                file_hash(&restored),
                file_hash(&source.join(&name)),
                "{name}"
            );
        } else {
            assert!(
                run.stderr.contains(&name),
                "{name} is not named: {}",
                run.stderr
            );
            lost += 1;
        }
    }
    assert_eq!(lost, 1, "one file held the damaged byte: {}", run.stderr);
}

/// `cairn --json restore SNAPSHOT --target TARGET`.
fn restore_json(repo: &S3Repo, snapshot: &str, target: &Path) -> Run {
    repo.cairn([
        OsStr::new("--json"),
        OsStr::new("restore"),
        OsStr::new(snapshot),
        OsStr::new("--target"),
        target.as_os_str(),
    ])
}

#[test]
fn a_restore_of_many_small_files_reads_packs_in_a_few_requests() {
    let repo = S3Repo::new();
    repo.cairn(["init"]).ok();
    let source = repo.path("src");
    let files = 2_000u64;
    for index in 0..files {
        let path = source.join(format!("d{}/f{index}", index % 20));
        if index % 2 == 0 {
            write(
                &path,
                &noise(7_000 + index, 1_000 + (index as usize % 13) * 700),
            );
        } else {
            let text =
                format!("line {index} of a small text file\n").repeat(index as usize % 40 + 1);
            write(&path, text.as_bytes());
        }
    }
    let snapshot = repo.backup_of(&source);

    let target = repo.path("restored");
    let report = restore_json(&repo, &snapshot, &target).ok().json();
    assert_same_tree(&source, &target.join("src"));
    let counts = format!(
        "files_written {}, chunks_fetched {}, bytes_fetched {}, requests {}",
        report["files_written"],
        report["chunks_fetched"],
        report["bytes_fetched"],
        report["requests"]
    );
    assert_eq!(report["files_written"], files, "{counts}");
    let requests = report["requests"].as_u64().expect("requests in the JSON");
    // Four batches of at most 512 files, each a span or two per pack; one
    // request per file would be 2,000.
    assert!(
        (1..=40).contains(&requests),
        "{requests} requests for {files} files: {counts}"
    );
    assert!(
        report["chunks_fetched"].as_u64().unwrap() >= files,
        "{counts}"
    );
}

#[test]
fn a_restore_of_deltas_reads_their_bases_in_spans_not_one_request_each() {
    let repo = S3Repo::new();
    // Plaintext: the test reads pack headers to find a base to damage.
    repo.cairn(["init", "--plaintext"]).ok();
    let source = repo.path("src");
    let file = source.join("data_level0.bin");
    let mut content = vector_index(5);
    write(&file, &content);
    repo.backup_of(&source);
    // Two nights rewrite the file in place: the last night's deltas have
    // the night before's deltas for bases, each a blob of its own, which a
    // reader fetching base by base reads with a request each.
    let mut deltas = 0;
    for night in [2, 3] {
        rewrite_in_place(&mut content, night, 90);
        write(&file, &content);
        deltas = repo.backup(&[source.as_os_str()])["delta_chunks"]
            .as_u64()
            .expect("delta_chunks in the JSON");
    }
    assert!(deltas > 150, "{deltas} chunks stored as deltas");

    let target = repo.path("restored");
    let report = restore_json(&repo, "latest", &target).ok().json();
    assert_eq!(
        file_hash(&target.join("src/data_level0.bin")),
        file_hash(&file),
        "restored through its bases"
    );
    let requests = report["requests"].as_u64().expect("requests in the JSON");
    // The file's chunks, their bases and their bases' bases, each a span
    // or two (measured: 3); base by base it took 229.
    assert!(
        (1..=20).contains(&requests),
        "{requests} requests to restore a file of {deltas} deltas: chunks_fetched {}, bytes_fetched {}",
        report["chunks_fetched"],
        report["bytes_fetched"]
    );
    repo.assert_clean("bases read ahead by verify");

    // Bases read ahead are taken unchecked, as a decoder takes any base:
    // damage one that is itself a delta (night 2's, which a delta of night
    // 3 needs) behind cairn's back, and both verify and the restore report
    // damage; nothing wrong is written.
    let packs = repo.data_packs();
    let bases: HashMap<Id, Id> = packs
        .iter()
        .flat_map(|pack| header_of(pack).blobs)
        .filter_map(|entry| Some((entry.id, entry.base?)))
        .collect();
    let victim = *bases
        .values()
        .find(|base| bases.contains_key(*base))
        .expect("a base that is a delta itself");
    let mut damaged = false;
    for pack in &packs {
        let Some(entry) = header_of(pack).blobs.into_iter().find(|e| e.id == victim) else {
            continue;
        };
        let mut bytes = fs::read(pack).unwrap();
        let start = entry.offset as usize;
        for at in (start..start + entry.length as usize).step_by(16) {
            bytes[at] ^= 0x40;
        }
        repo.replace_pack(pack, &bytes);
        damaged = true;
    }
    assert!(damaged, "the base's pack was found");
    let (code, report) = repo.verify(&["--read-data"]);
    assert_eq!(code, 4, "{}", brief(&report));
    let again = repo.path("again");
    let run = restore_json(&repo, "latest", &again);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        !again.join("src/data_level0.bin").exists(),
        "a file that does not match its hash is never put in place: {}",
        run.stderr
    );
}

/// `cairn backup SOURCE` to the bucket in the background, output discarded.
fn spawn_backup(repo: &S3Repo, source: &Path) -> Child {
    repo.command()
        .arg("backup")
        .arg(source)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn backup")
}

#[test]
fn backups_to_a_bucket_killed_mid_way_leave_a_repository_that_verifies_and_restores() {
    let repo = S3Repo::new();
    repo.cairn(["init"]).ok();
    let source = repo.path("src");
    let big = |round: u64, index: u64| noise(round * 1_000 + index, 6 * MIB);
    for index in 0..8 {
        write(&source.join(format!("big/{index}.bin")), &big(0, index));
    }
    let started = Instant::now();
    repo.backup_of(&source);
    let full = started.elapsed();

    let mut killed = 0;
    for (round, fraction) in [0.5, 0.2, 0.6].into_iter().enumerate() {
        let round = round as u64 + 1;
        // Every file changes, so each backup takes about as long as the
        // first and the kill lands while it runs.
        for file in 0..8 {
            write(&source.join(format!("big/{file}.bin")), &big(round, file));
        }
        let mut child = spawn_backup(&repo, &source);
        std::thread::sleep(full.mul_f64(fraction).max(Duration::from_millis(50)));
        if kill(&mut child) {
            killed += 1;
        }
        repo.assert_undamaged(&format!("after the backup killed at {fraction}"));
    }
    assert!(
        killed >= 2,
        "only {killed} of 3 backups were still running when killed"
    );

    // Nothing half-written under a real name; the next backup completes and
    // restores.
    assert_objects_named_by_their_hash(&repo.download("copy"));
    let snapshot = repo.backup_of(&source);
    repo.assert_clean("after the backup that followed");
    let target = repo.path("restored");
    repo.restore(&snapshot, &target).ok();
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn two_concurrent_backups_into_one_bucket_both_verify_and_restore() {
    let repo = S3Repo::new();
    repo.cairn(["init"]).ok();
    let shared = noise(99, 4 * MIB);
    let sources: Vec<PathBuf> = (0..2)
        .map(|index| {
            let source = repo.path(&format!("source{index}"));
            write(&source.join("shared.bin"), &shared);
            make_source(&source, index + 10);
            source
        })
        .collect();
    let children: Vec<Child> = sources
        .iter()
        .enumerate()
        .map(|(index, source)| {
            repo.command()
                .args(["--json", "backup", "--component"])
                .arg(format!("part{index}={}", source.display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start backup")
        })
        .collect();
    let snapshots: Vec<String> = children
        .into_iter()
        .map(|child| {
            let run = run_of(child.wait_with_output().expect("backup finishes")).ok();
            run.json()["snapshot"].as_str().unwrap().to_string()
        })
        .collect();

    repo.assert_clean("after two concurrent backups");
    for (index, snapshot) in snapshots.iter().enumerate() {
        let target = repo.path(&format!("restored{index}"));
        repo.restore(snapshot, &target).ok();
        assert_same_tree(&sources[index], &target.join(format!("part{index}")));
    }
}

#[test]
fn forget_and_prune_in_a_bucket_mark_first_then_delete() {
    let repo = S3Repo::new();
    repo.cairn(["init"]).ok();
    let source = repo.path("src");
    write(&source.join("keep.bin"), &noise(1, MIB));
    for index in 0..3 {
        write(
            &source.join(format!("scratch/{index}.bin")),
            &noise(10 + index, 2 * MIB),
        );
    }
    repo.backup_of(&source);
    fs::remove_dir_all(source.join("scratch")).unwrap();
    let kept = repo.backup_of(&source);
    repo.cairn(["forget", "--keep-last", "1"]).ok();
    let packs_before = repo.pack_keys();

    // Phase one writes a mark (and may repack what is kept) but deletes
    // nothing.
    let run = repo.cairn(["--json", "prune", "--grace", "0s"]).ok().json();
    assert!(run["mark_written"].is_string(), "{run:#}");
    assert_eq!(run["packs_deleted"], 0);
    let packs_marked = repo.pack_keys();
    for pack in &packs_before {
        assert!(packs_marked.contains(pack), "phase one deleted {pack}");
    }
    repo.assert_clean("after phase one");

    // Phase two deletes the marked packs, and the mark.
    let run = repo.cairn(["--json", "prune", "--grace", "0s"]).ok().json();
    let deleted = run["packs_deleted"].as_u64().unwrap();
    assert!(deleted >= 1, "{run:#}");
    assert_eq!(run["marks_removed"], 1);
    assert_eq!(
        repo.pack_keys().len(),
        packs_marked.len() - deleted as usize
    );
    assert!(repo.server.list(&format!("{PREFIX}/deletions/")).is_empty());
    repo.assert_clean("after phase two");
    let target = repo.path("restored");
    repo.restore(&kept, &target).ok();
    assert_same_tree(&source, &target.join("src"));
}

/// `cairn --repo LOCATION… ARGS` with the server's endpoint and credentials,
/// for tests that mix local repositories with the bucket.
fn cairn_with(repo: &S3Repo, locations: &[&str], args: &[&str]) -> Run {
    let mut command = repo.workspace.command();
    repo.server.configure(&mut command);
    for location in locations {
        command.arg("--repo").arg(location);
    }
    run_of(command.args(args).output().expect("run cairn"))
}

#[test]
fn copies_go_local_to_bucket_to_local_and_a_bucket_backs_up_a_local_repository() {
    let repo = S3Repo::new();
    let bucket = repo.location();
    let near = repo.path("near").display().to_string();
    let back = repo.path("back").display().to_string();
    let source = repo.path("src");
    make_source(&source, 5);
    // Plaintext: copies and multi-repository backups between encrypted
    // repositories with their own keys are not supported yet.
    cairn_with(&repo, &[&near], &["init", "--plaintext"]).ok();
    cairn_with(&repo, &[&bucket], &["init", "--plaintext", "--like", &near]).ok();
    cairn_with(&repo, &[&back], &["init", "--plaintext", "--like", &near]).ok();
    let first = cairn_with(
        &repo,
        &[&near],
        &["--json", "backup", source.to_str().unwrap()],
    )
    .ok()
    .json();
    let snapshot = first["snapshot"].as_str().unwrap().to_string();

    // Local → bucket → local: the signed body travels unchanged, sealed
    // again for each repository it reaches (so it has an id of its own
    // there), every chunk checked on the way, and the far end restores
    // byte for byte.
    let up = cairn_with(
        &repo,
        &[],
        &["--json", "copy", "--from", &near, "--to", &bucket],
    )
    .ok()
    .json();
    assert_eq!(up["snapshots_copied"], 1, "{up}");
    let down = cairn_with(
        &repo,
        &[],
        &["--json", "copy", "--from", &bucket, "--to", &back],
    )
    .ok()
    .json();
    assert_eq!(down["snapshots_copied"], 1, "{down}");
    let in_bucket = up["snapshots"][0]["target_id"].as_str().unwrap();
    assert_eq!(up["snapshots"][0]["id"], snapshot.as_str(), "{up}");
    assert_eq!(down["snapshots"][0]["id"], in_bucket, "{down}");
    let in_back = down["snapshots"][0]["target_id"].as_str().unwrap();
    let target = repo.path("from-back");
    cairn_with(
        &repo,
        &[&back],
        &["restore", in_back, "--target", target.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&source, &target.join("src"));
    let verify = cairn_with(&repo, &[&back], &["--json", "verify", "--read-data"]);
    assert_eq!(verify.code, 0, "{}", brief(&verify.json()));

    // One pass into the local repository and the bucket; then the local
    // copy of a pack is damaged and the bucket serves what it lost.
    write(&source.join("notes/late.txt"), &noise(9, 3 * MIB));
    let both = cairn_with(
        &repo,
        &[&near, &bucket],
        &["--json", "backup", source.to_str().unwrap()],
    )
    .ok()
    .json();
    let results = both["repositories"].as_array().unwrap();
    assert!(results.iter().all(|result| result["ok"] == true), "{both}");
    let second = results[0]["snapshot"].as_str().unwrap().to_string();
    let newest = walk(&repo.path("near/data"))
        .into_iter()
        .filter(|path| path.is_file())
        .max_by_key(|path| fs::metadata(path).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&newest, bytes).unwrap();
    let target = repo.path("with-fallback");
    let restored = cairn_with(
        &repo,
        &[&near, &bucket],
        &[
            "--json",
            "restore",
            &second,
            "--target",
            target.to_str().unwrap(),
        ],
    )
    .ok()
    .json();
    assert_same_tree(&source, &target.join("src"));
    assert_eq!(restored["fallbacks"][0]["repository"], bucket.as_str());
    assert!(
        restored["fallbacks"][0]["blobs"].as_u64().unwrap() >= 1,
        "{restored}"
    );
}
