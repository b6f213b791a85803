//! The first session a user has: init, back up, list, restore, verify.

mod common;
use common::*;

#[test]
fn init_backup_restore_verify() {
    let workspace = Workspace::new();
    workspace.init();
    write(&workspace.path("src/hello.txt"), b"hello");
    write(&workspace.path("src/deep/er/file.bin"), &noise(1, 300_000));
    let summary = workspace.backup_json([workspace.path("src")]);
    assert_eq!(summary["components"][0]["name"], "src");
    assert_eq!(summary["components"][0]["files"], 2);
    workspace
        .cairn_repo(["restore", "latest", "--target"])
        .expect(2);
    workspace
        .cairn_repo(["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), workspace.path("out").as_os_str()])
        .ok();
    assert_same_tree(&workspace.path("src"), &workspace.path("out/src"));
    workspace.cairn_repo(["verify", "--read-data"]).ok();
}
