//! Write-only backup hosts (issue 26, FORMAT.md 17.6 and 14.9): a host
//! whose key slot holds the id key and the public key but no read key
//! backs up, deduplicates and skips unchanged files through its local walk
//! cache, cannot read anything back (its own snapshots included), and the
//! owner restores what it wrote byte-identical. Plaintext into encrypted
//! `copy` round-trips and deduplicates against later backups.

mod common;
use cairn_store::Repository;
use cairn_store::backend::{S3Options, open_backend};
use cairn_store::format::keyslot::{KdfParams, KeySlot, SlotPayload};
use cairn_store::ops::unlock::{unlock_with_passphrase, write_key_slot};
use common::*;
use std::path::Path;

const HOST_PASSWORD: &str = "write only host";

/// Adds a passphrase slot holding only the write-only part of the keys,
/// opened by [`HOST_PASSWORD`] (what `key add --write-only` makes).
fn add_write_only_slot(repo: &Path) {
    let backend = open_backend(&repo.display().to_string(), &S3Options::default()).unwrap();
    let repository = Repository::open(backend).unwrap();
    let owner = unlock_with_passphrase(&repository, TEST_PASSWORD.as_bytes()).unwrap();
    let keys = owner.keys().unwrap().write_only();
    assert!(!keys.can_read());
    let payload = SlotPayload::of(&keys, owner.owner(), "backup host", "2026-12-06T00:00:00Z");
    let kdf = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };
    let slot = KeySlot::wrap_with_passphrase(&payload, HOST_PASSWORD.as_bytes(), kdf).unwrap();
    write_key_slot(&repository, &slot).unwrap();
}

/// `cairn --repo REPO ARGS` as the write-only host.
fn as_host(workspace: &Workspace, args: &[&str]) -> Run {
    let output = workspace
        .command()
        .env("CAIRN_PASSWORD", HOST_PASSWORD)
        .arg("--repo")
        .arg(workspace.repo())
        .args(args)
        .output()
        .expect("run cairn");
    run_of(output)
}

#[test]
fn a_write_only_host_backs_up_twice_skips_unchanged_files_and_reads_nothing_back() {
    let workspace = Workspace::new();
    workspace.init();
    add_write_only_slot(&workspace.repo());
    for index in 0..20 {
        write(
            &workspace.path(&format!("src/dir{}/file{index}.bin", index % 4)),
            &noise(index, 30_000),
        );
    }
    let component = format!("data={}", workspace.path("src").display());
    let backup = |args: &[&str]| {
        let mut all = vec!["--json", "backup", "--component", component.as_str()];
        all.extend_from_slice(args);
        as_host(&workspace, &all).ok().json()
    };
    let first = backup(&[]);
    assert_eq!(first["unchanged_files"], 0);
    let second = backup(&[]);
    assert_eq!(second["unchanged_files"], 20, "{second}");
    assert_eq!(second["new_chunks"], 0, "{second}");
    assert_eq!(second["parent"], first["snapshot"]);

    // A changed file is read again; the rest still comes from the cache.
    write(&workspace.path("src/dir1/file1.bin"), &noise(99, 30_000));
    let third = backup(&[]);
    assert_eq!(third["unchanged_files"], 19, "{third}");
    assert_eq!(third["parent"], second["snapshot"]);

    // Without its walk cache it reads every file, and stores nothing new.
    std::fs::remove_dir_all(workspace.path("cache")).unwrap();
    let fourth = backup(&[]);
    assert_eq!(fourth["unchanged_files"], 0, "{fourth}");
    assert_eq!(fourth["new_chunks"], 0, "{fourth}");

    // The host cannot read anything back, and says which key it lacks.
    let snapshot = third["snapshot"].as_str().unwrap().to_string();
    let target = workspace.path("restored-by-host");
    let listed = workspace.cairn_repo(["snapshots"]).ok();
    let mountpoint = workspace.path("mnt");
    std::fs::create_dir_all(&mountpoint).unwrap();
    for args in [
        vec![
            "restore",
            snapshot.as_str(),
            "--target",
            target.to_str().unwrap(),
        ],
        vec!["ls", snapshot.as_str()],
        vec!["cat", snapshot.as_str(), "data/dir1/file1.bin"],
        vec!["verify"],
        vec!["verify", "--read-data"],
        vec!["prune"],
        vec!["forget", "--keep-last", "1"],
        vec!["drill", "--snapshot", snapshot.as_str()],
        vec!["mount", mountpoint.to_str().unwrap()],
    ] {
        let run = as_host(&workspace, &args);
        assert_eq!(
            run.code, 11,
            "{args:?} without the read key: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("read key") && run.stderr.contains("write-only"),
            "{args:?} does not name the missing read key: {}",
            run.stderr
        );
    }
    // Nothing was forgotten or pruned.
    assert_eq!(
        workspace.cairn_repo(["snapshots"]).ok().stdout,
        listed.stdout
    );
    assert!(!target.join("data").exists());

    // The owner restores the host's snapshots byte-identical.
    let restored = workspace.path("restored");
    workspace.restore(&snapshot, &restored).ok();
    assert_same_tree(&workspace.path("src"), &restored.join("data"));
}

#[test]
fn a_plaintext_repository_copied_into_an_encrypted_one_round_trips_and_deduplicates() {
    let workspace = Workspace::new();
    let plain = workspace.path("plain");
    workspace
        .cairn(["--repo", plain.to_str().unwrap(), "init", "--plaintext"])
        .ok();
    workspace
        .cairn_repo(["init", "--like", plain.to_str().unwrap()])
        .ok();
    for index in 0..10 {
        write(
            &workspace.path(&format!("src/file{index}.bin")),
            &noise(index, 200_000),
        );
    }
    let component = format!("data={}", workspace.path("src").display());
    workspace
        .cairn([
            "--repo",
            plain.to_str().unwrap(),
            "backup",
            "--component",
            &component,
        ])
        .ok();
    let copied = workspace
        .cairn([
            "--json",
            "copy",
            "--from",
            plain.to_str().unwrap(),
            "--to",
            workspace.repo().to_str().unwrap(),
        ])
        .ok()
        .json();
    let target_id = copied["snapshots"][0]["target_id"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = workspace.path("restored");
    workspace.restore(&target_id, &restored).ok();
    assert_same_tree(&workspace.path("src"), &restored.join("data"));

    let size = workspace.repo_size();
    let after = workspace.backup_json(["--component", component.as_str()]);
    assert_eq!(after["new_chunks"], 0, "{after}");
    assert!(
        workspace.repo_size() < size + 64 * 1024,
        "a backup of the same files adds almost nothing"
    );
}
