//! Runs the real `cairn` with its stderr on a pseudo-terminal, as a user at
//! a terminal would, and keeps everything the terminal received, so a test
//! can assert what was drawn there (a progress bar) and what was not.
//!
//! stdout stays a pipe, captured apart: reports and JSON never mix with
//! what is drawn. The terminal is 160 columns wide so a bar's text is not
//! cut short.

use super::Workspace;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// What one run of `cairn` on a terminal did.
pub struct TerminalRun {
    pub code: i32,
    pub stdout: String,
    /// Every byte written to the terminal (escape sequences included).
    pub terminal: String,
}

impl TerminalRun {
    /// Panics with the whole output unless the exit code is 0.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "cairn failed\nstdout:\n{}\nterminal:\n{}",
            self.stdout, self.terminal
        );
        self
    }

    /// Whether the terminal shows an amount of bytes out of a total, as a
    /// bar draws it (`1.50 MiB/4.00 MiB`, `512 B/2 KiB`).
    pub fn shows_byte_count(&self) -> bool {
        shows_byte_count(&self.terminal)
    }
}

impl Workspace {
    /// `cairn --repo REPO ARGS...` with stderr on a pseudo-terminal.
    pub fn cairn_repo_on_terminal<I, S>(&self, args: I) -> TerminalRun
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.arg("--repo").arg(self.repo()).args(args);
        on_terminal(command)
    }
}

/// Runs `command` with stderr on a new pseudo-terminal; returns once it
/// has exited and the terminal has been read to its end.
pub fn on_terminal(mut command: Command) -> TerminalRun {
    let (controller, terminal) = open_pty();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .env("TERM", "xterm-256color");
    let child = command.spawn().expect("run cairn");
    // The command holds our copy of the terminal's side; once it is gone,
    // reading the controller ends when cairn exits.
    drop(command);
    let reader = std::thread::spawn(move || read_to_end(controller));
    let output = child.wait_with_output().expect("wait for cairn");
    let terminal = reader.join().expect("terminal reader");
    TerminalRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        terminal: String::from_utf8_lossy(&terminal).into_owned(),
    }
}

/// Runs `command` with stdin and stderr on a new pseudo-terminal, as a
/// user who types `answer` (a line) at it; returns once it has exited.
pub fn on_terminal_answering(mut command: Command, answer: &str) -> TerminalRun {
    let (controller, terminal) = open_pty();
    let input = terminal.try_clone().expect("second terminal descriptor");
    command
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .env("TERM", "xterm-256color");
    // Typed ahead: the terminal keeps the line until cairn reads it.
    let mut typing = File::from(controller.try_clone().expect("controller"));
    std::io::Write::write_all(&mut typing, format!("{answer}\n").as_bytes()).expect("type");
    drop(typing);
    let child = command.spawn().expect("run cairn");
    drop(command);
    let reader = std::thread::spawn(move || read_to_end(controller));
    let output = child.wait_with_output().expect("wait for cairn");
    let terminal = reader.join().expect("terminal reader");
    TerminalRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        terminal: String::from_utf8_lossy(&terminal).into_owned(),
    }
}

/// A pseudo-terminal pair: (controller, terminal), neither inherited by
/// children except as the stdio they are given.
fn open_pty() -> (OwnedFd, OwnedFd) {
    let mut controller = -1;
    let mut terminal = -1;
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the integers given and
    // reads only the window size; no name buffer or termios is passed.
    let result = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(result, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so both are open descriptors we own.
    let pair = unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    };
    for fd in [&pair.0, &pair.1] {
        // SAFETY: F_SETFD on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    pair
}

/// Reads the controller until the terminal's last holder closes it (Linux
/// reports that as EIO).
fn read_to_end(controller: OwnedFd) -> Vec<u8> {
    let mut file = File::from(controller);
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    received
}

/// Whether `text` holds `<number> <unit>/` with a byte unit, as
/// indicatif's `{bytes}/{total_bytes}` prints it.
pub fn shows_byte_count(text: &str) -> bool {
    text.match_indices('/').any(|(at, _)| {
        let before = &text[..at];
        ["B", "KiB", "MiB", "GiB"].iter().any(|unit| {
            before
                .strip_suffix(unit)
                .and_then(|rest| rest.strip_suffix(' '))
                .and_then(|rest| rest.chars().last())
                .is_some_and(|last| last.is_ascii_digit())
        })
    })
}
