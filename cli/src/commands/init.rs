//! `cairn init`: a new repository and its signing key.

use crate::args::InitArgs;
use crate::context::Context;
use crate::exit;
use anyhow::{Context as _, Result};
use cairn_chunker::ChunkerParams;
use cairn_store::ops::init::{Encryption, InitOptions, KeyChoice, Settings, init};
use serde_json::json;

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
    let local_path = context.local_repository()?;
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
        encryption: Encryption::Plaintext,
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
