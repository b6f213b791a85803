//! `cairn tag`: changes the tags and labels of existing snapshots through
//! signed annotations (`cairn_store::ops::annotate`); parses the flags,
//! resolves the snapshots and renders what changed.

use crate::args::TagArgs;
use crate::commands::split_spec;
use crate::context::{Context, Usage};
use crate::exit;
use anyhow::Result;
use cairn_store::ops::annotate::{Effective, TagChange, Tagged, tag};
use serde_json::json;
use std::collections::BTreeMap;

pub fn run(context: &Context, args: &TagArgs) -> Result<u8> {
    let change = change(args)?;
    if change.is_empty() {
        return Err(anyhow::Error::new(Usage(
            "say what to change: --add, --remove, --set, --clear-tags, --add-label, --remove-label or --set-label".into(),
        )));
    }
    let repository = context.open_repository()?;
    repository.require_read_key("the snapshots `tag` annotates")?;
    let trusted = context.trusted_keys(&repository)?;
    let filter = args.filter.filter();
    let mut snapshots = Vec::new();
    for spec in &args.snapshots {
        let (id, body) = super::verified_snapshot(context, &repository, spec, &filter)?;
        if !snapshots.iter().any(|(known, _)| *known == id) {
            snapshots.push((id, body));
        }
    }
    // A dry run needs no key; a real one signs with this host's.
    let key = (!args.dry_run)
        .then(|| context.signing_key(&repository))
        .transpose()?;
    let done = tag(&repository, key.as_ref(), &trusted, &snapshots, &change)?;
    if context.global.json {
        let listed: Vec<_> = done
            .iter()
            .map(|tagged| {
                json!({
                    "id": tagged.snapshot.to_hex(),
                    "changed": changed(tagged),
                    "before": effective_json(&tagged.before),
                    "after": effective_json(&tagged.after),
                    "annotation": tagged.annotation.map(|id| id.to_hex()),
                })
            })
            .collect();
        crate::output::print_json(&json!({"dry_run": args.dry_run, "snapshots": listed}))?;
        return Ok(exit::SUCCESS);
    }
    for tagged in &done {
        let verb = match (changed(tagged), args.dry_run) {
            (false, _) => "unchanged",
            (true, true) => "would change",
            (true, false) => "changed",
        };
        println!(
            "{} {verb}: tags [{}] labels [{}]",
            tagged.snapshot.short(),
            tagged.after.tags.join(","),
            labels_text(&tagged.after.labels),
        );
        if let Some(annotation) = tagged.annotation {
            println!("    recorded in annotation {}", annotation.short());
        }
    }
    Ok(exit::SUCCESS)
}

fn change(args: &TagArgs) -> Result<TagChange> {
    let labels = |flag: &str, specs: &[String]| -> Result<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        for spec in specs {
            let (key, value) = split_spec(flag, spec, "KEY=VALUE")
                .map_err(|error| anyhow::Error::new(Usage(error.to_string())))?;
            if key.is_empty() {
                return Err(anyhow::Error::new(Usage(format!(
                    "{flag} {spec:?}: a label needs a key"
                ))));
            }
            labels.insert(key.to_string(), value.to_string());
        }
        Ok(labels)
    };
    Ok(TagChange {
        set_tags: (args.clear_tags || !args.set.is_empty()).then(|| args.set.clone()),
        add_tags: args.add.clone(),
        remove_tags: args.remove.clone(),
        set_labels: (!args.set_labels.is_empty())
            .then(|| labels("--set-label", &args.set_labels))
            .transpose()?,
        add_labels: labels("--add-label", &args.add_labels)?,
        remove_labels: args.remove_labels.clone(),
    })
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn effective_json(effective: &Effective) -> serde_json::Value {
    json!({
        "tags": effective.tags,
        "labels": effective.labels,
        "annotation": effective.annotation.map(|(id, sequence)| json!({
            "id": id.to_hex(), "sequence": sequence,
        })),
    })
}

fn changed(tagged: &Tagged) -> bool {
    tagged.before.tags != tagged.after.tags || tagged.before.labels != tagged.after.labels
}
