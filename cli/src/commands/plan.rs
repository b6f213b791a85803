//! `cairn plan check`: a plan file's mistakes, each with its line.

use crate::args::PlanCommand;
use crate::context::Context;
use crate::exit;
use anyhow::Result;
use serde_json::json;

pub fn run(context: &Context, command: &PlanCommand) -> Result<u8> {
    let PlanCommand::Check { plan } = command;
    match crate::plan::load(plan) {
        Ok(loaded) => {
            if context.global.json {
                crate::output::print_json(&json!({
                    "plan": plan.display().to_string(),
                    "valid": true,
                    "components": loaded.components.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    "repositories": loaded.repositories,
                    "retention": loaded.retention.map(|policy| policy.describe()),
                }))?;
            } else {
                println!(
                    "{}: valid; {} component(s): {}",
                    plan.display(),
                    loaded.components.len(),
                    loaded
                        .components
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(exit::SUCCESS)
        }
        Err(mistakes) => {
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
    }
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
