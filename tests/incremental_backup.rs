//! Re-backups read only what changed: files whose size, mtime, ctime and
//! inode match the parent snapshot are taken from it unread, and a rewrite
//! that puts the old mtime back is still caught.

mod common;
use common::*;
use std::fs;

#[test]
fn an_unchanged_tree_is_not_read_again() {
    let workspace = Workspace::new();
    workspace.init();
    for index in 0..50 {
        write(
            &workspace.path(&format!("src/dir{}/file{index}.bin", index % 5)),
            &noise(index, 20_000),
        );
    }
    let first = workspace.backup_json([
        "--component".as_ref(),
        format!("data={}", workspace.path("src").display()).as_ref() as &std::ffi::OsStr,
    ]);
    assert_eq!(first["unchanged_files"], 0);
    let second = workspace.backup_json([
        "--component".as_ref(),
        format!("data={}", workspace.path("src").display()).as_ref() as &std::ffi::OsStr,
    ]);
    assert_eq!(second["unchanged_files"], 50, "{second}");
    assert_eq!(second["new_chunks"], 0);
    assert_eq!(second["parent"], first["snapshot"]);
    assert_eq!(
        second["components"][0]["tree"], first["components"][0]["tree"],
        "an unchanged directory encodes to the same tree"
    );
    let forced = workspace.backup_json([
        "--force-read".as_ref(),
        "--component".as_ref(),
        format!("data={}", workspace.path("src").display()).as_ref() as &std::ffi::OsStr,
    ]);
    assert_eq!(forced["unchanged_files"], 0, "{forced}");
}

#[test]
fn a_rewrite_that_keeps_size_and_mtime_is_still_backed_up() {
    let workspace = Workspace::new();
    workspace.init();
    let file = workspace.path("src/db.bin");
    write(&file, &noise(1, 100_000));
    write(&workspace.path("src/other.bin"), &noise(2, 100_000));
    let component = format!("data={}", workspace.path("src").display());
    workspace.backup_json(["--component", component.as_str()]);

    // Same size, same mtime put back: only ctime betrays the change.
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&file).unwrap());
    let mut changed = noise(1, 100_000);
    changed[50_000] ^= 0xff;
    fs::write(&file, &changed).unwrap();
    filetime::set_file_mtime(&file, mtime).unwrap();

    let second = workspace.backup_json(["--component", component.as_str()]);
    assert_eq!(
        second["unchanged_files"], 1,
        "only other.bin is unchanged: {second}"
    );
    workspace.restore("latest", &workspace.path("out")).ok();
    assert_eq!(
        fs::read(workspace.path("out/data/db.bin")).unwrap(),
        changed
    );
}
