//! Delta-encoded chunks (docs/FORMAT.md section 7.1): a file rewritten in
//! place with a few changed words per 4 KiB block is stored, night after
//! night, as patches against the parent snapshot's chunks; it restores and
//! verifies byte-identical, survives a prune of the snapshot that named its
//! bases, keeps chains within the bound, and a damaged base is reported as
//! damage, never papered over.

mod common;
use common::rewrites::{rewrite_in_place, vector_index};
use common::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;

fn backup(workspace: &Workspace, source: &Path) -> serde_json::Value {
    let component = format!("index={}", source.display());
    workspace.backup_json(["--component", component.as_str()])
}

#[test]
fn an_in_place_rewrite_is_stored_as_deltas_restored_and_kept_through_prune() {
    // The same two nights into two repositories: in one the file keeps its
    // path (its parent version is the base), in the other it is renamed,
    // so its changed chunks are stored as a plain night stores them.
    let (deltas, plain) = (Workspace::new(), Workspace::new());
    deltas.init();
    plain.init();
    let mut content = vector_index(1);
    let file = deltas.path("src/data_level0.bin");
    write(&file, &content);
    write(&plain.path("src/data_level0.bin"), &content);
    let first = backup(&deltas, &deltas.path("src"));
    backup(&plain, &plain.path("src"));

    rewrite_in_place(&mut content, 2, 45);
    write(&file, &content);
    fs::remove_file(plain.path("src/data_level0.bin")).unwrap();
    write(&plain.path("src/renamed.bin"), &content);
    let second = backup(&deltas, &deltas.path("src"));
    let renamed = backup(&plain, &plain.path("src"));

    assert_eq!(renamed["delta_chunks"], 0, "{renamed}");
    assert!(second["delta_chunks"].as_u64().unwrap() > 0, "{second}");
    assert_eq!(second["new_chunks"], renamed["new_chunks"], "same chunks");
    let (with, without) = (
        second["stored_bytes"].as_u64().unwrap(),
        renamed["stored_bytes"].as_u64().unwrap(),
    );
    // Measured about 1/12; a fifth leaves a wide margin.
    assert!(
        with * 5 < without,
        "a night of deltas stored {with} bytes, a plain night {without}"
    );

    // Restored and verified byte for byte, through the bases.
    let snapshot = second["snapshot"].as_str().unwrap();
    let target = deltas.path("restored");
    deltas.restore(snapshot, &target).ok();
    assert_eq!(
        file_hash(&target.join("index/data_level0.bin")),
        file_hash(&file),
        "restored through its bases"
    );
    let (code, report) = deltas.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report}");

    // The night whose chunks are the bases is forgotten and pruned: the
    // bases stay while the deltas need them.
    let base_snapshot = first["snapshot"].as_str().unwrap();
    deltas.cairn_repo(["forget", base_snapshot]).ok();
    deltas.cairn_repo(["prune"]).ok();
    let again = deltas.path("again");
    deltas.restore(snapshot, &again).ok();
    assert_eq!(
        file_hash(&again.join("index/data_level0.bin")),
        file_hash(&file),
        "restorable after its bases' snapshot was pruned"
    );
    let (code, report) = deltas.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report}");
}

/// Every delta's base, by the packs' own headers.
fn bases(workspace: &Workspace) -> HashMap<String, String> {
    data_packs(&workspace.packs())
        .iter()
        .flat_map(|pack| header_of(pack).blobs)
        .filter_map(|entry| Some((entry.id.to_hex(), entry.base?.to_hex())))
        .collect()
}

/// Restores `snapshot` into a new directory `name` and checks that its
/// `index/data_level0.bin` is the file at `source` now.
fn assert_restores_as(workspace: &Workspace, snapshot: &str, name: &str, source: &Path) {
    let target = workspace.path(name);
    let run = workspace.restore(snapshot, &target);
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    assert_eq!(
        file_hash(&target.join("index/data_level0.bin")),
        file_hash(&source.join("data_level0.bin")),
        "{name}"
    );
}

/// Two nights of a vector index in a new plaintext repository, the second
/// patched against the first, and then the first night's data packs (the
/// bases) lost.
struct LostBases {
    workspace: Workspace,
    source: std::path::PathBuf,
    /// The file as the first night had it.
    first_version: Vec<u8>,
    first: serde_json::Value,
    second: serde_json::Value,
    /// The lost packs, where they were and what they held.
    lost_packs: Vec<(std::path::PathBuf, Vec<u8>)>,
}

fn two_nights_then_lose_the_first(seed: u64) -> LostBases {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("src");
    let mut content = vector_index(seed);
    let first_version = content.clone();
    write(&source.join("data_level0.bin"), &content);
    let first = backup(&workspace, &source);
    let first_packs = data_packs(&workspace.packs());
    rewrite_in_place(&mut content, 2, 45);
    write(&source.join("data_level0.bin"), &content);
    let second = backup(&workspace, &source);
    assert!(second["delta_chunks"].as_u64().unwrap() > 0, "{second}");
    let mut lost_packs = Vec::new();
    for pack in first_packs {
        lost_packs.push((pack.clone(), fs::read(&pack).unwrap()));
        fs::remove_file(pack).unwrap();
    }
    LostBases {
        workspace,
        source,
        first_version,
        first,
        second,
        lost_packs,
    }
}

#[test]
fn chains_stay_bounded_and_a_damaged_base_is_damage() {
    // Plaintext: the test reads and damages packs.
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let mut content = vector_index(3);
    let file = workspace.path("src/data_level0.bin");
    write(&file, &content);
    backup(&workspace, &workspace.path("src"));
    let mut last = None;
    for n in 2..=5 {
        rewrite_in_place(&mut content, n, 30);
        write(&file, &content);
        last = Some(backup(&workspace, &workspace.path("src")));
    }
    let last = last.unwrap();

    let bases = bases(&workspace);
    let depth = |id: &String| {
        let (mut id, mut depth) = (id.clone(), 0);
        while let Some(base) = bases.get(&id) {
            depth += 1;
            id = base.clone();
        }
        depth
    };
    let deepest = bases.keys().map(depth).max().unwrap_or(0);
    assert_eq!(deepest, 2, "chains reach the bound of 2 and never pass it");

    // A copy into another repository writes every chunk whole: the
    // destination never holds a delta whose base it might lack.
    let copied = workspace.path("copy");
    let like = workspace.repo();
    workspace
        .cairn([
            "--repo".as_ref(),
            copied.as_os_str(),
            "init".as_ref(),
            "--plaintext".as_ref(),
            "--like".as_ref(),
            like.as_os_str(),
        ])
        .ok();
    workspace
        .cairn([
            "copy".as_ref(),
            "--from".as_ref(),
            like.as_os_str(),
            "--to".as_ref(),
            copied.as_os_str(),
        ])
        .ok();
    let copied_bases: usize = walk(&copied.join("data"))
        .iter()
        .filter(|path| path.is_file())
        .flat_map(|pack| header_of(pack).blobs)
        .filter(|entry| entry.base.is_some())
        .count();
    assert_eq!(copied_bases, 0, "the copy holds no delta");
    let from_copy = workspace.path("from-copy");
    workspace
        .cairn([
            "--repo".as_ref(),
            copied.as_os_str(),
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            from_copy.as_os_str(),
            "--yes".as_ref(),
        ])
        .ok();
    assert_eq!(
        file_hash(&from_copy.join("index/data_level0.bin")),
        file_hash(&file)
    );

    // Damage one whole base that a delta of the last night needs: the
    // restore names the damage and exits 4; nothing wrong is written.
    let tree = fs::read(&file).unwrap();
    let needed: Vec<&String> = bases
        .values()
        .filter(|base| !bases.contains_key(*base))
        .collect();
    let victim = needed.first().expect("a whole base");
    let mut damaged = false;
    for pack in data_packs(&workspace.packs()) {
        let header = header_of(&pack);
        if let Some(entry) = header.blobs.iter().find(|e| &e.id.to_hex() == *victim) {
            // Bytes all through its stored piece: one flip in the middle
            // of a shared frame may land in another blob's bytes, and
            // leave this one intact (seen under load, where packing order
            // varies).
            let mut bytes = fs::read(&pack).unwrap();
            let start = entry.offset as usize;
            for at in (start..start + entry.length as usize).step_by(16) {
                bytes[at] ^= 0x40;
            }
            fs::write(&pack, &bytes).unwrap();
            damaged = true;
        }
    }
    assert!(damaged, "the base's pack was found");
    let target = workspace.path("restored");
    let run = workspace.restore(last["snapshot"].as_str().unwrap(), &target);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("base") || run.stderr.contains(victim.as_str()),
        "{}",
        run.stderr
    );
    let restored = target.join("index/data_level0.bin");
    assert!(
        !restored.exists() || fs::read(&restored).unwrap() != tree || run.code != 0,
        "never a wrong file reported as restored"
    );
}

/// A prune that deletes one copy of a base (a pack an earlier prune
/// repacked and marked) and, in the same run, repacks a delta that needs
/// that base decodes the delta through the copy that stays. Which copy
/// the index files name first is the order they are listed in, so each
/// round builds the case afresh. Before the fix, six runs of this test all
/// failed (at rounds 0, 0, 0, 3, 4 and 5) with "pack ... is missing from
/// the repository"; it was seen first in the concurrent forget/prune test.
#[test]
fn a_prune_repacks_a_delta_whose_base_it_deletes_a_copy_of() {
    for round in 0..8u64 {
        let workspace = Workspace::new();
        workspace.init_plaintext();
        let source = workspace.path("src");
        let mut content = vector_index(10 + round);
        write(&source.join("data_level0.bin"), &content);
        write(&source.join("gone.bin"), &noise(round, 256 * 1024));
        let first = backup(&workspace, &source);

        // Night 2: the index patched against night 1's chunks, and a file
        // that only night 2 holds, in the deltas' pack.
        rewrite_in_place(&mut content, 2, 45);
        write(&source.join("data_level0.bin"), &content);
        fs::remove_file(source.join("gone.bin")).unwrap();
        write(&source.join("night2.bin"), &noise(100 + round, 256 * 1024));
        let second = backup(&workspace, &source);
        assert!(second["delta_chunks"].as_u64().unwrap() > 0, "{second}");
        // Night 3: the same deltas, without night 2's own file.
        fs::remove_file(source.join("night2.bin")).unwrap();
        backup(&workspace, &source);

        // Night 1 forgotten: its pack is repacked (its bases copied out,
        // since night 2's deltas need them) and marked.
        let prune = ["prune", "--grace", "0s", "--max-unused", "0%"];
        workspace
            .cairn_repo(["forget", first["snapshot"].as_str().unwrap()])
            .ok();
        workspace.cairn_repo(prune).ok();
        // Night 2 forgotten: this prune deletes night 1's marked pack and
        // repacks the deltas' pack, decoding each delta through its base.
        workspace
            .cairn_repo(["forget", second["snapshot"].as_str().unwrap()])
            .ok();
        let run = workspace.cairn_repo(prune);
        assert_eq!(run.code, 0, "round {round}: {}", run.stderr);

        assert_restores_as(&workspace, "latest", &format!("restored-{round}"), &source);
        let (code, report) = workspace.verify_json(&["--read-data"]);
        assert_eq!(code, 0, "round {round}: {report}");
    }
}

/// A pack of bases is lost and the next backup stores those chunks again
/// elsewhere: verify decodes the deltas through the copies that exist,
/// reports the lost pack (damage, but every snapshot restorable) and no
/// delta as corrupt. Which copy the index files list first varies, so the
/// case is built afresh each round.
/// The file as the first night had it, kept in `kept/` and backed up as
/// component `kept`: stored whole, a second copy of every base (the
/// directory is returned).
fn back_up_the_first_version_again(lost: &LostBases) -> std::path::PathBuf {
    let kept = lost.workspace.path("kept");
    write(&kept.join("data_level0.bin"), &lost.first_version);
    let component = format!("kept={}", kept.display());
    lost.workspace
        .backup_json(["--component", component.as_str()]);
    kept
}

#[test]
fn verify_decodes_deltas_through_a_base_stored_again_after_its_pack_was_lost() {
    for round in 0..8u64 {
        let lost = two_nights_then_lose_the_first(20 + round);
        let workspace = &lost.workspace;
        // The old version, kept elsewhere, is backed up again and stored
        // whole: the lost bases exist again.
        back_up_the_first_version_again(&lost);

        let report = workspace.verify_finds_damage_without_loss(&format!("round {round}"));
        for finding in findings(&report) {
            assert_eq!(
                finding["kind"], "missing-pack",
                "round {round}: {finding:#}"
            );
        }
        let snapshot = lost.second["snapshot"].as_str().unwrap();
        assert_restores_as(
            workspace,
            snapshot,
            &format!("restored-{round}"),
            &lost.source,
        );
    }
}

/// The pack of a night's bases is lost, and the file (unchanged since the
/// night of its deltas) is backed up again: a delta whose base is gone is
/// not reused, so the new snapshot stores those chunks whole again and
/// restores. Verify then names only the night the loss did damage: where
/// it reads a delta's failing copy, it finds the sound one, so the night
/// of the deltas restores too. Which copy verify reads first is the order
/// the index files are listed in, so the case is built afresh each round.
#[test]
fn the_next_backup_after_a_lost_base_pack_stores_its_deltas_again() {
    for round in 0..6u64 {
        let lost = two_nights_then_lose_the_first(30 + round);
        let (workspace, source) = (&lost.workspace, &lost.source);
        let third = backup(workspace, source);
        for (name, night) in [("third", &third), ("second", &lost.second)] {
            let snapshot = night["snapshot"].as_str().unwrap();
            assert_restores_as(workspace, snapshot, &format!("{name}-{round}"), source);
        }
        // The night whose pack was lost is damage; the two later nights
        // are not, and no blob is listed for `repair snapshots` to drop
        // files over. A failing copy that was read is still reported.
        let (code, report) = workspace.verify_json(&["--read-data"]);
        assert_eq!(code, 4, "round {round}: {report:#}");
        let first_id = &lost.first["snapshot"].as_str().unwrap()[..8];
        assert_eq!(
            report["damaged_snapshots"],
            serde_json::json!([first_id]),
            "round {round}: {report:#}"
        );
        assert_eq!(report["corrupt_blobs"], serde_json::json!([]), "{report:#}");
        for finding in findings(&report) {
            let message = finding["message"].as_str().unwrap();
            let restorable = message.contains("restorable from another copy");
            assert!(
                finding["kind"] == "missing-pack" || restorable,
                "round {round}: {finding:#}"
            );
        }
    }
}

/// Flips bytes all through the stored pieces of `pack` at `offsets` (a
/// flip in a shared frame's middle could miss the blob it was meant for).
fn rot_pieces(pack: &Path, pieces: &[(u64, u32)]) {
    let mut bytes = fs::read(pack).unwrap();
    for &(offset, length) in pieces {
        let start = offset as usize;
        for at in (start..start + length as usize).step_by(16) {
            bytes[at] ^= 0x40;
        }
    }
    fs::write(pack, &bytes).unwrap();
}

/// A delta's base held in two packs, one copy rotted, is read from the
/// sound one: by restore and by verify, which reports the rotted copy as
/// damage that costs no snapshot. The first night's pack is lost, the
/// old version is backed up again (stored whole: a second copy of every
/// base), and the lost pack comes back. Half of the pieces holding bases
/// then rot in the old copy, and pieces whose every blob is still sound
/// there rot in the new one, so that whichever copy the index names
/// first, some deltas meet a rotted base first and no blob loses both.
#[test]
fn deltas_decode_through_the_sound_copy_of_a_base_whose_other_copy_rotted() {
    let lost = two_nights_then_lose_the_first(50);
    let workspace = &lost.workspace;
    let kept = back_up_the_first_version_again(&lost);
    for (pack, bytes) in &lost.lost_packs {
        fs::write(pack, bytes).unwrap();
    }

    let used: std::collections::HashSet<String> = bases(workspace).into_values().collect();
    // Each data pack's stored pieces: (offset, length) and the blobs in it.
    type Pieces = std::collections::BTreeMap<(u64, u32), Vec<String>>;
    let pieces_of = |pack: &Path| -> Pieces {
        let mut pieces = Pieces::new();
        for entry in header_of(pack).blobs {
            let piece = pieces.entry((entry.offset, entry.length)).or_default();
            piece.push(entry.id.to_hex());
        }
        pieces
    };
    let old_packs: Vec<&Path> = lost
        .lost_packs
        .iter()
        .map(|(pack, _)| pack.as_path())
        .collect();
    let (mut rotted_old, mut old_ids) = (std::collections::HashSet::new(), Vec::new());
    for pack in &old_packs {
        let with_bases: Vec<_> = pieces_of(pack)
            .into_iter()
            .inspect(|(_, ids)| old_ids.extend(ids.iter().cloned()))
            .filter(|(_, ids)| ids.iter().any(|id| used.contains(id)))
            .collect();
        let rot: Vec<(u64, u32)> = with_bases
            .iter()
            .step_by(2)
            .map(|(piece, _)| *piece)
            .collect();
        for (piece, ids) in &with_bases {
            if rot.contains(piece) {
                rotted_old.extend(ids.iter().cloned());
            }
        }
        rot_pieces(pack, &rot);
    }
    let mut rotted_new = 0;
    for pack in data_packs(&workspace.packs()) {
        if old_packs.contains(&pack.as_path()) {
            continue;
        }
        let rot: Vec<(u64, u32)> = pieces_of(&pack)
            .into_iter()
            .filter(|(_, ids)| {
                ids.iter().any(|id| used.contains(id))
                    && ids
                        .iter()
                        .all(|id| old_ids.contains(id) && !rotted_old.contains(id))
            })
            .map(|(piece, _)| piece)
            .collect();
        rotted_new += rot.len();
        rot_pieces(&pack, &rot);
    }
    assert!(
        !rotted_old.is_empty() && rotted_new > 0,
        "both copies rot in part"
    );

    let second = lost.second["snapshot"].as_str().unwrap();
    assert_restores_as(workspace, second, "second", &lost.source);
    let first = lost.first["snapshot"].as_str().unwrap();
    assert_restores_as(workspace, first, "first", &kept);
    let report = workspace.verify_finds_damage_without_loss("both copies rot in part");
    assert_eq!(report["corrupt_blobs"], serde_json::json!([]), "{report:#}");
    for finding in findings(&report) {
        let message = finding["message"].as_str().unwrap();
        assert!(
            finding["kind"] == "corrupt-pack" || message.contains("restorable from another copy"),
            "{finding:#}"
        );
    }
}
