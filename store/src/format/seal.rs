//! Sealing: the one place where an object's bytes are signed and opened.
//!
//! A sealed object is a CBOR map `{version, body, signer, signature}`. The
//! body is kept as the exact bytes that were signed, so re-encoding can never
//! break a signature, and the signature covers a domain string followed by
//! those bytes: each kind of signed object (manifest, forget record,
//! deletion mark) has its own domain, so no signature can be replayed as
//! another kind. This module checks signatures against a set of trusted
//! keys; it never decides which keys are trusted and never decodes bodies.

use crate::error::Result;
use crate::format::codec::{check_version, from_cbor, to_cbor};
use crate::format::keys::PublicKey;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The envelope's own format version.
const ENVELOPE_VERSION: u32 = 1;

/// A signed body, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
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
}

impl std::fmt::Display for TrustFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustFailure::UntrustedSigner(key) => {
                write!(f, "signed by untrusted key {}", key.to_hex())
            }
            TrustFailure::BadSignature => f.write_str("signature does not match its contents"),
        }
    }
}

impl Envelope {
    /// Signs encoded body bytes under `domain`.
    pub fn seal(body: Vec<u8>, domain: &[u8], key: &SigningKey) -> Self {
        let signature = key.sign(&signed_message(domain, &body));
        Envelope {
            version: ENVELOPE_VERSION,
            body,
            signer: key.verifying_key().to_bytes(),
            signature: signature.to_bytes(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Decodes an envelope without checking its signature; `object` names
    /// it in errors.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let envelope: Envelope = from_cbor(bytes, object)?;
        check_version(envelope.version, ENVELOPE_VERSION, object)?;
        Ok(envelope)
    }

    pub fn signer(&self) -> PublicKey {
        PublicKey(self.signer)
    }

    /// Checks that the signer is trusted and that the signature covers
    /// `domain` and the body; only then is the body worth reading.
    pub fn open(
        &self,
        domain: &[u8],
        trusted: &[PublicKey],
    ) -> std::result::Result<(), TrustFailure> {
        let signer = self.signer();
        if !trusted.contains(&signer) {
            return Err(TrustFailure::UntrustedSigner(signer));
        }
        let key = VerifyingKey::from_bytes(&self.signer).map_err(|_| TrustFailure::BadSignature)?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&signed_message(domain, &self.body), &signature)
            .map_err(|_| TrustFailure::BadSignature)
    }
}

fn signed_message(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + body.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};

    #[test]
    fn a_sealed_body_opens_only_under_its_domain_for_a_trusted_signer() {
        let key = generate_signing_key().unwrap();
        let trusted = [public_key_of(&key)];
        let sealed = Envelope::seal(b"body".to_vec(), b"domain a\0", &key);
        let decoded = Envelope::decode(&sealed.encode(), "test").unwrap();
        assert_eq!(decoded, sealed);
        assert_eq!(decoded.open(b"domain a\0", &trusted), Ok(()));
        assert_eq!(
            decoded.open(b"domain b\0", &trusted),
            Err(TrustFailure::BadSignature)
        );
        assert_eq!(
            decoded.open(b"domain a\0", &[]),
            Err(TrustFailure::UntrustedSigner(trusted[0]))
        );
        let mut tampered = decoded.clone();
        tampered.body[0] ^= 1;
        assert_eq!(
            tampered.open(b"domain a\0", &trusted),
            Err(TrustFailure::BadSignature)
        );
    }
}
