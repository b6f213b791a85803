//! Sealing: the one place where an object's bytes are signed and opened.
//!
//! A sealed object is a CBOR map `{version, repository, body, signer,
//! signature}` (FORMAT.md 11.1). The body is kept as the exact bytes that
//! were signed, so re-encoding can never break a signature. The signature
//! covers a prefix, a domain string, the repository's id and those bytes:
//! each kind of signed object (manifest, forget record, deletion mark) has
//! its own domain, so no signature can be replayed as another kind, and
//! each names the repository it was made for, so none can be replayed in
//! another repository. Version-1 envelopes (no repository; written before
//! version 2) are still opened, for a signer the caller trusts for this
//! repository. This module checks signatures against a set of trusted
//! keys; it never decides which keys are trusted and never decodes bodies.

use crate::error::{Result, StoreError};
use crate::format::codec::{from_cbor, to_cbor};
use crate::format::keys::PublicKey;
use crate::id::Id;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Envelope version 1: no repository; the signature covers
/// `domain || body`. Still read (repositories written before version 2),
/// never written.
pub const LEGACY_ENVELOPE_VERSION: u32 = 1;
/// Envelope version 2: names the repository; the signature covers
/// [`V2_PREFIX`] `|| domain || repository id || body`.
pub const ENVELOPE_VERSION: u32 = 2;
/// Starts every version-2 signed message. No version-1 message starts
/// with it (those start with their domain, `cairn snapshot manifest v1`,
/// `cairn forget record v1` or `cairn deletion mark v1`), so no version-1
/// signature can ever be read as a version-2 one, whatever its body.
const V2_PREFIX: &[u8] = b"cairn envelope v2\0";

/// A signed body, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
    /// The repository the object belongs to (version 2; absent in 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Id>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signer: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// Why a signed object was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustFailure {
    /// Signed by a key that is not trusted here.
    UntrustedSigner(PublicKey),
    /// The signature does not match the body.
    BadSignature,
    /// Validly named for another repository (this id): a replay.
    OtherRepository(Id),
}

impl std::fmt::Display for TrustFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustFailure::UntrustedSigner(key) => {
                write!(f, "signed by untrusted key {}", key.to_hex())
            }
            TrustFailure::BadSignature => f.write_str("signature does not match its contents"),
            TrustFailure::OtherRepository(id) => write!(
                f,
                "signed for another repository ({id}), not this one (copied or replayed from there)"
            ),
        }
    }
}

impl Envelope {
    /// Signs encoded body bytes under `domain` for `repository` (version 2).
    pub fn seal(body: Vec<u8>, domain: &[u8], repository: &Id, key: &SigningKey) -> Self {
        let signature = key.sign(&signed_message_v2(domain, repository, &body));
        Envelope {
            version: ENVELOPE_VERSION,
            repository: Some(*repository),
            body,
            signer: key.verifying_key().to_bytes(),
            signature: signature.to_bytes(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Decodes an envelope (version 1 or 2) without checking its
    /// signature; `object` names it in errors.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let envelope: Envelope = from_cbor(bytes, object)?;
        match (envelope.version, envelope.repository) {
            (ENVELOPE_VERSION, Some(_)) | (LEGACY_ENVELOPE_VERSION, None) => Ok(envelope),
            (ENVELOPE_VERSION, None) => Err(StoreError::corrupt(
                object,
                "envelope version 2 names no repository",
            )),
            (LEGACY_ENVELOPE_VERSION, Some(_)) => Err(StoreError::corrupt(
                object,
                "envelope version 1 cannot name a repository",
            )),
            (found, _) => Err(StoreError::corrupt(
                object,
                format!(
                    "format version {found} is not supported (this cairn reads envelope versions 1 and 2)"
                ),
            )),
        }
    }

    pub fn signer(&self) -> PublicKey {
        PublicKey(self.signer)
    }

    /// Checks that the signer is trusted, that a version-2 envelope names
    /// `repository`, and that the signature covers `domain`, the
    /// repository and the body; only then is the body worth reading.
    ///
    /// A version-1 envelope names no repository: it is accepted when its
    /// signer is in `trusted`, which the caller must have taken from the
    /// keys trusted for `repository` alone (so a legacy object can be
    /// replayed only between repositories that trust the same key).
    pub fn open(
        &self,
        domain: &[u8],
        repository: &Id,
        trusted: &[PublicKey],
    ) -> std::result::Result<(), TrustFailure> {
        let signer = self.signer();
        if !trusted.contains(&signer) {
            return Err(TrustFailure::UntrustedSigner(signer));
        }
        let key = VerifyingKey::from_bytes(&self.signer).map_err(|_| TrustFailure::BadSignature)?;
        let signature = Signature::from_bytes(&self.signature);
        let message = match self.repository {
            None => signed_message_v1(domain, &self.body),
            Some(named) => signed_message_v2(domain, &named, &self.body),
        };
        key.verify_strict(&message, &signature)
            .map_err(|_| TrustFailure::BadSignature)?;
        // Checked after the signature, so that the failure names a
        // repository its signer really named.
        match self.repository {
            Some(named) if named != *repository => Err(TrustFailure::OtherRepository(named)),
            _ => Ok(()),
        }
    }
}

fn signed_message_v1(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + body.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(body);
    message
}

fn signed_message_v2(domain: &[u8], repository: &Id, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(V2_PREFIX.len() + domain.len() + 32 + body.len());
    message.extend_from_slice(V2_PREFIX);
    message.extend_from_slice(domain);
    message.extend_from_slice(&repository.0);
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};

    const HERE: Id = Id([7; 32]);
    const THERE: Id = Id([9; 32]);

    /// A version-1 envelope, as a cairn before version 2 wrote it.
    fn seal_v1(body: &[u8], domain: &[u8], key: &SigningKey) -> Envelope {
        Envelope {
            version: LEGACY_ENVELOPE_VERSION,
            repository: None,
            body: body.to_vec(),
            signer: key.verifying_key().to_bytes(),
            signature: key.sign(&signed_message_v1(domain, body)).to_bytes(),
        }
    }

    #[test]
    fn a_sealed_body_opens_only_under_its_domain_and_repository_for_a_trusted_signer() {
        let key = generate_signing_key().unwrap();
        let trusted = [public_key_of(&key)];
        let sealed = Envelope::seal(b"body".to_vec(), b"domain a\0", &HERE, &key);
        let decoded = Envelope::decode(&sealed.encode(), "test").unwrap();
        assert_eq!(decoded, sealed);
        assert_eq!(decoded.version, ENVELOPE_VERSION);
        assert_eq!(decoded.open(b"domain a\0", &HERE, &trusted), Ok(()));
        assert_eq!(
            decoded.open(b"domain a\0", &THERE, &trusted),
            Err(TrustFailure::OtherRepository(HERE))
        );
        assert_eq!(
            decoded.open(b"domain b\0", &HERE, &trusted),
            Err(TrustFailure::BadSignature)
        );
        assert_eq!(
            decoded.open(b"domain a\0", &HERE, &[]),
            Err(TrustFailure::UntrustedSigner(trusted[0]))
        );
        let mut tampered = decoded.clone();
        tampered.body[0] ^= 1;
        assert_eq!(
            tampered.open(b"domain a\0", &HERE, &trusted),
            Err(TrustFailure::BadSignature)
        );
        // Renaming the repository breaks the signature: the name is signed.
        let mut moved = decoded.clone();
        moved.repository = Some(THERE);
        assert_eq!(
            moved.open(b"domain a\0", &THERE, &trusted),
            Err(TrustFailure::BadSignature)
        );
    }

    #[test]
    fn a_legacy_envelope_opens_for_a_trusted_signer_and_cannot_be_upgraded() {
        let key = generate_signing_key().unwrap();
        let trusted = [public_key_of(&key)];
        let legacy = seal_v1(b"body", b"domain a\0", &key);
        let decoded = Envelope::decode(&legacy.encode(), "test").unwrap();
        assert_eq!(decoded, legacy);
        assert_eq!(decoded.open(b"domain a\0", &HERE, &trusted), Ok(()));
        assert_eq!(
            decoded.open(b"domain a\0", &HERE, &[]),
            Err(TrustFailure::UntrustedSigner(trusted[0]))
        );
        // A version-1 signature never passes as a version-2 one.
        let upgraded = Envelope {
            version: ENVELOPE_VERSION,
            repository: Some(HERE),
            ..decoded.clone()
        };
        assert_eq!(
            upgraded.open(b"domain a\0", &HERE, &trusted),
            Err(TrustFailure::BadSignature)
        );
    }

    #[test]
    fn versions_and_repository_fields_must_agree() {
        let key = generate_signing_key().unwrap();
        let mut v2_without = Envelope::seal(b"b".to_vec(), b"d", &HERE, &key);
        v2_without.repository = None;
        assert!(Envelope::decode(&v2_without.encode(), "x").is_err());
        let mut v1_with = seal_v1(b"b", b"d", &key);
        v1_with.repository = Some(HERE);
        assert!(Envelope::decode(&v1_with.encode(), "x").is_err());
        let mut v3 = Envelope::seal(b"b".to_vec(), b"d", &HERE, &key);
        v3.version = 3;
        let error = Envelope::decode(&v3.encode(), "x").unwrap_err();
        assert!(error.to_string().contains("version 3"), "{error}");
    }
}
