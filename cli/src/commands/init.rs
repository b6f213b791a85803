//! `cairn init`: a new repository and its signing key.

use crate::args::InitArgs;
use crate::context::Context;
use crate::exit;
use anyhow::{Context as _, Result, bail};
use cairn_chunker::ChunkerParams;
use cairn_store::Repository;
use cairn_store::backend::{Backend, ObjectKind};
use cairn_store::format::keys::{generate_signing_key, public_key_of};
use cairn_store::keystore::{TrustStore, read_secret_key, write_secret_key};
use serde_json::json;
use std::path::Path;

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
    let backend = context.backend()?;
    match context.local_repository()? {
        Some(path) => check_local_target(path, backend.as_ref())?,
        // The first request: a missing bucket or bad credentials show here,
        // before a key is made.
        None => {
            if !backend.list(ObjectKind::Config)?.is_empty() {
                bail!("{location} already holds a cairn repository");
            }
        }
    }
    // The key is made (or read) before the repository, so that a
    // repository never exists without its secret key somewhere.
    let (key, key_path, key_is_new) = match &context.global.key_file {
        Some(key_path) if key_path.exists() => {
            (read_secret_key(key_path)?, key_path.clone(), false)
        }
        Some(key_path) => {
            let key = generate_signing_key()?;
            write_secret_key(key_path, &key)?;
            (key, key_path.clone(), true)
        }
        None => {
            let key = generate_signing_key()?;
            let key_path = context.default_key_path(&public_key_of(&key))?;
            write_secret_key(&key_path, &key)?;
            (key, key_path, true)
        }
    };
    let public = public_key_of(&key);
    let repository = match &like {
        Some(like) => Repository::init_like(backend, like.config(), public)?,
        None => Repository::init(backend, params, compression_level, public)?,
    };
    TrustStore::new(&context.config_dir()?).trust(public)?;

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
        }))?;
    } else {
        println!("created repository {location}");
        println!("  public key  {}", public.to_hex());
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
        if let Some(like) = &args.like {
            println!("  settings    taken from {like} (copies between the two stay deduplicated)");
        }
    }
    Ok(exit::SUCCESS)
}

/// A local repository goes into a new or empty directory.
fn check_local_target(path: &Path, backend: &dyn Backend) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if !backend.list(ObjectKind::Config)?.is_empty() {
        bail!("{} already holds a cairn repository", path.display());
    }
    let empty = std::fs::read_dir(path)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false);
    if !empty {
        bail!(
            "{} exists and is not empty; give a new or empty directory",
            path.display()
        );
    }
    Ok(())
}
