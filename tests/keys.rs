//! Key management end to end (FORMAT.md 17.5, 17.7): a second host joins
//! with `key host-init` and `key add --host`, backs up write-only, and a
//! third machine that knows only the passphrase restores its snapshots, as
//! does one that holds its own identity and only the owner's public key;
//! revocation refuses the revoked key's later snapshots and keeps its
//! earlier ones; rotation keeps old and new snapshots restorable; killed
//! key changes leave a repository every key holder opens; a damaged
//! keyring is named.

mod common;

use common::*;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// Another machine: its own config and cache directories, same repository.
struct Machine<'a> {
    workspace: &'a Workspace,
    name: &'static str,
    /// Whether it knows the passphrase.
    passphrase: bool,
}

impl Machine<'_> {
    fn command(&self) -> Command {
        let mut command = self.workspace.command();
        command
            .env(
                "CAIRN_CONFIG_DIR",
                self.workspace.path(&format!("{}/config", self.name)),
            )
            .env(
                "CAIRN_CACHE_DIR",
                self.workspace.path(&format!("{}/cache", self.name)),
            );
        if !self.passphrase {
            command.env_remove("CAIRN_PASSWORD");
        }
        command
    }

    fn cairn(&self, args: &[&str]) -> Run {
        let mut all: Vec<OsString> = vec!["--repo".into(), self.workspace.repo().into()];
        all.extend(args.iter().map(OsString::from));
        run_of(self.command().args(all).output().expect("run cairn"))
    }

    fn backup(&self, source: &str) -> String {
        let source = self.workspace.path(source);
        let run = self
            .cairn(&["--json", "backup", source.to_str().unwrap()])
            .ok();
        run.json()["snapshot"].as_str().unwrap().to_string()
    }

    fn restore(&self, snapshot: &str, target: &str) -> Run {
        let target = self.workspace.path(target);
        self.cairn(&["restore", snapshot, "--target", target.to_str().unwrap()])
    }
}

fn owner(workspace: &Workspace) -> Machine<'_> {
    Machine {
        workspace,
        name: "owner",
        passphrase: true,
    }
}

/// A repository made by the owner, and a second host joined to it: the
/// host's request line, added on the owner's machine.
fn repository_with_host(workspace: &Workspace) -> (Machine<'_>, Machine<'_>) {
    let owner = owner(workspace);
    owner.cairn(&["init"]).ok();
    let host = Machine {
        workspace,
        name: "host",
        passphrase: false,
    };
    let request = host.cairn(&["key", "host-init", "--label", "host-b"]).ok();
    let line = request.stdout.trim().to_string();
    assert!(line.starts_with("cairn-host-v1 "), "{}", request.stdout);
    let added = owner
        .cairn(&["key", "add", "--host", &line, "--write-only"])
        .ok();
    assert!(added.stdout.contains("write-only"), "{}", added.stdout);
    (owner, host)
}

#[test]
fn a_second_host_backs_up_and_a_third_machine_with_the_passphrase_restores_it() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    write(&workspace.path("b/data.bin"), &noise(7, 200_000));
    let snapshot = host.backup("b");
    // The host opened its slot with its identity: no passphrase given.
    let third = Machine {
        workspace: &workspace,
        name: "third",
        passphrase: true,
    };
    third.restore(&snapshot, "out3").ok();
    assert_same_tree(&workspace.path("b"), &workspace.path("out3/b"));
    // The list shows both slots and the keyring's two keys.
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    assert_eq!(listed["slots"].as_array().unwrap().len(), 2, "{listed}");
    let entries = listed["keyring"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    assert!(
        listed["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|slot| slot["access"] == "write-only" && slot["label"] == "host-b"),
        "{listed}"
    );
    // The host's identity and signing key are secrets no backup stores.
    let stored = owner.cairn(&[
        "--json",
        "backup",
        workspace.path("host/config").to_str().unwrap(),
    ]);
    let stored = stored.ok().json();
    let left_out = stored["secret_keys_left_out"].as_array().unwrap();
    assert!(left_out.len() >= 2, "{stored}");
    // A write-only host cannot read what it wrote.
    let refused = host.restore(&snapshot, "out-host");
    assert_ne!(refused.code, 0, "{}", refused.stdout);
}

/// The owner's public signing key, as `key list --json` gives it.
fn owner_public_key(owner: &Machine) -> String {
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    let entries = listed["keyring"]["entries"].as_array().unwrap();
    let owner_entry = entries
        .iter()
        .find(|entry| entry["role"] == "owner")
        .unwrap_or_else(|| panic!("no owner in the keyring: {listed}"));
    owner_entry["key"].as_str().unwrap().to_string()
}

#[test]
fn a_third_machine_with_its_own_identity_and_only_the_owners_public_key_restores() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    write(&workspace.path("b/data.bin"), &noise(9, 150_000));
    let snapshot = host.backup("b");
    // The third machine never learns the passphrase: it makes an identity,
    // and the owner wraps the read key for it (a full slot).
    let third = Machine {
        workspace: &workspace,
        name: "third",
        passphrase: false,
    };
    let request = third
        .cairn(&["key", "host-init", "--label", "restore-box"])
        .ok();
    let line = request.stdout.trim().to_string();
    owner.cairn(&["key", "add", "--host", &line]).ok();
    let owner_key = owner_public_key(&owner);
    // It trusts nothing locally but the owner's public key; the keyring
    // the owner signed vouches for the host that wrote the snapshot.
    let target = workspace.path("out3");
    third
        .cairn(&[
            "--trusted-key",
            &owner_key,
            "restore",
            &snapshot,
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_same_tree(&workspace.path("b"), &workspace.path("out3/b"));
    // The attack: the same machine told to trust another key (a
    // stranger's, which signed no keyring) refuses the snapshot,
    // because no trusted owner vouches for the keyring.
    let stranger = "07".repeat(32);
    let refused = third.cairn(&[
        "--trusted-key",
        &stranger,
        "restore",
        &snapshot,
        "--target",
        workspace.path("out4").to_str().unwrap(),
    ]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(!workspace.path("out4/b/data.bin").exists());
}

#[test]
fn a_revoked_key_keeps_its_old_snapshots_and_loses_new_ones() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    write(&workspace.path("b/one.txt"), b"before revocation");
    let before = host.backup("b");
    let host_key = std::fs::read_dir(workspace.path("host/config/keys"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().replace(".key", ""))
        .next()
        .unwrap();
    let revoked = owner.cairn(&["key", "revoke", &host_key]).ok();
    assert!(
        revoked.stdout.contains("1 snapshot(s)"),
        "{}",
        revoked.stdout
    );
    write(&workspace.path("b/two.txt"), b"after revocation");
    let after = host.backup("b");
    let third = Machine {
        workspace: &workspace,
        name: "third",
        passphrase: true,
    };
    third.restore(&before, "old").ok();
    assert_eq!(
        std::fs::read(workspace.path("old/b/one.txt")).unwrap(),
        b"before revocation"
    );
    let refused = third.restore(&after, "new").expect(5);
    assert!(
        refused.stderr.contains("untrusted") || refused.stdout.contains("untrusted"),
        "{}",
        refused.stderr
    );
    // The owner's own list says so too.
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    assert!(listed.to_string().contains("revoked"), "{listed}");
}

#[test]
fn after_rotation_old_and_new_snapshots_restore() {
    let workspace = Workspace::new();
    let owner = owner(&workspace);
    owner.cairn(&["init"]).ok();
    write(&workspace.path("src/a.txt"), b"first");
    let old = owner.backup("src");
    owner.cairn(&["key", "rotate"]).ok();
    write(&workspace.path("src/a.txt"), b"second");
    let new = owner.backup("src");
    let third = Machine {
        workspace: &workspace,
        name: "third",
        passphrase: true,
    };
    third.restore(&old, "old").ok();
    third.restore(&new, "new").ok();
    assert_eq!(
        std::fs::read(workspace.path("old/src/a.txt")).unwrap(),
        b"first"
    );
    assert_eq!(
        std::fs::read(workspace.path("new/src/a.txt")).unwrap(),
        b"second"
    );
    // The new snapshot was signed by the new key, not the revoked one.
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    let entries = listed["keyring"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
}

#[test]
fn passphrase_changes_and_export_import() {
    let workspace = Workspace::new();
    let owner = owner(&workspace);
    owner.cairn(&["init"]).ok();
    let export = owner.cairn(&["key", "export"]).ok().stdout;
    assert!(export.starts_with("cairn key export v1"), "{export}");
    let run = run_of(
        owner
            .command()
            .env("CAIRN_NEW_PASSWORD", "second passphrase")
            .args([
                "--repo",
                workspace.repo().to_str().unwrap(),
                "key",
                "passwd",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The old passphrase no longer opens; the new one does.
    let old = owner.cairn(&["snapshots"]);
    assert_ne!(old.code, 0);
    let new = run_of(
        owner
            .command()
            .env("CAIRN_PASSWORD", "second passphrase")
            .args(["--repo", workspace.repo().to_str().unwrap(), "snapshots"])
            .output()
            .unwrap(),
    );
    assert_eq!(new.code, 0, "{}", new.stderr);
    // With every passphrase lost, the paper export makes a new slot.
    let file = workspace.path("export.txt");
    std::fs::write(&file, &export).unwrap();
    let imported = run_of(
        owner
            .command()
            .env_remove("CAIRN_PASSWORD")
            .env("CAIRN_NEW_PASSWORD", "third passphrase")
            .args([
                "--repo",
                workspace.repo().to_str().unwrap(),
                "key",
                "import",
            ])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let third = run_of(
        owner
            .command()
            .env("CAIRN_PASSWORD", "third passphrase")
            .args(["--repo", workspace.repo().to_str().unwrap(), "snapshots"])
            .output()
            .unwrap(),
    );
    assert_eq!(third.code, 0, "{}", third.stderr);
    // A changed digit is refused by its checksum.
    let mut lines: Vec<String> = export.lines().map(str::to_string).collect();
    let line = lines
        .iter_mut()
        .find(|line| line.starts_with("read-key "))
        .unwrap();
    let last = line.pop().unwrap();
    line.push(if last == '0' { '1' } else { '0' });
    std::fs::write(&file, lines.join("\n")).unwrap();
    let refused = run_of(
        owner
            .command()
            .env("CAIRN_NEW_PASSWORD", "fourth")
            .args([
                "--repo",
                workspace.repo().to_str().unwrap(),
                "key",
                "import",
            ])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert!(refused.stderr.contains("checksum"), "{}", refused.stderr);
}

#[test]
fn a_protected_signing_key_signs_only_with_its_passphrase() {
    let workspace = Workspace::new();
    let owner = owner(&workspace);
    owner.cairn(&["init"]).ok();
    let protect = run_of(
        owner
            .command()
            .env("CAIRN_NEW_PASSWORD", "key passphrase")
            .args([
                "--repo",
                workspace.repo().to_str().unwrap(),
                "key",
                "passwd",
                "--signing-key",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(protect.code, 0, "{}", protect.stderr);
    let key_file = std::fs::read_dir(workspace.path("owner/config/keys"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(text.contains("cairn-protected-secret-key-v1"), "{text}");
    write(&workspace.path("src/a.txt"), b"signed");
    let source = workspace.path("src");
    let backup = |password: &str| {
        run_of(
            owner
                .command()
                .env("CAIRN_KEY_PASSWORD", password)
                .args(["--repo", workspace.repo().to_str().unwrap(), "backup"])
                .arg(&source)
                .output()
                .unwrap(),
        )
    };
    let wrong = backup("not it");
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("does not open"), "{}", wrong.stderr);
    assert_eq!(backup("key passphrase").code, 0);
}

#[test]
fn the_last_full_slot_is_not_removed() {
    let workspace = Workspace::new();
    let owner = owner(&workspace);
    owner.cairn(&["init"]).ok();
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    let slot = listed["slots"][0]["id"].as_str().unwrap().to_string();
    let refused = owner.cairn(&["key", "remove", &slot]).expect(1);
    assert!(refused.stderr.contains("last slot"), "{}", refused.stderr);
    owner.cairn(&["snapshots"]).ok();
}

/// Starts `command`, its output dropped, and SIGKILLs it after `delay`
/// milliseconds: a key change cut off somewhere in its work.
fn kill_after(command: &mut std::process::Command, delay: u64) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay));
    kill(&mut child);
}

#[test]
fn killed_key_changes_leave_a_repository_every_holder_opens() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    write(&workspace.path("b/f.txt"), b"host data");
    host.backup("b");
    // The host's signing key, as the keyring lists it: a revoke round
    // revokes it (again, if an earlier round got that far).
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    let host_key = listed["keyring"]["entries"]
        .as_array()
        .expect("keyring entries")
        .iter()
        .find(|entry| entry["role"] == "writer")
        .and_then(|entry| entry["key"].as_str())
        .expect("the host's key in the keyring")
        .to_string();
    let delays = [5u64, 20, 40, 80, 150, 10, 60, 120];
    for (round, delay) in delays.iter().enumerate() {
        let args: &[&str] = match round % 4 {
            0 => &["key", "add", "--passphrase"],
            1 => &["key", "rotate"],
            3 => &["key", "revoke", &host_key],
            _ => &[
                "key",
                "add",
                "--recipient",
                &"11".repeat(32),
                "--write-only",
            ],
        };
        kill_after(
            owner
                .command()
                .env("CAIRN_NEW_PASSWORD", format!("extra {round}"))
                .arg("--repo")
                .arg(workspace.repo())
                .args(args),
            *delay,
        );
        // The owner's passphrase and the host's identity still open it.
        owner.cairn(&["snapshots"]).ok();
        host.cairn(&["--json", "key", "list"]).ok();
    }
    let third = Machine {
        workspace: &workspace,
        name: "third",
        passphrase: true,
    };
    third.cairn(&["snapshots"]).ok();
}

#[test]
fn a_damaged_keyring_is_named() {
    let workspace = Workspace::new();
    let (owner, _host) = repository_with_host(&workspace);
    let keyrings: Vec<PathBuf> = std::fs::read_dir(workspace.repo().join("keyring"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(keyrings.len(), 1);
    let mut bytes = std::fs::read(&keyrings[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&keyrings[0], bytes).unwrap();
    let name = keyrings[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let run = owner.cairn(&["key", "list"]);
    assert!(run.stderr.contains(&name), "{}", run.stderr);
    // It was the newest this machine had seen: its loss is a roll-back.
    assert!(run.stderr.contains("rolled back"), "{}", run.stderr);
}

/// A machine that joins with `key host-init` and gets a full slot from
/// the owner (`key add --host` without `--write-only`).
fn full_holder<'a>(workspace: &'a Workspace, owner: &Machine, name: &'static str) -> Machine<'a> {
    let holder = Machine {
        workspace,
        name,
        passphrase: false,
    };
    let request = holder.cairn(&["key", "host-init", "--label", name]).ok();
    owner
        .cairn(&["key", "add", "--host", request.stdout.trim()])
        .ok();
    holder
}

/// The id of the key slot labelled `label`, as `key list --json` shows it.
fn slot_labelled(owner: &Machine, label: &str) -> String {
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    listed["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|slot| slot["label"] == label)
        .and_then(|slot| slot["id"].as_str())
        .unwrap_or_else(|| panic!("no slot {label}: {listed}"))
        .to_string()
}

#[test]
fn read_key_rotation_keeps_old_snapshots_for_every_holder_and_cuts_off_a_removed_one() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    let second = full_holder(&workspace, &owner, "second");
    let leaver = full_holder(&workspace, &owner, "leaver");
    // The leaver keeps a paper copy of the keys, then its slot is removed.
    let export = leaver.cairn(&["key", "export"]).ok();
    write(
        &workspace.path("leaver-export.txt"),
        export.stdout.as_bytes(),
    );
    owner
        .cairn(&["key", "remove", &slot_labelled(&owner, "leaver")])
        .ok();
    write(&workspace.path("b/f.txt"), b"host before");
    write(&workspace.path("src/f.txt"), b"owner before");
    let host_before = host.backup("b");
    let owner_before = owner.backup("src");
    let rotated = owner.cairn(&["key", "rotate", "--read"]).ok();
    assert!(
        rotated.stdout.contains("3 key slot(s) rewritten (2 full"),
        "{}",
        rotated.stdout
    );
    // The write-only host learned the new public key from its new slot.
    write(&workspace.path("b/f.txt"), b"host after");
    write(&workspace.path("src/f.txt"), b"owner after");
    let host_after = host.backup("b");
    let owner_after = owner.backup("src");
    let expected = [
        (&host_before, "b", "host before"),
        (&owner_before, "src", "owner before"),
        (&host_after, "b", "host after"),
        (&owner_after, "src", "owner after"),
    ];
    // The owner (passphrase) and the second holder (identity) restore all.
    for holder in [&owner, &second] {
        for (index, (snapshot, dir, text)) in expected.iter().enumerate() {
            let target = format!("{}-{index}", holder.name);
            holder.restore(snapshot, &target).ok();
            let restored = std::fs::read(workspace.path(&format!("{target}/{dir}/f.txt")));
            assert_eq!(restored.unwrap(), text.as_bytes(), "{target}");
        }
    }
    // The removed holder's identity opens nothing now (and it knows no
    // passphrase of a slot).
    let leaver_run = |args: &[&str]| {
        let mut all: Vec<OsString> = vec!["--repo".into(), workspace.repo().into()];
        all.extend(args.iter().map(OsString::from));
        run_of(
            leaver
                .command()
                .env("CAIRN_PASSWORD", "leaver")
                .env("CAIRN_NEW_PASSWORD", "leaver")
                .args(all)
                .output()
                .unwrap(),
        )
    };
    let locked = leaver_run(&["snapshots"]).expect(11);
    assert!(locked.stderr.contains("no key slot"), "{}", locked.stderr);
    // With its paper copy of the old keys (and write access to the
    // storage) it reads what was written before the rotation, not after.
    let export_path = workspace.path("leaver-export.txt");
    leaver_run(&["key", "import", export_path.to_str().unwrap()]).ok();
    let old_target = workspace.path("leaver-old");
    leaver_run(&[
        "restore",
        &host_before,
        "--target",
        old_target.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        std::fs::read(workspace.path("leaver-old/b/f.txt")).unwrap(),
        b"host before"
    );
    for snapshot in [&host_after, &owner_after] {
        let target = workspace.path("leaver-new");
        let refused = leaver_run(&["restore", snapshot, "--target", target.to_str().unwrap()]);
        assert_ne!(refused.code, 0, "{}", refused.stdout);
        assert!(refused.stderr.contains("decrypt"), "{}", refused.stderr);
        assert!(!workspace.path("leaver-new/b/f.txt").exists());
        assert!(!workspace.path("leaver-new/src/f.txt").exists());
    }
}

#[test]
fn a_killed_read_key_rotation_leaves_every_holder_restoring() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    let second = full_holder(&workspace, &owner, "second");
    write(&workspace.path("b/f.txt"), b"host data");
    let snapshot = host.backup("b");
    for (round, delay) in [10u64, 40, 80, 150, 250].iter().enumerate() {
        kill_after(
            owner
                .command()
                .arg("--repo")
                .arg(workspace.repo())
                .args(["key", "rotate", "--read"]),
            *delay,
        );
        // Every holder still opens the repository; the full ones restore.
        owner.restore(&snapshot, &format!("owner-{round}")).ok();
        second.restore(&snapshot, &format!("second-{round}")).ok();
        host.cairn(&["--json", "key", "list"]).ok();
    }
    // Run to its end, the rotation tidies what the killed ones left: one
    // slot per holder, and what the host writes now restores everywhere.
    owner.cairn(&["key", "rotate", "--read"]).ok();
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    assert_eq!(listed["slots"].as_array().unwrap().len(), 3, "{listed}");
    write(&workspace.path("b/f.txt"), b"after");
    let after = host.backup("b");
    for holder in [&owner, &second] {
        for (index, id) in [&snapshot, &after].iter().enumerate() {
            holder
                .restore(id, &format!("{}-end-{index}", holder.name))
                .ok();
        }
    }
    assert_eq!(
        std::fs::read(workspace.path("second-end-1/b/f.txt")).unwrap(),
        b"after"
    );
}

/// What a storage writer who once held the keys (a holder cut off, who
/// kept the id key) plants for a write-only host (FORMAT.md 16.5): a
/// recipient slot for the host's public identity naming an encryption key
/// of its own, listing the config's key as "rotated from" so the slot
/// passes the config check, endorsed by a signing key of its own. Returns
/// the planted slot's id.
fn plant_slot_for(workspace: &Workspace, identity_hex: &str) -> String {
    use cairn_store::Repository;
    use cairn_store::backend::{S3Options, open_backend};
    use cairn_store::format::crypto::RepositoryKeys;
    use cairn_store::format::keys::generate_signing_key;
    use cairn_store::format::keyslot::{KeySlot, SlotPayload};
    use cairn_store::ops::unlock::{unlock_with_passphrase, write_key_slot};
    let backend = open_backend(
        &workspace.repo().display().to_string(),
        &S3Options::default(),
    )
    .unwrap();
    let repository = Repository::open(backend).unwrap();
    let known = unlock_with_passphrase(&repository, TEST_PASSWORD.as_bytes()).unwrap();
    let attacker = RepositoryKeys::generate(*repository.id()).unwrap();
    // The attacker's own encryption key, the repository's id key (so the
    // host still deduplicates and notices nothing), rotated "from" the
    // config's key.
    let planted_keys =
        RepositoryKeys::from_parts(*repository.id(), attacker.public_key(), known.id_key, None)
            .unwrap()
            .with_earlier(&[known.public_key], &[])
            .unwrap();
    let mut payload = SlotPayload::of(&planted_keys, None, "host-b", "2026-12-06T19:00:00Z");
    payload.endorse(&generate_signing_key().unwrap());
    let mut identity = [0u8; 32];
    hex::decode_to_slice(identity_hex, &mut identity).unwrap();
    let slot = KeySlot::wrap_for_recipient(&payload, &identity).unwrap();
    write_key_slot(&repository, &slot).unwrap().to_hex()
}

/// Slots written before endorsements are the same bytes without an
/// `endorsement`: a host whose only slot is such a one still backs up
/// with its identity (FORMAT.md 17.5, "Endorsed slots"), and the owner
/// restores what it wrote.
#[test]
fn a_host_slot_written_before_endorsements_still_opens() {
    use cairn_store::Repository;
    use cairn_store::backend::{S3Options, open_backend};
    use cairn_store::format::keyslot::KeySlot;
    use cairn_store::ops::unlock::{unlock_with_passphrase, write_key_slot};
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
    let slot = listed["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|slot| slot["label"] == "host-b")
        .unwrap_or_else(|| panic!("no slot for host-b: {listed}"))
        .clone();
    let (endorsed, identity_hex) = (
        slot["id"].as_str().unwrap().to_string(),
        slot["recipient"].as_str().unwrap().to_string(),
    );
    // The host's slot again, as cairn wrote it before endorsements.
    let repository = Repository::open(
        open_backend(
            &workspace.repo().display().to_string(),
            &S3Options::default(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut payload = unlock_with_passphrase(&repository, TEST_PASSWORD.as_bytes()).unwrap();
    payload.read_key = None;
    payload.earlier_read_keys.clear();
    payload.label = "host-b".into();
    payload.endorsement = None;
    let mut identity = [0u8; 32];
    hex::decode_to_slice(&identity_hex, &mut identity).unwrap();
    write_key_slot(
        &repository,
        &KeySlot::wrap_for_recipient(&payload, &identity).unwrap(),
    )
    .unwrap();
    let removed: Vec<PathBuf> = walk(&workspace.repo().join("keyslots"))
        .into_iter()
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&endorsed))
        })
        .collect();
    assert_eq!(removed.len(), 1, "the endorsed slot: {removed:?}");
    std::fs::remove_file(&removed[0]).unwrap();

    write(&workspace.path("b/data.bin"), &noise(11, 200_000));
    let snapshot = host.backup("b");
    owner.restore(&snapshot, "out-owner").ok();
    assert_same_tree(&workspace.path("b"), &workspace.path("out-owner/b"));
}

/// Every file of the repository, with its size.
fn repository_files(workspace: &Workspace) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = walk(&workspace.repo())
        .into_iter()
        .filter(|path| path.is_file())
        .map(|path| {
            let size = std::fs::metadata(&path).unwrap().len();
            (path, size)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_recipient_slot_planted_for_a_write_only_host_is_refused_and_nothing_is_written() {
    let workspace = Workspace::new();
    let (owner, host) = repository_with_host(&workspace);
    let identity = {
        let listed = owner.cairn(&["--json", "key", "list"]).ok().json();
        listed["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|slot| slot["label"] == "host-b")
            .and_then(|slot| slot["recipient"].as_str())
            .unwrap_or_else(|| panic!("no recipient slot for host-b: {listed}"))
            .to_string()
    };
    write(&workspace.path("b/data.bin"), &noise(7, 200_000));
    // The host's first backup remembers the owner who endorsed its slot.
    host.backup("b");
    let planted = plant_slot_for(&workspace, &identity);

    // With its real slot still there, the host takes the endorsed one,
    // names the planted one, and the owner reads what it wrote.
    write(&workspace.path("b/data.bin"), &noise(8, 200_000));
    let run = host.cairn(&["--json", "backup", workspace.path("b").to_str().unwrap()]);
    let run = run.ok();
    assert!(
        run.stderr.contains(&planted) && run.stderr.contains("passed over"),
        "the planted slot is not named: {}",
        run.stderr
    );
    let snapshot = run.json()["snapshot"].as_str().unwrap().to_string();
    owner.restore(&snapshot, "out-owner").ok();
    assert_same_tree(&workspace.path("b"), &workspace.path("out-owner/b"));

    // The storage writer deletes the real slot: the host refuses before
    // writing anything, naming the planted slot.
    let real: Vec<PathBuf> = walk(&workspace.repo().join("keyslots"))
        .into_iter()
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            !name.starts_with(&planted)
                && owner.cairn(&["--json", "key", "list"]).ok().json()["slots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|slot| {
                        slot["label"] == "host-b" && name.starts_with(slot["id"].as_str().unwrap())
                    })
        })
        .collect();
    assert_eq!(real.len(), 1, "the host's own slot: {real:?}");
    std::fs::remove_file(&real[0]).unwrap();
    write(&workspace.path("b/data.bin"), &noise(9, 200_000));
    let before = repository_files(&workspace);
    let refused = host.cairn(&["backup", workspace.path("b").to_str().unwrap()]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(&format!("key slot {planted}"))
            && refused
                .stderr
                .contains("not endorsed by an owner this host trusts"),
        "the refusal does not name the planted slot: {}",
        refused.stderr
    );
    assert_eq!(
        repository_files(&workspace),
        before,
        "a refused backup wrote into the repository"
    );

    // A host told the owner's key (`host-init --owner`) refuses a planted
    // slot on its very first run, where trust on first use would take it.
    let pinned = Machine {
        workspace: &workspace,
        name: "pinned",
        passphrase: false,
    };
    let owner_key = owner_public_key(&owner);
    let request = pinned
        .cairn(&[
            "key",
            "host-init",
            "--label",
            "host-c",
            "--owner",
            &owner_key,
        ])
        .ok();
    let line = request.stdout.trim().to_string();
    owner
        .cairn(&["key", "add", "--host", &line, "--write-only"])
        .ok();
    let real: Vec<PathBuf> = walk(&workspace.repo().join("keyslots"))
        .into_iter()
        .filter(|path| path.is_file())
        .collect();
    let pinned_identity = line.split_whitespace().nth(2).unwrap().to_string();
    let planted = plant_slot_for(&workspace, &pinned_identity);
    for path in &real {
        std::fs::remove_file(path).unwrap();
    }
    let refused = pinned.cairn(&["backup", workspace.path("b").to_str().unwrap()]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(&format!("key slot {planted}")),
        "{}",
        refused.stderr
    );
    let remembered = std::fs::read_dir(workspace.path("pinned/config/slot-owners"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(remembered.len(), 1);
    assert!(
        remembered[0].starts_with(&owner_key),
        "the planter was remembered as the owner: {remembered:?}"
    );
}
