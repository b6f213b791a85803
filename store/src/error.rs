//! The store's error type.
//!
//! Rules: every error names the object, file or value at fault, so the CLI
//! can print it as one line; corruption is its own variant and is never
//! turned into "not found" or silently skipped; the library never prints.

use std::path::PathBuf;
use thiserror::Error;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cairn repository (no config object)")]
    NotARepository { path: String },
    #[error("{path} already holds a cairn repository")]
    AlreadyARepository { path: String },
    #[error("{object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("{object} is missing from the repository")]
    Missing { object: String },
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    #[error("snapshot prefix {prefix:?} is ambiguous ({count} snapshots match)")]
    AmbiguousSnapshot { prefix: String, count: usize },
    #[error("component {name:?} is not in snapshot {snapshot}")]
    ComponentNotFound { name: String, snapshot: String },
    #[error("invalid component name {name:?}: {reason}")]
    InvalidComponentName { name: String, reason: String },
    #[error("component name {0:?} is used twice")]
    DuplicateComponent(String),
    #[error("source path {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    #[error("secret key file {} does not exist (give --key-file or set CAIRN_KEY_FILE)", .0.display())]
    KeyMissing(PathBuf),
    #[error("key file {}: {reason}", .path.display())]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("{0}")]
    KeyMismatch(String),
    /// Decrypting `object` takes the repository's read key, and the keys
    /// this host holds are write-only (FORMAT.md 17.6).
    #[error(
        "{object} can only be read with the repository's read key, and this host holds only \
         a write-only key (open the repository with a passphrase or identity that holds the \
         read key)"
    )]
    ReadKeyMissing { object: String },
    /// An encrypted repository used before it was unlocked.
    #[error(
        "{location} is an encrypted repository: give its passphrase (CAIRN_PASSWORD, \
         CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND, or at the prompt) to open it"
    )]
    Locked { location: String },
    /// No key slot opened with what was given (wrong passphrase, or an
    /// identity no slot is wrapped for).
    #[error("{0}")]
    KeySlotLocked(String),
    #[error("invalid chunker parameters: {0}")]
    Params(#[from] cairn_chunker::ParamsError),
    #[error("{0}")]
    Invalid(String),
    /// Another process (a prune) changed the repository under this one in
    /// a way it cannot work around; running again resolves it.
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}
