//! Helpers that make each end-to-end test read like a user at a terminal:
//! a scratch [`Workspace`] with its own config and cache directories, and
//! [`Run`], the result of running the real `cairn` binary.
#![allow(dead_code)]

pub mod json_doc;
pub mod pty;
pub mod rewrites;
pub mod s3;

use cairn_store::Id;
use cairn_store::format::pack::{BlobKind, PackHeader, parse_pack};
use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The passphrase every test repository is encrypted with (set by
/// [`Workspace::command`] as `CAIRN_PASSWORD`).
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// A scratch directory holding a repository, sources and restore targets,
/// with cairn's config and cache kept inside it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

/// What one run of `cairn` did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {}", self.stdout))
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Self {
        self.expect(0)
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("cairn-test-")
                .tempdir()
                .expect("create temporary directory"),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// A `cairn` command with this workspace's config and cache.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .env("CAIRN_CONFIG_DIR", self.path("config"))
            .env("CAIRN_CACHE_DIR", self.path("cache"))
            .env_remove("CAIRN_REPO")
            .env_remove("CAIRN_KEY_FILE")
            // Repositories are encrypted by default: one passphrase for
            // all, and the cheapest key derivation allowed, so that the
            // suite does not spend its time in Argon2id.
            .env("CAIRN_PASSWORD", TEST_PASSWORD)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env("CAIRN_KDF_MEMORY_MIB", "8")
            .env("CAIRN_KDF_PASSES", "1");
        command
    }

    /// Runs `cairn ARGS...` and captures everything.
    pub fn cairn<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = self.command().args(args).output().expect("run cairn");
        run_of(output)
    }

    /// `cairn --repo REPO ARGS...`
    pub fn cairn_repo<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--repo".into(), self.repo().into()];
        all.extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self.cairn(all)
    }

    /// `cairn --repo REPO restore SNAPSHOT --target TARGET --yes`: tests
    /// restore over earlier restores, which without a terminal needs
    /// `--yes` (the confirmation itself is tested in tests/runbook.rs).
    pub fn restore(&self, snapshot: impl AsRef<OsStr>, target: &Path) -> Run {
        self.cairn_repo([
            OsStr::new("restore"),
            snapshot.as_ref(),
            OsStr::new("--target"),
            target.as_os_str(),
            OsStr::new("--yes"),
        ])
    }

    /// `cairn --repo REPO --json verify ARGS...`: exit code and report.
    pub fn verify_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--json", "verify"];
        all.extend_from_slice(args);
        let run = self.cairn_repo(all);
        (run.code, run.json())
    }

    /// `verify --read-data`, which must find damage (exit 4) that costs no
    /// snapshot (other copies hold what the damaged objects held); the
    /// report, for the caller's own checks. `context` goes into failures.
    pub fn verify_finds_damage_without_loss(&self, context: &str) -> serde_json::Value {
        let (code, report) = self.verify_json(&["--read-data"]);
        assert_eq!(code, 4, "{context}: {report:#}");
        assert_eq!(
            report["damaged_snapshots"],
            serde_json::json!([]),
            "{context}: {report:#}"
        );
        report
    }

    pub fn init(&self) -> Run {
        self.cairn_repo(["init"]).ok()
    }

    /// `init --plaintext`: for tests that read or forge the repository's
    /// raw bytes (packs, index files, manifests), whose subject is not
    /// encryption.
    pub fn init_plaintext(&self) -> Run {
        self.cairn_repo(["init", "--plaintext"]).ok()
    }

    /// Backs up with `--json` and returns the summary.
    pub fn backup_json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--json".into(), "backup".into()];
        all.extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self.cairn_repo(all).ok().json()
    }

    /// Total bytes of every file under the repository.
    pub fn repo_size(&self) -> u64 {
        tree_size(&self.repo())
    }

    /// Every pack file in the repository.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut packs = Vec::new();
        for entry in walk(&self.repo().join("data")) {
            if entry.is_file() {
                packs.push(entry);
            }
        }
        packs.sort();
        packs
    }
}

pub fn run_of(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every path below `root` (not following symlinks), depth first.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

pub fn tree_size(root: &Path) -> u64 {
    walk(root)
        .iter()
        .filter_map(|path| fs::symlink_metadata(path).ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn write(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(path, contents).expect("write file");
}

/// Asserts two trees hold the same names, types, contents, symlink
/// targets, permission bits and file mtimes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    use std::os::unix::fs::MetadataExt;
    let relative = |root: &Path| -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = walk(root)
            .into_iter()
            .map(|path| path.strip_prefix(root).expect("below root").to_path_buf())
            .collect();
        paths.sort();
        paths
    };
    let expected_paths = relative(expected);
    assert_eq!(expected_paths, relative(actual), "different sets of paths");
    for path in expected_paths {
        let a = fs::symlink_metadata(expected.join(&path)).expect("stat expected");
        let b = fs::symlink_metadata(actual.join(&path)).expect("stat actual");
        assert_eq!(a.file_type(), b.file_type(), "{}: type", path.display());
        if a.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(expected.join(&path)).unwrap(),
                fs::read_link(actual.join(&path)).unwrap(),
                "{}: symlink target",
                path.display()
            );
            continue;
        }
        assert_eq!(
            a.mode() & 0o7777,
            b.mode() & 0o7777,
            "{}: mode",
            path.display()
        );
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{}: mtime",
            path.display()
        );
        if a.is_file() {
            assert_eq!(a.len(), b.len(), "{}: size", path.display());
            assert_eq!(
                file_hash(&expected.join(&path)),
                file_hash(&actual.join(&path)),
                "{}: content",
                path.display()
            );
        }
    }
}

/// BLAKE3 of a file, read in large blocks (fast even for multi-GiB files).
pub fn file_hash(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path).expect("hash file");
    hasher.finalize()
}

/// The id a repository file is named by.
pub fn id_of_file(path: &Path) -> Id {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .expect("object name");
    Id::from_hex(name).unwrap_or_else(|| panic!("{} is not named by an id", path.display()))
}

pub fn header_of(pack: &Path) -> PackHeader {
    parse_pack(&fs::read(pack).expect("read pack"), &id_of_file(pack)).expect("pack parses")
}

/// The packs among `packs` that hold file content rather than trees.
pub fn data_packs(packs: &[PathBuf]) -> Vec<PathBuf> {
    packs
        .iter()
        .filter(|pack| {
            header_of(pack)
                .blobs
                .iter()
                .all(|blob| blob.kind == BlobKind::Data)
        })
        .cloned()
        .collect()
}

/// Whether `path` is one of restore's temporary files (`.cairn-restore-*`).
pub fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(".cairn-restore-"))
}

/// Restore's temporary files anywhere below `root`.
pub fn leftover_temporaries(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|path| is_temporary(path))
        .collect()
}

/// SIGKILLs `child` unless it has already finished; true if the kill is what
/// ended it.
pub fn kill(child: &mut Child) -> bool {
    if child.try_wait().expect("poll child").is_none() {
        child.kill().expect("SIGKILL");
    }
    let status = child.wait().expect("reap child");
    status.signal() == Some(libc::SIGKILL)
}

/// A verify report's findings.
pub fn findings(report: &Value) -> &Vec<Value> {
    report["findings"].as_array().expect("findings")
}

/// A verify report in a few lines: totals, then the first findings.
pub fn brief(report: &Value) -> String {
    let findings = findings(report);
    let mut text = format!(
        "clean: {}, {} findings, damaged snapshots: {}\n",
        report["clean"],
        findings.len(),
        report["damaged_snapshots"]
    );
    for finding in findings.iter().take(8) {
        text += &format!(
            "  {} {}: {}: {} (affects {} paths)\n",
            finding["severity"].as_str().unwrap_or("?"),
            finding["kind"].as_str().unwrap_or("?"),
            finding["object"].as_str().unwrap_or("?"),
            finding["message"].as_str().unwrap_or("?"),
            finding["affected_total"]
        );
    }
    if findings.len() > 8 {
        text += &format!("  … and {} more\n", findings.len() - 8);
    }
    text
}

/// Every object under data/, index/, snapshots/, keys/, forgotten/ and
/// deletions/ hashes to its own name (packs also sit in the directory of
/// their first two hex digits): nothing half-written ever appears under a
/// real name.
pub fn assert_objects_named_by_their_hash(repo: &Path) {
    for directory in [
        "data",
        "index",
        "snapshots",
        "keys",
        "forgotten",
        "deletions",
    ] {
        for path in walk(&repo.join(directory)) {
            if !path.is_file() {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .expect("utf-8 name");
            assert_eq!(
                file_hash(&path).to_hex().as_str(),
                name,
                "{} is not named by its hash",
                path.display()
            );
            if directory == "data" {
                let parent = path
                    .parent()
                    .and_then(|p| p.file_name())
                    .and_then(|n| n.to_str());
                assert_eq!(parent, Some(&name[..2]), "{}", path.display());
            }
        }
    }
}
