//! `cairn cat`: one file of a snapshot on stdout, for piping into a
//! restore tool.

use crate::args::CatArgs;
use crate::commands::verified_snapshot;
use crate::context::Context;
use crate::exit;
use anyhow::{Result, anyhow};
use cairn_store::StoreError;
use cairn_store::ops::cat::write_file;
use cairn_store::ops::listing::list_entries;

pub fn run(context: &Context, args: &CatArgs) -> Result<u8> {
    let repository = context.open_repository()?;
    repository.require_read_key("the file `cat` prints")?;
    let (id, body) =
        verified_snapshot(context, &repository, &args.snapshot, &args.filter.filter())?;
    let opened = context.open_index(&repository)?;
    let wanted = args.path.trim_matches('/');
    let listed = list_entries(
        &repository,
        opened.index.as_ref(),
        &body,
        &id.short(),
        Some(wanted),
    )?;
    let item = listed
        .iter()
        .find(|item| item.path == wanted)
        .ok_or_else(|| match body.component(wanted) {
            Some(_) => anyhow!(
                "{wanted:?} is a directory component, not a file: name a file inside it (COMPONENT/PATH)"
            ),
            None => anyhow!("no file {wanted:?} in snapshot {}", id.short()),
        })?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match write_file(
        &repository,
        opened.index.as_ref(),
        wanted,
        &item.entry,
        &mut out,
    ) {
        Ok(_) => Ok(exit::SUCCESS),
        Err(error @ (StoreError::Corrupt { .. } | StoreError::Missing { .. })) => {
            eprintln!("cairn: {error}");
            Ok(exit::DAMAGE)
        }
        Err(error) => Err(error.into()),
    }
}
