//! Resolving where things are: the repository, the config and cache
//! directories, the signing key and the trusted keys. Owns the defaults and
//! the messages when something is missing; never runs an operation.

use crate::args::GlobalArgs;
use anyhow::{Context as _, Result, anyhow, bail};
use cairn_store::backend::{
    AsOfBackend, Backend, HttpBackend, HttpOptions, NoDeleteBackend, RateLimits, S3Backend,
    S3Location, S3Options, open_backend_limited, parse_as_of, redact_location,
};
use cairn_store::format::keys::{PublicKey, SigningKey};
use cairn_store::index::{OpenedIndex, open_index};
use cairn_store::keystore::{
    LocationPins, TrustStore, parse_public_key_argument, read_secret_key_unlocking,
};
use cairn_store::{Repository, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The legacy-trust warning is said once per command.
static LEGACY_TRUST_WARNED: AtomicBool = AtomicBool::new(false);

pub struct Context {
    pub global: GlobalArgs,
}

/// A run's private staging directory (see [`Context::staging_directory`]):
/// removed when dropped, and the cache's `staging/` with it once empty.
pub struct Staging {
    directory: Option<tempfile::TempDir>,
    parent: Option<PathBuf>,
}

impl Staging {
    pub fn path(&self) -> Option<&Path> {
        self.directory.as_ref().map(|directory| directory.path())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        drop(self.directory.take());
        if let Some(parent) = &self.parent {
            cairn_store::private::remove_if_empty(parent);
        }
    }
}

impl Context {
    /// Every repository given, in order: directories or
    /// `s3://BUCKET/PREFIX`; at least one.
    pub fn repository_locations(&self) -> Result<&[String]> {
        if self.global.repo.is_empty() {
            return Err(Usage(
                "no repository given: use --repo PATH (or s3://BUCKET/PREFIX) or set CAIRN_REPO"
                    .into(),
            )
            .into());
        }
        if let Some(empty) = self.global.repo.iter().position(String::is_empty) {
            return Err(Usage(format!("--repo number {} is empty", empty + 1)).into());
        }
        // Every S3 location is checked before any is used: one that would
        // carry a secret is refused here (its message redacted), so the
        // locations printed later (per-repository results, metrics labels)
        // hold none.
        for location in self.global.repo.iter().filter(|location| is_s3(location)) {
            S3Location::parse(location)?;
        }
        Ok(&self.global.repo)
    }

    /// The one repository a command works on; more than one is a usage
    /// error for every command but backup, restore and verify.
    pub fn repository_location(&self) -> Result<&str> {
        match self.repository_locations()? {
            [one] => Ok(one),
            many => Err(Usage(format!(
                "this command works on one repository, but --repo was given {} times (only backup, restore and verify take several)",
                many.len()
            ))
            .into()),
        }
    }

    /// The repository's directory, if it is a local one.
    pub fn local_repository(&self) -> Result<Option<&Path>> {
        let location = self.repository_location()?;
        Ok((!is_remote(location)).then(|| Path::new(location)))
    }

    fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.global.s3_endpoint.clone(),
        }
    }

    /// The backend for `location` with this command line's options: a
    /// served repository signs its requests with this host's key; read as
    /// of `--as-of` (read-only); deletes refused with `--no-delete`;
    /// transfers held to `--limit-upload`/`--limit-download`.
    pub fn backend_at(&self, location: &str) -> Result<Arc<dyn Backend>> {
        let limits = RateLimits {
            upload: self.global.limit_upload,
            download: self.global.limit_download,
        };
        let backend: Arc<dyn Backend> = match &self.global.as_of {
            Some(time) => Arc::new(AsOfBackend::open(
                self.s3_backend_at(location, "--as-of")?,
                parse_as_of(time)?,
            )?),
            None if cairn_store::backend::is_served(location) => self.served_backend(location)?,
            None => open_backend_limited(location, &self.s3_options(), limits)?,
        };
        Ok(match self.global.no_delete {
            true => Arc::new(NoDeleteBackend::new(backend)),
            false => backend,
        })
    }

    /// A repository a `cairn serve` serves: its requests are signed with
    /// --key-file, or the config directory's one signing key. HTTPS trusts
    /// the system's roots and the PEM certificates in the file
    /// CAIRN_SERVER_CA_FILE names.
    fn served_backend(&self, location: &str) -> Result<Arc<dyn Backend>> {
        let key_path = match &self.global.key_file {
            Some(path) => path.clone(),
            None => {
                let directory = self.config_dir()?.join("keys");
                let mut keys: Vec<PathBuf> = std::fs::read_dir(&directory)
                    .map(|entries| {
                        entries
                            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                            .filter(|path| path.extension().is_some_and(|ext| ext == "key"))
                            .collect()
                    })
                    .unwrap_or_default();
                match keys.len() {
                    1 => keys.remove(0),
                    0 => bail!(
                        "repository {location}: requests to a served repository are signed with this host's key, and {} holds none: give --key-file (or `cairn key host-init` first)",
                        directory.display()
                    ),
                    many => bail!(
                        "repository {location}: {} holds {many} signing keys; say which signs requests with --key-file",
                        directory.display()
                    ),
                }
            }
        };
        let key = self.read_signing_key(&key_path)?;
        let extra_root_certificates =
            match std::env::var_os("CAIRN_SERVER_CA_FILE") {
                Some(path) => Some(std::fs::read(&path).with_context(|| {
                    format!("CAIRN_SERVER_CA_FILE {}", Path::new(&path).display())
                })?),
                None => None,
            };
        let options = HttpOptions {
            extra_root_certificates,
            ..HttpOptions::default()
        };
        Ok(Arc::new(HttpBackend::open(location, key, &options)?))
    }

    /// The S3 backend itself, for what only S3 does (versions, Object
    /// Lock); `what` names the flag or command that needs it.
    pub fn s3_backend_at(&self, location: &str, what: &str) -> Result<S3Backend> {
        if !is_s3(location) {
            return Err(Usage(format!(
                "{what} works on s3:// repositories (in a versioned bucket); {location} is not one"
            ))
            .into());
        }
        Ok(S3Backend::open(
            S3Location::parse(location)?,
            &self.s3_options(),
        )?)
    }

    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        self.backend_at(self.repository_location()?)
    }

    pub fn open_repository(&self) -> Result<Repository> {
        self.open_repository_at(self.repository_location()?)
    }

    /// Opens the repository a command names by a location string rather
    /// than `--repo` (`copy --from/--to`, `init --like`). The one place
    /// that turns such a string into a backend: today a local directory.
    pub fn open_repository_at(&self, location: &str) -> Result<Repository> {
        if location.is_empty() {
            bail!("empty repository location");
        }
        // The backend first: it names a location it cannot use at all.
        let backend = self.backend_at(location)?;
        if !is_remote(location) {
            let path = Path::new(location);
            if path.exists() && !path.is_dir() {
                return Err(anyhow::Error::new(StoreError::NotARepository {
                    path: location.into(),
                })
                .context(format!(
                    "--repo {location} is a file, not a repository directory"
                )));
            }
            if !path.exists() {
                bail!("repository {location} does not exist");
            }
        }
        let mut repository = Repository::open(backend)
            .with_context(|| format!("opening repository {}", redact_location(location)))?;
        LocationPins::new(&self.config_dir()?).check(&pin_key(location), repository.id())?;
        // Only a hint of what to fetch while a passphrase's key is derived:
        // a cache directory that cannot be named costs nothing here.
        let local_cache = self.repository_cache(&repository).ok().flatten();
        crate::credentials::unlock(
            &self.global,
            &self.config_dir()?,
            local_cache.as_deref(),
            &mut repository,
        )?;
        Ok(repository)
    }

    /// Records that `location` now holds `repository` (after `init`).
    pub fn pin_location(&self, location: &str, repository: &Repository) -> Result<()> {
        LocationPins::new(&self.config_dir()?).pin(&pin_key(location), repository.id())?;
        Ok(())
    }

    pub fn config_dir(&self) -> Result<PathBuf> {
        if let Some(directory) = &self.global.config_dir {
            return Ok(directory.clone());
        }
        dirs::config_dir()
            .map(|directory| directory.join("cairn"))
            .ok_or_else(|| anyhow!("cannot find a config directory: set CAIRN_CONFIG_DIR"))
    }

    /// The cache directory: --cache-dir, or the user's cache directory's
    /// `cairn`.
    fn cache_base(&self) -> Result<PathBuf> {
        match &self.global.cache_dir {
            Some(directory) => Ok(directory.clone()),
            None => dirs::cache_dir()
                .map(|directory| directory.join("cairn"))
                .ok_or_else(|| {
                    anyhow!("cannot find a cache directory: set CAIRN_CACHE_DIR or pass --no-cache")
                }),
        }
    }

    /// A private directory (0700) for this run's staging files (copies of
    /// databases, commands' output) under the cache directory's
    /// `staging/`, removed when dropped and when cairn is interrupted.
    /// Without a cache directory (--no-cache and none to be found), one in
    /// the system's temporary directory, as private.
    pub fn staging_directory(&self) -> Result<Staging> {
        let (directory, parent) = match self.cache_base() {
            Ok(base) => {
                let parent = base.join("staging");
                let directory = cairn_store::private::private_directory_in(&parent, "run-")?;
                (directory, Some(parent))
            }
            Err(_) => (
                cairn_store::private::private_temporary_directory("cairn-staging-")?,
                None,
            ),
        };
        crate::interrupt::remove_on_interrupt(directory.path().to_path_buf());
        Ok(Staging {
            directory: Some(directory),
            parent,
        })
    }

    /// Where this host keeps the journals of the restores it made (the
    /// config directory's `restore-journals/`, private): `undo-restore`
    /// acts only on a journal found there.
    pub fn journal_directory(&self) -> Result<PathBuf> {
        Ok(self.config_dir()?.join("restore-journals"))
    }

    /// Secret key files a backup must never store: the config directory's
    /// `keys/` and `identities/`, and the --key-file given.
    pub fn secret_key_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .config_dir()
            .ok()
            .map(|config| vec![config.join("keys"), config.join("identities")])
            .unwrap_or_default();
        paths.extend(self.global.key_file.clone());
        paths
    }

    /// This machine's cache directory for `repository`, unless --no-cache.
    fn repository_cache(&self, repository: &Repository) -> Result<Option<PathBuf>> {
        if self.global.no_cache {
            return Ok(None);
        }
        Ok(Some(
            self.cache_base()?
                .join(repository.config().repository_id.to_hex()),
        ))
    }

    /// Where this machine remembers the newest snapshots it has seen of
    /// `repository` (roll-back detection); none with --no-cache.
    pub fn rollback_memory(&self, repository: &Repository) -> Result<Option<PathBuf>> {
        Ok(self
            .repository_cache(repository)?
            .map(|directory| directory.join(cairn_store::ops::rollback::MEMORY_FILE)))
    }

    /// Where this machine keeps its walk cache for `repository` (its own
    /// last backups' trees and manifests, FORMAT.md 14.9); none with
    /// --no-cache.
    pub fn walk_cache(&self, repository: &Repository) -> Result<Option<PathBuf>> {
        Ok(self
            .repository_cache(repository)?
            .map(|directory| directory.join("walk")))
    }

    fn cache_path(&self, repository: &Repository) -> Result<Option<PathBuf>> {
        let Some(for_repository) = self.repository_cache(repository)? else {
            return Ok(None);
        };
        remove_outdated_caches(&for_repository);
        // Each cache layout has its own directory, so a cairn of another
        // layout never reads it.
        Ok(Some(for_repository.join(CACHE_LAYOUT)))
    }

    /// The keys whose sealed index files are vouched for (FORMAT.md
    /// section 9): the trusted keys, or none where none are set up (then
    /// every index entry is only a hint: backups store every chunk again
    /// and prunes keep what they cannot prove has a copy).
    pub fn index_vouchers(&self, repository: &Repository) -> Vec<PublicKey> {
        self.trusted_keys_or_none(repository).unwrap_or_default()
    }

    /// The index, synchronised; notices about the cache, and index files
    /// that were skipped as unreadable, go to stderr.
    pub fn open_index(&self, repository: &Repository) -> Result<OpenedIndex> {
        let cache = self.cache_path(repository)?;
        let opened = open_index(
            repository,
            cache.as_deref(),
            &self.index_vouchers(repository),
        )?;
        for notice in &opened.notices {
            eprintln!("cairn: {notice}");
        }
        Ok(opened)
    }

    /// Where `init` puts the secret key for `public`, unless --key-file says.
    pub fn default_key_path(&self, public: &PublicKey) -> Result<PathBuf> {
        Ok(cairn_store::keystore::default_key_path(
            &self.config_dir()?,
            public,
        ))
    }

    /// The signing key for backups: --key-file, or the config directory's
    /// key for one of the repository's published keys. It must be one of
    /// the repository's keys.
    pub fn signing_key(&self, repository: &Repository) -> Result<SigningKey> {
        let published = repository.published_keys()?;
        let key = match &self.global.key_file {
            Some(path) => self.read_signing_key(path)?,
            None => {
                let mut found = None;
                for public in &published {
                    let path = self.default_key_path(public)?;
                    if path.exists() {
                        found = Some(self.read_signing_key(&path)?);
                        break;
                    }
                }
                match (found, published.first()) {
                    (Some(key), _) => key,
                    (None, Some(public)) => {
                        return Err(StoreError::KeyMissing(self.default_key_path(public)?).into());
                    }
                    (None, None) => bail!(
                        "repository {} publishes no signing key",
                        repository.backend().location()
                    ),
                }
            }
        };
        let public = cairn_store::format::keys::public_key_of(&key);
        if !published.contains(&public) {
            bail!(
                "key {} (public key {}) is not a signing key of repository {}",
                self.global
                    .key_file
                    .as_deref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
                public.to_hex(),
                repository.backend().location()
            );
        }
        Ok(key)
    }

    /// Reads a signing key file; one sealed under a passphrase (`key
    /// host-init --protect`, `key passwd --signing-key`) is opened with
    /// CAIRN_KEY_PASSWORD, else the repository's passphrase sources.
    pub fn read_signing_key(&self, path: &Path) -> Result<SigningKey> {
        Ok(read_secret_key_unlocking(path, || {
            if let Some(value) = std::env::var_os("CAIRN_KEY_PASSWORD") {
                use std::os::unix::ffi::OsStringExt;
                return Ok(value.into_vec());
            }
            crate::credentials::passphrase(&self.global, &format!("key file {}", path.display()))
                .map(|passphrase| passphrase.bytes().to_vec())
                .map_err(|error| StoreError::Invalid(format!("{error:#}")))
        })?)
    }

    /// Keys whose signatures are accepted in `repository`: --trusted-key
    /// if given, else this machine's list for that repository. Never the
    /// repository's own word.
    pub fn trusted_keys(&self, repository: &Repository) -> Result<Vec<PublicKey>> {
        let keys = self.trusted_keys_or_none(repository)?;
        if keys.is_empty() {
            bail!(
                "no trusted keys for repository {} in {}: pin the repository's public key with --trusted-key HEX, or for good with `cairn --repo {} trust HEX`",
                repository.backend().location(),
                TrustStore::new(&self.config_dir()?, repository.id())
                    .directory()
                    .display(),
                repository.backend().location(),
            );
        }
        Ok(keys)
    }

    /// [`Context::trusted_keys`] for restoring `spec`: a snapshot named by
    /// id that a revoked key signed is trusted when the keyring kept it.
    pub fn trusted_keys_for_snapshot(
        &self,
        repository: &Repository,
        spec: &str,
        mut trusted: Vec<PublicKey>,
    ) -> Result<Vec<PublicKey>> {
        if spec == "latest" {
            return Ok(trusted);
        }
        let Some(keyring) = crate::commands::keyring_trust(self, repository)? else {
            return Ok(trusted);
        };
        let Ok(id) = repository.resolve_snapshot(spec, &trusted) else {
            return Ok(trusted);
        };
        if let Ok(manifest) = repository.read_manifest(&id) {
            let signer = manifest.signer();
            if keyring.keeps(&signer, &id) && !trusted.contains(&signer) {
                trusted.push(signer);
            }
        }
        Ok(trusted)
    }

    /// The keys `--trusted-key` pins, if any were given: then they are the
    /// only trust roots, the local list and the slot's owner aside.
    pub fn pinned_keys(&self) -> Result<Option<Vec<PublicKey>>> {
        if self.global.trusted_keys.is_empty() {
            return Ok(None);
        }
        let keys = self
            .global
            .trusted_keys
            .iter()
            .map(|argument| {
                parse_public_key_argument(argument)
                    .with_context(|| format!("--trusted-key {argument}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(keys))
    }

    /// As [`Context::trusted_keys`], where no key is no error (a listing
    /// only reports trust).
    pub fn trusted_keys_or_none(&self, repository: &Repository) -> Result<Vec<PublicKey>> {
        if let Some(pinned) = self.pinned_keys()? {
            // The pinned keys are the only roots: the keyring adds the
            // writers it lists only when its chain starts at one of them
            // (FORMAT.md 17.7), so the owner's public key is all a
            // restore machine needs.
            return Ok(match crate::commands::keyring_trust(self, repository)? {
                Some(keyring) => keyring.trusted(&pinned),
                None => pinned,
            });
        }
        let store = TrustStore::new(&self.config_dir()?, repository.id());
        let mut trusted = store.trusted_keys()?;
        // The owner named by the key slot that opened the repository.
        for owner in crate::credentials::slot_owners(repository.id()) {
            if !trusted.keys.contains(&owner) {
                trusted.keys.push(owner);
            }
        }
        // An encrypted repository's keyring adds its writers and takes
        // away what it revokes, the owner's key too (FORMAT.md 17.7).
        if let Some(keyring) = crate::commands::keyring_trust(self, repository)? {
            trusted.keys = keyring.trusted(&trusted.keys);
        }
        if trusted.legacy && !LEGACY_TRUST_WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "cairn: warning: repository {location} has no list of trusted keys of its own, so the {} key(s) in {} (trusted for every repository by an older cairn) are used; pin this repository's own with `cairn --repo {location} trust HEX` (then only those are trusted for it)",
                trusted.keys.len(),
                store.legacy_directory().display(),
                location = repository.backend().location(),
            );
        }
        Ok(trusted.keys)
    }
}

/// A mistake in how cairn was called (exit code 2, as for clap's own).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

impl Usage {
    /// A usage error about `flag`'s value: `--FLAG VALUE: why`.
    pub fn flag(flag: &str, value: &str, why: impl std::fmt::Display) -> anyhow::Error {
        Usage(format!("{flag} {value:?}: {why}")).into()
    }

    /// The flag at fault: the first `--word` the message names, if any
    /// (every usage message about a flag's value starts with it).
    pub fn object(&self) -> Option<String> {
        self.0
            .split(|c: char| c.is_whitespace() || c == ':' || c == ',' || c == '=')
            .find(|word| word.starts_with("--") && word.len() > 2)
            .map(str::to_string)
    }
}

/// How a location is named in its pin: a directory by its canonical path
/// (so `./repo` and `/home/me/repo` are one location), object storage by
/// bucket, prefix and the service its location names (`region=`,
/// `profile=` and the other settings say how to reach it, not which
/// repository it is).
fn pin_key(location: &str) -> String {
    if is_s3(location) {
        return S3Location::parse(location)
            .map(|parsed| parsed.identity())
            .unwrap_or_else(|_| location.to_string());
    }
    if is_remote(location) {
        return location.to_string();
    }
    std::fs::canonicalize(location)
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| location.to_string())
}

/// Whether a repository location names object storage rather than a
/// directory.
pub fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

/// Whether a repository location is on another machine: object storage,
/// or a repository a `cairn serve` serves.
pub fn is_remote(location: &str) -> bool {
    is_s3(location) || cairn_store::backend::is_served(location)
}

/// The index cache's directory under a repository's cache directory.
const CACHE_LAYOUT: &str = "index.v4";
/// Layouts of earlier cairn versions: `index` held blob locations in sled,
/// `index.v2` run records without frame offsets, `index.v3` without
/// whether each location is vouched for. This cairn never reads them, and
/// left behind they would hold tens of megabytes per repository for good.
const OUTDATED_CACHE_LAYOUTS: [&str; 3] = ["index", "index.v2", "index.v3"];

/// Removes caches of earlier layouts. Best effort: a cache is only a copy
/// of the repository's index, and one that cannot be removed now costs
/// nothing but space.
fn remove_outdated_caches(for_repository: &Path) {
    for layout in OUTDATED_CACHE_LAYOUTS {
        let _ = std::fs::remove_dir_all(for_repository.join(layout));
    }
}
