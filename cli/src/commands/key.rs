//! `cairn key ...`: key slots, host onboarding, the keyring, revocation,
//! rotation and the paper export of an encrypted repository (FORMAT.md
//! 17.5, 17.7). Parses, unlocks, calls the rules in `ops::keys` and prints;
//! it never decides what is trusted (ops::keys does) and never writes a
//! passphrase anywhere.

use crate::args::{KeyAddArgs, KeyCommand, KeyHostInitArgs, KeyPasswdArgs, KeyRotateArgs};
use crate::context::Context;
use crate::exit;
use anyhow::{Context as _, Result, anyhow, bail};
use cairn_store::format::crypto::RepositoryKeys;
use cairn_store::format::keyring::{Keyring, Role, SlotRecord};
use cairn_store::format::keys::{PublicKey, SigningKey, generate_signing_key, public_key_of};
use cairn_store::format::keyslot::{KeySlot, SlotPayload};
use cairn_store::keystore::{
    TrustStore, create_identity, default_key_path, parse_public_key_argument,
    write_protected_secret_key, write_secret_key,
};
use cairn_store::ops::common::{host_name, now_rfc3339};
use cairn_store::ops::keys as rules;
use cairn_store::{Id, Repository};
use std::collections::HashSet;
use std::path::PathBuf;

/// Prints `json` under `--json`, else the line `text`: each key command
/// reports what it did either way (docs/JSON.md).
fn report(context: &Context, json: serde_json::Value, text: impl FnOnce() -> String) -> Result<()> {
    if context.global.json {
        crate::output::print_json(&json)
    } else {
        println!("{}", text());
        Ok(())
    }
}

/// The first word of a host's request line.
const REQUEST_PREFIX: &str = "cairn-host-v1";

pub fn run(context: &Context, command: &KeyCommand) -> Result<u8> {
    match command {
        KeyCommand::List => list(context),
        KeyCommand::Add(args) => add(context, args),
        KeyCommand::Remove { slot } => remove(context, slot),
        KeyCommand::Passwd(args) => passwd(context, args),
        KeyCommand::Export => export(context),
        KeyCommand::Import { file } => import(context, file),
        KeyCommand::HostInit(args) => host_init(context, args),
        KeyCommand::Revoke { key } => revoke(context, key),
        KeyCommand::Rotate(args) => rotate(context, args),
    }
}

/// What opening a key slot gave.
pub struct Unlocked {
    pub keys: RepositoryKeys,
    pub payload: SlotPayload,
    /// The slot that opened.
    pub slot: Id,
}

/// The keys `repository` was opened with in this run (the context
/// unlocks every encrypted repository it opens: identities first, then the
/// passphrase), and the slot that gave them.
pub fn unlock(_context: &Context, repository: &Repository) -> Result<Unlocked> {
    if !repository.is_encrypted() {
        bail!(
            "repository {} is not encrypted: it has no key slots or keyring to manage",
            repository.backend().location()
        );
    }
    let keys = repository.keys().cloned().ok_or_else(|| {
        anyhow!(
            "repository {} is not unlocked",
            repository.backend().location()
        )
    })?;
    let (slot, payload) = crate::credentials::opened_slot(repository.id()).ok_or_else(|| {
        anyhow!(
            "repository {} was opened without a key slot",
            repository.backend().location()
        )
    })?;
    Ok(Unlocked {
        keys,
        payload,
        slot,
    })
}

/// A passphrase from `variable`, `<variable>_FILE` or `<variable>_COMMAND`
/// in the environment, else typed twice at a prompt (never from argv).
fn passphrase(variable: &str) -> Result<Vec<u8>> {
    if let Ok(value) = std::env::var(variable) {
        return Ok(value.into_bytes());
    }
    if let Ok(path) = std::env::var(format!("{variable}_FILE")) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the passphrase file {path}"))?;
        return Ok(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec());
    }
    if let Ok(command) = std::env::var(format!("{variable}_COMMAND")) {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output()
            .with_context(|| format!("running the passphrase command {command:?}"))?;
        if !output.status.success() {
            bail!(
                "the passphrase command {command:?} failed ({})",
                output.status
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        return Ok(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec());
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() || std::io::stderr().is_terminal() {
        let first = rpassword::prompt_password("new passphrase: ")
            .context("reading the passphrase from the terminal")?;
        let second = rpassword::prompt_password("the same passphrase again: ")
            .context("reading the passphrase from the terminal")?;
        if first != second {
            bail!("the two passphrases typed differ; nothing was changed");
        }
        return Ok(first.into_bytes());
    }
    bail!("a passphrase is needed: set {variable} (or {variable}_FILE, {variable}_COMMAND)")
}

/// This host's signing key for `repository`, unlocking a protected key
/// file with CAIRN_KEY_PASSWORD or the passphrase.
fn signing_key(context: &Context, repository: &Repository) -> Result<(SigningKey, PathBuf)> {
    let published = repository.published_keys()?;
    let path = match &context.global.key_file {
        Some(path) => path.clone(),
        None => {
            let config = context.config_dir()?;
            published
                .iter()
                .map(|public| default_key_path(&config, public))
                .find(|path| path.exists())
                .ok_or_else(|| anyhow!("this host holds none of the repository's signing keys"))?
        }
    };
    let key = context.read_signing_key(&path)?;
    Ok((key, path))
}

/// The keyring as this host believes it, roll-back checked.
fn keyring_view(
    context: &Context,
    repository: &Repository,
    unlocked: &Unlocked,
) -> Result<rules::KeyringView> {
    let view = rules::read_keyring(
        repository,
        &unlocked.keys,
        &roots(context, repository, unlocked)?,
    )?;
    for (id, why) in &view.damaged {
        eprintln!("cairn: warning: keyring {id} is damaged and was passed over: {why}");
    }
    rules::check_keyring_rollback(
        &rules::keyring_memory_path(&context.config_dir()?, repository.id()),
        repository.id(),
        &view,
    )?;
    Ok(view)
}

/// The keys a keyring chain may start at: the keys pinned with
/// `--trusted-key`, else the slot's owner and this machine's trusted keys
/// for the repository.
fn roots(
    context: &Context,
    repository: &Repository,
    unlocked: &Unlocked,
) -> Result<Vec<PublicKey>> {
    if let Some(pinned) = context.pinned_keys()? {
        return Ok(pinned);
    }
    let mut roots = TrustStore::new(&context.config_dir()?, repository.id())
        .trusted_keys()?
        .keys;
    roots.extend(unlocked.payload.owner());
    Ok(roots)
}

/// Writes `keyring` signed by this host's key, which must be an owner.
fn store_keyring(
    context: &Context,
    repository: &Repository,
    unlocked: &Unlocked,
    signer: &SigningKey,
    keyring: &Keyring,
) -> Result<Id> {
    let id = rules::write_keyring(repository, &unlocked.keys, signer, keyring)?;
    // Read back as any reader would: this machine now remembers it, so
    // its later loss is noticed here too.
    let view = keyring_view(context, repository, unlocked)?;
    if view.current.as_ref().map(|current| current.id) != Some(id) {
        bail!(
            "keyring {id} was written but is not the newest valid one: another owner wrote at \
             once; run the command again"
        );
    }
    Ok(id)
}

/// The next keyring, from this host's (owner) signing key.
fn next(
    context: &Context,
    repository: &Repository,
    unlocked: &Unlocked,
) -> Result<(Keyring, SigningKey)> {
    let view = keyring_view(context, repository, unlocked)?;
    let (signer, _) = signing_key(context, repository)?;
    let label = host_name();
    let ring = rules::next_keyring(&view, &signer, &label, &now_rfc3339())?;
    Ok((ring, signer))
}

fn list(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    let slots = rules::key_slots(&repository)?;
    let unlocked = unlock(context, &repository)?;
    let view = if unlocked.keys.can_read() {
        Some(keyring_view(context, &repository, &unlocked)?)
    } else {
        None
    };
    let records = view
        .as_ref()
        .and_then(|view| view.current.as_ref())
        .map(|current| current.keyring.slots.clone())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for (id, slot) in &slots {
        let record = records.iter().find(|record| record.id == *id);
        let (kind, detail) = match slot {
            Ok(slot) if slot.is_passphrase() => ("passphrase".to_string(), String::new()),
            Ok(slot) => (
                "recipient".to_string(),
                slot.recipient().map(hex::encode).unwrap_or_default(),
            ),
            Err(error) => ("damaged".to_string(), error.to_string()),
        };
        let (label, access, created) = if *id == unlocked.slot {
            let payload = &unlocked.payload;
            let access = if payload.read_key.is_some() {
                "full"
            } else {
                "write-only"
            };
            (
                payload.label.clone(),
                access.to_string(),
                payload.created.clone(),
            )
        } else if let Some(record) = record {
            let access = if record.full { "full" } else { "write-only" };
            (
                record.label.clone(),
                access.to_string(),
                record.created.clone(),
            )
        } else {
            (String::new(), "unknown".to_string(), String::new())
        };
        rows.push(serde_json::json!({
            "id": id.to_hex(), "kind": kind, "recipient": detail, "label": label,
            "access": access, "created": created, "opened_here": *id == unlocked.slot,
        }));
    }
    let keyring_entries: Vec<serde_json::Value> = view
        .as_ref()
        .and_then(|view| view.current.as_ref())
        .map(|current| {
            current
                .keyring
                .entries
                .iter()
                .map(|entry| {
                    let (status, kept) = match &entry.status {
                        cairn_store::format::keyring::Status::Valid => ("valid".to_string(), 0),
                        cairn_store::format::keyring::Status::Revoked { time, kept } => {
                            (format!("revoked {time}"), kept.len())
                        }
                    };
                    serde_json::json!({
                        "key": entry.public_key().to_hex(),
                        "role": match entry.role { Role::Owner => "owner", Role::Writer => "writer" },
                        "label": entry.label, "added": entry.added, "status": status,
                        "kept_snapshots": kept,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if context.global.json {
        crate::output::print_json(&serde_json::json!({
            "slots": rows,
            "keyring": view.as_ref().and_then(|view| view.current.as_ref()).map(|current| serde_json::json!({
                "id": current.id.to_hex(), "sequence": current.keyring.sequence,
                "entries": keyring_entries,
            })),
        }))?;
        return Ok(exit::SUCCESS);
    }
    println!("key slots:");
    for row in &rows {
        println!(
            "  {}  {:<10}  {:<10}  {}  {}{}",
            &row["id"].as_str().unwrap_or_default()[..16],
            row["kind"].as_str().unwrap_or_default(),
            row["access"].as_str().unwrap_or_default(),
            row["created"].as_str().unwrap_or_default(),
            row["label"].as_str().unwrap_or_default(),
            if row["opened_here"].as_bool() == Some(true) {
                "  (opened here)"
            } else {
                ""
            },
        );
    }
    match view.as_ref().and_then(|view| view.current.as_ref()) {
        Some(current) => {
            println!(
                "keyring {} (sequence {}):",
                current.id, current.keyring.sequence
            );
            for entry in &keyring_entries {
                println!(
                    "  {}  {:<6}  {}  {}",
                    entry["key"].as_str().unwrap_or_default(),
                    entry["role"].as_str().unwrap_or_default(),
                    entry["status"].as_str().unwrap_or_default(),
                    entry["label"].as_str().unwrap_or_default(),
                );
            }
        }
        None if view.is_some() => println!("no keyring yet"),
        None => println!("keyring: needs the read key (this host is write-only)"),
    }
    Ok(exit::SUCCESS)
}

/// Writes a new slot for `payload` and, when this host holds an owner key,
/// records it in a new keyring.
fn add_slot(
    context: &Context,
    repository: &Repository,
    unlocked: &Unlocked,
    slot: &KeySlot,
    payload: &SlotPayload,
    host_key: Option<(PublicKey, &str)>,
) -> Result<Id> {
    // The slot first: a crash before the keyring is written leaves a
    // working slot that `key list` shows without a label.
    let id = repository.write_object(cairn_store::backend::ObjectKind::KeySlot, &slot.encode())?;
    if !unlocked.keys.can_read() {
        if host_key.is_some() {
            bail!("adding a host's signing key takes the read key (the keyring is sealed to it)");
        }
        return Ok(id);
    }
    let recorded = next(context, repository, unlocked);
    let (mut ring, signer) = match (recorded, host_key) {
        (Ok(pair), _) => pair,
        (Err(error), None) => {
            eprintln!("cairn: note: slot {id} added but not recorded in the keyring: {error:#}");
            return Ok(id);
        }
        (Err(error), Some(_)) => return Err(error),
    };
    ring.slots.push(SlotRecord {
        id,
        kind: if slot.is_passphrase() {
            "passphrase"
        } else {
            "recipient"
        }
        .to_string(),
        label: payload.label.clone(),
        full: payload.read_key.is_some(),
        created: payload.created.clone(),
    });
    if let Some((key, label)) = host_key {
        rules::publish_key(repository, key)?;
        rules::add_writer(&mut ring, key, Role::Writer, label, &now_rfc3339())?;
    }
    store_keyring(context, repository, unlocked, &signer, &ring)?;
    Ok(id)
}

/// The payload of a new slot, endorsed (FORMAT.md 17.5) when this host's
/// signing key is the owner the opened slot names.
fn payload_for(
    unlocked: &Unlocked,
    write_only: bool,
    label: &str,
    endorser: Option<&SigningKey>,
) -> SlotPayload {
    let keys = if write_only {
        unlocked.keys.write_only()
    } else {
        unlocked.keys.clone()
    };
    let mut payload = SlotPayload::of(&keys, unlocked.payload.owner(), label, &now_rfc3339());
    payload.endorse_if_owner(endorser);
    payload
}

/// This host's signing key when it may endorse slots: a holder of the read
/// key (a write-only holder records nothing in the keyring either). An
/// error here is reported by the keyring step that needs the key again.
fn endorser(context: &Context, repository: &Repository, unlocked: &Unlocked) -> Option<SigningKey> {
    if !unlocked.keys.can_read() {
        return None;
    }
    signing_key(context, repository).ok().map(|(key, _)| key)
}

fn parse_x25519(text: &str) -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| anyhow!("{text:?} is not an X25519 public key (64 hex digits)"))?;
    Ok(key)
}

fn add(context: &Context, args: &KeyAddArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    let unlocked = unlock(context, &repository)?;
    let write_only = args.write_only || !unlocked.keys.can_read();
    let endorser = endorser(context, &repository, &unlocked);
    let (id, what) = if let Some(request) = &args.host {
        let (signing, identity, host) = parse_request(request)?;
        let label = if args.label.is_empty() {
            host
        } else {
            args.label.clone()
        };
        let payload = payload_for(&unlocked, write_only, &label, endorser.as_ref());
        let slot = KeySlot::wrap_for_recipient(&payload, &identity)?;
        let id = add_slot(
            context,
            &repository,
            &unlocked,
            &slot,
            &payload,
            Some((signing, &label)),
        )?;
        (
            id,
            format!("host {label} (signing key {})", signing.to_hex()),
        )
    } else if let Some(recipient) = &args.recipient {
        let payload = payload_for(&unlocked, write_only, &args.label, endorser.as_ref());
        let slot = KeySlot::wrap_for_recipient(&payload, &parse_x25519(recipient)?)?;
        (
            add_slot(context, &repository, &unlocked, &slot, &payload, None)?,
            format!("recipient {recipient}"),
        )
    } else if args.passphrase {
        let payload = payload_for(&unlocked, write_only, &args.label, endorser.as_ref());
        let slot = KeySlot::wrap_with_passphrase(
            &payload,
            &passphrase("CAIRN_NEW_PASSWORD")?,
            crate::credentials::kdf_params(&context.global)?,
        )?;
        (
            add_slot(context, &repository, &unlocked, &slot, &payload, None)?,
            "passphrase".to_string(),
        )
    } else {
        bail!(crate::context::Usage(
            "key add needs --passphrase, --recipient PUBLIC_KEY or --host REQUEST".into()
        ));
    };
    let access = if write_only { "write-only" } else { "full" };
    if context.global.json {
        crate::output::print_json(&serde_json::json!({"slot": id.to_hex(), "access": access}))?;
    } else {
        println!("added key slot {id} ({access}) for {what}");
    }
    Ok(exit::SUCCESS)
}

/// A host's request line: `cairn-host-v1 SIGNING IDENTITY HOST CHECK`,
/// CHECK being the first 8 hex digits of BLAKE3 of what precedes it.
fn parse_request(request: &str) -> Result<(PublicKey, [u8; 32], String)> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let [prefix, signing, identity, host, check] = words.as_slice() else {
        bail!("not a host request line (expected {REQUEST_PREFIX} SIGNING IDENTITY HOST CHECK)");
    };
    if *prefix != REQUEST_PREFIX {
        bail!("not a host request line: it starts with {prefix:?}, not {REQUEST_PREFIX}");
    }
    let body = format!("{prefix} {signing} {identity} {host}");
    if *check != &blake3::hash(body.as_bytes()).to_hex()[..8] {
        bail!("the host request line's check does not match: it was changed or mistyped");
    }
    let signing = PublicKey::from_hex(signing)
        .ok_or_else(|| anyhow!("the request's signing key is not an ed25519 public key"))?;
    Ok((signing, parse_x25519(identity)?, host.to_string()))
}

fn request_line(signing: &PublicKey, identity: &[u8; 32], host: &str) -> String {
    let body = format!(
        "{REQUEST_PREFIX} {} {} {host}",
        signing.to_hex(),
        hex::encode(identity)
    );
    let check = blake3::hash(body.as_bytes()).to_hex();
    format!("{body} {}", &check[..8])
}

/// Writes a new signing key into the config directory, sealed under
/// CAIRN_NEW_PASSWORD when `protect`.
fn new_signing_key(context: &Context, protect: bool) -> Result<(SigningKey, PathBuf)> {
    let key = generate_signing_key()?;
    let path = default_key_path(&context.config_dir()?, &public_key_of(&key));
    if protect {
        write_protected_secret_key(
            &path,
            &key,
            &passphrase("CAIRN_NEW_PASSWORD")?,
            crate::credentials::kdf_params(&context.global)?,
            false,
        )?;
    } else {
        write_secret_key(&path, &key)?;
    }
    Ok((key, path))
}

fn host_init(context: &Context, args: &KeyHostInitArgs) -> Result<u8> {
    let host = args.label.clone().unwrap_or_else(host_name);
    if host.is_empty() || host.split_whitespace().count() != 1 {
        bail!("the host's label must be one word, not {host:?}");
    }
    let (key, path) = new_signing_key(context, args.protect)?;
    let identity = create_identity(&context.config_dir()?)?;
    let public = public_key_of(&key);
    // Where the repository is already reachable, this host trusts its own
    // key for it, so its index files count for its own deduplication.
    // Opened without unlocking: no slot is wrapped for this host yet.
    if !context.global.repo.is_empty() {
        let repository = Repository::open(context.backend()?)?;
        let trust = TrustStore::new(&context.config_dir()?, repository.id());
        trust.trust(public)?;
        // The owner's key, given out of band: the root this host checks
        // every slot's endorsement against (FORMAT.md 17.5).
        if let Some(owner) = &args.owner {
            let owner =
                parse_public_key_argument(owner).with_context(|| format!("--owner {owner}"))?;
            trust.trust(owner)?;
            // Remembered as the slot owner before any slot is seen, so that
            // the first run trusts no other endorser (no trust on first use).
            if let Some(public) = repository.config().encryption_public_key() {
                cairn_store::keystore::SlotMemory::new(&context.config_dir()?, repository.id())
                    .write(&cairn_store::keystore::RememberedSlot {
                        owner,
                        public_key: public.0,
                        rotations: 0,
                    })?;
            }
        }
    } else if args.owner.is_some() {
        bail!(crate::context::Usage(
            "key host-init --owner needs --repo: the owner is trusted for one repository".into()
        ));
    }
    let line = request_line(&public, &identity, &host);
    if context.global.json {
        crate::output::print_json(&serde_json::json!({
            "request": line, "signing_key": public.to_hex(),
            "identity": hex::encode(identity), "key_file": path.display().to_string(),
        }))?;
    } else {
        eprintln!("signing key {} in {}", public.to_hex(), path.display());
        eprintln!(
            "run on the owner's machine: cairn key add --host '<the line below>' [--write-only]"
        );
        println!("{line}");
    }
    Ok(exit::SUCCESS)
}

/// The slot named by an id or a unique prefix (at least 4 hex digits).
fn find_slot(repository: &Repository, spec: &str) -> Result<Id> {
    let spec = spec.to_ascii_lowercase();
    if spec.len() < 4 {
        bail!("name a key slot by at least 4 hex digits of its id");
    }
    let matching: Vec<Id> = repository
        .list_ids(cairn_store::backend::ObjectKind::KeySlot)?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(&spec))
        .collect();
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no key slot {spec} in this repository"),
        many => bail!("{} key slots start with {spec}", many.len()),
    }
}

/// The slots known to hold the read key: recorded so in the keyring, or
/// the one opened here when it did.
fn full_slots(view: Option<&rules::KeyringView>, unlocked: &Unlocked) -> HashSet<Id> {
    let mut full: HashSet<Id> = view
        .and_then(|view| view.current.as_ref())
        .map(|current| {
            current
                .keyring
                .slots
                .iter()
                .filter(|record| record.full)
                .map(|record| record.id)
                .collect()
        })
        .unwrap_or_default();
    if unlocked.keys.can_read() {
        full.insert(unlocked.slot);
    }
    full
}

fn remove_slot(
    context: &Context,
    repository: &Repository,
    unlocked: &Unlocked,
    slot: Id,
) -> Result<()> {
    let view = if unlocked.keys.can_read() {
        Some(keyring_view(context, repository, unlocked)?)
    } else {
        None
    };
    let existing = repository.list_ids(cairn_store::backend::ObjectKind::KeySlot)?;
    // A slot known to be write-only never holds the last read key.
    let write_only = view
        .as_ref()
        .and_then(|view| view.current.as_ref())
        .is_some_and(|current| {
            current
                .keyring
                .slots
                .iter()
                .any(|record| record.id == slot && !record.full)
        });
    if !write_only {
        rules::check_removable(&slot, &existing, &full_slots(view.as_ref(), unlocked))?;
    }
    rules::remove_slot(repository, &slot)?;
    // The record goes after the slot; a crash in between leaves a record
    // of a slot that is gone, which `key list` does not show.
    let recorded = view
        .as_ref()
        .and_then(|view| view.current.as_ref())
        .is_some_and(|current| current.keyring.slots.iter().any(|record| record.id == slot));
    if recorded && let Ok((mut ring, signer)) = next(context, repository, unlocked) {
        ring.slots.retain(|record| record.id != slot);
        store_keyring(context, repository, unlocked, &signer, &ring)?;
    }
    Ok(())
}

fn remove(context: &Context, spec: &str) -> Result<u8> {
    let repository = context.open_repository()?;
    let unlocked = unlock(context, &repository)?;
    let slot = find_slot(&repository, spec)?;
    remove_slot(context, &repository, &unlocked, slot)?;
    report(
        context,
        serde_json::json!({"removed": slot.to_hex()}),
        || format!("removed key slot {slot}"),
    )?;
    Ok(exit::SUCCESS)
}

fn passwd(context: &Context, args: &KeyPasswdArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    if args.signing_key {
        let (key, path) = signing_key(context, &repository)?;
        let new = passphrase("CAIRN_NEW_PASSWORD")?;
        write_protected_secret_key(
            &path,
            &key,
            &new,
            crate::credentials::kdf_params(&context.global)?,
            true,
        )?;
        report(
            context,
            serde_json::json!({"key_file": path.display().to_string()}),
            || {
                format!(
                    "signing key file {} sealed under the new passphrase",
                    path.display()
                )
            },
        )?;
        return Ok(exit::SUCCESS);
    }
    let unlocked = unlock(context, &repository)?;
    let slots = rules::key_slots(&repository)?;
    let old_is_passphrase = slots
        .iter()
        .any(|(id, slot)| *id == unlocked.slot && slot.as_ref().is_ok_and(KeySlot::is_passphrase));
    let label = unlocked.payload.label.clone();
    let endorser = endorser(context, &repository, &unlocked);
    let payload = payload_for(
        &unlocked,
        unlocked.payload.read_key.is_none(),
        &label,
        endorser.as_ref(),
    );
    let slot = KeySlot::wrap_with_passphrase(
        &payload,
        &passphrase("CAIRN_NEW_PASSWORD")?,
        crate::credentials::kdf_params(&context.global)?,
    )?;
    // The new slot first: killed at any point, the old or the new
    // passphrase opens the repository.
    let id = add_slot(context, &repository, &unlocked, &slot, &payload, None)?;
    if old_is_passphrase {
        // Removed as seen from the new slot, which is known to be full
        // (or write-only like the old one).
        let after = Unlocked {
            keys: unlocked.keys.clone(),
            payload: payload_for(&unlocked, unlocked.payload.read_key.is_none(), &label, None),
            slot: id,
        };
        remove_slot(context, &repository, &after, unlocked.slot)?;
    }
    report(
        context,
        serde_json::json!({"slot": id.to_hex(), "replaces": unlocked.slot.to_hex()}),
        || {
            format!(
                "passphrase changed: key slot {id} replaces {}",
                unlocked.slot
            )
        },
    )?;
    Ok(exit::SUCCESS)
}

fn export(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    let unlocked = unlock(context, &repository)?;
    let text = rules::export_text(&unlocked.keys, unlocked.payload.owner())?;
    if context.global.json {
        // The paper form itself, for a script that files it away.
        crate::output::print_json(&serde_json::json!({"export": text}))?;
    } else {
        print!("{text}");
    }
    Ok(exit::SUCCESS)
}

fn import(context: &Context, file: &std::path::Path) -> Result<u8> {
    // Opened without unlocking: the export is the key, every passphrase
    // may be lost.
    let location = context.repository_location()?;
    let mut repository = Repository::open(context.backend()?)
        .with_context(|| format!("opening repository {location}"))?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the key export {}", file.display()))?;
    let (keys, owner) = rules::parse_export(&text)?;
    if keys.repository() != repository.id() {
        bail!(
            "the export holds the keys of repository {}, not of this one ({})",
            keys.repository(),
            repository.id()
        );
    }
    repository.unlock(keys.clone())?;
    let mut payload = SlotPayload::of(&keys, owner, "imported", &now_rfc3339());
    payload.endorse_if_owner(
        signing_key(context, &repository)
            .ok()
            .map(|(key, _)| key)
            .as_ref(),
    );
    let unlocked = Unlocked {
        keys,
        payload: payload.clone(),
        slot: Id([0; 32]),
    };
    let slot = KeySlot::wrap_with_passphrase(
        &payload,
        &passphrase("CAIRN_NEW_PASSWORD")?,
        crate::credentials::kdf_params(&context.global)?,
    )?;
    let id = add_slot(context, &repository, &unlocked, &slot, &payload, None)?;
    report(context, serde_json::json!({"slot": id.to_hex()}), || {
        format!("added passphrase key slot {id} from the export")
    })?;
    Ok(exit::SUCCESS)
}

fn revoke(context: &Context, key: &str) -> Result<u8> {
    let repository = context.open_repository()?;
    let key = parse_public_key_argument(key).with_context(|| format!("key {key}"))?;
    let unlocked = unlock(context, &repository)?;
    let (mut ring, signer) = next(context, &repository, &unlocked)?;
    if public_key_of(&signer) == key {
        bail!("this host's own signing key cannot revoke itself: use `cairn key rotate`");
    }
    let kept = rules::snapshots_signed_by(&repository, &key)?;
    let count = kept.len();
    rules::revoke_in(&mut ring, key, kept, &now_rfc3339());
    let id = store_keyring(context, &repository, &unlocked, &signer, &ring)?;
    report(
        context,
        serde_json::json!({
            "revoked": key.to_hex(), "keyring": id.to_hex(),
            "sequence": ring.sequence, "snapshots_kept": count,
        }),
        || {
            format!(
                "revoked {} in keyring {id} (sequence {}); its {count} snapshot(s) present now stay trusted",
                key.to_hex(),
                ring.sequence
            )
        },
    )?;
    Ok(exit::SUCCESS)
}

fn rotate(context: &Context, args: &KeyRotateArgs) -> Result<u8> {
    if args.read {
        return rotate_read(context);
    }
    let repository = context.open_repository()?;
    let unlocked = unlock(context, &repository)?;
    let (mut ring, signer) = next(context, &repository, &unlocked)?;
    let old = public_key_of(&signer);
    let role = ring.entry(&old).map_or(Role::Writer, |entry| entry.role);
    let (_, old_path) = signing_key(context, &repository)?;
    let (new_key, new_path) = new_signing_key(context, args.protect)?;
    let new = public_key_of(&new_key);
    // Published and trusted before the keyring names it, so that a crash
    // leaves the old key working and the new one merely unused.
    rules::publish_key(&repository, new)?;
    TrustStore::new(&context.config_dir()?, repository.id()).trust(new)?;
    rules::add_writer(&mut ring, new, role, &host_name(), &now_rfc3339())?;
    let kept = rules::snapshots_signed_by(&repository, &old)?;
    let count = kept.len();
    rules::revoke_in(&mut ring, old, kept, &now_rfc3339());
    let id = store_keyring(context, &repository, &unlocked, &signer, &ring)?;
    // The old key file is kept (renamed) so nothing can sign with it by
    // default, yet it is not destroyed.
    let retired = old_path.with_extension("key.revoked");
    std::fs::rename(&old_path, &retired)
        .with_context(|| format!("retiring {}", old_path.display()))?;
    report(
        context,
        serde_json::json!({
            "signing_key": new.to_hex(), "key_file": new_path.display().to_string(),
            "revoked": old.to_hex(), "keyring": id.to_hex(), "snapshots_kept": count,
        }),
        || {
            format!(
                "new signing key {} in {}; {} revoked in keyring {id}, its {count} snapshot(s) kept",
                new.to_hex(),
                new_path.display(),
                old.to_hex()
            )
        },
    )?;
    Ok(exit::SUCCESS)
}

/// `key rotate --read`: a new read key for every slot this host can
/// rewrap (ops::keys::rotate_read_key), recorded in the next keyring, then
/// the old slots removed.
fn rotate_read(context: &Context) -> Result<u8> {
    let repository = context.open_repository()?;
    let unlocked = unlock(context, &repository)?;
    if !unlocked.keys.can_read() {
        bail!(cairn_store::StoreError::ReadKeyMissing {
            object: "the read key to rotate".to_string(),
        });
    }
    // Refused here, before any slot is written, when this host holds no
    // owner key: the new slots must be recorded in the keyring.
    let view = keyring_view(context, &repository, &unlocked)?;
    let (mut ring, signer) = next(context, &repository, &unlocked)?;
    let slots = rules::key_slots(&repository)?;
    let passphrase = if slots
        .iter()
        .any(|(_, slot)| slot.as_ref().is_ok_and(KeySlot::is_passphrase))
    {
        let location = repository.backend().location();
        Some(crate::credentials::passphrase(
            &context.global,
            &format!("repository {location}"),
        )?)
    } else {
        None
    };
    let records = view
        .current
        .as_ref()
        .map(|current| current.keyring.slots.clone())
        .unwrap_or_default();
    let mut full = HashSet::new();
    let mut labels = std::collections::HashMap::new();
    for (id, slot) in &slots {
        let Some(recipient) = slot.as_ref().ok().and_then(KeySlot::recipient) else {
            continue;
        };
        let record = records.iter().find(|record| record.id == *id);
        if record.is_some_and(|record| record.full) || *id == unlocked.slot {
            full.insert(recipient);
        }
        if let Some(record) = record {
            labels.insert(*id, record.label.clone());
        }
    }
    let rotation = rules::rotate_read_key(
        &repository,
        &unlocked.keys,
        passphrase.as_ref().map(|passphrase| passphrase.bytes()),
        &full,
        &labels,
        rules::SlotOwner {
            key: unlocked.payload.owner(),
            signing: Some(&signer),
        },
        &now_rfc3339(),
    )?;
    ring.slots
        .retain(|record| !rotation.replaced.contains(&record.id));
    ring.slots.extend(rotation.written.iter().cloned());
    let after = Unlocked {
        keys: rotation.keys.clone(),
        payload: SlotPayload::of(
            &rotation.keys,
            unlocked.payload.owner(),
            &unlocked.payload.label,
            &now_rfc3339(),
        ),
        slot: rotation
            .written
            .first()
            .map_or(unlocked.slot, |record| record.id),
    };
    let id = store_keyring(context, &repository, &after, &signer, &ring)?;
    // The old slots go last: killed before, each holder has its old slot
    // and its new one, and either opens all it could read.
    for old in &rotation.replaced {
        rules::remove_slot(&repository, old)?;
    }
    let full_count = rotation.written.iter().filter(|record| record.full).count();
    report(
        context,
        serde_json::json!({
            "public_key": rotation.keys.public_key().to_hex(),
            "slots_rewritten": rotation.written.len(), "full": full_count,
            "keyring": id.to_hex(),
        }),
        || {
            format!(
                "new read key {}: {} key slot(s) rewritten ({full_count} full, the others write-only), \
                 recorded in keyring {id}; what was written before stays readable",
                rotation.keys.public_key().to_hex(),
                rotation.written.len(),
            )
        },
    )?;
    Ok(exit::SUCCESS)
}

/// The trust the keyring adds for `repository` when this host can read
/// it: the keyring's valid keys and revocations, from a chain started by
/// the slot's owner or a locally trusted key. `None` for a repository
/// without key slots or a host that cannot read the keyring.
pub fn keyring_trust(
    context: &Context,
    repository: &Repository,
) -> Result<Option<rules::KeyringTrust>> {
    static SEEN: std::sync::Mutex<Vec<(Id, Option<rules::KeyringTrust>)>> =
        std::sync::Mutex::new(Vec::new());
    if let Ok(seen) = SEEN.lock()
        && let Some((_, trust)) = seen.iter().find(|(id, _)| id == repository.id())
    {
        return Ok(trust.clone());
    }
    let trust = read_keyring_trust(context, repository)?;
    if let Ok(mut seen) = SEEN.lock() {
        seen.push((*repository.id(), trust.clone()));
    }
    Ok(trust)
}

fn read_keyring_trust(
    context: &Context,
    repository: &Repository,
) -> Result<Option<rules::KeyringTrust>> {
    if rules::key_slots(repository)?.is_empty() {
        return Ok(None);
    }
    let unlocked = unlock(context, repository)?;
    if !unlocked.keys.can_read() {
        return Ok(None);
    }
    let view = keyring_view(context, repository, &unlocked)?;
    let mut trust = rules::KeyringTrust::of(view.current.as_ref().map(|current| &current.keyring));
    // The slot's owner is trusted unless the keyring revoked it, or keys
    // pinned with --trusted-key stand in for every other root.
    if context.pinned_keys()?.is_none()
        && let Some(owner) = unlocked.payload.owner()
        && !trust.revoked.contains_key(&owner)
        && !trust.valid.contains(&owner)
    {
        trust.valid.push(owner);
    }
    Ok(Some(trust))
}
