//! Where repository objects live, shaped for object storage: a local
//! directory ([`LocalBackend`]), a prefix of an S3 bucket ([`S3Backend`]),
//! or a repository another machine serves (`cairn serve --repo`,
//! [`HttpBackend`]).
//!
//! A backend stores immutable objects, each under a kind and a name. It can
//! create an object only if absent, read all of it or a byte range, list the
//! objects of a kind with their sizes, and delete one. There is no rename,
//! append or overwrite above this line, so an S3 backend can implement the
//! same trait. Atomicity is the backend's job: a reader never sees part of
//! an object. Checking that an object's bytes match its name is not: the
//! layers above verify every object they read. [`MemoryBackend`] keeps
//! objects in memory, for tests of the layers above.
//!
//! Durability: once `create` returns, the object survives a crash.
//!
//! Every backend passes one conformance suite,
//! `store/tests/backend_conformance.rs`, which checks each promise the
//! [`Backend`] trait's documentation makes.

mod aws_credentials;
pub mod http;
mod local;
mod memory;
mod no_delete;
mod s3;
mod s3_raw;
mod s3_settings;
mod s3_versions;
mod throttle;

pub use http::{HttpBackend, HttpOptions};
pub use local::LocalBackend;
pub use memory::MemoryBackend;
pub use no_delete::NoDeleteBackend;
pub use s3::{ConditionalPut, MULTIPART_THRESHOLD, S3Backend, S3Location, S3Options};
pub use s3_settings::{S3Settings, SETTING_NAMES, redact_location};
pub use s3_versions::{AsOfBackend, Extended, LockMode, ObjectVersion, Undeleted, parse_as_of};
pub use throttle::{RateLimits, Throttled, parse_rate};

use crate::error::{Result, StoreError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a remote backend (S3, a `cairn serve`) waits with no byte
/// coming in on a request that sends no body (a GET, a HEAD, a listing)
/// before it gives that attempt up as a lost connection, which the
/// backend's retries and a restore's fallback repositories then handle.
/// The whole-request timeout (300 s, sized for a pack going up a slow
/// link) is far too long for a connection that went silent: one such GET
/// held a restore for minutes.
///
/// 30 s, because a live link, however slow, is never silent that long: TCP
/// delivers each segment as it comes (a 16 KiB read arrives every two
/// seconds even at 64 kbit/s), a lost segment is retransmitted after 0.2,
/// 0.4, 0.8, ... s (seven losses in a row still take under 26 s), and
/// S3's time to a first byte is well under a second. Reset by every read
/// that brings bytes, so a large object may take as long as it needs.
/// Requests that send a body (uploads) do not get it: the client's read
/// timer would run while the body goes up, and cut a slow upload.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one request to object storage or a served repository may take
/// in all: a whole pack must go up or down within it, over a slow link too.
/// A connection that goes silent is caught long before by the idle-read
/// timeout ([`DEFAULT_READ_TIMEOUT`]), on requests that send no body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The backend for a repository location: `s3://bucket/prefix` is S3 (see
/// [`S3Backend::open`] for credentials), anything else a local directory.
/// A served repository (`http(s)://`) signs its requests, so it is opened
/// with a key by [`HttpBackend::open`], not here.
pub fn open_backend(location: &str, s3: &S3Options) -> Result<Arc<dyn Backend>> {
    if location.starts_with("s3://") {
        Ok(Arc::new(S3Backend::open(S3Location::parse(location)?, s3)?))
    } else if is_served(location) {
        Err(StoreError::Invalid(format!(
            "repository {location:?}: a served repository is opened with a signing key (HttpBackend::open)"
        )))
    } else if location.contains("://") {
        Err(StoreError::Invalid(format!(
            "repository {:?}: unknown scheme (a repository is a directory, s3://BUCKET/PREFIX or http(s)://HOST:PORT/NAME)",
            redact_location(location)
        )))
    } else {
        Ok(Arc::new(LocalBackend::new(location)))
    }
}

/// Whether `location` names a repository a `cairn serve` serves.
pub fn is_served(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// [`open_backend`], with its transfers held to `limits`.
pub fn open_backend_limited(
    location: &str,
    s3: &S3Options,
    limits: RateLimits,
) -> Result<Arc<dyn Backend>> {
    let backend = open_backend(location, s3)?;
    if limits.is_unlimited() {
        return Ok(backend);
    }
    Ok(Arc::new(Throttled::new(backend, limits)))
}

/// Object names are hex ids or `config`; anything else could escape the
/// repository's directory or prefix. The config kind holds only `config`:
/// the local backend keeps it in the repository's root, where any other
/// name could be one of the folders.
pub(crate) fn check_name(kind: ObjectKind, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !valid {
        return Err(StoreError::Invalid(format!("invalid object name {name:?}")));
    }
    if kind == ObjectKind::Config && name != crate::format::config::CONFIG_NAME {
        return Err(StoreError::Invalid(format!(
            "invalid object name {name:?}: the only config object is `{}`",
            crate::format::config::CONFIG_NAME
        )));
    }
    Ok(())
}

/// What every backend returns for an absent object.
pub(crate) fn missing(kind: ObjectKind, name: &str) -> StoreError {
    StoreError::Missing {
        object: format!("{} {name}", kind.label()),
    }
}

/// What every backend returns for an object larger than a whole read
/// allows.
pub(crate) fn too_large(kind: ObjectKind, name: &str, size: u64, limit: u64) -> StoreError {
    StoreError::corrupt(
        format!("{} {name}", kind.label()),
        format!("is {size} bytes, more than the {limit} its kind may take; not read"),
    )
}

/// What every backend returns for a range that ends past the object's end.
pub(crate) fn past_end(
    kind: ObjectKind,
    name: &str,
    offset: u64,
    length: u64,
    size: u64,
) -> StoreError {
    StoreError::corrupt(
        format!("{} {name}", kind.label()),
        format!("range {offset}+{length} lies past its end ({size} bytes)"),
    )
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
    /// Key slots: the repository's key material wrapped for one holder
    /// (passphrase or recipient), FORMAT.md 17.5.
    KeySlot,
    /// Keyring objects: the owner's signed list of writers' keys and their
    /// revocations, FORMAT.md 17.7.
    Keyring,
    /// Signed annotations: a snapshot's tags and labels as changed after
    /// it was made (`cairn tag`), FORMAT.md 11.7.
    Annotation,
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
            ObjectKind::KeySlot => "key slot",
            ObjectKind::Keyring => "keyring",
            ObjectKind::Annotation => "annotation",
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

/// What [`Backend::purge`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purged {
    /// The object and every stored version of it are gone.
    Gone,
    /// The storage refused: a retention (S3 Object Lock) still protects a
    /// version. Not an error: a later prune finishes.
    Retained,
}

/// Whether `create` wrote a new object or found one already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

/// Immutable objects by kind and name. Names are 1 to 128 ASCII letters,
/// digits, `-` or `_`, and the config kind's one object is `config`; every
/// method refuses any other name with `StoreError::Invalid` before it
/// touches storage. Every method may be called from many threads at once.
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
    /// exists, in which case nothing is written and the object keeps its
    /// bytes (`AlreadyExisted`). Of writers racing for one name, exactly
    /// one gets `New` and the object holds its bytes, whole. An empty
    /// object is an object.
    ///
    /// On error the name holds either nothing or, if the failure came
    /// after the object was stored (a lost reply, a failed directory
    /// sync), the whole object; never part of one. A retry then gets
    /// `New` or `AlreadyExisted`.
    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created>;

    /// The whole object, if it is at most `limit` bytes long.
    /// `StoreError::Missing` naming the kind and the name if absent. A
    /// larger object is `StoreError::Corrupt`, naming it and both sizes,
    /// refused from its size alone before any of its bytes is read or
    /// anything is allocated for them: a planted giant costs nothing.
    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>>;

    /// `length` bytes from `offset`. A range that ends past the object's
    /// end (or whose end overflows) is `StoreError::Corrupt`, naming the
    /// object: callers take ranges from an index, so a short object is a
    /// damaged one. An empty range that starts at or before the end is an
    /// empty read. `StoreError::Missing` if absent.
    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, length: u64)
    -> Result<Vec<u8>>;

    /// [`Backend::read_range`] into `buffer`, which is cleared first and
    /// holds exactly the range after `Ok` (on error, anything). A caller
    /// reading range after range hands the same buffer back each time, so
    /// that its pages stay mapped: a fresh buffer of several MiB is mapped,
    /// faulted in, zeroed by the kernel and unmapped again for every read
    /// (the mmap threshold, `cli/src/main.rs`). The default reads a fresh
    /// one and keeps it in `buffer`.
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
        buffer: &mut Vec<u8>,
    ) -> Result<()> {
        *buffer = self.read_range(kind, name, offset, length)?;
        Ok(())
    }

    /// Says that `kind`/`name` will be read soon, so that storage can start
    /// fetching it in the background (the local backend asks the kernel to
    /// read the file into its page cache). Only a hint: nothing comes into
    /// the caller's memory, nothing is checked or trusted, errors are left
    /// for the read that follows; a backend may do nothing (the default).
    fn prefetch(&self, _kind: ObjectKind, _name: &str) {}

    /// Whether [`Backend::prefetch`] does anything here: when it does not,
    /// callers spare themselves the listing that would name what to hint
    /// (a round trip per kind on object storage).
    fn prefetches(&self) -> bool {
        false
    }

    /// Every object of `kind`, each once, in no particular order, with its
    /// whole size; never an object being written. An object created before
    /// the listing starts and not deleted while it runs is listed; one
    /// created or deleted while it runs may or may not be, and its deletion
    /// is not an error. The config kind lists `config` or nothing.
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// Removes an object; removing an absent one is not an error. On a
    /// versioned bucket the object is only hidden (a delete marker).
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()>;

    /// Until when the storage refuses to delete the object (S3 Object
    /// Lock's retention), if it does; `None` where storage has no locks.
    fn retained_until(&self, _kind: ObjectKind, _name: &str) -> Result<Option<SystemTime>> {
        Ok(None)
    }

    /// Removes an object for good: every stored version of it, where
    /// storage keeps versions. `Purged::Retained` if a retention refuses;
    /// elsewhere the same as [`Backend::delete`].
    fn purge(&self, kind: ObjectKind, name: &str) -> Result<Purged> {
        self.delete(kind, name).map(|()| Purged::Gone)
    }
}
