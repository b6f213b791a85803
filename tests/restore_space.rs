//! Restores into a target that is too small (a real tmpfs of 8 MiB): the
//! preflight refuses with the `space` verdict; overridden, the disk fills
//! mid-write and nothing half-built is left in place: a new component is
//! never renamed into place, an in-place restore rolls back, and the exit
//! code says the target could not be written (9), not damage (4).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// Mounts an 8 MiB tmpfs at `at`; `None` (with the reason printed)
    /// where mounting is not permitted.
    fn tmpfs(at: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(at).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(at)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Mounted(at.to_path_buf())),
            Ok(output) => {
                println!(
                    "skipped: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                println!("skipped: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn restore(workspace: &Workspace, snapshot: &str, target: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "restore".into(),
        snapshot.into(),
        "--target".into(),
        target.into(),
        // Over an existing target: confirmed, as a runbook does.
        "--yes".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    workspace.cairn_repo(args)
}

#[test]
fn a_target_too_small_is_refused_in_preflight_and_running_out_mid_write_leaves_nothing_half_built()
{
    let workspace = Workspace::new();
    workspace.init();
    let data = workspace.path("site/data");
    write(&data.join("a.txt"), b"the small state\n");
    let small = workspace.backup_json([
        "--component".as_ref(),
        format!("data={}", data.display()).as_ref() as &std::ffi::OsStr,
    ])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    write(&data.join("a.txt"), b"the big state\n");
    for (index, name) in ["b.bin", "c.bin", "d.bin"].iter().enumerate() {
        write(&data.join(name), &noise(index as u64 + 1, 3_500_000));
    }
    let big = workspace.backup_json([
        "--component".as_ref(),
        format!("data={}", data.display()).as_ref() as &std::ffi::OsStr,
    ])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    let Some(_mounted) = Mounted::tmpfs(&workspace.path("small-disk")) else {
        return;
    };
    let target = workspace.path("small-disk/target");

    // Refused before anything is written, naming the check.
    let refused = restore(&workspace, &big, &target, &[]);
    assert_eq!(refused.code, 5, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stdout.contains("preflight space")
            && refused.stdout.contains("too little free space"),
        "{}",
        refused.stdout
    );
    assert!(refused.stderr.contains("space check"), "{}", refused.stderr);
    assert!(!target.exists(), "nothing written");

    // Overridden: the disk fills while the new component is built in its
    // staging directory, which is never renamed into place.
    let full = restore(&workspace, &big, &target, &["--allow-low-space"]);
    assert_eq!(full.code, 9, "{}\n{}", full.stdout, full.stderr);
    assert!(
        full.stderr.contains("No space left on device")
            && full.stderr.contains("the target could not be written"),
        "{}",
        full.stderr
    );
    assert!(
        !target.join("data").exists(),
        "a half-built component appeared: {:?}",
        walk(&target)
    );
    assert_eq!(
        walk(&workspace.path("small-disk")),
        std::slice::from_ref(&target),
        "only the (empty) target: no staging directory or temporary left behind"
    );

    // In place: the small state is there, the big one does not fit; the
    // restore rolls back to exactly what was there.
    let fits = restore(&workspace, &small, &target, &[]);
    assert_eq!(fits.code, 0, "{}\n{}", fits.stdout, fits.stderr);
    let over = restore(&workspace, &big, &target, &["--allow-low-space"]);
    assert_eq!(over.code, 9, "{}\n{}", over.stdout, over.stderr);
    assert!(
        over.stderr.contains("put back exactly as it was"),
        "{}",
        over.stderr
    );
    assert_eq!(
        std::fs::read(target.join("data/a.txt")).unwrap(),
        b"the small state\n"
    );
    let mut left: Vec<PathBuf> = walk(&target.join("data"))
        .into_iter()
        .filter(|path| path.is_file())
        .collect();
    left.sort();
    assert_eq!(left, [target.join("data/a.txt")], "{left:?}");
}
