//! Snapshot manifests: what a snapshot holds, signed with ed25519.
//!
//! A manifest object is a sealed envelope (`format::seal`) whose body is
//! the CBOR encoding of [`SnapshotBody`], signed under [`SIGNING_DOMAIN`]. The body names each component's
//! root tree by its hash, and trees name chunks by their hashes, so one
//! signature vouches for every byte of the snapshot. This module owns
//! the body's encoding and validation; it never decides which keys are
//! trusted.

use crate::error::{Result, StoreError};
use crate::format::chunking::FileChunking;
use crate::format::codec::{check_version, from_cbor, to_cbor};
use crate::format::keys::PublicKey;
use crate::format::seal::Envelope;
pub use crate::format::seal::TrustFailure;
use crate::id::Id;
use cairn_chunker::{ChunkerParams, Chunking};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The tag of a safety snapshot taken by a restore before it changed a
/// target; `latest` never means one of these.
pub const SAFETY_TAG: &str = "pre-restore";
const BODY_VERSION: u32 = 1;
/// The values `PRAGMA journal_mode` gives, the only ones a manifest's
/// `sqlite_journal_mode` may hold.
pub const SQLITE_JOURNAL_MODES: [&str; 6] =
    ["delete", "truncate", "persist", "memory", "wal", "off"];
/// Prefixed to the body before signing, so a signature over a manifest can
/// never be replayed as a signature over anything else.
pub const SIGNING_DOMAIN: &[u8] = b"cairn snapshot manifest v1\0";

/// A manifest in its sealed envelope (`format::seal`), signed under
/// [`SIGNING_DOMAIN`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignedManifest(Envelope);

impl std::ops::Deref for SignedManifest {
    type Target = Envelope;
    fn deref(&self) -> &Envelope {
        &self.0
    }
}

impl std::ops::DerefMut for SignedManifest {
    fn deref_mut(&mut self) -> &mut Envelope {
        &mut self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    pub version: u32,
    /// RFC 3339, UTC, nanoseconds (e.g. `2026-11-22T03:24:49.123456789Z`).
    pub time: String,
    pub host: String,
    pub user: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub parent: Option<Id>,
    pub chunker: ChunkerRecord,
    pub components: Vec<ComponentRecord>,
    /// Files that could not be read or changed while being read.
    pub problems: Vec<Problem>,
    pub cairn_version: String,
    /// The backed-up application's version, as the backup was told it
    /// (`--app-version`); absent when not given, and in manifests written
    /// before the key existed. A restore compares it with the running
    /// version (verdict `version-ahead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
}

/// The longest application version a manifest may record, in bytes.
pub const MAX_APP_VERSION: usize = 128;

/// Why an application version may not be recorded, if it may not: 1 to
/// [`MAX_APP_VERSION`] bytes, no control characters or whitespace.
pub fn check_app_version(version: &str) -> std::result::Result<(), String> {
    if version.is_empty() || version.len() > MAX_APP_VERSION {
        return Err(format!(
            "application version {version:?} must be 1 to {MAX_APP_VERSION} bytes"
        ));
    }
    if version.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "application version {version:?} holds whitespace or a control character"
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerRecord {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// The root tree is the directory's contents.
    Directory,
    /// The root tree holds exactly one entry: the file.
    File,
    /// As `File`, the file being a consistent copy of a live SQLite
    /// database taken with SQLite's online backup API; a restore runs
    /// SQLite's integrity check on it.
    Sqlite,
    /// As `File`, the file being what a command wrote to stdout; `source`
    /// is the command.
    Command,
}

impl ComponentKind {
    /// Whether the root tree holds one file rather than a directory's
    /// contents.
    pub fn is_single_file(self) -> bool {
        !matches!(self, ComponentKind::Directory)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRecord {
    pub name: String,
    pub kind: ComponentKind,
    /// The path that was backed up, as given.
    pub source: String,
    pub tree: Id,
    pub stats: ComponentStats,
    /// A directory component's own metadata (its root tree holds only its
    /// contents). Absent for file components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootMetadata>,
    /// Set when the component's files were cut into chunks of this many
    /// bytes instead of by the snapshot's content-defined `chunker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_chunk_size: Option<u32>,
    /// Set when files that start with the SQLite header were cut into
    /// fixed chunks of this many of their own pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite_pages_per_chunk: Option<u32>,
    /// A `sqlite` component's journal mode at backup, as `PRAGMA
    /// journal_mode` said it (e.g. `wal`); the stored copy is always in
    /// `delete` mode, and a restore puts `wal` back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite_journal_mode: Option<String>,
}

impl ComponentRecord {
    /// How this component's files were cut into chunks.
    pub fn chunking(&self, snapshot_chunker: &ChunkerRecord) -> FileChunking {
        let base = match self.fixed_chunk_size {
            Some(size) => Chunking::Fixed(size),
            None => Chunking::ContentDefined(ChunkerParams {
                min_size: snapshot_chunker.min_size,
                avg_size: snapshot_chunker.avg_size,
                max_size: snapshot_chunker.max_size,
            }),
        };
        FileChunking {
            base,
            sqlite_pages_per_chunk: self.sqlite_pages_per_chunk,
        }
    }
}

/// Mode, owner and mtime of a directory component's root directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootMetadata {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sum of file sizes.
    pub bytes: u64,
    /// Chunk references (a chunk used twice counts twice).
    pub chunks: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub component: String,
    /// Path inside the component, `/`-separated.
    pub path: String,
    pub problem: String,
}

impl SnapshotBody {
    pub fn new_version() -> u32 {
        BODY_VERSION
    }

    pub fn component_names(&self) -> Vec<String> {
        self.components.iter().map(|c| c.name.clone()).collect()
    }

    pub fn component(&self, name: &str) -> Option<&ComponentRecord> {
        self.components
            .iter()
            .find(|component| component.name == name)
    }
}

impl SignedManifest {
    /// Signs `body` for `repository` (envelope version 2).
    pub fn sign(body: &SnapshotBody, repository: &Id, key: &SigningKey) -> Self {
        SignedManifest(Envelope::seal(
            to_cbor(body),
            SIGNING_DOMAIN,
            repository,
            key,
        ))
    }

    /// The same body bytes, signed by `key` for `repository`: how a copy
    /// vouches, in the target, for a snapshot it verified in the source
    /// (a manifest names one repository, so it cannot move as it is).
    /// Signing is deterministic: the same body, key and repository always
    /// give the same manifest, and so the same snapshot id.
    pub fn resign(&self, repository: &Id, key: &SigningKey) -> Self {
        SignedManifest(Envelope::seal(
            self.0.body.clone(),
            SIGNING_DOMAIN,
            repository,
            key,
        ))
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }

    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        Envelope::decode(bytes, object).map(SignedManifest)
    }

    /// Checks the signer is trusted, the signature valid and the manifest
    /// made for `repository` (`trusted`: the keys trusted for it); only then
    /// is the body worth reading.
    pub fn verify(
        &self,
        repository: &Id,
        trusted: &[PublicKey],
    ) -> std::result::Result<(), TrustFailure> {
        self.0.open(SIGNING_DOMAIN, repository, trusted)
    }

    /// The body, for a caller that has checked [`SignedManifest::verify`]
    /// or only needs it for display (listing, choosing `latest`).
    pub fn body_unverified(&self) -> Result<SnapshotBody> {
        let object = "snapshot manifest body";
        let body: SnapshotBody = from_cbor(&self.body, object)?;
        check_version(body.version, BODY_VERSION, object)?;
        if let Some(version) = &body.app_version {
            check_app_version(version).map_err(|error| StoreError::corrupt(object, error))?;
        }
        // Component names become directory names on restore: one that could
        // climb out of the target is corruption, signed or not.
        let mut seen = std::collections::HashSet::new();
        for component in &body.components {
            check_component_name(&component.name)
                .map_err(|error| StoreError::corrupt(object, error.to_string()))?;
            if let Some(size) = component.fixed_chunk_size
                && Chunking::Fixed(size).validate().is_err()
            {
                return Err(StoreError::corrupt(
                    object,
                    format!(
                        "component {:?}: fixed chunk size {size} is out of range",
                        component.name
                    ),
                ));
            }
            if let Some(pages) = component.sqlite_pages_per_chunk
                && !(1..=crate::format::config::MAX_SQLITE_PAGES_PER_CHUNK).contains(&pages)
            {
                return Err(StoreError::corrupt(
                    object,
                    format!(
                        "component {:?}: sqlite_pages_per_chunk {pages} is out of range",
                        component.name
                    ),
                ));
            }
            if let Some(mode) = &component.sqlite_journal_mode
                && (component.kind != ComponentKind::Sqlite
                    || !SQLITE_JOURNAL_MODES.contains(&mode.as_str()))
            {
                return Err(StoreError::corrupt(
                    object,
                    format!(
                        "component {:?}: sqlite_journal_mode {mode:?} is not a journal mode of a sqlite component",
                        component.name
                    ),
                ));
            }
            if !seen.insert(component.name.as_str()) {
                return Err(StoreError::corrupt(
                    object,
                    format!("component {:?} appears twice", component.name),
                ));
            }
        }
        Ok(body)
    }

    /// Verifies, then decodes the body; `object` names the manifest in errors.
    pub fn verified_body(
        &self,
        repository: &Id,
        trusted: &[PublicKey],
        object: &str,
    ) -> Result<SnapshotBody> {
        self.verify(repository, trusted).map_err(|failure| match failure {
            TrustFailure::UntrustedSigner(key) => StoreError::KeyMismatch(format!(
                "{object} is signed by key {}, which is not trusted here (pin it with --trusted-key if it is yours)",
                key.to_hex()
            )),
            TrustFailure::BadSignature => {
                StoreError::corrupt(object, "signature does not match its contents (tampered?)")
            }
            other @ TrustFailure::OtherRepository(_) => {
                StoreError::corrupt(object, other.to_string())
            }
        })?;
        self.body_unverified()
    }
}

/// Whether `bytes`, which this cairn cannot read as a manifest, declare an
/// envelope or body version newer than it reads: then a newer writer made
/// them (not garbage), and what they name must not be taken for dead.
pub fn from_a_newer_writer(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Declared {
        version: u32,
        #[serde(default, with = "serde_bytes")]
        body: Vec<u8>,
    }
    let Ok(envelope) = from_cbor::<Declared>(bytes, "manifest") else {
        return false;
    };
    envelope.version > crate::format::seal::ENVELOPE_VERSION
        || from_cbor::<Declared>(&envelope.body, "manifest body")
            .is_ok_and(|body| body.version > BODY_VERSION)
}

/// Component names: `[a-z0-9_.-]+`, not `.` or `..`, at most 64 bytes.
pub fn check_component_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 bytes")
    } else if name == "." || name == ".." {
        Some("it is a relative directory")
    } else if !name
        .bytes()
        .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
    {
        Some("only a-z, 0-9, '_', '.' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidComponentName {
            name: name.into(),
            reason: reason.into(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};

    fn body() -> SnapshotBody {
        SnapshotBody {
            version: BODY_VERSION,
            time: "2026-11-22T03:24:49Z".into(),
            host: "h".into(),
            user: "u".into(),
            tags: vec![],
            labels: BTreeMap::new(),
            parent: None,
            chunker: ChunkerRecord {
                min_size: 4096,
                avg_size: 16384,
                max_size: 65536,
            },
            components: vec![],
            problems: vec![],
            cairn_version: "test".into(),
            app_version: None,
        }
    }

    #[test]
    fn a_signed_manifest_verifies_only_for_trusted_keys_and_intact_bodies() {
        let key = generate_signing_key().unwrap();
        let trusted = [public_key_of(&key)];
        let here = Id([1; 32]);
        let manifest = SignedManifest::sign(&body(), &here, &key);
        let decoded = SignedManifest::decode(&manifest.encode(), "m").unwrap();
        assert_eq!(decoded.verified_body(&here, &trusted, "m").unwrap(), body());
        assert_eq!(
            decoded.verify(&Id([2; 32]), &trusted),
            Err(TrustFailure::OtherRepository(here))
        );

        let stranger = [public_key_of(&generate_signing_key().unwrap())];
        assert!(matches!(
            decoded.verify(&here, &stranger),
            Err(TrustFailure::UntrustedSigner(_))
        ));

        let mut tampered_body = body();
        tampered_body.host = "evil".into();
        let mut tampered = decoded.clone();
        tampered.body = to_cbor(&tampered_body);
        assert_eq!(
            tampered.verify(&here, &trusted),
            Err(TrustFailure::BadSignature)
        );
    }

    #[test]
    fn only_a_newer_version_counts_as_a_newer_writer() {
        let key = generate_signing_key().unwrap();
        let mut manifest = SignedManifest::sign(&body(), &Id([1; 32]), &key);
        assert!(!from_a_newer_writer(b"garbage"));
        assert!(!from_a_newer_writer(&manifest.encode()));
        manifest.version = crate::format::seal::ENVELOPE_VERSION + 1;
        assert!(from_a_newer_writer(&manifest.encode()));
        let mut newer_body = body();
        newer_body.version = BODY_VERSION + 1;
        let manifest = SignedManifest::sign(&newer_body, &Id([1; 32]), &key);
        assert!(from_a_newer_writer(&manifest.encode()));
    }
}
