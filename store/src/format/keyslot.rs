//! Key slots: the repository's key material wrapped for one holder, by a
//! passphrase (Argon2id) or for an X25519 recipient (FORMAT.md 17.5).
//!
//! Owns the slot's encoding, the wrapping and unwrapping, and the bounds a
//! reader checks before it runs a key derivation a hostile slot asks for.
//! It never reads storage, never prompts for a passphrase and never decides
//! which slots to try (the caller does).

use crate::error::{Result, StoreError};
use crate::format::codec::{from_cbor, to_cbor};
use crate::format::crypto::EncryptionPublicKey;
use crate::format::crypto::{
    NONCE_LENGTH, RepositoryKeys, cipher_for, open_in_place, seal_in_place,
};
use crate::format::keys::{PublicKey, SigningKey};
use crate::id::Id;
use crate::os::random::random_bytes;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroize;

/// The only slot version.
pub const KEY_SLOT_VERSION: u32 = 1;
/// A slot is a few hundred bytes; anything near this is hostile.
pub const MAX_KEY_SLOT_SIZE: u64 = 64 << 10;
const SLOT_AAD_PREFIX: &[u8] = b"cairn key slot v1\0";
const RECIPIENT_CONTEXT: &str = "cairn 2026-12 key slot recipient v1";
const ENDORSEMENT_DOMAIN: &[u8] = b"cairn key slot endorsement v1\0";
const ID_KEY_COMMITMENT_CONTEXT: &str = "cairn 2026-12 id key commitment v1";

/// Argon2id's cost, recorded in each passphrase slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl KdfParams {
    /// 32 MiB, 6 passes, 2 lanes. An attacker pays memory × passes per
    /// guess: 192 MiB-passes, the same as RFC 9106's 64 MiB × 3 and four
    /// times OWASP's least Argon2id (46 MiB × 1), for the same CPU as
    /// 64 MiB × 3, at half the memory: a command that does little else
    /// peaks at 41 MiB instead of 76 (docs/PERFORMANCE.md, "Rounds 9 and
    /// 10"). The two lanes run on two threads,
    /// halving the unlock's wall time on the 2-core machines cairn is
    /// measured on; an attacker's cost does not depend on lanes.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 32 * 1024,
        passes: 6,
        lanes: 2,
    };
    /// The least a writer may record: 8 MiB, 1 pass.
    pub const MIN_MEMORY_KIB: u32 = 8 * 1024;
    /// The most a reader will run: 4 GiB, 64 passes, 16 lanes; a slot
    /// asking for more is refused before any memory is taken.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_PASSES: u32 = 64;
    pub const MAX_LANES: u32 = 16;

    /// Refuses parameters outside the bounds above (`object` names the slot
    /// or the flag at fault).
    pub fn check(&self, object: &str) -> Result<()> {
        let in_range = (Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=Self::MAX_PASSES).contains(&self.passes)
            && (1..=Self::MAX_LANES).contains(&self.lanes)
            && self.memory_kib >= 8 * self.lanes;
        if in_range {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!(
                "{object}: Argon2id parameters {} KiB, {} passes, {} lanes are outside the \
                 bounds (memory {}..={} KiB, passes 1..={}, lanes 1..={})",
                self.memory_kib,
                self.passes,
                self.lanes,
                Self::MIN_MEMORY_KIB,
                Self::MAX_MEMORY_KIB,
                Self::MAX_PASSES,
                Self::MAX_LANES
            )))
        }
    }
}

/// How a slot's key-encryption key is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wrapping {
    /// Argon2id (version 0x13) of the passphrase with this salt.
    Passphrase {
        kdf: KdfParams,
        #[serde(with = "serde_bytes")]
        salt: [u8; 16],
    },
    /// X25519 between a fresh ephemeral key and the recipient's key.
    Recipient {
        #[serde(with = "serde_bytes")]
        ephemeral: [u8; 32],
        #[serde(with = "serde_bytes")]
        recipient: [u8; 32],
    },
}

/// A stored key slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub version: u32,
    pub wrapping: Wrapping,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; NONCE_LENGTH],
    /// The sealed [`SlotPayload`], tag included.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// What a slot holds once opened. Its secrets are wiped when it drops.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotPayload {
    pub repository: Id,
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub id_key: [u8; 32],
    /// Absent in a write-only slot.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub read_key: Option<[u8; 32]>,
    /// The owner's ed25519 signing key: a holder of this slot trusts
    /// snapshots it signed, and the keyring it signed (17.7).
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub owner: Option<[u8; 32]>,
    /// The public halves of the read keys before read-key rotations,
    /// newest first (FORMAT.md 17.7); absent before the first rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_public_keys: Vec<serde_bytes::ByteBuf>,
    /// Those read keys, in the same order; absent in a write-only slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_read_keys: Vec<serde_bytes::ByteBuf>,
    /// A name for people (`cairn key list`).
    pub label: String,
    /// RFC 3339, when the slot was made.
    pub created: String,
    /// The `owner`'s ed25519 signature over [`SlotPayload::endorsement_message`]:
    /// what a recipient slot's holder checks before it encrypts to
    /// `public_key`, since anyone can wrap a slot for a public identity
    /// (FORMAT.md 17.5, 16.5). Absent in slots written before 2026-12-06
    /// 19:30 UTC and in slots made by a holder without the owner's key.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<[u8; 64]>,
}

impl Drop for SlotPayload {
    fn drop(&mut self) {
        self.id_key.zeroize();
        if let Some(read) = self.read_key.as_mut() {
            read.zeroize();
        }
        for read in &mut self.earlier_read_keys {
            read.as_mut_slice().zeroize();
        }
    }
}

impl std::fmt::Debug for SlotPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotPayload")
            .field("repository", &self.repository)
            .field("write_only", &self.read_key.is_none())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SlotPayload {
    /// The payload carrying `keys` (all of them, or the write-only part).
    pub fn of(keys: &RepositoryKeys, owner: Option<PublicKey>, label: &str, created: &str) -> Self {
        SlotPayload {
            repository: *keys.repository(),
            public_key: keys.public_key().0,
            id_key: keys.id_key_bytes(),
            read_key: keys.read_key_bytes(),
            owner: owner.map(|key| key.0),
            earlier_public_keys: keys
                .earlier_public_keys()
                .iter()
                .map(|key| serde_bytes::ByteBuf::from(key.to_vec()))
                .collect(),
            earlier_read_keys: keys
                .earlier_read_key_bytes()
                .iter()
                .map(|key| serde_bytes::ByteBuf::from(key.to_vec()))
                .collect(),
            label: label.to_string(),
            created: created.to_string(),
            endorsement: None,
        }
    }

    /// The bytes the owner signs: everything a writer takes from the slot
    /// to decide whom it encrypts to and how it names blobs, bound to the
    /// repository (FORMAT.md 17.5). The id key enters as a commitment so
    /// the signed message never holds a secret.
    pub fn endorsement_message(&self) -> Vec<u8> {
        let mut message = ENDORSEMENT_DOMAIN.to_vec();
        message.extend_from_slice(&self.repository.0);
        message.extend_from_slice(&self.public_key);
        message.extend_from_slice(&blake3::derive_key(ID_KEY_COMMITMENT_CONTEXT, &self.id_key));
        // At most a few hundred earlier keys fit the 64 KiB slot limit.
        message.extend_from_slice(&(self.earlier_public_keys.len() as u32).to_le_bytes());
        for key in &self.earlier_public_keys {
            message.extend_from_slice(key);
        }
        message
    }

    /// Names `owner` as the slot's owner and signs the slot's keys with it.
    pub fn endorse(&mut self, owner: &SigningKey) {
        use ed25519_dalek::Signer;
        self.owner = Some(owner.verifying_key().to_bytes());
        self.endorsement = Some(owner.sign(&self.endorsement_message()).to_bytes());
    }

    /// Endorses the slot when `key` is the owner it names; a slot naming
    /// another owner (or none) is left as it is, since only its owner's
    /// word counts for its holder.
    pub fn endorse_if_owner(&mut self, key: Option<&SigningKey>) {
        if let Some(key) = key
            && self.owner == Some(key.verifying_key().to_bytes())
        {
            self.endorse(key);
        }
    }

    /// The owner whose signature vouches for this slot's keys, if the slot
    /// carries one that verifies (strictly) under the owner it names.
    pub fn endorsed_by(&self) -> Option<PublicKey> {
        let (owner, signature) = (self.owner?, self.endorsement?);
        let key = ed25519_dalek::VerifyingKey::from_bytes(&owner).ok()?;
        key.verify_strict(
            &self.endorsement_message(),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .ok()?;
        Some(PublicKey(owner))
    }

    /// The owner's signing key, if the slot names one.
    pub fn owner(&self) -> Option<PublicKey> {
        self.owner.map(PublicKey)
    }

    /// The key material this payload carries.
    pub fn keys(&self) -> Result<RepositoryKeys> {
        let keys = RepositoryKeys::from_parts(
            self.repository,
            EncryptionPublicKey(self.public_key),
            self.id_key,
            self.read_key,
        )?;
        let earlier_public = keys_of(&self.earlier_public_keys, &self.repository)?;
        let mut earlier_read = keys_of(&self.earlier_read_keys, &self.repository)?;
        let keys = keys.with_earlier(&earlier_public, &earlier_read);
        earlier_read.zeroize();
        keys
    }
}

/// 32-byte keys from a slot's list, each checked for its length.
fn keys_of(list: &[serde_bytes::ByteBuf], repository: &Id) -> Result<Vec<[u8; 32]>> {
    list.iter()
        .map(|key| {
            <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
                StoreError::KeyMismatch(format!(
                    "a key slot of repository {repository} lists an earlier key of {} bytes, \
                     not 32",
                    key.len()
                ))
            })
        })
        .collect()
}

impl KeySlot {
    /// Wraps `payload` under `passphrase`.
    pub fn wrap_with_passphrase(
        payload: &SlotPayload,
        passphrase: &[u8],
        kdf: KdfParams,
    ) -> Result<Self> {
        kdf.check("key slot")?;
        let salt = random_bytes::<16>()?;
        let wrapping = Wrapping::Passphrase { kdf, salt };
        let key = passphrase_key(passphrase, &kdf, &salt, "key slot")?;
        Self::seal(payload, wrapping, &key)
    }

    /// Wraps `payload` for the holder of `recipient`'s X25519 secret.
    pub fn wrap_for_recipient(payload: &SlotPayload, recipient: &[u8; 32]) -> Result<Self> {
        let ephemeral = StaticSecret::from(random_bytes::<32>()?);
        let ephemeral_public = X25519Public::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&X25519Public::from(*recipient));
        let key = recipient_key(shared, &ephemeral_public, recipient).ok_or_else(|| {
            StoreError::Invalid(format!(
                "recipient key {} is not a usable X25519 public key",
                hex::encode(recipient)
            ))
        })?;
        let wrapping = Wrapping::Recipient {
            ephemeral: ephemeral_public,
            recipient: *recipient,
        };
        Self::seal(payload, wrapping, &key)
    }

    fn seal(payload: &SlotPayload, wrapping: Wrapping, key: &[u8; 32]) -> Result<Self> {
        let nonce = random_bytes::<NONCE_LENGTH>()?;
        let mut sealed = to_cbor(payload);
        seal_in_place(&cipher_for(key), &nonce, &slot_aad(&wrapping), &mut sealed);
        Ok(KeySlot {
            version: KEY_SLOT_VERSION,
            wrapping,
            nonce,
            sealed,
        })
    }

    pub fn is_passphrase(&self) -> bool {
        matches!(self.wrapping, Wrapping::Passphrase { .. })
    }

    /// The Argon2id parameters a passphrase slot records.
    pub fn kdf(&self) -> Option<KdfParams> {
        match self.wrapping {
            Wrapping::Passphrase { kdf, .. } => Some(kdf),
            Wrapping::Recipient { .. } => None,
        }
    }

    /// The recipient public key a recipient slot is wrapped for.
    pub fn recipient(&self) -> Option<[u8; 32]> {
        match self.wrapping {
            Wrapping::Recipient { recipient, .. } => Some(recipient),
            Wrapping::Passphrase { .. } => None,
        }
    }

    /// Opens a passphrase slot: `Ok(None)` when the passphrase is not this
    /// slot's (or the slot is not a passphrase slot); an error when the slot
    /// opens but holds another repository's keys.
    pub fn unwrap_with_passphrase(
        &self,
        repository: &Id,
        passphrase: &[u8],
        object: &str,
    ) -> Result<Option<SlotPayload>> {
        let Wrapping::Passphrase { kdf, salt } = &self.wrapping else {
            return Ok(None);
        };
        kdf.check(object)?;
        let key = passphrase_key(passphrase, kdf, salt, object)?;
        self.open(&key, repository, object)
    }

    /// Opens a recipient slot with the recipient's X25519 secret:
    /// `Ok(None)` when the slot is not for this identity.
    pub fn unwrap_with_identity(
        &self,
        repository: &Id,
        identity: &[u8; 32],
        object: &str,
    ) -> Result<Option<SlotPayload>> {
        let Wrapping::Recipient {
            ephemeral,
            recipient,
        } = &self.wrapping
        else {
            return Ok(None);
        };
        let secret = StaticSecret::from(*identity);
        if X25519Public::from(&secret).to_bytes() != *recipient {
            return Ok(None);
        }
        let shared = secret.diffie_hellman(&X25519Public::from(*ephemeral));
        let Some(key) = recipient_key(shared, ephemeral, recipient) else {
            return Err(StoreError::Corrupt {
                object: object.to_string(),
                reason: "names an ephemeral key that is not a usable X25519 key".to_string(),
            });
        };
        self.open(&key, repository, object)
    }

    fn open(&self, key: &[u8; 32], repository: &Id, object: &str) -> Result<Option<SlotPayload>> {
        let mut plain = self.sealed.clone();
        if open_in_place(
            &cipher_for(key),
            &self.nonce,
            &slot_aad(&self.wrapping),
            &mut plain,
        )
        .is_err()
        {
            return Ok(None);
        }
        let payload: Result<SlotPayload> = from_cbor(&plain, object);
        plain.zeroize();
        let payload = payload?;
        if payload.repository != *repository {
            return Err(StoreError::KeyMismatch(format!(
                "{object} holds the keys of repository {}, not of this one ({repository}): it \
                 was copied here from there",
                payload.repository
            )));
        }
        Ok(Some(payload))
    }

    pub fn encode(&self) -> Vec<u8> {
        to_cbor(self)
    }

    /// Decodes a slot read from storage, bounded by [`MAX_KEY_SLOT_SIZE`].
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        if bytes.len() as u64 > MAX_KEY_SLOT_SIZE {
            return Err(StoreError::Corrupt {
                object: object.to_string(),
                reason: format!(
                    "is {} bytes, over the {MAX_KEY_SLOT_SIZE}-byte limit",
                    bytes.len()
                ),
            });
        }
        let slot: KeySlot = from_cbor(bytes, object)?;
        crate::format::codec::check_version(slot.version, KEY_SLOT_VERSION, object)?;
        Ok(slot)
    }
}

fn slot_aad(wrapping: &Wrapping) -> Vec<u8> {
    let mut aad = SLOT_AAD_PREFIX.to_vec();
    aad.extend_from_slice(&to_cbor(wrapping));
    aad
}

pub(crate) fn passphrase_key(
    passphrase: &[u8],
    kdf: &KdfParams,
    salt: &[u8; 16],
    object: &str,
) -> Result<[u8; 32]> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(32))
        .map_err(|error| StoreError::Invalid(format!("{object}: Argon2id parameters: {error}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    // In a mapping of its own, zero-filled as the lanes touch it, rather
    // than zeroed serially first (crate::os::argon2_memory); the crate's
    // allocation only where no mapping can be made.
    let hashed = match crate::os::argon2_memory::Argon2Memory::new(argon.params().block_count()) {
        Ok(mut memory) => {
            argon.hash_password_into_with_memory(passphrase, salt, &mut key, memory.blocks())
        }
        Err(_) => argon.hash_password_into(passphrase, salt, &mut key),
    };
    hashed.map_err(|error| StoreError::Invalid(format!("{object}: Argon2id: {error}")))?;
    Ok(key)
}

fn recipient_key(
    shared: x25519_dalek::SharedSecret,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> Option<[u8; 32]> {
    if !shared.was_contributory() {
        return None;
    }
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared.as_bytes());
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(recipient);
    let key = blake3::derive_key(RECIPIENT_CONTEXT, &material);
    material.zeroize();
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn the_default_cost_per_guess_is_rfc_9106s_within_the_bounds() {
        let default = KdfParams::DEFAULT;
        default.check("the default").unwrap();
        // RFC 9106's second recommended option is 64 MiB × 3 passes; an
        // attacker's cost per guess is memory × passes, whatever the lanes.
        let rfc_9106 = 64 * 1024 * 3;
        assert!(u64::from(default.memory_kib) * u64::from(default.passes) >= rfc_9106);
        assert!(
            default.memory_kib <= 32 * 1024,
            "the unlock's peak stays at 32 MiB"
        );
    }

    fn payload() -> (RepositoryKeys, SlotPayload) {
        let keys = RepositoryKeys::generate(Id::of(b"repo")).unwrap();
        let payload = SlotPayload::of(&keys, None, "owner", "2026-12-06T10:00:00Z");
        (keys, payload)
    }

    #[test]
    fn a_passphrase_slot_opens_with_its_passphrase_only() {
        let (keys, payload) = payload();
        let slot = KeySlot::wrap_with_passphrase(&payload, b"correct horse", FAST).unwrap();
        let slot = KeySlot::decode(&slot.encode(), "slot").unwrap();
        assert!(
            slot.unwrap_with_passphrase(keys.repository(), b"wrong", "slot")
                .unwrap()
                .is_none()
        );
        let opened = slot
            .unwrap_with_passphrase(keys.repository(), b"correct horse", "slot")
            .unwrap()
            .unwrap();
        let reopened = opened.keys().unwrap();
        assert_eq!(reopened.public_key(), keys.public_key());
        assert!(reopened.can_read());
    }

    #[test]
    fn a_recipient_slot_opens_with_its_identity_only() {
        let (keys, payload) = payload();
        let identity = random_bytes::<32>().unwrap();
        let public = X25519Public::from(&StaticSecret::from(identity)).to_bytes();
        let write_only = SlotPayload::of(&keys.write_only(), None, "host", "now");
        let slot = KeySlot::wrap_for_recipient(&write_only, &public).unwrap();
        let other = random_bytes::<32>().unwrap();
        assert!(
            slot.unwrap_with_identity(keys.repository(), &other, "slot")
                .unwrap()
                .is_none()
        );
        let opened = slot
            .unwrap_with_identity(keys.repository(), &identity, "slot")
            .unwrap()
            .unwrap();
        assert!(!opened.keys().unwrap().can_read());
        drop(payload);
    }

    #[test]
    fn an_endorsement_vouches_for_the_public_key_the_id_key_and_the_earlier_keys() {
        let (keys, mut payload) = payload();
        let owner = crate::format::keys::generate_signing_key().unwrap();
        assert_eq!(
            payload.endorsed_by(),
            None,
            "an unsigned slot vouches for nothing"
        );
        payload.endorse(&owner);
        let owner_public = crate::format::keys::public_key_of(&owner);
        assert_eq!(payload.endorsed_by(), Some(owner_public));
        // Survives the slot's encoding.
        let slot = KeySlot::wrap_with_passphrase(&payload, b"pw", FAST).unwrap();
        let opened = slot
            .unwrap_with_passphrase(keys.repository(), b"pw", "slot")
            .unwrap()
            .unwrap();
        assert_eq!(opened.endorsed_by(), Some(owner_public));
        // What a planter changes, the signature no longer covers.
        let mut planted = opened.clone();
        planted.public_key = [9; 32];
        assert_eq!(planted.endorsed_by(), None);
        let mut planted = opened.clone();
        planted.id_key = [9; 32];
        assert_eq!(planted.endorsed_by(), None);
        let mut planted = opened.clone();
        planted
            .earlier_public_keys
            .push(serde_bytes::ByteBuf::from(vec![9; 32]));
        assert_eq!(planted.endorsed_by(), None);
        // Naming another owner does not move the signature to it.
        let mut planted = opened;
        planted.owner = Some([7; 32]);
        assert_eq!(planted.endorsed_by(), None);
    }

    #[test]
    fn test_vector_of_format_17_5_endorsement() {
        let payload = SlotPayload {
            repository: Id([0x20; 32]),
            public_key: [0x40; 32],
            id_key: std::array::from_fn(|index| index as u8),
            read_key: None,
            owner: None,
            earlier_public_keys: vec![serde_bytes::ByteBuf::from(vec![0x60; 32])],
            earlier_read_keys: Vec::new(),
            label: String::new(),
            created: String::new(),
            endorsement: None,
        };
        let message = payload.endorsement_message();
        assert_eq!(message.len(), 30 + 32 * 3 + 4 + 32);
        let mut signed = payload;
        signed.endorse(&SigningKey::from_bytes(&[0x80; 32]));
        assert_eq!(
            hex::encode(&message[94..126]),
            hex::encode(blake3::derive_key(
                ID_KEY_COMMITMENT_CONTEXT,
                &std::array::from_fn::<u8, 32, _>(|index| index as u8)
            )),
            "the id key enters as its commitment, after the public key"
        );
        assert_eq!(
            blake3::hash(&message).to_hex().as_str(),
            "2a89e8719c2d42573c74b436f12cd140adb2cdfb988736059ba52b68aa4b1261"
        );
        assert_eq!(
            hex::encode(signed.owner.unwrap()),
            "e5687b6d11ccfb632abbafe844f8f1693d160aa582156ed66eea38ab5e7d1e12"
        );
        assert_eq!(
            hex::encode(signed.endorsement.unwrap()),
            "e83c9297fb6babfc31b1f8fe0fad7dd19adb82afe2afb06da19f54a27761a8bc\
             8d9b69f68ae2adb708a43b30261cd098bcc559b59270837a7039b379b861420d"
        );
        assert_eq!(signed.endorsed_by(), Some(PublicKey(signed.owner.unwrap())));
    }

    #[test]
    fn a_slot_of_another_repository_is_named() {
        let (_, payload) = payload();
        let slot = KeySlot::wrap_with_passphrase(&payload, b"pw", FAST).unwrap();
        let error = slot
            .unwrap_with_passphrase(&Id::of(b"elsewhere"), b"pw", "slot")
            .unwrap_err();
        assert!(error.to_string().contains("not of this one"), "{error}");
    }

    #[test]
    fn hostile_kdf_parameters_are_refused_before_running() {
        let (keys, payload) = payload();
        let mut slot = KeySlot::wrap_with_passphrase(&payload, b"pw", FAST).unwrap();
        slot.wrapping = Wrapping::Passphrase {
            kdf: KdfParams {
                memory_kib: u32::MAX,
                passes: 1,
                lanes: 1,
            },
            salt: [0; 16],
        };
        assert!(
            slot.unwrap_with_passphrase(keys.repository(), b"pw", "slot")
                .is_err()
        );
    }

    #[test]
    fn a_changed_wrapping_does_not_open() {
        let (keys, payload) = payload();
        let mut slot = KeySlot::wrap_with_passphrase(&payload, b"pw", FAST).unwrap();
        if let Wrapping::Passphrase { salt, .. } = &mut slot.wrapping {
            salt[0] ^= 1;
        }
        assert!(
            slot.unwrap_with_passphrase(keys.repository(), b"pw", "slot")
                .unwrap()
                .is_none()
        );
    }
}
