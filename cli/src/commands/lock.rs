//! `cairn lock extend`: keeps the live objects of a repository under S3
//! Object Lock retained (store/src/ops/lock.rs holds the rule).

use crate::args::LockCommand;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use serde_json::json;

pub fn run(context: &Context, command: &LockCommand) -> Result<u8> {
    match command {
        LockCommand::Extend { days } => extend(context, *days),
    }
}

fn extend(context: &Context, days: Option<u32>) -> Result<u8> {
    let location = context.repository_location()?;
    let s3 = context.s3_backend_at(location, "lock extend")?;
    let repository = context.open_repository()?;
    let trusted = context.trusted_keys(&repository)?;
    let done = cairn_store::ops::lock::extend(&repository, &s3, &trusted, days)?;
    if context.global.json {
        crate::output::print_json(&json!({
            "mode": done.mode.name(),
            "days": done.days,
            "retained_until": done.until.to_string(),
            "extended": done.objects.extended,
            "already_retained": done.objects.already,
            "marked_packs_left": done.marked_packs,
        }))?;
    } else {
        println!(
            "{} object(s) now retained until {} ({} mode); {} already were; {} marked pack(s) left to expire",
            done.objects.extended,
            done.until,
            done.mode.name(),
            done.objects.already,
            done.marked_packs
        );
    }
    Ok(exit::SUCCESS)
}
