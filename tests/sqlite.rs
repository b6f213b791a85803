//! SQLite components: a database that another process keeps writing to is
//! captured as one committed state, restores to a file that passes
//! SQLite's integrity check with the writer's invariant intact, and bad
//! input is refused before anything is stored. The writer and the checks
//! are Python's own sqlite3 module, a second real SQLite user.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ACCOUNTS: i64 = 2000;
const TOTAL: i64 = ACCOUNTS * 1000;

/// Runs a Python snippet with `args` and returns its stdout, trimmed.
fn python(script: &str, args: &[&Path]) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A bank of accounts in WAL mode whose balances always sum to TOTAL.
fn create_bank(path: &Path) {
    python(
        &format!(
            "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('pragma journal_mode=wal')
db.execute('create table account(id integer primary key, balance integer not null, note text)')
db.execute('create index by_balance on account(balance)')
db.execute('create table ledger(id integer primary key, source integer, target integer, amount integer)')
db.executemany('insert into account values (?, 1000, ?)', [(i, 'x' * 200) for i in range({ACCOUNTS})])
db.commit()"
        ),
        &[path],
    );
}

/// Sum of balances, number of accounts and SQLite's integrity verdict.
fn audit(path: &Path) -> String {
    python(
        "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
total, count = db.execute('select sum(balance), count(*) from account').fetchone()
check = db.execute('pragma integrity_check').fetchone()[0]
transfers = db.execute('select count(*) from ledger').fetchone()[0]
# Transfers are committed 20 at a time: a copy holds whole transactions.
print(total, count, check, 'whole' if transfers % 20 == 0 else 'torn')",
        &[path],
    )
}

#[test]
fn a_database_written_to_during_the_backup_restores_consistent() {
    let workspace = Workspace::new();
    workspace.init();
    let database = workspace.path("live/bank.db");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    create_bank(&database);
    let stop = workspace.path("live/stop");
    // Transfers in small transactions until told to stop; each keeps the
    // total unchanged, and some grow a note so pages split and move.
    let writer = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys, os, random
db = sqlite3.connect(sys.argv[1], timeout=30)
rng = random.Random(7)
transfers = 0
while not os.path.exists(sys.argv[2]):
    with db:
        for _ in range(20):
            a, b = rng.randrange({ACCOUNTS}), rng.randrange({ACCOUNTS})
            amount = rng.randrange(1, 50)
            db.execute('update account set balance = balance - ? where id = ?', (amount, a))
            db.execute('update account set balance = balance + ?, note = note || ? where id = ?', (amount, 'y' * rng.randrange(0, 30), b))
            db.execute('insert into ledger(source, target, amount) values (?, ?, ?)', (a, b, amount))
    transfers += 20
print(transfers)"
        ))
        .arg(&database)
        .arg(&stop)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");

    // Several backups while the writer runs, so at least some copies are
    // taken mid-transaction on the writer's side.
    let mut snapshots = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let report = workspace.backup_json([
            "--sqlite".as_ref(),
            format!("bank={}", database.display()).as_ref() as &std::ffi::OsStr,
        ]);
        snapshots.push(report["snapshot"].as_str().unwrap().to_string());
    }
    std::fs::write(&stop, b"").unwrap();
    let output = writer.wait_with_output().expect("writer ends");
    assert!(output.status.success());
    let transfers: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(transfers > 0, "the writer never wrote during the backups");

    for (round, snapshot) in snapshots.iter().enumerate() {
        let target = workspace.path(&format!("restore{round}"));
        let run = workspace
            .cairn_repo([
                "--json".as_ref(),
                "restore".as_ref(),
                snapshot.as_ref(),
                "--target".as_ref(),
                target.as_os_str(),
            ])
            .ok();
        let report = run.json();
        let checks = report["database_checks"].as_array().unwrap();
        assert_eq!(checks.len(), 1, "{report}");
        assert_eq!(checks[0]["component"], "bank");
        assert_eq!(checks[0]["ok"], true, "{report}");
        let restored = target.join("bank/bank.db");
        assert_eq!(
            audit(&restored),
            format!("{TOTAL} {ACCOUNTS} ok whole"),
            "snapshot {snapshot}: the copy is not one committed state"
        );
        // One self-contained file: no journal or WAL beside it.
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("bank")]);
    }
    let snapshot_list = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    let kinds: Vec<_> = snapshot_list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|snapshot| {
            snapshot["components"][0]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, vec!["sqlite"; 3]);
    let (code, report) = workspace.verify_json(&["--read-data"]);
    assert_eq!(code, 0, "{report}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_naming_it_and_nothing_is_stored() {
    let workspace = Workspace::new();
    workspace.init();
    let good = workspace.path("good");
    write(
        &good.join("a.txt"),
        b"stored only if the backup goes ahead\n",
    );
    let fake = workspace.path("fake.db");
    write(&fake, &noise(3, 100_000));
    let run = workspace.cairn_repo([
        "backup".as_ref(),
        "--component".as_ref(),
        format!("files={}", good.display()).as_ref() as &std::ffi::OsStr,
        "--sqlite".as_ref(),
        format!("db={}", fake.display()).as_ref(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("\"db\"")
            && run.stderr.contains("fake.db")
            && run.stderr.contains("not a readable SQLite database"),
        "{}",
        run.stderr
    );
    assert!(
        workspace.packs().is_empty(),
        "data was stored for a failed backup"
    );
    let listed = workspace.cairn_repo(["--json", "snapshots"]).ok().json();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 0);

    let missing = workspace.cairn_repo([
        "backup".as_ref(),
        "--sqlite".as_ref(),
        format!("db={}", workspace.path("nowhere.db").display()).as_ref() as &std::ffi::OsStr,
    ]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("nowhere.db"), "{}", missing.stderr);
}

#[test]
fn a_database_that_fails_its_integrity_check_makes_the_restore_report_damage() {
    let workspace = Workspace::new();
    workspace.init();
    let database = workspace.path("damaged.db");
    create_bank(&database);
    // Checkpoint, then scribble over the middle of the index's pages: the
    // table still reads, the index no longer matches it. The online backup
    // copies pages as they are, so the snapshot carries the damage.
    python(
        "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute('pragma wal_checkpoint(truncate)')
db.execute('pragma journal_mode=delete')
root = db.execute(\"select rootpage from sqlite_master where name = 'by_balance'\").fetchone()[0]
size = db.execute('pragma page_size').fetchone()[0]
db.close()
with open(sys.argv[1], 'r+b') as f:
    f.seek(root * size - 256)
    f.write(b'\\xff' * 256)",
        &[&database],
    );
    let verdict = python(
        "import sqlite3, sys
try:
    print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])
except sqlite3.DatabaseError as error:
    print('error:', error)",
        &[&database],
    );
    assert_ne!(verdict, "ok", "the scribble did not damage the database");
    let snapshot = workspace.backup_json([
        "--sqlite".as_ref(),
        format!("db={}", database.display()).as_ref() as &std::ffi::OsStr,
    ])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = workspace.path("out");
    let run = workspace.cairn_repo([
        "restore".as_ref(),
        snapshot.as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("SQLite integrity check of db") && run.stderr.contains("failed"),
        "{}",
        run.stderr
    );
}

/// A database of `rows` notes with the given page size, in rollback-journal
/// mode so the file alone is the whole state.
fn create_notes(path: &Path, page_size: u32, rows: u32) {
    python(
        &format!(
            "import sqlite3, sys, random
rng = random.Random(5)
db = sqlite3.connect(sys.argv[1])
db.execute('pragma page_size={page_size}')
db.execute('create table note(id integer primary key, body text, score integer)')
db.execute('create index by_score on note(score)')
words = ['alpha', 'beta', 'gamma', 'delta', 'vector', 'index', 'page', 'night']
db.executemany('insert into note values (?, ?, ?)',
    [(i, ' '.join(rng.choice(words) for _ in range(40)) + ' %d' % rng.getrandbits(64), rng.getrandbits(20)) for i in range({rows})])
db.commit()"
        ),
        &[path],
    );
}

/// One night of scattered change: a few rows rewritten all over the file.
fn update_scattered(path: &Path, rows: u32) {
    python(
        &format!(
            "import sqlite3, sys, random
rng = random.Random(11)
db = sqlite3.connect(sys.argv[1])
for i in rng.sample(range({rows}), {rows} // 200):
    db.execute('update note set body = body || ?, score = ? where id = ?', ('!', rng.getrandbits(20), i))
db.commit()"
        ),
        &[path],
    );
}

#[test]
fn databases_are_cut_into_their_own_pages_and_a_night_of_scattered_updates_adds_little() {
    const ROWS: u32 = 30_000;
    let database = Workspace::new();
    let source = database.path("notes.db");
    // Not SQLite's default page size, so the chunk size must come from the
    // database's own header.
    create_notes(&source, 8192, ROWS);

    // The same database and the same night, once with the kind's default
    // chunking and once with content-defined chunks.
    let pages = Workspace::new();
    let cdc = Workspace::new();
    pages.init();
    cdc.init();
    let spec = format!("db={}", source.display());
    let back_up = |workspace: &Workspace, extra: &[&str]| {
        let mut args = vec!["--sqlite", spec.as_str()];
        args.extend_from_slice(extra);
        workspace.backup_json(args)
    };
    let first = back_up(&pages, &[]);
    assert_eq!(
        first["components"][0]["chunking"],
        "fastcdc 4096/16384/65536, SQLite files in 1-page chunks",
        "{first}"
    );
    // One chunk reference per 8 KiB page proves the file was cut into its
    // pages, not just labelled so.
    let pages_in = |summary: &serde_json::Value| {
        summary["components"][0]["bytes"]
            .as_u64()
            .unwrap()
            .div_ceil(8192)
    };
    assert_eq!(
        first["components"][0]["chunks"].as_u64(),
        Some(pages_in(&first))
    );
    let cdc_first = back_up(&cdc, &["--chunking", "db=content-defined"]);
    assert_eq!(
        cdc_first["components"][0]["chunking"], "fastcdc 4096/16384/65536",
        "{cdc_first}"
    );

    update_scattered(&source, ROWS);
    let second = back_up(&pages, &[]);
    let cdc_second = back_up(&cdc, &["--chunking", "db=content-defined"]);
    let added = second["stored_bytes"].as_u64().unwrap();
    let cdc_added = cdc_second["stored_bytes"].as_u64().unwrap();
    // Since delta-encoded chunks (FORMAT.md 7.1), a content-defined night
    // is stored as patches against the parent's chunks too, which takes
    // away most of what page chunking saved here (this asserted pages
    // under 3/4 of content-defined before); pages must still not cost
    // noticeably more.
    assert!(
        added * 4 < cdc_added * 5,
        "page-sized chunks stored {added} bytes for the night, content-defined {cdc_added}"
    );
    // And the night adds little: 150 of 30,000 rows changed by a few bytes
    // each, on about 190 of the file's 1,050 pages. Stored whole, those
    // pages took 545 KB of this 8.6 MB file (measured before delta
    // chunks); as patches against last night's pages, about 60 KB.
    let database_bytes = second["components"][0]["bytes"].as_u64().unwrap();
    assert!(
        added * 50 < database_bytes,
        "the night stored {added} bytes of a {database_bytes}-byte database"
    );

    // The listing says how each snapshot was cut.
    let listed = pages.cairn_repo(["--json", "snapshots"]).ok().json();
    for snapshot in listed["snapshots"].as_array().unwrap() {
        assert_eq!(
            snapshot["components"][0]["chunking"],
            "fastcdc 4096/16384/65536, SQLite files in 1-page chunks"
        );
    }

    // A database file inside a directory component is recognised by its
    // header and cut into its pages too; other files are not.
    let directory = pages.path("tree");
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::copy(&source, directory.join("copy.db")).unwrap();
    let in_directory = pages.backup_json([
        "--component".to_string(),
        format!("tree={}", directory.display()),
    ]);
    assert_eq!(
        in_directory["components"][0]["chunks"].as_u64(),
        Some(pages_in(&in_directory))
    );
    write(&directory.join("copy.db"), &noise(3, 200_000));
    let not_a_database = pages.backup_json([
        "--component".to_string(),
        format!("tree={}", directory.display()),
    ]);
    assert!(not_a_database["components"][0]["chunks"].as_u64().unwrap() < 200_000 / 8192);

    // A restore over the first night's copy finds its unchanged pages: it
    // scans the old file with the same fixed chunks.
    let target = pages.path("restored");
    let first_id = first["snapshot"].as_str().unwrap();
    let second_id = second["snapshot"].as_str().unwrap();
    pages.restore(first_id, &target).ok();
    let restore = pages
        .cairn_repo([
            "--json".as_ref(),
            "restore".as_ref(),
            second_id.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
            "--yes".as_ref(),
        ])
        .ok()
        .json();
    let reused = restore["bytes_reused"].as_u64().unwrap();
    let fetched = restore["bytes_fetched"].as_u64().unwrap();
    assert!(
        reused > 10 * fetched,
        "reused {reused} bytes from the old copy but fetched {fetched}"
    );
    let restored = target.join("db/notes.db");
    let check = python(
        "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute('pragma integrity_check').fetchone()[0], db.execute('select count(*) from note').fetchone()[0])",
        &[&restored],
    );
    assert_eq!(check, format!("ok {ROWS}"));
    let source_rows = python(
        "import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute('select sum(score), group_concat(length(body)) from note').fetchone())",
        &[&source],
    );
    let restored_rows = python(
        "import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute('select sum(score), group_concat(length(body)) from note').fetchone())",
        &[&restored],
    );
    assert_eq!(source_rows, restored_rows);
}

#[test]
fn bad_chunking_choices_are_refused_naming_the_component() {
    let workspace = Workspace::new();
    workspace.init();
    let directory = workspace.path("files");
    write(&directory.join("a"), b"hello");
    let component = format!("files={}", directory.display());
    for (profile, expected) in [
        ("files=fixed:12", "fixed chunk size 12"),
        ("files=huge", "expected default, content-defined"),
        ("other=fixed:4K", "no component of that name"),
    ] {
        let run =
            workspace.cairn_repo(["backup", "--component", &component, "--chunking", profile]);
        assert_ne!(run.code, 0, "{profile} was accepted");
        assert!(run.stderr.contains(expected), "{profile}: {}", run.stderr);
    }
    assert!(workspace.packs().is_empty(), "a refused backup stored data");
    // fixed:4K on a files component round-trips.
    let made = workspace.backup_json(["--component", &component, "--chunking", "files=fixed:4K"]);
    assert_eq!(made["components"][0]["chunking"], "fixed 4096");
    let target = workspace.path("out");
    workspace
        .restore(made["snapshot"].as_str().unwrap(), &target)
        .ok();
    assert_same_tree(&directory, &target.join("files"));
}

#[test]
fn a_stale_wal_beside_the_target_database_is_set_aside_and_the_restore_keeps_the_snapshots_rows_and_wal_mode()
 {
    let workspace = Workspace::new();
    workspace.init();
    let database = workspace.path("srv/app.db");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    create_bank(&database);
    let snapshot = workspace.backup_json([
        "--sqlite".as_ref(),
        format!("app={}", database.display()).as_ref() as &std::ffi::OsStr,
    ])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // The application goes on, then crashes: its last transactions are only
    // in app.db-wal (no checkpoint), and it dies without closing.
    python(
        "import sqlite3, sys, os
db = sqlite3.connect(sys.argv[1])
db.execute('pragma wal_autocheckpoint=0')
db.execute('delete from account where id < 500')
db.execute('create table extra(data blob)')
db.executemany('insert into extra values (?)', [(os.urandom(3000),) for _ in range(400)])
db.commit()
os._exit(0)",
        &[&database],
    );
    let wal = workspace.path("srv/app.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 100_000,
        "the crash left a WAL"
    );

    let target = workspace.path("unused-target");
    let run = workspace.cairn_repo([
        "--json".as_ref(),
        "restore".as_ref(),
        snapshot.as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--component-target".as_ref(),
        format!("app={}", database.display()).as_ref() as &std::ffi::OsStr,
        "--yes".as_ref(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let outcome = run.json();
    assert_eq!(outcome["database_checks"][0]["ok"], true, "{outcome}");
    assert!(outcome["safety_snapshot"].is_string(), "{outcome}");
    assert_eq!(
        std::fs::read_dir(workspace.path("srv"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>(),
        ["app.db"],
        "no journal beside the restored database, and no copy set aside (the safety snapshot holds them)"
    );
    // Opened by SQLite: the snapshot's rows, sound, back in WAL mode.
    assert_eq!(audit(&database), format!("{TOTAL} {ACCOUNTS} ok whole"));
    let state = python(
        "import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
tables = [row[0] for row in db.execute(\"select name from sqlite_master where type = 'table' order by name\")]
print(db.execute('pragma journal_mode').fetchone()[0], ','.join(tables))",
        &[&database],
    );
    assert_eq!(state, "wal account,ledger");

    // Undo puts back what the target had: the database and its WAL.
    let safety = outcome["safety_snapshot"].as_str().unwrap();
    let undo = workspace.cairn_repo(["undo-restore", safety]);
    assert_eq!(undo.code, 0, "{}\n{}", undo.stdout, undo.stderr);
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 100_000,
        "the WAL is back"
    );
    assert_eq!(
        audit(&database),
        format!("{} {} ok whole", TOTAL - 500 * 1000, ACCOUNTS - 500)
    );
}

#[test]
fn a_database_keeps_its_file_name_the_dry_run_shows_the_paths_written_and_to_source_puts_it_back() {
    let workspace = Workspace::new();
    workspace.init();
    let database = workspace.path("srv/app/app.db");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    create_bank(&database);
    let files = workspace.path("srv/app/files");
    write(&files.join("f.txt"), b"a file\n");
    workspace.backup_json([
        "--sqlite".to_string(),
        format!("app={}", database.display()),
        "--component".to_string(),
        format!("files={}", files.display()),
    ]);

    let target = workspace.path("out");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        workspace.cairn_repo(args)
    };
    let dry = restore(&["--dry-run"]).ok();
    let mut planned: Vec<PathBuf> = dry
        .stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("create"))
        .map(|path| PathBuf::from(path.trim()))
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        [target.join("app/app.db"), target.join("files/f.txt")],
        "{}",
        dry.stdout
    );
    assert!(!target.exists(), "a dry run writes nothing");
    restore(&[]).ok();
    for path in &planned {
        assert!(path.is_file(), "the dry run named {}", path.display());
    }
    assert_eq!(audit(&planned[0]), format!("{TOTAL} {ACCOUNTS} ok whole"));

    // The application's directory is lost; --to-source puts each component
    // back where it was backed up from, the database in WAL mode.
    std::fs::remove_dir_all(workspace.path("srv")).unwrap();
    let run = workspace.cairn_repo(["restore", "latest", "--to-source"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(audit(&database), format!("{TOTAL} {ACCOUNTS} ok whole"));
    assert_eq!(
        python(
            "import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute('pragma journal_mode').fetchone()[0])",
            &[&database]
        ),
        "wal"
    );
    assert_eq!(std::fs::read(files.join("f.txt")).unwrap(), b"a file\n");

    // Only a trusted snapshot may say where to write.
    let refused = workspace.cairn_repo(["restore", "latest", "--to-source", "--allow-untrusted"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
}
