//! `cairn dump`: a component or directory of a snapshot as a tar or zip
//! archive, on stdout or into a file.

use crate::args::{DumpArgs, DumpFormat};
use crate::commands::verified_snapshot;
use crate::context::{Context, Usage};
use crate::exit;
use crate::output::bytes;
use anyhow::{Context as _, Result};
use cairn_store::StoreError;
use cairn_store::ops::dump::{ArchiveFormat, DumpOutcome, dump};
use serde_json::json;
use std::io::{IsTerminal, Write};

pub fn run(context: &Context, args: &DumpArgs) -> Result<u8> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(Usage(
            "dump writes an archive: redirect stdout (`> FILE`, `| tar -x`) or give --output FILE"
                .into(),
        )
        .into());
    }
    let repository = context.open_repository()?;
    repository.require_read_key("the files `dump` writes")?;
    let (id, body) =
        verified_snapshot(context, &repository, &args.snapshot, &args.filter.filter())?;
    let opened = context.open_index(&repository)?;
    let format = match args.format {
        DumpFormat::Tar => ArchiveFormat::Tar,
        DumpFormat::Zip => ArchiveFormat::Zip,
    };
    let snapshot = id.short();
    let run_dump = |out: &mut dyn Write| {
        dump(
            &repository,
            opened.index.as_ref(),
            &body,
            &snapshot,
            &args.path,
            format,
            out,
        )
    };
    let dumped = match &args.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            run_dump(&mut out)
        }
        Some(path) => {
            // Written beside its final name and renamed into place only
            // when every check passed: a failed dump leaves no archive
            // that looks whole.
            let directory = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => std::path::Path::new("."),
            };
            let mut partial = tempfile::Builder::new()
                .prefix(".cairn-dump-")
                .tempfile_in(directory)
                .with_context(|| format!("creating a file in {}", directory.display()))?;
            let result = {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, partial.as_file_mut());
                run_dump(&mut out)
            };
            if result.is_ok() {
                partial
                    .persist(path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            result
        }
    };
    match dumped {
        Ok(outcome) => {
            if let Some(path) = &args.output {
                report(context, &outcome, &path.display().to_string())?;
            }
            Ok(exit::SUCCESS)
        }
        Err(error @ (StoreError::Corrupt { .. } | StoreError::Missing { .. })) => {
            eprintln!("cairn: {error}");
            eprintln!(
                "cairn: the dump stopped there; {}",
                if args.output.is_some() {
                    "no archive was left behind"
                } else {
                    "discard what was written"
                }
            );
            Ok(exit::DAMAGE)
        }
        Err(error) => Err(error.into()),
    }
}

fn report(context: &Context, outcome: &DumpOutcome, path: &str) -> Result<()> {
    if context.global.json {
        crate::output::print_json(&json!({
            "output": path,
            "files": outcome.files,
            "directories": outcome.directories,
            "symlinks": outcome.symlinks,
            "bytes": outcome.bytes,
        }))
    } else {
        println!(
            "wrote {path}: {} file(s), {} directories, {} symlink(s), {}",
            outcome.files,
            outcome.directories,
            outcome.symlinks,
            bytes(outcome.bytes)
        );
        Ok(())
    }
}
