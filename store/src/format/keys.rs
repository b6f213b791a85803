//! Signing keys as the repository holds them: the ed25519 public key and
//! the public-key object that publishes it. No I/O: secret key files and
//! the local list of trusted keys are `crate::keystore`. A key found in a
//! repository is never trusted just for being there; signing and verifying
//! is `seal`'s.

use crate::error::{Result, StoreError};
use crate::format::codec::{from_json, to_json};
pub use ed25519_dalek::SigningKey;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// An ed25519 public key, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits into a key that is a valid curve point.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        VerifyingKey::from_bytes(&bytes).ok()?;
        Some(PublicKey(bytes))
    }
}

/// The repository object that publishes a public key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyObject {
    pub format: String,
    pub algorithm: String,
    pub public_key: String,
}

impl PublicKeyObject {
    pub fn new(key: PublicKey) -> Self {
        PublicKeyObject {
            format: "cairn-public-key-v1".into(),
            algorithm: "ed25519".into(),
            public_key: key.to_hex(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    pub fn decode(bytes: &[u8], object: &str) -> Result<PublicKey> {
        let decoded: PublicKeyObject = from_json(bytes, object)?;
        if decoded.format != "cairn-public-key-v1" || decoded.algorithm != "ed25519" {
            return Err(StoreError::corrupt(
                object,
                "not a cairn ed25519 public key",
            ));
        }
        PublicKey::from_hex(&decoded.public_key)
            .ok_or_else(|| StoreError::corrupt(object, "public key is not a valid ed25519 key"))
    }
}

/// A fresh signing key from the operating system's random source.
pub fn generate_signing_key() -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&crate::os::random::random_bytes()?))
}

pub fn public_key_of(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_parse_only_from_64_hex_digits_of_a_curve_point() {
        let key = public_key_of(&generate_signing_key().unwrap());
        assert_eq!(PublicKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(PublicKey::from_hex(&key.to_hex()[..63]), None);
        assert_eq!(PublicKey::from_hex("zz"), None);
        let object = PublicKeyObject::new(key).encode();
        assert_eq!(PublicKeyObject::decode(&object, "key").unwrap(), key);
    }
}
