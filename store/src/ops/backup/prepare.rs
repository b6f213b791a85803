//! Preparing components whose content is not a path as given: a SQLite
//! database is copied with SQLite's online backup API, and a command's
//! standard output is captured into a file, each in a private directory
//! (0700, the file 0600) that lives as long as the backup: inside the
//! caller's staging directory (the CLI's is under the cache directory), or
//! else in the system's temporary directory. A caller interrupted by a
//! signal removes its staging directory and stops the commands
//! ([`crate::ops::hooks::stop_commands`]).
//!
//! Runs before anything is stored: a database that cannot be copied fails
//! the whole backup with every repository untouched; a command that fails
//! (or a component whose before-hook failed) only leaves its component out.
//! Never writes to a source.

use super::sources::{ComponentSource, SourceKind};
use crate::error::{Result, StoreError};
use crate::format::manifest::ComponentKind;
use crate::ops::hooks::{Hook, HookFailure};
use crate::progress::Progress;
use std::path::Path;

/// The components to read, each prepared and with its excludes compiled.
pub(super) struct Sources<'a> {
    pub(super) components: &'a [ComponentSource],
    pub(super) prepared: Vec<Prepared>,
    pub(super) excludes: Vec<Option<globset::GlobSet>>,
}

/// What a component is backed up from once prepared.
pub(super) enum Prepared {
    /// Its path, as given.
    AsGiven,
    /// A file made for it in a temporary directory (removed on drop), and
    /// a database's journal mode.
    Made(
        tempfile::TempDir,
        ComponentSource,
        ComponentKind,
        Option<String>,
    ),
    /// Its command failed: the component is left out, with this reason.
    Failed(String),
}

/// Copies every SQLite database and runs every command before anything is
/// stored: a database that cannot be read fails the backup with the
/// repository untouched; a failed command fails only its component.
pub(super) fn prepare_components(
    components: &[ComponentSource],
    staging: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Vec<Prepared>> {
    let mut prepared = Vec::new();
    for source in components {
        let in_component = |error: StoreError| {
            StoreError::Invalid(format!("component {:?}: {error}", source.name))
        };
        let temporary = || match staging {
            Some(parent) => crate::os::private::private_directory_in(parent, "cairn-component-"),
            None => crate::os::private::private_temporary_directory("cairn-component-"),
        };
        if let Some(why) = &source.failed_before {
            prepared.push(Prepared::Failed(why.clone()));
            continue;
        }
        match &source.kind {
            SourceKind::Files => prepared.push(Prepared::AsGiven),
            SourceKind::Sqlite => {
                progress.component(&source.name);
                let file_name = source.path.file_name().ok_or_else(|| {
                    in_component(StoreError::Invalid("a database must be a file".into()))
                })?;
                let directory = temporary()?;
                let copy = directory.path().join(file_name);
                let mode = crate::ops::common::sqlite::copy_database(&source.path, &copy)
                    .map_err(in_component)?;
                let walked = ComponentSource::new(source.name.clone(), copy);
                prepared.push(Prepared::Made(
                    directory,
                    walked,
                    ComponentKind::Sqlite,
                    Some(mode),
                ));
            }
            SourceKind::Command(command) => {
                progress.component(&source.name);
                let directory = temporary()?;
                let output = directory.path().join(&source.name);
                match run_command(command, &output) {
                    Ok(()) => {
                        let walked = ComponentSource::new(source.name.clone(), output);
                        prepared.push(Prepared::Made(
                            directory,
                            walked,
                            ComponentKind::Command,
                            None,
                        ));
                    }
                    Err(why) => prepared.push(Prepared::Failed(why)),
                }
            }
        }
    }
    Ok(prepared)
}

/// Runs `command` with `sh -c`, its stdout into `output`; on failure, why
/// (with the end of its stderr).
fn run_command(command: &str, output: &Path) -> std::result::Result<(), String> {
    let stdout = crate::os::private::create_private_file(output)
        .map_err(|error| format!("cannot create its output file: {error}"))?;
    let failure = match Hook::new(command).stdout_to(stdout).capture_stderr().run() {
        Ok(()) => return Ok(()),
        Err(failure) => failure,
    };
    let how = match &failure {
        HookFailure::NotStarted { .. } => return Err(format!("command {failure}")),
        HookFailure::Exited { status, .. } => match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        },
    };
    let tail = failure.stderr_tail(400);
    Err(if tail.is_empty() {
        format!("command {command:?} {how}")
    } else {
        format!("command {command:?} {how}: {tail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::fs;

    fn command(name: &str, command: &str) -> ComponentSource {
        let mut source = ComponentSource::new(name, "");
        source.kind = SourceKind::Command(command.into());
        source
    }

    #[test]
    fn a_command_output_becomes_the_component_file() {
        let prepared =
            prepare_components(&[command("dump", "printf 'rows'")], None, &NoProgress).unwrap();
        let [Prepared::Made(directory, walked, kind, _)] = &prepared[..] else {
            panic!("the command should have made a file");
        };
        assert_eq!(*kind, ComponentKind::Command);
        assert!(walked.path.starts_with(directory.path()));
        assert_eq!(fs::read(&walked.path).unwrap(), b"rows");
    }

    #[test]
    fn a_failed_command_or_before_hook_leaves_only_its_component_out() {
        let mut hooked = ComponentSource::new("files", "/nowhere");
        hooked.failed_before = Some("before-hook exited with 1".into());
        let prepared = prepare_components(
            &[
                command("dump", "echo 'no such table' >&2; exit 3"),
                hooked,
                command("fine", "true"),
            ],
            None,
            &NoProgress,
        )
        .unwrap();
        match &prepared[0] {
            Prepared::Failed(why) => {
                assert!(why.contains("exited with status 3"), "{why}");
                assert!(
                    why.ends_with("no such table"),
                    "the end of its stderr: {why}"
                );
            }
            _ => panic!("a failing command fails its component"),
        }
        assert!(matches!(&prepared[1], Prepared::Failed(why) if why.contains("before-hook")));
        assert!(matches!(&prepared[2], Prepared::Made(..)));
    }

    #[test]
    fn a_database_is_copied_and_one_that_cannot_be_read_fails_the_backup() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("app.db");
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (42);")
            .unwrap();
        let mut database = ComponentSource::new("app", &path);
        database.kind = SourceKind::Sqlite;
        let prepared =
            prepare_components(std::slice::from_ref(&database), None, &NoProgress).unwrap();
        let [Prepared::Made(_directory, copy, ComponentKind::Sqlite, _)] = &prepared[..] else {
            panic!("a database is copied");
        };
        let copied = rusqlite::Connection::open(&copy.path).unwrap();
        let x: i64 = copied
            .query_row("SELECT x FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(x, 42);

        database.path = directory.path().join("absent.db");
        assert!(prepare_components(&[database], None, &NoProgress).is_err());
    }
}
