//! SQLite components: a database that another process keeps writing to is
//! captured as one committed state, restores to a file that passes
//! SQLite's integrity check with the writer's invariant intact, and bad
//! input is refused before anything is stored. The writer and the checks
//! are Python's own sqlite3 module, a second real SQLite user.

mod common;
use common::*;

use std::path::Path;
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
        let restored = target.join("bank");
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
