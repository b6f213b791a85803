//! What a backup reads: the components as the caller describes them, the
//! checks they must pass before anything is written, how each asks to be
//! chunked, and which of its paths are left out (`only`, excludes).
//!
//! Owns the rules of coverage: a path is walked if it or a parent is in
//! `only`, or if something below it is, and is not excluded. Never reads
//! a component's content and never touches a repository.

use crate::error::{Result, StoreError};
use crate::format::chunking::FileChunking;
use crate::format::config::RepositoryConfig;
use crate::format::manifest::check_component_name;
use cairn_chunker::{ChunkerParams, Chunking};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One named thing to back up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSource {
    pub name: String,
    pub path: PathBuf,
    /// Back up only these paths (relative, `/`-separated) and everything
    /// below them; `None` backs up everything.
    pub only: Option<BTreeSet<String>>,
    pub kind: SourceKind,
    /// If this component fails, the backup as a whole is reported as
    /// failed (the other components are still stored).
    pub critical: bool,
    /// Paths (relative to the component root, `/`-separated) matching
    /// any of these globs are left out, with everything below them.
    pub exclude: Vec<String>,
    /// Set when something before the backup already failed this component
    /// (a before-hook): it is left out and the snapshot says why.
    pub failed_before: Option<String>,
    pub chunking: ChunkingChoice,
}

/// How a component asks to be cut into chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChunkingChoice {
    /// What the repository's config says: SQLite database files (a
    /// `sqlite` component's copy, or any file with the SQLite header) in
    /// fixed chunks of their own pages, if the config names a page count;
    /// everything else content-defined.
    #[default]
    KindDefault,
    /// The repository's FastCDC parameters for every file.
    ContentDefined,
    /// As the default, with one page per chunk where the config names no
    /// page count (repositories made before it existed).
    DatabasePages,
    /// Fixed chunks of this many bytes, for files changed in place in
    /// aligned blocks.
    Fixed(u32),
}

impl ChunkingChoice {
    /// `default`, `content-defined`, `pages` or `fixed:SIZE` (bytes, or
    /// with a K or M suffix).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        match text {
            "default" => return Ok(ChunkingChoice::KindDefault),
            "content-defined" => return Ok(ChunkingChoice::ContentDefined),
            "pages" => return Ok(ChunkingChoice::DatabasePages),
            _ => {}
        }
        let expected = || {
            format!(
                "chunking {text:?}: expected default, content-defined, pages or fixed:SIZE (e.g. fixed:4K)"
            )
        };
        let size = text.strip_prefix("fixed:").ok_or_else(expected)?;
        let (digits, unit) = match size.strip_suffix(['K', 'k']) {
            Some(digits) => (digits, 1024),
            None => match size.strip_suffix(['M', 'm']) {
                Some(digits) => (digits, 1024 * 1024),
                None => (size, 1),
            },
        };
        let bytes = digits
            .parse::<u32>()
            .ok()
            .and_then(|count| count.checked_mul(unit))
            .ok_or_else(expected)?;
        Chunking::Fixed(bytes)
            .validate()
            .map_err(|error| format!("chunking {text:?}: {error}"))?;
        Ok(ChunkingChoice::Fixed(bytes))
    }
}

impl std::fmt::Display for ChunkingChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkingChoice::KindDefault => write!(f, "default"),
            ChunkingChoice::ContentDefined => write!(f, "content-defined"),
            ChunkingChoice::DatabasePages => write!(f, "pages"),
            ChunkingChoice::Fixed(size) => write!(f, "fixed:{size}"),
        }
    }
}

/// The chunking a component gets: its choice, resolved against the
/// repository's config.
pub(super) fn resolve_chunking(
    config: &RepositoryConfig,
    params: ChunkerParams,
    choice: ChunkingChoice,
) -> FileChunking {
    let content_defined = Chunking::ContentDefined(params);
    let (base, sqlite_pages_per_chunk) = match choice {
        ChunkingChoice::KindDefault => (content_defined, config.sqlite_pages_per_chunk),
        ChunkingChoice::ContentDefined => (content_defined, None),
        ChunkingChoice::DatabasePages => (
            content_defined,
            Some(config.sqlite_pages_per_chunk.unwrap_or(1)),
        ),
        ChunkingChoice::Fixed(size) => (Chunking::Fixed(size), None),
    };
    FileChunking {
        base,
        sqlite_pages_per_chunk,
    }
}

/// How a component's data is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory or file, read as it is.
    #[default]
    Files,
    /// A live SQLite database: a consistent copy is taken with SQLite's
    /// online backup API first, and that copy is backed up.
    Sqlite,
    /// What this shell command writes to stdout (e.g. `pg_dump -Fc app`)
    /// becomes the component's one file; `path` is unused. A command that
    /// cannot start or exits non-zero fails only its component.
    Command(String),
}

impl ComponentSource {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        ComponentSource {
            name: name.into(),
            path: path.into(),
            only: None,
            kind: SourceKind::Files,
            critical: false,
            exclude: Vec::new(),
            failed_before: None,
            chunking: ChunkingChoice::KindDefault,
        }
    }
}

/// Whether `path` or one of its parents is in `only`.
pub(super) fn covered(only: &BTreeSet<String>, path: &str) -> bool {
    let mut prefix = path;
    loop {
        if only.contains(prefix) {
            return true;
        }
        match prefix.rsplit_once('/') {
            Some((parent, _)) => prefix = parent,
            None => return false,
        }
    }
}

/// Whether something below directory `path` is in `only`.
pub(super) fn leads_to(only: &BTreeSet<String>, path: &str) -> bool {
    let below = format!("{path}/");
    only.range(below.clone()..)
        .next()
        .is_some_and(|first| first.starts_with(&below))
}

/// A bare path becomes a component named after its last element.
pub fn component_from_path(path: &Path) -> Result<ComponentSource> {
    // Resolved, so that `dir/..` or `.` is named after the directory it
    // really is.
    let absolute =
        fs::canonicalize(path).map_err(|_| StoreError::SourceMissing(path.to_path_buf()))?;
    let name = absolute
        .components()
        .filter_map(|part| match part {
            std::path::Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .next_back()
        .ok_or_else(|| StoreError::InvalidComponentName {
            name: path.display().to_string(),
            reason: "the path has no last element to name it by; use --component NAME=PATH".into(),
        })?;
    check_component_name(&name).map_err(|error| match error {
        StoreError::InvalidComponentName { name, reason } => StoreError::InvalidComponentName {
            name,
            reason: format!(
                "{reason} (name it with --component NAME={})",
                path.display()
            ),
        },
        other => other,
    })?;
    Ok(ComponentSource::new(name, path))
}

pub fn check_sources(components: &[ComponentSource]) -> Result<()> {
    if components.is_empty() {
        return Err(StoreError::Invalid(
            "nothing to back up: give a PATH or --component NAME=PATH".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for component in components {
        check_component_name(&component.name)?;
        if !seen.insert(component.name.as_str()) {
            return Err(StoreError::DuplicateComponent(component.name.clone()));
        }
        if let SourceKind::Command(command) = &component.kind {
            if command.trim().is_empty() {
                return Err(StoreError::Invalid(format!(
                    "component {} has an empty command",
                    component.name
                )));
            }
            continue;
        }
        if component.path.as_os_str().is_empty() {
            return Err(StoreError::Invalid(format!(
                "component {} has an empty path",
                component.name
            )));
        }
        let meta = fs::metadata(&component.path)
            .map_err(|_| StoreError::SourceMissing(component.path.clone()))?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(StoreError::Invalid(format!(
                "source path {} is neither a directory nor a regular file",
                component.path.display()
            )));
        }
    }
    Ok(())
}

/// A component's exclude globs, compiled; a bad one is named.
pub(super) fn exclusion_set(source: &ComponentSource) -> Result<Option<globset::GlobSet>> {
    if source.exclude.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in &source.exclude {
        let glob = globset::Glob::new(pattern).map_err(|error| {
            StoreError::Invalid(format!(
                "component {:?}: exclude pattern {pattern:?}: {error}",
                source.name
            ))
        })?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|error| StoreError::Invalid(format!("component {:?}: {error}", source.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|path| path.to_string()).collect()
    }

    #[test]
    fn only_covers_a_path_and_everything_below_it_but_not_its_siblings() {
        let only = only(&["etc/app", "var/log/app.log"]);
        assert!(covered(&only, "etc/app"));
        assert!(covered(&only, "etc/app/conf.d/main.conf"));
        assert!(
            !covered(&only, "etc/application"),
            "a prefix that is not a parent"
        );
        assert!(!covered(&only, "etc"));
        assert!(!covered(&only, "var/log/other.log"));
    }

    #[test]
    fn only_leads_into_the_directories_above_its_paths() {
        let only = only(&["etc/app", "var/log/app.log"]);
        assert!(leads_to(&only, "etc"));
        assert!(leads_to(&only, "var"));
        assert!(leads_to(&only, "var/log"));
        assert!(!leads_to(&only, "et"), "a prefix of a name is not a parent");
        assert!(
            !leads_to(&only, "etc/app"),
            "covered, but nothing is below it"
        );
        assert!(!leads_to(&only, "home"));
    }

    #[test]
    fn exclusions_match_relative_paths_and_a_bad_glob_names_its_component() {
        let mut source = ComponentSource::new("app", "/nowhere");
        assert!(exclusion_set(&source).unwrap().is_none());
        source.exclude = vec!["*.tmp".into(), "cache".into()];
        let set = exclusion_set(&source).unwrap().unwrap();
        assert!(set.is_match("cache"));
        assert!(set.is_match("a/b/c.tmp"));
        assert!(!set.is_match("a/cache.db"));
        source.exclude = vec!["a[".into()];
        let error = exclusion_set(&source).unwrap_err().to_string();
        assert!(error.contains("\"app\"") && error.contains("a["), "{error}");
    }

    #[test]
    fn chunking_choices_parse_and_print_back() {
        for text in ["default", "content-defined", "pages", "fixed:4096"] {
            let choice = ChunkingChoice::parse(text).unwrap();
            assert_eq!(choice.to_string(), text);
        }
        assert_eq!(
            ChunkingChoice::parse("fixed:4K"),
            Ok(ChunkingChoice::Fixed(4096))
        );
        assert_eq!(
            ChunkingChoice::parse("fixed:1m"),
            Ok(ChunkingChoice::Fixed(1024 * 1024))
        );
        for bad in ["fixed:", "fixed:x", "fixed:4G", "cdc", "fixed:99999999999"] {
            assert!(ChunkingChoice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_choice_resolves_against_the_repository_config() {
        let config = |pages| RepositoryConfig {
            sqlite_pages_per_chunk: pages,
            ..RepositoryConfig::new(crate::id::Id([0; 32]), ChunkerParams::DEFAULT)
        };
        let params = ChunkerParams::DEFAULT;
        let resolved = resolve_chunking(&config(Some(4)), params, ChunkingChoice::KindDefault);
        assert_eq!(resolved.sqlite_pages_per_chunk, Some(4));
        let resolved = resolve_chunking(&config(None), params, ChunkingChoice::DatabasePages);
        assert_eq!(resolved.sqlite_pages_per_chunk, Some(1));
        let resolved = resolve_chunking(&config(Some(4)), params, ChunkingChoice::ContentDefined);
        assert_eq!(resolved.sqlite_pages_per_chunk, None);
        let resolved = resolve_chunking(&config(Some(4)), params, ChunkingChoice::Fixed(8192));
        assert_eq!(resolved.base, Chunking::Fixed(8192));
        assert_eq!(resolved.sqlite_pages_per_chunk, None);
    }

    #[test]
    fn sources_are_checked_before_anything_is_read() {
        let directory = tempfile::tempdir().unwrap();
        let data = directory.path().join("data");
        fs::create_dir(&data).unwrap();
        let good = ComponentSource::new("data", &data);
        assert!(check_sources(std::slice::from_ref(&good)).is_ok());
        assert!(check_sources(&[]).is_err(), "nothing to back up");
        assert!(matches!(
            check_sources(&[good.clone(), good.clone()]),
            Err(StoreError::DuplicateComponent(name)) if name == "data"
        ));
        let missing = ComponentSource::new("gone", directory.path().join("gone"));
        assert!(matches!(
            check_sources(&[missing]),
            Err(StoreError::SourceMissing(_))
        ));
        let mut empty_command = ComponentSource::new("dump", "");
        empty_command.kind = SourceKind::Command("  ".into());
        assert!(check_sources(&[empty_command]).is_err());
    }

    #[test]
    fn a_bare_path_names_its_component_after_its_last_element() {
        let directory = tempfile::tempdir().unwrap();
        let photos = directory.path().join("photos");
        fs::create_dir(&photos).unwrap();
        // `photos/.` is the directory itself, so it is named after it.
        let source = component_from_path(&photos.join(".")).unwrap();
        assert_eq!(source.name, "photos");
        assert!(matches!(
            component_from_path(&directory.path().join("absent")),
            Err(StoreError::SourceMissing(_))
        ));
    }
}
