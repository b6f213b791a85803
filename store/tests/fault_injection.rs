//! A backend that fails or corrupts the Nth operation, driven through
//! backup, restore and verify: a failed write never leaves a repository
//! that verifies badly, a corrupt read never reaches a restored file, and
//! every fault is reported rather than papered over.

use cairn_chunker::ChunkerParams;
use cairn_store::backend::{Backend, Created, LocalBackend, ObjectInfo, ObjectKind};
use cairn_store::format::keys::{PublicKey, SigningKey, generate_signing_key, public_key_of};
use cairn_store::index::open_index;
use cairn_store::ops::backup::{BackupOptions, ComponentSource, backup};
use cairn_store::ops::restore::{
    NoProgress, RestoreOptions, Sources, execute_restore, plan_restore,
};
use cairn_store::ops::verify::{DataCheck, VerifyOptions, verify};
use cairn_store::{Id, Repository, Result, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    FailWrite(u64),
    FailRead(u64),
    CorruptRead(u64),
}

/// A local backend with one injected fault.
struct Faulty {
    inner: LocalBackend,
    fault: Fault,
    writes: AtomicU64,
    reads: AtomicU64,
}

impl Faulty {
    fn new(root: &Path, fault: Fault) -> Arc<Self> {
        Arc::new(Faulty {
            inner: LocalBackend::new(root),
            fault,
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    fn after_read(&self, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
        let number = self.reads.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            Fault::FailRead(at) if at == number => Err(StoreError::io(
                "injected read fault",
                std::io::Error::other("injected"),
            )),
            Fault::CorruptRead(at) if at == number && !bytes.is_empty() => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x40;
                Ok(bytes)
            }
            _ => Ok(bytes),
        }
    }
}

impl Backend for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        let number = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.fault == Fault::FailWrite(number) {
            return Err(StoreError::io(
                "injected write fault",
                std::io::Error::other("injected"),
            ));
        }
        self.inner.create(kind, name, bytes)
    }
    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        let bytes = self.inner.read(kind, name, limit)?;
        self.after_read(bytes)
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let bytes = self.inner.read_range(kind, name, offset, length)?;
        self.after_read(bytes)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

struct Scene {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    source: PathBuf,
    key: SigningKey,
    trusted: Vec<PublicKey>,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let source = dir.path().join("source");
    for index in 0..6u64 {
        let path = source.join(format!("dir{}/file{index}.bin", index % 2));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, noise(index, 150_000 + index as usize * 10_000)).unwrap();
    }
    let key = generate_signing_key().unwrap();
    let public = public_key_of(&key);
    Repository::init(
        Arc::new(LocalBackend::new(&repo)),
        ChunkerParams::DEFAULT,
        3,
        public,
        None,
    )
    .unwrap();
    Scene {
        repo,
        source,
        key,
        trusted: vec![public],
        _dir: dir,
    }
}

fn run_backup(scene: &Scene, backend: Arc<dyn Backend>) -> Result<Id> {
    let repository = Repository::open(backend)?;
    let index = open_index(&repository, None, &[public_key_of(&scene.key)])?.index;
    let options = BackupOptions {
        components: vec![ComponentSource::new("data", &scene.source)],
        ..BackupOptions::default()
    };
    Ok(backup(&repository, index.as_ref(), &scene.key, &options)?.snapshot)
}

fn clean_verify(scene: &Scene, data: DataCheck) -> bool {
    let repository = Repository::open(Arc::new(LocalBackend::new(&scene.repo))).unwrap();
    let options = VerifyOptions {
        data,
        ..VerifyOptions::default()
    };
    verify(&repository, &scene.trusted, options, &NoProgress)
        .unwrap()
        .is_clean()
}

#[test]
fn a_backup_whose_nth_write_fails_leaves_a_repository_that_verifies() {
    // Count the writes of a whole backup, then fail each one in turn.
    let counting = scene();
    let counter = Faulty::new(&counting.repo, Fault::None);
    run_backup(&counting, counter.clone()).unwrap();
    let writes = counter.writes.load(Ordering::SeqCst);
    assert!(writes >= 4, "packs, index file and manifest: {writes}");

    for at in 0..writes {
        let scene = scene();
        let failed = run_backup(&scene, Faulty::new(&scene.repo, Fault::FailWrite(at)));
        assert!(
            failed.is_err(),
            "write {at} of {writes} failed but the backup said it succeeded"
        );
        assert!(
            clean_verify(&scene, DataCheck::All),
            "after failing write {at}"
        );
        // The next backup, with no fault, completes and is whole.
        run_backup(&scene, Arc::new(LocalBackend::new(&scene.repo))).unwrap();
        assert!(
            clean_verify(&scene, DataCheck::All),
            "after the retry of write {at}"
        );
    }
}

#[test]
fn a_corrupt_or_failed_read_during_restore_never_reaches_a_restored_file() {
    let scene = scene();
    let snapshot = run_backup(&scene, Arc::new(LocalBackend::new(&scene.repo))).unwrap();
    let count_reads = |fault: Fault| -> (u64, usize) {
        let backend = Faulty::new(&scene.repo, fault);
        let target = tempfile::tempdir().unwrap();
        // An error anywhere (config, index, manifest, trees) counts as the
        // fault being noticed; so does a file that failed.
        let failures = (|| -> Result<usize> {
            let repository = Repository::open(backend.clone())?;
            let index = open_index(&repository, None, &[public_key_of(&scene.key)])?.index;
            let body = repository.read_manifest(&snapshot)?.body_unverified()?;
            let options = RestoreOptions {
                target: target.path().to_path_buf(),
                ..RestoreOptions::default()
            };
            let plan = plan_restore(
                &repository,
                index.as_ref(),
                &Sources::new(&[]),
                snapshot,
                &body,
                &options,
            )?;
            let missing: usize = plan
                .components
                .iter()
                .map(|c| c.unreadable.len() + c.missing_chunks.len())
                .sum();
            let outcome = execute_restore(
                &repository,
                index.as_ref(),
                &Sources::new(&[]),
                &plan,
                None,
                &NoProgress,
            )?;
            // A fault the restore recovered from by reading again still has
            // to be reported.
            Ok(outcome.failures.len() + missing + outcome.main_failures as usize)
        })()
        .unwrap_or(usize::MAX);
        // Whatever happened, every file present is exactly the source's.
        for entry in walk(target.path()) {
            if entry.is_file() {
                let relative = entry.strip_prefix(target.path().join("data")).unwrap();
                assert_eq!(
                    std::fs::read(&entry).unwrap(),
                    std::fs::read(scene.source.join(relative)).unwrap(),
                    "{} differs from the source",
                    relative.display()
                );
            }
        }
        (backend.reads.load(Ordering::SeqCst), failures)
    };
    let (reads, failures) = count_reads(Fault::None);
    assert_eq!(failures, 0);
    for at in 0..reads {
        let (_, corrupt) = count_reads(Fault::CorruptRead(at));
        assert!(
            corrupt > 0,
            "corrupting read {at} of {reads} went unnoticed"
        );
        let (_, failed) = count_reads(Fault::FailRead(at));
        assert!(failed > 0, "failing read {at} of {reads} went unnoticed");
    }
}

#[test]
fn a_corrupt_read_during_verify_is_reported_as_damage() {
    let scene = scene();
    run_backup(&scene, Arc::new(LocalBackend::new(&scene.repo))).unwrap();
    let counter = Faulty::new(&scene.repo, Fault::None);
    let repository = Repository::open(counter.clone()).unwrap();
    let options = VerifyOptions {
        data: DataCheck::All,
        ..VerifyOptions::default()
    };
    assert!(
        verify(&repository, &scene.trusted, options.clone(), &NoProgress)
            .unwrap()
            .is_clean()
    );
    let reads = counter.reads.load(Ordering::SeqCst);
    for at in 0..reads {
        for fault in [Fault::CorruptRead(at), Fault::FailRead(at)] {
            // An error (the config read failing, say) or a finding: never a
            // clean report.
            let report = Repository::open(Faulty::new(&scene.repo, fault)).and_then(|repository| {
                verify(&repository, &scene.trusted, options.clone(), &NoProgress)
            });
            if let Ok(report) = report {
                assert!(
                    !report.is_clean(),
                    "fault on read {at} of {reads} went unnoticed"
                );
            }
        }
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}
