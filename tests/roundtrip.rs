//! What goes in comes back out: every kind of entry, name and metadata a
//! user's tree can hold, many small files, and a huge sparse file.

mod common;
use common::*;

use filetime::FileTime;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn set_mtime(path: &Path, seconds: i64, nanos: u32) {
    filetime::set_file_mtime(path, FileTime::from_unix_time(seconds, nanos)).expect("set mtime");
}

/// Every directory below `root`, deepest first, so that setting a
/// directory's mtime is never undone by touching one of its children.
fn directories_deepest_first(root: &Path) -> Vec<PathBuf> {
    let mut directories: Vec<PathBuf> = walk(root)
        .into_iter()
        .filter(|path| fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()))
        .collect();
    directories.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    directories
}

/// A tree with one of everything: empty files and directories, nesting,
/// symlinks of every sort, unicode and non-UTF-8 names, odd modes and
/// mtimes with nanoseconds.
fn build_awkward_tree(root: &Path) {
    write(&root.join("empty-file"), b"");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("a/b/c/d/e/empty-leaf")).unwrap();
    write(&root.join("a/b/c/d/e/deep.txt"), b"five levels down\n");
    write(&root.join("a/b/mid.bin"), &noise(7, 70_000));
    write(&root.join("a/readme.md"), b"# notes\n\nplain text\n");
    write(
        &root.join("café/naïve ☃.md"),
        "unicode ✓ contents\n".as_bytes(),
    );
    write(&root.join("日本語/ファイル.txt"), &noise(8, 1234));
    let odd_name = root.join(OsStr::from_bytes(b"bad-\xff-name"));
    write(&odd_name, b"a name that is not UTF-8");
    fs::create_dir_all(root.join(OsStr::from_bytes(b"dir-\xfe\xfd"))).unwrap();
    write(
        &root.join(OsStr::from_bytes(b"dir-\xfe\xfd/inner")),
        b"inner",
    );
    write(&root.join("with space and 'quotes'.txt"), b"q");
    write(&root.join("big.bin"), &noise(9, 1_500_000));

    // Symlinks: relative, absolute, dangling, to a directory, with a
    // non-UTF-8 target.
    symlink("a/readme.md", root.join("link-relative")).unwrap();
    symlink("/etc/hostname", root.join("link-absolute")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink("../..", root.join("a/b/link-up")).unwrap();
    symlink(
        OsStr::from_bytes(b"target-\xff"),
        root.join("link-odd-target"),
    )
    .unwrap();

    // Modes.
    write(&root.join("modes/private"), b"0600");
    set_mode(&root.join("modes/private"), 0o600);
    write(&root.join("modes/script.sh"), b"#!/bin/sh\necho hi\n");
    set_mode(&root.join("modes/script.sh"), 0o755);
    write(&root.join("modes/read-only"), b"0444");
    set_mode(&root.join("modes/read-only"), 0o444);
    fs::create_dir_all(root.join("modes/secret-dir")).unwrap();
    write(&root.join("modes/secret-dir/inside"), b"hidden");
    set_mode(&root.join("modes/secret-dir"), 0o700);

    // Special bits.
    write(&root.join("modes/setuid-tool"), b"#!/bin/sh\n");
    set_mode(&root.join("modes/setuid-tool"), 0o4755);
    fs::create_dir_all(root.join("modes/shared-tmp")).unwrap();
    set_mode(&root.join("modes/shared-tmp"), 0o1777);
    fs::create_dir_all(root.join("modes/group-dir")).unwrap();
    set_mode(&root.join("modes/group-dir"), 0o2775);

    // Names that trip up shells and parsers.
    write(&root.join("line\nbreak"), b"newline in the name");
    write(&root.join("-starts-with-dash"), b"dash");
    write(&root.join(".hidden"), b"dot");
    write(&root.join("x".repeat(255)), b"longest name ext4 allows");

    // mtimes with nanosecond parts: files and symlinks first, then
    // directories deepest first.
    let mut seconds = 1_600_000_000;
    let mut nanos = 123_456_789;
    let mut next = || {
        seconds += 86_400 + 17;
        nanos = (nanos + 987_654_321) % 1_000_000_000;
        (seconds, nanos)
    };
    let mut entries = walk(root);
    entries.sort();
    for path in &entries {
        let meta = fs::symlink_metadata(path).unwrap();
        let (s, n) = next();
        if meta.file_type().is_symlink() {
            let time = FileTime::from_unix_time(s, n);
            filetime::set_symlink_file_times(path, time, time).unwrap();
        } else if meta.is_file() {
            set_mtime(path, s, n);
        }
    }
    for directory in directories_deepest_first(root) {
        let (s, n) = next();
        set_mtime(&directory, s, n);
    }
    // Before the epoch, and past 2038.
    set_mtime(&root.join("a/readme.md"), -300_000_000, 999_999_999);
    set_mtime(&root.join("modes/private"), 4_200_000_000, 1);
    set_mtime(&root.join("a"), -1, 500_000_000);
}

#[test]
fn awkward_tree_restores_byte_identical_with_metadata() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("home");
    build_awkward_tree(&source);
    if unsafe { libc::geteuid() } == 0 {
        // Owners other than the one running the test.
        let owned = |path: &Path, uid: u32, gid: u32| {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap()
        };
        owned(&source.join("modes/private"), 1234, 5678);
        owned(&source.join("modes/secret-dir"), 4321, 8765);
        owned(&source.join("link-dangling"), 1111, 2222);
    }
    // A sanity check of the fixture itself: the odd cases really are there.
    assert_eq!(
        fs::symlink_metadata(source.join("modes/read-only"))
            .unwrap()
            .mode()
            & 0o777,
        0o444
    );
    assert_ne!(
        fs::symlink_metadata(source.join("a/b/c"))
            .unwrap()
            .mtime_nsec(),
        0
    );

    let summary = workspace.backup_json([&source]);
    assert_eq!(summary["complete"], true, "{summary}");
    let component = &summary["components"][0];
    assert_eq!(component["name"], "home");
    assert_eq!(component["kind"], "directory");
    let files = walk(&source)
        .iter()
        .filter(|path| fs::symlink_metadata(path).unwrap().is_file())
        .count();
    let symlinks = walk(&source)
        .iter()
        .filter(|path| fs::symlink_metadata(path).unwrap().file_type().is_symlink())
        .count();
    assert_eq!(component["files"], files as u64);
    assert_eq!(component["symlinks"], symlinks as u64);

    let target = workspace.path("restored");
    // Owners and special bits only when asked (finding 9 of issue 25).
    workspace
        .cairn_repo([
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
            "--same-owner".as_ref(),
            "--keep-special-bits".as_ref(),
        ] as [&std::ffi::OsStr; 6])
        .ok();
    assert_same_tree(&source, &target.join("home"));
    if unsafe { libc::geteuid() } == 0 {
        // As root, owners come back too.
        for path in walk(&source) {
            let relative = path.strip_prefix(&source).unwrap();
            let a = fs::symlink_metadata(&path).unwrap();
            let b = fs::symlink_metadata(target.join("home").join(relative)).unwrap();
            assert_eq!(
                (a.uid(), a.gid()),
                (b.uid(), b.gid()),
                "{relative:?}: owner"
            );
        }
    }
    // Nothing but the component lands in the target, and no temporary
    // files are left behind.
    let top: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![OsStr::new("home").to_os_string()]);
    assert!(
        walk(&target).iter().all(|path| !path
            .file_name()
            .unwrap()
            .as_bytes()
            .starts_with(b".cairn-restore")),
        "temporary files left in the target"
    );
    workspace.cairn_repo(["verify", "--read-data"]).ok();
}

#[test]
fn non_utf8_names_are_listed_and_restored_under_their_own_bytes() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    write(&source.join(OsStr::from_bytes(b"bad-\xff-name")), b"one");
    write(&source.join(OsStr::from_bytes(b"bad-\xfe-name")), b"two");
    workspace.backup_json([&source]);
    // Two names that differ only in their non-UTF-8 byte stay two files.
    let listed = workspace
        .cairn_repo(["--json", "ls", "latest", "src"])
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let target = workspace.path("out");
    workspace.restore("latest", &target).ok();
    assert_eq!(
        fs::read(target.join("src").join(OsStr::from_bytes(b"bad-\xff-name"))).unwrap(),
        b"one"
    );
    assert_eq!(
        fs::read(target.join("src").join(OsStr::from_bytes(b"bad-\xfe-name"))).unwrap(),
        b"two"
    );
}

/// Deterministic contents of small file number `i`: text for some, noise
/// for others, from a few hundred bytes to a few KiB.
fn small_file_contents(i: usize) -> Vec<u8> {
    let len = 200 + (i * 7919) % 4000;
    if i.is_multiple_of(3) {
        let line = format!("file {i}: the quick brown fox jumps over the lazy dog\n");
        line.repeat(len / line.len() + 1).into_bytes()[..len].to_vec()
    } else {
        noise(i as u64, len)
    }
}

#[test]
fn twenty_thousand_small_files_round_trip() {
    const FILES: usize = 20_000;
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("many");
    let mut total_bytes = 0u64;
    for i in 0..FILES {
        // 20 top folders, 10 below each, 100 files in each leaf.
        let path = source.join(format!(
            "top-{:02}/sub-{:02}/file-{i:05}.dat",
            i % 20,
            (i / 20) % 10
        ));
        let contents = small_file_contents(i);
        total_bytes += contents.len() as u64;
        write(&path, &contents);
    }

    let summary = workspace.backup_json([&source]);
    assert_eq!(summary["complete"], true);
    let component = &summary["components"][0];
    assert_eq!(component["files"], FILES as u64);
    assert_eq!(component["directories"], 20 + 20 * 10);
    assert_eq!(component["bytes"], total_bytes);
    let snapshot = summary["snapshot"].as_str().unwrap().to_string();

    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let snapshots = listed["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["id"], snapshot.as_str());
    assert_eq!(snapshots[0]["trusted"], true);
    assert_eq!(snapshots[0]["components"][0]["name"], "many");
    assert_eq!(snapshots[0]["components"][0]["files"], FILES as u64);
    assert_eq!(snapshots[0]["components"][0]["bytes"], total_bytes);

    let target = workspace.path("out");
    let restored = workspace
        .cairn_repo([
            "--json".as_ref(),
            "restore".as_ref(),
            snapshot.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ])
        .ok()
        .json();
    assert_eq!(
        restored["files_written"], FILES as u64,
        "{}",
        restored["totals"]
    );
    assert_eq!(restored["totals"]["create"], (FILES + 20 + 20 * 10) as u64);
    assert_eq!(restored["failures"].as_array().unwrap().len(), 0);
    assert_same_tree(&source, &target.join("many"));
}

#[test]
fn single_file_component_restores_as_a_file_with_its_metadata() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let file = workspace.path("elsewhere/Notes.TXT");
    write(&file, &noise(3, 200_000));
    set_mode(&file, 0o640);
    set_mtime(&file, 1_700_000_000, 555_000_777);

    let summary = workspace.backup_json([
        "--component".as_ref(),
        format!("notes={}", file.display()).as_ref() as &OsStr,
    ]);
    assert_eq!(summary["components"][0]["kind"], "file");
    assert_eq!(summary["components"][0]["files"], 1);

    let target = workspace.path("out");
    workspace.restore("latest", &target).ok();
    let restored = target.join("notes");
    let meta = fs::symlink_metadata(&restored).expect("TARGET/notes exists");
    assert!(meta.is_file(), "TARGET/notes is not a file");
    assert_eq!(file_hash(&restored), file_hash(&file));
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_700_000_000, 555_000_777)
    );
    let top: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![OsStr::new("notes").to_os_string()]);
}

#[test]
fn sparse_file_over_4_gib_restores_identical_and_stays_sparse() {
    const GIB: u64 = 1 << 30;
    const LEN: u64 = 4 * GIB + 12_345;
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let file = workspace.path("disk.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut handle = fs::File::create(&file).unwrap();
        handle.set_len(LEN).unwrap();
        let blocks: [(u64, usize); 6] = [
            (0, 4096),
            (123_457, 10_000),
            (GIB + 7, 50_000),
            (3 * GIB - 1, 3),
            (4 * GIB - 2, 4),
            (LEN - 1000, 1000),
        ];
        for (seed, (offset, len)) in blocks.iter().enumerate() {
            handle.seek(SeekFrom::Start(*offset)).unwrap();
            handle.write_all(&noise(100 + seed as u64, *len)).unwrap();
        }
    }
    let allocated = |path: &Path| fs::metadata(path).unwrap().blocks() * 512;
    assert_eq!(fs::metadata(&file).unwrap().len(), LEN);
    assert!(
        allocated(&file) < 64 << 20,
        "the filesystem does not keep the source sparse"
    );

    let summary = workspace.backup_json([
        "--component".as_ref(),
        format!("big={}", file.display()).as_ref() as &OsStr,
    ]);
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["components"][0]["kind"], "file");
    assert_eq!(summary["components"][0]["bytes"], LEN);
    // Zeros deduplicate: the repository holds a tiny fraction of 4 GiB.
    assert!(
        workspace.repo_size() < 16 << 20,
        "repository holds {} bytes for a mostly empty file",
        workspace.repo_size()
    );

    let target = workspace.path("out");
    workspace.restore("latest", &target).ok();
    let restored = target.join("big");
    let meta = fs::symlink_metadata(&restored).expect("TARGET/big exists");
    assert!(meta.is_file(), "TARGET/big is not a file");
    assert_eq!(meta.len(), LEN);
    assert_eq!(file_hash(&restored), file_hash(&file));
    assert!(
        allocated(&restored) < 64 << 20,
        "restored file is not sparse: {} bytes allocated for {LEN}",
        allocated(&restored)
    );
}

#[test]
fn component_root_directory_keeps_its_mode_and_mtime() {
    // Backing up a private home directory and restoring it must not leave
    // it open to everyone, nor stamp it with the time of the restore.
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let home = workspace.path("alice");
    write(&home.join(".ssh/id_ed25519"), b"secret");
    set_mode(&home.join(".ssh"), 0o700);
    set_mode(&home, 0o700);
    set_mtime(&home, 1_500_000_000, 250_000_000);
    workspace.backup_json([&home]);
    let target = workspace.path("out");
    workspace.restore("latest", &target).ok();
    assert_same_tree(&home, &target.join("alice"));
    let restored = fs::metadata(target.join("alice")).unwrap();
    assert_eq!(
        format!("{:o}", restored.mode() & 0o7777),
        "700",
        "the restored component root is not private any more"
    );
    assert_eq!(
        (restored.mtime(), restored.mtime_nsec()),
        (1_500_000_000, 250_000_000),
        "the restored component root lost its mtime"
    );
}

#[test]
fn restoring_again_over_an_earlier_restore_gives_the_same_tree() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("project");
    write(&source.join("src/main.rs"), b"fn main() {}\n");
    write(&source.join("data/blob.bin"), &noise(11, 300_000));
    symlink("src/main.rs", source.join("entry")).unwrap();
    workspace.backup_json([&source]);
    let target = workspace.path("out");
    let restore = || {
        workspace.restore("latest", &target).ok();
    };
    restore();
    // The user edits the restored copy, then restores again over it.
    write(&target.join("project/src/main.rs"), b"broken edit");
    fs::remove_file(target.join("project/data/blob.bin")).unwrap();
    let again = workspace
        .cairn_repo([
            "--json".as_ref(),
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ])
        .ok()
        .json();
    assert_same_tree(&source, &target.join("project"));
    assert_eq!(again["totals"]["update"], 1, "{}", again["totals"]);
    assert_eq!(again["totals"]["create"], 1, "{}", again["totals"]);
    assert_eq!(again["files_written"], 2, "{again}");
    assert!(
        again["safety_snapshot"].is_string(),
        "overwriting the edit kept no safety snapshot: {again}"
    );
}

#[test]
fn relative_repository_source_and_target_paths_work() {
    // The user cds into a directory and names everything relative to it.
    let workspace = Workspace::new();
    write(&workspace.path("notes/todo.txt"), b"buy milk\n");
    write(&workspace.path("notes/deep/idea.md"), b"# idea\n");
    let here = |arguments: &[&str]| {
        run_of(
            workspace
                .command()
                .current_dir(workspace.dir.path())
                .args(arguments)
                .output()
                .unwrap(),
        )
    };
    here(&["--repo", "repo", "init", "--plaintext"]).ok();
    assert!(workspace.repo().join("config").is_file());
    here(&["--repo", "repo", "backup", "notes"]).ok();
    here(&["--repo", "repo", "restore", "latest", "--target", "out"]).ok();
    assert_same_tree(&workspace.path("notes"), &workspace.path("out/notes"));
    here(&["--repo", "./repo", "verify", "--read-data"]).ok();
}

#[test]
fn every_file_hash_is_the_blake3_of_its_content_whatever_its_chunks() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let files: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        (
            "one-chunk",
            b"a file well under the smallest chunk".to_vec(),
        ),
        ("just-one-chunk", noise(11, 4096)),
        ("many-chunks", noise(12, 400_000)),
    ];
    for (name, contents) in &files {
        write(&workspace.path("src").join(name), contents);
    }
    workspace.backup_json([workspace.path("src")]);
    let listed = workspace
        .cairn_repo(["--json", "ls", "latest", "src"])
        .ok()
        .json();
    for (name, contents) in &files {
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["path"].as_str().unwrap().rsplit('/').next() == Some(*name))
            .unwrap_or_else(|| panic!("{name} listed: {listed}"));
        assert_eq!(
            entry["hash"].as_str().unwrap(),
            blake3::hash(contents).to_hex().as_str(),
            "{name}"
        );
        let chunks = entry["chunks"].as_array().map_or(0, Vec::len);
        assert!(
            (*name != "many-chunks" || chunks > 1) && (*name != "one-chunk" || chunks == 1),
            "{name}: {chunks} chunks"
        );
    }
    // Restored, each is checked against that hash and comes back whole.
    workspace.restore("latest", &workspace.path("out")).ok();
    assert_same_tree(&workspace.path("src"), &workspace.path("out/src"));
}
