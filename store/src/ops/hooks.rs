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
//!
//! Each command runs in a process group of its own, and the commands
//! running at any moment are known to [`stop_commands`]: a caller that is
//! interrupted (the CLI on SIGINT or SIGTERM) stops them with it, so no
//! command outlives the operation that started it. The library installs no
//! signal handler itself.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Process groups of the commands running now (each command leads its own).
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Set by [`stop_commands`]: no command starts after it.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Stops every command started through [`Hook`] that is still running
/// (SIGTERM to its whole process group, so a pipeline's other commands go
/// too), and lets no new one start. For a caller that is being
/// interrupted; the operations that waited for those commands then see
/// them fail.
pub fn stop_commands() {
    STOPPED.store(true, Ordering::SeqCst);
    let running = RUNNING.lock().unwrap_or_else(|poison| poison.into_inner());
    for group in running.iter() {
        if let Some(group) = rustix::process::Pid::from_raw(*group) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
    }
}

/// A running command's process group, known to [`stop_commands`] until
/// dropped.
struct Registered(i32);

impl Registered {
    fn new(pid: u32) -> Self {
        let group = pid as i32;
        RUNNING
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(group);
        Registered(group)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&self.0);
    }
}

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
            .stdin(Stdio::null())
            // A group of its own, which `stop_commands` signals whole.
            .process_group(0);
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
        if STOPPED.load(Ordering::SeqCst) {
            return Err(not_started(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cairn is being interrupted",
            )));
        }
        let child = command.spawn().map_err(not_started)?;
        let registered = Registered::new(child.id());
        // A stop that came between the check above and the registration
        // would have missed this command.
        if STOPPED.load(Ordering::SeqCst) {
            stop_commands();
        }
        // stderr is read while it runs: a command that fills the pipe would
        // otherwise wait for us forever.
        let output = child.wait_with_output().map_err(not_started)?;
        drop(registered);
        let (status, stderr) = (output.status, output.stderr);
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
