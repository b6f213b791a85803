//! `cairn completions` and `cairn man`: shell completion scripts and man
//! pages generated from the clap definitions in `args.rs`, so they never
//! drift from `--help`. Touches no repository; never writes outside the
//! directory it is given.

use crate::args::Cli;
use anyhow::{Context as _, Result};
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "cairn", &mut std::io::stdout());
    Ok(crate::exit::SUCCESS)
}

/// Writes `cairn.1` and one page per subcommand (`cairn-backup.1`,
/// `cairn-key-add.1`, ...) into `directory`, and lists them on stdout.
pub fn man_pages(directory: &Path) -> Result<u8> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating --output {}", directory.display()))?;
    let mut command = Cli::command();
    command.build();
    let mut written = Vec::new();
    write_pages(&command, "cairn", directory, &mut written)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(crate::exit::SUCCESS)
}

/// One page for `command` (named `name`), then one for each subcommand,
/// depth first.
fn write_pages(
    command: &clap::Command,
    name: &str,
    directory: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let mut rendered = Vec::new();
    clap_mangen::Man::new(command.clone())
        .title(name.to_uppercase())
        .render(&mut rendered)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = directory.join(format!("{name}.1"));
    std::fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(
            sub,
            &format!("{name}-{}", sub.get_name()),
            directory,
            written,
        )?;
    }
    Ok(())
}
