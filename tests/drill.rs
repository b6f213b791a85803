//! Drills: a rehearsal of a good snapshot passes and is recorded; one of a
//! snapshot whose data was damaged fails, naming the component; a plan's
//! own check command runs on the restored file.

mod common;
use common::*;

use std::os::unix::fs::FileExt;

fn history_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_drill_passes_on_a_good_snapshot_and_fails_naming_the_damaged_component() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let site = workspace.path("site");
    write(&site.join("notes/a.md"), b"# notes\n");
    write(&site.join("vectors/segment.bin"), &noise(5, 3_000_000));
    let plan = site.join("cairn.toml");
    write(
        &plan,
        format!(
            r#"repository = "{repo}"

[[component]]
name = "notes"
kind = "files"
path = "notes"
check = "test -f \"$CAIRN_FILE/a.md\""

[[component]]
name = "vectors"
kind = "files"
path = "vectors"
"#,
            repo = workspace.repo().display()
        )
        .as_bytes(),
    );
    workspace
        .cairn(["backup".as_ref(), "--plan".as_ref(), plan.as_os_str()])
        .ok();
    let history = workspace.path("drills.jsonl");
    let drill = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--json".into(),
            "drill".into(),
            "--plan".into(),
            plan.clone().into(),
            "--history".into(),
            history.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        workspace.cairn(args)
    };

    let run = drill(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lines = history_lines(&history);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["ok"], true);
    let components = lines[0]["components"].as_array().unwrap();
    assert_eq!(components.len(), 2);
    for component in components {
        assert_eq!(component["ok"], true, "{component}");
        assert!(component["seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(component["files"], 1);
    }

    // Damage the vectors' data: one byte inside a stored chunk.
    let pack = data_packs(&workspace.packs())
        .into_iter()
        .find(|pack| header_of(pack).blobs.len() > 10)
        .expect("a pack of vector chunks");
    let blob = header_of(&pack).blobs[5];
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, blob.offset + 7).unwrap();
    file.write_all_at(&[byte[0] ^ 0x55], blob.offset + 7)
        .unwrap();

    let run = drill(&[]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    let lines = history_lines(&history);
    assert_eq!(lines.len(), 2, "each drill appends one line");
    assert_eq!(lines[1]["ok"], false);
    let verdicts: Vec<(String, bool)> = lines[1]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [("notes".to_string(), true), ("vectors".to_string(), false)]
    );
    assert!(
        !lines[1]["components"][1]["problems"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{}",
        lines[1]
    );
}

#[test]
fn a_failing_check_command_fails_the_drill() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let site = workspace.path("site");
    write(&site.join("dump/data.sql"), b"");
    let plan = site.join("cairn.toml");
    write(
        &plan,
        format!(
            r#"repository = "{repo}"

[[component]]
name = "dump"
kind = "files"
path = "dump"
check = "test -s \"$CAIRN_FILE/data.sql\""
"#,
            repo = workspace.repo().display()
        )
        .as_bytes(),
    );
    workspace
        .cairn(["backup".as_ref(), "--plan".as_ref(), plan.as_os_str()])
        .ok();
    let history = workspace.path("drills.jsonl");
    let run = workspace.cairn([
        "drill".as_ref(),
        "--plan".as_ref(),
        plan.as_os_str(),
        "--history".as_ref(),
        history.as_os_str(),
    ]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("dump")
            && run.stdout.contains("FAILED")
            && run.stdout.contains("check"),
        "{}",
        run.stdout
    );
}
