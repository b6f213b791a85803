//! `cairn plan check`: every mistake of a plan file in one run (its shape,
//! then its meaning, each with its line), and whether each repository it
//! names opens.

use crate::args::PlanCommand;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use serde_json::json;

pub fn run(context: &Context, command: &PlanCommand) -> Result<u8> {
    let PlanCommand::Check { plan } = command;
    let loaded = crate::plan::load(plan);
    let mut mistakes = loaded.as_ref().err().cloned().unwrap_or_default();
    let repositories = match &loaded {
        Ok(loaded) => loaded.repositories.clone(),
        Err(_) => crate::plan::named_repositories(plan),
    };
    for location in &repositories {
        if let Err(error) = opens(context, location) {
            mistakes.push(format!(
                "{}: repository {location} does not open: {}",
                plan.display(),
                crate::output::one_line(&error)
            ));
        }
    }
    if mistakes.is_empty()
        && let Ok(loaded) = loaded
    {
        if context.global.json {
            crate::output::print_json(&json!({
                "plan": plan.display().to_string(),
                "valid": true,
                "components": loaded.components.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "repositories": loaded.repositories,
                "retention": loaded.retention.map(|policy| policy.describe()),
            }))?;
        } else {
            let opened = if loaded.repositories.is_empty() {
                String::new()
            } else {
                format!("; repositories open: {}", loaded.repositories.join(", "))
            };
            println!(
                "{}: valid; {} component(s): {}{opened}",
                plan.display(),
                loaded.components.len(),
                loaded
                    .components
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        return Ok(exit::SUCCESS);
    }
    if context.global.json {
        crate::output::print_json(&json!({
            "plan": plan.display().to_string(),
            "valid": false,
            "mistakes": mistakes,
        }))?;
    }
    report_mistakes(&mistakes);
    Ok(exit::ERROR)
}

/// Whether the repository at `location` opens: it exists, is a
/// repository, and its config reads. Never asks for a passphrase: the key
/// slots are for the commands that read data.
fn opens(context: &Context, location: &str) -> Result<()> {
    let path = std::path::Path::new(location);
    if !crate::context::is_s3(location) && !path.is_dir() {
        anyhow::bail!(if path.exists() {
            "a file, not a directory"
        } else {
            "no such directory"
        });
    }
    let backend = context.backend_at(location)?;
    cairn_store::Repository::open(backend)?;
    Ok(())
}

/// One line per mistake on stderr.
pub fn report_mistakes(mistakes: &[String]) {
    eprintln!("cairn: the plan has {} mistake(s):", mistakes.len());
    for mistake in mistakes {
        eprintln!("  {mistake}");
    }
}

/// The plan at `path`, if one is given; its mistakes are reported on
/// stderr and `Err` returned, for the caller to exit with.
pub fn load_if_given(path: Option<&std::path::Path>) -> Result<Option<crate::plan::Plan>, ()> {
    match path.map(crate::plan::load) {
        None => Ok(None),
        Some(Ok(plan)) => Ok(Some(plan)),
        Some(Err(mistakes)) => {
            report_mistakes(&mistakes);
            Err(())
        }
    }
}
