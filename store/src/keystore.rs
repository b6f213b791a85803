//! Keys on this machine: the secret key file (JSON, mode 0600, kept outside
//! the repository, optionally sealed under a passphrase), this host's X25519
//! identities (`<config>/identities/`, mode 0600, which open the key slots
//! wrapped for them, FORMAT.md 17.5), the local lists of trusted public keys (one per
//! repository, one file per key under the config directory's
//! `trusted/<repository id>/`), the pin of which repository lives at each
//! location, and public keys given on the command line. Trust comes only
//! from those lists or from a key the user pins explicitly, never from a
//! repository. Never signs or verifies anything (that is `format::seal`).

use crate::error::{Result, StoreError};
use crate::format::codec::to_json;
use crate::format::crypto::{NONCE_LENGTH, cipher_for, open_in_place, seal_in_place};
use crate::format::keys::{PublicKey, PublicKeyObject, SigningKey, public_key_of};
use crate::format::keyslot::{KdfParams, passphrase_key};
use crate::id::Id;
use crate::os::random::random_bytes;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// The secret key file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    format: String,
    algorithm: String,
    secret_key: String,
    public_key: String,
}

/// Where a new key is kept by default: `<config dir>/keys/<public key>.key`.
pub fn default_key_path(config_directory: &Path, public: &PublicKey) -> PathBuf {
    config_directory
        .join("keys")
        .join(format!("{}.key", public.to_hex()))
}

/// Writes a new secret key file with mode 0600; refuses to replace one.
pub fn write_secret_key(path: &Path, key: &SigningKey) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|error| StoreError::io(format!("creating {}", parent.display()), error))?;
    }
    let contents = to_json(&SecretKeyFile {
        format: "cairn-secret-key-v1".into(),
        algorithm: "ed25519".into(),
        secret_key: hex::encode(key.to_bytes()),
        public_key: public_key_of(key).to_hex(),
    });
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| StoreError::io(format!("creating key file {}", path.display()), error))?;
    file.write_all(&contents)
        .and_then(|_| file.sync_all())
        .map_err(|error| StoreError::io(format!("writing key file {}", path.display()), error))?;
    // The key is the only way to sign for its repository: its directory
    // entry must survive a crash too.
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_directory(parent),
        _ => Ok(()),
    }
}

pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    read_secret_key_unlocking(path, || {
        Err(StoreError::Invalid(format!(
            "key file {} is protected by a passphrase, and none was given here",
            path.display()
        )))
    })
}

/// Reads a secret key file; for a passphrase-protected one, `passphrase`
/// is asked for the passphrase (once), and a wrong one is refused by name.
pub fn read_secret_key_unlocking(
    path: &Path,
    passphrase: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<SigningKey> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::KeyMissing(path.to_path_buf()));
        }
        Err(error) => {
            return Err(StoreError::io(
                format!("reading key file {}", path.display()),
                error,
            ));
        }
    };
    let bad = |reason: &str| StoreError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if let Ok(protected) = serde_json::from_slice::<ProtectedKeyFile>(&bytes) {
        return open_protected(path, &protected, &passphrase()?);
    }
    let file: SecretKeyFile =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a cairn secret key file"))?;
    if file.format != "cairn-secret-key-v1" || file.algorithm != "ed25519" {
        return Err(bad("not a cairn ed25519 secret key"));
    }
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&file.secret_key, &mut secret)
        .map_err(|_| bad("secret key is not 64 hex digits"))?;
    let key = SigningKey::from_bytes(&secret);
    secret.zeroize();
    if public_key_of(&key).to_hex() != file.public_key {
        return Err(bad("public key does not match the secret key"));
    }
    Ok(key)
}

/// Whether the key file at `path` is sealed under a passphrase.
pub fn is_protected_key_file(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .is_some_and(|bytes| serde_json::from_slice::<ProtectedKeyFile>(&bytes).is_ok())
}

/// A secret key file sealed under a passphrase: Argon2id (the key slots'
/// derivation, with its bounds) and XChaCha20-Poly1305, the public key
/// bound into the associated data.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedKeyFile {
    format: String,
    algorithm: String,
    public_key: String,
    kdf: KdfParams,
    salt: String,
    nonce: String,
    sealed_secret_key: String,
}

const PROTECTED_FORMAT: &str = "cairn-protected-secret-key-v1";
const PROTECTED_AAD: &[u8] = b"cairn protected secret key v1\0";

/// Writes `key` to a new file at `path` (mode 0600), sealed under
/// `passphrase`; refuses to replace a file unless `replace` (then the new
/// file is renamed over the old one, so a crash leaves one or the other).
pub fn write_protected_secret_key(
    path: &Path,
    key: &SigningKey,
    passphrase: &[u8],
    kdf: KdfParams,
    replace: bool,
) -> Result<()> {
    kdf.check("--kdf-memory/--kdf-passes")?;
    let salt = random_bytes::<16>()?;
    let nonce = random_bytes::<NONCE_LENGTH>()?;
    let public = public_key_of(key);
    let mut wrapping = passphrase_key(passphrase, &kdf, &salt, "protected key")?;
    let mut sealed = key.to_bytes().to_vec();
    seal_in_place(
        &cipher_for(&wrapping),
        &nonce,
        &protected_aad(&public),
        &mut sealed,
    );
    wrapping.zeroize();
    let contents = to_json(&ProtectedKeyFile {
        format: PROTECTED_FORMAT.into(),
        algorithm: "ed25519".into(),
        public_key: public.to_hex(),
        kdf,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        sealed_secret_key: hex::encode(&sealed),
    });
    write_private_file(path, &contents, replace, "key file")
}

fn protected_aad(public: &PublicKey) -> Vec<u8> {
    let mut aad = PROTECTED_AAD.to_vec();
    aad.extend_from_slice(&public.0);
    aad
}

fn open_protected(path: &Path, file: &ProtectedKeyFile, passphrase: &[u8]) -> Result<SigningKey> {
    let object = format!("key file {}", path.display());
    let bad = |reason: &str| StoreError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if file.format != PROTECTED_FORMAT || file.algorithm != "ed25519" {
        return Err(bad("not a cairn protected ed25519 secret key"));
    }
    file.kdf.check(&object)?;
    let public = PublicKey::from_hex(&file.public_key).ok_or_else(|| bad("bad public key"))?;
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; NONCE_LENGTH];
    hex::decode_to_slice(&file.salt, &mut salt).map_err(|_| bad("bad salt"))?;
    hex::decode_to_slice(&file.nonce, &mut nonce).map_err(|_| bad("bad nonce"))?;
    let mut sealed = hex::decode(&file.sealed_secret_key).map_err(|_| bad("bad sealed key"))?;
    if sealed.len() != 32 + 16 {
        return Err(bad("sealed key has the wrong length"));
    }
    let mut wrapping = passphrase_key(passphrase, &file.kdf, &salt, &object)?;
    let opened = open_in_place(
        &cipher_for(&wrapping),
        &nonce,
        &protected_aad(&public),
        &mut sealed,
    );
    wrapping.zeroize();
    if opened.is_err() {
        return Err(StoreError::KeySlotLocked(format!(
            "{object} does not open with this passphrase"
        )));
    }
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&sealed[..32]);
    sealed.zeroize();
    let key = SigningKey::from_bytes(&secret);
    secret.zeroize();
    if public_key_of(&key) != public {
        return Err(bad("public key does not match the secret key"));
    }
    Ok(key)
}

/// Writes a private (0600) file durably: a new file, or with `replace` a
/// temporary renamed over `path`.
fn write_private_file(path: &Path, contents: &[u8], replace: bool, what: &str) -> Result<()> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        fs::create_dir_all(parent)
            .map_err(|error| StoreError::io(format!("creating {}", parent.display()), error))?;
    }
    let target = if replace {
        path.with_extension("new")
    } else {
        path.to_path_buf()
    };
    if replace {
        let _ = fs::remove_file(&target);
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(|error| StoreError::io(format!("creating {what} {}", target.display()), error))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|error| StoreError::io(format!("writing {what} {}", target.display()), error))?;
    if replace {
        fs::rename(&target, path)
            .map_err(|error| StoreError::io(format!("replacing {}", path.display()), error))?;
    }
    match parent {
        Some(parent) => sync_directory(parent),
        None => Ok(()),
    }
}

/// An X25519 identity file: what opens the key slots wrapped for this
/// host (`cairn key host-init`, `init --recipient`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    format: String,
    algorithm: String,
    secret_key: String,
    public_key: String,
}

const IDENTITY_FORMAT: &str = "cairn-identity-v1";

/// Where this host's identities live: `<config dir>/identities/`. Like
/// `keys/`, a backup never stores it.
pub fn identities_directory(config_directory: &Path) -> PathBuf {
    config_directory.join("identities")
}

/// Makes a new X25519 identity in `<config>/identities/<public hex>.key`
/// (mode 0600) and returns its public key.
pub fn create_identity(config_directory: &Path) -> Result<[u8; 32]> {
    let mut secret = random_bytes::<32>()?;
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    let contents = to_json(&IdentityFile {
        format: IDENTITY_FORMAT.into(),
        algorithm: "x25519".into(),
        secret_key: hex::encode(secret),
        public_key: hex::encode(public),
    });
    secret.zeroize();
    // `.key`, like signing keys: a backup leaves every `*.key` file of
    // the directory out.
    let path = identities_directory(config_directory).join(format!("{}.key", hex::encode(public)));
    write_private_file(&path, &contents, false, "identity file")?;
    Ok(public)
}

/// This host's identities, as (public key, secret key) pairs. A file that
/// is not an identity is named in the error: an identity that cannot be
/// read is a key slot that cannot be opened.
pub fn identities(config_directory: &Path) -> Result<Vec<([u8; 32], [u8; 32])>> {
    let directory = identities_directory(config_directory);
    let mut found = Vec::new();
    for entry in entries_of(&directory)? {
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "key") {
            continue;
        }
        let bad = |reason: &str| StoreError::BadKeyFile {
            path: path.clone(),
            reason: reason.into(),
        };
        let bytes = fs::read(&path)
            .map_err(|error| StoreError::io(format!("reading {}", path.display()), error))?;
        let file: IdentityFile =
            serde_json::from_slice(&bytes).map_err(|_| bad("not a cairn identity file"))?;
        if file.format != IDENTITY_FORMAT || file.algorithm != "x25519" {
            return Err(bad("not a cairn x25519 identity"));
        }
        let mut secret = [0u8; 32];
        hex::decode_to_slice(&file.secret_key, &mut secret)
            .map_err(|_| bad("secret key is not 64 hex digits"))?;
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
        if hex::encode(public) != file.public_key {
            return Err(bad("public key does not match the secret key"));
        }
        found.push((public, secret));
    }
    found.sort_by_key(|(public, _)| *public);
    Ok(found)
}

/// Makes `path`'s directory entry durable: a file just created or renamed
/// there survives a crash only once its directory is synced.
fn sync_directory(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| StoreError::io(format!("syncing directory {}", path.display()), error))
}

/// The keys trusted for one repository, and where they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKeys {
    pub keys: Vec<PublicKey>,
    /// Taken from the legacy list of keys trusted for every repository
    /// (`trusted/<hex>`), because this repository has no list of its own.
    pub legacy: bool,
}

/// The local lists of trusted public keys, one per repository:
/// `<config dir>/trusted/<repository id>/<key hex>`. Files directly under
/// `trusted/` (`trusted/<key hex>`, written by cairn before per-repository
/// trust) are the legacy list: used only for a repository that has no
/// list of its own, never added to one.
pub struct TrustStore {
    root: PathBuf,
    repository: Id,
}

impl TrustStore {
    pub fn new(config_directory: &Path, repository: &Id) -> Self {
        TrustStore {
            root: config_directory.join("trusted"),
            repository: *repository,
        }
    }

    /// This repository's own list.
    pub fn directory(&self) -> PathBuf {
        self.root.join(self.repository.to_hex())
    }

    /// The legacy list of keys trusted for every repository.
    pub fn legacy_directory(&self) -> &Path {
        &self.root
    }

    /// Trusts `key` for this repository only; durable when it returns.
    pub fn trust(&self, key: PublicKey) -> Result<()> {
        let directory = self.directory();
        fs::create_dir_all(&directory)
            .map_err(|error| StoreError::io(format!("creating {}", directory.display()), error))?;
        let path = directory.join(key.to_hex());
        let mut file = fs::File::create(&path)
            .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))?;
        file.write_all(format!("{}\n", key.to_hex()).as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))?;
        sync_directory(&directory)?;
        sync_directory(&self.root)
    }

    /// The keys trusted for this repository: its own list if it has one
    /// with a key in it, else the legacy list (said in the result).
    pub fn trusted_keys(&self) -> Result<TrustedKeys> {
        let own = keys_in(&self.directory())?;
        if !own.is_empty() {
            return Ok(TrustedKeys {
                keys: own,
                legacy: false,
            });
        }
        let legacy = keys_in(&self.root)?;
        Ok(TrustedKeys {
            legacy: !legacy.is_empty(),
            keys: legacy,
        })
    }
}

/// The readable entries of `directory`; a missing directory has none.
fn entries_of(directory: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(directory) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(StoreError::io(
            format!("listing {}", directory.display()),
            error,
        )),
    }
}

/// Every file in `directory` named by a public key; a missing directory
/// means none. Directories (other repositories' lists) are not keys.
fn keys_in(directory: &Path) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for entry in entries_of(directory)? {
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if let (true, Some(key)) = (
            is_file,
            entry.file_name().to_str().and_then(PublicKey::from_hex),
        ) {
            keys.push(key);
        }
    }
    keys.sort();
    Ok(keys)
}

/// Which repository was found at each location on this machine:
/// `<config dir>/repositories/<BLAKE3 of the location>` holds the
/// repository id and the location. A config replaced by another
/// repository's (another id at a known location) is refused, so objects
/// signed for that other repository cannot be made to pass as this one's.
pub struct LocationPins {
    directory: PathBuf,
}

impl LocationPins {
    pub fn new(config_directory: &Path) -> Self {
        LocationPins {
            directory: config_directory.join("repositories"),
        }
    }

    fn path_of(&self, location: &str) -> PathBuf {
        self.directory.join(Id::of(location.as_bytes()).to_hex())
    }

    /// Checks that `location` holds the repository `id` it held before;
    /// pins it on first sight.
    pub fn check(&self, location: &str, id: &Id) -> Result<()> {
        let path = self.path_of(location);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let pinned = text.lines().next().and_then(Id::from_hex);
                match pinned {
                    Some(pinned) if pinned == *id => Ok(()),
                    Some(pinned) => Err(StoreError::Invalid(format!(
                        "repository {location} has id {id}, but this machine knows it as {pinned}: \
                         its config was replaced, and objects signed for another repository could \
                         pass as its own; refusing. If you replaced the repository on purpose, \
                         delete {} and run the command again",
                        path.display()
                    ))),
                    None => Err(StoreError::corrupt(
                        path.display().to_string(),
                        "not a repository pin (a repository id, then its location)",
                    )),
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => self.pin(location, id),
            Err(error) => Err(StoreError::io(format!("reading {}", path.display()), error)),
        }
    }

    /// Records that `location` holds repository `id` (a new repository
    /// there replaces the pin).
    pub fn pin(&self, location: &str, id: &Id) -> Result<()> {
        fs::create_dir_all(&self.directory).map_err(|error| {
            StoreError::io(format!("creating {}", self.directory.display()), error)
        })?;
        let path = self.path_of(location);
        // A name of its own: two commands meeting a location for the first
        // time at once (two backups to a new server) each write a pin, and
        // with one shared temporary name the second rename found it gone.
        let temporary = path.with_extension(format!("tmp-{}", hex::encode(random_bytes::<8>()?)));
        let mut file = fs::File::create(&temporary)
            .map_err(|error| StoreError::io(format!("writing {}", temporary.display()), error))?;
        file.write_all(format!("{id}\n{location}\n").as_bytes())
            .and_then(|_| file.sync_all())
            .and_then(|_| fs::rename(&temporary, &path))
            .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))?;
        sync_directory(&self.directory)
    }
}

/// What a host opening a repository by a recipient slot remembers
/// (FORMAT.md 14.10): the owner whose endorsement it accepted and the
/// encryption public key it last took from a slot, in
/// `<config>/slot-owners/<repository id hex>`. A later slot must be
/// endorsed by that owner and name that key or one rotated from it, so a
/// planted slot, or the deletion of the newest one, is refused.
pub struct SlotMemory {
    path: PathBuf,
}

/// The owner and encryption public key a [`SlotMemory`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RememberedSlot {
    pub owner: PublicKey,
    pub public_key: [u8; 32],
    /// How many read-key rotations that slot's chain recorded.
    pub rotations: u32,
}

impl SlotMemory {
    pub fn new(config_directory: &Path, repository: &Id) -> Self {
        SlotMemory {
            path: config_directory
                .join("slot-owners")
                .join(repository.to_hex()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is remembered; `None` before the first endorsed slot opened here.
    pub fn read(&self) -> Result<Option<RememberedSlot>> {
        let text = match fs::read(&self.path) {
            Ok(bytes) if bytes.len() <= 256 => bytes,
            Ok(_) => {
                return Err(StoreError::corrupt(
                    self.name(),
                    "larger than any slot memory",
                ));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(StoreError::io(format!("reading {}", self.name()), error));
            }
        };
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        let owner = lines.next().and_then(PublicKey::from_hex);
        let mut public_key = [0u8; 32];
        let public_ok = lines
            .next()
            .is_some_and(|line| hex::decode_to_slice(line.trim(), &mut public_key).is_ok());
        let rotations = lines
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok());
        match (owner, public_ok, rotations) {
            (Some(owner), true, Some(rotations)) => Ok(Some(RememberedSlot {
                owner,
                public_key,
                rotations,
            })),
            _ => Err(StoreError::corrupt(
                self.name(),
                "is not the slot owner and the encryption public key (64 hex digits each) and \
                 a count of rotations, one a line",
            )),
        }
    }

    /// Remembers `slot`, durably (temporary file, fsync, rename).
    pub fn write(&self, slot: &RememberedSlot) -> Result<()> {
        let Some(directory) = self.path.parent() else {
            return Err(StoreError::Invalid(format!(
                "{} has no directory",
                self.name()
            )));
        };
        fs::create_dir_all(directory)
            .map_err(|error| StoreError::io(format!("creating {}", directory.display()), error))?;
        let temporary = self
            .path
            .with_extension(format!("tmp-{}", hex::encode(random_bytes::<8>()?)));
        let mut file = fs::File::create(&temporary)
            .map_err(|error| StoreError::io(format!("writing {}", temporary.display()), error))?;
        file.write_all(
            format!(
                "{}\n{}\n{}\n",
                slot.owner.to_hex(),
                hex::encode(slot.public_key),
                slot.rotations
            )
            .as_bytes(),
        )
        .and_then(|_| file.sync_all())
        .and_then(|_| fs::rename(&temporary, &self.path))
        .map_err(|error| StoreError::io(format!("writing {}", self.name()), error))?;
        sync_directory(directory)
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Parses a key given on the command line: 64 hex digits, or the path of a
/// file holding them or a public-key object.
pub fn parse_public_key_argument(argument: &str) -> Result<PublicKey> {
    if let Some(key) = PublicKey::from_hex(argument) {
        return Ok(key);
    }
    let path = Path::new(argument);
    let bytes = fs::read(path).map_err(|error| {
        StoreError::Invalid(format!(
            "trusted key {argument:?} is neither 64 hex digits nor a readable file ({error})"
        ))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if let Some(key) = PublicKey::from_hex(&text) {
        return Ok(key);
    }
    PublicKeyObject::decode(&bytes, &format!("trusted key file {argument}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys::generate_signing_key;

    #[test]
    fn secret_key_file_round_trips_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("keys/repo.key");
        let key = generate_signing_key().unwrap();
        write_secret_key(&path, &key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(
            write_secret_key(&path, &key).is_err(),
            "never overwrites a key"
        );
    }

    #[test]
    fn trust_is_per_repository_and_the_legacy_list_serves_only_repositories_without_one() {
        let config = tempfile::tempdir().unwrap();
        let (one, two) = (Id([1; 32]), Id([2; 32]));
        let key = |seed| public_key_of(&SigningKey::from_bytes(&[seed; 32]));
        TrustStore::new(config.path(), &one).trust(key(1)).unwrap();
        let trusted = |repository| {
            TrustStore::new(config.path(), repository)
                .trusted_keys()
                .unwrap()
        };
        assert_eq!(
            trusted(&one),
            TrustedKeys {
                keys: vec![key(1)],
                legacy: false
            }
        );
        assert_eq!(
            trusted(&two),
            TrustedKeys {
                keys: vec![],
                legacy: false
            }
        );
        // A key trusted by an older cairn, for every repository.
        fs::write(config.path().join("trusted").join(key(9).to_hex()), "").unwrap();
        assert_eq!(
            trusted(&two),
            TrustedKeys {
                keys: vec![key(9)],
                legacy: true
            }
        );
        assert_eq!(
            trusted(&one),
            TrustedKeys {
                keys: vec![key(1)],
                legacy: false
            }
        );
        TrustStore::new(config.path(), &two).trust(key(2)).unwrap();
        assert_eq!(
            trusted(&two),
            TrustedKeys {
                keys: vec![key(2)],
                legacy: false
            }
        );
    }

    #[test]
    fn a_location_keeps_its_repository_id() {
        let config = tempfile::tempdir().unwrap();
        let pins = LocationPins::new(config.path());
        pins.check("/backups/repo", &Id([1; 32])).unwrap();
        pins.check("/backups/repo", &Id([1; 32])).unwrap();
        pins.check("/backups/other", &Id([2; 32])).unwrap();
        let error = pins.check("/backups/repo", &Id([2; 32])).unwrap_err();
        assert!(error.to_string().contains("replaced"), "{error}");
        // A new repository made there on purpose (init) moves the pin.
        pins.pin("/backups/repo", &Id([2; 32])).unwrap();
        pins.check("/backups/repo", &Id([2; 32])).unwrap();
    }

    #[test]
    fn public_key_arguments_parse_from_hex_or_file() {
        let key = public_key_of(&generate_signing_key().unwrap());
        assert_eq!(parse_public_key_argument(&key.to_hex()).unwrap(), key);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("key.pub");
        fs::write(&path, PublicKeyObject::new(key).encode()).unwrap();
        assert_eq!(
            parse_public_key_argument(path.to_str().unwrap()).unwrap(),
            key
        );
        assert!(parse_public_key_argument("not-a-key").is_err());
    }

    #[test]
    fn a_protected_key_opens_with_its_passphrase_only() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("keys/p.key");
        let key = generate_signing_key().unwrap();
        let fast = KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            passes: 1,
            lanes: 1,
        };
        write_protected_secret_key(&path, &key, b"pw", fast, false).unwrap();
        assert!(is_protected_key_file(&path));
        assert!(read_secret_key(&path).is_err(), "no passphrase, no key");
        let wrong = read_secret_key_unlocking(&path, || Ok(b"nope".to_vec())).unwrap_err();
        assert!(wrong.to_string().contains("does not open"), "{wrong}");
        let opened = read_secret_key_unlocking(&path, || Ok(b"pw".to_vec())).unwrap();
        assert_eq!(opened.to_bytes(), key.to_bytes());
        // A new passphrase replaces the file in one rename.
        write_protected_secret_key(&path, &key, b"new", fast, true).unwrap();
        let opened = read_secret_key_unlocking(&path, || Ok(b"new".to_vec())).unwrap();
        assert_eq!(opened.to_bytes(), key.to_bytes());
    }

    #[test]
    fn identities_are_private_and_listed() {
        use std::os::unix::fs::PermissionsExt;
        let config = tempfile::tempdir().unwrap();
        assert!(identities(config.path()).unwrap().is_empty());
        let public = create_identity(config.path()).unwrap();
        let listed = identities(config.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, public);
        let path = identities_directory(config.path()).join(format!("{}.key", hex::encode(public)));
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
