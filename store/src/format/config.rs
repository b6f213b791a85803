//! [`RepositoryConfig`]: the repository's one configuration object, a JSON
//! document written once by `init` and never changed. Owns its encoding and
//! validation; never reads or writes anything itself.

use crate::error::Result;
use crate::format::codec::{check_version, from_json, to_json};
use crate::format::crypto::{self, EncryptionPublicKey};
use crate::id::Id;
use cairn_chunker::ChunkerParams;
use serde::{Deserialize, Serialize};

pub const CONFIG_NAME: &str = "config";
const FORMAT_NAME: &str = "cairn-repository";
/// Plaintext repositories keep writing version 1; an encrypted one is
/// version 2, so that a cairn from before encryption refuses it outright
/// instead of misreading its objects.
const VERSION: u32 = 1;
const ENCRYPTED_VERSION: u32 = 2;

/// Packs are closed once they reach this size: large enough that object
/// storage sees few, big requests; small enough to repack cheaply.
pub const DEFAULT_PACK_TARGET_SIZE: u64 = 16 * 1024 * 1024;
/// zstd level 1, chosen by measurement (docs/PERFORMANCE.md): on 16 KiB
/// chunks and 4 KiB database pages it compresses 1.3-1.5x faster than level
/// 3 for a repository 0.2-0.4% larger.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// SQLite components are cut into fixed chunks of this many database pages.
/// One page per chunk re-stores the least when a night changes scattered
/// rows (docs/PERFORMANCE.md, "Chunking SQLite databases").
pub const DEFAULT_SQLITE_PAGES_PER_CHUNK: u32 = 1;
/// Bounds on `sqlite_pages_per_chunk`.
pub const MAX_SQLITE_PAGES_PER_CHUNK: u32 = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub format: String,
    pub version: u32,
    pub repository_id: Id,
    pub chunker: ChunkerConfig,
    pub compression: CompressionConfig,
    pub pack_target_size: u64,
    /// SQLite components are cut into fixed-size chunks of this many pages
    /// of the database; absent (repositories made before it existed), they
    /// are cut like any other file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite_pages_per_chunk: Option<u32>,
    /// Present exactly in encrypted repositories (version 2): the scheme
    /// and the public key every writer encrypts to (FORMAT.md 4, 17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
    /// Present in repositories made with `init --object-lock` (FORMAT.md
    /// 4.1): every object is retained by S3 Object Lock at least this long,
    /// and prune waits for retention to end before it deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockConfig>,
}

/// Longest retention `init --object-lock` takes: 100 years.
pub const MAX_LOCK_DAYS: u32 = 36_500;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// `governance` or `compliance`.
    pub mode: String,
    /// Days each object is retained from when it is written or extended,
    /// 1 to [`MAX_LOCK_DAYS`].
    pub days: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Always [`crypto::SCHEME`].
    pub scheme: String,
    /// The encryption public key, 64 hex digits.
    pub public_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerConfig {
    /// Always `fastcdc-v2020`.
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Always `zstd`.
    pub algorithm: String,
    pub level: i32,
}

impl RepositoryConfig {
    pub fn new(repository_id: Id, chunker: ChunkerParams) -> Self {
        RepositoryConfig {
            format: FORMAT_NAME.into(),
            version: VERSION,
            repository_id,
            chunker: ChunkerConfig {
                algorithm: "fastcdc-v2020".into(),
                min_size: chunker.min_size,
                avg_size: chunker.avg_size,
                max_size: chunker.max_size,
            },
            compression: CompressionConfig {
                algorithm: "zstd".into(),
                level: DEFAULT_ZSTD_LEVEL,
            },
            pack_target_size: DEFAULT_PACK_TARGET_SIZE,
            sqlite_pages_per_chunk: Some(DEFAULT_SQLITE_PAGES_PER_CHUNK),
            encryption: None,
            object_lock: None,
        }
    }

    /// Makes this config the one of an encrypted repository whose writers
    /// encrypt to `public_key`.
    pub fn encrypt_to(&mut self, public_key: EncryptionPublicKey) {
        self.version = ENCRYPTED_VERSION;
        self.encryption = Some(EncryptionConfig {
            scheme: crypto::SCHEME.into(),
            public_key: public_key.to_hex(),
        });
    }

    /// Makes this config a plaintext repository's (version 1).
    pub fn plaintext(&mut self) {
        self.version = VERSION;
        self.encryption = None;
    }

    /// The public key writers encrypt to, in an encrypted repository.
    pub fn encryption_public_key(&self) -> Option<EncryptionPublicKey> {
        self.encryption
            .as_ref()
            .and_then(|encryption| EncryptionPublicKey::from_hex(&encryption.public_key))
    }

    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Decodes and validates; every field a writer relies on is checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let object = "repository config";
        let config: RepositoryConfig = from_json(bytes, object)?;
        let refuse = |reason: String| Err(crate::error::StoreError::corrupt(object, reason));
        if config.format != FORMAT_NAME {
            return refuse(format!(
                "format is {:?}, not {FORMAT_NAME:?}",
                config.format
            ));
        }
        match &config.encryption {
            None => check_version(config.version, VERSION, object)?,
            Some(encryption) => {
                check_version(config.version, ENCRYPTED_VERSION, object)?;
                if encryption.scheme != crypto::SCHEME {
                    return refuse(format!(
                        "unknown encryption scheme {:?} (this cairn knows {:?})",
                        encryption.scheme,
                        crypto::SCHEME
                    ));
                }
                if encryption.public_key.len() != 64
                    || EncryptionPublicKey::from_hex(&encryption.public_key).is_none()
                {
                    return refuse(format!(
                        "encryption public key {:?} is not 64 hex digits",
                        encryption.public_key
                    ));
                }
            }
        }
        if config.chunker.algorithm != "fastcdc-v2020" {
            return refuse(format!("unknown chunker {:?}", config.chunker.algorithm));
        }
        config.chunker_params()?;
        if config.compression.algorithm != "zstd" || !(1..=19).contains(&config.compression.level) {
            return refuse(format!(
                "unsupported compression {:?} level {}",
                config.compression.algorithm, config.compression.level
            ));
        }
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&config.pack_target_size) {
            return refuse(format!(
                "pack target size {} is outside 1 MiB..=1 GiB",
                config.pack_target_size
            ));
        }
        if let Some(lock) = &config.object_lock
            && (!["governance", "compliance"].contains(&lock.mode.as_str())
                || !(1..=MAX_LOCK_DAYS).contains(&lock.days))
        {
            return refuse(format!(
                "object lock {:?} for {} days: the mode must be governance or compliance, the \
                 days 1 to {MAX_LOCK_DAYS}",
                lock.mode, lock.days
            ));
        }
        if let Some(pages) = config.sqlite_pages_per_chunk
            && !(1..=MAX_SQLITE_PAGES_PER_CHUNK).contains(&pages)
        {
            return refuse(format!(
                "sqlite_pages_per_chunk {pages} is outside 1..={MAX_SQLITE_PAGES_PER_CHUNK}"
            ));
        }
        Ok(config)
    }

    pub fn chunker_params(&self) -> Result<ChunkerParams> {
        Ok(ChunkerParams::new(
            self.chunker.min_size,
            self.chunker.avg_size,
            self.chunker.max_size,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_documents() {
        let config = RepositoryConfig::new(Id::of(b"x"), ChunkerParams::DEFAULT);
        assert_eq!(RepositoryConfig::decode(&config.encode()).unwrap(), config);
        assert!(RepositoryConfig::decode(b"{}").is_err());
        let mut odd = config.clone();
        odd.chunker.avg_size = 3;
        assert!(RepositoryConfig::decode(&odd.encode()).is_err());
        let mut lock = config.clone();
        lock.object_lock = Some(ObjectLockConfig {
            mode: "compliance".into(),
            days: 30,
        });
        assert_eq!(RepositoryConfig::decode(&lock.encode()).unwrap(), lock);
        lock.object_lock.as_mut().unwrap().mode = "forever".into();
        assert!(RepositoryConfig::decode(&lock.encode()).is_err());
        let mut pages = config.clone();
        pages.sqlite_pages_per_chunk = Some(0);
        assert!(RepositoryConfig::decode(&pages.encode()).is_err());
    }

    #[test]
    fn encrypted_configs_are_version_2_and_name_a_valid_key() {
        let mut config = RepositoryConfig::new(Id::of(b"x"), ChunkerParams::DEFAULT);
        config.encrypt_to(EncryptionPublicKey([7; 32]));
        let encoded = config.encode();
        assert_eq!(RepositoryConfig::decode(&encoded).unwrap(), config);
        assert_eq!(config.version, 2);
        assert_eq!(
            config.encryption_public_key(),
            Some(EncryptionPublicKey([7; 32]))
        );
        // Version 1 with encryption, version 2 without, or a bad key or
        // scheme: refused.
        let mut wrong = config.clone();
        wrong.version = 1;
        assert!(RepositoryConfig::decode(&wrong.encode()).is_err());
        let mut plain = RepositoryConfig::new(Id::of(b"x"), ChunkerParams::DEFAULT);
        plain.version = 2;
        assert!(RepositoryConfig::decode(&plain.encode()).is_err());
        let mut key = config.clone();
        key.encryption.as_mut().unwrap().public_key = "zz".repeat(32);
        assert!(RepositoryConfig::decode(&key.encode()).is_err());
        let mut scheme = config;
        scheme.encryption.as_mut().unwrap().scheme = "rot13".into();
        assert!(RepositoryConfig::decode(&scheme.encode()).is_err());
    }

    #[test]
    fn configs_without_sqlite_pages_still_read() {
        let mut config = RepositoryConfig::new(Id::of(b"x"), ChunkerParams::DEFAULT);
        config.sqlite_pages_per_chunk = None;
        let encoded = config.encode();
        assert!(!String::from_utf8_lossy(&encoded).contains("sqlite"));
        assert_eq!(RepositoryConfig::decode(&encoded).unwrap(), config);
    }
}
