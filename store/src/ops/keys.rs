//! Key management rules (FORMAT.md 17.5, 17.7): the keyring chain a reader
//! believes (and the memory of the newest keyring this machine has seen, so
//! a deleted keyring is noticed), the trust a keyring adds or takes away,
//! revocation with the snapshots a revoked key keeps, signing-key rotation,
//! the paper export of the key material, and the rule that the last full
//! key slot is never removed.
//!
//! It never prompts, prints or reads a passphrase (the CLI does), never
//! trusts a keyring whose chain does not start at a key the caller trusts,
//! and never deletes a key slot it cannot prove is not the last full one.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::crypto::{EncryptionPublicKey, RepositoryKeys};
use crate::format::keyring::{
    Entry, Keyring, OpenedKeyring, Role, SlotRecord, Status, chain_allows,
};
use crate::format::keys::{PublicKey, PublicKeyObject, SigningKey, public_key_of};
use crate::format::keyslot::{KeySlot, SlotPayload};
use crate::id::Id;
use crate::repository::Repository;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

/// A repository holds a handful of keyrings per key change; more than
/// this many is hostile, and reading them is refused.
pub const MAX_KEYRINGS: usize = 10_000;

/// The keyring a reader believes, and what it passed over.
#[derive(Debug, Default)]
pub struct KeyringView {
    /// The newest keyring of a valid chain from a trusted key.
    pub current: Option<OpenedKeyring>,
    /// Keyring objects that could not be read or opened, named with why.
    pub damaged: Vec<(Id, String)>,
    /// Keyrings that open but belong to no valid chain (signed by a key
    /// that was not an owner of the keyring they follow, or following
    /// none a trusted key started).
    pub unchained: Vec<Id>,
}

/// Reads every keyring and takes the newest of the chains that start at a
/// keyring of sequence 1 signed by one of `roots`, each next one signed by
/// a valid owner of the one it names. Two keyrings of one sequence (two
/// owners wrote at once) are taken in the order of their ids, the lower
/// first, so every reader takes the same one.
pub fn read_keyring(
    repository: &Repository,
    keys: &RepositoryKeys,
    roots: &[PublicKey],
) -> Result<KeyringView> {
    let ids = repository.list_ids(ObjectKind::Keyring)?;
    if ids.len() > MAX_KEYRINGS {
        return Err(StoreError::corrupt(
            "keyring",
            format!(
                "the repository holds {} keyring objects, more than the {MAX_KEYRINGS} any \
                 repository needs: planted",
                ids.len()
            ),
        ));
    }
    let mut view = KeyringView::default();
    let mut opened = Vec::new();
    for id in ids {
        let read = repository
            .read_verified(ObjectKind::Keyring, &id)
            .and_then(|bytes| Keyring::open(&bytes, id, keys));
        match read {
            Ok(keyring) => opened.push(keyring),
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error @ StoreError::ReadKeyMissing { .. }) => return Err(error),
            Err(error) => view.damaged.push((id, error.to_string())),
        }
    }
    opened.sort_by_key(|keyring| (keyring.keyring.sequence, keyring.id));
    let mut valid: HashMap<Id, OpenedKeyring> = HashMap::new();
    for keyring in opened {
        let chained = match keyring.keyring.previous {
            None => roots.contains(&keyring.signer),
            Some(previous) => valid
                .get(&previous)
                .is_some_and(|previous| chain_allows(previous, &keyring)),
        };
        if chained {
            let newer = view
                .current
                .as_ref()
                .is_none_or(|current| keyring.keyring.sequence > current.keyring.sequence);
            if newer {
                view.current = Some(keyring.clone());
            }
            valid.insert(keyring.id, keyring);
        } else {
            view.unchained.push(keyring.id);
        }
    }
    Ok(view)
}

/// What this machine remembers of a repository's keyring.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringMemory {
    format: String,
    repository: Id,
    sequence: u64,
    id: Id,
}

const KEYRING_MEMORY_FORMAT: &str = "cairn-keyring-seen-v1";

/// The file under the config directory where the newest keyring seen of
/// `repository` is remembered. Kept with the keys, not the cache: throwing
/// the cache away must not forget a revocation.
pub fn keyring_memory_path(config_directory: &Path, repository: &Id) -> std::path::PathBuf {
    config_directory
        .join("keyring-seen")
        .join(repository.to_hex())
}

/// Refuses a keyring older than the newest this machine has seen (someone
/// deleted the newest keyring, e.g. to undo a revocation), naming both;
/// otherwise remembers the current one.
pub fn check_keyring_rollback(path: &Path, repository: &Id, view: &KeyringView) -> Result<()> {
    let remembered = match std::fs::read(path) {
        Ok(bytes) if bytes.len() <= 4096 => {
            let memory: KeyringMemory = serde_json::from_slice(&bytes).map_err(|error| {
                StoreError::corrupt(
                    path.display().to_string(),
                    format!("not a keyring memory: {error}"),
                )
            })?;
            if memory.format != KEYRING_MEMORY_FORMAT || memory.repository != *repository {
                return Err(StoreError::corrupt(
                    path.display().to_string(),
                    "not this repository's keyring memory",
                ));
            }
            Some(memory)
        }
        Ok(_) => {
            return Err(StoreError::corrupt(
                path.display().to_string(),
                "larger than any keyring memory",
            ));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(StoreError::io(format!("reading {}", path.display()), error)),
    };
    let current = view.current.as_ref();
    if let Some(memory) = &remembered {
        let current_sequence = current.map_or(0, |current| current.keyring.sequence);
        if current_sequence < memory.sequence {
            return Err(StoreError::Invalid(format!(
                "the repository's keyring was rolled back: this machine saw keyring {} \
                 (sequence {}), and the newest valid one now is {}; someone deleted or damaged \
                 keyrings, which could undo a revocation. Refusing to trust writers' keys from \
                 it; if the owner did this on purpose, delete {}",
                memory.id,
                memory.sequence,
                current.map_or("none".to_string(), |current| format!(
                    "{} (sequence {current_sequence})",
                    current.id
                )),
                path.display()
            )));
        }
        if current.is_some_and(|current| current.keyring.sequence == memory.sequence) {
            return Ok(());
        }
    }
    let Some(current) = current else {
        return Ok(());
    };
    let memory = KeyringMemory {
        format: KEYRING_MEMORY_FORMAT.into(),
        repository: *repository,
        sequence: current.keyring.sequence,
        id: current.id,
    };
    write_small_file(path, &crate::format::codec::to_json(&memory))
}

fn write_small_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| StoreError::io(format!("creating {}", parent.display()), error))?;
    }
    let temporary = path.with_extension("tmp");
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    written
        .and_then(|_| std::fs::rename(&temporary, path))
        .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))
}

/// Which signing keys a keyring makes trusted, and which it revokes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyringTrust {
    /// Valid in the keyring: trusted for every snapshot.
    pub valid: Vec<PublicKey>,
    /// Revoked, with the snapshots each keeps.
    pub revoked: HashMap<PublicKey, HashSet<Id>>,
}

impl KeyringTrust {
    pub fn of(keyring: Option<&Keyring>) -> Self {
        let mut trust = KeyringTrust::default();
        for entry in keyring
            .map(|keyring| keyring.entries.as_slice())
            .unwrap_or(&[])
        {
            match &entry.status {
                Status::Valid => trust.valid.push(entry.public_key()),
                Status::Revoked { kept, .. } => {
                    trust
                        .revoked
                        .insert(entry.public_key(), kept.iter().copied().collect());
                }
            }
        }
        trust
    }

    /// The keys trusted for every snapshot: `local` and the keyring's
    /// valid keys, less every key the keyring revokes (a revocation holds
    /// against this machine's own list too).
    pub fn trusted(&self, local: &[PublicKey]) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = local
            .iter()
            .chain(&self.valid)
            .filter(|key| !self.revoked.contains_key(key))
            .copied()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Whether a snapshot `id` signed by revoked `signer` is one the owner
    /// kept trusting when revoking it.
    pub fn keeps(&self, signer: &PublicKey, id: &Id) -> bool {
        self.revoked
            .get(signer)
            .is_some_and(|kept| kept.contains(id))
    }
}

/// Signs `keyring` with `owner`, encrypts it and stores it.
pub fn write_keyring(
    repository: &Repository,
    keys: &RepositoryKeys,
    owner: &SigningKey,
    keyring: &Keyring,
) -> Result<Id> {
    let bytes = keyring.seal(keys, owner)?;
    repository.write_object(ObjectKind::Keyring, &bytes)
}

/// The keyring that follows the current one, or the first one, signed by
/// `signer`, which must be a valid owner of the current one (or, for the
/// first, a root the caller trusts).
pub fn next_keyring(
    view: &KeyringView,
    signer: &SigningKey,
    label: &str,
    time: &str,
) -> Result<Keyring> {
    let public = public_key_of(signer);
    match &view.current {
        None => Ok(Keyring::first(public, label, time)),
        Some(current) if current.keyring.may_sign_next(&public) => {
            Ok(Keyring::next(&current.keyring, current.id, time))
        }
        Some(current) => Err(StoreError::Invalid(format!(
            "signing key {} is not a valid owner key in keyring {} (sequence {}): only an owner \
             changes the keyring",
            public.to_hex(),
            current.id,
            current.keyring.sequence
        ))),
    }
}

/// Adds `key` as a valid key of `role`. A revoked key stays revoked:
/// adding it again is refused by name.
pub fn add_writer(
    keyring: &mut Keyring,
    key: PublicKey,
    role: Role,
    label: &str,
    time: &str,
) -> Result<()> {
    match keyring.entry(&key) {
        Some(entry) if entry.is_valid() => Ok(()),
        Some(_) => Err(StoreError::Invalid(format!(
            "key {} was revoked; a revoked key is never trusted again: make a new one",
            key.to_hex()
        ))),
        None => {
            keyring.entries.push(Entry {
                key: key.0,
                role,
                label: label.to_string(),
                added: time.to_string(),
                status: Status::Valid,
            });
            Ok(())
        }
    }
}

/// Marks `key` revoked in `keyring`, keeping `kept` (the snapshots it
/// signed that stay trusted). A key the keyring does not list is added as
/// revoked, so a key trusted only locally somewhere is revoked too.
pub fn revoke_in(keyring: &mut Keyring, key: PublicKey, kept: Vec<Id>, time: &str) {
    let status = Status::Revoked {
        time: time.to_string(),
        kept,
    };
    match keyring.entry_mut(&key) {
        Some(entry) => entry.status = status,
        None => keyring.entries.push(Entry {
            key: key.0,
            role: Role::Writer,
            label: String::new(),
            added: time.to_string(),
            status,
        }),
    }
}

/// Every snapshot in the repository whose manifest is signed by `key`
/// (read key needed: manifests are encrypted). A manifest that cannot be
/// read is not kept: it can never be proved to be that key's.
pub fn snapshots_signed_by(repository: &Repository, key: &PublicKey) -> Result<Vec<Id>> {
    let mut kept = Vec::new();
    for id in repository.list_ids(ObjectKind::Snapshot)? {
        match repository.read_manifest(&id) {
            Ok(manifest) if manifest.signer() == *key => kept.push(id),
            Ok(_) => {}
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error @ StoreError::ReadKeyMissing { .. }) => return Err(error),
            Err(_) => {}
        }
    }
    kept.sort();
    Ok(kept)
}

/// Publishes `key` in the repository (a key object), so a host holding its
/// secret half may sign with it.
pub fn publish_key(repository: &Repository, key: PublicKey) -> Result<Id> {
    repository.write_object(ObjectKind::Key, &PublicKeyObject::new(key).encode())
}

/// Every key slot, by id; one that cannot be read or decoded is named.
pub fn key_slots(repository: &Repository) -> Result<Vec<(Id, Result<KeySlot>)>> {
    let mut slots = Vec::new();
    for id in repository.list_ids(ObjectKind::KeySlot)? {
        let slot = match repository.read_verified(ObjectKind::KeySlot, &id) {
            Ok(bytes) => KeySlot::decode(&bytes, &format!("key slot {id}")),
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error) => Err(error),
        };
        slots.push((id, slot));
    }
    Ok(slots)
}

/// Refuses to remove `slot` when no other slot is known to give full
/// access. `full` holds the slots known to hold the read key (opened on
/// this host, or recorded as full when added).
pub fn check_removable(slot: &Id, existing: &[Id], full: &HashSet<Id>) -> Result<()> {
    if !existing.contains(slot) {
        return Err(StoreError::Invalid(format!(
            "no key slot {slot} in this repository"
        )));
    }
    let others = existing
        .iter()
        .filter(|id| *id != slot && full.contains(id))
        .count();
    if others == 0 {
        return Err(StoreError::Invalid(format!(
            "key slot {slot} is the last slot known to hold the read key: removing it could \
             leave no one able to restore. Add another full slot first (cairn key add)"
        )));
    }
    Ok(())
}

/// Removes a key slot (after [`check_removable`]).
pub fn remove_slot(repository: &Repository, slot: &Id) -> Result<()> {
    repository
        .backend()
        .delete(ObjectKind::KeySlot, &slot.to_hex())
}

/// What a read-key rotation wrote, for the keyring that records it.
pub struct ReadKeyRotation {
    /// The new keys: a fresh read key, the earlier ones kept.
    pub keys: RepositoryKeys,
    /// The slots written, with what the keyring records of each.
    pub written: Vec<SlotRecord>,
    /// The slots they replace, to remove once the keyring names the new
    /// ones.
    pub replaced: Vec<Id>,
}

/// The owner the rewritten slots name, and its signing key when this host
/// holds it, to endorse them (FORMAT.md 17.5).
pub struct SlotOwner<'a> {
    pub key: Option<PublicKey>,
    pub signing: Option<&'a SigningKey>,
}

/// Rotates the read key (FORMAT.md 17.7): writes, for every holder, a slot
/// carrying a fresh read key and every earlier one, and returns the old
/// slots for the caller to remove after recording the new ones.
///
/// - a passphrase slot is rewrapped only when `passphrase` opens it (the
///   holder's own); any other passphrase slot makes the rotation refuse
///   before anything is written, naming it, since its passphrase is not
///   known here;
/// - a recipient slot is rewrapped for its recipient, full when `full`
///   names the recipient (recorded full in the keyring, or the identity
///   that opened the repository), else write-only: a rotation never gives
///   the read key to a holder not known to have had it;
/// - a slot that cannot be read is left as it is.
///
/// Killed part-way, every old slot is still there and opens as before, so
/// every holder still restores all it could; running it again finishes.
pub fn rotate_read_key(
    repository: &Repository,
    keys: &RepositoryKeys,
    passphrase: Option<&[u8]>,
    full: &HashSet<[u8; 32]>,
    labels: &HashMap<Id, String>,
    owner: SlotOwner<'_>,
    time: &str,
) -> Result<ReadKeyRotation> {
    let SlotOwner {
        key: owner,
        signing: endorser,
    } = owner;
    let mut passphrase_slots = Vec::new();
    let mut recipients: Vec<([u8; 32], Vec<Id>)> = Vec::new();
    let mut unknown = Vec::new();
    for (id, slot) in key_slots(repository)? {
        let Ok(slot) = slot else { continue };
        if let Some(recipient) = slot.recipient() {
            match recipients.iter_mut().find(|(key, _)| *key == recipient) {
                Some((_, ids)) => ids.push(id),
                None => recipients.push((recipient, vec![id])),
            }
            continue;
        }
        let object = format!("key slot {id}");
        let opened = match passphrase {
            Some(passphrase) => {
                slot.unwrap_with_passphrase(repository.id(), passphrase, &object)?
            }
            None => None,
        };
        match (opened, slot.kdf()) {
            (Some(payload), Some(kdf)) => passphrase_slots.push((id, payload, kdf)),
            _ => unknown.push(id),
        }
    }
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(Id::to_hex).collect();
        return Err(StoreError::Invalid(format!(
            "passphrase key slot(s) {} do not open with this passphrase, so they cannot be given \
             the new read key; remove them (cairn key remove) and add them again after the \
             rotation. Nothing was changed",
            names.join(", ")
        )));
    }
    // A rotation killed part-way leaves a holder two slots; the one that
    // went furthest (the most earlier keys) is the base, so no read key
    // that something was written to is lost.
    let mut base = keys.clone();
    for (_, payload, _) in &passphrase_slots {
        let opened = payload.keys()?;
        if opened.can_read()
            && opened.earlier_public_keys().len() > base.earlier_public_keys().len()
            && opened.knows_public_key(&base.public_key())
        {
            base = opened;
        }
    }
    let rotated = base.rotated()?;
    let mut written = Vec::new();
    let mut replaced = Vec::new();
    for (recipient, ids) in &recipients {
        let is_full = full.contains(recipient);
        let label = ids
            .iter()
            .find_map(|id| labels.get(id).cloned())
            .unwrap_or_default();
        let new_keys = if is_full {
            rotated.clone()
        } else {
            rotated.write_only()
        };
        let mut payload = SlotPayload::of(&new_keys, owner, &label, time);
        payload.endorse_if_owner(endorser);
        let slot = KeySlot::wrap_for_recipient(&payload, recipient)?;
        let id = repository.write_object(ObjectKind::KeySlot, &slot.encode())?;
        written.push(record(id, "recipient", &label, is_full, time));
        replaced.extend(ids.iter().copied());
    }
    // The holder's own passphrase slots last: until they are written, the
    // passphrase opens the old keys, with which it reads all there is.
    // One slot for the passphrase, however many it opened (a killed
    // rotation leaves two): full if any of them was.
    if let (Some(passphrase), Some((_, first, kdf))) = (passphrase, passphrase_slots.first()) {
        let model = passphrase_slots
            .iter()
            .map(|(_, payload, _)| payload)
            .find(|payload| payload.read_key.is_some())
            .unwrap_or(first);
        let is_full = model.read_key.is_some();
        let new_keys = if is_full {
            rotated.clone()
        } else {
            rotated.write_only()
        };
        let mut new = SlotPayload::of(&new_keys, model.owner().or(owner), &model.label, time);
        new.endorse_if_owner(endorser);
        let slot = KeySlot::wrap_with_passphrase(&new, passphrase, *kdf)?;
        let id = repository.write_object(ObjectKind::KeySlot, &slot.encode())?;
        written.push(record(id, "passphrase", &model.label, is_full, time));
        replaced.extend(passphrase_slots.iter().map(|(old, _, _)| *old));
    }
    Ok(ReadKeyRotation {
        keys: rotated,
        written,
        replaced,
    })
}

fn record(id: Id, kind: &str, label: &str, full: bool, created: &str) -> SlotRecord {
    SlotRecord {
        id,
        kind: kind.to_string(),
        label: label.to_string(),
        full,
        created: created.to_string(),
    }
}

/// The first line of a paper export.
pub const EXPORT_HEADER: &str = "cairn key export v1";

/// The paper backup of a repository's keys (FORMAT.md 17.7): named lines of
/// hex, then a BLAKE3 checksum line over every line before it, so a
/// mistyped digit is found before the keys are used.
pub fn export_text(keys: &RepositoryKeys, owner: Option<PublicKey>) -> Result<String> {
    let Some(read) = keys.read_key_bytes() else {
        return Err(StoreError::ReadKeyMissing {
            object: "the key export".to_string(),
        });
    };
    let mut text = format!("{EXPORT_HEADER}\n");
    text.push_str(&format!("repository {}\n", keys.repository().to_hex()));
    text.push_str(&format!("public-key {}\n", keys.public_key().to_hex()));
    text.push_str(&format!("id-key {}\n", hex::encode(keys.id_key_bytes())));
    text.push_str(&format!("read-key {}\n", hex::encode(read)));
    // Newest first, so that what was written before each read-key
    // rotation restores from the paper too (FORMAT.md 17.7).
    for earlier in keys.earlier_read_key_bytes() {
        text.push_str(&format!("earlier-read-key {}\n", hex::encode(earlier)));
    }
    if let Some(owner) = owner {
        text.push_str(&format!("owner {}\n", owner.to_hex()));
    }
    let checksum = blake3::hash(text.as_bytes());
    text.push_str(&format!("checksum {}\n", &checksum.to_hex()[..32]));
    Ok(text)
}

/// Reads a paper export back: the keys and the owner's key. Blank lines
/// and spaces at line ends are ignored; anything else wrong is refused,
/// naming the line.
pub fn parse_export(text: &str) -> Result<(RepositoryKeys, Option<PublicKey>)> {
    let bad = |reason: String| StoreError::Invalid(format!("key export: {reason}"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.first() != Some(&EXPORT_HEADER) {
        return Err(bad(format!("does not start with {EXPORT_HEADER:?}")));
    }
    let Some((last, body)) = lines.split_last() else {
        return Err(bad("is empty".into()));
    };
    let mut checked = String::new();
    for line in body {
        checked.push_str(line);
        checked.push('\n');
    }
    let expected = blake3::hash(checked.as_bytes()).to_hex();
    match last.strip_prefix("checksum ") {
        Some(sum) if sum == &expected[..32] => {}
        Some(_) => {
            return Err(bad(
                "checksum does not match: a line was changed or mistyped".into(),
            ));
        }
        None => return Err(bad("has no checksum line at its end".into())),
    }
    let mut fields: HashMap<&str, [u8; 32]> = HashMap::new();
    let mut earlier_read = Vec::new();
    for line in &body[1..] {
        let (name, value) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("line {line:?} is not a name and a value")))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(value.trim(), &mut bytes)
            .map_err(|_| bad(format!("{name} is not 64 hex digits")))?;
        if name == "earlier-read-key" {
            earlier_read.push(bytes);
            continue;
        }
        fields.insert(name, bytes);
    }
    let field = |name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| bad(format!("has no {name} line")))
    };
    let keys = RepositoryKeys::from_parts(
        Id(field("repository")?),
        EncryptionPublicKey(field("public-key")?),
        field("id-key")?,
        Some(field("read-key")?),
    )?;
    let earlier_public: Vec<[u8; 32]> = earlier_read
        .iter()
        .map(|read| {
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*read)).to_bytes()
        })
        .collect();
    let keys = keys.with_earlier(&earlier_public, &earlier_read)?;
    let owner = match fields.get("owner") {
        Some(bytes) => Some(
            PublicKey::from_hex(&hex::encode(bytes))
                .ok_or_else(|| bad("owner is not an ed25519 public key".into()))?,
        ),
        None => None,
    };
    Ok((keys, owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::generate_signing_key;

    #[test]
    fn an_export_round_trips_and_a_typo_is_found() {
        let keys = RepositoryKeys::generate(Id::of(b"export")).unwrap();
        let owner = public_key_of(&generate_signing_key().unwrap());
        let text = export_text(&keys, Some(owner)).unwrap();
        let (back, back_owner) = parse_export(&text).unwrap();
        assert_eq!(back.public_key(), keys.public_key());
        assert_eq!(back.id_key_bytes(), keys.id_key_bytes());
        assert_eq!(back.read_key_bytes(), keys.read_key_bytes());
        assert_eq!(back_owner, Some(owner));
        let mut swapped = text.clone();
        let digit = swapped.find("read-key ").unwrap() + 9;
        let replacement = if &swapped[digit..digit + 1] == "a" {
            "b"
        } else {
            "a"
        };
        swapped.replace_range(digit..digit + 1, replacement);
        let error = parse_export(&swapped).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        assert!(export_text(&keys.write_only(), None).is_err());
        // After two read-key rotations the paper carries the earlier keys.
        let rotated = keys.rotated().unwrap().rotated().unwrap();
        let (back, _) = parse_export(&export_text(&rotated, None).unwrap()).unwrap();
        assert_eq!(back.earlier_read_key_bytes().len(), 2);
        assert_eq!(
            back.earlier_read_key_bytes(),
            rotated.earlier_read_key_bytes()
        );
        assert!(back.knows_public_key(&keys.public_key()));
    }

    #[test]
    fn revoked_keys_lose_trust_but_keep_their_listed_snapshots() {
        let owner = public_key_of(&generate_signing_key().unwrap());
        let host = public_key_of(&generate_signing_key().unwrap());
        let mut keyring = Keyring::first(owner, "owner", "t");
        add_writer(&mut keyring, host, Role::Writer, "host", "t").unwrap();
        let trust = KeyringTrust::of(Some(&keyring));
        assert_eq!(trust.trusted(&[]).len(), 2);
        let old = Id::of(b"old snapshot");
        revoke_in(&mut keyring, host, vec![old], "t2");
        let trust = KeyringTrust::of(Some(&keyring));
        assert_eq!(
            trust.trusted(&[host]),
            vec![owner],
            "a revocation beats local trust"
        );
        assert!(trust.keeps(&host, &old));
        assert!(!trust.keeps(&host, &Id::of(b"new snapshot")));
        assert!(add_writer(&mut keyring, host, Role::Writer, "again", "t3").is_err());
    }

    /// A repository in memory with its keys and its owner's signing key.
    fn repository() -> (Repository, RepositoryKeys, SigningKey) {
        let keys =
            RepositoryKeys::generate(Id(crate::os::random::random_bytes().unwrap())).unwrap();
        let owner = generate_signing_key().unwrap();
        let repository = Repository::init(
            std::sync::Arc::new(crate::backend::MemoryBackend::new()),
            cairn_chunker::ChunkerParams::DEFAULT,
            3,
            public_key_of(&owner),
            Some(&keys),
        )
        .unwrap();
        (repository, keys, owner)
    }

    #[test]
    fn planted_keyrings_are_not_believed_and_a_deleted_one_is_a_roll_back() {
        let (repository, keys, owner) = repository();
        let roots = [public_key_of(&owner)];
        let host = generate_signing_key().unwrap();
        let attacker = generate_signing_key().unwrap();
        // The owner adds a writer.
        let view = read_keyring(&repository, &keys, &roots).unwrap();
        let mut first = next_keyring(&view, &owner, "owner", "t1").unwrap();
        add_writer(&mut first, public_key_of(&host), Role::Writer, "host", "t1").unwrap();
        let first_id = write_keyring(&repository, &keys, &owner, &first).unwrap();
        // A writer (who can encrypt to the public key) plants a next
        // keyring making itself owner and adding an attacker; a stranger
        // plants a first keyring of its own.
        let mut planted = Keyring::next(&first, first_id, "t2");
        add_writer(
            &mut planted,
            public_key_of(&attacker),
            Role::Owner,
            "x",
            "t2",
        )
        .unwrap();
        let planted_id = write_keyring(&repository, &keys, &host, &planted).unwrap();
        let stranger = Keyring::first(public_key_of(&attacker), "x", "t2");
        let stranger_id = write_keyring(&repository, &keys, &attacker, &stranger).unwrap();
        let view = read_keyring(&repository, &keys, &roots).unwrap();
        assert_eq!(
            view.current.as_ref().map(|current| current.id),
            Some(first_id)
        );
        assert!(view.unchained.contains(&planted_id) && view.unchained.contains(&stranger_id));
        let trust = KeyringTrust::of(view.current.as_ref().map(|current| &current.keyring));
        assert!(!trust.trusted(&[]).contains(&public_key_of(&attacker)));
        // The owner revokes the host; deleting that keyring is noticed.
        let config = tempfile::tempdir().unwrap();
        let memory = keyring_memory_path(config.path(), repository.id());
        check_keyring_rollback(&memory, repository.id(), &view).unwrap();
        let mut second = next_keyring(&view, &owner, "owner", "t3").unwrap();
        revoke_in(&mut second, public_key_of(&host), vec![], "t3");
        let second_id = write_keyring(&repository, &keys, &owner, &second).unwrap();
        let view = read_keyring(&repository, &keys, &roots).unwrap();
        assert_eq!(
            view.current.as_ref().map(|current| current.id),
            Some(second_id)
        );
        check_keyring_rollback(&memory, repository.id(), &view).unwrap();
        repository
            .backend()
            .delete(ObjectKind::Keyring, &second_id.to_hex())
            .unwrap();
        let view = read_keyring(&repository, &keys, &roots).unwrap();
        let error = check_keyring_rollback(&memory, repository.id(), &view).unwrap_err();
        assert!(error.to_string().contains("rolled back"), "{error}");
        assert!(error.to_string().contains(&second_id.to_hex()), "{error}");
    }

    #[test]
    fn the_last_full_slot_stays() {
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        let full: HashSet<Id> = [a].into_iter().collect();
        assert!(check_removable(&a, &[a, b], &full).is_err());
        assert!(check_removable(&b, &[a, b], &full).is_ok());
        let both: HashSet<Id> = [a, b].into_iter().collect();
        assert!(check_removable(&a, &[a, b], &both).is_ok());
    }
}
