//! Live SQLite databases: a consistent copy taken with SQLite's online
//! backup API while other processes keep writing (and the journal mode the
//! database was in), the integrity check a restore runs on what it wrote
//! (on the file alone: never through a journal beside it), the journal
//! files a database may have beside it, and putting a restored database
//! back in WAL mode.
//!
//! Owns every call into SQLite. Never writes to the database it copies
//! (it is opened read-only) and never decides what a failed check means.

use crate::error::{Result, StoreError};
use rusqlite::backup::StepResult;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// All pages in one step, inside one read transaction. In steps, a commit
/// by another connection between steps restarts the copy, and a busy
/// database would never finish; in one step, a WAL-mode database keeps
/// taking writes (readers do not block writers) and the copy is the state
/// when it began, while a rollback-journal database makes writers wait
/// for the copy (as `sqlite3 .backup` does).
const PAGES_PER_STEP: std::ffi::c_int = -1;
/// How long a copy waits for writers' locks before giving up.
const BUSY_PATIENCE: Duration = Duration::from_secs(120);

fn sqlite_error(path: &Path, error: rusqlite::Error) -> StoreError {
    StoreError::Invalid(format!("{}: {error}", path.display()))
}

/// The files SQLite may keep beside a database, by the suffix added to
/// its name: the write-ahead log, its shared-memory index, and the
/// rollback journal.
pub const JOURNAL_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The journal mode recorded for a database that was in WAL mode: the one
/// mode kept in the database file itself, and so the one a restore puts
/// back (the others are chosen by each connection when it opens).
pub const WAL_MODE: &str = "wal";

/// The journal files beside the database at `database` that exist now (as
/// anything but a directory), with their suffixes.
pub fn journals_beside(database: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    JOURNAL_SUFFIXES
        .iter()
        .filter_map(|suffix| {
            let mut name = database.as_os_str().to_os_string();
            name.push(suffix);
            let path = std::path::PathBuf::from(name);
            let metadata = std::fs::symlink_metadata(&path).ok()?;
            (!metadata.is_dir()).then_some((*suffix, path))
        })
        .collect()
}

/// Copies the live database at `source` into a new file at `copy` (mode
/// 0600; nothing may be there yet), as one committed state, however busy
/// the writers are. Returns the journal mode `source` was in (lowercase,
/// as `PRAGMA journal_mode` says it, e.g. `wal` or `delete`); the copy is
/// always in `delete` mode.
pub fn copy_database(source: &Path, copy: &Path) -> Result<String> {
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| sqlite_error(source, error))?;
    // Fails fast, naming the file, when it is not a database at all.
    from.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|error| {
            StoreError::Invalid(format!(
                "{} is not a readable SQLite database ({error})",
                source.display()
            ))
        })?;
    from.busy_timeout(Duration::from_secs(30))
        .map_err(|error| sqlite_error(source, error))?;
    let mode: String = from
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(|error| sqlite_error(source, error))?;
    // Made first, private (0600) and exclusively: SQLite would make it
    // readable by all.
    drop(crate::os::private::create_private_file(copy)?);
    let mut to = Connection::open(copy).map_err(|error| sqlite_error(copy, error))?;
    let backup = rusqlite::backup::Backup::new(&from, &mut to)
        .map_err(|error| sqlite_error(source, error))?;
    let deadline = std::time::Instant::now() + BUSY_PATIENCE;
    loop {
        let step = backup
            .step(PAGES_PER_STEP)
            .map_err(|error| sqlite_error(source, error))?;
        match step {
            StepResult::Done => break,
            // A writer holds a lock the copy needs: wait a little.
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{}: the database stayed locked for {} s; no consistent copy could be taken",
                    source.display(),
                    BUSY_PATIENCE.as_secs()
                )));
            }
        }
    }
    drop(backup);
    // A single file, no journal beside it: what gets backed up is whole.
    to.pragma_update_and_check(None, "journal_mode", "DELETE", |_| Ok(()))
        .map_err(|error| sqlite_error(copy, error))?;
    Ok(mode.to_ascii_lowercase())
}

/// Puts the database at `path` (no journal beside it: the restore moved
/// any aside) into WAL mode, which SQLite keeps in the file's header.
pub fn set_wal_mode(path: &Path) -> Result<()> {
    let connection = Connection::open(path).map_err(|error| sqlite_error(path, error))?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(|error| sqlite_error(path, error))?;
    if !mode.eq_ignore_ascii_case(WAL_MODE) {
        return Err(StoreError::Invalid(format!(
            "{}: SQLite kept journal mode {mode:?} when asked for WAL",
            path.display()
        )));
    }
    // Closing the last connection checkpoints and removes the empty log.
    connection
        .close()
        .map_err(|(_, error)| sqlite_error(path, error))
}

/// `path` as an SQLite URI that opens it immutable: SQLite reads the file
/// alone, takes no lock, and neither reads nor creates a `-wal`, `-shm` or
/// `-journal` beside it, so a stale journal can never be replayed into
/// what is checked.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// `PRAGMA integrity_check` on the database file at `path` alone (opened
/// immutable: no journal beside it is read, none is made): an empty list
/// means "ok"; otherwise SQLite's own messages (at most 100).
pub fn integrity_check(path: &Path) -> Result<Vec<String>> {
    let connection = Connection::open_with_flags(
        immutable_uri(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|error| sqlite_error(path, error))?;
    let mut statement = connection
        .prepare("PRAGMA integrity_check(100)")
        .map_err(|error| sqlite_error(path, error))?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(|error| sqlite_error(path, error))?;
    let mut problems = Vec::new();
    for row in rows {
        let line = row.map_err(|error| sqlite_error(path, error))?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}
