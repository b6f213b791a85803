//! `cairn trust`: pins public keys as trusted for one repository on this
//! machine (`<config dir>/trusted/<repository id>/`). Never reads trust
//! from the repository: the user names each key.

use crate::args::TrustArgs;
use crate::context::Context;
use crate::exit;
use anyhow::{Context as _, Result};
use cairn_store::keystore::{TrustStore, parse_public_key_argument};
use serde_json::json;

pub fn run(context: &Context, args: &TrustArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    let store = TrustStore::new(&context.config_dir()?, repository.id());
    // Every key is checked before any is pinned.
    let keys = args
        .keys
        .iter()
        .map(|argument| {
            parse_public_key_argument(argument).with_context(|| format!("key {argument}"))
        })
        .collect::<Result<Vec<_>>>()?;
    for key in &keys {
        store.trust(*key)?;
    }
    let trusted = store.trusted_keys()?.keys;
    if context.global.json {
        crate::output::print_json(&json!({
            "repository": repository.backend().location(),
            "repository_id": repository.id().to_hex(),
            "pinned": keys.iter().map(|key| key.to_hex()).collect::<Vec<_>>(),
            "trusted": trusted.iter().map(|key| key.to_hex()).collect::<Vec<_>>(),
        }))?;
    } else {
        for key in &keys {
            println!(
                "trusted {} for {}",
                key.to_hex(),
                repository.backend().location()
            );
        }
        println!(
            "{} key(s) trusted for this repository, in {}",
            trusted.len(),
            store.directory().display()
        );
    }
    Ok(exit::SUCCESS)
}
