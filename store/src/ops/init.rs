//! Creating a repository, in the one order that never leaves a repository
//! without its secret key: check that the target holds no repository (and,
//! for a directory, is new or empty), make or read the signing key, write
//! the repository (public key first, config last), then trust the key on
//! this machine for this repository only. Never prints, never chooses defaults for the caller.

use crate::backend::{Backend, ObjectKind};
use crate::error::{Result, StoreError};
use crate::format::config::{ObjectLockConfig, RepositoryConfig};
use crate::format::crypto::RepositoryKeys;
use crate::format::keys::{PublicKey, generate_signing_key, public_key_of};
use crate::format::keyslot::{KdfParams, KeySlot, SlotPayload};
use crate::keystore::{TrustStore, default_key_path, read_secret_key, write_secret_key};
use crate::ops::unlock::store_key_slot;
use crate::repository::Repository;
use cairn_chunker::ChunkerParams;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which signing key the new repository publishes.
pub enum KeyChoice {
    /// The key file at this path, which exists.
    Existing(PathBuf),
    /// A new key, written to this path.
    NewAt(PathBuf),
    /// A new key, written to the config directory's `keys/<public key>.key`.
    NewInConfigDirectory,
}

/// How the repository cuts and stores files.
pub enum Settings<'a> {
    /// Exactly as another repository does, so copies stay deduplicated.
    Like(&'a RepositoryConfig),
    Fresh {
        chunker: ChunkerParams,
        compression_level: i32,
    },
}

/// Whether the new repository is encrypted, and how its keys are wrapped
/// for the first holder (FORMAT.md 17.5).
pub enum Encryption<'a> {
    /// No encryption: blobs named by plain BLAKE3, objects stored as they
    /// are (config version 1).
    Plaintext,
    /// Fresh keys, in one key slot wrapped under this passphrase.
    Passphrase {
        passphrase: &'a [u8],
        kdf: KdfParams,
    },
    /// Fresh keys, in one key slot wrapped for this X25519 public key.
    Recipient([u8; 32]),
}

pub struct InitOptions<'a> {
    pub backend: Arc<dyn Backend>,
    /// The repository's directory, when it is local: it must be new or empty.
    pub local_path: Option<&'a Path>,
    /// Where `location` is shown in messages.
    pub location: &'a str,
    pub settings: Settings<'a>,
    pub key: KeyChoice,
    /// The directory of keys and trusted keys on this machine.
    pub config_directory: &'a Path,
    pub encryption: Encryption<'a>,
    /// With `--like` an encrypted repository: its keys, whose id key the
    /// new repository shares (blobs named alike in both).
    pub like_keys: Option<&'a RepositoryKeys>,
    /// Recorded in the config (FORMAT.md 4.1); the caller has set up the
    /// bucket's Object Lock already.
    pub object_lock: Option<ObjectLockConfig>,
}

pub struct Initialised {
    pub repository: Repository,
    pub public_key: PublicKey,
    pub key_path: PathBuf,
    pub key_created: bool,
}

pub fn init(options: InitOptions) -> Result<Initialised> {
    check_target(&options)?;
    // The key is made (or read) before the repository, so that a
    // repository never exists without its secret key somewhere.
    let (key, key_path, key_created) = match options.key {
        KeyChoice::Existing(path) => (read_secret_key(&path)?, path, false),
        KeyChoice::NewAt(path) => {
            let key = generate_signing_key()?;
            write_secret_key(&path, &key)?;
            (key, path, true)
        }
        KeyChoice::NewInConfigDirectory => {
            let key = generate_signing_key()?;
            let path = default_key_path(options.config_directory, &public_key_of(&key));
            write_secret_key(&path, &key)?;
            (key, path, true)
        }
    };
    let public_key = public_key_of(&key);
    // The key slot is written before the config: an encrypted repository
    // never exists without a way to open it.
    let keys = match &options.encryption {
        Encryption::Plaintext => None,
        Encryption::Passphrase { passphrase, kdf } => {
            let keys = fresh_keys(options.like_keys)?;
            let mut payload = SlotPayload::of(&keys, Some(public_key), "owner", &now());
            payload.endorse(&key);
            let slot = KeySlot::wrap_with_passphrase(&payload, passphrase, *kdf)?;
            store_key_slot(options.backend.as_ref(), &slot)?;
            Some(keys)
        }
        Encryption::Recipient(recipient) => {
            let keys = fresh_keys(options.like_keys)?;
            let mut payload = SlotPayload::of(&keys, Some(public_key), "owner", &now());
            payload.endorse(&key);
            let slot = KeySlot::wrap_for_recipient(&payload, recipient)?;
            store_key_slot(options.backend.as_ref(), &slot)?;
            Some(keys)
        }
    };
    let repository = match (options.settings, options.object_lock) {
        (Settings::Like(like), lock) => {
            let config = RepositoryConfig {
                object_lock: lock,
                ..like.clone()
            };
            Repository::init_like(options.backend, &config, public_key, keys.as_ref())?
        }
        (
            Settings::Fresh {
                chunker,
                compression_level,
            },
            Some(lock),
        ) => {
            // The id is replaced by init_like; everything else is kept.
            let mut config = RepositoryConfig::new(crate::id::Id([0; 32]), chunker);
            config.compression.level = compression_level;
            config.object_lock = Some(lock);
            Repository::init_like(options.backend, &config, public_key, keys.as_ref())?
        }
        (
            Settings::Fresh {
                chunker,
                compression_level,
            },
            None,
        ) => Repository::init(
            options.backend,
            chunker,
            compression_level,
            public_key,
            keys.as_ref(),
        )?,
    };
    // Trusted for this repository only: a key made for one repository
    // vouches for nothing in another.
    TrustStore::new(options.config_directory, repository.id()).trust(public_key)?;
    Ok(Initialised {
        repository,
        public_key,
        key_path,
        key_created,
    })
}

/// New key material, sharing the id key of the `--like` repository if it
/// is encrypted.
fn fresh_keys(like: Option<&RepositoryKeys>) -> Result<RepositoryKeys> {
    match like {
        Some(like) => RepositoryKeys::generate_sharing_id_key(Repository::new_id()?, like),
        None => RepositoryKeys::generate(Repository::new_id()?),
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The first request: a repository already there (or, for object storage,
/// a missing bucket or bad credentials) shows here, before a key is made.
fn check_target(options: &InitOptions) -> Result<()> {
    let already = |path: String| StoreError::AlreadyARepository { path };
    match options.local_path {
        Some(path) => {
            if !path.exists() {
                return Ok(());
            }
            if !options.backend.list(ObjectKind::Config)?.is_empty() {
                return Err(already(path.display().to_string()));
            }
            let empty = std::fs::read_dir(path)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(StoreError::Invalid(format!(
                    "{} exists and is not empty; give a new or empty directory",
                    path.display()
                )));
            }
            Ok(())
        }
        None => {
            if options.backend.list(ObjectKind::Config)?.is_empty() {
                Ok(())
            } else {
                Err(already(options.location.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    fn options<'a>(root: &'a Path, config: &'a Path, key: KeyChoice) -> InitOptions<'a> {
        InitOptions {
            backend: Arc::new(LocalBackend::new(root)),
            local_path: Some(root),
            location: "test",
            settings: Settings::Fresh {
                chunker: ChunkerParams::new(4096, 16384, 65536).unwrap(),
                compression_level: 1,
            },
            key,
            config_directory: config,
            encryption: Encryption::Plaintext,
            like_keys: None,
            object_lock: None,
        }
    }

    #[test]
    fn a_new_repository_publishes_a_new_trusted_key_kept_in_the_config_directory() {
        let scratch = tempfile::tempdir().unwrap();
        let (root, config) = (scratch.path().join("repo"), scratch.path().join("config"));
        let made = init(options(&root, &config, KeyChoice::NewInConfigDirectory)).unwrap();
        assert!(made.key_created);
        assert_eq!(made.key_path, default_key_path(&config, &made.public_key));
        assert_eq!(
            public_key_of(&read_secret_key(&made.key_path).unwrap()),
            made.public_key
        );
        let trust = TrustStore::new(&config, made.repository.id());
        assert_eq!(
            trust.trusted_keys().unwrap(),
            crate::keystore::TrustedKeys {
                keys: vec![made.public_key],
                legacy: false
            }
        );
        let elsewhere = TrustStore::new(&config, &crate::id::Id([0; 32]));
        assert!(elsewhere.trusted_keys().unwrap().keys.is_empty());
        assert_eq!(
            made.repository.published_keys().unwrap(),
            vec![made.public_key]
        );
    }

    #[test]
    fn an_existing_repository_or_a_non_empty_directory_is_refused_before_any_key_is_made() {
        let scratch = tempfile::tempdir().unwrap();
        let (root, config) = (scratch.path().join("repo"), scratch.path().join("config"));
        init(options(&root, &config, KeyChoice::NewInConfigDirectory)).unwrap();
        let keys_before = std::fs::read_dir(config.join("keys")).unwrap().count();
        let again = init(options(&root, &config, KeyChoice::NewInConfigDirectory));
        assert!(matches!(again, Err(StoreError::AlreadyARepository { .. })));
        let other = scratch.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("file"), b"x").unwrap();
        let error = init(options(&other, &config, KeyChoice::NewInConfigDirectory))
            .err()
            .unwrap();
        assert!(error.to_string().contains("is not empty"), "{error}");
        assert_eq!(
            std::fs::read_dir(config.join("keys")).unwrap().count(),
            keys_before,
            "no key was made for a refused init"
        );
    }
}
