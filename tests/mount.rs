//! `cairn mount`: the repository as a read-only FUSE filesystem, mounted by
//! the real binary and read with ordinary file calls. The files read
//! through it match the source (bytes, sizes, mtimes, modes, symlinks);
//! the grouping directories list what the snapshots hold; a damaged pack
//! gives EIO on the file it costs, never other bytes; SIGTERM unmounts.
//!
//! These tests need FUSE: /dev/fuse and root (CI runs as root on Debian).
//! Without it they fail and say so; they never skip.

mod common;
use common::*;

use cairn_store::format::pack::BlobEntry;
use filetime::{FileTime, set_file_mtime, set_symlink_file_times};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `cairn mount` running in the background; unmounted (SIGTERM, then a
/// lazy unmount if need be) when dropped, so a failing test leaves no
/// mount behind in its temporary directory.
struct Mounted {
    child: Option<Child>,
    at: PathBuf,
}

impl Mounted {
    /// Mounts the workspace's repository at `at` and waits until the
    /// grouping directories show.
    fn start(workspace: &Workspace, at: &Path) -> Mounted {
        assert!(
            Path::new("/dev/fuse").exists(),
            "FUSE is not available here: /dev/fuse is missing (these tests need it, and root; CI installs fuse3 in .ci/run)"
        );
        fs::create_dir_all(at).unwrap();
        let child = workspace
            .command()
            .arg("--repo")
            .arg(workspace.repo())
            .arg("mount")
            .arg(at)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cairn mount");
        let mut mounted = Mounted {
            child: Some(child),
            at: at.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !at.join("snapshots").is_dir() {
            let child = mounted.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                let child = mounted.child.take().unwrap();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "cairn mount ended before the view showed ({status}); FUSE may be unusable here:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the mount did not show within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        mounted
    }

    /// Sends SIGTERM and returns the exit code and what the mount said.
    fn stop(mut self) -> (i32, String) {
        let child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let output = child.wait_with_output().unwrap();
        let code = output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0));
        (code, String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        if is_mounted(&self.at) {
            let path = std::ffi::CString::new(self.at.to_str().unwrap()).unwrap();
            // SAFETY: a valid path; lazy unmount has no other precondition.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Whether the kernel lists a mount at `path`.
fn is_mounted(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(path.to_str().unwrap()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn backup(workspace: &Workspace, host: &str, components: &[String]) -> String {
    let mut args = vec!["--host".to_string(), host.to_string()];
    for component in components {
        args.push("--component".into());
        args.push(component.clone());
    }
    workspace.backup_json(&args)["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string()
}

/// A source tree with what a mount must show faithfully: a file of
/// several chunks, an empty file, an executable, a private file, a nested
/// directory, a symlink, and set mtimes.
fn make_source(root: &Path) {
    write(&root.join("big.bin"), &noise(1, 3_000_000));
    write(&root.join("empty"), b"");
    write(&root.join("run.sh"), b"#!/bin/sh\necho hello\n");
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&root.join("secret.txt"), b"private words\n");
    fs::set_permissions(root.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&root.join("deep/er/notes.txt"), b"some notes\n");
    symlink("deep/er/notes.txt", root.join("link")).unwrap();
    for (index, name) in [
        "big.bin",
        "empty",
        "run.sh",
        "secret.txt",
        "deep/er/notes.txt",
    ]
    .iter()
    .enumerate()
    {
        let time = FileTime::from_unix_time(1_700_000_000 + index as i64 * 1000, 123_456_789);
        set_file_mtime(root.join(name), time).unwrap();
    }
    let link_time = FileTime::from_unix_time(1_600_000_000, 5);
    set_symlink_file_times(root.join("link"), link_time, link_time).unwrap();
}

#[test]
fn mount_shows_snapshots_by_id_host_and_component_with_the_source_bytes_and_metadata() {
    let workspace = Workspace::new();
    workspace.init();
    let source = workspace.path("src");
    make_source(&source);
    let single = workspace.path("single.db");
    write(&single, b"one file as a component\n");
    let components = [
        format!("app={}", source.display()),
        format!("single={}", single.display()),
    ];
    let first = backup(&workspace, "alpha", &components);
    let old_notes = b"some notes\n".to_vec();
    write(
        &source.join("deep/er/notes.txt"),
        b"changed notes, longer than before\n",
    );
    set_file_mtime(
        source.join("deep/er/notes.txt"),
        FileTime::from_unix_time(1_750_000_000, 0),
    )
    .unwrap();
    let second = backup(&workspace, "beta", &components);

    let at = workspace.path("mnt");
    let mounted = Mounted::start(&workspace, &at);

    assert_eq!(names(&at), ["components", "hosts", "latest", "snapshots"]);
    assert_eq!(names(&at.join("snapshots")), {
        let mut ids = vec![first[..8].to_string(), second[..8].to_string()];
        ids.sort();
        ids
    });
    assert_eq!(
        fs::read_link(at.join("latest")).unwrap(),
        PathBuf::from(format!("snapshots/{}", &second[..8]))
    );
    assert_eq!(names(&at.join("hosts")), ["alpha", "beta"]);
    assert_eq!(names(&at.join("components")), ["app", "single"]);
    let times = names(&at.join("components/app"));
    assert_eq!(times.len(), 3, "two times and latest: {times:?}");
    assert!(times.contains(&"latest".to_string()), "{times:?}");
    let alpha = names(&at.join("hosts/alpha"));
    assert_eq!(alpha.len(), 2, "one time and latest: {alpha:?}");
    assert_eq!(
        fs::read_link(at.join("hosts/alpha/latest")).unwrap(),
        PathBuf::from(&alpha[0])
    );
    assert_eq!(
        names(&at.join("hosts/alpha").join(&alpha[0])),
        ["app", "single"]
    );

    // The newest snapshot is the source, byte for byte and mode for mode,
    // by every path that leads to it.
    assert_same_tree(&source, &at.join("latest/app"));
    assert_same_tree(&source, &at.join("hosts/beta/latest/app"));
    assert_same_tree(&source, &at.join("components/app/latest"));
    assert_eq!(
        fs::read(at.join("latest/single")).unwrap(),
        fs::read(&single).unwrap()
    );
    assert_eq!(
        fs::read(at.join("components/single/latest")).unwrap(),
        fs::read(&single).unwrap()
    );
    // The first snapshot still has the old notes, with their old mtime.
    let old = at.join("hosts/alpha/latest/app/deep/er/notes.txt");
    assert_eq!(fs::read(&old).unwrap(), old_notes);
    let metadata = fs::metadata(&old).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime(&metadata),
        1_700_000_000 + 4 * 1000
    );
    // Reads at an offset inside a later chunk give those bytes.
    let big = noise(1, 3_000_000);
    let mut file = fs::File::open(at.join("latest/app/big.bin")).unwrap();
    let mut middle = vec![0u8; 100_000];
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(2_500_000)).unwrap();
    std::io::Read::read_exact(&mut file, &mut middle).unwrap();
    assert_eq!(middle, big[2_500_000..2_600_000]);
    // Read-only.
    let refused = fs::write(at.join("latest/app/new.txt"), b"no").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");
    drop(file);

    let (code, stderr) = mounted.stop();
    assert_eq!(code, 143, "SIGTERM ends the mount with 143: {stderr}");
    assert!(stderr.contains("unmounted"), "{stderr}");
    assert!(!is_mounted(&at), "still mounted after SIGTERM");
    assert!(
        names(&at).is_empty(),
        "the mountpoint is its empty self again"
    );
}

#[test]
fn a_damaged_pack_gives_eio_on_the_file_it_costs_and_the_others_still_read() {
    let workspace = Workspace::new();
    // Plaintext, so the test can find the blob it damages in the pack.
    workspace.init_plaintext();
    let source = workspace.path("src");
    let names_in_source = ["a.bin", "b.bin", "c.bin", "d.bin"];
    for (seed, name) in names_in_source.iter().enumerate() {
        write(&source.join(name), &noise(seed as u64 + 10, 200_000));
    }
    let snapshot = backup(&workspace, "alpha", &[format!("src={}", source.display())]);

    // Flip a byte in the middle of the data pack's blobs; `ls --json`
    // says which file holds the chunk there.
    let packs = data_packs(&workspace.packs());
    assert_eq!(packs.len(), 1, "one data pack: {packs:?}");
    let header = header_of(&packs[0]);
    let last = header.blobs.last().expect("blobs");
    let middle = (8 + last.offset + u64::from(last.length)) / 2;
    let hit: &BlobEntry = header
        .blobs
        .iter()
        .find(|blob| blob.offset <= middle && middle < blob.offset + u64::from(blob.length))
        .expect("a blob covers the middle");
    let chunk = hit.id.to_hex();
    let listing = workspace
        .cairn_repo(["--json", "ls", &snapshot])
        .ok()
        .json();
    let damaged: Vec<String> = listing
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| {
            entry["chunks"]
                .as_array()
                .is_some_and(|chunks| chunks.iter().any(|c| c.as_str() == Some(&chunk)))
        })
        .map(|entry| {
            entry["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("src/")
                .to_string()
        })
        .collect();
    assert_eq!(
        damaged.len(),
        1,
        "one file holds chunk {chunk}: {damaged:?}"
    );
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[middle as usize] ^= 0x01;
    fs::write(&packs[0], &bytes).unwrap();

    let at = workspace.path("mnt");
    let mounted = Mounted::start(&workspace, &at);
    for name in names_in_source {
        let path = at.join("latest/src").join(name);
        let read = fs::read(&path);
        if name == damaged[0] {
            let error = read.expect_err("a damaged file must not read");
            assert_eq!(error.raw_os_error(), Some(libc::EIO), "{name}: {error}");
        } else {
            assert_eq!(
                read.unwrap(),
                fs::read(source.join(name)).unwrap(),
                "{name}"
            );
        }
    }
    let (code, stderr) = mounted.stop();
    assert_eq!(code, 143, "{stderr}");
    assert!(
        stderr.contains(&format!("src/{}", damaged[0])) && stderr.contains(&chunk[..16]),
        "the mount names the damaged file and chunk: {stderr}"
    );
}

#[test]
fn a_mountpoint_that_is_not_a_directory_is_refused_by_name() {
    let workspace = Workspace::new();
    workspace.init();
    let missing = workspace.path("no-such-dir");
    let run = workspace
        .cairn_repo(["mount", missing.to_str().unwrap()])
        .expect(1);
    assert!(
        run.stderr.contains("no-such-dir") && run.stderr.contains("not an existing directory"),
        "{}",
        run.stderr
    );
}
