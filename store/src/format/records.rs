//! Signed records of deletion: forget records (which snapshots were
//! forgotten, when, by which key and under which policy) and deletion marks
//! (which packs a prune intends to delete once a grace period has passed).
//!
//! Both are sealed envelopes (`format::seal`), like manifests,
//! each with its own signing domain so that no signature can be replayed as
//! another kind of object. This module owns their encoding and signing; it
//! never decides what to forget or delete, and never deletes anything.

use crate::error::Result;
use crate::format::codec::{check_version, from_cbor, to_cbor};
use crate::format::keys::PublicKey;
use crate::format::seal::{Envelope, TrustFailure};
use crate::id::Id;
use ed25519_dalek::SigningKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const RECORD_VERSION: u32 = 1;
pub const FORGET_DOMAIN: &[u8] = b"cairn forget record v1\0";
pub const DELETION_DOMAIN: &[u8] = b"cairn deletion mark v1\0";

/// One snapshot as it was when forgotten, so the record still says what
/// was lost after its manifest is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgottenSnapshot {
    pub id: Id,
    pub time: String,
    pub host: String,
    pub components: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetRecord {
    pub version: u32,
    /// RFC 3339, UTC.
    pub time: String,
    pub host: String,
    pub user: String,
    /// The rules applied, e.g. `keep-daily 7, keep-weekly 4`, or
    /// `explicit` when snapshots were named one by one.
    pub policy: String,
    pub snapshots: Vec<ForgottenSnapshot>,
}

/// Why a pack is marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkReason {
    /// No kept snapshot needs any blob in it.
    Unused,
    /// Its live blobs were copied into new packs first.
    Repacked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkedPack {
    pub id: Id,
    pub size: u64,
    pub reason: MarkReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionMark {
    pub version: u32,
    /// RFC 3339, UTC: when the mark was written. Deletion waits until
    /// `time + grace_seconds`.
    pub time: String,
    pub grace_seconds: u64,
    pub host: String,
    pub packs: Vec<MarkedPack>,
}

impl ForgetRecord {
    pub fn new(
        time: String,
        host: String,
        user: String,
        policy: String,
        snapshots: Vec<ForgottenSnapshot>,
    ) -> Self {
        ForgetRecord {
            version: RECORD_VERSION,
            time,
            host,
            user,
            policy,
            snapshots,
        }
    }
}

impl DeletionMark {
    pub fn new(time: String, grace_seconds: u64, host: String, packs: Vec<MarkedPack>) -> Self {
        DeletionMark {
            version: RECORD_VERSION,
            time,
            grace_seconds,
            host,
            packs,
        }
    }

    /// When its packs may be deleted; `None` if the recorded time does not
    /// parse (such a mark never becomes due).
    pub fn due(&self) -> Option<jiff::Timestamp> {
        let written: jiff::Timestamp = self.time.parse().ok()?;
        let grace = jiff::SignedDuration::from_secs(i64::try_from(self.grace_seconds).ok()?);
        written.checked_add(grace).ok()
    }
}

/// A record in its signed envelope (the same shape as a manifest).
pub struct SignedRecord {
    envelope: Envelope,
    domain: &'static [u8],
}

impl SignedRecord {
    /// Signs `body` under `domain` for `repository` (envelope version 2).
    pub fn sign<T: Serialize>(
        body: &T,
        domain: &'static [u8],
        repository: &Id,
        key: &SigningKey,
    ) -> Self {
        SignedRecord {
            envelope: Envelope::seal(to_cbor(body), domain, repository, key),
            domain,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.envelope.encode()
    }

    pub fn decode(bytes: &[u8], domain: &'static [u8], object: &str) -> Result<Self> {
        Ok(SignedRecord {
            envelope: Envelope::decode(bytes, object)?,
            domain,
        })
    }

    pub fn signer(&self) -> PublicKey {
        self.envelope.signer()
    }

    /// The envelope's version: 1 (legacy, bound to no repository) or 2.
    pub fn envelope_version(&self) -> u32 {
        self.envelope.version
    }

    /// As [`crate::format::seal::Envelope::open`]: trusted signer, valid
    /// signature, made for `repository`.
    pub fn verify(
        &self,
        repository: &Id,
        trusted: &[PublicKey],
    ) -> std::result::Result<(), TrustFailure> {
        self.envelope.open(self.domain, repository, trusted)
    }

    /// The body, decoded without checking the signature: for callers that
    /// act on it only in the safe direction (a backup avoiding marked
    /// packs) or that checked [`SignedRecord::verify`] first.
    pub fn body_unverified<T: DeserializeOwned + Versioned>(&self, object: &str) -> Result<T> {
        let body: T = from_cbor(&self.envelope.body, object)?;
        check_version(body.version(), RECORD_VERSION, object)?;
        Ok(body)
    }
}

/// Bodies carry their own format version.
pub trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for ForgetRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

impl Versioned for DeletionMark {
    fn version(&self) -> u32 {
        self.version
    }
}
