//! Keys on this machine: the secret key file (JSON, mode 0600, kept outside
//! the repository), the local list of trusted public keys (one file per key
//! under the config directory's `trusted/`), and public keys given on the
//! command line. Trust comes only from that list or from a key the user pins
//! explicitly, never from a repository. Never signs or verifies anything
//! (that is `format::seal`).

use crate::error::{Result, StoreError};
use crate::format::codec::to_json;
use crate::format::keys::{PublicKey, PublicKeyObject, SigningKey, public_key_of};
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
        .map_err(|error| StoreError::io(format!("writing key file {}", path.display()), error))
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

/// The local list of trusted public keys: `<config dir>/trusted/<hex>`.
pub struct TrustStore {
    directory: PathBuf,
}

impl TrustStore {
    pub fn new(config_directory: &Path) -> Self {
        TrustStore {
            directory: config_directory.join("trusted"),
        }
    }

    pub fn trust(&self, key: PublicKey) -> Result<()> {
        fs::create_dir_all(&self.directory).map_err(|error| {
            StoreError::io(format!("creating {}", self.directory.display()), error)
        })?;
        let path = self.directory.join(key.to_hex());
        fs::write(&path, format!("{}\n", key.to_hex()))
            .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))
    }

    /// Every trusted key; a missing directory means none.
    pub fn trusted_keys(&self) -> Result<Vec<PublicKey>> {
        let entries = match fs::read_dir(&self.directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(StoreError::io(
                    format!("listing {}", self.directory.display()),
                    error,
                ));
            }
        };
        let mut keys = Vec::new();
        for entry in entries.flatten() {
            if let Some(key) = entry.file_name().to_str().and_then(PublicKey::from_hex) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
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
