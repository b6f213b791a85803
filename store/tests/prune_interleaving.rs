//! A prune interleaved with a running backup at exact moments, through a
//! backend that runs a hook just before a chosen call (FORMAT.md 12.7): a
//! mark that lands while a backup runs makes it copy what it reused; a
//! deletion that lands while a backup runs makes it fail and write nothing;
//! a mark that lands after a backup's check is revived, not carried out; a
//! backup that finishes as a prune starts is seen by it; a mark nobody
//! trusts is never acted on but still avoided; and the live set keeps every
//! one of thousands of live chunks. Beyond never losing a blob, the space
//! a forget frees comes back: packs whose blobs were copied elsewhere are
//! deleted, and a backup writing packs with the same bytes (so the same
//! names) as marked ones still completes.

#[path = "../../tests/common/rewrites.rs"]
mod rewrites;

use cairn_chunker::ChunkerParams;
use cairn_store::backend::{Backend, Created, LocalBackend, ObjectInfo, ObjectKind};
use cairn_store::format::keys::{PublicKey, SigningKey, generate_signing_key, public_key_of};
use cairn_store::format::pack::BlobKind;
use cairn_store::format::records::{
    DELETION_DOMAIN, DeletionMark, MarkReason, MarkedPack, SignedRecord,
};
use cairn_store::index::{MemoryIndex, open_index};
use cairn_store::ops::backup::{BackupOptions, BackupOutcome, ComponentSource, backup};
use cairn_store::ops::common::blob_writer::BlobWriter;
use cairn_store::ops::common::now_rfc3339;
use cairn_store::ops::forget::{ForgetOptions, forget};
use cairn_store::ops::prune::{MaxUnused, PackUse, PruneOptions, PruneOutcome, prune};
use cairn_store::ops::restore::{
    NoProgress, RestoreOptions, Sources, execute_restore, plan_restore,
};
use cairn_store::ops::verify::{DataCheck, VerifyOptions, verify};
use cairn_store::ops::visit_blobs;
use cairn_store::repository::{marked_packs, read_marks};
use cairn_store::{Id, Repository, Result, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A backend call a hook can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    List(ObjectKind),
    Create(ObjectKind),
}

type Hook = Box<dyn FnOnce() + Send>;

/// A local backend that runs a hook once, just before the `nth` (from 1)
/// call of one kind, then lets the call through: what the hook wrote or
/// deleted is what that call sees.
struct Hooked {
    inner: Arc<dyn Backend>,
    at: Call,
    nth: u64,
    calls: AtomicU64,
    hook: Mutex<Option<Hook>>,
}

impl Hooked {
    fn new(root: &Path, at: Call, nth: u64, hook: Hook) -> Arc<Self> {
        Self::over(Arc::new(LocalBackend::new(root)), at, nth, hook)
    }

    /// The same over another backend (a second hook).
    fn over(inner: Arc<dyn Backend>, at: Call, nth: u64, hook: Hook) -> Arc<Self> {
        Arc::new(Hooked {
            inner,
            at,
            nth,
            calls: AtomicU64::new(0),
            hook: Mutex::new(Some(hook)),
        })
    }

    fn before(&self, call: Call) {
        if call != self.at || self.calls.fetch_add(1, Ordering::SeqCst) + 1 != self.nth {
            return;
        }
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn fired(&self) -> bool {
        self.hook.lock().unwrap().is_none()
    }
}

impl Backend for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        self.before(Call::Create(kind));
        self.inner.create(kind, name, bytes)
    }
    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        self.inner.read(kind, name, limit)
    }
    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.before(Call::List(kind));
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

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A prune with grace 0 (every pack is old enough, every mark is due) that
/// repacks down to no unused space, its index opened just before, as the
/// command line does.
fn prune_through(
    backend: Arc<dyn Backend>,
    key: &SigningKey,
    trusted: &[PublicKey],
) -> Result<PruneOutcome> {
    prune_with_grace(backend, key, trusted, Duration::ZERO)
}

/// The same with grace `grace`.
fn prune_with_grace(
    backend: Arc<dyn Backend>,
    key: &SigningKey,
    trusted: &[PublicKey],
    grace: Duration,
) -> Result<PruneOutcome> {
    let repository = Repository::open(backend)?;
    let index = open_index(&repository, None, trusted)?.index;
    let options = PruneOptions {
        grace,
        max_unused: MaxUnused::Percent(0.0),
        dry_run: false,
    };
    prune(
        &repository,
        index.as_ref(),
        key,
        trusted,
        &options,
        &NoProgress,
    )
}

/// The same through its own plain backend.
fn prune_now(repo: &Path, key: &SigningKey, trusted: &[PublicKey]) -> PruneOutcome {
    prune_through(Arc::new(LocalBackend::new(repo)), key, trusted).unwrap()
}

/// A backup of `components` (name, path), with a fresh in-memory index
/// opened through the same backend.
fn run_backup(
    backend: Arc<dyn Backend>,
    key: &SigningKey,
    components: &[(&str, &Path)],
) -> Result<BackupOutcome> {
    let repository = Repository::open(backend)?;
    let index = open_index(&repository, None, &[public_key_of(key)])?.index;
    let options = BackupOptions {
        components: components
            .iter()
            .map(|(name, path)| ComponentSource::new(*name, *path))
            .collect(),
        ..BackupOptions::default()
    };
    backup(&repository, index.as_ref(), key, &options)
}

fn ids(packs: &[PackUse]) -> HashSet<Id> {
    packs.iter().map(|pack| pack.id).collect()
}

struct Scene {
    dir: tempfile::TempDir,
    repo: PathBuf,
    /// The files X every scenario backs up.
    source: PathBuf,
    /// Another file, E, backed up beside X as a second component, whose
    /// blobs are dead once that snapshot is forgotten.
    extra: PathBuf,
    key: SigningKey,
    trusted: Vec<PublicKey>,
}

fn scene(chunker: ChunkerParams) -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let source = dir.path().join("x");
    for index in 0..6u64 {
        write(
            &source.join(format!("dir{}/file{index}.bin", index % 2)),
            &noise(index, 120_000 + index as usize * 20_000),
        );
    }
    write(&source.join("notes.txt"), b"a small file\n");
    let extra = dir.path().join("e");
    write(&extra.join("extra.bin"), &noise(50, 100_000));
    let key = generate_signing_key().unwrap();
    let public = public_key_of(&key);
    Repository::init(Arc::new(LocalBackend::new(&repo)), chunker, 3, public, None).unwrap();
    Scene {
        dir,
        repo,
        source,
        extra,
        key,
        trusted: vec![public],
    }
}

impl Scene {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn open(&self) -> Repository {
        Repository::open(Arc::new(LocalBackend::new(&self.repo))).unwrap()
    }

    /// X as component `data`.
    fn x(&self) -> [(&'static str, &Path); 1] {
        [("data", self.source.as_path())]
    }

    /// X as component `data` and E as component `extra`, each kept in data
    /// packs of its own (their trees share one); a pack's nonce keeps a
    /// later backup of X alone from writing a pack of the same name.
    fn x_and_extra(&self) -> [(&'static str, &Path); 2] {
        [
            ("data", self.source.as_path()),
            ("extra", self.extra.as_path()),
        ]
    }

    fn backup_through(
        &self,
        backend: Arc<dyn Backend>,
        components: &[(&str, &Path)],
    ) -> Result<BackupOutcome> {
        run_backup(backend, &self.key, components)
    }

    fn backup(&self, components: &[(&str, &Path)]) -> BackupOutcome {
        self.backup_through(Arc::new(LocalBackend::new(&self.repo)), components)
            .unwrap()
    }

    fn forget(&self, snapshot: Id) {
        let options = ForgetOptions {
            explicit: vec![snapshot.to_hex()],
            ..ForgetOptions::default()
        };
        let outcome = forget(&self.open(), &self.key, &self.trusted, &options).unwrap();
        assert_eq!(outcome.forgotten.len(), 1);
    }

    fn prune(&self) -> PruneOutcome {
        prune_now(&self.repo, &self.key, &self.trusted)
    }

    /// A hook that runs `runs` prunes in a row, and where their outcomes go.
    fn pruner(&self, runs: usize) -> (Hook, Arc<Mutex<Vec<PruneOutcome>>>) {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (repo, key, trusted) = (self.repo.clone(), self.key.clone(), self.trusted.clone());
        let sink = outcomes.clone();
        let hook: Hook = Box::new(move || {
            for _ in 0..runs {
                let outcome = prune_now(&repo, &key, &trusted);
                sink.lock().unwrap().push(outcome);
            }
        });
        (hook, outcomes)
    }

    fn packs(&self) -> HashSet<Id> {
        self.open().list_packs().unwrap().into_keys().collect()
    }

    fn snapshots(&self) -> Vec<Id> {
        self.open().list_ids(ObjectKind::Snapshot).unwrap()
    }

    /// Packs named by any readable mark, whoever signed it.
    fn marked(&self) -> HashSet<Id> {
        let (marks, unreadable) = read_marks(&self.open(), &self.trusted).unwrap();
        assert!(unreadable.is_empty(), "{unreadable:?}");
        marked_packs(&marks)
    }

    /// Every blob, with the packs that exist and that an index file lists
    /// it in.
    fn copies(&self) -> HashMap<Id, HashSet<Id>> {
        let repository = self.open();
        let present = self.packs();
        let mut copies: HashMap<Id, HashSet<Id>> = HashMap::new();
        for file in repository.list_ids(ObjectKind::Index).unwrap() {
            for pack in repository.read_index_file(&file).unwrap().packs {
                if !present.contains(&pack.id) {
                    continue;
                }
                for blob in pack.blobs {
                    copies.entry(blob.id).or_default().insert(pack.id);
                }
            }
        }
        copies
    }

    /// Every tree and chunk a snapshot reaches.
    fn blobs_of(&self, snapshot: Id) -> HashSet<Id> {
        let repository = self.open();
        let index = open_index(&repository, None, &self.trusted).unwrap().index;
        let body = repository
            .read_manifest(&snapshot)
            .unwrap()
            .verified_body(repository.id(), &self.trusted, "snapshot")
            .unwrap();
        let mut blobs = HashSet::new();
        let mut seen = HashSet::new();
        visit_blobs(
            &repository,
            index.as_ref(),
            body.components.iter().map(|component| component.tree),
            &mut seen,
            &mut |_, id| {
                blobs.insert(*id);
                Ok(())
            },
        )
        .unwrap();
        blobs
    }

    fn assert_clean(&self, context: &str) {
        let options = VerifyOptions {
            data: DataCheck::All,
            ..VerifyOptions::default()
        };
        let report = verify(&self.open(), &self.trusted, options, &NoProgress).unwrap();
        assert!(
            report.is_clean(),
            "{context}: verify found {:#?}",
            report.findings
        );
    }

    /// Restores `snapshot` into a new directory and compares each of
    /// `components` with its source, file by file and byte by byte.
    fn assert_restores(&self, snapshot: Id, components: &[(&str, &Path)]) {
        let repository = self.open();
        let index = open_index(&repository, None, &self.trusted).unwrap().index;
        let body = repository
            .read_manifest(&snapshot)
            .unwrap()
            .verified_body(repository.id(), &self.trusted, "snapshot")
            .unwrap();
        let target = tempfile::tempdir_in(self.dir.path()).unwrap();
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
        )
        .unwrap();
        for component in &plan.components {
            assert!(
                component.unreadable.is_empty(),
                "{:?}",
                component.unreadable
            );
            assert!(
                component.missing_chunks.is_empty(),
                "{:?}",
                component.missing_chunks
            );
        }
        let outcome = execute_restore(
            &repository,
            index.as_ref(),
            &Sources::new(&[]),
            &plan,
            None,
            &NoProgress,
        )
        .unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        for (name, source) in components {
            assert_eq!(files(&target.path().join(name)), files(source), "{name}");
        }
    }
}

/// Every file under `root`, by relative path, with its contents.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(directory) = stack.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(!out.is_empty(), "nothing under {}", root.display());
    out
}

/// Snapshot A of X and E, forgotten: its packs hold only dead blobs, every
/// blob of X among them. Returns them.
fn forgotten_backup(scene: &Scene) -> HashSet<Id> {
    let a = scene.backup(&scene.x_and_extra());
    let packs = scene.packs();
    assert!(packs.len() >= 2, "a data pack and a tree pack: {packs:?}");
    scene.forget(a.snapshot);
    assert!(scene.snapshots().is_empty());
    packs
}

/// Scenario 1 up to B's snapshot: a prune (grace 0) marks A's packs just
/// before B's check before its manifest. Returns A's packs and B.
fn mark_during_backup(scene: &Scene) -> (HashSet<Id>, BackupOutcome) {
    let a_packs = forgotten_backup(scene);
    let (hook, prunes) = scene.pruner(1);
    let backend = Hooked::new(&scene.repo, Call::List(ObjectKind::Deletion), 2, hook);
    let b = scene
        .backup_through(backend.clone(), &scene.x())
        .expect("a backup that sees a mark before its manifest copies and succeeds");
    assert!(backend.fired(), "B never listed marks a second time");
    let prunes = prunes.lock().unwrap();
    let first = &prunes[0];
    assert_eq!(first.plan.snapshots, 0, "B's manifest cannot exist yet");
    assert_eq!(ids(&first.plan.mark_unused), a_packs);
    assert!(first.mark_written.is_some());
    assert_eq!(scene.marked(), a_packs);
    assert_eq!(scene.snapshots(), vec![b.snapshot]);

    // B copied every blob it needs out of the marked packs.
    let copies = scene.copies();
    let blobs = scene.blobs_of(b.snapshot);
    for blob in &blobs {
        let elsewhere = copies
            .get(blob)
            .is_some_and(|packs| packs.iter().any(|pack| !a_packs.contains(pack)));
        assert!(elsewhere, "B's blob {blob} is only in marked packs");
    }
    assert_eq!(
        b.written.new_blobs,
        blobs.len() as u64,
        "B first reused everything from A's packs, then copied it all"
    );
    (a_packs, b)
}

#[test]
fn a_mark_landing_while_a_backup_runs_makes_it_copy_what_it_reused() {
    let scene = scene(ChunkerParams::DEFAULT);
    let (a_packs, b) = mark_during_backup(&scene);

    let second = scene.prune();
    assert_eq!(second.plan.snapshots, 1);
    assert_eq!(second.plan.due_marks.len(), 1);
    assert_eq!(second.marks_removed, 1);
    let deleted = ids(&second.plan.delete);
    assert_eq!(second.packs_deleted as usize, deleted.len());
    assert!(
        deleted.is_subset(&a_packs),
        "deleted {deleted:?}, but only A's packs {a_packs:?} were marked"
    );
    assert!(scene.packs().is_disjoint(&deleted));

    // Every blob of B still has a copy in a pack that exists.
    let copies = scene.copies();
    for blob in scene.blobs_of(b.snapshot) {
        assert!(copies.contains_key(&blob), "B lost blob {blob}");
    }
    scene.assert_clean("after the second prune");
    scene.assert_restores(b.snapshot, &scene.x());
}

/// Once B has copied its blobs out of A's marked packs, nothing needs those
/// packs any more: the prune after the grace period must delete them, or
/// the space they hold (a full second copy of B's data) never comes back.
#[test]
fn packs_a_backup_copied_its_data_out_of_are_deleted_by_the_next_prune() {
    let scene = scene(ChunkerParams::DEFAULT);
    let (a_packs, b) = mark_during_backup(&scene);

    let second = scene.prune();
    scene.assert_clean("after the second prune");
    scene.assert_restores(b.snapshot, &scene.x());
    assert_eq!(
        ids(&second.plan.delete),
        a_packs,
        "A's marked packs were not deleted; revived instead: {:?}",
        ids(&second.plan.revived)
    );
    assert!(scene.packs().is_disjoint(&a_packs));
}

#[test]
fn a_deletion_landing_while_a_backup_runs_fails_it_and_the_rerun_succeeds() {
    let scene = scene(ChunkerParams::DEFAULT);
    let a_packs = forgotten_backup(&scene);
    // Both phases before B's check: B outlasted the grace period.
    let (hook, prunes) = scene.pruner(2);
    let backend = Hooked::new(&scene.repo, Call::List(ObjectKind::Deletion), 2, hook);
    let failed = scene.backup_through(backend.clone(), &scene.x());
    assert!(backend.fired());
    match failed {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains("run the backup again"),
            "unhelpful message: {message}"
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    {
        let prunes = prunes.lock().unwrap();
        assert_eq!(ids(&prunes[0].plan.mark_unused), a_packs);
        assert_eq!(ids(&prunes[1].plan.delete), a_packs);
        assert_eq!(prunes[1].packs_deleted as usize, a_packs.len());
    }
    assert!(scene.snapshots().is_empty(), "no snapshot may be written");
    assert!(scene.packs().is_disjoint(&a_packs));
    assert!(scene.marked().is_empty());
    scene.assert_clean("after the failed backup");

    let rerun = scene.backup(&scene.x());
    assert_eq!(rerun.written.reused_blobs, 0, "nothing is left to reuse");
    assert_eq!(scene.snapshots(), vec![rerun.snapshot]);
    scene.assert_clean("after the rerun");
    scene.assert_restores(rerun.snapshot, &scene.x());
}

#[test]
fn a_mark_landing_after_a_backups_check_is_revived_not_carried_out() {
    let scene = scene(ChunkerParams::DEFAULT);
    let a_packs = forgotten_backup(&scene);
    // The mark lands between B's check and its manifest (B3: closer
    // together than the grace period), so B relies on the marked packs.
    let (hook, prunes) = scene.pruner(1);
    let backend = Hooked::new(&scene.repo, Call::Create(ObjectKind::Snapshot), 1, hook);
    let b = scene.backup_through(backend.clone(), &scene.x()).unwrap();
    assert!(backend.fired());
    assert_eq!(ids(&prunes.lock().unwrap()[0].plan.mark_unused), a_packs);
    assert_eq!(scene.marked(), a_packs);
    assert_eq!(b.written.new_blobs, 0, "B reused everything from A's packs");
    let copies = scene.copies();
    let mut needed = HashSet::new();
    for blob in scene.blobs_of(b.snapshot) {
        assert!(copies[&blob].is_subset(&a_packs));
        needed.extend(copies[&blob].iter().copied());
    }
    // A kept each component's data in packs of its own: E's pack holds
    // nothing B needs.
    let e_only: HashSet<Id> = a_packs.difference(&needed).copied().collect();
    assert!(!e_only.is_empty(), "E's data in a pack of its own");

    let second = scene.prune();
    assert_eq!(second.plan.due_marks.len(), 1);
    assert_eq!(
        ids(&second.plan.revived),
        needed,
        "B needs these packs again"
    );
    assert_eq!(
        ids(&second.plan.delete),
        e_only,
        "the mark is carried out for the rest"
    );
    assert_eq!(second.packs_deleted, e_only.len() as u64);
    assert_eq!(second.marks_removed, 1);
    assert!(
        second.mark_written.is_none(),
        "live packs are not marked again"
    );
    assert!(needed.is_subset(&scene.packs()));
    assert!(scene.packs().is_disjoint(&e_only));
    assert!(scene.marked().is_empty());
    scene.assert_clean("after the revival");

    // The revived packs hold B's blobs (and E's dead trees): never marked
    // unused, at most repacked (B's blobs copied first).
    let third = scene.prune();
    assert!(third.plan.delete.is_empty());
    assert!(ids(&third.plan.mark_unused).is_disjoint(&needed));
    assert!(ids(&third.plan.repack).is_subset(&needed));
    assert!(needed.is_subset(&scene.packs()));
    scene.assert_clean("after a third prune");
    scene.assert_restores(b.snapshot, &scene.x());
}

/// The other way round: a backup finishes after the prune opened its index
/// but before it lists marks and snapshots. The prune sees the new manifest
/// and must find its blobs in the index files it lists after it (12.7 step
/// 1), not report them missing.
#[test]
fn a_backup_finishing_as_a_prune_starts_is_live_not_damage() {
    let scene = scene(ChunkerParams::DEFAULT);
    let a_packs = forgotten_backup(&scene);
    let source = scene.path("n");
    write(&source.join("new.bin"), &noise(60, 300_000));
    let done = Arc::new(Mutex::new(None));
    let hook: Hook = {
        let (repo, key, source, done) = (
            scene.repo.clone(),
            scene.key.clone(),
            source.clone(),
            done.clone(),
        );
        Box::new(move || {
            let backend = Arc::new(LocalBackend::new(&repo));
            let outcome = run_backup(backend, &key, &[("data", source.as_path())]).unwrap();
            *done.lock().unwrap() = Some(outcome.snapshot);
        })
    };
    let backend = Hooked::new(&scene.repo, Call::List(ObjectKind::Deletion), 1, hook);
    let pruned = prune_through(backend.clone(), &scene.key, &scene.trusted);
    assert!(backend.fired());
    let b = done.lock().unwrap().expect("the backup ran");
    let pruned = pruned.expect("the prune finds the new snapshot's blobs");
    assert_eq!(pruned.plan.snapshots, 1);
    assert_eq!(ids(&pruned.plan.mark_unused), a_packs);
    scene.assert_clean("after the prune");
    scene.assert_restores(b, &[("data", source.as_path())]);
}

/// One small file: a single chunk and a single tree, so every backup of it
/// writes a data pack and a tree pack with the same bytes, and so the same
/// names, as the last one did.
fn tiny(scene: &Scene) -> PathBuf {
    let source = scene.path("tiny");
    write(&source.join("settings.toml"), b"retries = 3\n");
    source
}

/// The common case after `forget --prune`: the next backup of the same
/// small directory, within the grace period. It may not reuse the marked
/// packs (B1), so it stores the same chunk and tree again, into packs whose
/// names are those of the marked packs (`create` finds them there).
#[test]
fn a_backup_that_writes_a_marked_pack_again_byte_for_byte_completes() {
    let scene = scene(ChunkerParams::DEFAULT);
    let source = tiny(&scene);
    let components = [("data", source.as_path())];
    let a = scene.backup(&components);
    let a_packs = scene.packs();
    scene.forget(a.snapshot);
    let first = scene.prune();
    assert_eq!(ids(&first.plan.mark_unused), a_packs);

    let b = scene
        .backup_through(Arc::new(LocalBackend::new(&scene.repo)), &components)
        .expect("a backup that starts after a mark stores its data again and succeeds");
    assert_eq!(scene.snapshots(), vec![b.snapshot]);
    // The prune that carries out the mark leaves B whole.
    scene.prune();
    let copies = scene.copies();
    for blob in scene.blobs_of(b.snapshot) {
        assert!(copies.contains_key(&blob), "B lost blob {blob}");
    }
    scene.assert_clean("after the mark was carried out");
    scene.assert_restores(b.snapshot, &components);
}

/// As the first scenario, with the tiny source: the packs B copies its
/// blobs into have the same bytes as the marked packs it copies them from.
#[test]
fn a_backup_whose_copies_are_the_marked_packs_byte_for_byte_completes() {
    let scene = scene(ChunkerParams::DEFAULT);
    let source = tiny(&scene);
    let components = [("data", source.as_path())];
    let a = scene.backup(&components);
    let a_packs = scene.packs();
    scene.forget(a.snapshot);
    let (hook, prunes) = scene.pruner(1);
    let backend = Hooked::new(&scene.repo, Call::List(ObjectKind::Deletion), 2, hook);
    let b = scene
        .backup_through(backend.clone(), &components)
        .expect("a backup that sees a mark before its manifest copies and succeeds");
    assert!(backend.fired());
    assert_eq!(ids(&prunes.lock().unwrap()[0].plan.mark_unused), a_packs);
    scene.prune();
    let copies = scene.copies();
    for blob in scene.blobs_of(b.snapshot) {
        assert!(copies.contains_key(&blob), "B lost blob {blob}");
    }
    scene.assert_clean("after the mark was carried out");
    scene.assert_restores(b.snapshot, &components);
}

#[test]
fn an_untrusted_mark_is_never_acted_on_but_still_avoided() {
    let scene = scene(ChunkerParams::DEFAULT);
    let kept = scene.backup(&scene.x_and_extra());
    let kept_packs = scene.packs();
    let other = scene.path("y");
    write(&other.join("y.bin"), &noise(77, 300_000));
    let dead = scene.backup(&[("data", other.as_path())]);
    let dead_packs: HashSet<Id> = scene.packs().difference(&kept_packs).copied().collect();
    assert!(!dead_packs.is_empty());
    scene.forget(dead.snapshot);

    // A stranger's mark, due at once, naming live packs and dead ones.
    let repository = scene.open();
    let sizes = repository.list_packs().unwrap();
    let stranger = generate_signing_key().unwrap();
    let named: HashSet<Id> = kept_packs.union(&dead_packs).copied().collect();
    let mut packs: Vec<MarkedPack> = named
        .iter()
        .map(|id| MarkedPack {
            id: *id,
            size: sizes[id],
            reason: MarkReason::Unused,
        })
        .collect();
    packs.sort_by_key(|pack| pack.id);
    let mark = DeletionMark::new(now_rfc3339(), 0, "elsewhere".into(), packs);
    let record = SignedRecord::sign(&mark, DELETION_DOMAIN, repository.id(), &stranger);
    let mark_id = repository
        .write_object(ObjectKind::Deletion, &record.encode())
        .unwrap();

    // One run carries out every due trusted mark; this one it ignores.
    let first = scene.prune();
    assert!(
        first
            .plan
            .ignored_marks
            .iter()
            .any(|(id, _)| *id == mark_id),
        "{:?}",
        first.plan.ignored_marks
    );
    assert!(!first.plan.due_marks.contains(&mark_id));
    assert!(first.plan.delete.is_empty(), "{:?}", first.plan.delete);
    assert_eq!(first.packs_deleted, 0);
    assert!(named.is_subset(&scene.packs()));

    // Whatever a second run deletes, a trusted mark of the first named it.
    let trusted_marked: HashSet<Id> = ids(&first.plan.mark_unused)
        .union(&ids(&first.plan.repack))
        .copied()
        .collect();
    let second = scene.prune();
    assert!(
        second
            .plan
            .ignored_marks
            .iter()
            .any(|(id, _)| *id == mark_id)
    );
    assert!(ids(&second.plan.delete).is_subset(&trusted_marked));
    assert!(kept_packs.is_subset(&scene.packs()));
    assert!(
        scene
            .open()
            .list_ids(ObjectKind::Deletion)
            .unwrap()
            .contains(&mark_id),
        "a prune never removes a mark it does not trust"
    );

    // A backup neither deduplicates against the packs it names nor takes
    // unchanged files from its parent (whose chunks are only there). Its
    // `extra` differs, so its packs cannot have the same bytes as those.
    let extra = scene.path("e2");
    write(&extra.join("extra.bin"), &noise(51, 100_000));
    let again = scene.backup(&[("data", scene.source.as_path()), ("extra", extra.as_path())]);
    assert_eq!(again.body.parent, Some(kept.snapshot));
    assert_eq!(again.unchanged_files, 0);
    let blobs = scene.blobs_of(again.snapshot);
    assert_eq!(again.written.reused_blobs, 0);
    assert_eq!(again.written.new_blobs, blobs.len() as u64);
    let copies = scene.copies();
    for blob in &blobs {
        assert!(
            copies[blob].iter().any(|pack| !named.contains(pack)),
            "blob {blob} is only in packs the stranger's mark names"
        );
    }
    scene.assert_clean("with an untrusted mark");
    scene.assert_restores(kept.snapshot, &scene.x_and_extra());
    scene.assert_restores(
        again.snapshot,
        &[("data", scene.source.as_path()), ("extra", extra.as_path())],
    );
}

/// Three snapshots with small chunks: M (shared + gone) and D (dead) are
/// forgotten, L (shared + own) is kept, so M's data pack holds thousands of
/// live chunks among dead ones. Returns M's, L's and D's packs.
fn thousands_of_chunks(scene: &Scene) -> [HashSet<Id>; 3] {
    let shared = noise(100, 4 << 20);
    let m_source = scene.path("m");
    write(&m_source.join("shared.bin"), &shared);
    write(&m_source.join("gone.bin"), &noise(101, 512 << 10));
    let l_source = scene.path("l");
    write(&l_source.join("shared.bin"), &shared);
    write(&l_source.join("own.bin"), &noise(102, 1 << 20));
    let d_source = scene.path("d");
    write(&d_source.join("dead.bin"), &noise(103, 1 << 20));

    let m = scene.backup(&[("data", m_source.as_path())]);
    let m_packs = scene.packs();
    let l = scene.backup(&[("data", l_source.as_path())]);
    let l_packs: HashSet<Id> = scene.packs().difference(&m_packs).copied().collect();
    let d = scene.backup(&[("data", d_source.as_path())]);
    let before_d: HashSet<Id> = m_packs.union(&l_packs).copied().collect();
    let d_packs: HashSet<Id> = scene.packs().difference(&before_d).copied().collect();
    assert!(!l_packs.is_empty() && !d_packs.is_empty());
    let live_chunks = l.body.components[0].stats.chunks;
    assert!(live_chunks >= 3000, "only {live_chunks} live chunks");
    scene.forget(m.snapshot);
    scene.forget(d.snapshot);
    [m_packs, l_packs, d_packs]
}

fn small_chunks() -> ChunkerParams {
    ChunkerParams::new(256, 1024, 4096).unwrap()
}

#[test]
fn prune_keeps_every_one_of_thousands_of_live_chunks() {
    let scene = scene(small_chunks());
    let [m_packs, l_packs, d_packs] = thousands_of_chunks(&scene);
    let l = scene.snapshots()[0];
    let live = scene.blobs_of(l);

    let first = scene.prune();
    let marked: HashSet<Id> = ids(&first.plan.mark_unused)
        .union(&ids(&first.plan.repack))
        .copied()
        .collect();
    assert!(
        marked.is_disjoint(&l_packs),
        "L's packs hold only live blobs"
    );
    assert!(d_packs.is_subset(&ids(&first.plan.mark_unused)));
    assert!(
        !first.plan.repack.is_empty(),
        "M's data pack is partly live"
    );
    assert!(ids(&first.plan.repack).is_subset(&m_packs));
    assert!(first.repacked.new_blobs > 0);
    scene.assert_clean("after marking and repacking");

    let second = scene.prune();
    let deleted = ids(&second.plan.delete);
    assert!(
        d_packs.is_subset(&deleted),
        "packs of only dead chunks must go"
    );
    assert!(deleted.is_subset(&marked));
    assert!(l_packs.is_subset(&scene.packs()));
    let copies = scene.copies();
    for blob in &live {
        assert!(copies.contains_key(blob), "live blob {blob} was lost");
    }
    scene.assert_clean("after deleting");
    scene.assert_restores(l, &[("data", scene.path("l").as_path())]);
}

/// A repacked pack's live blobs were copied before it was marked, so the
/// prune after the grace period must delete it (revive it only if a live
/// blob has no other copy), or repacking never gives any space back.
#[test]
fn a_repacked_pack_is_deleted_after_its_grace_period() {
    let scene = scene(small_chunks());
    let [m_packs, _, _] = thousands_of_chunks(&scene);
    let l = scene.snapshots()[0];

    let first = scene.prune();
    let repacked = ids(&first.plan.repack);
    assert!(!repacked.is_empty() && repacked.is_subset(&m_packs));
    let second = scene.prune();
    let third = scene.prune();
    scene.assert_clean("after three prunes");
    scene.assert_restores(l, &[("data", scene.path("l").as_path())]);
    assert!(
        repacked.is_subset(&ids(&second.plan.delete)),
        "repacked packs {repacked:?} not deleted; revived instead: {:?}",
        ids(&second.plan.revived)
    );
    assert_eq!(
        third.repacked.new_blobs, 0,
        "the third prune copied the same live blobs yet again"
    );
    // Forgetting M and D and pruning gives space back.
    assert!(
        third.plan.pack_bytes < first.plan.pack_bytes,
        "packs grew from {} to {} bytes",
        first.plan.pack_bytes,
        third.plan.pack_bytes
    );
}

/// A repack copies only live blobs that have no copy in a pack that stays:
/// here a pack holding a second copy of a live chunk next to a dead one is
/// repacked without writing anything, then deleted, and the snapshot still
/// restores.
#[test]
fn a_repack_does_not_copy_a_live_blob_that_another_pack_already_holds() {
    let scene = scene(ChunkerParams::DEFAULT);
    let snapshot = scene.backup(&scene.x()).snapshot;
    let repository = scene.open();
    let index = open_index(&repository, None, &scene.trusted).unwrap().index;
    let live_chunk = *scene
        .blobs_of(snapshot)
        .iter()
        .find(|id| {
            index
                .lookup(id)
                .unwrap()
                .is_some_and(|location| location.entry.kind == BlobKind::Data)
        })
        .expect("a data chunk");
    let raw = repository
        .read_blob(&index.lookup(&live_chunk).unwrap().unwrap())
        .unwrap();
    // A writer that knows nothing of the repository stores the live chunk
    // again, next to a chunk no snapshot needs, in a pack of their own.
    let blind = MemoryIndex::new();
    let writer = BlobWriter::new(&repository, &blind, HashMap::new(), Some(&scene.key));
    let dead = noise(777, 50_000);
    writer.add(BlobKind::Data, live_chunk, &raw).unwrap();
    writer.add(BlobKind::Data, Id::of(&dead), &dead).unwrap();
    writer.finish().unwrap();

    // As the CLI does: prune reads the index files itself and gives the
    // repack an empty cache, so only its own check can spare the copy.
    let options = PruneOptions {
        grace: Duration::ZERO,
        max_unused: MaxUnused::Percent(0.0),
        dry_run: false,
    };
    let empty = MemoryIndex::new();
    let marked = prune(
        &repository,
        &empty,
        &scene.key,
        &scene.trusted,
        &options,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(marked.plan.repack.len(), 1, "{:?}", marked.plan);
    assert_eq!(
        marked.repacked.new_blobs, 0,
        "the live chunk already had a copy in a pack that stays"
    );
    let deleted = scene.prune();
    assert_eq!(ids(&deleted.plan.delete), ids(&marked.plan.repack));
    assert!(deleted.plan.revived.is_empty());
    scene.assert_clean("after the repacked duplicate is deleted");
    scene.assert_restores(snapshot, &scene.x());
}

/// Where a prune run by a hook leaves its outcome.
type Sink = Arc<Mutex<Option<PruneOutcome>>>;

/// What [`Scene::backup_between_prunes`] saw: the backup, and the two
/// prunes that ran inside it.
struct BetweenPrunes {
    backup: BackupOutcome,
    marking: PruneOutcome,
    deleting: PruneOutcome,
}

impl BetweenPrunes {
    /// The first prune marked exactly `packs`, and the second deleted
    /// them, before the backup's manifest landed.
    fn assert_marked_then_deleted(&self, packs: &HashSet<Id>) {
        let marked = ids(&self.marking.plan.mark_unused);
        assert_eq!(&marked, packs, "marked by the first prune");
        let deleted = ids(&self.deleting.plan.delete);
        assert_eq!(&deleted, packs, "deleted before the backup's manifest");
    }

    /// The backup restores as its source was, and still does after the
    /// next prune, which sees its manifest and keeps what it needs.
    fn assert_whole(&self, scene: &Scene, components: &[(&str, &Path)]) {
        scene.assert_restores(self.backup.snapshot, components);
        scene.prune();
        scene.assert_clean("after a prune that sees the backup");
        scene.assert_restores(self.backup.snapshot, components);
    }
}

impl Scene {
    /// Night A: a vector-index file backed up as component `data`; then,
    /// once A's packs are older than `grace` (so a prune may mark them),
    /// the file rewritten in place in `percent` of its blocks. Returns A,
    /// A's packs, the file's directory and its new content.
    fn night_then_rewrite(
        &self,
        seed: u64,
        percent: u64,
        grace: Duration,
    ) -> (BackupOutcome, HashSet<Id>, PathBuf, Vec<u8>) {
        let source = self.path("v");
        let file = source.join("data_level0.bin");
        let mut content = rewrites::vector_index(seed);
        write(&file, &content);
        let a = self.backup(&[("data", source.as_path())]);
        let a_packs = self.packs();
        std::thread::sleep(grace + Duration::from_millis(100));
        rewrites::rewrite_in_place(&mut content, 2, percent);
        write(&file, &content);
        (a, a_packs, source, content)
    }

    /// Backs up `components` while two prunes with `grace` run inside the
    /// backup: just before its check before the manifest (B2), `forgotten`
    /// is forgotten and a prune marks what is dead; just before its
    /// manifest (within B3), once the mark is due, a prune that cannot see
    /// the manifest deletes the marked packs.
    fn backup_between_prunes(
        &self,
        components: &[(&str, &Path)],
        forgotten: &[Id],
        grace: Duration,
    ) -> BetweenPrunes {
        let prune_into = |sink: &Sink, wait: Duration, forget_first: Vec<String>| -> Hook {
            let (repo, key, trusted, sink) = (
                self.repo.clone(),
                self.key.clone(),
                self.trusted.clone(),
                sink.clone(),
            );
            Box::new(move || {
                std::thread::sleep(wait);
                if !forget_first.is_empty() {
                    let repository = Repository::open(Arc::new(LocalBackend::new(&repo))).unwrap();
                    let options = ForgetOptions {
                        explicit: forget_first,
                        ..ForgetOptions::default()
                    };
                    forget(&repository, &key, &trusted, &options).unwrap();
                }
                *sink.lock().unwrap() = Some(
                    prune_with_grace(Arc::new(LocalBackend::new(&repo)), &key, &trusted, grace)
                        .unwrap(),
                );
            })
        };
        let (marking, deleting) = (Sink::default(), Sink::default());
        let forgotten = forgotten.iter().map(Id::to_hex).collect();
        let mark = prune_into(&marking, Duration::ZERO, forgotten);
        let delete = prune_into(&deleting, grace + Duration::from_millis(100), Vec::new());
        let inner = Hooked::new(&self.repo, Call::List(ObjectKind::Deletion), 2, mark);
        let backend = Hooked::over(inner.clone(), Call::Create(ObjectKind::Snapshot), 1, delete);
        let backup = self.backup_through(backend.clone(), components).unwrap();
        assert!(inner.fired() && backend.fired());
        let taken = |sink: Sink| sink.lock().unwrap().take().unwrap();
        BetweenPrunes {
            backup,
            marking: taken(marking),
            deleting: taken(deleting),
        }
    }
}

/// A backup that patches a changed file against its parent's chunks relies
/// on the packs of those bases as on any blob it reuses (12.7, B2): when a
/// mark names them before its check, it copies the bases out, so a prune
/// that deletes them before its manifest lands (B3) leaves every delta
/// decodable. The parent snapshot is forgotten while the backup runs, so
/// nothing but the new deltas needs the bases.
#[test]
fn a_backup_whose_delta_bases_are_marked_before_its_check_copies_them_out() {
    const GRACE: Duration = Duration::from_secs(1);
    let scene = scene(ChunkerParams::DEFAULT);
    let (a, a_packs, source, _) = scene.night_then_rewrite(7, 45, GRACE);
    let components = [("data", source.as_path())];

    let run = scene.backup_between_prunes(&components, &[a.snapshot], GRACE);
    assert!(
        run.backup.written.delta_blobs > 0,
        "B stored deltas: {:?}",
        run.backup.written
    );
    run.assert_marked_then_deleted(&a_packs);

    run.assert_whole(&scene, &components);
}

/// The same for a delta a backup reuses rather than writes: the file, as
/// the night before patched it, is backed up under another component, so
/// each of its chunks is found stored, some as deltas whose bases lie in
/// an older pack. Those bases' packs are relied on too; marked before the
/// check, the bases are copied out, so a prune that deletes their packs
/// before the manifest lands leaves every reused delta decodable.
#[test]
fn a_backup_reusing_deltas_whose_bases_are_marked_before_its_check_copies_them_out() {
    const GRACE: Duration = Duration::from_secs(2);
    let scene = scene(ChunkerParams::DEFAULT);
    // Every block changes, so no chunk of A is reused as it is: the backup
    // below relies on A's packs only through the deltas' bases.
    let (a, a_packs, source, content) = scene.night_then_rewrite(9, 100, GRACE);
    let night = [("data", source.as_path())];
    let patched = scene.backup(&night);
    assert!(patched.written.delta_blobs > 0, "{:?}", patched.written);
    let patched_packs: HashSet<Id> = scene.packs().difference(&a_packs).copied().collect();
    let copy = scene.path("copy");
    write(&copy.join("data_level0.bin"), &content);
    let components = [("copy", copy.as_path())];

    // Both nights are forgotten before the check; the prune then marks
    // A's packs (the bases), not the younger ones of the deltas.
    let run = scene.backup_between_prunes(&components, &[a.snapshot, patched.snapshot], GRACE);
    assert_eq!(run.backup.written.delta_blobs, 0, "the deltas were reused");
    run.assert_marked_then_deleted(&a_packs);
    assert!(a_packs.is_disjoint(&patched_packs), "A's packs alone");

    run.assert_whole(&scene, &components);
}
