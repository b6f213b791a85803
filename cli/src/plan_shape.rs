//! The plan file's shape: which keys each table takes and what type each
//! value must be, checked on the parsed TOML before the typed parse, so
//! `plan check` names every unknown key, wrong type and missing key in one
//! run (serde stops at the first), each with its key path and line. Owns
//! the schema; never checks meaning (paths, names, policies: `plan.rs`).
//!
//! A new table is one more [`Field`] in [`TOP`] with its own field list.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// What a value must be.
#[derive(Clone, Copy)]
enum Shape {
    Text,
    /// One of these words.
    Word(&'static [&'static str]),
    Bool,
    /// A whole number from 0 to u32::MAX.
    Count,
    TextList,
    /// A table of text values.
    TextMap,
    Table(&'static [Field]),
    /// An array of tables (`[[name]]`).
    Tables(&'static [Field]),
    /// A string, a number or true/false (an S3 setting's value).
    Scalar,
    /// A string, or an array of tables (`repository`: one location, or
    /// `[[repository]]` tables with settings).
    TextOrTables(&'static [Field]),
}

/// A key a table takes.
pub struct Field {
    name: &'static str,
    shape: Shape,
    required: bool,
}

const fn optional(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: false,
    }
}

const fn required(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: true,
    }
}

const RESTORE: &[Field] = &[
    optional("before", Shape::Text),
    optional("check", Shape::Text),
    optional("after", Shape::Text),
];

const COMPONENT: &[Field] = &[
    required("name", Shape::Text),
    required("kind", Shape::Word(&["files", "sqlite", "command"])),
    optional("path", Shape::Text),
    optional("command", Shape::Text),
    optional("exclude", Shape::TextList),
    optional("critical", Shape::Bool),
    optional("chunking", Shape::Text),
    optional("before", Shape::Text),
    optional("after", Shape::Text),
    optional("check", Shape::Text),
    optional("restore", Shape::Table(RESTORE)),
];

const RETENTION: &[Field] = &[
    optional("keep_last", Shape::Count),
    optional("keep_hourly", Shape::Count),
    optional("keep_daily", Shape::Count),
    optional("keep_weekly", Shape::Count),
    optional("keep_monthly", Shape::Count),
    optional("keep_yearly", Shape::Count),
    optional("keep_within", Shape::Text),
    optional("keep_tags", Shape::TextList),
];

/// The top level of a plan file.
/// A `[[repository]]` table: its location and the S3 settings of
/// `cairn_store::backend::SETTING_NAMES`, whose values the plan's own
/// check then judges.
const REPOSITORY: &[Field] = &[
    required("location", Shape::Text),
    optional("region", Shape::Scalar),
    optional("endpoint", Shape::Scalar),
    optional("profile", Shape::Scalar),
    optional("storage_class", Shape::Scalar),
    optional("path_style", Shape::Scalar),
    optional("retries", Shape::Scalar),
    optional("read_timeout", Shape::Scalar),
    optional("credentials_file", Shape::Scalar),
    optional("access_key_id_env", Shape::Scalar),
    optional("secret_access_key_env", Shape::Scalar),
    optional("session_token_env", Shape::Scalar),
];

/// `[serve]`: what `cairn serve --plan` reads.
const SERVE: &[Field] = &[optional("max_age", Shape::Text)];

const TOP: &[Field] = &[
    optional("repository", Shape::TextOrTables(REPOSITORY)),
    optional("repositories", Shape::TextList),
    optional("host", Shape::Text),
    optional("tags", Shape::TextList),
    optional("labels", Shape::TextMap),
    optional("app_version", Shape::Text),
    optional("component", Shape::Tables(COMPONENT)),
    optional("retention", Shape::Table(RETENTION)),
    optional("restore", Shape::Table(RESTORE)),
    optional("serve", Shape::Table(SERVE)),
];

/// Every shape mistake in `text`, each as `LINE: key.path: what`; a TOML
/// syntax error is the one mistake when the text does not parse.
pub fn check(text: &str) -> Vec<(usize, String)> {
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(error) => {
            let at = error.span().map_or(1, |span| line(span.start));
            return vec![(at, error.message().trim().to_string())];
        }
    };
    let mut mistakes = Vec::new();
    walk_table(
        table.get_ref(),
        table.span().start,
        TOP,
        "",
        &line,
        &mut mistakes,
    );
    mistakes.sort_by_key(|(at, _)| *at);
    mistakes
}

fn walk_table(
    table: &DeTable<'_>,
    start: usize,
    fields: &[Field],
    path: &str,
    line: &dyn Fn(usize) -> usize,
    mistakes: &mut Vec<(usize, String)>,
) {
    let joined = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    for (key, value) in table {
        let name = key.get_ref().as_ref();
        match fields.iter().find(|field| field.name == name) {
            Some(field) => walk_value(value, field.shape, &joined(name), line, mistakes),
            None => {
                let known: Vec<String> = fields.iter().map(|f| f.name.to_string()).collect();
                let hint = match cairn_store::error::nearest(name, &known) {
                    Some(nearest) => format!("did you mean `{nearest}`?"),
                    None => format!("known keys here: {}", known.join(", ")),
                };
                mistakes.push((
                    line(key.span().start),
                    format!("`{}`: unknown key; {hint}", joined(name)),
                ));
            }
        }
    }
    for field in fields.iter().filter(|field| field.required) {
        if !table.keys().any(|key| key.get_ref().as_ref() == field.name) {
            let place = if path.is_empty() { "the plan" } else { path };
            mistakes.push((line(start), format!("`{place}`: missing `{}`", field.name)));
        }
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    shape: Shape,
    path: &str,
    line: &dyn Fn(usize) -> usize,
    mistakes: &mut Vec<(usize, String)>,
) {
    let at = line(value.span().start);
    let found = value.get_ref().type_str();
    let mut wrong = |expected: &str| {
        mistakes.push((at, format!("`{path}`: expected {expected}, found {found}")));
    };
    match (shape, value.get_ref()) {
        (Shape::Text, DeValue::String(_)) | (Shape::Bool, DeValue::Boolean(_)) => {}
        (Shape::Word(words), DeValue::String(given)) => {
            if !words.contains(&given.as_ref()) {
                let known: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                let hint = cairn_store::error::nearest(given, &known)
                    .map(|nearest| format!("; did you mean {nearest:?}?"))
                    .unwrap_or_default();
                mistakes.push((
                    at,
                    format!(
                        "`{path}`: {given:?} is not one of {}{hint}",
                        words.join(", ")
                    ),
                ));
            }
        }
        (Shape::Count, DeValue::Integer(integer)) => {
            let digits = integer.as_str().replace('_', "");
            let digits = digits.trim_start_matches('+');
            let digits = digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0o"))
                .or_else(|| digits.strip_prefix("0b"))
                .unwrap_or(digits);
            if u32::from_str_radix(digits, integer.radix()).is_err() {
                wrong("a whole number from 0 to 4294967295");
            }
        }
        (Shape::TextList, DeValue::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                walk_value(
                    item,
                    Shape::Text,
                    &format!("{path}[{index}]"),
                    line,
                    mistakes,
                );
            }
        }
        (Shape::TextMap, DeValue::Table(table)) => {
            for (key, item) in table {
                let name = key.get_ref().as_ref();
                walk_value(item, Shape::Text, &format!("{path}.{name}"), line, mistakes);
            }
        }
        (Shape::Table(fields), DeValue::Table(table)) => {
            walk_table(table, value.span().start, fields, path, line, mistakes);
        }
        (Shape::Tables(fields), DeValue::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                let here = format!("{path}[{index}]");
                match item.get_ref() {
                    DeValue::Table(table) => {
                        walk_table(table, item.span().start, fields, &here, line, mistakes)
                    }
                    other => mistakes.push((
                        line(item.span().start),
                        format!("`{here}`: expected a table, found {}", other.type_str()),
                    )),
                }
            }
        }
        (Shape::Scalar, DeValue::String(_) | DeValue::Boolean(_) | DeValue::Integer(_)) => {}
        (Shape::Scalar, _) => wrong("a string, a number or true/false"),
        (Shape::TextOrTables(_), DeValue::String(_)) => {}
        (Shape::TextOrTables(fields), DeValue::Array(_)) => {
            walk_value(value, Shape::Tables(fields), path, line, mistakes)
        }
        (Shape::TextOrTables(_), _) => wrong("a string or [[repository]] tables"),
        (Shape::Text | Shape::Word(_), _) => wrong("a string"),
        (Shape::Bool, _) => wrong("true or false"),
        (Shape::Count, _) => wrong("a whole number from 0 to 4294967295"),
        (Shape::TextList, _) => wrong("an array of strings"),
        (Shape::TextMap, _) => wrong("a table of strings"),
        (Shape::Table(_), _) => wrong("a table"),
        (Shape::Tables(_), _) => wrong("an array of tables ([[...]])"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_table_takes_exactly_the_s3_settings_and_its_location() {
        let mut fields: Vec<&str> = REPOSITORY.iter().map(|field| field.name).collect();
        fields.retain(|name| *name != "location");
        fields.sort();
        let mut settings: Vec<&str> = cairn_store::backend::SETTING_NAMES.to_vec();
        settings.sort();
        assert_eq!(fields, settings);
    }

    #[test]
    fn every_shape_mistake_is_named_with_its_key_path_and_line() {
        let text = "repository = 5\nhots = \"a\"\n[[component]]\nname = \"x\"\nkind = \"fils\"\ncritical = \"yes\"\n[[component]]\nkind = \"files\"\n[retention]\nkeep_daily = -1\n";
        let mistakes = check(text);
        let said: Vec<String> = mistakes
            .iter()
            .map(|(line, what)| format!("{line}: {what}"))
            .collect();
        for expected in [
            "1: `repository`: expected a string or [[repository]] tables, found integer",
            "2: `hots`: unknown key; did you mean `host`?",
            "5: `component[0].kind`: \"fils\" is not one of files, sqlite, command; did you mean \"files\"?",
            "6: `component[0].critical`: expected true or false, found string",
            "`component[1]`: missing `name`",
            "10: `retention.keep_daily`: expected a whole number",
        ] {
            assert!(
                said.iter().any(|line| line.contains(expected)),
                "{expected} not in {said:#?}"
            );
        }
        assert_eq!(said.len(), 6, "{said:#?}");
    }

    #[test]
    fn a_valid_plan_has_no_shape_mistake() {
        let text = "repository = \"r\"\nlabels = { env = \"prod\" }\n[[component]]\nname = \"x\"\nkind = \"files\"\npath = \"/x\"\nexclude = [\"*.tmp\"]\n[component.restore]\ncheck = \"true\"\n[retention]\nkeep_daily = 7\n";
        assert!(check(text).is_empty(), "{:?}", check(text));
    }
}
