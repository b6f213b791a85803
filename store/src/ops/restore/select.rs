//! Which parts of a snapshot a restore touches: components (`--only`,
//! `--skip`), where each lands (`TARGET/NAME`, a file keeping its name
//! below it; `--component-target`; `--to-source`), and paths inside
//! them (`--include`, `--exclude` globs). Owns only these decisions.
//!
//! Globs match paths relative to the component root, `/`-separated (for
//! example `notes/**/*.md`). An excluded directory excludes everything
//! below it. With includes given, an entry is selected when a glob matches
//! it or one of its parent directories, and a directory is kept when it is
//! selected or leads to something selected.

use crate::error::{Result, StoreError};
use crate::format::manifest::{ComponentKind, ComponentRecord, SnapshotBody};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Restore only these components (all when empty).
    pub only: Vec<String>,
    pub skip: Vec<String>,
    /// Component name → directory, instead of `TARGET/NAME`.
    pub component_targets: BTreeMap<String, PathBuf>,
    /// Restore each component to the path it was backed up from (its
    /// record's `source`), unless `component_targets` names another.
    pub to_source: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// Compiled path filters.
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

/// What a filter says about one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathVerdict {
    /// Restore it (and, for a directory, everything below it not excluded).
    Selected,
    /// A directory not selected itself, whose contents may be.
    Traverse,
    Skipped,
}

fn compile(patterns: &[String], flag: &str) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern.trim_matches('/')).map_err(|error| {
            StoreError::Invalid(format!("{flag} {pattern:?} is not a valid glob: {error}"))
        })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|error| StoreError::Invalid(format!("{flag}: {error}")))
}

impl PathFilter {
    pub fn new(selection: &Selection) -> Result<Self> {
        Ok(PathFilter {
            include: if selection.include.is_empty() {
                None
            } else {
                Some(compile(&selection.include, "--include")?)
            },
            exclude: compile(&selection.exclude, "--exclude")?,
        })
    }

    /// Judges `path` given its parent's verdict.
    pub fn judge(&self, path: &str, is_directory: bool, parent: PathVerdict) -> PathVerdict {
        if self.exclude.is_match(path) {
            return PathVerdict::Skipped;
        }
        if parent == PathVerdict::Selected {
            return PathVerdict::Selected;
        }
        match &self.include {
            None => PathVerdict::Selected,
            Some(include) if include.is_match(path) => PathVerdict::Selected,
            Some(_) if is_directory => PathVerdict::Traverse,
            Some(_) => PathVerdict::Skipped,
        }
    }
}

/// The components to restore and where each lands. Unknown names in any
/// flag are errors before anything is read.
pub fn select_components<'a>(
    body: &'a SnapshotBody,
    selection: &Selection,
    target: &Path,
    snapshot: &str,
) -> Result<Vec<(&'a ComponentRecord, PathBuf)>> {
    let named = selection
        .only
        .iter()
        .chain(&selection.skip)
        .chain(selection.component_targets.keys());
    for name in named {
        if body.component(name).is_none() {
            return Err(StoreError::ComponentNotFound {
                name: name.clone(),
                snapshot: snapshot.into(),
                existing: body.component_names(),
            });
        }
    }
    body.components
        .iter()
        .filter(|component| selection.only.is_empty() || selection.only.contains(&component.name))
        .filter(|component| !selection.skip.contains(&component.name))
        .map(|component| {
            let destination = match selection.component_targets.get(&component.name) {
                Some(given) => given.clone(),
                None if selection.to_source => source_of(component)?,
                None => default_destination(component, target),
            };
            Ok((component, destination))
        })
        .collect()
}

/// Where a component lands under `target` when nothing else is said:
/// `TARGET/NAME` for a directory or a command's output, and
/// `TARGET/NAME/FILE` for a file or a database, which keeps the name it
/// was backed up under (`app.db`, not `app`).
pub fn default_destination(component: &ComponentRecord, target: &Path) -> PathBuf {
    let directory = target.join(&component.name);
    match component.kind {
        ComponentKind::File | ComponentKind::Sqlite => {
            match Path::new(&component.source).file_name() {
                Some(name) => directory.join(name),
                None => directory,
            }
        }
        ComponentKind::Directory | ComponentKind::Command => directory,
    }
}

/// The absolute path `component` was backed up from, for `--to-source`.
fn source_of(component: &ComponentRecord) -> Result<PathBuf> {
    let source = Path::new(&component.source);
    let plain = source.is_absolute()
        && source
            .components()
            .all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
    if component.kind == ComponentKind::Command || !plain {
        let what = if component.kind == ComponentKind::Command {
            "is a command's output, backed up from no path".to_string()
        } else {
            format!(
                "was backed up from {:?}, not a plain absolute path",
                component.source
            )
        };
        return Err(StoreError::Invalid(format!(
            "--to-source: component {} {what}; give --component-target {}=PATH",
            component.name, component.name
        )));
    }
    Ok(source.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> PathFilter {
        PathFilter::new(&Selection {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Selection::default()
        })
        .unwrap()
    }

    #[test]
    fn includes_select_matches_and_everything_below_them() {
        let f = filter(&["notes", "**/*.md"], &["notes/private"]);
        assert_eq!(
            f.judge("notes", true, PathVerdict::Traverse),
            PathVerdict::Selected
        );
        assert_eq!(
            f.judge("notes/a.txt", false, PathVerdict::Selected),
            PathVerdict::Selected
        );
        assert_eq!(
            f.judge("notes/private", true, PathVerdict::Selected),
            PathVerdict::Skipped
        );
        assert_eq!(
            f.judge("other", true, PathVerdict::Traverse),
            PathVerdict::Traverse
        );
        assert_eq!(
            f.judge("other/x.md", false, PathVerdict::Traverse),
            PathVerdict::Selected
        );
        assert_eq!(
            f.judge("other/x.txt", false, PathVerdict::Traverse),
            PathVerdict::Skipped
        );
    }

    #[test]
    fn a_bad_glob_is_named() {
        let error = PathFilter::new(&Selection {
            include: vec!["a[".into()],
            ..Selection::default()
        })
        .err()
        .unwrap();
        assert!(error.to_string().contains("--include \"a[\""), "{error}");
    }
}
