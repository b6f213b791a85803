//! Findings of the integrity review answered here (see main.rs): signed
//! objects name their repository and trust is kept per repository
//! (finding 3), parents come only from the writer's own key (finding 4),
//! and `latest` cannot be rolled back or hijacked silently (finding 8 a–c).

use crate::common::*;
use cairn_store::backend::{LocalBackend, ObjectKind};
use cairn_store::format::keys::SigningKey;
use cairn_store::format::manifest::{SignedManifest, SnapshotBody};
use cairn_store::{Id, Repository};
use serde_json::Value;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// `cairn --repo REPO ARGS...`
fn at<I, S>(workspace: &Workspace, repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> = vec!["--repo".into(), repo.into()];
    all.extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
    workspace.cairn(all)
}

/// Initialises a repository; returns its key file.
fn init(workspace: &Workspace, repo: &Path, extra: &[&str]) -> PathBuf {
    let mut args = extra.to_vec();
    args.extend(["--json", "init", "--plaintext"]);
    let made = at(workspace, repo, args).ok().json();
    PathBuf::from(made["key_file"].as_str().expect("key file"))
}

/// Two repositories, `a` and `b`, made by `init` with one key, trusted for
/// both; `b_init` goes before `b`'s path in its init (e.g. `--like`, so
/// `b` takes `a`'s chunking). Returns both paths and the key file.
fn two_repositories_one_key(workspace: &Workspace, b_init: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b) = (workspace.path("a"), workspace.path("b"));
    let key = init(workspace, &a, &[]);
    let mut args = vec![
        "--key-file",
        key.to_str().expect("utf-8 path"),
        "init",
        "--plaintext",
    ];
    args.extend(b_init);
    if !b_init.is_empty() {
        args.push(a.to_str().expect("utf-8 path"));
    }
    at(workspace, &b, args).ok();
    (a, b, key)
}

/// Backs up `sources` into `repo`; returns the snapshot id and the summary.
fn backup(workspace: &Workspace, repo: &Path, sources: &[&Path]) -> (String, Value) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("--json"), OsStr::new("backup")];
    args.extend(sources.iter().map(|source| source.as_os_str()));
    let summary = at(workspace, repo, args).ok().json();
    let id = summary["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    (id, summary)
}

fn open(repo: &Path) -> Repository {
    Repository::open(std::sync::Arc::new(LocalBackend::new(repo))).unwrap()
}

fn body_of(repo: &Path, snapshot: &str) -> SnapshotBody {
    open(repo)
        .read_manifest(&Id::from_hex(snapshot).unwrap())
        .unwrap()
        .body_unverified()
        .unwrap()
}

/// Stores `body` signed by `key` as a manifest of `repo`; returns its id.
fn plant_manifest(repo: &Path, body: &SnapshotBody, key: &SigningKey) -> String {
    let repository = open(repo);
    let manifest = SignedManifest::sign(body, repository.id(), key);
    repository
        .write_object(ObjectKind::Snapshot, &manifest.encode())
        .unwrap()
        .to_hex()
}

/// The same RFC 3339 time, `years` later.
fn years_later(time: &str, years: u32) -> String {
    let year: u32 = time[..4].parse().unwrap();
    format!("{}{}", year + years, &time[4..])
}

/// Every snapshot id `snapshots --json` lists.
fn listed(workspace: &Workspace, repo: &Path) -> (Value, String) {
    let run = at(workspace, repo, ["--json", "snapshots"]).ok();
    (run.json(), run.stderr)
}

/// `restore latest` into `target` with `extra` flags: the restored id and
/// stderr.
fn restore_latest(
    workspace: &Workspace,
    repo: &Path,
    target: &Path,
    extra: &[&str],
) -> (String, String) {
    let mut args = vec![
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = at(workspace, repo, args).ok();
    let id = run.json()["snapshot"]
        .as_str()
        .expect("restored snapshot")
        .to_string();
    (id, run.stderr)
}

fn mentions(findings: &[Value], id: &str) -> bool {
    findings
        .iter()
        .any(|finding| finding.to_string().contains(id))
}

#[test]
fn finding_3_forget_record_from_another_repository_is_refused() {
    let workspace = Workspace::new();
    // The same key serves both repositories, trusted for both.
    let (a, b, _key) = two_repositories_one_key(&workspace, &["--like"]);
    let source = workspace.path("data");
    write(&source.join("ledger.txt"), &noise(3, 40_000));
    let (in_a, _) = backup(&workspace, &a, &[&source]);
    at(
        &workspace,
        &a,
        [
            "copy",
            "--from",
            a.to_str().unwrap(),
            "--to",
            b.to_str().unwrap(),
        ],
    )
    .ok();
    let (before, _) = listed(&workspace, &b);
    let in_b: Vec<Value> = before["snapshots"].as_array().unwrap().clone();
    assert_eq!(in_b.len(), 1, "{before}");

    // A's owner forgets the snapshot in A; the attacker replays A's signed
    // forget record into B.
    at(&workspace, &a, ["forget", &in_a]).ok();
    let records: Vec<PathBuf> = walk(&a.join("forgotten"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(records.len(), 1);
    let record = records[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    fs::create_dir_all(b.join("forgotten")).unwrap();
    fs::copy(&records[0], b.join("forgotten").join(&record)).unwrap();

    // B's owner prunes as every night: nothing of B's is lost, and the
    // replayed record is reported by name.
    at(&workspace, &b, ["prune"]).ok();
    let (after, _) = listed(&workspace, &b);
    assert_eq!(
        after["snapshots"], before["snapshots"],
        "B lost a snapshot to A's forget record"
    );
    let target = workspace.path("out");
    restore_latest(&workspace, &b, &target, &[]);
    assert_same_tree(&source, &target.join("data"));
    let (_, report) = workspace_verify(&workspace, &b);
    assert!(
        mentions(findings(&report), &record),
        "verify does not name the replayed forget record {record}: {}",
        brief(&report)
    );
}

/// `verify --json` of `repo`: exit code and report.
fn workspace_verify(workspace: &Workspace, repo: &Path) -> (i32, Value) {
    let run = at(workspace, repo, ["--json", "verify"]);
    (run.code, run.json())
}

#[test]
fn finding_3_manifest_from_another_repository_never_becomes_latest() {
    let workspace = Workspace::new();
    let (a, b, _key) = two_repositories_one_key(&workspace, &[]);
    let (mine, theirs) = (workspace.path("mine/data"), workspace.path("theirs/data"));
    write(&mine.join("a.txt"), b"this repository's data");
    write(&theirs.join("b.txt"), b"another repository's data");
    let (in_a, _) = backup(&workspace, &a, &[&mine]);
    let (in_b, _) = backup(&workspace, &b, &[&theirs]);
    // The newer manifest of B, signed by a key A trusts, planted in A.
    fs::copy(
        b.join("snapshots").join(&in_b),
        a.join("snapshots").join(&in_b),
    )
    .unwrap();

    let target = workspace.path("out");
    let (restored, warnings) = restore_latest(&workspace, &a, &target, &[]);
    assert_eq!(
        restored, in_a,
        "another repository's manifest became latest"
    );
    assert_same_tree(&mine, &target.join("data"));
    assert!(
        warnings.contains(&in_b),
        "the planted manifest is not named: {warnings}"
    );
    let (listing, _) = listed(&workspace, &a);
    let planted = listing["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|snapshot| snapshot["id"] == in_b.as_str());
    assert!(
        planted.is_some_and(|snapshot| snapshot["trusted"] == false),
        "the planted manifest is listed as trusted: {listing}"
    );
}

/// Plants, as the holder of another key trusted for this repository could,
/// a newer snapshot whose tree gives `victim` the chunks of `donor` (a file
/// of the same size) with the victim's metadata. Returns its id.
fn forge_parent_swapping_contents(
    repo: &Path,
    snapshot: &str,
    victim: &[u8],
    donor: &[u8],
    key: &SigningKey,
) -> String {
    use cairn_store::format::pack::BlobKind;
    use cairn_store::format::tree::Tree;
    use cairn_store::index::open_index;
    use cairn_store::ops::common::blob_writer::BlobWriter;

    let repository = open(repo);
    let opened = open_index(&repository, None, &[]).unwrap();
    let index = opened.index.as_ref();
    let mut body = body_of(repo, snapshot);
    let tree = cairn_store::ops::read_tree(&repository, index, &body.components[0].tree).unwrap();
    let donor = tree
        .entries
        .iter()
        .find(|entry| entry.name == donor)
        .unwrap()
        .clone();
    let mut entries = tree.entries.clone();
    let victim = entries
        .iter_mut()
        .find(|entry| entry.name == victim)
        .unwrap();
    victim.chunks = donor.chunks.clone();
    victim.hash = donor.hash;
    let bytes = Tree::new(entries).encode();
    let tree_id = Id::of(&bytes);
    let writer = BlobWriter::new(
        &repository,
        index,
        repository.list_packs().unwrap(),
        Some(key),
    );
    writer.add(BlobKind::Tree, tree_id, &bytes).unwrap();
    writer.finish().unwrap();
    body.components[0].tree = tree_id;
    body.time = years_later(&body.time, 1);
    plant_manifest(repo, &body, key)
}

#[test]
fn finding_4_parent_signed_by_another_trusted_key_is_not_used() {
    let workspace = Workspace::new();
    let repo = workspace.repo();
    init(&workspace, &repo, &[]);
    // Another host's key, which this machine trusts for this repository.
    let other_key = init(&workspace, &workspace.path("other"), &[]);
    let other = cairn_store::keystore::read_secret_key(&other_key).unwrap();
    let other_public = cairn_store::format::keys::public_key_of(&other).to_hex();
    let repository_id = open(&repo).config().repository_id.to_hex();
    let pinned = workspace.path("config/trusted").join(repository_id);
    fs::create_dir_all(&pinned).unwrap();
    fs::write(pinned.join(&other_public), format!("{other_public}\n")).unwrap();

    let docs = workspace.path("docs");
    write(&docs.join("salary.txt"), &[b'1'; 10_000]);
    write(&docs.join("public.txt"), &[b'0'; 10_000]);
    let (first, _) = backup(&workspace, &repo, &[&docs]);
    let forged =
        forge_parent_swapping_contents(&repo, &first, b"salary.txt", b"public.txt", &other);

    // The owner's next backup, signed with the owner's key, must not take
    // file entries from a snapshot another key signed.
    let (second, summary) = backup(&workspace, &repo, &[&docs]);
    assert_ne!(
        summary["parent"],
        forged.as_str(),
        "another key's snapshot was the parent"
    );
    let target = workspace.path("out");
    at(
        &workspace,
        &repo,
        ["restore", &second, "--target", target.to_str().unwrap()],
    )
    .ok();
    assert_eq!(
        fs::read(target.join("docs/salary.txt")).unwrap(),
        fs::read(docs.join("salary.txt")).unwrap(),
        "the owner's key signed content laundered through another key's snapshot"
    );
}

#[test]
fn finding_8_deleted_newest_manifest_is_reported_as_rollback() {
    let workspace = Workspace::new();
    let repo = workspace.repo();
    init(&workspace, &repo, &[]);
    let docs = workspace.path("docs");
    write(&docs.join("a.txt"), b"first");
    backup(&workspace, &repo, &[&docs]);
    write(&docs.join("a.txt"), b"second");
    let (second, _) = backup(&workspace, &repo, &[&docs]);

    // A legitimate forget and prune of the newest snapshot warns of nothing.
    at(&workspace, &repo, ["forget", &second]).ok();
    at(&workspace, &repo, ["prune"]).ok();
    let (_, warnings) = listed(&workspace, &repo);
    assert!(
        !warnings.contains(&second),
        "a forgotten snapshot is reported: {warnings}"
    );
    let (code, report) = workspace.verify_json(&[]);
    assert_eq!(code, 0, "{}", brief(&report));

    // The attacker deletes the newest manifest.
    write(&docs.join("a.txt"), b"third");
    let (third, _) = backup(&workspace, &repo, &[&docs]);
    fs::remove_file(repo.join("snapshots").join(&third)).unwrap();
    let (code, report) = workspace.verify_json(&[]);
    assert_ne!(
        code,
        0,
        "verify is clean after a roll-back: {}",
        brief(&report)
    );
    assert!(mentions(findings(&report), &third), "{}", brief(&report));
    let (_, warnings) = listed(&workspace, &repo);
    assert!(
        warnings.contains(&third),
        "snapshots does not warn: {warnings}"
    );
    let target = workspace.path("out");
    let (_, warnings) = restore_latest(&workspace, &repo, &target, &[]);
    assert!(
        warnings.contains(&third),
        "restore does not warn: {warnings}"
    );
    assert_eq!(fs::read(target.join("docs/a.txt")).unwrap(), b"first");
}

#[test]
fn finding_8_untrusted_future_manifest_never_becomes_latest() {
    let workspace = Workspace::new();
    let repo = workspace.repo();
    init(&workspace, &repo, &[]);
    let docs = workspace.path("docs");
    write(&docs.join("a.txt"), b"genuine");
    let (genuine, _) = backup(&workspace, &repo, &[&docs]);
    let mut body = body_of(&repo, &genuine);
    body.time = years_later(&body.time, 70);
    let stranger = cairn_store::format::keys::generate_signing_key().unwrap();
    let planted = plant_manifest(&repo, &body, &stranger);

    let target = workspace.path("out");
    let (restored, warnings) = restore_latest(&workspace, &repo, &target, &["--allow-untrusted"]);
    assert_eq!(
        restored, genuine,
        "an untrusted, future-dated manifest became latest"
    );
    assert!(
        warnings.contains(&planted),
        "the planted manifest is not named: {warnings}"
    );
}

#[test]
fn finding_8_undecodable_planted_manifest_blocks_nothing() {
    let workspace = Workspace::new();
    let repo = workspace.repo();
    init(&workspace, &repo, &[]);
    let docs = workspace.path("docs");
    write(&docs.join("a.txt"), b"genuine");
    let (genuine, _) = backup(&workspace, &repo, &[&docs]);
    let garbage = b"not a manifest at all".to_vec();
    let planted = Id::of(&garbage).to_hex();
    fs::write(repo.join("snapshots").join(&planted), &garbage).unwrap();
    // And one under a name its bytes do not hash to.
    let misnamed = Id::of(b"another name").to_hex();
    fs::write(repo.join("snapshots").join(&misnamed), &garbage).unwrap();

    let target = workspace.path("out");
    let (restored, warnings) = restore_latest(&workspace, &repo, &target, &[]);
    assert_eq!(restored, genuine);
    assert!(
        warnings.contains(&planted),
        "restore does not name it: {warnings}"
    );
    assert!(
        warnings.contains(&misnamed),
        "restore does not name it: {warnings}"
    );
    let pruned = at(&workspace, &repo, ["prune"]).ok();
    for name in [&planted, &misnamed] {
        assert!(
            format!("{}{}", pruned.stdout, pruned.stderr).contains(name.as_str()),
            "prune does not name {name}: {}{}",
            pruned.stdout,
            pruned.stderr
        );
    }
    let (listing, warnings) = listed(&workspace, &repo);
    assert!(
        listing.to_string().contains(&planted) || warnings.contains(&planted),
        "snapshots does not name it: {listing}"
    );
    assert_same_tree(&docs, &target.join("docs"));
}

#[test]
fn finding_3_replaced_config_naming_another_repository_is_refused() {
    let workspace = Workspace::new();
    let (a, b, _key) = two_repositories_one_key(&workspace, &[]);
    let docs = workspace.path("docs");
    write(&docs.join("a.txt"), b"a's data");
    backup(&workspace, &a, &[&docs]);
    // The attacker gives A the config (so the id) of B, which trusts the
    // same key, so that B's signed objects would pass in A.
    fs::remove_file(a.join("config")).unwrap();
    fs::copy(b.join("config"), a.join("config")).unwrap();
    let run = at(&workspace, &a, ["snapshots"]);
    assert_ne!(run.code, 0, "a replaced config was accepted");
    assert!(
        run.stderr.contains("replaced") && run.stderr.contains("repositories"),
        "the refusal does not say why or which pin: {}",
        run.stderr
    );
}

#[test]
fn finding_3_legacy_global_trust_serves_only_until_the_repository_has_its_own() {
    let workspace = Workspace::new();
    let repo = workspace.repo();
    init(&workspace, &repo, &[]);
    let docs = workspace.path("docs");
    write(&docs.join("a.txt"), b"data");
    backup(&workspace, &repo, &[&docs]);
    // Trust as an older cairn kept it: one global list, trusted/<key>.
    let trusted = workspace.path("config/trusted");
    let own = walk(&trusted)
        .into_iter()
        .find(|path| path.is_file())
        .unwrap();
    let key = own.file_name().unwrap().to_str().unwrap().to_string();
    fs::rename(&own, trusted.join(&key)).unwrap();
    fs::remove_dir(own.parent().unwrap()).unwrap();

    let target = workspace.path("out");
    let (_, warnings) = restore_latest(&workspace, &repo, &target, &[]);
    assert!(
        warnings.contains("trust"),
        "no word of the legacy list: {warnings}"
    );
    assert_same_tree(&docs, &target.join("docs"));
    at(&workspace, &repo, ["trust", &key]).ok();
    let run = at(&workspace, &repo, ["snapshots"]).ok();
    assert!(!run.stderr.contains("older cairn"), "{}", run.stderr);
    // Its own list now serves it, without the legacy file.
    fs::remove_file(trusted.join(&key)).unwrap();
    let listing = at(&workspace, &repo, ["--json", "snapshots"]).ok().json();
    assert_eq!(listing["snapshots"][0]["trusted"], true, "{listing}");
}

/// Rewrites `snapshot`'s manifest as a cairn before envelope version 2
/// wrote it (no repository, `domain || body` signed) with `key`; returns
/// the legacy manifest's id. The version-2 manifest is removed.
fn make_legacy(repo: &Path, snapshot: &str, key: &SigningKey) -> String {
    use cairn_store::format::seal::{Envelope, LEGACY_ENVELOPE_VERSION};
    use ed25519_dalek::Signer;
    let path = repo.join("snapshots").join(snapshot);
    let current = Envelope::decode(&fs::read(&path).unwrap(), "manifest").unwrap();
    let mut message = cairn_store::format::manifest::SIGNING_DOMAIN.to_vec();
    message.extend_from_slice(&current.body);
    let legacy = Envelope {
        version: LEGACY_ENVELOPE_VERSION,
        repository: None,
        signature: key.sign(&message).to_bytes(),
        ..current
    };
    let bytes = legacy.encode();
    let id = Id::of(&bytes).to_hex();
    fs::write(repo.join("snapshots").join(&id), &bytes).unwrap();
    fs::remove_file(&path).unwrap();
    id
}

#[test]
fn finding_3_a_repository_written_before_envelope_version_2_still_opens() {
    let workspace = Workspace::new();
    let (a, b) = (workspace.path("a"), workspace.path("b"));
    let key_file = init(&workspace, &a, &[]);
    let key = cairn_store::keystore::read_secret_key(&key_file).unwrap();
    let docs = workspace.path("docs");
    write(&docs.join("a.txt"), b"written long ago");
    let (snapshot, _) = backup(&workspace, &a, &[&docs]);
    let legacy = make_legacy(&a, &snapshot, &key);

    // Read as before: trusted, latest, restorable, verified clean.
    let target = workspace.path("out");
    let (restored, _) = restore_latest(&workspace, &a, &target, &[]);
    assert_eq!(restored, legacy);
    assert_same_tree(&docs, &target.join("docs"));
    // (The version-2 manifest it replaced is gone, which this machine
    // reports as a roll-back: that is the only finding.)
    let (_, report) = workspace_verify(&workspace, &a);
    let kinds: Vec<&Value> = findings(&report).iter().map(|f| &f["kind"]).collect();
    assert!(
        kinds.iter().all(|kind| *kind == "rolled-back"),
        "{}",
        brief(&report)
    );
    let (listing, _) = listed(&workspace, &a);
    assert_eq!(listing["snapshots"][0]["trusted"], true, "{listing}");

    // A target that an older cairn copied it into (the same object) holds
    // it already: copying again adds no second snapshot.
    at(
        &workspace,
        &b,
        [
            "--key-file",
            key_file.to_str().unwrap(),
            "init",
            "--plaintext",
            "--like",
            a.to_str().unwrap(),
        ],
    )
    .ok();
    fs::create_dir_all(b.join("snapshots")).unwrap();
    fs::copy(
        a.join("snapshots").join(&legacy),
        b.join("snapshots").join(&legacy),
    )
    .unwrap();
    let report = workspace
        .cairn([
            "--json",
            "copy",
            "--from",
            a.to_str().unwrap(),
            "--to",
            b.to_str().unwrap(),
            &legacy,
        ])
        .ok()
        .json();
    assert_eq!(
        report["snapshots"][0]["result"], "already-present",
        "{report}"
    );
}
