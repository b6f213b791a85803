//! Storing only what changed, and getting back only what was asked for.

mod common;
use common::*;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;

const MIB: usize = 1 << 20;

/// `cairn restore SNAPSHOT --target TARGET EXTRA...`
fn restore(workspace: &Workspace, snapshot: &str, target: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<OsString> = vec![
        "restore".into(),
        snapshot.into(),
        "--target".into(),
        target.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    workspace.cairn_repo(args)
}

/// The names directly inside `directory`, sorted; none if it is absent.
fn names_in(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(directory) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// The chunk ids of one file, from `cairn --json ls SNAPSHOT PATH`.
fn chunks_of(workspace: &Workspace, snapshot: &str, path: &str) -> Vec<String> {
    let listed = workspace
        .cairn_repo(["--json", "ls", snapshot, path])
        .ok()
        .json();
    let entries = listed.as_array().expect("ls --json prints an array");
    assert_eq!(entries.len(), 1, "ls of one file lists one entry: {listed}");
    assert_eq!(entries[0]["path"], path);
    assert_eq!(entries[0]["kind"], "file");
    entries[0]["chunks"]
        .as_array()
        .expect("a file entry lists its chunks")
        .iter()
        .map(|chunk| chunk.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn backing_up_the_same_data_twice_adds_almost_nothing() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let source = workspace.path("data");
    let mut total = 0;
    for i in 0..10 {
        let contents = noise(i, MIB + i as usize * 1000);
        total += contents.len();
        write(&source.join(format!("noise/{i}.bin")), &contents);
    }
    for i in 0..10 {
        let line = format!("log line {i}: something happened at step {{}}\n");
        let mut text = String::new();
        let mut step = 0;
        while text.len() < MIB {
            text.push_str(&line.replace("{}", &step.to_string()));
            step += 1;
        }
        total += text.len();
        write(&source.join(format!("text/{i}.log")), text.as_bytes());
    }
    assert!(total >= 20 * MIB);

    let first = workspace.backup_json([&source]);
    assert_eq!(first["components"][0]["files"], 20);
    let after_first = workspace.repo_size();
    assert!(
        after_first > total as u64 / 2,
        "the first backup stores the data"
    );

    // Read everything again (no shortcut through the parent snapshot): the
    // chunks are all known already.
    let second = workspace.backup_json(["--force-read".as_ref(), source.as_os_str()]);
    let after_second = workspace.repo_size();
    let added = after_second - after_first;
    assert!(
        added < total as u64 / 100,
        "second backup of identical data added {added} bytes to the repository (data: {total})"
    );
    assert_eq!(second["new_bytes"], 0, "{second}");
    assert_eq!(second["new_chunks"], 0, "{second}");
    assert_ne!(first["snapshot"], second["snapshot"]);
    assert_eq!(second["parent"], first["snapshot"]);

    // A copy of the same data elsewhere, under another name (new inodes, no
    // parent snapshot to lean on), is deduplicated by content just the same.
    let copy = workspace.path("copy");
    for path in walk(&source) {
        if path.is_file() {
            write(
                &copy.join(path.strip_prefix(&source).unwrap()),
                &fs::read(&path).unwrap(),
            );
        }
    }
    let third = workspace.backup_json([&copy]);
    assert_eq!(third["components"][0]["name"], "copy");
    assert_eq!(third["components"][0]["bytes"], total as u64);
    let added = workspace.repo_size() - after_second;
    assert!(
        added < total as u64 / 100,
        "backup of a copy added {added} bytes to the repository (data: {total})"
    );
    // Only the tree blobs (new inodes and times) are new, never file data.
    assert!(
        third["new_bytes"].as_u64().unwrap() < total as u64 / 100,
        "{third}"
    );
}

#[test]
fn inserting_one_byte_reuses_almost_every_chunk() {
    const SIZE: usize = 100 * MIB;
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let file = workspace.path("vm/disk.img");
    let mut contents = noise(42, SIZE);
    write(&file, &contents);
    let first = workspace.backup_json([workspace.path("vm")]);
    let first_id = first["snapshot"].as_str().unwrap().to_string();

    contents.insert(SIZE / 2 + 12_345, 0x5a);
    write(&file, &contents);
    let second = workspace.backup_json([workspace.path("vm")]);
    let second_id = second["snapshot"].as_str().unwrap().to_string();
    assert_eq!(second["components"][0]["bytes"], SIZE as u64 + 1);

    let before = chunks_of(&workspace, &first_id, "vm/disk.img");
    let after = chunks_of(&workspace, &second_id, "vm/disk.img");
    let known: HashSet<&String> = before.iter().collect();
    let reused = after.iter().filter(|chunk| known.contains(chunk)).count();
    assert!(
        reused * 100 >= after.len() * 95,
        "only {reused} of {} chunks re-used after a one-byte insertion",
        after.len()
    );
    assert_ne!(before, after, "the change must show in the chunk list");

    let new_bytes = second["new_bytes"].as_u64().unwrap();
    assert!(
        new_bytes < SIZE as u64 / 100,
        "second backup stored {new_bytes} new bytes for a one-byte insertion"
    );
    assert!(new_bytes > 0, "the inserted byte must be stored somewhere");

    // And the edited file is what comes back.
    let target = workspace.path("out");
    restore(&workspace, &second_id, &target, &[]).ok();
    assert_eq!(file_hash(&target.join("vm/disk.img")), file_hash(&file));
}

/// A snapshot of three components `a`, `b` and `c`.
fn three_components(workspace: &Workspace) -> String {
    components_named(workspace, &["a", "b", "c"])
}

/// A snapshot of one small component per name, in that order.
fn components_named(workspace: &Workspace, names: &[&str]) -> String {
    workspace.init_plaintext();
    for name in names {
        write(
            &workspace.path(&format!("sources/{name}/file-{name}.txt")),
            format!("contents of {name}\n").as_bytes(),
        );
        write(
            &workspace.path(&format!("sources/{name}/sub/more.bin")),
            &noise(name.as_bytes()[0] as u64, 50_000),
        );
    }
    let mut args: Vec<OsString> = Vec::new();
    for name in names {
        args.push("--component".into());
        args.push(
            format!(
                "{name}={}",
                workspace.path(&format!("sources/{name}")).display()
            )
            .into(),
        );
    }
    let summary = workspace.backup_json(args);
    let backed_up: Vec<&str> = summary["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|component| component["name"].as_str().unwrap())
        .collect();
    assert_eq!(backed_up, names);
    summary["snapshot"].as_str().unwrap().to_string()
}

#[test]
fn restore_only_restores_exactly_the_named_components() {
    let workspace = Workspace::new();
    let snapshot = three_components(&workspace);
    let target = workspace.path("only");
    restore(&workspace, &snapshot, &target, &["--only", "a,c"]).ok();
    assert_eq!(names_in(&target), ["a", "c"]);
    assert_same_tree(&workspace.path("sources/a"), &target.join("a"));
    assert_same_tree(&workspace.path("sources/c"), &target.join("c"));

    // Repeating the flag works like a comma-separated list.
    let target = workspace.path("only-repeated");
    restore(
        &workspace,
        &snapshot,
        &target,
        &["--only", "b", "--only", "c"],
    )
    .ok();
    assert_eq!(names_in(&target), ["b", "c"]);
}

#[test]
fn restoring_one_component_reads_little_beyond_its_own_data() {
    // Two components of incompressible bytes, read side by side: each keeps
    // its own packs, so restoring one does not also read the other's blobs
    // lying between its own.
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let mut args: Vec<OsString> = Vec::new();
    for (name, seed) in [("a", 11), ("b", 12)] {
        let source = workspace.path(&format!("sources/{name}"));
        write(&source.join("data.bin"), &noise(seed, 6 * MIB));
        args.push("--component".into());
        args.push(format!("{name}={}", source.display()).into());
    }
    let snapshot = workspace.backup_json(args)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = workspace.path("only-a");
    let report = workspace
        .cairn_repo([
            OsStr::new("--json"),
            OsStr::new("restore"),
            OsStr::new(&snapshot),
            OsStr::new("--target"),
            target.as_os_str(),
            OsStr::new("--only"),
            OsStr::new("a"),
        ])
        .ok()
        .json();
    assert_same_tree(&workspace.path("sources/a"), &target.join("a"));
    // Not exactly 6 MiB: chunks enter a pack in the order their parallel
    // compression ends, so a window's spans may cover some of the next
    // window's blobs. Interleaved with the other component's, it read
    // about twice the component.
    let fetched = report["bytes_fetched"].as_u64().unwrap();
    assert!(fetched >= (6 * MIB) as u64, "{report:#}");
    assert!(
        fetched < (9 * MIB) as u64,
        "read {fetched} bytes for a component of 6 MiB: {report:#}"
    );
}

#[test]
fn restore_skip_leaves_out_the_named_components() {
    let workspace = Workspace::new();
    let snapshot = three_components(&workspace);
    let target = workspace.path("skip");
    restore(&workspace, &snapshot, &target, &["--skip", "b"]).ok();
    assert_eq!(names_in(&target), ["a", "c"]);
    assert_same_tree(&workspace.path("sources/a"), &target.join("a"));
    assert_same_tree(&workspace.path("sources/c"), &target.join("c"));
}

#[test]
fn restore_of_an_unknown_component_fails_naming_it_and_writes_nothing() {
    let workspace = Workspace::new();
    let snapshot = three_components(&workspace);
    for (flag, value) in [
        ("--only", "nosuch"),
        ("--only", "a,nosuch"),
        ("--skip", "nosuch"),
    ] {
        let target = workspace.path("nothing");
        let run = restore(&workspace, &snapshot, &target, &[flag, value]).expect(1);
        assert!(
            run.stderr.starts_with("cairn: error:") && run.stderr.contains("nosuch"),
            "{flag}: stderr does not name the component: {}",
            run.stderr
        );
        assert!(
            !target.exists() || names_in(&target).is_empty(),
            "{flag}: something was written: {:?}",
            names_in(&target)
        );
    }
}

#[test]
fn dry_run_reports_the_plan_and_writes_nothing() {
    let workspace = Workspace::new();
    let snapshot = three_components(&workspace);
    let target = workspace.path("dry");
    let run = workspace
        .cairn_repo([
            "--json".as_ref(),
            "restore".as_ref(),
            snapshot.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
            "--dry-run".as_ref(),
            "--skip".as_ref(),
            "b".as_ref() as &OsStr,
        ])
        .ok()
        .json();
    assert_eq!(run["dry_run"], true);
    let planned: Vec<&str> = run["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|component| component["name"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["a", "c"]);
    // file-a.txt, sub and sub/more.bin, all to be created.
    assert_eq!(run["components"][0]["counts"]["create"], 3, "{run}");
    assert_eq!(run["totals"]["create"], 6, "{run}");
    assert!(!target.exists(), "dry run created {}", target.display());

    // Into an existing target, too, nothing appears.
    fs::create_dir_all(&target).unwrap();
    restore(&workspace, &snapshot, &target, &["--dry-run"]).ok();
    assert!(
        names_in(&target).is_empty(),
        "dry run wrote {:?}",
        names_in(&target)
    );
}

#[test]
fn labels_and_tags_are_listed_with_the_snapshot() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    write(&workspace.path("etc/app/app.conf"), b"port = 8080\n");
    write(
        &workspace.path("etc/app/conf.d/extra.conf"),
        b"debug = false\n",
    );
    let summary = workspace.backup_json([
        "--tag".as_ref(),
        "nightly".as_ref(),
        "--tag".as_ref(),
        "before-upgrade".as_ref(),
        "--label".as_ref(),
        "ticket=OPS-1234".as_ref(),
        "--label".as_ref(),
        "note=with = sign".as_ref(),
        "--host".as_ref(),
        "web-01".as_ref(),
        workspace.path("etc").as_os_str(),
    ]);
    let id = summary["snapshot"].as_str().unwrap();
    assert_eq!(summary["host"], "web-01");

    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let snapshot = &listed["snapshots"][0];
    assert_eq!(snapshot["id"], id);
    assert_eq!(snapshot["host"], "web-01");
    assert_eq!(
        snapshot["tags"],
        serde_json::json!(["nightly", "before-upgrade"])
    );
    assert_eq!(
        snapshot["labels"],
        serde_json::json!({"ticket": "OPS-1234", "note": "with = sign"})
    );
    assert_eq!(snapshot["trusted"], true);
    assert_eq!(snapshot["complete"], true);

    // The text listing shows the tags, too.
    let text = workspace.cairn_repo(["snapshots"]).ok();
    assert!(text.stdout.contains("nightly"), "{}", text.stdout);
    assert!(text.stdout.contains(&id[..8]), "{}", text.stdout);

    // ls of the component, and of a path inside it, by a prefix of the id.
    let prefix = &id[..10];
    let all = workspace
        .cairn_repo(["--json", "ls", prefix, "etc"])
        .ok()
        .json();
    let paths: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "etc/app",
            "etc/app/app.conf",
            "etc/app/conf.d",
            "etc/app/conf.d/extra.conf"
        ]
    );
    let inner = workspace
        .cairn_repo(["--json", "ls", prefix, "etc/app/conf.d"])
        .ok()
        .json();
    let inner: Vec<(&str, &str, u64)> = inner
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["path"].as_str().unwrap(),
                entry["kind"].as_str().unwrap(),
                entry["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        inner,
        [
            ("etc/app/conf.d", "directory", 0),
            ("etc/app/conf.d/extra.conf", "file", 14)
        ]
    );
    let text = workspace
        .cairn_repo(["ls", "latest", "etc/app/app.conf"])
        .ok();
    assert_eq!(text.stdout.lines().count(), 1, "{}", text.stdout);
    assert!(text.stdout.contains("etc/app/app.conf"), "{}", text.stdout);
    assert!(text.stdout.contains("12"), "size shown: {}", text.stdout);
}

/// Plants, as someone with write access to the repository but without the
/// secret key could, a newer snapshot whose tree gives `victim` the chunks
/// and hash of `donor` (a file of the same size), signed by a stranger's
/// key. Returns the forged snapshot's id.
fn forge_parent_swapping_contents(
    repo: &Path,
    snapshot: &str,
    victim: &[u8],
    donor: &[u8],
) -> String {
    use cairn_store::backend::{LocalBackend, ObjectKind};
    use cairn_store::format::manifest::SignedManifest;
    use cairn_store::format::pack::BlobKind;
    use cairn_store::format::tree::Tree;
    use cairn_store::index::open_index;
    use cairn_store::ops::common::blob_writer::BlobWriter;
    use cairn_store::{Id, Repository};

    let repository = Repository::open(std::sync::Arc::new(LocalBackend::new(repo))).unwrap();
    let opened = open_index(&repository, None, &[]).unwrap();
    let index = opened.index.as_ref();
    let id = Id::from_hex(snapshot).unwrap();
    let mut body = repository
        .read_manifest(&id)
        .unwrap()
        .body_unverified()
        .unwrap();
    let tree = cairn_store::ops::read_tree(&repository, index, &body.components[0].tree).unwrap();
    let donor = tree
        .entries
        .iter()
        .find(|entry| entry.name == donor)
        .unwrap()
        .clone();
    let mut entries = tree.entries.clone();
    let victim = entries
        .iter_mut()
        .find(|entry| entry.name == victim)
        .unwrap();
    assert_eq!(victim.size, donor.size);
    victim.chunks = donor.chunks.clone();
    victim.hash = donor.hash;
    let bytes = Tree::new(entries).encode();
    let tree_id = Id::of(&bytes);
    let present = repository
        .backend()
        .list(ObjectKind::Pack)
        .unwrap()
        .into_iter()
        .filter_map(|object| Some((Id::from_hex(&object.name)?, object.size)))
        .collect();
    let writer = BlobWriter::new(&repository, index, present, None);
    writer.add(BlobKind::Tree, tree_id, &bytes).unwrap();
    writer.finish().unwrap();
    body.components[0].tree = tree_id;
    // A year later, so it is the newest snapshot of this host and component.
    let year: u32 = body.time[..4].parse().unwrap();
    body.time = format!("{}{}", year + 1, &body.time[4..]);
    let stranger = cairn_store::format::keys::generate_signing_key().unwrap();
    let manifest = SignedManifest::sign(&body, repository.id(), &stranger);
    repository
        .write_object(ObjectKind::Snapshot, &manifest.encode())
        .unwrap()
        .to_hex()
}

#[test]
fn unchanged_files_are_taken_only_from_a_parent_signed_by_a_trusted_key() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let docs = workspace.path("docs");
    write(&docs.join("salary.txt"), &[b'1'; 10_000]);
    write(&docs.join("public.txt"), &[b'0'; 10_000]);
    let first = workspace.backup_json([&docs]);
    let first_id = first["snapshot"].as_str().unwrap();
    let forged =
        forge_parent_swapping_contents(&workspace.repo(), first_id, b"salary.txt", b"public.txt");
    // The forgery is visible as untrusted to anyone who looks.
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let untrusted: Vec<&str> = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|snapshot| snapshot["trusted"] == false)
        .map(|snapshot| snapshot["id"].as_str().unwrap())
        .collect();
    assert_eq!(untrusted, [forged.as_str()]);

    // The user's next backup, signed with the user's own key, must not take
    // file entries from the untrusted snapshot.
    let second = workspace.backup_json([&docs]);
    let second_id = second["snapshot"].as_str().unwrap();
    let target = workspace.path("out");
    restore(&workspace, second_id, &target, &[]).ok();
    assert!(
        fs::read(target.join("docs/salary.txt")).unwrap()
            == fs::read(docs.join("salary.txt")).unwrap(),
        "the new, trusted snapshot holds contents planted by the forged parent"
    );
    assert_ne!(
        second["parent"],
        forged.as_str(),
        "a snapshot signed by an untrusted key was used as the parent"
    );
}

/// Every file below `root`, relative and sorted.
fn files_below(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = walk(root)
        .into_iter()
        .filter(|path| path.is_file())
        .map(|path| path.strip_prefix(root).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn restore_include_exclude_and_component_target_pick_paths_and_places() {
    let workspace = Workspace::new();
    workspace.init_plaintext();
    let site = workspace.path("site");
    write(&site.join("notes/a.md"), b"a");
    write(&site.join("notes/c.txt"), b"c");
    write(&site.join("notes/sub/b.md"), b"b");
    write(&site.join("img/x.png"), &noise(1, 2000));
    write(&site.join("readme.md"), b"r");
    let snapshot = workspace.backup_json([&site])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    // A directory brings everything below it; an excluded one takes it away.
    let target = workspace.path("notes-only");
    restore(
        &workspace,
        &snapshot,
        &target,
        &["--include", "notes", "--exclude", "notes/sub"],
    )
    .ok();
    assert_eq!(
        files_below(&target),
        ["site/notes/a.md", "site/notes/c.txt"]
    );
    assert_eq!(fs::read(target.join("site/notes/a.md")).unwrap(), b"a");

    let target = workspace.path("markdown");
    restore(
        &workspace,
        &snapshot,
        &target,
        &["--include", "notes/**/*.md"],
    )
    .ok();
    assert_eq!(
        files_below(&target),
        ["site/notes/a.md", "site/notes/sub/b.md"]
    );

    // One component sent somewhere else than TARGET/NAME.
    let target = workspace.path("target");
    let elsewhere = workspace.path("elsewhere/www");
    restore(
        &workspace,
        &snapshot,
        &target,
        &[
            "--component-target",
            &format!("site={}", elsewhere.display()),
        ],
    )
    .ok();
    assert_same_tree(&site, &elsewhere);
    assert!(
        !target.join("site").exists(),
        "the component also landed in TARGET/site"
    );
}

#[test]
fn components_that_cannot_be_placed_fail_alone_and_the_others_still_restore() {
    // Components write three at a time, in order; the first three here
    // fail before writing anything (their places lie below a regular
    // file). They must still let the fourth start: were their writing
    // slots never given back, the restore would hang, so it runs under a
    // deadline.
    let workspace = Workspace::new();
    let snapshot = components_named(&workspace, &["a", "b", "c", "d"]);
    let blocker = workspace.path("blocker");
    write(&blocker, b"a regular file\n");
    let target = workspace.path("out");
    let mut child = workspace
        .command()
        .arg("--repo")
        .arg(workspace.repo())
        .args(["restore", &snapshot, "--target"])
        .arg(&target)
        .arg("--component-target")
        .arg(format!("a={}", blocker.join("a").display()))
        .arg("--component-target")
        .arg(format!("b={}", blocker.join("b").display()))
        .arg("--component-target")
        .arg(format!("c={}", blocker.join("c").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cairn restore");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("poll cairn").is_none() {
        if std::time::Instant::now() > deadline {
            kill(&mut child);
            panic!("the restore hangs after its first components failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = run_of(child.wait_with_output().expect("collect output"));
    assert_eq!(
        run.code, 4,
        "partial restore exit code; stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cannot create") && run.stderr.contains("blocker"),
        "the failure names the place: {}",
        run.stderr
    );
    assert_eq!(names_in(&target), ["d"]);
    assert_same_tree(&workspace.path("sources/d"), &target.join("d"));
    assert!(fs::read(&blocker).unwrap() == b"a regular file\n");
}
