//! Backups that die mid-run (SIGKILL: no destructors, no flushing) must
//! leave a repository that verifies clean, whose leftovers the next backup
//! picks up, and that never holds a half-written object under a real name.

mod common;
use common::*;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

const MIB: usize = 1024 * 1024;

/// `cairn --repo REPO backup ARGS...` running in the background, output discarded.
fn spawn_backup(workspace: &Workspace, args: &[&Path]) -> Child {
    workspace
        .command()
        .arg("--repo")
        .arg(workspace.repo())
        .arg("backup")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn backup")
}

fn count(report: &Value, kind: &str) -> usize {
    findings(report)
        .iter()
        .filter(|finding| finding["kind"] == kind)
        .count()
}

/// When to kill a backup.
#[derive(Debug)]
enum Moment {
    /// After this fraction of the time a full backup took.
    After(f64),
    /// As soon as a pack appears that was not there before.
    FirstNewPack,
}

/// Returns once a pack not in `before` exists, or `child` has exited (or a
/// minute has passed).
fn wait_for_new_pack(workspace: &Workspace, before: &[PathBuf], child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && child.try_wait().expect("poll child").is_none() {
        if workspace.packs().iter().any(|pack| !before.contains(pack)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A home directory's worth of files: eight 6 MiB noise files (big/) and
/// 300 small ones, a third of them compressible text, over seven directories.
fn make_source(root: &Path) {
    for index in 0..8 {
        write(
            &root.join(format!("big/{index}.bin")),
            &noise(1_000 + index, 6 * MIB),
        );
    }
    for index in 0..300u64 {
        let path = root.join(format!("d{}/file-{index:03}", index % 7));
        let size = (index as usize * 7_919) % 60_000;
        if index % 3 == 0 {
            let line = format!("line of text number {index}, repeated to fill the file\n");
            write(
                &path,
                &line.repeat(size / line.len() + 1).into_bytes()[..size],
            );
        } else {
            write(&path, &noise(index, size));
        }
    }
}

#[test]
fn backups_killed_at_a_dozen_moments_leave_a_repository_that_verifies_and_restores() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    make_source(&source);
    assert!(tree_size(&source) > 50 * MIB as u64);

    // A first, complete backup, which also says how long one takes here.
    let started = Instant::now();
    workspace.backup_json([&source]);
    let full = started.elapsed();

    // Most kills at fractions of a full backup's time, out of order so early
    // and late kills alternate as leftovers accumulate; some right after a
    // pack lands, before any index file lists it.
    use Moment::{After, FirstNewPack};
    const MOMENTS: [Moment; 12] = [
        After(0.02),
        After(0.5),
        FirstNewPack,
        After(0.1),
        After(0.8),
        After(0.005),
        After(0.3),
        FirstNewPack,
        After(0.65),
        After(0.15),
        After(0.95),
        FirstNewPack,
    ];
    let mut killed = 0;
    let mut orphaned = 0;
    for (attempt, moment) in MOMENTS.iter().enumerate() {
        // The user keeps working: half the big files change between attempts,
        // so every attempt has packs to write.
        for k in 0..4 {
            let file = (attempt * 4 + k) % 8;
            write(
                &source.join(format!("big/{file}.bin")),
                &noise(5_000 + (attempt * 4 + k) as u64, 6 * MIB),
            );
        }
        let before = workspace.packs();
        let started = Instant::now();
        let mut child = spawn_backup(&workspace, &[&source]);
        match moment {
            After(fraction) => {
                std::thread::sleep(full.mul_f64(*fraction).max(Duration::from_millis(2)))
            }
            FirstNewPack => wait_for_new_pack(&workspace, &before, &mut child),
        }
        let was_killed = kill(&mut child);
        let lived = started.elapsed();
        killed += usize::from(was_killed);

        let (code, report) = workspace.verify_json(&[]);
        assert_eq!(
            code,
            0,
            "attempt {attempt} ({moment:?}, killed={was_killed} after {lived:?}): repository damaged:\n{}",
            brief(&report)
        );
        let unreferenced = count(&report, "unreferenced-pack");
        eprintln!(
            "attempt {attempt} ({moment:?}): killed={was_killed} after {lived:?}; {unreferenced} unreferenced packs"
        );
        orphaned += unreferenced;
        assert_objects_named_by_their_hash(&workspace.repo());
    }
    assert!(
        killed >= MOMENTS.len() / 2,
        "only {killed} of {} backups were still running when killed (a full one took {full:?})",
        MOMENTS.len()
    );
    assert!(
        orphaned > 0,
        "no kill landed between a pack upload and its index file"
    );

    let (_, report) = workspace.verify_json(&[]);
    let orphans_before = count(&report, "unreferenced-pack");
    let summary = workspace.backup_json([&source]);
    assert!(
        summary["reused_chunks"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert!(
        orphans_before > 0,
        "the last backup was killed right after a pack landed"
    );

    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "after the final backup:\n{}", brief(&report));
    assert_eq!(report["clean"], true);
    assert_eq!(
        count(&report, "unreferenced-pack"),
        0,
        "every leftover pack is indexed now:\n{}",
        brief(&report)
    );
    assert_eq!(summary["adopted_packs"], orphans_before, "{summary:#}");
    assert_objects_named_by_their_hash(&workspace.repo());

    let target = workspace.path("out");
    workspace.restore("latest", &target).ok();
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn packs_adopted_by_a_backup_that_is_then_killed_are_indexed_by_the_next_backup() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    for index in 0..3 {
        write(
            &source.join(format!("{index}.bin")),
            &noise(300 + index, 16 * MIB),
        );
    }

    // 1. A backup dies right after uploading its first pack: an orphan.
    let mut child = spawn_backup(&workspace, &[&source]);
    wait_for_new_pack(&workspace, &[], &mut child);
    assert!(
        kill(&mut child),
        "the first backup finished before its first pack could be orphaned"
    );
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 0, "{}", brief(&report));
    assert!(
        count(&report, "unreferenced-pack") >= 1,
        "{}",
        brief(&report)
    );

    // 2. The next backup adopts the orphan (into its local index cache) and
    //    is killed long after, while reading a huge sparse file.
    let slow = workspace.path("slow");
    fs::create_dir_all(&slow).unwrap();
    fs::File::create(slow.join("disk.img"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let mut child = spawn_backup(&workspace, &[&slow]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        kill(&mut child),
        "the sparse-file backup finished within 1.5 s; make the file larger"
    );

    // 3. A complete backup of the original data.
    let summary = workspace.backup_json([&source]);
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(
        code,
        0,
        "a complete backup made a damaged snapshot:\n{}\nbackup: {summary}",
        brief(&report)
    );
    assert_eq!(count(&report, "unreferenced-pack"), 0, "{}", brief(&report));

    // Without the local cache, only the repository's index files count.
    let target = workspace.path("out");
    workspace
        .cairn_repo([
            "--no-cache".as_ref(),
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ])
        .ok();
    assert_same_tree(&source, &target.join("src"));
}

#[test]
fn old_temporary_files_left_by_a_crashed_writer_are_removed_by_a_later_backup() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    write(&source.join("a.txt"), b"first");
    workspace.backup_json([&source]);

    // What a writer killed two days ago left in tmp/, and one still writing.
    let tmp = workspace.repo().join("tmp");
    let old = tmp.join(format!("{}.{}", "ab".repeat(32), "0123456789abcdef"));
    let young = tmp.join(format!("{}.{}", "cd".repeat(32), "fedcba9876543210"));
    write(&old, &noise(1, 10_000));
    write(&young, &noise(2, 10_000));
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    filetime::set_file_mtime(&old, filetime::FileTime::from_system_time(two_days_ago)).unwrap();

    write(&source.join("b.txt"), b"second");
    workspace.backup_json([&source]);
    assert!(
        young.exists(),
        "a young temporary file may belong to a running writer"
    );
    assert!(
        !old.exists(),
        "a temporary file two days old is a crashed writer's and should be removed"
    );
}
