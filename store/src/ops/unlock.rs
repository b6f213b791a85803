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
use crate::format::keyslot::{KeySlot, SlotPayload};
use crate::id::Id;
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
