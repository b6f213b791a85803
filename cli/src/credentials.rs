//! Passphrases and key-derivation cost: where a passphrase comes from
//! (`--password-file`/`CAIRN_PASSWORD_FILE`, `--password-command`/
//! `CAIRN_PASSWORD_COMMAND`, `CAIRN_PASSWORD`, else a prompt on the
//! terminal), the Argon2id cost of new key slots, and opening an encrypted
//! repository with them (FORMAT.md 17.5).
//!
//! A passphrase is never taken from the command line itself (argv is
//! visible to every user of the machine), never printed, and wiped from
//! memory when dropped. This module never decides what a command does with
//! a repository once it is open.

use crate::args::GlobalArgs;
use anyhow::{Context as _, Result, anyhow, bail};
use cairn_store::Repository;
use cairn_store::format::keys::PublicKey;
use cairn_store::format::keyslot::KdfParams;
use cairn_store::format::keyslot::SlotPayload;
use cairn_store::id::Id;
use cairn_store::ops::unlock::{list_key_slots, prefetch_until, unlock_with_passphrase};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use zeroize::Zeroize;

/// Bytes wiped when dropped.
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The passphrase asked once per run (a backup to several repositories or
/// a copy opens more than one with it).
static REMEMBERED: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// Owners named by the key slots this run opened, per repository: trusted
/// for that repository in addition to the local trusted list.
static OWNERS: Mutex<Vec<(Id, PublicKey)>> = Mutex::new(Vec::new());

/// The key slot each repository was opened with in this run, and its
/// payload (`cairn key` shows it and builds new slots from it).
static OPENED: Mutex<Vec<(Id, Id, SlotPayload)>> = Mutex::new(Vec::new());

/// The passphrase of an existing repository.
pub fn passphrase(global: &GlobalArgs, purpose: &str) -> Result<Passphrase> {
    if let Ok(remembered) = REMEMBERED.lock()
        && let Some(bytes) = remembered.as_ref()
    {
        return Ok(Passphrase(bytes.clone()));
    }
    let passphrase = read_passphrase(global, purpose, false)?;
    if let Ok(mut remembered) = REMEMBERED.lock() {
        *remembered = Some(passphrase.0.clone());
    }
    Ok(passphrase)
}

/// A passphrase for a new key slot: typed twice at a prompt.
pub fn new_passphrase(global: &GlobalArgs, purpose: &str) -> Result<Passphrase> {
    read_passphrase(global, purpose, true)
}

fn read_passphrase(global: &GlobalArgs, purpose: &str, confirm: bool) -> Result<Passphrase> {
    let passphrase = if let Some(path) = &global.password_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the passphrase file {}", path.display()))?;
        strip_line_end(bytes)
    } else if let Some(command) = &global.password_command {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running the passphrase command {command:?}"))?;
        if !output.status.success() {
            bail!(
                "the passphrase command {command:?} failed ({}); nothing was opened",
                output.status
            );
        }
        strip_line_end(output.stdout)
    } else if let Some(value) = std::env::var_os("CAIRN_PASSWORD") {
        use std::os::unix::ffi::OsStringExt;
        value.into_vec()
    } else if std::io::stdin().is_terminal() || std::io::stderr().is_terminal() {
        let first = rpassword::prompt_password(format!("passphrase for {purpose}: "))
            .context("reading the passphrase from the terminal")?;
        if confirm {
            let second = rpassword::prompt_password("the same passphrase again: ")
                .context("reading the passphrase from the terminal")?;
            if first != second {
                bail!("the two passphrases typed differ; nothing was created");
            }
        }
        first.into_bytes()
    } else {
        bail!(
            "{purpose} needs a passphrase: set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or \
             CAIRN_PASSWORD_COMMAND (or --password-file / --password-command), or run on a \
             terminal to be asked"
        );
    };
    if passphrase.is_empty() {
        bail!("the passphrase for {purpose} is empty");
    }
    Ok(Passphrase(passphrase))
}

/// A file or command's output without its final line end.
fn strip_line_end(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    bytes
}

/// The Argon2id cost of new passphrase slots: `--kdf-memory MIB` and
/// `--kdf-passes` (or `CAIRN_KDF_MEMORY_MIB`, `CAIRN_KDF_PASSES`), else the
/// default.
pub fn kdf_params(global: &GlobalArgs) -> Result<KdfParams> {
    let mut params = KdfParams::DEFAULT;
    if let Some(mib) = global.kdf_memory {
        params.memory_kib = mib
            .checked_mul(1024)
            .ok_or_else(|| anyhow!("--kdf-memory {mib} MiB is too large"))?;
    }
    if let Some(passes) = global.kdf_passes {
        params.passes = passes;
    }
    params
        .check("the key derivation settings")
        .context("--kdf-memory / --kdf-passes")?;
    Ok(params)
}

/// Opens an encrypted repository: this host's identities
/// (`<config>/identities/`) against its recipient slots first, with no
/// passphrase asked, then the passphrase against its passphrase slots.
/// Remembers the owner the opened slot names and the slot itself. A
/// plaintext repository is left as it is.
///
/// `local_cache` is this host's cache of the repository: its files are
/// fetched from disk while a passphrase's key is derived (see
/// [`open_with_passphrase`]).
pub fn unlock(
    global: &GlobalArgs,
    config: &Path,
    local_cache: Option<&Path>,
    repository: &mut Repository,
) -> Result<()> {
    if !repository.is_encrypted() {
        return Ok(());
    }
    let location = repository.backend().location();
    let (slot, payload) = match open_with_identities(global, config, repository)? {
        Some(opened) => opened,
        None => {
            let passphrase = passphrase(global, &format!("repository {location}"))?;
            open_with_passphrase(repository, local_cache, passphrase.bytes())?
        }
    };
    repository
        .unlock(payload.keys()?)
        .with_context(|| format!("opening repository {location}"))?;
    if let Some(owner) = payload.owner()
        && let Ok(mut owners) = OWNERS.lock()
    {
        owners.push((*repository.id(), owner));
    }
    if let Ok(mut opened) = OPENED.lock() {
        opened.push((*repository.id(), slot, payload));
    }
    Ok(())
}

/// The recipient slot one of this host's identities opens, if any, and
/// only one whose keys an owner this host trusts endorsed (the rule is the
/// library's: `open_with_identities`). Slots passed over are named.
fn open_with_identities(
    global: &GlobalArgs,
    config: &Path,
    repository: &Repository,
) -> Result<Option<(Id, SlotPayload)>> {
    let identities = cairn_store::keystore::identities(config)?;
    if identities.is_empty() {
        return Ok(None);
    }
    // The roots this host holds on its own: `--trusted-key` pins, else its
    // list for this repository (FORMAT.md 14.2); never a slot's word.
    let (roots, roots_are_pins) = if global.trusted_keys.is_empty() {
        let store = cairn_store::keystore::TrustStore::new(config, repository.id());
        (store.trusted_keys()?.keys, false)
    } else {
        let pins = global
            .trusted_keys
            .iter()
            .map(|argument| {
                cairn_store::keystore::parse_public_key_argument(argument)
                    .with_context(|| format!("--trusted-key {argument}"))
            })
            .collect::<Result<Vec<_>>>()?;
        (pins, true)
    };
    let memory = cairn_store::keystore::SlotMemory::new(config, repository.id());
    let Some(opening) = cairn_store::ops::unlock::open_with_identities(
        repository,
        &identities,
        &roots,
        roots_are_pins,
        &memory,
    )?
    else {
        return Ok(None);
    };
    for (_, why) in &opening.passed_over {
        eprintln!("cairn: warning: {why}");
    }
    Ok(Some((opening.slot, opening.payload)))
}

/// The passphrase slot `passphrase` opens, with its id (`unlock_with_passphrase`
/// says why none does). The key is derived while the objects the command
/// reads next are fetched from cold storage on another thread
/// (`prefetch_until`): the derivation keeps both cores busy and the disk
/// idle, so the reads cost no wall time after it. That thread only hints;
/// nothing is read, trusted or acted on before the key is derived, and a
/// wrong passphrase fails exactly as without it.
fn open_with_passphrase(
    repository: &Repository,
    local_cache: Option<&Path>,
    passphrase: &[u8],
) -> Result<(Id, SlotPayload)> {
    let derived = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| prefetch_until(repository, local_cache, &derived));
        let opened = open_passphrase_slot(repository, passphrase);
        derived.store(true, Ordering::Release);
        opened
    })
}

fn open_passphrase_slot(repository: &Repository, passphrase: &[u8]) -> Result<(Id, SlotPayload)> {
    for (id, slot) in list_key_slots(repository)? {
        if let Some(payload) =
            slot.unwrap_with_passphrase(repository.id(), passphrase, &format!("key slot {id}"))?
        {
            return Ok((id, payload));
        }
    }
    Err(unlock_with_passphrase(repository, passphrase)
        .err()
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow!("no key slot opens with this passphrase")))
}

/// The key slot this run opened for `repository` and what it held.
pub fn opened_slot(repository: &Id) -> Option<(Id, SlotPayload)> {
    let opened = OPENED.lock().ok()?;
    opened
        .iter()
        .find(|(id, _, _)| id == repository)
        .map(|(_, slot, payload)| (*slot, payload.clone()))
}

/// The owners named by the key slots this run opened for `repository`.
pub fn slot_owners(repository: &Id) -> Vec<PublicKey> {
    OWNERS
        .lock()
        .map(|owners| {
            owners
                .iter()
                .filter(|(id, _)| id == repository)
                .map(|(_, owner)| *owner)
                .collect()
        })
        .unwrap_or_default()
}
