//! Snapshot annotations: a snapshot's tags and labels as changed after it
//! was made (`cairn tag`), FORMAT.md 11.7.
//!
//! A manifest is immutable and signed, so its tags cannot change in place.
//! An annotation is a signed record (the envelope of `format::records`,
//! under its own domain) that names one snapshot and states that
//! snapshot's *whole* set of tags and labels from then on, with a sequence
//! number one above the annotation it replaces. Stating the whole set,
//! never a difference, makes the newest trusted annotation enough to know
//! the snapshot's tags: no chain to replay, and an old annotation put back
//! by an attacker loses to the newer one by its sequence.
//!
//! This module owns the body's encoding and validation. It never decides
//! which keys are trusted, which annotation wins (`ops::annotate`) or
//! reads storage.

use crate::error::{Result, StoreError};
use crate::format::manifest::SAFETY_TAG;
use crate::format::records::{SignedRecord, Versioned};
use crate::id::Id;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Prefixed to the body before signing (after the envelope prefix and
/// before the repository id, FORMAT.md 11.2), so no other object's
/// signature can pass for an annotation's.
pub const ANNOTATION_DOMAIN: &[u8] = b"cairn snapshot annotation v1\0";
const ANNOTATION_VERSION: u32 = 1;
/// At most this many tags, and this many labels, per annotation.
pub const MAX_ANNOTATION_ENTRIES: usize = 256;
/// The longest tag, label key or label value, in bytes.
pub const MAX_ANNOTATION_TEXT: usize = 256;

/// One snapshot's tags and labels from `sequence` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    pub version: u32,
    /// The snapshot it describes (the id of its manifest).
    pub snapshot: Id,
    /// One more than the sequence of the annotation it replaces (1 for the
    /// first): the greatest wins.
    pub sequence: u64,
    /// RFC 3339, UTC: when it was written. Informational.
    pub time: String,
    pub host: String,
    pub user: String,
    /// The snapshot's tags from now on, replacing its manifest's.
    pub tags: Vec<String>,
    /// The snapshot's labels from now on, replacing its manifest's.
    pub labels: BTreeMap<String, String>,
}

impl Versioned for Annotation {
    fn version(&self) -> u32 {
        self.version
    }
}

impl Annotation {
    pub fn new(
        snapshot: Id,
        sequence: u64,
        (time, host, user): (String, String, String),
        tags: Vec<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self> {
        let annotation = Annotation {
            version: ANNOTATION_VERSION,
            snapshot,
            sequence,
            time,
            host,
            user,
            tags,
            labels,
        };
        annotation.validate("the new annotation")?;
        Ok(annotation)
    }

    /// Signs it for `repository` under [`ANNOTATION_DOMAIN`].
    pub fn sign(&self, repository: &Id, key: &SigningKey) -> SignedRecord {
        SignedRecord::sign(self, ANNOTATION_DOMAIN, repository, key)
    }

    /// Decodes an annotation object's envelope and body, validated; the
    /// signature is the caller's to check ([`SignedRecord::verify`]).
    pub fn decode(bytes: &[u8], object: &str) -> Result<(Self, SignedRecord)> {
        let record = SignedRecord::decode(bytes, ANNOTATION_DOMAIN, object)?;
        // Annotations came after envelope version 2: one bound to no
        // repository was never written by a cairn, and could be replayed
        // from any repository that trusts its signer.
        if record.envelope_version() != 2 {
            return Err(StoreError::corrupt(
                object,
                "annotation in a version-1 envelope (bound to no repository)",
            ));
        }
        // `body_unverified` refuses any version but 1.
        let body: Annotation = record.body_unverified(object)?;
        body.validate(object)?;
        Ok((body, record))
    }

    /// The rules of FORMAT.md 11.7: a positive sequence; at most
    /// [`MAX_ANNOTATION_ENTRIES`] tags and labels, each non-empty text of
    /// at most [`MAX_ANNOTATION_TEXT`] bytes; tags unique; and never the
    /// safety tag, which only a restore's own manifest may carry (an
    /// annotation adding it would hide a snapshot from `latest`, one
    /// removing it would make a safety snapshot `latest`).
    pub fn validate(&self, object: &str) -> Result<()> {
        let fail = |why: String| Err(StoreError::corrupt(object, why));
        if self.sequence == 0 {
            return fail("sequence 0 (the first annotation is 1)".into());
        }
        if self.tags.len() > MAX_ANNOTATION_ENTRIES || self.labels.len() > MAX_ANNOTATION_ENTRIES {
            return fail(format!("more than {MAX_ANNOTATION_ENTRIES} tags or labels"));
        }
        let texts = self
            .tags
            .iter()
            .chain(self.labels.keys())
            .map(|text| (text, false))
            .chain(self.labels.values().map(|text| (text, true)));
        for (text, may_be_empty) in texts {
            if (text.is_empty() && !may_be_empty) || text.len() > MAX_ANNOTATION_TEXT {
                return fail(format!(
                    "tag or label {text:?} is empty or longer than {MAX_ANNOTATION_TEXT} bytes"
                ));
            }
        }
        for (at, tag) in self.tags.iter().enumerate() {
            if tag == SAFETY_TAG {
                return fail(format!(
                    "tag {SAFETY_TAG:?} belongs to a restore's safety snapshot and cannot be annotated"
                ));
            }
            if self.tags[..at].contains(tag) {
                return fail(format!("tag {tag:?} is given twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotation(tags: &[&str]) -> Annotation {
        Annotation {
            version: 1,
            snapshot: Id::of(b"snapshot"),
            sequence: 1,
            time: "2026-12-06T13:00:00Z".into(),
            host: "h".into(),
            user: "u".into(),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn the_safety_tag_cannot_be_annotated() {
        let error = annotation(&["keep", SAFETY_TAG]).validate("a").unwrap_err();
        assert!(error.to_string().contains("safety snapshot"), "{error}");
    }

    #[test]
    fn a_signed_annotation_decodes_and_a_changed_byte_fails_its_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let repository = Id::of(b"repository");
        let bytes = annotation(&["keep"]).sign(&repository, &key).encode();
        let (body, record) = Annotation::decode(&bytes, "a").unwrap();
        assert_eq!(body.tags, vec!["keep".to_string()]);
        let signer = crate::format::keys::public_key_of(&key);
        record.verify(&repository, &[signer]).unwrap();
        assert!(record.verify(&Id::of(b"other"), &[signer]).is_err());
    }
}
