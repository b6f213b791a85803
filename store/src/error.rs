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
    /// `existing` lists the snapshot's components, so the message can
    /// name them and the nearest to `name`.
    #[error(
        "component {name:?} is not in snapshot {snapshot}; {}",
        did_you_mean(name, existing)
    )]
    ComponentNotFound {
        name: String,
        snapshot: String,
        existing: Vec<String>,
    },
    /// A snapshot argument that cannot name a snapshot by its form alone
    /// (too short a prefix, not hexadecimal): a mistake in how cairn was
    /// called, not a missing snapshot.
    #[error("snapshot {spec:?}: {rule}")]
    BadSnapshotSpec { spec: String, rule: String },
    /// `latest` found no snapshot signed by a trusted key, and passed over
    /// `passed_over` manifests that are not (or do not verify).
    #[error(
        "no trusted snapshot can be latest: {passed_over} snapshot(s) passed over as untrusted \
         or unreadable ({reasons}); check --trusted-key or the keys trusted with `cairn trust`"
    )]
    NoTrustedSnapshot { passed_over: usize, reasons: String },
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

    /// A short, stable name for the kind of error, for programs reading
    /// `--json` errors (`"code"`); documented in the README.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "io",
            StoreError::NotARepository { .. } => "not-a-repository",
            StoreError::AlreadyARepository { .. } => "already-a-repository",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Missing { .. } => "missing",
            StoreError::SnapshotNotFound(_) => "snapshot-not-found",
            StoreError::AmbiguousSnapshot { .. } => "ambiguous-snapshot",
            StoreError::ComponentNotFound { .. } => "component-not-found",
            StoreError::BadSnapshotSpec { .. } => "usage",
            StoreError::NoTrustedSnapshot { .. } => "no-trusted-snapshot",
            StoreError::InvalidComponentName { .. } | StoreError::DuplicateComponent(_) => {
                "invalid-component"
            }
            StoreError::SourceMissing(_) => "source-missing",
            StoreError::KeyMissing(_) | StoreError::BadKeyFile { .. } => "key-file",
            StoreError::KeyMismatch(_) => "key-mismatch",
            StoreError::ReadKeyMissing { .. } => "read-key-missing",
            StoreError::Locked { .. } | StoreError::KeySlotLocked(_) => "locked",
            StoreError::Params(_) => "invalid-parameters",
            StoreError::Invalid(_) => "invalid",
            StoreError::Conflict(_) => "conflict",
        }
    }

    /// The object, file, snapshot or component at fault, where the error
    /// names one (`"object"` in `--json` errors).
    pub fn object(&self) -> Option<String> {
        match self {
            StoreError::NotARepository { path } | StoreError::AlreadyARepository { path } => {
                Some(path.clone())
            }
            StoreError::Corrupt { object, .. }
            | StoreError::Missing { object }
            | StoreError::ReadKeyMissing { object } => Some(object.clone()),
            StoreError::SnapshotNotFound(spec) => Some(spec.clone()),
            StoreError::AmbiguousSnapshot { prefix, .. } => Some(prefix.clone()),
            StoreError::BadSnapshotSpec { spec, .. } => Some(spec.clone()),
            StoreError::ComponentNotFound { name, .. }
            | StoreError::InvalidComponentName { name, .. } => Some(name.clone()),
            StoreError::DuplicateComponent(name) => Some(name.clone()),
            StoreError::SourceMissing(path)
            | StoreError::KeyMissing(path)
            | StoreError::BadKeyFile { path, .. } => Some(path.display().to_string()),
            StoreError::Locked { location } => Some(location.clone()),
            StoreError::NoTrustedSnapshot { .. } => Some("latest".into()),
            StoreError::Io { .. }
            | StoreError::KeyMismatch(_)
            | StoreError::KeySlotLocked(_)
            | StoreError::Params(_)
            | StoreError::Invalid(_)
            | StoreError::Conflict(_) => None,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

/// What to say when `name` is not among `existing`: the names that exist,
/// and the nearest one when it is close enough to be a typo (at most a
/// third of its letters wrong, by Damerau-Levenshtein distance).
pub fn did_you_mean(name: &str, existing: &[String]) -> String {
    if existing.is_empty() {
        return "it holds none".into();
    }
    let listed = format!("it holds: {}", existing.join(", "));
    match nearest(name, existing) {
        Some(nearest) => format!("{listed}; did you mean {nearest:?}?"),
        None => listed,
    }
}

/// The name in `existing` nearest to `name`, if near enough to be a typo.
pub fn nearest<'a>(name: &str, existing: &'a [String]) -> Option<&'a str> {
    let allowed = name.chars().count().div_ceil(3).max(1);
    existing
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_nearest_name_and_a_stranger_only_the_list() {
        let existing = vec!["memory".to_string(), "db".to_string(), "app".to_string()];
        assert_eq!(nearest("memry", &existing), Some("memory"));
        assert_eq!(nearest("mmeory", &existing), Some("memory"));
        assert_eq!(nearest("photos", &existing), None);
        assert_eq!(
            did_you_mean("memry", &existing),
            "it holds: memory, db, app; did you mean \"memory\"?"
        );
        assert_eq!(
            did_you_mean("photos", &existing),
            "it holds: memory, db, app"
        );
    }
}
