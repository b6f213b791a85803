//! The keyring (FORMAT.md 17.7): the owner's signed, sequence-numbered list
//! of the signing keys that write snapshots into an encrypted repository,
//! each valid or revoked, a revoked one with the snapshots it signed that
//! stay trusted.
//!
//! Owns the keyring's encoding, its signing (an envelope of its own domain,
//! so no other signed object can pass as a keyring), its encryption to the
//! read key (`SealedKind::Keyring`) and the rules of a chain: which keyring
//! may follow which, signed by whom. It never reads storage, never decides
//! which keys a reader trusts to start a chain (the caller gives them) and
//! never remembers what it has seen (ops/keys.rs does).

use crate::error::{Result, StoreError};
use crate::format::codec::{check_version, from_cbor, to_cbor};
use crate::format::crypto::{RepositoryKeys, SealedKind};
use crate::format::keys::{PublicKey, SigningKey};
use crate::format::seal::Envelope;
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const KEYRING_VERSION: u32 = 1;
/// The keyring's signing domain: no manifest, record or mark signature
/// can be replayed as a keyring, nor the other way.
pub const KEYRING_DOMAIN: &[u8] = b"cairn keyring v1\0";
/// A keyring lists a few keys; this many is hostile.
pub const MAX_KEYRING_ENTRIES: usize = 4096;
/// A revoked key keeps at most this many snapshots listed.
pub const MAX_KEPT_SNAPSHOTS: usize = 1 << 20;

/// What a listed key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Signs snapshots, records and index files.
    Writer,
    /// As a writer, and signs the next keyring.
    Owner,
}

/// A key's standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Status {
    Valid,
    /// Revoked at `time` (the owner's clock, for people): from then on only
    /// the snapshots listed in `kept` are trusted from this key, whatever
    /// time a later one claims.
    Revoked {
        time: String,
        kept: Vec<Id>,
    },
}

/// One key of the keyring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
    pub role: Role,
    /// A name for people (the host's, usually).
    pub label: String,
    /// RFC 3339: when the key was added.
    pub added: String,
    pub status: Status,
}

impl Entry {
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key)
    }

    pub fn is_valid(&self) -> bool {
        self.status == Status::Valid
    }
}

/// A key slot as the owner recorded it when adding it: what `key list`
/// shows and what tells a full slot from a write-only one (the slot's own
/// bytes say neither to a bucket reader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    pub id: Id,
    /// `passphrase` or `recipient`.
    pub kind: String,
    pub label: String,
    /// Whether the slot holds the read key.
    pub full: bool,
    /// RFC 3339.
    pub created: String,
}

/// A keyring object's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    pub version: u32,
    /// 1 for the first keyring, one more than the previous one after.
    pub sequence: u64,
    /// The id of the keyring this one follows (none for sequence 1).
    pub previous: Option<Id>,
    /// RFC 3339: when it was written.
    pub time: String,
    pub entries: Vec<Entry>,
    /// The key slots added through the owner, as recorded then.
    #[serde(default)]
    pub slots: Vec<SlotRecord>,
}

/// A keyring read from storage, signature and encryption checked.
#[derive(Clone, Debug)]
pub struct OpenedKeyring {
    pub id: Id,
    pub signer: PublicKey,
    pub keyring: Keyring,
}

impl Keyring {
    /// The first keyring: just `owner`, valid.
    pub fn first(owner: PublicKey, label: &str, time: &str) -> Self {
        Keyring {
            version: KEYRING_VERSION,
            sequence: 1,
            previous: None,
            time: time.to_string(),
            entries: vec![Entry {
                key: owner.0,
                role: Role::Owner,
                label: label.to_string(),
                added: time.to_string(),
                status: Status::Valid,
            }],
            slots: Vec::new(),
        }
    }

    /// The keyring that follows `previous` (whose id is `previous_id`),
    /// with the same entries, for the caller to change.
    pub fn next(previous: &Keyring, previous_id: Id, time: &str) -> Self {
        Keyring {
            version: KEYRING_VERSION,
            sequence: previous.sequence + 1,
            previous: Some(previous_id),
            time: time.to_string(),
            entries: previous.entries.clone(),
            slots: previous.slots.clone(),
        }
    }

    pub fn entry(&self, key: &PublicKey) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key.0)
    }

    pub fn entry_mut(&mut self, key: &PublicKey) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|entry| entry.key == key.0)
    }

    /// Whether `key` may sign the keyring that follows this one.
    pub fn may_sign_next(&self, key: &PublicKey) -> bool {
        self.entry(key)
            .is_some_and(|entry| entry.role == Role::Owner && entry.is_valid())
    }

    /// Signs the keyring with `owner` for `keys`' repository and encrypts it
    /// to the read key: the bytes to store.
    pub fn seal(&self, keys: &RepositoryKeys, owner: &SigningKey) -> Result<Vec<u8>> {
        self.validate("new keyring")?;
        let envelope = Envelope::seal(to_cbor(self), KEYRING_DOMAIN, keys.repository(), owner);
        keys.encrypt_object(SealedKind::Keyring, &envelope.encode())
    }

    /// Decrypts and decodes a stored keyring and checks its signature for
    /// this repository; whether its signer may sign it is the chain's
    /// question ([`chain_allows`]).
    pub fn open(bytes: &[u8], id: Id, keys: &RepositoryKeys) -> Result<OpenedKeyring> {
        let object = format!("keyring {id}");
        let plain = keys.decrypt_object(SealedKind::Keyring, bytes, &object)?;
        let envelope = Envelope::decode(&plain, &object)?;
        let signer = envelope.signer();
        envelope
            .open(KEYRING_DOMAIN, keys.repository(), &[signer])
            .map_err(|failure| StoreError::corrupt(&object, failure.to_string()))?;
        if envelope.repository.is_none() {
            return Err(StoreError::corrupt(
                &object,
                "is signed without naming its repository",
            ));
        }
        let keyring: Keyring = from_cbor(&envelope.body, &object)?;
        keyring.validate(&object)?;
        Ok(OpenedKeyring {
            id,
            signer,
            keyring,
        })
    }

    /// The shape every keyring keeps.
    pub fn validate(&self, object: &str) -> Result<()> {
        check_version(self.version, KEYRING_VERSION, object)?;
        let bad = |reason: &str| Err(StoreError::corrupt(object, reason.to_string()));
        if self.sequence == 0 || (self.sequence == 1) != self.previous.is_none() {
            return bad("sequence and previous keyring disagree (only sequence 1 has none)");
        }
        if self.entries.len() > MAX_KEYRING_ENTRIES || self.slots.len() > MAX_KEYRING_ENTRIES {
            return bad("lists more keys than any keyring may");
        }
        let mut seen = HashSet::new();
        for entry in &self.entries {
            if !seen.insert(entry.key) {
                return bad("lists a key twice");
            }
            if PublicKey::from_hex(&hex::encode(entry.key)).is_none() {
                return bad("lists a key that is not an ed25519 public key");
            }
            if let Status::Revoked { kept, .. } = &entry.status
                && kept.len() > MAX_KEPT_SNAPSHOTS
            {
                return bad("keeps more snapshots of a revoked key than any keyring may");
            }
        }
        if !self
            .entries
            .iter()
            .any(|entry| entry.role == Role::Owner && entry.is_valid())
        {
            return bad("has no valid owner key (no one could sign the next one)");
        }
        Ok(())
    }
}

/// Whether `next` may follow `previous` in a chain: it names it, its
/// sequence is the next one, and its signer was a valid owner in
/// `previous`.
pub fn chain_allows(previous: &OpenedKeyring, next: &OpenedKeyring) -> bool {
    next.keyring.previous == Some(previous.id)
        && next.keyring.sequence == previous.keyring.sequence + 1
        && previous.keyring.may_sign_next(&next.signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::{generate_signing_key, public_key_of};

    fn keys() -> RepositoryKeys {
        RepositoryKeys::generate(Id::of(b"keyring repo")).unwrap()
    }

    #[test]
    fn a_keyring_round_trips_and_binds_signer_and_repository() {
        let keys = keys();
        let owner = generate_signing_key().unwrap();
        let ring = Keyring::first(public_key_of(&owner), "owner", "2026-12-06T10:00:00Z");
        let bytes = ring.seal(&keys, &owner).unwrap();
        let id = Id::of(&bytes);
        let opened = Keyring::open(&bytes, id, &keys).unwrap();
        assert_eq!(opened.keyring, ring);
        assert_eq!(opened.signer, public_key_of(&owner));
        // Another repository's keys do not open it.
        let other = RepositoryKeys::generate(Id::of(b"other")).unwrap();
        assert!(Keyring::open(&bytes, id, &other).is_err());
        // Nor does a write-only host.
        let error = Keyring::open(&bytes, id, &keys.write_only()).unwrap_err();
        assert!(
            matches!(error, StoreError::ReadKeyMissing { .. }),
            "{error}"
        );
        // A changed byte is named.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let error = Keyring::open(&damaged, id, &keys).unwrap_err();
        assert!(error.to_string().contains(&id.to_hex()), "{error}");
    }

    #[test]
    fn only_a_valid_owner_of_the_previous_keyring_signs_the_next() {
        let keys = keys();
        let owner = generate_signing_key().unwrap();
        let writer = generate_signing_key().unwrap();
        let time = "2026-12-06T10:00:00Z";
        let first = Keyring::first(public_key_of(&owner), "owner", time);
        let first_bytes = first.seal(&keys, &owner).unwrap();
        let first = Keyring::open(&first_bytes, Id::of(&first_bytes), &keys).unwrap();
        let mut second = Keyring::next(&first.keyring, first.id, time);
        second.entries.push(Entry {
            key: public_key_of(&writer).0,
            role: Role::Writer,
            label: "host".into(),
            added: time.into(),
            status: Status::Valid,
        });
        let by_owner = second.seal(&keys, &owner).unwrap();
        let by_owner = Keyring::open(&by_owner, Id::of(&by_owner), &keys).unwrap();
        assert!(chain_allows(&first, &by_owner));
        let by_writer = second.seal(&keys, &writer).unwrap();
        let by_writer = Keyring::open(&by_writer, Id::of(&by_writer), &keys).unwrap();
        assert!(!chain_allows(&first, &by_writer), "a writer is no owner");
        let mut skipping = Keyring::next(&by_owner.keyring, by_owner.id, time);
        skipping.sequence += 1;
        let skipping = skipping.seal(&keys, &owner).unwrap();
        let skipping = Keyring::open(&skipping, Id::of(&skipping), &keys).unwrap();
        assert!(
            !chain_allows(&by_owner, &skipping),
            "sequence must step by one"
        );
    }

    #[test]
    fn malformed_keyrings_are_refused() {
        let owner = public_key_of(&generate_signing_key().unwrap());
        let mut twice = Keyring::first(owner, "a", "t");
        twice.entries.push(twice.entries[0].clone());
        assert!(twice.validate("k").is_err());
        let mut orphan = Keyring::first(owner, "a", "t");
        orphan.sequence = 2;
        assert!(orphan.validate("k").is_err());
        let mut ownerless = Keyring::first(owner, "a", "t");
        ownerless.entries[0].status = Status::Revoked {
            time: "t".into(),
            kept: vec![],
        };
        assert!(ownerless.validate("k").is_err());
    }
}
