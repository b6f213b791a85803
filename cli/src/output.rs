//! Formatting for people: sizes, error chains, JSON printing; and the one
//! place an error becomes an exit code and a message (text, or a JSON
//! object with `--json`), so every command, old or new, keeps the same
//! contract (README, "The CLI contract"). Never decides what to print
//! otherwise.

use crate::exit;
use serde::Serialize;
use std::process::ExitCode;

/// How a failed command ends: its exit code, and the `code` and `object`
/// of its JSON error.
pub struct Failure {
    pub exit_code: u8,
    pub code: &'static str,
    pub object: Option<String>,
}

impl Failure {
    /// Classifies an error by the first cause in its chain that says what
    /// kind it is: a usage mistake (exit 2), a locked repository (11), a
    /// conflict with a prune (6), or else a plain error (1).
    pub fn of(error: &anyhow::Error) -> Failure {
        let mut failure = Failure {
            exit_code: exit::ERROR,
            code: "error",
            object: None,
        };
        for cause in error.chain() {
            if let Some(usage) = cause.downcast_ref::<crate::context::Usage>() {
                return Failure {
                    exit_code: exit::USAGE,
                    code: "usage",
                    object: usage.object(),
                };
            }
            if let Some(store) = cause.downcast_ref::<cairn_store::StoreError>() {
                use cairn_store::StoreError;
                let exit_code = match store {
                    StoreError::Conflict(_) => exit::CONFLICT,
                    StoreError::KeySlotLocked(_)
                    | StoreError::Locked { .. }
                    | StoreError::ReadKeyMissing { .. } => exit::LOCKED,
                    StoreError::BadSnapshotSpec { .. } => exit::USAGE,
                    _ => exit::ERROR,
                };
                return Failure {
                    exit_code,
                    code: store.code(),
                    object: store.object(),
                };
            }
            if failure.code == "error" && cause.downcast_ref::<std::io::Error>().is_some() {
                failure.code = "io";
            }
        }
        failure
    }

    /// Prints the error on stderr: one line of text, or with `--json` one
    /// JSON object `{"error": {"code", "exit_code", "message", "object"}}`.
    pub fn print(&self, error: &anyhow::Error, json: bool) {
        if json {
            eprintln!("{}", self.json(&one_line(error)));
        } else {
            eprintln!("cairn: error: {}", one_line(error));
        }
    }

    fn json(&self, message: &str) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code,
                "exit_code": self.exit_code,
                "message": message,
                "object": self.object,
            }
        })
    }
}

/// A command line clap rejects: exit 2 with clap's message, as a JSON
/// error when `--json` was among the arguments; `--help` and `--version`
/// print as usual and exit 0.
pub fn clap_error(error: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ErrorKind};
    let shown = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let json = std::env::args_os().any(|argument| argument == "--json");
    if shown || !json {
        let _ = error.print();
        return ExitCode::from(if shown && error.exit_code() == 0 {
            exit::SUCCESS
        } else {
            exit::USAGE
        });
    }
    let object = error
        .get(ContextKind::InvalidArg)
        .or_else(|| error.get(ContextKind::InvalidSubcommand))
        .map(|argument| argument.to_string());
    // clap's own rendering, without its "error: " and usage lines.
    let rendered = error.render().to_string();
    let message = rendered
        .lines()
        .map(|line| line.trim_start_matches("error: ").trim())
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let failure = Failure {
        exit_code: exit::USAGE,
        code: "usage",
        object,
    };
    eprintln!("{}", failure.json(&message));
    ExitCode::from(exit::USAGE)
}

/// An error and its causes on one line, without repeating a cause that the
/// message already contains.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Bytes in binary units with one decimal (`12.3 MiB`).
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
