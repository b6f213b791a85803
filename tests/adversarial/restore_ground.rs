//! Findings of the integrity review answered here (see main.rs): 5 (cairn
//! never stores its own secret keys), 6 (a restore holds its ground against
//! a local user swapping directories for symlinks; staging files are
//! private and removed on Ctrl-C) and 9 (a root restore applies owners and
//! special mode bits only when asked; `undo-restore` acts only on journals
//! this host wrote).

use crate::common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Polls `condition` every 20 ms for up to `seconds`.
fn wait_for(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// A child `cairn` that is killed if the test fails before it ends.
struct Running(Option<std::process::Child>);

impl Running {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("running")
    }

    fn finish(mut self) -> std::process::Output {
        self.0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("reap")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The command a test's `cairn` started, killed when the test ends
/// whatever happened (the test's own grandchild, or no process by then).
struct KillCommand(i32);

impl Drop for KillCommand {
    fn drop(&mut self) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Every path of a snapshot's component, as `cairn ls` lists it.
fn listing(ws: &Workspace, snapshot: &str, component: &str) -> String {
    ws.cairn_repo(["ls", snapshot, component]).ok().stdout
}

#[test]
fn finding_5_secret_key_files_are_never_backed_up() {
    let ws = Workspace::new();
    ws.init_plaintext();
    let keys: Vec<PathBuf> = fs::read_dir(ws.path("config/keys"))
        .expect("init wrote a key")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key_name = keys[0].file_name().unwrap().to_string_lossy().into_owned();
    // A home directory: its own files, and a copy of the key someone left
    // lying around under another name.
    write(&ws.path("home/notes.txt"), b"my notes\n");
    fs::copy(&keys[0], ws.path("home/old-signing-key.json")).expect("stray key");

    let run = ws
        .cairn_repo([
            "backup".as_ref(),
            "--component".as_ref(),
            format!("config={}", ws.path("config").display()).as_ref(),
            "--component".as_ref(),
            format!("home={}", ws.path("home").display()).as_ref(),
        ] as [&std::ffi::OsStr; 5])
        .ok();
    assert!(
        run.stderr.contains(&key_name),
        "the warning names the config directory's key: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("old-signing-key.json"),
        "the warning names the stray key: {}",
        run.stderr
    );

    let config = listing(&ws, "latest", "config");
    assert!(!config.contains(&key_name), "key stored: {config}");
    assert!(config.contains("trusted"), "the rest is stored: {config}");
    let home = listing(&ws, "latest", "home");
    assert!(
        !home.contains("old-signing-key"),
        "stray key stored: {home}"
    );
    assert!(home.contains("notes.txt"), "{home}");

    let target = ws.path("target");
    ws.restore("latest", &target).ok();
    assert!(!target.join("config/keys").join(&key_name).exists());
    assert!(!target.join("home/old-signing-key.json").exists());
    assert_eq!(
        fs::read(target.join("home/notes.txt")).expect("notes"),
        b"my notes\n"
    );
}

#[test]
fn finding_6_symlink_swapped_directory_is_refused() {
    let ws = Workspace::new();
    ws.init_plaintext();
    let source = ws.path("source/app");
    write(&source.join("sub/file"), &noise(6, 20_000));
    write(&source.join("kept/other"), b"other\n");
    fs::set_permissions(source.join("sub"), fs::Permissions::from_mode(0o777)).expect("chmod");
    ws.cairn_repo(["backup".as_ref(), source.as_os_str()]).ok();
    // The pack holding the files' content (safety snapshots add others).
    let packs = data_packs(&ws.packs());

    // 1. Planted before the restore: where the snapshot has a directory,
    // the existing target holds a symlink to a directory outside it.
    let outside = ws.path("outside");
    fs::create_dir(&outside).expect("outside");
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).expect("chmod");
    let target = ws.path("target");
    ws.restore("latest", &target).ok();
    fs::remove_dir_all(target.join("app/sub")).expect("remove sub");
    std::os::unix::fs::symlink(&outside, target.join("app/sub")).expect("plant symlink");
    ws.restore("latest", &target).ok();
    assert!(
        fs::symlink_metadata(target.join("app/sub"))
            .expect("sub")
            .is_dir(),
        "the symlink was replaced by the directory"
    );
    assert_eq!(walk(&outside), Vec::<PathBuf>::new(), "written outside");
    assert_eq!(
        fs::metadata(&outside).expect("outside").mode() & 0o7777,
        0o700,
        "outside's mode changed"
    );

    // 2. Swapped during the restore: the data pack is held back (a FIFO
    // stands in its place) until the restore has made its directories, then
    // `sub` becomes a symlink to the outside directory.
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack = &packs[0];
    fs::rename(pack, ws.path("held-pack")).expect("hold the pack back");
    let fifo = std::ffi::CString::new(pack.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    let fresh = ws.path("fresh");
    let restore = Running(Some(
        ws.command()
            .args(["--repo".as_ref(), ws.repo().as_os_str()])
            .args(["restore", "latest", "--target"])
            .arg(&fresh)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start restore"),
    ));
    let made_sub = || {
        walk(&fresh)
            .into_iter()
            .find(|path| path.file_name().is_some_and(|name| name == "sub") && path.is_dir())
    };
    assert!(wait_for(30, || made_sub().is_some()), "no directory made");
    let sub = made_sub().expect("sub");
    fs::rename(&sub, ws.path("moved-sub")).expect("move sub away");
    std::os::unix::fs::symlink(&outside, &sub).expect("swap in the symlink");
    // Let the restore go on: it reads the FIFO (and fails to read it).
    let writer = fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .expect("open FIFO");
    let output = restore.finish();
    drop(writer);
    let run = run_of(output);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert_eq!(walk(&outside), Vec::<PathBuf>::new(), "written outside");
    assert_eq!(
        fs::metadata(&outside).expect("outside").mode() & 0o7777,
        0o700,
        "outside's mode changed through the symlink: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("sub") && run.stderr.contains("replaced"),
        "the swapped directory is named: {}",
        run.stderr
    );
    fs::remove_file(pack).expect("remove FIFO");
    fs::rename(ws.path("held-pack"), pack).expect("put the pack back");
}

#[test]
fn finding_6_staging_files_are_private_and_removed_on_sigint() {
    let ws = Workspace::new();
    ws.init_plaintext();
    let tmp = ws.path("tmp");
    fs::create_dir(&tmp).expect("tmp");
    let pid_file = ws.path("child.pid");
    let command = format!(
        "dump=echo $$ > {}; printf 'rows'; exec sleep 60",
        pid_file.display()
    );
    let mut backup = Running(Some(
        ws.command()
            .env("TMPDIR", &tmp)
            .args(["--repo".as_ref(), ws.repo().as_os_str()])
            .args(["backup", "--command", &command])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start backup"),
    ));
    assert!(
        wait_for(30, || fs::read_to_string(&pid_file)
            .is_ok_and(|pid| pid.ends_with('\n'))),
        "the command never started"
    );
    let child: i32 = fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    let _command = KillCommand(child);

    // While it runs, the command's output is staged under the cache
    // directory, privately; nothing under the world's TMPDIR.
    let staged: Vec<PathBuf> = walk(&ws.path("cache"))
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "dump"))
        .collect();
    assert_eq!(staged.len(), 1, "staged under the cache: {staged:?}");
    assert_eq!(walk(&tmp), Vec::<PathBuf>::new(), "staged in TMPDIR");
    let file_mode = fs::metadata(&staged[0]).expect("staged").mode() & 0o777;
    assert_eq!(file_mode & 0o077, 0, "staged file mode {file_mode:o}");
    let directory = staged[0].parent().expect("directory");
    let directory_mode = fs::metadata(directory).expect("directory").mode() & 0o777;
    assert_eq!(directory_mode, 0o700, "staging directory mode");

    // SAFETY: sending a signal to the child we started.
    assert_eq!(
        unsafe { libc::kill(backup.child().id() as i32, libc::SIGINT) },
        0
    );
    let ended = wait_for(20, || backup.child().try_wait().expect("poll").is_some());
    assert!(ended, "cairn kept running after SIGINT");
    let output = backup.finish();
    assert_eq!(
        output.status.code(),
        Some(130),
        "exit status {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!staged[0].exists(), "staged output left behind");
    assert!(!directory.exists(), "staging directory left behind");
    // The command was killed with the backup (then reaped by init).
    let gone = wait_for(10, || {
        fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|stat| {
                stat.split(") ")
                    .nth(1)
                    .is_some_and(|rest| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    });
    assert!(gone, "the command kept running after cairn was interrupted");
}

#[test]
fn finding_9_root_restore_does_not_apply_owner_or_setuid_by_default() {
    if !running_as_root() {
        eprintln!("skipped: owners can only be given as root");
        return;
    }
    let ws = Workspace::new();
    ws.init_plaintext();
    let source = ws.path("source/app");
    write(&source.join("bin/tool"), b"#!/bin/sh\n");
    write(&source.join("shared/file"), b"data\n");
    let chown =
        |path: &Path| std::os::unix::fs::chown(path, Some(4321), Some(4321)).expect("chown");
    chown(&source.join("bin/tool"));
    chown(&source.join("shared"));
    fs::set_permissions(source.join("bin/tool"), fs::Permissions::from_mode(0o6755))
        .expect("setuid");
    fs::set_permissions(source.join("shared"), fs::Permissions::from_mode(0o1777)).expect("sticky");
    ws.cairn_repo(["backup".as_ref(), source.as_os_str()]).ok();

    let plain = ws.path("plain");
    ws.restore("latest", &plain).ok();
    let tool = fs::metadata(plain.join("app/bin/tool")).expect("tool");
    assert_eq!((tool.uid(), tool.gid()), (0, 0), "owner applied by default");
    assert_eq!(tool.mode() & 0o7777, 0o755, "setuid applied by default");
    let shared = fs::metadata(plain.join("app/shared")).expect("shared");
    assert_eq!(shared.uid(), 0, "directory owner applied by default");
    assert_eq!(
        shared.mode() & 0o7777,
        0o777,
        "sticky bit applied by default"
    );

    let asked = ws.path("asked");
    ws.cairn_repo([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        asked.as_os_str(),
        "--same-owner".as_ref(),
        "--keep-special-bits".as_ref(),
    ] as [&std::ffi::OsStr; 6])
        .ok();
    let tool = fs::metadata(asked.join("app/bin/tool")).expect("tool");
    assert_eq!((tool.uid(), tool.gid()), (4321, 4321));
    assert_eq!(tool.mode() & 0o7777, 0o6755);
    let shared = fs::metadata(asked.join("app/shared")).expect("shared");
    assert_eq!((shared.uid(), shared.mode() & 0o7777), (4321, 0o1777));
}

#[test]
fn finding_9_undo_restore_refuses_a_foreign_journal() {
    let ws = Workspace::new();
    ws.init_plaintext();
    let source = ws.path("source/app");
    write(&source.join("a.txt"), b"from the snapshot\n");
    ws.cairn_repo(["backup".as_ref(), source.as_os_str()]).ok();
    let target = ws.path("target");
    ws.restore("latest", &target).ok();
    write(&target.join("app/a.txt"), b"changed since\n");
    write(&target.join("app/b.txt"), b"the restore leaves me\n");
    let report = ws
        .cairn_repo([
            "--json".as_ref(),
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ] as [&std::ffi::OsStr; 5])
        .ok()
        .json();
    let safety = report["safety_snapshot"]
        .as_str()
        .expect("a safety snapshot")
        .to_string();

    // Another machine (its own config directory, trusting the same key)
    // is handed the safety snapshot: its journal was not written there.
    let elsewhere = ws.path("elsewhere");
    copy_tree(&ws.path("config/trusted"), &elsewhere.join("trusted"));
    let run = run_of(
        ws.command()
            .env("CAIRN_CONFIG_DIR", &elsewhere)
            .args(["--repo".as_ref(), ws.repo().as_os_str()])
            .args(["undo-restore", &safety])
            .output()
            .expect("run cairn"),
    );
    assert_ne!(
        run.code, 0,
        "a foreign journal was acted on: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&safety[..12]) && run.stderr.contains("journal"),
        "the refusal names the safety snapshot and its journal: {}",
        run.stderr
    );
    assert_eq!(
        fs::read(target.join("app/a.txt")).expect("a"),
        b"from the snapshot\n",
        "nothing undone"
    );

    // A journal on this host that names a path outside the restore's
    // target is refused by name, and nothing is done.
    let journals: Vec<PathBuf> = walk(&ws.path("config"))
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(&safety) && path.is_file())
        .collect();
    assert_eq!(
        journals.len(),
        1,
        "this host keeps the journal: {journals:?}"
    );
    let victim = ws.path("victim.txt");
    write(&victim, b"not the restore's\n");
    let mut journal: serde_json::Value =
        serde_json::from_slice(&fs::read(&journals[0]).expect("journal")).expect("JSON");
    let created = journal["components"][0]["created"]
        .as_array_mut()
        .expect("created");
    created.push(serde_json::json!({
        "path": victim, "kind": "file", "hash": cairn_store::Id::of(b"not the restore's\n").to_hex()
    }));
    fs::write(&journals[0], serde_json::to_vec(&journal).expect("encode")).expect("plant");
    let run = ws.cairn_repo(["undo-restore", &safety]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&victim.display().to_string()),
        "the path outside is named: {}",
        run.stderr
    );
    assert!(victim.exists(), "a path outside the target was removed");
    assert_eq!(
        fs::read(target.join("app/a.txt")).expect("a"),
        b"from the snapshot\n"
    );

    // The genuine journal still undoes the restore.
    journal["components"][0]["created"]
        .as_array_mut()
        .expect("created")
        .pop();
    fs::write(&journals[0], serde_json::to_vec(&journal).expect("encode")).expect("restore");
    ws.cairn_repo(["undo-restore", &safety]).ok();
    assert_eq!(
        fs::read(target.join("app/a.txt")).expect("a"),
        b"changed since\n"
    );
}

/// Copies a directory tree of plain files (the trust store: one directory
/// per repository, one file per key).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
