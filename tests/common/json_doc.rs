//! docs/JSON.md as a checkable contract: its field tables read, and the
//! JSON a command printed checked against them (`tests/json_contract.rs`
//! runs almost every command; `tests/s3_lock.rs` the ones that need an S3
//! bucket with Object Lock). Never runs cairn itself.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Sections of docs/JSON.md run by `tests/s3_lock.rs` (they need an S3
/// bucket with Object Lock), not by `tests/json_contract.rs`.
pub const S3_LOCK_SECTIONS: &[&str] = &["lock extend", "repair undelete"];

/// One row of a table in docs/JSON.md.
pub struct Field {
    pub path: String,
    pub kind: String,
}

/// docs/JSON.md's tables, by the heading above them (`backup`,
/// `stats SNAPSHOT`, ...).
pub fn documented() -> BTreeMap<String, Vec<Field>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/JSON.md");
    let text = std::fs::read_to_string(&file).expect("read docs/JSON.md");
    let mut sections: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            let name = heading.trim().trim_matches('`').to_string();
            assert!(
                sections.insert(name.clone(), Vec::new()).is_none(),
                "docs/JSON.md: section {name:?} twice"
            );
            current = Some(name);
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| `path` | type | meaning |` → ["", "`path`", "type", "meaning", ""]
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let section = current
            .as_ref()
            .unwrap_or_else(|| panic!("docs/JSON.md: a field row before any section: {line}"));
        let kind = cells[2].to_string();
        let base = kind.trim_end_matches(" or null");
        assert!(
            ["string", "integer", "number", "boolean", "object", "array"].contains(&base),
            "docs/JSON.md, section {section}: unknown type {kind:?} in {line}"
        );
        sections.get_mut(section).expect("section").push(Field {
            path: cells[1].trim_matches('`').to_string(),
            kind,
        });
    }
    sections
}

/// The values `path` names in `value`; an error names the first step that
/// is missing or not an array.
fn values_at<'a>(value: &'a Value, path: &str) -> Result<Vec<&'a Value>, String> {
    let mut here = vec![value];
    for step in path.split('.') {
        let (name, each) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        let mut next = Vec::new();
        for value in here {
            let value = if name.is_empty() {
                value
            } else {
                value
                    .get(name)
                    .ok_or_else(|| format!("no field {name:?} in {}", brief_of(value)))?
            };
            if each {
                let elements = value
                    .as_array()
                    .ok_or_else(|| format!("{name:?} is not an array: {}", brief_of(value)))?;
                next.extend(elements);
            } else {
                next.push(value);
            }
        }
        here = next;
    }
    Ok(here)
}

fn brief_of(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn has_type(value: &Value, kind: &str) -> bool {
    let (base, nullable) = match kind.strip_suffix(" or null") {
        Some(base) => (base, true),
        None => (kind, false),
    };
    if value.is_null() {
        return nullable;
    }
    match base {
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        other => panic!("unknown type {other}"),
    }
}

/// Collects what the documents printed for each section, then checks them
/// all at once, so one run names every mismatch.
#[derive(Default)]
pub struct Contract {
    outputs: BTreeMap<String, Vec<Value>>,
}

impl Contract {
    pub fn record(&mut self, section: &str, value: Value) {
        self.outputs
            .entry(section.to_string())
            .or_default()
            .push(value);
    }

    /// Every mismatch between what was recorded and docs/JSON.md, for the
    /// documented sections `expected` says this test runs.
    pub fn mismatches(&self, expected: impl Fn(&str) -> bool) -> Vec<String> {
        let documented = documented();
        let mut wrong = Vec::new();
        let run: BTreeSet<&String> = self.outputs.keys().collect();
        let listed: BTreeSet<&String> = documented
            .keys()
            .filter(|section| expected(section))
            .collect();
        for missing in listed.difference(&run) {
            wrong.push(format!(
                "section {missing:?} is documented but this test never runs it"
            ));
        }
        for extra in run.difference(&listed) {
            wrong.push(format!(
                "{extra:?} prints JSON but docs/JSON.md has no section for it"
            ));
        }
        for (section, fields) in &documented {
            let Some(outputs) = self.outputs.get(section) else {
                continue;
            };
            for field in fields {
                let mut met = 0;
                let mut missing = false;
                for output in outputs {
                    match values_at(output, &field.path) {
                        Err(why) => {
                            missing = true;
                            wrong.push(format!("{section}: `{}`: {why}", field.path));
                        }
                        Ok(values) => {
                            for value in values {
                                met += 1;
                                if !has_type(value, &field.kind) {
                                    wrong.push(format!(
                                        "{section}: `{}` should be {} but is {}",
                                        field.path,
                                        field.kind,
                                        brief_of(value)
                                    ));
                                }
                            }
                        }
                    }
                }
                if met == 0 && !missing {
                    wrong.push(format!(
                        "{section}: `{}` was never met (every array on its way was empty)",
                        field.path
                    ));
                }
            }
            // Every top-level field (of each element, for an array) is listed.
            let tops: BTreeSet<&str> = fields
                .iter()
                .map(|field| {
                    let first = field.path.split('.').next().unwrap_or("");
                    if first == "[]" {
                        field.path.split('.').nth(1).unwrap_or("")
                    } else {
                        first.trim_end_matches("[]")
                    }
                })
                .collect();
            for output in outputs {
                let objects: Vec<&Value> = match output {
                    Value::Array(elements) => elements.iter().collect(),
                    other => vec![other],
                };
                for object in objects {
                    for key in object.as_object().into_iter().flat_map(|map| map.keys()) {
                        if !tops.contains(key.trim_end_matches("[]")) {
                            wrong.push(format!(
                                "{section}: prints `{key}`, which docs/JSON.md does not list"
                            ));
                        }
                    }
                }
            }
        }
        wrong.sort();
        wrong.dedup();
        wrong
    }
}
