//! Keys on this machine: the secret key file (JSON, mode 0600, kept outside
//! the repository), the local lists of trusted public keys (one per
//! repository, one file per key under the config directory's
//! `trusted/<repository id>/`), the pin of which repository lives at each
//! location, and public keys given on the command line. Trust comes only
//! from those lists or from a key the user pins explicitly, never from a
//! repository. Never signs or verifies anything (that is `format::seal`).

use crate::error::{Result, StoreError};
use crate::format::codec::to_json;
use crate::format::keys::{PublicKey, PublicKeyObject, SigningKey, public_key_of};
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    let file: SecretKeyFile =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a cairn secret key file"))?;
    if file.format != "cairn-secret-key-v1" || file.algorithm != "ed25519" {
        return Err(bad("not a cairn ed25519 secret key"));
    }
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&file.secret_key, &mut secret)
        .map_err(|_| bad("secret key is not 64 hex digits"))?;
    let key = SigningKey::from_bytes(&secret);
    if public_key_of(&key).to_hex() != file.public_key {
        return Err(bad("public key does not match the secret key"));
    }
    Ok(key)
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

/// Every file in `directory` named by a public key; a missing directory
/// means none. Directories (other repositories' lists) are not keys.
fn keys_in(directory: &Path) -> Result<Vec<PublicKey>> {
    let entries = match fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(StoreError::io(
                format!("listing {}", directory.display()),
                error,
            ));
        }
    };
    let mut keys = Vec::new();
    for entry in entries.flatten() {
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
        let temporary = path.with_extension("tmp");
        let mut file = fs::File::create(&temporary)
            .map_err(|error| StoreError::io(format!("writing {}", temporary.display()), error))?;
        file.write_all(format!("{id}\n{location}\n").as_bytes())
            .and_then(|_| file.sync_all())
            .and_then(|_| fs::rename(&temporary, &path))
            .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))?;
        sync_directory(&self.directory)
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
}
