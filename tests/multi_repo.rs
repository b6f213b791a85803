//! One backup pass into several repositories (`--repo` repeated): each gets
//! its own complete, signed snapshot; one failing mid-way leaves the others
//! to finish, and the exit code and report say which; restore falls back
//! to the next repository for a chunk the first cannot give intact.

mod common;
use common::*;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Exit code of a backup stored in some repositories but not all.
const SOME_REPOSITORIES_FAILED: i32 = 8;

fn repos(workspace: &Workspace, names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|name| workspace.path(name)).collect()
}

/// `cairn --repo A --repo B … ARGS`
fn cairn_repos(workspace: &Workspace, repos: &[PathBuf], args: &[&str]) -> Run {
    let mut all: Vec<OsString> = Vec::new();
    for repo in repos {
        all.push("--repo".into());
        all.push(repo.into());
    }
    all.extend(args.iter().map(OsString::from));
    workspace.cairn(all)
}

fn init_all(workspace: &Workspace, repos: &[PathBuf]) {
    for repo in repos {
        cairn_repos(
            workspace,
            std::slice::from_ref(repo),
            &["init", "--plaintext"],
        )
        .ok();
    }
}

fn source_tree(workspace: &Workspace, files: usize, size: usize) -> PathBuf {
    let source = workspace.path("src");
    for index in 0..files {
        write(
            &source.join(format!("part-{index}.bin")),
            &noise(index as u64, size),
        );
    }
    write(&source.join("notes/readme.md"), b"# nightly state\n");
    source
}

/// `cairn --repo … --json backup --component data=SOURCE`; returns the
/// snapshot's id in the first repository.
fn backup_data(workspace: &Workspace, repos: &[PathBuf], source: &Path) -> String {
    let component = format!("data={}", source.display());
    let report = cairn_repos(
        workspace,
        repos,
        &["--json", "backup", "--component", &component],
    )
    .ok()
    .json();
    report["repositories"][0]["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// Flips a byte in the middle of the middle blob of `pack`; returns it.
fn damage_middle_blob(pack: &Path) -> cairn_store::format::pack::BlobEntry {
    let header = header_of(pack);
    let blob = header.blobs[header.blobs.len() / 2];
    let mut bytes = fs::read(pack).unwrap();
    let at = (blob.offset + u64::from(blob.length) / 2) as usize;
    bytes[at] ^= 0x55;
    fs::write(pack, bytes).unwrap();
    blob
}

/// Whether one of a restore report's main failures names `blob`.
fn names_blob(report: &serde_json::Value, blob: &cairn_store::format::pack::BlobEntry) -> bool {
    report["main_failure_examples"]
        .as_array()
        .expect("examples")
        .iter()
        .any(|why| {
            why.as_str()
                .is_some_and(|why| why.contains(&blob.id.to_hex()))
        })
}

fn packs_in(repo: &Path) -> Vec<PathBuf> {
    walk(&repo.join("data"))
        .into_iter()
        .filter(|path| path.is_file())
        .collect()
}

fn snapshot_count(workspace: &Workspace, repo: &Path) -> usize {
    let listed = cairn_repos(workspace, &[repo.to_path_buf()], &["--json", "snapshots"])
        .ok()
        .json();
    listed["snapshots"].as_array().unwrap().len()
}

#[test]
fn one_pass_writes_a_complete_signed_snapshot_into_each_repository() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "far"]);
    init_all(&workspace, &both);
    let source = source_tree(&workspace, 6, 300_000);
    let component = format!("data={}", source.display());
    let report = cairn_repos(
        &workspace,
        &both,
        &["--json", "backup", "--component", &component],
    )
    .ok()
    .json();
    let results = report["repositories"]
        .as_array()
        .expect("one result per repository");
    assert_eq!(results.len(), 2, "{report}");
    for (result, repo) in results.iter().zip(&both) {
        assert_eq!(result["ok"], true, "{report}");
        assert_eq!(result["repository"], repo.display().to_string());
        let snapshot = result["snapshot"].as_str().unwrap();
        let target = workspace.path(&format!("out-{}", snapshot));
        cairn_repos(
            &workspace,
            std::slice::from_ref(repo),
            &["restore", snapshot, "--target", target.to_str().unwrap()],
        )
        .ok();
        assert_same_tree(&source, &target.join("data"));
        let (code, verify) = {
            let run = cairn_repos(
                &workspace,
                std::slice::from_ref(repo),
                &["--json", "verify", "--read-data"],
            );
            (run.code, run.json())
        };
        assert_eq!(code, 0, "{}", brief(&verify));
        assert_objects_named_by_their_hash(repo);
    }
    // The same chunks went to both, each stored once per repository.
    assert_eq!(
        results[0]["new_chunks"], results[1]["new_chunks"],
        "{report}"
    );

    // The next night each repository's snapshot has its own parent and
    // stores only what changed.
    write(
        &source.join("notes/readme.md"),
        b"# nightly state, night two\n",
    );
    let second = cairn_repos(
        &workspace,
        &both,
        &["--json", "backup", "--component", &component],
    )
    .ok()
    .json();
    for (first, next) in results
        .iter()
        .zip(second["repositories"].as_array().unwrap())
    {
        assert_eq!(next["parent"], first["snapshot"], "{second}");
        assert!(next["stored_bytes"].as_u64().unwrap() < 10_000, "{second}");
    }
}

#[test]
fn a_repository_that_fails_mid_way_leaves_the_others_to_finish() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "far"]);
    init_all(&workspace, &both);
    // Enough incompressible data for many packs, so the failure lands while
    // the backup is still writing.
    let source = source_tree(&workspace, 12, 16 << 20);
    let component = format!("data={}", source.display());
    let mut args: Vec<OsString> = Vec::new();
    for repo in &both {
        args.extend(["--repo".into(), repo.into()]);
    }
    args.extend(["--json", "backup", "--component", &component].map(OsString::from));
    let child = workspace
        .command()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the far repository holds its first pack, its staging directory
    // turns into a file: every later write there fails, as on a disk that
    // went read-only.
    let far = &both[1];
    let deadline = Instant::now() + Duration::from_secs(120);
    while packs_in(far).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no pack reached {}",
            far.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    fs::remove_dir_all(far.join("tmp")).unwrap();
    fs::write(far.join("tmp"), b"not a directory").unwrap();
    let run = run_of(child.wait_with_output().unwrap());
    assert_eq!(
        run.code, SOME_REPOSITORIES_FAILED,
        "{}\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let results = report["repositories"].as_array().unwrap();
    assert_eq!(results[0]["ok"], true, "{report}");
    assert_eq!(results[1]["ok"], false, "{report}");
    let why = results[1]["error"].as_str().unwrap();
    assert!(why.contains("tmp"), "the error names what failed: {why}");
    assert!(
        run.stderr.contains(&far.display().to_string()),
        "stderr names the failed repository: {}",
        run.stderr
    );

    // The near repository holds a complete snapshot; the far one none, and
    // nothing that verify calls damage.
    assert_eq!(snapshot_count(&workspace, &both[0]), 1);
    assert_eq!(snapshot_count(&workspace, far), 0);
    let target = workspace.path("restored");
    let snapshot = results[0]["snapshot"].as_str().unwrap();
    cairn_repos(
        &workspace,
        &both[..1],
        &["restore", snapshot, "--target", target.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&source, &target.join("data"));
    for repo in &both {
        let run = cairn_repos(
            &workspace,
            std::slice::from_ref(repo),
            &["--json", "verify"],
        );
        assert_eq!(run.code, 0, "{}: {}", repo.display(), brief(&run.json()));
    }

    // Repaired, the next pass completes both, reusing what the far one got.
    fs::remove_file(far.join("tmp")).unwrap();
    let again = cairn_repos(
        &workspace,
        &both,
        &["--json", "backup", "--component", &component],
    )
    .ok()
    .json();
    let far_result = &again["repositories"][1];
    assert_eq!(far_result["ok"], true, "{again}");
    assert!(
        far_result["adopted_packs"].as_u64().unwrap() >= 1,
        "{again}"
    );
    let far_snapshot = far_result["snapshot"].as_str().unwrap();
    let far_target = workspace.path("far-restored");
    cairn_repos(
        &workspace,
        &both[1..],
        &[
            "restore",
            far_snapshot,
            "--target",
            far_target.to_str().unwrap(),
        ],
    )
    .ok();
    assert_same_tree(&source, &far_target.join("data"));
}

#[test]
fn restore_fetches_a_chunk_from_the_next_repository_when_the_first_is_damaged() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "far"]);
    init_all(&workspace, &both);
    let source = source_tree(&workspace, 4, 400_000);
    let snapshot = backup_data(&workspace, &both, &source);

    // Damage the near repository's data pack in the middle of its blobs.
    let pack = data_packs(&packs_in(&both[0]))
        .into_iter()
        .next()
        .expect("a data pack");
    let blob = damage_middle_blob(&pack);

    // Verify given both audits each and finds every damaged chunk intact
    // in the other.
    let run = cairn_repos(&workspace, &both, &["--json", "verify", "--read-data"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let audit = run.json();
    let near = &audit["repositories"][0];
    assert_eq!(near["report"]["clean"], false, "{audit}");
    assert!(near["unreadable_blobs"].as_u64().unwrap() >= 1, "{audit}");
    assert_eq!(
        near["intact_elsewhere"], near["unreadable_blobs"],
        "{audit}"
    );
    assert_eq!(audit["repositories"][1]["report"]["clean"], true, "{audit}");
    assert_eq!(audit["restorable_from_all"], true, "{audit}");

    // Alone, the near repository cannot restore everything.
    let alone = workspace.path("alone");
    let run = cairn_repos(
        &workspace,
        &both[..1],
        &["restore", &snapshot, "--target", alone.to_str().unwrap()],
    );
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);

    // With the far one behind it, everything is restored, checked, and the
    // report says who served what.
    let target = workspace.path("out");
    let restored = cairn_repos(
        &workspace,
        &both,
        &[
            "--json",
            "restore",
            &snapshot,
            "--target",
            target.to_str().unwrap(),
        ],
    )
    .ok()
    .json();
    assert_same_tree(&source, &target.join("data"));
    let fallbacks = restored["fallbacks"].as_array().expect("fallbacks listed");
    assert_eq!(fallbacks.len(), 1, "{restored}");
    assert_eq!(fallbacks[0]["repository"], both[1].display().to_string());
    assert!(fallbacks[0]["blobs"].as_u64().unwrap() >= 1, "{restored}");
    assert!(
        restored["main_failures"].as_u64().unwrap() >= 1,
        "{restored}"
    );
    let why = restored["main_failure_examples"][0].as_str().unwrap();
    assert!(
        why.contains(&blob.id.to_hex()),
        "names the damaged chunk: {why}"
    );
}

#[test]
fn repositories_that_chunk_differently_are_refused_before_anything_is_read() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "odd"]);
    cairn_repos(&workspace, &both[..1], &["init", "--plaintext"]).ok();
    cairn_repos(
        &workspace,
        &both[1..],
        &["init", "--plaintext", "--chunk-avg", "32768"],
    )
    .ok();
    let source = source_tree(&workspace, 1, 1000);
    let component = format!("data={}", source.display());
    let run = cairn_repos(&workspace, &both, &["backup", "--component", &component]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("chunk differently") && run.stderr.contains("--like"),
        "{}",
        run.stderr
    );
    assert!(packs_in(&both[0]).is_empty() && packs_in(&both[1]).is_empty());
}

#[test]
fn commands_that_take_one_repository_say_so() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "far"]);
    init_all(&workspace, &both);
    let run = cairn_repos(&workspace, &both, &["snapshots"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("one repository"), "{}", run.stderr);
}

/// A large file's chunks are read a window at a time and checked through
/// the file's whole hash rather than one by one; a damaged one must still
/// be found, named, and fetched from the next repository.
#[test]
fn a_damaged_chunk_of_a_large_file_is_named_and_fetched_from_the_next_repository() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "far"]);
    init_all(&workspace, &both);
    let source = source_tree(&workspace, 1, 10 << 20);
    let snapshot = backup_data(&workspace, &both, &source);

    // Noise is stored as it is: a flipped byte still decodes, to the
    // right length, and only a hash can tell.
    let pack = data_packs(&packs_in(&both[0]))
        .into_iter()
        .max_by_key(|pack| fs::metadata(pack).map(|meta| meta.len()).unwrap_or(0))
        .expect("a data pack");
    let blob = damage_middle_blob(&pack);
    assert!(
        blob.raw_length > 1024,
        "a chunk of the large file: {blob:?}"
    );

    let restore_from = |repos: &[PathBuf], target: &Path| {
        cairn_repos(
            &workspace,
            repos,
            &[
                "--json",
                "restore",
                &snapshot,
                "--target",
                target.to_str().unwrap(),
            ],
        )
    };
    let alone = workspace.path("alone");
    let run = restore_from(&both[..1], &alone);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(
        !alone.join("data/part-0.bin").exists(),
        "bad bytes kept out"
    );
    let failed = run.json();
    assert!(
        names_blob(&failed, &blob),
        "names the damaged chunk: {failed:#}"
    );

    let target = workspace.path("out");
    let restored = restore_from(&both, &target).ok().json();
    assert_same_tree(&source, &target.join("data"));
    assert!(
        restored["fallbacks"][0]["blobs"].as_u64().unwrap() >= 1,
        "{restored:#}"
    );
    assert!(
        names_blob(&restored, &blob),
        "names the damaged chunk: {restored:#}"
    );
}

/// Encrypted repositories share a pass when the second was made `--like`
/// the first: the same id key names blobs alike, each keeps its own read
/// key, and each restores on its own. One made without `--like` is refused
/// by name before anything is read.
#[test]
fn encrypted_repositories_made_alike_share_one_pass_and_others_are_refused() {
    let workspace = Workspace::new();
    let both = repos(&workspace, &["near", "far"]);
    cairn_repos(&workspace, &both[..1], &["init"]).ok();
    let like = both[0].display().to_string();
    cairn_repos(&workspace, &both[1..], &["init", "--like", &like]).ok();
    let source = source_tree(&workspace, 3, 200_000);
    let component = format!("data={}", source.display());
    let report = cairn_repos(
        &workspace,
        &both,
        &["--json", "backup", "--component", &component],
    )
    .ok()
    .json();
    for (result, repo) in report["repositories"].as_array().unwrap().iter().zip(&both) {
        assert_eq!(result["ok"], true, "{report}");
        let snapshot = result["snapshot"].as_str().unwrap();
        let target = workspace.path(&format!("out-{snapshot}"));
        cairn_repos(
            &workspace,
            std::slice::from_ref(repo),
            &["restore", snapshot, "--target", target.to_str().unwrap()],
        )
        .ok();
        assert_eq!(
            std::fs::read(target.join("data/part-1.bin")).unwrap(),
            std::fs::read(source.join("part-1.bin")).unwrap()
        );
    }
    let stranger = repos(&workspace, &["stranger"]);
    cairn_repos(&workspace, &stranger, &["init"]).ok();
    let mixed = [both[0].clone(), stranger[0].clone()];
    let refused = cairn_repos(&workspace, &mixed, &["backup", "--component", &component]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("init --like") && refused.stderr.contains("stranger"),
        "{}",
        refused.stderr
    );
}
