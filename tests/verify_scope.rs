//! Audits a nightly job can size: slices that cover every pack over t runs,
//! byte budgets and percentages, and audits limited to one snapshot or
//! component.

mod common;
use common::*;
use std::fs;

/// A repository with one snapshot per component name, each in its own packs.
fn repository_with_snapshots(workspace: &Workspace, names: &[&str]) -> Vec<String> {
    workspace.init_plaintext();
    names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let source = workspace.path(&format!("sources/{name}"));
            write(&source.join("data.bin"), &noise(index as u64 + 10, 300_000));
            let component = format!("{name}={}", source.display());
            workspace.backup_json(["--component", component.as_str()])["snapshot"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn slices_n_of_t_read_every_pack_exactly_once_over_t_runs() {
    let workspace = Workspace::new();
    repository_with_snapshots(&workspace, &["a", "b", "c", "d", "e", "f"]);
    let total = workspace.packs().len() as u64;
    let mut read = 0;
    for n in 1..=3 {
        let (code, report) = workspace.verify_json(&["--read-data-subset", &format!("{n}/3")]);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["packs_in_scope"], total);
        read += report["packs_read"].as_u64().unwrap();
    }
    assert_eq!(read, total, "the three slices together read each pack once");

    // A damaged pack is caught by exactly one of the slices.
    let victim = &data_packs(&workspace.packs())[0];
    let mut bytes = fs::read(victim).unwrap();
    bytes[100] ^= 0x01;
    fs::write(victim, bytes).unwrap();
    let damaged: Vec<i32> = (1..=3)
        .map(|n| {
            workspace
                .verify_json(&["--read-data-subset", &format!("{n}/3")])
                .0
        })
        .collect();
    assert_eq!(
        damaged.iter().filter(|&&code| code == 4).count(),
        1,
        "{damaged:?}"
    );
    assert_eq!(
        damaged.iter().filter(|&&code| code == 0).count(),
        2,
        "{damaged:?}"
    );
}

#[test]
fn byte_budgets_and_percentages_bound_what_is_read() {
    let workspace = Workspace::new();
    repository_with_snapshots(&workspace, &["a", "b", "c", "d"]);
    let total = workspace.packs().len() as u64;
    let (_, one) = workspace.verify_json(&["--read-data-subset", "1"]);
    assert_eq!(one["packs_read"], 1, "a tiny budget still reads one pack");
    let (_, all) = workspace.verify_json(&["--read-data-subset", "5G"]);
    assert_eq!(all["packs_read"], total);
    let (_, everything) = workspace.verify_json(&["--read-data-subset", "100%"]);
    assert_eq!(everything["packs_read"], total);
    let (_, half) = workspace.verify_json(&["--read-data-subset", "50%"]);
    assert_eq!(half["packs_read"], total.div_ceil(2));
    let (_, none) = workspace.verify_json(&[]);
    assert_eq!(none["packs_read"], 0, "plain verify reads no data");
}

#[test]
fn a_bad_subset_is_refused_naming_the_flag() {
    let workspace = Workspace::new();
    repository_with_snapshots(&workspace, &["a"]);
    for bad in ["0%", "150%", "0/3", "4/3", "five", "3X"] {
        let run = workspace
            .cairn_repo(["verify", "--read-data-subset", bad])
            .expect(2);
        assert!(
            run.stderr.contains("--read-data-subset"),
            "{bad}: {}",
            run.stderr
        );
    }
}

#[test]
fn an_audit_limited_to_a_snapshot_or_component_sees_only_its_damage() {
    let workspace = Workspace::new();
    let snapshots = repository_with_snapshots(&workspace, &["a", "b"]);
    // Lose the data pack of the second snapshot.
    let before: Vec<_> = workspace.packs();
    let b_data = data_packs(&before)
        .into_iter()
        .find(|pack| {
            let ids: Vec<_> = header_of(pack).blobs.iter().map(|blob| blob.id).collect();
            let listed = workspace
                .cairn_repo(["--json", "ls", snapshots[1].as_str(), "b/data.bin"])
                .ok()
                .json();
            let chunk = listed[0]["chunks"][0].as_str().unwrap().to_string();
            ids.iter().any(|id| id.to_hex() == chunk)
        })
        .expect("the pack holding b's data");
    fs::remove_file(&b_data).unwrap();

    let (code, report) = workspace.verify_json(&["--read-data", "--snapshot", &snapshots[0]]);
    assert_eq!(code, 0, "snapshot a is whole: {report:#}");
    assert_eq!(report["snapshots"], 1);
    let (code, report) = workspace.verify_json(&["--read-data", "--snapshot", &snapshots[1]]);
    assert_eq!(code, 4, "{report:#}");
    assert_eq!(report["damaged_snapshots"][0], &snapshots[1][..8]);

    let (code, _) = workspace.verify_json(&["--read-data", "--component", "a"]);
    assert_eq!(code, 0);
    let (code, _) = workspace.verify_json(&["--component", "b"]);
    assert_eq!(code, 4);
    let run = workspace
        .cairn_repo(["verify", "--component", "nosuch"])
        .expect(1);
    assert!(run.stderr.contains("nosuch"), "{}", run.stderr);
}
