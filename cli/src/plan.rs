//! The plan file (`cairn.toml`): the nightly job as one declarative file.
//! Owns its format and its validation, naming each mistake with its line
//! (the shape first, in `plan_shape.rs`, then the meaning here); turns a
//! valid plan into the same options the flags give. Never runs anything:
//! hooks are run by the backup command. The format is documented in
//! `docs/PLAN.md`.
//!
//! ```toml
//! repository = "/backups/repo"     # or repositories = ["/backups/repo",
//!                                   #   "s3://bucket/cairn"]: one pass into each
//!                                   # or, with each repository's S3 settings:
//!                                   # [[repository]]
//!                                   # location = "s3://eu-bucket/cairn"
//!                                   # region = "eu-west-1"
//!                                   # profile = "eu"
//!                                   # storage_class = "STANDARD_IA"
//! host = "db1"                      # optional
//! tags = ["nightly"]
//! labels = { env = "prod" }
//! app_version = "2.4.1"             # optional: recorded in each snapshot
//!
//! [[component]]
//! name = "app-db"
//! kind = "sqlite"                   # files | sqlite | command
//! path = "/srv/app/app.db"
//! critical = true
//! chunking = "default"              # optional: default | content-defined
//!                                   # | pages | fixed:SIZE
//! before = "systemctl kill -s USR1 app"   # optional hooks (sh -c)
//! after = "logger cairn: $CAIRN_COMPONENT $CAIRN_RESULT"
//! check = "test -s \"$CAIRN_FILE\""     # run by `cairn drill` on the restore
//!
//! [[component]]
//! name = "memory"
//! kind = "files"
//! path = "/srv/app/memory"
//! exclude = ["**/*.tmp", "cache"]
//!
//! [[component]]
//! name = "pg"
//! kind = "command"
//! command = "pg_dump --format=custom app"
//!
//! [component.restore]              # optional: this component's
//! check = "pg_restore --list \"$CAIRN_FILE\""  # restore hooks
//!
//! [retention]
//! keep_daily = 7
//! keep_weekly = 5
//! keep_within = "2d"
//!
//! [restore]                         # optional: `cairn restore --plan`'s
//! before = "systemctl stop app"     # hooks for the whole restore
//! check = "curl -fsS localhost:8080/health"
//! after = "systemctl start app"
//!
//! [serve]                           # optional: `cairn serve --plan`
//! max_age = "26h"                   # /health is 503 once the newest
//!                                   # snapshot is older [default: 26h]
//! ```

use cairn_store::ops::backup::{ChunkingChoice, ComponentSource, SourceKind};
use cairn_store::ops::restore::{HookSet, RestoreHooks};
use cairn_store::ops::retention::{Policy, parse_keep_within, validate};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    /// A location, or `[[repository]]` tables.
    repository: Option<Spanned<PlanRepositories>>,
    #[serde(default)]
    repositories: Vec<Spanned<String>>,
    host: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default, rename = "component")]
    components: Vec<Spanned<PlanComponent>>,
    retention: Option<Spanned<PlanRetention>>,
    /// The application's version, recorded in each snapshot.
    app_version: Option<Spanned<String>>,
    /// The whole restore's hooks (`cairn restore --plan`).
    restore: Option<PlanRestore>,
    /// `cairn serve --plan`'s settings.
    serve: Option<Spanned<PlanServe>>,
}

/// A `[serve]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanServe {
    max_age: Option<String>,
}

/// `repository = "LOCATION"`, or one `[[repository]]` table per
/// repository: `location` and that repository's S3 settings (the names of
/// `cairn_store::backend::SETTING_NAMES`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PlanRepositories {
    One(String),
    // No spans inside: an untagged enum buffers its input, which loses
    // them. Mistakes name the table by its number.
    Tables(Vec<BTreeMap<String, toml::Value>>),
}

/// A `[[repository]]` table as a location whose query carries its
/// settings (the one form every command reads), or the mistakes in it.
fn repository_table(
    table: &BTreeMap<String, toml::Value>,
    place: &str,
) -> Result<String, Vec<String>> {
    use cairn_store::backend::S3Location;
    let Some(location) = table.get("location") else {
        return Err(vec![format!("{place}: a [[repository]] needs a location")]);
    };
    let Some(text) = location.as_str() else {
        return Err(vec![format!("{place}: location is a string")]);
    };
    let settings: Vec<_> = table
        .iter()
        .filter(|(name, _)| name.as_str() != "location")
        .collect();
    if !text.starts_with("s3://") {
        if let Some((name, _)) = settings.first() {
            return Err(vec![format!(
                "{place}: `{name}` is an S3 setting, and {text} is not an s3:// location"
            )]);
        }
        return Ok(text.to_string());
    }
    let mut parsed = S3Location::parse(text).map_err(|error| vec![format!("{place}: {error}")])?;
    let mut mistakes = Vec::new();
    for (name, value) in settings {
        let text = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Integer(number) => number.to_string(),
            _ => {
                mistakes.push(format!(
                    "{place}: `{name}` is a string, a number or true/false"
                ));
                continue;
            }
        };
        if let Err(reason) = parsed.settings.set(name, &text) {
            mistakes.push(format!("{place}: {reason}"));
        }
    }
    if !mistakes.is_empty() {
        return Err(mistakes);
    }
    let query = parsed.settings.to_query();
    Ok(if query.is_empty() {
        parsed.url()
    } else {
        format!("{}?{query}", parsed.url())
    })
}

/// A `[restore]` table, or a component's `[component.restore]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRestore {
    before: Option<String>,
    check: Option<String>,
    after: Option<String>,
}

impl PlanRestore {
    fn hooks(&self) -> HookSet {
        HookSet {
            before: self.before.clone(),
            check: self.check.clone(),
            after: self.after.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PlanKind {
    Files,
    Sqlite,
    Command,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanComponent {
    name: Spanned<String>,
    kind: PlanKind,
    path: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    critical: bool,
    chunking: Option<Spanned<String>>,
    before: Option<String>,
    after: Option<String>,
    /// Run by `cairn drill` on the restored file or directory, whose path
    /// is in `CAIRN_FILE` (e.g. `pg_restore --list "$CAIRN_FILE"`).
    check: Option<String>,
    /// This component's restore hooks (`cairn restore --plan`).
    restore: Option<PlanRestore>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRetention {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<String>,
    #[serde(default)]
    keep_tags: Vec<String>,
}

/// Hooks of one component, run with `sh -c`.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub before: Option<String>,
    pub after: Option<String>,
    /// The drill's own check of the restored component.
    pub check: Option<String>,
}

/// A validated plan.
#[derive(Debug)]
pub struct Plan {
    /// A directory (relative paths resolved against the plan's folder)
    /// or an `s3://` location.
    /// Where backups go: one repository, or several (one pass into each).
    pub repositories: Vec<String>,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub components: Vec<ComponentSource>,
    /// Per component, by name.
    pub hooks: BTreeMap<String, Hooks>,
    pub retention: Option<Policy>,
    /// The restore hooks: the `[restore]` table's and each component's.
    pub restore_hooks: RestoreHooks,
    /// Recorded in the snapshot (`backup --app-version` replaces it).
    pub app_version: Option<String>,
    /// `[serve] max_age`: `cairn serve`'s /health fails once the newest
    /// snapshot of the plan is older than this.
    pub serve_max_age: Option<std::time::Duration>,
}

/// Reads and validates a plan; on failure, every mistake found, each as
/// `FILE:LINE: message`.
pub fn load(path: &Path) -> Result<Plan, Vec<String>> {
    load_checking(path, true)
}

/// As [`load`], without checking that the components' paths exist and
/// are what their kind needs: for a restore, whose sources may be the
/// very thing that is lost or broken.
pub fn load_for_restore(path: &Path) -> Result<Plan, Vec<String>> {
    load_checking(path, false)
}

fn load_checking(path: &Path, check_paths: bool) -> Result<Plan, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| vec![format!("{}: cannot read the plan: {error}", path.display())])?;
    let at = |span: std::ops::Range<usize>| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("{}:{line}", path.display())
    };
    // Every unknown key, wrong type and missing key first, in one run;
    // the typed parse below would stop at the first.
    let shape = crate::plan_shape::check(&text);
    if !shape.is_empty() {
        return Err(shape
            .into_iter()
            .map(|(line, what)| format!("{}:{line}: {what}", path.display()))
            .collect());
    }
    let file: PlanFile = toml::from_str(&text).map_err(|error| {
        let place = error
            .span()
            .map(at)
            .unwrap_or_else(|| path.display().to_string());
        vec![format!("{place}: {}", error.message())]
    })?;
    let mut mistakes = Vec::new();
    if let (Some(one), false) = (&file.repository, file.repositories.is_empty()) {
        mistakes.push(format!(
            "{}: give either repository or repositories, not both",
            at(one.span())
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |given: &str| {
        let given = Path::new(given);
        if given.is_absolute() {
            given.to_path_buf()
        } else {
            base.join(given)
        }
    };
    if file.components.is_empty() {
        mistakes.push(format!("{}: the plan has no [[component]]", path.display()));
    }
    let mut components = Vec::new();
    let mut hooks = BTreeMap::new();
    let mut restore_hooks = RestoreHooks {
        whole: file
            .restore
            .as_ref()
            .map(PlanRestore::hooks)
            .unwrap_or_default(),
        ..RestoreHooks::default()
    };
    let mut names = std::collections::HashSet::new();
    for spanned in &file.components {
        let here = at(spanned.span());
        let component = spanned.get_ref();
        let name = component.name.get_ref();
        if let Err(error) = cairn_store::format::manifest::check_component_name(name) {
            mistakes.push(format!("{}: {error}", at(component.name.span())));
        }
        if !names.insert(name.clone()) {
            mistakes.push(format!(
                "{}: component {name:?} is defined twice",
                at(component.name.span())
            ));
        }
        let mut source = ComponentSource::new(name.clone(), PathBuf::new());
        match component.kind {
            PlanKind::Files | PlanKind::Sqlite => {
                if let Some(command) = &component.command {
                    mistakes.push(format!(
                        "{}: component {name:?} is of kind {:?}, which takes a path, not a command",
                        at(command.span()),
                        component.kind
                    ));
                }
                match &component.path {
                    None => mistakes.push(format!("{here}: component {name:?} needs a path")),
                    Some(given) => {
                        source.path = resolve(given.get_ref());
                        if let Some(problem) = check_paths
                            .then(|| check_path(&source.path, component.kind == PlanKind::Sqlite))
                            .flatten()
                        {
                            mistakes.push(format!(
                                "{}: component {name:?}: {problem}",
                                at(given.span())
                            ));
                        }
                    }
                }
                if component.kind == PlanKind::Sqlite {
                    source.kind = SourceKind::Sqlite;
                }
            }
            PlanKind::Command => {
                if let Some(given) = &component.path {
                    mistakes.push(format!(
                        "{}: component {name:?} is a command, which takes no path",
                        at(given.span())
                    ));
                }
                match &component.command {
                    Some(command) if !command.get_ref().trim().is_empty() => {
                        source.kind = SourceKind::Command(command.get_ref().clone());
                    }
                    Some(command) => mistakes.push(format!(
                        "{}: component {name:?} has an empty command",
                        at(command.span())
                    )),
                    None => mistakes.push(format!("{here}: component {name:?} needs a command")),
                }
            }
        }
        if !component.exclude.is_empty() && component.kind != PlanKind::Files {
            mistakes.push(format!(
                "{here}: component {name:?}: exclude applies only to files components"
            ));
        }
        for pattern in &component.exclude {
            if let Err(error) = globset::Glob::new(pattern) {
                mistakes.push(format!(
                    "{here}: component {name:?}: exclude pattern {pattern:?}: {error}"
                ));
            }
        }
        if let Some(given) = &component.chunking {
            match ChunkingChoice::parse(given.get_ref()) {
                Ok(choice) => source.chunking = choice,
                Err(why) => {
                    mistakes.push(format!("{}: component {name:?}: {why}", at(given.span())))
                }
            }
        }
        source.exclude = component.exclude.clone();
        source.critical = component.critical;
        hooks.insert(
            name.clone(),
            Hooks {
                before: component.before.clone(),
                after: component.after.clone(),
                check: component.check.clone(),
            },
        );
        if let Some(restore) = &component.restore {
            restore_hooks
                .components
                .insert(name.clone(), restore.hooks());
        }
        components.push(source);
    }
    let retention = match &file.retention {
        None => None,
        Some(spanned) => match policy(spanned.get_ref()) {
            Ok(policy) => Some(policy),
            Err(error) => {
                mistakes.push(format!("{}: [retention]: {error}", at(spanned.span())));
                None
            }
        },
    };
    if let Some(version) = &file.app_version
        && let Err(error) = cairn_store::format::manifest::check_app_version(version.get_ref())
    {
        mistakes.push(format!("{}: {error}", at(version.span())));
    }
    let serve_max_age = match file
        .serve
        .as_ref()
        .and_then(|serve| Some((serve.span(), serve.get_ref().max_age.as_deref()?)))
    {
        None => None,
        Some((span, text)) => match cairn_store::ops::restore::parse_duration(text) {
            Ok(age) => Some(age),
            Err(error) => {
                mistakes.push(format!("{}: [serve] max_age: {error}", at(span)));
                None
            }
        },
    };
    let mut repositories = Vec::new();
    let given = |given: &String| {
        if given.starts_with("s3://") {
            given.clone()
        } else {
            resolve(given).display().to_string()
        }
    };
    match &file.repository {
        None => {}
        Some(field) => match field.get_ref() {
            PlanRepositories::One(one) => repositories.push(given(one)),
            PlanRepositories::Tables(tables) => {
                for (number, table) in tables.iter().enumerate() {
                    let place = format!(
                        "{} ([[repository]] number {})",
                        at(field.span()),
                        number + 1
                    );
                    match repository_table(table, &place) {
                        Ok(location) if location.starts_with("s3://") => {
                            repositories.push(location)
                        }
                        Ok(location) => repositories.push(given(&location)),
                        Err(found) => mistakes.extend(found),
                    }
                }
            }
        },
    }
    repositories.extend(file.repositories.iter().map(|one| given(one.get_ref())));
    if !mistakes.is_empty() {
        return Err(mistakes);
    }
    Ok(Plan {
        serve_max_age,
        repositories,
        host: file.host,
        tags: file.tags,
        labels: file.labels,
        components,
        hooks,
        retention,
        restore_hooks,
        app_version: file.app_version.map(Spanned::into_inner),
    })
}

/// The repositories a plan file names (`repository` and `repositories`,
/// relative directories resolved against the plan's folder), read even
/// from a plan with mistakes elsewhere, so `plan check` can try to open
/// each.
pub fn named_repositories(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let one = table.get("repository").and_then(toml::Value::as_str);
    let many = table
        .get("repositories")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str);
    one.into_iter()
        .chain(many)
        .map(|given| {
            if given.starts_with("s3://") || Path::new(given).is_absolute() {
                given.to_string()
            } else {
                base.join(given).display().to_string()
            }
        })
        .collect()
}

/// Why a component's path will not do, if it will not.
fn check_path(path: &Path, database: bool) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) => return Some(format!("{}: {error}", path.display())),
    };
    if !database {
        return None;
    }
    if !meta.is_file() {
        return Some(format!("{} is not a file", path.display()));
    }
    // A SQLite database begins with this 16-byte header string.
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header));
    match read {
        Ok(()) if &header == b"SQLite format 3\0" => None,
        Ok(()) => Some(format!("{} is not a SQLite database", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Some(format!(
            "{} is not a SQLite database (too short)",
            path.display()
        )),
        Err(error) => Some(format!(
            "{} cannot be read as a SQLite database: {error}",
            path.display()
        )),
    }
}

fn policy(retention: &PlanRetention) -> Result<Policy, String> {
    let keep_within = retention
        .keep_within
        .as_deref()
        .map(parse_keep_within)
        .transpose()
        .map_err(|error| error.to_string())?;
    let policy = Policy {
        keep_last: retention.keep_last,
        keep_hourly: retention.keep_hourly,
        keep_daily: retention.keep_daily,
        keep_weekly: retention.keep_weekly,
        keep_monthly: retention.keep_monthly,
        keep_yearly: retention.keep_yearly,
        keep_within,
        keep_tags: retention.keep_tags.clone(),
    };
    validate(&policy).map_err(|error| error.to_string())?;
    if policy.is_empty() {
        return Err("no keep rule given".into());
    }
    Ok(policy)
}

/// The context with the plan's repository, unless --repo or CAIRN_REPO
/// already names one.
pub fn context_for(
    context: &crate::context::Context,
    plan: Option<&Plan>,
) -> Option<crate::context::Context> {
    let plan = plan?;
    if plan.repositories.is_empty() || !context.global.repo.is_empty() {
        return None;
    }
    let mut global = context.global.clone();
    global.repo = plan.repositories.clone();
    Some(crate::context::Context { global })
}
