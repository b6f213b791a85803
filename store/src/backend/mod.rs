//! Where repository objects live, shaped for object storage: a local
//! directory ([`LocalBackend`]) or a prefix of an S3 bucket ([`S3Backend`]).
//!
//! A backend stores immutable objects, each under a kind and a name. It can
//! create an object only if absent, read all of it or a byte range, list the
//! objects of a kind with their sizes, and delete one. There is no rename,
//! append or overwrite above this line, so an S3 backend can implement the
//! same trait. Atomicity is the backend's job: a reader never sees part of
//! an object. Checking that an object's bytes match its name is not: the
//! layers above verify every object they read.
//!
//! Durability: once `create` returns, the object survives a crash.

mod local;
mod s3;

pub use local::LocalBackend;
pub use s3::{MULTIPART_THRESHOLD, S3Backend, S3Location, S3Options};

use crate::error::{Result, StoreError};
use std::sync::Arc;

/// The backend for a repository location: `s3://bucket/prefix` is S3 (see
/// [`S3Backend::open`] for credentials), anything else a local directory.
pub fn open_backend(location: &str, s3: &S3Options) -> Result<Arc<dyn Backend>> {
    if location.starts_with("s3://") {
        Ok(Arc::new(S3Backend::open(S3Location::parse(location)?, s3)?))
    } else if location.contains("://") {
        Err(StoreError::Invalid(format!(
            "repository {location:?}: unknown scheme (a repository is a directory or s3://BUCKET/PREFIX)"
        )))
    } else {
        Ok(Arc::new(LocalBackend::new(location)))
    }
}

/// Object names are hex ids or `config`; anything else could escape the
/// repository's directory or prefix.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("invalid object name {name:?}")))
    }
}

/// The kinds of object a repository holds, each in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// The repository's one configuration object, named `config`.
    Config,
    /// Public signing keys.
    Key,
    /// Packs of chunks and trees.
    Pack,
    /// Index files.
    Index,
    /// Signed snapshot manifests.
    Snapshot,
    /// Signed records of snapshots forgotten (what, when, by which key).
    Forget,
    /// Signed deletion marks: packs a prune will delete after a grace
    /// period unless something needs them again.
    Deletion,
}

impl ObjectKind {
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Forget => "forget record",
            ObjectKind::Deletion => "deletion mark",
        }
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// When the object was created, if the backend knows: a prune leaves
    /// young packs alone, as they may belong to a backup still running.
    pub modified: Option<std::time::SystemTime>,
}

/// Whether `create` wrote a new object or found one already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;

    /// How many requests callers should keep in flight at once: one for a
    /// local disk, several for object storage, where each request waits a
    /// round trip.
    fn parallelism(&self) -> usize {
        1
    }

    /// Removes what writers that crashed long ago left outside the
    /// repository's objects, and returns how many it removed.
    fn remove_stale_temporaries(&self) -> Result<usize> {
        Ok(0)
    }

    /// Stores `bytes` under `kind`/`name` unless an object of that name
    /// exists, in which case nothing is written.
    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created>;

    /// The whole object; `StoreError::Missing` if absent.
    fn read(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>>;

    /// `length` bytes from `offset`; a range past the end is `Corrupt`.
    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, length: u64)
    -> Result<Vec<u8>>;

    /// Every object of `kind`, in no particular order.
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// Removes an object; removing an absent one is not an error.
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()>;
}
