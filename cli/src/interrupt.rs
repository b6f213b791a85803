//! SIGINT and SIGTERM: instead of dying where it stands, cairn stops the
//! commands it started (a command component's dump, a hook), removes its
//! staging directories (copies of databases, commands' output) and exits
//! with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a
//! shell reports a process killed by it.
//!
//! The handling runs on a thread of its own that `signal-hook` wakes (no
//! work happens inside the signal handler); the library only offers the
//! cleanup ([`cairn_store::ops::hooks::stop_commands`]) and installs no
//! handler. Owns the list of staging directories to remove; never removes
//! a path it was not given.

use anyhow::{Context as _, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use std::sync::Mutex;

/// Staging directories this process made, removed on interruption.
static STAGING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Starts the thread that handles SIGINT and SIGTERM.
pub fn install() -> Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("installing the SIGINT/SIGTERM handling")?;
    std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                clean_up();
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

fn clean_up() {
    cairn_store::ops::hooks::stop_commands();
    let staging = STAGING.lock().unwrap_or_else(|poison| poison.into_inner());
    for path in staging.iter() {
        let _ = std::fs::remove_dir_all(path);
    }
}
