//! Live SQLite databases: a consistent copy taken with SQLite's online
//! backup API while other processes keep writing, and the integrity check
//! a restore runs on what it wrote.
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

/// Copies the live database at `source` into a new file at `copy` (mode
/// 0600; nothing may be there yet), as one committed state, however busy
/// the writers are.
pub fn copy_database(source: &Path, copy: &Path) -> Result<()> {
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
    Ok(())
}

/// `PRAGMA integrity_check` on the database at `path`: an empty list means
/// "ok"; otherwise SQLite's own messages (at most 100).
pub fn integrity_check(path: &Path) -> Result<Vec<String>> {
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
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
