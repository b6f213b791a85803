//! Repairs that die mid-run (SIGKILL: no destructors, no flushing) must
//! never cost a snapshot anything: `repair index` killed at any moment
//! leaves a repository that verifies and restores, and that the next run
//! finishes; `repair snapshots` killed at any moment leaves every original
//! snapshot as it was, only repaired snapshots that verify, and no
//! half-written object under a real name.

mod common;
use common::*;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Packs close at 1 MiB (the smallest size a config may give) instead of
/// 16 MiB, so a repository of a few tens of MiB has dozens of packs and
/// `repair index` writes more than one index file. Done right after `init`,
/// before anything is stored.
fn use_small_packs(repo: &Path) {
    let path = repo.join("config");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    config["pack_target_size"] = Value::from(MIB as u64);
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// `cairn --repo REPO ARGS...` for a repository other than the workspace's.
fn command_at<I, S>(workspace: &Workspace, repo: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = workspace.command();
    command.arg("--repo").arg(repo).args(args);
    command
}

fn cairn_at<I, S>(workspace: &Workspace, repo: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_of(
        command_at(workspace, repo, args)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn"),
    )
}

/// `cairn --repo REPO --json verify ARGS...`: exit code and report.
fn verify_at(workspace: &Workspace, repo: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json", "verify"];
    all.extend_from_slice(args);
    let run = cairn_at(workspace, repo, all);
    (run.code, run.json())
}

/// `cairn --repo REPO ARGS...` running in the background, output discarded.
fn spawn_at(workspace: &Workspace, repo: &Path, args: &[&OsStr]) -> Child {
    command_at(workspace, repo, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn")
}

/// Polls `seen` until it holds (true), or `child` has exited or a minute
/// has passed (false). Busily: some moments last well under a millisecond.
fn wait_until(child: &mut Child, mut seen: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && child.try_wait().expect("poll child").is_none() {
        if seen() {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

/// Names of the files directly in `directory` (none if it does not exist).
fn names(directory: &Path) -> BTreeSet<String> {
    fs::read_dir(directory)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every pack under `repo`/data, by name.
fn pack_names(repo: &Path) -> BTreeSet<String> {
    walk(&repo.join("data"))
        .into_iter()
        .filter(|path| path.is_file())
        .filter_map(|path| Some(path.file_name()?.to_str()?.to_string()))
        .collect()
}

/// A copy of a repository made of hard links. Every object is written once
/// (to `tmp/`, then linked to its name) and never changed, and deleting one
/// only unlinks its name, so what cairn does to the copy never shows in the
/// original. The copies share the original's id, so the workspace's memory
/// of the newest snapshots seen is forgotten too: each copy puts the
/// repository back as it was on purpose, which is not a roll-back.
fn link_copy(workspace: &Workspace, from: &Path, to: &Path) {
    for memory in walk(&workspace.path("cache")) {
        if memory
            .file_name()
            .is_some_and(|name| name == "newest-seen.json")
        {
            fs::remove_file(&memory).unwrap();
        }
    }
    fs::create_dir_all(to).unwrap();
    for path in walk(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        if path.is_dir() {
            fs::create_dir_all(&target).unwrap();
        } else {
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            fs::hard_link(&path, &target).unwrap();
        }
    }
}

/// The pack a finding about a whole pack names (`pack <64 hex digits>`).
fn pack_of(finding: &Value) -> &str {
    finding["object"]
        .as_str()
        .and_then(|object| object.strip_prefix("pack "))
        .unwrap_or_else(|| panic!("not a finding about a pack: {finding}"))
}

/// The packs a verify report notes as listed by no index file.
fn unreferenced(report: &Value) -> BTreeSet<String> {
    findings(report)
        .iter()
        .filter(|finding| finding["kind"] == "unreferenced-pack")
        .map(|finding| pack_of(finding).to_string())
        .collect()
}

/// A complete snapshot and the folder it was taken of (never changed since).
struct Saved {
    id: String,
    source: PathBuf,
}

/// Restores each of `ids` from `repo`, all at once, into `root`/0,
/// `root`/1, …, and panics unless every one succeeds. The last one uses the
/// workspace's index cache (which may remember index files that a repair
/// has since deleted), the others `--no-cache`.
fn restore_all(workspace: &Workspace, repo: &Path, ids: &[&str], root: &Path, round: &str) {
    fs::create_dir_all(root).unwrap();
    let children: Vec<Child> = ids
        .iter()
        .enumerate()
        .map(|(number, id)| {
            let mut command = workspace.command();
            command.arg("--repo").arg(repo);
            if number != ids.len() - 1 {
                command.arg("--no-cache");
            }
            command
                .arg("restore")
                .arg(id)
                .arg("--target")
                .arg(root.join(number.to_string()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(root.join(format!("{number}.stderr"))).unwrap())
                .spawn()
                .expect("start cairn restore")
        })
        .collect();
    for (number, (mut child, id)) in children.into_iter().zip(ids).enumerate() {
        let status = child.wait().expect("reap restore");
        assert!(
            status.success(),
            "{round}: snapshot {id} does not restore ({status}):\n{}",
            fs::read_to_string(root.join(format!("{number}.stderr"))).unwrap_or_default()
        );
    }
}

/// Restores every snapshot in `saved` from `repo` and checks each against
/// its source.
fn assert_every_snapshot_restores(
    workspace: &Workspace,
    repo: &Path,
    saved: &[Saved],
    round: &str,
) {
    let root = workspace.path(&format!("restored-{round}"));
    let ids: Vec<&str> = saved.iter().map(|snapshot| snapshot.id.as_str()).collect();
    restore_all(workspace, repo, &ids, &root, round);
    for (number, snapshot) in saved.iter().enumerate() {
        let component = snapshot.source.file_name().unwrap();
        assert_same_tree(
            &snapshot.source,
            &root.join(number.to_string()).join(component),
        );
    }
    fs::remove_dir_all(&root).unwrap();
}

/// When to kill a `repair index`.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// After this fraction of the time a complete run took.
    After(f64),
    /// As soon as a file being written appears in tmp/.
    FirstTemporary,
    /// As soon as an index file appears that was not there before.
    FirstNewIndexFile,
    /// As soon as the first index file the run deletes is gone.
    FirstRemoval,
}

/// Spawns `repair index` on `repo` and SIGKILLs it at `moment`; true if the
/// kill is what ended it. `rebuilt` names the index files a complete run
/// leaves.
fn kill_repair_index(
    workspace: &Workspace,
    repo: &Path,
    moment: Moment,
    full: Duration,
    rebuilt: &BTreeSet<String>,
) -> bool {
    let index = repo.join("index");
    let tmp = repo.join("tmp");
    let index_before = names(&index);
    let tmp_before = names(&tmp);
    // The run deletes the old index files in the order the directory lists
    // them, in well under a millisecond: watch the first one alone.
    let first_to_go = fs::read_dir(&index)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| !rebuilt.contains(path.file_name().unwrap().to_str().unwrap()));
    let mut child = spawn_at(workspace, repo, &["repair".as_ref(), "index".as_ref()]);
    match moment {
        Moment::After(fraction) => std::thread::sleep(full.mul_f64(fraction)),
        Moment::FirstTemporary => {
            wait_until(&mut child, || !names(&tmp).is_subset(&tmp_before));
        }
        Moment::FirstNewIndexFile => {
            wait_until(&mut child, || !names(&index).is_subset(&index_before));
        }
        Moment::FirstRemoval => {
            wait_until(&mut child, || {
                first_to_go.as_ref().is_none_or(|path| !path.exists())
            });
        }
    }
    kill(&mut child)
}

#[test]
fn repair_index_killed_at_any_moment_loses_nothing_and_the_next_run_finishes() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let repo = workspace.repo();
    use_small_packs(&repo);

    // A home folder (about 20 packs), then 24 days of new work, each its own
    // snapshot with its own two packs and index file: 70-odd packs, so the
    // rebuilt index takes two files, and 25 old index files to delete.
    let mut saved = Vec::new();
    let base = workspace.path("base");
    for index in 0..4 {
        write(
            &base.join(format!("big/{index}.bin")),
            &noise(100 + index, 5 * MIB),
        );
    }
    for index in 0..60u64 {
        let size = (index as usize * 7_919) % 40_000;
        let path = base.join(format!("d{}/file-{index:02}", index % 5));
        if index % 3 == 0 {
            let line = format!("line of text number {index}\n");
            write(
                &path,
                &line.repeat(size / line.len() + 1).as_bytes()[..size],
            );
        } else {
            write(&path, &noise(index, size));
        }
    }
    for day in 0..=24u64 {
        let source = if day == 0 {
            base.clone()
        } else {
            let source = workspace.path(&format!("day-{day:02}"));
            write(&source.join("work.bin"), &noise(1_000 + day, 200_000));
            write(&source.join("notes.txt"), format!("day {day}\n").as_bytes());
            source
        };
        let summary = workspace.backup_json([&source]);
        saved.push(Saved {
            id: summary["snapshot"].as_str().unwrap().to_string(),
            source,
        });
    }

    // A backup of new data dies right after its first pack: a leftover that
    // no index file lists, which the repair should take in.
    let crashed = workspace.path("crashed");
    write(&crashed.join("new.bin"), &noise(7, 6 * MIB));
    let packs_before = pack_names(&repo);
    let mut child = spawn_at(&workspace, &repo, &["backup".as_ref(), crashed.as_os_str()]);
    wait_until(&mut child, || pack_names(&repo).len() > packs_before.len());
    assert!(
        kill(&mut child),
        "the backup finished before its first pack could be left over"
    );
    let (code, report) = verify_at(&workspace, &repo, &["--read-data"]);
    assert_eq!(code, 0, "{}", brief(&report));
    let leftovers = unreferenced(&report);
    assert!(!leftovers.is_empty(), "{}", brief(&report));
    assert_eq!(
        findings(&report).len(),
        leftovers.len(),
        "{}",
        brief(&report)
    );
    let packs = pack_names(&repo);
    assert!(packs.len() > 64, "only {} packs", packs.len());
    let original_index = names(&repo.join("index"));
    assert!(original_index.len() >= 25, "{original_index:?}");

    // One complete run on a copy: how long it takes, and what it leaves.
    let copy = workspace.path("copy-complete");
    link_copy(&workspace, &repo, &copy);
    let started = Instant::now();
    let complete = cairn_at(&workspace, &copy, ["--json", "repair", "index"])
        .ok()
        .json();
    let full = started.elapsed();
    assert_eq!(complete["packs_indexed"], packs.len(), "{complete:#}");
    assert_eq!(complete["unreadable_packs"], Value::Array(vec![]));
    assert!(
        complete["index_files_written"].as_u64().unwrap() >= 2,
        "{complete:#}"
    );
    let rebuilt_index = names(&copy.join("index"));
    assert!(rebuilt_index.is_disjoint(&original_index));
    let (code, report) = verify_at(&workspace, &copy, &["--read-data"]);
    assert_eq!(code, 0, "{}", brief(&report));
    assert!(findings(&report).is_empty(), "{}", brief(&report));
    fs::remove_dir_all(&copy).unwrap();

    // Each kill on a fresh copy of the repository, so each meets the whole
    // job; the last three copies are killed again and again before the run
    // that finishes.
    use Moment::{After, FirstNewIndexFile, FirstRemoval, FirstTemporary};
    let plans: [&[Moment]; 11] = [
        &[After(0.05)],
        &[FirstNewIndexFile],
        &[After(0.5)],
        &[FirstRemoval],
        &[After(0.25)],
        &[FirstTemporary],
        &[After(0.75)],
        &[After(0.95)],
        &[FirstNewIndexFile, FirstRemoval],
        &[FirstTemporary, After(0.4), FirstNewIndexFile],
        &[After(0.6), FirstRemoval, After(0.3)],
    ];
    let mut kills = 0;
    let mut landed_mid_rewrite = 0;
    let mut landed_mid_deletion = 0;
    for (attempt, plan) in plans.iter().enumerate() {
        let copy = workspace.path(&format!("copy-{attempt:02}"));
        link_copy(&workspace, &repo, &copy);
        for (step, &moment) in plan.iter().enumerate() {
            let round = format!("attempt {attempt} step {step} ({moment:?})");
            let index_before = names(&copy.join("index"));
            let started = Instant::now();
            let was_killed = kill_repair_index(&workspace, &copy, moment, full, &rebuilt_index);
            let lived = started.elapsed();
            kills += usize::from(was_killed);

            // The killed run only ever adds the rebuilt index files, and
            // deletes old ones only once all of those exist.
            let index = names(&copy.join("index"));
            let written: BTreeSet<_> = index.difference(&original_index).cloned().collect();
            let removed: BTreeSet<_> = original_index.difference(&index).cloned().collect();
            assert!(
                written.is_subset(&rebuilt_index),
                "{round}: index files that a complete run does not write: {written:?}"
            );
            assert!(
                removed.is_empty() || rebuilt_index.is_subset(&index),
                "{round}: old index files deleted before every new one was written"
            );
            // Killed after this run changed the index, before it was done.
            let mid_rewrite = was_killed && index != index_before && index != rebuilt_index;
            landed_mid_rewrite += usize::from(mid_rewrite);
            landed_mid_deletion += usize::from(mid_rewrite && !removed.is_empty());
            eprintln!(
                "{round}: killed={was_killed} after {lived:?} (a full run takes {full:?}); \
                 {} of {} new index files written, {} of {} old ones deleted",
                written.len(),
                rebuilt_index.len(),
                removed.len(),
                original_index.len()
            );

            // Nothing is damaged; the only notices are leftovers of the
            // crashed backup that the killed run had not yet indexed.
            let (code, report) = verify_at(&workspace, &copy, &["--read-data"]);
            assert_eq!(code, 0, "{round}: repository damaged:\n{}", brief(&report));
            assert_eq!(report["clean"], true, "{round}:\n{}", brief(&report));
            for finding in findings(&report) {
                assert_eq!(finding["kind"], "unreferenced-pack", "{round}: {finding:#}");
                assert_eq!(finding["severity"], "notice", "{round}: {finding:#}");
                assert!(
                    leftovers.contains(pack_of(finding)),
                    "{round}: a pack that was indexed before is not any more: {finding:#}"
                );
            }
            if written.is_empty() {
                assert_eq!(unreferenced(&report), leftovers, "{round}");
            }
            if rebuilt_index.is_subset(&index) {
                assert!(
                    unreferenced(&report).is_empty(),
                    "{round}: {}",
                    brief(&report)
                );
            }
            assert_objects_named_by_their_hash(&copy);
            assert_eq!(
                pack_names(&copy),
                packs,
                "{round}: repair changed the packs"
            );
            assert_every_snapshot_restores(&workspace, &copy, &saved, &format!("{attempt}-{step}"));
        }

        // The next run finishes the job: the same index as a complete run,
        // and an audit with nothing to say.
        let round = format!("attempt {attempt}");
        let finished = cairn_at(&workspace, &copy, ["--json", "repair", "index"])
            .ok()
            .json();
        assert_eq!(
            finished["packs_indexed"],
            packs.len(),
            "{round}: {finished:#}"
        );
        assert_eq!(names(&copy.join("index")), rebuilt_index, "{round}");
        let (code, report) = verify_at(&workspace, &copy, &["--read-data"]);
        assert_eq!(
            code,
            0,
            "{round}: after a complete run:\n{}",
            brief(&report)
        );
        assert!(findings(&report).is_empty(), "{round}:\n{}", brief(&report));
        fs::remove_dir_all(&copy).unwrap();
    }
    // Runs killed on seeing a file appear or go always die mid-run; those
    // killed after a delay may or may not, depending on the machine.
    let steps: usize = plans.iter().map(|plan| plan.len()).sum();
    assert!(
        kills >= 4,
        "only {kills} of {steps} repairs were still running when killed (a full one took {full:?})"
    );
    assert!(
        landed_mid_rewrite >= 1,
        "no kill landed between the first new index file and the last deletion"
    );
    // The deletions take well under a millisecond, so on a busy machine no
    // kill may land among them; say so rather than fail.
    eprintln!(
        "{kills} of {steps} repairs killed; {landed_mid_rewrite} mid-run, \
         {landed_mid_deletion} of them among the deletions"
    );

    // The workspace's own repository, never repaired, still restores.
    assert_every_snapshot_restores(&workspace, &repo, &saved, "original");
}

/// The manifest of every snapshot, by id.
fn manifests(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    names(&repo.join("snapshots"))
        .into_iter()
        .map(|id| {
            let bytes = fs::read(repo.join("snapshots").join(&id)).unwrap();
            (id, bytes)
        })
        .collect()
}

/// Snapshot ids as verify names them (`damaged_snapshots`, `affected`): the
/// first eight hex digits, sorted.
fn shorts<'a>(ids: impl IntoIterator<Item = &'a String>) -> Value {
    let shorts: BTreeSet<&str> = ids.into_iter().map(|id| &id[..8]).collect();
    serde_json::to_value(shorts).unwrap()
}

/// The damaged repository every `repair snapshots` starts from.
struct Damaged {
    /// Every snapshot's manifest, by id; all need the lost pack.
    originals: BTreeMap<String, Vec<u8>>,
    /// The files each snapshot holds, relative to its source.
    holds: BTreeMap<String, Vec<String>>,
    /// The one damaged file.
    lost_file: &'static str,
    lost_pack: String,
    packs: BTreeSet<String>,
}

impl Damaged {
    /// What a killed `repair snapshots` may leave: every original byte for
    /// byte; besides them only snapshots that a complete run writes
    /// (`reference`: repaired id -> original id), each signed by a trusted
    /// key and sound; an audit that finds the lost pack and, besides it,
    /// only packs of new trees that no index file lists yet; and nothing
    /// half-written. Returns how many repaired snapshots there are.
    fn check_state(
        &self,
        workspace: &Workspace,
        repo: &Path,
        reference: &BTreeMap<String, String>,
        round: &str,
    ) -> usize {
        let now = manifests(repo);
        for (id, bytes) in &self.originals {
            assert_eq!(
                now.get(id),
                Some(bytes),
                "{round}: original snapshot {id} changed"
            );
        }
        assert_objects_named_by_their_hash(repo);
        let repaired: BTreeSet<&String> = now
            .keys()
            .filter(|id| !self.originals.contains_key(*id))
            .collect();
        let listing = cairn_at(workspace, repo, ["--json", "snapshots"])
            .ok()
            .json();
        for entry in listing["snapshots"].as_array().unwrap() {
            let id = entry["id"].as_str().unwrap().to_string();
            assert_eq!(entry["trusted"], true, "{round}: {entry:#}");
            if !repaired.contains(&id) {
                continue;
            }
            let Some(original) = reference.get(&id) else {
                panic!("{round}: snapshot {id} is not one a complete repair writes: {entry:#}");
            };
            assert_eq!(
                entry["labels"]["repaired-from"],
                original.as_str(),
                "{round}"
            );
            assert!(
                entry["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|tag| tag == "repaired"),
                "{round}: {entry:#}"
            );
            assert_eq!(entry["complete"], false, "{round}: {entry:#}");
        }
        assert_eq!(
            listing["unreadable"],
            Value::Array(vec![]),
            "{round}: {listing:#}"
        );

        // The whole repository: the lost pack damages the big file of every
        // original and of nothing else.
        let (code, report) = verify_at(workspace, repo, &["--read-data"]);
        assert_eq!(code, 4, "{round}:\n{}", brief(&report));
        assert_eq!(
            report["damaged_snapshots"],
            shorts(self.originals.keys()),
            "{round}:\n{}",
            brief(&report)
        );
        for finding in findings(&report) {
            match finding["kind"].as_str().unwrap() {
                "missing-pack" => {
                    assert_eq!(pack_of(finding), self.lost_pack, "{round}: {finding:#}");
                    assert_eq!(
                        finding["affected_total"],
                        self.originals.len(),
                        "{round}: {finding:#}"
                    );
                    for affected in finding["affected"].as_array().unwrap() {
                        assert_eq!(affected["path"], self.lost_file, "{round}: {finding:#}");
                    }
                }
                "unreferenced-pack" => {
                    assert_eq!(finding["severity"], "notice", "{round}: {finding:#}");
                    assert!(
                        !self.packs.contains(pack_of(finding)),
                        "{round}: a pack that was indexed is not any more: {finding:#}"
                    );
                }
                _ => panic!("{round}: unexpected finding {finding:#}"),
            }
        }
        // The repaired snapshots alone, every byte read: sound.
        if !repaired.is_empty() {
            let mut args = vec!["--read-data"];
            for id in &repaired {
                args.extend(["--snapshot", id.as_str()]);
            }
            let (code, report) = verify_at(workspace, repo, &args);
            assert_eq!(
                code,
                0,
                "{round}: a repaired snapshot is damaged:\n{}",
                brief(&report)
            );
            assert!(
                findings(&report)
                    .iter()
                    .all(|finding| finding["kind"] == "unreferenced-pack"),
                "{round}:\n{}",
                brief(&report)
            );
        }
        repaired.len()
    }

    /// Checks the summary of a `repair snapshots` run that completed, and
    /// returns what it wrote: repaired id -> original id.
    fn check_complete_run(&self, summary: &Value, round: &str) -> BTreeMap<String, String> {
        let list = summary["repaired"].as_array().unwrap();
        assert_eq!(list.len(), self.originals.len(), "{round}: {summary:#}");
        let mut written = BTreeMap::new();
        for entry in list {
            let omitted: Vec<&str> = entry["omitted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|problem| problem["path"].as_str().unwrap())
                .collect();
            assert_eq!(omitted, [self.lost_file], "{round}: {entry:#}");
            written.insert(
                entry["repaired"].as_str().unwrap().to_string(),
                entry["original"].as_str().unwrap().to_string(),
            );
        }
        let origins: BTreeSet<&String> = written.values().collect();
        assert_eq!(
            origins,
            self.originals.keys().collect(),
            "{round}: {summary:#}"
        );
        written
    }
}

/// When to kill a `repair snapshots`.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// After this fraction of the time a complete run took.
    After(f64),
    /// As soon as a pack appears (repaired trees, not yet indexed).
    FirstNewPack,
    /// As soon as an index file appears (before the manifest that needs it).
    FirstNewIndexFile,
    /// As soon as this many more snapshots exist.
    NewSnapshots(usize),
}

#[test]
fn repair_snapshots_killed_at_any_moment_keeps_the_originals_and_writes_only_sound_snapshots() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let repo = workspace.repo();
    use_small_packs(&repo);

    // The first backup holds only a big file, in packs of its own; 29 more
    // add a small file each. Every snapshot needs the big file.
    let source = workspace.path("src");
    let lost_file = "shared/big.bin";
    write(&source.join(lost_file), &noise(1, 5 * MIB / 2));
    let first = workspace.backup_json([&source]);
    let big_packs = data_packs(&workspace.packs());
    assert!(big_packs.len() >= 2, "{big_packs:?}");
    let mut holds = BTreeMap::new();
    let mut files = vec![lost_file.to_string()];
    holds.insert(
        first["snapshot"].as_str().unwrap().to_string(),
        files.clone(),
    );
    write(&source.join("notes/a.md"), b"# notes\n");
    files.push("notes/a.md".into());
    for day in 1..30u64 {
        let path = format!("daily/{day:02}.bin");
        write(&source.join(&path), &noise(10 + day, 30_000));
        files.push(path);
        let summary = workspace.backup_json([&source]);
        holds.insert(
            summary["snapshot"].as_str().unwrap().to_string(),
            files.clone(),
        );
    }

    // Lose one of the big file's packs: every snapshot is damaged.
    let lost = &big_packs[big_packs.len() / 2];
    fs::remove_file(lost).unwrap();
    let damaged = Damaged {
        originals: manifests(&repo),
        holds,
        lost_file,
        lost_pack: lost.file_name().unwrap().to_str().unwrap().to_string(),
        packs: pack_names(&repo),
    };
    assert_eq!(
        damaged.originals.keys().collect::<Vec<_>>(),
        damaged.holds.keys().collect::<Vec<_>>()
    );
    let (code, report) = verify_at(&workspace, &repo, &["--read-data"]);
    assert_eq!(code, 4, "{}", brief(&report));
    assert_eq!(findings(&report).len(), 1, "{}", brief(&report));
    assert_eq!(
        report["damaged_snapshots"],
        shorts(damaged.originals.keys())
    );

    // One complete run on a copy: how long it takes, and what it writes.
    let copy = workspace.path("copy-complete");
    link_copy(&workspace, &repo, &copy);
    let started = Instant::now();
    let summary = cairn_at(&workspace, &copy, ["--json", "repair", "snapshots"])
        .ok()
        .json();
    let full = started.elapsed();
    let reference = damaged.check_complete_run(&summary, "complete run");
    assert_eq!(
        damaged.check_state(&workspace, &copy, &reference, "complete run"),
        damaged.originals.len()
    );
    // Each repaired snapshot restores everything its original held but the
    // big file.
    let root = workspace.path("restored-repaired");
    let ids: Vec<&str> = reference.keys().map(String::as_str).collect();
    restore_all(&workspace, &copy, &ids, &root, "complete run");
    for (number, (repaired, original)) in reference.iter().enumerate() {
        let restored = root.join(number.to_string()).join("src");
        let mut found: Vec<String> = walk(&restored)
            .into_iter()
            .filter(|path| path.is_file())
            .map(|path| {
                let relative = path.strip_prefix(&restored).unwrap();
                relative.to_str().unwrap().to_string()
            })
            .collect();
        found.sort();
        let mut expected: Vec<String> = damaged.holds[original]
            .iter()
            .filter(|path| *path != lost_file)
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(
            found, expected,
            "repaired snapshot {repaired} of {original}"
        );
        for path in &found {
            assert_eq!(
                file_hash(&restored.join(path)),
                file_hash(&source.join(path)),
                "repaired snapshot {repaired}: {path}"
            );
        }
    }
    fs::remove_dir_all(&root).unwrap();
    fs::remove_dir_all(&copy).unwrap();

    // Each plan on a fresh copy of the damaged repository; the last one
    // kills run after run, each taking up where the one before died.
    use Step::{After, FirstNewIndexFile, FirstNewPack, NewSnapshots};
    let plans: [&[Step]; 8] = [
        &[After(0.05)],
        &[FirstNewPack],
        &[FirstNewIndexFile],
        &[NewSnapshots(1)],
        &[After(0.5)],
        &[NewSnapshots(12)],
        &[After(0.85)],
        &[
            FirstNewPack,
            NewSnapshots(3),
            After(0.4),
            FirstNewIndexFile,
            NewSnapshots(5),
        ],
    ];
    let total = damaged.originals.len();
    let mut kills = 0;
    let mut partial = 0;
    for (attempt, plan) in plans.iter().enumerate() {
        let copy = workspace.path(&format!("copy-{attempt}"));
        link_copy(&workspace, &repo, &copy);
        let snapshots_dir = copy.join("snapshots");
        let index_dir = copy.join("index");
        for (number, &step) in plan.iter().enumerate() {
            let round = format!("attempt {attempt} step {number} ({step:?})");
            let snapshots_before = names(&snapshots_dir).len();
            let index_before = names(&index_dir);
            let packs_before = pack_names(&copy);
            let started = Instant::now();
            let mut child = spawn_at(
                &workspace,
                &copy,
                &["repair".as_ref(), "snapshots".as_ref()],
            );
            match step {
                After(fraction) => std::thread::sleep(full.mul_f64(fraction)),
                FirstNewPack => {
                    wait_until(&mut child, || !pack_names(&copy).is_subset(&packs_before));
                }
                FirstNewIndexFile => {
                    wait_until(&mut child, || !names(&index_dir).is_subset(&index_before));
                }
                NewSnapshots(count) => {
                    wait_until(&mut child, || {
                        names(&snapshots_dir).len() >= snapshots_before + count
                    });
                }
            }
            let was_killed = kill(&mut child);
            let lived = started.elapsed();
            kills += usize::from(was_killed);
            let repaired = damaged.check_state(&workspace, &copy, &reference, &round);
            partial += usize::from(was_killed && repaired > 0 && repaired < total);
            eprintln!(
                "{round}: killed={was_killed} after {lived:?} (a complete run takes {full:?}); \
                 {repaired} of {total} snapshots repaired"
            );
        }

        // The next run finishes: exactly the snapshots a complete run writes
        // (those of the killed runs are the same objects, not second copies).
        let round = format!("attempt {attempt}");
        let summary = cairn_at(&workspace, &copy, ["--json", "repair", "snapshots"])
            .ok()
            .json();
        assert_eq!(
            damaged.check_complete_run(&summary, &round),
            reference,
            "{round}"
        );
        assert_eq!(
            damaged.check_state(&workspace, &copy, &reference, &round),
            total
        );
        let all: BTreeSet<&String> = damaged.originals.keys().chain(reference.keys()).collect();
        assert_eq!(
            manifests(&copy).keys().collect::<BTreeSet<_>>(),
            all,
            "{round}"
        );
        fs::remove_dir_all(&copy).unwrap();
    }
    assert!(
        kills >= 4,
        "only {kills} repairs were still running when killed (a complete run takes {full:?})"
    );
    assert!(
        partial >= 1,
        "no kill landed between the first and the last repaired snapshot"
    );
}
