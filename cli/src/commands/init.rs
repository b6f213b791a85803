//! `cairn init`: a new repository and its signing key.

use crate::args::InitArgs;
use crate::context::Context;
use crate::exit;
use anyhow::{Context as _, Result};
use cairn_chunker::ChunkerParams;
use cairn_store::backend::LockMode;
use cairn_store::format::config::ObjectLockConfig;
use cairn_store::ops::init::{Encryption, InitOptions, KeyChoice, Settings, init};
use serde_json::json;

/// A recipient's X25519 public key, 64 hex digits.
fn recipient_key(text: &str) -> Result<[u8; 32]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("--recipient {text:?} is not 64 hex digits"))
}

pub fn run(context: &Context, args: &InitArgs) -> Result<u8> {
    let location = context.repository_location()?;
    // Chunking decides which chunks exist: the same parameters make the
    // same chunks, so copies between the two stay deduplicated.
    let like = match &args.like {
        Some(location) => Some(context.open_repository_at(location).context("--like")?),
        None => None,
    };
    let (params, compression_level) = match &like {
        Some(like) => (like.chunker_params()?, like.config().compression.level),
        None => (
            ChunkerParams::new(args.chunk_min, args.chunk_avg, args.chunk_max)
                .map_err(|error| anyhow::anyhow!("--chunk-min/--chunk-avg/--chunk-max: {error}"))?,
            args.compression_level,
        ),
    };
    let config_directory = context.config_dir()?;
    // Encrypted unless told otherwise; asked before anything is made.
    let passphrase = match args.plaintext || args.recipient.is_some() {
        true => None,
        false => Some(crate::credentials::new_passphrase(
            &context.global,
            &format!("the new repository {location}"),
        )?),
    };
    let local_path = context.local_repository()?;
    let object_lock = match args.object_lock {
        Some(days) => {
            let mode = LockMode::parse(&args.lock_mode)
                .ok_or_else(|| anyhow::anyhow!("--lock-mode {:?}", args.lock_mode))?;
            let s3 = context.s3_backend_at(location, "--object-lock")?;
            // Before anything is written: the config's own object is then
            // retained like every other.
            s3.ensure_object_lock(days, mode)
                .context("setting up the bucket's Object Lock")?;
            Some(ObjectLockConfig {
                mode: mode.name().into(),
                days,
            })
        }
        None => None,
    };
    let made = init(InitOptions {
        backend: context.backend()?,
        local_path,
        location,
        settings: match &like {
            Some(like) => Settings::Like(like.config()),
            None => Settings::Fresh {
                chunker: params,
                compression_level,
            },
        },
        key: match &context.global.key_file {
            Some(path) if path.exists() => KeyChoice::Existing(path.clone()),
            Some(path) => KeyChoice::NewAt(path.clone()),
            None => KeyChoice::NewInConfigDirectory,
        },
        config_directory: &config_directory,
        like_keys: like.as_ref().and_then(|like| like.keys()),
        object_lock: object_lock.clone(),
        encryption: match (&args.recipient, &passphrase) {
            (Some(recipient), _) => Encryption::Recipient(recipient_key(recipient)?),
            (None, Some(passphrase)) => Encryption::Passphrase {
                passphrase: passphrase.bytes(),
                kdf: crate::credentials::kdf_params(&context.global)?,
            },
            (None, None) => Encryption::Plaintext,
        },
    })?;
    context.pin_location(location, &made.repository)?;
    let (repository, public, key_path, key_is_new) = (
        made.repository,
        made.public_key,
        made.key_path,
        made.key_created,
    );

    if context.global.json {
        crate::output::print_json(&json!({
            "repository": location,
            "repository_id": repository.config().repository_id.to_hex(),
            "public_key": public.to_hex(),
            "key_file": key_path.display().to_string(),
            "key_created": key_is_new,
            "chunker": { "min_size": params.min_size, "avg_size": params.avg_size, "max_size": params.max_size },
            "compression_level": compression_level,
            "like": args.like,
            "encrypted": repository.is_encrypted(),
            "encryption_public_key": repository.config().encryption.as_ref().map(|e| e.public_key.clone()),
            "object_lock": object_lock.as_ref().map(|lock| json!({"mode": lock.mode, "days": lock.days})),
        }))?;
    } else {
        println!("created repository {location}");
        println!("  public key  {}", public.to_hex());
        println!(
            "  encryption  {}",
            match (repository.is_encrypted(), args.recipient.is_some()) {
                (true, false) =>
                    "on (keys wrapped with your passphrase: without it, nothing here can be read)",
                (true, true) => "on (keys wrapped for the --recipient key)",
                _ => "off (--plaintext: anyone who can read the storage reads everything)",
            }
        );
        println!(
            "  secret key  {}{}",
            key_path.display(),
            if key_is_new {
                " (new; keep a copy somewhere safe)"
            } else {
                " (existing)"
            }
        );
        println!(
            "  chunking    FastCDC {}/{}/{} bytes (min/avg/max)",
            params.min_size, params.avg_size, params.max_size
        );
        println!("  compression zstd level {compression_level}");
        if let Some(lock) = &object_lock {
            println!(
                "  object lock {} mode, every object retained {} day(s) (run `cairn lock extend` \
                 from the maintenance role to keep live data locked)",
                lock.mode, lock.days
            );
        }
        if let Some(like) = &args.like {
            println!("  settings    taken from {like} (copies between the two stay deduplicated)");
        }
    }
    Ok(exit::SUCCESS)
}
