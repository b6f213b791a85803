//! Backups need no lock: several processes writing into one repository at
//! once all succeed, the repository verifies, and every snapshot restores.

mod common;
use common::*;
use std::process::Stdio;

fn concurrent_backups_of_overlapping_data(count: usize) {
    let workspace = Workspace::new();
    workspace.init();
    // Each source shares one large file with the others and has its own.
    let shared = noise(99, 4_000_000);
    let sources: Vec<_> = (0..count)
        .map(|index| {
            let source = workspace.path(&format!("source{index}"));
            write(&source.join("shared.bin"), &shared);
            write(&source.join("own.bin"), &noise(index as u64, 2_000_000));
            write(
                &source.join("notes/readme.md"),
                format!("source {index}\n").as_bytes(),
            );
            source
        })
        .collect();
    let children: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(index, source)| {
            workspace
                .command()
                .args([
                    "--repo".as_ref(),
                    workspace.repo().as_os_str(),
                    "--json".as_ref(),
                    "backup".as_ref(),
                ])
                .arg("--component")
                .arg(format!("part{index}={}", source.display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start backup")
        })
        .collect();
    let snapshots: Vec<String> = children
        .into_iter()
        .map(|child| {
            let run = run_of(child.wait_with_output().expect("backup finishes")).ok();
            run.json()["snapshot"].as_str().unwrap().to_string()
        })
        .collect();

    let report = workspace
        .cairn_repo(["--json", "verify", "--read-data"])
        .ok()
        .json();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["snapshots"], count);
    for (index, snapshot) in snapshots.iter().enumerate() {
        let target = workspace.path(&format!("restored{index}"));
        workspace.restore(snapshot, &target).ok();
        assert_same_tree(&sources[index], &target.join(format!("part{index}")));
    }
    // A later backup of everything finds all of it already stored.
    let again = workspace.backup_json([
        "--component".to_string(),
        format!("part0={}", sources[0].display()),
    ]);
    assert_eq!(again["new_chunks"], 0, "{again}");
}

#[test]
fn two_concurrent_backups_succeed_and_verify() {
    concurrent_backups_of_overlapping_data(2);
}

#[test]
fn four_concurrent_backups_succeed_and_verify() {
    concurrent_backups_of_overlapping_data(4);
}
