//! SIGINT and SIGTERM: instead of dying where it stands, cairn stops the
//! commands it started (a command component's dump, a hook), removes its
//! staging directories (copies of databases, commands' output), says in
//! one line what was kept (as the running command told it with
//! [`say_on_interrupt`]; a JSON error object with `--json`) and exits
//! with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a
//! shell reports a process killed by it.
//!
//! The handling runs on a thread of its own that `signal-hook` wakes (no
//! work happens inside the signal handler); the library only offers the
//! cleanup ([`cairn_store::ops::hooks::stop_commands`]) and installs no
//! handler. Owns the list of staging directories to remove and of other
//! things to undo first (a mount to unmount); never removes a path it was
//! not given.

use anyhow::{Context as _, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Staging directories this process made, removed on interruption.
static STAGING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// What else to undo on interruption (unmounting a `cairn mount`), run
/// before the staging directories are removed.
type Undo = Box<dyn FnOnce() + Send>;
static UNDO: Mutex<Vec<Undo>> = Mutex::new(Vec::new());

/// The signal that interrupted this process, once one has (0 before).
static INTERRUPTED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// What the running command keeps if it is interrupted now.
static KEPT: Mutex<Option<String>> = Mutex::new(None);

/// Sets what an interruption from now on leaves behind, for the one line
/// said on SIGINT or SIGTERM (e.g. "nothing was committed; packs already
/// written are reused by the next run"). A command says it before it
/// changes anything, and again when that changes.
pub fn say_on_interrupt(kept: impl Into<String>) {
    *KEPT.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(kept.into());
}

/// Starts the thread that handles SIGINT and SIGTERM; `json` makes its
/// line a JSON error object.
pub fn install(json: bool) -> Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("installing the SIGINT/SIGTERM handling")?;
    std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                INTERRUPTED.store(signal, std::sync::atomic::Ordering::SeqCst);
                clean_up();
                // Held until the exit: no other thread's line (a progress
                // line, still being drawn) may follow the one line said.
                let mut stderr = std::io::stderr().lock();
                say(&mut stderr, signal, json);
                std::process::exit(128 + signal);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Removes `path` (a directory this process made) if cairn is interrupted.
pub fn remove_on_interrupt(path: PathBuf) {
    STAGING
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(path);
}

/// Runs `undo` if cairn is interrupted (once, on the signal thread).
pub fn undo_on_interrupt(undo: Undo) {
    UNDO.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(undo);
}

/// The exit code of an interruption under way (130 or 143), if one is:
/// a command whose work ends because the interruption undid it returns
/// this rather than success.
pub fn interrupted() -> Option<u8> {
    match INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        signal => u8::try_from(128 + signal).ok(),
    }
}

/// The one line: which signal, and what was kept.
fn say(stderr: &mut impl Write, signal: i32, json: bool) {
    let name = if signal == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    let kept = KEPT
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone()
        // A command that said nothing makes no claim about what it kept.
        .unwrap_or_else(|| "stopped before it finished".into());
    let message = format!("interrupted by {name}: {kept}; temporary files removed");
    // Nothing to do if stderr is gone: the exit code still says it.
    let _ = if json {
        writeln!(
            stderr,
            "{}",
            serde_json::json!({"error": {
                "code": "interrupted",
                "exit_code": 128 + signal,
                "message": message,
                "object": null,
            }})
        )
    } else {
        writeln!(stderr, "cairn: {message}")
    };
}

fn clean_up() {
    let undo = std::mem::take(&mut *UNDO.lock().unwrap_or_else(|poison| poison.into_inner()));
    for action in undo {
        action();
    }
    cairn_store::ops::hooks::stop_commands();
    let staging = STAGING.lock().unwrap_or_else(|poison| poison.into_inner());
    for path in staging.iter() {
        let _ = std::fs::remove_dir_all(path);
    }
}
