//! Opening an encrypted repository: listing its key slots, trying a
//! passphrase or an X25519 identity against them, and storing a new slot
//! (FORMAT.md 17.5).
//!
//! Owns which slots are tried and how failures are reported: a wrong
//! passphrase says how many slots were tried, a damaged slot object is
//! named. It never prompts or reads a passphrase from anywhere (the CLI's
//! credentials do), never writes a config, and never unlocks a repository
//! with keys whose public key differs from the config's
//! ([`Repository::unlock`] refuses them).

use crate::backend::{Backend, Created, ObjectKind};
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::keyslot::{KeySlot, SlotPayload};
use crate::id::Id;
use crate::keystore::{RememberedSlot, SlotMemory};
use crate::repository::Repository;

/// Every key slot of the repository, with the slots that could not be read
/// or decoded (damaged or planted) and why.
pub struct KeySlots {
    pub slots: Vec<(Id, KeySlot)>,
    pub damaged: Vec<(Id, String)>,
}

/// Every key slot that reads and decodes; a damaged one is left out (see
/// [`read_key_slots`] to learn which). An I/O error is an error.
pub fn list_key_slots(repository: &Repository) -> Result<Vec<(Id, KeySlot)>> {
    Ok(read_key_slots(repository)?.slots)
}

/// Every key slot, and the damaged ones named with their error.
pub fn read_key_slots(repository: &Repository) -> Result<KeySlots> {
    let mut slots = Vec::new();
    let mut damaged = Vec::new();
    let mut ids = repository.list_ids(ObjectKind::KeySlot)?;
    ids.sort();
    for id in ids {
        let object = slot_object(&id);
        let slot = repository
            .read_verified(ObjectKind::KeySlot, &id)
            .and_then(|bytes| KeySlot::decode(&bytes, &object));
        match slot {
            Ok(slot) => slots.push((id, slot)),
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error) => damaged.push((id, error.to_string())),
        }
    }
    Ok(KeySlots { slots, damaged })
}

fn slot_object(id: &Id) -> String {
    format!("key slot {id}")
}

/// Opens the first passphrase slot `passphrase` opens (the caller gives
/// [`SlotPayload::keys`] to [`Repository::unlock`]). A wrong passphrase is
/// [`StoreError::KeySlotLocked`] saying how many slots were tried; when no
/// slot opens and some slot is damaged, the error names it.
pub fn unlock_with_passphrase(repository: &Repository, passphrase: &[u8]) -> Result<SlotPayload> {
    let found = read_key_slots(repository)?;
    let mut tried = 0;
    for (id, slot) in found.slots.iter().filter(|(_, slot)| slot.is_passphrase()) {
        tried += 1;
        let object = slot_object(id);
        if let Some(payload) = slot.unwrap_with_passphrase(repository.id(), passphrase, &object)? {
            return Ok(payload);
        }
    }
    Err(locked(
        &found,
        format!(
            "no key slot of {} opens with this passphrase ({tried} passphrase slots tried)",
            repository.backend().location()
        ),
    ))
}

/// Opens the recipient slot wrapped for `identity` (an X25519 secret).
pub fn unlock_with_identity(repository: &Repository, identity: &[u8; 32]) -> Result<SlotPayload> {
    let found = read_key_slots(repository)?;
    for (id, slot) in &found.slots {
        let object = slot_object(id);
        if let Some(payload) = slot.unwrap_with_identity(repository.id(), identity, &object)? {
            return Ok(payload);
        }
    }
    let recipients = found
        .slots
        .iter()
        .filter(|(_, slot)| !slot.is_passphrase())
        .count();
    Err(locked(
        &found,
        format!(
            "no key slot of {} is wrapped for this identity ({recipients} recipient slots)",
            repository.backend().location()
        ),
    ))
}

/// A recipient slot this host's identity opened, and the other slots
/// wrapped for it that were passed over, each with why.
pub struct IdentityOpening {
    pub slot: Id,
    pub payload: SlotPayload,
    pub passed_over: Vec<(Id, String)>,
}

/// Opens the recipient slot wrapped for one of `identities` (public, secret
/// pairs) whose keys this host may encrypt to (FORMAT.md 17.5, "Endorsed
/// slots"): one endorsed by a key of `roots` (the keys this host trusts for
/// the repository on its own: `--trusted-key` pins or its local list, never
/// the slot's word) or by the owner `memory` remembers; before any owner is
/// remembered, and when `roots` are not pins, the one owner that endorses
/// the slots wrapped for it (remembered from then on); slots written before
/// endorsements only while no endorsed slot was ever opened here. Of
/// several, the one with the longest rotation chain. A slot naming a public
/// key that is not the remembered one or rotated from it is refused (a
/// planted or restored old slot). `Ok(None)`: no slot is wrapped for these
/// identities.
pub fn open_with_identities(
    repository: &Repository,
    identities: &[([u8; 32], [u8; 32])],
    roots: &[PublicKey],
    roots_are_pins: bool,
    memory: &SlotMemory,
) -> Result<Option<IdentityOpening>> {
    if identities.is_empty() {
        return Ok(None);
    }
    let mut opened = Vec::new();
    for (id, slot) in read_key_slots(repository)?.slots {
        let Some(recipient) = slot.recipient() else {
            continue;
        };
        for (public, secret) in identities {
            if *public != recipient {
                continue;
            }
            if let Some(payload) =
                slot.unwrap_with_identity(repository.id(), secret, &slot_object(&id))?
            {
                opened.push((id, payload));
            }
        }
    }
    if opened.is_empty() {
        return Ok(None);
    }
    let remembered = memory.read()?;
    let mut owners = roots.to_vec();
    owners.extend(remembered.map(|remembered| remembered.owner));
    let is_trusted = |payload: &SlotPayload| {
        payload
            .endorsed_by()
            .is_some_and(|owner| owners.contains(&owner))
    };
    let endorsed_by_anyone: Vec<PublicKey> = opened
        .iter()
        .filter_map(|(_, payload)| payload.endorsed_by())
        .collect();
    let candidates: Vec<&(Id, SlotPayload)> =
        if opened.iter().any(|(_, payload)| is_trusted(payload)) {
            opened
                .iter()
                .filter(|(_, payload)| is_trusted(payload))
                .collect()
        } else if remembered.is_none() && endorsed_by_anyone.is_empty() {
            // Slots from before endorsements: taken as before, the gap of
            // FORMAT.md 16.5 open for them until the owner adds this host again.
            opened.iter().collect()
        } else if remembered.is_none() && !roots_are_pins {
            let first = endorsed_by_anyone[0];
            if let Some(other) = endorsed_by_anyone.iter().find(|owner| **owner != first) {
                return Err(StoreError::KeyMismatch(format!(
                    "the key slots of {} wrapped for this host are endorsed by different owners \
                 ({} and {}), and this host trusts neither: trust the owner's key with `cairn \
                 --repo {} trust KEY` (or give it with --trusted-key); nothing was written",
                    repository.backend().location(),
                    first.to_hex(),
                    other.to_hex(),
                    repository.backend().location(),
                )));
            }
            opened
                .iter()
                .filter(|(_, payload)| payload.endorsed_by() == Some(first))
                .collect()
        } else {
            let (id, payload) = &opened[0];
            return Err(StoreError::Corrupt {
                object: slot_object(id),
                reason: format!(
                    "is wrapped for this host and names encryption public key {}, but is not \
                 endorsed by an owner this host trusts for the repository ({}): a writer of the \
                 storage may have planted it to read what this host writes. Nothing was \
                 written. If the owner added this host again, trust the owner's key with \
                 `cairn --repo {} trust KEY`{}",
                    hex::encode(payload.public_key),
                    trusted_names(&owners),
                    repository.backend().location(),
                    remembered.map_or(String::new(), |_| format!(
                        ", or delete {} to accept a new owner",
                        memory.path().display()
                    )),
                ),
            });
        };
    let Some((chosen_id, chosen)) = newest(&candidates) else {
        return Ok(None);
    };
    // Chains only grow: a slot recording fewer rotations than one this
    // host took before was put back from before a rotation. (Two killed
    // rotations can leave sibling keys of one length: either is the
    // owner's.)
    let rotations = u32::try_from(chosen.earlier_public_keys.len()).unwrap_or(u32::MAX);
    if let Some(remembered) = &remembered
        && rotations < remembered.rotations
    {
        return Err(StoreError::Corrupt {
            object: slot_object(chosen_id),
            reason: format!(
                "names encryption public key {} after {rotations} read-key rotations, where \
                 this host last took {} after {} (remembered in {}): a slot from before a \
                 rotation was put back. Nothing was written; if the owner did this on \
                 purpose, delete that file",
                hex::encode(chosen.public_key),
                hex::encode(remembered.public_key),
                remembered.rotations,
                memory.path().display()
            ),
        });
    }
    if let Some(owner) = chosen.endorsed_by() {
        let now = RememberedSlot {
            owner,
            public_key: chosen.public_key,
            rotations,
        };
        if remembered != Some(now) {
            memory.write(&now)?;
        }
    }
    let passed_over = opened
        .iter()
        .filter(|(id, payload)| {
            id != chosen_id && !is_trusted(payload) && payload.public_key != chosen.public_key
        })
        .map(|(id, payload)| {
            (
                *id,
                format!(
                    "{} names encryption public key {} and is not endorsed by the owner this \
                     host trusts: passed over (planted?)",
                    slot_object(id),
                    hex::encode(payload.public_key)
                ),
            )
        })
        .collect();
    Ok(Some(IdentityOpening {
        slot: *chosen_id,
        payload: chosen.clone(),
        passed_over,
    }))
}

/// Of several opened slots, the one furthest along its rotation chain (a
/// rotation killed part-way leaves two); of equals, the first (lowest id).
fn newest<'a>(slots: &[&'a (Id, SlotPayload)]) -> Option<(&'a Id, &'a SlotPayload)> {
    let mut best: Option<&(Id, SlotPayload)> = None;
    for slot in slots {
        if best
            .is_none_or(|best| slot.1.earlier_public_keys.len() > best.1.earlier_public_keys.len())
        {
            best = Some(slot);
        }
    }
    best.map(|(id, payload)| (id, payload))
}

fn trusted_names(owners: &[PublicKey]) -> String {
    if owners.is_empty() {
        return "it trusts none".to_string();
    }
    let names: Vec<String> = owners.iter().map(PublicKey::to_hex).collect();
    format!("it trusts {}", names.join(", "))
}

fn locked(found: &KeySlots, message: String) -> StoreError {
    if found.damaged.is_empty() {
        return StoreError::KeySlotLocked(message);
    }
    let damaged: Vec<String> = found.damaged.iter().map(|(_, why)| why.clone()).collect();
    StoreError::KeySlotLocked(format!("{message}; damaged: {}", damaged.join("; ")))
}

/// Stores a key slot in the repository under the hash of its bytes.
pub fn write_key_slot(repository: &Repository, slot: &KeySlot) -> Result<Id> {
    repository.write_object(ObjectKind::KeySlot, &slot.encode())
}

/// Stores a key slot straight in a backend: `init` writes the first slot
/// before the config exists, so before there is a [`Repository`].
pub fn store_key_slot(backend: &dyn Backend, slot: &KeySlot) -> Result<Id> {
    let bytes = slot.encode();
    let id = Id::of(&bytes);
    match backend.create(ObjectKind::KeySlot, &id.to_hex(), &bytes)? {
        Created::New | Created::AlreadyExisted => Ok(id),
    }
}
