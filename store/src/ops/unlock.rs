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
//!
//! A passphrase costs its Argon2id derivation (tens of milliseconds on
//! both cores, FORMAT.md 17.5) before anything can be opened.
//! [`prefetch_until`] is what a caller runs beside it: it only tells the
//! storage which objects come next, so that their cold reads happen while
//! the key is derived. It must never read an object into memory, decrypt,
//! check or act on one: everything is read, checked against its name and
//! opened afterwards exactly as without it.

use crate::backend::{Backend, Created, ObjectKind};
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::keyslot::{KeySlot, SlotPayload};
use crate::id::Id;
use crate::keystore::{RememberedSlot, SlotMemory};
use crate::repository::Repository;
use std::sync::atomic::{AtomicBool, Ordering};

/// The small kinds a command may read first once the repository is open,
/// in the order [`prefetch_until`] hints them: the published keys and the
/// keyring (whom to trust), the manifests (which snapshot), and what a
/// command learns about snapshots from records.
const READ_FIRST: [ObjectKind; 5] = [
    ObjectKind::Key,
    ObjectKind::Keyring,
    ObjectKind::Snapshot,
    ObjectKind::Forget,
    ObjectKind::Annotation,
];

/// The most [`prefetch_until`] hints, in bytes: what a disk reads in about
/// the time a default derivation takes, so that reads nobody makes (index
/// files a warm local cache stands in for) cannot hold up the command's
/// own for long.
pub const PREFETCH_BUDGET: u64 = 64 << 20;

/// Asks for what a command reads first to be fetched in the background,
/// until `stop` is set (checked before each object or file) or
/// [`PREFETCH_BUDGET`] is spent: the objects of [`READ_FIRST`] through the
/// backend ([`Backend::prefetch`]), then the files of `local_cache` (the
/// caller's cache of this repository: its index, which commands read
/// instead of the index files), then the index files (read when that
/// cache is cold or by `verify`). Only hints: nothing is read into memory,
/// decrypted, checked or trusted here. Listing failures are left for the
/// command's own listing to report. Where the backend does not prefetch
/// (object storage today) nothing is listed. Returns how many objects and
/// files it hinted.
pub fn prefetch_until(
    repository: &Repository,
    local_cache: Option<&std::path::Path>,
    stop: &AtomicBool,
) -> usize {
    let backend = repository.backend();
    let mut budget = PREFETCH_BUDGET;
    let mut hinted = 0;
    let hint_kind = |kind: ObjectKind, budget: &mut u64| {
        let Ok(objects) = backend.list(kind) else {
            return 0;
        };
        let mut hinted = 0;
        for object in objects {
            if stop.load(Ordering::Acquire) || object.size > *budget {
                break;
            }
            *budget -= object.size;
            backend.prefetch(kind, &object.name);
            hinted += 1;
        }
        hinted
    };
    if backend.prefetches() {
        for kind in READ_FIRST {
            hinted += hint_kind(kind, &mut budget);
        }
    }
    if let Some(directory) = local_cache {
        hinted += crate::os::will_read::hint_directory(directory, &mut budget, stop);
    }
    if backend.prefetches() {
        hinted += hint_kind(ObjectKind::Index, &mut budget);
    }
    hinted
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use std::sync::Arc;

    fn plaintext_repository(backend: Arc<dyn Backend>) -> Repository {
        crate::repository::plaintext_for_tests(backend).0
    }

    #[test]
    fn prefetching_hints_the_objects_read_first_changes_nothing_and_stops_when_told() {
        let directory = tempfile::tempdir().unwrap();
        let repository = plaintext_repository(Arc::new(LocalBackend::new(directory.path())));
        let snapshot = repository
            .write_object(ObjectKind::Snapshot, b"a manifest")
            .unwrap();
        let index = repository
            .write_object(ObjectKind::Index, b"an index file")
            .unwrap();
        let pack = repository
            .write_object(ObjectKind::Pack, b"a pack, never hinted")
            .unwrap();
        let before = tree_of(directory.path());
        // The public key init published, the manifest and the index file.
        assert_eq!(
            prefetch_until(&repository, None, &AtomicBool::new(false)),
            3
        );
        assert_eq!(prefetch_until(&repository, None, &AtomicBool::new(true)), 0);
        // A local cache's files too, and those over the budget are not.
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir(cache.path().join("index")).unwrap();
        std::fs::write(cache.path().join("index/runs"), b"runs").unwrap();
        std::fs::write(cache.path().join("seen.json"), b"{}").unwrap();
        let huge = std::fs::File::create(cache.path().join("huge")).unwrap();
        huge.set_len(PREFETCH_BUDGET + 1).unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(prefetch_until(&repository, Some(cache.path()), &stop), 5);
        assert_eq!(tree_of(directory.path()), before);
        for (kind, id, bytes) in [
            (ObjectKind::Snapshot, snapshot, &b"a manifest"[..]),
            (ObjectKind::Index, index, &b"an index file"[..]),
        ] {
            assert_eq!(repository.read_verified(kind, &id).unwrap(), bytes);
        }
        let pack_bytes = repository
            .backend()
            .read_range(ObjectKind::Pack, &pack.to_hex(), 0, 20)
            .unwrap();
        assert_eq!(pack_bytes, b"a pack, never hinted");
        // A name that is not an object's is left for the read to refuse.
        repository
            .backend()
            .prefetch(ObjectKind::Index, "../config");
        repository
            .backend()
            .prefetch(ObjectKind::Index, &"ab".repeat(32));
        assert_eq!(tree_of(directory.path()), before);
    }

    #[test]
    fn a_backend_that_does_not_prefetch_is_not_even_listed_for_it() {
        let repository = plaintext_repository(Arc::new(crate::backend::MemoryBackend::new()));
        repository
            .write_object(ObjectKind::Snapshot, b"a manifest")
            .unwrap();
        assert!(!repository.backend().prefetches());
        assert_eq!(
            prefetch_until(&repository, None, &AtomicBool::new(false)),
            0
        );
    }

    /// Every path under `root` with its bytes, sorted.
    fn tree_of(root: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut found = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(directory) = pending.pop() {
            for entry in std::fs::read_dir(&directory).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path.clone());
                    found.push((path, Vec::new()));
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    found.push((path, bytes));
                }
            }
        }
        found.sort();
        found
    }
}
