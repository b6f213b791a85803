//! [`Hook`]: a user's command, run with `sh -c`, its stdin closed, with
//! the variables an operation hands it (`CAIRN_COMPONENT`, `CAIRN_PHASE`,
//! `CAIRN_FILE`, ...). Serves backup's before- and after-hooks, the
//! drill's check commands and a command component's dump, and is what a
//! restore hook will use.
//!
//! Owns starting the command and telling its outcome apart: it ran and
//! succeeded, it ran and failed (with its exit status and, if asked for,
//! what it wrote to stderr), or it could not start. Never decides what a
//! failure means for the operation that ran it, and never prints: a hook's
//! own stdout and stderr go where the caller says (inherited by default).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::process::{Command, ExitStatus, Stdio};

/// A command to run with `sh -c`.
#[derive(Debug)]
pub struct Hook {
    command: String,
    env: Vec<(OsString, OsString)>,
    stdout: Option<File>,
    capture_stderr: bool,
}

/// Why a hook did not succeed. Displays as `"COMMAND" exited with STATUS`
/// or `"COMMAND" could not start: WHY`; callers add what the command was
/// for.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    #[error("{command:?} could not start: {error}")]
    NotStarted {
        command: String,
        error: std::io::Error,
    },
    #[error("{command:?} exited with {status}")]
    Exited {
        command: String,
        status: ExitStatus,
        /// What it wrote to stderr, when the hook captured it.
        stderr: Vec<u8>,
    },
}

impl HookFailure {
    /// The last `limit` bytes (at most) of what the command wrote to
    /// stderr, trimmed; empty unless the hook captured it.
    pub fn stderr_tail(&self, limit: usize) -> String {
        match self {
            HookFailure::Exited { stderr, .. } => {
                String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(limit)..])
                    .trim()
                    .to_string()
            }
            HookFailure::NotStarted { .. } => String::new(),
        }
    }
}

impl Hook {
    pub fn new(command: impl Into<String>) -> Self {
        Hook {
            command: command.into(),
            env: Vec::new(),
            stdout: None,
            capture_stderr: false,
        }
    }

    /// Adds a variable to the command's environment (which is otherwise
    /// this process's).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Sends the command's stdout to `file` rather than this process's.
    pub fn stdout_to(mut self, file: File) -> Self {
        self.stdout = Some(file);
        self
    }

    /// Keeps what the command writes to stderr for its failure's report,
    /// rather than passing it through.
    pub fn capture_stderr(mut self) -> Self {
        self.capture_stderr = true;
        self
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Runs the command and waits for it.
    pub fn run(self) -> Result<(), HookFailure> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null());
        if let Some(file) = self.stdout {
            command.stdout(file);
        }
        if self.capture_stderr {
            command.stderr(Stdio::piped());
        }
        let not_started = |error| HookFailure::NotStarted {
            command: self.command.clone(),
            error,
        };
        let (status, stderr) = if self.capture_stderr {
            // Read while it runs: a command that fills the pipe would
            // otherwise wait for us forever.
            let output = command
                .spawn()
                .and_then(|child| child.wait_with_output())
                .map_err(not_started)?;
            (output.status, output.stderr)
        } else {
            (command.status().map_err(not_started)?, Vec::new())
        };
        if status.success() {
            return Ok(());
        }
        Err(HookFailure::Exited {
            command: self.command,
            status,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_hook_sees_the_variables_it_is_given_and_writes_where_it_is_told() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let output = directory.path().join("output");
        let file = File::create(&output).expect("output file");
        Hook::new("printf '%s/%s' \"$CAIRN_COMPONENT\" \"$CAIRN_PHASE\"")
            .env("CAIRN_COMPONENT", "db")
            .env("CAIRN_PHASE", "before")
            .stdout_to(file)
            .run()
            .expect("the hook succeeds");
        assert_eq!(std::fs::read_to_string(&output).expect("read"), "db/before");
    }

    #[test]
    fn a_failing_hook_reports_its_exit_status_and_the_end_of_its_stderr() {
        let failure = Hook::new("echo first >&2; echo 'the last words' >&2; exit 3")
            .capture_stderr()
            .run()
            .expect_err("exit 3 is a failure");
        match &failure {
            HookFailure::Exited { status, .. } => assert_eq!(status.code(), Some(3)),
            other => panic!("expected an exit status, got {other:?}"),
        }
        assert_eq!(
            failure.to_string(),
            "\"echo first >&2; echo 'the last words' >&2; exit 3\" exited with exit status: 3"
        );
        assert_eq!(failure.stderr_tail(15), "the last words");
    }

    #[test]
    fn a_hook_killed_by_a_signal_is_a_failure_without_an_exit_code() {
        let failure = Hook::new("kill -9 $$").run().expect_err("killed");
        match failure {
            HookFailure::Exited { status, stderr, .. } => {
                assert_eq!(status.code(), None);
                assert_eq!(status.signal(), Some(9));
                assert!(stderr.is_empty(), "stderr is not captured unless asked");
            }
            other => panic!("expected an exit status, got {other:?}"),
        }
    }

    #[test]
    fn a_hook_whose_shell_cannot_be_found_could_not_start() {
        // The shell is looked up in the PATH the command is given.
        let failure = Hook::new("true")
            .env("PATH", "/nonexistent-cairn-test")
            .run()
            .expect_err("no shell on that PATH");
        assert!(
            matches!(failure, HookFailure::NotStarted { .. }),
            "{failure:?}"
        );
        assert!(
            failure
                .to_string()
                .starts_with("\"true\" could not start: "),
            "{failure}"
        );
    }
}
