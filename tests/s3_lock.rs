//! Backups ransomware cannot delete: a repository made with
//! `init --object-lock` in a bucket with versioning and S3 Object Lock, on
//! a real S3-compatible server (moto's) on loopback. An "attacker" holding
//! the backup host's credentials deletes every object it can list; the
//! data survives, `--as-of` restores it byte for byte, `repair undelete`
//! makes the repository whole again. Prune waits for retention ("not yet",
//! exit 0) and deletes once it has passed; `lock extend` raises the
//! retention of live objects only; a backup succeeds with deletes refused
//! (`--no-delete`, standing for an IAM policy moto does not enforce).

mod common;
use common::s3::S3Server;
use common::*;

use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// init creates this bucket itself, with Object Lock (the server's own
/// bucket has none).
const BUCKET: &str = "cairn-locked";
const PREFIX: &str = "nightly";
const MIB: usize = 1024 * 1024;

struct Locked {
    workspace: Workspace,
    server: S3Server,
}

/// Raw bucket operations an operator or an attacker would do, with boto3:
/// `OP BUCKET PREFIX [ARG] ENDPOINT`; prints JSON.
const TOOL: &str = r#"
import sys, json, datetime, boto3
op, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=sys.argv[-1])
def keys():
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]
def versions():
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            yield item["Key"], item["VersionId"]
if op == "bucket":
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    print(json.dumps({"versioning": status, "lock": lock}))
elif op == "retention":
    out = {}
    for key in keys():
        head = s3.head_object(Bucket=bucket, Key=key)
        until = head.get("ObjectLockRetainUntilDate")
        out[key] = until.timestamp() if until else None
    print(json.dumps(out))
elif op == "attack":
    # What stolen backup-host credentials can do: delete every object
    # listed, then try every stored version too.
    deleted = refused = removed = 0
    for key in list(keys()):
        s3.delete_object(Bucket=bucket, Key=key)
        deleted += 1
    for key, version in list(versions()):
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            removed += 1
        except s3.exceptions.ClientError:
            refused += 1
    print(json.dumps({"deleted": deleted, "version_deletes_refused": refused,
                      "versions_removed": removed, "left": len(list(keys()))}))
elif op == "unlock":
    # An administrator's bypass, standing for the passing of time: the
    # object's retention ends now.
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    s3.put_object_retention(Bucket=bucket, Key=sys.argv[4], BypassGovernanceRetention=True,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": past})
    print("{}")
elif op == "now":
    print(json.dumps(datetime.datetime.now(datetime.timezone.utc).isoformat()))
elif op == "versions":
    print(json.dumps(sorted({key for key, _ in versions()})))
"#;

impl Locked {
    fn new() -> Self {
        Locked {
            workspace: Workspace::new(),
            server: S3Server::start(),
        }
    }

    fn location(&self) -> String {
        format!("s3://{BUCKET}/{PREFIX}")
    }

    fn cairn<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.workspace.command();
        self.server.configure(&mut command);
        command.arg("--repo").arg(self.location());
        run_of(command.args(args).output().expect("run cairn"))
    }

    fn tool(&self, args: &[&str]) -> Value {
        let mut command = Command::new(common::s3::venv().join("bin/python"));
        command
            .arg("-c")
            .arg(TOOL)
            .args(args)
            .arg(&self.server.endpoint);
        self.server.configure(&mut command);
        let output = command.output().expect("run python for S3");
        assert!(
            output.status.success(),
            "S3 tool {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the S3 tool prints JSON")
    }

    /// Seconds since the epoch each object is retained until.
    fn retention(&self) -> Vec<(String, Option<f64>)> {
        let map = self.tool(&["retention", BUCKET, PREFIX]);
        let mut all: Vec<_> = map
            .as_object()
            .expect("a map of keys")
            .iter()
            .map(|(key, until)| (key.clone(), until.as_f64()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn init(&self, days: &str) -> Value {
        self.cairn(["--json", "init", "--object-lock", days])
            .ok()
            .json()
    }

    fn backup(&self, source: &Path, extra: &[&str]) -> String {
        let mut args = vec![OsStr::new("--json")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend([OsStr::new("backup"), source.as_os_str()]);
        self.cairn(args).ok().json()["snapshot"]
            .as_str()
            .expect("snapshot id")
            .to_string()
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const DAY: f64 = 86_400.0;

#[test]
fn stolen_backup_credentials_cannot_destroy_a_locked_repository() {
    let repo = Locked::new();
    let init = repo.init("2");
    assert_eq!(init["object_lock"]["days"], 2, "{init:#}");
    assert_eq!(init["object_lock"]["mode"], "governance");
    let bucket = repo.tool(&["bucket", BUCKET, PREFIX]);
    assert_eq!(bucket["versioning"], "Enabled", "{bucket:#}");
    assert_eq!(bucket["lock"]["ObjectLockEnabled"], "Enabled");
    assert_eq!(bucket["lock"]["Rule"]["DefaultRetention"]["Days"], 2);

    // The backup host runs with deletes refused, as its IAM policy would.
    let source = repo.workspace.path("src");
    write(&source.join("big.bin"), &noise(1, 3 * MIB));
    for index in 0..20 {
        write(
            &source.join(format!("notes/{index}.txt")),
            format!("note {index}\n").repeat(index * 40 + 1).as_bytes(),
        );
    }
    let snapshot = repo.backup(&source, &["--no-delete"]);

    // Every object cairn wrote is retained about two days.
    let retention = repo.retention();
    assert!(retention.len() >= 5, "{retention:?}");
    for (key, until) in &retention {
        let until = until.unwrap_or_else(|| panic!("{key} carries no retention"));
        assert!(
            until > now() + 1.9 * DAY,
            "{key} retained only until {until}"
        );
    }

    // The last good moment, then the attack: every listed object deleted,
    // every stored version's deletion tried.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before_attack = repo.cairn(["--json", "snapshots"]).ok().json().to_string();
    let as_of = repo
        .tool(&["now", BUCKET, PREFIX])
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let attack = repo.tool(&["attack", BUCKET, PREFIX]);
    assert_eq!(attack["deleted"], retention.len(), "{attack:#}");
    assert_eq!(attack["left"], 0, "{attack:#}");
    assert_eq!(attack["versions_removed"], 0, "{attack:#}");
    assert!(
        attack["version_deletes_refused"].as_u64().unwrap() >= retention.len() as u64,
        "{attack:#}"
    );
    let gone = repo.cairn(["snapshots"]).expect(1);
    assert!(
        gone.stderr.contains("not a cairn repository"),
        "{}",
        gone.stderr
    );

    // The repository as it was: restored byte for byte, read-only.
    let target = repo.workspace.path("restored");
    repo.cairn([
        OsStr::new("--as-of"),
        OsStr::new(&as_of),
        OsStr::new("restore"),
        OsStr::new(&snapshot),
        OsStr::new("--target"),
        target.as_os_str(),
    ])
    .ok();
    assert_same_tree(&source, &target.join("src"));
    let refused = repo.cairn([
        OsStr::new("--as-of"),
        OsStr::new(&as_of),
        OsStr::new("backup"),
        source.as_os_str(),
    ]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("read-only"), "{}", refused.stderr);

    // Undelete puts back what the markers hid: the repository opens as
    // before and verifies clean, every byte read.
    let undeleted = repo
        .cairn(["--json", "--as-of", &as_of, "repair", "undelete"])
        .ok()
        .json();
    assert_eq!(
        undeleted["objects_restored"],
        retention.len(),
        "{undeleted:#}"
    );
    assert_eq!(undeleted["repository_opens"], true);
    assert_documented("repair undelete", &undeleted);
    let after = repo.cairn(["--json", "snapshots"]).ok().json().to_string();
    assert_eq!(after, before_attack);
    let report = repo.cairn(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(report["clean"], true, "{}", brief(&report));
}

#[test]
fn prune_waits_for_locks_and_lock_extend_keeps_live_data_locked() {
    let repo = Locked::new();
    repo.init("1");
    let source = repo.workspace.path("src");
    write(&source.join("keep.bin"), &noise(1, MIB));
    write(&source.join("scratch.bin"), &noise(2, 2 * MIB));
    repo.backup(&source, &[]);
    std::fs::remove_file(source.join("scratch.bin")).unwrap();
    let kept = repo.backup(&source, &[]);
    repo.cairn(["forget", "--keep-last", "1"]).ok();
    let marked = repo.cairn(["--json", "prune", "--grace", "0s"]).ok().json();
    assert!(marked["mark_written"].is_string(), "{marked:#}");

    // Phase two: the marked packs are retained, so not yet; exit 0, the
    // packs and their mark stay.
    let waiting = repo.cairn(["--json", "prune", "--grace", "0s"]).ok().json();
    let not_yet = waiting["packs_not_yet"].as_array().expect("packs_not_yet");
    assert!(!not_yet.is_empty(), "{waiting:#}");
    assert_eq!(waiting["packs_deleted"], 0);
    assert_eq!(waiting["marks_removed"], 0);
    let text = repo.cairn(["prune", "--grace", "0s"]).ok();
    assert!(text.stdout.contains("not yet"), "{}", text.stdout);
    let waiting_packs: Vec<String> = not_yet
        .iter()
        .map(|pack| pack["pack"].as_str().unwrap().to_string())
        .collect();
    let key_of = |pack: &str| format!("{PREFIX}/data/{}/{pack}", &pack[..2]);

    // lock extend: live objects retained three days, marked packs left
    // to expire.
    let extended = repo
        .cairn(["--json", "lock", "extend", "--days", "3"])
        .ok()
        .json();
    assert!(extended["extended"].as_u64().unwrap() >= 5, "{extended:#}");
    assert_documented("lock extend", &extended);
    for (key, until) in repo.retention() {
        let until = until.expect("retained");
        if waiting_packs.iter().any(|pack| key_of(pack) == key) || key.contains("/deletions/") {
            assert!(until < now() + 1.1 * DAY, "{key} was extended");
        } else {
            assert!(until > now() + 2.9 * DAY, "{key} not extended: {until}");
        }
    }

    // Once retention has passed, prune deletes the pack for good (every
    // version), and the repository still verifies.
    for pack in &waiting_packs {
        repo.tool(&["unlock", BUCKET, PREFIX, &key_of(pack)]);
    }
    let done = repo.cairn(["--json", "prune", "--grace", "0s"]).ok().json();
    assert_eq!(done["packs_deleted"], waiting_packs.len(), "{done:#}");
    assert_eq!(done["packs_not_yet"].as_array().map(Vec::len), Some(0));
    let stored = repo.tool(&["versions", BUCKET, PREFIX]);
    for pack in &waiting_packs {
        assert!(
            !stored
                .as_array()
                .unwrap()
                .iter()
                .any(|key| *key == key_of(pack).as_str()),
            "{pack} still has versions"
        );
    }
    let report = repo.cairn(["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(report["clean"], true, "{}", brief(&report));
    let target = repo.workspace.path("restored");
    repo.cairn([
        OsStr::new("restore"),
        OsStr::new(&kept),
        OsStr::new("--target"),
        target.as_os_str(),
    ])
    .ok();
    assert_same_tree(&source, &target.join("src"));
}

/// `output` has the fields docs/JSON.md lists for `section`, and no other
/// top-level field.
fn assert_documented(section: &str, output: &Value) {
    let mut contract = common::json_doc::Contract::default();
    contract.record(section, output.clone());
    let wrong = contract.mismatches(|documented| documented == section);
    assert!(wrong.is_empty(), "{section}: {}", wrong.join("\n"));
}
