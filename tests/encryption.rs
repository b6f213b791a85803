//! Encryption (FORMAT.md 17): a repository made by `init` is encrypted, and
//! a reader of its storage (a local directory, or an S3 bucket) finds none
//! of the file contents, file names, host name, command lines, nor the
//! plain BLAKE3 hash of a file or of one of its chunks; a wrong passphrase
//! fails clearly (exit code 11) and changes nothing; a damaged key slot is
//! named; `init --plaintext` still makes a plaintext repository, and
//! `snapshots --json` / `verify --json` say which kind a repository is.
//! Each runs the real `cairn` on real files.

mod common;
use common::s3::{BUCKET, S3Server};
use common::*;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// Strings of the backed-up content and its names that must not appear.
const CONTENT: &str = "the quarterly numbers of Ursula Oddfellow";
const FILE_NAME: &str = "payroll-oddfellow.csv";
const DIRECTORY_NAME: &str = "confidential-dir";
const HOST: &str = "host-zanzibar-17";
const COMMAND_SECRET: &str = "PGPASSWORD=hunter2secret";

/// A source tree with a known file (its content repeated, so it is cut
/// into several chunks, and with a first chunk of known bytes) and a
/// component made by a command carrying a secret on its command line.
fn make_source(workspace: &Workspace) -> (PathBuf, Vec<u8>) {
    let source = workspace.path("source");
    let mut content = Vec::new();
    while content.len() < 300_000 {
        content.extend_from_slice(CONTENT.as_bytes());
        content.extend_from_slice(format!(" row {}\n", content.len()).as_bytes());
    }
    write(&source.join(DIRECTORY_NAME).join(FILE_NAME), &content);
    (source, content)
}

fn backup_args(source: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "backup".into(),
        "--host".into(),
        HOST.into(),
        "--component".into(),
        format!("files={}", source.display()).into(),
        "--command".into(),
        format!("dump=env {COMMAND_SECRET} echo dumped").into(),
    ]
}

/// Plaintext a bucket reader must not find in any stored byte: strings,
/// and the plain BLAKE3 of the file and of its first chunk, as hex and raw.
fn forbidden(content: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut needles: Vec<(String, Vec<u8>)> = [
        CONTENT,
        FILE_NAME,
        DIRECTORY_NAME,
        HOST,
        COMMAND_SECRET,
        "hunter2secret",
    ]
    .iter()
    .map(|text| (text.to_string(), text.as_bytes().to_vec()))
    .collect();
    // The first chunk is at least the minimum chunk size (4096 bytes): its
    // plain hash is one of the hashes of the content's prefixes from 4096
    // to 65536 bytes; every one of them is looked for.
    let mut hashes = vec![("file".to_string(), blake3::hash(content))];
    for length in 4096..=65536.min(content.len()) {
        hashes.push((format!("prefix {length}"), blake3::hash(&content[..length])));
    }
    for (what, hash) in hashes {
        needles.push((
            format!("{what} hash hex"),
            hash.to_hex().as_bytes().to_vec(),
        ));
        needles.push((format!("{what} hash raw"), hash.as_bytes().to_vec()));
    }
    needles
}

/// Every byte of every file under `root`, searched for every needle: the
/// windows of each needle's length are gathered into a set once, so the
/// tens of thousands of prefix hashes cost a lookup each.
fn assert_nothing_found(root: &Path, content: &[u8]) {
    let needles = forbidden(content);
    let files: Vec<PathBuf> = walk(root).into_iter().filter(|p| p.is_file()).collect();
    assert!(files.len() > 5, "too few objects to search: {files:?}");
    let mut lengths: Vec<usize> = needles.iter().map(|(_, needle)| needle.len()).collect();
    lengths.sort();
    lengths.dedup();
    for file in &files {
        let bytes = fs::read(file).expect("read object");
        for &length in &lengths {
            let windows: HashSet<&[u8]> = bytes.windows(length).collect();
            for (what, needle) in needles.iter().filter(|(_, n)| n.len() == length) {
                assert!(
                    !windows.contains(needle.as_slice()),
                    "{what} found in {}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn a_local_repository_shows_no_plaintext_and_restores_byte_identical() {
    let workspace = Workspace::new();
    let (source, content) = make_source(&workspace);
    let made = workspace.cairn_repo(["--json", "init"]).ok().json();
    assert_eq!(made["encrypted"], true, "{made}");
    workspace.cairn_repo(backup_args(&source)).ok();
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["encrypted"], true);
    assert_eq!(listed["snapshots"][0]["host"], HOST);
    assert_nothing_found(&workspace.repo(), &content);
    let target = workspace.path("restored");
    workspace.restore("latest", &target).ok();
    assert_eq!(
        fs::read(target.join("files").join(DIRECTORY_NAME).join(FILE_NAME)).unwrap(),
        content
    );
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!((code, &report["clean"]), (0, &serde_json::json!(true)));
    assert_eq!(report["encrypted"], true);
}

#[test]
fn an_s3_repository_shows_no_plaintext() {
    let workspace = Workspace::new();
    let server = S3Server::start();
    let (source, content) = make_source(&workspace);
    let location = format!("s3://{BUCKET}/secret/repo");
    let cairn = |args: Vec<std::ffi::OsString>| {
        let mut command = workspace.command();
        server.configure(&mut command);
        run_of(
            command
                .arg("--repo")
                .arg(&location)
                .args(args)
                .output()
                .expect("run cairn"),
        )
    };
    cairn(vec!["init".into()]).ok();
    cairn(backup_args(&source)).ok();
    let copy = workspace.path("bucket");
    server.download("secret/repo/", &copy);
    assert_nothing_found(&copy, &content);
    let target = workspace.path("restored");
    cairn(vec![
        "restore".into(),
        "latest".into(),
        "--target".into(),
        target.clone().into(),
    ])
    .ok();
    assert_eq!(
        fs::read(target.join("files").join(DIRECTORY_NAME).join(FILE_NAME)).unwrap(),
        content
    );
}

#[test]
fn a_wrong_passphrase_fails_clearly_and_changes_nothing() {
    let workspace = Workspace::new();
    let (source, _) = make_source(&workspace);
    workspace.init();
    workspace.cairn_repo(backup_args(&source)).ok();
    let before: Vec<PathBuf> = walk(&workspace.repo());
    let run = run_of(
        workspace
            .command()
            .env("CAIRN_PASSWORD", "not the passphrase")
            .arg("--repo")
            .arg(workspace.repo())
            .args(backup_args(&source))
            .output()
            .expect("run cairn"),
    );
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert!(
        run.stderr.contains("no key slot of")
            && run
                .stderr
                .contains("opens with this passphrase (1 passphrase slots tried)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        walk(&workspace.repo()),
        before,
        "a refused run wrote nothing"
    );
    // No passphrase at all, and no terminal: says where to give one.
    let run = run_of(
        workspace
            .command()
            .env_remove("CAIRN_PASSWORD")
            .arg("--repo")
            .arg(workspace.repo())
            .arg("snapshots")
            .output()
            .expect("run cairn"),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("CAIRN_PASSWORD"), "{}", run.stderr);
    // From a file, and from a command: the right one opens it.
    let file = workspace.path("passphrase");
    fs::write(&file, format!("{TEST_PASSWORD}\n")).unwrap();
    workspace
        .cairn_repo([
            OsStr::new("--password-file"),
            file.as_os_str(),
            OsStr::new("snapshots"),
        ])
        .ok();
    workspace
        .cairn_repo([
            "--password-command".to_string(),
            format!("cat {}", file.display()),
            "snapshots".to_string(),
        ])
        .ok();
}

#[test]
fn a_damaged_key_slot_is_named() {
    let workspace = Workspace::new();
    workspace.init();
    let slots: Vec<PathBuf> = walk(&workspace.repo().join("keyslots"))
        .into_iter()
        .filter(|path| path.is_file())
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let mut bytes = fs::read(&slots[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&slots[0], &bytes).unwrap();
    let run = workspace.cairn_repo(["snapshots"]);
    assert_eq!(run.code, 11, "{}", run.stderr);
    let name = slots[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        run.stderr.contains(&format!("key slot {name}")),
        "{}",
        run.stderr
    );
}

#[test]
fn plaintext_repositories_still_work_and_say_so() {
    let workspace = Workspace::new();
    let (source, content) = make_source(&workspace);
    let made = workspace
        .cairn_repo(["--json", "init", "--plaintext"])
        .ok()
        .json();
    assert_eq!(made["encrypted"], false);
    let config = fs::read_to_string(workspace.repo().join("config")).unwrap();
    assert!(
        config.contains("\"version\": 1") && !config.contains("encryption"),
        "{config}"
    );
    assert!(!workspace.repo().join("keyslots").exists());
    workspace.cairn_repo(backup_args(&source)).ok();
    // Plaintext: the content is there for anyone to read.
    let packs = workspace.packs();
    assert!(packs.iter().any(|pack| {
        let bytes = fs::read(pack).unwrap();
        bytes
            .windows(FILE_NAME.len())
            .any(|w| w == FILE_NAME.as_bytes())
    }));
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["encrypted"], false);
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!((code, &report["encrypted"]), (0, &serde_json::json!(false)));
    let text = workspace.cairn_repo(["snapshots"]).ok();
    assert!(
        text.stdout.contains("plaintext (not encrypted)"),
        "{}",
        text.stdout
    );
    let target = workspace.path("restored");
    workspace.restore("latest", &target).ok();
    assert_eq!(
        fs::read(target.join("files").join(DIRECTORY_NAME).join(FILE_NAME)).unwrap(),
        content
    );
}

/// The magic that starts each pack file, counted.
fn pack_magics(workspace: &Workspace) -> Vec<String> {
    workspace
        .packs()
        .iter()
        .map(|pack| String::from_utf8_lossy(&fs::read(pack).unwrap()[..8]).to_string())
        .collect()
}

#[test]
fn packs_of_either_cipher_chosen_by_the_operator_verify_and_restore_side_by_side() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("mixed");
    write(&source.join("first.bin"), &noise(31, 400_000));
    // CAIRNPE1 (XChaCha20-Poly1305), whatever this processor offers.
    let first = workspace
        .cairn_repo(
            [
                OsStr::new("--json"),
                OsStr::new("--pack-cipher"),
                OsStr::new("xchacha20poly1305"),
                OsStr::new("backup"),
                source.as_os_str(),
            ]
            .iter(),
        )
        .ok()
        .json();
    let magics = pack_magics(&workspace);
    assert!(
        !magics.is_empty() && magics.iter().all(|magic| magic == "CAIRNPE1"),
        "{magics:?}"
    );
    // CAIRNPE2 (AES-256-GCM) through the environment, into the same
    // repository: it now holds both kinds.
    write(&source.join("second.bin"), &noise(32, 400_000));
    let mut command = workspace.command();
    command.env("CAIRN_PACK_CIPHER", "aes-256-gcm");
    let second = run_of(
        command
            .arg("--repo")
            .arg(workspace.repo())
            .args(["--json", "backup"])
            .arg(&source)
            .output()
            .unwrap(),
    )
    .ok()
    .json();
    let magics = pack_magics(&workspace);
    assert!(magics.iter().any(|magic| magic == "CAIRNPE1"), "{magics:?}");
    assert!(magics.iter().any(|magic| magic == "CAIRNPE2"), "{magics:?}");
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report}");
    for (summary, name) in [(&first, "first"), (&second, "second")] {
        let snapshot = summary["snapshot"].as_str().unwrap();
        let target = workspace.path(&format!("out-{name}"));
        workspace.restore(snapshot, &target).ok();
    }
    assert_same_tree(&source, &workspace.path("out-second/mixed"));
    assert_eq!(
        fs::read(workspace.path("out-first/mixed/first.bin")).unwrap(),
        noise(31, 400_000)
    );
    // An unknown cipher is a usage error naming the flag.
    let refused = workspace
        .cairn_repo(["--pack-cipher", "rot13", "snapshots"])
        .expect(2);
    assert!(refused.stderr.contains("pack-cipher"), "{}", refused.stderr);
}
