//! The first session a user has: init, back up, list, restore, verify.

mod common;
use common::*;

#[test]
fn init_backup_restore_verify() {
    let workspace = Workspace::new();
    workspace.init();
    write(&workspace.path("src/hello.txt"), b"hello");
    write(&workspace.path("src/deep/er/file.bin"), &noise(1, 300_000));
    let summary = workspace.backup_json([workspace.path("src")]);
    assert_eq!(summary["components"][0]["name"], "src");
    assert_eq!(summary["components"][0]["files"], 2);
    workspace
        .cairn_repo(["restore", "latest", "--target"])
        .expect(2);
    workspace.restore("latest", &workspace.path("out")).ok();
    assert_same_tree(&workspace.path("src"), &workspace.path("out/src"));
    workspace.cairn_repo(["verify", "--read-data"]).ok();
}

#[test]
fn unreadable_and_special_files_make_an_incomplete_snapshot_with_exit_code_3() {
    let workspace = Workspace::new();
    workspace.init();
    write(&workspace.path("src/good.txt"), b"fine");
    let fifo = workspace.path("src/a-fifo");
    let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o644) }, 0);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        // Root reads anything, so only an unprivileged run can test this.
        write(&workspace.path("src/secret.txt"), b"no");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            workspace.path("src/secret.txt"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
    }
    let run = workspace
        .cairn_repo([
            "--json".as_ref(),
            "backup".as_ref(),
            workspace.path("src").as_os_str(),
        ])
        .expect(3);
    let summary = run.json();
    assert_eq!(summary["complete"], false);
    let problems = summary["problems"].as_array().unwrap();
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"a-fifo"), "{problems:?}");
    assert!(
        run.stderr.contains("src/a-fifo"),
        "stderr names the path: {}",
        run.stderr
    );
    if !root {
        assert!(paths.contains(&"secret.txt"), "{problems:?}");
    }
    // The snapshot still holds everything that could be read.
    workspace.restore("latest", &workspace.path("out")).ok();
    assert_eq!(
        std::fs::read(workspace.path("out/src/good.txt")).unwrap(),
        b"fine"
    );
    assert!(!workspace.path("out/src/a-fifo").exists());
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["snapshots"][0]["complete"], false);
}

#[test]
fn a_damaged_index_cache_is_discarded_and_rebuilt_with_a_message() {
    let workspace = Workspace::new();
    workspace.init();
    write(&workspace.path("src/file.bin"), &noise(5, 200_000));
    workspace.backup_json([workspace.path("src")]);
    // Scribble over every file of the sled cache.
    let cache_files: Vec<_> = walk(&workspace.path("cache"))
        .into_iter()
        .filter(|path| path.is_file())
        .collect();
    assert!(!cache_files.is_empty(), "the backup left an index cache");
    for path in &cache_files {
        std::fs::write(path, b"this is not a sled database").unwrap();
    }
    let run = workspace.restore("latest", &workspace.path("out")).ok();
    assert!(
        run.stderr.contains("index cache") && run.stderr.contains("rebuilding"),
        "says it rebuilt the cache: {}",
        run.stderr
    );
    assert_same_tree(&workspace.path("src"), &workspace.path("out/src"));
    // And the rebuilt cache serves the next run without complaint.
    let second = workspace.cairn_repo(["ls", "latest"]).ok();
    assert!(!second.stderr.contains("rebuilding"), "{}", second.stderr);
}

#[test]
fn caches_of_earlier_layouts_are_removed_and_the_current_one_kept() {
    let workspace = Workspace::new();
    workspace.init();
    write(
        &workspace.path("src/file.txt"),
        b"kept in the current cache\n",
    );
    workspace.backup_json([workspace.path("src")]);
    let repositories: Vec<_> = std::fs::read_dir(workspace.path("cache"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(repositories.len(), 1, "{repositories:?}");
    let for_repository = &repositories[0];
    assert!(for_repository.join("index.v4").is_dir());
    for outdated in ["index", "index.v2", "index.v3"] {
        write(
            &for_repository.join(outdated).join("db"),
            b"an older cairn's cache",
        );
    }
    workspace.cairn_repo(["ls", "latest"]).ok();
    assert!(!for_repository.join("index").exists());
    assert!(!for_repository.join("index.v2").exists());
    assert!(!for_repository.join("index.v3").exists());
    assert!(for_repository.join("index.v4").is_dir());
}

#[test]
fn deleting_the_index_cache_only_costs_a_rebuild() {
    let workspace = Workspace::new();
    workspace.init();
    write(&workspace.path("src/file.bin"), &noise(6, 300_000));
    workspace.backup_json([workspace.path("src")]);
    std::fs::remove_dir_all(workspace.path("cache")).unwrap();
    let second = workspace.backup_json([workspace.path("src")]);
    assert_eq!(second["new_chunks"], 0, "everything deduplicated: {second}");
    workspace.cairn_repo(["verify", "--read-data"]).ok();
}
